/**
 * Conformance over real TCP sockets for MQTT 3.1.1 (protocol level 4) and
 * 3.1 (level 3) clients served by the same broker (checklist §12).
 */
import assert from "node:assert/strict";
import { type AuthHooks, defaultAuthHooks } from "../../src/auth/mod.ts";
import { type ConnectPacket, PacketType } from "../../src/codec/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, RawClient, text } from "../helpers/raw_client.ts";
import {
  connect,
  connectBytes,
  connectPacket,
  expectAlive,
  expectBareClose,
  expectRefusal,
  publish,
  publishQos1,
  sleep,
  subscribe,
} from "./connect_util.ts";

/** 3.1.1 CONNACK return codes. */
const RC = {
  accepted: 0x00,
  badProtocol: 0x01,
  identifierRejected: 0x02,
  serverUnavailable: 0x03,
  badUserNameOrPassword: 0x04,
  notAuthorized: 0x05,
} as const;

/** CONNECT fields of a 3.1.1 client. */
function v4(more: Partial<ConnectPacket> = {}): Partial<ConnectPacket> {
  return { protocolVersion: 4, ...more };
}

/** Opens a raw 3.1.1 connection and sends a CONNECT (maybe refused). */
async function openV4(port: number, more: Partial<ConnectPacket> = {}): Promise<RawClient> {
  const c = await RawClient.open(port, 4);
  c.send(connectPacket(v4(more)));
  return c;
}

/** Auth hooks admitting only password "good". */
function passwordAuth(): AuthHooks {
  return {
    ...defaultAuthHooks(false),
    authenticate: (req) =>
      req.username === undefined
        ? 0x87
        : req.password !== undefined && text(req.password) === "good"
        ? 0
        : 0x86,
  };
}

// ------------------------------------------------------------------ CONNECT / CONNACK

Deno.test("broker accepts a 3.1.1 CONNECT with return code 0x00 in a 3.1.1 CONNACK without properties (3.1.1 3.2)", async () => {
  await using b = await startBroker();
  const { client, connack } = await connect(b.port, v4());
  await using c = client;
  assert.equal(connack.reasonCode, RC.accepted);
  assert.equal(connack.sessionPresent, false);
  assert.equal(connack.properties, undefined);
  await expectAlive(c);
});

Deno.test("broker accepts an MQTT 3.1 CONNECT with protocol name MQIsdp and level 3 (ours)", async () => {
  await using b = await startBroker();
  const { client: s, connack } = await connect(b.port, { protocolVersion: 3, clientId: "old31" });
  await using _s = s;
  assert.equal(connack.reasonCode, RC.accepted);
  await subscribe(s, "v31/t", 1);
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "v31/t", "hi");
  const m = await s.expect(PacketType.Publish);
  assert.equal(text(m.payload), "hi");
});

Deno.test("broker with MQTT 3.1 disabled answers MQIsdp level 3 with a 3.1.1 CONNACK 0x01 and closes [MQTT-3.1.2-2]", async () => {
  await using b = await startBroker({ allowMqtt31: false });
  await using c = await RawClient.open(b.port, 4);
  c.sendBytes(connectBytes({ protocolVersion: 3 }));
  await expectRefusal(c, RC.badProtocol);
});

Deno.test("broker answers protocol name MQTT with level 3 with a 3.1.1 CONNACK 0x01 and closes [MQTT-3.1.2-2]", async () => {
  await using b = await startBroker();
  await using c = await RawClient.open(b.port, 4);
  c.sendBytes(connectBytes({ protocolVersion: 3, protocolName: "MQTT" }));
  await expectRefusal(c, RC.badProtocol);
});

Deno.test("broker answers an empty Client Identifier with Clean Session 0 with CONNACK 0x02 and closes (3.1.1 [MQTT-3.1.3-8])", async () => {
  await using b = await startBroker();
  await using c = await openV4(b.port, { clientId: "", cleanStart: false });
  await expectRefusal(c, RC.identifierRejected);
});

Deno.test("broker accepts an empty Client Identifier with Clean Session 1 and tells the 3.1.1 client nothing (3.1.1 3.1.3.1)", async () => {
  await using b = await startBroker();
  const { client, connack } = await connect(b.port, v4({ clientId: "", cleanStart: true }));
  await using c = client;
  assert.equal(connack.reasonCode, RC.accepted);
  assert.equal(connack.properties, undefined);
  await expectAlive(c);
});

Deno.test("broker rejects an MQTT 3.1 Client Identifier longer than 23 characters with CONNACK 0x02 (ours)", async () => {
  await using b = await startBroker();
  await using c = await RawClient.open(b.port, 3);
  c.send(connectPacket({ protocolVersion: 3, clientId: "x".repeat(24) }));
  await expectRefusal(c, RC.identifierRejected);
});

Deno.test("broker closes a 3.1.1 CONNECT with the Password flag and no User Name flag without CONNACK (3.1.1 [MQTT-3.1.2-22] [MQTT-3.1.4-1])", async () => {
  await using b = await startBroker();
  await using c = await RawClient.open(b.port, 4);
  c.sendBytes(connectBytes(v4({ password: bytes("p") })));
  await expectBareClose(c);
});

Deno.test("broker maps refusals to 3.1.1 return codes, with Session Present 0, then closes (3.1.1 [MQTT-3.2.2-4] [MQTT-3.2.2-5])", async (t) => {
  await using b = await startBroker({ maxConnections: 2 }, { auth: passwordAuth() });
  // An existing session, to show Session Present stays 0 on a refusal.
  {
    const { client } = await connect(
      b.port,
      v4({ clientId: "v4-refused", cleanStart: false, username: "u", password: bytes("good") }),
    );
    client.send({ type: PacketType.Disconnect, reasonCode: 0 });
    await expectBareClose(client);
    await client.close();
  }
  await t.step("bad password → 0x04", async () => {
    await using c = await openV4(b.port, {
      clientId: "v4-refused",
      cleanStart: false,
      username: "u",
      password: bytes("bad"),
    });
    await expectRefusal(c, RC.badUserNameOrPassword);
  });
  await t.step("no user name, not authorized → 0x05", async () => {
    await using c = await openV4(b.port, { clientId: "v4-refused", cleanStart: false });
    await expectRefusal(c, RC.notAuthorized);
  });
  await t.step("connection quota exceeded → 0x03", async () => {
    const creds = { username: "u", password: bytes("good") };
    await using _a = (await connect(b.port, v4({ clientId: "q1", ...creds }))).client;
    await using _b = (await connect(b.port, v4({ clientId: "q2", ...creds }))).client;
    await using c = await openV4(b.port, { clientId: "q3", ...creds });
    await expectRefusal(c, RC.serverUnavailable);
  });
});

// ------------------------------------------------------------------ sessions

Deno.test("broker keeps a Clean Session 0 session: Session Present 1, subscriptions and queued QoS 1 messages on reconnection (3.1.1 3.1.2.4)", async () => {
  await using b = await startBroker();
  const opts = v4({ clientId: "v4-keep", cleanStart: false });
  {
    const { client, connack } = await connect(b.port, opts);
    assert.equal(connack.sessionPresent, false);
    await subscribe(client, "v4keep/t", 1);
    client.send({ type: PacketType.Disconnect, reasonCode: 0 });
    await expectBareClose(client);
    await client.close();
  }
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "v4keep/t", "while away");
  const again = await connect(b.port, opts);
  await using c = again.client;
  assert.equal(again.connack.sessionPresent, true);
  const m = await c.expect(PacketType.Publish);
  assert.equal(text(m.payload), "while away");
  assert.equal(m.qos, 1);
});

Deno.test("broker ends a Clean Session 1 session at the close: Session Present 0 next time (3.1.1 3.1.2.4)", async () => {
  await using b = await startBroker();
  {
    const { client } = await connect(b.port, v4({ clientId: "v4-clean", cleanStart: false }));
    await subscribe(client, "v4clean/t", 1);
    await client.close();
  }
  {
    const { client, connack } = await connect(
      b.port,
      v4({ clientId: "v4-clean", cleanStart: true }),
    );
    assert.equal(connack.sessionPresent, false);
    await client.close();
  }
  const again = await connect(b.port, v4({ clientId: "v4-clean", cleanStart: false }));
  await using _c = again.client;
  assert.equal(again.connack.sessionPresent, false);
});

Deno.test("broker resends unacknowledged QoS 1 to a 3.1.1 client on reconnection with Clean Session 0, DUP=1 and the same id (3.1.1 [MQTT-4.4.0-1])", async () => {
  await using b = await startBroker();
  const opts = v4({ clientId: "v4-resume", cleanStart: false });
  const { client: first } = await connect(b.port, opts);
  await subscribe(first, "v4res/t", 1);
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "v4res/t", "again");
  const m = await first.expect(PacketType.Publish);
  await first.close();
  const again = await connect(b.port, opts);
  await using c = again.client;
  const r = await c.expect(PacketType.Publish);
  assert.equal(r.dup, true);
  assert.equal(r.packetId, m.packetId);
  assert.equal(text(r.payload), "again");
});

// ------------------------------------------------------------------ Will

Deno.test("broker discards a 3.1.1 client's Will on DISCONNECT (3.1.1 [MQTT-3.14.4-3])", async () => {
  await using b = await startBroker();
  await using s = (await connect(b.port)).client;
  await subscribe(s, "v4will/#", 1);
  await using c = (await connect(
    b.port,
    v4({
      will: { topic: "v4will/normal", payload: bytes("will"), qos: 1, retain: false },
    }),
  )).client;
  c.send({ type: PacketType.Disconnect, reasonCode: 0 });
  await expectBareClose(c);
  assert.equal(await s.silentFor(300), true, "Will published after a 3.1.1 DISCONNECT");
});

Deno.test("broker publishes a 3.1.1 client's Will when the connection drops without DISCONNECT (3.1.1 [MQTT-3.1.2-8])", async () => {
  await using b = await startBroker();
  await using s = (await connect(b.port)).client;
  await subscribe(s, "v4will/#", 1);
  const c = (await connect(
    b.port,
    v4({
      will: { topic: "v4will/drop", payload: bytes("will"), qos: 1, retain: false },
    }),
  )).client;
  await c.close();
  const m = await s.expect(PacketType.Publish);
  assert.equal(m.topic, "v4will/drop");
  assert.equal(text(m.payload), "will");
  assert.equal(m.qos, 1);
});

// ------------------------------------------------------------------ closing without DISCONNECT

Deno.test("broker closes a 3.1.1 connection without DISCONNECT on a protocol violation (3.1.1 [MQTT-4.8.0-1])", async (t) => {
  await using b = await startBroker();
  await t.step("packet type 0", async () => {
    await using c = (await connect(b.port, v4())).client;
    c.sendBytes(new Uint8Array([0x00, 0x00]));
    await expectBareClose(c);
  });
  await t.step("AUTH (type 15 is reserved in 3.1.1)", async () => {
    await using c = (await connect(b.port, v4())).client;
    c.sendBytes(new Uint8Array([0xf0, 0x00]));
    await expectBareClose(c);
  });
  await t.step("second CONNECT", async () => {
    await using c = (await connect(b.port, v4({ clientId: "v4-twice" }))).client;
    c.send(connectPacket(v4({ clientId: "v4-twice" })));
    await expectBareClose(c);
  });
  await t.step("SUBSCRIBE with QoS 3 (3.1.1 [MQTT-3.8.3-4])", async () => {
    await using c = (await connect(b.port, v4())).client;
    c.sendBytes(new Uint8Array([0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x03]));
    await expectBareClose(c);
  });
  await t.step("PUBLISH topic with a wildcard", async () => {
    await using c = (await connect(b.port, v4())).client;
    publish(c, "a/+", "x", 1, { packetId: 1 });
    await expectBareClose(c);
  });
});

Deno.test("broker closes the old 3.1.1 connection without DISCONNECT on takeover (3.1.1 [MQTT-3.1.4-2])", async () => {
  await using b = await startBroker();
  await using old = (await connect(b.port, v4({ clientId: "v4-taken" }))).client;
  const fresh = await connect(b.port, v4({ clientId: "v4-taken" }));
  await using _f = fresh.client;
  await expectBareClose(old);
  await expectAlive(fresh.client);
});

Deno.test("broker closes a silent 3.1.1 client after 1.5 x Keep Alive without DISCONNECT (3.1.1 [MQTT-3.1.2-24])", async () => {
  await using b = await startBroker();
  await using c = (await connect(b.port, v4({ keepAlive: 1 }))).client;
  const started = Date.now();
  await expectBareClose(c, 2_500);
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 1_400, `closed after ${elapsed} ms`);
});

// ------------------------------------------------------------------ forwarding

Deno.test("broker forwards no v5 properties to a 3.1.1 subscriber and resolves Topic Aliases (checklist §12)", async () => {
  await using b = await startBroker();
  await using s = (await connect(b.port, v4())).client;
  await subscribe(s, "v4props/#", 1);
  await using p = (await connect(b.port)).client;
  const properties = {
    payloadFormatIndicator: 1,
    contentType: "text/plain",
    responseTopic: "reply/to",
    correlationData: bytes("corr"),
    messageExpiryInterval: 60,
    userProperties: [["k", "v"]] as [string, string][],
    topicAlias: 3,
  };
  await publishQos1(p, "v4props/a", "payload-1", 1, { properties });
  await publishQos1(p, "", "payload-2", 2, { properties: { topicAlias: 3 } });
  for (const payload of ["payload-1", "payload-2"]) {
    const m = await s.expect(PacketType.Publish);
    assert.equal(m.topic, "v4props/a");
    // A 3.1.1 decoder reads everything after the packet id as payload: any property bytes show here.
    assert.equal(text(m.payload), payload);
    assert.equal(m.properties, undefined);
    s.send({ type: PacketType.Puback, packetId: m.packetId!, reasonCode: 0 });
  }
});

Deno.test("broker drops a queued message whose Message Expiry ran out before a 3.1.1 client came back [MQTT-3.3.2-5]", async () => {
  await using b = await startBroker();
  const opts = v4({ clientId: "v4-expiry", cleanStart: false });
  {
    const { client } = await connect(b.port, opts);
    await subscribe(client, "v4exp/t", 1);
    await client.close();
  }
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "v4exp/t", "short", 1, { properties: { messageExpiryInterval: 1 } });
  await publishQos1(p, "v4exp/t", "long", 2, { properties: { messageExpiryInterval: 60 } });
  await sleep(1_200);
  const again = await connect(b.port, opts);
  await using c = again.client;
  const m = await c.expect(PacketType.Publish);
  assert.equal(text(m.payload), "long");
  assert.equal(await c.silentFor(150), true);
});

Deno.test("broker forwards messages from a 3.1.1 publisher to a v5 subscriber without properties (checklist §12)", async () => {
  await using b = await startBroker();
  await using s = (await connect(b.port)).client;
  await subscribe(s, "fromv4/t", 1);
  await using p = (await connect(b.port, v4())).client;
  await publishQos1(p, "fromv4/t", "plain");
  const m = await s.expect(PacketType.Publish);
  assert.equal(text(m.payload), "plain");
  assert.deepEqual(m.properties ?? {}, {});
});

Deno.test("broker acknowledges a 3.1.1 PUBLISH it will not accept and drops it (3.1.1 [MQTT-3.3.5-2])", async () => {
  await using b = await startBroker();
  await using s = (await connect(b.port)).client;
  await subscribe(s, "$SYS/v4test", 1);
  await using p = (await connect(b.port, v4())).client;
  publish(p, "$SYS/v4test", "nope", 1, { packetId: 8 });
  const ack = await p.expect(PacketType.Puback);
  assert.equal(ack.packetId, 8);
  assert.equal(ack.reasonCode, 0);
  assert.equal(await s.silentFor(200), true, "a refused message was forwarded");
  await expectAlive(p);
});

Deno.test("broker's 3.1.1 subscriptions act as Retain As Published 0 and Retain Handling 0: live RETAIN=0, every SUBSCRIBE resends retained (3.1.1 [MQTT-3.3.1-9] [MQTT-3.8.4-3])", async () => {
  await using b = await startBroker();
  await using s = (await connect(b.port, v4())).client;
  await subscribe(s, "v4ret/t", 1);
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "v4ret/t", "r1", 1, { retain: true });
  const live = await s.expect(PacketType.Publish);
  assert.equal(live.retain, false, "a live forward to a 3.1.1 subscriber kept RETAIN=1");
  s.send({ type: PacketType.Puback, packetId: live.packetId!, reasonCode: 0 });
  assert.deepEqual(await subscribe(s, "v4ret/t", 1), [1]);
  const again = await s.expect(PacketType.Publish);
  assert.equal(again.retain, true);
  assert.equal(text(again.payload), "r1");
});

Deno.test("broker answers a 3.1.1 SUBSCRIBE with an invalid filter with SUBACK 0x80, and UNSUBACK without payload (3.1.1 3.9.3, 3.11)", async () => {
  await using b = await startBroker();
  await using c = (await connect(b.port, v4())).client;
  assert.deepEqual(await subscribe(c, "a/#/b", 1), [0x80]);
  c.send({ type: PacketType.Unsubscribe, packetId: 12, topicFilters: ["nothing/here"] });
  const unsuback = await c.expect(PacketType.Unsuback);
  assert.equal(unsuback.packetId, 12);
  assert.deepEqual(unsuback.reasonCodes, []);
});

// ------------------------------------------------------------------ timed resend

Deno.test("broker resends an unacknowledged QoS 1 PUBLISH to a 3.1.1 client after retryIntervalMs with DUP=1 and the same id (checklist §12)", async () => {
  await using b = await startBroker({ retryIntervalMs: 200 });
  await using s = (await connect(b.port, v4())).client;
  await subscribe(s, "retry/t", 1);
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "retry/t", "r");
  const first = await s.expect(PacketType.Publish);
  const sentAt = Date.now();
  assert.equal(first.dup, false);
  const resent = await s.expect(PacketType.Publish, 1_000);
  const waited = Date.now() - sentAt;
  assert.ok(waited >= 180, `resent after ${waited} ms, before retryIntervalMs`);
  assert.equal(resent.dup, true);
  assert.equal(resent.packetId, first.packetId);
  assert.equal(text(resent.payload), "r");
  s.send({ type: PacketType.Puback, packetId: first.packetId!, reasonCode: 0 });
  assert.equal(await s.silentFor(400), true, "resent after the PUBACK");
});

Deno.test("broker resends an unanswered PUBREL to a 3.1.1 client after retryIntervalMs (checklist §12)", async () => {
  await using b = await startBroker({ retryIntervalMs: 200 });
  await using s = (await connect(b.port, v4())).client;
  await subscribe(s, "retry2/t", 2);
  await using p = (await connect(b.port)).client;
  publish(p, "retry2/t", "x", 2, { packetId: 1 });
  await p.expect(PacketType.Pubrec);
  const m = await s.expect(PacketType.Publish);
  s.send({ type: PacketType.Pubrec, packetId: m.packetId!, reasonCode: 0 });
  assert.equal((await s.expect(PacketType.Pubrel)).packetId, m.packetId);
  const again = await s.expect(PacketType.Pubrel, 1_000);
  assert.equal(again.packetId, m.packetId);
  s.send({ type: PacketType.Pubcomp, packetId: m.packetId!, reasonCode: 0 });
  assert.equal(await s.silentFor(400), true, "resent after the PUBCOMP");
});

Deno.test("broker never resends to a v5 client on the same connection, whatever retryIntervalMs (checklist §5 [MQTT-4.4.0-1])", async () => {
  await using b = await startBroker({ retryIntervalMs: 200 });
  await using s = (await connect(b.port)).client;
  await subscribe(s, "noretry/t", 1);
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "noretry/t", "once");
  const m = await s.expect(PacketType.Publish);
  assert.equal(m.dup, false);
  assert.equal(await s.silentFor(700), true, "a v5 client got a timed resend");
});

Deno.test("broker applies its own in-flight window to 3.1.1 clients, which send no Receive Maximum (checklist §12, ours)", async () => {
  await using b = await startBroker({ maxInflightOut: 2 });
  await using s = (await connect(b.port, v4())).client;
  await subscribe(s, "window/t", 1);
  await using p = (await connect(b.port)).client;
  for (let i = 1; i <= 3; i++) await publishQos1(p, "window/t", `m${i}`, i);
  const m1 = await s.expect(PacketType.Publish);
  const m2 = await s.expect(PacketType.Publish);
  assert.deepEqual([text(m1.payload), text(m2.payload)], ["m1", "m2"]);
  assert.equal(await s.silentFor(200), true, "more than maxInflightOut unacknowledged");
  s.send({ type: PacketType.Puback, packetId: m1.packetId!, reasonCode: 0 });
  const m3 = await s.expect(PacketType.Publish);
  assert.equal(text(m3.payload), "m3");
});
