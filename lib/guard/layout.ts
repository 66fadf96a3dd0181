/**
 * Where the start guard keeps its files in the state directory, named in this one place:
 *
 * ```text
 * STATE/guard/policy.json        the config's guard policies (written by apply)
 * STATE/guard/reloaded.json      the last daemon reload done by hook install (for doctor)
 * STATE/guard/allow/VM.json      one-shot allowances (guard allow; taken by the next start)
 * STATE/guard/refused/VM.json    the last refusal of each VM's start (the hook; shown by plan)
 * ```
 *
 * `VM` is the VM's name as `encodeVmName` writes it. `state.ts` reads and writes these files;
 * the hook's fast path only lists them, and so loads this module alone (it imports nothing that
 * loads a `node:` module).
 *
 * @module
 */

import { join } from "../state/paths.ts";
// A type only: erased, so the fast path still loads nothing of the check.
import type { GuardRefusal } from "./check.ts";

/**
 * Where libvirt (6.5 and later) looks for QEMU hook executables: `hook status` and `hook install`
 * read and write there unless `--hooks-dir` says otherwise.
 */
export const DEFAULT_HOOKS_DIR = "/etc/libvirt/hooks/qemu.d";

/**
 * The libvirt whose VMs the start guard's allowances are for: the system daemon, which runs the
 * hook as root, who alone reads the state directory (a session daemon runs it as its user, who
 * reads no allowance). `guard allow` reads the VM's UUID there, whatever the user's default URI.
 */
export const GUARD_URI = "qemu:///system";

/** The guard's folder in the state directory. */
export const GUARD_DIR = "guard";

/** The config's guard policies, as `apply` records them. */
export const POLICY_FILE = "policy.json";

/** The last daemon reload `hook install` did. */
export const RELOAD_FILE = "reloaded.json";

/**
 * The most refusals of one start the guard prints and records; the rest are counted. A domain
 * XML the guard reads (up to 16 MiB) can name many thousands of hostdevs: every one listed made a
 * line of libvirt's error per hostdev and a record larger than its readers take (they stop at
 * 1 MiB).
 */
export const MAX_LISTED_REFUSALS = 100;

/**
 * The refusals of one start the guard prints and records: at most {@link MAX_LISTED_REFUSALS},
 * in the check's order, those no allowance lifts (a device the host needs, what could not be
 * read) taken first: `guard allow` reads the record to say an allowance will not start the VM,
 * and such a refusal after 100 others would be in neither the lines nor the record.
 */
export function listedRefusals<T extends Pick<GuardRefusal, "hostNeeds" | "kind">>(
  refusals: readonly T[],
): T[] {
  if (refusals.length <= MAX_LISTED_REFUSALS) return [...refusals];
  const binding = (r: T) => r.hostNeeds !== null || r.kind === "unreadable";
  const listed = new Set(
    [...refusals.filter(binding), ...refusals.filter((r) => !binding(r))].slice(
      0,
      MAX_LISTED_REFUSALS,
    ),
  );
  return refusals.filter((r) => listed.has(r));
}

/** The guard's folders of one file per VM: allowances and refusal records. */
export type GuardFolder = "allow" | "refused";

/** Every {@link GuardFolder}. */
export const GUARD_FOLDERS: readonly GuardFolder[] = ["allow", "refused"];

/**
 * The path of `names` under the state directory's guard folder.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(guardPath("/var/lib/passthrough", "refused"), "/var/lib/passthrough/guard/refused");
 * ```
 */
export function guardPath(stateDir: string, ...names: string[]): string {
  return join(stateDir, GUARD_DIR, ...names);
}
