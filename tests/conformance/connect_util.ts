/**
 * Shared steps of the CONNECT, Will, session and 3.1.1 conformance tests:
 * building CONNECT packets (also deliberately broken ones), subscribing,
 * publishing, and asserting exactly how the broker ended a connection.
 */
import assert from "node:assert/strict";
import {
  type ConnectPacket,
  encodePacket,
  type Packet,
  PacketType,
  type Properties,
  type PublishPacket,
  type QoS,
  type Subscription,
} from "../../src/codec/mod.ts";
import { bytes, type PacketOf, RawClient } from "../helpers/raw_client.ts";

/** A CONNECT with test defaults (v5, Clean Start 1, Keep Alive 0) and `overrides` on top. */
export function connectPacket(overrides: Partial<ConnectPacket> = {}): ConnectPacket {
  const version = overrides.protocolVersion ?? 5;
  return {
    type: PacketType.Connect,
    protocolName: version === 3 ? "MQIsdp" : "MQTT",
    protocolVersion: version,
    cleanStart: true,
    keepAlive: 0,
    clientId: "c-" + Math.random().toString(36).slice(2, 10),
    ...overrides,
  } as ConnectPacket;
}

/** Encoded CONNECT bytes; `flags` replaces the Connect Flags byte when given. */
export function connectBytes(overrides: Partial<ConnectPacket> = {}, flags?: number): Uint8Array {
  const p = connectPacket(overrides);
  const out = encodePacket(p, p.protocolVersion);
  if (flags !== undefined) out[connectFlagsOffset(out)] = flags;
  return out;
}

/** Index of the Connect Flags byte: after the fixed header, the protocol name and the level. */
export function connectFlagsOffset(connect: Uint8Array): number {
  let off = 1;
  while (connect[off] & 0x80) off++;
  off++;
  const nameLen = (connect[off] << 8) | connect[off + 1];
  return off + 2 + nameLen + 1;
}

/** Builds a packet from a first byte and a body, with a minimal Remaining Length. */
export function frame(first: number, body: ArrayLike<number>): Uint8Array {
  const len: number[] = [];
  let n = body.length;
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    len.push(b);
  } while (n > 0);
  return new Uint8Array([first, ...len, ...Array.from(body)]);
}

/** A UTF-8 string field (2-byte length + bytes), from raw bytes so it may be invalid on purpose. */
export function rawString(b: ArrayLike<number>): number[] {
  return [b.length >> 8, b.length & 0xff, ...Array.from(b)];
}

/** Opens a connection and completes CONNECT/CONNACK (throws unless CONNACK 0x00). */
export function connect(
  port: number,
  overrides: Partial<ConnectPacket> = {},
): Promise<{ client: RawClient; connack: PacketOf<2> }> {
  return RawClient.connect(port, overrides);
}

/** A subscription entry with default options. */
export function sub(
  topicFilter: string,
  qos: QoS = 0,
  more: Partial<Subscription> = {},
): Subscription {
  return {
    topicFilter,
    qos,
    noLocal: false,
    retainAsPublished: false,
    retainHandling: 0,
    ...more,
  };
}

let nextSubscribeId = 100;

/** SUBSCRIBE and wait for the SUBACK; returns its reason codes. */
export async function subscribe(
  client: RawClient,
  filter: string | Subscription[],
  qos: QoS = 0,
  properties?: Properties,
): Promise<number[]> {
  const packetId = nextSubscribeId++;
  client.send({
    type: PacketType.Subscribe,
    packetId,
    subscriptions: typeof filter === "string" ? [sub(filter, qos)] : filter,
    properties,
  });
  const suback = await client.expect(PacketType.Suback);
  assert.equal(suback.packetId, packetId);
  return suback.reasonCodes;
}

/** Sends a PUBLISH (DUP 0; a packet id for QoS>0 unless given). */
export function publish(
  client: RawClient,
  topic: string,
  payload: string | Uint8Array,
  qos: QoS = 0,
  more: Partial<PublishPacket> = {},
): void {
  client.send({
    type: PacketType.Publish,
    topic,
    payload: typeof payload === "string" ? bytes(payload) : payload,
    qos,
    retain: false,
    dup: false,
    packetId: qos > 0 ? 1 : undefined,
    ...more,
  });
}

/** Publishes QoS 1 and waits for a PUBACK of that id (any success code). */
export async function publishQos1(
  client: RawClient,
  topic: string,
  payload: string,
  packetId = 1,
  more: Partial<PublishPacket> = {},
): Promise<void> {
  publish(client, topic, payload, 1, { packetId, ...more });
  const ack = await client.expect(PacketType.Puback);
  assert.equal(ack.packetId, packetId);
  assert.ok(ack.reasonCode < 0x80, `PUBACK 0x${ack.reasonCode.toString(16)}`);
}

/** Asserts the broker sends exactly one DISCONNECT with `reasonCode` and then closes. */
export async function expectDisconnect(
  client: RawClient,
  reasonCode: number,
  timeoutMs = 2_000,
): Promise<PacketOf<14>> {
  const { closed, packets } = await client.closedWithin(timeoutMs);
  assert.equal(closed, true, `connection not closed; got ${describe(packets)}`);
  assert.equal(packets.length, 1, `expected one DISCONNECT, got ${describe(packets)}`);
  const d = packets[0];
  assert.equal(d.type, PacketType.Disconnect, `expected DISCONNECT, got ${describe(packets)}`);
  assert.equal(
    (d as PacketOf<14>).reasonCode,
    reasonCode,
    `DISCONNECT 0x${(d as PacketOf<14>).reasonCode.toString(16)}, wanted 0x${
      reasonCode.toString(16)
    }`,
  );
  // [MQTT-3.14.2-2] the server never sends Session Expiry Interval in DISCONNECT.
  assert.equal((d as PacketOf<14>).properties?.sessionExpiryInterval, undefined);
  return d as PacketOf<14>;
}

/** Asserts the broker answers with exactly one CONNACK `reasonCode`, Session Present 0, then closes. */
export async function expectRefusal(
  client: RawClient,
  reasonCode: number,
  timeoutMs = 2_000,
): Promise<PacketOf<2>> {
  const { closed, packets } = await client.closedWithin(timeoutMs);
  assert.equal(closed, true, `connection not closed; got ${describe(packets)}`);
  assert.equal(packets.length, 1, `expected one CONNACK, got ${describe(packets)}`);
  const c = packets[0];
  assert.equal(c.type, PacketType.Connack, `expected CONNACK, got ${describe(packets)}`);
  assert.equal((c as PacketOf<2>).reasonCode, reasonCode);
  assert.equal((c as PacketOf<2>).sessionPresent, false); // [MQTT-3.2.2-6]
  return c as PacketOf<2>;
}

/**
 * Asserts the broker closes a connection whose CONNECT it must reject: either
 * with nothing at all, or with one CONNACK carrying `reasonCode` (MAY); never
 * a DISCONNECT before CONNACK [MQTT-3.14.0-1], never anything else.
 */
export async function expectRejectedConnect(
  client: RawClient,
  reasonCode: number,
  timeoutMs = 2_000,
): Promise<void> {
  const { closed, packets } = await client.closedWithin(timeoutMs);
  assert.equal(closed, true, `connection not closed; got ${describe(packets)}`);
  if (packets.length === 0) return;
  assert.equal(packets.length, 1, `expected at most one CONNACK, got ${describe(packets)}`);
  const c = packets[0] as PacketOf<2>;
  assert.equal(c.type, PacketType.Connack, `expected CONNACK or nothing, got ${describe(packets)}`);
  assert.equal(c.reasonCode, reasonCode);
  assert.equal(c.sessionPresent, false);
}

/** Asserts the broker closes the connection without sending anything. */
export async function expectBareClose(client: RawClient, timeoutMs = 2_000): Promise<void> {
  const { closed, packets } = await client.closedWithin(timeoutMs);
  assert.equal(closed, true, `connection not closed; got ${describe(packets)}`);
  assert.deepEqual(packets, [], `expected no packet before the close, got ${describe(packets)}`);
}

/** Asserts the connection is alive: PINGREQ is answered by PINGRESP [MQTT-3.12.4-1]. */
export async function expectAlive(client: RawClient): Promise<void> {
  client.send({ type: PacketType.Pingreq });
  await client.expect(PacketType.Pingresp);
}

/** Printable list of packets for assertion messages. */
export function describe(packets: Packet[]): string {
  return JSON.stringify(
    packets,
    (_k, v) => v instanceof Uint8Array ? `<${v.length} bytes>` : v,
  );
}

/** Resolves after `ms` (short pauses only, for time-based rules). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
