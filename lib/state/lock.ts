/**
 * One `apply` or `rollback` at a time per state directory.
 *
 * The lock is the file `<state>/lock`, holding JSON with the holder's pid, host, start time and
 * command. It is created exclusively: the content is written to a temporary file first, that file
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

import { join } from "node:path";
import { openOwnFileSync, writeAllSync } from "./state_dir.ts";

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
        : `Another passthrough ${holder.command} holds the lock "${path}": pid ${holder.pid} on "${holder.host}", started ${holder.startedAt}`,
    );
    this.path = path;
    this.holder = holder;
  }
}

/** A lock left by a dead process, when the caller asked not to break it. */
export class StaleLockError extends Error {
  /** The error's name. */
  override name = "StaleLockError";
  /** The lock file. */
  readonly path: string;
  /** The dead holder, or `null` when the file could not be read as a lock. */
  readonly holder: LockHolder | null;

  /** Builds the error naming the dead holder. */
  constructor(path: string, holder: LockHolder | null) {
    super(
      `Stale lock "${path}" left by ${describeHolder(holder)}, which is no longer running`,
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
  /** Releases the lock (idempotent). */
  release(): void;
}

/** Options for {@link acquireLock}. */
export interface AcquireLockOptions {
  /** Written into the lock for whoever finds it held: `apply`, `rollback`. */
  command: string;
  /** Break a lock whose holder died (default `true`); with `false`, throw {@link StaleLockError}. */
  breakStale?: boolean;
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
      return { pid: data.pid, host: data.host, startedAt: data.startedAt, command: data.command };
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
 * Takes the state directory's lock, or throws {@link LockHeldError} at once (no waiting) when a
 * live process holds it. A lock whose holder died is broken (reported in `brokeStale`) unless
 * `breakStale: false`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * {
 *   using lock = acquireLock(dir, { command: "apply" });
 *   assertEquals(lock.holder.pid, Deno.pid);
 * }
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function acquireLock(stateDir: string, options: AcquireLockOptions): StateLock {
  const path = join(stateDir, "lock");
  const holder: LockHolder = {
    pid: Deno.pid,
    host: hostName(),
    startedAt: new Date().toISOString(),
    command: options.command,
  };
  let brokeStale: LockHolder | null = null;
  // A few rounds: each round either wins, finds a live holder, or removes a stale lock.
  for (let round = 0; round < 5; round++) {
    const file = tryCreate(stateDir, path, holder);
    if (file !== null) return heldLock(path, file, holder, brokeStale);
    let existing: Deno.FsFile;
    try {
      // A symlink, FIFO or device at the lock's name is refused, never followed or opened.
      existing = openOwnFileSync(path, { write: true });
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue; // Released meanwhile: try again.
      throw error;
    }
    try {
      const current = readHolder(existing);
      if (!existing.tryLockSync(true)) throw new LockHeldError(path, current);
      // We hold the flock of a lock nobody else holds: its holder is gone.
      if (!sameFile(path, existing)) continue; // Released and replaced meanwhile.
      if (options.breakStale === false) throw new StaleLockError(path, current);
      Deno.removeSync(path);
      brokeStale = current ?? { pid: 0, host: "unknown", startedAt: "unknown", command: "unknown" };
    } finally {
      existing.close();
    }
  }
  throw new LockHeldError(path, null);
}

function heldLock(
  path: string,
  file: Deno.FsFile,
  holder: LockHolder,
  brokeStale: LockHolder | null,
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
  return { path, holder, brokeStale, release, [Symbol.dispose]: release };
}
