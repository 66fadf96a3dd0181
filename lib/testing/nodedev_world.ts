/**
 * Turns a host description (the format of `tests/fixtures/hosts/*.json`) into a libvirt
 * test-driver world: a `<node>` document opened as `test:///ABS/PATH.xml`, with one `<device>`
 * per PCI function as libvirt's own node-device XML would show it, plus optional domains.
 *
 * What the world carries and what comes back through the test driver:
 * - address, vendor and device IDs, class, IOMMU group with all its members, NUMA node, SR-IOV
 *   `phys_function`/`virt_functions`, and `<capability type='pci-bridge'/>` for class 0x0604
 *   (real libvirt writes it for a type-1 header, which `host_tree.ts` gives those devices): kept.
 * - `<driver>`: written, but the test driver drops it (it treats the driver as runtime state), so
 *   every device reads back unbound. Identity rules that name a driver cannot be exercised over a
 *   test-driver world; tests that need the driver use a sysfs tree or a real libvirtd.
 * - subsystem IDs, revision, class name, FLR, serial, slot, `boot_vga`, modules: node-device XML
 *   has no place for them, so they are not written.
 * - `name` becomes the `<product>` text (the listings join vendor and device names); `<vendor>`
 *   is left empty. Bus topology is not in the descriptions: every device's parent is `computer`.
 *
 * @module
 */

import type { HostDescription } from "./host_tree.ts";
import { checkPhysfns, HostDescriptionError } from "./host_tree.ts";
import { canonicalPciAddress, comparePciAddress, pciAddressToLibvirt } from "../pci/address.ts";
import type { PciAddress } from "../host/types.ts";
import { escapeXmlAttribute } from "../domain/xml.ts";
import { headerTypeOfClass } from "../pci/class.ts";

/** Options of {@link nodeDeviceWorldXml}. */
export interface NodeDeviceWorldOptions {
  /** `<domain type='test'>` documents to put in the world as they are. */
  domains?: readonly string[];
}

/** The `computer` device's system UUID (the test driver refuses a world without one). */
const WORLD_UUID = "3b5b4b9e-5e7c-4d1a-9f3e-1c2d3e4f5a6b";

/** libvirt's node-device name for an address: `pci_0000_01_00_0`. */
export function nodeDeviceName(address: PciAddress): string {
  return `pci_${address.replace(/[:.]/g, "_")}`;
}

function hexId(text: string, bdf: string, field: string, width: number): string {
  const m = /^(?:0x)?([0-9a-f]+)$/i.exec(text.trim());
  const digits = (m?.[1] ?? "").toLowerCase().replace(/^0+(?=.)/, "");
  if (!m || digits.length > width) {
    throw new HostDescriptionError(`Invalid ${field} "${text}" for device "${bdf}"`, bdf);
  }
  return `0x${digits.padStart(width, "0")}`;
}

function addressXml(address: PciAddress, indent: string): string {
  const a = pciAddressToLibvirt(address);
  return `${indent}<address domain='${a.domain}' bus='${a.bus}' slot='${a.slot}' ` +
    `function='${a.function}'/>`;
}

/**
 * Builds the `<node>` document for `description`. Throws `HostDescriptionError` for a malformed
 * address, ID or class, a duplicate device, or a VF's `physfn` that names no PF of it.
 *
 * @example
 * ```ts
 * import { nodeDeviceWorldXml } from "./nodedev_world.ts";
 * const xml = nodeDeviceWorldXml({ devices: [{ bdf: "0000:01:00.0", group: 3,
 *   class: "0x030000", vendor: "0x10de", device: "0x1b80", subsystem_vendor: null,
 *   subsystem_device: null, driver: "nouveau", revision: null }] });
 * if (!xml.includes("<name>pci_0000_01_00_0</name>")) throw new Error("device missing");
 * ```
 */
export function nodeDeviceWorldXml(
  description: HostDescription,
  options: NodeDeviceWorldOptions = {},
): string {
  const addresses = new Map<PciAddress, HostDescription["devices"][number]>();
  for (const d of description.devices) {
    const address = canonicalPciAddress(d.bdf);
    if (address === null) throw new HostDescriptionError(`Invalid address "${d.bdf}"`, d.bdf);
    if (addresses.has(address)) {
      throw new HostDescriptionError(`Duplicate device "${address}"`, d.bdf);
    }
    addresses.set(address, d);
  }
  checkPhysfns(description);
  const sorted = [...addresses.keys()].sort(comparePciAddress);
  const membersOf = new Map<number, PciAddress[]>();
  const vfsOf = new Map<PciAddress, PciAddress[]>();
  const physfnOf = new Map<PciAddress, PciAddress>();
  for (const address of sorted) {
    const d = addresses.get(address)!;
    if (d.group !== null) membersOf.set(d.group, [...(membersOf.get(d.group) ?? []), address]);
    if (d.physfn != null) {
      const pf = canonicalPciAddress(d.physfn)!; // checkPhysfns
      physfnOf.set(address, pf);
      vfsOf.set(pf, [...(vfsOf.get(pf) ?? []), address]);
    }
  }
  const devices = sorted.map((address) => {
    const d = addresses.get(address)!;
    const parts = address.split(/[:.]/).map((p) => parseInt(p, 16));
    const classCode = hexId(d.class, d.bdf, "class", 6);
    const lines = [
      "  <device>",
      `    <name>${nodeDeviceName(address)}</name>`,
      "    <parent>computer</parent>",
    ];
    if (d.driver != null) {
      lines.push(
        `    <driver>`,
        `      <name>${escapeXmlAttribute(d.driver)}</name>`,
        `    </driver>`,
      );
    }
    const product = d.name == null ? "" : escapeXmlAttribute(d.name);
    lines.push(
      "    <capability type='pci'>",
      `      <class>${classCode}</class>`,
      `      <domain>${parts[0]}</domain>`,
      `      <bus>${parts[1]}</bus>`,
      `      <slot>${parts[2]}</slot>`,
      `      <function>${parts[3]}</function>`,
      `      <product id='${hexId(d.device, d.bdf, "device", 4)}'>${product}</product>`,
      `      <vendor id='${hexId(d.vendor, d.bdf, "vendor", 4)}'/>`,
    );
    const pf = physfnOf.get(address);
    if (pf !== undefined) {
      lines.push(
        "      <capability type='phys_function'>",
        addressXml(pf, "        "),
        "      </capability>",
      );
    }
    const vfs = vfsOf.get(address);
    if (vfs !== undefined) {
      lines.push(
        `      <capability type='virt_functions' maxCount='${vfs.length}'>`,
        ...vfs.map((vf) => addressXml(vf, "        ")),
        "      </capability>",
      );
    }
    const header = headerTypeOfClass(Number(classCode));
    if (header === 1) lines.push("      <capability type='pci-bridge'/>");
    if (header === 2) lines.push("      <capability type='cardbus-bridge'/>");
    if (d.group !== null) {
      lines.push(
        `      <iommuGroup number='${d.group}'>`,
        ...(membersOf.get(d.group) ?? []).map((m) => addressXml(m, "        ")),
        "      </iommuGroup>",
      );
    }
    if (d.numa_node != null && d.numa_node >= 0) lines.push(`      <numa node='${d.numa_node}'/>`);
    lines.push("    </capability>", "  </device>");
    return lines.join("\n");
  });
  return [
    "<?xml version='1.0'?>",
    "<node>",
    "  <cpu>",
    "    <nodes>1</nodes>",
    "    <sockets>1</sockets>",
    "    <cores>8</cores>",
    "    <threads>2</threads>",
    "    <active>16</active>",
    "    <mhz>3600</mhz>",
    "    <model>x86_64</model>",
    "  </cpu>",
    "  <memory>33554432</memory>",
    ...(options.domains ?? []).map((domain) => `  ${domain.trim()}`),
    "  <device>",
    "    <name>computer</name>",
    "    <capability type='system'>",
    "      <hardware>",
    "        <vendor>Test</vendor>",
    "        <version>1</version>",
    "        <serial>0</serial>",
    `        <uuid>${WORLD_UUID}</uuid>`,
    "      </hardware>",
    "    </capability>",
    "  </device>",
    ...devices,
    "</node>",
    "",
  ].join("\n");
}
