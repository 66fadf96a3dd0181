/**
 * Backups of persistent domain definitions, written before every define.
 *
 * Layout: `backups/<vm>/<UTC timestamp>-<uuid prefix>.xml`, with a JSON sidecar of the same name
 * (`.json`) recording the VM name, uuid, time, reason, libvirt URI and the sha256 of the XML. The
 * VM directory name is the VM name with every byte outside `[A-Za-z0-9_-]` (and a leading `.`)
 * percent-encoded, so no name can escape `backups/` or collide with another. The XML is written
 * first and the sidecar last: a backup without a sidecar is incomplete and never listed.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  checkPrivateDir,
  ensurePrivateDir,
  openStateDir,
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
  /** When it was taken, ISO 8601 UTC. */
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

/** No backup matches what was asked for. */
export class BackupNotFoundError extends Error {
  /** The error's name. */
  override name = "BackupNotFoundError";
  /** The VM asked for. */
  readonly vm: string;
  /** The `--to` reference, or `null` when the newest backup was asked for. */
  readonly ref: string | null;

  /** Builds the error for `vm` and the reference asked for. */
  constructor(vm: string, ref: string | null) {
    super(
      ref === null
        ? `No backup of VM "${vm}"`
        : `No backup "${ref}" of VM "${vm}": run "passthrough backups ${vm}" to list them`,
    );
    this.vm = vm;
    this.ref = ref;
  }
}

/** A backup file is unreadable as a backup: bad sidecar, or the XML no longer matches its hash. */
export class BackupIntegrityError extends Error {
  /** The error's name. */
  override name = "BackupIntegrityError";
  /** The file at fault. */
  readonly path: string;

  /** Builds the error for `path`. */
  constructor(path: string, detail: string, options?: ErrorOptions) {
    super(`Backup "${path}" is damaged: ${detail}`, options);
    this.path = path;
  }
}

const SAFE_BYTE = /^[A-Za-z0-9_-]$/;
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

/** sha256 of a string's UTF-8 bytes, lower-case hex. */
export function sha256Hex(text: string | Uint8Array): string {
  return createHash("sha256").update(text).digest("hex");
}

/** `20261124T032101.123Z`: sortable, and free of `:` for file systems that dislike it. */
function stamp(date: Date): string {
  return date.toISOString().replace(/[-:]/g, "");
}

function vmDir(state: StateDir, vm: string): string {
  return join(state.backupsPath, encodeVmName(vm));
}

function asStateDir(stateDir: string | StateDir, write: boolean): StateDir {
  return typeof stateDir === "string" ? openStateDir(stateDir, { write }) : stateDir;
}

/**
 * Writes a backup (XML then sidecar, both mode 0600, neither replacing anything) and returns its
 * entry. Throws when anything cannot be written: callers must not define without a backup.
 */
export function writeBackup(stateDir: string | StateDir, input: BackupInput): BackupEntry {
  const state = asStateDir(stateDir, true);
  const dir = vmDir(state, input.vm);
  const existed = pathExists(dir);
  ensurePrivateDir(dir, state);
  try {
    return writeBackupFiles(dir, input);
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

function pathExists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

function removeIfEmpty(dir: string): void {
  try {
    Deno.removeSync(dir); // Not recursive: fails, as it should, when anything is inside.
  } catch {
    // Not empty, or already gone: leave it.
  }
}

function readSidecar(dir: string, fileName: string): BackupEntry {
  const metaPath = join(dir, fileName);
  let data: unknown;
  try {
    data = JSON.parse(Deno.readTextFileSync(metaPath));
  } catch (error) {
    throw new BackupIntegrityError(metaPath, "the sidecar is not valid JSON", { cause: error });
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
 * Lists backups, newest first, of one VM or of every VM. A missing state directory or backup
 * directory means no backups. Throws {@link BackupIntegrityError} on a damaged sidecar.
 */
export function listBackups(stateDir: string | StateDir, vm?: string): BackupEntry[] {
  let state: StateDir;
  try {
    state = asStateDir(stateDir, false);
  } catch (error) {
    if (error instanceof StateDirError && error.problem === "missing") return [];
    throw error;
  }
  const dirs: string[] = [];
  if (vm !== undefined) {
    dirs.push(vmDir(state, vm));
  } else {
    if (!checkPrivateDir(state.backupsPath, state)) return [];
    for (const entry of Deno.readDirSync(state.backupsPath)) {
      if (entry.isDirectory && !entry.name.startsWith(".")) {
        dirs.push(join(state.backupsPath, entry.name));
      }
    }
  }
  const entries: BackupEntry[] = [];
  for (const dir of dirs) {
    if (!checkPrivateDir(dir, state)) continue;
    for (const file of Deno.readDirSync(dir)) {
      if (!file.isFile || !file.name.endsWith(".json") || file.name.startsWith(".")) continue;
      const entry = readSidecar(dir, file.name);
      if (vm !== undefined && entry.vm !== vm) continue;
      entries.push(entry);
    }
  }
  return entries.sort((a, b) =>
    a.time !== b.time ? (a.time < b.time ? 1 : -1) : a.id < b.id ? 1 : a.id > b.id ? -1 : 0
  );
}

/**
 * Finds one backup of `vm`: the newest when `ref` is absent, else the one whose id, file name or
 * path is `ref`. Only listed backups can be chosen, so `ref` can never point outside `backups/`.
 */
export function findBackup(
  stateDir: string | StateDir,
  vm: string,
  ref?: string,
): BackupEntry {
  const entries = listBackups(stateDir, vm);
  if (ref === undefined) {
    const newest = entries[0];
    if (newest === undefined) throw new BackupNotFoundError(vm, null);
    return newest;
  }
  const found = entries.find((e) =>
    e.id === ref || `${e.id}.xml` === ref || `${e.id}.json` === ref || e.path === ref
  );
  if (found === undefined) throw new BackupNotFoundError(vm, ref);
  return found;
}

/**
 * Reads a backup's XML and checks it against the sha256 its sidecar recorded; throws
 * {@link BackupIntegrityError} when they differ.
 */
export function readBackupXml(entry: BackupEntry): string {
  const info = Deno.lstatSync(entry.path);
  if (!info.isFile) throw new BackupIntegrityError(entry.path, "it is not a regular file");
  const bytes = Deno.readFileSync(entry.path);
  const actual = sha256Hex(bytes);
  if (actual !== entry.sha256) {
    throw new BackupIntegrityError(
      entry.path,
      `sha256 is ${actual}, the sidecar recorded ${entry.sha256}`,
    );
  }
  return new TextDecoder().decode(bytes);
}
