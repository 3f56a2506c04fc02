/**
 * PUBLISH and PUBREL from a client: the inbound half of QoS 0/1/2.
 *
 * @module
 */
import { PacketType, type PubAckPacket, type PublishPacket, ReasonCode } from "../codec/mod.ts";
import { forwardableProperties, type Message } from "../routing/mod.ts";
import { topicNameError } from "../topic/mod.ts";
import type { TokenBucket } from "../util/token_bucket.ts";
import { isUtf8 } from "../util/utf8.ts";
import type { ClientConnection } from "./client.ts";

/** Per-connection inbound state; none of it is session state (4.9, [MQTT-3.3.2-7]). */
export interface InboundState {
  /** Topic aliases the client set on this connection. */
  aliases?: Map<number, string>;
  /** QoS 1 messages accepted and not yet acknowledged (waiting for the store). */
  pendingQos1: number;
  /**
   * QoS 2 ids received on this connection and awaiting PUBREL. The Receive Maximum quota resets
   * with each connection (4.9), so ids left from an earlier one do not count.
   */
  qos2Ids?: Set<number>;
  /** Publish rate limit, when configured. */
  publishBucket?: TokenBucket;
}

/**
 * PUBLISH from the client (3.3): aliases, limits and policy checks, routing, then the
 * acknowledgement — after the store commit when the message created durable state.
 */
export function handlePublish(
  client: ClientConnection,
  p: PublishPacket,
): Promise<void> | undefined {
  const inbound = client.inbound;
  if (inbound.publishBucket !== undefined && !inbound.publishBucket.take(client.lastActivity)) {
    client.broker.metrics.publishRateDisconnects++;
    client.disconnect(ReasonCode.MessageRateTooHigh, "publish rate above the configured limit");
    return;
  }
  const broker = client.broker;
  const opts = broker.options;
  const session = client.session!;
  let topic = p.topic;
  const props = p.properties;
  if (props?.topicAlias !== undefined) {
    const alias = props.topicAlias;
    if (alias === 0 || alias > opts.topicAliasMaximum) {
      client.disconnect(
        ReasonCode.TopicAliasInvalid,
        `topic alias ${alias} outside 1..${opts.topicAliasMaximum}`,
      );
      return;
    }
    if (topic.length > 0) (inbound.aliases ??= new Map()).set(alias, topic);
    else {
      const mapped = inbound.aliases?.get(alias);
      if (mapped === undefined) {
        client.disconnect(ReasonCode.ProtocolError, `topic alias ${alias} is not mapped`);
        return;
      }
      topic = mapped;
    }
  } else if (topic.length === 0) {
    client.disconnect(ReasonCode.ProtocolError, "empty topic name without topic alias");
    return;
  }
  if (p.qos > opts.maximumQos) {
    client.disconnect(
      ReasonCode.QoSNotSupported,
      `QoS ${p.qos} above Maximum QoS ${opts.maximumQos}`,
    );
    return;
  }
  if (p.retain && !opts.retainAvailable) {
    client.disconnect(ReasonCode.RetainNotSupported, "retain is not supported");
    return;
  }
  if (props?.responseTopic !== undefined && topicNameError(props.responseTopic) !== undefined) {
    // [MQTT-3.3.2-14]
    client.disconnect(ReasonCode.ProtocolError, "Response Topic is not a valid topic name");
    return;
  }
  if (p.qos > 0) {
    const duplicateQos2 = p.qos === 2 && session.inboundQos2.has(p.packetId!);
    if (
      !duplicateQos2 &&
      (inbound.qos2Ids?.size ?? 0) + inbound.pendingQos1 >= opts.receiveMaximum
    ) {
      // 3.3.4: more unacknowledged QoS>0 PUBLISH than our Receive Maximum.
      client.disconnect(ReasonCode.ReceiveMaximumExceeded, "Receive Maximum exceeded");
      return;
    }
    if (duplicateQos2) {
      // [MQTT-4.3.3-10] a re-sent PUBLISH before PUBREL is acknowledged again, not delivered again.
      client.sendAck(PacketType.Pubrec, p.packetId!, 0);
      return;
    }
  }
  broker.metrics.messagesReceived++;
  let refusal = 0;
  let why = "";
  const nameError = topicNameError(topic, broker.topicLimits);
  if (nameError !== undefined) {
    refusal = ReasonCode.TopicNameInvalid;
    why = nameError;
    broker.metrics.invalidTopicRefused++;
  } else if (topic.startsWith("$")) {
    // 4.7.2: `$` topics are the server's; clients may not publish to them.
    refusal = ReasonCode.NotAuthorized;
    why = "topics starting with $ are reserved";
  } else if (props?.payloadFormatIndicator === 1 && !isUtf8(p.payload)) {
    refusal = ReasonCode.PayloadFormatInvalid;
    why = "payload is not UTF-8 as its Payload Format Indicator says";
  } else if (!client.mayPublish(topic)) {
    refusal = ReasonCode.NotAuthorized;
    why = "not authorized";
  }
  if (refusal !== 0) {
    broker.logger.info("publish refused", {
      clientId: client.clientId,
      topic,
      reason: `0x${refusal.toString(16)}`,
      why,
    });
    if (!client.v5) {
      if (refusal === ReasonCode.TopicNameInvalid) {
        client.closeNow(`invalid topic name: ${why}`); // 3.1.1: a protocol violation closes
        return;
      }
      // 3.1.1 [MQTT-3.3.5-2]: acknowledge as usual and drop.
      if (p.qos === 1) client.sendAck(PacketType.Puback, p.packetId!, 0);
      else if (p.qos === 2) {
        session.inboundQos2.add(p.packetId!);
        (inbound.qos2Ids ??= new Set()).add(p.packetId!);
        client.sendAck(PacketType.Pubrec, p.packetId!, 0);
      }
      return;
    }
    if (p.qos === 0) {
      if (refusal === ReasonCode.TopicNameInvalid) client.disconnect(refusal, why);
      return;
    }
    // A PUBREC >= 0x80 completes the exchange: the id is free again [MQTT-4.3.3-12].
    client.sendAck(p.qos === 1 ? PacketType.Puback : PacketType.Pubrec, p.packetId!, refusal, why);
    return;
  }
  const now = Date.now();
  const expiry = props?.messageExpiryInterval;
  const message: Message = {
    topic,
    payload: p.payload,
    qos: p.qos,
    retain: p.retain,
    properties: forwardableProperties(props),
    expiresAt: expiry !== undefined ? now + expiry * 1000 : undefined,
    publisherId: client.clientId,
    id: broker.nextMessageId(),
  };
  const matched = broker.publish(message, now);
  if (p.qos === 0) return;
  const code = matched === 0 && client.v5 ? ReasonCode.NoMatchingSubscribers : 0;
  if (p.qos === 2) {
    session.inboundQos2.add(p.packetId!);
    (inbound.qos2Ids ??= new Set()).add(p.packetId!);
    broker.persistInboundQos2(session, p.packetId!, true);
  }
  const ackType = p.qos === 1 ? PacketType.Puback : PacketType.Pubrec;
  if (!broker.store.dirty) {
    client.sendAck(ackType, p.packetId!, code);
    return;
  }
  // Durability rule: the ack goes out only once the message and its queue entries are committed.
  if (p.qos === 1) inbound.pendingQos1++;
  client.ackAfterCommit(broker.store.flush(), ackType, p.packetId!, code);
}

/** PUBREL from the client: frees the QoS 2 id (after commit) and answers PUBCOMP. */
export function handlePubrel(
  client: ClientConnection,
  p: PubAckPacket,
): Promise<void> | undefined {
  const inbound = client.inbound;
  const session = client.session!;
  let code = 0;
  inbound.qos2Ids?.delete(p.packetId);
  if (session.inboundQos2.delete(p.packetId)) {
    client.broker.persistInboundQos2(session, p.packetId, false);
  } else code = ReasonCode.PacketIdentifierNotFound; // [MQTT-4.3.3-11]
  if (!client.broker.store.dirty) {
    client.sendAck(PacketType.Pubcomp, p.packetId, code);
    return;
  }
  // The id's release must be durable before PUBCOMP lets the client reuse it; a stale id after a
  // restart would swallow the client's next message with that id as a duplicate.
  const ack = () => {
    if (client.state === "connected") client.sendAck(PacketType.Pubcomp, p.packetId, code);
  };
  return client.broker.store.flush().then(ack, (err) => {
    client.broker.logger.error("store commit failed; PUBCOMP held back", {
      clientId: client.clientId,
      error: err,
    });
  });
}
