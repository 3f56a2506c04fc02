import assert from "node:assert/strict";
import { BoundAcl } from "../auth/mod.ts";
import { loadAclFile, parseAclFile } from "./acl_file.ts";
import { ConfigError } from "./errors.ts";

function aclError(text: string): ConfigError {
  try {
    parseAclFile(text, "acl.yaml");
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${error}`);
    return error;
  }
  assert.fail("expected a ConfigError");
}

Deno.test("parseAclFile() reads roles, users, certificates and anonymous", () => {
  const rules = parseAclFile(
    `
roles:
  dev:
    - allow: publish
      topic: devices/%c/#
    - deny: [subscribe, receive]
      topic: devices/+/secret
  admin:
    - allow: all
      topic: "#"
users:
  alice: [admin, dev]
  bob: dev
  1234: dev
certificates:
  dev.example.com: dev
anonymous: dev
`,
    "acl.yaml",
  );
  assert.deepEqual([...rules.roles.keys()], ["dev", "admin"]);
  assert.deepEqual(rules.roles.get("dev"), [
    { effect: "allow", actions: ["publish"], topic: "devices/%c/#", source: "acl.yaml:4:7" },
    {
      effect: "deny",
      actions: ["subscribe", "receive"],
      topic: "devices/+/secret",
      source: "acl.yaml:6:7",
    },
  ]);
  assert.deepEqual(rules.roles.get("admin")![0].actions, ["publish", "subscribe", "receive"]);
  assert.deepEqual(rules.users.get("alice"), ["admin", "dev"]);
  assert.deepEqual(rules.users.get("bob"), ["dev"]);
  assert.deepEqual(rules.users.get("1234"), ["dev"]);
  assert.deepEqual(rules.certificates.get("dev.example.com"), ["dev"]);
  assert.deepEqual(rules.anonymous, ["dev"]);
});

Deno.test("parseAclFile() gives an ACL with no roles for an empty file", () => {
  const rules = parseAclFile("# nothing\n", "acl.yaml");
  assert.equal(rules.roles.size, 0);
  assert.equal(new BoundAcl(rules, { clientId: "c" }).checkTopic("publish", "a").allowed, false);
});

Deno.test("the example ACL file parses and grants what its comments say", async () => {
  const rules = await loadAclFile(
    new URL("../../config/acl.example.yaml", import.meta.url).pathname,
  );
  const grafana = new BoundAcl(rules, { clientId: "g", username: "grafana" });
  assert.equal(grafana.checkSubscribe("devices/+/telemetry/temp").allowed, true);
  assert.equal(grafana.checkSubscribe("devices/+/telemetry/#").allowed, false);
  assert.equal(grafana.checkTopic("receive", "devices/x/telemetry/secret/k").allowed, false);
  const sensor = new BoundAcl(rules, {
    clientId: "s1",
    certificateIds: ["sensor-0001"],
  });
  assert.equal(sensor.checkTopic("publish", "devices/s1/telemetry/t").allowed, true);
  assert.equal(sensor.checkTopic("publish", "devices/s2/telemetry/t").allowed, false);
  const bySan = new BoundAcl(rules, {
    clientId: "s2",
    certificateIds: ["sensor-0002", "DNS:sensor-0002.example.com"],
  });
  assert.equal(bySan.checkTopic("publish", "devices/s2/telemetry/t").allowed, true);
  const guest = new BoundAcl(rules, { clientId: "anon" });
  assert.equal(guest.checkSubscribe("public/#").allowed, true);
  assert.equal(guest.checkTopic("publish", "public/x").allowed, false);
  const alice = new BoundAcl(rules, { clientId: "a", username: "alice" });
  assert.equal(alice.checkSubscribe("$SYS/#").allowed, true);
});

Deno.test("parseAclFile() reports each kind of error at file:line:column", async (t) => {
  const cases: [string, string, string][] = [
    ["bad YAML", "roles: [\n", "acl.yaml:2:1: Invalid YAML"],
    ["not a mapping", "- a\n", "acl.yaml:1:1: The ACL must be a mapping"],
    ["unknown top key", "rolez: {}\n", "acl.yaml:1:1: Unknown key rolez"],
    ["rules not a list", "roles:\n  r: allow\n", "acl.yaml:2:6: roles.r must be a list of rules"],
    [
      "unknown action",
      "roles:\n  r:\n    - allow: write\n      topic: a\n",
      "acl.yaml:3:14: roles.r[0].allow must be publish, subscribe, receive or all",
    ],
    [
      "both allow and deny",
      "roles:\n  r:\n    - allow: publish\n      deny: publish\n      topic: a\n",
      "acl.yaml:4:7: roles.r[0] has both allow and deny",
    ],
    [
      "missing topic",
      "roles:\n  r:\n    - allow: publish\n",
      "acl.yaml:3:7: roles.r[0] needs topic:",
    ],
    [
      "missing effect",
      "roles:\n  r:\n    - topic: a\n",
      "acl.yaml:3:7: roles.r[0] needs allow: or deny:",
    ],
    [
      "bad filter",
      "roles:\n  r:\n    - allow: publish\n      topic: a/#/b\n",
      "acl.yaml:4:14: roles.r[0].topic is invalid: '#' is not the last level",
    ],
    [
      "unknown rule key",
      "roles:\n  r:\n    - allow: publish\n      topics: a\n",
      "acl.yaml:4:7: Unknown key roles.r[0].topics",
    ],
    [
      "unknown role",
      "roles:\n  r: []\nusers:\n  alice: [r, admin]\n",
      'acl.yaml:4:14: Unknown role "admin"; roles defined: r',
    ],
    [
      "unknown anonymous role",
      "anonymous: guest\n",
      'acl.yaml:1:12: Unknown role "guest"; no roles are defined',
    ],
    ["duplicate key", "roles:\n  r: []\n  r: []\n", "acl.yaml:3:3: Invalid YAML"],
  ];
  for (const [name, text, prefix] of cases) {
    await t.step(name, () => {
      const err = aclError(text);
      assert.ok(err.message.startsWith(prefix), `got: ${err.message}`);
    });
  }
});

Deno.test("loadAclFile() names the file when it cannot be read", async () => {
  await assert.rejects(loadAclFile("/nonexistent/acl.yaml"), (err: Error) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.message, "/nonexistent/acl.yaml: Cannot read ACL file: no such file");
    return true;
  });
});
