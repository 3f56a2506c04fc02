/**
 * Runs the broker CLI (`deno run -A main.ts`) as a subprocess on 127.0.0.1, an
 * ephemeral port and a given data path, for crash and restart tests: SIGKILL it
 * mid-traffic, restart it on the same data path, read its log.
 *
 * stderr is always drained (so the child never blocks on a full pipe) and kept
 * as lines. Always `await using` a {@link BrokerProcess} (or dispose it in
 * `finally`): disposal SIGKILLs a child that still runs and awaits its exit and
 * the end of its stderr, so the sanitizers see no leaked child or stream.
 */

const ROOT = new URL("../..", import.meta.url).pathname;
const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const LISTENING = /listening address=(?:127\.0\.0\.1|\[::1\]|[\w.-]+):(\d+)/;

/** Options of {@link BrokerProcess.spawn} and {@link BrokerProcess.start}. */
export interface BrokerProcessOptions {
  /** `--log-level`; `info` by default (the `listening` line is logged at info). */
  logLevel?: "error" | "warn" | "info" | "debug";
  /** More CLI arguments, after the standard ones. */
  extraArgs?: string[];
  /** How long {@link BrokerProcess.start} waits for the `listening` line, ms (default 20 s). */
  startTimeoutMs?: number;
}

/** A broker subprocess. */
export class BrokerProcess implements AsyncDisposable {
  readonly dataPath: string;
  readonly child: Deno.ChildProcess;
  /** Resolves with the exit status (never rejects). */
  readonly status: Promise<Deno.CommandStatus>;
  /** Every stderr line so far. */
  readonly lines: string[] = [];
  /** The listening port, once {@link waitListening} saw it (0 before). */
  port = 0;
  #exited = false;
  #stderrDone: Promise<void>;
  #waiters = new Set<() => void>();

  private constructor(dataPath: string, options: BrokerProcessOptions) {
    this.dataPath = dataPath;
    this.child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MAIN,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data",
        dataPath,
        "--log-level",
        options.logLevel ?? "info",
        ...(options.extraArgs ?? []),
      ],
      cwd: ROOT,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.status = this.child.status.then((s) => {
      this.#exited = true;
      this.#wake();
      return s;
    });
    this.#stderrDone = this.#drain(this.child.stderr);
  }

  /** Spawns the broker without waiting for it to listen. */
  static spawn(dataPath: string, options: BrokerProcessOptions = {}): BrokerProcess {
    return new BrokerProcess(dataPath, options);
  }

  /**
   * Spawns the broker and waits for its `listening address=127.0.0.1:PORT` line.
   * If it exits first or does not listen in time, it is killed and reaped, and
   * the error carries its log.
   */
  static async start(dataPath: string, options: BrokerProcessOptions = {}): Promise<BrokerProcess> {
    const p = new BrokerProcess(dataPath, options);
    try {
      await p.waitListening(options.startTimeoutMs ?? 20_000);
      return p;
    } catch (err) {
      await p[Symbol.asyncDispose]();
      throw err;
    }
  }

  get pid(): number {
    return this.child.pid;
  }

  /** True once the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /** The whole stderr so far. */
  get output(): string {
    return this.lines.join("\n");
  }

  async #drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let pending = "";
    try {
      for await (const chunk of stream) {
        pending += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = pending.indexOf("\n")) >= 0) {
          this.lines.push(pending.slice(0, nl));
          pending = pending.slice(nl + 1);
        }
        this.#wake();
      }
    } catch { /* the pipe broke: the process is gone */ }
    pending += decoder.decode();
    if (pending.length > 0) this.lines.push(pending);
    this.#wake();
  }

  #wake(): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) w();
  }

  /** Waits for the next wake-up (a line, the exit) or `ms`. */
  async #wait(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let wake: (() => void) | undefined;
    await new Promise<void>((resolve) => {
      wake = resolve;
      timer = setTimeout(resolve, ms);
      this.#waiters.add(resolve);
    });
    clearTimeout(timer);
    this.#waiters.delete(wake!);
  }

  /**
   * Resolves with the first stderr line (from `from` on) matching `re`; throws
   * with the log when the process exits first or `timeoutMs` passes.
   */
  async waitForLine(re: RegExp, timeoutMs = 5_000, from = 0): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (let i = from;;) {
      for (; i < this.lines.length; i++) if (re.test(this.lines[i])) return this.lines[i];
      if (this.#exited) {
        // Lines written just before the exit may still be in the pipe.
        await this.#stderrDone;
        for (; i < this.lines.length; i++) if (re.test(this.lines[i])) return this.lines[i];
        throw new Error(`broker exited before logging ${re}; its log:\n${this.output}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`broker did not log ${re} in ${timeoutMs} ms; its log:\n${this.output}`);
      }
      await this.#wait(left);
    }
  }

  /** Waits for the `listening` line and records the port. */
  async waitListening(timeoutMs = 20_000): Promise<number> {
    const line = await this.waitForLine(LISTENING, timeoutMs);
    this.port = Number(LISTENING.exec(line)![1]);
    return this.port;
  }

  /** Sends a signal; a no-op once the process has exited. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    if (this.#exited) return;
    try {
      this.child.kill(signal);
    } catch { /* exited meanwhile */ }
  }

  /** Waits for the exit (and the end of stderr); SIGKILLs it after `timeoutMs`. */
  async exit(timeoutMs = 10_000): Promise<Deno.CommandStatus> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#exited && Date.now() < deadline) await this.#wait(deadline - Date.now());
    if (!this.#exited) this.kill("SIGKILL");
    const status = await this.status;
    await this.#stderrDone;
    return status;
  }

  /** Graceful stop: SIGTERM, then the exit (SIGKILL after `timeoutMs`). */
  stop(timeoutMs = 10_000): Promise<Deno.CommandStatus> {
    this.kill("SIGTERM");
    return this.exit(timeoutMs);
  }

  /** Crash: SIGKILL, then the exit. */
  crash(): Promise<Deno.CommandStatus> {
    this.kill("SIGKILL");
    return this.exit();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.kill("SIGKILL");
    await this.status;
    await this.#stderrDone;
  }
}
