/**
 * Measures how long a broker takes to restore a large Deno KV store.
 *
 * Fills a fresh store through the KvSessionStore API with N persistent
 * sessions (one subscription each) and N retained messages, then, in a fresh
 * process (so the fill does not inflate the figures), times
 * `new Broker(...).start()` on it and reports the time and the RSS.
 *
 * Usage: deno run -A scripts/kv_startup.ts [--sessions 100000] [--retained 100000] [--keep]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Broker, resolveOptions } from "../src/broker/mod.ts";
import { KvSessionStore } from "../src/session/mod.ts";

const MB = 1024 * 1024;

function mb(bytes: number): string {
  return `${(bytes / MB).toFixed(1)} MB`;
}

/** Child mode: start a broker on `path`, print one JSON line with the figures, stop it. */
async function measureStart(path: string): Promise<void> {
  const rssBefore = Deno.memoryUsage().rss;
  const broker = new Broker(
    resolveOptions({
      listeners: [{ type: "tcp", host: "127.0.0.1", port: 0 }],
      dataPath: path,
    }),
  );
  const t0 = performance.now();
  await broker.start();
  const startMs = performance.now() - t0;
  const mem = Deno.memoryUsage();
  const result = {
    startMs,
    sessions: broker.sessionCount,
    retained: broker.retained.size,
    rssBefore,
    rss: mem.rss,
    heapUsed: mem.heapUsed,
  };
  const t1 = performance.now();
  await broker.stop();
  console.log(JSON.stringify({ ...result, stopMs: performance.now() - t1 }));
}

async function fill(path: string, sessions: number, retained: number): Promise<number> {
  const t0 = performance.now();
  const store = await KvSessionStore.open(path);
  await store.load();
  const now = Date.now();
  const chunk = 5_000;
  for (let i = 0; i < sessions; i++) {
    const clientId = `device-${i}`;
    store.saveSession({
      clientId,
      protocolVersion: 5,
      expirySec: 86_400,
      expiresAt: now + 86_400_000,
    });
    store.saveSubscription(clientId, {
      clientId,
      rawFilter: `devices/${i}/cmd/#`,
      qos: 1,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0,
    });
    if (i % chunk === chunk - 1) await store.flush();
  }
  const encoder = new TextEncoder();
  for (let i = 0; i < retained; i++) {
    store.saveRetained({
      id: i + 1,
      topic: `sensors/${i}/state`,
      payload: encoder.encode(JSON.stringify({ sensor: i, value: i % 97, unit: "C" })),
      qos: 1,
      retain: true,
      publisherId: `device-${i % Math.max(sessions, 1)}`,
    });
    if (i % chunk === chunk - 1) await store.flush();
  }
  await store.flush();
  await store.close();
  return performance.now() - t0;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      sessions: { type: "string", default: "100000" },
      retained: { type: "string", default: "100000" },
      keep: { type: "boolean", default: false },
      start: { type: "string" },
    },
  });
  if (values.start !== undefined) return await measureStart(values.start);

  const sessions = Number(values.sessions);
  const retained = Number(values.retained);
  const dir = await Deno.makeTempDir({ prefix: "kv-startup-" });
  const path = `${dir}/broker.db`;
  try {
    console.log(
      `filling ${path}: ${sessions} sessions (1 subscription each), ${retained} retained`,
    );
    const fillMs = await fill(path, sessions, retained);
    const size = (await Deno.stat(path)).size;
    console.log(`fill: ${(fillMs / 1000).toFixed(1)} s, database ${mb(size)}`);

    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname, "--start", path],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error(`measuring child failed with code ${out.code}`);
    const r = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
    console.log(
      `restore: Broker.start() ${r.startMs.toFixed(0)} ms for ${r.sessions} sessions and ` +
        `${r.retained} retained messages`,
    );
    console.log(
      `memory after start: RSS ${mb(r.rss)} (${mb(r.rssBefore)} before start), ` +
        `heap used ${mb(r.heapUsed)}; stop ${r.stopMs.toFixed(0)} ms`,
    );
  } finally {
    if (values.keep) console.log(`kept ${dir}`);
    else await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
