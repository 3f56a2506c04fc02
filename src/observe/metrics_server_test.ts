import assert from "node:assert/strict";
import { Metrics } from "./metrics.ts";
import { MetricsServer } from "./metrics_server.ts";

Deno.test("metrics endpoint: /metrics serves Prometheus text with TYPE lines, /healthz ok, others 404/405", async () => {
  const metrics = new Metrics();
  metrics.connectionsAccepted = 3;
  metrics.connectionsCurrent = 2;
  const server = MetricsServer.open({
    host: "127.0.0.1",
    port: 0,
    render: () => metrics.toPrometheus({ sessions: 5 }),
  });
  try {
    const base = `http://127.0.0.1:${server.port}`;
    const res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    assert.match(text, /^# TYPE mqtt_connections_accepted counter\nmqtt_connections_accepted 3$/m);
    assert.match(text, /^# TYPE mqtt_connections_current gauge\nmqtt_connections_current 2$/m);
    assert.match(text, /^# TYPE mqtt_sessions gauge\nmqtt_sessions 5$/m);
    const health = await fetch(`${base}/healthz`);
    assert.equal(await health.text(), "ok\n");
    const missing = await fetch(`${base}/nope`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    const post = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
    assert.equal(post.status, 405);
    await post.body?.cancel();
  } finally {
    await server.close();
  }
});
