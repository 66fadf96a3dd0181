/**
 * "Did you mean" for names a user types: commands, options, VM names on the command line and in
 * the config.
 *
 * @module
 */

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

/** ` (did you mean "plan"?)`, or `""` when no candidate is close to `word`. */
export function didYouMean(word: string, candidates: readonly string[]): string {
  const name = closestName(word, candidates);
  return name === null ? "" : ` (did you mean "${name}"?)`;
}
