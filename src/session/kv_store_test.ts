import assert from "node:assert/strict";
import { KvSessionStore } from "./kv_store.ts";
import { decodeRecord, encodeRecord, keyPart, RecordError, splitPayload } from "./kv_records.ts";
import { runSessionStoreContract } from "../../tests/contracts/session_store_contract.ts";

const dirs: string[] = [];
function freshPath(): string {
  const dir = Deno.makeTempDirSync({ prefix: "kvstore-" });
  dirs.push(dir);
  return `${dir}/data/broker.db`;
}

runSessionStoreContract("KvSessionStore", {
  open: () => KvSessionStore.open(freshPath()),
  reopen: async (previous) => {
    const path = (previous as KvSessionStore).path;
    await previous.close();
    return KvSessionStore.open(path);
  },
});

// A crash after the flush: everything acknowledged is only in the journal and must be replayed.
runSessionStoreContract("KvSessionStore after a crash (journal replay)", {
  open: () => KvSessionStore.open(freshPath(), { checkpointIntervalMs: 3_600_000 }),
  reopen: async (previous) => {
    const store = previous as KvSessionStore;
    await store.flush();
    await store.abandon();
    return KvSessionStore.open(store.path, { checkpointIntervalMs: 3_600_000 });
  },
});

// A checkpoint after every commit, then a crash: part of the state is in KV, part in the journal.
runSessionStoreContract("KvSessionStore after a crash amid checkpoints", {
  open: () => KvSessionStore.open(freshPath(), { checkpointIntervalMs: 0 }),
  reopen: async (previous) => {
    const store = previous as KvSessionStore;
    await store.flush();
    await store.abandon();
    return KvSessionStore.open(store.path, { checkpointIntervalMs: 0 });
  },
});

runSessionStoreContract("KvSessionStore without a journal", {
  open: () => KvSessionStore.open(freshPath(), { journal: false }),
  reopen: async (previous) => {
    const path = (previous as KvSessionStore).path;
    await previous.close();
    return KvSessionStore.open(path, { journal: false });
  },
});

Deno.test("crc32 matches the IEEE check value and a byte-at-a-time reference at every length and offset", async () => {
  const { crc32 } = await import("./kv_records.ts");
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  const reference = (d: Uint8Array, start: number, end: number) => {
    let c = 0xffffffff;
    for (let i = start; i < end; i++) {
      c ^= d[i];
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    }
    return (c ^ 0xffffffff) >>> 0;
  };
  const data = new Uint8Array(100);
  for (let i = 0; i < data.length; i++) data[i] = (i * 131 + 7) & 0xff;
  for (let start = 0; start < 9; start++) {
    for (let end = start; end <= data.length; end++) {
      assert.equal(crc32(data, start, end), reference(data, start, end), `${start}..${end}`);
    }
  }
});

Deno.test("kv record: a flipped byte fails the checksum", () => {
  const rec = encodeRecord({ topic: "a/b", payload: new Uint8Array([1, 2, 3]) });
  assert.deepEqual(decodeRecord<{ topic: string }>(rec).topic, "a/b");
  const bad = rec.slice();
  bad[bad.length - 1] ^= 0x01;
  assert.throws(() => decodeRecord(bad), RecordError);
  const wrongVersion = rec.slice();
  wrongVersion[0] = 99;
  assert.throws(() => decodeRecord(wrongVersion), /unknown record version/);
});

Deno.test("kv keys: long client ids, topics and filters are hashed to bounded key parts", () => {
  assert.equal(keyPart("short/topic"), "short/topic");
  const long = keyPart("x".repeat(10_000));
  assert.match(long, /^#[0-9a-f]{64}$/);
  assert.notEqual(keyPart("y".repeat(10_000)), long);
});

Deno.test("kv payload split: parts stay under the 64 KiB value limit and rejoin exactly", () => {
  const parts = splitPayload(new Uint8Array(150_000));
  assert.equal(parts.length, 3);
  for (const p of parts) assert.ok(p.length <= 60 * 1024);
  assert.equal(parts.reduce((n, p) => n + p.length, 0), 150_000);
});

Deno.test("kv store refuses a second opener of the same data path while the first runs", async () => {
  const path = freshPath();
  const first = await KvSessionStore.open(path);
  try {
    await assert.rejects(() => KvSessionStore.open(path), /another broker uses this data path/);
  } finally {
    await first.close();
  }
});

Deno.test("kv store sets aside a corrupted record and loads the rest", async () => {
  const path = freshPath();
  let store = await KvSessionStore.open(path);
  await store.load();
  store.saveSession({ clientId: "ok", protocolVersion: 5, expirySec: 100 });
  store.saveSession({ clientId: "bad", protocolVersion: 5, expirySec: 100 });
  await store.flush();
  await store.close();
  // Damage one record behind the store's back.
  const kv = await Deno.openKv(path);
  const entry = await kv.get<Uint8Array>(["s", "bad"]);
  const damaged = entry.value!.slice();
  damaged[damaged.length - 1] ^= 0xff;
  await kv.set(["s", "bad"], damaged);
  kv.close();
  store = await KvSessionStore.open(path);
  try {
    const state = await store.load();
    assert.deepEqual(state.sessions.map((s) => s.record.clientId), ["ok"]);
    assert.equal(store.report.quarantined.length, 1);
  } finally {
    await store.close();
  }
  const check = await Deno.openKv(path);
  const q = await check.get(["quarantine", "s", "bad"]);
  check.close();
  assert.ok(
    q.value instanceof Uint8Array,
    "the damaged record is kept under the quarantine prefix",
  );
});

Deno.test("kv store renames an unopenable file aside and starts empty", async () => {
  const path = freshPath();
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  await Deno.writeTextFile(path, "this is not a database, just text ".repeat(200));
  const store = await KvSessionStore.open(path);
  try {
    const state = await store.load();
    assert.equal(state.sessions.length, 0);
  } finally {
    await store.close();
  }
  const names = [...Deno.readDirSync(path.slice(0, path.lastIndexOf("/")))].map((e) => e.name);
  assert.ok(names.some((n) => n.startsWith("broker.db.damaged-")), `renamed aside: ${names}`);
});

Deno.test("kv store salvages a file with a damaged page: renamed aside, readable records copied, broker state loads", async () => {
  const path = freshPath();
  let store = await KvSessionStore.open(path);
  await store.load();
  for (let i = 0; i < 3000; i++) {
    store.saveSession({
      clientId: `client-${i}-${"x".repeat(40)}`,
      protocolVersion: 5,
      expirySec: 100,
    });
  }
  await store.flush();
  await store.close();
  // Overwrite 4 KiB in the middle of the file: `list` then fails on that page (deno-notes §1).
  const file = await Deno.open(path, { read: true, write: true });
  const size = (await file.stat()).size;
  await file.seek(Math.floor(size / 2 / 4096) * 4096, Deno.SeekMode.Start);
  const junk = new Uint8Array(4096);
  for (let i = 0; i < junk.length; i++) junk[i] = (i * 7919) & 0xff;
  await file.write(junk);
  file.close();
  store = await KvSessionStore.open(path);
  try {
    const state = await store.load();
    const report = store.report.setAside;
    assert.ok(report, "the damaged file was set aside");
    assert.ok(report.copied > 0, "some records were salvaged");
    assert.ok(
      state.sessions.length > 0 && state.sessions.length < 3000,
      `loaded ${state.sessions.length}`,
    );
    const dir = path.slice(0, path.lastIndexOf("/"));
    const names = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.ok(names.some((n) => n.startsWith("broker.db.damaged-")), `kept aside: ${names}`);
  } finally {
    await store.close();
  }
});

Deno.test("decodeKvKey reads back the keys the store writes", async () => {
  const { decodeKvKey } = await import("./kv_salvage.ts");
  const { DatabaseSync } = await import("node:sqlite");
  const path = freshPath();
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  const kv = await Deno.openKv(path);
  const keys: Deno.KvKey[] = [["s", "a\u0000b"], ["q", "c", 70_000], ["i", "c", -2.5], [
    "x",
    true,
    false,
  ]];
  for (const k of keys) await kv.set(k, new Uint8Array([1]));
  kv.close();
  const db = new DatabaseSync(path, { readOnly: true });
  const got = db.prepare("SELECT k FROM kv").all().map((r) =>
    decodeKvKey((r as { k: Uint8Array }).k)
  );
  db.close();
  for (const k of keys) {
    assert.ok(got.some((g) => JSON.stringify(g) === JSON.stringify(k)), JSON.stringify(k));
  }
});

Deno.test("kv store reads queue and in-flight records in both stored forms, and sets aside a malformed tuple", async () => {
  const path = freshPath();
  let store = await KvSessionStore.open(path);
  await store.load();
  store.saveSession({ clientId: "forms", protocolVersion: 5, expirySec: 100 });
  await store.flush();
  await store.close();
  const payload = new Uint8Array([7, 8]);
  const msg = { id: 5, topic: "a/b", qos: 1, retain: false, payload, publisherId: "p" };
  const kv = await Deno.openKv(path);
  // The object form written before queue and in-flight records became tuples.
  await kv.set(["q", "forms", 1], encodeRecord({ m: 5, msg, qos: 1, retain: false, ids: [3] }));
  await kv.set(
    ["i", "forms", 9],
    encodeRecord({
      m: 6,
      msg: { ...msg, id: 6 },
      qos: 1,
      retain: false,
      packetId: 9,
      state: "pubrel",
      sentAt: 1,
    }),
  );
  // A tuple whose QoS is out of range: a valid checksum, but not a record the store can use.
  await kv.set(["q", "forms", 2], encodeRecord([7, undefined, 3, false, undefined, undefined]));
  kv.close();
  store = await KvSessionStore.open(path);
  try {
    const state = await store.load();
    const s = state.sessions.find((x) => x.record.clientId === "forms")!;
    assert.equal(s.queue.length, 1);
    assert.deepEqual(s.queue[0].message.payload, payload);
    assert.deepEqual(s.queue[0].subscriptionIds, [3]);
    assert.equal(s.inflight.length, 1);
    assert.equal(s.inflight[0].state, "pubrel");
    assert.equal(s.inflight[0].message.id, 6);
    assert.deepEqual(store.report.quarantined, [JSON.stringify(["q", "forms", 2])]);
    // Written again in the tuple form, the entries read back the same.
    store.saveInflight("forms", { ...s.inflight[0], sentAt: 2 });
    await store.flush();
  } finally {
    await store.close();
  }
  store = await KvSessionStore.open(path);
  try {
    const s = (await store.load()).sessions.find((x) => x.record.clientId === "forms")!;
    assert.equal(s.inflight[0].state, "pubrel");
    assert.equal(s.inflight[0].sentAt, 2);
    assert.equal(s.inflight[0].message.topic, "a/b");
  } finally {
    await store.close();
  }
});

Deno.test("kv store cleanup of temp dirs", () => {
  for (const d of dirs) {
    try {
      Deno.removeSync(d, { recursive: true });
    } catch { /* in use on some platforms */ }
  }
});
