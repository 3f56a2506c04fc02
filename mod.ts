/**
 * MQTT 5.0 and 3.1.1 broker for Deno, as a library: construct a `Broker` with `BrokerOptions`
 * (see `DEFAULT_OPTIONS`) and a `Logger`, then `await broker.start()`.
 *
 * @module
 */
export * from "./src/broker/mod.ts";
export * from "./src/observe/log.ts";
