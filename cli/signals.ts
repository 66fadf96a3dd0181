/**
 * Signals that ask a run to stop (Ctrl-C, `kill`, a closed terminal or SSH session), held back
 * while `apply` defines: the default action ends the process wherever it is, between two VMs
 * swapping devices too, which leaves one device in two definitions and prints nothing of what was
 * done. Caught, a signal is seen at the next {@link DeferredSignals.check}, and a question waiting
 * for its answer gets none (end of input: `apply` quits).
 *
 * A libvirt call runs on the main thread and blocks it: a signal caught during one that never
 * returns (a daemon that stopped answering) is never seen. Ctrl-\ (SIGQUIT), not caught, still
 * ends the process at once.
 *
 * @module
 */

import { libcSysfsReader } from "../ffi/libc_fs.ts";
import { transportProgram } from "../lib/config/uri.ts";
import { redactSecrets } from "../lib/domain/secrets.ts";

/** Ctrl-C, `kill`'s default, and the hangup of a closed terminal or SSH session. */
const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

/** The conventional exit status of a process stopped by each (128 + its number). */
const STATUS: Record<(typeof SIGNALS)[number], number> = {
  SIGHUP: 129,
  SIGINT: 130,
  SIGTERM: 143,
};

/** The signals caught while it is not disposed (`using`), the first one kept. */
export interface DeferredSignals extends Disposable {
  /**
   * The first signal caught so far, or `null`; lets the event loop turn first. A signal that came
   * during synchronous work (a define) may be seen only at a later look, unless `settle` waits
   * for it: the last look before the report settles, the looks between VMs do not (a wait at each
   * would slow every apply, and a signal seen one VM later still stops it between VMs).
   */
  check(settle?: boolean): Promise<string | null>;
  /** The exit status that tells a caller which signal stopped the run (130 for SIGINT). */
  readonly status: number;
}

/** The signal numbers of `SIGNALS`, for the kernel's ignored-signals mask. */
const NUMBER: Record<(typeof SIGNALS)[number], number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

/**
 * Those of `SIGNALS` this process ignores (`SigIgn` of /proc/self/status): `nohup` ignores
 * SIGHUP, and a shell ignores SIGINT for a job it starts in the background without job control.
 * None when unreadable.
 */
function ignoredSignals(): Set<(typeof SIGNALS)[number]> {
  let mask: bigint;
  try {
    // Through libc: Deno opens nothing under /proc without --allow-all.
    const status = libcSysfsReader({ fewCalls: true }).readText("/proc/self/status") ?? "";
    const line = /^SigIgn:\s*([0-9a-f]+)$/m.exec(status);
    if (line === null) return new Set();
    mask = BigInt(`0x${line[1]}`);
  } catch {
    return new Set();
  }
  return new Set(SIGNALS.filter((s) => ((mask >> BigInt(NUMBER[s] - 1)) & 1n) === 1n));
}

/** Signals the process was started ignoring, kept ignored by a listener of their own. */
const keptIgnored = new Set<string>();

/**
 * Keeps ignored, for the rest of the process, those of `SIGNALS` it ignores now (`nohup`'s
 * SIGHUP, a background job's SIGINT). Deno handles SIGHUP, SIGINT and SIGTERM itself from its
 * first signal listener or child process on (`lspci`), and ends the process on one no listener
 * takes, an ignored one too: `nohup passthrough apply --yes` was killed, or stopped between VMs,
 * by the hangup nohup was for. A listener doing nothing, never removed, keeps what the caller
 * asked (it does not keep the process alive). Call it before any child process or listener.
 */
export function keepIgnoredSignals(): void {
  for (const signal of ignoredSignals()) {
    if (keptIgnored.has(signal)) continue;
    keptIgnored.add(signal);
    Deno.addSignalListener(signal, () => {});
  }
}

/**
 * Why a run over `uri` stopped by `signal` lost its connection, or `null`: Ctrl-C and a closed
 * terminal signal the terminal's whole foreground process group, so the ssh (or `ext` program)
 * libvirt runs there to carry the connection gets them too and ends, closing it under a define,
 * whose outcome is then unknown; `kill PID` signals this process alone. Said when `unknown` (a
 * define's outcome is, or a define was made but its read-back failed): a stop at a question, with
 * nothing in flight, lost nothing.
 */
export function connectionLostNote(
  command: "apply" | "rollback",
  { signal, uri, unknown }: { signal: string; uri: string; unknown: boolean },
): string | null {
  const program = transportProgram(uri);
  if (program === null || !unknown || (signal !== "SIGINT" && signal !== "SIGHUP")) return null;
  const what = program === "ssh" ? "the ssh" : "the program of the ext transport";
  const stop = command === "apply" ? "finish the VM it is defining" : "finish its define";
  return redactSecrets(
    `passthrough ${command}: the ${signal === "SIGINT" ? "Ctrl-C" : "hangup"} also ended ` +
      `${what} libvirt runs for "${uri}", which closed the connection: what failed above may ` +
      `have been defined even so, as its line says; to stop ${command} over ${program} and let ` +
      `it ${stop}, send SIGTERM to its process alone (kill PID)`,
  );
}

/** Catches `SIGNALS` until disposed, but those the process ignores (they stay ignored). */
export function deferSignals(): DeferredSignals {
  let caught: (typeof SIGNALS)[number] | null = null;
  keepIgnoredSignals();
  const handlers = SIGNALS.filter((signal) => !keptIgnored.has(signal)).map((signal) => {
    const handler = () => {
      if (caught !== null) return;
      caught = signal;
      // A question waiting for its answer gets none: the pending read is cancelled and reads
      // as end of input (cli/io.ts), so `apply` quits there instead of waiting.
      try {
        Deno.stdin.close();
      } catch {
        // Closed already.
      }
    };
    Deno.addSignalListener(signal, handler);
    return { signal, handler };
  });
  return {
    async check(settle = false) {
      // A signal's listener runs only when the event loop turns, never inside a microtask, and
      // one that came during a blocking call (a define) only once the runtime has waited for
      // I/O: a timer already due (0 ms) missed about 1 in 200 such signals, 10 ms none in 1000.
      await new Promise((resolve) => setTimeout(resolve, settle ? 10 : 0));
      // On a loaded machine the 10 ms timer can fall due in the same turn as the signal's
      // delivery, and timers run first in a turn: one more turn lets the listener run.
      if (settle && caught === null) await new Promise((resolve) => setTimeout(resolve, 0));
      return caught;
    },
    get status() {
      return caught === null ? 0 : STATUS[caught];
    },
    [Symbol.dispose]() {
      for (const { signal, handler } of handlers) Deno.removeSignalListener(signal, handler);
    },
  };
}
