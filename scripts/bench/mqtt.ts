/**
 * A minimal raw-socket MQTT 5 client for the load generator: packets are encoded once with the
 * project's codec and patched in place; reads go into one reused buffer per connection; writes are
 * coalesced into one `conn.write` per batch. It is deliberately not a client library: no retries,
 * no session logic, just bytes.
 *
 * @module
 */
import { encodePacket, PacketType } from "../../src/codec/mod.ts";

/** Called for each complete packet; `buf[start, end)` is the body after the fixed header. */
export type PacketHandler = (header: number, buf: Uint8Array, start: number, end: number) => void;

const RESOLVED = Promise.resolve();

/** Options of a CONNECT packet. */
export interface ConnectOptions {
  cleanStart?: boolean;
  keepAlive?: number;
  sessionExpiry?: number;
  receiveMaximum?: number;
}

/** Encodes a v5 CONNECT. */
export function connectPacket(clientId: string, opts: ConnectOptions = {}): Uint8Array {
  const properties: Record<string, number> = {};
  if (opts.sessionExpiry !== undefined) properties.sessionExpiryInterval = opts.sessionExpiry;
  if (opts.receiveMaximum !== undefined) properties.receiveMaximum = opts.receiveMaximum;
  return encodePacket({
    type: PacketType.Connect,
    protocolName: "MQTT",
    protocolVersion: 5,
    cleanStart: opts.cleanStart ?? true,
    keepAlive: opts.keepAlive ?? 0,
    clientId,
    properties,
  }, 5);
}

/** Encodes a v5 SUBSCRIBE with one filter. */
export function subscribePacket(packetId: number, filter: string, qos: 0 | 1): Uint8Array {
  return encodePacket({
    type: PacketType.Subscribe,
    packetId,
    subscriptions: [{
      topicFilter: filter,
      qos,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0,
    }],
  }, 5);
}

/** PINGREQ bytes. */
export const PINGREQ: Uint8Array = encodePacket({ type: PacketType.Pingreq }, 5);
/** DISCONNECT 0x00 bytes. */
export const DISCONNECT: Uint8Array = encodePacket(
  { type: PacketType.Disconnect, reasonCode: 0 },
  5,
);
/** DISCONNECT 0x00 that also sets Session Expiry to 0, ending a persistent session. */
export const DISCONNECT_END_SESSION: Uint8Array = encodePacket({
  type: PacketType.Disconnect,
  reasonCode: 0,
  properties: { sessionExpiryInterval: 0 },
}, 5);

/** Writes a PUBACK for `packetId` at `off` (4 bytes: v5 allows omitting reason code 0). */
export function writePuback(dst: Uint8Array, off: number, packetId: number): void {
  dst[off] = 0x40;
  dst[off + 1] = 2;
  dst[off + 2] = packetId >> 8;
  dst[off + 3] = packetId & 0xff;
}

// ---------------------------------------------------------------- payload stamp

/**
 * Every benchmark payload starts with a stamp: run nonce (u32), publisher id (u16), sequence number
 * (u32) and send time (f64, `performance.now()`), so receivers can count lost, duplicated and
 * misrouted messages and compute latency. The rest of the payload is a fixed filler.
 */
export const STAMP_SIZE = 18;
const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);

/** A decoded stamp; one instance is reused by {@link readStamp}. */
export interface Stamp {
  nonce: number;
  pubId: number;
  seq: number;
  ts: number;
}

/** Writes a stamp at `off`. */
export function writeStamp(
  dst: Uint8Array,
  off: number,
  nonce: number,
  pubId: number,
  seq: number,
  ts: number,
): void {
  dst[off] = nonce >>> 24;
  dst[off + 1] = (nonce >>> 16) & 0xff;
  dst[off + 2] = (nonce >>> 8) & 0xff;
  dst[off + 3] = nonce & 0xff;
  dst[off + 4] = pubId >> 8;
  dst[off + 5] = pubId & 0xff;
  dst[off + 6] = seq >>> 24;
  dst[off + 7] = (seq >>> 16) & 0xff;
  dst[off + 8] = (seq >>> 8) & 0xff;
  dst[off + 9] = seq & 0xff;
  f64[0] = ts;
  dst.set(f64Bytes, off + 10);
}

/** Reads the stamp at `off` into `out`; false when fewer than {@link STAMP_SIZE} bytes remain. */
export function readStamp(buf: Uint8Array, off: number, end: number, out: Stamp): boolean {
  if (end - off < STAMP_SIZE) return false;
  out.nonce = ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>>
    0;
  out.pubId = (buf[off + 4] << 8) | buf[off + 5];
  out.seq = ((buf[off + 6] << 24) | (buf[off + 7] << 16) | (buf[off + 8] << 8) | buf[off + 9]) >>>
    0;
  for (let i = 0; i < 8; i++) f64Bytes[i] = buf[off + 10 + i];
  out.ts = f64[0];
  return true;
}

/** A fresh stamp holder. */
export function newStamp(): Stamp {
  return { nonce: 0, pubId: 0, seq: 0, ts: 0 };
}

// ---------------------------------------------------------------- PUBLISH

/**
 * A PUBLISH encoded once; {@link writeTo} copies it and patches the stamp (and packet id).
 */
export class PublishTemplate {
  readonly bytes: Uint8Array;
  readonly payloadOffset: number;
  readonly packetIdOffset: number;
  readonly nonce: number;
  readonly pubId: number;

  constructor(
    topic: string,
    payloadSize: number,
    qos: 0 | 1,
    retain: boolean,
    nonce: number,
    pubId: number,
  ) {
    if (payloadSize < STAMP_SIZE) throw new RangeError(`payload must be >= ${STAMP_SIZE} bytes`);
    const payload = new Uint8Array(payloadSize);
    for (let i = STAMP_SIZE; i < payloadSize; i++) payload[i] = 0x61 + (i % 26);
    this.bytes = encodePacket({
      type: PacketType.Publish,
      topic,
      payload,
      qos,
      retain,
      dup: false,
      packetId: qos > 0 ? 1 : undefined,
    }, 5);
    this.payloadOffset = this.bytes.length - payloadSize;
    let off = 1;
    while (this.bytes[off] & 0x80) off++;
    off += 1;
    this.packetIdOffset = qos > 0 ? off + 2 + ((this.bytes[off] << 8) | this.bytes[off + 1]) : -1;
    this.nonce = nonce;
    this.pubId = pubId;
  }

  get length(): number {
    return this.bytes.length;
  }

  /** Copies the packet to `dst[off]` with the stamp (and the packet id when QoS 1) patched. */
  writeTo(dst: Uint8Array, off: number, seq: number, ts: number, packetId = 0): number {
    dst.set(this.bytes, off);
    if (this.packetIdOffset >= 0) {
      dst[off + this.packetIdOffset] = packetId >> 8;
      dst[off + this.packetIdOffset + 1] = packetId & 0xff;
    }
    writeStamp(dst, off + this.payloadOffset, this.nonce, this.pubId, seq, ts);
    return this.bytes.length;
  }
}

/** A received PUBLISH's layout, filled by {@link parsePublish}. */
export interface PublishView {
  qos: number;
  retain: boolean;
  topicStart: number;
  topicEnd: number;
  packetId: number;
  payloadStart: number;
}

/** A fresh view holder. */
export function newPublishView(): PublishView {
  return { qos: 0, retain: false, topicStart: 0, topicEnd: 0, packetId: 0, payloadStart: 0 };
}

/** Parses a v5 PUBLISH body in place; false when malformed. */
export function parsePublish(
  header: number,
  buf: Uint8Array,
  start: number,
  end: number,
  out: PublishView,
): boolean {
  out.qos = (header >> 1) & 3;
  out.retain = (header & 1) === 1;
  if (end - start < 2) return false;
  const tlen = (buf[start] << 8) | buf[start + 1];
  let p = start + 2;
  out.topicStart = p;
  p += tlen;
  out.topicEnd = p;
  if (out.qos > 0) {
    out.packetId = (buf[p] << 8) | buf[p + 1];
    p += 2;
  } else out.packetId = 0;
  // Property Length (VBI) then properties.
  let mul = 1;
  let plen = 0;
  let b: number;
  do {
    if (p >= end) return false;
    b = buf[p++];
    plen += (b & 0x7f) * mul;
    mul *= 128;
  } while (b & 0x80);
  p += plen;
  if (p > end) return false;
  out.payloadStart = p;
  return true;
}

/** Whether `buf[start, end)` equals `expected`. */
export function bytesEqual(buf: Uint8Array, start: number, end: number, expected: Uint8Array) {
  if (end - start !== expected.length) return false;
  for (let i = 0; i < expected.length; i++) if (buf[start + i] !== expected[i]) return false;
  return true;
}

// ---------------------------------------------------------------- connection

/** One MQTT connection over a raw TCP socket. */
export class MqttConn {
  readonly conn: Deno.TcpConn;
  /** Called for each packet while {@link readLoop} runs. */
  onPacket: PacketHandler = () => {};
  /** Called after the packets of one read have been handled (flush acks here). */
  onChunk: (() => void) | undefined;
  /** Set when the read loop ends (EOF, error or close). */
  ended = false;
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  #out: Uint8Array | undefined;
  #outLen = 0;
  #tail: Promise<void> = RESOLVED;
  #closed = false;
  writeFailed = false;

  private constructor(conn: Deno.TcpConn, readSize: number) {
    this.conn = conn;
    this.#buf = new Uint8Array(readSize);
    try {
      conn.setNoDelay(true);
    } catch { /* gone already */ }
  }

  /** Opens a TCP connection (no MQTT yet). */
  static async open(host: string, port: number, readSize = 65_536): Promise<MqttConn> {
    const conn = await Deno.connect({ hostname: host, port, transport: "tcp" });
    return new MqttConn(conn, readSize);
  }

  /**
   * Opens a connection, sends CONNECT (plus `extra` bytes in the same write) and waits for the
   * CONNACK. Throws when it is refused.
   */
  static async connect(
    host: string,
    port: number,
    clientId: string,
    opts: ConnectOptions & { readSize?: number; extra?: Uint8Array } = {},
  ): Promise<{ conn: MqttConn; sessionPresent: boolean }> {
    const c = await MqttConn.open(host, port, opts.readSize);
    try {
      const connect = connectPacket(clientId, opts);
      if (opts.extra) {
        const both = new Uint8Array(connect.length + opts.extra.length);
        both.set(connect);
        both.set(opts.extra, connect.length);
        await c.writeNow(both);
      } else await c.writeNow(connect);
      const p = await c.readPacket();
      if (p === null || p.header >> 4 !== PacketType.Connack) {
        throw new Error(`no CONNACK from broker for ${clientId}`);
      }
      if (p.body[1] !== 0) {
        throw new Error(`CONNACK refused ${clientId}: 0x${p.body[1].toString(16)}`);
      }
      return { conn: c, sessionPresent: (p.body[0] & 1) === 1 };
    } catch (err) {
      c.close();
      throw err;
    }
  }

  /**
   * Reads until one packet is complete; for handshakes before {@link readLoop} starts.
   * Returns a copy of the body, or null at end of stream.
   */
  async readPacket(): Promise<{ header: number; body: Uint8Array } | null> {
    for (;;) {
      let got: { header: number; body: Uint8Array } | undefined;
      this.#parse((header, buf, start, end) => {
        got = { header, body: buf.slice(start, end) };
      }, 1);
      if (got) return got;
      if (!(await this.#fill())) return null;
    }
  }

  /** Reads and dispatches packets to {@link onPacket} until the stream ends. Never throws. */
  async readLoop(): Promise<void> {
    try {
      // Packets already buffered by readPacket go first.
      this.#parse(this.onPacket, Infinity);
      while (await this.#fill()) {
        this.#parse(this.onPacket, Infinity);
        this.onChunk?.();
      }
    } catch {
      // A closed or reset socket ends the loop.
    } finally {
      this.ended = true;
    }
  }

  /** Reads more bytes into the reused buffer; false at end of stream. */
  async #fill(): Promise<boolean> {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#end === this.#buf.length) {
      if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      } else {
        const bigger = new Uint8Array(this.#buf.length * 2);
        bigger.set(this.#buf);
        this.#buf = bigger;
      }
    }
    const n = await this.conn.read(
      this.#end === 0 ? this.#buf : this.#buf.subarray(this.#end),
    );
    if (n === null) return false;
    this.#end += n;
    return true;
  }

  /** Dispatches up to `max` complete packets from the buffer. */
  #parse(handler: PacketHandler, max: number): void {
    const buf = this.#buf;
    let start = this.#start;
    const end = this.#end;
    let count = 0;
    while (count < max && end - start >= 2) {
      let i = start + 1;
      let mul = 1;
      let rl = 0;
      let b = 0;
      let complete = true;
      do {
        if (i >= end) {
          complete = false;
          break;
        }
        b = buf[i++];
        rl += (b & 0x7f) * mul;
        mul *= 128;
      } while (b & 0x80);
      if (!complete || i + rl > end) break;
      // Advance before the handler so a throwing handler cannot loop on the same packet.
      this.#start = i + rl;
      handler(buf[start], buf, i, i + rl);
      start = i + rl;
      count++;
    }
    this.#start = start;
  }

  /** The write buffer, valid until the next {@link reserve} (read it after reserving). */
  get out(): Uint8Array {
    return this.#out!;
  }

  /** Reserves `n` bytes in the write batch and returns their offset in {@link out}. */
  reserve(n: number): number {
    let out = this.#out;
    const need = this.#outLen + n;
    if (out === undefined || need > out.length) {
      let size = out?.length ?? 1024;
      while (size < need) size *= 2;
      const bigger = new Uint8Array(size);
      if (out) bigger.set(out.subarray(0, this.#outLen));
      this.#out = out = bigger;
    }
    const off = this.#outLen;
    this.#outLen = need;
    return off;
  }

  /** Appends bytes to the write batch. */
  push(bytes: Uint8Array): void {
    const off = this.reserve(bytes.length);
    this.#out!.set(bytes, off);
  }

  /** Bytes waiting in the batch. */
  get batched(): number {
    return this.#outLen;
  }

  /** Sends the batch as one write (after earlier flushes); resolves when it is written. */
  flush(): Promise<void> {
    if (this.#outLen === 0) return this.#tail;
    const data = this.#out!.slice(0, this.#outLen);
    this.#outLen = 0;
    return this.#tail = this.#tail.then(() => this.#writeAll(data));
  }

  /** Writes bytes right away (after earlier flushes). */
  writeNow(bytes: Uint8Array): Promise<void> {
    return this.#tail = this.#tail.then(() => this.#writeAll(bytes));
  }

  async #writeAll(data: Uint8Array): Promise<void> {
    if (this.#closed || this.writeFailed) return;
    try {
      let off = 0;
      while (off < data.length) {
        off += await this.conn.write(off === 0 ? data : data.subarray(off));
      }
    } catch {
      this.writeFailed = true;
    }
  }

  /** Closes the socket; safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }

  /** Sends DISCONNECT (or `bytes`), waits for it to be written, and closes. */
  async disconnect(bytes: Uint8Array = DISCONNECT): Promise<void> {
    if (this.#closed) return;
    await this.writeNow(bytes);
    this.close();
  }
}
