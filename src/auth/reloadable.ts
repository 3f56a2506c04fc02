/**
 * File-backed {@link AuthHooks}: the password file and the ACL, loaded
 * together and swapped atomically. A reload that fails leaves the old state
 * in force; one that succeeds applies to every later decision.
 *
 * @module
 */
import { type AclIdentity, type AclRules, BoundAcl } from "./acl.ts";
import { verifyPassword } from "./hash.ts";
import type { AuthHooks, ClientInfo, ConnectRequest } from "./mod.ts";
import { loadPasswordFile, type PasswordTable } from "./password_file.ts";

/** Anonymous clients: always, never, or only from a loopback address (the default). */
export type AnonymousPolicy = boolean | "loopback";

/** CONNACK reason codes the hooks answer with. */
const BAD_USERNAME_OR_PASSWORD = 0x86;
const NOT_AUTHORIZED = 0x87;

/** Settings of a {@link FileAuth}. */
export interface FileAuthOptions {
  /** `user:hash` lines; without it, user names are taken as given (not checked). */
  passwordFile?: string;
  /** Role-based ACL; without it, every action is allowed. With it, deny by default. */
  aclFile?: string;
  /** Who may connect without a user name. */
  allowAnonymous: AnonymousPolicy;
  /** A client certificate's Common Name becomes the user name, and the certificate authenticates. */
  useCertificateCnAsUsername?: boolean;
  /**
   * Reads the ACL file. YAML parsing lives in `config/` (`loadAclFile`), which the library does
   * not import; the CLI passes it, and embedders that set `aclFile` must too.
   */
  loadAcl?: (path: string) => Promise<AclRules>;
}

/** What one load read: replaced as a whole by {@link FileAuth.reload}. */
export interface AuthState {
  passwords?: PasswordTable;
  acl?: AclRules;
}

/**
 * Reads the password file and the ACL file named in `options`.
 *
 * @throws {Error} A `PasswordFileError` or the ACL loader's error (`ConfigError`), whose message
 *   starts with `file:line:column`.
 */
export async function loadAuthState(options: FileAuthOptions): Promise<AuthState> {
  const state: AuthState = {};
  if (options.passwordFile !== undefined) {
    state.passwords = await loadPasswordFile(options.passwordFile);
  }
  if (options.aclFile !== undefined) {
    if (options.loadAcl === undefined) {
      throw new TypeError(
        `Cannot read ACL file ${options.aclFile}: no ACL loader was given (pass loadAcl, e.g. ` +
          `loadAclFile from src/config/mod.ts)`,
      );
    }
    state.acl = await options.loadAcl(options.aclFile);
  }
  return state;
}

/** Whether an address is the local machine: 127.0.0.0/8, ::1 or IPv4-mapped 127.x. */
export function isLoopbackAddress(address: string): boolean {
  const a = address.toLowerCase().replace(/^\[|\]$/g, "");
  if (/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a)) return true;
  if (/^::ffff:127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a)) return true;
  return a === "::1" || /^(0{1,4}:){7}0{0,3}1$/.test(a);
}

/** Password file + ACL behind the {@link AuthHooks} seam, reloadable as one unit. */
export class FileAuth implements AuthHooks {
  readonly options: FileAuthOptions;
  #state: AuthState = {};
  /** Rules bound per client (roles resolved, `%c`/`%u` substituted); reset by every swap. */
  #bound = new WeakMap<ClientInfo, BoundAcl>();

  constructor(options: FileAuthOptions, state: AuthState = {}) {
    this.options = options;
    this.#state = state;
  }

  /** The state in force. */
  get state(): AuthState {
    return this.#state;
  }

  /**
   * Reads both files and swaps them in together. On error the old state stays
   * in force and the error propagates.
   */
  async reload(): Promise<AuthState> {
    const next = await loadAuthState(this.options);
    this.swap(next);
    return next;
  }

  /** Puts a new state in force for every later decision. */
  swap(state: AuthState): void {
    this.#state = state;
    this.#bound = new WeakMap();
  }

  /** The client as the ACL sees it: effective user name and certificate identities. */
  identityOf(client: ClientInfo): AclIdentity {
    const cert = client.certificate;
    const certificateIds: string[] = [];
    for (const id of [cert?.commonName, ...(cert?.subjectAltNames ?? [])]) {
      if (id !== undefined && id !== "" && !certificateIds.includes(id)) certificateIds.push(id);
    }
    const cn = cert?.commonName;
    const username = this.options.useCertificateCnAsUsername && cn ? cn : client.username;
    return { clientId: client.clientId, username, certificateIds };
  }

  /**
   * 0x00 to admit; 0x86 for an unknown user or a wrong password; 0x87 for an
   * anonymous client where anonymous access is not allowed. Decides at once, except for a
   * password, whose hash is checked asynchronously.
   */
  authenticate(request: ConnectRequest): number | Promise<number> {
    const state = this.#state;
    const cert = request.certificate;
    // A certificate the TLS listener verified is a credential of its own.
    if (this.options.useCertificateCnAsUsername && cert?.commonName) return 0;
    if (request.username === undefined) {
      if (cert?.commonName || (cert?.subjectAltNames?.length ?? 0) > 0) return 0;
      const policy = this.options.allowAnonymous;
      const allowed = policy === true ||
        (policy === "loopback" && isLoopbackAddress(request.remoteAddress));
      return allowed ? 0 : NOT_AUTHORIZED;
    }
    const passwords = state.passwords;
    if (passwords === undefined) return 0;
    const entry = passwords.get(request.username);
    // An unknown user costs one hash too, so timing does not tell which users exist.
    const stored = entry?.hash ?? passwords.values().next().value?.hash;
    if (stored === undefined) return BAD_USERNAME_OR_PASSWORD;
    return verifyPassword(request.password ?? new Uint8Array(0), stored).then((ok) =>
      ok && entry !== undefined && request.password !== undefined ? 0 : BAD_USERNAME_OR_PASSWORD
    );
  }

  /**
   * Whether an ACL is loaded, so that topic checks can refuse anything. Without one every check
   * passes, and the broker skips building the client's identity just to ask.
   */
  get restrictsTopics(): boolean {
    return this.#state.acl !== undefined;
  }

  authorizePublish(client: ClientInfo, topic: string): boolean {
    if (this.#state.acl === undefined) return true;
    return this.#boundFor(client).checkTopic("publish", topic).allowed;
  }

  authorizeSubscribe(client: ClientInfo, filter: string): boolean {
    if (this.#state.acl === undefined) return true;
    return this.#boundFor(client).checkSubscribe(filter).allowed;
  }

  authorizeDelivery(client: ClientInfo, topic: string): boolean {
    if (this.#state.acl === undefined) return true;
    return this.#boundFor(client).checkTopic("receive", topic).allowed;
  }

  /** The rules that apply to a client, for logs and tests (undefined without an ACL). */
  rulesFor(client: ClientInfo): BoundAcl | undefined {
    return this.#state.acl === undefined ? undefined : this.#boundFor(client);
  }

  #boundFor(client: ClientInfo): BoundAcl {
    let bound = this.#bound.get(client);
    if (bound === undefined) {
      bound = new BoundAcl(this.#state.acl!, this.identityOf(client));
      this.#bound.set(client, bound);
    }
    return bound;
  }
}
