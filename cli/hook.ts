/**
 * `passthrough hook install|status|remove`: the libvirt hook that guards every VM start (see
 * `lib/guard/`), and `hook run`, the check the hook itself runs at `prepare begin`.
 *
 * @module
 */

import type { CliIo } from "./context.ts";
import { UsageError } from "./context.ts";
import type { Parsed } from "./flags.ts";
import type { HOOK } from "./specs.ts";
import { VERSION } from "./version.ts";
import { LIVE_SYSFS, liveSysfsRoot } from "./host_options.ts";
import { sysfsRootError } from "../lib/host/discover.ts";
import { checkStart } from "./hook_check.ts";
import { ensurePrivateDir, openStateDir, resolveStateDirPath } from "../lib/state/state_dir.ts";
import { dirname, join, resolve } from "../lib/state/paths.ts";
import { readPolicyFile, recordReload } from "../lib/guard/state.ts";
import { shellWord } from "../lib/render/shell.ts";
import { GUARD_URI, guardPath, POLICY_FILE } from "../lib/guard/layout.ts";
import {
  describePolicies,
  type GuardPolicyFile,
  policiesForConnection,
  type PolicyFileReading,
} from "../lib/guard/policy.ts";
import {
  checkCommand,
  type CheckoutReader,
  type CheckProgram,
  DEFAULT_DEADLINE_SECONDS,
  DEFAULT_HOOKS_DIR,
  findTimeout,
  foreignHookAdvice,
  GUARD_SCOPE,
  HOOK_FILE_NAME,
  hookFileProblems,
  type HookInspection,
  type HookSettings,
  inspectHook,
  installCommand,
  installHook,
  MAX_DEADLINE_SECONDS,
  otherHookProblem,
  otherHooksIn,
  readByLibvirt,
  removeHook,
  renderHookScript,
  replaceableHookSettings,
  type StaleBundle,
  staleBundle,
  staleCheckoutBundle,
  sysfsTreePresent,
  trustedOwners,
  unreadableHookReason,
  unsafeHookPaths,
} from "../lib/guard/hook_file.ts";
import { findHookDaemons, noDaemonMessage, reloadDaemons } from "../lib/guard/daemon.ts";
import { libcSysfsReader, signalProcess } from "../ffi/libc_fs.ts";

/** One parsed `hook` subcommand line. */
type HookLine<N extends string> = Extract<Parsed<typeof HOOK>, { subcommand: N }>;

/** The running program, for the hook's command line. */
function currentProgram(): CheckProgram {
  return {
    execPath: Deno.execPath(),
    mainModule: Deno.mainModule,
    standalone: Deno.build.standalone,
  };
}

/** The hook's Deno cache: in its state directory, private as that is. */
function hookDenoDir(stateDir: string): string {
  return join(stateDir, "deno");
}

/** The settings `install` writes for this state directory, sysfs and deadline, from here. */
function settingsFor(
  options: { stateDir: string; sysfs: string; deadline: number; timeout: string },
): HookSettings {
  return {
    version: VERSION,
    deadline: options.deadline,
    timeout: options.timeout,
    command: checkCommand(currentProgram(), options),
    // Deno's cache (the check's code cache) in the private state directory: not found through
    // the HOME libvirt passes, which may be another user's. HOME there too: Deno reads
    // $HOME/.npmrc (with HOME unset, the passwd entry's: /root) before any code runs and stops on
    // one it cannot read (HOME a file, a registry that is no URL), which refused every start.
    env: { DENO_DIR: hookDenoDir(options.stateDir), HOME: hookDenoDir(options.stateDir) },
    stateDir: options.stateDir,
    sysfs: options.sysfs,
  };
}

function parseDeadline(text: string | undefined): number {
  if (text === undefined) return DEFAULT_DEADLINE_SECONDS;
  // Digits alone: Number() also reads "0x10" as 16 and "6e2" as 600.
  const n = /^\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_DEADLINE_SECONDS) {
    throw new UsageError(
      `--deadline must be a whole number of seconds from 1 to ${MAX_DEADLINE_SECONDS}, not "${text}"`,
    );
  }
  return n;
}

/** What the hook runs, in words: the entry script, or the compiled binary alone. */
function describeProgram(command: readonly string[]): string {
  const at = command.indexOf("--state-dir");
  const entry = command[at - 1] === "run" ? command[at - 3] : command[at - 1];
  return entry === command[0] ? command[0]! : `${command[0]} ${entry}`;
}

/** Reloads the daemons that run hooks, when the hook went into libvirt's own directory. */
function reloadMessages(hooksDir: string, stateDir: string): string[] {
  if (!readByLibvirt(hooksDir)) {
    return [
      `Not in ${DEFAULT_HOOKS_DIR}: libvirt's system daemon does not run it from ${hooksDir} (no daemon reloaded)`,
    ];
  }
  const daemons = findHookDaemons(libcSysfsReader());
  const messages = daemons.length === 0 ? [noDaemonMessage()] : [];
  for (const outcome of reloadDaemons(daemons, (pid) => signalProcess(pid, 1 /* SIGHUP */))) {
    messages.push(outcome.message);
    if (outcome.reloaded) recordReload(stateDir, outcome.daemon);
  }
  return messages;
}

/**
 * The guard policies the hook obeys from `stateDir` (recorded there by an earlier `apply`), said
 * at install: a `guard: off` recorded for another hook, or long ago, would otherwise take effect
 * unseen. Marked when the hook this install replaces read another directory.
 */
function policyMessages(stateDir: string, previous: string | null): string[] {
  const { file, problem } = hookPolicies(stateDir);
  if (problem !== null) return [`Its guard policies: ${problem}`];
  if (file === null || Object.keys(file.vms).length === 0) {
    return ["Its guard policies: every VM enforces (none recorded)"];
  }
  const moved = previous !== null && previous !== stateDir
    ? `; the hook it replaces read ${previous}, so these were not recorded for it`
    : "";
  return [
    `Its guard policies, recorded in ${stateDir} from ${file.config}: ${
      describePolicies(file).join("; ")
    }${moved} (passthrough apply records the config's current ones)`,
  ];
}

/**
 * The policies the hook reading `stateDir` obeys: those recorded there over the system daemon
 * (or in a file from before that was said); one a rehearsal recorded over another connection
 * counts for none, and its problem says so.
 */
function hookPolicies(stateDir: string): PolicyFileReading {
  const reading = readPolicyFile(stateDir);
  return reading.file === null ? reading : policiesForConnection(reading.file, {
    path: guardPath(stateDir, POLICY_FILE),
    connection: GUARD_URI,
  });
}

/**
 * What `file` does not say of itself: the connection it was recorded over, in files from before
 * that was recorded (the hook obeys them as written, whichever apply wrote them).
 */
function unsaidConnection(file: GuardPolicyFile): string {
  return file.uri === undefined
    ? `; recorded before passthrough noted the connection of the apply: if that was not ${GUARD_URI} (a test world, a session), run passthrough apply -c ${GUARD_URI}`
    : "";
}

/** `passthrough hook install`: writes the hook, says what it runs and obeys, reloads the daemon. */
function install({ values }: HookLine<"install">, io: CliIo): number {
  const hooksDir = values["hooks-dir"] ?? DEFAULT_HOOKS_DIR;
  const deadline = parseDeadline(values.deadline);
  const stateDir = resolveStateDirPath({ flag: values["state-dir"], env: io.env });
  const timeout = findTimeout();
  if (timeout === null) {
    throw new Error(`Cannot find coreutils' "timeout" (looked for /usr/bin/timeout, /bin/timeout)`);
  }
  // This host's sysfs however spelled (`/sys/.`, a link, another mount of it) is written as
  // `/sys`: the check reads the host's use (its disks, its route) only there.
  // Another tree by its absolute path: libvirt runs hooks from "/", not from here.
  const sysfs = values.sysfs === undefined || liveSysfsRoot(values.sysfs) !== null
    ? LIVE_SYSFS
    : resolve(values.sysfs);
  // A hook over no tree would refuse every start, having checked nothing.
  // Through libc: the CLI's Deno stats nothing under /dev (a tree in /dev/shm), the check can.
  const reader = libcSysfsReader({ fewCalls: true });
  if (!sysfsTreePresent(sysfs, reader)) {
    // A mistyped path or a loop is said to be one, in discovery's words.
    throw new Error(
      `${sysfsRootError(sysfs, reader).message} (the hook would refuse every VM start, checking ` +
        `nothing)`,
    );
  }
  const settings = settingsFor({ stateDir, sysfs, deadline, timeout });
  // Before anything is created: a refused install leaves no directory behind.
  const unsafe = unsafeHookPaths(settings, join(hooksDir, HOOK_FILE_NAME), trustedOwners());
  if (unsafe.length > 0) {
    const chmods = unsafe.flatMap((u) => u.fix === null ? [] : [u.fix]);
    throw new Error(
      `Refusing to install the start guard: libvirt runs it as root at every VM start, and ${
        unsafe.map((u) => u.text).join("; ")
      }, so another user could change what runs or the state it obeys. Install passthrough, and ` +
        `keep its --state-dir, where only root can write (README, "On a real host": ` +
        `/opt/passthrough), or fix the owner and mode${
          chmods.length === 0 ? "" : ` (${chmods.join("; ")})`
        }, then install again`,
    );
  }
  // Refused before anything is created too: a file there that is not a passthrough hook.
  const previous = replaceableHookSettings(hooksDir);
  // Checked now, so an unsafe state directory is reported here rather than at a VM's start.
  const state = openStateDir(stateDir);
  // The hook's code caches, which root runs at every start: checked as the state directory's
  // other folders are, so a link there is not followed out of it, nor a file met by a bare mkdir.
  ensurePrivateDir(hookDenoDir(state.path), state);
  const result = installHook(hooksDir, renderHookScript(settings));
  const messages = [
    result.changed
      ? `Installed the start guard: ${result.path}`
      : `The start guard is already installed and up to date: ${result.path}`,
    `It runs ${
      describeProgram(settings.command)
    } (deadline ${settings.deadline} s, state in ${stateDir})`,
    ...policyMessages(stateDir, previous?.stateDir ?? null),
    // Unchanged: nothing new for the daemon to see.
    ...(result.changed ? reloadMessages(hooksDir, stateDir) : []),
    ...otherHookNotes(hooksDir),
  ];
  io.out(
    values.json
      ? `${JSON.stringify({ path: result.path, changed: result.changed, messages }, null, 2)}\n`
      : `${messages.join("\n")}\n`,
  );
  return 0;
}

/**
 * Problems that make the installed hook wrong or useless (`[]` when it is fine), and the fix:
 * `hook install` with the hook's settings, or `setup.sh` where its bundle is stale.
 */
function hookProblems(
  inspection: HookInspection,
  expected: string | null,
): { problems: string[]; fix: string | null } {
  const found = hookFileFindings(inspection, expected);
  if (inspection.others.length === 0) return found;
  // Never removed by passthrough (it did not write them there): each by hand.
  const removals = inspection.others.map((path) => `rm ${shellWord(path)}`);
  return {
    problems: [...found.problems, ...inspection.others.map(otherHookProblem)],
    fix: [...(found.fix === null ? [] : [found.fix]), ...removals].join("; "),
  };
}

/** {@link hookProblems} of the hook file itself and an install's leftovers. */
function hookFileFindings(
  inspection: HookInspection,
  expected: string | null,
): { problems: string[]; fix: string | null } {
  const leftovers = inspection.leftovers.map((path) =>
    `${path} is left from an interrupted install (libvirt runs it if it is executable)`
  );
  const fix = installCommand(inspection);
  if (!inspection.present) {
    return { problems: [`No hook at ${inspection.path}`, ...leftovers], fix };
  }
  if (inspection.settings === null) {
    // Another passthrough's hook is replaced by an install; a user's own never is.
    return inspection.ours
      ? { problems: [...leftovers, unreadableHookReason(inspection.format)], fix }
      : {
        problems: [`${inspection.path} is not a passthrough hook`],
        fix: `${foreignHookAdvice(inspection.path)}, then ${fix}`,
      };
  }
  const fileProblems = hookFileProblems(inspection, VERSION, fix, {
    staleBundle: hookStaleBundle(inspection.settings),
  });
  const problems = [...leftovers, ...fileProblems.map((p) => p.text)];
  if (
    expected !== null && problems.length === 0 &&
    Deno.readTextFileSync(inspection.path) !== expected
  ) {
    problems.push("not what 'hook install' writes from here now");
  }
  // Each problem's own fix (one another user could change is not fixed by installing again).
  const fixes = [...new Set(fileProblems.map((p) => p.fix))];
  return {
    problems,
    fix: problems.length === 0 ? null : fixes.length === 0 ? fix : fixes.join("; "),
  };
}

/** A note for each other passthrough hook in `hooksDir`, which libvirt runs too. */
function otherHookNotes(hooksDir: string): string[] {
  return otherHooksIn(hooksDir).map((path) =>
    `Note: ${otherHookProblem(path)}: rm ${shellWord(path)}`
  );
}

/** The file system, as {@link staleBundle} reads a checkout. */
const CHECKOUT_READER: CheckoutReader = {
  modified(path) {
    try {
      return Deno.statSync(path).mtime?.getTime() ?? null;
    } catch {
      return null;
    }
  },
  listDir(path) {
    try {
      return [...Deno.readDirSync(path)].map((e) => e.name);
    } catch {
      return null;
    }
  },
  kind(path) {
    try {
      const info = Deno.lstatSync(path);
      return info.isFile ? "file" : info.isDirectory ? "directory" : null;
    } catch {
      return null;
    }
  },
  readFile(path) {
    try {
      return Deno.readFileSync(path);
    } catch {
      return null;
    }
  },
};

/**
 * The bundle of this checkout that the hook runs, when it is not built from the checkout's
 * sources ({@link staleBundle}): for `hook status` and `doctor`. While this program runs the
 * checkout's sources (`main.ts`), or its bundle (`dist/bin/main.js`), as `bin/passthrough` does
 * while no source is newer: after an update that kept the files' times, that bundle is the stale
 * one.
 */
export function hookStaleBundle(settings: HookSettings): StaleBundle | null {
  const { checkout } = runningCheckout();
  return staleBundle(settings, checkout, CHECKOUT_READER);
}

/**
 * The checkout this program runs from, and whether from its bundle (`dist/bin/main.js`, which
 * `bin/passthrough` runs while no source is newer) or its sources (`main.ts`).
 */
function runningCheckout(): { checkout: string | null; bundled: boolean } {
  const main = Deno.mainModule;
  const path = main.startsWith("file:") ? decodeURIComponent(new URL(main).pathname) : "";
  if (path.endsWith("/dist/bin/main.js")) {
    return { checkout: dirname(dirname(dirname(path))), bundled: true };
  }
  return { checkout: path.endsWith("/main.ts") ? dirname(path) : null, bundled: false };
}

/**
 * The bundle this program runs, when it was built from other sources than those of its
 * checkout, though none is newer (so `bin/passthrough` took it): for `doctor`, as the old code
 * otherwise runs unsaid.
 */
export function runningStaleBundle(): StaleBundle | null {
  const { checkout, bundled } = runningCheckout();
  if (checkout === null || !bundled) return null;
  const stale = staleCheckoutBundle(checkout, CHECKOUT_READER);
  return stale?.why === "other-sources" ? stale : null;
}

function status({ values }: HookLine<"status">, io: CliIo): number {
  const inspection = inspectHook(
    values["hooks-dir"] ?? DEFAULT_HOOKS_DIR,
    trustedOwners(),
    libcSysfsReader({ fewCalls: true }),
  );
  const s = inspection.settings;
  let expected: string | null = null;
  if (s !== null) {
    try {
      expected = renderHookScript({ ...settingsFor(s), env: s.env });
    } catch {
      // This program cannot install a hook (not a local file): nothing to compare with.
    }
  }
  const { problems, fix } = hookProblems(inspection, expected);
  const policies = s === null ? null : hookPolicies(s.stateDir);
  if (values.json) {
    const policy = policies === null
      ? {}
      : { policies: policies.file, policyProblem: policies.problem };
    io.out(
      `${
        JSON.stringify({ ...inspection, toolVersion: VERSION, problems, fix, ...policy }, null, 2)
      }\n`,
    );
    return problems.length === 0 ? 0 : 1;
  }
  const lines = [`Hook: ${inspection.path}`];
  if (s !== null) {
    lines.push(
      `  installed by passthrough ${s.version} (this is ${VERSION}); ${
        inspection.executable ? "executable" : "NOT executable"
      }`,
      `  runs: ${s.command.join(" ")}`,
      `  deadline: ${s.deadline} s with ${s.timeout}; state: ${s.stateDir}; sysfs: ${s.sysfs}`,
      ...inspection.programs.map((p) => `  ${p.exists ? "present" : "MISSING"}: ${p.path}`),
      `  policies: ${
        policies?.problem ??
          (policies?.file
            ? `${describePolicies(policies.file).join("; ")} (from ${policies.file.config}${
              unsaidConnection(policies.file)
            })`
            : "every VM enforces (no guard: in the config at the last apply)")
      }`,
      `  guards: ${GUARD_SCOPE}`,
    );
  }
  lines.push(
    problems.length === 0 ? "  up to date" : problems.map((p) => `  problem: ${p}`).join("\n"),
  );
  if (fix !== null) lines.push(`  fix: ${fix}`);
  io.out(`${lines.join("\n")}\n`);
  return problems.length === 0 ? 0 : 1;
}

function remove({ values }: HookLine<"remove">, io: CliIo): number {
  const dir = values["hooks-dir"] ?? DEFAULT_HOOKS_DIR;
  const { path } = inspectHook(dir);
  const before = otherHooksIn(dir);
  const { removed, leftovers } = removeHook(dir);
  const after = otherHooksIn(dir);
  // A link to the hook now leads nowhere, which libvirt skips: until an install puts the hook
  // back, when it runs it twice again.
  const dangling = before.filter((other) => !after.includes(other) && isDanglingLink(other));
  io.out(
    [
      removed ? `Removed the start guard: ${path}` : `No hook at ${path}`,
      ...leftovers.map((leftover) => `Removed ${leftover}, left from an interrupted install`),
      ...otherHookNotes(dir),
      ...dangling.map((link) =>
        `Note: ${link} led to it and now leads nowhere (an install would make it run the hook a ` +
        `second time): rm ${shellWord(link)}`
      ),
    ].join("\n") + "\n",
  );
  return 0;
}

/** Whether `path` is a symbolic link that leads to nothing. */
function isDanglingLink(path: string): boolean {
  try {
    if (!Deno.lstatSync(path).isSymlink) return false;
    Deno.statSync(path);
    return false;
  } catch (error) {
    return error instanceof Deno.errors.NotFound;
  }
}

/** The hook's own check (`cli/hook_check.ts`), for bundles without it and compiled binaries. */
function check({ values, positionals }: HookLine<"run">, io: CliIo): Promise<number> {
  const stateDir = values["state-dir"];
  if (stateDir === undefined) throw new UsageError("Missing --state-dir DIR");
  const [vm, operation, subOperation] = positionals;
  // Through libc: the CLI (and a compiled binary) runs with the documented permissions, and
  // Deno refuses its own reads under /sys and /proc to anything less than --allow-all.
  // This host's sysfs however spelled, as `install` decides it: never a tree without host use.
  const sysfs = values.sysfs ?? LIVE_SYSFS;
  const live = liveSysfsRoot(sysfs);
  const hooksDir = values["hooks-dir"];
  return checkStart(
    {
      stateDir,
      sysfs: live ?? sysfs,
      ...(hooksDir === undefined ? {} : { hooksDir }),
      vm,
      operation,
      subOperation,
    },
    io.err,
    libcSysfsReader({ fewCalls: true }),
    live !== null,
  );
}

/** Runs `passthrough hook SUBCOMMAND`. */
export function run(parsed: Parsed<typeof HOOK>, io: CliIo): Promise<number> {
  switch (parsed.subcommand) {
    case "install":
      return Promise.resolve(install(parsed, io));
    case "status":
      return Promise.resolve(status(parsed, io));
    case "remove":
      return Promise.resolve(remove(parsed, io));
    case "run":
      return check(parsed, io);
  }
}
