/**
 * Encoding of outgoing PUBLISH packets: the hot path of every delivery.
 * Copies that need nothing per subscriber share one encoding per (protocol
 * version, RETAIN, QoS), kept on the message; a QoS>0 copy patches its packet
 * id and DUP flag into a copy of those bytes instead of encoding again.
 *
 * @module
 */
import { encodePublish, PacketType, type Properties, type PublishPacket } from "../codec/mod.ts";
import { type Message, ownPayload, remainingExpirySec } from "../routing/mod.ts";
import type { Delivery } from "../session/mod.ts";
import { transientCopy } from "../util/byte_pool.ts";

/** How one delivery is sent. */
export interface DeliveryEncoding {
  /** The receiver speaks MQTT 5 (properties are sent). */
  v5: boolean;
  /** Packet id for QoS>0. */
  packetId: number;
  /** A resend (DUP=1). */
  dup: boolean;
  /** Now, epoch ms: the remaining Message Expiry Interval is computed from it. */
  now: number;
  /** Topic alias towards this client; `omitTopic` once the client knows the alias. */
  alias?: { alias: number; omitTopic: boolean };
}

const EMPTY_PAYLOAD = new Uint8Array(0);

/**
 * The packet handed to encodePublish for a shared encoding, reused: encodePublish keeps nothing
 * of it, and routing one message to one subscriber allocated it every time.
 */
const sharedPacket: PublishPacket = {
  type: PacketType.Publish,
  topic: "",
  payload: EMPTY_PAYLOAD,
  qos: 0,
  retain: false,
  dup: false,
  packetId: undefined,
  properties: undefined,
};

/** A message with its shared encodings. */
type MessageWithCache = Message & {
  encodedKey?: number;
  encodedBytes?: Uint8Array;
  encodedMore?: Map<number, Uint8Array>;
};

/**
 * Prepares a message to be stored (retained, queued, in flight): its payload gets a buffer of its
 * own, and shared encodings that live in a pooled slab are dropped, since a stored message would
 * keep their slab alive. Later deliveries encode it again, into buffers of their own.
 */
export function keepMessage(m: Message): void {
  if (!isPooled(m.payload)) return;
  ownPayload(m);
  const cached = m as MessageWithCache;
  cached.encodedKey = undefined;
  cached.encodedBytes = undefined;
  cached.encodedMore = undefined;
}

/** Whether `bytes` is a view into a larger buffer, such as a pooled slab. */
function isPooled(bytes: Uint8Array): boolean {
  return bytes.byteLength !== bytes.buffer.byteLength;
}

/** Encodes a PUBLISH carrying delivery `d` for one client. */
export function encodeDelivery(d: Delivery, how: DeliveryEncoding): Uint8Array {
  const m = d.message;
  const { v5, packetId, dup, now, alias } = how;
  const expirySec = remainingExpirySec(m, now);
  const perSubscriber = v5 &&
    (d.subscriptionIds !== undefined || expirySec !== undefined || alias !== undefined);
  if (!perSubscriber) {
    const cached = m as MessageWithCache;
    const key = (v5 ? 8 : 0) | (d.retain ? 4 : 0) | d.qos;
    // Most messages need one variant: keep it in two fields; a map only for further variants.
    let bytes = cached.encodedKey === key ? cached.encodedBytes : cached.encodedMore?.get(key);
    if (bytes === undefined) {
      // A message whose payload is pooled is only passed on (keepMessage runs before one is
      // stored): its shared encoding may be pooled too, instead of an ArrayBuffer of its own.
      const pooled = isPooled(m.payload);
      // A kept message going out with a packet id (in flight from a session): its shared encoding
      // would need an ArrayBuffer of its own (kept, it must not pin a slab) only to be copied for
      // the id. Encoding it for this client straight into a slab view does the same copying and
      // makes no ArrayBuffer (one per durable QoS 1 delivery, with its share of GC).
      const direct = d.qos > 0 && !pooled;
      const packet = sharedPacket;
      packet.topic = m.topic;
      packet.payload = m.payload;
      packet.qos = d.qos;
      packet.retain = d.retain;
      packet.dup = direct && dup;
      packet.packetId = d.qos === 0 ? undefined : direct ? packetId : 1;
      packet.properties = v5 ? m.properties : undefined;
      try {
        bytes = encodePublish(packet, v5, pooled || direct);
      } finally {
        packet.payload = EMPTY_PAYLOAD; // holds no message between calls
        packet.properties = undefined;
        packet.dup = false;
      }
      if (direct) return bytes;
      if (cached.encodedBytes === undefined) {
        cached.encodedKey = key;
        cached.encodedBytes = bytes;
      } else (cached.encodedMore ??= new Map()).set(key, bytes);
    }
    if (d.qos === 0) return bytes;
    // Only written to the socket (a resend encodes again): a slab view, not a new ArrayBuffer.
    const copy = transientCopy(bytes);
    if (dup) copy[0] |= 0x08;
    // The packet id follows the fixed header and the topic string.
    let off = 1;
    while (copy[off] & 0x80) off++;
    off += 1;
    off += 2 + ((copy[off] << 8) | copy[off + 1]);
    copy[off] = packetId >> 8;
    copy[off + 1] = packetId & 0xff;
    return copy;
  }
  const properties: Properties = { ...m.properties };
  if (expirySec !== undefined) properties.messageExpiryInterval = expirySec; // [MQTT-3.3.2-6]
  if (d.subscriptionIds !== undefined) properties.subscriptionIdentifiers = d.subscriptionIds;
  if (alias !== undefined) properties.topicAlias = alias.alias;
  // Written to this client only and never kept: pooled (the last argument).
  return encodePublish(
    {
      type: PacketType.Publish,
      topic: alias?.omitTopic ? "" : m.topic,
      payload: m.payload,
      qos: d.qos,
      retain: d.retain,
      dup,
      packetId: d.qos > 0 ? packetId : undefined,
      properties,
    },
    true,
    true,
  );
}
