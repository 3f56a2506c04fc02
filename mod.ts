/**
 * MQTT 5.0 and 3.1.1 broker for Deno, as a library: construct a `Broker` with `BrokerOptions`
 * (see `DEFAULT_OPTIONS`), optionally a `Logger`, a `SessionStore` and `AuthHooks`, then
 * `await broker.start()`. The packet codec is exported for clients and tools.
 *
 * @example
 * ```ts
 * import { Broker, resolveOptions } from "./mod.ts";
 * const broker = new Broker(
 *   resolveOptions({ listeners: [{ type: "tcp", host: "127.0.0.1", port: 0 }], dataPath: ":memory:" }),
 * );
 * await broker.start();
 * console.log("listening on", broker.addresses[0].port);
 * await broker.stop();
 * ```
 *
 * @module
 */
export * from "./src/broker/mod.ts";
export * from "./src/observe/log.ts";
export { Metrics } from "./src/observe/metrics.ts";
export type {
  AclAction,
  AclRule,
  AclRules,
  AnonymousPolicy,
  AuthHooks,
  AuthState,
  ClientInfo,
  ConnectRequest,
  FileAuthOptions,
  HashOptions,
  PasswordAlgorithm,
} from "./src/auth/mod.ts";
export {
  BoundAcl,
  defaultAuthHooks,
  FileAuth,
  hashPassword,
  parsePasswordFile,
  verifyPassword,
} from "./src/auth/mod.ts";
export {
  KvSessionStore,
  MemorySessionStore,
  NullSessionStore,
  type SessionRecord,
  type SessionStore,
  type StoredState,
} from "./src/session/mod.ts";
export type { ByteConn, ConnListener } from "./src/connection/mod.ts";
export * as codec from "./src/codec/mod.ts";
