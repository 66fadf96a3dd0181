/**
 * The state directory: its safe resolution, the lock that serialises applies, and the backups
 * taken before each define.
 *
 * @module
 */

export { type BackupEntry, findBackup, listBackups, readBackupXml } from "./backups.ts";
export { DEFAULT_STATE_DIR, resolveStateDirPath, StateDirError } from "./state_dir.ts";
export { LockHeldError } from "./lock.ts";
