/**
 * Checklist §5 (retained messages) and §6 (Retain Handling, Retain As
 * Published) over real TCP sockets.
 */
import assert from "node:assert/strict";
import { PacketType } from "../../src/codec/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { text } from "../helpers/raw_client.ts";
import {
  ack,
  connect,
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

Deno.test("broker stores a retained message and sends it with RETAIN=1 to a later subscriber, while live subscribers get RETAIN=0 [MQTT-3.3.1-5] [MQTT-3.3.1-9] [MQTT-3.3.1-12]", async () => {
  await using b = await startBroker();
  await using live = await connect(b.port, "live");
  await using p = await connect(b.port, "p");
  await subscribe(live, ["r/t"]);
  publish(p, "r/t", "v1", { retain: true });
  const m = await expectPublish(live);
  assert.equal(text(m.payload), "v1");
  assert.equal(m.retain, false, "live forward clears RETAIN without Retain As Published");
  await using late = await connect(b.port, "late");
  await subscribe(late, ["r/t"]);
  const r = await expectPublish(late);
  assert.equal(text(r.payload), "v1");
  assert.equal(r.retain, true, "sent because of the subscription: RETAIN=1");
  assert.equal(await late.silentFor(100), true);
});

Deno.test("broker replaces a topic's retained message with the next retained PUBLISH [MQTT-3.3.1-5]", async () => {
  await using b = await startBroker();
  await using p = await connect(b.port, "p");
  publish(p, "r/t", "old", { retain: true });
  publish(p, "r/t", "new", { retain: true, qos: 1 });
  await p.expect(PacketType.Puback);
  await using s = await connect(b.port, "s");
  await subscribe(s, [sub("r/t", { qos: 1 })]);
  const m = await expectPublish(s);
  assert.equal(text(m.payload), "new");
  assert.equal(m.qos, 1);
  await ack(s, m);
  assert.equal(await s.silentFor(100), true, "only one retained message per topic");
});

Deno.test("broker deletes a retained message on an empty retained payload, stores nothing, and still forwards it [MQTT-3.3.1-6] [MQTT-3.3.1-7]", async () => {
  await using b = await startBroker();
  await using live = await connect(b.port, "live");
  await using p = await connect(b.port, "p");
  publish(p, "r/t", "v", { retain: true });
  await sync(p);
  assert.equal(b.broker.retained.size, 1);
  await subscribe(live, [sub("r/t", { retainHandling: 2 })]);
  publish(p, "r/t", "", { retain: true });
  const m = await expectPublish(live);
  assert.equal(m.payload.length, 0, "the empty retained message is forwarded");
  assert.equal(b.broker.retained.size, 0, "not stored");
  await using late = await connect(b.port, "late");
  await subscribe(late, ["r/t"]);
  assert.equal(await late.silentFor(150), true, "nothing retained any more");
});

Deno.test("broker never touches the retained store with a RETAIN=0 PUBLISH, even with an empty payload [MQTT-3.3.1-8]", async () => {
  await using b = await startBroker();
  await using p = await connect(b.port, "p");
  publish(p, "r/t", "kept", { retain: true });
  publish(p, "r/t", "live only");
  publish(p, "r/t", "");
  publish(p, "r/u", "not retained");
  await sync(p);
  await using s = await connect(b.port, "s");
  await subscribe(s, ["r/+"]);
  const m = await expectPublish(s);
  assert.equal(m.topic, "r/t");
  assert.equal(text(m.payload), "kept");
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker sends every matching retained message to a wildcard subscription, at min(retained QoS, granted QoS) with the subscription's id [MQTT-3.3.1-9] [MQTT-3.8.4-8]", async () => {
  await using b = await startBroker();
  await using p = await connect(b.port, "p");
  publish(p, "w/a", "a", { retain: true, qos: 2, packetId: 1 });
  publish(p, "w/b", "b", { retain: true, qos: 1, packetId: 2 });
  publish(p, "w/c/d", "cd", { retain: true });
  publish(p, "x/a", "other", { retain: true });
  assert.equal((await p.expect(PacketType.Pubrec)).packetId, 1);
  assert.equal((await p.expect(PacketType.Puback)).packetId, 2);
  await sync(p);
  await using s = await connect(b.port, "s");
  await subscribe(s, [sub("w/#", { qos: 1 })], { properties: { subscriptionIdentifiers: [9] } });
  const got = await expectPublishes(s, 3);
  const byTopic = new Map(got.map((m) => [m.topic, m]));
  assert.deepEqual([...byTopic.keys()].sort(), ["w/a", "w/b", "w/c/d"]);
  assert.equal(byTopic.get("w/a")!.qos, 1);
  assert.equal(byTopic.get("w/b")!.qos, 1);
  assert.equal(byTopic.get("w/c/d")!.qos, 0);
  for (const m of got) {
    assert.equal(m.retain, true);
    assert.deepEqual(m.properties?.subscriptionIdentifiers, [9]);
    await ack(s, m);
  }
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker with Retain Handling 0 sends retained messages on every SUBSCRIBE, also when it replaces a subscription [MQTT-3.3.1-9] [MQTT-3.8.4-4]", async () => {
  await using b = await startBroker();
  await using p = await connect(b.port, "p");
  publish(p, "r/t", "v", { retain: true });
  await sync(p);
  await using s = await connect(b.port, "s");
  await subscribe(s, [sub("r/t", { retainHandling: 0 })], { packetId: 1 });
  assert.equal(text((await expectPublish(s)).payload), "v");
  await subscribe(s, [sub("r/t", { retainHandling: 0 })], { packetId: 2 });
  const again = await expectPublish(s);
  assert.equal(text(again.payload), "v");
  assert.equal(again.retain, true);
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker with Retain Handling 1 sends retained messages only when the subscription did not exist [MQTT-3.3.1-10]", async () => {
  await using b = await startBroker();
  await using p = await connect(b.port, "p");
  publish(p, "r/t", "v", { retain: true });
  await sync(p);
  await using s = await connect(b.port, "s");
  await subscribe(s, [sub("r/t", { retainHandling: 1 })], { packetId: 1 });
  assert.equal(text((await expectPublish(s)).payload), "v");
  await subscribe(s, [sub("r/t", { retainHandling: 1, qos: 1 })], { packetId: 2 });
  assert.equal(await s.silentFor(150), true, "existing subscription: no retained message");
});

Deno.test("broker with Retain Handling 2 never sends retained messages on subscribe but forwards live ones [MQTT-3.3.1-11]", async () => {
  await using b = await startBroker();
  await using p = await connect(b.port, "p");
  publish(p, "r/t", "v", { retain: true });
  await sync(p);
  await using s = await connect(b.port, "s");
  await subscribe(s, [sub("r/t", { retainHandling: 2 })], { packetId: 1 });
  assert.equal(await s.silentFor(150), true);
  await subscribe(s, [sub("r/t", { retainHandling: 2 })], { packetId: 2 });
  assert.equal(await s.silentFor(100), true);
  publish(p, "r/t", "live");
  assert.equal(text((await expectPublish(s)).payload), "live");
});

Deno.test("broker keeps RETAIN=1 on live forwards for a Retain As Published subscription and clears it for others [MQTT-3.3.1-12] [MQTT-3.3.1-13]", async () => {
  await using b = await startBroker();
  await using rap = await connect(b.port, "rap");
  await using plain = await connect(b.port, "plain");
  await using p = await connect(b.port, "p");
  await subscribe(rap, [sub("t", { retainAsPublished: true })]);
  await subscribe(plain, ["t"]);
  publish(p, "t", "r", { retain: true });
  publish(p, "t", "n");
  const [r1, n1] = await expectPublishes(rap, 2);
  assert.deepEqual([r1.retain, n1.retain], [true, false]);
  const [r2, n2] = await expectPublishes(plain, 2);
  assert.deepEqual([r2.retain, n2.retain], [false, false]);
  assert.deepEqual(payloads([r1, n1, r2, n2]), ["r", "n", "r", "n"]);
});

Deno.test("broker does not send an expired retained message and reduces the expiry of one still alive [MQTT-3.3.2-5] [MQTT-3.3.2-6]", async () => {
  await using b = await startBroker();
  await using p = await connect(b.port, "p");
  publish(p, "e/short", "s", { retain: true, properties: { messageExpiryInterval: 1 } });
  publish(p, "e/long", "l", { retain: true, properties: { messageExpiryInterval: 5 } });
  await sync(p);
  await sleep(1_100);
  await using s = await connect(b.port, "s");
  await subscribe(s, ["e/+"]);
  const m = await expectPublish(s);
  assert.equal(m.topic, "e/long");
  const left = m.properties?.messageExpiryInterval;
  assert.ok(left !== undefined && left >= 3 && left <= 4, `expiry reduced to 3..4, got ${left}`);
  assert.equal(await s.silentFor(100), true, "the expired retained message is not sent");
});

Deno.test("broker keeps a retained QoS 0 message (3.3.1.3, SHOULD)", async () => {
  await using b = await startBroker();
  await using p = await connect(b.port, "p");
  assert.equal(await publishQos1(p, "z", "q1", { retain: true }), 0x10);
  publish(p, "y", "q0", { retain: true });
  await sync(p);
  await using s = await connect(b.port, "s");
  await subscribe(s, [sub("y", { qos: 2 })]);
  const m = await expectPublish(s);
  assert.deepEqual([text(m.payload), m.qos, m.retain], ["q0", 0, true]);
});
