/**
 * The lenient reader: domain XML text the strict reader (`domain_xml.ts`) does not read, read by
 * its start tags alone. For a definition the strict reader refuses, the host PCI devices it names
 * (planning still counts them as held); for single lines of a definition, a comparison key that
 * ignores quote style and spacing (the diff shown before a define); for any text taken from a
 * definition, its secrets hidden. Never throws.
 *
 * @module
 */

import type { PciAddress } from "../host/types.ts";
import { comparePciAddress, pciAddressFromLibvirt } from "../pci/address.ts";
import { decodeXmlText } from "./xml.ts";

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

/**
 * A start tag from `<` to `>`; quoted values may hold `>`. Callers pass text that ends at the
 * next `<` (libvirt escapes `<` in values), so a damaged tag costs no more than its own length.
 */
const START_TAG = /^<([A-Za-z_][\w.:-]*)((?:[^>'"]|'[^']*'|"[^"]*")*)>/;
/** One attribute in either quote: its name, then its value in group 2 (`'`) or 3 (`"`). */
const ATTRIBUTE_SOURCE = String.raw`([^\s=<>/"']+)\s*=\s*(?:'([^']*)'|"([^"]*)")`;
const ATTRIBUTE = new RegExp(ATTRIBUTE_SOURCE, "g");
const DEVICE_START = /<(hostdev|interface)(?=[\s/>]|$)/g;
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

/** The start tag at `index` of `text`, or `null` when no complete tag starts there. */
function lenientTag(text: string, index: number): LenientTag | null {
  const stop = text.indexOf("<", index + 1);
  const match = START_TAG.exec(text.slice(index, stop === -1 ? text.length : stop));
  if (match === null) return null;
  const raw = match[2]!;
  const attributes: Record<string, string> = {};
  for (const a of raw.matchAll(ATTRIBUTE)) {
    const name = a[1]!;
    if (Object.hasOwn(attributes, name)) continue;
    const value = a[2] ?? a[3] ?? "";
    try {
      attributes[name] = decodeXmlText(value);
    } catch {
      // A bad entity: kept raw, so a number in it fails to read and counts as unresolved.
      attributes[name] = value;
    }
  }
  return { attributes, raw, selfClosing: /\/\s*$/.test(raw), end: index + match[0].length };
}

/**
 * `xml` with comments, CDATA sections, processing instructions and `<metadata>` blanked out
 * (same length, so indexes still match): none of them holds a device, and `<metadata>` is
 * copied verbatim from whatever other applications wrote, so it may say `<hostdev>` freely.
 * A construct left unterminated is not blanked: what follows it may still be devices.
 */
function blankNonDevices(xml: string): string {
  // Once a terminator is missing it is missing for every later opener too: stop looking.
  const exhausted = new Set<string>();
  const through = (terminator: RegExp, from: number): number => {
    if (exhausted.has(terminator.source)) return -1;
    terminator.lastIndex = from;
    const found = terminator.exec(xml);
    if (found === null) exhausted.add(terminator.source);
    return found === null ? -1 : terminator.lastIndex;
  };
  let out = "";
  let i = 0;
  while (i < xml.length) {
    const lt = xml.indexOf("<", i);
    if (lt === -1) {
      out += xml.slice(i);
      break;
    }
    out += xml.slice(i, lt);
    let end = -1;
    if (xml.startsWith("<!--", lt)) end = through(/-->/g, lt + 4);
    else if (xml.startsWith("<![CDATA[", lt)) end = through(/\]\]>/g, lt + 9);
    else if (xml.startsWith("<?", lt)) end = through(/\?>/g, lt + 2);
    else if (/^<metadata(?:[\s/>]|$)/.test(xml.slice(lt, lt + 10))) {
      const tag = lenientTag(xml, lt);
      if (tag?.selfClosing) end = tag.end;
      else if (tag !== null) end = through(/<\/metadata\s*>/g, tag.end);
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
  const open = /<source(?=[\s/>]|$)/.exec(body);
  if (open === null) return null;
  const tag = lenientTag(body, open.index);
  if (tag === null || tag.selfClosing) return null;
  const close = /<\/source\s*>/g;
  close.lastIndex = tag.end;
  const closing = close.exec(body);
  if (closing === null) return null;
  const inside = body.slice(tag.end, closing.index);
  const at = /<address(?=[\s/>]|$)/.exec(inside);
  if (at === null) return null;
  const address = lenientTag(inside, at.index);
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
 * ```
 */
export function scanHostdevsLeniently(xml: string): LenientHostdevScan {
  const text = blankNonDevices(String(xml));
  const starts = [...text.matchAll(DEVICE_START)];
  const found = new Set<PciAddress>();
  let unresolved = 0;
  starts.forEach((start, n) => {
    const name = start[1]!;
    // An element ends at its end tag or, when that is missing, where the next device starts.
    const element = text.slice(start.index, starts[n + 1]?.index ?? text.length);
    const tag = lenientTag(element, 0);
    if (tag === null) {
      // A start tag that does not even close: count it when it may be a PCI device.
      const stop = element.indexOf("<", 1);
      const head = element.slice(name.length + 1, stop === -1 ? element.length : stop);
      if (name === "hostdev" || /hostdev/.test(head)) unresolved++;
      return;
    }
    const { type, mode } = tag.attributes;
    // An interface whose type cannot be read but that says hostdev is taken to be one.
    const hostdevInterface = type === "hostdev" || (type === undefined && /hostdev/.test(tag.raw));
    if (name === "interface" && !hostdevInterface) return;
    if (name === "hostdev" && (mode === "capabilities" || NOT_PCI_TYPES.has(type ?? ""))) return;
    if (tag.selfClosing) {
      unresolved++;
      return;
    }
    const content = element.slice(tag.end);
    const close = new RegExp(`</${name}(?=[\\s>]|$)`).exec(content);
    const address = sourceAddress(content.slice(0, close?.index ?? content.length));
    if (address === null) unresolved++;
    else if (address !== "not-pci") found.add(address);
  });
  return { addresses: [...found].sort(comparePciAddress), unresolved };
}

/**
 * The host PCI addresses {@link scanHostdevsLeniently} finds: canonical, sorted, unique. Never
 * throws; `[]` for anything that names none.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const broken = `<domain><name>vm</name><devices>
 *   <hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='0x0a' slot='0x00' function='0x0'/></source></hostdev>
 *   <hostdev mode='subsystem' type='pci'>`;
 * assertEquals(lenientHostPciAddresses(broken), ["0000:0a:00.0"]);
 * assertEquals(lenientHostPciAddresses("not xml at all"), []);
 * ```
 */
export function lenientHostPciAddresses(xml: string): PciAddress[] {
  return scanHostdevsLeniently(xml).addresses;
}

// ---------------------------------------------------------------------------------------------
// Lines

/** An attribute with the whitespace before it, which a line's key writes as one space. */
const SPACED_ATTRIBUTE = new RegExp(String.raw`\s+` + ATTRIBUTE_SOURCE, "g");
/**
 * A start, end or empty-element tag (not a comment, PI or declaration), or the beginning of a
 * start tag that continues on the next line.
 */
const TAG = /<[^!?][^>]*(?:>|$)/g;
/** `<a attrs></a>` on one line. */
const EMPTY_PAIR = /<([^\s/>!?]+)((?:\s[^>]*)?)><\/\1\s*>/g;

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
        .replace(/\s+(\/?>)$/, "$1")
        .replace(/\s+$/, ""))
    .replace(EMPTY_PAIR, "<$1$2/>");
}
