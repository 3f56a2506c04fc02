/**
 * Topic names and filters (spec 4.7): validation, shared-subscription
 * parsing and matching. Pure functions, no state.
 *
 * @module
 */

/** Limits applied on top of the spec's rules. */
export interface TopicLimits {
  /** Longest topic or filter in UTF-16 units (the spec's 65,535-byte bound is enforced by the codec). */
  maxLength: number;
  /** Most levels. */
  maxLevels: number;
}

const NO_LIMITS: TopicLimits = { maxLength: 65_535, maxLevels: 65_535 };

/**
 * Why a topic name is refused, or `undefined` when valid: non-empty, no
 * wildcards [MQTT-3.3.2-2] [MQTT-4.7.3-1], within the configured limits.
 */
export function topicNameError(topic: string, limits: TopicLimits = NO_LIMITS): string | undefined {
  if (topic.length === 0) return "topic name is empty";
  if (topic.length > limits.maxLength) return `topic name longer than ${limits.maxLength}`;
  let levels = 1;
  for (let i = 0; i < topic.length; i++) {
    const c = topic.charCodeAt(i);
    if (c === 0x2b || c === 0x23) return "topic name contains a wildcard";
    if (c === 0x2f) levels++;
  }
  if (levels > limits.maxLevels) return `topic name has more than ${limits.maxLevels} levels`;
  return undefined;
}

/** A parsed subscription filter. */
export interface ParsedFilter {
  /** The filter that is matched against topics (without `$share/group/`). */
  filter: string;
  /** Share name for `$share/{group}/{filter}`, else undefined. */
  shareGroup?: string;
  /** Whether `+` or `#` occurs. */
  hasWildcard: boolean;
}

/**
 * Parses and validates a topic filter [MQTT-4.7.1-1] [MQTT-4.7.1-2] and the
 * shared form [MQTT-4.8.2-1] [MQTT-4.8.2-2]. Returns a string saying why it is
 * invalid, or the parsed filter.
 */
export function parseTopicFilter(
  raw: string,
  limits: TopicLimits = NO_LIMITS,
): ParsedFilter | string {
  if (raw.length === 0) return "topic filter is empty";
  if (raw.length > limits.maxLength) return `topic filter longer than ${limits.maxLength}`;
  let filter = raw;
  let shareGroup: string | undefined;
  if (raw.startsWith("$share/")) {
    const slash = raw.indexOf("/", 7);
    if (slash < 0) return "shared subscription has no filter after the share name";
    shareGroup = raw.slice(7, slash);
    if (shareGroup.length === 0) return "shared subscription has an empty share name";
    if (/[+#]/.test(shareGroup)) return "share name contains a wildcard";
    filter = raw.slice(slash + 1);
    if (filter.length === 0) return "shared subscription has an empty filter";
  }
  // Levels are checked in place, without `split` (a runtime call and a string per level): every
  // SUBSCRIBE and every session restore parses its filters.
  let count = 1;
  for (let i = filter.indexOf("/"); i >= 0; i = filter.indexOf("/", i + 1)) count++;
  if (count > limits.maxLevels) {
    return `topic filter has more than ${limits.maxLevels} levels`;
  }
  let hasWildcard = false;
  let start = 0;
  for (let level = 0; level < count; level++) {
    let end = filter.indexOf("/", start);
    if (end < 0) end = filter.length;
    const first = filter.charCodeAt(start);
    if (end - start === 1 && first === 0x23) { // "#"
      if (level !== count - 1) return "'#' is not the last level";
      hasWildcard = true;
    } else if (end - start === 1 && first === 0x2b) { // "+"
      hasWildcard = true;
    } else {
      for (let i = start; i < end; i++) {
        const c = filter.charCodeAt(i);
        if (c === 0x23 || c === 0x2b) return "a wildcard does not occupy a whole level";
      }
    }
    start = end + 1;
  }
  return shareGroup === undefined ? { filter, hasWildcard } : { filter, shareGroup, hasWildcard };
}

/**
 * Whether `topic` matches `filter` (4.7): `+` one level (possibly empty),
 * `#` the rest including the parent, and no first-level wildcard match on
 * `$` topics [MQTT-4.7.2-1].
 */
export function topicMatches(filter: string, topic: string): boolean {
  return splitFilterMatches(filter.split("/"), topic);
}

/**
 * {@link topicMatches} with the filter already split at `/`, and the topic walked in place: no
 * array or string is made per topic, so one filter can be tried against many topics (a new
 * subscriber's `#` against every retained message) without garbage.
 */
export function splitFilterMatches(f: readonly string[], topic: string): boolean {
  if (topic.charCodeAt(0) === 0x24 && (f[0] === "+" || f[0] === "#")) return false;
  // `start` is where the topic's next level begins; past the end, the topic has no more levels.
  let start = 0;
  for (let i = 0; i < f.length; i++) {
    const level = f[i];
    if (level === "#") return true;
    if (start > topic.length) return false;
    let end = topic.indexOf("/", start);
    if (end === -1) end = topic.length;
    if (level !== "+" && (end - start !== level.length || !topic.startsWith(level, start))) {
      return false;
    }
    start = end + 1;
  }
  return start > topic.length;
}

/** {@link topicMatches} on levels already split at `/` (filter `f`, topic `t`). */
export function levelsMatch(f: readonly string[], t: readonly string[]): boolean {
  if (t[0].charCodeAt(0) === 0x24 && (f[0] === "+" || f[0] === "#")) return false;
  for (let i = 0; i < f.length; i++) {
    const level = f[i];
    if (level === "#") return true;
    if (i >= t.length) return false;
    if (level !== "+" && level !== t[i]) return false;
  }
  return f.length === t.length;
}
