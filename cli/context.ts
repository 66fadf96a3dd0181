/**
 * What every CLI command receives: its arguments and where to write. Commands return an exit code
 * instead of exiting, so tests can run them in-process as well as through a spawned `main.ts`.
 *
 * @module
 */

import type { Flags } from "./flags.ts";

/** Output channels and terminal facts, injected so commands never touch Deno globals directly. */
export interface CliIo {
  /** Writes to standard output as is (add your own newline). */
  out(text: string): void;
  /** Writes to standard error as is. */
  err(text: string): void;
  /** Whether stdout is a terminal and colour is allowed (`NO_COLOR` unset). */
  color: boolean;
  /** Whether stdin is a terminal (interactive confirmation possible). */
  interactive: boolean;
  /** Reads one line from standard input; `null` at end of input. */
  readLine(): Promise<string | null>;
  /** Environment lookup (`LIBVIRT_DEFAULT_URI`, `PASSTHROUGH_STATE_DIR`, ...). */
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
