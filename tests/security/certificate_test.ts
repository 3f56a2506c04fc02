/**
 * Certificate identities over mutual TLS (MQTT.js with a client certificate): the CN and SANs map
 * to roles through the ACL's `certificates:`, and with `use_certificate_cn_as_username` the CN is
 * the user name (for `users:` and `%u`) and authenticates without a password.
 */
import assert from "node:assert/strict";
import type { ListenerOptions } from "../../src/broker/mod.ts";
import { makeTestPki, type TestPki } from "../helpers/certs.ts";
import { connectMqttJs, type MqttJsClient, type MqttJsOptions } from "../helpers/mqttjs.ts";
import { AuthFiles, startSecureBroker, USERS } from "./fixtures.ts";

function onPath(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return true;
    } catch { /* not here */ }
  }
  return false;
}
const hasOpenssl = onPath("openssl");

let pkiPromise: Promise<TestPki> | undefined;
function pki(): Promise<TestPki> {
  return pkiPromise ??= makeTestPki();
}

function mtlsListener(p: TestPki): ListenerOptions {
  return {
    type: "tls",
    host: "127.0.0.1",
    port: 0,
    certFile: p.server.cert,
    keyFile: p.server.key,
    requireClientCert: true,
    caFile: p.caCert,
  };
}

async function connectWithCert(
  port: number,
  p: TestPki,
  options: MqttJsOptions = {},
): Promise<MqttJsClient> {
  return await connectMqttJs(port, {
    protocol: "mqtts",
    ca: await Deno.readTextFile(p.caCert),
    cert: await Deno.readTextFile(p.client.cert),
    key: await Deno.readTextFile(p.client.key),
    ...options,
  });
}

async function publishCode(c: MqttJsClient, topic: string): Promise<number | undefined> {
  try {
    await c.client.publishAsync(topic, "m", { qos: 1 });
    return undefined;
  } catch (err) {
    return (err as { code?: number }).code;
  }
}

const CERT_ACL = `
roles:
  by-cn:
    - allow: publish
      topic: cn/%c/#
  by-san:
    - allow: publish
      topic: san/#
  by-user:
    - allow: publish
      topic: users/%u/#
  operator:
    - allow: all
      topic: "#"
users:
  device-42: by-user
  alice: operator
certificates:
  device-42: by-cn
  DNS:device-42.example: by-san
`;

Deno.test({
  name:
    "mtls: a client certificate authenticates without a user name and its CN and SANs map to roles",
  ignore: !hasOpenssl,
  async fn() {
    const p = await pki();
    await using files = await AuthFiles.create(USERS, CERT_ACL);
    await using b = await startSecureBroker(files, {
      listeners: [mtlsListener(p)],
      allowAnonymous: false,
    });
    await using c = await connectWithCert(b.port, p, { clientId: "dev" });
    assert.equal(c.connack?.reasonCode, 0, "a verified certificate is a credential");
    assert.equal(await publishCode(c, "cn/dev/x"), undefined, "certificates: CN role");
    assert.equal(await publishCode(c, "san/x"), undefined, "certificates: SAN role");
    assert.equal(await publishCode(c, "users/device-42/x"), 0x87, "the CN is not a user name here");
  },
});

Deno.test({
  name:
    "mtls: with use_certificate_cn_as_username the CN is the user name and CONNECT credentials are ignored",
  ignore: !hasOpenssl,
  async fn() {
    const p = await pki();
    await using files = await AuthFiles.create(USERS, CERT_ACL);
    await using b = await startSecureBroker(files, {
      listeners: [mtlsListener(p)],
      allowAnonymous: false,
      useCertificateCnAsUsername: true,
    });
    // Claims to be alice with a wrong password: the certificate decides who it is.
    await using c = await connectWithCert(b.port, p, {
      clientId: "dev",
      username: "alice",
      password: "wrong",
    });
    assert.equal(c.connack?.reasonCode, 0);
    assert.equal(await publishCode(c, "users/device-42/x"), undefined, "users: + %u from the CN");
    assert.equal(await publishCode(c, "cn/dev/x"), undefined, "certificate roles still apply");
    assert.equal(await publishCode(c, "admin/x"), 0x87, "alice's operator role does not apply");
  },
});

Deno.test({
  name: "mtls: remove the generated PKI",
  ignore: !hasOpenssl,
  async fn() {
    await (await pki()).remove();
  },
});
