/**
 * `mqtt-broker passwd FILE USER [PASSWORD]`: adds, changes or deletes a user of a password file,
 * like `mosquitto_passwd`. The password is prompted for twice without echo, or read from stdin
 * (`--password-stdin`) or the argument, for scripts. It is never printed.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  DEFAULT_PBKDF2_ITERATIONS,
  hashPassword,
  MAX_PBKDF2_ITERATIONS,
  parsePasswordFile,
  PASSWORD_ALGORITHMS,
  type PasswordAlgorithm,
  PasswordFileError,
  updatePasswordText,
  usernameError,
} from "../auth/mod.ts";
import { ConfigError, loadConfigFile, MIN_PASSWORD_ITERATIONS } from "../config/mod.ts";

/** Where a subcommand writes, and how it reads stdin (injectable for tests). */
export interface SubcommandIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** All of standard input as text; by default Deno.stdin. */
  readStdin?: () => Promise<string>;
}

/** Usage of the `passwd` subcommand. */
export const PASSWD_HELP = `Usage: mqtt-broker passwd FILE USER [PASSWORD] [options]

Adds USER to the password file FILE or changes their password, or deletes USER. FILE is
created (mode 0600) if it does not exist. Passwords are stored as salted PBKDF2-SHA512 or scrypt
hashes, never in plaintext.

Options:
  -D, --delete          Delete USER
  --password-stdin      Read the password from the first line of standard input
  --config FILE         Take password_algorithm and password_iterations from this config file
  --algorithm ALG       pbkdf2-sha512 (default) or scrypt
  --iterations N        PBKDF2 iterations, ${MIN_PASSWORD_ITERATIONS}-${MAX_PBKDF2_ITERATIONS} (default ${DEFAULT_PBKDF2_ITERATIONS})
  -h, --help            Print this help and exit

Without PASSWORD or --password-stdin the password is asked for twice on the terminal, without
echo. A PASSWORD argument can be seen by other local users in the process list; scripts should
prefer --password-stdin. Send SIGHUP to a running broker to make it read the file again.
Exit status: 0 on success, 1 if the file cannot be written, 2 for bad arguments or a bad file.`;

class PasswdUsageError extends Error {}

/**
 * Runs `passwd` with the arguments after the subcommand name.
 *
 * @returns 0 on success, 1 if the file cannot be written, 2 for bad arguments or a bad file.
 */
export async function runPasswd(args: string[], io: SubcommandIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        delete: { type: "boolean", short: "D" },
        "password-stdin": { type: "boolean" },
        config: { type: "string" },
        algorithm: { type: "string" },
        iterations: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    return usage(io, (error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout(PASSWD_HELP + "\n");
    return 0;
  }
  try {
    const [file, username, argPassword, ...extra] = positionals;
    if (file === undefined || username === undefined) {
      throw new PasswdUsageError("passwd needs a FILE and a USER");
    }
    if (extra.length > 0) {
      throw new PasswdUsageError(`Unexpected argument ${JSON.stringify(extra[0])}`);
    }
    const badName = usernameError(username);
    if (badName !== undefined) throw new PasswdUsageError(badName);
    if (values.delete && (argPassword !== undefined || values["password-stdin"])) {
      throw new PasswdUsageError("--delete takes no password");
    }
    if (argPassword !== undefined && values["password-stdin"]) {
      throw new PasswdUsageError(
        "Give the password as an argument or with --password-stdin, not both",
      );
    }

    const existing = await readExisting(file);
    parsePasswordFile(existing, file); // refuse to rewrite a file the broker would refuse to load

    let encoded: string | undefined;
    if (!values.delete) {
      const hashOptions = await hashSettings(values);
      const password = argPassword ??
        (values["password-stdin"]
          ? firstLine(await (io.readStdin ?? readAllStdin)())
          : await promptTwice(io));
      if (password === "") throw new PasswdUsageError("The password is empty");
      encoded = await hashPassword(password, hashOptions);
    }
    const { text, existed } = updatePasswordText(existing, username, encoded);
    if (values.delete && !existed) {
      io.stderr(`mqtt-broker passwd: user ${JSON.stringify(username)} is not in ${file}\n`);
      return 2;
    }
    try {
      await writeAtomically(file, text);
    } catch (error) {
      io.stderr(`mqtt-broker passwd: cannot write ${file}: ${(error as Error).message}\n`);
      return 1;
    }
    const what = values.delete ? "deleted" : existed ? "password changed" : "added";
    io.stdout(`${file}: user ${JSON.stringify(username)} ${what}\n`);
    return 0;
  } catch (error) {
    if (error instanceof PasswdUsageError) return usage(io, error.message);
    if (error instanceof PasswordFileError || error instanceof ConfigError) {
      io.stderr(`mqtt-broker passwd: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
}

function usage(io: SubcommandIo, message: string): number {
  io.stderr(
    `mqtt-broker passwd: ${message}\nTry 'mqtt-broker passwd --help' for more information.\n`,
  );
  return 2;
}

async function hashSettings(
  values: { config?: string; algorithm?: string; iterations?: string },
): Promise<{ algorithm: PasswordAlgorithm; iterations: number }> {
  let algorithm: PasswordAlgorithm = "pbkdf2-sha512";
  let iterations = DEFAULT_PBKDF2_ITERATIONS;
  if (values.config !== undefined) {
    const options = await loadConfigFile(values.config);
    algorithm = options.passwordAlgorithm;
    iterations = options.passwordIterations;
  }
  if (values.algorithm !== undefined) {
    if (!(PASSWORD_ALGORITHMS as readonly string[]).includes(values.algorithm)) {
      throw new PasswdUsageError(
        `--algorithm must be one of ${PASSWORD_ALGORITHMS.join(", ")}, got ${
          JSON.stringify(values.algorithm)
        }`,
      );
    }
    algorithm = values.algorithm as PasswordAlgorithm;
  }
  if (values.iterations !== undefined) {
    const n = /^\d{1,9}$/.test(values.iterations) ? Number(values.iterations) : NaN;
    if (!(n >= MIN_PASSWORD_ITERATIONS && n <= MAX_PBKDF2_ITERATIONS)) {
      throw new PasswdUsageError(
        `--iterations must be an integer from ${MIN_PASSWORD_ITERATIONS} to ` +
          `${MAX_PBKDF2_ITERATIONS}, got ${JSON.stringify(values.iterations)}`,
      );
    }
    iterations = n;
  }
  return { algorithm, iterations };
}

async function readExisting(file: string): Promise<string> {
  try {
    return await Deno.readTextFile(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "";
    throw new PasswordFileError({ file }, `Cannot read password file: ${(error as Error).message}`);
  }
}

/** Writes beside the file, then renames over it, so a reader never sees half a file. */
async function writeAtomically(file: string, text: string): Promise<void> {
  let mode = 0o600;
  try {
    mode = (await Deno.stat(file)).mode! & 0o777;
  } catch {
    // A new file: owner only.
  }
  const tmp = `${file}.tmp-${Deno.pid}`;
  try {
    await Deno.writeTextFile(tmp, text, { mode });
    await Deno.chmod(tmp, mode);
    await Deno.rename(tmp, file);
  } catch (error) {
    await Deno.remove(tmp).catch(() => {});
    throw error;
  }
}

function firstLine(text: string): string {
  return text.split("\n", 1)[0].replace(/\r$/, "");
}

async function readAllStdin(): Promise<string> {
  return await new Response(Deno.stdin.readable).text();
}

async function promptTwice(io: SubcommandIo): Promise<string> {
  if (!Deno.stdin.isTerminal()) {
    throw new PasswdUsageError(
      "Standard input is not a terminal: give the password with --password-stdin",
    );
  }
  const first = await promptHidden("Password: ", io);
  const second = await promptHidden("Reenter password: ", io);
  if (first !== second) throw new PasswdUsageError("The passwords do not match");
  return first;
}

/** Reads one line from the terminal in raw mode, so nothing is echoed. */
async function promptHidden(prompt: string, io: SubcommandIo): Promise<string> {
  io.stderr(prompt);
  const decoder = new TextDecoder();
  const bytes: number[] = [];
  const buf = new Uint8Array(64);
  Deno.stdin.setRaw(true);
  try {
    for (;;) {
      const n = await Deno.stdin.read(buf);
      if (n === null) break;
      for (const b of buf.subarray(0, n)) {
        if (b === 0x0d || b === 0x0a) return decoder.decode(new Uint8Array(bytes));
        if (b === 0x03) throw new PasswdUsageError("Interrupted");
        if (b === 0x04 && bytes.length === 0) throw new PasswdUsageError("No password given");
        if (b === 0x7f || b === 0x08) {
          // Backspace removes one character: its UTF-8 continuation bytes, then its lead byte.
          while (bytes.length > 0 && (bytes[bytes.length - 1] & 0xc0) === 0x80) bytes.pop();
          bytes.pop();
        } else bytes.push(b);
      }
    }
    return decoder.decode(new Uint8Array(bytes));
  } finally {
    Deno.stdin.setRaw(false);
    io.stderr("\n");
  }
}
