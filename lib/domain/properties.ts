/**
 * Typed fields of domain XML elements, declared as a path and a converter each (virtinst's
 * `XMLProperty("./rom/@bar", is_onoff=True)`), so domain code reads `romBar`, not raw markup.
 * A converter never throws: a value it cannot read is `null`, like an absent one, and libvirt
 * (which validates every define) stays the judge of what is valid.
 *
 * @module
 */

import type { PciAddress } from "../host/types.ts";
import { pciAddressFromLibvirt } from "../pci/address.ts";
import type { XmlElement } from "./xml.ts";

/**
 * One typed field: how the value at its path in an element becomes a value. The path, given to
 * {@link attributeProperty} or {@link elementProperty}, is `@attr`, `child/@attr` or
 * `child/grandchild` (an element); the first match of each step.
 */
export interface XmlProperty<T> {
  /** The value at its path in `element`, or `null` when absent or unreadable. */
  read(element: XmlElement): T | null;
}

/** The first element at `steps` below `element` (each step a child name), or `null`. */
function descend(element: XmlElement, steps: readonly string[]): XmlElement | null {
  let at: XmlElement | undefined = element;
  for (const step of steps) {
    at = at.children.find((c) => c.name === step);
    if (at === undefined) return null;
  }
  return at;
}

/** A field read from an attribute (`rom/@bar`): its decoded text through `convert`. */
export function attributeProperty<T>(
  path: string,
  convert: (text: string) => T | null,
): XmlProperty<T> {
  const steps = path.split("/");
  const last = steps.pop() ?? "";
  if (!last.startsWith("@")) throw new TypeError(`Not an attribute path: "${path}"`);
  return {
    read(element) {
      const value = descend(element, steps)?.attributes[last.slice(1)];
      return value === undefined ? null : convert(value);
    },
  };
}

/** A field read from a whole element (`address`), e.g. a guest address from its attributes. */
export function elementProperty<T>(
  path: string,
  convert: (element: XmlElement) => T | null,
): XmlProperty<T> {
  const steps = path.split("/");
  return {
    read(element) {
      const found = descend(element, steps);
      return found === null ? null : convert(found);
    },
  };
}

/** The values of a table of {@link XmlProperty}s, by field name. */
export type PropertyValues<T extends Record<string, XmlProperty<unknown>>> = {
  [K in keyof T]: T[K] extends XmlProperty<infer V> ? V | null : never;
};

/**
 * Reads every field of `table` from `element`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { readXmlElement } from "./xml.ts";
 * const table = {
 *   managed: attributeProperty("@managed", yesNo),
 *   romBar: attributeProperty("rom/@bar", onOff),
 *   bootOrder: attributeProperty("boot/@order", unsignedDecimal),
 * };
 * const hostdev = readXmlElement("<hostdev managed='yes'><rom bar='off'/></hostdev>");
 * assertEquals(readProperties(hostdev, table), { managed: true, romBar: "off", bootOrder: null });
 * ```
 */
export function readProperties<T extends Record<string, XmlProperty<unknown>>>(
  element: XmlElement,
  table: T,
): PropertyValues<T> {
  const out: Record<string, unknown> = {};
  for (const [field, property] of Object.entries(table)) out[field] = property.read(element);
  return out as PropertyValues<T>;
}

/** libvirt's `yes`/`no`. */
export function yesNo(text: string): boolean | null {
  return text === "yes" ? true : text === "no" ? false : null;
}

/** libvirt's `on`/`off`, kept as the word (it is what a hostdev spec holds). */
export function onOff(text: string): "on" | "off" | null {
  return text === "on" || text === "off" ? text : null;
}

/** A non-negative decimal integer (`<boot order>`). */
export function unsignedDecimal(text: string): number | null {
  return /^[0-9]+$/.test(text) ? parseInt(text, 10) : null;
}

/** Text as is (already decoded). */
export function asText(value: string): string {
  return value;
}

/** A guest-side PCI address: where a device sits on the guest's PCI buses. */
export interface GuestPciAddress {
  /** Canonical (`0000:00:10.0`); a missing domain or function reads as 0, as libvirt does. */
  address: PciAddress;
  /** `multifunction='on'`: the slot's other functions are in use. */
  multifunction: boolean;
}

/**
 * An `<address type='pci'>` element (hex or decimal numbers, as libvirt reads them), or `null`
 * for another address type or numbers out of range.
 */
export function guestPciAddress(element: Pick<XmlElement, "attributes">): GuestPciAddress | null {
  const { attributes } = element;
  if (attributes.type !== "pci") return null;
  const address = pciAddressFromLibvirt({ ...attributes, function: attributes.function ?? "0" });
  if (address === null) return null;
  return { address, multifunction: attributes.multifunction === "on" };
}
