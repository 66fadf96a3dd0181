/**
 * Renders a {@link Plan} for humans: per VM a unified diff of the persistent definition, the
 * group reasoning, warnings and refusals, then a one-line summary. Rendering never decides: every
 * fact printed comes from the plan.
 *
 * @module
 */

import type { Candidate, Plan, PlanIssue, VmPlan } from "../lib/plan/types.ts";
import { renderDomainDiff } from "../lib/render/diff.ts";
import { redactSecrets } from "../lib/domain/secrets.ts";
import { type Paint, painter } from "../lib/render/colors.ts";

/** Options for {@link renderPlan}. */
export interface RenderPlanOptions {
  color: boolean;
}

/** Counts behind the summary line. */
export interface PlanSummary {
  vmsToChange: number;
  add: number;
  remove: number;
  move: number;
  vmsWithErrors: number;
  warnings: number;
}

/** Counts what the plan would change. */
export function summarizePlan(plan: Plan): PlanSummary {
  const changing = plan.vms.filter((vm) => vm.changed && vm.errors.length === 0);
  return {
    vmsToChange: changing.length,
    add: changing.reduce((n, vm) => n + vm.add.length, 0),
    remove: changing.reduce((n, vm) => n + vm.remove.length, 0),
    move: changing.reduce((n, vm) => n + vm.move.length, 0),
    vmsWithErrors: plan.vms.filter((vm) => vm.errors.length > 0).length +
      (plan.errors.length > 0 ? 1 : 0),
    warnings: plan.warnings.length + plan.vms.reduce((n, vm) => n + vm.warnings.length, 0),
  };
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** The one-line summary: `2 VMs to change, 3 hostdevs to add, 1 to remove`. */
export function summaryLine(summary: PlanSummary): string {
  if (summary.vmsToChange === 0 && summary.vmsWithErrors === 0) {
    return "No changes: every VM matches the config";
  }
  const parts = [
    `${plural(summary.vmsToChange, "VM")} to change`,
    `${plural(summary.add, "hostdev")} to add`,
    `${summary.remove} to remove`,
  ];
  if (summary.move > 0) parts.push(`${summary.move} moved`);
  if (summary.vmsWithErrors > 0) parts.push(`${plural(summary.vmsWithErrors, "VM")} refused`);
  return parts.join(", ");
}

function candidateRow(c: Candidate): string {
  const subsystem = c.subsystemVendorId !== null
    ? `${c.subsystemVendorId}:${c.subsystemDeviceId ?? "????"}`
    : "-";
  return [
    c.address,
    `${c.vendorId}:${c.deviceId}`,
    `subsys ${subsystem}`,
    `class ${c.classCode}`,
    `slot ${c.physicalSlot ?? "-"}`,
    `serial ${c.serial ?? "-"}`,
    `group ${c.iommuGroup ?? "-"}`,
    `driver ${c.driver ?? "-"}`,
  ].join("  ");
}

function renderIssue(issue: PlanIssue, kind: "error" | "warning", paint: Paint): string[] {
  const mark = kind === "error" ? paint("red", "refused") : paint("yellow", "warning");
  const where = issue.location !== undefined ? `${issue.location}: ` : "";
  const lines = [`  ${mark} [${issue.code}] ${where}${issue.message}`];
  for (const candidate of issue.candidates ?? []) lines.push(`      ${candidateRow(candidate)}`);
  if (issue.override !== undefined && kind === "error") {
    lines.push(`      ${paint("dim", `override: ${issue.override}`)}`);
  }
  return lines;
}

function vmState(vm: VmPlan): string {
  if (vm.active === null) return "";
  return vm.active ? " (running: changes apply at the next full power-off)" : " (shut off)";
}

/** Renders one VM's section. */
export function renderVmPlan(vm: VmPlan, options: RenderPlanOptions): string {
  const paint = painter(options.color);
  const lines: string[] = [paint("bold", `VM ${vm.name}${vmState(vm)}`)];
  if (vm.errors.length > 0) {
    lines.push("  nothing will change for this VM until the refusals below are resolved");
  } else if (!vm.changed) {
    lines.push("  no changes");
  } else {
    const diff = renderDomainDiff(vm.currentXml, vm.desiredXml, {
      vm: vm.name,
      color: options.color,
    });
    lines.push(...diff.trimEnd().split("\n").map((line) => `  ${line}`));
  }
  for (const moved of vm.move) {
    lines.push(
      `  ${
        paint("cyan", "moved")
      } ${moved.rule}: from ${moved.from} to ${moved.to}, ${moved.evidence}`,
    );
  }
  if (vm.reasoning.length > 0) {
    lines.push("  why:");
    for (const reason of vm.reasoning) lines.push(`    - ${reason}`);
  }
  for (const issue of vm.warnings) lines.push(...renderIssue(issue, "warning", paint));
  for (const issue of vm.errors) lines.push(...renderIssue(issue, "error", paint));
  // The plan holds definitions with their passwords; nothing printed shows them.
  return redactSecrets(lines.join("\n") + "\n");
}

/** Renders the whole plan followed by its summary line. */
export function renderPlan(plan: Plan, options: RenderPlanOptions): string {
  const paint = painter(options.color);
  const sections: string[] = [];
  for (const issue of plan.errors) {
    sections.push(renderIssue(issue, "error", paint).join("\n") + "\n");
  }
  for (const issue of plan.warnings) {
    sections.push(renderIssue(issue, "warning", paint).join("\n") + "\n");
  }
  for (const vm of plan.vms) sections.push(renderVmPlan(vm, options));
  sections.push(paint("bold", summaryLine(summarizePlan(plan))) + "\n");
  return redactSecrets(sections.join("\n"));
}
