/**
 * `passthrough rollback VM`: restores a VM's definition from a backup (the newest by default),
 * after showing the diff and asking.
 *
 * @module
 */

import { type CliIo, UsageError } from "./context.ts";
import { type Parsed, runFlags } from "./flags.ts";
import type { ROLLBACK } from "./specs.ts";
import { confirmYesNo } from "./confirm.ts";
import { painter } from "../lib/render/colors.ts";
import { openLibvirtPort } from "../ffi/port.ts";
import { connectTarget } from "./connect.ts";
import { redactedJson } from "../lib/render/redact.ts";
import { renderDomainDiff } from "../lib/render/diff.ts";
import {
  acquireConnectionLock,
  describeHolder,
  lockScopeNote,
  lockUri,
} from "../lib/state/lock.ts";
import {
  type RollbackPreview,
  type RollbackReport,
  rollbackVm,
  type StartAllowance,
  type StartRefusal,
} from "../lib/apply/rollback.ts";
import { openStateDir, resolveStateDirPath, type StateDir } from "../lib/state/state_dir.ts";
import type { DomainSummary } from "../lib/plan/libvirt_port.ts";
import { pathExists } from "../lib/state/paths.ts";
import { BackupNotFoundError, libvirtHost, listBackups } from "../lib/state/backups.ts";
import { didYouMean } from "../lib/render/suggest.ts";
import { isRemoteUri } from "../lib/config/uri.ts";
import { guardCheck, policed } from "../lib/guard/run.ts";
import { readVmPolicy } from "../lib/guard/state.ts";
import { ENFORCE, type VmGuardPolicy } from "../lib/guard/policy.ts";
import { guardStateDirFor } from "../lib/guard/hook_file.ts";
import { readRecordsLeniently } from "../lib/domain/lenient.ts";
import { heldAddresses, parseDomainXml } from "../lib/domain/domain_xml.ts";
import { redactSecrets } from "../lib/domain/secrets.ts";
import { fixCommand, type GuardRefusal } from "../lib/guard/check.ts";
import { followUpCommand, type RunFlags } from "../lib/render/shell.ts";
import { libcSysfsReader } from "../ffi/libc_fs.ts";
import { hostDeviceReader, hostFactsFor, hostReader, LIVE_SYSFS } from "./host_options.ts";
import { connectionLostNote, deferSignals, keepIgnoredSignals } from "./signals.ts";

/** Shows what the rollback would change and asks. */
function askRollback(
  io: CliIo,
  preview: RollbackPreview,
  showSecrets: boolean,
): Promise<boolean> {
  showRollback(io, preview, showSecrets);
  // Asked apart from standard output (a file: CliIo.prompt): shown where it is asked too.
  if (io.prompt !== undefined) showRollback({ ...io, out: io.prompt }, preview, showSecrets);
  return confirmYesNo(io, `Restore "${preview.vm}" from this backup?`);
}

/**
 * The backup and the diff from the current definition to it: before the question, and with
 * `--yes` too, so a scripted rollback's log says what it changed (as `apply --yes` prints its
 * plan).
 */
function showRollback(io: CliIo, preview: RollbackPreview, showSecrets: boolean): void {
  const paint = painter(io.color);
  io.out(
    `${
      paint("bold", `Backup ${preview.backup.id}`)
    } (${preview.backup.reason}, ${preview.backup.time})\n`,
  );
  if (preview.currentXml === null) {
    io.out(`VM "${preview.vm}" is not defined now: it will be defined from the backup\n`);
  } else {
    io.out(
      // Both sides were read with VIR_DOMAIN_XML_SECURE: passwords show as *** (changed) unless
      // asked, so a rollback that reverts only a password is still visible.
      renderDomainDiff(preview.currentXml, preview.backupXml, {
        vm: preview.vm,
        color: io.color,
        showSecrets,
        labels: { before: "current", after: `backup ${preview.backup.time}` },
      }),
    );
  }
  for (const warning of preview.warnings) io.out(`${paint("yellow", "Warning")}: ${warning}\n`);
  if (preview.active) {
    io.out(
      `VM "${preview.vm}" is running: the restored definition takes effect at its next full power-off\n`,
    );
  }
}

/**
 * No backup of `vm` in `stateDir`: when libvirt defines no such VM either, most likely a typo, so
 * the closest name and the defined VMs are named. A VM renamed since its backups (`virsh
 * domrename`) has them filed under the name it had (`filedAs`, newest first), which a rollback of
 * that name knows how to restore.
 */
function unknownVmError(
  vm: string,
  stateDir: string,
  { defined, filedAs, run }: { defined: string[]; filedAs: FiledAs | null; run: RunFlags },
): Error {
  const where = `No backup of VM "${vm}" in ${stateDir}`;
  if (defined.includes(vm) && filedAs !== null) {
    const names = filedAs.names.map((n) => `"${n}"`).join(", ");
    const them = filedAs.names.length === 1 ? "the name it had" : "names it had";
    return new Error(
      `${where}: its uuid ${filedAs.uuid} has backups filed as ${names}, ${them} when they were taken (renamed since): "${
        followUpCommand(run, "passthrough rollback", { value: filedAs.names[0]! })
      }" says how to restore one`,
    );
  }
  if (defined.includes(vm)) {
    return new Error(`${where}: 'passthrough apply' backs a VM up before it changes it`);
  }
  const list = defined.length === 0 ? "none" : defined.map((n) => `"${n}"`).join(", ");
  return new Error(
    `${where}, and libvirt defines no VM "${vm}"${didYouMean(vm, defined)}: defined VMs: ${list}`,
  );
}

/** The names a VM's backups are filed under, its uuid's, through this connection. */
interface FiledAs {
  uuid: string;
  names: string[];
}

/**
 * The other names (newest first) that backups of the domain libvirt defines as `vm` now were
 * taken under, through `uri`; `null` when there are none, or no such domain.
 */
function filedAs(
  state: StateDir,
  vm: string,
  domains: DomainSummary[],
  uri: string,
): FiledAs | null {
  const uuid = domains.find((d) => d.name === vm)?.uuid;
  if (uuid === undefined) return null;
  const names = listBackups(state)
    .filter((e) => e.uuid === uuid && e.vm !== vm && libvirtHost(e.uri) === libvirtHost(uri))
    .map((e) => e.vm);
  return names.length === 0 ? null : { uuid, names: [...new Set(names)] };
}

/**
 * The warning for a backup of `vm` that passes PCI devices, restored through `uri`, another
 * machine's libvirt: only that libvirt's other VMs were checked, as `rollback` reads no /sys but
 * this host's; the start guard there, if installed, still checks them at each start.
 */
function remoteHostWarning(vm: string, uri: string): (xml: string) => string[] {
  return (xml) => {
    const passed = heldAddresses(parseDomainXml(xml));
    if (passed.length === 0) return [];
    return [
      `libvirt at "${redactSecrets(uri)}" is another machine: the backup gives ${
        JSON.stringify(vm)
      } ${
        passed.join(", ")
      }, checked only against the other VMs that libvirt defines, not against that host's IOMMU groups, SR-IOV functions or its own use of them (this host's /sys says nothing of that one's); its start guard, where installed, checks them at each start`,
    ];
  };
}

/** What {@link startVerdict} makes of the start guard's check of a backup. */
interface StartVerdict {
  refusals: (StartRefusal | StartAllowance)[];
  warnings: string[];
}

/**
 * What the guard would say of `xml` on this host ({@link startVerdict}), by the policies in
 * `guardDir` (`null`: none, every VM enforces) recorded over `connection` (this run's, as `lockUri`
 * names it). Checked once per definition, unless `fresh` asks again.
 */
function startCheck(
  vm: string,
  run: RunFlags,
  guardDir: string | null,
  connection: string,
): (xml: string, fresh?: boolean) => StartVerdict {
  // The guard's fix names no flags (the hook has none); this run's libvirt and state directory.
  const plan = followUpCommand(run, "passthrough plan", { options: [["--vm", vm]] });
  const seen = new Map<string, StartVerdict>();
  return (xml, fresh = false) => {
    if (fresh || !seen.has(xml)) {
      const reader = libcSysfsReader();
      // Those of the domain the backup defines: another of its name never lends its own.
      const { policy } = guardDir === null
        ? { policy: ENFORCE }
        : readVmPolicy(guardDir, vm, readRecordsLeniently(xml).uuid, { connection });
      const checked = guardCheck({ vm, xml, reader, root: LIVE_SYSFS, live: true });
      seen.set(xml, startVerdict(checked, { vm, policy, plan }));
    }
    return seen.get(xml)!;
  };
}

/**
 * The start guard's refusals `checked` of a backup of `vm`, split: `refusals`, why the restore is
 * refused (a recorded device replaced, or one the host needs or another running VM has);
 * `warnings`, the rest (an address that holds nothing, a group left on a host driver, a record
 * that cannot be read): nothing can be taken from the host there, but the VM will not start as
 * restored. A device the host needs, recorded under a rule with allow_host_critical: true (in
 * `policy`, which apply left), is one the guard starts, as plan kept it: judged as the hook
 * judges it (only the record apply left there), the rules' warn and off aside. `plan`: the
 * command the guard's fix names, with this run's flags. A refusal of another function of a
 * hostdev's group names it (`groupMember`), so rollback's own group check does not say it again;
 * so does one such function the host needs that the guard lets the guest take by the rule's
 * allow_host_critical (`allowedMember`), so that check does not refuse what the guard starts.
 */
export function startVerdict(
  checked: readonly GuardRefusal[],
  { vm, policy, plan }: { vm: string; policy: VmGuardPolicy; plan: string },
): StartVerdict {
  // A group member the host needs is groupMatesHostNeeds' refusal (the `host` option); one
  // another running VM has (`busy`) is not: that check reads no running VM. One the guard lets
  // the guest take by its rule's allow_host_critical is no refusal there either.
  const enforced = policed(checked, { ...policy, guard: "enforce", rules: {} });
  const found = enforced
    .filter((r) => r.group === undefined || r.hostNeeds === null || r.kind === "busy");
  const allowed = checked.filter((r) =>
    r.group !== undefined && r.hostNeeds !== null &&
    !enforced.some((e) =>
      e.kind === r.kind && e.address === r.address && e.group?.member === r.group!.member
    )
  ).map((r): StartAllowance => ({ allowedMember: r.group!.member }));
  // What the hook does with the rest, by the policies it reads: `warn` and `off` let a start go
  // on past an address that holds nothing, or a group left on a host driver, and libvirt then
  // fails it.
  const judged = policed(checked, policy);
  const refused = (r: GuardRefusal) => r.kind === "replaced" || r.hostNeeds !== null;
  const stopper = (r: GuardRefusal) => {
    const as = judged.find((j) => j.kind === r.kind && j.address === r.address);
    const name = JSON.stringify(vm);
    const libvirt = r.group === undefined
      ? "libvirt fails to find the device"
      : `libvirt fails it: group ${r.group.number} is not viable`;
    return as?.policy === "enforce"
      ? `the start guard would refuse to start ${name} as restored`
      : `${name} would not start as restored (the start guard, by its policy, would ${
        as === undefined ? "pass it" : "warn and go on"
      }, and ${libvirt})`;
  };
  return {
    refusals: [
      ...found.filter(refused).map((r) =>
        r.group === undefined
          ? { reason: r.reason }
          : { reason: r.reason, groupMember: r.group.member }
      ),
      ...allowed,
    ],
    warnings: found.filter((r) => !refused(r)).map((r) =>
      `${stopper(r)}: ${r.reason}; fix: ${r.fix.replace(fixCommand(vm), plan)}`
    ),
  };
}

/** Runs `passthrough rollback VM`: exit 1 when the restore failed. */
export async function run(
  { values, positionals: [vm] }: Parsed<typeof ROLLBACK>,
  io: CliIo,
): Promise<number> {
  // Before lspci runs: Deno then ends the process on a signal nohup asked to be ignored.
  keepIgnoredSignals();
  // A wrong command line first (exit 2), as `apply` says it.
  if (!values.yes && values.json) {
    throw new UsageError("--json needs --yes: questions would mix with the JSON");
  }
  const target = connectTarget(values, io, "rollback");
  const stateDir = resolveStateDirPath({ flag: values["state-dir"], env: io.env });
  const exists = pathExists(stateDir);
  using libvirt = openLibvirtPort(target.uri, target.options);
  // No state directory holds no backup: say so rather than create one at a mistyped path.
  if (!exists) {
    const defined = libvirt.listDomains().map((d) => d.name);
    throw unknownVmError(vm, `${stateDir} (which does not exist)`, {
      defined,
      filedAs: null,
      run: runFlags(values),
    });
  }
  const state = openStateDir(stateDir);
  using lock = acquireConnectionLock(libvirt.uri, { stateDir: state.path, command: "rollback" });
  const scope = lockScopeNote(lock);
  if (scope !== null) io.err(`${scope}\n`);
  // From the question to the report: a stop asked for (Ctrl-C, kill, a closed session) waits for
  // the define and its read-back check, so the report still says whether the VM was restored.
  using signals = deferSignals();
  // The policies the installed hook reads for these VMs' starts, not --state-dir's (the backups').
  const guardDir = guardStateDirFor(libvirt.uri, values["state-dir"], io.env)?.stateDir ?? null;
  const check = startCheck(vm, runFlags(values), guardDir, lockUri(libvirt.uri));
  const report = await rollbackVm(vm, {
    libvirt,
    stateDir,
    lock,
    run: runFlags(values),
    ...(values.to !== undefined ? { backup: values.to } : {}),
    // This host's disks, USB devices and network interfaces, when libvirt runs here; and what
    // the start guard would say of the backup's hostdevs on it. Another machine's are not read
    // here (this /sys is not its): said before the question, as what was not checked.
    ...(isRemoteUri(libvirt.uri) ? { startWarnings: remoteHostWarning(vm, libvirt.uri) } : {
      devices: hostFactsFor(undefined),
      // Read afresh each time: asked again after the question, which may stay open for minutes.
      startRefusals: (xml) => check(xml, true).refusals,
      host: hostReader(undefined),
      startWarnings: (xml) => check(xml).warnings,
      // Through the reader `apply`'s hardware re-check uses (its group as discovery reads it).
      readDevice: hostDeviceReader(undefined),
    }),
    confirm: rollbackConfirm(values, io),
  }).catch((error) => {
    if (
      !(error instanceof BackupNotFoundError && error.ref === null &&
        error.otherConnection === null)
    ) throw error;
    const domains = libvirt.listDomains();
    throw unknownVmError(vm, state.path, {
      defined: domains.map((d) => d.name),
      filedAs: filedAs(state, vm, domains, libvirt.uri),
      run: runFlags(values),
    });
  });
  if (report.brokeStaleLock !== null) {
    io.err(`Note: removed a stale lock left by ${describeHolder(report.brokeStaleLock)}\n`);
  }
  printReport(io, report, values);
  // Also one that came during the define, seen only now.
  const stop = await signals.check(true);
  if (stop !== null) {
    io.err(`passthrough rollback: stopped by ${stop}: the report above says what was done\n`);
    // A define whose reply was lost, or one made whose read-back was.
    const unknown = report.status === "unknown" || report.code === "verify-failed";
    const lost = connectionLostNote("rollback", { signal: stop, uri: libvirt.uri, unknown });
    if (lost !== null) io.err(`${lost}\n`);
    return signals.status;
  }
  return report.status === "failed" || report.status === "unknown" ? 1 : 0;
}

/**
 * How the rollback is confirmed: with `--yes`, by showing what it changes (not under `--json`);
 * else by asking on the terminal.
 */
function rollbackConfirm(
  values: Parsed<typeof ROLLBACK>["values"],
  io: CliIo,
): (preview: RollbackPreview) => Promise<boolean> {
  const showSecrets = values["show-secrets"];
  return values.yes
    ? (preview) => {
      if (!values.json) showRollback(io, preview, showSecrets);
      return Promise.resolve(true);
    }
    : (preview) => {
      // Only once there is a question: a VM with no backup, or one that already has the
      // backup's definition, is said so without a terminal, and --yes would change nothing.
      if (!io.interactive) {
        // A runtime error (exit 1): the command line is right, this run has no terminal.
        throw new Error("No terminal to confirm on: pass --yes to roll back without asking");
      }
      return askRollback(io, preview, showSecrets);
    };
}

/** Prints `report`: as JSON under `--json`, else its message and the safety backup written. */
function printReport(
  io: CliIo,
  report: RollbackReport,
  values: Parsed<typeof ROLLBACK>["values"],
): void {
  if (values.json) {
    io.out(values["show-secrets"] ? `${JSON.stringify(report, null, 2)}\n` : redactedJson(report));
    return;
  }
  io.out(`${report.message}\n`);
  if (report.safetyBackup !== null) {
    // Written before a failed define too: then it may have replaced nothing.
    const which = report.status === "restored" ? "The replaced definition" : "The definition shown";
    io.out(`${which} was backed up as "${report.safetyBackup.id}"\n`);
  }
}
