/**
 * What every CLI command receives: its arguments and where to write. Commands return an exit code
 * instead of exiting, so tests can run them in-process as well as through a spawned `main.ts`.
 *
 * @module
 */

import type { Flags } from "./flags.ts";

/**
 * Output channels and terminal facts, injected so commands never touch Deno globals directly.
 * `main()` (the `./cli` export) takes one; pass your own to capture output or script answers.
 */
export interface CliIo {
  /** Writes to standard output as is: the text carries its own newlines. */
  out(text: string): void;
  /** Writes to standard error as is: the text carries its own newlines. */
  err(text: string): void;
  /** Whether to colour output: stdout is a terminal and `NO_COLOR` is unset or empty. */
  color: boolean;
  /**
   * Whether stdin is a terminal, so `apply` and `rollback` may ask for confirmation (read with
   * {@link CliIo.readLine}); when `false` they refuse to run without `--yes`.
   */
  interactive: boolean;
  /**
   * The width of the terminal standard output writes to, which tables fit (`devices`,
   * `groups`); absent when it is not a terminal, so piped output is never cut.
   */
  columns?: number;
  /**
   * Writes a question (`apply`'s and `rollback`'s) where the user reads it, when that is not
   * {@link CliIo.out}: standard error when standard output is not a terminal and standard error is
   * (`passthrough apply > apply.log`). What a question asks about (the VM's diff) is written here
   * too before it, since what went to `out` was not seen. Absent: questions go to `out`.
   */
  prompt?(text: string): void;
  /** Reads one line from standard input without its line ending; `null` at end of input. */
  readLine(): Promise<string | null>;
  /**
   * Looks an environment variable up (`LIBVIRT_DEFAULT_URI`, `PASSTHROUGH_STATE_DIR`, ...);
   * `undefined` when unset.
   */
  env(name: string): string | undefined;
}

/** A usage error: wrong flags or arguments. `main` prints it with the command's help, exit 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** One subcommand of the CLI, as `cli/flags.ts`'s `defineCommand` builds it from its spec. */
export interface Command {
  /** The subcommand, as typed. */
  name: string;
  /** One line for the command list. */
  summary: string;
  /** Full help text (usage line, options, notes). */
  help: string;
  /** Every flag it takes, `--help` included, in the order its help lists them. */
  flags: Flags;
  /** Parses `args` (a {@link UsageError} when they are wrong), then runs; the exit code. */
  run(args: string[], io: CliIo): Promise<number>;
}
