/**
 * The output boundary: unified diffs of domain definitions, painted through the one colour
 * module.
 *
 * @module
 */

export { type DomainDiffOptions, hasSignificantChanges, renderDomainDiff } from "./diff.ts";
