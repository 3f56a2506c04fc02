import assert from "node:assert/strict";
import { TokenBucket } from "./token_bucket.ts";

Deno.test("TokenBucket allows a burst, refuses beyond it, and refills at its rate", () => {
  const b = new TokenBucket(10, 3, 0);
  assert.equal(b.take(0), true);
  assert.equal(b.take(0), true);
  assert.equal(b.take(0), true);
  assert.equal(b.take(0), false);
  assert.equal(b.take(99), false); // 0.99 tokens after 99 ms at 10/s
  assert.equal(b.take(100), true);
  assert.equal(b.isFull(10_000), true);
});
