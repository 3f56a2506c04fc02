/**
 * Small, short-lived byte arrays carved out of shared slabs.
 *
 * Why: every `new Uint8Array(n)` creates an ArrayBuffer with its own backing store, which costs
 * about 1 µs with its share of garbage collection (malloc, and freeing on V8's worker threads that
 * sweep array buffers; measured: `slice` of 88 B 1.2 µs, a slab view 0.1 µs). The hot paths make
 * several such arrays per message: an acknowledgement, a PUBLISH copy with its packet id.
 *
 * A view keeps its whole slab alive, so use this only for bytes that are dropped soon (written to
 * a socket), never for data that is stored (payloads, retained messages, queued messages). The
 * broker reads PUBLISH payloads into it because every place that keeps a message first gives it
 * buffers of its own (`keepMessage` in broker/delivery_encoding.ts), and an outbox copies packets
 * that wait behind a slow write (connection/outbox.ts), so a slow reader keeps no slab alive.
 *
 * @module
 */

const SLAB_SIZE = 64 * 1024;
/**
 * Larger arrays get their own buffer: they would waste slab space (at most this much of each slab
 * is left unused). 4 KiB keeps 1 KiB payloads pooled: with 512 B, fan-in of 1 KiB messages made
 * two ArrayBuffers per message and ran at 111–147k msg per broker CPU-second, against 135–200k.
 */
export const MAX_POOLED = 4096;

let slab = new Uint8Array(SLAB_SIZE);
let used = 0;

/**
 * Returns `n` bytes for transient use (contents unspecified: the caller writes every byte). Small
 * sizes come from a shared slab; see the module note on what they may be used for.
 */
export function transientBytes(n: number): Uint8Array {
  if (n > MAX_POOLED) return new Uint8Array(n);
  if (used + n > SLAB_SIZE) {
    slab = new Uint8Array(SLAB_SIZE);
    used = 0;
  }
  const out = slab.subarray(used, used + n);
  used += n;
  return out;
}

/** A transient copy of `bytes` (see {@link transientBytes}). */
export function transientCopy(bytes: Uint8Array): Uint8Array {
  const out = transientBytes(bytes.length);
  out.set(bytes);
  return out;
}
