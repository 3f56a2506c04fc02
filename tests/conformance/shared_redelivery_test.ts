import assert from "node:assert/strict";
import { PacketType } from "../../src/codec/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, RawClient, text } from "../helpers/raw_client.ts";

function subscribeShared(client: RawClient, qos: 0 | 1 | 2): Promise<unknown> {
  client.send({
    type: PacketType.Subscribe,
    packetId: 1,
    subscriptions: [{
      topicFilter: "$share/g/jobs/#",
      qos,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0,
    }],
  });
  return client.expect(PacketType.Suback);
}

Deno.test("shared subscription: a member's unacknowledged QoS 1 message goes to another member when its session ends (4.8.2)", async () => {
  await using b = await startBroker();
  const { client: first } = await RawClient.connect(b.port, { clientId: "member-a" });
  await subscribeShared(first, 1);
  const { client: second } = await RawClient.connect(b.port, { clientId: "member-b" });
  await subscribeShared(second, 1);
  const { client: pub } = await RawClient.connect(b.port, { clientId: "producer" });
  try {
    pub.send({
      type: PacketType.Publish,
      topic: "jobs/1",
      payload: bytes("job-1"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 1,
    });
    await pub.expect(PacketType.Puback);
    // Round robin gives the first message to the first member; it never acknowledges it.
    const got = await first.expect(PacketType.Publish);
    assert.equal(text(got.payload), "job-1");
    assert.equal(await second.silentFor(100), true);
    // Its session (expiry 0) ends with the connection: the message goes to the other member.
    await first.close();
    const again = await second.expect(PacketType.Publish);
    assert.equal(text(again.payload), "job-1");
    assert.equal(again.qos, 1);
    assert.equal(b.broker.metrics.sharedRedelivered, 1);
  } finally {
    await first.close();
    await second.close();
    await pub.close();
  }
});

Deno.test("shared subscription: a QoS 2 message already sent to a member whose session ends is NOT sent to another member [MQTT-4.8.2-5]", async () => {
  await using b = await startBroker();
  const { client: first } = await RawClient.connect(b.port, { clientId: "q2-a" });
  await subscribeShared(first, 2);
  const { client: second } = await RawClient.connect(b.port, { clientId: "q2-b" });
  await subscribeShared(second, 2);
  const { client: pub } = await RawClient.connect(b.port, { clientId: "q2-producer" });
  try {
    pub.send({
      type: PacketType.Publish,
      topic: "jobs/2",
      payload: bytes("job-2"),
      qos: 2,
      retain: false,
      dup: false,
      packetId: 1,
    });
    await pub.expect(PacketType.Pubrec);
    assert.equal((await first.expect(PacketType.Publish)).qos, 2);
    await first.close();
    assert.equal(await second.silentFor(300), true);
    assert.equal(b.broker.metrics.sharedRedelivered, 0);
  } finally {
    await first.close();
    await second.close();
    await pub.close();
  }
});
