/**
 * Backups of persistent domain definitions, written before every define.
 *
 * Layout: `backups/<vm>/<UTC timestamp>-<uuid prefix>.xml`, with a JSON sidecar of the same name
 * (`.json`) recording the VM name, uuid, time, reason, libvirt URI and the sha256 of the XML. The
 * VM directory name is the VM name with every byte outside `[A-Za-z0-9_-]` (and a leading `.`)
 * percent-encoded, so no name can escape `backups/` or collide with another. The XML is written
 * first and the sidecar last: a backup without a sidecar is incomplete, listed as such by
 * {@link inspectBackups} and never restored.
 *
 * One bad file never hides the others: a damaged sidecar, an XML left without its sidecar by a
 * killed run, a leftover temporary file or an unsafe VM directory is reported as a
 * {@link BackupProblem} next to the intact backups.
 *
 * @module
 */

import { sha256Hex } from "./sha256.ts";
import { lockUri } from "./lock.ts";
import { followUpCommand, type RunFlags, shellWord } from "../render/shell.ts";
import { errorText } from "../render/error_text.ts";
import { redactSecrets } from "../domain/secrets.ts";
import { dirname, join, pathExists } from "./paths.ts";
import {
  checkPrivateDir,
  ensurePrivateDir,
  openStateDir,
  readOwnFileSync,
  type StateDir,
  StateDirError,
  writeNewFileSync,
} from "./state_dir.ts";

/**
 * Why a backup was taken: `apply` before defining a planned change, `rollback` before restoring
 * an earlier backup (so a rollback can itself be rolled back).
 */
export type BackupReason = "apply" | "rollback";

/** One backup as listed. Plain data (`backups --json` prints it as is). */
export interface BackupEntry {
  /** The backup's id: its file name without `.xml` (`20261124T032101.123Z-1b2c3d4e`). */
  id: string;
  /** The VM's name. */
  vm: string;
  /** The VM's uuid when the backup was taken. */
  uuid: string;
  /**
   * When it was taken, ISO 8601 UTC; never before the VM's previous backup, so it
   * orders the VM's backups as they were written.
   */
  time: string;
  /** Why the backup was taken. */
  reason: BackupReason;
  /** sha256 of the XML file, lower-case hex. */
  sha256: string;
  /** The libvirt URI the definition came from. */
  uri: string;
  /** Absolute path of the XML file. */
  path: string;
}

/** What {@link writeBackup} records. */
export interface BackupInput {
  /** The VM's name. */
  vm: string;
  /** The VM's uuid. */
  uuid: string;
  /** The persistent definition, fetched with `VIR_DOMAIN_XML_SECURE`. */
  xml: string;
  /** Why the backup is taken. */
  reason: BackupReason;
  /** The libvirt URI the XML was read from. */
  uri: string;
  /** The clock, for tests. Default: now. */
  now?: Date;
}

/**
 * No backup matches what was asked for. The message says where it looked, and why when the
 * reference is ambiguous or names a backup of another VM.
 */
export class BackupNotFoundError extends Error {
  /** The error's name. */
  override name = "BackupNotFoundError";
  /** The VM asked for. */
  readonly vm: string;
  /** The `--to` reference, or `null` when the newest backup was asked for. */
  readonly ref: string | null;
  /** The backup `ref` names, when it is a backup of another VM. */
  readonly otherVm: BackupEntry | null;
  /**
   * The backup `ref` names (or, with no `ref`, the VM's newest), when it was taken through
   * another libvirt connection than the one asked for: another host's VM of that name.
   */
  readonly otherConnection: BackupEntry | null;

  /**
   * Builds the error for `vm` and the reference asked for; `where` is the state directory
   * searched, `detail` replaces the default explanation of a `ref` not found (and explains a
   * missing newest one), `run` the flags its `passthrough backups` advice repeats.
   */
  constructor(
    vm: string,
    ref: string | null,
    options: {
      where?: string;
      detail?: string;
      otherVm?: BackupEntry;
      otherConnection?: BackupEntry;
      run?: RunFlags | undefined;
    } = {},
  ) {
    const where = options.where === undefined ? "" : ` in ${options.where}`;
    super(
      ref === null
        ? `No backup of VM "${vm}"${where}${
          options.detail === undefined ? "" : `: ${options.detail}`
        }`
        : `No backup "${ref}" of VM "${vm}"${where}: ${
          options.detail ??
            `run "${
              followUpCommand(options.run, "passthrough backups", { value: vm })
            }" to list them`
        }`,
    );
    this.vm = vm;
    this.ref = ref;
    this.otherVm = options.otherVm ?? null;
    this.otherConnection = options.otherConnection ?? null;
  }
}

/** A backup file is unreadable as a backup: bad sidecar, or the XML no longer matches its hash. */
export class BackupIntegrityError extends Error {
  /** The error's name. */
  override name = "BackupIntegrityError";
  /** The file at fault. */
  readonly path: string;
  /** What is wrong with it. */
  readonly detail: string;

  /** Builds the error for `path`. */
  constructor(path: string, detail: string, options?: ErrorOptions) {
    super(`Backup "${path}" is damaged: ${detail}`, options);
    this.path = path;
    this.detail = detail;
  }
}

const SAFE_BYTE = /^[A-Za-z0-9_-]$/;
/** Sidecars are a few hundred bytes; anything far larger was not written by passthrough. */
const MAX_SIDECAR_BYTES = 64 * 1024;
/**
 * Backups hold one domain definition; libvirt's remote protocol carries at most 4 MiB of XML, so
 * this leaves room for local drivers and stops a planted huge file from being read whole.
 */
const MAX_BACKUP_BYTES = 16 * 1024 * 1024;
/** Longest encoded directory name kept as is; longer ones are cut and suffixed with a hash. */
const MAX_NAME = 180;

/**
 * Encodes a VM name as one safe path component: bytes outside `[A-Za-z0-9_-]`, and a leading dot,
 * become `%XX`. Injective, so two VMs never share a directory; very long names are cut and
 * suffixed with a hash of the full name.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(encodeVmName("win11"), "win11");
 * assertEquals(encodeVmName("../etc"), "%2E.%2Fetc");
 * assertEquals(encodeVmName("a b.c"), "a%20b.c");
 * ```
 */
export function encodeVmName(name: string): string {
  let out = "";
  for (const byte of new TextEncoder().encode(name)) {
    const ch = String.fromCharCode(byte);
    const keep = SAFE_BYTE.test(ch) || (ch === "." && out !== "");
    out += keep ? ch : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  if (out === "") out = "%";
  if (out.length > MAX_NAME) out = `${out.slice(0, MAX_NAME)}~${sha256Hex(name).slice(0, 16)}`;
  return out;
}

/** `20261124T032101.123Z`: sortable, and free of `:` for file systems that dislike it. */
function stamp(date: Date): string {
  return date.toISOString().replace(/[-:]/g, "");
}

/**
 * The directory holding the backups of `vm` (`backups/<encoded name>`), for messages.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const state = { path: "/s", backupsPath: "/s/backups", uid: 0 };
 * assertEquals(backupDir(state, "a b"), "/s/backups/a%20b");
 * ```
 */
export function backupDir(state: StateDir, vm: string): string {
  return join(state.backupsPath, encodeVmName(vm));
}

function asStateDir(stateDir: string | StateDir, write: boolean): StateDir {
  return typeof stateDir === "string" ? openStateDir(stateDir, { write }) : stateDir;
}

/**
 * Writes a backup (XML then sidecar, both mode 0600, neither replacing anything) and returns its
 * entry. Throws when anything cannot be written: callers must not define without a backup.
 *
 * Backups are ordered by their time, and `rollback` restores the newest: a clock stepped back
 * (NTP correcting a clock that ran ahead) must not file a new backup before older ones. So one
 * taken when the clock reads earlier than the VM's newest backup is timed 1 ms after that one.
 */
export function writeBackup(stateDir: string | StateDir, input: BackupInput): BackupEntry {
  const state = asStateDir(stateDir, true);
  const dir = backupDir(state, input.vm);
  const existed = pathExists(dir);
  ensurePrivateDir(dir, state);
  try {
    return writeBackupFiles(dir, { ...input, now: notBeforeNewest(dir, input.now ?? new Date()) });
  } catch (error) {
    // A failed first backup (a full disk) leaves no empty directory behind for `backups` to list.
    if (!existed) removeIfEmpty(dir);
    throw error;
  }
}

function writeBackupFiles(dir: string, input: BackupInput): BackupEntry {
  const now = input.now ?? new Date();
  const uuidPrefix = input.uuid.replace(/[^0-9a-fA-F]/g, "").slice(0, 8).toLowerCase() || "nouuid";
  const base = `${stamp(now)}-${uuidPrefix}`;
  const bytes = new TextEncoder().encode(input.xml);
  const sha256 = sha256Hex(bytes);
  // Two backups within one millisecond get a counter rather than overwriting each other.
  for (let n = 0; n < 100; n++) {
    const id = n === 0 ? base : `${base}-${n}`;
    let path: string;
    try {
      path = writeNewFileSync(dir, `${id}.xml`, bytes);
    } catch (error) {
      if (error instanceof Deno.errors.AlreadyExists) continue;
      throw error;
    }
    const entry: BackupEntry = {
      id,
      vm: input.vm,
      uuid: input.uuid,
      time: now.toISOString(),
      reason: input.reason,
      sha256,
      uri: input.uri,
      path,
    };
    const sidecar = { format: 1, ...entry, path: undefined, file: `${id}.xml` };
    try {
      writeNewFileSync(dir, `${id}.json`, `${JSON.stringify(sidecar, null, 2)}\n`);
    } catch (error) {
      // A backup without its sidecar is not listed or restorable: do not leave half of one.
      Deno.removeSync(path);
      throw error;
    }
    return entry;
  }
  throw new Deno.errors.AlreadyExists(`Too many backups named "${base}" in "${dir}"`);
}

/** A backup file's name, as {@link stamp} starts it: its time. */
const STAMPED = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2}\.\d{3})Z-/;

/**
 * `now`, or 1 ms after the newest backup in `dir` when that is later (by the times its file
 * names start with, which a damaged sidecar cannot hide).
 */
function notBeforeNewest(dir: string, now: Date): Date {
  let newest = -Infinity;
  for (const file of listDir(dir)) {
    const m = STAMPED.exec(file.name);
    const time = m === null ? NaN : Date.parse(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z`);
    if (time > newest) newest = time;
  }
  // The same millisecond is kept: the file names' counter orders those.
  return now.getTime() < newest ? new Date(newest + 1) : now;
}

/**
 * The order of two ids (`STAMP-UUIDPREFIX[-N]`, {@link writeBackupFiles}): by the stamp and
 * prefix, then by the counter as a number (`-10` after `-9`), else as text.
 */
function idOrder(a: string, b: string): number {
  const split = (id: string) => {
    const m = /^(.*?)(?:-(\d{1,2}))?$/.exec(id)!;
    return { base: m[1]!, counter: Number(m[2] ?? 0) };
  };
  const [x, y] = [split(a), split(b)];
  if (x.base !== y.base) return x.base < y.base ? -1 : 1;
  return x.counter - y.counter;
}

function removeIfEmpty(dir: string): void {
  try {
    Deno.removeSync(dir); // Not recursive: fails, as it should, when anything is inside.
  } catch {
    // Not empty, or already gone: leave it.
  }
}

/** What `lstat` says of `path`, `undefined` when there is nothing there. */
function lstatOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/** How long after its last write a temporary file or an XML without a sidecar may be in writing. */
const WRITING_MS = 60 * 1000;

/**
 * Whether the file at `path` was written too lately to call it left by an interrupted run (an
 * apply of another connection may be writing that backup as it is listed); `null` when it is gone
 * since the listing (its write ended).
 */
function writtenLately(path: string): boolean | null {
  const info = lstatOrUndefined(path);
  if (info === undefined) return null;
  return info.mtime !== null && Date.now() - info.mtime.getTime() < WRITING_MS;
}

/** A backup file refused by {@link readOwnFileSync} (not a regular file, too large) as damaged. */
function unreadable(path: string, error: unknown): unknown {
  if (!(error instanceof StateDirError && error.problem === "unexpected-file")) return error;
  // The detail is the refusal's own sentence: as a cause too, every message would say it twice.
  return new BackupIntegrityError(path, error.message.replace(`Refusing "${path}": `, ""));
}

/**
 * Refuses the sidecar `metaPath` of backup `id` when its `time` is not the time its name starts
 * with. Listings order a VM's backups by that field, and `rollback` restores the first: both are
 * written from one clock reading, and one that differs (or a name that is no backup's) could pass
 * an older backup off as the newest.
 */
function checkNamedTime(metaPath: string, id: string, recorded: string): void {
  const named = STAMPED.exec(id);
  if (named === null) {
    throw new BackupIntegrityError(metaPath, "its name does not start with a backup's time");
  }
  const time = `${named[1]}-${named[2]}-${named[3]}T${named[4]}:${named[5]}:${named[6]}Z`;
  if (recorded !== time) {
    throw new BackupIntegrityError(
      metaPath,
      `its time "${recorded}" is not the one its name says (${time})`,
    );
  }
}

function readSidecar(dir: string, fileName: string): BackupEntry {
  const metaPath = join(dir, fileName);
  let text: string;
  try {
    text = new TextDecoder().decode(readOwnFileSync(metaPath, MAX_SIDECAR_BYTES));
  } catch (error) {
    throw unreadable(metaPath, error);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new BackupIntegrityError(metaPath, "the sidecar is not valid JSON", { cause: error });
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new BackupIntegrityError(metaPath, "the sidecar is not a JSON object");
  }
  const record = data as Record<string, unknown>;
  const id = fileName.slice(0, -".json".length);
  const fields = ["vm", "uuid", "time", "reason", "sha256", "uri"] as const;
  for (const field of fields) {
    if (typeof record[field] !== "string") {
      throw new BackupIntegrityError(metaPath, `field "${field}" is missing`);
    }
  }
  if (record.reason !== "apply" && record.reason !== "rollback") {
    throw new BackupIntegrityError(metaPath, `unknown reason "${String(record.reason)}"`);
  }
  return {
    id,
    vm: record.vm as string,
    uuid: record.uuid as string,
    time: record.time as string,
    reason: record.reason,
    sha256: record.sha256 as string,
    uri: record.uri as string,
    path: join(dir, `${id}.xml`),
  };
}

/**
 * A file (or a VM's directory) under `backups/` that is not a usable backup. Plain data.
 *
 * - `damaged`: a sidecar that cannot be read as one (not JSON, a field missing, not a regular
 *   file), one naming a VM whose directory this is not or a time its name does not start with, a
 *   sidecar whose XML file is gone or no longer matches its sha256, or a VM directory that is
 *   unsafe to read.
 * - `incomplete`: an XML file without its sidecar, or a temporary file: what a run killed while
 *   writing a backup leaves (or, written a moment ago, a backup another run is writing). Such a
 *   run defined nothing after it, since every define waits for the whole backup.
 */
export interface BackupProblem {
  /** What is wrong, as above. */
  kind: "damaged" | "incomplete";
  /** The backup's id when the file name gives one, else `null`. */
  id: string | null;
  /** The file or directory at fault. */
  path: string;
  /** What is wrong with it, for humans. */
  detail: string;
}

/** What {@link inspectBackups} finds: the usable backups and the files that are not. */
export interface BackupListing {
  /** Intact backups, newest first. */
  entries: BackupEntry[];
  /** Everything else under the directories read, by path. */
  problems: BackupProblem[];
}

/** `Backup "PATH" is damaged: DETAIL`: one sentence for a {@link BackupProblem}. */
export function describeBackupProblem(problem: BackupProblem): string {
  return `Backup "${problem.path}" is ${problem.kind}: ${problem.detail}`;
}

/** The backups of one VM directory, and its files that are not backups. */
function inspectVmDir(dir: string, into: BackupListing): void {
  // One listing: read twice, a backup written in between (by an apply of another connection,
  // while `backups` reads) was in the second only, its XML or sidecar missing from the first.
  const names = new Map<string, Deno.DirEntry>();
  for (const file of listDir(dir)) names.set(file.name, file);
  for (const file of names.values()) {
    if (file.name.startsWith(".")) {
      const problem = temporaryFileProblem(join(dir, file.name));
      if (problem !== null) into.problems.push(problem);
    } else if (file.name.endsWith(".xml")) {
      const problem = sidecarMissingProblem(dir, file.name, names);
      if (problem !== null) into.problems.push(problem);
    } else if (file.name.endsWith(".json")) {
      inspectSidecar(dir, file, { names, into });
    }
  }
}

/**
 * The entries of a directory under `backups/`, already found to be ours: one its owner cannot
 * list (a `chmod` by hand) is a {@link StateDirError} (`unreadable`) naming it and the `chmod`
 * that gives it back, which a listing of every VM reports next to the others, and `apply` in the
 * line of a VM whose backup it stops.
 */
function listDir(dir: string): Deno.DirEntry[] {
  try {
    return [...Deno.readDirSync(dir)];
  } catch (error) {
    // Ours (checked before) and private: 0700 is what passthrough made it.
    const fix = error instanceof Deno.errors.PermissionDenied
      ? `: run "chmod 700 ${shellWord(dir)}"`
      : "";
    // The message quotes the system's reason: as a cause too, it would have the CLI add its
    // generic "check the owner and mode of that path, or run as root" after the fix.
    throw new StateDirError(
      dir,
      "unreadable",
      `Cannot read "${dir}": ${errorText(error)}${fix}`,
      fix === "" ? { cause: error } : {},
    );
  }
}

/** A backup's temporary file as a problem; `null` for another hidden file, or one gone since. */
function temporaryFileProblem(path: string): BackupProblem | null {
  const lately = path.endsWith(".tmp") ? writtenLately(path) : null;
  if (lately === null) return null;
  return {
    kind: "incomplete",
    id: null,
    path,
    detail: lately
      ? "a temporary file of a backup a run may be writing now (or one interrupted moments ago)"
      // Nothing removes it (prune leaves what it did not write for a person): say that person's way.
      : "a temporary file left by a run interrupted while writing a backup; nothing reads it: remove it",
  };
}

/**
 * Where {@link pruneBackups} renames the sidecar of the backup `id` in `dir` while it removes that
 * backup: a hidden name, which listings skip.
 */
function pruningPath(dir: string, id: string): string {
  return join(dir, `.${id}.json.pruning`);
}

/** The XML file `name` as a problem when it has no sidecar; `null` when it has (or is gone). */
function sidecarMissingProblem(
  dir: string,
  name: string,
  names: ReadonlyMap<string, Deno.DirEntry>,
): BackupProblem | null {
  const path = join(dir, name);
  const id = name.slice(0, -".xml".length);
  // Its sidecar written since the listing: a backup this listing began before, not a problem.
  // Or renamed aside by a prune, which removes the XML before that: one being removed.
  const lately = names.has(`${id}.json`) || lstatOrUndefined(join(dir, `${id}.json`)) ||
      lstatOrUndefined(pruningPath(dir, id))
    ? null
    : writtenLately(path);
  if (lately === null) return null;
  return {
    kind: "incomplete",
    id,
    path,
    detail: lately
      ? "its sidecar is missing (a run may be writing this backup now, or was killed moments ago between the two writes); it cannot be restored"
      : "its sidecar is missing (a run killed between the two writes leaves this, and defined nothing after it); it cannot be restored: remove it",
  };
}

/**
 * The backup the sidecar `file` describes into `into.entries` when it and its XML are intact,
 * else what is wrong into `into.problems` (one naming another VM than the directory's too);
 * nothing for one pruned since the listing.
 */
function inspectSidecar(
  dir: string,
  file: Deno.DirEntry,
  { names, into }: {
    names: ReadonlyMap<string, Deno.DirEntry>;
    into: BackupListing;
  },
): void {
  const path = join(dir, file.name);
  const id = file.name.slice(0, -".json".length);
  const damaged = (detail: string, at = path): void => {
    into.problems.push({ kind: "damaged", id, path: at, detail });
  };
  if (!file.isFile) return damaged("the sidecar is not a regular file");
  let entry: BackupEntry;
  try {
    entry = readSidecar(dir, file.name);
    checkNamedTime(path, id, entry.time);
  } catch (error) {
    // Removed since the listing, by an apply pruning the VM's backups: no backup to report.
    if (error instanceof Deno.errors.NotFound) return;
    if (!(error instanceof BackupIntegrityError)) throw error;
    return damaged(error.detail);
  }
  // Only passthrough names the directory, from the VM's name: one copied or moved by hand into
  // another VM's would be listed (and numbered) as its own VM's backup, which `rollback` of that
  // VM, reading its own directory alone, never finds; and skipped here, `rollback` of this one
  // would pass over a newer file of its directory unsaid.
  const home = join(dirname(dir), encodeVmName(entry.vm));
  if (home !== dir) {
    return damaged(
      `the sidecar names VM ${
        JSON.stringify(entry.vm)
      }, whose backups are in "${home}": it is in another VM's directory; it cannot be restored`,
    );
  }
  // A listing is no snapshot: the XML, written before its sidecar, may be missing from it.
  const xml = names.get(`${id}.xml`) ?? lstatOrUndefined(join(dir, `${id}.xml`));
  // A prune removes the sidecar, then the XML: with both gone since, the backup is no more.
  const missing = () => {
    if (lstatOrUndefined(path) !== undefined) damaged(`its XML file "${id}.xml" is missing`);
  };
  if (xml === undefined) return missing();
  if (!xml.isFile) {
    // Listed as intact, it would be the one `rollback` picks, and then refuses.
    const kind = xml.isSymlink
      ? "a symbolic link"
      : xml.isDirectory
      ? "a directory"
      : "not a regular file";
    return damaged(`its XML file "${id}.xml" is ${kind}`);
  }
  // Listed as intact, an XML changed since would be numbered for `rollback --to N`, which
  // refuses it, and counted among the backups `apply` keeps.
  try {
    readBackupXml(entry);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return missing();
    if (!(error instanceof BackupIntegrityError)) throw error;
    return damaged(error.detail, entry.path);
  }
  into.entries.push(entry);
}

/**
 * Lists backups, of one VM or of every VM, with every file that is not a usable backup reported
 * beside them rather than failing the listing. A missing state directory or backup directory
 * means no backups. An unsafe VM directory is a problem when every VM is listed, and an error
 * ({@link StateDirError}) when that VM's backups are asked for.
 */
export function inspectBackups(stateDir: string | StateDir, vm?: string): BackupListing {
  const listing: BackupListing = { entries: [], problems: [] };
  let state: StateDir;
  try {
    state = asStateDir(stateDir, false);
  } catch (error) {
    if (error instanceof StateDirError && error.problem === "missing") return listing;
    throw error;
  }
  if (vm !== undefined) {
    const dir = backupDir(state, vm);
    if (checkPrivateDir(dir, state)) inspectVmDir(dir, listing);
  } else if (checkPrivateDir(state.backupsPath, state)) {
    for (const entry of listDir(state.backupsPath)) {
      if (entry.name.startsWith(".")) continue;
      const dir = join(state.backupsPath, entry.name);
      try {
        if (checkPrivateDir(dir, state)) inspectVmDir(dir, listing);
      } catch (error) {
        if (!(error instanceof StateDirError)) throw error;
        listing.problems.push({ kind: "damaged", id: null, path: dir, detail: error.message });
      }
    }
  }
  listing.entries.sort((a, b) =>
    a.time !== b.time ? (a.time < b.time ? 1 : -1) : idOrder(b.id, a.id)
  );
  listing.problems.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return listing;
}

/**
 * Lists the intact backups, newest first, of one VM or of every VM; files that are not usable
 * backups are left out (see {@link inspectBackups} for them).
 */
export function listBackups(stateDir: string | StateDir, vm?: string): BackupEntry[] {
  return inspectBackups(stateDir, vm).entries;
}

/** How many backups of each VM `apply` keeps when told no other number (`--keep-backups`). */
export const DEFAULT_KEEP_BACKUPS = 10;

/** The most backups of each VM `apply` may be told to keep (`--keep-backups`, `keep_backups:`). */
export const MAX_KEEP_BACKUPS = 999999;

/** What {@link pruneBackups} removed, and why it stopped early, if it did. Plain data. */
export interface PruneOutcome {
  /** The backups removed, newest first. */
  removed: BackupEntry[];
  /** Why a backup could not be removed (the rest were then kept), else `null`. */
  error: string | null;
}

/**
 * Removes, of `listed` (one VM's intact backups, newest first, as {@link listBackups} gives
 * them), those taken from the domain `uuid` of the connection `uri` beyond its newest `keep` (`0`:
 * none removed). The newest is what `rollback VM` restores, so `keep` is at least 1 when anything
 * goes. Only intact backups of that domain count and go: those of another domain once named the
 * same (undefined since), or of one with that uuid on another connection (a VM migrated or defined
 * there from one XML, whose apply this one's lock does not exclude), may be the only way to define
 * it again, and a damaged or incomplete file (an XML that no longer matches its sidecar's sha256
 * too) is left for a person to look at. It takes the listing rather than reading the backups
 * again: listing reads and hashes every one, and its caller has just done so.
 */
export function pruneBackups(
  listed: readonly BackupEntry[],
  options: { uuid: string; uri: string; keep: number },
): PruneOutcome {
  const outcome: PruneOutcome = { removed: [], error: null };
  if (options.keep <= 0) return outcome;
  const uri = lockUri(options.uri);
  const ours = listed.filter((e) => e.uuid === options.uuid && lockUri(e.uri) === uri);
  for (const dir of new Set(ours.map((e) => dirname(e.path)))) {
    finishInterruptedPrunes(dir, { uuid: options.uuid, uri });
  }
  for (const entry of ours.slice(options.keep)) {
    try {
      // The sidecar first, renamed aside in one step (a listing reads the XML left beside the
      // renamed sidecar as a backup being removed, not as one left incomplete), then the XML,
      // then the sidecar: cut short, nothing left is ever restored.
      const pruning = pruningPath(dirname(entry.path), entry.id);
      Deno.renameSync(entry.path.replace(/\.xml$/, ".json"), pruning);
      Deno.removeSync(entry.path);
      Deno.removeSync(pruning);
    } catch (error) {
      outcome.error = `cannot remove "${entry.path}": ${
        error instanceof Error ? error.message : String(error)
      }`;
      break;
    }
    outcome.removed.push(entry);
  }
  return outcome;
}

/**
 * Removes what a prune of this domain's backups in `dir` left when it was cut short (the XML
 * beside its sidecar renamed aside, or that sidecar alone), which listings skip as being removed:
 * this run holds the lock that prune held, so none of these is one being removed now. Another
 * domain's, or another connection's, may be; those are left. A file that cannot be read or
 * removed is left too, for the next prune.
 */
function finishInterruptedPrunes(dir: string, owner: { uuid: string; uri: string }): void {
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].map((e) => e.name);
  } catch {
    return;
  }
  for (const name of names) {
    const id = /^\.(.+)\.json\.pruning$/.exec(name)?.[1];
    if (id === undefined) continue;
    try {
      const sidecar = readSidecar(dir, name);
      if (sidecar.uuid !== owner.uuid || lockUri(sidecar.uri) !== owner.uri) continue;
      if (lstatOrUndefined(join(dir, `${id}.xml`)) !== undefined) {
        Deno.removeSync(join(dir, `${id}.xml`));
      }
      Deno.removeSync(join(dir, name));
    } catch {
      continue;
    }
  }
}

/**
 * A `ref` made of one to three digits (or `#N`) is an index, as `backups` numbers each VM's
 * backups (1 = newest): ids start with an eight-digit date, so no useful id prefix is that short.
 */
function backupIndex(ref: string): number | null {
  const match = /^#?(\d{1,3})$/.exec(ref);
  return match === null ? null : Number(match[1]);
}

/** The backups whose id, file name or path is `ref`, else whose id starts with it. */
function matching<T extends { id: string | null; path: string }>(items: T[], ref: string): T[] {
  const names = (id: string | null) => id === null ? [] : [id, `${id}.xml`, `${id}.json`];
  const exact = items.filter((e) => names(e.id).includes(ref) || e.path === ref);
  if (exact.length > 0) return exact;
  return items.filter((e) => e.id !== null && e.id.startsWith(ref));
}

/**
 * Finds one backup of `vm`: the newest when `ref` is absent, else the one whose id, file name or
 * path is `ref`, the one whose id starts with `ref` when only one does, or the one at index `ref`
 * (`1` or `#1` is the newest, as `backups` numbers them). Only listed backups can be chosen, so
 * `ref` can never point outside `backups/`. A damaged backup is never chosen: asked for by name,
 * or newer than every intact one when the newest is asked for, it is a
 * {@link BackupIntegrityError} (restoring an older one instead would silently skip a change).
 * With `options.uri`, only backups taken through that libvirt connection (as its lock names it)
 * are chosen: the newest is the newest of those, and one named (by id or by its `#` in the VM's
 * listing) that was taken through another is a {@link BackupNotFoundError} naming that
 * connection. A VM of that name and uuid on another host (defined from one XML, or migrated)
 * shares the VM's backup directory, and its definition names that host's devices.
 * A `ref` not found says where it looked, which backups an ambiguous prefix matches, and whose a
 * backup of another VM is; the commands it advises repeat `options.run`'s flags.
 *
 * @example
 * ```ts
 * import { findBackup, writeBackup } from "./backups.ts";
 * import { openStateDir } from "./state_dir.ts";
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const state = openStateDir(Deno.makeTempDirSync() + "/state");
 * const xml = "<domain><name>a</name></domain>";
 * const b = writeBackup(state, { vm: "a", uuid: "u", xml, reason: "apply", uri: "test:///default" });
 * assertEquals(findBackup(state, "a", "1").id, b.id);
 * assertEquals(findBackup(state, "a", b.id.slice(0, 12)).id, b.id);
 * ```
 */
export function findBackup(
  stateDir: string | StateDir,
  vm: string,
  ref?: string,
  options: { run?: RunFlags | undefined; uri?: string | undefined } = {},
): BackupEntry {
  const { run, uri } = options;
  const { entries: listed, problems } = inspectBackups(stateDir, vm);
  const ours = (e: BackupEntry) => uri === undefined || libvirtHost(e.uri) === libvirtHost(uri);
  const entries = listed.filter(ours);
  const damaged = problems.filter((p) => p.kind === "damaged" && p.id !== null);
  // Found, but taken through another connection: never restored through this one.
  const theirs = (found: BackupEntry, asked: string | null): BackupEntry => {
    if (ours(found)) return found;
    throw otherConnection(stateDir, { vm, ref: asked, found, uri: uri!, run });
  };
  if (ref === undefined) {
    const newest = entries[0];
    // Only a name passthrough gives a backup tells its time: a stray `notes.json` is no newer.
    const newer = damaged.filter((p) =>
      STAMPED.test(p.id!) && (newest === undefined || idOrder(p.id!, newest.id) > 0)
    ).sort((a, b) => idOrder(a.id!, b.id!)).at(-1);
    if (newer !== undefined) {
      throw new BackupIntegrityError(
        newer.path,
        newest === undefined
          // "Choose one" sent the user to a listing with nothing to choose.
          ? `${newer.detail}; "${vm}" has no intact backup to restore`
          : `${newer.detail}; it is newer than every intact backup of "${vm}": choose one with --to (run "${
            followUpCommand(run, "passthrough backups", { value: vm })
          }")`,
      );
    }
    if (newest === undefined && listed[0] !== undefined) theirs(listed[0], null);
    if (newest === undefined) throw new BackupNotFoundError(vm, null, { where: state(stateDir) });
    return newest;
  }
  const index = backupIndex(ref);
  if (index !== null) {
    // As `backups` numbers them: every connection's.
    const at = listed[index - 1];
    if (at !== undefined && index > 0) return theirs(at, ref);
    throw new BackupNotFoundError(vm, ref, {
      where: state(stateDir),
      detail: `"${vm}" has ${listed.length} backup${listed.length === 1 ? "" : "s"}` +
        ` (1 is the newest): run "${
          followUpCommand(run, "passthrough backups", { value: vm })
        }" to list them`,
    });
  }
  const found = [...matching(listed, ref), ...matching(damaged, ref)];
  if (found.length === 1) {
    const [one] = found;
    if ("sha256" in one!) return theirs(one, ref);
    throw new BackupIntegrityError(one!.path, one!.detail);
  }
  if (found.length > 1) {
    throw new BackupNotFoundError(vm, ref, {
      where: state(stateDir),
      run,
      detail: `"${ref}" is the start of ${found.length} backup ids (${
        found.map((f) => f.id).join(", ")
      }): give more of the id`,
    });
  }
  throw notOfThisVm(stateDir, vm, ref, run);
}

/**
 * The libvirt a backup's definition came from, as far as its devices go: `uri` as its connection
 * lock names it, but for the socket (`?socket=`), which reaches a daemon of this host either way.
 * Backups of one VM through two of these are another host's definitions.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(libvirtHost("qemu:///system?socket=/tmp/d/libvirt-sock"), "qemu:///system");
 * assertEquals(libvirtHost("qemu+ssh://root@hv2/system"), "qemu+ssh://hv2/system");
 * ```
 */
export function libvirtHost(uri: string): string {
  return lockUri(uri).replace(/\?socket=.*$/, "");
}

/** The state directory's path, for messages. */
function state(stateDir: string | StateDir): string {
  return typeof stateDir === "string" ? stateDir : stateDir.path;
}

/**
 * The backup `found` of `vm` (`ref`, or the newest when `null`) was taken through another libvirt
 * connection than `uri`: its definition is that libvirt's VM's, whose devices are another host's.
 */
function otherConnection(
  stateDir: string | StateDir,
  { vm, ref, found, uri, run }: {
    vm: string;
    ref: string | null;
    found: BackupEntry;
    uri: string;
    run: RunFlags | undefined;
  },
): BackupNotFoundError {
  const there = followUpCommand({ ...run, connect: found.uri }, "passthrough rollback", {
    value: vm,
    ...(ref === null ? {} : { options: [["--to", found.id]] }),
  });
  return new BackupNotFoundError(vm, ref, {
    where: state(stateDir),
    otherConnection: found,
    detail: `${ref === null ? "its newest " : ""}backup "${found.id}" was taken through ${
      redactSecrets(found.uri)
    }, not ${
      redactSecrets(uri)
    }: its definition is the VM of that libvirt, with its host's devices; restore it there with "${there}"`,
  });
}

/** No backup `ref` of `vm`: explains a backup of another VM that `ref` names, if there is one. */
function notOfThisVm(
  stateDir: string | StateDir,
  vm: string,
  ref: string,
  run: RunFlags | undefined,
): BackupNotFoundError {
  const others = matching(inspectBackups(stateDir).entries.filter((e) => e.vm !== vm), ref);
  const [other] = others;
  if (others.length !== 1 || other === undefined) {
    return new BackupNotFoundError(vm, ref, { where: state(stateDir), run });
  }
  return new BackupNotFoundError(vm, ref, {
    where: state(stateDir),
    otherVm: other,
    detail: `backup "${other.id}" belongs to VM "${other.vm}": restore it with ` +
      `"${
        followUpCommand(run, "passthrough rollback", {
          value: other.vm,
          options: [["--to", other.id]],
        })
      }"`,
  });
}

/**
 * Reads a backup's XML and checks it against the sha256 its sidecar recorded; throws
 * {@link BackupIntegrityError} when they differ.
 */
export function readBackupXml(entry: BackupEntry): string {
  let bytes: Uint8Array;
  try {
    bytes = readOwnFileSync(entry.path, MAX_BACKUP_BYTES);
  } catch (error) {
    throw unreadable(entry.path, error);
  }
  const actual = sha256Hex(bytes);
  if (actual !== entry.sha256) {
    throw new BackupIntegrityError(
      entry.path,
      `sha256 is ${actual}, the sidecar recorded ${entry.sha256}`,
    );
  }
  return new TextDecoder().decode(bytes);
}
