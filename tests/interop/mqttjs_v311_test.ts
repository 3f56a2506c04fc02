/**
 * Interoperability with MQTT.js 5.16 speaking MQTT 3.1.1 (protocol level 4),
 * and between 3.1.1 and 5.0 clients on the same broker.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { startBroker } from "../helpers/start_broker.ts";
import { connectMqttJs, settle } from "../helpers/mqttjs.ts";

Deno.test("MQTT.js 3.1.1 connects and gets a 3.1.1 CONNACK: return code 0, Session Present 0, no properties", async () => {
  await using b = await startBroker();
  await using c = await connectMqttJs(b.port, { clientId: "v4", protocolVersion: 4 });
  assert.equal(c.connack!.returnCode, 0);
  assert.equal(c.connack!.sessionPresent, false);
  assert.equal(c.connack!.properties, undefined);
  assert.equal(b.broker.connectedCount, 1);
});

Deno.test("MQTT.js 3.1.1 refused as anonymous gets CONNACK return code 5 Not authorized", async () => {
  await using b = await startBroker({ allowAnonymous: false });
  await assert.rejects(
    connectMqttJs(b.port, { clientId: "anon", protocolVersion: 4 }),
    (err: Error & { code?: number }) => {
      assert.equal(err.code, 5);
      return true;
    },
  );
  assert.equal(b.broker.connectedCount, 0);
});

Deno.test("MQTT.js 3.1.1 receives each message at min(publish QoS, granted QoS), exactly once", async () => {
  await using b = await startBroker();
  await using sub = await connectMqttJs(b.port, { clientId: "sub", protocolVersion: 4 });
  await using pub = await connectMqttJs(b.port, { clientId: "pub", protocolVersion: 4 });
  const granted = await sub.client.subscribeAsync({
    "q/0": { qos: 0 },
    "q/1": { qos: 1 },
    "q/2": { qos: 2 },
  });
  assert.deepEqual(granted.map((g) => [g.topic, g.qos]), [["q/0", 0], ["q/1", 1], ["q/2", 2]]);
  for (const t of ["q/0", "q/1", "q/2"]) {
    await pub.client.publishAsync(t, `two-to-${t}`, { qos: 2 });
  }
  await pub.client.publishAsync("q/2", "one-to-q/2", { qos: 1 });
  await sub.waitForMessages(4);
  await settle();
  assert.deepEqual(
    sub.wire.map((p) => [p.topic, p.payload.toString(), p.qos]),
    [
      ["q/0", "two-to-q/0", 0],
      ["q/1", "two-to-q/1", 1],
      ["q/2", "two-to-q/2", 2],
      ["q/2", "one-to-q/2", 1],
    ],
  );
  assert.equal(sub.messages.length, 4);
  assert.ok(sub.wire.every((p) => p.properties === undefined && p.retain === false));
});

Deno.test("MQTT.js 3.1.1 gets the retained message with RETAIN=1 on subscribe; an empty retained payload deletes it", async () => {
  await using b = await startBroker();
  await using pub = await connectMqttJs(b.port, { clientId: "pub", protocolVersion: 4 });
  await pub.client.publishAsync("status/lamp", "on", { qos: 1, retain: true });
  await using sub = await connectMqttJs(b.port, { clientId: "sub", protocolVersion: 4 });
  await sub.client.subscribeAsync("status/+", { qos: 1 });
  await sub.waitForMessages(1);
  await settle(100);
  assert.deepEqual(sub.wire.map((p) => [p.topic, p.payload.toString(), p.qos, p.retain]), [
    ["status/lamp", "on", 1, true],
  ]);
  await pub.client.publishAsync("status/lamp", "", { qos: 1, retain: true });
  await sub.waitForMessages(2);
  await using late = await connectMqttJs(b.port, { clientId: "late", protocolVersion: 4 });
  await late.client.subscribeAsync("status/+", { qos: 1 });
  await settle();
  assert.equal(late.messages.length, 0);
});

Deno.test("MQTT.js 3.1.1 Will reaches another 3.1.1 client when the first loses its socket, and not after DISCONNECT", async () => {
  await using b = await startBroker();
  await using watcher = await connectMqttJs(b.port, { clientId: "watcher", protocolVersion: 4 });
  await watcher.client.subscribeAsync("wills/#", { qos: 2 });
  const dying = await connectMqttJs(b.port, {
    clientId: "dying",
    protocolVersion: 4,
    will: { topic: "wills/dying", payload: Buffer.from("lost"), qos: 2, retain: false },
  });
  const polite = await connectMqttJs(b.port, {
    clientId: "polite",
    protocolVersion: 4,
    will: { topic: "wills/polite", payload: Buffer.from("lost"), qos: 2, retain: false },
  });
  await polite.close();
  await dying.destroy();
  await watcher.waitForMessages(1);
  await settle();
  assert.deepEqual(watcher.wire.map((p) => [p.topic, p.payload.toString(), p.qos]), [
    ["wills/dying", "lost", 2],
  ]);
  assert.equal(watcher.messages.length, 1);
  assert.equal(b.broker.metrics.willsPublished, 1);
});

Deno.test("MQTT.js 3.1.1 retained Will is stored and sent to later subscribers", async () => {
  await using b = await startBroker();
  const dying = await connectMqttJs(b.port, {
    clientId: "dying",
    protocolVersion: 4,
    will: { topic: "state/dying", payload: Buffer.from("offline"), qos: 1, retain: true },
  });
  await dying.destroy();
  await using late = await connectMqttJs(b.port, { clientId: "late", protocolVersion: 4 });
  await late.client.subscribeAsync("state/#", { qos: 1 });
  await late.waitForMessages(1);
  await settle(100);
  assert.deepEqual(late.wire.map((p) => [p.topic, p.payload.toString(), p.qos, p.retain]), [
    ["state/dying", "offline", 1, true],
  ]);
});

Deno.test("MQTT.js 3.1.1 Clean Session 0 resumes: Session Present 1 and the QoS 1/2 messages queued while offline, once", async () => {
  await using b = await startBroker();
  const opts = { clientId: "durable", protocolVersion: 4 as const, clean: false };
  const first = await connectMqttJs(b.port, opts);
  assert.equal(first.connack!.sessionPresent, false);
  await first.client.subscribeAsync("queued/#", { qos: 2 });
  await first.close();
  await using pub = await connectMqttJs(b.port, { clientId: "pub", protocolVersion: 4 });
  await pub.client.publishAsync("queued/a", "m1", { qos: 1 });
  await pub.client.publishAsync("queued/a", "m2", { qos: 2 });
  await pub.client.publishAsync("queued/a", "m3", { qos: 0 });
  await using second = await connectMqttJs(b.port, opts);
  assert.equal(second.connack!.sessionPresent, true);
  await second.waitForMessages(2);
  await settle();
  // QoS 0 is not queued for an offline session (our policy, checklist §8).
  assert.deepEqual(second.wire.map((p) => [p.topic, p.payload.toString(), p.qos]), [
    ["queued/a", "m1", 1],
    ["queued/a", "m2", 2],
  ]);
  assert.equal(second.messages.length, 2);
  assert.equal(b.broker.metrics.offlineQos0Dropped, 1);
});

Deno.test("MQTT.js 3.1.1 Clean Session 1 after a persistent session: Session Present 0, nothing queued delivered", async () => {
  await using b = await startBroker();
  const first = await connectMqttJs(b.port, {
    clientId: "switch",
    protocolVersion: 4,
    clean: false,
  });
  await first.client.subscribeAsync("gone/#", { qos: 1 });
  await first.close();
  await using pub = await connectMqttJs(b.port, { clientId: "pub", protocolVersion: 4 });
  await pub.client.publishAsync("gone/a", "m1", { qos: 1 });
  await using second = await connectMqttJs(b.port, {
    clientId: "switch",
    protocolVersion: 4,
    clean: true,
  });
  assert.equal(second.connack!.sessionPresent, false);
  await settle(200);
  assert.equal(second.messages.length, 0);
});

Deno.test("v5 publisher's message with properties reaches a 3.1.1 subscriber as the bare payload, no properties", async () => {
  await using b = await startBroker();
  await using sub = await connectMqttJs(b.port, { clientId: "old", protocolVersion: 4 });
  await using pub = await connectMqttJs(b.port, { clientId: "new", protocolVersion: 5 });
  await sub.client.subscribeAsync("mixed/#", { qos: 2 });
  await pub.client.publishAsync("mixed/a", "payload-1", {
    qos: 1,
    properties: {
      payloadFormatIndicator: true,
      contentType: "text/plain",
      responseTopic: "mixed/reply",
      correlationData: Buffer.from("corr"),
      messageExpiryInterval: 30,
      userProperties: { k: "v" },
    },
  });
  await pub.client.publishAsync("mixed/b", "payload-2", { qos: 2, retain: true });
  await sub.waitForMessages(2);
  await settle();
  assert.deepEqual(sub.wire.map((p) => [p.topic, p.payload.toString(), p.qos, p.retain]), [
    ["mixed/a", "payload-1", 1, false],
    ["mixed/b", "payload-2", 2, false],
  ]);
  assert.ok(sub.wire.every((p) => p.properties === undefined));
  assert.equal(sub.messages.length, 2);
});

Deno.test("3.1.1 publisher's message reaches a v5 subscriber with the payload and QoS and no properties", async () => {
  await using b = await startBroker();
  await using sub = await connectMqttJs(b.port, { clientId: "new", protocolVersion: 5 });
  await using pub = await connectMqttJs(b.port, { clientId: "old", protocolVersion: 4 });
  await sub.client.subscribeAsync("mixed/#", { qos: 2 });
  await pub.client.publishAsync("mixed/a", "from-3.1.1", { qos: 1 });
  await pub.client.publishAsync("mixed/b", Buffer.from([0, 1, 2, 255]), { qos: 2 });
  await sub.waitForMessages(2);
  await settle();
  assert.deepEqual(sub.wire.map((p) => [p.topic, p.qos]), [["mixed/a", 1], ["mixed/b", 2]]);
  assert.equal(sub.wire[0].payload.toString(), "from-3.1.1");
  assert.deepEqual([...sub.wire[1].payload as Uint8Array], [0, 1, 2, 255]);
  for (const p of sub.wire) {
    assert.deepEqual({ ...p.properties }, {});
  }
  assert.equal(sub.messages.length, 2);
});

Deno.test("v5 Will with properties reaches a 3.1.1 subscriber as the bare payload", async () => {
  await using b = await startBroker();
  await using watcher = await connectMqttJs(b.port, { clientId: "old", protocolVersion: 4 });
  await watcher.client.subscribeAsync("wills/#", { qos: 1 });
  const dying = await connectMqttJs(b.port, {
    clientId: "new",
    protocolVersion: 5,
    will: {
      topic: "wills/new",
      payload: Buffer.from("bye"),
      qos: 1,
      retain: false,
      properties: { contentType: "text/plain", userProperties: { a: "b" } },
    },
  });
  await dying.destroy();
  await watcher.waitForMessages(1);
  await settle();
  assert.deepEqual(watcher.wire.map((p) => [p.topic, p.payload.toString(), p.qos, p.properties]), [
    ["wills/new", "bye", 1, undefined],
  ]);
});
