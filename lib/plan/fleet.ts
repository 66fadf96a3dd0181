/**
 * Several libvirt hosts in one config (the top-level `hosts:`): which VMs and rules each host
 * gets, a bounded pool to run hosts in parallel, and the plain-data results `plan --json` and
 * `apply --json` print for a fleet. Discovery, planning and applying for one host stay what they
 * are for a single host; this module only splits the config and gathers the outcomes, so one
 * host's failure never hides another's result.
 *
 * @module
 */

import type { Config, HostConfig, VmConfig } from "../config/config.ts";
import type { Plan } from "./types.ts";
import type { ApplyReport } from "../apply/apply.ts";

/** A `--host NAME` that the config does not declare. */
export class UnknownHostError extends Error {
  override name = "UnknownHostError";
  /** The name asked for. */
  host: string;
  /** The hosts the config declares, in file order. */
  known: string[];

  constructor(host: string, known: string[]) {
    super(
      known.length === 0
        ? `Host "${host}" is not declared: the config has no "hosts:" section`
        : `Host "${host}" is not declared: the config names ${
          known.map((k) => `"${k}"`).join(", ")
        }`,
    );
    this.host = host;
    this.known = known;
  }
}

/** The step a host failed in. */
export type FleetStage = "discover" | "connect" | "plan" | "apply";

/** Why one host has no plan or no apply report. Plain data. */
export interface FleetHostError {
  /** Where it failed. */
  stage: FleetStage;
  /** The error class (`LibvirtError`, `SysfsRootError`, ...). */
  name: string;
  /** The message with its causes, joined by `: `. */
  message: string;
  /** libvirt's error code when the cause is a libvirt error, else `null`. */
  code: number | null;
}

/** The outcome for one host of a fleet. Plain data (`plan --json` / `apply --json`). */
export interface FleetHostResult {
  /** The key under `hosts:`. */
  name: string;
  /** Its libvirt URI. */
  uri: string;
  /** The plan, or `null` when the host failed before planning finished. */
  plan: Plan | null;
  /** The apply report (`apply` only; `null` when not applied or failed before). */
  report?: ApplyReport | null;
  /** What failed, or `null`. */
  error: FleetHostError | null;
}

/**
 * The hosts to run: every declared host in file order, or only those named (each must be
 * declared; throws {@link UnknownHostError}).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const h = (name: string) => ({ name, location: "", uri: "test:///default",
 *   discovery: "libvirt" as const, sysfs: null });
 * const config = { file: "c.yaml", version: 1 as const, vms: [], hosts: [h("a"), h("b")] };
 * assertEquals(selectHosts(config, ["b"]).map((x) => x.name), ["b"]);
 * ```
 */
export function selectHosts(config: Config, names?: readonly string[]): HostConfig[] {
  const hosts = config.hosts ?? [];
  if (names === undefined || names.length === 0) return hosts;
  const known = hosts.map((h) => h.name);
  for (const name of names) {
    if (!known.includes(name)) throw new UnknownHostError(name, known);
  }
  return hosts.filter((h) => names.includes(h.name));
}

function onHost(entry: { hosts?: string[] }, host: string): boolean {
  return entry.hosts === undefined || entry.hosts.includes(host);
}

/**
 * The config one host is planned with: the VMs that name it (or name no host), each with the
 * rules that name it (or name no host). A VM kept with no rule left is planned with none, which
 * removes the hostdevs passthrough added to it earlier on that host.
 *
 * @example
 * ```ts
 * import { parseConfig } from "../config/config.ts";
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const config = parseConfig(`version: 1
 * hosts: { a: { connect: "test:///default" }, b: { connect: "test:///default" } }
 * vms:
 *   render: { host: a, devices: [{ match: { class: vga } }] }
 *   build: { devices: [{ match: { class: nvme } }, { match: { class: usb }, host: b }] }
 * `, { file: "fleet.yaml" });
 * assertEquals(configForHost(config, "a").vms.map((vm) => vm.name), ["render", "build"]);
 * assertEquals(configForHost(config, "b").vms.map((vm) => vm.rules.length), [2]);
 * ```
 */
export function configForHost(config: Config, host: string): Config {
  const vms: VmConfig[] = config.vms
    .filter((vm) => onHost(vm, host))
    .map((vm) => ({ ...vm, rules: vm.rules.filter((rule) => onHost(rule, host)) }));
  const { hosts: _hosts, ...rest } = config;
  return { ...rest, vms };
}

/**
 * Runs `run` over `items` with at most `limit` running at once and returns the results in item
 * order. `run` should not throw (a rejection rejects the whole pool after the running ones end).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * let running = 0, peak = 0;
 * const out = await runBounded([1, 2, 3, 4, 5], {
 *   limit: 2,
 *   run: async (n) => {
 *     peak = Math.max(peak, ++running);
 *     await new Promise((r) => setTimeout(r, 5));
 *     running--;
 *     return n * 10;
 *   },
 * });
 * assertEquals([out, peak], [[10, 20, 30, 40, 50], 2]);
 * ```
 */
export async function runBounded<T, R>(
  items: readonly T[],
  options: { limit: number; run: (item: T, index: number) => Promise<R> },
): Promise<R[]> {
  if (!Number.isInteger(options.limit) || options.limit < 1) {
    throw new RangeError(`Invalid parallelism ${options.limit}: expected a whole number from 1`);
  }
  const results: R[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await options.run(items[index]!, index);
    }
  };
  const lanes = Array.from({ length: Math.min(options.limit, items.length) }, lane);
  await Promise.all(lanes);
  return results;
}

/** A {@link FleetHostError} from any thrown value, with its causes. */
export function hostError(stage: FleetStage, error: unknown): FleetHostError {
  const parts: string[] = [];
  let code: number | null = null;
  let current: unknown = error;
  while (current !== undefined && parts.length < 5) {
    if (current instanceof Error) {
      parts.push(current.message);
      const c = (current as { code?: unknown }).code;
      if (code === null && typeof c === "number") code = c;
      current = current.cause;
    } else {
      parts.push(String(current));
      current = undefined;
    }
  }
  return {
    stage,
    name: error instanceof Error ? error.name : typeof error,
    message: parts.join(": "),
    code,
  };
}

/** What a host was doing, for messages: "discover" becomes "discovering". */
const DOING: Record<FleetStage, string> = {
  discover: "discovering",
  connect: "connecting",
  plan: "planning",
  apply: "applying",
};

/**
 * The {@link FleetHostError} of a host that did not finish within `--host-timeout` (name
 * `HostTimeoutError`). Before `apply` nothing was written, and the message says so; during
 * `apply` some VMs may have been defined and others not, and the message says that the state is
 * unknown, never that anything succeeded.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const host = { name: "hv2", uri: "qemu+ssh://hv2/system" };
 * assertEquals(
 *   hostTimeoutError(host, { stage: "apply", seconds: 300 }).message,
 *   'Host "hv2" at "qemu+ssh://hv2/system" timed out after 300 s (--host-timeout) while ' +
 *     "applying: some VMs may be changed, others not: state unknown: check with plan",
 * );
 * ```
 */
export function hostTimeoutError(
  host: { name: string; uri: string },
  options: { stage: FleetStage; seconds: number },
): FleetHostError {
  const what = options.stage === "apply"
    ? "some VMs may be changed, others not: state unknown: check with plan"
    : "nothing was changed there";
  return {
    stage: options.stage,
    name: "HostTimeoutError",
    message: `Host "${host.name}" at "${host.uri}" timed out after ${options.seconds} s ` +
      `(--host-timeout) while ${DOING[options.stage]}: ${what}`,
    code: null,
  };
}

/** Whether a host's plan refuses anything (globally or for a VM). */
function planRefuses(plan: Plan): boolean {
  return plan.errors.length > 0 || plan.vms.some((vm) => vm.errors.length > 0);
}

/**
 * Whether anything in the fleet failed: a host error, a refusal in a plan, or a failed apply.
 * The CLI exits 1 when this holds.
 */
export function fleetFailed(results: readonly FleetHostResult[]): boolean {
  return results.some((r) =>
    r.error !== null || (r.plan !== null && planRefuses(r.plan)) ||
    (r.report != null && !r.report.ok)
  );
}

/** The fleet as `plan --json` prints it: `{ "hosts": [{ name, uri, plan, error }] }`. */
export function fleetPlanJson(results: readonly FleetHostResult[]): string {
  const hosts = results.map((r) => ({ name: r.name, uri: r.uri, plan: r.plan, error: r.error }));
  return JSON.stringify({ hosts }, null, 2) + "\n";
}

/**
 * The fleet as `apply --json` prints it: `{ "hosts": [{ name, uri, report, error }] }` (the
 * plans are left out, as for a single host).
 */
export function fleetApplyJson(results: readonly FleetHostResult[]): string {
  const hosts = results.map((r) => ({
    name: r.name,
    uri: r.uri,
    report: r.report ?? null,
    error: r.error,
  }));
  return JSON.stringify({ hosts }, null, 2) + "\n";
}
