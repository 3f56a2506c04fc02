import assert from "node:assert/strict";
import {
  formatPasswordHash,
  hashPassword,
  isWeakerThan,
  parsePasswordHash,
  verifyPassword,
} from "./hash.ts";

Deno.test("hashPassword() makes a salted PBKDF2-SHA512 hash that verifyPassword() accepts", async () => {
  const a = await hashPassword("s3cret", { iterations: 1000 });
  const b = await hashPassword("s3cret", { iterations: 1000 });
  assert.match(a, /^\$pbkdf2-sha512\$i=1000\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{86}$/);
  assert.notEqual(a, b, "two hashes of one password share a salt");
  assert.equal(await verifyPassword("s3cret", a), true);
  assert.equal(await verifyPassword("s3cret!", a), false);
  assert.equal(await verifyPassword("", a), false);
  assert.equal(await verifyPassword(new TextEncoder().encode("s3cret"), a), true);
});

Deno.test("hashPassword() makes scrypt hashes with the cost in the string", async () => {
  const h = await hashPassword("pw", { algorithm: "scrypt", scryptLogN: 10 });
  assert.match(h, /^\$scrypt\$ln=10,r=8,p=1\$/);
  assert.equal(await verifyPassword("pw", h), true);
  assert.equal(await verifyPassword("pW", h), false);
});

Deno.test("verifyPassword() agrees with the PBKDF2-HMAC-SHA512 known answer (password, salt, c=1)", async () => {
  const expected =
    "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce";
  const hash = new Uint8Array(expected.match(/../g)!.map((h) => parseInt(h, 16)));
  const salt = new TextEncoder().encode("salt");
  const known = { algorithm: "pbkdf2-sha512", iterations: 1, salt, hash } as const;
  assert.equal(await verifyPassword("password", known), true);
  assert.equal(await verifyPassword("passwore", known), false);
  const round = parsePasswordHash(
    formatPasswordHash({ ...known, salt: new TextEncoder().encode("saltsalt") }),
  );
  assert.deepEqual(round.hash, hash);
});

Deno.test("parsePasswordHash() rejects malformed and out-of-bounds hashes without echoing them", async (t) => {
  const good = await hashPassword("x", { iterations: 1000 });
  const [, , , salt, hash] = good.split("$");
  const cases: [string, RegExp][] = [
    ["plaintext", /expected \$algorithm/],
    ["$md5$x$y$z", /parameter "x"/],
    [`$md5$i=1$${salt}$${hash}`, /unknown algorithm "md5"/],
    [`$pbkdf2-sha512$i=0$${salt}$${hash}`, /i must be an integer from 1/],
    [`$pbkdf2-sha512$i=99999999999$${salt}$${hash}`, /i must be an integer/],
    [`$pbkdf2-sha512$i=1000,x=1$${salt}$${hash}`, /unknown parameter x/],
    [`$pbkdf2-sha512$i=1000$${salt}!$${hash}`, /salt is not base64/],
    [`$pbkdf2-sha512$i=1000$QUJD$${hash}`, /salt shorter/],
    [`$pbkdf2-sha512$i=1000$${salt}$QUJD`, /hash must be/],
    [`$scrypt$ln=40,r=8,p=1$${salt}$${hash}`, /ln must be/],
    [`$scrypt$ln=10,r=8$${salt}$${hash}`, /p must be/],
  ];
  for (const [text, reason] of cases) {
    await t.step(text.slice(0, 40), () => {
      assert.throws(() => parsePasswordHash(text), (err: Error) => {
        assert.ok(err instanceof SyntaxError);
        assert.match(err.message, reason);
        assert.ok(!err.message.includes(hash), "the message echoes the hash");
        return true;
      });
    });
  }
});

Deno.test("hashPassword() refuses cost parameters out of range", async () => {
  await assert.rejects(hashPassword("x", { iterations: 0 }), RangeError);
  await assert.rejects(hashPassword("x", { algorithm: "scrypt", scryptLogN: 30 }), RangeError);
});

Deno.test("isWeakerThan() flags hashes cheaper than the configured cost", async () => {
  const cheap = parsePasswordHash(await hashPassword("x", { iterations: 1000 }));
  assert.equal(isWeakerThan(cheap, { iterations: 2000 }), true);
  assert.equal(isWeakerThan(cheap, { iterations: 1000 }), false);
});
