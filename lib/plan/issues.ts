/**
 * The sentences of the planner's issues that more than one step builds, or that are long enough
 * to hide a step's logic: drift, unreadable definitions, live-only devices, devices still in
 * running guests.
 *
 * @module
 */

import type { Config, GuardPolicy } from "../config/config.ts";
import type { LenientHostdevScan } from "../domain/lenient.ts";
import type { PciAddress, PciDevice } from "../host/types.ts";
import type { DeviceIdentity, PlanIssue } from "./types.ts";
import type { UnresolvedKind } from "./used_devices.ts";
import { shellWord } from "../render/shell.ts";
import { oneLine } from "../render/terminal.ts";

/** `10de:2684 VGA compatible controller`: a device for humans. */
export function describe(device: PciDevice): string {
  return `${device.vendorId}:${device.deviceId} ${device.className ?? `class ${device.classCode}`}`;
}

/** What {@link describeIdentity} prints: a recorded identity, or a device as read now. */
export type DescribedIdentity =
  & Pick<
    PciDevice,
    "vendorId" | "deviceId" | "subsystemVendorId" | "subsystemDeviceId" | "classCode" | "serial"
  >
  & {
    driver?: string | null;
    /** The physical slot, where a record holds one to compare (`null`: the device is in none). */
    slot?: string | null;
  };

/**
 * `10de:1b06 (subsystem 1458:3730, class 030000, serial ..., slot PCIE2, driver nouveau)`: all that
 * tells a device apart, for messages comparing a recorded device with the one there now.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const drive = {
 *   vendorId: "144d", deviceId: "a808", subsystemVendorId: "144d", subsystemDeviceId: "a801",
 *   classCode: "010802", serial: "00-11-22-ff-ff-33-44-55",
 * };
 * assertEquals(
 *   describeIdentity(drive),
 *   "144d:a808 (subsystem 144d:a801, class 010802, serial 00-11-22-ff-ff-33-44-55)",
 * );
 * ```
 */
export function describeIdentity(identity: DescribedIdentity): string {
  const details = [
    ...(identity.subsystemVendorId !== null || identity.subsystemDeviceId !== null
      ? [`subsystem ${identity.subsystemVendorId ?? "?"}:${identity.subsystemDeviceId ?? "?"}`]
      : []),
    `class ${identity.classCode}`,
    ...(identity.serial !== null ? [`serial ${identity.serial}`] : []),
    // A slot or driver name is a file name on the host, which may hold a newline.
    ...(identity.slot === undefined
      ? []
      : [identity.slot === null ? "in no named slot" : `slot ${oneLine(identity.slot, false)}`]),
    ...(identity.driver ? [`driver ${oneLine(identity.driver, false)}`] : []),
  ];
  return `${identity.vendorId}:${identity.deviceId} (${details.join(", ")})`;
}

/** `"a", "b"`. */
function quoteAll(addresses: readonly PciAddress[]): string {
  return addresses.map((a) => `"${a}"`).join(", ");
}

/**
 * A `drift` warning: the hostdev at `record.address` was recorded as one device and the address
 * now holds another (`now`) or nothing; `outcome` says what the plan does about it. Both sides
 * say all that tells devices apart (subsystem, serial), so two drives of one model that swapped
 * slots do not read alike; the drivers are left out (the one there now may be `vfio-pci`).
 */
export function driftWarning(
  vm: string,
  record: DeviceIdentity,
  now: PciDevice | undefined,
  outcome: string,
): PlanIssue {
  // The slot the device there sits in, where the record holds one to compare.
  const slot = record.slot === undefined ? {} : { slot: now?.physicalSlot ?? null };
  const holds = now === undefined ? "nothing" : describeIdentity({ ...now, driver: null, ...slot });
  return {
    code: "drift",
    message: `Hostdev ${record.address} of "${vm}" (rule "${record.rule}") was recorded as ${
      describeIdentity({ ...record, driver: null })
    } but the address now holds ${holds}: ${outcome}`,
    vm,
    rule: record.rule,
    devices: [record.address],
  };
}

/** What a domain whose definition cannot be read counts as holding, for its issue's message. */
export function heldNote(name: string, scan: LenientHostdevScan): string {
  const held = scan.addresses.length === 0
    ? "no PCI device could be found in it, so it counts as holding none"
    : `the PCI device${scan.addresses.length === 1 ? "" : "s"} it names, ${
      quoteAll(scan.addresses)
    }, count${scan.addresses.length === 1 ? "s" : ""} as held by "${name}" for conflicts`;
  return held + unresolvedNote(scan);
}

/** `; N hostdevs name no readable host address, ...` when the scan could not name some. */
function unresolvedNote(scan: LenientHostdevScan): string {
  if (scan.unresolved === 0) return "";
  return `; ${scan.unresolved} hostdev${
    scan.unresolved === 1 ? " names" : "s name"
  } no readable host address, so the whole plan is refused`;
}

/**
 * The plan-wide refusal for a domain whose definition cannot be read and that may hold PCI
 * devices the lenient scan could not name: planning as if it held none could hand one of them
 * to another VM, so nothing is applied until the definition is fixed.
 */
export function unresolvedError(
  name: string,
  scan: LenientHostdevScan,
  which: "persistent" | "running",
): PlanIssue {
  const definition = which === "running" ? "running definition" : "definition";
  const vm = shellWord(name);
  // virsh edit changes the persistent definition only, and an undefined domain keeps running
  // (transient) with the same one: only stopping the guest ends a running definition.
  const until = which === "running"
    ? `the guest is stopped (virsh shutdown ${vm})`
    : `the definition is fixed (virsh edit ${vm}) or the domain is undefined`;
  return {
    code: "unreadable-definition",
    message:
      `Cannot tell which PCI devices domain "${name}" holds: its ${definition} cannot be read and ${
        scan.unresolved === 1 ? "a hostdev in it names" : `${scan.unresolved} hostdevs in it name`
      } no readable host address: nothing is applied until ${until}`,
    vm: name,
    ...(scan.addresses.length > 0 ? { devices: scan.addresses } : {}),
  };
}

/**
 * The plan-wide refusal for a domain libvirt listed but whose definition it did not return: what
 * it holds is unknown, so nothing is applied until it can be read.
 */
export function readFailedError(name: string, error: string): PlanIssue {
  return {
    code: "unreadable-definition",
    message:
      `Cannot tell which PCI devices domain "${name}" holds: libvirt cannot return its definition: ${error}: nothing is applied until it can be read or the domain is undefined`,
    vm: name,
  };
}

/**
 * The warning for a block disk or character device whose host device cannot be read (`/dev` or
 * sysfs).
 */
export function unresolvedDeviceWarning(
  name: string,
  path: string,
  error: string,
  kind: UnresolvedKind = "disk",
): PlanIssue {
  return {
    code: "unreadable-definition",
    message:
      `Cannot tell which PCI controller holds ${
        JSON.stringify(path)
      }, a ${kind} of VM "${name}": ${error}: planning counts none for it; a rule that takes ` +
      `that controller would pull the ${kind} from under "${name}"`,
    vm: name,
  };
}

/**
 * Whether `issue` is {@link unresolvedDeviceWarning}'s for the disk or character device `path` of
 * VM `name`.
 */
export function warnsUnresolvedDevice(issue: PlanIssue, name: string, path: string): boolean {
  return issue.code === "unreadable-definition" && issue.vm === name &&
    issue.message.startsWith(`Cannot tell which PCI controller holds ${JSON.stringify(path)},`);
}

/** The warning for a domain outside the config whose definition the strict reader refuses. */
export function unreadableOutsiderWarning(
  name: string,
  error: string,
  scan: LenientHostdevScan,
): PlanIssue {
  return {
    code: "unreadable-definition",
    message:
      `Cannot read the definition of domain "${name}", which is not in the config: ${error}: ${
        heldNote(name, scan)
      }`,
    vm: name,
    ...(scan.addresses.length > 0 ? { devices: scan.addresses } : {}),
  };
}

/**
 * The warning for a running guest whose live definition the strict reader refuses: `beyond` are
 * the devices the lenient scan finds in it that its persistent definition does not hold.
 */
export function unreadableLiveWarning(
  name: string,
  error: string,
  scan: LenientHostdevScan,
  beyond: readonly PciAddress[],
): PlanIssue {
  const s = beyond.length === 1 ? "" : "s";
  const held = beyond.length > 0
    ? `the PCI device${s} it names beyond its persistent definition, ${quoteAll(beyond)}, count${
      beyond.length === 1 ? "s" : ""
    } as held by "${name}" until the guest stops`
    : "no PCI device beyond its persistent definition could be found in it";
  return {
    code: "unreadable-definition",
    message: `Cannot read the running definition of domain "${name}": ${error}: ${held}${
      unresolvedNote(scan)
    }`,
    vm: name,
    ...(beyond.length > 0 ? { devices: [...beyond] } : {}),
  };
}

/** The warning for a running guest whose live definition libvirt did not return. */
export function unreadLiveWarning(name: string, error: string): PlanIssue {
  return {
    code: "unreadable-definition",
    message:
      `Cannot read the running definition of domain "${name}": ${error}: devices hot-plugged into it are not checked for conflicts`,
    vm: name,
  };
}

/** The start guard at a VM's start, as `plan` knows it. */
export interface StartGuard {
  /** The VM's `guard:` policy. */
  policy: GuardPolicy;
  /** Each rule's `guard:` by rule name, which judges the devices the rule passes. */
  rules?: Readonly<Record<string, GuardPolicy>> | undefined;
  /** Whether the guard is installed; absent: unknown, as for a tree captured on another host. */
  hook?: boolean | undefined;
}

/** The start guard at a VM's start, from what a VM's plan knows (`guard`: absent, `enforce`). */
export function startGuard(context: { guard?: GuardPolicy; guardHook?: boolean }): StartGuard {
  return { policy: context.guard ?? "enforce", hook: context.guardHook };
}

/**
 * The start guard at `vm`'s start: its policy, and each rule's, which the guard judges the
 * devices the rule passes by ({@link ruleStartGuard}).
 */
export function rulesStartGuard(
  vm: { guard?: GuardPolicy; rules: readonly { name: string; guard: GuardPolicy }[] },
  guardHook?: boolean,
): StartGuard {
  const rules = Object.fromEntries(vm.rules.map((r) => [r.name, r.guard]));
  return { policy: vm.guard ?? "enforce", rules, hook: guardHook };
}

/** The start guard for the devices `rule` passes: its own `guard:`, else the VM's. */
export function ruleStartGuard(start: StartGuard, rule: string): StartGuard {
  return { policy: start.rules?.[rule] ?? start.policy, hook: start.hook };
}

/**
 * What the start guard does with a reason of its own not to start a VM (an element it did not
 * record: the VM's policy judges it): `off` passes it and `warn` lets the start go on, unless
 * the host needs the device (`hostNeeds`), which `warn` never lets go; `refuses` when it is
 * installed, `unknown` when that is; `none` when it is not.
 */
export function startGuardDoes(
  { policy, hook }: StartGuard,
  hostNeeds: boolean,
): "none" | "off" | "warn" | "refuses" | "unknown" {
  if (hook === false) return "none";
  if (policy === "off") return "off";
  if (policy === "warn" && !hostNeeds) return "warn";
  return hook === true ? "refuses" : "unknown";
}

/**
 * What stops a start of a VM whose `<hostdev>` names a missing device ({@link startGuardDoes}):
 * libvirt fails the start wherever the guard lets it go on.
 */
function missingStopper(start: StartGuard): string {
  const libvirt = "libvirt fails to find the device";
  return {
    none: `no start guard is installed: ${libvirt}`,
    off: `its "guard: off" has the start guard pass it, and ${libvirt}`,
    warn: `its "guard: warn" has the start guard warn and go on, and ${libvirt}`,
    refuses: "the start guard refuses it",
    unknown: `the start guard refuses it; without the guard, ${libvirt}`,
  }[startGuardDoes(start, false)];
}

/**
 * The warning for a hand-written `<hostdev>` or `<interface type='hostdev'>` of `vm` whose host
 * address holds no device: the plan never edits it, and the VM cannot start while it is so
 * (what stops it: {@link missingStopper} of `start`), so `plan` says it first.
 */
export function handAddedMissingWarning(
  vm: string,
  element: "hostdev" | "interface",
  { address, guest }: { address: PciAddress; guest: string | null },
  start: StartGuard,
): PlanIssue {
  const what = element === "hostdev" ? "<hostdev>" : "<interface type='hostdev'>";
  const at = guest === null ? "" : ` (guest address ${guest})`;
  return {
    code: "hand-added-missing",
    message: `Hand-added ${what} ${address}${at} of VM "${vm}" holds no device on this host: ` +
      `"${vm}" cannot start while it is missing (${
        missingStopper(start)
      }): bring the device back there, or remove the element with virsh edit ${shellWord(vm)}`,
    vm,
    devices: [address],
  };
}

/** The warning for devices hot-plugged into a running guest beyond its persistent definition. */
export function liveOnlyWarning(name: string, extra: readonly PciAddress[]): PlanIssue {
  const one = extra.length === 1;
  return {
    code: "live-only-hostdev",
    message: `Running VM "${name}" has ${
      quoteAll(extra)
    } in its running guest but not in its persistent definition (hot-plugged, or removed from it while the guest ran): ${
      one ? "it counts" : "they count"
    } as held by "${name}" until the guest stops or ${one ? "it is" : "they are"} unplugged`,
    vm: name,
    devices: [...extra],
  };
}

/**
 * The warning for a VM (`vm`) whose plan adds devices (`devices`) that another VM's plan releases
 * while that VM (`holder`) is running: its guest keeps them until it is powered off, and libvirt
 * refuses to start a guest with a device another guest uses. `kept`: the devices are in the
 * definition of `vm` already (an earlier `apply` moved them while `holder` ran).
 */
export function heldByRunningWarning(
  vm: string,
  holder: string,
  devices: readonly PciAddress[],
  options: { kept?: boolean } = {},
): PlanIssue {
  const one = devices.length === 1;
  if (options.kept === true) {
    // Already in this VM's definition: no apply of this plan unplugs them from the guest.
    return {
      code: "held-by-running-vm",
      message: `${one ? "Device" : "Devices"} ${quoteAll(devices)} ${
        one ? "is" : "are"
      } in the definition of "${vm}" but running VM "${holder}" holds ${
        one ? "it" : "them"
      } until it is powered off: "${vm}" cannot start before that (libvirt refuses a device another guest uses), unless ${
        one ? "it is" : "they are"
      } unplugged from "${holder}" (${unplugCommand(holder, one)})`,
      vm,
      devices: [...devices],
    };
  }
  return {
    code: "held-by-running-vm",
    message: `${one ? "Device" : "Devices"} ${quoteAll(devices)} ${
      one ? "goes" : "go"
    } to "${vm}" but running VM "${holder}" holds ${
      one ? "it" : "them"
    } until it is powered off: "${vm}" cannot start before that (libvirt refuses a device another guest uses), unless apply --live unplugs ${
      one ? "it" : "them"
    } from "${holder}" now`,
    vm,
    devices: [...devices],
  };
}

/**
 * How to unplug hostdevs from running VM `holder` alone: virsh takes one device per file, and
 * the domain and the file are required. A VF of a `vf:` rule is no `<hostdev>` in the guest but
 * an `<interface type='hostdev'>`, the element to detach.
 */
function unplugCommand(holder: string, one: boolean): string {
  const vm = shellWord(holder);
  return `virsh detach-device ${vm} FILE --live, FILE holding ${
    one ? "its" : "one's"
  } <hostdev> element (a VF's <interface type='hostdev'>) from virsh dumpxml ${vm}${
    one ? "" : ", once for each"
  }`;
}

/**
 * The refusal for an orphan (a domain the config no longer names that holds hostdevs this tool
 * added) whose devices are kept: the config names VMs libvirt does not have (`unknown`, perhaps
 * the orphan misspelt), or names no VM at all (on this host, with a host `section`). Releasing
 * them is said by naming the VM with no device (on this host only, with a `section`).
 */
export function orphanKeptError(
  name: string,
  file: string,
  unknown: readonly string[],
  section?: Config["section"],
): PlanIssue {
  const release = releaseHint(name, section);
  const here = section === undefined ? "" : ` for host "${section.host}"`;
  const message = unknown.length === 0
    ? `they are not released, since the config names no VM${here} (releasing every VM's devices is never done by omission). To release them, ${release}`
    : `they are not released while the config names ${
      unknown.map((n) => `"${n}"`).join(", ")
    }, which libvirt does not have (misspelt?). Fix the name, or to release them ${release}`;
  return {
    code: "vm-not-in-config",
    message:
      `VM "${name}" is not in config "${file}"${here} but holds hostdevs passthrough added: ${message}`,
    vm: name,
  };
}

/**
 * How to release a dropped VM's devices: name it with no device. With a host section, on that
 * host only ("devices: []" on every host would strip it where it runs, and a VM the file names
 * for other hosts cannot be listed twice: it is planned here with its rules kept elsewhere).
 */
function releaseHint(name: string, section: Config["section"]): string {
  if (section === undefined) return `list "${name}: { devices: [] }" under vms:`;
  const { host, elsewhere } = section;
  if (!Object.hasOwn(elsewhere, name)) {
    return `list "${name}: { host: ${host}, devices: [] }" under vms:`;
  }
  const hosts = elsewhere[name]!;
  return `add "${host}" to the hosts of "${name}" (hosts: [${
    [...hosts, host].join(", ")
  }]) and limit each of its rules to ${
    hosts.length === 1 ? `host: ${hosts[0]}` : `hosts: [${hosts.join(", ")}]`
  }: it is then planned on "${host}" with no rule`;
}
