/**
 * The authentication and authorization seam. The broker calls these hooks at
 * CONNECT, PUBLISH, SUBSCRIBE and delivery; the security work plugs password
 * files, ACLs and certificates in behind them.
 *
 * @module
 */
import { type AnonymousPolicy, isLoopbackAddress } from "./reloadable.ts";

export * from "./acl.ts";
export * from "./hash.ts";
export * from "./password_file.ts";
export * from "./reloadable.ts";

/** What the broker knows about a client when it asks a hook. */
export interface ClientInfo {
  clientId: string;
  username?: string;
  protocolVersion: number;
  remoteAddress: string;
  remotePort: number;
  /** The client certificate the TLS listener verified (mTLS), if any. */
  certificate?: { commonName?: string; subjectAltNames?: string[]; fingerprint256?: string };
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

/**
 * Default policy: anonymous clients admitted per `allowAnonymous` (`"loopback"`: only from
 * 127.0.0.0/8 or ::1); everything else permitted.
 */
export function defaultAuthHooks(allowAnonymous: AnonymousPolicy): AuthHooks {
  return {
    authenticate: (req) =>
      req.username === undefined && !(allowAnonymous === true ||
          (allowAnonymous === "loopback" && isLoopbackAddress(req.remoteAddress)))
        ? 0x87
        : 0x00,
    authorizePublish: () => true,
    authorizeSubscribe: () => true,
    authorizeDelivery: () => true,
  };
}
