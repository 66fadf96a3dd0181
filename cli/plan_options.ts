/**
 * The one function that turns the flags `plan` and `apply` share (`PLAN_FLAGS` in
 * `cli/flags.ts`) into a computed {@link Plan} with its open libvirt connection. One process
 * plans one host: with a shared config (`hosts:`), the section of `--host NAME` or of this
 * machine's host name.
 *
 * @module
 */

import type { Plan } from "../lib/plan/types.ts";
import type { HostTopology, PciAddress, PciDevice } from "../lib/host/types.ts";
import type { HostNow } from "../lib/apply/recheck.ts";
import type { HostFacts } from "../lib/host/preflight.ts";
import { type Config, loadConfig } from "../lib/config/config.ts";
import { isRemoteUri } from "../lib/config/uri.ts";
import { pickHostSection } from "../lib/config/host_section.ts";
import { planHostdevs } from "../lib/plan/plan.ts";
import { rulesStartGuard, type StartGuard } from "../lib/plan/issues.ts";
import { redactedJson } from "../lib/render/redact.ts";
import { redactSecrets } from "../lib/domain/secrets.ts";
import { type OpenLibvirtPort, openLibvirtPort } from "../ffi/port.ts";
import { type CliIo, UsageError } from "./context.ts";
import { runFlags } from "./flags.ts";
import { didYouMean } from "../lib/render/suggest.ts";
import {
  hostDeviceReader,
  hostFactsFor,
  hostReader,
  isLiveRoot,
  LIVE_SYSFS,
  loadHost,
} from "./host_options.ts";
import {
  checkConnectUri,
  type ConnectTarget,
  libvirtTimeout,
  withLibvirtTimeout,
} from "./connect.ts";
import type { GuardRefusalRecord } from "../lib/guard/state.ts";
import { guardStateDir, guardStateDirFor } from "../lib/guard/hook_file.ts";
import { guardPath, POLICY_FILE } from "../lib/guard/layout.ts";
import { lockUri } from "../lib/state/lock.ts";
import type { GuardPolicyFile } from "../lib/guard/policy.ts";
import { type PlanSummary, summarizePlan } from "./plan_summary.ts";

/** Environment variable naming the config file when `--config` is absent. */
const CONFIG_ENV = "PASSTHROUGH_CONFIG";
/** The config file used when neither `--config` nor `PASSTHROUGH_CONFIG` is given. */
const DEFAULT_CONFIG = "passthrough_config.yaml";
/** Where a host keeps its config: tried after {@link DEFAULT_CONFIG} when neither is given. */
export const HOST_CONFIG = "/etc/passthrough/passthrough_config.yaml";

/**
 * Whether nothing is at `path`; with `unseen`, also when this user may not look into its
 * directory: a working directory `su` or `sudo -u` left in root's home holds no config this user
 * could read, and the next place to look (the host's config) is the one meant.
 */
function isMissing(path: string, unseen = false): boolean {
  try {
    Deno.lstatSync(path);
    return false;
  } catch (error) {
    return error instanceof Deno.errors.NotFound ||
      (unseen && error instanceof Deno.errors.PermissionDenied);
  }
}

/**
 * The config path: `--config`, else `$PASSTHROUGH_CONFIG`, else the first of
 * {@link DEFAULT_CONFIG} and {@link HOST_CONFIG} that exists. None there: one line naming every
 * path tried and what to do (check a path the user named, else name one).
 */
export function configPath(flag: string | undefined, io: CliIo): string {
  // Empty is unset, as for $PASSTHROUGH_STATE_DIR (an empty path names no file).
  const env = io.env(CONFIG_ENV) || undefined;
  const tried: [string, string][] = flag !== undefined
    ? [[flag, "--config"]]
    : env !== undefined
    ? [[env, `$${CONFIG_ENV}`]]
    : [[DEFAULT_CONFIG, "current directory"], [HOST_CONFIG, "host config"]];
  const found = tried.find(([path, why]) => !isMissing(path, why === "current directory"));
  if (found !== undefined) return found[0];
  // A file the user named is mistyped or gone: naming one with --config is what they did.
  const fix = flag !== undefined || env !== undefined
    ? "nothing is there: check the path"
    : `name one with --config FILE or $${CONFIG_ENV}`;
  throw new Error(
    `No config file: tried ${tried.map(([path, why]) => `${path} (${why})`).join(", ")}: ` +
      `${fix}; a host keeps it in ${HOST_CONFIG}`,
  );
}

/** What {@link computePlan} needs, already parsed. */
export interface PlanInputs {
  config?: string | undefined;
  host?: string | undefined;
  sysfs?: string | undefined;
  connect?: string | undefined;
  vm?: string[] | undefined;
  /** `--state-dir`: where the start guard recorded its refusals (else the default). */
  "state-dir"?: string | undefined;
  /** `--allow-uri-programs`: open a URI that makes libvirt run a program. */
  "allow-uri-programs"?: boolean | undefined;
  /** `--libvirt-timeout`: how long one libvirt call may go unanswered. */
  "libvirt-timeout"?: string | undefined;
  /** `--json`: a libvirt that does not answer is reported as JSON too. */
  json?: boolean | undefined;
  /** `apply`'s `--keep-backups`, which a host section's `keep_backups:` may not repeat. */
  "keep-backups"?: string | undefined;
}

/** A plan together with the connection it was read through (close it when done). */
export interface ComputedPlan extends Disposable {
  plan: Plan;
  libvirt: OpenLibvirtPort;
  /** The config of the host planned (its host section), every VM of it whatever `--vm` says. */
  config: Config;
  /** The host's pre-flight facts the plan read (`apply` re-checks block disks with them). */
  facts: HostFacts;
  /** Reads a function of the planned host (its sysfs) as it is now, for `apply`'s re-check. */
  hardware: (address: PciAddress) => PciDevice | null;
  /** The planned host's IOMMU groups and use, as read and as they are now, for that re-check. */
  hostNow: HostNow;
  /** The host section's `keep_backups:`, else `null`. */
  keepBackups: number | null;
  /** The start guard at a VM's start, as the plan knew it, for `apply`'s messages. */
  startGuard: (vm: string) => StartGuard;
}

/** The config, tree and URI of the one host this process plans. */
interface HostInputs {
  config: Config;
  sysfs: string | undefined;
  connect: string | undefined;
  /** The host section's name when one was picked (for messages). */
  section: string | null;
  /** Where `connect` came from, for messages: `--connect` or `hosts.NAME.connect in FILE`. */
  connectOrigin: string;
  /** The section's `keep_backups:`, else `null`. */
  keepBackups: number | null;
}

/**
 * The host this process plans. Without `hosts:`, the config as is with the flags. With it, the
 * section of `--host` or of this machine's host name (said on stderr), whose `connect:`, `sysfs:`
 * and `keep_backups:` stand in for `--connect`, `--sysfs` and `--keep-backups`: giving both is a
 * usage error.
 */
function hostInputs(config: Config, inputs: PlanInputs, io: CliIo): HostInputs {
  const picked = pickHostSection(config, {
    flag: inputs.host,
    hostname: () => Deno.hostname(),
    option: "--host",
  });
  if (picked === null) {
    if (inputs.host !== undefined) {
      throw new UsageError(
        `--host needs a config with a "hosts:" section: ${config.file} has none`,
      );
    }
    return {
      config,
      sysfs: inputs.sysfs,
      connect: inputs.connect,
      section: null,
      connectOrigin: "--connect",
      keepBackups: null,
    };
  }
  const { host } = picked;
  const both = (flag: "sysfs" | "connect" | "keep-backups", value: unknown, say: string) => {
    if (inputs[flag] !== undefined && value !== null) {
      throw new UsageError(
        `--${flag} and hosts.${host.name}.${
          flag.replace("-", "_")
        } in ${config.file} both say ${say}: keep one`,
      );
    }
  };
  both("sysfs", host.sysfs, "where to look");
  both("connect", host.uri, "where to look");
  both("keep-backups", host.keepBackups, "how many backups to keep");
  const why = picked.pick === "flag" ? "--host" : "this machine's host name";
  io.err(`Host section "${host.name}" of ${config.file} (${why}), declared at ${host.location}\n`);
  return {
    config: picked.config,
    sysfs: host.sysfs ?? inputs.sysfs,
    connect: host.uri ?? inputs.connect,
    section: host.name,
    connectOrigin: host.uri === null
      ? "--connect"
      : `hosts.${host.name}.connect in ${config.file}, section declared at ${host.location}`,
    keepBackups: host.keepBackups,
  };
}

/**
 * Checks `--vm` names against the config (of host `section` when one was picked): a runtime
 * error (the command line is well formed, the config says otherwise) naming the closest VM and
 * every one it names.
 */
function checkVmNames(
  config: Config,
  section: string | null,
  vms: readonly string[] | undefined,
): void {
  const names = config.vms.map((vm) => vm.name);
  for (const vm of vms ?? []) {
    if (!names.includes(vm)) {
      throw new Error(
        `VM "${vm}" is not in ${config.file}${section === null ? "" : ` for host "${section}"`}${
          didYouMean(vm, names)
        }: it names ${names.map((n) => `"${n}"`).join(", ")}`,
      );
    }
  }
}

/**
 * Refuses another machine's libvirt with this machine's `/sys`: the plan would match that
 * host's VMs against this host's devices and this host's use of them.
 */
function checkRemoteHost(uri: string, sysfs: string | undefined, section: string | null): void {
  if (!isRemoteUri(uri) || !isLiveRoot(sysfs ?? LIVE_SYSFS)) return;
  throw new Error(
    `libvirt at "${uri}" is another machine, and this machine's /sys says nothing about its ` +
      `devices or what it uses: plan it from a tree captured there ('passthrough snapshot DIR' ` +
      `on that host, then --sysfs DIR${
        section === null ? "" : ` or hosts.${section}.sysfs: DIR`
      } here), ` +
      `or run passthrough on that host ` +
      `(ansible/passthrough.yml)`,
  );
}

/**
 * Discovers the host and opens libvirt at the same time: loading libvirt and opening the
 * connection block this thread, so they run while discovery's `lspci` child does. A discovery
 * failure is reported before a connection failure, as when the two ran one after the other.
 */
async function discoverWhileConnecting(
  sysfs: string | undefined,
  target: ConnectTarget,
): Promise<{ host: HostTopology; libvirt: OpenLibvirtPort }> {
  const discovery = loadHost(sysfs, { vendorNames: false });
  let libvirt: OpenLibvirtPort;
  try {
    libvirt = openLibvirtPort(target.uri, target.options);
  } catch (error) {
    await discovery;
    throw error;
  }
  try {
    return { host: await discovery, libvirt };
  } catch (error) {
    libvirt.close();
    throw error;
  }
}

/**
 * Loads the config, picks this process's host, discovers it, opens libvirt and plans. The
 * connection stays open so `apply` can re-check and define through the same one (the test
 * driver keeps state per connection). `beforeConnect` runs once the command line and the config
 * are checked, before the host is read or libvirt opened (`apply` refuses there to run without a
 * terminal, after any usage error). `onConnect` runs once the connection is open, before planning
 * (`apply` takes the connection's lock there). `options.command` names the command in the message
 * of a libvirt that does not answer.
 */
export async function computePlan(
  inputs: PlanInputs,
  io: CliIo,
  options: {
    command: "plan" | "apply";
    beforeConnect?: () => void;
    onConnect?: (libvirt: OpenLibvirtPort) => void;
  },
): Promise<ComputedPlan> {
  // A wrong command line before anything is read: a missing config (exit 1) would hide it.
  libvirtTimeout(inputs["libvirt-timeout"]);
  const loaded = await loadConfig(configPath(inputs.config, io));
  const { config, sysfs, connect, section, connectOrigin, keepBackups } = hostInputs(
    loaded,
    inputs,
    io,
  );
  checkVmNames(config, section, inputs.vm);
  const allowUriPrograms = inputs["allow-uri-programs"] === true;
  const target = withLibvirtTimeout(
    checkConnectUri(connect, connectOrigin, allowUriPrograms, io),
    {
      value: inputs["libvirt-timeout"],
      interactive: io.interactive,
      json: inputs.json === true,
      command: options.command,
    },
  );
  // Checked before discovery when the URI is known; libvirt's own default only once open.
  if (target.uri !== null) checkRemoteHost(target.uri, sysfs, section);
  options.beforeConnect?.();
  const { host, libvirt } = await discoverWhileConnecting(sysfs, target);
  try {
    checkRemoteHost(libvirt.uri, sysfs, section);
    options.onConnect?.(libvirt);
    const facts = hostFactsFor(sysfs);
    // Whether a hook is installed, and where it reads, whatever --state-dir says.
    const guard = guardStateDir(inputs["state-dir"], io.env, { hookFirst: true });
    // libvirt runs hooks from its own directory only; another host's tree says nothing of it.
    const known = isLiveRoot(sysfs ?? LIVE_SYSFS) && guard.unreadable === null;
    // The policies and refusals of these VMs: a test world's or a session's are not the hook's,
    // and another machine's are on it: this host's records are of this host's VMs.
    const guardDir = isRemoteUri(libvirt.uri)
      ? remoteGuardNote(libvirt.uri, options.command, io)
      : guardStateDirFor(libvirt.uri, inputs["state-dir"], io.env)?.stateDir ?? null;
    const guardPolicies = guardDir === null
      ? null
      : await recordedPolicies(guardDir, lockUri(libvirt.uri));
    const plan = planHostdevs({
      config,
      host,
      libvirt,
      facts,
      ...(inputs.vm ? { vms: inputs.vm } : {}),
      run: runFlags(inputs),
      ...(known ? { guardHook: guard.hook !== null } : {}),
      ...(guardPolicies === null ? {} : { guardPolicies }),
    });
    if (guardDir !== null) await addGuardRefusals(plan, guardDir);
    return {
      plan,
      libvirt,
      config,
      facts,
      hardware: hostDeviceReader(sysfs),
      hostNow: { planned: host, ...hostReader(sysfs) },
      keepBackups,
      startGuard: (vm) =>
        rulesStartGuard(
          config.vms.find((v) => v.name === vm) ?? { rules: [] },
          known ? guard.hook !== null : undefined,
        ),
      [Symbol.dispose]: () => libvirt.close(),
    };
  } catch (error) {
    libvirt.close();
    throw error;
  }
}

/**
 * For another machine's libvirt, whose start guard keeps its refusals and policies there: says so
 * once (for `apply`, also that the config's policies are not recorded here, with or without any),
 * and gives no directory.
 */
function remoteGuardNote(uri: string, command: "plan" | "apply", io: CliIo): null {
  const [here, there] = command === "plan"
    ? ["not shown here", "plan there to see them"]
    : ["neither shown nor recorded here", "apply there to record them"];
  io.err(
    redactSecrets(
      `Note: the start guard's refusals and policies for the VMs of "${uri}" are on that ` +
        `machine, ${here}: run passthrough ${there}\n`,
    ),
  );
  return null;
}

/**
 * The start guard's policies as the last apply recorded them in `stateDir` (the hook's), which it
 * judges a VM dropped from the config by; `null` when none are recorded, they cannot be read, or
 * an apply over another connection than `connection` recorded them (the guard then enforces).
 */
async function recordedPolicies(
  stateDir: string,
  connection: string,
): Promise<GuardPolicyFile | null> {
  // The guard's state module only when there is a file: `plan` loads no more than it reads.
  try {
    if (!Deno.statSync(guardPath(stateDir, POLICY_FILE)).isFile) return null;
  } catch {
    return null;
  }
  const { readPolicyFile } = await import("../lib/guard/state.ts");
  const { policiesForConnection } = await import("../lib/guard/policy.ts");
  const { file } = readPolicyFile(stateDir);
  // Recorded over another connection (a rehearsal's), they judge none of these VMs' starts.
  return file === null
    ? null
    : policiesForConnection(file, { path: guardPath(stateDir, POLICY_FILE), connection }).file;
}

/**
 * Shows, first among each planned VM's warnings, what the start guard last refused for it
 * (recorded in the state directory's guard/refused). An unreadable directory is skipped: the
 * record only informs.
 */
async function addGuardRefusals(plan: Plan, stateDir: string): Promise<void> {
  // The guard's state module only when there are records: `plan` loads no more than it reads.
  try {
    if (!Deno.statSync(guardPath(stateDir, "refused")).isDirectory) return;
  } catch {
    return;
  }
  const { guardRefusalIssue, readRefusalRecords } = await import("../lib/guard/state.ts");
  let records: GuardRefusalRecord[];
  try {
    records = readRefusalRecords(stateDir);
  } catch {
    return;
  }
  for (const record of records) {
    const vm = plan.vms.find((vm) => vm.name === record.vm);
    if (vm === undefined) continue;
    // What its definition names now, before this plan's changes (a refused VM's `keep` is all).
    const named = new Set([
      ...vm.keep,
      ...vm.remove,
      ...vm.move.map((m) => m.from),
      ...vm.repair?.remove ?? [],
      ...(vm.repair?.move ?? []).map((m) => m.from),
    ]);
    vm.warnings.unshift(guardRefusalIssue(record, named));
  }
}

/** Whether the plan refuses anything (globally or for a VM). */
export function planHasErrors(plan: Plan): boolean {
  return plan.errors.length > 0 || plan.vms.some((vm) => vm.errors.length > 0);
}

/**
 * The plan's counts under `summary` in `plan --json`: the numbers its summary line shows. `apply`
 * makes the repairs of refused VMs too, so a plan that refuses every VM may still change one.
 */
export function planCounts(plan: Plan): Omit<PlanSummary, "planned" | "unplanned"> {
  const { planned: _planned, unplanned: _unplanned, ...counts } = summarizePlan(plan);
  return counts;
}

/**
 * The plan as `plan --json` prints it: the {@link Plan} itself, its secrets shown as `***`, with
 * its counts under `summary`.
 */
export function planJson(plan: Plan): string {
  return redactedJson({ ...plan, summary: planCounts(plan) });
}
