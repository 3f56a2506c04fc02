/**
 * Broker counters and gauges, readable as a plain object or Prometheus text.
 *
 * @module
 */

/** Every counter the broker keeps. Names say what was counted. */
export class Metrics {
  connectionsAccepted = 0;
  connectionsRefused = 0;
  connectionsCurrent = 0;
  packetsReceived = 0;
  packetsSent = 0;
  bytesReceived = 0;
  messagesReceived = 0;
  messagesDelivered = 0;
  /** QoS 0 messages dropped because a connection's unsent bytes passed the soft limit. */
  qos0DroppedSlowReader = 0;
  /** Connections closed because their unsent bytes passed the hard limit. */
  slowReaderDisconnects = 0;
  /** Messages dropped because a session queue was full (count or bytes). */
  queueFullDropped = 0;
  /** QoS 0 messages not queued for an offline session. */
  offlineQos0Dropped = 0;
  /** Messages dropped because they exceed the client's Maximum Packet Size. */
  oversizeDropped = 0;
  /** Messages that expired before delivery. */
  expiredDropped = 0;
  /** Outgoing QoS>0 messages whose acknowledgement was overdue. */
  overdueAcks = 0;
  /** QoS>0 messages resent (3.1.1 timed resend, or on session resumption). */
  retransmissions = 0;
  retainedRefused = 0;
  protocolErrors = 0;
  keepAliveTimeouts = 0;
  connectTimeouts = 0;
  willsPublished = 0;
  sessionsExpired = 0;
  takeovers = 0;
  /** CONNECTs refused with 0x9F because their address connected too often. */
  connectRateRefused = 0;
  /** Connections closed with 0x96 for publishing too fast. */
  publishRateDisconnects = 0;
  /** Topic names and filters refused as invalid or beyond the length / level limits. */
  invalidTopicRefused = 0;
  /** Messages of an ended shared-subscription member given to another member of its group. */
  sharedRedelivered = 0;
  /** Subscriptions refused with 0x97 because the client holds the most allowed. */
  subscriptionQuotaRefused = 0;

  /**
   * Prometheus text exposition (format 0.0.4) of every counter, plus `gauges` (values that go up
   * and down, such as sessions held). Names are `mqtt_` and the field in snake case.
   */
  toPrometheus(gauges: Record<string, number> = {}): string {
    let out = "";
    const emit = (key: string, value: number, type: "counter" | "gauge") => {
      const name = metricName(key);
      out += `# TYPE ${name} ${type}\n${name} ${value}\n`;
    };
    for (const [key, value] of Object.entries(this)) {
      if (typeof value !== "number") continue;
      emit(key, value, GAUGE_FIELDS.has(key) ? "gauge" : "counter");
    }
    for (const [key, value] of Object.entries(gauges)) emit(key, value, "gauge");
    return out;
  }
}

/** Fields of {@link Metrics} that are levels, not counts. */
const GAUGE_FIELDS = new Set(["connectionsCurrent"]);

/** `connectionsAccepted` → `mqtt_connections_accepted`. */
export function metricName(key: string): string {
  return "mqtt_" + key.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());
}
