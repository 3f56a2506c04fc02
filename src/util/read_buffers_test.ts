import assert from "node:assert/strict";
import {
  READ_SLOT_SIZE,
  readBufferStats,
  releaseReadBuffer,
  takeReadBuffer,
} from "./read_buffers.ts";

Deno.test("read buffers are distinct 64-byte slots of shared slabs, not ArrayBuffers of their own", () => {
  const before = readBufferStats().inUse;
  const taken = Array.from({ length: 1500 }, () => takeReadBuffer()); // spans two slabs
  try {
    assert.equal(readBufferStats().inUse, before + 1500);
    for (const b of taken) {
      assert.equal(b.length, READ_SLOT_SIZE);
      assert.ok(b.buffer.byteLength > READ_SLOT_SIZE, "a view into a slab");
    }
    // No two slots overlap: mark each with its index and read every mark back.
    taken.forEach((b, i) => b.fill(i & 0xff));
    taken.forEach((b, i) => assert.ok(b.every((x) => x === (i & 0xff)), `slot ${i} intact`));
  } finally {
    for (const b of taken) releaseReadBuffer(b);
  }
  assert.equal(readBufferStats().inUse, before);
});

Deno.test("a released read buffer is the next one handed out, and buffers that are not slots are ignored", () => {
  const a = takeReadBuffer();
  const before = readBufferStats();
  releaseReadBuffer(a);
  assert.deepEqual(readBufferStats(), { inUse: before.inUse - 1, free: before.free + 1 });
  const b = takeReadBuffer();
  assert.equal(b, a, "reused without allocating a new view");
  releaseReadBuffer(new Uint8Array(READ_SLOT_SIZE)); // a buffer of its own
  releaseReadBuffer(new Uint8Array(256)); // a grown buffer
  releaseReadBuffer(new Uint8Array(0)); // EMPTY
  assert.deepEqual(readBufferStats(), before);
  releaseReadBuffer(b);
});
