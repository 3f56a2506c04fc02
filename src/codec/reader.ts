import { malformed } from "./errors.ts";

const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Bounds-checked reads over one packet's bytes. Every read that would pass
 * `end` is a Malformed Packet, so a declared length can never overrun.
 */
export class Reader {
  buf: Uint8Array;
  pos: number;
  end: number;

  constructor(buf: Uint8Array, pos: number, end: number) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  /** Bytes left before `end`. */
  get remaining(): number {
    return this.end - this.pos;
  }

  /** Throws unless at least `n` bytes remain. */
  need(n: number, what: string): void {
    if (this.end - this.pos < n) {
      throw malformed(`Cannot decode ${what}: needs ${n} bytes, ${this.end - this.pos} remain`);
    }
  }

  u8(what: string): number {
    this.need(1, what);
    return this.buf[this.pos++];
  }

  u16(what: string): number {
    this.need(2, what);
    const b = this.buf;
    const v = (b[this.pos] << 8) | b[this.pos + 1];
    this.pos += 2;
    return v;
  }

  u32(what: string): number {
    this.need(4, what);
    const b = this.buf;
    const p = this.pos;
    const v = b[p] * 0x1000000 + ((b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]);
    this.pos += 4;
    return v;
  }

  /** Variable Byte Integer (1.5.5): at most 4 bytes. */
  vbi(what: string): number {
    let value = 0;
    let multiplier = 1;
    for (let i = 0; i < 4; i++) {
      const byte = this.u8(what);
      value += (byte & 0x7f) * multiplier;
      if ((byte & 0x80) === 0) return value;
      multiplier *= 128;
    }
    throw malformed(`Cannot decode ${what}: Variable Byte Integer longer than 4 bytes`);
  }

  /** UTF-8 Encoded String (1.5.4): well-formed, no U+0000, no surrogates, BOM kept. */
  utf8(what: string): string {
    const len = this.u16(what);
    this.need(len, what);
    const start = this.pos;
    this.pos += len;
    return decodeUtf8(this.buf, start, start + len, what);
  }

  /** Binary Data (1.5.6): a copy, so the source buffer may be reused. */
  binary(what: string): Uint8Array {
    const len = this.u16(what);
    this.need(len, what);
    const out = this.buf.slice(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  /** The rest of the packet, copied. */
  rest(): Uint8Array {
    const out = this.buf.slice(this.pos, this.end);
    this.pos = this.end;
    return out;
  }

  /** The rest of the packet, copied by `copy(buf, start, end)`. */
  restWith(copy: (buf: Uint8Array, start: number, end: number) => Uint8Array): Uint8Array {
    const out = copy(this.buf, this.pos, this.end);
    this.pos = this.end;
    return out;
  }
}

/** Character codes of the ASCII string being decoded (decodeUtf8 is synchronous: one at a time). */
const asciiScratch: number[] = [];

/**
 * Decodes and validates MQTT UTF-8 [MQTT-1.5.4-1] [MQTT-1.5.4-2]: ill-formed
 * sequences and encoded surrogates fail the fatal decoder, U+0000 is checked
 * here, and a leading BOM is kept [MQTT-1.5.4-3].
 */
export function decodeUtf8(buf: Uint8Array, start: number, end: number, what: string): string {
  // ASCII fast path: topics and ids are almost always ASCII; avoids a decoder call.
  if (end - start <= 256) {
    const codes = asciiScratch;
    codes.length = end - start;
    let i = start;
    for (; i < end; i++) {
      const c = buf[i];
      if (c >= 0x80) break;
      if (c === 0) throw malformed(`Cannot decode ${what}: contains U+0000`);
      codes[i - start] = c;
    }
    // One call builds the string (appending char by char cost a string per byte), from a reused
    // array rather than a subarray: a typed-array view is an allocation of about 100 bytes.
    if (i === end) return String.fromCharCode.apply(null, codes);
  }
  for (let i = start; i < end; i++) {
    if (buf[i] === 0) throw malformed(`Cannot decode ${what}: contains U+0000`);
  }
  try {
    return utf8Decoder.decode(buf.subarray(start, end));
  } catch {
    throw malformed(`Cannot decode ${what}: not well-formed UTF-8`);
  }
}
