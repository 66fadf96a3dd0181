/**
 * The alternating benchmarks run each round in another order (`bench/rounds.ts`), so that no
 * command's figure carries the effect of one place in the round.
 */

import { assertEquals, assertOk } from "../helpers/assert.ts";
import { median, roundOrders } from "../../bench/rounds.ts";

Deno.test("every round runs each case once, the first as listed, the others in seeded orders", () => {
  const cases = ["plan", "floor", "groups", "empty", "lspci", "seed", "baseline"];
  const orders = roundOrders(cases, 12);
  assertEquals(orders.length, 12);
  assertEquals(orders[0], cases);
  for (const order of orders) assertEquals([...order].sort(), [...cases].sort());
  // Not one fixed order: the case before "groups" changes from round to round.
  const before = new Set(orders.map((o) => o[o.indexOf("groups") - 1] ?? "(first)"));
  assertOk(before.size > 2, [...before].join(" "));
  // The same orders at every invocation, so a run can be repeated.
  assertEquals(roundOrders(cases, 12), orders);
});

Deno.test("both benchmarks report one median: the middle, or the mean of the middle two", () => {
  assertEquals(median([3, 1, 2]), 2);
  assertEquals(median([4, 1, 3, 2]), 2.5);
});
