/**
 * Renders an {@link ApplyReport} for humans: one line per VM with what happened and when it
 * takes effect, then which VMs changed, were skipped and failed.
 *
 * @module
 */

import { redactSecrets } from "../lib/domain/secrets.ts";
import type { ApplyReport, VmApplyResult } from "../lib/apply/apply.ts";
import { type Paint, painter } from "../lib/render/colors.ts";

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
}

/** The report as lines of text ending with a newline. */
export function renderApplyReport(report: ApplyReport, options: RenderApplyOptions): string {
  const paint = painter(options.color);
  const lines: string[] = [];
  if (report.brokeStaleLock !== null) {
    lines.push(paint("yellow", `Broke a stale lock left by pid ${report.brokeStaleLock.pid}`));
  }
  for (const result of report.vms) {
    const counts = result.status === "changed"
      ? ` (+${result.added.length} -${result.removed.length} hostdevs)`
      : "";
    // The engine's message already says when a running VM's change lands; say it for the rest.
    const effect = result.effect !== null && !/takes effect/.test(result.message)
      ? `; ${EFFECT[result.effect] ?? result.effect}`
      : "";
    lines.push(`${statusWord(result, paint)} ${result.vm}${counts}: ${result.message}${effect}`);
    if (result.backup !== null) lines.push(`  backup: ${result.backup}`);
    if (result.restored) lines.push(`  the previous definition was restored from the backup`);
    for (const error of result.live?.errors ?? []) {
      lines.push(`  ${paint("red", "hot-plug")}: ${error}`);
    }
  }
  const list = (names: string[]) => (names.length === 0 ? "none" : names.join(", "));
  lines.push(
    paint(
      "bold",
      `Changed: ${list(report.changed)}. Skipped: ${list(report.skipped)}. Failed: ${
        list(report.failed)
      }.`,
    ),
  );
  return redactSecrets(lines.join("\n") + "\n");
}
