import { ReasonCode } from "./reason_code.ts";

/**
 * An MQTT protocol failure that carries the reason code to send the peer
 * (0x81 Malformed Packet, 0x82 Protocol Error, 0x95 Packet too large, ...).
 * It is the one error vocabulary from the decoder to the wire.
 */
export class MqttError extends Error {
  /** The MQTT 5 reason code that describes the failure. */
  readonly reasonCode: number;
  /** Protocol level of the CONNECT that failed, when known (so a refusal can use its format). */
  readonly protocolVersion?: number;
  constructor(reasonCode: number, message: string, options?: { protocolVersion?: number }) {
    super(message);
    this.name = "MqttError";
    this.reasonCode = reasonCode;
    this.protocolVersion = options?.protocolVersion;
  }
}

/** Shorthand for a Malformed Packet (0x81) error. */
export function malformed(message: string): MqttError {
  return new MqttError(ReasonCode.MalformedPacket, message);
}

/** Shorthand for a Protocol Error (0x82) error. */
export function protocolError(message: string): MqttError {
  return new MqttError(ReasonCode.ProtocolError, message);
}
