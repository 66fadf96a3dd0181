/**
 * The order of the cases in each round of an alternating benchmark: the first round as listed,
 * every later one shuffled with a fixed seed. A process's time depends on the one run before it
 * (in one fixed-order run of `bench/whole_process.ts` the same `groups` took 79 and 67 ms by its
 * place), so no case keeps one place and neighbour; the same seed gives every invocation the same
 * orders.
 *
 * @module
 */

/** `rounds` orders of `cases`: the first as given, the others shuffled (seeded). */
export function roundOrders<T>(cases: readonly T[], rounds: number): T[][] {
  const next = seeded(15);
  return Array.from(
    { length: rounds },
    (_, round) => round === 0 ? [...cases] : shuffled(cases, next),
  );
}

/** `items` in an order drawn from `next` (uniform in [0, 1)): Fisher-Yates. */
function shuffled<T>(items: readonly T[], next: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** A seeded generator of numbers in [0, 1) (mulberry32). */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The median of `xs` (the mean of the middle two for an even count), as every benchmark reports. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
