/**
 * `passthrough backups [VM]`: the backups in the state directory, newest first.
 *
 * @module
 */

import type { CliIo } from "./context.ts";
import type { Parsed } from "./flags.ts";
import type { BACKUPS } from "./specs.ts";
import { renderTable } from "./table.ts";
import { type BackupEntry, listBackups } from "../lib/state/backups.ts";
import { openStateDir, resolveStateDirPath, StateDirError } from "../lib/state/state_dir.ts";

/** Runs `passthrough backups [VM]`; writes nothing. */
export function run(
  { values, positionals: [vm] }: Parsed<typeof BACKUPS>,
  io: CliIo,
): Promise<number> {
  const stateDir = resolveStateDirPath({ flag: values["state-dir"], env: io.env });
  let entries: BackupEntry[];
  try {
    // Read-only: a missing state directory simply has no backups; an unsafe one is refused.
    entries = listBackups(openStateDir(stateDir, { write: false }), vm);
  } catch (error) {
    if (!(error instanceof StateDirError && error.problem === "missing")) throw error;
    entries = [];
  }
  if (values.json) {
    io.out(`${JSON.stringify(entries, null, 2)}\n`);
    return Promise.resolve(0);
  }
  if (entries.length === 0) {
    const which = vm === undefined ? "" : ` of VM "${vm}"`;
    io.out(`No backups${which} in ${stateDir}\n`);
    return Promise.resolve(0);
  }
  io.out(renderTable(
    ["TIME", "VM", "REASON", "ID", "UUID"],
    entries.map((e) => [e.time, e.vm, e.reason, e.id, e.uuid]),
  ));
  return Promise.resolve(0);
}
