/**
 * Conformance over real TCP sockets: framing as seen on the wire (checklist
 * §1) and CONNECT / CONNACK (checklist §4).
 */
import assert from "node:assert/strict";
import { type AuthHooks, defaultAuthHooks } from "../../src/auth/mod.ts";
import { encodePacket, PacketType, ReasonCode } from "../../src/codec/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, RawClient, text } from "../helpers/raw_client.ts";
import { readBufferStats } from "../../src/util/read_buffers.ts";
import {
  connect,
  connectBytes,
  connectPacket,
  expectAlive,
  expectBareClose,
  expectDisconnect,
  expectRefusal,
  expectRejectedConnect,
  frame,
  publish,
  publishQos1,
  rawString,
  sleep,
  subscribe,
} from "./connect_util.ts";

// ------------------------------------------------------------------ §1 framing

/** Connects a v5 client, sends `bad` and expects DISCONNECT `code` then close. */
async function expectDisconnectAfter(
  port: number,
  bad: Uint8Array,
  code: number,
): Promise<void> {
  await using c = (await connect(port)).client;
  c.sendBytes(bad);
  await expectDisconnect(c, code);
}

Deno.test("broker answers packet type 0 with DISCONNECT 0x81 and closes [MQTT-4.13.1-1]", async () => {
  await using b = await startBroker();
  await expectDisconnectAfter(b.port, new Uint8Array([0x00, 0x00]), ReasonCode.MalformedPacket);
});

Deno.test("broker answers fixed-header flags other than the fixed ones with DISCONNECT 0x81 [MQTT-2.1.3-1]", async (t) => {
  await using b = await startBroker();
  const cases: [string, Uint8Array][] = [
    ["PINGREQ with flags 0001", new Uint8Array([0xc1, 0x00])],
    ["PUBACK with flags 0010", new Uint8Array([0x42, 0x02, 0x00, 0x01])],
    ["PUBREL with flags 0000", new Uint8Array([0x60, 0x02, 0x00, 0x01])],
    ["SUBSCRIBE with flags 0000", frame(0x80, [0, 1, 0, ...rawString(bytes("a")), 0])],
    ["UNSUBSCRIBE with flags 0011", frame(0xa3, [0, 1, 0, ...rawString(bytes("a"))])],
    ["DISCONNECT with flags 0001", new Uint8Array([0xe1, 0x00])],
  ];
  for (const [name, bad] of cases) {
    await t.step(name, () => expectDisconnectAfter(b.port, bad, ReasonCode.MalformedPacket));
  }
});

Deno.test("broker answers a Remaining Length with a fifth continuation byte with DISCONNECT 0x81 (1.5.5)", async () => {
  await using b = await startBroker();
  await expectDisconnectAfter(
    b.port,
    new Uint8Array([0xc0, 0x80, 0x80, 0x80, 0x80, 0x01]),
    ReasonCode.MalformedPacket,
  );
});

Deno.test("broker answers declared lengths that disagree with the Remaining Length with DISCONNECT 0x81 (1.5.4, 2.1.4)", async (t) => {
  await using b = await startBroker();
  await t.step(
    "PINGREQ with a leftover byte",
    () =>
      expectDisconnectAfter(b.port, new Uint8Array([0xc0, 0x01, 0x00]), ReasonCode.MalformedPacket),
  );
  await t.step("PUBLISH topic length beyond the packet", () =>
    expectDisconnectAfter(
      b.port,
      frame(0x30, [0x00, 0x0a, 0x61, 0x62, 0x00]),
      ReasonCode.MalformedPacket,
    ));
  await t.step("PUBLISH property length beyond the packet", () =>
    expectDisconnectAfter(
      b.port,
      frame(0x30, [...rawString(bytes("a/b")), 0x09, 0x01, 0x00]),
      ReasonCode.MalformedPacket,
    ));
});

Deno.test("broker answers ill-formed UTF-8 in a topic with DISCONNECT 0x81 [MQTT-1.5.4-1] [MQTT-1.5.4-2]", async (t) => {
  await using b = await startBroker();
  const topics: [string, number[]][] = [
    ["truncated sequence", [0x61, 0xc3]],
    ["surrogate U+D800", [0x61, 0xed, 0xa0, 0x80]],
    ["overlong encoding", [0xc0, 0xaf]],
    ["U+0000", [0x61, 0x00, 0x62]],
  ];
  for (const [name, topic] of topics) {
    await t.step(name, () =>
      expectDisconnectAfter(
        b.port,
        frame(0x30, [...rawString(topic), 0x00, 0x68, 0x69]),
        ReasonCode.MalformedPacket,
      ));
  }
  await t.step("in a SUBSCRIBE topic filter", () =>
    expectDisconnectAfter(
      b.port,
      frame(0x82, [0x00, 0x01, 0x00, ...rawString([0x61, 0xed, 0xbf, 0xbf]), 0x00]),
      ReasonCode.MalformedPacket,
    ));
});

Deno.test("broker answers ill-formed UTF-8 in a User Property with DISCONNECT 0x81 [MQTT-1.5.7-1]", async () => {
  await using b = await startBroker();
  const userProperty = [0x26, ...rawString(bytes("k")), ...rawString([0xff])];
  await expectDisconnectAfter(
    b.port,
    frame(0x30, [...rawString(bytes("a/b")), userProperty.length, ...userProperty, 0x68]),
    ReasonCode.MalformedPacket,
  );
});

Deno.test("broker keeps a leading U+FEFF in a topic: it is not stripped [MQTT-1.5.4-3]", async () => {
  await using b = await startBroker();
  await using s = (await connect(b.port)).client;
  await using p = (await connect(b.port)).client;
  assert.deepEqual(await subscribe(s, "\uFEFFbom", 1), [1]);
  assert.deepEqual(await subscribe(s, "bom", 1), [1]);
  publish(p, "\uFEFFbom", "x");
  const m = await s.expect(PacketType.Publish);
  assert.equal(m.topic, "\uFEFFbom");
  assert.equal(await s.silentFor(150), true, "the message also matched the filter without BOM");
});

Deno.test("broker answers a repeated property with DISCONNECT 0x82 (2.2.2.2)", async () => {
  await using b = await startBroker();
  const props = [0x01, 0x00, 0x01, 0x00];
  await expectDisconnectAfter(
    b.port,
    frame(0x30, [...rawString(bytes("a/b")), props.length, ...props]),
    ReasonCode.ProtocolError,
  );
});

Deno.test("broker answers an unknown property or one not valid on the packet with DISCONNECT 0x81 (2.2.2.2)", async (t) => {
  await using b = await startBroker();
  await t.step("unknown id 0x7F", () =>
    expectDisconnectAfter(
      b.port,
      frame(0x30, [...rawString(bytes("a/b")), 0x02, 0x7f, 0x00]),
      ReasonCode.MalformedPacket,
    ));
  await t.step("Session Expiry Interval on PUBLISH", () =>
    expectDisconnectAfter(
      b.port,
      frame(0x30, [...rawString(bytes("a/b")), 0x05, 0x11, 0, 0, 0, 1]),
      ReasonCode.MalformedPacket,
    ));
});

Deno.test("broker answers Packet Identifier 0 on QoS 1 PUBLISH and SUBSCRIBE with DISCONNECT 0x82 [MQTT-2.2.1-3]", async (t) => {
  await using b = await startBroker();
  await t.step("PUBLISH QoS 1", () =>
    expectDisconnectAfter(
      b.port,
      frame(0x32, [...rawString(bytes("a/b")), 0x00, 0x00, 0x00, 0x68]),
      ReasonCode.ProtocolError,
    ));
  await t.step("SUBSCRIBE", () =>
    expectDisconnectAfter(
      b.port,
      frame(0x82, [0x00, 0x00, 0x00, ...rawString(bytes("a")), 0x00]),
      ReasonCode.ProtocolError,
    ));
});

Deno.test("broker's own QoS 1 PUBLISH carry non-zero Packet Identifiers not in use [MQTT-2.2.1-4]", async () => {
  await using b = await startBroker();
  await using s = (await connect(b.port)).client;
  await using p = (await connect(b.port)).client;
  await subscribe(s, "ids/#", 1);
  for (let i = 1; i <= 5; i++) await publishQos1(p, `ids/${i}`, "x", i);
  const ids = new Set<number>();
  for (let i = 1; i <= 5; i++) {
    const m = await s.expect(PacketType.Publish);
    assert.equal(m.qos, 1);
    assert.ok(m.packetId !== undefined && m.packetId > 0);
    ids.add(m.packetId);
  }
  assert.equal(ids.size, 5, "an id was reused while still unacknowledged");
});

Deno.test("broker encodes every Remaining Length it sends in the fewest bytes [MQTT-1.5.5-1]", async () => {
  await using b = await startBroker();
  await using p = (await connect(b.port)).client;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: b.port });
  try {
    const frames = frameReader(conn);
    await conn.write(connectBytes({ clientId: "vbi" }));
    const connack = await frames.next();
    assert.equal(connack[0], 0x20);
    const sub = encodePacket({
      type: PacketType.Subscribe,
      packetId: 1,
      subscriptions: [{
        topicFilter: "vbi",
        qos: 0,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    await conn.write(sub);
    assert.equal((await frames.next())[0], 0x90);
    for (const size of [50, 200, 20_000]) {
      publish(p, "vbi", new Uint8Array(size));
      const f = await frames.next();
      assert.equal(f[0], 0x30);
      const { value, length } = readVbi(f, 1);
      assert.equal(value, f.length - 1 - length);
      const minimal = value < 128 ? 1 : value < 16_384 ? 2 : value < 2_097_152 ? 3 : 4;
      assert.equal(length, minimal, `Remaining Length ${value} sent in ${length} bytes`);
    }
  } finally {
    conn.close();
  }
});

Deno.test("broker closes without a reply when the first packet is not CONNECT [MQTT-3.1.0-1]", async (t) => {
  await using b = await startBroker();
  const firsts: [string, Uint8Array][] = [
    ["PINGREQ", new Uint8Array([0xc0, 0x00])],
    ["PUBLISH", frame(0x30, [...rawString(bytes("a")), 0x00])],
    ["DISCONNECT", new Uint8Array([0xe0, 0x00])],
  ];
  for (const [name, first] of firsts) {
    await t.step(name, async () => {
      await using c = await RawClient.open(b.port);
      c.sendBytes(first);
      await expectBareClose(c);
    });
  }
});

Deno.test("broker answers a second CONNECT with DISCONNECT 0x82 and closes [MQTT-3.1.0-2]", async () => {
  await using b = await startBroker();
  await using c = (await connect(b.port, { clientId: "again" })).client;
  c.send(connectPacket({ clientId: "again" }));
  await expectDisconnect(c, ReasonCode.ProtocolError);
});

Deno.test("broker closes a connection that sends no CONNECT within the connect timeout (3.1)", async (t) => {
  await using b = await startBroker({ connectTimeoutMs: 300 });
  await t.step("nothing sent", async () => {
    await using c = await RawClient.open(b.port);
    const started = Date.now();
    await expectBareClose(c, 1_500);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 250, `closed after ${elapsed} ms, before the timeout`);
  });
  await t.step("half a CONNECT sent", async () => {
    await using c = await RawClient.open(b.port);
    c.sendBytes(connectBytes().subarray(0, 6));
    await expectBareClose(c, 1_500);
  });
});

Deno.test("broker answers a packet above its Maximum Packet Size with DISCONNECT 0x95 before reading the body (3.2.2.3.6)", async () => {
  await using b = await startBroker({ maxPacketSize: 200 });
  await using c = (await connect(b.port)).client;
  // Only the fixed header of a 1000-byte PUBLISH: the broker must not wait for the body.
  c.sendBytes(new Uint8Array([0x30, 0xe8, 0x07]));
  await expectDisconnect(c, ReasonCode.PacketTooLarge, 1_000);
});

Deno.test("broker accepts a packet of exactly its Maximum Packet Size and refuses one byte more with 0x95 (3.2.2.3.6)", async () => {
  await using b = await startBroker({ maxPacketSize: 200 });
  await using c = (await connect(b.port)).client;
  // QoS 1 PUBLISH: 1 + 2 (RL) + 5 (topic "a/b") + 2 (id) + 1 (property length) + payload.
  const fits = 200 - 11;
  publish(c, "a/b", new Uint8Array(fits), 1, { packetId: 1 });
  const ack = await c.expect(PacketType.Puback);
  assert.equal(ack.packetId, 1);
  publish(c, "a/b", new Uint8Array(fits + 1), 1, { packetId: 2 });
  await expectDisconnect(c, ReasonCode.PacketTooLarge);
});

Deno.test("broker closes on an oversized CONNECT, sending at most CONNACK 0x95 and never DISCONNECT (3.2.2.3.6) [MQTT-3.14.0-1]", async () => {
  await using b = await startBroker({ maxPacketSize: 100 });
  await using c = await RawClient.open(b.port);
  c.sendBytes(connectBytes({ clientId: "big", password: new Uint8Array(200) }));
  await expectRejectedConnect(c, ReasonCode.PacketTooLarge);
});

Deno.test("broker answers server-only packet types from a client with DISCONNECT 0x82 (2.1.2)", async (t) => {
  await using b = await startBroker();
  const cases: [string, Uint8Array][] = [
    ["CONNACK", new Uint8Array([0x20, 0x03, 0x00, 0x00, 0x00])],
    ["SUBACK", new Uint8Array([0x90, 0x04, 0x00, 0x01, 0x00, 0x00])],
    ["UNSUBACK", new Uint8Array([0xb0, 0x04, 0x00, 0x01, 0x00, 0x00])],
    ["PINGRESP", new Uint8Array([0xd0, 0x00])],
  ];
  for (const [name, bad] of cases) {
    await t.step(name, () => expectDisconnectAfter(b.port, bad, ReasonCode.ProtocolError));
  }
});

Deno.test("broker never sends DISCONNECT before CONNACK: errors in CONNECT get CONNACK >= 0x80 or a bare close [MQTT-3.14.0-1]", async (t) => {
  await using b = await startBroker();
  await t.step("client id with a surrogate (malformed)", async () => {
    await using c = await RawClient.open(b.port);
    const body = [
      ...rawString(bytes("MQTT")),
      5,
      0x02,
      0,
      0,
      0,
      ...rawString([0x61, 0xed, 0xa0, 0x80]),
    ];
    c.sendBytes(frame(0x10, body));
    await expectRejectedConnect(c, ReasonCode.MalformedPacket);
  });
  await t.step("CONNECT with a repeated property (protocol error)", async () => {
    await using c = await RawClient.open(b.port);
    const props = [0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2];
    const body = [
      ...rawString(bytes("MQTT")),
      5,
      0x02,
      0,
      0,
      props.length,
      ...props,
      ...rawString(bytes("rep")),
    ];
    c.sendBytes(frame(0x10, body));
    await expectRejectedConnect(c, ReasonCode.ProtocolError);
  });
});

Deno.test("broker processes nothing sent after a refused CONNECT and sends nothing after its CONNACK [MQTT-3.1.4-6] [MQTT-3.2.0-2]", async () => {
  await using b = await startBroker({ maximumQos: 1 });
  await using c = await RawClient.open(b.port);
  const refused = connectBytes({
    clientId: "refused",
    will: { topic: "w", payload: bytes("x"), qos: 2, retain: false },
  });
  const retained = encodePacket({
    type: PacketType.Publish,
    topic: "after/refusal",
    payload: bytes("must not be stored"),
    qos: 0,
    retain: true,
    dup: false,
  });
  const ping = new Uint8Array([0xc0, 0x00]);
  c.sendBytes(new Uint8Array([...refused, ...retained, ...ping]));
  await expectRefusal(c, ReasonCode.QoSNotSupported);
  await using s = (await connect(b.port)).client;
  await subscribe(s, "after/#");
  assert.equal(await s.silentFor(200), true, "a PUBLISH after the refused CONNECT was processed");
});

// ------------------------------------------------------------------ §4 CONNECT / CONNACK

Deno.test("broker answers protocol name other than MQTT with CONNACK 0x84 and closes [MQTT-3.1.2-1]", async () => {
  await using b = await startBroker();
  await using c = await RawClient.open(b.port);
  c.sendBytes(connectBytes({ protocolName: "MQTX" }));
  await expectRefusal(c, ReasonCode.UnsupportedProtocolVersion);
});

Deno.test("broker answers CONNECT with protocol level 6 with CONNACK 0x84 and closes [MQTT-3.1.2-2]", async () => {
  await using b = await startBroker();
  await using c = await RawClient.open(b.port);
  const connect6 = connectBytes();
  connect6[connectFlagsOffsetLevel(connect6)] = 6;
  c.sendBytes(connect6);
  await expectRefusal(c, ReasonCode.UnsupportedProtocolVersion);
});

Deno.test("broker treats the CONNECT reserved flag set as malformed and closes without CONNACK 0x00 [MQTT-3.1.2-3]", async () => {
  await using b = await startBroker();
  await using c = await RawClient.open(b.port);
  c.sendBytes(connectBytes({}, 0x03));
  await expectRejectedConnect(c, ReasonCode.MalformedPacket);
});

Deno.test("broker closes on Will QoS or Will Retain set without the Will flag, and on Will QoS 3 [MQTT-3.1.2-11] [MQTT-3.1.2-13] (3.1.2.6)", async (t) => {
  await using b = await startBroker();
  await t.step("Will QoS 1 without Will flag", async () => {
    await using c = await RawClient.open(b.port);
    c.sendBytes(connectBytes({}, 0x02 | 0x08));
    await expectRejectedConnect(c, ReasonCode.MalformedPacket);
  });
  await t.step("Will Retain without Will flag", async () => {
    await using c = await RawClient.open(b.port);
    c.sendBytes(connectBytes({}, 0x02 | 0x20));
    await expectRejectedConnect(c, ReasonCode.MalformedPacket);
  });
  await t.step("Will QoS 3", async () => {
    await using c = await RawClient.open(b.port);
    c.sendBytes(
      connectBytes({ will: { topic: "w", payload: bytes("x"), qos: 2, retain: false } }, 0x1e),
    );
    await expectRejectedConnect(c, ReasonCode.MalformedPacket);
  });
});

Deno.test("broker closes when User Name / Password flags do not match the payload [MQTT-3.1.2-16] [MQTT-3.1.2-17] [MQTT-3.1.2-18] [MQTT-3.1.2-19]", async (t) => {
  await using b = await startBroker();
  await t.step("User Name flag set, no User Name", async () => {
    await using c = await RawClient.open(b.port);
    c.sendBytes(connectBytes({}, 0x02 | 0x80));
    await expectRejectedConnect(c, ReasonCode.MalformedPacket);
  });
  await t.step("User Name flag clear, User Name present", async () => {
    await using c = await RawClient.open(b.port);
    c.sendBytes(connectBytes({ username: "u" }, 0x02));
    await expectRejectedConnect(c, ReasonCode.MalformedPacket);
  });
  await t.step("Password flag set, no Password", async () => {
    await using c = await RawClient.open(b.port);
    c.sendBytes(connectBytes({}, 0x02 | 0x40));
    await expectRejectedConnect(c, ReasonCode.MalformedPacket);
  });
});

Deno.test("broker accepts a v5 CONNECT with a Password and no User Name (3.1.2.9)", async () => {
  await using b = await startBroker();
  const { client, connack } = await connect(b.port, { password: bytes("secret") });
  await using _c = client;
  assert.equal(connack.reasonCode, 0);
});

Deno.test("broker refuses Receive Maximum 0 and Maximum Packet Size 0 in CONNECT as a Protocol Error (3.1.2.11)", async (t) => {
  await using b = await startBroker();
  await t.step("Receive Maximum 0", async () => {
    await using c = await RawClient.open(b.port);
    c.send(connectPacket({ properties: { receiveMaximum: 0 } }));
    await expectRefusal(c, ReasonCode.ProtocolError);
  });
  await t.step("Maximum Packet Size 0", async () => {
    await using c = await RawClient.open(b.port);
    c.send(connectPacket({ properties: { maximumPacketSize: 0 } }));
    await expectRefusal(c, ReasonCode.ProtocolError);
  });
  await t.step("Request Problem Information 2", async () => {
    await using c = await RawClient.open(b.port);
    c.send(connectPacket({ properties: { requestProblemInformation: 2 } }));
    await expectRefusal(c, ReasonCode.ProtocolError);
  });
  await t.step("Authentication Data without Authentication Method", async () => {
    await using c = await RawClient.open(b.port);
    c.send(connectPacket({ properties: { authenticationData: bytes("x") } }));
    await expectRefusal(c, ReasonCode.ProtocolError);
  });
});

Deno.test("broker accepts any 1..23 character [0-9a-zA-Z] Client Identifier [MQTT-3.1.3-5]", async () => {
  await using b = await startBroker();
  const id = "0123456789abcdefXYZ0123";
  assert.equal(id.length, 23);
  const { client, connack } = await connect(b.port, { clientId: id });
  await using _c = client;
  assert.equal(connack.reasonCode, 0);
  assert.equal(connack.properties?.assignedClientIdentifier, undefined);
});

Deno.test("broker assigns a unique id for an empty Client Identifier and returns it as Assigned Client Identifier [MQTT-3.1.3-7] [MQTT-3.2.2-16]", async () => {
  await using b = await startBroker();
  const first = await connect(b.port, { clientId: "" });
  await using _a = first.client;
  const second = await connect(b.port, { clientId: "", cleanStart: false });
  await using _b = second.client;
  const id1 = first.connack.properties?.assignedClientIdentifier;
  const id2 = second.connack.properties?.assignedClientIdentifier;
  assert.equal(typeof id1, "string");
  assert.equal(typeof id2, "string");
  assert.ok(id1!.length > 0 && id2!.length > 0);
  assert.notEqual(id1, id2);
  assert.equal(first.connack.sessionPresent, false);
  assert.equal(second.connack.sessionPresent, false);
  // Both connections stay up: the ids did not collide into a takeover.
  await expectAlive(first.client);
  await expectAlive(second.client);
});

Deno.test("broker treats a CONNECT with an empty id as if it carried the assigned id: its session resumes under that id [MQTT-3.1.3-7]", async () => {
  await using b = await startBroker();
  const first = await connect(b.port, {
    clientId: "",
    cleanStart: false,
    properties: { sessionExpiryInterval: 60 },
  });
  const id = first.connack.properties!.assignedClientIdentifier!;
  {
    await using c = first.client;
    await subscribe(c, "assigned/t", 1);
    c.send({ type: PacketType.Disconnect, reasonCode: 0 });
    await expectBareClose(c);
  }
  const again = await connect(b.port, {
    clientId: id,
    cleanStart: false,
    properties: { sessionExpiryInterval: 60 },
  });
  await using c2 = again.client;
  assert.equal(again.connack.sessionPresent, true);
  await using p = (await connect(b.port)).client;
  publish(p, "assigned/t", "hello");
  const m = await c2.expect(PacketType.Publish);
  assert.equal(text(m.payload), "hello");
});

Deno.test("broker discards the session on Clean Start 1 and answers Session Present 0 [MQTT-3.1.2-4]", async () => {
  await using b = await startBroker();
  {
    await using c = (await connect(b.port, {
      clientId: "cs1",
      properties: { sessionExpiryInterval: 60 },
    })).client;
    await subscribe(c, "cs1/t", 1);
    c.send({ type: PacketType.Disconnect, reasonCode: 0 });
    await expectBareClose(c);
  }
  const { client, connack } = await connect(b.port, { clientId: "cs1", cleanStart: true });
  await using c = client;
  assert.equal(connack.sessionPresent, false);
  await using p = (await connect(b.port)).client;
  publish(p, "cs1/t", "x", 0);
  assert.equal(await c.silentFor(200), true, "the discarded session's subscription still applies");
});

Deno.test("broker resumes a session on Clean Start 0 with Session Present 1, and creates one with Session Present 0 [MQTT-3.1.2-5] [MQTT-3.1.2-6] [MQTT-3.2.2-3]", async () => {
  await using b = await startBroker();
  const opts = { clientId: "cs0", cleanStart: false, properties: { sessionExpiryInterval: 60 } };
  const first = await connect(b.port, opts);
  assert.equal(first.connack.sessionPresent, false);
  {
    await using c = first.client;
    c.send({ type: PacketType.Disconnect, reasonCode: 0 });
    await expectBareClose(c);
  }
  // An empty session still exists: Session Present 1.
  const second = await connect(b.port, opts);
  await using _c = second.client;
  assert.equal(second.connack.sessionPresent, true);
});

Deno.test("broker answers Session Present 0 with a refusing CONNACK even when a session exists [MQTT-3.2.2-6]", async () => {
  await using b = await startBroker({ maximumQos: 1 });
  const opts = {
    clientId: "sp-refused",
    cleanStart: false,
    properties: { sessionExpiryInterval: 60 },
  };
  {
    await using c = (await connect(b.port, opts)).client;
    c.send({ type: PacketType.Disconnect, reasonCode: 0 });
    await expectBareClose(c);
  }
  await using c = await RawClient.open(b.port);
  c.send(connectPacket({
    ...opts,
    will: { topic: "w", payload: bytes("x"), qos: 2, retain: false },
  }));
  await expectRefusal(c, ReasonCode.QoSNotSupported);
});

Deno.test("broker caps Session Expiry Interval and announces the value it uses in CONNACK (3.2.2.3.2)", async (t) => {
  await using b = await startBroker({ maxSessionExpirySec: 10 });
  await t.step("above the cap: CONNACK carries the cap", async () => {
    const { client, connack } = await connect(b.port, {
      properties: { sessionExpiryInterval: 100 },
    });
    await using _c = client;
    assert.equal(connack.properties?.sessionExpiryInterval, 10);
  });
  await t.step("0xFFFFFFFF is capped too", async () => {
    const { client, connack } = await connect(b.port, {
      properties: { sessionExpiryInterval: 0xffff_ffff },
    });
    await using _c = client;
    assert.equal(connack.properties?.sessionExpiryInterval, 10);
  });
  await t.step("within the cap: no Session Expiry Interval in CONNACK", async () => {
    const { client, connack } = await connect(b.port, { properties: { sessionExpiryInterval: 5 } });
    await using _c = client;
    assert.equal(connack.properties?.sessionExpiryInterval, undefined);
  });
});

Deno.test("broker applies the capped Session Expiry: the session ends when the cap runs out [MQTT-3.1.2-23]", async () => {
  await using b = await startBroker({ maxSessionExpirySec: 1 });
  const opts = {
    clientId: "capped",
    cleanStart: false,
    properties: { sessionExpiryInterval: 100 },
  };
  {
    const { client, connack } = await connect(b.port, opts);
    await using c = client;
    assert.equal(connack.properties?.sessionExpiryInterval, 1);
    c.close();
  }
  await sleep(400);
  {
    const { client, connack } = await connect(b.port, opts);
    await using c = client;
    assert.equal(connack.sessionPresent, true, "session gone before its 1 s expiry");
    c.close();
  }
  await sleep(1_250);
  const { client, connack } = await connect(b.port, opts);
  await using _c = client;
  assert.equal(connack.sessionPresent, false, "session kept beyond the capped expiry");
});

Deno.test("broker closes a client silent for 1.5 x Keep Alive with DISCONNECT 0x8D and publishes its Will [MQTT-3.1.2-22]", async () => {
  await using b = await startBroker();
  await using s = (await connect(b.port)).client;
  await subscribe(s, "ka/will", 1);
  await using c = (await connect(b.port, {
    keepAlive: 1,
    will: { topic: "ka/will", payload: bytes("gone"), qos: 1, retain: false },
  })).client;
  const started = Date.now();
  await expectDisconnect(c, ReasonCode.KeepAliveTimeout, 2_500);
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 1_400, `closed after ${elapsed} ms, before 1.5 x Keep Alive`);
  const will = await s.expect(PacketType.Publish);
  assert.equal(will.topic, "ka/will");
  assert.equal(text(will.payload), "gone");
});

Deno.test("broker keeps a connection whose client sends within the Keep Alive, and answers PINGREQ with PINGRESP [MQTT-3.1.2-22] [MQTT-3.12.4-1]", async () => {
  await using b = await startBroker();
  await using c = (await connect(b.port, { keepAlive: 1 })).client;
  await sleep(600);
  await expectAlive(c);
  await sleep(600);
  await expectAlive(c);
  await sleep(500);
  // 1.7 s after CONNECT: alive only because the PINGREQs counted as activity.
  await expectAlive(c);
});

Deno.test("broker announces a Server Keep Alive cap in CONNACK and uses it instead of the client's value [MQTT-3.2.2-21]", async (t) => {
  await using b = await startBroker({ maxKeepAliveSec: 1 });
  await t.step("client Keep Alive 60 is replaced by 1 and enforced", async () => {
    const { client, connack } = await connect(b.port, { keepAlive: 60 });
    await using c = client;
    assert.equal(connack.properties?.serverKeepAlive, 1);
    await expectDisconnect(c, ReasonCode.KeepAliveTimeout, 2_500);
  });
  await t.step("client Keep Alive 0 is replaced by 1", async () => {
    const { client, connack } = await connect(b.port, { keepAlive: 0 });
    await using _c = client;
    assert.equal(connack.properties?.serverKeepAlive, 1);
  });
  await t.step("client Keep Alive within the cap: no Server Keep Alive", async () => {
    const { client, connack } = await connect(b.port, { keepAlive: 1 });
    await using _c = client;
    assert.equal(connack.properties?.serverKeepAlive, undefined);
  });
});

Deno.test("broker without a Keep Alive cap sends no Server Keep Alive and uses the client's value [MQTT-3.2.2-22]", async () => {
  await using b = await startBroker();
  const { client, connack } = await connect(b.port, { keepAlive: 300 });
  await using _c = client;
  assert.equal(connack.properties?.serverKeepAlive, undefined);
});

Deno.test("broker's CONNACK with default options announces exactly Receive Maximum, Maximum Packet Size and Topic Alias Maximum; no auth or Response Information [MQTT-4.12.0-6] [MQTT-3.1.2-28]", async () => {
  await using b = await startBroker();
  const { client, connack } = await connect(b.port, { clientId: "defaults" });
  await using _c = client;
  assert.equal(connack.reasonCode, 0);
  assert.equal(connack.sessionPresent, false);
  assert.deepEqual(connack.properties, {
    receiveMaximum: 1_024,
    maximumPacketSize: 1_048_576,
    topicAliasMaximum: 64,
  });
});

Deno.test("broker's CONNACK announces every capability set in options [MQTT-3.2.2-9] (3.2.2.3)", async () => {
  await using b = await startBroker({
    receiveMaximum: 10,
    maximumQos: 1,
    retainAvailable: false,
    maxPacketSize: 5_000,
    topicAliasMaximum: 0,
    wildcardSubscriptionAvailable: false,
    subscriptionIdentifierAvailable: false,
    sharedSubscriptionAvailable: false,
  });
  const { client, connack } = await connect(b.port, {
    clientId: "caps",
    properties: { requestResponseInformation: 0 },
  });
  await using _c = client;
  assert.deepEqual(connack.properties, {
    receiveMaximum: 10,
    maximumQoS: 1,
    retainAvailable: 0,
    maximumPacketSize: 5_000,
    wildcardSubscriptionAvailable: 0,
    subscriptionIdentifierAvailable: 0,
    sharedSubscriptionAvailable: 0,
  });
});

Deno.test("broker with Maximum QoS 0 announces Maximum QoS 0 in CONNACK [MQTT-3.2.2-9]", async () => {
  await using b = await startBroker({ maximumQos: 0 });
  const { client, connack } = await connect(b.port);
  await using _c = client;
  assert.equal(connack.properties?.maximumQoS, 0);
});

Deno.test("broker refuses a Will QoS above its Maximum QoS with CONNACK 0x9B [MQTT-3.2.2-12]", async () => {
  await using b = await startBroker({ maximumQos: 1 });
  await using c = await RawClient.open(b.port);
  c.send(connectPacket({ will: { topic: "w", payload: bytes("x"), qos: 2, retain: false } }));
  await expectRefusal(c, ReasonCode.QoSNotSupported);
});

Deno.test("broker refuses Will Retain 1 without retain support with CONNACK 0x9A [MQTT-3.2.2-13]", async () => {
  await using b = await startBroker({ retainAvailable: false });
  await using c = await RawClient.open(b.port);
  c.send(connectPacket({ will: { topic: "w", payload: bytes("x"), qos: 0, retain: true } }));
  await expectRefusal(c, ReasonCode.RetainNotSupported);
});

Deno.test("broker fits a refusing CONNACK into the client's Maximum Packet Size by dropping the Reason String [MQTT-3.2.2-19] [MQTT-3.2.2-20]", async () => {
  await using b = await startBroker({ maximumQos: 1 });
  await using c = await RawClient.open(b.port);
  c.send(connectPacket({
    properties: { maximumPacketSize: 16 },
    will: { topic: "w", payload: bytes("x"), qos: 2, retain: false },
  }));
  const connack = await expectRefusal(c, ReasonCode.QoSNotSupported);
  const size = encodePacket(connack, 5).length;
  assert.ok(size <= 16, `CONNACK of ${size} bytes above the client's Maximum Packet Size 16`);
});

Deno.test("broker refuses an unsupported Authentication Method with CONNACK 0x8C and closes [MQTT-4.12.0-1]", async () => {
  await using b = await startBroker();
  await using c = await RawClient.open(b.port);
  c.send(connectPacket({ properties: { authenticationMethod: "SCRAM-SHA-1" } }));
  const connack = await expectRefusal(c, ReasonCode.BadAuthenticationMethod);
  assert.equal(connack.properties?.authenticationMethod, undefined);
});

Deno.test("broker answers AUTH from a client that sent no Authentication Method with DISCONNECT 0x82 [MQTT-4.12.0-6]", async () => {
  await using b = await startBroker();
  await using c = (await connect(b.port)).client;
  c.send({ type: PacketType.Auth, reasonCode: 0x19, properties: { authenticationMethod: "X" } });
  await expectDisconnect(c, ReasonCode.ProtocolError);
});

/** Auth hooks admitting only password "good". */
function passwordAuth(): AuthHooks {
  return {
    ...defaultAuthHooks(false),
    authenticate: (req) =>
      req.password !== undefined && text(req.password) === "good"
        ? 0
        : ReasonCode.BadUserNameOrPassword,
  };
}

Deno.test("broker refuses bad credentials with CONNACK 0x86 and closes [MQTT-3.1.4-2]", async () => {
  await using b = await startBroker({}, { auth: passwordAuth() });
  await using c = await RawClient.open(b.port);
  c.send(connectPacket({ username: "u", password: bytes("bad") }));
  await expectRefusal(c, ReasonCode.BadUserNameOrPassword);
});

Deno.test("broker takes over a live connection: the old one gets DISCONNECT 0x8E and is closed [MQTT-3.1.4-3]", async () => {
  await using b = await startBroker();
  await using old = (await connect(b.port, { clientId: "taken" })).client;
  const { client, connack } = await connect(b.port, { clientId: "taken" });
  await using fresh = client;
  assert.equal(connack.reasonCode, 0);
  await expectDisconnect(old, ReasonCode.SessionTakenOver);
  await expectAlive(fresh);
});

Deno.test("broker lets a CONNECT that fails authentication leave the live connection with that id alone (3.1.4)", async () => {
  await using b = await startBroker({}, { auth: passwordAuth() });
  await using live = (await connect(b.port, {
    clientId: "keep",
    username: "u",
    password: bytes("good"),
  })).client;
  await using intruder = await RawClient.open(b.port);
  intruder.send(connectPacket({ clientId: "keep", username: "u", password: bytes("bad") }));
  await expectRefusal(intruder, ReasonCode.BadUserNameOrPassword);
  await expectAlive(live);
});

Deno.test("broker lets a malformed CONNECT leave the live connection with that id alone (3.1.4)", async () => {
  await using b = await startBroker();
  await using live = (await connect(b.port, { clientId: "keep2" })).client;
  await using bad = await RawClient.open(b.port);
  bad.sendBytes(connectBytes({ clientId: "keep2" }, 0x03));
  await expectRejectedConnect(bad, ReasonCode.MalformedPacket);
  await expectAlive(live);
});

Deno.test("broker refuses connections beyond maxConnections with CONNACK 0x97 (3.2.2.2)", async () => {
  await using b = await startBroker({ maxConnections: 1 });
  await using first = (await connect(b.port, { clientId: "one" })).client;
  await using second = await RawClient.open(b.port);
  second.send(connectPacket({ clientId: "two" }));
  await expectRefusal(second, ReasonCode.QuotaExceeded);
  await expectAlive(first);
});

Deno.test("broker with Request Problem Information 0 sends no Reason String or User Property on PUBACK or SUBACK [MQTT-3.1.2-29]", async () => {
  await using b = await startBroker();
  await using c = (await connect(b.port, { properties: { requestProblemInformation: 0 } })).client;
  publish(c, "$SYS/forbidden", "x", 1, { packetId: 9 });
  const ack = await c.expect(PacketType.Puback);
  assert.equal(ack.packetId, 9);
  assert.equal(ack.reasonCode, ReasonCode.NotAuthorized);
  assert.equal(ack.properties, undefined);
  c.send({
    type: PacketType.Subscribe,
    packetId: 3,
    subscriptions: [{
      topicFilter: "a/#/b",
      qos: 0,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0,
    }],
  });
  const suback = await c.expect(PacketType.Suback);
  assert.deepEqual(suback.reasonCodes, [ReasonCode.TopicFilterInvalid]);
  assert.equal(suback.properties, undefined);
});

// ------------------------------------------------------------------ helpers

/** Offset of the protocol level byte (just before the Connect Flags). */
function connectFlagsOffsetLevel(connect: Uint8Array): number {
  let off = 1;
  while (connect[off] & 0x80) off++;
  off++;
  const nameLen = (connect[off] << 8) | connect[off + 1];
  return off + 2 + nameLen;
}

function readVbi(buf: Uint8Array, offset: number): { value: number; length: number } {
  let value = 0;
  let mult = 1;
  let length = 0;
  for (;;) {
    const byte = buf[offset + length];
    length++;
    value += (byte & 0x7f) * mult;
    if ((byte & 0x80) === 0) return { value, length };
    mult *= 128;
  }
}

/** Reads whole MQTT frames (raw bytes) off a socket. */
function frameReader(conn: Deno.TcpConn): { next(): Promise<Uint8Array> } {
  let buf = new Uint8Array(0);
  const fill = async () => {
    const chunk = new Uint8Array(65_536);
    const n = await conn.read(chunk);
    if (n === null) throw new Error("connection closed");
    const next = new Uint8Array(buf.length + n);
    next.set(buf);
    next.set(chunk.subarray(0, n), buf.length);
    buf = next;
  };
  return {
    async next() {
      for (;;) {
        if (buf.length >= 2) {
          let i = 1;
          while (i < buf.length && buf[i] & 0x80) i++;
          if (i < buf.length) {
            const { value, length } = readVbi(buf, 1);
            const total = 1 + length + value;
            if (buf.length >= total) {
              const f = buf.slice(0, total);
              buf = buf.slice(total);
              return f;
            }
          }
        }
        await fill();
      }
    },
  };
}

Deno.test("broker acts on nothing from a packet that failed to parse: a malformed PUBLISH is not forwarded [MQTT-4.13.1-1]", async () => {
  await using b = await startBroker();
  await using s = (await connect(b.port)).client;
  await subscribe(s, "parse/t", 0);
  await using c = (await connect(b.port)).client;
  // A well-formed topic and payload, but an unknown property id in between.
  c.sendBytes(frame(0x30, [...rawString(bytes("parse/t")), 0x02, 0x7f, 0x00, 0x68, 0x69]));
  await expectDisconnect(c, ReasonCode.MalformedPacket);
  assert.equal(await s.silentFor(200), true, "the malformed PUBLISH was forwarded");
});

Deno.test("broker sends nothing after its DISCONNECT and processes nothing the client sent after the offending packet [MQTT-4.13.2-1] [MQTT-3.14.4-1]", async () => {
  await using b = await startBroker();
  await using s = (await connect(b.port)).client;
  await subscribe(s, "after/dc", 0);
  await using c = (await connect(b.port, { clientId: "dc-then" })).client;
  const secondConnect = encodePacket(connectPacket({ clientId: "dc-then" }));
  const ping = new Uint8Array([0xc0, 0x00]);
  const pub = encodePacket({
    type: PacketType.Publish,
    topic: "after/dc",
    payload: bytes("late"),
    qos: 0,
    retain: false,
    dup: false,
  });
  c.sendBytes(new Uint8Array([...secondConnect, ...ping, ...pub]));
  await expectDisconnect(c, ReasonCode.ProtocolError);
  assert.equal(await s.silentFor(200), true, "a PUBLISH after the protocol error was processed");
});

Deno.test("broker refuses with CONNACK 0x80 and logs when the authentication hook throws or its promise rejects (3.2.2.2)", async () => {
  for (
    const authenticate of [
      (): number => {
        throw new Error("hook broke");
      },
      (): Promise<number> => Promise.reject(new Error("hook broke")),
    ]
  ) {
    await using b = await startBroker({}, {
      auth: { ...defaultAuthHooks(true), authenticate },
      captureLogs: true,
    });
    await using c = await RawClient.open(b.port);
    c.send(connectPacket({ clientId: "hooked" }));
    await expectRefusal(c, ReasonCode.UnspecifiedError);
    assert.ok(
      b.logs.some((l) => l.includes("authentication hook failed") && l.includes("hook broke")),
      "the failure is logged with its error",
    );
  }
});

Deno.test("broker answers CONNECT, SUBSCRIBE and PUBLISH sent in one write in order, whether authentication decides at once or later (3.1.4, 4.6)", async () => {
  for (const later of [false, true]) {
    await using b = await startBroker({}, {
      auth: {
        ...defaultAuthHooks(true),
        authenticate: () => later ? new Promise((r) => setTimeout(() => r(0), 20)) : 0,
      },
    });
    await using c = await RawClient.open(b.port);
    const bytesOf = (p: Parameters<typeof encodePacket>[0]) => encodePacket(p, 5);
    const parts = [
      bytesOf(connectPacket({ clientId: `pipelined-${later}` })),
      bytesOf({
        type: PacketType.Subscribe,
        packetId: 7,
        subscriptions: [{
          topicFilter: "pipe/t",
          qos: 0,
          noLocal: false,
          retainAsPublished: false,
          retainHandling: 0,
        }],
      }),
      bytesOf({
        type: PacketType.Publish,
        topic: "pipe/t",
        payload: bytes("self"),
        qos: 0,
        retain: false,
        dup: false,
      }),
    ];
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((off, p) => (all.set(p, off), off + p.length), 0);
    c.sendBytes(all);
    assert.equal((await c.expect(PacketType.Connack)).reasonCode, 0);
    assert.equal((await c.expect(PacketType.Suback)).packetId, 7);
    assert.equal(text((await c.expect(PacketType.Publish)).payload), "self");
  }
});

Deno.test("a closed connection's read buffer serves the next connection, and no client sees another's bytes; every buffer is given back", async () => {
  const baseline = readBufferStats().inUse;
  await using b = await startBroker();
  // Half the client ids run past the 64-byte first read buffer: their CONNECT arrives in two reads
  // and the connection moves to a larger buffer, giving its slot back while still connected.
  const open = async (i: number) => {
    const clientId = `slot-reuse-${i}-${"x".repeat(i % 2 === 0 ? 80 : 0)}`;
    const { client } = await connect(b.port, { clientId });
    await subscribe(client, `reuse/${i}`);
    return { client, i };
  };
  const first = await Promise.all(Array.from({ length: 40 }, (_, i) => open(i)));
  // Half of them leave; their slots go to the next 20 connections.
  await Promise.all(first.slice(20).map(({ client }) => client.close()));
  for (let t = 0; t < 100 && readBufferStats().inUse > baseline + 20; t++) await sleep(20);
  const live = [
    ...first.slice(0, 20),
    ...await Promise.all(
      Array.from({ length: 20 }, (_, i) => open(100 + i)),
    ),
  ];
  try {
    const { client: p } = await connect(b.port, { clientId: "slot-reuse-pub" });
    for (const { i } of live) publish(p, `reuse/${i}`, `for ${i}`);
    for (const { client, i } of live) {
      const m = await client.expect(PacketType.Publish);
      assert.equal(m.topic, `reuse/${i}`);
      assert.equal(text(m.payload), `for ${i}`);
    }
    await p.close();
  } finally {
    await Promise.all(live.map(({ client }) => client.close()));
  }
  // The broker ends each read loop once it sees the close: poll briefly for the count to settle.
  for (let t = 0; t < 100 && readBufferStats().inUse !== baseline; t++) await sleep(20);
  assert.equal(readBufferStats().inUse, baseline, "every connection gave its read buffer back");
});
