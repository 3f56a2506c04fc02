import { malformed, protocolError } from "./errors.ts";
import type { Properties, UserProperty } from "./packet.ts";
import type { Reader } from "./reader.ts";
import { MAX_VBI, stringFieldSize, vbiSize, type Writer } from "./writer.ts";

type PropertyKind = "byte" | "u16" | "u32" | "vbi" | "string" | "binary" | "pair";

/** Pseudo packet type for Will properties in the allowed-on masks. */
export const WILL_PROPERTIES = 16;

interface PropertyDef {
  id: number;
  name: keyof Properties;
  kind: PropertyKind;
  /** Bit mask of packet types (1 << type) where the property may appear, plus 1 << 16 for Will. */
  allowedOn: number;
  /** Inclusive range allowed for numeric values; outside is a Protocol Error (2.2.2.2). */
  min?: number;
  max?: number;
}

const T = {
  CONNECT: 1 << 1,
  CONNACK: 1 << 2,
  PUBLISH: 1 << 3,
  PUBACK: 1 << 4,
  PUBREC: 1 << 5,
  PUBREL: 1 << 6,
  PUBCOMP: 1 << 7,
  SUBSCRIBE: 1 << 8,
  SUBACK: 1 << 9,
  UNSUBSCRIBE: 1 << 10,
  UNSUBACK: 1 << 11,
  DISCONNECT: 1 << 14,
  AUTH: 1 << 15,
  WILL: 1 << WILL_PROPERTIES,
};
const ALL_WITH_PROPERTIES = T.CONNECT | T.CONNACK | T.PUBLISH | T.PUBACK | T.PUBREC | T.PUBREL |
  T.PUBCOMP | T.SUBSCRIBE | T.SUBACK | T.UNSUBSCRIBE | T.UNSUBACK | T.DISCONNECT | T.AUTH |
  T.WILL;
const ACKS = T.PUBACK | T.PUBREC | T.PUBREL | T.PUBCOMP;

/** Every MQTT 5.0 property (spec 2.2.2.2, checklist §2): id, type, where allowed, range. */
export const PROPERTY_TABLE: readonly PropertyDef[] = [
  {
    id: 0x01,
    name: "payloadFormatIndicator",
    kind: "byte",
    allowedOn: T.PUBLISH | T.WILL,
    min: 0,
    max: 1,
  },
  { id: 0x02, name: "messageExpiryInterval", kind: "u32", allowedOn: T.PUBLISH | T.WILL },
  { id: 0x03, name: "contentType", kind: "string", allowedOn: T.PUBLISH | T.WILL },
  { id: 0x08, name: "responseTopic", kind: "string", allowedOn: T.PUBLISH | T.WILL },
  { id: 0x09, name: "correlationData", kind: "binary", allowedOn: T.PUBLISH | T.WILL },
  {
    id: 0x0b,
    name: "subscriptionIdentifiers",
    kind: "vbi",
    allowedOn: T.PUBLISH | T.SUBSCRIBE,
    min: 1,
    max: MAX_VBI,
  },
  {
    id: 0x11,
    name: "sessionExpiryInterval",
    kind: "u32",
    allowedOn: T.CONNECT | T.CONNACK | T.DISCONNECT,
  },
  { id: 0x12, name: "assignedClientIdentifier", kind: "string", allowedOn: T.CONNACK },
  { id: 0x13, name: "serverKeepAlive", kind: "u16", allowedOn: T.CONNACK },
  {
    id: 0x15,
    name: "authenticationMethod",
    kind: "string",
    allowedOn: T.CONNECT | T.CONNACK | T.AUTH,
  },
  {
    id: 0x16,
    name: "authenticationData",
    kind: "binary",
    allowedOn: T.CONNECT | T.CONNACK | T.AUTH,
  },
  {
    id: 0x17,
    name: "requestProblemInformation",
    kind: "byte",
    allowedOn: T.CONNECT,
    min: 0,
    max: 1,
  },
  { id: 0x18, name: "willDelayInterval", kind: "u32", allowedOn: T.WILL },
  {
    id: 0x19,
    name: "requestResponseInformation",
    kind: "byte",
    allowedOn: T.CONNECT,
    min: 0,
    max: 1,
  },
  { id: 0x1a, name: "responseInformation", kind: "string", allowedOn: T.CONNACK },
  { id: 0x1c, name: "serverReference", kind: "string", allowedOn: T.CONNACK | T.DISCONNECT },
  {
    id: 0x1f,
    name: "reasonString",
    kind: "string",
    allowedOn: T.CONNACK | ACKS | T.SUBACK | T.UNSUBACK | T.DISCONNECT | T.AUTH,
  },
  { id: 0x21, name: "receiveMaximum", kind: "u16", allowedOn: T.CONNECT | T.CONNACK, min: 1 },
  { id: 0x22, name: "topicAliasMaximum", kind: "u16", allowedOn: T.CONNECT | T.CONNACK },
  { id: 0x23, name: "topicAlias", kind: "u16", allowedOn: T.PUBLISH },
  { id: 0x24, name: "maximumQoS", kind: "byte", allowedOn: T.CONNACK, min: 0, max: 1 },
  { id: 0x25, name: "retainAvailable", kind: "byte", allowedOn: T.CONNACK, min: 0, max: 1 },
  { id: 0x26, name: "userProperties", kind: "pair", allowedOn: ALL_WITH_PROPERTIES },
  { id: 0x27, name: "maximumPacketSize", kind: "u32", allowedOn: T.CONNECT | T.CONNACK, min: 1 },
  {
    id: 0x28,
    name: "wildcardSubscriptionAvailable",
    kind: "byte",
    allowedOn: T.CONNACK,
    min: 0,
    max: 1,
  },
  {
    id: 0x29,
    name: "subscriptionIdentifierAvailable",
    kind: "byte",
    allowedOn: T.CONNACK,
    min: 0,
    max: 1,
  },
  {
    id: 0x2a,
    name: "sharedSubscriptionAvailable",
    kind: "byte",
    allowedOn: T.CONNACK,
    min: 0,
    max: 1,
  },
];

const BY_ID: (PropertyDef | undefined)[] = [];
const BY_NAME = new Map<string, PropertyDef>();
for (const def of PROPERTY_TABLE) {
  BY_ID[def.id] = def;
  BY_NAME.set(def.name, def);
}

const PACKET_LABEL: Record<number, string> = {
  1: "CONNECT",
  2: "CONNACK",
  3: "PUBLISH",
  4: "PUBACK",
  5: "PUBREC",
  6: "PUBREL",
  7: "PUBCOMP",
  8: "SUBSCRIBE",
  9: "SUBACK",
  10: "UNSUBSCRIBE",
  11: "UNSUBACK",
  14: "DISCONNECT",
  15: "AUTH",
  16: "Will",
};

/**
 * Reads a property section (length + properties) for packet type `on`
 * (or {@link WILL_PROPERTIES}). A repeated property is a Protocol Error; an
 * unknown id or one not allowed on this packet is malformed (2.2.2.2).
 */
export function readProperties(r: Reader, on: number): Properties | undefined {
  const length = r.vbi("property length");
  if (length === 0) return undefined;
  r.need(length, "properties");
  const end = r.pos + length;
  const outerEnd = r.end;
  r.end = end; // a property value may not run past the declared length
  const props: Properties = {};
  const seen = new Set<number>();
  const label = PACKET_LABEL[on];
  while (r.pos < end) {
    const id = r.vbi("property identifier");
    const def = BY_ID[id];
    if (def === undefined) throw malformed(`Cannot decode ${label}: unknown property 0x${hex(id)}`);
    if ((def.allowedOn & (1 << on)) === 0) {
      throw malformed(`Cannot decode ${label}: property ${def.name} is not allowed here`);
    }
    if (def.kind === "pair") {
      const name = r.utf8("user property name");
      const value = r.utf8("user property value");
      (props.userProperties ??= []).push([name, value]);
      continue;
    }
    if (seen.has(id)) {
      // Several Subscription Identifiers are valid only server → client on PUBLISH [MQTT-3.3.4-4].
      if (!(id === 0x0b && on === 3)) {
        throw protocolError(`Cannot decode ${label}: property ${def.name} appears twice`);
      }
    }
    seen.add(id);
    let value: number | string | Uint8Array;
    switch (def.kind) {
      case "byte":
        value = r.u8(def.name);
        break;
      case "u16":
        value = r.u16(def.name);
        break;
      case "u32":
        value = r.u32(def.name);
        break;
      case "vbi":
        value = r.vbi(def.name);
        break;
      case "string":
        value = r.utf8(def.name);
        break;
      default:
        value = r.binary(def.name);
    }
    if (typeof value === "number") {
      if (
        (def.min !== undefined && value < def.min) || (def.max !== undefined && value > def.max)
      ) {
        throw protocolError(
          `Cannot accept ${label}: property ${def.name} has invalid value ${value}`,
        );
      }
    }
    if (def.name === "subscriptionIdentifiers") {
      (props.subscriptionIdentifiers ??= []).push(value as number);
    } else {
      (props as Record<string, unknown>)[def.name] = value;
    }
  }
  r.end = outerEnd;
  if (props.authenticationData !== undefined && props.authenticationMethod === undefined) {
    // 3.1.2.11.10 / 3.15.2.2.3
    throw protocolError(
      `Cannot accept ${label}: Authentication Data without Authentication Method`,
    );
  }
  return props;
}

/** Bytes of the property section body (without its length prefix); throws RangeError on bad input. */
export function propertiesSize(props: Properties | undefined): number {
  if (props === undefined) return 0;
  let size = 0;
  for (const key in props) {
    const value = (props as Record<string, unknown>)[key];
    if (value === undefined) continue;
    const def = BY_NAME.get(key);
    if (def === undefined) throw new TypeError(`Cannot encode unknown property ${key}`);
    switch (def.kind) {
      case "byte":
        size += 2;
        break;
      case "u16":
        size += 3;
        break;
      case "u32":
        size += 5;
        break;
      case "vbi":
        for (const id of value as number[]) size += 1 + vbiSize(id);
        break;
      case "string":
        size += 1 + stringFieldSize(value as string);
        break;
      case "binary":
        size += 1 + binaryFieldSize(value as Uint8Array);
        break;
      case "pair":
        for (const [k, v] of value as UserProperty[]) {
          size += 1 + stringFieldSize(k) + stringFieldSize(v);
        }
        break;
    }
  }
  return size;
}

/** Size of a length-prefixed binary field. */
export function binaryFieldSize(data: Uint8Array): number {
  if (data.length > 65_535) {
    throw new RangeError(`Cannot encode binary data of ${data.length} bytes: above 65535`);
  }
  return 2 + data.length;
}

/** Writes the property section: the length (already computed by {@link propertiesSize}) and the properties. */
export function writeProperties(w: Writer, props: Properties | undefined, size: number): void {
  w.vbi(size);
  if (props === undefined || size === 0) return;
  for (const key in props) {
    const value = (props as Record<string, unknown>)[key];
    if (value === undefined) continue;
    const def = BY_NAME.get(key)!;
    switch (def.kind) {
      case "byte":
        w.u8(def.id);
        w.u8(value as number);
        break;
      case "u16":
        w.u8(def.id);
        w.u16(value as number);
        break;
      case "u32":
        w.u8(def.id);
        w.u32(value as number);
        break;
      case "vbi":
        for (const id of value as number[]) {
          w.u8(def.id);
          w.vbi(id);
        }
        break;
      case "string":
        w.u8(def.id);
        w.utf8(value as string);
        break;
      case "binary":
        w.u8(def.id);
        w.binary(value as Uint8Array);
        break;
      case "pair":
        for (const [k, v] of value as UserProperty[]) {
          w.u8(def.id);
          w.utf8(k);
          w.utf8(v);
        }
        break;
    }
  }
}

function hex(n: number): string {
  return n.toString(16).padStart(2, "0");
}
