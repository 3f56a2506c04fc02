/**
 * The `passwd` and `check` subcommands of main.ts, in process (runCli/runPasswd) and as a real
 * subprocess with the permissions of `deno task start`.
 */
import assert from "node:assert/strict";
import { parsePasswordFile, verifyPassword } from "../../src/auth/mod.ts";
import { runCli } from "../../src/cli/mod.ts";
import { runPasswd } from "../../src/cli/passwd.ts";
import { AuthFiles } from "./fixtures.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const PERMISSIONS = ["--allow-net", "--allow-read", "--allow-write", "--allow-env", "--allow-sys"];

/** Runs `deno run main.ts ...args` with `stdin` text, killed after 60 s. */
async function runMain(args: string[], stdin?: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MAIN, ...args],
    cwd: ROOT,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(60_000),
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

function capture(stdin = "") {
  const out = { stdout: "", stderr: "" };
  return {
    out,
    io: {
      stdout: (t: string) => out.stdout += t,
      stderr: (t: string) => out.stderr += t,
      readStdin: () => Promise.resolve(stdin),
    },
  };
}

Deno.test("main.ts passwd --password-stdin adds a user with a salted hash in a 0600 file and never prints the password", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/passwd`;
    const r = await runMain(
      ["passwd", file, "alice", "--password-stdin", "--iterations", "1000"],
      "s3cret-pw\nignored second line\n",
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${file}: user "alice" added\n`);
    assert.ok(!(r.stdout + r.stderr).includes("s3cret-pw"));
    const text = await Deno.readTextFile(file);
    assert.match(text, /^alice:\$pbkdf2-sha512\$i=1000\$[^$]+\$[^$]+\n$/);
    assert.ok(!text.includes("s3cret-pw"), "the password is stored in plaintext");
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
    assert.equal(
      await verifyPassword("s3cret-pw", parsePasswordFile(text, file).get("alice")!.hash),
      true,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main.ts passwd without a password and without a terminal exits 2 instead of prompting", async () => {
  const r = await runMain(["passwd", "/tmp/never-written", "alice"]);
  assert.equal(r.code, 2);
  assert.match(
    r.stderr,
    /Standard input is not a terminal: give the password with --password-stdin/,
  );
});

Deno.test("runPasswd changes and deletes users, keeps other lines, and refuses bad input", async () => {
  await using files = await AuthFiles.create();
  const file = files.passwordFile;
  await Deno.writeTextFile(file, "# managed by passwd\n" + await Deno.readTextFile(file));
  const before = parsePasswordFile(await Deno.readTextFile(file), file);

  let c = capture("bob-2\n");
  assert.equal(await runPasswd([file, "bob", "--password-stdin", "--iterations", "1000"], c.io), 0);
  assert.equal(c.out.stdout, `${file}: user "bob" password changed\n`);
  let table = parsePasswordFile(await Deno.readTextFile(file), file);
  assert.equal(await verifyPassword("bob-2", table.get("bob")!.hash), true);
  assert.deepEqual(table.get("alice")!.hash, before.get("alice")!.hash);

  c = capture();
  assert.equal(await runPasswd([file, "carol", "carol-pw", "--algorithm", "scrypt"], c.io), 0);
  table = parsePasswordFile(await Deno.readTextFile(file), file);
  assert.equal(table.get("carol")!.hash.algorithm, "scrypt");

  c = capture();
  assert.equal(await runPasswd([file, "--delete", "alice"], c.io), 0);
  const text = await Deno.readTextFile(file);
  assert.ok(text.startsWith("# managed by passwd\n"));
  assert.deepEqual([...parsePasswordFile(text, file).keys()], ["bob", "mallory", "carol"]);

  const refusals: [string[], string, RegExp][] = [
    [[file, "--delete", "nobody"], "", /user "nobody" is not in/],
    [[file, "a:b", "pw"], "", /A user name cannot contain ':'/],
    [[file, "dave", "--password-stdin"], "\n", /The password is empty/],
    [[file, "dave", "pw", "--iterations", "10"], "", /--iterations must be an integer from 1000/],
    [
      [file, "dave", "pw", "--algorithm", "md5"],
      "",
      /--algorithm must be one of pbkdf2-sha512, scrypt/,
    ],
    [[file], "", /passwd needs a FILE and a USER/],
    [[file, "dave", "pw", "--bogus"], "", /Unknown option '--bogus'/],
  ];
  for (const [args, stdin, reason] of refusals) {
    c = capture(stdin);
    assert.equal(await runPasswd(args, c.io), 2, args.join(" "));
    assert.match(c.out.stderr, reason);
  }
});

Deno.test("runPasswd refuses to rewrite a password file the broker could not load", async () => {
  const file = await Deno.makeTempFile();
  try {
    await Deno.writeTextFile(file, "alice:plaintext\n");
    const c = capture();
    assert.equal(await runPasswd([file, "bob", "pw", "--iterations", "1000"], c.io), 2);
    assert.match(c.out.stderr, /:1:7: The password of "alice" is not a hash/);
    assert.equal(await Deno.readTextFile(file), "alice:plaintext\n");
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("runPasswd --config takes password_iterations from the config file", async () => {
  await using files = await AuthFiles.create();
  const config = `${files.dir}/broker.yaml`;
  await Deno.writeTextFile(config, "password_iterations: 1234\n");
  const c = capture();
  assert.equal(await runPasswd([files.passwordFile, "zed", "pw", "--config", config], c.io), 0);
  const table = parsePasswordFile(await Deno.readTextFile(files.passwordFile), "p");
  const hash = table.get("zed")!.hash;
  assert.equal(hash.algorithm === "pbkdf2-sha512" && hash.iterations, 1234);
});

/** Runs `check --config` on a config naming the files, in process. */
async function check(files: AuthFiles, extra = "") {
  const config = `${files.dir}/broker.yaml`;
  await Deno.writeTextFile(
    config,
    `password_file: ${files.passwordFile}\nacl_file: ${files.aclFile}\npassword_iterations: 1000\n${extra}`,
  );
  const c = capture();
  const code = await runCli(["check", "--config", config], c.io);
  return { code, ...c.out, config };
}

Deno.test("main.ts check validates the config, password and ACL files and summarises them", async () => {
  await using files = await AuthFiles.create();
  const r = await check(files);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stdout,
    `${r.config}: ok (1 listener)\n${files.passwordFile}: ok (3 users)\n` +
      `${files.aclFile}: ok (4 roles, 3 users, 0 certificate identities)\n`,
  );
  assert.equal(r.stderr, "");
});

Deno.test("main.ts check exits 2 with file:line:column for a bad ACL, password file or config", async (t) => {
  await using files = await AuthFiles.create();
  await t.step("ACL", async () => {
    await files.writeAcl("roles:\n  r:\n    - allow: publish\n      topic: a/#/b\n");
    const r = await check(files);
    assert.equal(r.code, 2);
    assert.equal(
      r.stderr,
      `mqtt-broker check: ${files.aclFile}:4:14: roles.r[0].topic is invalid: '#' is not the last level\n`,
    );
  });
  await t.step("password file", async () => {
    await Deno.writeTextFile(files.passwordFile, "alice:$pbkdf2-sha512$i=1000$AAAA$BBBB\n");
    const r = await check(files);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      new RegExp(`^mqtt-broker check: ${files.passwordFile}:1:7: Cannot parse password hash`),
    );
  });
  await t.step("config (subprocess)", async () => {
    const config = `${files.dir}/bad.yaml`;
    await Deno.writeTextFile(config, "allow_anonymous: maybe\n");
    const r = await runMain(["check", "--config", config]);
    assert.equal(r.code, 2);
    assert.equal(
      r.stderr,
      `mqtt-broker check: ${config}:1:18: allow_anonymous must be true, false or loopback, got "maybe"\n`,
    );
  });
});

Deno.test("main.ts check warns about ACL users missing from the password file and weak hashes", async () => {
  await using files = await AuthFiles.create({ alice: "a", bob: "b" });
  const r = await check(files);
  assert.equal(r.code, 0);
  assert.match(r.stderr, /warning: .*acl\.yaml: user "mallory" is not in .*passwd/);
  // Without password_iterations: 1000 the default (210000) makes the test hashes weak.
  await Deno.writeTextFile(r.config, `password_file: ${files.passwordFile}\n`);
  const c = capture();
  assert.equal(await runCli(["check", "--config", r.config], c.io), 0);
  assert.match(
    c.out.stderr,
    /warning: .*passwd:1: the hash of "alice" is weaker than password_iterations/,
  );
});

Deno.test("the broker does not start with a bad ACL file: exit 2 with file:line:column", async () => {
  await using files = await AuthFiles.create();
  await files.writeAcl("users:\n  bob: nosuchrole\n");
  const config = `${files.dir}/broker.yaml`;
  await Deno.writeTextFile(config, `acl_file: ${files.aclFile}\n`);
  const c = capture();
  const code = await runCli(["--config", config, "--port", "0", "--data", ":memory:"], c.io);
  assert.equal(code, 2);
  assert.match(
    c.out.stderr,
    new RegExp(`mqtt-broker: ${files.aclFile}:2:8: Unknown role "nosuchrole"`),
  );
});
