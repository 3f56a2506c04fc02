/**
 * Acknowledgements of one connection that wait for a store commit (PUBACK and PUBREC of durable
 * messages), released in the order their PUBLISH packets arrived once each one's commit settled.
 *
 * Why: chaining every acknowledgement on the commit promise cost, per durable message, two
 * closures with their context, a derived promise, a `.catch` with another promise, and four
 * promise reactions to run: about 400 bytes of garbage and a tenth of the allocation of a durable
 * QoS 1 message. Here an acknowledgement is three numbers in an array, and a connection adds one
 * pair of callbacks per commit it waits for.
 *
 * Order: the Server sends PUBACK (and PUBREC) in the order the PUBLISH packets were received
 * [MQTT-4.6.0-2] [MQTT-4.6.0-3]. Commits settle in order, but a PUBLISH that wrote nothing may be
 * handed an earlier, still running commit than the one before it; its group then waits for the
 * groups ahead of it, so no acknowledgement leaves before the commit of an earlier one.
 *
 * @module
 */

/** Sends one acknowledgement: `failure` is undefined when its commit succeeded. */
export type ReleaseAck = (
  type: number,
  packetId: number,
  reasonCode: number,
  failure: unknown,
) => void;

/** Entries consumed at the front of a list before it is cut (see CommitAcks.#compact). */
const COMPACT_AFTER = 1024;

/** The acknowledgements added while the store handed out one commit promise. */
interface Group {
  readonly commit: Promise<void>;
  count: number;
  settled: boolean;
  failure: unknown;
}

/** One connection's acknowledgements waiting for store commits; see the module note. */
export class CommitAcks {
  readonly #release: ReleaseAck;
  readonly #onError: (err: unknown) => void;
  // type, packet id, reason code per acknowledgement, oldest at #head.
  #acks: number[] = [];
  #head = 0;
  #groups: Group[] = [];
  #groupHead = 0;

  /**
   * `release` sends an acknowledgement; should it throw, `onError` hears of it and the others
   * still go out (it runs in a promise callback, where a throw would be an unhandled rejection).
   */
  constructor(release: ReleaseAck, onError: (err: unknown) => void) {
    this.#release = release;
    this.#onError = onError;
  }

  /** Acknowledgements waiting. */
  get size(): number {
    return (this.#acks.length - this.#head) / 3;
  }

  /** Queues an acknowledgement to go out once `commit` (the store's flush promise) settles. */
  add(commit: Promise<void>, type: number, packetId: number, reasonCode: number): void {
    this.#acks.push(type, packetId, reasonCode);
    const groups = this.#groups;
    const last = groups.length > this.#groupHead ? groups[groups.length - 1] : undefined;
    if (last !== undefined && last.commit === commit && !last.settled) {
      last.count++;
      return;
    }
    const group: Group = { commit, count: 1, settled: false, failure: undefined };
    groups.push(group);
    commit.then(
      () => this.#settle(group, undefined),
      (err) => this.#settle(group, err ?? new Error("store commit failed")),
    );
  }

  #settle(group: Group, failure: unknown): void {
    group.settled = true;
    group.failure = failure;
    const groups = this.#groups;
    const acks = this.#acks;
    // Release every settled group at the front, in order; a settled group behind an unsettled
    // one waits for it.
    while (this.#groupHead < groups.length && groups[this.#groupHead].settled) {
      const g = groups[this.#groupHead++];
      const start = this.#head;
      this.#head += 3 * g.count; // moved on first: a throwing release cannot misalign the rest
      for (let at = start; at < this.#head; at += 3) {
        try {
          this.#release(acks[at], acks[at + 1], acks[at + 2], g.failure);
        } catch (err) {
          this.#onError(err);
        }
      }
    }
    this.#compact();
  }

  /**
   * Drops what was released from the front of both lists. Under steady load a connection always
   * has a commit pending, so the lists may never empty: the front is cut once it is half of a list.
   */
  #compact(): void {
    const groups = this.#groups;
    const acks = this.#acks;
    if (this.#groupHead === groups.length) {
      // Emptied in place: `length = 0` would give each array a new backing store every time.
      while (groups.length > 0) groups.pop();
      while (acks.length > 0) acks.pop();
      this.#groupHead = 0;
      this.#head = 0;
      return;
    }
    if (this.#groupHead >= COMPACT_AFTER && this.#groupHead * 2 >= groups.length) {
      groups.splice(0, this.#groupHead);
      this.#groupHead = 0;
    }
    if (this.#head >= 3 * COMPACT_AFTER && this.#head * 2 >= acks.length) {
      acks.splice(0, this.#head);
      this.#head = 0;
    }
  }
}
