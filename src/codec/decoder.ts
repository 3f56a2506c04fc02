import { checkFixedHeader, type CopyPayload, decodeBody, type DecodeSide } from "./decode.ts";
import { malformed, MqttError } from "./errors.ts";
import { type Packet, PacketType } from "./packet.ts";
import { ReasonCode } from "./reason_code.ts";
import { MAX_VBI } from "./writer.ts";

const EMPTY = new Uint8Array(0);
/** Largest possible MQTT packet: 1 + 4 + 268,435,455 bytes. */
export const MAX_PACKET_SIZE_LIMIT = 1 + 4 + MAX_VBI;
/**
 * Most storage reserved on the word of a fixed header alone; past it, storage
 * grows (geometrically, in push) only as bytes arrive, so a 5-byte header
 * cannot make the decoder reserve its whole maximum packet size.
 */
const MAX_RESERVE = 64 * 1024;

/** Options of {@link PacketDecoder}. */
export interface DecoderOptions {
  /**
   * Largest whole packet accepted, checked from the Remaining Length before the
   * body is buffered; a larger one is a 0x95 Packet too large error.
   */
  maxPacketSize?: number;
  /** Whose packets these are: "server" refuses server-only packet types (0x82). */
  side?: DecodeSide;
  /** Protocol level to decode with until a CONNECT sets it (default 5). */
  protocolVersion?: number;
  /**
   * Copies a PUBLISH payload out of the read buffer, `buf[start, end)`. By default each payload
   * gets an ArrayBuffer of its own; a broker may pool them (and copy again before it stores one).
   */
  copyPayload?: CopyPayload;
}

/**
 * A streaming MQTT decoder. Feed it bytes in any chunking with {@link push},
 * then call {@link next} until it returns `undefined`; it yields whole packets
 * or throws {@link MqttError}. Synchronous, so the only `await` is the socket read.
 *
 * A pushed chunk is referenced, not copied, until `next()` returns
 * `undefined`; at that point the unfinished tail (less than one packet) is
 * copied, so the caller may reuse its read buffer. Buffered bytes never exceed
 * the maximum packet size.
 */
export class PacketDecoder {
  /** Protocol level in effect; a decoded CONNECT sets it. */
  protocolVersion: number;
  readonly maxPacketSize: number;
  readonly side: DecodeSide;
  readonly #copyPayload?: CopyPayload;
  #buf: Uint8Array = EMPTY;
  #pos = 0;
  #end = 0;
  #owned = false;
  #failure?: MqttError;

  constructor(options: DecoderOptions = {}) {
    this.maxPacketSize = Math.min(
      options.maxPacketSize ?? MAX_PACKET_SIZE_LIMIT,
      MAX_PACKET_SIZE_LIMIT,
    );
    this.side = options.side ?? "any";
    this.protocolVersion = options.protocolVersion ?? 5;
    this.#copyPayload = options.copyPayload;
  }

  /** Bytes held that are not yet a whole packet. */
  get bufferedBytes(): number {
    return this.#end - this.#pos;
  }

  /** Adds bytes read from the peer. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    const leftover = this.#end - this.#pos;
    if (leftover === 0) {
      this.#buf = chunk;
      this.#pos = 0;
      this.#end = chunk.length;
      this.#owned = false;
      return;
    }
    const need = leftover + chunk.length;
    if (this.#owned && this.#buf.length - this.#end >= chunk.length) {
      this.#buf.set(chunk, this.#end);
      this.#end += chunk.length;
      return;
    }
    // Grow geometrically so a large packet arriving in small reads stays linear.
    const target = this.#owned ? Math.max(need, this.#buf.length * 2) : need;
    const next = new Uint8Array(target);
    next.set(this.#buf.subarray(this.#pos, this.#end), 0);
    next.set(chunk, leftover);
    this.#buf = next;
    this.#pos = 0;
    this.#end = need;
    this.#owned = true;
  }

  /**
   * Returns the next whole packet, or `undefined` when more bytes are needed.
   * Throws {@link MqttError} for a packet that must be refused; the decoder
   * then stays failed.
   */
  next(): Packet | undefined {
    if (this.#failure) throw this.#failure;
    try {
      return this.#next();
    } catch (err) {
      this.#failure = err instanceof MqttError ? err : malformed(`Cannot decode packet: ${err}`);
      this.#buf = EMPTY;
      this.#pos = this.#end = 0;
      throw this.#failure;
    }
  }

  #next(): Packet | undefined {
    const buf = this.#buf;
    const pos = this.#pos;
    const available = this.#end - pos;
    if (available < 2) return this.#retain(0);
    const first = buf[pos];
    checkFixedHeader(first, this.protocolVersion, this.side);
    let remaining = 0;
    let multiplier = 1;
    let headerLen = 1;
    for (;;) {
      if (headerLen > 4) {
        throw malformed("Cannot decode packet: Remaining Length longer than 4 bytes");
      }
      if (headerLen >= available) return this.#retain(0);
      const byte = buf[pos + headerLen];
      remaining += (byte & 0x7f) * multiplier;
      headerLen++;
      if ((byte & 0x80) === 0) break;
      multiplier *= 128;
    }
    const total = headerLen + remaining;
    if (total > this.maxPacketSize) {
      throw new MqttError(
        ReasonCode.PacketTooLarge,
        `Cannot accept packet of ${total} bytes: above the maximum packet size ${this.maxPacketSize}`,
      );
    }
    if (available < total) return this.#retain(total);
    const packet = decodeBody(
      first,
      buf,
      pos + headerLen,
      pos + total,
      this.protocolVersion,
      this.side,
      this.#copyPayload,
    );
    this.#pos = pos + total;
    if (this.#pos === this.#end) this.#release();
    if (packet.type === PacketType.Connect) {
      this.protocolVersion = packet.protocolVersion === 3 ? 4 : packet.protocolVersion;
    }
    return packet;
  }

  /** Keeps the unfinished tail in storage of our own, sized for the packet when known. */
  #retain(total: number): undefined {
    const leftover = this.#end - this.#pos;
    if (leftover === 0) {
      this.#release();
      return undefined;
    }
    const reserve = Math.min(total, MAX_RESERVE);
    if (this.#owned && this.#pos === 0 && this.#buf.length >= reserve) return undefined;
    const next = new Uint8Array(Math.max(reserve, leftover, 64));
    next.set(this.#buf.subarray(this.#pos, this.#end), 0);
    this.#buf = next;
    this.#pos = 0;
    this.#end = leftover;
    this.#owned = true;
    return undefined;
  }

  #release(): void {
    this.#buf = EMPTY;
    this.#pos = this.#end = 0;
    this.#owned = false;
  }
}

/**
 * Decodes packets from an async stream of byte chunks, e.g. a socket's reads.
 * Convenient for tests and clients; the broker's read loop drives a
 * {@link PacketDecoder} directly to avoid a promise per packet.
 */
export async function* decodePackets(
  chunks: AsyncIterable<Uint8Array>,
  decoder: PacketDecoder = new PacketDecoder(),
): AsyncGenerator<Packet> {
  for await (const chunk of chunks) {
    decoder.push(chunk);
    for (let p = decoder.next(); p !== undefined; p = decoder.next()) yield p;
  }
  if (decoder.bufferedBytes > 0) {
    throw malformed(
      `Cannot decode packet: stream ended inside a packet (${decoder.bufferedBytes} bytes)`,
    );
  }
}
