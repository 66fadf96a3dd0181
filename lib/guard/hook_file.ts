/**
 * The hook executable libvirt runs from `/etc/libvirt/hooks/qemu.d/`: a few lines of `sh` whose
 * fast path exits 0 at once for every operation but `prepare begin` (libvirt runs hooks for
 * every start, stop, migration and daemon restart, and a failure at `reconnect` kills running
 * guests), and otherwise runs `passthrough hook run` under a deadline (libvirt has none: a hung
 * hook hangs the start). Every program is named by the absolute path found at install time,
 * because libvirt gives hooks only `LC_ALL` and `PATH`; the check's standard output goes to
 * `/dev/null`, because for `migrate` and `restore` libvirt takes a hook's output as the new XML.
 *
 * The script carries its settings on one comment line (`# passthrough-hook: {...}`), which
 * `hook status` and `doctor` read back.
 *
 * @module
 */

import { dirname, join, realPathOfExisting, resolve } from "../state/paths.ts";
import { shellQuote, shellWord } from "../render/shell.ts";
import { errorText } from "../render/error_text.ts";
import {
  DEFAULT_STATE_DIR,
  readOwnFileSync,
  resolveStateDirPath,
  StateDirError,
  syncDir,
  writeAllSync,
} from "../state/state_dir.ts";
import { sha256Hex } from "../state/sha256.ts";
import type { SysfsReader } from "../host/sysfs.ts";
import { DEFAULT_HOOKS_DIR } from "./layout.ts";
import { isSystemQemuUri } from "../config/uri.ts";

export { DEFAULT_HOOKS_DIR };

/**
 * Whether libvirt's system daemon runs the hooks in `dir`: {@link DEFAULT_HOOKS_DIR} by any
 * spelling or link (a hook elsewhere guards nothing, though it may look installed).
 */
export function readByLibvirt(dir: string): boolean {
  return samePath(dir, DEFAULT_HOOKS_DIR);
}

/** Whether two paths name one file by any spelling or link (lexically, where one is missing). */
function samePath(a: string, b: string): boolean {
  const real = (path: string) => {
    try {
      return Deno.realPathSync(path);
    } catch {
      return resolve(path);
    }
  };
  return real(a) === real(b);
}

/** The hook's file name: libvirt runs the directory's executables in name order. */
export const HOOK_FILE_NAME = "50-passthrough-guard";

/**
 * What the guard sees, for `hook status` and `doctor`: libvirt runs `prepare begin` at every
 * launch of a VM's QEMU (start, create, restore, snapshot revert, autostart, incoming migration),
 * and no hook at all when it detaches a device from the host into a running guest or by hand.
 */
export const GUARD_SCOPE =
  "starts only; a hot-plug (virsh attach-device --live) and virsh nodedev-detach run no hook";

/** How long the check may take before the start is refused. */
export const DEFAULT_DEADLINE_SECONDS = 10;

/** The longest deadline `hook install --deadline` takes. */
export const MAX_DEADLINE_SECONDS = 600;

/** Where coreutils' `timeout` is looked for. */
const TIMEOUT_CANDIDATES = ["/usr/bin/timeout", "/bin/timeout"] as const;

/** The settings written into the hook (and read back from it). */
export interface HookSettings {
  /** The passthrough version that wrote the hook. */
  version: string;
  /** Seconds the check may take. */
  deadline: number;
  /** Absolute path of coreutils' `timeout`. */
  timeout: string;
  /** The check's command line, program first, all paths absolute. */
  command: string[];
  /**
   * Environment given to the check: `DENO_DIR`, in the state directory (`deno/`), so that the
   * check's code cache is not found through whatever `HOME` libvirt passes, and `HOME`, the same
   * directory, so that Deno reads no `.npmrc` of libvirt's HOME (one it cannot read stops it).
   */
  env: Record<string, string>;
  /** The state directory the check reads allowances from and records refusals in. */
  stateDir: string;
  /** The sysfs root the check reads. */
  sysfs: string;
}

const SETTINGS_PREFIX = "# passthrough-hook: ";

/**
 * The revision of the script {@link renderHookScript} writes, on a line of its own (a hook
 * without one is revision 1): a hook whose text differs from what this version writes for its
 * settings was written by an older passthrough when its revision is lower, else changed by hand.
 */
export const HOOK_FORMAT = 12;
const FORMAT_LINE = /^# passthrough-hook-format: (\d+)$/m;

/**
 * The hook script. Exit codes: 0 lets the start go on; 1 stops it (a refusal, a deadline, a
 * check that cannot run or that a signal ended). Nothing is ever written to standard output.
 *
 * @example
 * ```ts
 * import { assertEquals, assertMatch } from "../../tests/helpers/assert.ts";
 * const settings = { version: "0.1.0", deadline: 10, timeout: "/usr/bin/timeout",
 *   command: ["/usr/bin/deno", "run", "/opt/pt/main.ts", "hook", "run"], env: {},
 *   stateDir: "/var/lib/passthrough", sysfs: "/sys" };
 * const script = renderHookScript(settings);
 * assertMatch(script, /^#!\/bin\/sh\n/);
 * assertEquals(parseHookSettings(script), settings);
 * ```
 */
export function renderHookScript(settings: HookSettings): string {
  const env = Object.entries(settings.env).map(([k, v]) => `${k}=${shellQuote(v)} `).join("");
  const command = settings.command.map(shellQuote).join(" ");
  const deadline = String(settings.deadline);
  // libvirt runs hooks only from its own directory: the command leaves --hooks-dir out.
  const reinstall = shellQuote(installCommand({ path: "", settings }, { hooksDir: false }));
  const longer = longerDeadlineAdvice(settings);
  const files = hookCode(settings).files.map(shellQuote).join(" ");
  return `#!/bin/sh
# passthrough start guard: refuses to start a VM when a passed-through PCI address now holds
# another device than the one recorded, nothing, or a device the host needs.
# Written by "passthrough hook install"; "passthrough hook remove" deletes it.
# Only "prepare begin" runs the check; every other operation exits 0 at once.
${SETTINGS_PREFIX}${JSON.stringify(settings)}
# passthrough-hook-format: ${HOOK_FORMAT}
[ "$2" = prepare ] && [ "$3" = begin ] || exit 0
# What the check creates is root's alone, the state directory too when it was deleted (Deno's
# cache in it is made with its parents): under libvirt's umask (022) it would be 0755.
umask 077
# The check is told this hook's directory, for the "passthrough hook status" its refusals name:
# without --hooks-dir that reads libvirt's default one, not where this hook was installed. What it
# says is kept, then passed on: a check that ran says it in lines of its own ("passthrough ..."),
# unlike a Deno that stopped before it (a .npmrc it cannot read, a module gone), naming no VM.
said=$(${env}NO_COLOR=1 DENO_NO_UPDATE_CHECK=1 ${shellQuote(settings.timeout)} -k 2 ${deadline} \\
  ${command} --hooks-dir "\${0%/*}" -- "$1" "$2" "$3" "$4" 2>&1 >/dev/null)
status=$?
[ -n "$said" ] && printf '%s\\n' "$said" >&2
[ $status -eq 0 ] && exit 0
# The lines below name the VM: not one with a terminal's controls, C0 or, as UTF-8 bytes, C1, the
# line separators, the bidirectional controls and the characters that show nothing (soft hyphen,
# zero-width space, word joiner, U+FEFF, the combining grapheme joiner, Hangul fillers, variation
# selectors but the emoji and text ones, tags), all of which terminalSafe escapes in the CLI.
LC_ALL=C
c1=$(printf '\\302[\\200-\\237\\255]') bidi=$(printf '\\342\\200[\\213\\216\\217\\250-\\256]')
isolate=$(printf '\\342\\201[\\240-\\244\\246-\\257]') alm=$(printf '\\330\\234')
bom=$(printf '\\357\\273\\277') cgj=$(printf '\\315\\217') tag=$(printf '\\363\\240')
fill=$(printf '\\341\\205[\\237\\240]') khmer=$(printf '\\341\\236[\\264\\265]')
mongol=$(printf '\\341\\240[\\213-\\217]') fill2=$(printf '\\343\\205\\244')
vs=$(printf '\\357\\270[\\200-\\215]') fill3=$(printf '\\357\\276\\240')
short=$(printf '\\360\\233\\262[\\240-\\243]') music=$(printf '\\360\\235\\205[\\263-\\272]')
case $1 in
  *[[:cntrl:]]* | *$c1* | *$bidi* | *$isolate* | *$alm* | *$bom* | *$cgj* | *$tag* | *$fill* | \\
    *$khmer* | *$mongol* | *$fill2* | *$vs* | *$fill3* | *$short* | *$music*)
  set -- "(a name with control characters)" ;;
esac
# Quotes $1 for sh into $quoted, by the shell alone (no sed: libvirt's PATH may have none).
quote() {
  rest=$1 quoted=
  while :; do
    case $rest in
      *"'"*) quoted=$quoted\${rest%%"'"*}"'\\\\''"; rest=\${rest#*"'"} ;;
      *) quoted=$quoted$rest; break ;;
    esac
  done
}
see='passthrough hook status'
case \${0%/*} in
  ${DEFAULT_HOOKS_DIR}) ;;
  *[!A-Za-z0-9_./:@%+=,-]*) quote "\${0%/*}"; see="$see --hooks-dir '$quoted'" ;;
  *) see="$see --hooks-dir \${0%/*}" ;;
esac
# Only where the run failed at once (not a deadline, whose cause may be a mount that hangs, and
# would hang this look too): a program or check file that is gone is named. Where passthrough
# was deleted, "hook install" is gone with it: this hook's own path is the way out.
case $status in 1 | 125 | 126 | 127)
  for file in ${files}; do
    if [ ! -e "$file" ]; then
      quote "$0"
      hook=$quoted
      printf 'passthrough guard: refusing to start "%s": %s is missing (the check cannot run): restore it (scripts/setup.sh in passthrough'"'"'s clone, or the Ansible playbook again); if passthrough moved, reinstall with "%s" from where it is now; if it was removed, remove this hook: rm '"'"'%s'"'"'\\n' "$1" "$file" ${reinstall} "$hook" >&2
      exit 1
    fi
  done
${cacheChecks(settings)}  ;;
esac
case $status in
  124)
    printf 'passthrough guard: refusing to start "%s": the check did not finish within %s s (failing closed): a heavily loaded host, or the first start after an install or a Deno upgrade (the check is compiled then), can take longer%s; see "%s"\\n' "$1" ${deadline} ${
    shellQuote(longer === null ? "" : `; to give it longer: ${longer}`)
  } "$see" >&2
    exit 1 ;;
  137)
    printf 'passthrough guard: refusing to start "%s": the check was killed (SIGKILL): it did not finish within %s s, or the system ended it (out of memory?) (failing closed)%s; see "%s"\\n' "$1" ${deadline} ${
    shellQuote(longer === null ? "" : `; if it was the deadline, give it longer: ${longer}`)
  } "$see" >&2
    exit 1 ;;
  125 | 126 | 127)
    printf 'passthrough guard: refusing to start "%s": cannot run the check (exit %s); reinstall with "%s"\\n' "$1" "$status" ${reinstall} >&2
    exit 1 ;;
  *)
    if [ "$status" -gt 128 ]; then
      printf 'passthrough guard: refusing to start "%s": the check was ended by signal %s (failing closed)\\n' "$1" $((status - 128)) >&2
      exit 1
    fi
${stoppedCheck(settings)}    exit 1 ;;
esac
`;
}

/**
 * The hook's lines that say, after what `deno run` said, that it stopped before the check ran (a
 * `.npmrc` it cannot read, a module gone: in words naming no VM), where the check did not speak
 * (its lines begin "passthrough "). A compiled binary (`hook run`) has no such step of its own.
 */
function stoppedCheck(settings: HookSettings): string {
  if (settings.command[1] !== "run") return "";
  return `    case "
$said" in
      *"
passthrough "*) ;;
      *) printf 'passthrough guard: refusing to start "%s": the check could not run: Deno stopped before it, as said above (failing closed); see "%s", which says why\\n' "$1" "$see" >&2 ;;
    esac
`;
}

/**
 * The `hook install` that gives the check a longer deadline (thrice this one, 30 s at least, 600
 * at most), quoted for the refusal that a deadline ends; `null` at the longest already.
 */
function longerDeadlineAdvice(settings: HookSettings): string | null {
  if (settings.deadline >= MAX_DEADLINE_SECONDS) return null;
  const deadline = Math.min(MAX_DEADLINE_SECONDS, Math.max(30, settings.deadline * 3));
  return `"${
    installCommand({ path: "", settings: { ...settings, deadline } }, { hooksDir: false })
  }"`;
}

/**
 * What may stand where `deno run` of the check keeps Deno's cache: the cache (`DENO_DIR`) and the
 * state directory it is in, each with its name in the hook's lines and `hook status`.
 */
function cacheDirs(settings: HookSettings): [string, string][] {
  const denoDir = settings.env.DENO_DIR;
  // Only `deno run` is known to stop there: a compiled binary (`hook run`) runs the check itself,
  // whose own lines say what it cannot read or record.
  if (denoDir === undefined || settings.command[1] !== "run") return [];
  // As the cache was joined under it: an absolute --state-dir is kept as written ("/srv/pt/"), so
  // the hook would name no file there, and the fix would move it into itself ("/srv/pt/.aside").
  const dirs: [string, string][] = [
    [resolve(settings.stateDir), "its state directory"],
    [denoDir, "its Deno cache"],
  ];
  return dirs.filter(([dir]) => dir === denoDir || denoDir.startsWith(`${dir}/`));
}

/**
 * The hook's lines that name a file standing where the check's Deno cache goes: Deno then stops
 * (exit 1) before the check runs, in words naming neither the VM nor the file ("Error loading
 * .npmrc").
 */
function cacheChecks(settings: HookSettings): string {
  return cacheDirs(settings).map(([dir, what]) => {
    const path = shellQuote(dir);
    return `  if [ -e ${path} ] && [ ! -d ${path} ]; then
    printf 'passthrough guard: refusing to start "%s": %s %s is not a directory, so the check cannot run (Deno keeps its cache there); move that file aside, and the next start makes the directory again; see "%s"\\n' "$1" ${
      shellQuote(what)
    } ${path} "$see" >&2
    exit 1
  fi
`;
  }).join("");
}

/** The settings line of a hook script, or `null` when `text` is not a passthrough hook. */
export function parseHookSettings(text: string): HookSettings | null {
  const line = text.split("\n").find((l) => l.startsWith(SETTINGS_PREFIX));
  if (line === undefined) return null;
  try {
    const data = JSON.parse(line.slice(SETTINGS_PREFIX.length)) as HookSettings;
    const strings = (v: unknown) => Array.isArray(v) && v.every((s) => typeof s === "string");
    if (
      typeof data.version !== "string" || typeof data.deadline !== "number" ||
      typeof data.timeout !== "string" || !strings(data.command) ||
      typeof data.stateDir !== "string" || typeof data.sysfs !== "string" ||
      typeof data.env !== "object" || data.env === null
    ) {
      return null;
    }
    return data;
  } catch {
    return null;
  }
}

/**
 * Whether `text` is a hook some passthrough wrote: its settings line holds a JSON object, whose
 * fields may not be the ones this version reads ({@link parseHookSettings}: one written by
 * another version's settings). Such a hook is ours to replace and remove, never a user's own.
 */
function isPassthroughHook(text: string): boolean {
  return settingsObject(text) !== null;
}

/** The JSON object on the settings line of `text`, whatever its fields; else `null`. */
function settingsObject(text: string): Record<string, unknown> | null {
  const line = text.split("\n").find((l) => l.startsWith(SETTINGS_PREFIX));
  if (line === undefined) return null;
  try {
    const data = JSON.parse(line.slice(SETTINGS_PREFIX.length));
    return typeof data === "object" && data !== null && !Array.isArray(data) ? data : null;
  } catch {
    return null;
  }
}

/**
 * What `hook install` needs to write a hook again with its own settings (`--state-dir`,
 * `--deadline`, `--sysfs`), each where the hook holds it.
 */
export type InstallSettings = Partial<Pick<HookSettings, "stateDir" | "deadline" | "sysfs">>;

/**
 * The {@link InstallSettings} that a passthrough hook whose settings this version cannot read
 * whole (`isPassthroughHook`) still holds: the install that replaces it must keep its state
 * directory (where `apply` records the guard's policies), not take the default.
 */
function installSettingsOf(text: string): InstallSettings {
  const data = settingsObject(text) ?? {};
  return {
    ...(typeof data.stateDir === "string" ? { stateDir: data.stateDir } : {}),
    ...(typeof data.deadline === "number" ? { deadline: data.deadline } : {}),
    ...(typeof data.sysfs === "string" ? { sysfs: data.sysfs } : {}),
  };
}

/**
 * Why a passthrough hook whose settings this version cannot read (`isPassthroughHook`)
 * is a problem, for `hook status` and `doctor`.
 */
export function unreadableHookReason(format: number): string {
  return `written by another passthrough (hook format ${format}, this one writes ${HOOK_FORMAT}), ` +
    "whose settings this one cannot read: it may not check what it should";
}

/** Where the running program is, to build the check's command line from. */
export interface CheckProgram {
  /** `Deno.execPath()`: the deno binary, or the compiled passthrough binary. */
  execPath: string;
  /** `Deno.mainModule`: the CLI's entry (`main.ts` or the bundled `.js`). */
  mainModule: string;
  /** `Deno.build.standalone`: a `deno compile` binary, which runs the CLI itself. */
  standalone: boolean;
}

/**
 * The Deno permissions of the check. The CLI's `hook run` (`entry: "cli"`) reads `/sys` and
 * `/proc` through libc over FFI, and the state directory for allowances and refusal records;
 * a state directory whose path holds a comma, which Deno's permission lists cannot name, gets
 * unscoped reads and writes. The check's own entry (`entry: "check"`) reads them with Deno's
 * file calls, which Deno allows under `/sys` and `/proc` only with `--allow-all`: no more than
 * `--allow-ffi` grants (native code can do anything the process can), and it spares every start
 * the cost of binding libc.
 */
export function checkPermissions(stateDir: string, entry: "check" | "cli" = "cli"): string[] {
  if (entry === "check") return ["--allow-all"];
  const scope = stateDir.includes(",") ? "" : `=${stateDir}`;
  return ["--allow-ffi", `--allow-read${scope}`, `--allow-write${scope}`];
}

/**
 * V8's flags for the check's own entry, as `bin/passthrough` runs the CLI: its modules compiled
 * whole when loaded, so Deno's code cache (in DENO_DIR) holds all their functions and a start
 * compiles none, and no baseline compiler (Sparkplug), whose work a run this short never earns
 * back (docs/BENCHMARKS.md).
 */
const CHECK_V8_FLAGS = "--v8-flags=--no-lazy,--no-sparkplug";

/**
 * The check's command line: `deno run` of the check's own entry, `cli/hook_check.ts` beside a
 * checkout's `main.ts` or `hook/hook_check.js` beside a bundle (`deno task bundle` and
 * `scripts/bundle_bin.sh` write both: the check in chunks, so the state code loads only when a
 * start needs it), its code compiled eagerly, so that the code cache holds all of it; else of the
 * CLI itself with `hook run`. From a checkout with its `deno.json` (its compiler options and
 * lock file), a bundle with `--no-config` (it holds everything: no import map, lock file or npm
 * resolution to read at each start). Always without network or remote modules
 * (`--cached-only`) and with {@link checkPermissions}; or the compiled binary itself. The check
 * never spawns a program (the security test scans the sources for that).
 */
export function checkCommand(
  program: CheckProgram,
  options: { stateDir: string; sysfs: string },
): string[] {
  const tail = ["--state-dir", options.stateDir, "--sysfs", options.sysfs];
  if (program.standalone) return [program.execPath, "hook", "run", ...tail];
  if (!program.mainModule.startsWith("file:")) {
    throw new Error(`Cannot install the hook from "${program.mainModule}": not a local file`);
  }
  const main = decodeURIComponent(new URL(program.mainModule).pathname);
  const checkout = main.endsWith(".ts");
  const lean = checkout
    ? join(dirname(main), "cli", "hook_check.ts")
    : join(dirname(main), "hook", "hook_check.js");
  const [entry, args] = exists(lean) ? [lean, tail] : [main, ["hook", "run", ...tail]];
  // A checkout's modules are read under its deno.json; a bundle holds everything.
  const config = join(dirname(main), "deno.json");
  const useConfig = checkout && exists(config);
  return [
    program.execPath,
    "run",
    "--quiet",
    "--no-prompt",
    ...(useConfig ? ["--config", config] : ["--no-config"]),
    "--cached-only",
    ...(entry === lean ? [CHECK_V8_FLAGS] : []),
    ...checkPermissions(options.stateDir, entry === lean ? "check" : "cli"),
    entry,
    ...args,
  ];
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** coreutils' `timeout`: `/usr/bin/timeout`, else `/bin/timeout`; `null` when neither exists. */
export function findTimeout(): string | null {
  return TIMEOUT_CANDIDATES.find(exists) ?? null;
}

/** What {@link installHook} did. */
export interface InstallResult {
  /** The hook's path. */
  path: string;
  /** `false` when the same script was already there with mode 0755. */
  changed: boolean;
}

/** The largest hook file read back (ours is under 4 KiB): a larger one is not ours. */
const MAX_HOOK_BYTES = 64 * 1024;

/**
 * The text of the file at `path`, read as the state directory's files are: a symlink, FIFO,
 * device or a file over {@link MAX_HOOK_BYTES} is refused (`StateDirError`), never read.
 */
function readHookFile(path: string): string {
  return new TextDecoder().decode(readOwnFileSync(path, MAX_HOOK_BYTES));
}

/**
 * What an install left behind when it was killed between its temporary file and the rename: a
 * directory holding the hook (a file, from installs before the hook was staged in one).
 */
const LEFTOVER = new RegExp(`^\\.${HOOK_FILE_NAME}\\..*\\.tmp$`);

/** The names in `dir` of temporary hooks an interrupted install left there. */
function leftoversIn(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => LEFTOVER.test(n)).sort();
  } catch {
    return [];
  }
}

/**
 * The other passthrough hooks in `dir`, sorted: executable regular files beside
 * {@link HOOK_FILE_NAME} (a copy kept as `50-passthrough-guard.bak`, one renamed), and symbolic
 * links to one (to the hook itself: libvirt follows links), which libvirt runs at every start
 * too, each a guard by its own settings: one of the two uses up the allowance `guard allow`
 * gives, and the other refuses the start. A file too large to be one, or that cannot be read, is
 * none.
 */
export function otherHooksIn(dir: string): string[] {
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].filter((e) => e.isFile || e.isSymlink).map((e) => e.name);
  } catch {
    return [];
  }
  return names.filter((name) => name !== HOOK_FILE_NAME && !LEFTOVER.test(name)).sort()
    .map((name) => join(dir, name)).filter((path) => {
      try {
        // What libvirt runs: where a link leads, read as the hook file is (never through a link).
        const real = Deno.realPathSync(path);
        const info = Deno.lstatSync(real);
        if (!info.isFile || ((info.mode ?? 0) & 0o111) === 0 || info.size > MAX_HOOK_BYTES) {
          return false;
        }
        return isPassthroughHook(readHookFile(real));
      } catch {
        return false;
      }
    });
}

/**
 * Why a passthrough hook other than {@link HOOK_FILE_NAME} in its directory is a problem, for
 * `hook install`, `status`, `remove` and `doctor`; removing it (`rm`) is the fix.
 */
export function otherHookProblem(path: string): string {
  return `${path} is another passthrough hook or a link to one, which libvirt also runs at ` +
    "every start: a guard allow lets no start through (one of the two uses it up, the other " +
    "refuses), and it checks by its own settings";
}

/**
 * Removes `dir/name`, a temporary hook; one already gone counts as removed: another install
 * running at the same moment placed its own, or removed it too.
 */
function removeLeftover(dir: string, name: string): void {
  try {
    Deno.removeSync(join(dir, name), { recursive: true });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/** How often an install stages its hook again when another install or remove took its staging. */
const STAGING_ATTEMPTS = 5;

/**
 * The users who may own what the hook runs: root, and the installing user (a session daemon
 * runs its hooks as that user, who owns them).
 */
export function trustedOwners(): number[] {
  return [...new Set([0, Deno.uid() ?? 0])];
}

/**
 * What to do with a file at the hook's path that is not a passthrough hook (a user's own hook, a
 * link to one) so that `hook install` may write there: it never replaces such a file, as
 * `hook remove` never deletes one. Renamed, it still runs (libvirt runs every executable in the
 * directory, in name order).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   foreignHookAdvice("/etc/libvirt/hooks/qemu.d/50-passthrough-guard"),
 *   "rename it (libvirt runs every executable in /etc/libvirt/hooks/qemu.d: " +
 *     "mv /etc/libvirt/hooks/qemu.d/50-passthrough-guard /etc/libvirt/hooks/qemu.d/50-own-hook) " +
 *     "or move it out of /etc/libvirt/hooks/qemu.d",
 * );
 * ```
 */
export function foreignHookAdvice(path: string): string {
  const dir = dirname(path);
  const mv = ["mv", path, join(dir, "50-own-hook")].map(shellWord).join(" ");
  return `rename it (libvirt runs every executable in ${dir}: ${mv}) or move it out of ${dir}`;
}

/**
 * The text of the passthrough hook at `path` (any format), or `null` when no file is there.
 * Throws when the file there is not one (a user's own hook, a link, a FIFO, a file too large
 * to be ours, as {@link removeHook} tells them): `hook install` never replaces it.
 */
function replaceableHookText(path: string): string | null {
  let text: string | null = null;
  try {
    text = readHookFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    if (!(error instanceof StateDirError)) throw error;
  }
  if (text === null || !isPassthroughHook(text)) {
    throw new Error(
      `Refusing to install the start guard over "${path}": it is not a passthrough hook: ${
        foreignHookAdvice(path)
      }, then install again`,
    );
  }
  return text;
}

/**
 * Throws when `dir`, or a directory above it, cannot be a directory `hook install` writes in: a
 * symbolic link to nothing (a hooks directory kept as a link into a tree not there), or a file.
 * Creating it would otherwise fail with a bare "File exists".
 */
function assertHooksDirUsable(dir: string): void {
  const parts = resolve(dir).split("/").filter((p) => p !== "");
  for (let i = 1; i <= parts.length; i++) {
    const path = `/${parts.slice(0, i).join("/")}`;
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(path);
    } catch {
      // Missing (made with the rest), or not ours to judge: creating it says why.
      return;
    }
    if (info.isDirectory) continue;
    let problem = `"${path}" is not a directory`;
    if (info.isSymlink) {
      try {
        if (Deno.statSync(path).isDirectory) continue;
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
        problem = `"${path}" is a symbolic link to "${
          Deno.readLinkSync(path)
        }", which does not exist: make that directory or remove the link`;
      }
    }
    throw new Error(`Cannot install the start guard in "${dir}": ${problem}, then install again`);
  }
}

/**
 * The settings of the passthrough hook that `hook install` would replace in `dir`, or `null`
 * when there is none; throws, as {@link installHook} does, when the file there is not a
 * passthrough hook or `dir` cannot be made. For a check before anything is created.
 */
export function replaceableHookSettings(dir: string): HookSettings | null {
  assertHooksDirUsable(dir);
  const text = replaceableHookText(join(dir, HOOK_FILE_NAME));
  return text === null ? null : parseHookSettings(text);
}

/**
 * Creates `dir` and its missing parents 0755 whatever the umask (root's 077 would hide the hook
 * from a non-root `apply`, which then reads no guard policy); one that exists keeps its mode.
 */
function makeHooksDir(dir: string): void {
  if (exists(dir)) return;
  const parent = dirname(dir);
  if (parent !== dir) makeHooksDir(parent);
  try {
    Deno.mkdirSync(dir, { mode: 0o755 });
  } catch (error) {
    // Another install made it at the same moment: its mode is that one's.
    if (error instanceof Deno.errors.AlreadyExists) return;
    throw error;
  }
  Deno.chmodSync(dir, 0o755);
}

/**
 * Writes `script` as `dir/50-passthrough-guard`, mode 0755, replacing the file atomically (a
 * temporary file renamed over it), so libvirt never runs a half-written hook. Creates `dir`. The
 * temporary file is not executable until its content is on disk, and lies in a private
 * subdirectory until it is renamed (libvirt runs every executable regular file of the directory,
 * dot files too, and reads the directory at every call); what an interrupted install left there
 * is removed. A hook with the same content is rewritten when it
 * is owned by another user than `owners` (then that user could change it). Refuses to replace a
 * file that is not a passthrough hook. A write that fails (a full or read-only file system) throws
 * naming the hook's path and that the previous one, if any, stands.
 */
export function installHook(
  dir: string,
  script: string,
  owners: readonly number[] = trustedOwners(),
): InstallResult {
  assertHooksDirUsable(dir);
  const path = join(dir, HOOK_FILE_NAME);
  const current = replaceableHookText(path);
  let same = false;
  if (current !== null) {
    const info = Deno.lstatSync(path);
    same = ((info.mode ?? 0) & 0o7777) === 0o755 && owners.includes(info.uid ?? -1) &&
      current === script;
  }
  for (const name of leftoversIn(dir)) removeLeftover(dir, name);
  if (same) return { path, changed: false };
  try {
    stageHook(dir, script, path);
  } catch (error) {
    // A write's own error (ENOSPC, EIO) names no file, and none says what was left in place.
    throw new Error(
      `Cannot write the start guard "${path}": ${errorText(error)}; ${
        current === null ? "no hook was installed" : "the hook there is unchanged"
      }`,
      { cause: error },
    );
  }
  return { path, changed: true };
}

/** Stages `script` in a private subdirectory of `dir`, then renames it to `path` (see above). */
function stageHook(dir: string, script: string, path: string): void {
  for (let attempt = 1;; attempt++) {
    makeHooksDir(dir);
    // Written in a directory of its own in `dir` (one file system, so the rename is atomic):
    // libvirt runs every executable regular file of `dir`, never one in a subdirectory, so an
    // install killed between the chmod and the rename leaves nothing it runs.
    const staging = join(dir, `.${HOOK_FILE_NAME}.${crypto.randomUUID()}.tmp`);
    Deno.mkdirSync(staging, { mode: 0o700 });
    const temp = join(staging, HOOK_FILE_NAME);
    try {
      placeHook(temp, script, path);
      return;
    } catch (error) {
      // Another install or a remove at the same moment took the staging directory for one an
      // interrupted install left, and removed it (its file first): staged again, the last
      // rename stands, as it would had they run one after the other.
      if (!(error instanceof Deno.errors.NotFound) || exists(temp)) throw error;
      if (attempt === STAGING_ATTEMPTS) {
        throw new Error(
          `another "passthrough hook install" or "hook remove" removed its temporary file ` +
            `${attempt} times; run it again`,
          { cause: error },
        );
      }
    } finally {
      try {
        Deno.removeSync(staging, { recursive: true });
      } catch {
        // Gone already: nothing left to clean.
      }
    }
  }
}

/** Writes `script` as `temp`, makes it executable once whole, and renames it to `path`. */
function placeHook(temp: string, script: string, path: string): void {
  const file = Deno.openSync(temp, { write: true, createNew: true, mode: 0o600 });
  try {
    writeAllSync(file, new TextEncoder().encode(script));
    file.syncSync();
  } finally {
    file.close();
  }
  // Executable only now that it is whole.
  Deno.chmodSync(temp, 0o755);
  Deno.renameSync(temp, path);
  syncDir(dirname(path));
}

/** The largest number of files looked at under one directory the hook's code comes from. */
const MAX_TREE_ENTRIES = 20_000;

/** A path another user than root could change in what the hook runs or obeys. */
export interface UnsafePath {
  /** Why, in words: `/srv/qemu.d is writable by anyone (mode 0777)`. */
  text: string;
  /**
   * The command that takes the write access away (`chmod o-w /srv/qemu.d`); `null` when another
   * user owns the path, where the fix is to install passthrough where only root can write.
   */
  fix: string | null;
}

/**
 * Why another user than `owners` could change `path` (or what it leads to): the first path
 * component, file or directory, that such a user owns, or that its group (other than root's)
 * or anyone may write, a sticky directory (`/tmp`) excepted, since others may not rename or
 * delete what is not theirs in it; `null` when none can, or `path` does not exist.
 */
function changeableBy(
  path: string,
  owners: readonly number[],
  options: { strict?: boolean } = {},
): UnsafePath | null {
  const along = (target: string): UnsafePath | null => {
    const parts = target.split("/").filter((p) => p !== "");
    for (let i = 0; i <= parts.length; i++) {
      // Where code is looked up by name, a sticky directory lets others add what is missing.
      const sticky = i < parts.length || !options.strict;
      const reason = componentReason(`/${parts.slice(0, i).join("/")}`, owners, sticky);
      if (reason !== null) return reason;
    }
    return null;
  };
  const lexical = along(path);
  if (lexical !== null) return lexical;
  const real = realPathOfExisting(path);
  return real === null || real === path ? null : along(real);
}

function componentReason(
  path: string,
  owners: readonly number[],
  sticky = true,
): UnsafePath | null {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch {
    return null;
  }
  const uid = info.uid ?? 0;
  if (!owners.includes(uid)) return { text: `${path} belongs to uid ${uid}`, fix: null };
  // A link's own mode means nothing; where it leads is checked apart.
  if (info.isSymlink) return null;
  const mode = info.mode ?? 0;
  const groupWrites = (mode & 0o020) !== 0 && info.gid !== 0;
  const othersWrite = (mode & 0o002) !== 0 &&
    !(sticky && info.isDirectory && (mode & 0o1000) !== 0);
  if (!groupWrites && !othersWrite) return null;
  const octal = (mode & 0o7777).toString(8).padStart(4, "0");
  const who = `${groupWrites ? "g" : ""}${othersWrite ? "o" : ""}`;
  return {
    text: `${path} is writable by ${othersWrite ? "anyone" : `group ${info.gid}`} (mode ${octal})`,
    fix: `chmod ${who}-w ${shellWord(path)}`,
  };
}

/** {@link changeableBy} for `dir` and everything under it (links followed apart, not into). */
function changeableTree(dir: string, owners: readonly number[]): UnsafePath | null {
  const top = changeableBy(dir, owners, { strict: true });
  if (top !== null) return top;
  const pending = [dir];
  let seen = 0;
  while (pending.length > 0) {
    const current = pending.pop()!;
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(current)];
    } catch {
      continue;
    }
    for (const entry of entries) {
      if (++seen > MAX_TREE_ENTRIES) {
        return { text: `${dir} holds more than ${MAX_TREE_ENTRIES} files`, fix: null };
      }
      const path = join(current, entry.name);
      const reason = entry.isSymlink
        ? changeableBy(path, owners, { strict: true })
        : componentReason(path, owners, false);
      if (reason !== null) return reason;
      if (entry.isDirectory) pending.push(path);
    }
  }
  return null;
}

/**
 * The code a hook's command runs, for {@link unsafeHookPaths}: the programs and files it names,
 * and the directories the entry loads more code from (a bundle's chunks, a checkout's sources).
 */
function hookCode(
  settings: HookSettings,
): { files: string[]; trees: string[]; denoDir: string | null } {
  const files = [settings.timeout, ...settings.command.filter((a) => a.startsWith("/"))]
    .filter((f) => f !== settings.stateDir && f !== settings.sysfs);
  const trees: string[] = [];
  for (const file of files) {
    if (file.endsWith(".js")) trees.push(dirname(file));
    const root = file.endsWith("/cli/hook_check.ts")
      ? dirname(dirname(file))
      : file.endsWith("/main.ts")
      ? dirname(file)
      : null;
    if (root !== null) trees.push(...["cli", "lib", "ffi"].map((d) => join(root, d)));
  }
  const denoDir = settings.env.DENO_DIR;
  return {
    files: [...new Set(files)],
    trees: [...new Set(trees)],
    denoDir: denoDir !== undefined && denoDir.startsWith("/") ? denoDir : null,
  };
}

/**
 * Why another user than `owners` could change what libvirt runs as root at every VM start
 * through this hook: the hook file and its directory, the programs and files its command names,
 * the directories its entry loads code from and its `DENO_DIR` ({@link changeableBy}), each with
 * the `chmod` that fixes it where one does. Empty when only `owners` can.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const settings = { version: "0.1.0", deadline: 10, timeout: "/usr/bin/timeout",
 *   command: ["/usr/bin/timeout"], env: {}, stateDir: "/var/lib/passthrough",
 *   sysfs: "/sys" };
 * assertEquals(unsafeHookPaths(settings, "/nonexistent/50-passthrough-guard", [0]), []);
 * ```
 */
export function unsafeHookPaths(
  settings: HookSettings,
  hookPath: string,
  owners: readonly number[],
): UnsafePath[] {
  const { files, trees, denoDir } = hookCode(settings);
  const reasons = [
    changeableBy(hookPath, owners) ?? changeableBy(dirname(hookPath), owners, { strict: true }),
    ...files.map((f) => changeableBy(f, owners)),
    ...trees.map((t) => changeableTree(t, owners)),
    // Deno's cache: its code caches and npm packages are looked up by name in it.
    denoDir === null ? null : changeableBy(denoDir, owners, { strict: true }),
    // The policies and allowances the hook obeys: a user who could swap the state directory
    // could turn the guard off for a VM.
    changeableBy(settings.stateDir, owners, { strict: true }),
  ];
  const found = reasons.filter((r) => r !== null);
  return found.filter((r, i) => found.findIndex((o) => o.text === r.text) === i);
}

/** What {@link removeHook} removed. */
export interface RemoveResult {
  /** Whether the hook was there (and is gone). */
  removed: boolean;
  /** The paths of temporary hooks an interrupted install left, removed too. */
  leftovers: string[];
}

/**
 * Removes the hook, and what an interrupted install left beside it: one killed between making
 * its temporary file executable and the rename leaves a whole hook, which libvirt runs at every
 * start as it runs the hook (an uninstall must not leave it guarding). Refuses a file at the
 * hook's path that is not our hook.
 */
export function removeHook(dir: string): RemoveResult {
  const path = join(dir, HOOK_FILE_NAME);
  let text: string | null = null;
  try {
    text = readHookFile(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  if (text !== null && !isPassthroughHook(text)) {
    throw new Error(`Refusing to remove "${path}": it is not a passthrough hook`);
  }
  const names = leftoversIn(dir);
  for (const name of names) removeLeftover(dir, name);
  const leftovers = names.map((name) => join(dir, name));
  if (text === null) return { removed: false, leftovers };
  try {
    Deno.removeSync(path);
  } catch (error) {
    // Another remove at the same moment removed it: gone, as asked, though not by this one.
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    return { removed: false, leftovers };
  }
  return { removed: true, leftovers };
}

/** A program the hook runs, and whether it is still there. */
export interface HookProgram {
  /** Its absolute path. */
  path: string;
  /** Whether it exists now. */
  exists: boolean;
}

/** What {@link inspectHook} finds. */
export interface HookInspection {
  /** The hook's path. */
  path: string;
  /** Whether a file is there. */
  present: boolean;
  /** A regular file with execute permission (libvirt skips anything else). */
  executable: boolean;
  /**
   * Its settings; `null` when absent, not written by passthrough, or written by one whose
   * settings this version cannot read (then {@link HookInspection.ours}).
   */
  settings: HookSettings | null;
  /** Written by a passthrough, of whatever version (`isPassthroughHook`). */
  ours: boolean;
  /**
   * For a hook that is {@link HookInspection.ours} but whose settings this version cannot read:
   * those `hook install` still needs from it.
   */
  writtenWith?: InstallSettings;
  /** The programs and files its command names (timeout, deno, main module), with existence. */
  programs: HookProgram[];
  /** Seconds since the epoch when the file was last written, or `null`. */
  modified: number | null;
  /**
   * Whether the script is exactly what {@link renderHookScript} writes for its own settings
   * line: `false` when anything in it was changed by hand (an `exit 0` would turn it off).
   */
  intact: boolean;
  /** The script's revision (`hook install` writes the newest; 1 when it names none, 0: absent). */
  format: number;
  /** Why another user than root could change what it runs. */
  unsafe: UnsafePath[];
  /**
   * Temporary hook files an interrupted install left in the directory (libvirt runs them too
   * when they are executable); `hook install` removes them, and the staging directories that
   * installs leave now, which libvirt never runs and which are not listed here.
   */
  leftovers: string[];
  /**
   * The other passthrough hooks in the directory (a copy kept beside the hook), which libvirt
   * runs at every start too; never removed by passthrough.
   */
  others: string[];
  /**
   * When the state directory the hook reads has become a symbolic link since its install (which
   * refuses one, as the check does: it then reads no allowance and records no refusal): where it
   * leads, `""` when nowhere; else `null`.
   */
  stateDirLink: string | null;
  /**
   * When the hook reads a captured tree (`--sysfs DIR`, not `/sys`) that has no
   * `bus/pci/devices` now (moved or deleted since the install): the check then refuses every
   * start, checking nothing.
   */
  sysfsMissing: boolean;
  /**
   * A file (not a directory) where the check's Deno cache goes: the hook's state directory, or
   * the cache in it; `null` when none. Deno then stops before the check runs, refusing every
   * start.
   */
  cacheBlocked: string | null;
  /**
   * When the hook's Deno cache is a symbolic link (not one {@link HookInspection.cacheBlocked}
   * names), which `hook install` refuses: the check, run as root, keeps its code cache where it
   * leads, out of the private state directory. What the link holds, and whether that is there;
   * else `null`.
   */
  cacheLink: { target: string; exists: boolean } | null;
  /**
   * A `.npmrc` in the hook's `HOME` (its Deno cache), which passthrough never writes: Deno reads
   * it before the check at every start, and stops on one it cannot read or parse; `null` when
   * none.
   */
  npmrc: string | null;
  /**
   * The modules of the bundle the hook runs that its entry imports and that are gone (a build
   * or a copy cut short): every start is then refused.
   */
  missingModules: string[];
}

/**
 * The settings of the hook installed in `hooksDir`, `null` when there is none or it is not
 * passthrough's; `unreadable`: the hook's path when this user may not read it (a hook root
 * installed in its root-only directory may be there, reading another state directory).
 */
function installedHookSettings(
  hooksDir: string,
): { hook: HookSettings | null; unreadable: string | null } {
  const path = join(hooksDir, HOOK_FILE_NAME);
  try {
    return { hook: parseHookSettings(readHookFile(path)), unreadable: null };
  } catch (error) {
    return { hook: null, unreadable: error instanceof Deno.errors.PermissionDenied ? path : null };
  }
}

/**
 * The state directory the guard's settings go to: `--state-dir` when given, else the one the
 * hook installed in `hooksDir` reads (fixed at its install: settings elsewhere would never be
 * seen), else the usual one. With the installed hook's settings, to say where it differs, and
 * the hook's path when this user may not read it (where the hook reads is then unknown).
 * `hookFirst`: the installed hook's directory even over `--state-dir` (what the hook reads and
 * records, rather than where this command was told to write).
 */
export function guardStateDir(
  flag: string | undefined,
  env: (name: string) => string | undefined,
  options: { hooksDir?: string; hookFirst?: boolean } = {},
): { stateDir: string; hook: HookSettings | null; unreadable: string | null } {
  const { hook, unreadable } = installedHookSettings(options.hooksDir ?? DEFAULT_HOOKS_DIR);
  const stateDir = hook !== null && (flag === undefined || options.hookFirst === true)
    ? hook.stateDir
    : resolveStateDirPath({ flag, env });
  return { stateDir, hook, unreadable };
}

/**
 * Where the start guard's files for the VMs of the local `uri` are: for the system daemon's, whose
 * starts run the installed hook, where that hook reads them whatever `--state-dir` says; for
 * others' (the test driver, a session), which no hook guards, the state directory this run was
 * given, unless that is the hook's by any spelling or link (or may be, the hook being unreadable),
 * or, with no hook installed, the one `hook install` reads by default ({@link DEFAULT_STATE_DIR}):
 * `null` then, as a rehearsal's policies there would change the host's VMs' starts (now, or once
 * the hook is installed), and its refusals are theirs.
 */
export function guardStateDirFor(
  uri: string,
  flag: string | undefined,
  env: (name: string) => string | undefined,
  options: { hooksDir?: string } = {},
): ReturnType<typeof guardStateDir> | null {
  if (isSystemQemuUri(uri)) return guardStateDir(flag, env, { ...options, hookFirst: true });
  const { hook, unreadable } = guardStateDir(flag, env, options);
  const stateDir = resolveStateDirPath({ flag, env });
  if (hook !== null && samePath(hook.stateDir, stateDir)) return null;
  if (unreadable !== null && flag === undefined) return null;
  if (hook === null && unreadable === null && samePath(DEFAULT_STATE_DIR, stateDir)) return null;
  return { stateDir, hook: null, unreadable: null };
}

/**
 * The `hook install` command that writes this hook again with the settings it has now: its state
 * directory always, and its directory, deadline and sysfs where they are not the default (a bare
 * `hook install` would put a second hook elsewhere, or one reading another state directory).
 * `hooksDir: false` leaves the directory out, for moving the hook to libvirt's own.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const settings = {
 *   version: "1", deadline: 30, timeout: "/usr/bin/timeout", command: [], env: {},
 *   stateDir: "/srv/pt state", sysfs: "/sys",
 * };
 * assertEquals(
 *   installCommand({ path: "/tmp/hooks/50-passthrough-guard", settings }),
 *   "passthrough hook install --hooks-dir /tmp/hooks --state-dir '/srv/pt state' --deadline 30",
 * );
 * // The state directory even when it is the default: $PASSTHROUGH_STATE_DIR would come first.
 * assertEquals(
 *   installCommand({
 *     path: "/etc/libvirt/hooks/qemu.d/50-passthrough-guard",
 *     settings: { ...settings, deadline: 10, stateDir: "/var/lib/passthrough" },
 *   }),
 *   "passthrough hook install --state-dir /var/lib/passthrough",
 * );
 * assertEquals(installCommand({ path: "/etc/libvirt/hooks/qemu.d/x", settings: null }),
 *   "passthrough hook install");
 * ```
 */
export function installCommand(
  inspection: Pick<HookInspection, "path" | "settings" | "writtenWith">,
  options: { hooksDir?: false } = {},
): string {
  const words = ["passthrough", "hook", "install"];
  const dir = dirname(inspection.path);
  if (options.hooksDir !== false && dir !== DEFAULT_HOOKS_DIR) words.push("--hooks-dir", dir);
  const s: InstallSettings = inspection.settings ?? inspection.writtenWith ?? {};
  // Always: without the flag, `hook install` would take $PASSTHROUGH_STATE_DIR first.
  if (s.stateDir !== undefined) words.push("--state-dir", s.stateDir);
  if (s.deadline !== undefined && s.deadline !== DEFAULT_DEADLINE_SECONDS) {
    words.push("--deadline", String(s.deadline));
  }
  if (s.sysfs !== undefined && s.sysfs !== "/sys") words.push("--sysfs", s.sysfs);
  return words.map(shellWord).join(" ");
}

/**
 * Why a hook is not what `hook install` writes for its settings, when it is not
 * ({@link HookInspection.intact}): by its {@link HOOK_FORMAT}, written by an older passthrough
 * (whose text this one cannot check, so it may have been changed by hand too), by a newer one,
 * or changed since it was written.
 */
function notIntactReason(format: number): string {
  const formats = `hook format ${format}, this one writes ${HOOK_FORMAT}`;
  if (format < HOOK_FORMAT) {
    return `written by an older passthrough (${formats}) or changed by hand since`;
  }
  return format > HOOK_FORMAT
    ? `written by a newer passthrough (${formats})`
    : "changed since it was written";
}

/** A bundle of a checkout that the hook runs, built before a source of that checkout changed. */
export interface StaleBundle {
  /** The bundle's directory (`dist/bin`). */
  bundle: string;
  /** The script that builds it again (`scripts/setup.sh`). */
  setup: string;
  /**
   * `older`: a source is newer than the bundle, so `bin/passthrough` runs the sources;
   * `other-sources`: none is newer, but the bundle was built from other contents (an update that
   * kept the files' times: tar, `rsync -a`, `cp -p`), so `bin/passthrough` runs the bundle too.
   */
  why: "older" | "other-sources";
}

/** How {@link staleBundle} reads a checkout. */
export interface CheckoutReader {
  /** When the file was last written, in milliseconds since the epoch; `null` when missing. */
  modified(path: string): number | null;
  /** The entry names of a directory; `null` when it is missing. */
  listDir(path: string): string[] | null;
  /** A regular file or a directory, not following a link (as `find -type f`); else `null`. */
  kind(path: string): "file" | "directory" | null;
  /** The file's bytes; `null` when it cannot be read. */
  readFile(path: string): Uint8Array | null;
}

/**
 * The bundle of the checkout at `checkout` (`dist/bin/`) when the hook runs it and it is not
 * built from the checkout's sources: a source is newer than it, as `bin/passthrough` decides
 * (which then runs the sources), after an update without `setup.sh`; or, though none is newer,
 * their digest is not the one the build recorded (`dist/bin/.sources`, as `setup.sh` compares),
 * after an update that kept the files' times, when `bin/passthrough` runs that bundle too. `null`
 * otherwise, and for `checkout: null` (no checkout runs this program).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const settings = { version: "0.1.0", deadline: 10, timeout: "/usr/bin/timeout",
 *   command: ["/usr/bin/deno", "run", "/opt/pt/dist/bin/hook/hook_check.js"], env: {},
 *   stateDir: "/var/lib/passthrough", sysfs: "/sys" };
 * const times: Record<string, number> = { "/opt/pt/dist/bin/main.js": 1, "/opt/pt/lib/mod.ts": 2 };
 * const reader = {
 *   modified: (path: string) => times[path] ?? null,
 *   listDir: (path: string) => path === "/opt/pt/lib" ? ["mod.ts"] : null,
 *   kind: (path: string) => path in times ? "file" as const : null,
 *   readFile: () => null,
 * };
 * assertEquals(staleBundle(settings, "/opt/pt", reader), {
 *   bundle: "/opt/pt/dist/bin", setup: "/opt/pt/scripts/setup.sh", why: "older",
 * });
 * times["/opt/pt/dist/bin/main.js"] = 3;
 * assertEquals(staleBundle(settings, "/opt/pt", reader), null);
 * ```
 */
export function staleBundle(
  settings: HookSettings,
  checkout: string | null,
  reader: CheckoutReader,
): StaleBundle | null {
  if (checkout === null) return null;
  const runsIt = settings.command.some((a) => a.startsWith(`${join(checkout, "dist", "bin")}/`));
  return runsIt ? staleCheckoutBundle(checkout, reader) : null;
}

/**
 * The bundle of the checkout at `checkout` (`dist/bin/`) when it is not built from the
 * checkout's sources, as {@link staleBundle} tells, whoever runs it; `null` when it is, or when
 * there is none.
 */
export function staleCheckoutBundle(checkout: string, reader: CheckoutReader): StaleBundle | null {
  const bundle = join(checkout, "dist", "bin");
  const built = reader.modified(join(bundle, "main.js"));
  if (built === null) return null;
  const stale = (why: StaleBundle["why"]) => ({
    bundle,
    setup: join(checkout, "scripts", "setup.sh"),
    why,
  });
  const newer = checkoutSources(checkout, reader).some((f) => (reader.modified(f) ?? 0) > built);
  if (newer) return stale("older");
  // A bundle from before the digest was recorded cannot be told apart: its times decide.
  const recorded = reader.readFile(join(bundle, ".sources"));
  if (recorded === null) return null;
  const digest = new TextDecoder().decode(recorded).trim();
  return digest === sourcesDigest(checkout, reader) ? null : stale("other-sources");
}

/**
 * What `scripts/bundle_bin.sh --sources-digest` prints for the checkout at `root`: the sha256 of
 * `sha256sum`'s lines for every regular file it builds from, in byte order of their paths.
 */
function sourcesDigest(root: string, reader: CheckoutReader): string {
  const filesUnder = (path: string): string[] => {
    const kind = reader.kind(join(root, path));
    if (kind === "file") return [path];
    if (kind === null) return [];
    return (reader.listDir(join(root, path)) ?? []).flatMap((name) =>
      filesUnder(`${path}/${name}`)
    );
  };
  // The paths are ASCII (bundle_bin.sh's `LC_ALL=C sort` is byte order; so is this, for ASCII).
  const files = BUNDLE_SOURCES.flatMap(filesUnder).sort((a, b) => a < b ? -1 : a > b ? 1 : 0);
  const lines = files.map((file) => {
    const bytes = reader.readFile(join(root, file)) ?? new Uint8Array();
    return `${sha256Hex(bytes)}  ${file}\n`;
  });
  return sha256Hex(lines.join(""));
}

/** What `scripts/bundle_bin.sh` digests (its `sources_digest`): keep the two lists alike. */
const BUNDLE_SOURCES = [
  "main.ts",
  "cli",
  "lib",
  "ffi",
  "demo",
  "deno.json",
  "deno.lock",
  "scripts/bundle_bin.sh",
  "tools/deno/package-lock.json",
] as const;

/** The sources `bin/passthrough` compares with its bundle (its globs). */
function checkoutSources(root: string, reader: CheckoutReader): string[] {
  const list = (dir: string) => (reader.listDir(dir) ?? []).map((name) => join(dir, name));
  const scripts = (dir: string) => list(dir).filter((f) => f.endsWith(".ts"));
  const lib = join(root, "lib");
  return [
    ...["main.ts", "deno.json", "deno.lock"].map((f) => join(root, f)),
    ...scripts(join(root, "cli")),
    ...scripts(join(root, "ffi")),
    ...scripts(lib),
    ...list(lib).flatMap(scripts),
    ...list(join(root, "demo")),
  ];
}

/** One thing wrong with an installed passthrough hook, from {@link hookFileProblems}. */
export interface HookFileProblem {
  /**
   * `fail` when the hook does not guard as it should (libvirt skips it, it was changed, another
   * user could change it, or a program it runs is missing, refusing every start); `warn` when
   * only its version differs, or it runs a bundle older than its sources.
   */
  severity: "fail" | "warn";
  /** The problem, in words. */
  text: string;
  /**
   * The command that fixes it: `install` (see {@link installCommand}), qualified where needed, or
   * the checkout's `setup.sh` for a stale bundle.
   */
  fix: string;
}

/**
 * What is wrong with the passthrough hook that `inspection` found (`[]` when nothing is), for
 * `hook status` and `doctor` alike: not executable, not as written, open to another user, its
 * state directory a link, a file where its Deno cache goes, its captured tree gone, a program it
 * runs missing, written by a
 * passthrough other than `version`, or running the bundle `options.staleBundle`
 * ({@link staleBundle}). `install` is the command that writes it again ({@link installCommand}).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const inspection = { path: "/etc/libvirt/hooks/qemu.d/50-passthrough-guard",
 *   executable: false, intact: true, format: HOOK_FORMAT, unsafe: [], programs: [],
 *   settings: null, stateDirLink: null, sysfsMissing: false, cacheBlocked: null,
 *   cacheLink: null, npmrc: null, missingModules: [] };
 * assertEquals(hookFileProblems(inspection, "0.1.0", "passthrough hook install"), [{
 *   severity: "fail", text: "not executable, so libvirt skips it",
 *   fix: "passthrough hook install",
 * }]);
 * ```
 */
export function hookFileProblems(
  inspection: Pick<
    HookInspection,
    | "path"
    | "executable"
    | "intact"
    | "format"
    | "unsafe"
    | "programs"
    | "settings"
    | "stateDirLink"
    | "sysfsMissing"
    | "cacheBlocked"
    | "cacheLink"
    | "npmrc"
    | "missingModules"
  >,
  version: string,
  install: string,
  options: { staleBundle?: StaleBundle | null } = {},
): HookFileProblem[] {
  const problems: HookFileProblem[] = [];
  const fail = (text: string, fix = install) => problems.push({ severity: "fail", text, fix });
  if (!inspection.executable) fail("not executable, so libvirt skips it");
  if (!inspection.intact) {
    fail(`${notIntactReason(inspection.format)}: it may not check what it should`);
  }
  for (const unsafe of inspection.unsafe) {
    // Installing again over a path another user can write is refused: take that access first.
    fail(
      `another user could change what it runs as root: ${unsafe.text}`,
      `${
        unsafe.fix ?? "install passthrough where only root can write (/opt/passthrough)"
      }, then ${install}`,
    );
  }
  problems.push(...stateDirLinkProblem(inspection, install));
  problems.push(...cacheBlockedProblem(inspection));
  problems.push(...cacheLinkProblem(inspection));
  problems.push(...npmrcProblem(inspection));
  for (const module of inspection.missingModules) {
    fail(
      `its check's module ${module} is missing: VM starts are refused, with nothing checked`,
      "build the bundle again (scripts/setup.sh in passthrough's clone, or the Ansible playbook " +
        "again)",
    );
  }
  problems.push(...sysfsMissingProblem(inspection));
  for (const program of inspection.programs.filter((p) => !p.exists)) {
    fail(
      `it runs ${program.path}, which is missing: every VM start would be refused`,
      `${install} (from where passthrough is now)`,
    );
  }
  const written = inspection.settings?.version;
  if (written !== undefined && written !== version) {
    problems.push({
      severity: "warn",
      text: `written by passthrough ${written}, this is ${version}`,
      fix: install,
    });
  }
  problems.push(...staleBundleProblem(options.staleBundle));
  return problems;
}

/** The hook's state directory as a symbolic link, which the check refuses; `[]` when it is none. */
function stateDirLinkProblem(
  { settings, stateDirLink: target }: Pick<HookInspection, "settings" | "stateDirLink">,
  install: string,
): HookFileProblem[] {
  const stateDir = settings?.stateDir;
  if (stateDir === undefined || target === null) return [];
  const [s, t] = [shellWord(stateDir), shellWord(target)];
  return [{
    severity: "fail",
    text: `its state directory ${stateDir} is a symbolic link${
      target === "" ? " that leads nowhere" : ` to ${target}`
    }, which the check refuses: it reads no allowance and records no refusal`,
    fix: target === "" ? `rm ${s}, then ${install}` : `rm ${s} && mv ${t} ${s}`,
  }];
}

/**
 * A file where the check's Deno cache goes, so every start is refused; `[]` when none. Moved
 * aside, not removed: passthrough did not write it.
 */
function cacheBlockedProblem(
  { settings, cacheBlocked }: Pick<HookInspection, "settings" | "cacheBlocked">,
): HookFileProblem[] {
  if (settings === null || cacheBlocked === null) return [];
  const what = cacheDirs(settings).find(([dir]) => dir === cacheBlocked)?.[1] ?? "the path";
  return [{
    severity: "fail",
    text: `${what} ${cacheBlocked} is not a directory: the check cannot run (Deno keeps its ` +
      "cache there), so every VM start is refused",
    fix: `mv ${shellWord(cacheBlocked)} ${shellWord(`${cacheBlocked}.aside`)}`,
  }];
}

/**
 * The hook's Deno cache as a symbolic link, which install refuses; `[]` when none. The link
 * alone is removed (`rm`, no `-r`): the next start makes the directory again.
 */
function cacheLinkProblem(
  { settings, cacheLink }: Pick<HookInspection, "settings" | "cacheLink">,
): HookFileProblem[] {
  const cache = settings?.env.DENO_DIR;
  if (cache === undefined || cacheLink === null) return [];
  return [{
    severity: "fail",
    text:
      `its Deno cache ${cache} is a symbolic link to ${cacheLink.target}${
        cacheLink.exists ? "" : ", which does not exist"
      }: hook install refuses one, as the check, run as root at every VM start, keeps its code ` +
      "cache where the link leads, out of its private state directory",
    fix: `rm ${shellWord(cache)}`,
  }];
}

/** A `.npmrc` in the hook's HOME, which may stop every start; `[]` when none. Moved aside. */
function npmrcProblem({ npmrc }: Pick<HookInspection, "npmrc">): HookFileProblem[] {
  if (npmrc === null) return [];
  return [{
    severity: "fail",
    text: `${npmrc} is there, which passthrough never writes: Deno reads it before the check at ` +
      "every start (the hook's HOME), and stops every start on one it cannot read or parse",
    fix: `mv ${shellWord(npmrc)} ${shellWord(`${npmrc}.aside`)}`,
  }];
}

/** The hook's captured tree gone, so every start is refused; `[]` when it is there. */
function sysfsMissingProblem(
  { path, settings, sysfsMissing }: Pick<HookInspection, "path" | "settings" | "sysfsMissing">,
): HookFileProblem[] {
  if (settings === null || !sysfsMissing) return [];
  // Installing again with the same --sysfs is refused: a tree there, or this host's /sys.
  const live = installCommand({ path, settings: { ...settings, sysfs: "/sys" } });
  return [{
    severity: "fail",
    text: `it reads the captured tree ${settings.sysfs}, which has no bus/pci/devices now: every ` +
      `VM start is refused, with nothing checked`,
    fix: `put the tree back at ${shellWord(settings.sysfs)}, or guard this host's /sys: ${live}`,
  }];
}

/** The hook running a bundle older than, or built from other than, its sources; `[]` if not. */
function staleBundleProblem(stale: StaleBundle | null | undefined): HookFileProblem[] {
  if (stale === undefined || stale === null) return [];
  // Not a hook that runs the sources: the bundle is what setup.sh and Ansible keep current.
  return [{
    severity: "warn",
    text: `it runs the bundle in ${stale.bundle}, ${
      stale.why === "older"
        ? "which is older than the sources beside it (bin/passthrough runs the sources meanwhile)"
        : "which was built from other sources than those beside it, though none is newer (an " +
          "update that kept the files' times, as tar, rsync -a or cp -p do), so " +
          "bin/passthrough runs that bundle too"
    }: build it again with ${stale.setup}`,
    fix: stale.setup,
  }];
}

/**
 * Whether the check can read PCI devices under `sysfs`: this host's `/sys` always, a captured
 * tree while it has `bus/pci/devices`. A path Deno will not `stat` without `--allow-all` (under
 * `/sys`, `/dev` or `/proc`, such as a tree in `/dev/shm`) is listed with `reader` (libc's, which
 * reaches there): a tree in `/dev/shm` is gone after a reboot, and the check then refuses every
 * start. Without a `reader`, or where it cannot tell, such a path counts as present: the check,
 * which runs with `--allow-all`, reads it, and its own refusal says so when it cannot.
 */
export function sysfsTreePresent(sysfs: string, reader?: Pick<SysfsReader, "listDir">): boolean {
  if (sysfs === "/sys") return true;
  const devices = join(sysfs, "bus", "pci", "devices");
  try {
    Deno.statSync(devices);
    return true;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotCapable)) return false;
  }
  try {
    return reader === undefined || reader.listDir(devices) !== null;
  } catch {
    return true;
  }
}

/**
 * The first of {@link cacheDirs} that is there and is not a directory (the cache a link that
 * loops too: Deno stops on it before the check runs), else `null`.
 */
function cacheBlocked(settings: HookSettings): string | null {
  for (const [dir] of cacheDirs(settings)) {
    try {
      if (!Deno.statSync(dir).isDirectory) return dir;
    } catch (error) {
      // The state directory as a link is said apart (stateDirLink), with its own fix.
      if (error instanceof Deno.errors.FilesystemLoop && dir !== settings.stateDir) return dir;
      // Missing (the check makes it), or not for this user to see: the check's run says.
    }
  }
  return null;
}

/**
 * The hook's Deno cache as a symbolic link {@link cacheBlocked} does not name (one that leads to
 * a directory, or nowhere): what it holds, and whether that is there; else `null`.
 */
function cacheLink(settings: HookSettings): { target: string; exists: boolean } | null {
  const cache = settings.env.DENO_DIR;
  // Only where `deno run` keeps it (cacheDirs); the state directory as a link is said apart
  // (stateDirLink), and a link that loops or leads to a file is cacheBlocked's.
  const kept = cacheDirs(settings).some(([dir]) => dir === cache && dir !== settings.stateDir);
  if (!kept || cacheBlocked(settings) === cache) return null;
  try {
    if (!Deno.lstatSync(cache!).isSymlink) return null;
    const target = Deno.readLinkSync(cache!);
    return { target, exists: linkTarget(cache!) !== "" };
  } catch {
    // Missing (the check makes it), or not for this user to see: the check's run says.
    return null;
  }
}

/** The largest number of a bundle's modules {@link missingModules} follows. */
const MAX_BUNDLE_MODULES = 500;

/** A bundled module's imports of modules beside it: `from"./x.js"`, `import(String("./x.js"))`. */
const BUNDLE_IMPORT = /\b(?:from\s*|import\s*(?:\(\s*String\(\s*)?)"\.\/([\w.-]+\.js)"/g;

/**
 * The modules of a bundle the hook runs (an entry ending in `.js`: `hook/hook_check.js`,
 * `main.js`) that its entry imports, at once or at a start, and that are gone: Deno stops before
 * the check on one of the first, the check on one of the others, and every start is refused.
 */
function missingModules(settings: HookSettings): string[] {
  const entries = hookCode(settings).files.filter((f) => f.endsWith(".js"));
  const seen = new Set(entries);
  const pending = [...entries];
  const missing: string[] = [];
  while (pending.length > 0 && seen.size <= MAX_BUNDLE_MODULES) {
    const module = pending.pop()!;
    let text: string;
    try {
      text = Deno.readTextFileSync(module);
    } catch (error) {
      // An entry gone is a program the hook runs, said apart; one not for this user to read is
      // the check's to say.
      if (error instanceof Deno.errors.NotFound && !entries.includes(module)) {
        missing.push(module);
      }
      continue;
    }
    for (const [, name] of text.matchAll(BUNDLE_IMPORT)) {
      const path = join(dirname(module), name!);
      if (seen.has(path)) continue;
      seen.add(path);
      pending.push(path);
    }
  }
  return missing.sort();
}

/**
 * A `.npmrc` in the hook's `HOME` (its Deno cache), which passthrough never writes and which Deno
 * reads before the check at every start, stopping on one it cannot read or parse; else `null`.
 */
function strayNpmrc(settings: HookSettings): string | null {
  const home = settings.env.HOME;
  if (home === undefined || settings.command[1] !== "run") return null;
  const path = join(home, ".npmrc");
  try {
    Deno.lstatSync(path);
    return path;
  } catch (error) {
    // A home that loops is the cache's problem (cacheBlocked), said apart.
    return error instanceof Deno.errors.NotFound ||
        error instanceof Deno.errors.FilesystemLoop ||
        error instanceof Deno.errors.NotADirectory
      ? null
      : path;
  }
}

/** Where `path` leads when it is a symbolic link (`""` when nowhere), else `null`. */
function linkTarget(path: string): string | null {
  try {
    if (!Deno.lstatSync(path).isSymlink) return null;
  } catch {
    return null;
  }
  try {
    return Deno.realPathSync(path);
  } catch {
    return "";
  }
}

/**
 * Reads the installed hook, if any, without running it.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * assertEquals(inspectHook(dir).present, false);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function inspectHook(
  dir: string,
  owners: readonly number[] = trustedOwners(),
  reader?: Pick<SysfsReader, "listDir">,
): HookInspection {
  const path = join(dir, HOOK_FILE_NAME);
  // A staging directory libvirt never runs: install and remove clear it, no need to warn.
  const leftovers = leftoversIn(dir).map((name) => join(dir, name)).filter((leftover) => {
    try {
      return !Deno.lstatSync(leftover).isDirectory;
    } catch {
      return false;
    }
  });
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return {
        path,
        present: false,
        executable: false,
        settings: null,
        ours: false,
        programs: [],
        modified: null,
        intact: false,
        format: 0,
        unsafe: [],
        leftovers,
        others: otherHooksIn(dir),
        stateDirLink: null,
        sysfsMissing: false,
        cacheBlocked: null,
        cacheLink: null,
        npmrc: null,
        missingModules: [],
      };
    }
    throw error;
  }
  const executable = info.isFile && ((info.mode ?? 0) & 0o111) !== 0;
  let settings: HookSettings | null = null;
  let intact = false;
  let ours = false;
  let writtenWith: InstallSettings | undefined;
  let format = 1;
  try {
    if (info.isFile && info.size <= MAX_HOOK_BYTES) {
      const text = readHookFile(path);
      settings = parseHookSettings(text);
      ours = isPassthroughHook(text);
      if (ours && settings === null) writtenWith = installSettingsOf(text);
      intact = settings !== null && text === renderHookScript(settings);
      format = Number(FORMAT_LINE.exec(text)?.[1] ?? 1);
    }
  } catch (error) {
    // A link or a file swapped in meanwhile: present, and not one passthrough wrote.
    if (!(error instanceof StateDirError)) throw error;
  }
  const programs = (settings === null ? [] : hookCode(settings).files)
    .map((f) => ({ path: f, exists: exists(f) }));
  return {
    path,
    present: true,
    executable,
    settings,
    ours,
    ...(writtenWith === undefined ? {} : { writtenWith }),
    programs,
    modified: info.mtime === null ? null : info.mtime.getTime() / 1000,
    intact,
    format,
    unsafe: settings === null ? [] : unsafeHookPaths(settings, path, owners),
    leftovers,
    others: otherHooksIn(dir),
    stateDirLink: settings === null ? null : linkTarget(settings.stateDir),
    sysfsMissing: settings !== null && !sysfsTreePresent(settings.sysfs, reader),
    cacheBlocked: settings === null ? null : cacheBlocked(settings),
    cacheLink: settings === null ? null : cacheLink(settings),
    npmrc: settings === null ? null : strayNpmrc(settings),
    missingModules: settings === null ? [] : missingModules(settings),
  };
}
