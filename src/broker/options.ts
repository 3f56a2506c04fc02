/**
 * Every limit and default of the broker in one place.
 *
 * The YAML config (`src/config/`) and the CLI map onto {@link BrokerOptions};
 * embedders pass a partial object and get {@link DEFAULT_OPTIONS} for the rest.
 *
 * @module
 */

import { DEFAULT_PBKDF2_ITERATIONS, type PasswordAlgorithm } from "../auth/mod.ts";

/** A network listener the broker accepts clients on. */
export interface ListenerOptions {
  /**
   * Transport: `tcp` (MQTT over TCP), `tls` (over TLS, ALPN `mqtt`), `ws` or `wss` (over
   * WebSocket, subprotocol `mqtt`).
   */
  type: "tcp" | "tls" | "ws" | "wss";
  /** Address to bind, e.g. `127.0.0.1` or `0.0.0.0`. */
  host: string;
  /** TCP port; 0 picks an ephemeral port (tests). */
  port: number;
  /** `tls`/`wss`: PEM certificate file (the server certificate, then any intermediates). */
  certFile?: string;
  /** `tls`/`wss`: PEM private key file. */
  keyFile?: string;
  /** `tls` with `requireClientCert`: PEM CA file that client certificates must chain to. */
  caFile?: string;
  /**
   * `tls` only: refuse clients without a certificate from `caFile` (mutual TLS). Served by
   * `node:tls`, since `Deno.listenTls` cannot request client certificates.
   */
  requireClientCert?: boolean;
  /** `ws`/`wss`: HTTP path of the MQTT endpoint. Default `/mqtt`. */
  path?: string;
}

/** Log verbosity, from least to most output. */
export type LogLevel = "error" | "warn" | "info" | "debug";

/** All settings of a broker instance. */
export interface BrokerOptions {
  /** Where clients connect. */
  listeners: ListenerOptions[];
  /** Storage location: a Deno KV path, a KV Connect URL, or `:memory:` for no persistence. */
  dataPath: string;
  /** Minimum level of log records that are written. */
  logLevel: LogLevel;
  /**
   * Admit clients that send no user name and present no client certificate: `true`, `false`, or
   * `"loopback"` (the default: only connections from 127.0.0.0/8 or ::1, so a broker that is
   * opened to the network does not become open to anonymous clients by accident).
   */
  allowAnonymous: boolean | "loopback";
  /** Accept MQTT 3.1 ("MQIsdp", level 3) clients as well as 3.1.1 and 5.0. */
  allowMqtt31: boolean;

  /** Most simultaneous client connections; further CONNECTs get 0x97 Quota exceeded. */
  maxConnections: number;
  /** A connection that sends no CONNECT within this time is closed. */
  connectTimeoutMs: number;
  /** Largest packet (whole packet, bytes) a client may send; announced in CONNACK. */
  maxPacketSize: number;
  /** Incoming QoS>0 PUBLISH a client may have unacknowledged; announced in CONNACK. */
  receiveMaximum: number;
  /** Outgoing in-flight window for clients that announce none (3.1.1), and a cap for others. */
  maxInflightOut: number;
  /** Highest topic alias a client may use towards us; announced in CONNACK (0 = none). */
  topicAliasMaximum: number;
  /** Cap on the client's Keep Alive in seconds (0 = no cap); sent as Server Keep Alive. */
  maxKeepAliveSec: number;
  /** Highest QoS the broker supports (0, 1 or 2). */
  maximumQos: 0 | 1 | 2;
  /** Whether retained messages are supported. */
  retainAvailable: boolean;
  /** Whether `+` and `#` filters are accepted. */
  wildcardSubscriptionAvailable: boolean;
  /** Whether Subscription Identifiers are accepted. */
  subscriptionIdentifierAvailable: boolean;
  /** Whether `$share/...` filters are accepted. */
  sharedSubscriptionAvailable: boolean;
  /** Cap on a session's expiry interval in seconds (0xFFFFFFFF = no cap). */
  maxSessionExpirySec: number;
  /** Session expiry for 3.1.1 clean-session-0 clients, in seconds (0xFFFFFFFF = never). */
  persistentSessionExpirySec: number;
  /** Messages held per session while offline or flow-controlled. */
  maxQueuedMessages: number;
  /** Payload bytes held per session while offline or flow-controlled. */
  maxQueuedBytes: number;
  /** Most retained messages held. */
  maxRetainedMessages: number;
  /** Most payload bytes of retained messages held. */
  maxRetainedBytes: number;
  /** Unsent bytes per connection above which QoS 0 messages to it are dropped. */
  outboxSoftLimitBytes: number;
  /**
   * Unsent bytes per connection above which it is disconnected: bytes still queued plus
   * QoS 0 bytes dropped past the soft limit since the connection last fell below it.
   */
  outboxHardLimitBytes: number;
  /** How long an outgoing QoS>0 message may stay unacknowledged before it is overdue. */
  retryIntervalMs: number;
  /** Close a v5 connection whose acknowledgement is overdue, so the resend happens on reconnection. */
  closeOnOverdueAck: boolean;
  /** Most subscriptions one session may hold. */
  maxSubscriptionsPerClient: number;
  /** Longest topic name or filter, in bytes. */
  maxTopicLength: number;
  /** Most levels in a topic name or filter. */
  maxTopicLevels: number;
  /** How long a store commit waits for more writes (ms); lets quick acks cancel writes. */
  storeCommitWindowMs: number;
  /** How often writes made durable in the journal are copied into Deno KV (ms). */
  storeCheckpointIntervalMs: number;
  /** Journal size that starts a checkpoint early; commits wait once it holds four times this. */
  storeJournalMaxBytes: number;
  /** CONNECTs accepted per second from one source address (0 = no limit); beyond it CONNACK 0x9F. */
  maxConnectRatePerAddress: number;
  /** PUBLISH packets per second one client may send, averaged over a 1 s burst (0 = no limit); beyond it DISCONNECT 0x96. */
  maxPublishRatePerClient: number;
  /** Password file (`user:hash` lines, written by `main.ts passwd`); unset: user names are not checked. */
  passwordFile?: string;
  /** Role-based ACL file (YAML); unset: every action is allowed. Once set, deny by default. */
  aclFile?: string;
  /** Delay before the CONNACK that refuses a failed authentication (slows password guessing), ms. */
  authFailDelayMs: number;
  /** Hash algorithm `main.ts passwd` uses for new passwords. */
  passwordAlgorithm: PasswordAlgorithm;
  /** PBKDF2-SHA512 iterations for new passwords; cheaper hashes in the file are warned about. */
  passwordIterations: number;
  /** A verified client certificate's Common Name becomes the user name (and authenticates). */
  useCertificateCnAsUsername: boolean;
  /** Port of the HTTP metrics endpoint (`/metrics`, `/healthz`); 0 = no endpoint. */
  metricsPort: number;
  /** Address the metrics endpoint listens on. */
  metricsHost: string;
  /** How often `$SYS/broker/...` retained messages are refreshed, in seconds; 0 = none. */
  sysIntervalSec: number;
}

/** Built-in defaults: localhost only, anonymous clients only from loopback addresses. */
export const DEFAULT_OPTIONS: Readonly<BrokerOptions> = Object.freeze({
  listeners: [{ type: "tcp", host: "127.0.0.1", port: 1883 }],
  dataPath: "./data/broker.db",
  logLevel: "info",
  allowAnonymous: "loopback",
  allowMqtt31: true,
  maxConnections: 20_000,
  connectTimeoutMs: 10_000,
  maxPacketSize: 1_048_576,
  receiveMaximum: 1_024,
  maxInflightOut: 1_024,
  topicAliasMaximum: 64,
  maxKeepAliveSec: 0,
  maximumQos: 2,
  retainAvailable: true,
  wildcardSubscriptionAvailable: true,
  subscriptionIdentifierAvailable: true,
  sharedSubscriptionAvailable: true,
  maxSessionExpirySec: 0xFFFF_FFFF,
  persistentSessionExpirySec: 0xFFFF_FFFF,
  maxQueuedMessages: 100_000,
  maxQueuedBytes: 64 * 1024 * 1024,
  maxRetainedMessages: 100_000,
  maxRetainedBytes: 256 * 1024 * 1024,
  outboxSoftLimitBytes: 1024 * 1024,
  outboxHardLimitBytes: 16 * 1024 * 1024,
  retryIntervalMs: 20_000,
  closeOnOverdueAck: false,
  maxSubscriptionsPerClient: 10_000,
  maxTopicLength: 65_535,
  maxTopicLevels: 128,
  storeCommitWindowMs: 0,
  storeCheckpointIntervalMs: 1_000,
  storeJournalMaxBytes: 16 * 1024 * 1024,
  maxConnectRatePerAddress: 0,
  maxPublishRatePerClient: 0,
  passwordFile: undefined,
  aclFile: undefined,
  authFailDelayMs: 1_000,
  passwordAlgorithm: "pbkdf2-sha512",
  passwordIterations: DEFAULT_PBKDF2_ITERATIONS,
  useCertificateCnAsUsername: false,
  metricsPort: 0,
  metricsHost: "127.0.0.1",
  sysIntervalSec: 0,
}) as Readonly<BrokerOptions>;

/** Returns full options: the defaults overlaid with what the caller gave. */
export function resolveOptions(partial: Partial<BrokerOptions> = {}): BrokerOptions {
  return {
    ...DEFAULT_OPTIONS,
    ...partial,
    listeners: (partial.listeners ?? DEFAULT_OPTIONS.listeners).map((l) => ({ ...l })),
  };
}
