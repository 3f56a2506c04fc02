import assert from "node:assert/strict";
import { CommitAcks } from "./commit_acks.ts";

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } {
  let resolve!: () => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

function recorder() {
  const sent: string[] = [];
  const errors: unknown[] = [];
  const acks = new CommitAcks(
    (type, id, code, failure) => sent.push(`${type}:${id}:${code}${failure ? ":failed" : ""}`),
    (err) => errors.push(err),
  );
  return { sent, errors, acks };
}

Deno.test("acks waiting for commits go out once their commit settles, in the order they were added [MQTT-4.6.0-2]", async () => {
  const { sent, acks } = recorder();
  const first = deferred();
  const second = deferred();
  acks.add(first.promise, 4, 1, 0);
  acks.add(first.promise, 5, 2, 0); // same commit: one group
  acks.add(second.promise, 4, 3, 16);
  assert.equal(acks.size, 3);
  await tick();
  assert.deepEqual(sent, [], "nothing before its commit");
  first.resolve();
  await tick();
  assert.deepEqual(sent, ["4:1:0", "5:2:0"]);
  second.resolve();
  await tick();
  assert.deepEqual(sent, ["4:1:0", "5:2:0", "4:3:16"]);
  assert.equal(acks.size, 0);
});

Deno.test("an ack handed an earlier commit than the ack before it waits for that one: none leaves before an earlier ack's commit", async () => {
  const { sent, acks } = recorder();
  const older = deferred();
  const newer = deferred();
  acks.add(newer.promise, 4, 1, 0); // its writes are in the newer commit
  acks.add(older.promise, 4, 2, 0); // wrote nothing: the store handed the older, running commit
  older.resolve();
  await tick();
  assert.deepEqual(sent, [], "ack 2 must not overtake ack 1, whose commit is still running");
  newer.resolve();
  await tick();
  assert.deepEqual(sent, ["4:1:0", "4:2:0"]);
});

Deno.test("a failed commit fails its own acks only, and a throwing send neither stops the others nor misaligns later groups", async () => {
  const sent: string[] = [];
  const errors: unknown[] = [];
  const acks = new CommitAcks((type, id, _code, failure) => {
    if (id === 2) throw new Error("send broke");
    sent.push(`${type}:${id}${failure ? ":failed" : ""}`);
  }, (err) => errors.push(err));
  const a = deferred();
  const b = deferred();
  const c = deferred();
  acks.add(a.promise, 4, 1, 0);
  acks.add(a.promise, 4, 2, 0);
  acks.add(a.promise, 4, 3, 0);
  acks.add(b.promise, 4, 4, 0);
  acks.add(c.promise, 4, 5, 0);
  a.resolve();
  b.reject(new Error("disk full"));
  c.resolve();
  await tick();
  assert.deepEqual(sent, ["4:1", "4:3", "4:4:failed", "4:5"]);
  assert.equal(errors.length, 1);
  assert.equal(acks.size, 0);
});

Deno.test("acks under steady load, with a commit always pending, all go out in order", async () => {
  const { sent, acks } = recorder();
  let pending = deferred();
  let expected = 0;
  for (let commit = 0; commit < 3_000; commit++) {
    const next = deferred();
    acks.add(next.promise, 4, commit * 2, 0);
    acks.add(next.promise, 4, commit * 2 + 1, 0);
    pending.resolve(); // the previous commit settles while this one is pending
    await Promise.resolve();
    await Promise.resolve();
    pending = next;
    expected = commit * 2;
  }
  pending.resolve();
  await tick();
  assert.equal(sent.length, expected + 2);
  assert.ok(sent.every((s, i) => s === `4:${i}:0`), "in order");
  assert.equal(acks.size, 0);
});
