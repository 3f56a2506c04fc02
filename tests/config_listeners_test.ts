/**
 * YAML listeners of every transport: keys mapped to `ListenerOptions`, keys that do not fit the
 * type refused, and certificate files checked at load time, each error at file:line:column.
 */
import assert from "node:assert/strict";
import { ConfigError, parseConfig } from "../src/config/mod.ts";
import { makeTestPki, type TestPki } from "./helpers/certs.ts";

function configError(yaml: string): ConfigError {
  try {
    parseConfig(yaml, "broker.yaml");
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${error}`);
    return error;
  }
  assert.fail("expected a ConfigError, but nothing was thrown");
}

Deno.test("config: tls, mutual TLS, ws and wss listeners map to ListenerOptions", async () => {
  await using pki = await makeTestPki();
  const { server, caCert } = pki;
  const options = parseConfig(
    `
listeners:
  - type: tls
    cert_file: ${server.cert}
    key_file: ${server.key}
  - type: tls
    port: 8884
    cert_file: ${server.cert}
    key_file: ${server.key}
    require_client_cert: true
    ca_file: ${caCert}
  - type: ws
    port: 8080
  - type: wss
    host: 0.0.0.0
    port: 8081
    path: /mqtt/v1
    cert_file: ${server.cert}
    key_file: ${server.key}
`,
    "broker.yaml",
  );
  assert.deepEqual(options.listeners, [
    { type: "tls", host: "127.0.0.1", port: 8883, certFile: server.cert, keyFile: server.key },
    {
      type: "tls",
      host: "127.0.0.1",
      port: 8884,
      certFile: server.cert,
      keyFile: server.key,
      requireClientCert: true,
      caFile: caCert,
    },
    { type: "ws", host: "127.0.0.1", port: 8080 },
    {
      type: "wss",
      host: "0.0.0.0",
      port: 8081,
      path: "/mqtt/v1",
      certFile: server.cert,
      keyFile: server.key,
    },
  ]);
});

Deno.test("config: listener errors name the key at file:line:column", async (t) => {
  await using pki: TestPki = await makeTestPki();
  const { server, server2, caCert } = pki;
  const badPem = `${pki.dir}/not-pem.txt`;
  await Deno.writeTextFile(badPem, "hello\n");
  const cases: { name: string; yaml: string; at: [number, number]; reason: string | RegExp }[] = [
    {
      name: "tls without cert_file",
      yaml: `listeners:\n  - type: tls\n    key_file: ${server.key}\n`,
      at: [2, 5],
      reason: "listeners[0] is a tls listener and needs cert_file",
    },
    {
      name: "wss without key_file",
      yaml: `listeners:\n  - type: wss\n    port: 1\n    cert_file: ${server.cert}\n`,
      at: [2, 5],
      reason: "listeners[0] is a wss listener and needs key_file",
    },
    {
      name: "ws without a port",
      yaml: "listeners:\n  - type: ws\n",
      at: [2, 5],
      reason: "listeners[0] is a ws listener and needs a port (it has no default)",
    },
    {
      name: "cert_file on a tcp listener",
      yaml: `listeners:\n  - port: 1\n    cert_file: ${server.cert}\n`,
      at: [3, 5],
      reason: "listeners[0].cert_file applies only to tls and wss listeners, not tcp",
    },
    {
      name: "path on a tls listener",
      yaml: "listeners:\n  - type: tls\n    path: /mqtt\n",
      at: [3, 5],
      reason: "listeners[0].path applies only to ws and wss listeners, not tls",
    },
    {
      name: "require_client_cert on wss",
      yaml: "listeners:\n  - type: wss\n    port: 1\n    require_client_cert: true\n",
      at: [4, 5],
      reason: "listeners[0].require_client_cert applies only to tls listeners, not wss " +
        "(Deno.serve cannot request client certificates)",
    },
    {
      name: "require_client_cert without ca_file",
      yaml:
        `listeners:\n  - type: tls\n    cert_file: ${server.cert}\n    key_file: ${server.key}\n` +
        "    require_client_cert: true\n",
      at: [5, 26],
      reason:
        "listeners[0].require_client_cert needs ca_file, the CA that client certificates must " +
        "chain to",
    },
    {
      name: "ca_file without require_client_cert",
      yaml:
        `listeners:\n  - type: tls\n    cert_file: ${server.cert}\n    key_file: ${server.key}\n` +
        `    ca_file: ${caCert}\n`,
      at: [5, 5],
      reason: "listeners[0].ca_file is only used with require_client_cert: true",
    },
    {
      name: "missing certificate file",
      yaml: "listeners:\n  - type: tls\n    cert_file: no/such.crt\n    key_file: no/such.key\n",
      at: [3, 16],
      reason: 'listeners[0].cert_file "no/such.crt" cannot be read: no such file',
    },
    {
      name: "certificate file that is not PEM",
      yaml: `listeners:\n  - type: tls\n    cert_file: ${badPem}\n    key_file: ${server.key}\n`,
      at: [3, 16],
      reason: `listeners[0].cert_file ${JSON.stringify(badPem)} holds no PEM certificate`,
    },
    {
      name: "key file holding a certificate",
      yaml: `listeners:\n  - type: tls\n    cert_file: ${server.cert}\n    key_file: ${caCert}\n`,
      at: [4, 15],
      reason: `listeners[0].key_file ${JSON.stringify(caCert)} holds no PEM private key`,
    },
    {
      name: "key of another certificate",
      yaml:
        `listeners:\n  - type: tls\n    cert_file: ${server.cert}\n    key_file: ${server2.key}\n`,
      at: [4, 15],
      reason: `listeners[0]: the private key does not belong to the certificate ` +
        `(${server.cert}, ${server2.key})`,
    },
    {
      name: "ws path without a leading slash",
      yaml: "listeners:\n  - type: ws\n    port: 1\n    path: mqtt\n",
      at: [4, 11],
      reason: 'listeners[0].path must be an HTTP path starting with "/" (no spaces, "?" or "#"), ' +
        'got "mqtt"',
    },
    {
      name: "require_client_cert that is not a boolean",
      yaml:
        `listeners:\n  - type: tls\n    cert_file: ${server.cert}\n    key_file: ${server.key}\n` +
        `    require_client_cert: yes\n    ca_file: ${caCert}\n`,
      at: [5, 26],
      reason: 'listeners[0].require_client_cert must be true or false, got "yes"',
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const error = configError(c.yaml);
      assert.deepEqual([error.line, error.column], c.at, error.message);
      if (typeof c.reason === "string") assert.equal(error.reason, c.reason);
      else assert.match(error.reason, c.reason);
    });
  }
});
