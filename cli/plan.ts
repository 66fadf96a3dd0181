/**
 * `passthrough plan`: what would change, as diffs with the group reasoning, or as JSON.
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
  loadPlanConfig,
  parseFlags,
  parseHostTimeout,
  parseParallel,
  PLAN_FLAGS,
  PLAN_FLAGS_HELP,
  planFleet,
  planHasErrors,
  planJson,
} from "./plan_options.ts";
import { renderFleetPlan, renderPlan } from "./render_plan.ts";
import type { Config } from "../lib/config/config.ts";
import { fleetFailed, fleetPlanJson, selectHosts, UnknownHostError } from "../lib/plan/fleet.ts";

const HELP = `Usage: passthrough plan [options]

Shows, per VM, the diff of its persistent definition that 'apply' would make, why each device
is included, and any warnings or refusals. Changes nothing.

Options:
${PLAN_FLAGS_HELP}
${FLEET_FLAGS_HELP}
      --detailed-exitcode  exit 0 with no changes, 2 with changes pending, 1 on errors

With a hosts: section in the config, each host is discovered and planned on its own (in
parallel, --parallel at a time) and shown in its own section; --json then prints
{"hosts": [{"name", "uri", "plan", "error"}]}. A host that fails is reported, the others are
still planned, and the exit code is 1. A host that takes longer than --host-timeout is
reported as timed out (a failure) and the others go on.

Exit codes: 0 ok, 1 refused or failed (on any host), 2 usage error (or changes pending with
--detailed-exitcode).
`;

/** Checks the flags that make no sense for a fleet config, and picks its hosts. */
export function fleetHosts(
  config: Config,
  values: { connect?: string | undefined; sysfs?: string | undefined; host?: string[] | undefined },
) {
  if (config.hosts === undefined) {
    if (values.host !== undefined) {
      throw new UsageError(
        `--host needs a config with a "hosts:" section: ${config.file} has none`,
      );
    }
    return null;
  }
  for (const flag of ["connect", "sysfs"] as const) {
    if (values[flag] !== undefined) {
      throw new UsageError(
        `--${flag} does not apply to a config with "hosts:": each host names its own (use --host NAME)`,
      );
    }
  }
  try {
    return selectHosts(config, values.host);
  } catch (error) {
    if (error instanceof UnknownHostError) throw new UsageError(error.message);
    throw error;
  }
}

/** Checks `--vm` names against the config (usage error for a VM it does not name). */
export function checkVmNames(config: Config, vms: string[] | undefined): void {
  const names = config.vms.map((vm) => vm.name);
  for (const vm of vms ?? []) {
    if (!names.includes(vm)) {
      throw new UsageError(
        `VM "${vm}" is not in ${config.file}: it names ${names.map((n) => `"${n}"`).join(", ")}`,
      );
    }
  }
}

async function runFleetPlan(
  config: Config,
  values: Record<string, unknown> & {
    json: boolean;
    "detailed-exitcode": boolean;
    parallel?: string | undefined;
    "host-timeout"?: string | undefined;
    vm?: string[] | undefined;
  },
  hosts: NonNullable<ReturnType<typeof fleetHosts>>,
  io: CliIo,
): Promise<number> {
  const parallel = parseParallel(values.parallel);
  const timeout = parseHostTimeout(values["host-timeout"]);
  checkVmNames(config, values.vm);
  const note = hostTimeoutNote(timeout);
  if (note !== null) io.err(note);
  const results = await planFleet(config, { hosts, parallel, vms: values.vm, timeout });
  io.out(values.json ? fleetPlanJson(results) : renderFleetPlan(results, { color: io.color }));
  const pending = results.some((r) => r.plan?.vms.some((vm) => vm.changed));
  const code = fleetFailed(results) ? 1 : values["detailed-exitcode"] && pending ? 2 : 0;
  endProcessIfHostsStuck(code);
  return code;
}

/** The `plan` command. */
export const planCommand: Command = {
  name: "plan",
  summary: "show the hostdev changes the config asks for, as diffs",
  help: HELP,
  async run(args, io) {
    const { values } = parseFlags(args, {
      ...PLAN_FLAGS,
      ...FLEET_FLAGS,
      "detailed-exitcode": { type: "boolean", default: false },
    });
    const config = await loadPlanConfig(values, io);
    const hosts = fleetHosts(config, values);
    if (hosts !== null) return await runFleetPlan(config, values, hosts, io);
    using computed = await computePlan(values, io);
    const { plan } = computed;
    io.out(values.json ? planJson(plan) : renderPlan(plan, { color: io.color }));
    if (planHasErrors(plan)) return 1;
    const pending = plan.vms.some((vm) => vm.changed);
    return values["detailed-exitcode"] && pending ? 2 : 0;
  },
};
