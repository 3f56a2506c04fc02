/**
 * Received chunks waiting for `read()`: the byte-stream side of transports
 * that deliver data as events (node:tls sockets, WebSocket messages).
 *
 * @module
 */

/** A FIFO of received chunks read out as a byte stream into the caller's buffer. */
export class ChunkQueue {
  #chunks: Uint8Array[] = [];
  #chunkOffset = 0;
  #buffered = 0;
  #ended = false;
  #error?: Error;
  #wake?: () => void;

  /** Bytes received and not yet read. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Whether the stream has ended (or failed). */
  get ended(): boolean {
    return this.#ended;
  }

  /** Adds a received chunk (kept by reference). */
  push(chunk: Uint8Array): void {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    this.#notify();
  }

  /** Marks the end of the stream: reads return null once the queue is empty. */
  end(): void {
    this.#ended = true;
    this.#notify();
  }

  /** Fails the stream: the next read that finds no data throws `err` (the first one given). */
  fail(err: Error): void {
    this.#error ??= err;
    this.#notify();
  }

  /** Drops everything unread. */
  clear(): void {
    this.#chunks = [];
    this.#chunkOffset = 0;
    this.#buffered = 0;
  }

  /** Copies queued bytes into `buf`, waiting for some; null at the end of the stream. */
  async read(buf: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    let n = 0;
    while (n < buf.length && this.#chunks.length > 0) {
      const chunk = this.#chunks[0];
      const take = Math.min(buf.length - n, chunk.length - this.#chunkOffset);
      buf.set(chunk.subarray(this.#chunkOffset, this.#chunkOffset + take), n);
      n += take;
      this.#chunkOffset += take;
      if (this.#chunkOffset === chunk.length) {
        this.#chunks.shift();
        this.#chunkOffset = 0;
      }
    }
    this.#buffered -= n;
    return n;
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}
