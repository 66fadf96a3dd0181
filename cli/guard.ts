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
import {
  allowanceFile,
  allowNextStart,
  type GuardRefusalRecord,
  readRefusalRecords,
} from "../lib/guard/state.ts";
import { didYouMean } from "../lib/render/suggest.ts";
import { hostNeedsRemedy } from "../lib/guard/policy.ts";
import {
  DEFAULT_HOOKS_DIR,
  guardStateDir,
  guardStateDirFor,
  otherHookProblem,
  otherHooksIn,
} from "../lib/guard/hook_file.ts";
import { GUARD_URI } from "../lib/guard/layout.ts";
import { followUpCommand, shellWord } from "../lib/render/shell.ts";
import { errorText } from "../lib/render/error_text.ts";
import { connectTarget } from "./connect.ts";
import { openLibvirtPort } from "../ffi/port.ts";
import { libvirtUriFor } from "../ffi/libvirt_conf.ts";
import { isRemoteUri, isSystemQemuUri } from "../lib/config/uri.ts";
import { redactSecrets } from "../lib/domain/secrets.ts";
import { lockUri } from "../lib/state/lock.ts";

/**
 * The `<uuid>` of the VM libvirt defines as `vm` now, which the allowance is bound to (as the
 * start guard's policies are): a VM undefined and another defined under its name within the hour
 * does not take it. Only this host's libvirt: its hook is the one that reads the allowance.
 */
function definedUuid(
  values: Parsed<typeof GUARD>["values"],
  vm: string,
  io: CliIo,
): { uuid: string; uri: string } {
  const target = connectTarget(values, io, "guard allow");
  // Refused before it is opened: ssh to another host would ask, or wait, for nothing.
  const opened = libvirtUriFor(target.uri);
  if (opened !== null && isRemoteUri(opened)) {
    throw new Error(
      `Cannot give an allowance through ${opened}: another host's start guard never reads ` +
        "this host's state directory; run passthrough guard allow on that host",
    );
  }
  using libvirt = openLibvirtPort(target.uri, target.options);
  const domains = libvirt.listDomains();
  const domain = domains.find((d) => d.name === vm);
  if (domain === undefined) {
    const names = domains.map((d) => d.name);
    throw new Error(
      `libvirt defines no VM ${JSON.stringify(vm)}${didYouMean(vm, names)} at ${libvirt.uri}: ` +
        "an allowance is for the VM defined under that name now; define it first" +
        ` (defined VMs: ${
          names.length === 0 ? "none" : names.map((n) => JSON.stringify(n)).join(", ")
        })${elsewhere(vm, libvirt.uri, values)}`,
    );
  }
  return { uuid: domain.uuid, uri: libvirt.uri };
}

/**
 * For a VM not found at `uri`, the command that reads it where the start guard's VMs are
 * ({@link GUARD_URI}), when `uri` is another libvirt (the user's default, a session, a private
 * daemon's socket): empty when it is the system daemon by any spelling (`+unix`, its own socket
 * named by `socket=`), which was just read.
 */
function elsewhere(vm: string, uri: string, values: Parsed<typeof GUARD>["values"]): string {
  if (isSystemQemuUri(uri)) return "";
  const stateDir = values["state-dir"];
  const hooksDir = values["hooks-dir"];
  const again = followUpCommand(
    { connect: GUARD_URI, ...(stateDir === undefined ? {} : { stateDir }) },
    "passthrough guard allow",
    { value: vm, ...(hooksDir === undefined ? {} : { options: [["--hooks-dir", hooksDir]] }) },
  );
  return `; the start guard's VMs are those of ${GUARD_URI}: "${again}" reads it there`;
}

/**
 * Where the allowance for the VM `uuid` of `uri` goes, with the hook installed in `hooksDir`: for
 * the system daemon's VMs, whose starts run the hook, where `--state-dir` says, else where the hook
 * reads; for others' (the test driver, a session) their own state directory, never the hook's
 * (nor, with no hook installed, the one `hook install` reads by default): a
 * test world copied from the host's definitions has the host's UUIDs, so its allowance there would
 * let the host's VM start unchecked.
 */
function allowanceDir(
  values: Parsed<typeof GUARD>["values"],
  target: { uri: string; uuid: string; hooksDir: string },
  io: CliIo,
): ReturnType<typeof guardStateDir> {
  const { uri, uuid, hooksDir } = target;
  const installed = guardStateDir(values["state-dir"], io.env, { hooksDir });
  if (isSystemQemuUri(uri)) return installed;
  const own = guardStateDirFor(uri, values["state-dir"], io.env, { hooksDir });
  if (own !== null) return { ...own, hook: installed.hook };
  const reads = installed.unreadable !== null
    ? `may read it there (this user cannot read ${installed.unreadable})`
    : installed.hook === null
    ? "reads it there once installed (passthrough hook install's default)"
    : "reads it there";
  throw new Error(
    `Cannot give an allowance for the VMs of "${redactSecrets(uri)}" in ${installed.stateDir}: ` +
      `the start guard ${reads} for the VMs of ${GUARD_URI}, whose VM with UUID ${uuid} would ` +
      `start unchecked; --state-dir DIR gives it in DIR, "-c ${GUARD_URI}" to the host's VM`,
  );
}

/** Runs `passthrough guard allow VM`. */
export function run({ values, positionals }: Parsed<typeof GUARD>, io: CliIo): Promise<number> {
  const [vm] = positionals;
  const hooksDir = values["hooks-dir"] ?? DEFAULT_HOOKS_DIR;
  const { uuid, uri } = definedUuid(values, vm, io);
  const { stateDir, hook } = allowanceDir(values, { uri, uuid, hooksDir }, io);
  const { allowance, path } = writeAllowance(stateDir, vm, { uuid, uri });
  // The hook takes it at prepare begin and cannot learn what comes after: a start libvirt,
  // QEMU or a later hook then fails has used it, which the user would otherwise learn only from
  // the next refusal.
  io.out(
    `The next start of ${
      JSON.stringify(vm)
    } (UUID ${uuid}) goes on once even if the guard refuses it, and ` +
      `uses this allowance up even if libvirt, QEMU or another hook then fails it ` +
      `(until ${allowance.expires}; ${path})\n`,
  );
  noteLastRefusals(io, stateDir, vm);
  if (hook === null) {
    io.out(`Note: no start guard is installed in ${hooksDir}\n`);
  } else if (hook.stateDir !== stateDir) {
    io.out(
      `Note: the installed hook reads ${hook.stateDir}, not ${stateDir}${
        isSystemQemuUri(uri)
          ? ""
          : `, and guards the VMs of ${GUARD_URI}, not those of "${redactSecrets(uri)}"`
      }\n`,
    );
  }
  // A copy of the hook beside it uses the allowance up, or refuses the start this one allows.
  for (const other of otherHooksIn(hooksDir)) {
    io.out(`Note: ${otherHookProblem(other)}: rm ${shellWord(other)}\n`);
  }
  return Promise.resolve(0);
}

/** Records the allowance for the next start of `vm` (UUID `uuid`) in `stateDir`. */
function writeAllowance(
  stateDir: string,
  vm: string,
  { uuid, uri }: { uuid: string; uri: string },
): ReturnType<typeof allowNextStart> {
  try {
    // The connection too: the hook takes only one given over its own.
    return allowNextStart(stateDir, vm, { uuid, uri: lockUri(uri) });
  } catch (error) {
    // A full or read-only disk: the system's words alone do not say that nothing was allowed,
    // and an allowance given earlier (within the hour) still lets the next start go on.
    const earlier = allowanceFile(stateDir, vm);
    throw new Error(
      `Did not record the allowance for ${JSON.stringify(vm)} in ${stateDir}${
        earlier === null
          ? ", so its next start is checked as any other"
          : `; the one given earlier is unchanged (${earlier})`
      }: ${errorText(error)}`,
      { cause: error },
    );
  }
}

/**
 * Notes what an allowance does not lift in the guard's last refusal of `vm` (a device the host
 * needs, something it could not read), or that the guard recorded none for it.
 */
function noteLastRefusals(io: CliIo, stateDir: string, vm: string): void {
  // The records only inform: once the allowance is written, the command has done what it says.
  let records: GuardRefusalRecord[] | null = null;
  try {
    records = readRefusalRecords(stateDir);
  } catch (error) {
    io.err(`Note: cannot read the start guard's refusal records: ${errorText(error)}\n`);
  }
  const last = records?.find((r) => r.vm === vm)?.refusals ?? [];
  for (const refusal of last.filter((r) => r.hostNeeds !== null)) {
    // What another function of the device makes it needed for (its IOMMU group's, a VF of it,
    // which may be another running VM's) is said of that function, not of the device.
    const needs = refusal.hostNeeds!.startsWith("its ")
      ? `, whose ${refusal.hostNeeds!.slice(4)}`
      : `, which the host needs (${refusal.hostNeeds})`;
    io.out(
      `Note: its last refusal names ${refusal.address}${needs}: an allowance does not let a ` +
        `start take it; ${hostNeedsRemedy(refusal, vm)}\n`,
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
}
