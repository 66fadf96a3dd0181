/**
 * Aligned plain-text tables for `devices` and `groups`. Column widths ignore ANSI escapes, so a
 * painted cell lines up like a plain one.
 *
 * @module
 */

import { stripAnsi } from "../lib/render/colors.ts";

/**
 * Renders rows under a header with two spaces between columns; the last column is not padded.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * assertEquals(renderTable(["A", "BB"], [["xyz", "1"]]), "A    BB\nxyz  1\n");
 * ```
 */
export function renderTable(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => stripAnsi(r[i] ?? "").length)));
  return all.map((row) =>
    row.map((cell, i) =>
      i === row.length - 1 ? cell : cell + " ".repeat((widths[i] ?? 0) - stripAnsi(cell).length)
    ).join("  ").trimEnd()
  ).join("\n") + "\n";
}
