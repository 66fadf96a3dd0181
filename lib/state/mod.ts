/**
 * The state directory: its safe resolution and opening, the lock that serialises applies on one
 * libvirt connection, and the backups taken before each define.
 *
 * @module
 */

export {
  type BackupEntry,
  BackupIntegrityError,
  type BackupListing,
  BackupNotFoundError,
  type BackupProblem,
  type BackupReason,
  DEFAULT_KEEP_BACKUPS,
  describeBackupProblem,
  findBackup,
  inspectBackups,
  listBackups,
  pruneBackups,
  type PruneOutcome,
  readBackupXml,
} from "./backups.ts";
export {
  DEFAULT_STATE_DIR,
  openStateDir,
  type OpenStateDirOptions,
  resolveStateDirPath,
  STATE_DIR_ENV,
  type StateDir,
  StateDirError,
  type StateDirProblem,
} from "./state_dir.ts";
export {
  acquireConnectionLock,
  type ConnectionLockOptions,
  LockHeldError,
  type LockHolder,
  type StateLock,
} from "./lock.ts";
