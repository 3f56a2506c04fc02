/**
 * Seeded, bounded fuzzing of the decoder: random bytes and mutated fixtures,
 * fed in random chunkings. Reproduce a failure with CODEC_FUZZ_SEED=<seed>; run
 * longer with CODEC_FUZZ_CASES=<n> (default 20,000, about 2 s here).
 *
 * Properties checked on every case:
 * - only Packet objects or MqttError come out; an internal exception that the
 *   decoder's safety net wrapped into 0x81 counts as a failure;
 * - the loop is bounded by the input (every packet consumes at least 2 bytes);
 * - after next() returns undefined, bufferedBytes <= maxPacketSize;
 * - the outcome does not depend on the chunking (same packets, same error);
 * - every decoded packet re-encodes without throwing and decodes back equal.
 *   No RangeError is tolerated there: everything the decoder returns is within
 *   the encoder's limits (strings and binary fields came from 16-bit lengths,
 *   Variable Byte Integers from at most 4 bytes), and a re-encoding is never
 *   longer than the bytes it came from, since the encoder always writes the
 *   shortest form (minimal VBIs, omitted optional fields).
 */
import assert from "node:assert/strict";
import {
  type DecodeSide,
  encodePacket,
  MqttError,
  type Packet,
  PacketDecoder,
  PacketType,
} from "./mod.ts";
import {
  ALL_FIXTURES,
  concatBytes,
  decodeAll,
  decoderVersion,
  NON_CANONICAL_FORMS,
} from "../../tests/fixtures/packets.ts";

const SEED = Number(Deno.env.get("CODEC_FUZZ_SEED") ?? 0x5eed);
const CASES = Number(Deno.env.get("CODEC_FUZZ_CASES") ?? 20_000);

/** mulberry32: a small, fast, seeded 32-bit PRNG. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

class Rng {
  #next: () => number;
  constructor(seed: number) {
    this.#next = mulberry32(seed);
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.#next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  bytes(n: number): number[] {
    return Array.from({ length: n }, () => this.int(256));
  }
}

interface Seed {
  bytes: Uint8Array;
  version: 4 | 5;
}

const SEEDS: readonly Seed[] = [
  ...ALL_FIXTURES.map((f) => ({
    bytes: encodePacket(f.packet, f.version),
    version: decoderVersion(f.version),
  })),
  ...NON_CANONICAL_FORMS.map((f) => ({ bytes: f.bytes, version: decoderVersion(f.version) })),
];

const EXTREME_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff];
const EXTREME_U16 = [0x0000, 0x0001, 0x7fff, 0x8000, 0xffff];
const EXTREME_VBIS = [
  [0x00],
  [0x7f],
  [0xff, 0x7f],
  [0xff, 0xff, 0x7f],
  [0xff, 0xff, 0xff, 0x7f],
  [0x80, 0x80, 0x80, 0x80, 0x01],
];
/** First bytes with legal flags for each type, so mutated bodies reach the body decoder. */
const LEGAL_FIRST_BYTES = [
  0x10,
  0x20,
  0x30,
  0x31,
  0x32,
  0x33,
  0x34,
  0x35,
  0x3a,
  0x3b,
  0x3c,
  0x3d,
  0x40,
  0x50,
  0x62,
  0x70,
  0x82,
  0x90,
  0xa2,
  0xb0,
  0xc0,
  0xd0,
  0xe0,
  0xf0,
];

function mutateOnce(rng: Rng, input: number[]): number[] {
  const b = input.slice();
  const at = b.length > 0 ? rng.int(b.length) : 0;
  switch (rng.int(9)) {
    case 0: // bit flips
      for (let i = 1 + rng.int(3); i > 0 && b.length > 0; i--) {
        b[rng.int(b.length)] ^= 1 << rng.int(8);
      }
      return b;
    case 1: // truncation
      return b.slice(0, at);
    case 2: // insertion
      b.splice(at, 0, ...rng.bytes(1 + rng.int(4)));
      return b;
    case 3: // deletion
      b.splice(at, 1 + rng.int(4));
      return b;
    case 4: // a byte (a length, a flag, a property id) set to an extreme
      if (b.length > 0) b[at] = rng.pick(EXTREME_BYTES);
      return b;
    case 5: { // a 16-bit length field set to an extreme
      const v = rng.pick(EXTREME_U16);
      if (at + 1 < b.length) b.splice(at, 2, v >> 8, v & 0xff);
      return b;
    }
    case 6: { // the Remaining Length replaced by an extreme VBI
      let end = 1;
      while (end < b.length && end < 5 && (b[end] & 0x80) !== 0) end++;
      b.splice(1, end, ...rng.pick(EXTREME_VBIS));
      return b;
    }
    case 7: // another packet appended, or a slice duplicated
      return rng.int(2) === 0
        ? [...b, ...rng.pick(SEEDS).bytes]
        : [...b.slice(0, at), ...b.slice(at / 2), ...b.slice(at)];
    default: // a legal first byte of another type on this body
      if (b.length > 0) b[0] = rng.pick(LEGAL_FIRST_BYTES);
      return b;
  }
}

interface FuzzCase {
  bytes: Uint8Array;
  version: 4 | 5;
}

function makeCase(rng: Rng): FuzzCase {
  if (rng.int(5) === 0) {
    // Random bytes, half of them behind a plausible fixed header.
    const body = rng.bytes(rng.int(48));
    const bytes = rng.int(2) === 0 ? body : [rng.pick(LEGAL_FIRST_BYTES), body.length, ...body];
    return { bytes: new Uint8Array(bytes), version: rng.pick([4, 5] as const) };
  }
  const seed = rng.pick(SEEDS);
  let bytes = [...seed.bytes];
  for (let n = rng.pick([1, 1, 1, 2, 3]); n > 0; n--) bytes = mutateOnce(rng, bytes);
  if (rng.int(4) === 0) {
    // Whole packets of the same level first: they must come out before any error.
    const before = SEEDS.filter((s) => s.version === seed.version && s.bytes[0] >> 4 !== 1);
    bytes = [...rng.pick(before).bytes, ...rng.pick(before).bytes, ...bytes];
  }
  return { bytes: new Uint8Array(bytes), version: seed.version };
}

interface Outcome {
  packets: Packet[];
  error?: MqttError;
}

interface FeedOptions {
  maxPacketSize?: number;
  side: DecodeSide;
  version: 4 | 5;
}

/** Feeds `bytes` in the given chunk sizes, checking the per-step properties. */
function feed(bytes: Uint8Array, chunkSizes: readonly number[], o: FeedOptions): Outcome {
  const decoder = new PacketDecoder({
    maxPacketSize: o.maxPacketSize,
    side: o.side,
    protocolVersion: o.version,
  });
  const packets: Packet[] = [];
  let pos = 0;
  for (const size of chunkSizes) {
    const chunk = bytes.slice(pos, pos + size);
    pos += size;
    decoder.push(chunk);
    for (;;) {
      const versionBefore = decoder.protocolVersion;
      let p: Packet | undefined;
      try {
        p = decoder.next();
      } catch (e) {
        assert.ok(e instanceof MqttError, `only MqttError is thrown, got ${e}`);
        assert.doesNotMatch(
          e.message,
          /^Cannot decode packet: [A-Za-z]*Error\b/,
          "an internal exception reached the decoder's safety net",
        );
        assert.throws(() => decoder.next(), (again) => again === e, "the decoder stays failed");
        return { packets, error: e };
      }
      if (p === undefined) {
        assert.ok(
          decoder.bufferedBytes <= decoder.maxPacketSize,
          `bufferedBytes ${decoder.bufferedBytes} > maxPacketSize ${decoder.maxPacketSize}`,
        );
        break;
      }
      packets.push(p);
      // No hang: every packet consumes at least 2 bytes of the input.
      assert.ok(packets.length * 2 <= bytes.length, "more packets than the input can hold");
      assertReencodes(p, versionBefore, o.side);
    }
    chunk.fill(0xa5); // the caller reuses its buffer once next() returned undefined
  }
  return { packets };
}

function assertReencodes(p: Packet, version: number, side: DecodeSide): void {
  const level = p.type === PacketType.Connect ? p.protocolVersion : version;
  const bytes = encodePacket(p, level); // any exception, RangeError included, fails the case
  assert.deepStrictEqual(
    decodeAll(bytes, { protocolVersion: version, side }),
    [p],
    "re-encoded packet decodes back equal",
  );
}

function randomChunking(rng: Rng, length: number): number[] {
  const sizes: number[] = [];
  for (let left = length; left > 0;) {
    const size = 1 + rng.int(Math.min(left, rng.pick([1, 4, 16, left])));
    sizes.push(size);
    left -= size;
  }
  return sizes;
}

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" ");
}

Deno.test(`decoder yields only packets or MqttError on ${CASES} random and mutated inputs, whatever the chunking (seed ${SEED})`, () => {
  const rng = new Rng(SEED);
  const stats = { packets: 0, errors: new Map<number, number>(), waiting: 0 };
  for (let i = 0; i < CASES; i++) {
    const c = makeCase(rng);
    const options: FeedOptions = {
      maxPacketSize: rng.pick([16, 64, 512, undefined, undefined, undefined]),
      side: rng.pick(["server", "client", "any"] as const),
      version: rng.int(8) === 0 ? rng.pick([4, 5] as const) : c.version,
    };
    try {
      const whole = feed(c.bytes, c.bytes.length > 0 ? [c.bytes.length] : [], options);
      const split = feed(c.bytes, randomChunking(rng, c.bytes.length), options);
      assert.deepStrictEqual(split.packets, whole.packets, "same packets in any chunking");
      assert.equal(split.error?.reasonCode, whole.error?.reasonCode, "same error in any chunking");
      stats.packets += whole.packets.length;
      if (whole.error) {
        const code = whole.error.reasonCode;
        stats.errors.set(code, (stats.errors.get(code) ?? 0) + 1);
      } else stats.waiting++;
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      throw new Error(
        `Fuzz case ${i} failed (CODEC_FUZZ_SEED=${SEED}, ${JSON.stringify(options)}): ${msg}\n` +
          `input: ${hex(c.bytes)}`,
        { cause: e },
      );
    }
  }
  // The run must have exercised both sides: many packets decoded, and the main refusals.
  assert.ok(stats.packets > CASES / 4, `decoded ${stats.packets} packets`);
  for (const code of [0x81, 0x82, 0x95]) {
    assert.ok((stats.errors.get(code) ?? 0) > 50, `reason 0x${code.toString(16)} seen`);
  }
});

Deno.test("fuzz seeds decode cleanly, and the PRNG repeats its sequence per seed so a failing seed reproduces", () => {
  for (const version of [4, 5] as const) {
    const seeds = SEEDS.filter((s) => s.version === version && s.bytes[0] >> 4 !== 1);
    const stream = concatBytes(seeds.map((s) => s.bytes));
    assert.equal(decodeAll(stream, { protocolVersion: version }).length, seeds.length);
  }
  const draw = (seed: number) => {
    const rng = new Rng(seed);
    return Array.from({ length: 100 }, () => rng.int(1 << 30));
  };
  assert.deepEqual(draw(SEED), draw(SEED));
  assert.notDeepEqual(draw(SEED), draw(SEED + 1));
});
