/**
 * Decoder refusals, one test per rule, each asserting the MqttError reason
 * code. Every refused byte string has a valid twin that differs only in the
 * bytes under test and is shown to decode, so each refusal is caused by the
 * rule named, not by a broken template.
 */
import assert from "node:assert/strict";
import {
  type DecoderOptions,
  encodePacket,
  MqttError,
  type Packet,
  PACKET_NAMES,
  PacketDecoder,
  PacketType,
  type Properties,
} from "./mod.ts";
import {
  ALLOWED_PROPERTIES,
  decodeAll,
  PROPERTY_IDS,
  V5_FIXTURES,
} from "../../tests/fixtures/packets.ts";

const MALFORMED = 0x81;
const PROTOCOL_ERROR = 0x82;
const UNSUPPORTED_PROTOCOL_VERSION = 0x84;
const PACKET_TOO_LARGE = 0x95;

// --- Byte builders --------------------------------------------------------------

type Part = number | readonly number[];
const utf8 = new TextEncoder();

function flat(parts: readonly Part[]): number[] {
  const out: number[] = [];
  for (const p of parts) {
    if (typeof p === "number") out.push(p);
    else out.push(...p);
  }
  return out;
}

function vbi(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

/** A length-prefixed string field holding raw bytes (which may be ill-formed UTF-8). */
function raw(bytes: readonly number[]): number[] {
  return [bytes.length >> 8, bytes.length & 0xff, ...bytes];
}

/** A length-prefixed UTF-8 string field. */
function str(s: string): number[] {
  return raw([...utf8.encode(s)]);
}

/** A property section: Property Length, then the properties. */
function props(...entries: Part[]): number[] {
  const body = flat(entries);
  return [...vbi(body.length), ...body];
}

/** A whole packet: first byte, Remaining Length computed from the body. */
function packet(first: number, ...body: Part[]): Uint8Array {
  const b = flat(body);
  return new Uint8Array([first, ...vbi(b.length), ...b]);
}

function connectV5(flags: number, properties: Part, ...payload: Part[]): Uint8Array {
  return packet(0x10, str("MQTT"), 5, flags, 0, 60, properties, ...payload);
}

function connectV4(flags: number, ...payload: Part[]): Uint8Array {
  return packet(0x10, str("MQTT"), 4, flags, 0, 60, ...payload);
}

// --- Assertions -----------------------------------------------------------------

/** Decodes exactly one packet. */
function decodesOne(bytes: Uint8Array, options?: DecoderOptions): Packet {
  const packets = decodeAll(bytes, options);
  assert.equal(packets.length, 1);
  return packets[0];
}

/**
 * Pushes `bytes` and asserts the decoder throws an MqttError with `reasonCode`,
 * then that it stays failed (next() throws the same error again).
 */
function assertRefused(
  bytes: Uint8Array,
  reasonCode: number,
  options?: DecoderOptions,
): MqttError {
  const decoder = new PacketDecoder(options);
  decoder.push(bytes);
  let caught: unknown;
  try {
    for (let i = 0; i <= bytes.length && decoder.next() !== undefined; i++) { /* drain */ }
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof MqttError, `expected an MqttError, got ${caught}`);
  assert.equal(
    caught.reasonCode,
    reasonCode,
    `reason code 0x${caught.reasonCode.toString(16)}: ${caught.message}`,
  );
  assert.throws(() => decoder.next(), (e) => e === caught);
  return caught;
}

/** Asserts `valid` decodes and `invalid` is refused with `reasonCode`. */
function assertTwin(
  valid: Uint8Array,
  invalid: Uint8Array,
  reasonCode: number,
  options?: DecoderOptions,
): void {
  decodesOne(valid, options);
  assertRefused(invalid, reasonCode, options);
}

function withFirstByte(bytes: Uint8Array, first: number): Uint8Array {
  const copy = bytes.slice();
  copy[0] = first;
  return copy;
}

// --- Fixed header -----------------------------------------------------------------

const REQUIRED_FLAGS: Record<number, number> = { 6: 0b0010, 8: 0b0010, 10: 0b0010 };
for (let type = 1; type <= 15; type++) {
  if (type === PacketType.Publish) continue;
  const required = REQUIRED_FLAGS[type] ?? 0;
  const name = PACKET_NAMES[type];
  Deno.test(`decoder rejects ${name} whose fixed-header flags are not ${bits4(required)} [MQTT-2.1.3-1]`, () => {
    const fixture = V5_FIXTURES.find((f) => f.packet.type === type)!;
    const valid = encodePacket(fixture.packet, 5);
    decodesOne(valid);
    for (let flags = 0; flags < 16; flags++) {
      if (flags === required) continue;
      assertRefused(withFirstByte(valid, (type << 4) | flags), MALFORMED);
    }
  });
}

Deno.test("decoder rejects packet type 0, which is reserved (2.1.2)", () => {
  assertTwin(packet(0xc0), packet(0x00), MALFORMED);
  assertRefused(packet(0x0f), MALFORMED);
});

Deno.test("decoder rejects AUTH at level 4, where type 15 is reserved (3.1.1 2.2.1)", () => {
  decodesOne(packet(0xf0), { protocolVersion: 5 });
  assertRefused(packet(0xf0), MALFORMED, { protocolVersion: 4 });
});

Deno.test("decoder rejects a Remaining Length with a fifth byte, from the header alone (1.5.5)", () => {
  // Four bytes is the longest legal form: the decoder waits for that body.
  const decoder = new PacketDecoder();
  decoder.push(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0x7f]));
  assert.equal(decoder.next(), undefined);
  assertRefused(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0xff]), MALFORMED);
  assertRefused(new Uint8Array([0x30, 0x80, 0x80, 0x80, 0x80, 0x00]), MALFORMED);
});

Deno.test("decoder refuses a packet above its maximum packet size from the fixed header alone, before the body arrives (3.2.2.3.6)", () => {
  // Level 4 QoS 0 PUBLISH to "t": size = 2 + (3 + payload).
  const fits = packet(0x30, str("t"), new Array(95).fill(7)); // 100 bytes
  assert.equal(fits.length, 100);
  decodesOne(fits, { maxPacketSize: 100, protocolVersion: 4 });
  const err = assertRefused(new Uint8Array([0x30, 99]), PACKET_TOO_LARGE, { maxPacketSize: 100 });
  assert.match(err.message, /101 bytes/);
  // A 3-byte Remaining Length header: 998 → 1,001 bytes.
  assertRefused(new Uint8Array([0x30, 0xe6, 0x07]), PACKET_TOO_LARGE, { maxPacketSize: 1000 });
  const decoder = new PacketDecoder({ maxPacketSize: 1000 });
  decoder.push(new Uint8Array([0x30, 0xe5, 0x07]));
  assert.equal(decoder.next(), undefined, "a 1,000-byte packet is waited for");
});

// --- UTF-8 strings -------------------------------------------------------------------

/** Every kind of string field, each as a packet builder around the field's raw bytes. */
const STRING_FIELDS: Record<string, (s: number[]) => Uint8Array> = {
  "topic name": (s) => packet(0x30, raw(s), props()),
  "topic name over 64 bytes": (s) =>
    packet(0x30, raw([...new Array(70).fill(0x61), ...s]), props()),
  "client identifier": (s) => connectV5(0x02, props(), raw(s)),
  "will topic": (s) => connectV5(0x06, props(), str("c"), props(), raw(s), 0, 0),
  "user name": (s) => connectV5(0x82, props(), str("c"), raw(s)),
  "protocol name": (s) => packet(0x10, raw(s), 5, 0x02, 0, 0, props(), str("c")),
  "user property name": (s) => packet(0x30, str("t"), props(0x26, raw(s), str("v"))),
  "user property value": (s) => packet(0x30, str("t"), props(0x26, str("k"), raw(s))),
  "content type": (s) => packet(0x30, str("t"), props(0x03, raw(s))),
  "reason string": (s) => packet(0x40, 0, 1, 0x10, props(0x1f, raw(s))),
  "subscribe topic filter": (s) => packet(0x82, 0, 1, props(), raw(s), 0),
  "unsubscribe topic filter": (s) => packet(0xa2, 0, 1, props(), raw(s)),
};

function assertStringFieldsRefuse(
  bad: Record<string, number[]>,
): (t: Deno.TestContext) => Promise<void> {
  return async (t) => {
    for (const [field, build] of Object.entries(STRING_FIELDS)) {
      await t.step(field, () => {
        // The protocol name must stay "MQTT"; the bad bytes go after it instead.
        const good = field === "protocol name" ? [...utf8.encode("MQTT")] : [0x61, 0x62];
        decodesOne(build(good));
        for (const [label, bytes] of Object.entries(bad)) {
          const err = assertRefused(build([...good, ...bytes]), MALFORMED);
          assert.ok(err.message.length > 0, label);
        }
      });
    }
  };
}

Deno.test(
  "decoder rejects U+0000 in every UTF-8 string field [MQTT-1.5.4-2]",
  assertStringFieldsRefuse({ "U+0000": [0x00], "U+0000 mid-string": [0x00, 0x63] }),
);

Deno.test(
  "decoder rejects UTF-16 surrogates encoded in UTF-8 (ED A0 80, ED BF BF) in every string field [MQTT-1.5.4-1]",
  assertStringFieldsRefuse({ "U+D800": [0xed, 0xa0, 0x80], "U+DFFF": [0xed, 0xbf, 0xbf] }),
);

Deno.test(
  "decoder rejects overlong and ill-formed UTF-8 in every string field [MQTT-1.5.4-1]",
  assertStringFieldsRefuse({
    "overlong NUL C0 80": [0xc0, 0x80],
    "overlong '/' E0 80 AF": [0xe0, 0x80, 0xaf],
    "lone continuation byte": [0x80],
    "truncated sequence at the end": [0xe4, 0xb8],
    "byte FF": [0xff],
    "5-byte form F8 88 80 80 80": [0xf8, 0x88, 0x80, 0x80, 0x80],
    "above U+10FFFF (F4 90 80 80)": [0xf4, 0x90, 0x80, 0x80],
  }),
);

Deno.test("decoder keeps a leading BOM EF BB BF (U+FEFF) instead of stripping it [MQTT-1.5.4-3]", () => {
  const bom = [0xef, 0xbb, 0xbf];
  const short = decodesOne(packet(0x30, raw([...bom, 0x61]), props()));
  assert.ok(short.type === PacketType.Publish);
  assert.equal(short.topic, "\uFEFFa");
  const long = decodesOne(packet(0x30, raw([...bom, ...new Array(70).fill(0x61)]), props()));
  assert.ok(long.type === PacketType.Publish);
  assert.equal(long.topic, "\uFEFF" + "a".repeat(70));
  const pair = decodesOne(packet(0x30, str("t"), props(0x26, raw(bom), raw(bom))));
  assert.ok(pair.type === PacketType.Publish);
  assert.deepEqual(pair.properties?.userProperties, [["\uFEFF", "\uFEFF"]]);
});

// --- Lengths ------------------------------------------------------------------------

Deno.test("decoder rejects bytes left over after a packet's body (2.1.4)", () => {
  assertTwin(packet(0xc0), packet(0xc0, 0), MALFORMED);
  const v4 = { protocolVersion: 4 };
  assertTwin(packet(0x40, 0, 1), packet(0x40, 0, 1, 0), MALFORMED, v4); // 3.1.1 PUBACK
  assertTwin(packet(0xe0), packet(0xe0, 0), MALFORMED, v4); // 3.1.1 DISCONNECT
  assertTwin(packet(0xb0, 0, 1), packet(0xb0, 0, 1, 0), MALFORMED, v4); // 3.1.1 UNSUBACK
  assertTwin(
    connectV5(0x02, props(), str("c")),
    connectV5(0x02, props(), str("c"), 0),
    MALFORMED,
  );
  assertTwin(packet(0x20, 0, 0, props()), packet(0x20, 0, 0, props(), 0), MALFORMED);
  // AUTH may drop reason code and Property Length together, never the Property Length alone.
  assertTwin(packet(0xf0, 0x18, props()), packet(0xf0, 0x18), MALFORMED);
});

Deno.test("decoder rejects a string, binary field or property section longer than what holds it (1.5.4, 1.5.6, 2.2.2.1)", () => {
  // Topic length 16 with one byte of topic left in the packet.
  assertTwin(packet(0x30, 0, 1, 0x61, props()), packet(0x30, 0, 16, 0x61, props()), MALFORMED);
  // Correlation data length 9 in a 5-byte packet tail.
  assertTwin(
    packet(0x30, str("t"), props(0x09, 0, 1, 0xaa)),
    packet(0x30, str("t"), [4, 0x09, 0, 9, 0xaa]),
    MALFORMED,
  );
  // Property Length 200 with 6 bytes of properties.
  assertRefused(packet(0x30, str("t"), [0xc8, 0x01, 0x26, ...str("k"), ...str("")]), MALFORMED);
  // A user property whose value runs past the Property Length but not past the packet.
  assertRefused(
    packet(0x30, str("t"), [6, 0x26, ...str("k"), 0, 3], 0x61, 0x62, 0x63),
    MALFORMED,
  );
  // A u32 property cut by the Property Length.
  assertRefused(packet(0x30, str("t"), [3, 0x02, 0, 0], 0, 0), MALFORMED);
});

// --- Properties ---------------------------------------------------------------------------

Deno.test("decoder rejects a property that appears twice with 0x82 (2.2.2.2)", () => {
  const ct = [0x03, ...str("a")];
  assertTwin(
    packet(0x30, str("t"), props(ct)),
    packet(0x30, str("t"), props(ct, ct)),
    PROTOCOL_ERROR,
  );
  const sei = [0x11, 0, 0, 0, 1];
  assertTwin(
    connectV5(0x02, props(sei), str("c")),
    connectV5(0x02, props(sei, sei), str("c")),
    PROTOCOL_ERROR,
  );
  const wdi = [0x18, 0, 0, 0, 1];
  assertTwin(
    connectV5(0x06, props(), str("c"), props(wdi), str("w"), 0, 0),
    connectV5(0x06, props(), str("c"), props(wdi, wdi), str("w"), 0, 0),
    PROTOCOL_ERROR,
  );
  const rs = [0x1f, ...str("r")];
  assertTwin(packet(0x20, 0, 0, props(rs)), packet(0x20, 0, 0, props(rs, rs)), PROTOCOL_ERROR);
  // 3.8.2.1.2: a SUBSCRIBE carries at most one Subscription Identifier.
  assertTwin(
    packet(0x82, 0, 1, props(0x0b, 1), str("t"), 0),
    packet(0x82, 0, 1, props(0x0b, 1, 0x0b, 2), str("t"), 0),
    PROTOCOL_ERROR,
  );
});

Deno.test("decoder accepts repeated User Properties in order and several Subscription Identifiers on PUBLISH (2.2.2.2, 3.3.2.3.8)", () => {
  const pair = (k: string, v: string) => [0x26, ...str(k), ...str(v)];
  const subId = (id: number) => [0x0b, id];
  const p = decodesOne(
    packet(
      0x30,
      str("t"),
      props(pair("a", "1"), subId(5), pair("b", "2"), subId(3), pair("a", "3")),
    ),
    { side: "client" },
  );
  assert.ok(p.type === PacketType.Publish);
  assert.deepEqual(p.properties, {
    userProperties: [["a", "1"], ["b", "2"], ["a", "3"]],
    subscriptionIdentifiers: [5, 3],
  });
});

Deno.test("decoder rejects an unknown property identifier with 0x81 (2.2.2.2)", () => {
  assertTwin(
    packet(0x30, str("t"), props(0x01, 0)),
    packet(0x30, str("t"), props(0x04, 0)),
    MALFORMED,
  );
  assertRefused(packet(0x30, str("t"), props(0x00, 0)), MALFORMED);
  assertRefused(packet(0x30, str("t"), props(0x7f, 0)), MALFORMED);
  assertRefused(packet(0x30, str("t"), props(0x80, 0x01, 0)), MALFORMED); // id 128 as a VBI
  assertRefused(packet(0xe0, 0, props(0x2b, 0)), MALFORMED);
});

Deno.test("decoder rejects a property not allowed on that packet with 0x81 (2.2.2.2)", () => {
  assertRefused(connectV5(0x02, props(0x23, 0, 1), str("c")), MALFORMED); // Topic Alias
  assertRefused(connectV5(0x02, props(0x18, 0, 0, 0, 1), str("c")), MALFORMED); // Will Delay
  assertRefused(packet(0x30, str("t"), props(0x11, 0, 0, 0, 1)), MALFORMED); // Session Expiry
  assertRefused(packet(0x30, str("t"), props(0x1f, str("r"))), MALFORMED); // Reason String
  assertRefused(
    connectV5(0x06, props(), str("c"), props(0x11, 0, 0, 0, 1), str("w"), 0, 0),
    MALFORMED,
  ); // Session Expiry in Will properties
  assertRefused(packet(0xa2, 0, 1, props(0x0b, 1), str("t")), MALFORMED); // Sub. Id on UNSUBSCRIBE
});

/** A valid value of each property, as id + value bytes. */
function propertyBytes(name: keyof Properties): number[] {
  const id = PROPERTY_IDS[name];
  switch (name) {
    case "payloadFormatIndicator":
    case "requestProblemInformation":
    case "requestResponseInformation":
    case "maximumQoS":
    case "retainAvailable":
    case "wildcardSubscriptionAvailable":
    case "subscriptionIdentifierAvailable":
    case "sharedSubscriptionAvailable":
    case "subscriptionIdentifiers":
      return [id, 1];
    case "serverKeepAlive":
    case "receiveMaximum":
    case "topicAliasMaximum":
    case "topicAlias":
      return [id, 0, 1];
    case "messageExpiryInterval":
    case "sessionExpiryInterval":
    case "willDelayInterval":
    case "maximumPacketSize":
      return [id, 0, 0, 0, 1];
    case "correlationData":
      return [id, 0, 1, 0xaa];
    case "authenticationData": // only valid next to an Authentication Method
      return [0x15, ...str("m"), id, 0, 1, 0xaa];
    case "userProperties":
      return [id, ...str("k"), ...str("v")];
    default:
      return [id, ...str("x")];
  }
}

/** A valid packet of each type (16 = a CONNECT's Will) around a property section. */
const PROPERTY_HOSTS: Record<number, (p: number[]) => Uint8Array> = {
  [PacketType.Connect]: (p) => connectV5(0x02, p, str("c")),
  16: (p) => connectV5(0x06, props(), str("c"), p, str("w"), 0, 0),
  [PacketType.Connack]: (p) => packet(0x20, 0, 0, p),
  [PacketType.Publish]: (p) => packet(0x32, str("t"), 0, 1, p),
  [PacketType.Puback]: (p) => packet(0x40, 0, 1, 0, p),
  [PacketType.Pubrec]: (p) => packet(0x50, 0, 1, 0, p),
  [PacketType.Pubrel]: (p) => packet(0x62, 0, 1, 0, p),
  [PacketType.Pubcomp]: (p) => packet(0x70, 0, 1, 0, p),
  [PacketType.Subscribe]: (p) => packet(0x82, 0, 1, p, str("t"), 0),
  [PacketType.Suback]: (p) => packet(0x90, 0, 1, p, 0),
  [PacketType.Unsubscribe]: (p) => packet(0xa2, 0, 1, p, str("t")),
  [PacketType.Unsuback]: (p) => packet(0xb0, 0, 1, p, 0),
  [PacketType.Disconnect]: (p) => packet(0xe0, 0, p),
  [PacketType.Auth]: (p) => packet(0xf0, 0x18, p),
};

Deno.test("decoder accepts each property exactly on the packets spec table 2.2.2.2 lists and refuses it elsewhere with 0x81 (2.2.2.2)", async (t) => {
  for (const [hostKey, build] of Object.entries(PROPERTY_HOSTS)) {
    const host = Number(hostKey);
    await t.step(host === 16 ? "Will" : PACKET_NAMES[host], () => {
      decodesOne(build(props()));
      for (const name of Object.keys(PROPERTY_IDS) as (keyof Properties)[]) {
        const bytes = build(props(propertyBytes(name)));
        if (!ALLOWED_PROPERTIES[host].includes(name)) {
          assertRefused(bytes, MALFORMED);
          continue;
        }
        const p = decodesOne(bytes);
        const got = host === 16
          ? (p.type === PacketType.Connect ? p.will?.properties : undefined)
          : (p as { properties?: Properties }).properties;
        assert.ok(got?.[name] !== undefined, `${name} decoded`);
      }
    });
  }
});

Deno.test("decoder rejects a property value outside its allowed range with 0x82 (2.2.2.2, 3.1.2.11)", () => {
  const connect = (...p: number[]) => connectV5(0x02, props(p), str("c"));
  // 3.1.2.11.3 Receive Maximum 0.
  assertTwin(connect(0x21, 0, 1), connect(0x21, 0, 0), PROTOCOL_ERROR);
  // 3.1.2.11.4 Maximum Packet Size 0.
  assertTwin(connect(0x27, 0, 0, 0, 1), connect(0x27, 0, 0, 0, 0), PROTOCOL_ERROR);
  // 3.1.2.11.6 / 3.1.2.11.7 Request Problem / Response Information other than 0 or 1.
  assertTwin(connect(0x17, 1), connect(0x17, 2), PROTOCOL_ERROR);
  assertTwin(connect(0x19, 1), connect(0x19, 2), PROTOCOL_ERROR);
  // 3.3.2.3.2 Payload Format Indicator other than 0 or 1.
  assertTwin(
    packet(0x30, str("t"), props(0x01, 1)),
    packet(0x30, str("t"), props(0x01, 2)),
    PROTOCOL_ERROR,
  );
  // 3.8.2.1.2 / 3.3.2.3.8 Subscription Identifier 0.
  assertTwin(
    packet(0x82, 0, 1, props(0x0b, 1), str("t"), 0),
    packet(0x82, 0, 1, props(0x0b, 0), str("t"), 0),
    PROTOCOL_ERROR,
  );
  assertRefused(packet(0x30, str("t"), props(0x0b, 0)), PROTOCOL_ERROR, { side: "client" });
  // 3.2.2.3: Maximum QoS and the "Available" flags are 0 or 1; Receive Maximum is not 0.
  for (const id of [0x24, 0x25, 0x28, 0x29, 0x2a]) {
    assertTwin(packet(0x20, 0, 0, props(id, 0)), packet(0x20, 0, 0, props(id, 2)), PROTOCOL_ERROR);
  }
  assertRefused(packet(0x20, 0, 0, props(0x21, 0, 0)), PROTOCOL_ERROR);
});

Deno.test("decoder rejects Authentication Data without an Authentication Method with 0x82 (3.1.2.11.10, 3.15.2.2.3)", () => {
  const data = [0x16, 0, 1, 0xaa];
  const method = [0x15, ...str("m")];
  assertTwin(
    connectV5(0x02, props(method, data), str("c")),
    connectV5(0x02, props(data), str("c")),
    PROTOCOL_ERROR,
  );
  assertTwin(
    packet(0xf0, 0x18, props(method, data)),
    packet(0xf0, 0x18, props(data)),
    PROTOCOL_ERROR,
  );
  assertRefused(packet(0x20, 0, 0, props(data)), PROTOCOL_ERROR);
});

// --- PUBLISH ------------------------------------------------------------------------------

Deno.test("decoder rejects a PUBLISH with both QoS bits set [MQTT-3.3.1-4]", () => {
  const qos2 = packet(0x34, str("t"), 0, 1, props());
  assertTwin(qos2, withFirstByte(qos2, 0x36), MALFORMED);
  assertRefused(withFirstByte(qos2, 0x3f), MALFORMED);
  assertRefused(packet(0x36, str("t"), 0, 1), MALFORMED, { protocolVersion: 4 });
});

Deno.test("decoder rejects a QoS 0 PUBLISH with DUP set with 0x82 [MQTT-3.3.1-2]", () => {
  const qos0 = packet(0x30, str("t"), props());
  assertTwin(qos0, withFirstByte(qos0, 0x38), PROTOCOL_ERROR);
  decodesOne(packet(0x3a, str("t"), 0, 1, props())); // DUP on QoS 1 is fine
});

Deno.test("decoder rejects Packet Identifier 0 on PUBLISH QoS>0, SUBSCRIBE, UNSUBSCRIBE and acknowledgements with 0x82 [MQTT-2.2.1-3]", () => {
  const cases: [(id: number) => Uint8Array, string][] = [
    [(id) => packet(0x32, str("t"), 0, id, props()), "PUBLISH QoS 1"],
    [(id) => packet(0x34, str("t"), 0, id, props()), "PUBLISH QoS 2"],
    [(id) => packet(0x82, 0, id, props(), str("t"), 0), "SUBSCRIBE"],
    [(id) => packet(0xa2, 0, id, props(), str("t")), "UNSUBSCRIBE"],
    [(id) => packet(0x40, 0, id), "PUBACK"],
    [(id) => packet(0x50, 0, id), "PUBREC"],
    [(id) => packet(0x62, 0, id), "PUBREL"],
    [(id) => packet(0x70, 0, id), "PUBCOMP"],
  ];
  for (const [build, label] of cases) {
    decodesOne(build(1));
    const err = assertRefused(build(0), PROTOCOL_ERROR);
    assert.match(err.message, /identifier 0/, label);
  }
});

Deno.test("decoder on the server side rejects a client PUBLISH carrying a Subscription Identifier with 0x82 [MQTT-3.3.4-6]", () => {
  const withId = packet(0x30, str("t"), props(0x0b, 7));
  decodesOne(withId, { side: "client" });
  decodesOne(packet(0x30, str("t"), props(0x0b, 7, 0x0b, 8)), { side: "client" });
  assertTwin(packet(0x30, str("t"), props()), withId, PROTOCOL_ERROR, { side: "server" });
});

// --- CONNECT -------------------------------------------------------------------------------

Deno.test("decoder rejects a CONNECT with the reserved flag set [MQTT-3.1.2-3]", () => {
  assertTwin(connectV5(0x02, props(), str("c")), connectV5(0x03, props(), str("c")), MALFORMED);
  assertTwin(connectV4(0x02, str("c")), connectV4(0x03, str("c")), MALFORMED);
});

Deno.test("decoder rejects a CONNECT with Will QoS 3 [MQTT-3.1.2-12]", () => {
  const will = [str("c"), props(), str("w"), 0, 0] as const;
  assertTwin(connectV5(0x16, props(), ...will), connectV5(0x1e, props(), ...will), MALFORMED);
});

Deno.test("decoder rejects Will QoS or Will Retain set without the Will flag [MQTT-3.1.2-11] [MQTT-3.1.2-13]", () => {
  const valid = connectV5(0x02, props(), str("c"));
  assertTwin(valid, connectV5(0x0a, props(), str("c")), MALFORMED); // Will QoS 1
  assertRefused(connectV5(0x12, props(), str("c")), MALFORMED); // Will QoS 2
  assertRefused(connectV5(0x22, props(), str("c")), MALFORMED); // Will Retain
  assertRefused(connectV4(0x22, str("c")), MALFORMED);
});

Deno.test("decoder rejects a 3.1.1 CONNECT with a Password but no User Name (3.1.1 [MQTT-3.1.2-22])", () => {
  assertTwin(
    connectV4(0xc2, str("c"), str("u"), str("p")),
    connectV4(0x42, str("c"), str("p")),
    MALFORMED,
  );
});

Deno.test("decoder accepts a v5 CONNECT with a Password but no User Name (3.1.2.9)", () => {
  const p = decodesOne(connectV5(0x42, props(), str("c"), 0, 2, 0x70, 0x77));
  assert.ok(p.type === PacketType.Connect);
  assert.equal(p.username, undefined);
  assert.deepEqual(p.password, new Uint8Array([0x70, 0x77]));
});

Deno.test("decoder refuses an unknown protocol name or level with 0x84, reporting the level [MQTT-3.1.2-1] [MQTT-3.1.2-2]", () => {
  const connect = (name: string, level: number) =>
    packet(0x10, str(name), level, 0x02, 0, 0, level === 5 ? props() : [], str("c"));
  for (const [name, level] of [["MQTT", 5], ["MQTT", 4], ["MQIsdp", 3]] as const) {
    decodesOne(connect(name, level));
  }
  for (
    const [name, level] of [["MQTX", 5], ["mqtt", 4], ["MQTT", 6], ["MQTT", 3], [
      "MQIsdp",
      4,
    ]] as const
  ) {
    const err = assertRefused(connect(name, level), UNSUPPORTED_PROTOCOL_VERSION);
    assert.equal(err.protocolVersion, level, `${name} level ${level}`);
  }
});

// --- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------------------

Deno.test("decoder rejects a SUBSCRIBE with no topic filter with 0x82 [MQTT-3.8.3-2]", () => {
  assertTwin(packet(0x82, 0, 1, props(), str("t"), 0), packet(0x82, 0, 1, props()), PROTOCOL_ERROR);
  const v4 = { protocolVersion: 4 };
  assertTwin(packet(0x82, 0, 1, str("t"), 0), packet(0x82, 0, 1), PROTOCOL_ERROR, v4);
});

Deno.test("decoder rejects an UNSUBSCRIBE with no topic filter with 0x82 [MQTT-3.10.3-2]", () => {
  assertTwin(packet(0xa2, 0, 1, props(), str("t")), packet(0xa2, 0, 1, props()), PROTOCOL_ERROR);
});

Deno.test("decoder rejects v5 Subscription Options with reserved bits 6-7 set [MQTT-3.8.3-5]", () => {
  const sub = (options: number) => packet(0x82, 0, 1, props(), str("t"), options);
  assertTwin(sub(0x2e), sub(0x40), MALFORMED);
  assertRefused(sub(0x80), MALFORMED);
  assertRefused(sub(0xc1), MALFORMED);
});

Deno.test("decoder rejects Retain Handling 3 and Maximum QoS 3 in v5 Subscription Options with 0x82 (3.8.3.1)", () => {
  const sub = (options: number) => packet(0x82, 0, 1, props(), str("t"), options);
  assertTwin(sub(0x20), sub(0x30), PROTOCOL_ERROR);
  assertTwin(sub(0x02), sub(0x03), PROTOCOL_ERROR);
});

Deno.test("decoder rejects 3.1.1 SUBSCRIBE options with any bit above the QoS set, or QoS 3 (3.1.1 [MQTT-3.8.3-4])", () => {
  const v4 = { protocolVersion: 4 };
  const sub = (options: number) => packet(0x82, 0, 1, str("t"), options);
  decodesOne(sub(0x02), v4);
  for (let bit = 2; bit < 8; bit++) assertRefused(sub(1 << bit), MALFORMED, v4);
  assertRefused(sub(0x03), MALFORMED, v4);
});

// --- Direction -----------------------------------------------------------------------------------

Deno.test("decoder on the server side rejects CONNACK, SUBACK, UNSUBACK and PINGRESP from a client with 0x82 (2.1.2)", async (t) => {
  for (
    const type of [PacketType.Connack, PacketType.Suback, PacketType.Unsuback, PacketType.Pingresp]
  ) {
    await t.step(PACKET_NAMES[type], () => {
      const bytes = encodePacket(V5_FIXTURES.find((f) => f.packet.type === type)!.packet, 5);
      decodesOne(bytes, { side: "any" });
      decodesOne(bytes, { side: "client" });
      assertRefused(bytes, PROTOCOL_ERROR, { side: "server" });
      // The fixed header alone is enough.
      assertRefused(bytes.subarray(0, 2), PROTOCOL_ERROR, { side: "server" });
    });
  }
});

Deno.test("decoder on the client side rejects CONNECT, SUBSCRIBE, UNSUBSCRIBE and PINGREQ from a server with 0x82 (2.1.2)", async (t) => {
  for (
    const type of [
      PacketType.Connect,
      PacketType.Subscribe,
      PacketType.Unsubscribe,
      PacketType.Pingreq,
    ]
  ) {
    await t.step(PACKET_NAMES[type], () => {
      const bytes = encodePacket(V5_FIXTURES.find((f) => f.packet.type === type)!.packet, 5);
      decodesOne(bytes, { side: "server" });
      assertRefused(bytes, PROTOCOL_ERROR, { side: "client" });
    });
  }
});

// --- Reason codes ---------------------------------------------------------------------------------

Deno.test("decoder rejects a reason code not defined for PUBACK [MQTT-3.4.2-1]", () => {
  assertTwin(packet(0x40, 0, 1, 0x10), packet(0x40, 0, 1, 0x01), MALFORMED);
  assertRefused(packet(0x40, 0, 1, 0x92, props()), MALFORMED);
});

Deno.test("decoder rejects reason codes not defined for PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH and CONNACK [MQTT-3.5.2-1] [MQTT-3.6.2-1] [MQTT-3.7.2-1] [MQTT-3.9.3-2] [MQTT-3.11.3-2] [MQTT-3.14.2-1] [MQTT-3.15.2-1] [MQTT-3.2.2-8]", () => {
  assertTwin(packet(0x50, 0, 1, 0x10), packet(0x50, 0, 1, 0x92), MALFORMED); // PUBREC
  assertTwin(packet(0x62, 0, 1, 0x92), packet(0x62, 0, 1, 0x10), MALFORMED); // PUBREL
  assertTwin(packet(0x70, 0, 1, 0x92), packet(0x70, 0, 1, 0x80), MALFORMED); // PUBCOMP
  assertTwin(packet(0x90, 0, 1, props(), 0xa2), packet(0x90, 0, 1, props(), 0x03), MALFORMED);
  assertTwin(packet(0xb0, 0, 1, props(), 0x11), packet(0xb0, 0, 1, props(), 0x01), MALFORMED);
  assertTwin(packet(0xe0, 0x04), packet(0xe0, 0x01), MALFORMED); // DISCONNECT
  assertTwin(packet(0xf0, 0x19, props()), packet(0xf0, 0x01, props()), MALFORMED); // AUTH
  assertTwin(packet(0x20, 0, 0x9f, props()), packet(0x20, 0, 0x01, props()), MALFORMED); // CONNACK
  const v4 = { protocolVersion: 4 };
  assertTwin(packet(0x90, 0, 1, 0x80), packet(0x90, 0, 1, 0x03), MALFORMED, v4); // 3.1.1 SUBACK
});

// --- Failure is final ------------------------------------------------------------------------------

Deno.test("decoder stays failed after an error: later bytes are not decoded and next() rethrows the same error (4.13)", () => {
  const decoder = new PacketDecoder();
  const good = packet(0xc0);
  decoder.push(new Uint8Array([...good, 0x00, 0x00, ...good]));
  assert.deepEqual(decoder.next(), { type: PacketType.Pingreq });
  let first: unknown;
  try {
    decoder.next();
  } catch (e) {
    first = e;
  }
  assert.ok(first instanceof MqttError && first.reasonCode === MALFORMED);
  assert.equal(decoder.bufferedBytes, 0, "the failed stream's bytes are dropped");
  decoder.push(good);
  assert.throws(() => decoder.next(), (e) => e === first);
  assert.throws(() => decoder.next(), (e) => e === first);
});

function bits4(n: number): string {
  return n.toString(2).padStart(4, "0");
}
