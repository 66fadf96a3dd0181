// "Did you mean": which typed name is taken for which, and which is too far from every one.

import { assertEquals } from "../helpers/assert.ts";
import { closestName, didYouMean } from "../../lib/render/suggest.ts";

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
