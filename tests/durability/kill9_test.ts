/**
 * Crash harness: the broker process is SIGKILLed at a seeded random moment in
 * the middle of QoS 1 and QoS 2 traffic and restarted on the same Deno KV data
 * path, several times. At the end every message whose publish was acknowledged
 * (PUBACK / PUBCOMP received by MQTT.js) must reach both persistent-session
 * subscribers, no QoS 2 message may reach a subscriber twice, and the retained
 * messages and subscriptions must have survived.
 *
 * Set CRASH_SEED to replay a run; the seed is printed.
 */
import assert from "node:assert/strict";
import { BrokerProcess } from "../helpers/broker_process.ts";
import { connectMqttJs, type MqttJsClient } from "../helpers/mqttjs.ts";
import { type Delivered, PersistentSubscriber, sleep } from "./subscriber.ts";

const ROUNDS = 4;
/** Publishers per round, each keeping up to WINDOW publishes unacknowledged. */
const PUBLISHERS = 2;
const WINDOW = 12;
/** The kill comes this long after the traffic starts (seeded). */
const KILL_MIN_MS = 250;
const KILL_SPAN_MS = 1_250;

/** mulberry32: a small seeded PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

interface Sent {
  topic: string;
  qos: 1 | 2;
  retain: boolean;
}

/** Publishes until `stopped()`, at most WINDOW in flight; records what was sent and acknowledged. */
async function publishLoop(
  pub: MqttJsClient,
  name: string,
  rand: () => number,
  sent: Map<string, Sent>,
  acked: Set<string>,
  stopped: () => boolean,
): Promise<Promise<void>[]> {
  const all: Promise<void>[] = [];
  const inflight = new Set<Promise<void>>();
  for (let n = 0; !stopped() && pub.client.connected; n++) {
    const payload = `${name}-${n}`;
    const qos: 1 | 2 = rand() < 0.5 ? 1 : 2;
    const retain = rand() < 0.1;
    const topic = retain ? `crash/retained/${payload}` : `crash/t/${name}`;
    sent.set(payload, { topic, qos, retain });
    const p = pub.client.publishAsync(topic, payload, { qos, retain }).then(
      () => void acked.add(payload),
      () => {/* not acknowledged: may or may not arrive */},
    );
    all.push(p);
    inflight.add(p);
    p.finally(() => inflight.delete(p));
    if (inflight.size >= WINDOW) await Promise.race(inflight);
  }
  return all;
}

/** Settles `promises`, giving up after `ms` (what is left counts as not acknowledged). */
async function settleWithin(promises: Promise<unknown>[], ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.allSettled(promises),
    new Promise<void>((resolve) => timer = setTimeout(resolve, ms)),
  ]);
  clearTimeout(timer);
}

/** `p`, or a rejection after `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function countBy(list: Delivered[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const m of list) counts.set(m.payload, (counts.get(m.payload) ?? 0) + 1);
  return counts;
}

Deno.test("kill -9 mid-traffic: no acknowledged message lost, no QoS 2 duplicate, retained and subscriptions survive", async () => {
  await crashRounds([]);
});

// Kills then often land while the journal rotates or a checkpoint copies into KV and deletes
// segments: replay must still restore exactly what was acknowledged.
Deno.test("kill -9 mid-traffic with a checkpoint every 10 ms: nothing acknowledged lost across checkpoints", async () => {
  const dir = await Deno.makeTempDir({ prefix: "durability-kill9-config-" });
  try {
    const config = `${dir}/broker.yaml`;
    await Deno.writeTextFile(config, "limits:\n  store_checkpoint_interval_ms: 10\n");
    await crashRounds(["--config", config]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Publishes under load, SIGKILLs and restarts the broker ROUNDS times, then checks everything. */
async function crashRounds(extraArgs: string[]): Promise<void> {
  const seed = Number(Deno.env.get("CRASH_SEED") ?? Date.now() % 1_000_000);
  console.log(`CRASH_SEED=${seed}`);
  const rand = prng(seed);
  const dir = await Deno.makeTempDir({ prefix: "durability-kill9-" });
  const path = `${dir}/data/broker.db`;
  const online = new PersistentSubscriber("crash-online", 3600);
  const offline = new PersistentSubscriber("crash-offline", 3600);
  const sent = new Map<string, Sent>();
  const acked = new Set<string>();
  const publishers: MqttJsClient[] = [];
  let broker: BrokerProcess | undefined;
  const started = Date.now();
  try {
    broker = await BrokerProcess.start(path, { extraArgs });
    for (const s of [online, offline]) {
      assert.equal(await s.connect(broker.port, true), false);
      assert.deepEqual(await s.subscribe("crash/#", 2), [2]);
    }
    // The offline subscriber stays away until the end: everything reaches it through its queue.
    await offline.disconnect();

    for (let round = 0; round < ROUNDS; round++) {
      if (round > 0) {
        broker = await BrokerProcess.start(path, { extraArgs });
        // Acknowledged writes since the last checkpoint exist only in the journal: prove the start
        // replayed it (the durability counts below prove it replayed the right things).
        assert.match(broker.output, /journal replayed into the data store/, broker.output);
        assert.equal(
          await online.connect(broker.port, false),
          true,
          `round ${round}: the online subscriber's session survived the crash`,
        );
      }
      const round0 = publishers.length;
      for (let i = 0; i < PUBLISHERS; i++) {
        publishers.push(
          await connectMqttJs(broker.port, {
            clientId: `crash-pub-${round}-${i}`,
            protocolVersion: 5,
            reconnectPeriod: 0,
          }),
        );
      }
      let stop = false;
      const loops = publishers.slice(round0).map((pub, i) =>
        publishLoop(
          pub,
          `r${round}p${i}`,
          prng(seed * 31 + round * 7 + i + 1),
          sent,
          acked,
          () => stop,
        )
      );
      const killAfter = KILL_MIN_MS + Math.floor(rand() * KILL_SPAN_MS);
      await sleep(killAfter);
      const status: Deno.CommandStatus = await broker.crash();
      stop = true;
      assert.equal(status.signal, "SIGKILL", `round ${round}: the broker was killed`);
      // Tearing MQTT.js down fails the publishes still waiting for their acknowledgement. (destroy,
      // not close: a DISCONNECT written to the dead socket may never report back.)
      for (const pub of publishers.slice(round0)) await pub.destroy();
      const publishes = (await Promise.all(loops)).flat();
      await settleWithin(publishes, 2_000);
      await online.waitClosed(2_000);
      console.log(
        `round ${round}: killed after ${killAfter} ms; sent ${sent.size}, acked ${acked.size} so far`,
      );
    }

    // Final restart: both sessions come back, then a marker proves the subscriptions still route.
    broker = await BrokerProcess.start(path, { extraArgs });
    assert.equal(await online.connect(broker.port, false), true, "online session survived");
    assert.equal(await offline.connect(broker.port, false), true, "offline session survived");
    const marker = await connectMqttJs(broker.port, { clientId: "crash-marker" });
    publishers.push(marker);
    await within(
      marker.client.publishAsync("crash/marker", "final-marker", { qos: 2 }),
      5_000,
      "the marker's PUBCOMP",
    );
    for (const s of [online, offline]) {
      const got = await s.until(
        () => s.delivered.some((m) => m.payload === "final-marker"),
        10_000,
      );
      assert.ok(got, `${s.clientId} received the marker published after the last restart`);
      assert.ok(await s.untilQuiet(500, 10_000), `${s.clientId} went quiet`);
    }

    // Retained messages: a fresh subscriber gets every acknowledged one.
    const ackedRetained = new Map<string, string>();
    for (const [payload, s] of sent) {
      if (s.retain && acked.has(payload)) ackedRetained.set(s.topic, payload);
    }
    const checker = new PersistentSubscriber("crash-retained-checker", 0);
    const retained = new Map<string, string>();
    try {
      await checker.connect(broker.port, true);
      await checker.subscribe("crash/retained/#", 1);
      const seen = new Set<string>();
      await checker.until(() => {
        for (const m of checker.delivered) seen.add(m.topic);
        return [...ackedRetained.keys()].every((t) => seen.has(t));
      }, 5_000);
      await checker.untilQuiet(300, 3_000);
      for (const m of checker.delivered) {
        assert.ok(m.retain, `retained flag on ${m.topic}`);
        retained.set(m.topic, m.payload);
      }
      await checker.disconnect();
    } finally {
      await checker.close();
    }

    // --- Verdict: the figures first, then the assertions.
    const total = sent.size;
    const qos1 = [...sent.values()].filter((s) => s.qos === 1).length;
    console.log(
      `seed ${seed}: sent ${total} (QoS 1 ${qos1}, QoS 2 ${
        total - qos1
      }), acknowledged ${acked.size}, ` +
        `retained acknowledged ${ackedRetained.size} / present ${retained.size}, ` +
        `${ROUNDS} kills, ${Date.now() - started} ms`,
    );
    const verdicts = [online, offline].map((s) => {
      const counts = countBy(s.delivered);
      const v = {
        s,
        lost: [...acked].filter((p) => !counts.has(p)),
        unknown: [...counts.keys()].filter((p) => p !== "final-marker" && !sent.has(p)),
        qos2Twice: [...counts].filter(([p, n]) => n > 1 && sent.get(p)?.qos === 2),
        // A packet id the receiver still holds for PUBREL but the broker forgot swallows the next
        // message the broker sends with that id [MQTT-4.3.3-9]: every exchange must be closed.
        open: [...s.awaitingPubrel].map(([id, p]) =>
          `${id}:${p} (${acked.has(p) ? "acknowledged" : "not acknowledged"})`
        ),
      };
      const qos1Dups = [...counts].filter(([p, n]) => n > 1 && sent.get(p)?.qos === 1)
        .reduce((sum, [, n]) => sum + n - 1, 0);
      const unackedArrived = [...counts.keys()].filter((p) => sent.has(p) && !acked.has(p)).length;
      console.log(
        `${s.clientId}: delivered ${s.delivered.length} (${counts.size} distinct), ` +
          `QoS 1 duplicates ${qos1Dups}, QoS 2 re-sends recognised ${s.resentQos2}, ` +
          `unacknowledged that arrived ${unackedArrived}, lost ${v.lost.length}, ` +
          `QoS 2 twice ${v.qos2Twice.length}, QoS 2 exchanges left open ${v.open.length}, ` +
          `QoS 2 swallowed (DUP=0 on an id awaiting PUBREL) ${s.swallowed.length}` +
          (s.swallowed.length > 0
            ? ` [${s.swallowed.map((m) => `${m.payload}${acked.has(m.payload) ? "*" : ""}`)}]`
            : ""),
      );
      return v;
    });
    for (const { s, lost, unknown, qos2Twice, open } of verdicts) {
      assert.deepEqual(lost, [], `${s.clientId}: acknowledged messages lost (seed ${seed})`);
      assert.deepEqual(
        qos2Twice,
        [],
        `${s.clientId}: QoS 2 messages delivered twice (seed ${seed})`,
      );
      assert.deepEqual(unknown, [], `${s.clientId}: payloads nobody sent`);
      assert.deepEqual(open, [], `${s.clientId}: QoS 2 exchanges the broker forgot (seed ${seed})`);
      // Delivered at the lower of the published QoS and the granted QoS 2.
      for (const m of s.delivered) {
        const info = sent.get(m.payload);
        if (info) assert.equal(m.qos, info.qos, `${s.clientId}: QoS of ${m.payload}`);
      }
    }
    for (const [topic, payload] of ackedRetained) {
      assert.equal(
        retained.get(topic),
        payload,
        `acknowledged retained message on ${topic} survives`,
      );
    }
    for (const [topic, payload] of retained) {
      assert.equal(sent.get(payload)?.topic, topic, `retained ${topic} holds a message sent to it`);
    }
    assert.ok(acked.size > 0, "some publishes were acknowledged");

    await online.disconnect();
    await offline.disconnect();
    assert.equal((await broker.stop()).code, 0, broker.output);
  } catch (err) {
    if (broker) console.log(`last broker log:\n${broker.output.split("\n").slice(-40).join("\n")}`);
    throw err;
  } finally {
    // destroy(): a graceful MQTT.js end waits for acknowledgements a dead broker never sends.
    for (const pub of publishers) await pub.destroy();
    await online.close();
    await offline.close();
    if (broker) await broker[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true });
  }
}
