import assert from "node:assert/strict";
import { PacketType } from "../../src/codec/mod.ts";
import { KvSessionStore } from "../../src/session/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, RawClient } from "../helpers/raw_client.ts";

Deno.test("housekeeping removes expired messages of offline sessions and expired retained messages from the KV store", async () => {
  const dir = await Deno.makeTempDir({ prefix: "housekeeping-" });
  const dataPath = `${dir}/broker.db`;
  try {
    {
      await using b = await startBroker({ dataPath });
      const { client: sub } = await RawClient.connect(b.port, {
        clientId: "offline-sub",
        cleanStart: false,
        properties: { sessionExpiryInterval: 3600 },
      });
      sub.send({
        type: PacketType.Subscribe,
        packetId: 1,
        subscriptions: [{
          topicFilter: "hk/#",
          qos: 1,
          noLocal: false,
          retainAsPublished: false,
          retainHandling: 0,
        }],
      });
      await sub.expect(PacketType.Suback);
      sub.send({ type: PacketType.Disconnect, reasonCode: 0 });
      await sub.closedWithin();
      await sub.close();
      const { client: pub } = await RawClient.connect(b.port, { clientId: "hk-pub" });
      try {
        pub.send({
          type: PacketType.Publish,
          topic: "hk/short",
          payload: bytes("expires"),
          qos: 1,
          retain: true,
          dup: false,
          packetId: 1,
          properties: { messageExpiryInterval: 1 },
        });
        await pub.expect(PacketType.Puback);
        pub.send({
          type: PacketType.Publish,
          topic: "hk/long",
          payload: bytes("stays"),
          qos: 1,
          retain: false,
          dup: false,
          packetId: 2,
        });
        await pub.expect(PacketType.Puback);
      } finally {
        await pub.close();
      }
      // Past the expiry; the sweep (50 ms in tests) drops the expired head of the offline queue.
      await new Promise((r) => setTimeout(r, 1_300));
      // A wildcard subscribe reaches the expired retained message and drops it.
      const { client: probe } = await RawClient.connect(b.port, { clientId: "probe" });
      probe.send({
        type: PacketType.Subscribe,
        packetId: 1,
        subscriptions: [{
          topicFilter: "hk/+",
          qos: 0,
          noLocal: false,
          retainAsPublished: false,
          retainHandling: 0,
        }],
      });
      await probe.expect(PacketType.Suback);
      assert.equal(await probe.silentFor(150), true, "no expired retained message is delivered");
      await probe.close();
      assert.ok(b.broker.metrics.expiredDropped >= 1);
    }
    const store = await KvSessionStore.open(dataPath);
    try {
      const state = await store.load();
      const session = state.sessions.find((s) => s.record.clientId === "offline-sub");
      assert.ok(session);
      assert.deepEqual(session.queue.map((d) => d.message.topic), ["hk/long"]);
      assert.equal(state.retained.length, 0);
    } finally {
      await store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
