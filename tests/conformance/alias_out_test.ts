import assert from "node:assert/strict";
import { PacketType } from "../../src/codec/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, RawClient, text } from "../helpers/raw_client.ts";

Deno.test("broker uses topic aliases towards a client only up to its Topic Alias Maximum, first with the topic [MQTT-3.1.2-26]", async () => {
  await using b = await startBroker();
  const { client: sub } = await RawClient.connect(b.port, {
    clientId: "alias-sub",
    properties: { topicAliasMaximum: 1 },
  });
  const { client: pub } = await RawClient.connect(b.port, { clientId: "alias-pub" });
  try {
    sub.send({
      type: PacketType.Subscribe,
      packetId: 1,
      subscriptions: [{
        topicFilter: "al/#",
        qos: 0,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    await sub.expect(PacketType.Suback);
    for (const topic of ["al/one", "al/one", "al/two", "al/one"]) {
      pub.send({
        type: PacketType.Publish,
        topic,
        payload: bytes(topic),
        qos: 0,
        retain: false,
        dup: false,
      });
    }
    const got = [];
    for (let i = 0; i < 4; i++) got.push(await sub.expect(PacketType.Publish));
    // First use: topic and alias 1; second: alias only; a second topic has no alias left; then alias only again.
    assert.deepEqual(got.map((p) => [p.topic, p.properties?.topicAlias, text(p.payload)]), [
      ["al/one", 1, "al/one"],
      ["", 1, "al/one"],
      ["al/two", undefined, "al/two"],
      ["", 1, "al/one"],
    ]);
  } finally {
    await sub.close();
    await pub.close();
  }
});

Deno.test("broker sends no topic alias to a client that announced no Topic Alias Maximum [MQTT-3.1.2-27]", async () => {
  await using b = await startBroker();
  const { client: sub } = await RawClient.connect(b.port, { clientId: "noalias-sub" });
  try {
    sub.send({
      type: PacketType.Subscribe,
      packetId: 1,
      subscriptions: [{
        topicFilter: "na",
        qos: 0,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    await sub.expect(PacketType.Suback);
    for (let i = 0; i < 2; i++) {
      sub.send({
        type: PacketType.Publish,
        topic: "na",
        payload: bytes("x"),
        qos: 0,
        retain: false,
        dup: false,
      });
    }
    for (let i = 0; i < 2; i++) {
      const p = await sub.expect(PacketType.Publish);
      assert.equal(p.topic, "na");
      assert.equal(p.properties?.topicAlias, undefined);
    }
  } finally {
    await sub.close();
  }
});
