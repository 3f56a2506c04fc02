import {
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  type LineCounter,
  type Node,
  type YAMLMap,
} from "yaml";
import {
  type BrokerOptions,
  DEFAULT_OPTIONS,
  type ListenerOptions,
  resolveOptions,
} from "../broker/mod.ts";
import { caProblem, keyPairProblem } from "../connection/mod.ts";
import { ConfigError } from "./errors.ts";
import {
  type ConfigKey,
  DEFAULT_LISTENER_PORTS,
  LIMIT_KEYS,
  LISTENER_KEY_TYPES,
  LISTENER_KEYS,
  LISTENER_TYPES,
  PORT_RULE,
  TOP_LEVEL_KEYS,
  type ValueRule,
} from "./schema.ts";
import { parseYamlSource, readYamlText } from "./yaml_source.ts";
import { explainReadError } from "../util/read_error.ts";

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
  return parseConfig(await readYamlText(path, "config file"), path);
}

/**
 * Parses config text into full {@link BrokerOptions}. An empty document gives the defaults.
 *
 * @param text YAML source.
 * @param file Name used in error messages.
 * @throws {ConfigError} When the text is not YAML or breaks the schema.
 */
export function parseConfig(text: string, file: string): BrokerOptions {
  const { doc, lineCounter } = parseYamlSource(text);
  return new ConfigReader(file, doc, lineCounter).read();
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
      const fields = new Map<string, Entry>();
      for (const field of this.#entries(item, `${path}.`)) {
        const name = field.path.slice(path.length + 1);
        if (!(LISTENER_KEYS as readonly string[]).includes(name)) {
          this.#unknownKey(field, `${path}.`, LISTENER_KEYS);
        }
        fields.set(name, field);
      }
      const listener = this.#readListener(path, item, fields);
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

  /** One listener: its keys must fit its type, and its certificate files must be usable. */
  #readListener(path: string, item: YAMLMap, fields: Map<string, Entry>): ListenerOptions {
    const typeEntry = fields.get("type");
    const type = typeEntry
      ? this.#value({ kind: "enum", values: LISTENER_TYPES }, typeEntry) as ListenerOptions["type"]
      : "tcp";
    // Errors about what a listener lacks point at its type, or at the listener itself.
    const typeNode = typeEntry?.key ?? item;
    for (const [key, types] of Object.entries(LISTENER_KEY_TYPES)) {
      const field = fields.get(key);
      if (field === undefined || types.includes(type)) continue;
      const why = key === "require_client_cert" && type === "wss"
        ? " (Deno.serve cannot request client certificates)"
        : "";
      this.#fail(
        field.key,
        `${field.path} applies only to ${types.join(" and ")} listeners, not ${type}${why}`,
      );
    }
    const hostEntry = fields.get("host");
    const portEntry = fields.get("port");
    const host = hostEntry
      ? this.#value({ kind: "string" }, hostEntry) as string
      : DEFAULT_OPTIONS.listeners[0].host;
    let port = DEFAULT_LISTENER_PORTS[type];
    if (portEntry) port = this.#value(PORT_RULE, portEntry) as number;
    if (port === undefined) {
      this.#fail(typeNode, `${path} is a ${type} listener and needs a port (it has no default)`);
    }
    const listener: ListenerOptions = { type, host, port };

    if (type === "tls" || type === "wss") {
      const certEntry = fields.get("cert_file");
      const keyEntry = fields.get("key_file");
      if (certEntry === undefined || keyEntry === undefined) {
        const missing = certEntry === undefined ? "cert_file" : "key_file";
        this.#fail(typeNode, `${path} is a ${type} listener and needs ${missing}`);
      }
      const cert = this.#pemFile(certEntry, "certificate");
      const key = this.#pemFile(keyEntry, "key");
      const problem = keyPairProblem(cert.text, key.text);
      if (problem !== undefined) {
        this.#failEntry(keyEntry, `${path}: ${problem} (${cert.path}, ${key.path})`);
      }
      listener.certFile = cert.path;
      listener.keyFile = key.path;
    }
    const requireEntry = fields.get("require_client_cert");
    const caEntry = fields.get("ca_file");
    if (requireEntry) {
      listener.requireClientCert = this.#value({ kind: "bool" }, requireEntry) as boolean;
    }
    if (listener.requireClientCert && caEntry === undefined) {
      this.#failEntry(
        requireEntry!,
        `${path}.require_client_cert needs ca_file, the CA that client certificates must chain to`,
      );
    }
    if (caEntry !== undefined) {
      if (!listener.requireClientCert) {
        this.#fail(caEntry.key, `${caEntry.path} is only used with require_client_cert: true`);
      }
      listener.caFile = this.#pemFile(caEntry, "CA certificate").path;
    }
    const pathEntry = fields.get("path");
    if (pathEntry) {
      const value = this.#value({ kind: "string" }, pathEntry) as string;
      if (!/^\/[^\s?#]*$/.test(value)) {
        this.#failEntry(
          pathEntry,
          `${pathEntry.path} must be an HTTP path starting with "/" (no spaces, "?" or "#"), ` +
            `got ${JSON.stringify(value)}`,
        );
      }
      listener.path = value;
    }
    return listener;
  }

  /** Reads a PEM file named by `entry` now, so that a bad path stops the broker before it starts. */
  #pemFile(
    entry: Entry,
    kind: "certificate" | "key" | "CA certificate",
  ): { path: string; text: string } {
    const path = this.#value({ kind: "string" }, entry) as string;
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (error) {
      this.#failEntry(
        entry,
        `${entry.path} ${JSON.stringify(path)} cannot be read: ${explainReadError(error)}`,
      );
    }
    const marker = kind === "key"
      ? /-----BEGIN [A-Z ]*PRIVATE KEY-----/
      : /-----BEGIN CERTIFICATE-----/;
    if (!marker.test(text)) {
      this.#failEntry(
        entry,
        `${entry.path} ${JSON.stringify(path)} holds no PEM ${
          kind === "key" ? "private key" : "certificate"
        }`,
      );
    }
    if (kind === "key" && text.includes("-----BEGIN ENCRYPTED PRIVATE KEY-----")) {
      this.#failEntry(
        entry,
        `${entry.path} ${JSON.stringify(path)} is encrypted; the broker needs an unencrypted key`,
      );
    }
    if (kind === "CA certificate") {
      const problem = caProblem(text);
      if (problem !== undefined) this.#failEntry(entry, `${entry.path}: ${problem} (${path})`);
    }
    return { path, text };
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
