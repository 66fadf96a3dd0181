/**
 * `passthrough backups [VM]`: the backups in the state directory, newest first, then every file
 * that is not a usable backup (damaged, or left incomplete by a killed run).
 *
 * @module
 */

import type { CliIo } from "./context.ts";
import { type Parsed, runFlags } from "./flags.ts";
import type { BACKUPS } from "./specs.ts";
import { renderTable } from "./table.ts";
import {
  type BackupEntry,
  type BackupListing,
  describeBackupProblem,
  inspectBackups,
  libvirtHost,
} from "../lib/state/backups.ts";
import {
  openStateDir,
  resolveStateDirPath,
  type StateDir,
  StateDirError,
} from "../lib/state/state_dir.ts";
import { didYouMean } from "../lib/render/suggest.ts";
import { redactedJson } from "../lib/render/redact.ts";
import { lockUri } from "../lib/state/lock.ts";
import { followUpCommand, type RunFlags, shellWord } from "../lib/render/shell.ts";

/**
 * For `backups VM` that lists none: the VM with backups whose name is closest, and how many
 * other VMs have some (a mistyped name reads as a VM never backed up unless said so).
 */
function otherVms(state: StateDir | null, vm: string | undefined, run: RunFlags): string {
  if (state === null || vm === undefined) return "";
  const names = [...new Set(inspectBackups(state).entries.map((e) => e.vm))];
  if (names.length === 0) return "";
  const s = names.length === 1 ? "" : "s";
  return `${didYouMean(vm, names)}; ${names.length} other VM${s} ha${
    s === "" ? "s" : "ve"
  } backups (${followUpCommand(run, "passthrough backups")} lists them)`;
}

/**
 * A note for each VM whose backups from one libvirt are of several domains (UUIDs): it was
 * undefined or renamed there, and another defined under its name. `rollback` restores only a
 * backup of the one defined now, which the listing cannot tell without libvirt. Backups of one
 * name from two libvirts (two hosts) are of two VMs that `rollback` tells apart by `--connect`.
 */
function uuidNotes(entries: readonly BackupEntry[]): string {
  const byVm = new Map<string, { vm: string; uri: string; uuids: string[] }>();
  for (const { vm, uri, uuid } of entries) {
    // The URI as the connection lock names it: no user or password, whatever the apply said.
    const key = JSON.stringify([vm, lockUri(uri)]);
    const seen = byVm.get(key) ?? { vm, uri: lockUri(uri), uuids: [] };
    if (!seen.uuids.includes(uuid)) seen.uuids.push(uuid);
    byVm.set(key, seen);
  }
  return [...byVm.values()].filter(({ uuids }) => uuids.length > 1).map(({ vm, uri, uuids }) =>
    `Note: the backups of ${JSON.stringify(vm)} are of ${uuids.length} VMs defined under that ` +
    `name (UUIDs ${uuids.join(", ")}): rollback restores only those of the UUID it has now ` +
    `(virsh -c ${shellWord(uri)} domuuid ${shellWord(vm)})\n`
  ).join("");
}

/**
 * A note for each VM whose backups were taken through several libvirts (hosts): their `#`s run
 * across all of them, and `rollback` restores only those of the libvirt it connects to.
 */
function uriNotes(entries: readonly BackupEntry[]): string {
  const byVm = new Map<string, string[]>();
  for (const { vm, uri } of entries) {
    const uris = byVm.get(vm) ?? [];
    if (!uris.includes(libvirtHost(uri))) uris.push(libvirtHost(uri));
    byVm.set(vm, uris);
  }
  return [...byVm].filter(([, uris]) => uris.length > 1).map(([vm, uris]) =>
    `Note: the backups of ${JSON.stringify(vm)} were taken through ${uris.length} libvirts ` +
    `(${uris.sort().join(", ")}): rollback restores only those of the one it connects to (-c URI)\n`
  ).join("");
}

/** Runs `passthrough backups [VM]`; writes nothing. Exit 1 when a backup is damaged. */
export function run(
  { values, positionals: [vm] }: Parsed<typeof BACKUPS>,
  io: CliIo,
): Promise<number> {
  const stateDir = resolveStateDirPath({ flag: values["state-dir"], env: io.env });
  let listing: BackupListing;
  let state: StateDir | null = null;
  try {
    // Read-only: a missing state directory simply has no backups; an unsafe one is refused.
    state = openStateDir(stateDir, { write: false });
    listing = inspectBackups(state, vm);
  } catch (error) {
    if (!(error instanceof StateDirError && error.problem === "missing")) throw error;
    listing = { entries: [], problems: [] };
  }
  const { entries, problems } = listing;
  // The listing is the JSON contract: problems go to stderr there, below the table otherwise.
  const notes = problems.map((p) => `${describeBackupProblem(p)}\n`).join("");
  if (values.json) {
    // Each entry names the URI its definition came from, which may hold a password.
    io.out(redactedJson(entries));
    if (notes !== "") io.err(notes);
  } else {
    if (entries.length === 0) {
      const which = vm === undefined ? "" : ` of VM "${vm}"`;
      // A mistyped --state-dir reads as a directory without backups unless said so.
      const none = state === null ? `: ${stateDir} does not exist` : ` in ${stateDir}`;
      io.out(`No backups${which}${none}${otherVms(state, vm, runFlags(values))}\n`);
    } else {
      // `#` numbers each VM's backups from its newest: `rollback VM --to N` takes it.
      const seen = new Map<string, number>();
      const index = (vm: string) => {
        seen.set(vm, (seen.get(vm) ?? 0) + 1);
        return String(seen.get(vm));
      };
      io.out(renderTable(
        ["#", "TIME", "VM", "REASON", "ID", "UUID"],
        entries.map((e) => [index(e.vm), e.time, e.vm, e.reason, e.id, e.uuid]),
      ));
      const uuids = uuidNotes(entries) + uriNotes(entries);
      if (uuids !== "") io.out(`\n${uuids}`);
    }
    if (notes !== "") io.out(`\n${notes}`);
  }
  return Promise.resolve(problems.some((p) => p.kind === "damaged") ? 1 : 0);
}
