import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { resolveOptions } from "../src/broker/mod.ts";
import { parseCliArgs, resolveCliOptions, runCli, UsageError } from "../src/cli/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MAIN = new URL("../main.ts", import.meta.url).pathname;
/** The permissions `deno task start` grants. */
const PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys",
];
/** Upper bound for one `deno run main.ts` (a cold npm cache makes the first one slow). */
const CHILD_TIMEOUT_MS = 60_000;

interface ChildResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `deno run main.ts ...args` to completion, killed if it outlives the timeout. */
async function runMain(args: string[]): Promise<ChildResult> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), CHILD_TIMEOUT_MS);
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...PERMISSIONS, MAIN, ...args],
      cwd: ROOT,
      stdin: "null",
      env: { NO_COLOR: "1" },
      signal: abort.signal,
    }).output();
    const decoder = new TextDecoder();
    return {
      code: output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Captures what runCli writes. */
function capture() {
  const out = { stdout: "", stderr: "" };
  return {
    out,
    options: {
      stdout: (text: string) => out.stdout += text,
      stderr: (text: string) => out.stderr += text,
    },
  };
}

Deno.test("main.ts --help prints usage and every flag, and exits 0", async () => {
  const { code, stdout, stderr } = await runMain(["--help"]);
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^Usage: mqtt-broker \[options\]$/m);
  for (const flag of ["--config", "--host", "--port", "--data", "--log-level", "--version"]) {
    assert.ok(stdout.includes(flag), `help lacks ${flag}`);
  }
});

Deno.test("main.ts --version and -V print the version from deno.json and exit 0", async () => {
  for (const flag of ["--version", "-V"]) {
    const { code, stdout, stderr } = await runMain([flag]);
    assert.equal(code, 0, stderr);
    assert.equal(stdout, `mqtt-broker ${denoJson.version}\n`);
  }
});

Deno.test("main.ts exits 2 with a one-line reason and a --help hint for bad flags", async (t) => {
  const cases: [string[], string][] = [
    [["--verbose"], "Unknown option --verbose"],
    [["--port", "abc"], '--port must be an integer from 0 to 65535, got "abc"'],
    [["--port", "70000"], '--port must be an integer from 0 to 65535, got "70000"'],
    [["--log-level", "loud"], '--log-level must be one of error, warn, info, debug, got "loud"'],
    [["--config"], "--config needs a value"],
    [["serve"], 'Unexpected argument "serve"'],
  ];
  for (const [args, reason] of cases) {
    await t.step(args.join(" "), async () => {
      const { code, stdout, stderr } = await runMain(args);
      assert.equal(code, 2, stderr);
      assert.equal(stdout, "");
      assert.equal(
        stderr,
        `mqtt-broker: ${reason}\nTry 'mqtt-broker --help' for more information.\n`,
      );
    });
  }
});

Deno.test("main.ts exits 2 and prints file:line:column for a bad --config file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/broker.yaml`;
    await Deno.writeTextFile(file, "log_level: info\nlimits:\n  receive_maximum: 0\n");
    const { code, stderr } = await runMain(["--config", file]);
    assert.equal(code, 2, stderr);
    assert.equal(
      stderr,
      `mqtt-broker: ${file}:3:20: limits.receive_maximum must be an integer from 1 to 65535, ` +
        "got 0\n",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main.ts exits 2 and names the file when --config does not exist", async () => {
  const { code, stderr } = await runMain(["--config", "no/such/broker.yaml"]);
  assert.equal(code, 2, stderr);
  assert.equal(stderr, "mqtt-broker: no/such/broker.yaml: Cannot read config file: no such file\n");
});

Deno.test("main.ts runs until SIGTERM, then stops the broker and exits 0", async () => {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), CHILD_TIMEOUT_MS);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MAIN, "--port", "0", "--data", ":memory:"],
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: abort.signal,
  }).spawn();
  let log = "";
  try {
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let signalled = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      log += value;
      if (!signalled && log.includes("broker started")) {
        child.kill("SIGTERM");
        signalled = true;
      }
    }
    const status = await child.status;
    assert.ok(signalled, `the broker never logged "broker started":\n${log}`);
    assert.equal(status.code, 0, log);
    assert.match(log, /stopping reason=SIGTERM/);
    assert.match(log, /broker stopped/);
  } finally {
    clearTimeout(timer);
  }
});

Deno.test("runCli returns 0 for --help and -h without starting a broker", async () => {
  for (const flag of ["--help", "-h"]) {
    const { out, options } = capture();
    assert.equal(await runCli([flag], options), 0);
    assert.match(out.stdout, /Usage: mqtt-broker/);
    assert.equal(out.stderr, "");
  }
});

Deno.test("runCli starts the broker and returns 0 when asked to stop", async () => {
  const { out, options } = capture();
  const abort = new AbortController();
  let started = false;
  const code = await runCli(["--port", "0", "--data", ":memory:", "--log-level", "debug"], {
    ...options,
    signal: abort.signal,
    onStarted: () => {
      started = true;
      abort.abort();
    },
  });
  assert.equal(code, 0, out.stderr);
  assert.ok(started);
  assert.match(out.stderr, /broker started version=\S+ data=:memory:/);
  assert.match(out.stderr, /broker stopped/);
});

Deno.test("parseCliArgs reads every flag, in both --flag value and --flag=value forms", () => {
  const args = parseCliArgs([
    "--config",
    "a.yaml",
    "--host=0.0.0.0",
    "--port",
    "0",
    "--data=:memory:",
    "--log-level",
    "warn",
  ]);
  assert.deepEqual(args, {
    help: false,
    version: false,
    configFile: "a.yaml",
    overrides: { host: "0.0.0.0", port: 0, dataPath: ":memory:", logLevel: "warn" },
  });
  assert.deepEqual(parseCliArgs([]), { help: false, version: false, overrides: {} });
});

Deno.test("parseCliArgs rejects malformed command lines with a one-line UsageError", async (t) => {
  const cases: [string[], string][] = [
    [["--foo"], "Unknown option --foo"],
    [["-x"], "Unknown option -x"],
    [["--port", "-1"], '--port must be an integer from 0 to 65535, got "-1"'],
    [["--port=65536"], '--port must be an integer from 0 to 65535, got "65536"'],
    [["--port", "--host", "x"], "--port needs a value"],
    [["--port", "1883.5"], '--port must be an integer from 0 to 65535, got "1883.5"'],
    [["--port", "0x10"], '--port must be an integer from 0 to 65535, got "0x10"'],
    [["--port", ""], "--port needs a non-empty value"],
    [["--host"], "--host needs a value"],
    [["--data", "--port", "1"], "--data needs a value"],
    [["--help=yes"], "--help takes no value"],
    [["--", "extra"], 'Unexpected argument "extra"'],
  ];
  for (const [args, message] of cases) {
    await t.step(JSON.stringify(args), () => {
      assert.throws(() => parseCliArgs(args), (error: unknown) => {
        assert.ok(error instanceof UsageError);
        assert.equal(error.message, message);
        return true;
      });
    });
  }
});

Deno.test("resolveCliOptions uses the defaults when no config file is given", async () => {
  assert.deepEqual(await resolveCliOptions(parseCliArgs([])), resolveOptions());
});

Deno.test("resolveCliOptions lets flags override the config file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/broker.yaml`;
    await Deno.writeTextFile(
      file,
      "listeners:\n  - {host: 10.1.1.1, port: 1000}\ndata: ./x.db\nlog_level: warn\n" +
        "limits:\n  receive_maximum: 5\n",
    );
    const fromFile = await resolveCliOptions(parseCliArgs(["--config", file]));
    assert.deepEqual(fromFile.listeners, [{ type: "tcp", host: "10.1.1.1", port: 1000 }]);
    const options = await resolveCliOptions(
      parseCliArgs(["--config", file, "--port", "2000", "--data", ":memory:", "--log-level=debug"]),
    );
    assert.deepEqual(options.listeners, [{ type: "tcp", host: "10.1.1.1", port: 2000 }]);
    assert.equal(options.dataPath, ":memory:");
    assert.equal(options.logLevel, "debug");
    assert.equal(options.receiveMaximum, 5);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
