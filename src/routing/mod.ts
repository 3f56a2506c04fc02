/**
 * Routing: the subscription tree (wildcards, shared groups), retained
 * messages and the routed message model. Knows nothing of transports.
 *
 * @module
 */
export * from "./message.ts";
export * from "./retained_store.ts";
export * from "./subscription_tree.ts";
