/**
 * Checklist §5 (PUBLISH and acknowledgements) and §10 (Response Topic,
 * Correlation Data) over real TCP sockets against an in-process broker.
 */
import assert from "node:assert/strict";
import { PacketType } from "../../src/codec/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, text } from "../helpers/raw_client.ts";
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
} from "./publish_helpers.ts";

// ------------------------------------------------------------------ topic name

Deno.test("broker answers a QoS 1 PUBLISH whose topic contains '+' or '#' with PUBACK 0x90, routes nothing and keeps the connection [MQTT-3.3.2-2]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  assert.deepEqual(await subscribe(s, ["#"]), [0]);
  assert.equal(await publishQos1(p, "a/+", "x", { packetId: 1 }), 0x90);
  assert.equal(await publishQos1(p, "a/#", "x", { packetId: 2 }), 0x90);
  assert.equal(await publishQos1(p, "+", "x", { packetId: 3 }), 0x90);
  assert.equal(await s.silentFor(150), true, "nothing routed");
  p.send({ type: PacketType.Pingreq });
  await p.expect(PacketType.Pingresp);
});

Deno.test("broker answers a QoS 2 PUBLISH whose topic contains a wildcard with PUBREC 0x90 and the id starts a new message afterwards [MQTT-3.3.2-2] [MQTT-4.3.3-12]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  assert.deepEqual(await subscribe(s, [sub("#", { qos: 2 })]), [2]);
  publish(p, "a/#", "bad", { qos: 2, packetId: 9 });
  const rec = await p.expect(PacketType.Pubrec);
  assert.equal(rec.packetId, 9);
  assert.equal(rec.reasonCode, 0x90);
  assert.equal(await s.silentFor(100), true);
  // Same id again with a valid topic: a new message, delivered.
  publish(p, "a/b", "good", { qos: 2, packetId: 9 });
  const rec2 = await p.expect(PacketType.Pubrec);
  assert.equal(rec2.packetId, 9);
  assert.equal(rec2.reasonCode, 0x00);
  const m = await expectPublish(s);
  assert.equal(text(m.payload), "good");
});

Deno.test("broker closes with DISCONNECT 0x90 on a QoS 0 PUBLISH whose topic contains a wildcard and routes nothing [MQTT-3.3.2-2]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["#"]);
  publish(p, "a/+/c", "x");
  await expectDisconnect(p, 0x90);
  assert.equal(await s.silentFor(150), true);
});

Deno.test("broker closes with DISCONNECT 0x82 on a PUBLISH with an empty topic and no Topic Alias (3.3.2.1)", async () => {
  await using b = await startBroker();
  await using p = await connect(b.port, "p");
  publish(p, "", "x", { qos: 1 });
  await expectDisconnect(p, 0x82);
});

Deno.test("broker closes with DISCONNECT 0x82 on a QoS 0 PUBLISH with DUP=1 [MQTT-3.3.1-2]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["t"]);
  publish(p, "t", "x", { dup: true });
  await expectDisconnect(p, 0x82);
  assert.equal(await s.silentFor(100), true, "nothing is acted on from the bad packet");
});

Deno.test("broker closes with DISCONNECT 0x81 on a PUBLISH with QoS 3 [MQTT-3.3.1-4]", async () => {
  await using b = await startBroker();
  await using p = await connect(b.port, "p");
  // PUBLISH, flags QoS bits 11; topic "t", packet id 1, no properties, payload "x".
  p.sendBytes(new Uint8Array([0x36, 7, 0, 1, 0x74, 0, 1, 0, 0x78]));
  await expectDisconnect(p, 0x81);
});

Deno.test("broker refuses a QoS 1 PUBLISH to a '$' topic with PUBACK 0x87 and keeps the connection (4.7.2, ours)", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["$SYS/#"]);
  assert.equal(await publishQos1(p, "$SYS/x", "x"), 0x87);
  assert.equal(await s.silentFor(100), true);
  // QoS 0 policy refusal: dropped, the connection stays (ours).
  publish(p, "$SYS/y", "y");
  p.send({ type: PacketType.Pingreq });
  await p.expect(PacketType.Pingresp);
  assert.equal(await s.silentFor(100), true);
});

// ------------------------------------------------------------------ topic aliases

Deno.test("broker accepts every Topic Alias 1..its Topic Alias Maximum and subscribers get the resolved topic without an alias [MQTT-3.3.2-12]", async () => {
  await using b = await startBroker({ topicAliasMaximum: 3 });
  await using s = await connect(b.port, "s");
  const { client: p, connack } = await connectWithAck(b.port, "p");
  await using _p = p;
  assert.equal(connack.properties?.topicAliasMaximum, 3);
  await subscribe(s, ["al/#"]);
  for (const alias of [1, 2, 3]) {
    publish(p, `al/${alias}`, `set${alias}`, { properties: { topicAlias: alias } });
  }
  for (const alias of [3, 1, 2]) {
    publish(p, "", `use${alias}`, { properties: { topicAlias: alias } });
  }
  const got = await expectPublishes(s, 6);
  assert.deepEqual(got.map((m) => m.topic), ["al/1", "al/2", "al/3", "al/3", "al/1", "al/2"]);
  assert.deepEqual(payloads(got), ["set1", "set2", "set3", "use3", "use1", "use2"]);
  for (const m of got) assert.equal(m.properties?.topicAlias, undefined, "no alias forwarded");
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker replaces a Topic Alias mapping when a PUBLISH carries a Topic Name and that alias (3.3.2.3.4)", async () => {
  await using b = await startBroker({ topicAliasMaximum: 5 });
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["r/#"]);
  publish(p, "r/one", "1", { properties: { topicAlias: 1 } });
  publish(p, "r/two", "2", { properties: { topicAlias: 1 } });
  publish(p, "", "3", { properties: { topicAlias: 1 } });
  const got = await expectPublishes(s, 3);
  assert.deepEqual(got.map((m) => m.topic), ["r/one", "r/two", "r/two"]);
});

Deno.test("broker closes with DISCONNECT 0x94 on Topic Alias 0 (3.3.2.3.4)", async () => {
  await using b = await startBroker({ topicAliasMaximum: 5 });
  await using p = await connect(b.port, "p");
  publish(p, "t", "x", { properties: { topicAlias: 0 } });
  await expectDisconnect(p, 0x94);
});

Deno.test("broker closes with DISCONNECT 0x94 on a Topic Alias above its Topic Alias Maximum (3.3.2.3.4)", async () => {
  await using b = await startBroker({ topicAliasMaximum: 5 });
  await using p = await connect(b.port, "p");
  publish(p, "t", "x", { properties: { topicAlias: 5 } });
  publish(p, "t", "x", { properties: { topicAlias: 6 } });
  await expectDisconnect(p, 0x94);
});

Deno.test("broker that announces no Topic Alias Maximum closes with DISCONNECT 0x94 on any Topic Alias [MQTT-3.2.2-17]", async () => {
  await using b = await startBroker({ topicAliasMaximum: 0 });
  const { client: p, connack } = await connectWithAck(b.port, "p");
  await using _p = p;
  assert.equal(connack.properties?.topicAliasMaximum, undefined);
  publish(p, "t", "x", { properties: { topicAlias: 1 } });
  await expectDisconnect(p, 0x94);
});

Deno.test("broker closes with DISCONNECT 0x82 on an empty topic with a Topic Alias that is not mapped (3.3.2.3.4)", async () => {
  await using b = await startBroker({ topicAliasMaximum: 5 });
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["#"]);
  publish(p, "", "x", { qos: 1, properties: { topicAlias: 2 } });
  await expectDisconnect(p, 0x82);
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker forgets Topic Aliases at disconnect even when the session resumes [MQTT-3.3.2-7]", async () => {
  await using b = await startBroker({ topicAliasMaximum: 5 });
  const p1 = await connect(b.port, "p", { properties: { sessionExpiryInterval: 60 } });
  try {
    publish(p1, "keep/me", "x", { properties: { topicAlias: 1 } });
    await disconnect(p1);
  } finally {
    await p1.close();
  }
  const { client: p2, connack } = await connectWithAck(b.port, "p", {
    cleanStart: false,
    properties: { sessionExpiryInterval: 60 },
  });
  await using _p2 = p2;
  assert.equal(connack.sessionPresent, true);
  publish(p2, "", "y", { properties: { topicAlias: 1 } });
  await expectDisconnect(p2, 0x82);
});

// ------------------------------------------------------------------ limits announced in CONNACK

Deno.test("broker closes with DISCONNECT 0x93 when a client has more QoS>0 PUBLISH unacknowledged than the server's Receive Maximum (3.3.4)", async () => {
  await using b = await startBroker({ receiveMaximum: 2 });
  const { client: p, connack } = await connectWithAck(b.port, "p");
  await using _p = p;
  assert.equal(connack.properties?.receiveMaximum, 2);
  publish(p, "t", "1", { qos: 2, packetId: 1 });
  publish(p, "t", "2", { qos: 2, packetId: 2 });
  assert.equal((await p.expect(PacketType.Pubrec)).packetId, 1);
  assert.equal((await p.expect(PacketType.Pubrec)).packetId, 2);
  // Completing one frees one slot: a third is accepted.
  p.send({ type: PacketType.Pubrel, packetId: 1, reasonCode: 0 });
  const comp = await p.expect(PacketType.Pubcomp);
  assert.deepEqual([comp.packetId, comp.reasonCode], [1, 0]);
  publish(p, "t", "3", { qos: 2, packetId: 3 });
  assert.equal((await p.expect(PacketType.Pubrec)).packetId, 3);
  // Now 2 and 3 are in flight: a fourth exceeds the quota.
  publish(p, "t", "4", { qos: 1, packetId: 4 });
  await expectDisconnect(p, 0x93);
});

Deno.test("broker with Maximum QoS 1 announces it and closes with DISCONNECT 0x9B on a QoS 2 PUBLISH (3.2.2.3.4)", async () => {
  await using b = await startBroker({ maximumQos: 1 });
  await using s = await connect(b.port, "s");
  const { client: p, connack } = await connectWithAck(b.port, "p");
  await using _p = p;
  assert.equal(connack.properties?.maximumQoS, 1);
  await subscribe(s, [sub("t", { qos: 1 })]);
  assert.equal(await publishQos1(p, "t", "ok"), 0);
  assert.equal(text((await expectPublish(s)).payload), "ok");
  publish(p, "t", "x", { qos: 2, packetId: 2 });
  await expectDisconnect(p, 0x9b);
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker with Maximum QoS 0 closes with DISCONNECT 0x9B on a QoS 1 PUBLISH (3.2.2.3.4)", async () => {
  await using b = await startBroker({ maximumQos: 0 });
  const { client: p, connack } = await connectWithAck(b.port, "p");
  await using _p = p;
  assert.equal(connack.properties?.maximumQoS, 0);
  publish(p, "t", "x", { qos: 1 });
  await expectDisconnect(p, 0x9b);
});

Deno.test("broker without retain support announces Retain Available 0 and closes with DISCONNECT 0x9A on RETAIN=1 (3.2.2.3.5)", async () => {
  await using b = await startBroker({ retainAvailable: false });
  await using s = await connect(b.port, "s");
  const { client: p, connack } = await connectWithAck(b.port, "p");
  await using _p = p;
  assert.equal(connack.properties?.retainAvailable, 0);
  await subscribe(s, ["t"]);
  publish(p, "t", "x", { retain: true });
  await expectDisconnect(p, 0x9a);
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker closes with DISCONNECT 0x82 on a client PUBLISH carrying a Subscription Identifier [MQTT-3.3.4-6]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["t"]);
  publish(p, "t", "x", { qos: 1, properties: { subscriptionIdentifiers: [5] } });
  await expectDisconnect(p, 0x82);
  assert.equal(await s.silentFor(100), true);
});

// ------------------------------------------------------------------ QoS 1 / QoS 2 exchanges

Deno.test("broker treats a QoS 1 PUBLISH re-using an acknowledged id, even with DUP=1, as a new message [MQTT-4.3.2-4] [MQTT-4.3.2-5]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, [sub("t", { qos: 1 })]);
  assert.equal(await publishQos1(p, "t", "a", { packetId: 4 }), 0);
  assert.equal(await publishQos1(p, "t", "a", { packetId: 4, dup: true }), 0);
  const got = await expectPublishes(s, 2);
  assert.deepEqual(payloads(got), ["a", "a"]);
  assert.notEqual(got[0].packetId, got[1].packetId, "both in flight at once use distinct ids");
});

Deno.test("broker answers a re-sent QoS 2 PUBLISH before PUBREL with PUBREC again and does not deliver it twice [MQTT-4.3.3-8] [MQTT-4.3.3-10]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, [sub("t", { qos: 2 })]);
  publish(p, "t", "once", { qos: 2, packetId: 3 });
  const r1 = await p.expect(PacketType.Pubrec);
  assert.deepEqual([r1.packetId, r1.reasonCode], [3, 0]);
  publish(p, "t", "once", { qos: 2, packetId: 3, dup: true });
  const r2 = await p.expect(PacketType.Pubrec);
  assert.deepEqual([r2.packetId, r2.reasonCode], [3, 0]);
  const m = await expectPublish(s);
  assert.equal(text(m.payload), "once");
  await ack(s, m);
  assert.equal(await s.silentFor(150), true, "delivered exactly once");
  p.send({ type: PacketType.Pubrel, packetId: 3, reasonCode: 0 });
  const c = await p.expect(PacketType.Pubcomp);
  assert.deepEqual([c.packetId, c.reasonCode], [3, 0]);
  // After PUBCOMP the id starts a new message [MQTT-4.3.3-9].
  publish(p, "t", "again", { qos: 2, packetId: 3 });
  assert.equal((await p.expect(PacketType.Pubrec)).reasonCode, 0);
  assert.equal(text((await expectPublish(s)).payload), "again");
});

Deno.test("broker answers PUBREL for an unknown packet id with PUBCOMP 0x92 [MQTT-4.3.3-11]", async () => {
  await using b = await startBroker();
  await using p = await connect(b.port, "p");
  p.send({ type: PacketType.Pubrel, packetId: 77, reasonCode: 0 });
  const c = await p.expect(PacketType.Pubcomp);
  assert.deepEqual([c.packetId, c.reasonCode], [77, 0x92]);
  // The connection stays usable.
  p.send({ type: PacketType.Pingreq });
  await p.expect(PacketType.Pingresp);
});

Deno.test("broker completes an inbound QoS 2 exchange even after the message expired [MQTT-4.3.3-13]", async () => {
  await using b = await startBroker();
  await using p = await connect(b.port, "p");
  publish(p, "t", "x", { qos: 2, packetId: 6, properties: { messageExpiryInterval: 1 } });
  assert.equal((await p.expect(PacketType.Pubrec)).packetId, 6);
  await sleep(1_100);
  p.send({ type: PacketType.Pubrel, packetId: 6, reasonCode: 0 });
  const c = await p.expect(PacketType.Pubcomp);
  assert.deepEqual([c.packetId, c.reasonCode], [6, 0]);
});

Deno.test("broker acknowledges with 0x10 No matching subscribers when nobody subscribes, 0x00 otherwise (3.4.2.1)", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  assert.equal(await publishQos1(p, "nobody", "x", { packetId: 1 }), 0x10);
  publish(p, "nobody", "x", { qos: 2, packetId: 2 });
  const rec = await p.expect(PacketType.Pubrec);
  assert.deepEqual([rec.packetId, rec.reasonCode], [2, 0x10]);
  p.send({ type: PacketType.Pubrel, packetId: 2, reasonCode: 0 });
  assert.equal((await p.expect(PacketType.Pubcomp)).reasonCode, 0);
  await subscribe(s, ["somebody"]);
  assert.equal(await publishQos1(p, "somebody", "x", { packetId: 3 }), 0x00);
});

Deno.test("broker answers PUBACK 0x99 to a PUBLISH whose Payload Format Indicator is 1 and payload is not UTF-8, and routes it not (3.3.2.3.2)", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["t"]);
  const bad = new Uint8Array([0x61, 0xff, 0xfe]);
  assert.equal(
    await publishQos1(p, "t", bad, { properties: { payloadFormatIndicator: 1 } }),
    0x99,
  );
  assert.equal(await s.silentFor(100), true);
  // The same bytes without the indicator are fine; valid UTF-8 with it too.
  assert.equal(await publishQos1(p, "t", bad, { packetId: 2 }), 0);
  assert.deepEqual((await expectPublish(s)).payload, bad);
  assert.equal(
    await publishQos1(p, "t", "é ok", { packetId: 3, properties: { payloadFormatIndicator: 1 } }),
    0,
  );
  const m = await expectPublish(s);
  assert.equal(text(m.payload), "é ok");
  assert.equal(m.properties?.payloadFormatIndicator, 1);
});

// ------------------------------------------------------------------ forwarding

Deno.test("broker forwards each message at min(published QoS, granted QoS) [MQTT-3.8.4-8]", async () => {
  await using b = await startBroker();
  await using s0 = await connect(b.port, "s0");
  await using s1 = await connect(b.port, "s1");
  await using s2 = await connect(b.port, "s2");
  await using p = await connect(b.port, "p");
  assert.deepEqual(await subscribe(s0, [sub("q", { qos: 0 })]), [0]);
  assert.deepEqual(await subscribe(s1, [sub("q", { qos: 1 })]), [1]);
  assert.deepEqual(await subscribe(s2, [sub("q", { qos: 2 })]), [2]);
  publish(p, "q", "0", { qos: 0 });
  publish(p, "q", "1", { qos: 1, packetId: 1 });
  publish(p, "q", "2", { qos: 2, packetId: 2 });
  await p.expect(PacketType.Puback);
  await p.expect(PacketType.Pubrec);
  for (const [client, granted] of [[s0, 0], [s1, 1], [s2, 2]] as const) {
    const got = await expectPublishes(client, 3);
    assert.deepEqual(payloads(got), ["0", "1", "2"]);
    assert.deepEqual(
      got.map((m) => m.qos),
      [0, 1, 2].map((q) => Math.min(q, granted)),
      `subscriber granted QoS ${granted}`,
    );
    for (const m of got) {
      if (m.qos > 0) assert.ok(m.packetId! > 0);
      else assert.equal(m.packetId, undefined);
      await ack(client, m);
    }
    assert.equal(await client.silentFor(50), true);
  }
});

Deno.test("broker forwards Payload Format Indicator, Content Type, Response Topic, Correlation Data and User Properties unchanged and in order, without DUP [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.1-3]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, [sub("req", { qos: 1 })]);
  const correlation = new Uint8Array([0, 1, 2, 0xff]);
  const userProperties: [string, string][] = [["z", "1"], ["a", "2"], ["z", "0"], ["", ""], [
    "k",
    "v v",
  ]];
  assert.equal(
    await publishQos1(p, "req", "body", {
      dup: true,
      properties: {
        payloadFormatIndicator: 1,
        contentType: "application/json; charset=utf-8",
        responseTopic: "resp/client-1",
        correlationData: correlation,
        userProperties,
      },
    }),
    0,
  );
  const m = await expectPublish(s);
  assert.equal(m.dup, false, "the inbound DUP flag is not passed on");
  assert.equal(m.qos, 1);
  assert.deepEqual(m.properties, {
    payloadFormatIndicator: 1,
    contentType: "application/json; charset=utf-8",
    responseTopic: "resp/client-1",
    correlationData: correlation,
    userProperties,
  });
});

Deno.test("broker forwards a live message with its Message Expiry Interval [MQTT-3.3.2-6]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["t"]);
  publish(p, "t", "x", { properties: { messageExpiryInterval: 30 } });
  publish(p, "t", "y");
  const [m1, m2] = await expectPublishes(s, 2);
  assert.equal(m1.properties?.messageExpiryInterval, 30);
  assert.equal(m2.properties?.messageExpiryInterval, undefined, "no expiry when none was sent");
});

Deno.test("broker drops a queued message that expired while the subscriber was offline and forwards another with its expiry reduced by the wait [MQTT-3.3.2-5] [MQTT-3.3.2-6]", async () => {
  await using b = await startBroker();
  const s1 = await connect(b.port, "s", { properties: { sessionExpiryInterval: 60 } });
  try {
    await subscribe(s1, [sub("t", { qos: 1 })]);
    await disconnect(s1);
  } finally {
    await s1.close();
  }
  await using p = await connect(b.port, "p");
  assert.equal(
    await publishQos1(p, "t", "short", { packetId: 1, properties: { messageExpiryInterval: 1 } }),
    0,
  );
  assert.equal(
    await publishQos1(p, "t", "long", { packetId: 2, properties: { messageExpiryInterval: 4 } }),
    0,
  );
  await sleep(1_150);
  const s2 = await connect(b.port, "s", {
    cleanStart: false,
    properties: { sessionExpiryInterval: 60 },
  });
  await using _s2 = s2;
  const m = await expectPublish(s2);
  assert.equal(text(m.payload), "long");
  const left = m.properties?.messageExpiryInterval;
  assert.ok(left !== undefined && left >= 2 && left <= 3, `expiry reduced to 2..3, got ${left}`);
  await ack(s2, m);
  assert.equal(await s2.silentFor(150), true, "the expired message is not delivered");
});

Deno.test("broker puts the matching subscription's Subscription Identifier in the PUBLISH it delivers [MQTT-3.3.4-3]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["a/+"], { packetId: 1, properties: { subscriptionIdentifiers: [42] } });
  await subscribe(s, ["b"], { packetId: 2 });
  publish(p, "a/x", "1");
  publish(p, "b", "2");
  const [m1, m2] = await expectPublishes(s, 2);
  assert.deepEqual(m1.properties?.subscriptionIdentifiers, [42]);
  assert.equal(m2.properties?.subscriptionIdentifiers, undefined);
});

Deno.test("broker never resends a message the client completed with PUBACK 0x80, and resends the unacknowledged one with DUP=1 on resumption [MQTT-4.4.0-2] [MQTT-4.4.0-1]", async () => {
  await using b = await startBroker();
  const s1 = await connect(b.port, "s", { properties: { sessionExpiryInterval: 60 } });
  let keptId: number;
  try {
    await subscribe(s1, [sub("t", { qos: 1 })]);
    await using p = await connect(b.port, "p");
    await publishQos1(p, "t", "refused", { packetId: 1 });
    await publishQos1(p, "t", "unacked", { packetId: 2 });
    const [m1, m2] = await expectPublishes(s1, 2);
    assert.deepEqual(payloads([m1, m2]), ["refused", "unacked"]);
    s1.send({ type: PacketType.Puback, packetId: m1.packetId!, reasonCode: 0x80 });
    keptId = m2.packetId!;
    assert.equal(await s1.silentFor(100), true, "no resend on the same connection");
    await disconnect(s1);
  } finally {
    await s1.close();
  }
  await using s2 = await connect(b.port, "s", {
    cleanStart: false,
    properties: { sessionExpiryInterval: 60 },
  });
  const again = await expectPublish(s2);
  assert.equal(text(again.payload), "unacked");
  assert.equal(again.dup, true);
  assert.equal(again.packetId, keptId);
  await ack(s2, again);
  assert.equal(await s2.silentFor(150), true, "the 0x80-acknowledged message is not resent");
});

Deno.test("broker treats PUBREC 0x80 from the client as the end of a QoS 2 delivery: no PUBREL, no resend [MQTT-4.4.0-2]", async () => {
  await using b = await startBroker();
  const s1 = await connect(b.port, "s", { properties: { sessionExpiryInterval: 60 } });
  try {
    await subscribe(s1, [sub("t", { qos: 2 })]);
    await using p = await connect(b.port, "p");
    publish(p, "t", "x", { qos: 2, packetId: 1 });
    await p.expect(PacketType.Pubrec);
    const m = await expectPublish(s1);
    s1.send({ type: PacketType.Pubrec, packetId: m.packetId!, reasonCode: 0x80 });
    assert.equal(await s1.silentFor(150), true, "no PUBREL after PUBREC 0x80");
    await disconnect(s1);
  } finally {
    await s1.close();
  }
  await using s2 = await connect(b.port, "s", {
    cleanStart: false,
    properties: { sessionExpiryInterval: 60 },
  });
  assert.equal(await s2.silentFor(150), true, "nothing resent on resumption");
});

Deno.test("broker keeps a QoS 1 message it already sent even after its expiry passes, and resends it on resumption [MQTT-4.3.3-7]", async () => {
  await using b = await startBroker();
  const s1 = await connect(b.port, "s", { properties: { sessionExpiryInterval: 60 } });
  try {
    await subscribe(s1, [sub("t", { qos: 1 })]);
    await using p = await connect(b.port, "p");
    await publishQos1(p, "t", "x", { properties: { messageExpiryInterval: 1 } });
    const m = await expectPublish(s1);
    assert.equal(m.properties?.messageExpiryInterval, 1);
    await disconnect(s1);
  } finally {
    await s1.close();
  }
  await sleep(1_100);
  await using s2 = await connect(b.port, "s", {
    cleanStart: false,
    properties: { sessionExpiryInterval: 60 },
  });
  const again = await expectPublish(s2);
  assert.equal(again.dup, true);
  assert.equal(text(again.payload), "x");
});

// ------------------------------------------------------------------ ordering

Deno.test("broker delivers messages from one publisher on one topic in the order received, at each QoS [MQTT-4.6.0-5] [MQTT-4.6.0-6]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, [sub("o/#", { qos: 2 })]);
  const n = 40;
  for (const qos of [0, 1, 2] as const) {
    for (let i = 0; i < n; i++) {
      publish(p, `o/${qos}`, `${qos}-${i}`, { qos, packetId: qos > 0 ? i + 1 : undefined });
    }
  }
  const got: string[] = [];
  let pubrels = 0;
  while (got.length < 3 * n || pubrels < n) {
    const m = await s.read();
    assert.ok(typeof m !== "string", `subscriber read ended: ${m}`);
    if (m.type === PacketType.Pubrel) {
      pubrels++;
      s.send({ type: PacketType.Pubcomp, packetId: m.packetId, reasonCode: 0 });
      continue;
    }
    assert.equal(m.type, PacketType.Publish);
    got.push(text(m.payload));
    if (m.qos === 1) s.send({ type: PacketType.Puback, packetId: m.packetId!, reasonCode: 0 });
    if (m.qos === 2) s.send({ type: PacketType.Pubrec, packetId: m.packetId!, reasonCode: 0 });
  }
  assert.equal(await s.silentFor(100), true, "no extra copies");
  for (const qos of [0, 1, 2]) {
    const seq = got.filter((g) => g.startsWith(`${qos}-`));
    assert.deepEqual(seq, Array.from({ length: n }, (_, i) => `${qos}-${i}`), `QoS ${qos} order`);
  }
  // Acknowledge the publisher's QoS 2 exchanges so nothing dangles.
  for (let i = 0; i < 2 * n; i++) {
    const a = await p.read();
    assert.ok(
      typeof a !== "string" && (a.type === PacketType.Puback || a.type === PacketType.Pubrec),
    );
  }
});

// ------------------------------------------------------------------ §10 request / response

Deno.test("broker closes with DISCONNECT 0x82 on a PUBLISH whose Response Topic contains a wildcard [MQTT-3.3.2-14]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["req"]);
  publish(p, "req", "x", { qos: 1, properties: { responseTopic: "resp/+" } });
  await expectDisconnect(p, 0x82);
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker passes Response Topic and binary Correlation Data through a request/response round trip [MQTT-3.3.2-15] [MQTT-3.3.2-16]", async () => {
  await using b = await startBroker();
  await using requester = await connect(b.port, "requester");
  await using responder = await connect(b.port, "responder");
  await subscribe(requester, ["resp/requester"]);
  await subscribe(responder, ["svc/echo"]);
  const corr = bytes("id-\u0000-7");
  publish(requester, "svc/echo", "ping", {
    properties: { responseTopic: "resp/requester", correlationData: corr },
  });
  const req = await expectPublish(responder);
  assert.equal(req.properties?.responseTopic, "resp/requester");
  assert.deepEqual(req.properties?.correlationData, corr);
  publish(responder, req.properties!.responseTopic!, "pong", {
    properties: { correlationData: req.properties!.correlationData },
  });
  const resp = await expectPublish(requester);
  assert.equal(resp.topic, "resp/requester");
  assert.equal(text(resp.payload), "pong");
  assert.deepEqual(resp.properties?.correlationData, corr);
});

// ------------------------------------------------------------------ policy refusals and resend rules

Deno.test("broker refuses an unauthorized PUBLISH with PUBACK/PUBREC 0x87, routes nothing, keeps the connection and frees the id [MQTT-4.3.3-12] (3.3.5)", async () => {
  await using b = await startBroker({}, {
    auth: {
      authenticate: () => 0,
      authorizePublish: (_c, topic) => !topic.startsWith("secret"),
      authorizeSubscribe: () => true,
      authorizeDelivery: () => true,
    },
  });
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, [sub("#", { qos: 2 })]);
  assert.equal(await publishQos1(p, "secret/a", "x", { packetId: 1 }), 0x87);
  publish(p, "secret/b", "x", { qos: 2, packetId: 2 });
  const rec = await p.expect(PacketType.Pubrec);
  assert.deepEqual([rec.packetId, rec.reasonCode], [2, 0x87]);
  publish(p, "secret/c", "x"); // QoS 0: dropped (ours)
  assert.equal(await s.silentFor(150), true);
  // The refused QoS 2 id is free again: a new message with it is accepted and delivered.
  publish(p, "open", "ok", { qos: 2, packetId: 2 });
  assert.equal((await p.expect(PacketType.Pubrec)).reasonCode, 0);
  assert.equal(text((await expectPublish(s)).payload), "ok");
});

Deno.test("broker resends on resumption only the PUBREL for a QoS 2 message the client already PUBRECed, and the unacknowledged PUBLISH with DUP=1 and its full topic, in order [MQTT-4.3.3-6] [MQTT-4.4.0-1] [MQTT-3.3.1-1]", async () => {
  await using b = await startBroker();
  const opts = { properties: { sessionExpiryInterval: 60, topicAliasMaximum: 10 } };
  const s1 = await connect(b.port, "s", opts);
  let ids: number[];
  try {
    await subscribe(s1, [sub("t/+", { qos: 2 })]);
    await using p = await connect(b.port, "p");
    publish(p, "t/a", "two", { qos: 2, packetId: 1 });
    await p.expect(PacketType.Pubrec);
    await publishQos1(p, "t/a", "one", { packetId: 2 });
    const [m2, m1] = await expectPublishes(s1, 2);
    assert.deepEqual([m2.qos, m1.qos], [2, 1]);
    s1.send({ type: PacketType.Pubrec, packetId: m2.packetId!, reasonCode: 0 });
    assert.equal((await s1.expect(PacketType.Pubrel)).packetId, m2.packetId);
    ids = [m2.packetId!, m1.packetId!];
    await disconnect(s1);
  } finally {
    await s1.close();
  }
  await using s2 = await connect(b.port, "s", { cleanStart: false, ...opts });
  const rel = await s2.expect(PacketType.Pubrel);
  assert.equal(rel.packetId, ids[0]);
  const again = await expectPublish(s2);
  assert.deepEqual(
    [again.packetId, again.dup, again.topic, again.properties?.topicAlias, text(again.payload)],
    [ids[1], true, "t/a", undefined, "one"],
  );
  assert.equal(await s2.silentFor(100), true, "the PUBLISH of the PUBRECed message is not resent");
  s2.send({ type: PacketType.Pubcomp, packetId: ids[0], reasonCode: 0 });
  await ack(s2, again);
  assert.equal(await s2.silentFor(100), true);
});

Deno.test("broker does not resend an unacknowledged PUBLISH to an MQTT 5 client on the same connection, however long it waits (4.4)", async () => {
  await using b = await startBroker({ retryIntervalMs: 50 });
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, [sub("t", { qos: 1 })]);
  await publishQos1(p, "t", "x");
  const m = await expectPublish(s);
  assert.equal(m.dup, false);
  assert.equal(await s.silentFor(400), true, "no timed resend for v5 (8 retry intervals)");
});

Deno.test("broker delivers each message once and in order to every one of 300 subscribers of one topic, whose writes span several event-loop turns (4.6)", async () => {
  await using b = await startBroker();
  const count = 300; // more than WRITES_PER_TURN (128) twice over
  const subscribers = await Promise.all(
    Array.from({ length: count }, (_, i) => connect(b.port, `fan-${i}`)),
  );
  try {
    await Promise.all(subscribers.map((s) => subscribe(s, ["fan/t"])));
    await using p = await connect(b.port, "p");
    publish(p, "fan/t", "one");
    publish(p, "fan/t", "two");
    for (const s of subscribers) {
      assert.deepEqual(payloads(await expectPublishes(s, 2)), ["one", "two"]);
    }
    const quiet = await Promise.all(subscribers.map((s) => s.silentFor(100)));
    assert.ok(quiet.every((q) => q), "no duplicate reached any subscriber");
  } finally {
    await Promise.all(subscribers.map((s) => s.close()));
  }
});
