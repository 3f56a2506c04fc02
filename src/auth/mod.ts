/**
 * The authentication and authorization seam. The broker calls these hooks at
 * CONNECT, PUBLISH, SUBSCRIBE and delivery; the security work plugs password
 * files, ACLs and certificates in behind them.
 *
 * @module
 */

/** What the broker knows about a client when it asks a hook. */
export interface ClientInfo {
  clientId: string;
  username?: string;
  protocolVersion: number;
  remoteAddress: string;
  remotePort: number;
}

/** A CONNECT's credentials. */
export interface ConnectRequest extends ClientInfo {
  password?: Uint8Array;
}

/** Pluggable decisions. Each returns quickly; authenticate may be async (password hashing). */
export interface AuthHooks {
  /** Returns 0x00 to admit, or a CONNACK reason code (0x86, 0x87, 0x8A, ...) to refuse. */
  authenticate(request: ConnectRequest): number | Promise<number>;
  /** Whether the client may publish to `topic` (also applied to its Will). */
  authorizePublish(client: ClientInfo, topic: string): boolean;
  /** Whether the client may subscribe to `filter` (as sent, including `$share/...`). */
  authorizeSubscribe(client: ClientInfo, filter: string): boolean;
  /** Whether a message on `topic` may be delivered to the client (live and retained). */
  authorizeDelivery(client: ClientInfo, topic: string): boolean;
}

/** Default policy: anonymous clients admitted iff allowed; everything else permitted. */
export function defaultAuthHooks(allowAnonymous: boolean): AuthHooks {
  return {
    authenticate: (req) => (req.username === undefined && !allowAnonymous ? 0x87 : 0x00),
    authorizePublish: () => true,
    authorizeSubscribe: () => true,
    authorizeDelivery: () => true,
  };
}
