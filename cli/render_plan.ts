/**
 * Renders a {@link Plan} for humans: per VM a unified diff of the persistent definition, the
 * group reasoning, warnings and refusals, then a one-line summary. Rendering never decides: every
 * fact printed comes from the plan.
 *
 * @module
 */

import type { Candidate, MovedHostdev, Plan, PlanIssue, VmPlan } from "../lib/plan/types.ts";
import { renderDomainDiff } from "../lib/render/diff.ts";
import { redactSecrets } from "../lib/domain/secrets.ts";
import { type Paint, painter } from "../lib/render/colors.ts";
import { nameApart, printAlike } from "../lib/render/suggest.ts";
import { oneLine } from "../lib/render/terminal.ts";
import { type PlanSummary, summarizePlan } from "./plan_summary.ts";

/** Options for {@link renderPlan}. */
export interface RenderPlanOptions {
  color: boolean;
  /** `apply --live`: a running VM's hostdevs are hot-plugged, not left for its next power-off. */
  live?: boolean;
  /**
   * The names of the plan's VMs: a heading whose name prints like another's (a look-alike letter,
   * a joiner) shows its escaped form beside it, or two sections would read as one VM's.
   */
  names?: readonly string[];
}

function plural(n: number, one: string): string {
  return `${n} ${n === 1 ? one : `${one}s`}`;
}

/** The one-line summary: `2 VMs to change, 3 hostdevs to add, 1 to remove`. */
export function summaryLine(summary: PlanSummary): string {
  const others = summary.unplanned === 0
    ? ""
    : `; ${plural(summary.unplanned, "other VM")} not planned`;
  if (summary.vmsToChange === 0 && summary.refused === 0) {
    if (summary.unplanned === 0) return "No changes: every VM matches the config";
    const names = summary.planned.join(", ");
    return `No changes: ${names} ${
      summary.planned.length === 1 ? "matches" : "match"
    } the config${others}`;
  }
  const parts = [
    `${plural(summary.vmsToChange, "VM")} to change`,
    `${plural(summary.add, "hostdev")} to add`,
    `${summary.remove} to remove`,
  ];
  if (summary.moved > 0) parts.push(`${summary.moved} moved`);
  if (summary.refused > 0) parts.push(`${plural(summary.refused, "VM")} refused`);
  if (summary.repairRemove > 0) {
    parts.push(`${plural(summary.repairRemove, "hostdev")} to remove from refused VMs`);
  }
  if (summary.repairMoved > 0) {
    parts.push(`${plural(summary.repairMoved, "hostdev")} to follow a moved card in refused VMs`);
  }
  return parts.join(", ") + others;
}

/** One candidate's row; a slot or driver name holding a newline stays in it ({@link oneLine}). */
function candidateRow(c: Candidate): string {
  const subsystem = c.subsystemVendorId !== null
    ? `${c.subsystemVendorId}:${c.subsystemDeviceId ?? "????"}`
    : "-";
  return [
    c.address,
    `${c.vendorId}:${c.deviceId}`,
    `subsys ${subsystem}`,
    `class ${c.classCode}`,
    `slot ${oneLine(c.physicalSlot ?? "-", false)}`,
    `serial ${c.serial ?? "-"}`,
    `group ${c.iommuGroup ?? "-"}`,
    `driver ${oneLine(c.driver ?? "-", false)}`,
  ].join("  ");
}

type IssueKind = "error" | "warning" | "info";

function renderIssue(issue: PlanIssue, kind: IssueKind, paint: Paint): string[] {
  const mark = kind === "error"
    ? paint("red", "refused")
    : kind === "warning"
    ? paint("yellow", "warning")
    : paint("dim", "note");
  const where = issue.location !== undefined ? `${issue.location}: ` : "";
  // Messages quote host and VM names (drivers, slots, host uses) raw, as --json keeps them: the
  // one escape is here, so no message can break its line or tab itself into columns.
  const lines = [`  ${mark} [${issue.code}] ${oneLine(where + issue.message, false)}`];
  for (const candidate of issue.candidates ?? []) lines.push(`      ${candidateRow(candidate)}`);
  if (issue.override !== undefined && kind === "error") {
    lines.push(`      ${paint("dim", `override: ${oneLine(issue.override, false)}`)}`);
  }
  return lines;
}

/** The addresses of `issues` as a list cut after a few (`a, b, c and 4 more`). */
function addressList(issues: readonly PlanIssue[]): string {
  const all = issues.flatMap((i) => i.devices ?? []);
  const shown = all.slice(0, 4).join(", ");
  return all.length > 4 ? `${shown} and ${all.length - 4} more` : shown;
}

/** One issue standing for several of one rule and code, each about one device. */
function groupedIssue(issues: readonly PlanIssue[]): PlanIssue {
  const first = issues[0]!;
  const n = issues.length;
  const list = addressList(issues);
  const rule = `rule "${first.rule}"`;
  const message = first.code === "no-flr"
    ? `${rule}: ${n} functions without Function Level Reset: ${list}: they may not reset between guest boots (set "allow_no_flr: true" on ${rule} to silence this)`
    : first.code === "host-driver-in-use" && first.info === true
    ? `${rule}: ${n} functions are bound to host drivers: ${list}: libvirt detaches them when "${first.vm}" starts and the host loses them`
    : `${rule}: ${n} functions are bound to host drivers and the rule has managed: false: ${list}: bind them to vfio-pci before "${first.vm}" starts`;
  return { ...first, message, devices: issues.flatMap((i) => i.devices ?? []) };
}

/**
 * `issues` with those of one rule and code that each concern one device merged into one, so a
 * rule on an eight-function card prints one line, not eight; first-seen order is kept.
 */
function groupIssues(issues: readonly PlanIssue[]): PlanIssue[] {
  const groups = new Map<string, PlanIssue[]>();
  const order: (PlanIssue | string)[] = [];
  for (const issue of issues) {
    const groupable = issue.code === "no-flr" || issue.code === "host-driver-in-use";
    if (!groupable || issue.rule === undefined || issue.devices?.length !== 1) {
      order.push(issue);
      continue;
    }
    const key = `${issue.code}\0${issue.vm}\0${issue.rule}`;
    if (!groups.has(key)) {
      groups.set(key, []);
      order.push(key);
    }
    groups.get(key)!.push(issue);
  }
  return order.map((entry) => {
    if (typeof entry !== "string") return entry;
    const members = groups.get(entry)!;
    return members.length === 1 ? members[0]! : groupedIssue(members);
  });
}

/** Refusals first, then warnings, then notes; several of one rule and code on one line. */
function renderIssues(
  errors: readonly PlanIssue[],
  warnings: readonly PlanIssue[],
  paint: Paint,
  moves: readonly MovedHostdev[] | null = null,
) {
  const lines: string[] = [];
  for (const issue of groupIssues(errors)) lines.push(...renderIssue(issue, "error", paint));
  const grouped = groupIssues(warnings);
  for (const issue of grouped.filter((i) => i.info !== true)) {
    lines.push(...renderIssue(issue, "warning", paint));
  }
  // A moved card has its own line (`moves`: under the diff, or its repair's); a VF that moved
  // with its PF has none, so its `moved` note is the only line that says the interface follows it.
  const ownLine = new Set(moves?.map((m) => m.from));
  const shown = (i: PlanIssue) =>
    i.code !== "moved" || (moves !== null && !ownLine.has(i.devices?.[0] ?? ""));
  for (const issue of grouped.filter((i) => i.info === true && shown(i))) {
    lines.push(...renderIssue(issue, "info", paint));
  }
  return lines;
}

function vmState(vm: VmPlan, live: boolean): string {
  if (vm.active === null) return "";
  if (!vm.active) return " (shut off)";
  return live
    ? " (running: --live hot-plugs the changes now; what fails applies at the next full power-off)"
    : " (running: changes apply at the next full power-off)";
}

/**
 * Under a refused VM's refusals: what its repair does to each hostdev (the refusal printed first
 * above says why), and the diff of that repair.
 */
function renderRepair(vm: VmPlan, options: RenderPlanOptions): string[] {
  if (vm.errors.length === 0 || vm.repair === undefined) return [];
  const paint = painter(options.color);
  const mark = paint("cyan", "repair");
  const lines: string[] = [];
  for (const moved of vm.repair.move ?? []) {
    lines.push(
      `  ${mark} follows the card of hostdev ${moved.from} to ${moved.to}, ${moved.evidence} (refusal above)`,
    );
  }
  for (const address of vm.repair.remove) {
    lines.push(`  ${mark} removes hostdev ${address} (refusal above)`);
  }
  const diff = renderDomainDiff(vm.currentXml, vm.repair.desiredXml, {
    vm: vm.name,
    color: options.color,
  });
  lines.push(...diff.trimEnd().split("\n").map((line) => `  ${line}`));
  return lines;
}

/** Renders one VM's section. */
export function renderVmPlan(vm: VmPlan, options: RenderPlanOptions): string {
  const paint = painter(options.color);
  const name = nameApart(vm.name, printAlike(options.names ?? []));
  const lines: string[] = [paint("bold", `VM ${name}${vmState(vm, options.live === true)}`)];
  if (vm.errors.length > 0 && vm.repair !== undefined) {
    lines.push(
      "  only the repair after the refusals below will change this VM until they are resolved",
    );
  } else if (vm.errors.length > 0) {
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
      `  ${paint("cyan", "moved")} ${
        oneLine(`${moved.rule}: from ${moved.from} to ${moved.to}, ${moved.evidence}`, false)
      }`,
    );
  }
  if (vm.reasoning.length > 0) {
    lines.push("  why:");
    for (const reason of vm.reasoning) lines.push(`    - ${oneLine(reason, false)}`);
  }
  const moves = [...vm.move, ...(vm.repair?.move ?? [])];
  lines.push(...renderIssues(vm.errors, vm.warnings, paint, moves));
  lines.push(...renderRepair(vm, options));
  // The plan holds definitions with their passwords; nothing printed shows them.
  return redactSecrets(lines.join("\n") + "\n");
}

/** The first line: which config the plan was computed from, and whether it is the example. */
function configLine(plan: Plan): string {
  const example = plan.example === true
    ? ': the shipped example ("example: true"): apply refuses it until that line is removed'
    : "";
  return `Config: ${plan.config}${example}\n`;
}

/** Renders the whole plan followed by its summary line. */
export function renderPlan(plan: Plan, options: RenderPlanOptions): string {
  const paint = painter(options.color);
  const sections: string[] = [configLine(plan)];
  const global = renderIssues(plan.errors, plan.warnings, paint);
  if (global.length > 0) sections.push(global.join("\n") + "\n");
  const names = plan.vms.map((vm) => vm.name);
  for (const vm of plan.vms) sections.push(renderVmPlan(vm, { ...options, names }));
  sections.push(paint("bold", summaryLine(summarizePlan(plan))) + "\n");
  return redactSecrets(sections.join("\n"));
}
