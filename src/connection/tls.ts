/**
 * TLS listeners behind the transport seam.
 *
 * - {@link TlsListener}: `Deno.listenTls` (rustls, fast), ALPN `mqtt`. It cannot ask for client
 *   certificates (deno-notes §2).
 * - {@link MutualTlsListener}: `node:tls` with `requestCert` + `rejectUnauthorized` against a CA,
 *   for listeners that require client certificates; it exposes the verified certificate as
 *   {@link PeerIdentity}. About 5-7× slower in bulk than `Deno.listenTls`, so it is used only
 *   where mutual TLS is asked for.
 *
 * Neither connection type has `setNoDelay` (a `Deno.TlsConn` has none; the `node:tls` socket gets
 * it set), so the {@link Outbox} writing each batch in one call is what keeps small packets from
 * waiting on Nagle's algorithm.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { createPrivateKey, X509Certificate } from "node:crypto";
import * as tls from "node:tls";
import type { Logger } from "../observe/log.ts";
import { ChunkQueue } from "./chunk_queue.ts";
import { type ByteConn, type ConnListener, DenoByteConn, type PeerIdentity } from "./transport.ts";

/** ALPN protocol offered by every MQTT TLS listener. */
export const MQTT_ALPN = "mqtt";

/** Files a TLS listener reads its certificate, key and (for mutual TLS) client CA from. */
export interface TlsFiles {
  /** PEM certificate (chain): the server certificate first, intermediates after it. */
  certFile: string;
  /** PEM private key of the server certificate. */
  keyFile: string;
  /** PEM CA certificate(s) that client certificates must chain to (mutual TLS). */
  caFile?: string;
}

/** The PEM text of {@link TlsFiles}, checked to be usable. */
export interface TlsMaterial {
  cert: string;
  key: string;
  ca?: string;
  /** End of the server certificate's validity. */
  notAfter: Date;
  /** Start of the server certificate's validity. */
  notBefore: Date;
}

/**
 * Why a PEM certificate and key cannot serve TLS, or undefined when they can: the certificate must
 * parse and the key must parse and belong to it.
 */
export function keyPairProblem(certPem: string, keyPem: string): string | undefined {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch {
    return "the certificate file holds no valid PEM certificate";
  }
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    return "the key file holds no valid PEM private key";
  }
  if (!cert.checkPrivateKey(key)) {
    return "the private key does not belong to the certificate";
  }
  return undefined;
}

/** Why a PEM CA file cannot verify client certificates, or undefined when it can. */
export function caProblem(caPem: string): string | undefined {
  try {
    new X509Certificate(caPem);
    return undefined;
  } catch {
    return "the CA file holds no valid PEM certificate";
  }
}

/**
 * Reads and checks the files of a TLS listener.
 *
 * @throws {Error} Naming the file, when one cannot be read or the pair is not usable.
 */
export async function readTlsMaterial(files: TlsFiles): Promise<TlsMaterial> {
  const read = async (path: string) => {
    try {
      return await Deno.readTextFile(path);
    } catch (err) {
      throw new Error(`Cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
  };
  const [cert, key, ca] = await Promise.all([
    read(files.certFile),
    read(files.keyFile),
    files.caFile === undefined ? undefined : read(files.caFile),
  ]);
  const problem = keyPairProblem(cert, key) ??
    (ca === undefined ? undefined : caProblem(ca));
  if (problem !== undefined) {
    throw new Error(
      `Cannot use ${files.certFile} / ${files.keyFile}${
        files.caFile ? ` / ${files.caFile}` : ""
      }: ${problem}`,
    );
  }
  const x509 = new X509Certificate(cert);
  return { cert, key, ca, notAfter: new Date(x509.validTo), notBefore: new Date(x509.validFrom) };
}

function sameMaterial(a: TlsMaterial, b: TlsMaterial): boolean {
  return a.cert === b.cert && a.key === b.key && a.ca === b.ca;
}

/** Logs a warning when the server certificate is outside its validity period. */
export function warnIfNotValidNow(
  material: TlsMaterial,
  files: TlsFiles,
  logger: Logger | undefined,
): void {
  const now = Date.now();
  if (material.notAfter.getTime() < now) {
    logger?.warn("server certificate has expired", {
      file: files.certFile,
      notAfter: material.notAfter.toISOString(),
    });
  } else if (material.notBefore.getTime() > now) {
    logger?.warn("server certificate is not valid yet", {
      file: files.certFile,
      notBefore: material.notBefore.toISOString(),
    });
  }
}

/** Options shared by the TLS listeners. */
export interface TlsListenerOptions {
  /** Address to bind. */
  host: string;
  /** Port to bind; 0 picks one. */
  port: number;
  /** Where the certificate, key and CA are read from (again on reload). */
  files: TlsFiles;
  /** Where refused handshakes and reloads are logged. */
  logger?: Logger;
}

/**
 * A TLS listener on `Deno.listenTls` with ALPN `mqtt` (clients offering no ALPN are accepted too;
 * a client offering only other protocols is refused by the handshake). No client certificates.
 *
 * The certificate is fixed per `Deno.listenTls` listener, so {@link reloadCertificates} closes the
 * listening socket and binds the same address again with the new pair. Accepted connections are
 * unaffected; a client connecting in that instant (well under a millisecond) is refused and
 * retries, and connections still in the old socket's backlog are reset.
 */
export class TlsListener implements ConnListener {
  readonly host: string;
  readonly port: number;
  readonly #files: TlsFiles;
  readonly #logger?: Logger;
  #material: TlsMaterial;
  #listener: Deno.TlsListener;
  /** The accept op in progress: the old socket is released only once it has settled. */
  #accepting?: Promise<unknown>;
  /** Set while the listening socket is being replaced. */
  #swapping?: Promise<void>;
  #closed = false;

  private constructor(options: TlsListenerOptions, material: TlsMaterial) {
    this.#files = options.files;
    this.#logger = options.logger;
    this.#material = material;
    this.#listener = TlsListener.#listen(options.host, options.port, material);
    const addr = this.#listener.addr as Deno.NetAddr;
    this.host = addr.hostname;
    this.port = addr.port;
  }

  /** Reads the files and starts listening. */
  static async open(options: TlsListenerOptions): Promise<TlsListener> {
    const material = await readTlsMaterial(options.files);
    warnIfNotValidNow(material, options.files, options.logger);
    return new TlsListener(options, material);
  }

  static #listen(host: string, port: number, material: TlsMaterial): Deno.TlsListener {
    return Deno.listenTls({
      hostname: host,
      port,
      transport: "tcp",
      cert: material.cert,
      key: material.key,
      alpnProtocols: [MQTT_ALPN],
    });
  }

  async accept(): Promise<ByteConn | null> {
    while (!this.#closed) {
      if (this.#swapping) {
        await this.#swapping;
        continue;
      }
      const listener = this.#listener;
      const accepting = listener.accept();
      this.#accepting = accepting;
      try {
        // The handshake runs on the first read or write, inside the connection's own loop.
        return new DenoByteConn(await accepting);
      } catch (err) {
        if (this.#closed) return null;
        if (listener !== this.#listener || this.#swapping) continue; // replaced by a reload
        if (err instanceof Deno.errors.BadResource) return null;
        // Transient accept failures (EMFILE, ECONNABORTED): back off briefly and go on.
        await new Promise((r) => setTimeout(r, 50));
      } finally {
        if (this.#accepting === accepting) this.#accepting = undefined;
      }
    }
    return null;
  }

  async reloadCertificates(): Promise<boolean> {
    const material = await readTlsMaterial(this.#files);
    if (sameMaterial(material, this.#material) || this.#closed) return false;
    warnIfNotValidNow(material, this.#files, this.#logger);
    while (this.#swapping) await this.#swapping;
    const done = Promise.withResolvers<void>();
    this.#swapping = done.promise;
    try {
      const old = this.#listener;
      old.close();
      // A pending accept keeps the socket bound until its op has been cancelled.
      await this.#accepting?.catch(() => {});
      this.#listener = await rebindWhenFree(() =>
        TlsListener.#listen(this.host, this.port, material)
      );
      this.#material = material;
    } catch (err) {
      // The address could not be bound again: this listener is gone.
      this.#closed = true;
      throw new Error(
        `Cannot bind ${this.host}:${this.port} again after a certificate reload: ` +
          (err as Error).message,
        { cause: err },
      );
    } finally {
      this.#swapping = undefined;
      done.resolve();
    }
    return true;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch { /* already closed */ }
  }
}

/** Bytes received and not yet read above which a `node:tls` socket is paused. */
const NODE_READ_HIGH_WATER = 256 * 1024;

/** A {@link ByteConn} over a `node:tls` socket. */
class NodeTlsByteConn implements ByteConn {
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly peerIdentity?: PeerIdentity;
  readonly #socket: tls.TLSSocket;
  readonly #queue = new ChunkQueue();
  #paused = false;

  constructor(socket: tls.TLSSocket) {
    this.#socket = socket;
    this.remoteAddress = socket.remoteAddress ?? "";
    this.remotePort = socket.remotePort ?? 0;
    this.peerIdentity = identityOf(socket.getPeerCertificate());
    // node:tls under Deno does set TCP_NODELAY (deno-notes §3).
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => {
      this.#queue.push(chunk);
      if (this.#queue.buffered >= NODE_READ_HIGH_WATER && !this.#paused) {
        this.#paused = true;
        socket.pause();
      }
    });
    socket.on("end", () => this.#queue.end());
    socket.on("close", () => this.#queue.end());
    socket.on("error", (err: Error) => this.#queue.fail(err));
  }

  async read(buf: Uint8Array): Promise<number | null> {
    const n = await this.#queue.read(buf);
    if (n === null) return null;
    if (this.#paused && this.#queue.buffered < NODE_READ_HIGH_WATER / 2) {
      this.#paused = false;
      this.#socket.resume();
    }
    return n;
  }

  write(buf: Uint8Array): Promise<number> {
    return new Promise((resolve, reject) => {
      if (this.#socket.destroyed) {
        reject(new Deno.errors.BrokenPipe("TLS socket closed"));
        return;
      }
      // Resolves once node has taken the bytes, so the Outbox keeps counting them until then.
      this.#socket.write(buf, (err) => err ? reject(err) : resolve(buf.length));
    });
  }

  closeWrite(): Promise<void> {
    const socket = this.#socket;
    if (socket.destroyed || socket.writableEnded) return Promise.resolve();
    return new Promise((resolve) => {
      socket.once("close", () => resolve());
      socket.end(() => resolve());
    });
  }

  close(): void {
    this.#socket.destroy();
  }
}

/** The parts of a verified client certificate an auth hook may map to a user name. */
function identityOf(cert: tls.PeerCertificate | undefined): PeerIdentity | undefined {
  if (!cert || Object.keys(cert).length === 0) return undefined;
  const cn = cert.subject?.CN as string | string[] | undefined;
  const identity: PeerIdentity = {};
  const commonName = Array.isArray(cn) ? cn[0] : cn;
  if (commonName !== undefined) identity.commonName = commonName;
  if (cert.subjectaltname) identity.subjectAltNames = parseSubjectAltNames(cert.subjectaltname);
  if (cert.fingerprint256) identity.fingerprint256 = cert.fingerprint256;
  return identity;
}

/**
 * Splits node's `subjectaltname` string (`DNS:a, IP Address:1.2.3.4, email:x@y`) into
 * `type:value` entries, with `IP Address` written `IP`. Values node had to quote (they contain
 * `,` or `"`) are unquoted.
 */
export function parseSubjectAltNames(text: string): string[] {
  const names: string[] = [];
  for (const match of text.matchAll(/([^:,]+):("(?:[^"\\]|\\.)*"|[^,]*)(?:,\s*|$)/g)) {
    let type = match[1].trim();
    let value = match[2];
    if (type === "IP Address") type = "IP";
    if (value.startsWith('"')) {
      try {
        value = JSON.parse(value);
      } catch { /* keep as written */ }
    }
    names.push(`${type}:${value}`);
  }
  return names;
}

/** Options of {@link MutualTlsListener}: a CA file is required. */
export interface MutualTlsListenerOptions extends TlsListenerOptions {
  files: TlsFiles & { caFile: string };
  /** Handshakes that take longer are dropped (node's default is 120 s). */
  handshakeTimeoutMs?: number;
}

/**
 * A TLS listener on `node:tls` that requires a client certificate chaining to the configured CA
 * (`requestCert` + `rejectUnauthorized`); expired, foreign and missing certificates fail the
 * handshake. Each accepted connection carries the certificate's {@link PeerIdentity}.
 *
 * Reloads swap the server's secure context in place (`setSecureContext`); nothing is rebound.
 * The listening socket belongs to node, which the test sanitizers do not track (deno-notes §8),
 * so {@link release} waits for it to close.
 */
export class MutualTlsListener implements ConnListener {
  readonly host: string;
  readonly port: number;
  readonly #server: tls.Server;
  readonly #files: TlsFiles & { caFile: string };
  readonly #logger?: Logger;
  #material: TlsMaterial;
  readonly #ready: NodeTlsByteConn[] = [];
  /** Raw sockets not yet closed, including those still in the handshake. */
  readonly #sockets = new Set<{ destroy(): void }>();
  #waiter?: (conn: ByteConn | null) => void;
  #closed = false;
  readonly #serverClosed: Promise<void>;

  private constructor(
    options: MutualTlsListenerOptions,
    material: TlsMaterial,
    server: tls.Server,
    serverClosed: Promise<void>,
  ) {
    this.#files = options.files;
    this.#logger = options.logger;
    this.#material = material;
    this.#server = server;
    this.#serverClosed = serverClosed;
    const addr = server.address() as { address: string; port: number };
    this.host = addr.address;
    this.port = addr.port;
    server.on("connection", (socket) => {
      this.#sockets.add(socket);
      socket.once("close", () => this.#sockets.delete(socket));
    });
    server.on("secureConnection", (socket: tls.TLSSocket) => {
      if (this.#closed) {
        socket.destroy();
        return;
      }
      const conn = new NodeTlsByteConn(socket);
      const waiter = this.#waiter;
      this.#waiter = undefined;
      if (waiter) waiter(conn);
      else this.#ready.push(conn);
    });
    server.on("tlsClientError", (err: Error & { code?: string }, socket: tls.TLSSocket) => {
      this.#logger?.info("TLS handshake refused", {
        address: socket?.remoteAddress,
        port: socket?.remotePort,
        // rustls names a missing certificate; an untrusted one only shows as a reset (deno-notes §2).
        reason: err.code === "ECONNRESET"
          ? "client certificate not accepted (untrusted, expired or handshake aborted)"
          : err.message,
      });
      socket?.destroy();
    });
  }

  /** Reads the files and starts listening. */
  static async open(options: MutualTlsListenerOptions): Promise<MutualTlsListener> {
    const material = await readTlsMaterial(options.files);
    warnIfNotValidNow(material, options.files, options.logger);
    const server = tls.createServer({
      cert: material.cert,
      key: material.key,
      ca: material.ca,
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: [MQTT_ALPN],
      handshakeTimeout: options.handshakeTimeoutMs ?? 10_000,
    });
    const serverClosed = new Promise<void>((resolve) => server.once("close", () => resolve()));
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => {
        server.off("listening", onListening);
        reject(err);
      };
      const onListening = () => {
        server.off("error", onError);
        resolve();
      };
      server.once("error", onError);
      server.once("listening", onListening);
      server.listen(options.port, options.host);
    });
    // Errors after listening (none expected) must not become uncaught exceptions.
    server.on("error", (err) => options.logger?.error("TLS server error", { error: err }));
    return new MutualTlsListener(options, material, server, serverClosed);
  }

  accept(): Promise<ByteConn | null> {
    const ready = this.#ready.shift();
    if (ready) return Promise.resolve(ready);
    if (this.#closed) return Promise.resolve(null);
    return new Promise((resolve) => this.#waiter = resolve);
  }

  reloadCertificates(): Promise<boolean> {
    return readTlsMaterial(this.#files).then((material) => {
      if (sameMaterial(material, this.#material) || this.#closed) return false;
      warnIfNotValidNow(material, this.#files, this.#logger);
      this.#server.setSecureContext({ cert: material.cert, key: material.key, ca: material.ca });
      this.#material = material;
      return true;
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const conn of this.#ready.splice(0)) conn.close();
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.(null);
  }

  async release(): Promise<void> {
    this.close();
    // Sockets the broker never saw (mid-handshake) would hold the server open.
    for (const socket of [...this.#sockets]) socket.destroy();
    await this.#serverClosed;
  }
}

/**
 * Binds again to an address that was just released. The old socket may take a moment to let go,
 * so AddrInUse is retried every 10 ms, 50 times, before it is thrown.
 */
export async function rebindWhenFree<T>(bind: () => T): Promise<T> {
  for (let attempt = 0;; attempt++) {
    try {
      return bind();
    } catch (err) {
      if (!(err instanceof Deno.errors.AddrInUse) || attempt >= 50) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}
