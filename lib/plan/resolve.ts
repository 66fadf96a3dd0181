/**
 * Resolving the config on a host: every VM's rules to devices, closed over IOMMU groups, checked
 * against each other and against what domains hold now. Pure: no libvirt.
 *
 * @module
 */

import type { Config, VmConfig } from "../config/config.ts";
import { closeOverGroups, type ClosureResult } from "../resolve/closure.ts";
import { resolveRule, type RuleResolution, sameIdentityAsRead } from "../resolve/match.ts";
import { findMovedCard } from "../resolve/moves.ts";
import {
  pfInClosure,
  resolveVfRule,
  type VfChoice,
  type VfContext,
  vfContext,
} from "../resolve/vf.ts";
import type { HostTopology, PciAddress, PciDevice } from "../host/types.ts";
import { findConflicts } from "./conflicts.ts";
import { type RunFlags, shellWord } from "../render/shell.ts";
import { oneLine } from "../render/terminal.ts";
import { RUNNING_ONLY } from "./used_devices.ts";
import { type NetworkPool, networkPoolErrors } from "./networks.ts";
import type { DeviceIdentity, PlanIssue, VfIdentity } from "./types.ts";
import type { MatchCriteria } from "../config/config.ts";
import { describeIdentity } from "./issues.ts";

/** What one VM's rules resolve to on a host, before looking at its domain XML. */
export interface VmResolution {
  /** The VM's name. */
  vm: string;
  /** Each rule's resolution, in config order. */
  rules: RuleResolution[];
  /** The rules' devices closed over their IOMMU groups. */
  closure: ClosureResult;
  /** Rule issues, closure refusals and cross-VM conflicts. */
  errors: PlanIssue[];
  /** Closure warnings (no FLR, host driver in use, ...). */
  warnings: PlanIssue[];
  /** The VF each `vf:` rule took, by the VF's address (written as an interface). */
  vfs: Map<PciAddress, VfChoice>;
}

/** Inputs of {@link resolveConfig} beyond the config and host. */
export interface ResolveOptions {
  /** Per VM: identities recorded in its domain (keeps `driver:` rules matching after vfio). */
  records?: ReadonlyMap<string, readonly DeviceIdentity[]>;
  /** Per VM: the host addresses its definition holds now. */
  current?: ReadonlyMap<string, ReadonlySet<PciAddress>>;
  /** Per VM: the host addresses its definition passes by hand, which no plan removes. */
  handPassed?: ReadonlyMap<string, ReadonlySet<PciAddress>>;
  /**
   * Devices that stay where they are whatever this plan does, per domain: every hostdev of a
   * domain the config does not name or the plan leaves out, and the hand-added hostdevs of the
   * planned ones. They count for group conflicts.
   */
  held?: ReadonlyMap<string, readonly PciAddress[]>;
  /**
   * Everything each domain's definitions hold now, owned or not, by domain: a `vf: any` rule
   * takes a VF none holds (its own VF aside).
   */
  occupied?: ReadonlyMap<string, ReadonlySet<PciAddress>>;
  /** The MACs of every domain's interfaces now, by domain: `mac: auto` avoids them. */
  macs?: ReadonlyMap<string, readonly string[]>;
  /** Per VM: the VFs recorded in its domain (keeps a `vf: any` rule on its VF, follows its PF). */
  vfRecords?: ReadonlyMap<string, readonly VfIdentity[]>;
  /**
   * Per VM: the PCI controllers under the host devices it uses (block disks, USB devices, the
   * NICs under its macvtap and bridge interfaces), each with what it holds there. Its rules must not take them: the start would detach the
   * controller, and those devices with it.
   */
  deviceControllers?: ReadonlyMap<string, ReadonlyMap<PciAddress, readonly string[]>>;
  /** The pools of the hostdev networks: no rule takes their VFs or PFs. */
  pools?: readonly NetworkPool[];
  /**
   * Per running domain: the devices of `held` that only its running guest holds (not its
   * persistent definition), such as a device an `apply` released while it ran.
   */
  runningOnly?: ReadonlyMap<string, ReadonlySet<PciAddress>>;
  /** The flags of this run that the commands a refusal advises repeat. */
  run?: RunFlags | undefined;
}

/**
 * The whole-host issues: `no-iommu` and `host-use-unknown` (errors) and `acs-override` (a warning).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { topologyFromDescription } from "../testing/host_description.ts";
 * const host = topologyFromDescription({ devices: [] }, { source: "example" });
 * assertEquals(hostIssues(host).errors.map((e) => e.code), ["no-iommu"]);
 * ```
 */
export function hostIssues(host: HostTopology): { errors: PlanIssue[]; warnings: PlanIssue[] } {
  const errors: PlanIssue[] = [];
  const warnings: PlanIssue[] = [];
  if (host.hostUse === null) {
    // Without it a NIC carrying the default route or the root disk's controller would be planned
    // into a guest like any spare device.
    const what = /^[A-Za-z][A-Za-z0-9+.-]*:/.test(host.source)
      ? `Host "${host.source}" was discovered through libvirt, which does not say`
      : `The tree at "${host.source}" has no host_use.json, so it does not say`;
    errors.push({
      code: "host-use-unknown",
      message:
        `${what} what the host uses right now (mounted filesystems, the default route, the console): no device can be passed safely without it: capture the tree with 'passthrough snapshot DIR' on that host and plan with --sysfs DIR, or run passthrough there`,
    });
  }
  if (host.iommu === "absent") {
    errors.push({
      code: "no-iommu",
      message:
        `Host "${host.source}" has no IOMMU groups: enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on (Intel; AMD's is on by default, without amd_iommu=off or iommu=off); no device can be passed safely without it`,
    });
  }
  if (host.kernelCmdline !== null && /\bpcie_acs_override=/.test(host.kernelCmdline)) {
    warnings.push({
      code: "acs-override",
      message:
        `The kernel runs with pcie_acs_override: its IOMMU groups are not real isolation boundaries, a guest may reach devices outside its group`,
    });
  }
  return { errors, warnings };
}

/** One VM's rules resolved against the host, before closure. */
interface VmMatches {
  rules: RuleResolution[];
  vfs: Map<PciAddress, VfChoice>;
}

/** One VM's rules resolved against the host (the VF each `vf:` rule takes from `vfContext`). */
function matchVm(
  vm: VmConfig,
  host: HostTopology,
  options: ResolveOptions,
  vfContext: VfContext,
): VmMatches {
  const records = options.records?.get(vm.name) ?? [];
  const current = options.current?.get(vm.name);
  const match = { records, run: options.run, ...(current === undefined ? {} : { current }) };
  const vfs = new Map<PciAddress, VfChoice>();
  const pfRecords = (options.vfRecords?.get(vm.name) ?? []).map((r) => r.pf);
  const everyVm = [
    ...[...options.records?.values() ?? []].flat(),
    ...[...options.vfRecords?.values() ?? []].flat().map((r) => r.pf),
  ];
  const rules = vm.rules.map((rule) => {
    if (rule.vf === undefined) {
      const resolution = addressAloneReplaced(resolveRule(rule, host, match), records);
      return twinAtAddress(resolution, host, { records, everyVm });
    }
    const { resolution, choice } = resolveVfRule(rule, host, vfContext, match);
    if (choice === null) return resolution;
    // The PF a `vf:` rule names by IDs and address is judged as a hostdev's card is: a twin
    // shifted onto its address puts the VM's interface on another NIC, maybe on another network.
    const named = { rule, devices: [choice.pf], units: [], issue: null };
    const pf = twinAtAddress(named, host, { records: pfRecords, everyVm });
    if (pf.issue !== null) return pf;
    vfs.set(choice.vf.address, choice);
    return resolution;
  });
  return { rules, vfs };
}

/**
 * The devices each VM's own rules match, by address, to the VM's name (the first in config
 * order): a group mate one of them matches is that VM's, not the host's. A `vf:` rule's match
 * names the PF, which the VF's VM does not pass: left out.
 */
function matchedByVm(matches: ReadonlyMap<string, VmMatches>): Map<PciAddress, string> {
  const out = new Map<PciAddress, string>();
  for (const [vm, { rules }] of matches) {
    for (const { rule, devices } of rules) {
      if (rule.vf !== undefined) continue;
      for (const d of devices) if (!out.has(d.address)) out.set(d.address, vm);
    }
  }
  return out;
}

/** One VM's matched rules closed over IOMMU groups, with its own issues. */
function resolveVm(
  vm: VmConfig,
  host: HostTopology,
  options: ResolveOptions,
  { rules, vfs }: VmMatches,
  matchedBy: ReadonlyMap<PciAddress, string>,
): VmResolution {
  const current = options.current?.get(vm.name);
  const handPassed = options.handPassed?.get(vm.name);
  const closure = closeOverGroups(vm.name, rules, host, {
    ...(current === undefined ? {} : { current }),
    ...(handPassed === undefined ? {} : { handPassed }),
    matchedBy,
  });
  closure.reasoning.unshift(...[...vfs.values()].map((c) => c.why));
  const own = ownDeviceIssues(
    vm.name,
    rules,
    closure,
    host,
    options.deviceControllers?.get(vm.name),
  );
  const errors = [
    ...rules.flatMap((r) => r.issue ? [r.issue] : []),
    ...closure.errors,
    ...pfInClosure(vm.name, vfs, closure),
    ...inconsistentGroupErrors(vm.name, closure, host),
    ...own.errors,
    ...networkPoolErrors(vm.name, closure, options.pools ?? []),
  ];
  const warnings = [...closure.warnings, ...own.warnings];
  return { vm: vm.name, rules, closure, errors, warnings, vfs };
}

/** The criteria that say what a device is, rather than where it sits or what drives it now. */
const IDENTITY_KEYS: readonly (keyof MatchCriteria)[] = [
  "vendorId",
  "deviceId",
  "subsystemVendorId",
  "subsystemDeviceId",
  "classPrefixes",
  "slot",
  "serial",
];

/**
 * A rule naming its device by address alone takes whatever sits there. Where the VM recorded
 * another device at that address (other IDs, subsystem, class or serial), the card there was
 * replaced: keeping it handed the new device to the guest on a mere warning, and the record
 * updated with it let the start guard pass. Refused instead (`drift`), so the repair removes the
 * stale hostdev and the rule must say which device it means.
 */
function addressAloneReplaced(
  resolution: RuleResolution,
  records: readonly DeviceIdentity[],
): RuleResolution {
  const { rule } = resolution;
  const address = rule.match.address;
  if (address === undefined || IDENTITY_KEYS.some((k) => rule.match[k] !== undefined)) {
    return resolution;
  }
  const device = resolution.devices.find((d) => d.address === address);
  const record = records.find((r) => r.address === address);
  if (device === undefined || record === undefined) return resolution;
  // The slot aside: a firmware that names the slot otherwise has not replaced the card. A record
  // without a serial may come from a read that could not see it: a serial seen now is no proof.
  const { slot: _slot, ...card } = record;
  const seen = card.serial === null ? { ...device, serial: null } : device;
  if (sameIdentityAsRead(card, seen)) return resolution;
  const ids = `${device.vendorId}:${device.deviceId}`;
  return {
    rule,
    devices: [],
    units: [],
    issue: {
      code: "drift",
      message:
        `Rule "${rule.name}" of VM "${rule.vm}" names its device by address alone, and ${address} now holds ${
          describeIdentity({ ...device, driver: null })
        }, not the recorded ${
          describeIdentity({ ...card, driver: null })
        }: add the IDs of the device you mean to the rule (vendor_device_id: "${record.vendorId}:${record.deviceId}" for the recorded one, "${ids}" to take the new one)`,
      vm: rule.vm,
      rule: rule.name,
      location: rule.location,
      devices: [address],
    },
  };
}

/**
 * A rule that names its device by address but by no serial or slot (`{ vendor_device_id, address
 * }`, for twins nothing else told apart) takes whatever card of that model sits there. Where the
 * VM recorded another card at that address, one that tells itself apart (its serial, its slot)
 * and is proven elsewhere on the host ({@link findMovedCard}) where no VM recorded the card that
 * sits there now (`everyVm`: every VM's records), a card added or removed before it
 * renumbered the buses: the card there now was another twin of the host's, maybe its disk.
 * Refused (`drift`), and the repair removes the stale hostdev. Where the recorded card is on the
 * host no more, its serial differing is refused too, unless the card there now sits in the slot
 * the recorded one sat in (see {@link goneAndNotInItsSlot}); otherwise the edit warns of the
 * drift and keeps the rule's device. A `vf:` rule's PF is judged so too (`records`: its VF
 * records' PFs).
 */
function twinAtAddress(
  resolution: RuleResolution,
  host: HostTopology,
  { records, everyVm }: {
    records: readonly DeviceIdentity[];
    everyVm: readonly DeviceIdentity[];
  },
): RuleResolution {
  const { rule } = resolution;
  const address = rule.match.address;
  if (address === undefined || rule.match.serial !== undefined || rule.match.slot !== undefined) {
    return resolution;
  }
  const matched = resolution.devices.find((d) => d.address === address);
  const record = records.find((r) => r.address === address);
  if (matched === undefined || record === undefined) return resolution;
  // A record without a serial may come from a read that could not see it: a serial seen now is
  // no proof of another card (as in addressAloneReplaced). One this read cannot see is unknown,
  // not another (as in sameIdentityAsRead). Compared as the recorded one, then.
  const unread = matched.serial === null && matched.flr === null;
  const device = record.serial === null || unread ? { ...matched, serial: record.serial } : matched;
  if (sameIdentityAsRead(record, device)) return resolution;
  // A twin a VM holds at its own recorded address, this one or another, is accounted for: not
  // where this card went. Otherwise a card replaced in place by another board of its chip was
  // said to have moved onto the other VM's twin, "the only such device", and that address given
  // as the fix.
  const accounted = (d: PciDevice) =>
    everyVm.some((r) => r.address === d.address && sameIdentityAsRead(r, d));
  const elsewhere = host.devices.filter((d) => d.address !== address && !accounted(d));
  const found = findMovedCard(record, address, elsewhere.map((d) => ({ device: d })), host);
  if (found === undefined && !goneAndNotInItsSlot(record, device)) return resolution;
  const now = describeIdentity({
    ...matched,
    driver: null,
    ...(record.slot === undefined ? {} : { slot: device.physicalSlot }),
  });
  const take = keyTelling(device, record);
  const head = `Rule "${rule.name}" of VM "${rule.vm}" takes ${address} by its address, and the ` +
    `device there now is ${now}, not the recorded one (${differences(record, device)})`;
  let message: string;
  if (found !== undefined) {
    const to = found.found.device.address;
    const keep = record.serial !== null
      ? `, or serial: ${
        JSON.stringify(record.serial)
      } in its place (which follows it wherever it sits)`
      : record.slot !== undefined
      ? `, or slot: ${JSON.stringify(record.slot)} in its place (which stays with the slot)`
      : "";
    message = `${head}, which is now at ${to} (${found.evidence}): a card added or removed ` +
      `before it renumbered the buses: to keep the VM's card, set address: "${to}"${keep}` +
      (take === null ? "" : `; to take the one at ${address} instead, add ${take}`);
  } else {
    message = `${head}, which is on the host no more: a card removed before it shifts the next ` +
      `one onto its address, so this may be a card that was elsewhere: if you replaced the VM's ` +
      `card with this one, add serial: ${
        JSON.stringify(device.serial)
      } to the rule; to keep the VM's card, put it back`;
  }
  return {
    rule,
    devices: [],
    units: [],
    issue: {
      code: "drift",
      message,
      vm: rule.vm,
      rule: rule.name,
      location: rule.location,
      devices: found === undefined ? [address] : [address, found.found.device.address],
    },
  };
}

/**
 * Whether the recorded card of a twin rule is gone and the one at its address differs in serial
 * from it, in no slot it was recorded in. Removing a card shifts the buses after it as adding one
 * does, so the card there now may be a twin the host had elsewhere (its data disk): nothing the
 * record holds tells it from a card put in the place of the recorded one, and handing over a disk
 * is worse than asking for its serial once. A card sitting in the recorded slot was put there:
 * the card replaced in place (a dead drive swapped, as Proxmox and Unraid users do), which the
 * edit warns of and takes. Without a serial on both sides nothing proves another card (firmware
 * renames slots).
 */
function goneAndNotInItsSlot(record: DeviceIdentity, device: PciDevice): boolean {
  return record.serial !== null && device.serial !== null && record.serial !== device.serial &&
    (record.slot === undefined || record.slot !== device.physicalSlot);
}

/** What of `record` differs from `device`, as `describeIdentity` says it: `serial 00-11-...`. */
function differences(record: DeviceIdentity, device: PciDevice): string {
  const out = [
    ...(record.vendorId !== device.vendorId || record.deviceId !== device.deviceId
      ? [`${record.vendorId}:${record.deviceId}`]
      : []),
    ...(record.subsystemVendorId !== device.subsystemVendorId ||
        record.subsystemDeviceId !== device.subsystemDeviceId
      ? [`subsystem ${record.subsystemVendorId ?? "?"}:${record.subsystemDeviceId ?? "?"}`]
      : []),
    ...(record.classCode !== device.classCode ? [`class ${record.classCode}`] : []),
    ...(record.serial !== device.serial
      ? [record.serial === null ? "no serial" : `serial ${record.serial}`]
      : []),
    // A recorded slot name comes back from the domain's metadata, newlines and all.
    ...(record.slot !== undefined && record.slot !== device.physicalSlot
      ? [`slot ${oneLine(record.slot, false)}`]
      : []),
  ];
  return out.join(", ");
}

/**
 * The match key, as YAML, that tells `device` from the card `record` describes (its serial, its
 * slot, its subsystem, its IDs or class), for a rule to take it; `null` when none does.
 */
function keyTelling(device: PciDevice, record: DeviceIdentity): string | null {
  if (device.serial !== null && device.serial !== record.serial) {
    return `serial: ${JSON.stringify(device.serial)}`;
  }
  if (device.physicalSlot !== null && device.physicalSlot !== record.slot) {
    return `slot: ${JSON.stringify(device.physicalSlot)}`;
  }
  if (
    device.subsystemVendorId !== null && device.subsystemDeviceId !== null &&
    (device.subsystemVendorId !== record.subsystemVendorId ||
      device.subsystemDeviceId !== record.subsystemDeviceId)
  ) {
    return `subsystem_vendor_id: "${device.subsystemVendorId}", subsystem_device_id: "${device.subsystemDeviceId}"`;
  }
  if (device.vendorId !== record.vendorId || device.deviceId !== record.deviceId) {
    return `vendor_device_id: "${device.vendorId}:${device.deviceId}"`;
  }
  return device.classCode !== record.classCode ? `class: "${device.classCode}"` : null;
}

/** How to take `used` (descriptions of host devices `vm` uses) out of VM `vm`. */
function removeAdvice(vm: string, used: readonly string[]): string {
  const them = used.length === 1 ? "it" : "them";
  const live = used.some((u) => u.endsWith(RUNNING_ONLY))
    ? `; what only the running guest uses: virsh detach-device ${shellWord(vm)} FILE --live`
    : "";
  return `remove ${them} from the VM first (virsh edit ${shellWord(vm)}${live})`;
}

/**
 * The VM's `own-device` issues: taking the controller under a host device it uses itself (a
 * block disk by its `/dev` path, a USB or SCSI device, a NIC its network goes through, an evdev
 * input or serial port) is refused: at start libvirt detaches the controller from its host
 * driver, the device goes away with it, and the guest cannot open it. A rule with
 * `iommu_group: false` whose group holds such a controller is warned about: the VM starts only
 * once that controller is unbound or on vfio-pci, which takes the device too.
 */
function ownDeviceIssues(
  vm: string,
  rules: readonly RuleResolution[],
  closure: ClosureResult,
  host: HostTopology,
  controllers: ReadonlyMap<PciAddress, readonly string[]> | undefined,
): { errors: PlanIssue[]; warnings: PlanIssue[] } {
  if (controllers === undefined || controllers.size === 0) return { errors: [], warnings: [] };
  const errors = closure.devices.flatMap(({ device, rule, reason }): PlanIssue[] => {
    const used = controllers.get(device.address);
    if (used === undefined) return [];
    const how = reason === "matched"
      ? `rule "${rule.name}" matches ${device.address}`
      : `rule "${rule.name}" takes ${device.address} with its IOMMU group`;
    return [{
      code: "own-device",
      message: `VM "${vm}" uses ${used.join(", ")} on ${device.address}, and its ${how}: ` +
        `libvirt detaches that controller from the host at start, and ${
          used.length === 1 ? "that device goes" : "those devices go"
        } with it: ${removeAdvice(vm, used)}, or leave ${device.address} with the host`,
      vm,
      rule: rule.name,
      location: rule.location,
      devices: [device.address],
      ...(device.iommuGroup === null ? {} : { group: device.iommuGroup }),
    }];
  });
  const taken = new Set(closure.devices.map((c) => c.device.address));
  const warnings = rules.filter((r) => !r.rule.iommuGroup).flatMap(({ rule, devices }) => {
    const groups = new Set(devices.flatMap((d) => d.iommuGroup === null ? [] : [d.iommuGroup]));
    return host.devices.filter((d) =>
      d.iommuGroup !== null && groups.has(d.iommuGroup) && !taken.has(d.address) &&
      controllers.has(d.address)
    ).map((d): PlanIssue => {
      const used = controllers.get(d.address)!;
      return {
        code: "own-device",
        message:
          `Rule "${rule.name}" of VM "${vm}" shares IOMMU group ${d.iommuGroup} with ${d.address}, under ${
            used.join(", ")
          } that "${vm}" uses: with iommu_group: false it stays with the host, and "${vm}" cannot start until it is unbound or on vfio-pci, which takes ${
            used.length === 1 ? "that device" : "those devices"
          } from "${vm}" too: ${removeAdvice(vm, used)}`,
        vm,
        rule: rule.name,
        location: rule.location,
        devices: [d.address],
        group: d.iommuGroup!,
      };
    });
  });
  return { errors, warnings };
}

/**
 * `group-inconsistent` refusals: the VM would take a device whose IOMMU group data disagrees
 * with itself (`host.groupInconsistencies`), so its closure may leave a group member behind.
 */
function inconsistentGroupErrors(
  vm: string,
  closure: ClosureResult,
  host: HostTopology,
): PlanIssue[] {
  return host.groupInconsistencies.flatMap((problem) => {
    const hit = closure.devices.filter(({ device }) =>
      problem.devices.includes(device.address) ||
      (device.iommuGroup !== null && problem.groups.includes(device.iommuGroup))
    );
    const rule = hit[0]?.rule;
    if (rule === undefined) return [];
    const group = problem.groups.length === 1 ? { group: problem.groups[0]! } : {};
    return [{
      code: "group-inconsistent" as const,
      message: `VM "${vm}" would take ${
        hit.map((c) => c.device.address).join(", ")
      } (rule "${rule.name}"), but the IOMMU group data of "${host.source}" disagrees: ${problem.detail}: the whole group cannot be known, so nothing is planned for "${vm}" until discovery reads consistent data (rerun it; recapture a tree with 'passthrough snapshot')`,
      vm,
      rule: rule.name,
      location: rule.location,
      devices: hit.map((c) => c.device.address),
      ...group,
    }];
  });
}

/**
 * Resolves every VM's rules against `host`, closes them over IOMMU groups and checks the VMs
 * against each other and against what domains hold (`options.held`). Pure: no libvirt.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { parseConfig } from "../config/config.ts";
 * import { topologyFromDescription } from "../testing/host_description.ts";
 * const blank = { subsystem_vendor: null, subsystem_device: null, driver: null, revision: null };
 * const host = topologyFromDescription({ devices: [
 *   { bdf: "0000:01:00.2", group: 1, class: "0x020000", vendor: "0x15b3", device: "0x1016", ...blank },
 *   { bdf: "0000:01:00.3", group: 1, class: "0x020000", vendor: "0x15b3", device: "0x1016", ...blank },
 * ] }, { source: "example" });
 * const config = parseConfig(
 *   "version: 1\nvms:\n  vm1:\n    devices:\n      - match: { address: 01:00.2 }\n" +
 *     "  vm2:\n    devices:\n      - match: { address: 01:00.3 }\n",
 *   { file: "example.yaml" },
 * );
 * const vm2 = resolveConfig(config, host).get("vm2");
 * assertEquals(vm2?.errors.map((e) => [e.code, e.group, e.vms]), [
 *   ["group-shared-with-other-vm", 1, ["vm1", "vm2"]],
 * ]);
 * ```
 */
export function resolveConfig(
  config: Config,
  host: HostTopology,
  options: ResolveOptions = {},
): Map<string, VmResolution> {
  return withConflicts(resolveEach(config, host, options), host, options);
}

/**
 * Every VM's rules resolved against `host` and closed over IOMMU groups, each VM alone: without
 * the conflicts {@link withConflicts} adds. `options.held` is not read.
 */
export function resolveEach(
  config: Config,
  host: HostTopology,
  options: ResolveOptions = {},
): Map<string, VmResolution> {
  // One context for every VM: two `vf: any` rules never take the same VF or MAC, nor one a
  // hostdev network hands out.
  const pools = new Map((options.pools ?? []).flatMap((p) => p.vfs.map((vf) => [vf, p.name])));
  const vf = vfContext({
    pools,
    ...(options.occupied ? { occupied: options.occupied } : {}),
    ...(options.macs ? { macs: options.macs } : {}),
    ...(options.vfRecords ? { records: options.vfRecords } : {}),
  });
  // Every VM matched first (in config order, as the VFs are taken), then each closed: a group
  // mate another VM's rule matches is judged as that VM's device, not the host's.
  const matches = new Map(config.vms.map((vm) => [vm.name, matchVm(vm, host, options, vf)]));
  const matchedBy = matchedByVm(matches);
  return new Map(
    config.vms.map((
      vm,
    ) => [vm.name, resolveVm(vm, host, options, matches.get(vm.name)!, matchedBy)]),
  );
}

/**
 * `resolved` (each VM resolved alone) with the conflicts of the VMs against each other and
 * against what domains hold (`options.held`) added to copies of their errors: the planner's
 * rounds differ only in what is held, so each VM's rules are resolved once.
 */
export function withConflicts(
  resolved: ReadonlyMap<string, VmResolution>,
  host: HostTopology,
  options: ResolveOptions,
): Map<string, VmResolution> {
  const out = new Map([...resolved].map(([vm, r]) => [vm, { ...r, errors: [...r.errors] }]));
  for (const [vm, issues] of findConflicts(out, heldForConflicts(out, options), host)) {
    out.get(vm)?.errors.push(...issues.map((i) => withUses(i, vm, options.deviceControllers)));
  }
  return out;
}

/**
 * `options.held` without what only a running guest holds of a device another VM's definition
 * holds and its rules keep: refusing that VM would change nothing (its definition keeps the
 * device), and is what a plan after `apply` moved a device away from a running VM would do. That
 * VM gets a `held-by-running-vm` warning instead: it cannot start before the guest lets go.
 */
function heldForConflicts(
  resolved: ReadonlyMap<string, VmResolution>,
  options: ResolveOptions,
): ReadonlyMap<string, readonly PciAddress[]> {
  const held = options.held ?? new Map<string, readonly PciAddress[]>();
  if (options.runningOnly === undefined || options.current === undefined) return held;
  const kept = new Map<PciAddress, string[]>();
  for (const [vm, resolution] of resolved) {
    const current = options.current.get(vm);
    for (const { device } of resolution.closure.devices) {
      if (current?.has(device.address)) {
        kept.set(device.address, [...(kept.get(device.address) ?? []), vm]);
      }
    }
  }
  return new Map([...held].map(([name, addresses]) => {
    const running = options.runningOnly!.get(name);
    if (running === undefined) return [name, addresses];
    return [
      name,
      addresses.filter((a) => !running.has(a) || !kept.get(a)?.some((vm) => vm !== name)),
    ];
  }));
}

/**
 * `issue` (a conflict of `vm` with other domains) saying, where another domain holds a device of
 * it as the controller under a host device it uses, which: its definition names no hostdev there.
 */
function withUses(
  issue: PlanIssue,
  vm: string,
  controllers: ResolveOptions["deviceControllers"],
): PlanIssue {
  // The few domains with such uses are looked up among the issue's VMs, not every one of those
  // (a group every VM claims) in the map: each VM has an issue naming all of them.
  const vms = issue.vms ?? [];
  const users = [...controllers?.keys() ?? []]
    .filter((other) => other !== vm && vms.includes(other))
    .sort((a, b) => vms.indexOf(a) - vms.indexOf(b));
  const notes = users.flatMap((other) =>
    (issue.devices ?? []).flatMap((address) => {
      const uses = controllers?.get(other)?.get(address);
      return uses === undefined ? [] : [`"${other}" uses ${uses.join(", ")} on ${address}`];
    })
  );
  return notes.length === 0
    ? issue
    : { ...issue, message: `${issue.message}; ${notes.join("; ")}` };
}
