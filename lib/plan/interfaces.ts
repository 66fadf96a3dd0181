/**
 * The per-VM edit of `vf:` rules' interfaces: what `lib/plan/vm_edit.ts` does for a VF passed as
 * `<interface type='hostdev'>` rather than a `<hostdev>`. Owned interfaces (listed in our
 * metadata) are kept, rewritten when their settings changed, or removed; hand-written ones are
 * never touched. Pure.
 *
 * @module
 */

import type { DomainInterface, ParsedDomain } from "../domain/domain_xml.ts";
import type { PciAddress, PciDevice } from "../host/types.ts";
import type { ClosedDevice } from "../resolve/closure.ts";
import {
  recordedDriver,
  sameIdentity,
  sameIdentityAsRead,
  VFIO_DRIVERS,
} from "../resolve/match.ts";
import { type VfChoice, virtualFunctions } from "../resolve/vf.ts";
import { describe, describeIdentity } from "./issues.ts";
import type { DeviceIdentity, HostdevSpec, InterfaceSpec, PlanIssue, VfIdentity } from "./types.ts";

/** The interface settings a VF choice is written with. */
export function interfaceSpecOf(closed: ClosedDevice, choice: VfChoice): InterfaceSpec {
  const vlan = closed.rule.interface?.vlan;
  return {
    mac: choice.mac,
    ...(vlan === undefined ? {} : { vlan: { tags: [...vlan.tags], trunk: vlan.trunk } }),
  };
}

/** The record of a VF choice: the PF's identity, the VF's index, address and MAC. */
export function vfRecordOf(
  choice: VfChoice,
  rule: string,
  records: readonly VfIdentity[],
): VfIdentity {
  const { pf } = choice;
  // The PF stays on its host driver; a recorded one still wins if it was seen on vfio once.
  const driver = pf.driver !== null && VFIO_DRIVERS.has(pf.driver)
    ? recordedDriver(pf, records.map((r) => r.pf)) ?? pf.driver
    : pf.driver;
  // A serial this read could not reach keeps the recorded one (see sameIdentityAsRead).
  const serial = pf.serial ??
    (pf.flr !== null
      ? null
      : records.find((r) => r.pf.address === pf.address && sameIdentityAsRead(r.pf, pf))?.pf
        .serial ?? null);
  const identity: DeviceIdentity = {
    address: pf.address,
    vendorId: pf.vendorId,
    deviceId: pf.deviceId,
    subsystemVendorId: pf.subsystemVendorId,
    subsystemDeviceId: pf.subsystemDeviceId,
    classCode: pf.classCode,
    serial,
    driver,
    rule,
  };
  return { address: choice.vf.address, index: choice.index, mac: choice.mac, pf: identity };
}

/** Whether an owned interface differs from what its spec writes (MAC, VLAN, managed, boot, ROM). */
export function interfaceChanged(nic: DomainInterface, spec: HostdevSpec): boolean {
  const want = spec.interface;
  if (want === undefined) return true;
  const vlan = (v: { tags: number[]; trunk: boolean } | null | undefined) =>
    v === null || v === undefined || v.tags.length === 0 ? "" : `${v.tags.join(",")}/${v.trunk}`;
  return nic.mac !== want.mac || vlan(nic.vlan) !== vlan(want.vlan) ||
    nic.managed !== spec.managed || (nic.bootOrder ?? null) !== (spec.bootOrder ?? null) ||
    nic.romBar !== (spec.rom?.bar ?? null) || nic.romFile !== (spec.rom?.file ?? null);
}

/** The owned interface of `domain` at `address`, if any. */
export function ownedInterface(
  domain: ParsedDomain,
  address: PciAddress,
): DomainInterface | undefined {
  return domain.interfaces.find((i) => i.owned && i.address === address);
}

/**
 * The owned interfaces no wanted VF keeps: removed. One whose PF moved (the recorded PF is no
 * longer at its address, and a wanted VF has its index on a PF with its identity elsewhere)
 * says so, as a `moved` note, and is listed in `moved` (its VF's old and new address).
 */
export function releasedInterfaces(
  vm: string,
  domain: ParsedDomain,
  wanted: ReadonlyMap<PciAddress, VfChoice>,
  byAddress: ReadonlyMap<PciAddress, PciDevice>,
): {
  remove: PciAddress[];
  notes: PlanIssue[];
  reasoning: string[];
  moved: { from: PciAddress; to: PciAddress }[];
} {
  const out = {
    remove: [] as PciAddress[],
    notes: [] as PlanIssue[],
    reasoning: [] as string[],
    moved: [] as { from: PciAddress; to: PciAddress }[],
  };
  for (const nic of domain.interfaces) {
    if (!nic.owned || wanted.has(nic.address)) continue;
    out.remove.push(nic.address);
    const record = domain.vfRecords.find((r) => r.address === nic.address);
    if (record === undefined) continue;
    const there = byAddress.get(record.pf.address);
    if (there !== undefined && sameIdentityAsRead(record.pf, there)) continue;
    const now = [...wanted.values()].find((c) =>
      c.index === record.index && c.pf.address !== record.pf.address &&
      sameIdentity(record.pf, c.pf)
    );
    if (now === undefined) {
      out.notes.push(interfaceDriftWarning(vm, record, there, "it is removed"));
      continue;
    }
    const rule = record.pf.rule;
    out.notes.push({
      code: "moved",
      message:
        `VF ${record.index} of "${vm}" (rule "${rule}") moved with its physical function from ${record.pf.address} to ${now.pf.address}: the interface follows it, ${nic.address} becomes ${now.vf.address}`,
      vm,
      rule,
      devices: [nic.address, now.vf.address],
      info: true,
    });
    out.reasoning.push(
      `Moved VF ${record.index} from ${nic.address} to ${now.vf.address}, its PF from ${record.pf.address} to ${now.pf.address} (rule "${rule}")`,
    );
    out.moved.push({ from: nic.address, to: now.vf.address });
  }
  return out;
}

/**
 * A `drift` warning for an owned interface whose recorded PF's address now holds another card, or
 * nothing, as `driftWarning` says it of a hostdev: the VM's VF is then one of another NIC, which
 * may be cabled to another network, and the plan went on without a word of it.
 */
export function interfaceDriftWarning(
  vm: string,
  record: VfIdentity,
  pf: PciDevice | undefined,
  outcome: string,
): PlanIssue {
  const at = record.pf.address;
  // The slot the card there sits in, where the record holds one to compare.
  const slot = record.pf.slot === undefined ? {} : { slot: pf?.physicalSlot ?? null };
  const holds = pf === undefined ? "nothing" : describeIdentity({ ...pf, driver: null, ...slot });
  return {
    code: "drift",
    message:
      `Interface ${record.address} of "${vm}" (rule "${record.pf.rule}") was recorded as VF ${record.index} of ${
        describeIdentity({ ...record.pf, driver: null })
      } at ${at} but ${at} now holds ${holds}: ${outcome}`,
    vm,
    rule: record.pf.rule,
    devices: [record.address],
  };
}

/**
 * The card at a recorded PF's address, and the recorded one, as all that tells them apart says
 * them (subsystem, serial, the slot where one was recorded): IDs and class alone read alike.
 */
function anotherCard(record: DeviceIdentity, pf: PciDevice): string {
  const slot = record.slot === undefined ? {} : { slot: pf.physicalSlot };
  return `${describeIdentity({ ...pf, driver: null, ...slot })}, not the recorded ${
    describeIdentity({ ...record, driver: null })
  }`;
}

/**
 * The owned interfaces of a refused VM whose address is no longer the recorded VF: nothing is
 * there, it is no VF, its PF is at another address (a VF's address follows from its PF's) or is
 * another card, or it is another index of the PF. Each is a `drift` refusal; the VM's repair
 * removes them, as it removes stale hostdevs.
 */
export function staleInterfaces(
  vm: string,
  domain: ParsedDomain,
  byAddress: ReadonlyMap<PciAddress, PciDevice>,
): { remove: PciAddress[]; issues: PlanIssue[] } {
  const out = { remove: [] as PciAddress[], issues: [] as PlanIssue[] };
  for (const nic of domain.interfaces) {
    const record = domain.vfRecords.find((r) => r.address === nic.address);
    if (!nic.owned || record === undefined) continue;
    const now = byAddress.get(nic.address);
    const pf = now?.physfn == null ? undefined : byAddress.get(now.physfn);
    const why = now === undefined
      ? "nothing is there now"
      : pf === undefined
      ? `it holds ${describe(now)}, no VF`
      : pf.address !== record.pf.address
      ? `it is a VF of ${pf.address} now`
      : !sameIdentityAsRead(record.pf, pf)
      ? `it is a VF of ${pf.address}, which holds ${anotherCard(record.pf, pf)}`
      : virtualFunctions(pf).indexOf(nic.address) !== record.index
      ? `it is VF ${virtualFunctions(pf).indexOf(nic.address)} of ${pf.address} now`
      : null;
    if (why === null) continue;
    out.remove.push(nic.address);
    out.issues.push({
      code: "drift",
      message:
        `Interface ${nic.address} of "${vm}" was recorded as VF ${record.index} of ${record.pf.vendorId}:${record.pf.deviceId} at ${record.pf.address} (rule "${record.pf.rule}") but ${why}: it is removed even while the refusals below stand, so that the next start cannot hand that device to the guest`,
      vm,
      rule: record.pf.rule,
      devices: [nic.address],
    });
  }
  return out;
}
