import assert from "node:assert/strict";
import type { Message } from "./message.ts";
import { RetainedStore } from "./retained_store.ts";

let nextId = 1;
function msg(topic: string, payload: string, more: Partial<Message> = {}): Message {
  return {
    topic,
    payload: new TextEncoder().encode(payload),
    qos: 0,
    retain: true,
    id: nextId++,
    ...more,
  };
}

function topics(list: Message[]): string[] {
  return list.map((m) => m.topic).sort();
}

Deno.test("RetainedStore.set() stores, replaces and (empty payload) deletes a topic's message [MQTT-3.3.1-5] [MQTT-3.3.1-6]", () => {
  const store = new RetainedStore(10, 1_000);
  assert.equal(store.set(msg("a", "one")), "stored");
  assert.equal(store.set(msg("a", "three")), "stored");
  assert.equal(store.size, 1);
  assert.equal(store.bytes, 5);
  assert.equal(new TextDecoder().decode(store.get("a")!.payload), "three");
  assert.equal(store.set(msg("a", "")), "deleted");
  assert.equal(store.size, 0);
  assert.equal(store.bytes, 0);
  assert.equal(store.get("a"), undefined);
  assert.equal(store.set(msg("never", "")), "deleted", "an empty payload is never stored");
  assert.equal(store.size, 0);
});

Deno.test("RetainedStore.match() returns the messages whose topic matches the filter, '$' rule included [MQTT-4.7.2-1]", () => {
  const store = new RetainedStore(10, 1_000);
  for (const t of ["sport", "sport/tennis", "sport/tennis/p1", "news", "$SYS/up", "/x"]) {
    store.set(msg(t, "v"));
  }
  const now = Date.now();
  assert.deepEqual(topics(store.match("sport/#", now)), [
    "sport",
    "sport/tennis",
    "sport/tennis/p1",
  ]);
  assert.deepEqual(topics(store.match("sport/+", now)), ["sport/tennis"]);
  assert.deepEqual(topics(store.match("#", now)), [
    "/x",
    "news",
    "sport",
    "sport/tennis",
    "sport/tennis/p1",
  ]);
  assert.deepEqual(topics(store.match("$SYS/#", now)), ["$SYS/up"]);
  assert.deepEqual(topics(store.match("news", now)), ["news"]);
  assert.deepEqual(topics(store.match("News", now)), []);
  assert.deepEqual(topics(store.match("+/x", now)), ["/x"]);
});

Deno.test("RetainedStore.match() drops expired messages instead of returning them [MQTT-3.3.2-5]", () => {
  const store = new RetainedStore(10, 1_000);
  const now = 1_000_000;
  store.set(msg("e/old", "x", { expiresAt: now }));
  store.set(msg("e/new", "yy", { expiresAt: now + 1 }));
  store.set(msg("e/forever", "z"));
  assert.deepEqual(topics(store.match("e/+", now)), ["e/forever", "e/new"]);
  assert.equal(store.size, 2, "the expired one is removed");
  assert.equal(store.bytes, 3);
  assert.deepEqual(topics(store.match("e/new", now + 1)), []);
  assert.equal(store.size, 1);
});

Deno.test("RetainedStore refuses a new topic beyond its count or byte bound but lets existing topics be replaced or deleted", () => {
  const store = new RetainedStore(2, 10);
  assert.equal(store.set(msg("a", "12345")), "stored");
  assert.equal(store.set(msg("b", "1234")), "stored");
  assert.equal(store.set(msg("c", "1")), "refused", "count bound");
  assert.equal(store.set(msg("a", "123456")), "stored", "replacing within the byte bound");
  assert.equal(store.bytes, 10);
  assert.equal(store.set(msg("a", "1234567")), "refused", "byte bound");
  assert.equal(new TextDecoder().decode(store.get("a")!.payload), "123456");
  assert.equal(store.set(msg("b", "")), "deleted");
  assert.equal(store.set(msg("c", "1")), "stored");
  assert.deepEqual([...store.values()].map((m) => m.topic).sort(), ["a", "c"]);
});
