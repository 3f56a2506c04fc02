import type { Logger } from "../observe/log.ts";
import { MutualTlsListener, TlsListener } from "./tls.ts";
import { TcpListener } from "./transport.ts";
import type { ConnListener } from "./transport.ts";
import { WebSocketListener } from "./websocket.ts";

/** Transports a listener can speak. */
export type ListenerType = "tcp" | "tls" | "ws" | "wss";

/** What {@link openListener} needs to know about one listener (the broker's `ListenerOptions`). */
export interface ListenerSpec {
  type: ListenerType;
  host: string;
  port: number;
  /** PEM certificate (chain); required for `tls` and `wss`. */
  certFile?: string;
  /** PEM private key; required for `tls` and `wss`. */
  keyFile?: string;
  /** PEM CA that client certificates must chain to; required with `requireClientCert`. */
  caFile?: string;
  /** `tls` only: require a client certificate (mutual TLS, served by `node:tls`). */
  requireClientCert?: boolean;
  /** `ws`/`wss` only: HTTP path, default `/mqtt`. */
  path?: string;
}

/** Collaborators and limits for {@link openListener}. */
export interface ListenerDeps {
  logger?: Logger;
  /** Handshake time limit of mutual TLS listeners, ms. */
  handshakeTimeoutMs?: number;
  /** Unread bytes a WebSocket connection may hold before it is closed. */
  maxBufferedBytes?: number;
}

/**
 * Opens the listener a spec describes: `Deno.listen` for `tcp`, `Deno.listenTls` for `tls`,
 * `node:tls` for `tls` with `requireClientCert`, `Deno.serve` for `ws` and `wss`.
 *
 * @throws {TypeError} When the spec is inconsistent (a `tls` listener without files, ...).
 * @throws {Error} When a file cannot be read, the key does not match, or the address is taken.
 */
export async function openListener(
  spec: ListenerSpec,
  deps: ListenerDeps = {},
): Promise<ConnListener> {
  const { logger } = deps;
  const where = `${spec.type} listener ${spec.host}:${spec.port}`;
  const needsFiles = spec.type === "tls" || spec.type === "wss";
  if (needsFiles && (spec.certFile === undefined || spec.keyFile === undefined)) {
    throw new TypeError(`The ${where} needs certFile and keyFile`);
  }
  if (!needsFiles && (spec.certFile !== undefined || spec.keyFile !== undefined)) {
    throw new TypeError(`The ${where} takes no certFile or keyFile`);
  }
  if (spec.type !== "tls" && (spec.requireClientCert || spec.caFile !== undefined)) {
    throw new TypeError(`Only tls listeners take requireClientCert and caFile (${where})`);
  }
  if (spec.path !== undefined && spec.type !== "ws" && spec.type !== "wss") {
    throw new TypeError(`Only ws and wss listeners take a path (${where})`);
  }
  switch (spec.type) {
    case "tcp":
      return new TcpListener(spec.host, spec.port);
    case "tls": {
      const files = { certFile: spec.certFile!, keyFile: spec.keyFile! };
      if (!spec.requireClientCert) {
        if (spec.caFile !== undefined) {
          throw new TypeError(`caFile is only used with requireClientCert (${where})`);
        }
        return await TlsListener.open({ host: spec.host, port: spec.port, files, logger });
      }
      if (spec.caFile === undefined) {
        throw new TypeError(`requireClientCert needs caFile (${where})`);
      }
      return await MutualTlsListener.open({
        host: spec.host,
        port: spec.port,
        files: { ...files, caFile: spec.caFile },
        logger,
        handshakeTimeoutMs: deps.handshakeTimeoutMs,
      });
    }
    case "ws":
    case "wss":
      return await WebSocketListener.open({
        host: spec.host,
        port: spec.port,
        path: spec.path,
        tls: spec.type === "wss" ? { certFile: spec.certFile!, keyFile: spec.keyFile! } : undefined,
        logger,
        maxBufferedBytes: deps.maxBufferedBytes,
      });
    default:
      throw new TypeError(`Unknown listener type ${JSON.stringify((spec as ListenerSpec).type)}`);
  }
}
