/**
 * The host USB device a `<hostdev mode='subsystem' type='usb'>` names: by vendor and product ID,
 * by bus and device number, or both (libvirt then wants both to match). Its PCI controller (an
 * xHCI or EHCI function) is what a rule passing that controller would take from under it.
 *
 * @module
 */

/** A USB hostdev's `<source>`: each part `null` when the definition does not give it. */
export interface UsbSource {
  /** Vendor ID, 4 lower-case hex digits (`046d`). */
  vendorId: string | null;
  /** Product ID, 4 lower-case hex digits (`c52b`). */
  productId: string | null;
  /** Host bus number (sysfs `busnum`). */
  bus: number | null;
  /** Device number on that bus (sysfs `devnum`). */
  device: number | null;
}

/** A number as libvirt reads these (C's `strtoul` with base 0: `0x` hex, leading `0` octal). */
function libvirtNumber(text: string | undefined): number | null {
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

/** A USB ID as sysfs writes it (`idVendor`: 4 lower-case hex digits), or `null`. */
function usbId(text: string | undefined): string | null {
  const id = libvirtNumber(text);
  return id === null || id > 0xffff ? null : id.toString(16).padStart(4, "0");
}

/**
 * The source of a USB hostdev from its `<vendor id>`, `<product id>` and `<address bus device>`
 * values as written; `null` when neither a readable pair of IDs nor a readable address is there
 * (libvirt refuses such a hostdev).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(usbSourceFrom({ vendor: "0x046D", product: "0xc52b" }), {
 *   vendorId: "046d", productId: "c52b", bus: null, device: null,
 * });
 * assertEquals(usbSourceFrom({ bus: "14", device: "6" }), {
 *   vendorId: null, productId: null, bus: 14, device: 6,
 * });
 * assertEquals(usbSourceFrom({ vendor: "logitech" }), null);
 * ```
 */
export function usbSourceFrom(
  values: {
    vendor?: string | undefined;
    product?: string | undefined;
    bus?: string | undefined;
    device?: string | undefined;
  },
): UsbSource | null {
  const source: UsbSource = {
    vendorId: usbId(values.vendor),
    productId: usbId(values.product),
    bus: libvirtNumber(values.bus),
    device: libvirtNumber(values.device),
  };
  const ids = source.vendorId !== null;
  const address = source.bus !== null && source.device !== null;
  return ids || address ? source : null;
}

/**
 * A USB source for messages: `USB device 046d:c52b`, `USB device at bus 14 device 6`, or both.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const source = { vendorId: "046d", productId: "c52b", bus: 1, device: 3 };
 * assertEquals(describeUsbSource(source), "USB device 046d:c52b at bus 1 device 3");
 * ```
 */
export function describeUsbSource(source: UsbSource): string {
  const ids = source.vendorId === null ? "" : ` ${source.vendorId}:${source.productId ?? "*"}`;
  const at = source.bus === null || source.device === null
    ? ""
    : ` at bus ${source.bus} device ${source.device}`;
  return `USB device${ids}${at}`;
}
