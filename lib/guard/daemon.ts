/**
 * The libvirt daemon that runs QEMU hooks: `libvirtd` (monolithic) or `virtqemud` (modular). It
 * looks for hooks when it starts and when it reloads (SIGHUP), so a new hook counts only after
 * one of them. Found through its pidfile under `/run`, and trusted only when `/proc/PID/comm`
 * names it, so a stale pidfile never gets a random process signalled.
 *
 * @module
 */

import type { SysfsReader } from "../host/sysfs.ts";
import { readAttribute, readWholeText } from "../host/sysfs.ts";
import { errorText } from "../render/error_text.ts";

/** The daemons that run QEMU hooks, with the pidfile each writes when it runs as root. */
const HOOK_DAEMONS = [
  { name: "libvirtd", pidfile: "/run/libvirtd.pid" },
  { name: "virtqemud", pidfile: "/run/virtqemud.pid" },
] as const;

/** A running daemon. */
export interface RunningDaemon {
  /** `libvirtd` or `virtqemud`. */
  name: string;
  /** Its process id. */
  pid: number;
  /** Seconds since the epoch when it started, or `null` when `/proc` does not say. */
  started: number | null;
}

/** Linux reports process start times in USER_HZ ticks, 100 per second on every architecture. */
const USER_HZ = 100;

/** When process `pid` started (seconds since the epoch), from `/proc`. */
function startTime(reader: SysfsReader, pid: number, procRoot: string): number | null {
  const stat = readAttribute(reader, `${procRoot}/${pid}/stat`);
  // btime follows a line per CPU and the interrupt counts, far past 64 KiB on a big server.
  const boot = /^btime (\d+)$/m.exec(readWholeText(reader, `${procRoot}/stat`) ?? "");
  if (stat === null || boot === null) return null;
  // The command name (field 2) may hold spaces and parentheses: count fields after the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[19]); // field 22, starttime
  return Number.isFinite(ticks) ? Number(boot[1]) + ticks / USER_HZ : null;
}

/**
 * The hook-running daemons running now.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "../host/sysfs.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/libvirtd.pid`, "4242\n");
 * // No /proc/4242/comm under this root: a stale pidfile, not a daemon.
 * assertEquals(findHookDaemons(denoFsReader(), { runDir: dir, procRoot: dir }), []);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function findHookDaemons(
  reader: SysfsReader,
  options: { runDir?: string; procRoot?: string } = {},
): RunningDaemon[] {
  const procRoot = options.procRoot ?? "/proc";
  const found: RunningDaemon[] = [];
  for (const daemon of HOOK_DAEMONS) {
    const pidfile = options.runDir === undefined
      ? daemon.pidfile
      : `${options.runDir}/${daemon.pidfile.slice(daemon.pidfile.lastIndexOf("/") + 1)}`;
    const text = readAttribute(reader, pidfile);
    const pid = text !== null && /^\d+$/.test(text) ? Number(text) : NaN;
    if (!Number.isSafeInteger(pid) || pid <= 1) continue;
    if (readAttribute(reader, `${procRoot}/${pid}/comm`) !== daemon.name) continue;
    found.push({ name: daemon.name, pid, started: startTime(reader, pid, procRoot) });
  }
  return found;
}

/** How to reload a daemon by hand. */
function reloadHint(daemon: RunningDaemon): string {
  return `systemctl reload ${daemon.name} (or kill -HUP ${daemon.pid})`;
}

/** The outcome of reloading one daemon. */
export interface ReloadOutcome {
  /** The daemon signalled. */
  daemon: RunningDaemon;
  /** Whether the signal was delivered. */
  reloaded: boolean;
  /** One sentence for the user. */
  message: string;
}

/** `errno` of a signal sent to a process that no longer exists. */
const ESRCH = 3;

/**
 * Sends SIGHUP to each daemon through `signal` and says what happened. A daemon that cannot be
 * signalled gets the command to reload it by hand, one that exited meanwhile (the error's
 * `errno` is `ESRCH`) the note that it reads the hook when it starts again.
 */
export function reloadDaemons(
  daemons: readonly RunningDaemon[],
  signal: (pid: number) => void,
): ReloadOutcome[] {
  return daemons.map((daemon) => {
    try {
      signal(daemon.pid);
      return {
        daemon,
        reloaded: true,
        message:
          `Reloaded ${daemon.name} (pid ${daemon.pid}) with SIGHUP: it runs the hook from now on`,
      };
    } catch (error) {
      // ESRCH: it exited since it was found (a socket-activated daemon ends after --timeout idle
      // seconds). It reads the hooks directory when it starts again, so nothing is left to do,
      // and `systemctl reload` of a stopped unit would only fail.
      if ((error as { errno?: unknown })?.errno === ESRCH) {
        return {
          daemon,
          reloaded: false,
          message: `${daemon.name} (pid ${daemon.pid}) exited before it could be reloaded: ` +
            `it runs the hook from its next start`,
        };
      }
      return {
        daemon,
        reloaded: false,
        message: `Cannot reload ${daemon.name} (pid ${daemon.pid}): ${errorText(error)}; run: ${
          reloadHint(daemon)
        }`,
      };
    }
  });
}

/** Says that no daemon runs, so none was reloaded. */
export function noDaemonMessage(): string {
  return `No running ${HOOK_DAEMONS.map((d) => d.name).join(" or ")} found (pidfiles ${
    HOOK_DAEMONS.map((d) => d.pidfile).join(", ")
  }): the daemon runs the hook from its next start`;
}
