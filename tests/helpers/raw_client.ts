/**
 * A raw MQTT client over a real TCP socket: sends exact bytes or encoded
 * packets and reads decoded packets, for protocol-level tests (malformed
 * packets, reason codes, close behaviour).
 */
import {
  type ConnectPacket,
  encodePacket,
  type Packet,
  PacketDecoder,
  PacketType,
} from "../../src/codec/mod.ts";

/** The packet interface whose `type` admits T (PUBACK..PUBCOMP share one). */
export type PacketOf<T> = Packet extends infer P
  ? (P extends Packet ? (T extends P["type"] ? P : never) : never)
  : never;

/** A packet read, or how the connection ended. */
export type ReadResult = Packet | "closed" | "timeout";

/** A raw test client. */
export class RawClient implements AsyncDisposable {
  readonly conn: Deno.TcpConn;
  readonly decoder: PacketDecoder;
  version: number;
  #queue: Packet[] = [];
  #closed = false;
  #reading?: Promise<void>;
  #waiters: (() => void)[] = [];
  #readError?: unknown;

  private constructor(conn: Deno.TcpConn, version: number) {
    this.conn = conn;
    this.version = version;
    this.decoder = new PacketDecoder({ side: "client", protocolVersion: version });
    this.#reading = this.#readLoop();
  }

  /** Opens a TCP connection to the broker. */
  static async open(port: number, version = 5): Promise<RawClient> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new RawClient(conn, version);
  }

  /** Opens a connection and completes CONNECT/CONNACK; throws unless CONNACK is a success. */
  static async connect(
    port: number,
    connect: Partial<ConnectPacket> = {},
  ): Promise<{ client: RawClient; connack: PacketOf<2> }> {
    const version = connect.protocolVersion ?? 5;
    const client = await RawClient.open(port, version);
    client.send({
      type: PacketType.Connect,
      protocolName: version === 3 ? "MQIsdp" : "MQTT",
      protocolVersion: version as 3 | 4 | 5,
      cleanStart: true,
      keepAlive: 0,
      clientId: "raw-" + Math.random().toString(36).slice(2, 10),
      ...connect,
    });
    const connack = await client.expect(PacketType.Connack);
    if (connack.reasonCode !== 0) {
      await client.close();
      throw new Error(`CONNACK refused: 0x${connack.reasonCode.toString(16)}`);
    }
    return { client, connack };
  }

  async #readLoop(): Promise<void> {
    const buf = new Uint8Array(65_536);
    try {
      for (;;) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        this.decoder.push(buf.subarray(0, n));
        for (let p = this.decoder.next(); p; p = this.decoder.next()) this.#queue.push(p);
        this.#wake();
      }
    } catch (err) {
      this.#readError = err;
    }
    this.#closed = true;
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** Sends a packet encoded for this client's version. */
  send(packet: Packet): void {
    this.sendBytes(encodePacket(packet, this.version === 3 ? 4 : this.version));
  }

  /** Sends raw bytes (may be malformed on purpose). */
  sendBytes(bytes: Uint8Array): void {
    this.conn.write(bytes).catch(() => {});
  }

  /** Next packet, or "closed" when the broker closed the connection, or "timeout". */
  async read(timeoutMs = 2_000): Promise<ReadResult> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const p = this.#queue.shift();
      if (p) return p;
      if (this.#closed) return "closed";
      const left = deadline - Date.now();
      if (left <= 0) return "timeout";
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        timer = setTimeout(resolve, left);
        this.#waiters.push(resolve);
      });
      clearTimeout(timer);
    }
  }

  /** Reads the next packet and checks its type; throws with what came instead. */
  async expect<T extends Packet["type"]>(
    type: T,
    timeoutMs = 2_000,
  ): Promise<PacketOf<T>> {
    const r = await this.read(timeoutMs);
    if (typeof r === "string" || r.type !== type) {
      throw new Error(
        `expected packet type ${type}, got ${
          typeof r === "string" ? r : JSON.stringify(r, replacer)
        }`,
      );
    }
    return r as PacketOf<T>;
  }

  /** Resolves true when the broker closes the connection within the time, false otherwise. Packets before the close are returned. */
  async closedWithin(timeoutMs = 2_000): Promise<{ closed: boolean; packets: Packet[] }> {
    const packets: Packet[] = [];
    for (;;) {
      const r = await this.read(timeoutMs);
      if (r === "closed") return { closed: true, packets };
      if (r === "timeout") return { closed: false, packets };
      packets.push(r);
    }
  }

  /** True when no packet arrives within `ms`. */
  async silentFor(ms: number): Promise<boolean> {
    const r = await this.read(ms);
    if (r === "timeout") return true;
    if (typeof r !== "string") this.#queue.unshift(r);
    return false;
  }

  /** Closes the socket and waits for the read loop. */
  async close(): Promise<void> {
    try {
      this.conn.close();
    } catch { /* already closed */ }
    await this.#reading;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function replacer(_k: string, v: unknown): unknown {
  return v instanceof Uint8Array ? `<${v.length} bytes>` : v;
}

/** UTF-8 bytes of a string. */
export function bytes(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

/** A string from UTF-8 bytes. */
export function text(b: Uint8Array): string {
  return new TextDecoder().decode(b);
}
