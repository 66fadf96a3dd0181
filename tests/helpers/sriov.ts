/**
 * SR-IOV host descriptions for tests: a PF and its VFs, with the links the tree builder writes
 * (`physfn`, `virtfnN`, `sriov_numvfs`, `sriov_totalvfs`).
 *
 * @module
 */

import type { HostDeviceDescription } from "../../lib/testing/host_tree.ts";

const BLANK = { subsystem_vendor: "0x8086", subsystem_device: "0xa03c", revision: "0x01" };

/** An igb-style PF at `bus`:00.0 with `vfs` VFs (stride 2), each VF in its own IOMMU group. */
export function sriovNic(
  bus: string,
  vfs: number,
  extra: Partial<HostDeviceDescription> = {},
): HostDeviceDescription[] {
  const pf = `0000:${bus}:00.0`;
  return [
    {
      bdf: pf,
      group: 20,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x10c9",
      driver: "igb",
      serial: "00-1b-21-ff-ff-a0-b1-c2",
      ...BLANK,
      ...extra,
    },
    ...Array.from({ length: vfs }, (_, i): HostDeviceDescription => ({
      bdf: `0000:${bus}:1${Math.floor(i / 4)}.${(i % 4) * 2}`,
      group: 30 + i,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x10ca",
      driver: "igbvf",
      physfn: pf,
      ...BLANK,
    })),
  ];
}
