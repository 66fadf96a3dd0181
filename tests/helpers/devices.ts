/**
 * Stock device records for tests that need "some device" rather than a captured host: a recorded
 * GPU identity (what apply stores per hostdev), a network card's host-tree description, and an
 * NVMe disk's domain XML.
 *
 * @module
 */

import type { HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import type { DeviceIdentity } from "../../lib/plan/types.ts";

/**
 * The recorded identity of an NVIDIA 10de:2684 GPU at `address` with no subsystem IDs or serial,
 * bound to `nouveau` and owned by rule `gpu` unless `options` say otherwise.
 */
export function gpuIdentity(
  address: string,
  options: { driver?: string | null; rule?: string } = {},
): DeviceIdentity {
  return {
    address,
    vendorId: "10de",
    deviceId: "2684",
    subsystemVendorId: null,
    subsystemDeviceId: null,
    classCode: "030000",
    serial: null,
    driver: options.driver === undefined ? "nouveau" : options.driver,
    rule: options.rule ?? "gpu",
  };
}

/** A Mellanox ConnectX-4 Lx (15b3:1015) in IOMMU group 1 at `bdf`, with `extra` fields over it. */
export function nicDescription(
  bdf: string,
  extra: Partial<HostDeviceDescription> = {},
): HostDeviceDescription {
  return {
    bdf,
    group: 1,
    class: "0x020000",
    vendor: "0x15b3",
    device: "0x1015",
    subsystem_vendor: "0x15b3",
    subsystem_device: "0x0003",
    driver: "mlx5_core",
    revision: "0x00",
    ...extra,
  };
}

/** A `<disk type='nvme'>` on the controller at host bus `bus` (hex, `4a`), guest disk `target`. */
export function nvmeDiskXml(bus: string, target: string): string {
  return `<disk type='nvme' device='disk'>
      <driver name='qemu' type='raw'/>
      <source type='pci' managed='yes' namespace='1'>
        <address domain='0x0000' bus='0x${bus}' slot='0x00' function='0x0'/>
      </source>
      <target dev='${target}' bus='virtio'/>
    </disk>`;
}
