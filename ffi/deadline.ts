/**
 * A bound on how long one libvirt call may block: without it a stopped, deadlocked or overloaded
 * libvirtd hangs every command forever (libvirt's client sends keepalives only with an event loop
 * running, and the calls here block the one thread that could run it; a JavaScript timer cannot
 * fire either while that thread is in C).
 *
 * So the watchdog is libc's: two POSIX timers (`timer_create` with `SIGEV_THREAD`), armed before
 * each libvirt call and disarmed after it. When the first expires, glibc's own timer thread (which
 * never touches libvirt, whose error callback is process-global) runs `system()` with a prepared
 * command that prints the message on this process's standard error; a second later the other
 * calls `_exit(1)` on a thread of its own: the process ends with status 1 wherever the call is
 * stuck. No signal is involved: SIGINT, SIGTERM and SIGHUP keep the handling `apply` gives them
 * (held back during a define), and `nohup` keeps its meaning. A call that answers after the
 * message was printed ends the process too, as the message said. Arming and disarming cost four
 * `timer_settime` calls and a `timer_gettime` (a few microseconds); nothing runs unless a call
 * outlives the deadline.
 *
 * Linux with glibc only (`SIGEV_THREAD` is glibc's); where a piece is missing, no deadline is
 * armed and calls wait as libvirt makes them.
 *
 * @module
 */

import { LITTLE_ENDIAN } from "./libc.ts";
import { redactSecrets } from "../lib/domain/secrets.ts";
import { terminalSafe } from "../lib/render/terminal.ts";
import { redactedJson } from "../lib/render/redact.ts";
import { shellQuote } from "../lib/render/shell.ts";

/**
 * libc's timer calls the watchdog needs, bound on first use. Only `timer_settime` and
 * `timer_gettime`, five calls per libvirt call, get Deno's compiled fast call; the others run once
 * or twice, and their results, declared as a struct of the one integer or pointer (returned in the
 * same register), spare the compilation (see `libc.ts`).
 */
const WATCHDOG_SYMBOLS = {
  // int timer_create(clockid_t clockid, struct sigevent *sevp, timer_t *timerid);
  timer_create: { parameters: ["i32", "buffer", "buffer"], result: { struct: ["i32"] } },
  // int timer_settime(timer_t timerid, int flags, const struct itimerspec *new_value,
  //                   struct itimerspec *old_value);
  timer_settime: { parameters: ["pointer", "i32", "buffer", "buffer"], result: "i32" },
  // int timer_gettime(timer_t timerid, struct itimerspec *curr_value);
  timer_gettime: { parameters: ["pointer", "buffer"], result: "i32" },
  // void *dlsym(void *handle, const char *symbol);  (glibc 2.34 and later: in libc itself)
  dlsym: { parameters: ["pointer", "buffer"], result: { struct: ["pointer"] } },
} as const satisfies Deno.ForeignLibraryInterface;

type WatchdogSymbols = Deno.DynamicLibrary<typeof WATCHDOG_SYMBOLS>["symbols"];

const CLOCK_MONOTONIC = 1;
const SIGEV_THREAD = 2;
/** How long after the message the process ends, so that `sh` has printed it. */
const GRACE_SECONDS = 1;
/**
 * Room for the command `system()` runs (with `doctor`'s findings); its address is fixed when the
 * timer is created.
 */
const COMMAND_BYTES = 16384;
/** How much of a URI too long for that room the message keeps. */
const SHORT_TARGET = 200;

interface Watchdog {
  libc: WatchdogSymbols;
  /** Runs `system(command)`: the message. */
  say: Deno.PointerValue;
  /** Runs `_exit(1)`, {@link GRACE_SECONDS} later. */
  end: Deno.PointerValue;
  command: Uint8Array<ArrayBuffer>;
  armSay: Uint8Array<ArrayBuffer>;
  armEnd: Uint8Array<ArrayBuffer>;
  disarm: Uint8Array<ArrayBuffer>;
  /** What `say` had left when disarmed (its it_value zero once it fired), and as integers. */
  left: Uint8Array<ArrayBuffer>;
  leftValue: BigInt64Array<ArrayBuffer>;
}

/** The watchdog once created; `null` when this system cannot have one. */
let watchdog: Watchdog | null | undefined;
/** The deadline in force, in seconds; `null`: calls wait as long as libvirt makes them. */
let seconds: number | null = null;
/** Where the deadline's libvirt is (`"qemu:///system"`, or how its default is named). */
let target = "";
/** What the message starts with (`passthrough plan`) and ends with (how to wait longer). */
let who = "passthrough";
let hint: string | null = null;
/** The call in flight, when one needs more said than the default (a define). */
let note: string | null = null;
/** Whether the failure is also reported as `--json` reports errors, on standard output. */
let json = false;
/** What standard output gets before the message, from its reason (see {@link withDeadlineOutput}). */
let output: ((reason: string) => string) | null = null;
/**
 * The message the timer's command prints, and its JSON report (or `null`), for the one case
 * this thread prints them itself.
 */
let message = "";
let report: string | null = null;
let shown: string | null = null;

const encoder = new TextEncoder();

function cString(text: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(text.replaceAll("\0", "") + "\0");
}

/**
 * A timer whose expiry runs `run(value)` on a thread of glibc's (`SIGEV_THREAD`); `null` when it
 * cannot be made.
 */
function threadTimer(
  libc: WatchdogSymbols,
  run: Deno.PointerObject,
  value: bigint,
): Deno.PointerValue | undefined {
  // struct sigevent: sigev_value at 0, sigev_signo at 8, sigev_notify at 12, then
  // _sigev_thread's _function at 16 and _attribute at 24 (64 bytes on 64-bit Linux).
  const event = new Uint8Array(64);
  const view = new DataView(event.buffer);
  view.setBigUint64(0, value, LITTLE_ENDIAN);
  view.setInt32(12, SIGEV_THREAD, LITTLE_ENDIAN);
  view.setBigUint64(16, BigInt(Deno.UnsafePointer.value(run)), LITTLE_ENDIAN);
  const id = new Uint8Array(8);
  const status = libc.timer_create(CLOCK_MONOTONIC, event, id);
  if (new DataView(status.buffer).getInt32(0, LITTLE_ENDIAN) !== 0) return undefined;
  return Deno.UnsafePointer.create(new DataView(id.buffer).getBigUint64(0, LITTLE_ENDIAN));
}

function createWatchdog(): Watchdog | null {
  let libc: WatchdogSymbols;
  try {
    libc = Deno.dlopen("libc.so.6", WATCHDOG_SYMBOLS).symbols;
  } catch {
    // glibc before 2.34 keeps timers in librt and dlsym in libdl; a libc that is not glibc
    // has no SIGEV_THREAD. No deadline there rather than a failing command.
    return null;
  }
  const symbol = (name: string) =>
    Deno.UnsafePointer.create(
      new DataView(libc.dlsym(null, cString(name)).buffer).getBigUint64(0, LITTLE_ENDIAN),
    );
  const exit = symbol("_exit");
  const system = symbol("system");
  if (exit === null || system === null) return null;
  // Never moved nor collected while this module lives: the timer's thread reads it.
  const command = new Uint8Array(COMMAND_BYTES);
  const say = threadTimer(
    libc,
    system,
    BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(command))),
  );
  // `_exit` takes the sigval as its int: 1, a runtime error's status.
  const end = threadTimer(libc, exit, 1n);
  if (say === undefined || end === undefined) return null;
  // struct itimerspec: it_interval (seconds, nanoseconds), then it_value; all zero disarms.
  const left = new Uint8Array(32);
  return {
    libc,
    say,
    end,
    command,
    armSay: new Uint8Array(32),
    armEnd: new Uint8Array(32),
    disarm: new Uint8Array(32),
    left,
    leftValue: new BigInt64Array(left.buffer),
  };
}

/** What a deadline's message says; see {@link deadlineMessage}. */
export interface DeadlineMessageFields {
  /** Where libvirt is, as the message shows it (`"qemu:///system"`). */
  target: string;
  seconds: number;
  /** What the message starts with; default `passthrough`. */
  who?: string | undefined;
  /** The call in flight, when it needs saying (`while defining "vm": ...`). */
  note?: string | null | undefined;
  /** The last words: how to wait longer. */
  hint?: string | null | undefined;
}

/**
 * The line the process prints when a libvirt call outlives the deadline, as every error is shown
 * (`main.ts`): a URI's password as `***`, and a control character of a URI or a VM's name
 * escaped. It never reaches the CLI's error boundary: `sh` prints it.
 *
 * @example
 * ```ts
 * import { deadlineMessage } from "./deadline.ts";
 * const line = deadlineMessage({ target: '"qemu:///system"', seconds: 60 });
 * if (!line.includes("did not answer in 60 s")) throw new Error(line);
 * const remote = deadlineMessage({ target: '"qemu+tcp://admin:pw@hv1/system"', seconds: 60 });
 * if (!remote.includes('"qemu+tcp://admin:***@hv1/system"')) throw new Error(remote);
 * ```
 */
export function deadlineMessage(fields: DeadlineMessageFields): string {
  return `${fields.who ?? "passthrough"}: ${deadlineReason(fields)}`;
}

/** {@link deadlineMessage} without whose it is: what `--json` reports as the error's message. */
function deadlineReason(fields: DeadlineMessageFields): string {
  const inFlight = fields.note === null || fields.note === undefined ? "" : `, ${fields.note}`;
  const end = fields.hint === null || fields.hint === undefined ? "" : `; ${fields.hint}`;
  const line = `libvirt at ${fields.target} did not answer in ${fields.seconds} s${inFlight}: ` +
    `is libvirtd running? \`systemctl status libvirtd\`${end}`;
  return terminalSafe(redactSecrets(line), false);
}

/** Writes the command the timer's thread runs, for the current message. */
function prepareCommand(dog: Watchdog): void {
  let text = deadlineCommand({ target, seconds: seconds ?? 0, who, note, hint }, true);
  // Output too long for the buffer is left out, and a URI too long is cut in the message, which
  // the exit never goes without.
  if (encoder.encode(text).length >= COMMAND_BYTES) {
    text = deadlineCommand({ target, seconds: seconds ?? 0, who, note, hint }, false);
  }
  if (encoder.encode(text).length >= COMMAND_BYTES) {
    // Redacted before it is cut: a password cut from its `@` would no longer read as one.
    const short = `${redactSecrets(target).slice(0, SHORT_TARGET)}..."`;
    text = deadlineCommand({ target: short, seconds: seconds ?? 0, who, note, hint }, false);
  }
  if (encoder.encode(text).length >= COMMAND_BYTES) text = "true";
  dog.command.fill(0);
  encoder.encodeInto(text, dog.command.subarray(0, COMMAND_BYTES - 1));
}

/**
 * The command that prints the message (and, under `--json`, its report; else, `withOutput`, what
 * {@link withDeadlineOutput} shows), kept for this thread.
 */
function deadlineCommand(fields: DeadlineMessageFields, withOutput: boolean): string {
  message = deadlineMessage(fields);
  const line = `printf '%s\\n' ${shellQuote(message)} >&2`;
  // Under --json the failure is on standard output too, as every error is (`main.ts`).
  report = json
    ? redactedJson({ error: { kind: "runtime", message: deadlineReason(fields) } }).trimEnd()
    : null;
  shown = json || !withOutput || output === null ? null : output(deadlineReason(fields));
  if (report !== null) return `printf '%s\\n' ${shellQuote(report)}; ${line}`;
  return shown === null ? line : `printf '%s' ${shellQuote(shown)}; ${line}`;
}

/**
 * Bounds every later libvirt call of this process by `wait` seconds (`null` or `0`: no bound),
 * naming `fields.target` (`"qemu:///system"`) in the message. Returns whether a deadline is now
 * armed around calls (`false` without one, and where this system cannot have one).
 */
export function setLibvirtDeadline(
  wait: number | null,
  fields: {
    target: string;
    who?: string | undefined;
    hint?: string | undefined;
    /** Report the failure on standard output too, as `--json` reports errors. */
    json?: boolean | undefined;
  },
): boolean {
  if (wait === null || !(wait > 0)) {
    seconds = null;
    return false;
  }
  watchdog ??= createWatchdog();
  if (watchdog === null) return false;
  seconds = wait;
  target = fields.target;
  who = fields.who ?? "passthrough";
  hint = fields.hint ?? null;
  json = fields.json === true;
  const whole = Math.floor(wait);
  // At least a nanosecond: a zero it_value arms nothing, and reads as expired after the call.
  const nanoseconds = BigInt(
    Math.min(999_999_999, Math.max(whole === 0 ? 1 : 0, Math.round((wait - whole) * 1e9))),
  );
  const say = new DataView(watchdog.armSay.buffer);
  say.setBigInt64(16, BigInt(whole), LITTLE_ENDIAN);
  say.setBigInt64(24, nanoseconds, LITTLE_ENDIAN);
  const end = new DataView(watchdog.armEnd.buffer);
  end.setBigInt64(16, BigInt(whole + GRACE_SECONDS), LITTLE_ENDIAN);
  end.setBigInt64(24, nanoseconds, LITTLE_ENDIAN);
  prepareCommand(watchdog);
  return true;
}

/** Names the deadline's libvirt anew (its canonical URI, once open). */
export function setLibvirtDeadlineTarget(where: string): void {
  if (seconds === null || watchdog === null || watchdog === undefined) return;
  target = where;
  prepareCommand(watchdog);
}

/**
 * Runs `call` with `text` said of it should it outlive the deadline (`while defining "vm":
 * whether that define took effect is unknown`).
 */
export function withDeadlineNote<T>(text: string, call: () => T): T {
  if (seconds === null || watchdog === null || watchdog === undefined) return call();
  note = text;
  prepareCommand(watchdog);
  try {
    return call();
  } finally {
    note = null;
    prepareCommand(watchdog);
  }
}

/**
 * Runs `call` with `show(reason)` written on standard output before the message should it outlive
 * the deadline (`doctor`'s findings so far, its libvirt one saying why); not under `--json`, whose
 * report is the output then.
 */
export function withDeadlineOutput<T>(show: (reason: string) => string, call: () => T): T {
  output = show;
  if (watchdog !== null && watchdog !== undefined && seconds !== null) prepareCommand(watchdog);
  try {
    return call();
  } finally {
    output = null;
    if (watchdog !== null && watchdog !== undefined && seconds !== null) prepareCommand(watchdog);
  }
}

/** Whether a deadline is in force (see {@link setLibvirtDeadline}). */
export function libvirtDeadlineArmed(): boolean {
  return seconds !== null && watchdog !== null && watchdog !== undefined;
}

/**
 * Blocks this thread until the `end` timer ends the process ({@link GRACE_SECONDS} after the
 * message began); should it not, exits all the same.
 */
function awaitEnd(): never {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, (GRACE_SECONDS + 1) * 1000);
  Deno.exit(1);
}

/**
 * `symbols` with each function armed by the deadline while it runs: one object, made once by
 * the caller (`libvirt()`), so a call costs five more libc calls only while a deadline is set.
 */
export function guardSymbols<T extends object>(symbols: T): T {
  const guarded: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(symbols)) {
    if (typeof value !== "function") {
      guarded[name] = value;
      continue;
    }
    const call = value as (...args: unknown[]) => unknown;
    guarded[name] = (...args: unknown[]) => {
      const dog = watchdog;
      if (seconds === null || dog === null || dog === undefined) return call(...args);
      dog.libc.timer_settime(dog.say, 0, dog.armSay, null);
      dog.libc.timer_settime(dog.end, 0, dog.armEnd, null);
      try {
        return call(...args);
      } finally {
        // Expired: the message is going out, so the run ends (the answer came too late), by
        // `end` as when no answer comes: exiting here could beat `sh` to the message. Not
        // disarmed then: reprogramming a timer drops its expiry signal not yet delivered
        // (Linux 6.13 and later), and with it the message.
        dog.libc.timer_gettime(dog.say, dog.left);
        if (dog.leftValue[2] === 0n && dog.leftValue[3] === 0n) awaitEnd();
        dog.libc.timer_settime(dog.say, 0, dog.disarm, dog.left);
        if (dog.leftValue[2] === 0n && dog.leftValue[3] === 0n) {
          // Expired between the look and the disarm, which may have dropped the message: said
          // here (twice, in this window of a microsecond, where a kernel keeps the signal).
          if (report !== null) Deno.stdout.writeSync(encoder.encode(`${report}\n`));
          if (shown !== null) Deno.stdout.writeSync(encoder.encode(shown));
          Deno.stderr.writeSync(encoder.encode(`${message}\n`));
          awaitEnd();
        }
        dog.libc.timer_settime(dog.end, 0, dog.disarm, null);
      }
    };
  }
  return guarded as T;
}
