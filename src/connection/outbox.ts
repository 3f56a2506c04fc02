import type { ByteConn } from "./transport.ts";

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
      queueMicrotask(() => this.#flush());
    }
  }

  /** Resolves when everything queued so far is written (or the write failed). */
  drained(): Promise<void> {
    if (this.bufferedBytes === 0 || this.#failed) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  async #flush(): Promise<void> {
    this.#scheduled = false;
    if (this.#writing) return;
    this.#writing = true;
    try {
      while (this.#pending.length > 0 && !this.#failed) {
        const chunks = this.#pending;
        const size = this.#pendingBytes;
        this.#pending = [];
        this.#pendingBytes = 0;
        this.#inWriteBytes = size;
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
        let off = 0;
        while (off < buf.length) {
          // conn.write may write only part of the buffer (deno-notes §3).
          off += await this.#conn.write(off === 0 ? buf : buf.subarray(off));
          this.#inWriteBytes = buf.length - off;
        }
        this.#inWriteBytes = 0;
        this.onDrain?.(this.#pendingBytes);
      }
    } catch (err) {
      this.#failed = true;
      this.#pending = [];
      this.#pendingBytes = 0;
      this.#inWriteBytes = 0;
      this.onError?.(err);
    } finally {
      this.#writing = false;
      if (this.bufferedBytes === 0 || this.#failed) {
        const waiters = this.#idle;
        this.#idle = [];
        for (const w of waiters) w();
      }
    }
  }
}
