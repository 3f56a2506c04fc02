/**
 * The transport seam: a byte stream per client and a listener that accepts
 * them. TCP lives here; TLS and WebSocket listeners implement the same shapes
 * and feed the same connection loop.
 *
 * @module
 */

/** What a verified client certificate says about its holder (mutual TLS listeners only). */
export interface PeerIdentity {
  /** The subject's Common Name (the first one when there are several). */
  commonName?: string;
  /** Subject Alternative Names as `type:value`, e.g. `DNS:device-42.example`, `email:a@b.c`. */
  subjectAltNames?: string[];
  /** SHA-256 fingerprint of the certificate, colon-separated hex (`AB:CD:...`). */
  fingerprint256?: string;
}

/** A bidirectional byte stream to one client. */
export interface ByteConn {
  /** Peer address for logs and limits. */
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** The verified client certificate, on listeners that require one (mutual TLS). */
  readonly peerIdentity?: PeerIdentity;
  /** Reads into `buf`; resolves to the byte count, or null at end of stream. */
  read(buf: Uint8Array): Promise<number | null>;
  /** Writes some of `buf` (possibly not all); resolves to the count written. */
  write(buf: Uint8Array): Promise<number>;
  /** Ends our write side (TCP FIN) so the peer reads what we sent before the close. */
  closeWrite(): Promise<void>;
  /** Closes both directions; safe to call twice. */
  close(): void;
}

/** Accepts client connections. */
export interface ConnListener {
  /** Bound address. */
  readonly host: string;
  readonly port: number;
  /** Next connection, or null once closed. */
  accept(): Promise<ByteConn | null>;
  /** Stops accepting; connections already accepted stay open. */
  close(): void;
  /**
   * Re-reads the certificate and key files (TLS and WSS listeners). Resolves to true when new
   * material is in use for new connections, false when the files are unchanged; throws (keeping
   * the old material) when they cannot be read or do not form a valid pair.
   */
  reloadCertificates?(): Promise<boolean>;
  /**
   * Releases what is left once the broker has closed every connection of this listener (an HTTP
   * server, a `node:tls` server); resolves when done. Called after {@link close}.
   */
  release?(): Promise<void>;
}

/** A {@link ByteConn} over a Deno TCP or TLS connection. */
export class DenoByteConn implements ByteConn {
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly #conn: Deno.Conn;
  #closed = false;

  constructor(conn: Deno.TcpConn | Deno.TlsConn) {
    this.#conn = conn;
    const addr = conn.remoteAddr as Deno.NetAddr;
    this.remoteAddress = addr.hostname;
    this.remotePort = addr.port;
    // Accepted sockets start with Nagle on: small acks would stall 40 ms (deno-notes §3).
    // A TlsConn has no setNoDelay; the Outbox writes each batch in one call instead.
    if ("setNoDelay" in conn) {
      try {
        conn.setNoDelay(true);
      } catch { /* socket already gone */ }
    }
  }

  read(buf: Uint8Array): Promise<number | null> {
    return this.#conn.read(buf);
  }

  write(buf: Uint8Array): Promise<number> {
    return this.#conn.write(buf);
  }

  async closeWrite(): Promise<void> {
    if (this.#closed) return;
    try {
      await this.#conn.closeWrite();
    } catch { /* peer already gone */ }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }
}

/** A plain TCP listener (`Deno.listen`). */
export class TcpListener implements ConnListener {
  readonly host: string;
  readonly port: number;
  readonly #listener: Deno.TcpListener;
  #closed = false;

  constructor(host: string, port: number) {
    this.#listener = Deno.listen({ hostname: host, port, transport: "tcp" });
    const addr = this.#listener.addr as Deno.NetAddr;
    this.host = addr.hostname;
    this.port = addr.port;
  }

  async accept(): Promise<ByteConn | null> {
    while (!this.#closed) {
      try {
        return new DenoByteConn(await this.#listener.accept());
      } catch (err) {
        if (this.#closed || err instanceof Deno.errors.BadResource) return null;
        // Transient accept failures (EMFILE, ECONNABORTED): back off briefly and go on.
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    return null;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch { /* already closed */ }
  }
}
