/**
 * MQTT over WebSocket: MQTT.js over `ws://` and `wss://` sharing one broker with TCP clients,
 * and a raw WebSocket client for what MQTT.js never does: subprotocol headers Deno's own
 * negotiation rejects, a packet split at every byte, two packets in one frame, text frames, and
 * requests that are not upgrades.
 */
import assert from "node:assert/strict";
import { encodePacket, type Packet, PacketDecoder, PacketType } from "../../src/codec/mod.ts";
import type { ListenerOptions } from "../../src/broker/mod.ts";
import { fingerprintOf, makeTestPki, serverFingerprint, type TestPki } from "../helpers/certs.ts";
import { connectMqttJs, type MqttJsOptions } from "../helpers/mqttjs.ts";
import { startBroker, type TestBroker } from "../helpers/start_broker.ts";

const WS: ListenerOptions = { type: "ws", host: "127.0.0.1", port: 0 };
const TCP: ListenerOptions = { type: "tcp", host: "127.0.0.1", port: 0 };

function portOf(b: TestBroker, type: ListenerOptions["type"]): number {
  const address = b.broker.addresses.find((a) => a.type === type);
  assert.ok(address, `no ${type} listener`);
  return address.port;
}

function connectWs(port: number, options: MqttJsOptions = {}) {
  return connectMqttJs(port, { protocol: "ws", path: "/mqtt", ...options });
}

// ---------------------------------------------------------------- raw WebSocket client

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** An HTTP response read off a raw socket. */
interface RawResponse {
  status: number;
  headers: Headers;
  body: string;
}

/** `promise`, or a rejection after `ms` (the caller then closes the socket, ending the read). */
async function withTimeout<T>(promise: Promise<T>, what: string, ms = 2_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out reading ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A minimal RFC 6455 client over TCP: masked frames out, frames in. */
class RawWebSocket implements AsyncDisposable {
  readonly conn: Deno.TcpConn;
  #pending = new Uint8Array(0);
  #closed = false;
  readonly #decoder = new PacketDecoder({ side: "client", protocolVersion: 5 });

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Sends `GET path` with the given headers and reads the response head (and a short body). */
  static async request(
    port: number,
    path: string,
    headers: Record<string, string>,
  ): Promise<{ response: RawResponse; socket: RawWebSocket }> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const socket = new RawWebSocket(conn);
    try {
      const lines = [`GET ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`];
      for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
      await conn.write(encoder.encode(lines.join("\r\n") + "\r\n\r\n"));
      const head = await withTimeout(socket.#readUntilHeadEnd(), "the response");
      const [statusLine, ...headerLines] = head.split("\r\n");
      const responseHeaders = new Headers();
      for (const line of headerLines) {
        const i = line.indexOf(":");
        responseHeaders.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
      }
      const status = Number(statusLine.split(" ")[1]);
      let body = "";
      const length = Number(responseHeaders.get("content-length") ?? 0);
      if (status !== 101 && length > 0) body = decoder.decode(await socket.#readBytes(length));
      return { response: { status, headers: responseHeaders, body }, socket };
    } catch (err) {
      socket.close();
      throw err;
    }
  }

  /** Opens a WebSocket on `/mqtt` offering `protocol`; throws unless the server answers 101. */
  static async open(port: number, protocol = "mqtt"): Promise<RawWebSocket> {
    const { response, socket } = await RawWebSocket.request(port, "/mqtt", {
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version": "13",
      "Sec-WebSocket-Protocol": protocol,
    });
    if (response.status !== 101) {
      socket.close();
      throw new Error(`upgrade refused: ${response.status} ${response.body}`);
    }
    return socket;
  }

  async #fill(): Promise<void> {
    const buf = new Uint8Array(65_536);
    const n = await this.conn.read(buf);
    if (n === null) throw new Error("connection closed");
    const next = new Uint8Array(this.#pending.length + n);
    next.set(this.#pending);
    next.set(buf.subarray(0, n), this.#pending.length);
    this.#pending = next;
  }

  async #readBytes(n: number): Promise<Uint8Array> {
    while (this.#pending.length < n) await this.#fill();
    const out = this.#pending.slice(0, n);
    this.#pending = this.#pending.slice(n);
    return out;
  }

  async #readUntilHeadEnd(): Promise<string> {
    for (;;) {
      const text = decoder.decode(this.#pending);
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        this.#pending = this.#pending.slice(end + 4);
        return text.slice(0, end);
      }
      await this.#fill();
    }
  }

  /** Sends one masked frame (FIN set). */
  async send(opcode: number, payload: Uint8Array): Promise<void> {
    const mask = crypto.getRandomValues(new Uint8Array(4));
    const len = payload.length;
    const head = len < 126
      ? [0x80 | opcode, 0x80 | len]
      : [0x80 | opcode, 0x80 | 126, len >> 8, len & 0xff];
    const frame = new Uint8Array(head.length + 4 + len);
    frame.set(head);
    frame.set(mask, head.length);
    for (let i = 0; i < len; i++) frame[head.length + 4 + i] = payload[i] ^ mask[i % 4];
    await this.conn.write(frame);
  }

  sendBinary(payload: Uint8Array): Promise<void> {
    return this.send(0x2, payload);
  }

  /** Reads one frame (servers do not mask), or "closed" when the TCP connection ends. */
  frame(): Promise<{ opcode: number; payload: Uint8Array } | "closed"> {
    return withTimeout(this.#frame(), "a frame");
  }

  async #frame(): Promise<{ opcode: number; payload: Uint8Array } | "closed"> {
    try {
      const [b0, b1] = await this.#readBytes(2);
      let len = b1 & 0x7f;
      if (len === 126) {
        const ext = await this.#readBytes(2);
        len = (ext[0] << 8) | ext[1];
      } else if (len === 127) {
        const ext = await this.#readBytes(8);
        len = Number(new DataView(ext.buffer).getBigUint64(0));
      }
      return { opcode: b0 & 0x0f, payload: await this.#readBytes(len) };
    } catch {
      return "closed";
    }
  }

  /** Reads frames until the next MQTT packet decodes (frames may hold several, or part of one). */
  async packet(): Promise<Packet> {
    const d = this.#decoder;
    for (let p = d.next();; p = d.next()) {
      if (p) return p;
      const f = await this.frame();
      if (f === "closed") throw new Error("closed before a packet");
      assert.equal(f.opcode, 0x2, `expected a binary frame, got opcode ${f.opcode}`);
      d.push(f.payload);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch { /* closed */ }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

function connectBytes(clientId: string): Uint8Array {
  return encodePacket({
    type: PacketType.Connect,
    protocolName: "MQTT",
    protocolVersion: 5,
    cleanStart: true,
    keepAlive: 0,
    clientId,
  });
}

// ---------------------------------------------------------------- MQTT.js

Deno.test("ws: MQTT.js over ws:// and TCP clients exchange messages through one broker", async () => {
  await using b = await startBroker({ listeners: [TCP, WS] });
  const wsPort = portOf(b, "ws");
  await using tcpSub = await connectMqttJs(portOf(b, "tcp"));
  await using wsSub = await connectWs(wsPort);
  await using wsPub = await connectWs(wsPort, { protocolVersion: 4 });
  await tcpSub.client.subscribeAsync("x/#", { qos: 1 });
  await wsSub.client.subscribeAsync("x/#", { qos: 2 });
  await wsPub.client.publishAsync("x/from-ws", "hello", { qos: 1 });
  // Larger than one TCP segment and than MQTT.js's write chunks.
  const big = "z".repeat(200_000);
  await tcpSub.client.publishAsync("x/from-tcp", big, { qos: 2 });
  await tcpSub.waitForMessages(2);
  await wsSub.waitForMessages(2);
  assert.equal(tcpSub.on("x/from-ws")[0].payload, "hello");
  assert.equal(wsSub.on("x/from-ws")[0].payload, "hello");
  assert.equal(wsSub.on("x/from-tcp")[0].payload, big);
});

Deno.test("ws: stop() sends ws:// clients DISCONNECT 0x8B before the HTTP server goes", async () => {
  const b = await startBroker({ listeners: [WS] });
  try {
    await using c = await connectWs(portOf(b, "ws"));
    await b.stop();
    await c.until(() => c.disconnects.length > 0, "DISCONNECT");
    assert.equal(c.disconnects[0].reasonCode, 0x8b);
  } finally {
    await b.stop();
  }
});

Deno.test("wss: MQTT.js over wss:// publishes and subscribes; reload serves the new certificate", async () => {
  await using pki: TestPki = await makeTestPki();
  const files = { cert: `${pki.dir}/wss.crt`, key: `${pki.dir}/wss.key` };
  await Deno.copyFile(pki.server.cert, files.cert);
  await Deno.copyFile(pki.server.key, files.key);
  await using b = await startBroker({
    listeners: [TCP, {
      type: "wss",
      host: "127.0.0.1",
      port: 0,
      certFile: files.cert,
      keyFile: files.key,
      path: "/mqtt",
    }],
  }, { captureLogs: true });
  const wssPort = portOf(b, "wss");
  const ca = await Deno.readTextFile(pki.caCert);
  await using sub = await connectMqttJs(wssPort, { protocol: "wss", path: "/mqtt", ca });
  await using tcp = await connectMqttJs(portOf(b, "tcp"));
  await sub.client.subscribeAsync("s/#", { qos: 1 });
  await tcp.client.publishAsync("s/1", "secure ws", { qos: 1 });
  await sub.waitForMessages(1);
  assert.equal(sub.messages[0].payload, "secure ws");

  assert.equal(await serverFingerprint(wssPort, pki), await fingerprintOf(pki.server.cert));
  assert.deepEqual(await b.broker.reloadCertificates(), { reloaded: 0, unchanged: 1, failed: 0 });

  await Deno.copyFile(pki.server2.cert, files.cert);
  await Deno.copyFile(pki.server2.key, files.key);
  assert.deepEqual(
    await b.broker.reloadCertificates(),
    { reloaded: 1, unchanged: 0, failed: 0 },
    b.logs.join("\n"),
  );
  const second = await fingerprintOf(pki.server2.cert);
  assert.equal(await serverFingerprint(wssPort, pki), second);
  // Deno closes upgraded WebSockets when their server shuts down, so the reload dropped `sub`.
  await sub.until(() => !sub.client.connected, "the old wss connection to close");
  await using again = await connectMqttJs(wssPort, { protocol: "wss", path: "/mqtt", ca });
  await again.client.subscribeAsync("s/#", { qos: 1 });
  await tcp.client.publishAsync("s/2", "after reload", { qos: 1 });
  await again.waitForMessages(1);
  // A garbage key keeps the listener serving the current certificate.
  await Deno.writeTextFile(files.key, "garbage");
  assert.equal((await b.broker.reloadCertificates()).failed, 1);
  assert.ok(b.logs.some((l) => l.includes("certificate reload failed")), b.logs.join("\n"));
  assert.equal(await serverFingerprint(wssPort, pki), second);
});

// ---------------------------------------------------------------- raw WebSocket

Deno.test("ws: the mqtt subprotocol is chosen from headers Deno's own parsing rejects", async (t) => {
  await using b = await startBroker({ listeners: [WS] });
  const port = portOf(b, "ws");
  const cases: [offered: string | undefined, status: number, chosen?: string][] = [
    ["mqtt", 101, "mqtt"],
    ["mqtt,mqttv3.1", 101, "mqtt"], // no space after the comma
    ["mqttv3.1", 101, "mqttv3.1"],
    ["chat, mqtt", 101, "mqtt"],
    ["chat", 400],
    [undefined, 400],
  ];
  for (const [offered, status, chosen] of cases) {
    await t.step(`Sec-WebSocket-Protocol: ${offered ?? "(none)"} → ${status}`, async () => {
      const headers: Record<string, string> = {
        Upgrade: "websocket",
        Connection: "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
      };
      if (offered !== undefined) headers["Sec-WebSocket-Protocol"] = offered;
      const { response, socket } = await RawWebSocket.request(port, "/mqtt", headers);
      try {
        assert.equal(response.status, status, response.body);
        if (status === 101) {
          assert.equal(response.headers.get("sec-websocket-protocol"), chosen);
        } else {
          assert.match(response.body, /Sec-WebSocket-Protocol must offer "mqtt"/);
        }
      } finally {
        socket.close();
      }
    });
  }
});

Deno.test("ws: other paths answer 404 and plain GETs on the MQTT path 426", async () => {
  await using b = await startBroker({ listeners: [WS] });
  const port = portOf(b, "ws");
  const other = await fetch(`http://127.0.0.1:${port}/other`);
  assert.equal(other.status, 404);
  assert.match(await other.text(), /served on \/mqtt/);
  const plain = await fetch(`http://127.0.0.1:${port}/mqtt`);
  assert.equal(plain.status, 426);
  assert.equal(plain.headers.get("upgrade"), "websocket");
  assert.match(await plain.text(), /accepts only WebSocket upgrades/);
});

Deno.test("ws: a CONNECT split at every byte and two packets in one frame are reassembled [MQTT-6.0.0-2]", async () => {
  await using b = await startBroker({ listeners: [WS] });
  await using ws = await RawWebSocket.open(portOf(b, "ws"), "mqtt,mqttv3.1");
  for (const byte of connectBytes("raw-ws")) await ws.sendBinary(new Uint8Array([byte]));
  const connack = await ws.packet();
  assert.equal(connack.type, PacketType.Connack);
  // SUBSCRIBE and PINGREQ in a single frame.
  const subscribe = encodePacket({
    type: PacketType.Subscribe,
    packetId: 1,
    subscriptions: [{
      topicFilter: "a",
      qos: 0,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0,
    }],
  } as Packet);
  const ping = encodePacket({ type: PacketType.Pingreq });
  const both = new Uint8Array(subscribe.length + ping.length);
  both.set(subscribe);
  both.set(ping, subscribe.length);
  await ws.sendBinary(both);
  assert.equal((await ws.packet()).type, PacketType.Suback);
  assert.equal((await ws.packet()).type, PacketType.Pingresp);
  assert.equal(b.broker.connectedCount, 1);
});

Deno.test("ws: a text frame closes the connection with 1003 [MQTT-6.0.0-1]", async () => {
  await using b = await startBroker({ listeners: [WS] }, { captureLogs: true });
  await using ws = await RawWebSocket.open(portOf(b, "ws"));
  await ws.sendBinary(connectBytes("texter"));
  assert.equal((await ws.packet()).type, PacketType.Connack);
  await ws.send(0x1, encoder.encode("not mqtt"));
  const close = await ws.frame();
  assert.notEqual(close, "closed");
  if (close !== "closed") {
    assert.equal(close.opcode, 0x8);
    assert.equal((close.payload[0] << 8) | close.payload[1], 1003);
  }
  // Answer the close handshake, as a WebSocket client does; the broker then drops the client.
  await ws.send(0x8, close === "closed" ? new Uint8Array(0) : close.payload.slice(0, 2));
  const deadline = Date.now() + 2_000;
  while (b.broker.connectedCount > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(b.broker.connectedCount, 0);
  assert.ok(b.logs.some((l) => l.includes("text frame received")), b.logs.join("\n"));
});
