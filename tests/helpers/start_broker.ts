/**
 * Starts a broker in the test process on 127.0.0.1 with an ephemeral port.
 * Always `await using` it (or call `stop()` in `finally`) so the sanitizers see
 * no leaked sockets or timers.
 */
import {
  Broker,
  type BrokerDeps,
  type BrokerOptions,
  resolveOptions,
} from "../../src/broker/mod.ts";
import { createLogger, type Logger } from "../../src/observe/log.ts";

/** A running test broker. */
export interface TestBroker extends AsyncDisposable {
  broker: Broker;
  port: number;
  /** Log lines captured (when `captureLogs` was set). */
  logs: string[];
  stop(): Promise<void>;
}

/** Options of {@link startBroker}. */
export interface StartOptions extends BrokerDeps {
  /** Keep log lines in `logs` (debug level). */
  captureLogs?: boolean;
}

/** Starts a broker with `overrides` on top of the defaults (memory store, port 0). */
export async function startBroker(
  overrides: Partial<BrokerOptions> = {},
  deps: StartOptions = {},
): Promise<TestBroker> {
  const logs: string[] = [];
  const logger: Logger | undefined = deps.captureLogs
    ? createLogger("debug", { sink: (line) => logs.push(line) })
    : deps.logger;
  const broker = new Broker(
    resolveOptions({
      listeners: [{ type: "tcp", host: "127.0.0.1", port: 0 }],
      dataPath: ":memory:",
      // Refusal tests read with 2 s timeouts; tests of the delay itself set it.
      authFailDelayMs: 0,
      ...overrides,
    }),
    { sweepIntervalMs: 50, ...deps, logger },
  );
  await broker.start();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await broker.stop();
  };
  return { broker, port: broker.addresses[0].port, logs, stop, [Symbol.asyncDispose]: stop };
}
