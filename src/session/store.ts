import type { Message, SubscriptionEntry } from "../routing/mod.ts";
import type { Delivery, InflightEntry, PendingWill } from "./session.ts";

/** The durable part of a session's identity. */
export interface SessionRecord {
  clientId: string;
  protocolVersion: number;
  expirySec: number;
  /** Epoch ms at which the session expires if it stays disconnected; absent while connected. */
  expiresAt?: number;
}

/**
 * The persisted part of a subscription entry: its fields without the routing pointer
 * ({@link SubscriptionEntry.owner}), which leads to live session and connection objects.
 */
export function subscriptionRecord(entry: SubscriptionEntry): SubscriptionEntry {
  const { owner: _owner, ...record } = entry;
  return record;
}

/** Everything a store holds, as loaded at start. */
export interface StoredState {
  sessions: {
    record: SessionRecord;
    subscriptions: SubscriptionEntry[];
    inflight: InflightEntry[];
    queue: Delivery[];
    inboundQos2: number[];
    will?: PendingWill & { dueAt?: number };
  }[];
  retained: Message[];
}

/**
 * Persistence seam for sessions and retained messages. Writes are issued
 * synchronously (so a turn's writes can be group-committed) and become durable
 * by the time the promise of {@link flush} resolves; the broker awaits it
 * before sending PUBACK, PUBREC or SUBACK. Only persistent sessions (expiry >
 * 0) and retained messages are written.
 */
export interface SessionStore {
  /** True while writes are issued and not yet durable. */
  readonly dirty: boolean;
  /** Resolves when every write issued so far is durable. */
  flush(): Promise<void>;
  /** Loads everything at start. */
  load(): Promise<StoredState>;
  /** Releases the store. */
  close(): Promise<void>;

  saveSession(record: SessionRecord): void;
  /** Deletes a session and everything under it. */
  deleteSession(clientId: string): void;
  saveSubscription(clientId: string, entry: SubscriptionEntry): void;
  deleteSubscription(clientId: string, rawFilter: string): void;
  /** Appends a delivery to a session's queue. */
  enqueue(clientId: string, delivery: Delivery): void;
  /** Removes a delivery from a session's queue (it went in flight, expired or was dropped). */
  dequeue(clientId: string, delivery: Delivery): void;
  /** Saves an in-flight entry (new, or a state change such as PUBREC → PUBREL pending). */
  saveInflight(clientId: string, entry: InflightEntry): void;
  /** Removes an in-flight entry once its exchange completes. */
  deleteInflight(clientId: string, packetId: number): void;
  saveInboundQos2(clientId: string, packetId: number, present: boolean): void;
  saveWill(clientId: string, will: (PendingWill & { dueAt?: number }) | undefined): void;
  saveRetained(message: Message): void;
  deleteRetained(topic: string): void;
}

interface MemorySession {
  record: SessionRecord;
  subscriptions: Map<string, SubscriptionEntry>;
  inflight: Map<number, InflightEntry>;
  queue: Delivery[];
  inboundQos2: Set<number>;
  will?: PendingWill & { dueAt?: number };
}

const RESOLVED = Promise.resolve();

/**
 * In-memory {@link SessionStore}: for `:memory:` and tests. Holds plain
 * records, so a broker restarted on the same instance resumes its sessions,
 * which exercises the same restore path as a durable store.
 */
export class MemorySessionStore implements SessionStore {
  /** Never dirty: writes are complete when issued. */
  get dirty(): boolean {
    return false;
  }
  readonly #sessions = new Map<string, MemorySession>();
  readonly #retained = new Map<string, Message>();

  flush(): Promise<void> {
    return RESOLVED;
  }

  load(): Promise<StoredState> {
    return Promise.resolve({
      sessions: [...this.#sessions.values()].map((s) => ({
        record: { ...s.record },
        subscriptions: [...s.subscriptions.values()].map((e) => ({ ...e })),
        inflight: [...s.inflight.values()].map((e) => ({ ...e })),
        queue: [...s.queue],
        inboundQos2: [...s.inboundQos2],
        will: s.will ? { ...s.will } : undefined,
      })),
      retained: [...this.#retained.values()],
    });
  }

  close(): Promise<void> {
    return RESOLVED;
  }

  #session(clientId: string): MemorySession | undefined {
    return this.#sessions.get(clientId);
  }

  saveSession(record: SessionRecord): void {
    const s = this.#sessions.get(record.clientId);
    if (s) s.record = { ...record };
    else {
      this.#sessions.set(record.clientId, {
        record: { ...record },
        subscriptions: new Map(),
        inflight: new Map(),
        queue: [],
        inboundQos2: new Set(),
      });
    }
  }
  deleteSession(clientId: string): void {
    this.#sessions.delete(clientId);
  }
  saveSubscription(clientId: string, entry: SubscriptionEntry): void {
    this.#session(clientId)?.subscriptions.set(entry.rawFilter, subscriptionRecord(entry));
  }
  deleteSubscription(clientId: string, rawFilter: string): void {
    this.#session(clientId)?.subscriptions.delete(rawFilter);
  }
  enqueue(clientId: string, delivery: Delivery): void {
    this.#session(clientId)?.queue.push(delivery);
  }
  saveInflight(clientId: string, entry: InflightEntry): void {
    const s = this.#session(clientId);
    if (!s) return;
    s.inflight.set(entry.packetId, { ...entry });
  }
  deleteInflight(clientId: string, packetId: number): void {
    this.#session(clientId)?.inflight.delete(packetId);
  }
  dequeue(clientId: string, delivery: Delivery): void {
    const s = this.#session(clientId);
    if (!s) return;
    // Deliveries leave in FIFO order: the match is at the front, so shift() is the common case.
    if (s.queue[0] === delivery) s.queue.shift();
    else {
      const i = s.queue.indexOf(delivery);
      if (i >= 0) s.queue.splice(i, 1);
    }
  }
  saveInboundQos2(clientId: string, packetId: number, present: boolean): void {
    const s = this.#session(clientId);
    if (!s) return;
    if (present) s.inboundQos2.add(packetId);
    else s.inboundQos2.delete(packetId);
  }
  saveWill(clientId: string, will: (PendingWill & { dueAt?: number }) | undefined): void {
    const s = this.#session(clientId);
    if (s) s.will = will ? { ...will } : undefined;
  }
  saveRetained(message: Message): void {
    this.#retained.set(message.topic, message);
  }
  deleteRetained(topic: string): void {
    this.#retained.delete(topic);
  }
}

const EMPTY_STATE: StoredState = { sessions: [], retained: [] };

/**
 * A store that keeps nothing: what `--data :memory:` uses. The broker's live
 * session objects are the only copy, so no write costs anything.
 */
export class NullSessionStore implements SessionStore {
  readonly dirty = false;
  flush(): Promise<void> {
    return RESOLVED;
  }
  load(): Promise<StoredState> {
    return Promise.resolve(EMPTY_STATE);
  }
  close(): Promise<void> {
    return RESOLVED;
  }
  saveSession(): void {}
  deleteSession(): void {}
  saveSubscription(): void {}
  deleteSubscription(): void {}
  enqueue(): void {}
  dequeue(): void {}
  saveInflight(): void {}
  deleteInflight(): void {}
  saveInboundQos2(): void {}
  saveWill(): void {}
  saveRetained(): void {}
  deleteRetained(): void {}
}
