import {
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  parseDocument,
  type YAMLMap,
} from "yaml";
import {
  type BrokerOptions,
  DEFAULT_OPTIONS,
  type ListenerOptions,
  resolveOptions,
} from "../broker/mod.ts";
import { ConfigError } from "./errors.ts";
import {
  type ConfigKey,
  LIMIT_KEYS,
  LISTENER_KEYS,
  LISTENER_TYPES,
  PORT_RULE,
  TOP_LEVEL_KEYS,
  type ValueRule,
} from "./schema.ts";

/** Options that the file may set, before the defaults fill the rest. */
type PartialOptions = { -readonly [K in keyof BrokerOptions]?: BrokerOptions[K] };

/** The YAML value of one key, with its key node so errors on a missing value can point at it. */
interface Entry {
  /** Dotted path for messages: `limits.receive_maximum`, `listeners[0].port`. */
  path: string;
  key: Node;
  value: Node | null;
}

/**
 * Reads a YAML config file into full {@link BrokerOptions}: what the file sets, defaults for the rest.
 *
 * @param path The file, as the user named it; it appears as is in error messages.
 * @returns Options ready for `new Broker(options)`.
 * @throws {ConfigError} When the file cannot be read, is not YAML, or breaks the schema.
 */
export async function loadConfigFile(path: string): Promise<BrokerOptions> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new ConfigError({ file: path }, `Cannot read config file: ${explainReadError(error)}`, {
      cause: error,
    });
  }
  return parseConfig(text, path);
}

/**
 * Parses config text into full {@link BrokerOptions}. An empty document gives the defaults.
 *
 * @param text YAML source.
 * @param file Name used in error messages.
 * @throws {ConfigError} When the text is not YAML or breaks the schema.
 */
export function parseConfig(text: string, file: string): BrokerOptions {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  return new ConfigReader(file, doc, lineCounter).read();
}

function explainReadError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.IsADirectory) return "it is a directory";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.NotCapable) return "no read permission (run with --allow-read)";
  if (error instanceof Deno.errors.InvalidData) return "not UTF-8 text";
  return error instanceof Error ? error.message : String(error);
}

/** Walks one parsed document and turns it into options, failing at the first problem. */
class ConfigReader {
  readonly #file: string;
  readonly #doc: Document;
  readonly #lines: LineCounter;
  /** Where each option was set, for checks that involve two options. */
  readonly #setAt = new Map<keyof BrokerOptions, Entry>();

  constructor(file: string, doc: Document, lines: LineCounter) {
    this.#file = file;
    this.#doc = doc;
    this.#lines = lines;
  }

  read(): BrokerOptions {
    const syntax = this.#doc.errors[0];
    if (syntax) {
      const message = syntax.code === "MULTIPLE_DOCS"
        ? "A config file holds one YAML document, found a second one"
        : firstLine(syntax.message);
      this.#failAt(syntax.pos[0], `Invalid YAML: ${message}`);
    }
    const root = this.#resolve(this.#doc.contents);
    const partial: PartialOptions = {};
    if (root === null || isNullScalar(root)) return resolveOptions(partial);
    if (!isMap(root)) {
      this.#fail(root, `The config must be a mapping of keys to values, got ${describe(root)}`);
    }
    for (const entry of this.#entries(root, "")) {
      const name = entry.path;
      const scalar = TOP_LEVEL_KEYS.find((k) => k.key === name);
      if (scalar) this.#readKey(scalar, entry, partial);
      else if (name === "listeners") partial.listeners = this.#readListeners(entry);
      else if (name === "limits") this.#readLimits(entry, partial);
      else {
        this.#unknownKey(entry, "", [...TOP_LEVEL_KEYS.map((k) => k.key), "listeners", "limits"]);
      }
    }
    const options = resolveOptions(partial);
    this.#crossCheck(options);
    return options;
  }

  #readLimits(entry: Entry, partial: PartialOptions): void {
    const node = this.#resolve(entry.value);
    if (node === null || isNullScalar(node)) return;
    if (!isMap(node)) this.#failEntry(entry, `limits must be a mapping, got ${describe(node)}`);
    for (const limit of this.#entries(node, "limits.")) {
      const key = LIMIT_KEYS.find((k) => `limits.${k.key}` === limit.path);
      if (key) this.#readKey(key, limit, partial);
      else this.#unknownKey(limit, "limits.", LIMIT_KEYS.map((k) => k.key));
    }
  }

  #readListeners(entry: Entry): ListenerOptions[] {
    const node = this.#resolve(entry.value);
    if (node === null || !isSeq(node)) {
      this.#failEntry(entry, `listeners must be a list of listeners, got ${describe(node)}`);
    }
    if (node.items.length === 0) {
      this.#fail(node, "listeners must list at least one listener, got an empty list");
    }
    const fallback = DEFAULT_OPTIONS.listeners[0];
    const listeners: ListenerOptions[] = [];
    const seen = new Map<string, string>();
    node.items.forEach((raw, index) => {
      const path = `listeners[${index}]`;
      const item = this.#resolve(raw as Node | null);
      if (item === null || !isMap(item)) {
        this.#failAt(
          offsetOf(item) ?? offsetOf(node),
          `${path} must be a mapping with type, host and port, got ${describe(item)}`,
        );
      }
      const listener: ListenerOptions = { type: "tcp", host: fallback.host, port: fallback.port };
      for (const field of this.#entries(item, `${path}.`)) {
        const name = field.path.slice(path.length + 1);
        if (name === "type") {
          const rule: ValueRule = { kind: "enum", values: LISTENER_TYPES };
          listener.type = this.#value(rule, field) as ListenerOptions["type"];
        } else if (name === "host") {
          listener.host = this.#value({ kind: "string" }, field) as string;
        } else if (name === "port") {
          listener.port = this.#value(PORT_RULE, field) as number;
        } else {
          this.#unknownKey(field, `${path}.`, LISTENER_KEYS);
        }
      }
      const address = `${listener.host}:${listener.port}`;
      const earlier = seen.get(address);
      if (earlier !== undefined && listener.port !== 0) {
        this.#fail(item, `${path} binds ${address} again (already bound by ${earlier})`);
      }
      seen.set(address, path);
      listeners.push(listener);
    });
    return listeners;
  }

  #readKey(key: ConfigKey, entry: Entry, partial: PartialOptions): void {
    (partial as Record<string, unknown>)[key.field] = this.#value(key.rule, entry);
    this.#setAt.set(key.field, entry);
  }

  /** Returns the entry's value if it satisfies the rule, or throws a ConfigError. */
  #value(rule: ValueRule, entry: Entry): string | number | boolean | undefined {
    const node = this.#resolve(entry.value);
    const value = node !== null && isScalar(node) ? node.value : undefined;
    switch (rule.kind) {
      case "int":
        if (
          typeof value === "number" && Number.isInteger(value) && value >= rule.min &&
          value <= rule.max
        ) return value;
        return this.#failEntry(
          entry,
          `${entry.path} must be an integer from ${rule.min} to ${rule.max}, got ${describe(node)}`,
        );
      case "bool":
        if (typeof value === "boolean") return value;
        return this.#failEntry(entry, `${entry.path} must be true or false, got ${describe(node)}`);
      case "string":
        if (typeof value === "string" && value !== "") return value;
        return this.#failEntry(
          entry,
          `${entry.path} must be a non-empty string, got ${describe(node)}`,
        );
      case "enum":
        if (typeof value === "string" && rule.values.includes(value)) return value;
        return this.#failEntry(
          entry,
          `${entry.path} must be one of ${rule.values.join(", ")}, got ${describe(node)}`,
        );
      case "bool_or":
        if (typeof value === "boolean") return value;
        if (typeof value === "string" && rule.values.includes(value)) return value;
        return this.#failEntry(
          entry,
          `${entry.path} must be true, false or ${rule.values.join(", ")}, got ${describe(node)}`,
        );
      case "path":
        if (value === null || node === null) return undefined;
        if (typeof value === "string" && value !== "") return value;
        return this.#failEntry(
          entry,
          `${entry.path} must be a file path (or nothing, for none), got ${describe(node)}`,
        );
    }
  }

  /** Checks that involve more than one option, once every key is read. */
  #crossCheck(options: BrokerOptions): void {
    if (options.outboxSoftLimitBytes > options.outboxHardLimitBytes) {
      const at = this.#setAt.get("outboxSoftLimitBytes") ??
        this.#setAt.get("outboxHardLimitBytes")!;
      this.#failEntry(
        at,
        `limits.outbox_soft_limit_bytes (${options.outboxSoftLimitBytes}) must not exceed ` +
          `limits.outbox_hard_limit_bytes (${options.outboxHardLimitBytes})`,
      );
    }
  }

  /** The key/value pairs of a mapping, with string keys checked. */
  #entries(map: YAMLMap, prefix: string): Entry[] {
    return map.items.map((pair) => {
      const key = pair.key as Node | null;
      if (key === null || !isScalar(key) || typeof key.value !== "string") {
        this.#failAt(
          offsetOf(key) ?? offsetOf(map),
          `Keys must be plain words such as "port", got ${describe(key)}`,
        );
      }
      return { path: prefix + key.value, key, value: pair.value as Node | null };
    });
  }

  #unknownKey(entry: Entry, prefix: string, known: readonly string[]): never {
    const name = entry.path.slice(prefix.length);
    const guess = closest(name, known);
    const hint = guess === undefined
      ? `; known keys: ${known.join(", ")}`
      : ` (did you mean ${prefix}${guess}?)`;
    this.#fail(entry.key, `Unknown key ${entry.path}${hint}`);
  }

  /** Follows `*alias` references to the anchored node. */
  #resolve(node: Node | null | undefined): Node | null {
    if (node && isAlias(node)) return (node.resolve(this.#doc) as Node | undefined) ?? null;
    return node ?? null;
  }

  /** Fails at the value, or at the key when the value is missing. */
  #failEntry(entry: Entry, reason: string): never {
    const value = this.#resolve(entry.value);
    const empty = value === null || (isNullScalar(value) && value.range?.[0] === value.range?.[1]);
    const target = empty ? entry.key : entry.value;
    this.#fail(target, reason);
  }

  #fail(node: Node | null, reason: string): never {
    this.#failAt(offsetOf(node) ?? 0, reason);
  }

  #failAt(offset: number | undefined, reason: string): never {
    const { line, col } = this.#lines.linePos(offset ?? 0);
    throw new ConfigError({ file: this.#file, line, column: col }, reason);
  }
}

function offsetOf(node: Node | null | undefined): number | undefined {
  return node?.range?.[0];
}

function isNullScalar(node: Node): boolean {
  return isScalar(node) && node.value === null;
}

function firstLine(message: string): string {
  return message.split("\n", 1)[0].replace(/ at line \d+, column \d+:?$/, "");
}

/** Describes a node the way a user would recognise it in their file. */
function describe(node: Node | null): string {
  if (node === null) return "nothing";
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return "a list";
  if (!isScalar(node)) return "an unsupported value";
  const value = node.value;
  if (value === null) return "nothing";
  if (typeof value === "string") {
    return JSON.stringify(value.length > 40 ? value.slice(0, 37) + "..." : value);
  }
  return String(value);
}

/** The known key nearest to a misspelt one, if it is near enough to be a typo. */
function closest(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 4)) + 1;
  for (const candidate of known) {
    const distance = editDistance(name, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, substitution);
    }
    previous = current;
  }
  return previous[b.length];
}
