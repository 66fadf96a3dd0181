/**
 * The host devices a domain uses without passing a PCI function through: block disks by their
 * `/dev` path (`<disk type='block'>`, block backing stores, mirrors, data stores) and USB devices
 * (`<hostdev type='usb'>`). Each hangs under a PCI controller, and a rule that passes that
 * controller to a guest takes the device from under the domain: from another VM, or from the VM
 * itself (its start would detach the controller, and the device with it). Pure: the host is read
 * through {@link DeviceResolvers}.
 *
 * @module
 */

import { scanPassedDevicesLeniently } from "../domain/lenient.ts";
import { describeUsbSource, type UsbSource } from "../domain/usb_source.ts";
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
}

/**
 * The host devices a definition uses, read strictly or, when the strict reader refuses it,
 * leniently; none when it could not be read.
 */
export function usedDevicesIn(read: DefinitionRead): UsedDevices {
  if (read.kind === "parsed") {
    return { blockDisks: read.domain.blockDisks, usbDevices: read.domain.usbDevices };
  }
  if (read.kind === "unreadable") {
    const { blockDisks, usbDevices } = scanPassedDevicesLeniently(read.xml);
    return { blockDisks, usbDevices };
  }
  return { blockDisks: [], usbDevices: [] };
}

/**
 * The PCI controllers under the host devices `reads` use (a domain's persistent and running
 * definitions), each with what it holds (`disk /dev/sdb`, `USB device 046d:c52b`). A block disk
 * whose path cannot be read counts no controller and is passed to `unreadable`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { readDefinition } from "./world.ts";
 * const read = readDefinition(`<domain><name>nas</name><devices>
 *   <disk type='block'><source dev='/dev/sdb'/><target dev='vdb'/></disk>
 *   <hostdev mode='subsystem' type='usb'><source><vendor id='0x046d'/><product id='0xc52b'/>
 *   </source></hostdev></devices></domain>`);
 * const resolvers = {
 *   blockDeviceControllers: () => ["0000:00:17.0"],
 *   usbDeviceControllers: () => ["0000:00:14.0"],
 * };
 * assertEquals(controllersUnder([read], resolvers, () => {}), new Map([
 *   ["0000:00:17.0", ["disk /dev/sdb"]],
 *   ["0000:00:14.0", ["USB device 046d:c52b"]],
 * ]));
 * ```
 */
export function controllersUnder(
  reads: readonly (DefinitionRead | null)[],
  resolvers: DeviceResolvers | undefined,
  unreadable: (path: string, error: unknown) => void,
): Map<PciAddress, string[]> {
  const controllers = new Map<PciAddress, string[]>();
  if (resolvers === undefined) return controllers;
  const add = (addresses: readonly PciAddress[] | null, what: string) => {
    for (const address of new Set(addresses ?? [])) {
      const held = controllers.get(address) ?? [];
      if (!held.includes(what)) controllers.set(address, [...held, what]);
    }
  };
  const used = reads.flatMap((read) => read === null ? [] : [usedDevicesIn(read)]);
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
  return controllers;
}
