/**
 * ACL enforcement over real clients (MQTT.js 5.0 and 3.1.1): publish (PUBACK/PUBREC 0x87, QoS 0
 * dropped and logged), subscribe (SUBACK 0x87 / 0x80 per filter), receive (live and retained)
 * and Will publication, with %c/%u substitution that crafted ids cannot widen.
 */
import assert from "node:assert/strict";
import { connectMqttJs, type MqttJsClient, settle } from "../helpers/mqttjs.ts";
import { AuthFiles, creds, startSecureBroker, USERS } from "./fixtures.ts";

/** The reason code MQTT.js rejects a publish with (undefined when it succeeds). */
async function publishCode(
  c: MqttJsClient,
  topic: string,
  qos: 0 | 1 | 2,
  retain = false,
): Promise<number | undefined> {
  try {
    await c.client.publishAsync(topic, "m", { qos, retain });
    return undefined;
  } catch (err) {
    return (err as { code?: number }).code;
  }
}

/** The SUBACK codes, one per filter (MQTT.js rejects when any is a refusal; its packet has them). */
async function granted(c: MqttJsClient, filters: string[]): Promise<number[]> {
  try {
    const grants = await c.client.subscribeAsync(filters, { qos: 1 });
    return grants.map((g) => g.qos);
  } catch (err) {
    const packet = (err as { packet?: { granted?: number[]; reasonCodes?: number[] } }).packet;
    const codes = packet?.granted ?? packet?.reasonCodes;
    if (codes === undefined) throw err;
    return codes;
  }
}

Deno.test("publish: an allowed topic is routed; a denied one gets PUBACK/PUBREC 0x87 at QoS 1/2 and is dropped and logged at QoS 0", async () => {
  await using files = await AuthFiles.create();
  await using b = await startSecureBroker(files, {}, { captureLogs: true });
  await using watch = await connectMqttJs(b.port, { ...creds("alice"), clientId: "watch" });
  await watch.client.subscribeAsync("#", { qos: 2 });
  await using bob = await connectMqttJs(b.port, { ...creds("bob"), clientId: "bob1" });

  assert.equal(await publishCode(bob, "sensors/bob/t", 1), undefined);
  assert.equal(await publishCode(bob, "sensors/alice/t", 1), 0x87);
  assert.equal(await publishCode(bob, "sensors/alice/t", 2), 0x87);
  assert.equal(await publishCode(bob, "sensors/alice/q0", 0), undefined);
  assert.equal(await publishCode(bob, "sensors/bob/last", 0), undefined);
  await watch.until(() => watch.on("sensors/bob/last").length === 1, "the last allowed message");
  assert.deepEqual(watch.messages.map((m) => m.topic), ["sensors/bob/t", "sensors/bob/last"]);
  assert.ok(
    b.logs.some((l) => /publish refused .*topic=sensors\/alice\/q0 .*reason=0x87/.test(l)),
    "the dropped QoS 0 publish is not logged",
  );
});

Deno.test("publish from a 3.1.1 client: a denied QoS 1 message is acknowledged and dropped [MQTT-3.3.5-2]", async () => {
  await using files = await AuthFiles.create();
  await using b = await startSecureBroker(files);
  await using watch = await connectMqttJs(b.port, { ...creds("alice"), clientId: "watch" });
  await watch.client.subscribeAsync("#", { qos: 1 });
  await using bob = await connectMqttJs(b.port, { protocolVersion: 4, ...creds("bob") });
  assert.equal(await publishCode(bob, "sensors/alice/t", 1), undefined);
  assert.equal(await publishCode(bob, "sensors/bob/t", 1), undefined);
  await watch.until(() => watch.messages.length === 1, "the allowed message");
  await settle(100);
  assert.deepEqual(watch.messages.map((m) => m.topic), ["sensors/bob/t"]);
});

Deno.test("subscribe: each filter is granted or refused with 0x87 on its own; a filter must be covered by an allow rule and miss every earlier deny", async () => {
  await using files = await AuthFiles.create();
  await using b = await startSecureBroker(files);
  await using bob = await connectMqttJs(b.port, { ...creds("bob"), clientId: "bob1" });
  assert.deepEqual(
    await granted(bob, [
      "sensors/+/temp", // covered by sensors/#, misses sensors/+/secret/#
      "sensors/#", // overlaps the secret deny
      "sensors/+/secret/x",
      "inbox/bob1/#", // inbox/%c/#
      "inbox/other/#",
      "#",
      "$share/g/sensors/+/temp",
      "$share/g/sensors/#",
    ]),
    [1, 0x87, 0x87, 1, 0x87, 0x87, 1, 0x87],
  );
});

Deno.test("subscribe from a 3.1.1 client: a refused filter gets SUBACK 0x80", async () => {
  await using files = await AuthFiles.create();
  await using b = await startSecureBroker(files);
  await using bob = await connectMqttJs(b.port, { protocolVersion: 4, ...creds("bob") });
  assert.deepEqual(await granted(bob, ["sensors/+/temp", "#"]), [1, 0x80]);
});

const WATCHER_ACL = `
roles:
  watcher:
    - allow: subscribe
      topic: "#"
    - deny: receive
      topic: private/#
    - allow: receive
      topic: "#"
  operator:
    - allow: all
      topic: "#"
users:
  bob: watcher
  alice: operator
`;

Deno.test("receive: live and retained messages are filtered per topic for the subscriber", async () => {
  await using files = await AuthFiles.create(USERS, WATCHER_ACL);
  await using b = await startSecureBroker(files);
  await using alice = await connectMqttJs(b.port, creds("alice"));
  await alice.client.publishAsync("private/r", "secret", { qos: 1, retain: true });
  await alice.client.publishAsync("public/r", "hello", { qos: 1, retain: true });

  await using bob = await connectMqttJs(b.port, { ...creds("bob"), clientId: "bob1" });
  assert.deepEqual(await granted(bob, ["#"]), [1]);
  await bob.until(() => bob.on("public/r").length === 1, "the public retained message");
  await alice.client.publishAsync("private/live", "x", { qos: 1 });
  await alice.client.publishAsync("public/live", "y", { qos: 1 });
  await bob.until(() => bob.on("public/live").length === 1, "the public live message");
  await settle(100);
  assert.deepEqual(bob.messages.map((m) => m.topic).sort(), ["public/live", "public/r"]);
});

Deno.test("receive: messages queued for an offline session are checked again when they are sent", async () => {
  const acl = WATCHER_ACL.replace(
    "deny: receive\n      topic: private/#",
    "deny: receive\n      topic: never/#",
  );
  await using files = await AuthFiles.create(USERS, acl);
  await using b = await startSecureBroker(files);
  {
    await using bob = await connectMqttJs(b.port, {
      ...creds("bob"),
      clientId: "bob-q",
      clean: false,
      properties: { sessionExpiryInterval: 300 },
    });
    assert.deepEqual(await granted(bob, ["#"]), [1]);
  }
  await using alice = await connectMqttJs(b.port, creds("alice"));
  await alice.client.publishAsync("private/queued", "x", { qos: 1 });
  await alice.client.publishAsync("public/queued", "y", { qos: 1 });
  // The rules change while bob is offline: private/# may no longer be received.
  await files.writeAcl(WATCHER_ACL);
  assert.equal((await b.broker.reloadAuth()).ok, true);
  await using again = await connectMqttJs(b.port, {
    ...creds("bob"),
    clientId: "bob-q",
    clean: false,
    properties: { sessionExpiryInterval: 300 },
  });
  await again.until(() => again.on("public/queued").length === 1, "the allowed queued message");
  await settle(100);
  assert.deepEqual(again.messages.map((m) => m.topic), ["public/queued"]);
});

Deno.test("Will: published when its owner may publish to its topic, dropped when not", async () => {
  await using files = await AuthFiles.create();
  await using b = await startSecureBroker(files, {}, { captureLogs: true });
  await using watch = await connectMqttJs(b.port, { ...creds("alice"), clientId: "watch" });
  await watch.client.subscribeAsync("#", { qos: 1 });
  const allowed = await connectMqttJs(b.port, {
    ...creds("mallory"),
    clientId: "m1",
    will: { topic: "wills/m1", payload: "gone", qos: 1, retain: false },
  });
  const denied = await connectMqttJs(b.port, {
    ...creds("mallory"),
    clientId: "m2",
    will: { topic: "wills/m1", payload: "spoofed", qos: 1, retain: false },
  });
  await denied.destroy();
  await allowed.destroy();
  await watch.until(() => watch.on("wills/m1").length >= 1, "the allowed Will");
  await settle(150);
  assert.deepEqual(watch.on("wills/m1").map((m) => m.payload), ["gone"]);
  assert.ok(b.logs.some((l) => /will not authorized .*clientId=m2/.test(l)));
});

Deno.test("substitution: client ids with +, # or / get nothing from %c rules", async (t) => {
  await using files = await AuthFiles.create();
  await using b = await startSecureBroker(files);
  for (const clientId of ["+", "#", "inbox/x", "a/b"]) {
    await t.step(`client id ${JSON.stringify(clientId)}`, async () => {
      await using c = await connectMqttJs(b.port, { ...creds("mallory"), clientId });
      assert.deepEqual(await granted(c, ["inbox/+/#", "inbox/#", `inbox/${clientId}`]), [
        0x87,
        0x87,
        0x87,
      ]);
      assert.equal(await publishCode(c, `wills/${clientId.replace(/[+#]/g, "x")}`, 1), 0x87);
    });
  }
  await t.step("a user name with / gets nothing from %u rules", async () => {
    await files.writeUsers({ ...USERS, "sensors/alice": "pw" });
    await files.writeAcl(
      `roles:\n  writer:\n    - allow: publish\n      topic: sensors/%u/#\n` +
        `users:\n  sensors/alice: writer\n  bob: writer\n`,
    );
    assert.equal((await b.broker.reloadAuth()).ok, true);
    await using c = await connectMqttJs(b.port, { username: "sensors/alice", password: "pw" });
    assert.equal(await publishCode(c, "sensors/sensors/alice/x", 1), 0x87);
    await using bob = await connectMqttJs(b.port, creds("bob"));
    assert.equal(await publishCode(bob, "sensors/bob/x", 1), undefined);
  });
});

Deno.test("anonymous clients get the anonymous roles", async () => {
  await using files = await AuthFiles.create();
  await using b = await startSecureBroker(files);
  await using anon = await connectMqttJs(b.port, {});
  assert.deepEqual(await granted(anon, ["public/#", "sensors/#"]), [1, 0x87]);
  assert.equal(await publishCode(anon, "public/x", 1), 0x87);
});
