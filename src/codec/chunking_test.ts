import assert from "node:assert/strict";
import {
  decodePackets,
  encodePacket,
  MqttError,
  type Packet,
  PacketDecoder,
  PacketType,
} from "./mod.ts";
import {
  ALL_FIXTURES,
  concatBytes,
  decoderVersion,
  NON_CANONICAL_FORMS,
  type PacketFixture,
  V4_FIXTURES,
  V5_FIXTURES,
} from "../../tests/fixtures/packets.ts";

interface WireCase {
  name: string;
  version: 4 | 5;
  bytes: Uint8Array;
  packet: Packet;
}

function wireCase(f: PacketFixture): WireCase {
  return {
    name: f.name,
    version: decoderVersion(f.version),
    bytes: encodePacket(f.packet, f.version),
    packet: f.packet,
  };
}

/** Every fixture's encoding plus the hand-written non-canonical forms. */
const CASES: readonly WireCase[] = [
  ...ALL_FIXTURES.map(wireCase),
  ...NON_CANONICAL_FORMS.map((f) => ({ ...f, version: decoderVersion(f.version) })),
];

/** Drains the decoder: packets until `next()` returns undefined. */
function drain(decoder: PacketDecoder): Packet[] {
  const out: Packet[] = [];
  for (let p = decoder.next(); p !== undefined; p = decoder.next()) out.push(p);
  return out;
}

Deno.test("decoder reads every fixture split into two chunks at every byte position, keeping a copy of the first chunk", async (t) => {
  for (const c of CASES) {
    await t.step(c.name, () => {
      for (let split = 1; split < c.bytes.length; split++) {
        const decoder = new PacketDecoder({ protocolVersion: c.version });
        // The caller's read buffer, reused (overwritten) once next() has returned undefined.
        const readBuffer = c.bytes.slice(0, split);
        decoder.push(readBuffer);
        assert.deepStrictEqual(drain(decoder), [], `split ${split}: nothing before the rest`);
        assert.equal(decoder.bufferedBytes, split);
        readBuffer.fill(0xaa);
        decoder.push(c.bytes.subarray(split));
        assert.deepStrictEqual(drain(decoder), [c.packet], `split ${split}`);
        assert.equal(decoder.bufferedBytes, 0);
      }
    });
  }
});

Deno.test("decoder reads every fixture pushed one byte at a time from a reused one-byte buffer", async (t) => {
  for (const c of CASES) {
    await t.step(c.name, () => {
      const decoder = new PacketDecoder({ protocolVersion: c.version });
      const oneByte = new Uint8Array(1);
      const got: Packet[] = [];
      for (const b of c.bytes) {
        oneByte[0] = b;
        decoder.push(oneByte);
        got.push(...drain(decoder));
      }
      assert.deepStrictEqual(got, [c.packet]);
      assert.equal(decoder.bufferedBytes, 0);
    });
  }
});

Deno.test("decoder reads all fixtures concatenated into one chunk, switching level at each CONNECT", () => {
  // Level 4 rows first (their CONNECTs set level 4), then level 5 rows led by a v5 CONNECT.
  assert.equal(V4_FIXTURES[0].packet.type, PacketType.Connect);
  assert.equal(V5_FIXTURES[0].packet.type, PacketType.Connect);
  const cases = ALL_FIXTURES.map(wireCase);
  const decoder = new PacketDecoder({ protocolVersion: 4 });
  decoder.push(concatBytes(cases.map((c) => c.bytes)));
  assert.deepStrictEqual(drain(decoder), cases.map((c) => c.packet));
  assert.equal(decoder.bufferedBytes, 0);
  assert.equal(decoder.protocolVersion, 5);
});

Deno.test("decoder reads a concatenated stream cut into chunks of every size from 1 to 64 bytes", () => {
  const cases = ALL_FIXTURES.map(wireCase);
  const stream = concatBytes(cases.map((c) => c.bytes));
  const expected = cases.map((c) => c.packet);
  for (let size = 1; size <= 64; size++) {
    const decoder = new PacketDecoder({ protocolVersion: 4 });
    const got: Packet[] = [];
    for (let pos = 0; pos < stream.length; pos += size) {
      const chunk = stream.slice(pos, pos + size);
      decoder.push(chunk);
      got.push(...drain(decoder));
      chunk.fill(0x55); // the caller reuses its buffer after next() returned undefined
    }
    assert.deepStrictEqual(got, expected, `chunk size ${size}`);
    assert.equal(decoder.bufferedBytes, 0);
  }
});

Deno.test("decoder keeps a copy of a packet's tail that follows a whole packet in the same chunk", () => {
  const first = wireCase(V5_FIXTURES[0]);
  const second = CASES.find((c) => c.version === 5 && c.bytes.length > 40)!;
  const chunk = concatBytes([first.bytes, second.bytes.subarray(0, 20)]);
  const decoder = new PacketDecoder({ protocolVersion: 5 });
  decoder.push(chunk);
  assert.deepStrictEqual(drain(decoder), [first.packet]);
  assert.equal(decoder.bufferedBytes, 20);
  chunk.fill(0xee);
  decoder.push(second.bytes.subarray(20));
  assert.deepStrictEqual(drain(decoder), [second.packet]);
});

Deno.test("a decoded packet owns its bytes: overwriting the pushed chunk afterwards leaves it intact", () => {
  for (const c of CASES) {
    const chunk = c.bytes.slice();
    const decoder = new PacketDecoder({ protocolVersion: c.version });
    decoder.push(chunk);
    const [packet] = drain(decoder);
    chunk.fill(0xcc);
    assert.deepStrictEqual(packet, c.packet, c.name);
  }
});

Deno.test("decoder holds at most the unread tail: bufferedBytes counts only bytes not yet returned", () => {
  const cases = V5_FIXTURES.map(wireCase);
  const decoder = new PacketDecoder({ protocolVersion: 5 });
  for (const c of cases) {
    decoder.push(c.bytes.subarray(0, c.bytes.length - 1));
    assert.deepStrictEqual(drain(decoder), []);
    assert.equal(decoder.bufferedBytes, c.bytes.length - 1, c.name);
    decoder.push(c.bytes.subarray(c.bytes.length - 1));
    assert.deepStrictEqual(drain(decoder), [c.packet], c.name);
    assert.equal(decoder.bufferedBytes, 0, c.name);
  }
});

Deno.test("decodePackets() yields the packets of an async chunk stream in order", async () => {
  const cases = V5_FIXTURES.map(wireCase);
  const stream = concatBytes(cases.map((c) => c.bytes));
  async function* chunks() {
    for (let pos = 0; pos < stream.length; pos += 7) yield stream.slice(pos, pos + 7);
  }
  const got: Packet[] = [];
  for await (const p of decodePackets(chunks(), new PacketDecoder({ protocolVersion: 5 }))) {
    got.push(p);
  }
  assert.deepStrictEqual(got, cases.map((c) => c.packet));
});

Deno.test("decodePackets() fails with 0x81 when the stream ends inside a packet", async () => {
  const bytes = CASES[0].bytes;
  async function* chunks() {
    yield bytes.subarray(0, bytes.length - 1);
  }
  await assert.rejects(
    async () => {
      for await (const _ of decodePackets(chunks())) { /* drain */ }
    },
    (e) => e instanceof MqttError && e.reasonCode === 0x81,
  );
});

Deno.test("decoder reads a 1 MiB PUBLISH fed in 1,000-byte reads from a reused buffer", () => {
  const payload = new Uint8Array(1 << 20).map((_, i) => (i * 7) & 0xff);
  const packet: Packet = {
    type: PacketType.Publish,
    topic: "big",
    payload,
    qos: 1,
    retain: false,
    dup: false,
    packetId: 9,
  };
  const bytes = encodePacket(packet, 5);
  const decoder = new PacketDecoder({ protocolVersion: 5 });
  const readBuffer = new Uint8Array(1000);
  const got: Packet[] = [];
  for (let pos = 0; pos < bytes.length; pos += readBuffer.length) {
    const n = Math.min(readBuffer.length, bytes.length - pos);
    readBuffer.set(bytes.subarray(pos, pos + n));
    decoder.push(readBuffer.subarray(0, n));
    got.push(...drain(decoder));
    assert.ok(decoder.bufferedBytes <= pos + n);
  }
  assert.deepStrictEqual(got, [packet]);
});

Deno.test("decoder does not reserve the size a fixed header announces before the bytes arrive", () => {
  // Eight 5-byte headers announcing 256 MiB each must not reserve 2 GiB between them.
  const before = Deno.memoryUsage().external;
  const decoders = Array.from({ length: 8 }, () => {
    const d = new PacketDecoder();
    d.push(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0x7f]));
    assert.equal(d.next(), undefined);
    assert.equal(d.bufferedBytes, 5);
    return d;
  });
  const grown = Deno.memoryUsage().external - before;
  assert.ok(grown < 64 * 1024 * 1024, `external memory grew by ${grown} bytes`);
  assert.equal(decoders.length, 8);
});
