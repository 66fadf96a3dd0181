/**
 * Renders an {@link ApplyReport} for humans: one line per VM with what happened and when it
 * takes effect, then which VMs changed, were skipped and failed.
 *
 * @module
 */

import { redactSecrets } from "../lib/domain/secrets.ts";
import { type ApplyReport, hostdevCounts, type VmApplyResult } from "../lib/apply/apply.ts";
import { type Paint, painter } from "../lib/render/colors.ts";
import { nameApart, printAlike } from "../lib/render/suggest.ts";
import type { Plan } from "../lib/plan/types.ts";
import { repairView } from "../lib/plan/repair.ts";
import { redactedJson } from "../lib/render/redact.ts";
import { oneLine } from "../lib/render/terminal.ts";
import { planCounts } from "./plan_options.ts";
import type { ChangeCounts } from "./plan_summary.ts";

const EFFECT: Record<string, string> = {
  "next-start": "takes effect at the next start",
  "next-power-off": "running: takes effect after the next full power-off",
  "now": "hot-plugged into the running guest too",
};

function statusWord(result: VmApplyResult, paint: Paint): string {
  switch (result.status) {
    case "changed":
      return paint("green", "changed");
    case "unchanged":
      return paint("dim", "unchanged");
    case "skipped":
      return paint("yellow", "skipped");
    case "failed":
      return paint("red", "FAILED");
  }
}

/** Options for {@link renderApplyReport}. */
export interface RenderApplyOptions {
  color: boolean;
  /** The plan applied: its moves are counted as moves, not as an add and a remove each. */
  plan?: Plan;
}

/** What one VM's apply did: a moved card's new address is not also counted as added. */
function vmCounts(
  result: VmApplyResult,
  plan: Plan | undefined,
): { add: number; remove: number; moved: number } {
  const vm = plan?.vms.find((v) => v.name === result.vm);
  const moves = vm === undefined ? [] : repairView(vm).move;
  return hostdevCounts(moves, result.added, result.removed);
}

/** `(+1 -0 hostdevs, 2 moved)`. */
function counts(result: VmApplyResult, plan: Plan | undefined): string {
  const { add, remove, moved } = vmCounts(result, plan);
  const tail = moved > 0 ? `, ${moved} moved` : "";
  return ` (+${add} -${remove} hostdevs${tail})`;
}

/**
 * The counts under `summary` in `apply --json`: the plan's `vmsToChange` and `refused`, how many
 * VMs ended in each status, and the hostdevs added, removed and moved in the changed VMs (the
 * names `plan --json` uses for what it would do).
 */
function applyCounts(report: ApplyReport, plan: Plan): ChangeCounts & {
  changed: number;
  unchanged: number;
  skipped: number;
  failed: number;
} {
  const done = report.vms.filter((r) => r.status === "changed").map((r) => vmCounts(r, plan));
  const sum = (key: "add" | "remove" | "moved") => done.reduce((n, c) => n + c[key], 0);
  const planned = planCounts(plan);
  return {
    vmsToChange: planned.vmsToChange,
    changed: report.changed.length,
    unchanged: report.unchanged.length,
    skipped: report.skipped.length,
    failed: report.failed.length,
    add: sum("add"),
    remove: sum("remove"),
    moved: sum("moved"),
    refused: planned.refused,
  };
}

/**
 * The report as `apply --json` prints it, secrets shown as `***`: the {@link ApplyReport} with
 * the names `plan --json` uses added beside its own (`config`, `section`; per VM `name`, the same as `vm`,
 * and the plan's `move` list of a changed VM), and its counts under `summary`.
 */
export function applyJson(report: ApplyReport, plan: Plan): string {
  const moves = (r: VmApplyResult) => {
    const vm = plan.vms.find((v) => v.name === r.vm);
    return r.status === "changed" && vm !== undefined ? repairView(vm).move : [];
  };
  return redactedJson({
    config: plan.config,
    ...(plan.section === undefined ? {} : { section: plan.section }),
    ...report,
    vms: report.vms.map((r) => ({ name: r.vm, ...r, move: moves(r) })),
    summary: applyCounts(report, plan),
  });
}

/** What was removed of a VM's older backups, or why not; `null` when nothing was tried. */
function prunedLine(result: VmApplyResult, keep: number): string | null {
  const ids = result.pruned.map((path) => path.slice(path.lastIndexOf("/") + 1, -".xml".length));
  const n = ids.length;
  const what = n === 0
    ? ""
    : `removed ${n} older backup${
      n === 1 ? "" : "s"
    } of "${result.vm}", keeping its newest ${keep}: ${
      // A backup kept (another domain's or connection's, a damaged one) may lie between two
      // removed: a range alone would have it removed too.
      n <= 3 ? ids.join(", ") : `${n} of the backups from ${ids.at(-1)} to ${ids[0]}`}`;
  if (result.pruneError === null) return n === 0 ? null : what;
  return `${
    what === "" ? "" : `${what}; `
  }could not remove its older backups: ${result.pruneError}`;
}

/**
 * The report's last words on the hot-plugs that failed: a change that lands at the next
 * power-off, or, for an attach the re-check refused, a definition not safe to start.
 */
function liveFooter(report: ApplyReport): string {
  const refused = new Set(report.vms.filter((r) => r.live?.refused === true).map((r) => r.vm));
  const failed = report.liveFailed.filter((vm) => !refused.has(vm));
  const unsafe = report.liveFailed.filter((vm) => refused.has(vm));
  return `${
    failed.length === 0
      ? ""
      : ` Hot-plug failed: ${failed.join(", ")} (the change lands at the next power-off).`
  }${
    unsafe.length === 0
      ? ""
      : ` Not hot-plugged: ${unsafe.join(", ")} (not safe to start as defined).`
  }`;
}

/** The report as lines of text ending with a newline. */
export function renderApplyReport(report: ApplyReport, options: RenderApplyOptions): string {
  const paint = painter(options.color);
  const lines: string[] = [];
  if (report.brokeStaleLock !== null) {
    lines.push(paint("yellow", `Broke a stale lock left by pid ${report.brokeStaleLock.pid}`));
  }
  const alike = printAlike(report.vms.map((result) => result.vm));
  for (const result of report.vms) {
    const changed = result.status === "changed" ? counts(result, options.plan) : "";
    // The engine's message already says when a running VM's change lands (a define alone, or
    // what --live did to the guest); say it for the rest.
    const effect = result.effect !== null && !/takes effect|running guest/.test(result.message)
      ? `; ${EFFECT[result.effect] ?? result.effect}`
      : "";
    const vm = nameApart(result.vm, alike);
    // Messages quote host names (drivers, slots) and libvirt's errors raw, as --json keeps them:
    // the one escape is here, so none breaks its line or tabs itself into columns.
    lines.push(
      `${statusWord(result, paint)} ${
        oneLine(`${vm}${changed}: ${result.message}${effect}`, false)
      }`,
    );
    if (result.backup !== null) lines.push(`  backup: ${oneLine(result.backup, false)}`);
    const pruned = prunedLine(result, report.keepBackups);
    if (pruned !== null) lines.push(`  ${oneLine(pruned, false)}`);
    if (result.restored) lines.push(`  the previous definition was restored from the backup`);
    for (const error of result.live?.errors ?? []) {
      lines.push(`  ${paint("red", "hot-plug")}: ${oneLine(error, false)}`);
    }
  }
  const list = (names: string[]) => (names.length === 0 ? "none" : names.join(", "));
  lines.push(
    paint(
      "bold",
      `Changed: ${list(report.changed)}. Skipped: ${list(report.skipped)}. Failed: ${
        list(report.failed)
      }.${
        // Their definitions changed; what the running guests hold did not (the exit status is 1).
        liveFooter(report)}`,
    ),
  );
  return redactSecrets(lines.join("\n") + "\n");
}
