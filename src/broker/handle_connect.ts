/**
 * CONNECT from a client: the first packet of every connection.
 *
 * @module
 */
import {
  type ConnectPacket,
  encodePacket,
  MAX_PACKET_SIZE_LIMIT,
  PacketType,
  type Properties,
  ReasonCode,
} from "../codec/mod.ts";
import { topicNameError } from "../topic/mod.ts";
import { TokenBucket } from "../util/token_bucket.ts";
import { isUtf8 } from "../util/utf8.ts";
import type { ClientConnection } from "./client.ts";

/**
 * CONNECT (3.1): version, client id, Will and credential checks, takeover and session
 * resumption, then CONNACK with the broker's capabilities and the resend of a resumed session.
 *
 * Runs synchronously unless it has to wait (a password hash, a store commit for a persistent
 * session, the delay before refusing bad credentials); then it returns a promise. A synchronous
 * CONNECT lets the packets after it in the same read, typically a SUBSCRIBE, be answered in the
 * same write as the CONNACK.
 */
export function handleConnect(client: ClientConnection, p: ConnectPacket): Promise<void> | void {
  const broker = client.broker;
  const opts = broker.options;
  client.protocolVersion = p.protocolVersion;
  client.keepAliveSec = p.keepAlive;
  if (p.protocolVersion === 3 && !opts.allowMqtt31) {
    return client.refuseConnect(ReasonCode.UnsupportedProtocolVersion, "MQTT 3.1 is disabled");
  }
  const props = p.properties ?? {};
  // Known before any refusal, so a refusing CONNACK fits it too [MQTT-3.2.2-19].
  if (client.v5) {
    client.maxPacketSizeOut = props.maximumPacketSize ?? MAX_PACKET_SIZE_LIMIT;
    client.topicAliasMaxOut = props.topicAliasMaximum ?? 0;
  }
  if (props.authenticationMethod !== undefined) {
    // Enhanced authentication is not supported [MQTT-4.12.0-1].
    return client.refuseConnect(
      ReasonCode.BadAuthenticationMethod,
      "enhanced authentication is not supported",
    );
  }
  let clientId = p.clientId;
  let assigned = false;
  if (clientId.length === 0) {
    if (!client.v5 && !p.cleanStart) {
      // 3.1.1 [MQTT-3.1.3-8]
      return client.refuseConnect(
        ReasonCode.ClientIdentifierNotValid,
        "empty client id needs clean session",
      );
    }
    clientId = broker.assignClientId();
    assigned = true;
  } else if (p.protocolVersion === 3 && clientId.length > 23) {
    return client.refuseConnect(
      ReasonCode.ClientIdentifierNotValid,
      "MQTT 3.1 client id longer than 23",
    );
  }
  client.setIdentity(clientId, p.username);
  if (p.will) {
    const w = p.will;
    if (w.qos > opts.maximumQos) {
      return client.refuseConnect(ReasonCode.QoSNotSupported, "Will QoS above Maximum QoS"); // [MQTT-3.2.2-12]
    }
    if (w.retain && !opts.retainAvailable) {
      return client.refuseConnect(ReasonCode.RetainNotSupported, "Will Retain not supported"); // [MQTT-3.2.2-13]
    }
    if (topicNameError(w.topic, broker.topicLimits) !== undefined) {
      return client.refuseConnect(ReasonCode.TopicNameInvalid, "invalid Will topic");
    }
    if (w.properties?.payloadFormatIndicator === 1 && !isUtf8(w.payload)) {
      return client.refuseConnect(ReasonCode.PayloadFormatInvalid, "Will payload is not UTF-8");
    }
    if (
      w.properties?.responseTopic !== undefined &&
      topicNameError(w.properties.responseTopic) !== undefined
    ) {
      return client.refuseConnect(ReasonCode.ProtocolError, "invalid Will Response Topic");
    }
  }
  if (broker.connectedCount >= opts.maxConnections && !broker.hasLiveConnection(clientId)) {
    broker.metrics.connectionsRefused++;
    return client.refuseConnect(ReasonCode.QuotaExceeded, "maximum connections reached");
  }
  if (!broker.allowConnectFrom(client.conn.remoteAddress)) {
    broker.metrics.connectRateRefused++;
    return client.refuseConnect(ReasonCode.ConnectionRateExceeded, "connection rate exceeded");
  }
  if (opts.maxPublishRatePerClient > 0) {
    const rate = opts.maxPublishRatePerClient;
    client.inbound.publishBucket = new TokenBucket(rate, rate, Date.now());
  }
  let verdict: number | Promise<number>;
  try {
    // Built from the fields, not from client.info: an idle connection never needs that object.
    verdict = broker.auth.authenticate({
      clientId: client.clientId,
      username: client.username,
      protocolVersion: client.protocolVersion,
      remoteAddress: client.conn.remoteAddress,
      remotePort: client.conn.remotePort,
      certificate: client.conn.peerIdentity,
      password: p.password,
    });
  } catch (err) {
    verdict = Promise.reject(err);
  }
  const connect: Accepted = { clientId, assigned, props };
  if (typeof verdict === "number") return afterAuthentication(client, p, connect, verdict);
  return verdict.then(
    (v) => afterAuthentication(client, p, connect, v),
    (err) => {
      broker.logger.error("authentication hook failed", { clientId, error: err });
      return afterAuthentication(client, p, connect, ReasonCode.UnspecifiedError);
    },
  );
}

/** What the checks before authentication settled about a CONNECT. */
interface Accepted {
  clientId: string;
  /** Whether the broker assigned the client id. */
  assigned: boolean;
  props: Properties;
}

/** CONNECT after the credentials were judged: session, then CONNACK. */
function afterAuthentication(
  client: ClientConnection,
  p: ConnectPacket,
  connect: Accepted,
  verdict: number,
): Promise<void> | void {
  const broker = client.broker;
  const opts = broker.options;
  const props = connect.props;
  if (client.state !== "connecting") return;
  if (verdict !== 0) {
    broker.metrics.connectionsRefused++;
    // Failed credentials wait before the refusal, which slows password guessing down.
    return broker.authFailureDelay().then(() =>
      client.refuseConnect(verdict, "authentication failed")
    );
  }

  // Session Expiry: v5 property, or 3.1.1 Clean Session mapping (checklist §12).
  let requestedExpiry = client.v5
    ? (props.sessionExpiryInterval ?? 0)
    : (p.cleanStart ? 0 : opts.persistentSessionExpirySec);
  client.connectExpirySec = requestedExpiry;
  let expiryOverridden = false;
  if (requestedExpiry > opts.maxSessionExpirySec) {
    requestedExpiry = opts.maxSessionExpirySec;
    expiryOverridden = true;
  }
  if (client.v5) {
    client.sendQuota = Math.min(props.receiveMaximum ?? 65_535, opts.maxInflightOut);
    client.maxPacketSizeOut = props.maximumPacketSize ?? MAX_PACKET_SIZE_LIMIT;
    client.requestProblemInfo = props.requestProblemInformation !== 0;
  } else {
    client.sendQuota = opts.maxInflightOut;
  }
  let serverKeepAlive: number | undefined;
  if (opts.maxKeepAliveSec > 0 && (p.keepAlive === 0 || p.keepAlive > opts.maxKeepAliveSec)) {
    if (client.v5) {
      serverKeepAlive = opts.maxKeepAliveSec;
      client.keepAliveSec = serverKeepAlive; // [MQTT-3.2.2-21]
    }
  }

  // Takeover and session resumption.
  const { session, present } = broker.openSession(client, p.cleanStart, requestedExpiry);
  client.session = session;
  const { remoteAddress, remotePort, peerIdentity: certificate } = client.conn;
  const username = client.username;
  session.will = p.will
    ? {
      will: p.will,
      delaySec: client.v5 ? (p.will.properties?.willDelayInterval ?? 0) : 0,
      // Authorized as this identity when it is published.
      owner: { username, remoteAddress, remotePort, certificate },
    }
    : undefined;
  broker.persistSession(session);
  // A persistent session is durable before its CONNACK says it is present next time.
  const settings: Settled = {
    ...connect,
    present,
    requestedExpiry,
    expiryOverridden,
    serverKeepAlive,
  };
  if (broker.store.dirty) return broker.store.flush().then(() => sendConnack(client, p, settings));
  sendConnack(client, p, settings);
}

/** What the CONNACK reports, settled while the session was opened. */
interface Settled extends Accepted {
  present: boolean;
  requestedExpiry: number;
  expiryOverridden: boolean;
  serverKeepAlive: number | undefined;
}

/** Sends the CONNACK of an accepted CONNECT, then what a resumed session still owes. */
function sendConnack(client: ClientConnection, p: ConnectPacket, settled: Settled): void {
  if (client.state !== "connecting") return;
  const broker = client.broker;
  const opts = broker.options;
  const { clientId, assigned, present, requestedExpiry, expiryOverridden, serverKeepAlive } =
    settled;

  const connackProps: Properties = {};
  if (client.v5) {
    if (opts.receiveMaximum !== 65_535) connackProps.receiveMaximum = opts.receiveMaximum;
    if (opts.maximumQos < 2) connackProps.maximumQoS = opts.maximumQos;
    if (!opts.retainAvailable) connackProps.retainAvailable = 0;
    connackProps.maximumPacketSize = opts.maxPacketSize;
    if (opts.topicAliasMaximum > 0) connackProps.topicAliasMaximum = opts.topicAliasMaximum;
    if (!opts.wildcardSubscriptionAvailable) connackProps.wildcardSubscriptionAvailable = 0;
    if (!opts.subscriptionIdentifierAvailable) connackProps.subscriptionIdentifierAvailable = 0;
    if (!opts.sharedSubscriptionAvailable) connackProps.sharedSubscriptionAvailable = 0;
    if (serverKeepAlive !== undefined) connackProps.serverKeepAlive = serverKeepAlive;
    if (assigned) connackProps.assignedClientIdentifier = clientId; // [MQTT-3.2.2-16]
    if (expiryOverridden) connackProps.sessionExpiryInterval = requestedExpiry;
  }
  client.state = "connected";
  client.send(encodePacket(
    {
      type: PacketType.Connack,
      sessionPresent: present,
      reasonCode: 0,
      properties: client.v5 ? connackProps : undefined,
    },
    client.protocolVersion,
  ));
  if (broker.logger.infoEnabled) {
    broker.logger.info("client connected", {
      clientId,
      address: client.conn.remoteAddress,
      port: client.conn.remotePort,
      protocol: client.protocolVersion,
      keepAlive: client.keepAliveSec,
      cleanStart: p.cleanStart,
      sessionPresent: present,
      sessionExpiry: requestedExpiry,
    });
  }
  if (present) client.resendSession();
  client.pump();
}
