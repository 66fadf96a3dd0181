/**
 * Aligned plain-text tables for `devices`, `groups` and `backups`. Column widths ignore ANSI
 * escapes, so a painted cell lines up like a plain one, and cells are escaped for the terminal
 * here (as `main` would print them), so a control character in a name cannot skew the columns.
 *
 * @module
 */

import { stripAnsi } from "../lib/render/colors.ts";
import { terminalSafe } from "../lib/render/terminal.ts";

/**
 * Renders rows under a header with two spaces between columns; the last column is not padded.
 * `color`: whether the cells may hold the painter's colours (`io.color`).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * assertEquals(renderTable(["A", "BB"], [["xyz", "1"]]), "A    BB\nxyz  1\n");
 * ```
 */
export function renderTable(header: string[], rows: string[][], color = false): string {
  // Painted cells keep the painter's sequences (when colour is on); any other escape is written out.
  const all = [header, ...rows].map((row) => row.map((cell) => terminalSafe(cell, color)));
  const widths = header.map((_, i) => Math.max(...all.map((r) => stripAnsi(r[i] ?? "").length)));
  return all.map((row) =>
    row.map((cell, i) =>
      i === row.length - 1 ? cell : cell + " ".repeat((widths[i] ?? 0) - stripAnsi(cell).length)
    ).join("  ").trimEnd()
  ).join("\n") + "\n";
}
