/**
 * `passthrough apply`: shows the plan, asks per VM, and defines the confirmed changes with a
 * backup before each define (see `lib/apply/apply.ts` for the guarantees).
 *
 * @module
 */

import { type CliIo, type Command, UsageError } from "./context.ts";
import {
  computePlan,
  parseFlags,
  PLAN_FLAGS,
  PLAN_FLAGS_HELP,
  planHasErrors,
} from "./plan_options.ts";
import { renderPlan } from "./render_plan.ts";
import { makeConfirm } from "./confirm.ts";
import { renderApplyReport } from "./render_apply.ts";
import { applyPlan } from "../lib/apply/apply.ts";
import { acquireLock, describeHolder } from "../lib/state/lock.ts";
import { openStateDir, resolveStateDirPath } from "../lib/state/state_dir.ts";

const HELP = `Usage: passthrough apply [options]

Shows the plan, then for each VM that would change asks whether to apply it
(y yes, n no, a yes to all remaining, q quit). For each confirmed VM: re-reads its
definition and stops if it changed since the plan, backs it up to the state directory,
defines the new one, and checks the hostdevs libvirt now holds (restoring the backup if
they are not the planned ones). A running VM's change takes effect at its next full
power-off unless --live hot-plugs it.

Options:
${PLAN_FLAGS_HELP}
      --yes           apply every VM without asking (required without a terminal)
      --live          also hot-plug/unplug the hostdevs of running VMs
      --state-dir DIR backups and lock (default: $PASSTHROUGH_STATE_DIR or /var/lib/passthrough)

One process applies one host: with a hosts: section in the config, the section of --host NAME
or of this machine's host name, as for plan. Several hosts: run passthrough on each
(ansible/passthrough.yml, docs/FLEET.md).

Exit codes: 0 ok, 1 a VM failed or was refused, or a runtime error, 2 usage error.
`;

/** The `apply` command. */
export const applyCommand: Command = {
  name: "apply",
  summary: "apply the plan: confirm, back up, define, verify",
  help: HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values } = parseFlags(args, {
      ...PLAN_FLAGS,
      yes: { type: "boolean", short: "y", default: false },
      live: { type: "boolean", default: false },
      "state-dir": { type: "string" },
    });
    if (!values.yes && !io.interactive) {
      throw new UsageError("No terminal to confirm on: pass --yes to apply without asking");
    }
    if (!values.yes && values.json) {
      throw new UsageError("--json needs --yes: questions would mix with the JSON");
    }
    const stateDir = resolveStateDirPath({ flag: values["state-dir"], env: io.env });
    // Checked, created and locked before planning, so an unusable state directory or a
    // concurrent run fails before any work.
    const state = openStateDir(stateDir);
    using lock = acquireLock(state.path, { command: "apply" });
    using computed = await computePlan(values, io);
    const { plan } = computed;
    if (!values.json) io.out(`${renderPlan(plan, { color: io.color })}\n`);
    const report = await applyPlan(plan, {
      libvirt: computed.libvirt,
      stateDir,
      confirm: makeConfirm(io, { yes: values.yes }),
      live: values.live,
      lock,
    });
    if (report.brokeStaleLock !== null && values.json) {
      io.err(`Note: removed a stale lock left by ${describeHolder(report.brokeStaleLock)}\n`);
    }
    io.out(
      values.json
        ? `${JSON.stringify(report, null, 2)}\n`
        : renderApplyReport(report, { color: io.color }),
    );
    return report.ok && !planHasErrors(plan) ? 0 : 1;
  },
};
