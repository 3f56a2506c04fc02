/**
 * The metrics endpoint: a small HTTP server (`Deno.serve`) with `GET /metrics` (Prometheus text)
 * and `GET /healthz`. It knows nothing of the broker: it serves what `render` returns.
 *
 * @module
 */
import type { Logger } from "./log.ts";

/** Options of {@link MetricsServer.open}. */
export interface MetricsServerOptions {
  host: string;
  /** 0 picks a free port (see {@link MetricsServer.port}). */
  port: number;
  /** The Prometheus text served at `/metrics`. */
  render: () => string;
  logger?: Logger;
}

/** A running metrics endpoint. */
export class MetricsServer {
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  /** The port it listens on. */
  readonly port: number;

  private constructor(server: Deno.HttpServer<Deno.NetAddr>) {
    this.#server = server;
    this.port = server.addr.port;
  }

  /**
   * Starts serving on host:port.
   * @throws {Deno.errors.AddrInUse} When the address is taken.
   */
  static open(options: MetricsServerOptions): MetricsServer {
    const { render, logger } = options;
    const server = Deno.serve({
      hostname: options.host,
      port: options.port,
      onListen: () => {},
      onError: (err) => {
        logger?.error("metrics request failed", { error: err });
        return new Response("internal error\n", { status: 500 });
      },
    }, (req) => {
      if (req.method !== "GET" && req.method !== "HEAD") {
        return new Response("method not allowed\n", { status: 405, headers: { allow: "GET" } });
      }
      const path = new URL(req.url).pathname;
      if (path === "/metrics") {
        return new Response(render(), {
          headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
        });
      }
      if (path === "/healthz") return new Response("ok\n");
      return new Response("not found: try /metrics or /healthz\n", { status: 404 });
    });
    return new MetricsServer(server);
  }

  /** Stops serving and waits until the server is down. */
  async close(): Promise<void> {
    await this.#server.shutdown();
  }
}
