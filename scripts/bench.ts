/**
 * Load generator for MQTT brokers: raw sockets, pre-encoded packets, many connections in one
 * process. Measures throughput, latency, connection and subscription scale, counts every lost,
 * duplicated and misrouted message, and reads the broker's CPU time from /proc.
 *
 *   deno task bench:load [options]
 *   deno run -A scripts/bench.ts --compare mosquitto [--quick] [--rounds N]
 *   deno run -A scripts/bench.ts --host H --port P [--pid PID]
 *
 * See docs/performance.md and `--help`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  type BrokerKind,
  openFileLimits,
  type RunningBroker,
  startBroker,
  stopAllBrokers,
  type Target,
} from "./bench/brokers.ts";
import type { Ctx, RunResult } from "./bench/core.ts";
import { countsTable, figureTable, type Results } from "./bench/report.ts";
import { type Scenario, SCENARIOS } from "./bench/scenarios.ts";

const HELP = `Usage: deno run -A scripts/bench.ts [options]

Targets (one of):
  (default)               start our broker (main.ts, --data :memory:) for each run
  --broker LIST           start these brokers: ours, ours-kv (Deno KV data path), mosquitto
  --compare mosquitto     ours and Mosquitto in alternation, with ratios ours ÷ mosquitto;
                          scenarios marked durable also run ours-kv
  --host H --port P       an already running broker (add --pid PID for CPU and memory figures)

Options:
  --scenarios a,b,c       run only these (see --list)
  --rounds N              runs per scenario and broker, medians reported (default 3, quick 1)
  --quick                 half the counts and 1 round: about a minute
  --scale F               multiply every message and connection count by F (default 1)
  --window W              QoS 1 publisher window: unacknowledged PUBLISH packets (default 100)
  --subs-passes N         messages to each subscriber in subs-10k (default 3); more passes weigh
                          the steady cost of a delivery more than each subscriber's first one
  --timeout S             per scenario run, seconds (default 60, quick 30)
  --ours DIR              run our broker from the main.ts in DIR (default: this checkout), e.g.
                          a snapshot made with \`git archive\` while the tree is being edited
  --mosquitto-nodelay     start Mosquitto with set_tcp_nodelay true (default: its default, off)
  --json FILE             also write every run's figures as JSON
  --list                  list the scenarios and exit
  -h, --help              this help`;

/** --quick runs every scenario with this fraction of the full counts. */
const QUICK_SCALE = 0.5;

interface Options {
  scenarios: Scenario[];
  /** Multiplies the scenarios' counts. */
  scale: number;
  rounds: number;
  quick: boolean;
  window: number;
  /** Messages to each subscriber in subs-10k. */
  subsPasses: number;
  timeoutMs: number;
  json?: string;
  external?: Target;
  brokers: ("ours" | "ours-kv" | "mosquitto")[];
  compare: boolean;
  mosquittoNodelay: boolean;
  oursDir?: string;
}

function fail(message: string): never {
  console.error(`bench: ${message}\n\n${HELP}`);
  Deno.exit(2);
}

function parseOptions(args: string[]): Options | undefined {
  let v;
  try {
    v = parseArgs({
      args,
      options: {
        host: { type: "string" },
        port: { type: "string" },
        pid: { type: "string" },
        broker: { type: "string" },
        compare: { type: "string" },
        scenarios: { type: "string" },
        rounds: { type: "string" },
        quick: { type: "boolean" },
        scale: { type: "string" },
        window: { type: "string" },
        "subs-passes": { type: "string" },
        timeout: { type: "string" },
        json: { type: "string" },
        "mosquitto-nodelay": { type: "boolean" },
        ours: { type: "string" },
        list: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    fail((err as Error).message);
  }
  if (v.help) {
    console.log(HELP);
    return undefined;
  }
  if (v.list) {
    for (const s of SCENARIOS) console.log(`${s.name.padEnd(14)} ${s.title}`);
    return undefined;
  }
  const int = (name: string, value: string | undefined, def: number, min = 1) => {
    if (value === undefined) return def;
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) fail(`--${name} must be an integer >= ${min}`);
    return n;
  };
  const quick = v.quick === true;
  let scenarios = [...SCENARIOS];
  if (v.scenarios !== undefined) {
    const names = v.scenarios.split(",").map((s) => s.trim()).filter(Boolean);
    const unknown = names.filter((n) => !SCENARIOS.some((s) => s.name === n));
    if (unknown.length) fail(`unknown scenario ${unknown.join(", ")} (see --list)`);
    scenarios = SCENARIOS.filter((s) => names.includes(s.name));
  }
  let external: Target | undefined;
  if (v.host !== undefined || v.port !== undefined) {
    if (v.compare !== undefined || v.broker !== undefined) {
      fail("--host/--port cannot be combined with --compare or --broker");
    }
    external = {
      kind: "external",
      name: "broker",
      host: v.host ?? "127.0.0.1",
      port: int("port", v.port, 1883),
      pid: v.pid === undefined ? undefined : int("pid", v.pid, 1),
    };
  }
  if (v.compare !== undefined && v.compare !== "mosquitto") {
    fail("--compare takes only `mosquitto`");
  }
  const kinds = ["ours", "ours-kv", "mosquitto"] as const;
  let brokers: Options["brokers"] = ["ours"];
  if (v.compare !== undefined) brokers = ["ours", "ours-kv", "mosquitto"];
  else if (v.broker !== undefined) {
    const list = v.broker.split(",").map((s) => s.trim());
    for (const b of list) {
      if (!(kinds as readonly string[]).includes(b)) fail(`unknown broker ${b}`);
    }
    brokers = list as Options["brokers"];
  }
  let scale = quick ? QUICK_SCALE : 1;
  if (v.scale !== undefined) {
    scale = Number(v.scale);
    if (!(scale > 0 && scale <= 100)) fail("--scale must be a number above 0 (at most 100)");
  }
  return {
    scenarios,
    scale,
    rounds: int("rounds", v.rounds, quick ? 1 : 3),
    quick,
    window: int("window", v.window, 100),
    subsPasses: int("subs-passes", v["subs-passes"], 3),
    timeoutMs: int("timeout", v.timeout, quick ? 30 : 60) * 1000,
    json: v.json,
    external,
    brokers,
    compare: v.compare !== undefined,
    mosquittoNodelay: v["mosquitto-nodelay"] === true,
    oursDir: v.ours,
  };
}

/**
 * Many connections need many open files, in this process and in the brokers it starts (they
 * inherit the limit). Deno cannot call setrlimit, so the script re-runs itself under `prlimit`.
 */
async function ensureOpenFiles(need: number): Promise<void> {
  const { soft, hard } = openFileLimits();
  if (!(soft < need)) return;
  if (Deno.env.get("BENCH_NOFILE_RAISED") === "1" || !(hard > soft)) {
    console.error(
      `bench: warning: open-file limit ${soft} (hard ${hard}) is below the ${need} needed; ` +
        "the connection scenarios may fail",
    );
    return;
  }
  const limit = hard === Infinity ? "unlimited" : String(hard);
  console.error(`bench: raising the open-file limit ${soft} → ${limit} (re-running under prlimit)`);
  const child = new Deno.Command("prlimit", {
    args: [
      `--nofile=${limit}:${limit}`,
      "--",
      Deno.execPath(),
      "run",
      "-A",
      import.meta.filename!,
      ...Deno.args,
    ],
    env: { BENCH_NOFILE_RAISED: "1" },
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  // The child handles Ctrl+C itself; we only wait for it.
  const ignore = () => {};
  Deno.addSignalListener("SIGINT", ignore);
  const status = await child.status;
  Deno.exit(status.code);
}

async function commandOutput(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    return new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  } catch {
    return "";
  }
}

async function environment(opts: Options): Promise<string[]> {
  const cpu = /model name\s*:\s*(.*)/.exec(await Deno.readTextFile("/proc/cpuinfo"))?.[1];
  const mosq = (await commandOutput("/usr/sbin/mosquitto", ["-h"])).split("\n")[0];
  return [
    `date: ${new Date().toISOString()}`,
    `machine: ${navigator.hardwareConcurrency} CPUs (${cpu ?? "?"}), load average ${
      (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ")
    }`,
    `deno ${Deno.version.deno}; ${mosq || "mosquitto not found"}`,
    `rounds ${opts.rounds}${opts.quick ? " (quick)" : ""}, counts ×${opts.scale}, ` +
    `QoS 1 window ${opts.window}, ` +
    (opts.mosquittoNodelay ? "mosquitto set_tcp_nodelay true, " : "") +
    (opts.oursDir ? `ours from ${opts.oursDir}, ` : "") +
    `timeout ${opts.timeoutMs / 1000} s per run`,
  ];
}

/** One run of a scenario against a target, bounded by the timeout. */
async function runOnce(
  sc: Scenario,
  target: Target,
  scale: number,
  opts: Options,
): Promise<RunResult | Error> {
  const nonce = crypto.getRandomValues(new Uint32Array(1))[0];
  const ctx: Ctx = {
    target,
    nonce,
    prefix: `b${nonce.toString(36)}`,
    scale,
    window: opts.window,
    subsPasses: opts.subsPasses,
    deadline: performance.now() + opts.timeoutMs,
    conns: new Set(),
    aborted: false,
    notes: [],
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  // Scenarios end themselves at the deadline; this is the backstop for one that hangs.
  const backstop = new Promise<"hung">((resolve) => {
    timer = setTimeout(() => resolve("hung"), opts.timeoutMs + 10_000);
  });
  const run = sc.run(ctx);
  run.catch(() => {});
  try {
    const r = await Promise.race([run, backstop]);
    if (r === "hung") return new Error(`no result within ${opts.timeoutMs / 1000 + 10} s`);
    r.notes.push(...ctx.notes);
    return r;
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  } finally {
    clearTimeout(timer);
    ctx.aborted = true;
    for (const c of ctx.conns) c.close();
  }
}

function summary(r: RunResult | Error): string {
  if (r instanceof Error) return `FAILED: ${r.message.split("\n")[0]}`;
  const figs = r.figures.filter((f) => !f.name.includes("bench CPU")).slice(0, 4)
    .map((f) => `${f.name} ${Number.isFinite(f.value) ? +f.value.toFixed(f.digits ?? 0) : "–"}`);
  const c = r.counts;
  const bad = c.lost + c.duplicated + c.misrouted > 0
    ? ` [lost ${c.lost} dup ${c.duplicated} misrouted ${c.misrouted}]`
    : "";
  return `${figs.join(", ")}${bad}${r.timedOut ? " TIMED OUT" : ""}`;
}

async function main(): Promise<number> {
  const opts = parseOptions(Deno.args);
  if (!opts) return 0;
  const scale = opts.scale;
  const need = Math.max(...opts.scenarios.map((s) => Math.ceil(s.connections * scale))) + 1_024;
  await ensureOpenFiles(need);

  const header = await environment(opts);
  for (const line of header) console.error(`# ${line}`);

  const targetsFor = (sc: Scenario): (BrokerKind)[] => {
    if (opts.external) return ["external"];
    if (opts.compare) return sc.durable ? ["ours", "ours-kv", "mosquitto"] : ["ours", "mosquitto"];
    return opts.brokers;
  };
  const brokerNames = opts.external ? ["broker"] : opts.brokers;
  const results: Results = new Map();
  // First Ctrl+C: stop the brokers, skip the remaining runs and print what there is.
  // A second one exits at once (after the brokers are stopped).
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) {
      stopAllBrokers().finally(() => Deno.exit(130));
      return;
    }
    interrupted = true;
    console.error("bench: interrupted; stopping brokers (again to quit now)");
    stopAllBrokers();
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const started = performance.now();
  try {
    for (let round = 1; round <= opts.rounds && !interrupted; round++) {
      for (const sc of opts.scenarios) {
        if (interrupted) break;
        for (const kind of targetsFor(sc)) {
          if (interrupted) break;
          let target: Target;
          let broker: RunningBroker | undefined;
          let result: RunResult | Error;
          try {
            if (kind === "external") target = opts.external!;
            else {
              broker = await startBroker(kind, {
                mosquittoNodelay: opts.mosquittoNodelay,
                oursDir: opts.oursDir,
              });
              target = broker;
            }
            // Warm-up on the same broker process, then the measured run.
            const warm = await runOnce(sc, target, scale * sc.warmupScale, opts);
            if (warm instanceof Error) {
              result = new Error(`warm-up failed: ${warm.message}`);
            } else {
              result = await runOnce(sc, target, scale, opts);
            }
            if (broker?.exited()) {
              result = new Error(`broker exited during the run\n${await broker.logTail()}`);
            }
          } catch (err) {
            result = err instanceof Error ? err : new Error(String(err));
          } finally {
            if (broker) {
              await broker.stop();
            }
          }
          if (interrupted) break; // this run was cut short: not a result
          const name = kind === "external" ? "broker" : kind;
          let runs = results.get(sc.name);
          if (!runs) results.set(sc.name, runs = new Map());
          let list = runs.get(name);
          if (!list) runs.set(name, list = []);
          list.push(result);
          console.error(
            `[round ${round}/${opts.rounds}] ${sc.name} on ${name}: ${summary(result)}`,
          );
        }
      }
    }
  } finally {
    await stopAllBrokers();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }

  const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  const minutes = (performance.now() - started) / 60_000;
  const baseline = opts.compare ? "mosquitto" : undefined;
  const out = [
    ...header.map((l) => `- ${l}`),
    `- finished after ${minutes.toFixed(1)} min; load average at the end ${load}`,
    "",
    "Medians over the rounds; ↑ higher is better, ↓ lower is better." +
    (baseline
      ? " Ratios are median ÷ median, with the range of the per-round ratios in brackets."
      : ""),
    "",
    figureTable(opts.scenarios, results, brokerNames, baseline),
    "",
    "Correctness over all rounds (every message carries publisher id and sequence number):",
    "",
    countsTable(opts.scenarios, results),
    "",
  ].join("\n");
  console.log(out);
  if (opts.json) {
    const plain: Record<string, Record<string, unknown[]>> = {};
    for (const [sc, runs] of results) {
      plain[sc] = {};
      for (const [b, list] of runs) {
        plain[sc][b] = list.map((r) => r instanceof Error ? { error: r.message } : r);
      }
    }
    await Deno.writeTextFile(opts.json, JSON.stringify({ header, results: plain }, null, 2));
  }
  let failures = 0;
  for (const runs of results.values()) {
    for (const list of runs.values()) failures += list.filter((r) => r instanceof Error).length;
  }
  if (interrupted) return 130;
  return failures > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
