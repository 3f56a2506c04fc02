import { ReasonCode } from "../codec/mod.ts";
import { type ConnListener, openListener } from "../connection/mod.ts";
import {
  type AclRules,
  type AuthHooks,
  type AuthState,
  type ClientInfo,
  FileAuth,
  isWeakerThan,
} from "../auth/mod.ts";
import { type Logger, silentLogger } from "../observe/log.ts";
import { Metrics } from "../observe/metrics.ts";
import { MetricsServer } from "../observe/metrics_server.ts";
import { SysTopics } from "./sys_topics.ts";
import denoJson from "../../deno.json" with { type: "json" };
import {
  forwardableProperties,
  isExpired,
  type Message,
  RetainedStore,
  type SharedGroup,
  type SubscriptionEntry,
  SubscriptionTree,
} from "../routing/mod.ts";
import {
  type Delivery,
  type InflightEntry,
  KvSessionStore,
  NullSessionStore,
  Session,
  type SessionStore,
} from "../session/mod.ts";
import { parseTopicFilter, type TopicLimits } from "../topic/mod.ts";
import { ClientConnection } from "./client.ts";
import { keepMessage } from "./delivery_encoding.ts";
import type { BrokerOptions, ListenerOptions } from "./options.ts";
import { TokenBucket } from "../util/token_bucket.ts";
import { readBufferStats } from "../util/read_buffers.ts";

const NO_EXPIRY = 0xffff_ffff;

/** Collaborators injected into a {@link Broker}. */
export interface BrokerDeps {
  /** Where the broker logs. */
  logger?: Logger;
  /** Session persistence; in memory by default. */
  store?: SessionStore;
  /**
   * Authentication and authorization decisions. By default a {@link FileAuth} built from the
   * options (`passwordFile`, `aclFile`, `allowAnonymous`), which {@link Broker.reloadAuth} re-reads.
   */
  auth?: AuthHooks;
  /**
   * Reads the file named by `aclFile`. YAML parsing lives in `src/config/` (`loadAclFile`), which
   * the library does not import; the CLI passes it, and embedders that set `aclFile` must too.
   */
  loadAcl?: (path: string) => Promise<AclRules>;
  /** Interval of the housekeeping sweep (keep-alive, timeouts, Will delay, expiry), ms. */
  sweepIntervalMs?: number;
}

/** Outcome of {@link Broker.reloadAuth}. */
export interface AuthReloadResult {
  /** False when a file was bad and the old rules stayed in force. */
  ok: boolean;
  /** Why the reload was refused (`file:line:column: reason`). */
  error?: string;
  /** Live subscriptions removed because the new rules forbid them. */
  subscriptionsRemoved: number;
}

/**
 * Empties an array that is filled again for the next message. `length = 0` would drop its backing
 * store (V8 gives it a new one on the next push: about 150 bytes per routed message); `pop` keeps
 * it. A very long one is let go, so one huge fan-out does not hold its size for ever.
 */
function emptyForReuse(list: unknown[]): void {
  if (list.length > 1024) list.length = 0;
  else while (list.length > 0) list.pop();
}

/** Per-session aggregate while routing one message: one copy at the highest QoS with all ids. */
interface Aggregate {
  session: Session | undefined;
  qos: 0 | 1 | 2;
  retain: boolean;
  ids?: number[];
}

/**
 * An MQTT 5.0 / 3.1.1 broker: listeners, sessions, the subscription tree,
 * retained messages, Wills and housekeeping. All state hangs off the
 * instance, so one process can run several brokers.
 *
 * @example
 * ```ts
 * import { Broker, resolveOptions } from "./mod.ts";
 * const broker = new Broker(resolveOptions({ listeners: [{ type: "tcp", host: "127.0.0.1", port: 0 }] }));
 * await broker.start();
 * await broker.stop();
 * ```
 */
export class Broker {
  readonly options: BrokerOptions;
  readonly logger: Logger;
  /** Session persistence: opened from `dataPath` at {@link start} unless injected. */
  store: SessionStore;
  readonly #injectedStore?: SessionStore;
  readonly auth: AuthHooks;
  /** The file-backed hooks when none were injected. */
  readonly #fileAuth?: FileAuth;
  /** Identity of each session's latest connection, to re-check its subscriptions on reload. */
  readonly #owners = new WeakMap<Session, ClientInfo>();
  /** Pending failed-authentication delays, ended early by {@link stop}. */
  readonly #authDelays = new Set<() => void>();
  readonly metrics: Metrics = new Metrics();
  readonly retained: RetainedStore;
  readonly topicLimits: TopicLimits;
  /** Bound addresses of the listeners, in `options.listeners` order, known after {@link start}. */
  addresses: { host: string; port: number; type: ListenerOptions["type"] }[] = [];
  readonly #tree = new SubscriptionTree();
  readonly #sessions = new Map<string, Session>();
  /** Live connection per client id (after CONNACK). */
  readonly #byClientId = new Map<string, ClientConnection>();
  readonly #connections = new Set<ClientConnection>();
  /** Connections whose read loop is still running (a loop may outlive its connection's close). */
  readonly #reading = new Set<ClientConnection>();
  /** Wakes {@link stop} when the last read loop ends. */
  #readingDone?: () => void;
  readonly #listeners: ConnListener[] = [];
  readonly #acceptLoops: Promise<void>[] = [];
  readonly #sweepIntervalMs: number;
  #sweepTimer?: ReturnType<typeof setInterval>;
  #sysTimer?: ReturnType<typeof setInterval>;
  #metricsServer?: MetricsServer;
  #nextMessageId = 1;
  #assignedCounter = 0;
  #stopping = false;
  #aggregates = new Map<string, Aggregate>();
  readonly #matchedEntries: SubscriptionEntry[] = [];
  readonly #matchedGroups: SharedGroup[] = [];
  /** Whether a publish is routing now (see {@link publish}). */
  #publishing = false;
  #idleWaiters: (() => void)[] = [];
  /** Connect-rate buckets by source address; full (idle) ones are dropped by the sweep. */
  readonly #connectBuckets = new Map<string, TokenBucket>();

  constructor(options: BrokerOptions, deps: BrokerDeps = {}) {
    this.options = options;
    this.logger = deps.logger ?? silentLogger;
    this.#injectedStore = deps.store;
    this.store = deps.store ?? new NullSessionStore();
    if (deps.auth) this.auth = deps.auth;
    else {
      this.#fileAuth = new FileAuth({
        passwordFile: options.passwordFile,
        aclFile: options.aclFile,
        allowAnonymous: options.allowAnonymous,
        useCertificateCnAsUsername: options.useCertificateCnAsUsername,
        loadAcl: deps.loadAcl,
      });
      this.auth = this.#fileAuth;
    }
    this.retained = new RetainedStore(
      options.maxRetainedMessages,
      options.maxRetainedBytes,
      (m) => this.store.deleteRetained(m.topic),
    );
    this.topicLimits = { maxLength: options.maxTopicLength, maxLevels: options.maxTopicLevels };
    this.#sweepIntervalMs = deps.sweepIntervalMs ?? 250;
  }

  /** Number of connections that completed CONNECT. */
  get connectedCount(): number {
    return this.#byClientId.size;
  }

  /**
   * Connection rate limit per source address: takes a token from that
   * address's bucket (one second of burst); false when it is empty.
   */
  allowConnectFrom(address: string): boolean {
    const rate = this.options.maxConnectRatePerAddress;
    if (rate === 0) return true;
    const now = Date.now();
    let bucket = this.#connectBuckets.get(address);
    if (bucket === undefined) {
      bucket = new TokenBucket(rate, rate, now);
      this.#connectBuckets.set(address, bucket);
    }
    return bucket.take(now);
  }

  /**
   * Whether publishes, subscriptions and deliveries must be checked against the auth hooks. Not
   * with the built-in file auth and no ACL loaded, which admits everything: a client then never
   * needs its `info` built (an object per connection, kept while it lives).
   */
  get checksTopics(): boolean {
    return this.#fileAuth === undefined || this.#fileAuth.restrictsTopics;
  }

  /** Whether a connection with this client id is live (a takeover adds no connection). */
  hasLiveConnection(clientId: string): boolean {
    return this.#byClientId.has(clientId);
  }

  /** Number of sessions held (connected or not). */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Restores persisted state, opens the listeners and starts housekeeping. */
  async start(): Promise<void> {
    // A bad password or ACL file stops the start before anything is opened.
    if (this.#fileAuth) this.#logAuthState("auth loaded", await this.#fileAuth.reload());
    if (!this.#injectedStore && this.options.dataPath !== ":memory:") {
      this.store = await KvSessionStore.open(this.options.dataPath, {
        logger: this.logger,
        commitWindowMs: this.options.storeCommitWindowMs,
        checkpointIntervalMs: this.options.storeCheckpointIntervalMs,
        journalMaxBytes: this.options.storeJournalMaxBytes,
      });
    }
    try {
      await this.#restore();
    } catch (err) {
      await this.store.close();
      throw err;
    }
    try {
      for (const l of this.options.listeners) {
        const listener = await openListener(l, {
          logger: this.logger,
          handshakeTimeoutMs: this.options.connectTimeoutMs,
          maxBufferedBytes: Math.max(4 * 1024 * 1024, 2 * this.options.maxPacketSize),
        });
        this.#listeners.push(listener);
        this.addresses.push({ host: listener.host, port: listener.port, type: l.type });
        this.#acceptLoops.push(this.#acceptLoop(listener));
      }
    } catch (err) {
      // A listener that cannot open (address taken, bad certificate) stops the start.
      for (const l of this.#listeners) l.close();
      await Promise.all(this.#acceptLoops);
      await Promise.all(this.#listeners.map((l) => l.release?.()));
      this.#listeners.length = 0;
      this.#acceptLoops.length = 0;
      await this.store.close();
      throw err;
    }
    if (this.options.metricsPort > 0) {
      try {
        this.#metricsServer = MetricsServer.open({
          host: this.options.metricsHost,
          port: this.options.metricsPort,
          render: () => this.metrics.toPrometheus(this.gauges()),
          logger: this.logger,
        });
      } catch (err) {
        await this.stop();
        throw new Error(
          `Cannot open the metrics endpoint ${this.options.metricsHost}:${this.options.metricsPort}: ${
            (err as Error).message
          }`,
        );
      }
      this.logger.info("metrics endpoint", {
        url: `http://${this.options.metricsHost}:${this.#metricsServer.port}/metrics`,
      });
    }
    this.#sweepTimer = setInterval(() => {
      // A throw here would be uncaught and end the process: log it and sweep again next time.
      try {
        this.#sweep();
      } catch (err) {
        this.logger.error("housekeeping failed", { error: err });
      }
    }, this.#sweepIntervalMs);
    if (this.options.sysIntervalSec > 0) {
      const sys = new SysTopics(`${denoJson.name} ${denoJson.version}`, Date.now());
      const refresh = () => {
        try {
          this.#publishSys(sys);
        } catch (err) {
          this.logger.error("$SYS refresh failed", { error: err });
        }
      };
      refresh();
      this.#sysTimer = setInterval(refresh, this.options.sysIntervalSec * 1000);
    }
  }

  /** Port of the metrics endpoint, once started with one (0 otherwise). */
  get metricsPort(): number {
    return this.#metricsServer?.port ?? 0;
  }

  /** Levels reported beside the counters (metrics endpoint and `$SYS`). */
  gauges():
    & { sessions: number; retainedMessages: number; subscriptions: number }
    & Record<
      string,
      number
    > {
    const readBuffers = readBufferStats();
    const gauges = {
      sessions: this.#sessions.size,
      retainedMessages: this.retained.size,
      subscriptions: this.#tree.size,
      // First read buffers handed to connections (util/read_buffers.ts). The pool is shared by
      // every broker in the process; it stays as large as the most connections open at once.
      readBufferSlotsInUse: readBuffers.inUse,
      readBufferSlotsFree: readBuffers.free,
    };
    const uncheckpointed = (this.store as { uncheckpointed?: number }).uncheckpointed;
    return uncheckpointed === undefined
      ? gauges
      : { ...gauges, storeUncheckpointedWrites: uncheckpointed };
  }

  /** Publishes the `$SYS` values that changed, retained, at QoS 0 (never written to the store). */
  #publishSys(sys: SysTopics): void {
    const now = Date.now();
    const encoder = new TextEncoder();
    for (const [topic, value] of sys.changed(this.metrics, this.gauges(), now)) {
      this.publish({
        topic,
        payload: encoder.encode(value),
        qos: 0,
        retain: true,
        id: this.nextMessageId(),
      }, now);
    }
  }

  /**
   * Stops: closes listeners, disconnects every client with 0x8B Server
   * shutting down (their Wills are published), flushes the store.
   */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    for (const end of [...this.#authDelays]) end();
    for (const l of this.#listeners) l.close();
    await Promise.all(this.#acceptLoops);
    for (const c of [...this.#connections]) {
      if (c.state === "connected") {
        c.disconnect(ReasonCode.ServerShuttingDown, "server shutting down");
      } else if (c.state === "connecting") c.conn.close();
    }
    // Give clients a moment to read the DISCONNECT and close; then force.
    const deadline = Date.now() + 3_000;
    while (this.#connections.size > 0 && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 20);
        this.#idleWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    for (const c of [...this.#connections]) c.conn.close();
    if (this.#reading.size > 0) {
      await new Promise<void>((resolve) => this.#readingDone = resolve);
    }
    // HTTP and node:tls servers hold their sockets until their connections are gone.
    await Promise.all(this.#listeners.map((l) => l.release?.()));
    clearInterval(this.#sweepTimer);
    this.#sweepTimer = undefined;
    clearInterval(this.#sysTimer);
    this.#sysTimer = undefined;
    await this.#metricsServer?.close();
    this.#metricsServer = undefined;
    if (this.store.dirty) await this.store.flush().catch(() => {});
    await this.store.close();
    const stats = (this.store as { stats?: Record<string, number> }).stats;
    if (stats) this.logger.info("store statistics", stats);
  }

  // ---------------------------------------------------------------- authentication

  /**
   * Re-reads the password file and the ACL (SIGHUP) and swaps them in together. A file that cannot
   * be read or parsed keeps the old ones in force, and the reason is logged. New rules apply to
   * every later operation, and live subscriptions they forbid are removed. With injected hooks,
   * only the subscriptions are re-checked.
   */
  async reloadAuth(): Promise<AuthReloadResult> {
    if (this.#fileAuth) {
      try {
        this.#logAuthState("auth reloaded", await this.#fileAuth.reload());
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        this.logger.error("auth reload failed; the previous password file and ACL stay in force", {
          error,
        });
        return { ok: false, error, subscriptionsRemoved: 0 };
      }
    }
    return { ok: true, subscriptionsRemoved: this.revokeForbiddenSubscriptions() };
  }

  /**
   * Removes every subscription the auth hooks no longer allow, for connected clients and for
   * offline sessions whose last identity is known (others are checked when they reconnect).
   *
   * @returns How many subscriptions were removed.
   */
  revokeForbiddenSubscriptions(): number {
    let removed = 0;
    for (const session of this.#sessions.values()) {
      const live = this.#byClientId.get(session.clientId);
      // A live connection (connecting or connected) speaks for its session; else its last one.
      const info = live !== undefined ? live.info : this.#owners.get(session);
      if (info !== undefined) removed += this.#revokeForbidden(session, info);
    }
    return removed;
  }

  #revokeForbidden(session: Session, info: ClientInfo): number {
    let removed = 0;
    if (session.subscriptionCount === 0) return 0;
    for (const { rawFilter } of session.subscriptionList()) {
      if (this.auth.authorizeSubscribe(info, rawFilter)) continue;
      this.unsubscribe(session, rawFilter);
      removed++;
      this.logger.info("subscription removed: no longer authorized", {
        clientId: session.clientId,
        filter: rawFilter,
      });
    }
    return removed;
  }

  /** Waits `authFailDelayMs` before a refusal for failed authentication; ends early on stop. */
  authFailureDelay(): Promise<void> {
    const ms = this.options.authFailDelayMs;
    if (ms <= 0 || this.#stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const end = () => {
        clearTimeout(timer);
        this.#authDelays.delete(end);
        resolve();
      };
      const timer = setTimeout(end, ms);
      this.#authDelays.add(end);
    });
  }

  #logAuthState(what: string, state: AuthState): void {
    const opts = this.options;
    this.logger.info(what, {
      allowAnonymous: opts.allowAnonymous,
      passwordFile: opts.passwordFile,
      users: state.passwords?.size,
      aclFile: opts.aclFile,
      roles: state.acl?.roles.size,
    });
    if (state.acl !== undefined && state.passwords === undefined) {
      this.logger.warn("an ACL without a password file grants roles to unverified user names", {
        aclFile: opts.aclFile,
      });
    }
    const hashOptions = { algorithm: opts.passwordAlgorithm, iterations: opts.passwordIterations };
    const weak = [...state.passwords?.values() ?? []].filter((e) =>
      isWeakerThan(e.hash, hashOptions)
    );
    if (weak.length > 0) {
      this.logger.warn("password hashes weaker than configured; set them again with passwd", {
        count: weak.length,
        users: weak.slice(0, 10).map((e) => e.username).join(","),
      });
    }
  }

  /**
   * Re-reads the certificate and key files of the TLS and WSS listeners (SIGHUP). New connections
   * get the new certificate; a listener whose files cannot be read or do not form a valid pair
   * keeps its old one, and the reason is logged.
   *
   * @returns How many listeners took new files, kept unchanged ones, or failed.
   */
  async reloadCertificates(): Promise<{ reloaded: number; unchanged: number; failed: number }> {
    const result = { reloaded: 0, unchanged: 0, failed: 0 };
    for (const [i, listener] of this.#listeners.entries()) {
      if (!listener.reloadCertificates || this.#stopping) continue;
      const { type, host, port } = this.addresses[i];
      const at = { listener: `${type}://${host}:${port}` };
      try {
        if (await listener.reloadCertificates()) {
          result.reloaded++;
          this.logger.info("certificates reloaded", at);
        } else result.unchanged++;
      } catch (err) {
        result.failed++;
        this.logger.error("certificate reload failed", {
          ...at,
          error: err,
        });
      }
    }
    return result;
  }

  async #acceptLoop(listener: ConnListener): Promise<void> {
    for (;;) {
      const conn = await listener.accept();
      if (conn === null) return;
      if (this.#stopping) {
        conn.close();
        continue;
      }
      if (this.#connections.size >= this.options.maxConnections + 64) {
        // Beyond the CONNACK 0x97 margin: sockets that never send CONNECT must not pile up.
        this.metrics.connectionsRefused++;
        conn.close();
        continue;
      }
      this.metrics.connectionsAccepted++;
      const client = new ClientConnection(this, conn);
      this.#connections.add(client);
      this.metrics.connectionsCurrent = this.#connections.size;
      this.logger.debug("connection accepted", {
        address: conn.remoteAddress,
        port: conn.remotePort,
      });
      this.#reading.add(client);
      client.run(); // reports its end through onReadLoopEnded
    }
  }

  // ---------------------------------------------------------------- sessions

  /** A fresh client id for an empty CONNECT id [MQTT-3.1.3-6] [MQTT-3.1.3-7]. */
  assignClientId(): string {
    for (;;) {
      const id = `auto-${Date.now().toString(36)}-${(this.#assignedCounter++).toString(36)}-${
        Math.floor(Math.random() * 1e9).toString(36)
      }`;
      if (!this.#sessions.has(id)) return id;
    }
  }

  /** Broker-wide message sequence. */
  nextMessageId(): number {
    return this.#nextMessageId++;
  }

  /**
   * Takes over any live connection of the client id, then resumes or creates
   * its session (3.1.4, 3.1.2.4). Returns the session and Session Present.
   */
  openSession(
    client: ClientConnection,
    cleanStart: boolean,
    expirySec: number,
  ): { session: Session; present: boolean } {
    const clientId = client.clientId;
    const old = this.#byClientId.get(clientId);
    if (old && old !== client) {
      this.metrics.takeovers++;
      this.logger.info("session taken over", { clientId, address: client.conn.remoteAddress });
      // [MQTT-3.1.4-3] The old connection's Will is held back only if the session continues with a delay (3.1.4).
      const session = old.session;
      const keepsSession = !cleanStart && session !== undefined && session.expirySec > 0;
      if (session?.will && !(keepsSession && session.will.delaySec > 0)) {
        this.#publishWill(session);
      }
      old.publishWillOnClose = false;
      old.disconnect(ReasonCode.SessionTakenOver, "session taken over");
    }
    let session = this.#sessions.get(clientId);
    let present = false;
    if (session && cleanStart) {
      // [MQTT-3.1.2-4] Clean Start discards the old session; its delayed Will goes out now.
      if (session.will) this.#publishWill(session);
      this.#destroySession(session);
      session = undefined;
    }
    if (session) {
      present = true;
      // [MQTT-3.1.3-9] reconnecting before the Will Delay cancels the Will.
      session.will = undefined;
      session.willDueAt = undefined;
      session.expiresAt = undefined;
      session.expirySec = expirySec;
      session.protocolVersion = client.protocolVersion;
    } else {
      session = new Session(clientId, client.protocolVersion, expirySec);
      this.#sessions.set(clientId, session);
    }
    session.connected = true;
    session.connection = client;
    this.#byClientId.set(clientId, client);
    // A resumed session may belong to another identity now, or the rules changed while it was
    // offline: it keeps only the subscriptions this connection may hold.
    if (present) this.#revokeForbidden(session, client.info);
    return { session, present };
  }

  /** Called once when a connection starts closing: Will, session expiry, bookkeeping. */
  onConnectionEnded(client: ClientConnection, why: string): void {
    const session = client.session;
    if (!session || this.#byClientId.get(client.clientId) !== client) {
      if (client.clientId) {
        this.logger.debug("connection ended before session", { clientId: client.clientId, why });
      }
      return;
    }
    this.#byClientId.delete(client.clientId);
    session.connected = false;
    session.connection = undefined;
    // Kept for the offline session only: a live one is checked as its connection.
    this.#owners.set(session, client.info);
    if (this.logger.infoEnabled) {
      this.logger.info("client disconnected", { clientId: client.clientId, why });
    }
    const now = Date.now();
    if (client.publishWillOnClose && session.will) {
      const delay = session.will.delaySec;
      if (delay > 0 && session.expirySec > 0) {
        // Published after the delay, or when the session ends if sooner [MQTT-3.1.2-8].
        session.willDueAt = now + Math.min(delay, session.expirySec) * 1000;
        this.store.saveWill(session.clientId, { ...session.will, dueAt: session.willDueAt });
      } else this.#publishWill(session);
    } else if (session.will) {
      session.will = undefined;
      if (session.expirySec > 0) this.store.saveWill(session.clientId, undefined);
    }
    if (session.expirySec === 0) {
      this.#destroySession(session);
      return;
    }
    if (session.expirySec !== NO_EXPIRY) session.expiresAt = now + session.expirySec * 1000;
    this.persistSession(session);
  }

  /** Called by a connection when its read loop has ended. */
  onReadLoopEnded(client: ClientConnection): void {
    this.#reading.delete(client);
    if (this.#reading.size === 0 && this.#readingDone !== undefined) {
      this.#readingDone();
      this.#readingDone = undefined;
    }
  }

  /** Called when a connection's socket is closed. */
  onConnectionClosed(client: ClientConnection): void {
    this.#connections.delete(client);
    this.metrics.connectionsCurrent = this.#connections.size;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }

  #destroySession(session: Session): void {
    if (session.subscriptionCount > 0) {
      for (const entry of session.subscriptionList()) {
        const parsed = parseTopicFilter(entry.rawFilter);
        if (typeof parsed !== "string") {
          this.#tree.remove(parsed.filter, session.clientId, parsed.shareGroup);
        }
      }
      session.clearSubscriptions();
    }
    this.#sessions.delete(session.clientId);
    if (session.expirySec > 0 || session.queueLength > 0 || session.inflightCount > 0) {
      this.store.deleteSession(session.clientId);
    }
    this.#redeliverShared(session);
  }

  /**
   * A shared-subscription member's session ended: its unacknowledged QoS 1 messages and the
   * messages still queued for it go to another member of the group (4.8.2, SHOULD). A QoS 2
   * message already sent is never given to another member [MQTT-4.8.2-5].
   */
  #redeliverShared(session: Session): void {
    if (session.inflightCount === 0 && session.queueLength === 0) return;
    const orphans: Delivery[] = [];
    for (const e of session.inflight.values()) {
      if (e.shareKey !== undefined && e.qos === 1 && e.state === "publish") orphans.push(e);
    }
    for (const d of session.queue) if (d.shareKey !== undefined) orphans.push(d);
    if (orphans.length === 0) return;
    const now = Date.now();
    for (const d of orphans) {
      const parsed = parseTopicFilter(d.shareKey!);
      if (typeof parsed === "string" || parsed.shareGroup === undefined) continue;
      const group = this.#tree.sharedGroup(parsed.filter, parsed.shareGroup);
      const entry = group?.pick((id) => this.#byClientId.has(id));
      const target = entry && this.#ownerOf(entry);
      if (!entry || !target || isExpired(d.message, now)) continue;
      this.metrics.sharedRedelivered++;
      this.#deliver(target, {
        message: d.message,
        qos: d.message.qos < entry.qos ? d.message.qos : entry.qos,
        retain: entry.retainAsPublished && d.message.retain,
        subscriptionIds: entry.subscriptionId !== undefined ? [entry.subscriptionId] : undefined,
        shareKey: entry.rawFilter,
      }, now);
    }
  }

  #publishWill(session: Session): void {
    const pending = session.will;
    if (!pending) return;
    session.will = undefined;
    session.willDueAt = undefined;
    if (session.expirySec > 0) this.store.saveWill(session.clientId, undefined);
    const w = pending.will;
    // Authorized as the connection that set it, under the rules in force now.
    const owner = pending.owner;
    const info: ClientInfo = {
      clientId: session.clientId,
      protocolVersion: session.protocolVersion,
      username: owner?.username,
      remoteAddress: owner?.remoteAddress ?? "",
      remotePort: owner?.remotePort ?? 0,
      certificate: owner?.certificate,
    };
    if (!this.auth.authorizePublish(info, w.topic)) {
      this.logger.info("will not authorized", { clientId: session.clientId, topic: w.topic });
      return;
    }
    const now = Date.now();
    const expiry = w.properties?.messageExpiryInterval;
    this.metrics.willsPublished++;
    this.logger.info("publishing will", { clientId: session.clientId, topic: w.topic });
    // [MQTT-3.1.2-14] [MQTT-3.1.2-15] [MQTT-3.1.3-10]: its QoS, Retain and properties; expiry starts now.
    this.publish({
      topic: w.topic,
      payload: w.payload,
      qos: w.qos,
      retain: w.retain,
      properties: forwardableProperties(w.properties),
      expiresAt: expiry !== undefined ? now + expiry * 1000 : undefined,
      publisherId: session.clientId,
      id: this.nextMessageId(),
    }, now);
  }

  // ---------------------------------------------------------------- persistence helpers

  /** Writes the session record when the session outlives its connection. */
  persistSession(session: Session): void {
    if (session.expirySec === 0) return;
    this.store.saveSession({
      clientId: session.clientId,
      protocolVersion: session.protocolVersion,
      expirySec: session.expirySec,
      expiresAt: session.expiresAt,
    });
    if (session.will) {
      this.store.saveWill(session.clientId, { ...session.will, dueAt: session.willDueAt });
    }
  }

  persistInflight(session: Session, entry: InflightEntry): void {
    if (session.expirySec > 0) this.store.saveInflight(session.clientId, entry);
  }

  persistInflightDone(session: Session, packetId: number): void {
    if (session.expirySec > 0) this.store.deleteInflight(session.clientId, packetId);
  }

  /** Records that a queued delivery left the queue (sent, expired or dropped). */
  persistDequeue(session: Session, d: Delivery): void {
    if (session.expirySec > 0) this.store.dequeue(session.clientId, d);
  }

  persistInboundQos2(session: Session, packetId: number, present: boolean): void {
    if (session.expirySec > 0) this.store.saveInboundQos2(session.clientId, packetId, present);
  }

  // ---------------------------------------------------------------- subscriptions

  /** Adds or replaces a subscription [MQTT-3.8.4-3]. */
  subscribe(session: Session, entry: SubscriptionEntry, filter: string): void {
    entry.owner = session;
    session.setSubscription(entry);
    this.#tree.add(filter, entry);
    if (session.expirySec > 0) this.store.saveSubscription(session.clientId, entry);
  }

  /** Removes a subscription by its exact filter; returns whether it existed. */
  unsubscribe(session: Session, rawFilter: string): boolean {
    if (!session.deleteSubscription(rawFilter)) return false;
    const parsed = parseTopicFilter(rawFilter);
    if (typeof parsed !== "string") {
      this.#tree.remove(parsed.filter, session.clientId, parsed.shareGroup);
    }
    if (session.expirySec > 0) this.store.deleteSubscription(session.clientId, rawFilter);
    return true;
  }

  // ---------------------------------------------------------------- routing

  /**
   * Routes a message to every matching session and updates the retained
   * store. Returns the number of sessions it was given to.
   */
  publish(message: Message, now: number): number {
    if (message.retain) this.#retain(message);
    // The match arrays and the aggregation map are reused from message to message; a publish made
    // while delivering (the Will of a connection dropped on the way) gets fresh ones, so it cannot
    // disturb the outer one's iteration.
    const nested = this.#publishing;
    const entries = nested ? [] : this.#matchedEntries;
    const groups = nested ? [] : this.#matchedGroups;
    this.#publishing = true;
    try {
      this.#tree.collect(message.topic, entries, groups);
      let count = entries.length === 1
        ? this.#routeOne(message, entries[0], now)
        : entries.length > 1
        ? this.#routeMany(message, entries, nested ? new Map() : this.#aggregates, now)
        : 0;
      for (let g = 0; g < groups.length; g++) {
        const group = groups[g];
        // One member per group [MQTT-4.8.2-3], round robin, preferring connected members.
        const entry = group.pick((id) => this.#byClientId.has(id));
        if (!entry) continue;
        const session = this.#ownerOf(entry);
        if (!session) continue;
        count++;
        const qos = message.qos < entry.qos ? message.qos : entry.qos;
        this.#deliver(session, {
          message,
          qos,
          retain: entry.retainAsPublished && message.retain,
          subscriptionIds: entry.subscriptionId !== undefined ? [entry.subscriptionId] : undefined,
          shareKey: entry.rawFilter,
        }, now);
      }
      return count;
    } finally {
      emptyForReuse(entries);
      emptyForReuse(groups);
      this.#publishing = nested;
    }
  }

  /** Routes to the only matching (non-shared) subscription: nothing to aggregate. */
  #routeOne(message: Message, entry: SubscriptionEntry, now: number): number {
    // [MQTT-3.8.3-3] No Local: not back to the publisher.
    if (entry.noLocal && entry.clientId === message.publisherId) return 0;
    const session = this.#ownerOf(entry);
    if (!session) return 0;
    this.#deliver(session, {
      message,
      qos: message.qos < entry.qos ? message.qos : entry.qos,
      // Live forwards clear RETAIN unless Retain As Published [MQTT-3.3.1-12] [MQTT-3.3.1-13].
      retain: entry.retainAsPublished && message.retain,
      subscriptionIds: entry.subscriptionId !== undefined ? [entry.subscriptionId] : undefined,
    }, now);
    return 1;
  }

  /** Routes to several matching subscriptions: one copy per session. */
  #routeMany(
    message: Message,
    entries: SubscriptionEntry[],
    aggregates: Map<string, Aggregate>,
    now: number,
  ): number {
    aggregates.clear();
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i];
      // [MQTT-3.8.3-3] No Local: not back to the publisher.
      if (entry.noLocal && entry.clientId === message.publisherId) continue;
      const qos = message.qos < entry.qos ? message.qos : entry.qos;
      // Live forwards clear RETAIN unless Retain As Published [MQTT-3.3.1-12] [MQTT-3.3.1-13].
      const retain = entry.retainAsPublished && message.retain;
      const agg = aggregates.get(entry.clientId);
      if (agg === undefined) {
        aggregates.set(entry.clientId, {
          session: this.#ownerOf(entry),
          qos,
          retain,
          ids: entry.subscriptionId !== undefined ? [entry.subscriptionId] : undefined,
        });
      } else {
        // Overlapping subscriptions: one copy at the highest QoS with every id [MQTT-3.3.4-2].
        if (qos > agg.qos) agg.qos = qos;
        if (retain) agg.retain = true;
        if (entry.subscriptionId !== undefined) (agg.ids ??= []).push(entry.subscriptionId);
      }
    }
    let count = 0;
    for (const agg of aggregates.values()) {
      const session = agg.session;
      if (!session) continue;
      count++;
      this.#deliver(session, {
        message,
        qos: agg.qos,
        retain: agg.retain,
        subscriptionIds: agg.ids,
      }, now);
    }
    return count;
  }

  #retain(message: Message): void {
    keepMessage(message); // stored: nothing of it in a pooled slab
    const result = this.retained.set(message);
    if (result === "refused") {
      this.metrics.retainedRefused++;
      this.logger.warn("retained message refused: store full", { topic: message.topic });
      return;
    }
    // $SYS values are the broker's own and rebuilt at start: not worth a disk write each.
    if (message.topic.startsWith("$SYS/")) return;
    if (result === "stored") this.store.saveRetained(message);
    else this.store.deleteRetained(message.topic);
  }

  /** The session of a subscription entry: the entry's own pointer, set when it was added. */
  #ownerOf(entry: SubscriptionEntry): Session | undefined {
    return (entry.owner as Session | undefined) ?? this.#sessions.get(entry.clientId);
  }

  #deliver(session: Session, d: Delivery, now: number): void {
    const client = session.connection as ClientConnection | undefined;
    if (client && client.state === "connected") {
      if (!client.mayReceive(d.message.topic)) return;
      client.deliver(d, now);
      return;
    }
    if (d.qos === 0) {
      // Offline sessions queue QoS 1/2 only (ours; QoS 0 queueing is optional, checklist §8).
      this.metrics.offlineQos0Dropped++;
      return;
    }
    this.enqueue(session, d);
  }

  /**
   * Appends to a session queue, bounded by count and bytes. Policy when full:
   * the new message is dropped for that session (the queue keeps the oldest,
   * in order) and counted in `queueFullDropped`.
   */
  enqueue(session: Session, d: Delivery): void {
    const opts = this.options;
    if (
      session.queue.length >= opts.maxQueuedMessages ||
      session.queue.bytes + d.message.payload.length > opts.maxQueuedBytes
    ) {
      this.metrics.queueFullDropped++;
      if (this.logger.debugEnabled) {
        this.logger.debug("session queue full; message dropped", { clientId: session.clientId });
      }
      return;
    }
    keepMessage(d.message); // stored: nothing of it in a pooled slab
    session.queue.push(d);
    if (session.expirySec > 0) this.store.enqueue(session.clientId, d);
  }

  // ---------------------------------------------------------------- housekeeping

  /** Time of the sweep in progress, for {@link #sweepConnection}. */
  #sweepNow = 0;

  /**
   * One connection's share of housekeeping. A callback made once and passed to `forEach`: a
   * `for...of` walk over the connections allocated an iterator result per connection each sweep
   * (about 40 bytes × 10,000 connections, four times a second).
   */
  readonly #sweepConnection = (c: ClientConnection): void => {
    const now = this.#sweepNow;
    if (c.state === "connecting") {
      if (now - c.startedAt > this.options.connectTimeoutMs) {
        this.metrics.connectTimeouts++;
        this.logger.info("connect timeout", { address: c.conn.remoteAddress });
        c.conn.close();
      }
      return;
    }
    if (c.state !== "connected") return;
    // [MQTT-3.1.2-22] no packet within 1.5 × Keep Alive: treated as a network failure.
    if (c.keepAliveSec > 0 && now - c.lastActivity > c.keepAliveSec * 1500) {
      this.metrics.keepAliveTimeouts++;
      c.disconnect(ReasonCode.KeepAliveTimeout, "keep alive timeout");
      return;
    }
    c.checkOverdue(now);
  };

  #sweep(): void {
    const now = Date.now();
    this.#sweepNow = now;
    this.#connections.forEach(this.#sweepConnection);
    for (const [address, bucket] of this.#connectBuckets) {
      if (bucket.isFull(now)) this.#connectBuckets.delete(address);
    }
    // Every session live on a connection (the usual state of a busy gateway): nothing below to do,
    // and no walk over thousands of sessions four times a second.
    if (this.#sessions.size === this.#byClientId.size) return;
    for (const session of this.#sessions.values()) {
      if (session.connected) continue;
      if (session.willDueAt !== undefined && session.willDueAt <= now) this.#publishWill(session);
      if (session.expiresAt !== undefined && session.expiresAt <= now) {
        this.metrics.sessionsExpired++;
        this.logger.info("session expired", { clientId: session.clientId });
        if (session.will) this.#publishWill(session);
        this.#destroySession(session);
        continue;
      }
      // Expired messages at the head of an offline queue leave it (and the store) now; the walk
      // stops at the first live one, so a sweep stays bounded. Others go when they are reached.
      if (session.queueLength === 0) continue;
      for (
        let d = session.queue.peek();
        d !== undefined && isExpired(d.message, now);
        d = session.queue.peek()
      ) {
        session.queue.shift();
        this.persistDequeue(session, d);
        this.metrics.expiredDropped++;
      }
    }
  }

  async #restore(): Promise<void> {
    const state = await this.store.load();
    const now = Date.now();
    for (const m of state.retained) {
      // Expired while the broker was down: dropped from the store too.
      if (!isExpired(m, now)) this.retained.set(m);
      else this.store.deleteRetained(m.topic);
      if (m.id >= this.#nextMessageId) this.#nextMessageId = m.id + 1;
    }
    for (const s of state.sessions) {
      const session = new Session(s.record.clientId, s.record.protocolVersion, s.record.expirySec);
      session.expiresAt = s.record.expiresAt ??
        (s.record.expirySec === NO_EXPIRY ? undefined : now + s.record.expirySec * 1000);
      for (const entry of s.subscriptions) {
        const parsed = parseTopicFilter(entry.rawFilter);
        if (typeof parsed === "string") continue;
        // A copy with the owner in it from the start: one shape for every entry (in-object fields).
        const live: SubscriptionEntry = { ...entry, owner: session };
        session.setSubscription(live);
        this.#tree.add(parsed.filter, live);
      }
      for (const entry of s.inflight) {
        session.inflight.set(entry.packetId, entry);
        if (entry.message.id >= this.#nextMessageId) this.#nextMessageId = entry.message.id + 1;
      }
      for (const d of s.queue) {
        session.queue.push(d);
        if (d.message.id >= this.#nextMessageId) this.#nextMessageId = d.message.id + 1;
      }
      for (const id of s.inboundQos2) session.inboundQos2.add(id);
      if (s.will) {
        session.will = { will: s.will.will, delaySec: s.will.delaySec, owner: s.will.owner };
        // A Will of a session whose connection died with the process: its delay runs from the
        // restart (capped by the session expiry), so a client reconnecting in time cancels it.
        session.willDueAt = s.will.dueAt ??
          now + Math.min(s.will.delaySec, s.record.expirySec) * 1000;
      }
      this.#sessions.set(session.clientId, session);
    }
    if (state.sessions.length > 0 || state.retained.length > 0) {
      this.logger.info("restored state", {
        sessions: state.sessions.length,
        retained: state.retained.length,
      });
    }
    // Sessions whose expiry passed while the broker was down end now (Wills due go out), before
    // the listeners open: a client reconnecting at once must not resume one [MQTT-3.1.2-5].
    this.#sweep();
  }
}
