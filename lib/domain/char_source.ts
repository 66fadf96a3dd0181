/**
 * The domain elements whose source is a host character device named by its `/dev` path: an
 * `<input type='evdev'>` (a keyboard or mouse QEMU reads, `<source dev>`) and a serial port,
 * parallel port, console or channel of `type='dev'` (`<source path>`). Such a device hangs under
 * a PCI controller (a USB keyboard under its xHCI function, a USB serial adapter, a PCI serial
 * card), and QEMU holds it open while the guest runs: a rule that passes that controller to a
 * guest pulls it from under the domain. Shared by the strict and the lenient reader.
 *
 * @module
 */

/** What marks an element's source as a host character device, and where its path is. */
export interface CharDeviceSource {
  /** The element's `type` that says so. */
  type: string;
  /** The `<source>` attribute holding the `/dev` path. */
  attribute: string;
}

/** The elements that can have a host character device as their source, by element name. */
export const CHAR_DEVICE_SOURCES: ReadonlyMap<string, CharDeviceSource> = new Map([
  ["input", { type: "evdev", attribute: "dev" }],
  ["serial", { type: "dev", attribute: "path" }],
  ["parallel", { type: "dev", attribute: "path" }],
  ["console", { type: "dev", attribute: "path" }],
  ["channel", { type: "dev", attribute: "path" }],
]);
