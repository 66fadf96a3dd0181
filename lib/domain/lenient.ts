/**
 * The lenient reader: domain XML text the strict reader (`domain_xml.ts`) does not read, read by
 * its start tags alone. For a definition the strict reader refuses, the host PCI devices it names
 * (planning still counts them as held); for the start guard, the passthrough records, trusted
 * only in a document whose tags nest (see {@link readRecordsLeniently}); for the lines of a
 * definition, comparison keys that ignore quote style and spacing outside text (the diff shown
 * before a define); for any text taken from a definition, its secrets hidden. Never throws.
 *
 * It loads no XML library (nor `xml.ts`, which does): the start hook reads the domain with this
 * module alone, at every VM start.
 *
 * @module
 */

import type { PciAddress } from "../host/types.ts";
import { BAD_AMPERSAND, decodeEntities, isXmlChar } from "./entities.ts";
import { type UsbSource, usbSourceFrom } from "./usb_source.ts";
import { CHAR_DEVICE_SOURCES, charSourceAttribute } from "./char_source.ts";
import type { NetworkDevice, UsedDevices } from "./device_uses.ts";
import type { DeviceIdentity, VfIdentity } from "../plan/types.ts";
import { canonicalPciAddress, comparePciAddress, pciAddressFromLibvirt } from "../pci/address.ts";

/** What {@link scanHostdevsLeniently} finds in a domain XML, however damaged. */
export interface LenientHostdevScan {
  /**
   * Host addresses named by `<hostdev type='pci'>` (mode subsystem) and `<interface
   * type='hostdev'>` sources: canonical, sorted, without duplicates.
   */
  addresses: PciAddress[];
  /**
   * How many elements that may hold a host PCI device (a PCI hostdev, a hostdev whose type cannot
   * be read, a hostdev interface) name no host address the scan could read. Anything above 0
   * means the domain may hold devices that `addresses` does not list.
   */
  unresolved: number;
}

/** A start tag's `<` and name; {@link tagClose} finds its `>`. */
const START_TAG_NAME = /<[A-Za-z_][\w.:-]*/y;
/** One attribute in either quote: its name, then its value in group 2 (`'`) or 3 (`"`). */
// A name starts after whitespace: without that, a long run of name characters with no `=` is
// tried from each of its positions (time growing with the square of its length).
const ATTRIBUTE_SOURCE = String.raw`(?<=\s)([^\s=<>/"']+)\s*=\s*(?:'([^']*)'|"([^"]*)")`;
const ATTRIBUTE = new RegExp(ATTRIBUTE_SOURCE, "g");
const DEVICE_START = /<(hostdev|interface|disk)(?=[\s/>]|$)/g;
/** hostdev types that never hold a whole host PCI device (strict reading skips them too). */
const NOT_PCI_TYPES = new Set(["usb", "scsi", "scsi_host", "mdev"]);

interface LenientTag {
  attributes: Record<string, string>;
  /** The text between the name and `>`. */
  raw: string;
  selfClosing: boolean;
  /** Index just after the tag's `>`. */
  end: number;
}

/** Whitespace as regular expressions' `\s` means it, which the scan's tag names end at. */
const SPACE = /\s/;

/** Whether a tag's name that ends before `at` in `text` ends there: at whitespace, `>`, `/`. */
function nameEndsAt(text: string, at: number, slash = true): boolean {
  const next = text[at];
  return next === undefined || next === ">" || (slash && next === "/") || SPACE.test(next);
}

/**
 * The index of the first `<name` at or after `from` whose name ends there (the start tag of a
 * `name` element, not of `nameX`), or -1; with `end`, of the first `</name` so followed.
 */
function findTag(text: string, name: string, from = 0, end = false): number {
  const open = end ? `</${name}` : `<${name}`;
  for (let at = text.indexOf(open, from); at !== -1; at = text.indexOf(open, at + 1)) {
    if (nameEndsAt(text, at + open.length, !end)) return at;
  }
  return -1;
}

/** The first whole end tag `</name>` (spaces allowed before `>`) at or after `from`. */
function findEndTag(
  text: string,
  name: string,
  from: number,
): { index: number; end: number } | null {
  const open = `</${name}`;
  for (let at = text.indexOf(open, from); at !== -1; at = text.indexOf(open, at + 1)) {
    let i = at + open.length;
    while (i < text.length && SPACE.test(text[i]!)) i++;
    if (text[i] === ">") return { index: at, end: i + 1 };
  }
  return null;
}

/**
 * The index of the `>` that ends a tag whose name ends at `from`, past quoted values (which may
 * hold `>`), or -1 when none does before the next `<` (libvirt escapes `<` in values). Scanned by
 * hand: a regular expression repeating a group over a tag of a few MB overflows the stack.
 */
function tagClose(text: string, from: number): number {
  const stop = text.indexOf("<", from);
  const limit = stop === -1 ? text.length : stop;
  for (let i = from; i < limit; i++) {
    const c = text[i];
    if (c === ">") return i;
    if (c === "'" || c === '"') {
      i = text.indexOf(c, i + 1);
      if (i === -1 || i > limit) return -1;
    }
  }
  return -1;
}

/** The start tag at `index` of `text`, or `null` when no complete tag starts there. */
function lenientTag(text: string, index: number): LenientTag | null {
  START_TAG_NAME.lastIndex = index;
  if (!START_TAG_NAME.test(text)) return null;
  const from = START_TAG_NAME.lastIndex;
  const close = tagClose(text, from);
  if (close === -1) return null;
  const raw = text.slice(from, close);
  const attributes: Record<string, string> = {};
  for (const a of raw.matchAll(ATTRIBUTE)) {
    const name = a[1]!;
    if (Object.hasOwn(attributes, name)) continue;
    const value = a[2] ?? a[3] ?? "";
    // A bad entity: kept raw, so a number in it fails to read and counts as unresolved.
    attributes[name] = decodeEntities(value) ?? value;
  }
  return {
    attributes,
    raw,
    selfClosing: raw.trimEnd().endsWith("/"),
    end: close + 1,
  };
}

/**
 * The index just after the `</metadata>` that closes the `<metadata>` whose start tag ends at
 * `from`, or -1 when it does not close. Other applications' content may hold `<metadata>`
 * elements of its own (in another namespace, unprefixed) and comments, CDATA sections and
 * processing instructions saying `</metadata>`, all kept verbatim by libvirt: the first
 * `</metadata>` is not always the end.
 */
function metadataEnd(xml: string, from: number): number {
  let depth = 1;
  for (let i = from;;) {
    const lt = xml.indexOf("<", i);
    if (lt === -1) return -1;
    const skipped = xml.startsWith("<!--", lt)
      ? ["-->", 4]
      : xml.startsWith("<![CDATA[", lt)
      ? ["]]>", 9]
      : xml.startsWith("<?", lt)
      ? ["?>", 2]
      : null;
    if (skipped !== null) {
      const [terminator, length] = skipped as [string, number];
      const end = xml.indexOf(terminator, lt + length);
      if (end === -1) return -1;
      i = end + terminator.length;
    } else if (xml.startsWith("</metadata", lt)) {
      let end = lt + 10;
      while (end < xml.length && SPACE.test(xml[end]!)) end++;
      if (xml[end] === ">" && --depth === 0) return end + 1;
      i = end;
    } else if (xml.startsWith("<metadata", lt) && nameEndsAt(xml, lt + 9)) {
      const tag = lenientTag(xml, lt);
      if (tag === null) return -1;
      if (!tag.selfClosing) depth++;
      i = tag.end;
    } else {
      i = lt + 1;
    }
  }
}

/**
 * `xml` with comments, CDATA sections, processing instructions and `<metadata>` blanked out
 * (same length, so indexes still match): none of them holds a device, and `<metadata>` is
 * copied verbatim from whatever other applications wrote, so it may say `<hostdev>` or
 * `<forward>` freely (and `</metadata>` inside a comment, or in a `<metadata>` of its own:
 * {@link metadataEnd}). A construct left unterminated is not blanked: what follows it may
 * still be devices. With `keepMetadata`, `<metadata>` stays (for reading the records in it).
 */
function blankNonDevices(xml: string, keepMetadata = false): string {
  // libvirt writes none of these, so in most definitions only <metadata> is to be blanked.
  const plain = !xml.includes("<!--") && !xml.includes("<![CDATA[") && !xml.includes("<?");
  if (plain && (keepMetadata || findTag(xml, "metadata") === -1)) return xml;
  // Once a terminator is missing it is missing for every later opener too: stop looking.
  const exhausted = new Set<string>();
  const through = (terminator: string, from: number): number => {
    if (exhausted.has(terminator)) return -1;
    const found = terminator === "</metadata"
      ? metadataEnd(xml, from)
      : xml.indexOf(terminator, from);
    if (found === -1) exhausted.add(terminator);
    return found === -1 || terminator === "</metadata" ? found : found + terminator.length;
  };
  let out = "";
  let i = 0;
  while (i < xml.length) {
    // Only <metadata> to blank: straight to the next one.
    const lt = plain ? findTag(xml, "metadata", i) : xml.indexOf("<", i);
    if (lt === -1) {
      out += xml.slice(i);
      break;
    }
    out += xml.slice(i, lt);
    let end = -1;
    if (xml.startsWith("<!--", lt)) end = through("-->", lt + 4);
    else if (xml.startsWith("<![CDATA[", lt)) end = through("]]>", lt + 9);
    else if (xml.startsWith("<?", lt)) end = through("?>", lt + 2);
    else if (!keepMetadata && xml.startsWith("<metadata", lt) && nameEndsAt(xml, lt + 9)) {
      const tag = lenientTag(xml, lt);
      if (tag?.selfClosing) end = tag.end;
      else if (tag !== null) end = through("</metadata", tag.end);
    }
    if (end === -1) {
      out += "<";
      i = lt + 1;
    } else {
      out += " ".repeat(end - lt);
      i = end;
    }
  }
  return out;
}

/**
 * The host address in the `<source>` of the element whose content is `body`: the first
 * `<address>` between `<source>` and `</source>`, never the guest-side `<address>` that follows
 * `</source>`. `null` when there is no complete source or no readable PCI address in it;
 * `"not-pci"` when the source address says another bus.
 */
function sourceAddress(body: string): PciAddress | "not-pci" | null {
  const open = findTag(body, "source");
  if (open === -1) return null;
  const tag = lenientTag(body, open);
  if (tag === null || tag.selfClosing) return null;
  const closing = findEndTag(body, "source", tag.end);
  if (closing === null) return null;
  const inside = body.slice(tag.end, closing.index);
  const at = findTag(inside, "address");
  if (at === -1) return null;
  const address = lenientTag(inside, at);
  if (address === null) return null;
  const type = address.attributes.type;
  if (type !== undefined && type !== "pci") return "not-pci";
  return pciAddressFromLibvirt(address.attributes);
}

/**
 * Reads the host PCI addresses a domain XML names even when {@link parseDomainXml} refuses it
 * (malformed XML, a damaged passthrough record, ...), so planning can still count them as held:
 * the `<source>` address of every `<hostdev type='pci'>` and every `<interface type='hostdev'>`.
 * Tolerates either quote, any attribute order, whitespace around `=`, entities, and hex or
 * decimal numbers as libvirt reads them. The guest-side `<address>` (outside `<source>`) is never
 * taken. Comments, CDATA, processing instructions and `<metadata>` are not searched. Never throws.
 *
 * `unresolved` counts the elements that may hold a PCI device but whose host address cannot be
 * read: a caller must not treat such a domain as holding only `addresses`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const xml = `<domain><name>vm</name><devices>
 *   <hostdev managed="yes" type="pci" mode="subsystem">
 *     <source><address bus="3" slot="0" function="1"/></source>
 *     <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>
 *   </hostdev>
 *   <interface type='hostdev'><source><address type='pci' bus='0x01' slot='0x10' function='0x2'/></source></interface>
 *   <hostdev mode='subsystem' type='pci'><source/></hostdev>
 * </devices`; // truncated: parseDomainXml() refuses it
 * assertEquals(scanHostdevsLeniently(xml), {
 *   addresses: ["0000:01:10.2", "0000:03:00.1"],
 *   unresolved: 1,
 * });
 * assertEquals(scanHostdevsLeniently("not xml at all"), { addresses: [], unresolved: 0 });
 * ```
 */
export function scanHostdevsLeniently(xml: string): LenientHostdevScan {
  const { devices, unresolved } = scanPassedDevicesLeniently(xml);
  return { addresses: devices.map((d) => d.address), unresolved };
}

/** A host PCI address a domain passes through, and the kind of element that names it. */
export interface LenientPassedDevice {
  /** The canonical host address. */
  address: PciAddress;
  /**
   * `hostdev` when a `<hostdev>` names it, else `interface` (`<interface type='hostdev'>`) or
   * `disk` (`<disk type='nvme'>`, whose PCI controller libvirt detaches from the host as it does
   * a managed hostdev's).
   */
  element: PassedElement;
}

/** The elements that pass a host PCI function to the guest. */
export type PassedElement = "hostdev" | "interface" | "disk";

/** What {@link scanPassedDevicesLeniently} finds. */
export interface LenientPassedScan extends UsedDevices {
  /** Sorted by address, one per address. */
  devices: LenientPassedDevice[];
  /** As in {@link LenientHostdevScan}. */
  unresolved: number;
  /**
   * The elements counted in `unresolved`, each once, for a user to find in `virsh dumpxml`: the
   * element's name and its number among the elements of that name, then its start tag, cut.
   */
  unresolvedElements: string[];
}

/** How much of an unresolved element's start tag its description shows. */
const SHOWN_TAG = 80;

/** `<hostdev> #2 <hostdev mode='subsystem' type='pci'>` for the second `<hostdev>` at `element`. */
function elementLabel(name: string, number: number, element: string): string {
  const stop = element.indexOf("<", 1);
  const close = element.indexOf(">");
  const end = Math.min(stop === -1 ? element.length : stop, close === -1 ? Infinity : close + 1);
  const tag = element.slice(0, end).replace(/\s+/g, " ");
  return `<${name}> #${number} ${tag.length > SHOWN_TAG ? `${tag.slice(0, SHOWN_TAG)}...` : tag}`;
}

/**
 * {@link scanHostdevsLeniently}, saying for each address which kind of element names it (for
 * the start guard's messages).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const xml = `<domain><devices><interface type='hostdev'><source>
 *   <address type='pci' domain='0' bus='1' slot='0x10' function='2'/></source></interface>
 * </devices></domain>`;
 * assertEquals(scanPassedDevicesLeniently(xml), {
 *   devices: [{ address: "0000:01:10.2", element: "interface" }],
 *   unresolved: 0,
 *   unresolvedElements: [],
 *   networks: [],
 *   networkDevices: [],
 *   blockDisks: [],
 *   usbDevices: [],
 *   scsiHosts: [],
 *   mdevs: [],
 *   netDevices: [],
 *   charDevices: [],
 * });
 * ```
 */
export function scanPassedDevicesLeniently(xml: string): LenientPassedScan {
  const text = blankNonDevices(String(xml));
  const starts = [...text.matchAll(DEVICE_START)];
  const scan: PassedScanState = {
    found: new Map(),
    networks: new Set(),
    blockDisks: new Set(),
    usbDevices: [],
    scsiHosts: new Set(),
    mdevs: new Set(),
    netDevices: new Set(),
    networkDevices: new Map(),
    unresolved: 0,
  };
  const numbers = new Map<string, number>();
  const unresolvedElements: string[] = [];
  starts.forEach((start, n) => {
    const name = start[1] as PassedElement;
    const number = (numbers.get(name) ?? 0) + 1;
    numbers.set(name, number);
    // An element ends at its end tag or, when that is missing, where the next device starts.
    const element = text.slice(start.index, starts[n + 1]?.index ?? text.length);
    const before = scan.unresolved;
    scanElement(name, element, scan);
    if (scan.unresolved > before) unresolvedElements.push(elementLabel(name, number, element));
  });
  const devices = [...scan.found].map(([address, element]) => ({ address, element }));
  return {
    devices: devices.sort((a, b) => comparePciAddress(a.address, b.address)),
    unresolved: scan.unresolved,
    unresolvedElements,
    networks: [...scan.networks].sort(),
    networkDevices: [...scan.networkDevices.values()],
    blockDisks: [...scan.blockDisks].sort(),
    usbDevices: scan.usbDevices,
    scsiHosts: [...scan.scsiHosts].sort(),
    mdevs: [...scan.mdevs].sort(),
    netDevices: [...scan.netDevices].sort(),
    charDevices: charDeviceSources(text, starts.map((s) => s.index)),
  };
}

/** One `<hostdev>`, `<interface>` or `<disk>` whose text, to the next such element, is `element`. */
function scanElement(name: PassedElement, element: string, scan: PassedScanState): void {
  const tag = lenientTag(element, 0);
  if (tag === null) {
    // A start tag that does not even close: count it when it may be a PCI device.
    const stop = element.indexOf("<", 1);
    const head = element.slice(name.length + 1, stop === -1 ? element.length : stop);
    if (name === "hostdev" || head.includes("hostdev") || head.includes("nvme")) {
      scan.unresolved++;
    }
    return;
  }
  const { type, mode } = tag.attributes;
  // An interface whose type cannot be read but that says hostdev is taken to be one.
  const hostdevInterface = type === "hostdev" ||
    (type === undefined && tag.raw.includes("hostdev"));
  if (name === "disk") scanDisk(tag, element, scan);
  else if (name === "interface" && !hostdevInterface) scanNetInterface(tag, element, scan);
  else if (name === "hostdev" && (mode === "capabilities" || NOT_PCI_TYPES.has(type ?? ""))) {
    scanOtherHostdev(tag, element, scan);
  } else scanPciSource(name, tag, element, scan);
}

/** What {@link scanPassedDevicesLeniently} has found so far. */
interface PassedScanState {
  found: Map<PciAddress, PassedElement>;
  networks: Set<string>;
  blockDisks: Set<string>;
  usbDevices: UsbSource[];
  scsiHosts: Set<string>;
  mdevs: Set<string>;
  netDevices: Set<string>;
  networkDevices: Map<string, NetworkDevice>;
  unresolved: number;
}

/** A `<disk>`: its block device, and the NVMe controllers of its source and backing chain. */
function scanDisk(tag: LenientTag, element: string, scan: PassedScanState): void {
  const inside = tag.selfClosing ? "" : elementContent(element.slice(tag.end), "disk");
  for (const dev of sourceDevices(inside)) scan.blockDisks.add(dev);
  for (const address of nvmeSources(tag, inside)) {
    if (address === null) scan.unresolved++;
    else if (address !== "not-pci" && !scan.found.has(address)) scan.found.set(address, "disk");
  }
}

/**
 * An `<interface>` other than a hostdev one: its network, and the host interface it stands on. A
 * running guest's interface on a network shows the network and the device it gave: in its live
 * XML as the interface's type and source, in its status as an `<actual>` element.
 */
function scanNetInterface(tag: LenientTag, element: string, scan: PassedScanState): void {
  const { type } = tag.attributes;
  const source = (key: string) =>
    tag.selfClosing ? null : interfaceSourceAttribute(element.slice(tag.end), key);
  const network = source("network");
  if (network !== null) scan.networks.add(network);
  const actual = network === null || tag.selfClosing ? null : actualDevice(element.slice(tag.end));
  const netDevice = type === "direct"
    ? source("dev")
    : type === "bridge"
    ? source("bridge")
    : actual;
  if (netDevice !== null && network === null) scan.netDevices.add(netDevice);
  if (netDevice !== null && network !== null) {
    scan.networkDevices.set(`${network}\n${netDevice}`, { network, device: netDevice });
  }
  // A running guest's interface on a hostdev network: the VF the network gave it, passed.
  const vf = network === null || tag.selfClosing ? null : actualHostdev(element.slice(tag.end));
  if (vf !== null && scan.found.get(vf) !== "hostdev") scan.found.set(vf, "interface");
}

/** A USB, SCSI or mediated hostdev (or a capabilities one): the host device it takes. */
function scanOtherHostdev(tag: LenientTag, element: string, scan: PassedScanState): void {
  const { type, mode } = tag.attributes;
  const inside = mode === "capabilities" || tag.selfClosing
    ? null
    : elementContent(element.slice(tag.end), "hostdev");
  const usb = type === "usb" && inside !== null ? usbSource(inside) : null;
  if (usb !== null) scan.usbDevices.push(usb);
  const adapter = type === "scsi" && inside !== null ? scsiAdapter(inside) : null;
  if (adapter !== null) scan.scsiHosts.add(adapter);
  const mdev = type === "mdev" && inside !== null ? mdevUuid(inside) : null;
  if (mdev !== null) scan.mdevs.add(mdev);
}

/** A PCI hostdev or hostdev interface: its source address, or one more unresolved device. */
function scanPciSource(
  name: PassedElement,
  tag: LenientTag,
  element: string,
  scan: PassedScanState,
): void {
  if (tag.selfClosing) {
    scan.unresolved++;
    return;
  }
  const content = element.slice(tag.end);
  const close = findTag(content, name, 0, true);
  const address = sourceAddress(content.slice(0, close === -1 ? content.length : close));
  if (address === null) scan.unresolved++;
  else if (address !== "not-pci" && scan.found.get(address) !== "hostdev") {
    scan.found.set(address, name);
  }
}

/** The start tag of an element whose source may be a host character device. */
const CHAR_DEVICE_START = new RegExp(
  `<(${[...new Set(CHAR_DEVICE_SOURCES.map((s) => s.element))].join("|")})(?=[\\s/>]|$)`,
  "g",
);

/**
 * The `/dev` paths of the host character devices the elements of {@link CHAR_DEVICE_SOURCES}
 * in `text` use (sorted, unique); `deviceStarts` are where the scan's other devices start. Only
 * an element whose `type` says so counts, which leaves out a disk's `<serial>` (it has none).
 */
function charDeviceSources(text: string, deviceStarts: readonly number[]): string[] {
  const paths = new Set<string>();
  const starts = [...text.matchAll(CHAR_DEVICE_START)];
  starts.forEach((start, n) => {
    const name = start[1]!;
    const tag = lenientTag(text, start.index);
    const char = tag === null ? null : charSourceAttribute(name, tag.attributes.type);
    if (tag === null || tag.selfClosing || char === null) return;
    // Its content ends at its end tag or, when that is missing, where the next device starts.
    const next = Math.min(
      starts[n + 1]?.index ?? text.length,
      deviceStarts.find((at) => at > start.index) ?? text.length,
    );
    const inside = elementContent(text.slice(tag.end, next), name);
    const open = findTag(inside, "source");
    const path = open === -1 ? undefined : lenientTag(inside, open)?.attributes[char];
    if (path) paths.add(path);
  });
  return [...paths].sort();
}

/**
 * The host interface in the `<actual type='direct'>` (`<source dev>`) or `type='bridge'`
 * (`<source bridge>`) element of an interface whose content starts `body`, as a running
 * domain's status XML gives the device its network gave it; `null` when there is none.
 */
function actualDevice(body: string): string | null {
  const inside = elementContent(body, "interface");
  const at = findTag(inside, "actual");
  const actual = at === -1 ? null : lenientTag(inside, at);
  const type = actual?.attributes.type;
  if (actual === null || actual.selfClosing || (type !== "direct" && type !== "bridge")) {
    return null;
  }
  const content = elementContent(inside.slice(actual.end), "actual");
  const open = findTag(content, "source");
  const value = open === -1
    ? undefined
    : lenientTag(content, open)?.attributes[type === "direct" ? "dev" : "bridge"];
  return value ? value : null;
}

/**
 * The PCI address of the VF in an interface's `<actual type='hostdev'>` (content `body`), as a
 * running guest's status shows the device a hostdev network gave it; `null` for anything else.
 */
function actualHostdev(body: string): PciAddress | null {
  const inside = elementContent(body, "interface");
  const at = findTag(inside, "actual");
  const actual = at === -1 ? null : lenientTag(inside, at);
  if (actual === null || actual.selfClosing || actual.attributes.type !== "hostdev") return null;
  const address = sourceAddress(elementContent(inside.slice(actual.end), "actual"));
  return address === null || address === "not-pci" ? null : address;
}

/** The content of an `element` whose content starts `body`: up to its end tag, if any. */
function elementContent(body: string, element: string): string {
  const close = findTag(body, element, 0, true);
  return close === -1 ? body : body.slice(0, close);
}

/** Whether a tag's `type` says `nvme`; one whose type cannot be read but says nvme is taken to be. */
function saysNvme(tag: LenientTag): boolean {
  const type = tag.attributes.type;
  return type === "nvme" || (type === undefined && tag.raw.includes("nvme"));
}

/**
 * The host PCI addresses of the NVMe controllers in a disk's storage chain (start tag `disk`,
 * content `inside`): its own source when the disk is `type='nvme'`, and that of every
 * `<backingStore type='nvme'>` at any depth. libvirt detaches each of them from the host at
 * start as it does a managed hostdev (`virHostdevPrepareNVMeDevices` walks the backing chain),
 * and a disk-only snapshot of an NVMe disk writes such a backing store. `null` for one whose
 * address cannot be read. A disk without a source has nothing to detach (libvirt's schema
 * allows it).
 */
function nvmeSources(
  disk: LenientTag,
  inside: string,
): Array<PciAddress | "not-pci" | null> {
  const addresses: Array<PciAddress | "not-pci" | null> = [];
  if (saysNvme(disk) && findTag(inside, "source") !== -1) addresses.push(sourceAddress(inside));
  for (let at = findTag(inside, "backingStore"); at !== -1;) {
    const store = lenientTag(inside, at);
    if (store === null) {
      // A start tag that does not even close: counted when it may be an NVMe one.
      const stop = inside.indexOf("<", at + 1);
      if (inside.slice(at, stop === -1 ? inside.length : stop).includes("nvme")) {
        addresses.push(null);
      }
    } else if (saysNvme(store)) {
      // Its own <source> comes before the <backingStore> it nests (libvirt's order).
      addresses.push(store.selfClosing ? null : sourceAddress(inside.slice(store.end)));
    }
    at = findTag(inside, "backingStore", at + 1);
  }
  return addresses;
}

/**
 * The `dev` of every `<source>` in a disk's content `inside`: its own (`type='block'`) and those
 * of block backing stores, mirrors and data stores, which QEMU holds open as well.
 */
function sourceDevices(inside: string): string[] {
  const devices: string[] = [];
  for (let at = findTag(inside, "source"); at !== -1; at = findTag(inside, "source", at + 1)) {
    const dev = lenientTag(inside, at)?.attributes.dev;
    if (dev) devices.push(dev);
  }
  return devices;
}

/**
 * The host adapter (`scsi_host2`) of a SCSI hostdev whose content is `inside`; `null` for an
 * iSCSI one (`<source protocol='iscsi'>`) or one without an adapter name.
 */
function scsiAdapter(inside: string): string | null {
  const open = findTag(inside, "source");
  const source = open === -1 ? null : lenientTag(inside, open);
  const protocol = source?.attributes.protocol;
  if (source === null || protocol === "iscsi") return null;
  const at = findTag(inside, "adapter", open);
  return (at === -1 ? undefined : lenientTag(inside, at)?.attributes.name) || null;
}

/** The UUID (lower case) in the `<source><address uuid>` of a mediated device's hostdev. */
function mdevUuid(inside: string): string | null {
  const open = findTag(inside, "source");
  const at = open === -1 ? -1 : findTag(inside, "address", open);
  const uuid = at === -1 ? undefined : lenientTag(inside, at)?.attributes.uuid;
  return uuid ? uuid.trim().toLowerCase() : null;
}

/** The source of a USB hostdev whose content is `inside`, or `null` when it cannot be read. */
function usbSource(inside: string): UsbSource | null {
  const open = findTag(inside, "source");
  const source = open === -1 ? null : lenientTag(inside, open);
  if (source === null || source.selfClosing) return null;
  const content = elementContent(inside.slice(source.end), "source");
  const attributeOf = (name: string, key: string) => {
    const at = findTag(content, name);
    return at === -1 ? undefined : lenientTag(content, at)?.attributes[key];
  };
  return usbSourceFrom({
    vendor: attributeOf("vendor", "id"),
    product: attributeOf("product", "id"),
    bus: attributeOf("address", "bus"),
    device: attributeOf("address", "device"),
  });
}

/**
 * The attribute `key` (`network`, `dev`, `bridge`) of the `<source>` in an interface whose
 * content starts `body`, or `null`.
 */
function interfaceSourceAttribute(body: string, key: string): string | null {
  const inside = elementContent(body, "interface");
  const open = findTag(inside, "source");
  const value = open === -1 ? undefined : lenientTag(inside, open)?.attributes[key];
  return value === undefined || value === "" ? null : value;
}

/** What {@link scanHostdevPoolLeniently} finds in a network's XML. */
export interface LenientHostdevPool {
  /** The pool's PCI addresses (VFs): canonical, sorted, unique. */
  addresses: PciAddress[];
  /**
   * How many pool entries could not be read (an `<address>` that is not a readable PCI address,
   * a `<forward>` that cannot be read or does not end): above 0, the pool may hold more.
   */
  unresolved: number;
  /** The host network interfaces of its `<pf dev>` elements: the physical functions it uses. */
  pfs: string[];
}

/**
 * The device pool of a libvirt network with `<forward mode='hostdev'>`: the `<address>`
 * elements in its `<forward>`, which the status XML of a running network
 * (`/run/libvirt/network/NAME.xml`) lists even when the definition names only a `<pf>` (libvirt
 * lists the PF's VFs when it starts the network). `null` for a network of any other mode, or
 * with no `<forward>`. Comments and `<metadata>` are not searched. Never throws.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const status = `<networkstatus><network><name>sriov</name>
 *   <forward mode='hostdev' managed='yes'><pf dev='eth2'/>
 *     <address type='pci' domain='0x0000' bus='0x03' slot='0x10' function='0x1' connections='1'/>
 *     <address type='pci' domain='0x0000' bus='0x03' slot='0x10' function='0x3'/>
 *   </forward></network></networkstatus>`;
 * assertEquals(scanHostdevPoolLeniently(status), {
 *   addresses: ["0000:03:10.1", "0000:03:10.3"],
 *   unresolved: 0,
 *   pfs: ["eth2"],
 * });
 * assertEquals(scanHostdevPoolLeniently("<network><forward mode='nat'/></network>"), null);
 * ```
 */
export function scanHostdevPoolLeniently(xml: string): LenientHostdevPool | null {
  const text = blankNonDevices(String(xml));
  const at = findTag(text, "forward");
  if (at === -1) return null;
  const forward = lenientTag(text, at);
  if (forward === null) return { addresses: [], unresolved: 1, pfs: [] };
  if (forward.attributes.mode !== "hostdev") return null;
  if (forward.selfClosing) return { addresses: [], unresolved: 0, pfs: [] };
  const close = findEndTag(text, "forward", forward.end);
  if (close === null) return { addresses: [], unresolved: 1, pfs: [] };
  const inside = text.slice(forward.end, close.index);
  const found = new Set<PciAddress>();
  let unresolved = 0;
  for (let i = findTag(inside, "address"); i !== -1; i = findTag(inside, "address", i + 1)) {
    const tag = lenientTag(inside, i);
    // libvirt's pools hold PCI addresses only; any other entry is one this cannot check.
    const address = tag === null || tag.attributes.type !== "pci"
      ? null
      : pciAddressFromLibvirt(tag.attributes);
    if (address === null) unresolved++;
    else found.add(address);
  }
  const pfs: string[] = [];
  for (let i = findTag(inside, "pf"); i !== -1; i = findTag(inside, "pf", i + 1)) {
    const dev = lenientTag(inside, i)?.attributes.dev;
    if (dev) pfs.push(dev);
  }
  return { addresses: [...found].sort(comparePciAddress), unresolved, pfs };
}

/** The `<forward>` modes that put a network's guests on host interfaces (macvtap, a host bridge). */
const BRIDGING_MODES = new Set(["bridge", "private", "vepa", "passthrough"]);

/** What {@link scanNetworkInterfacesLeniently} finds in a network's XML. */
export type NetworkInterfacesScan =
  /** A network that puts its guests on these host interfaces. */
  | { kind: "bridged"; interfaces: string[] }
  /** A NAT, routed, isolated, open or hostdev network: on none of its own. */
  | { kind: "other" }
  /** Not a whole `<network>` (a cut one), or one whose `<forward>` cannot be read. */
  | { kind: "unreadable"; reason: string };

/**
 * The host network interfaces a libvirt network puts its guests on: the host bridge of a
 * `<forward mode='bridge'>` network with a `<bridge name>`, or the macvtap pool of a network of
 * mode `bridge` (without a bridge), `private`, `vepa` or `passthrough`: its `<forward dev>`,
 * `<interface dev>` and `<pf dev>` (sorted, unique; a running network lists its `<pf>`'s VFs as
 * `<interface dev>` too). Comments and `<metadata>` are not searched. Never throws.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const bridged = `<network><name>lan</name><forward mode='bridge'/><bridge name='br0'/></network>`;
 * assertEquals(scanNetworkInterfacesLeniently(bridged), { kind: "bridged", interfaces: ["br0"] });
 * const macvtap = `<network><name>direct</name><forward mode='vepa' dev='eth1'>
 *   <interface dev='eth1'/><interface dev='eth2'/></forward></network>`;
 * assertEquals(scanNetworkInterfacesLeniently(macvtap).kind, "bridged");
 * const nat = "<network><forward mode='nat'/></network>";
 * assertEquals(scanNetworkInterfacesLeniently(nat), { kind: "other" });
 * ```
 */
export function scanNetworkInterfacesLeniently(xml: string): NetworkInterfacesScan {
  const text = blankNonDevices(String(xml));
  const root = findTag(text, "network");
  if (root === -1 || findEndTag(text, "network", root) === null) {
    return { kind: "unreadable", reason: "it is not a whole <network>" };
  }
  const at = findTag(text, "forward");
  const forward = at === -1 ? null : lenientTag(text, at);
  if (at !== -1 && forward === null) {
    return { kind: "unreadable", reason: "its <forward> cannot be read" };
  }
  const mode = forward?.attributes.mode;
  if (forward === null || mode === undefined || !BRIDGING_MODES.has(mode)) return { kind: "other" };
  const bridge = findTag(text, "bridge");
  const bridgeName = bridge === -1 ? undefined : lenientTag(text, bridge)?.attributes.name;
  if (mode === "bridge" && bridgeName) return { kind: "bridged", interfaces: [bridgeName] };
  const names = new Set<string>();
  if (forward.attributes.dev) names.add(forward.attributes.dev);
  const close = forward.selfClosing ? null : findEndTag(text, "forward", forward.end);
  if (!forward.selfClosing && close === null) {
    return { kind: "unreadable", reason: "its <forward> does not end" };
  }
  const inside = close === null ? "" : text.slice(forward.end, close.index);
  for (const element of ["interface", "pf"]) {
    for (let i = findTag(inside, element); i !== -1; i = findTag(inside, element, i + 1)) {
      const dev = lenientTag(inside, i)?.attributes.dev;
      if (dev) names.add(dev);
    }
  }
  return { kind: "bridged", interfaces: [...names].sort() };
}

// ---------------------------------------------------------------------------------------------
// Records

/** The namespace of passthrough's records in `<metadata>` (`domain_xml.ts` writes them). */
export const RECORDS_NAMESPACE = "urn:passthrough:hostdevs:1";

/**
 * Whether `namespace` is that of another version's records (`urn:passthrough:hostdevs:2`): read
 * as none, their devices would start without the check they were recorded for, and `plan` would
 * take them for hand-added ones.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(isOtherRecordsVersion("urn:passthrough:hostdevs:2"), true);
 * assertEquals(isOtherRecordsVersion(RECORDS_NAMESPACE), false);
 * assertEquals(isOtherRecordsVersion("urn:app:hostdevs:1"), false);
 * ```
 */
export function isOtherRecordsVersion(namespace: string | undefined): boolean {
  return namespace !== undefined && namespace !== RECORDS_NAMESPACE &&
    namespace.startsWith("urn:passthrough:hostdevs:");
}

/**
 * What is wrong with records that the start guard's reader ({@link readRecordsLeniently}) and
 * `plan`'s strict reader both refuse, in the words both say it: the guard after "the domain XML
 * holds passthrough records that cannot be read: ", `plan` with its location and what to do.
 * None names a value from the XML (the guard's line must not print one).
 */
export const RECORDS_PROBLEMS = {
  /** An element in another version's records namespace, at any depth. */
  otherVersion: "an element of the passthrough records is of another version of passthrough",
  /**
   * The records element nested in another application's metadata, anywhere else, or in a second
   * `<metadata>` (libvirt writes one; the strict reader reads the first).
   */
  notInMetadata: "the passthrough records element is not a child of <metadata>",
  /** Two records elements in `<metadata>`. */
  twoElements: "the domain metadata holds two passthrough records elements",
  /** Two records of one host address. */
  twoAddresses: "two passthrough records name one address",
  /**
   * The records' namespace declared on another element: an enclosing one for a records element
   * (`<metadata xmlns:pt=…><pt:hostdevs>`), wherever it is, or any one when no records element
   * declares it on itself (another application's element in it): records, or what may be
   * records, that passthrough cannot read.
   */
  namespaceElsewhere: "the records namespace is declared on another element than <hostdevs>",
  /**
   * An element in the records' namespace that is neither the records element nor one of its
   * records (`<q:device>` by another prefix or the default namespace, `<pt:note>`, a record
   * inside a record or anywhere else), or a record's name taken to another namespace
   * (`<pt:device xmlns:pt="urn:app">`): what may be a record in a form neither reader counts.
   */
  notARecord: "an element in the records namespace is not a record passthrough reads",
} as const;

/** What {@link readRecordsLeniently} finds. */
export interface LenientRecords {
  /** The records in document order; `[]` when there are none or when they cannot be trusted. */
  records: DeviceIdentity[];
  /**
   * The `<passthrough:interface>` records (a `vf:` rule's VF, its index, MAC and PF identity) in
   * document order; `[]` as `records`.
   */
  vfRecords: VfIdentity[];
  /** Why the records the XML holds cannot be read (a caller must fail closed), or `null`. */
  problem: string | null;
  /**
   * Whether the text is a well-formed document with a `<domain>` root, as every definition
   * libvirt writes is (empty, truncated or other input is not).
   */
  wellFormed: boolean;
  /**
   * The domain's `<uuid>` (trimmed, as the strict reader reads it) in a well-formed document that
   * has one; `null` otherwise: the start guard binds the policies `apply` recorded to it.
   */
  uuid: string | null;
}

/**
 * Each field of a `<passthrough:device>` record and the attribute that holds it: the one table
 * the strict reader, the writer and this reader share (here, because the hook loads this module
 * without the XML library).
 */
export const RECORD_ATTRIBUTES = {
  address: "address",
  vendorId: "vendor",
  deviceId: "device",
  subsystemVendorId: "subsystem-vendor",
  subsystemDeviceId: "subsystem-device",
  classCode: "class",
  serial: "serial",
  slot: "slot",
  driver: "driver",
  rule: "rule",
} as const satisfies Record<keyof DeviceIdentity, string>;

/**
 * The attributes of a `<passthrough:interface>` record (a `vf:` rule's VF) beyond its PF's
 * identity, which it holds as {@link RECORD_ATTRIBUTES} with the PF's address in `pfAddress`.
 */
export const VF_RECORD_ATTRIBUTES = {
  address: "address",
  index: "vf",
  mac: "mac",
  pfAddress: "pf-address",
} as const;

/** The local names of the records element's children that are records: devices and VFs. */
export const RECORD_NAMES = ["device", "interface"] as const;

const REQUIRED_FIELDS = ["address", "vendorId", "deviceId", "classCode", "rule"] as const;

/**
 * XML's name characters (XML 1.0 fifth edition, `NameStartChar` and `NameChar`): other
 * applications' metadata may name elements `<app:données>`, which libvirt keeps.
 */
const NAME_START =
  String.raw`A-Za-z_:\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u02FF\u0370-\u037D\u037F-\u1FFF` +
  String.raw`\u200C\u200D\u2070-\u218F\u2C00-\u2FEF\u3001-\uD7FF\uF900-\uFDCF\uFDF0-\uFFFD` +
  String.raw`\u{10000}-\u{EFFFF}`;
const NAME = String.raw`[${NAME_START}][${NAME_START}\-.0-9\u00B7\u0300-\u036F\u203F\u2040]*`;
/** A start or end tag's `<` at the sticky index: the `/` of an end tag, the name. */
const TAG_NAME_AT = new RegExp(String.raw`<(\/?)(${NAME})`, "uy");
/** One attribute after whitespace, quoted, at the sticky index: its name, its value in 2 or 3. */
const ONE_ATTRIBUTE = /\s+([^\s=<>/"']+)\s*=\s*(?:'([^'<]*)'|"([^"<]*)")/y;
/** What ends a start tag after its attributes, at the sticky index: `/` (in group 1) or not, `>`. */
const START_TAG_END = /\s*(\/?)>/y;
/** What ends an end tag after its name, at the sticky index. */
const END_TAG_END = /\s*>/y;

/** The rest of a start tag after its name ({@link startTagRest}). */
interface StartTagRest {
  /** Its attributes, decoded. */
  attributes: Map<string, string>;
  /** Whether it ends with `/>`. */
  selfClosing: boolean;
  /** The index just after its `>`. */
  end: number;
}

/**
 * The start tag whose name ends at `from` in `text`, when attributes alone follow (each after
 * whitespace and quoted, no `<` in a value), then `/` or nothing and its `>`; `null` when they do
 * not (an unquoted value, a `<` before the `>`, none), or when an attribute repeats or holds a bad
 * entity. Read in place with sticky expressions, one per attribute: the walk reads every tag of
 * a definition at every VM start, and a loop per character costs more.
 */
function startTagRest(text: string, from: number): StartTagRest | null {
  const attributes = new Map<string, string>();
  let at = from;
  for (;;) {
    ONE_ATTRIBUTE.lastIndex = at;
    const a = ONE_ATTRIBUTE.exec(text);
    if (a === null) break;
    at = ONE_ATTRIBUTE.lastIndex;
    const value = decodeEntities(a[2] ?? a[3] ?? "");
    if (attributes.has(a[1]!) || value === null) return null;
    attributes.set(a[1]!, value);
  }
  START_TAG_END.lastIndex = at;
  const tail = START_TAG_END.exec(text);
  if (tail === null) return null;
  return { attributes, selfClosing: tail[1] === "/", end: START_TAG_END.lastIndex };
}

/** The index just after the `>` of the end tag whose name ends at `from`, or -1 when more is there. */
function endTagEnd(text: string, from: number): number {
  END_TAG_END.lastIndex = from;
  return END_TAG_END.test(text) ? END_TAG_END.lastIndex : -1;
}
const CHARACTER_REFERENCE = /&#(?:([0-9]+)|x([0-9a-fA-F]+));/g;
/** A start tag whose local name is that of the records' element. */
const RECORDS_TAG = /<(?:[A-Za-z_][\w.-]*:)?hostdevs(?=[\s/>]|$)/;

/** Whether every entity and character reference of `text` is one XML defines without a DTD. */
function entitiesAreValid(text: string): boolean {
  if (!text.includes("&")) return true;
  if (BAD_AMPERSAND.test(text)) return false;
  for (const [, dec, hex] of text.matchAll(CHARACTER_REFERENCE)) {
    if (!isXmlChar(dec !== undefined ? parseInt(dec, 10) : parseInt(hex ?? "", 16))) return false;
  }
  return true;
}

/**
 * One `<passthrough:device>` record from its element's attributes, or the reason it cannot be
 * read (`a record lacks attribute "vendor"`): the one reading of a record, for this reader, the
 * start guard's, and the strict one `plan` uses.
 */
export function deviceRecordFrom(attributes: ReadonlyMap<string, string>): DeviceIdentity | string {
  for (const field of REQUIRED_FIELDS) {
    if (!attributes.has(RECORD_ATTRIBUTES[field])) {
      return `a record lacks attribute "${RECORD_ATTRIBUTES[field]}"`;
    }
  }
  const address = canonicalPciAddress(attributes.get("address")!);
  if (address === null) return "a record has a bad address";
  const optional = (name: string) => attributes.get(name) ?? null;
  const slot = attributes.get(RECORD_ATTRIBUTES.slot);
  return {
    address,
    vendorId: attributes.get(RECORD_ATTRIBUTES.vendorId)!,
    deviceId: attributes.get(RECORD_ATTRIBUTES.deviceId)!,
    subsystemVendorId: optional(RECORD_ATTRIBUTES.subsystemVendorId),
    subsystemDeviceId: optional(RECORD_ATTRIBUTES.subsystemDeviceId),
    classCode: attributes.get(RECORD_ATTRIBUTES.classCode)!,
    serial: optional(RECORD_ATTRIBUTES.serial),
    // Records written before slots were recorded have none: nothing to compare.
    ...(slot === undefined ? {} : { slot }),
    driver: optional(RECORD_ATTRIBUTES.driver),
    // As the config reads a rule's name: trimmed. A record from before names the same rule
    // (`name: |` wrote "uplink\n"), or a `vf: any` rule lost the VF and MAC it holds.
    rule: attributes.get(RECORD_ATTRIBUTES.rule)!.trim(),
  };
}

/**
 * A VF record (`<passthrough:interface>`) from its element's attributes, or why it cannot be
 * read; shared as {@link deviceRecordFrom} is.
 */
export function vfRecordFrom(attributes: ReadonlyMap<string, string>): VfIdentity | string {
  const names = VF_RECORD_ATTRIBUTES;
  const pfAddress = attributes.get(names.pfAddress);
  const address = canonicalPciAddress(attributes.get(names.address) ?? "");
  const index = attributes.get(names.index) ?? "";
  const mac = attributes.get(names.mac);
  if (pfAddress === undefined || mac === undefined) {
    return `an interface record lacks attribute "${
      pfAddress === undefined ? names.pfAddress : names.mac
    }"`;
  }
  if (address === null || !/^[0-9]+$/.test(index)) {
    return "an interface record has a bad address or VF index";
  }
  // `mac: auto` writes the recorded MAC back as the interface's: one edited by hand in the
  // config's spellings (dashes, upper case) is read as the config reads it, and anything else is
  // no record rather than a MAC the interface writer refuses, unlocated, in the middle of a plan.
  const canonical = canonicalMac(mac.trim());
  if (canonical === null) {
    // Like the other problems, naming no value: the start guard prints it from any definition.
    return "an interface record has a bad MAC";
  }
  const pf = deviceRecordFrom(new Map([...attributes, [RECORD_ATTRIBUTES.address, pfAddress]]));
  if (typeof pf === "string") return pf.replace("a record", "an interface record");
  return { address, index: Number(index), mac: canonical, pf };
}

/**
 * `mac` as libvirt writes a MAC (`52:54:00:ab:cd:ef`), read in the config's spellings too (dashes,
 * upper case); `null` when it is no MAC.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(canonicalMac("52-54-00-AB-CD-EF"), "52:54:00:ab:cd:ef");
 * assertEquals(canonicalMac("52:54:00:ab:cd"), null);
 * ```
 */
export function canonicalMac(mac: string): string | null {
  const canonical = mac.replace(/-/g, ":").toLowerCase();
  return /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(canonical) ? canonical : null;
}

/**
 * The first address two of `records` name, or `null`: every reader looks a record up by its
 * address and would take the first, so which identity the device is held to would depend on
 * the order (the strict reader and this one refuse them, as they refuse two records elements).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const a = { address: "0000:0b:00.0" }, b = { address: "0000:0b:00.1" };
 * assertEquals([repeatedRecordAddress([a, b]), repeatedRecordAddress([a, b, a])], [null, a.address]);
 * ```
 */
export function repeatedRecordAddress(
  records: readonly { address: PciAddress }[],
): PciAddress | null {
  const seen = new Set<PciAddress>();
  for (const { address } of records) {
    if (seen.has(address)) return address;
    seen.add(address);
  }
  return null;
}

/** Adds `record` to `to`, or returns why it cannot be read. */
function pushRecord<T>(to: T[], record: T | string): string | null {
  if (typeof record === "string") return record;
  to.push(record);
  return null;
}

/** What {@link walkRecords} returns for a well-formed document. */
interface WalkedRecords {
  records: DeviceIdentity[];
  vfRecords: VfIdentity[];
  uuid: string | null;
}

/** What {@link walkRecords} knows between two tags. */
interface RecordsWalk extends WalkedRecords {
  /** The names of the open elements, the root first. */
  stack: string[];
  /** Parallel to `stack`: the prefixes each open element declared, taken back at its end. */
  declaredBy: string[][];
  /** Per declared prefix (`xmlns`, `xmlns:pt`), the namespaces in force, innermost last. */
  inScope: Map<string, string[]>;
  /** The records' element's prefix with its colon (`pt:`, or `""`) once found. */
  ours: string | null;
  /** Whether the records' element is open (it is then the third on `stack`). */
  oursOpen: boolean;
  seenRoot: boolean;
  /** How many `<metadata>` the root has opened: the strict reader reads records in the first. */
  metadataSeen: number;
  /** Whether a tag declares the records' namespace (text that only mentions it does not). */
  namespaceDeclared: boolean;
  /** Whether an element is in the namespace but no record, said when nothing else is wrong. */
  notARecord: boolean;
}

/**
 * Walks every tag of `text` (comments, CDATA and processing instructions blanked) and checks
 * that the document is well-formed as far as records depend on it: every `<` starts a tag whose
 * attributes are quoted and unique, end tags match, one `<domain>` root with only whitespace
 * around it, and only XML's own entities. Returns the records, or why they cannot be read
 * (`""` for a document that is not well-formed).
 */
function walkRecords(text: string): WalkedRecords | string {
  if (!entitiesAreValid(text)) return "";
  const walk: RecordsWalk = {
    records: [],
    vfRecords: [],
    uuid: null,
    stack: [],
    declaredBy: [],
    inScope: new Map(),
    ours: null,
    oursOpen: false,
    seenRoot: false,
    metadataSeen: 0,
    namespaceDeclared: false,
    notARecord: false,
  };
  let at = text.indexOf("<");
  if (at === -1 || text.slice(0, at).trim() !== "") return "";
  while (at !== -1) {
    TAG_NAME_AT.lastIndex = at;
    const tag = TAG_NAME_AT.exec(text);
    if (tag === null) return "";
    const [, slash, name] = tag as unknown as [string, string, string];
    const after = slash === "/"
      ? closeTag(walk, text, name, TAG_NAME_AT.lastIndex)
      : openTag(walk, text, name, TAG_NAME_AT.lastIndex);
    if (typeof after === "string") return after;
    const next = text.indexOf("<", after);
    const between = text.slice(after, next === -1 ? undefined : next);
    if (slash === "" && name === "uuid" && walk.stack.length === 2 && walk.uuid === null) {
      walk.uuid = between.trim();
    }
    // Outside the root only whitespace; after it, nothing but whitespace.
    if (walk.stack.length === 0 && (between.trim() || next !== -1)) return "";
    at = next;
  }
  if (walk.stack.length !== 0 || !walk.seenRoot) return "";
  return walkedRecords(walk);
}

/** The index after the end tag of `name` whose name ends at `from`, or `""` when it does not match. */
function closeTag(walk: RecordsWalk, text: string, name: string, from: number): number | string {
  const after = endTagEnd(text, from);
  if (after === -1 || walk.stack.pop() !== name) return "";
  for (const key of walk.declaredBy.pop()!) walk.inScope.get(key)!.pop();
  if (walk.stack.length === 2) walk.oursOpen = false;
  return after;
}

/**
 * The index after the start tag of `name` whose name ends at `from`, its element opened and its
 * record taken; or why the records cannot be read (`""`: not well-formed).
 */
function openTag(walk: RecordsWalk, text: string, name: string, from: number): number | string {
  // Every tag's attributes are read: a repeated one or a bad entity is not XML either.
  const rest = startTagRest(text, from);
  if (rest === null) return "";
  if (walk.stack.length === 0 && (walk.seenRoot || name !== "domain")) return "";
  walk.seenRoot = true;
  if (walk.stack.length === 1 && name === "metadata") walk.metadataSeen++;
  const declarations = declareNamespaces(walk, rest.attributes);
  const opensOurs = readRecordsTag(walk, name, rest.attributes);
  if (typeof opensOurs === "string") return opensOurs;
  if (!rest.selfClosing) {
    walk.stack.push(name);
    walk.declaredBy.push(declarations);
    walk.oursOpen ||= opensOurs;
  } else {
    // A self-closing element's declarations end with it.
    for (const key of declarations) walk.inScope.get(key)!.pop();
  }
  return rest.end;
}

/** Puts the namespaces a start tag's `attributes` declare in scope; returns their keys. */
function declareNamespaces(walk: RecordsWalk, attributes: ReadonlyMap<string, string>): string[] {
  const declarations = [...attributes.keys()].filter((key) => /^xmlns(:|$)/.test(key));
  for (const key of declarations) {
    const value = attributes.get(key)!;
    walk.namespaceDeclared ||= value === RECORDS_NAMESPACE;
    const values = walk.inScope.get(key) ?? [];
    values.push(value);
    walk.inScope.set(key, values);
  }
  return declarations;
}

/**
 * Reads a start tag as the records see it (its namespaces already in scope): whether it opens the
 * records' element, having taken the record it is, or why the records cannot be read.
 */
function readRecordsTag(
  walk: RecordsWalk,
  name: string,
  attributes: ReadonlyMap<string, string>,
): boolean | string {
  const colon = name.indexOf(":");
  const local = colon === -1 ? name : name.slice(colon + 1);
  const prefix = colon === -1 ? "" : name.slice(0, colon + 1);
  const key = prefix === "" ? "xmlns" : `xmlns:${prefix.slice(0, -1)}`;
  const declared = attributes.get(key);
  const inForce = walk.inScope.get(key)?.at(-1);
  // An element in it, declared on it or on an enclosing element, as the strict reader reads
  // it: a declaration alone holds no records.
  if (isOtherRecordsVersion(inForce)) return RECORDS_PROBLEMS.otherVersion;
  // A records element in it by an enclosing element's declaration, next to our records element
  // or not: the strict reader refuses it wherever it is, and so does this one.
  if (local === "hostdevs" && declared === undefined && inForce === RECORDS_NAMESPACE) {
    return RECORDS_PROBLEMS.namespaceElsewhere;
  }
  if (local === "hostdevs" && declared === RECORDS_NAMESPACE) {
    const { stack } = walk;
    if (stack.length !== 2 || stack[1] !== "metadata" || walk.metadataSeen !== 1) {
      return RECORDS_PROBLEMS.notInMetadata;
    }
    if (walk.ours !== null) return RECORDS_PROBLEMS.twoElements;
    walk.ours = prefix;
    return true;
  }
  const { ours } = walk;
  if (walk.oursOpen && walk.stack.length === 3 && RECORD_NAMES.some((n) => name === ours + n)) {
    // Read by the records element's prefix, as the strict reader; one whose prefix its own
    // declaration binds to another namespace is no record, and refused, not passed over.
    if (inForce !== RECORDS_NAMESPACE) {
      walk.notARecord = true;
      return false;
    }
    const why = local === "device"
      ? pushRecord(walk.records, deviceRecordFrom(attributes))
      : pushRecord(walk.vfRecords, vfRecordFrom(attributes));
    if (why !== null) return why;
  } else if (inForce === RECORDS_NAMESPACE) {
    walk.notARecord = true;
  }
  return false;
}

/** The records of a walk that reached the root's end, or why they cannot be read. */
function walkedRecords(walk: RecordsWalk): WalkedRecords | string {
  // The namespace declared anywhere but on the records' element: records passthrough cannot find.
  if (walk.ours === null && walk.namespaceDeclared) {
    return RECORDS_PROBLEMS.namespaceElsewhere;
  }
  if (
    repeatedRecordAddress(walk.records) !== null || repeatedRecordAddress(walk.vfRecords) !== null
  ) {
    return RECORDS_PROBLEMS.twoAddresses;
  }
  if (walk.notARecord) return RECORDS_PROBLEMS.notARecord;
  return { records: walk.records, vfRecords: walk.vfRecords, uuid: walk.uuid };
}

/**
 * The passthrough records of a domain XML (`<metadata><pt:hostdevs xmlns:pt="urn:passthrough:
 * hostdevs:1"><pt:device address=… vendor=…/>`), read as the strict reader reads them (any
 * prefix, either quote, entities, comments and CDATA skipped) without an XML library, for the
 * start guard. Fails closed: records in a document that is not well-formed, a record without a
 * required attribute or with a bad address, two records of one address, two records elements, one
 * outside `<metadata>`, the namespace declared elsewhere, an element in another version's
 * namespace, or one in this namespace that is not a record (another prefix's `<q:device>`)
 * give no records and a `problem`. Never throws.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const xml = `<domain><name>vm</name><metadata>
 *   <pt:hostdevs xmlns:pt='urn:passthrough:hostdevs:1'>
 *     <pt:device address='0000:0b:00.0' vendor='10de' device='1b06' class='030000' rule='gpu'/>
 *   </pt:hostdevs></metadata></domain>`;
 * assertEquals(readRecordsLeniently(xml).records.map((r) => [r.address, r.serial]), [
 *   ["0000:0b:00.0", null],
 * ]);
 * assertEquals(readRecordsLeniently(xml.replace("</name>", "</name><uuid> ab-1 </uuid>")).uuid, "ab-1");
 * assertEquals(
 *   readRecordsLeniently(xml.replace("</domain>", "")).problem,
 *   "the domain XML holds passthrough records that cannot be read",
 * );
 * ```
 */
export function readRecordsLeniently(xml: string): LenientRecords {
  const text = String(xml);
  const blanked = blankNonDevices(text, true);
  const walked = walkRecords(blanked);
  if (typeof walked !== "string") return { ...walked, problem: null, wellFormed: true };
  // Not well-formed: as the strict reader, no records, and a problem only where there may be some.
  if (walked === "" && !text.includes(RECORDS_NAMESPACE) && !RECORDS_TAG.test(blanked)) {
    return { records: [], vfRecords: [], problem: null, wellFormed: false, uuid: null };
  }
  const problem = "the domain XML holds passthrough records that cannot be read";
  return {
    records: [],
    vfRecords: [],
    problem: walked === "" ? problem : `${problem}: ${walked}`,
    wellFormed: false,
    uuid: null,
  };
}

// ---------------------------------------------------------------------------------------------
// Lines

// A line's keys are taken from any text a definition holds, another application's comment in
// <metadata> too, which libvirt keeps as written: no expression below tries a run of whitespace
// from each of its positions, nor a tag's name or attributes past the next `<`, whose time grew
// with the square of the line (`<!-- <<<<…` of 80 KB held `plan` for a minute).
/** An attribute with the whitespace before it (from its start), which a key writes as one space. */
const SPACED_ATTRIBUTE = new RegExp(String.raw`(?<!\s)\s+` + ATTRIBUTE_SOURCE, "g");
/** The whitespace before a tag's closing `>` or `/>`, from its start. */
const SPACE_BEFORE_CLOSE = /(?<!\s)\s+(\/?>)$/;
/**
 * A start, end or empty-element tag (not a comment, PI or declaration), or the beginning of a
 * start tag that continues on the next line.
 */
const TAG = /<[^!?][^>]*(?:>|$)/g;
/** `<a attrs></a>` on one line (libvirt escapes `<` in values: none is in a tag). */
const EMPTY_PAIR = /<([^\s/>!?<]+)((?:\s[^<>]*)?)><\/\1\s*>/g;

function requote(value: string): string {
  const decoded = value.replace(/&(?:quot|#34|#x22);/g, '"').replace(/&(?:apos|#39|#x27);/g, "'");
  return `'${decoded.replaceAll("'", "&apos;").replaceAll('"', "&quot;")}'`;
}

/**
 * A line's comparison key: trimmed, attributes single-quoted with one space before each, no
 * space before `>` or `/>`, and `<a></a>` written `<a/>`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   normaliseXmlLine(`    <rom  bar="on" file='a"b' ></rom>  `),
 *   normaliseXmlLine(`<rom bar='on' file="a&quot;b"/>`),
 * );
 * ```
 */
export function normaliseXmlLine(line: string): string {
  return line.trim()
    .replace(TAG, (tag) =>
      tag
        .replace(SPACED_ATTRIBUTE, (_m, name: string, sq?: string, dq?: string) =>
          ` ${name}=${requote(sq ?? dq ?? "")}`)
        .replace(SPACE_BEFORE_CLOSE, "$1")
        .trimEnd())
    .replace(EMPTY_PAIR, "<$1$2/>");
}

/**
 * Markup as {@link normaliseXmlLines} finds it: a CDATA section (which it counts as text), a
 * comment, a processing instruction or declaration, or a tag (a quoted value may hold `>`), each
 * possibly cut off by the end of the text.
 */
const MARKUP =
  /<!\[CDATA\[[^]*?(?:\]\]>|$)|<!--[^]*?(?:-->|$)|<[!?][^>]*(?:>|$)|<(?:[^>'"]|'[^']*'|"[^"]*")*(?:>|$)/g;

/**
 * Which characters of `text` are text that counts: a run between two pieces of markup that holds
 * more than whitespace (a multi-line `<description>`, another tool's `<metadata>`), whose every
 * space and line then counts. A run of whitespace alone is layout, which libvirt rewrites.
 */
function countedText(text: string): Uint8Array {
  const counted = new Uint8Array(text.length + 1);
  let runStart = 0;
  const endRun = (end: number) => {
    if (/\S/.test(text.slice(runStart, end))) counted.fill(1, runStart, end);
  };
  for (const markup of text.matchAll(MARKUP)) {
    if (markup[0].startsWith("<![CDATA[")) continue;
    endRun(markup.index);
    runStart = markup.index + markup[0].length;
  }
  endRun(text.length);
  return counted;
}

/**
 * The comparison keys of a document's lines: each line's {@link normaliseXmlLine}, except where
 * it starts or ends inside text that counts (a run between two pieces of markup holding more than
 * whitespace), whose spaces are kept: a changed indentation inside a multi-line `<description>`
 * changes its meaning. A line that starts inside such text has a key starting with a newline
 * (which no line holds), so a blank line of text is never taken for a blank line of layout.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const keys = (xml: string) => normaliseXmlLines(xml.split("\n"));
 * assertEquals(keys("  <a x=\"1\" >\n  <b/>\n</a>"), keys("<a x='1'>\n<b/>\n</a>"));
 * assertEquals(keys("<d>users:\n  - admin\n\n</d>"), ["<d>users:", "\n  - admin", "\n", "</d>"]);
 * ```
 */
export function normaliseXmlLines(lines: readonly string[]): string[] {
  const counted = countedText(lines.join("\n"));
  let at = 0;
  return lines.map((line) => {
    const start = at;
    at += line.length + 1;
    const key = normaliseXmlLine(line);
    const startsInText = counted[start] === 1;
    const endsInText = line.length > 0 && counted[start + line.length - 1] === 1;
    if (!startsInText && !endsInText) return key;
    if (key === "") return `\n${line}`;
    const lead = startsInText ? `\n${line.slice(0, line.length - line.trimStart().length)}` : "";
    return `${lead}${key}${endsInText ? line.slice(line.trimEnd().length) : ""}`;
  });
}
