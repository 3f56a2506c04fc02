/**
 * SUBSCRIBE and UNSUBSCRIBE handling for one client connection.
 *
 * @module
 */
import {
  encodePacket,
  PacketType,
  ReasonCode,
  type SubscribePacket,
  type UnsubscribePacket,
} from "../codec/mod.ts";
import { parseTopicFilter } from "../topic/mod.ts";
import type { ClientConnection } from "./client.ts";

/**
 * SUBSCRIBE (3.8): one code per filter in order, each handled as if sent alone; the SUBACK waits
 * for the subscriptions to be committed, then matching retained messages follow.
 */
export function handleSubscribe(
  client: ClientConnection,
  p: SubscribePacket,
): Promise<void> | undefined {
  const broker = client.broker;
  const opts = broker.options;
  const session = client.session!;
  const subId = p.properties?.subscriptionIdentifiers?.[0];
  if (subId !== undefined && !opts.subscriptionIdentifierAvailable) {
    client.disconnect(
      ReasonCode.SubscriptionIdentifiersNotSupported,
      "Subscription Identifiers are not supported",
    );
    return;
  }
  const codes: number[] = [];
  const granted: { index: number; existed: boolean; filter: string; shared: boolean }[] = [];
  for (let i = 0; i < p.subscriptions.length; i++) {
    const sub = p.subscriptions[i];
    const parsed = parseTopicFilter(sub.topicFilter, broker.topicLimits);
    if (typeof parsed === "string") {
      broker.metrics.invalidTopicRefused++;
      codes.push(client.v5 ? ReasonCode.TopicFilterInvalid : 0x80);
      continue;
    }
    if (parsed.shareGroup !== undefined) {
      if (!opts.sharedSubscriptionAvailable) {
        client.disconnect(
          ReasonCode.SharedSubscriptionsNotSupported,
          "shared subscriptions are not supported",
        );
        return;
      }
      if (sub.noLocal && client.v5) {
        client.disconnect(
          ReasonCode.ProtocolError,
          "No Local on a shared subscription [MQTT-3.8.3-4]",
        );
        return;
      }
    }
    if (parsed.hasWildcard && !opts.wildcardSubscriptionAvailable) {
      client.disconnect(
        ReasonCode.WildcardSubscriptionsNotSupported,
        "wildcard subscriptions are not supported",
      );
      return;
    }
    const existing = session.subscription(sub.topicFilter);
    if (!existing && session.subscriptionCount >= opts.maxSubscriptionsPerClient) {
      broker.metrics.subscriptionQuotaRefused++;
      codes.push(client.v5 ? ReasonCode.QuotaExceeded : 0x80);
      continue;
    }
    if (!client.maySubscribe(sub.topicFilter)) {
      codes.push(client.v5 ? ReasonCode.NotAuthorized : 0x80);
      continue;
    }
    const qos = Math.min(sub.qos, opts.maximumQos) as 0 | 1 | 2; // [MQTT-3.8.4-7]
    broker.subscribe(session, {
      clientId: session.clientId,
      rawFilter: sub.topicFilter,
      qos,
      // 3.1.1 subscriptions act as No Local 0, Retain As Published 0, Retain Handling 0 (checklist §12).
      noLocal: client.v5 && sub.noLocal,
      retainAsPublished: client.v5 && sub.retainAsPublished,
      retainHandling: client.v5 ? sub.retainHandling : 0,
      subscriptionId: subId,
      shareGroup: parsed.shareGroup,
      // Set by the broker; present from the start so the entry keeps one shape (in-object fields).
      owner: undefined,
    }, parsed.filter);
    codes.push(qos);
    granted.push({
      index: i,
      existed: existing !== undefined,
      filter: parsed.filter,
      shared: parsed.shareGroup !== undefined,
    });
  }
  const finish = () => {
    if (client.state !== "connected") return;
    client.send(
      encodePacket(
        { type: PacketType.Suback, packetId: p.packetId, reasonCodes: codes },
        client.protocolVersion,
      ),
    );
    // Retained messages after the SUBACK: Retain Handling 0 always, 1 only for a new subscription,
    // 2 never [MQTT-3.3.1-9..11]; never on shared subscriptions.
    const now = Date.now();
    for (const g of granted) {
      const sub = p.subscriptions[g.index];
      if (g.shared) continue;
      const rh = client.v5 ? sub.retainHandling : 0;
      if (rh === 2 || (rh === 1 && g.existed)) continue;
      const entry = session.subscription(sub.topicFilter)!;
      for (const m of broker.retained.match(g.filter, now)) {
        if (!client.mayReceive(m.topic)) continue;
        client.deliver({
          message: m,
          qos: Math.min(m.qos, entry.qos) as 0 | 1 | 2,
          retain: true,
          subscriptionIds: entry.subscriptionId !== undefined ? [entry.subscriptionId] : undefined,
        }, now);
      }
    }
  };
  if (!broker.store.dirty) {
    finish();
    return;
  }
  // A SUBSCRIBE is acknowledged only after the subscription is committed.
  return broker.store.flush().then(finish, (err) => {
    broker.logger.error("store commit failed; subscribe refused", {
      clientId: client.clientId,
      error: err,
    });
    if (client.state === "connected") {
      client.send(encodePacket(
        {
          type: PacketType.Suback,
          packetId: p.packetId,
          reasonCodes: codes.map(() => client.v5 ? ReasonCode.UnspecifiedError : 0x80),
        },
        client.protocolVersion,
      ));
    }
  });
}

/** UNSUBSCRIBE (3.10): one code per filter; the UNSUBACK waits for the removal to be committed. */
export function handleUnsubscribe(
  client: ClientConnection,
  p: UnsubscribePacket,
): Promise<void> | undefined {
  const broker = client.broker;
  const session = client.session!;
  const codes = p.topicFilters.map((raw) => {
    const parsed = parseTopicFilter(raw, broker.topicLimits);
    if (typeof parsed === "string") return ReasonCode.TopicFilterInvalid;
    // [MQTT-3.10.4-1] filters compare character by character.
    return broker.unsubscribe(session, raw) ? ReasonCode.Success : ReasonCode.NoSubscriptionExisted;
  });
  const finish = () => {
    if (client.state === "connected") {
      client.send(
        encodePacket(
          { type: PacketType.Unsuback, packetId: p.packetId, reasonCodes: codes },
          client.protocolVersion,
        ),
      );
    }
  };
  if (!broker.store.dirty) {
    finish();
    return;
  }
  return broker.store.flush().then(finish, finish);
}
