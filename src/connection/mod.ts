/**
 * Connections: the transport seam (byte streams and listeners) and the
 * coalescing, bounded outbox. Knows nothing of sessions or routing.
 *
 * @module
 */
export * from "./outbox.ts";
export * from "./transport.ts";
