/** MQTT 5.0 reason codes (spec 2.4), by name. */
export const ReasonCode = {
  Success: 0x00,
  NormalDisconnection: 0x00,
  GrantedQoS0: 0x00,
  GrantedQoS1: 0x01,
  GrantedQoS2: 0x02,
  DisconnectWithWillMessage: 0x04,
  NoMatchingSubscribers: 0x10,
  NoSubscriptionExisted: 0x11,
  ContinueAuthentication: 0x18,
  ReAuthenticate: 0x19,
  UnspecifiedError: 0x80,
  MalformedPacket: 0x81,
  ProtocolError: 0x82,
  ImplementationSpecificError: 0x83,
  UnsupportedProtocolVersion: 0x84,
  ClientIdentifierNotValid: 0x85,
  BadUserNameOrPassword: 0x86,
  NotAuthorized: 0x87,
  ServerUnavailable: 0x88,
  ServerBusy: 0x89,
  Banned: 0x8a,
  ServerShuttingDown: 0x8b,
  BadAuthenticationMethod: 0x8c,
  KeepAliveTimeout: 0x8d,
  SessionTakenOver: 0x8e,
  TopicFilterInvalid: 0x8f,
  TopicNameInvalid: 0x90,
  PacketIdentifierInUse: 0x91,
  PacketIdentifierNotFound: 0x92,
  ReceiveMaximumExceeded: 0x93,
  TopicAliasInvalid: 0x94,
  PacketTooLarge: 0x95,
  MessageRateTooHigh: 0x96,
  QuotaExceeded: 0x97,
  AdministrativeAction: 0x98,
  PayloadFormatInvalid: 0x99,
  RetainNotSupported: 0x9a,
  QoSNotSupported: 0x9b,
  UseAnotherServer: 0x9c,
  ServerMoved: 0x9d,
  SharedSubscriptionsNotSupported: 0x9e,
  ConnectionRateExceeded: 0x9f,
  MaximumConnectTime: 0xa0,
  SubscriptionIdentifiersNotSupported: 0xa1,
  WildcardSubscriptionsNotSupported: 0xa2,
} as const;

/** A reason code value. */
export type ReasonCodeValue = (typeof ReasonCode)[keyof typeof ReasonCode];

/** MQTT 3.1.1 CONNACK return codes (3.1.1 spec 3.2.2.3). */
export const ConnectReturnCode = {
  Accepted: 0x00,
  UnacceptableProtocolVersion: 0x01,
  IdentifierRejected: 0x02,
  ServerUnavailable: 0x03,
  BadUserNameOrPassword: 0x04,
  NotAuthorized: 0x05,
} as const;

/** The 3.1.1 SUBACK failure return code. */
export const SUBACK_FAILURE_V4 = 0x80;

function codeSet(...codes: number[]): ReadonlySet<number> {
  return new Set(codes);
}
function range(from: number, to: number): number[] {
  const out: number[] = [];
  for (let c = from; c <= to; c++) out.push(c);
  return out;
}

/** Reason codes each packet type may carry (spec 2.4 and the per-packet tables). */
export const VALID_REASON_CODES: Readonly<
  Record<
    "connack" | "puback" | "pubrel" | "suback" | "unsuback" | "disconnect" | "auth",
    ReadonlySet<number>
  >
> = {
  connack: codeSet(0x00, ...range(0x80, 0x8a), 0x8c, 0x90, 0x95, 0x97, ...range(0x99, 0x9d), 0x9f),
  puback: codeSet(0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99),
  pubrel: codeSet(0x00, 0x92),
  suback: codeSet(0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2),
  unsuback: codeSet(0x00, 0x11, 0x80, 0x83, 0x87, 0x8f, 0x91),
  disconnect: codeSet(
    0x00,
    0x04,
    ...range(0x80, 0x83),
    0x87,
    0x89,
    0x8b,
    ...range(0x8d, 0x90),
    ...range(0x93, 0xa2),
  ),
  auth: codeSet(0x00, 0x18, 0x19),
} as const;

/**
 * Maps a v5 CONNACK reason code to the closest 3.1.1 return code, for refusing
 * 3.1.1 clients with the same logic.
 */
export function connackCodeForV4(reasonCode: number): number {
  switch (reasonCode) {
    case 0x00:
      return ConnectReturnCode.Accepted;
    case 0x84:
      return ConnectReturnCode.UnacceptableProtocolVersion;
    case 0x85:
      return ConnectReturnCode.IdentifierRejected;
    case 0x86:
    case 0x8c:
      return ConnectReturnCode.BadUserNameOrPassword;
    case 0x87:
    case 0x8a:
      return ConnectReturnCode.NotAuthorized;
    default:
      return ConnectReturnCode.ServerUnavailable;
  }
}
