/**
 * The host USB device a `<hostdev mode='subsystem' type='usb'>` names: by vendor and product ID,
 * by bus and device number, or both (libvirt then wants both to match). Its PCI controller (an
 * xHCI or EHCI function) is what a rule passing that controller would take from under it.
 *
 * @module
 */

import { libvirtNumber } from "../pci/address.ts";

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
  const ids = source.vendorId !== null && source.productId !== null;
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

/**
 * Whether the persistent definition's `source` names the device a running guest's `live` source
 * names: libvirt fills in the bus and device number of a source given by IDs when the guest
 * starts.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const byIds = { vendorId: "046d", productId: "c52b", bus: null, device: null };
 * assertEquals(sameUsbDevice(byIds, { ...byIds, bus: 3, device: 2 }), true);
 * assertEquals(sameUsbDevice(byIds, { ...byIds, productId: "c534" }), false);
 * ```
 */
export function sameUsbDevice(source: UsbSource, live: UsbSource): boolean {
  if (
    source.vendorId !== null && (source.vendorId !== live.vendorId ||
      source.productId !== live.productId)
  ) return false;
  if (source.bus !== null && (source.bus !== live.bus || source.device !== live.device)) {
    return false;
  }
  return source.vendorId !== null || source.bus !== null;
}
