/** Largest value a Variable Byte Integer can hold (1.5.5). */
export const MAX_VBI = 268_435_455;

/** Bytes a Variable Byte Integer of `value` takes, using the fewest bytes [MQTT-1.5.5-1]. */
export function vbiSize(value: number): number {
  if (value < 128) return 1;
  if (value < 16_384) return 2;
  if (value < 2_097_152) return 3;
  if (value <= MAX_VBI) return 4;
  throw new RangeError(`Cannot encode ${value} as a Variable Byte Integer: above ${MAX_VBI}`);
}

/** UTF-8 byte length of a JS string; lone surrogates count as U+FFFD (3 bytes), as TextEncoder writes them. */
export function utf8Length(s: string): number {
  let n = 0;
  const len = s.length;
  for (let i = 0; i < len; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < len) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

/** Size of a length-prefixed UTF-8 string field. */
export function stringFieldSize(s: string): number {
  const n = utf8Length(s);
  if (n > 65_535) throw new RangeError(`Cannot encode a string of ${n} bytes: above 65535`);
  return 2 + n;
}

/** Sequential writes into a buffer sized in advance. */
export class Writer {
  readonly buf: Uint8Array;
  pos: number;

  constructor(buf: Uint8Array, pos = 0) {
    this.buf = buf;
    this.pos = pos;
  }

  u8(v: number): void {
    this.buf[this.pos++] = v;
  }

  u16(v: number): void {
    this.buf[this.pos++] = v >>> 8;
    this.buf[this.pos++] = v & 0xff;
  }

  u32(v: number): void {
    const b = this.buf;
    b[this.pos++] = v >>> 24;
    b[this.pos++] = (v >>> 16) & 0xff;
    b[this.pos++] = (v >>> 8) & 0xff;
    b[this.pos++] = v & 0xff;
  }

  vbi(v: number): void {
    do {
      let byte = v % 128;
      v = Math.floor(v / 128);
      if (v > 0) byte |= 0x80;
      this.buf[this.pos++] = byte;
    } while (v > 0);
  }

  /** A length-prefixed UTF-8 string; the caller has sized it with {@link stringFieldSize}. */
  utf8(s: string): void {
    const b = this.buf;
    const lenPos = this.pos;
    let p = lenPos + 2;
    const len = s.length;
    for (let i = 0; i < len; i++) {
      let c = s.charCodeAt(i);
      if (c < 0x80) {
        b[p++] = c;
        continue;
      }
      if (c < 0x800) {
        b[p++] = 0xc0 | (c >> 6);
        b[p++] = 0x80 | (c & 0x3f);
        continue;
      }
      if (c >= 0xd800 && c <= 0xdfff) {
        const d = i + 1 < len ? s.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
          const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          b[p++] = 0xf0 | (cp >> 18);
          b[p++] = 0x80 | ((cp >> 12) & 0x3f);
          b[p++] = 0x80 | ((cp >> 6) & 0x3f);
          b[p++] = 0x80 | (cp & 0x3f);
          i++;
          continue;
        }
        c = 0xfffd;
      }
      b[p++] = 0xe0 | (c >> 12);
      b[p++] = 0x80 | ((c >> 6) & 0x3f);
      b[p++] = 0x80 | (c & 0x3f);
    }
    const n = p - lenPos - 2;
    b[lenPos] = n >>> 8;
    b[lenPos + 1] = n & 0xff;
    this.pos = p;
  }

  /** Length-prefixed binary data. */
  binary(data: Uint8Array): void {
    this.u16(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
  }

  /** Raw bytes, no prefix. */
  bytes(data: Uint8Array): void {
    this.buf.set(data, this.pos);
    this.pos += data.length;
  }
}
