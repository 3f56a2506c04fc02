/**
 * Prints, as markdown, every spec rule id ([MQTT-x.y.z-n]) named by a test and the tests that
 * name it, scanning test names in tests/ and src/. Run: `deno run --allow-read scripts/conformance_report.ts`.
 */
const ROOTS = ["tests", "src"];
const TEST_NAME = /Deno\.test\(\s*(?:\{\s*name:\s*)?(["'`])((?:\\.|(?!\1).)*)\1/g;
const RULE = /\[?(MQTT-\d+(?:\.\d+)*-\d+)/g;

async function* files(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) yield* files(path);
    else if (e.isFile && path.endsWith(".ts")) yield path;
  }
}

const byRule = new Map<string, string[]>();
let tests = 0;
for (const root of ROOTS) {
  for await (const file of files(root)) {
    const text = await Deno.readTextFile(file);
    for (const m of text.matchAll(TEST_NAME)) {
      tests++;
      const name = m[2];
      const ruleSet = new Set([...name.matchAll(RULE)].map((r) => r[1]));
      // A range such as [MQTT-3.3.2-15..18] names its first rule; list it as written.
      for (const rule of ruleSet) {
        const list = byRule.get(rule) ?? [];
        list.push(`${name} (${file})`);
        byRule.set(rule, list);
      }
    }
  }
}

const collator = (a: string, b: string) =>
  a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
console.log(`Test names scanned: ${tests}; spec rules named: ${byRule.size}\n`);
console.log("| rule | tests |\n| --- | --- |");
for (const rule of [...byRule.keys()].sort(collator)) {
  const names = byRule.get(rule)!;
  console.log(
    `| ${rule} | ${names.length}: ${
      names.slice(0, 3).map((n) => n.replaceAll("|", "\\|")).join("; ")
    }${names.length > 3 ? "; …" : ""} |`,
  );
}
