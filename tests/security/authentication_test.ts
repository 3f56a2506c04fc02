/**
 * Authentication with a password file, over real clients: MQTT.js at 5.0 and 3.1.1, and
 * mosquitto_pub -u/-P. Refusals are CONNACK 0x86 (5.0) or return code 4 (3.1.1), after the
 * failed-authentication delay; anonymous clients are admitted only from loopback by default.
 */
import assert from "node:assert/strict";
import { connectMqttJs, type MqttJsOptions } from "../helpers/mqttjs.ts";
import { AuthFiles, creds, startSecureBroker } from "./fixtures.ts";

/** Connects and expects a refusal; returns the CONNACK code and how long the refusal took. */
async function refused(
  port: number,
  options: MqttJsOptions,
): Promise<{ code: number; ms: number }> {
  const started = performance.now();
  let code = -1;
  await assert.rejects(connectMqttJs(port, options), (err: Error & { code?: number }) => {
    code = err.code ?? -1;
    return true;
  });
  return { code, ms: performance.now() - started };
}

function onPath(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return true;
    } catch { /* not here */ }
  }
  return false;
}

Deno.test("MQTT.js 5.0 with the right password connects; a wrong password or unknown user gets CONNACK 0x86 after the delay", async () => {
  await using files = await AuthFiles.create();
  await using b = await startSecureBroker(files, { authFailDelayMs: 300 });
  await using ok = await connectMqttJs(b.port, creds("alice"));
  assert.equal(ok.connack?.reasonCode, 0);

  const wrong = await refused(b.port, { username: "alice", password: "nope" });
  assert.equal(wrong.code, 0x86);
  assert.ok(wrong.ms >= 280, `refused after ${wrong.ms} ms, before the 300 ms delay`);

  const unknown = await refused(b.port, { username: "eve", password: "alice-pw" });
  assert.equal(unknown.code, 0x86);
  assert.ok(unknown.ms >= 280, `unknown user refused after ${unknown.ms} ms`);

  const noPassword = await refused(b.port, { username: "alice" });
  assert.equal(noPassword.code, 0x86);
  assert.equal(b.broker.connectedCount, 1);
});

Deno.test("MQTT.js 3.1.1 with a wrong password gets CONNACK return code 4; the right one connects", async () => {
  await using files = await AuthFiles.create();
  await using b = await startSecureBroker(files);
  await using ok = await connectMqttJs(b.port, { protocolVersion: 4, ...creds("bob") });
  assert.equal(ok.connack?.returnCode, 0);
  const wrong = await refused(b.port, { protocolVersion: 4, username: "bob", password: "x" });
  assert.equal(wrong.code, 4);
});

Deno.test("anonymous clients are admitted from loopback by default, and refused with 0x87 / return code 5 when allow_anonymous is false", async () => {
  await using files = await AuthFiles.create();
  {
    await using b = await startSecureBroker(files);
    await using anon = await connectMqttJs(b.port, {});
    assert.equal(anon.connack?.reasonCode, 0);
  }
  await using b = await startSecureBroker(files, { allowAnonymous: false });
  assert.equal((await refused(b.port, {})).code, 0x87);
  assert.equal((await refused(b.port, { protocolVersion: 4 })).code, 5);
});

// Anonymous access from a non-loopback address is refused by default: that is proven at the
// FileAuth level (src/auth/reloadable_test.ts), not over the network, because tests here only
// send traffic to the loopback range.

Deno.test("a failed authentication is logged without the password", async () => {
  await using files = await AuthFiles.create();
  await using b = await startSecureBroker(files, {}, { captureLogs: true });
  await refused(b.port, { username: "alice", password: "guess-123" });
  const log = b.logs.join("\n");
  assert.match(log, /connection refused .*reason=0x86 why="?authentication failed/);
  assert.ok(!log.includes("guess-123"), "the log holds the password");
});

const hasMosquitto = onPath("mosquitto_pub");

for (const version of ["mqttv5", "mqttv311"] as const) {
  Deno.test({
    name:
      `mosquitto_pub -u/-P (${version}): accepted with the right password, refused with a wrong one`,
    ignore: !hasMosquitto,
    async fn() {
      await using files = await AuthFiles.create();
      await using b = await startSecureBroker(files);
      await using sub = await connectMqttJs(b.port, { ...creds("alice"), clientId: "watch" });
      await sub.client.subscribeAsync("sensors/#", { qos: 1 });
      const run = async (password: string) => {
        const out = await new Deno.Command("mosquitto_pub", {
          args: [
            ...["-h", "127.0.0.1", "-p", String(b.port), "-V", version, "-q", "1"],
            ...["-i", "mosq-pub", "-u", "bob", "-P", password, "-t", "sensors/bob/t", "-m", "hi"],
          ],
          stdin: "null",
          signal: AbortSignal.timeout(10_000),
        }).output();
        return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
      };
      const good = await run("bob-pw");
      assert.equal(good.code, 0, good.stderr);
      await sub.until(() => sub.on("sensors/bob/t").length === 1, "the accepted publish");
      const bad = await run("wrong");
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /bad user ?name or password/i);
    },
  });
}
