/**
 * The apply engine: turns a {@link Plan} into defined domains, one confirmed VM at a time, with a
 * backup before every define and a check after it.
 *
 * Per VM: skip unless `changed` and free of errors (a refused VM with a `repair` gets that repair
 * alone, through the same steps); ask; re-read the persistent XML and stop if it
 * is no longer the XML the plan was computed from; re-read every other domain and stop if a device
 * the VM takes is now held by one of them beyond what the plan counted on (`conflict-changed`, see
 * `recheck.ts`); write a backup (no backup, no define); define `desiredXml` (libvirt validates
 * it); re-read and check that the PCI hostdevs (address, managed, owned) are exactly the planned
 * ones, each as libvirt renders what was defined, restoring the backup when they are not (unless
 * another client's define since is what differs).
 *
 * Secrets: the plan is computed from the definition read with `VIR_DOMAIN_XML_SECURE`, so the
 * backup, the comparison before the define and the define itself all use the XML with its
 * passwords, and none is lost. Messages redact them; so does everything the CLI prints.
 *
 * A VM that fails does not stop the others: each VM's change is independent, and the report says
 * exactly which VMs changed, which were skipped and which failed. Problems that would affect every
 * VM (unusable state directory, lock held) are thrown before anything is defined. The one
 * dependency: a device moving between VMs leaves its old VM first (that VM is asked first), and
 * the VM taking it is `blocked` when the old VM was not changed, so no device ends up in two
 * definitions. VMs swapping devices cannot go one after the other that way: they are asked
 * together before any is defined, and one that fails has the others `undone`.
 *
 * Running VMs: the define only changes the next-boot definition. With `live: true`, after all
 * defines, the removed hostdevs are detached from every running guest first and the added ones
 * attached after (so a device moving between two running VMs is free before it is attached), with
 * `VIR_DOMAIN_AFFECT_LIVE` only: the persistent side is already done by the define, and adding
 * `CONFIG` would add each device a second time. The attach takes the devices from the host at
 * once, minutes after the define when later VMs were asked about: a VM's devices are read again
 * as before its define, and none is attached when they changed.
 *
 * @module
 */

import { diffLines } from "diff";
import type { LibvirtPort } from "../plan/libvirt_port.ts";
import type { Plan, VmPlan } from "../plan/types.ts";
import type { PciAddress } from "../host/types.ts";
import {
  type DomainHostdev,
  heldAddresses,
  type ParsedDomain,
  parseDomainXml,
  sameBesidesHostdevs,
  samePciDevice,
} from "../domain/domain_xml.ts";
import {
  backupDir,
  type BackupEntry,
  DEFAULT_KEEP_BACKUPS,
  listBackups,
  pruneBackups,
  writeBackup,
} from "../state/backups.ts";
import { acquireConnectionLock, type LockHolder, lockUri, type StateLock } from "../state/lock.ts";
import { openStateDir, type StateDir } from "../state/state_dir.ts";
import { passwordsOnOneLine, redactSecrets } from "../domain/secrets.ts";
import { readWorld, type World } from "../plan/world.ts";
import { repairView } from "../plan/repair.ts";
import { ruleStartGuard, type StartGuard, startGuardDoes } from "../plan/issues.ts";
import {
  hardwareSincePlan,
  heldSincePlan,
  type HostNow,
  hostSincePlan,
  type ReadHostDevice,
} from "./recheck.ts";
import { type DeviceResolvers, withNetworks } from "../plan/used_devices.ts";
import { errorText } from "../render/error_text.ts";
import { followUpCommand, positionalCommand, type RunFlags } from "../render/shell.ts";

/** An answer to "apply this VM?": `all` says yes to the rest too, `quit` skips the rest. */
export type ConfirmAnswer = "yes" | "no" | "all" | "quit";

const CONFIRM_ANSWERS: readonly ConfirmAnswer[] = ["yes", "no", "all", "quit"];

/**
 * What happened to one VM: its definition was `changed`; it was `unchanged` (the plan changes
 * nothing); it was `skipped` (not attempted: refused, declined or blocked); or its apply `failed`.
 */
export type ApplyStatus = "changed" | "unchanged" | "skipped" | "failed";

/**
 * Why, as a machine-readable code:
 * - `applied`: defined and verified (status `changed`);
 * - `repaired`: the plan refuses the VM, but its repair (stale or host-needed hostdevs removed,
 *   moved cards followed, nothing else) was defined and verified (status `changed`; the message
 *   counts the refusals left);
 * - `no-changes`: the plan changes nothing (`unchanged`);
 * - `plan-errors`: the plan refuses the VM, or the whole plan has refusals (`skipped`);
 * - `declined`, `quit`: the user said no, or quit at this VM or before it (`skipped`);
 * - `blocked`: it takes a device or IOMMU group another VM still holds, because that VM was not
 *   changed (`skipped`);
 * - `invalid-plan`: the planned XML is unreadable, names another domain or uuid, or the domain is
 *   transient (`failed`);
 * - `read-failed`: libvirt could not return the definition or the other domains again, or the
 *   host's devices could not be read again to check them (`failed`);
 * - `drift`: the definition changed since the plan was made (`failed`);
 * - `conflict-changed`: another domain was given a device this VM takes since the plan was made
 *   (`failed`);
 * - `hardware-changed`: a device this VM takes is gone from the host, another card, or in another
 *   IOMMU group since the plan was made ({@link ApplyOptions.hardware}), or its group gained a
 *   function or the host uses it or a function of its group since then
 *   ({@link ApplyOptions.hostNow}) (`failed`);
 * - `backup-failed`: no backup could be written, so nothing was defined (`failed`);
 * - `define-failed`: libvirt refused the new definition (`failed`);
 * - `define-unknown`: the define's reply was lost (the daemon died): it may or may not have taken
 *   effect, and the backup is named (`failed`);
 * - `verify-failed`: the defined hostdevs are not the planned ones, or could not be read back to
 *   be checked; the backup was redefined when possible, never over another client's define or
 *   undefine read back in its place (`failed`);
 * - `undone`: defined, then its previous definition restored because a VM it swaps devices with
 *   failed (`failed`);
 * - `interrupted`: not asked nor applied, because the run was told to stop (`skipped`).
 *
 * In a swap (VMs taking devices from each other) every VM is asked before any is defined: one
 * declined or refused holds the others back (`blocked`), and one that fails undoes the others.
 */
export type ApplyCode =
  | "applied"
  | "repaired"
  | "no-changes"
  | "plan-errors"
  | "declined"
  | "quit"
  | "blocked"
  | "invalid-plan"
  | "read-failed"
  | "drift"
  | "conflict-changed"
  | "hardware-changed"
  | "backup-failed"
  | "define-failed"
  | "define-unknown"
  | "verify-failed"
  | "undone"
  | "interrupted";

/**
 * When a defined change reaches the guest: at its `next-start` (it was shut off), at its
 * `next-power-off` (it is running: a reboot inside the guest is not enough; or it has a managed
 * save image, which its next start resumes as saved), or `now` (hot-plugged into the running
 * guest with `live: true`, or another client started it from the new definition while apply ran).
 */
export type ApplyEffect = "next-start" | "next-power-off" | "now";

/**
 * `plan` as `apply` with `live: true` carries it out: a running VM's `vm-running` warning says its
 * hostdevs are hot-plugged now, not left for its next power-off (the planner words it for a
 * define alone).
 *
 * @example
 * ```ts
 * import { assertMatch } from "../../tests/helpers/assert.ts";
 * import type { Plan } from "../plan/types.ts";
 * const warning = { code: "vm-running" as const, message: "later", vm: "gentoo" };
 * const plan = { vms: [{ name: "gentoo", active: true, warnings: [warning] }] } as unknown as Plan;
 * assertMatch(livePlan(plan).vms[0]!.warnings[0]!.message, /--live hot-plugs/);
 * ```
 */
export function livePlan(plan: Plan): Plan {
  return {
    ...plan,
    vms: plan.vms.map((vm) => ({
      ...vm,
      warnings: vm.warnings.map((w) =>
        w.code === "vm-running"
          ? {
            ...w,
            message:
              `VM "${vm.name}" is running: --live hot-plugs the changed hostdevs now, and the new definition keeps them; what libvirt cannot hot-plug takes effect the next time it is powered off and started`,
          }
          : w
      ),
    })),
  };
}

/** Hot-plug results for a running VM (`live: true`). */
export interface LiveChange {
  /** Host addresses detached from the running guest. */
  detached: PciAddress[];
  /** Host addresses attached to the running guest. */
  attached: PciAddress[];
  /** One sentence per failed attach or detach. */
  errors: string[];
  /**
   * Whether its attach was not made because the re-check found the host's devices changed since
   * the plan: its definition is then not safe to start, rather than due at the next power-off.
   */
  refused: boolean;
}

/** The outcome for one VM. Plain data. */
export interface VmApplyResult {
  /** The VM's name. */
  vm: string;
  /** What happened. */
  status: ApplyStatus;
  /** Why, as a machine-readable code. */
  code: ApplyCode;
  /** One sentence for humans. */
  message: string;
  /** Host addresses of PCI hostdevs the definition gains. */
  added: PciAddress[];
  /** Host addresses of PCI hostdevs the definition loses. */
  removed: PciAddress[];
  /** Whether the VM was running at apply time (`null` when not asked). */
  active: boolean | null;
  /** When the change takes effect, for a changed VM. */
  effect: ApplyEffect | null;
  /** Path of the backup taken before the define, if one was written. */
  backup: string | null;
  /**
   * Paths of the VM's older backups removed once its change held (`keepBackups`), newest first.
   */
  pruned: string[];
  /** Why removing them stopped (the rest were kept), else `null`. */
  pruneError: string | null;
  /** `true` when a failed check was undone by redefining the backup. */
  restored: boolean;
  /** Hot-plug results, when `live` was asked and the VM is running. */
  live: LiveChange | null;
  /**
   * For a VM whose define took effect and held: the definition it replaced and the one libvirt
   * read back after the define (with secrets: `--json` prints them redacted), for a diff of what
   * changed; `null` otherwise.
   */
  definition: { before: string; after: string } | null;
}

/** The whole outcome. Plain data (`apply --json` prints it as is). */
export interface ApplyReport {
  /** The libvirt URI applied through. */
  uri: string;
  /** The state directory holding the backups. */
  stateDir: string;
  /** How many backups of its domain each changed VM kept (`0`: all; see `pruned`). */
  keepBackups: number;
  /** The dead holder of a stale lock that was broken, if any. */
  brokeStaleLock: LockHolder | null;
  /** One result per VM of the plan, in plan order. */
  vms: VmApplyResult[];
  /** VMs whose definition changed. */
  changed: string[];
  /** VMs with nothing to change. */
  unchanged: string[];
  /** VMs not applied: declined, quit, refused by the plan, blocked by another VM, interrupted. */
  skipped: string[];
  /** VMs whose apply failed (see each result's message). */
  failed: string[];
  /** Changed VMs whose hot-plug failed (their definitions did change). */
  liveFailed: string[];
  /** `true` when nothing failed. */
  ok: boolean;
}

/** Options for {@link applyPlan}. */
export interface ApplyOptions {
  /** The libvirt connection to re-read and define through. */
  libvirt: LibvirtPort;
  /** The state directory path (checked and created by {@link applyPlan}). */
  stateDir: string;
  /**
   * Asked once per VM that would change, in plan order. Any other answer than a
   * {@link ConfirmAnswer} throws a `TypeError` before that VM is touched.
   */
  confirm: (vm: VmPlan) => Promise<ConfirmAnswer>;
  /** Hot-plug the hostdev changes into running guests too. */
  live?: boolean;
  /** The clock, for backup names in tests. */
  now?: () => Date;
  /**
   * How many backups of its domain each changed VM keeps, its new one included: the older ones
   * go once every VM is applied (see {@link pruneBackups}). `0` keeps them all. Default:
   * {@link DEFAULT_KEEP_BACKUPS}.
   */
  keepBackups?: number;
  /**
   * The lock of this connection ({@link acquireConnectionLock}), when the caller already holds it
   * (the CLI takes it before planning, so a second run fails before doing any work). Default:
   * take it here and release it at the end.
   */
  lock?: StateLock;
  /**
   * Which PCI controllers are under a host device (the plan's `HostFacts`): the re-check before
   * each define then counts the controllers under the block disks, USB devices, network
   * interfaces (their networks', read again) and character devices other domains use as theirs,
   * as the plan did. Default: they are not re-checked.
   */
  devices?: DeviceResolvers;
  /**
   * Reads a PCI function of the planned host as it is now: before each define, a VM whose
   * devices are gone, another card, or in another IOMMU group since the plan is not applied
   * (`hardware-changed`). Default: the host is not read again.
   */
  hardware?: ReadHostDevice;
  /**
   * The planned host's IOMMU groups and use, as the plan read them and as they are now: with
   * `hardware`, before each define, a VM whose groups gained a function, or a device of whose
   * groups the host uses, since the plan is not applied (`hardware-changed`). Default: not
   * read again.
   */
  hostNow?: HostNow;
  /**
   * Asked before each VM (or each set of VMs swapping devices) is asked about and applied: a
   * reason (`SIGINT`, ...) stops the apply there, the VMs left skipped (`interrupted`), so a stop
   * asked for during a define comes after the define and its check, and never between two VMs
   * swapping devices (one device in two definitions). Default: never stopped.
   */
  interrupted?: () => Promise<string | null>;
  /**
   * The flags of this run (`--config`, `--host`, `--sysfs`, `--connect`, `--state-dir`) that the
   * `passthrough plan` and `passthrough rollback` a message advises repeat, so they read the same
   * config, tree, libvirt and backups. Default: none.
   */
  run?: RunFlags;
  /**
   * The start guard at a VM's start (its `guard:` policy, whether the hook is installed), which a
   * message about that start names. Default: unknown; the message says what `enforce` does.
   */
  startGuard?: (vm: string) => StartGuard;
  /**
   * Called before each VM (or each set of VMs swapping devices) is asked about (or found to need
   * no question), so also before it is defined, and right after its define, with the results so
   * far (those being defined among them after): the CLI records the start guard's policies there,
   * so a start during the apply is judged by the policies of the definition it may run, not by
   * those from before the apply. Must not throw. Returns the VMs whose policies could not be
   * recorded, each with why: they (and the VMs they swap devices with) are not defined (skipped,
   * `blocked`), since their starts would still be judged by laxer policies. Default: none.
   */
  checkpoint?: (done: readonly VmApplyResult[]) => ReadonlyMap<string, string>;
}

/** Host addresses in `b` and not in `a`. */
function minus(a: DomainHostdev[], b: DomainHostdev[]): DomainHostdev[] {
  const have = new Set(a.map((h) => h.address));
  return b.filter((h) => !have.has(h.address));
}

/** `0000:01:00.0 managed owned`, one per hostdev, sorted: what the check compares. */
function hostdevKeys(hostdevs: DomainHostdev[]): string[] {
  return hostdevs
    .map((h) =>
      `${h.address} ${h.managed ? "managed" : "unmanaged"} ${h.owned ? "owned" : "hand-added"}`
    )
    .sort();
}

/** `0000:07:10.0 interface 52:54:00:.. owned`, one per `<interface type='hostdev'>`, sorted. */
function interfaceKeys(domain: ParsedDomain): string[] {
  return domain.interfaces
    .map((i) => `${i.address} interface ${i.mac ?? "no-mac"} ${i.owned ? "owned" : "hand-written"}`)
    .sort();
}

/** A short account of how `after` differs from `before`: hostdevs first, then changed lines. */
export function describeXmlChange(before: string, after: string): string {
  const parts: string[] = [];
  try {
    const a = parseDomainXml(before).hostdevs;
    const b = parseDomainXml(after).hostdevs;
    const gained = minus(a, b).map((h) => h.address);
    const lost = minus(b, a).map((h) => h.address);
    if (gained.length > 0) parts.push(`hostdevs added ${gained.map((x) => `"${x}"`).join(", ")}`);
    if (lost.length > 0) parts.push(`hostdevs removed ${lost.map((x) => `"${x}"`).join(", ")}`);
  } catch {
    // Unparsable XML: the line summary below still says what changed.
  }
  // Compared line by line: a password over lines would show each line's part of it.
  const changed = diffLines(passwordsOnOneLine(before), passwordsOnOneLine(after)).flatMap((
    change,
  ) =>
    change.added || change.removed
      ? change.value.split("\n").filter((line) => line.trim() !== "").map((line) => ({
        sign: change.added ? "+" : "-",
        line,
      }))
      : []
  );
  // A line on both sides differs only in its spaces (multi-line text re-indented): shown with
  // them, or "+sudo: ALL", "-sudo: ALL" would say nothing.
  const signs = new Map<string, Set<string>>();
  for (const { sign, line } of changed) {
    signs.set(line.trim(), (signs.get(line.trim()) ?? new Set()).add(sign));
  }
  // Either side may come from a read with secrets: never quote a password in a message.
  const lines = changed.map(({ sign, line }) =>
    `${sign}${redactSecrets(signs.get(line.trim())!.size === 2 ? line.trimEnd() : line.trim())}`
  );
  if (lines.length > 0) {
    const shown = lines.slice(0, 3).map((l) => `"${l}"`).join(", ");
    parts.push(
      `${lines.length} changed line${lines.length === 1 ? "" : "s"} (${shown}${
        lines.length > 3 ? ", ..." : ""
      })`,
    );
  }
  return parts.length > 0 ? parts.join("; ") : "whitespace only";
}

/** A result with the fields every outcome shares. */
function result(
  vm: VmPlan,
  status: ApplyStatus,
  code: ApplyCode,
  message: string,
): VmApplyResult {
  return {
    vm: vm.name,
    status,
    code,
    message,
    added: [],
    removed: [],
    active: null,
    effect: null,
    backup: null,
    pruned: [],
    pruneError: null,
    restored: false,
    live: null,
    definition: null,
  };
}

interface PendingLive {
  result: VmApplyResult;
  /**
   * Why the devices to attach are no longer as planned (the define's re-check made again): the
   * attach comes after every later VM's question, minutes after the define.
   */
  changed: () => string[];
  /** The start guard at the VM's next start; `null`: its policies were not given. */
  start: StartGuard | null;
  /** The rules whose devices the attach takes, each judged by its own policy at that start. */
  rules: string[];
  /** Hostdevs and `vf:` interfaces, each by its host address and element text. */
  detach: Pick<DomainHostdev, "address" | "xml">[];
  attach: Pick<DomainHostdev, "address" | "xml">[];
}

/** The answers so far: `all` says yes to every VM left, `quit` skips them. */
interface Answers {
  all: boolean;
  quit: boolean;
}

/** Why `vm` is not applied without asking (refused, unchanged, blocked), or `null`. */
function skipWithoutAsking(
  vm: VmPlan,
  plan: Plan,
  done: ReadonlyMap<VmPlan, VmApplyResult>,
): VmApplyResult | null {
  // A repair only removes or follows hostdevs that must not stay: done whatever else is refused
  // (the plan follows no card while host-wide refusals stand), unless a card it follows is held.
  const repair = vm.errors.length > 0 && vm.repair !== undefined;
  if (!repair && plan.errors.length > 0) {
    // Host-wide refusals (no IOMMU, ...) make every VM's change unsafe.
    return result(vm, "skipped", "plan-errors", "Not applied: the plan has host-wide refusals");
  }
  if (!repair && vm.errors.length > 0) {
    const count = `${vm.errors.length} refusal${vm.errors.length === 1 ? "" : "s"}`;
    return result(vm, "skipped", "plan-errors", `Not applied: the plan refuses it (${count})`);
  }
  if (!repair && !vm.changed) return result(vm, "unchanged", "no-changes", "No changes");
  const blockers = takenFrom(vm, plan.vms, plan.groupOf).filter(({ from }) =>
    done.has(from) && done.get(from)!.status !== "changed"
  );
  if (blockers.length === 0) return null;
  // The device is still in the other VM's definition: defining this one too would hand one
  // device (or IOMMU group) to two VMs.
  const held = blockers.map(({ from, addresses }) =>
    `${addresses.map((a) => `"${a}"`).join(", ")}, which "${from.name}" still holds (${
      done.get(from)!.message
    })`
  );
  return result(vm, "skipped", "blocked", `Not applied: it takes ${held.join("; ")}`);
}

/** Asks about `vm` unless an earlier answer decided; a result when it is not applied. */
async function askFor(
  vm: VmPlan,
  answers: Answers,
  confirm: ApplyOptions["confirm"],
): Promise<VmApplyResult | null> {
  if (answers.quit) return result(vm, "skipped", "quit", "Not asked: quit earlier");
  if (answers.all) return null;
  const answer: unknown = await confirm(vm);
  // Fail closed: an answer of a script's own (a prompt's "n", a forgotten return) is no "yes".
  if (!CONFIRM_ANSWERS.includes(answer as ConfirmAnswer)) {
    throw new TypeError(
      `Invalid answer of confirm for VM "${vm.name}": ${
        typeof answer === "string" ? `"${answer}"` : String(answer)
      } (expected "yes", "no", "all" or "quit")`,
    );
  }
  if (answer === "quit") {
    answers.quit = true;
    return result(vm, "skipped", "quit", "Quit");
  }
  if (answer === "no") return result(vm, "skipped", "declined", "Declined");
  if (answer === "all") answers.all = true;
  return null;
}

/** The report of `results` (in plan order). */
function report(
  results: VmApplyResult[],
  context: {
    uri: string;
    stateDir: string;
    keepBackups: number;
    brokeStaleLock: LockHolder | null;
  },
): ApplyReport {
  const names = (status: ApplyStatus) =>
    results.filter((r) => r.status === status).map((r) => r.vm);
  const liveFailed = results.filter((r) => (r.live?.errors.length ?? 0) > 0).map((r) => r.vm);
  const failed = names("failed");
  return {
    ...context,
    vms: results,
    changed: names("changed"),
    unchanged: names("unchanged"),
    skipped: names("skipped"),
    failed,
    liveFailed,
    ok: failed.length === 0 && liveFailed.length === 0,
  };
}

/** `VIR_ERR_OPERATION_DENIED`: a read-only connection asked for a write or for secrets. */
const OPERATION_DENIED = 29;
/** `VIR_ERR_ACCESS_DENIED`: libvirt's access control refused this user the operation. */
const ACCESS_DENIED = 88;

/**
 * Throws, before any question, backup or define, when libvirt lets this connection only read:
 * its read-only socket (`libvirt-sock-ro`, which opens every connection read-only whatever the
 * client asks), or access control that denies this user a definition's secrets. Each VM failed
 * with libvirt's own words ("operation forbidden: virDomainGetXMLDesc with secure flag") instead.
 * Told by reading the first VM to change with its secrets, as its apply would; any other failure
 * is left to that VM.
 */
function checkWritable(plan: Plan, libvirt: LibvirtPort): void {
  const first = plan.vms.find((vm) => skipWithoutAsking(vm, plan, new Map()) === null);
  if (first === undefined) return;
  try {
    libvirt.getPersistentXml(first.name, { secure: true });
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code !== OPERATION_DENIED && code !== ACCESS_DENIED) return;
    const why = code === OPERATION_DENIED
      ? `libvirt at "${libvirt.uri}" answers this connection read-only`
      : `libvirt at "${libvirt.uri}" does not let this user read definitions with their secrets`;
    const fix = code === OPERATION_DENIED
      ? "connect through its read-write socket (libvirt-sock, not libvirt-sock-ro), as root or a user libvirt lets manage it"
      : "run as root, or as a user libvirt's access rules let write domains and read their secrets";
    throw new Error(
      `${why}: apply reads each definition with its secrets and defines it, so nothing was applied (${
        errorText(error)
      }); ${fix}`,
      { cause: error },
    );
  }
}

/**
 * Applies `plan`: see the module documentation for the exact sequence and guarantees. Throws
 * `StateDirError` or `LockHeldError` before anything is defined, and a `TypeError` when `confirm`
 * gives an answer it does not know (the VMs applied before it stay applied); per-VM problems are
 * reported in the returned {@link ApplyReport}.
 */
export async function applyPlan(plan: Plan, options: ApplyOptions): Promise<ApplyReport> {
  const state = openStateDir(options.stateDir);
  const { uri } = options.libvirt;
  using owned = options.lock === undefined
    ? acquireConnectionLock(uri, { stateDir: state.path, command: "apply" })
    : null;
  const lock = options.lock ?? owned!;
  if (lock.uri !== lockUri(uri)) {
    throw new TypeError(`The lock "${lock.path}" is not the lock of "${uri}"`);
  }
  checkWritable(plan, options.libvirt);
  const done = new Map<VmPlan, VmApplyResult>();
  const runningAfterDefine = new Map<VmApplyResult, RunningAfterDefine>();
  const pendingLive: PendingLive[] = [];
  const answers: Answers = { all: false, quit: false };
  for (const unit of releaseUnits(plan.vms, plan.groupOf)) {
    const stop = await options.interrupted?.() ?? null;
    if (stop !== null) {
      for (const vm of unit) {
        // Still said when it would not have been applied anyway (no changes, refused).
        done.set(
          vm,
          skipWithoutAsking(vm, plan, done) ??
            result(vm, "skipped", "interrupted", `Not applied: interrupted (${stop})`),
        );
      }
      continue;
    }
    // Before the question too: a VM found unchanged before it is judged by its new policies
    // while the user answers, not by those from before the apply.
    const unrecorded = options.checkpoint?.([...done.values()]);
    const why = unit.map((vm) => unrecorded?.get(vm.name)).find((w) => w !== undefined);
    if (why !== undefined) {
      for (const vm of unit) {
        done.set(
          vm,
          skipWithoutAsking(vm, plan, done) ??
            result(vm, "skipped", "blocked", `Not applied: ${why}`),
        );
      }
      continue;
    }
    const skipped = await skipOrAsk(unit, plan, done, answers, options.confirm);
    if (skipped !== null) {
      for (const [vm, outcome] of skipped) done.set(vm, outcome);
      continue;
    }
    const applied = applyUnit(unit, plan, { ...options, state });
    for (const [vm, outcome] of applied) {
      done.set(vm, outcome.result);
      if (outcome.running !== undefined) runningAfterDefine.set(outcome.result, outcome.running);
      if (outcome.live !== null) pendingLive.push(outcome.live);
    }
    options.checkpoint?.([...done.values()]);
  }
  if (options.live === true) runLive(options, pendingLive);
  const keepBackups = options.keepBackups ?? DEFAULT_KEEP_BACKUPS;
  for (const vm of done.values()) prune(vm, state, keepBackups);
  for (const vm of done.values()) lastLook(vm, options.libvirt, runningAfterDefine.get(vm));
  return report(plan.vms.map((vm) => done.get(vm)!), {
    uri: options.libvirt.uri,
    stateDir: state.path,
    keepBackups,
    brokeStaleLock: lock.brokeStale,
  });
}

/**
 * A VM defined while shut off, looked at once more just before the report: one started since its
 * look after the define (while later VMs were asked about, say) is told by its running hostdevs
 * ({@link startedWith}), as one caught right after the define is: a start runs the new
 * definition, but a `virsh restore` of a save file made before runs the old one as saved. A
 * start after this look is seen by no one, and the next start it waits for is then that one. Not
 * read is taken as still shut off. One found running after the define (`running`) is looked at
 * too: shut off since, or shut off and started again (told by its guest's ID; not read is taken
 * as the same guest).
 */
function lastLook(
  vm: VmApplyResult,
  libvirt: LibvirtPort,
  running: RunningAfterDefine | undefined,
): void {
  if (vm.status !== "changed" || vm.definition === null) return;
  if (vm.effect !== "next-start" && (vm.effect !== "next-power-off" || running === undefined)) {
    return;
  }
  try {
    if (!libvirt.isActive(vm.vm)) {
      if (running !== undefined) Object.assign(vm, shutOffSince(libvirt, vm.vm, running.summary));
      return;
    }
    const runId = running === undefined ? null : readRunId(libvirt, vm.vm);
    if (running !== undefined && (runId === null || runId === running.runId)) return;
  } catch {
    return;
  }
  const { before, after } = vm.definition;
  let started: StartedWith;
  try {
    started = startedWith(libvirt, vm.vm, {
      current: parseDomainXml(before),
      desired: parseDomainXml(after),
    });
  } catch (error) {
    started = { unknown: `its definitions cannot be read: ${errorText(error)}` };
  }
  const [effect, clause] = startedReport(started, running !== undefined);
  vm.active = true;
  vm.effect = effect;
  vm.message = `${running?.summary ?? vm.message}; ${clause}`;
}

/** The ID of the running guest `vm` ({@link LibvirtPort.runId}); `null` when not told. */
function readRunId(libvirt: LibvirtPort, vm: string): number | null {
  try {
    return libvirt.runId?.(vm) ?? null;
  } catch {
    return null;
  }
}

/**
 * Removes the older backups of a VM whose change held (not one undone, failed or skipped: its
 * backups are what puts it right), keeping `keep` of its domain on this connection, the new one
 * first.
 */
function prune(vm: VmApplyResult, state: StateDir, keep: number): void {
  if (vm.status !== "changed" || vm.backup === null || keep <= 0) return;
  try {
    const listed = listBackups(state, vm.vm);
    const taken = listed.find((b) => b.path === vm.backup);
    if (taken === undefined) return;
    const { removed, error } = pruneBackups(listed, {
      uuid: taken.uuid,
      uri: taken.uri,
      keep,
    });
    vm.pruned = removed.map((b) => b.path);
    vm.pruneError = error;
  } catch (error) {
    // The change held: a backup directory that cannot be read now costs its report nothing.
    vm.pruneError = errorText(error);
  }
}

/**
 * The VMs that release what `vm` takes: the same functions, or (with `groupOf`) any function of
 * an IOMMU group `vm` takes a function of, since VFIO assigns a group to one guest as a whole.
 * `addresses` are the released functions involved.
 */
function takenFrom(
  vm: VmPlan,
  vms: readonly VmPlan[],
  groupOf: Readonly<Record<PciAddress, number>> = {},
): { from: VmPlan; addresses: PciAddress[] }[] {
  const view = repairView(vm);
  const taking = new Set([...view.add.map((a) => a.address), ...view.move.map((m) => m.to)]);
  const takingGroups = new Set(
    [...taking].map((a) => groupOf[a]).filter((g): g is number => g !== undefined),
  );
  const out: { from: VmPlan; addresses: PciAddress[] }[] = [];
  for (const other of vms) {
    if (other === vm) continue;
    const gives = repairView(other);
    const released = [...gives.remove, ...gives.move.map((m) => m.from)];
    const addresses = [
      ...new Set(released.filter((a) => {
        const group = groupOf[a];
        return taking.has(a) || (group !== undefined && takingGroups.has(group));
      })),
    ].sort();
    if (addresses.length > 0) out.push({ from: other, addresses });
  }
  return out;
}

/**
 * `vms` in units to apply in turn: a VM releasing a device (or part of its group) comes before the
 * VM taking it (otherwise plan order), so a taker can be held back when the release did not
 * happen. VMs that take from each other (two VMs swapping devices, or a longer cycle) form one
 * unit, in plan order: none of them can go first alone without a device sitting in two
 * definitions until the others follow.
 */
function releaseUnits(
  vms: readonly VmPlan[],
  groupOf: Readonly<Record<PciAddress, number>> | undefined,
): VmPlan[][] {
  const takesFrom = new Map(vms.map((vm) => [vm, takenFrom(vm, vms, groupOf).map((t) => t.from)]));
  // Tarjan's strongly connected components: each is complete once every VM it takes from is
  // placed, so the units come out releasers first.
  const units: VmPlan[][] = [];
  const index = new Map<VmPlan, number>();
  const low = new Map<VmPlan, number>();
  const stack: VmPlan[] = [];
  const visit = (vm: VmPlan) => {
    index.set(vm, index.size);
    low.set(vm, index.get(vm)!);
    stack.push(vm);
    for (const from of takesFrom.get(vm)!) {
      if (!index.has(from)) {
        visit(from);
        low.set(vm, Math.min(low.get(vm)!, low.get(from)!));
      } else if (stack.includes(from)) {
        low.set(vm, Math.min(low.get(vm)!, index.get(from)!));
      }
    }
    if (low.get(vm) !== index.get(vm)) return;
    const unit = stack.splice(stack.indexOf(vm));
    units.push(unit.sort((a, b) => vms.indexOf(a) - vms.indexOf(b)));
  };
  for (const vm of vms) if (!index.has(vm)) visit(vm);
  return units;
}

/** `"a"`, `"a" and "b"`, `"a", "b" and "c"`. */
function quotedList(vms: readonly VmPlan[]): string {
  const names = vms.map((vm) => `"${vm.name}"`);
  return names.length < 2 ? names.join("") : `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
}

/**
 * Why the VMs of `unit` are not applied, each, or `null` when all are to be: a VM alone as
 * {@link skipWithoutAsking} and {@link askFor} decide; in a swap, every VM is settled (asked,
 * unless refused or unchanged) before any is defined, and the first one not applied holds the
 * others back, unasked.
 */
async function skipOrAsk(
  unit: readonly VmPlan[],
  plan: Plan,
  done: ReadonlyMap<VmPlan, VmApplyResult>,
  answers: Answers,
  confirm: ApplyOptions["confirm"],
): Promise<Map<VmPlan, VmApplyResult> | null> {
  for (const [i, vm] of unit.entries()) {
    const skipped = skipWithoutAsking(vm, plan, done) ??
      await askFor(repairView(vm), answers, confirm);
    if (skipped === null) continue;
    return new Map(unit.map((other, j) => {
      if (other === vm) return [other, skipped];
      // After a quit every VM not yet asked is a quit too, as outside a swap.
      if (j > i && answers.quit) {
        return [other, result(other, "skipped", "quit", "Not asked: quit earlier")];
      }
      const partners = unit.filter((o) => o !== other);
      const why = partners.length === 1
        ? `it swaps devices with "${vm.name}", which is not applied`
        : `it swaps devices with ${quotedList(partners)}, and "${vm.name}" is not applied`;
      return [
        other,
        result(other, "skipped", "blocked", `Not applied: ${why} (${skipped.message})`),
      ];
    }));
  }
  return null;
}

/**
 * One VM applied: its result (whose `definition.before` is the definition it replaced, for an
 * undo) and its pending hot-plug.
 */
interface Applied {
  result: VmApplyResult;
  live: PendingLive | null;
  /**
   * For a VM found running after its define and left to its next full power-off: the running
   * guest's ID then and the define's summary, for {@link lastLook} to tell a restart since.
   */
  running?: RunningAfterDefine;
}

/** See {@link Applied.running}. */
interface RunningAfterDefine {
  runId: number;
  summary: string;
}

/**
 * Applies the VMs of `unit` in turn (each its repair when the plan refuses it). In a swap, when
 * one fails, those already defined get their previous definitions back (`undone`) and the rest
 * are not attempted (`blocked`), so no device stays in two definitions; except after a define
 * that may or may not have taken effect, where either way could leave one device twice: the
 * messages say so.
 */
function applyUnit(
  unit: readonly VmPlan[],
  plan: Plan,
  options: ApplyOptions & { state: StateDir },
): Map<VmPlan, Applied> {
  const out = new Map<VmPlan, Applied>();
  for (const vm of unit) {
    const applied = vm.errors.length > 0 && vm.repair !== undefined
      ? applyRepair(vm, plan, options)
      : applyVm(vm, plan, options);
    out.set(vm, applied);
    if (applied.result.status !== "failed") continue;
    if (unit.length === 1) return out;
    const failure = `"${vm.name}", which it swaps devices with, failed (${applied.result.message})`;
    for (const other of unit) {
      const earlier = out.get(other);
      if (other === vm) continue;
      if (earlier === undefined) {
        out.set(other, {
          result: result(other, "skipped", "blocked", `Not applied: ${failure}`),
          live: null,
        });
      } else if (applied.result.code === "define-unknown") {
        earlier.result.message += `; ${failure}: run "${
          followUpCommand(options.run, "passthrough plan")
        }" before starting either`;
      } else {
        out.set(other, undo(earlier, options, failure));
      }
    }
    return out;
  }
  return out;
}

/**
 * `applied`'s define taken back (its previous definition defined again), because of `why`; not
 * when another client defined the VM since (`virsh edit` while the other VMs of the swap were
 * applied): see {@link restoreUnlessRedefined}.
 */
function undo(
  applied: Applied,
  { libvirt, run }: Pick<ApplyOptions, "libvirt" | "run">,
  why: string,
): Applied {
  const { result: done } = applied;
  const { before, after } = done.definition!;
  const rollback = followUpCommand(run, "passthrough rollback", { value: done.vm });
  let note: string;
  let restored = false;
  try {
    const changed = restoreUnlessRedefined(libvirt, done.vm, { before, expected: after });
    restored = changed === null;
    note = changed === null
      ? `its previous definition was restored`
      : `its previous definition was not restored: ${changed}, then run "${rollback}", or a device sits in two definitions`;
  } catch (error) {
    note = `restoring its previous definition failed (${
      errorText(error)
    }): run "${rollback}" now, or a device sits in two definitions`;
  }
  return {
    result: {
      ...done,
      status: "failed",
      code: "undone",
      restored,
      effect: null,
      live: null,
      // Not restored: the new definition stays, and says so.
      definition: restored ? null : done.definition,
      message: `${done.message}, then undone: ${why}; ${note}`,
    },
    live: null,
  };
}

/**
 * `item` cut down to what its running guest still needs: a device the definition loses but the
 * guest does not hold (added to the definition by an `apply` without `--live`) is not detached,
 * and one the definition gains that the guest holds already (hot-plugged by hand) is not attached;
 * libvirt refuses both ("device not found", "in use"), and the guest is already as planned. As it
 * was when the running definition cannot be read, or the guest is no longer running.
 */
function stillToHotplug(libvirt: LibvirtPort, item: PendingLive): PendingLive {
  let running: Set<PciAddress>;
  try {
    if (libvirt.getLiveXml === undefined) return item;
    running = new Set(heldAddresses(parseDomainXml(libvirt.getLiveXml(item.result.vm))));
    // A guest stopped since the define: libvirt gave its new persistent definition, which
    // holds everything planned; that is no running guest as planned, and the hot-plug says so.
    if (!libvirt.isActive(item.result.vm)) return item;
  } catch {
    return item;
  }
  return {
    ...item,
    detach: item.detach.filter((h) => running.has(h.address)),
    attach: item.attach.filter((h) => !running.has(h.address)),
  };
}

/** Detaches everything first, then attaches, across all running VMs (see module docs). */
function runLive(
  { libvirt, run }: Pick<ApplyOptions, "libvirt" | "run">,
  planned: PendingLive[],
): void {
  const change = { live: true, config: false };
  // Not attached, by the re-check's outcome: the definition holds what the host now needs, or
  // what it could not read again.
  const refused = new Map<PendingLive, Refused>();
  // Every guest read before any hot-plug: what one guest holds does not depend on another's.
  const pending = planned.map((item) => stillToHotplug(libvirt, item));
  // Every detach across all VMs before any attach: a device moving between two running guests
  // must be free first.
  const hotplug = (
    step: "detach" | "attach",
    call: (vm: string, xml: string) => void,
    failure: (address: PciAddress) => string,
  ) => {
    for (const item of pending) {
      const live = item.result.live!;
      // Attaching takes the devices from the host now: not one it came to need since the define.
      const why = step === "attach" && item.attach.length > 0 ? notToAttach(item) : null;
      if (why !== null) {
        refused.set(item, why);
        live.refused = true;
        live.errors.push(
          `Not attached: ${why.detail}: its definition holds them even so, and its next start would take them as they are now (${
            nextStart(item.start, item.rules)
          }): run "${
            followUpCommand(run, "passthrough rollback", { value: item.result.vm })
          }" to restore the definition it had, or the plan again`,
        );
        continue;
      }
      for (const hostdev of item[step]) {
        try {
          call(item.result.vm, hostdev.xml);
          (step === "detach" ? live.detached : live.attached).push(hostdev.address);
        } catch (error) {
          live.errors.push(`${failure(hostdev.address)}: ${errorText(error)}`);
        }
      }
    }
  };
  hotplug(
    "detach",
    (vm, xml) => libvirt.detachDevice(vm, xml, change),
    (address) => `Cannot detach "${address}" from the running guest`,
  );
  hotplug(
    "attach",
    (vm, xml) => libvirt.attachDevice(vm, xml, change),
    (address) => `Cannot attach "${address}" to the running guest`,
  );
  for (const item of pending) {
    const live = item.result.live!;
    if (live.errors.length === 0) {
      item.result.effect = "now";
      item.result.message = live.detached.length + live.attached.length === 0
        ? `${item.result.message}; the running guest already holds the planned hostdevs`
        : `${item.result.message}; hot-plugged into the running guest`;
    } else if (refused.has(item)) {
      item.result.message = `${item.result.message}; not hot-plugged into the running guest, as ${
        refused.get(item)!.unread
          ? "the host's devices could not be read again: not known to be safe to start as defined"
          : "the host's devices changed since the plan: not safe to start as defined"
      }`;
    } else {
      item.result.message =
        `${item.result.message}; hot-plug failed, the change takes effect at the next full power-off`;
    }
  }
}

/**
 * What the start guard does at the next start of a VM whose devices changed since its plan
 * ({@link startGuardDoes}): `warn` refuses it only for a device the host needs. The guard judges
 * a group's other functions only where the host needs one, one is on a host driver, or a running
 * VM was given one: an unbound function that joined a group is no refusal of its. It judges each
 * device by its rule's policy: `rules` that differ in what it does are named each. `null`: the
 * policies are not known (a library caller gave none), so what `enforce` does.
 */
function nextStart(start: StartGuard | null, rules: readonly string[]): string {
  if (start === null) {
    return `whether the start guard refuses that start depends on its "guard:" policies, which this apply was not given: under "guard: enforce", where it is installed, it refuses it ${REFUSED_ONLY}`;
  }
  const byWhat = new Map<ReturnType<typeof startGuardDoes>, string[]>();
  for (const rule of rules) {
    const does = startGuardDoes(ruleStartGuard(start, rule), false);
    byWhat.set(does, [...byWhat.get(does) ?? [], rule]);
  }
  if (byWhat.size <= 1) {
    return {
      none: "no start guard is installed to refuse that start",
      off: `its "guard: off" has the start guard let that start go on`,
      warn:
        `its "guard: warn" has the start guard warn and let that start go on, unless the host needs a device`,
      refuses: `the start guard refuses that start ${REFUSED_ONLY}`,
      unknown: `where the start guard is installed, it refuses that start ${REFUSED_ONLY}`,
    }[startGuardDoes(rules.length === 0 ? start : ruleStartGuard(start, rules[0]!), false)];
  }
  const each = [...byWhat].map(([does, named]) =>
    `for rule${named.length === 1 ? "" : "s"} ${named.map((r) => `"${r}"`).join(", ")} ${
      {
        none: "no start guard is installed",
        off: `("guard: off") it lets that start go on`,
        warn: `("guard: warn") it warns and lets that start go on, unless the host needs a device`,
        refuses: `it refuses that start ${REFUSED_ONLY}`,
        unknown: `where it is installed, it refuses that start ${REFUSED_ONLY}`,
      }[does]
    }`
  );
  return `the start guard judges each device by its rule's "guard:": ${each.join("; ")}`;
}

/** When the start guard, where it refuses, refuses a start of a VM whose devices changed. */
const REFUSED_ONLY = "only for a device it passes that is gone, another one, or one the host " +
  "needs, or another function of their IOMMU groups that the host needs, that is on a host driver, " +
  "or that a running VM was given";

/** Why a re-check refused an attach: the host's devices `unread`, else changed; in words. */
interface Refused {
  unread: boolean;
  detail: string;
}

/** Why `item`'s devices may not be attached now (its re-check), or `null` when they may. */
function notToAttach(item: PendingLive): Refused | null {
  try {
    const changed = item.changed();
    return changed.length === 0 ? null : {
      unread: false,
      detail: `since the plan was made, the host's devices changed: ${changed.join("; ")}`,
    };
  } catch (error) {
    // Not read is not unchanged; and a throw here would lose every later guest's attach and the
    // report of every define already made.
    return {
      unread: true,
      detail: `the host's devices cannot be read again (${errorText(error)})`,
    };
  }
}

/** A VM not applied: why, as a code and a sentence. */
interface Failure {
  code: ApplyCode;
  message: string;
}

function isFailure<T extends object>(value: T | Failure): value is Failure {
  return "code" in value && "message" in value;
}

/** The plan's two definitions of `vm`, parsed, when they describe this VM and only this VM. */
function readPlanned(vm: VmPlan): { current: ParsedDomain; desired: ParsedDomain } | Failure {
  const invalid = (why: string): Failure => ({
    code: "invalid-plan",
    message: `Cannot apply "${vm.name}": ${why}`,
  });
  let current: ParsedDomain;
  let desired: ParsedDomain;
  try {
    current = parseDomainXml(vm.currentXml);
    desired = parseDomainXml(vm.desiredXml);
  } catch (error) {
    return invalid(`the planned XML is unreadable: ${errorText(error)}`);
  }
  if (desired.name !== vm.name || current.name !== vm.name) {
    return invalid(`the planned XML names domain "${desired.name}"`);
  }
  if (desired.uuid === null || desired.uuid !== current.uuid) {
    return invalid(
      `the planned XML has uuid "${desired.uuid ?? ""}", the current one "${current.uuid ?? ""}"`,
    );
  }
  return { current, desired };
}

/** The definition of `vm` libvirt holds now (with its secrets), and its state. */
interface Now {
  secure: string;
  active: boolean;
  /** Whether it has a managed save image, which its next start resumes instead of booting. */
  saved: boolean;
  uuid: string;
  /** The running guest's ID, which tells a restart since (`null`: shut off, or not told). */
  runId: number | null;
}

/** Reads `vm` from libvirt again, refusing a transient domain. */
function readNow(vm: VmPlan, libvirt: LibvirtPort): Now | Failure {
  let now: Now;
  try {
    const secure = libvirt.getPersistentXml(vm.name, { secure: true });
    const active = libvirt.isActive(vm.name);
    now = {
      secure,
      active,
      saved: false,
      uuid: parseDomainXml(secure).uuid ?? "",
      runId: active ? readRunId(libvirt, vm.name) : null,
    };
  } catch (error) {
    return {
      code: "read-failed",
      message: `Cannot read the definition of "${vm.name}": ${errorText(error)}`,
    };
  }
  let persistent = true;
  try {
    persistent = libvirt.listDomains().find((d) => d.name === vm.name)?.persistent ?? true;
  } catch {
    // Listing is only a safety net here; the reads above already proved the domain exists.
  }
  now.saved = !now.active && hasSavedState(libvirt, vm.name);
  if (persistent) return now;
  // A transient domain has no persistent definition: defining one would make it permanent.
  return {
    code: "invalid-plan",
    message:
      `Not applied to "${vm.name}": it is a transient domain, and defining it would make it persistent`,
  };
}

/**
 * The XML to define: the plan's, refused when the definition changed since the plan. (Unchanged,
 * it has the plan's uuid: {@link readPlanned} checked the planned XML against it.)
 */
function xmlToDefine(vm: VmPlan, now: Pick<Now, "secure">): string | Failure {
  if (now.secure !== vm.currentXml) {
    return {
      code: "drift",
      message: `Not applied to "${vm.name}": its definition changed since the plan was made: ${
        describeXmlChange(vm.currentXml, now.secure)
      }; run the plan again`,
    };
  }
  return vm.desiredXml;
}

/**
 * Whether shut-off `vm` has a managed save image (`virsh managedsave`, libvirt-guests' suspend at
 * host shutdown), which its next start resumes instead of booting its definition; `false` when
 * the port cannot tell: it only says when a define takes effect, nothing depends on it.
 */
export function hasSavedState(libvirt: LibvirtPort, vm: string): boolean {
  try {
    return libvirt.hasManagedSave?.(vm) ?? false;
  } catch {
    return false;
  }
}

/**
 * What a define means for `vm` with a saved state ({@link hasSavedState}): libvirt resumes the
 * saved guest, with the devices it was saved with, so its next start is no boot of the new
 * definition (seen on a real libvirtd: no hostdev after the start).
 */
export function savedStateNote(vm: string): string {
  const discard = positionalCommand("virsh managedsave-remove", vm);
  return `; it has a saved state (virsh managedsave), which its next start resumes without this change: the change takes effect at its next full power-off, or at its next start after "${discard}" (the saved state is lost)`;
}

/** Why `vm`'s definition, read once more, is no longer the plan's (`drift`), or `null`. */
function unchangedBeforeDefine(vm: VmPlan, libvirt: LibvirtPort): Failure | null {
  let secure: string;
  try {
    secure = libvirt.getPersistentXml(vm.name, { secure: true });
  } catch (error) {
    return {
      code: "read-failed",
      message: `Cannot read the definition of "${vm.name}": ${errorText(error)}`,
    };
  }
  const xml = xmlToDefine(vm, { secure });
  return typeof xml === "string" ? null : xml;
}

/**
 * What a define that returned an error did: `rejected` only when the definition read back is the
 * one from before (or, for a VM not defined before, still none); `unknown` when it cannot be read
 * back (the connection was lost: the daemon may have committed the define before dying) or reads
 * back as something else.
 */
export type DefineFailure =
  | { kind: "rejected"; error: string }
  | { kind: "unknown"; error: string; why: string };

/**
 * Defines `xml` for the domain `name`, whose persistent definition read with secrets was
 * `before` (`null`: not defined); `null` when libvirt accepted it. A failed define is only called
 * `rejected` once a read-back proves nothing changed: an error may also mean the reply was lost
 * after the daemon committed the define.
 */
export function defineOrExplain(
  libvirt: LibvirtPort,
  { name, xml, before }: { name: string; xml: string; before: string | null },
): DefineFailure | null {
  try {
    libvirt.define(xml);
    return null;
  } catch (error) {
    let now: string | null;
    try {
      now = libvirt.listDomains().some((d) => d.name === name)
        ? libvirt.getPersistentXml(name, { secure: true })
        : null;
    } catch (readError) {
      return {
        kind: "unknown",
        error: errorText(error),
        why: `its definition cannot be read back: ${errorText(readError)}`,
      };
    }
    if (now === before) return { kind: "rejected", error: errorText(error) };
    return {
      kind: "unknown",
      error: errorText(error),
      why: now === null
        ? "it is no longer defined"
        : before === null
        ? "it is now defined"
        : `its definition reads back changed: ${describeXmlChange(before, now)}`,
    };
  }
}

/**
 * The last check before `vm`'s backup and define: every domain read again, and `vm` refused when
 * a device it takes is now held elsewhere beyond what the plan counted on.
 */
function recheckHolders(
  vm: VmPlan,
  plan: Plan,
  { libvirt, devices }: ApplyOptions,
): Failure | null {
  let world: World;
  try {
    // The networks only say which NICs a VM's interfaces use: read when those count.
    world = readWorld(libvirt, { networks: devices !== undefined });
  } catch (error) {
    return {
      code: "read-failed",
      message:
        `Not applied to "${vm.name}": cannot read the other domains again to check that nothing it takes is held elsewhere: ${
          errorText(error)
        }`,
    };
  }
  const resolvers = devices === undefined ? undefined : withNetworks(devices, world.networks);
  const problems = heldSincePlan(vm, plan, world, resolvers);
  if (problems.length === 0) return null;
  return {
    code: "conflict-changed",
    message: `Not applied to "${vm.name}": since the plan was made, ${
      problems.join("; ")
    }; defining it now would put a device in two definitions: run the plan again`,
  };
}

/**
 * The definition libvirt holds after the define, read back (`after`), why it is not the planned
 * one (`problem`, with what it is: `text`), or why it could not be read back to be checked
 * (`unread`).
 */
function verifyDefined(
  libvirt: LibvirtPort,
  vm: VmPlan,
  desired: ParsedDomain,
): { after: string } | { problem: string; text: string } | { unread: string } {
  try {
    const text = libvirt.getPersistentXml(vm.name, { secure: true });
    const after = parseDomainXml(text);
    const want = [...hostdevKeys(desired.hostdevs), ...interfaceKeys(desired)];
    const got = [...hostdevKeys(after.hostdevs), ...interfaceKeys(after)];
    const altered = alteredDevices(desired, after);
    const same = want.join("\n") === got.join("\n");
    if (same && altered.length === 0) return { after: text };
    const missing = want.filter((k) => !got.includes(k));
    const extra = got.filter((k) => !want.includes(k));
    const problems = [
      ...(same ? [] : [
        `expected hostdevs missing [${missing.join(", ")}], unexpected [${extra.join(", ")}]`,
      ]),
      ...(altered.length === 0 ? [] : [
        `${altered.map((a) => `"${a}"`).join(", ")} read back other than defined`,
      ]),
    ];
    return { problem: problems.join("; "), text };
  } catch (error) {
    return { unread: errorText(error) };
  }
}

/**
 * Defines `xml` for a backed-up VM, checks it, and restores the backup when the check fails
 * (not over another client's define since: {@link restoreUnlessRedefined}): the failed result, or
 * the definition libvirt holds now.
 */
function defineAndVerify(
  vm: VmPlan,
  { libvirt, xml, secure, desired, base, run }: {
    libvirt: LibvirtPort;
    run: RunFlags | undefined;
    xml: string;
    secure: string;
    desired: ParsedDomain;
    base: VmApplyResult;
  },
): { failed: VmApplyResult } | { after: string } {
  const plan = followUpCommand(run, "passthrough plan");
  const failure = defineOrExplain(libvirt, { name: vm.name, xml, before: secure });
  if (failure?.kind === "rejected") {
    return {
      failed: {
        ...base,
        status: "failed",
        code: "define-failed",
        message:
          `libvirt rejected the new definition of "${vm.name}", which is unchanged: ${failure.error}`,
      },
    };
  }
  if (failure?.kind === "unknown") {
    return {
      failed: {
        ...base,
        status: "failed",
        code: "define-unknown",
        message:
          `The define of "${vm.name}" may or may not have taken effect: ${failure.error}; ${failure.why}; its previous definition is in backup "${base.backup}": check with "${plan}" (no change left for "${vm.name}" means the define took effect)`,
      },
    };
  }
  // The check: the definition libvirt now holds must carry exactly the planned hostdevs.
  const check = verifyDefined(libvirt, vm, desired);
  if ("after" in check) return check;
  const elsewhere = changedElsewhere(libvirt, vm, { xml, secure, check, base, run });
  if (elsewhere !== null) return { failed: elsewhere };
  let restored = false;
  let restoreNote: string;
  try {
    let changed: string | null = null;
    if ("text" in check) {
      changed = restoreUnlessRedefined(libvirt, vm.name, { before: secure, expected: check.text });
    } else {
      // Unread, there is nothing to tell another client's define from this one by.
      libvirt.define(secure);
    }
    restored = changed === null;
    restoreNote = changed === null
      ? "the previous definition was restored"
      : `the previous definition was not restored: ${changed}, then run "${
        followUpCommand(run, "passthrough rollback", { value: vm.name })
      }"`;
  } catch (error) {
    restoreNote = `restoring the backup "${base.backup}" failed too: ${errorText(error)}`;
  }
  // libvirt took the define: unread, it most likely holds the planned hostdevs (the daemon
  // died after its reply, say), and then the restore failed too: say so, not that it did not.
  const message = "problem" in check
    ? `The new definition of "${vm.name}" did not hold the planned hostdevs (${check.problem}); ${restoreNote}`
    : `The new definition of "${vm.name}" was defined but could not be read back to check its hostdevs: ${check.unread}; ${restoreNote}${
      restored
        ? ""
        : `, so "${vm.name}" most likely holds the new definition: check with "${plan}" once libvirt answers (no change left for "${vm.name}" means it does)`
    }`;
  return {
    failed: { ...base, status: "failed", code: "verify-failed", restored, message },
  };
}

/**
 * The failure of a define another client acted on before its read-back, which restoring the
 * backup must not undo: a define of the VM since (a `virsh edit` opened before this run, saved
 * now), lost if the backup went over it, or its undefine, which the restore would undo. `null`
 * when the read-back shows neither.
 */
function changedElsewhere(
  libvirt: LibvirtPort,
  vm: VmPlan,
  { xml, secure, check, base, run }: {
    xml: string;
    secure: string;
    check: { problem: string; text: string } | { unread: string };
    base: VmApplyResult;
    run: RunFlags | undefined;
  },
): VmApplyResult | null {
  const rollback = followUpCommand(run, "passthrough rollback", { value: vm.name });
  let message: string;
  if ("text" in check) {
    if (definedHere({ before: secure, defined: xml }, check.text)) return null;
    message =
      `"${vm.name}" was defined again by another client right after this define, and its definition no longer holds the planned hostdevs (${check.problem}); it was left as that client defined it (${
        describeXmlChange(secure, check.text)
      } since the plan), not restored over that change, which no backup holds: check it with "${
        followUpCommand(run, "passthrough plan")
      }"; "${rollback}" restores its previous definition from backup "${base.backup}"`;
  } else {
    if (!undefinedSince(libvirt, vm.name)) return null;
    message =
      `"${vm.name}" was undefined by another client right after this define (${check.unread}); it was left undefined, not defined again from its backup: "${rollback}" defines its previous definition again from backup "${base.backup}"`;
  }
  return { ...base, status: "failed", code: "verify-failed", restored: false, message };
}

/** Whether libvirt lists no domain named `vm`; `false` when it cannot be listed. */
function undefinedSince(libvirt: LibvirtPort, vm: string): boolean {
  try {
    return !libvirt.listDomains().some((d) => d.name === vm);
  } catch {
    return false;
  }
}

/**
 * Host addresses of the PCI hostdevs and hostdev interfaces `defined` sent that `readBack` holds
 * other than libvirt renders them ({@link samePciDevice}): another client's change since the
 * define (a `<rom>` line, another `managed` or `<driver>`), whether this define added the device,
 * rewrote it or kept it. Sorted.
 */
function alteredDevices(defined: ParsedDomain, readBack: ParsedDomain): PciAddress[] {
  const got = pciDevices(readBack);
  return [...pciDevices(defined)]
    .filter(([address, xml]) => got.has(address) && !samePciDevice(xml, got.get(address)!))
    .map(([address]) => address)
    .sort();
}

/**
 * Whether `readBack` is libvirt's rendering of the define of `defined` over `before`
 * ({@link sameBesidesHostdevs}) with no PCI device `defined` did not hold, none it kept from
 * `before` gone, and none it sent read back changed ({@link alteredDevices}): libvirt may lose a
 * hostdev this define added, but never makes one up, drops one the VM held already, nor changes
 * one it keeps, so such a change is another client's. One that cannot be compared is taken for
 * ours, and the restore still looks for a define since ({@link restoreUnlessRedefined}).
 */
function definedHere(
  { before, defined }: { before: string; defined: string },
  readBack: string,
): boolean {
  try {
    const sentDomain = parseDomainXml(defined);
    const gotDomain = parseDomainXml(readBack);
    const sent = pciDevices(sentDomain);
    const held = pciDevices(parseDomainXml(before));
    const got = pciDevices(gotDomain);
    return sameBesidesHostdevs(defined, readBack) && [...got.keys()].every((a) => sent.has(a)) &&
      [...sent.keys()].every((a) => got.has(a) || !held.has(a)) &&
      alteredDevices(sentDomain, gotDomain).length === 0;
  } catch {
    return true;
  }
}

/** The text of a domain's PCI hostdevs and hostdev interfaces by host address. */
function pciDevices(domain: ParsedDomain): Map<PciAddress, string> {
  return new Map([...domain.hostdevs, ...domain.interfaces].map((d) => [d.address, d.xml]));
}

/**
 * Defines `before` over `vm` again, only while libvirt still holds `expected` (what this run
 * defined, as read back): `null` when it did, else why not. Another client's define since
 * (`virsh edit`) is in no backup, and restoring would overwrite it. Throws when libvirt fails.
 */
function restoreUnlessRedefined(
  libvirt: LibvirtPort,
  vm: string,
  { before, expected }: { before: string; expected: string },
): string | null {
  const now = libvirt.getPersistentXml(vm, { secure: true });
  if (now !== expected) {
    return `"${vm}" was defined again since (${
      describeXmlChange(expected, now)
    }), and restoring it would overwrite that change, which no backup holds: check it`;
  }
  libvirt.define(before);
  return null;
}

/** Defines the repair of a refused VM (see {@link repairView}); the result keeps its refusals. */
function applyRepair(
  vm: VmPlan,
  plan: Plan,
  options: ApplyOptions & { state: StateDir },
): Applied {
  const outcome = applyVm(repairView(vm), plan, options);
  const { result } = outcome;
  if (result.status !== "changed") return outcome;
  const count = `${vm.errors.length} refusal${vm.errors.length === 1 ? "" : "s"}`;
  const { remove, move = [] } = vm.repair!;
  const done = [
    ...(remove.length > 0
      ? [
        `removed the hostdev${remove.length === 1 ? "" : "s"} ${
          remove.map((a) => `"${a}"`).join(", ")
        }`,
      ]
      : []),
    ...move.map((m) => `followed the card of "${m.from}" to "${m.to}"`),
  ];
  result.code = "repaired";
  result.message = result.message.replace(
    /^Defined "[^"]*" \([^)]*\)/,
    `Repaired "${vm.name}": ${
      done.join(", ")
    }; the rest is not applied: the plan refuses it (${count})`,
  );
  return outcome;
}

/**
 * The hostdevs a define added, removed and moved: a card that moved (`moves`, the plan's) left
 * its old address and came to its new one, counted once as moved, not also as added and removed.
 * The report's line and the define's message both count with this.
 */
export function hostdevCounts(
  moves: readonly { from: PciAddress; to: PciAddress }[],
  added: readonly PciAddress[],
  removed: readonly PciAddress[],
): { add: number; remove: number; moved: number } {
  // Of cards moved one bus on, each came to the address the next one left: only the ends of the
  // chain are an address added and one removed.
  const froms = new Set(moves.map((m) => m.from));
  const tos = new Set(moves.map((m) => m.to));
  const done = moves.filter((m) =>
    (added.includes(m.to) || froms.has(m.to)) && (removed.includes(m.from) || tos.has(m.from))
  );
  return {
    add: added.filter((a) => !done.some((m) => m.to === a)).length,
    remove: removed.filter((a) => !done.some((m) => m.from === a)).length,
    moved: done.length,
  };
}

/** Defines one confirmed VM of `plan`; never throws. */
function applyVm(
  vm: VmPlan,
  plan: Plan,
  options: ApplyOptions & { state: StateDir },
): Applied {
  const { libvirt } = options;
  const fail = (failure: Failure): Applied => ({
    result: result(vm, "failed", failure.code, failure.message),
    live: null,
  });
  const planned = readPlanned(vm);
  if (isFailure(planned)) return fail(planned);
  const now = readNow(vm, libvirt);
  if (isFailure(now)) return fail(now);
  const xml = xmlToDefine(vm, now);
  if (typeof xml !== "string") return fail(xml);
  const conflict = recheckHolders(vm, plan, options);
  if (conflict !== null) return fail(conflict);
  const changed = hardwareRecheck(vm, plan, options);
  if (changed !== null) return fail(changed);
  const backup = backupBefore(vm, now, options);
  if (isFailure(backup)) return fail(backup);
  // The re-check and the synced backup take tens of milliseconds, in which a `virsh edit` or
  // `virsh desc` of this VM would be overwritten by the define, and be in no backup: look once
  // more, just before the define. (libvirt has no compare-and-define; this leaves one round trip.)
  const late = unchangedBeforeDefine(vm, libvirt);
  if (late !== null) {
    return {
      result: { ...result(vm, "failed", late.code, late.message), backup: backup.path },
      live: null,
    };
  }
  const { added, removed } = hotplugChanges(planned);
  const base = result(vm, "changed", "applied", "");
  base.added = added.map((h) => h.address);
  base.removed = removed.map((h) => h.address);
  base.active = now.active;
  base.backup = backup.path;
  const defined = defineAndVerify(vm, {
    libvirt,
    xml,
    secure: now.secure,
    desired: planned.desired,
    base,
    run: options.run,
  });
  if ("failed" in defined) return { result: defined.failed, live: null };
  base.definition = { before: now.secure, after: defined.after };
  // Another client may have started it since it was read shut off (libvirt has no
  // define-if-stopped): before the define it runs the old definition, after it the new one. Or
  // shut it off since it was read running: there is no guest left to hot-plug into. Or shut it
  // off and started it again (another guest ID): as started. Not read is taken as unchanged.
  let startedSince: StartedSince | null = null;
  let stoppedSince = false;
  let runId: number | null = null;
  try {
    const active = libvirt.isActive(vm.name);
    runId = active ? readRunId(libvirt, vm.name) : null;
    const restarted = now.active && now.runId !== null && runId !== null && runId !== now.runId;
    if ((!now.active && active) || restarted) {
      startedSince = { runs: startedWith(libvirt, vm.name, planned), restarted };
    }
    stoppedSince = now.active && !active;
  } catch {
    // The define and its read-back succeeded; only this report's wording is at stake.
  }
  return whenItTakesEffect(vm, plan, {
    base,
    now,
    added,
    removed,
    options,
    startedSince,
    stoppedSince,
    runId,
  });
}

/**
 * Which definition a VM started by another client while this apply ran runs: the one this apply
 * defined (`new`: started after the define), the one it replaced (`old`: started before), or why
 * that cannot be told.
 */
type StartedWith = "new" | "old" | { unknown: string };

/** What a VM started by another client since apply read it runs, and whether it ran then too. */
interface StartedSince {
  runs: StartedWith;
  /** Read running, and shut off and started again since (another guest ID). */
  restarted: boolean;
}

/**
 * Which definition `vm`, found running after its define, was started with: told by the PCI
 * hostdevs and hostdev interfaces of the running guest ({@link samePciDevice}), the only part of
 * the definition the plan changes that a running guest shows; not told when they fit both.
 */
function startedWith(
  libvirt: LibvirtPort,
  vm: string,
  planned: { current: ParsedDomain; desired: ParsedDomain },
): StartedWith {
  let live: Map<PciAddress, string>;
  try {
    if (libvirt.getLiveXml === undefined) return { unknown: "its running definition is not read" };
    live = pciDevices(parseDomainXml(libvirt.getLiveXml(vm)));
  } catch (error) {
    return { unknown: `its running definition cannot be read: ${errorText(error)}` };
  }
  const runs = (domain: ParsedDomain) => {
    const devices = pciDevices(domain);
    return devices.size === live.size &&
      [...devices].every(([a, xml]) => live.has(a) && samePciDevice(xml, live.get(a)!));
  };
  const [isNew, isOld] = [runs(planned.desired), runs(planned.current)];
  // Both: what tells them apart is what libvirt fills in, such as the guest address of a card
  // the define wrote without one (its multifunction turned off), which the old one had.
  if (isNew && isOld) {
    return { unknown: "its running hostdevs fit both the old and the new definition" };
  }
  if (isNew) return "new";
  if (isOld) return "old";
  return { unknown: "its running hostdevs are neither the old nor the new definition's" };
}

/**
 * When the change reaches a VM another client started (or, `restarted`, shut off and started
 * again) while this apply ran (`started`, see {@link startedWith}), and the clause that says so.
 */
function startedReport(started: StartedWith, restarted: boolean): [ApplyEffect, string] {
  const clause = `it was ${
    restarted ? "shut off and started again" : "started"
  } while this apply ran`;
  if (started === "new") {
    return ["now", `${clause}, after the define, so the running guest has the change already`];
  }
  if (started === "old") {
    return [
      "next-power-off",
      `${clause}, so it runs without the change until its next full power-off`,
    ];
  }
  return [
    "next-power-off",
    `${clause}, before or after the define cannot be told (${started.unknown}): the change takes effect at its next full power-off at the latest`,
  ];
}

/**
 * The result of the define of `vm` (`base`), by when the change takes effect: at its next start,
 * at its next full power-off, or now, hot-plugged (`live`) when `--live` asks and there is
 * anything to plug.
 */
function whenItTakesEffect(
  vm: VmPlan,
  plan: Plan,
  { base, now, added, removed, options, startedSince, stoppedSince, runId }: {
    base: VmApplyResult;
    now: Now;
    added: PendingLive["attach"];
    removed: PendingLive["detach"];
    options: ApplyOptions;
    /** What it runs, when started (or restarted) since it was read; else `null`. */
    startedSince: StartedSince | null;
    /** Whether it is shut off now, read running before the define. */
    stoppedSince: boolean;
    /** The running guest's ID read after the define, when told. */
    runId: number | null;
  },
): Applied {
  const n = hostdevCounts(vm.move, base.added, base.removed);
  const summary = `Defined "${vm.name}" (${n.add} added, ${n.remove} removed${
    n.moved > 0 ? `, ${n.moved} moved` : ""
  })`;
  const raced = stateChangedSince(vm, { base, summary, startedSince, stoppedSince, options });
  if (raced !== null) return { result: raced, live: null };
  if (!now.active && now.saved) {
    return {
      result: { ...base, effect: "next-power-off", message: summary + savedStateNote(vm.name) },
      live: null,
    };
  }
  if (!now.active) {
    return { result: { ...base, effect: "next-start", message: summary }, live: null };
  }
  const running = {
    ...base,
    effect: "next-power-off" as const,
    message: `${summary}; it is running, so the change takes effect at its next full power-off`,
  };
  if (options.live !== true || (added.length === 0 && removed.length === 0)) {
    return {
      result: running,
      live: null,
      ...(runId === null ? {} : { running: { runId, summary } }),
    };
  }
  running.live = { detached: [], attached: [], errors: [], refused: false };
  running.message = summary;
  return {
    result: running,
    live: {
      result: running,
      detach: removed,
      attach: added,
      changed: () => hardwareChanged(vm, plan, options),
      start: options.startGuard?.(vm.name) ?? null,
      rules: [...new Set([...vm.add, ...vm.move].map((h) => h.rule))],
    },
  };
}

/**
 * The result of the define of `vm` (`base`, `summary`) when another client started or shut it off
 * while this apply ran, else `null`. Never hot-plugged, even with `--live`: the plan was made for
 * a guest that was shut off, or there is no guest left to take the devices.
 */
function stateChangedSince(
  vm: VmPlan,
  { base, summary, startedSince, stoppedSince, options }: {
    base: VmApplyResult;
    summary: string;
    startedSince: StartedSince | null;
    stoppedSince: boolean;
    options: ApplyOptions;
  },
): VmApplyResult | null {
  if (startedSince !== null) {
    const [effect, clause] = startedReport(startedSince.runs, startedSince.restarted);
    return { ...base, active: true, effect, message: `${summary}; ${clause}` };
  }
  return stoppedSince ? { ...base, ...shutOffSince(options.libvirt, vm.name, summary) } : null;
}

/**
 * The report of `vm`, read running and found shut off since (`summary`: its define's): the change
 * takes effect at its next start, or, when that start resumes a saved state, its next full
 * power-off.
 */
function shutOffSince(
  libvirt: LibvirtPort,
  vm: string,
  summary: string,
): Pick<VmApplyResult, "active" | "effect" | "message"> {
  const stopped = `${summary}; it was shut off while this apply ran`;
  return hasSavedState(libvirt, vm)
    ? { active: false, effect: "next-power-off", message: stopped + savedStateNote(vm) }
    : {
      active: false,
      effect: "next-start",
      message: `${stopped}, so the change takes effect at its next start`,
    };
}

/** Why the devices `vm` takes are not as `plan` read them (see `recheck.ts`), one sentence each. */
function hardwareChanged(
  vm: VmPlan,
  plan: Plan,
  { hardware, hostNow }: Pick<ApplyOptions, "hardware" | "hostNow">,
): string[] {
  return hardware === undefined ? [] : [
    ...hardwareSincePlan(vm, hardware, plan.groupOf),
    ...(hostNow === undefined ? [] : hostSincePlan(vm, hostNow, plan.groupOf)),
  ];
}

/**
 * The failure when {@link hardwareChanged} finds a change, or when the host cannot be read again:
 * not read is not unchanged, and a throw would end the whole apply, the VMs defined before this
 * one unreported. `null` when the devices are as planned.
 */
function hardwareRecheck(
  vm: VmPlan,
  plan: Plan,
  options: Pick<ApplyOptions, "hardware" | "hostNow">,
): Failure | null {
  let changed: string[];
  try {
    changed = hardwareChanged(vm, plan, options);
  } catch (error) {
    return {
      code: "read-failed",
      message:
        `Not applied to "${vm.name}": cannot read the host's devices again to check that they are as planned (${
          errorText(error)
        }): run the plan again`,
    };
  }
  if (changed.length === 0) return null;
  return {
    code: "hardware-changed",
    message: `Not applied to "${vm.name}": since the plan was made, the host's devices changed: ${
      changed.join("; ")
    }: run the plan again`,
  };
}

/** The backup of the definition about to be replaced; a failure when it cannot be written. */
function backupBefore(
  vm: VmPlan,
  now: Now,
  options: ApplyOptions & { state: StateDir },
): BackupEntry | Failure {
  try {
    return writeBackup(options.state, {
      vm: vm.name,
      uuid: now.uuid,
      xml: now.secure,
      reason: "apply",
      uri: options.libvirt.uri,
      ...(options.now ? { now: options.now() } : {}),
    });
  } catch (error) {
    return {
      code: "backup-failed",
      // A full disk says only "No space left on device": say where.
      message: `Not applied to "${vm.name}": cannot write its backup in "${
        backupDir(options.state, vm.name)
      }", so it was not defined: ${errorText(error)}`,
    };
  }
}

/**
 * What the plan adds to and removes from the definition, as a running guest would get it: an
 * interface (a VF of a `vf:` rule) is added, removed and hot-plugged like a hostdev.
 */
function hotplugChanges(
  planned: { current: ParsedDomain; desired: ParsedDomain },
): { added: PendingLive["attach"]; removed: PendingLive["detach"] } {
  const nics = (from: ParsedDomain, but: ParsedDomain) =>
    from.interfaces.filter((i) => !but.interfaces.some((o) => o.address === i.address));
  return {
    added: [
      ...minus(planned.current.hostdevs, planned.desired.hostdevs),
      ...nics(planned.desired, planned.current),
    ],
    removed: [
      ...minus(planned.desired.hostdevs, planned.current.hostdevs),
      ...nics(planned.current, planned.desired),
    ],
  };
}
