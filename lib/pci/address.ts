/**
 * Canonical PCI addresses (`0000:01:00.0`) and the one conversion to and from libvirt's
 * `<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>` attributes.
 *
 * The domain (segment) is a number: `0000`, `00000000` and libvirt's `0x00000000` are one
 * domain, written canonically with at least four hex digits (`0000`, `10000` for a VMD domain).
 * Every address that enters the program (config criteria, sysfs names, lspci, libvirt XML, a
 * captured tree's files) goes through this module, so two spellings never name two devices.
 *
 * @module
 */

import type { PciAddress } from "../host/types.ts";

const FULL = /^([0-9a-f]{4,8}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/i;
const SHORT = /^([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/i;
/** Already canonical: a four-digit lower-case domain and a slot of at most 0x1f. */
const CANONICAL = /^[0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]$/;

/** The four numeric parts of a PCI address. */
export interface PciAddressParts {
  /** PCI segment (domain), `0` on most hosts. */
  domain: number;
  /** Bus number, `0` to `0xff`. */
  bus: number;
  /** Slot (device) number, `0` to `0x1f`. */
  slot: number;
  /** Function number, `0` to `7`. */
  function: number;
}

/**
 * Parses `0000:01:00.0` or `01:00.0` (domain 0) into the canonical lower-case form, or returns
 * `null` when `text` is not a PCI address.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(canonicalPciAddress("01:00.0"), "0000:01:00.0");
 * assertEquals(canonicalPciAddress("0000:0A:00.1"), "0000:0a:00.1");
 * assertEquals(canonicalPciAddress("00000000:01:00.0"), "0000:01:00.0");
 * assertEquals(canonicalPciAddress("00010000:e1:00.0"), "10000:e1:00.0");
 * assertEquals(canonicalPciAddress("1:0.0"), null);
 * ```
 */
export function canonicalPciAddress(text: string): PciAddress | null {
  // Sysfs names are canonical already: answer them without building a match (discovery asks
  // once per function and per SR-IOV link).
  if (CANONICAL.test(text)) return text;
  const trimmed = text.trim();
  const full = FULL.exec(trimmed);
  if (full) {
    const [, domain, bus, slot, fn] = full as unknown as [string, string, string, string, string];
    if (parseInt(slot, 16) > 0x1f) return null;
    return `${
      pciDomainText(parseInt(domain, 16))
    }:${bus.toLowerCase()}:${slot.toLowerCase()}.${fn}`;
  }
  const short = SHORT.exec(trimmed);
  if (short) {
    const [, bus, slot, fn] = short as unknown as [string, string, string, string];
    if (parseInt(slot, 16) > 0x1f) return null;
    return `0000:${bus.toLowerCase()}:${slot.toLowerCase()}.${fn}`;
  }
  return null;
}

/** A domain number as canonical addresses write it: lower-case hex, at least four digits. */
function pciDomainText(domain: number): string {
  return domain.toString(16).padStart(4, "0");
}

/**
 * Parses a slot address `DDDD:BB:SS` (the `address` file of `bus/pci/slots/NAME`) into the
 * canonical form, the address of its function 0 without `.0`, or returns `null`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(canonicalPciSlot("00000000:0A:00"), "0000:0a:00");
 * assertEquals(canonicalPciSlot("0000:0a:20"), null);
 * ```
 */
export function canonicalPciSlot(text: string): string | null {
  const address = canonicalPciAddress(`${text.trim()}.0`);
  return address === null ? null : address.slice(0, -2);
}

/**
 * The `DDDD:BB:SS` part of an address (`0000:0b:00`): the slot its function is in.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(slotOf("0000:0b:00.1"), "0000:0b:00");
 * ```
 */
export function slotOf(address: PciAddress): string {
  return address.slice(0, address.lastIndexOf("."));
}

/**
 * The `DDDD:BB` part of an address (`0000:20`): its bus, as sysfs names a root bus (`pci0000:20`).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(busOf("0000:20:03.1"), "0000:20");
 * ```
 */
export function busOf(address: PciAddress): string {
  return address.slice(0, address.lastIndexOf(":"));
}

/** Splits a canonical address into numbers. Throws `TypeError` when it is not an address. */
export function pciAddressParts(address: PciAddress): PciAddressParts {
  const canonical = canonicalPciAddress(address);
  if (canonical === null) throw new TypeError(`Not a PCI address: "${address}"`);
  const [domain, bus, rest] = canonical.split(":") as [string, string, string];
  const [slot, fn] = rest.split(".") as [string, string];
  return {
    domain: parseInt(domain, 16),
    bus: parseInt(bus, 16),
    slot: parseInt(slot, 16),
    function: parseInt(fn, 10),
  };
}

/** Builds a canonical address from numbers. */
export function pciAddressFromParts(parts: PciAddressParts): PciAddress {
  const hex = (n: number, width: number) => n.toString(16).padStart(width, "0");
  return `${pciDomainText(parts.domain)}:${hex(parts.bus, 2)}:${
    hex(parts.slot, 2)
  }.${parts.function}`;
}

/**
 * A number in a libvirt XML attribute, read as libvirt reads it (C's `strtoul` with base 0: `0x`
 * hex, a leading `0` octal, else decimal), or `null` when it is no such number.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals([libvirtNumber("0x1f"), libvirtNumber("010"), libvirtNumber("10")], [31, 8, 10]);
 * assertEquals([libvirtNumber("08"), libvirtNumber("-1"), libvirtNumber(undefined)], [null, null, null]);
 * ```
 */
export function libvirtNumber(text: string | undefined): number | null {
  const value = text?.trim() ?? "";
  const match = /^(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))$/.exec(value);
  if (match === null) return null;
  const number = match[1] !== undefined
    ? parseInt(match[1], 16)
    : match[2] !== undefined
    ? parseInt(match[2], 8)
    : parseInt(match[3]!, 10);
  return Number.isSafeInteger(number) ? number : null;
}

/**
 * Reads libvirt's `<address>` attributes (`domain='0x0000' bus='0x01' slot='0x00'
 * function='0x0'`; decimal and octal too, read as libvirt reads them) into a canonical address,
 * or `null` when an attribute is missing or out of range.
 */
export function pciAddressFromLibvirt(
  attrs: Record<string, string | undefined>,
): PciAddress | null {
  const num = (value: string | undefined): number | null =>
    value === undefined ? null : libvirtNumber(value);
  const domain = num(attrs.domain ?? "0");
  const bus = num(attrs.bus);
  const slot = num(attrs.slot);
  const fn = num(attrs.function);
  if (domain === null || bus === null || slot === null || fn === null) return null;
  // Domains go past 0xffff behind Intel VMD (10000 and up); libvirt takes 32 bits.
  if (domain > 0xffffffff || bus > 0xff || slot > 0x1f || fn > 7) return null;
  return pciAddressFromParts({ domain, bus, slot, function: fn });
}

/** libvirt's attribute values for a canonical address, as libvirt itself writes them. */
export function pciAddressToLibvirt(address: PciAddress): {
  domain: string;
  bus: string;
  slot: string;
  function: string;
} {
  const p = pciAddressParts(address);
  return {
    domain: `0x${p.domain.toString(16).padStart(4, "0")}`,
    bus: `0x${p.bus.toString(16).padStart(2, "0")}`,
    slot: `0x${p.slot.toString(16).padStart(2, "0")}`,
    function: `0x${p.function.toString(16)}`,
  };
}

/**
 * Orders canonical addresses numerically: by the domain's length first (a five-digit domain is
 * above every four-digit one), then lexicographically, which is numeric for equal lengths.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const sorted = ["10000:00:00.0", "ffff:00:00.0", "0000:01:00.0"].sort(comparePciAddress);
 * assertEquals(sorted, ["0000:01:00.0", "ffff:00:00.0", "10000:00:00.0"]);
 * ```
 */
export function comparePciAddress(a: PciAddress, b: PciAddress): number {
  return a.indexOf(":") - b.indexOf(":") || (a < b ? -1 : a > b ? 1 : 0);
}
