/**
 * Shared setup of the security tests: a temporary directory with a password file (cheap hashes:
 * 1000 PBKDF2 iterations keep the tests fast) and an ACL file, and a broker using them.
 */
import { hashPassword } from "../../src/auth/mod.ts";
import type { BrokerOptions } from "../../src/broker/mod.ts";
import { loadAclFile } from "../../src/config/mod.ts";
import { startBroker, type StartOptions, type TestBroker } from "../helpers/start_broker.ts";

/** Iterations for test hashes: valid, but about 1 ms instead of 120. */
export const TEST_ITERATIONS = 1_000;

/** The users every security test knows, with their passwords. */
export const USERS: Record<string, string> = {
  alice: "alice-pw",
  bob: "bob-pw",
  mallory: "mallory-pw",
};

/** An ACL exercising every action, wildcards and %c/%u substitution. */
export const ACL_YAML = `
roles:
  operator:
    - allow: all
      topic: "#"
  reader:
    - deny: [subscribe, receive]
      topic: sensors/+/secret/#
    - allow: [subscribe, receive]
      topic: sensors/#
  writer:
    - allow: publish
      topic: sensors/%u/#
    - allow: publish
      topic: wills/%c
    - allow: [subscribe, receive]
      topic: inbox/%c/#
  guest:
    - allow: [subscribe, receive]
      topic: public/#
users:
  alice: operator
  bob: [reader, writer]
  mallory: writer
anonymous: guest
`;

/** A temporary directory with `passwd` and `acl.yaml`; removed on dispose. */
export class AuthFiles implements AsyncDisposable {
  readonly dir: string;
  readonly passwordFile: string;
  readonly aclFile: string;

  private constructor(dir: string) {
    this.dir = dir;
    this.passwordFile = `${dir}/passwd`;
    this.aclFile = `${dir}/acl.yaml`;
  }

  /** Writes the password file for `users` and the ACL text. */
  static async create(
    users: Record<string, string> = USERS,
    acl: string = ACL_YAML,
  ): Promise<AuthFiles> {
    const files = new AuthFiles(await Deno.makeTempDir({ prefix: "mqtt-security-" }));
    await files.writeUsers(users);
    await Deno.writeTextFile(files.aclFile, acl);
    return files;
  }

  async writeUsers(users: Record<string, string>): Promise<void> {
    const lines = [];
    for (const [user, password] of Object.entries(users)) {
      lines.push(`${user}:${await hashPassword(password, { iterations: TEST_ITERATIONS })}`);
    }
    await Deno.writeTextFile(this.passwordFile, lines.join("\n") + "\n");
  }

  async writeAcl(text: string): Promise<void> {
    await Deno.writeTextFile(this.aclFile, text);
  }

  /** Options naming both files. */
  options(): Partial<BrokerOptions> {
    return {
      passwordFile: this.passwordFile,
      aclFile: this.aclFile,
      passwordIterations: TEST_ITERATIONS,
    };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true });
  }
}

/** Starts a broker with the files' password file and ACL (and the YAML ACL loader). */
export function startSecureBroker(
  files: AuthFiles,
  overrides: Partial<BrokerOptions> = {},
  deps: StartOptions = {},
): Promise<TestBroker> {
  return startBroker({ ...files.options(), ...overrides }, { loadAcl: loadAclFile, ...deps });
}

/** MQTT.js credentials for a known user. */
export function creds(user: string): { username: string; password: string } {
  return { username: user, password: USERS[user] };
}
