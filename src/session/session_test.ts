import assert from "node:assert/strict";
import type { SubscriptionEntry } from "../routing/mod.ts";
import { Session } from "./session.ts";

function entry(rawFilter: string, qos: 0 | 1 | 2 = 0): SubscriptionEntry {
  return {
    clientId: "c",
    rawFilter,
    qos,
    noLocal: false,
    retainAsPublished: false,
    retainHandling: 0,
    subscriptionId: undefined,
    shareGroup: undefined,
    owner: undefined,
  };
}

const filters = (s: Session) => s.subscriptionList().map((e) => `${e.rawFilter}:${e.qos}`);

Deno.test("a session's subscriptions keep their order and replace by filter as they go from one to many and back [MQTT-3.8.4-3]", () => {
  const s = new Session("c", 5, 0);
  assert.equal(s.subscriptionCount, 0);
  assert.deepEqual(s.subscriptionList(), []);
  assert.equal(s.deleteSubscription("a"), false);

  s.setSubscription(entry("a"));
  s.setSubscription(entry("a", 1)); // replaces, stays one
  assert.deepEqual(filters(s), ["a:1"]);
  assert.equal(s.subscription("b"), undefined);
  assert.equal(s.deleteSubscription("b"), false, "another filter is not the one held");

  s.setSubscription(entry("b"));
  s.setSubscription(entry("c"));
  s.setSubscription(entry("b", 2)); // replaces in place
  assert.deepEqual(filters(s), ["a:1", "b:2", "c:0"]);
  assert.equal(s.subscriptionCount, 3);
  assert.equal(s.subscription("b")?.qos, 2);

  const list = s.subscriptionList();
  assert.equal(s.deleteSubscription("a"), true);
  assert.equal(list.length, 3, "the list is a copy, safe to walk while removing");
  assert.equal(s.deleteSubscription("c"), true);
  assert.equal(s.deleteSubscription("b"), true);
  assert.equal(s.subscriptionCount, 0);

  s.setSubscription(entry("d"));
  assert.deepEqual(filters(s), ["d:0"]);
  s.clearSubscriptions();
  assert.equal(s.subscriptionCount, 0);
  assert.equal(s.subscription("d"), undefined);
});
