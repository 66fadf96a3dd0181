/**
 * Words for `sh`: what the hook script runs, and the commands printed for users to run.
 *
 * @module
 */

import { redactSecrets } from "../domain/secrets.ts";

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
 * `command VALUE WORDS...` printed for the user, VALUE one positional argument as
 * {@link shellWord} writes it and `words` already written for `sh`; when VALUE starts with `-`,
 * which the parser would otherwise read as an option, the words come first and VALUE last, after
 * `--`.
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
  words: readonly string[] = [],
): string {
  return value.startsWith("-")
    ? [command, ...words, "--", shellWord(value)].join(" ")
    : [command, shellWord(value), ...words].join(" ");
}

/**
 * The flags of this run that a printed follow-up command repeats, as the user typed them (what
 * came from the environment carries over by itself): `passthrough backups VM` printed by a
 * `rollback --state-dir /srv/pt` lists another directory's backups without its `--state-dir`,
 * and `passthrough plan` printed by an `apply -c qemu+ssh://hv2/system` reads another libvirt.
 */
export interface RunFlags {
  /** `-f, --config FILE`. */
  config?: string | undefined;
  /** `--host NAME`. */
  host?: string | undefined;
  /** `--sysfs DIR`. */
  sysfs?: string | undefined;
  /** `-c, --connect URI`. */
  connect?: string | undefined;
  /** `--allow-uri-programs`, which the same `--connect` needs again. */
  allowUriPrograms?: boolean | undefined;
  /** `--state-dir DIR`. */
  stateDir?: string | undefined;
  /** `--libvirt-timeout N`: a daemon this run waited longer for makes the next one wait too. */
  libvirtTimeout?: string | undefined;
}

/** A command {@link followUpCommand} prints. */
export type FollowUp =
  | "passthrough plan"
  | "passthrough devices"
  | "passthrough backups"
  | "passthrough rollback"
  | "passthrough guard allow"
  | "passthrough doctor";

/**
 * The {@link RunFlags} that change what each follow-up does, so it must repeat them: the config,
 * tree and libvirt a plan reads, the tree `devices` lists, the state directory of backups and
 * of the start guard's allowances (and the libvirt its VM is read from), the tree and libvirt
 * `doctor` checks; and how long a libvirt call may take, for each command that opens libvirt.
 */
const FOLLOW_UP_FLAGS: Record<FollowUp, readonly (keyof RunFlags)[]> = {
  "passthrough plan": ["config", "host", "sysfs", "connect", "libvirtTimeout"],
  "passthrough devices": ["sysfs"],
  "passthrough backups": ["stateDir"],
  "passthrough rollback": ["connect", "libvirtTimeout", "stateDir"],
  "passthrough guard allow": ["connect", "stateDir"],
  "passthrough doctor": ["sysfs", "connect", "libvirtTimeout"],
};

/** The flags whose property in {@link RunFlags} is not their name. */
const FLAG_NAMES: Partial<Record<keyof RunFlags, string>> = {
  stateDir: "state-dir",
  libvirtTimeout: "libvirt-timeout",
};

/**
 * `command` as the user should run it next: `VALUE` (one positional, quoted for `sh`, last and
 * after `--` when it starts with `-`), `options` (`[FLAG, VALUE]` pairs), then those of `run`'s
 * flags that `command` takes, so it reads the same config, tree, libvirt and state directory as
 * this run. A URI with a password is never printed to re-run with: `-c URI` stands in for it, and
 * the text says so.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const run = { connect: "qemu+ssh://hv2/system", stateDir: "/srv/pt state", sysfs: "/t" };
 * assertEquals(
 *   followUpCommand(run, "passthrough rollback", { value: "win 11", options: [["--to", "ID"]] }),
 *   "passthrough rollback 'win 11' --to ID -c qemu+ssh://hv2/system --state-dir '/srv/pt state'",
 * );
 * assertEquals(
 *   followUpCommand(run, "passthrough backups"),
 *   "passthrough backups --state-dir '/srv/pt state'",
 * );
 * assertEquals(
 *   followUpCommand({}, "passthrough plan", { options: [["--vm", "-lab"]] }),
 *   "passthrough plan --vm=-lab",
 * );
 * assertEquals(
 *   followUpCommand({ connect: "qemu+tcp://admin:pw@hv9/system" }, "passthrough plan"),
 *   "passthrough plan -c URI (your URI: this run's holds a password, not repeated here)",
 * );
 * ```
 */
export function followUpCommand(
  run: RunFlags | undefined,
  command: FollowUp,
  options: { value?: string; options?: readonly (readonly [string, string])[] } = {},
): string {
  const words = (options.options ?? []).map(([flag, value]) => flagWord(flag, value));
  let secret = false;
  for (const flag of FOLLOW_UP_FLAGS[command]) {
    // Whatever named the URI (-c, a config's `connect:`, $LIBVIRT_DEFAULT_URI), one that runs a
    // program is refused again without it.
    if (flag === "connect" && run?.allowUriPrograms === true) words.push("--allow-uri-programs");
    const value = run?.[flag];
    if (typeof value !== "string") continue;
    if (flag === "connect") {
      secret = redactSecrets(value) !== value;
      // `-c VALUE`, or `--connect=VALUE`: the short flag has no `=` form.
      const shown = secret ? "URI" : value;
      words.push(flagWord(shown.startsWith("-") ? "--connect" : "-c", shown));
    } else {
      const name = `--${FLAG_NAMES[flag] ?? flag}`;
      words.push(flagWord(name, value));
    }
  }
  const text = options.value === undefined
    ? [command, ...words].join(" ")
    : positionalCommand(command, options.value, words);
  return secret ? `${text} (your URI: this run's holds a password, not repeated here)` : text;
}
