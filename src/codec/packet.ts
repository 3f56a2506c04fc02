/** MQTT control packet types (fixed header bits 7-4). */
export const PacketType = {
  Connect: 1,
  Connack: 2,
  Publish: 3,
  Puback: 4,
  Pubrec: 5,
  Pubrel: 6,
  Pubcomp: 7,
  Subscribe: 8,
  Suback: 9,
  Unsubscribe: 10,
  Unsuback: 11,
  Pingreq: 12,
  Pingresp: 13,
  Disconnect: 14,
  Auth: 15,
} as const;

/** A packet type value. */
export type PacketTypeValue = (typeof PacketType)[keyof typeof PacketType];

/** Printable names of packet types, indexed by type value. */
export const PACKET_NAMES: readonly string[] = [
  "RESERVED",
  "CONNECT",
  "CONNACK",
  "PUBLISH",
  "PUBACK",
  "PUBREC",
  "PUBREL",
  "PUBCOMP",
  "SUBSCRIBE",
  "SUBACK",
  "UNSUBSCRIBE",
  "UNSUBACK",
  "PINGREQ",
  "PINGRESP",
  "DISCONNECT",
  "AUTH",
];

/** Quality of service level. */
export type QoS = 0 | 1 | 2;

/** Protocol level: 3 = MQTT 3.1, 4 = MQTT 3.1.1, 5 = MQTT 5.0. */
export type ProtocolVersion = 3 | 4 | 5;

/** A User Property: a name/value string pair; order and repeats are kept. */
export type UserProperty = [name: string, value: string];

/** MQTT 5.0 properties (spec 2.2.2.2); each packet carries its own subset. */
export interface Properties {
  payloadFormatIndicator?: number;
  messageExpiryInterval?: number;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Uint8Array;
  /** One or more on server-to-client PUBLISH; at most one on SUBSCRIBE. */
  subscriptionIdentifiers?: number[];
  sessionExpiryInterval?: number;
  assignedClientIdentifier?: string;
  serverKeepAlive?: number;
  authenticationMethod?: string;
  authenticationData?: Uint8Array;
  requestProblemInformation?: number;
  willDelayInterval?: number;
  requestResponseInformation?: number;
  responseInformation?: string;
  serverReference?: string;
  reasonString?: string;
  receiveMaximum?: number;
  topicAliasMaximum?: number;
  topicAlias?: number;
  maximumQoS?: number;
  retainAvailable?: number;
  userProperties?: UserProperty[];
  maximumPacketSize?: number;
  wildcardSubscriptionAvailable?: number;
  subscriptionIdentifierAvailable?: number;
  sharedSubscriptionAvailable?: number;
}

/** The Will message carried in a CONNECT. */
export interface Will {
  topic: string;
  payload: Uint8Array;
  qos: QoS;
  retain: boolean;
  /** Will properties (v5 only). */
  properties?: Properties;
}

/** CONNECT (3.1). */
export interface ConnectPacket {
  type: typeof PacketType.Connect;
  /** "MQTT" for levels 4 and 5, "MQIsdp" for level 3. */
  protocolName: string;
  protocolVersion: ProtocolVersion;
  /** Clean Start (v5) / Clean Session (3.1.1). */
  cleanStart: boolean;
  keepAlive: number;
  clientId: string;
  username?: string;
  password?: Uint8Array;
  will?: Will;
  properties?: Properties;
}

/** CONNACK (3.2). For 3.1.1 `reasonCode` holds the return code. */
export interface ConnackPacket {
  type: typeof PacketType.Connack;
  sessionPresent: boolean;
  reasonCode: number;
  properties?: Properties;
}

/** PUBLISH (3.3). */
export interface PublishPacket {
  type: typeof PacketType.Publish;
  topic: string;
  payload: Uint8Array;
  qos: QoS;
  retain: boolean;
  dup: boolean;
  /** Present exactly when qos > 0. */
  packetId?: number;
  properties?: Properties;
}

/** PUBACK, PUBREC, PUBREL, PUBCOMP (3.4-3.7): the same shape. */
export interface PubAckPacket {
  type:
    | typeof PacketType.Puback
    | typeof PacketType.Pubrec
    | typeof PacketType.Pubrel
    | typeof PacketType.Pubcomp;
  packetId: number;
  /** 0x00 unless given; always 0 for 3.1.1. */
  reasonCode: number;
  properties?: Properties;
}

/** One topic filter with its options in a SUBSCRIBE (3.8.3). */
export interface Subscription {
  topicFilter: string;
  qos: QoS;
  noLocal: boolean;
  retainAsPublished: boolean;
  retainHandling: 0 | 1 | 2;
}

/** SUBSCRIBE (3.8). */
export interface SubscribePacket {
  type: typeof PacketType.Subscribe;
  packetId: number;
  subscriptions: Subscription[];
  properties?: Properties;
}

/** SUBACK (3.9). */
export interface SubackPacket {
  type: typeof PacketType.Suback;
  packetId: number;
  reasonCodes: number[];
  properties?: Properties;
}

/** UNSUBSCRIBE (3.10). */
export interface UnsubscribePacket {
  type: typeof PacketType.Unsubscribe;
  packetId: number;
  topicFilters: string[];
  properties?: Properties;
}

/** UNSUBACK (3.11). 3.1.1 has no payload, so `reasonCodes` is empty there. */
export interface UnsubackPacket {
  type: typeof PacketType.Unsuback;
  packetId: number;
  reasonCodes: number[];
  properties?: Properties;
}

/** PINGREQ (3.12). */
export interface PingreqPacket {
  type: typeof PacketType.Pingreq;
}

/** PINGRESP (3.13). */
export interface PingrespPacket {
  type: typeof PacketType.Pingresp;
}

/** DISCONNECT (3.14). */
export interface DisconnectPacket {
  type: typeof PacketType.Disconnect;
  reasonCode: number;
  properties?: Properties;
}

/** AUTH (3.15, v5 only). */
export interface AuthPacket {
  type: typeof PacketType.Auth;
  reasonCode: number;
  properties?: Properties;
}

/** Any MQTT control packet. */
export type Packet =
  | ConnectPacket
  | ConnackPacket
  | PublishPacket
  | PubAckPacket
  | SubscribePacket
  | SubackPacket
  | UnsubscribePacket
  | UnsubackPacket
  | PingreqPacket
  | PingrespPacket
  | DisconnectPacket
  | AuthPacket;
