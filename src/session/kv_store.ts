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
 * the event loop (and while the previous commit runs) goes into one commit,
 * split to respect KV limits (1,000 mutations, 800 KiB per commit).
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
import { salvageKvFile, type SalvageReport } from "./kv_salvage.ts";
import type { SessionRecord, SessionStore, StoredState } from "./store.ts";

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
  /** packet id → message id, and the embedded message when it lives in the in-flight record. */
  inflight: Map<number, { m: number; msg?: MessageRecord }>;
  qos2: Set<number>;
}

/** What {@link KvSessionStore.open} reports about damaged data it set aside. */
export interface OpenReport {
  quarantined: string[];
  danglingReferences: number;
  /** Set when the file was damaged: where it was moved and what could be copied out of it. */
  setAside?: { movedTo: string; reason: string } & SalvageReport;
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
}

interface Waiter {
  gen: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** A pending write; `fresh` when the key is known to be absent from the committed store. */
type Mutation = { key: Deno.KvKey; value: Uint8Array | null; fresh: boolean };

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
  #waiters: Waiter[] = [];
  readonly #sessions = new Map<string, SessionKeys>();
  readonly #refs = new Map<number, number>();
  readonly #parts = new Map<number, number>();
  readonly #pendingMsgDeletes = new Set<number>();
  /** Message ids whose shared `["m", id]` record exists (or is being written). */
  readonly #written = new Set<number>();
  readonly #commitWindowMs: number;
  /** When the first write of the current batch was issued. */
  #batchStartedAt = 0;
  /** Commits made, mutations written, and writes cancelled before reaching the disk. */
  readonly stats = { commits: 0, mutations: 0, cancelled: 0 };
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
    commitWindowMs: number,
  ) {
    this.path = path;
    this.#commitWindowMs = commitWindowMs;
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
    const store = new KvSessionStore(path, kv, logger, lockPath, options.commitWindowMs ?? 0);
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
    return store;
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

  flush(): Promise<void> {
    if (!this.dirty) return Promise.resolve();
    // Pending writes go out in the next commit; otherwise wait for the one running.
    const pending = this.#batch.size > 0 || this.#pendingMsgDeletes.size > 0;
    const target = pending ? this.#batchGen + 1 : this.#batchGen;
    if (target <= this.#committedGen) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#waiters.push({ gen: target, resolve, reject });
      this.#schedule();
    });
  }

  #put(key: Deno.KvKey, value: Uint8Array | null, fresh = false): void {
    if (this.#closed) return;
    const id = keyId(key);
    const prev = this.#batch.get(id);
    if (value === null && prev?.fresh) {
      // Written and deleted before any commit (e.g. a message acknowledged by its subscriber within
      // the commit window): the store never needs to see it.
      this.#batch.delete(id);
      this.stats.cancelled++;
      return;
    }
    if (this.#batch.size === 0) this.#batchStartedAt = Date.now();
    // Fresh only if nothing older for this key waits in the batch (a pending delete means the key
    // may still exist in the committed store).
    this.#batch.set(id, { key, value, fresh: prev === undefined ? fresh : prev.fresh });
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled || this.#committing) return;
    this.#scheduled = true;
    const run = () => {
      this.#scheduled = false;
      this.#commitLoop();
    };
    // Everything issued in this turn (or within the commit window) joins the same commit.
    if (this.#commitWindowMs > 0) setTimeout(run, this.#commitWindowMs);
    else queueMicrotask(run);
  }

  async #commitLoop(): Promise<void> {
    if (this.#committing) return;
    this.#committing = true;
    try {
      while (this.#batch.size > 0 || this.#pendingMsgDeletes.size > 0) {
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
      }
    } finally {
      this.#committing = false;
    }
    // Nothing is pending now: every waiter is satisfied, including those whose writes were all
    // cancelled within the batch (their generation never had to be committed).
    if (this.#batch.size === 0) this.#settle(Number.MAX_SAFE_INTEGER, undefined);
  }

  #settle(gen: number, err: unknown): void {
    const remaining: Waiter[] = [];
    for (const w of this.#waiters) {
      if (w.gen <= gen) {
        if (err === undefined) w.resolve();
        else w.reject(err);
      } else remaining.push(w);
    }
    this.#waiters = remaining;
  }

  async #commit(batch: Mutation[]): Promise<void> {
    let op = this.#kv.atomic();
    let count = 0;
    let bytes = 0;
    for (const m of batch) {
      const size = (m.value?.length ?? 0) + 64;
      if (count >= MAX_MUTATIONS || bytes + size > MAX_COMMIT_BYTES) {
        const res = await op.commit();
        if (!res.ok) throw new Error("data store commit was rejected");
        op = this.#kv.atomic();
        count = 0;
        bytes = 0;
      }
      this.stats.mutations++;
      if (m.value === null) op.delete(m.key);
      else op.set(m.key, m.value);
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
    this.#closed = true;
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
    this.#put(["sub", s.cid, f], encodeRecord(entry));
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
    const record: DeliveryRecord = {
      m,
      msg,
      qos: d.qos,
      retain: d.retain,
      ids: d.subscriptionIds,
      share: d.shareKey,
    };
    this.#put(["q", s.cid, seq], encodeRecord(record), true);
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
    const record: InflightRecord = {
      m: e.message.id,
      msg: ref.msg,
      qos: e.qos,
      retain: e.retain,
      ids: e.subscriptionIds,
      share: e.shareKey,
      packetId: e.packetId,
      state: e.state,
      sentAt: e.sentAt,
    };
    this.#put(["i", s.cid, e.packetId], encodeRecord(record), isNew);
  }

  deleteInflight(clientId: string, packetId: number): void {
    const s = this.#sessions.get(clientId);
    const ref = s?.inflight.get(packetId);
    if (!s || ref === undefined) return;
    s.inflight.delete(packetId);
    this.#put(["i", s.cid, packetId], null);
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
    const read = async <T>(prefix: Deno.KvKey, each: (key: Deno.KvKey, value: T) => void) => {
      for await (const entry of this.#kv.list({ prefix }, { batchSize: 1000 })) {
        let value: T;
        try {
          value = decodeRecord<T>(entry.value);
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
    });
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
    });
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
