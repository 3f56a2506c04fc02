/**
 * Salted, slow password hashes in a self-describing text form (PHC-like):
 *
 * - `$pbkdf2-sha512$i=210000$<salt>$<hash>`: PBKDF2-HMAC-SHA512 via WebCrypto.
 * - `$scrypt$ln=15,r=8,p=1$<salt>$<hash>`: scrypt via `node:crypto`, N = 2^ln.
 *
 * Salt and hash are standard base64 without padding. Verification reads the
 * parameters from the stored hash, so raising the cost only affects new hashes,
 * and compares in constant time.
 *
 * @module
 */
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";

/** Hash algorithms the password file accepts. */
export const PASSWORD_ALGORITHMS = ["pbkdf2-sha512", "scrypt"] as const;
/** One of {@link PASSWORD_ALGORITHMS}. */
export type PasswordAlgorithm = typeof PASSWORD_ALGORITHMS[number];

/** PBKDF2-SHA512 iterations for new hashes (OWASP 2023 recommendation). */
export const DEFAULT_PBKDF2_ITERATIONS = 210_000;
/** scrypt cost for new hashes: N = 2^15, r = 8, p = 1. */
export const DEFAULT_SCRYPT_LOG_N = 15;
/** Bounds accepted when reading a hash, so a crafted file cannot stall the broker. */
export const MAX_PBKDF2_ITERATIONS = 10_000_000;
const MAX_SCRYPT_LOG_N = 20;
const MAX_SCRYPT_R = 32;
const MAX_SCRYPT_P = 16;
const SALT_BYTES = 16;
const MIN_SALT_BYTES = 8;
const MIN_HASH_BYTES = 16;
const MAX_HASH_BYTES = 128;
const PBKDF2_HASH_BYTES = 64;
const SCRYPT_HASH_BYTES = 32;

/** A parsed password hash. */
export type PasswordHash =
  | {
    algorithm: "pbkdf2-sha512";
    iterations: number;
    salt: Uint8Array;
    hash: Uint8Array;
  }
  | {
    algorithm: "scrypt";
    /** log2 of the CPU/memory cost N. */
    logN: number;
    r: number;
    p: number;
    salt: Uint8Array;
    hash: Uint8Array;
  };

/** How {@link hashPassword} hashes. */
export interface HashOptions {
  /** Default `pbkdf2-sha512`. */
  algorithm?: PasswordAlgorithm;
  /** PBKDF2 iterations; default {@link DEFAULT_PBKDF2_ITERATIONS}. */
  iterations?: number;
  /** scrypt log2(N); default {@link DEFAULT_SCRYPT_LOG_N}. */
  scryptLogN?: number;
}

const encoder = new TextEncoder();

/**
 * Hashes a password with a fresh random salt.
 *
 * @returns The encoded hash, e.g. `$pbkdf2-sha512$i=210000$...$...`.
 * @throws {RangeError} When the cost parameters are out of range.
 */
export async function hashPassword(
  password: string | Uint8Array,
  options: HashOptions = {},
): Promise<string> {
  const secret = typeof password === "string" ? encoder.encode(password) : password;
  const salt = new Uint8Array(randomBytes(SALT_BYTES));
  const algorithm = options.algorithm ?? "pbkdf2-sha512";
  if (algorithm === "scrypt") {
    const logN = options.scryptLogN ?? DEFAULT_SCRYPT_LOG_N;
    if (!Number.isInteger(logN) || logN < 1 || logN > MAX_SCRYPT_LOG_N) {
      throw new RangeError(`scrypt cost ln must be an integer from 1 to ${MAX_SCRYPT_LOG_N}`);
    }
    const params = { algorithm, logN, r: 8, p: 1, salt, hash: new Uint8Array(0) } as const;
    const hash = await derive(secret, params, SCRYPT_HASH_BYTES);
    return formatPasswordHash({ ...params, hash });
  }
  if (algorithm !== "pbkdf2-sha512") {
    throw new RangeError(`Unknown password algorithm ${JSON.stringify(algorithm)}`);
  }
  const iterations = options.iterations ?? DEFAULT_PBKDF2_ITERATIONS;
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_PBKDF2_ITERATIONS) {
    throw new RangeError(`PBKDF2 iterations must be an integer from 1 to ${MAX_PBKDF2_ITERATIONS}`);
  }
  const params = { algorithm, iterations, salt, hash: new Uint8Array(0) } as const;
  const hash = await derive(secret, params, PBKDF2_HASH_BYTES);
  return formatPasswordHash({ ...params, hash });
}

/**
 * Whether `password` matches the stored hash. The derived key is compared in
 * constant time; the cost depends only on the stored parameters.
 *
 * @throws {SyntaxError} When `stored` is a string that is not a valid hash.
 */
export async function verifyPassword(
  password: string | Uint8Array,
  stored: string | PasswordHash,
): Promise<boolean> {
  const parsed = typeof stored === "string" ? parsePasswordHash(stored) : stored;
  const secret = typeof password === "string" ? encoder.encode(password) : password;
  const derived = await derive(secret, parsed, parsed.hash.length);
  return derived.length === parsed.hash.length && timingSafeEqual(derived, parsed.hash);
}

/** The encoded text form of a hash. */
export function formatPasswordHash(h: PasswordHash): string {
  const salt = toBase64(h.salt);
  const hash = toBase64(h.hash);
  if (h.algorithm === "scrypt") return `$scrypt$ln=${h.logN},r=${h.r},p=${h.p}$${salt}$${hash}`;
  return `$pbkdf2-sha512$i=${h.iterations}$${salt}$${hash}`;
}

/**
 * Parses an encoded hash and checks its parameters are within bounds.
 *
 * @throws {SyntaxError} Saying what is wrong, without echoing the hash.
 */
export function parsePasswordHash(encoded: string): PasswordHash {
  const parts = encoded.split("$");
  if (parts.length !== 5 || parts[0] !== "") {
    throw new SyntaxError(
      "Cannot parse password hash: expected $algorithm$parameters$salt$hash",
    );
  }
  const [, algorithm, paramText, saltText, hashText] = parts;
  const params = parseParams(paramText);
  const salt = fromBase64(saltText, "salt");
  const hash = fromBase64(hashText, "hash");
  if (salt.length < MIN_SALT_BYTES) {
    throw new SyntaxError(`Cannot parse password hash: salt shorter than ${MIN_SALT_BYTES} bytes`);
  }
  if (hash.length < MIN_HASH_BYTES || hash.length > MAX_HASH_BYTES) {
    throw new SyntaxError(
      `Cannot parse password hash: hash must be ${MIN_HASH_BYTES} to ${MAX_HASH_BYTES} bytes`,
    );
  }
  if (algorithm === "pbkdf2-sha512") {
    const iterations = intParam(params, "i", 1, MAX_PBKDF2_ITERATIONS);
    expectOnly(params, ["i"]);
    return { algorithm, iterations, salt, hash };
  }
  if (algorithm === "scrypt") {
    const logN = intParam(params, "ln", 1, MAX_SCRYPT_LOG_N);
    const r = intParam(params, "r", 1, MAX_SCRYPT_R);
    const p = intParam(params, "p", 1, MAX_SCRYPT_P);
    expectOnly(params, ["ln", "r", "p"]);
    return { algorithm, logN, r, p, salt, hash };
  }
  throw new SyntaxError(
    `Cannot parse password hash: unknown algorithm ${JSON.stringify(algorithm)} ` +
      `(known: ${PASSWORD_ALGORITHMS.join(", ")})`,
  );
}

/**
 * Whether a stored hash is cheaper to compute than what `options` would make
 * now (a different algorithm counts as weaker only when its own cost is lower
 * than that algorithm's default).
 */
export function isWeakerThan(h: PasswordHash, options: HashOptions = {}): boolean {
  if (h.algorithm === "pbkdf2-sha512") {
    const wanted = (options.algorithm ?? "pbkdf2-sha512") === "pbkdf2-sha512"
      ? options.iterations ?? DEFAULT_PBKDF2_ITERATIONS
      : DEFAULT_PBKDF2_ITERATIONS;
    return h.iterations < wanted;
  }
  const wanted = options.algorithm === "scrypt"
    ? options.scryptLogN ?? DEFAULT_SCRYPT_LOG_N
    : DEFAULT_SCRYPT_LOG_N;
  return h.logN < wanted;
}

async function derive(secret: Uint8Array, h: PasswordHash, length: number): Promise<Uint8Array> {
  if (h.algorithm === "scrypt") {
    const N = 2 ** h.logN;
    // scrypt needs 128·N·r bytes (plus 128·r·p); node's default maxmem (32 MiB) is too small at N=2^15.
    const maxmem = 128 * N * h.r + 128 * h.r * h.p + 1024 * 1024;
    const key = await new Promise<Uint8Array>((resolve, reject) => {
      scrypt(secret, h.salt, length, { N, r: h.r, p: h.p, maxmem }, (err, out) => {
        if (err) reject(err);
        else resolve(new Uint8Array(out));
      });
    });
    return key;
  }
  const key = await crypto.subtle.importKey("raw", secret as BufferSource, "PBKDF2", false, [
    "deriveBits",
  ]);
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-512", salt: h.salt as BufferSource, iterations: h.iterations },
    key,
    length * 8,
  );
  return new Uint8Array(bits);
}

function parseParams(text: string): Map<string, string> {
  const params = new Map<string, string>();
  for (const pair of text.split(",")) {
    const eq = pair.indexOf("=");
    if (eq <= 0) {
      throw new SyntaxError(`Cannot parse password hash: parameter ${JSON.stringify(pair)}`);
    }
    const name = pair.slice(0, eq);
    if (params.has(name)) {
      throw new SyntaxError(`Cannot parse password hash: parameter ${name} given twice`);
    }
    params.set(name, pair.slice(eq + 1));
  }
  return params;
}

function intParam(params: Map<string, string>, name: string, min: number, max: number): number {
  const raw = params.get(name);
  const value = raw !== undefined && /^\d{1,9}$/.test(raw) ? Number(raw) : NaN;
  if (!(value >= min && value <= max)) {
    throw new SyntaxError(
      `Cannot parse password hash: ${name} must be an integer from ${min} to ${max}`,
    );
  }
  return value;
}

function expectOnly(params: Map<string, string>, names: string[]): void {
  for (const name of params.keys()) {
    if (!names.includes(name)) {
      throw new SyntaxError(`Cannot parse password hash: unknown parameter ${name}`);
    }
  }
}

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/=+$/, "");
}

function fromBase64(text: string, what: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]+$/.test(text) || text.length % 4 === 1) {
    throw new SyntaxError(`Cannot parse password hash: ${what} is not base64`);
  }
  const binary = atob(text + "=".repeat((4 - text.length % 4) % 4));
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}
