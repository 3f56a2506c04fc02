/**
 * Levelled, structured logging. One line per record: `time level message key=value ...`,
 * or JSON lines when asked. Callers check `logger.debugEnabled` before building
 * costly records on hot paths.
 *
 * @module
 */
import type { LogLevel } from "../broker/options.ts";

/** Key/value context attached to a log record. */
export type LogFields = Record<string, unknown>;

/** A destination for formatted log lines. */
export type LogSink = (line: string, level: LogLevel) => void;

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** The logging API every module receives (never `console.*` directly). */
export interface Logger {
  /** Records below this level are discarded. */
  readonly level: LogLevel;
  /** True when debug records are written; check it before building one on a hot path. */
  readonly debugEnabled: boolean;
  /** True when info records are written (per-connection records check it). */
  readonly infoEnabled: boolean;
  /** Writes an error record. */
  error(message: string, fields?: LogFields): void;
  /** Writes a warning record. */
  warn(message: string, fields?: LogFields): void;
  /** Writes an informational record. */
  info(message: string, fields?: LogFields): void;
  /** Writes a debug record. */
  debug(message: string, fields?: LogFields): void;
}

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** Where lines go; stderr by default. */
  sink?: LogSink;
  /** Emit JSON lines instead of text. */
  json?: boolean;
}

const encoder = new TextEncoder();

function stderrSink(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

function formatValue(value: unknown): string {
  if (typeof value === "string") {
    return /^[\w.:/@+#$-]*$/.test(value) ? value : JSON.stringify(value);
  }
  if (value instanceof Error) return JSON.stringify(value.message);
  return String(value);
}

/** Creates a logger that writes records at `level` and above. */
export function createLogger(level: LogLevel, options: LoggerOptions = {}): Logger {
  const sink = options.sink ?? stderrSink;
  const json = options.json ?? false;
  const threshold = RANK[level];
  const write = (recordLevel: LogLevel, message: string, fields?: LogFields) => {
    if (RANK[recordLevel] > threshold) return;
    const time = new Date().toISOString();
    if (json) {
      sink(JSON.stringify({ time, level: recordLevel, msg: message, ...fields }), recordLevel);
      return;
    }
    let line = `${time} ${recordLevel.toUpperCase().padEnd(5)} ${message}`;
    if (fields) {
      for (const key in fields) {
        const value = fields[key];
        if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
      }
    }
    sink(line, recordLevel);
  };
  return {
    level,
    debugEnabled: threshold >= RANK.debug,
    infoEnabled: threshold >= RANK.info,
    error: (m, f) => write("error", m, f),
    warn: (m, f) => write("warn", m, f),
    info: (m, f) => write("info", m, f),
    debug: (m, f) => write("debug", m, f),
  };
}

/** A logger that discards everything (tests, embedding). */
export const silentLogger: Logger = createLogger("error", { sink: () => {} });
