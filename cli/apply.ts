/**
 * `passthrough apply`: shows the plan, asks per VM, and defines the confirmed changes with a
 * backup before each define (see `lib/apply/apply.ts` for the guarantees).
 *
 * @module
 */

import { type CliIo, UsageError } from "./context.ts";
import { type Parsed, runFlags } from "./flags.ts";
import type { APPLY } from "./specs.ts";
import { type ComputedPlan, computePlan, HOST_CONFIG, planHasErrors } from "./plan_options.ts";
import { renderPlan, type RenderPlanOptions, renderVmPlan } from "./render_plan.ts";
import { makeConfirm } from "./confirm.ts";
import { applyJson, renderApplyReport } from "./render_apply.ts";
import { applyPlan, livePlan, type VmApplyResult } from "../lib/apply/apply.ts";
import type { DeviceIdentity, Plan, VmPlan } from "../lib/plan/types.ts";
import type { LibvirtPort } from "../lib/plan/libvirt_port.ts";
import type { PciAddress } from "../lib/host/types.ts";
import { parseDomainXml } from "../lib/domain/domain_xml.ts";
import {
  acquireConnectionLock,
  describeHolder,
  lockScopeNote,
  lockUri,
  type StateLock,
} from "../lib/state/lock.ts";
import { openStateDir, resolveStateDirPath, StateDirError } from "../lib/state/state_dir.ts";
import { resolve } from "../lib/state/paths.ts";
import { DEFAULT_KEEP_BACKUPS, MAX_KEEP_BACKUPS } from "../lib/state/backups.ts";
import type { Config } from "../lib/config/config.ts";
import { isRemoteUri } from "../lib/config/uri.ts";
import {
  bindDomains,
  bindRecords,
  describePolicies,
  guardPolicies,
  type GuardPolicyFile,
  keepStricterRulePolicies,
  stricterWhileApplying,
} from "../lib/guard/policy.ts";
import { type PolicyRecordOutcome, readPolicyFile, recordPolicies } from "../lib/guard/state.ts";
import { guardStateDirFor } from "../lib/guard/hook_file.ts";
import { GUARD_URI } from "../lib/guard/layout.ts";
import { errorText } from "../lib/render/error_text.ts";
import { redactSecrets } from "../lib/domain/secrets.ts";
import { connectionLostNote, deferSignals, keepIgnoredSignals } from "./signals.ts";

/** Runs `passthrough apply`: exit 1 when a VM failed or was refused. */
export async function run({ values }: Parsed<typeof APPLY>, io: CliIo): Promise<number> {
  // Before lspci runs: Deno then ends the process on a signal nohup asked to be ignored.
  keepIgnoredSignals();
  if (!values.yes && values.json) {
    throw new UsageError("--json needs --yes: questions would mix with the JSON");
  }
  const stateDir = resolveStateDirPath({ flag: values["state-dir"], env: io.env });
  const keepBackups = keepBackupsOf(values["keep-backups"]);
  // Checked and created once the config is read and the connection open (a config error leaves
  // no state directory behind), and the connection locked at once, so an unusable state
  // directory or a concurrent run on this host fails before any planning.
  const held: { lock?: StateLock } = {};
  try {
    using computed = await computePlan(values, io, {
      command: "apply",
      // Once a wrong command line (or one the config's host section contradicts) has been said.
      beforeConnect: () => {
        if (!values.yes && !io.interactive) {
          // A runtime error (exit 1): the command line is right, this run has no terminal.
          throw new Error("No terminal to confirm on: pass --yes to apply without asking");
        }
      },
      onConnect: (libvirt) => {
        const state = openStateDir(stateDir);
        held.lock = acquireConnectionLock(libvirt.uri, { stateDir: state.path, command: "apply" });
        const scope = lockScopeNote(held.lock);
        if (scope !== null) io.err(`${scope}\n`);
      },
    });
    return await applyComputed(computed, {
      values,
      io,
      stateDir,
      keepBackups,
      lock: held.lock!,
    });
  } finally {
    held.lock?.release();
  }
}

/** `--keep-backups N` as a number (`null` when absent), else a usage error. */
function keepBackupsOf(value: string | undefined): number | null {
  if (value === undefined) return null;
  const keep = /^\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!(keep <= MAX_KEEP_BACKUPS)) {
    throw new UsageError(
      `--keep-backups takes a number of backups from 0 (keep all) to ${MAX_KEEP_BACKUPS}, not "${value}"`,
    );
  }
  return keep;
}

/** Shows the plan, applies it under `lock`, prints the report; the exit code. */
async function applyComputed(
  { plan: computed, libvirt, config, facts, hardware, hostNow, keepBackups: section, startGuard }:
    ComputedPlan,
  { values, io, stateDir, keepBackups, lock }: {
    values: Parsed<typeof APPLY>["values"];
    io: CliIo;
    stateDir: string;
    keepBackups: number | null;
    lock: StateLock;
  },
): Promise<number> {
  const plan = values.live ? livePlan(computed) : computed;
  if (plan.example === true) {
    throw new Error(
      `Config ${plan.config} is the shipped example ("example: true"): apply refuses it. ` +
        `Copy it to ${HOST_CONFIG}, adapt it to this host, delete the "example: true" line, ` +
        `and name it with --config or $PASSTHROUGH_CONFIG`,
    );
  }
  const render = { color: io.color, live: values.live, names: plan.vms.map((vm) => vm.name) };
  if (!values.json) io.out(`${renderPlan(plan, render)}\n`);
  // From the first question to the guard's policies recorded: a stop asked for (Ctrl-C, kill, a
  // closed session) takes effect between VMs, never inside a define or a swap, and the report
  // still says what was done.
  using signals = deferSignals();
  const guard = guardRecording(config, {
    plan,
    libvirt,
    limited: values.vm !== undefined,
    flag: values["state-dir"],
    env: io.env,
  });
  const report = await applyPlan(plan, {
    libvirt,
    stateDir,
    confirm: makeConfirm(io, {
      yes: values.yes,
      // Questions asked apart from the plan (CliIo.prompt): the first one's diff was not seen.
      show: diffBeforeQuestion(plan, render, { planSeen: io.prompt === undefined }),
    }),
    live: values.live,
    keepBackups: keepBackups ?? section ?? DEFAULT_KEEP_BACKUPS,
    lock,
    devices: facts,
    hardware,
    hostNow,
    interrupted: () => signals.check(),
    run: runFlags(values),
    startGuard,
    checkpoint: (done) => recordWhileApplying(guard, done),
  });
  if (report.brokeStaleLock !== null && values.json) {
    io.err(`Note: removed a stale lock left by ${describeHolder(report.brokeStaleLock)}\n`);
  }
  io.out(
    values.json ? applyJson(report, plan) : renderApplyReport(report, { color: io.color, plan }),
  );
  const recorded = recordGuardPolicies(guard, {
    ...policySources(guard, report.vms),
    flag: values["state-dir"],
    uri: libvirt.uri,
    io,
    say: values.json ? io.err : io.out,
  });
  // Also one that came during the last define, seen only now.
  const stop = await signals.check(true);
  if (stop !== null) {
    io.err(
      `passthrough apply: stopped by ${stop}: the report above says which VMs were ` +
        `changed; those marked interrupted were not applied\n`,
    );
    // A define whose reply was lost, or one made whose read-back was (its backup not restored).
    const unknown = report.vms.some((vm) =>
      vm.code === "define-unknown" || (vm.code === "verify-failed" && !vm.restored)
    );
    const lost = connectionLostNote("apply", { signal: stop, uri: libvirt.uri, unknown });
    if (lost !== null) io.err(`${lost}\n`);
    return signals.status;
  }
  return report.ok && !planHasErrors(plan) && recorded ? 0 : 1;
}

/**
 * Whether a VM the config no longer names keeps its recorded policies (its devices stay): the
 * plan kept them (`vm-not-in-config`), or its release was declined, refused or undone, or
 * `--vm` (`limited`) left it out of the plan. A VM neither planned nor left out (libvirt no
 * longer has it, or it holds nothing passthrough added) keeps nothing, so none pile up.
 */
function droppedKept(
  plan: Plan,
  results: readonly VmApplyResult[],
  limited: boolean,
): (vm: string) => boolean {
  const planned = new Set(plan.vms.map((vm) => vm.name));
  const released = new Set(results.filter((r) => r.code === "applied").map((r) => r.vm));
  return (vm) => !released.has(vm) && (limited || planned.has(vm));
}

/** The `<uuid>` of each of the `settled` VMs' definitions as the apply left it (its plan's). */
function appliedDomains(plan: Plan, settled: ReadonlySet<string>): Map<string, string | null> {
  return new Map(
    plan.vms.filter((vm) => settled.has(vm.name)).map((vm) => [
      vm.name,
      parseDomainXml(vm.desiredXml).uuid,
    ]),
  );
}

/**
 * The uuid of each domain libvirt defines now, by name; none when they cannot be listed (the
 * policies of a VM the previous file bound to none are then bound to none).
 */
function definedDomains(libvirt: LibvirtPort): Map<string, string> {
  try {
    return new Map(libvirt.listDomains().map((d) => [d.name, d.uuid]));
  } catch {
    return new Map();
  }
}

/**
 * The records each of the `settled` VMs' definitions holds as the apply left it (its plan's
 * desired definition, written from the config), by the address each element passes (a VF's:
 * its PF's record): what the start guard lets its rules' policies judge.
 */
function appliedRecords(
  plan: Plan,
  settled: ReadonlySet<string>,
): Map<string, Record<PciAddress, DeviceIdentity>> {
  return new Map(
    plan.vms.filter((vm) => settled.has(vm.name)).map((vm) => {
      const { records, vfRecords } = parseDomainXml(vm.desiredXml);
      const byAddress = [
        ...records.map((record) => [record.address, record] as const),
        ...vfRecords.map((vf) => [vf.address, vf.pf] as const),
      ];
      return [vm.name, Object.fromEntries(byAddress)];
    }),
  );
}

/**
 * The rule names each VM of `config` records in its persistent definition as it is now, after
 * the apply: the names the start guard judges its devices by. A definition that cannot be read
 * is left out (its policies are then kept by the names the previous file listed).
 */
function recordedRules(libvirt: LibvirtPort, config: Config): Map<string, string[]> {
  const recorded = new Map<string, string[]>();
  for (const vm of config.vms) {
    const rules = rulesRecordedBy(libvirt, vm.name);
    if (rules !== null) recorded.set(vm.name, rules);
  }
  return recorded;
}

/** The rule names `vm`'s persistent definition records; `null` when it cannot be read. */
function rulesRecordedBy(libvirt: LibvirtPort, vm: string): string[] | null {
  try {
    const domain = parseDomainXml(libvirt.getPersistentXml(vm));
    return [
      ...new Set([...domain.records, ...domain.vfRecords.map((v) => v.pf)].map((r) => r.rule)),
    ];
  } catch {
    // Not there, or unreadable: the names the previous file listed stand in.
    return null;
  }
}

/**
 * {@link recordedRules} at a checkpoint of the apply: each VM's definition is read once before the
 * apply reaches it and once after (its define, or its skip), not again at every checkpoint, as
 * nothing else of this apply changes it (the record at the end reads them all again).
 */
function recordedRulesSoFar(
  recording: GuardRecording,
  done: readonly VmApplyResult[],
): Map<string, string[]> {
  const reached = new Set(done.map((r) => r.vm));
  const recorded = new Map<string, string[]>();
  for (const { name } of recording.config.vms) {
    let read = recording.rulesRead.get(name);
    if (read === undefined || (reached.has(name) && !read.reached)) {
      read = { reached: reached.has(name), rules: rulesRecordedBy(recording.libvirt, name) };
      recording.rulesRead.set(name, read);
    }
    if (read.rules !== null) recorded.set(name, read.rules);
  }
  return recorded;
}

/**
 * What to print before the question about a VM: its section of the plan again, so the question
 * sits right under its diff even when other VMs' sections or answers came in between. Nothing
 * for the first question when its VM's section is the last one printed where the question is
 * asked (`planSeen`): only the summary line stands between them.
 */
function diffBeforeQuestion(
  plan: Plan,
  render: RenderPlanOptions,
  { planSeen }: { planSeen: boolean },
): (vm: VmPlan) => string {
  let asked = 0;
  return (vm) => {
    asked++;
    if (planSeen && asked === 1 && plan.vms.at(-1) === vm) return "";
    return `\n${renderVmPlan(vm, render)}`;
  };
}

/** What the policies to record are bound to, read only when this host's hook records them. */
interface PolicySources {
  settled: ReadonlySet<string>;
  /** The records the settled VMs' definitions hold as the apply left them. */
  applied: () => ReadonlyMap<string, Readonly<Record<PciAddress, DeviceIdentity>>>;
  /** The uuids of the settled VMs' definitions as the apply left them, and of those defined. */
  domains: () => {
    applied: ReadonlyMap<string, string | null>;
    defined: ReadonlyMap<string, string>;
  };
  /** The rule names each VM's definition records now. */
  recorded: () => ReadonlyMap<string, readonly string[]>;
  /** Whether a VM the config no longer names keeps its previous policies. */
  keeps: (vm: string) => boolean;
}

/** What this apply records the start guard's policies from, and where. */
interface GuardRecording {
  config: Config;
  plan: Plan;
  libvirt: LibvirtPort;
  /** Whether `--vm` left VMs out of the plan. */
  limited: boolean;
  /** Where this host's hook reads them ({@link guardStateDirFor}); `null` for none. */
  target: ReturnType<typeof guardStateDirFor>;
  /**
   * The policies recorded before this apply over its connection (`null`: none, unreadable, or
   * recorded over another: a rehearsal's judged none of these VMs' starts), read first.
   */
  previous: GuardPolicyFile | null;
  /** The file there before this apply, whichever connection recorded it. */
  found: GuardPolicyFile | null;
  /** Whether a record while the apply ran changed the file. */
  touched: boolean;
  /** What the hook reads as far as this apply knows: `previous`, then each file it recorded. */
  recorded: GuardPolicyFile | null;
  /** Each VM's recorded rule names as a checkpoint last read them, and whether apply reached it. */
  rulesRead: Map<string, { reached: boolean; rules: string[] | null }>;
}

/** Where this apply records the guard's policies, and what was recorded there before it. */
function guardRecording(
  config: Config,
  { plan, libvirt, limited, flag, env }: {
    plan: Plan;
    libvirt: LibvirtPort;
    limited: boolean;
    flag: string | undefined;
    env: CliIo["env"];
  },
): GuardRecording {
  // The hook of that machine reads that machine's state directory: computePlan said so.
  const target = isRemoteUri(libvirt.uri) ? null : guardStateDirFor(libvirt.uri, flag, env);
  const found = target === null || target.unreadable !== null
    ? null
    : readPolicyFile(target.stateDir).file;
  // One recorded over another connection (a rehearsal's) judged none of these VMs' starts.
  const previous = found?.uri === undefined || found.uri === lockUri(libvirt.uri) ? found : null;
  return {
    config,
    plan,
    libvirt,
    limited,
    target,
    previous,
    found,
    touched: false,
    recorded: previous,
    rulesRead: new Map(),
  };
}

/**
 * What the policies to record are bound to once the VMs of `results` are done: those applied or
 * found unchanged are settled (their definitions hold the config's rule names now).
 */
function policySources(
  { config, plan, libvirt, limited }: GuardRecording,
  results: readonly VmApplyResult[],
): PolicySources {
  const settled = new Set(
    results.filter((r) => r.code === "applied" || r.code === "no-changes").map((r) => r.vm),
  );
  return {
    settled,
    applied: () => appliedRecords(plan, settled),
    domains: () => ({ applied: appliedDomains(plan, settled), defined: definedDomains(libvirt) }),
    keeps: droppedKept(plan, results, limited),
    recorded: () => recordedRules(libvirt, config),
  };
}

/**
 * Records, before each question (so before each define) and right after each define, what the
 * start guard judges each VM by while the apply runs ({@link stricterWhileApplying}): a settled
 * VM (one found unchanged among them) its new policies, any other
 * the stricter of its old and new ones, so a start between a define and the end of the apply
 * (or after the apply was killed) is never judged by laxer policies than either config gives.
 * Returns the VMs whose entry could not be recorded, each with why: they are not defined then,
 * since the hook would judge their starts by what it holds, maybe laxer (`guard: off`) than the
 * config's; the record at the end says the failure again.
 */
function recordWhileApplying(
  recording: GuardRecording,
  done: readonly VmApplyResult[],
): ReadonlyMap<string, string> {
  const { target, config, previous, found } = recording;
  if (target === null || target.unreadable !== null) return new Map();
  // Nothing recorded before nor now: every VM enforces throughout, and libvirt is not read. One
  // recorded over another connection is replaced from the first record on, as it ends.
  if (found === null && Object.keys(guardPolicies(config).vms).length === 0) return new Map();
  let file: GuardPolicyFile | null = null;
  try {
    const sources = {
      ...policySources(recording, done),
      recorded: () => recordedRulesSoFar(recording, done),
    };
    file = stricterWhileApplying(
      policiesToRecord(guardPolicies(config), {
        config,
        previous,
        uri: recording.libvirt.uri,
        ...sources,
      }),
      { previous, settled: sources.settled },
    );
    if (recordPolicies(target.stateDir, file) !== "unchanged") recording.touched = true;
    recording.recorded = file;
    return new Map();
  } catch (error) {
    const why = `the start guard's policies could not be recorded in ${target.stateDir} ` +
      `(${errorText(error)}), so its starts would be judged by those from before; make that ` +
      "directory writable and run passthrough apply again";
    // Unknown what to record: every VM waits. Known: those whose entry the hook holds already go.
    const held = (vm: string) => JSON.stringify(recording.recorded?.vms[vm] ?? null);
    const wanted = (vm: string) => file === null ? "?" : JSON.stringify(file.vms[vm] ?? null);
    return new Map(
      recording.plan.vms.filter((vm) => held(vm.name) !== wanted(vm.name)).map((vm) => [
        vm.name,
        why,
      ]),
    );
  }
}

/**
 * Records the config's start guard policies (`guard:`) where the installed hook reads them, for
 * every VM of the config whatever `--vm` says: they are settings of the hook, not domain edits,
 * so they do not wait for a confirmed change. Says what changed since before the apply; nothing
 * when nothing did (a config without `guard:` keys writes nothing). `false` when they could not
 * be recorded.
 */
function recordGuardPolicies(
  recording: GuardRecording,
  { flag, uri, io, say, ...sources }: PolicySources & {
    flag: string | undefined;
    uri: string;
    io: CliIo;
    say: (text: string) => void;
  },
): boolean {
  const { config, previous, target } = recording;
  const policies = guardPolicies(config);
  const named = describePolicies(policies);
  if (isRemoteUri(uri)) return true;
  if (target === null) {
    if (named.length > 0) {
      io.err(
        redactSecrets(
          `Note: start guard policies not recorded: the start guard guards the VMs of ` +
            `${GUARD_URI}, not those of "${uri}", and its state directory is not theirs; ` +
            "--state-dir DIR records them in DIR\n",
        ),
      );
    }
    return true;
  }
  const { stateDir, hook, unreadable } = target;
  if (unreadable !== null) {
    // Recorded elsewhere, they would be where the hook does not look.
    io.err(
      `Note: cannot read the installed hook ${unreadable} (permission denied): start guard ` +
        `policies not recorded where it reads them; run passthrough apply as root\n`,
    );
    return true;
  }
  const where = hook !== null && flag !== undefined && resolve(flag) !== stateDir
    ? `${stateDir} (the installed hook's state directory, not --state-dir)`
    : stateDir;
  try {
    const file = policiesToRecord(policies, { config, previous, uri, ...sources });
    const outcome = sinceBefore(recordPolicies(stateDir, file), { recording, file });
    if (outcome === "written") {
      say(`Start guard policies recorded in ${where}: ${describePolicies(file).join("; ")}\n`);
    } else if (outcome === "removed") {
      say(`Start guard policies removed from ${where}: every VM enforces\n`);
    }
    return true;
  } catch (error) {
    if (named.length === 0 && hook !== null && notOurs(error)) {
      return nothingToRecord(stateDir, error, io);
    }
    io.err(`Cannot record the start guard policies in ${stateDir}: ${errorText(error)}\n`);
    return false;
  }
}

/**
 * The file to record in `stateDir`: the config's `policies`, with those of the file there now
 * kept where they are stricter or their VM keeps them, bound to the VMs' records and uuids.
 */
function policiesToRecord(
  policies: GuardPolicyFile,
  { config, previous, uri, settled, applied, domains, recorded, keeps }: PolicySources & {
    config: Config;
    /** The file from before the apply; what could not be read keeps nothing (it enforced). */
    previous: GuardPolicyFile | null;
    /** The connection the apply is over: the hook takes only the system daemon's. */
    uri: string;
  },
): GuardPolicyFile {
  const kept = new Set(Object.keys(previous?.vms ?? {}).filter(keeps));
  const { vms } = bindDomains(
    bindRecords(
      keepStricterRulePolicies(policies, {
        config,
        previous,
        settled,
        kept,
        recorded: recorded(),
      }),
      { previous, applied: applied() },
    ),
    { previous, ...domains() },
  );
  return { version: policies.version, config: policies.config, uri: lockUri(uri), vms };
}

/**
 * What recording `file` at the end of the apply did to the file from before it: `outcome` (what
 * it did to the file the records during the apply left), unless those already made the change.
 */
function sinceBefore(
  outcome: PolicyRecordOutcome,
  { recording: { found, touched }, file }: { recording: GuardRecording; file: GuardPolicyFile },
): PolicyRecordOutcome {
  if (outcome !== "unchanged" || !touched) return outcome;
  const empty = Object.keys(file.vms).length === 0;
  const same = found === null ? empty : JSON.stringify(found) === JSON.stringify(file);
  return same ? "unchanged" : empty ? "removed" : "written";
}

/**
 * A config without policies whose hook's root-only state directory this user cannot write
 * (`error`): policies that can be read there are a failure (the hook still relaxes them); what
 * cannot be read is said, and the apply stands.
 */
function nothingToRecord(stateDir: string, error: unknown, io: CliIo): boolean {
  const why = errorText(error);
  const recorded = readPolicyFile(stateDir).file;
  const stale = recorded === null ? [] : describePolicies(recorded);
  if (stale.length > 0) {
    io.err(
      `Cannot remove the start guard policies in ${stateDir} (${why}): the hook still obeys ` +
        `${stale.join("; ")} (from ${recorded!.config}); run passthrough apply as root\n`,
    );
    return false;
  }
  io.err(
    `Note: start guard policies not checked: the installed hook's state directory ` +
      `${stateDir} is not this user's (${why}); any policies recorded there still apply: ` +
      `run passthrough apply as root to record this config's\n`,
  );
  return true;
}

/** Whether `error` says the state directory belongs to another user (the hook's, root's). */
function notOurs(error: unknown): boolean {
  return error instanceof Deno.errors.PermissionDenied ||
    (error instanceof StateDirError &&
      (error.problem === "foreign-owner" || error.problem === "unwritable"));
}
