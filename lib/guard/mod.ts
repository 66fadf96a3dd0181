/**
 * The start guard: a libvirt hook that refuses to start a VM when a hostdev's address (or an
 * entry of a hostdev network's pool the VM draws from) now holds another device than the one
 * passthrough recorded (or than a VF), nothing, or a device the host needs. The
 * pure check ({@link checkDomainStart}), one hook run ({@link runGuard}), the hook executable
 * (render, install, inspect, remove), the daemon reload, and what the guard keeps in the state
 * directory (one-shot allowances, refusal records, the policies `apply` records).
 *
 * @module
 */

export {
  checkDomainStart,
  formatRefusal,
  type GuardCheckInput,
  type GuardDevice,
  type GuardElement,
  type GuardRefusal,
  type GuardRefusalKind,
  type StartTakes,
} from "./check.ts";
export { type DescribedIdentity, describeIdentity } from "../plan/issues.ts";
export {
  type GuardRunOptions,
  type GuardRunResult,
  MAX_XML_BYTES,
  type PolicedRefusal,
  runGuard,
} from "./run.ts";
export {
  type ActivePolicy,
  checksNothing,
  describePolicies,
  guardPolicies,
  type GuardPolicyFile,
  hostNeedsAllowed,
  parsePolicyFile,
  policiesForConnection,
  type PolicyFileReading,
  policyFor,
  type VmGuardPolicy,
  type VmPolicyReading,
} from "./policy.ts";
export {
  type CheckoutReader,
  type CheckProgram,
  DEFAULT_DEADLINE_SECONDS,
  DEFAULT_HOOKS_DIR,
  findTimeout,
  HOOK_FILE_NAME,
  type HookInspection,
  type HookProgram,
  type HookSettings,
  inspectHook,
  installHook,
  type InstallResult,
  type InstallSettings,
  parseHookSettings,
  removeHook,
  type RemoveResult,
  renderHookScript,
  type StaleBundle,
  staleBundle,
  type UnsafePath,
} from "./hook_file.ts";
export {
  findHookDaemons,
  noDaemonMessage,
  reloadDaemons,
  type ReloadOutcome,
  type RunningDaemon,
} from "./daemon.ts";
export {
  ALLOWANCE_LIFETIME_MS,
  type AllowanceOutcome,
  allowNextStart,
  type GuardAllowance,
  type GuardRefusalRecord,
  type PolicyRecordOutcome,
  readPolicyFile,
  readRefusalRecords,
  readReloadRecords,
  readVmPolicy,
  recordPolicies,
  recordRefusals,
  recordReload,
  type ReloadRecord,
  takeAllowance,
} from "./state.ts";
export { type GuardFolder, guardPath } from "./layout.ts";
