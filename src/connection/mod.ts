/**
 * Connections: the transport seam (byte streams and listeners over TCP, TLS, mutual TLS and
 * WebSocket) and the coalescing, bounded outbox. Knows nothing of sessions or routing;
 * `Deno.listen*`, `Deno.serve` and `node:tls` are used only here.
 *
 * @module
 */
export * from "./listeners.ts";
export * from "./outbox.ts";
export * from "./tls.ts";
export * from "./transport.ts";
export * from "./websocket.ts";
