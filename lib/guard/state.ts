/**
 * What the start guard keeps in the state directory (where: `layout.ts`): the config's policies,
 * one-shot allowances (`passthrough guard allow VM`, since `virsh start` cannot pass a flag to a
 * hook), the last refusal per VM, so that a later `plan` can show why a start was stopped, and
 * the last daemon reload. Small JSON files, mode 0600 in 0700 directories, like the backups.
 *
 * @module
 */

import { join, pathExists } from "../state/paths.ts";
import {
  checkPrivateDir,
  ensurePrivateDir,
  openOwnFileSync,
  openStateDir,
  readBoundedSync,
  readOwnFileSync,
  replaceFileSync,
  type StateDir,
  StateDirError,
} from "../state/state_dir.ts";
import { encodeVmName } from "../state/backups.ts";
import type { GuardRefusal } from "./check.ts";
import type { PlanIssue } from "../plan/types.ts";
import {
  type ActivePolicy,
  ENFORCE,
  type GuardPolicyFile,
  MAX_POLICY_BYTES,
  parsePolicyFile,
  policiesForConnection,
  type PolicyFileReading,
  policyForDomain,
  type VmPolicyReading,
} from "./policy.ts";
import { errorText } from "../render/error_text.ts";
import {
  GUARD_URI,
  type GuardFolder,
  guardPath,
  listedRefusals,
  MAX_LISTED_REFUSALS,
  POLICY_FILE,
  RELOAD_FILE,
} from "./layout.ts";

/** How long an allowance waits for the start it is meant for. */
export const ALLOWANCE_LIFETIME_MS = 60 * 60 * 1000;

/** A one-shot allowance, as stored. */
export interface GuardAllowance {
  /** The VM it lets start. */
  vm: string;
  /**
   * The `<uuid>` of the VM's definition when it was given: only that domain's start takes it, not
   * another defined under its name since (absent in files from before it: they count for none).
   */
  uuid?: string;
  /**
   * The libvirt connection `guard allow` was run over, as `lockUri` names it: only a start the
   * guard of that connection checks takes it, so one given over a test world copied from the host
   * (its VM's name and UUID) never lets the host's VM start (absent in files from before it, or
   * from a library caller that names none: taken by any).
   */
  uri?: string;
  /** ISO time it was given. */
  created: string;
  /** ISO time after which it no longer counts. */
  expires: string;
}

/** The last refusal of one VM's start, as stored (for `plan`). */
export interface GuardRefusalRecord {
  /** The VM whose start was checked. */
  vm: string;
  /** ISO time of the check. */
  time: string;
  /** Whether a one-shot allowance let the start go on anyway. */
  allowed: boolean;
  /**
   * What the check found, without the VM and the fix (both follow from `vm`), each with the
   * policy it was judged by (`warn`: the start went on; absent in records written before
   * policies, which all enforced).
   */
  refusals: (Omit<GuardRefusal, "vm" | "fix"> & { policy?: ActivePolicy })[];
  /**
   * How many more the check found than `refusals` holds (it lists a bounded number);
   * absent when it holds them all.
   */
  more?: number;
}

/**
 * The text of one of the guard's files, `null` when there is none. Read as the state directory's
 * other files are: a symlink, FIFO, device or a file over {@link MAX_POLICY_BYTES} (the largest
 * of them, the policies) is refused with a `StateDirError` instead of being read.
 */
function readGuardFile(path: string): string | null {
  try {
    return new TextDecoder().decode(readOwnFileSync(path, MAX_POLICY_BYTES));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

/**
 * `STATE/guard/policy.json`: `{ file: null, problem: null }` when there is none (every VM
 * enforces). A policy can turn the guard off, so it is trusted only as every other read of the
 * state directory trusts a file: in directories of ours (not links, writable by us alone), a
 * regular file of a sane size. Anything else, or a file that is not a policy file, gives a
 * problem, and every VM enforces.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(readPolicyFile("/nonexistent"), { file: null, problem: null });
 * ```
 */
export function readPolicyFile(stateDir: string): PolicyFileReading {
  const path = guardPath(stateDir, POLICY_FILE);
  const fail = (problem: string): PolicyFileReading => ({
    file: null,
    problem: `cannot read the guard policies in ${path} (${problem}): enforcing`,
  });
  let text: string | null;
  try {
    const state = openStateDir(stateDir, { write: false });
    text = checkPrivateDir(guardPath(state.path), state) ? readGuardFile(path) : null;
  } catch (error) {
    if (error instanceof StateDirError && error.problem === "missing") {
      return { file: null, problem: null };
    }
    const kind = policyFileKind(error, path);
    const again = kind === "replaceable"
      ? "; run passthrough apply again"
      : kind === "directory"
      ? `; ${REMOVE_DIRECTORY}`
      : "";
    return fail(`${errorText(error)}${again}`);
  }
  if (text === null) return { file: null, problem: null };
  let file: GuardPolicyFile | null = null;
  try {
    file = parsePolicyFile(JSON.parse(text));
  } catch {
    // Not JSON: reported below like any other damage.
  }
  return file === null
    ? fail("not a passthrough policy file; run passthrough apply again")
    : { file, problem: null };
}

/** What makes a directory at the policy file's name go: apply cannot replace one by a rename. */
const REMOVE_DIRECTORY = "remove that directory, then run passthrough apply again";

/**
 * What the refusal `error` of the policy file at `path` refused: `replaceable` for what
 * {@link recordPolicies} replaces unread (a FIFO, a link, a file too large), `directory` for a
 * directory, which only its removal clears; `null` for any other error.
 */
function policyFileKind(error: unknown, path: string): "replaceable" | "directory" | null {
  if (!(error instanceof StateDirError && error.problem === "unexpected-file")) return null;
  if (error.path !== path) return null;
  try {
    return Deno.lstatSync(path).isDirectory ? "directory" : "replaceable";
  } catch {
    return null;
  }
}

/**
 * The policy the hook applies to `vm`, whose definition's `<uuid>` is `uuid` (`null`: it cannot
 * be read), from {@link readPolicyFile}: `enforce` when the file does not name it, is
 * missing, or cannot be read (then with the problem), or when its policies were recorded for
 * another domain of that name, or by an apply over another libvirt connection than `connection`
 * (as `lockUri` names it; default: the system daemon's, whose VMs the hook guards), then with
 * why. Without `uuid`, the policies as recorded, whichever domain or connection they were
 * recorded for: for reports, never a check.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { ENFORCE } from "./policy.ts";
 * assertEquals(readVmPolicy("/nonexistent", "win11", null), { policy: ENFORCE, problem: null });
 * ```
 */
export function readVmPolicy(
  stateDir: string,
  vm: string,
  uuid?: string | null,
  { connection = GUARD_URI }: { connection?: string } = {},
): VmPolicyReading {
  const reading = readPolicyFile(stateDir);
  const { file, problem } = uuid === undefined || reading.file === null
    ? reading
    : policiesForConnection(reading.file, {
      path: guardPath(stateDir, POLICY_FILE),
      connection,
    });
  if (file === null || !Object.hasOwn(file.vms, vm)) return { policy: ENFORCE, problem };
  const policy = file.vms[vm]!;
  return uuid === undefined ? { policy, problem } : policyForDomain(policy, { vm, uuid });
}

/** What {@link recordPolicies} did to `guard/policy.json`. */
export type PolicyRecordOutcome = "written" | "removed" | "unchanged";

/**
 * Records the config's guard policies where the hook reads them (`guard/policy.json`, see
 * `policy.ts`): replaced when they changed, removed when every VM is back to `enforce`. With
 * nothing to record and no file, nothing is created, not even the state directory.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * const file = { version: 1 as const, config: "c.yaml",
 *   vms: { win11: { guard: "warn" as const, rules: {} } } };
 * assertEquals(recordPolicies(`${dir}/state`, file), "written");
 * assertEquals(recordPolicies(`${dir}/state`, file), "unchanged");
 * assertEquals(readVmPolicy(`${dir}/state`, "win11").policy.guard, "warn");
 * assertEquals(recordPolicies(`${dir}/state`, { ...file, vms: {} }), "removed");
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function recordPolicies(stateDir: string, file: GuardPolicyFile): PolicyRecordOutcome {
  const path = guardPath(stateDir, POLICY_FILE);
  let before: string | null;
  try {
    before = readGuardFile(path);
  } catch (error) {
    const kind = policyFileKind(error, path);
    if (kind === "directory") {
      throw new StateDirError(path, "unexpected-file", `${errorText(error)}; ${REMOVE_DIRECTORY}`);
    }
    if (kind !== "replaceable") throw error;
    // Not a file apply wrote (a FIFO, a link, one too large), never read: while it is there the
    // hook enforces every VM and says it cannot read it, so it is replaced (or removed) as a
    // damaged one is, once the guard directory passes the checks the writes below make.
    const state = openStateDir(stateDir);
    ensurePrivateDir(guardPath(state.path), state);
    before = "";
  }
  if (Object.keys(file.vms).length === 0) {
    if (before === null) return "unchanged";
    try {
      Deno.removeSync(path);
    } catch (error) {
      // Removed by another apply at the same moment: as asked.
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    return "removed";
  }
  const text = `${JSON.stringify(file, null, 2)}\n`;
  if (before === text) return "unchanged";
  const state = openStateDir(stateDir);
  const guard = guardPath(state.path);
  ensurePrivateDir(guard, state);
  // In one step: a start reads the old policies or the new ones, never none.
  replaceFileSync(guard, POLICY_FILE, text);
  return "written";
}

/**
 * What {@link takeAllowance} found: one that counts, one past its window (or damaged), one whose
 * window begins later than this host's clock allows for (`future`: the clock was set back since,
 * or the file came from another host), one given for another domain of the VM's name than the one
 * starting, or by a passthrough that bound it to none (`other-domain`), or none.
 */
export type AllowanceOutcome =
  | "allowed"
  | "expired"
  | "future"
  | "other-domain"
  | "other-connection"
  | "none";

function guardDir(state: StateDir, kind: GuardFolder): string {
  const guard = guardPath(state.path);
  ensurePrivateDir(guard, state);
  const dir = join(guard, kind);
  ensurePrivateDir(dir, state);
  return dir;
}

function fileName(vm: string): string {
  return `${encodeVmName(vm)}.json`;
}

/**
 * Lets the next start of `vm`, the domain whose `<uuid>` is `uuid` (the one defined now), go on
 * once even if the guard refuses it, within {@link ALLOWANCE_LIFETIME_MS}. Returns the allowance
 * and where it was written.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * allowNextStart(`${dir}/state`, "win11", { uuid: "u1" });
 * assertEquals(takeAllowance(`${dir}/state`, "win11", { uuid: "u1" }), "allowed");
 * assertEquals(takeAllowance(`${dir}/state`, "win11", { uuid: "u1" }), "none"); // one shot
 * allowNextStart(`${dir}/state`, "win11", { uuid: "u1" });
 * assertEquals(takeAllowance(`${dir}/state`, "win11", { uuid: "u2" }), "other-domain");
 * // Given over a test world whose VM has the host's VM's name and UUID: not the hook's.
 * allowNextStart(`${dir}/state`, "win11", { uuid: "u1", uri: "test:///w.xml" });
 * assertEquals(takeAllowance(`${dir}/state`, "win11", { uuid: "u1" }), "other-connection");
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function allowNextStart(
  stateDir: string,
  vm: string,
  { uuid, uri, now = new Date() }: { uuid: string; uri?: string; now?: Date },
): { allowance: GuardAllowance; path: string } {
  const state = openStateDir(stateDir);
  const allowance: GuardAllowance = {
    vm,
    uuid,
    ...(uri === undefined ? {} : { uri }),
    created: now.toISOString(),
    expires: new Date(now.getTime() + ALLOWANCE_LIFETIME_MS).toISOString(),
  };
  const path = replaceFileSync(
    guardDir(state, "allow"),
    fileName(vm),
    `${JSON.stringify(allowance, null, 2)}\n`,
  );
  return { allowance, path };
}

/**
 * Consumes `vm`'s allowance, if any, for the start of the domain whose `<uuid>` is `uuid`
 * (`null`: it cannot be read): read, claimed by a rename, and removed, whether it still counts,
 * has expired, was given for another domain or cannot be read. One that cannot be
 * claimed does not count (it would otherwise allow every start); a `guard allow` that writes a
 * new one after the claim leaves that one for the next start instead of seeing it removed unused.
 * A claim an earlier start of `vm` left (killed before it removed it) is removed first: one whose
 * process `alive` says is gone. Without `alive`, every claim is left to its process.
 */
export function takeAllowance(
  stateDir: string,
  vm: string,
  { uuid, connection = GUARD_URI, now = new Date(), alive = () => true }: {
    uuid: string | null;
    /** The connection whose VMs' starts are checked (`lockUri`'s name); default the hook's. */
    connection?: string;
    now?: Date | undefined;
    /** Whether the process with this id is running (`/proc/PID` exists). */
    alive?: (pid: number) => boolean;
  },
): AllowanceOutcome {
  removeLeftovers(stateDir, "allow", vm, alive);
  // Read-only until an allowance is found: a start without one writes (and syncs) nothing.
  const path = existingGuardFile(stateDir, "allow", vm);
  if (path === null) return "none";
  const claimed = `${path}${CLAIM}${Deno.pid}`;
  using early = readBeforeClaim(path);
  try {
    Deno.renameSync(path, claimed);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "none";
    throw error;
  }
  let text: string | null;
  try {
    text = early !== null && claimedWasRead(claimed, early.file)
      ? early.text
      : readGuardFile(claimed);
  } catch (error) {
    // Named by the path the user knows, not the claimed one.
    if (!(error instanceof StateDirError)) throw error;
    throw new StateDirError(path, error.problem, error.message.replaceAll(claimed, path));
  } finally {
    try {
      Deno.removeSync(claimed, { recursive: true });
    } catch {
      // Left under its claimed name, which no start reads.
    }
  }
  if (text === null) return "none";
  let window = { created: NaN, expires: NaN };
  let given: unknown = undefined;
  let over: unknown = undefined;
  try {
    const data = JSON.parse(text) as Partial<GuardAllowance>;
    if (data.vm === vm) {
      window = {
        created: Date.parse(String(data.created)),
        expires: Date.parse(String(data.expires)),
      };
      given = data.uuid;
      over = data.uri;
    }
  } catch {
    // A damaged allowance counts as expired.
  }
  const outcome = allowanceOutcome(window, now.getTime());
  if (outcome !== "allowed") return outcome;
  // Another domain defined under the name since the allowance was given never takes it, nor one
  // of that name and UUID on another connection (a test world copied from the host).
  if (uuid === null || given !== uuid) return "other-domain";
  return over === undefined || over === connection ? outcome : "other-connection";
}

/**
 * The allowance at `path` read through a descriptor kept open, before it is claimed: a start of
 * the VM by another daemon at the same moment that cannot see this process (another PID
 * namespace) takes our claim for a killed start's leftover, and may remove it between the claim
 * and its read, losing the allowance for both. `null` when it cannot be read now (the read after
 * the claim says why).
 */
function readBeforeClaim(path: string): (Disposable & { file: Deno.FsFile; text: string }) | null {
  let file: Deno.FsFile;
  try {
    file = openOwnFileSync(path);
  } catch {
    return null;
  }
  try {
    const text = new TextDecoder().decode(readBoundedSync(file, path, MAX_POLICY_BYTES));
    return { file, text, [Symbol.dispose]: () => file.close() };
  } catch {
    file.close();
    return null;
  }
}

/**
 * Whether the file claimed at `claimed` is the one read through `file`: the same, or gone (another
 * start removed the claim since), unless `guard allow` replaced it between the read and the claim.
 */
function claimedWasRead(claimed: string, file: Deno.FsFile): boolean {
  const read = file.statSync();
  try {
    const named = Deno.lstatSync(claimed);
    return named.ino === read.ino && named.dev === read.dev;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return true;
    throw error;
  }
}

/** What a claimed allowance's name adds to the allowance's, before the claiming process's id. */
const CLAIM = ".taken-";

/**
 * Removes what a start of `vm` killed half-way (the hook's deadline, the OOM killer) left in
 * `kind`: a claim of its allowance (`allow/VM.json.taken-PID`, killed between the claim and its
 * removal) or a temporary refusal record (`refused/.VM.json.UUID.tmp`, killed before the rename).
 * A claim is one when `alive` says its process is gone: a start of the VM in another daemon
 * (libvirtd and virtqemud, both with the hook) may hold one now, and removed under it, the
 * allowance it claimed would be lost to both, or the start would go on by the one it read before a
 * `guard allow` replaced it. Any temporary record but ours is one: nothing else writes those
 * names, and a second daemon's start that finds its own removed writes it again. Left there, one
 * would make every later start of every VM take the slow path (the guard keeps something), and
 * nothing else ever removes it.
 */
function removeLeftovers(
  stateDir: string,
  kind: GuardFolder,
  vm: string,
  alive: (pid: number) => boolean = () => true,
): void {
  const dir = guardPath(stateDir, kind);
  const leftover = kind === "allow"
    ? (name: string) => {
      const prefix = `${fileName(vm)}${CLAIM}`;
      const pid = name.slice(prefix.length);
      return name.startsWith(prefix) && /^[0-9]+$/.test(pid) && !claimHeld(Number(pid), alive);
    }
    : (name: string) => {
      const prefix = `.${fileName(vm)}.`;
      return name.startsWith(prefix) && /^[0-9a-f-]{36}\.tmp$/.test(name.slice(prefix.length));
    };
  let leftovers: string[];
  try {
    leftovers = [...Deno.readDirSync(dir)].map((e) => e.name).filter(leftover);
  } catch {
    return; // Nothing kept there (or nothing readable, which the start's reads report).
  }
  if (leftovers.length === 0) return;
  // Removed only from directories the state directory's checks trust, as its files are read.
  try {
    const state = openStateDir(stateDir, { write: false });
    if (!checkPrivateDir(guardPath(state.path), state) || !checkPrivateDir(dir, state)) return;
  } catch {
    return;
  }
  for (const name of leftovers) {
    try {
      Deno.removeSync(join(dir, name), { recursive: true });
    } catch {
      // Gone meanwhile: never read as an allowance or a record anyway.
    }
  }
}

/** Whether process `pid`'s claim may still be read by it: ours, running, or not known to be gone. */
function claimHeld(pid: number, alive: (pid: number) => boolean): boolean {
  if (pid === Deno.pid) return true;
  try {
    return alive(pid);
  } catch {
    return true;
  }
}

/** How far the clock may have stood ahead when an allowance was written. */
const CLOCK_SLACK_MS = 5 * 60 * 1000;

/**
 * Whether an allowance written for `created`..`expires` counts at `now`: inside that window, and
 * the window no longer than an allowance lasts. A clock set ahead when it was written (then put
 * right) would otherwise stretch it by as much, and one set back at the start would too. One
 * whose window has not begun is `future`, not `expired`: "expired" sent users looking at its
 * age, when what is wrong is a clock (set back since, or another host's).
 */
function allowanceOutcome(
  window: { created: number; expires: number },
  now: number,
): "allowed" | "expired" | "future" {
  const { created, expires } = window;
  if (
    !Number.isFinite(created) || !Number.isFinite(expires) ||
    expires - created > ALLOWANCE_LIFETIME_MS
  ) {
    return "expired";
  }
  if (created - CLOCK_SLACK_MS > now) return "future";
  return now <= expires ? "allowed" : "expired";
}

/**
 * `guard/KIND/<vm>.json` when it exists in a safe state directory, without creating anything;
 * `null` when the state directory, its `guard/KIND/` or the file does not exist.
 */
function existingGuardFile(stateDir: string, kind: GuardFolder, vm: string): string | null {
  // Most starts have neither file: one lstat settles it before the directories are checked.
  try {
    Deno.lstatSync(guardPath(stateDir, kind, fileName(vm)));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) {
      return null;
    }
    throw error;
  }
  let state: StateDir;
  try {
    state = openStateDir(stateDir, { write: false });
  } catch (error) {
    if (error instanceof StateDirError && error.problem === "missing") return null;
    throw error;
  }
  const guard = guardPath(state.path);
  const dir = join(guard, kind);
  if (!checkPrivateDir(guard, state) || !checkPrivateDir(dir, state)) return null;
  const path = join(dir, fileName(vm));
  return pathExists(path) ? path : null;
}

/**
 * `vm`'s allowance file when one is there, not yet taken by a start (it may have expired); `null`
 * when there is none or it cannot be told: what stands when writing a new one failed.
 */
export function allowanceFile(stateDir: string, vm: string): string | null {
  try {
    return existingGuardFile(stateDir, "allow", vm);
  } catch {
    return null;
  }
}

/** Where {@link recordRefusals} keeps `vm`'s record: what a note that it failed names. */
export function refusalRecordPath(stateDir: string, vm: string): string {
  return guardPath(stateDir, "refused", fileName(vm));
}

/**
 * Records the refusals of `vm`'s start (replacing the previous record), or removes the record
 * when `refusals` is empty: the record says what stopped the last start, not history. A
 * temporary record an earlier start of `vm` left (killed before its rename) is removed first.
 */
export function recordRefusals(
  stateDir: string,
  vm: string,
  refusals: readonly (GuardRefusal & { policy?: ActivePolicy })[],
  options: { allowed: boolean; now?: Date },
): string | null {
  removeLeftovers(stateDir, "refused", vm);
  if (refusals.length === 0) {
    const path = existingGuardFile(stateDir, "refused", vm);
    try {
      if (path !== null) Deno.removeSync(path);
    } catch (error) {
      // Removed by another start of `vm` at the same moment (a second daemon's): as asked.
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    return null;
  }
  const dir = guardDir(openStateDir(stateDir), "refused");
  const more = refusals.length - MAX_LISTED_REFUSALS;
  const record: GuardRefusalRecord = {
    vm,
    time: (options.now ?? new Date()).toISOString(),
    allowed: options.allowed,
    refusals: listedRefusals(refusals).map(({ vm: _vm, fix: _fix, ...rest }) => rest),
    ...(more > 0 ? { more } : {}),
  };
  const text = `${JSON.stringify(record, null, 2)}\n`;
  // Another start of `vm` at the same moment (a second daemon's) removes our temporary record as
  // a killed start's leftover before it writes its own: written again, it is not an error.
  for (let attempt = 1;; attempt++) {
    try {
      return replaceFileSync(dir, fileName(vm), text);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound) || attempt === 3) throw error;
    }
  }
}

/**
 * `guard/` of the state directory, or its folder `kind`, checked as every reader of the state
 * directory checks its directories (not links, ours, writable by us alone: records another user
 * could plant are never read as ours); `null` when it does not exist. Nothing written. Throws a
 * {@link StateDirError} for an unsafe one; a `guard/refused` that is not a directory is one saying
 * to remove it.
 */
function checkedGuardDir(stateDir: string, kind?: GuardFolder): string | null {
  let state: StateDir;
  try {
    state = openStateDir(stateDir, { write: false });
  } catch (error) {
    if (error instanceof StateDirError && error.problem === "missing") return null;
    throw error;
  }
  const guard = guardPath(state.path);
  if (!checkPrivateDir(guard, state)) return null;
  if (kind === undefined) return guard;
  const dir = join(guard, kind);
  try {
    return checkPrivateDir(dir, state) ? dir : null;
  } catch (error) {
    // The hook cannot record a refusal there either (it says "not a directory"): say what to do.
    if (error instanceof StateDirError && error.problem === "not-directory" && kind === "refused") {
      throw new StateDirError(
        dir,
        "not-directory",
        `Cannot use "${dir}": it is not a directory; remove it (the start guard keeps its refusal records there)`,
        { cause: error },
      );
    }
    throw error;
  }
}

/**
 * The recorded refusals, one per VM that has one, sorted by VM name, from a `guard/refused` the
 * checks of `checkedGuardDir` trust. Nothing written. An unsafe one is a
 * {@link StateDirError}.
 */
export function readRefusalRecords(stateDir: string): GuardRefusalRecord[] {
  const dir = checkedGuardDir(stateDir, "refused");
  if (dir === null) return [];
  const records: GuardRefusalRecord[] = [];
  const entries = [...Deno.readDirSync(dir)];
  for (const entry of entries) {
    if (!entry.isFile || !entry.name.endsWith(".json")) continue;
    try {
      const text = readGuardFile(join(dir, entry.name));
      const record = text === null ? null : JSON.parse(text);
      if (isRefusalRecord(record)) records.push(record);
    } catch {
      // A damaged record is skipped: it only informs.
    }
  }
  return records.sort((a, b) => a.vm.localeCompare(b.vm));
}

/** Whether `data` has the fields a record's readers use (a damaged one is skipped as unreadable). */
function isRefusalRecord(data: unknown): data is GuardRefusalRecord {
  const record = data as Partial<Record<keyof GuardRefusalRecord, unknown>> | null;
  const textOrNull = (v: unknown) => v === null || typeof v === "string";
  return typeof record === "object" && record !== null && typeof record.vm === "string" &&
    typeof record.time === "string" && typeof record.allowed === "boolean" &&
    Array.isArray(record.refusals) &&
    record.refusals.every((r: Record<string, unknown> | null) =>
      typeof r === "object" && r !== null && typeof r.kind === "string" &&
      typeof r.reason === "string" && textOrNull(r.address) && textOrNull(r.hostNeeds)
    );
}

/** A daemon reload done by `hook install`, as stored (for `doctor`). */
export interface ReloadRecord {
  /** The daemon's name (`libvirtd`, `virtqemud`). */
  name: string;
  /** Its process id then. */
  pid: number;
  /** ISO time of the SIGHUP. */
  time: string;
}

/** Records that `hook install` reloaded `daemon` (replacing the previous record). */
export function recordReload(
  stateDir: string,
  daemon: { name: string; pid: number },
  now: Date = new Date(),
): void {
  const state = openStateDir(stateDir);
  const guard = guardPath(state.path);
  ensurePrivateDir(guard, state);
  const record: ReloadRecord = { name: daemon.name, pid: daemon.pid, time: now.toISOString() };
  replaceFileSync(guard, RELOAD_FILE, `${JSON.stringify(record, null, 2)}\n`);
}

/**
 * The reloads `hook install` recorded, or `[]` when none can be read, or the record is in a
 * directory the checks of `checkedGuardDir` do not trust. Nothing written.
 */
export function readReloadRecords(stateDir: string): ReloadRecord[] {
  try {
    const guard = checkedGuardDir(stateDir);
    if (guard === null) return [];
    const data = JSON.parse(readGuardFile(join(guard, RELOAD_FILE)) ?? "null");
    return typeof data?.name === "string" && typeof data?.pid === "number" ? [data] : [];
  } catch {
    return [];
  }
}

/**
 * The `plan` warning for the start guard's last recorded refusal of a VM's start. `named`: the
 * host addresses the VM's definition names now; when it names none of the refused ones (an
 * `apply` since followed the moved card), the warning says so, as the refusal is history.
 */
export function guardRefusalIssue(
  record: GuardRefusalRecord,
  named?: ReadonlySet<string>,
): PlanIssue {
  const what = record.allowed ? "let it start once despite" : "refused it";
  const devices = record.refusals.flatMap((r) => r.address === null ? [] : [r.address]);
  // Only hostdevs and interfaces: `named` holds no NVMe disk's controller nor pool entry.
  const gone = named !== undefined && record.refusals.length > 0 && !(Number(record.more) > 0) &&
    record.refusals.every((r) =>
      (r.element === "hostdev" || r.element === "interface") && r.address !== null &&
      !named.has(r.address)
    );
  return {
    code: "guard-refused",
    message: `The start guard checked "${record.vm}" at ${record.time} and ${what}: ${
      record.refusals.map((r) => r.reason).join("; ")
    }${typeof record.more === "number" && record.more > 0 ? `; and ${record.more} more` : ""}${
      gone ? `; the definition of "${record.vm}" names none of them now` : ""
    }`,
    vm: record.vm,
    ...(devices.length > 0 ? { devices } : {}),
  };
}
