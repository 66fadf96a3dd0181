/**
 * "Did you mean" for names a user types: commands, options, VM names on the command line and in
 * the config.
 *
 * @module
 */

import { asciiQuote } from "./terminal.ts";

/** Edit distance between `a` and `b` (insertions, deletions, substitutions, transpositions). */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, d[i - 2]![j - 2]! + 1);
      }
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The candidate `word` was most likely meant to be: the closest within a third of its length
 * (at least 1, so one typo is always forgiven), or one it is a case-insensitive prefix of, or one
 * that is a prefix of it at least half its length; `null` when none is close.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(closestName("plna", ["plan", "apply"]), "plan");
 * assertEquals(closestName("wn11", ["win11", "router"]), "win11");
 * assertEquals(closestName("warning", ["enforce", "warn", "off"]), "warn");
 * assertEquals(closestName("xyz", ["plan", "apply"]), null);
 * ```
 */
export function closestName(word: string, candidates: readonly string[]): string | null {
  // The same name written another way (é as one character or as e and an accent, a full-width
  // letter, another case) shows the same, at any length: edit distance counts the code units.
  const composed = word.normalize("NFC");
  const folded = fold(word);
  const same = candidates.find((c) => c.normalize("NFC") === composed) ??
    candidates.find((c) => fold(c) === folded);
  if (same !== undefined) return same;
  const lower = word.toLowerCase();
  let best: string | null = null;
  let bestDistance = Math.max(1, Math.floor(word.length / 3));
  for (const candidate of candidates) {
    const d = distance(lower, candidate.toLowerCase());
    if (d <= bestDistance && (best === null || d < distance(lower, best.toLowerCase()))) {
      best = candidate;
      bestDistance = d;
    }
  }
  if (best !== null) return best;
  if (lower.length < 2) return null;
  return candidates.find((c) => c.toLowerCase().startsWith(lower)) ??
    // A word that runs on past a candidate ("warning" for "warn") meant it, when the candidate is
    // at least half of it: a short name is not every word's stem.
    candidates.find((c) => {
      const name = c.toLowerCase();
      return name.length >= 2 && name.length * 2 >= lower.length && lower.startsWith(name);
    }) ?? null;
}

/** `text` in compatibility form (NFKC: composed, full-width and ligatures made plain), lower case. */
function fold(text: string): string {
  return text.normalize("NFKC").toLowerCase();
}

/**
 * `did you mean "plan"?`, or `null` when no candidate is close to `word`. Where the two differ
 * in a character outside ASCII, which may look like another one or like none (`café` composed and
 * decomposed, a Cyrillic `і` for `i`), both are written again with what differs escaped, or the
 * question shows two names that read the same.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(suggestion("wn11", ["win11"]), 'did you mean "win11"?');
 * assertEquals(
 *   suggestion("cafe\u0301", ["caf\u00e9"]),
 *   'did you mean "caf\u00e9"? that is "caf\\u00e9", this is "cafe\\u0301"',
 * );
 * assertEquals(suggestion("xyz", ["plan"]), null);
 * ```
 */
export function suggestion(word: string, candidates: readonly string[]): string | null {
  const name = closestName(word, candidates);
  if (name === null) return null;
  if (!differsOutsideAscii(word, name)) return `did you mean "${name}"?`;
  return `did you mean "${name}"? that is ${quoteDiffering(name, word)}, this is ${
    quoteDiffering(word, name)
  }`;
}

/**
 * `text` quoted as JSON, with the characters outside ASCII escaped ({@link asciiQuote}) where it
 * differs from `other` only (their common start and end cut, by code point): what the two share
 * reads the same in both, and a name in another script stays readable around the escape
 * (`"测\u8bd5机"`, not `"\u6d4b\u8bd5\u673a"`).
 */
function quoteDiffering(text: string, other: string): string {
  const { head, middle, tail } = splitCommon(text, other);
  const plain = (part: string) => JSON.stringify(part).slice(1, -1);
  return `"${plain(head)}${asciiQuote(middle[0]).slice(1, -1)}${plain(tail)}"`;
}

/**
 * `a` and `b` cut by code point into what they share at their start (`head`), what differs
 * (`middle`: `a`'s, then `b`'s) and what they share after that at their end (`tail`).
 */
function splitCommon(
  a: string,
  b: string,
): { head: string; middle: [string, string]; tail: string } {
  const [x, y] = [[...a], [...b]];
  let start = 0;
  while (start < x.length && start < y.length && x[start] === y[start]) start++;
  let end = 0;
  while (end < x.length - start && end < y.length - start && x.at(-1 - end) === y.at(-1 - end)) {
    end++;
  }
  return {
    head: x.slice(0, start).join(""),
    middle: [x.slice(start, x.length - end).join(""), y.slice(start, y.length - end).join("")],
    tail: x.slice(x.length - end).join(""),
  };
}

/**
 * The `suggestion` of a candidate that is `word` written another way (another case or
 * width, a look-alike letter), never one a typo away: a fleet's host names are numbered, and
 * "hv3" asked `did you mean "hv1"?` names another machine.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(sameNameSuggestion("HV1", ["hv1", "hv2"]), 'did you mean "hv1"?');
 * assertEquals(sameNameSuggestion("hv3", ["hv1", "hv2"]), null);
 * ```
 */
export function sameNameSuggestion(word: string, candidates: readonly string[]): string | null {
  const name = closestName(word, candidates);
  if (name === null || (fold(name) !== fold(word) && !differsOutsideAscii(word, name))) return null;
  return suggestion(word, [name]);
}

/**
 * ` (did you mean "plan"?)`, or `""` when no candidate is close to `word`; a name told apart from
 * `word` by characters outside ASCII is followed by both with what differs escaped
 * (` (did you mean "café"? that is "caf\u00e9", this is "cafe\u0301")`).
 */
export function didYouMean(word: string, candidates: readonly string[]): string {
  const hint = suggestion(word, candidates);
  return hint === null ? "" : ` (${hint})`;
}

/**
 * The names among `names` that print like another of them: the same written another way (another
 * width, composed or not), or told apart only by characters that show nothing (joiners,
 * presentation selectors, which the terminal boundary keeps, and the zero-width and bidirectional
 * controls it escapes) or by one blank, or by one character for one of another script or one outside ASCII for
 * one inside (a Cyrillic `і` for `i`, a Katakana `ロ` for a Han `口`). Not a name in another case,
 * nor one with another character of the same script (`测试`, `测验`): those show apart, and an
 * ASCII name's escaped form is itself. Each such name is to be shown with its escaped form beside
 * it ({@link asciiQuote}).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(printAlike(["win10", "w\u0456n10", "gentoo"]), new Set(["win10", "w\u0456n10"]));
 * assertEquals(printAlike(["win10", "win10\u200d", "win11"]), new Set(["win10", "win10\u200d"]));
 * assertEquals(printAlike(["win10", "Win10", "\u6d4b\u8bd5", "\u6d4b\u9a8c"]), new Set());
 * ```
 */
export function printAlike(names: readonly string[]): Set<string> {
  const alike = new Set<string>();
  for (const [i, a] of names.entries()) {
    for (const b of names.slice(i + 1)) {
      if (a !== b && readsAs(a, b)) alike.add(a).add(b);
    }
  }
  return alike;
}

/**
 * `name` as a heading shows it: followed by its escaped form ({@link asciiQuote}) where it is
 * among `alike` ({@link printAlike}), so two names that print alike read apart.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const alike = printAlike(["win10", "w\u0456n10"]);
 * assertEquals(nameApart("w\u0456n10", alike), 'w\u0456n10 ("w\\u0456n10")');
 * assertEquals(nameApart("gentoo", alike), "gentoo");
 * ```
 */
export function nameApart(name: string, alike: ReadonlySet<string>): string {
  return alike.has(name) ? `${name} (${asciiQuote(name)})` : name;
}

/** Characters that show nothing: default-ignorable (joiners, selectors, bidirectional controls). */
const INVISIBLE = /\p{Default_Ignorable_Code_Point}/gv;

/**
 * Scripts whose letters another of them draws alike. Two characters outside ASCII and outside
 * them all (two emoji, two Thai letters) count as of one script: they show apart.
 */
const SCRIPTS = [
  "Latin",
  "Greek",
  "Cyrillic",
  "Armenian",
  "Cherokee",
  "Han",
  "Hiragana",
  "Katakana",
]
  .map((script) => new RegExp(`^\\p{Script=${script}}$`, "v"));

/** Whether `a` and `b` (not equal) may read as one name on a terminal ({@link printAlike}). */
function readsAs(a: string, b: string): boolean {
  const shown = (text: string) => text.replace(INVISIBLE, "").normalize("NFKC");
  const [x, y] = [shown(a), shown(b)];
  if (x === y) return true;
  const [c, d] = splitCommon(x, y).middle;
  // A blank more shows as nothing at a line's end, or as a space where one is expected.
  if ((c === "" || d === "") && /^[\p{White_Space}\u2800]$/v.test(c! + d!)) return true;
  if ([...c!].length !== 1 || [...d!].length !== 1) return false;
  // deno-lint-ignore no-control-regex
  const ascii = (char: string) => /^[\x00-\x7f]$/.test(char);
  if (ascii(c!) !== ascii(d!)) return true;
  const script = (char: string) => SCRIPTS.findIndex((re) => re.test(char));
  return script(c!) !== script(d!);
}

/** Whether what differs between `a` and `b`, their common start and end cut, holds a non-ASCII character. */
function differsOutsideAscii(a: string, b: string): boolean {
  // deno-lint-ignore no-control-regex
  return splitCommon(a, b).middle.some((m) => /[^\x00-\x7f]/.test(m));
}
