/**
 * The state directory (`/var/lib/passthrough` by default) that holds backups and the apply lock.
 *
 * It holds definitions fetched with `VIR_DOMAIN_XML_SECURE` (secrets included), so it must be
 * private: created 0700, and refused when it (or `backups/`) is a symlink, is not a directory, is
 * owned by another user, or is group- or world-writable. Files inside are written to a temporary
 * name opened with `createNew` (`O_CREAT|O_EXCL`, which never follows a symlink), synced, then
 * hard-linked to their final name (which fails instead of replacing whatever is there). Files
 * read back (the lock, sidecars, backups) must be regular files, are never followed through a
 * symlink, and are read up to a bound ({@link readOwnFileSync}).
 *
 * @module
 */

import { dirname, isAbsolute, isFileName, join, resolve } from "./paths.ts";
import { errorText } from "../render/error_text.ts";
import { shellWord } from "../render/shell.ts";

/** Where state lives when neither `--state-dir` nor `PASSTHROUGH_STATE_DIR` says otherwise. */
export const DEFAULT_STATE_DIR = "/var/lib/passthrough";

/** The environment variable that overrides {@link DEFAULT_STATE_DIR}. */
export const STATE_DIR_ENV = "PASSTHROUGH_STATE_DIR";

/**
 * Why a directory cannot be used for state: `missing` (only reported when nothing may be
 * created), `symlink`, `not-directory`, `foreign-owner` (owned by another uid),
 * `loose-permissions` (group- or world-writable) or `unwritable` (cannot be created or written,
 * e.g. a read-only or full file system), `unreadable` (a directory its owner cannot list, its
 * mode changed by hand); or why a file in it cannot be read back:
 * `unexpected-file` (a symlink, FIFO, device or directory where passthrough writes a regular
 * file, or a file larger than any passthrough writes).
 */
export type StateDirProblem =
  | "missing"
  | "symlink"
  | "not-directory"
  | "foreign-owner"
  | "loose-permissions"
  | "unwritable"
  | "unreadable"
  | "unexpected-file";

/** The state directory (or a directory inside it) is unsafe or unusable. */
export class StateDirError extends Error {
  /** The error's name. */
  override name = "StateDirError";
  /** The offending path. */
  readonly path: string;
  /** What is wrong with it. */
  readonly problem: StateDirProblem;

  /** Builds the error; `message` is the full sentence shown to users. */
  constructor(path: string, problem: StateDirProblem, message: string, options?: ErrorOptions) {
    super(message, options);
    this.path = path;
    this.problem = problem;
  }
}

/** An opened, checked state directory. */
export interface StateDir {
  /** Absolute path of the state directory. */
  path: string;
  /** Absolute path of its `backups/` subdirectory. */
  backupsPath: string;
  /** The user id that owns it (ours), or `null` when it could not be learnt (read-only open). */
  uid: number | null;
}

/** Options for {@link openStateDir}. */
export interface OpenStateDirOptions {
  /**
   * Create the directory (and `backups/`) when missing and prove it is writable by creating,
   * syncing and removing a probe file. Default `true`. With `false` nothing is written: used by
   * read-only commands (`backups`), which then see a missing directory as `missing`.
   */
  write?: boolean;
}

/**
 * Chooses the state directory: the `--state-dir` flag, else `PASSTHROUGH_STATE_DIR`, else
 * {@link DEFAULT_STATE_DIR}. Relative paths are resolved against the working directory.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(resolveStateDirPath({ env: () => undefined }), "/var/lib/passthrough");
 * assertEquals(resolveStateDirPath({ flag: "/srv/pt", env: () => "/x" }), "/srv/pt");
 * assertEquals(resolveStateDirPath({ env: () => "/x" }), "/x");
 * ```
 */
export function resolveStateDirPath(
  options: { flag?: string | undefined; env?: (name: string) => string | undefined },
): string {
  const fromEnv = options.env?.(STATE_DIR_ENV);
  const chosen = options.flag ?? (fromEnv !== undefined && fromEnv !== "" ? fromEnv : undefined) ??
    DEFAULT_STATE_DIR;
  return isAbsolute(chosen) ? chosen : resolve(chosen);
}

/** Our effective uid when the permission allows asking; `null` otherwise (no `--allow-sys`). */
function processUid(): number | null {
  try {
    return Deno.uid();
  } catch {
    return null;
  }
}

/**
 * Checks the parts of a private directory that need no write: not a symlink, a directory, and not
 * group- or world-writable. Returns its owner's uid. `chosen`: the state directory itself, which
 * the user may choose another for; a folder passthrough keeps in it, or the lock directory, has
 * no other, and only its mode is the fix.
 */
function checkDirShape(path: string, { chosen = false }: { chosen?: boolean } = {}): number {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new StateDirError(path, "missing", `State directory "${path}" does not exist`, {
        cause: error,
      });
    }
    throw cannotUse(path, error);
  }
  if (info.isSymlink) {
    throw new StateDirError(
      path,
      "symlink",
      `Refusing to use "${path}": it is a symbolic link, which could redirect what passthrough keeps there elsewhere`,
    );
  }
  if (!info.isDirectory) {
    throw new StateDirError(path, "not-directory", `Cannot use "${path}": it is not a directory`);
  }
  const mode = info.mode ?? 0;
  if ((mode & 0o022) !== 0) {
    // A sticky directory (/tmp) is shared on purpose: tightening it would break the system. So
    // may be one that only its group can write (a team's directory): the user knows which.
    const own =
      `use one of passthrough's own, such as the default /var/lib/passthrough (a missing one is created with mode 0700)`;
    // Quoted as the shell reads it: a path with a space would be two arguments to chmod.
    const chmod = `chmod 700 ${shellWord(path)}`;
    const advice = !chosen
      ? `; run "${chmod}"`
      : (mode & 0o1000) !== 0
      ? `, a directory shared with other users: ${own}`
      : (mode & 0o002) === 0 && path !== DEFAULT_STATE_DIR
      ? `; if it is passthrough's alone, run "${chmod}"; if its group shares it on purpose, ${own}`
      : `; run "${chmod}"`;
    throw new StateDirError(
      path,
      "loose-permissions",
      `Refusing to use "${path}": it is group- or world-writable (mode ${
        (mode & 0o7777).toString(8).padStart(4, "0")
      })${advice}`,
    );
  }
  return info.uid ?? -1;
}

/** A state directory `lstat` failed on for a reason other than its absence. */
function cannotUse(path: string, error: unknown): StateDirError {
  return new StateDirError(
    path,
    "unwritable",
    `Cannot use state directory "${path}": ${errorText(error)}`,
    { cause: error },
  );
}

/**
 * Refuses `path` unless `uid` (`null`: not known) owns it. `within` is the state directory it is
 * in, already found to be ours: then no other user can have made `path` there since, and the
 * state directory was given to us without what it held (a `chown` without `-R`).
 */
function checkOwner(path: string, owner: number, uid: number | null, within?: string): void {
  if (uid === null || owner === uid) return;
  const whose = `it is owned by uid ${owner}, not by the current user (uid ${uid})`;
  if (within !== undefined) {
    // "Run as its owner" sent the user to one the state directory itself refuses, and back.
    const chown = `chown -R ${uid} ${shellWord(within)}`;
    throw new StateDirError(
      path,
      "foreign-owner",
      `Refusing to use "${path}": ${whose}, who owns the state directory "${within}" it is in: ` +
        `make all of it yours with "${chown}"${uid === 0 ? "" : ", run as root"}`,
    );
  }
  throw new StateDirError(
    path,
    "foreign-owner",
    // The way on, right wherever the directory came from: chosen by the user (--state-dir) or
    // by the installed hook, whose state directory `guard allow`, `plan` and `hook status` read.
    `Refusing to use "${path}": ${whose}: ${
      owner === 0 ? "run as root" : "run as its owner, or use a directory of your own"
    }`,
  );
}

/** Creates `path` (0700) when it does not exist yet; a concurrent creator is not an error. */
function createPrivateDir(path: string): void {
  try {
    Deno.lstatSync(path);
    return;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      throw cannotUse(path, error);
    }
  }
  try {
    Deno.mkdirSync(path, { recursive: true, mode: 0o700 });
  } catch (error) {
    // With the system's reason: a report line (apply's backup-failed) shows no causes.
    throw new StateDirError(
      path,
      "unwritable",
      `Cannot create state directory "${path}": ${errorText(error)}`,
      { cause: error },
    );
  }
  // Its mode is mkdir's alone (0700, less what the umask takes): a chmod by path here followed a
  // link that another user who can write the parent swapped in since, whatever it pointed to.
}

/**
 * Proves `dir` is writable now (not read-only, not full) by writing, syncing and removing a small
 * file, and returns the uid the kernel gave that file: our effective uid, learnt without
 * `--allow-sys`.
 */
function probeWritable(dir: string): number {
  const probe = join(dir, `.probe-${crypto.randomUUID()}`);
  try {
    const file = Deno.openSync(probe, { write: true, createNew: true, mode: 0o600 });
    try {
      writeAllSync(file, new TextEncoder().encode("passthrough write probe\n"));
      file.syncSync();
      return file.statSync().uid ?? -1;
    } finally {
      file.close();
      Deno.removeSync(probe);
    }
  } catch (error) {
    throw new StateDirError(
      dir,
      "unwritable",
      `State directory "${dir}" is not writable: ${errorText(error)}`,
      { cause: error },
    );
  }
}

/**
 * What passthrough itself puts at the top of a state directory: `backups/`, `guard/`, the start
 * guard's Deno cache `deno/`, a connection lock kept there (`connection-HASH.lock`) and the
 * temporary names of the write probe and of a lock being made.
 */
const OWN_ENTRY =
  /^(?:backups|guard|deno|connection-[0-9a-f]{32}\.lock|\.probe-[0-9a-f-]{36}|\.lock\.[0-9a-f-]{36}\.tmp)$/;

/**
 * Makes a state directory that others may read or enter (0755: made by an older passthrough, or
 * by the start guard under libvirt's umask before hook format 7) 0700, as a new one is, when it
 * holds nothing but passthrough's own entries. One holding anything else was chosen for more than
 * passthrough (`--state-dir ~/work`), and its mode is its owner's: what passthrough keeps in it is
 * private on its own (`backups/` and `guard/` 0700, files 0600). Called once the directory is
 * known to be ours and writable.
 */
function tightenOwnStateDir(path: string, uid: number): void {
  const mode = Deno.lstatSync(path).mode ?? 0;
  if ((mode & 0o077) === 0) return;
  for (const entry of Deno.readDirSync(path)) {
    if (!OWN_ENTRY.test(entry.name)) return;
  }
  // Deno has no fchmod: the chmod goes by path, and follows a link at it. Where another user
  // could put one there (`--state-dir ~alice/pt` as root) the mode stays: it only let others
  // look in, at entries private on their own.
  if (othersCanChange(dirname(path), uid) !== null) return;
  Deno.chmodSync(path, mode & 0o7700);
}

/**
 * The first of `dir` and the directories above it (and the links on the way, and their
 * targets' ways) that a user other than `uid` and root could change, so as to swap an entry in
 * `dir` for a symbolic link; `null` when there is none: each is owned by `uid` or root, and each
 * directory is writable by its owner alone or sticky (where others cannot rename what is not
 * theirs). The way sshd's StrictModes checks the way to a user's keys. A component that cannot
 * be looked at counts as changeable.
 */
function othersCanChange(dir: string, uid: number, links = 0): string | null {
  const prefixes = ["/"];
  for (const part of dir.split("/").filter((p) => p !== "")) {
    prefixes.push(join(prefixes.at(-1)!, part));
  }
  for (const prefix of prefixes) {
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(prefix);
    } catch {
      return prefix;
    }
    if (info.uid !== uid && info.uid !== 0) return prefix;
    if (info.isSymlink) {
      // 40: the kernel's own limit (ELOOP).
      if (links >= 40) return prefix;
      let target: string;
      let from: string;
      try {
        target = Deno.readLinkSync(prefix);
        // A relative target is read from the directory the link is in, as the kernel reads it:
        // `..` from the way the path is spelt (through a link above) is another directory.
        from = Deno.realPathSync(dirname(prefix));
      } catch {
        return prefix;
      }
      const resolved = isAbsolute(target) ? target : join(from, target);
      const changeable = othersCanChange(resolved, uid, links + 1);
      if (changeable !== null) return changeable;
    } else if ((info.mode ?? 0) & 0o022 && !((info.mode ?? 0) & 0o1000)) {
      return prefix;
    }
  }
  return null;
}

/**
 * Opens the state directory: creates it (0700) if needed, refuses unsafe ones with
 * {@link StateDirError}, and (unless `write: false`) proves it is writable, so that a read-only or
 * full file system is reported before any domain is defined.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * const state = openStateDir(`${dir}/state`);
 * assertEquals((Deno.statSync(state.path).mode ?? 0) & 0o777, 0o700);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function openStateDir(path: string, options: OpenStateDirOptions = {}): StateDir {
  const write = options.write ?? true;
  // An empty path (an unset variable) would resolve to the working directory and put backups/
  // there; the CLI refuses `--state-dir ""` as a usage error, and the library the same way.
  if (path === "") {
    throw new StateDirError(
      path,
      "missing",
      `No state directory given (an empty path); the default is ${DEFAULT_STATE_DIR}`,
    );
  }
  const root = isAbsolute(path) ? path : resolve(path);
  const backupsPath = join(root, "backups");
  if (write) createPrivateDir(root);
  const owner = checkDirShape(root, { chosen: true });
  let uid = processUid();
  if (write) {
    const probed = probeWritable(root);
    uid ??= probed;
  }
  checkOwner(root, owner, uid);
  if (write) tightenOwnStateDir(root, uid ?? owner);
  if (write) createPrivateDir(backupsPath);
  try {
    checkOwner(backupsPath, checkDirShape(backupsPath), uid, root);
  } catch (error) {
    // A read-only open of a state directory that never had a backup is fine.
    if (!(error instanceof StateDirError && error.problem === "missing" && !write)) throw error;
  }
  return { path: root, backupsPath, uid };
}

/**
 * Creates `path` (0700) when missing and checks it as the state directory is checked: not a
 * symlink, a directory, not group- or world-writable, owned by us. For the lock directory, which
 * lives outside any state directory. Throws {@link StateDirError} (`unwritable` when it cannot be
 * created).
 */
export function openPrivateDir(path: string): void {
  createPrivateDir(path);
  const owner = checkDirShape(path);
  // Without --allow-sys=uid the uid is learnt by writing there, as for the state directory: a
  // check skipped for want of it passed another user's (root's) directory as ours.
  checkOwner(path, owner, processUid() ?? probeWritable(path));
}

/**
 * Ensures `path` is a private directory inside an opened state directory (creating it 0700),
 * with the same checks as the state directory itself. Used for `backups/<vm>/`.
 */
export function ensurePrivateDir(path: string, state: StateDir): void {
  createPrivateDir(path);
  checkOwner(path, checkDirShape(path), state.uid, state.path);
}

/**
 * Checks an existing directory inside the state directory without creating anything; returns
 * `false` when it does not exist.
 */
export function checkPrivateDir(path: string, state: StateDir): boolean {
  try {
    checkOwner(path, checkDirShape(path), state.uid, state.path);
    return true;
  } catch (error) {
    if (error instanceof StateDirError && error.problem === "missing") return false;
    throw error;
  }
}

/** `a FIFO`, `a symbolic link`, ...: what a non-regular file is, for messages. */
function kindOf(info: Deno.FileInfo): string {
  if (info.isSymlink) return "a symbolic link";
  if (info.isDirectory) return "a directory";
  if (info.isFifo) return "a FIFO";
  if (info.isCharDevice || info.isBlockDevice) return "a device";
  if (info.isSocket) return "a socket";
  return "not a regular file";
}

/** `why` says what the file is; `because` why that is refused (the file types we write, or their size). */
function unexpectedFile(
  path: string,
  why: string,
  because = "passthrough writes only regular files there",
): StateDirError {
  return new StateDirError(path, "unexpected-file", `Refusing "${path}": ${why}, and ${because}`);
}

/**
 * Opens a file passthrough wrote in its state (or lock) directory, refusing anything else with
 * a {@link StateDirError} (`unexpected-file`) before a single byte is read: a symlink is not
 * followed, and a FIFO or device is never opened (opening a FIFO blocks until a writer appears;
 * `/dev/zero` never ends). The file is checked with `lstat` first, then the opened file is checked
 * to be that very file. Only a process of our own uid could swap it in between, the directory
 * being private; `write` (no truncation) also keeps an open from blocking on a FIFO swapped in.
 * Throws `Deno.errors.NotFound` when nothing is there.
 */
export function openOwnFileSync(path: string, options: { write?: boolean } = {}): Deno.FsFile {
  // A writer that renamed a new file over this one in between (`replaceFileSync`: a guard
  // allowance or policy written at that moment) makes the two differ: the new one is looked at
  // again, as the first was, a few times.
  for (let attempt = 1;; attempt++) {
    const named = Deno.lstatSync(path);
    if (!named.isFile) throw unexpectedFile(path, `it is ${kindOf(named)}`);
    const file = Deno.openSync(path, { read: true, write: options.write ?? false });
    let opened: Deno.FileInfo;
    try {
      opened = file.statSync();
    } catch (error) {
      file.close();
      throw error;
    }
    if (opened.isFile && opened.ino === named.ino && opened.dev === named.dev) return file;
    file.close();
    if (!opened.isFile || attempt === 3) {
      throw unexpectedFile(path, "it was replaced while being opened");
    }
  }
}

/**
 * Reads an open file from its current position, at most `maxBytes`: a {@link StateDirError}
 * (`unexpected-file`) when it holds more, so a huge file is refused without being read whole.
 * `path` names it in that error.
 */
export function readBoundedSync(file: Deno.FsFile, path: string, maxBytes: number): Uint8Array {
  // A regular file: "only regular files" would not say what is wrong with it.
  const tooLarge = () =>
    unexpectedFile(path, `it is larger than ${maxBytes} bytes`, "passthrough writes none so large");
  const size = file.statSync().size ?? 0;
  if (size > maxBytes) throw tooLarge();
  // Sized by the stat, not by `maxBytes`: a backup's limit allocated at every read of a small
  // file adds up over every backup an apply lists. The byte more tells a file that grew since.
  let out = new Uint8Array(size + 1);
  let length = 0;
  for (;;) {
    if (length === out.length) {
      if (length > maxBytes) throw tooLarge();
      const grown = new Uint8Array(Math.min(length * 2, maxBytes + 1));
      grown.set(out);
      out = grown;
    }
    const n = file.readSync(out.subarray(length));
    if (n === null || n === 0) break;
    length += n;
  }
  return out.slice(0, length);
}

/** {@link openOwnFileSync} then {@link readBoundedSync}: the whole of a small file we wrote. */
export function readOwnFileSync(path: string, maxBytes: number): Uint8Array {
  using file = openOwnFileSync(path);
  return readBoundedSync(file, path, maxBytes);
}

/** Writes every byte (`writeSync` may write fewer than asked). */
export function writeAllSync(file: Deno.FsFile, data: Uint8Array): void {
  let offset = 0;
  while (offset < data.length) offset += file.writeSync(data.subarray(offset));
}

/**
 * Syncs a directory so a new name in it (a link or a rename) survives a crash. Where the file
 * system refuses (not every one lets a directory be opened or synced) the name still stands.
 */
export function syncDir(dir: string): void {
  try {
    using handle = Deno.openSync(dir, { read: true });
    handle.syncSync();
  } catch {
    // Some file systems refuse fsync on directories; the data itself is already synced.
  }
}

/**
 * Writes `data` to a temporary name in `dir` (created with `createNew`, mode 0600, synced), then
 * `place`s it at `name`; the temporary name is gone afterwards, whatever happened. Returns the
 * final path.
 */
function writeThenPlace(
  dir: string,
  name: string,
  data: Uint8Array | string,
  place: (temp: string, target: string) => void,
): string {
  if (!isFileName(name)) {
    throw new TypeError(`Not a plain file name: "${name}"`);
  }
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const target = join(dir, name);
  const temp = join(dir, `.${name}.${crypto.randomUUID()}.tmp`);
  const file = Deno.openSync(temp, { write: true, createNew: true, mode: 0o600 });
  try {
    try {
      // The temp name was just created exclusively in a directory only we can write.
      Deno.chmodSync(temp, 0o600);
      writeAllSync(file, bytes);
      file.syncSync();
    } finally {
      file.close();
    }
    place(temp, target);
  } finally {
    try {
      Deno.removeSync(temp);
    } catch {
      // Already gone (renamed into place): nothing to clean up.
    }
  }
  syncDir(dir);
  return target;
}

/**
 * Writes a new file `name` in `dir` with mode 0600, never replacing or following anything already
 * there: the data goes to a temporary name created with `createNew`, is synced, and is then
 * hard-linked to `name` (failing with `Deno.errors.AlreadyExists` if `name` exists, even as a
 * dangling symlink). Returns the final path.
 */
export function writeNewFileSync(dir: string, name: string, data: Uint8Array | string): string {
  return writeThenPlace(dir, name, data, linkNoReplace);
}

/**
 * Writes `name` in the private directory `dir` with mode 0600, replacing whatever file is there
 * in one step: the data goes to a temporary name created with `createNew`, is synced, then
 * renamed over `name` (which replaces a link itself, never what it points to). A reader finds
 * the old file or the new one, never none; of two writers at the same moment the last rename
 * stands, where removing the old file and then linking the new one failed for the second
 * ("File exists"). Returns the final path.
 */
export function replaceFileSync(dir: string, name: string, data: Uint8Array | string): string {
  return writeThenPlace(dir, name, data, (temp, target) => Deno.renameSync(temp, target));
}

/** `link()` when the file system supports it, else a checked `rename()` in the private dir. */
function linkNoReplace(from: string, to: string): void {
  try {
    Deno.linkSync(from, to);
    return;
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) throw error;
    // Fall through only for file systems without hard links (EPERM/ENOTSUP).
    if (
      !(error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotSupported)
    ) {
      throw error;
    }
  }
  try {
    Deno.lstatSync(to);
    throw new Deno.errors.AlreadyExists(`File exists: "${to}"`);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  Deno.renameSync(from, to);
}
