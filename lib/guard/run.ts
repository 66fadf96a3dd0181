/**
 * One run of the hook's check, as `passthrough hook run` does it: only `prepare begin` is
 * checked, under the VM's and its rules' policies (`guard:`, recorded by `apply`); refusals
 * under `enforce` stop the start unless a one-shot allowance is waiting, those under `warn` are
 * only printed; the outcome is recorded in the state directory. Returns the exit code and the
 * lines for standard error, so the CLI only reads standard input and prints.
 *
 * @module
 */

import { isLinkLoop, linkLoopAt, type SysfsReader, SysfsTreeError } from "../host/sysfs.ts";
import type { HostUse, PciDevice } from "../host/types.ts";
import { gpuInUse, readHostUse } from "../host/sysfs_device.ts";
import { QEMU_STATUS_DIR, readStatusXml, vmDeviceUses } from "./vm_devices.ts";
import { readRecordsLeniently, scanNetworkInterfacesLeniently } from "../domain/lenient.ts";
import {
  checkDomainStart,
  formatRefusal,
  guardLine,
  type GuardRefusal,
  hostNeedsOverride,
  type StartTakes,
  unpassedOverride,
  unreadableRefusal,
} from "./check.ts";
import {
  type ActivePolicy,
  appliedRecord,
  checksNothing,
  ENFORCE,
  hostNeedsAllowed,
  hostNeedsRemedy,
  policyFor,
  type VmGuardPolicy,
  vmMemberRemedy,
} from "./policy.ts";
import { errorText } from "../render/error_text.ts";
import { flagWord, followUpCommand } from "../render/shell.ts";
import {
  DEFAULT_HOOKS_DIR,
  GUARD_DIR,
  GUARD_FOLDERS,
  GUARD_URI,
  guardPath,
  listedRefusals,
  MAX_LISTED_REFUSALS,
  POLICY_FILE,
} from "./layout.ts";

/** The most domain XML the check reads: far above any real definition, far below trouble. */
export const MAX_XML_BYTES = 16 * 1024 * 1024;

/** Where libvirt's network driver (system instance) keeps the status of running networks. */
const NETWORK_STATUS_DIR = "/run/libvirt/network";

/** Input of {@link runGuard}. */
export interface GuardRunOptions {
  /** The VM's name: libvirt's first hook argument. */
  vm: string;
  /** libvirt's operation (`prepare`, `start`, `release`, `migrate`, ...). */
  operation: string;
  /** libvirt's sub-operation (`begin`, `end`, ...). */
  subOperation: string;
  /** The domain XML from standard input; `null` when it exceeded {@link MAX_XML_BYTES}. */
  xml: string | null;
  /** Reads sysfs and `/proc` (the libc reader on the live host). */
  reader: SysfsReader;
  /** The sysfs root (`/sys`, or a captured tree for tests). */
  root: string;
  /** Whether `root` is this host's own sysfs (host use is then read from `/proc`). */
  live: boolean;
  /** The state directory: allowances read, refusals recorded. */
  stateDir: string;
  /**
   * The directory of the hook running the check, which the `passthrough hook status` its
   * refusals name is to read; default {@link DEFAULT_HOOKS_DIR}.
   */
  hooksDir?: string;
  /** Where `/proc` is; default `/proc`. */
  procRoot?: string;
  /**
   * Where the status of running libvirt networks is read (their hostdev pools); default
   * `/run/libvirt/network` on the live host, none for a captured tree.
   */
  networkStatusDir?: string;
  /**
   * Where the status of running QEMU domains is read (their block disks, whose controllers the
   * starting VM must not take); default `/run/libvirt/qemu` on the live host, none for a
   * captured tree.
   */
  qemuStatusDir?: string;
  /** Where `/dev` is, for those disks' paths; default `/dev` on the live host. */
  devRoot?: string;
  /** The time allowances are judged and refusals stamped with; default now. */
  now?: Date;
  /**
   * The libvirt connection whose VMs' starts this check guards, as `lockUri` names it: policies
   * recorded over another do not count. Default `qemu:///system`, the hook's; a test naming
   * the private daemon it applied over.
   */
  connection?: string;
}

/** What the hook should do. */
export interface GuardRunResult {
  /** 0 lets the start go on, 1 stops it. */
  code: 0 | 1;
  /** Lines for standard error (libvirt shows them in the start's error). */
  lines: string[];
  /**
   * Every reason found not to start, allowed or not, with the policy it was judged by; none
   * for a VM or rule whose policy is `off`.
   */
  refusals: PolicedRefusal[];
}

/** A refusal and the policy (`enforce` or `warn`) that judges it. */
export type PolicedRefusal = GuardRefusal & { policy: ActivePolicy };

/**
 * The status XML of a running network, read with `reader` from `dir` once per network; `null`
 * when there is none (or `dir` is `null`). A name with a `/` names no libvirt network (libvirt
 * refuses it).
 */
function networkStatusReader(
  reader: SysfsReader,
  dir: string | null,
): (name: string) => string | null {
  const read = new Map<string, string | null>();
  return (name) => {
    if (dir === null || name.includes("/") || name === "" || name.includes("\0")) return null;
    if (!read.has(name)) read.set(name, readStatusXml(reader, `${dir}/${name}.xml`));
    return read.get(name)!;
  };
}

/**
 * What the host uses among `devices`, as `plan` reads it, and on the live host also the GPUs a
 * process holds open, and the controllers under the block disks, USB and SCSI devices, network
 * interfaces (their networks' too, from the networks' status) and character devices the VM
 * itself uses (`own`) and the other running VMs use (which `plan` reads from their definitions).
 */
function hostUseOf(
  options: GuardCheckOptions,
  devices: PciDevice[],
  { own, groupMates, networkStatus }: StartTakes & {
    networkStatus: (name: string) => string | null;
  },
): HostUse[] | null {
  const procRoot = options.procRoot ?? "/proc";
  const uses = readHostUse(options.reader, {
    root: options.root,
    live: options.live,
    devices,
    procRoot,
  });
  // Which processes hold a GPU open is read now, at its detach: `plan` only warns of it. First,
  // as a device's first use is the one its refusal names: no `allow_host_critical` lifts a GPU
  // held open, while one lifts the console's GPU, which the same device may also be.
  if (uses !== null && options.live) {
    const addresses = devices.map((d) => d.address);
    uses.unshift(...gpuInUse(options.reader, { sysRoot: options.root, procRoot }, addresses));
  }
  const statusDir = options.qemuStatusDir ?? (options.live ? QEMU_STATUS_DIR : null);
  if (uses === null || statusDir === null) return uses;
  const roots = { sysRoot: options.root, devRoot: options.devRoot ?? "/dev", statusDir };
  // A network that does not run puts no guest on an interface now.
  const networkInterfaces = (name: string) => {
    const xml = networkStatus(name);
    const scan = xml === null ? null : scanNetworkInterfacesLeniently(xml);
    if (scan?.kind === "unreadable") {
      throw new Error(`the status of network ${JSON.stringify(name)}: ${scan.reason}`);
    }
    return scan?.kind === "bridged" ? scan.interfaces : [];
  };
  return [
    ...uses,
    ...vmDeviceUses(options.reader, roots, {
      vm: options.vm,
      devices,
      own,
      networkInterfaces,
      groupMates,
    }),
  ];
}

/** What {@link guardCheck} reads: a start's inputs without its operation, policy or state. */
export type GuardCheckOptions = Omit<
  GuardRunOptions,
  "operation" | "subOperation" | "stateDir" | "now"
>;

/**
 * Every reason the start guard finds not to start the domain `options.xml` now, before any
 * policy or allowance: what `rollback` asks of a backup before restoring it on this host.
 */
export function guardCheck(options: GuardCheckOptions): GuardRefusal[] {
  const { vm } = options;
  const unreadable = (reason: string): GuardRefusal[] => [unreadableRefusal(vm, reason)];
  if (options.xml === null) {
    return unreadable(`the domain XML is larger than ${MAX_XML_BYTES} bytes`);
  }
  try {
    const networkStatus = networkStatusReader(
      options.reader,
      options.networkStatusDir ?? (options.live ? NETWORK_STATUS_DIR : null),
    );
    return checkDomainStart({
      vm,
      xml: options.xml,
      reader: options.reader,
      root: options.root,
      networkStatus,
      hostUse: (devices, takes) => hostUseOf(options, devices, { ...takes, networkStatus }),
    });
  } catch (error) {
    // Deno refusing a read is no fault of the VM or its config: the hook's command lacks a
    // permission this check needs, as a hook written by an older passthrough does (the first
    // ones allowed reads of the state directory alone) once the clone is updated in place.
    if (error instanceof Deno.errors.NotCapable) {
      return [{
        ...unreadableRefusal(vm, `the hook's command does not allow a read: ${errorText(error)}`),
        fix: `install the hook again, as "${
          hookStatusCommand(options.hooksDir)
        }" says: its command lacks a permission the check needs (a hook written by an older passthrough)`,
      }];
    }
    // A damaged captured tree is no fault of the VM's definition either: a plan of the VM would
    // read the same tree, and fail as the check did.
    if (error instanceof SysfsTreeError) {
      return [{
        ...unreadableRefusal(vm, `the check failed: ${errorText(error)}`),
        fix: `capture the tree at ${options.root} again (passthrough snapshot DIR, as root, on ` +
          `the host it describes); see "${hookStatusCommand(options.hooksDir)}"`,
      }];
    }
    return unreadable(`the check failed: ${errorText(error)}`);
  }
}

/**
 * The names in `stateDir/guard/` (empty when either directory is missing), or `null` when they
 * cannot be listed. Two listings instead of a look-up per file: at almost every start nothing is
 * there, and a look-up that misses throws, which costs more than the listing.
 */
function guardListing(stateDir: string): ReadonlySet<string> | null {
  const names = (dir: string) => new Set([...Deno.readDirSync(dir)].map((e) => e.name));
  try {
    return names(stateDir).has(GUARD_DIR) ? names(guardPath(stateDir)) : new Set();
  } catch (error) {
    return error instanceof Deno.errors.NotFound ? new Set() : null;
  }
}

/** The name `replaceFileSync` writes a file under before renaming it into place. */
const TEMPORARY = /^\..*\.[0-9a-f-]{36}\.tmp$/;

/**
 * Whether the guard keeps anything in `stateDir` now: an allowance or a refusal record of any
 * VM, or a claim a killed start left (which the VM's next start removes). Only then can a start
 * that the check lets through have something to consume or clear. A temporary file a killed
 * writer left (`.VM.json.UUID.tmp`: a `guard allow` killed before its rename, which no start
 * removes) is none of these: counted, it would send every later start of every VM down the slow
 * path. A directory that cannot be listed counts as holding something, so its error is reported.
 */
function holdsGuardState(stateDir: string, listing: ReadonlySet<string> | null): boolean {
  return GUARD_FOLDERS.some((kind) => {
    if (listing !== null && !listing.has(kind)) return false;
    try {
      for (const entry of Deno.readDirSync(guardPath(stateDir, kind))) {
        if (!TEMPORARY.test(entry.name)) return true;
      }
      return false;
    } catch (error) {
      return !(error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory);
    }
  });
}

/**
 * Checks a start (only at `prepare begin`; every other operation passes untouched) under the
 * VM's recorded policy (`off` drops a VM's or rule's refusals, and a VM all `off` is not read at
 * all; `warn` prints them and lets the start go on, but never past a device the host needs; a
 * rule's `allow_host_critical: true` drops only the host-needs refusals of its recorded devices),
 * then takes the VM's allowance (which lets a start go on past changed identities, never past a
 * device the host needs) and records the outcome in the state directory. A start the check lets
 * through while the guard keeps nothing (the common case) loads no state code and writes
 * nothing: libvirt waits for this at every start, and the state code loads `node:` modules,
 * which take longer to load than the check takes to run.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "../host/sysfs.ts";
 * const result = await runGuard({ vm: "vm", operation: "release", subOperation: "end", xml: "",
 *   reader: denoFsReader(), root: "/nonexistent", live: false, stateDir: "/nonexistent" });
 * assertEquals(result, { code: 0, lines: [], refusals: [] });
 * ```
 */
export async function runGuard(options: GuardRunOptions): Promise<GuardRunResult> {
  if (options.operation !== "prepare" || options.subOperation !== "begin") {
    return { code: 0, lines: [], refusals: [] };
  }
  const listing = guardListing(options.stateDir);
  // The domain starting: policies and allowances count only for the one they were given for.
  // Read once, when first needed: each read scans the whole definition.
  let known: { uuid: string | null } | undefined;
  const uuid = () =>
    (known ??= { uuid: options.xml === null ? null : readRecordsLeniently(options.xml).uuid }).uuid;
  const { policy, problem } = listing !== null && !listing.has(POLICY_FILE)
    ? { policy: ENFORCE, problem: null }
    : (await import("./state.ts")).readVmPolicy(options.stateDir, options.vm, uuid(), {
      ...(options.connection === undefined ? {} : { connection: options.connection }),
    });
  const found = checksNothing(policy) ? [] : guardCheck(options);
  // Every address empty, or the check failing, may mean the tree is not there at all (a hook
  // whose --sysfs is gone) or loops: then nothing was checked, whatever the policy.
  // What could not be read is the domain's own (its XML too large, say) unless the tree loops.
  const missing = found.some((r) => r.kind === "missing");
  const unread = missing || found.some((r) => r.kind === "unreadable")
    ? unreadDevices(options.reader, options.root)
    : null;
  if (unread !== null && (missing || unread !== "")) {
    const line = `passthrough guard: refusing to start ${
      JSON.stringify(options.vm)
    }: cannot read ${options.root}/bus/pci/devices${unread}, so nothing was checked; see "${
      hookStatusCommand(options.hooksDir)
    }"`;
    return { code: 1, lines: [guardLine(line)], refusals: [] };
  }
  const refusals = policed(found, policy);
  if (refusals.length === 0 && !holdsGuardState(options.stateDir, listing)) {
    return { code: 0, lines: [], refusals };
  }
  const { recordRefusals, refusalRecordPath, takeAllowance } = await import("./state.ts");
  // The policy file could not be read, or was not recorded for this domain: said only when it
  // matters, since everything enforced.
  const lines: string[] = problem !== null && refusals.length > 0
    ? [`passthrough guard: ${problem}`]
    : [];
  let allowance: AllowanceOutcome = "none";
  try {
    const procRoot = options.procRoot ?? "/proc";
    allowance = takeAllowance(options.stateDir, options.vm, {
      uuid: uuid(),
      ...(options.connection === undefined ? {} : { connection: options.connection }),
      now: options.now,
      // A second daemon's start of the VM may hold a claim of its allowance now.
      alive: (pid) => options.reader.listDir(`${procRoot}/${pid}`) !== null,
    });
  } catch (error) {
    lines.push(
      `passthrough guard: cannot use its allowance (it does not count): ${errorText(error)}`,
    );
  }
  const { allowed, enforced } = verdict(refusals, allowance);
  lines.push(...verdictLines(refusals, {
    policy,
    allowed,
    allowance,
    vm: options.vm,
    uuid: allowance === "other-domain" ? uuid() : null,
    stateDir: options.stateDir,
  }));
  try {
    recordRefusals(options.stateDir, options.vm, refusals, {
      allowed,
      ...(options.now === undefined ? {} : { now: options.now }),
    });
  } catch (error) {
    // A write's error (the disk filled since the state directory's probe) names no file.
    const record = refusalRecordPath(options.stateDir, options.vm);
    lines.push(
      `passthrough guard: cannot record the refusal in "${record}": ${errorText(error)}`,
    );
  }
  // Each line as a refusal's: the VM's name in them is the definer's choice.
  return { code: enforced && !allowed ? 1 : 0, lines: lines.map(guardLine), refusals };
}

/**
 * Why the tree at `root` lists no PCI devices: `""` when `bus/pci/devices` is not there,
 * ` (a loop of symbolic links at "PATH")` when a loop on the way stops the listing; `null` when
 * they list, or another failure (a read Deno refuses) is left to the check's own refusal.
 */
function unreadDevices(reader: SysfsReader, root: string): string | null {
  const devices = `${root}/bus/pci/devices`;
  try {
    return reader.listDir(devices) === null ? "" : null;
  } catch (error) {
    // The captured tree's reader names the loop itself (its SysfsTreeError), libc's and Deno's
    // say ELOOP; either way it is named where it loops, as discovery names it.
    const loop = isLinkLoop(error) || (error instanceof SysfsTreeError && error.loop);
    return loop ? ` (a loop of symbolic links at "${linkLoopAt(root, devices)}")` : null;
  }
}

/**
 * The `passthrough hook status` that reads the hook running this check: without `--hooks-dir`
 * it reads libvirt's default directory, and says no hook is installed there.
 */
function hookStatusCommand(hooksDir: string | undefined): string {
  const command = "passthrough hook status";
  return hooksDir === undefined || hooksDir === DEFAULT_HOOKS_DIR
    ? command
    : `${command} ${flagWord("--hooks-dir", hooksDir)}`;
}

/** What a start's allowance came to. */
type AllowanceOutcome =
  | "allowed"
  | "expired"
  | "future"
  | "other-domain"
  | "other-connection"
  | "none";

/**
 * The refusals `policy` keeps, each with the policy it is judged by. A rule's own policy and its
 * `allow_host_critical` judge only a device whose record is the one apply left
 * ({@link appliedRecord}); any other record (a rule name edited in, a record copied from another
 * VM) is judged as strictly as the VM and its named rule, and its refusal says why.
 */
export function policed(
  found: readonly GuardRefusal[],
  policy: VmGuardPolicy,
): PolicedRefusal[] {
  return found.flatMap((refusal) => {
    // What could not be read may be a device the host needs: no policy or allowance lifts it.
    if (refusal.kind === "unreadable") return [{ ...refusal, policy: "enforce" as const }];
    const rule = refusal.recorded?.rule ?? null;
    const needed = refusal.hostNeeds !== null;
    const applied = refusal.recorded !== null &&
      appliedRecord(policy, refusal.address, refusal.recorded);
    const judged = policyFor(policy, rule, { hostNeeds: needed || !applied });
    const lifted = hostNeedsAllowed(policy, refusal.kind, rule);
    if (judged === "off" || (applied && lifted)) return [];
    const { unapplied, renamed, withdrawn } = unboundRule(refusal, policy);
    // The rule already says allow_host_critical, or may have a new name that does: its advice
    // would send the user in a circle, or to a rule the config no longer has.
    const override = withdrawn
      ? refusal.reason.replace(hostNeedsOverride(rule!), "").replace(unpassedOverride(rule!), "")
      : refusal.reason;
    const reason = unapplied
      ? `${override}; ${unappliedNote(refusal, policy)}`
      : renamed.length > 0
      ? `${override}; ${renamedNote(refusal, policy, renamed)}`
      : refusal.reason;
    // What binds a record the config gives the VM (one written before records were bound, say)
    // is an apply of the VM; a plan of it may show no change to make.
    const fix = unapplied ? `passthrough apply ${flagWord("--vm", refusal.vm)}` : refusal.fix;
    // The host's disk or network is never taken on a warning: only allow_host_critical lets it.
    return [{ ...refusal, reason, fix, policy: judged === "warn" && needed ? "enforce" : judged }];
  });
}

/**
 * Whether the rule `refusal`'s record names does not judge it as it says, its record not being
 * one apply left: `unapplied` when that rule's own laxer policy or `allow_host_critical` does not
 * count, else the VM's `renamed` rules (those relaxed, which a renamed rule may now be called);
 * `withdrawn` when "allow_host_critical on that rule" is no advice to give.
 */
function unboundRule(
  refusal: GuardRefusal,
  policy: VmGuardPolicy,
): { unapplied: boolean; renamed: string[]; withdrawn: boolean } {
  const rule = refusal.recorded?.rule ?? null;
  if (rule === null || appliedRecord(policy, refusal.address, refusal.recorded!)) {
    return { unapplied: false, renamed: [], withdrawn: false };
  }
  const needed = refusal.hostNeeds !== null;
  const unapplied = hostNeedsAllowed(policy, refusal.kind, rule) ||
    policyFor(policy, rule, { hostNeeds: needed }) !== policyFor(policy, rule, { hostNeeds: true });
  const renamed = unapplied ? [] : relaxedRules(policy, rule);
  const withdrawn = unapplied || renamed.some((r) => (policy.allowHostCritical ?? []).includes(r));
  return { unapplied, renamed, withdrawn };
}

/** Why the recorded rule's laxer policy did not judge `refusal`, whose record apply did not leave. */
function unappliedNote(refusal: GuardRefusal, policy: VmGuardPolicy): string {
  const rule = refusal.recorded!.rule;
  const lax = hostNeedsAllowed(policy, refusal.kind, rule)
    ? "allow_host_critical"
    : `guard: ${policyFor(policy, rule)}`;
  return `rule ${JSON.stringify(rule)}'s ${lax} does not count here: passthrough apply recorded ` +
    `no such device under it at ${refusal.address} for this VM (its record was edited, copied ` +
    "from another VM's definition, written since the VM was last applied, or last applied by " +
    "a passthrough that listed no records)";
}

/**
 * The rules other than `rule` whose policy `policy` makes laxer than the VM's, or that
 * `allow_host_critical`: what a rule renamed since its VM was last applied may be called now.
 */
function relaxedRules(policy: VmGuardPolicy, rule: string): string[] {
  const laxer = Object.keys(policy.rules).filter((r) =>
    policyFor(policy, r) !== policyFor(policy, r, { hostNeeds: true })
  );
  return [...new Set([...laxer, ...(policy.allowHostCritical ?? [])])].filter((r) => r !== rule);
}

/**
 * Why a device whose record names `rule` is judged strictly while the VM's policies relax
 * `others`: a rule renamed (and loosened) since the VM was last applied would keep its old name,
 * and its old policy, until an apply of the VM records the device under the new one.
 */
function renamedNote(refusal: GuardRefusal, policy: VmGuardPolicy, others: string[]): string {
  const relaxed = others.map((r) =>
    `${JSON.stringify(r)} (${
      (policy.allowHostCritical ?? []).includes(r) && policyFor(policy, r) === policy.guard
        ? "allow_host_critical"
        : `guard: ${policyFor(policy, r)}`
    })`
  ).join(", ");
  const apply = `passthrough apply ${flagWord("--vm", refusal.vm)}`;
  const rule = JSON.stringify(refusal.recorded!.rule);
  // The policy file cannot tell a rename from a rule kept beside a laxer one: say it as an if.
  return `the recorded policies relax only rule ${relaxed} for this VM, not ${rule}: if ${rule} ` +
    `was renamed since the VM was last applied, its devices are judged by that name until ` +
    `"${apply}" records them under the new one`;
}

/**
 * What lets a start take the device the host needs that `refusal` names; for a record apply did
 * not leave under a rule that allow_host_critical (or may now have been renamed to one), only an
 * apply of the VM, which records the device under the rule that takes it now (or removes it).
 */
function remedyOf(refusal: PolicedRefusal, policy: VmGuardPolicy): string {
  if (refusal.kind !== "host-needs" || !unboundRule(refusal, policy).withdrawn) {
    return hostNeedsRemedy(refusal, refusal.vm);
  }
  const apply = `"passthrough apply ${
    flagWord("--vm", refusal.vm)
  }", recording it under a rule with "allow_host_critical: true", does`;
  return refusal.group?.forVm === true ? vmMemberRemedy(refusal.vm, apply) : `only ${apply}`;
}

/**
 * Whether anything is enforced, and whether the allowance lets the start go on past it: past
 * identities that changed, never past the host's needs, nor past what could not be read (which
 * may be one).
 */
function verdict(
  refusals: readonly PolicedRefusal[],
  allowance: AllowanceOutcome,
): { enforced: boolean; allowed: boolean } {
  const enforced = refusals.filter((r) => r.policy === "enforce");
  const blocking = enforced.some((r) => r.hostNeeds !== null || r.kind === "unreadable");
  return {
    enforced: enforced.length > 0,
    allowed: enforced.length > 0 && allowance === "allowed" && !blocking,
  };
}

/**
 * The lines a start prints: each refusal, then why an allowance did not help. A new allowance
 * is to go to `stateDir`, where this hook reads it: `guard allow` finds the installed hook's
 * only in its default hooks directory, and a hook installed elsewhere (`--hooks-dir`) would
 * never see one written to the default state directory.
 */
function verdictLines(
  refusals: readonly PolicedRefusal[],
  { policy, allowed, allowance, vm, uuid, stateDir }: {
    policy: VmGuardPolicy;
    allowed: boolean;
    allowance: AllowanceOutcome;
    vm: string;
    /** The starting domain's `<uuid>`, when an allowance was given for another. */
    uuid: string | null;
    stateDir: string;
  },
): string[] {
  const lines = listedRefusals(refusals).map((refusal) =>
    formatRefusal(refusal, { allowed, warn: refusal.policy === "warn" })
  );
  const unlisted = refusals.length - MAX_LISTED_REFUSALS;
  if (unlisted > 0) {
    lines.push(
      `passthrough guard: and ${unlisted} more for ${
        JSON.stringify(vm)
      }, not listed (only ${MAX_LISTED_REFUSALS} are, here and in its record: those the host needs first)`,
    );
  }
  const enforced = refusals.filter((r) => r.policy === "enforce");
  const needed = enforced.filter((r) => r.hostNeeds !== null);
  const unread = enforced.filter((r) => r.kind === "unreadable");
  if (allowance === "allowed" && (needed.length > 0 || unread.length > 0)) {
    lines.push(
      `passthrough guard: "passthrough guard allow" does not let ${JSON.stringify(vm)} ${
        needed.length > 0
          ? `take a device the host needs (${
            [...new Set(needed.map((r) => remedyOf(r, policy)))].join("; ")
          })`
          : "start while the check cannot read what it needs (fix that first)"
      }; the allowance is used up`,
    );
  }
  if (enforced.length > 0 && allowance !== "allowed" && allowance !== "none") {
    // A new allowance lifts only identities that changed: with a device the host needs, or
    // what could not be read, among the refusals, it would not start the VM either.
    // The user's default URI may be another libvirt, where the VM is not (or another one is).
    const allow = followUpCommand({ stateDir, connect: GUARD_URI }, "passthrough guard allow", {
      value: vm,
    });
    const blocked = needed.length > 0 || unread.length > 0;
    if (allowance === "expired") {
      const again = blocked ? "" : `: run "${allow}" again to start it anyway`;
      lines.push(`passthrough guard: an allowance for ${JSON.stringify(vm)} had expired${again}`);
    } else if (allowance === "other-connection") {
      // A rehearsal's, over a test world or a session whose VM has this one's name and UUID.
      const again = blocked ? "" : `: run "${allow}" to start this one anyway`;
      lines.push(
        `passthrough guard: an allowance for ${
          JSON.stringify(vm)
        } was given by guard allow over another libvirt connection than ${GUARD_URI}, whose VMs this guard checks; it does not count and is used up${again}`,
      );
    } else if (allowance === "other-domain") {
      // Given before the VM was undefined and another defined under its name, or by a
      // passthrough that bound it to no definition: it was not meant for this one.
      const again = blocked ? "" : `: run "${allow}" again to start this one anyway`;
      lines.push(
        uuid === null
          ? `passthrough guard: an allowance for ${
            JSON.stringify(vm)
          } does not count: this definition's UUID cannot be read, to tell it is the VM the allowance was given for; it is used up${again}`
          : `passthrough guard: an allowance for ${
            JSON.stringify(vm)
          } was given for another VM defined under that name, not this one (UUID ${uuid}); it does not count and is used up${again}`,
      );
    } else {
      // Written later than this host's clock says it is now: not old, but dated ahead.
      const again = blocked
        ? ""
        : `; check the clock ("timedatectl"), then run "${allow}" on this host to start it anyway`;
      lines.push(
        `passthrough guard: an allowance for ${
          JSON.stringify(vm)
        } was dated ahead of this host's clock (the clock was set back since it was written, or it came from another host); it does not count and is used up${again}`,
      );
    }
  }
  return lines;
}
