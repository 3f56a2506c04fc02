import assert from "node:assert/strict";
import { hashPassword, verifyPassword } from "./hash.ts";
import {
  loadPasswordFile,
  parsePasswordFile,
  PasswordFileError,
  updatePasswordText,
} from "./password_file.ts";

const HASH = await hashPassword("pw", { iterations: 1000 });

function fileError(fn: () => unknown): PasswordFileError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof PasswordFileError, `expected PasswordFileError, got ${error}`);
    return error;
  }
  assert.fail("expected a PasswordFileError");
}

Deno.test("parsePasswordFile() reads user:hash lines and skips comments and blank lines", async () => {
  const table = parsePasswordFile(
    `# users\n\nalice:${HASH}\r\n  # indented comment\nbob smith:${HASH}  \n`,
    "pw.txt",
  );
  assert.deepEqual([...table.keys()], ["alice", "bob smith"]);
  assert.equal(table.get("alice")!.line, 3);
  assert.equal(await verifyPassword("pw", table.get("bob smith")!.hash), true);
});

Deno.test("parsePasswordFile() reports bad lines at file:line:column", async (t) => {
  const cases: [string, string, RegExp][] = [
    ["no colon", `alice:${HASH}\nbob\n`, /^pw\.txt:2:1: Expected username:hash/],
    ["empty user", `:${HASH}\n`, /^pw\.txt:1:1: The user name is empty/],
    [
      "duplicate",
      `a:${HASH}\nb:${HASH}\na:${HASH}\n`,
      /^pw\.txt:3:1: User "a" is listed twice \(first on line 1\)/,
    ],
    [
      "plaintext",
      "carol:hunter2\n",
      /^pw\.txt:1:7: The password of "carol" is not a hash; plaintext/,
    ],
    [
      "bad hash",
      "dave:$pbkdf2-sha512$i=0$AAAAAAAAAAA$BBBB\n",
      /^pw\.txt:1:6: Cannot parse password hash/,
    ],
    ["spaces", ` eve:${HASH}\n`, /^pw\.txt:1:1: A user name cannot start or end with spaces/],
  ];
  for (const [name, text, expected] of cases) {
    await t.step(name, () => {
      const err = fileError(() => parsePasswordFile(text, "pw.txt"));
      assert.match(err.message, expected);
      assert.equal(err.file, "pw.txt");
      assert.ok(!err.message.includes("hunter2"), "a plaintext password is echoed");
    });
  }
});

Deno.test("loadPasswordFile() names the file when it cannot be read", async () => {
  await assert.rejects(loadPasswordFile("/nonexistent/pw.txt"), (err: Error) => {
    assert.ok(err instanceof PasswordFileError);
    assert.equal(err.message, "/nonexistent/pw.txt: Cannot read password file: no such file");
    return true;
  });
});

Deno.test("updatePasswordText() adds, replaces and deletes one user and keeps the other lines", () => {
  const start = "# header\nalice:$a\nbob:$b\n";
  assert.deepEqual(updatePasswordText(start, "carol", "$c"), {
    text: "# header\nalice:$a\nbob:$b\ncarol:$c\n",
    existed: false,
  });
  assert.deepEqual(updatePasswordText(start, "alice", "$new"), {
    text: "# header\nalice:$new\nbob:$b\n",
    existed: true,
  });
  assert.deepEqual(updatePasswordText(start, "alice", undefined), {
    text: "# header\nbob:$b\n",
    existed: true,
  });
  assert.deepEqual(updatePasswordText("", "x", "$x"), { text: "x:$x\n", existed: false });
  assert.deepEqual(updatePasswordText("#alice:$a\n", "#alice", undefined), {
    text: "#alice:$a\n",
    existed: false,
  });
});
