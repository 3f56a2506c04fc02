import assert from "node:assert/strict";
import { PacketType } from "../../src/codec/mod.ts";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, RawClient } from "../helpers/raw_client.ts";

/** A port nothing listens on right now (the metrics endpoint has no "pick one" setting). */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test("metrics endpoint: /metrics reports live counters and levels of a running broker", async () => {
  await using b = await startBroker({ metricsPort: freePort() });
  const { client } = await RawClient.connect(b.port, { clientId: "metered" });
  try {
    client.send({
      type: PacketType.Publish,
      topic: "m/1",
      payload: bytes("x"),
      qos: 1,
      retain: true,
      dup: false,
      packetId: 1,
    });
    await client.expect(PacketType.Puback);
    const text = await (await fetch(`http://127.0.0.1:${b.broker.metricsPort}/metrics`)).text();
    assert.match(text, /^mqtt_connections_current 1$/m);
    assert.match(text, /^mqtt_messages_received 1$/m);
    assert.match(text, /^# TYPE mqtt_sessions gauge\nmqtt_sessions 1$/m);
    assert.match(text, /^mqtt_retained_messages 1$/m);
    // Process-wide: other tests in this process may hold slots too, but this client holds one.
    const slots = Number(/^mqtt_read_buffer_slots_in_use (\d+)$/m.exec(text)?.[1]);
    assert.ok(slots >= 1, `read buffer slots in use: ${slots}`);
    assert.match(text, /^# TYPE mqtt_read_buffer_slots_free gauge$/m);
  } finally {
    await client.close();
  }
});

Deno.test("$SYS topics: retained broker state for $SYS subscribers, never matched by # [MQTT-4.7.2-1]", async () => {
  await using b = await startBroker({ sysIntervalSec: 1 });
  const { client } = await RawClient.connect(b.port, { clientId: "sys-reader" });
  try {
    const subscribe = (packetId: number, topicFilter: string) =>
      client.send({
        type: PacketType.Subscribe,
        packetId,
        subscriptions: [{
          topicFilter,
          qos: 0,
          noLocal: false,
          retainAsPublished: false,
          retainHandling: 0,
        }],
      });
    subscribe(1, "#");
    await client.expect(PacketType.Suback);
    subscribe(2, "$SYS/broker/clients/connected");
    await client.expect(PacketType.Suback);
    const first = await client.expect(PacketType.Publish);
    assert.equal(first.topic, "$SYS/broker/clients/connected", "# delivered no $SYS message");
    assert.equal(first.retain, true);
    assert.equal(new TextDecoder().decode(first.payload), "0", "the value at start");
    // The next refresh (1 s) publishes the changed value live.
    const next = await client.expect(PacketType.Publish, 3_000);
    assert.equal(next.topic, "$SYS/broker/clients/connected");
    assert.equal(new TextDecoder().decode(next.payload), "1");
  } finally {
    await client.close();
  }
});
