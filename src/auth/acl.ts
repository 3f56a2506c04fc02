/**
 * The role-based ACL engine: pure functions over {@link AclRules}, no I/O.
 *
 * Evaluation order (also in the README):
 *
 * 1. **Roles.** A client's roles are those of its user name (`users`), then those of each
 *    certificate identity it presented (`certificates`: the Common Name, then each Subject
 *    Alternative Name), in that order, without repeats. A client with neither a user name nor a
 *    certificate gets the `anonymous` roles. No roles means everything is denied.
 * 2. **Rules.** The rules of those roles are read as one list: the first role's rules in file
 *    order, then the next role's. Only rules naming the action (`publish`, `subscribe` or
 *    `receive`) take part.
 * 3. **First match wins**; when no rule matches, the action is denied (deny by default).
 *    - publish and receive (a topic name): a rule matches when its filter matches the topic, as a
 *      subscription would (so `#` and `+/...` do not match `$` topics).
 *    - subscribe (a filter; `$share/{group}/` is stripped first): an allow rule matches only when
 *      it *covers* the requested filter (every topic the filter can match, the rule matches too);
 *      a deny rule matches when it *intersects* the filter (some topic matches both). An allow
 *      rule that only partly covers the filter does not match, and the walk goes on.
 * 4. **Substitution.** `%c` (client id) and `%u` (user name) in a rule's filter are replaced
 *    before matching. A value that is empty, missing (`%u` without a user name), starts with `$`
 *    or contains `+`, `#`, `/` or U+0000 is unsafe: an allow rule using it matches nothing, and a
 *    deny rule using it matches everything, so a crafted id can never widen what a rule grants.
 *
 * @module
 */
import { levelsMatch, parseTopicFilter } from "../topic/mod.ts";

/** What a rule is about: sending to a topic, subscribing to a filter, or being sent a message. */
export type AclAction = "publish" | "subscribe" | "receive";
/** Every {@link AclAction}, in a stable order. */
export const ACL_ACTIONS: readonly AclAction[] = ["publish", "subscribe", "receive"];

/** One allow or deny rule of a role. */
export interface AclRule {
  effect: "allow" | "deny";
  /** The actions the rule applies to. */
  actions: readonly AclAction[];
  /** A topic filter; `%c` and `%u` are substituted. */
  topic: string;
  /** Where the rule was written, for logs (`acl.yaml:12:7`). */
  source?: string;
}

/** A whole ACL: roles and who has them. */
export interface AclRules {
  /** Ordered rules by role name. */
  roles: ReadonlyMap<string, readonly AclRule[]>;
  /** Role names by user name. */
  users: ReadonlyMap<string, readonly string[]>;
  /** Role names by certificate identity (Common Name or Subject Alternative Name). */
  certificates: ReadonlyMap<string, readonly string[]>;
  /** Roles of clients with neither a user name nor a certificate. */
  anonymous: readonly string[];
}

/** Who is asking, as the ACL sees it. */
export interface AclIdentity {
  clientId: string;
  /** The effective user name (the certificate CN when configured so). */
  username?: string;
  /** Certificate identities: Common Name, then Subject Alternative Names. */
  certificateIds?: readonly string[];
}

/** The outcome of one check, with the deciding rule (none when denied by default). */
export interface AclDecision {
  allowed: boolean;
  rule?: AclRule;
  role?: string;
}

const DENIED_BY_DEFAULT: AclDecision = Object.freeze({ allowed: false });

/** A rule with its filter split and the identity's values substituted. */
interface BoundRule {
  rule: AclRule;
  role: string;
  /** Filter levels after substitution; `undefined` when a substituted value was unsafe. */
  levels: string[] | undefined;
}

/** The rules that apply to one identity, bound once and reused for every check. */
export class BoundAcl {
  readonly roles: readonly string[];
  readonly #byAction: Record<AclAction, BoundRule[]>;

  constructor(rules: AclRules, identity: AclIdentity) {
    this.roles = rolesOf(rules, identity);
    this.#byAction = { publish: [], subscribe: [], receive: [] };
    for (const role of this.roles) {
      for (const rule of rules.roles.get(role) ?? []) {
        const bound = { rule, role, levels: bindFilter(rule.topic, identity) };
        for (const action of rule.actions) this.#byAction[action].push(bound);
      }
    }
  }

  /** Whether the identity may publish to, or receive a message on, a topic name. */
  checkTopic(action: "publish" | "receive", topic: string): AclDecision {
    const rules = this.#byAction[action];
    if (rules.length === 0) return DENIED_BY_DEFAULT;
    const t = topic.split("/");
    for (const b of rules) {
      const hit = b.levels === undefined
        ? b.rule.effect === "deny"
        : filterMatchesTopic(b.levels, t);
      if (hit) return { allowed: b.rule.effect === "allow", rule: b.rule, role: b.role };
    }
    return DENIED_BY_DEFAULT;
  }

  /** Whether the identity may subscribe to a filter (as sent; `$share/group/` is stripped). */
  checkSubscribe(rawFilter: string): AclDecision {
    const rules = this.#byAction.subscribe;
    if (rules.length === 0) return DENIED_BY_DEFAULT;
    const parsed = parseTopicFilter(rawFilter);
    if (typeof parsed === "string") return DENIED_BY_DEFAULT;
    const f = parsed.filter.split("/");
    for (const b of rules) {
      let hit: boolean;
      if (b.rule.effect === "allow") hit = b.levels !== undefined && covers(b.levels, f);
      else hit = b.levels === undefined || intersects(b.levels, f);
      if (hit) return { allowed: b.rule.effect === "allow", rule: b.rule, role: b.role };
    }
    return DENIED_BY_DEFAULT;
  }

  /** Dispatches on the action. */
  check(action: AclAction, topicOrFilter: string): AclDecision {
    return action === "subscribe"
      ? this.checkSubscribe(topicOrFilter)
      : this.checkTopic(action, topicOrFilter);
  }
}

/** The roles of an identity, in evaluation order, without repeats. */
export function rolesOf(rules: AclRules, identity: AclIdentity): string[] {
  const roles: string[] = [];
  const add = (names: readonly string[] | undefined) => {
    for (const name of names ?? []) if (!roles.includes(name)) roles.push(name);
  };
  const certIds = identity.certificateIds ?? [];
  if (identity.username !== undefined) add(rules.users.get(identity.username));
  for (const id of certIds) add(rules.certificates.get(id));
  if (identity.username === undefined && certIds.length === 0) add(rules.anonymous);
  return roles;
}

/** One-off check; prefer a {@link BoundAcl} reused across checks of the same client. */
export function checkAcl(
  rules: AclRules,
  identity: AclIdentity,
  request: { action: AclAction; topic: string },
): AclDecision {
  return new BoundAcl(rules, identity).check(request.action, request.topic);
}

/**
 * Why a rule filter is invalid, or undefined. `%c`/`%u` may appear anywhere in a level;
 * wildcards must fill a whole level and `#` must be last; `$share/` is not allowed (rules
 * apply to the filter inside a shared subscription).
 */
export function aclFilterError(filter: string): string | undefined {
  if (filter.startsWith("$share/")) {
    return "a rule cannot name a $share/ filter; rules apply to the filter after $share/{group}/";
  }
  const parsed = parseTopicFilter(filter);
  if (typeof parsed === "string") return parsed;
  if (/%[^cu]|%$/.test(filter.replaceAll("%%", ""))) {
    return "only %c (client id) and %u (user name) may follow %";
  }
  return undefined;
}

/** Whether a substituted value could change a filter's shape; such values never widen a rule. */
export function isUnsafeValue(value: string | undefined): boolean {
  return value === undefined || value === "" || value.startsWith("$") || /[+#/]/.test(value) ||
    value.includes("\0");
}

/** Splits a rule filter into levels with `%c`/`%u` replaced; undefined when a value is unsafe. */
function bindFilter(filter: string, identity: AclIdentity): string[] | undefined {
  const levels = filter.split("/");
  if (!filter.includes("%")) return levels;
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i];
    if (!level.includes("%")) continue;
    let unsafe = false;
    levels[i] = level.replace(/%([cu%])/g, (_, which: string) => {
      if (which === "%") return "%";
      const value = which === "c" ? identity.clientId : identity.username;
      if (isUnsafeValue(value)) unsafe = true;
      return value ?? "";
    });
    if (unsafe) return undefined;
  }
  return levels;
}

function isDollar(level: string): boolean {
  return level.charCodeAt(0) === 0x24;
}

/** Topic-name match with pre-split levels [MQTT-4.7.2-1]. */
const filterMatchesTopic = levelsMatch;

/** Whether every topic matched by filter `f` is matched by rule filter `r`. */
export function covers(r: readonly string[], f: readonly string[]): boolean {
  for (let i = 0;; i++) {
    const rl = r[i];
    const fl = f[i];
    if (rl === "#") {
      // A first-level wildcard never matches `$` topics, which a `$…` literal filter names.
      return !(i === 0 && fl !== undefined && fl !== "+" && fl !== "#" && isDollar(fl));
    }
    if (fl === undefined) return rl === undefined; // f ends: r must end too
    if (rl === undefined) return false; // r ends, f goes on
    // f's '#' matches the parent level and any depth below; only r's '#' does too (and, at the
    // root, where no topic has zero levels, '+/#').
    if (fl === "#") return i === 0 && rl === "+" && r[1] === "#" && r.length === 2;
    if (rl === "+") {
      if (i === 0 && fl !== "+" && isDollar(fl)) return false;
      continue;
    }
    if (fl === "+" || fl !== rl) return false;
  }
}

/** Whether some topic is matched by both rule filter `r` and filter `f`. */
export function intersects(r: readonly string[], f: readonly string[]): boolean {
  for (let i = 0;; i++) {
    const rl = r[i];
    const fl = f[i];
    const rWild = rl === "+" || rl === "#";
    const fWild = fl === "+" || fl === "#";
    // At the first level a wildcard meets a `$…` literal on no topic [MQTT-4.7.2-1].
    if (i === 0 && rl !== undefined && fl !== undefined) {
      if (rWild && !fWild && isDollar(fl)) return false;
      if (fWild && !rWild && isDollar(rl)) return false;
    }
    if (rl === "#" || fl === "#") return true; // '#' also matches the parent level
    if (rl === undefined || fl === undefined) return rl === fl;
    if (rl === "+" || fl === "+") continue;
    if (rl !== fl) return false;
  }
}
