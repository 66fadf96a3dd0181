/**
 * `<interface type='hostdev'>`: an SR-IOV virtual function passed as a guest NIC, which libvirt
 * gives a MAC and VLAN through the PF before the guest starts (a plain `<hostdev>` VF gets a new
 * random MAC at every start). Reading one, writing one, and the metadata record that says which
 * VF of which PF it is. `lib/domain/domain_xml.ts` locates and splices them like hostdevs.
 *
 * @module
 */

import type { PciAddress } from "../host/types.ts";
import type { DeviceIdentity, HostdevSpec, VfIdentity } from "../plan/types.ts";
import { canonicalPciAddress, pciAddressFromLibvirt, pciAddressToLibvirt } from "../pci/address.ts";
import {
  asText,
  attributeProperty,
  elementProperty,
  type GuestPciAddress,
  guestPciAddress,
  onOff,
  readProperties,
  unsignedDecimal,
  yesNo,
} from "./properties.ts";
import { escapeXmlAttribute, type XmlElement } from "./xml.ts";
import { canonicalMac, RECORD_ATTRIBUTES, VF_RECORD_ATTRIBUTES, vfRecordFrom } from "./lenient.ts";

/** One `<interface type='hostdev'>` with a PCI source. */
export interface DomainInterface {
  /** Host source address (`source/address`), canonical: the VF. */
  address: PciAddress;
  /** Listed in our metadata (`<passthrough:interface>`); hand-written ones are `false`. */
  owned: boolean;
  /** `managed='yes'`. */
  managed: boolean;
  /** `<mac address>`, lower case, or `null` when absent. */
  mac: string | null;
  /** `<vlan>`: its tags and trunk flag, or `null` when absent. */
  vlan: { tags: number[]; trunk: boolean } | null;
  /** `<boot order>`, or `null`. */
  bootOrder: number | null;
  /** `<rom bar>` (`on` or `off`), or `null`. */
  romBar: "on" | "off" | null;
  /** `<rom file>`, decoded, or `null`. */
  romFile: string | null;
  /** Where the guest sees it (`<address type='pci'>` after `<source>`); `null`: libvirt chooses. */
  guestAddress: GuestPciAddress | null;
  /** The element's exact original text. */
  xml: string;
}

const INTERFACE_PROPERTIES = {
  managed: attributeProperty("@managed", yesNo),
  mac: attributeProperty("mac/@address", (text) => text.trim().toLowerCase()),
  bootOrder: attributeProperty("boot/@order", unsignedDecimal),
  romBar: attributeProperty("rom/@bar", onOff),
  romFile: attributeProperty("rom/@file", asText),
  guestAddress: elementProperty("address", guestPciAddress),
};

/** The `<vlan>` of an interface element, or `null`. */
function vlanOf(element: XmlElement): { tags: number[]; trunk: boolean } | null {
  const vlan = element.children.find((c) => c.name === "vlan");
  if (vlan === undefined) return null;
  const tags = vlan.children.filter((c) => c.name === "tag")
    .map((c) => unsignedDecimal(c.attributes.id ?? ""))
    .filter((t): t is number => t !== null);
  return { tags, trunk: vlan.attributes.trunk === "yes" || tags.length > 1 };
}

/**
 * An `<interface type='hostdev'>` element read, or `null` when its source is not a PCI address
 * (a USB hostdev NIC, or none). `owned`: the VF addresses our records list.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { readXmlElement } from "./xml.ts";
 * const element = readXmlElement(`<interface type='hostdev' managed='yes'>
 *   <mac address='52:54:00:AB:CD:EF'/>
 *   <source><address type='pci' domain='0x0000' bus='0x07' slot='0x10' function='0x1'/></source>
 *   <vlan><tag id='20'/></vlan>
 * </interface>`);
 * const read = readInterface(element, "", new Set());
 * assertEquals([read?.address, read?.mac, read?.vlan], ["0000:07:10.1", "52:54:00:ab:cd:ef", {
 *   tags: [20], trunk: false,
 * }]);
 * ```
 */
export function readInterface(
  element: XmlElement,
  xml: string,
  owned: ReadonlySet<PciAddress>,
): DomainInterface | null {
  const source = element.children.find((c) => c.name === "source");
  const address = source?.children.find((c) => c.name === "address");
  if (address === undefined || (address.attributes.type ?? "pci") !== "pci") return null;
  const canonical = pciAddressFromLibvirt(address.attributes);
  if (canonical === null) return null;
  const { managed, mac, bootOrder, romBar, romFile, guestAddress } = readProperties(
    element,
    INTERFACE_PROPERTIES,
  );
  return {
    address: canonical,
    owned: owned.has(canonical),
    managed: managed ?? false,
    mac,
    vlan: vlanOf(element),
    bootOrder,
    romBar,
    romFile,
    guestAddress,
    xml,
  };
}

/** Lines of one `<interface type='hostdev'>` in libvirt's style, from a spec with `interface`. */
export function interfaceLines(spec: HostdevSpec): string[] {
  const address = canonicalPciAddress(spec.address);
  if (address === null) throw new TypeError(`Not a PCI address: "${spec.address}"`);
  const nic = spec.interface;
  if (nic === undefined) throw new TypeError(`Not an interface: "${spec.address}"`);
  if (canonicalMac(nic.mac) !== nic.mac) {
    throw new TypeError(`Not a MAC address: "${nic.mac}"`);
  }
  const a = pciAddressToLibvirt(address);
  const lines = [
    `<interface type='hostdev' managed='${spec.managed ? "yes" : "no"}'>`,
    `  <mac address='${nic.mac}'/>`,
    `  <source>`,
    `    <address type='pci' domain='${a.domain}' bus='${a.bus}' slot='${a.slot}' function='${a.function}'/>`,
    `  </source>`,
  ];
  if (nic.vlan !== undefined && nic.vlan.tags.length > 0) {
    const tags = nic.vlan.tags.map((t) => {
      if (!Number.isInteger(t) || t < 0 || t > 4095) throw new RangeError(`Not a VLAN ID: "${t}"`);
      return `    <tag id='${t}'/>`;
    });
    lines.push(nic.vlan.trunk ? `  <vlan trunk='yes'>` : `  <vlan>`, ...tags, `  </vlan>`);
  }
  lines.push(...bootAndRomLines(spec));
  lines.push(`</interface>`);
  return lines;
}

/**
 * The `<boot>` and `<rom>` lines of a `<hostdev>` or an `<interface type='hostdev'>` (libvirt
 * formats device info in this order: boot, alias, rom, address). Throws `RangeError` for a boot
 * order that is not a positive integer.
 */
export function bootAndRomLines(spec: Pick<HostdevSpec, "bootOrder" | "rom">): string[] {
  const lines: string[] = [];
  if (spec.bootOrder !== undefined) {
    if (!Number.isInteger(spec.bootOrder) || spec.bootOrder < 1) {
      throw new RangeError(`Boot order must be a positive integer: "${spec.bootOrder}"`);
    }
    lines.push(`  <boot order='${spec.bootOrder}'/>`);
  }
  if (spec.rom !== undefined && (spec.rom.bar !== undefined || spec.rom.file !== undefined)) {
    const bar = spec.rom.bar === undefined ? "" : ` bar='${spec.rom.bar}'`;
    const file = spec.rom.file === undefined ? "" : ` file='${escapeXmlAttribute(spec.rom.file)}'`;
    lines.push(`  <rom${bar}${file}/>`);
  }
  return lines;
}

/** The attributes of a `<passthrough:interface>` record beyond the PF's identity. */
const VF_ATTRIBUTES = VF_RECORD_ATTRIBUTES;

/** The PF's identity attributes of a `<passthrough:interface>` record. */
const PF_ATTRIBUTES = {
  ...RECORD_ATTRIBUTES,
  address: VF_RECORD_ATTRIBUTES.pfAddress,
} as const satisfies Record<keyof DeviceIdentity, string>;

/**
 * A `<passthrough:interface>` record from its attributes (as the shared {@link vfRecordFrom}
 * reads it); `fail` builds the error for a missing or malformed one.
 */
export function readVfRecord(
  attributes: Readonly<Record<string, string>>,
  fail: (why: string) => Error,
): VfIdentity {
  const record = vfRecordFrom(new Map(Object.entries(attributes)));
  if (typeof record === "string") throw fail(`Passthrough ${record.replace(/^an? /, "")}`);
  return record;
}

/** The attributes of a `<passthrough:interface>` record, in a stable order. */
export function vfRecordAttributes(record: VfIdentity): string {
  let attrs =
    ` ${VF_ATTRIBUTES.address}='${record.address}' ${VF_ATTRIBUTES.index}='${record.index}'` +
    ` ${VF_ATTRIBUTES.mac}='${escapeXmlAttribute(record.mac)}'`;
  for (const [key, name] of Object.entries(PF_ATTRIBUTES)) {
    const value = record.pf[key as keyof DeviceIdentity];
    if (value !== null && value !== undefined) attrs += ` ${name}='${escapeXmlAttribute(value)}'`;
  }
  return attrs;
}
