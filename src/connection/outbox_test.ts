import assert from "node:assert/strict";
import { setImmediate } from "node:timers";
import { Outbox, type OutboxOwner, WRITES_PER_TURN } from "./outbox.ts";
import type { ByteConn } from "./transport.ts";

/** A byte sink that records each write call in a shared log; every write completes whole. */
class RecordingConn implements ByteConn {
  readonly remoteAddress = "127.0.0.1";
  readonly remotePort = 0;
  readonly writes: Uint8Array[] = [];
  constructor(readonly id: number, readonly log: number[]) {}
  read(): Promise<number | null> {
    return Promise.resolve(null);
  }
  write(buf: Uint8Array): Promise<number> {
    this.writes.push(buf.slice());
    this.log.push(this.id);
    return Promise.resolve(buf.length);
  }
  closeWrite(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {}
}

const owner: OutboxOwner = { outboxDrained() {}, outboxFailed() {} };
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

Deno.test("outbox: one turn starts at most WRITES_PER_TURN writes; the rest follow in later turns, in the order they were queued", async () => {
  const count = WRITES_PER_TURN * 2 + 44;
  const log: number[] = [];
  const conns = Array.from({ length: count }, (_, i) => new RecordingConn(i, log));
  const boxes = conns.map((c) => new Outbox(c, owner));
  boxes.forEach((b, i) => b.write(new Uint8Array([i & 0xff])));
  await Promise.resolve(); // the flush microtask of this turn
  assert.equal(log.length, WRITES_PER_TURN, "first turn");
  // Written to while waiting: joins the packet already queued, in the same write.
  boxes[count - 1].write(new Uint8Array([0xaa]));
  await nextTurn();
  assert.equal(log.length, WRITES_PER_TURN * 2, "second turn");
  await nextTurn();
  assert.equal(log.length, count, "third turn");
  assert.deepEqual(log, conns.map((c) => c.id), "one write per connection, in queue order");
  assert.deepEqual([...conns[count - 1].writes[0]], [(count - 1) & 0xff, 0xaa]);
  await Promise.all(boxes.map((b) => b.drained()));
  assert.ok(boxes.every((b) => b.bufferedBytes === 0));
});

Deno.test("outbox: a turn with few outboxes writes them all in that turn", async () => {
  const log: number[] = [];
  const boxes = Array.from(
    { length: 10 },
    (_, i) => new Outbox(new RecordingConn(i, log), owner),
  );
  for (const b of boxes) {
    b.write(new Uint8Array([1]));
    b.write(new Uint8Array([2, 3]));
  }
  await Promise.resolve();
  assert.deepEqual(log, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  await Promise.all(boxes.map((b) => b.drained()));
});

Deno.test("outbox: under steady load for many turns every packet is written once and in order on each connection", async () => {
  // More outboxes than one turn writes, written to again every turn: the list of waiting outboxes
  // never empties, so its flushed front has to be cut off on the way.
  const count = 2_000;
  const turns = 40;
  const log: number[] = [];
  const conns = Array.from({ length: count }, (_, i) => new RecordingConn(i, log));
  const boxes = conns.map((c) => new Outbox(c, owner));
  for (let t = 0; t < turns; t++) {
    for (const b of boxes) b.write(new Uint8Array([t]));
    await nextTurn();
  }
  let extra = 0;
  while (boxes.some((b) => b.bufferedBytes > 0)) {
    await nextTurn();
    assert.ok(++extra < count, "drains in a bounded number of turns");
  }
  const expected = Array.from({ length: turns }, (_, t) => t);
  for (const c of conns) assert.deepEqual(c.writes.flatMap((w) => [...w]), expected);
});

/** A byte sink that takes at most `chunk` bytes per write and completes each write on demand. */
class SlowConn implements ByteConn {
  readonly remoteAddress = "127.0.0.1";
  readonly remotePort = 0;
  readonly received: number[] = [];
  #pending: (() => void)[] = [];
  constructor(readonly chunk: number) {}
  read(): Promise<number | null> {
    return Promise.resolve(null);
  }
  write(buf: Uint8Array): Promise<number> {
    const n = Math.min(this.chunk, buf.length);
    return new Promise((resolve) =>
      this.#pending.push(() => {
        this.received.push(...buf.subarray(0, n));
        resolve(n);
      })
    );
  }
  /** Completes the write in progress, if any; false when none was waiting. */
  step(): boolean {
    const next = this.#pending.shift();
    next?.();
    return next !== undefined;
  }
  closeWrite(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {}
}

Deno.test("outbox: packets queued behind a slow write are copied at once (the shared slab they came from may be reused) and go out in order, with the owner's writes after them", async () => {
  const conn = new SlowConn(3);
  const slab = new Uint8Array(64); // stands for a shared slab of pooled views
  let drainedCalls = 0;
  const box: Outbox = new Outbox(conn, {
    outboxDrained() {
      // The owner refills from its queue on progress (as ClientConnection.pump does), once.
      if (++drainedCalls === 1) box.write(new Uint8Array([90, 91]));
    },
    outboxFailed() {},
  });
  const view = (bytes: number[], at: number) => {
    slab.set(bytes, at);
    return slab.subarray(at, at + bytes.length);
  };
  box.write(view([1, 2, 3, 4, 5], 0));
  await Promise.resolve(); // flushed: the first write runs, 3 bytes at a time
  box.write(view([6, 7], 8));
  box.write(view([8, 9, 10], 16));
  assert.equal(box.bufferedBytes, 10);
  // The slab is reused for other packets at once: the queued bytes must not depend on it.
  slab.fill(0xee, 8);
  for (let turns = 0; conn.step() || box.bufferedBytes > 0; turns++) {
    assert.ok(turns < 100);
    await Promise.resolve();
    await Promise.resolve();
  }
  assert.deepEqual(conn.received, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 90, 91]);
  assert.equal(box.bufferedBytes, 0);
  await box.drained();
});

Deno.test("outbox: a transport whose write throws fails only its own outbox; the others in the same turn and later writes still go out", async () => {
  const log: number[] = [];
  const broken = new RecordingConn(-1, log);
  broken.write = () => {
    throw new Error("socket gone");
  };
  const failures: unknown[] = [];
  const bad = new Outbox(broken, { outboxDrained() {}, outboxFailed: (e) => failures.push(e) });
  const good = [0, 1].map((i) => new Outbox(new RecordingConn(i, log), owner));
  good[0].write(new Uint8Array([1]));
  bad.write(new Uint8Array([2]));
  good[1].write(new Uint8Array([3]));
  await nextTurn();
  assert.deepEqual(log, [0, 1]);
  assert.equal(failures.length, 1);
  assert.equal((failures[0] as Error).message, "socket gone");
  assert.equal(bad.bufferedBytes, 0, "a failed outbox holds nothing");
  good[0].write(new Uint8Array([4]));
  await nextTurn();
  assert.deepEqual(log, [0, 1, 0], "writes after the failure are flushed");
});
