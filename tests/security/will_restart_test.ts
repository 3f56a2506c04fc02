/**
 * A Will is authorized as the connection that set it, even when it is published by a broker
 * restarted after a crash: the owner's identity is persisted with the Will.
 */
import assert from "node:assert/strict";
import { BrokerProcess } from "../helpers/broker_process.ts";
import { connectMqttJs, settle } from "../helpers/mqttjs.ts";
import { AuthFiles, creds } from "./fixtures.ts";

Deno.test("a delayed Will that outlives a broker crash is published as its owner after the restart", async () => {
  await using files = await AuthFiles.create();
  const config = `${files.dir}/broker.yaml`;
  await Deno.writeTextFile(
    config,
    `password_file: ${files.passwordFile}\nacl_file: ${files.aclFile}\n` +
      `password_iterations: 1000\n`,
  );
  const data = `${files.dir}/data/broker.db`;
  const args = { extraArgs: ["--config", config] };
  {
    await using broker = await BrokerProcess.start(data, args);
    for (const [clientId, topic] of [["m1", "wills/m1"], ["m2", "wills/m1"]]) {
      // mallory may publish to wills/%c only: m1's Will is allowed, m2's is not.
      const c = await connectMqttJs(broker.port, {
        ...creds("mallory"),
        clientId,
        clean: false,
        properties: { sessionExpiryInterval: 60 },
        will: {
          topic,
          payload: `from ${clientId}`,
          qos: 1,
          retain: false,
          // Long enough to outlive the crash; it runs again from the restart.
          properties: { willDelayInterval: 3 },
        },
      });
      await c.destroy();
    }
    await broker.crash();
  }
  await using broker = await BrokerProcess.start(data, args);
  await using alice = await connectMqttJs(broker.port, creds("alice"));
  await alice.client.subscribeAsync("wills/#", { qos: 1 });
  await alice.until(() => alice.on("wills/m1").length >= 1, "m1's Will", 8_000);
  await settle(1_200);
  assert.deepEqual(alice.on("wills/m1").map((m) => m.payload), ["from m1"]);
  await broker.waitForLine(/will not authorized .*clientId=m2/, 3_000);
});
