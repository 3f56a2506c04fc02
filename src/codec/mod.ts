/**
 * MQTT 5.0 / 3.1.1 packet model and codec: types, reason codes, an exact-size
 * encoder and a streaming decoder. It knows nothing of sockets, sessions or
 * routing; every failure is an {@link MqttError} carrying its reason code.
 *
 * @module
 */
export * from "./packet.ts";
export * from "./reason_code.ts";
export { malformed, MqttError, protocolError } from "./errors.ts";
export { encodePacket, encodePublish } from "./encode.ts";
export {
  decodePackets,
  type DecoderOptions,
  MAX_PACKET_SIZE_LIMIT,
  PacketDecoder,
} from "./decoder.ts";
export type { CopyPayload, DecodeSide } from "./decode.ts";
export { PROPERTY_TABLE } from "./properties.ts";
export { MAX_VBI, utf8Length } from "./writer.ts";
