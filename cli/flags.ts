/**
 * Flags declared once. A command's {@link CommandSpec} names its flags and arguments, or its
 * subcommands' ({@link SubcommandSpec}: `hook install`, `hook status`); from it
 * {@link defineCommand} derives the parser, the help text (usage line, options aligned and wrapped
 * at 100 columns) and the usage errors (`main` prints them with the help, exit 2). Flags several
 * commands take are declared here once, in groups.
 *
 * The parser is `node:util` `parseArgs`'s strict mode, rules and messages, written out here, and
 * refuses an empty value, which parseArgs takes:
 * importing any `node:` module loads Deno's Node compatibility layer at every start. Nothing but
 * `./context.ts` and the "did you mean" that `main` loads anyway is imported, so the command
 * table and every `--help` stay light.
 *
 * @module
 */

import { type CliIo, type Command, UsageError } from "./context.ts";
import type { RunFlags } from "../lib/render/shell.ts";
import { didYouMean } from "../lib/render/suggest.ts";

/** A flag without a value: `false` unless given. */
export interface BooleanFlag {
  readonly type: "boolean";
  /** One-letter alias, without the dash (`y` for `-y`). */
  readonly short?: string;
  /** What it does, lower case, no final period. */
  readonly help: string;
}

/** A flag with a value: `undefined` unless given (an array of every value if `multiple`). */
export interface StringFlag {
  readonly type: "string";
  /** One-letter alias, without the dash (`c` for `-c`). */
  readonly short?: string;
  /** The value's name in help (`URI`). */
  readonly value: string;
  /** Whether it may be repeated (help says so). */
  readonly multiple?: boolean;
  /** What it does, lower case, no final period. */
  readonly help: string;
}

/** One flag. */
export type Flag = BooleanFlag | StringFlag;

/** Flags by name (without the dashes), in the order help lists them. */
export type Flags = Readonly<Record<string, Flag>>;

/** A positional argument. */
export interface Positional {
  /** Its name in the usage line (`VM`). */
  readonly name: string;
  /** The usage error when it is absent; an argument without one is optional. */
  readonly missing?: string;
  /** Whether it takes every remaining argument (`ADDRESS...`); only the last may. */
  readonly variadic?: boolean;
}

/**
 * One subcommand of a command (`install` of `passthrough hook install`): the first argument
 * chooses it, and its own flags and arguments then parse the rest.
 */
export interface SubcommandSpec {
  /** The subcommand, as typed. */
  readonly name: string;
  /** One line for the command's help. */
  readonly summary: string;
  /** Its arguments, in order; none when absent. */
  readonly positionals?: readonly Positional[];
  /** Its flags. */
  readonly flags: Flags;
  /**
   * Said after each usage error of its line, for a line that a program writes (`hook run`: a
   * hook written by another passthrough) rather than the user, who cannot fix it by hand.
   */
  readonly usageHint?: string;
  /**
   * Other words users type for it (`uninstall` for `remove`), suggested for them before a near
   * name is: "uninstall" is a typo's distance from "install", which would do the opposite.
   */
  readonly otherNames?: readonly string[];
}

/** Everything about a command except what it does when it runs. */
export interface CommandSpec {
  /** The subcommand, as typed. */
  readonly name: string;
  /** One line for `passthrough --help`. */
  readonly summary: string;
  /** Its arguments, in order; none when absent. */
  readonly positionals?: readonly Positional[];
  /** Its flags (`--help` is added to every command). */
  readonly flags: Flags;
  /** What it does: the help's paragraphs between the usage line and the options. */
  readonly about: string;
  /** The help's paragraphs after the options (exit codes, notes). */
  readonly notes?: string;
  /**
   * Its subcommands, when it has any: the first argument must name one. Such a command takes
   * no flags or arguments of its own (`flags` is `{}`, `positionals` absent).
   */
  readonly subcommands?: readonly SubcommandSpec[];
}

type FlagValue<F> = F extends BooleanFlag ? boolean
  : F extends { multiple: true } ? string[] | undefined
  : string | undefined;

/** The parsed values of `F`, by flag name. */
export type FlagValues<F extends Flags> = { -readonly [K in keyof F]: FlagValue<F[K]> };

type PositionalValues<P extends readonly Positional[]> = P extends readonly [{ variadic: true }]
  ? string[]
  : { -readonly [I in keyof P]: P[I] extends { missing: string } ? string : string | undefined };

/** A command line parsed against `S`'s flags and arguments: required positionals are present. */
interface ParsedLine<S extends CommandSpec | SubcommandSpec> {
  values: FlagValues<S["flags"]>;
  positionals: S extends { positionals: infer P extends readonly Positional[] }
    ? PositionalValues<P>
    : [];
}

/** A command line parsed against the subcommand `S`, which it names. */
type ParsedSubcommand<S extends SubcommandSpec> = ParsedLine<S> & { subcommand: S["name"] };

/**
 * A command line parsed against the command `S`: required positionals are present. For a command
 * with subcommands, one of its subcommands' lines, told apart by `subcommand`.
 */
export type Parsed<S extends CommandSpec> = S extends
  { subcommands: infer L extends readonly SubcommandSpec[] }
  ? { [I in keyof L]: ParsedSubcommand<L[I]> }[number]
  : ParsedLine<S>;

/** What a command does, given its parsed command line; returns the exit code. */
export type Run<S extends CommandSpec> = (parsed: Parsed<S>, io: CliIo) => Promise<number>;

/** `-h, --help`, which every command takes (`main` answers it before parsing). */
const HELP_FLAG = {
  help: { type: "boolean", short: "h", help: "show this help" },
} as const satisfies Flags;

/**
 * `--color WHEN`, which every command takes: `auto` (colour on a terminal unless `NO_COLOR` is
 * set), `always` or `never`. `main` reads it before the command runs ({@link colorChoice}), since
 * the output boundary escapes any colour it was not told to expect.
 */
const COLOR_FLAG = {
  color: {
    type: "string",
    value: "WHEN",
    help: "colour: auto (on a terminal without NO_COLOR), always or never",
  },
} as const satisfies Flags;

/** What `--color` takes, and nothing else: when to colour. */
const COLOR_WHEN: Readonly<Record<string, (auto: boolean) => boolean>> = {
  auto: (auto) => auto,
  always: () => true,
  never: () => false,
};

/**
 * Whether `word`, after `--color`, is its value: auto, always or never. No other word is, so in
 * `--color plan` "plan" is a command (written after an option that goes after it).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * import { isColorWhen } from "./flags.ts";
 * assertEquals(isColorWhen("never"), true);
 * assertEquals(isColorWhen("plan"), false);
 * ```
 */
export function isColorWhen(word: string): boolean {
  return Object.hasOwn(COLOR_WHEN, word);
}

/**
 * Whether to colour, from the last `--color WHEN` (or `--color=WHEN`) in `args`, the arguments of
 * a command (none after `--`); `auto` when there is none. A {@link UsageError} for another value.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * assertEquals(colorChoice(["--json", "--color=never"], true), false);
 * assertEquals(colorChoice(["--color", "always"], false), true);
 * assertEquals(colorChoice([], true), true);
 * ```
 */
export function colorChoice(args: readonly string[], auto: boolean): boolean {
  let when = "auto";
  args.forEach((arg, i) => {
    if (arg === "--color") when = args[i + 1] ?? "";
    else if (arg.startsWith("--color=")) when = arg.slice("--color=".length);
  });
  if (isColorWhen(when)) return COLOR_WHEN[when]!(auto);
  throw new UsageError(`--color takes auto, always or never, not "${when}"`);
}

/** `--sysfs DIR`: discover from a captured tree instead of this host. */
export const HOST_FLAGS = {
  sysfs: {
    type: "string",
    value: "DIR",
    help: "read a tree captured with 'passthrough snapshot' instead of /sys",
  },
} as const satisfies Flags;

/**
 * `-c, --connect URI`: the libvirt to open, for every command that opens one;
 * `--allow-uri-programs`, without which a URI that makes libvirt run a program is refused; and
 * `--libvirt-timeout N`, how many seconds one libvirt call may go unanswered.
 */
export const CONNECT_FLAG = {
  connect: {
    type: "string",
    short: "c",
    value: "URI",
    help: "libvirt URI (default: $LIBVIRT_DEFAULT_URI or libvirt's default)",
  },
  "allow-uri-programs": {
    type: "boolean",
    help:
      "open a libvirt URI that runs a program it names (the ext transport, command= or netcat=), refused otherwise",
  },
  "libvirt-timeout": {
    type: "string",
    value: "N",
    help:
      "give up (exit 1) when one libvirt call has not answered in N seconds (default: 60; 0: wait for ever)",
  },
} as const satisfies Flags;

/** What `plan` and `apply` take to compute a plan (see `cli/plan_options.ts`). */
export const PLAN_FLAGS = {
  config: {
    type: "string",
    short: "f",
    value: "FILE",
    help:
      "config file (default: $PASSTHROUGH_CONFIG, else ./passthrough_config.yaml, else /etc/passthrough/passthrough_config.yaml)",
  },
  host: {
    type: "string",
    value: "NAME",
    help: "with a hosts: config, the section to plan (default: this machine's host name)",
  },
  ...HOST_FLAGS,
  ...CONNECT_FLAG,
  vm: { type: "string", value: "NAME", multiple: true, help: "only this VM" },
  json: { type: "boolean", help: "print machine-readable JSON" },
} as const satisfies Flags;

/** `--state-dir DIR`: where backups live (and the lock, when not run as root). */
export const STATE_FLAGS = {
  "state-dir": {
    type: "string",
    value: "DIR",
    help: "backups (default: $PASSTHROUGH_STATE_DIR or /var/lib/passthrough; " +
      "the lock is in /run/passthrough as root)",
  },
} as const satisfies Flags;

/** `--state-dir DIR` for `backups`, which only reads it and takes no lock. */
export const READ_STATE_FLAGS = {
  "state-dir": {
    type: "string",
    value: "DIR",
    help: "where the backups are read (default: $PASSTHROUGH_STATE_DIR or /var/lib/passthrough)",
  },
} as const satisfies Flags;

/**
 * The flags of this run that the commands it advises repeat (see `followUpCommand`): those of
 * {@link PLAN_FLAGS}, {@link CONNECT_FLAG} and {@link STATE_FLAGS} that `values` holds.
 *
 * @example
 * ```ts
 * import { runFlags } from "./flags.ts";
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * assertEquals(runFlags({ connect: "test:///default", "state-dir": undefined }), {
 *   connect: "test:///default",
 * });
 * ```
 */
export function runFlags(values: {
  config?: string | undefined;
  host?: string | undefined;
  sysfs?: string | undefined;
  connect?: string | undefined;
  "allow-uri-programs"?: boolean | undefined;
  "state-dir"?: string | undefined;
  "libvirt-timeout"?: string | undefined;
}): RunFlags {
  const run: RunFlags = {
    config: values.config,
    host: values.host,
    sysfs: values.sysfs,
    connect: values.connect,
    allowUriPrograms: values["allow-uri-programs"],
    stateDir: values["state-dir"],
    libvirtTimeout: values["libvirt-timeout"],
  };
  return Object.fromEntries(Object.entries(run).filter(([, v]) => v !== undefined && v !== false));
}

/** `--hooks-dir DIR`: where the start guard's hook is (`hook`, `guard`, `doctor`). */
export const HOOKS_DIR_FLAG = {
  "hooks-dir": {
    type: "string",
    value: "DIR",
    help: "where libvirt looks for QEMU hooks (default: /etc/libvirt/hooks/qemu.d)",
  },
} as const satisfies Flags;

/** `-y, --yes`: for the commands that ask before they change a definition. */
export const YES_FLAG = {
  yes: {
    type: "boolean",
    short: "y",
    help: "answer yes to every question (required without a terminal)",
  },
} as const satisfies Flags;

/** Help lines are wrapped to this many columns. */
const HELP_WIDTH = 100;

/** `text` split into lines of at most `width` columns, at spaces (a longer word stays whole). */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  return [...lines, line];
}

/** The help's options section: `-c, --connect URI` and the like, then the aligned help text. */
function optionsHelp(flags: Flags): string {
  const entries = Object.entries(flags).map(([name, flag]) => ({
    left: `  ${flag.short === undefined ? "    " : `-${flag.short}, `}--${name}` +
      (flag.type === "string" ? ` ${flag.value}` : ""),
    text: flag.type === "string" && flag.multiple === true
      ? `${flag.help} (repeatable)`
      : flag.help,
  }));
  const column = Math.max(...entries.map((e) => e.left.length)) + 2;
  return entries.flatMap(({ left, text }) =>
    wrap(text, HELP_WIDTH - column).map((line, i) =>
      `${(i === 0 ? left : "").padEnd(column)}${line}`
    )
  ).join("\n");
}

/** `NAME ARG [OPTIONAL]`: a usage line's words after `passthrough`. */
function usageWords(names: string[], positionals: readonly Positional[] | undefined): string {
  const args = (positionals ?? []).map((p) =>
    p.variadic === true ? `[${p.name}...]` : p.missing === undefined ? `[${p.name}]` : p.name
  );
  return [...names, ...args].join(" ");
}

/** The subcommands of `spec` in help: their usage lines and their one-line summaries. */
function subcommandsHelp(spec: CommandSpec, subcommands: readonly SubcommandSpec[]): string[] {
  const width = Math.max(...subcommands.map((c) => c.name.length));
  return [
    ...subcommands.map((c, i) =>
      `${i === 0 ? "Usage:" : "      "} passthrough ${
        usageWords([spec.name, c.name], c.positionals)
      } [options]`
    ),
    "",
    spec.about.trimEnd(),
    "",
    "Subcommands:",
    ...subcommands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
  ];
}

/** The full help of `spec`, whose flags with `--help` are `flags`. */
function commandHelp(spec: CommandSpec, flags: Flags): string {
  const head = spec.subcommands === undefined
    ? [
      `Usage: passthrough ${usageWords([spec.name], spec.positionals)} [options]`,
      "",
      spec.about.trimEnd(),
    ]
    : subcommandsHelp(spec, spec.subcommands);
  return [
    ...head,
    "",
    "Options:",
    optionsHelp(flags),
    ...(spec.notes === undefined ? [] : ["", spec.notes.trimEnd()]),
    "",
  ].join("\n");
}

/**
 * Every flag of `spec`'s subcommands, once each, in order of first use; the help of a flag that
 * not every subcommand takes names those that do (`(install, status)`). Two subcommands must not
 * give one name two meanings.
 */
function subcommandFlags(spec: CommandSpec, subcommands: readonly SubcommandSpec[]): Flags {
  const flags: Record<string, Flag> = {};
  for (const sub of subcommands) {
    for (const [name, flag] of Object.entries(sub.flags)) {
      if (flags[name] !== undefined && JSON.stringify(flags[name]) !== JSON.stringify(flag)) {
        throw new TypeError(`"${spec.name}" declares --${name} twice, differently`);
      }
      flags[name] = flag;
    }
  }
  for (const [name, flag] of Object.entries(flags)) {
    const takers = subcommands.filter((c) => Object.hasOwn(c.flags, name)).map((c) => c.name);
    if (takers.length < subcommands.length) {
      flags[name] = { ...flag, help: `${flag.help} (${takers.join(", ")})` };
    }
  }
  return flags;
}

/** One flag as the command line gave it. */
interface FlagToken {
  /** The flag's name; an unknown one-letter flag keeps its letter. */
  name: string;
  /** As typed: `--connect`, `-c`. */
  rawName: string;
  /** The value: inline (`--x=v`, `-cv`) or the next argument; `undefined` without one. */
  value: string | undefined;
  inline: boolean;
}

/** The name of the flag whose one-letter alias is `letter`, else `letter` itself. */
function longName(flags: Flags, letter: string): string {
  for (const [name, flag] of Object.entries(flags)) if (flag.short === letter) return name;
  return letter;
}

function takesValue(flags: Flags, name: string): boolean {
  return Object.hasOwn(flags, name) && flags[name]!.type === "string";
}

/**
 * `args` split into flags and positionals as `parseArgs` splits them: `--` ends the flags, `-abc`
 * is `-a -b -c` up to the first letter that takes a value (the rest is its value), a flag that
 * takes a value takes the next argument whatever it is.
 */
function tokenize(flags: Flags, args: readonly string[]): (FlagToken | string)[] {
  const tokens: (FlagToken | string)[] = [];
  const rest = [...args];
  while (rest.length > 0) {
    const arg = rest.shift()!;
    if (arg === "--") {
      tokens.push(...rest);
      break;
    }
    const short = arg.length >= 2 && arg[0] === "-" && arg[1] !== "-";
    if (short && arg.length === 2) {
      const name = longName(flags, arg[1]!);
      const value = takesValue(flags, name) && rest.length > 0 ? rest.shift() : undefined;
      tokens.push({ name, rawName: arg, value, inline: false });
    } else if (short) {
      const name = longName(flags, arg[1]!);
      if (takesValue(flags, name)) {
        tokens.push({ name, rawName: `-${arg[1]}`, value: arg.slice(2), inline: true });
        continue;
      }
      const expanded: string[] = [];
      for (let i = 1; i < arg.length; i++) {
        if (!takesValue(flags, longName(flags, arg[i]!)) || i === arg.length - 1) {
          expanded.push(`-${arg[i]}`);
        } else {
          expanded.push(`-${arg.slice(i)}`);
          break;
        }
      }
      rest.unshift(...expanded);
    } else if (arg.length > 2 && arg.startsWith("--")) {
      const equals = arg.indexOf("=", 3);
      if (equals === -1) {
        const name = arg.slice(2);
        const value = takesValue(flags, name) && rest.length > 0 ? rest.shift() : undefined;
        tokens.push({ name, rawName: arg, value, inline: false });
      } else {
        const name = arg.slice(2, equals);
        tokens.push({ name, rawName: `--${name}`, value: arg.slice(equals + 1), inline: true });
      }
    } else {
      tokens.push(arg);
    }
  }
  return tokens;
}

/**
 * Whether the option `arg` takes the argument after it as its value under `flags`, as the parser
 * reads it: `--vm` and `-c` do, `--vm=NAME`, `--json` and an unknown option do not.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * import { CONNECT_FLAG, takesNextArgument } from "./flags.ts";
 * assertEquals(takesNextArgument(CONNECT_FLAG, "-c"), true);
 * assertEquals(takesNextArgument(CONNECT_FLAG, "--connect=test:///default"), false);
 * assertEquals(takesNextArgument(CONNECT_FLAG, "--allow-uri-programs"), false);
 * ```
 */
export function takesNextArgument(flags: Flags, arg: string): boolean {
  // The empty string stands for the next argument: an inline value is never taken from it.
  return tokenize(flags, [arg, ""]).some((token) =>
    typeof token !== "string" && !token.inline && token.value === ""
  );
}

/** The usage error of a flag `parseArgs`'s strict mode refuses, or nothing. */
function checkFlag(flags: Flags, token: FlagToken): void {
  if (!Object.hasOwn(flags, token.name)) {
    throw new UsageError(`Unknown option '${token.rawName}'`);
  }
  const flag = flags[token.name]!;
  const both = `${flag.short === undefined ? "" : `-${flag.short}, `}--${token.name}`;
  if (flag.type === "string" && token.value === undefined) {
    throw new UsageError(`Option '${both} <value>' argument missing`);
  }
  if (flag.type === "boolean" && token.value !== undefined) {
    throw new UsageError(`Option '${both}' does not take an argument`);
  }
  const value = token.value;
  if (!token.inline && value !== undefined && value.length > 1 && value[0] === "-") {
    const example = token.rawName.startsWith("--")
      ? `'${token.rawName}=-XYZ'`
      : `'--${token.name}=-XYZ' or '${token.rawName}-XYZ'`;
    throw new UsageError(
      `Option '${token.rawName}' argument is ambiguous.\nDid you forget to specify the option ` +
        `argument for '${token.rawName}'?\nTo specify an option argument starting with a dash ` +
        `use ${example}.`,
    );
  }
}

/**
 * `args` parsed against `flags` as `parseArgs` does in strict mode with positionals allowed:
 * booleans are `false` unless given, a repeatable flag's values are collected, otherwise the
 * last value wins.
 */
function parseFlags(
  flags: Flags,
  args: readonly string[],
): { values: Record<string, unknown>; positionals: string[] } {
  const values: Record<string, unknown> = Object.create(null);
  const positionals: string[] = [];
  for (const token of tokenize(flags, args)) {
    if (typeof token === "string") {
      positionals.push(token);
      continue;
    }
    // An unknown name (`__proto__` too) throws here.
    checkFlag(flags, token);
    const value = token.value ?? true;
    const flag = flags[token.name]!;
    if (flag.type === "string" && flag.multiple === true) {
      ((values[token.name] ??= []) as unknown[]).push(value);
    } else {
      values[token.name] = value;
    }
  }
  // Beyond parseArgs: an empty value names nothing (`--state-dir "$UNSET"` would otherwise mean
  // the working directory, `--connect ''` libvirt's default).
  for (const [name, value] of Object.entries(values)) {
    if (value === "" || (Array.isArray(value) && value.includes(""))) {
      throw new UsageError(`Option '--${name}' needs a value, not an empty string`);
    }
  }
  for (const [name, flag] of Object.entries(flags)) {
    if (flag.type === "boolean" && values[name] === undefined) values[name] = false;
  }
  return { values, positionals };
}

/** Parses `args` against `spec` strictly: unknown flags, stray or missing arguments throw. */
function parseCommandLine<S extends CommandSpec | SubcommandSpec>(
  spec: S,
  flags: Flags,
  args: string[],
): ParsedLine<S> {
  const parsed = parseFlags(flags, args);
  const declared = spec.positionals ?? [];
  const variadic = declared.at(-1)?.variadic === true;
  if (!variadic && parsed.positionals.length > declared.length) {
    throw new UsageError(`Unexpected argument "${parsed.positionals[declared.length]}"`);
  }
  // A required argument given empty (`snapshot ""`, an unset variable) names nothing either.
  declared.forEach((positional, i) => {
    if (positional.missing !== undefined && (parsed.positionals[i] ?? "") === "") {
      throw new UsageError(positional.missing);
    }
  });
  // The values follow the spec's flags (booleans default to false), so the spec types each one.
  return { values: parsed.values, positionals: parsed.positionals } as unknown as ParsedLine<S>;
}

/**
 * `args` parsed against `spec`'s flags and arguments, by the rules and with the usage errors
 * ({@link UsageError}) of every command's line, for a script that takes some of the CLI's flags
 * (`examples/drift_check.ts`: `--sysfs` and `--connect`). Neither `--help` nor
 * `--color` is added; a spec with subcommands is refused.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "../tests/helpers/assert.ts";
 * import { UsageError } from "./context.ts";
 * import { HOST_FLAGS, parseCommand } from "./flags.ts";
 *
 * const spec = {
 *   name: "check",
 *   summary: "check a tree",
 *   flags: { ...HOST_FLAGS },
 *   positionals: [{ name: "CONFIG" }],
 *   about: "Checks CONFIG against a tree.",
 * } as const;
 * const { values, positionals } = parseCommand(spec, ["c.yaml", "--sysfs=/tmp/tree"]);
 * assertEquals([values.sysfs, positionals[0]], ["/tmp/tree", "c.yaml"]);
 * assertThrows(() => parseCommand(spec, ["c.yaml", "/tmp/tree"]), UsageError);
 * ```
 */
export function parseCommand<S extends CommandSpec>(spec: S, args: string[]): Parsed<S> {
  if (spec.subcommands !== undefined) {
    throw new TypeError(`"${spec.name}" has subcommands: parse it with defineCommand`);
  }
  // As in defineCommand: the parse follows the spec, so it is the spec's Parsed.
  return parseCommandLine(spec, spec.flags, args) as Parsed<S>;
}

/**
 * The usage error of a flag in `args` that another subcommand of `spec` takes but `sub` does not
 * (`hook remove --json`), naming those that take it; `null` when there is none, or when `args`
 * does not parse even against every subcommand's flags (`sub`'s own parse says why).
 */
function otherSubcommandsFlag(
  spec: CommandSpec,
  sub: SubcommandSpec,
  all: Flags,
  args: readonly string[],
): string | null {
  let given: Record<string, unknown>;
  try {
    given = parseFlags(all, args).values;
  } catch {
    return null;
  }
  const name = Object.keys(given).find((key) =>
    given[key] !== false && !Object.hasOwn(sub.flags, key) && !Object.hasOwn(COLOR_FLAG, key) &&
    !Object.hasOwn(HELP_FLAG, key)
  );
  if (name === undefined) return null;
  const takers = (spec.subcommands ?? []).filter((c) => Object.hasOwn(c.flags, name))
    .map((c) => `${spec.name} ${c.name}`);
  return `Option '--${name}' is for ${takers.join(" and ")}, not ${spec.name} ${sub.name}`;
}

/**
 * Parses `args` against the subcommand its first argument names. Flags before any subcommand are
 * parsed against every subcommand's, so an unknown one is reported as such.
 */
function parseSubcommandLine(
  spec: CommandSpec,
  subcommands: readonly SubcommandSpec[],
  all: Flags,
  args: string[],
): ParsedSubcommand<SubcommandSpec> {
  const [name, ...rest] = args;
  const names = subcommands.map((c) => c.name);
  const list = names.length === 1
    ? names[0]!
    : `${names.slice(0, -1).join(", ")} or ${names.at(-1)}`;
  if (name === undefined || name.startsWith("-")) {
    parseCommandLine({ ...spec, positionals: [] }, all, args);
    throw new UsageError(`Missing the subcommand: ${list}`);
  }
  const sub = subcommands.find((c) => c.name === name);
  if (sub === undefined) {
    const meant = subcommands.find((c) => c.otherNames?.includes(name.toLowerCase()));
    const hint = meant === undefined ? didYouMean(name, names) : ` (did you mean "${meant.name}"?)`;
    throw new UsageError(`Unknown subcommand "${name}"${hint}: ${list}`);
  }
  // The run's line comes from a hook, whose own hint says what to do; a user's line is told
  // which subcommands take a flag the help lists.
  const elsewhere = sub.usageHint === undefined ? otherSubcommandsFlag(spec, sub, all, rest) : null;
  if (elsewhere !== null) throw new UsageError(elsewhere);
  try {
    const line = parseCommandLine(sub, { ...sub.flags, ...COLOR_FLAG }, rest);
    return { subcommand: sub.name, ...line };
  } catch (error) {
    if (!(error instanceof UsageError) || sub.usageHint === undefined) throw error;
    throw new UsageError(`${error.message}: ${sub.usageHint}`);
  }
}

/**
 * The {@link Command} of `spec`: its flags now, its help when first read, its module only when it
 * runs (after its command line parsed), so `--help` and usage errors never load what the command
 * uses.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * import { defineCommand, HOST_FLAGS } from "./flags.ts";
 *
 * const spec = {
 *   name: "count",
 *   summary: "count the host's PCI devices",
 *   flags: { ...HOST_FLAGS },
 *   about: "Prints how many PCI functions the host has.",
 * } as const;
 * const command = defineCommand(spec, () =>
 *   Promise.resolve(({ values }, io) => {
 *     io.out(`${values.sysfs ?? "/sys"}\n`);
 *     return Promise.resolve(0);
 *   }));
 * assertEquals(Object.keys(command.flags), ["sysfs", "color", "help"]);
 * assertEquals(command.help.split("\n")[0], "Usage: passthrough count [options]");
 * ```
 */
export function defineCommand<S extends CommandSpec>(
  spec: S,
  load: () => Promise<Run<S>>,
): Command {
  const subcommands = spec.subcommands;
  const flags: Flags = {
    ...(subcommands === undefined ? spec.flags : subcommandFlags(spec, subcommands)),
    ...COLOR_FLAG,
    ...HELP_FLAG,
  };
  // Built on first use: every start builds the whole command table, and runs one command.
  let help: string | undefined;
  const parse = (args: string[]) =>
    subcommands === undefined
      ? parseCommandLine(spec, flags, args)
      : parseSubcommandLine(spec, subcommands, flags, args);
  return {
    name: spec.name,
    summary: spec.summary,
    get help() {
      return help ??= commandHelp(spec, flags);
    },
    flags,
    async run(args: string[], io: CliIo): Promise<number> {
      // The parse follows the spec, so it is the spec's Parsed (see parseCommandLine).
      const parsed = parse(args) as Parsed<S>;
      // `main` answers `-h` and `--help` given alone; one in a bundle (`apply -yh`) is seen only
      // here, and must show the help, never run the command the user asked about.
      if ((parsed.values as { help?: boolean }).help === true) {
        io.out(help ??= commandHelp(spec, flags));
        return 0;
      }
      const run = await load();
      return run(parsed, io);
    },
  };
}
