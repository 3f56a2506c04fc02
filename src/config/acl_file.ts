/**
 * The ACL file (YAML) → {@link AclRules}, strictly validated, with errors at
 * `file:line:column`. Format (see config/acl.example.yaml and the README):
 *
 * ```yaml
 * roles:
 *   sensor:
 *     - allow: publish
 *       topic: sensors/%u/#
 *     - deny: [subscribe, receive]
 *       topic: sensors/+/secret
 * users:
 *   alice: sensor            # one role, or a list of roles
 * certificates:
 *   device-42.example.com: [sensor]
 * anonymous: [guest]
 * ```
 *
 * @module
 */
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
  ACL_ACTIONS,
  type AclAction,
  aclFilterError,
  type AclRule,
  type AclRules,
} from "../auth/mod.ts";
import { ConfigError } from "./errors.ts";
import { parseYamlSource, readYamlText } from "./yaml_source.ts";

const TOP_KEYS = ["roles", "users", "certificates", "anonymous"] as const;
const RULE_KEYS = ["allow", "deny", "topic"] as const;

/**
 * Reads and validates an ACL file.
 *
 * @throws {ConfigError} When it cannot be read, is not YAML, or breaks the format.
 */
export async function loadAclFile(path: string): Promise<AclRules> {
  return parseAclFile(await readYamlText(path, "ACL file"), path);
}

/**
 * Parses ACL text. An empty document is an ACL with no roles: every action is denied.
 *
 * @param file Name used in error messages.
 * @throws {ConfigError} At the first problem.
 */
export function parseAclFile(text: string, file: string): AclRules {
  const { doc, lineCounter } = parseYamlSource(text);
  return new AclReader(file, doc, lineCounter).read();
}

interface Pair {
  name: string;
  key: Node;
  value: Node | null;
}

class AclReader {
  readonly #file: string;
  readonly #doc: Document;
  readonly #lines: LineCounter;

  constructor(file: string, doc: Document, lines: LineCounter) {
    this.#file = file;
    this.#doc = doc;
    this.#lines = lines;
  }

  read(): AclRules {
    const syntax = this.#doc.errors[0];
    if (syntax) {
      const message = syntax.code === "MULTIPLE_DOCS"
        ? "An ACL file holds one YAML document, found a second one"
        : syntax.message.split("\n", 1)[0].replace(/ at line \d+, column \d+:?$/, "");
      this.#failAt(syntax.pos[0], `Invalid YAML: ${message}`);
    }
    const roles = new Map<string, AclRule[]>();
    const users = new Map<string, string[]>();
    const certificates = new Map<string, string[]>();
    let anonymous: string[] = [];
    /** Role references, checked once every role is known. */
    const references: { role: string; node: Node }[] = [];
    const root = this.#resolve(this.#doc.contents);
    if (root === null || isNull(root)) {
      return { roles, users, certificates, anonymous };
    }
    if (!isMap(root)) {
      this.#fail(
        root,
        `The ACL must be a mapping with ${TOP_KEYS.join(", ")}, got ${describe(root)}`,
      );
    }
    for (const top of this.#pairs(root)) {
      const value = this.#resolve(top.value);
      switch (top.name) {
        case "roles":
          if (value === null || isNull(value)) break;
          if (!isMap(value)) this.#failPair(top, `roles must be a mapping of role names to rules`);
          for (const role of this.#pairs(value)) roles.set(role.name, this.#readRules(role));
          break;
        case "users":
        case "certificates": {
          if (value === null || isNull(value)) break;
          if (!isMap(value)) {
            this.#failPair(top, `${top.name} must be a mapping of names to roles`);
          }
          const target = top.name === "users" ? users : certificates;
          for (const entry of this.#pairs(value)) {
            target.set(
              entry.name,
              this.#readRoleList(entry, `${top.name}.${entry.name}`, references),
            );
          }
          break;
        }
        case "anonymous":
          anonymous = this.#readRoleList(top, "anonymous", references);
          break;
        default:
          this.#fail(top.key, `Unknown key ${top.name}; known keys: ${TOP_KEYS.join(", ")}`);
      }
    }
    for (const ref of references) {
      if (!roles.has(ref.role)) {
        const known = [...roles.keys()];
        this.#fail(
          ref.node,
          `Unknown role ${JSON.stringify(ref.role)}` +
            (known.length > 0 ? `; roles defined: ${known.join(", ")}` : "; no roles are defined"),
        );
      }
    }
    return { roles, users, certificates, anonymous };
  }

  #readRules(role: Pair): AclRule[] {
    const list = this.#resolve(role.value);
    if (list === null || isNull(list)) return [];
    if (!isSeq(list)) {
      this.#failPair(role, `roles.${role.name} must be a list of rules, got ${describe(list)}`);
    }
    return list.items.map((raw, index) => {
      const path = `roles.${role.name}[${index}]`;
      const item = this.#resolve(raw as Node | null);
      if (item === null || !isMap(item)) {
        this.#fail(
          item ?? list,
          `${path} must be a mapping like {allow: publish, topic: a/#}, got ${describe(item)}`,
        );
      }
      let effect: "allow" | "deny" | undefined;
      let actions: AclAction[] = [];
      let topic: string | undefined;
      for (const field of this.#pairs(item)) {
        if (field.name === "allow" || field.name === "deny") {
          if (effect !== undefined) {
            this.#fail(field.key, `${path} has both allow and deny; write two rules`);
          }
          effect = field.name;
          actions = this.#readActions(field, `${path}.${field.name}`);
        } else if (field.name === "topic") {
          const node = this.#resolve(field.value);
          const value = node !== null && isScalar(node) ? node.value : undefined;
          if (typeof value !== "string" || value === "") {
            this.#failPair(field, `${path}.topic must be a topic filter, got ${describe(node)}`);
          }
          const error = aclFilterError(value);
          if (error !== undefined) this.#fail(node, `${path}.topic is invalid: ${error}`);
          topic = value;
        } else {
          this.#fail(
            field.key,
            `Unknown key ${path}.${field.name}; a rule has ${RULE_KEYS.join(", ")}`,
          );
        }
      }
      if (effect === undefined) this.#fail(item, `${path} needs allow: or deny: with its actions`);
      if (topic === undefined) this.#fail(item, `${path} needs topic: with a topic filter`);
      return { effect, actions, topic, source: this.#where(item) };
    });
  }

  #readActions(field: Pair, path: string): AclAction[] {
    const node = this.#resolve(field.value);
    const items = node !== null && isSeq(node) ? node.items as (Node | null)[] : [node];
    if (items.length === 0) this.#failPair(field, `${path} lists no actions`);
    const actions: AclAction[] = [];
    for (const raw of items) {
      const item = this.#resolve(raw);
      const value = item !== null && isScalar(item) ? item.value : undefined;
      if (value === "all") {
        for (const a of ACL_ACTIONS) if (!actions.includes(a)) actions.push(a);
        continue;
      }
      if (typeof value !== "string" || !(ACL_ACTIONS as readonly string[]).includes(value)) {
        this.#fail(
          item ?? field.key,
          `${path} must be ${ACL_ACTIONS.join(", ")} or all (or a list of them), got ${
            describe(item)
          }`,
        );
      }
      if (!actions.includes(value as AclAction)) actions.push(value as AclAction);
    }
    return actions;
  }

  #readRoleList(pair: Pair, path: string, references: { role: string; node: Node }[]): string[] {
    const node = this.#resolve(pair.value);
    if (node === null || isNull(node)) return [];
    const items = isSeq(node) ? node.items as (Node | null)[] : [node];
    const roles: string[] = [];
    for (const raw of items) {
      const item = this.#resolve(raw);
      const value = item !== null && isScalar(item) ? item.value : undefined;
      if (typeof value !== "string" || value === "") {
        this.#fail(
          item ?? pair.key,
          `${path} must name a role or list roles, got ${describe(item)}`,
        );
      }
      references.push({ role: value, node: item! });
      if (!roles.includes(value)) roles.push(value);
    }
    return roles;
  }

  #pairs(map: YAMLMap): Pair[] {
    return map.items.map((pair) => {
      const key = pair.key as Node | null;
      if (
        key === null || !isScalar(key) ||
        (typeof key.value !== "string" && typeof key.value !== "number")
      ) {
        this.#fail(key ?? map, `Keys must be names, got ${describe(key)}`);
      }
      return { name: String(key.value), key, value: pair.value as Node | null };
    });
  }

  #resolve(node: Node | null | undefined): Node | null {
    if (node && isAlias(node)) return (node.resolve(this.#doc) as Node | undefined) ?? null;
    return node ?? null;
  }

  #where(node: Node): string {
    const { line, col } = this.#lines.linePos(node.range?.[0] ?? 0);
    return `${this.#file}:${line}:${col}`;
  }

  /** Fails at the value, or at the key when the value is missing. */
  #failPair(pair: Pair, reason: string): never {
    const value = this.#resolve(pair.value);
    const empty = value === null || (isNull(value) && value.range?.[0] === value.range?.[1]);
    this.#fail(empty ? pair.key : value, reason);
  }

  #fail(node: Node | null, reason: string): never {
    this.#failAt(node?.range?.[0] ?? 0, reason);
  }

  #failAt(offset: number, reason: string): never {
    const { line, col } = this.#lines.linePos(offset);
    throw new ConfigError({ file: this.#file, line, column: col }, reason);
  }
}

function isNull(node: Node): boolean {
  return isScalar(node) && node.value === null;
}

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
