/**
 * `passthrough rollback VM`: restores a VM's definition from a backup (the newest by default),
 * after showing the diff and asking.
 *
 * @module
 */

import { type CliIo, type Command, UsageError } from "./context.ts";
import { parseFlags } from "./plan_options.ts";
import { confirmYesNo } from "./confirm.ts";
import { painter } from "../lib/render/colors.ts";
import { openLibvirtPort } from "../ffi/port.ts";
import { redactSecrets } from "../lib/domain/lenient.ts";
import { renderDomainDiff } from "../lib/render/diff.ts";
import { acquireLock, describeHolder } from "../lib/state/lock.ts";
import { type RollbackPreview, rollbackVm } from "../lib/apply/rollback.ts";
import { openStateDir, resolveStateDirPath } from "../lib/state/state_dir.ts";

const HELP = `Usage: passthrough rollback VM [--to BACKUP] [options]

Restores VM's persistent definition from a backup taken by 'apply' or 'rollback'
(the newest unless --to names one; see 'passthrough backups VM'). Shows the diff and
asks first, backs up the definition it replaces, refuses a backup of another domain
(uuid), and checks the definition libvirt holds afterwards.

Options:
      --to BACKUP       the backup id (or file) to restore
      --yes             restore without asking (required without a terminal)
  -c, --connect URI     libvirt URI (default: $LIBVIRT_DEFAULT_URI or libvirt's default)
      --state-dir DIR   backups and lock (default: $PASSTHROUGH_STATE_DIR or /var/lib/passthrough)
      --json            print the result as JSON
      --show-secrets    show passwords (e.g. VNC passwd) in the diff instead of ***

Exit codes: 0 restored, already equal or declined, 1 failed, 2 usage error.
`;

/** Shows what the rollback would change and asks. */
function askRollback(
  io: CliIo,
  preview: RollbackPreview,
  showSecrets: boolean,
): Promise<boolean> {
  // Both sides were read with VIR_DOMAIN_XML_SECURE: hide passwords unless asked.
  const shown = (xml: string) => showSecrets ? xml : redactSecrets(xml);
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
      renderDomainDiff(shown(preview.currentXml), shown(preview.backupXml), {
        vm: preview.vm,
        color: io.color,
      }),
    );
  }
  if (preview.active) {
    io.out(
      `VM "${preview.vm}" is running: the restored definition takes effect at its next full power-off\n`,
    );
  }
  return confirmYesNo(io, `Restore "${preview.vm}" from this backup?`);
}

/** The `rollback` command. */
export const rollbackCommand: Command = {
  name: "rollback",
  summary: "restore a VM's definition from a backup",
  help: HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseFlags(args, {
      to: { type: "string" },
      yes: { type: "boolean", short: "y", default: false },
      connect: { type: "string", short: "c" },
      "state-dir": { type: "string" },
      json: { type: "boolean", default: false },
      "show-secrets": { type: "boolean", default: false },
    }, 1);
    const vm = positionals[0];
    if (vm === undefined) throw new UsageError("Missing the VM to roll back");
    if (!values.yes && !io.interactive) {
      throw new UsageError("No terminal to confirm on: pass --yes to roll back without asking");
    }
    if (!values.yes && values.json) {
      throw new UsageError("--json needs --yes: questions would mix with the JSON");
    }
    const stateDir = resolveStateDirPath({ flag: values["state-dir"], env: io.env });
    const state = openStateDir(stateDir);
    using lock = acquireLock(state.path, { command: "rollback" });
    using libvirt = openLibvirtPort(values.connect ?? null);
    const report = await rollbackVm(vm, {
      libvirt,
      stateDir,
      lock,
      ...(values.to !== undefined ? { backup: values.to } : {}),
      confirm: values.yes
        ? () => Promise.resolve(true)
        : (preview) => askRollback(io, preview, values["show-secrets"]),
    });
    if (report.brokeStaleLock !== null) {
      io.err(`Note: removed a stale lock left by ${describeHolder(report.brokeStaleLock)}\n`);
    }
    if (values.json) {
      io.out(`${JSON.stringify(report, null, 2)}\n`);
    } else {
      io.out(`${report.message}\n`);
      if (report.safetyBackup !== null) {
        io.out(`The replaced definition was backed up as "${report.safetyBackup.id}"\n`);
      }
    }
    return report.status === "failed" ? 1 : 0;
  },
};
