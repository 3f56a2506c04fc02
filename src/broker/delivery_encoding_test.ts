import assert from "node:assert/strict";
import { PacketDecoder, type PublishPacket } from "../codec/mod.ts";
import type { Message } from "../routing/mod.ts";
import { encodeDelivery, keepMessage } from "./delivery_encoding.ts";
import { transientCopy } from "../util/byte_pool.ts";

function decode(bytes: Uint8Array, version = 5): PublishPacket {
  const d = new PacketDecoder({ side: "client", protocolVersion: version });
  d.push(bytes);
  return d.next() as PublishPacket;
}

const message = (): Message => ({
  id: 1,
  topic: "plant/line-1/temp",
  payload: new TextEncoder().encode("21.5"),
  qos: 2,
  retain: false,
  properties: { contentType: "text/plain", userProperties: [["a", "1"], ["a", "2"]] },
});

Deno.test("encodeDelivery shares one encoding per variant and patches packet id and DUP into copies", () => {
  const m = message();
  const d = { message: m, qos: 1 as const, retain: false };
  const a = encodeDelivery(d, { v5: true, packetId: 7, dup: false, now: 0 });
  const b = encodeDelivery(d, { v5: true, packetId: 300, dup: true, now: 0 });
  assert.notEqual(a, b, "QoS>0 copies are separate buffers");
  const pa = decode(a);
  const pb = decode(b);
  assert.equal(pa.packetId, 7);
  assert.equal(pa.dup, false);
  assert.equal(pb.packetId, 300);
  assert.equal(pb.dup, true);
  assert.deepEqual(pb.properties, m.properties);
  const q0 = { message: m, qos: 0 as const, retain: false };
  assert.equal(
    encodeDelivery(q0, { v5: true, packetId: 0, dup: false, now: 0 }),
    encodeDelivery(q0, { v5: true, packetId: 0, dup: false, now: 0 }),
    "QoS 0 copies share the bytes",
  );
});

Deno.test("encodeDelivery writes per-subscriber properties: remaining expiry, subscription ids, topic alias [MQTT-3.3.2-6]", () => {
  const m = { ...message(), expiresAt: 10_000 };
  const d = { message: m, qos: 1 as const, retain: true, subscriptionIds: [4, 9] };
  const p = decode(
    encodeDelivery(d, {
      v5: true,
      packetId: 1,
      dup: false,
      now: 2_500,
      alias: { alias: 3, omitTopic: true },
    }),
  );
  assert.equal(p.topic, "");
  assert.equal(p.retain, true);
  assert.equal(p.properties?.messageExpiryInterval, 8);
  assert.deepEqual(p.properties?.subscriptionIdentifiers, [4, 9]);
  assert.equal(p.properties?.topicAlias, 3);
  assert.deepEqual(p.properties?.userProperties, [["a", "1"], ["a", "2"]]);
});

Deno.test("encodeDelivery sends no properties to a 3.1.1 client", () => {
  const d = {
    message: { ...message(), expiresAt: 10_000 },
    qos: 1 as const,
    retain: false,
    subscriptionIds: [4],
  };
  const p = decode(encodeDelivery(d, { v5: false, packetId: 5, dup: false, now: 0 }), 4);
  assert.equal(p.topic, "plant/line-1/temp");
  assert.equal(p.packetId, 5);
  assert.equal(p.properties, undefined);
});

Deno.test("keepMessage gives a message read into a pooled slab buffers of its own before it is stored", () => {
  const m = message();
  const original = m.payload;
  m.payload = transientCopy(original); // as the broker reads PUBLISH payloads
  assert.notEqual(m.payload.byteLength, m.payload.buffer.byteLength, "a view into a slab");
  const q0 = { message: m, qos: 0 as const, retain: false };
  const how = { v5: true, packetId: 0, dup: false, now: 0 };
  const pooled = encodeDelivery(q0, how);
  assert.notEqual(pooled.byteLength, pooled.buffer.byteLength, "its shared encoding is pooled too");
  keepMessage(m);
  assert.equal(m.payload.byteLength, m.payload.buffer.byteLength, "payload in its own buffer");
  assert.deepEqual(m.payload, original);
  const kept = encodeDelivery(q0, how);
  assert.notEqual(kept, pooled, "the pooled encoding is not reused");
  assert.equal(
    kept.byteLength,
    kept.buffer.byteLength,
    "a kept message encodes into its own buffer",
  );
  assert.deepEqual(kept, pooled);
  assert.equal(encodeDelivery(q0, how), kept, "and shares that encoding again");
  const payload = m.payload;
  keepMessage(m);
  assert.equal(m.payload, payload, "a message already kept is left alone");
});

Deno.test("encodeDelivery writes a kept message's QoS>0 delivery, id and DUP included, into a slab view and caches no ArrayBuffer for it", () => {
  for (const v5 of [true, false]) {
    const m = message(); // payload in a buffer of its own, as keepMessage leaves it
    const d = { message: m, qos: 2 as const, retain: true };
    const first = encodeDelivery(d, { v5, packetId: 513, dup: false, now: 0 });
    const again = encodeDelivery(d, { v5, packetId: 9, dup: true, now: 0 });
    for (const [bytes, id, dup] of [[first, 513, false], [again, 9, true]] as const) {
      assert.ok(bytes.byteLength < bytes.buffer.byteLength, "a view into a slab");
      const p = decode(bytes, v5 ? 5 : 4);
      assert.equal(p.packetId, id);
      assert.equal(p.dup, dup);
      assert.equal(p.qos, 2);
      assert.equal(p.retain, true);
      assert.equal(p.topic, m.topic);
      assert.equal(new TextDecoder().decode(p.payload), "21.5");
      assert.deepEqual(p.properties ?? {}, v5 ? m.properties : {});
    }
    const cached = m as Message & { encodedBytes?: Uint8Array };
    assert.equal(cached.encodedBytes, undefined, "nothing cached on the message");
    // A QoS 0 delivery of the same message still shares one encoding, DUP clear.
    const q0 = { message: m, qos: 0 as const, retain: false };
    const shared = encodeDelivery(q0, { v5, packetId: 0, dup: false, now: 0 });
    assert.equal(decode(shared, v5 ? 5 : 4).dup, false);
    assert.equal(encodeDelivery(q0, { v5, packetId: 0, dup: false, now: 0 }), shared);
  }
});
