/**
 * Codec micro-benchmarks: decode and encode of level 5 PUBLISH (64 B and
 * 1 KiB payloads, with and without properties) and SUBSCRIBE (four filters).
 * Each group runs ours as the baseline and npm mqtt-packet on the same bytes
 * or packet as a reference, so the summary line gives the ratio.
 *
 * Run: deno bench --allow-env src/codec/codec_bench.ts (or deno task bench). mqtt-packet's
 * stream dependency reads the environment when loaded; without --allow-env
 * only our rows run.
 */
import { Buffer } from "node:buffer";
import { deepStrictEqual } from "node:assert/strict";
import type { Packet as MqttPacketObject } from "mqtt-packet";
import {
  encodePacket,
  PacketDecoder,
  PacketType,
  type Properties,
  type PublishPacket,
  type SubscribePacket,
} from "./mod.ts";

const PROPERTIES: Properties = {
  payloadFormatIndicator: 1,
  messageExpiryInterval: 3600,
  contentType: "application/json",
  responseTopic: "reply/device-17",
  correlationData: new Uint8Array(16).fill(7),
  userProperties: [["trace-id", "4bf92f3577b34da6"], ["tenant", "acme"]],
};

function publish(size: number, properties?: Properties): PublishPacket {
  const p: PublishPacket = {
    type: PacketType.Publish,
    topic: "site/7/device/17/telemetry",
    payload: new Uint8Array(size).map((_, i) => i & 0xff),
    qos: 1,
    retain: false,
    dup: false,
    packetId: 42,
  };
  if (properties) p.properties = properties;
  return p;
}

const SUBSCRIBE: SubscribePacket = {
  type: PacketType.Subscribe,
  packetId: 7,
  properties: { subscriptionIdentifiers: [12] },
  subscriptions: [
    {
      topicFilter: "site/+/device/+/telemetry",
      qos: 1,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0,
    },
    { topicFilter: "site/7/#", qos: 0, noLocal: true, retainAsPublished: false, retainHandling: 1 },
    {
      topicFilter: "$share/g/jobs/+",
      qos: 2,
      noLocal: false,
      retainAsPublished: true,
      retainHandling: 2,
    },
    { topicFilter: "alerts", qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 },
  ],
};

/** The same packet in mqtt-packet's object shape (only what these packets use). */
function toMqttPacket(p: PublishPacket | SubscribePacket): Record<string, unknown> {
  const props = p.properties && {
    ...p.properties,
    payloadFormatIndicator: p.properties.payloadFormatIndicator === undefined
      ? undefined
      : p.properties.payloadFormatIndicator === 1,
    correlationData: p.properties.correlationData && Buffer.from(p.properties.correlationData),
    userProperties: p.properties.userProperties &&
      Object.fromEntries(p.properties.userProperties),
    subscriptionIdentifiers: undefined,
    subscriptionIdentifier: p.properties.subscriptionIdentifiers?.[0],
  };
  if (p.type === PacketType.Publish) {
    return {
      cmd: "publish",
      topic: p.topic,
      payload: Buffer.from(p.payload),
      qos: p.qos,
      retain: p.retain,
      dup: p.dup,
      messageId: p.packetId,
      properties: props,
    };
  }
  return {
    cmd: "subscribe",
    messageId: p.packetId,
    properties: props,
    subscriptions: p.subscriptions.map((s) => ({
      topic: s.topicFilter,
      qos: s.qos,
      nl: s.noLocal,
      rap: s.retainAsPublished,
      rh: s.retainHandling,
    })),
  };
}

// mqtt-packet reads process.env as it loads (readable-stream, debug): load it only when allowed.
const mqttPacket = Deno.permissions.querySync({ name: "env" }).state === "granted"
  ? (await import("mqtt-packet")).default
  : undefined;
if (!mqttPacket) console.log("mqtt-packet reference skipped: run with --allow-env to compare");

const CASES: [string, PublishPacket | SubscribePacket][] = [
  ["PUBLISH 64 B", publish(64)],
  ["PUBLISH 64 B + properties", publish(64, PROPERTIES)],
  ["PUBLISH 1 KiB", publish(1024)],
  ["PUBLISH 1 KiB + properties", publish(1024, PROPERTIES)],
  ["SUBSCRIBE 4 filters", SUBSCRIBE],
];

// Results go here so the work cannot be optimised away.
let _sink: unknown;

for (const [label, packet] of CASES) {
  const bytes = encodePacket(packet, 5);
  const decodeGroup = `decode ${label} (${bytes.length} B)`;
  const encodeGroup = `encode ${label} (${bytes.length} B)`;

  const decoder = new PacketDecoder({ protocolVersion: 5, side: "any" });
  decoder.push(bytes);
  deepStrictEqual(decoder.next(), packet);

  Deno.bench({
    name: "ours: PacketDecoder push + next",
    group: decodeGroup,
    baseline: true,
    fn() {
      decoder.push(bytes);
      _sink = decoder.next();
    },
  });
  Deno.bench({
    name: "ours: encodePacket",
    group: encodeGroup,
    baseline: true,
    fn() {
      _sink = encodePacket(packet, 5);
    },
  });
  if (mqttPacket) addReference(mqttPacket, label, packet, bytes);
}

function addReference(
  mp: typeof import("mqtt-packet"),
  label: string,
  packet: PublishPacket | SubscribePacket,
  bytes: Uint8Array,
): void {
  const buffer = Buffer.from(bytes);
  const object = toMqttPacket(packet) as unknown as MqttPacketObject;
  // Both codecs must agree on these bytes, or the comparison means nothing.
  deepStrictEqual(new Uint8Array(mp.generate(object, { protocolVersion: 5 })), bytes);
  const parser = mp.parser({ protocolVersion: 5 });
  let parsed = 0;
  parser.on("packet", (p) => {
    _sink = p;
    parsed++;
  });
  parser.on("error", (e) => {
    throw e;
  });
  parser.parse(buffer);
  if (parsed !== 1) throw new Error(`mqtt-packet did not parse ${label}`);

  Deno.bench({
    name: "mqtt-packet parser.parse",
    group: `decode ${label} (${bytes.length} B)`,
    fn() {
      parser.parse(buffer);
    },
  });
  Deno.bench({
    name: "mqtt-packet generate",
    group: `encode ${label} (${bytes.length} B)`,
    fn() {
      _sink = mp.generate(object, { protocolVersion: 5 });
    },
  });
}
