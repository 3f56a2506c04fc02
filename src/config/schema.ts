import { MAX_PBKDF2_ITERATIONS, PASSWORD_ALGORITHMS } from "../auth/mod.ts";
import type { BrokerOptions } from "../broker/mod.ts";

/** Fewest PBKDF2 iterations `password_iterations` and `passwd --iterations` accept. */
export const MIN_PASSWORD_ITERATIONS = 1_000;

/** What a YAML value must be. */
export type ValueRule =
  | { readonly kind: "int"; readonly min: number; readonly max: number }
  | { readonly kind: "bool" }
  | { readonly kind: "string" }
  | { readonly kind: "enum"; readonly values: readonly string[] }
  /** true, false, or one of `values`. */
  | { readonly kind: "bool_or"; readonly values: readonly string[] }
  /** A non-empty file path, or nothing (the key with no value) for none. */
  | { readonly kind: "path" };

/** One scalar config key and the {@link BrokerOptions} field it sets. */
export interface ConfigKey {
  /** The snake_case YAML key, without its section (`receive_maximum`). */
  readonly key: string;
  /** The option it sets. */
  readonly field: keyof BrokerOptions;
  /** What the value must be. */
  readonly rule: ValueRule;
}

/** Largest delay `setTimeout` honours (2^31 - 1 ms); longer ones fire at once. */
const MAX_TIMER_MS = 2_147_483_647;
/** Upper bound for counts where only "positive" matters. */
const MAX_COUNT = 2_147_483_647;
/** Largest MQTT packet: 1 fixed-header byte + 4 length bytes + 268,435,455 (spec 2.2.3). */
export const MAX_MQTT_PACKET_SIZE = 268_435_460;
/** Largest Four Byte Integer, used for expiry intervals. */
const MAX_U32 = 0xFFFF_FFFF;

function int(min: number, max: number): ValueRule {
  return { kind: "int", min, max };
}
const BOOL: ValueRule = { kind: "bool" };

/** Log levels accepted by `log_level` and `--log-level`. */
export const LOG_LEVELS = ["error", "warn", "info", "debug"] as const;

/** Scalar keys at the top level of the file. `listeners` and `limits` are handled apart. */
export const TOP_LEVEL_KEYS: readonly ConfigKey[] = [
  { key: "data", field: "dataPath", rule: { kind: "string" } },
  { key: "log_level", field: "logLevel", rule: { kind: "enum", values: LOG_LEVELS } },
  {
    key: "allow_anonymous",
    field: "allowAnonymous",
    rule: { kind: "bool_or", values: ["loopback"] },
  },
  { key: "allow_mqtt31", field: "allowMqtt31", rule: BOOL },
  { key: "password_file", field: "passwordFile", rule: { kind: "path" } },
  { key: "acl_file", field: "aclFile", rule: { kind: "path" } },
  { key: "auth_fail_delay_ms", field: "authFailDelayMs", rule: int(0, 60_000) },
  {
    key: "password_algorithm",
    field: "passwordAlgorithm",
    rule: { kind: "enum", values: PASSWORD_ALGORITHMS },
  },
  {
    key: "password_iterations",
    field: "passwordIterations",
    rule: int(MIN_PASSWORD_ITERATIONS, MAX_PBKDF2_ITERATIONS),
  },
  { key: "use_certificate_cn_as_username", field: "useCertificateCnAsUsername", rule: BOOL },
  { key: "metrics_port", field: "metricsPort", rule: int(0, 65_535) },
  { key: "metrics_host", field: "metricsHost", rule: { kind: "string" } },
  { key: "sys_interval_sec", field: "sysIntervalSec", rule: int(0, 86_400) },
];

/** Keys of the `limits:` mapping. */
export const LIMIT_KEYS: readonly ConfigKey[] = [
  { key: "max_connections", field: "maxConnections", rule: int(1, MAX_COUNT) },
  { key: "connect_timeout_ms", field: "connectTimeoutMs", rule: int(1, MAX_TIMER_MS) },
  { key: "max_packet_size", field: "maxPacketSize", rule: int(1, MAX_MQTT_PACKET_SIZE) },
  { key: "receive_maximum", field: "receiveMaximum", rule: int(1, 65_535) },
  { key: "max_inflight_out", field: "maxInflightOut", rule: int(1, 65_535) },
  { key: "topic_alias_maximum", field: "topicAliasMaximum", rule: int(0, 65_535) },
  { key: "max_keep_alive_sec", field: "maxKeepAliveSec", rule: int(0, 65_535) },
  { key: "maximum_qos", field: "maximumQos", rule: int(0, 2) },
  { key: "retain_available", field: "retainAvailable", rule: BOOL },
  { key: "wildcard_subscription_available", field: "wildcardSubscriptionAvailable", rule: BOOL },
  {
    key: "subscription_identifier_available",
    field: "subscriptionIdentifierAvailable",
    rule: BOOL,
  },
  { key: "shared_subscription_available", field: "sharedSubscriptionAvailable", rule: BOOL },
  { key: "max_session_expiry_sec", field: "maxSessionExpirySec", rule: int(0, MAX_U32) },
  {
    key: "persistent_session_expiry_sec",
    field: "persistentSessionExpirySec",
    rule: int(0, MAX_U32),
  },
  { key: "max_queued_messages", field: "maxQueuedMessages", rule: int(0, MAX_COUNT) },
  { key: "max_queued_bytes", field: "maxQueuedBytes", rule: int(0, Number.MAX_SAFE_INTEGER) },
  { key: "max_retained_messages", field: "maxRetainedMessages", rule: int(0, MAX_COUNT) },
  { key: "max_retained_bytes", field: "maxRetainedBytes", rule: int(0, Number.MAX_SAFE_INTEGER) },
  {
    key: "outbox_soft_limit_bytes",
    field: "outboxSoftLimitBytes",
    rule: int(0, Number.MAX_SAFE_INTEGER),
  },
  {
    key: "outbox_hard_limit_bytes",
    field: "outboxHardLimitBytes",
    rule: int(1, Number.MAX_SAFE_INTEGER),
  },
  { key: "retry_interval_ms", field: "retryIntervalMs", rule: int(1, MAX_TIMER_MS) },
  { key: "close_on_overdue_ack", field: "closeOnOverdueAck", rule: BOOL },
  {
    key: "max_subscriptions_per_client",
    field: "maxSubscriptionsPerClient",
    rule: int(1, MAX_COUNT),
  },
  { key: "max_topic_length", field: "maxTopicLength", rule: int(1, 65_535) },
  { key: "max_topic_levels", field: "maxTopicLevels", rule: int(1, 65_535) },
  { key: "store_commit_window_ms", field: "storeCommitWindowMs", rule: int(0, 1_000) },
  {
    key: "store_checkpoint_interval_ms",
    field: "storeCheckpointIntervalMs",
    rule: int(10, 3_600_000),
  },
  {
    key: "store_journal_max_bytes",
    field: "storeJournalMaxBytes",
    rule: int(64 * 1024, MAX_COUNT),
  },
  {
    key: "max_connect_rate_per_address",
    field: "maxConnectRatePerAddress",
    rule: int(0, MAX_COUNT),
  },
  { key: "max_publish_rate_per_client", field: "maxPublishRatePerClient", rule: int(0, MAX_COUNT) },
];

/** Keys of each entry of the `listeners:` sequence. */
export const LISTENER_KEYS = [
  "type",
  "host",
  "port",
  "cert_file",
  "key_file",
  "ca_file",
  "require_client_cert",
  "path",
] as const;
/** Listener transports the broker knows. */
export const LISTENER_TYPES = ["tcp", "tls", "ws", "wss"] as const;
/** Listener keys that only some transports take, and which ones. */
export const LISTENER_KEY_TYPES: { readonly [key: string]: readonly string[] } = {
  cert_file: ["tls", "wss"],
  key_file: ["tls", "wss"],
  ca_file: ["tls"],
  require_client_cert: ["tls"],
  path: ["ws", "wss"],
};
/** Port a listener binds when the file names none; `ws` and `wss` have no registered port. */
export const DEFAULT_LISTENER_PORTS: { readonly [type: string]: number | undefined } = {
  tcp: 1883,
  tls: 8883,
};
/** TCP port range; 0 asks the OS for a free port. */
export const PORT_RULE: ValueRule = int(0, 65_535);
