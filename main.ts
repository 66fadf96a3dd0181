/**
 * The `passthrough` command line: parses the subcommand, wires `lib/` to `ffi/`, prints, and
 * chooses the exit code (0 ok, 1 runtime error, 2 usage error; with `plan --detailed-exitcode`,
 * 2 means changes pending and a usage error exits 1, as terraform does).
 *
 * @module
 */

import { redactSecrets } from "./lib/domain/secrets.ts";
import { redactedJson } from "./lib/render/redact.ts";
import { terminalSafe } from "./lib/render/terminal.ts";
import { stripAnsi } from "./lib/render/colors.ts";
import { libvirtAccessAdvice } from "./lib/render/error_text.ts";
import { type CliIo, type Command, UsageError } from "./cli/context.ts";
import { COMMANDS } from "./cli/commands.ts";
import { colorChoice, isColorWhen, takesNextArgument } from "./cli/flags.ts";
import { didYouMean } from "./lib/render/suggest.ts";
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
    "Every command takes --color=auto|always|never. -V, --version: the version.",
    "Run 'passthrough help <command>' (or '<command> --help') for a command's options.",
    "",
  ].join("\n");
}

/**
 * The first word of `args` that names a command, past the values of the options before it: in
 * `--vm plan apply`, "plan" is the VM `--vm` names, and the command is `apply`.
 */
function commandIn(args: readonly string[]): Command | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg.startsWith("-")) {
      // A flag takes a value in every command or in none (flags_test): any command's table tells.
      // `--color` takes only when to colour: in `--color plan`, "plan" is the command.
      const valued = arg === "--color"
        ? isColorWhen(args[i + 1] ?? "")
        : COMMANDS.some((c) => takesNextArgument(c.flags, arg));
      if (valued) i++;
      continue;
    }
    const command = COMMANDS.find((c) => c.name === arg);
    if (command !== undefined) return command;
  }
  return undefined;
}

/**
 * Where the options every command takes (`--color`, `--help`) end at the start of `args`. As
 * before a command, only auto, always or never after `--color` is its value: in `--color plan`,
 * "plan" is the topic. Help wins over a wrong value, as in `plan --color=red --help`.
 */
function pastEveryCommandsOptions(args: readonly string[]): number {
  let i = 0;
  for (; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--color" && isColorWhen(args[i + 1] ?? "")) i++;
    else if (arg !== "--color" && !arg.startsWith("--color=") && arg !== "--help" && arg !== "-h") {
      break;
    }
  }
  return i;
}

/**
 * What a command line that names no command gets: one line, then what follows it. An option
 * written first (virsh's habit: `virsh -c URI list`) is no misspelt command: say where options
 * go, naming the command that follows it (`later`) when there is one. A word after a leading `--`
 * (`operand`) is no option, however it is spelt: an unknown command.
 */
function unknownCommand(
  name: string,
  rest: readonly string[],
  operand: boolean,
): { message: string; more: string; later?: Command } {
  if (name.startsWith("-") && !operand) {
    const later = commandIn([name, ...rest]);
    return later === undefined
      ? { message: `Option "${name}" needs a command first`, more: `\n${usage()}` }
      : {
        message: `Option "${name}" comes before the command "${later.name}": options go after ` +
          `it (passthrough ${later.name} [options])`,
        more: `Run 'passthrough ${later.name} --help' for its options.\n`,
        later,
      };
  }
  const suggestion = didYouMean(name, COMMANDS.map((c) => c.name));
  return {
    message: `Unknown command "${name}"${suggestion}`,
    more: suggestion === ""
      ? `\n${usage()}`
      : "Run 'passthrough --help' for the list of commands.\n",
  };
}

/**
 * Runs the CLI with `args` (without the program name) and returns the exit code instead of
 * exiting: 0 ok, 1 runtime error, 2 usage error (with `--detailed-exitcode`: 2 changes pending,
 * 1 usage error). A runtime error is one line on stderr, a usage error its message and the
 * command's help; under `--json`, either is also printed as JSON on stdout. Output goes through
 * `terminal` (the real one by default), control characters escaped; pass your own {@link CliIo}
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
  const line = commandLine(args);
  const { first, rest, name, operand, flags } = line;
  const option = (...spellings: string[]) => !operand && spellings.includes(name ?? "");
  if (name === undefined || name === "help" || option("--help", "-h")) {
    return print(terminal, "passthrough", usage(), name === undefined ? 2 : 0);
  }
  if (name === "version" || option("--version", "-V")) {
    return print(terminal, "passthrough", `passthrough ${VERSION}\n`, 0);
  }
  // Under --detailed-exitcode, 2 means "changes pending": a usage error must not read as that,
  // an option written before the command (`--detailed-exitcode plan`) included.
  const usageCode = asks(line, "--detailed-exitcode") ? 1 : 2;
  const command: Command | undefined = COMMANDS.find((c) => c.name === name);
  if (command === undefined) return refuseUnknownCommand(terminal, line, usageCode);
  // Help wins over any other flag, and needs nothing but the command table.
  if (first === "help" || flags.includes("--help") || flags.includes("-h")) {
    return print(terminal, `passthrough ${command.name}`, command.help, 0);
  }
  // A script reading --json gets every failure as JSON on stdout, its command line's too: it
  // parses stdout, and would otherwise find nothing there. Only where the command has JSON output
  // (`hook`'s counts for each subcommand: the script asked one of them for JSON).
  const json = asks(line, "--json") && Object.hasOwn(command.flags, "json");
  let io = outputTo(terminal, terminal.color);
  try {
    io = outputTo(terminal, colorChoice(flags, terminal.color));
    return await command.run(rest, io);
  } catch (error) {
    return await reportFailure(error, { command, io, json, usageCode });
  }
}

/** The words of a command line as {@link main} reads them, before any command parses its own. */
interface CommandLine {
  /** The first word, past a leading "--". */
  first: string | undefined;
  /** The words after `first`. */
  rest: string[];
  /** The command it names: `first`, or help's topic. */
  name: string | undefined;
  /** Whether `name` came after a "--": data, never an option. */
  operand: boolean;
  /** The words of `rest` before a "--": the command's flags. */
  flags: string[];
}

/** Reads which command `args` names, and which of its words are flags. */
function commandLine(args: string[]): CommandLine {
  // A "--" first ends the options, as POSIX has it (a wrapper's `passthrough -- "$@"`): the word
  // after it is the command, even one spelt like an option (`-- --help` is no request for help).
  const leading = args[0] === "--";
  // Help is the command after the options every command takes too, which are then its own:
  // `--color never help plan` is `help --color never plan`, not an option before "plan".
  const helpAt = leading ? 0 : pastEveryCommandsOptions(args);
  const [first, ...rest] = leading
    ? args.slice(1)
    : helpAt > 0 && args[helpAt] === "help"
    ? ["help", ...args.slice(0, helpAt), ...args.slice(helpAt + 1)]
    : args;
  // `help CMD` is `CMD --help`, and so is `help -- CMD`: a "--" after help ends its options too,
  // and the word after it is data as after a leading one (`help -- --version` asks no version).
  // Before its topic, help takes the options every command takes (`help --color never plan`).
  const topicAt = first === "help" ? pastEveryCommandsOptions(rest) : 0;
  const helpEnds = first === "help" && rest[topicAt] === "--";
  const topic = rest[topicAt + (helpEnds ? 1 : 0)];
  const name = first === "help" && topic !== undefined ? topic : first;
  // Arguments after "--" are data (the hook passes VM names there), never flags.
  const flags = rest.includes("--") ? rest.slice(0, rest.indexOf("--")) : rest;
  return { first, rest, name, operand: leading || helpEnds, flags };
}

/**
 * Whether `line` asks for `flag`, also written with a value the parser then refuses (`--json=true`,
 * as terraform's `-detailed-exitcode=true` is written): that script still reads the answer as it
 * asked.
 */
function asks({ name, operand, flags }: CommandLine, flag: string): boolean {
  return [...(operand || name === undefined ? [] : [name]), ...flags]
    .some((f) => f === flag || f.startsWith(`${flag}=`));
}

/** Says that `line` names no command (as JSON too where a script asked for it); returns `code`. */
function refuseUnknownCommand(terminal: CliIo, line: CommandLine, code: number): number {
  const { message, more, later } = unknownCommand(line.name!, line.rest, line.operand);
  const io = outputTo(terminal, terminal.color);
  // The script asked the command it names for JSON, and parses stdout (as below).
  if (asks(line, "--json") && later !== undefined && Object.hasOwn(later.flags, "json")) {
    try {
      io.out(errorJson("usage", message));
    } catch {
      // Standard output itself failed: the line on stderr says what was wrong.
    }
  }
  io.err(errorText(`passthrough: ${message}\n${more}`));
  return code;
}

/**
 * Reports a command's failure: a usage error with the command's help, anything else in one line;
 * under `--json` (`json`), as JSON on stdout too. Returns the exit code.
 */
async function reportFailure(
  error: unknown,
  { command, io, json, usageCode }: {
    command: Command;
    io: CliIo;
    json: boolean;
    usageCode: number;
  },
): Promise<number> {
  const usage = error instanceof UsageError;
  const system = usage ? { systemHint: null } : await systemHint(error);
  if (json) {
    try {
      io.out(
        usage
          ? errorJson("usage", error.message)
          : isConfigError(error)
          ? configErrorJson(error)
          : errorJson("runtime", describeError(error, system)),
      );
    } catch {
      // Standard output itself failed (`> /dev/full`): the line on stderr below says so, where
      // a second throw would end the process with a stack trace.
    }
  }
  if (usage) {
    io.err(errorText(`passthrough ${command.name}: ${error.message}\n\n${command.help}`));
    return usageCode;
  }
  io.err(errorText(`passthrough ${command.name}: ${describeError(error, system)}\n`));
  return 1;
}

/**
 * What to do about a file system's refusal (EPERM: an immutable file; EROFS: a read-only mount,
 * named from `/proc/self/mountinfo`), or `null`. Its module, and libc for `/proc` (Deno opens
 * nothing there without `--allow-all`), load only on this path.
 */
async function systemHint(error: unknown): Promise<{ systemHint: string | null }> {
  const errno = (text: string) => /\(os error (1|30)\)/.exec(text)?.[1];
  let found: string | undefined;
  for (let current = error, depth = 0; current instanceof Error && depth < 5; depth++) {
    found ??= errno(current.message);
    current = current.cause;
  }
  if (found === undefined) return { systemHint: null };
  try {
    const { fileSystemHint } = await import("./lib/render/fs_hint.ts");
    const { realPathOfExisting } = await import("./lib/state/paths.ts");
    let mountInfo: string | null = null;
    if (found === "30") {
      const { libcSysfsReader } = await import("./ffi/libc_fs.ts");
      const { MAX_MOUNTINFO_BYTES, readWholeText } = await import("./lib/host/sysfs.ts");
      // Whole: a container host's table is megabytes, and its head may not hold the mount.
      const reader = libcSysfsReader({ fewCalls: true });
      mountInfo = readWholeText(reader, "/proc/self/mountinfo", MAX_MOUNTINFO_BYTES);
    }
    return { systemHint: fileSystemHint(error, mountInfo, { realPath: realPathOfExisting }) };
  } catch {
    return { systemHint: null };
  }
}

/**
 * Prints help or the version and returns `code`; a failed write (`> /dev/full`) is one line on
 * stderr and exit 1, as in a command, not an uncaught error with its stack trace.
 */
function print(terminal: CliIo, who: string, text: string, code: number): number {
  const io = outputTo(terminal, terminal.color);
  try {
    io.out(text);
    return code;
  } catch (error) {
    io.err(errorText(`${who}: ${describeError(error)}\n`));
    return 1;
  }
}

/**
 * An error's text, escaped as with colour off. Errors are never painted, so every escape in one is
 * a value's (a config value pasted from coloured output): with colour on, the boundary let the
 * painter's own sequences through, and the value read as a valid one in colour. Redacted: a usage
 * error quotes the argument it refuses, a URI given without `--connect` included.
 */
function errorText(text: string): string {
  return terminalSafe(redactSecrets(text), false);
}

/**
 * The output boundary: names read from trees, lspci and libvirt reach the terminal escaped, and
 * colour only when `color` (the painter's sequences are then let through).
 */
function outputTo(terminal: CliIo, color: boolean): CliIo {
  return {
    ...terminal,
    color,
    out: (text) => terminal.out(terminalSafe(text, color)),
    err: (text) => terminal.err(terminalSafe(text, color)),
    ...(terminal.prompt === undefined
      ? {}
      : { prompt: (text: string) => terminal.prompt!(terminalSafe(text, color)) }),
  };
}

/** The config's own errors (`ConfigErrors`, `ConfigError`), told by name: no config import here. */
interface ConfigProblem extends Error {
  file?: string;
  line?: number;
  column?: number;
  path?: string;
  hint?: string | null;
  errors?: ConfigProblem[];
}

function isConfigError(error: unknown): error is ConfigProblem {
  return error instanceof Error && (error.name === "ConfigErrors" || error.name === "ConfigError");
}

/**
 * A config error under `--json`, on stdout: `{ "error": { "kind": "config", "message",
 * "problems": [{ "file", "line", "column", "path", "message", "hint" }] } }`.
 */
function configErrorJson(error: ConfigProblem): string {
  const problems = (error.errors ?? [error]).map((e) => ({
    file: e.file ?? null,
    line: e.line ?? null,
    column: e.column ?? null,
    path: e.path ?? null,
    message: e.message,
    hint: e.hint ?? null,
  }));
  const json = { error: { kind: "config", message: error.message.split("\n")[0], problems } };
  // A problem quotes the value it refuses: a `connect:` URI's password too.
  return redactedJson(json);
}

/**
 * Any other failure under `--json`, on stdout: `{ "error": { "kind", "message" } }`, `kind`
 * `usage` for a wrong command line (exit 2), `runtime` for the rest (exit 1).
 */
function errorJson(kind: "usage" | "runtime", message: string): string {
  return redactedJson({ error: { kind, message } });
}

/** Whether `error` is one of Deno's own (`Deno.errors.NotCapable`, `NotFound`, ...). */
function isDenoError(error: unknown): boolean {
  return Object.values(Deno.errors).some((kind) => error instanceof kind);
}

/**
 * libc's `EACCES` or `EPERM` on a path read through `ffi/libc_fs.ts` (the live `/sys`, a captured
 * tree): the system's refusal as Deno's `PermissionDenied` is. Told by name: no `ffi/` import here.
 */
function isLibcRefusal(error: unknown): boolean {
  if (!(error instanceof Error) || error.name !== "LibcFsError") return false;
  const errno = (error as Error & { errno?: unknown }).errno;
  return errno === 13 || errno === 1;
}

/** Deno's refusal of a path it opens only with `--allow-all` (`/dev/shm/x`, `/proc/self/cwd/x`). */
const SPECIAL_PATH = /^Requires all access to /;

/**
 * One readable paragraph for any error, with its causes (a cause the message already quotes is not
 * repeated); never a stack trace. `systemHint` (from `fs_hint.ts`) replaces the owner-and-mode
 * advice where the file system's refusal is not about them. Only Deno's own refusal (`NotCapable`) points to the permission
 * set; the system's (`PermissionDenied`: EACCES, EPERM) is about files and users.
 */
export function describeError(
  error: unknown,
  options: { systemHint?: string | null } = {},
): string {
  const parts: string[] = [];
  let hint = "";
  let current: unknown = error;
  for (let depth = 0; current !== undefined && depth < 5; depth++) {
    // Deno's own messages may carry colour codes; the terminal boundary would write them out.
    // Only theirs: another message may quote a value the user wrote (a config value pasted from
    // `grep --color`), which the boundary shows escaped, as it is, never silently shortened.
    const raw = current instanceof Error ? current.message : String(current);
    let text = isDenoError(current) ? stripAnsi(raw) : raw;
    if (current instanceof Deno.errors.NotCapable && SPECIAL_PATH.test(text)) {
      // Deno's advice names a flag the user cannot pass to passthrough.
      text = text.replace(/, run again with the --allow-all flag$/, "");
      hint = " (Deno opens a file under /dev, /proc or /sys only with --allow-all, which " +
        "passthrough does not run with: use a path elsewhere, such as /etc/passthrough)";
    } else if (current instanceof Deno.errors.NotCapable) {
      hint = ` (a Deno permission: see README, "Permissions")`;
    } else if (
      (current instanceof Deno.errors.PermissionDenied || isLibcRefusal(current)) && hint === ""
    ) {
      hint = " (the system refused: check the owner and mode of that path, or run as root)";
    }
    if (!parts.some((part) => part.includes(text))) parts.push(text);
    current = current instanceof Error ? current.cause : undefined;
  }
  // An immutable file (EPERM) or a read-only mount (EROFS): owner and mode are not the cause.
  const system = options.systemHint ?? null;
  if (system !== null && !hint.includes("Deno")) hint = ` (${system})`;
  // A connection libvirt refused to this user: the system's "Permission denied" alone does not
  // say that a group, or root, is the way in.
  const access = libvirtAccessAdvice(error);
  if (access !== null) hint = ` (${access})`;
  // A libvirt error may quote a definition read with its secrets.
  return redactSecrets(parts.join(": ") + hint);
}

if (import.meta.main) {
  Deno.exitCode = await main(Deno.args);
}
