import assert from "node:assert/strict";
import { PacketType } from "../../src/codec/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, RawClient, text } from "../helpers/raw_client.ts";

Deno.test("broker routes a QoS 1 PUBLISH to a subscriber and acknowledges it [MQTT-4.3.2-4]", async () => {
  await using b = await startBroker();
  const { client: sub } = await RawClient.connect(b.port, { clientId: "sub" });
  const { client: pub } = await RawClient.connect(b.port, { clientId: "pub" });
  try {
    sub.send({
      type: PacketType.Subscribe,
      packetId: 1,
      subscriptions: [{
        topicFilter: "a/+",
        qos: 1,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    const suback = await sub.expect(PacketType.Suback);
    assert.deepEqual(suback.reasonCodes, [1]);
    pub.send({
      type: PacketType.Publish,
      topic: "a/b",
      payload: bytes("hi"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 7,
    });
    const puback = await pub.expect(PacketType.Puback);
    assert.equal(puback.packetId, 7);
    const msg = await sub.expect(PacketType.Publish);
    assert.equal(msg.topic, "a/b");
    assert.equal(text(msg.payload), "hi");
    assert.equal(msg.qos, 1);
    sub.send({ type: PacketType.Puback, packetId: msg.packetId!, reasonCode: 0 });
    sub.send({ type: PacketType.Disconnect, reasonCode: 0 });
    pub.send({ type: PacketType.Disconnect, reasonCode: 0 });
    assert.equal((await sub.closedWithin()).closed, true);
    assert.equal((await pub.closedWithin()).closed, true);
  } finally {
    await sub.close();
    await pub.close();
  }
});

Deno.test("broker closes with DISCONNECT 0x82 on a second CONNECT [MQTT-3.1.0-2]", async () => {
  await using b = await startBroker();
  const { client } = await RawClient.connect(b.port, { clientId: "twice" });
  try {
    client.send({
      type: PacketType.Connect,
      protocolName: "MQTT",
      protocolVersion: 5,
      cleanStart: true,
      keepAlive: 0,
      clientId: "twice",
    });
    const { closed, packets } = await client.closedWithin();
    assert.equal(closed, true);
    assert.equal(packets.length, 1);
    assert.equal(packets[0].type, PacketType.Disconnect);
    assert.equal((packets[0] as { reasonCode: number }).reasonCode, 0x82);
  } finally {
    await client.close();
  }
});
