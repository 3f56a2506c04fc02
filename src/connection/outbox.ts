import type { ByteConn } from "./transport.ts";

const EMPTY = new Uint8Array(0);

/**
 * Coalesced, bounded writes for one connection: packets queued during one
 * turn of the event loop go out in a single write, and the queued byte count
 * is visible so the broker can apply its slow-reader policy.
 */
export class Outbox {
  readonly #conn: ByteConn;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #inWriteBytes = 0;
  #scheduled = false;
  #writing = false;
  #failed = false;
  #idle: (() => void)[] = [];
  /** Called once when a write fails (peer gone). */
  onError?: (err: unknown) => void;
  /** Called after a write completes, with the bytes still queued. */
  onDrain?: (queuedBytes: number) => void;

  constructor(conn: ByteConn) {
    this.#conn = conn;
  }

  /** Bytes accepted and not yet written to the socket. */
  get bufferedBytes(): number {
    return this.#pendingBytes + this.#inWriteBytes;
  }

  /** Queues bytes; the caller must not change them afterwards. */
  write(bytes: Uint8Array): void {
    if (this.#failed) return;
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.length;
    if (!this.#scheduled && !this.#writing) {
      this.#scheduled = true;
      queueMicrotask(this.#flushTask);
    }
  }

  /** Resolves when everything queued so far is written (or the write failed). */
  drained(): Promise<void> {
    if (this.bufferedBytes === 0 || this.#failed) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  // Callbacks made once per outbox: the write path allocates no closure per write.
  readonly #flushTask = (): void => {
    this.#scheduled = false;
    this.#startWrite();
  };
  readonly #onWritten = (n: number): void => this.#written(n);
  readonly #onWriteError = (err: unknown): void => this.#fail(err);
  #buf: Uint8Array = new Uint8Array(0);
  #off = 0;

  /** Takes everything queued as one buffer and writes it (one write per turn, coalesced). */
  #startWrite(): void {
    if (this.#writing || this.#failed || this.#pending.length === 0) return;
    const chunks = this.#pending;
    const size = this.#pendingBytes;
    this.#pending = [];
    this.#pendingBytes = 0;
    let buf: Uint8Array;
    if (chunks.length === 1) buf = chunks[0];
    else {
      buf = new Uint8Array(size);
      let off = 0;
      for (const c of chunks) {
        buf.set(c, off);
        off += c.length;
      }
    }
    this.#writing = true;
    this.#buf = buf;
    this.#off = 0;
    this.#inWriteBytes = size;
    this.#conn.write(buf).then(this.#onWritten, this.#onWriteError);
  }

  #written(n: number): void {
    this.#off += n;
    const buf = this.#buf;
    if (this.#off < buf.length) {
      // conn.write may write only part of the buffer (deno-notes §3).
      this.#inWriteBytes = buf.length - this.#off;
      this.#conn.write(buf.subarray(this.#off)).then(this.#onWritten, this.#onWriteError);
      return;
    }
    this.#writing = false;
    this.#inWriteBytes = 0;
    this.#buf = EMPTY;
    this.onDrain?.(this.#pendingBytes);
    if (this.#pending.length > 0) this.#startWrite();
    else this.#wakeIdle();
  }

  #fail(err: unknown): void {
    this.#failed = true;
    this.#writing = false;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#inWriteBytes = 0;
    this.#buf = EMPTY;
    this.onError?.(err);
    this.#wakeIdle();
  }

  #wakeIdle(): void {
    if (this.#idle.length === 0) return;
    const waiters = this.#idle;
    this.#idle = [];
    for (const w of waiters) w();
  }
}
