import type { Properties, QoS } from "../codec/mod.ts";

/**
 * An application message as the broker routes it: the publisher's topic,
 * payload and forwardable properties, with an absolute expiry deadline.
 * Immutable once routed; every subscriber shares the same object.
 */
export interface Message {
  topic: string;
  payload: Uint8Array;
  /** QoS it was published with. */
  qos: QoS;
  /** RETAIN flag as published. */
  retain: boolean;
  /**
   * Properties forwarded unchanged [MQTT-3.3.2-4] [MQTT-3.3.2-15..20]: Payload Format
   * Indicator, Content Type, Response Topic, Correlation Data, User Properties.
   */
  properties?: Properties;
  /** Epoch ms after which the message is not delivered [MQTT-3.3.2-5]; absent = never. */
  expiresAt?: number;
  /** Client Identifier of the publisher, for No Local [MQTT-3.8.3-3]. */
  publisherId?: string;
  /** Broker-wide sequence number, stable across restarts when persisted. */
  id: number;
}

/** Keeps only the properties a broker forwards, dropping alias, subscription ids and expiry (recomputed). */
export function forwardableProperties(p: Properties | undefined): Properties | undefined {
  if (p === undefined) return undefined;
  const out: Properties = {};
  let any = false;
  if (p.payloadFormatIndicator !== undefined) {
    out.payloadFormatIndicator = p.payloadFormatIndicator;
    any = true;
  }
  if (p.contentType !== undefined) {
    out.contentType = p.contentType;
    any = true;
  }
  if (p.responseTopic !== undefined) {
    out.responseTopic = p.responseTopic;
    any = true;
  }
  if (p.correlationData !== undefined) {
    out.correlationData = p.correlationData;
    any = true;
  }
  if (p.userProperties !== undefined) {
    out.userProperties = p.userProperties;
    any = true;
  }
  return any ? out : undefined;
}

/**
 * Gives the message a payload buffer of its own when its payload is a view into a larger buffer.
 * Called before a message is stored (retained, queued, in flight): payloads read from clients are
 * copied into shared pooled slabs, which is cheap for a message that is only passed on, but a stored
 * view would keep its whole slab alive.
 */
export function ownPayload(message: Message): void {
  const p = message.payload;
  if (p.byteLength !== p.buffer.byteLength) message.payload = p.slice();
}

/** Seconds of life left at `now`, rounded up; undefined when the message never expires. */
export function remainingExpirySec(message: Message, now: number): number | undefined {
  if (message.expiresAt === undefined) return undefined;
  return Math.max(0, Math.ceil((message.expiresAt - now) / 1000));
}

/** Whether the message has expired at `now`. */
export function isExpired(message: Message, now: number): boolean {
  return message.expiresAt !== undefined && message.expiresAt <= now;
}
