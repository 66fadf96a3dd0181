/**
 * `virNodeDevicePtr` as a class: one host device as libvirt's node-device API sees it.
 *
 * @module
 */

import { checkPointer, ClosedHandleError } from "./errors.ts";
import { borrowCString, libvirt, takeCString } from "./library.ts";

// Handles the caller forgot to free are released when the object is collected; explicit free()
// stays the rule, this only stops a slow leak.
const finalizer = new FinalizationRegistry<Deno.PointerObject>((pointer) => {
  libvirt().virNodeDeviceFree(pointer);
});

/**
 * One node device (`pci_0000_01_00_0`). Get it from a `Connection`; free it with `free()` or
 * `using`.
 *
 * @example
 * ```ts
 * import { Connection } from "./connection.ts";
 * using conn = Connection.open("test:///default");
 * for (const device of conn.listNodeDevices()) {
 *   using owned = device;
 *   if (!owned.xml().includes(`<name>${owned.name}</name>`)) throw new Error("unexpected XML");
 * }
 * ```
 */
export class NodeDevice {
  #handle: Deno.PointerObject | null;
  #name: string;

  /** Takes ownership of a `virNodeDevicePtr` (it is freed by {@link NodeDevice.free}). */
  constructor(handle: Deno.PointerObject) {
    this.#handle = handle;
    this.#name = borrowCString(libvirt().virNodeDeviceGetName(handle)) ?? "";
    finalizer.register(this, handle, this);
  }

  /** The raw `virNodeDevicePtr`, or `null` once freed. */
  get unsafeHandle(): Deno.PointerObject | null {
    return this.#handle;
  }

  /** Whether {@link NodeDevice.free} was called. */
  get freed(): boolean {
    return this.#handle === null;
  }

  /** libvirt's device name (`pci_0000_01_00_0`). Still readable after `free()`. */
  get name(): string {
    return this.#name;
  }

  #live(operation: string): Deno.PointerObject {
    if (this.#handle === null) {
      throw new ClosedHandleError({ kind: "node device", label: this.#name, operation });
    }
    return this.#handle;
  }

  /** The device's XML (`<device>` with `<capability type='pci'>` and `<iommuGroup>`). */
  xml(): string {
    const pointer = checkPointer(libvirt().virNodeDeviceGetXMLDesc(this.#live("xml"), 0), {
      operation: "virNodeDeviceGetXMLDesc",
      context: `Cannot read the XML of node device "${this.#name}"`,
    });
    return takeCString(pointer) ?? "";
  }

  /** Releases the handle. Idempotent. */
  free(): void {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    finalizer.unregister(this);
    libvirt().virNodeDeviceFree(handle);
  }

  /** Same as {@link NodeDevice.free}, for `using`. */
  [Symbol.dispose](): void {
    this.free();
  }

  /** `NodeDevice { name: "pci_0000_01_00_0" }`. */
  [Symbol.for("Deno.customInspect")](): string {
    const freed = this.#handle === null ? ", freed: true" : "";
    return `NodeDevice { name: ${JSON.stringify(this.#name)}${freed} }`;
  }
}
