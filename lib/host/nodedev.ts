/**
 * Host discovery through libvirt's node-device API: the `<device>` XML of every PCI node device
 * turned into the same {@link HostTopology} that sysfs discovery produces, so the two sources can
 * be compared on one host (see `source_compare.ts`).
 *
 * What the node-device XML does not carry stays `null` (or empty): subsystem IDs, revision, class
 * name, kernel modules, physical slot, `boot_vga`, FLR, the PCIe Device Serial Number, the kernel
 * command line and what the host is using. libvirt's test driver also drops `<driver>`, so over a
 * test-driver world every device reads as unbound.
 *
 * The pointer side lives in `ffi/nodedev_source.ts`; this module only sees XML strings.
 *
 * @module
 */

import type { GroupInconsistency, HostTopology, PciAddress, PciDevice } from "./types.ts";
import { comparePciAddress, pciAddressFromLibvirt } from "../pci/address.ts";
import { checkWellFormed, readXmlElement, type XmlElement } from "../domain/xml.ts";
import { groupDevices, parseGroupNumber } from "./iommu_groups.ts";
import { isBridgeClass } from "../pci/class.ts";

/** Where node-device XML comes from: a libvirt connection, or anything that behaves like one. */
export interface NodeDeviceSource {
  /** The libvirt URI, recorded as the topology's `source`. */
  readonly uri: string;
  /** The `virNodeDeviceGetXMLDesc` text of every node device with the PCI capability. */
  listPciNodeDeviceXml(): string[];
}

/** One node device's XML that cannot be read as a PCI device. */
export class NodeDeviceXmlError extends SyntaxError {
  /** The error's name. */
  override name = "NodeDeviceXmlError";
  /** The device's `<name>` (`pci_0000_01_00_0`), or `null` when it has none. */
  readonly device: string | null;
  /** Index of the XML string in the input list. */
  readonly index: number;
  /** Builds the error; `detail` follows the device in the message. */
  constructor(detail: string, where: { device: string | null; index: number }, cause?: unknown) {
    super(
      `Cannot read node device ${
        where.device === null ? `#${where.index}` : `"${where.device}"`
      }: ${detail}`,
      cause === undefined ? undefined : { cause },
    );
    this.device = where.device;
    this.index = where.index;
  }
}

/** Options of {@link topologyFromNodeDevices}. */
export interface NodeDeviceTopologyOptions {
  /** Recorded as the topology's `source`: the libvirt URI the XML came from. */
  source: string;
}

function child(element: XmlElement, name: string): XmlElement | undefined {
  return element.children.find((c) => c.name === name);
}

function capabilities(element: XmlElement, type: string): XmlElement[] {
  return element.children.filter((c) => c.name === "capability" && c.attributes.type === type);
}

/** A device read from one XML string, plus the group membership it claims. */
interface ParsedNodeDevice {
  device: PciDevice;
  /** The libvirt name, for messages. */
  name: string;
  /** The addresses in its `<iommuGroup>`, sorted; `null` without the element. */
  groupMembers: PciAddress[] | null;
}

/** Throws the error for a device's XML that says what is wrong: `detail`. */
type Fail = (detail: string) => never;

function parseNodeDevice(xml: string, index: number): ParsedNodeDevice | null {
  let root: XmlElement;
  try {
    checkWellFormed(xml);
    root = readXmlElement(xml);
  } catch (error) {
    throw new NodeDeviceXmlError((error as Error).message, { device: null, index }, error);
  }
  const name = child(root, "name")?.text.trim() ?? null;
  const fail: Fail = (detail) => {
    throw new NodeDeviceXmlError(detail, { device: name, index });
  };
  if (root.name !== "device") fail(`expected a <device> element, got <${root.name}>`);
  const pci = capabilities(root, "pci")[0];
  // The API may hand over non-PCI devices (the `computer` root) when listed without a filter.
  if (pci === undefined) return null;
  const address = addressOf(pci, fail);
  const { vendorId, deviceId, classCode } = idsOf(pci, fail);
  const group = iommuGroupOf(pci, fail);
  const { physfn, virtfns, sriov } = sriovOf(pci, fail);
  const numaText = child(pci, "numa")?.attributes.node;
  const numa = numaText === undefined ? NaN : Number(numaText);
  const driverElement = child(root, "driver");
  const label = (tag: string): string | null => {
    const text = child(pci, tag)?.text.trim() ?? "";
    return text === "" ? null : text;
  };
  return {
    name: name ?? `#${index}`,
    groupMembers: group.members,
    device: {
      address,
      vendorId,
      deviceId,
      // libvirt does not report subsystem IDs or the revision in node-device XML.
      subsystemVendorId: null,
      subsystemDeviceId: null,
      classCode,
      revision: null,
      vendorName: label("vendor"),
      deviceName: label("product"),
      className: null,
      driver: driverElement === undefined
        ? null
        : (child(driverElement, "name")?.text.trim() || null),
      modules: [],
      iommuGroup: group.number,
      numaNode: Number.isInteger(numa) && numa >= 0 ? numa : null,
      physicalSlot: null,
      // libvirt writes <capability type='pci-bridge'/> for a type-1 header and 'cardbus-bridge'
      // for a type-2 one, as sysfs discovery checks the header beside the class code.
      isBridge: isBridgeClass(classCode) || capabilities(pci, "pci-bridge").length > 0 ||
        capabilities(pci, "cardbus-bridge").length > 0,
      physfn,
      virtfns,
      ...sriov,
      bootVga: null,
      flr: null,
      serial: null,
    },
  };
}

/** The PCI capability's address. */
function addressOf(pci: XmlElement, fail: Fail): PciAddress {
  const number = (tag: string): string => {
    const text = child(pci, tag)?.text.trim();
    if (text === undefined || text === "") return fail(`no <${tag}> in the PCI capability`);
    return text;
  };
  const address = pciAddressFromLibvirt({
    domain: number("domain"),
    bus: number("bus"),
    slot: number("slot"),
    function: number("function"),
  });
  return address ?? fail("the PCI address is out of range");
}

/** The vendor and device IDs (four hex digits each) and the class code (six; none: `000000`). */
function idsOf(
  pci: XmlElement,
  fail: Fail,
): { vendorId: string; deviceId: string; classCode: string } {
  const id = (tag: string): string => {
    const value = child(pci, tag)?.attributes.id;
    const m = value === undefined ? null : /^0x([0-9a-f]{1,4})$/i.exec(value.trim());
    if (!m) return fail(`bad or missing <${tag} id>: "${value ?? ""}"`);
    return (m[1] ?? "").toLowerCase().padStart(4, "0");
  };
  const vendorId = id("vendor");
  const deviceId = id("product");
  const classText = child(pci, "class")?.text.trim();
  if (classText === undefined) return { vendorId, deviceId, classCode: "000000" };
  const m = /^0x([0-9a-f]{6})$/i.exec(classText);
  if (!m) return fail(`bad <class>: "${classText}"`);
  return { vendorId, deviceId, classCode: (m[1] ?? "").toLowerCase() };
}

/** The sorted addresses listed in `element`. */
function addressesIn(element: XmlElement, fail: Fail): PciAddress[] {
  return element.children.filter((c) => c.name === "address").map((a) =>
    pciAddressFromLibvirt(a.attributes) ?? fail(`bad <address> in <${element.name}>`)
  ).sort(comparePciAddress);
}

/** The `<iommuGroup>`'s number and members; both `null` without the element. */
function iommuGroupOf(
  pci: XmlElement,
  fail: Fail,
): { number: number | null; members: PciAddress[] | null } {
  const element = child(pci, "iommuGroup");
  if (element === undefined) return { number: null, members: null };
  const text = element.attributes.number ?? "";
  return {
    number: parseGroupNumber(text) ?? fail(`bad <iommuGroup number>: "${text}"`),
    members: addressesIn(element, fail),
  };
}

/** A VF's PF, a PF's enabled VFs, and (for a PF) their count and `sriov_totalvfs`. */
function sriovOf(pci: XmlElement, fail: Fail): {
  physfn: PciAddress | null;
  virtfns: PciAddress[];
  sriov: { sriovNumVfs?: number; sriovTotalVfs?: number };
} {
  const physfnCap = capabilities(pci, "phys_function")[0];
  const physfn = physfnCap === undefined ? null : (addressesIn(physfnCap, fail)[0] ?? null);
  const vfCap = capabilities(pci, "virt_functions")[0];
  if (vfCap === undefined) return { physfn, virtfns: [], sriov: {} };
  const virtfns = addressesIn(vfCap, fail);
  // libvirt lists a PF's enabled VFs and, as maxCount, sriov_totalvfs.
  const maxVfs = Number(vfCap.attributes.maxCount ?? NaN);
  return {
    physfn,
    virtfns,
    sriov: {
      sriovNumVfs: virtfns.length,
      ...(Number.isInteger(maxVfs) && maxVfs >= 0 && maxVfs <= 0xffff
        ? { sriovTotalVfs: maxVfs }
        : {}),
    },
  };
}

/**
 * Turns the XML of libvirt's PCI node devices into a {@link HostTopology}. Devices without a PCI
 * capability are skipped. Throws {@link NodeDeviceXmlError} for unreadable XML or a duplicate
 * address. `<iommuGroup>` elements that disagree (a device missing from its own group, two devices
 * of one group listing different members, a member the list does not contain, as while libvirt
 * has not yet seen a new VF) are the topology's `groupInconsistencies`, as sysfs discovery
 * reports its own: planning refuses the devices concerned, and `sources` shows them.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const host = topologyFromNodeDevices([`<device><name>pci_0000_01_00_0</name>
 *   <capability type='pci'><class>0x030000</class><domain>0</domain><bus>1</bus><slot>0</slot>
 *   <function>0</function><product id='0x2684'/><vendor id='0x10de'>NVIDIA</vendor>
 *   <iommuGroup number='12'><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
 *   </iommuGroup></capability></device>`], { source: "test:///default" });
 * assertEquals(host.groups.map((g) => [g.group, g.devices[0]?.address]), [[12, "0000:01:00.0"]]);
 * assertEquals(host.devices[0]?.subsystemVendorId, null);
 * ```
 */
export function topologyFromNodeDevices(
  xmls: readonly string[],
  options: NodeDeviceTopologyOptions,
): HostTopology {
  const parsed: ParsedNodeDevice[] = [];
  const byAddress = new Map<PciAddress, ParsedNodeDevice>();
  xmls.forEach((xml, index) => {
    const one = parseNodeDevice(xml, index);
    if (one === null) return;
    const seen = byAddress.get(one.device.address);
    if (seen !== undefined) {
      throw new NodeDeviceXmlError(
        `address "${one.device.address}" is also the address of "${seen.name}"`,
        { device: one.name, index },
      );
    }
    byAddress.set(one.device.address, one);
    parsed.push(one);
  });
  const groupInconsistencies = checkGroups(parsed, byAddress);
  const devices = parsed.map((p) => p.device).sort((a, b) =>
    comparePciAddress(a.address, b.address)
  );
  const groups = groupDevices(devices);
  return {
    source: options.source,
    iommu: groups.length > 0 ? "enabled" : "absent",
    devices,
    groups,
    groupInconsistencies,
    // Neither is visible through libvirt.
    kernelCmdline: null,
    hostUse: null,
  };
}

function checkGroups(
  parsed: readonly ParsedNodeDevice[],
  byAddress: ReadonlyMap<PciAddress, ParsedNodeDevice>,
): GroupInconsistency[] {
  const problems: GroupInconsistency[] = [];
  const claimed = new Map<number, { members: string; by: PciAddress }>();
  const unseen = new Set<string>();
  for (const { device, groupMembers } of parsed) {
    if (device.iommuGroup === null || groupMembers === null) continue;
    const group = device.iommuGroup;
    const flag = (detail: string, devices: PciAddress[] = [device.address]) =>
      problems.push({
        groups: [group],
        devices: [...new Set(devices)].sort(comparePciAddress),
        detail: `IOMMU group ${group} at "${device.address}": ${detail}`,
      });
    if (!groupMembers.includes(device.address)) {
      flag("the device is not listed in its own group");
    }
    const members = groupMembers.join(" ");
    const earlier = claimed.get(group);
    if (earlier !== undefined && earlier.members !== members) {
      flag(`it lists "${members}", "${earlier.by}" lists "${earlier.members}"`, [
        device.address,
        earlier.by,
      ]);
    }
    claimed.set(group, { members, by: device.address });
    for (const member of groupMembers) {
      const other = byAddress.get(member);
      if (other === undefined) {
        // A member libvirt did not list (a race with hot-unplug, a VF it has not seen yet): the
        // group is not fully known, so no closure computed from it would be safe. Said once per
        // group, not by every member listing it.
        if (unseen.has(`${group} ${member}`)) continue;
        unseen.add(`${group} ${member}`);
        flag(`member "${member}" is not among the node devices`, [device.address, member]);
      } else if (other.device.iommuGroup !== group) {
        flag(`member "${member}" reports group ${other.device.iommuGroup ?? "none"}`, [
          device.address,
          member,
        ]);
      }
    }
  }
  return problems;
}

/**
 * Discovers the host through libvirt's node-device API: lists the PCI node devices of `source`
 * (see `ffi/nodedev_source.ts` for the real one) and reads each one's XML
 * into the topology. The topology's `source` is the connection's URI.
 *
 * For comparing and listing only: libvirt cannot say what the host uses (its disks, routes,
 * console), so the topology's `hostUse` is unknown and every plan of it is refused
 * (`host-use-unknown`). Plan a host discovered from sysfs (`discoverHost`).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const host = discoverViaLibvirt({ uri: "memory:", listPciNodeDeviceXml: () => [] });
 * assertEquals([host.source, host.iommu, host.devices.length], ["memory:", "absent", 0]);
 * ```
 */
export function discoverViaLibvirt(source: NodeDeviceSource): HostTopology {
  return topologyFromNodeDevices(source.listPciNodeDeviceXml(), { source: source.uri });
}
