/**
 * Applying a plan the virt-xml way (re-read, confirm, back up, define with validation, verify,
 * restore on failure), and rolling a VM back to a backup.
 *
 * @module
 */

export {
  type ApplyOptions,
  applyPlan,
  type ApplyReport,
  type ConfirmAnswer,
  type VmApplyResult,
} from "./apply.ts";
export { type RollbackOptions, type RollbackReport, rollbackVm } from "./rollback.ts";
