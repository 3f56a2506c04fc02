/**
 * Interoperability with MQTT.js 5.16 speaking MQTT 5.0 to a broker in this
 * process: what a real client library sees of CONNACK, subscriptions, message
 * properties, retained messages, Wills, shared subscriptions, topic aliases
 * and session resumption.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { startBroker } from "../helpers/start_broker.ts";
import { connectMqttJs, settle } from "../helpers/mqttjs.ts";

Deno.test("MQTT.js v5 sees the broker's limits in CONNACK: Receive Maximum, Maximum Packet Size, Topic Alias Maximum [MQTT-3.2.2-3]", async () => {
  await using b = await startBroker({
    receiveMaximum: 100,
    maxPacketSize: 65_536,
    topicAliasMaximum: 10,
  });
  await using c = await connectMqttJs(b.port, { clientId: "limits" });
  assert.equal(c.connack!.reasonCode, 0);
  assert.equal(c.connack!.sessionPresent, false);
  assert.deepEqual({ ...c.connack!.properties }, {
    receiveMaximum: 100,
    maximumPacketSize: 65_536,
    topicAliasMaximum: 10,
  });
});

Deno.test("MQTT.js v5 sees unavailable features announced in CONNACK (Maximum QoS, Retain, Wildcard, Subscription Id, Shared Available = 0)", async () => {
  await using b = await startBroker({
    maximumQos: 1,
    retainAvailable: false,
    wildcardSubscriptionAvailable: false,
    subscriptionIdentifierAvailable: false,
    sharedSubscriptionAvailable: false,
    topicAliasMaximum: 0,
    receiveMaximum: 65_535,
    maxPacketSize: 4_096,
  });
  await using c = await connectMqttJs(b.port, { clientId: "features" });
  assert.deepEqual({ ...c.connack!.properties }, {
    maximumQoS: 1,
    retainAvailable: false,
    maximumPacketSize: 4_096,
    wildcardSubscriptionAvailable: false,
    subscriptionIdentifiersAvailable: false,
    sharedSubscriptionAvailable: false,
  });
});

Deno.test("MQTT.js v5 with an empty client id gets an Assigned Client Identifier in CONNACK [MQTT-3.2.2-16]", async () => {
  await using b = await startBroker();
  await using c = await connectMqttJs(b.port, { clientId: "" });
  const assigned = c.connack!.properties?.assignedClientIdentifier;
  assert.equal(typeof assigned, "string");
  assert.ok(assigned!.length > 0);
  assert.equal(b.broker.connectedCount, 1);
});

Deno.test("MQTT.js v5 receives each message at min(publish QoS, granted QoS), exactly once [MQTT-3.8.4-8]", async () => {
  await using b = await startBroker();
  await using sub = await connectMqttJs(b.port, { clientId: "sub" });
  await using pub = await connectMqttJs(b.port, { clientId: "pub" });
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
  await pub.client.publishAsync("q/2", "zero-to-q/2", { qos: 0 });
  await sub.waitForMessages(5);
  await settle();
  assert.deepEqual(
    sub.messages.map((m) => [m.topic, m.payload, m.packet.qos]),
    [
      ["q/0", "two-to-q/0", 0],
      ["q/1", "two-to-q/1", 1],
      ["q/2", "two-to-q/2", 2],
      ["q/2", "one-to-q/2", 1],
      ["q/2", "zero-to-q/2", 0],
    ],
  );
  assert.ok(sub.messages.every((m) => m.packet.retain === false && m.packet.dup === false));
});

Deno.test("MQTT.js v5 publisher's properties reach an MQTT.js subscriber unchanged [MQTT-3.3.2-4] [MQTT-3.3.2-15..20]", async () => {
  await using b = await startBroker();
  await using sub = await connectMqttJs(b.port, { clientId: "sub" });
  await using pub = await connectMqttJs(b.port, { clientId: "pub" });
  await sub.client.subscribeAsync("req/#", { qos: 1 });
  const correlation = Buffer.from([0x00, 0xff, 0x10, 0x7f]);
  await pub.client.publishAsync("req/temp", '{"t":21.5}', {
    qos: 1,
    properties: {
      payloadFormatIndicator: true,
      contentType: "application/json",
      responseTopic: "resp/temp",
      correlationData: correlation,
      messageExpiryInterval: 60,
      userProperties: { region: "eu", tag: ["first", "second"] },
    },
  });
  await sub.waitForMessages(1);
  await settle(100);
  assert.equal(sub.messages.length, 1);
  const m = sub.messages[0];
  assert.equal(m.topic, "req/temp");
  assert.equal(m.payload, '{"t":21.5}');
  const p = m.packet.properties!;
  assert.equal(p.payloadFormatIndicator, true);
  assert.equal(p.contentType, "application/json");
  assert.equal(p.responseTopic, "resp/temp");
  assert.deepEqual([...p.correlationData!], [...correlation]);
  // Forwarded reduced by the time it waited, which is well under a second here [MQTT-3.3.2-6].
  assert.ok(
    p.messageExpiryInterval === 60 || p.messageExpiryInterval === 59,
    `expiry ${p.messageExpiryInterval}`,
  );
  // User Properties in order, repeated names kept [MQTT-3.3.2-18].
  assert.deepEqual({ ...p.userProperties }, { region: "eu", tag: ["first", "second"] });
  assert.equal(p.topicAlias, undefined);
  assert.equal(p.subscriptionIdentifier, undefined);
});

Deno.test("MQTT.js v5 subscription identifier comes back on matching messages [MQTT-3.3.4-3]", async () => {
  await using b = await startBroker();
  await using sub = await connectMqttJs(b.port, { clientId: "sub" });
  await sub.client.subscribeAsync("ids/+", { qos: 0, properties: { subscriptionIdentifier: 42 } });
  await sub.client.publishAsync("ids/x", "x", { qos: 0 });
  await sub.waitForMessages(1);
  await settle(100);
  assert.equal(sub.messages.length, 1);
  assert.equal(sub.messages[0].packet.properties?.subscriptionIdentifier, 42);
});

Deno.test("MQTT.js v5 gets the retained message with RETAIN=1 on subscribe, and live forwards with RETAIN=0 [MQTT-3.3.1-9] [MQTT-3.3.1-12]", async () => {
  await using b = await startBroker();
  await using pub = await connectMqttJs(b.port, { clientId: "pub" });
  await pub.client.publishAsync("status/door", "open", {
    qos: 1,
    retain: true,
    properties: { contentType: "text/plain", userProperties: { by: "pub" } },
  });
  await using sub = await connectMqttJs(b.port, { clientId: "sub" });
  await sub.client.subscribeAsync("status/#", { qos: 1 });
  await sub.waitForMessages(1);
  const r = sub.messages[0];
  assert.equal(r.topic, "status/door");
  assert.equal(r.payload, "open");
  assert.equal(r.packet.retain, true);
  assert.equal(r.packet.qos, 1);
  assert.equal(r.packet.properties?.contentType, "text/plain");
  assert.deepEqual({ ...r.packet.properties?.userProperties }, { by: "pub" });

  await pub.client.publishAsync("status/door", "closed", { qos: 1, retain: true });
  await sub.waitForMessages(2);
  assert.equal(sub.messages[1].payload, "closed");
  assert.equal(sub.messages[1].packet.retain, false);

  // An empty retained payload deletes it: a later subscriber gets nothing [MQTT-3.3.1-6].
  await pub.client.publishAsync("status/door", "", { qos: 1, retain: true });
  await sub.waitForMessages(3);
  await using late = await connectMqttJs(b.port, { clientId: "late" });
  await late.client.subscribeAsync("status/#", { qos: 1 });
  await settle();
  assert.equal(late.messages.length, 0);
  assert.equal(sub.messages.length, 3);
});

Deno.test("MQTT.js v5 Will, with its properties, reaches another MQTT.js client when the first loses its socket [MQTT-3.1.2-8] [MQTT-3.1.3-10]", async () => {
  await using b = await startBroker();
  await using watcher = await connectMqttJs(b.port, { clientId: "watcher" });
  await watcher.client.subscribeAsync("wills/#", { qos: 1 });
  const dying = await connectMqttJs(b.port, {
    clientId: "dying",
    will: {
      topic: "wills/dying",
      payload: Buffer.from("gone"),
      qos: 1,
      retain: false,
      properties: { contentType: "text/plain", userProperties: { why: "test" } },
    },
  });
  await dying.destroy();
  await watcher.waitForMessages(1);
  await settle();
  assert.equal(watcher.messages.length, 1);
  const w = watcher.messages[0];
  assert.equal(w.topic, "wills/dying");
  assert.equal(w.payload, "gone");
  assert.equal(w.packet.qos, 1);
  assert.equal(w.packet.properties?.contentType, "text/plain");
  assert.deepEqual({ ...w.packet.properties?.userProperties }, { why: "test" });
  assert.equal(b.broker.metrics.willsPublished, 1);
});

Deno.test("MQTT.js v5 Will is discarded when the client ends with DISCONNECT 0x00 [MQTT-3.14.4-3]", async () => {
  await using b = await startBroker();
  await using watcher = await connectMqttJs(b.port, { clientId: "watcher" });
  await watcher.client.subscribeAsync("wills/#", { qos: 1 });
  const polite = await connectMqttJs(b.port, {
    clientId: "polite",
    will: { topic: "wills/polite", payload: Buffer.from("gone"), qos: 1, retain: false },
  });
  await polite.close();
  await settle(200);
  assert.equal(watcher.messages.length, 0);
  assert.equal(b.broker.metrics.willsPublished, 0);
});

Deno.test("MQTT.js v5 shared subscription across two clients delivers each message to exactly one of them [MQTT-4.8.2-3]", async () => {
  await using b = await startBroker();
  await using a = await connectMqttJs(b.port, { clientId: "worker-a" });
  await using c = await connectMqttJs(b.port, { clientId: "worker-b" });
  await using pub = await connectMqttJs(b.port, { clientId: "pub" });
  await a.client.subscribeAsync("$share/workers/jobs/+", { qos: 1 });
  await c.client.subscribeAsync("$share/workers/jobs/+", { qos: 1 });
  const sent: string[] = [];
  for (let i = 0; i < 10; i++) {
    sent.push(`job-${i}`);
    await pub.client.publishAsync(`jobs/${i % 3}`, `job-${i}`, { qos: 1 });
  }
  await a.until(() => a.messages.length + c.messages.length >= 10, "10 jobs in total");
  await settle();
  const got = [...a.messages, ...c.messages].map((m) => m.payload).sort();
  assert.deepEqual(got, [...sent].sort());
  // Our policy is round robin over connected members, so both got work.
  assert.ok(
    a.messages.length > 0 && c.messages.length > 0,
    `${a.messages.length}/${c.messages.length}`,
  );
  assert.equal(pub.messages.length, 0);
});

Deno.test("MQTT.js v5 topic alias from the client: mapped by topic + alias, then used with an empty topic; never passed on [MQTT-3.3.2-12] [MQTT-3.1.2-27]", async () => {
  await using b = await startBroker({ topicAliasMaximum: 5 });
  // This subscriber announces no Topic Alias Maximum, so no PUBLISH to it may carry an alias.
  await using sub = await connectMqttJs(b.port, { clientId: "sub" });
  await using pub = await connectMqttJs(b.port, { clientId: "pub" });
  await sub.client.subscribeAsync("alias/#", { qos: 1 });
  await pub.client.publishAsync("alias/long/topic/name", "first", {
    qos: 1,
    properties: { topicAlias: 3 },
  });
  await pub.client.publishAsync("", "second", { qos: 1, properties: { topicAlias: 3 } });
  await pub.client.publishAsync("", "third", { qos: 0, properties: { topicAlias: 3 } });
  await sub.waitForMessages(3);
  await settle();
  // Subscribers get the resolved Topic Name, never the publisher's alias.
  assert.deepEqual(
    sub.wire.map((p) => [p.topic, p.payload.toString(), p.properties?.topicAlias]),
    [
      ["alias/long/topic/name", "first", undefined],
      ["alias/long/topic/name", "second", undefined],
      ["alias/long/topic/name", "third", undefined],
    ],
  );
  assert.equal(sub.messages.length, 3);
  assert.equal(pub.disconnects.length, 0);
  assert.equal(pub.client.connected, true);
});

Deno.test("MQTT.js v5 subscriber announcing Topic Alias Maximum accepts and resolves the broker's outbound aliases [MQTT-3.1.2-26]", async () => {
  await using b = await startBroker();
  await using sub = await connectMqttJs(b.port, {
    clientId: "sub",
    properties: { topicAliasMaximum: 4 },
  });
  await using pub = await connectMqttJs(b.port, { clientId: "pub" });
  await sub.client.subscribeAsync("out/#", { qos: 1 });
  for (const [topic, payload] of [["out/a", "1"], ["out/a", "2"], ["out/b", "3"], ["out/a", "4"]]) {
    await pub.client.publishAsync(topic, payload, { qos: 1 });
  }
  await sub.waitForMessages(4);
  await settle();
  // Whatever aliases the broker chose, MQTT.js accepted them and resolved every topic.
  assert.deepEqual(sub.messages.map((m) => [m.topic, m.payload]), [
    ["out/a", "1"],
    ["out/a", "2"],
    ["out/b", "3"],
    ["out/a", "4"],
  ]);
  assert.deepEqual(sub.errors, []);
  assert.deepEqual(sub.disconnects, []);
  assert.equal(sub.client.connected, true);
  // Every alias is within the announced maximum, and first sent with its topic [MQTT-3.3.2-7].
  const seen = new Set<number>();
  for (const p of sub.wire) {
    const alias = p.properties?.topicAlias;
    if (alias === undefined) continue;
    assert.ok(alias >= 1 && alias <= 4, `alias ${alias}`);
    if (p.topic === "") assert.ok(seen.has(alias), `alias ${alias} used before it was set`);
    else seen.add(alias);
  }
  // The broker did use an alias for the repeated topic (ours: aliases towards clients that allow them).
  assert.ok(sub.wire.some((p) => p.topic === "" && p.properties?.topicAlias !== undefined));
});

Deno.test("MQTT.js v5 autoUseTopicAlias publishes by alias after registering it; the broker resolves it", async () => {
  await using b = await startBroker({ topicAliasMaximum: 5 });
  await using sub = await connectMqttJs(b.port, { clientId: "sub" });
  await using pub = await connectMqttJs(b.port, { clientId: "pub", autoUseTopicAlias: true });
  await sub.client.subscribeAsync("auto/+", { qos: 1 });
  const sentPackets: { topic: string; alias?: number }[] = [];
  pub.client.on("packetsend", (p) => {
    if (p.cmd === "publish") {
      sentPackets.push({ topic: p.topic.toString(), alias: p.properties?.topicAlias });
    }
  });
  await pub.client.publishAsync("auto/x", "1", { qos: 1, properties: { topicAlias: 1 } });
  await pub.client.publishAsync("auto/x", "2", { qos: 1 });
  await sub.waitForMessages(2);
  await settle(100);
  // The second PUBLISH really went out with an empty topic and the alias.
  assert.deepEqual(sentPackets, [{ topic: "auto/x", alias: 1 }, { topic: "", alias: 1 }]);
  assert.deepEqual(sub.messages.map((m) => [m.topic, m.payload]), [["auto/x", "1"], [
    "auto/x",
    "2",
  ]]);
});

Deno.test("MQTT.js v5 resumes its session (Clean Start 0, Session Expiry) and receives the QoS 1 and 2 messages queued while offline, in order, once [MQTT-3.1.2-5] [MQTT-4.1.0-2]", async () => {
  await using b = await startBroker();
  const opts = {
    clientId: "resumer",
    clean: false,
    properties: { sessionExpiryInterval: 60 },
  };
  const first = await connectMqttJs(b.port, opts);
  assert.equal(first.connack!.sessionPresent, false);
  await first.client.subscribeAsync("queued/#", { qos: 2 });
  await first.close();
  await using pub = await connectMqttJs(b.port, { clientId: "pub" });
  await pub.client.publishAsync("queued/a", "m1", { qos: 1 });
  await pub.client.publishAsync("queued/b", "m2", { qos: 2 });
  await pub.client.publishAsync("queued/a", "m3", { qos: 1 });
  await pub.client.publishAsync("queued/a", "dropped-qos0", { qos: 0 });
  await using second = await connectMqttJs(b.port, opts);
  assert.equal(second.connack!.sessionPresent, true);
  await second.waitForMessages(3);
  await settle();
  // On the wire in the order queued; MQTT.js itself hands QoS 2 to the application only at PUBREL.
  assert.deepEqual(
    second.wire.map((p) => [p.topic, p.payload.toString(), p.qos, p.dup]),
    [["queued/a", "m1", 1, false], ["queued/b", "m2", 2, false], ["queued/a", "m3", 1, false]],
  );
  assert.deepEqual(
    second.messages.map((m) => [m.topic, m.payload]).sort(),
    [["queued/a", "m1"], ["queued/a", "m3"], ["queued/b", "m2"]],
  );
  // The subscription survived too: a live message arrives without subscribing again.
  await pub.client.publishAsync("queued/c", "live", { qos: 1 });
  await second.waitForMessages(4);
  assert.equal(second.messages[3].payload, "live");
});

Deno.test("MQTT.js v5 Clean Start 1 discards the previous session: nothing queued is delivered [MQTT-3.1.2-4]", async () => {
  await using b = await startBroker();
  const first = await connectMqttJs(b.port, {
    clientId: "fresh",
    clean: false,
    properties: { sessionExpiryInterval: 60 },
  });
  await first.client.subscribeAsync("gone/#", { qos: 1 });
  await first.close();
  await using pub = await connectMqttJs(b.port, { clientId: "pub" });
  await pub.client.publishAsync("gone/a", "m1", { qos: 1 });
  await using second = await connectMqttJs(b.port, { clientId: "fresh", clean: true });
  assert.equal(second.connack!.sessionPresent, false);
  await settle(200);
  assert.equal(second.messages.length, 0);
  // And the old subscription is gone.
  await pub.client.publishAsync("gone/b", "m2", { qos: 1 });
  await settle(150);
  assert.equal(second.messages.length, 0);
});
