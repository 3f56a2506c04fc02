/**
 * Conformance over real TCP sockets: session state kept across connections,
 * resent on resumption and removed at expiry (checklist §8, resend rules of §5).
 */
import assert from "node:assert/strict";
import { type ConnectPacket, PacketType, ReasonCode } from "../../src/codec/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, type RawClient, text } from "../helpers/raw_client.ts";
import {
  connect,
  expectBareClose,
  expectDisconnect,
  publish,
  publishQos1,
  sleep,
  sub,
  subscribe,
} from "./connect_util.ts";

/** CONNECT fields of a persistent session. */
function persistent(clientId: string, expirySec = 60): Partial<ConnectPacket> {
  return { clientId, cleanStart: false, properties: { sessionExpiryInterval: expirySec } };
}

/** Ends a connection with DISCONNECT 0x00 and waits for the close. */
async function leave(c: RawClient): Promise<void> {
  c.send({ type: PacketType.Disconnect, reasonCode: 0 });
  await expectBareClose(c);
  await c.close();
}

Deno.test("broker keeps subscriptions with their options and Subscription Identifier across a reconnection (4.1)", async () => {
  await using b = await startBroker();
  {
    const { client } = await connect(b.port, persistent("s-subs"));
    assert.deepEqual(
      await subscribe(client, [sub("keep/+", 1)], 1, { subscriptionIdentifiers: [7] }),
      [1],
    );
    await leave(client);
  }
  const again = await connect(b.port, persistent("s-subs"));
  await using c = again.client;
  assert.equal(again.connack.sessionPresent, true);
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "keep/x", "hello");
  const m = await c.expect(PacketType.Publish);
  assert.equal(m.topic, "keep/x");
  assert.equal(m.qos, 1);
  assert.deepEqual(m.properties?.subscriptionIdentifiers, [7]);
});

Deno.test("broker queues QoS 1 and 2 messages while the client is offline and delivers them in order on reconnection; QoS 0 is not queued (4.1, ours)", async () => {
  await using b = await startBroker();
  {
    const { client } = await connect(b.port, persistent("s-queue"));
    await subscribe(client, "q/#", 2);
    await leave(client);
  }
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "q/a", "m1", 1);
  publish(p, "q/a", "m0", 0);
  publish(p, "q/a", "m2", 2, { packetId: 2 });
  assert.equal((await p.expect(PacketType.Pubrec)).packetId, 2);
  p.send({ type: PacketType.Pubrel, packetId: 2, reasonCode: 0 });
  assert.equal((await p.expect(PacketType.Pubcomp)).packetId, 2);
  await publishQos1(p, "q/a", "m3", 3);

  const again = await connect(b.port, persistent("s-queue"));
  await using c = again.client;
  assert.equal(again.connack.sessionPresent, true);
  const got: [string, number][] = [];
  for (let i = 0; i < 3; i++) {
    const m = await c.expect(PacketType.Publish);
    got.push([text(m.payload), m.qos]);
    assert.equal(m.dup, false, "a first delivery carried DUP=1");
  }
  assert.deepEqual(got, [["m1", 1], ["m2", 2], ["m3", 1]]);
  assert.equal(await c.silentFor(150), true, "a QoS 0 message was queued for the offline session");
});

Deno.test("broker resends unacknowledged QoS 1 and 2 PUBLISH on resumption with DUP=1, the same Packet Identifiers and in order [MQTT-4.4.0-1] [MQTT-3.3.1-1]", async () => {
  await using b = await startBroker();
  const { client: first } = await connect(b.port, persistent("s-resend"));
  await subscribe(first, "r/#", 2);
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "r/one", "first", 1);
  publish(p, "r/two", "second", 2, { packetId: 2 });
  await p.expect(PacketType.Pubrec);
  await publishQos1(p, "r/three", "third", 3);
  const sent: { id: number; topic: string; qos: number }[] = [];
  for (let i = 0; i < 3; i++) {
    const m = await first.expect(PacketType.Publish);
    assert.equal(m.dup, false);
    sent.push({ id: m.packetId!, topic: m.topic, qos: m.qos });
  }
  await first.close(); // no acknowledgements

  const again = await connect(b.port, persistent("s-resend"));
  await using c = again.client;
  assert.equal(again.connack.sessionPresent, true);
  for (const expected of sent) {
    const m = await c.expect(PacketType.Publish);
    assert.equal(m.dup, true, `resent PUBLISH ${expected.id} without DUP=1`);
    assert.deepEqual({ id: m.packetId, topic: m.topic, qos: m.qos }, expected);
  }
  // Acknowledged now: nothing more is resent.
  c.send({ type: PacketType.Puback, packetId: sent[0].id, reasonCode: 0 });
  c.send({ type: PacketType.Pubrec, packetId: sent[1].id, reasonCode: 0 });
  const rel = await c.expect(PacketType.Pubrel);
  assert.equal(rel.packetId, sent[1].id);
  c.send({ type: PacketType.Pubcomp, packetId: sent[1].id, reasonCode: 0 });
  c.send({ type: PacketType.Puback, packetId: sent[2].id, reasonCode: 0 });
  assert.equal(await c.silentFor(200), true);
});

Deno.test("broker resends only the PUBREL for a QoS 2 message whose PUBREC it received, on resumption [MQTT-4.4.0-1] (4.3.3)", async () => {
  await using b = await startBroker();
  const { client: first } = await connect(b.port, persistent("s-pubrel"));
  await subscribe(first, "rel/t", 2);
  await using p = (await connect(b.port)).client;
  publish(p, "rel/t", "x", 2, { packetId: 4 });
  await p.expect(PacketType.Pubrec);
  const m = await first.expect(PacketType.Publish);
  first.send({ type: PacketType.Pubrec, packetId: m.packetId!, reasonCode: 0 });
  assert.equal((await first.expect(PacketType.Pubrel)).packetId, m.packetId);
  await first.close(); // no PUBCOMP

  const again = await connect(b.port, persistent("s-pubrel"));
  await using c = again.client;
  assert.equal(again.connack.sessionPresent, true);
  const rel = await c.expect(PacketType.Pubrel);
  assert.equal(rel.packetId, m.packetId);
  c.send({ type: PacketType.Pubcomp, packetId: rel.packetId, reasonCode: 0 });
  assert.equal(await c.silentFor(200), true, "the PUBLISH was resent after its PUBREC");
});

Deno.test("broker keeps an inbound QoS 2 Packet Identifier awaiting PUBREL across a reconnection: no second delivery, PUBREL completes it (4.1) [MQTT-4.3.3-10]", async () => {
  await using b = await startBroker();
  await using s = (await connect(b.port)).client;
  await subscribe(s, "in2/t", 0);
  {
    const { client } = await connect(b.port, persistent("s-in2"));
    publish(client, "in2/t", "once", 2, { packetId: 5 });
    assert.equal((await client.expect(PacketType.Pubrec)).packetId, 5);
    await client.close();
  }
  assert.equal(text((await s.expect(PacketType.Publish)).payload), "once");
  const again = await connect(b.port, persistent("s-in2"));
  await using c = again.client;
  assert.equal(again.connack.sessionPresent, true);
  publish(c, "in2/t", "once", 2, { packetId: 5, dup: true });
  const rec = await c.expect(PacketType.Pubrec);
  assert.equal(rec.packetId, 5);
  assert.equal(rec.reasonCode, 0);
  c.send({ type: PacketType.Pubrel, packetId: 5, reasonCode: 0 });
  const comp = await c.expect(PacketType.Pubcomp);
  assert.equal(comp.packetId, 5);
  assert.equal(comp.reasonCode, 0, "the stored Packet Identifier was lost with the connection");
  assert.equal(await s.silentFor(150), true, "the re-sent QoS 2 PUBLISH was delivered again");
});

Deno.test("broker removes the session when its expiry runs out: Session Present 0, no subscriptions, no queued messages [MQTT-3.1.2-23] (4.1)", async () => {
  await using b = await startBroker();
  {
    const { client } = await connect(b.port, persistent("s-expire", 1));
    await subscribe(client, "exp/t", 1);
    await client.close();
  }
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "exp/t", "queued");
  await sleep(1_300);
  const again = await connect(b.port, persistent("s-expire", 1));
  await using c = again.client;
  assert.equal(again.connack.sessionPresent, false);
  assert.equal(await c.silentFor(150), true, "a queued message survived session expiry");
  await publishQos1(p, "exp/t", "after", 2);
  assert.equal(await c.silentFor(150), true, "a subscription survived session expiry");
});

Deno.test("broker keeps the session until its expiry: Session Present 1 on reconnection within it [MQTT-3.1.2-23]", async () => {
  await using b = await startBroker();
  {
    const { client } = await connect(b.port, persistent("s-within", 1));
    await client.close();
  }
  await sleep(600);
  const again = await connect(b.port, persistent("s-within", 1));
  await using _c = again.client;
  assert.equal(again.connack.sessionPresent, true);
});

Deno.test("broker ends a session with Session Expiry 0 when the connection closes [MQTT-3.1.2-23] [MQTT-4.1.0-2]", async () => {
  await using b = await startBroker();
  {
    const { client } = await connect(b.port, { clientId: "s-zero", cleanStart: false });
    await subscribe(client, "zero/t", 1);
    await client.close();
  }
  await sleep(50);
  await using p = (await connect(b.port)).client;
  publish(p, "zero/t", "lost", 1, { packetId: 1 });
  const ack = await p.expect(PacketType.Puback);
  assert.equal(ack.reasonCode, ReasonCode.NoMatchingSubscribers);
  const again = await connect(b.port, { clientId: "s-zero", cleanStart: false });
  await using c = again.client;
  assert.equal(again.connack.sessionPresent, false);
  assert.equal(await c.silentFor(150), true);
});

Deno.test("broker never discards session state while the connection is open, whatever the expiry [MQTT-4.1.0-1]", async () => {
  await using b = await startBroker();
  const first = await connect(b.port, persistent("s-open", 1));
  await using c = first.client;
  await subscribe(c, "open/t", 1);
  await sleep(1_300);
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "open/t", "still here");
  assert.equal(text((await c.expect(PacketType.Publish)).payload), "still here");
});

Deno.test("broker takes the Session Expiry Interval of DISCONNECT: 0 ends the session at the close (3.14.2.2.2)", async () => {
  await using b = await startBroker();
  {
    const { client } = await connect(b.port, persistent("s-disc0", 60));
    client.send({
      type: PacketType.Disconnect,
      reasonCode: 0,
      properties: { sessionExpiryInterval: 0 },
    });
    await expectBareClose(client);
    await client.close();
  }
  const again = await connect(b.port, persistent("s-disc0", 60));
  await using _c = again.client;
  assert.equal(again.connack.sessionPresent, false);
});

Deno.test("broker takes the Session Expiry Interval of DISCONNECT: a longer one keeps the session past the CONNECT's (3.14.2.2.2)", async () => {
  await using b = await startBroker();
  {
    const { client } = await connect(b.port, persistent("s-disc60", 1));
    client.send({
      type: PacketType.Disconnect,
      reasonCode: 0,
      properties: { sessionExpiryInterval: 60 },
    });
    await expectBareClose(client);
    await client.close();
  }
  await sleep(1_300);
  const again = await connect(b.port, persistent("s-disc60", 1));
  await using _c = again.client;
  assert.equal(again.connack.sessionPresent, true);
});

Deno.test("broker forgets topic aliases at disconnect even when the session resumes [MQTT-3.3.2-7]", async () => {
  await using b = await startBroker();
  {
    const { client } = await connect(b.port, persistent("s-alias"));
    publish(client, "alias/t", "set", 1, { packetId: 1, properties: { topicAlias: 1 } });
    await client.expect(PacketType.Puback);
    await leave(client);
  }
  const again = await connect(b.port, persistent("s-alias"));
  await using c = again.client;
  assert.equal(again.connack.sessionPresent, true);
  publish(c, "", "use", 1, { packetId: 2, properties: { topicAlias: 1 } });
  await expectDisconnect(c, ReasonCode.ProtocolError);
});

Deno.test("broker bounds an offline session's queue and keeps the oldest messages, counting the drops (4.1.1, ours)", async () => {
  await using b = await startBroker({ maxQueuedMessages: 2 });
  {
    const { client } = await connect(b.port, persistent("s-bound"));
    await subscribe(client, "bound/t", 1);
    await leave(client);
  }
  await using p = (await connect(b.port)).client;
  for (let i = 1; i <= 3; i++) await publishQos1(p, "bound/t", `m${i}`, i);
  assert.equal(b.broker.metrics.queueFullDropped, 1);
  const again = await connect(b.port, persistent("s-bound"));
  await using c = again.client;
  const got = [];
  for (let i = 0; i < 2; i++) got.push(text((await c.expect(PacketType.Publish)).payload));
  assert.deepEqual(got, ["m1", "m2"]);
  assert.equal(await c.silentFor(150), true, "more than maxQueuedMessages were queued");
});

Deno.test("broker keeps retained messages when the publisher's session ends: they are not session state (4.1)", async () => {
  await using b = await startBroker();
  {
    const { client } = await connect(b.port, { clientId: "s-ret" });
    publish(client, "ret/t", "kept", 1, { packetId: 1, retain: true });
    await client.expect(PacketType.Puback);
    await leave(client);
  }
  await using c = (await connect(b.port)).client;
  await subscribe(c, "ret/t", 1);
  const m = await c.expect(PacketType.Publish);
  assert.equal(m.retain, true);
  assert.deepEqual(m.payload, bytes("kept"));
});

Deno.test("broker starts Keep Alive afresh on each connection: Keep Alive 0 after a connection with Keep Alive 1 never times out (4.1) (3.1.2.10)", async () => {
  await using b = await startBroker();
  {
    const { client } = await connect(b.port, { ...persistent("s-ka"), keepAlive: 1 });
    await leave(client);
  }
  const again = await connect(b.port, { ...persistent("s-ka"), keepAlive: 0 });
  await using c = again.client;
  assert.equal(again.connack.sessionPresent, true);
  await sleep(1_700);
  c.send({ type: PacketType.Pingreq });
  await c.expect(PacketType.Pingresp);
});

Deno.test("broker starts the client's Maximum Packet Size afresh on each connection (4.1) [MQTT-3.1.2-24]", async () => {
  await using b = await startBroker();
  {
    const { client } = await connect(b.port, {
      ...persistent("s-mps"),
      properties: { sessionExpiryInterval: 60, maximumPacketSize: 64 },
    });
    await subscribe(client, "mps/t", 1);
    await leave(client);
  }
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "mps/t", "x".repeat(200));
  const again = await connect(b.port, persistent("s-mps"));
  await using c = again.client;
  const m = await c.expect(PacketType.Publish);
  assert.equal(m.payload.length, 200, "the old connection's Maximum Packet Size still applied");
});

Deno.test("broker starts the client's Receive Maximum afresh on each connection (4.1, 4.9)", async () => {
  await using b = await startBroker();
  {
    const { client } = await connect(b.port, {
      ...persistent("s-rm"),
      properties: { sessionExpiryInterval: 60, receiveMaximum: 1 },
    });
    await subscribe(client, "rm/t", 1);
    await leave(client);
  }
  await using p = (await connect(b.port)).client;
  for (let i = 1; i <= 3; i++) await publishQos1(p, "rm/t", `m${i}`, i);
  const again = await connect(b.port, {
    ...persistent("s-rm"),
    properties: { sessionExpiryInterval: 60, receiveMaximum: 10 },
  });
  await using c = again.client;
  const got = [];
  for (let i = 0; i < 3; i++) got.push(text((await c.expect(PacketType.Publish)).payload));
  assert.deepEqual(got, ["m1", "m2", "m3"]);
});

Deno.test("broker resends the in-flight messages to the connection that took the session over, with DUP=1 and the same ids [MQTT-4.4.0-1] [MQTT-3.1.4-3]", async () => {
  await using b = await startBroker();
  await using old = (await connect(b.port, persistent("s-take"))).client;
  await subscribe(old, "take/t", 1);
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "take/t", "in flight");
  const m = await old.expect(PacketType.Publish);
  const fresh = await connect(b.port, persistent("s-take"));
  await using c = fresh.client;
  assert.equal(fresh.connack.sessionPresent, true);
  await expectDisconnect(old, ReasonCode.SessionTakenOver);
  const r = await c.expect(PacketType.Publish);
  assert.equal(r.dup, true);
  assert.equal(r.packetId, m.packetId);
  assert.equal(text(r.payload), "in flight");
});

Deno.test("broker accepts the short PUBACK / PUBREC / PUBCOMP forms (Remaining Length 2 and 3) as acknowledgements (3.4.2, 3.5.2, 3.7.2)", async () => {
  await using b = await startBroker();
  const { client: first } = await connect(b.port, persistent("s-short"));
  await subscribe(first, "short/#", 2);
  await using p = (await connect(b.port)).client;
  await publishQos1(p, "short/1", "a", 1);
  await publishQos1(p, "short/2", "b", 2);
  publish(p, "short/3", "c", 2, { packetId: 3 });
  await p.expect(PacketType.Pubrec);
  const ids: number[] = [];
  for (let i = 0; i < 3; i++) ids.push((await first.expect(PacketType.Publish)).packetId!);
  const id = (n: number) => [n >> 8, n & 0xff];
  first.sendBytes(new Uint8Array([0x40, 0x02, ...id(ids[0])])); // PUBACK, RL 2
  first.sendBytes(new Uint8Array([0x40, 0x03, ...id(ids[1]), 0x00])); // PUBACK, RL 3
  first.sendBytes(new Uint8Array([0x50, 0x03, ...id(ids[2]), 0x00])); // PUBREC, RL 3
  assert.equal((await first.expect(PacketType.Pubrel)).packetId, ids[2]);
  first.sendBytes(new Uint8Array([0x70, 0x02, ...id(ids[2])])); // PUBCOMP, RL 2
  await sleep(100);
  await first.close();
  const again = await connect(b.port, persistent("s-short"));
  await using c = again.client;
  assert.equal(again.connack.sessionPresent, true);
  assert.equal(await c.silentFor(200), true, "a short-form acknowledgement was not taken");
});

Deno.test("broker routes to the connection and session that hold the client id now: after a takeover the new connection gets the messages, after a Clean Start the old subscriptions are gone [MQTT-3.1.4-3] [MQTT-3.1.2-4]", async () => {
  await using b = await startBroker();
  const { client: p } = await connect(b.port, { clientId: "p" });
  const { client: first } = await connect(b.port, persistent("c"));
  try {
    await subscribe(first, "old/t");
    // Takeover: the session (and its subscription) moves to the new connection.
    const { client: second, connack } = await connect(b.port, persistent("c"));
    try {
      assert.equal(connack.sessionPresent, true);
      await expectDisconnect(first, ReasonCode.SessionTakenOver);
      publish(p, "old/t", "to-second");
      const m = await second.expect(PacketType.Publish);
      assert.equal(text(m.payload), "to-second");
      await leave(second);
    } finally {
      await second.close();
    }
    // Clean Start: a new session; the old one's subscription no longer routes anything.
    await using third = (await connect(b.port, { clientId: "c", cleanStart: true })).client;
    await subscribe(third, "new/t");
    publish(p, "old/t", "stale");
    publish(p, "new/t", "fresh");
    const m = await third.expect(PacketType.Publish);
    assert.deepEqual([m.topic, text(m.payload)], ["new/t", "fresh"]);
    assert.equal(await third.silentFor(100), true);
  } finally {
    await first.close();
    await p.close();
  }
});
