import { malformed, MqttError, protocolError } from "./errors.ts";
import {
  type ConnectPacket,
  type Packet,
  PACKET_NAMES,
  PacketType,
  type ProtocolVersion,
  type PubAckPacket,
  type QoS,
  type Subscription,
  type Will,
} from "./packet.ts";
import { readProperties, WILL_PROPERTIES } from "./properties.ts";
import { Reader } from "./reader.ts";
import { ReasonCode, VALID_REASON_CODES } from "./reason_code.ts";

/** Which peer's packets are being decoded; decides which packet types are allowed. */
export type DecodeSide = "server" | "client" | "any";

/** Fixed-header flags each type must carry (PUBLISH is free) [MQTT-2.1.3-1]. */
const REQUIRED_FLAGS = [-1, 0, 0, -1, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, 0];

/** Packet types only a server sends: a Protocol Error when a client sends them. */
const SERVER_ONLY = (1 << PacketType.Connack) | (1 << PacketType.Suback) |
  (1 << PacketType.Unsuback) | (1 << PacketType.Pingresp);
/** Packet types only a client sends. */
const CLIENT_ONLY = (1 << PacketType.Connect) | (1 << PacketType.Subscribe) |
  (1 << PacketType.Unsubscribe) | (1 << PacketType.Pingreq);

/**
 * Checks a fixed header's type and flags, before the body is read.
 * Throws a MqttError (0x81 or 0x82) for a packet that must be refused.
 */
export function checkFixedHeader(first: number, version: number, side: DecodeSide): void {
  const type = first >> 4;
  const flags = first & 0x0f;
  if (type === 0) throw malformed("Cannot decode packet: type 0 is reserved");
  if (type === PacketType.Auth && version < 5) {
    throw malformed("Cannot decode packet: type 15 is reserved before MQTT 5");
  }
  const required = REQUIRED_FLAGS[type];
  if (required >= 0 && flags !== required) {
    throw malformed(
      `Cannot decode ${PACKET_NAMES[type]}: fixed header flags must be ${required}, got ${flags}`,
    );
  }
  if (type === PacketType.Publish && (flags & 0x06) === 0x06) {
    throw malformed("Cannot decode PUBLISH: QoS 3 [MQTT-3.3.1-4]");
  }
  if (side === "server" && (SERVER_ONLY & (1 << type)) !== 0) {
    throw protocolError(`Cannot accept ${PACKET_NAMES[type]} from a client`);
  }
  if (side === "client" && (CLIENT_ONLY & (1 << type)) !== 0) {
    throw protocolError(`Cannot accept ${PACKET_NAMES[type]} from a server`);
  }
}

/** Copies `buf[start, end)` into storage the caller owns (see `DecoderOptions.copyPayload`). */
export type CopyPayload = (buf: Uint8Array, start: number, end: number) => Uint8Array;

/**
 * Decodes one packet body (after the fixed header). The whole body is in
 * `buf[start, end)`; anything left over or missing is malformed. A PUBLISH
 * payload is copied with `copyPayload` when given, else into a new buffer.
 */
export function decodeBody(
  first: number,
  buf: Uint8Array,
  start: number,
  end: number,
  version: number,
  side: DecodeSide,
  copyPayload?: CopyPayload,
): Packet {
  const type = first >> 4;
  const r = new Reader(buf, start, end);
  const v5 = version === 5;
  let packet: Packet;
  switch (type) {
    case PacketType.Connect:
      packet = decodeConnect(r);
      break;
    case PacketType.Connack: {
      const flags = r.u8("CONNACK flags");
      if ((flags & 0xfe) !== 0) throw malformed("Cannot decode CONNACK: reserved flags set");
      const reasonCode = r.u8("CONNACK reason code");
      if (v5 && !VALID_REASON_CODES.connack.has(reasonCode)) {
        throw malformed(`Cannot decode CONNACK: invalid reason code 0x${reasonCode.toString(16)}`);
      }
      packet = {
        type,
        sessionPresent: (flags & 1) === 1,
        reasonCode,
        properties: v5 ? readProperties(r, type) : undefined,
      };
      break;
    }
    case PacketType.Publish:
      packet = decodePublish(first, r, v5, side, copyPayload);
      break;
    case PacketType.Puback:
    case PacketType.Pubrec:
    case PacketType.Pubrel:
    case PacketType.Pubcomp:
      packet = decodeAck(type, r, v5);
      break;
    case PacketType.Subscribe:
      packet = decodeSubscribe(r, v5);
      break;
    case PacketType.Suback:
    case PacketType.Unsuback: {
      const packetId = r.u16("packet identifier");
      const properties = v5 ? readProperties(r, type) : undefined;
      const reasonCodes: number[] = [];
      const valid = type === PacketType.Suback
        ? (v5 ? VALID_REASON_CODES.suback : new Set([0, 1, 2, 0x80]))
        : VALID_REASON_CODES.unsuback;
      if (type === PacketType.Unsuback && !v5) {
        // 3.1.1 UNSUBACK has no payload; the leftover check below enforces it.
      } else {
        while (r.remaining > 0) {
          const code = r.u8("reason code");
          if (!valid.has(code)) {
            throw malformed(
              `Cannot decode ${PACKET_NAMES[type]}: invalid reason code 0x${code.toString(16)}`,
            );
          }
          reasonCodes.push(code);
        }
        if (reasonCodes.length === 0) {
          throw protocolError(`Cannot accept ${PACKET_NAMES[type]} with no reason codes`);
        }
      }
      packet = { type, packetId, reasonCodes, properties } as Packet;
      break;
    }
    case PacketType.Unsubscribe: {
      const packetId = nonZeroPacketId(r, "UNSUBSCRIBE");
      const properties = v5 ? readProperties(r, type) : undefined;
      const topicFilters: string[] = [];
      while (r.remaining > 0) topicFilters.push(r.utf8("topic filter"));
      if (topicFilters.length === 0) {
        throw protocolError("Cannot accept UNSUBSCRIBE with no topic filter [MQTT-3.10.3-2]");
      }
      packet = { type, packetId, topicFilters, properties };
      break;
    }
    case PacketType.Pingreq:
    case PacketType.Pingresp:
      packet = { type };
      break;
    case PacketType.Disconnect: {
      let reasonCode = 0;
      let properties;
      if (v5 && r.remaining > 0) {
        reasonCode = r.u8("DISCONNECT reason code");
        if (!VALID_REASON_CODES.disconnect.has(reasonCode)) {
          throw malformed(
            `Cannot decode DISCONNECT: invalid reason code 0x${reasonCode.toString(16)}`,
          );
        }
        if (r.remaining > 0) properties = readProperties(r, type);
      }
      packet = { type, reasonCode, properties };
      break;
    }
    default: {
      // AUTH (type 15); version < 5 was refused in checkFixedHeader.
      let reasonCode = 0;
      let properties;
      if (r.remaining > 0) {
        reasonCode = r.u8("AUTH reason code");
        if (!VALID_REASON_CODES.auth.has(reasonCode)) {
          throw malformed(`Cannot decode AUTH: invalid reason code 0x${reasonCode.toString(16)}`);
        }
        properties = readProperties(r, PacketType.Auth);
      }
      packet = { type: PacketType.Auth, reasonCode, properties };
    }
  }
  if (r.pos !== end) {
    throw malformed(`Cannot decode ${PACKET_NAMES[type]}: ${end - r.pos} bytes left over`);
  }
  if (
    packet.type !== PacketType.Connect && "properties" in packet && packet.properties === undefined
  ) {
    delete packet.properties;
  }
  return packet;
}

function nonZeroPacketId(r: Reader, what: string): number {
  const id = r.u16("packet identifier");
  // [MQTT-2.2.1-3]
  if (id === 0) throw protocolError(`Cannot accept ${what} with packet identifier 0`);
  return id;
}

function decodeConnect(r: Reader): ConnectPacket {
  const protocolName = r.utf8("protocol name");
  const level = r.u8("protocol level");
  const known = (protocolName === "MQTT" && (level === 4 || level === 5)) ||
    (protocolName === "MQIsdp" && level === 3);
  if (!known) {
    // [MQTT-3.1.2-1] [MQTT-3.1.2-2]
    throw new MqttError(
      ReasonCode.UnsupportedProtocolVersion,
      `Cannot accept CONNECT: protocol ${JSON.stringify(protocolName)} level ${level}`,
      { protocolVersion: level },
    );
  }
  const version = level as ProtocolVersion;
  const flags = r.u8("CONNECT flags");
  if (flags & 0x01) throw malformed("Cannot decode CONNECT: reserved flag set [MQTT-3.1.2-3]");
  const hasWill = (flags & 0x04) !== 0;
  const willQos = (flags >> 3) & 0x03;
  const willRetain = (flags & 0x20) !== 0;
  const hasPassword = (flags & 0x40) !== 0;
  const hasUsername = (flags & 0x80) !== 0;
  if (willQos === 3) throw malformed("Cannot decode CONNECT: Will QoS 3");
  if (!hasWill && (willQos !== 0 || willRetain)) {
    throw malformed(
      "Cannot decode CONNECT: Will QoS or Retain set without Will flag [MQTT-3.1.2-11]",
    );
  }
  if (version < 5 && hasPassword && !hasUsername) {
    throw malformed("Cannot decode CONNECT: Password flag without User Name flag");
  }
  const keepAlive = r.u16("keep alive");
  const properties = version === 5 ? readProperties(r, PacketType.Connect) : undefined;
  const clientId = r.utf8("client identifier");
  const packet: ConnectPacket = {
    type: PacketType.Connect,
    protocolName,
    protocolVersion: version,
    cleanStart: (flags & 0x02) !== 0,
    keepAlive,
    clientId,
  };
  if (hasWill) {
    const willProperties = version === 5 ? readProperties(r, WILL_PROPERTIES) : undefined;
    const will: Will = {
      topic: r.utf8("will topic"),
      payload: r.binary("will payload"),
      qos: willQos as QoS,
      retain: willRetain,
    };
    if (willProperties) will.properties = willProperties;
    packet.will = will;
  }
  if (hasUsername) packet.username = r.utf8("user name");
  if (hasPassword) packet.password = r.binary("password");
  if (properties) packet.properties = properties;
  return packet;
}

function decodePublish(
  first: number,
  r: Reader,
  v5: boolean,
  side: DecodeSide,
  copyPayload: CopyPayload | undefined,
): Packet {
  const qos = ((first >> 1) & 0x03) as QoS;
  const dup = (first & 0x08) !== 0;
  // [MQTT-3.3.1-2] DUP must be 0 for QoS 0.
  if (dup && qos === 0) throw protocolError("Cannot accept PUBLISH: DUP set on QoS 0");
  const topic = r.utf8("topic name");
  const packetId = qos > 0 ? nonZeroPacketId(r, "PUBLISH") : undefined;
  const properties = v5 ? readProperties(r, PacketType.Publish) : undefined;
  if (side === "server" && properties?.subscriptionIdentifiers !== undefined) {
    // [MQTT-3.3.4-6]
    throw protocolError("Cannot accept PUBLISH with a Subscription Identifier from a client");
  }
  const payload = copyPayload === undefined ? r.rest() : r.restWith(copyPayload);
  const packet: Packet = {
    type: PacketType.Publish,
    topic,
    payload,
    qos,
    retain: (first & 1) === 1,
    dup,
  };
  if (packetId !== undefined) packet.packetId = packetId;
  if (properties) packet.properties = properties;
  return packet;
}

function decodeAck(type: PubAckPacket["type"], r: Reader, v5: boolean): PubAckPacket {
  const packetId = nonZeroPacketId(r, PACKET_NAMES[type]);
  let reasonCode = 0;
  let properties;
  if (v5 && r.remaining > 0) {
    reasonCode = r.u8("reason code");
    const valid = type === PacketType.Puback || type === PacketType.Pubrec
      ? VALID_REASON_CODES.puback
      : VALID_REASON_CODES.pubrel;
    if (!valid.has(reasonCode)) {
      throw malformed(
        `Cannot decode ${PACKET_NAMES[type]}: invalid reason code 0x${reasonCode.toString(16)}`,
      );
    }
    if (r.remaining > 0) properties = readProperties(r, type);
  }
  const packet: PubAckPacket = { type, packetId, reasonCode };
  if (properties) packet.properties = properties;
  return packet;
}

function decodeSubscribe(r: Reader, v5: boolean): Packet {
  const packetId = nonZeroPacketId(r, "SUBSCRIBE");
  const properties = v5 ? readProperties(r, PacketType.Subscribe) : undefined;
  const subscriptions: Subscription[] = [];
  while (r.remaining > 0) {
    const topicFilter = r.utf8("topic filter");
    const options = r.u8("subscription options");
    const qos = options & 0x03;
    if (v5) {
      if (options & 0xc0) {
        throw malformed("Cannot decode SUBSCRIBE: reserved option bits set [MQTT-3.8.3-5]");
      }
      if (qos === 3) throw protocolError("Cannot accept SUBSCRIBE: QoS 3");
      if (((options >> 4) & 0x03) === 3) {
        throw protocolError("Cannot accept SUBSCRIBE: Retain Handling 3");
      }
    } else if ((options & 0xfc) !== 0 || qos === 3) {
      // 3.1.1 [MQTT-3.8.3-4]
      throw malformed("Cannot decode SUBSCRIBE: reserved option bits or QoS 3");
    }
    subscriptions.push({
      topicFilter,
      qos: qos as QoS,
      noLocal: (options & 0x04) !== 0,
      retainAsPublished: (options & 0x08) !== 0,
      retainHandling: ((options >> 4) & 0x03) as 0 | 1 | 2,
    });
  }
  if (subscriptions.length === 0) {
    throw protocolError("Cannot accept SUBSCRIBE with no topic filter [MQTT-3.8.3-2]");
  }
  if (properties?.subscriptionIdentifiers && properties.subscriptionIdentifiers.length > 1) {
    throw protocolError("Cannot accept SUBSCRIBE with more than one Subscription Identifier");
  }
  const packet: Packet = { type: PacketType.Subscribe, packetId, subscriptions };
  if (properties) packet.properties = properties;
  return packet;
}
