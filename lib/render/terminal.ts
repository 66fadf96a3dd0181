/**
 * The terminal boundary: text read from a captured tree, lspci or libvirt (driver and slot names,
 * device names, domain names, error messages) may hold control characters that move the cursor,
 * retitle the window, rewrite what was printed or reorder it (bidirectional overrides). Every
 * line the CLI prints passes {@link terminalSafe} once, in `main`, so no renderer has to remember.
 *
 * @module
 */

import { PAINTER_SEQUENCES } from "./colors.ts";

/**
 * Control characters (C0 but tab and newline, DEL, C1), line and paragraph separators, and
 * Unicode's default-ignorable characters, which show nothing or reorder what a line shows: the
 * bidirectional controls (embeddings, overrides, isolates, the ALM, LRM and RLM marks), the soft
 * hyphen, zero-width space, word joiner and invisible operators, zero-width no-break space, the
 * combining grapheme joiner, the Hangul fillers, Mongolian and plain variation selectors, the tag
 * characters that carry hidden ASCII, and the code points Unicode reserves as default-ignorable
 * (U+2065, U+FFF0 to U+FFF8), which a terminal shows as nothing too. A name pasted from a web page
 * may carry them: `VM "win10" is not defined (did you mean "win10"?)` told nothing. Zero-width
 * joiners (U+200C, U+200D) and the text and emoji presentation selectors (U+FE0E, U+FE0F) stay, as
 * Persian and Indic text and emoji need them. Global: for `replace` only (a global expression's
 * `test` and `exec` carry their position from one call to the next).
 */
export const UNSAFE_ON_TERMINAL: RegExp =
  /[[\p{Cc}\p{Default_Ignorable_Code_Point}\u2028\u2029]--[\t\n\u200c\u200d\ufe0e\ufe0f]]/gv;

/** The longest painter sequence (`\x1b[22m`). */
const LONGEST_SEQUENCE = Math.max(...[...PAINTER_SEQUENCES].map((s) => s.length));

/**
 * `text` with every control character written as a `\uXXXX` escape (valid inside a JSON string,
 * so JSON output keeps its meaning), except tab, newline and, when `color` is on, the painter's
 * own colour sequences. Escaped text holds no control character, so a second pass changes
 * nothing.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(terminalSafe("vfio\x1b]0;x\x07\r\n", false), "vfio\\u001b]0;x\\u0007\\u000d\n");
 * assertEquals(terminalSafe("\x1b[31mred\x1b[39m \x1b[2J", true), "\x1b[31mred\x1b[39m \\u001b[2J");
 * assertEquals(terminalSafe("gpu\u200f1\u061c", false), "gpu\\u200f1\\u061c");
 * ```
 */
export function terminalSafe(text: string, color: boolean): string {
  return text.replace(UNSAFE_ON_TERMINAL, (char, offset: number) => {
    if (color && char === "\x1b") {
      const end = text.indexOf("m", offset);
      if (end > offset && end - offset < LONGEST_SEQUENCE) {
        if (PAINTER_SEQUENCES.has(text.slice(offset, end + 1))) return char;
      }
    }
    // One escape per UTF-16 unit: a tag character is a surrogate pair, as JSON writes it.
    return char.split("").map((unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, "0")}`)
      .join("");
  });
}

/**
 * `text` as one cell of a table row or one field of a line: {@link terminalSafe}, with tab and
 * newline escaped too. A slot or driver name read from a captured tree is a file name, which may
 * hold both: kept, a newline started what read as another device's row.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(oneLine("PCIE1\n0000:99:00.0\t1", false), "PCIE1\\u000a0000:99:00.0\\u00091");
 * ```
 */
export function oneLine(text: string, color: boolean): string {
  return terminalSafe(text, color).replace(
    /[\t\n]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/**
 * `text` quoted as JSON, every character outside printable ASCII written as a `\uXXXX` escape:
 * for a value that must be ASCII, or a name shown beside one it looks like, where `"10de:1b8О"`
 * (a Cyrillic `О`) would read as valid.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(asciiQuote("10de:1b8\u041e"), '"10de:1b8\\u041e"');
 * ```
 */
export function asciiQuote(text: string): string {
  return JSON.stringify(text).replace(
    /[^\x20-\x7e]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
