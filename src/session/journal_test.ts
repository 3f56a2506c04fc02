import assert from "node:assert/strict";
import {
  decodeJournalSegment,
  encodeJournalFrame,
  Journal,
  type JournalMutation,
  listSegments,
  segmentPath,
} from "./journal.ts";
import { KvSessionStore } from "./kv_store.ts";
import { decodeRecord, encodeRecord } from "./kv_records.ts";

/** A frame of its own (encodeJournalFrame returns a view of a buffer the next call reuses). */
function frame(mutations: JournalMutation[]): Uint8Array {
  return encodeJournalFrame(mutations).slice();
}

const MAGIC = new TextEncoder().encode("MQJRNL01");

function segment(...frames: Uint8Array[]): Uint8Array {
  const total = MAGIC.length + frames.reduce((n, f) => n + f.length, 0);
  const out = new Uint8Array(total);
  out.set(MAGIC);
  let o = MAGIC.length;
  for (const f of frames) {
    out.set(f, o);
    o += f.length;
  }
  return out;
}

const sample: JournalMutation[] = [
  { key: ["s", "client-é-☃"], value: new Uint8Array([1, 2, 3]) },
  { key: ["q", "c", 70_000], value: new Uint8Array(0) },
  { key: ["i", "c", -2.5], value: null },
  { key: ["x", 12345678901234567890n, true, false], value: new Uint8Array([9]) },
  { key: ["b", new Uint8Array([0, 255, 7])], value: new Uint8Array(5000).fill(0xab) },
];

Deno.test("journal frame: every key part type and deletes round-trip", () => {
  const read = decodeJournalSegment(segment(frame(sample), frame([])));
  assert.equal(read.stoppedAt, undefined);
  assert.equal(read.frames.length, 2);
  assert.deepEqual(read.frames[0], sample);
  assert.deepEqual(read.frames[1], []);
});

Deno.test("journal frame: a record is encoded straight into the frame and reads back as the KV value", () => {
  const record = { m: 7, qos: 1, retain: false, topic: "a/b", payload: new Uint8Array([1, 2]) };
  const read = decodeJournalSegment(segment(frame([{ key: ["i", "c", 1], value: null, record }])));
  assert.equal(read.frames.length, 1);
  const value = read.frames[0][0].value!;
  assert.deepEqual(value, encodeRecord(record));
  assert.deepEqual(decodeRecord(value), record);
});

Deno.test("journal segment: a frame cut at any byte (a crash mid-append) is dropped, earlier frames kept", () => {
  const first = frame(sample.slice(0, 2));
  const second = frame(sample.slice(2));
  const whole = segment(first, second);
  const secondStart = MAGIC.length + first.length;
  for (let cut = secondStart; cut < whole.length; cut++) {
    const read = decodeJournalSegment(whole.subarray(0, cut));
    assert.equal(read.frames.length, 1, `cut at ${cut}`);
    assert.deepEqual(read.frames[0], sample.slice(0, 2));
    if (cut > secondStart) assert.equal(read.stoppedAt?.offset, secondStart, `cut at ${cut}`);
  }
});

Deno.test("journal segment: a flipped byte fails the frame checksum and reading stops there", () => {
  const first = frame(sample.slice(0, 1));
  const second = frame(sample.slice(1));
  for (const at of [8, 20, second.length - 1]) {
    const damaged = segment(first, second);
    damaged[MAGIC.length + first.length + at] ^= 0x40;
    const read = decodeJournalSegment(damaged);
    assert.equal(read.frames.length, 1, `byte ${at}`);
    assert.ok(read.stoppedAt, `byte ${at}`);
    assert.match(read.stoppedAt.reason, /checksum|length|torn/);
  }
});

Deno.test("journal segment: a file that is not a journal yields nothing and says why", () => {
  const read = decodeJournalSegment(new TextEncoder().encode("not a journal at all"));
  assert.deepEqual(read.frames, []);
  assert.match(read.stoppedAt!.reason, /bad magic/);
  assert.deepEqual(decodeJournalSegment(new Uint8Array(0)), { frames: [] });
});

Deno.test("journal: appends survive in order, rotation starts the next segment, removal keeps the current one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "journal-" });
  try {
    const path = `${dir}/broker.db`;
    const j = await Journal.create(path, 7);
    await j.append(frame(sample.slice(0, 1)));
    assert.equal(await j.rotate(), 7);
    await j.append(frame(sample.slice(1, 2)));
    assert.deepEqual(await listSegments(path), [7, 8]);
    const seven = decodeJournalSegment(await Deno.readFile(segmentPath(path, 7)));
    assert.deepEqual(seven.frames, [sample.slice(0, 1)]);
    await j.removeThrough(8);
    assert.deepEqual(await listSegments(path), [8], "the segment being appended to stays");
    await j.close(true);
    assert.deepEqual(await listSegments(path), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function tempStorePath(): Promise<{ dir: string; path: string }> {
  const dir = await Deno.makeTempDir({ prefix: "journal-store-" });
  return { dir, path: `${dir}/broker.db` };
}

Deno.test("kv store with a journal: acknowledged writes live in the journal, a checkpoint copies them into KV and deletes the covered segments", async () => {
  const { dir, path } = await tempStorePath();
  try {
    const store = await KvSessionStore.open(path, { checkpointIntervalMs: 50 });
    try {
      await store.load();
      store.saveSession({ clientId: "cp", protocolVersion: 5, expirySec: 100 });
      await store.flush();
      assert.equal(store.uncheckpointed, 1, "durable through the journal, not yet in KV");
      const kv = await Deno.openKv(path);
      try {
        assert.equal((await kv.get(["s", "cp"])).value, null);
        const deadline = Date.now() + 5_000;
        while ((await kv.get(["s", "cp"])).value === null && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
        }
        assert.ok((await kv.get(["s", "cp"])).value instanceof Uint8Array, "checkpointed");
      } finally {
        kv.close();
      }
      while (store.uncheckpointed > 0 || store.stats.checkpoints === 0) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.deepEqual(await listSegments(path), [2], "segment 1 removed after its checkpoint");
    } finally {
      await store.close();
    }
    assert.deepEqual(await listSegments(path), [], "a clean close leaves no journal");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kv store with a journal: a queued message acknowledged before the checkpoint never reaches KV", async () => {
  const { dir, path } = await tempStorePath();
  try {
    const store = await KvSessionStore.open(path, { checkpointIntervalMs: 3_600_000 });
    try {
      await store.load();
      store.saveSession({ clientId: "brief", protocolVersion: 5, expirySec: 100 });
      await store.flush();
      const d = {
        message: {
          id: 1,
          topic: "t",
          payload: new Uint8Array([1]),
          qos: 1 as const,
          retain: false,
        },
        qos: 1 as const,
        retain: false,
      };
      store.enqueue("brief", d);
      await store.flush();
      assert.equal(store.uncheckpointed, 2, "session and queued message journaled");
      store.dequeue("brief", d);
      await store.flush();
      assert.equal(store.uncheckpointed, 1, "the queued message's write and delete cancelled");
    } finally {
      await store.close();
    }
    assert.equal(store.stats.mutations, 1, "only the session record went into KV");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kv store after a crash: a torn last journal frame is dropped with a report, everything before it is replayed", async () => {
  const { dir, path } = await tempStorePath();
  try {
    let store = await KvSessionStore.open(path, { checkpointIntervalMs: 3_600_000 });
    await store.load();
    store.saveSession({ clientId: "kept", protocolVersion: 5, expirySec: 100 });
    await store.flush();
    store.saveSession({ clientId: "torn", protocolVersion: 5, expirySec: 100 });
    await store.flush();
    await store.abandon();
    // Cut the last frame in half, as a crash during its write would.
    const [seg] = await listSegments(path);
    const bytes = await Deno.readFile(segmentPath(path, seg));
    const frames = decodeJournalSegment(bytes).frames;
    assert.equal(frames.length, 2);
    await Deno.writeFile(segmentPath(path, seg), bytes.subarray(0, bytes.length - 10));
    store = await KvSessionStore.open(path);
    try {
      const state = await store.load();
      assert.deepEqual(state.sessions.map((s) => s.record.clientId), ["kept"]);
      const report = store.report.journal!;
      assert.equal(report.frames, 1);
      assert.equal(report.stopped.length, 1);
      assert.match(report.stopped[0].reason, /torn/);
      assert.deepEqual(await listSegments(path), [seg + 1], "replayed segments are removed");
    } finally {
      await store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Makes the next `count` calls of an FsFile method fail as a full disk would (then restores it). */
function failNext<K extends "writeSync" | "syncData" | "truncateSync">(
  method: K,
  count: number,
  partialWrite = false,
): () => void {
  const proto = Deno.FsFile.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const original = proto[method];
  let left = count;
  proto[method] = function (this: Deno.FsFile, ...args: unknown[]) {
    if (left > 0) {
      left--;
      if (partialWrite && method === "writeSync") {
        // Half the bytes reach the file, then the disk is full.
        const bytes = args[0] as Uint8Array;
        original.call(this, bytes.subarray(0, bytes.length >> 1));
      }
      const err = new Error("No space left on device (os error 28)");
      if (method === "syncData") return Promise.reject(err);
      throw err;
    }
    return original.apply(this, args);
  };
  return () => {
    proto[method] = original;
  };
}

Deno.test("journal: a failed write or fdatasync is cut off the segment, so later frames still replay", async () => {
  const dir = await Deno.makeTempDir({ prefix: "journal-fail-" });
  try {
    const path = `${dir}/broker.db`;
    const j = await Journal.create(path, 1);
    await j.append(frame(sample.slice(0, 1)));
    let restore = failNext("writeSync", 1, true);
    try {
      await assert.rejects(() => j.append(frame(sample.slice(1, 2))), /No space left/);
    } finally {
      restore();
    }
    restore = failNext("syncData", 1);
    try {
      await assert.rejects(() => j.append(frame(sample.slice(2, 3))), /No space left/);
    } finally {
      restore();
    }
    await j.append(frame(sample.slice(3, 4)));
    await j.close(false);
    const read = decodeJournalSegment(await Deno.readFile(segmentPath(path, 1)));
    assert.equal(read.stoppedAt, undefined, "no torn frame left in the middle");
    assert.deepEqual(read.frames, [sample.slice(0, 1), sample.slice(3, 4)]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("journal: when a failed write cannot be cut off either, the next append starts a new segment", async () => {
  const dir = await Deno.makeTempDir({ prefix: "journal-fail-" });
  try {
    const path = `${dir}/broker.db`;
    const j = await Journal.create(path, 1);
    await j.append(frame(sample.slice(0, 1)));
    const restoreWrite = failNext("writeSync", 1, true);
    const restoreTruncate = failNext("truncateSync", 1);
    try {
      await assert.rejects(() => j.append(frame(sample.slice(1, 2))), /No space left/);
    } finally {
      restoreWrite();
      restoreTruncate();
    }
    await j.append(frame(sample.slice(3, 4)));
    await j.close(false);
    assert.deepEqual(await listSegments(path), [1, 2]);
    const first = decodeJournalSegment(await Deno.readFile(segmentPath(path, 1)));
    assert.deepEqual(first.frames, [sample.slice(0, 1)], "the torn frame ends segment 1");
    assert.ok(first.stoppedAt, "and is reported");
    const second = decodeJournalSegment(await Deno.readFile(segmentPath(path, 2)));
    assert.deepEqual(second.frames, [sample.slice(3, 4)], "later frames live in segment 2");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
