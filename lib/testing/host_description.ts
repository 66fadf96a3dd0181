/**
 * The shared host JSON format (one object per PCI function, transcribed from real machines'
 * IOMMU listings) turned into a {@link HostTopology}, without sysfs or lspci. Tests and the
 * planner's benchmark use it; discovery proper reads sysfs trees built from the same files.
 *
 * @module
 */

import { busOf, canonicalPciAddress, comparePciAddress } from "../pci/address.ts";
import type { HostTopology, PciDevice } from "../host/types.ts";
import { type HostDescription, rootBusesOf } from "./host_tree.ts";
import { groupDevices, parseGroupNumber } from "../host/iommu_groups.ts";
import { isBridgeClass } from "../pci/class.ts";

function hexId(text: string | null | undefined, width: number): string | null {
  if (text === null || text === undefined) return null;
  return text.replace(/^0x/i, "").toLowerCase().padStart(width, "0");
}

/**
 * Converts a host description into a topology. `iommu` is `absent` when no device has a group.
 * Throws `TypeError` on a malformed address or group number.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const host = topologyFromDescription({
 *   devices: [{
 *     bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x10DE", device: "0x1b80",
 *     subsystem_vendor: null, subsystem_device: null, driver: null, revision: null,
 *   }],
 * }, { source: "example" });
 * assertEquals(host.groups[0]?.devices[0]?.vendorId, "10de");
 * ```
 */
export function topologyFromDescription(
  description: HostDescription,
  options: { source: string },
): HostTopology {
  const rootBuses = rootBusesOf(description);
  const devices: PciDevice[] = description.devices.map((d) => {
    const address = canonicalPciAddress(d.bdf);
    if (address === null) {
      throw new TypeError(`Invalid PCI address in host description: "${d.bdf}"`);
    }
    if (d.group !== null && parseGroupNumber(String(d.group)) === null) {
      throw new TypeError(`Invalid IOMMU group in host description: ${d.group} for "${d.bdf}"`);
    }
    const classCode = hexId(d.class, 6)!;
    const name = d.name ?? null;
    return {
      address,
      vendorId: hexId(d.vendor, 4)!,
      deviceId: hexId(d.device, 4)!,
      subsystemVendorId: hexId(d.subsystem_vendor, 4),
      subsystemDeviceId: hexId(d.subsystem_device, 4),
      classCode,
      revision: hexId(d.revision, 2),
      // The listings give "Vendor Device" in one string; keep it whole as the device name.
      vendorName: null,
      deviceName: name,
      className: d.class_name ?? null,
      driver: d.driver ?? null,
      modules: d.modules ?? [],
      iommuGroup: d.group,
      numaNode: d.numa_node ?? null,
      physicalSlot: d.slot ?? null,
      isBridge: isBridgeClass(classCode),
      physfn: d.physfn ? canonicalPciAddress(d.physfn) : null,
      virtfns: [],
      bootVga: d.boot_vga ?? null,
      flr: d.flr ?? null,
      serial: d.serial ?? null,
      // What discovery reads from the tree built of it: only a listed root bus is known.
      ...(rootBuses.has(busOf(address)) ? { rootBus: true } : {}),
    };
  });
  devices.sort((a, b) => comparePciAddress(a.address, b.address));
  for (const device of devices) {
    if (device.physfn === null) continue;
    devices.find((d) => d.address === device.physfn)?.virtfns.push(device.address);
  }
  // The counts the tree builder writes (`sriov_numvfs`, `sriov_totalvfs`) and a PF's interface MAC,
  // as discovery reads them.
  const byAddress = new Map(devices.map((d) => [d.address, d]));
  for (const d of description.devices) {
    const device = byAddress.get(canonicalPciAddress(d.bdf)!)!;
    if (device.virtfns.length === 0 && d.sriov_totalvfs == null) continue;
    device.sriovTotalVfs = d.sriov_totalvfs ?? device.virtfns.length;
    device.sriovNumVfs = device.virtfns.length;
    if (d.net != null) device.macAddress = d.net.address.toLowerCase();
  }
  const groups = groupDevices(devices);
  return {
    source: options.source,
    iommu: groups.length > 0 ? "enabled" : "absent",
    devices,
    groups,
    // A description has one view of membership, so nothing to disagree with.
    groupInconsistencies: [],
    kernelCmdline: description.cmdline ?? null,
    hostUse: description.host_use ?? [],
  };
}
