/**
 * The flags `plan` and `apply` share (`--config`, `--sysfs`, `--connect`, `--vm`, `--json`) and
 * the one function that turns them into a computed {@link Plan} with its open libvirt connection.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import type { Plan } from "../lib/plan_types.ts";
import { loadConfig } from "../lib/config.ts";
import { planHostdevs } from "../lib/plan.ts";
import { type OpenLibvirtPort, openLibvirtPort } from "../ffi/port.ts";
import { type CliIo, UsageError } from "./context.ts";
import { loadHost } from "./host_options.ts";

/** Environment variable naming the config file when `--config` is absent. */
export const CONFIG_ENV = "PASSTHROUGH_CONFIG";
/** The config file used when neither `--config` nor `PASSTHROUGH_CONFIG` is given. */
export const DEFAULT_CONFIG = "passthrough_config.yaml";

/** `parseArgs` options common to `plan` and `apply`. */
export const PLAN_FLAGS = {
  config: { type: "string", short: "f" },
  sysfs: { type: "string" },
  connect: { type: "string", short: "c" },
  vm: { type: "string", multiple: true },
  json: { type: "boolean", default: false },
} as const satisfies ParseArgsConfig["options"];

/** Help lines for {@link PLAN_FLAGS}. */
export const PLAN_FLAGS_HELP = [
  "  -f, --config FILE   config file (default: $PASSTHROUGH_CONFIG or ./passthrough_config.yaml)",
  "      --sysfs DIR     read a captured sysfs tree instead of this host's /sys",
  "  -c, --connect URI   libvirt URI (default: $LIBVIRT_DEFAULT_URI or libvirt's default)",
  "      --vm NAME       only this VM (repeatable)",
  "      --json          print machine-readable JSON",
].join("\n");

/** Parses `args` strictly; unknown flags and stray arguments are usage errors. */
export function parseFlags<T extends ParseArgsConfig["options"]>(
  args: string[],
  options: T,
  positionals = 0,
) {
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: positionals > 0 });
  } catch (error) {
    throw new UsageError((error as Error).message.replace(/\. To specify.*$/s, ""));
  }
  if (parsed.positionals.length > positionals) {
    throw new UsageError(`Unexpected argument "${parsed.positionals[positionals]}"`);
  }
  return parsed;
}

/** What {@link computePlan} needs, already parsed. */
export interface PlanInputs {
  config?: string | undefined;
  sysfs?: string | undefined;
  connect?: string | undefined;
  vm?: string[] | undefined;
}

/** A plan together with the connection it was read through (close it when done). */
export interface ComputedPlan extends Disposable {
  plan: Plan;
  libvirt: OpenLibvirtPort;
}

/**
 * Loads the config, discovers the host, opens libvirt and plans. The connection stays open so
 * `apply` can re-check and define through the same one (the test driver keeps state per
 * connection).
 */
export async function computePlan(inputs: PlanInputs, io: CliIo): Promise<ComputedPlan> {
  const configPath = inputs.config ?? io.env(CONFIG_ENV) ?? DEFAULT_CONFIG;
  const config = await loadConfig(configPath);
  const names = config.vms.map((vm) => vm.name);
  for (const vm of inputs.vm ?? []) {
    if (!names.includes(vm)) {
      throw new UsageError(
        `VM "${vm}" is not in ${configPath}: it names ${names.map((n) => `"${n}"`).join(", ")}`,
      );
    }
  }
  const host = await loadHost(inputs.sysfs);
  const libvirt = openLibvirtPort(inputs.connect ?? null);
  try {
    const plan = planHostdevs({ config, host, libvirt, ...(inputs.vm ? { vms: inputs.vm } : {}) });
    return { plan, libvirt, [Symbol.dispose]: () => libvirt.close() };
  } catch (error) {
    libvirt.close();
    throw error;
  }
}

/** Parses the shared flags in `args` and computes the plan. */
export function computePlanFromArgs(args: string[], io: CliIo): Promise<ComputedPlan> {
  const { values } = parseFlags(args, PLAN_FLAGS);
  return computePlan(values, io);
}

/** Whether the plan refuses anything (globally or for a VM). */
export function planHasErrors(plan: Plan): boolean {
  return plan.errors.length > 0 || plan.vms.some((vm) => vm.errors.length > 0);
}

/** The plan as `plan --json` prints it: the {@link Plan} itself, minus nothing. */
export function planJson(plan: Plan): string {
  return JSON.stringify(plan, null, 2) + "\n";
}
