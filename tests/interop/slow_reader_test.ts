/**
 * Slow readers and graceful close, over raw sockets.
 *
 * A subscriber that stops reading must not make the broker buffer without
 * bound: past `outboxSoftLimitBytes` QoS 0 messages to it are dropped and
 * counted, past `outboxHardLimitBytes` it is disconnected and counted, and
 * every other client keeps working. When the broker ends a connection with
 * DISCONNECT, the client reads that packet and then an orderly EOF, never a
 * connection reset.
 */
import assert from "node:assert/strict";
import {
  encodePacket,
  type Packet,
  PacketDecoder,
  PacketType,
  type PublishPacket,
} from "../../src/codec/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, RawClient } from "../helpers/raw_client.ts";

/** A raw socket that reads only when told to (so it can play a reader that stopped reading). */
class ManualClient {
  readonly conn: Deno.TcpConn;
  readonly decoder: PacketDecoder;
  readonly #buf = new Uint8Array(65_536);

  private constructor(conn: Deno.TcpConn, version: number) {
    this.conn = conn;
    this.decoder = new PacketDecoder({ side: "client", protocolVersion: version });
  }

  static async open(port: number, version = 5): Promise<ManualClient> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new ManualClient(conn, version);
  }

  async send(packet: Packet, version = 5): Promise<void> {
    await writeAll(this.conn, encodePacket(packet, version));
  }

  /**
   * Reads until `stop` returns true for a decoded packet, or EOF. Returns the
   * packets, whether EOF was seen, and the error if the read failed (reset).
   */
  async readUntil(
    stop: (p: Packet) => boolean,
  ): Promise<{ packets: Packet[]; eof: boolean; error?: unknown }> {
    const packets: Packet[] = [];
    for (;;) {
      for (let p = this.decoder.next(); p; p = this.decoder.next()) {
        packets.push(p);
        if (stop(p)) return { packets, eof: false };
      }
      let n: number | null;
      try {
        n = await this.conn.read(this.#buf);
      } catch (error) {
        return { packets, eof: false, error };
      }
      if (n === null) return { packets, eof: true };
      this.decoder.push(this.#buf.subarray(0, n));
    }
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

function connectPacket(clientId: string, version = 5): Packet {
  return {
    type: PacketType.Connect,
    protocolName: "MQTT",
    protocolVersion: version as 4 | 5,
    cleanStart: true,
    keepAlive: 0,
    clientId,
  };
}

function subscribePacket(filter: string, qos: 0 | 1 | 2 = 0): Packet {
  return {
    type: PacketType.Subscribe,
    packetId: 1,
    subscriptions: [{
      topicFilter: filter,
      qos,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0,
    }],
  };
}

/** Connects and subscribes, reading only CONNACK and SUBACK; afterwards nothing is read. */
async function stalledSubscriber(port: number, clientId: string, filter: string) {
  const c = await ManualClient.open(port);
  await c.send(connectPacket(clientId));
  const a = await c.readUntil((p) => p.type === PacketType.Connack);
  assert.equal(a.packets.at(-1)?.type, PacketType.Connack);
  await c.send(subscribePacket(filter));
  const s = await c.readUntil((p) => p.type === PacketType.Suback);
  assert.equal(s.packets.at(-1)?.type, PacketType.Suback);
  return c;
}

/** `count` QoS 0 PUBLISH packets of `payloadSize` bytes on `topic`, as one buffer. */
function flood(topic: string, payloadSize: number, count: number): {
  data: Uint8Array;
  packetSize: number;
} {
  const one = encodePacket({
    type: PacketType.Publish,
    topic,
    payload: new Uint8Array(payloadSize).fill(0x61),
    qos: 0,
    retain: false,
    dup: false,
  });
  const data = new Uint8Array(one.length * count);
  for (let i = 0; i < count; i++) data.set(one, i * one.length);
  return { data, packetSize: one.length };
}

/** Counts PUBLISH packets on a RawClient until `count` arrived (or time runs out). */
async function countPublishes(client: RawClient, count: number, timeoutMs = 4_000) {
  const deadline = Date.now() + timeoutMs;
  let n = 0;
  while (n < count) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    const p = await client.read(left);
    if (typeof p === "string") break;
    if (p.type === PacketType.Publish) n++;
  }
  return n;
}

/** Publisher's packets are handled in order: a PINGRESP means every PUBLISH before it was routed. */
async function routed(publisher: ManualClient): Promise<void> {
  await publisher.send({ type: PacketType.Pingreq });
  const r = await publisher.readUntil((p) => p.type === PacketType.Pingresp);
  assert.equal(r.packets.at(-1)?.type, PacketType.Pingresp, "publisher got no PINGRESP");
}

Deno.test("slow reader: QoS 0 past the soft outbox limit is dropped and counted, unsent bytes stay bounded, a fast subscriber misses nothing", async () => {
  const soft = 256 * 1024;
  await using b = await startBroker({
    outboxSoftLimitBytes: soft,
    outboxHardLimitBytes: 1024 * 1024 * 1024, // never reached here
  });
  const slow = await stalledSubscriber(b.port, "slow", "flood/#");
  const fast = (await RawClient.connect(b.port, { clientId: "fast" })).client;
  const pub = await ManualClient.open(b.port);
  try {
    fast.send(subscribePacket("flood/#"));
    await fast.expect(PacketType.Suback);
    await pub.send(connectPacket("pub"));
    await pub.readUntil((p) => p.type === PacketType.Connack);

    // 12 MB in bursts of 32 messages (128 KB, under the soft limit). The fast subscriber reads
    // each burst before the next is sent, so its outbox never passes the soft limit; the slow
    // one's kernel buffers fill, then its outbox, then its messages are dropped.
    const burst = 32;
    const bursts = 94;
    const count = burst * bursts;
    const { data, packetSize } = flood("flood/x", 4_000, burst);
    let fastReceived = 0;
    for (let i = 0; i < bursts; i++) {
      await writeAll(pub.conn, data);
      await routed(pub);
      fastReceived += await countPublishes(fast, burst);
    }
    assert.equal(fastReceived, count, "the fast subscriber must get every message");
    assert.equal(await fast.silentFor(50), true);

    const dropped = b.broker.metrics.qos0DroppedSlowReader;
    assert.ok(dropped > 0, "nothing was dropped for the slow reader");
    assert.equal(b.broker.metrics.slowReaderDisconnects, 0);

    // Now the slow reader reads everything that was ever queued for it: a PINGRESP ends it.
    await slow.send({ type: PacketType.Pingreq });
    const got = await slow.readUntil((p) => p.type === PacketType.Pingresp);
    assert.equal(got.error, undefined);
    const received = got.packets.filter((p) => p.type === PacketType.Publish).length;
    // Exact accounting: each message was either sent to the slow reader or counted as dropped.
    assert.equal(received + dropped, count);
    // What it got is what the kernel's socket buffers held plus at most the soft limit and
    // one packet from the broker's outbox: far less than the 12 MB published.
    const kernel = tcpBufferCeiling();
    assert.ok(
      received * packetSize <= kernel + soft + packetSize,
      `slow reader got ${received * packetSize} bytes; kernel ${kernel} + soft ${soft}`,
    );
  } finally {
    slow.close();
    pub.close();
    await fast.close();
  }
});

/** Largest send buffer + default receive buffer (a socket that never reads never grows it). */
function tcpBufferCeiling(): number {
  const max = (file: string, index: number) =>
    Number(Deno.readTextFileSync(file).trim().split(/\s+/)[index]);
  return max("/proc/sys/net/ipv4/tcp_wmem", 2) + 2 * max("/proc/sys/net/ipv4/tcp_rmem", 1);
}

Deno.test("slow reader: past the hard limit the stalled subscriber is disconnected and counted; other clients keep working", async () => {
  const soft = 256 * 1024;
  const hard = 1024 * 1024;
  await using b = await startBroker({ outboxSoftLimitBytes: soft, outboxHardLimitBytes: hard });
  const slow = await stalledSubscriber(b.port, "slow", "flood/#");
  const other = (await RawClient.connect(b.port, { clientId: "other" })).client;
  const pub = await ManualClient.open(b.port);
  try {
    other.send(subscribePacket("calm/#", 1));
    await other.expect(PacketType.Suback);
    await pub.send(connectPacket("pub"));
    await pub.readUntil((p) => p.type === PacketType.Connack);

    // 12 MB of QoS 0 for the stalled subscriber only, in bursts under the soft limit: the
    // kernel's socket buffers fill first, then the outbox, then the drops add up to the hard limit.
    const { data } = flood("flood/x", 4_000, 32);
    for (let i = 0; i < 94 && b.broker.metrics.slowReaderDisconnects === 0; i++) {
      await writeAll(pub.conn, data);
      await routed(pub);
    }
    assert.equal(b.broker.metrics.slowReaderDisconnects, 1);
    const dropped = b.broker.metrics.qos0DroppedSlowReader;
    assert.ok(dropped > 0);

    // The stalled socket is closed at once, not after its unsent bytes drain (they never would):
    // it reads what the kernel already held, then the end of the stream.
    const rest = await slow.readUntil(() => false);
    assert.equal(rest.error, undefined, `read failed: ${rest.error}`);
    assert.equal(rest.eof, true);
    assert.ok(rest.packets.every((p) => p.type === PacketType.Publish));
    assert.equal(b.broker.connectedCount, 2);

    // Everyone else carries on: a QoS 1 message from the same publisher is delivered and acked.
    await pub.send({
      type: PacketType.Publish,
      topic: "calm/after",
      payload: bytes("still here"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 9,
    });
    const ack = await pub.readUntil((p) => p.type === PacketType.Puback);
    assert.deepEqual(ack.packets.map((p) => p.type), [PacketType.Puback]);
    const msg = await other.expect(PacketType.Publish);
    assert.equal(msg.topic, "calm/after");
    assert.equal(new TextDecoder().decode(msg.payload), "still here");
    // Drops stopped with the disconnect: the session of the stalled client is gone.
    assert.equal(b.broker.metrics.qos0DroppedSlowReader, dropped);
    assert.equal(b.broker.metrics.slowReaderDisconnects, 1);
  } finally {
    slow.close();
    pub.close();
    await other.close();
  }
});

/** Connects a ManualClient and reads its CONNACK. */
async function connected(port: number, clientId: string, version = 5): Promise<ManualClient> {
  const c = await ManualClient.open(port, version);
  await c.send(connectPacket(clientId, version), version);
  const r = await c.readUntil((p) => p.type === PacketType.Connack);
  assert.equal(r.packets.at(-1)?.type, PacketType.Connack);
  return c;
}

function publishPacket(topic: string, props?: PublishPacket["properties"]): PublishPacket {
  return {
    type: PacketType.Publish,
    topic,
    payload: bytes("x"),
    qos: 0,
    retain: false,
    dup: false,
    properties: props,
  };
}

Deno.test("graceful close: after DISCONNECT 0x94 for topic alias 0 the client reads the DISCONNECT, then EOF, not a reset [MQTT-4.13.1-1]", async () => {
  await using b = await startBroker();
  const c = await connected(b.port, "bad-alias");
  try {
    await c.send(publishPacket("t", { topicAlias: 0 }));
    const r = await c.readUntil(() => false);
    assert.equal(r.error, undefined, `read failed: ${r.error}`);
    assert.equal(r.eof, true);
    assert.deepEqual(r.packets.map((p) => [p.type, (p as { reasonCode?: number }).reasonCode]), [
      [PacketType.Disconnect, 0x94],
    ]);
  } finally {
    c.close();
  }
});

Deno.test("graceful close: a client still sending after its protocol error reads DISCONNECT 0x82 and EOF, not a reset [MQTT-4.13.2-1]", async () => {
  await using b = await startBroker();
  const c = await connected(b.port, "chatty");
  try {
    // A second CONNECT (Protocol Error [MQTT-3.1.0-2]) followed, in the same write, by 256 KB of
    // PUBLISH packets the broker must read and discard rather than leave unread at close.
    const second = encodePacket(connectPacket("chatty"));
    const { data } = flood("after/error", 4_000, 64);
    const both = new Uint8Array(second.length + data.length);
    both.set(second);
    both.set(data, second.length);
    const writing = writeAll(c.conn, both).catch((err) => err);
    const r = await c.readUntil(() => false);
    assert.equal(await writing, undefined, "the client's writes failed");
    assert.equal(r.error, undefined, `read failed: ${r.error}`);
    assert.equal(r.eof, true);
    assert.deepEqual(r.packets.map((p) => [p.type, (p as { reasonCode?: number }).reasonCode]), [
      [PacketType.Disconnect, 0x82],
    ]);
    // Nothing after the error was acted on.
    assert.equal(b.broker.metrics.messagesReceived, 0);
  } finally {
    c.close();
  }
});

Deno.test("graceful close: a 3.1.1 client's protocol violation closes the connection with EOF and no DISCONNECT", async () => {
  await using b = await startBroker();
  const c = await connected(b.port, "old-bad", 4);
  try {
    // A wildcard in a PUBLISH topic name [MQTT-3.3.2-2]: 3.1.1 closes the connection.
    await c.send(publishPacket("a/+"), 4);
    const r = await c.readUntil(() => false);
    assert.equal(r.error, undefined, `read failed: ${r.error}`);
    assert.equal(r.eof, true);
    assert.deepEqual(r.packets, []);
  } finally {
    c.close();
  }
});

Deno.test("graceful close: broker shutdown sends DISCONNECT 0x8B Server shutting down, then EOF", async () => {
  const b = await startBroker();
  let c: ManualClient | undefined;
  try {
    c = await connected(b.port, "bystander");
    const reading = c.readUntil(() => false);
    const stopping = b.stop();
    const r = await reading;
    c.close(); // the broker waits for the client to close after reading the DISCONNECT
    await stopping;
    assert.equal(r.error, undefined, `read failed: ${r.error}`);
    assert.equal(r.eof, true);
    assert.deepEqual(r.packets.map((p) => [p.type, (p as { reasonCode?: number }).reasonCode]), [
      [PacketType.Disconnect, 0x8b],
    ]);
  } finally {
    c?.close();
    await b.stop();
  }
});
