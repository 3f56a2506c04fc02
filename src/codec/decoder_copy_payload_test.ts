import assert from "node:assert/strict";
import { encodePacket, PacketDecoder, PacketType, type PublishPacket } from "./mod.ts";

Deno.test("PacketDecoder copies PUBLISH payloads with copyPayload when given, and only those", () => {
  const ranges: [number, number][] = [];
  const slab = new Uint8Array(1024);
  let used = 0;
  const decoder = new PacketDecoder({
    side: "server",
    copyPayload: (buf, start, end) => {
      ranges.push([start, end]);
      const out = slab.subarray(used, used + end - start);
      out.set(buf.subarray(start, end));
      used += end - start;
      return out;
    },
  });
  const payload = new TextEncoder().encode("hello");
  const bytes = encodePacket({
    type: PacketType.Publish,
    topic: "a/b",
    payload,
    qos: 1,
    packetId: 3,
    retain: false,
    dup: false,
    properties: { correlationData: new Uint8Array([1, 2]) },
  }, 5);
  decoder.push(bytes);
  const p = decoder.next() as PublishPacket;
  assert.deepEqual(p.payload, payload);
  assert.equal(p.payload.buffer, slab.buffer, "the payload is the copy made by copyPayload");
  assert.deepEqual(ranges, [[bytes.length - payload.length, bytes.length]]);
  assert.notEqual(
    p.properties?.correlationData?.buffer,
    slab.buffer,
    "Binary Data is not a payload",
  );
  bytes.fill(0); // the read buffer is reused: the copy stays intact
  assert.deepEqual(p.payload, payload);
});
