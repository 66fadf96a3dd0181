// "Did you mean": which typed name is taken for which, and which is too far from every one.

import { assertEquals } from "../helpers/assert.ts";
import { closestName, didYouMean, printAlike } from "../../lib/render/suggest.ts";

Deno.test("closestName forgives a typo or two by the word's length, in any case, and a prefix either way", () => {
  const cases: [string, string[], string | null][] = [
    ["plna", ["plan", "apply"], "plan"], // two letters swapped: one edit
    ["aply", ["plan", "apply"], "apply"], // one left out
    ["plen", ["plan", "apply"], "plan"], // one wrong
    ["PLNA", ["plan", "apply"], "plan"], // case does not count
    ["vn", ["vm", "router"], "vm"], // a short word still has one typo forgiven
    ["abcdef", ["abcxyz"], null], // three edits in six letters: too far
    ["abcdeg", ["abcxyz", "abcdef"], "abcdef"], // within a third, the closest
    ["routerr", ["rooter", "router"], "router"], // the closer, not the first
    ["win", ["win11", "router"], "win11"], // too far, but what it begins
    ["w", ["win11"], null], // one letter is no prefix to go by
    ["warning", ["enforce", "warn", "off"], "warn"], // too far, but it runs on past one
    ["offline-mode", ["enforce", "warn", "off"], null], // "off" is under half of it: no stem
    ["abcd", ["a", "b"], null], // one letter is no stem either
    ["xyz", ["plan", "apply"], null],
  ];
  for (const [word, candidates, expected] of cases) {
    assertEquals(closestName(word, candidates), expected, `${word} in ${candidates.join(" ")}`);
  }
});

Deno.test("didYouMean says the closest name, or nothing", () => {
  assertEquals(didYouMean("plna", ["plan"]), ` (did you mean "plan"?)`);
  assertEquals(didYouMean("xyz", ["plan"]), "");
});

Deno.test("closestName takes a name written another way (composed, full-width, another case) at any length", () => {
  // Edit distance counts UTF-16 units: "é" as e and an accent is two edits from "é", too far in
  // four letters, and a full-width name is every letter away.
  assertEquals(closestName("cafe\u0301", ["router", "caf\u00e9"]), "caf\u00e9");
  assertEquals(closestName("\uff57\uff49\uff4e\uff11\uff10", ["win10"]), "win10");
  assertEquals(closestName("cafe", ["caf\u00e9"]), "caf\u00e9"); // still a typo away, as before
  // The one written the same but for composition before one in another case.
  assertEquals(closestName("cafe\u0301", ["Caf\u00e9", "caf\u00e9"]), "caf\u00e9");
});

Deno.test("didYouMean writes both names escaped where they differ outside ASCII", () => {
  assertEquals(
    didYouMean("cafe\u0301", ["caf\u00e9"]),
    ' (did you mean "caf\u00e9"? that is "caf\\u00e9", this is "cafe\\u0301")',
  );
  // A Cyrillic "\u0456" for "i" reads the same.
  assertEquals(
    didYouMean("w\u0456n10", ["win10"]),
    ' (did you mean "win10"? that is "win10", this is "w\\u0456n10")',
  );
  // Where the difference is ASCII it shows: a name holding other letters is not escaped for it.
  assertEquals(didYouMean("caf\u00e9-vm", ["caf\u00e9-vn"]), ' (did you mean "caf\u00e9-vn"?)');
});

Deno.test("didYouMean escapes only where the names differ: a CJK name stays readable around it", () => {
  // A typed "式" for "试": the whole names as escapes told a reader of Chinese nothing.
  assertEquals(
    didYouMean("\u6d4b\u5f0f\u673a", ["\u6d4b\u8bd5\u673a", "gentoo"]),
    ' (did you mean "\u6d4b\u8bd5\u673a"? that is "\u6d4b\\u8bd5\u673a", this is "\u6d4b\\u5f0f\u673a")',
  );
  // A full-width typo of a CJK name: its digit alone is escaped.
  assertEquals(
    didYouMean("\u6d4b\u8bd5\u673a\uff11", ["\u6d4b\u8bd5\u673a1"]),
    ' (did you mean "\u6d4b\u8bd5\u673a1"? that is "\u6d4b\u8bd5\u673a1", this is "\u6d4b\u8bd5\u673a\\uff11")',
  );
  // A look-alike in a Latin name reads as before.
  assertEquals(
    didYouMean("w\u0456n10", ["win10"]),
    ' (did you mean "win10"? that is "win10", this is "w\\u0456n10")',
  );
});

Deno.test("didYouMean escapes a whole character where two names differ in the second half of a surrogate pair", () => {
  // U+1F600 and U+1F601 share their first UTF-16 unit: what differs is cut by code point.
  assertEquals(
    didYouMean("vm\u{1F600}", ["vm\u{1F601}"]),
    ' (did you mean "vm\u{1F601}"? that is "vm\\ud83d\\ude01", this is "vm\\ud83d\\ude00")',
  );
});

Deno.test("printAlike() flags names that show alike, not names that show apart", () => {
  const alike = (a: string, b: string) => printAlike([a, b]).size === 2;
  // Shown alike: a look-alike letter of another script (Cyrillic, Greek for Latin; a Katakana
  // "\u30ed" for a Han "\u53e3"), another width, another composition, a character shown as nothing.
  assertEquals(alike("win10", "w\u0456n10"), true);
  assertEquals(alike("pc-\u03bfne", "pc-\u043ene"), true);
  assertEquals(alike("\u5165\u53e3", "\u5165\u30ed"), true);
  assertEquals(alike("win10", "\uff57in10"), true);
  assertEquals(alike("caf\u00e9", "cafe\u0301"), true);
  assertEquals(alike("win10", "win10\u200d"), true);
  assertEquals(alike("win10", "win\u200b10"), true);
  assertEquals(alike("win10", "win\u202e10"), true);
  assertEquals(alike("win10", "win10\u2800"), true);
  assertEquals(alike("win10", "win10\u00a0"), true);
  // Shown apart, where the escaped form beside each told nothing more: another case (an ASCII
  // name's escape is itself), one Han character for another, one emoji for another.
  assertEquals(alike("Win10", "win10"), false);
  assertEquals(alike("WIN10", "win10"), false);
  assertEquals(alike("\u6d4b\u8bd5", "\u6d4b\u9a8c"), false);
  assertEquals(alike("vm\u{1F600}", "vm\u{1F601}"), false);
});
