import type { QoS } from "../codec/mod.ts";

/** One session's subscription to one filter. */
export interface SubscriptionEntry {
  /** Owning session. */
  clientId: string;
  /** The filter as the client sent it (including `$share/group/`). */
  rawFilter: string;
  /** Granted QoS. */
  qos: QoS;
  noLocal: boolean;
  retainAsPublished: boolean;
  retainHandling: 0 | 1 | 2;
  /** Subscription Identifier, if the SUBSCRIBE carried one. */
  subscriptionId?: number;
  /** Share name for shared subscriptions. */
  shareGroup?: string;
}

/** Members of one shared subscription `$share/{group}/{filter}`; one delivery per message. */
export class SharedGroup {
  readonly members = new Map<string, SubscriptionEntry>();
  #cursor = 0;

  /**
   * Picks the next member in round-robin order, preferring members for which
   * `available` is true; falls back to any member when none is available.
   */
  pick(available: (clientId: string) => boolean): SubscriptionEntry | undefined {
    const n = this.members.size;
    if (n === 0) return undefined;
    const list = [...this.members.values()];
    for (let i = 0; i < n; i++) {
      const entry = list[(this.#cursor + i) % n];
      if (available(entry.clientId)) {
        this.#cursor = (this.#cursor + i + 1) % n;
        return entry;
      }
    }
    const entry = list[this.#cursor % n];
    this.#cursor = (this.#cursor + 1) % n;
    return entry;
  }
}

/** Topics whose split levels are kept; the cache is dropped whole when full (cheap, bounded). */
const LEVELS_CACHE_SIZE = 4096;

class Node {
  children?: Map<string, Node>;
  subscribers?: Map<string, SubscriptionEntry>;
  shared?: Map<string, SharedGroup>;

  isEmpty(): boolean {
    return !this.children?.size && !this.subscribers?.size && !this.shared?.size;
  }
}

/**
 * Topic tree of subscriptions. Matching walks the topic's levels, so its cost
 * grows with the topic's depth and the wildcard branches on the way, not with
 * the number of subscriptions.
 */
export class SubscriptionTree {
  #root = new Node();
  readonly #levelsCache = new Map<string, string[]>();
  #count = 0;

  /** Number of subscription entries held. */
  get size(): number {
    return this.#count;
  }

  /** Adds or replaces `entry` under `filter` (without the share prefix). Returns true if it replaced one. */
  add(filter: string, entry: SubscriptionEntry): boolean {
    let node = this.#root;
    for (const level of filter.split("/")) {
      node.children ??= new Map();
      let child = node.children.get(level);
      if (child === undefined) {
        child = new Node();
        node.children.set(level, child);
      }
      node = child;
    }
    let existed: boolean;
    if (entry.shareGroup !== undefined) {
      node.shared ??= new Map();
      let group = node.shared.get(entry.shareGroup);
      if (group === undefined) {
        group = new SharedGroup();
        node.shared.set(entry.shareGroup, group);
      }
      existed = group.members.has(entry.clientId);
      group.members.set(entry.clientId, entry);
    } else {
      node.subscribers ??= new Map();
      existed = node.subscribers.has(entry.clientId);
      node.subscribers.set(entry.clientId, entry);
    }
    if (!existed) this.#count++;
    return existed;
  }

  /** Removes a client's subscription; returns whether one existed. */
  remove(filter: string, clientId: string, shareGroup?: string): boolean {
    const path: Node[] = [this.#root];
    const levels = filter.split("/");
    let node = this.#root;
    for (const level of levels) {
      const child = node.children?.get(level);
      if (child === undefined) return false;
      node = child;
      path.push(node);
    }
    let removed: boolean;
    if (shareGroup !== undefined) {
      const group = node.shared?.get(shareGroup);
      removed = group?.members.delete(clientId) ?? false;
      if (group && group.members.size === 0) node.shared!.delete(shareGroup);
    } else {
      removed = node.subscribers?.delete(clientId) ?? false;
    }
    if (!removed) return false;
    this.#count--;
    // Prune empty nodes so the tree does not grow with churn.
    for (let i = levels.length; i > 0; i--) {
      if (!path[i].isEmpty()) break;
      path[i - 1].children!.delete(levels[i - 1]);
    }
    return true;
  }

  /** The shared group `$share/{group}/{filter}`, if it has members. */
  sharedGroup(filter: string, group: string): SharedGroup | undefined {
    let node: Node | undefined = this.#root;
    for (const level of filter.split("/")) {
      node = node.children?.get(level);
      if (node === undefined) return undefined;
    }
    return node.shared?.get(group);
  }

  /** Calls `onEntry` for each non-shared match and `onGroup` for each matching shared group. */
  match(
    topic: string,
    onEntry: (entry: SubscriptionEntry) => void,
    onGroup: (group: SharedGroup) => void,
  ): void {
    // Topics repeat (a device publishes to the same few): reuse their split levels.
    let levels = this.#levelsCache.get(topic);
    if (levels === undefined) {
      levels = topic.split("/");
      if (this.#levelsCache.size >= LEVELS_CACHE_SIZE) this.#levelsCache.clear();
      this.#levelsCache.set(topic, levels);
    }
    // [MQTT-4.7.2-1] first-level wildcards never match `$` topics.
    const dollar = topic.charCodeAt(0) === 0x24;
    this.#walk(this.#root, levels, 0, dollar, onEntry, onGroup);
  }

  #walk(
    node: Node,
    levels: string[],
    depth: number,
    dollar: boolean,
    onEntry: (entry: SubscriptionEntry) => void,
    onGroup: (group: SharedGroup) => void,
  ): void {
    const children = node.children;
    if (children === undefined) return;
    const wildOk = !(dollar && depth === 0);
    if (wildOk) {
      const hash = children.get("#");
      if (hash !== undefined) emit(hash, onEntry, onGroup);
    }
    if (depth === levels.length) return;
    const exact = children.get(levels[depth]);
    if (exact !== undefined) {
      if (depth + 1 === levels.length) {
        emit(exact, onEntry, onGroup);
        // `a/#` also matches `a`.
        const tail = exact.children?.get("#");
        if (tail !== undefined) emit(tail, onEntry, onGroup);
      } else this.#walk(exact, levels, depth + 1, dollar, onEntry, onGroup);
    }
    if (wildOk) {
      const plus = children.get("+");
      if (plus !== undefined) {
        if (depth + 1 === levels.length) {
          emit(plus, onEntry, onGroup);
          const tail = plus.children?.get("#");
          if (tail !== undefined) emit(tail, onEntry, onGroup);
        } else this.#walk(plus, levels, depth + 1, dollar, onEntry, onGroup);
      }
    }
  }
}

function emit(
  node: Node,
  onEntry: (entry: SubscriptionEntry) => void,
  onGroup: (group: SharedGroup) => void,
): void {
  if (node.subscribers) { for (const entry of node.subscribers.values()) onEntry(entry); }
  if (node.shared) { for (const group of node.shared.values()) onGroup(group); }
}
