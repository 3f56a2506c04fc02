/**
 * The first read buffer of each connection, a 64-byte slot in a shared slab.
 *
 * Why: idle connections dominate a gateway's memory, and each parks a read on its buffer for as
 * long as it lives. A buffer of its own is three things on the heap (the Uint8Array, its
 * ArrayBuffer with the backing-store record, and the malloc'd bytes: about 250 bytes besides the
 * view); a slot in a slab is the view alone. Fewer objects per connection also means less for the
 * garbage collector to mark: with 10,000 subscribers the major GC that follows their connecting
 * was a fifth of the CPU of the next deliveries.
 *
 * A slot goes back to the pool only when no read can still write into it: when the connection's
 * read loop has ended, or when it moved to a larger buffer after a completed read. Slabs are never
 * freed; the pool holds as many slots as the most connections open at once.
 *
 * @module
 */

/** Bytes in a slot: enough for a typical CONNECT in one read; busy connections grow past it. */
export const READ_SLOT_SIZE = 64;
const SLOTS_PER_SLAB = 1024;

let slab = new Uint8Array(0);
let carved = SLOTS_PER_SLAB;
/** Released slots, reused last-in first-out (views kept, so reuse allocates nothing). */
const free: Uint8Array[] = [];
let inUse = 0;

/** A {@link READ_SLOT_SIZE}-byte buffer for a connection's reads; give it back with {@link releaseReadBuffer}. */
export function takeReadBuffer(): Uint8Array {
  inUse++;
  const reused = free.pop();
  if (reused !== undefined) return reused;
  if (carved === SLOTS_PER_SLAB) {
    slab = new Uint8Array(READ_SLOT_SIZE * SLOTS_PER_SLAB);
    carved = 0;
  }
  const offset = carved++ * READ_SLOT_SIZE;
  return slab.subarray(offset, offset + READ_SLOT_SIZE);
}

/**
 * Returns a buffer once nothing reads into it any more; the caller must drop its reference, since
 * the slot goes to the next connection. Buffers that are not slots (a connection's larger buffer,
 * an empty one) are ignored, so callers may pass whatever they held.
 */
export function releaseReadBuffer(buf: Uint8Array): void {
  if (buf.length !== READ_SLOT_SIZE || buf.buffer.byteLength !== READ_SLOT_SIZE * SLOTS_PER_SLAB) {
    return;
  }
  inUse--;
  free.push(buf);
}

/** Slots handed out and not yet released, and released slots waiting for reuse. */
export function readBufferStats(): { inUse: number; free: number } {
  return { inUse, free: free.length };
}
