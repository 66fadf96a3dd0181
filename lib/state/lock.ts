/**
 * One `apply` or `rollback` at a time per libvirt connection (per host), whatever state
 * directory each uses: two runs on one host with different `--state-dir` could otherwise each
 * give one device to a different VM.
 *
 * Which lock: one per connection, named after a hash of its URI in a canonical form
 * (scheme lower-cased, `+unix` dropped from a local URI, the host lower-cased and
 * without a user name, the path unescaped, trailing slashes and every query parameter but
 * `socket` dropped), so `qemu:///system` and `qemu+unix:///system/` share a lock, as do
 * `qemu:///system`, `qemu:///%73ystem`, a `socket=` naming one of the system daemon's own
 * sockets and a transport libvirt takes to this host (`qemu+tls:///system`). Two spellings that reach one daemon through different names (`qemu+ssh://host` and
 * `qemu+ssh://alias`, or a socket through a link) cannot be recognised as one host and lock apart.
 *
 * Where: in `/run/passthrough` (created 0700: on tmpfs, so gone at boot, and
 * writable by root only, so no other user can plant or hold the lock). A process that cannot use
 * it (not root) keeps the lock in its state directory instead: runs of that user sharing a state
 * directory still exclude each other, but not runs with another state directory; run `apply` as
 * root to have the host-wide lock. Root whose `/run` is read-only or full is refused instead. The
 * test driver (`test:` URIs) keeps its lock in the state directory too: its world lives inside
 * the process that opened it, so no other process can change it, and test runs never touch
 * `/run`. A remote URI locks on this machine only.
 *
 * The lock is a file holding JSON with the holder's pid, host, start time, command and URI. It is created exclusively: the content is written to a temporary file first, that file
 * is `flock`ed, and only then hard-linked to `lock` (`link()` fails when `lock` exists). The holder
 * keeps the `flock` for its whole life, so the kernel itself says whether a holder is alive: when
 * nobody holds the `flock` on an existing `lock` file, its process has died (crash, `kill -9`).
 * That needs no `/proc` access and cannot be fooled by pid reuse.
 *
 * Breaking a stale lock is race-free: a breaker takes the `flock` of the stale file, checks that
 * the name `lock` still points to that very file, and only then unlinks it. Only a `flock` holder
 * ever unlinks `lock`, so nobody can replace it between the check and the unlink.
 *
 * Whatever is found at the lock's name is opened only when it is a regular file (a symlink is not
 * followed, a FIFO or device never opened, see `openOwnFileSync`), and at most a few KiB of it
 * are read: a planted FIFO, `/dev/zero` or huge file cannot hang or exhaust a run.
 *
 * @module
 */

import { sha256Hex } from "./sha256.ts";
import { isSystemQemuUri, sessionDriver, unescapeUriPart, uriParameter } from "../config/uri.ts";
import { errorText } from "../render/error_text.ts";
import { shellWord } from "../render/shell.ts";
import { join } from "./paths.ts";
import { openOwnFileSync, openPrivateDir, StateDirError, writeAllSync } from "./state_dir.ts";

/** Where root keeps the connection locks (see the module documentation). */
export const LOCK_DIR = "/run/passthrough";

/** Who holds (or held) a lock, as written in the lock file. */
export interface LockHolder {
  /** The holder's process id. */
  pid: number;
  /** The holder's host name. */
  host: string;
  /** ISO 8601 UTC. */
  startedAt: string;
  /** `apply`, `rollback`, ... */
  command: string;
  /** The libvirt connection locked (its URI in canonical form), for a connection lock. */
  uri?: string;
}

/** Another live process holds the lock. */
export class LockHeldError extends Error {
  /** The error's name. */
  override name = "LockHeldError";
  /** The lock file. */
  readonly path: string;
  /** Its holder, or `null` when the file could not be read as a lock. */
  readonly holder: LockHolder | null;

  /** Builds the error naming the holder. */
  constructor(path: string, holder: LockHolder | null) {
    super(
      holder === null
        ? `Another passthrough process holds the lock "${path}"`
        : `Another passthrough ${holder.command} holds the lock "${path}"${
          holder.uri === undefined ? "" : ` of "${holder.uri}"`
        }: pid ${holder.pid} on "${holder.host}", started ${holder.startedAt}`,
    );
    this.path = path;
    this.holder = holder;
  }
}

/** A held lock; release it with `using` or {@link StateLock.release}. */
export interface StateLock extends Disposable {
  /** The lock file. */
  readonly path: string;
  /** What this process wrote into it. */
  readonly holder: LockHolder;
  /** The holder of a stale lock that was broken to get this one, else `null`. */
  readonly brokeStale: LockHolder | null;
  /** The connection it serialises (its URI in canonical form). */
  readonly uri: string;
  /** Releases the lock (idempotent). */
  release(): void;
}

/** Options for {@link acquireConnectionLock}. */
export interface ConnectionLockOptions {
  /** Written into the lock for whoever finds it held: `apply`, `rollback`. */
  command: string;
  /** The state directory, already opened: where the lock goes when `/run/passthrough` cannot. */
  stateDir: string;
}

/**
 * What a run holding `lock` should know of the runs it does not keep out: a lock in the state
 * directory of a user other than root (who cannot use {@link LOCK_DIR}) excludes neither root's
 * runs nor those with another state directory on the same libvirt, which may give one device to
 * two VMs meanwhile. No lock both can take is safe: one any user may open, any user may hold
 * (`flock` needs only a read), and so keep root's runs out. Of the user's own session daemon,
 * only runs with another state directory. `null`: a host-wide lock, or the test driver's (its
 * world is the process's own).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(lockScopeNote({ path: "/run/passthrough/connection-0.lock", uri: "qemu:///system" }), null);
 * assertEquals(lockScopeNote({ path: "/s/connection-0.lock", uri: "test:///default" }), null);
 * ```
 */
export function lockScopeNote(lock: Pick<StateLock, "path" | "uri">): string | null {
  if (lock.path.startsWith(`${LOCK_DIR}/`) || lock.uri.startsWith("test:")) return null;
  const dir = lock.path.slice(0, lock.path.lastIndexOf("/"));
  // A session daemon is its user's: root's `qemu:///session` is root's own, another libvirt, so
  // "run it as root" sent the user to lock (and apply to) a libvirt without these VMs.
  if (sessionDriver(lock.uri) !== null) {
    return `Note: this run locks ${
      JSON.stringify(lock.uri)
    } (this user's own libvirt) in ${dir}: ` +
      "an apply or rollback of it with another state directory is not kept out meanwhile; give " +
      "its runs one state directory";
  }
  return `Note: this run locks ${JSON.stringify(lock.uri)} in ${dir}, not in ${LOCK_DIR} ` +
    "(root's alone): an apply or rollback by root, or with another state directory, is not kept " +
    "out meanwhile; run it as root to lock that libvirt for the whole host";
}

/** `pid 123 on "host" (apply, started ...)`. */
export function describeHolder(holder: LockHolder | null): string {
  if (holder === null) return "an unknown process";
  return `pid ${holder.pid} on "${holder.host}" (${holder.command}, started ${holder.startedAt})`;
}

/** The host name, without needing `--allow-sys` when `/etc/hostname` is readable. */
function hostName(): string {
  try {
    return Deno.hostname();
  } catch {
    try {
      return Deno.readTextFileSync("/etc/hostname").trim() || "unknown";
    } catch {
      return "unknown";
    }
  }
}

function parseHolder(text: string): LockHolder | null {
  try {
    const data = JSON.parse(text) as Record<string, unknown>;
    if (
      typeof data.pid === "number" && typeof data.host === "string" &&
      typeof data.startedAt === "string" && typeof data.command === "string"
    ) {
      const { pid, host, startedAt, command } = data;
      return {
        pid,
        host,
        startedAt,
        command,
        ...(typeof data.uri === "string" ? { uri: data.uri } : {}),
      };
    }
  } catch {
    // Not a lock we wrote: reported as an unknown holder.
  }
  return null;
}

/** A lock we write is a line of JSON of a few hundred bytes. */
const MAX_HOLDER_BYTES = 4096;

/**
 * The holder written in a lock file, or `null` when it is not one we wrote. Reads at most
 * {@link MAX_HOLDER_BYTES} (plus one, to tell a larger file): the content only names the holder
 * in messages, the `flock` alone says whether it lives, so a huge file is never read whole.
 */
function readHolder(file: Deno.FsFile): LockHolder | null {
  const buffer = new Uint8Array(MAX_HOLDER_BYTES + 1);
  let length = 0;
  while (length < buffer.length) {
    const n = file.readSync(buffer.subarray(length));
    if (n === null || n === 0) break;
    length += n;
  }
  if (length > MAX_HOLDER_BYTES) return null;
  return parseHolder(new TextDecoder().decode(buffer.subarray(0, length)));
}

/** Whether `path` names the same file as the open `file` right now. */
function sameFile(path: string, file: Deno.FsFile): boolean {
  try {
    const named = Deno.lstatSync(path);
    const open = file.statSync();
    return named.ino === open.ino && named.dev === open.dev;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/**
 * Whether `error` is {@link openOwnFileSync}'s refusal of a file replaced while being opened and
 * `path` is a regular file again (a racing process's lock), not a symlink, FIFO or device.
 */
function replacedByLock(error: unknown, path: string): boolean {
  if (!(error instanceof StateDirError && error.problem === "unexpected-file")) return false;
  try {
    return Deno.lstatSync(path).isFile;
  } catch {
    return false;
  }
}

/** Creates the lock exclusively, or returns `null` when `lock` already exists. */
function tryCreate(dir: string, path: string, holder: LockHolder): Deno.FsFile | null {
  const temp = join(dir, `.lock.${crypto.randomUUID()}.tmp`);
  const file = Deno.openSync(temp, { read: true, write: true, createNew: true, mode: 0o600 });
  try {
    // Locked before it is visible as `lock`, so nobody can ever see it unlocked while we live.
    if (!file.tryLockSync(true)) throw new Error(`Cannot lock new file "${temp}"`);
    writeAllSync(file, new TextEncoder().encode(`${JSON.stringify(holder)}\n`));
    file.syncSync();
    try {
      Deno.linkSync(temp, path);
    } catch (error) {
      if (error instanceof Deno.errors.AlreadyExists) {
        file.close();
        return null;
      }
      throw error;
    }
    return file;
  } catch (error) {
    file.close();
    throw error;
  } finally {
    try {
      Deno.removeSync(temp);
    } catch {
      // Already removed.
    }
  }
}

/**
 * The canonical form of a libvirt URI that names its lock: scheme lower-cased, `+unix` dropped
 * from a local URI (it is the default transport), host lower-cased without user name, path
 * unescaped, trailing slashes and every query parameter but `socket` (which names another daemon,
 * see {@link uriParameter}) dropped; the system daemon, by its own sockets or a transport libvirt
 * takes to this host (`qemu+tls:///system`), is `qemu:///system`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(lockUri("QEMU+unix:///system/"), "qemu:///system");
 * assertEquals(lockUri("qemu+ssh://root@Host:22/system?keyfile=/k"), "qemu+ssh://host:22/system");
 * assertEquals(lockUri("qemu:///system?no_verify=1&socket=/s"), "qemu:///system?socket=/s");
 * assertEquals(lockUri("qemu:///system?socket=/run/libvirt/libvirt-sock"), "qemu:///system");
 * assertEquals(lockUri("qemu+tls:///system"), "qemu:///system");
 * ```
 */
export function lockUri(uri: string): string {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return uri;
  }
  // Any spelling of it reaches the one system QEMU driver of this host (libvirtd's, or
  // virtqemud's through virtproxyd): by any of its own sockets, and through any transport
  // libvirt takes to this host when the URI names none (`qemu+tls:///system`). Two runs by two
  // of them would otherwise both change its VMs, and the start guard's policies.
  if (isSystemQemuUri(uri)) return "qemu:///system";
  const [driver, transport] = url.protocol.slice(0, -1).toLowerCase().split("+", 2);
  const host = url.hostname.toLowerCase();
  const scheme = transport === undefined || (host === "" && transport === "unix")
    ? driver
    : `${driver}+${transport}`;
  // Unescaped, as libvirt reads it: `/%73ystem` is `/system`.
  const path = unescapeUriPart(url.pathname).replace(/\/+$/, "");
  const socket = uriParameter(uri, "socket");
  return `${scheme}://${host}${url.port === "" ? "" : `:${url.port}`}${path}${
    socket === undefined ? "" : `?socket=${socket}`
  }`;
}

/**
 * Where the lock of the connection `uri` lives (see the module documentation), creating
 * {@link LOCK_DIR} when it can. Throws {@link StateDirError} when `LOCK_DIR` exists but is unsafe
 * (a symlink, group- or world-writable): a lock there could be planted or ignored.
 */
export function connectionLockPath(uri: string, stateDir: string): string {
  const canonical = lockUri(uri);
  const name = `connection-${sha256Hex(canonical).slice(0, 32)}.lock`;
  if (canonical.startsWith("test:")) return join(stateDir, name);
  try {
    openPrivateDir(LOCK_DIR);
    return join(LOCK_DIR, name);
  } catch (error) {
    // Not root: the directory cannot be created, or is root's. Root (the owner of its opened
    // state directory, which is always this process's: learnt without --allow-sys) has no such
    // way out: where /run is read-only or full, a lock in the state directory would not exclude
    // a run with another one, so the run stops, saying why.
    if (
      error instanceof StateDirError &&
      (error.problem === "unwritable" || error.problem === "foreign-owner") &&
      Deno.statSync(stateDir).uid !== 0
    ) {
      return join(stateDir, name);
    }
    if (error instanceof StateDirError && error.problem === "unwritable") {
      const cause = error.cause ?? error;
      throw new StateDirError(
        LOCK_DIR,
        "unwritable",
        `Cannot use the lock directory "${LOCK_DIR}": ${
          errorText(cause)
        }: root's apply and rollback lock the libvirt connection there, whatever the state directory; make /run writable (or free space in it)`,
        { cause },
      );
    }
    throw error;
  }
}

/**
 * Takes the lock of the libvirt connection `uri`, or throws
 * {@link LockHeldError} at once (no waiting) naming its holder when a live process holds it. A
 * lock whose holder died is broken, and reported in `brokeStale`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const stateDir = Deno.makeTempDirSync();
 * {
 *   using lock = acquireConnectionLock("test:///default", { command: "apply", stateDir });
 *   assertEquals([lock.holder.pid, lock.uri], [Deno.pid, "test:///default"]);
 * }
 * Deno.removeSync(stateDir, { recursive: true });
 * ```
 */
export function acquireConnectionLock(uri: string, options: ConnectionLockOptions): StateLock {
  const path = connectionLockPath(uri, options.stateDir);
  const slash = path.lastIndexOf("/");
  const dir = path.slice(0, slash);
  const canonical = lockUri(uri);
  const holder: LockHolder = {
    pid: Deno.pid,
    host: hostName(),
    startedAt: new Date().toISOString(),
    command: options.command,
    uri: canonical,
  };
  let brokeStale: LockHolder | null = null;
  // A few rounds: each round either wins, finds a live holder, or removes a stale lock.
  for (let round = 0; round < 5; round++) {
    let file: Deno.FsFile | null;
    try {
      file = tryCreate(dir, path, holder);
    } catch (error) {
      // A write's error names no file (a full /run: "No space left on device (os error 28)").
      throw new Error(
        `Cannot take the lock "${path}" (one apply or rollback at a time per libvirt ` +
          `connection), so nothing was done: ${errorText(error)}`,
        { cause: error },
      );
    }
    if (file !== null) return heldLock(path, file, { holder, brokeStale, uri: canonical });
    let existing: Deno.FsFile;
    try {
      // A symlink, FIFO or device at the lock's name is refused, never followed or opened.
      existing = openOwnFileSync(path, { write: true });
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue; // Released meanwhile: try again.
      // Between the look and the open another process broke the stale lock and took it: the
      // name now holds its (regular) lock file, which the next round finds held.
      if (replacedByLock(error, path)) continue;
      throw cannotBreak(path, null, error);
    }
    try {
      const current = readHolder(existing);
      if (!existing.tryLockSync(true)) throw new LockHeldError(path, current);
      // We hold the flock of a lock nobody else holds: its holder is gone.
      if (!sameFile(path, existing)) continue; // Released and replaced meanwhile.
      try {
        Deno.removeSync(path);
      } catch (error) {
        throw cannotBreak(path, current ?? undefined, error);
      }
      brokeStale = current ?? { pid: 0, host: "unknown", startedAt: "unknown", command: "unknown" };
    } finally {
      existing.close();
    }
  }
  throw new LockHeldError(path, null);
}

/**
 * A lock file left at `path` that this process may not open or remove (`chattr +i`, a directory
 * the system will not let it change): the way out, when no run holds it, is removing it by hand.
 * `holder` is who left it (`undefined`: it has ended, unnamed; `null`: not known whether anyone
 * holds it: the file could not be opened to tell). Other
 * errors pass as they are.
 */
function cannotBreak(path: string, holder: LockHolder | null | undefined, error: unknown): unknown {
  if (!(error instanceof Deno.errors.PermissionDenied)) return error;
  const who = holder === undefined
    ? "left by a process that has ended"
    : holder === null
    ? "which may be stale"
    : `left by ${describeHolder(holder)}, which has ended`;
  return new Error(
    `Cannot break the lock "${path}" ${who}: if no passthrough apply or rollback runs, remove it ("rm ${
      shellWord(path)
    }")`,
    { cause: error },
  );
}

function heldLock(
  path: string,
  file: Deno.FsFile,
  { holder, brokeStale, uri }: {
    holder: LockHolder;
    brokeStale: LockHolder | null;
    uri: string;
  },
): StateLock {
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    try {
      // We still hold the flock, so nobody else can have replaced `lock` with their own.
      if (sameFile(path, file)) Deno.removeSync(path);
    } finally {
      file.close();
    }
  };
  return { path, holder, brokeStale, uri, release, [Symbol.dispose]: release };
}
