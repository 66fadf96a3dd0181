/**
 * Aligned plain-text tables for `devices`, `groups` and `backups`. Column widths ignore ANSI
 * escapes, so a painted cell lines up like a plain one, and cells are escaped for the terminal
 * here (as `main` would print them, and tab and newline too), so a control character in a name
 * cannot skew the columns nor start a row of its own.
 *
 * @module
 */

import { stripAnsi } from "../lib/render/colors.ts";
import { oneLine } from "../lib/render/terminal.ts";

/** The narrowest a fitted column gets: a name cut shorter says nothing. */
const MIN_FIT = 16;

/** Fit the table in `width` columns by cutting the cells of `column` (the names), then the last. */
export interface TableFit {
  /** The terminal's width. */
  width: number;
  /** The index of the column whose cells are cut. */
  column: number;
}

/** `cell` cut to `width` columns with a final `…`; a painted cell that is cut loses its paint. */
function cut(cell: string, width: number): string {
  const plain = stripAnsi(cell);
  return plain.length <= width ? cell : `${plain.slice(0, width - 1)}…`;
}

/**
 * Renders rows under a header with two spaces between columns; the last column is not padded.
 * `color`: whether the cells may hold the painter's colours (`io.color`). With `fit`, the cells
 * of one column, then of the last, are cut (each down to a minimum) so that lines fit the width,
 * and columns with nothing but `-` are left out.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * assertEquals(renderTable(["A", "BB"], [["xyz", "1"]]), "A    BB\nxyz  1\n");
 * ```
 */
export function renderTable(
  header: string[],
  rows: string[][],
  color = false,
  fit?: TableFit,
): string {
  if (fit === undefined) return layout(header, rows, color, null);
  // Fitting, a column that says nothing ("-" on every row) gives its room to the others.
  const empty = header.map((_, i) => rows.length > 0 && rows.every((r) => r[i] === "-"));
  const keep = (_: string, i: number) => !empty[i];
  const column = fit.column - empty.slice(0, fit.column).filter((e) => e).length;
  return layout(header.filter(keep), rows.map((r) => r.filter(keep)), color, { ...fit, column });
}

function layout(header: string[], rows: string[][], color: boolean, fit: TableFit | null): string {
  // Painted cells keep the painter's sequences (when colour is on); any other escape is written out.
  let all = [header, ...rows].map((row) => row.map((cell) => oneLine(cell, color)));
  const widths = header.map((_, i) => Math.max(...all.map((r) => stripAnsi(r[i] ?? "").length)));
  // The names give way first, then the notes (the last column), each down to MIN_FIT.
  for (const column of fit === null ? [] : [fit.column, widths.length - 1]) {
    const total = widths.reduce((sum, w) => sum + w, 0) + 2 * (widths.length - 1);
    const room = Math.max(MIN_FIT, (widths[column] ?? 0) - (total - fit!.width));
    if (room < (widths[column] ?? 0)) {
      widths[column] = room;
      all = all.map((row) => row.map((cell, i) => i === column ? cut(cell, room) : cell));
    }
  }
  return all.map((row) =>
    row.map((cell, i) =>
      i === row.length - 1 ? cell : cell + " ".repeat((widths[i] ?? 0) - stripAnsi(cell).length)
    ).join("  ").trimEnd()
  ).join("\n") + "\n";
}
