/**
 * `passthrough apply`: shows the plan, asks per VM, and defines the confirmed changes with a
 * backup before each define (see `lib/apply/apply.ts` for the guarantees).
 *
 * @module
 */

import { type CliIo, type Command, UsageError } from "./context.ts";
import {
  computePlan,
  endProcessIfHostsStuck,
  FLEET_FLAGS,
  FLEET_FLAGS_HELP,
  hostTimeoutNote,
  HostWorkerPool,
  loadPlanConfig,
  openHostSession,
  parseFlags,
  parseHostTimeout,
  parseParallel,
  PLAN_FLAGS,
  PLAN_FLAGS_HELP,
  planHasErrors,
} from "./plan_options.ts";
import { checkVmNames, fleetHosts } from "./plan.ts";
import { renderFleetPlan, renderHostError, renderPlan } from "./render_plan.ts";
import { ask, makeConfirm } from "./confirm.ts";
import { renderApplyReport, renderFleetApply, renderFleetApplySummary } from "./render_apply.ts";
import type { Config, HostConfig } from "../lib/config/config.ts";
import {
  fleetApplyJson,
  fleetFailed,
  type FleetHostResult,
  runBounded,
} from "../lib/plan/fleet.ts";
import { ensurePrivateDir, type StateDir } from "../lib/state/state_dir.ts";
import { join } from "node:path";
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
${FLEET_FLAGS_HELP}
      --yes           apply every VM without asking (required without a terminal)
      --live          also hot-plug/unplug the hostdevs of running VMs
      --state-dir DIR backups and lock (default: $PASSTHROUGH_STATE_DIR or /var/lib/passthrough)

With a hosts: section in the config: with --yes, hosts are planned and applied in parallel
(--parallel at a time), each through its own connection, and reported in a section each. On a
terminal, hosts go one after another: the host's plan, then "Apply to host NAME?" (y yes: then
the per-VM questions above; n skip this host; a this host and every remaining one without more
questions; q stop), so questions never interleave. Backups and the lock of host NAME live in
STATE/hosts/NAME. A host that fails (unreachable, refused) is reported and the others still
apply. A host that takes longer than --host-timeout (not counting time spent on questions) is
reported as FAILED; if it timed out while applying, its state is unknown: check with plan.

Exit codes: 0 ok, 1 a VM failed or was refused (on any host), or a runtime error, 2 usage error.
`;

/** The answers of a fleet apply that carry over from host to host. */
interface FleetApplyState {
  /** `a` at a host question: no more questions. */
  all: boolean;
  /** `q`: every remaining host is skipped. */
  quit: boolean;
}

async function applyFleetHost(
  config: Config,
  host: HostConfig,
  options: {
    parallel: number;
    timeout: number | null;
    vm: string[] | undefined;
    stateDir: string;
    live: boolean;
    interactive: boolean;
    json: boolean;
    state: FleetApplyState;
    pool: HostWorkerPool;
  },
  io: CliIo,
): Promise<FleetHostResult> {
  const session = openHostSession(
    { config, host, ...(options.vm ? { vms: options.vm } : {}) },
    { inProcess: options.parallel === 1, pool: options.pool, timeout: options.timeout },
  );
  try {
    const planned = await session.plan();
    if (!options.interactive) {
      if (planned.plan === null) return planned;
      return await session.apply({
        stateDir: join(options.stateDir, host.name),
        live: options.live,
        confirm: null,
      });
    }
    if (!options.json) io.out(`${renderFleetPlan([planned], { color: io.color })}\n`);
    if (planned.plan === null) return planned;
    const changing = planned.plan.vms.some((vm) => vm.changed && vm.errors.length === 0);
    if (options.state.quit || !changing) return planned;
    let perVm = !options.state.all;
    if (!options.state.all) {
      const answer = await ask(io, `Apply to host "${host.name}"?`);
      if (answer === "no") return planned;
      if (answer === "quit") {
        options.state.quit = true;
        return planned;
      }
      if (answer === "all") {
        options.state.all = true;
        perVm = false;
      }
    }
    const applied = await session.apply({
      stateDir: join(options.stateDir, host.name),
      live: options.live,
      confirm: perVm ? makeConfirm(io, { yes: false }) : null,
    });
    // On a terminal each host's outcome is shown before the next host's plan.
    if (!options.json) {
      if (applied.report != null) io.out(renderApplyReport(applied.report, { color: io.color }));
      if (applied.error !== null) io.out(renderHostError(applied.error, { color: io.color }));
      io.out("\n");
    }
    return applied;
  } finally {
    await session.close();
  }
}

async function runFleetApply(
  config: Config,
  hosts: HostConfig[],
  values: {
    yes: boolean;
    json: boolean;
    live: boolean;
    parallel?: string | undefined;
    "host-timeout"?: string | undefined;
    vm?: string[] | undefined;
  },
  state: StateDir,
  io: CliIo,
): Promise<number> {
  const parallel = parseParallel(values.parallel);
  const timeout = parseHostTimeout(values["host-timeout"]);
  checkVmNames(config, values.vm);
  const note = hostTimeoutNote(timeout);
  if (note !== null) io.err(note);
  const hostsDir = join(state.path, "hosts");
  ensurePrivateDir(hostsDir, state);
  const shared = { all: false, quit: false };
  using pool = new HostWorkerPool();
  const options = {
    pool,
    parallel,
    timeout,
    vm: values.vm,
    stateDir: hostsDir,
    live: values.live,
    interactive: !values.yes,
    json: values.json,
    state: shared,
  };
  // Questions cannot interleave: on a terminal the hosts go one after another.
  const results = await runBounded(hosts, {
    limit: values.yes ? parallel : 1,
    run: (host) => applyFleetHost(config, host, options, io),
  });
  if (values.json) io.out(fleetApplyJson(results));
  else if (values.yes) {
    io.out(`${renderFleetPlan(results, { color: io.color })}\n`);
    io.out(renderFleetApply(results, { color: io.color }));
  } else {
    io.out(renderFleetApplySummary(results, { color: io.color }));
  }
  const code = fleetFailed(results) ? 1 : 0;
  endProcessIfHostsStuck(code);
  return code;
}

/** The `apply` command. */
export const applyCommand: Command = {
  name: "apply",
  summary: "apply the plan: confirm, back up, define, verify",
  help: HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values } = parseFlags(args, {
      ...PLAN_FLAGS,
      ...FLEET_FLAGS,
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
    const config = await loadPlanConfig(values, io);
    const hosts = fleetHosts(config, values);
    if (hosts !== null) return await runFleetApply(config, hosts, values, state, io);
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
