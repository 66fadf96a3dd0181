/**
 * `passthrough doctor`: is this host ready for PCI passthrough? Exit 0 when nothing fails, 1
 * when a check fails.
 *
 * @module
 */

import type { CliIo } from "./context.ts";
import type { Parsed } from "./flags.ts";
import type { DOCTOR } from "./specs.ts";
import {
  type DoctorFinding,
  type HookDoctorFacts,
  type LibvirtReach,
  runDoctor,
} from "../lib/host/doctor.ts";
import { libvirtAccessAdvice } from "../lib/render/error_text.ts";
import { readAttribute, type SysfsReader } from "../lib/host/sysfs.ts";
import {
  DEFAULT_HOOKS_DIR,
  type HookInspection,
  inspectHook,
  readByLibvirt,
  trustedOwners,
} from "../lib/guard/hook_file.ts";
import { findHookDaemons } from "../lib/guard/daemon.ts";
import { readReloadRecords } from "../lib/guard/state.ts";
import { readXattr } from "../ffi/libc_fs.ts";
import { VERSION } from "./version.ts";
import { hookStaleBundle, runningStaleBundle } from "./hook.ts";
import { hostFactsFor, isLiveRoot, LIVE_SYSFS, loadHost, readerFor } from "./host_options.ts";
import { painter } from "../lib/render/colors.ts";
import { Connection, type ConnectionOpenOptions } from "../ffi/connection.ts";
import { connectTarget, libvirtTimeout } from "./connect.ts";
import { withDeadlineOutput } from "../ffi/deadline.ts";
import { terminalSafe } from "../lib/render/terminal.ts";
import { redactSecrets } from "../lib/domain/secrets.ts";
import { redactedJson } from "../lib/render/redact.ts";

/**
 * The start guard's facts on this host: the hook, the daemon, SELinux; the error when this user
 * may not look into the hooks directory (libvirt's may be root's alone), which the `hook` finding
 * reports while every other check still runs.
 */
function hookFacts(hooksDir: string, reader: SysfsReader): HookDoctorFacts | Error {
  let inspection: HookInspection;
  try {
    inspection = inspectHook(hooksDir, trustedOwners(), reader);
  } catch (error) {
    if (error instanceof Deno.errors.PermissionDenied) return error;
    throw error;
  }
  const stateDir = inspection.settings?.stateDir;
  const enforce = readAttribute(reader, "/sys/fs/selinux/enforce");
  return {
    inspection,
    readByLibvirt: readByLibvirt(hooksDir),
    version: VERSION,
    daemons: findHookDaemons(reader),
    reloads: stateDir === undefined ? [] : readReloadRecords(stateDir),
    staleBundle: inspection.settings === null ? null : hookStaleBundle(inspection.settings),
    selinux: enforce === null ? null : {
      enforcing: enforce === "1",
      label: inspection.present ? readXattr(inspection.path, "security.selinux") : null,
    },
  };
}

/**
 * Opens `uri` read-write, as `plan`, `apply` and `rollback` do, and describes it; when that
 * fails, whether it answers read-only (its read-only socket is open to every user by default, so
 * that alone would call libvirt reachable to a user every command is then refused); the error
 * when it cannot be reached. Read-only is tried after a refusal, told by its code or, over ssh
 * (the far host's, in words of its own: `Cannot recv data: virt-ssh-helper: ...: Permission
 * denied: Connection reset by peer`), by its text; not after a host that did not answer, which
 * would be waited for twice.
 */
export function libvirtProbe(
  uri: string | null,
  options: ConnectionOpenOptions = {},
): () => LibvirtReach {
  const describe = (readOnly: boolean) => {
    using conn = Connection.open(uri, { ...options, readOnly });
    return { uri: conn.uri, version: conn.libVersion };
  };
  return () => {
    let refused: Error;
    try {
      return describe(false);
    } catch (error) {
      refused = error instanceof Error ? error : new Error(String(error));
    }
    if (libvirtAccessAdvice(refused) === null && !/Permission denied/.test(refused.message)) {
      return refused;
    }
    try {
      return { readOnly: describe(true), refused };
    } catch {
      return refused;
    }
  };
}

/** Renders findings as aligned lines with a hint under each non-ok one. */
export function renderFindings(findings: DoctorFinding[], color: boolean): string {
  const paint = painter(color);
  const width = Math.max(...findings.map((f) => f.check.length));
  const lines: string[] = [];
  for (const f of findings) {
    const status = f.status === "ok"
      ? paint("green", "ok  ")
      : f.status === "warn"
      ? paint("yellow", "warn")
      : paint("red", "FAIL");
    lines.push(`${status}  ${f.check.padEnd(width)}  ${f.summary}`);
    if (f.hint !== null) lines.push(`${" ".repeat(width + 8)}${paint("dim", `-> ${f.hint}`)}`);
  }
  return `${lines.join("\n")}\n`;
}

/** Runs `passthrough doctor`: exit 1 when a check fails. */
export async function run({ values }: Parsed<typeof DOCTOR>, io: CliIo): Promise<number> {
  const root = values.sysfs ?? LIVE_SYSFS;
  // A --libvirt-timeout that is no number is a wrong command line, libvirt looked at or not.
  libvirtTimeout(values["libvirt-timeout"]);
  const target = values["no-libvirt"] ? null : connectTarget(values, io, "doctor");
  const host = await loadHost(root);
  const reader = readerFor(root);
  const live = isLiveRoot(root);
  const options = {
    host,
    reader,
    live,
    facts: hostFactsFor(root),
    ...(live ? { hook: hookFacts(values["hooks-dir"] ?? DEFAULT_HOOKS_DIR, reader) } : {}),
    bundle: runningStaleBundle(),
  };
  // The libvirt finding quotes the URI, which may hold a password (`--connect`, the environment).
  const text = (findings: DoctorFinding[]) => redactSecrets(renderFindings(findings, io.color));
  const findings = target === null ? runDoctor(options) : withDeadlineOutput(
    // A libvirt that does not answer ends the process in the call: the findings are printed
    // then, its own saying why, as they would be had it refused.
    (reason) =>
      terminalSafe(
        text(runDoctor({ ...options, libvirtProbe: () => new Error(reason) })),
        io.color,
      ),
    () => runDoctor({ ...options, libvirtProbe: libvirtProbe(target.uri, target.options) }),
  );
  io.out(values.json ? redactedJson(findings) : text(findings));
  return findings.some((f) => f.status === "fail") ? 1 : 0;
}
