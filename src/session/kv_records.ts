/**
 * Record encoding for the Deno KV store: every value carries a format
 * version and a CRC-32 of its body, so silent corruption (deno-notes §1:
 * SQLite has no page checksums) is detected on load.
 *
 * Layout of a value: `[version u8][crc32 u32 BE][body: V8 serialization]`.
 *
 * @module
 */
import { deserialize, serialize } from "node:v8";
import { createHash } from "node:crypto";

/** Format version written into every record. */
export const RECORD_VERSION = 1;
/** Store schema version, kept under the key `["schema"]`. */
export const SCHEMA_VERSION = 1;
/** Largest payload slice stored in one value; KV values are at most 65,536 bytes. */
export const PAYLOAD_CHUNK = 60 * 1024;
/** Key parts longer than this (UTF-8 bytes) are replaced by a hash; KV keys are at most 2 KiB. */
export const MAX_KEY_PART = 256;

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (IEEE) of `data[start, end)`. */
export function crc32(data: Uint8Array, start = 0, end = data.length): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Encodes a record: version, checksum, body. */
export function encodeRecord(value: unknown): Uint8Array {
  const body = serialize(value);
  const out = new Uint8Array(5 + body.length);
  out[0] = RECORD_VERSION;
  out.set(body, 5);
  const crc = crc32(out, 5);
  out[1] = crc >>> 24;
  out[2] = (crc >>> 16) & 0xff;
  out[3] = (crc >>> 8) & 0xff;
  out[4] = crc & 0xff;
  return out;
}

/** Why a stored value was rejected. */
export class RecordError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RecordError";
  }
}

/** Decodes a record, checking its version and checksum; throws {@link RecordError}. */
export function decodeRecord<T>(raw: unknown): T {
  if (!(raw instanceof Uint8Array)) throw new RecordError("value is not a byte record");
  if (raw.length < 5) throw new RecordError(`record of ${raw.length} bytes is too short`);
  if (raw[0] !== RECORD_VERSION) throw new RecordError(`unknown record version ${raw[0]}`);
  const stored = ((raw[1] << 24) | (raw[2] << 16) | (raw[3] << 8) | raw[4]) >>> 0;
  const actual = crc32(raw, 5);
  if (stored !== actual) {
    throw new RecordError(`checksum mismatch (stored ${stored}, actual ${actual})`);
  }
  try {
    return deserialize(raw.subarray(5)) as T;
  } catch (err) {
    throw new RecordError(`body does not deserialize: ${(err as Error).message}`);
  }
}

const utf8 = new TextEncoder();

/**
 * A key part for a client id, topic or filter: the string itself when short,
 * else `#` + SHA-256 hex (the full string is kept in the record's value).
 */
export function keyPart(s: string): string {
  if (s.length * 3 <= MAX_KEY_PART || utf8.encode(s).length <= MAX_KEY_PART) return s;
  return "#" + createHash("sha256").update(s).digest("hex");
}

/** Splits a payload into value-sized chunks (at least one, possibly empty). */
export function splitPayload(payload: Uint8Array): Uint8Array[] {
  if (payload.length <= PAYLOAD_CHUNK) return [payload];
  const parts: Uint8Array[] = [];
  for (let off = 0; off < payload.length; off += PAYLOAD_CHUNK) {
    parts.push(payload.subarray(off, Math.min(off + PAYLOAD_CHUNK, payload.length)));
  }
  return parts;
}

/** Joins chunks back into one payload. */
export function joinPayload(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  let size = 0;
  for (const p of parts) size += p.length;
  const out = new Uint8Array(size);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
