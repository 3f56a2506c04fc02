import { parseArgs } from "node:util";
import type { ConfigOverrides } from "../config/mod.ts";
import { LOG_LEVELS } from "../config/mod.ts";
import type { LogLevel } from "../broker/mod.ts";

/** The command line, parsed and checked. */
export interface CliArgs {
  /** `--help` / `-h` was given. */
  help: boolean;
  /** `--version` / `-V` was given. */
  version: boolean;
  /** `--config FILE`, if given. */
  configFile?: string;
  /** Flags that override the config file. */
  overrides: ConfigOverrides;
}

/** A command line that cannot be run; the message is one line, without the program name. */
export class UsageError extends TypeError {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

const OPTIONS = {
  config: { type: "string" },
  host: { type: "string" },
  port: { type: "string" },
  data: { type: "string" },
  "log-level": { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

type OptionName = keyof typeof OPTIONS;

/** The option summary printed by `--help`. */
export const HELP_OPTIONS = `Options:
  --config FILE       Read settings from a YAML file (see config/broker.example.yaml)
  --host ADDR         Address of the first listener (default 127.0.0.1)
  --port N            Port of the first listener, 0-65535 (default 1883; 0 picks a free port)
  --data PATH         Deno KV file for sessions and retained messages, or :memory: for none
                      (default ./data/broker.db)
  --log-level LEVEL   error, warn, info or debug (default info)
  -h, --help          Print this help and exit
  -V, --version       Print the version and exit

Flags override the config file. Without --config the built-in defaults apply.
Exit status: 0 after a clean stop (SIGINT/SIGTERM), 1 if the broker fails, 2 for bad
flags or a bad config file.`;

/**
 * Parses the command line strictly: unknown flags, missing or malformed values and stray
 * arguments are errors.
 *
 * @throws {UsageError} With a one-line explanation.
 */
export function parseCliArgs(args: readonly string[]): CliArgs {
  const { tokens } = parseArgs({
    args: [...args],
    options: OPTIONS,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const values = new Map<OptionName, string | true>();
  for (const token of tokens) {
    if (token.kind === "positional") {
      throw new UsageError(`Unexpected argument ${JSON.stringify(token.value)}`);
    }
    if (token.kind !== "option") continue;
    if (!Object.hasOwn(OPTIONS, token.name)) {
      throw new UsageError(`Unknown option ${token.rawName}`);
    }
    const name = token.name as OptionName;
    if (OPTIONS[name].type === "boolean") {
      if (token.value !== undefined) throw new UsageError(`${token.rawName} takes no value`);
      values.set(name, true);
      continue;
    }
    // `--config --port 1`: the next flag is not meant as this one's value.
    const looksLikeFlag = !token.inlineValue && token.value !== undefined &&
      /^-[A-Za-z-]/.test(token.value);
    if (token.value === undefined || looksLikeFlag) {
      throw new UsageError(`${token.rawName} needs a value`);
    }
    values.set(name, token.value);
  }

  const text = (name: OptionName): string | undefined => {
    const value = values.get(name);
    if (typeof value !== "string") return undefined;
    if (value === "") throw new UsageError(`--${name} needs a non-empty value`);
    return value;
  };
  const overrides: ConfigOverrides = {};
  const host = text("host");
  if (host !== undefined) overrides.host = host;
  const port = text("port");
  if (port !== undefined) overrides.port = parsePort(port);
  const data = text("data");
  if (data !== undefined) overrides.dataPath = data;
  const level = text("log-level");
  if (level !== undefined) overrides.logLevel = parseLogLevel(level);
  const configFile = text("config");
  return {
    help: values.has("help"),
    version: values.has("version"),
    ...(configFile === undefined ? {} : { configFile }),
    overrides,
  };
}

function parsePort(value: string): number {
  const port = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(port >= 0 && port <= 65_535)) {
    throw new UsageError(`--port must be an integer from 0 to 65535, got ${JSON.stringify(value)}`);
  }
  return port;
}

function parseLogLevel(value: string): LogLevel {
  if ((LOG_LEVELS as readonly string[]).includes(value)) return value as LogLevel;
  throw new UsageError(
    `--log-level must be one of ${LOG_LEVELS.join(", ")}, got ${JSON.stringify(value)}`,
  );
}
