import assert from "node:assert/strict";
import {
  encodePacket,
  MAX_VBI,
  type Packet,
  PACKET_NAMES,
  PacketType,
  type Properties,
  type PublishPacket,
} from "./mod.ts";
import {
  ALL_FIXTURES,
  ALLOWED_PROPERTIES,
  decodeAll,
  decoderVersion,
  NON_CANONICAL_FORMS,
  type PacketFixture,
  u8,
  V4_FIXTURES,
  V5_FIXTURES,
} from "../../tests/fixtures/packets.ts";

/** Reads a fixed header independently of the codec: Remaining Length and its byte count. */
function readFixedHeader(bytes: Uint8Array): { remainingLength: number; vbiBytes: number } {
  let value = 0;
  let multiplier = 1;
  for (let i = 1; i <= 4; i++) {
    const b = bytes[i];
    value += (b & 0x7f) * multiplier;
    if ((b & 0x80) === 0) return { remainingLength: value, vbiBytes: i };
    multiplier *= 128;
  }
  throw new Error("Remaining Length longer than 4 bytes");
}

/** The fewest bytes a Variable Byte Integer needs, from the boundaries of spec table 1.5.5. */
function minimalVbiBytes(value: number): number {
  return value <= 127 ? 1 : value <= 16_383 ? 2 : value <= 2_097_151 ? 3 : 4;
}

function typesOf(fixtures: readonly PacketFixture[]): Set<number> {
  return new Set(fixtures.map((f) => f.packet.type));
}

Deno.test("fixture table holds all 15 packet types at level 5 and the 14 of level 4, and a level 3 CONNECT", () => {
  assert.deepEqual([...typesOf(V5_FIXTURES)].sort((a, b) => a - b), range(1, 15));
  assert.deepEqual([...typesOf(V4_FIXTURES)].sort((a, b) => a - b), range(1, 14));
  assert.ok(
    V4_FIXTURES.some((f) =>
      f.version === 3 && f.packet.type === PacketType.Connect && f.packet.protocolName === "MQIsdp"
    ),
  );
  const names = ALL_FIXTURES.map((f) => f.name);
  assert.equal(new Set(names).size, names.length, "fixture names are unique");
  for (const f of V4_FIXTURES) {
    assert.ok(!hasProperties(f.packet), `${f.name} carries no v5 properties`);
  }
});

Deno.test("fixture table carries every property each packet allows, Will included, with repeated User Properties (2.2.2.2)", () => {
  for (const [typeKey, allowed] of Object.entries(ALLOWED_PROPERTIES)) {
    const type = Number(typeKey);
    if (type === 16 || allowed.length === 0) continue;
    const full = V5_FIXTURES.filter((f) => f.everyProperty && f.packet.type === type);
    assert.ok(full.length > 0, `a ${PACKET_NAMES[type]} fixture has every property`);
    for (const f of full) {
      const props = (f.packet as { properties?: Properties }).properties ?? {};
      assert.deepEqual(Object.keys(props).sort(), [...allowed].sort(), f.name);
      const names = (props.userProperties ?? []).map(([k]) => k);
      assert.ok(names.length > new Set(names).size, `${f.name}: a User Property name repeats`);
    }
  }
  const connect = V5_FIXTURES.find((f) => f.everyProperty && f.packet.type === PacketType.Connect);
  assert.ok(connect?.packet.type === PacketType.Connect && connect.packet.will?.properties);
  assert.deepEqual(
    Object.keys(connect.packet.will.properties).sort(),
    [...ALLOWED_PROPERTIES[16]].sort(),
  );
  const publish = V5_FIXTURES.find((f) => f.everyProperty && f.packet.type === PacketType.Publish);
  assert.ok(publish?.packet.type === PacketType.Publish);
  assert.ok((publish.packet.properties?.subscriptionIdentifiers?.length ?? 0) > 1);
});

Deno.test("every fixture survives encode then decode unchanged, at its protocol level", async (t) => {
  for (const f of ALL_FIXTURES) {
    await t.step(f.name, () => {
      const encoded = encodePacket(f.packet, f.version);
      if (f.bytes) assert.deepEqual(encoded, f.bytes, "encoder writes the pinned wire form");
      const decoded = decodeAll(encoded, { protocolVersion: decoderVersion(f.version) });
      assert.deepStrictEqual(decoded, [f.packet]);
    });
  }
});

Deno.test("encoder returns exactly fixed header + Remaining Length bytes in one allocation (short acks: a slab view), Remaining Length in the fewest bytes [MQTT-1.5.5-1]", () => {
  for (const f of ALL_FIXTURES) {
    const encoded = encodePacket(f.packet, f.version);
    if (encoded.buffer.byteLength !== encoded.length) {
      // Only the 4-byte acknowledgements come from the shared slab (util/byte_pool.ts).
      assert.equal(encoded.length, 4, `${f.name}: a view only for a short ack`);
      assert.ok([4, 5, 6, 7].includes(encoded[0] >> 4), `${f.name}: a view only for an ack`);
    } else assert.equal(encoded.byteOffset, 0, f.name);
    const { remainingLength, vbiBytes } = readFixedHeader(encoded);
    assert.equal(1 + vbiBytes + remainingLength, encoded.length, f.name);
    assert.equal(vbiBytes, minimalVbiBytes(remainingLength), f.name);
  }
});

Deno.test("encoder writes Remaining Length with the fewest bytes at every size boundary [MQTT-1.5.5-1]", () => {
  const cases: [number, number[]][] = [
    [127, [0x7f]],
    [128, [0x80, 0x01]],
    [16_383, [0xff, 0x7f]],
    [16_384, [0x80, 0x80, 0x01]],
    [2_097_151, [0xff, 0xff, 0x7f]],
    [2_097_152, [0x80, 0x80, 0x80, 0x01]],
  ];
  for (const [remainingLength, vbi] of cases) {
    // Level 4 QoS 0 PUBLISH to "t": Remaining Length = 2 + 1 + payload.
    const packet: PublishPacket = {
      type: PacketType.Publish,
      topic: "t",
      payload: new Uint8Array(remainingLength - 3),
      qos: 0,
      retain: false,
      dup: false,
    };
    const encoded = encodePacket(packet, 4);
    assert.deepEqual([...encoded.subarray(1, 1 + vbi.length)], vbi, `RL ${remainingLength}`);
    assert.equal(encoded.length, 1 + vbi.length + remainingLength);
    assert.deepStrictEqual(decodeAll(encoded, { protocolVersion: 4 }), [packet]);
  }
});

Deno.test("encoder writes Subscription Identifiers and Property Length with the fewest bytes [MQTT-1.5.5-1]", () => {
  const ids: [number, number[]][] = [
    [1, [0x01]],
    [127, [0x7f]],
    [128, [0x80, 0x01]],
    [16_383, [0xff, 0x7f]],
    [16_384, [0x80, 0x80, 0x01]],
    [2_097_151, [0xff, 0xff, 0x7f]],
    [2_097_152, [0x80, 0x80, 0x80, 0x01]],
    [MAX_VBI, [0xff, 0xff, 0xff, 0x7f]],
  ];
  for (const [id, vbi] of ids) {
    const encoded = encodePacket({
      type: PacketType.Subscribe,
      packetId: 1,
      properties: { subscriptionIdentifiers: [id] },
      subscriptions: [
        { topicFilter: "t", qos: 0, noLocal: false, retainAsPublished: false, retainHandling: 0 },
      ],
    }, 5);
    // 0x82, RL, packet id (2), Property Length, 0x0B, VBI...
    assert.deepEqual([...encoded.subarray(4, 4 + 2 + vbi.length)], [1 + vbi.length, 0x0b, ...vbi]);
  }
  for (const [propertyLength, vbi] of [[127, [0x7f]], [128, [0x80, 0x01]]] as const) {
    // One User Property: 0x26, name "k" (2 + 1), value (2 + n) → 6 + n bytes.
    const value = "v".repeat(propertyLength - 6);
    const encoded = encodePacket({
      type: PacketType.Publish,
      topic: "t",
      payload: u8(),
      qos: 0,
      retain: false,
      dup: false,
      properties: { userProperties: [["k", value]] },
    }, 5);
    // 0x30, RL (2 bytes here), topic (3), Property Length...
    assert.deepEqual([...encoded.subarray(6, 6 + vbi.length)], [...vbi]);
  }
});

Deno.test("decoder accepts valid wire forms that the encoder writes shorter (3.4.2.1, 3.14.2.1, 3.15.2.1)", async (t) => {
  for (const f of NON_CANONICAL_FORMS) {
    await t.step(f.name, () => {
      const decoded = decodeAll(f.bytes, { protocolVersion: decoderVersion(f.version) });
      assert.deepStrictEqual(decoded, [f.packet]);
      assert.ok(encodePacket(f.packet, f.version).length < f.bytes.length, "ours is shorter");
    });
  }
});

Deno.test("encoder drops properties, reason codes and v5 subscription options at level 4 (§12)", async (t) => {
  for (const f of V5_FIXTURES) {
    if (f.packet.type === PacketType.Connect || f.packet.type === PacketType.Auth) continue;
    // A v5 CONNACK reason code is not a 3.1.1 return code; the broker maps it with connackCodeForV4.
    if (f.packet.type === PacketType.Connack && f.packet.reasonCode > 5) continue;
    // Likewise a v5 SUBACK code beyond 0x00-0x02/0x80 is the caller's to map to 0x80.
    if (
      f.packet.type === PacketType.Suback && f.packet.reasonCodes.some((c) => c > 2 && c !== 0x80)
    ) {
      continue;
    }
    await t.step(f.name, () => {
      const decoded = decodeAll(encodePacket(f.packet, 4), { protocolVersion: 4 });
      assert.deepStrictEqual(decoded, [asLevel4(f.packet)]);
    });
  }
});

Deno.test("encoder refuses input it cannot represent with RangeError", () => {
  const publish: PublishPacket = {
    type: PacketType.Publish,
    topic: "t",
    payload: u8(),
    qos: 1,
    retain: false,
    dup: false,
    packetId: 1,
  };
  // 1.5.4: a string field holds at most 65,535 bytes; 32,768 × "é" is 65,536 bytes.
  assert.throws(() => encodePacket({ ...publish, topic: "é".repeat(32_768) }), RangeError);
  assert.doesNotThrow(() => encodePacket({ ...publish, topic: "a".repeat(65_535) }));
  // 1.5.6: binary data holds at most 65,535 bytes.
  assert.throws(
    () => encodePacket({ ...publish, properties: { correlationData: new Uint8Array(65_536) } }),
    RangeError,
  );
  // [MQTT-2.2.1-2] a QoS > 0 PUBLISH needs a Packet Identifier.
  assert.throws(() => encodePacket({ ...publish, packetId: undefined }), RangeError);
  // 1.5.5: a Variable Byte Integer holds at most 268,435,455.
  assert.throws(
    () => encodePacket({ ...publish, properties: { subscriptionIdentifiers: [MAX_VBI + 1] } }),
    RangeError,
  );
  // AUTH does not exist before MQTT 5.
  assert.throws(() => encodePacket({ type: PacketType.Auth, reasonCode: 0 }, 4), RangeError);
});

function asLevel4(packet: Packet): Packet {
  const copy = structuredClone(packet) as Packet & { properties?: Properties };
  delete copy.properties;
  switch (copy.type) {
    case PacketType.Puback:
    case PacketType.Pubrec:
    case PacketType.Pubrel:
    case PacketType.Pubcomp:
    case PacketType.Disconnect:
      copy.reasonCode = 0;
      break;
    case PacketType.Unsuback:
      copy.reasonCodes = [];
      break;
    case PacketType.Subscribe:
      for (const s of copy.subscriptions) {
        s.noLocal = false;
        s.retainAsPublished = false;
        s.retainHandling = 0;
      }
      break;
  }
  return copy;
}

function hasProperties(packet: Packet): boolean {
  if ("properties" in packet && packet.properties !== undefined) return true;
  return packet.type === PacketType.Connect && packet.will?.properties !== undefined;
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
