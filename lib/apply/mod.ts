/**
 * Applying a plan the virt-xml way (re-read, confirm, back up, define with validation, verify,
 * restore on failure), and rolling a VM back to a backup.
 *
 * @module
 */

export {
  type ApplyCode,
  type ApplyEffect,
  type ApplyOptions,
  applyPlan,
  type ApplyReport,
  type ApplyStatus,
  type ConfirmAnswer,
  type LiveChange,
  type VmApplyResult,
} from "./apply.ts";
export { type HostNow, type HostRead, type ReadHostDevice } from "./recheck.ts";
export {
  BackupMismatchError,
  type HostDeviceNow,
  type RollbackCode,
  type RollbackOptions,
  type RollbackPreview,
  type RollbackReport,
  type RollbackStatus,
  rollbackVm,
  type StartAllowance,
  type StartRefusal,
} from "./rollback.ts";
