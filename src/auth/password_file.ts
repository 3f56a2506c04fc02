/**
 * The password file: one `username:hash` per line, like `mosquitto_passwd`
 * writes, with hashes from {@link hashPassword}. Blank lines and lines starting
 * with `#` are ignored. Plaintext passwords are refused.
 *
 * @module
 */
import { parsePasswordHash, type PasswordHash } from "./hash.ts";
import { explainReadError } from "../util/read_error.ts";

/** One user of the password file. */
export interface PasswordEntry {
  username: string;
  hash: PasswordHash;
  /** 1-based line it was read from. */
  line: number;
}

/** Users by name. */
export type PasswordTable = ReadonlyMap<string, PasswordEntry>;

/**
 * A password file that cannot be read or parsed. The message starts with
 * `file:line:column: ` (or `file: `), like `ConfigError`.
 */
export class PasswordFileError extends SyntaxError {
  readonly file: string;
  readonly line: number | undefined;
  readonly column: number | undefined;
  /** The message without the location. */
  readonly reason: string;

  constructor(
    at: { file: string; line?: number; column?: number },
    reason: string,
    options?: ErrorOptions,
  ) {
    const where = at.line === undefined
      ? at.file
      : `${at.file}:${at.line}${at.column === undefined ? "" : `:${at.column}`}`;
    super(`${where}: ${reason}`, options);
    this.name = "PasswordFileError";
    this.file = at.file;
    this.line = at.line;
    this.column = at.column;
    this.reason = reason;
  }
}

/**
 * Reads and parses a password file.
 *
 * @throws {PasswordFileError} When it cannot be read or has a bad line.
 */
export async function loadPasswordFile(path: string): Promise<PasswordTable> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new PasswordFileError(
      { file: path },
      `Cannot read password file: ${explainReadError(error)}`,
      {
        cause: error,
      },
    );
  }
  return parsePasswordFile(text, path);
}

/**
 * Parses password file text.
 *
 * @param file Name used in error messages.
 * @throws {PasswordFileError} At the first bad line: no `:`, an empty or duplicate user name, or
 *   a value that is not a valid hash (plaintext passwords are refused).
 */
export function parsePasswordFile(text: string, file: string): PasswordTable {
  const table = new Map<string, PasswordEntry>();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = i + 1;
    const raw = lines[i].replace(/\r$/, "");
    if (raw.trim() === "" || raw.trimStart().startsWith("#")) continue;
    const colon = raw.indexOf(":");
    if (colon < 0) {
      throw new PasswordFileError(
        { file, line, column: 1 },
        "Expected username:hash, found no ':'",
      );
    }
    const username = raw.slice(0, colon);
    const value = raw.slice(colon + 1).trimEnd();
    const reason = usernameError(username);
    if (reason !== undefined) throw new PasswordFileError({ file, line, column: 1 }, reason);
    const earlier = table.get(username);
    if (earlier !== undefined) {
      throw new PasswordFileError(
        { file, line, column: 1 },
        `User ${JSON.stringify(username)} is listed twice (first on line ${earlier.line})`,
      );
    }
    const column = colon + 2;
    if (!value.startsWith("$")) {
      throw new PasswordFileError(
        { file, line, column },
        `The password of ${JSON.stringify(username)} is not a hash; plaintext passwords are ` +
          `not accepted (set it with: passwd ${file} ${username})`,
      );
    }
    let hash: PasswordHash;
    try {
      hash = parsePasswordHash(value);
    } catch (error) {
      throw new PasswordFileError(
        { file, line, column },
        `${(error as Error).message} (user ${JSON.stringify(username)})`,
      );
    }
    table.set(username, { username, hash, line });
  }
  return table;
}

/** Why a name cannot be a user of the password file, or undefined. */
export function usernameError(username: string): string | undefined {
  if (username.length === 0) return "The user name is empty";
  if (username.includes(":")) return "A user name cannot contain ':'";
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(username)) {
    return "A user name cannot contain control characters";
  }
  if (username.trim() !== username) return "A user name cannot start or end with spaces";
  if (username.startsWith("#")) return "A user name cannot start with '#'";
  return undefined;
}

/**
 * Returns the file text with one user set to `encoded`, or removed when
 * `encoded` is undefined. Other lines (comments, other users) are kept as they
 * are; a new user is appended.
 *
 * @returns The new text and whether the user was present before.
 */
export function updatePasswordText(
  text: string,
  username: string,
  encoded: string | undefined,
): { text: string; existed: boolean } {
  const lines = text === "" ? [] : text.replace(/\n$/, "").split("\n");
  const out: string[] = [];
  let existed = false;
  for (const raw of lines) {
    const colon = raw.indexOf(":");
    const isUser = !raw.trimStart().startsWith("#") && colon >= 0 &&
      raw.slice(0, colon) === username;
    if (!isUser) {
      out.push(raw);
      continue;
    }
    if (!existed && encoded !== undefined) out.push(`${username}:${encoded}`);
    existed = true;
  }
  if (!existed && encoded !== undefined) out.push(`${username}:${encoded}`);
  return { text: out.length === 0 ? "" : out.join("\n") + "\n", existed };
}
