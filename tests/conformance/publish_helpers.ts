/**
 * Small helpers shared by the PUBLISH / SUBSCRIBE / flow-control / topic /
 * retained conformance tests: build SUBSCRIBE options, publish, and assert a
 * DISCONNECT-then-close. Everything goes over a real socket via RawClient.
 */
import assert from "node:assert/strict";
import {
  type ConnectPacket,
  type Packet,
  PacketType,
  type Properties,
  type PublishPacket,
  type QoS,
  type Subscription,
} from "../../src/codec/mod.ts";
import { bytes, type PacketOf, RawClient } from "../helpers/raw_client.ts";

/** A subscription with default options (QoS 0, no flags, Retain Handling 0) plus overrides. */
export function sub(topicFilter: string, options: Partial<Subscription> = {}): Subscription {
  return {
    topicFilter,
    qos: 0,
    noLocal: false,
    retainAsPublished: false,
    retainHandling: 0,
    ...options,
  };
}

/** Connects and returns the client only (for `await using`). */
export async function connect(
  port: number,
  clientId: string,
  connect: Partial<ConnectPacket> = {},
): Promise<RawClient> {
  const { client } = await RawClient.connect(port, { clientId, ...connect });
  return client;
}

/** Connects and also returns the CONNACK. */
export function connectWithAck(
  port: number,
  clientId: string,
  connect: Partial<ConnectPacket> = {},
): Promise<{ client: RawClient; connack: PacketOf<2> }> {
  return RawClient.connect(port, { clientId, ...connect });
}

/** Sends SUBSCRIBE and returns the SUBACK reason codes (checks the packet id). */
export async function subscribe(
  client: RawClient,
  subscriptions: (string | Subscription)[],
  options: { packetId?: number; properties?: Properties } = {},
): Promise<number[]> {
  const packetId = options.packetId ?? 1;
  client.send({
    type: PacketType.Subscribe,
    packetId,
    subscriptions: subscriptions.map((s) => typeof s === "string" ? sub(s) : s),
    properties: options.properties,
  });
  const suback = await client.expect(PacketType.Suback);
  assert.equal(suback.packetId, packetId, "SUBACK carries the SUBSCRIBE's packet id");
  return suback.reasonCodes;
}

/** Sends UNSUBSCRIBE and returns the UNSUBACK reason codes. */
export async function unsubscribe(
  client: RawClient,
  topicFilters: string[],
  packetId = 2,
): Promise<number[]> {
  client.send({ type: PacketType.Unsubscribe, packetId, topicFilters });
  const unsuback = await client.expect(PacketType.Unsuback);
  assert.equal(unsuback.packetId, packetId, "UNSUBACK carries the UNSUBSCRIBE's packet id");
  return unsuback.reasonCodes;
}

/** Options of {@link publish}. */
export interface PublishOptions {
  qos?: QoS;
  retain?: boolean;
  dup?: boolean;
  packetId?: number;
  properties?: Properties;
}

/** Sends a PUBLISH (string payloads are UTF-8 encoded). Packet id defaults to 1 for QoS>0. */
export function publish(
  client: RawClient,
  topic: string,
  payload: string | Uint8Array,
  options: PublishOptions = {},
): void {
  const qos = options.qos ?? 0;
  const packet: PublishPacket = {
    type: PacketType.Publish,
    topic,
    payload: typeof payload === "string" ? bytes(payload) : payload,
    qos,
    retain: options.retain ?? false,
    dup: options.dup ?? false,
  };
  if (qos > 0) packet.packetId = options.packetId ?? 1;
  if (options.properties) packet.properties = options.properties;
  client.send(packet);
}

/** Publishes QoS 1 and waits for the PUBACK; returns its reason code. */
export async function publishQos1(
  client: RawClient,
  topic: string,
  payload: string | Uint8Array,
  options: Omit<PublishOptions, "qos"> = {},
): Promise<number> {
  const packetId = options.packetId ?? 1;
  publish(client, topic, payload, { ...options, qos: 1, packetId });
  const ack = await client.expect(PacketType.Puback);
  assert.equal(ack.packetId, packetId);
  return ack.reasonCode;
}

/** Asserts that the broker sends exactly one DISCONNECT with `reasonCode` and then closes. */
export async function expectDisconnect(client: RawClient, reasonCode: number): Promise<void> {
  const { closed, packets } = await client.closedWithin(2_000);
  assert.equal(closed, true, "the broker closes the connection");
  assert.equal(
    packets.length,
    1,
    `exactly one packet before the close, got ${packets.map((p) => p.type).join(",")}`,
  );
  const d = packets[0];
  assert.equal(d.type, PacketType.Disconnect);
  assert.equal(
    (d as PacketOf<14>).reasonCode,
    reasonCode,
    `DISCONNECT reason 0x${(d as PacketOf<14>).reasonCode.toString(16)}, want 0x${
      reasonCode.toString(16)
    }`,
  );
}

/** Reads one PUBLISH (fails on anything else). */
export function expectPublish(client: RawClient, timeoutMs = 2_000): Promise<PublishPacket> {
  return client.expect(PacketType.Publish, timeoutMs);
}

/** Reads `n` PUBLISH packets. */
export async function expectPublishes(client: RawClient, n: number): Promise<PublishPacket[]> {
  const out: PublishPacket[] = [];
  for (let i = 0; i < n; i++) out.push(await expectPublish(client));
  return out;
}

/** Acknowledges a received PUBLISH the way its QoS needs (QoS 2: PUBREC, waits PUBREL, PUBCOMP). */
export async function ack(client: RawClient, p: PublishPacket, reasonCode = 0): Promise<void> {
  if (p.qos === 1) {
    client.send({ type: PacketType.Puback, packetId: p.packetId!, reasonCode });
  } else if (p.qos === 2) {
    client.send({ type: PacketType.Pubrec, packetId: p.packetId!, reasonCode });
    if (reasonCode >= 0x80) return;
    const rel = await client.expect(PacketType.Pubrel);
    assert.equal(rel.packetId, p.packetId);
    client.send({ type: PacketType.Pubcomp, packetId: p.packetId!, reasonCode: 0 });
  }
}

/** Payloads of PUBLISH packets as text. */
export function payloads(packets: Packet[]): string[] {
  return packets.map((p) =>
    p.type === PacketType.Publish ? new TextDecoder().decode(p.payload) : `<type ${p.type}>`
  );
}

/** Sends a clean DISCONNECT and waits for the close (so the broker has processed it). */
export async function disconnect(client: RawClient): Promise<void> {
  client.send({ type: PacketType.Disconnect, reasonCode: 0 });
  const { closed } = await client.closedWithin(2_000);
  assert.equal(closed, true);
  await client.close();
}

/** Resolves after `ms` (for expiry tests only; keep it short). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Round-trips a PINGREQ so that every packet sent before it has been processed by the broker. */
export async function sync(client: RawClient): Promise<void> {
  client.send({ type: PacketType.Pingreq });
  await client.expect(PacketType.Pingresp);
}
