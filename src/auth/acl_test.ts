import assert from "node:assert/strict";
import {
  aclFilterError,
  type AclIdentity,
  type AclRule,
  type AclRules,
  BoundAcl,
  covers,
  intersects,
  rolesOf,
} from "./acl.ts";

function rule(effect: "allow" | "deny", actions: AclRule["actions"], topic: string): AclRule {
  return { effect, actions, topic };
}

function acl(
  roles: Record<string, AclRule[]>,
  users: Record<string, string[]> = {},
  more: { certificates?: Record<string, string[]>; anonymous?: string[] } = {},
): AclRules {
  return {
    roles: new Map(Object.entries(roles)),
    users: new Map(Object.entries(users)),
    certificates: new Map(Object.entries(more.certificates ?? {})),
    anonymous: more.anonymous ?? [],
  };
}

const ALL = ["publish", "subscribe", "receive"] as const;

Deno.test("covers() holds when every topic of the filter matches the rule", () => {
  const c = (r: string, f: string) => covers(r.split("/"), f.split("/"));
  assert.equal(c("#", "a/b"), true);
  assert.equal(c("#", "+/#"), true);
  assert.equal(c("+/#", "#"), true, "no topic has zero levels");
  assert.equal(c("a/+/#", "a/#"), false);
  assert.equal(c("a/#", "a"), true, "a/# matches the parent level a");
  assert.equal(c("a/#", "a/+/c"), true);
  assert.equal(c("a/+", "a/b"), true);
  assert.equal(c("a/+", "a/+"), true);
  assert.equal(c("a/b", "a/b"), true);
  assert.equal(c("a/+", "a/#"), false, "a/# also matches a and a/b/c");
  assert.equal(c("a/b", "a/+"), false);
  assert.equal(c("a/+/#", "a/#"), false, "a/# matches a, which a/+/# does not");
  assert.equal(c("a/b/#", "a/b"), true);
  assert.equal(c("a/b", "a/b/c"), false);
  assert.equal(c("a/b/c", "a/b"), false);
  assert.equal(c("#", "$SYS/#"), false, "# does not match $ topics [MQTT-4.7.2-1]");
  assert.equal(c("+/x", "$SYS/x"), false);
  assert.equal(c("$SYS/#", "$SYS/+"), true);
});

Deno.test("intersects() holds when some topic matches both filters", () => {
  const i = (r: string, f: string) => intersects(r.split("/"), f.split("/"));
  assert.equal(i("a/secret/#", "a/#"), true);
  assert.equal(i("a/secret/#", "+/+/x"), true);
  assert.equal(i("a/secret/#", "a/public/#"), false);
  assert.equal(i("a/b", "a"), false);
  assert.equal(i("a", "a/#"), true, "a/# matches a");
  assert.equal(i("a/+", "+/b"), true);
  assert.equal(i("#", "$SYS/x"), false);
  assert.equal(i("$SYS/#", "#"), false);
  assert.equal(i("$SYS/#", "$SYS/x"), true);
  assert.equal(i("+", "+"), true);
});

Deno.test("BoundAcl: the first matching rule decides and nothing matching means deny", () => {
  const rules = acl({
    r: [
      rule("deny", ["publish"], "a/secret/#"),
      rule("allow", ["publish", "receive"], "a/#"),
    ],
  }, { u: ["r"] });
  const b = new BoundAcl(rules, { clientId: "c", username: "u" });
  assert.equal(b.checkTopic("publish", "a/x").allowed, true);
  assert.equal(b.checkTopic("publish", "a/secret/x").allowed, false);
  assert.equal(b.checkTopic("publish", "a/secret/x").rule?.effect, "deny");
  assert.equal(b.checkTopic("receive", "a/secret/x").allowed, true, "deny names publish only");
  assert.equal(b.checkTopic("publish", "b").allowed, false);
  assert.equal(b.checkTopic("publish", "b").rule, undefined, "denied by default");
  assert.equal(b.checkSubscribe("a/x").allowed, false, "no rule names subscribe");
});

Deno.test("BoundAcl: a subscribe filter needs one allow rule covering it and no earlier deny intersecting it", () => {
  const rules = acl({
    r: [
      rule("deny", ["subscribe"], "a/secret/#"),
      rule("allow", ["subscribe"], "a/b"),
      rule("allow", ["subscribe"], "a/#"),
    ],
  }, { u: ["r"] });
  const b = new BoundAcl(rules, { clientId: "c", username: "u" });
  assert.equal(b.checkSubscribe("a/public/#").allowed, true);
  assert.equal(b.checkSubscribe("a/+").allowed, false, "a/+ matches a/secret, which the deny has");
  assert.equal(b.checkSubscribe("a/b").allowed, true);
  assert.equal(b.checkSubscribe("a/#").allowed, false, "a/# intersects the deny");
  assert.equal(b.checkSubscribe("+/secret/x").allowed, false);
  assert.equal(b.checkSubscribe("#").allowed, false, "# is not covered by a/#");
  assert.equal(b.checkSubscribe("$share/g/a/public/x").allowed, true, "$share/g/ is stripped");
  assert.equal(b.checkSubscribe("$share/g/a/secret/x").allowed, false);
});

Deno.test("BoundAcl: an allow rule that only partly covers a filter is passed over", () => {
  const rules = acl({
    r: [rule("allow", ["subscribe"], "a/b"), rule("allow", ["subscribe"], "a/+")],
  }, { u: ["r"] });
  const b = new BoundAcl(rules, { clientId: "c", username: "u" });
  assert.equal(b.checkSubscribe("a/+").allowed, true, "a/b does not cover a/+; a/+ does");
  assert.equal(b.checkSubscribe("a/#").allowed, false, "no single rule covers a/#");
});

Deno.test("BoundAcl substitutes %c and %u", () => {
  const rules = acl({
    dev: [rule("allow", ALL, "devices/%c/#"), rule("allow", ["publish"], "users/%u/x-%c")],
  }, { alice: ["dev"] });
  const b = new BoundAcl(rules, { clientId: "d1", username: "alice" });
  assert.equal(b.checkTopic("publish", "devices/d1/temp").allowed, true);
  assert.equal(b.checkTopic("publish", "devices/d2/temp").allowed, false);
  assert.equal(b.checkSubscribe("devices/d1/#").allowed, true);
  assert.equal(b.checkSubscribe("devices/+/#").allowed, false);
  assert.equal(b.checkTopic("publish", "users/alice/x-d1").allowed, true);
});

Deno.test("BoundAcl: client ids and user names with +, #, / or a leading $ never widen an allow rule", async (t) => {
  const rules = acl(
    {
      dev: [rule("allow", ALL, "devices/%c/#"), rule("allow", ALL, "home/%u")],
    },
    {},
    { anonymous: ["dev"] },
  );
  const attacks: [string, string, string][] = [
    // client id, topic or filter it would reach, action
    ["+", "devices/other/x", "publish"],
    ["#", "devices/other/x", "publish"],
    ["+", "devices/+/#", "subscribe"],
    ["#", "devices/#", "subscribe"],
    ["a/b", "devices/a/b/x", "publish"],
    ["a/b", "devices/a/b/#", "subscribe"],
    ["", "devices//x", "publish"],
  ];
  for (const [clientId, topic, action] of attacks) {
    await t.step(`client id ${JSON.stringify(clientId)} → ${action} ${topic}`, () => {
      const b = new BoundAcl(rules, { clientId });
      const decision = action === "subscribe"
        ? b.checkSubscribe(topic)
        : b.checkTopic(action as "publish", topic);
      assert.equal(decision.allowed, false);
    });
  }
  await t.step("%u with no user name matches nothing", () => {
    const b = new BoundAcl(rules, { clientId: "x" });
    assert.equal(b.checkTopic("publish", "home/").allowed, false);
  });
  await t.step("user name $SYS cannot reach $SYS through home/%u either", () => {
    const b = new BoundAcl(acl({ r: [rule("allow", ALL, "%u/#")] }, { $SYS: ["r"] }), {
      clientId: "x",
      username: "$SYS",
    });
    assert.equal(b.checkSubscribe("$SYS/#").allowed, false);
  });
});

Deno.test("BoundAcl: an unsafe value makes a deny rule match everything (fail closed)", () => {
  const rules = acl({
    r: [rule("deny", ["publish"], "private/%c/#"), rule("allow", ["publish"], "private/#")],
  }, { u: ["r"] });
  assert.equal(
    new BoundAcl(rules, { clientId: "ok", username: "u" }).checkTopic("publish", "private/x/y")
      .allowed,
    true,
  );
  assert.equal(
    new BoundAcl(rules, { clientId: "ok", username: "u" }).checkTopic("publish", "private/ok/y")
      .allowed,
    false,
  );
  const sneaky = new BoundAcl(rules, { clientId: "a/b", username: "u" });
  assert.equal(sneaky.checkTopic("publish", "private/x/y").allowed, false);
  assert.equal(sneaky.checkSubscribe("anything").allowed, false);
});

Deno.test("rolesOf(): user roles, then certificate roles, without repeats; anonymous only for clients with neither", () => {
  const rules = acl({ a: [], b: [], c: [], g: [] }, { alice: ["a", "b"] }, {
    certificates: { "dev.example": ["b", "c"], "spiffe://x": ["a"] },
    anonymous: ["g"],
  });
  const id = (more: Partial<AclIdentity>): AclIdentity => ({ clientId: "c", ...more });
  assert.deepEqual(rolesOf(rules, id({ username: "alice" })), ["a", "b"]);
  assert.deepEqual(
    rolesOf(rules, id({ username: "alice", certificateIds: ["dev.example", "spiffe://x"] })),
    ["a", "b", "c"],
  );
  assert.deepEqual(rolesOf(rules, id({ certificateIds: ["dev.example"] })), ["b", "c"]);
  assert.deepEqual(rolesOf(rules, id({})), ["g"]);
  assert.deepEqual(rolesOf(rules, id({ username: "mallory" })), []);
});

Deno.test("BoundAcl evaluates roles in order: an earlier role's deny beats a later role's allow", () => {
  const rules = acl({
    limited: [rule("deny", ["publish"], "admin/#")],
    broad: [rule("allow", ["publish"], "#")],
  }, { u: ["limited", "broad"], v: ["broad", "limited"] });
  assert.equal(
    new BoundAcl(rules, { clientId: "c", username: "u" }).checkTopic("publish", "admin/x").allowed,
    false,
  );
  assert.equal(
    new BoundAcl(rules, { clientId: "c", username: "v" }).checkTopic("publish", "admin/x").allowed,
    true,
  );
});

Deno.test("BoundAcl: # rules do not match $ topics; explicit $ rules do", () => {
  const rules = acl({ r: [rule("allow", ALL, "#"), rule("allow", ["receive"], "$SYS/#")] }, {
    u: ["r"],
  });
  const b = new BoundAcl(rules, { clientId: "c", username: "u" });
  assert.equal(b.checkTopic("publish", "$SYS/x").allowed, false);
  assert.equal(b.checkTopic("receive", "$SYS/x").allowed, true);
  assert.equal(b.checkSubscribe("$SYS/#").allowed, false);
});

Deno.test("aclFilterError() checks rule filters", () => {
  assert.equal(aclFilterError("a/%c/#"), undefined);
  assert.equal(aclFilterError("a/x-%u-%c"), undefined);
  assert.equal(aclFilterError("100%%/x"), undefined);
  assert.match(aclFilterError("a/#/b")!, /'#' is not the last level/);
  assert.match(aclFilterError("a/b+")!, /whole level/);
  assert.match(aclFilterError("a/%x")!, /only %c/);
  assert.match(aclFilterError("$share/g/a")!, /\$share/);
});

Deno.test("BoundAcl: %% is a literal percent sign", () => {
  const b = new BoundAcl(acl({ r: [rule("allow", ["publish"], "100%%/%c")] }, { u: ["r"] }), {
    clientId: "c",
    username: "u",
  });
  assert.equal(b.checkTopic("publish", "100%/c").allowed, true);
});
