/**
 * The counts behind a plan's summary line, apart from the renderer so that `plan --json` (which
 * prints them too) loads no diff library.
 *
 * @module
 */

import type { Plan } from "../lib/plan/types.ts";

/**
 * Counts under `summary` in `plan --json` and `apply --json`, with the same names in both: in a
 * plan what would change (the numbers of the summary line), in an apply report what did.
 */
export interface ChangeCounts {
  /** VMs whose definition the plan changes (refused VMs not included). */
  vmsToChange: number;
  /** Hostdevs written (new or rewritten) into those VMs; a moved card is counted in `moved`. */
  add: number;
  /** Hostdevs deleted from those VMs; a moved card's old address is counted in `moved`. */
  remove: number;
  /** Cards moved to another host address. */
  moved: number;
  /** VMs refused by the plan (all of them when a refusal is not tied to one VM). */
  refused: number;
}

/**
 * Counts behind the summary line, named as `plan --json` prints them under `summary` (all but
 * `planned` and `unplanned`).
 */
export interface PlanSummary extends ChangeCounts {
  /** Warnings, notes (`info`) not counted. */
  warnings: number;
  /** Hostdevs (stale or on a device the host needs) the repairs of refused VMs remove. */
  repairRemove: number;
  /** Stale hostdevs the repairs of refused VMs move to where their card is now. */
  repairMoved: number;
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
    moved: changing.reduce((n, vm) => n + vm.move.length, 0),
    refused: plan.vms.filter(refused).length,
    warnings: [...plan.warnings, ...plan.vms.flatMap((vm) => vm.warnings)]
      .filter((w) => w.info !== true).length,
    repairRemove: plan.vms.reduce(
      (n, vm) => n + (vm.errors.length > 0 ? vm.repair?.remove.length ?? 0 : 0),
      0,
    ),
    repairMoved: plan.vms.reduce(
      (n, vm) => n + (vm.errors.length > 0 ? vm.repair?.move?.length ?? 0 : 0),
      0,
    ),
    planned: plan.vms.map((vm) => vm.name),
    unplanned: plan.unplanned?.length ?? 0,
  };
}
