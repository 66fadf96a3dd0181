/**
 * Where a recorded card sits now: the one evidence rule for a moved card, shared by the edit of
 * an unrefused VM (`plan/vm_edit.ts`, which moves the hostdev), the repair of a refused one
 * (`plan/repair.ts`, which follows it when that is safe) and the VF a `vf:` rule holds
 * (`vf.ts`, which follows its moved PF): here, with the identity it compares, since both stages
 * use it. Pure.
 *
 * @module
 */

import type { HostTopology, PciAddress, PciDevice } from "../host/types.ts";
import { sameIdentity, sameIdentityAsRead } from "./match.ts";
import { cardOf } from "./host_critical.ts";
import type { DeviceIdentity } from "../plan/types.ts";
import { oneLine } from "../render/terminal.ts";

/** The candidate a recorded card was found as, and what proved it is the same card. */
export interface FoundCard<T> {
  /** The candidate, as the caller gave it. */
  found: T;
  /** What proved it (`same IDs and serial`), as `MovedHostdev.evidence` says it. */
  evidence: string;
}

/**
 * Which of `candidates` is the card `record` describes, recorded at `from` and no longer there:
 * proven by its serial (at the same function number, when the card has several functions with
 * that serial), or by its IDs in the slot it was recorded in, or by its IDs when it is the only
 * such device on the host, or when every device with its IDs is a function of one card (a
 * dual-port NIC moved whole) at the same function number. `undefined` when none is proven. The
 * caller chooses the candidates (the devices a rule takes, not yet claimed by another move).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { topologyFromDescription } from "../testing/host_description.ts";
 * const host = topologyFromDescription({ devices: [{
 *   bdf: "0000:0c:00.0", group: 7, class: "0x030000", vendor: "0x10de", device: "0x2684",
 *   subsystem_vendor: null, subsystem_device: null, driver: "vfio-pci", revision: null,
 * }] }, { source: "example" });
 * const record = {
 *   address: "0000:08:00.0", vendorId: "10de", deviceId: "2684", subsystemVendorId: null,
 *   subsystemDeviceId: null, classCode: "030000", serial: null, driver: "nvidia", rule: "gpu",
 * };
 * const card = findMovedCard(record, "0000:08:00.0", host.devices.map((device) => ({ device })), host);
 * assertEquals(card?.found.device.address, "0000:0c:00.0");
 * assertEquals(card?.evidence, "same IDs, the only such device on the host");
 * // With a subsystem recorded, the evidence says it was compared too.
 * host.devices[0]!.subsystemVendorId = "1458";
 * host.devices[0]!.subsystemDeviceId = "4138";
 * const withSubsystem = { ...record, subsystemVendorId: "1458", subsystemDeviceId: "4138" };
 * const same = findMovedCard(withSubsystem, "0000:08:00.0", [{ device: host.devices[0]! }], host);
 * assertEquals(same?.evidence, "same IDs and subsystem, the only such device on the host");
 * ```
 */
export function findMovedCard<T extends { device: PciDevice }>(
  record: DeviceIdentity,
  from: PciAddress,
  candidates: readonly T[],
  host: HostTopology,
): FoundCard<T> | undefined {
  // The card wherever it sits now: the slot it was recorded in is evidence, not identity here.
  const { slot, ...card } = record;
  // Its IDs still at its address, in a slot named otherwise: the firmware renamed the slot (or
  // names none now), unless its card sits in the recorded slot elsewhere (checked below).
  const here = host.devices.find((d) => d.address === from);
  const stillHere = here !== undefined && sameIdentityAsRead(card, here);
  const targets = candidates.filter((c) => sameIdentity(card, c.device));
  // Say "subsystem" only when there was one to compare (most integrated functions have none).
  const ids = record.subsystemVendorId === null ? "same IDs" : "same IDs and subsystem";
  const fn = from.slice(from.lastIndexOf("."));
  const atFunction = (c: T) => c.device.address.endsWith(fn);
  // The same serial at the same address: the same card, whatever its slot is called now.
  if (record.serial !== null && stillHere) return undefined;
  if (record.serial !== null) {
    // A serial names a card, not a function: a dual-port NIC's ports share one, so the port is
    // the one at the recorded function number (a card keeps its numbers when its bus changes).
    const found = targets.find(atFunction) ?? (targets.length === 1 ? targets[0] : undefined);
    return found && { found, evidence: "same IDs and serial" };
  }
  // Of identical cards, the one in the recorded slot: new hardware renumbered the buses under it.
  const inSlot = slot === undefined ? [] : targets.filter((c) => c.device.physicalSlot === slot);
  const slotted = inSlot.length === 1 ? inSlot[0] : inSlot.find(atFunction);
  if (slotted !== undefined) {
    return { found: slotted, evidence: `${ids} in the recorded slot ${oneLine(slot!, false)}` };
  }
  // Renamed: no move to prove, and a twin elsewhere is no evidence of one.
  if (stillHere) return undefined;
  const elsewhere = host.devices.filter((d) => d.address !== from && sameIdentity(card, d));
  if (targets.length === 1 && elsewhere.length === 1) {
    return {
      found: targets[0]!,
      evidence: `${ids}, the only such device on the host`,
    };
  }
  // One card as {@link cardOf} tells it: a root bus's slot holds devices of their own.
  const oneCard = elsewhere.length > 1 && new Set(elsewhere.map(cardOf)).size === 1;
  const same = oneCard ? targets.find(atFunction) : undefined;
  return same && {
    found: same,
    evidence: `${ids}, function ${fn.slice(1)} of the only such card on the host`,
  };
}

/**
 * `record` once its card is found at `device` ({@link findMovedCard}): the new address, and the
 * slot the card sits in now (none when it is in no named slot), so the start guard compares
 * where it is, not where it was.
 */
export function movedRecord(record: DeviceIdentity, device: PciDevice): DeviceIdentity {
  const { slot: _was, ...rest } = record;
  return {
    ...rest,
    address: device.address,
    ...(device.physicalSlot === null ? {} : { slot: device.physicalSlot }),
  };
}
