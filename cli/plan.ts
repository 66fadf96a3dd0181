/**
 * `passthrough plan`: what would change, as diffs with the group reasoning, or as JSON.
 *
 * @module
 */

import type { CliIo } from "./context.ts";
import type { Parsed } from "./flags.ts";
import type { PLAN } from "./specs.ts";
import { computePlan, planHasErrors, planJson } from "./plan_options.ts";

/** Runs `passthrough plan`: exit 1 when anything is refused, 2 for pending changes if asked. */
export async function run({ values }: Parsed<typeof PLAN>, io: CliIo): Promise<number> {
  using computed = await computePlan(values, io, { command: "plan" });
  const { plan } = computed;
  // The diff renderer (and its diff library) loads only for the human form.
  io.out(
    values.json
      ? planJson(plan)
      : (await import("./render_plan.ts")).renderPlan(plan, { color: io.color }),
  );
  if (planHasErrors(plan)) return 1;
  const pending = plan.vms.some((vm) => vm.changed);
  return values["detailed-exitcode"] && pending ? 2 : 0;
}
