import assert from "node:assert/strict";
import type { AclRules } from "./acl.ts";
import { hashPassword } from "./hash.ts";
import type { ClientInfo, ConnectRequest } from "./mod.ts";
import { defaultAuthHooks } from "./mod.ts";
import { FileAuth, isLoopbackAddress } from "./reloadable.ts";

const enc = new TextEncoder();

function client(more: Partial<ConnectRequest> = {}): ConnectRequest {
  return { clientId: "c1", protocolVersion: 5, remoteAddress: "10.0.0.7", remotePort: 1, ...more };
}

function rules(partial: Partial<AclRules>): AclRules {
  return {
    roles: new Map(),
    users: new Map(),
    certificates: new Map(),
    anonymous: [],
    ...partial,
  };
}

async function withPasswordFile<T>(text: string, fn: (path: string) => Promise<T>): Promise<T> {
  const path = await Deno.makeTempFile({ suffix: ".passwd" });
  try {
    await Deno.writeTextFile(path, text);
    return await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

Deno.test("isLoopbackAddress() knows 127/8, ::1 and IPv4-mapped loopback", () => {
  for (
    const a of ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1"]
  ) {
    assert.equal(isLoopbackAddress(a), true, a);
  }
  for (const a of ["10.0.0.1", "128.0.0.1", "::2", "::ffff:10.0.0.1", "", "localhost.evil"]) {
    assert.equal(isLoopbackAddress(a), false, a);
  }
});

Deno.test("FileAuth.authenticate(): 0x86 for a wrong password or unknown user, 0 for the right one", async () => {
  const hash = await hashPassword("right", { iterations: 1000 });
  await withPasswordFile(`alice:${hash}\n`, async (path) => {
    const auth = new FileAuth({ passwordFile: path, allowAnonymous: false });
    await auth.reload();
    assert.equal(
      await auth.authenticate(client({ username: "alice", password: enc.encode("right") })),
      0,
    );
    assert.equal(
      await auth.authenticate(client({ username: "alice", password: enc.encode("wrong") })),
      0x86,
    );
    assert.equal(await auth.authenticate(client({ username: "alice" })), 0x86);
    assert.equal(
      await auth.authenticate(client({ username: "bob", password: enc.encode("right") })),
      0x86,
    );
    assert.equal(await auth.authenticate(client({})), 0x87, "anonymous refused");
  });
});

Deno.test("FileAuth: anonymous clients per policy, loopback only by default", async () => {
  const loop = new FileAuth({ allowAnonymous: "loopback" });
  assert.equal(await loop.authenticate(client({ remoteAddress: "127.0.0.1" })), 0);
  assert.equal(await loop.authenticate(client({ remoteAddress: "::1" })), 0);
  assert.equal(await loop.authenticate(client({ remoteAddress: "192.168.1.2" })), 0x87);
  assert.equal(await new FileAuth({ allowAnonymous: true }).authenticate(client()), 0);
  assert.equal(
    await new FileAuth({ allowAnonymous: false }).authenticate(
      client({ remoteAddress: "127.0.0.1" }),
    ),
    0x87,
  );
  const hooks = defaultAuthHooks("loopback");
  assert.equal(hooks.authenticate(client({ remoteAddress: "127.0.0.1" })), 0);
  assert.equal(hooks.authenticate(client()), 0x87);
});

Deno.test("FileAuth: a verified certificate authenticates; its CN is the user name when configured", async () => {
  const acl = rules({
    roles: new Map([["r", [{ effect: "allow", actions: ["publish"], topic: "u/%u/#" } as const]]]),
    certificates: new Map([["dev1", ["r"]]]),
    users: new Map([["dev1", ["r"]]]),
  });
  const cnAsUser = new FileAuth({ allowAnonymous: false, useCertificateCnAsUsername: true }, {
    acl,
  });
  const cert = { commonName: "dev1", subjectAltNames: ["dev1.example"] };
  assert.equal(await cnAsUser.authenticate(client({ certificate: cert, username: "x" })), 0);
  const info: ClientInfo = client({ certificate: cert, username: "someone-else" });
  assert.deepEqual(cnAsUser.identityOf(info), {
    clientId: "c1",
    username: "dev1",
    certificateIds: ["dev1", "dev1.example"],
  });
  assert.equal(cnAsUser.authorizePublish(info, "u/dev1/x"), true);
  assert.equal(cnAsUser.authorizePublish(info, "u/someone-else/x"), false);

  const plain = new FileAuth({ allowAnonymous: false }, { acl });
  assert.equal(await plain.authenticate(client({ certificate: cert })), 0, "no user name needed");
  assert.equal(plain.identityOf(client({ certificate: cert })).username, undefined);
});

Deno.test("FileAuth: without an ACL everything is allowed; with one, deny by default", () => {
  const open = new FileAuth({ allowAnonymous: true });
  assert.equal(open.authorizePublish(client(), "a"), true);
  assert.equal(open.authorizeSubscribe(client(), "#"), true);
  assert.equal(open.authorizeDelivery(client(), "a"), true);
  const closed = new FileAuth({ allowAnonymous: true }, { acl: rules({}) });
  assert.equal(closed.authorizePublish(client(), "a"), false);
  assert.equal(closed.authorizeSubscribe(client(), "#"), false);
  assert.equal(closed.authorizeDelivery(client(), "a"), false);
});

Deno.test("FileAuth.reload(): a bad file keeps the old state; a good one replaces both at once", async () => {
  const good = await hashPassword("a", { iterations: 1000 });
  await withPasswordFile(`alice:${good}\n`, async (path) => {
    let aclRules = rules({
      roles: new Map([["r", [{ effect: "allow", actions: ["publish"], topic: "a/#" } as const]]]),
      users: new Map([["alice", ["r"]]]),
    });
    let failAcl = false;
    const auth = new FileAuth({
      passwordFile: path,
      aclFile: "acl.yaml",
      allowAnonymous: false,
      loadAcl: () =>
        failAcl
          ? Promise.reject(new SyntaxError("acl.yaml:1:1: broken"))
          : Promise.resolve(aclRules),
    });
    await auth.reload();
    const alice = client({ username: "alice" });
    assert.equal(auth.authorizePublish(alice, "a/1"), true);

    // Password file fine, ACL broken: neither changes.
    await Deno.writeTextFile(path, "");
    failAcl = true;
    await assert.rejects(auth.reload(), /acl\.yaml:1:1: broken/);
    assert.equal(auth.state.passwords!.size, 1);
    assert.equal(auth.authorizePublish(alice, "a/1"), true);

    // Both fine: both change, and cached per-client rules are dropped.
    failAcl = false;
    aclRules = rules({
      roles: new Map([["r", [{ effect: "allow", actions: ["publish"], topic: "b/#" } as const]]]),
      users: new Map([["alice", ["r"]]]),
    });
    await auth.reload();
    assert.equal(auth.state.passwords!.size, 0);
    assert.equal(auth.authorizePublish(alice, "a/1"), false);
    assert.equal(auth.authorizePublish(alice, "b/1"), true);
  });
});

Deno.test("FileAuth.reload() without an ACL loader names what is missing", async () => {
  const auth = new FileAuth({ aclFile: "x.yaml", allowAnonymous: true });
  await assert.rejects(auth.reload(), /Cannot read ACL file x\.yaml: no ACL loader/);
});
