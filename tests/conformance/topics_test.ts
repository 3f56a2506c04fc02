/**
 * Checklist §11 (topic names, filters and matching, spec 4.7) over real TCP
 * sockets. Which filters matched is read from the Subscription Identifiers of
 * the one copy the broker sends for overlapping subscriptions.
 */
import assert from "node:assert/strict";
import { startBroker } from "../helpers/start_broker.ts";
import { bytes, text } from "../helpers/raw_client.ts";
import {
  connect,
  expectDisconnect,
  expectPublish,
  publish,
  subscribe,
  sync,
} from "./publish_helpers.ts";

const FILTERS: Record<number, string> = {
  1: "sport/#",
  2: "sport/+",
  3: "sport/tennis/+",
  4: "+/+",
  5: "/+",
  6: "+",
  7: "#",
  8: "a//b",
  9: "a/+/b",
  10: "ACCOUNTS",
  11: "/#",
  12: "sport/tennis/#",
  13: "+/tennis/#",
};

/** topic → ids of the filters above that match it. */
const CASES: [string, number[]][] = [
  ["sport", [1, 6, 7]], // `sport/#` matches the parent; `sport/+` does not
  ["sport/", [1, 2, 4, 7]], // `+` matches the empty level
  ["sport/tennis", [1, 2, 4, 7, 12, 13]],
  ["sport/tennis/player1", [1, 3, 7, 12, 13]],
  ["sport/tennis/player1/ranking", [1, 7, 12, 13]],
  ["sports", [6, 7]],
  ["Sport", [6, 7]],
  ["/finance", [4, 5, 7, 11]], // two levels: "" and "finance"
  ["/", [4, 5, 7, 11]],
  ["a//b", [7, 8, 9]],
  ["a/x/b", [7, 9]],
  ["a/x/y/b", [7]],
  ["accounts", [6, 7]],
  ["ACCOUNTS", [6, 7, 10]],
  ["//", [7, 11]],
];

Deno.test("broker matches topics to filters by levels: '#' includes the parent, '+' one level including an empty one, exact case, '/' edge cases [MQTT-4.7.1-1] [MQTT-4.7.1-2] [MQTT-4.7.3-4] (4.7.1)", async (t) => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  for (const [id, filter] of Object.entries(FILTERS)) {
    assert.deepEqual(
      await subscribe(s, [filter], {
        packetId: Number(id),
        properties: { subscriptionIdentifiers: [Number(id)] },
      }),
      [0],
      filter,
    );
  }
  for (const [topic, want] of CASES) {
    await t.step(
      `'${topic}' matches ${want.map((id) => `'${FILTERS[id]}'`).join(", ")}`,
      async () => {
        publish(p, topic, topic);
        const m = await expectPublish(s);
        assert.equal(m.topic, topic);
        assert.equal(text(m.payload), topic);
        const got = [...(m.properties?.subscriptionIdentifiers ?? [])].sort((x, y) => x - y);
        assert.deepEqual(got.map((id) => FILTERS[id]), want.map((id) => FILTERS[id]));
        assert.equal(await s.silentFor(30), true, "one copy");
      },
    );
  }
});

Deno.test("broker compares topics exactly, without Unicode normalisation or case folding [MQTT-4.7.3-4]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  const nfc = "caf\u00e9";
  const nfd = "cafe\u0301";
  await subscribe(s, [nfc, "Ünïcode/τόπος"]);
  publish(p, nfd, "decomposed");
  publish(p, "CAF\u00c9", "upper");
  publish(p, "ünïcode/τόπος", "lower");
  publish(p, nfc, "composed");
  publish(p, "Ünïcode/τόπος", "exact");
  const m1 = await expectPublish(s);
  assert.equal(text(m1.payload), "composed");
  const m2 = await expectPublish(s);
  assert.equal(text(m2.payload), "exact");
  assert.equal(m2.topic, "Ünïcode/τόπος");
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker accepts topics and filters with spaces and empty levels as ordinary characters (4.7.3)", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  assert.deepEqual(await subscribe(s, ["my topic/ x ", "/"]), [0, 0]);
  publish(p, "my topic/ x ", "1");
  publish(p, "my topic/x", "no");
  publish(p, "/", "2");
  assert.equal(text((await expectPublish(s)).payload), "1");
  assert.equal(text((await expectPublish(s)).payload), "2");
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker routes a topic name of 65,535 bytes, the longest allowed [MQTT-4.7.3-3]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  const topic = "l/" + "x".repeat(65_533);
  assert.equal(bytes(topic).length, 65_535);
  await subscribe(s, ["l/+"]);
  publish(p, topic, "long");
  const m = await expectPublish(s);
  assert.equal(m.topic, topic);
  assert.equal(text(m.payload), "long");
});

Deno.test("broker closes with DISCONNECT 0x81 on a topic name containing U+0000 [MQTT-4.7.3-2] [MQTT-1.5.4-2]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  await using p = await connect(b.port, "p");
  await subscribe(s, ["#"]);
  // PUBLISH QoS 0, topic "a\0b", no properties, payload "x".
  p.sendBytes(new Uint8Array([0x30, 7, 0, 3, 0x61, 0x00, 0x62, 0, 0x78]));
  await expectDisconnect(p, 0x81);
  assert.equal(await s.silentFor(100), true);
});

Deno.test("broker accepts '#', '+' and '+/+/#' as whole levels and answers SUBACK 0x8F for misplaced wildcards [MQTT-4.7.1-1] [MQTT-4.7.1-2]", async () => {
  await using b = await startBroker();
  await using s = await connect(b.port, "s");
  const codes = await subscribe(s, ["#", "+", "+/+/#", "#/", "a/#b", "a/b+", "++", "a/##"]);
  assert.deepEqual(codes, [0, 0, 0, 0x8f, 0x8f, 0x8f, 0x8f, 0x8f]);
  await sync(s); // still connected
});
