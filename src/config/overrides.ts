import { type BrokerOptions, DEFAULT_OPTIONS, type LogLevel } from "../broker/mod.ts";

/** Settings given on the command line; each one present wins over the config file. */
export interface ConfigOverrides {
  /** Address of the first listener. */
  host?: string;
  /** Port of the first listener. */
  port?: number;
  /** Storage location (`:memory:` for none). */
  dataPath?: string;
  /** Log verbosity. */
  logLevel?: LogLevel;
}

/**
 * Returns new options: `options` with every override that is set applied on top.
 *
 * `host` and `port` change the first listener (one is made from the defaults if there is none);
 * other listeners are kept as they are. The input is not modified.
 */
export function mergeOverrides(options: BrokerOptions, overrides: ConfigOverrides): BrokerOptions {
  const listeners = options.listeners.map((listener) => ({ ...listener }));
  if (overrides.host !== undefined || overrides.port !== undefined) {
    const first = listeners[0] ?? { ...DEFAULT_OPTIONS.listeners[0] };
    listeners[0] = {
      ...first,
      host: overrides.host ?? first.host,
      port: overrides.port ?? first.port,
    };
  }
  return {
    ...options,
    listeners,
    dataPath: overrides.dataPath ?? options.dataPath,
    logLevel: overrides.logLevel ?? options.logLevel,
  };
}
