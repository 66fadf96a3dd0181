/**
 * `virNetworkPtr` as a class: one virtual network of a libvirt connection.
 *
 * @module
 */

import { checkPointer, ClosedHandleError } from "./errors.ts";
import { borrowCString, libvirt, takeCString } from "./library.ts";

// Handles the caller forgot to free are released when the object is collected; explicit free()
// stays the rule, this only stops a slow leak.
const finalizer = new FinalizationRegistry<Deno.PointerObject>((pointer) => {
  libvirt().virNetworkFree(pointer);
});

/**
 * One network (`default`, a `<forward mode='hostdev'>` pool of SR-IOV VFs). Get it from a
 * `Connection`; free it with `free()` or `using`.
 *
 * @example
 * ```ts
 * import { Connection } from "./connection.ts";
 * using conn = Connection.open("test:///default");
 * const [net] = conn.listNetworks();
 * using owned = net!;
 * if (owned.name !== "default") throw new Error("unexpected network");
 * if (!owned.xml().includes("<name>default</name>")) throw new Error("unexpected XML");
 * ```
 */
export class Network {
  #handle: Deno.PointerObject | null;
  #name: string;

  /** Takes ownership of a `virNetworkPtr` (it is freed by {@link Network.free}). */
  constructor(handle: Deno.PointerObject) {
    this.#handle = handle;
    this.#name = borrowCString(libvirt().virNetworkGetName(handle)) ?? "";
    finalizer.register(this, handle, this);
  }

  /** The network's name. Still readable after `free()`. */
  get name(): string {
    return this.#name;
  }

  #live(operation: string): Deno.PointerObject {
    if (this.#handle === null) {
      throw new ClosedHandleError({ kind: "network", label: this.#name, operation });
    }
    return this.#handle;
  }

  /**
   * The network's XML: the running network's when it runs (a hostdev pool then lists the VFs
   * libvirt found under its `<pf>`), else its definition.
   */
  xml(): string {
    const pointer = checkPointer(libvirt().virNetworkGetXMLDesc(this.#live("xml"), 0), {
      operation: "virNetworkGetXMLDesc",
      context: `Cannot read the XML of network "${this.#name}"`,
    });
    return takeCString(pointer) ?? "";
  }

  /** Releases the handle. Idempotent. */
  free(): void {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    finalizer.unregister(this);
    libvirt().virNetworkFree(handle);
  }

  /** Same as {@link Network.free}, for `using`. */
  [Symbol.dispose](): void {
    this.free();
  }

  /** `Network { name: "default" }`. */
  [Symbol.for("Deno.customInspect")](): string {
    const freed = this.#handle === null ? ", freed: true" : "";
    return `Network { name: ${JSON.stringify(this.#name)}${freed} }`;
  }
}
