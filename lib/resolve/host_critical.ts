/**
 * Which devices the host likely needs, so that dragging them into a guest with an IOMMU group
 * must be refused unless the user says otherwise (`allow_host_critical: true`).
 *
 * @module
 */

import type { HostUse, PciAddress, PciDevice } from "../host/types.ts";
import { pciAddressParts, slotOf } from "../pci/address.ts";

/** Platform functions no guest should ever take: the host cannot run without them. */
const PLATFORM_CLASSES: Readonly<Record<string, string>> = {
  "0600": "host bridge",
  "0601": "ISA/LPC bridge",
  "0580": "memory controller",
  "0c05": "SMBus controller",
};

/**
 * Device kinds the host usually needs for itself (its disks, network, console, keyboard): critical
 * when they come along from another card than the devices the user asked for.
 */
const HOST_CLASSES: readonly (readonly [string, string])[] = [
  ["01", "storage controller"],
  ["02", "network controller"],
  ["03", "display controller"],
  ["0c03", "USB controller"],
];

/**
 * The card a function belongs to: the functions of its slot (`0000:0b:00`) made by its vendor,
 * which are one device (a GPU's video and audio, its USB-C port), except on a root bus
 * ({@link onRootBus}), where it is the function itself (`0000:00:14.3`): what sits there is built
 * into the chipset or CPU, and one slot holds unrelated devices (Intel's USB controller at
 * `00:14.0`, its SRAM at `00:14.2`, CNVi Wi-Fi at `00:14.3`). Another vendor's
 * function in a slot is another device built into the same chip: an AMD APU's iGPU (1002) shares
 * its slot with the CPU's USB controllers (1022), and HP's iLO (103c) its USB controller, the
 * remote console's keyboard, with the Matrox VGA (102b) it carries.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(cardOf({ address: "0000:0b:00.1", vendorId: "10de" }), "0000:0b:00 10de");
 * assertEquals(cardOf({ address: "0000:00:14.3", vendorId: "8086" }), "0000:00:14.3");
 * ```
 */
export function cardOf(device: Pick<PciDevice, "address" | "vendorId" | "rootBus">): string {
  const { address, vendorId } = device;
  return onRootBus(device) ? address : `${slotOf(address)} ${vendorId}`;
}

/**
 * Whether `device` sits on a PCI root bus: as its sysfs entry showed ({@link PciDevice.rootBus}),
 * else when on bus 0, a root bus on every host (a bridge's secondary bus is never 0). A host with
 * several host bridges has more (`pci0000:20`, `pci0000:40`), which only the entry shows.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(onRootBus({ address: "0000:00:14.3" }), true);
 * assertEquals(onRootBus({ address: "0000:20:00.2", rootBus: true }), true);
 * assertEquals(onRootBus({ address: "0000:21:00.0" }), false);
 * ```
 */
export function onRootBus(device: Pick<PciDevice, "address" | "rootBus">): boolean {
  return device.rootBus ?? pciAddressParts(device.address).bus === 0;
}

/**
 * Whether `device` sits behind Intel VMD, in a PCI domain past the firmware's last (`ffff`), as
 * VMD numbers the domain behind its controller (`10000` and up): the IOMMU sees its DMA as the
 * controller's, so VFIO cannot assign it apart from the controller, whatever group it shows, and
 * a guest given the controller takes it along (the domain leaves the host with the vmd driver).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(behindVmd({ address: "10000:e1:00.0" }), true);
 * assertEquals(behindVmd({ address: "0000:00:0e.0" }), false);
 * ```
 */
export function behindVmd(device: Pick<PciDevice, "address">): boolean {
  return pciAddressParts(device.address).domain > 0xffff;
}

/**
 * Why the host likely needs `device`, or `null` when it does not. `matchedCards` holds the
 * {@link cardOf} of the devices asked for: a storage, network, display or USB function on a
 * matched card itself is what the user asked for.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const lpc = { address: "0000:00:1f.0", vendorId: "8086", classCode: "060100" };
 * assertEquals(hostCriticalReason(lpc, { matchedCards: new Set(), hostUse: [] }), "ISA/LPC bridge");
 * ```
 */
export function hostCriticalReason(
  device: Pick<PciDevice, "address" | "vendorId" | "classCode" | "rootBus">,
  options: { matchedCards: ReadonlySet<string>; hostUse: readonly HostUse[] | null },
): string | null {
  // Unknown use (`null`) marks nothing here: planning refuses such a host as a whole.
  const use = options.hostUse?.find((u) => u.address === device.address);
  if (use) return `in use by the host (${use.reason}: ${use.detail})`;
  const platform = PLATFORM_CLASSES[device.classCode.slice(0, 4)];
  if (platform) return platform;
  if (options.matchedCards.has(cardOf(device))) return null;
  const what = HOST_CLASSES.find(([prefix]) => device.classCode.startsWith(prefix))?.[1];
  if (what === undefined) return null;
  // A matched function of the same slot is another device: "another slot" would mislead.
  const slot = slotOf(device.address);
  if (![...options.matchedCards].some((card) => card.startsWith(slot))) {
    return `${what} in another slot`;
  }
  return onRootBus(device)
    ? `${what} in the same root-bus slot, not part of the device asked for`
    : `${what} of another vendor (${device.vendorId}) in the same slot, not part of the device asked for`;
}

/**
 * Why taking `device` (an SR-IOV physical function) takes something the host uses: its virtual
 * functions disappear when the PF leaves its host driver, so a VF the host uses (or another
 * running VM, as the start guard reads it) is lost with it. `null` when none is used.
 */
export function virtualFunctionInUse(
  device: Pick<PciDevice, "virtfns">,
  hostUse: readonly HostUse[] | null,
): string | null {
  const uses = device.virtfns.flatMap((vf) => hostUse?.filter((u) => u.address === vf) ?? []);
  // Another running VM's first: that is the refusal no override lifts (the guard's `busy`).
  const use = uses.find((u) => u.reason === "vm-passed") ?? uses[0];
  if (use === undefined) return null;
  const whose = use.reason === "vm-passed" ? "in use" : "in use by the host";
  return `its virtual function ${use.address} is ${whose} (${use.reason}: ${use.detail})`;
}

/**
 * Why the host needs `device` whichever card is asked for: a platform function, or one the host
 * uses now; `null` when neither (a storage, network, display or USB controller counts only
 * against the cards a rule matched, which `plan` knows and a listing does not: {@link takenAlong}
 * says which cards of its group would take it along). What `devices` and `groups` show.
 */
export function hostCriticalOnItsOwn(
  device: Pick<PciDevice, "address" | "vendorId" | "classCode" | "rootBus" | "virtfns">,
  host: { hostUse: readonly HostUse[] | null },
): string | null {
  // Its own card counts as asked for: only platform functions and the host's use are left.
  const own = new Set([cardOf(device)]);
  // An SR-IOV PF too while the host uses one of its VFs, as `plan` refuses it.
  return hostCriticalReason(device, { matchedCards: own, hostUse: host.hostUse }) ??
    virtualFunctionInUse(device, host.hostUse);
}

/** A group member that a rule passing another card of its group without it takes along. */
export interface TakenAlong {
  /** Why `plan` refuses that ({@link hostCriticalReason}): `USB controller in another slot`. */
  reason: string;
  /** The first function of each card whose passing takes it along. */
  by: PciAddress[];
}

/**
 * What a listing can say of one IOMMU group's `members` beyond {@link hostCriticalOnItsOwn}: the
 * storage, network, display and USB controllers that passing another card of the group without
 * them takes along, which `plan` refuses as the host's (`group-contains-host-critical`), and
 * whether every card of the group takes another's along (`noCardAlone`), so none passes alone.
 * Bridges stay with the host and count as no card, and so do devices behind Intel VMD
 * ({@link behindVmd}), which no rule matches and which go with their controller, never alone.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const nic = { address: "0000:05:00.0", vendorId: "10ec", classCode: "020000", isBridge: false };
 * const gpu = { address: "0000:04:00.0", vendorId: "1002", classCode: "030000", isBridge: false };
 * const { along, noCardAlone } = takenAlong([gpu, nic]);
 * assertEquals(along.get(nic.address), { reason: "network controller in another slot", by: [gpu.address] });
 * assertEquals(noCardAlone, true);
 * ```
 */
export function takenAlong(
  members: readonly Pick<
    PciDevice,
    "address" | "vendorId" | "classCode" | "rootBus" | "isBridge"
  >[],
): { along: Map<PciAddress, TakenAlong>; noCardAlone: boolean } {
  const endpoints = members.filter((d) => !d.isBridge && !behindVmd(d));
  // Each card by its first function, as a rule matching it would take it.
  const cards = new Map<string, PciAddress>();
  for (const d of endpoints) if (!cards.has(cardOf(d))) cards.set(cardOf(d), d.address);
  const along = new Map<PciAddress, TakenAlong>();
  const refused = new Set<string>();
  for (const d of endpoints) {
    const alone = { matchedCards: new Set([cardOf(d)]), hostUse: [] };
    // A platform function is the host's whoever is passed: hostCriticalOnItsOwn says so.
    if (hostCriticalReason(d, alone) !== null) continue;
    for (const [card, first] of cards) {
      if (card === cardOf(d)) continue;
      const reason = hostCriticalReason(d, { matchedCards: new Set([card]), hostUse: [] });
      if (reason === null) continue;
      refused.add(card);
      const entry = along.get(d.address) ?? { reason, by: [] };
      entry.by.push(first);
      along.set(d.address, entry);
    }
  }
  return { along, noCardAlone: cards.size > 1 && refused.size === cards.size };
}

/**
 * Why the host needs `device` where a domain names its address itself (a hand-added hostdev, an
 * interface, a hostdev network's entry), which `plan` judges for the definition it keeps and the
 * start guard at its start alike: as {@link hostCriticalOnItsOwn}, and a bridge, which no rule
 * passes and whose port driver (hot-plug, error reporting and power management of everything
 * behind it) libvirt would unbind at start.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const port = { address: "0000:01:00.0", vendorId: "8086", classCode: "060400", isBridge: true,
 *   virtfns: [] };
 * assertEquals(passedDeviceHostNeeds(port, []), "a PCI bridge, with the devices behind it");
 * assertEquals(passedDeviceHostNeeds({ ...port, classCode: "030000", isBridge: false }, []), null);
 * ```
 */
export function passedDeviceHostNeeds(
  device: Pick<
    PciDevice,
    "address" | "vendorId" | "classCode" | "rootBus" | "isBridge" | "virtfns"
  >,
  hostUse: readonly HostUse[] | null,
): string | null {
  if (device.isBridge) return "a PCI bridge, with the devices behind it";
  return hostCriticalOnItsOwn(device, { hostUse });
}
