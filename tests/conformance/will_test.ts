/**
 * Conformance over real TCP sockets: DISCONNECT and the Will message
 * (checklist §7).
 */
import assert from "node:assert/strict";
import { defaultAuthHooks } from "../../src/auth/mod.ts";
import { type ConnectPacket, PacketType, ReasonCode, type Will } from "../../src/codec/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, RawClient, text } from "../helpers/raw_client.ts";
import {
  connect,
  connectPacket,
  expectAlive,
  expectBareClose,
  expectDisconnect,
  expectRefusal,
  sleep,
  subscribe,
} from "./connect_util.ts";

/** A subscriber on `filter` at QoS 1. */
async function watcher(port: number, filter: string): Promise<RawClient> {
  const { client } = await connect(port, {
    clientId: "watch-" + Math.random().toString(36).slice(2),
  });
  assert.deepEqual(await subscribe(client, filter, 1), [1]);
  return client;
}

/** A Will on `topic` with payload "will". */
function will(topic: string, more: Partial<Will> = {}): Will {
  return { topic, payload: bytes("will"), qos: 1, retain: false, ...more };
}

/** Connects a client carrying a Will. */
async function withWill(
  port: number,
  w: Will,
  more: Partial<ConnectPacket> = {},
): Promise<RawClient> {
  return (await connect(port, { will: w, ...more })).client;
}

/** Expects the Will PUBLISH on the watcher within `timeoutMs`. */
async function expectWill(s: RawClient, topic: string, timeoutMs = 1_000) {
  const m = await s.expect(PacketType.Publish, timeoutMs);
  assert.equal(m.topic, topic);
  assert.equal(text(m.payload), "will");
  if (m.qos > 0) s.send({ type: PacketType.Puback, packetId: m.packetId!, reasonCode: 0 });
  return m;
}

Deno.test("broker discards the Will on DISCONNECT 0x00 [MQTT-3.14.4-3]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/normal");
  await using c = await withWill(b.port, will("w/normal"));
  c.send({ type: PacketType.Disconnect, reasonCode: 0 });
  await expectBareClose(c);
  assert.equal(await s.silentFor(300), true, "Will published after DISCONNECT 0x00");
});

Deno.test("broker publishes the Will on DISCONNECT 0x04 Disconnect with Will Message [MQTT-3.1.2-8]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/04");
  await using c = await withWill(b.port, will("w/04"));
  c.send({ type: PacketType.Disconnect, reasonCode: ReasonCode.DisconnectWithWillMessage });
  await expectBareClose(c);
  await expectWill(s, "w/04");
});

Deno.test("broker publishes the Will on a client DISCONNECT with an error code [MQTT-3.1.2-8]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/80");
  await using c = await withWill(b.port, will("w/80"));
  c.send({ type: PacketType.Disconnect, reasonCode: ReasonCode.UnspecifiedError });
  await expectBareClose(c);
  await expectWill(s, "w/80");
});

Deno.test("broker publishes the Will when the network connection drops without DISCONNECT [MQTT-3.1.2-8]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/drop");
  const c = await withWill(b.port, will("w/drop"));
  await c.close();
  await expectWill(s, "w/drop");
});

Deno.test("broker publishes the Will when it closes the connection for a protocol error [MQTT-3.1.2-8]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/malformed");
  await using c = await withWill(b.port, will("w/malformed"));
  c.sendBytes(new Uint8Array([0x00, 0x00]));
  await expectDisconnect(c, ReasonCode.MalformedPacket);
  await expectWill(s, "w/malformed");
});

Deno.test("broker publishes the Will only after the Will Delay Interval [MQTT-3.1.2-8]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/delay");
  const c = await withWill(b.port, will("w/delay", { properties: { willDelayInterval: 1 } }), {
    properties: { sessionExpiryInterval: 10 },
  });
  await c.close();
  const closedAt = Date.now();
  assert.equal(await s.silentFor(700), true, "Will published before its delay");
  await expectWill(s, "w/delay", 1_000);
  const elapsed = Date.now() - closedAt;
  assert.ok(elapsed >= 950, `Will published ${elapsed} ms after the close`);
});

Deno.test("broker cancels a delayed Will when the client reconnects to the session with Clean Start 0 [MQTT-3.1.3-9]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/cancel");
  const opts = {
    clientId: "w-cancel",
    cleanStart: false,
    properties: { sessionExpiryInterval: 10 },
  };
  const c = await withWill(
    b.port,
    will("w/cancel", { properties: { willDelayInterval: 1 } }),
    opts,
  );
  await c.close();
  await sleep(200);
  const again = await connect(b.port, opts);
  await using _c2 = again.client;
  assert.equal(again.connack.sessionPresent, true);
  assert.equal(await s.silentFor(1_300), true, "the cancelled Will was published");
});

Deno.test("broker publishes a delayed Will at once when a Clean Start 1 reconnection ends the session [MQTT-3.1.2-8]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/clean");
  const c = await withWill(b.port, will("w/clean", { properties: { willDelayInterval: 30 } }), {
    clientId: "w-clean",
    cleanStart: false,
    properties: { sessionExpiryInterval: 60 },
  });
  await c.close();
  assert.equal(await s.silentFor(150), true, "Will published before its delay");
  const again = await connect(b.port, { clientId: "w-clean", cleanStart: true });
  await using _c2 = again.client;
  assert.equal(again.connack.sessionPresent, false);
  await expectWill(s, "w/clean", 500);
});

Deno.test("broker publishes a delayed Will when the session expires before the delay ends [MQTT-3.1.2-8]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/expiry");
  const c = await withWill(b.port, will("w/expiry", { properties: { willDelayInterval: 30 } }), {
    properties: { sessionExpiryInterval: 1 },
  });
  await c.close();
  const closedAt = Date.now();
  assert.equal(await s.silentFor(700), true, "Will published before the session ended");
  await expectWill(s, "w/expiry", 1_000);
  const elapsed = Date.now() - closedAt;
  assert.ok(elapsed >= 950, `Will published ${elapsed} ms after the close`);
});

Deno.test("broker publishes a delayed Will at once when Session Expiry is 0 [MQTT-3.1.2-8]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/noexpiry");
  const c = await withWill(b.port, will("w/noexpiry", { properties: { willDelayInterval: 30 } }));
  await c.close();
  await expectWill(s, "w/noexpiry", 500);
});

Deno.test("broker on takeover with Clean Start 1 publishes the old connection's delayed Will at once (3.1.4) [MQTT-3.1.4-3]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/take1");
  await using old = await withWill(
    b.port,
    will("w/take1", { properties: { willDelayInterval: 30 } }),
    { clientId: "w-take1", cleanStart: false, properties: { sessionExpiryInterval: 60 } },
  );
  const fresh = await connect(b.port, { clientId: "w-take1", cleanStart: true });
  await using _f = fresh.client;
  await expectDisconnect(old, ReasonCode.SessionTakenOver);
  await expectWill(s, "w/take1", 500);
});

Deno.test("broker on takeover with Clean Start 0 and Will Delay 0 publishes the old connection's Will (3.1.4)", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/take0");
  const opts = {
    clientId: "w-take0",
    cleanStart: false,
    properties: { sessionExpiryInterval: 60 },
  };
  await using old = await withWill(b.port, will("w/take0"), opts);
  const fresh = await connect(b.port, opts);
  await using _f = fresh.client;
  assert.equal(fresh.connack.sessionPresent, true);
  await expectDisconnect(old, ReasonCode.SessionTakenOver);
  await expectWill(s, "w/take0", 500);
});

Deno.test("broker on takeover with Clean Start 0, a continuing session and Will Delay > 0 holds the Will back (3.1.4) [MQTT-3.1.3-9]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/takeheld");
  const opts = { clientId: "w-held", cleanStart: false, properties: { sessionExpiryInterval: 60 } };
  await using old = await withWill(
    b.port,
    will("w/takeheld", { properties: { willDelayInterval: 1 } }),
    opts,
  );
  const fresh = await connect(b.port, opts);
  await using _f = fresh.client;
  assert.equal(fresh.connack.sessionPresent, true);
  await expectDisconnect(old, ReasonCode.SessionTakenOver);
  assert.equal(await s.silentFor(1_300), true, "the held-back Will was published");
});

Deno.test("broker on takeover of a session with Session Expiry 0 publishes the old Will even with a delay (3.1.4)", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/take-end");
  await using old = await withWill(
    b.port,
    will("w/take-end", { properties: { willDelayInterval: 30 } }),
    { clientId: "w-take-end", cleanStart: false },
  );
  const fresh = await connect(b.port, { clientId: "w-take-end", cleanStart: false });
  await using _f = fresh.client;
  await expectDisconnect(old, ReasonCode.SessionTakenOver);
  await expectWill(s, "w/take-end", 500);
});

Deno.test("broker answers DISCONNECT setting Session Expiry from 0 to non-zero with DISCONNECT 0x82 and publishes the Will (3.14.2.2.2)", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/sei");
  await using c = await withWill(b.port, will("w/sei"));
  c.send({ type: PacketType.Disconnect, reasonCode: 0, properties: { sessionExpiryInterval: 60 } });
  await expectDisconnect(c, ReasonCode.ProtocolError);
  await expectWill(s, "w/sei");
});

Deno.test("broker publishes the Will with its QoS, properties and User Properties in order, without Will Delay [MQTT-3.1.2-14] [MQTT-3.1.3-10] [MQTT-3.3.2-4]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/props");
  const userProperties: [string, string][] = [["b", "2"], ["a", "1"], ["b", "3"], ["a", "1"]];
  const c = await withWill(
    b.port,
    will("w/props", {
      qos: 1,
      properties: {
        payloadFormatIndicator: 1,
        contentType: "text/plain",
        responseTopic: "reply/here",
        correlationData: new Uint8Array([1, 2, 3]),
        messageExpiryInterval: 60,
        userProperties,
      },
    }),
  );
  await c.close();
  const m = await expectWill(s, "w/props");
  assert.equal(m.qos, 1);
  assert.equal(m.retain, false);
  assert.deepEqual(m.properties, {
    payloadFormatIndicator: 1,
    contentType: "text/plain",
    responseTopic: "reply/here",
    correlationData: new Uint8Array([1, 2, 3]),
    messageExpiryInterval: 60,
    userProperties,
  });
});

Deno.test("broker starts a delayed Will's Message Expiry at publication, not at the close [MQTT-3.1.2-8] (3.1.3.2.4)", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/mexp");
  const c = await withWill(
    b.port,
    will("w/mexp", { properties: { willDelayInterval: 1, messageExpiryInterval: 2 } }),
    { properties: { sessionExpiryInterval: 10 } },
  );
  await c.close();
  const m = await expectWill(s, "w/mexp", 2_000);
  assert.equal(m.properties?.messageExpiryInterval, 2);
});

Deno.test("broker publishes a Will with Retain 1 as a retained message [MQTT-3.1.2-15]", async () => {
  await using b = await startBroker();
  const c = await withWill(b.port, will("w/retained", { retain: true, qos: 0 }));
  await c.close();
  await sleep(100);
  await using late = (await connect(b.port)).client;
  await subscribe(late, "w/retained", 1);
  const m = await late.expect(PacketType.Publish);
  assert.equal(m.topic, "w/retained");
  assert.equal(m.retain, true);
  assert.equal(text(m.payload), "will");
});

Deno.test("broker publishes a Will with Retain 0 as a non-retained message [MQTT-3.1.2-14]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/plain");
  const c = await withWill(b.port, will("w/plain", { retain: false }));
  await c.close();
  const m = await expectWill(s, "w/plain");
  assert.equal(m.retain, false);
  await using late = (await connect(b.port)).client;
  await subscribe(late, "w/plain", 1);
  assert.equal(await late.silentFor(200), true, "a Will with Retain 0 was retained");
});

Deno.test("broker removes the Will from the session once published: it is not published again at session expiry [MQTT-3.1.2-10]", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/once");
  const c = await withWill(b.port, will("w/once"), { properties: { sessionExpiryInterval: 1 } });
  await c.close();
  await expectWill(s, "w/once");
  assert.equal(await s.silentFor(1_300), true, "Will published a second time");
});

Deno.test("broker applies publish authorization to the Will: a forbidden Will topic is not published (ours)", async () => {
  await using b = await startBroker({}, {
    auth: {
      ...defaultAuthHooks(true),
      authorizePublish: (_c, topic) => !topic.startsWith("forbidden/"),
    },
  });
  await using s = await watcher(b.port, "forbidden/#");
  const c = await withWill(b.port, will("forbidden/will"));
  await c.close();
  assert.equal(await s.silentFor(300), true, "a Will on a forbidden topic was published");
});

Deno.test("broker refuses a Will Topic with a wildcard with CONNACK 0x90 (3.2.2.2)", async () => {
  await using b = await startBroker();
  await using c = await RawClient.open(b.port);
  c.send(connectPacket({ will: will("w/+") }));
  await expectRefusal(c, ReasonCode.TopicNameInvalid);
});

Deno.test("broker refuses a Will payload that is not UTF-8 despite Payload Format Indicator 1 with CONNACK 0x99 (MAY, ours)", async () => {
  await using b = await startBroker();
  await using c = await RawClient.open(b.port);
  c.send(connectPacket({
    will: {
      ...will("w/pfi"),
      payload: new Uint8Array([0xff, 0xfe]),
      properties: { payloadFormatIndicator: 1 },
    },
  }));
  await expectRefusal(c, ReasonCode.PayloadFormatInvalid);
});

Deno.test("broker does not publish the Will while its client is connected (3.1.2.5)", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/alive");
  await using c = await withWill(b.port, will("w/alive"));
  await expectAlive(c);
  assert.equal(await s.silentFor(200), true, "Will published while the client is connected");
});

Deno.test("broker accepts the short DISCONNECT form (Remaining Length 1) with 0x04 and publishes the Will (3.14.2.1)", async () => {
  await using b = await startBroker();
  await using s = await watcher(b.port, "w/short");
  await using c = await withWill(b.port, will("w/short"));
  c.sendBytes(new Uint8Array([0xe0, 0x01, 0x04]));
  await expectBareClose(c);
  await expectWill(s, "w/short");
});

Deno.test("broker publishes the Will when it closes the connection because it is shutting down (DISCONNECT 0x8B) [MQTT-3.1.2-8]", async () => {
  const b = await startBroker();
  try {
    // The Will client connects first, so the shutdown reaches it before the watcher.
    await using c = await withWill(b.port, will("w/shutdown"));
    await using s = await watcher(b.port, "w/shutdown");
    const stopping = b.stop();
    await expectDisconnect(c, ReasonCode.ServerShuttingDown);
    const { closed, packets } = await s.closedWithin();
    await c.close();
    await s.close();
    await stopping;
    assert.equal(closed, true);
    assert.deepEqual(
      packets.map((p) => [p.type, p.type === PacketType.Publish ? p.topic : p.type]),
      [[PacketType.Publish, "w/shutdown"], [PacketType.Disconnect, PacketType.Disconnect]],
    );
  } finally {
    await b.stop();
  }
});

Deno.test("broker never publishes the Will of a refused CONNECT (3.1.4)", async () => {
  await using b = await startBroker({ maxConnections: 2 });
  await using s = await watcher(b.port, "w/refused");
  await using other = (await connect(b.port)).client;
  await using c = await RawClient.open(b.port);
  c.send(connectPacket({ will: will("w/refused") }));
  await expectRefusal(c, ReasonCode.QuotaExceeded);
  assert.equal(await s.silentFor(300), true, "the refused client's Will was published");
  await expectAlive(other);
});
