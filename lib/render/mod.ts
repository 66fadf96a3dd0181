/**
 * The output boundary: unified diffs of domain definitions, painted through the one colour
 * module, the redaction of secrets in everything printed, and the escaping of control characters.
 *
 * @module
 */

export { type DomainDiffOptions, hasSignificantChanges, renderDomainDiff } from "./diff.ts";
export { redactedJson } from "./redact.ts";
export { type FollowUp, followUpCommand, type RunFlags } from "./shell.ts";
export { didYouMean } from "./suggest.ts";
export { terminalSafe } from "./terminal.ts";
