/**
 * Brokers under test: starting ours (`main.ts`) and Debian's Mosquitto with generated settings,
 * waiting for them to listen, stopping them, and reading their CPU time and memory from /proc.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/** Clock ticks per second of /proc/PID/stat times (`getconf CLK_TCK` is 100 on Linux). */
export const CLOCK_TICKS = 100;

/** Repository root (scripts/bench/ is two levels below it). */
export const REPO_ROOT: string = fileURLToPath(new URL("../../", import.meta.url));

/** Kinds of broker the bench can start. */
export type BrokerKind = "ours" | "ours-kv" | "mosquitto" | "external";

/** A broker the scenarios talk to. */
export interface Target {
  kind: BrokerKind;
  /** Label in the tables. */
  name: string;
  host: string;
  port: number;
  /** Process id, for CPU and memory figures; unknown for an external broker without --pid. */
  pid?: number;
}

/** A running broker that the bench started. */
export interface RunningBroker extends Target {
  /** Stops the process (SIGTERM, then SIGKILL after 3 s) and removes its files. */
  stop(): Promise<void>;
  /** The last lines of its log, for error messages. */
  logTail(): Promise<string>;
  /** Whether the process has exited. */
  exited(): boolean;
}

/** Total CPU time (user + system) of a process in seconds, or NaN when unreadable. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the command name, which is in parentheses and may contain spaces.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    return (Number(rest[11]) + Number(rest[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

/**
 * A process's CPU time at one moment: the tick-based total (`/proc/PID/stat`, 10 ms steps), and
 * each live thread's run time in nanoseconds (`/proc/PID/task/TID/schedstat`) where readable.
 */
export interface CpuReading {
  seconds: number;
  threadNs: Map<string, number> | undefined;
}

/** Reads a process's CPU time (see {@link CpuReading}). */
export function readCpu(pid: number): CpuReading {
  const seconds = cpuSeconds(pid);
  let threadNs: Map<string, number> | undefined = new Map();
  try {
    for (const entry of Deno.readDirSync(`/proc/${pid}/task`)) {
      const text = Deno.readTextFileSync(`/proc/${pid}/task/${entry.name}/schedstat`);
      threadNs.set(entry.name, Number(text.split(" ")[0]));
    }
  } catch {
    threadNs = undefined; // a thread left while we read, or no schedstat: ticks only
  }
  return { seconds, threadNs };
}

/**
 * CPU seconds between two readings. Phases of a few hundred milliseconds make the 10 ms ticks a
 * coarse measure (±1 tick is ±3 % of 0.3 s), so the per-thread nanoseconds are summed when they
 * cover the phase: every thread present at the start is still there at the end (one that exited
 * took its time with it; threads that started meanwhile count from zero). Otherwise, ticks.
 */
export function cpuSecondsBetween(a: CpuReading, b: CpuReading): number {
  const before = a.threadNs;
  const after = b.threadNs;
  if (before !== undefined && after !== undefined) {
    let covered = true;
    for (const tid of before.keys()) if (!after.has(tid)) covered = false;
    if (covered) {
      let ns = 0;
      for (const [tid, t] of after) ns += t - (before.get(tid) ?? 0);
      return ns / 1e9;
    }
  }
  return b.seconds - a.seconds;
}

/** Resident set size of a process in KiB (VmRSS), or NaN when unreadable. */
export function rssKiB(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** The soft and hard open-file limits of this process. */
export function openFileLimits(): { soft: number; hard: number } {
  try {
    const limits = Deno.readTextFileSync("/proc/self/limits");
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(limits);
    if (m) {
      const parse = (s: string) => s === "unlimited" ? Infinity : Number(s);
      return { soft: parse(m[1]), hard: parse(m[2]) };
    }
  } catch { /* not Linux */ }
  return { soft: NaN, hard: NaN };
}

/** A free TCP port on 127.0.0.1 (there is a small race until the broker binds it). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Waits until something accepts TCP connections on the port. */
async function waitListening(
  port: number,
  child: Deno.ChildProcess,
  timeoutMs: number,
): Promise<void> {
  let exited = false;
  child.status.then(() => exited = true);
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (exited) throw new Error("broker exited before it listened");
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  throw new Error(`broker did not listen on port ${port} within ${timeoutMs} ms`);
}

/**
 * Settings file for Mosquitto: anonymous, in memory, no limits that would drop bench traffic.
 * TCP_NODELAY stays at Mosquitto's default (off) unless `nodelay`: it writes every packet with its
 * own send(), and with Nagle off each becomes its own TCP segment, which costs it and the bench
 * client dearly in throughput (docs/performance.md has the figures).
 */
export function mosquittoConfig(port: number, nodelay = false): string {
  return [
    `listener ${port} 127.0.0.1`,
    "allow_anonymous true",
    "persistence false",
    "max_connections -1",
    // Receive Maximum it announces and its outgoing window; ours defaults to 1024 for both.
    "max_inflight_messages 1024",
    "max_queued_messages 1000000",
    "max_queued_bytes 0",
    `set_tcp_nodelay ${nodelay}`,
    "log_dest stderr",
    "log_type error",
    "log_type warning",
    "",
  ].join("\n");
}

/** Stop functions of every broker process started and not yet stopped. */
const live = new Set<() => Promise<void>>();
let closing = false;

/** Stops every broker started so far, and refuses to start more (on Ctrl+C and at the end). */
export async function stopAllBrokers(): Promise<void> {
  closing = true;
  await Promise.all([...live].map((stop) => stop()));
}

const MOSQUITTO = "/usr/sbin/mosquitto";

/**
 * Makes sure Debian's `mosquitto` is installed, installing it with apt-get when running as root
 * (a fresh machine has only Node.js and npm); otherwise says how to install it.
 */
export async function ensureMosquitto(): Promise<void> {
  try {
    await Deno.stat(MOSQUITTO);
    return;
  } catch { /* not installed */ }
  if (Deno.uid() !== 0) {
    throw new Error(`${MOSQUITTO} is missing: install it with "sudo apt-get install -y mosquitto"`);
  }
  console.error("installing Debian's mosquitto (apt-get) for the comparison ...");
  for (
    const args of [["update", "-qq"], [
      "install",
      "-y",
      "-qq",
      "--no-install-recommends",
      "mosquitto",
    ]]
  ) {
    const { success } = await new Deno.Command("apt-get", {
      args,
      env: { DEBIAN_FRONTEND: "noninteractive" },
      stdin: "null",
      stdout: "null",
    }).output();
    if (!success) throw new Error(`apt-get ${args.join(" ")} failed; install mosquitto by hand`);
  }
  await Deno.stat(MOSQUITTO);
}

/** Starts one broker of `kind` on a fresh port, with its files in a new temp directory. */
export async function startBroker(
  kind: "ours" | "ours-kv" | "mosquitto",
  opts: { mosquittoNodelay?: boolean; oursDir?: string } = {},
): Promise<RunningBroker> {
  if (closing) throw new Error("the bench is stopping");
  const dir = await Deno.makeTempDir({ prefix: `mqtt-bench-${kind}-` });
  const port = freePort();
  let cmd: string;
  let args: string[];
  if (kind === "mosquitto") {
    const conf = `${dir}/mosquitto.conf`;
    await Deno.writeTextFile(conf, mosquittoConfig(port, opts.mosquittoNodelay));
    await ensureMosquitto();
    cmd = MOSQUITTO;
    args = ["-c", conf];
  } else {
    cmd = Deno.execPath();
    const data = kind === "ours-kv" ? `${dir}/broker.db` : ":memory:";
    args = ["run", "-A", "main.ts", "--port", String(port), "--data", data, "--log-level", "warn"];
  }
  const logPath = `${dir}/broker.log`;
  const log = await Deno.open(logPath, { write: true, create: true, truncate: true });
  const child = new Deno.Command(cmd, {
    args,
    cwd: kind === "mosquitto" ? dir : (opts.oursDir ?? REPO_ROOT),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Both streams go to the log file; neither may fill its pipe and block the broker.
  const logWriter = log.writable.getWriter();
  const copy = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) await logWriter.write(chunk).catch(() => {});
  };
  const copies = Promise.all([copy(child.stdout), copy(child.stderr)]).catch(() => {});
  let stopping: Promise<void> | undefined;
  let exited = false;
  child.status.then(() => exited = true);
  // Every caller waits for the same stop, so nobody exits while the files are still there.
  const stop = (): Promise<void> =>
    stopping ??= (async () => {
      live.delete(stop);
      try {
        child.kill("SIGTERM");
      } catch { /* already exited */ }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* already exited */ }
      }, 3_000);
      await child.status;
      clearTimeout(timer);
      await copies;
      await logWriter.close().catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    })();
  live.add(stop);
  const logTail = async () => {
    try {
      const text = await Deno.readTextFile(logPath);
      return text.split("\n").slice(-20).join("\n");
    } catch {
      return "";
    }
  };
  const broker: RunningBroker = {
    kind,
    name: kind,
    host: "127.0.0.1",
    port,
    pid: child.pid,
    stop,
    logTail,
    exited: () => exited,
  };
  try {
    await waitListening(port, child, 15_000);
  } catch (err) {
    const tail = await logTail();
    await stop();
    throw new Error(`${kind}: ${(err as Error).message}\n${tail}`);
  }
  return broker;
}
