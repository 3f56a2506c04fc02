/**
 * Reloading the password file and the ACL: `broker.reloadAuth()` in process and SIGHUP to a
 * broker subprocess. A good pair of files applies to every later operation and removes live
 * subscriptions the new rules forbid; a bad file keeps the old rules and the reason is logged.
 */
import assert from "node:assert/strict";
import { BrokerProcess } from "../helpers/broker_process.ts";
import { connectMqttJs, type MqttJsClient, settle } from "../helpers/mqttjs.ts";
import { ACL_YAML, AuthFiles, creds, startSecureBroker, USERS } from "./fixtures.ts";

async function publishCode(c: MqttJsClient, topic: string): Promise<number | undefined> {
  try {
    await c.client.publishAsync(topic, "m", { qos: 1 });
    return undefined;
  } catch (err) {
    return (err as { code?: number }).code;
  }
}

/** ACL_YAML with bob demoted to writer only, and writer also allowed to publish to news/#. */
const NEW_ACL = ACL_YAML
  .replace("  bob: [reader, writer]", "  bob: writer")
  .replace(
    "  writer:\n",
    "  writer:\n    - allow: publish\n      topic: news/#\n",
  );

Deno.test("reloadAuth() with good files: new rules apply at once and forbidden live subscriptions are removed", async () => {
  await using files = await AuthFiles.create();
  await using b = await startSecureBroker(files, {}, { captureLogs: true });
  await using alice = await connectMqttJs(b.port, creds("alice"));
  await using bob = await connectMqttJs(b.port, { ...creds("bob"), clientId: "bob1" });
  await bob.client.subscribeAsync(["sensors/+/temp", "inbox/bob1/#"], { qos: 1 });
  assert.equal(await publishCode(bob, "news/x"), 0x87);

  await files.writeAcl(NEW_ACL);
  await files.writeUsers({ ...USERS, bob: "bob-new-pw" });
  const result = await b.broker.reloadAuth();
  assert.deepEqual(result, { ok: true, subscriptionsRemoved: 1 });
  assert.ok(
    b.logs.some((l) =>
      /subscription removed: no longer authorized .*filter=sensors\/\+\/temp/.test(l)
    ),
  );

  assert.equal(await publishCode(bob, "news/x"), undefined, "the new allow rule applies");
  await alice.client.publishAsync("sensors/a/temp", "t", { qos: 1 });
  await alice.client.publishAsync("inbox/bob1/m", "kept", { qos: 1 });
  await bob.until(
    () => bob.on("inbox/bob1/m").length === 1,
    "the message of the kept subscription",
  );
  await settle(100);
  assert.equal(bob.on("sensors/a/temp").length, 0, "the removed subscription still delivers");

  // The new password file is in force for the next CONNECT.
  await assert.rejects(
    connectMqttJs(b.port, creds("bob")),
    (e: Error & { code?: number }) => e.code === 0x86,
  );
  await using again = await connectMqttJs(b.port, { username: "bob", password: "bob-new-pw" });
  assert.equal(again.connack?.reasonCode, 0);
});

Deno.test("reloadAuth() with a bad ACL or password file keeps both old files in force and logs file:line:column", async (t) => {
  await using files = await AuthFiles.create();
  await using b = await startSecureBroker(files, {}, { captureLogs: true });
  await using bob = await connectMqttJs(b.port, { ...creds("bob"), clientId: "bob1" });
  await bob.client.subscribeAsync("sensors/+/temp", { qos: 1 });

  await t.step("bad ACL", async () => {
    await files.writeAcl("roles:\n  r:\n    - allow: write\n      topic: a\n");
    const result = await b.broker.reloadAuth();
    assert.equal(result.ok, false);
    assert.equal(result.subscriptionsRemoved, 0);
    assert.match(result.error!, /acl\.yaml:3:14: roles\.r\[0\]\.allow must be publish/);
    assert.ok(
      b.logs.some((l) => /ERROR auth reload failed; the previous .*acl\.yaml:3:14/.test(l)),
    );
    assert.equal(await publishCode(bob, "sensors/bob/x"), undefined, "old rules still apply");
    assert.equal(await publishCode(bob, "news/x"), 0x87);
  });

  await t.step("bad password file with a good ACL: neither is taken", async () => {
    await files.writeAcl(NEW_ACL);
    await Deno.writeTextFile(files.passwordFile, "bob:plaintext-pw\n");
    const result = await b.broker.reloadAuth();
    assert.equal(result.ok, false);
    assert.match(result.error!, /passwd:1:5: The password of "bob" is not a hash/);
    assert.ok(!result.error!.includes("plaintext-pw"), "the error echoes the password");
    assert.equal(await publishCode(bob, "news/x"), 0x87, "the new ACL was applied alone");
    await using again = await connectMqttJs(b.port, creds("bob"));
    assert.equal(again.connack?.reasonCode, 0, "the old password file is gone");
  });
  assert.equal(b.broker.revokeForbiddenSubscriptions(), 0);
});

Deno.test("SIGHUP makes a broker subprocess reload: a good ACL applies and a bad one is refused with its reason", async () => {
  await using files = await AuthFiles.create();
  const config = `${files.dir}/broker.yaml`;
  await Deno.writeTextFile(
    config,
    `password_file: ${files.passwordFile}\nacl_file: ${files.aclFile}\n` +
      `password_iterations: 1000\nauth_fail_delay_ms: 0\n`,
  );
  await using broker = await BrokerProcess.start(":memory:", { extraArgs: ["--config", config] });
  await broker.waitForLine(/auth loaded .*users=3 .*roles=4/);
  await using bob = await connectMqttJs(broker.port, { ...creds("bob"), clientId: "bob1" });
  await bob.client.subscribeAsync("sensors/+/temp", { qos: 1 });
  assert.equal(await publishCode(bob, "news/x"), 0x87);

  await files.writeAcl(NEW_ACL);
  let from = broker.lines.length;
  broker.kill("SIGHUP");
  await broker.waitForLine(/auth reloaded /, 5_000, from);
  await broker.waitForLine(
    /subscription removed: no longer authorized .*filter=sensors\/\+\/temp/,
    5_000,
    from,
  );
  assert.equal(await publishCode(bob, "news/x"), undefined);

  await files.writeAcl("roles: [\n");
  from = broker.lines.length;
  broker.kill("SIGHUP");
  await broker.waitForLine(/ERROR auth reload failed; .*acl\.yaml:2:1: Invalid YAML/, 5_000, from);
  assert.equal(await publishCode(bob, "news/x"), undefined, "the last good rules stay");
  assert.equal(broker.exited, false);
  await bob.close();
  const status = await broker.stop();
  assert.equal(status.code, 0, broker.output);
});
