/**
 * `passthrough guard allow VM`: lets the next start of VM go on once even when the start guard
 * refuses it (`virsh start` cannot pass a flag to a hook, so the allowance waits in the state
 * directory the installed hook reads).
 *
 * @module
 */

import type { CliIo } from "./context.ts";
import type { Parsed } from "./flags.ts";
import type { GUARD } from "./specs.ts";
import { allowNextStart, type GuardRefusalRecord, readRefusalRecords } from "../lib/guard/state.ts";
import { didYouMean } from "../lib/render/suggest.ts";
import { hostNeedsRemedy } from "../lib/guard/policy.ts";
import { DEFAULT_HOOKS_DIR, guardStateDir } from "../lib/guard/hook_file.ts";
import { errorText } from "../lib/render/error_text.ts";

/** Runs `passthrough guard allow VM`. */
export function run({ values, positionals }: Parsed<typeof GUARD>, io: CliIo): Promise<number> {
  const [vm] = positionals;
  const hooksDir = values["hooks-dir"] ?? DEFAULT_HOOKS_DIR;
  const { stateDir, hook } = guardStateDir(values["state-dir"], io.env, { hooksDir });
  const { allowance, path } = allowNextStart(stateDir, vm);
  // The hook takes it at prepare begin and cannot learn what comes after: a start libvirt,
  // QEMU or a later hook then fails has used it, which the user would otherwise learn only from
  // the next refusal.
  io.out(
    `The next start of ${JSON.stringify(vm)} goes on once even if the guard refuses it, and ` +
      `uses this allowance up even if libvirt, QEMU or another hook then fails it ` +
      `(until ${allowance.expires}; ${path})\n`,
  );
  // The records only inform: once the allowance is written, the command has done what it says.
  let records: GuardRefusalRecord[] | null = null;
  try {
    records = readRefusalRecords(stateDir);
  } catch (error) {
    io.err(`Note: cannot read the start guard's refusal records: ${errorText(error)}\n`);
  }
  const last = records?.find((r) => r.vm === vm)?.refusals ?? [];
  for (const refusal of last.filter((r) => r.hostNeeds !== null)) {
    io.out(
      `Note: its last refusal names ${refusal.address}, which the host needs (${refusal.hostNeeds}): ` +
        `an allowance does not let a start take it; ${hostNeedsRemedy(refusal, vm)}\n`,
    );
  }
  for (const refusal of last.filter((r) => r.kind === "unreadable")) {
    io.out(
      `Note: its last start was refused because ${refusal.reason}: an allowance does not let a ` +
        `start go on past that (what could not be read may be a device the host needs); fix it first\n`,
    );
  }
  // The allowance waits for any name; a misspelt one leaves the refused VM refused.
  // Records that could not be read say nothing of what the guard refused.
  const refused = records?.map((r) => r.vm) ?? [];
  if (records !== null && !refused.includes(vm)) {
    io.out(
      `Note: the guard has no refusal recorded for ${JSON.stringify(vm)}${didYouMean(vm, refused)}${
        refused.length > 0
          ? `; it last refused ${refused.map((r) => JSON.stringify(r)).join(", ")}`
          : ""
      }\n`,
    );
  }
  if (hook === null) {
    io.out(`Note: no start guard is installed in ${hooksDir}\n`);
  } else if (hook.stateDir !== stateDir) {
    io.out(`Note: the installed hook reads ${hook.stateDir}, not ${stateDir}\n`);
  }
  return Promise.resolve(0);
}
