import assert from "node:assert/strict";
import { PacketType } from "../../src/codec/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, RawClient } from "../helpers/raw_client.ts";

Deno.test("broker refuses CONNECTs beyond max_connect_rate_per_address with CONNACK 0x9F and counts them", async () => {
  await using b = await startBroker({ maxConnectRatePerAddress: 2 });
  const clients: RawClient[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      clients.push((await RawClient.connect(b.port, { clientId: `rate-${i}` })).client);
    }
    const third = await RawClient.open(b.port);
    clients.push(third);
    third.send({
      type: PacketType.Connect,
      protocolName: "MQTT",
      protocolVersion: 5,
      cleanStart: true,
      keepAlive: 0,
      clientId: "rate-2",
    });
    const connack = await third.expect(PacketType.Connack);
    assert.equal(connack.reasonCode, 0x9f);
    assert.equal(connack.sessionPresent, false);
    assert.equal((await third.closedWithin()).closed, true);
    assert.equal(b.broker.metrics.connectRateRefused, 1);
    // The earlier clients keep working.
    clients[0].send({ type: PacketType.Pingreq });
    await clients[0].expect(PacketType.Pingresp);
  } finally {
    for (const c of clients) await c.close();
  }
});

Deno.test("broker refuses a 3.1.1 CONNECT beyond the connect rate with return code 3 (server unavailable)", async () => {
  await using b = await startBroker({ maxConnectRatePerAddress: 1 });
  const { client: first } = await RawClient.connect(b.port, { clientId: "r1", protocolVersion: 4 });
  const second = await RawClient.open(b.port, 4);
  try {
    second.send({
      type: PacketType.Connect,
      protocolName: "MQTT",
      protocolVersion: 4,
      cleanStart: true,
      keepAlive: 0,
      clientId: "r2",
    });
    const connack = await second.expect(PacketType.Connack);
    assert.equal(connack.reasonCode, 3);
  } finally {
    await first.close();
    await second.close();
  }
});

Deno.test("broker ends a client publishing faster than max_publish_rate_per_client with DISCONNECT 0x96, others unaffected", async () => {
  await using b = await startBroker({ maxPublishRatePerClient: 5 });
  const { client: fast } = await RawClient.connect(b.port, { clientId: "fast" });
  const { client: calm } = await RawClient.connect(b.port, { clientId: "calm" });
  try {
    for (let i = 0; i < 20; i++) {
      fast.send({
        type: PacketType.Publish,
        topic: "r/x",
        payload: bytes(`${i}`),
        qos: 0,
        retain: false,
        dup: false,
      });
    }
    const { closed, packets } = await fast.closedWithin();
    assert.equal(closed, true);
    const disconnect = packets.find((p) => p.type === PacketType.Disconnect);
    assert.equal(
      disconnect && "reasonCode" in disconnect ? disconnect.reasonCode : undefined,
      0x96,
    );
    assert.equal(b.broker.metrics.publishRateDisconnects, 1);
    calm.send({
      type: PacketType.Publish,
      topic: "r/y",
      payload: bytes("ok"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 1,
    });
    const ack = await calm.expect(PacketType.Puback);
    assert.equal(ack.packetId, 1);
  } finally {
    await fast.close();
    await calm.close();
  }
});

Deno.test("broker refuses topics and filters beyond max_topic_length / max_topic_levels (PUBACK 0x90, SUBACK 0x8F), counts them, and keeps the client", async () => {
  await using b = await startBroker({ maxTopicLength: 16, maxTopicLevels: 3 });
  const { client } = await RawClient.connect(b.port, { clientId: "limits" });
  try {
    client.send({
      type: PacketType.Publish,
      topic: "a/b/c/d",
      payload: bytes("x"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 1,
    });
    assert.equal((await client.expect(PacketType.Puback)).reasonCode, 0x90);
    client.send({
      type: PacketType.Publish,
      topic: "x".repeat(17),
      payload: bytes("x"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 2,
    });
    assert.equal((await client.expect(PacketType.Puback)).reasonCode, 0x90);
    client.send({
      type: PacketType.Subscribe,
      packetId: 3,
      subscriptions: [
        {
          topicFilter: "a/+/c/#",
          qos: 0,
          noLocal: false,
          retainAsPublished: false,
          retainHandling: 0,
        },
        {
          topicFilter: "a/+/c",
          qos: 0,
          noLocal: false,
          retainAsPublished: false,
          retainHandling: 0,
        },
      ],
    });
    assert.deepEqual((await client.expect(PacketType.Suback)).reasonCodes, [0x8f, 0x00]);
    assert.equal(b.broker.metrics.invalidTopicRefused, 3);
    client.send({
      type: PacketType.Publish,
      topic: "a/b/c",
      payload: bytes("ok"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 4,
    });
    assert.equal((await client.expect(PacketType.Publish)).topic, "a/b/c");
  } finally {
    await client.close();
  }
});
