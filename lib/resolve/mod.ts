/**
 * Resolving rules to devices: matching a rule's stable identity against the host's functions,
 * closing over IOMMU groups (endpoints only, never bridges), and the host-critical refusals.
 *
 * @module
 */

export { deviceMatches, type MatchOptions, sameIdentity } from "./match.ts";
export type { ClosedDevice, ClosureResult } from "./closure.ts";
export type { MatchUnit, RuleResolution } from "./match.ts";
export type { VfChoice } from "./vf.ts";
