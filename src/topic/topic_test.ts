import assert from "node:assert/strict";
import {
  levelsMatch,
  parseTopicFilter,
  splitFilterMatches,
  topicMatches,
  topicNameError,
} from "./mod.ts";

Deno.test("topicNameError() accepts names with empty levels, spaces, '$' and Unicode (4.7.3)", () => {
  for (
    const name of [
      "a",
      "/",
      "a//b",
      "/a",
      "a/",
      "//",
      " ",
      "a b/c",
      "$SYS/x",
      "τόπος/ü",
      "a\u{1F600}",
    ]
  ) {
    assert.equal(topicNameError(name), undefined, name);
  }
});

Deno.test("topicNameError() refuses empty names and names with '+' or '#' anywhere [MQTT-3.3.2-2] [MQTT-4.7.3-1]", () => {
  assert.equal(topicNameError(""), "topic name is empty");
  for (const name of ["+", "#", "a/+", "a/#", "a+", "a#b", "+/a", "sport/tennis#"]) {
    assert.equal(topicNameError(name), "topic name contains a wildcard", name);
  }
});

Deno.test("topicNameError() applies the configured length and level limits", () => {
  const limits = { maxLength: 6, maxLevels: 3 };
  assert.equal(topicNameError("abcdef", limits), undefined);
  assert.equal(topicNameError("abcdefg", limits), "topic name longer than 6");
  assert.equal(topicNameError("a/b/c", limits), undefined);
  assert.equal(topicNameError("a/b/c/", limits), "topic name has more than 3 levels");
});

Deno.test("parseTopicFilter() accepts '#' only as the whole last level and '+' only as a whole level [MQTT-4.7.1-1] [MQTT-4.7.1-2]", () => {
  const valid: [string, boolean][] = [
    ["#", true],
    ["+", true],
    ["sport/#", true],
    ["sport/+/player1", true],
    ["+/+", true],
    ["/+", true],
    ["+/tennis/#", true],
    ["sport", false],
    ["a//b", false],
    ["/", false],
    ["$SYS/#", true],
  ];
  for (const [filter, hasWildcard] of valid) {
    assert.deepEqual(parseTopicFilter(filter), { filter, hasWildcard }, filter);
  }
  const invalid: [string, string][] = [
    ["", "topic filter is empty"],
    ["sport/tennis#", "a wildcard does not occupy a whole level"],
    ["sport/tennis/#/ranking", "'#' is not the last level"],
    ["#/", "'#' is not the last level"],
    ["sport+", "a wildcard does not occupy a whole level"],
    ["++", "a wildcard does not occupy a whole level"],
    ["a/##", "a wildcard does not occupy a whole level"],
    ["+a/b", "a wildcard does not occupy a whole level"],
  ];
  for (const [filter, why] of invalid) assert.equal(parseTopicFilter(filter), why, filter);
});

Deno.test("parseTopicFilter() splits '$share/{ShareName}/{filter}' and refuses empty or wildcard share names and missing filters [MQTT-4.8.2-1] [MQTT-4.8.2-2]", () => {
  assert.deepEqual(parseTopicFilter("$share/g/a/+"), {
    filter: "a/+",
    shareGroup: "g",
    hasWildcard: true,
  });
  assert.deepEqual(parseTopicFilter("$share/consumer-1/#"), {
    filter: "#",
    shareGroup: "consumer-1",
    hasWildcard: true,
  });
  assert.deepEqual(parseTopicFilter("$share/g//"), {
    filter: "/",
    shareGroup: "g",
    hasWildcard: false,
  });
  assert.equal(
    parseTopicFilter("$share/g"),
    "shared subscription has no filter after the share name",
  );
  assert.equal(parseTopicFilter("$share//a"), "shared subscription has an empty share name");
  assert.equal(parseTopicFilter("$share/g+/a"), "share name contains a wildcard");
  assert.equal(parseTopicFilter("$share/#/a"), "share name contains a wildcard");
  assert.equal(parseTopicFilter("$share/g/"), "shared subscription has an empty filter");
  assert.equal(parseTopicFilter("$share/g/a/#/b"), "'#' is not the last level");
  // Not the shared prefix: an ordinary filter starting with '$'.
  assert.deepEqual(parseTopicFilter("$shared/a"), { filter: "$shared/a", hasWildcard: false });
  assert.deepEqual(parseTopicFilter("$share"), { filter: "$share", hasWildcard: false });
});

Deno.test("parseTopicFilter() applies the configured length and level limits", () => {
  const limits = { maxLength: 8, maxLevels: 2 };
  assert.deepEqual(parseTopicFilter("a/+", limits), { filter: "a/+", hasWildcard: true });
  assert.equal(parseTopicFilter("a/b/c", limits), "topic filter has more than 2 levels");
  assert.equal(parseTopicFilter("abcdefghi", limits), "topic filter longer than 8");
});

Deno.test("topicMatches() follows the spec's matching rules: '#' includes the parent, '+' matches one possibly empty level (4.7.1.2, 4.7.1.3)", () => {
  const cases: [string, string, boolean][] = [
    ["sport/#", "sport", true],
    ["sport/#", "sport/", true],
    ["sport/#", "sport/tennis/player1/ranking", true],
    ["sport/#", "sports", false],
    ["sport/tennis/#", "sport/tennis", true],
    ["#", "a", true],
    ["#", "/", true],
    ["sport/+", "sport/", true],
    ["sport/+", "sport", false],
    ["sport/+", "sport/tennis/player1", false],
    ["sport/+/player1", "sport/tennis/player1", true],
    ["+", "sport", true],
    ["+", "/finance", false],
    ["+/+", "/finance", true],
    ["/+", "/finance", true],
    ["+/+", "/", true],
    ["/#", "/", true],
    ["a//b", "a//b", true],
    ["a/+/b", "a//b", true],
    ["a//b", "a/b", false],
    ["a/b", "a/b/", false],
    ["/a", "a", false],
    ["ACCOUNTS", "Accounts", false],
    ["caf\u00e9", "cafe\u0301", false],
    ["sport/tennis", "sport/tennis", true],
  ];
  for (const [filter, topic, want] of cases) {
    assert.equal(topicMatches(filter, topic), want, `${filter} vs ${topic}`);
  }
});

Deno.test("topicMatches() never matches '$' topics with a first-level wildcard [MQTT-4.7.2-1]", () => {
  assert.equal(topicMatches("#", "$SYS/x"), false);
  assert.equal(topicMatches("+/x", "$SYS/x"), false);
  assert.equal(topicMatches("+", "$SYS"), false);
  assert.equal(topicMatches("$SYS/#", "$SYS/x"), true);
  assert.equal(topicMatches("$SYS/#", "$SYS"), true);
  assert.equal(topicMatches("$SYS/+", "$SYS/x"), true);
  assert.equal(topicMatches("a/#", "a/$x"), true, "'$' only matters at the first level");
  assert.equal(topicMatches("+/x", "a$/x"), true);
});

Deno.test("splitFilterMatches(), walking the topic in place, agrees with matching on split levels for every filter and topic of up to 4 levels (4.7)", () => {
  const words = ["", "a", "b", "ab", "$s"];
  const combos = (alphabet: string[], n: number): string[][] =>
    n === 0 ? [[]] : combos(alphabet, n - 1).flatMap((c) => alphabet.map((w) => [...c, w]));
  const topics: string[][] = [];
  for (let n = 1; n <= 4; n++) topics.push(...combos(words, n));
  const filters: string[][] = [];
  for (let n = 1; n <= 3; n++) {
    for (const c of combos([...words, "+"], n)) {
      filters.push(c, [...c, "#"]);
    }
  }
  filters.push(["#"]);
  let checked = 0;
  let matched = 0;
  for (const f of filters) {
    for (const t of topics) {
      const want = levelsMatch(f, t);
      assert.equal(splitFilterMatches(f, t.join("/")), want, `${f.join("/")} vs ${t.join("/")}`);
      checked++;
      if (want) matched++;
    }
  }
  assert.ok(checked > 100_000 && matched > 1_000, `${checked} pairs, ${matched} matching`);
});
