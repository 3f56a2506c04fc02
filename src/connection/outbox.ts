import { setImmediate } from "node:timers";
import type { ByteConn } from "./transport.ts";

const EMPTY = new Uint8Array(0);

/** What an {@link Outbox} reports to the connection that owns it. */
export interface OutboxOwner {
  /** A write completed; `queuedBytes` are still waiting to be written. */
  outboxDrained(queuedBytes: number): void;
  /** A write failed (peer gone). Called once; later writes are dropped. */
  outboxFailed(err: unknown): void;
}

// Outboxes written to in this turn, flushed together by one microtask: a turn that writes to
// thousands of connections (one message to each of 10,000 subscribers) queues one microtask, not
// one per connection, and an outbox needs no flush callback of its own.
let dirty: Outbox[] = [];
let dirtyHead = 0;
let flushQueued = false;

/**
 * Most writes started in one turn of the event loop. In Deno 2.9 a write costs about 1.5 µs of
 * CPU when a turn starts a hundred of them and 6–10 µs when it starts thousands (measured with
 * 8,000 sockets: user time per write 1.5 µs at 100 per turn, 3.6 µs at 400, 9.7 µs at 8,000); a
 * microtask does not end the turn, `setImmediate` does. So a flush that finds more outboxes
 * than this writes this many and leaves the rest, in order, to the next turn.
 */
export const WRITES_PER_TURN = 128;

/** Flushed entries at the front of the list before it is compacted (see flushDirty). */
const COMPACT_AFTER = 1024;

function flushDirty(): void {
  // flushQueued stays true until the list is done: outboxes dirtied meanwhile join this list.
  const list = dirty;
  const end = Math.min(list.length, dirtyHead + WRITES_PER_TURN);
  let next = dirtyHead;
  try {
    while (next < end) list[next++].flush();
  } finally {
    // Even if a flush threw, the list moves on: a stuck list would stop every outbox for good.
    if (next < list.length) {
      // The rest, and outboxes dirtied meanwhile, go out in order in the next turn. Under steady
      // load the list may never empty: the flushed front is cut off once it is half of it, so the
      // list stays within twice the outboxes waiting (each waits in it at most once).
      if (next >= COMPACT_AFTER && next * 2 >= list.length) {
        dirty = list.slice(next);
        dirtyHead = 0;
      } else dirtyHead = next;
      setImmediate(flushDirty);
    } else {
      dirty = [];
      dirtyHead = 0;
      flushQueued = false;
    }
  }
}

/**
 * Coalesced, bounded writes for one connection: packets queued during one
 * turn of the event loop go out in a single write, and the queued byte count
 * is visible so the broker can apply its slow-reader policy.
 */
export class Outbox {
  readonly #conn: ByteConn;
  readonly #owner: OutboxOwner;
  // Queued packets: the first alone (the common case, no array), the rest in `#more`.
  #first: Uint8Array | undefined = undefined;
  #more: Uint8Array[] | undefined = undefined;
  #pendingBytes = 0;
  #inWriteBytes = 0;
  #scheduled = false;
  #writing = false;
  #failed = false;
  #idle: (() => void)[] | undefined = undefined;
  #buf: Uint8Array = EMPTY;
  #off = 0;
  // Bytes queued behind a write in progress, copied into a buffer of our own. Packets are often
  // views into shared slabs (util/byte_pool.ts); a slow reader's backlog of views would keep those
  // slabs alive for as long as it stays slow, each for the sake of a few bytes.
  #held: Uint8Array = EMPTY;
  #heldLen = 0;

  constructor(conn: ByteConn, owner: OutboxOwner) {
    this.#conn = conn;
    this.#owner = owner;
    this.#onWriteDone = this.#writeDone.bind(this);
  }

  /** Bytes accepted and not yet written to the socket. */
  get bufferedBytes(): number {
    return this.#pendingBytes + this.#inWriteBytes;
  }

  /** Queues bytes; the caller must not change them afterwards. */
  write(bytes: Uint8Array): void {
    if (this.#failed) return;
    if (this.#writing) {
      this.#hold(bytes);
      return;
    }
    if (this.#first === undefined) this.#first = bytes;
    else (this.#more ??= []).push(bytes);
    this.#pendingBytes += bytes.length;
    if (!this.#scheduled && !this.#writing) {
      this.#scheduled = true;
      dirty.push(this);
      if (!flushQueued) {
        flushQueued = true;
        queueMicrotask(flushDirty);
      }
    }
  }

  /** Appends to the bytes waiting for the write in progress (see `#held`). */
  #hold(bytes: Uint8Array): void {
    const need = this.#heldLen + bytes.length;
    if (need > this.#held.length) {
      const next = new Uint8Array(Math.max(need, this.#held.length * 2, 1024));
      next.set(this.#held.subarray(0, this.#heldLen));
      this.#held = next;
    }
    this.#held.set(bytes, this.#heldLen);
    this.#heldLen = need;
    this.#pendingBytes += bytes.length;
  }

  /** Resolves when everything queued so far is written (or the write failed). */
  drained(): Promise<void> {
    if (this.bufferedBytes === 0 || this.#failed) return Promise.resolve();
    return new Promise((resolve) => (this.#idle ??= []).push(resolve));
  }

  /** Starts writing what was queued in this turn (called by the shared flush). */
  flush(): void {
    this.#scheduled = false;
    this.#startWrite();
  }

  // One callback per outbox for both outcomes of a write (a write resolves to a byte count, or
  // rejects with an error): the write path allocates no closure per write. A bound method rather
  // than an arrow-function field, which would need a context object of its own for `this`.
  readonly #onWriteDone: (r: unknown) => void;

  #writeDone(r: unknown): void {
    if (typeof r === "number") this.#written(r);
    else this.#fail(r);
  }

  /** Takes everything queued as one buffer and writes it (one write per turn, coalesced). */
  #startWrite(): void {
    const first = this.#first;
    if (this.#writing || this.#failed || first === undefined) return;
    const more = this.#more;
    // Nothing is held while no write runs, so every pending byte is in `first` and `more`.
    const size = this.#pendingBytes;
    this.#first = this.#more = undefined;
    let buf: Uint8Array;
    if (more === undefined) buf = first;
    else {
      buf = new Uint8Array(size);
      buf.set(first, 0);
      let off = first.length;
      for (let i = 0; i < more.length; i++) {
        buf.set(more[i], off);
        off += more[i].length;
      }
    }
    this.#begin(buf);
  }

  /** Writes `buf`, all of what is pending (coalesced packets, or the held backlog). */
  #begin(buf: Uint8Array): void {
    this.#writing = true;
    this.#buf = buf;
    this.#off = 0;
    this.#inWriteBytes = buf.length;
    this.#pendingBytes -= buf.length;
    this.#send(buf);
  }

  /** Hands bytes to the connection; a transport that throws instead of rejecting fails the same way. */
  #send(bytes: Uint8Array): void {
    let pending: Promise<number>;
    try {
      pending = this.#conn.write(bytes);
    } catch (err) {
      queueMicrotask(() => this.#onWriteDone(err));
      return;
    }
    pending.then(this.#onWriteDone, this.#onWriteDone);
  }

  #written(n: number): void {
    this.#off += n;
    const buf = this.#buf;
    if (this.#off < buf.length) {
      // conn.write may write only part of the buffer (deno-notes §3).
      this.#inWriteBytes = buf.length - this.#off;
      this.#send(buf.subarray(this.#off));
      return;
    }
    this.#writing = false;
    this.#inWriteBytes = 0;
    this.#buf = EMPTY;
    // What queued behind this write goes next, before the owner hears of the progress: anything
    // it writes from that callback is newer. (Nothing waits in `#first` while a write runs.)
    if (this.#heldLen > 0) {
      const held = this.#held.subarray(0, this.#heldLen);
      this.#held = EMPTY;
      this.#heldLen = 0;
      this.#begin(held);
    }
    this.#owner.outboxDrained(this.#pendingBytes);
    if (this.#writing) return;
    if (this.#first !== undefined) this.#startWrite();
    else this.#wakeIdle();
  }

  #fail(err: unknown): void {
    this.#failed = true;
    this.#writing = false;
    this.#first = this.#more = undefined;
    this.#pendingBytes = 0;
    this.#inWriteBytes = 0;
    this.#buf = EMPTY;
    this.#held = EMPTY;
    this.#heldLen = 0;
    this.#owner.outboxFailed(err);
    this.#wakeIdle();
  }

  #wakeIdle(): void {
    const waiters = this.#idle;
    if (waiters === undefined) return;
    this.#idle = undefined;
    for (const w of waiters) w();
  }
}
