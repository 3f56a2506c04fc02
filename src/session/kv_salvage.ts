/**
 * Salvage of a damaged Deno KV file: reads what SQLite can still read from
 * the file set aside (table `kv`, read-only through `node:sqlite`) and copies
 * the byte-valued records into a fresh store. The records keep their own
 * checksums, so the normal load then rejects anything that was damaged.
 *
 * @module
 */
import { DatabaseSync } from "node:sqlite";

/** What a salvage recovered. */
export interface SalvageReport {
  /** Records copied into the fresh store. */
  copied: number;
  /** Rows that could not be used (undecodable key, not a byte value). */
  skipped: number;
  /** Why reading stopped early, when it did (a damaged page). */
  stoppedBy?: string;
}

/** Deno KV's value encoding for raw bytes (denokv `VALUE_ENCODING_BYTES`). */
const VALUE_ENCODING_BYTES = 3;

/**
 * Decodes a Deno KV key (the FoundationDB tuple layout denokv uses) for the
 * part types this store writes: strings, byte strings, numbers and booleans.
 * Returns undefined for anything else.
 */
export function decodeKvKey(bytes: Uint8Array): Deno.KvKey | undefined {
  const parts: Deno.KvKeyPart[] = [];
  let i = 0;
  while (i < bytes.length) {
    const tag = bytes[i++];
    if (tag === 0x01 || tag === 0x02) {
      const out: number[] = [];
      for (;;) {
        if (i >= bytes.length) return undefined;
        const b = bytes[i++];
        if (b === 0x00) {
          // 0x00 0xFF is an escaped zero byte; a lone 0x00 ends the part.
          if (bytes[i] === 0xff) {
            out.push(0);
            i++;
            continue;
          }
          break;
        }
        out.push(b);
      }
      const raw = new Uint8Array(out);
      if (tag === 0x01) parts.push(raw);
      else {
        try {
          parts.push(new TextDecoder("utf-8", { fatal: true }).decode(raw));
        } catch {
          return undefined;
        }
      }
    } else if (tag === 0x21) {
      if (i + 8 > bytes.length) return undefined;
      const b = bytes.slice(i, i + 8);
      i += 8;
      // Positive numbers have the sign bit flipped, negative ones every bit.
      if (b[0] & 0x80) b[0] ^= 0x80;
      else for (let k = 0; k < 8; k++) b[k] ^= 0xff;
      parts.push(new DataView(b.buffer).getFloat64(0));
    } else if (tag === 0x26) parts.push(false);
    else if (tag === 0x27) parts.push(true);
    else return undefined;
  }
  return parts;
}

/** Copies the readable byte records of the KV file at `damagedPath` into `target`. */
export async function salvageKvFile(damagedPath: string, target: Deno.Kv): Promise<SalvageReport> {
  const report: SalvageReport = { copied: 0, skipped: 0 };
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(damagedPath, { readOnly: true });
  } catch (err) {
    report.stoppedBy = `cannot open: ${(err as Error).message}`;
    return report;
  }
  let batch = target.atomic();
  let inBatch = 0;
  let bytesInBatch = 0;
  const commit = async () => {
    if (inBatch === 0) return;
    await batch.commit();
    batch = target.atomic();
    inBatch = 0;
    bytesInBatch = 0;
  };
  try {
    let rows;
    try {
      rows = db.prepare("SELECT k, v, v_encoding FROM kv").iterate();
    } catch (err) {
      report.stoppedBy = (err as Error).message; // not a database at all
      return report;
    }
    for (;;) {
      let next;
      try {
        next = rows.next();
      } catch (err) {
        report.stoppedBy = (err as Error).message;
        break;
      }
      if (next.done) break;
      const row = next.value as { k: Uint8Array; v: Uint8Array; v_encoding: number };
      const key = decodeKvKey(row.k);
      if (key === undefined || row.v_encoding !== VALUE_ENCODING_BYTES) {
        report.skipped++;
        continue;
      }
      const value = new Uint8Array(row.v);
      if (inBatch >= 500 || bytesInBatch + value.length > 600 * 1024) await commit();
      batch.set(key, value);
      inBatch++;
      bytesInBatch += value.length + row.k.length;
      report.copied++;
    }
    await commit();
  } finally {
    db.close();
  }
  return report;
}
