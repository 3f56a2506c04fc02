/**
 * The `mqtt-broker` command: parses flags, loads the config file, runs a {@link Broker} until
 * SIGINT/SIGTERM and stops it gracefully.
 *
 * @module
 */
import denoJson from "../../deno.json" with { type: "json" };
import { PasswordFileError } from "../auth/mod.ts";
import { Broker, type BrokerOptions, resolveOptions } from "../broker/mod.ts";
import { ConfigError, loadAclFile, loadConfigFile, mergeOverrides } from "../config/mod.ts";
import { createLogger, type Logger } from "../observe/log.ts";
import { type CliArgs, HELP_OPTIONS, parseCliArgs, UsageError } from "./args.ts";
import { runCheck } from "./check.ts";
import { runPasswd } from "./passwd.ts";

export { type CliArgs, parseCliArgs, UsageError } from "./args.ts";

/** Name the command goes by in messages. */
export const PROGRAM = "mqtt-broker";
/** The project version, from deno.json (embedded at build time, so compiled binaries have it). */
export const VERSION: string = denoJson.version;

/** Exit status of {@link runCli}. */
export const ExitCode = {
  /** Help or version printed, or the broker stopped cleanly. */
  Ok: 0,
  /** The broker failed to start or to stop. */
  Failure: 1,
  /** Bad flags or a bad config file. */
  Usage: 2,
} as const;

/** Hooks for running the CLI inside another program or a test. */
export interface RunCliOptions {
  /** Receives normal output (help, version); stdout by default. */
  stdout?: (text: string) => void;
  /** Receives error messages and log lines; stderr by default. */
  stderr?: (text: string) => void;
  /** Stops the broker when aborted, like SIGINT/SIGTERM do. */
  signal?: AbortSignal;
  /** Called once the broker is listening. */
  onStarted?: (broker: Broker) => void;
}

const encoder = new TextEncoder();

function writeStdout(text: string): void {
  Deno.stdout.writeSync(encoder.encode(text));
}

function writeStderr(text: string): void {
  Deno.stderr.writeSync(encoder.encode(text));
}

/**
 * Runs the broker command line and resolves to the process exit status.
 *
 * @param args The arguments after the program name (`Deno.args`).
 * @returns 0 after a clean stop or `--help`/`--version`, 1 when the broker fails, 2 for bad flags
 *   or a bad config file.
 */
export async function runCli(args: string[], options: RunCliOptions = {}): Promise<number> {
  const stdout = options.stdout ?? writeStdout;
  const stderr = options.stderr ?? writeStderr;
  if (args[0] === "passwd") return await runPasswd(args.slice(1), { stdout, stderr });
  if (args[0] === "check") return await runCheck(args.slice(1), { stdout, stderr });

  let parsed;
  try {
    parsed = parseCliArgs(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    stderr(`${PROGRAM}: ${error.message}\nTry '${PROGRAM} --help' for more information.\n`);
    return ExitCode.Usage;
  }
  if (parsed.help) {
    stdout(
      `${PROGRAM} ${VERSION}: MQTT 5.0 and 3.1.1 broker\n\n` +
        `Usage: ${PROGRAM} [options]\n` +
        `       ${PROGRAM} check [--config FILE]     validate config, password and ACL files\n` +
        `       ${PROGRAM} passwd FILE USER [...]    add, change or delete a user (see --help)\n` +
        `\n${HELP_OPTIONS}\n`,
    );
    return ExitCode.Ok;
  }
  if (parsed.version) {
    stdout(`${PROGRAM} ${VERSION}\n`);
    return ExitCode.Ok;
  }

  let brokerOptions: BrokerOptions;
  try {
    brokerOptions = await resolveCliOptions(parsed);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    stderr(`${PROGRAM}: ${error.message}\n`);
    return ExitCode.Usage;
  }

  const logger = createLogger(brokerOptions.logLevel, {
    sink: (line) => stderr(line + "\n"),
  });
  return await serve(brokerOptions, logger, { ...options, configFile: parsed.configFile });
}

/**
 * The options a parsed command line runs with: the config file (or the defaults without one),
 * then the flags on top.
 *
 * @throws {ConfigError} When the config file cannot be read or is invalid.
 */
export async function resolveCliOptions(args: CliArgs): Promise<BrokerOptions> {
  const base = args.configFile === undefined
    ? resolveOptions()
    : await loadConfigFile(args.configFile);
  return mergeOverrides(base, args.overrides);
}

/** Starts the broker, waits for a stop request, and stops it. */
async function serve(
  brokerOptions: BrokerOptions,
  logger: Logger,
  options: RunCliOptions & { configFile: string | undefined },
): Promise<number> {
  const stops = new StopRequests(options.signal);
  let stopHangupListener: (() => void) | undefined;
  try {
    let broker: Broker | undefined;
    try {
      broker = new Broker(brokerOptions, { logger, loadAcl: loadAclFile });
      await broker.start();
    } catch (error) {
      await broker?.stop().catch(() => {});
      if (error instanceof ConfigError || error instanceof PasswordFileError) {
        // A bad password or ACL file is a configuration error, reported like a bad config file.
        (options.stderr ?? writeStderr)(`${PROGRAM}: ${error.message}\n`);
        return ExitCode.Usage;
      }
      logger.error("broker failed to start", { error });
      return ExitCode.Failure;
    }
    for (const { host, port, type } of broker.addresses) {
      logger.info("listening", { address: formatAddress(host, port), transport: type });
    }
    logger.info("broker started", {
      version: VERSION,
      config: options.configFile,
      data: brokerOptions.dataPath,
    });
    stopHangupListener = onHangup(() => {
      // Re-reads the password file and the ACL; a bad file keeps the rules in force (logged).
      logger.info("reloading", { reason: "SIGHUP" });
      broker.reloadAuth().catch((error) => logger.error("auth reload failed", { error }));
      // New TLS/WSS connections get re-read certificate files; a bad file keeps the old (logged).
      broker.reloadCertificates().catch((error) =>
        logger.error("certificate reload failed", { error })
      );
    });
    options.onStarted?.(broker);

    const reason = await stops.next();
    logger.info("stopping", { reason });
    const stopped = broker.stop().then(() => "stopped" as const);
    // A second SIGINT/SIGTERM while stopping gives up on the graceful stop.
    const outcome = await Promise.race([stopped, stops.next().then(() => "forced" as const)])
      .catch((error: unknown) => {
        logger.error("broker failed to stop", { error });
        return "failed" as const;
      });
    if (outcome !== "stopped") {
      if (outcome === "forced") logger.warn("stop interrupted by a second signal");
      return ExitCode.Failure;
    }
    logger.info("broker stopped");
    return ExitCode.Ok;
  } finally {
    stopHangupListener?.();
    stops.close();
  }
}

/** Calls `handler` on each SIGHUP; returns a function that stops listening (no-op on Windows). */
function onHangup(handler: () => void): () => void {
  try {
    Deno.addSignalListener("SIGHUP", handler);
  } catch {
    return () => {};
  }
  return () => Deno.removeSignalListener("SIGHUP", handler);
}

function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Turns SIGINT, SIGTERM and an optional AbortSignal into awaitable stop requests. */
class StopRequests {
  readonly #pending: string[] = [];
  #waiter: ((reason: string) => void) | undefined;
  readonly #listeners: [Deno.Signal, () => void][] = [];
  readonly #abort: AbortSignal | undefined;
  readonly #onAbort = () => this.#push("abort");

  constructor(abort?: AbortSignal) {
    for (const name of ["SIGINT", "SIGTERM"] as const) {
      const listener = () => this.#push(name);
      try {
        Deno.addSignalListener(name, listener);
        this.#listeners.push([name, listener]);
      } catch {
        // SIGTERM cannot be listened to on Windows; SIGINT (Ctrl+C) still works there.
      }
    }
    this.#abort = abort;
    if (abort?.aborted) this.#push("abort");
    else abort?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** Resolves with the name of the next stop request (`SIGINT`, `SIGTERM` or `abort`). */
  next(): Promise<string> {
    const queued = this.#pending.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve) => this.#waiter = resolve);
  }

  /** Removes the signal listeners, giving the signals their default action back. */
  close(): void {
    for (const [name, listener] of this.#listeners) Deno.removeSignalListener(name, listener);
    this.#listeners.length = 0;
    this.#abort?.removeEventListener("abort", this.#onAbort);
  }

  #push(reason: string): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    if (waiter) waiter(reason);
    else this.#pending.push(reason);
  }
}
