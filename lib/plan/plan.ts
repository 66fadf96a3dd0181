/**
 * The planner: config + host topology + libvirt's persistent definitions in, a {@link Plan} out.
 * Planning never changes anything; it is plain data the CLI renders and `apply` executes.
 *
 * Decisions worth knowing:
 * - Only hostdevs listed in our metadata (owned) are ever removed or rewritten. A rule that
 *   resolves to a device the VM already has as a hand-added hostdev keeps that element byte for
 *   byte and does not take it over (no record, so dropping the rule later never removes what the
 *   user wrote by hand); the reasoning says so. It is never duplicated.
 * - An owned hostdev whose card now sits at another address (same IDs and serial, or same IDs
 *   when the card is the only candidate) is moved (`VmPlan.move`, not listed in add/remove).
 * - `drift` (an owned address now holding a different device or nothing) is a warning: the plan
 *   itself corrects it (the stale hostdev is removed or re-resolved, visible in the diff), so a
 *   wrong device is never kept silently.
 * - Domains not named in the config are not planned, and the devices they hold count for group
 *   conflicts, with one exception: a domain that still holds hostdevs this tool added (its
 *   metadata has records) was dropped from the config, so those hostdevs are removed like any
 *   device dropped from the config (unless `vms` limits the plan). Hand-added ones stay.
 * - A refused VM keeps its definition, owned hostdevs included, so those count as held by it
 *   for the other VMs' conflicts (planning repeats until no new VM is refused).
 * - An SR-IOV PF and its VFs sit in different groups yet cannot go to different VMs: the PF
 *   leaving its host driver destroys the VFs (`sriov-split`).
 * - A definition `parseDomainXml` refuses (a damaged passthrough record, malformed XML) still
 *   holds devices: the host PCI addresses `scanHostdevsLeniently` finds in it, persistent or
 *   live, count as held (a configured VM is still refused, `unreadable-definition`). A hostdev
 *   in it whose host address cannot be read at all is a plan-wide `unreadable-definition`
 *   error: what it holds is unknown, so nothing is applied.
 *
 * @module
 */

import type { Config, DeviceRule } from "../config/config.ts";
import {
  type ClosedDevice,
  closeOverGroups,
  type ClosureResult,
  findGroupConflicts,
  type GroupClaim,
} from "../resolve/closure.ts";
import { cardOf } from "../resolve/host_critical.ts";
import type { LibvirtPort } from "./libvirt_port.ts";
import { type DefinitionRead, readWorld, type World } from "./world.ts";
import {
  recordedDriver,
  resolveRule,
  type RuleResolution,
  sameIdentity,
  VFIO_DRIVERS,
} from "../resolve/match.ts";
import {
  type DomainHostdev,
  editDomainXml,
  type LenientHostdevScan,
  type ParsedDomain,
} from "../domain/domain_xml.ts";
import { pciAddressParts } from "../pci/address.ts";
import type { GuestPciAddress } from "../domain/properties.ts";
import type {
  DeviceIdentity,
  HostdevSpec,
  MovedHostdev,
  Plan,
  PlanIssue,
  PlannedHostdev,
  VmPlan,
} from "./types.ts";
import type { HostTopology, PciAddress, PciDevice } from "../host/types.ts";

/** What one VM's rules resolve to on a host, before looking at its domain XML. */
export interface VmResolution {
  vm: string;
  rules: RuleResolution[];
  closure: ClosureResult;
  /** Rule issues, closure refusals and cross-VM conflicts. */
  errors: PlanIssue[];
  warnings: PlanIssue[];
}

/** Inputs of {@link resolveConfig} beyond the config and host. */
export interface ResolveOptions {
  /** Per VM: identities recorded in its domain (keeps `driver:` rules matching after vfio). */
  records?: ReadonlyMap<string, readonly DeviceIdentity[]>;
  /** Per VM: the host addresses its definition holds now. */
  current?: ReadonlyMap<string, ReadonlySet<PciAddress>>;
  /**
   * Devices that stay where they are whatever this plan does, per domain: every hostdev of a
   * domain the config does not name or the plan leaves out, and the hand-added hostdevs of the
   * planned ones. They count for group conflicts.
   */
  held?: ReadonlyMap<string, readonly PciAddress[]>;
}

/** The whole-host issues: `no-iommu` (an error) and `acs-override` (a warning). */
export function hostIssues(host: HostTopology): { errors: PlanIssue[]; warnings: PlanIssue[] } {
  const errors: PlanIssue[] = [];
  const warnings: PlanIssue[] = [];
  if (host.iommu === "absent") {
    errors.push({
      code: "no-iommu",
      message:
        `Host "${host.source}" has no IOMMU groups: enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on; no device can be passed safely without it`,
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

/**
 * Resolves every VM's rules against `host`, closes them over IOMMU groups and checks the VMs
 * against each other. Pure: no libvirt.
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
  const out = new Map<string, VmResolution>();
  const claims: GroupClaim[] = [];
  const groupOf = new Map<PciAddress, number | null>(
    host.devices.map((d) => [d.address, d.iommuGroup]),
  );
  for (const vm of config.vms) {
    const records = options.records?.get(vm.name) ?? [];
    const current = options.current?.get(vm.name);
    const rules = vm.rules.map((rule) =>
      resolveRule(rule, host, current === undefined ? { records } : { records, current })
    );
    const closure = closeOverGroups(vm.name, rules, host, current ? { current } : {});
    const errors = [
      ...rules.flatMap((r) => r.issue ? [r.issue] : []),
      ...closure.errors,
    ];
    out.set(vm.name, { vm: vm.name, rules, closure, errors, warnings: [...closure.warnings] });
    const byGroup = new Map<number, GroupClaim>();
    for (const c of closure.devices) {
      if (c.device.iommuGroup === null) continue;
      const claim = byGroup.get(c.device.iommuGroup) ??
        { vm: vm.name, group: c.device.iommuGroup, addresses: [], matched: [], source: "config" };
      claim.addresses.push(c.device.address);
      if (c.reason === "matched") claim.matched.push(c.device.address);
      byGroup.set(c.device.iommuGroup, claim);
    }
    claims.push(...byGroup.values());
  }
  for (const [vm, addresses] of options.held ?? []) {
    const byGroup = new Map<number, PciAddress[]>();
    for (const address of addresses) {
      const group = groupOf.get(address);
      if (group === null || group === undefined) continue;
      byGroup.set(group, [...(byGroup.get(group) ?? []), address]);
    }
    for (const [group, list] of byGroup) {
      claims.push({ vm, group, addresses: list, matched: list, source: "domain" });
    }
  }
  for (const [vm, issues] of findGroupConflicts(claims)) out.get(vm)?.errors.push(...issues);
  for (const [vm, issues] of sriovConflicts(out, options.held ?? new Map())) {
    out.get(vm)?.errors.push(...issues);
  }
  return out;
}

/**
 * SR-IOV functions split between VMs: a PF and its VFs usually sit in separate IOMMU groups, so
 * the group check cannot see them, yet passing the PF to a guest unbinds its host driver, which
 * destroys every VF (a running guest holding one blocks the unbind or loses the device). A PF and
 * its VFs must stay with one VM. No override exists.
 */
function sriovConflicts(
  resolved: ReadonlyMap<string, VmResolution>,
  held: ReadonlyMap<string, readonly PciAddress[]>,
): Map<string, PlanIssue[]> {
  const owners = new Map<PciAddress, { vm: string; heldNow: boolean }[]>();
  const own = (address: PciAddress, vm: string, heldNow: boolean) =>
    owners.set(address, [...(owners.get(address) ?? []), { vm, heldNow }]);
  for (const [vm, r] of resolved) {
    for (const c of r.closure.devices) own(c.device.address, vm, false);
  }
  for (const [vm, addresses] of held) for (const a of addresses) own(a, vm, true);
  const out = new Map<string, PlanIssue[]>();
  for (const [vm, r] of resolved) {
    const seen = new Set<string>();
    for (const { device } of r.closure.devices) {
      const related = device.physfn !== null ? [device.physfn] : device.virtfns;
      for (const other of related) {
        for (const owner of owners.get(other) ?? []) {
          if (owner.vm === vm || seen.has(`${other} ${owner.vm}`)) continue;
          seen.add(`${other} ${owner.vm}`);
          const [pf, vf, pfVm, vfVm] = device.physfn !== null
            ? [other, device.address, owner.vm, vm]
            : [device.address, other, vm, owner.vm];
          const issues = out.get(vm) ?? [];
          issues.push({
            code: "sriov-split",
            message:
              `SR-IOV virtual function ${vf} of ${pf} is split from it: "${pfVm}" takes ${pf}, "${vfVm}" takes ${vf}${
                owner.heldNow ? ` ("${owner.vm}" holds it in its definition now)` : ""
              }: passing a physical function to a guest destroys its virtual functions; give both to one VM, or leave ${pf} with the host`,
            vm,
            devices: [pf, vf],
            vms: [vm, owner.vm].sort(),
          });
          out.set(vm, issues);
        }
      }
    }
  }
  return out;
}

/** Options of {@link planHostdevs}. */
export interface PlanOptions {
  config: Config;
  host: HostTopology;
  libvirt: LibvirtPort;
  /** Plan only these VMs (each must be in the config); default every VM of the config. */
  vms?: string[];
}

function identityOf(
  device: PciDevice,
  rule: string,
  records: readonly DeviceIdentity[],
): DeviceIdentity {
  // Once libvirt has moved the card to vfio-pci, keep the driver it was first resolved with.
  const driver = device.driver !== null && VFIO_DRIVERS.has(device.driver)
    ? recordedDriver(device, records) ?? device.driver
    : device.driver;
  return {
    address: device.address,
    vendorId: device.vendorId,
    deviceId: device.deviceId,
    subsystemVendorId: device.subsystemVendorId,
    subsystemDeviceId: device.subsystemDeviceId,
    classCode: device.classCode,
    serial: device.serial,
    driver,
    rule,
  };
}

function describe(device: PciDevice): string {
  return `${device.vendorId}:${device.deviceId} ${device.className ?? `class ${device.classCode}`}`;
}

/**
 * A `drift` warning: the hostdev at `record.address` was recorded as one device and the address
 * now holds another (`now`) or nothing; `outcome` says what the plan does about it.
 */
function driftWarning(
  vm: string,
  record: DeviceIdentity,
  now: PciDevice | undefined,
  outcome: string,
): PlanIssue {
  return {
    code: "drift",
    message:
      `Hostdev ${record.address} of "${vm}" was recorded as ${record.vendorId}:${record.deviceId}${
        record.serial ? ` serial ${record.serial}` : ""
      } (rule "${record.rule}") but the address now holds ${
        now === undefined ? "nothing" : describe(now)
      }: ${outcome}`,
    vm,
    rule: record.rule,
    devices: [record.address],
  };
}

/** The parts of an existing hostdev element the planner writes (guest addresses excluded). */
function specOfHostdev(hostdev: DomainHostdev): string {
  return JSON.stringify([
    hostdev.managed,
    hostdev.bootOrder === null ? "" : String(hostdev.bootOrder),
    hostdev.romBar ?? "",
    hostdev.romFile ?? "",
  ]);
}

/**
 * Whether a hostdev sits in a multifunction guest slot, as `multifunction: true` lays cards out
 * (function numbers kept, function 0 marked `multifunction='on'`). libvirt's own placement puts
 * each hostdev at function 0 of a slot of its own, unmarked.
 */
function guestMultifunction(hostdev: DomainHostdev): boolean {
  const guest = hostdev.guestAddress;
  if (guest === null) return false;
  return guest.multifunction || pciAddressParts(guest.address).function !== 0;
}

function specKey(spec: HostdevSpec): string {
  return JSON.stringify([
    spec.managed,
    spec.bootOrder === undefined ? "" : String(spec.bootOrder),
    spec.rom?.bar ?? "",
    spec.rom?.file ?? "",
  ]);
}

/** The slot and function of a guest address on guest bus 0 (domain 0), or `null` elsewhere. */
function onBusZero(guest: GuestPciAddress): { slot: number; fn: number } | null {
  const p = pciAddressParts(guest.address);
  return p.domain === 0 && p.bus === 0 ? { slot: p.slot, fn: p.function } : null;
}

/** Guest slots on bus 0 the definition already uses. */
function usedGuestSlots(domain: ParsedDomain): Set<number> {
  const used = new Set<number>();
  for (const guest of domain.guestAddresses) {
    const at = onBusZero(guest);
    if (at !== null) used.add(at.slot);
  }
  return used;
}

/**
 * Where each host card's hostdevs already sit on guest bus 0, for cards whose functions share one
 * guest slot: by host card (`DDDD:BB:SS`), the guest slot, the guest functions used in it by any
 * device, and whether its function 0 is marked `multifunction='on'`.
 */
function appliedCardSlots(
  domain: ParsedDomain,
): Map<string, { slot: number; functions: Set<number>; multifunction: boolean }> {
  const bySlot = new Map<number, { functions: Set<number>; multifunction: boolean }>();
  for (const guest of domain.guestAddresses) {
    const at = onBusZero(guest);
    if (at === null) continue;
    const entry = bySlot.get(at.slot) ?? { functions: new Set<number>(), multifunction: false };
    entry.functions.add(at.fn);
    if (at.fn === 0 && guest.multifunction) entry.multifunction = true;
    bySlot.set(at.slot, entry);
  }
  const cards = new Map<string, { slot: number; functions: Set<number>; multifunction: boolean }>();
  for (const hostdev of domain.hostdevs) {
    const at = hostdev.guestAddress === null ? null : onBusZero(hostdev.guestAddress);
    if (at === null) continue;
    const entry = bySlot.get(at.slot)!;
    // Only a slot laid out as a card (multifunction) is joined, never libvirt's own placement.
    if (entry.multifunction || entry.functions.size > 1) {
      cards.set(cardOf(hostdev.address), { slot: at.slot, ...entry });
    }
  }
  return cards;
}

function specFor(
  closed: ClosedDevice,
  firstMatched: ReadonlySet<PciAddress>,
): HostdevSpec {
  const rule: DeviceRule = closed.rule;
  const spec: HostdevSpec = { address: closed.device.address, managed: rule.managed };
  // ROM and boot settings describe the device the user named, not the group members it drags in;
  // boot order must be unique in a domain, so only the rule's first matched device gets it.
  if (closed.reason === "matched" && rule.rom !== undefined) spec.rom = { ...rule.rom };
  if (rule.bootOrder !== undefined && firstMatched.has(closed.device.address)) {
    spec.bootOrder = rule.bootOrder;
  }
  return spec;
}

/**
 * A plan for `name` that changes nothing: `xml` as both the current and the desired definition,
 * no hostdevs listed, no issues. The planner fills it in; scripts and tests building a plan by
 * hand spread it and override what they change.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const vm = { ...emptyVmPlan("win10", "<domain/>"), desiredXml: "<domain></domain>", changed: true };
 * assertEquals([vm.currentXml, vm.add, vm.changed], ["<domain/>", [], true]);
 * ```
 */
export function emptyVmPlan(name: string, xml: string): VmPlan {
  return {
    name,
    hostdevs: [],
    add: [],
    remove: [],
    keep: [],
    move: [],
    reasoning: [],
    warnings: [],
    errors: [],
    active: null,
    currentXml: xml,
    desiredXml: xml,
    changed: false,
  };
}

function quoteAll(addresses: readonly PciAddress[]): string {
  return addresses.map((a) => `"${a}"`).join(", ");
}

/** What a domain whose definition cannot be read counts as holding, for its issue's message. */
function heldNote(name: string, scan: LenientHostdevScan): string {
  const held = scan.addresses.length === 0
    ? "no PCI device could be found in it, so it counts as holding none"
    : `the PCI device${scan.addresses.length === 1 ? "" : "s"} it names, ${
      quoteAll(scan.addresses)
    }, count${scan.addresses.length === 1 ? "s" : ""} as held by "${name}" for conflicts`;
  return held + unresolvedNote(scan);
}

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
function unresolvedError(
  name: string,
  scan: LenientHostdevScan,
  which: "persistent" | "running",
): PlanIssue {
  const definition = which === "running" ? "running definition" : "definition";
  return {
    code: "unreadable-definition",
    message:
      `Cannot tell which PCI devices domain "${name}" holds: its ${definition} cannot be read and ${
        scan.unresolved === 1 ? "a hostdev in it names" : `${scan.unresolved} hostdevs in it name`
      } no readable host address: nothing is applied until the ${definition} is fixed (virsh edit ${name})${
        which === "running" ? ", the guest is stopped," : ""
      } or the domain is undefined`,
    vm: name,
    ...(scan.addresses.length > 0 ? { devices: scan.addresses } : {}),
  };
}

/**
 * The plan-wide refusal for a domain libvirt listed but whose definition it did not return: what
 * it holds is unknown, so nothing is applied until it can be read.
 */
function readFailedError(name: string, error: string): PlanIssue {
  return {
    code: "unreadable-definition",
    message:
      `Cannot tell which PCI devices domain "${name}" holds: libvirt cannot return its definition: ${error}: nothing is applied until it can be read or the domain is undefined`,
    vm: name,
  };
}

/** The IOMMU group of every function the VMs' plans add, remove or move (see `Plan.groupOf`). */
function groupsOfChanges(vms: readonly VmPlan[], host: HostTopology): Record<PciAddress, number> {
  const groupOf = new Map(host.devices.map((d) => [d.address, d.iommuGroup]));
  const out: Record<PciAddress, number> = {};
  for (const vm of vms) {
    const touched = [
      ...vm.add.map((a) => a.address),
      ...vm.remove,
      ...vm.move.flatMap((m) => [m.from, m.to]),
    ];
    for (const address of touched) {
      const group = groupOf.get(address);
      if (group !== null && group !== undefined) out[address] = group;
    }
  }
  return out;
}

/**
 * Computes the plan. Reads each configured VM's persistent XML (and every other domain's, for
 * group conflicts); changes nothing.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { openLibvirtPort } from "../../ffi/port.ts";
 * import { parseConfig } from "../config/config.ts";
 * import { topologyFromDescription } from "../testing/host_description.ts";
 * const host = topologyFromDescription({ devices: [{
 *   bdf: "0000:0b:00.0", group: 30, class: "0x030000", vendor: "0x10de", device: "0x1b06",
 *   subsystem_vendor: null, subsystem_device: null, driver: "nvidia", revision: null,
 * }] }, { source: "example" });
 * // libvirt's built-in test world has one running domain, "test".
 * using libvirt = openLibvirtPort("test:///default");
 * const config = parseConfig(
 *   "version: 1\nvms:\n  test:\n    devices:\n      - match: { vendor_device_id: 10de:1b06 }\n",
 *   { file: "example.yaml" },
 * );
 * const [vm] = planHostdevs({ config, host, libvirt }).vms;
 * assertEquals(vm?.add.map((a) => a.address), ["0000:0b:00.0"]);
 * assertEquals(vm?.warnings.map((w) => w.code), ["host-driver-in-use", "vm-running"]);
 * ```
 */
export function planHostdevs(options: PlanOptions): Plan {
  const { libvirt, ...rest } = options;
  return planWorld({ ...rest, world: readWorld(libvirt) });
}

/** Options of {@link planWorld}: those of {@link planHostdevs}, with the world read already. */
export interface PlanWorldOptions extends Omit<PlanOptions, "libvirt"> {
  /** Every domain's state and definitions, as {@link readWorld} reads them. */
  world: World;
}

/**
 * Computes the plan from data alone: the config, the host and the libvirt world read by
 * {@link readWorld}. No I/O; {@link planHostdevs} is this after reading the world.
 */
export function planWorld(options: PlanWorldOptions): Plan {
  const { config, host, world } = options;
  const global = hostIssues(host);
  const plan: Plan = {
    config: config.file,
    host: host.source,
    uri: world.uri,
    vms: [],
    errors: global.errors,
    warnings: global.warnings,
  };
  const configured = new Set(config.vms.map((v) => v.name));
  const domains = new Map(world.domains.map((d) => [d.name, d]));
  const parsed = new Map<string, { xml: string; domain: ParsedDomain }>();
  const unreadable = new Map<string, { xml: string; error: string; scan: LenientHostdevScan }>();
  const readFailed = new Map<string, string>();
  const hostdevsOf = new Map<string, DomainHostdev[]>();
  // SR-IOV VFs given as <interface type='hostdev'>: never edited, but taken.
  const interfacesOf = new Map<string, PciAddress[]>();
  // Devices hot-plugged into a running guest but absent from its persistent definition: the
  // guest holds them until it stops, so they count as held like the defined ones.
  const liveOnlyOf = new Map<string, PciAddress[]>();
  // Definitions parseDomainXml refuses: the host addresses a lenient scan still finds in them
  // count as held, so no other VM is given a device such a domain may hold.
  const scannedOf = new Map<string, PciAddress[]>();
  /** `defined`: the host addresses the persistent definition holds. */
  const liveOnly = (
    name: string,
    live: DefinitionRead | null,
    defined: ReadonlySet<PciAddress>,
  ) => {
    if (live === null) return;
    let held: PciAddress[];
    if (live.kind === "read-failed") {
      plan.warnings.push({
        code: "unreadable-definition",
        message:
          `Cannot read the running definition of domain "${name}": ${live.error}: devices hot-plugged into it are not checked for conflicts`,
        vm: name,
      });
      return;
    } else if (live.kind === "parsed") {
      held = [...live.domain.hostdevs.map((h) => h.address), ...live.domain.interfaceHostdevs];
    } else {
      const scan = live.scan;
      held = scan.addresses;
      const beyond = scan.addresses.filter((a) => !defined.has(a));
      plan.warnings.push({
        code: "unreadable-definition",
        message: `Cannot read the running definition of domain "${name}": ${live.error}: ${
          beyond.length > 0
            ? `the PCI device${
              beyond.length === 1 ? "" : "s"
            } it names beyond its persistent definition, ${quoteAll(beyond)}, count${
              beyond.length === 1 ? "s" : ""
            } as held by "${name}" until the guest stops`
            : "no PCI device beyond its persistent definition could be found in it"
        }${unresolvedNote(scan)}`,
        vm: name,
        ...(beyond.length > 0 ? { devices: beyond } : {}),
      });
      if (scan.unresolved > 0) plan.errors.push(unresolvedError(name, scan, "running"));
    }
    const extra = [...new Set(held)].filter((address) => !defined.has(address)).sort();
    if (extra.length === 0) return;
    liveOnlyOf.set(name, extra);
    globalLiveWarnings.push({
      code: "live-only-hostdev",
      message: `Running VM "${name}" has ${
        extra.map((a) => `"${a}"`).join(", ")
      } hot-plugged but not in its persistent definition: ${
        extra.length === 1 ? "it counts" : "they count"
      } as held by "${name}" until the guest stops or ${
        extra.length === 1 ? "it is" : "they are"
      } unplugged`,
      vm: name,
      devices: extra,
    });
  };
  const globalLiveWarnings: PlanIssue[] = [];
  const orphans: string[] = [];
  for (const { name, persistent, live } of world.domains) {
    if (persistent.kind === "read-failed") {
      // What it holds is unknown: planning as if it held nothing could hand one of its devices
      // to another VM.
      readFailed.set(name, persistent.error);
      scannedOf.set(name, []);
      plan.errors.push(readFailedError(name, persistent.error));
      liveOnly(name, live, new Set());
      continue;
    }
    const xml = persistent.xml;
    if (persistent.kind === "unreadable") {
      // A configured VM we cannot read is refused on its own below; another tool's domain we
      // cannot read is not planned. Either way the PCI devices a lenient scan finds in it count
      // as held, and hostdevs with no readable address refuse the whole plan.
      const { scan, error } = persistent;
      scannedOf.set(name, scan.addresses);
      if (configured.has(name)) unreadable.set(name, { xml, error, scan });
      else {
        plan.warnings.push({
          code: "unreadable-definition",
          message:
            `Cannot read the definition of domain "${name}", which is not in the config: ${error}: ${
              heldNote(name, scan)
            }`,
          vm: name,
          ...(scan.addresses.length > 0 ? { devices: scan.addresses } : {}),
        });
      }
      if (scan.unresolved > 0) plan.errors.push(unresolvedError(name, scan, "persistent"));
      liveOnly(name, live, new Set(scan.addresses));
      continue;
    }
    const domain = persistent.domain;
    hostdevsOf.set(name, domain.hostdevs);
    interfacesOf.set(name, domain.interfaceHostdevs);
    liveOnly(
      name,
      live,
      new Set([...domain.hostdevs.map((h) => h.address), ...domain.interfaceHostdevs]),
    );
    if (configured.has(name)) {
      parsed.set(name, { xml, domain });
    } else if (options.vms === undefined && domain.records.length > 0) {
      parsed.set(name, { xml, domain });
      orphans.push(name);
    }
  }
  // Dropped from the config but still holding our hostdevs: planned with no rules, so exactly
  // the hostdevs this tool added are removed.
  const effective: Config = orphans.length === 0 ? config : {
    ...config,
    vms: [...config.vms, ...orphans.map((name) => ({ name, location: config.file, rules: [] }))],
  };
  const selected = options.vms ?? effective.vms.map((v) => v.name);
  const planned = new Set(selected);
  const records = new Map([...parsed].map(([n, p]) => [n, p.domain.records]));
  const current = new Map(
    [...parsed].map(([n, p]) => [n, new Set(p.domain.hostdevs.map((h) => h.address))]),
  );
  const byAddress = new Map(host.devices.map((d) => [d.address, d]));
  const globalErrors = plan.errors;
  const globalWarnings = [...plan.warnings, ...globalLiveWarnings];
  // A refused VM keeps every hostdev it has, owned ones included, so those count as held too:
  // plan again with them until no new VM is refused (refusals only grow, so this ends).
  const refused = new Set<string>();
  let previous = new Map<string, VmResolution>();
  for (;;) {
    plan.errors = [...globalErrors];
    plan.warnings = [...globalWarnings];
    plan.vms = [];
    const held = new Map<string, PciAddress[]>();
    for (const [name, hostdevs] of hostdevsOf) {
      // A refused VM's own rules already claim what they resolve to: only the rest is added.
      const claimed = new Set(
        previous.get(name)?.closure.devices.map((c) => c.device.address) ?? [],
      );
      const keeps = (h: DomainHostdev) =>
        !planned.has(name) || !h.owned || (refused.has(name) && !claimed.has(h.address));
      held.set(name, [
        ...hostdevs.filter(keeps).map((h) => h.address),
        ...(interfacesOf.get(name) ?? []),
        ...(liveOnlyOf.get(name) ?? []),
      ]);
    }
    for (const [name, addresses] of scannedOf) {
      held.set(name, [...addresses, ...(liveOnlyOf.get(name) ?? [])]);
    }
    const resolved = resolveConfig(effective, host, { records, current, held });
    planSelected(resolved);
    previous = resolved;
    const now = plan.vms.filter((vm) => vm.errors.length > 0).map((vm) => vm.name);
    if (now.every((name) => refused.has(name))) break;
    for (const name of now) refused.add(name);
  }
  if (options.vms !== undefined) reportDriftOfOthers(previous);
  plan.groupOf = groupsOfChanges(plan.vms, host);
  return plan;

  /**
   * VMs left out by `vms` are not changed, but a recorded card that is no longer where it was is
   * news about the host: their drift warnings are reported plan-wide.
   */
  function reportDriftOfOthers(resolved: Map<string, VmResolution>): void {
    for (const { name } of effective.vms) {
      const entry = parsed.get(name);
      const resolution = resolved.get(name);
      if (planned.has(name) || entry === undefined || resolution === undefined) continue;
      const other = planVm(entry.xml, entry.domain, resolution, {
        host,
        byAddress,
        globalErrors: plan.errors,
        active: domains.get(name)?.active ?? null,
      });
      plan.warnings.push(...other.warnings.filter((w) => w.code === "drift"));
    }
  }

  function planSelected(resolved: Map<string, VmResolution>): void {
    for (const name of selected) {
      const entry = parsed.get(name);
      const resolution = resolved.get(name);
      const broken = unreadable.get(name);
      if (broken !== undefined) {
        const vmPlan = emptyVmPlan(name, broken.xml);
        const vmConfig = config.vms.find((v) => v.name === name);
        vmPlan.errors.push({
          code: "unreadable-definition",
          message: `Cannot read the definition of VM "${name}": ${broken.error}: ${
            heldNote(name, broken.scan)
          }`,
          vm: name,
          ...(vmConfig ? { location: vmConfig.location } : {}),
          ...(broken.scan.addresses.length > 0 ? { devices: broken.scan.addresses } : {}),
        });
        plan.vms.push(vmPlan);
        continue;
      }
      const failure = readFailed.get(name);
      if (failure !== undefined && configured.has(name)) {
        const vmPlan = emptyVmPlan(name, "");
        const vmConfig = config.vms.find((v) => v.name === name);
        vmPlan.errors.push({
          code: "unreadable-definition",
          message:
            `Cannot read the definition of VM "${name}": ${failure}: the devices it holds are unknown`,
          vm: name,
          ...(vmConfig ? { location: vmConfig.location } : {}),
        });
        plan.vms.push(vmPlan);
        continue;
      }
      if (resolution === undefined || entry === undefined) {
        const vmPlan = emptyVmPlan(name, entry?.xml ?? "");
        const vmConfig = config.vms.find((v) => v.name === name);
        vmPlan.errors.push({
          code: "unknown-vm",
          message: resolution === undefined
            ? `VM "${name}" is not in config "${config.file}"`
            : `VM "${name}" is not defined in libvirt ("${world.uri}"): define it first or fix the name in the config`,
          vm: name,
          ...(vmConfig ? { location: vmConfig.location } : {}),
        });
        plan.vms.push(vmPlan);
        continue;
      }
      const vmPlan = planVm(entry.xml, entry.domain, resolution, {
        host,
        byAddress,
        globalErrors: plan.errors,
        active: domains.get(name)?.active ?? null,
      });
      if (orphans.includes(name)) {
        vmPlan.reasoning.unshift(
          `VM "${name}" is no longer in config "${config.file}": the hostdevs passthrough added are removed (hand-added ones stay)`,
        );
      }
      plan.vms.push(vmPlan);
    }
  }
}

function planVm(
  xml: string,
  domain: ParsedDomain,
  resolution: VmResolution,
  context: {
    host: HostTopology;
    byAddress: ReadonlyMap<PciAddress, PciDevice>;
    globalErrors: readonly PlanIssue[];
    active: boolean | null;
  },
): VmPlan {
  const vm = resolution.vm;
  const plan = emptyVmPlan(vm, xml);
  plan.active = context.active;
  plan.reasoning.push(...resolution.closure.reasoning);
  plan.warnings.push(...resolution.warnings);
  plan.errors.push(...context.globalErrors.map((e) => ({ ...e, vm })), ...resolution.errors);
  const currentAddresses = domain.hostdevs.map((h) => h.address);
  const bootRules = resolution.rules.filter((r) =>
    r.rule.bootOrder !== undefined && r.devices.length > 0
  );
  if (bootRules.length > 0 && domain.bootDevices.length > 0) {
    // libvirt refuses per-device boot order next to <os><boot dev=...>: say so before apply.
    for (const r of bootRules) {
      plan.errors.push({
        code: "boot-order-conflict",
        message:
          `Rule "${r.rule.name}" sets boot_order but VM "${vm}" boots by <os><boot dev=...>, which libvirt refuses to combine: replace the <boot dev> lines with <boot order='N'/> on its disk, or drop boot_order`,
        vm,
        rule: r.rule.name,
        location: r.rule.location,
      });
    }
  }
  if (plan.errors.length > 0) {
    // A refused VM keeps its definition exactly as it is; stale hostdevs are still reported.
    for (const have of domain.hostdevs) {
      const record = domain.records.find((r) => r.address === have.address);
      const now = context.byAddress.get(have.address);
      if (!have.owned || record === undefined || (now !== undefined && sameIdentity(record, now))) {
        continue;
      }
      plan.warnings.push(
        driftWarning(
          vm,
          record,
          now,
          "it stays until the errors above are fixed and the plan is applied",
        ),
      );
    }
    plan.hostdevs = [...currentAddresses].sort();
    plan.keep = [...plan.hostdevs];
    return plan;
  }

  const desired = new Map(resolution.closure.devices.map((c) => [c.device.address, c]));
  const existing = new Map(domain.hostdevs.map((h) => [h.address, h]));
  const recordAt = new Map(domain.records.map((r) => [r.address, r]));
  const firstMatched = new Set(
    resolution.rules.flatMap((r) => r.devices.length > 0 ? [r.devices[0]!.address] : []),
  );
  const newRecords: DeviceIdentity[] = [];
  const toAdd: ClosedDevice[] = [];
  const removeSet = new Set<PciAddress>();

  for (const [address, closed] of desired) {
    const have = existing.get(address);
    if (have === undefined && domain.interfaceHostdevs.includes(address)) {
      plan.reasoning.push(
        `${address} (rule "${closed.rule.name}") is already in "${vm}" as an <interface type='hostdev'>: kept as written, not added twice`,
      );
      continue;
    }
    if (have === undefined) {
      toAdd.push(closed);
      continue;
    }
    if (!have.owned) {
      plan.reasoning.push(
        `${address} (rule "${closed.rule.name}") is already in "${vm}" as a hand-added hostdev: kept as written, not taken over`,
      );
      continue;
    }
    const record = recordAt.get(address);
    if (record !== undefined && !sameIdentity(record, closed.device)) {
      plan.warnings.push({
        code: "drift",
        message:
          `Hostdev ${address} of "${vm}" was recorded as ${record.vendorId}:${record.deviceId}${
            record.serial ? ` serial ${record.serial}` : ""
          } but the address now holds ${describe(closed.device)}${
            closed.device.serial ? ` serial ${closed.device.serial}` : ""
          }: rule "${closed.rule.name}" matches the new device, so it stays and its record is updated`,
        vm,
        rule: closed.rule.name,
        devices: [address],
      });
    }
    newRecords.push(identityOf(closed.device, closed.rule.name, domain.records));
    const spec = specFor(closed, firstMatched);
    if (specOfHostdev(have) !== specKey(spec)) {
      // Settings changed (managed, ROM, boot order): rewrite the element.
      removeSet.add(address);
      toAdd.push(closed);
      plan.reasoning.push(`${address}: settings of rule "${closed.rule.name}" changed, rewritten`);
    } else if (guestMultifunction(have) !== closed.rule.multifunction) {
      // `multifunction` turned on or off: the guest addresses are laid out again.
      removeSet.add(address);
      toAdd.push(closed);
      plan.reasoning.push(
        `${address}: multifunction of rule "${closed.rule.name}" turned ${
          closed.rule.multifunction ? "on" : "off"
        }, rewritten with ${
          closed.rule.multifunction ? "one guest slot per card" : "libvirt's own guest addresses"
        }`,
      );
    }
  }

  // Owned hostdevs no longer wanted: removed, unless the same card now sits at a new address.
  const claimedTargets = new Set<PciAddress>();
  for (const have of domain.hostdevs) {
    if (!have.owned || desired.has(have.address)) continue;
    const record = recordAt.get(have.address);
    const now = context.byAddress.get(have.address);
    if (record !== undefined) {
      const targets = toAdd.filter((c) =>
        !claimedTargets.has(c.device.address) && c.rule.name === record.rule &&
        sameIdentity(record, c.device)
      );
      const sameCardElsewhere = context.host.devices.filter((d) =>
        d.address !== have.address && sameIdentity(record, d)
      );
      const target = record.serial !== null
        ? targets[0]
        : targets.length === 1 && sameCardElsewhere.length === 1
        ? targets[0]
        : undefined;
      const stillThere = now !== undefined && sameIdentity(record, now);
      if (target !== undefined && !stillThere) {
        claimedTargets.add(target.device.address);
        plan.move.push(
          {
            from: have.address,
            to: target.device.address,
            rule: target.rule.name,
            evidence: record.serial !== null
              ? "same IDs and serial"
              : "same IDs and subsystem, the only such device on the host",
          } satisfies MovedHostdev,
        );
        plan.reasoning.push(
          `Moved from ${have.address} to ${target.device.address}, ${
            record.serial !== null ? "same IDs and serial" : "same IDs, the only such device"
          } (rule "${target.rule.name}")`,
        );
        removeSet.add(have.address);
        continue;
      }
      if (!stillThere) {
        plan.warnings.push(driftWarning(vm, record, now, "it is removed"));
      }
    }
    removeSet.add(have.address);
  }

  const movedTo = new Set(plan.move.map((m) => m.to));
  for (const closed of toAdd) {
    if (!removeSet.has(closed.device.address)) {
      newRecords.push(identityOf(closed.device, closed.rule.name, domain.records));
    }
  }
  const specs = assignGuestSlots(toAdd, firstMatched, domain, plan.reasoning);
  for (const closed of toAdd) {
    const spec = specs.get(closed.device.address)!;
    if (movedTo.has(closed.device.address) || removeSet.has(closed.device.address)) continue;
    plan.add.push(
      {
        address: closed.device.address,
        rule: closed.rule.name,
        reason: closed.reason,
        group: closed.device.iommuGroup,
        spec,
        identity: identityOf(closed.device, closed.rule.name, domain.records),
        description: describe(closed.device),
      } satisfies PlannedHostdev,
    );
  }
  plan.remove = [...removeSet].filter((a) => !plan.move.some((m) => m.from === a)).sort();
  // Rewritten elements are listed as both removed and added; keep lists what stays untouched.
  plan.keep = currentAddresses.filter((a) => !removeSet.has(a)).sort();
  const rewritten = toAdd.filter((c) => removeSet.has(c.device.address));
  for (const closed of rewritten) {
    plan.add.push({
      address: closed.device.address,
      rule: closed.rule.name,
      reason: closed.reason,
      group: closed.device.iommuGroup,
      spec: specs.get(closed.device.address)!,
      identity: identityOf(closed.device, closed.rule.name, domain.records),
      description: describe(closed.device),
    });
  }
  plan.hostdevs = [...new Set([...plan.keep, ...toAdd.map((c) => c.device.address)])].sort();
  newRecords.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
  plan.desiredXml = editDomainXml(xml, {
    remove: [...removeSet],
    add: toAdd.map((c) => specs.get(c.device.address)!),
    records: newRecords,
  });
  plan.changed = plan.desiredXml !== plan.currentXml;
  if (plan.changed && context.active === true) {
    plan.warnings.push({
      code: "vm-running",
      message:
        `VM "${vm}" is running: the new definition takes effect the next time it is powered off and started`,
      vm,
    });
  }
  return plan;
}

/**
 * Host specs for the devices being added; for rules with `multifunction: true`, a card's
 * functions get guest addresses in one slot of guest bus 0, function numbers preserved: the slot
 * the card's functions already applied sit in (a function that appeared later, e.g. a GPU's audio
 * function enabled after the first apply, joins them), else a free one.
 */
function assignGuestSlots(
  adding: readonly ClosedDevice[],
  firstMatched: ReadonlySet<PciAddress>,
  domain: ParsedDomain,
  reasoning: string[],
): Map<PciAddress, HostdevSpec> {
  const specs = new Map<PciAddress, HostdevSpec>();
  for (const c of adding) specs.set(c.device.address, specFor(c, firstMatched));
  const cards = new Map<string, ClosedDevice[]>();
  for (const c of adding) {
    if (!c.rule.multifunction) continue;
    const key = `${c.rule.name}@${cardOf(c.device.address)}`;
    cards.set(key, [...(cards.get(key) ?? []), c]);
  }
  if (cards.size === 0) return specs;
  const used = usedGuestSlots(domain);
  const applied = appliedCardSlots(domain);
  // Slots from 0x10 up leave the low ones to the devices libvirt places itself.
  let next = 0x10;
  for (const members of cards.values()) {
    const card = cardOf(members[0]!.device.address);
    const functions = members.map((m) => pciAddressParts(m.device.address).function);
    const joined = applied.get(card);
    // The card's slot, when every new function's number is free there and function 0 is
    // marked multifunction already or comes now (the guest then sees the whole card).
    const join = joined !== undefined &&
      functions.every((fn) => !joined.functions.has(fn)) &&
      (joined.multifunction || functions.includes(0));
    let slot: number;
    if (join) {
      slot = joined.slot;
    } else {
      while (next <= 0x1f && used.has(next)) next++;
      if (next > 0x1f) {
        reasoning.push(`${card}: no free slot on guest bus 0 for multifunction, libvirt places it`);
        continue;
      }
      slot = next++;
    }
    const hasFunctionZero = functions.includes(0) || (join && joined.functions.has(0));
    for (const m of members) {
      const fn = pciAddressParts(m.device.address).function;
      const spec = specs.get(m.device.address)!;
      spec.guestAddress = { domain: 0, bus: 0, slot, function: fn };
      if (fn === 0) spec.guestAddress.multifunction = true;
    }
    const where = `guest slot 0000:00:${slot.toString(16).padStart(2, "0")}`;
    reasoning.push(
      `${card}: ${members.length} function${members.length > 1 ? "s" : ""} ${
        join ? `join the card's other functions in ${where}` : `kept together in ${where}`
      } (multifunction)${
        hasFunctionZero ? "" : "; function 0 is not passed, the guest may not see them"
      }`,
    );
  }
  return specs;
}
