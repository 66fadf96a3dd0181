/**
 * The host devices a domain uses without passing a PCI function through: block disks by their
 * `/dev` path (`<disk type='block'>`, block backing stores, mirrors, data stores), USB devices
 * (`<hostdev type='usb'>`) and network interfaces (`<interface type='direct'>` on a NIC,
 * `<interface type='bridge'>` on a bridge whose ports are NICs). Each hangs under a PCI
 * controller, and a rule that passes that controller to a guest takes the device from under the
 * domain: from another VM, or from the VM itself (its start would detach the controller, and the
 * device with it). Pure: the host is read through {@link DeviceResolvers}.
 *
 * @module
 */

import { scanPassedDevicesLeniently } from "../domain/lenient.ts";
import { describeUsbSource, sameUsbDevice, type UsbSource } from "../domain/usb_source.ts";
import type { PciAddress } from "../host/types.ts";
import type { DefinitionRead } from "./world.ts";

/**
 * Which PCI controllers are under a host device, as the live host says
 * (`HostFacts` is one); `null` when the host cannot say (a captured tree).
 */
export interface DeviceResolvers {
  /** The controllers under the block device at `path`; throws when the path cannot be read. */
  blockDeviceControllers(path: string): PciAddress[] | null;
  /** The controllers under the USB devices a USB hostdev's source names. */
  usbDeviceControllers(source: UsbSource): PciAddress[] | null;
  /** The NICs under a host network interface (a bridge's or bond's ports); absent: not resolved. */
  netDeviceControllers?(name: string): PciAddress[] | null;
}

/**
 * Marks what a running guest uses beyond its persistent definition (`disk /dev/sdc (attached to
 * the running guest only)`): `virsh edit` cannot take that out of it.
 */
export const RUNNING_ONLY = " (attached to the running guest only)";

/** The host devices one definition uses. */
export interface UsedDevices {
  /** `/dev` paths of its block disks. */
  blockDisks: string[];
  /** Sources of its USB hostdevs. */
  usbDevices: UsbSource[];
  /** The host network interfaces of its `direct` and `bridge` interfaces. */
  netDevices: string[];
}

/**
 * The host devices a definition uses, read strictly or, when the strict reader refuses it,
 * leniently; none when it could not be read.
 */
export function usedDevicesIn(read: DefinitionRead): UsedDevices {
  if (read.kind === "parsed") {
    const { blockDisks, usbDevices, netDevices } = read.domain;
    return { blockDisks, usbDevices, netDevices };
  }
  if (read.kind === "unreadable") {
    const { blockDisks, usbDevices, netDevices } = scanPassedDevicesLeniently(read.xml);
    return { blockDisks, usbDevices, netDevices };
  }
  return { blockDisks: [], usbDevices: [], netDevices: [] };
}

/**
 * What a running guest uses (`live`) beyond its persistent definition (`defined`): libvirt fills
 * in the bus and device number of a USB source given by IDs, and that is still the same device.
 */
export function runningOnly(defined: UsedDevices, live: UsedDevices): UsedDevices {
  return {
    blockDisks: live.blockDisks.filter((path) => !defined.blockDisks.includes(path)),
    usbDevices: live.usbDevices.filter((source) =>
      !defined.usbDevices.some((d) => sameUsbDevice(d, source))
    ),
    netDevices: live.netDevices.filter((name) => !defined.netDevices.includes(name)),
  };
}

/**
 * The PCI controllers under the host devices in `used`, each with what it holds (`disk
 * /dev/sdb`, `USB device 046d:c52b`, `network interface br0`, followed by `mark`). A block disk
 * whose path cannot be read counts no controller and is passed to `unreadable`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const used = {
 *   blockDisks: ["/dev/sdb"],
 *   usbDevices: [{ vendorId: "046d", productId: "c52b", bus: null, device: null }],
 *   netDevices: [],
 * };
 * const resolvers = {
 *   blockDeviceControllers: () => ["0000:00:17.0"],
 *   usbDeviceControllers: () => ["0000:00:14.0"],
 * };
 * assertEquals(controllersUnder([used], resolvers, () => {}), new Map([
 *   ["0000:00:17.0", ["disk /dev/sdb"]],
 *   ["0000:00:14.0", ["USB device 046d:c52b"]],
 * ]));
 * ```
 */
export function controllersUnder(
  used: readonly UsedDevices[],
  resolvers: DeviceResolvers | undefined,
  unreadable: (path: string, error: unknown) => void,
  mark = "",
): Map<PciAddress, string[]> {
  const controllers = new Map<PciAddress, string[]>();
  if (resolvers === undefined) return controllers;
  const add = (addresses: readonly PciAddress[] | null, what: string) => {
    for (const address of new Set(addresses ?? [])) {
      const held = controllers.get(address) ?? [];
      if (!held.includes(what + mark)) controllers.set(address, [...held, what + mark]);
    }
  };
  for (const path of new Set(used.flatMap((u) => u.blockDisks))) {
    try {
      add(resolvers.blockDeviceControllers(path), `disk ${path}`);
    } catch (error) {
      unreadable(path, error);
    }
  }
  for (const source of used.flatMap((u) => u.usbDevices)) {
    add(resolvers.usbDeviceControllers(source), describeUsbSource(source));
  }
  for (const name of new Set(used.flatMap((u) => u.netDevices))) {
    add(resolvers.netDeviceControllers?.(name) ?? null, `network interface ${name}`);
  }
  return controllers;
}
