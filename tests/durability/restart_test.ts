/**
 * Restart behaviour of the broker process on a Deno KV data path: session
 * expiry across downtime, Wills of connections that died with the process, a
 * damaged record, and a second broker on the same data path.
 */
import assert from "node:assert/strict";
import { PacketType } from "../../src/codec/mod.ts";
import { BrokerProcess } from "../helpers/broker_process.ts";
import { bytes, RawClient } from "../helpers/raw_client.ts";
import { PersistentSubscriber, publishAcked, sleep } from "./subscriber.ts";

async function tempDataPath(): Promise<{ dir: string; path: string }> {
  const dir = await Deno.makeTempDir({ prefix: "durability-restart-" });
  return { dir, path: `${dir}/data/broker.db` };
}

Deno.test("restart: a session whose expiry passed while the broker was down is gone (Session Present 0)", async () => {
  const { dir, path } = await tempDataPath();
  const disconnected = new PersistentSubscriber("exp-short-disconnected", 1);
  const connected = new PersistentSubscriber("exp-short-connected", 1);
  const long = new PersistentSubscriber("exp-long", 3600);
  try {
    {
      await using b = await BrokerProcess.start(path);
      for (const s of [disconnected, connected, long]) {
        assert.equal(await s.connect(b.port, true), false);
        assert.deepEqual(await s.subscribe("exp/t", 1), [1]);
      }
      await disconnected.disconnect();
      await long.disconnect();
      // `connected` stays on: the graceful stop disconnects it (0x8B) and its 1 s expiry starts then.
      b.kill("SIGTERM");
      assert.ok(await connected.waitClosed(3_000), "the stop closes the live connection");
      const status = await b.exit();
      assert.equal(status.code, 0, b.output);
      assert.match(b.output, /broker stopped/);
      // Both short sessions were still alive at the stop: their expiry passes during the downtime.
      assert.doesNotMatch(b.output, /session expired/);
    }
    await sleep(1_300);
    {
      await using b = await BrokerProcess.start(path);
      assert.equal(
        await disconnected.connect(b.port, false),
        false,
        "a session that expired during the downtime must not be resumed",
      );
      assert.equal(
        await connected.connect(b.port, false),
        false,
        "a session disconnected by the stop whose expiry passed must not be resumed",
      );
      assert.equal(await long.connect(b.port, false), true, "the 3600 s session survives");
      // The expired sessions' subscriptions are gone too; the live one still routes.
      await publishAcked(b.port, "exp/t", "after-restart");
      assert.ok(
        await long.until(() => long.delivered.some((m) => m.payload === "after-restart"), 3_000),
        "the surviving subscription routes after the restart",
      );
      await sleep(200);
      assert.deepEqual(disconnected.delivered.map((m) => m.payload), []);
      assert.deepEqual(connected.delivered.map((m) => m.payload), []);
      for (const s of [disconnected, connected, long]) await s.disconnect();
      assert.equal((await b.stop()).code, 0, b.output);
    }
  } finally {
    for (const s of [disconnected, connected, long]) await s.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("restart: Wills of clients connected when the broker was SIGKILLed are published after the restart, once", async () => {
  const { dir, path } = await tempDataPath();
  const sub = new PersistentSubscriber("will-watcher", 3600);
  const clients: RawClient[] = [];
  try {
    {
      await using b = await BrokerProcess.start(path);
      assert.equal(await sub.connect(b.port, true), false);
      assert.deepEqual(await sub.subscribe("will/#", 1), [1]);
      const wills = [
        { clientId: "will-nodelay", delay: 0 },
        { clientId: "will-delay-1s", delay: 1 },
      ];
      for (const w of wills) {
        const { client } = await RawClient.connect(b.port, {
          clientId: w.clientId,
          cleanStart: true,
          properties: { sessionExpiryInterval: 60 },
          will: {
            topic: `will/${w.clientId}`,
            payload: bytes(`gone:${w.clientId}`),
            qos: 1,
            retain: false,
            properties: w.delay > 0 ? { willDelayInterval: w.delay } : undefined,
          },
        });
        clients.push(client);
      }
      const status = await b.crash();
      assert.equal(status.signal, "SIGKILL");
      assert.ok(!/publishing will/.test(b.output), "no Will went out before the crash");
    }
    for (const c of clients) await c.close();
    await sub.close();
    assert.equal(sub.delivered.length, 0, "no Will before the restart");

    {
      await using b = await BrokerProcess.start(path);
      assert.equal(await sub.connect(b.port, false), true, "the watcher's session survived");
      const both = () =>
        ["will/will-nodelay", "will/will-delay-1s"].every((t) =>
          sub.delivered.some((m) => m.topic === t)
        );
      assert.ok(
        await sub.until(both, 5_000),
        `both Wills after the restart; got ${JSON.stringify(sub.delivered)}\n${b.output}`,
      );
      await sleep(300);
      assert.deepEqual(
        sub.delivered.map((m) => `${m.topic}=${m.payload}`).sort(),
        ["will/will-delay-1s=gone:will-delay-1s", "will/will-nodelay=gone:will-nodelay"],
        "each Will exactly once",
      );
      await sub.disconnect();
      assert.equal((await b.stop()).code, 0, b.output);
    }

    // A published Will is gone from the store: another restart does not publish it again.
    {
      await using b = await BrokerProcess.start(path);
      assert.equal(await sub.connect(b.port, false), true);
      await sleep(700);
      assert.equal(sub.delivered.length, 2, `no Will twice: ${JSON.stringify(sub.delivered)}`);
      assert.doesNotMatch(b.output, /publishing will/);
      await sub.disconnect();
      assert.equal((await b.stop()).code, 0, b.output);
    }
  } finally {
    for (const c of clients) await c.close();
    await sub.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("restart: a damaged record is set aside with a log line and the rest of the state loads", async () => {
  const { dir, path } = await tempDataPath();
  const a = new PersistentSubscriber("cor-a", 3600);
  const bSub = new PersistentSubscriber("cor-b", 3600);
  try {
    {
      await using b = await BrokerProcess.start(path);
      assert.equal(await a.connect(b.port, true), false);
      assert.deepEqual(await a.subscribe("cor/a", 1), [1]);
      assert.equal(await bSub.connect(b.port, true), false);
      assert.deepEqual(await bSub.subscribe("cor/b", 1), [1]);
      await a.disconnect();
      await bSub.disconnect();
      await publishAcked(b.port, "cor/r/1", "retained-1", true);
      await publishAcked(b.port, "cor/r/2", "retained-2", true);
      assert.equal((await b.stop()).code, 0, b.output);
    }

    // Flip one byte of cor-b's subscription record behind the broker's back.
    const damagedKey: Deno.KvKey = ["sub", "cor-b", "cor/b"];
    {
      const kv = await Deno.openKv(path);
      try {
        const entry = await kv.get<Uint8Array>(damagedKey);
        assert.ok(entry.value instanceof Uint8Array, "the subscription record is stored");
        const damaged = entry.value.slice();
        damaged[damaged.length - 1] ^= 0x5a;
        await kv.set(damagedKey, damaged);
      } finally {
        kv.close();
      }
    }

    {
      await using b = await BrokerProcess.start(path);
      const line = await b.waitForLine(/damaged record set aside/, 5_000);
      assert.match(line, /cor-b/);
      assert.equal(await a.connect(b.port, false), true, "cor-a's session is there");
      assert.equal(await bSub.connect(b.port, false), true, "cor-b's session record is there");
      await publishAcked(b.port, "cor/a", "to-a");
      await publishAcked(b.port, "cor/b", "to-b");
      assert.ok(
        await a.until(() => a.delivered.some((m) => m.payload === "to-a"), 3_000),
        "cor-a's subscription survived",
      );
      await sleep(200);
      assert.deepEqual(
        bSub.delivered,
        [],
        "the damaged subscription was set aside, not half-loaded",
      );

      const fresh = new PersistentSubscriber("cor-fresh", 0);
      try {
        await fresh.connect(b.port, true);
        await fresh.subscribe("cor/r/#", 1);
        assert.ok(await fresh.until(() => fresh.delivered.length >= 2, 3_000));
        assert.deepEqual(
          fresh.delivered.map((m) => `${m.topic}=${m.payload}:${m.retain}`).sort(),
          ["cor/r/1=retained-1:true", "cor/r/2=retained-2:true"],
          "retained messages survive",
        );
        await fresh.disconnect();
      } finally {
        await fresh.close();
      }
      await a.disconnect();
      await bSub.disconnect();
      assert.equal((await b.stop()).code, 0, b.output);
    }

    const kv = await Deno.openKv(path);
    try {
      assert.equal((await kv.get(damagedKey)).value, null, "the damaged record left its place");
      const kept = await kv.get(["quarantine", ...damagedKey]);
      assert.ok(kept.value instanceof Uint8Array, "and is kept under the quarantine prefix");
    } finally {
      kv.close();
    }
  } finally {
    await a.close();
    await bSub.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("restart: a second broker on the same data path is refused with a clear message and a non-zero exit", async () => {
  const { dir, path } = await tempDataPath();
  try {
    await using first = await BrokerProcess.start(path);
    await using second = BrokerProcess.spawn(path);
    const status = await second.exit(20_000);
    assert.notEqual(status.code, 0, second.output);
    assert.match(second.output, /another broker uses this data path/);
    assert.match(second.output, new RegExp(`held by running process ${first.pid}`));
    assert.doesNotMatch(second.output, /listening/);

    // The first broker is unaffected and still holds its lock.
    const { client } = await RawClient.connect(first.port, { cleanStart: true });
    client.send({ type: PacketType.Pingreq });
    await client.expect(PacketType.Pingresp);
    await client.close();
    assert.equal(Deno.readTextFileSync(`${path}.lock`).trim(), String(first.pid));
    assert.equal((await first.stop()).code, 0, first.output);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
