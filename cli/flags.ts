/**
 * Flags declared once. A command's {@link CommandSpec} names its flags and arguments; from it
 * {@link defineCommand} derives the `node:util` `parseArgs` options, the help text (usage line,
 * options aligned and wrapped at 100 columns) and the usage errors (`main` prints them with the
 * help, exit 2). Flags several commands take are declared here once, in groups.
 *
 * Only `node:util` is imported, so the command table and every `--help` stay light.
 *
 * @module
 */

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { type CliIo, type Command, UsageError } from "./context.ts";

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
}

type FlagValue<F> = F extends BooleanFlag ? boolean
  : F extends { multiple: true } ? string[] | undefined
  : string | undefined;

/** The parsed values of `F`, by flag name. */
export type FlagValues<F extends Flags> = { -readonly [K in keyof F]: FlagValue<F[K]> };

type PositionalValues<P extends readonly Positional[]> = {
  -readonly [I in keyof P]: P[I] extends { missing: string } ? string : string | undefined;
};

/** A command line parsed against the command `S`: required positionals are present. */
export interface Parsed<S extends CommandSpec> {
  values: FlagValues<S["flags"]>;
  positionals: S extends { positionals: infer P extends readonly Positional[] }
    ? PositionalValues<P>
    : [];
}

/** What a command does, given its parsed command line; returns the exit code. */
export type Run<S extends CommandSpec> = (parsed: Parsed<S>, io: CliIo) => Promise<number>;

/** `-h, --help`, which every command takes (`main` answers it before parsing). */
export const HELP_FLAG = {
  help: { type: "boolean", short: "h", help: "show this help" },
} as const satisfies Flags;

/** `--sysfs DIR`: discover from a captured tree instead of this host. */
export const HOST_FLAGS = {
  sysfs: {
    type: "string",
    value: "DIR",
    help: "read a tree captured with 'passthrough snapshot' instead of /sys",
  },
} as const satisfies Flags;

/** `-c, --connect URI`: the libvirt to open, for every command that opens one. */
export const CONNECT_FLAG = {
  connect: {
    type: "string",
    short: "c",
    value: "URI",
    help: "libvirt URI (default: $LIBVIRT_DEFAULT_URI or libvirt's default)",
  },
} as const satisfies Flags;

/** What `plan` and `apply` take to compute a plan (see `cli/plan_options.ts`). */
export const PLAN_FLAGS = {
  config: {
    type: "string",
    short: "f",
    value: "FILE",
    help: "config file (default: $PASSTHROUGH_CONFIG or ./passthrough_config.yaml)",
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

/** `--state-dir DIR`: where backups and the lock live. */
export const STATE_FLAGS = {
  "state-dir": {
    type: "string",
    value: "DIR",
    help: "backups and lock (default: $PASSTHROUGH_STATE_DIR or /var/lib/passthrough)",
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

/** The full help of `spec`, whose flags with `--help` are `flags`. */
function commandHelp(spec: CommandSpec, flags: Flags): string {
  const args = (spec.positionals ?? []).map((p) =>
    p.missing === undefined ? `[${p.name}]` : p.name
  );
  return [
    `Usage: passthrough ${[spec.name, ...args].join(" ")} [options]`,
    "",
    spec.about.trimEnd(),
    "",
    "Options:",
    optionsHelp(flags),
    ...(spec.notes === undefined ? [] : ["", spec.notes.trimEnd()]),
    "",
  ].join("\n");
}

/** `flags` as `parseArgs` options; booleans default to `false`. */
function parseOptions(flags: Flags): ParseArgsOptionsConfig {
  return Object.fromEntries(
    Object.entries(flags).map(([name, flag]) => {
      const short = flag.short === undefined ? {} : { short: flag.short };
      return [
        name,
        flag.type === "boolean"
          ? { type: "boolean", default: false, ...short }
          : { type: "string", multiple: flag.multiple ?? false, ...short },
      ];
    }),
  );
}

/** Parses `args` against `spec` strictly: unknown flags, stray or missing arguments throw. */
function parseCommandLine<S extends CommandSpec>(
  spec: S,
  options: ParseArgsOptionsConfig,
  args: string[],
): Parsed<S> {
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: true });
  } catch (error) {
    // Node's advice on `--` fits no command here: none takes an argument starting with a dash.
    throw new UsageError((error as Error).message.replace(/\. To specify.*$/s, ""));
  }
  const declared = spec.positionals ?? [];
  if (parsed.positionals.length > declared.length) {
    throw new UsageError(`Unexpected argument "${parsed.positionals[declared.length]}"`);
  }
  declared.forEach((positional, i) => {
    if (positional.missing !== undefined && parsed.positionals[i] === undefined) {
      throw new UsageError(positional.missing);
    }
  });
  // parseArgs types its result from a literal options object; these options are built from the
  // spec by parseOptions (booleans default to false), so the spec types each value.
  return { values: parsed.values, positionals: parsed.positionals } as unknown as Parsed<S>;
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
 * assertEquals(Object.keys(command.flags), ["sysfs", "help"]);
 * assertEquals(command.help.split("\n")[0], "Usage: passthrough count [options]");
 * ```
 */
export function defineCommand<S extends CommandSpec>(
  spec: S,
  load: () => Promise<Run<S>>,
): Command {
  const flags: Flags = { ...spec.flags, ...HELP_FLAG };
  // Both are built on first use: every start builds the whole command table, and runs one command.
  let help: string | undefined;
  let options: ParseArgsOptionsConfig | undefined;
  return {
    name: spec.name,
    summary: spec.summary,
    get help() {
      return help ??= commandHelp(spec, flags);
    },
    flags,
    async run(args: string[], io: CliIo): Promise<number> {
      const parsed = parseCommandLine(spec, options ??= parseOptions(flags), args);
      const run = await load();
      return run(parsed, io);
    },
  };
}
