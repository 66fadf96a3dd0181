/**
 * IOMMU groups from a device list: the one grouping every discovery source (sysfs, libvirt's
 * node devices, host descriptions) shares, so their topologies compare equal.
 *
 * @module
 */

import type { IommuGroup, PciDevice } from "./types.ts";

/**
 * The devices' IOMMU groups in ascending group order, members in the order given; devices with
 * no group (`iommuGroup: null`) are in none.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import type { PciDevice } from "./types.ts";
 * const a = { address: "0000:01:00.0", iommuGroup: 7 } as PciDevice;
 * const b = { address: "0000:00:1f.0", iommuGroup: 2 } as PciDevice;
 * const c = { address: "0000:00:00.0", iommuGroup: null } as PciDevice;
 * assertEquals(groupDevices([a, b, c]), [{ group: 2, devices: [b] }, { group: 7, devices: [a] }]);
 * ```
 */
export function groupDevices(devices: readonly PciDevice[]): IommuGroup[] {
  const byGroup = new Map<number, PciDevice[]>();
  for (const device of devices) {
    if (device.iommuGroup === null) continue;
    const members = byGroup.get(device.iommuGroup) ?? [];
    members.push(device);
    byGroup.set(device.iommuGroup, members);
  }
  return [...byGroup.entries()].sort(([a], [b]) => a - b).map(([group, members]) => ({
    group,
    devices: members,
  }));
}
