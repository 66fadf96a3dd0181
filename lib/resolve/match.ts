/**
 * Resolves a config rule to exactly the host devices it allows. A rule takes `count` cards
 * (default 1), where the functions of one card it matches inside one IOMMU group count as one;
 * more than that is `ambiguous`, none is `no-match`, and both list the candidates with the
 * criterion that would tell them apart.
 *
 * @module
 */

import type { DeviceRule, MatchCriteria } from "../config/config.ts";
import type { Candidate, DeviceIdentity, PlanIssue } from "../plan/types.ts";
import type { HostTopology, PciAddress, PciDevice } from "../host/types.ts";
import { behindVmd, cardOf, onRootBus } from "./host_critical.ts";
import { followUpCommand, type RunFlags } from "../render/shell.ts";
import { slotOf } from "../pci/address.ts";

/** Drivers that only hold a device for a guest: the device's real host driver is elsewhere. */
export const VFIO_DRIVERS: ReadonlySet<string> = new Set(["vfio-pci", "pci-stub"]);

/**
 * Whether `record` describes the same card as `device`: IDs, subsystem, class and serial agree,
 * and the physical slot where one was recorded (identical cards without serial numbers differ
 * only there). A record without a slot (written before slots were recorded, or a device in no
 * named slot) compares no slot. To ask where a card sits now, whatever its slot, leave the slot
 * out of the record (`findMovedCard`).
 */
export function sameIdentity(record: DeviceIdentity, device: PciDevice): boolean {
  return record.vendorId === device.vendorId && record.deviceId === device.deviceId &&
    record.subsystemVendorId === device.subsystemVendorId &&
    record.subsystemDeviceId === device.subsystemDeviceId && record.serial === device.serial &&
    record.classCode === device.classCode &&
    (record.slot === undefined || record.slot === device.physicalSlot);
}

/**
 * {@link sameIdentity} of the device at a record's own address, as far as this read can tell:
 * where the configuration space could not be read past its 64-byte header (an unprivileged read,
 * so `flr` is unknown as well), the serial number is unknown, not absent, and is not compared.
 * Otherwise an unprivileged `plan` took every card recorded with a serial for another one at
 * its own address (`drift`), whose repair removed it; the start guard, run as root, compares it.
 * Moves are never proven this way: `findMovedCard` asks for the serial itself.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import type { PciDevice } from "../host/types.ts";
 * const record = { address: "0000:01:00.0", vendorId: "10de", deviceId: "2684",
 *   subsystemVendorId: null, subsystemDeviceId: null, classCode: "030000",
 *   serial: "00-11-22-ff-ff-33-44-55", driver: "nvidia", rule: "gpu" };
 * const unread = { ...record, serial: null, flr: null, physicalSlot: null } as
 *   unknown as PciDevice;
 * assertEquals(sameIdentityAsRead(record, unread), true);
 * assertEquals(sameIdentityAsRead(record, { ...unread, flr: false }), false);
 * ```
 */
export function sameIdentityAsRead(record: DeviceIdentity, device: PciDevice): boolean {
  return sameIdentity(record, serialUnread(device) ? { ...device, serial: record.serial } : device);
}

/**
 * The VM's recorded identity of `device`, or `null` when nothing recorded fits. Without a serial
 * number only a record at the same address counts, since identical cards are otherwise
 * indistinguishable.
 */
export function recordOf(
  device: PciDevice,
  records: readonly DeviceIdentity[],
): DeviceIdentity | null {
  for (const record of records) {
    // Its slot aside: a slot named otherwise since must not lose the driver recorded with it.
    const { slot: _slot, ...card } = record;
    if (!sameIdentity(card, device)) continue;
    if (record.address === device.address || record.serial !== null) return record;
  }
  return null;
}

/**
 * The host driver a device was resolved with before libvirt moved it to `vfio-pci`, from the
 * VM's recorded identities ({@link recordOf}); `null` when nothing recorded fits, or the device
 * had no driver then.
 */
export function recordedDriver(
  device: PciDevice,
  records: readonly DeviceIdentity[],
): string | null {
  return recordOf(device, records)?.driver ?? null;
}

/** Options for matching. */
export interface MatchOptions {
  /** Identities recorded in the VM's metadata (for `driver` after a rebind to vfio-pci). */
  records?: readonly DeviceIdentity[];
  /**
   * Addresses the VM's definition holds now. A hand-added hostdev has no recorded identity, so
   * once libvirt has moved it to vfio-pci, its candidate kernel modules (lspci's "Kernel
   * modules") stand in for `driver`; only for the VM's own devices, so a rule never reaches out
   * to a device some other VM or tool bound to vfio-pci.
   */
  current?: ReadonlySet<PciAddress>;
  /** The flags of this run (`--sysfs`) that the `passthrough devices` a refusal advises repeats. */
  run?: RunFlags | undefined;
}

type CriterionTest = (device: PciDevice, m: MatchCriteria, options: MatchOptions) => boolean;

/** Each criterion by its config key, in the order they are explained to users. */
const CRITERIA: readonly (readonly [keyof MatchCriteria, string, CriterionTest])[] = [
  ["vendorId", "vendor_id", (d, m) => d.vendorId === m.vendorId],
  ["deviceId", "device_id", (d, m) => d.deviceId === m.deviceId],
  [
    "subsystemVendorId",
    "subsystem_vendor_id",
    (d, m) => d.subsystemVendorId === m.subsystemVendorId,
  ],
  [
    "subsystemDeviceId",
    "subsystem_device_id",
    (d, m) => d.subsystemDeviceId === m.subsystemDeviceId,
  ],
  ["classPrefixes", "class", (d, m) => m.classPrefixes!.some((p) => d.classCode.startsWith(p))],
  ["driver", "driver", (d, m, o) => {
    if (d.driver === m.driver) return true;
    // libvirt rebinds managed devices to vfio-pci: the recorded identity keeps the rule matching.
    if (d.driver === null || !VFIO_DRIVERS.has(d.driver)) return false;
    const recorded = recordedDriver(d, o.records ?? []);
    if (recorded !== null) return recorded === m.driver;
    return o.current?.has(d.address) === true && d.modules.includes(m.driver!);
  }],
  ["slot", "slot", (d, m) => d.physicalSlot === m.slot],
  ["serial", "serial", (d, m) => d.serial !== null && d.serial.toLowerCase() === m.serial],
  ["numaNode", "numa_node", (d, m) => d.numaNode === m.numaNode],
  ["address", "address", (d, m) => d.address === m.address],
];

/** The config keys of the criteria `device` fails. */
function failedCriteria(
  device: PciDevice,
  criteria: MatchCriteria,
  options: MatchOptions = {},
): string[] {
  const failed: string[] = [];
  for (const [field, key, test] of CRITERIA) {
    if (criteria[field] === undefined || field === "classText") continue;
    if (!test(device, criteria, options)) failed.push(key);
  }
  return failed;
}

/**
 * Whether `device` satisfies every criterion. PCI-to-PCI bridges never match: no guest gets one.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { topologyFromDescription } from "../testing/host_description.ts";
 * const host = topologyFromDescription({ devices: [
 *   { bdf: "0000:0b:00.0", group: 30, class: "0x030000", vendor: "0x10de", device: "0x1b06",
 *     subsystem_vendor: null, subsystem_device: null, driver: null, revision: null },
 * ] }, { source: "example" });
 * assertEquals(deviceMatches(host.devices[0]!, { vendorId: "10de", classPrefixes: ["03"] }), true);
 * ```
 */
export function deviceMatches(
  device: PciDevice,
  criteria: MatchCriteria,
  options: MatchOptions = {},
): boolean {
  return !device.isBridge && !behindVmd(device) && criteriaHold(device, criteria, options);
}

/** Whether `device` satisfies every criterion, bridge or not. */
function criteriaHold(device: PciDevice, criteria: MatchCriteria, options: MatchOptions): boolean {
  for (const [field, , test] of CRITERIA) {
    if (criteria[field] !== undefined && !test(device, criteria, options)) return false;
  }
  return true;
}

/** How many closest devices a `no-match` lists before "and N more". */
const NEAREST_SHOWN = 8;

/** The `no-match` of a rule whose criteria fit only PCI bridges, which no guest gets. */
function onlyBridgesIssue(
  rule: DeviceRule,
  bridges: readonly PciDevice[],
  run: RunFlags | undefined,
): PlanIssue {
  const shown = bridges.slice(0, NEAREST_SHOWN).map((d) => d.address).join(", ");
  const cut = bridges.length - NEAREST_SHOWN;
  const list = cut > 0 ? `${shown} and ${cut} more` : shown;
  const are = bridges.length === 1 ? "is a PCI bridge" : "are PCI bridges";
  return {
    code: "no-match",
    message: `Rule "${rule.name}" of VM "${rule.vm}" matches no device it can take (${
      describeCriteria(rule.match)
    }): ${list} ${are}; bridges stay with the host: name the device behind it instead (see "${
      followUpCommand(run, "passthrough devices")
    }")`,
    vm: rule.vm,
    rule: rule.name,
    location: rule.location,
    candidates: bridges.map(toCandidate),
  };
}

/** The `no-match` of a rule whose criteria fit only devices behind Intel VMD ({@link behindVmd}). */
function onlyBehindVmdIssue(
  rule: DeviceRule,
  hosted: readonly PciDevice[],
  host: HostTopology,
): PlanIssue {
  const domains = [...new Set(hosted.map((d) => d.address.slice(0, d.address.indexOf(":"))))];
  const controllers = host.devices.filter((d) => d.driver === "vmd").map((d) => d.address);
  return {
    code: "no-match",
    message: `Rule "${rule.name}" of VM "${rule.vm}" matches no device it can take (${
      describeCriteria(rule.match)
    }): ${hosted.map((d) => d.address).join(", ")} ${
      hosted.length === 1 ? "is" : "are"
    } behind an Intel VMD controller (PCI domain ${
      domains.join(", ")
    }, past the firmware's last, ffff), whose DMA the IOMMU sees as the controller's: VFIO cannot assign ${
      hosted.length === 1 ? "it" : "them"
    } apart from the controller, which takes its whole domain${
      controllers.length === 0 ? "" : ` (${controllers.join(", ")})`
    }`,
    ...ruleBase(rule),
    candidates: hosted.map(toCandidate),
  };
}

interface HostIndex {
  byVendor: Map<string, PciDevice[]>;
  bySerial: Map<string, PciDevice[]>;
  byAddress: Map<PciAddress, PciDevice>;
}

// Planning resolves one rule per VM against the same host: index it once, not per rule.
const INDEXES = new WeakMap<HostTopology, HostIndex>();

function indexOf(host: HostTopology): HostIndex {
  let index = INDEXES.get(host);
  if (index === undefined) {
    index = { byVendor: new Map(), bySerial: new Map(), byAddress: new Map() };
    for (const device of host.devices) {
      index.byAddress.set(device.address, device);
      const list = index.byVendor.get(device.vendorId) ?? [];
      list.push(device);
      index.byVendor.set(device.vendorId, list);
      if (device.serial !== null) {
        const serial = device.serial.toLowerCase();
        index.bySerial.set(serial, [...(index.bySerial.get(serial) ?? []), device]);
      }
    }
    INDEXES.set(host, index);
  }
  return index;
}

/** The devices that can possibly satisfy `criteria`, in address order (a superset). */
function possibleDevices(host: HostTopology, criteria: MatchCriteria): readonly PciDevice[] {
  const index = indexOf(host);
  if (criteria.address !== undefined) {
    const device = index.byAddress.get(criteria.address);
    return device ? [device] : [];
  }
  if (criteria.serial !== undefined) return index.bySerial.get(criteria.serial) ?? [];
  if (criteria.vendorId !== undefined) return index.byVendor.get(criteria.vendorId) ?? [];
  return host.devices;
}

/** A device as listed in `ambiguous`/`no-match` issues. */
export function toCandidate(device: PciDevice): Candidate {
  return {
    address: device.address,
    vendorId: device.vendorId,
    deviceId: device.deviceId,
    subsystemVendorId: device.subsystemVendorId,
    subsystemDeviceId: device.subsystemDeviceId,
    classCode: device.classCode,
    physicalSlot: device.physicalSlot,
    serial: device.serial,
    iommuGroup: device.iommuGroup,
    driver: device.driver,
  };
}

/**
 * The functions of one card (its vendor's functions at one slot, a function of its own on bus 0;
 * a VF's card is its PF's) that one rule matched inside one IOMMU group: one card as far as
 * `count` goes.
 */
export interface MatchUnit {
  /** The IOMMU group, or `null` on a host without groups. */
  group: number | null;
  /** The matched devices in it. */
  devices: PciDevice[];
}

/** What a rule resolved to: the units it takes, or the issue that stops it. */
export interface RuleResolution {
  /** The rule. */
  rule: DeviceRule;
  /** Every matched device of the units taken, sorted by address. */
  devices: PciDevice[];
  /** The units taken, one per card and IOMMU group. */
  units: MatchUnit[];
  /** `no-match` or `ambiguous`; `devices` is then empty. */
  issue: PlanIssue | null;
}

const SEPARATORS: readonly (readonly [string, (d: PciDevice) => string | null])[] = [
  // Two models a class or vendor matched: their IDs name each wherever it sits.
  ['"vendor_device_id"', (d) => `${d.vendorId}:${d.deviceId}`],
  [
    '"subsystem_vendor_id" and "subsystem_device_id"',
    (d) => d.subsystemVendorId === null ? null : `${d.subsystemVendorId}:${d.subsystemDeviceId}`,
  ],
  ['"slot"', (d) => d.physicalSlot],
  ['"serial"', (d) => d.serial],
  ['"numa_node"', (d) => d.numaNode === null ? null : String(d.numaNode)],
  ['"address"', (d) => d.address],
];

/**
 * The match criteria that tell the units apart, each as its config keys in quotes: a criterion
 * qualifies when every unit has a known value for it and no two units share one (for a serial,
 * on one function of the unit at least). `"address"` always qualifies, as a last resort.
 */
function distinguishingCriteria(units: readonly MatchUnit[]): string[] {
  const out: string[] = [];
  for (const [key, value] of SEPARATORS) {
    const owner = new Map<string, number>();
    let ok = true;
    units.forEach((unit, i) => {
      // A multi-function card may carry its Device Serial Number on function 0 alone (PCIe
      // allows it): its other functions then read none, yet the serial still names the card, and
      // its group brings them along.
      const lenient = key === '"serial"' && unit.devices.some((d) => value(d) !== null);
      for (const device of unit.devices) {
        const v = value(device);
        if (v === null && lenient) continue;
        if (v === null || (owner.has(v) && owner.get(v) !== i)) ok = false;
        else owner.set(v, i);
      }
    });
    if (ok) out.push(key);
  }
  return out;
}

function describeCriteria(criteria: MatchCriteria): string {
  const parts: string[] = [];
  for (const [field, key] of CRITERIA) {
    const v = criteria[field];
    if (v === undefined) continue;
    parts.push(`${key} "${field === "classPrefixes" ? criteria.classText : String(v)}"`);
  }
  return parts.join(", ");
}

function unitsOf(devices: readonly PciDevice[]): MatchUnit[] {
  const units = new Map<string, MatchUnit>();
  for (const device of devices) {
    // Two cards in one group are two (VFIO takes them together, but the rule chose both); a VF
    // belongs to its PF's card. Without a group each function stands alone (no-iommu hosts are
    // refused elsewhere anyway).
    const key = device.iommuGroup === null
      ? `@${device.address}`
      : `${device.iommuGroup}@${cardOf({ ...device, address: device.physfn ?? device.address })}`;
    const unit = units.get(key) ?? { group: device.iommuGroup, devices: [] };
    unit.devices.push(device);
    units.set(key, unit);
  }
  return [...units.values()];
}

/**
 * Resolves `rule` against `host`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { parseConfig } from "../config/config.ts";
 * import { topologyFromDescription } from "../testing/host_description.ts";
 * const host = topologyFromDescription({ devices: [
 *   { bdf: "0000:08:00.1", group: 23, class: "0x0c0330", vendor: "0x1022", device: "0x149c",
 *     subsystem_vendor: null, subsystem_device: null, driver: null, revision: null },
 *   { bdf: "0000:0e:00.3", group: 35, class: "0x0c0330", vendor: "0x1022", device: "0x149c",
 *     subsystem_vendor: null, subsystem_device: null, driver: null, revision: null },
 * ] }, { source: "example" });
 * const config = parseConfig(
 *   "version: 1\nvms:\n  vm:\n    devices:\n      - match: { vendor_device_id: 1022:149c }\n",
 *   { file: "c.yaml" },
 * );
 * const result = resolveRule(config.vms[0]!.rules[0]!, host);
 * assertEquals(result.issue?.code, "ambiguous");
 * assertEquals(result.issue?.candidates?.map((c) => c.address), ["0000:08:00.1", "0000:0e:00.3"]);
 * ```
 */
export function resolveRule(
  rule: DeviceRule,
  host: HostTopology,
  options: MatchOptions = {},
): RuleResolution {
  const matched = possibleDevices(host, rule.match).filter((d) =>
    deviceMatches(d, rule.match, options)
  );
  const units = unitsOf(matched);
  const wanted = rule.count === "all" ? Math.max(1, units.length) : rule.count;
  const refused = (issue: PlanIssue): RuleResolution => ({ rule, devices: [], units: [], issue });
  if (units.length === 0) {
    const bridges = possibleDevices(host, rule.match).filter((d) =>
      d.isBridge && criteriaHold(d, rule.match, options)
    );
    if (bridges.length > 0) return refused(onlyBridgesIssue(rule, bridges, options.run));
    const hosted = possibleDevices(host, rule.match).filter((d) =>
      behindVmd(d) && criteriaHold(d, rule.match, options)
    );
    if (hosted.length > 0) return refused(onlyBehindVmdIssue(rule, hosted, host));
  }
  if (units.length === 0 || units.length < wanted) {
    return refused(tooFewIssue(rule, host, { matched, units, wanted, options }));
  }
  if (units.length > wanted && oneCard(matched)) {
    return refused(splitCardIssue(rule, host, matched, { groups: units.length, wanted }));
  }
  if (units.length > wanted) {
    return refused(ambiguousIssue(rule, host, matched, { units, wanted, options }));
  }
  const chip = oneChip(units);
  if (chip !== null) return refused(oneChipIssue(rule, chip));
  return { rule, devices: matched, units, issue: null };
}

/**
 * Units of two vendors in one slot and one IOMMU group, or `null`: one chip, whose other
 * vendor's functions {@link cardOf} keeps apart from the card (an AMD APU's USB controllers, the
 * CPU's, beside its graphics). Counted as cards of their own, they would fill a rule's `count`
 * and be taken as matched, the host's keyboard with them.
 */
function oneChip(units: readonly MatchUnit[]): MatchUnit[] | null {
  const bySlot = new Map<string, MatchUnit[]>();
  for (const unit of units) {
    const first = unit.devices[0]!;
    const address = first.physfn ?? first.address;
    // On bus 00 every function is a device of its own (see cardOf).
    if (unit.group === null || onRootBus({ ...first, address })) continue;
    const key = `${unit.group}@${slotOf(address)}`;
    bySlot.set(key, [...bySlot.get(key) ?? [], unit]);
  }
  return [...bySlot.values()].find((same) => same.length > 1) ?? null;
}

/** `ambiguous`: a rule counting the functions of two vendors in one chip ({@link oneChip}). */
function oneChipIssue(rule: DeviceRule, chip: readonly MatchUnit[]): PlanIssue {
  const first = chip[0]!.devices[0]!;
  const devices = chip.flatMap((u) => u.devices);
  return {
    code: "ambiguous",
    message:
      `Rule "${rule.name}" of VM "${rule.vm}" counts functions of ${chip.length} vendors in slot ${
        slotOf(first.physfn ?? first.address)
      } (IOMMU group ${chip[0]!.group}) as ${chip.length} cards, but they are one chip: ${
        chip.map((u) =>
          `${u.devices.map((d) => d.address).join(" + ")} (vendor ${u.devices[0]!.vendorId})`
        ).join(", ")
      }; another vendor's functions in a card's slot are built in beside it (an AMD APU's USB controllers are the CPU's): narrow it with "vendor_id"`,
    ...ruleBase(rule),
    devices: devices.map((d) => d.address),
    candidates: devices.map(toCandidate),
  };
}

/** Where a rule's issue points: its VM, name and config location. */
export function ruleBase(rule: DeviceRule) {
  return { vm: rule.vm, rule: rule.name, location: rule.location };
}

/**
 * `no-match`: the rule matches no device, or fewer cards than it takes. With no match at all,
 * the devices a rule could take that fail the fewest criteria are offered as the closest.
 */
function tooFewIssue(
  rule: DeviceRule,
  host: HostTopology,
  found: { matched: PciDevice[]; units: MatchUnit[]; wanted: number; options: MatchOptions },
): PlanIssue {
  const { matched, wanted, options } = found;
  const units = found.units.length;
  // What no rule takes is no way out: a bridge, a device behind VMD.
  const scored = host.devices
    .filter((d) => !d.isBridge && !behindVmd(d))
    .map((d) => ({ d, failed: failedCriteria(d, rule.match, options) }))
    .filter((s) => s.failed.length > 0);
  const total = CRITERIA.filter(([field]) => rule.match[field] !== undefined).length;
  const best = Math.min(...scored.map((s) => s.failed.length));
  const near = units > 0 ? [] : closestOf(scored, { best, total, criteria: rule.match });
  const nearest = near.slice(0, NEAREST_SHOWN);
  const more = near.length > nearest.length ? ` and ${near.length - nearest.length} more` : "";
  const groups = groupCount(found.units);
  const what = units === 0
    ? "matches no device"
    : groups === units
    ? `needs ${wanted} IOMMU groups but matches ${units}`
    : `needs ${wanted} cards but matches ${units} in ${plural(groups, "IOMMU group")}`;
  const closest = nearest.length > 0
    ? `: closest ${nearest.length === 1 ? "is" : "are"} ${
      nearest.map((s) => `${s.d.address} (${whyNot(s.d, s.failed, host)})`).join(", ")
    }${more}`
    : "";
  // A rule naming only a serial lists no closest device: say it where this read saw no serials.
  const unread = units === 0 && nearest.length === 0
    ? scored.filter((s) => serialUnread(s.d) && s.failed.join() === "serial").length
    : 0;
  const unknown = unread > 0
    ? `: the serial number of ${plural(unread, "device")} is unknown here (${
      unreadSerial(unread, host)
    })`
    : "";
  const candidates = units > 0 ? matched : nearest.map((s) => s.d);
  return {
    code: "no-match",
    message: `Rule "${rule.name}" of VM "${rule.vm}" ${what} (${
      describeCriteria(rule.match)
    })${closest}${unknown}${noSlotsNote(rule, host)}`,
    ...ruleBase(rule),
    candidates: candidates.map(toCandidate),
  };
}

/**
 * The devices failing the fewest criteria, where that is not all of them. A rule by `class`,
 * `driver` or `slot` alone fails every other device equally, so those of its base class (a
 * laptop's dGPU, a 3D controller, to `class: vga`), that its driver could take (a GPU `vfio-pci`
 * holds from boot, to `driver: nvidia`) or in a named slot (a slot name mistyped) stand in: told
 * nothing, users took it that the host had no such device.
 */
function closestOf<T extends { d: PciDevice; failed: string[] }>(
  scored: readonly T[],
  found: { best: number; total: number; criteria: MatchCriteria },
): T[] {
  const { best, total, criteria } = found;
  if (best < total) return scored.filter((s) => s.failed.length === best);
  const bases = (criteria.classPrefixes ?? []).map((p) => p.slice(0, 2));
  return scored.filter((s) => {
    const only = s.failed.join();
    if (only === "class") return bases.includes(s.d.classCode.slice(0, 2));
    if (only === "driver") return s.d.modules.includes(criteria.driver!);
    return only === "slot" && s.d.physicalSlot !== null;
  });
}

/**
 * Why the serial number of `n` devices of `host` is unknown, for a `no-match` message. A captured
 * tree holds what the user who took it could read: read again as root, it still stops at the
 * header, so only a snapshot taken as root has the serial.
 */
function unreadSerial(n: number, host: HostTopology): string {
  const what = `${n === 1 ? "its" : "their"} configuration space could be read only up to its ` +
    "64-byte header";
  return host.source === "/sys"
    ? `${what}, run as root to read ${n === 1 ? "it" : "them"}`
    : `${what} when the tree was captured, capture it again with passthrough snapshot as root`;
}

/** Whether this read could not see `device`'s serial number, as {@link sameIdentityAsRead}. */
function serialUnread(device: PciDevice): boolean {
  return device.serial === null && device.flr === null;
}

/**
 * Why a close device failed its criteria: `serial, slot differ`. A serial number this read could
 * not see (the configuration space stops after its 64-byte header, as it does for a user other
 * than root) is unknown, not another one: saying it differs sent users to fix a correct serial.
 */
function whyNot(device: PciDevice, failed: readonly string[], host: HostTopology): string {
  // A device in no named slot has no slot name to differ: "slot differs" sent users to respell
  // a slot name the firmware never gave.
  const slotless = device.physicalSlot === null && failed.includes("slot");
  const differ = failed.filter((key) =>
    !(key === "serial" && serialUnread(device)) && !(key === "slot" && slotless)
  );
  const parts = differ.length > 0
    ? [`${differ.join(", ")} ${differ.length === 1 ? "differs" : "differ"}`]
    : [];
  if (slotless) parts.push("in no named slot");
  if (failed.includes("serial") && serialUnread(device)) {
    parts.push(`serial unknown: ${unreadSerial(1, host)}`);
  }
  return parts.join("; ");
}

/**
 * For a rule naming a `slot` on a host whose firmware names none (no `bus/pci/slots` entry, as on
 * most desktop boards without a hot-plug driver): the keys left to tell cards apart; `""` where
 * the rule names no slot or the host names some.
 */
function noSlotsNote(rule: DeviceRule, host: HostTopology): string {
  if (rule.match.slot === undefined || host.devices.some((d) => d.physicalSlot !== null)) return "";
  return `: the firmware names no physical slot on this host ('passthrough devices' shows none): tell the cards apart with "serial", or with "address"`;
}

/** `ambiguous`: the functions of one card, split by the host into more groups than taken. */
function splitCardIssue(
  rule: DeviceRule,
  host: HostTopology,
  matched: PciDevice[],
  counts: { groups: number; wanted: number },
): PlanIssue {
  const used = hostUsed(host, matched);
  // A `vf:` rule takes a VF of one physical function: "all: true" is refused for it.
  const ways = rule.vf !== undefined
    ? `a "vf:" rule takes a VF of one physical function: narrow it with ${
      narrowWith(matched.map((d) => ({ group: d.iommuGroup, devices: [d] })))
    }`
    : used === null
    ? 'take the whole card with "all: true", or one function with "address"'
    : `take one function with "address" (not the whole card: ${used})`;
  return {
    code: "ambiguous",
    message:
      `Rule "${rule.name}" of VM "${rule.vm}" matches ${matched.length} functions of one card (${
        matched.map((d) => `${d.address} group ${d.iommuGroup ?? "none"}`).join(", ")
      }), which the host splits into ${counts.groups} IOMMU groups, but takes ${counts.wanted}: ${ways}`,
    ...ruleBase(rule),
    devices: matched.map((d) => d.address),
    candidates: matched.map(toCandidate),
  };
}

/** `ambiguous`: more cards match than the rule takes; names what tells them apart. */
function ambiguousIssue(
  rule: DeviceRule,
  host: HostTopology,
  matched: PciDevice[],
  found: { units: MatchUnit[]; wanted: number; options: MatchOptions },
): PlanIssue {
  const { units, wanted } = found;
  const list = units.map((u) =>
    `${u.devices.map((d) => d.address).join(" + ")} (group ${u.group ?? "none"})`
  ).join(", ");
  const used = hostUsed(host, matched);
  // All of them would take what the host uses too: planning would refuse that anyway. A `vf:`
  // rule takes one VF: "all: true" is refused for it.
  const all = rule.count !== 1 || rule.vf !== undefined
    ? ""
    : used === null
    ? ', or take them all with "all: true"'
    : ` (not all of them: ${used})`;
  const groups = groupCount(units);
  // Cards sharing a group: naming only groups would hide that two cards matched.
  const where = groups === units.length
    ? `in ${units.length} IOMMU groups`
    : `on ${units.length} cards in ${plural(groups, "IOMMU group")}`;
  // Each key offered names one card (see distinguishingCriteria): a rule taking more needs a
  // rule per card, or following the advice leaves it matching one, short of its count.
  const narrow = wanted > 1
    ? `write one rule per card (without "count"), each narrowed with`
    : "narrow it with";
  return {
    code: "ambiguous",
    message: `Rule "${rule.name}" of VM "${rule.vm}" matches ${
      plural(matched.length, "device")
    } ${where} but takes ${wanted}: ${list}: ${narrow} ${narrowWith(units, host)}${all}${
      viaPf(rule, matched)
    }${keepHeld(rule, units, found.options.records ?? [])}`,
    ...ruleBase(rule),
    devices: matched.map((d) => d.address),
    candidates: matched.map(toCandidate),
  };
}

/**
 * `; "vm" holds 0000:01:00.0 now: add slot: "PCIE1" to keep it`: when a second card like the one
 * a one-card rule took appears, the key that keeps the VM's own card, so the rule need not be
 * worked out from the candidates. The most stable key naming that card alone: its IDs (a rule by
 * class or vendor), subsystem, serial or slot, else its address, said to be known by that alone.
 */
function keepHeld(
  rule: DeviceRule,
  units: readonly MatchUnit[],
  records: readonly DeviceIdentity[],
): string {
  if (rule.count !== 1) return "";
  const mine = records.filter((r) => r.rule === rule.name);
  const held = units.filter((u) => u.devices.some((d) => mine.some((r) => holds(r, d, units))));
  if (held.length !== 1) return "";
  const unit = held[0]!;
  const others = units.filter((u) => u !== unit).flatMap((u) => u.devices);
  const keys: readonly (readonly [(d: PciDevice) => string | null, (v: string) => string])[] = [
    [(d) => `${d.vendorId}:${d.deviceId}`, (v) => `vendor_device_id: "${v}"`],
    [(d) => d.subsystemVendorId === null ? null : `${d.subsystemVendorId}:${d.subsystemDeviceId}`, (
      v,
    ) => `subsystem_vendor_id: "${v.split(":")[0]}", subsystem_device_id: "${v.split(":")[1]}"`],
    // Quoted as JSON, which YAML reads back: a firmware's slot name may hold `"` or `\`.
    [(d) => d.serial, (v) => `serial: ${JSON.stringify(v)}`],
    [(d) => d.physicalSlot, (v) => `slot: ${JSON.stringify(v)}`],
  ];
  const address = unit.devices[0]!.address;
  for (const [value, written] of keys) {
    // Functions without the value (a serial on function 0 alone) come with the card's group.
    const seen = new Set(unit.devices.map(value).filter((v) => v !== null));
    const v = seen.size === 1 ? [...seen][0] : undefined;
    if (v === undefined || others.some((d) => value(d) === v)) continue;
    return `; "${rule.vm}" holds ${address} now: add ${written(v)} to the rule to keep it`;
  }
  // No serial or slot of its own: the VM's card was known by its address alone (see `holds`),
  // which the new card took if it went in before it on the bus. Only the user can tell.
  return `; "${rule.vm}" holds ${address} now, as far as its address tells: add address: "${address}" to the rule to keep it once you know it is the VM's card (nothing it was recorded with tells these cards apart, and a card added before it on the bus takes its address)`;
}

/**
 * Whether `record` names `device` among the cards `units` hold, by the evidence a move is proven
 * with (`findMovedCard`): its serial, else its IDs in the slot it was recorded in, else its IDs at
 * its address. The address alone misled: a card added before the VM's on the bus takes its
 * address, and the key offered to keep the VM's card named the new card's slot.
 */
function holds(record: DeviceIdentity, device: PciDevice, units: readonly MatchUnit[]): boolean {
  const { slot, ...card } = record;
  if (!sameIdentity(card, device)) return false;
  if (record.serial !== null) return true;
  const inSlot = slot !== undefined &&
    units.some((u) => u.devices.some((d) => sameIdentity(record, d)));
  return inSlot ? device.physicalSlot === slot : device.address === record.address;
}

/**
 * For a rule matching only SR-IOV virtual functions: a VF's address follows from how many VFs its
 * PF has enabled, so the stable way is a `vf:` rule naming the PF by its identity.
 */
function viaPf(rule: DeviceRule, matched: readonly PciDevice[]): string {
  if (rule.vf !== undefined || !matched.every((d) => d.physfn !== null)) return "";
  return ', or match their physical function instead and take one of its VFs with "vf: any"';
}

/**
 * `"serial", or with "address"`: the criteria that tell `units` apart, for a message. Where the
 * address is the only one, a slot or serial that names some of them alone follows (a card in a
 * named slot beside one in none, a drive with a serial beside one without), since it survives a
 * renumbering the address does not; and with `host`, serial numbers this read could not see are
 * said to be unknown, not absent.
 */
export function narrowWith(units: readonly MatchUnit[], host?: HostTopology): string {
  const full = distinguishingCriteria(units);
  const parts = [full.join(", or with ")];
  // Another key tells them apart: nothing more to say.
  if (full.length > 1) return parts[0]!;
  for (const [key, value] of SEPARATORS) {
    if (key !== '"slot"' && key !== '"serial"') continue;
    const values = units.map((u) => {
      const seen = new Set(u.devices.map(value));
      return seen.size === 1 ? [...seen][0] ?? null : null;
    });
    units.forEach((unit, i) => {
      const v = values[i];
      const shared = units.some((other, j) => j !== i && other.devices.some((d) => value(d) === v));
      if (v === null || v === undefined || shared) return;
      // Quoted as JSON, which YAML reads back: a slot name is a file name, newlines and all.
      parts.push(`${unit.devices[0]!.address} alone with ${key.slice(1, -1)} ${JSON.stringify(v)}`);
    });
  }
  const unread = host !== undefined
    ? units.flatMap((u) => u.devices).filter(serialUnread).length
    : 0;
  // Only the header of their configuration space was readable: a serial may still be there.
  const note = unread === 0
    ? ""
    : host!.source === "/sys"
    ? " (run as root to read their serial numbers, which may tell them apart)"
    : " (a snapshot taken as root would hold their serial numbers, which may tell them apart)";
  return parts.join(", or ") + note;
}

/**
 * The matched devices the host uses now, as `0000:0b:00.0 is the host's (console-vga: ...)`, or
 * `null` when it uses none of them.
 */
function hostUsed(host: HostTopology, matched: readonly PciDevice[]): string | null {
  const uses = (host.hostUse ?? []).filter((u) => matched.some((d) => d.address === u.address));
  if (uses.length === 0) return null;
  return `${uses.map((u) => u.address).filter((a, i, all) => all.indexOf(a) === i).join(", ")} ${
    uses.length === 1 ? "is" : "are"
  } the host's (${uses.map((u) => `${u.reason}: ${u.detail}`).join("; ")})`;
}

/** How many IOMMU groups `units` are in (a unit without a group counts as one of its own). */
function groupCount(units: readonly MatchUnit[]): number {
  return new Set(units.map((u, i) => u.group ?? `@${i}`)).size;
}

/** `1 device`, `2 devices`. */
function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

/** Whether `devices` are several functions of one card ({@link cardOf}). */
function oneCard(devices: readonly PciDevice[]): boolean {
  return devices.length > 1 && new Set(devices.map(cardOf)).size === 1;
}
