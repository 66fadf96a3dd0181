/**
 * The `passthrough` command line: parses the subcommand, wires `lib/` to `ffi/`, prints, and
 * chooses the exit code (0 ok, 1 runtime error, 2 usage error or, with `plan
 * --detailed-exitcode`, changes pending).
 *
 * @module
 */

import { redactSecrets } from "./lib/domain/secrets.ts";
import { terminalSafe } from "./lib/render/terminal.ts";
import { stripAnsi } from "./lib/render/colors.ts";
import { type CliIo, type Command, UsageError } from "./cli/context.ts";
import { COMMANDS } from "./cli/commands.ts";
import { defaultIo } from "./cli/io.ts";
import { VERSION } from "./cli/version.ts";

export type { CliIo } from "./cli/context.ts";

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  const lines = COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
  return [
    `passthrough ${VERSION}: PCI device passthrough for libvirt VMs`,
    "",
    "Usage: passthrough <command> [options]",
    "",
    "Commands:",
    ...lines,
    "",
    "Run 'passthrough <command> --help' for a command's options.",
    "",
  ].join("\n");
}

/**
 * Runs the CLI with `args` (without the program name) and returns the exit code instead of
 * exiting: 0 ok, 1 runtime error, 2 usage error (or, for `plan --detailed-exitcode`, changes
 * pending). Output goes through `terminal` (the real one by default), control characters escaped; pass your own {@link CliIo}
 * to capture it.
 *
 * @example Capture the output of a command
 * ```ts
 * import { assertEquals } from "./tests/helpers/assert.ts";
 * const out: string[] = [];
 * const code = await main(["--version"], {
 *   out: (text) => out.push(text),
 *   err: (text) => out.push(text),
 *   color: false,
 *   interactive: false,
 *   readLine: () => Promise.resolve(null),
 *   env: () => undefined,
 * });
 * assertEquals([code, out.join("")], [0, "passthrough 0.1.0\n"]);
 * ```
 */
export async function main(args: string[], terminal: CliIo = defaultIo()): Promise<number> {
  // The output boundary: names read from trees, lspci and libvirt reach the terminal escaped.
  const io: CliIo = {
    ...terminal,
    out: (text) => terminal.out(terminalSafe(text, terminal.color)),
    err: (text) => terminal.err(terminalSafe(text, terminal.color)),
  };
  const [name, ...rest] = args;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    io.out(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "version") {
    io.out(`passthrough ${VERSION}\n`);
    return 0;
  }
  const command: Command | undefined = COMMANDS.find((c) => c.name === name);
  if (command === undefined) {
    io.err(`passthrough: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  // Help wins over any other flag, and needs nothing but the command table. Arguments after
  // "--" are data (the hook passes VM names there), never a request for help.
  const flags = rest.includes("--") ? rest.slice(0, rest.indexOf("--")) : rest;
  if (flags.includes("--help") || flags.includes("-h")) {
    io.out(command.help);
    return 0;
  }
  try {
    return await command.run(rest, io);
  } catch (error) {
    if (error instanceof UsageError) {
      io.err(`passthrough ${command.name}: ${error.message}\n\n${command.help}`);
      return 2;
    }
    io.err(`passthrough ${command.name}: ${describeError(error)}\n`);
    return 1;
  }
}

/**
 * One readable paragraph for any error, with its causes (a cause the message already quotes is not
 * repeated); never a stack trace. Only Deno's own refusal (`NotCapable`) points to the permission
 * set; the system's (`PermissionDenied`: EACCES, EPERM) is about files and users.
 */
export function describeError(error: unknown): string {
  const parts: string[] = [];
  let hint = "";
  let current: unknown = error;
  for (let depth = 0; current !== undefined && depth < 5; depth++) {
    if (current instanceof Deno.errors.NotCapable) {
      hint = ` (a Deno permission: see README, "Permissions")`;
    } else if (current instanceof Deno.errors.PermissionDenied && hint === "") {
      hint = " (the system refused: check the owner and mode of that path, or run as root)";
    }
    // Deno's own messages may carry colour codes; the terminal boundary would write them out.
    const text = stripAnsi(current instanceof Error ? current.message : String(current));
    if (!parts.some((part) => part.includes(text))) parts.push(text);
    current = current instanceof Error ? current.cause : undefined;
  }
  // A libvirt error may quote a definition read with its secrets.
  return redactSecrets(parts.join(": ") + hint);
}

if (import.meta.main) {
  Deno.exitCode = await main(Deno.args);
}
