import assert from "node:assert/strict";
import { parseTopicFilter } from "../topic/mod.ts";
import { SharedGroup, type SubscriptionEntry, SubscriptionTree } from "./subscription_tree.ts";

function entry(clientId: string, rawFilter: string, more: Partial<SubscriptionEntry> = {}) {
  const parsed = parseTopicFilter(rawFilter);
  if (typeof parsed === "string") throw new Error(parsed);
  const e: SubscriptionEntry = {
    clientId,
    rawFilter,
    qos: 0,
    noLocal: false,
    retainAsPublished: false,
    retainHandling: 0,
    ...more,
  };
  if (parsed.shareGroup !== undefined) e.shareGroup = parsed.shareGroup;
  return { filter: parsed.filter, entry: e };
}

function add(tree: SubscriptionTree, clientId: string, rawFilter: string, more = {}): boolean {
  const { filter, entry: e } = entry(clientId, rawFilter, more);
  return tree.add(filter, e);
}

/** Matches as sorted "client filter" strings; shared groups as "group:<members>". */
function matches(tree: SubscriptionTree, topic: string): string[] {
  const out: string[] = [];
  tree.match(
    topic,
    (e) => out.push(`${e.clientId} ${e.rawFilter}`),
    (g) => out.push(`group:${[...g.members.keys()].sort().join(",")}`),
  );
  return out.sort();
}

Deno.test("SubscriptionTree.match() finds exact, '+' and '#' subscriptions, '#' including the parent level (4.7.1)", () => {
  const tree = new SubscriptionTree();
  add(tree, "c1", "sport/tennis/player1");
  add(tree, "c2", "sport/tennis/+");
  add(tree, "c3", "sport/#");
  add(tree, "c4", "#");
  add(tree, "c5", "+/+");
  add(tree, "c6", "sport/+");
  add(tree, "c7", "+/tennis/#");
  assert.deepEqual(matches(tree, "sport/tennis/player1"), [
    "c1 sport/tennis/player1",
    "c2 sport/tennis/+",
    "c3 sport/#",
    "c4 #",
    "c7 +/tennis/#",
  ]);
  assert.deepEqual(matches(tree, "sport"), ["c3 sport/#", "c4 #"]);
  assert.deepEqual(matches(tree, "sport/"), ["c3 sport/#", "c4 #", "c5 +/+", "c6 sport/+"]);
  assert.deepEqual(matches(tree, "sport/tennis"), [
    "c3 sport/#",
    "c4 #",
    "c5 +/+",
    "c6 sport/+",
    "c7 +/tennis/#",
  ]);
  assert.deepEqual(matches(tree, "other"), ["c4 #"]);
});

Deno.test("SubscriptionTree.match() handles empty levels and leading or trailing '/' as levels (4.7.3)", () => {
  const tree = new SubscriptionTree();
  add(tree, "a", "/+");
  add(tree, "b", "+");
  add(tree, "c", "a//b");
  add(tree, "d", "a/+/b");
  add(tree, "e", "/#");
  add(tree, "f", "/");
  assert.deepEqual(matches(tree, "/finance"), ["a /+", "e /#"]);
  assert.deepEqual(matches(tree, "finance"), ["b +"]);
  assert.deepEqual(matches(tree, "/"), ["a /+", "e /#", "f /"]);
  assert.deepEqual(matches(tree, "a//b"), ["c a//b", "d a/+/b"]);
  assert.deepEqual(matches(tree, "a/x/b"), ["d a/+/b"]);
  assert.deepEqual(matches(tree, "a/b"), []);
});

Deno.test("SubscriptionTree.match() is case-sensitive and exact [MQTT-4.7.3-4]", () => {
  const tree = new SubscriptionTree();
  add(tree, "c", "ACCOUNTS/+");
  assert.deepEqual(matches(tree, "accounts/x"), []);
  assert.deepEqual(matches(tree, "ACCOUNTS/x"), ["c ACCOUNTS/+"]);
});

Deno.test("SubscriptionTree.match() does not match '$' topics with first-level wildcards [MQTT-4.7.2-1]", () => {
  const tree = new SubscriptionTree();
  add(tree, "a", "#");
  add(tree, "b", "+/info");
  add(tree, "c", "$SYS/#");
  add(tree, "d", "$SYS/+");
  add(tree, "e", "$share/g/#");
  assert.deepEqual(matches(tree, "$SYS/info"), ["c $SYS/#", "d $SYS/+"]);
  assert.deepEqual(matches(tree, "$SYS"), ["c $SYS/#"]);
  assert.deepEqual(matches(tree, "x/info"), ["a #", "b +/info", "group:e"]);
});

Deno.test("SubscriptionTree.add() replaces a client's subscription to the same filter and counts entries once [MQTT-3.8.4-3]", () => {
  const tree = new SubscriptionTree();
  assert.equal(add(tree, "c", "a/+", { qos: 0 }), false);
  assert.equal(add(tree, "c", "a/+", { qos: 2, subscriptionId: 7 }), true);
  assert.equal(tree.size, 1);
  const got: SubscriptionEntry[] = [];
  tree.match("a/b", (e) => got.push(e), () => {});
  assert.equal(got.length, 1);
  assert.equal(got[0].qos, 2);
  assert.equal(got[0].subscriptionId, 7);
  // Another client on the same filter, and the same client on another filter, are separate.
  add(tree, "d", "a/+");
  add(tree, "c", "a/#");
  assert.equal(tree.size, 3);
  assert.deepEqual(matches(tree, "a/b"), ["c a/#", "c a/+", "d a/+"]);
});

Deno.test("SubscriptionTree.remove() removes only the exact filter of that client and reports whether it existed [MQTT-3.10.4-1]", () => {
  const tree = new SubscriptionTree();
  add(tree, "c", "a/b");
  add(tree, "c", "a/+");
  add(tree, "d", "a/+");
  assert.equal(tree.remove("a/#", "c"), false);
  assert.equal(tree.remove("a/b/c", "c"), false);
  assert.equal(tree.remove("a/+", "x"), false);
  assert.equal(tree.remove("a/+", "c"), true);
  assert.equal(tree.remove("a/+", "c"), false);
  assert.equal(tree.size, 2);
  assert.deepEqual(matches(tree, "a/b"), ["c a/b", "d a/+"]);
  assert.equal(tree.remove("a/b", "c"), true);
  assert.equal(tree.remove("a/+", "d"), true);
  assert.equal(tree.size, 0);
  assert.deepEqual(matches(tree, "a/b"), []);
  // The pruned branch can be used again.
  add(tree, "e", "a/b");
  assert.deepEqual(matches(tree, "a/b"), ["e a/b"]);
});

Deno.test("SubscriptionTree keeps shared groups apart from plain subscriptions and removes a group with its last member (4.8.2)", () => {
  const tree = new SubscriptionTree();
  add(tree, "m1", "$share/g/job/+");
  add(tree, "m2", "$share/g/job/+");
  add(tree, "m3", "$share/h/job/+");
  add(tree, "m1", "job/+");
  assert.equal(tree.size, 4);
  assert.deepEqual(matches(tree, "job/x"), ["group:m1,m2", "group:m3", "m1 job/+"]);
  assert.equal(tree.remove("job/+", "m1", "g"), true);
  assert.deepEqual(matches(tree, "job/x"), ["group:m2", "group:m3", "m1 job/+"]);
  assert.equal(tree.remove("job/+", "m2", "g"), true);
  assert.equal(tree.remove("job/+", "m2", "g"), false);
  assert.deepEqual(matches(tree, "job/x"), ["group:m3", "m1 job/+"]);
  assert.equal(tree.remove("job/+", "m1"), true, "the plain subscription is separate");
  assert.deepEqual(matches(tree, "job/x"), ["group:m3"]);
  assert.equal(tree.size, 1);
});

Deno.test("SharedGroup.pick() goes round robin over members, skipping unavailable ones, and falls back when none is available [MQTT-4.8.2-3]", () => {
  const tree = new SubscriptionTree();
  for (const m of ["a", "b", "c"]) add(tree, m, "$share/g/t");
  let group: SharedGroup | undefined;
  tree.match("t", () => {}, (g) => group = g);
  assert.ok(group);
  const all = () => true;
  const picks = Array.from({ length: 6 }, () => group!.pick(all)!.clientId);
  assert.deepEqual(picks, ["a", "b", "c", "a", "b", "c"]);
  const notB = (id: string) => id !== "b";
  const skipping = Array.from({ length: 4 }, () => group!.pick(notB)!.clientId);
  assert.deepEqual(skipping, ["a", "c", "a", "c"]);
  const none = () => false;
  const fallback = Array.from({ length: 3 }, () => group!.pick(none)!.clientId).sort();
  assert.deepEqual(fallback, ["a", "b", "c"], "still one member each, round robin");
  assert.equal(new SharedGroup().pick(all), undefined);
});

Deno.test("SubscriptionTree keeps siblings apart when their levels share a hash (100,000 levels under one parent)", () => {
  // Children are found by a 30-bit hash of their level; with 100,000 levels some hashes collide,
  // so this exercises the chains for add, match and remove.
  const tree = new SubscriptionTree();
  const n = 100_000;
  for (let i = 0; i < n; i++) add(tree, `c${i}`, `dev/${i.toString(36)}/+`);
  assert.equal(tree.size, n);
  for (let i = 0; i < n; i += 7) {
    assert.deepEqual(matches(tree, `dev/${i.toString(36)}/x`), [`c${i} dev/${i.toString(36)}/+`]);
  }
  for (let i = 0; i < n; i += 2) {
    assert.equal(tree.remove(`dev/${i.toString(36)}/+`, `c${i}`), true);
  }
  assert.equal(tree.size, n / 2);
  for (let i = 0; i < n; i += 3) {
    const level = i.toString(36);
    assert.deepEqual(
      matches(tree, `dev/${level}/x`),
      i % 2 === 0 ? [] : [`c${i} dev/${level}/+`],
    );
  }
  assert.deepEqual(matches(tree, "dev/unknown/x"), []);
});

Deno.test("SubscriptionTree keeps matching right as a filter goes from one subscriber to many and back, with replacements on the way", () => {
  const tree = new SubscriptionTree();
  add(tree, "a", "t/+");
  assert.deepEqual(matches(tree, "t/x"), ["a t/+"]);
  add(tree, "b", "t/+");
  add(tree, "c", "t/+");
  assert.deepEqual(matches(tree, "t/x"), ["a t/+", "b t/+", "c t/+"]);
  // A replacement among many is seen by the next match (the cached list is rebuilt).
  assert.equal(add(tree, "b", "t/+", { qos: 1 }), true);
  const qos: number[] = [];
  tree.match("t/x", (e) => e.clientId === "b" && qos.push(e.qos), () => {});
  assert.deepEqual(qos, [1]);
  assert.equal(tree.remove("t/+", "a"), true);
  assert.equal(tree.remove("t/+", "c"), true);
  assert.deepEqual(matches(tree, "t/x"), ["b t/+"]);
  assert.equal(tree.remove("t/+", "a"), false, "gone already");
  // Back to one: replacing it and adding a second still work.
  assert.equal(add(tree, "b", "t/+", { qos: 2 }), true);
  assert.equal(add(tree, "d", "t/+"), false);
  assert.deepEqual(matches(tree, "t/x"), ["b t/+", "d t/+"]);
  assert.equal(tree.size, 2);
  assert.equal(tree.remove("t/+", "b"), true);
  assert.equal(tree.remove("t/+", "d"), true);
  assert.equal(tree.size, 0);
  assert.deepEqual(matches(tree, "t/x"), []);
});
