/**
 * A deadline the kernel keeps: `alarm(2)` delivers `SIGALRM` after so many seconds, and its
 * default action ends the process whatever its thread is blocked in (a read of a hung device's
 * attribute, standard input that never ends), where no JavaScript timer could run. The start
 * guard's check arms it before it reads anything: libvirt waits for the hook with no time limit,
 * and the hook's shell turns the signal into a refusal (`lib/guard/hook_file.ts`). It replaces
 * running the check under coreutils' `timeout`, one process less at every VM start.
 *
 * @module
 */

/** `SIGALRM` on Linux (x86-64 and AArch64). */
export const SIGALRM = 14;

/** The longest deadline accepted, in seconds (`hook install --deadline` allows 600). */
const MAX_SECONDS = 3600;

/**
 * Ends this process with `SIGALRM` in `seconds` (a whole number from 1 to 3600) unless it exits
 * first; arming again replaces the deadline. The signal's disposition is set to the default
 * first: one inherited as ignored (dispositions survive `exec`) would void the alarm. Bound
 * without fast-call trampolines (each result declared as a struct of one integer, as
 * `ffi/libc_fs.ts` does for its few calls): two calls do not pay for compiling them.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * const child = new Deno.Command(Deno.execPath(), {
 *   args: ["eval", `import { armDeadline } from "${import.meta.resolve("./deadline.ts")}";
 *     armDeadline(1); Deno.stdin.readSync(new Uint8Array(1));`],
 *   stdin: "piped",
 * }).spawn();
 * const status = await child.status;
 * await child.stdin.close();
 * assertEquals(status.signal, "SIGALRM");
 * ```
 */
export function armDeadline(seconds: number): void {
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > MAX_SECONDS) {
    throw new RangeError(`A deadline is a whole number of seconds from 1 to ${MAX_SECONDS}`);
  }
  const { symbols } = Deno.dlopen("libc.so.6", {
    // sighandler_t signal(int signum, sighandler_t handler); SIG_DFL is the null pointer.
    signal: { parameters: ["i32", "pointer"], result: { struct: ["pointer"] } },
    // unsigned int alarm(unsigned int seconds);
    alarm: { parameters: ["u32"], result: { struct: ["u32"] } },
  });
  symbols.signal(SIGALRM, null);
  symbols.alarm(seconds);
}
