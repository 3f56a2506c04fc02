import assert from "node:assert/strict";
import { MAX_POOLED, transientBytes, transientCopy } from "./byte_pool.ts";

Deno.test("transient bytes: small arrays never overlap, across slab boundaries too", () => {
  const views: Uint8Array[] = [];
  const sizes = [1, 7, 40, 300, 1_100, MAX_POOLED];
  for (let i = 0; i < 2_000; i++) {
    const v = transientBytes(sizes[i % sizes.length]);
    v.fill(i & 0xff);
    views.push(v);
  }
  for (let i = 0; i < views.length; i++) {
    assert.ok(views[i].every((b) => b === (i & 0xff)), `view ${i} was overwritten`);
  }
});

Deno.test("transient bytes: large arrays get a buffer of their own; a copy is equal and separate", () => {
  const big = transientBytes(MAX_POOLED + 1);
  assert.equal(big.byteOffset, 0);
  assert.equal(big.buffer.byteLength, MAX_POOLED + 1);
  const src = new Uint8Array([1, 2, 3]);
  const copy = transientCopy(src);
  assert.deepEqual(copy, src);
  src[0] = 9;
  assert.equal(copy[0], 1);
});
