/**
 * Shared pieces of the load scenarios: the run context, loss/duplicate/misroute accounting,
 * progress waits with deadlines, send windows and CPU/memory meters.
 *
 * @module
 */
import { type CpuReading, cpuSecondsBetween, readCpu, rssKiB, type Target } from "./brokers.ts";
import { PacketType } from "../../src/codec/mod.ts";
import { type ConnectOptions, MqttConn } from "./mqtt.ts";

/** One figure a scenario reports. */
export interface Figure {
  /** Short name, unique within the scenario (`msg/s`). */
  name: string;
  value: number;
  /** Which direction is better, for reading ratios. */
  better: "higher" | "lower";
  /** Decimal places to print. */
  digits?: number;
}

/** Correctness counts of one run. */
export interface Counts {
  lost: number;
  duplicated: number;
  misrouted: number;
}

/** What one scenario run produced. */
export interface RunResult {
  figures: Figure[];
  counts: Counts;
  timedOut: boolean;
  /** Free-form remarks (stalls, refusals). */
  notes: string[];
}

/** Everything a scenario run needs. */
export interface Ctx {
  target: Target;
  /** Random per run: payload stamps from elsewhere are counted as misrouted. */
  nonce: number;
  /** Topic prefix unique to the run. */
  prefix: string;
  /** Scaled-down counts (warm-up and --quick). */
  scale: number;
  /** QoS 1 window: PUBLISH packets a publisher keeps unacknowledged. */
  window: number;
  /** Messages to each subscriber in subs-10k (`--subs-passes`). */
  subsPasses: number;
  /** Absolute `performance.now()` by which the run must end. */
  deadline: number;
  /** Every connection opened, closed by the runner when the run ends. */
  conns: Set<MqttConn>;
  /** Set when the runner gave up on the run. */
  aborted: boolean;
  notes: string[];
}

/** Per-receiver accounting of keys `0 .. expected-1` (e.g. publisher × sequence number). */
export class Tracker {
  readonly expected: number;
  readonly #seen: Uint8Array;
  received = 0;
  unique = 0;
  duplicates = 0;
  misrouted = 0;
  /** `performance.now()` of the last message. */
  lastAt = 0;

  constructor(expected: number) {
    this.expected = expected;
    this.#seen = new Uint8Array(expected);
  }

  /** Records a message with `key`; out-of-range keys count as misrouted. */
  record(key: number, now: number): void {
    this.received++;
    this.lastAt = now;
    if (!(key >= 0 && key < this.expected)) {
      this.misrouted++;
      return;
    }
    if (this.#seen[key] !== 0) this.duplicates++;
    else {
      this.#seen[key] = 1;
      this.unique++;
    }
  }

  /** Records a message that should not have reached this receiver at all. */
  wrong(now: number): void {
    this.received++;
    this.lastAt = now;
    this.misrouted++;
  }

  get lost(): number {
    return this.expected - this.unique;
  }

  get done(): boolean {
    return this.unique >= this.expected;
  }
}

/** Sums the counts of several trackers. */
export function countsOf(trackers: Iterable<Tracker>, extraLost = 0): Counts {
  const c = { lost: extraLost, duplicated: 0, misrouted: 0 };
  for (const t of trackers) {
    c.lost += t.lost;
    c.duplicated += t.duplicates;
    c.misrouted += t.misrouted;
  }
  return c;
}

interface Waiter {
  cond: () => boolean;
  resolve: (ok: boolean) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Wakes waiters when receivers make progress; every wait has a time limit. */
export class Progress {
  #waiters: Waiter[] = [];
  /** `performance.now()` of the last {@link notify}. */
  lastAt = performance.now();

  /** Receivers call this after handling a read. */
  notify(): void {
    this.lastAt = performance.now();
    if (this.#waiters.length === 0) return;
    const keep: Waiter[] = [];
    for (const w of this.#waiters) {
      if (w.cond()) {
        clearTimeout(w.timer);
        w.resolve(true);
      } else keep.push(w);
    }
    this.#waiters = keep;
  }

  /** Resolves true once `cond()` holds, false at `until` (absolute `performance.now()`). */
  waitFor(cond: () => boolean, until: number): Promise<boolean> {
    if (cond()) return Promise.resolve(true);
    const left = until - performance.now();
    if (left <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      const w: Waiter = {
        cond,
        resolve,
        timer: setTimeout(() => {
          this.#waiters = this.#waiters.filter((x) => x !== w);
          resolve(cond());
        }, Math.ceil(left)),
      };
      this.#waiters.push(w);
    });
  }

  /**
   * Waits for `cond`, giving up after `quietMs` without any progress, or at `deadline`.
   * Resolves whether `cond` holds.
   */
  async waitQuiet(cond: () => boolean, quietMs: number, deadline: number): Promise<boolean> {
    for (;;) {
      if (cond()) return true;
      const until = Math.min(deadline, this.lastAt + quietMs);
      if (performance.now() >= until) return cond();
      await this.waitFor(cond, until);
    }
  }
}

/**
 * A send window for QoS 0 traffic: publishers stay at most `limit` messages ahead of the slowest
 * receiver, so a broker's outgoing buffers stay small and nothing is dropped for being slow. If
 * the receivers make no progress for a while (the broker dropped messages), the gap is forgiven
 * and counted as a stall.
 */
export class SendWindow {
  readonly limit: number;
  sent = 0;
  stalls = 0;
  #slack = 0;
  readonly #received: () => number;

  constructor(limit: number, received: () => number) {
    this.limit = limit;
    this.#received = received;
  }

  readonly open = (): boolean => this.sent - this.#received() - this.#slack <= this.limit;

  /** Waits until the window is open; false when the run's deadline passed. */
  async wait(progress: Progress, ctx: Ctx, stallMs = 1_000): Promise<boolean> {
    if (this.open()) return true;
    const ok = await progress.waitFor(
      this.open,
      Math.min(ctx.deadline, performance.now() + stallMs),
    );
    if (ok) return true;
    if (performance.now() >= ctx.deadline || ctx.aborted) return false;
    this.stalls++;
    this.#slack = this.sent - this.#received();
    return true;
  }
}

/** Broker (and our own) CPU seconds over a measured phase. */
export class CpuMeter {
  readonly #pid: number | undefined;
  #broker0: CpuReading | undefined;
  #self0: CpuReading | undefined;
  broker = NaN;
  self = NaN;

  constructor(pid: number | undefined) {
    this.#pid = pid;
  }

  start(): this {
    this.#broker0 = this.#pid === undefined ? undefined : readCpu(this.#pid);
    this.#self0 = readCpu(Deno.pid);
    return this;
  }

  stop(): this {
    this.broker = this.#pid === undefined || this.#broker0 === undefined
      ? NaN
      : cpuSecondsBetween(this.#broker0, readCpu(this.#pid));
    this.self = this.#self0 === undefined ? NaN : cpuSecondsBetween(this.#self0, readCpu(Deno.pid));
    return this;
  }
}

/** Broker RSS in KiB, or NaN without a pid. */
export function brokerRss(ctx: Ctx): number {
  return ctx.target.pid === undefined ? NaN : rssKiB(ctx.target.pid);
}

/** Throughput figures of a measured phase: rate, broker CPU and messages per broker CPU-second. */
export function rateFigures(
  label: string,
  messages: number,
  seconds: number,
  cpu: CpuMeter,
): Figure[] {
  const pre = label ? `${label} ` : "";
  return [
    { name: `${pre}msg/s`, value: messages / seconds, better: "higher" },
    { name: `${pre}broker CPU s`, value: cpu.broker, better: "lower", digits: 2 },
    {
      name: `${pre}msg per broker CPU-s`,
      value: cpu.broker > 0 ? messages / cpu.broker : NaN,
      better: "higher",
    },
    { name: `${pre}bench CPU s`, value: cpu.self, better: "lower", digits: 2 },
  ];
}

/** Opens a connection with CONNECT/CONNACK and registers it for cleanup. */
export async function connect(
  ctx: Ctx,
  clientId: string,
  opts: ConnectOptions & { readSize?: number; extra?: Uint8Array } = {},
): Promise<{ conn: MqttConn; sessionPresent: boolean }> {
  const r = await MqttConn.connect(ctx.target.host, ctx.target.port, clientId, opts);
  if (ctx.aborted) {
    r.conn.close();
    throw new Error("run aborted");
  }
  ctx.conns.add(r.conn);
  return r;
}

/** Reads the SUBACK that follows a SUBSCRIBE; throws unless every code grants at least `qos`. */
export async function expectSuback(conn: MqttConn, qos: number, what: string): Promise<void> {
  const p = await conn.readPacket();
  if (p === null || p.header >> 4 !== PacketType.Suback) throw new Error(`no SUBACK for ${what}`);
  const codes = subackCodes(p.body);
  if (codes.length === 0 || codes.some((c) => c !== qos)) {
    throw new Error(`SUBACK for ${what} refused: ${codes.map((c) => c.toString(16))}`);
  }
}

/** Reason codes of a v5 SUBACK body. */
export function subackCodes(body: Uint8Array): number[] {
  let p = 2;
  let mul = 1;
  let plen = 0;
  let b: number;
  do {
    b = body[p++];
    plen += (b & 0x7f) * mul;
    mul *= 128;
  } while (b & 0x80 && p < body.length);
  p += plen;
  return [...body.subarray(p)];
}

/** Runs `fn(i)` for `i < n`, at most `concurrency` at a time; stops starting new ones on abort. */
export async function mapConcurrent<T>(
  n: number,
  concurrency: number,
  ctx: Ctx,
  fn: (i: number) => Promise<T>,
): Promise<(T | Error)[]> {
  const out: (T | Error)[] = new Array(n);
  let next = 0;
  const worker = async () => {
    while (next < n && !ctx.aborted && performance.now() < ctx.deadline) {
      const i = next++;
      try {
        out[i] = await fn(i);
      } catch (err) {
        out[i] = err instanceof Error ? err : new Error(String(err));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  for (let i = 0; i < n; i++) if (!(i in out)) out[i] = new Error("not started (deadline)");
  return out;
}

/** Sleeps `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Value at quantile `q` (0..1) of sorted samples (nearest rank). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** Median of numbers, ignoring NaN. */
export function median(values: number[]): number {
  const v = values.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}
