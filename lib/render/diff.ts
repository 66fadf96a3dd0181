/**
 * Unified diffs of a domain's persistent definition, for the user to confirm.
 *
 * Lines are compared in a normalised form, so differences that do not change the document's
 * meaning for libvirt stay out of the diff: attribute quote style (`'` vs `"`), indentation and
 * trailing spaces, blank lines, spacing inside tags, and `<a></a>` vs `<a/>` (each line's key
 * comes from the domain module's lenient reader, `normaliseXmlLines`). Inside text (a multi-line
 * `<description>`, another tool's `<metadata>`) every space and blank line counts. The printed
 * lines are always the original ones.
 *
 * @module
 */

import { diffArrays } from "diff";
import { normaliseXmlLine, normaliseXmlLines } from "../domain/lenient.ts";
import { passwordsOnOneLine, redactSecrets, secretValues } from "../domain/secrets.ts";
import { painter } from "./colors.ts";

/** Options of {@link renderDomainDiff}. */
export interface DomainDiffOptions {
  /** The VM's name, shown in the file headers. */
  vm: string;
  /** ANSI colours (+ green, - red, @@ cyan). The caller decides (terminal, `NO_COLOR`). */
  color?: boolean;
  /** Unchanged lines shown around each change; 3 by default. */
  context?: number;
  /**
   * Print passwords as they are. By default every secret value is shown as `***`, and a `+`
   * line whose password differs from the `-` line it replaces says `passwd='***' (changed)`.
   */
  showSecrets?: boolean;
  /** What the two sides are, after the VM's name in the headers; default `current` and `new`. */
  labels?: { before: string; after: string };
}

function splitLines(text: string): string[] {
  const lines = text.split("\n").map((line) => line.replace(/\r$/, ""));
  if (lines.at(-1) === "") lines.pop();
  return lines;
}

/**
 * Whether `after` differs from `before` other than in quote style and insignificant whitespace
 * (the differences {@link renderDomainDiff} hides).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(hasSignificantChanges("<a x='1'>\n</a>\n", '  <a x="1" >\n</a>'), false);
 * assertEquals(hasSignificantChanges("<a x='1'/>", "<a x='2'/>"), true);
 * ```
 */
export function hasSignificantChanges(before: string, after: string): boolean {
  if (before === after) return false;
  return keysDiffer(normaliseXmlLines(splitLines(before)), normaliseXmlLines(splitLines(after)));
}

/** Whether two documents' line keys differ other than in blank lines. */
function keysDiffer(before: readonly string[], after: readonly string[]): boolean {
  const a = before.filter((k) => k !== "");
  const b = after.filter((k) => k !== "");
  return a.length !== b.length || a.some((key, i) => key !== b[i]);
}

type Op = { kind: " " | "-" | "+"; text: string; oldIndex: number; newIndex: number };

/**
 * Renders a unified diff of a domain's persistent definition, `before` being the current XML and
 * `after` the one to define. Lines whose only difference is quote style or whitespace count as
 * unchanged (context lines show the `after` text). Returns `""` when nothing significant changes.
 * Passwords are redacted unless {@link DomainDiffOptions.showSecrets}.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const before = "<domain>\n  <name>vm</name>\n</domain>\n";
 * const after = "<domain>\n  <name>vm</name>\n  <vcpu>2</vcpu>\n</domain>\n";
 * assertEquals(
 *   renderDomainDiff(before, after, { vm: "vm" }),
 *   "--- vm (current)\n+++ vm (new)\n@@ -1,3 +1,4 @@\n <domain>\n   <name>vm</name>\n" +
 *     "+  <vcpu>2</vcpu>\n </domain>\n",
 * );
 * ```
 */
export function renderDomainDiff(
  before: string,
  after: string,
  options: DomainDiffOptions,
): string {
  const context = options.context ?? 3;
  if (!Number.isInteger(context) || context < 0) {
    throw new RangeError(`Diff context must be a non-negative integer: "${context}"`);
  }
  if (before === after) return "";
  // Redacted line by line: a password spread over lines would show its parts.
  const oneLine = options.showSecrets === true ? (text: string) => text : passwordsOnOneLine;
  const oldLines = splitLines(oneLine(before));
  const newLines = splitLines(oneLine(after));
  // Each line's key once: a `<description>` may hold hundreds of thousands of lines.
  const oldKeys = normaliseXmlLines(oldLines);
  const newKeys = normaliseXmlLines(newLines);
  if (!keysDiffer(oldKeys, newKeys)) return "";
  const ops: Op[] = [];
  let oldIndex = 0;
  let newIndex = 0;
  for (const change of diffArrays(oldKeys, newKeys)) {
    const count = change.value.length;
    for (let k = 0; k < count; k++) {
      if (change.removed) {
        ops.push({ kind: "-", text: oldLines[oldIndex] ?? "", oldIndex, newIndex });
        oldIndex++;
      } else if (change.added) {
        ops.push({ kind: "+", text: newLines[newIndex] ?? "", oldIndex, newIndex });
        newIndex++;
      } else {
        ops.push({ kind: " ", text: newLines[newIndex] ?? "", oldIndex, newIndex });
        oldIndex++;
        newIndex++;
      }
    }
  }

  const show = options.showSecrets === true ? (op: Op) => op.text : secretShower(ops);
  const paint = painter(options.color ?? false);
  const out = [
    paint("bold", `--- ${options.vm} (${options.labels?.before ?? "current"})`),
    paint("bold", `+++ ${options.vm} (${options.labels?.after ?? "new"})`),
  ];
  const changed = ops.flatMap((op, i) => (op.kind === " " ? [] : [i]));
  let h = 0;
  while (h < changed.length) {
    // A hunk runs from `context` lines before its first change to `context` lines after its last,
    // merging changes whose contexts touch.
    let last = changed[h] as number;
    let next = h + 1;
    while (next < changed.length && (changed[next] as number) - last <= 2 * context + 1) {
      last = changed[next] as number;
      next++;
    }
    const from = Math.max(0, (changed[h] as number) - context);
    const to = Math.min(ops.length, last + context + 1);
    const slice = ops.slice(from, to);
    const oldCount = slice.filter((op) => op.kind !== "+").length;
    const newCount = slice.filter((op) => op.kind !== "-").length;
    const first = slice[0] as Op;
    const oldStart = oldCount === 0 ? first.oldIndex : first.oldIndex + 1;
    const newStart = newCount === 0 ? first.newIndex : first.newIndex + 1;
    out.push(paint("cyan", `@@ -${oldStart},${oldCount} +${newStart},${newCount} @@`));
    for (const op of slice) {
      const text = show(op);
      const line = `${op.kind}${op.kind === " " ? clipContext(text) : text}`;
      out.push(
        op.kind === "-" ? paint("red", line) : op.kind === "+" ? paint("green", line) : line,
      );
    }
    h = next;
  }
  return out.join("\n") + "\n";
}

/** Longest unchanged line a diff shows whole (a `<description>` may be megabytes long). */
export const MAX_CONTEXT_LINE = 200;

/**
 * An unchanged line cut to {@link MAX_CONTEXT_LINE} characters, saying how much was left out.
 * Only context is cut: changed lines are what the user confirms. Cut after redaction, so no
 * secret is split.
 */
function clipContext(text: string): string {
  if (text.length <= MAX_CONTEXT_LINE) return text;
  let kept = text.slice(0, MAX_CONTEXT_LINE - 40);
  // Never end on half a surrogate pair.
  if (/[\uD800-\uDBFF]$/.test(kept)) kept = kept.slice(0, -1);
  return `${kept}… (${text.length - kept.length} more characters, unchanged)`;
}

/**
 * How each line prints with its secrets redacted: a `+` line that replaces a `-` line identical
 * but for its secret values (the same key once redacted) marks the values that differ.
 */
function secretShower(ops: readonly Op[]): (op: Op) => string {
  const removed = new Map<string, string[]>();
  for (const op of ops) {
    if (op.kind !== "-" || secretValues(op.text).length === 0) continue;
    const key = normaliseXmlLine(redactSecrets(op.text));
    if (!removed.has(key)) removed.set(key, secretValues(op.text));
  }
  return (op) => {
    if (op.kind !== "+") return redactSecrets(op.text);
    const before = removed.get(normaliseXmlLine(redactSecrets(op.text)));
    return redactSecrets(op.text, before);
  };
}
