/**
 * `passthrough backups [VM]`: the backups in the state directory, newest first.
 *
 * @module
 */

import type { CliIo, Command } from "./context.ts";
import { parseFlags } from "./plan_options.ts";
import { renderTable } from "./table.ts";
import { type BackupEntry, listBackups } from "../lib/state/backups.ts";
import { openStateDir, resolveStateDirPath, StateDirError } from "../lib/state/state_dir.ts";

const HELP = `Usage: passthrough backups [VM] [options]

Lists the backups 'apply' and 'rollback' took before each define, newest first.
'passthrough rollback VM --to ID' restores one. Writes nothing.

Options:
      --state-dir DIR   where backups live (default: $PASSTHROUGH_STATE_DIR or /var/lib/passthrough)
      --json            print the backup entries as JSON
`;

/** The `backups` command. */
export const backupsCommand: Command = {
  name: "backups",
  summary: "list the backups taken before each define",
  help: HELP,
  run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseFlags(args, {
      "state-dir": { type: "string" },
      json: { type: "boolean", default: false },
    }, 1);
    const stateDir = resolveStateDirPath({ flag: values["state-dir"], env: io.env });
    let entries: BackupEntry[];
    try {
      // Read-only: a missing state directory simply has no backups; an unsafe one is refused.
      entries = listBackups(openStateDir(stateDir, { write: false }), positionals[0]);
    } catch (error) {
      if (!(error instanceof StateDirError && error.problem === "missing")) throw error;
      entries = [];
    }
    if (values.json) {
      io.out(`${JSON.stringify(entries, null, 2)}\n`);
      return Promise.resolve(0);
    }
    if (entries.length === 0) {
      const which = positionals[0] === undefined ? "" : ` of VM "${positionals[0]}"`;
      io.out(`No backups${which} in ${stateDir}\n`);
      return Promise.resolve(0);
    }
    io.out(renderTable(
      ["TIME", "VM", "REASON", "ID", "UUID"],
      entries.map((e) => [e.time, e.vm, e.reason, e.id, e.uuid]),
    ));
    return Promise.resolve(0);
  },
};
