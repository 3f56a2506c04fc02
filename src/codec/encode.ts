import {
  type ConnectPacket,
  type Packet,
  PacketType,
  type PublishPacket,
  type SubscribePacket,
} from "./packet.ts";
import { binaryFieldSize, propertiesSize, writeProperties } from "./properties.ts";
import { MAX_VBI, stringFieldSize, vbiSize, Writer } from "./writer.ts";
import { transientBytes } from "../util/byte_pool.ts";

const PINGREQ_BYTES = new Uint8Array([0xc0, 0x00]);
const PINGRESP_BYTES = new Uint8Array([0xd0, 0x00]);

/**
 * Encodes a packet for protocol `version` (3, 4 or 5) into one exactly-sized
 * buffer. Properties are written only for version 5. Invalid input (a string
 * over 65,535 bytes, a packet over the Remaining Length limit) throws RangeError.
 * A short acknowledgement may be a view into a shared slab (see util/byte_pool.ts):
 * use its byteOffset and byteLength, not its `.buffer` alone.
 */
export function encodePacket(packet: Packet, version: number = 5): Uint8Array {
  const v5 = version === 5;
  switch (packet.type) {
    case PacketType.Publish:
      return encodePublish(packet, v5);
    case PacketType.Puback:
    case PacketType.Pubrec:
    case PacketType.Pubrel:
    case PacketType.Pubcomp: {
      const flags = packet.type === PacketType.Pubrel ? 0x02 : 0;
      const code = packet.reasonCode ?? 0;
      if (!v5 || (code === 0 && packet.properties === undefined)) {
        // Written straight to a socket: a slab view instead of an ArrayBuffer per acknowledgement.
        const out = transientBytes(4);
        out[0] = (packet.type << 4) | flags;
        out[1] = 2;
        out[2] = packet.packetId >> 8;
        out[3] = packet.packetId & 0xff;
        return out;
      }
      const propSize = propertiesSize(packet.properties);
      // 3.4.2.1: the Property Length may be omitted when there are no properties.
      const rl = 3 + (propSize > 0 ? vbiSize(propSize) + propSize : 0);
      const w = start(packet.type, flags, rl);
      w.u16(packet.packetId);
      w.u8(code);
      if (propSize > 0) writeProperties(w, packet.properties, propSize);
      return w.buf;
    }
    case PacketType.Connect:
      return encodeConnect(packet);
    case PacketType.Connack: {
      const propSize = v5 ? propertiesSize(packet.properties) : 0;
      const rl = 2 + (v5 ? vbiSize(propSize) + propSize : 0);
      const w = start(packet.type, 0, rl);
      w.u8(packet.sessionPresent ? 1 : 0);
      w.u8(packet.reasonCode);
      if (v5) writeProperties(w, packet.properties, propSize);
      return w.buf;
    }
    case PacketType.Subscribe:
      return encodeSubscribe(packet, v5);
    case PacketType.Suback:
    case PacketType.Unsuback: {
      const codes = v5 || packet.type === PacketType.Suback ? packet.reasonCodes : [];
      const propSize = v5 ? propertiesSize(packet.properties) : 0;
      const rl = 2 + (v5 ? vbiSize(propSize) + propSize : 0) + codes.length;
      const w = start(packet.type, 0, rl);
      w.u16(packet.packetId);
      if (v5) writeProperties(w, packet.properties, propSize);
      for (const c of codes) w.u8(c);
      return w.buf;
    }
    case PacketType.Unsubscribe: {
      const propSize = v5 ? propertiesSize(packet.properties) : 0;
      let rl = 2 + (v5 ? vbiSize(propSize) + propSize : 0);
      for (const f of packet.topicFilters) rl += stringFieldSize(f);
      const w = start(packet.type, 0x02, rl);
      w.u16(packet.packetId);
      if (v5) writeProperties(w, packet.properties, propSize);
      for (const f of packet.topicFilters) w.utf8(f);
      return w.buf;
    }
    case PacketType.Pingreq:
      return PINGREQ_BYTES.slice();
    case PacketType.Pingresp:
      return PINGRESP_BYTES.slice();
    case PacketType.Disconnect:
    case PacketType.Auth: {
      if (!v5) {
        if (packet.type === PacketType.Auth) {
          throw new RangeError("Cannot encode AUTH before MQTT 5");
        }
        return new Uint8Array([0xe0, 0x00]);
      }
      const code = packet.reasonCode ?? 0;
      const propSize = propertiesSize(packet.properties);
      if (code === 0 && propSize === 0) return new Uint8Array([packet.type << 4, 0x00]);
      // DISCONNECT may end after its reason code (3.14.2.2.1); AUTH may not: only the
      // whole of reason code + Property Length can be omitted (3.15.2.1), so RL 1 is malformed.
      const withProps = propSize > 0 || packet.type === PacketType.Auth;
      const rl = 1 + (withProps ? vbiSize(propSize) + propSize : 0);
      const w = start(packet.type, 0, rl);
      w.u8(code);
      if (withProps) writeProperties(w, packet.properties, propSize);
      return w.buf;
    }
  }
  throw new TypeError(`Cannot encode packet of type ${(packet as { type: unknown }).type}`);
}

function start(type: number, flags: number, remainingLength: number, transient = false): Writer {
  if (remainingLength > MAX_VBI) {
    throw new RangeError(
      `Cannot encode packet: remaining length ${remainingLength} above ${MAX_VBI}`,
    );
  }
  const size = 1 + vbiSize(remainingLength) + remainingLength;
  const w = new Writer(transient ? transientBytes(size) : new Uint8Array(size));
  w.u8((type << 4) | flags);
  w.vbi(remainingLength);
  return w;
}

/**
 * Encodes a PUBLISH. Exposed for the routing hot path, which encodes once per distinct variant.
 * `transient` bytes may be a view into a shared slab (util/byte_pool.ts): for bytes that are
 * written to a socket and dropped, never for bytes that are kept.
 */
export function encodePublish(
  packet: PublishPacket,
  v5: boolean,
  transient = false,
): Uint8Array {
  const qos = packet.qos;
  const propSize = v5 ? propertiesSize(packet.properties) : 0;
  const rl = stringFieldSize(packet.topic) + (qos > 0 ? 2 : 0) +
    (v5 ? vbiSize(propSize) + propSize : 0) + packet.payload.length;
  const flags = (packet.dup ? 0x08 : 0) | (qos << 1) | (packet.retain ? 1 : 0);
  const w = start(PacketType.Publish, flags, rl, transient);
  w.utf8(packet.topic);
  if (qos > 0) {
    if (!packet.packetId) {
      throw new RangeError("Cannot encode QoS>0 PUBLISH without a packet identifier");
    }
    w.u16(packet.packetId);
  }
  if (v5) writeProperties(w, packet.properties, propSize);
  w.bytes(packet.payload);
  return w.buf;
}

function encodeConnect(p: ConnectPacket): Uint8Array {
  const version = p.protocolVersion;
  const v5 = version === 5;
  const name = p.protocolName ?? (version === 3 ? "MQIsdp" : "MQTT");
  const propSize = v5 ? propertiesSize(p.properties) : 0;
  let rl = stringFieldSize(name) + 1 + 1 + 2 + (v5 ? vbiSize(propSize) + propSize : 0) +
    stringFieldSize(p.clientId);
  let willPropSize = 0;
  if (p.will) {
    if (v5) {
      willPropSize = propertiesSize(p.will.properties);
      rl += vbiSize(willPropSize) + willPropSize;
    }
    rl += stringFieldSize(p.will.topic) + binaryFieldSize(p.will.payload);
  }
  if (p.username !== undefined) rl += stringFieldSize(p.username);
  if (p.password !== undefined) rl += binaryFieldSize(p.password);
  let flags = p.cleanStart ? 0x02 : 0;
  if (p.will) flags |= 0x04 | (p.will.qos << 3) | (p.will.retain ? 0x20 : 0);
  if (p.password !== undefined) flags |= 0x40;
  if (p.username !== undefined) flags |= 0x80;
  const w = start(PacketType.Connect, 0, rl);
  w.utf8(name);
  w.u8(version);
  w.u8(flags);
  w.u16(p.keepAlive);
  if (v5) writeProperties(w, p.properties, propSize);
  w.utf8(p.clientId);
  if (p.will) {
    if (v5) writeProperties(w, p.will.properties, willPropSize);
    w.utf8(p.will.topic);
    w.binary(p.will.payload);
  }
  if (p.username !== undefined) w.utf8(p.username);
  if (p.password !== undefined) w.binary(p.password);
  return w.buf;
}

function encodeSubscribe(p: SubscribePacket, v5: boolean): Uint8Array {
  const propSize = v5 ? propertiesSize(p.properties) : 0;
  let rl = 2 + (v5 ? vbiSize(propSize) + propSize : 0);
  for (const s of p.subscriptions) rl += stringFieldSize(s.topicFilter) + 1;
  const w = start(PacketType.Subscribe, 0x02, rl);
  w.u16(p.packetId);
  if (v5) writeProperties(w, p.properties, propSize);
  for (const s of p.subscriptions) {
    w.utf8(s.topicFilter);
    let options = s.qos;
    if (v5) {
      if (s.noLocal) options |= 0x04;
      if (s.retainAsPublished) options |= 0x08;
      options |= (s.retainHandling ?? 0) << 4;
    }
    w.u8(options);
  }
  return w.buf;
}
