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
   * The first signal caught so far, or `null`; lets the event loop turn first, so a signal that
   * came during synchronous work (a define) is seen.
   */
  check(): Promise<string | null>;
  /** The first signal caught, or `null`. */
  readonly caught: string | null;
  /** The exit status that tells a caller which signal stopped the run (130 for SIGINT). */
  readonly status: number;
}

/** Catches {@link SIGNALS} until disposed. */
export function deferSignals(): DeferredSignals {
  let caught: (typeof SIGNALS)[number] | null = null;
  const handlers = SIGNALS.map((signal) => {
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
    async check() {
      // A signal's listener runs only when the event loop turns, never inside a microtask.
      await new Promise((resolve) => setTimeout(resolve, 0));
      return caught;
    },
    get caught() {
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
