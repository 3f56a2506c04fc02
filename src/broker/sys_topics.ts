/**
 * The broker's `$SYS` topics: retained messages with its state, republished every
 * `sys_interval_sec` when a value changed. The common names follow Mosquitto's
 * (`$SYS/broker/clients/connected`, ...), so existing dashboards work; every counter is also
 * under `$SYS/broker/counters/<name>` with the name the metrics endpoint uses.
 *
 * @module
 */
import { metricName, type Metrics } from "../observe/metrics.ts";

/** Levels the broker reports next to its counters. */
export interface SysGauges {
  /** Sessions held, connected or not. */
  sessions: number;
  retainedMessages: number;
  subscriptions: number;
}

/** Computes the `$SYS` values and tells which changed since the last call. */
export class SysTopics {
  readonly #version: string;
  readonly #startedAt: number;
  readonly #last = new Map<string, string>();

  constructor(version: string, startedAt: number) {
    this.#version = version;
    this.#startedAt = startedAt;
  }

  /** Every `$SYS` topic and its value now. */
  values(metrics: Metrics, gauges: SysGauges, now: number): [string, string][] {
    const out: [string, string][] = [
      ["$SYS/broker/version", this.#version],
      ["$SYS/broker/uptime", `${Math.floor((now - this.#startedAt) / 1000)} seconds`],
      ["$SYS/broker/clients/connected", String(metrics.connectionsCurrent)],
      ["$SYS/broker/clients/total", String(gauges.sessions)],
      ["$SYS/broker/messages/received", String(metrics.messagesReceived)],
      ["$SYS/broker/messages/sent", String(metrics.messagesDelivered)],
      ["$SYS/broker/bytes/received", String(metrics.bytesReceived)],
      ["$SYS/broker/retained messages/count", String(gauges.retainedMessages)],
      ["$SYS/broker/subscriptions/count", String(gauges.subscriptions)],
    ];
    for (const [key, value] of Object.entries(metrics)) {
      if (typeof value === "number") {
        out.push([`$SYS/broker/counters/${metricName(key)}`, String(value)]);
      }
    }
    return out;
  }

  /** The values that differ from what the previous call returned (all of them the first time). */
  changed(metrics: Metrics, gauges: SysGauges, now: number): [string, string][] {
    const out: [string, string][] = [];
    for (const [topic, value] of this.values(metrics, gauges, now)) {
      if (this.#last.get(topic) === value) continue;
      this.#last.set(topic, value);
      out.push([topic, value]);
    }
    return out;
  }
}
