/**
 * DISCONNECT and AUTH from a client.
 *
 * @module
 */
import { type AuthPacket, type DisconnectPacket, ReasonCode } from "../codec/mod.ts";
import type { ClientConnection } from "./client.ts";

/** DISCONNECT from the client (3.14): Session Expiry update, Will decision, then close. */
export function handleDisconnect(client: ClientConnection, p: DisconnectPacket): void {
  const session = client.session!;
  const expiry = p.properties?.sessionExpiryInterval;
  if (expiry !== undefined) {
    if (client.connectExpirySec === 0 && expiry !== 0) {
      // 3.14.2.2.2: not a normal disconnection, so the Will is published.
      client.disconnect(ReasonCode.ProtocolError, "Session Expiry changed from 0 in DISCONNECT");
      return;
    }
    session.expirySec = Math.min(expiry, client.broker.options.maxSessionExpirySec);
    client.broker.persistSession(session);
  }
  // [MQTT-3.14.4-3] DISCONNECT 0x00 discards the Will; 0x04 and error codes publish it. 3.1.1 always discards.
  client.publishWillOnClose = client.v5 && p.reasonCode !== ReasonCode.NormalDisconnection;
  client.closeNow(`client DISCONNECT 0x${p.reasonCode.toString(16)}`);
}

/** AUTH from the client: enhanced authentication is not offered. */
export function handleAuth(client: ClientConnection, _p: AuthPacket): void {
  // No Authentication Method was accepted in CONNECT, so AUTH is a Protocol Error [MQTT-4.12.0-6].
  client.disconnect(ReasonCode.ProtocolError, "AUTH without enhanced authentication");
}
