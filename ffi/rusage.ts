/**
 * The CPU time of this process's waited-for children, from libc's `getrusage(RUSAGE_CHILDREN)`:
 * the benchmarks read it before and after each command they run, so a command's CPU time (its
 * own processes' and theirs, as each waited for the next) is the difference, at microsecond
 * resolution (GNU time gives 10 ms), and moves less than wall time with the machine's other load.
 *
 * @module
 */

import { libc } from "./libc.ts";

/** `RUSAGE_CHILDREN`: the children that have been waited for. */
const RUSAGE_CHILDREN = -1;
/** `struct rusage` on 64-bit Linux: `ru_utime` at 0, `ru_stime` at 16, each `{ sec, usec }`. */
const RUSAGE_BYTES = 144;

/**
 * User plus system CPU time, in milliseconds, of every child process this process has waited
 * for so far (and of their own waited-for children).
 *
 * @example
 * ```ts
 * import { assertOk } from "../tests/helpers/assert.ts";
 * const before = childrenCpuMs();
 * await new Deno.Command("true").output();
 * assertOk(childrenCpuMs() >= before);
 * ```
 */
export function childrenCpuMs(): number {
  const usage = new BigInt64Array(RUSAGE_BYTES / 8);
  if (libc().getrusage(RUSAGE_CHILDREN, new Uint8Array(usage.buffer)) !== 0) {
    throw new Error("getrusage(RUSAGE_CHILDREN) failed");
  }
  const [userSec, userUsec, systemSec, systemUsec] = usage;
  return Number(userSec! + systemSec!) * 1000 + Number(userUsec! + systemUsec!) / 1000;
}
