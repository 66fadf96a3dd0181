/**
 * Words for `sh`: what the hook script runs, and the commands printed for users to run.
 *
 * @module
 */

/**
 * `'text'` for `sh`, safe for any byte but NUL: what a script runs, quoted whatever it holds.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(shellQuote("it's"), `'it'\\''s'`);
 * ```
 */
export function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * One word of a command printed for the user: as is when `sh` reads it so, else single-quoted.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(shellWord("/srv/vm-1"), "/srv/vm-1");
 * assertEquals(shellWord("win 11"), "'win 11'");
 * ```
 */
export function shellWord(word: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(word) ? word : shellQuote(word);
}

/**
 * `--flag VALUE` of a command printed for the user, with VALUE as {@link shellWord} writes it;
 * `--flag=VALUE` when VALUE starts with `-`, which the parser would otherwise read as an option
 * (`plan --vm -lab` fails: "Option '--vm' argument is ambiguous").
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(flagWord("--vm", "win 11"), "--vm 'win 11'");
 * assertEquals(flagWord("--vm", "-lab"), "--vm=-lab");
 * ```
 */
export function flagWord(flag: string, value: string): string {
  return `${flag}${value.startsWith("-") ? "=" : " "}${shellWord(value)}`;
}

/**
 * `command VALUE OPTIONS...` printed for the user, VALUE one positional argument as
 * {@link shellWord} writes it; when VALUE starts with `-`, which the parser would otherwise read
 * as an option, the options come first and VALUE last, after `--`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   positionalCommand("passthrough rollback", "win 11", ["--to", "ID"]),
 *   "passthrough rollback 'win 11' --to ID",
 * );
 * assertEquals(
 *   positionalCommand("passthrough rollback", "-lab", ["--to", "ID"]),
 *   "passthrough rollback --to ID -- -lab",
 * );
 * ```
 */
export function positionalCommand(
  command: string,
  value: string,
  options: readonly string[] = [],
): string {
  const words = options.map(shellWord);
  return value.startsWith("-")
    ? [command, ...words, "--", shellWord(value)].join(" ")
    : [command, shellWord(value), ...words].join(" ");
}
