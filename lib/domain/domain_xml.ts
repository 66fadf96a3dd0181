/**
 * Lossless reading and editing of a libvirt domain's persistent XML.
 *
 * A parse-then-serialise round trip is not byte-exact (quote style, `<a></a>`, wrapped start
 * tags), so edits are splices into the original text: only a removed or added PCI `<hostdev>`
 * and our metadata element change, and everything else stays byte-identical. Elements are
 * located (and the document checked) by {@link scanXml}; values are read with fast-xml-parser
 * through `lib/domain/xml.ts`.
 *
 * @module
 */

import type { PciAddress } from "../host/types.ts";
import { charSourceAttribute } from "./char_source.ts";
import { type UsbSource, usbSourceFrom } from "./usb_source.ts";
import {
  deviceRecordFrom,
  isOtherRecordsVersion,
  normaliseXmlLines,
  RECORD_ATTRIBUTES,
  RECORD_NAMES,
  RECORDS_NAMESPACE,
  RECORDS_PROBLEMS,
  repeatedRecordAddress,
} from "./lenient.ts";
import type { NetworkDevice, UsedDevices } from "./device_uses.ts";
import type { DeviceIdentity, HostdevSpec, VfIdentity } from "../plan/types.ts";
import {
  bootAndRomLines,
  type DomainInterface,
  interfaceLines,
  readInterface,
  readVfRecord,
  vfRecordAttributes,
} from "./interface_xml.ts";
import {
  canonicalPciAddress,
  pciAddressFromLibvirt,
  pciAddressFromParts,
  pciAddressToLibvirt,
} from "../pci/address.ts";
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
import {
  escapeXmlAttribute,
  lineColumnAt,
  readXmlElement,
  scanXml,
  spanAttribute,
  spanAttributes,
  spanText,
  type XmlElement,
  type XmlSpan,
  XmlSyntaxError,
} from "./xml.ts";

export type { GuestPciAddress } from "./properties.ts";
export type { DomainInterface } from "./interface_xml.ts";

/** Our metadata namespace: <passthrough:hostdevs xmlns:passthrough="urn:passthrough:hostdevs:1"> inside <metadata>. */
export const METADATA_NAMESPACE: string = RECORDS_NAMESPACE;

/**
 * The typed fields of a PCI `<hostdev>` besides its host address, each an XML path and a
 * converter: what the planner compares with the settings a rule asks for.
 */
const HOSTDEV_PROPERTIES = {
  managed: attributeProperty("@managed", yesNo),
  bootOrder: attributeProperty("boot/@order", unsignedDecimal),
  romBar: attributeProperty("rom/@bar", onOff),
  romFile: attributeProperty("rom/@file", asText),
  guestAddress: elementProperty("address", guestPciAddress),
};

/** One `<hostdev mode='subsystem' type='pci'>` of a domain. */
export interface DomainHostdev {
  /** Host source address (`source/address`), canonical. */
  address: PciAddress;
  /** `managed='yes'`. */
  managed: boolean;
  /** Listed in our metadata (the tool manages it); hand-added ones are `false`. */
  owned: boolean;
  /** The element's exact original text. */
  xml: string;
  /** `<boot order>`, or `null`. */
  bootOrder: number | null;
  /** `<rom bar>` (`on` or `off`), or `null`. */
  romBar: "on" | "off" | null;
  /** `<rom file>`, decoded, or `null`. */
  romFile: string | null;
  /** Where the guest sees it (`<address type='pci'>` after `<source>`); `null`: libvirt chooses. */
  guestAddress: GuestPciAddress | null;
}

/** What {@link parseDomainXml} reads from a domain. */
export interface ParsedDomain extends UsedDevices {
  /** The domain's `<name>`, trimmed; never empty (a domain without one is refused). */
  name: string;
  /** The domain's `<uuid>`, trimmed, or `null` when the XML has none. */
  uuid: string | null;
  /** `<hostdev mode='subsystem' type='pci'>` only, in document order. */
  hostdevs: DomainHostdev[];
  /** Identities recorded in our metadata. */
  records: DeviceIdentity[];
  /**
   * Host addresses of `<interface type='hostdev'>` devices (SR-IOV VFs as NICs). Never edited;
   * listed so planning sees them as taken.
   */
  interfaceHostdevs: PciAddress[];
  /**
   * Host addresses of the NVMe controllers of disks: a `<disk type='nvme'>`'s and every
   * `<backingStore type='nvme'>`'s in a disk's chain. libvirt detaches each from the host at
   * start as it does a managed hostdev. Never edited; listed so planning sees them as taken.
   */
  nvmeDisks: PciAddress[];
  /** The `<interface type='hostdev'>` devices with a PCI source, owned or hand-written. */
  interfaces: DomainInterface[];
  /** The VFs recorded in our metadata (`<passthrough:interface>`), apart from `records`. */
  vfRecords: VfIdentity[];
  /** The `<mac address>` of every `<interface>` of the domain, lower case: taken MACs. */
  macs: string[];
  /**
   * `<os><boot dev>` values in document order: libvirt refuses per-device boot order next to
   * them.
   */
  bootDevices: string[];
  /**
   * The `<boot order>` of every device in `<devices>` that has one (hostdevs and interfaces
   * included), with its element name (`disk`, `interface`, ...), in document order: libvirt
   * refuses one boot order on two devices.
   */
  bootOrders: DeviceBootOrder[];
  /** The guest PCI address of every device in `<devices>` (hostdevs included), in document order. */
  guestAddresses: GuestPciAddress[];
  /** `<os><type machine>` as written (`pc-q35-7.2`, `pc`), or `null` when absent. */
  machine: string | null;
  /** The `<controller type='pci'>` elements of `<devices>`, in document order. */
  pciControllers: PciController[];
  /** Where the guest's vCPUs and memory are pinned (NUMA pre-flight). */
  pinning: DomainPinning;
}

/** A device's `<boot order>`: the device's element name and the order. */
export interface DeviceBootOrder {
  /** The device's element name (`disk`, `interface`, `hostdev`, ...). */
  device: string;
  /** The order, a positive integer. */
  order: number;
}

/** A domain's pinning, as written; empty lists: not pinned. */
export interface DomainPinning {
  /** `<vcpu cpuset>` and every `<cputune><vcpupin cpuset>`: host CPU lists. */
  cpusets: string[];
  /** `<numatune><memory nodeset>` and every `<memnode nodeset>`: host NUMA node lists. */
  nodesets: string[];
}

/** One `<controller type='pci'>`: the guest bus it provides (its index) and its model. */
export interface PciController {
  /** `index`: the guest bus number devices behind it use; `null` when absent or not a number. */
  index: number | null;
  /** `model` (`pcie-root`, `pcie-root-port`, `pci-root`, …), or `null` when absent. */
  model: string | null;
}

/** A PCI controller an edit adds: a PCIe root port providing guest bus `index` (q35 machines). */
export interface PciControllerSpec {
  /** The guest bus number it provides; must not be taken by another controller. */
  index: number;
  /** Only root ports are added: one per card keeps its functions together on their own bus. */
  model: "pcie-root-port";
}

/** The change {@link editDomainXml} makes. */
export interface DomainEdit {
  /** Owned hostdevs to delete (by host address). */
  remove: PciAddress[];
  /**
   * Hostdevs to append to `<devices>` (an `<interface type='hostdev'>` for a spec with
   * `interface`). `remove` takes owned interfaces too, by their VF's address.
   */
  add: HostdevSpec[];
  /** The full new set of records (replaces our metadata; `[]` removes it). */
  records: DeviceIdentity[];
  /** The full new set of VF records; absent: the domain's are kept as they are. */
  vfRecords?: VfIdentity[];
  /**
   * Owned hostdevs whose card now sits at another host address: each one's `<source><address>`
   * is rewritten from `from` to `to` in place, so the element keeps its position, settings and
   * guest address. Default: none.
   */
  move?: readonly { from: PciAddress; to: PciAddress }[];
  /**
   * Owned `<hostdev>`s whose settings changed (`managed`, ROM, boot order, guest address), and
   * owned `<interface type='hostdev'>`s (a spec with `interface`: MAC, VLAN, ...): each is written
   * again from its spec where it is, keeping the children its spec does not describe (`<driver>`,
   * `<alias>`, `<acpi>`, an interface's guest `<address>`, ...) and the comments between its
   * children as they were, so a user's own settings stay and the diff shows only what changed (a
   * comment inside a child the spec writes, such as `<source>`, goes with it). With `from`, the
   * element at that address is the one written again, at the spec's (a VF that moved with its PF).
   * Default: none.
   */
  rewrite?: readonly (HostdevSpec & { from?: PciAddress })[];
  /** PCI controllers to append to `<devices>` before the added hostdevs (never removed). */
  addControllers?: PciControllerSpec[];
}

/** Malformed domain XML, or a domain this module cannot safely read or edit. */
export class DomainXmlError extends SyntaxError {
  /** 1-based line of the problem (1 when it is not tied to a place). */
  line: number;
  /** 1-based column of the problem. */
  column: number;
  /** Builds the error; the message should already name the position when it has one. */
  constructor(
    message: string,
    position: { line: number; column: number },
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "DomainXmlError";
    this.line = position.line;
    this.column = position.column;
  }
}

/** A request {@link editDomainXml} refuses: it would touch a hostdev the tool does not own. */
export class DomainEditError extends Error {
  /** The host address concerned. */
  address: PciAddress;
  /** Builds the error. */
  constructor(message: string, address: PciAddress) {
    super(message);
    this.name = "DomainEditError";
    this.address = address;
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

interface HostdevSite {
  hostdev: DomainHostdev;
  span: XmlSpan;
}

interface InterfaceSite {
  nic: DomainInterface;
  span: XmlSpan;
}

interface OurMetadata {
  /** Our `<passthrough:hostdevs>` element. */
  span: XmlSpan;
  /** The `created` marker it carries (see {@link editDomainXml}), or `null`. */
  created: string | null;
}

interface Located extends UsedDevices {
  root: XmlSpan;
  name: string;
  uuid: string | null;
  devices: XmlSpan | null;
  hostdevs: HostdevSite[];
  interfaceHostdevs: PciAddress[];
  nvmeDisks: PciAddress[];
  interfaces: InterfaceSite[];
  macs: string[];
  bootDevices: string[];
  bootOrders: DeviceBootOrder[];
  guestAddresses: GuestPciAddress[];
  metadata: XmlSpan | null;
  ours: OurMetadata | null;
  records: DeviceIdentity[];
  vfRecords: VfIdentity[];
  machine: string | null;
  pciControllers: PciController[];
  pinning: DomainPinning;
}

function errorAt(xml: string, index: number, message: string, cause?: unknown): DomainXmlError {
  const position = lineColumnAt(xml, index);
  return new DomainXmlError(
    `${message}: at line ${position.line}, column ${position.column}`,
    position,
    cause === undefined ? {} : { cause },
  );
}

function read(xml: string, span: XmlSpan): XmlElement {
  try {
    return readXmlElement(xml.slice(span.start, span.end));
  } catch (error) {
    throw errorAt(xml, span.start, `Cannot read "<${span.name}>"`, error);
  }
}

/** The text of a span: straight from the document when it holds text alone. */
function textOf(xml: string, span: XmlSpan): string {
  let text: string | null;
  try {
    text = spanText(xml, span);
  } catch (error) {
    throw errorAt(xml, span.start, `Cannot read "<${span.name}>"`, error);
  }
  return text ?? read(xml, span).text;
}

function attribute(xml: string, span: XmlSpan, name: string): string | undefined {
  try {
    return spanAttribute(span, name);
  } catch (error) {
    throw errorAt(xml, span.start, `Cannot read attribute "${name}" of "<${span.name}>"`, error);
  }
}

/** The namespace `span` declares for its own prefix (or the default one), if it does. */
function ownNamespace(xml: string, span: XmlSpan): string | undefined {
  const colon = span.name.indexOf(":");
  return attribute(xml, span, colon === -1 ? "xmlns" : `xmlns:${span.name.slice(0, colon)}`);
}

/** Whether `span` is our `<hostdevs>` element: declared with our namespace, on any prefix. */
function isOurElement(xml: string, span: XmlSpan): boolean {
  const local = span.name.slice(span.name.indexOf(":") + 1);
  return local === "hostdevs" && ownNamespace(xml, span) === METADATA_NAMESPACE;
}

function locate(xml: string): Located {
  const root = parseRoot(xml);
  const child = (name: string) => root.children.find((c) => c.name === name) ?? null;
  const nameSpan = child("name");
  const name = nameSpan ? textOf(xml, nameSpan).trim() : "";
  if (name === "") throw errorAt(xml, root.start, `Domain has no "<name>"`);
  const uuidSpan = child("uuid");
  const uuid = uuidSpan ? textOf(xml, uuidSpan).trim() : null;
  const metadata = child("metadata");
  const { declaring, notARecord } = refuseMisplacedRecords(xml, root, metadata);
  const { ours, records, vfRecords } = readOurMetadata(xml, metadata);
  // Another element in the records' namespace (`<zz:other xmlns:zz=…>`) is nothing this version
  // writes: records in a form it does not read may be there, so the guard refuses the VM's starts.
  if (ours === null && declaring !== null) {
    throw errorAt(
      xml,
      declaring.start,
      `${sentence(RECORDS_PROBLEMS.namespaceElsewhere)}, and no records element declares it: ` +
        "the start guard refuses every start of the VM until this declaration is removed, with " +
        "any element in that namespace",
    );
  }
  if (notARecord !== null) {
    throw errorAt(
      xml,
      notARecord.start,
      `${sentence(RECORDS_PROBLEMS.notARecord)}: the start guard refuses every start of the VM ` +
        "until it is removed",
    );
  }
  const devices = child("devices");
  const found = locateDevices(xml, devices, {
    owned: new Set(records.map((r) => r.address)),
    ownedVfs: new Set(vfRecords.map((r) => r.address)),
  });
  const bootDevices = (child("os")?.children ?? []).flatMap((c) => {
    const dev = c.name === "boot" ? attribute(xml, c, "dev") : undefined;
    return dev === undefined ? [] : [dev];
  });
  return {
    root,
    name,
    uuid,
    devices,
    ...found,
    scsiHosts: [...found.scsiHosts].sort(),
    mdevs: [...found.mdevs].sort(),
    charDevices: [...found.charDevices].sort(),
    networks: [...found.networks].sort(),
    bootDevices,
    bootOrders: deviceBootOrders(xml, devices),
    guestAddresses: guestAddresses(xml, devices),
    machine: machineOf(xml, child("os")),
    pciControllers: pciControllers(xml, devices),
    pinning: pinningOf(xml, child),
    metadata,
    ours,
    records,
    vfRecords,
  };
}

/** The document's root element, which must be `<domain>`. */
function parseRoot(xml: string): XmlSpan {
  let root: XmlSpan;
  try {
    root = scanXml(xml);
  } catch (error) {
    if (error instanceof XmlSyntaxError) {
      throw new DomainXmlError(error.message, error, { cause: error });
    }
    throw error;
  }
  if (root.name !== "domain") {
    throw errorAt(xml, root.start, `Expected a "<domain>" root element, found "<${root.name}>"`);
  }
  return root;
}

/** What the elements under `<devices>` take from the host, as {@link locateDevices} finds it. */
interface LocatedDevices {
  hostdevs: HostdevSite[];
  interfaceHostdevs: PciAddress[];
  nvmeDisks: PciAddress[];
  blockDisks: string[];
  usbDevices: UsbSource[];
  scsiHosts: Set<string>;
  mdevs: Set<string>;
  netDevices: string[];
  charDevices: Set<string>;
  networks: Set<string>;
  networkDevices: NetworkDevice[];
  interfaces: InterfaceSite[];
  macs: string[];
}

/** Each child of `<devices>`, by kind: interfaces, hostdevs, disks, character devices. */
function locateDevices(
  xml: string,
  devices: XmlSpan | null,
  ours: { owned: ReadonlySet<PciAddress>; ownedVfs: ReadonlySet<PciAddress> },
): LocatedDevices {
  const found: LocatedDevices = {
    hostdevs: [],
    interfaceHostdevs: [],
    nvmeDisks: [],
    blockDisks: [],
    usbDevices: [],
    scsiHosts: new Set(),
    mdevs: new Set(),
    netDevices: [],
    charDevices: new Set(),
    networks: new Set(),
    networkDevices: [],
    interfaces: [],
    macs: [],
  };
  for (const span of devices?.children ?? []) {
    if (span.name === "interface") locateInterface(xml, span, ours.ownedVfs, found);
    else if (span.name === "hostdev") locateHostdev(xml, span, ours.owned, found);
    else if (span.name === "disk") {
      found.nvmeDisks.push(...nvmeSources(xml, span));
      found.blockDisks.push(...sourceDevices(xml, span));
    } else {
      const char = charSourceAttribute(span.name, attribute(xml, span, "type"));
      const path = char === null ? null : elementSource(xml, span, char);
      if (path !== null) found.charDevices.add(path);
    }
  }
  return found;
}

/**
 * An `<interface>`: its MAC (every interface's, from its span), the network and host interface
 * it stands on (a running guest's shows the device its network gave), and a hostdev one read
 * whole.
 */
function locateInterface(
  xml: string,
  span: XmlSpan,
  ownedVfs: ReadonlySet<PciAddress>,
  found: LocatedDevices,
): void {
  const macSpan = span.children.find((c) => c.name === "mac");
  const mac = macSpan === undefined ? undefined : attribute(xml, macSpan, "address");
  if (mac !== undefined) found.macs.push(mac.trim().toLowerCase());
  const type = attribute(xml, span, "type");
  const network = elementSource(xml, span, "network");
  if (network !== null && type !== "hostdev") found.networks.add(network);
  const netDevice = type === "direct" || type === "bridge"
    ? elementSource(xml, span, type === "direct" ? "dev" : "bridge")
    : null;
  if (netDevice !== null && network === null) found.netDevices.push(netDevice);
  if (netDevice !== null && network !== null) {
    found.networkDevices.push({ network, device: netDevice });
  }
  if (type !== "hostdev") return;
  const element = read(xml, span);
  const address = interfaceAddress(element);
  if (address !== null) found.interfaceHostdevs.push(address);
  const nic = readInterface(element, xml.slice(span.start, span.end), ownedVfs);
  if (nic !== null) found.interfaces.push({ nic, span });
}

/** A `<hostdev>`: a PCI one as a site to edit, else the USB, SCSI or mediated device it takes. */
function locateHostdev(
  xml: string,
  span: XmlSpan,
  owned: ReadonlySet<PciAddress>,
  found: LocatedDevices,
): void {
  const site = readHostdev(xml, span, owned);
  if (site !== null) return void found.hostdevs.push(site);
  const usb = readUsbHostdev(xml, span);
  if (usb !== null) return void found.usbDevices.push(usb);
  const adapter = readScsiHostdev(xml, span);
  if (adapter !== null) return void found.scsiHosts.add(adapter);
  const mdev = readMdevHostdev(xml, span);
  if (mdev !== null) found.mdevs.add(mdev);
}

/**
 * Refuses, anywhere under `root`, what the start guard's reader refuses: an element in another
 * version's records namespace (nested in our records element or in another application's
 * metadata, it would otherwise be read as no records), and our records element anywhere but as
 * a child of `<metadata>` (read as none here, while the guard refuses every start of the VM).
 * Returns the first element in document order that declares the records' namespace, and the
 * first that is in it but no record, or a record's name in another one
 * (`RECORDS_PROBLEMS.notARecord`, refused by the caller once nothing else is wrong), or `null`s.
 */
function refuseMisplacedRecords(
  xml: string,
  root: XmlSpan,
  metadata: XmlSpan | null,
): { declaring: XmlSpan | null; notARecord: XmlSpan | null } {
  let declaring: XmlSpan | null = null;
  // A stack, not recursion: libvirt keeps other applications' metadata nested at any depth.
  // `inScope`: per declared prefix (`xmlns`, `xmlns:pt`), the namespaces in force, innermost
  // last; an element's `exit` entry, popped after its children, takes back what it declared (a
  // copy of the declarations per element grew with the depth).
  const inScope = new Map<string, string[]>();
  /** Our records elements in `<metadata>` (a second is refused later): their children are read. */
  const recordsElements = new Set<XmlSpan>();
  let notARecord: XmlSpan | null = null;
  type Entry = { span: XmlSpan; parent: XmlSpan | null } | { exit: string[] };
  const stack: Entry[] = [{ span: root, parent: null }];
  while (stack.length > 0) {
    const entry = stack.pop()!;
    if ("exit" in entry) {
      for (const key of entry.exit) inScope.get(key)!.pop();
      continue;
    }
    const { span, parent } = entry;
    const declared = span.rawAttributes.map(([key]) => key).filter((key) =>
      /^xmlns(:|$)/.test(key)
    );
    for (const key of declared) {
      const values = inScope.get(key) ?? [];
      values.push(attribute(xml, span, key) ?? "");
      inScope.set(key, values);
      if (values.at(-1) === METADATA_NAMESPACE) declaring ??= span;
    }
    const colon = span.name.indexOf(":");
    const key = colon === -1 ? "xmlns" : `xmlns:${span.name.slice(0, colon)}`;
    // The element's namespace, declared on it or on an enclosing element, as XML reads it.
    const namespace = inScope.get(key)?.at(-1);
    if (
      span.name.slice(colon + 1) === "hostdevs" && namespace === METADATA_NAMESPACE &&
      !declared.includes(key)
    ) {
      throw errorAt(
        xml,
        span.start,
        `${sentence(RECORDS_PROBLEMS.namespaceElsewhere)} (an enclosing element declares it ` +
          "for this records element): the start guard refuses every start of the VM until the " +
          "records element declares it itself or is removed",
      );
    }
    if (isOtherRecordsVersion(namespace)) {
      throw errorAt(
        xml,
        span.start,
        `${sentence(RECORDS_PROBLEMS.otherVersion)} (namespace "${namespace}"; this one reads ` +
          `"${METADATA_NAMESPACE}"): plan with the passthrough that wrote them`,
      );
    }
    if (parent !== metadata && isOurElement(xml, span)) {
      throw errorAt(
        xml,
        span.start,
        `${sentence(RECORDS_PROBLEMS.notInMetadata)}, where passthrough reads records: the ` +
          "start guard refuses every start of the VM until it is moved there or removed",
      );
    }
    const ours = parent === metadata && isOurElement(xml, span);
    if (ours) recordsElements.add(span);
    // Read by the records element's prefix (`readRecords`), so a record in its namespace by
    // another, or one of its names in another namespace, would be passed over: refused instead.
    const recordName = parent !== null && recordsElements.has(parent) &&
      RECORD_NAMES.some((local) => span.name === prefixOf(parent) + local);
    if (!ours && (recordName !== (namespace === METADATA_NAMESPACE))) notARecord ??= span;
    stack.push({ exit: declared });
    // The first in document order is named: children pushed last to first.
    for (let i = span.children.length - 1; i >= 0; i--) {
      stack.push({ span: span.children[i]!, parent: span });
    }
  }
  return { declaring, notARecord };
}

/** `problem` as a message begins: its first letter upper case. */
function sentence(problem: string): string {
  return problem.charAt(0).toUpperCase() + problem.slice(1);
}

/** Our records element in `<metadata>` (at most one) and the records it holds. */
function readOurMetadata(
  xml: string,
  metadata: XmlSpan | null,
): { ours: OurMetadata | null; records: DeviceIdentity[]; vfRecords: VfIdentity[] } {
  let ours: OurMetadata | null = null;
  let records: DeviceIdentity[] = [];
  let vfRecords: VfIdentity[] = [];
  for (const candidate of metadata?.children ?? []) {
    if (!isOurElement(xml, candidate)) continue;
    if (ours !== null) {
      throw errorAt(xml, candidate.start, sentence(RECORDS_PROBLEMS.twoElements));
    }
    ours = { span: candidate, created: attribute(xml, candidate, "created") ?? null };
    records = readRecords(xml, candidate);
    vfRecords = readVfRecords(xml, candidate);
    const twice = repeatedRecordAddress(records) ?? repeatedRecordAddress(vfRecords);
    if (twice !== null) {
      throw errorAt(xml, candidate.start, `${sentence(RECORDS_PROBLEMS.twoAddresses)}: "${twice}"`);
    }
  }
  return { ours, records, vfRecords };
}

/**
 * The `dev` of every `<source>` under a disk's span: its own (`type='block'`) and those of block
 * backing stores, mirrors and data stores (`<source file><dataStore><source dev>`), which QEMU
 * holds open as well.
 */
function sourceDevices(xml: string, span: XmlSpan): string[] {
  return span.children.flatMap((child) => {
    const dev = child.name === "source" ? attribute(xml, child, "dev") : undefined;
    return [...(dev ? [dev] : []), ...sourceDevices(xml, child)];
  });
}

/**
 * The host PCI addresses of the NVMe controllers in a disk's storage chain: its own source when
 * it is `type='nvme'`, and that of every `<backingStore type='nvme'>` at any depth (libvirt
 * detaches each at start; a disk-only snapshot of an NVMe disk writes such a backing store).
 * Without a source there is nothing to detach (libvirt's schema allows it).
 */
function nvmeSources(xml: string, span: XmlSpan): PciAddress[] {
  const own = attribute(xml, span, "type") === "nvme" &&
      span.children.some((c) => c.name === "source")
    ? [span]
    : [];
  return [
    ...own.map((nvme) => {
      const address = interfaceAddress(read(xml, nvme));
      if (address !== null) return address;
      const what = nvme.name === "disk" ? "NVMe disk" : "NVMe backing store";
      throw errorAt(xml, nvme.start, `${what} has no valid source address`);
    }),
    ...span.children.filter((c) => c.name === "backingStore").flatMap((c) => nvmeSources(xml, c)),
  ];
}

/** The host PCI address of an `<interface type='hostdev'>`, or `null` for another bus. */
function interfaceAddress(element: XmlElement): PciAddress | null {
  const source = element.children.find((c) => c.name === "source");
  const address = source?.children.find((c) => c.name === "address");
  return address && (address.attributes.type ?? "pci") === "pci"
    ? pciAddressFromLibvirt(address.attributes)
    : null;
}

/**
 * The `attribute` of a device's `<source>` (an interface's `dev` or `bridge`, a serial port's
 * `path`), or `null`.
 */
function elementSource(xml: string, span: XmlSpan, name: string): string | null {
  const source = span.children.find((c) => c.name === "source");
  const value = source === undefined ? undefined : attribute(xml, source, name);
  return value === undefined || value === "" ? null : value;
}

/**
 * The host SCSI adapter (`scsi_host2`) of a SCSI subsystem `<hostdev>` on a host adapter; `null`
 * for other hostdevs, an iSCSI one, or one without an adapter name.
 */
function readScsiHostdev(xml: string, span: XmlSpan): string | null {
  const mode = attribute(xml, span, "mode") ?? "subsystem";
  if (mode !== "subsystem" || attribute(xml, span, "type") !== "scsi") return null;
  const source = span.children.find((c) => c.name === "source");
  const protocol = source === undefined ? undefined : attribute(xml, source, "protocol");
  if (source === undefined || protocol === "iscsi") return null;
  const adapter = source.children.find((c) => c.name === "adapter");
  const name = adapter === undefined ? undefined : attribute(xml, adapter, "name");
  return name ? name : null;
}

/** The UUID (lower case) of a mediated device's `<hostdev>`; `null` for other hostdevs. */
function readMdevHostdev(xml: string, span: XmlSpan): string | null {
  const mode = attribute(xml, span, "mode") ?? "subsystem";
  if (mode !== "subsystem" || attribute(xml, span, "type") !== "mdev") return null;
  const source = span.children.find((c) => c.name === "source");
  const address = source?.children.find((c) => c.name === "address");
  const uuid = address === undefined ? undefined : attribute(xml, address, "uuid");
  return uuid ? uuid.trim().toLowerCase() : null;
}

/** The source of a USB subsystem `<hostdev>`; `null` for other hostdevs, or one it cannot read. */
function readUsbHostdev(xml: string, span: XmlSpan): UsbSource | null {
  const mode = attribute(xml, span, "mode") ?? "subsystem";
  if (mode !== "subsystem" || attribute(xml, span, "type") !== "usb") return null;
  const source = read(xml, span).children.find((c) => c.name === "source");
  const attributeOf = (name: string, key: string) =>
    source?.children.find((c) => c.name === name)?.attributes[key];
  return usbSourceFrom({
    vendor: attributeOf("vendor", "id"),
    product: attributeOf("product", "id"),
    bus: attributeOf("address", "bus"),
    device: attributeOf("address", "device"),
  });
}

/** A PCI subsystem `<hostdev>` with its typed fields; `null` for other hostdev kinds. */
function readHostdev(
  xml: string,
  span: XmlSpan,
  owned: ReadonlySet<PciAddress>,
): HostdevSite | null {
  const mode = attribute(xml, span, "mode") ?? "subsystem";
  if (mode !== "subsystem" || attribute(xml, span, "type") !== "pci") return null;
  const element = read(xml, span);
  const source = element.children.find((c) => c.name === "source");
  const address = source?.children.find((c) => c.name === "address");
  const canonical = address ? pciAddressFromLibvirt(address.attributes) : null;
  if (canonical === null) {
    throw errorAt(xml, span.start, "PCI hostdev has no valid source address");
  }
  const { managed, ...fields } = readProperties(element, HOSTDEV_PROPERTIES);
  return {
    span,
    hostdev: {
      address: canonical,
      managed: managed ?? false,
      owned: owned.has(canonical),
      xml: xml.slice(span.start, span.end),
      ...fields,
    },
  };
}

/** The guest PCI address of each device: its own `<address type='pci'>` child. */
function guestAddresses(xml: string, devices: XmlSpan | null): GuestPciAddress[] {
  const out: GuestPciAddress[] = [];
  for (const device of devices?.children ?? []) {
    const span = device.children.find((c) => c.name === "address");
    if (span === undefined) continue;
    const attributes: Record<string, string> = {};
    for (const [name] of span.rawAttributes) {
      attributes[name] ??= attribute(xml, span, name) ?? "";
    }
    const address = guestPciAddress({ attributes });
    if (address !== null) out.push(address);
  }
  return out;
}

/** The `<boot order>` of each device in `<devices>` that has a valid one. */
function deviceBootOrders(xml: string, devices: XmlSpan | null): DeviceBootOrder[] {
  return (devices?.children ?? []).flatMap((device) => {
    const boot = device.children.find((c) => c.name === "boot");
    const order = boot === undefined ? undefined : attribute(xml, boot, "order")?.trim();
    const value = order === undefined || !/^\d+$/.test(order) ? 0 : Number(order);
    return value > 0 ? [{ device: device.name, order: value }] : [];
  });
}

/** `<os><type machine>`, or `null`. */
function machineOf(xml: string, os: XmlSpan | null): string | null {
  const type = os?.children.find((c) => c.name === "type");
  return type === undefined ? null : attribute(xml, type, "machine") ?? null;
}

/** `<vcpu cpuset>`, `<cputune><vcpupin cpuset>`, `<numatune>`'s `<memory>`/`<memnode>` nodesets. */
function pinningOf(xml: string, child: (name: string) => XmlSpan | null): DomainPinning {
  const values = (spans: readonly XmlSpan[], element: string[], name: string) =>
    spans.flatMap((s) => {
      const value = element.includes(s.name) ? attribute(xml, s, name) : undefined;
      return value === undefined || value.trim() === "" ? [] : [value.trim()];
    });
  const vcpu = child("vcpu");
  return {
    cpusets: [
      ...values(vcpu === null ? [] : [vcpu], ["vcpu"], "cpuset"),
      ...values(child("cputune")?.children ?? [], ["vcpupin"], "cpuset"),
    ],
    nodesets: values(child("numatune")?.children ?? [], ["memory", "memnode"], "nodeset"),
  };
}

/** The `<controller type='pci'>` children of `<devices>`. */
function pciControllers(xml: string, devices: XmlSpan | null): PciController[] {
  return (devices?.children ?? []).flatMap((span) => {
    if (span.name !== "controller" || attribute(xml, span, "type") !== "pci") return [];
    const raw = attribute(xml, span, "index");
    const index = raw !== undefined && /^\d{1,3}$/.test(raw.trim()) ? Number(raw.trim()) : null;
    return [{ index, model: attribute(xml, span, "model") ?? null }];
  });
}

/** The prefix of `span`'s name with its colon (`pt:`), or `""`. */
function prefixOf(span: XmlSpan): string {
  return span.name.slice(0, span.name.indexOf(":") + 1);
}

/** The decoded attributes of each child of our element named `local` (with its prefix). */
function recordAttributes(xml: string, ours: XmlSpan, local: string): Record<string, string>[] {
  const prefix = prefixOf(ours);
  return ours.children.filter((c) => c.name === `${prefix}${local}`).map((record) => {
    try {
      return spanAttributes(record);
    } catch (error) {
      throw errorAt(xml, record.start, `Cannot read "<${record.name}>"`, error);
    }
  });
}

function readRecords(xml: string, ours: XmlSpan): DeviceIdentity[] {
  return recordAttributes(xml, ours, "device").map((a) => {
    const record = deviceRecordFrom(new Map(Object.entries(a)));
    if (typeof record === "string") {
      throw errorAt(xml, ours.start, strictRecordReason(record, a[RECORD_ATTRIBUTES.address]));
    }
    return record;
  });
}

/**
 * The shared reader's reason as the strict reader says it: `Passthrough record lacks ...`, and a
 * bad address quoted (the strict reader's errors are printed through the terminal boundary).
 */
function strictRecordReason(why: string, address: string | undefined): string {
  const text = `Passthrough ${why.replace(/^an? /, "")}`;
  return text.endsWith("has a bad address") ? `${text} "${address ?? ""}"` : text;
}

/** The `<passthrough:interface>` records of our element (older versions wrote none). */
function readVfRecords(xml: string, ours: XmlSpan): VfIdentity[] {
  return recordAttributes(xml, ours, "interface").map((a) =>
    readVfRecord(a, (why) => errorAt(xml, ours.start, why))
  );
}

/**
 * Reads a domain's name, UUID, PCI subsystem hostdevs (with their exact text, and whether our
 * metadata records them) and our metadata records. Other hostdev kinds (usb, scsi, mdev) are not
 * listed; `<interface type='hostdev'>` PCI sources are, apart, as `interfaceHostdevs`, and
 * `<disk type='nvme'>` controllers (and NVMe backing stores) as `nvmeDisks` ({@link heldAddresses}:
 * all of them).
 *
 * Throws {@link DomainXmlError} (with line, column) on malformed XML, a DOCTYPE, a root other than
 * `<domain>`, a `<domain>` without `<name>`, or a PCI hostdev or NVMe disk without a valid source
 * address.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const xml = `<domain type='kvm'><name>vm</name><devices>
 *   <hostdev mode='subsystem' type='pci' managed='yes'>
 *     <source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>
 *   </hostdev>
 * </devices></domain>`;
 * const parsed = parseDomainXml(xml);
 * assertEquals(parsed.name, "vm");
 * assertEquals(parsed.hostdevs.map((h) => [h.address, h.managed, h.owned]), [
 *   ["0000:01:00.0", true, false],
 * ]);
 * ```
 */
export function parseDomainXml(xml: string): ParsedDomain {
  const located = locate(xml);
  return {
    name: located.name,
    uuid: located.uuid,
    hostdevs: located.hostdevs.map((site) => site.hostdev),
    records: located.records,
    interfaceHostdevs: located.interfaceHostdevs,
    nvmeDisks: located.nvmeDisks,
    blockDisks: located.blockDisks,
    usbDevices: located.usbDevices,
    scsiHosts: located.scsiHosts,
    mdevs: located.mdevs,
    netDevices: located.netDevices,
    charDevices: located.charDevices,
    networks: located.networks,
    networkDevices: located.networkDevices,
    interfaces: located.interfaces.map((site) => site.nic),
    vfRecords: located.vfRecords,
    macs: located.macs,
    bootDevices: located.bootDevices,
    bootOrders: located.bootOrders,
    guestAddresses: located.guestAddresses,
    machine: located.machine,
    pciControllers: located.pciControllers,
    pinning: located.pinning,
  };
}

/**
 * Every host PCI address a parsed domain passes to its guest, in document order by kind: its
 * PCI hostdevs, its hostdev interfaces, its NVMe disks' controllers. What "the domain holds".
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const xml = `<domain type='kvm'><name>vm</name><devices>
 *   <disk type='nvme' device='disk'><source type='pci' managed='yes' namespace='1'>
 *     <address domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></source>
 *     <target dev='vda' bus='virtio'/></disk>
 * </devices></domain>`;
 * assertEquals(heldAddresses(parseDomainXml(xml)), ["0000:05:00.0"]);
 * ```
 */
export function heldAddresses(
  domain: Pick<ParsedDomain, "hostdevs" | "interfaceHostdevs" | "nvmeDisks">,
): PciAddress[] {
  return [
    ...domain.hostdevs.map((h) => h.address),
    ...domain.interfaceHostdevs,
    ...domain.nvmeDisks,
  ];
}

/**
 * The host PCI addresses a parsed domain passes that passthrough did not write, and never removes:
 * its hand-added hostdevs, its hostdev interfaces no `vf:` rule recorded, its NVMe disks'
 * controllers. They stay passed whatever a plan does, so VFIO hands them to the guest at start.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const xml = `<domain type='kvm'><name>vm</name><devices>
 *   <hostdev mode='subsystem' type='pci' managed='yes'><source>
 *     <address domain='0x0000' bus='0x06' slot='0x00' function='0x0'/></source></hostdev>
 * </devices></domain>`;
 * assertEquals(handPassedAddresses(parseDomainXml(xml)), ["0000:06:00.0"]);
 * ```
 */
export function handPassedAddresses(
  domain: Pick<ParsedDomain, "hostdevs" | "interfaceHostdevs" | "vfRecords" | "nvmeDisks">,
): PciAddress[] {
  return [
    ...domain.hostdevs.filter((h) => !h.owned).map((h) => h.address),
    ...domain.interfaceHostdevs.filter((a) => !domain.vfRecords.some((r) => r.address === a)),
    ...domain.nvmeDisks,
  ];
}

/**
 * `xml` with the `<controller>` children of its `<devices>` in one order, each sorted by its
 * lines' keys ({@link normaliseXmlLines}, so layout does not move it) into the places controllers
 * held: libvirt orders controllers itself as it stores a definition (a USB companion controller
 * before or after its master, a SCSI controller it adds placed among the others), so the
 * definition it reads back may hold a backup's controllers in another order. Every other device
 * keeps its place, as libvirt keeps it, and its order can matter (the first interface boots from
 * the network, hostdevs take guest slots in order). Returns `xml` itself when it is unreadable or
 * has fewer than two controllers.
 *
 * @example
 * ```ts
 * import { assert, assertEquals } from "../../tests/helpers/assert.ts";
 * const domain = (devices: string) => `<domain><name>vm</name><devices>${devices}</devices></domain>`;
 * const usb = (model: string) => `<controller type='usb' model='${model}'/>`;
 * assertEquals(
 *   controllersInOneOrder(domain(`<disk/>${usb("ich9-uhci1")}${usb("ich9-ehci1")}`)),
 *   controllersInOneOrder(domain(`<disk/>${usb("ich9-ehci1")}${usb("ich9-uhci1")}`)),
 * );
 * assert.notEqual(
 *   controllersInOneOrder(domain("<interface type='user'/><interface type='network'/>")),
 *   controllersInOneOrder(domain("<interface type='network'/><interface type='user'/>")),
 * );
 * ```
 */
export function controllersInOneOrder(xml: string): string {
  let root: XmlSpan;
  try {
    root = parseRoot(xml);
  } catch {
    return xml;
  }
  const devices = root.children.find((c) => c.name === "devices")?.children ?? [];
  const controllers = devices.filter((d) => d.name === "controller");
  if (controllers.length < 2) return xml;
  const sorted = controllers
    .map((span) => {
      const text = xml.slice(span.start, span.end);
      return { text, key: normaliseXmlLines(text.split("\n")).join("\n") };
    })
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  let out = "";
  let at = 0;
  controllers.forEach((span, i) => {
    out += xml.slice(at, span.start) + sorted[i]!.text;
    at = span.end;
  });
  return out + xml.slice(at);
}

// ---------------------------------------------------------------------------------------------
// Writing

/** `<devices>`'s children and `<metadata>`'s children get this much more indentation by default. */
const DEFAULT_UNIT = "  ";

/** The whitespace that starts the line `index` is on, when only whitespace precedes it there. */
function lineIndent(xml: string, index: number): string | null {
  // Walk back over spaces and tabs only, so the cost is the indentation's length even on a
  // document written on one long line.
  let i = index;
  while (i > 0 && (xml[i - 1] === " " || xml[i - 1] === "\t")) i--;
  return i === 0 || xml[i - 1] === "\n" ? xml.slice(i, index) : null;
}

/**
 * The range to delete to remove `span`: with its own line's indentation and newline when it sits
 * alone on its lines, so that removing an element we inserted restores the original exactly.
 */
function removalRange(xml: string, span: { start: number; end: number }): [number, number] {
  const indent = lineIndent(xml, span.start);
  if (indent === null) return [span.start, span.end];
  const eol = xml.indexOf("\n", span.end);
  const rest = xml.slice(span.end, eol === -1 ? xml.length : eol + 1);
  if (!/^[ \t]*\r?\n?$/.test(rest)) return [span.start, span.end];
  return [span.start - indent.length, span.end + rest.length];
}

/** Where `sibling`'s line ends (before `\r\n` or `\n`), and what follows it on that line. */
function restOfLine(xml: string, sibling: XmlSpan): { at: number; rest: string } {
  const eol = xml.indexOf("\n", sibling.end);
  const at = eol === -1 ? xml.length : xml[eol - 1] === "\r" ? eol - 1 : eol;
  return { at: Math.max(at, sibling.end), rest: xml.slice(sibling.end, Math.max(at, sibling.end)) };
}

/**
 * A splice putting `lines` on their own lines after `sibling`, indented like it. A comment later
 * on the sibling's line stays with the sibling (we insert at the line's end), so removing the
 * inserted element with {@link removalRange} restores the text exactly. When the sibling shares
 * its line with other markup, the element is inserted compactly right after it instead.
 */
function insertAfter(
  xml: string,
  { sibling, lines, newline }: { sibling: XmlSpan; lines: string[]; newline: string },
): Splice {
  const indent = lineIndent(xml, sibling.start);
  const { at, rest } = restOfLine(xml, sibling);
  if (indent === null || !/^(?:\s|<!--(?:[^-]|-(?!->))*-->)*$/.test(rest)) {
    return { start: sibling.end, end: sibling.end, text: lines.map((l) => l.trim()).join("") };
  }
  return { start: at, end: at, text: `${newline}${indent}${indentLines(lines, indent, newline)}` };
}

/** Indentation of an element's children and the unit it adds, guessed from the document. */
function childIndent(xml: string, parent: XmlSpan, root: XmlSpan): string {
  for (const child of parent.children) {
    const indent = lineIndent(xml, child.start);
    // The child must start a line below the parent's start tag to say how children are indented.
    if (indent !== null && child.start - indent.length > parent.startTagEnd) return indent;
  }
  const own = lineIndent(xml, parent.start) ?? "";
  return own + indentUnit(xml, root);
}

function indentUnit(xml: string, root: XmlSpan): string {
  const first = root.children[0];
  if (first !== undefined) {
    const indent = lineIndent(xml, first.start);
    const rootIndent = lineIndent(xml, root.start) ?? "";
    if (indent !== null && indent.length > rootIndent.length && indent.startsWith(rootIndent)) {
      return indent.slice(rootIndent.length);
    }
  }
  return DEFAULT_UNIT;
}

/** Lines of one hostdev in libvirt's own style (single quotes, two-space nesting). */
function hostdevLines(spec: HostdevSpec): string[] {
  const address = canonicalPciAddress(spec.address);
  if (address === null) throw new TypeError(`Not a PCI address: "${spec.address}"`);
  const a = pciAddressToLibvirt(address);
  const lines = [
    `<hostdev mode='subsystem' type='pci' managed='${spec.managed ? "yes" : "no"}'>`,
    `  <source>`,
    `    <address domain='${a.domain}' bus='${a.bus}' slot='${a.slot}' function='${a.function}'/>`,
    `  </source>`,
  ];
  // libvirt formats device info in this order: boot, alias, rom, address.
  lines.push(...bootAndRomLines(spec));
  if (spec.guestAddress !== undefined) {
    const { multifunction, ...parts } = spec.guestAddress;
    const g = pciAddressToLibvirt(pciAddressFromParts(parts));
    const multi = multifunction === undefined
      ? ""
      : ` multifunction='${multifunction ? "on" : "off"}'`;
    lines.push(
      `  <address type='pci' domain='${g.domain}' bus='${g.bus}' slot='${g.slot}' function='${g.function}'${multi}/>`,
    );
  }
  lines.push(`</hostdev>`);
  return lines;
}

/** Lines of our metadata element. */
function metadataLines(
  records: DeviceIdentity[],
  vfRecords: readonly VfIdentity[],
  created: string | null,
): string[] {
  const marker = created === null ? "" : ` created='${escapeXmlAttribute(created)}'`;
  const lines = [`<passthrough:hostdevs xmlns:passthrough='${METADATA_NAMESPACE}'${marker}>`];
  for (const record of records) {
    let attrs = "";
    for (const [key, name] of Object.entries(RECORD_ATTRIBUTES)) {
      const value = record[key as keyof DeviceIdentity];
      if (value !== null && value !== undefined) attrs += ` ${name}='${escapeXmlAttribute(value)}'`;
    }
    lines.push(`  <passthrough:device${attrs}/>`);
  }
  for (const record of vfRecords) {
    lines.push(`  <passthrough:interface${vfRecordAttributes(record)}/>`);
  }
  lines.push(`</passthrough:hostdevs>`);
  return lines;
}

function recordsKey(records: DeviceIdentity[], vfRecords: readonly VfIdentity[]): string {
  return JSON.stringify([
    records
      .map((r) => Object.keys(RECORD_ATTRIBUTES).map((k) => r[k as keyof DeviceIdentity]))
      .sort((x, y) => (JSON.stringify(x) < JSON.stringify(y) ? -1 : 1)),
    vfRecords.map(vfRecordAttributes).sort(),
  ]);
}

interface Splice {
  start: number;
  end: number;
  text: string;
}

/** Joins lines for insertion at `indent`, each line after the first prefixed with it. */
function indentLines(lines: string[], indent: string, newline: string): string {
  return lines.join(newline + indent);
}

/**
 * Text to insert `lines` as the last child of `parent` (after `after`, its last kept element
 * child, if any). Returns a splice, or a replacement of a self-closing parent.
 */
function appendChild(
  xml: string,
  located: Located,
  { parent, after, lines }: { parent: XmlSpan; after: XmlSpan | null; lines: string[] },
): Splice {
  const newline = xml.includes("\r\n") ? "\r\n" : "\n";
  const indent = childIndent(xml, parent, located.root);
  if (parent.selfClosing) {
    // `<devices/>` becomes `<devices>…</devices>`; the caller records that in our marker so the
    // last removal can write `<devices/>` back.
    const own = lineIndent(xml, parent.start) ?? "";
    const startTag = xml.slice(parent.start, parent.end).replace(/\s*\/>$/, ">");
    return {
      start: parent.start,
      end: parent.end,
      text: `${startTag}${newline}${indent}${
        indentLines(lines, indent, newline)
      }${newline}${own}</${parent.name}>`,
    };
  }
  if (after !== null) return insertAfter(xml, { sibling: after, lines, newline });
  const closeIndent = lineIndent(xml, parent.endTagStart);
  if (closeIndent !== null && parent.endTagStart - closeIndent.length > parent.startTagEnd) {
    const at = parent.endTagStart - closeIndent.length;
    return {
      start: at,
      end: at,
      text: `${indent}${indentLines(lines, indent, newline)}${newline}`,
    };
  }
  // Everything on one line: insert compactly so removal (which then removes exactly the element)
  // restores the original.
  const at = parent.endTagStart;
  return { start: at, end: at, text: lines.map((l) => l.trim()).join("") };
}

function applySplices(xml: string, splices: Splice[]): string {
  splices.sort((a, b) => a.start - b.start || a.end - b.end);
  let out = "";
  let at = 0;
  for (const s of splices) {
    if (s.start < at) throw new Error("Internal error: overlapping domain XML edits");
    out += xml.slice(at, s.start) + s.text;
    at = s.end;
  }
  return out + xml.slice(at);
}

/**
 * Containers an edit created, recorded in our element's `created` attribute (space-separated) so
 * that removing the last record later restores the original text exactly: `metadata` and
 * `devices` (we added the element), `metadata-self-closing` and `devices-self-closing` (it was
 * `<metadata/>` or `<devices/>` and we opened it).
 */
type CreatedToken = "metadata" | "devices" | "metadata-self-closing" | "devices-self-closing";

/**
 * Applies `edit` to a domain's XML by splicing the original text: owned hostdevs listed in
 * `edit.remove` are deleted together with their line, those in `edit.move` get their source address
 * rewritten where they are, those in `edit.rewrite` are written again where they are (keeping the
 * children their spec does not describe, and comments), `edit.add` hostdevs are appended after the
 * last `<hostdev>` (else at the end of `<devices>`, created if missing) in libvirt's style, and our
 * metadata element is rewritten from `edit.records` (removed when empty). Everything else is
 * byte-identical, and an edit with nothing to do returns `xml` itself.
 *
 * When it has to create `<metadata>` or `<devices>` (or open a self-closing one), our element
 * records that in a `created` attribute, so that removing the last record later removes (or
 * closes) that container again when nothing else is in it.
 *
 * Throws {@link DomainXmlError} for XML {@link parseDomainXml} refuses, and
 * {@link DomainEditError} when asked to remove or move a hostdev that is absent or not owned, or
 * to add (or move to) one the domain already has.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const xml = "<domain type='kvm'>\n  <name>vm</name>\n  <devices>\n  </devices>\n</domain>\n";
 * const record = {
 *   address: "0000:01:00.0", vendorId: "10de", deviceId: "2684", subsystemVendorId: null,
 *   subsystemDeviceId: null, classCode: "030000", serial: null, driver: "nouveau", rule: "gpu",
 * };
 * const added = editDomainXml(xml, {
 *   remove: [], add: [{ address: "0000:01:00.0", managed: true }], records: [record],
 * });
 * assertEquals(parseDomainXml(added).hostdevs[0]?.owned, true);
 * assertEquals(editDomainXml(added, { remove: ["0000:01:00.0"], add: [], records: [] }), xml);
 * ```
 */
export function editDomainXml(xml: string, edit: DomainEdit): string {
  const located = locate(xml);
  const newline = xml.includes("\r\n") ? "\r\n" : "\n";
  const created = new Set(
    (located.ours?.created ?? "").split(/\s+/).filter((t) => t !== "") as CreatedToken[],
  );
  const createdBefore = [...created].sort().join(" ");
  const { removing, removedSpans } = sitesToRemove(located, edit.remove);
  const moved = moveSplices(located, edit.move ?? [], removing);
  const rewritten = rewriteSplices(xml, located, { rewrite: edit.rewrite ?? [], removing, moved });
  const vfRecords = edit.vfRecords ?? located.vfRecords;
  const lines = [
    ...controllerLines(located, edit.addControllers ?? []),
    ...linesToAdd(located, edit.add, moved.present),
  ];
  const splices = [
    ...moved.splices,
    ...rewritten,
    ...removalSplices(xml, {
      located,
      removedSpans,
      created,
      emptied: edit.records.length === 0 && vfRecords.length === 0 && lines.length === 0,
    }),
    ...additionSplices(xml, { located, removedSpans, created, lines }),
  ];
  const any = edit.records.length + vfRecords.length > 0;
  const recordsChanged = located.ours === null
    ? any
    : recordsKey(edit.records, vfRecords) !== recordsKey(located.records, located.vfRecords);
  const markerChanged = any && [...created].sort().join(" ") !== createdBefore;
  if (recordsChanged || markerChanged) {
    splices.push(
      ...metadataSplices(xml, { located, records: edit.records, vfRecords, created, newline }),
    );
  }
  if (splices.length === 0) return xml;
  return applySplices(xml, splices);
}

/** The owned hostdevs `remove` names, refusing one the domain lacks or did not get from us. */
function sitesToRemove(
  located: Located,
  remove: readonly PciAddress[],
): { removing: Set<PciAddress>; removedSpans: Set<XmlSpan> } {
  const byAddress = new Map<PciAddress, { owned: boolean; span: XmlSpan }[]>();
  const sites = [
    ...located.hostdevs.map((s) => ({ address: s.hostdev.address, owned: s.hostdev.owned, ...s })),
    ...located.interfaces.map((s) => ({ address: s.nic.address, owned: s.nic.owned, ...s })),
  ];
  for (const site of sites) {
    byAddress.set(site.address, [...(byAddress.get(site.address) ?? []), site]);
  }
  const removing = new Set<PciAddress>();
  const removedSpans = new Set<XmlSpan>();
  for (const raw of remove) {
    const address = canonicalPciAddress(raw);
    if (address === null) throw new TypeError(`Not a PCI address: "${raw}"`);
    if (removing.has(address)) continue;
    const sites = byAddress.get(address) ?? [];
    if (sites.length === 0) {
      throw new DomainEditError(
        `Cannot remove hostdev "${address}" from "${located.name}": the domain does not have it`,
        address,
      );
    }
    for (const site of sites) {
      if (!site.owned) {
        throw new DomainEditError(
          `Cannot remove hostdev "${address}" from "${located.name}": it was not added by passthrough`,
          address,
        );
      }
      removedSpans.add(site.span);
    }
    removing.add(address);
  }
  return { removing, removedSpans };
}

/**
 * Children that {@link hostdevLines} and `interfaceLines` write from a spec. An interface's spec
 * never gives a guest address, so its `<address>` stays as libvirt placed it.
 */
const SPEC_CHILDREN = {
  hostdev: new Set(["source", "boot", "rom", "address"]),
  interface: new Set(["mac", "source", "vlan", "boot", "rom"]),
};

/**
 * Children libvirt's schema interleaves with a PCI hostdev's `<source>` in a group of their own
 * (`hostdevsubsyspci`), apart from `<boot>`, `<rom>` and `<address>`: libxml2 accepts that nested
 * group only unbroken, so a `<rom>` between `<source>` and `<teaming>` fails validation. An
 * interface's children are one flat interleave, in any order.
 */
const SOURCE_GROUP = {
  hostdev: new Set(["driver", "teaming"]),
  interface: new Set<string>(),
};

/**
 * Splices writing each rewritten `<hostdev>` (or `<interface type='hostdev'>`, for a spec with
 * `interface`) again from its spec where it is, with the children its spec does not describe
 * kept as written (those before `<source>` after the start tag, those of its schema group after
 * it, the others before the guest address, else at the end); refusing one the domain lacks, has more than once, did not get
 * from us, or also removes or moves.
 */
function rewriteSplices(
  xml: string,
  located: Located,
  { rewrite, removing, moved }: {
    rewrite: readonly (HostdevSpec & { from?: PciAddress })[];
    removing: ReadonlySet<PciAddress>;
    moved: { present: Set<PciAddress> };
  },
): Splice[] {
  const newline = xml.includes("\r\n") ? "\r\n" : "\n";
  return rewrite.map((spec) => {
    const to = canonicalPciAddress(spec.address);
    const address = canonicalPciAddress(spec.from ?? spec.address);
    if (address === null || to === null) {
      throw new TypeError(`Not a PCI address: "${to === null ? spec.address : spec.from}"`);
    }
    const refuse = (why: string) =>
      new DomainEditError(
        `Cannot rewrite hostdev "${address}" of "${located.name}": ${why}`,
        address,
      );
    const nic = spec.interface !== undefined;
    const sites = nic
      ? located.interfaces.map((s) => ({
        owned: s.nic.owned,
        address: s.nic.address,
        span: s.span,
      }))
      : located.hostdevs.map((s) => ({
        owned: s.hostdev.owned,
        address: s.hostdev.address,
        span: s.span,
      }));
    const site = sites.filter((s) => s.address === address);
    const element = nic ? "<interface type='hostdev'>" : "<hostdev>";
    if (site.length !== 1 || removing.has(address) || !moved.present.has(address)) {
      throw refuse(`the domain does not have it once as ${element}, or it is also removed`);
    }
    const { span, owned } = site[0]!;
    if (!owned) throw refuse("it was not added by passthrough");
    if (to !== address) {
      if (moved.present.has(to)) throw refuse(`the domain already has "${to}"`);
      moved.present.delete(address);
      moved.present.add(to);
    }
    const described = SPEC_CHILDREN[nic ? "interface" : "hostdev"];
    const beside = SOURCE_GROUP[nic ? "interface" : "hostdev"];
    const indent = lineIndent(xml, span.start) ?? "";
    const source = span.children.find((c) => c.name === "source");
    // The user's comments directly inside the element are theirs as its other children are; one
    // inside a child the spec writes (`<source>`, `<rom>`, ...) goes with that child.
    const ownChildren = [
      ...span.children.filter((c) => !described.has(c.name)),
      ...commentsBetween(xml, span),
    ].sort((a, b) => a.start - b.start);
    const place = (c: { start: number; name?: string }) =>
      source !== undefined && c.start < source.start
        ? "before"
        : c.name !== undefined && beside.has(c.name)
        ? "beside"
        : "after";
    const kept = (where: "before" | "beside" | "after") =>
      ownChildren
        .filter((c) => place(c) === where)
        .flatMap((c) =>
          xml.slice(c.start, c.end).split(/\r?\n/).map((line, i) =>
            i === 0 ? `  ${line}` : line.startsWith(indent) ? line.slice(indent.length) : line
          )
        );
    const lines = nic ? interfaceLines(spec) : hostdevLines(spec);
    const guest = lines.findIndex((l) => l.startsWith("  <address "));
    const tail = guest === -1 ? lines.length - 1 : guest;
    const sourceEnd = lines.indexOf("  </source>") + 1;
    const text = [
      lines[0]!,
      ...kept("before"),
      ...lines.slice(1, sourceEnd),
      ...kept("beside"),
      ...lines.slice(sourceEnd, tail),
      ...kept("after"),
      ...lines.slice(tail),
    ];
    return { start: span.start, end: span.end, text: indentLines(text, indent, newline) };
  });
}

/**
 * The comments directly inside `span` (between its children, not within one), as offsets into
 * `xml`.
 */
function commentsBetween(xml: string, span: XmlSpan): { start: number; end: number }[] {
  const found: { start: number; end: number }[] = [];
  const gaps = [
    span.startTagEnd,
    ...span.children.flatMap((c) => [c.start, c.end]),
    span.endTagStart,
  ];
  for (let i = 0; i < gaps.length; i += 2) {
    const [from, to] = [gaps[i]!, gaps[i + 1]!];
    // Between children there is only text, comments, CDATA and processing instructions (the
    // scanner placed every element): a "<!--" inside CDATA or an instruction is no comment.
    for (let at = xml.indexOf("<", from); at !== -1 && at < to; at = xml.indexOf("<", at + 1)) {
      const close = xml.startsWith("<!--", at)
        ? "-->"
        : xml.startsWith("<![CDATA[", at)
        ? "]]>"
        : "?>";
      // As the scanner reads them: a comment's "-->" after its "<!--", never within it.
      const closed = xml.indexOf(close, at + (close === "-->" ? 4 : 2));
      if (closed === -1) break;
      if (close === "-->") found.push({ start: at, end: closed + 3 });
      at = closed;
    }
  }
  return found;
}

/** The lines of the PCI controllers to add, refusing an index the domain has already. */
function controllerLines(located: Located, add: readonly PciControllerSpec[]): string[] {
  const taken = new Set(located.pciControllers.map((c) => c.index));
  return add.map(({ index, model }) => {
    if (!Number.isInteger(index) || index < 1 || index > 255) {
      throw new RangeError(`PCI controller index must be 1 to 255: "${index}"`);
    }
    if (taken.has(index)) {
      throw new RangeError(
        `Cannot add PCI controller ${index} to "${located.name}": the domain already has one`,
      );
    }
    taken.add(index);
    return `<controller type='pci' index='${index}' model='${model}'/>`;
  });
}

/**
 * Splices rewriting the source address of each moved hostdev in place, refusing a `from` the
 * domain lacks, did not get from us or also removes, and a `to` it already has. `present`: the
 * host addresses the domain holds after the removals and moves.
 */
function moveSplices(
  located: Located,
  moves: readonly { from: PciAddress; to: PciAddress }[],
  removing: ReadonlySet<PciAddress>,
): { splices: Splice[]; present: Set<PciAddress> } {
  const held = heldAddresses({ ...located, hostdevs: located.hostdevs.map((s) => s.hostdev) });
  const present = new Set(held.filter((a) => !removing.has(a)));
  const splices: Splice[] = [];
  // Moves happen at once: a card may move to the address another card moves away from (new
  // hardware shifting the buses moves each card one bus on).
  const targets: [PciAddress, (why: string, address: PciAddress) => DomainEditError, PciAddress][] =
    [];
  for (const move of moves) {
    const from = canonicalPciAddress(move.from);
    const to = canonicalPciAddress(move.to);
    if (from === null || to === null) {
      throw new TypeError(`Not a PCI address: "${from === null ? move.from : move.to}"`);
    }
    const sites = located.hostdevs.filter((s) => s.hostdev.address === from);
    const refuse = (why: string, address: PciAddress) =>
      new DomainEditError(
        `Cannot move hostdev "${from}" of "${located.name}" to "${to}": ${why}`,
        address,
      );
    if (sites.length !== 1 || !present.has(from) || targets.some(([, , f]) => f === from)) {
      throw refuse("the domain does not have it once, or it is also removed", from);
    }
    if (!sites[0]!.hostdev.owned) throw refuse("it was not added by passthrough", from);
    targets.push([to, refuse, from]);
    const source = sites[0]!.span.children.find((c) => c.name === "source");
    const address = source?.children.find((c) => c.name === "address");
    if (address === undefined) throw refuse("it has no <source><address>", from);
    const a = pciAddressToLibvirt(to);
    splices.push({
      start: address.start,
      end: address.end,
      text:
        `<address domain='${a.domain}' bus='${a.bus}' slot='${a.slot}' function='${a.function}'/>`,
    });
  }
  for (const move of moves) present.delete(canonicalPciAddress(move.from)!);
  for (const [to, refuse] of targets) {
    if (present.has(to)) throw refuse("the domain already has that address", to);
    present.add(to);
  }
  return { splices, present };
}

/** The lines of the hostdevs to add, refusing one the domain holds already (`present`). */
function linesToAdd(
  located: Located,
  add: readonly HostdevSpec[],
  present: Set<PciAddress>,
): string[] {
  const lines: string[] = [];
  for (const spec of add) {
    const address = canonicalPciAddress(spec.address);
    if (address === null) throw new TypeError(`Not a PCI address: "${spec.address}"`);
    if (present.has(address)) {
      throw new DomainEditError(
        `Cannot add hostdev "${address}" to "${located.name}": the domain already has it`,
        address,
      );
    }
    present.add(address);
    lines.push(...(spec.interface === undefined ? hostdevLines(spec) : interfaceLines(spec)));
  }
  return lines;
}

/**
 * Splices deleting the removed hostdevs; or, when `emptied` (nothing added, no records left) and
 * the `<devices>` we created or opened holds nothing else, restoring its original form.
 */
function removalSplices(
  xml: string,
  { located, removedSpans, created, emptied }: {
    located: Located;
    removedSpans: ReadonlySet<XmlSpan>;
    created: ReadonlySet<CreatedToken>;
    emptied: boolean;
  },
): Splice[] {
  const { devices } = located;
  if (
    emptied && devices !== null &&
    (created.has("devices") || created.has("devices-self-closing")) &&
    onlyWhitespaceBesides(xml, devices, removedSpans)
  ) {
    if (!created.has("devices")) {
      return [{ start: devices.start, end: devices.end, text: `<${devices.name}/>` }];
    }
    const [start, end] = removalRange(xml, devices);
    return [{ start, end, text: "" }];
  }
  return [...removedSpans].map((span) => {
    const [start, end] = removalRange(xml, span);
    return { start, end, text: "" };
  });
}

/**
 * The splice appending `lines` after the last kept `<hostdev>` (else at the end of `<devices>`,
 * created or opened if need be, which `created` then records).
 */
function additionSplices(
  xml: string,
  { located, removedSpans, created, lines }: {
    located: Located;
    removedSpans: ReadonlySet<XmlSpan>;
    created: Set<CreatedToken>;
    lines: string[];
  },
): Splice[] {
  if (lines.length === 0) return [];
  const { devices, root } = located;
  if (devices === null) {
    const unit = indentUnit(xml, root);
    const wrapped = ["<devices>", ...lines.map((l) => unit + l), "</devices>"];
    created.add("devices");
    return [appendChild(xml, located, { parent: root, after: null, lines: wrapped })];
  }
  if (devices.selfClosing) created.add("devices-self-closing");
  const kept = devices.children.filter((c) => c.name === "hostdev" && !removedSpans.has(c));
  return [appendChild(xml, located, { parent: devices, after: kept.at(-1) ?? null, lines })];
}

/** Whether `parent` holds nothing but whitespace and the `removed` children. */
function onlyWhitespaceBesides(
  xml: string,
  parent: XmlSpan,
  removed: ReadonlySet<XmlSpan>,
): boolean {
  if (parent.selfClosing) return true;
  let at = parent.startTagEnd;
  for (const child of parent.children) {
    if (!removed.has(child)) return false;
    if (xml.slice(at, child.start).trim() !== "") return false;
    at = child.end;
  }
  return xml.slice(at, parent.endTagStart).trim() === "";
}

function metadataSplices(
  xml: string,
  { located, records, vfRecords, created, newline }: {
    located: Located;
    records: DeviceIdentity[];
    vfRecords: VfIdentity[];
    created: Set<CreatedToken>;
    newline: string;
  },
): Splice[] {
  const { ours, metadata, root } = located;
  const marker = () => {
    const tokens = [...created].sort().join(" ");
    return tokens === "" ? null : tokens;
  };
  if (ours !== null) {
    if (records.length + vfRecords.length > 0) {
      const indent = lineIndent(xml, ours.span.start) ?? "";
      return [{
        start: ours.span.start,
        end: ours.span.end,
        text: indentLines(metadataLines(records, vfRecords, marker()), indent, newline),
      }];
    }
    // Remove our element; and restore the <metadata> we created or opened, when it is left empty.
    if (metadata !== null && onlyWhitespaceBesides(xml, metadata, new Set([ours.span]))) {
      if (created.has("metadata")) {
        const [start, end] = removalRange(xml, metadata);
        return [{ start, end, text: "" }];
      }
      if (created.has("metadata-self-closing")) {
        return [{ start: metadata.start, end: metadata.end, text: `<${metadata.name}/>` }];
      }
    }
    const [start, end] = removalRange(xml, ours.span);
    return [{ start, end, text: "" }];
  }
  if (records.length + vfRecords.length === 0) return [];
  if (metadata !== null) {
    if (metadata.selfClosing) created.add("metadata-self-closing");
    const after = metadata.children.at(-1) ?? null;
    return [
      appendChild(xml, located, {
        parent: metadata,
        after,
        lines: metadataLines(records, vfRecords, marker()),
      }),
    ];
  }
  created.add("metadata");
  const unit = indentUnit(xml, root);
  const lines = [
    "<metadata>",
    ...metadataLines(records, vfRecords, marker()).map((l) => unit + l),
    "</metadata>",
  ];
  // libvirt's schema interleaves <domain>'s children, so any place is valid; libvirt itself
  // writes <metadata> after the identity elements, so we put it there.
  const anchor = root.children.filter((c) =>
    ["name", "uuid", "genid", "title", "description"].includes(c.name)
  ).at(-1);
  if (anchor === undefined) {
    return [appendChild(xml, located, { parent: root, after: null, lines })];
  }
  return [insertAfter(xml, { sibling: anchor, lines, newline })];
}

/**
 * Whether `readBack`, a definition libvirt returned, reads as `defined` (what a define sent)
 * outside what an edit of {@link editDomainXml} changes: PCI hostdevs, `<interface
 * type='hostdev'>`s, PCI controllers (libvirt adds root ports for new hostdevs) and our metadata
 * element. libvirt's rendering is allowed for: attribute quotes, indentation, the order of
 * `<devices>`' children, an empty `<metadata>`, and guest addresses of those elements. `false`
 * means another client defined the domain since: restoring a backup over it would lose that.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const sent = "<domain><name>a</name><devices><hostdev type='pci'/><memballoon/></devices></domain>";
 * const echo = '<domain>\n  <name>a</name>\n  <devices>\n    <memballoon/>\n  </devices>\n</domain>';
 * assertEquals(sameBesidesHostdevs(sent, echo), true);
 * assertEquals(sameBesidesHostdevs(sent, echo.replace("<memballoon/>", "<watchdog/>")), false);
 * ```
 */
export function sameBesidesHostdevs(defined: string, readBack: string): boolean {
  return canonicalBesidesHostdevs(readXmlElement(defined), null) ===
    canonicalBesidesHostdevs(readXmlElement(readBack), null);
}

/**
 * Whether `readBack` is libvirt's rendering of `defined`, the text of one PCI `<hostdev>` or
 * `<interface type='hostdev'>`: the same besides attribute quotes, indentation, an `<alias>`, and
 * what libvirt fills in where `defined` has none: a guest `<address>`, the default backend
 * (`<driver name='vfio'/>` on a QEMU host with VFIO, `<driver name='xen'/>` on Xen) and an
 * interface's generated `<target>` device name (the test driver's `testnet0`). Any other change,
 * such as a `<rom>` line, another `<driver>` or another `managed`, is not libvirt's.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const sent = "<hostdev mode='subsystem' type='pci'><source/></hostdev>";
 * const echo = "<hostdev mode='subsystem' type='pci'>\n  <source/>\n  <address type='pci'/>\n</hostdev>";
 * assertEquals(samePciDevice(sent, echo), true);
 * assertEquals(samePciDevice(sent, echo.replace("<source/>", "<driver name='vfio'/><source/>")), true);
 * assertEquals(samePciDevice(sent, echo.replace("<source/>", "<source/><rom bar='off'/>")), false);
 * assertEquals(samePciDevice(sent, echo.replace("<source/>", "<driver name='kvm'/><source/>")), false);
 * ```
 */
export function samePciDevice(defined: string, readBack: string): boolean {
  const sent = readXmlElement(defined);
  const has = (name: string) => sent.children.some((c) => c.name === name);
  const filled = (c: XmlElement) =>
    c.name === "alias" || (!has(c.name) && ["address", "target"].includes(c.name)) ||
    (c.name === "driver" && !has("driver") && isDefaultBackend(c));
  // Compared in any order of its children: libvirt writes them in its own order, and an element
  // apply rewrote keeps the user's children where they were.
  const text = ({ name, attributes, text, children }: XmlElement) =>
    JSON.stringify([
      name,
      Object.entries(attributes).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      text.trim(),
      children.filter((c) => !filled(c)).map((c) => canonicalBesidesHostdevs(c, name)).sort(),
    ]);
  return text(sent) === text(readXmlElement(readBack));
}

/** Whether `driver` is only a backend libvirt picks for a PCI device given none. */
function isDefaultBackend(driver: XmlElement): boolean {
  const names = Object.keys(driver.attributes);
  return driver.children.length === 0 && names.length === 1 && names[0] === "name" &&
    ["vfio", "xen"].includes(driver.attributes.name ?? "");
}

/** One string per element for {@link sameBesidesHostdevs}, `null` for what it leaves out. */
function canonicalBesidesHostdevs(element: XmlElement, parent: string | null): string | null {
  const { name, attributes } = element;
  if (
    parent === "devices" &&
    ((name === "hostdev" && attributes.type === "pci") ||
      (name === "interface" && attributes.type === "hostdev") ||
      (name === "controller" && attributes.type === "pci"))
  ) {
    return null;
  }
  if (parent === "metadata" && Object.values(attributes).includes(METADATA_NAMESPACE)) return null;
  const children = element.children.flatMap((child) => {
    const text = canonicalBesidesHostdevs(child, name);
    return text === null ? [] : [text];
  });
  // libvirt writes a domain's devices grouped by kind, whatever order a define gave.
  if (name === "devices") children.sort();
  const text = element.text.trim();
  if (name === "metadata" && children.length === 0 && text === "") return null;
  const attrs = Object.entries(attributes).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify([name, attrs, text, children]);
}
