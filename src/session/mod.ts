/**
 * Sessions: live session state and the persistence seam ({@link SessionStore})
 * with its in-memory implementation. The Deno KV store implements the same interface.
 *
 * @module
 */
export * from "./session.ts";
export * from "./store.ts";
export * from "./kv_store.ts";
export * from "./kv_records.ts";
