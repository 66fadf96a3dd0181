/**
 * `vf:` rules: the rule's match names an SR-IOV physical function (resolved like any rule, so an
 * ambiguous one lists its candidates) and the VM gets one of its virtual functions, passed as
 * `<interface type='hostdev'>` with a MAC that stays the same from plan to plan.
 *
 * A VF's address is derived from its PF's (First VF Offset and VF Stride of the PF's SR-IOV
 * capability), so it moves when the PF moves: what identifies a VF is its PF's identity and its
 * index, both recorded in the domain's metadata. Pure.
 *
 * @module
 */

import type { DeviceRule } from "../config/config.ts";
import type { HostTopology, PciAddress, PciDevice } from "../host/types.ts";
import { comparePciAddress } from "../pci/address.ts";
import { findMovedCard } from "./moves.ts";
import type { PlanIssue, VfIdentity } from "../plan/types.ts";
import type { ClosureResult } from "./closure.ts";
import {
  type MatchOptions,
  narrowWith,
  resolveRule,
  ruleBase,
  type RuleResolution,
  sameIdentityAsRead,
  toCandidate,
  VFIO_DRIVERS,
} from "./match.ts";

/** The VF a `vf:` rule of a VM resolved to, and how it is passed. */
export interface VfChoice {
  /** The physical function the rule matched. */
  pf: PciDevice;
  /** The virtual function taken. */
  vf: PciDevice;
  /** Its index on the PF (`virtfnN`). */
  index: number;
  /** The MAC it is written with (lower case, colons). */
  mac: string;
  /** How the choice was made, for the plan's reasoning. */
  why: string;
}

/** What choosing VFs across the VMs of one resolution shares. */
export interface VfContext {
  /** Every domain's devices now (hostdevs, interfaces, live ones), by domain name. */
  occupied: ReadonlyMap<string, ReadonlySet<PciAddress>>;
  /** Every domain's interface MACs now, by domain name. */
  macs: ReadonlyMap<string, readonly string[]>;
  /** The VF records of each VM's domain, by name. */
  records: ReadonlyMap<string, readonly VfIdentity[]>;
  /** The VFs hostdev networks hand out, each with its network's name. */
  pools: ReadonlyMap<PciAddress, string>;
  /** VFs chosen so far in this resolution, each with the VM and rule that took it. */
  claimedVfs: Map<PciAddress, string>;
  /** MACs chosen so far in this resolution, each with the VM and rule that took it. */
  claimedMacs: Map<string, string>;
}

/**
 * A fresh {@link VfContext} over what the domains hold now.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(vfContext({}).claimedVfs.size, 0);
 * ```
 */
export function vfContext(from: {
  occupied?: ReadonlyMap<string, ReadonlySet<PciAddress>>;
  macs?: ReadonlyMap<string, readonly string[]>;
  records?: ReadonlyMap<string, readonly VfIdentity[]>;
  pools?: ReadonlyMap<PciAddress, string>;
}): VfContext {
  return {
    occupied: from.occupied ?? new Map(),
    macs: from.macs ?? new Map(),
    records: from.records ?? new Map(),
    pools: from.pools ?? new Map(),
    claimedVfs: new Map(),
    claimedMacs: new Map(),
  };
}

// A rule with `vf:` matches physical functions only: the same host without its VFs, built once.
const PF_VIEWS = new WeakMap<HostTopology, HostTopology>();

function physicalFunctions(host: HostTopology): HostTopology {
  let view = PF_VIEWS.get(host);
  if (view === undefined) {
    view = { ...host, devices: host.devices.filter((d) => d.physfn === null) };
    PF_VIEWS.set(host, view);
  }
  return view;
}

/**
 * The PF's VFs by index. VF `i`'s routing ID is the PF's plus First VF Offset plus `i` times VF
 * Stride, so the order of the addresses is the order of the indexes: `virtfnN` is the N-th.
 */
export function virtualFunctions(pf: PciDevice): PciAddress[] {
  return [...pf.virtfns].sort(comparePciAddress);
}

/** FNV-1a, 64 bits: a stable hash with no I/O (planning is synchronous and pure). */
function fnv1a64(text: string): bigint {
  let hash = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(text)) {
    hash ^= BigInt(byte);
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return hash;
}

/**
 * The MAC `mac: auto` gives attempt `attempt` of VM `vm`'s rule `rule` on a host: locally
 * administered (bit 1 of the first byte set) and unicast (bit 0 clear), so it can clash with no
 * vendor's MAC. The same inputs always give the same MAC.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const mac = autoMac("host", "web", "uplink", 0);
 * assertEquals(mac, autoMac("host", "web", "uplink", 0));
 * assertEquals(parseInt(mac.slice(0, 2), 16) & 3, 2);
 * ```
 */
export function autoMac(hostKey: string, vm: string, rule: string, attempt: number): string {
  const hash = fnv1a64(`${hostKey}\0${vm}\0${rule}\0${attempt}`);
  const bytes = Array.from({ length: 6 }, (_, i) => Number((hash >> BigInt(8 * (5 - i))) & 0xffn));
  bytes[0] = (bytes[0]! & 0xfc) | 0x02;
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":");
}

/** The domain (or VM and rule) holding `address`, other than `rule`'s own VF; `null`: free. */
function holderOf(
  address: PciAddress,
  rule: DeviceRule,
  own: PciAddress | null,
  context: VfContext,
  host: HostTopology,
): string | null {
  const claimed = context.claimedVfs.get(address);
  if (claimed !== undefined) return claimed;
  // The VM's own VF stays its own: if a pool lists it too, the plan refuses that, by name.
  const pool = context.pools.get(address);
  if (pool !== undefined && address !== own) return `hostdev network ${JSON.stringify(pool)}`;
  for (const [domain, held] of context.occupied) {
    if (!held.has(address)) continue;
    if (domain === rule.vm && address === own) continue;
    return domain === rule.vm ? `"${domain}" (another device of it)` : `"${domain}"`;
  }
  const use = host.hostUse?.find((u) => u.address === address);
  return use === undefined ? null : `the host (${use.reason}: ${use.detail})`;
}

/**
 * The recorded VF of this rule whose PF is `pf`: the same identity, and the same address, or the
 * recorded PF left its address and `pf` is proven to be it ({@link findMovedCard}: the PF moved,
 * its VF is re-derived). A serial alone proves nothing while the recorded PF is still there: the
 * ports of a dual-port card share one.
 */
function recordFor(
  rule: DeviceRule,
  pf: PciDevice,
  host: HostTopology,
  context: VfContext,
): VfIdentity | undefined {
  return (context.records.get(rule.vm) ?? []).find((r) =>
    r.pf.rule === rule.name && sameIdentityAsRead(r.pf, pf) &&
    (r.pf.address === pf.address ||
      findMovedCard(r.pf, r.pf.address, [{ device: pf }], host) !== undefined)
  );
}

/**
 * What `pf` says about providing `wanted` VFs when `enabled` are: the command that enables them,
 * or, when `sriov_totalvfs` is below `wanted`, `null` (it cannot).
 */
function numvfsHint(
  pf: PciDevice,
  enabled: number,
  wanted: number,
  host: HostTopology,
): string | null {
  const file = `/sys/bus/pci/devices/${pf.address}/sriov_numvfs`;
  const total = pf.sriovTotalVfs;
  if (total !== undefined && wanted > total) return null;
  const boot = " (not kept across a reboot: set it at boot, with a udev rule or a systemd unit)";
  // The kernel changes the count only from 0, and writing 0 removes every VF, the host's too;
  // so does giving a PF on vfio-pci back to its driver below: this comes first.
  const hosts = enabled === 0
    ? []
    : (host.hostUse ?? []).filter((u) => pf.virtfns.includes(u.address));
  if (hosts.length > 0) {
    return `more VFs means setting ${file} to 0 first, which removes every VF, and the host uses ${
      hosts.map((u) => `${u.address} (${u.reason}: ${u.detail})`).join(", ")
    }: move the host off it first`;
  }
  // The kernel takes a count only through the PF's driver (its `sriov_configure`: "no driver
  // bound to device; cannot configure SR-IOV", and vfio-pci's needs `enable_sriov`), and libvirt
  // sets a VF's MAC and VLAN through the PF's network interface: the echo alone would fail.
  if (pf.driver === null || VFIO_DRIVERS.has(pf.driver)) {
    const dir = `/sys/bus/pci/devices/${pf.address}`;
    const rebind = [
      `echo > ${dir}/driver_override`,
      ...(pf.driver === null ? [] : [`echo ${pf.address} > ${dir}/driver/unbind`]),
      `echo ${pf.address} > /sys/bus/pci/drivers_probe`,
    ].join("; ");
    return `${pf.address} is bound to ${
      pf.driver === null ? "no driver" : `"${pf.driver}"`
    }, not its network driver, so the kernel refuses a count in ${file}: give it back to its network driver first (${rebind}${
      enabled === 0
        ? ""
        : `, which removes its ${enabled === 1 ? "VF" : `${enabled} VFs`}: stop the VMs using ${
          enabled === 1 ? "it" : "them"
        } first`
    }), then echo ${wanted} > ${file}${boot}`;
  }
  if (total === undefined) {
    return `raise ${file} to ${wanted} or more (at most its sriov_totalvfs; set it to 0 first)${boot}`;
  }
  return enabled === 0
    ? `echo ${wanted} > ${file}${boot}`
    : `echo 0 > ${file}; echo ${wanted} > ${file} (stop the VMs using its VFs first)${boot}`;
}

/** How many VFs `pf` has of how many it can have, as the refusals say it. */
function vfCounts(pf: PciDevice, enabled: number): string {
  const total = pf.sriovTotalVfs === undefined ? "" : ` of ${pf.sriovTotalVfs} possible`;
  return `PF ${pf.address} has ${enabled} VF${enabled === 1 ? "" : "s"} enabled${total}`;
}

/** The index a rule takes on `pf`, or the `vf-unavailable` refusal. */
function chooseIndex(
  rule: DeviceRule,
  pf: PciDevice,
  vfs: readonly PciAddress[],
  record: VfIdentity | undefined,
  env: { host: HostTopology; context: VfContext },
): { index: number; why: string } | PlanIssue {
  const refuse = (message: string): PlanIssue => ({
    code: "vf-unavailable",
    message,
    ...ruleBase(rule),
    devices: [pf.address],
  });
  const what = `Rule "${rule.name}" of VM "${rule.vm}"`;
  // The kernel makes `sriov_*` for every function with the SR-IOV capability, VFs or none.
  if (vfs.length === 0 && pf.sriovTotalVfs === undefined && pf.sriovNumVfs === undefined) {
    const asked = typeof rule.vf === "number" ? `VF ${rule.vf}` : "a VF";
    return refuse(
      `${what} asks for ${asked} of ${pf.address}, which is not SR-IOV capable (it has no sriov_totalvfs): match a function that is, or drop "vf:" to pass the function itself`,
    );
  }
  const counts = vfCounts(pf, vfs.length);
  if (typeof rule.vf === "number") {
    if (rule.vf < vfs.length) return { index: rule.vf, why: "the index the rule names" };
    const hint = numvfsHint(pf, vfs.length, rule.vf + 1, env.host);
    return refuse(
      `${what} asks for VF ${rule.vf} of ${pf.address}: ${counts}: ${
        hint ?? `it has no VF ${rule.vf}; name an index below ${pf.sriovTotalVfs}, or "vf: any"`
      }`,
    );
  }
  const own = record?.address ?? null;
  const holder = (i: number) => holderOf(vfs[i]!, rule, own, env.context, env.host);
  if (record !== undefined && record.index < vfs.length && holder(record.index) === null) {
    return { index: record.index, why: "the VF it holds already" };
  }
  const free = vfs.findIndex((_, i) => holder(i) === null);
  if (free >= 0) return { index: free, why: "the lowest free VF" };
  const held = vfs.map((a, i) => `${i} (${a}) by ${holder(i)}`).join(", ");
  const hint = numvfsHint(pf, vfs.length, vfs.length + 1, env.host);
  return refuse(
    `${what} asks for any free VF of ${pf.address}, but ${
      vfs.length === 0 ? "it has no VF enabled" : `all ${vfs.length} are taken: ${held}`
    }. ${counts}: ${
      hint !== null
        ? vfs.length === 0 ? hint : `${hint}, or free a VF`
        : vfs.length === 0
        ? "it cannot provide any"
        : "it cannot provide more; free one of the VFs above"
    }`,
  );
}

/** The MAC of the rule's interface, or the `mac-conflict` refusal. */
function chooseMac(
  rule: DeviceRule,
  pf: PciDevice,
  context: VfContext,
  host: HostTopology,
): string | PlanIssue {
  const record = (context.records.get(rule.vm) ?? []).find((r) => r.pf.rule === rule.name);
  const taken = (mac: string): string | null => {
    const claimed = context.claimedMacs.get(mac);
    if (claimed !== undefined) return claimed;
    // The host's own NICs count too: a VF given its PF's MAC (copied from `ip link`) shares one
    // MAC with the PF on the same wire, and the switch sends each one's traffic to the other.
    const nic = host.devices.find((d) => d.macAddress === mac);
    if (nic !== undefined) return `the host (the network interface of ${nic.address})`;
    for (const [domain, macs] of context.macs) {
      if (domain === rule.vm && mac === record?.mac) continue;
      if (macs.includes(mac)) return `"${domain}"`;
    }
    return null;
  };
  const given = rule.interface?.mac ?? "auto";
  if (given !== "auto") {
    const holder = taken(given);
    if (holder === null) return given;
    return {
      code: "mac-conflict",
      message:
        `Rule "${rule.name}" of VM "${rule.vm}" sets MAC ${given}, which ${holder} already uses: two NICs with one MAC break both; give another MAC, or "mac: auto"`,
      ...ruleBase(rule),
    };
  }
  if (record !== undefined && taken(record.mac) === null) return record.mac;
  // What tells hosts apart: the PF's serial (most NICs derive it from their own MAC), else its
  // interface's MAC; not the sysfs root, `/sys` on every host and another path for its snapshot.
  const hostKey = pf.serial ?? pf.macAddress ?? "";
  for (let attempt = 0;; attempt++) {
    const mac = autoMac(hostKey, rule.vm, rule.name, attempt);
    if (taken(mac) === null) return mac;
  }
}

/** `ambiguous`: the rule matches several PFs in one IOMMU group, where it takes one. */
function severalPfs(rule: DeviceRule, pfs: readonly PciDevice[]): PlanIssue {
  return {
    code: "ambiguous",
    message: `Rule "${rule.name}" of VM "${rule.vm}" matches ${pfs.length} physical functions (${
      pfs.map((d) => d.address).join(", ")
    }) but takes a VF of one: narrow it with ${
      narrowWith(pfs.map((d) => ({ group: d.iommuGroup, devices: [d] })))
    }`,
    ...ruleBase(rule),
    devices: pfs.map((d) => d.address),
    candidates: pfs.map(toCandidate),
  };
}

/**
 * Resolves a `vf:` rule: its PF (among the host's physical functions), then the VF it takes
 * (the index given; or for `any` the VF it holds already, else the lowest free one), and its
 * MAC. The resolution names the VF as the rule's one device, so it is closed over its IOMMU group
 * and checked for conflicts like any device. Records the choice in `context`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { parseConfig } from "../config/config.ts";
 * import { topologyFromDescription } from "../testing/host_description.ts";
 * const blank = { subsystem_vendor: null, subsystem_device: null, driver: null, revision: null };
 * const host = topologyFromDescription({ devices: [
 *   { bdf: "0000:07:00.0", group: 7, class: "0x020000", vendor: "0x8086", device: "0x10c9", ...blank },
 *   { bdf: "0000:07:10.0", group: 8, class: "0x020000", vendor: "0x8086", device: "0x10ca",
 *     physfn: "0000:07:00.0", ...blank },
 *   { bdf: "0000:07:10.2", group: 9, class: "0x020000", vendor: "0x8086", device: "0x10ca",
 *     physfn: "0000:07:00.0", ...blank },
 * ] }, { source: "example" });
 * const config = parseConfig(
 *   "version: 1\nvms:\n  vm:\n    devices:\n      - match: { vendor_device_id: 8086:10c9 }\n" +
 *     "        vf: any\n",
 *   { file: "c.yaml" },
 * );
 * const context = vfContext({ occupied: new Map([["other", new Set(["0000:07:10.0"])]]) });
 * const { resolution, choice } = resolveVfRule(config.vms[0]!.rules[0]!, host, context);
 * assertEquals([resolution.devices.map((d) => d.address), choice?.index], [["0000:07:10.2"], 1]);
 * ```
 */
export function resolveVfRule(
  rule: DeviceRule,
  host: HostTopology,
  context: VfContext,
  options: MatchOptions = {},
): { resolution: RuleResolution; choice: VfChoice | null } {
  const refused = (issue: PlanIssue) => ({
    resolution: { rule, devices: [], units: [], issue },
    choice: null,
  });
  const pfs = resolveRule(rule, physicalFunctions(host), options);
  if (pfs.issue !== null) return { resolution: pfs, choice: null };
  if (pfs.devices.length !== 1) return refused(severalPfs(rule, pfs.devices));
  const pf = pfs.devices[0]!;
  const heldBy = [...context.occupied].filter(([, held]) => held.has(pf.address)).map(([d]) => d);
  if (heldBy.length > 0) {
    return refused({
      code: "sriov-split",
      message: `Rule "${rule.name}" of VM "${rule.vm}" takes a VF of ${pf.address}, which "${
        heldBy[0]
      }" holds as a device: passing a physical function to a guest destroys its VFs; leave ${pf.address} with the host`,
      ...ruleBase(rule),
      devices: [pf.address],
      vms: [...new Set([rule.vm, ...heldBy])].sort(),
    });
  }
  const vfs = virtualFunctions(pf);
  const record = recordFor(rule, pf, host, context);
  const index = chooseIndex(rule, pf, vfs, record, { host, context });
  if ("code" in index) return refused(index);
  const vf = host.devices.find((d) => d.address === vfs[index.index]);
  if (vf === undefined) throw new Error(`Internal error: VF ${vfs[index.index]} is not a device`);
  const mac = chooseMac(rule, pf, context, host);
  if (typeof mac !== "string") return refused(mac);
  const who = `"${rule.vm}" (rule "${rule.name}")`;
  context.claimedVfs.set(vf.address, who);
  context.claimedMacs.set(mac, who);
  // A VF's address changes with its PF's, and also when VFs are made again with other counts
  // (the other port's VFs, laid out before its own): the PF then did not move. Another index (the
  // rule names another, or `vf: any`'s VF is taken now) is another VF, not the same one moved.
  const moved = record === undefined || record.address === vf.address
    ? ""
    : record.pf.address !== pf.address
    ? `; it was ${record.address}, its PF was ${record.pf.address}: the interface follows it`
    : record.index !== index.index
    ? `; it was VF ${record.index} (${record.address})`
    : `; it was ${record.address}, before the VFs were made again (sriov_numvfs): the interface follows VF ${index.index} there`;
  return {
    resolution: {
      rule,
      devices: [vf],
      units: [{ group: vf.iommuGroup, devices: [vf] }],
      issue: null,
    },
    choice: {
      pf,
      vf,
      index: index.index,
      mac,
      why:
        `VF ${index.index} of ${pf.address} (rule "${rule.name}"): ${vf.address}, ${index.why}, as <interface type='hostdev'> with MAC ${mac}${moved}`,
    },
  };
}

/**
 * `sriov-split` for a VF whose own IOMMU group holds its PF (no ACS between them): closing over
 * the group would hand the guest the PF too, which destroys the VF.
 */
export function pfInClosure(
  vm: string,
  choices: ReadonlyMap<PciAddress, VfChoice>,
  closure: ClosureResult,
): PlanIssue[] {
  const taken = new Set(closure.devices.map((c) => c.device.address));
  return [...choices.values()].filter((c) => taken.has(c.pf.address)).map((c) => ({
    code: "sriov-split" as const,
    message:
      `VF ${c.vf.address} of VM "${vm}" shares IOMMU group ${c.vf.iommuGroup} with its physical function ${c.pf.address}, which would go to the guest with it and destroy the VF: this host cannot pass the VF alone (no ACS between them)`,
    vm,
    devices: [c.pf.address, c.vf.address],
    ...(c.vf.iommuGroup === null ? {} : { group: c.vf.iommuGroup }),
  }));
}
