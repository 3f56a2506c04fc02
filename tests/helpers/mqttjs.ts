/**
 * Connects MQTT.js (a real third-party client, over `node:net`) to a test
 * broker and closes it so the ops and resources sanitizers stay clean.
 *
 * Every client records what it receives from the moment it is created, so
 * messages the broker sends right after CONNACK (queued session messages,
 * retained messages) are never missed.
 */
import mqtt from "mqtt";
import type {
  IClientOptions,
  IConnackPacket,
  IDisconnectPacket,
  IPublishPacket,
  MqttClient,
} from "mqtt";

export type { IClientOptions, IPublishPacket, MqttClient };

/** One PUBLISH as MQTT.js delivered it. */
export interface Received {
  topic: string;
  payload: string;
  packet: IPublishPacket;
}

/** Options of {@link connectMqttJs}: MQTT.js options minus the connection target. */
export type MqttJsOptions = Omit<IClientOptions, "host" | "port" | "protocol"> & {
  /** 5 (default) or 4. */
  protocolVersion?: 4 | 5;
  /** Transport: `mqtt` (TCP, default), `mqtts` (TLS), `ws` or `wss` (WebSocket on `path`). */
  protocol?: "mqtt" | "mqtts" | "ws" | "wss";
};

/** A connected MQTT.js client with everything it received. */
export class MqttJsClient implements AsyncDisposable {
  readonly client: MqttClient;
  /** Messages as MQTT.js hands them to the application (QoS 2 only after PUBREL). */
  readonly messages: Received[] = [];
  /** PUBLISH packets in the order they arrived on the socket. */
  readonly wire: IPublishPacket[] = [];
  /** DISCONNECT packets the broker sent (v5). */
  readonly disconnects: IDisconnectPacket[] = [];
  /** Errors MQTT.js emitted (recorded so an unhandled 'error' event never throws). */
  readonly errors: Error[] = [];
  connack?: IConnackPacket;
  #closed = false;
  #waiters: (() => void)[] = [];
  #streamClosed: Promise<void>;

  constructor(client: MqttClient) {
    this.client = client;
    client.on("message", (topic, payload, packet) => {
      this.messages.push({ topic, payload: payload.toString(), packet });
      this.#wake();
    });
    client.on("packetreceive", (packet) => {
      if (packet.cmd === "publish") this.wire.push(packet);
    });
    client.on("disconnect", (packet) => {
      this.disconnects.push(packet);
      this.#wake();
    });
    client.on("error", (err) => {
      this.errors.push(err);
      this.#wake();
    });
    client.on("close", () => this.#wake());
    this.#streamClosed = new Promise((resolve) => {
      const stream = client.stream;
      if (stream.destroyed) resolve();
      else stream.once("close", () => resolve());
    });
  }

  /** Messages received on `topic`. */
  on(topic: string): Received[] {
    return this.messages.filter((m) => m.topic === topic);
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** Resolves once `predicate` holds (checked on every client event), or throws after `timeoutMs`. */
  async until(predicate: () => boolean, what: string, timeoutMs = 2_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `timed out waiting for ${what}; received ${
            JSON.stringify(this.messages.map((m) => [m.topic, m.payload]))
          }`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        timer = setTimeout(resolve, left);
        this.#waiters.push(resolve);
      });
      clearTimeout(timer);
    }
  }

  /** Waits until at least `count` messages arrived in total. */
  waitForMessages(count: number, timeoutMs = 2_000): Promise<void> {
    return this.until(() => this.messages.length >= count, `${count} message(s)`, timeoutMs);
  }

  /**
   * Simulates a network failure: destroys the socket without DISCONNECT, then
   * stops MQTT.js's timers. The broker sees a close without DISCONNECT.
   */
  async destroy(): Promise<void> {
    this.client.stream.destroy();
    await this.#streamClosed;
    await this.close();
  }

  /**
   * Closes cleanly: DISCONNECT 0x00 when still connected, else a forced end.
   * Waits for the socket to close so no resource outlives the test.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const c = this.client;
    if (c.connected && !c.stream.destroyed) {
      // MQTT.js's endAsync() waits for DISCONNECT to be written, then ends the stream.
      await c.endAsync();
    } else {
      await c.endAsync(true);
    }
    c.stream.destroy();
    await this.#streamClosed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Connects MQTT.js to 127.0.0.1:`port` with protocol `protocolVersion`
 * (default 5), no reconnection and a short connect timeout. Resolves after a
 * successful CONNACK; rejects (and cleans up) on refusal or timeout.
 */
export async function connectMqttJs(
  port: number,
  options: MqttJsOptions = {},
): Promise<MqttJsClient> {
  const client = mqtt.connect({
    host: "127.0.0.1",
    port,
    protocol: "mqtt",
    protocolVersion: 5,
    reconnectPeriod: 0,
    connectTimeout: 2_000,
    keepalive: 60,
    clientId: "js-" + Math.random().toString(36).slice(2, 10),
    ...options,
  });
  const js = new MqttJsClient(client);
  try {
    js.connack = await new Promise<IConnackPacket>((resolve, reject) => {
      const onConnect = (connack: IConnackPacket) => {
        cleanup();
        resolve(connack);
      };
      const onError = (err: Error) => {
        cleanup();
        reject(err);
      };
      const onClose = () => {
        cleanup();
        reject(new Error("connection closed before CONNACK"));
      };
      const cleanup = () => {
        client.off("connect", onConnect);
        client.off("error", onError);
        client.off("close", onClose);
      };
      client.on("connect", onConnect);
      client.on("error", onError);
      client.on("close", onClose);
    });
  } catch (err) {
    await js.close();
    throw err;
  }
  // MQTT.js emits 'connect' when its outgoing-store replay stream ends, and that stream's
  // destroy() then arms a 0 ms timer (lib/store.js). Let it fire here so the ops sanitizer
  // never sees it straddle two tests.
  await settle(5);
  return js;
}

/** Resolves after `ms` (a short wait to prove that no duplicate or stray packet arrives). */
export function settle(ms = 150): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
