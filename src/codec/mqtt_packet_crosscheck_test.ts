/**
 * Cross-check against npm mqtt-packet, an independent codec: its bytes decode
 * with ours to the same fields, and our bytes parse with it to the same
 * fields, for every fixture at levels 5, 4 and 3.
 *
 * Its object shape differs from ours, so {@link toMqttPacket} and
 * {@link fromMqttPacket} map between them, and {@link canonical} compares
 * semantically. Its quirks, all handled here:
 * - User Properties are an object of name → value or value[]: repeats of one
 *   name keep their order, but the interleaving of different names is lost.
 * - Byte properties that are flags (Payload Format Indicator, Request Problem
 *   Information, the four "Available" flags, ...) are booleans.
 * - `subscriptionIdentifier` is a number when single and an array when
 *   repeated; `subscriptionIdentifiersAvailable` is spelled with an "s".
 * - Binary fields and payloads are Buffers; 3.1.1 CONNACK has `returnCode`.
 * - It always writes a DISCONNECT/AUTH reason code and Property Length at level 5.
 * - {@link MQTT_PACKET_QUIRKS}: the wire forms it cannot parse.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import mqttPacket from "mqtt-packet";
import {
  encodePacket,
  type Packet,
  PACKET_NAMES,
  PacketType,
  type Properties,
  type ProtocolVersion,
  type QoS,
  type UserProperty,
} from "./mod.ts";
import {
  ALL_FIXTURES,
  decodeAll,
  decoderVersion,
  type PacketFixture,
} from "../../tests/fixtures/packets.ts";

/** mqtt-packet's packet object, as far as this mapping uses it. */
interface MpPacket {
  cmd: string;
  messageId?: number;
  protocolId?: string;
  protocolVersion?: number;
  clean?: boolean;
  keepalive?: number;
  clientId?: string;
  username?: string;
  password?: Buffer;
  will?: {
    topic: string;
    payload: Buffer;
    qos: number;
    retain: boolean;
    properties?: MpProperties;
  };
  sessionPresent?: boolean;
  returnCode?: number;
  reasonCode?: number;
  topic?: string;
  payload?: Buffer;
  qos?: number;
  retain?: boolean;
  dup?: boolean;
  subscriptions?: { topic: string; qos: number; nl?: boolean; rap?: boolean; rh?: number }[];
  unsubscriptions?: string[];
  granted?: number[];
  properties?: MpProperties;
}

type MpProperties = Record<string, unknown>;

/** Our flag properties that mqtt-packet carries as booleans (its type "byte"). */
const BOOLEAN_PROPERTIES = new Set<string>([
  "payloadFormatIndicator",
  "requestProblemInformation",
  "requestResponseInformation",
  "retainAvailable",
  "wildcardSubscriptionAvailable",
  "subscriptionIdentifierAvailable",
  "sharedSubscriptionAvailable",
]);
const TO_MP_NAME: Record<string, string> = {
  subscriptionIdentifiers: "subscriptionIdentifier",
  subscriptionIdentifierAvailable: "subscriptionIdentifiersAvailable",
};
const FROM_MP_NAME: Record<string, string> = Object.fromEntries(
  Object.entries(TO_MP_NAME).map(([ours, theirs]) => [theirs, ours]),
);
const CMD = [
  "reserved",
  "connect",
  "connack",
  "publish",
  "puback",
  "pubrec",
  "pubrel",
  "pubcomp",
  "subscribe",
  "suback",
  "unsubscribe",
  "unsuback",
  "pingreq",
  "pingresp",
  "disconnect",
  "auth",
];

/** Wire forms mqtt-packet 9.0.2 cannot parse, and why; the last test checks each still holds. */
const MQTT_PACKET_QUIRKS: readonly { match: (f: PacketFixture) => boolean; reason: string }[] = [
  {
    match: (f) =>
      f.packet.type === PacketType.Auth && f.packet.reasonCode === 0 &&
      f.packet.properties === undefined,
    reason: "its parser requires a reason code byte, so it refuses AUTH with Remaining " +
      "Length 0, which 3.15.2.1 allows",
  },
];

function quirkOf(f: PacketFixture): string | undefined {
  return MQTT_PACKET_QUIRKS.find((q) => q.match(f))?.reason;
}

// --- Mapping -------------------------------------------------------------------

function toMpProperties(props: Properties | undefined): MpProperties | undefined {
  if (props === undefined) return undefined;
  const out: MpProperties = {};
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined) continue;
    const mpName = TO_MP_NAME[name] ?? name;
    if (name === "userProperties") {
      const grouped: Record<string, string | string[]> = Object.create(null);
      for (const [k, v] of value as UserProperty[]) {
        const prev = grouped[k];
        grouped[k] = prev === undefined ? v : [...(Array.isArray(prev) ? prev : [prev]), v];
      }
      out[mpName] = grouped;
    } else if (BOOLEAN_PROPERTIES.has(name)) {
      out[mpName] = value === 1;
    } else if (value instanceof Uint8Array) {
      out[mpName] = Buffer.from(value);
    } else {
      out[mpName] = value;
    }
  }
  return out;
}

function fromMpProperties(props: MpProperties | undefined): Properties | undefined {
  if (props === undefined || Object.keys(props).length === 0) return undefined;
  const out: Record<string, unknown> = {};
  for (const [mpName, value] of Object.entries(props)) {
    const name = FROM_MP_NAME[mpName] ?? mpName;
    if (name === "userProperties") {
      const pairs: UserProperty[] = [];
      for (const [k, v] of Object.entries(value as Record<string, string | string[]>)) {
        for (const one of Array.isArray(v) ? v : [v]) pairs.push([k, one]);
      }
      out[name] = pairs;
    } else if (name === "subscriptionIdentifiers") {
      out[name] = Array.isArray(value) ? value : [value];
    } else if (BOOLEAN_PROPERTIES.has(name)) {
      assert.equal(typeof value, "boolean", `mqtt-packet gives ${mpName} as a boolean`);
      out[name] = value ? 1 : 0;
    } else if (value instanceof Uint8Array) {
      out[name] = new Uint8Array(value);
    } else {
      out[name] = value;
    }
  }
  return out as Properties;
}

/** Our packet as an object for `mqttPacket.generate`. */
function toMqttPacket(p: Packet, version: ProtocolVersion): MpPacket {
  const cmd = CMD[p.type];
  switch (p.type) {
    case PacketType.Connect:
      return {
        cmd,
        protocolId: p.protocolName,
        protocolVersion: p.protocolVersion,
        clean: p.cleanStart,
        keepalive: p.keepAlive,
        clientId: p.clientId,
        username: p.username,
        password: p.password && Buffer.from(p.password),
        will: p.will && {
          topic: p.will.topic,
          payload: Buffer.from(p.will.payload),
          qos: p.will.qos,
          retain: p.will.retain,
          properties: toMpProperties(p.will.properties),
        },
        properties: toMpProperties(p.properties),
      };
    case PacketType.Connack:
      return {
        cmd,
        sessionPresent: p.sessionPresent,
        ...(version === 5 ? { reasonCode: p.reasonCode } : { returnCode: p.reasonCode }),
        properties: toMpProperties(p.properties),
      };
    case PacketType.Publish:
      return {
        cmd,
        topic: p.topic,
        payload: Buffer.from(p.payload),
        qos: p.qos,
        retain: p.retain,
        dup: p.dup,
        messageId: p.packetId,
        properties: toMpProperties(p.properties),
      };
    case PacketType.Puback:
    case PacketType.Pubrec:
    case PacketType.Pubrel:
    case PacketType.Pubcomp:
    case PacketType.Disconnect:
    case PacketType.Auth:
      return {
        cmd,
        messageId: "packetId" in p ? p.packetId : undefined,
        reasonCode: p.reasonCode,
        properties: toMpProperties(p.properties),
      };
    case PacketType.Subscribe:
      return {
        cmd,
        messageId: p.packetId,
        subscriptions: p.subscriptions.map((s) => ({
          topic: s.topicFilter,
          qos: s.qos,
          nl: s.noLocal,
          rap: s.retainAsPublished,
          rh: s.retainHandling,
        })),
        properties: toMpProperties(p.properties),
      };
    case PacketType.Suback:
    case PacketType.Unsuback:
      return {
        cmd,
        messageId: p.packetId,
        granted: p.reasonCodes,
        properties: toMpProperties(p.properties),
      };
    case PacketType.Unsubscribe:
      return {
        cmd,
        messageId: p.packetId,
        unsubscriptions: p.topicFilters,
        properties: toMpProperties(p.properties),
      };
    case PacketType.Pingreq:
    case PacketType.Pingresp:
      return { cmd };
  }
}

/** An mqtt-packet parse result as our packet shape. */
function fromMqttPacket(o: MpPacket, version: ProtocolVersion): Packet {
  const type = CMD.indexOf(o.cmd);
  const properties = fromMpProperties(o.properties);
  const withProps = <T extends object>(p: T): T => properties ? { ...p, properties } : p;
  switch (type) {
    case PacketType.Connect: {
      const p: Packet = {
        type,
        protocolName: o.protocolId!,
        protocolVersion: o.protocolVersion as ProtocolVersion,
        cleanStart: o.clean!,
        keepAlive: o.keepalive!,
        clientId: o.clientId!,
      };
      if (o.username !== undefined) p.username = o.username;
      if (o.password !== undefined) p.password = new Uint8Array(o.password);
      if (o.will) {
        const willProperties = fromMpProperties(o.will.properties);
        p.will = {
          topic: o.will.topic,
          payload: new Uint8Array(o.will.payload),
          qos: o.will.qos as QoS,
          retain: o.will.retain,
          ...(willProperties ? { properties: willProperties } : {}),
        };
      }
      return withProps(p);
    }
    case PacketType.Connack:
      return withProps({
        type,
        sessionPresent: o.sessionPresent!,
        reasonCode: (version === 5 ? o.reasonCode : o.returnCode)!,
      });
    case PacketType.Publish: {
      const p: Packet = {
        type,
        topic: o.topic!,
        payload: new Uint8Array(o.payload!),
        qos: o.qos as QoS,
        retain: o.retain!,
        dup: o.dup!,
      };
      if (p.qos > 0) p.packetId = o.messageId;
      return withProps(p);
    }
    case PacketType.Puback:
    case PacketType.Pubrec:
    case PacketType.Pubrel:
    case PacketType.Pubcomp:
      return withProps({ type, packetId: o.messageId!, reasonCode: o.reasonCode ?? 0 });
    case PacketType.Subscribe:
      return withProps({
        type,
        packetId: o.messageId!,
        subscriptions: o.subscriptions!.map((s) => ({
          topicFilter: s.topic,
          qos: s.qos as QoS,
          noLocal: s.nl ?? false,
          retainAsPublished: s.rap ?? false,
          retainHandling: (s.rh ?? 0) as 0 | 1 | 2,
        })),
      });
    case PacketType.Suback:
    case PacketType.Unsuback:
      return withProps({ type, packetId: o.messageId!, reasonCodes: o.granted ?? [] });
    case PacketType.Unsubscribe:
      return withProps({ type, packetId: o.messageId!, topicFilters: o.unsubscriptions! });
    case PacketType.Pingreq:
    case PacketType.Pingresp:
      return { type };
    case PacketType.Disconnect:
    case PacketType.Auth:
      return withProps({ type, reasonCode: o.reasonCode ?? 0 });
  }
  throw new Error(`Cannot map mqtt-packet cmd ${o.cmd}`);
}

/**
 * A form of a packet for semantic comparison: User Properties grouped by name
 * (sorted by name, each name's values in order), since mqtt-packet keeps only that.
 */
function canonical(p: Packet): Packet {
  const copy = structuredClone(p);
  const fix = (props: Properties | undefined) => {
    if (props?.userProperties) {
      const names = [...new Set(props.userProperties.map(([k]) => k))].sort();
      props.userProperties = names.flatMap((n) => props.userProperties!.filter(([k]) => k === n));
    }
  };
  if ("properties" in copy) fix(copy.properties);
  if (copy.type === PacketType.Connect) fix(copy.will?.properties);
  return copy;
}

/** Parses bytes with mqtt-packet; throws its first error. */
function mqttPacketParse(bytes: Uint8Array, version: ProtocolVersion): MpPacket[] {
  const parser = mqttPacket.parser({ protocolVersion: version });
  const packets: MpPacket[] = [];
  let error: unknown;
  parser.on("packet", (p) => packets.push(p as unknown as MpPacket));
  parser.on("error", (e: unknown) => error ??= e);
  const left = parser.parse(Buffer.from(bytes));
  if (error !== undefined) throw error;
  assert.equal(left, 0, "mqtt-packet consumed every byte");
  return packets;
}

function mqttPacketGenerate(p: Packet, version: ProtocolVersion): Uint8Array {
  // generate() throws (an unhandled 'error' event) when it refuses the object.
  // deno-lint-ignore no-explicit-any
  return new Uint8Array(mqttPacket.generate(toMqttPacket(p, version) as any, {
    protocolVersion: version,
  }));
}

// --- Tests ---------------------------------------------------------------------

Deno.test("mapping to and from mqtt-packet's object shape loses nothing but User Property interleaving", () => {
  for (const f of ALL_FIXTURES) {
    const back = fromMqttPacket(toMqttPacket(f.packet, f.version), f.version);
    assert.deepStrictEqual(canonical(back), canonical(f.packet), f.name);
  }
});

for (const version of [5, 4] as const) {
  const fixtures = ALL_FIXTURES.filter((f) => decoderVersion(f.version) === version);

  Deno.test(`decoder reads bytes from mqtt-packet's generate() as the same packet, level ${version}`, async (t) => {
    for (const f of fixtures) {
      await t.step(`${f.name} (${PACKET_NAMES[f.packet.type]})`, () => {
        const bytes = mqttPacketGenerate(f.packet, f.version);
        const decoded = decodeAll(bytes, { protocolVersion: version });
        assert.equal(decoded.length, 1);
        assert.deepStrictEqual(canonical(decoded[0]), canonical(f.packet));
      });
    }
  });

  Deno.test(`mqtt-packet's parser reads our encoded bytes as the same packet, level ${version}`, async (t) => {
    for (const f of fixtures) {
      if (quirkOf(f)) continue;
      await t.step(`${f.name} (${PACKET_NAMES[f.packet.type]})`, () => {
        const parsed = mqttPacketParse(encodePacket(f.packet, f.version), f.version);
        assert.equal(parsed.length, 1);
        assert.deepStrictEqual(
          canonical(fromMqttPacket(parsed[0], f.version)),
          canonical(f.packet),
        );
      });
    }
  });
}

Deno.test("each mqtt-packet quirk skipped above still reproduces with mqtt-packet 9.0.2", () => {
  let skipped = 0;
  for (const f of ALL_FIXTURES) {
    const reason = quirkOf(f);
    if (reason === undefined) continue;
    skipped++;
    const bytes = encodePacket(f.packet, f.version);
    assert.deepStrictEqual(
      decodeAll(bytes, { protocolVersion: decoderVersion(f.version) }),
      [f.packet],
    );
    assert.throws(() => mqttPacketParse(bytes, f.version), `${f.name}: ${reason}`);
  }
  assert.ok(skipped > 0, "the quirk list matches at least one fixture");
});

Deno.test("our encoder and mqtt-packet write identical bytes when User Properties are not interleaved", () => {
  // Byte-for-byte: same field order, same minimal VBIs, same property order.
  let compared = 0;
  for (const f of ALL_FIXTURES) {
    if (f.packet.type === PacketType.Disconnect || f.packet.type === PacketType.Auth) continue;
    if (f.version === 5 && isPubAck(f.packet) && !("properties" in f.packet)) continue;
    const grouped = canonical(f.packet);
    assert.deepEqual(
      encodePacket(grouped, f.version),
      mqttPacketGenerate(grouped, f.version),
      f.name,
    );
    compared++;
  }
  assert.ok(compared > 30);
});

function isPubAck(p: Packet): boolean {
  return p.type >= PacketType.Puback && p.type <= PacketType.Pubcomp;
}
