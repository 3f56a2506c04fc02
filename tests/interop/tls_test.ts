/**
 * MQTT over TLS with real clients: MQTT.js (`mqtts://`, node:tls) and the Mosquitto command-line
 * clients (OpenSSL), against a PKI generated per test with openssl (tests/helpers/certs.ts).
 *
 * - `tls` listeners (`Deno.listenTls`): server authentication, ALPN `mqtt`.
 * - `tls` + `require_client_cert` (`node:tls`): a valid client certificate is admitted and its
 *   CN/SANs reach the auth hook; no certificate, an expired one and one from a foreign CA are
 *   refused during the handshake.
 * - `reloadCertificates()`: new connections get the new certificate, open ones continue, and an
 *   unusable file keeps the old certificate.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type * as tls from "node:tls";
import { type AuthHooks, type ClientInfo, defaultAuthHooks } from "../../src/auth/mod.ts";
import type { ListenerOptions } from "../../src/broker/mod.ts";
import { BrokerProcess } from "../helpers/broker_process.ts";
import { fingerprintOf, makeTestPki, serverFingerprint, type TestPki } from "../helpers/certs.ts";
import { connectMqttJs, type MqttJsClient, type MqttJsOptions, settle } from "../helpers/mqttjs.ts";
import { startBroker, type TestBroker } from "../helpers/start_broker.ts";

function onPath(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return true;
    } catch { /* not in this directory */ }
  }
  return false;
}
const hasMosquitto = onPath("mosquitto_sub") && onPath("mosquitto_pub");
const hasOpenssl = onPath("openssl");

/** One PKI for the whole file (generating it takes about 0.1 s). */
let pkiPromise: Promise<TestPki> | undefined;
function pki(): Promise<TestPki> {
  return pkiPromise ??= makeTestPki();
}

function tlsListener(p: TestPki, extra: Partial<ListenerOptions> = {}): ListenerOptions {
  return {
    type: "tls",
    host: "127.0.0.1",
    port: 0,
    certFile: p.server.cert,
    keyFile: p.server.key,
    ...extra,
  };
}

function mtlsListener(p: TestPki): ListenerOptions {
  return tlsListener(p, { requireClientCert: true, caFile: p.caCert });
}

/** Connects MQTT.js over TLS, trusting the test CA; `cert` adds a client certificate. */
async function connectTls(
  port: number,
  p: TestPki,
  cert?: { cert: string; key: string },
  options: MqttJsOptions = {},
): Promise<MqttJsClient> {
  return await connectMqttJs(port, {
    protocol: "mqtts",
    ca: await Deno.readTextFile(p.caCert),
    ...(cert
      ? { cert: await Deno.readTextFile(cert.cert), key: await Deno.readTextFile(cert.key) }
      : {}),
    ALPNProtocols: ["mqtt"],
    ...options,
  });
}

/** Runs a Mosquitto client to completion (killed after `timeoutMs`). */
async function runMosquitto(
  command: "mosquitto_pub" | "mosquitto_sub",
  args: string[],
  timeoutMs = 5_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, timeoutMs);
  try {
    const [status, stdout, stderr] = await Promise.all([
      child.status,
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
    ]);
    return { code: status.code, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** Auth hooks that admit everyone and record the ClientInfo of each CONNECT. */
function recordingAuth(): { hooks: AuthHooks; seen: ClientInfo[] } {
  const seen: ClientInfo[] = [];
  const base = defaultAuthHooks(true);
  return {
    seen,
    hooks: {
      ...base,
      authenticate: (req) => {
        const { password: _password, ...info } = req;
        seen.push(info);
        return 0x00;
      },
    },
  };
}

/** Expects MQTT.js to fail before CONNACK; returns what it saw. */
async function refused(promise: Promise<MqttJsClient>): Promise<string> {
  try {
    const client = await promise;
    await client.close();
  } catch (err) {
    return (err as Error).message;
  }
  assert.fail("the connection was admitted");
}

/** Waits until `predicate` holds, polling every 10 ms, or fails after `timeoutMs`. */
async function eventually(predicate: () => boolean, what: string, timeoutMs = 2_000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test({
  name: "tls: MQTT.js mqtts:// publishes and subscribes, with ALPN mqtt negotiated",
  ignore: !hasOpenssl,
  async fn() {
    const p = await pki();
    await using b = await startBroker({ listeners: [tlsListener(p)] });
    await using sub = await connectTls(b.port, p);
    await using pub = await connectTls(b.port, p, undefined, { protocolVersion: 4 });
    assert.equal((sub.client.stream as tls.TLSSocket).alpnProtocol, "mqtt");
    await sub.client.subscribeAsync("tls/#", { qos: 1 });
    await pub.client.publishAsync("tls/a", "over tls", { qos: 1 });
    await pub.client.publishAsync("tls/b", Buffer.alloc(100_000, 7), { qos: 0 });
    await sub.waitForMessages(2);
    assert.equal(sub.on("tls/a")[0].payload, "over tls");
    assert.equal(sub.on("tls/b")[0].packet.payload.length, 100_000);
  },
});

Deno.test({
  name: "tls: a client that trusts another CA refuses the broker's certificate",
  ignore: !hasOpenssl,
  async fn() {
    const p = await pki();
    await using b = await startBroker({ listeners: [tlsListener(p)] });
    const why = await refused(
      connectMqttJs(b.port, { protocol: "mqtts", ca: await Deno.readTextFile(p.foreignCaCert) }),
    );
    assert.match(why, /certificate|verify|issuer/i);
  },
});

Deno.test({
  name: "tls: mosquitto_pub/mosquitto_sub --cafile exchange messages with MQTT.js",
  ignore: !hasOpenssl || !hasMosquitto,
  async fn() {
    const p = await pki();
    await using b = await startBroker({ listeners: [tlsListener(p)] });
    const common = ["-h", "localhost", "-p", String(b.port), "--cafile", p.caCert];
    // mosquitto_pub → MQTT.js
    await using js = await connectTls(b.port, p);
    await js.client.subscribeAsync("mosq/in", { qos: 1 });
    const pub = await runMosquitto("mosquitto_pub", [
      ...common,
      "-t",
      "mosq/in",
      "-m",
      "hi",
      "-q",
      "1",
    ]);
    assert.equal(pub.code, 0, pub.stderr);
    await js.waitForMessages(1);
    assert.equal(js.on("mosq/in")[0].payload, "hi");
    // MQTT.js → mosquitto_sub (retained, so no race with the subscription)
    await js.client.publishAsync("mosq/out", "retained over tls", { qos: 1, retain: true });
    const sub = await runMosquitto("mosquitto_sub", [
      ...common,
      "-t",
      "mosq/out",
      "-C",
      "1",
      "-W",
      "5",
    ]);
    assert.equal(sub.code, 0, sub.stderr);
    assert.equal(sub.stdout.trim(), "retained over tls");
    // Without the CA, mosquitto refuses the certificate.
    const untrusted = await runMosquitto("mosquitto_pub", [
      "-h",
      "localhost",
      "-p",
      String(b.port),
      "--cafile",
      p.foreignCaCert,
      "-t",
      "x",
      "-m",
      "x",
    ]);
    assert.notEqual(untrusted.code, 0);
  },
});

Deno.test({
  name: "mtls: a valid client certificate is admitted and its CN, SANs and fingerprint reach auth",
  ignore: !hasOpenssl,
  async fn() {
    const p = await pki();
    const auth = recordingAuth();
    await using b = await startBroker({ listeners: [mtlsListener(p)] }, { auth: auth.hooks });
    await using sub = await connectTls(b.port, p, p.client);
    await using pub = await connectTls(b.port, p, p.client, { protocolVersion: 4 });
    assert.equal((sub.client.stream as tls.TLSSocket).alpnProtocol, "mqtt");
    await sub.client.subscribeAsync("mtls/#", { qos: 2 });
    await pub.client.publishAsync("mtls/x", "mutual", { qos: 2 });
    await sub.waitForMessages(1);
    assert.equal(sub.messages[0].payload, "mutual");
    assert.equal(auth.seen.length, 2);
    const certificate = auth.seen[0].certificate;
    assert.equal(certificate?.commonName, "device-42");
    assert.deepEqual(certificate?.subjectAltNames, [
      "DNS:device-42.example",
      "email:device-42@example.com",
    ]);
    assert.equal(certificate?.fingerprint256, await fingerprintOf(p.client.cert));
  },
});

Deno.test({
  name: "mtls: no certificate, an expired one and a foreign CA's are refused in the handshake",
  ignore: !hasOpenssl,
  async fn() {
    const p = await pki();
    const auth = recordingAuth();
    await using b = await startBroker({ listeners: [mtlsListener(p)] }, {
      auth: auth.hooks,
      captureLogs: true,
    });
    for (const cert of [undefined, p.expired, p.foreign]) {
      await refused(connectTls(b.port, p, cert));
    }
    assert.equal(auth.seen.length, 0, "no refused client reached authentication");
    assert.equal(b.broker.connectedCount, 0);
    await eventually(
      () => b.logs.filter((l) => l.includes("TLS handshake refused")).length === 3,
      "three refused handshakes in the log",
    );
    assert.ok(b.logs.some((l) => /peer sent no certificates/.test(l)), b.logs.join("\n"));
    // Still serving valid clients afterwards.
    await using ok = await connectTls(b.port, p, p.client);
    assert.equal(ok.connack?.reasonCode, 0);
  },
});

Deno.test({
  name: "mtls: mosquitto_pub --cert/--key is admitted; without a certificate it is refused",
  ignore: !hasOpenssl || !hasMosquitto,
  async fn() {
    const p = await pki();
    const auth = recordingAuth();
    await using b = await startBroker({ listeners: [mtlsListener(p)] }, { auth: auth.hooks });
    await using js = await connectTls(b.port, p, p.client);
    await js.client.subscribeAsync("mosq/mtls", { qos: 1 });
    const base = ["-h", "localhost", "-p", String(b.port), "--cafile", p.caCert];
    const msg = ["-t", "mosq/mtls", "-m", "with cert", "-q", "1"];
    const good = await runMosquitto("mosquitto_pub", [
      ...base,
      "--cert",
      p.client.cert,
      "--key",
      p.client.key,
      ...msg,
    ]);
    assert.equal(good.code, 0, good.stderr);
    await js.waitForMessages(1);
    assert.equal(js.messages[0].payload, "with cert");
    assert.equal(auth.seen.at(-1)?.certificate?.commonName, "device-42");
    for (const cert of [undefined, p.expired, p.foreign]) {
      const args = cert ? ["--cert", cert.cert, "--key", cert.key] : [];
      const bad = await runMosquitto("mosquitto_pub", [...base, ...args, ...msg]);
      assert.notEqual(bad.code, 0, `admitted with ${cert?.cert ?? "no certificate"}`);
    }
    await settle(100);
    assert.equal(js.messages.length, 1);
    assert.equal(auth.seen.length, 2);
  },
});

/** Replaces the files a listener was configured with by other ones. */
async function overwrite(
  target: { cert: string; key: string },
  source: { cert: string; key: string },
) {
  await Deno.copyFile(source.cert, target.cert);
  await Deno.copyFile(source.key, target.key);
}

/** A server certificate pair in its own files, so a test can overwrite them. */
async function ownServerFiles(p: TestPki, name: string): Promise<{ cert: string; key: string }> {
  const files = { cert: `${p.dir}/${name}.crt`, key: `${p.dir}/${name}.key` };
  await overwrite(files, p.server);
  return files;
}

async function reloadTest(
  b: TestBroker,
  p: TestPki,
  files: { cert: string; key: string },
  client?: {
    cert: string;
    key: string;
  },
) {
  const first = await fingerprintOf(p.server.cert);
  const second = await fingerprintOf(p.server2.cert);
  assert.equal(await serverFingerprint(b.port, p, client), first);
  await using open = await connectTls(b.port, p, client);
  await open.client.subscribeAsync("reload/#", { qos: 1 });

  assert.deepEqual(await b.broker.reloadCertificates(), { reloaded: 0, unchanged: 1, failed: 0 });
  await overwrite(files, p.server2);
  assert.deepEqual(await b.broker.reloadCertificates(), { reloaded: 1, unchanged: 0, failed: 0 });
  assert.equal(await serverFingerprint(b.port, p, client), second, "new connections, new cert");
  // The connection made before the reload goes on.
  await using late = await connectTls(b.port, p, client);
  await late.client.publishAsync("reload/a", "after reload", { qos: 1 });
  await open.waitForMessages(1);

  // A broken file (the key of the other certificate) keeps the certificate in use.
  await Deno.copyFile(p.server.key, files.key);
  assert.deepEqual(await b.broker.reloadCertificates(), { reloaded: 0, unchanged: 0, failed: 1 });
  assert.ok(
    b.logs.some((l) => /certificate reload failed.*does not belong/.test(l)),
    b.logs.join("\n"),
  );
  assert.equal(await serverFingerprint(b.port, p, client), second);
  await Deno.writeTextFile(files.cert, "garbage");
  assert.equal((await b.broker.reloadCertificates()).failed, 1);
  assert.equal(await serverFingerprint(b.port, p, client), second);
}

Deno.test({
  name:
    "tls: reloadCertificates() serves new connections with the new certificate; bad files keep the old",
  ignore: !hasOpenssl,
  async fn() {
    const p = await pki();
    const files = await ownServerFiles(p, "reload-tls");
    await using b = await startBroker({
      listeners: [tlsListener(p, { certFile: files.cert, keyFile: files.key })],
    }, { captureLogs: true });
    await reloadTest(b, p, files);
  },
});

Deno.test({
  name: "mtls: reloadCertificates() swaps the node:tls secure context in place",
  ignore: !hasOpenssl,
  async fn() {
    const p = await pki();
    const files = await ownServerFiles(p, "reload-mtls");
    await using b = await startBroker({
      listeners: [{ ...mtlsListener(p), certFile: files.cert, keyFile: files.key }],
    }, { captureLogs: true });
    await reloadTest(b, p, files, p.client);
  },
});

Deno.test({
  name: "tls: a listener whose key does not match its certificate stops start() with a clear error",
  ignore: !hasOpenssl,
  async fn() {
    const p = await pki();
    await assert.rejects(
      startBroker({ listeners: [tlsListener(p, { keyFile: p.server2.key })] }),
      /the private key does not belong to the certificate/,
    );
    await assert.rejects(
      startBroker({ listeners: [{ type: "tls", host: "127.0.0.1", port: 0 }] }),
      /needs certFile and keyFile/,
    );
  },
});

Deno.test({
  name: "tls: stop() closes the node:tls server (its port refuses connections afterwards)",
  ignore: !hasOpenssl,
  async fn() {
    const p = await pki();
    const b = await startBroker({ listeners: [mtlsListener(p)] });
    const port = b.port;
    const client = await connectTls(port, p, p.client);
    await b.stop();
    await client.close();
    // A node:net server left listening is invisible to the sanitizers (deno-notes §8).
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port }),
      Deno.errors.ConnectionRefused,
    );
  },
});

Deno.test({
  name: "tls: SIGHUP makes the broker process re-read its certificate files",
  ignore: !hasOpenssl || Deno.build.os === "windows",
  async fn() {
    const p = await pki();
    const files = await ownServerFiles(p, "sighup");
    const config = `${p.dir}/sighup.yaml`;
    await Deno.writeTextFile(
      config,
      `listeners:\n  - type: tls\n    cert_file: ${files.cert}\n    key_file: ${files.key}\n`,
    );
    await using broker = await BrokerProcess.start(":memory:", { extraArgs: ["--config", config] });
    assert.match(broker.output, /listening address=127\.0\.0\.1:\d+ transport=tls/);
    assert.equal(await serverFingerprint(broker.port, p), await fingerprintOf(p.server.cert));
    await overwrite(files, p.server2);
    broker.kill("SIGHUP");
    await broker.waitForLine(/certificates reloaded/);
    assert.equal(await serverFingerprint(broker.port, p), await fingerprintOf(p.server2.cert));
    assert.equal((await broker.stop()).code, 0);
  },
});

Deno.test({
  name: "tls: remove the generated PKI",
  ignore: !hasOpenssl,
  async fn() {
    await (await pki()).remove();
  },
});
