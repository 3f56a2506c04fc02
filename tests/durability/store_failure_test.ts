import assert from "node:assert/strict";
import { PacketType } from "../../src/codec/mod.ts";
import { MemorySessionStore } from "../../src/session/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, RawClient } from "../helpers/raw_client.ts";

/** A store whose commits fail, as a full disk or a locked file would make them. */
class FailingStore extends MemorySessionStore {
  failing = false;
  override get dirty(): boolean {
    return this.failing;
  }
  override flush(): Promise<void> {
    return this.failing ? Promise.reject(new Error("disk full")) : Promise.resolve();
  }
}

Deno.test("a failing store commit is never silent: QoS 1/2 publishers get 0x80 instead of success, SUBSCRIBE gets 0x80", async () => {
  const store = new FailingStore();
  await using b = await startBroker({}, { store });
  const { client } = await RawClient.connect(b.port, {
    clientId: "victim",
    cleanStart: false,
    properties: { sessionExpiryInterval: 60 },
  });
  try {
    store.failing = true;
    client.send({
      type: PacketType.Publish,
      topic: "f/1",
      payload: bytes("x"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 1,
    });
    const puback = await client.expect(PacketType.Puback);
    assert.equal(puback.reasonCode, 0x80);
    client.send({
      type: PacketType.Publish,
      topic: "f/2",
      payload: bytes("x"),
      qos: 2,
      retain: false,
      dup: false,
      packetId: 2,
    });
    const pubrec = await client.expect(PacketType.Pubrec);
    assert.equal(pubrec.reasonCode, 0x80);
    client.send({
      type: PacketType.Subscribe,
      packetId: 3,
      subscriptions: [{
        topicFilter: "f/#",
        qos: 1,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    const suback = await client.expect(PacketType.Suback);
    assert.deepEqual(suback.reasonCodes, [0x80]);
  } finally {
    store.failing = false;
    await client.close();
  }
});
