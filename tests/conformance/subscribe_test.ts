/**
 * Checklist §6 (SUBSCRIBE / SUBACK, UNSUBSCRIBE / UNSUBACK, shared
 * subscriptions, overlapping subscriptions) over real TCP sockets.
 * Retain Handling and Retain As Published are in retained_test.ts.
 */
import assert from "node:assert/strict";
import { PacketType } from "../../src/codec/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, type RawClient, text } from "../helpers/raw_client.ts";
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
  unsubscribe,
} from "./publish_helpers.ts";

// ------------------------------------------------------------------ SUBACK codes

Deno.test("broker answers SUBACK with the SUBSCRIBE's id and one code per filter in order, 0x8F for invalid filters while the valid ones apply [MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-3.9.3-1] [MQTT-4.7.1-1] [MQTT-4.7.1-2] [MQTT-3.8.4-5]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  const codes = await subscribe(s, [
    "a/#/b", // '#' not last
    sub("ok/+", { qos: 1 }),
    "a+/b", // '+' not a whole level
    "sport/ten#", // '#' not a whole level
    sub("x", { qos: 2 }),
    "$share/g+h/x", // share name with a wildcard
    "$share//x", // empty share name
    "$share/g", // no filter after the share name
    "",
  ], { packetId: 0x1234 });
  assert.deepEqual(codes, [0x8f, 1, 0x8f, 0x8f, 2, 0x8f, 0x8f, 0x8f, 0x8f]);
  publish(p, "ok/1", "a");
  publish(p, "x", "b");
  publish(p, "a/c/b", "c");
  const got = await expectPublishes(s, 2);
  assert.deepEqual(payloads(got), ["a", "b"]);
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker grants requested QoS 0-2 capped at its Maximum QoS 1 [MQTT-3.2.2-10] [MQTT-3.8.4-7]", async () => {
  await using b = await startBroker({ maximumQos: 1 });
  await using s = await connect(b.port, "s");
  const codes = await subscribe(s, [
    sub("q0", { qos: 0 }),
    sub("q1", { qos: 1 }),
    sub("q2", { qos: 2 }),
  ]);
  assert.deepEqual(codes, [0, 1, 1]);
});

Deno.test("broker grants every requested QoS as 0 when its Maximum QoS is 0 and delivers at QoS 0 [MQTT-3.8.4-7]", async () => {
  await using b = await startBroker({ maximumQos: 0 });
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  assert.deepEqual(await subscribe(s, [sub("t", { qos: 2 }), sub("u", { qos: 1 })]), [0, 0]);
  publish(p, "t", "x");
  const m = await expectPublish(s);
  assert.equal(m.qos, 0);
});

// ------------------------------------------------------------------ malformed / protocol errors in SUBSCRIBE

Deno.test("broker closes with DISCONNECT 0x82 on a SUBSCRIBE with no topic filter [MQTT-3.8.3-2]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  s.send({ type: PacketType.Subscribe, packetId: 1, subscriptions: [] });
  await expectDisconnect(s, 0x82);
});

Deno.test("broker closes with DISCONNECT 0x82 on a SUBSCRIBE option with QoS 3 (3.8.3.1)", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  s.send({
    type: PacketType.Subscribe,
    packetId: 1,
    subscriptions: [sub("t", { qos: 3 as 0 })],
  });
  await expectDisconnect(s, 0x82);
});

Deno.test("broker closes with DISCONNECT 0x82 on a SUBSCRIBE option with Retain Handling 3 (3.8.3.1)", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  s.send({
    type: PacketType.Subscribe,
    packetId: 1,
    subscriptions: [sub("t", { retainHandling: 3 as 0 })],
  });
  await expectDisconnect(s, 0x82);
});

Deno.test("broker closes with DISCONNECT 0x81 on a SUBSCRIBE option with reserved bits 6-7 set [MQTT-3.8.3-5]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  // SUBSCRIBE id 1, no properties, filter "t", options 0x40.
  s.sendBytes(new Uint8Array([0x82, 7, 0, 1, 0, 0, 1, 0x74, 0x40]));
  await expectDisconnect(s, 0x81);
});

Deno.test("broker closes with DISCONNECT 0x82 on Subscription Identifier 0 (3.8.2.1.2)", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  s.send({
    type: PacketType.Subscribe,
    packetId: 1,
    subscriptions: [sub("t")],
    properties: { subscriptionIdentifiers: [0] },
  });
  await expectDisconnect(s, 0x82);
});

Deno.test("broker closes with DISCONNECT 0x82 on a SUBSCRIBE with two Subscription Identifiers (3.8.2.1.2)", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  s.send({
    type: PacketType.Subscribe,
    packetId: 1,
    subscriptions: [sub("t")],
    properties: { subscriptionIdentifiers: [1, 2] },
  });
  await expectDisconnect(s, 0x82);
});

// ------------------------------------------------------------------ '$' topics

Deno.test("broker does not match '$' topics with first-level wildcards, but does with '$SYS/#' [MQTT-4.7.2-1]", async () => {
  await using b = await startBroker();
  await using wild = await connect(b.port, "wild");
  await using sys = await connect(b.port, "sys");
  await using p = await connect(b.port, "p");
  assert.deepEqual(await subscribe(wild, ["#", "+/x", "+/+"]), [0, 0, 0]);
  assert.deepEqual(await subscribe(sys, ["$SYS/#", "$SYS/+"]), [0, 0]);
  // Only the server publishes to '$' topics.
  b.broker.publish({
    topic: "$SYS/x",
    payload: bytes("sys"),
    qos: 0,
    retain: false,
    id: b.broker.nextMessageId(),
  }, Date.now());
  const m = await expectPublish(sys);
  assert.equal(m.topic, "$SYS/x");
  assert.equal(await sys.silentFor(50), true, "one copy for overlapping subscriptions");
  assert.equal(await wild.silentFor(100), true, "'#', '+/x', '+/+' do not match '$SYS/x'");
  // Control: the same filters match an ordinary topic, with one copy.
  publish(p, "a/x", "plain");
  assert.equal(text((await expectPublish(wild)).payload), "plain");
  assert.equal(await wild.silentFor(50), true);
});

// ------------------------------------------------------------------ replacing subscriptions

Deno.test("broker replaces a subscription to the same filter: new QoS, and the Subscription Identifier removed when the new SUBSCRIBE has none [MQTT-3.8.4-3]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  assert.deepEqual(
    await subscribe(s, [sub("t", { qos: 2 })], {
      packetId: 1,
      properties: { subscriptionIdentifiers: [5] },
    }),
    [2],
  );
  publish(p, "t", "first", { qos: 2, packetId: 1 });
  const m1 = await expectPublish(s);
  assert.equal(m1.qos, 2);
  assert.deepEqual(m1.properties?.subscriptionIdentifiers, [5]);
  await ack(s, m1);
  assert.deepEqual(await subscribe(s, [sub("t", { qos: 0 })], { packetId: 2 }), [0]);
  publish(p, "t", "second", { qos: 2, packetId: 2 });
  const m2 = await expectPublish(s);
  assert.equal(text(m2.payload), "second");
  assert.equal(m2.qos, 0, "the replacement's QoS applies");
  assert.equal(m2.properties?.subscriptionIdentifiers, undefined, "the old id is gone");
  assert.equal(await s.silentFor(100), true, "one subscription, one copy");
});

Deno.test("broker stores the SUBSCRIBE's Subscription Identifier with every subscription it creates (3.8.2.1.2)", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["a", "b/+"], { properties: { subscriptionIdentifiers: [268_435_455] } });
  publish(p, "a", "1");
  publish(p, "b/c", "2");
  const got = await expectPublishes(s, 2);
  for (const m of got) assert.deepEqual(m.properties?.subscriptionIdentifiers, [268_435_455]);
});

// ------------------------------------------------------------------ No Local

Deno.test("broker does not forward a message to its publisher on a No Local subscription [MQTT-3.8.3-3]", async () => {
  await using b = await startBroker();
  await using me = await connect(b.port, "me");
  await using other = await connect(b.port, "other");
  assert.deepEqual(await subscribe(me, [sub("nl", { noLocal: true }), sub("l")]), [0, 0]);
  await subscribe(other, ["nl"]);
  publish(me, "nl", "not to me");
  publish(me, "l", "to me");
  const m = await expectPublish(me);
  assert.equal(m.topic, "l");
  assert.equal(await me.silentFor(100), true);
  assert.equal(text((await expectPublish(other)).payload), "not to me");
  // Another client's message still reaches the No Local subscription.
  publish(other, "nl", "from other");
  assert.equal(text((await expectPublish(me)).payload), "from other");
});

// ------------------------------------------------------------------ disabled features

Deno.test("broker without wildcard subscriptions announces it and closes with DISCONNECT 0xA2 on a wildcard filter (3.2.2.3.11)", async () => {
  await using b = await startBroker({ wildcardSubscriptionAvailable: false });
  const { client: s, connack } = await connectWithAck(b.port, "s");
  await using _s = s;
  assert.equal(connack.properties?.wildcardSubscriptionAvailable, 0);
  assert.deepEqual(await subscribe(s, ["plain/topic"]), [0], "non-wildcard filters still work");
  s.send({ type: PacketType.Subscribe, packetId: 2, subscriptions: [sub("a/+")] });
  await expectDisconnect(s, 0xa2);
});

Deno.test("broker without Subscription Identifiers announces it and closes with DISCONNECT 0xA1 on one (3.2.2.3.12)", async () => {
  await using b = await startBroker({ subscriptionIdentifierAvailable: false });
  const { client: s, connack } = await connectWithAck(b.port, "s");
  await using _s = s;
  assert.equal(connack.properties?.subscriptionIdentifierAvailable, 0);
  assert.deepEqual(await subscribe(s, ["t"]), [0]);
  s.send({
    type: PacketType.Subscribe,
    packetId: 2,
    subscriptions: [sub("u")],
    properties: { subscriptionIdentifiers: [1] },
  });
  await expectDisconnect(s, 0xa1);
});

Deno.test("broker without shared subscriptions announces it and closes with DISCONNECT 0x9E on a $share filter (3.2.2.3.13)", async () => {
  await using b = await startBroker({ sharedSubscriptionAvailable: false });
  const { client: s, connack } = await connectWithAck(b.port, "s");
  await using _s = s;
  assert.equal(connack.properties?.sharedSubscriptionAvailable, 0);
  s.send({ type: PacketType.Subscribe, packetId: 2, subscriptions: [sub("$share/g/t")] });
  await expectDisconnect(s, 0x9e);
});

Deno.test("broker with every feature available announces none of the Available flags (3.2.2.3.11-13)", async () => {
  await using b = await startBroker();
  const { client: s, connack } = await connectWithAck(b.port, "s");
  await using _s = s;
  assert.equal(connack.properties?.wildcardSubscriptionAvailable, undefined);
  assert.equal(connack.properties?.subscriptionIdentifierAvailable, undefined);
  assert.equal(connack.properties?.sharedSubscriptionAvailable, undefined);
});

// ------------------------------------------------------------------ shared subscriptions

async function collect(client: RawClient, ms = 150): Promise<string[]> {
  const out: string[] = [];
  for (;;) {
    const r = await client.read(ms);
    if (r === "timeout") return out;
    assert.ok(r !== "closed", "connection closed");
    assert.equal(r.type, PacketType.Publish);
    out.push(text(r.payload));
    await ack(client, r);
  }
}

Deno.test("broker gives each message to exactly one member of a shared group, round robin, while other groups and plain subscribers get every message [MQTT-4.8.2-3]", async () => {
  await using b = await startBroker();
  await using m1 = await connect(b.port, "m1");
  await using m2 = await connect(b.port, "m2");
  await using m3 = await connect(b.port, "m3");
  await using h = await connect(b.port, "h");
  await using plain = await connect(b.port, "plain");
  await using p = await connect(b.port, "p");
  for (const m of [m1, m2, m3]) assert.deepEqual(await subscribe(m, ["$share/g/job/+"]), [0]);
  assert.deepEqual(await subscribe(h, ["$share/h/job/#"]), [0]);
  await subscribe(plain, ["job/+"]);
  const all = Array.from({ length: 9 }, (_, i) => `m${i}`);
  for (const x of all) publish(p, "job/x", x);
  const [g1, g2, g3] = await Promise.all([collect(m1), collect(m2), collect(m3)]);
  assert.deepEqual([...g1, ...g2, ...g3].sort(), all, "each message exactly once in group g");
  assert.deepEqual([g1.length, g2.length, g3.length], [3, 3, 3], "round robin: fair shares");
  assert.deepEqual(await collect(h), all, "the only member of group h gets all");
  assert.deepEqual(await collect(plain), all, "a non-shared subscriber gets all");
});

Deno.test("broker delivers a shared message at the receiving member's granted QoS with only its own Subscription Identifier [MQTT-4.8.2-3] [MQTT-3.3.4-3]", async () => {
  await using b = await startBroker();
  await using a = await connect(b.port, "a");
  await using c = await connect(b.port, "c");
  await using p = await connect(b.port, "p");
  await subscribe(a, [sub("$share/g/t", { qos: 0 })], {
    properties: { subscriptionIdentifiers: [11] },
  });
  await subscribe(c, [sub("$share/g/t", { qos: 2 })], {
    properties: { subscriptionIdentifiers: [22] },
  });
  await publishQos1(p, "t", "1", { packetId: 1 });
  await publishQos1(p, "t", "2", { packetId: 2 });
  const seen = new Map<string, { qos: number; ids?: number[] }>();
  for (const [name, client] of [["a", a], ["c", c]] as const) {
    const m = await expectPublish(client);
    seen.set(name, { qos: m.qos, ids: m.properties?.subscriptionIdentifiers });
    await ack(client, m);
    assert.equal(await client.silentFor(50), true);
  }
  assert.deepEqual(seen.get("a"), { qos: 0, ids: [11] });
  assert.deepEqual(seen.get("c"), { qos: 1, ids: [22] });
});

Deno.test("broker sends no retained messages on joining a shared subscription, new or existing (4.8.2)", async () => {
  await using b = await startBroker();
  await using p = await connect(b.port, "p");
  await using a = await connect(b.port, "a");
  await using c = await connect(b.port, "c");
  await using plain = await connect(b.port, "plain");
  assert.equal(await publishQos1(p, "r/t", "kept", { retain: true }), 0x10);
  await subscribe(a, ["$share/g/r/t"]); // creates the group
  await subscribe(c, ["$share/g/r/#"]); // another group filter
  await subscribe(a, ["$share/g/r/t"], { packetId: 3 }); // re-subscribe, existing group
  assert.equal(await a.silentFor(100), true);
  assert.equal(await c.silentFor(50), true);
  // Control: a plain subscription gets it.
  await subscribe(plain, ["r/t"]);
  const m = await expectPublish(plain);
  assert.equal(m.retain, true);
  assert.equal(text(m.payload), "kept");
});

Deno.test("broker closes with DISCONNECT 0x82 on No Local set on a shared subscription [MQTT-3.8.3-4]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  s.send({
    type: PacketType.Subscribe,
    packetId: 1,
    subscriptions: [sub("$share/g/t", { noLocal: true })],
  });
  await expectDisconnect(s, 0x82);
});

Deno.test("broker sends every message to the remaining member once another leaves the shared group (4.8.2)", async () => {
  await using b = await startBroker();
  await using a = await connect(b.port, "a");
  await using c = await connect(b.port, "c");
  await using p = await connect(b.port, "p");
  await subscribe(a, ["$share/g/t"]);
  await subscribe(c, ["$share/g/t"]);
  assert.deepEqual(await unsubscribe(c, ["$share/g/t"]), [0]);
  for (const x of ["1", "2", "3", "4"]) publish(p, "t", x);
  assert.deepEqual(await collect(a), ["1", "2", "3", "4"]);
  assert.deepEqual(await collect(c, 50), []);
});

Deno.test("broker accepts a share name and filter with several levels and matches only the part after the share name [MQTT-4.8.2-1] [MQTT-4.8.2-2]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  assert.deepEqual(await subscribe(s, ["$share/grp-1/a/+/c"]), [0]);
  publish(p, "a/b/c", "hit");
  publish(p, "$share/grp-1/a/b/c", "literal topic is refused for '$'");
  publish(p, "grp-1/a/b/c", "miss");
  assert.deepEqual(await collect(s), ["hit"]);
});

// ------------------------------------------------------------------ overlapping subscriptions

Deno.test("broker sends one copy for overlapping subscriptions, at the highest granted QoS, with all their Subscription Identifiers (ours) [MQTT-3.3.4-2] [MQTT-3.3.4-4]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, [sub("a/+", { qos: 0 })], {
    packetId: 1,
    properties: { subscriptionIdentifiers: [1] },
  });
  await subscribe(s, [sub("a/#", { qos: 2 })], {
    packetId: 2,
    properties: { subscriptionIdentifiers: [2] },
  });
  await subscribe(s, [sub("a/b", { qos: 1 })], { packetId: 3 });
  publish(p, "a/b", "x", { qos: 2, packetId: 1 });
  const m = await expectPublish(s);
  assert.equal(m.qos, 2);
  assert.deepEqual([...(m.properties?.subscriptionIdentifiers ?? [])].sort(), [1, 2]);
  await ack(s, m);
  assert.equal(await s.silentFor(150), true, "exactly one copy");
  // A QoS 1 publish: min(1, 0) = 0, min(1, 2) = 1, min(1, 1) = 1 → one copy at QoS 1.
  publish(p, "a/b", "y", { qos: 1, packetId: 2 });
  const m2 = await expectPublish(s);
  assert.equal(m2.qos, 1);
  await ack(s, m2);
  assert.equal(await s.silentFor(100), true);
});

// ------------------------------------------------------------------ UNSUBSCRIBE

Deno.test("broker answers UNSUBACK with one code per filter in order: 0x00 removed, 0x11 none existed, 0x8F invalid [MQTT-3.10.4-5] [MQTT-3.11.3-1]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["a", "b/+"]);
  assert.deepEqual(await unsubscribe(s, ["a", "nope", "b/+", "x/#/y"], 0x4321), [
    0x00,
    0x11,
    0x00,
    0x8f,
  ]);
  publish(p, "a", "1");
  publish(p, "b/c", "2");
  assert.equal(await s.silentFor(150), true, "removed subscriptions get nothing");
  // Unsubscribing again: nothing existed.
  assert.deepEqual(await unsubscribe(s, ["a"], 9), [0x11]);
});

Deno.test("broker compares UNSUBSCRIBE filters character by character, wildcards literally [MQTT-3.10.4-1]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["a/b", "a/+"]);
  assert.deepEqual(await unsubscribe(s, ["a/#", "A/b", "a/b/"]), [0x11, 0x11, 0x11]);
  assert.deepEqual(await unsubscribe(s, ["a/+"], 3), [0x00]);
  publish(p, "a/b", "still");
  publish(p, "a/c", "gone");
  assert.deepEqual(await collect(s), ["still"]);
});

Deno.test("broker closes with DISCONNECT 0x82 on an UNSUBSCRIBE with no topic filter [MQTT-3.10.3-2]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  s.send({ type: PacketType.Unsubscribe, packetId: 1, topicFilters: [] });
  await expectDisconnect(s, 0x82);
});

Deno.test("broker completes a QoS 2 delivery already started after the subscription is removed [MQTT-3.10.4-3]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, [sub("t", { qos: 2 })]);
  publish(p, "t", "x", { qos: 2, packetId: 1 });
  const m = await expectPublish(s);
  assert.deepEqual(await unsubscribe(s, ["t"]), [0]);
  s.send({ type: PacketType.Pubrec, packetId: m.packetId!, reasonCode: 0 });
  const rel = await s.expect(PacketType.Pubrel);
  assert.deepEqual([rel.packetId, rel.reasonCode], [m.packetId, 0]);
  s.send({ type: PacketType.Pubcomp, packetId: m.packetId!, reasonCode: 0 });
  publish(p, "t", "after", { qos: 2, packetId: 2 });
  assert.equal(await s.silentFor(150), true, "no new matches after UNSUBACK [MQTT-3.10.4-2]");
});

// ------------------------------------------------------------------ refusals per filter

Deno.test("broker answers SUBACK 0x87 for a filter the client may not subscribe to while granting the others (3.9.3)", async () => {
  await using b = await startBroker({}, {
    auth: {
      authenticate: () => 0,
      authorizePublish: () => true,
      authorizeSubscribe: (_c, filter) => !filter.startsWith("secret"),
      authorizeDelivery: () => true,
    },
  });
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  assert.deepEqual(await subscribe(s, [sub("open", { qos: 1 }), "secret/#"]), [1, 0x87]);
  publish(p, "secret/x", "no");
  publish(p, "open", "yes");
  assert.deepEqual(await collect(s), ["yes"]);
});

Deno.test("broker asks the auth hooks before every delivery and withholds what they refuse, to live and to queued subscribers", async () => {
  await using b = await startBroker({}, {
    auth: {
      authenticate: () => 0,
      authorizePublish: () => true,
      authorizeSubscribe: () => true,
      authorizeDelivery: (c, topic) => !(c.clientId === "s" && topic.startsWith("secret/")),
    },
  });
  const persistent = { cleanStart: false, properties: { sessionExpiryInterval: 60 } };
  await using s = await connect(b.port, "s", persistent);
  await using p = await connect(b.port, "p");
  await subscribe(s, [sub("#", { qos: 1 })]);
  publish(p, "secret/x", "live-no", { qos: 1, packetId: 1 });
  publish(p, "open/x", "live-yes", { qos: 1, packetId: 2 });
  assert.deepEqual(await collect(s), ["live-yes"]);
  await disconnect(s);
  publish(p, "secret/y", "queued-no", { qos: 1, packetId: 3 });
  publish(p, "open/y", "queued-yes", { qos: 1, packetId: 4 });
  await sleep(50);
  await using again = await connect(b.port, "s", persistent);
  assert.deepEqual(await collect(again), ["queued-yes"]);
});

Deno.test("broker answers SUBACK 0x97 for new filters beyond its per-client subscription quota, still replacing existing ones (3.9.3)", async () => {
  await using b = await startBroker({ maxSubscriptionsPerClient: 2 });
  await using s = await connect(b.port, "s");
  assert.deepEqual(await subscribe(s, ["a", "b", "c"]), [0, 0, 0x97]);
  assert.deepEqual(await subscribe(s, [sub("a", { qos: 1 }), "d"], { packetId: 2 }), [1, 0x97]);
  assert.deepEqual(await unsubscribe(s, ["b"]), [0]);
  assert.deepEqual(await subscribe(s, ["d"], { packetId: 3 }), [0]);
});

// ------------------------------------------------------------------ shared subscriptions: member lost

Deno.test("broker completes a shared QoS 2 message with the member that got it when it reconnects and never gives it to another member [MQTT-4.8.2-4]", async () => {
  await using b = await startBroker();
  const opts = { properties: { sessionExpiryInterval: 60 } };
  const a1 = await connect(b.port, "a", opts);
  await using c = await connect(b.port, "c", opts);
  await using p = await connect(b.port, "p");
  let packetId: number;
  try {
    await subscribe(a1, [sub("$share/g/t", { qos: 2 })]);
    await subscribe(c, [sub("$share/g/t", { qos: 2 })]);
    publish(p, "t", "job", { qos: 2, packetId: 1 });
    await p.expect(PacketType.Pubrec);
    // Round robin starts at the first member, "a".
    const m = await expectPublish(a1);
    packetId = m.packetId!;
    assert.equal(await c.silentFor(50), true);
    await a1.close(); // connection lost, no PUBREC
  } finally {
    await a1.close();
  }
  assert.equal(await c.silentFor(200), true, "not offered to the other member");
  await using a2 = await connect(b.port, "a", { cleanStart: false, ...opts });
  const again = await expectPublish(a2);
  assert.deepEqual([again.packetId, again.dup, text(again.payload)], [packetId, true, "job"]);
  await ack(a2, again);
});

Deno.test("broker does not give a shared QoS 2 message to another member when the member that got it loses its session [MQTT-4.8.2-5]", async () => {
  await using b = await startBroker();
  const a = await connect(b.port, "a"); // Session Expiry 0: the session ends with the connection
  await using c = await connect(b.port, "c");
  await using p = await connect(b.port, "p");
  try {
    await subscribe(a, [sub("$share/g/t", { qos: 2 })]);
    await subscribe(c, [sub("$share/g/t", { qos: 2 })]);
    publish(p, "t", "job", { qos: 2, packetId: 1 });
    await p.expect(PacketType.Pubrec);
    await expectPublish(a);
  } finally {
    await a.close();
  }
  assert.equal(await c.silentFor(250), true);
  // The group still works with the remaining member.
  publish(p, "t", "next");
  assert.equal(text((await expectPublish(c)).payload), "next");
});
