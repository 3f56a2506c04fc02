/**
 * MQTT over WebSocket (MQTT 5.0 §6): `Deno.serve` + `Deno.upgradeWebSocket` on one path, with
 * the `mqtt` subprotocol, behind the same {@link ConnListener}/{@link ByteConn} seam as TCP.
 *
 * WebSocket messages are treated as a byte stream: MQTT.js splits one MQTT packet over several
 * binary frames and may put several packets in one, so the connection's streaming decoder does
 * the framing [MQTT-6.0.0-2]. Text frames close the connection [MQTT-6.0.0-1].
 *
 * `upgradeWebSocket({ protocol })` throws when the client did not offer the protocol, or listed
 * it as `mqtt,mqttv3.1` without a space (deno-notes §4), so the header is parsed here and the
 * chosen protocol written onto the response.
 *
 * @module
 */
import type { Logger } from "../observe/log.ts";
import {
  readTlsMaterial,
  rebindWhenFree,
  type TlsFiles,
  type TlsMaterial,
  warnIfNotValidNow,
} from "./tls.ts";
import { ChunkQueue } from "./chunk_queue.ts";
import type { ByteConn, ConnListener } from "./transport.ts";

/** Default HTTP path of WebSocket listeners. */
export const DEFAULT_WEBSOCKET_PATH = "/mqtt";
/** Subprotocols accepted, in order of preference (`mqttv3.1` is what MQTT 3.1 clients offer). */
export const MQTT_WEBSOCKET_PROTOCOLS = ["mqtt", "mqttv3.1"] as const;

/** Default of {@link WebSocketListenerOptions.maxBufferedBytes}. */
const DEFAULT_MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
/** Bytes queued in the WebSocket send buffer above which `write` waits for it to drain. */
const SEND_HIGH_WATER = 256 * 1024;
/** How often a `write` waiting on a full send buffer looks again, ms. */
const SEND_POLL_MS = 5;

/** Options of {@link WebSocketListener.open}. */
export interface WebSocketListenerOptions {
  /** Address to bind. */
  host: string;
  /** Port to bind; 0 picks one. */
  port: number;
  /** HTTP path of the MQTT endpoint; default `/mqtt`. Other paths answer 404. */
  path?: string;
  /** Certificate and key files for `wss://`; plain `ws://` without. */
  tls?: TlsFiles;
  /** Where refused upgrades, dropped connections and reloads are logged. */
  logger?: Logger;
  /**
   * Received bytes a connection may hold unread. A WebSocket cannot be paused the way a TCP
   * socket is, so a client that sends faster than the broker reads is closed (1008) here.
   */
  maxBufferedBytes?: number;
}

/**
 * Picks the subprotocol from a `Sec-WebSocket-Protocol` request header: `mqtt` if offered,
 * else `mqttv3.1`, else undefined. Tokens are split on commas with or without spaces.
 */
export function chooseMqttProtocol(header: string | null): string | undefined {
  if (header === null) return undefined;
  const offered = header.split(",").map((token) => token.trim());
  return MQTT_WEBSOCKET_PROTOCOLS.find((p) => offered.includes(p));
}

function textResponse(status: number, text: string, headers: Record<string, string> = {}) {
  return new Response(text + "\n", {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  });
}

/**
 * A `ws://` or `wss://` listener. `wss://` certificate reloads restart the HTTPS server on the
 * same address, because `Deno.serve` fixes its certificate at start; Deno closes upgraded
 * WebSockets when their server shuts down (1001 Going Away), so open `wss://` clients are
 * disconnected by a reload whose files changed and reconnect with the new certificate.
 */
export class WebSocketListener implements ConnListener {
  readonly host: string;
  readonly port: number;
  /** The HTTP path served. */
  readonly path: string;
  readonly #options: WebSocketListenerOptions;
  readonly #logger?: Logger;
  readonly #maxBufferedBytes: number;
  #material?: TlsMaterial;
  #server: Deno.HttpServer<Deno.NetAddr>;
  readonly #ready: WebSocketByteConn[] = [];
  #waiter?: (conn: ByteConn | null) => void;
  #closed = false;

  private constructor(options: WebSocketListenerOptions, material: TlsMaterial | undefined) {
    this.#options = options;
    this.#logger = options.logger;
    this.path = options.path ?? DEFAULT_WEBSOCKET_PATH;
    this.#maxBufferedBytes = options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
    this.#material = material;
    this.#server = this.#serve(options.host, options.port, material);
    this.host = this.#server.addr.hostname;
    this.port = this.#server.addr.port;
  }

  /** Reads the certificate files (for `wss://`) and starts serving. */
  static async open(options: WebSocketListenerOptions): Promise<WebSocketListener> {
    const path = options.path ?? DEFAULT_WEBSOCKET_PATH;
    if (!path.startsWith("/")) {
      throw new TypeError(`WebSocket path must start with "/", got ${JSON.stringify(path)}`);
    }
    let material: TlsMaterial | undefined;
    if (options.tls) {
      material = await readTlsMaterial(options.tls);
      warnIfNotValidNow(material, options.tls, options.logger);
    }
    return new WebSocketListener(options, material);
  }

  #serve(host: string, port: number, material: TlsMaterial | undefined) {
    return Deno.serve({
      hostname: host,
      port,
      ...(material ? { cert: material.cert, key: material.key } : {}),
      onListen: () => {}, // Deno.serve prints "Listening on ..." by default
      onError: (err) => {
        this.#logger?.warn("WebSocket listener request failed", { error: err });
        return textResponse(500, "Internal Server Error");
      },
    }, (req, info) => this.#handle(req, info));
  }

  #handle(req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>): Response {
    const url = new URL(req.url);
    if (url.pathname !== this.path) {
      return textResponse(404, `Not Found: MQTT over WebSocket is served on ${this.path}`);
    }
    if (this.#closed) return textResponse(503, "Service Unavailable: the broker is stopping");
    const upgrade = req.headers.get("upgrade");
    if (req.method !== "GET" || upgrade?.toLowerCase() !== "websocket") {
      return textResponse(
        426,
        `Upgrade Required: ${this.path} accepts only WebSocket upgrades (GET with ` +
          `Upgrade: websocket and Sec-WebSocket-Protocol: mqtt)`,
        { upgrade: "websocket" },
      );
    }
    const offered = req.headers.get("sec-websocket-protocol");
    const protocol = chooseMqttProtocol(offered);
    if (protocol === undefined) {
      this.#logger?.info("WebSocket upgrade refused", {
        address: info.remoteAddr.hostname,
        reason: "no mqtt subprotocol offered",
        offered: offered ?? undefined,
      });
      return textResponse(
        400,
        `Bad Request: Sec-WebSocket-Protocol must offer "mqtt" (MQTT 5.0 section 6), got ` +
          (offered === null ? "no Sec-WebSocket-Protocol header" : JSON.stringify(offered)),
      );
    }
    // Read before the upgrade: afterwards the request is closed and remoteAddr throws.
    const remote = info.remoteAddr;
    let upgraded: { socket: WebSocket; response: Response };
    try {
      // Broker keep-alive covers dead peers; Deno's 30 s ping timer would be a second one.
      upgraded = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
    } catch (err) {
      return textResponse(400, `Bad Request: ${(err as Error).message}`);
    }
    // Set here rather than through `protocol:`, which rejects "mqtt,mqttv3.1" (no space).
    upgraded.response.headers.set("sec-websocket-protocol", protocol);
    const conn = new WebSocketByteConn(
      upgraded.socket,
      remote,
      this.#maxBufferedBytes,
      this.#logger,
    );
    upgraded.socket.addEventListener("open", () => this.#deliver(conn), { once: true });
    return upgraded.response;
  }

  #deliver(conn: WebSocketByteConn): void {
    if (this.#closed) {
      conn.close();
      return;
    }
    const waiter = this.#waiter;
    this.#waiter = undefined;
    if (waiter) waiter(conn);
    else this.#ready.push(conn);
  }

  accept(): Promise<ByteConn | null> {
    const ready = this.#ready.shift();
    if (ready) return Promise.resolve(ready);
    if (this.#closed) return Promise.resolve(null);
    return new Promise((resolve) => this.#waiter = resolve);
  }

  async reloadCertificates(): Promise<boolean> {
    if (!this.#options.tls || !this.#material) return false;
    const material = await readTlsMaterial(this.#options.tls);
    const old = this.#material;
    if (
      this.#closed ||
      (material.cert === old.cert && material.key === old.key)
    ) return false;
    warnIfNotValidNow(material, this.#options.tls, this.#logger);
    const server = this.#server;
    // The socket is free again only once the old server has shut down.
    await server.shutdown();
    try {
      this.#server = await rebindWhenFree(() => this.#serve(this.host, this.port, material));
    } catch (err) {
      this.close();
      throw new Error(
        `Cannot bind ${this.host}:${this.port} again after a certificate reload: ` +
          (err as Error).message,
        { cause: err },
      );
    }
    this.#material = material;
    return true;
  }

  /**
   * Stops handing out connections; new upgrade requests get 503. The HTTP server keeps running
   * until {@link release}, because shutting it down would close the open WebSockets before the
   * broker has sent them its DISCONNECT.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const conn of this.#ready.splice(0)) conn.close();
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.(null);
  }

  async release(): Promise<void> {
    this.close();
    await this.#server.shutdown();
  }
}

/**
 * A {@link ByteConn} over a server-side WebSocket: binary messages are queued as a byte stream
 * for `read()`, each `write()` is one binary message.
 */
class WebSocketByteConn implements ByteConn {
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly #socket: WebSocket;
  readonly #maxBufferedBytes: number;
  readonly #logger?: Logger;
  readonly #queue = new ChunkQueue();

  constructor(
    socket: WebSocket,
    remote: Deno.NetAddr,
    maxBufferedBytes: number,
    logger: Logger | undefined,
  ) {
    this.#socket = socket;
    this.remoteAddress = remote.hostname;
    this.remotePort = remote.port;
    this.#maxBufferedBytes = maxBufferedBytes;
    this.#logger = logger;
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event: MessageEvent) => this.#onMessage(event.data);
    socket.onclose = () => this.#queue.end();
    socket.onerror = (event) => {
      this.#queue.fail(new Error((event as ErrorEvent).message || "WebSocket error"));
    };
  }

  #onMessage(data: unknown): void {
    if (this.#queue.ended) return;
    if (typeof data === "string") {
      // [MQTT-6.0.0-1] MQTT Control Packets travel in binary frames only.
      this.#drop(1003, "MQTT over WebSocket uses binary frames only", "text frame received");
      return;
    }
    const chunk = new Uint8Array(data as ArrayBuffer);
    if (chunk.length === 0) return;
    if (this.#queue.buffered + chunk.length > this.#maxBufferedBytes) {
      this.#drop(1008, "receive buffer full", `more than ${this.#maxBufferedBytes} bytes unread`);
      return;
    }
    this.#queue.push(chunk);
  }

  /** Closes with a WebSocket close code; the reader sees the end of the stream. */
  #drop(code: number, closeReason: string, why: string): void {
    this.#logger?.info("WebSocket connection dropped", {
      address: this.remoteAddress,
      port: this.remotePort,
      reason: why,
    });
    this.#queue.clear();
    this.#queue.fail(new Error(`WebSocket: ${why}`));
    this.#closeSocket(code, closeReason);
    this.#queue.end();
  }

  #closeSocket(code?: number, reason?: string): void {
    if (this.#socket.readyState === WebSocket.OPEN) {
      try {
        this.#socket.close(code, reason);
      } catch { /* closing already */ }
    }
  }

  read(buf: Uint8Array): Promise<number | null> {
    return this.#queue.read(buf);
  }

  async write(buf: Uint8Array): Promise<number> {
    const socket = this.#socket;
    if (socket.readyState !== WebSocket.OPEN) {
      throw new Deno.errors.BrokenPipe("WebSocket closed");
    }
    // One binary message per Outbox batch; the op copies the bytes.
    socket.send(buf);
    // No write callback exists: wait while the send buffer is full so the Outbox keeps counting.
    while (socket.readyState === WebSocket.OPEN && socket.bufferedAmount > SEND_HIGH_WATER) {
      await new Promise((resolve) => setTimeout(resolve, SEND_POLL_MS));
    }
    return buf.length;
  }

  closeWrite(): Promise<void> {
    // WebSocket has no half close: the close frame follows the queued messages, and the client
    // answers with its own close frame, which ends the read side.
    this.#closeSocket(1000);
    return Promise.resolve();
  }

  close(): void {
    this.#closeSocket(1000);
    this.#queue.end();
  }
}
