/**
 * `passthrough apply`: shows the plan, asks per VM, and defines the confirmed changes with a
 * backup before each define (see `lib/apply/apply.ts` for the guarantees).
 *
 * @module
 */

import { redactedJson } from "../lib/render/redact.ts";
import { type CliIo, UsageError } from "./context.ts";
import type { Parsed } from "./flags.ts";
import type { APPLY } from "./specs.ts";
import { type ComputedPlan, computePlan, HOST_CONFIG, planHasErrors } from "./plan_options.ts";
import { renderPlan } from "./render_plan.ts";
import { makeConfirm } from "./confirm.ts";
import { renderApplyReport } from "./render_apply.ts";
import { applyPlan } from "../lib/apply/apply.ts";
import { acquireConnectionLock, describeHolder, type StateLock } from "../lib/state/lock.ts";
import { openStateDir, resolveStateDirPath } from "../lib/state/state_dir.ts";

/** Runs `passthrough apply`: exit 1 when a VM failed or was refused. */
export async function run({ values }: Parsed<typeof APPLY>, io: CliIo): Promise<number> {
  if (!values.yes && !io.interactive) {
    throw new UsageError("No terminal to confirm on: pass --yes to apply without asking");
  }
  if (!values.yes && values.json) {
    throw new UsageError("--json needs --yes: questions would mix with the JSON");
  }
  const stateDir = resolveStateDirPath({ flag: values["state-dir"], env: io.env });
  // Checked and created before planning, and the connection locked as soon as it is open, so an
  // unusable state directory or a concurrent run on this host fails before any work.
  const state = openStateDir(stateDir);
  const held: { lock?: StateLock } = {};
  try {
    using computed = await computePlan(values, io, {
      onConnect: (libvirt) => {
        held.lock = acquireConnectionLock(libvirt.uri, { stateDir: state.path, command: "apply" });
      },
    });
    return await applyComputed(computed, { values, io, stateDir, lock: held.lock! });
  } finally {
    held.lock?.release();
  }
}

/** Shows the plan, applies it under `lock`, prints the report; the exit code. */
async function applyComputed(
  { plan, libvirt }: ComputedPlan,
  { values, io, stateDir, lock }: {
    values: Parsed<typeof APPLY>["values"];
    io: CliIo;
    stateDir: string;
    lock: StateLock;
  },
): Promise<number> {
  if (plan.example === true) {
    throw new Error(
      `Config ${plan.config} is the shipped example ("example: true"): apply refuses it. ` +
        `Copy it to ${HOST_CONFIG}, adapt it to this host, delete the "example: true" line, ` +
        `and name it with --config or $PASSTHROUGH_CONFIG`,
    );
  }
  if (!values.json) io.out(`${renderPlan(plan, { color: io.color })}\n`);
  const report = await applyPlan(plan, {
    libvirt,
    stateDir,
    confirm: makeConfirm(io, { yes: values.yes }),
    live: values.live,
    lock,
  });
  if (report.brokeStaleLock !== null && values.json) {
    io.err(`Note: removed a stale lock left by ${describeHolder(report.brokeStaleLock)}\n`);
  }
  io.out(
    values.json ? redactedJson(report) : renderApplyReport(report, { color: io.color, plan }),
  );
  return report.ok && !planHasErrors(plan) ? 0 : 1;
}
