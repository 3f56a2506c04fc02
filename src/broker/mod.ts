/**
 * The broker: accepts connections, runs sessions, routes messages.
 *
 * @module
 */
export * from "./options.ts";
export { Broker } from "./broker.ts";
export type { AuthReloadResult, BrokerDeps } from "./broker.ts";
