/**
 * Checklist §9 (flow control and limits) and the outbound flow-control and
 * Maximum Packet Size lines of §5, over real TCP sockets.
 */
import assert from "node:assert/strict";
import { PacketType, type PublishPacket } from "../../src/codec/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { type RawClient, text } from "../helpers/raw_client.ts";
import {
  ack,
  connect,
  connectWithAck,
  disconnect,
  expectDisconnect,
  expectPublish,
  expectPublishes,
  payloads,
  publish,
  publishQos1,
  sleep,
  sub,
  subscribe,
  sync,
} from "./publish_helpers.ts";

/** Publishes `names` at `qos` and waits for each ack (QoS 2: completes the exchange). */
async function publishAll(p: RawClient, topic: string, names: string[], qos: 1 | 2): Promise<void> {
  let id = 100;
  for (const name of names) {
    id++;
    publish(p, topic, name, { qos, packetId: id });
    if (qos === 1) await p.expect(PacketType.Puback);
    else {
      await p.expect(PacketType.Pubrec);
      p.send({ type: PacketType.Pubrel, packetId: id, reasonCode: 0 });
      await p.expect(PacketType.Pubcomp);
    }
  }
}

Deno.test("broker never has more unacknowledged QoS 1 PUBLISH to a client than its Receive Maximum and sends the rest in order as PUBACKs free slots [MQTT-3.3.4-9]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s", { properties: { receiveMaximum: 2 } });
  await using p = await connect(b.port, "p");
  await subscribe(s, [sub("t", { qos: 1 })]);
  await publishAll(p, "t", ["1", "2", "3", "4", "5", "6"], 1);
  const first = await expectPublishes(s, 2);
  assert.deepEqual(payloads(first), ["1", "2"]);
  assert.equal(await s.silentFor(150), true, "quota of 2 is full");
  await ack(s, first[0]);
  const third = await expectPublish(s);
  assert.equal(text(third.payload), "3");
  assert.equal(await s.silentFor(100), true, "one ack frees exactly one slot");
  await ack(s, first[1]);
  await ack(s, third);
  const rest = await expectPublishes(s, 2);
  assert.deepEqual(payloads(rest), ["4", "5"]);
  assert.equal(await s.silentFor(100), true);
  await ack(s, rest[0]);
  const last = await expectPublish(s);
  assert.equal(text(last.payload), "6");
  const ids = [...first, third, ...rest, last].map((m) => m.packetId);
  assert.ok(ids.every((id) => id! > 0));
});

Deno.test("broker frees a QoS 2 send slot on PUBCOMP or on PUBREC >= 0x80, not on a successful PUBREC (4.9)", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s", { properties: { receiveMaximum: 1 } });
  await using p = await connect(b.port, "p");
  await subscribe(s, [sub("t", { qos: 2 })]);
  await publishAll(p, "t", ["1", "2", "3"], 2);
  const m1 = await expectPublish(s);
  assert.equal(text(m1.payload), "1");
  s.send({ type: PacketType.Pubrec, packetId: m1.packetId!, reasonCode: 0 });
  const rel = await s.expect(PacketType.Pubrel);
  assert.equal(rel.packetId, m1.packetId);
  assert.equal(await s.silentFor(150), true, "PUBREC 0x00 does not free the slot");
  s.send({ type: PacketType.Pubcomp, packetId: m1.packetId!, reasonCode: 0 });
  const m2 = await expectPublish(s);
  assert.equal(text(m2.payload), "2");
  s.send({ type: PacketType.Pubrec, packetId: m2.packetId!, reasonCode: 0x80 });
  const m3 = await expectPublish(s);
  assert.equal(text(m3.payload), "3", "PUBREC 0x80 frees the slot");
  assert.equal(await s.silentFor(100), true, "no PUBREL for the refused message");
});

Deno.test("broker keeps answering other packets while a client's send quota is full [MQTT-3.3.4-10]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s", { properties: { receiveMaximum: 1 } });
  await using p = await connect(b.port, "p");
  await subscribe(s, [sub("t", { qos: 1 })]);
  await publishAll(p, "t", ["1", "2"], 1);
  const m1 = await expectPublish(s);
  assert.equal(text(m1.payload), "1");
  await sync(s); // PINGRESP despite the full quota
  assert.deepEqual(await subscribe(s, ["other"], { packetId: 5 }), [0]);
  s.send({ type: PacketType.Unsubscribe, packetId: 6, topicFilters: ["other"] });
  assert.deepEqual((await s.expect(PacketType.Unsuback)).reasonCodes, [0]);
  await ack(s, m1);
  assert.equal(text((await expectPublish(s)).payload), "2");
});

Deno.test("broker's send quota never rises above the client's Receive Maximum: duplicate or unknown PUBACKs free nothing (4.9)", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s", { properties: { receiveMaximum: 1 } });
  await using p = await connect(b.port, "p");
  await subscribe(s, [sub("t", { qos: 1 })]);
  await publishAll(p, "t", ["1", "2", "3"], 1);
  const m1 = await expectPublish(s);
  s.send({ type: PacketType.Puback, packetId: 999, reasonCode: 0 });
  assert.equal(await s.silentFor(100), true, "an unknown PUBACK frees nothing");
  s.send({ type: PacketType.Puback, packetId: m1.packetId!, reasonCode: 0 });
  s.send({ type: PacketType.Puback, packetId: m1.packetId!, reasonCode: 0 });
  const m2 = await expectPublish(s);
  assert.equal(text(m2.payload), "2");
  assert.equal(await s.silentFor(150), true, "the duplicate PUBACK did not raise the quota");
});

Deno.test("broker resends after reconnection within the new connection's Receive Maximum, then the queued messages in order [MQTT-3.3.4-9] [MQTT-4.4.0-1] (4.9)", async () => {
  await using b = await startBroker();
  const s1 = await connect(b.port, "s", {
    properties: { sessionExpiryInterval: 60, receiveMaximum: 3 },
  });
  const firstIds: number[] = [];
  try {
    await subscribe(s1, [sub("t", { qos: 1 })]);
    await using p = await connect(b.port, "p");
    await publishAll(p, "t", ["1", "2", "3", "4", "5"], 1);
    const got = await expectPublishes(s1, 3);
    assert.deepEqual(payloads(got), ["1", "2", "3"]);
    firstIds.push(...got.map((m) => m.packetId!));
    await disconnect(s1);
  } finally {
    await s1.close();
  }
  await using s2 = await connect(b.port, "s", {
    cleanStart: false,
    properties: { sessionExpiryInterval: 60, receiveMaximum: 1 },
  });
  const seen: PublishPacket[] = [];
  for (let i = 0; i < 5; i++) {
    const m = await expectPublish(s2);
    seen.push(m);
    assert.equal(
      await s2.silentFor(100),
      true,
      `only one unacknowledged at a time (after ${i + 1})`,
    );
    await ack(s2, m);
  }
  assert.deepEqual(payloads(seen), ["1", "2", "3", "4", "5"]);
  assert.deepEqual(
    seen.slice(0, 3).map((m) => [m.dup, m.packetId]),
    firstIds.map((id) => [true, id]),
  );
  assert.deepEqual(seen.slice(3).map((m) => m.dup), [false, false]);
});

Deno.test("broker resets the inbound quota on reconnection: QoS 2 ids awaiting PUBREL from the old connection do not count (4.9)", async () => {
  await using b = await startBroker({ receiveMaximum: 2 });
  const p1 = await connect(b.port, "p", { properties: { sessionExpiryInterval: 60 } });
  try {
    publish(p1, "t", "1", { qos: 2, packetId: 1 });
    publish(p1, "t", "2", { qos: 2, packetId: 2 });
    await p1.expect(PacketType.Pubrec);
    await p1.expect(PacketType.Pubrec);
    await disconnect(p1);
  } finally {
    await p1.close();
  }
  await using p2 = await connect(b.port, "p", {
    cleanStart: false,
    properties: { sessionExpiryInterval: 60 },
  });
  // A fresh quota of 2: two new QoS>0 PUBLISH are allowed before the old PUBRELs.
  publish(p2, "t", "3", { qos: 1, packetId: 3 });
  publish(p2, "t", "4", { qos: 2, packetId: 4 });
  const a3 = await p2.expect(PacketType.Puback);
  const a4 = await p2.expect(PacketType.Pubrec);
  assert.deepEqual([a3.packetId, a4.packetId], [3, 4]);
  for (const id of [1, 2, 4]) {
    p2.send({ type: PacketType.Pubrel, packetId: id, reasonCode: 0 });
    const c = await p2.expect(PacketType.Pubcomp);
    assert.deepEqual([c.packetId, c.reasonCode], [id, 0], "the session kept the old ids");
  }
});

Deno.test("broker announces its Maximum Packet Size and closes with DISCONNECT 0x95 on a larger packet, accepting one of exactly that size (3.2.2.3.6)", async () => {
  await using b = await startBroker({ maxPacketSize: 100 });
  await using s = await connect(b.port, "s");
  const { client: p, connack } = await connectWithAck(b.port, "p");
  await using _p = p;
  assert.equal(connack.properties?.maximumPacketSize, 100);
  await subscribe(s, ["t"]);
  // QoS 0 PUBLISH to "t" with no properties: 1 + 1 + (3 + 1 + n) bytes.
  publish(p, "t", "a".repeat(94));
  const m = await expectPublish(s);
  assert.equal(m.payload.length, 94);
  publish(p, "t", "a".repeat(95));
  await expectDisconnect(p, 0x95);
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker drops, for that client only, a message larger than the client's Maximum Packet Size, and the next ones still flow [MQTT-3.1.2-24] [MQTT-3.1.2-25]", async () => {
  await using b = await startBroker();
  await using small = await connect(b.port, "small", { properties: { maximumPacketSize: 100 } });
  await using big = await connect(b.port, "big");
  await using p = await connect(b.port, "p");
  await subscribe(small, ["t"]);
  await subscribe(big, ["t"]);
  publish(p, "t", "a".repeat(94)); // exactly 100 bytes as delivered
  publish(p, "t", "b".repeat(95)); // 101 bytes
  publish(p, "t", "c");
  const gotSmall = await expectPublishes(small, 2);
  assert.deepEqual(gotSmall.map((m) => m.payload.length), [94, 1]);
  assert.equal(await small.silentFor(100), true);
  const gotBig = await expectPublishes(big, 3);
  assert.deepEqual(gotBig.map((m) => m.payload.length), [94, 95, 1]);
});

Deno.test("broker counts an oversized QoS 1 message as delivered: not sent later, not resent on resumption, and it takes no send slot [MQTT-3.1.2-25]", async () => {
  await using b = await startBroker();
  const opts = {
    properties: { maximumPacketSize: 64, receiveMaximum: 1, sessionExpiryInterval: 60 },
  };
  const s1 = await connect(b.port, "s", opts);
  try {
    await subscribe(s1, [sub("t", { qos: 1 })]);
    await using p = await connect(b.port, "p");
    await publishQos1(p, "t", "x".repeat(200), { packetId: 1 });
    await publishQos1(p, "t", "fits", { packetId: 2 });
    const m = await expectPublish(s1);
    assert.equal(text(m.payload), "fits");
    await ack(s1, m);
    assert.equal(await s1.silentFor(100), true);
    await disconnect(s1);
  } finally {
    await s1.close();
  }
  await using s2 = await connect(b.port, "s", { cleanStart: false, ...opts });
  assert.equal(await s2.silentFor(150), true, "nothing to resend");
});

Deno.test("broker does not send a retained message larger than the subscriber's Maximum Packet Size [MQTT-3.1.2-24]", async () => {
  await using b = await startBroker();
  await using p = await connect(b.port, "p");
  publish(p, "r/big", "x".repeat(300), { retain: true });
  publish(p, "r/small", "y", { retain: true });
  await sync(p);
  await using s = await connect(b.port, "s", { properties: { maximumPacketSize: 128 } });
  await subscribe(s, ["r/+"]);
  const m = await expectPublish(s);
  assert.equal(m.topic, "r/small");
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker sends no Topic Alias to a client that announced no Topic Alias Maximum [MQTT-3.1.2-26] [MQTT-3.1.2-27]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["a/#"]);
  for (let i = 0; i < 6; i++) publish(p, `a/${i % 2}`, `${i}`);
  const got = await expectPublishes(s, 6);
  for (const [i, m] of got.entries()) {
    assert.equal(m.topic, `a/${i % 2}`);
    assert.equal(m.properties?.topicAlias, undefined);
  }
});

Deno.test("broker's Topic Aliases towards a client stay within the client's Topic Alias Maximum and are first sent with their topic [MQTT-3.1.2-26] (3.3.2.3.4)", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s", { properties: { topicAliasMaximum: 2 } });
  await using p = await connect(b.port, "p");
  await subscribe(s, ["a/#"]);
  const topics = ["a/x", "a/y", "a/z", "a/x", "a/y", "a/z", "a/x"];
  for (const [i, t] of topics.entries()) publish(p, t, `${i}`);
  const got = await expectPublishes(s, topics.length);
  const aliases = new Map<number, string>();
  const resolved = got.map((m) => {
    const alias = m.properties?.topicAlias;
    if (alias === undefined) {
      assert.ok(m.topic.length > 0);
      return m.topic;
    }
    assert.ok(alias >= 1 && alias <= 2, `alias ${alias} within 1..2`);
    if (m.topic.length > 0) {
      aliases.set(alias, m.topic);
      return m.topic;
    }
    assert.ok(aliases.has(alias), `alias ${alias} used before being mapped`);
    return aliases.get(alias)!;
  });
  assert.deepEqual(resolved, topics);
  assert.deepEqual(payloads(got), topics.map((_, i) => `${i}`));
});

Deno.test("broker drops a message that expired while waiting for a free send slot and delivers the next one [MQTT-3.3.2-5]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s", { properties: { receiveMaximum: 1 } });
  await using p = await connect(b.port, "p");
  await subscribe(s, [sub("t", { qos: 1 })]);
  await publishQos1(p, "t", "first", { packetId: 1 });
  await publishQos1(p, "t", "expires", { packetId: 2, properties: { messageExpiryInterval: 1 } });
  await publishQos1(p, "t", "stays", { packetId: 3 });
  const m1 = await expectPublish(s);
  assert.equal(text(m1.payload), "first");
  await sleep(1_100);
  await ack(s, m1);
  const m3 = await expectPublish(s);
  assert.equal(text(m3.payload), "stays");
  await ack(s, m3);
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker drops an unacknowledged message too large for the resumed connection's Maximum Packet Size instead of holding its send slot forever [MQTT-3.1.2-25]", async () => {
  await using b = await startBroker();
  const s1 = await connect(b.port, "s", {
    properties: { sessionExpiryInterval: 60, receiveMaximum: 1 },
  });
  try {
    await subscribe(s1, [sub("t", { qos: 1 })]);
    await using p = await connect(b.port, "p");
    await publishQos1(p, "t", "x".repeat(200), { packetId: 1 });
    assert.equal((await expectPublish(s1)).payload.length, 200);
    await disconnect(s1); // no PUBACK
    await publishQos1(p, "t", "small", { packetId: 2 });
  } finally {
    await s1.close();
  }
  await using s2 = await connect(b.port, "s", {
    cleanStart: false,
    properties: { sessionExpiryInterval: 60, receiveMaximum: 1, maximumPacketSize: 100 },
  });
  const m = await expectPublish(s2);
  assert.equal(text(m.payload), "small");
  await ack(s2, m);
  assert.equal(await s2.silentFor(100), true);
});
