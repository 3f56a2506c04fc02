/**
 * A persistent-session subscriber for crash tests, on the raw test client.
 *
 * It implements the receiver side of QoS 1 and 2 the way a correct client
 * does, with state that outlives its connections: a QoS 2 PUBLISH whose
 * packet id still awaits PUBREL is a re-send (answered with PUBREC again, not
 * a new message) [MQTT-4.3.3-9]; PUBREL releases the id and is answered with
 * PUBCOMP. So a QoS 2 message the application sees twice is a broker fault.
 */
import { PacketType, type Properties, type QoS } from "../../src/codec/mod.ts";
import { bytes, RawClient, text } from "../helpers/raw_client.ts";

/** A message as the application sees it. */
export interface Delivered {
  topic: string;
  payload: string;
  qos: QoS;
  retain: boolean;
  dup: boolean;
}

/** A subscriber whose session state survives reconnections. */
export class PersistentSubscriber implements AsyncDisposable {
  readonly clientId: string;
  readonly expirySec: number;
  /** Messages handed to the application, in order. */
  readonly delivered: Delivered[] = [];
  /** QoS 2 PUBLISH re-sends recognised by their packet id (not delivered again). */
  resentQos2 = 0;
  /** QoS 2 PUBLISH with DUP=0 on a packet id still awaiting PUBREL: not delivered. */
  readonly swallowed: Delivered[] = [];
  /** Inbound QoS 2 packet ids that got PUBREC and await PUBREL, with their payloads. */
  readonly awaitingPubrel = new Map<number, string>();
  /** Last packet seen (epoch ms), for "collect until quiet". */
  lastPacketAt = 0;
  #client?: RawClient;
  #pump?: Promise<void>;
  #nextPacketId = 1;
  #waiters: (() => void)[] = [];
  #acks = new Map<number, (p: { reasonCodes: number[] }) => void>();

  constructor(clientId: string, expirySec = 3600) {
    this.clientId = clientId;
    this.expirySec = expirySec;
  }

  /** True while a connection is up and being read. */
  get connected(): boolean {
    return this.#client !== undefined;
  }

  /** Connects (Clean Start as given) and starts reading; returns Session Present. */
  async connect(port: number, cleanStart: boolean, extra: Properties = {}): Promise<boolean> {
    await this.close();
    const { client, connack } = await RawClient.connect(port, {
      clientId: this.clientId,
      cleanStart,
      keepAlive: 0,
      properties: { sessionExpiryInterval: this.expirySec, ...extra },
    });
    this.#client = client;
    this.lastPacketAt = Date.now();
    this.#pump = this.#run(client);
    return connack.sessionPresent;
  }

  async #run(client: RawClient): Promise<void> {
    for (;;) {
      const p = await client.read(600_000);
      if (p === "closed") break;
      if (p === "timeout") continue;
      this.lastPacketAt = Date.now();
      switch (p.type) {
        case PacketType.Publish: {
          const m: Delivered = {
            topic: p.topic,
            payload: text(p.payload),
            qos: p.qos,
            retain: p.retain,
            dup: p.dup,
          };
          if (p.qos === 0) this.delivered.push(m);
          else if (p.qos === 1) {
            this.delivered.push(m);
            client.send({ type: PacketType.Puback, packetId: p.packetId!, reasonCode: 0 });
          } else {
            if (this.awaitingPubrel.has(p.packetId!)) {
              this.resentQos2++;
              // A re-send carries DUP=1 [MQTT-3.3.1-1]; DUP=0 means the sender reused an id we
              // still hold for another message, which this receiver must (and does) swallow.
              if (!p.dup) this.swallowed.push(m);
            } else {
              this.awaitingPubrel.set(p.packetId!, m.payload);
              this.delivered.push(m);
            }
            client.send({ type: PacketType.Pubrec, packetId: p.packetId!, reasonCode: 0 });
          }
          break;
        }
        case PacketType.Pubrel:
          this.awaitingPubrel.delete(p.packetId);
          client.send({ type: PacketType.Pubcomp, packetId: p.packetId, reasonCode: 0 });
          break;
        case PacketType.Suback:
          this.#acks.get(p.packetId)?.(p);
          this.#acks.delete(p.packetId);
          break;
      }
      this.#wake();
    }
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** Subscribes and waits for the SUBACK; returns its reason codes. */
  async subscribe(filter: string, qos: QoS): Promise<number[]> {
    const client = this.#client;
    if (!client) throw new Error(`${this.clientId} is not connected`);
    const packetId = this.#nextPacketId++;
    const suback = new Promise<{ reasonCodes: number[] }>((resolve) =>
      this.#acks.set(packetId, resolve)
    );
    client.send({
      type: PacketType.Subscribe,
      packetId,
      subscriptions: [{
        topicFilter: filter,
        qos,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    const result = await this.#within(suback, 5_000, `SUBACK for ${filter}`);
    return result.reasonCodes;
  }

  /** Publishes at QoS 0 (for markers that need no acknowledgement). */
  publish0(topic: string, payload: string): void {
    this.#client?.send({
      type: PacketType.Publish,
      topic,
      payload: bytes(payload),
      qos: 0,
      retain: false,
      dup: false,
    });
  }

  async #within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        p,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`${this.clientId}: timed out waiting for ${what}`)),
            ms,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Waits until `predicate` holds (checked after every packet); false after `timeoutMs`. */
  async until(predicate: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        timer = setTimeout(resolve, Math.min(left, 100));
        this.#waiters.push(resolve);
      });
      clearTimeout(timer);
    }
    return true;
  }

  /** Waits until no packet arrived for `quietMs` (at most `timeoutMs`). */
  untilQuiet(quietMs: number, timeoutMs: number): Promise<boolean> {
    return this.until(() => Date.now() - this.lastPacketAt >= quietMs, timeoutMs);
  }

  /** Ends the session's connection normally (DISCONNECT 0x00): the session stays. */
  async disconnect(): Promise<void> {
    if (this.#client && this.#pump) {
      this.#client.send({ type: PacketType.Disconnect, reasonCode: 0 });
      // The broker closes the connection after a DISCONNECT; wait for that before closing ours.
      await this.#within(this.#pump, 2_000, "the close after DISCONNECT").catch(() => {});
    }
    await this.close();
  }

  /** Waits up to `timeoutMs` for the broker to close the connection, then closes ours; true if it did. */
  async waitClosed(timeoutMs: number): Promise<boolean> {
    const pump = this.#pump;
    if (!pump) return true;
    const closed = await this.#within(pump.then(() => true), timeoutMs, "the close")
      .catch(() => false);
    await this.close();
    return closed;
  }

  /** Closes the socket (no DISCONNECT) and waits for the reader; keeps the session state. */
  async close(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    if (!client) return;
    await client.close();
    await this.#pump;
    this.#pump = undefined;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Publishes one message at QoS 1 from a fresh clean-start connection and waits
 * for its PUBACK (so the broker has made it durable); throws unless it succeeded.
 */
export async function publishAcked(
  port: number,
  topic: string,
  payload: string,
  retain = false,
): Promise<void> {
  const { client } = await RawClient.connect(port, { cleanStart: true });
  try {
    client.send({
      type: PacketType.Publish,
      topic,
      payload: bytes(payload),
      qos: 1,
      retain,
      dup: false,
      packetId: 1,
    });
    const ack = await client.expect(PacketType.Puback, 5_000);
    if (ack.reasonCode >= 0x80) {
      throw new Error(`PUBACK 0x${ack.reasonCode.toString(16)} for ${topic}`);
    }
    client.send({ type: PacketType.Disconnect, reasonCode: 0 });
    await client.closedWithin(2_000);
  } finally {
    await client.close();
  }
}
