/**
 * `mqtt-broker check [--config FILE]`: validates the config file, then the password file and the
 * ACL file it names, without starting the broker. Problems are reported as `file:line:column:
 * reason`; warnings (weak hashes, ACL users missing from the password file) do not fail the check.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  type AclRules,
  isWeakerThan,
  loadPasswordFile,
  PasswordFileError,
  type PasswordTable,
} from "../auth/mod.ts";
import { type BrokerOptions, resolveOptions } from "../broker/mod.ts";
import { ConfigError, loadAclFile, loadConfigFile } from "../config/mod.ts";
import type { SubcommandIo } from "./passwd.ts";

/** Usage of the `check` subcommand. */
export const CHECK_HELP = `Usage: mqtt-broker check [--config FILE]

Validates the config file and the password and ACL files it names, without starting the broker.
Prints a summary and exits 0 when they are valid; prints file:line:column and the reason of the
first problem and exits 2 when not. Without --config the built-in defaults are checked.`;

/**
 * Runs `check` with the arguments after the subcommand name.
 *
 * @returns 0 when every file is valid, 2 otherwise.
 */
export async function runCheck(args: string[], io: SubcommandIo): Promise<number> {
  let configFile: string | undefined;
  try {
    const { values, positionals } = parseArgs({
      args,
      options: { config: { type: "string" }, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
    if (values.help) {
      io.stdout(CHECK_HELP + "\n");
      return 0;
    }
    if (positionals.length > 0) {
      throw new TypeError(`Unexpected argument ${JSON.stringify(positionals[0])}`);
    }
    configFile = values.config;
  } catch (error) {
    io.stderr(
      `mqtt-broker check: ${(error as Error).message}\n` +
        `Try 'mqtt-broker check --help' for more information.\n`,
    );
    return 2;
  }
  try {
    const options: BrokerOptions = configFile === undefined
      ? resolveOptions()
      : await loadConfigFile(configFile);
    io.stdout(
      `${configFile ?? "built-in defaults"}: ok (${
        plural(options.listeners.length, "listener")
      })\n`,
    );
    let passwords: PasswordTable | undefined;
    if (options.passwordFile !== undefined) {
      passwords = await loadPasswordFile(options.passwordFile);
      io.stdout(`${options.passwordFile}: ok (${plural(passwords.size, "user")})\n`);
      const weak = [...passwords.values()].filter((e) =>
        isWeakerThan(e.hash, {
          algorithm: options.passwordAlgorithm,
          iterations: options.passwordIterations,
        })
      );
      for (const e of weak) {
        io.stderr(
          `warning: ${options.passwordFile}:${e.line}: the hash of ${JSON.stringify(e.username)} ` +
            `is weaker than password_iterations; set it again with passwd\n`,
        );
      }
    }
    if (options.aclFile !== undefined) {
      const acl = await loadAclFile(options.aclFile);
      io.stdout(
        `${options.aclFile}: ok (${plural(acl.roles.size, "role")}, ${
          plural(acl.users.size, "user")
        }, ${plural(acl.certificates.size, "certificate identity", "certificate identities")})\n`,
      );
      warnAcl(acl, options, passwords, io);
    }
    return 0;
  } catch (error) {
    if (error instanceof ConfigError || error instanceof PasswordFileError) {
      io.stderr(`mqtt-broker check: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
}

function warnAcl(
  acl: AclRules,
  options: BrokerOptions,
  passwords: PasswordTable | undefined,
  io: SubcommandIo,
): void {
  if (passwords === undefined) {
    io.stderr(
      `warning: ${options.aclFile}: no password_file is set, so the ACL's users are unverified ` +
        `user names\n`,
    );
    return;
  }
  for (const user of acl.users.keys()) {
    if (!passwords.has(user) && !options.useCertificateCnAsUsername) {
      io.stderr(
        `warning: ${options.aclFile}: user ${
          JSON.stringify(user)
        } is not in ${options.passwordFile}\n`,
      );
    }
  }
}

function plural(n: number, one: string, many = one + "s"): string {
  return `${n} ${n === 1 ? one : many}`;
}
