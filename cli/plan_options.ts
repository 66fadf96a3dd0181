/**
 * The flags `plan` and `apply` share (`--config`, `--sysfs`, `--connect`, `--vm`, `--json`) and
 * the one function that turns them into a computed {@link Plan} with its open libvirt connection.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import type { Plan, VmPlan } from "../lib/plan_types.ts";
import { type Config, type HostConfig, loadConfig } from "../lib/config.ts";
import { planHostdevs } from "../lib/plan.ts";
import { type OpenLibvirtPort, openLibvirtPort } from "../ffi/port.ts";
import { openNodeDeviceSource } from "../ffi/nodedev_source.ts";
import { discoverViaLibvirt } from "../lib/nodedev_discovery.ts";
import { applyPlan, type ConfirmAnswer } from "../lib/apply.ts";
import {
  configForHost,
  type FleetHostResult,
  type FleetStage,
  hostError,
  runBounded,
} from "../lib/fleet.ts";
import type { HostTopology } from "../lib/types.ts";
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

// ---------------------------------------------------------------------------------------------
// Fleets: several hosts in one config.
//
// libvirt calls through FFI are synchronous, so hosts run in Web Workers (one per host being
// worked on, at most --parallel at once): each worker owns its libvirt connections for the whole
// plan-then-apply of its host, which the test driver needs (its state lives per connection), and
// libvirt's thread-local last error stays on the thread that made the call. Workers inherit the
// CLI's permissions and exchange plain data (config, plan, report) with the main thread; apply
// confirmations are asked by the main thread, the only one with the terminal.

/** Default of `--parallel`: how many hosts are discovered, planned and applied at once. */
export const DEFAULT_PARALLEL = 4;

/** Help lines for the fleet flags of `plan` and `apply`. */
export const FLEET_FLAGS_HELP = [
  "      --host NAME     with a hosts: config, only this host (repeatable)",
  `      --parallel N    with a hosts: config, hosts worked on at once (default ${DEFAULT_PARALLEL})`,
].join("\n");

/** `parseArgs` options for fleets. */
export const FLEET_FLAGS = {
  host: { type: "string", multiple: true },
  parallel: { type: "string" },
} as const satisfies ParseArgsConfig["options"];

/** Parses `--parallel N` (a whole number from 1). */
export function parseParallel(text: string | undefined): number {
  if (text === undefined) return DEFAULT_PARALLEL;
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < 1) {
    throw new UsageError(`Invalid --parallel "${text}": expected a whole number from 1`);
  }
  return n;
}

/** Loads the config named by `--config`, `PASSTHROUGH_CONFIG` or the default. */
export function loadPlanConfig(inputs: PlanInputs, io: CliIo): Promise<Config> {
  return loadConfig(inputs.config ?? io.env(CONFIG_ENV) ?? DEFAULT_CONFIG);
}

/** Discovers one fleet host the way its config entry says. */
export async function discoverFleetHost(host: HostConfig): Promise<HostTopology> {
  if (host.discovery === "libvirt") {
    using source = openNodeDeviceSource(host.uri);
    return discoverViaLibvirt(source);
  }
  return await loadHost(host.sysfs ?? undefined);
}

/** What applying one host needs besides its plan. */
export interface HostApplyOptions {
  /** This host's state directory (`STATE/hosts/NAME`). */
  stateDir: string;
  live: boolean;
  /** Asked per VM that would change; `null` answers `all` without asking. */
  confirm: ((vm: VmPlan) => Promise<ConfirmAnswer>) | null;
}

/** One host being worked on: plan, then maybe apply through the same connection, then close. */
export interface HostSession {
  /** Discovers, connects and plans. Never rejects: failures come back in `error`. */
  plan(): Promise<FleetHostResult>;
  /** Applies the plan made by {@link HostSession.plan}. Never rejects. */
  apply(options: HostApplyOptions): Promise<FleetHostResult>;
  close(): Promise<void>;
}

/** What a session is opened with (plain data: it crosses into a worker). */
export interface HostSessionInit {
  /** The whole config (the session keeps only this host's part). */
  config: Config;
  host: HostConfig;
  /** `--vm` names; the session plans those that are on this host. */
  vms?: string[];
}

/** Does the work of one host in this thread (the worker's body, and `--parallel 1`'s shortcut). */
function localSession(init: HostSessionInit): HostSession & { result: FleetHostResult } {
  const { host } = init;
  const result: FleetHostResult = { name: host.name, uri: host.uri, plan: null, error: null };
  let libvirt: OpenLibvirtPort | null = null;
  let stage: FleetStage = "discover";
  return {
    result,
    async plan() {
      try {
        stage = "discover";
        const topology = await discoverFleetHost(host);
        stage = "connect";
        libvirt = openLibvirtPort(host.uri);
        stage = "plan";
        const config = configForHost(init.config, host.name);
        const vms = init.vms?.filter((vm) => config.vms.some((v) => v.name === vm));
        result.plan = planHostdevs({
          config,
          host: topology,
          libvirt,
          ...(vms !== undefined ? { vms } : {}),
        });
      } catch (error) {
        result.error = hostError(stage, error);
      }
      return result;
    },
    async apply(options) {
      if (result.plan === null || libvirt === null) return result;
      try {
        result.report = await applyPlan(result.plan, {
          libvirt,
          stateDir: options.stateDir,
          live: options.live,
          confirm: options.confirm ?? (() => Promise.resolve("all")),
        });
      } catch (error) {
        result.report = null;
        result.error = hostError("apply", error);
      }
      return result;
    },
    close() {
      (libvirt as OpenLibvirtPort | null)?.close();
      libvirt = null;
      return Promise.resolve();
    },
  };
}

type ToWorker =
  | { op: "plan"; init: HostSessionInit }
  | { op: "apply"; stateDir: string; live: boolean; ask: boolean }
  | { op: "answer"; answer: ConfirmAnswer }
  | { op: "close" };

type FromWorker =
  | { op: "result"; result: FleetHostResult }
  | { op: "confirm"; vm: string }
  | { op: "closed" };

/**
 * Up to `size` host workers, reused from host to host: a worker costs a fresh isolate that loads
 * and compiles the planner (~0.3 s of CPU), so one per lane rather than one per host.
 */
export class HostWorkerPool implements Disposable {
  #idle: Worker[] = [];
  #all = new Set<Worker>();

  /** An idle worker, or a new one. */
  acquire(): Worker {
    const worker = this.#idle.pop() ?? new Worker(new URL(import.meta.url), { type: "module" });
    this.#all.add(worker);
    return worker;
  }

  /** Gives `worker` back; a broken one is terminated instead. */
  release(worker: Worker, options: { broken: boolean }): void {
    if (options.broken) {
      worker.terminate();
      this.#all.delete(worker);
    } else {
      this.#idle.push(worker);
    }
  }

  /** Terminates every worker. */
  close(): void {
    for (const worker of this.#all) worker.terminate();
    this.#all.clear();
    this.#idle = [];
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Runs one host in a Web Worker running this module, borrowed from `pool`. */
function workerSession(init: HostSessionInit, pool: HostWorkerPool): HostSession {
  const worker = pool.acquire();
  let waiting: ((message: FromWorker) => void) | null = null;
  let confirm: HostApplyOptions["confirm"] = null;
  let plan: Plan | null = null;
  let failed: string | null = null;
  let stage: FleetStage = "discover";
  const fail = (message: string) => {
    failed = message;
    const w = waiting;
    waiting = null;
    w?.({ op: "closed" });
  };
  worker.onmessage = async (event: MessageEvent<FromWorker>) => {
    const message = event.data;
    if (message.op === "confirm") {
      const vm = plan?.vms.find((v) => v.name === message.vm);
      const answer = confirm !== null && vm !== undefined ? await confirm(vm) : "all";
      worker.postMessage({ op: "answer", answer } satisfies ToWorker);
      return;
    }
    const w = waiting;
    waiting = null;
    w?.(message);
  };
  worker.onerror = (event: ErrorEvent) => {
    event.preventDefault();
    fail(event.message || "The host worker stopped");
  };
  const request = (message: ToWorker) =>
    new Promise<FromWorker>((resolve) => {
      if (failed !== null) return resolve({ op: "closed" });
      waiting = resolve;
      worker.postMessage(message);
    });
  const broken = (): FleetHostResult => ({
    name: init.host.name,
    uri: init.host.uri,
    plan,
    error: { stage, name: "WorkerError", message: failed ?? "The host worker stopped", code: null },
  });
  return {
    async plan() {
      const reply = await request({ op: "plan", init });
      if (reply.op !== "result") return broken();
      plan = reply.result.plan;
      return reply.result;
    },
    async apply(options) {
      stage = "apply";
      confirm = options.confirm;
      const reply = await request({
        op: "apply",
        stateDir: options.stateDir,
        live: options.live,
        ask: options.confirm !== null,
      });
      return reply.op === "result" ? reply.result : broken();
    },
    async close() {
      if (failed === null) await request({ op: "close" });
      worker.onmessage = null;
      worker.onerror = null;
      pool.release(worker, { broken: failed !== null });
    },
  };
}

/**
 * Whether this module can be a worker's entry: true from the source tree. In a `deno bundle`
 * file it is not (the bundle's entry would run the whole CLI again in the worker), so there hosts
 * run one after another in this thread.
 */
export const WORKERS_AVAILABLE = import.meta.url.endsWith("/cli/plan_options.ts");

/**
 * Opens a session for one host: in a Web Worker, or in this thread with `inProcess` (used with
 * `--parallel 1`, where a worker buys nothing) or when workers are not available.
 */
export function openHostSession(
  init: HostSessionInit,
  options: { inProcess: boolean; pool: HostWorkerPool },
): HostSession {
  return options.inProcess || !WORKERS_AVAILABLE
    ? localSession(init)
    : workerSession(init, options.pool);
}

/** Plans every host of `hosts`, at most `parallel` at once; results in `hosts` order. */
export async function planFleet(
  config: Config,
  options: { hosts: HostConfig[]; parallel: number; vms?: string[] | undefined },
): Promise<FleetHostResult[]> {
  using pool = new HostWorkerPool();
  return await runBounded(options.hosts, {
    limit: options.parallel,
    run: async (host) => {
      const session = openHostSession(
        { config, host, ...(options.vms ? { vms: options.vms } : {}) },
        { inProcess: options.parallel === 1, pool },
      );
      try {
        return await session.plan();
      } finally {
        await session.close();
      }
    },
  });
}

/** Serves {@link HostSession} requests when this module runs as a worker. */
function serveWorker(): void {
  const scope = globalThis as unknown as {
    postMessage(message: FromWorker): void;
    onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
    close(): void;
  };
  let session: ReturnType<typeof localSession> | null = null;
  let answer: ((answer: ConfirmAnswer) => void) | null = null;
  scope.onmessage = async (event) => {
    const message = event.data;
    if (message.op === "plan") {
      session = localSession(message.init);
      scope.postMessage({ op: "result", result: await session.plan() });
    } else if (message.op === "apply" && session !== null) {
      const ask = message.ask
        ? (vm: VmPlan) =>
          new Promise<ConfirmAnswer>((resolve) => {
            answer = resolve;
            scope.postMessage({ op: "confirm", vm: vm.name });
          })
        : null;
      const result = await session.apply({
        stateDir: message.stateDir,
        live: message.live,
        confirm: ask,
      });
      scope.postMessage({ op: "result", result });
    } else if (message.op === "answer") {
      const a = answer;
      answer = null;
      a?.(message.answer);
    } else if (message.op === "close") {
      await session?.close();
      scope.postMessage({ op: "closed" });
    }
  };
}

if (WORKERS_AVAILABLE && import.meta.main && "WorkerGlobalScope" in globalThis) serveWorker();
