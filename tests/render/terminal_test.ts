/**
 * `terminalSafe()`: every line the CLI prints passes it once. Control characters, DEL, C1
 * controls, line and paragraph separators, Unicode's bidirectional controls and the characters
 * that show nothing come out as `\uXXXX`; with colour on, only the painter's own sequences pass.
 */

import { assertEquals } from "../helpers/assert.ts";
import { terminalSafe } from "../../lib/render/terminal.ts";

Deno.test("terminalSafe() escapes DEL, the separators and every bidirectional control", () => {
  const cases: [string, string][] = [
    ["a\x7fb", "a\\u007fb"],
    ["a\u2028b\u2029c", "a\\u2028b\\u2029c"],
    ["\u202aL\u202bR\u202cP\u202dO\u202eE", "\\u202aL\\u202bR\\u202cP\\u202dO\\u202eE"],
    ["\u2066i\u2067r\u2068f\u2069p", "\\u2066i\\u2067r\\u2068f\\u2069p"],
  ];
  for (const [text, expected] of cases) assertEquals(terminalSafe(text, false), expected, text);
});

Deno.test("terminalSafe() with colour lets only the painter's own sequences through", () => {
  // Conceal (8) hides what follows; a 24-bit colour is longer than any of the painter's.
  for (const sequence of ["\x1b[8m", "\x1b[38;2;255;0;0m", "\x1b[5m"]) {
    assertEquals(
      terminalSafe(`${sequence}text`, true),
      `\\u001b${sequence.slice(1)}text`,
      JSON.stringify(sequence),
    );
  }
  assertEquals(terminalSafe("\x1b[1mbold\x1b[22m", true), "\x1b[1mbold\x1b[22m");
});

Deno.test("terminalSafe() shows the characters that show nothing, and keeps the joiners", () => {
  const cases: [string, string][] = [
    ["win10\u200b", "win10\\u200b"],
    ["gen\xadtoo", "gen\\u00adtoo"],
    ["\ufeffvm\u2060x\u2062y", "\\ufeffvm\\u2060x\\u2062y"],
    // Zero-width non-joiner and joiner: Persian text and emoji sequences need them.
    [
      "\u0645\u06cc\u200c\u0631\u0648\u0645 \u{1f468}\u200d\u{1f4bb}",
      "\u0645\u06cc\u200c\u0631\u0648\u0645 \u{1f468}\u200d\u{1f4bb}",
    ],
  ];
  for (const [text, expected] of cases) assertEquals(terminalSafe(text, false), expected, text);
});

Deno.test("terminalSafe() shows the other default-ignorable characters, a tag as its surrogates", () => {
  const cases: [string, string][] = [
    // Tag characters carry hidden ASCII ("win10" then tags "g", "p", "u"), as JSON escapes them.
    ["win10\u{e0067}\u{e0070}\u{e0075}", "win10\\udb40\\udc67\\udb40\\udc70\\udb40\\udc75"],
    ["vm\u034fx\u3164y\u115fz", "vm\\u034fx\\u3164y\\u115fz"],
    ["a\u180eb\ufe00c\u206ad", "a\\u180eb\\ufe00c\\u206ad"],
    // The emoji presentation selector stays: "\u2764\ufe0f" is the red heart.
    ["\u2764\ufe0f vm", "\u2764\ufe0f vm"],
  ];
  for (const [text, expected] of cases) assertEquals(terminalSafe(text, false), expected, text);
  // Escaped once, never twice.
  assertEquals(terminalSafe(terminalSafe("x\u{e0041}", false), false), "x\\udb40\\udc41");
});

Deno.test("terminalSafe() shows the code points Unicode reserves as default-ignorable", () => {
  // Unassigned, yet terminals show them as nothing: "win10\u2065" printed as "win10".
  const cases: [string, string][] = [
    ["win10\u2065", "win10\\u2065"],
    ["gpu\ufff0x\ufff8", "gpu\\ufff0x\\ufff8"],
  ];
  for (const [text, expected] of cases) assertEquals(terminalSafe(text, false), expected, text);
  for (let point = 0xfff0; point <= 0xfff8; point++) {
    const char = String.fromCodePoint(point);
    assertEquals(terminalSafe(char, false), `\\u${point.toString(16)}`);
  }
});
