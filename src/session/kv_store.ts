/**
 * Durable {@link SessionStore} on Deno KV.
 *
 * Key layout (schema 1; every value is a versioned, checksummed record,
 * see kv_records.ts):
 *
 * | key | value |
 * |---|---|
 * | `["schema"]` | schema version |
 * | `["s", cid]` | session record (client id, protocol, expiry, deadline) |
 * | `["w", cid]` | pending Will (with its due time) |
 * | `["sub", cid, filterKey]` | subscription entry (full filter inside) |
 * | `["q", cid, seq]` | queued delivery → message id |
 * | `["i", cid, packetId]` | in-flight delivery → message id, state |
 * | `["r", cid, packetId]` | inbound QoS 2 id awaiting PUBREL |
 * | `["m", id]` | message: topic, properties, expiry, payload or part count |
 * | `["mp", id, n]` | payload part n of a large message |
 * | `["t", topicKey]` | retained message → message id |
 * | `["quarantine", ...key]` | a record that failed its checksum or version, set aside |
 *
 * `cid`, `filterKey` and `topicKey` are the strings themselves, or a hash when long.
 * A message routed to many persistent sessions is stored once and reference-counted.
 *
 * Writes are buffered and group-committed: everything issued in one turn of
 * the event loop (and while the previous commit runs) goes into one commit.
 * For a local file, a commit is made durable by appending it to a write-ahead
 * journal (journal.ts: one write and one fdatasync); a checkpoint copies what
 * is still live into KV every `checkpointIntervalMs` or `journalMaxBytes` and
 * then deletes the journal segments it covered. Opening replays whatever
 * journal a crash left. KV commits are split to respect KV limits (1,000
 * mutations, 800 KiB per commit).
 *
 * @module
 */
import type { Logger } from "../observe/log.ts";
import { silentLogger } from "../observe/log.ts";
import type { Message, SubscriptionEntry } from "../routing/mod.ts";
import {
  decodeRecord,
  encodeRecord,
  joinPayload,
  keyPart,
  PAYLOAD_CHUNK,
  RecordError,
  SCHEMA_VERSION,
  splitPayload,
} from "./kv_records.ts";
import type { Delivery, InflightEntry, PendingWill } from "./session.ts";
import {
  decodeJournalSegment,
  encodeJournalFrame,
  Journal,
  listSegments,
  segmentPath,
} from "./journal.ts";
import { salvageKvFile, type SalvageReport } from "./kv_salvage.ts";
import {
  type SessionRecord,
  type SessionStore,
  type StoredState,
  subscriptionRecord,
} from "./store.ts";

const MAX_MUTATIONS = 900;
const MAX_COMMIT_BYTES = 700 * 1024;

interface MessageRecord {
  id: number;
  topic: string;
  qos: 0 | 1 | 2;
  retain: boolean;
  properties?: Message["properties"];
  expiresAt?: number;
  publisherId?: string;
  payload?: Uint8Array;
  parts?: number;
}

interface DeliveryRecord {
  m: number;
  /** The shared subscription that chose the session, if any. */
  share?: string;
  /** The message itself, when this record is its only reference (saves a key per message). */
  msg?: MessageRecord;
  qos: 0 | 1 | 2;
  retain: boolean;
  ids?: number[];
}

interface InflightRecord extends DeliveryRecord {
  packetId: number;
  state: "publish" | "pubrel";
  sentAt: number;
}

interface WillRecord extends PendingWill {
  clientId: string;
  dueAt?: number;
}

/** Per-session bookkeeping so deletes and refcounts need no reads. */
interface SessionKeys {
  cid: string;
  subs: Set<string>;
  queue: Map<Delivery, { seq: number; m: number }>;
  /**
   * packet id → message id, the embedded message when it lives in the in-flight record, and the
   * record's key and key id (built once: state changes and the delete reuse them).
   */
  inflight: Map<number, { m: number; msg?: MessageRecord; key?: Deno.KvKey; id?: string }>;
  qos2: Set<number>;
}

/** What {@link KvSessionStore.open} reports about damaged data it set aside. */
export interface OpenReport {
  quarantined: string[];
  danglingReferences: number;
  /** Set when the file was damaged: where it was moved and what could be copied out of it. */
  setAside?: { movedTo: string; reason: string } & SalvageReport;
  /** What was replayed from a journal left by a crash. */
  journal?: JournalReplayReport;
}

/** What opening the store replayed from journal segments into KV. */
export interface JournalReplayReport {
  segments: number;
  frames: number;
  /** Distinct keys written to KV after coalescing. */
  mutations: number;
  /** Where reading a segment stopped early (a torn last frame after a crash, or damage). */
  stopped: { segment: number; offset: number; reason: string; bytesLeft: number }[];
}

/** Options of {@link KvSessionStore.open}. */
export interface KvStoreOptions {
  logger?: Logger;
  /**
   * How long a batch of writes waits before its commit, in ms (0 = the same event-loop turn
   * only). A short window lets a subscriber's acknowledgement cancel a message's writes before
   * they reach the disk, at the cost of that much latency on durable acknowledgements.
   */
  commitWindowMs?: number;
  /**
   * Make commits durable through the write-ahead journal (default true for a local file; a
   * remote KV never uses one). Without it every commit is a KV commit.
   */
  journal?: boolean;
  /** How often journaled writes still live are copied into KV, in ms (default 1,000). */
  checkpointIntervalMs?: number;
  /**
   * Journal size that starts a checkpoint early (default 16 MiB). Commits wait for the running
   * checkpoint once the journal holds four times this, so it stays bounded when KV is slow.
   */
  journalMaxBytes?: number;
}

/** The promise every flush() waiting for the same commit shares (one per commit, not per call). */
interface Waiter {
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * A pending write; `fresh` when the key is known to be absent from the committed store. A delete
 * has `value` null and no `record`; a record written by the hot paths is encoded only when its
 * batch commits (`record` set, `value` null until then), so a write its delete cancels within the
 * batch costs no encoding.
 */
type Mutation = {
  key: Deno.KvKey;
  id: string;
  value: Uint8Array | null;
  record?: unknown;
  fresh: boolean;
};

/** Encodes a lazily written record in place; returns the value (null for a delete). */
function materialize(m: Mutation): Uint8Array | null {
  if (m.record !== undefined) {
    m.value = encodeRecord(m.record);
    m.record = undefined;
  }
  return m.value;
}

/** Durable session store on Deno KV with group commit. */
export class KvSessionStore implements SessionStore {
  readonly path: string;
  #kv: Deno.Kv;
  readonly #logger: Logger;
  readonly #lockPath?: string;
  #batch = new Map<string, Mutation>();
  #batchGen = 0;
  #committedGen = 0;
  #committing = false;
  #scheduled = false;
  /** Waiters by the commit generation they wait for (at most the running one and the next). */
  readonly #waiters = new Map<number, Waiter>();
  readonly #sessions = new Map<string, SessionKeys>();
  readonly #refs = new Map<number, number>();
  readonly #parts = new Map<number, number>();
  readonly #pendingMsgDeletes = new Set<number>();
  /** Message ids whose shared `["m", id]` record exists (or is being written). */
  readonly #written = new Set<number>();
  readonly #commitWindowMs: number;
  /** When the first write of the current batch was issued. */
  #batchStartedAt = 0;
  /**
   * Group commits made, KV mutations written, writes cancelled before reaching the disk (in a
   * batch or in the journal), checkpoints made and journal bytes appended.
   */
  readonly stats = { commits: 0, mutations: 0, cancelled: 0, checkpoints: 0, journalBytes: 0 };
  #journal?: Journal;
  /** Journaled writes not yet copied into KV, coalesced per key; `fresh` = absent from KV. */
  #overlay = new Map<string, Mutation>();
  #checkpointing?: Promise<void>;
  /** The latest run of the commit loop (close() waits for it). */
  #loopRun?: Promise<void>;
  #checkpointTimer?: ReturnType<typeof setTimeout>;
  #checkpointDue = false;
  #checkpointError?: unknown;
  #lastCheckpointAt = Date.now();
  readonly #checkpointIntervalMs: number;
  readonly #journalMaxBytes: number;
  readonly #retained = new Map<string, number>();
  #seq = 1;
  #closed = false;
  /** Damage found while loading. */
  readonly report: OpenReport = { quarantined: [], danglingReferences: 0 };

  private constructor(
    path: string,
    kv: Deno.Kv,
    logger: Logger,
    lockPath: string | undefined,
    options: KvStoreOptions,
  ) {
    this.path = path;
    this.#commitWindowMs = options.commitWindowMs ?? 0;
    this.#checkpointIntervalMs = options.checkpointIntervalMs ?? 1_000;
    this.#journalMaxBytes = options.journalMaxBytes ?? 16 * 1024 * 1024;
    this.#kv = kv;
    this.#logger = logger;
    this.#lockPath = lockPath;
  }

  /**
   * Opens (or creates) the store at `path`: a file path, or an http(s) KV
   * Connect URL. A second broker on the same file is refused through a lock
   * file; a file that cannot be opened is renamed aside and a fresh store started.
   */
  static async open(path: string, options: KvStoreOptions = {}): Promise<KvSessionStore> {
    const logger = options.logger ?? silentLogger;
    const remote = /^https?:\/\//.test(path);
    let lockPath: string | undefined;
    if (!remote) {
      const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : ".";
      if (dir) await Deno.mkdir(dir, { recursive: true });
      lockPath = path + ".lock";
      acquireLock(lockPath);
    }
    let kv: Deno.Kv;
    let damage: { movedTo: string; reason: string } | undefined;
    try {
      kv = await Deno.openKv(path);
    } catch (err) {
      if (remote) {
        releaseLock(lockPath);
        throw err;
      }
      // A damaged header or schema page: keep the file for inspection, start fresh, salvage.
      damage = { movedTo: await setAside(path), reason: (err as Error).message };
      try {
        kv = await Deno.openKv(path);
      } catch (err2) {
        releaseLock(lockPath);
        throw err2;
      }
    }
    const store = new KvSessionStore(path, kv, logger, lockPath, options);
    if (damage) await store.#salvageFrom(damage.movedTo, damage.reason);
    const schema = await kv.get<number>(["schema"]);
    if (schema.value === null) await kv.set(["schema"], SCHEMA_VERSION);
    else if (schema.value !== SCHEMA_VERSION) {
      kv.close();
      releaseLock(lockPath);
      throw new Error(
        `Cannot use data store ${path}: schema version ${schema.value}, expected ${SCHEMA_VERSION}`,
      );
    }
    if (!remote) {
      try {
        // A crash leaves journal segments behind: they hold acknowledged writes KV lacks.
        const last = await store.#replayJournal();
        if (options.journal !== false) store.#journal = await Journal.create(path, last + 1);
      } catch (err) {
        kv.close();
        releaseLock(lockPath);
        throw err;
      }
    }
    return store;
  }

  /** Applies every journal segment to KV (coalesced), then deletes them; returns the last number. */
  async #replayJournal(): Promise<number> {
    const segments = await listSegments(this.path);
    if (segments.length === 0) return 0;
    const report: JournalReplayReport = {
      segments: segments.length,
      frames: 0,
      mutations: 0,
      stopped: [],
    };
    const latest = new Map<string, Mutation>();
    for (const n of segments) {
      const read = decodeJournalSegment(await Deno.readFile(segmentPath(this.path, n)));
      for (const frame of read.frames) {
        report.frames++;
        for (const m of frame) {
          const id = keyId(m.key);
          latest.set(id, { key: m.key, id, value: m.value, fresh: false });
        }
      }
      if (read.stoppedAt) {
        report.stopped.push({ segment: n, ...read.stoppedAt });
        // Only the end of the newest segment can be torn by a crash; anywhere else it is damage.
        const log = n === segments[segments.length - 1] ? this.#logger.warn : this.#logger.error;
        log.call(this.#logger, "journal segment read stopped early", {
          path: segmentPath(this.path, n),
          ...read.stoppedAt,
        });
      }
    }
    report.mutations = latest.size;
    await this.#commitToKv([...latest.values()]);
    for (const n of segments) await Deno.remove(segmentPath(this.path, n));
    this.report.journal = report;
    this.#logger.info("journal replayed into the data store", {
      segments: report.segments,
      frames: report.frames,
      keys: report.mutations,
    });
    return segments[segments.length - 1];
  }

  /** Copies what can be read from a damaged file (set aside) into this fresh store. */
  async #salvageFrom(movedTo: string, reason: string): Promise<void> {
    const salvage = await salvageKvFile(movedTo, this.#kv);
    this.report.setAside = { movedTo, reason, ...salvage };
    this.#logger.error("data store was damaged: renamed aside and salvaged into a fresh store", {
      path: this.path,
      movedTo,
      reason,
      recordsSalvaged: salvage.copied,
      rowsSkipped: salvage.skipped,
      readStoppedBy: salvage.stoppedBy,
    });
  }

  get dirty(): boolean {
    return this.#batch.size > 0 || this.#committing || this.#pendingMsgDeletes.size > 0;
  }

  /** Writes acknowledged through the journal that KV does not hold yet (for tests and metrics). */
  get uncheckpointed(): number {
    return this.#overlay.size;
  }

  flush(): Promise<void> {
    if (!this.dirty) return Promise.resolve();
    // Pending writes go out in the next commit; otherwise wait for the one running.
    const pending = this.#batch.size > 0 || this.#pendingMsgDeletes.size > 0;
    const target = pending ? this.#batchGen + 1 : this.#batchGen;
    if (target <= this.#committedGen) return Promise.resolve();
    let waiter = this.#waiters.get(target);
    if (waiter === undefined) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      waiter = { promise, resolve, reject };
      this.#waiters.set(target, waiter);
      this.#schedule();
    }
    return waiter.promise;
  }

  #put(
    key: Deno.KvKey,
    value: Uint8Array | null,
    fresh = false,
    record?: unknown,
    id = keyId(key),
  ): void {
    if (this.#closed) return;
    const prev = this.#batch.get(id);
    if (value === null && record === undefined && prev?.fresh) {
      // Written and deleted before any commit (e.g. a message acknowledged by its subscriber within
      // the commit window): the store never needs to see it.
      this.#batch.delete(id);
      this.stats.cancelled++;
      return;
    }
    if (this.#batch.size === 0) this.#batchStartedAt = Date.now();
    // Fresh only if nothing older for this key waits in the batch (a pending delete means the key
    // may still exist in the committed store).
    this.#batch.set(id, { key, id, value, record, fresh: prev === undefined ? fresh : prev.fresh });
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled || this.#committing) return;
    this.#scheduled = true;
    const run = () => {
      this.#scheduled = false;
      this.#kick();
    };
    // Everything issued in this turn (or within the commit window) joins the same commit.
    if (this.#commitWindowMs > 0) setTimeout(run, this.#commitWindowMs);
    else queueMicrotask(run);
  }

  /** Runs the commit loop unless it is running; close() waits for the run it records. */
  #kick(): void {
    if (!this.#committing) this.#loopRun = this.#commitLoop();
  }

  async #commitLoop(): Promise<void> {
    if (this.#committing) return;
    this.#committing = true;
    try {
      while (
        this.#batch.size > 0 || this.#pendingMsgDeletes.size > 0 || this.#rotationDue()
      ) {
        if (this.#batch.size === 0 && this.#pendingMsgDeletes.size === 0) {
          await this.#rotateAndCheckpoint();
          continue;
        }
        // Under load commits run back to back; each batch still ages for the commit window, so
        // acknowledgements arriving meanwhile cancel writes instead of doubling them.
        const age = Date.now() - this.#batchStartedAt;
        if (this.#commitWindowMs > 0 && age < this.#commitWindowMs) {
          await new Promise((r) => setTimeout(r, this.#commitWindowMs - age));
        }
        for (const id of this.#pendingMsgDeletes) {
          if ((this.#refs.get(id) ?? 0) === 0) this.#deleteMessageKeys(id);
        }
        this.#pendingMsgDeletes.clear();
        const batch = [...this.#batch.values()];
        this.#batch = new Map();
        this.#batchStartedAt = Date.now();
        const gen = ++this.#batchGen;
        try {
          await this.#commit(batch);
          this.#committedGen = gen;
          this.#settle(gen, undefined);
        } catch (err) {
          // The failure reaches every waiter of this commit (their acks become refusals).
          this.#committedGen = gen;
          this.#logger.error("data store commit failed", { error: err, mutations: batch.length });
          this.#settle(gen, err);
        }
        if (this.#rotationDue()) await this.#rotateAndCheckpoint();
      }
    } finally {
      this.#committing = false;
    }
    // Nothing is pending now: every waiter is satisfied, including those whose writes were all
    // cancelled within the batch (their generation never had to be committed).
    if (this.#batch.size === 0) this.#settle(Number.MAX_SAFE_INTEGER, undefined);
  }

  #settle(gen: number, err: unknown): void {
    for (const [target, w] of this.#waiters) {
      if (target > gen) continue;
      this.#waiters.delete(target);
      if (err === undefined) w.resolve();
      else w.reject(err);
    }
  }

  /** Makes a batch durable: through the journal when there is one, else straight into KV. */
  async #commit(batch: Mutation[]): Promise<void> {
    const journal = this.#journal;
    if (!journal) return this.#commitToKv(batch);
    if (journal.liveBytes > 4 * this.#journalMaxBytes) {
      // KV is not keeping up (or failing): hold commits rather than grow the journal unbounded.
      await this.#checkpointing;
      if (journal.liveBytes > 4 * this.#journalMaxBytes && this.#checkpointError !== undefined) {
        throw this.#checkpointError;
      }
    }
    // Records are encoded straight into the frame; the overlay keeps them unencoded, so only the
    // few still live at a checkpoint are ever encoded again.
    const frame = encodeJournalFrame(batch);
    await journal.append(frame);
    this.stats.commits++;
    this.stats.journalBytes += frame.length;
    const overlay = this.#overlay;
    for (const m of batch) {
      const id = m.id;
      const prev = overlay.get(id);
      const fresh = prev === undefined ? m.fresh : prev.fresh;
      if (m.value === null && m.record === undefined && fresh) {
        // Never reached KV: a delete needs no checkpoint either.
        if (prev !== undefined) {
          overlay.delete(id);
          this.stats.cancelled++;
        }
        continue;
      }
      m.fresh = fresh; // the batch is done with m: the overlay keeps the same object
      overlay.set(id, m);
    }
    this.#armCheckpointTimer();
  }

  /** Makes sure journaled writes reach KV within the interval even if no commit follows. */
  #armCheckpointTimer(): void {
    if (this.#overlay.size === 0 || this.#checkpointTimer !== undefined || this.#closed) return;
    this.#checkpointTimer = setTimeout(() => {
      this.#checkpointTimer = undefined;
      this.#checkpointDue = true;
      if (!this.#scheduled) this.#kick();
    }, this.#checkpointIntervalMs);
  }

  /** True when the journal should be rotated and its live writes checkpointed into KV. */
  #rotationDue(): boolean {
    const journal = this.#journal;
    if (!journal || this.#checkpointing || this.#overlay.size === 0) return false;
    return this.#checkpointDue ||
      journal.liveBytes >= this.#journalMaxBytes ||
      Date.now() - this.#lastCheckpointAt >= this.#checkpointIntervalMs;
  }

  /**
   * Starts a new segment and copies the writes of the closed ones into KV in the background;
   * the closed segments are deleted once KV holds them. Runs inside the commit loop, so no
   * append races the rotation.
   */
  async #rotateAndCheckpoint(): Promise<void> {
    const journal = this.#journal!;
    this.#checkpointDue = false;
    this.#lastCheckpointAt = Date.now();
    let closed: number;
    try {
      closed = await journal.rotate();
    } catch (err) {
      // Appends go on in the current segment; the next interval tries again.
      this.#logger.error("journal rotation failed", { error: err });
      this.#armCheckpointTimer();
      return;
    }
    const snapshot = this.#overlay;
    this.#overlay = new Map();
    this.#checkpointing = this.#checkpoint(journal, snapshot, closed).finally(() => {
      this.#checkpointing = undefined;
      this.#lastCheckpointAt = Date.now();
      this.#armCheckpointTimer();
    });
  }

  async #checkpoint(journal: Journal, snapshot: Map<string, Mutation>, through: number) {
    try {
      await this.#commitToKv([...snapshot.values()]);
      this.stats.checkpoints++;
      this.#checkpointError = undefined;
      await journal.removeThrough(through);
    } catch (err) {
      // The segments stay (a restart replays them) and the writes go into the next checkpoint,
      // under anything newer for the same key.
      this.#checkpointError = err;
      this.#logger.error("data store checkpoint failed; the journal keeps the writes", {
        error: err,
        keys: snapshot.size,
      });
      for (const [id, m] of snapshot) {
        const newer = this.#overlay.get(id);
        if (newer === undefined) this.#overlay.set(id, m);
        else newer.fresh = false; // KV may hold this key's older value now
      }
    }
  }

  /** Writes a batch into KV, split at KV's limits. */
  async #commitToKv(batch: Mutation[]): Promise<void> {
    let op = this.#kv.atomic();
    let count = 0;
    let bytes = 0;
    for (const m of batch) {
      const value = materialize(m);
      const size = (value?.length ?? 0) + 64;
      if (count >= MAX_MUTATIONS || bytes + size > MAX_COMMIT_BYTES) {
        const res = await op.commit();
        if (!res.ok) throw new Error("data store commit was rejected");
        op = this.#kv.atomic();
        count = 0;
        bytes = 0;
      }
      this.stats.mutations++;
      if (value === null) op.delete(m.key);
      else op.set(m.key, value);
      count++;
      bytes += size;
    }
    this.stats.commits++;
    if (count > 0) {
      const res = await op.commit();
      if (!res.ok) throw new Error("data store commit was rejected");
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.dirty) await this.flush().catch(() => {});
    while (this.#committing) await this.#loopRun;
    this.#closed = true;
    clearTimeout(this.#checkpointTimer);
    this.#checkpointTimer = undefined;
    const journal = this.#journal;
    let clean = true;
    if (journal) {
      await this.#checkpointing;
      if (this.#overlay.size > 0) {
        // The last checkpoint: everything into KV, so a clean shutdown leaves no journal.
        try {
          await this.#commitToKv([...this.#overlay.values()]);
          this.#overlay.clear();
        } catch (err) {
          clean = false;
          this.#logger.error("final checkpoint failed; the journal is kept for the next start", {
            error: err,
          });
        }
      }
      await journal.close(clean).catch((err) =>
        this.#logger.error("closing the journal failed", { error: err })
      );
    }
    this.#kv.close();
    releaseLock(this.#lockPath);
  }

  /**
   * Stops the store as a crash would (for tests): nothing more is committed or checkpointed,
   * the journal stays on disk for the next open to replay.
   */
  async abandon(): Promise<void> {
    if (this.#closed) return;
    while (this.#committing) await this.#loopRun;
    this.#closed = true;
    clearTimeout(this.#checkpointTimer);
    this.#checkpointTimer = undefined;
    await this.#checkpointing;
    await this.#journal?.close(false);
    this.#kv.close();
    releaseLock(this.#lockPath);
  }

  // ---------------------------------------------------------------- messages

  /**
   * Takes a reference to a message. Returns the record to embed in the referencing record when
   * the message can live there (its only reference, one value's worth of payload); otherwise makes
   * sure the shared `["m", id]` record exists and returns undefined.
   */
  #ref(message: Message): MessageRecord | undefined {
    const id = message.id;
    const n = this.#refs.get(id) ?? 0;
    this.#refs.set(id, n + 1);
    this.#pendingMsgDeletes.delete(id);
    if (this.#written.has(id)) return undefined;
    if (n === 0 && message.payload.length <= PAYLOAD_CHUNK) return messageRecord(message);
    this.#writeMessage(message);
    return undefined;
  }

  #unref(id: number): void {
    const n = (this.#refs.get(id) ?? 0) - 1;
    if (n > 0) {
      this.#refs.set(id, n);
      return;
    }
    this.#refs.delete(id);
    if (!this.#written.has(id)) return; // it lived inline in the record being deleted
    // Deleted at commit time unless something references it again in the same turn.
    this.#pendingMsgDeletes.add(id);
    this.#schedule();
  }

  #writeMessage(m: Message): void {
    this.#written.add(m.id);
    const parts = splitPayload(m.payload);
    const record = messageRecord(m);
    if (parts.length > 1) {
      delete record.payload;
      record.parts = parts.length;
      this.#parts.set(m.id, parts.length);
      for (let i = 0; i < parts.length; i++) {
        this.#put(["mp", m.id, i], encodeRecord(parts[i]), true);
      }
    }
    this.#put(["m", m.id], encodeRecord(record), true);
  }

  #deleteMessageKeys(id: number): void {
    this.#written.delete(id);
    const parts = this.#parts.get(id);
    if (parts !== undefined) {
      for (let i = 0; i < parts; i++) this.#put(["mp", id, i], null);
      this.#parts.delete(id);
    }
    this.#put(["m", id], null);
  }

  // ---------------------------------------------------------------- sessions

  #keys(clientId: string): SessionKeys {
    let s = this.#sessions.get(clientId);
    if (!s) {
      s = {
        cid: keyPart(clientId),
        subs: new Set(),
        queue: new Map(),
        inflight: new Map(),
        qos2: new Set(),
      };
      this.#sessions.set(clientId, s);
    }
    return s;
  }

  saveSession(record: SessionRecord): void {
    const s = this.#keys(record.clientId);
    this.#put(["s", s.cid], encodeRecord(record));
  }

  deleteSession(clientId: string): void {
    const s = this.#sessions.get(clientId);
    if (!s) return;
    this.#sessions.delete(clientId);
    this.#put(["s", s.cid], null);
    this.#put(["w", s.cid], null);
    for (const f of s.subs) this.#put(["sub", s.cid, f], null);
    for (const { seq, m } of s.queue.values()) {
      this.#put(["q", s.cid, seq], null);
      this.#unref(m);
    }
    for (const [packetId, { m }] of s.inflight) {
      this.#put(["i", s.cid, packetId], null);
      this.#unref(m);
    }
    for (const id of s.qos2) this.#put(["r", s.cid, id], null);
  }

  saveSubscription(clientId: string, entry: SubscriptionEntry): void {
    const s = this.#keys(clientId);
    const f = keyPart(entry.rawFilter);
    s.subs.add(f);
    this.#put(["sub", s.cid, f], encodeRecord(subscriptionRecord(entry)));
  }

  deleteSubscription(clientId: string, rawFilter: string): void {
    const s = this.#keys(clientId);
    const f = keyPart(rawFilter);
    s.subs.delete(f);
    this.#put(["sub", s.cid, f], null);
  }

  enqueue(clientId: string, d: Delivery): void {
    const s = this.#keys(clientId);
    const seq = this.#seq++;
    const m = d.message.id;
    const msg = this.#ref(d.message);
    s.queue.set(d, { seq, m });
    const record = deliveryTuple(m, msg, d.qos, d.retain, d.subscriptionIds, d.shareKey);
    this.#put(["q", s.cid, seq], null, true, record);
  }

  dequeue(clientId: string, d: Delivery): void {
    const s = this.#sessions.get(clientId);
    const entry = s?.queue.get(d);
    if (!s || !entry) return;
    s.queue.delete(d);
    this.#put(["q", s.cid, entry.seq], null);
    this.#unref(entry.m);
  }

  saveInflight(clientId: string, e: InflightEntry): void {
    const s = this.#keys(clientId);
    let ref = s.inflight.get(e.packetId);
    const isNew = ref === undefined;
    if (ref === undefined) {
      ref = { m: e.message.id, msg: this.#ref(e.message) };
      s.inflight.set(e.packetId, ref);
    }
    if (ref.key === undefined) {
      ref.key = ["i", s.cid, e.packetId];
      ref.id = keyId(ref.key);
    }
    const record = deliveryTuple(
      e.message.id,
      ref.msg,
      e.qos,
      e.retain,
      e.subscriptionIds,
      e.shareKey,
      e.packetId,
      e.state,
      e.sentAt,
    );
    this.#put(ref.key, null, isNew, record, ref.id);
  }

  deleteInflight(clientId: string, packetId: number): void {
    const s = this.#sessions.get(clientId);
    const ref = s?.inflight.get(packetId);
    if (!s || ref === undefined) return;
    s.inflight.delete(packetId);
    if (ref.key !== undefined) this.#put(ref.key, null, false, undefined, ref.id);
    else this.#put(["i", s.cid, packetId], null);
    this.#unref(ref.m);
  }

  saveInboundQos2(clientId: string, packetId: number, present: boolean): void {
    const s = this.#keys(clientId);
    if (present) {
      s.qos2.add(packetId);
      this.#put(["r", s.cid, packetId], encodeRecord(1));
    } else {
      s.qos2.delete(packetId);
      this.#put(["r", s.cid, packetId], null);
    }
  }

  saveWill(clientId: string, will: (PendingWill & { dueAt?: number }) | undefined): void {
    const s = this.#keys(clientId);
    if (will === undefined) this.#put(["w", s.cid], null);
    else this.#put(["w", s.cid], encodeRecord({ ...will, clientId } satisfies WillRecord));
  }

  saveRetained(message: Message): void {
    const t = keyPart(message.topic);
    const old = this.#retained.get(t);
    // Retained messages always use the shared record: queues often reference them too.
    if (this.#ref(message) !== undefined) this.#writeMessage(message);
    const m = message.id;
    this.#retained.set(t, m);
    this.#put(["t", t], encodeRecord({ m, topic: message.topic }));
    if (old !== undefined) this.#unref(old);
  }

  deleteRetained(topic: string): void {
    const t = keyPart(topic);
    const old = this.#retained.get(t);
    if (old === undefined) return;
    this.#retained.delete(t);
    this.#put(["t", t], null);
    this.#unref(old);
  }

  // ---------------------------------------------------------------- load

  /**
   * Loads everything. A file that cannot be read through (a damaged page: `list` throws) is
   * closed, renamed aside and salvaged into a fresh store, which is then loaded.
   */
  async load(): Promise<StoredState> {
    try {
      return await this.#load();
    } catch (err) {
      if (err instanceof RecordError || /^https?:\/\//.test(this.path)) throw err;
      this.#kv.close();
      const movedTo = await setAside(this.path);
      this.#kv = await Deno.openKv(this.path);
      await this.#kv.set(["schema"], SCHEMA_VERSION);
      this.#sessions.clear();
      this.#refs.clear();
      this.#parts.clear();
      this.#retained.clear();
      this.#written.clear();
      this.#pendingMsgDeletes.clear();
      this.#batch.clear();
      this.report.quarantined.length = 0;
      this.report.danglingReferences = 0;
      await this.#salvageFrom(movedTo, (err as Error).message);
      return await this.#load();
    }
  }

  async #load(): Promise<StoredState> {
    const messages = new Map<number, Message>();
    const payloadParts = new Map<number, Uint8Array[]>();
    const read = async <T>(
      prefix: Deno.KvKey,
      each: (key: Deno.KvKey, value: T) => void,
      convert?: (raw: unknown) => T,
    ) => {
      for await (const entry of this.#kv.list({ prefix }, { batchSize: 1000 })) {
        let value: T;
        try {
          value = convert ? convert(decodeRecord(entry.value)) : decodeRecord<T>(entry.value);
        } catch (err) {
          this.#quarantine(entry.key, entry.value, err);
          continue;
        }
        each(entry.key, value);
      }
    };
    await read<Uint8Array>(["mp"], (key, value) => {
      const id = key[1] as number;
      const list = payloadParts.get(id) ?? [];
      list[key[2] as number] = value;
      payloadParts.set(id, list);
    });
    await read<MessageRecord>(["m"], (key, r) => {
      let payload = r.payload;
      if (r.parts !== undefined) {
        const parts = payloadParts.get(r.id) ?? [];
        let complete = parts.length === r.parts;
        for (let i = 0; i < r.parts; i++) if (!parts[i]) complete = false;
        if (!complete) {
          this.#quarantine(
            key,
            undefined,
            new RecordError(`payload parts missing (${parts.length}/${r.parts})`),
          );
          return;
        }
        payload = joinPayload(parts);
        this.#parts.set(r.id, r.parts);
      }
      this.#written.add(r.id);
      messages.set(r.id, fromMessageRecord(r, payload));
    });
    /** The message a delivery record points to: embedded in it, or the shared record. */
    const messageOf = (r: DeliveryRecord): Message | undefined => {
      const shared = messages.get(r.m);
      if (shared || !r.msg) return shared;
      const inline = fromMessageRecord(r.msg, r.msg.payload);
      messages.set(r.m, inline);
      return inline;
    };
    const byCid = new Map<string, StoredState["sessions"][number]>();
    await read<SessionRecord>(["s"], (key, record) => {
      const cid = key[1] as string;
      byCid.set(cid, { record, subscriptions: [], inflight: [], queue: [], inboundQos2: [] });
      this.#sessions.set(record.clientId, {
        cid,
        subs: new Set(),
        queue: new Map(),
        inflight: new Map(),
        qos2: new Set(),
      });
    });
    const session = (key: Deno.KvKey) => {
      const s = byCid.get(key[1] as string);
      return s ? { s, keys: this.#sessions.get(s.record.clientId)! } : undefined;
    };
    await read<SubscriptionEntry>(["sub"], (key, entry) => {
      const found = session(key);
      if (!found) return this.#orphan(key);
      found.s.subscriptions.push(entry);
      found.keys.subs.add(key[2] as string);
    });
    const queued: {
      seq: number;
      d: Delivery;
      keys: SessionKeys;
      s: StoredState["sessions"][number];
    }[] = [];
    await read<DeliveryRecord>(["q"], (key, r) => {
      const found = session(key);
      const message = messageOf(r);
      if (!found || !message) return this.#orphan(key);
      const seq = key[2] as number;
      if (seq >= this.#seq) this.#seq = seq + 1;
      const d: Delivery = {
        message,
        qos: r.qos,
        retain: r.retain,
        subscriptionIds: r.ids,
        shareKey: r.share,
      };
      queued.push({ seq, d, keys: found.keys, s: found.s });
    }, toDeliveryRecord);
    queued.sort((a, b) => a.seq - b.seq);
    for (const q of queued) {
      q.s.queue.push(q.d);
      q.keys.queue.set(q.d, { seq: q.seq, m: q.d.message.id });
      this.#refs.set(q.d.message.id, (this.#refs.get(q.d.message.id) ?? 0) + 1);
    }
    await read<InflightRecord>(["i"], (key, r) => {
      const found = session(key);
      const message = messageOf(r);
      if (!found || !message) return this.#orphan(key);
      found.s.inflight.push({
        message,
        qos: r.qos,
        retain: r.retain,
        subscriptionIds: r.ids,
        shareKey: r.share,
        packetId: r.packetId,
        state: r.state,
        sentAt: r.sentAt,
      });
      found.keys.inflight.set(r.packetId, { m: r.m, msg: r.msg });
      this.#refs.set(r.m, (this.#refs.get(r.m) ?? 0) + 1);
    }, toInflightRecord);
    await read<number>(["r"], (key) => {
      const found = session(key);
      if (!found) return this.#orphan(key);
      found.s.inboundQos2.push(key[2] as number);
      found.keys.qos2.add(key[2] as number);
    });
    await read<WillRecord>(["w"], (key, w) => {
      const found = session(key);
      if (!found) return this.#orphan(key);
      found.s.will = { will: w.will, delaySec: w.delaySec, dueAt: w.dueAt, owner: w.owner };
    });
    const retained: Message[] = [];
    await read<{ m: number; topic: string }>(["t"], (key, r) => {
      const message = messages.get(r.m);
      if (!message) return this.#orphan(key);
      retained.push(message);
      this.#retained.set(key[1] as string, r.m);
      this.#refs.set(r.m, (this.#refs.get(r.m) ?? 0) + 1);
    });
    // Shared message records nothing references any more (a crash between two split commits).
    for (const id of this.#written) if (!this.#refs.has(id)) this.#pendingMsgDeletes.add(id);
    for (const [id] of payloadParts) if (!messages.has(id)) this.#put(["m", id], null);
    if (this.dirty) await this.flush();
    if (this.report.quarantined.length > 0 || this.report.danglingReferences > 0) {
      this.#logger.warn("data store damage set aside", {
        quarantined: this.report.quarantined.length,
        danglingReferences: this.report.danglingReferences,
      });
    }
    return { sessions: [...byCid.values()], retained };
  }

  #quarantine(key: Deno.KvKey, raw: unknown, err: unknown): void {
    this.report.quarantined.push(keyText(key));
    this.#logger.error("damaged record set aside", { key: keyText(key), error: err });
    if (raw instanceof Uint8Array) this.#put(["quarantine", ...key], raw);
    this.#put(key, null);
  }

  #orphan(key: Deno.KvKey): void {
    this.report.danglingReferences++;
    this.#put(key, null);
  }
}

/** A key as readable text, for logs and reports. */
function keyText(key: Deno.KvKey): string {
  return JSON.stringify(key, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
}

/** A string identity for a key (batch coalescing); cheaper than JSON on the hot path. */
function keyId(key: Deno.KvKey): string {
  let id = "";
  for (const part of key) {
    id += typeof part === "string" ? "s" : typeof part === "number" ? "n" : "x";
    id += String(part) + "\u0000";
  }
  return id;
}

/**
 * Queue and in-flight records are the hot records (one per message and subscriber) and are
 * written as tuples, without field names: half the bytes and a third of the encoding time of the
 * object form, which {@link toDeliveryRecord} still reads.
 *
 * `[m, msg, qos, retain, ids, share]` for a queued delivery, plus `packetId, state (0 publish,
 * 1 pubrel), sentAt` in flight; `msg` is `[id, topic, qos, retain, properties, expiresAt,
 * publisherId, payload]` or undefined.
 */
function deliveryTuple(
  m: number,
  msg: MessageRecord | undefined,
  qos: 0 | 1 | 2,
  retain: boolean,
  ids: number[] | undefined,
  share: string | undefined,
  packetId?: number,
  state?: "publish" | "pubrel",
  sentAt?: number,
): unknown[] {
  const inline = msg === undefined ? undefined : [
    msg.id,
    msg.topic,
    msg.qos,
    msg.retain,
    msg.properties,
    msg.expiresAt,
    msg.publisherId,
    msg.payload,
  ];
  if (packetId === undefined) return [m, inline, qos, retain, ids, share];
  return [m, inline, qos, retain, ids, share, packetId, state === "pubrel" ? 1 : 0, sentAt];
}

function isQos(v: unknown): v is 0 | 1 | 2 {
  return v === 0 || v === 1 || v === 2;
}

function optional<T>(v: unknown, check: (v: unknown) => boolean, what: string): T | undefined {
  if (v === undefined || check(v)) return v as T | undefined;
  throw new RecordError(`bad ${what}`);
}

const isNumber = (v: unknown) => typeof v === "number";
const isString = (v: unknown) => typeof v === "string";
const isNumberArray = (v: unknown) => Array.isArray(v) && v.every(isNumber);

/** A queued delivery record from either stored form; anything malformed throws RecordError. */
function toDeliveryRecord(raw: unknown): DeliveryRecord {
  if (!Array.isArray(raw)) return raw as DeliveryRecord; // object form (older records)
  const [m, inline, qos, retain, ids, share] = raw;
  if (typeof m !== "number" || !isQos(qos) || typeof retain !== "boolean") {
    throw new RecordError("malformed delivery record");
  }
  let msg: MessageRecord | undefined;
  if (inline !== undefined) {
    if (!Array.isArray(inline) || inline.length !== 8) throw new RecordError("bad inline message");
    const [id, topic, mq, mr, properties, expiresAt, publisherId, payload] = inline;
    if (
      typeof id !== "number" || typeof topic !== "string" || !isQos(mq) ||
      typeof mr !== "boolean" || !(payload instanceof Uint8Array) ||
      (properties !== undefined && (typeof properties !== "object" || properties === null))
    ) throw new RecordError("bad inline message");
    msg = {
      id,
      topic,
      qos: mq,
      retain: mr,
      properties: properties as Message["properties"],
      expiresAt: optional<number>(expiresAt, isNumber, "expiry"),
      publisherId: optional<string>(publisherId, isString, "publisher id"),
      payload,
    };
  }
  return {
    m,
    msg,
    qos,
    retain,
    ids: optional<number[]>(ids, isNumberArray, "subscription ids"),
    share: optional<string>(share, isString, "share"),
  };
}

/** An in-flight record from either stored form; anything malformed throws RecordError. */
function toInflightRecord(raw: unknown): InflightRecord {
  if (!Array.isArray(raw)) return raw as InflightRecord;
  const [, , , , , , packetId, state, sentAt] = raw;
  if (
    typeof packetId !== "number" || (state !== 0 && state !== 1) || typeof sentAt !== "number"
  ) throw new RecordError("malformed in-flight record");
  return { ...toDeliveryRecord(raw), packetId, state: state === 1 ? "pubrel" : "publish", sentAt };
}

/** A message from its stored form. */
function fromMessageRecord(r: MessageRecord, payload: Uint8Array | undefined): Message {
  return {
    id: r.id,
    topic: r.topic,
    payload: payload ?? new Uint8Array(0),
    qos: r.qos,
    retain: r.retain,
    properties: r.properties,
    expiresAt: r.expiresAt,
    publisherId: r.publisherId,
  };
}

/** The stored form of a message (payload inline; the caller splits large ones). */
function messageRecord(m: Message): MessageRecord {
  return {
    id: m.id,
    topic: m.topic,
    qos: m.qos,
    retain: m.retain,
    properties: m.properties,
    expiresAt: m.expiresAt,
    publisherId: m.publisherId,
    payload: m.payload,
  };
}

/** Lock files this process holds: a process-wide fact, so module-level by nature. */
const heldLocks = new Set<string>();

/** Renames a damaged store file and its companions aside (never deletes); returns the new path. */
async function setAside(path: string): Promise<string> {
  const aside = `${path}.damaged-${new Date().toISOString().replace(/[:.]/g, "-")}`;
  for (const suffix of ["", "-wal", "-shm"]) {
    try {
      await Deno.rename(path + suffix, aside + suffix);
    } catch { /* missing companion file */ }
  }
  return aside;
}

function acquireLock(lockPath: string): void {
  if (heldLocks.has(lockPath)) {
    throw new Error(
      `Cannot open data store: ${lockPath} is held by this process; ` +
        `another broker uses this data path (stop it or choose another --data)`,
    );
  }
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const f = Deno.openSync(lockPath, { write: true, createNew: true });
      f.writeSync(new TextEncoder().encode(`${Deno.pid}\n`));
      f.close();
      heldLocks.add(lockPath);
      return;
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      let pid = NaN;
      try {
        pid = parseInt(Deno.readTextFileSync(lockPath), 10);
      } catch { /* unreadable: treat as stale */ }
      if (Number.isFinite(pid) && pid !== Deno.pid && processAlive(pid)) {
        throw new Error(
          `Cannot open data store: ${lockPath} is held by running process ${pid}; ` +
            `another broker uses this data path (stop it or choose another --data)`,
        );
      }
      // Stale lock from a killed broker (kill -9), possibly with our own PID in a container: take it over.
      try {
        Deno.removeSync(lockPath);
      } catch { /* raced with another remover */ }
    }
  }
  throw new Error(`Cannot acquire lock ${lockPath}`);
}

function processAlive(pid: number): boolean {
  try {
    // A killed broker may linger as a zombie until its parent reaps it: that is not alive.
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

function releaseLock(lockPath: string | undefined): void {
  if (!lockPath) return;
  heldLocks.delete(lockPath);
  try {
    Deno.removeSync(lockPath);
  } catch { /* already gone */ }
}
