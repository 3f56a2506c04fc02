import assert from "node:assert/strict";
import { Metrics } from "../observe/metrics.ts";
import { SysTopics } from "./sys_topics.ts";

Deno.test("$SYS topics: Mosquitto's common names and every counter; later calls return only what changed", () => {
  const metrics = new Metrics();
  const sys = new SysTopics("mqtt-broker 1.2.3", 1_000);
  const gauges = { sessions: 4, retainedMessages: 7, subscriptions: 9 };
  const first = new Map(sys.changed(metrics, gauges, 61_000));
  assert.equal(first.get("$SYS/broker/version"), "mqtt-broker 1.2.3");
  assert.equal(first.get("$SYS/broker/uptime"), "60 seconds");
  assert.equal(first.get("$SYS/broker/clients/total"), "4");
  assert.equal(first.get("$SYS/broker/retained messages/count"), "7");
  assert.equal(first.get("$SYS/broker/subscriptions/count"), "9");
  assert.equal(first.get("$SYS/broker/counters/mqtt_connections_accepted"), "0");
  metrics.messagesReceived = 5;
  const second = new Map(sys.changed(metrics, gauges, 61_500));
  assert.deepEqual([...second.keys()].sort(), [
    "$SYS/broker/counters/mqtt_messages_received",
    "$SYS/broker/messages/received",
  ]);
  assert.equal(second.get("$SYS/broker/messages/received"), "5");
});
