import assert from "node:assert/strict";
import { type BrokerOptions, DEFAULT_OPTIONS, resolveOptions } from "../src/broker/mod.ts";
import {
  ConfigError,
  LIMIT_KEYS,
  LISTENER_KEYS,
  LISTENER_TYPES,
  loadConfigFile,
  mergeOverrides,
  parseConfig,
  TOP_LEVEL_KEYS,
} from "../src/config/mod.ts";

const EXAMPLE_PATH = new URL("../config/broker.example.yaml", import.meta.url);

/** Runs `fn`, asserts it throws a ConfigError, and returns it. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${error}`);
    return error;
  }
  assert.fail("expected a ConfigError, but nothing was thrown");
}

Deno.test("parseConfig returns the defaults for an empty file or one with only comments", () => {
  assert.deepEqual(parseConfig("", "empty.yaml"), resolveOptions());
  assert.deepEqual(parseConfig("# nothing set\n\n", "comments.yaml"), resolveOptions());
});

Deno.test("the example config parses and sets every key to its default", async () => {
  const options = await loadConfigFile(EXAMPLE_PATH.pathname);
  assert.deepEqual(options, resolveOptions());
});

Deno.test("the example config mentions every config key", async () => {
  const text = await Deno.readTextFile(EXAMPLE_PATH);
  const keys = [...TOP_LEVEL_KEYS, ...LIMIT_KEYS].map((k) => k.key);
  for (const key of [...keys, "listeners", "limits", "type", "host", "port"]) {
    assert.match(text, new RegExp(`^\\s*(- )?${key}:`, "m"), `example lacks ${key}`);
  }
});

Deno.test("the example config documents every listener key and type", async () => {
  const text = await Deno.readTextFile(EXAMPLE_PATH);
  for (const key of LISTENER_KEYS) {
    assert.match(text, new RegExp(`^#\\s+(- )?${key}:`, "m"), `example lacks listener key ${key}`);
  }
  for (const type of LISTENER_TYPES) {
    assert.match(text, new RegExp(`^#\\s+${type}\\s`, "m"), `example lacks listener type ${type}`);
  }
});

Deno.test("the config schema has a YAML key for every BrokerOptions field", () => {
  const mapped = new Set<string>(
    [...TOP_LEVEL_KEYS, ...LIMIT_KEYS].map((k) => k.field).concat("listeners"),
  );
  assert.deepEqual([...mapped].sort(), Object.keys(DEFAULT_OPTIONS).sort());
});

Deno.test("parseConfig maps snake_case keys to the camelCase option fields", () => {
  const options = parseConfig(
    `
listeners:
  - type: tcp
    host: 0.0.0.0
    port: 1884
  - host: "::1"
    port: 0
data: ":memory:"
log_level: debug
allow_anonymous: false
allow_mqtt31: false
limits:
  max_connections: 50
  receive_maximum: 10
  maximum_qos: 1
  retain_available: false
  max_session_expiry_sec: 4294967295
  outbox_soft_limit_bytes: 1000
  outbox_hard_limit_bytes: 1000
  close_on_overdue_ack: true
  max_topic_levels: 8
`,
    "custom.yaml",
  );
  const expected: BrokerOptions = {
    ...resolveOptions(),
    listeners: [
      { type: "tcp", host: "0.0.0.0", port: 1884 },
      { type: "tcp", host: "::1", port: 0 },
    ],
    dataPath: ":memory:",
    logLevel: "debug",
    allowAnonymous: false,
    allowMqtt31: false,
    maxConnections: 50,
    receiveMaximum: 10,
    maximumQos: 1,
    retainAvailable: false,
    maxSessionExpirySec: 0xFFFF_FFFF,
    outboxSoftLimitBytes: 1000,
    outboxHardLimitBytes: 1000,
    closeOnOverdueAck: true,
    maxTopicLevels: 8,
  };
  assert.deepEqual(options, expected);
});

Deno.test("parseConfig follows YAML anchors and aliases", () => {
  const options = parseConfig(
    "listeners:\n  - &main {host: 127.0.0.1, port: 1900}\nlimits:\n  receive_maximum: 7\n",
    "anchors.yaml",
  );
  assert.deepEqual(options.listeners, [{ type: "tcp", host: "127.0.0.1", port: 1900 }]);
  assert.equal(options.receiveMaximum, 7);
});

Deno.test("parseConfig does not share listener objects with DEFAULT_OPTIONS", () => {
  const options = parseConfig("", "empty.yaml");
  options.listeners[0].port = 1;
  assert.equal(DEFAULT_OPTIONS.listeners[0].port, 1883);
});

Deno.test("parseConfig reports each kind of error at file:line:column", async (t) => {
  const cases: { name: string; yaml: string; at: [number, number]; reason: string | RegExp }[] = [
    {
      name: "integer below its range",
      yaml: "log_level: info\nlimits:\n  max_connections: 5\n  receive_maximum: 0\n",
      at: [4, 20],
      reason: "limits.receive_maximum must be an integer from 1 to 65535, got 0",
    },
    {
      name: "integer above its range",
      yaml: "limits:\n  maximum_qos: 3\n",
      at: [2, 16],
      reason: "limits.maximum_qos must be an integer from 0 to 2, got 3",
    },
    {
      name: "packet size above the MQTT maximum",
      yaml: "limits:\n  max_packet_size: 268435461\n",
      at: [2, 20],
      reason: "limits.max_packet_size must be an integer from 1 to 268435460, got 268435461",
    },
    {
      name: "fraction where an integer is needed",
      yaml: "limits:\n  retry_interval_ms: 1.5\n",
      at: [2, 22],
      reason: "limits.retry_interval_ms must be an integer from 1 to 2147483647, got 1.5",
    },
    {
      name: "quoted number where an integer is needed",
      yaml: "limits:\n  receive_maximum: '10'\n",
      at: [2, 20],
      reason: 'limits.receive_maximum must be an integer from 1 to 65535, got "10"',
    },
    {
      name: "missing value, reported at the key",
      yaml: "limits:\n  receive_maximum:\n",
      at: [2, 3],
      reason: "limits.receive_maximum must be an integer from 1 to 65535, got nothing",
    },
    {
      name: "YAML 1.1 yes where a boolean is needed",
      yaml: "allow_mqtt31: yes\n",
      at: [1, 15],
      reason: 'allow_mqtt31 must be true or false, got "yes"',
    },
    {
      name: "allow_anonymous neither a boolean nor loopback",
      yaml: "allow_anonymous: local\n",
      at: [1, 18],
      reason: 'allow_anonymous must be true, false or loopback, got "local"',
    },
    {
      name: "password_file not a path",
      yaml: "password_file: 12\n",
      at: [1, 16],
      reason: "password_file must be a file path (or nothing, for none), got 12",
    },
    {
      name: "password_iterations below the minimum",
      yaml: "password_iterations: 10\n",
      at: [1, 22],
      reason: "password_iterations must be an integer from 1000 to 10000000, got 10",
    },
    {
      name: "unknown log level",
      yaml: "log_level: loud\n",
      at: [1, 12],
      reason: 'log_level must be one of error, warn, info, debug, got "loud"',
    },
    {
      name: "empty data path",
      yaml: 'data: ""\n',
      at: [1, 7],
      reason: 'data must be a non-empty string, got ""',
    },
    {
      name: "misspelt limit key, with a suggestion",
      yaml: "limits:\n  max_conections: 5\n",
      at: [2, 3],
      reason: "Unknown key limits.max_conections (did you mean limits.max_connections?)",
    },
    {
      name: "unknown top-level key",
      yaml: "log_level: info\nbind_address: 1.2.3.4\n",
      at: [2, 1],
      reason: /^Unknown key bind_address; known keys: data, log_level/,
    },
    {
      name: "limits that is not a mapping",
      yaml: "limits: 5\n",
      at: [1, 9],
      reason: "limits must be a mapping, got 5",
    },
    {
      name: "top level that is not a mapping",
      yaml: "- port: 1883\n",
      at: [1, 1],
      reason: "The config must be a mapping of keys to values, got a list",
    },
    {
      name: "port out of range",
      yaml: "listeners:\n  - type: tcp\n    host: 0.0.0.0\n    port: 70000\n",
      at: [4, 11],
      reason: "listeners[0].port must be an integer from 0 to 65535, got 70000",
    },
    {
      name: "unknown listener type",
      yaml: "listeners:\n  - type: quic\n",
      at: [2, 11],
      reason: 'listeners[0].type must be one of tcp, tls, ws, wss, got "quic"',
    },
    {
      name: "unknown listener key",
      yaml: "listeners:\n  - port: 1\n    tls: true\n",
      at: [3, 5],
      reason: /^Unknown key listeners\[0\]\.tls; known keys: type, host, port, cert_file, /,
    },
    {
      name: "listener that is not a mapping",
      yaml: "listeners:\n  - 1883\n",
      at: [2, 5],
      reason: "listeners[0] must be a mapping with type, host and port, got 1883",
    },
    {
      name: "empty listener list",
      yaml: "listeners: []\n",
      at: [1, 12],
      reason: "listeners must list at least one listener, got an empty list",
    },
    {
      name: "two listeners on one address",
      yaml: "listeners:\n  - port: 1883\n  - port: 1884\n  - port: 1883\n",
      at: [4, 5],
      reason: "listeners[2] binds 127.0.0.1:1883 again (already bound by listeners[0])",
    },
    {
      name: "soft outbox limit above the hard one",
      yaml: "limits:\n  outbox_hard_limit_bytes: 100\n  outbox_soft_limit_bytes: 200\n",
      at: [3, 28],
      reason: "limits.outbox_soft_limit_bytes (200) must not exceed " +
        "limits.outbox_hard_limit_bytes (100)",
    },
    {
      name: "non-string key",
      yaml: "limits:\n  5: 5\n",
      at: [2, 3],
      reason: 'Keys must be plain words such as "port", got 5',
    },
    {
      name: "YAML syntax error: bad indentation",
      yaml: "limits:\n  receive_maximum: 5\n max_connections: 5\n",
      at: [3, 1],
      reason: "Invalid YAML: All mapping items must start at the same column",
    },
    {
      name: "YAML syntax error: duplicate key",
      yaml: "log_level: info\nlog_level: debug\n",
      at: [2, 1],
      reason: "Invalid YAML: Map keys must be unique",
    },
    {
      name: "YAML syntax error: unclosed quote",
      yaml: 'data: "./data\nlog_level: info\n',
      at: [3, 1],
      reason: /^Invalid YAML: Missing closing "quote/,
    },
    {
      name: "YAML syntax error: two documents",
      yaml: "log_level: info\n---\nlog_level: debug\n",
      at: [2, 1],
      reason: "Invalid YAML: A config file holds one YAML document, found a second one",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const error = configError(() => parseConfig(c.yaml, "config/broker.yaml"));
      assert.ok(error instanceof SyntaxError);
      assert.equal(error.file, "config/broker.yaml");
      assert.deepEqual([error.line, error.column], c.at, error.message);
      if (typeof c.reason === "string") assert.equal(error.reason, c.reason);
      else assert.match(error.reason, c.reason);
      assert.equal(error.message, `config/broker.yaml:${c.at[0]}:${c.at[1]}: ${error.reason}`);
    });
  }
});

Deno.test("loadConfigFile names the path as given and the position of a bad value", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/broker.yaml`;
    await Deno.writeTextFile(path, "# my broker\nlimits:\n\n  receive_maximum: 0\n");
    await assert.rejects(() => loadConfigFile(path), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.message, `${path}:4:20: ${error.reason}`);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadConfigFile on a missing file throws a ConfigError without a position", async () => {
  await assert.rejects(() => loadConfigFile("no/such/broker.yaml"), (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.equal(error.file, "no/such/broker.yaml");
    assert.equal(error.line, undefined);
    assert.equal(error.message, "no/such/broker.yaml: Cannot read config file: no such file");
    assert.ok(error.cause instanceof Deno.errors.NotFound);
    return true;
  });
});

Deno.test("loadConfigFile on a directory throws a ConfigError", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(() => loadConfigFile(dir), ConfigError);
  } finally {
    await Deno.remove(dir);
  }
});

Deno.test("mergeOverrides applies host and port to the first listener only", () => {
  const base = parseConfig(
    "listeners:\n  - {host: 10.0.0.1, port: 1883}\n  - {host: 10.0.0.2, port: 1884}\n",
    "two.yaml",
  );
  const merged = mergeOverrides(base, { port: 0 });
  assert.deepEqual(merged.listeners, [
    { type: "tcp", host: "10.0.0.1", port: 0 },
    { type: "tcp", host: "10.0.0.2", port: 1884 },
  ]);
  assert.equal(base.listeners[0].port, 1883, "input is not modified");
  assert.equal(mergeOverrides(base, { host: "0.0.0.0" }).listeners[0].host, "0.0.0.0");
});

Deno.test("mergeOverrides sets data path and log level, and keeps everything else", () => {
  const base = parseConfig("log_level: warn\nlimits:\n  receive_maximum: 9\n", "x.yaml");
  const merged = mergeOverrides(base, { dataPath: ":memory:", logLevel: "debug" });
  assert.deepEqual(merged, { ...base, dataPath: ":memory:", logLevel: "debug" });
  assert.deepEqual(mergeOverrides(base, {}), base);
});

Deno.test("mergeOverrides creates a listener from the defaults when there is none", () => {
  const merged = mergeOverrides({ ...resolveOptions(), listeners: [] }, { port: 2000 });
  assert.deepEqual(merged.listeners, [{ type: "tcp", host: "127.0.0.1", port: 2000 }]);
});
