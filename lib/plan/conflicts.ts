/**
 * Conflicts between VMs: one IOMMU group (or one device) claimed by two VMs, counting what other
 * domains hold now (domains outside the config or the plan, unreadable ones, hand-added hostdevs,
 * a refused VM's definition), and SR-IOV functions split between VMs. Pure.
 *
 * @module
 */

import { type ClosureResult, findGroupConflicts, type GroupClaim } from "../resolve/closure.ts";
import type { HostTopology, PciAddress } from "../host/types.ts";
import type { PlanIssue } from "./types.ts";
import type { DeviceRule } from "../config/config.ts";

/** What one VM's rules resolve to, as far as conflicts go: its closed-over devices. */
export interface ClosureOf {
  closure: ClosureResult;
}

/** One claim per IOMMU group the closure of `vm` takes a device of. */
function configClaims(vm: string, closure: ClosureResult): GroupClaim[] {
  const byGroup = new Map<number, GroupClaim & { rules: DeviceRule[] }>();
  for (const c of closure.devices) {
    if (c.device.iommuGroup === null) continue;
    const claim = byGroup.get(c.device.iommuGroup) ??
      { vm, group: c.device.iommuGroup, addresses: [], matched: [], source: "config", rules: [] };
    claim.addresses.push(c.device.address);
    if (!claim.rules.includes(c.rule)) claim.rules.push(c.rule);
    if (c.reason === "matched") claim.matched.push(c.device.address);
    byGroup.set(c.device.iommuGroup, claim);
  }
  return [...byGroup.values()];
}

/** One claim per domain and IOMMU group of the devices domains hold now. */
function heldClaims(
  held: ReadonlyMap<string, readonly PciAddress[]>,
  host: HostTopology,
): GroupClaim[] {
  const groupOf = new Map(host.devices.map((d) => [d.address, d.iommuGroup]));
  const claims: GroupClaim[] = [];
  for (const [vm, addresses] of held) {
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
  return claims;
}

/**
 * Every conflict of the VMs' closures (`resolved`, in config order) with each other and with
 * what domains hold now (`held`): shared IOMMU groups, devices assigned twice, split SR-IOV
 * functions. By VM.
 */
export function findConflicts(
  resolved: ReadonlyMap<string, ClosureOf>,
  held: ReadonlyMap<string, readonly PciAddress[]>,
  host: HostTopology,
): Map<string, PlanIssue[]> {
  const claims = [
    ...[...resolved].flatMap(([vm, r]) => configClaims(vm, r.closure)),
    ...heldClaims(held, host),
  ];
  const out = findGroupConflicts(claims);
  for (const [vm, issues] of sriovConflicts(resolved, held)) {
    out.set(vm, [...(out.get(vm) ?? []), ...issues]);
  }
  return out;
}

/**
 * The `sriov-split` refusal of `vm` for the PF/VF pair `device`/`other` and its owner, at the
 * rule of `vm` that takes `device`.
 */
function sriovSplit(
  vm: string,
  { device, rule }: {
    device: { address: PciAddress; physfn: PciAddress | null };
    rule: DeviceRule;
  },
  other: PciAddress,
  owner: { vm: string; heldNow: boolean },
): PlanIssue {
  const [pf, vf, pfVm, vfVm] = device.physfn !== null
    ? [other, device.address, owner.vm, vm]
    : [device.address, other, vm, owner.vm];
  return {
    code: "sriov-split",
    message:
      `SR-IOV virtual function ${vf} of ${pf} is split from it: "${pfVm}" takes ${pf}, "${vfVm}" takes ${vf}${
        owner.heldNow ? ` ("${owner.vm}" holds it in its definition now)` : ""
      }: passing a physical function to a guest destroys its virtual functions; give both to one VM, or leave ${pf} with the host`,
    vm,
    rule: rule.name,
    location: rule.location,
    devices: [pf, vf],
    vms: [vm, owner.vm].sort(),
  };
}

/**
 * SR-IOV functions split between VMs: a PF and its VFs usually sit in separate IOMMU groups, so
 * the group check cannot see them, yet passing the PF to a guest unbinds its host driver, which
 * destroys every VF (a running guest holding one blocks the unbind or loses the device). A PF and
 * its VFs must stay with one VM. No override exists.
 */
function sriovConflicts(
  resolved: ReadonlyMap<string, ClosureOf>,
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
    for (const closed of r.closure.devices) {
      const { device } = closed;
      const related = device.physfn !== null ? [device.physfn] : device.virtfns;
      for (const other of related) {
        for (const owner of owners.get(other) ?? []) {
          if (owner.vm === vm || seen.has(`${other} ${owner.vm}`)) continue;
          seen.add(`${other} ${owner.vm}`);
          out.set(vm, [...(out.get(vm) ?? []), sriovSplit(vm, closed, other, owner)]);
        }
      }
    }
  }
  return out;
}
