/**
 * The counts behind a plan's summary line, apart from the renderer so that `plan --json` (which
 * prints them too) loads no diff library.
 *
 * @module
 */

import type { Plan } from "../lib/plan/types.ts";

/** Counts behind the summary line. */
export interface PlanSummary {
  vmsToChange: number;
  add: number;
  remove: number;
  move: number;
  /** Hostdevs (stale or on a device the host needs) the repairs of refused VMs remove. */
  repair: number;
  /** Stale hostdevs the repairs of refused VMs move to where their card is now. */
  repairMove: number;
  vmsWithErrors: number;
  warnings: number;
  /** The VMs planned, in plan order. */
  planned: string[];
  /** How many configured VMs a selection (`--vm`) left out: they were not checked. */
  unplanned: number;
}

/** Counts what the plan would change. */
export function summarizePlan(plan: Plan): PlanSummary {
  // A host-wide refusal (no IOMMU, host use unknown) refuses every VM: `apply` skips them all.
  const hostWide = plan.errors.length > 0;
  const refused = (vm: Plan["vms"][number]) => hostWide || vm.errors.length > 0;
  const changing = plan.vms.filter((vm) => vm.changed && !refused(vm));
  return {
    vmsToChange: changing.length,
    add: changing.reduce((n, vm) => n + vm.add.length, 0),
    remove: changing.reduce((n, vm) => n + vm.remove.length, 0),
    move: changing.reduce((n, vm) => n + vm.move.length, 0),
    repair: plan.vms.reduce(
      (n, vm) => n + (vm.errors.length > 0 ? vm.repair?.remove.length ?? 0 : 0),
      0,
    ),
    repairMove: plan.vms.reduce(
      (n, vm) => n + (vm.errors.length > 0 ? vm.repair?.move?.length ?? 0 : 0),
      0,
    ),
    vmsWithErrors: plan.vms.filter(refused).length,
    warnings: [...plan.warnings, ...plan.vms.flatMap((vm) => vm.warnings)]
      .filter((w) => w.info !== true).length,
    planned: plan.vms.map((vm) => vm.name),
    unplanned: plan.unplanned?.length ?? 0,
  };
}
