import type { QoS, Will } from "../codec/mod.ts";
import type { Message, SubscriptionEntry } from "../routing/mod.ts";

/** A message waiting for delivery to one session, with that session's delivery options. */
export interface Delivery {
  message: Message;
  /** min(published QoS, granted QoS) [MQTT-3.8.4-8]. */
  qos: QoS;
  /** RETAIN flag to send. */
  retain: boolean;
  /** Subscription Identifiers of the matching subscriptions [MQTT-3.3.4-3]. */
  subscriptionIds?: number[];
  /** The shared subscription (`$share/group/filter`) that chose this session, if any. */
  shareKey?: string;
}

/** An outgoing QoS 1/2 message sent and not yet completely acknowledged. */
export interface InflightEntry extends Delivery {
  packetId: number;
  /** "publish": waiting for PUBACK/PUBREC; "pubrel": PUBREL sent, waiting for PUBCOMP. */
  state: "publish" | "pubrel";
  /** Epoch ms of the last send, for the overdue check. */
  sentAt: number;
  /** Whether the overdue acknowledgement was already reported. */
  overdueReported?: boolean;
}

/** Who set a Will: the identity its publication is authorized as, even after a restart. */
export interface WillOwner {
  username?: string;
  remoteAddress?: string;
  remotePort?: number;
  /** The verified client certificate of the connection that set it (mTLS). */
  certificate?: { commonName?: string; subjectAltNames?: string[] };
}

/** A Will held in a session until it is published or discarded. */
export interface PendingWill {
  will: Will;
  /** Will Delay Interval in seconds (v5; 0 for 3.1.1). */
  delaySec: number;
  /** The identity of the connection that set it (absent in records written before it existed). */
  owner?: WillOwner;
}

/** Bounded FIFO of deliveries; amortised O(1) at both ends. */
export class DeliveryQueue {
  #items: (Delivery | undefined)[] = [];
  #head = 0;
  bytes = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(d: Delivery): void {
    this.#items.push(d);
    this.bytes += d.message.payload.length;
  }

  shift(): Delivery | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const d = this.#items[this.#head];
    this.#items[this.#head++] = undefined;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    if (d) this.bytes -= d.message.payload.length;
    return d;
  }

  peek(): Delivery | undefined {
    return this.#items[this.#head];
  }

  /** Removes everything and returns it, oldest first. */
  drain(): Delivery[] {
    const out = this.#items.slice(this.#head) as Delivery[];
    this.#items = [];
    this.#head = 0;
    this.bytes = 0;
    return out;
  }

  *[Symbol.iterator](): IterableIterator<Delivery> {
    for (let i = this.#head; i < this.#items.length; i++) yield this.#items[i]!;
  }
}

/**
 * Session state (spec 4.1, checklist §8): existence, subscriptions, QoS 1/2
 * messages in flight, queued messages, inbound QoS 2 ids awaiting PUBREL,
 * the Will and the expiry deadline. Not session state: topic aliases, quotas,
 * Maximum Packet Size, Keep Alive (those live on the connection).
 */
export class Session {
  readonly clientId: string;
  protocolVersion: number;
  /** Session Expiry Interval in seconds (0xFFFFFFFF = never). */
  expirySec: number;
  // The collections are created on first use: an idle or QoS 0 client's session never needs most
  // of them, and each empty Map or Set costs about 180 bytes per connection. Most devices hold one
  // subscription: it sits in a field, and a Map (about 370 bytes with its table) holds two or more.
  #oneSubscription?: SubscriptionEntry;
  #subscriptions?: Map<string, SubscriptionEntry>;
  #inflight?: Map<number, InflightEntry>;
  #queue?: DeliveryQueue;
  #inboundQos2?: Set<number>;

  /** The subscription with this filter (as the client sent it), if any. */
  subscription(rawFilter: string): SubscriptionEntry | undefined {
    const one = this.#oneSubscription;
    if (one !== undefined) return one.rawFilter === rawFilter ? one : undefined;
    return this.#subscriptions?.get(rawFilter);
  }

  /** Adds a subscription, or replaces the one with the same filter [MQTT-3.8.4-3]. */
  setSubscription(entry: SubscriptionEntry): void {
    const one = this.#oneSubscription;
    const map = this.#subscriptions;
    if (map !== undefined) map.set(entry.rawFilter, entry);
    else if (one === undefined || one.rawFilter === entry.rawFilter) this.#oneSubscription = entry;
    else {
      this.#oneSubscription = undefined;
      this.#subscriptions = new Map([[one.rawFilter, one], [entry.rawFilter, entry]]);
    }
  }

  /** Removes the subscription with this filter; returns whether there was one. */
  deleteSubscription(rawFilter: string): boolean {
    const one = this.#oneSubscription;
    if (one !== undefined) {
      if (one.rawFilter !== rawFilter) return false;
      this.#oneSubscription = undefined;
      return true;
    }
    const map = this.#subscriptions;
    if (map === undefined || !map.delete(rawFilter)) return false;
    if (map.size === 0) this.#subscriptions = undefined;
    return true;
  }

  /** The subscriptions, in the order they were made (a copy: safe to change the session meanwhile). */
  subscriptionList(): SubscriptionEntry[] {
    if (this.#oneSubscription !== undefined) return [this.#oneSubscription];
    return this.#subscriptions === undefined ? [] : [...this.#subscriptions.values()];
  }

  /** Removes every subscription. */
  clearSubscriptions(): void {
    this.#oneSubscription = undefined;
    this.#subscriptions = undefined;
  }

  /** Outgoing in-flight messages by packet id, in send order. */
  get inflight(): Map<number, InflightEntry> {
    return this.#inflight ??= new Map();
  }

  /** Messages waiting for delivery, oldest first. */
  get queue(): DeliveryQueue {
    return this.#queue ??= new DeliveryQueue();
  }

  /** Inbound QoS 2 packet ids that got PUBREC and await PUBREL [MQTT-4.3.3-8]. */
  get inboundQos2(): Set<number> {
    return this.#inboundQos2 ??= new Set();
  }

  /** Number of subscriptions, without creating the map. */
  get subscriptionCount(): number {
    if (this.#oneSubscription !== undefined) return 1;
    return this.#subscriptions?.size ?? 0;
  }

  /** Number of in-flight messages, without creating the map. */
  get inflightCount(): number {
    return this.#inflight?.size ?? 0;
  }

  /** Number of queued messages, without creating the queue. */
  get queueLength(): number {
    return this.#queue?.length ?? 0;
  }
  will?: PendingWill;
  /** Epoch ms at which a delayed Will is due (while disconnected). */
  willDueAt?: number;
  /** Epoch ms at which the session expires (while disconnected). */
  expiresAt?: number;
  /** Whether the session is live on a connection. */
  connected = false;
  /**
   * The connection this session is attached to (the broker's own object, opaque here), so that
   * routing reaches it without a lookup by client id; undefined while disconnected.
   */
  connection: unknown = undefined;
  #nextPacketId = 1;

  constructor(clientId: string, protocolVersion: number, expirySec: number) {
    this.clientId = clientId;
    this.protocolVersion = protocolVersion;
    this.expirySec = expirySec;
  }

  /** Allocates a packet id not in use by an in-flight message [MQTT-2.2.1-4]; undefined if all 65,535 are. */
  allocatePacketId(): number | undefined {
    if (this.inflight.size >= 65_535) return undefined;
    for (;;) {
      const id = this.#nextPacketId;
      this.#nextPacketId = id === 65_535 ? 1 : id + 1;
      if (!this.inflight.has(id)) return id;
    }
  }
}
