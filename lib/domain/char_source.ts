/**
 * The domain elements whose source is a host character device named by its `/dev` path: an
 * evdev input (a keyboard or mouse QEMU reads: `<input type='evdev'>` with `<source dev>`, or
 * virtio's `<input type='passthrough'>` with `<source evdev>`) and a serial port, parallel port,
 * console or channel of `type='dev'` (`<source path>`). Such a device hangs under a PCI controller
 * (a USB keyboard under its xHCI function, a USB serial adapter, a PCI serial card), and QEMU
 * holds it open while the guest runs: a rule that passes that controller to a guest pulls it
 * from under the domain. Shared by the strict and the lenient reader.
 *
 * @module
 */

/** What marks an element's source as a host character device, and where its path is. */
export interface CharDeviceSource {
  /** The element's name. */
  element: string;
  /** The element's `type` that says so. */
  type: string;
  /** The `<source>` attribute holding the `/dev` path. */
  attribute: string;
}

/** The elements that can have a host character device as their source. */
export const CHAR_DEVICE_SOURCES: readonly CharDeviceSource[] = [
  { element: "input", type: "evdev", attribute: "dev" },
  { element: "input", type: "passthrough", attribute: "evdev" },
  { element: "serial", type: "dev", attribute: "path" },
  { element: "parallel", type: "dev", attribute: "path" },
  { element: "console", type: "dev", attribute: "path" },
  { element: "channel", type: "dev", attribute: "path" },
];

/**
 * The `<source>` attribute naming the host character device of element `element` of type
 * `type`, or `null` when such an element has none.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(charSourceAttribute("input", "passthrough"), "evdev");
 * assertEquals(charSourceAttribute("serial", "pty"), null);
 * ```
 */
export function charSourceAttribute(element: string, type: string | undefined): string | null {
  return CHAR_DEVICE_SOURCES.find((s) => s.element === element && s.type === type)?.attribute ??
    null;
}
