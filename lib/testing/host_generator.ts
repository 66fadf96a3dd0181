/**
 * Deterministic synthetic hosts of any size for benchmarks: platform functions and a chipset
 * group with a bridge, then cards in rotation (GPU with its audio function, NVMe drive, SR-IOV
 * NIC with many virtual functions), each card behind its own root-port bridge. The same `functions`
 * count always yields the same description.
 *
 * @module
 */

import type { HostDescription, HostDeviceDescription } from "./host_tree.ts";

/** Options of {@link generateHost}. */
/**
 * A Samsung 144d:a808 NVMe controller at `bdf` in IOMMU group `group`, bound to `nvme`, with
 * `extra` fields over it.
 */
export function nvmeDescription(
  bdf: string,
  group: number,
  extra: Partial<HostDeviceDescription> = {},
): HostDeviceDescription {
  return {
    bdf,
    group,
    class: "0x010802",
    vendor: "0x144d",
    device: "0xa808",
    subsystem_vendor: "0x144d",
    subsystem_device: "0xa801",
    driver: "nvme",
    revision: "0x01",
    ...extra,
  };
}

export interface GenerateHostOptions {
  /** Virtual functions per SR-IOV NIC. Default 32. */
  vfsPerNic?: number;
}

/** Cards per PCI domain before the next domain starts (bus numbers run out). */
const CARDS_PER_DOMAIN = 200;

type Card = "gpu" | "nvme" | "nic";
const ROTATION: readonly Card[] = ["gpu", "nvme", "nic", "nvme", "gpu", "nvme"];

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, "0");
}

function address(domain: number, bus: number, slot: number, fn: number): string {
  return `${hex(domain, 4)}:${hex(bus, 2)}:${hex(slot, 2)}.${fn}`;
}

function serialOf(n: number): string {
  const h = hex(n, 8);
  return `00-1b-21-ff-${h.slice(0, 2)}-${h.slice(2, 4)}-${h.slice(4, 6)}-${h.slice(6, 8)}`;
}

/**
 * A host description with exactly `functions` PCI functions (at least 1).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const host = generateHost(256);
 * assertEquals(host.devices.length, 256);
 * assertEquals(generateHost(256), host);
 * ```
 */
export function generateHost(
  functions: number,
  options: GenerateHostOptions = {},
): HostDescription {
  if (!Number.isInteger(functions) || functions < 1) {
    throw new RangeError(`Invalid function count "${functions}": must be a positive integer`);
  }
  const vfsPerNic = options.vfsPerNic ?? 32;
  if (vfsPerNic > 240) throw new RangeError(`Invalid VF count "${vfsPerNic}": at most 240`);
  const devices: HostDeviceDescription[] = [];
  let group = 0;
  let serial = 1;
  const push = (
    d:
      & Omit<HostDeviceDescription, "subsystem_vendor" | "subsystem_device" | "revision">
      & Partial<HostDeviceDescription>,
  ) => {
    devices.push({ subsystem_vendor: null, subsystem_device: null, revision: "0x01", ...d });
  };
  // Platform: host bridge alone, then the chipset group (LPC, SATA, SMBus) and a chipset bridge
  // sharing a group with the USB controller behind it, as on consumer boards without ACS.
  push({
    bdf: "0000:00:00.0",
    group: group++,
    class: "0x060000",
    vendor: "0x8086",
    device: "0x3e30",
    driver: null,
  });
  const chipset = group++;
  push({
    bdf: "0000:00:1f.0",
    group: chipset,
    class: "0x060100",
    vendor: "0x8086",
    device: "0xa305",
    driver: null,
  });
  push({
    bdf: "0000:00:1f.2",
    group: chipset,
    class: "0x010601",
    vendor: "0x8086",
    device: "0xa352",
    driver: "ahci",
  });
  push({
    bdf: "0000:00:1f.4",
    group: chipset,
    class: "0x0c0500",
    vendor: "0x8086",
    device: "0xa323",
    driver: "i801_smbus",
  });
  const usb = group++;
  push({
    bdf: "0000:00:1e.0",
    group: usb,
    class: "0x060400",
    vendor: "0x8086",
    device: "0xa340",
    driver: "pcieport",
  });
  push({
    bdf: "0000:00:1e.1",
    group: usb,
    class: "0x0c0330",
    vendor: "0x8086",
    device: "0xa36d",
    driver: "xhci_hcd",
    flr: false,
  });
  for (let card = 0; devices.length < functions; card++) {
    const domain = Math.floor(card / CARDS_PER_DOMAIN);
    const k = card % CARDS_PER_DOMAIN;
    const bus = k + 1;
    const numa = card % 2;
    const slotName = `${domain}-${k + 1}`;
    // Root port on the domain's bus 0 (slots 1..25, 8 functions each), in its own group.
    push({
      bdf: address(domain, 0, 1 + Math.floor(k / 8), k % 8),
      group: group++,
      class: "0x060400",
      vendor: "0x8086",
      device: "0x1901",
      driver: "pcieport",
      numa_node: numa,
    });
    const kind = ROTATION[card % ROTATION.length]!;
    const g = group++;
    if (kind === "gpu") {
      const common = {
        group: g,
        vendor: "0x10de",
        subsystem_vendor: "0x1043",
        numa_node: numa,
        slot: slotName,
        flr: false,
      };
      push({
        ...common,
        bdf: address(domain, bus, 0, 0),
        class: "0x030000",
        device: "0x2684",
        subsystem_device: "0x889d",
        driver: card % 4 === 0 ? "vfio-pci" : "nouveau",
        boot_vga: card === 0,
      });
      push({
        ...common,
        bdf: address(domain, bus, 0, 1),
        class: "0x040300",
        device: "0x22ba",
        subsystem_device: "0x889d",
        driver: "snd_hda_intel",
      });
    } else if (kind === "nvme") {
      push(nvmeDescription(address(domain, bus, 0, 0), g, {
        numa_node: numa,
        slot: slotName,
        flr: true,
        serial: serialOf(serial++),
      }));
    } else {
      const pf = address(domain, bus, 0, 0);
      push({
        bdf: pf,
        group: g,
        class: "0x020000",
        vendor: "0x8086",
        device: "0x1572",
        subsystem_vendor: "0x8086",
        subsystem_device: "0x0007",
        driver: "i40e",
        numa_node: numa,
        slot: slotName,
        flr: true,
        serial: serialOf(serial++),
      });
      // Virtual functions sit behind ACS: one group each.
      for (let vf = 0; vf < vfsPerNic; vf++) {
        push({
          bdf: address(domain, bus, 2 + Math.floor(vf / 8), vf % 8),
          group: group++,
          class: "0x020000",
          vendor: "0x8086",
          device: "0x154c",
          subsystem_vendor: "0x8086",
          subsystem_device: "0x0000",
          driver: "iavf",
          numa_node: numa,
          flr: true,
          physfn: pf,
        });
      }
    }
  }
  devices.length = functions;
  return {
    source: `generated: ${functions} functions, ${vfsPerNic} VFs per NIC`,
    partial: false,
    notes: "Synthetic host from lib/testing/host_generator.ts for benchmarks",
    cmdline: "BOOT_IMAGE=/vmlinuz root=/dev/nvme0n1p2 intel_iommu=on iommu=pt",
    devices,
  };
}
