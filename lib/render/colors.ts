/**
 * The one place that knows ANSI colour codes (the CLI and `lib/render/diff.ts` both paint through it).
 * Everything else asks for a {@link Paint} and never decides by itself whether colour is on (that
 * is `io.color`: a terminal and no `NO_COLOR`).
 *
 * @module
 */

/** Named styles the CLI uses. */
export type Style = "bold" | "dim" | "red" | "green" | "yellow" | "cyan";

/** Wraps text in a style, or returns it unchanged when colour is off. */
export type Paint = (style: Style, text: string) => string;

const CODES: Record<Style, [number, number]> = {
  bold: [1, 22],
  dim: [2, 22],
  red: [31, 39],
  green: [32, 39],
  yellow: [33, 39],
  cyan: [36, 39],
};

/** Every escape sequence a painter writes (`\x1b[31m`, `\x1b[39m`, ...), for the output boundary. */
export const PAINTER_SEQUENCES: ReadonlySet<string> = new Set(
  Object.values(CODES).flat().map((code) => `\x1b[${code}m`),
);

/** A painter for the given colour setting. */
export function painter(color: boolean): Paint {
  if (!color) return (_style, text) => text;
  return (style, text) => {
    const [open, close] = CODES[style];
    return `\x1b[${open}m${text}\x1b[${close}m`;
  };
}

/** Removes ANSI escapes (for width computations and tests). */
export function stripAnsi(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}
