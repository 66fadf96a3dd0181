/**
 * The output boundary: unified diffs of domain definitions, painted through the one colour
 * module, and the redaction of secrets in everything printed.
 *
 * @module
 */

export { type DomainDiffOptions, hasSignificantChanges, renderDomainDiff } from "./diff.ts";
export { redactedJson } from "./redact.ts";
