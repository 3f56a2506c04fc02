/**
 * A token bucket for rate limits: `rate` tokens per second, holding at most
 * `burst`. Pure arithmetic on caller-supplied time, no timers.
 */
export class TokenBucket {
  readonly rate: number;
  readonly burst: number;
  #tokens: number;
  #last: number;

  constructor(rate: number, burst: number, now: number) {
    this.rate = rate;
    this.burst = burst;
    this.#tokens = burst;
    this.#last = now;
  }

  #refill(now: number): void {
    if (now > this.#last) {
      this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#last) / 1000) * this.rate);
      this.#last = now;
    }
  }

  /** Takes one token if there is one; returns whether it did. */
  take(now: number): boolean {
    this.#refill(now);
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Whether the bucket is full again at `now` (its owner may forget it). */
  isFull(now: number): boolean {
    this.#refill(now);
    return this.#tokens >= this.burst;
  }
}
