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

/**
 * The two ports of one card at 07:00.0 and 07:00.1, alike (the same IDs, and `serial` for both:
 * one card's), with `vfs0` and `vfs1` VFs laid out after them with a stride of 1 (07:00.2, ...),
 * port 0's first: where the VFs are made again with other counts, an address can move from one
 * port's VFs to the other's.
 */
export function dualPortNic(
  vfs0: number,
  vfs1: number,
  serial: string | null,
): HostDeviceDescription[] {
  const port = (f: number): HostDeviceDescription => ({
    bdf: `0000:07:00.${f}`,
    group: 20 + f,
    class: "0x020000",
    vendor: "0x8086",
    device: "0x10c9",
    driver: "igb",
    serial,
    sriov_totalvfs: 4,
    ...BLANK,
  });
  const owners = [...Array(vfs0).fill(0), ...Array(vfs1).fill(1)];
  return [
    port(0),
    port(1),
    ...owners.map((owner, i): HostDeviceDescription => ({
      bdf: `0000:07:00.${2 + i}`,
      group: 30 + i,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x10ca",
      driver: "igbvf",
      physfn: `0000:07:00.${owner}`,
      ...BLANK,
    })),
  ];
}
