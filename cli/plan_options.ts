/**
 * The flags `plan` and `apply` share (`--config`, `--sysfs`, `--connect`, `--vm`, `--json`) and
 * the one function that turns them into a computed {@link Plan} with its open libvirt connection.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import type { Plan, VmPlan } from "../lib/plan/types.ts";
import { type Config, type HostConfig, loadConfig } from "../lib/config/config.ts";
import { planHostdevs } from "../lib/plan/plan.ts";
import { type OpenLibvirtPort, openLibvirtPort } from "../ffi/port.ts";
import { openNodeDeviceSource } from "../ffi/nodedev_source.ts";
import { discoverViaLibvirt } from "../lib/host/nodedev.ts";
import { applyPlan, type ConfirmAnswer } from "../lib/apply/apply.ts";
import {
  configForHost,
  type FleetHostResult,
  type FleetStage,
  hostError,
  hostTimeoutError,
  runBounded,
} from "../lib/plan/fleet.ts";
import type { HostTopology } from "../lib/host/types.ts";
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

/**
 * Default of `--host-timeout`, in seconds: how long one host may work (discover, plan, apply;
 * not the time spent waiting for answers) before it is reported as failed. The slowest host
 * measured (20 VMs behind 0.5 s connect and 10 ms per request, in docs/FLEET.md) took ~14 s, so
 * 300 s leaves twenty times that for slow links and big hosts, while a hung daemon still costs
 * a run minutes, not forever.
 */
export const DEFAULT_HOST_TIMEOUT = 300;

/** The largest `--host-timeout` (a day; timers overflow past ~24.8 days). */
export const MAX_HOST_TIMEOUT = 86_400;

/** Help lines for the fleet flags of `plan` and `apply`. */
export const FLEET_FLAGS_HELP = [
  "      --host NAME     with a hosts: config, only this host (repeatable)",
  `      --parallel N    with a hosts: config, hosts worked on at once (default ${DEFAULT_PARALLEL})`,
  "      --host-timeout SECONDS",
  `                      with a hosts: config, seconds a host may take before it is reported as`,
  `                      failed (default ${DEFAULT_HOST_TIMEOUT}; 0: no limit)`,
].join("\n");

/** `parseArgs` options for fleets. */
export const FLEET_FLAGS = {
  host: { type: "string", multiple: true },
  parallel: { type: "string" },
  "host-timeout": { type: "string" },
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

/**
 * Parses `--host-timeout SECONDS` (a number from 0 to {@link MAX_HOST_TIMEOUT}; fractions
 * allowed) into milliseconds, or `null` for `0` (no limit).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * assertEquals([parseHostTimeout(undefined), parseHostTimeout("1.5"), parseHostTimeout("0")], [
 *   300_000,
 *   1_500,
 *   null,
 * ]);
 * ```
 */
export function parseHostTimeout(text: string | undefined): number | null {
  if (text === undefined) return DEFAULT_HOST_TIMEOUT * 1000;
  const seconds = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text.trim()) || !(seconds <= MAX_HOST_TIMEOUT)) {
    throw new UsageError(
      `Invalid --host-timeout "${text}": expected seconds from 0 (no limit) to ${MAX_HOST_TIMEOUT}`,
    );
  }
  return seconds === 0 ? null : Math.max(1, Math.round(seconds * 1000));
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

/**
 * `port` refusing every libvirt call once `cancelled()` holds (closing still works). A worker
 * whose host timed out is terminated while blocked in a libvirt call, but Deno runs its
 * JavaScript on when that call returns, up to the next pause of its event loop (verified: a
 * terminated worker went on writing files after its FFI call returned): without this guard an
 * apply given up on could go on to define the next VMs.
 */
function guardPort(port: OpenLibvirtPort, cancelled: () => boolean): OpenLibvirtPort {
  return new Proxy(port, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (typeof value !== "function" || key === "close" || key === Symbol.dispose) return value;
      return (...args: unknown[]) => {
        if (cancelled()) {
          throw new Error(`The host timed out: libvirt call "${String(key)}" not made`);
        }
        return Reflect.apply(value, target, args);
      };
    },
  });
}

/** What {@link localSession} reports to and hears from the thread that waits for it. */
interface LocalSessionHooks {
  /** Hears each step as it starts, so a host that times out is reported with its step. */
  onStage?: (stage: FleetStage) => void;
  /** Whether the host was given up on: no libvirt call is made after that. */
  cancelled?: () => boolean;
}

/**
 * Does the work of one host in this thread (the worker's body, and the shortcut of
 * `--parallel 1 --host-timeout 0`).
 */
function localSession(
  init: HostSessionInit,
  hooks: LocalSessionHooks = {},
): HostSession & { result: FleetHostResult } {
  const { onStage = () => {}, cancelled = () => false } = hooks;
  const { host } = init;
  const result: FleetHostResult = { name: host.name, uri: host.uri, plan: null, error: null };
  let libvirt: OpenLibvirtPort | null = null;
  let stage: FleetStage = "discover";
  const enter = (next: FleetStage) => {
    stage = next;
    onStage(next);
  };
  return {
    result,
    async plan() {
      try {
        enter("discover");
        const topology = await discoverFleetHost(host);
        enter("connect");
        libvirt = guardPort(openLibvirtPort(host.uri), cancelled);
        enter("plan");
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
      enter("apply");
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
  | {
    op: "plan";
    init: HostSessionInit;
    /** An `Int32Array` over it: element 0 becomes 1 when the host timed out. */
    cancel: SharedArrayBuffer;
  }
  | { op: "apply"; stateDir: string; live: boolean; ask: boolean }
  | { op: "answer"; answer: ConfirmAnswer }
  | { op: "close" };

type FromWorker =
  | { op: "ready" }
  | { op: "stage"; stage: FleetStage }
  | { op: "result"; result: FleetHostResult }
  | { op: "confirm"; vm: string }
  | { op: "closed" };

/**
 * Workers terminated while a libvirt call may still block their thread (a host that timed out),
 * in this process. Deno waits for every worker thread before the process ends, a terminated one
 * too, and a synchronous FFI call cannot be interrupted: see {@link endProcessIfHostsStuck}.
 */
let stuckWorkers = 0;

/**
 * Up to `size` host workers, reused from host to host: a worker costs a fresh isolate that loads
 * and compiles the planner (~0.3 s of CPU), so one per lane rather than one per host.
 */
export class HostWorkerPool implements Disposable {
  #idle: Worker[] = [];
  #all = new Set<Worker>();

  /**
   * An idle worker, or a new one; `ready` settles once it has loaded (a host's timeout starts
   * then: loading is this process's cost, not the host's) or failed to.
   */
  acquire(): { worker: Worker; ready: Promise<void> } {
    const idle = this.#idle.pop();
    if (idle !== undefined) return { worker: idle, ready: Promise.resolve() };
    const worker = new Worker(new URL(import.meta.url), { type: "module" });
    this.#all.add(worker);
    const ready = new Promise<void>((resolve) => {
      const done = () => {
        worker.removeEventListener("message", onMessage);
        worker.removeEventListener("error", done);
        resolve();
      };
      const onMessage = (event: MessageEvent<FromWorker>) => {
        if (event.data.op === "ready") done();
      };
      worker.addEventListener("message", onMessage);
      worker.addEventListener("error", done);
    });
    return { worker, ready };
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

  /**
   * Terminates `worker`, which is busy with a host that timed out. Its thread may stay blocked
   * inside libvirt until the call returns, which may be never.
   */
  abandon(worker: Worker): void {
    worker.terminate();
    this.#all.delete(worker);
    stuckWorkers++;
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

/** The entry module of the CLI: only its own process may be ended early. */
const CLI_MAIN = new URL("../main.ts", import.meta.url).href;

/**
 * Ends the process with `code` once the command has returned, when a host that timed out left a
 * worker thread blocked in libvirt: Deno would otherwise wait for that thread before exiting,
 * possibly forever. Only when `main.ts` is the main module (the CLI's own process): a test
 * runner calling `main()` must keep running, and must unblock its hung hosts itself.
 */
export function endProcessIfHostsStuck(code: number): void {
  if (stuckWorkers === 0 || Deno.mainModule !== CLI_MAIN) return;
  // A macrotask: main.ts has set Deno.exitCode and all output is written (synchronously) by then.
  setTimeout(() => Deno.exit(code), 0);
}

/** What a host worker's session is opened with besides the host. */
interface WorkerSessionOptions {
  pool: HostWorkerPool;
  /** The host's time budget in milliseconds (`--host-timeout`), or `null` for none. */
  timeout: number | null;
}

/**
 * At least this long is given to closing a host's connections after its work finished, even
 * when little of the budget is left (closing a remote connection is a round trip).
 */
const CLOSE_GRACE_MS = 1000;

/**
 * Runs one host in a Web Worker running this module, borrowed from `pool`. With a timeout, the
 * host's work is timed against one budget: the clock runs while the worker works on a request
 * (plan, apply, close) and stops while a question waits for the user. When it runs out the
 * worker is abandoned ({@link HostWorkerPool.abandon}) and the host reported as timed out.
 */
function workerSession(init: HostSessionInit, options: WorkerSessionOptions): HostSession {
  const { pool, timeout } = options;
  const { worker, ready } = pool.acquire();
  type Reply = FromWorker | { op: "timeout" };
  let waiting: ((reply: Reply) => void) | null = null;
  let confirm: HostApplyOptions["confirm"] = null;
  let plan: Plan | null = null;
  let failed: string | null = null;
  let timedOut = false;
  let stage: FleetStage = "discover";
  const cancel = new SharedArrayBuffer(4);

  // The budget: time spent so far, and since when the clock has been running.
  let spent = 0;
  let since: number | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const reply = (message: Reply) => {
    const w = waiting;
    waiting = null;
    w?.(message);
  };
  const expire = () => {
    since = null;
    timedOut = true;
    Atomics.store(new Int32Array(cancel), 0, 1);
    worker.onmessage = null;
    worker.onerror = null;
    pool.abandon(worker);
    reply({ op: "timeout" });
  };
  const startClock = (minimum = 0) => {
    if (timeout === null) return;
    since = performance.now();
    timer = setTimeout(expire, Math.max(minimum, timeout - spent));
  };
  const stopClock = () => {
    if (since === null) return;
    clearTimeout(timer);
    spent += performance.now() - since;
    since = null;
  };

  worker.onmessage = async (event: MessageEvent<FromWorker>) => {
    const message = event.data;
    if (message.op === "ready") return;
    if (message.op === "stage") {
      stage = message.stage;
      return;
    }
    if (message.op === "confirm") {
      // The user's thinking time is not the host's.
      stopClock();
      const vm = plan?.vms.find((v) => v.name === message.vm);
      const answer = confirm !== null && vm !== undefined ? await confirm(vm) : "all";
      if (timedOut || failed !== null) return;
      startClock();
      worker.postMessage({ op: "answer", answer } satisfies ToWorker);
      return;
    }
    stopClock();
    reply(message);
  };
  worker.onerror = (event: ErrorEvent) => {
    event.preventDefault();
    stopClock();
    failed = event.message || "The host worker stopped";
    reply({ op: "closed" });
  };
  const request = async (message: ToWorker, minimum = 0): Promise<Reply> => {
    await ready;
    if (failed !== null || timedOut) return { op: "closed" };
    return await new Promise<Reply>((resolve) => {
      waiting = resolve;
      startClock(minimum);
      worker.postMessage(message);
    });
  };
  const broken = (): FleetHostResult => ({
    name: init.host.name,
    uri: init.host.uri,
    plan,
    error: { stage, name: "WorkerError", message: failed ?? "The host worker stopped", code: null },
  });
  const expired = (): FleetHostResult => ({
    name: init.host.name,
    uri: init.host.uri,
    plan,
    ...(stage === "apply" ? { report: null } : {}),
    error: hostTimeoutError(init.host, { stage, seconds: (timeout ?? 0) / 1000 }),
  });
  return {
    async plan() {
      const answer = await request({ op: "plan", init, cancel });
      if (answer.op === "timeout") return expired();
      if (answer.op !== "result") return broken();
      plan = answer.result.plan;
      return answer.result;
    },
    async apply(options) {
      stage = "apply";
      confirm = options.confirm;
      const answer = await request({
        op: "apply",
        stateDir: options.stateDir,
        live: options.live,
        ask: options.confirm !== null,
      });
      if (answer.op === "timeout") return expired();
      return answer.op === "result" ? answer.result : broken();
    },
    async close() {
      if (timedOut) return;
      // The host's outcome is already known: a close that hangs only abandons the worker.
      if (failed === null) await request({ op: "close" }, CLOSE_GRACE_MS);
      if (timedOut) return;
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
 * `--parallel 1`, where a worker buys nothing) when no timeout applies, or when workers are not
 * available. A timeout needs a worker: a libvirt call that never returns blocks its thread, and
 * only another thread can stop waiting for it.
 */
export function openHostSession(
  init: HostSessionInit,
  options: { inProcess: boolean; pool: HostWorkerPool; timeout?: number | null },
): HostSession {
  const timeout = options.timeout ?? null;
  return (options.inProcess && timeout === null) || !WORKERS_AVAILABLE
    ? localSession(init)
    : workerSession(init, { pool: options.pool, timeout });
}

/**
 * A note for stderr when `--host-timeout` cannot be enforced (no workers: a `deno bundle` file),
 * else `null`.
 */
export function hostTimeoutNote(timeout: number | null): string | null {
  return timeout !== null && !WORKERS_AVAILABLE
    ? "Note: --host-timeout is not enforced here: without worker threads (a bundle), hosts run " +
      "in the main thread and a hung libvirt call cannot be given up on\n"
    : null;
}

/**
 * Plans every host of `hosts`, at most `parallel` at once; results in `hosts` order. A host
 * that takes longer than `timeout` milliseconds is reported as timed out.
 */
export async function planFleet(
  config: Config,
  options: {
    hosts: HostConfig[];
    parallel: number;
    vms?: string[] | undefined;
    timeout?: number | null;
  },
): Promise<FleetHostResult[]> {
  using pool = new HostWorkerPool();
  return await runBounded(options.hosts, {
    limit: options.parallel,
    run: async (host) => {
      const session = openHostSession(
        { config, host, ...(options.vms ? { vms: options.vms } : {}) },
        { inProcess: options.parallel === 1, pool, timeout: options.timeout ?? null },
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
      const cancel = new Int32Array(message.cancel);
      session = localSession(message.init, {
        onStage: (stage) => scope.postMessage({ op: "stage", stage }),
        cancelled: () => Atomics.load(cancel, 0) !== 0,
      });
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
  scope.postMessage({ op: "ready" });
}

if (WORKERS_AVAILABLE && import.meta.main && "WorkerGlobalScope" in globalThis) serveWorker();
