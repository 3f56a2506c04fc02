/**
 * The contract every SessionStore implementation passes: what is written,
 * once flushed, is what a new instance loads.
 */
import assert from "node:assert/strict";
import type { Message } from "../../src/routing/mod.ts";
import type { Delivery, InflightEntry, SessionStore } from "../../src/session/mod.ts";

/** Opens a store; `reopen` returns a second instance over the same data (or the same instance for memory). */
export interface StoreFactory {
  open(): Promise<SessionStore>;
  reopen(previous: SessionStore): Promise<SessionStore>;
}

function message(
  id: number,
  topic: string,
  payload: Uint8Array,
  extra: Partial<Message> = {},
): Message {
  return { id, topic, payload, qos: 1, retain: false, ...extra };
}

/** Registers the contract tests for one implementation. */
export function runSessionStoreContract(name: string, factory: StoreFactory): void {
  Deno.test(`${name}: sessions, subscriptions, queue order, in-flight, QoS 2 ids and Will survive a reopen`, async () => {
    let store = await factory.open();
    try {
      await store.load();
      store.saveSession({ clientId: "c1", protocolVersion: 5, expirySec: 3600 });
      store.saveSubscription("c1", {
        clientId: "c1",
        rawFilter: "a/+",
        qos: 1,
        noLocal: true,
        retainAsPublished: false,
        retainHandling: 1,
        subscriptionId: 42,
      });
      const shared = message(1, "a/b", new TextEncoder().encode("one"), {
        properties: { userProperties: [["k", "v"], ["k", "w"]], contentType: "text/plain" },
        expiresAt: Date.now() + 60_000,
      });
      const d1: Delivery = { message: shared, qos: 1, retain: false, subscriptionIds: [42] };
      const d2: Delivery = {
        message: message(2, "a/c", new Uint8Array([2])),
        qos: 1,
        retain: false,
      };
      const d3: Delivery = {
        message: message(3, "a/d", new Uint8Array([3])),
        qos: 1,
        retain: false,
      };
      store.enqueue("c1", d1);
      store.enqueue("c1", d2);
      store.enqueue("c1", d3);
      store.dequeue("c1", d2);
      const inflight: InflightEntry = { ...d2, packetId: 7, state: "pubrel", sentAt: 1 };
      store.saveInflight("c1", inflight);
      store.saveInboundQos2("c1", 9, true);
      store.saveInboundQos2("c1", 10, true);
      store.saveInboundQos2("c1", 10, false);
      store.saveWill("c1", {
        will: { topic: "w", payload: new Uint8Array([1]), qos: 1, retain: true },
        delaySec: 30,
        dueAt: 12345,
      });
      await store.flush();
      store = await factory.reopen(store);
      const state = await store.load();
      assert.equal(state.sessions.length, 1);
      const s = state.sessions[0];
      assert.equal(s.record.clientId, "c1");
      assert.equal(s.record.expirySec, 3600);
      assert.equal(s.subscriptions.length, 1);
      assert.equal(s.subscriptions[0].rawFilter, "a/+");
      assert.equal(s.subscriptions[0].subscriptionId, 42);
      assert.equal(s.subscriptions[0].noLocal, true);
      assert.deepEqual(s.queue.map((d) => d.message.topic), ["a/b", "a/d"]);
      assert.deepEqual(s.queue[0].message.properties?.userProperties, [["k", "v"], ["k", "w"]]);
      assert.deepEqual(s.queue[0].subscriptionIds, [42]);
      assert.equal(new TextDecoder().decode(s.queue[0].message.payload), "one");
      assert.equal(s.inflight.length, 1);
      assert.equal(s.inflight[0].packetId, 7);
      assert.equal(s.inflight[0].state, "pubrel");
      assert.equal(s.inflight[0].message.topic, "a/c");
      assert.deepEqual(s.inboundQos2, [9]);
      assert.equal(s.will?.delaySec, 30);
      assert.equal(s.will?.dueAt, 12345);
      assert.equal(s.will?.will.retain, true);
    } finally {
      await store.close();
    }
  });

  Deno.test(`${name}: a subscription is stored without its routing pointer to the live session`, async () => {
    let store = await factory.open();
    try {
      await store.load();
      store.saveSession({ clientId: "o", protocolVersion: 5, expirySec: 60 });
      // The broker's session object, which leads on to its connection: a cycle, and nothing to keep.
      const live: Record<string, unknown> = { clientId: "o" };
      live.self = live;
      store.saveSubscription("o", {
        clientId: "o",
        rawFilter: "$share/g/o/+",
        qos: 2,
        noLocal: false,
        retainAsPublished: true,
        retainHandling: 2,
        shareGroup: "g",
        owner: live,
      });
      await store.flush();
      store = await factory.reopen(store);
      const state = await store.load();
      const [entry] = state.sessions[0].subscriptions;
      assert.equal("owner" in entry, false);
      assert.deepEqual(
        [
          entry.rawFilter,
          entry.qos,
          entry.retainAsPublished,
          entry.retainHandling,
          entry.shareGroup,
        ],
        ["$share/g/o/+", 2, true, 2, "g"],
      );
    } finally {
      await store.close();
    }
  });

  Deno.test(`${name}: deleting a session removes everything under it`, async () => {
    let store = await factory.open();
    try {
      await store.load();
      store.saveSession({ clientId: "gone", protocolVersion: 4, expirySec: 10 });
      store.enqueue("gone", {
        message: message(5, "x", new Uint8Array([5])),
        qos: 1,
        retain: false,
      });
      store.saveSubscription("gone", {
        clientId: "gone",
        rawFilter: "x",
        qos: 1,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      });
      await store.flush();
      store.deleteSession("gone");
      await store.flush();
      store = await factory.reopen(store);
      const state = await store.load();
      assert.equal(state.sessions.length, 0);
    } finally {
      await store.close();
    }
  });

  Deno.test(`${name}: retained messages are stored, replaced and deleted; large payloads survive whole`, async () => {
    let store = await factory.open();
    try {
      await store.load();
      const big = new Uint8Array(200_000);
      for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
      store.saveRetained(message(10, "r/1", new Uint8Array([1]), { retain: true }));
      store.saveRetained(message(11, "r/1", new Uint8Array([2]), { retain: true }));
      store.saveRetained(message(12, "r/big", big, { retain: true }));
      store.saveRetained(message(13, "r/del", new Uint8Array([3]), { retain: true }));
      store.deleteRetained("r/del");
      const longTopic = "t/" + "x".repeat(5_000);
      store.saveRetained(message(14, longTopic, new Uint8Array([4]), { retain: true }));
      await store.flush();
      store = await factory.reopen(store);
      const state = await store.load();
      const byTopic = new Map(state.retained.map((m) => [m.topic, m]));
      assert.deepEqual([...byTopic.keys()].sort(), [longTopic, "r/1", "r/big"].sort());
      assert.deepEqual([...byTopic.get("r/1")!.payload], [2]);
      assert.deepEqual(byTopic.get("r/big")!.payload, big);
    } finally {
      await store.close();
    }
  });
}
