/**
 * Ingress throughput of one client per transport: tcp, tls (Deno.listenTls), mutual TLS
 * (node:tls), ws and wss (Deno.serve). A publisher subprocess sends pre-encoded QoS 0 PUBLISH
 * packets in 64 KiB writes (one binary frame each over WebSocket) to an in-process broker with
 * no subscribers; the time from the first write until the broker has decoded them all is
 * measured.
 *
 *   deno run -A scripts/bench/transports.ts [--mb 256] [--payload 16000] [--runs 3]
 *
 * Needs openssl for the test PKI. Figures are for comparison between transports on one machine.
 */
import { parseArgs } from "node:util";
import { Broker, type ListenerOptions, resolveOptions } from "../../src/broker/mod.ts";
import { defaultAuthHooks } from "../../src/auth/mod.ts";
import { encodePacket, PacketType, type PublishPacket } from "../../src/codec/mod.ts";
import { makeTestPki } from "../../tests/helpers/certs.ts";

const { values } = parseArgs({
  options: {
    mb: { type: "string", default: "256" },
    payload: { type: "string", default: "16000" },
    runs: { type: "string", default: "3" },
    // Publisher mode (the subprocess): transport, port, and the PKI directory.
    send: { type: "string" },
    port: { type: "string" },
    pki: { type: "string" },
  },
});
const totalBytes = Number(values.mb) * 1024 * 1024;
const payloadSize = Number(values.payload);

const publish = encodePacket({
  type: PacketType.Publish,
  topic: "bench/t",
  qos: 0,
  retain: false,
  dup: false,
  payload: new Uint8Array(payloadSize),
} as PublishPacket);
const perChunk = Math.max(1, Math.floor(65_536 / publish.length));
const chunk = new Uint8Array(perChunk * publish.length);
for (let i = 0; i < perChunk; i++) chunk.set(publish, i * publish.length);
const chunks = Math.ceil(totalBytes / chunk.length);
const messages = chunks * perChunk;

if (values.send !== undefined) await sendAll(values.send, Number(values.port), values.pki!);
else await measure();

/** Publisher: CONNECT, then every chunk, then close. */
async function sendAll(transport: string, port: number, dir: string): Promise<void> {
  const connect = encodePacket({
    type: PacketType.Connect,
    protocolName: "MQTT",
    protocolVersion: 5,
    cleanStart: true,
    keepAlive: 0,
    clientId: "bench-" + Math.random().toString(36).slice(2),
  });
  if (transport === "ws" || transport === "wss") {
    // For wss the CA comes from `deno run --cert` (Deno's WebSocket takes no CA option).
    const ws = new WebSocket(`${transport}://localhost:${port}/mqtt`, ["mqtt"]);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = (e) => reject(new Error((e as ErrorEvent).message));
    });
    ws.send(connect);
    for (let i = 0; i < chunks; i++) {
      ws.send(chunk);
      while (ws.bufferedAmount > 1024 * 1024) await new Promise((r) => setTimeout(r, 1));
    }
    while (ws.bufferedAmount > 0) await new Promise((r) => setTimeout(r, 1));
    ws.close();
    await new Promise((r) => ws.onclose = r);
    return;
  }
  const ca = await Deno.readTextFile(`${dir}/ca.crt`);
  const conn = transport === "tcp"
    ? await Deno.connect({ hostname: "127.0.0.1", port })
    : await Deno.connectTls({
      hostname: "localhost",
      port,
      caCerts: [ca],
      ...(transport === "mtls"
        ? {
          cert: await Deno.readTextFile(`${dir}/client.crt`),
          key: await Deno.readTextFile(`${dir}/client.key`),
        }
        : {}),
    });
  const writeAll = async (bytes: Uint8Array) => {
    for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
  };
  await writeAll(connect);
  for (let i = 0; i < chunks; i++) await writeAll(chunk);
  await conn.closeWrite();
  // Wait for the broker to close (it reads everything first).
  const sink = new Uint8Array(1024);
  while (await conn.read(sink) !== null) { /* drain */ }
  conn.close();
}

async function measure(): Promise<void> {
  await using pki = await makeTestPki();
  const tls = { certFile: pki.server.cert, keyFile: pki.server.key };
  const cases: { name: string; send: string; listener: ListenerOptions }[] = [
    { name: "tcp", send: "tcp", listener: { type: "tcp", host: "127.0.0.1", port: 0 } },
    {
      name: "tls (Deno.listenTls)",
      send: "tls",
      listener: { type: "tls", host: "127.0.0.1", port: 0, ...tls },
    },
    {
      name: "mutual tls (node:tls)",
      send: "mtls",
      listener: {
        type: "tls",
        host: "127.0.0.1",
        port: 0,
        ...tls,
        caFile: pki.caCert,
        requireClientCert: true,
      },
    },
    { name: "ws (Deno.serve)", send: "ws", listener: { type: "ws", host: "127.0.0.1", port: 0 } },
    {
      name: "wss (Deno.serve)",
      send: "wss",
      listener: { type: "wss", host: "127.0.0.1", port: 0, ...tls },
    },
  ];
  console.log(
    `${messages} QoS 0 PUBLISH of ${publish.length} B ` +
      `(${(messages * publish.length / 1048576).toFixed(0)} MiB) per run, 64 KiB writes, ` +
      `publisher in its own process`,
  );
  for (const c of cases) {
    const rates: string[] = [];
    for (let run = 0; run < Number(values.runs); run++) {
      // The clock starts at the CONNECT, so process start-up and the handshake are not counted.
      let start = 0;
      const auth = {
        ...defaultAuthHooks(true),
        authenticate: () => (start = performance.now(), 0),
      };
      const broker = new Broker(
        resolveOptions({ listeners: [c.listener], dataPath: ":memory:", logLevel: "error" }),
        { auth },
      );
      await broker.start();
      try {
        const child = new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            "--no-check",
            "--cert",
            pki.caCert,
            import.meta.filename!,
            "--send",
            c.send,
            "--port",
            String(broker.addresses[0].port),
            "--pki",
            pki.dir,
            "--mb",
            String(values.mb),
            "--payload",
            String(payloadSize),
          ],
          stdout: "inherit",
          stderr: "inherit",
        }).spawn();
        while (broker.metrics.packetsReceived < messages + 1) {
          await new Promise((r) => setTimeout(r, 1));
        }
        const seconds = (performance.now() - start) / 1000;
        rates.push(`${(messages * publish.length / 1048576 / seconds).toFixed(0)} MiB/s`);
        await broker.stop();
        await child.status;
      } finally {
        await broker.stop();
      }
    }
    console.log(`${c.name.padEnd(24)} ${rates.join(", ")}`);
  }
}
