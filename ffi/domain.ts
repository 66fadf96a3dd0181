/**
 * `virDomainPtr` as a class: one libvirt domain handle, freed once.
 *
 * @module
 */

import { checkInt, checkPointer, ClosedHandleError } from "./errors.ts";
import { borrowCString, cString, libvirt, takeCString } from "./library.ts";
import {
  VIR_DOMAIN_AFFECT_CONFIG,
  VIR_DOMAIN_AFFECT_LIVE,
  VIR_DOMAIN_XML_INACTIVE,
  VIR_DOMAIN_XML_SECURE,
  VIR_UUID_STRING_BUFLEN,
} from "./symbols.ts";

/** `virDomainState` as words, in libvirt's numeric order. */
export type DomainState =
  | "nostate"
  | "running"
  | "blocked"
  | "paused"
  | "shutdown"
  | "shutoff"
  | "crashed"
  | "pmsuspended";

/** What `virDomainGetID` returns for a domain that is shut off: `(unsigned int)-1`. */
const NO_DOMAIN_ID = 0xffffffff;

const STATES: readonly DomainState[] = [
  "nostate",
  "running",
  "blocked",
  "paused",
  "shutdown",
  "shutoff",
  "crashed",
  "pmsuspended",
];

/** Options for {@link Domain.xml}. */
export interface DomainXmlOptions {
  /** The persistent (next boot) definition instead of the live one (`VIR_DOMAIN_XML_INACTIVE`). */
  inactive?: boolean;
  /** Include secrets such as VNC passwords (`VIR_DOMAIN_XML_SECURE`); set when writing back. */
  secure?: boolean;
}

/** Where a device change applies (`VIR_DOMAIN_AFFECT_LIVE` / `_CONFIG`). */
export interface DomainDeviceOptions {
  /** Change the running guest. */
  live: boolean;
  /** Change the persistent definition. */
  config: boolean;
}

// Handles the caller forgot to free are released when the object is collected; explicit free()
// stays the rule (GC timing is unknowable), this only stops a slow leak.
const finalizer = new FinalizationRegistry<Deno.PointerObject>((pointer) => {
  libvirt().virDomainFree(pointer);
});

/**
 * One libvirt domain. Get it from a `Connection`; free it with `free()` or `using`.
 *
 * @example
 * ```ts
 * import { Connection } from "./connection.ts";
 * using conn = Connection.open("test:///default");
 * using dom = conn.lookupDomainByName("test");
 * if (dom.state() !== "running") throw new Error("the default test domain runs");
 * ```
 */
export class Domain {
  #handle: Deno.PointerObject | null;
  #name: string;

  /** Takes ownership of a `virDomainPtr` (it is freed by {@link Domain.free}). */
  constructor(handle: Deno.PointerObject) {
    this.#handle = handle;
    this.#name = borrowCString(libvirt().virDomainGetName(handle)) ?? "";
    finalizer.register(this, handle, this);
  }

  /** The raw `virDomainPtr`, or `null` once freed. Only for code that calls libvirt itself. */
  get unsafeHandle(): Deno.PointerObject | null {
    return this.#handle;
  }

  /** Whether {@link Domain.free} was called. */
  get freed(): boolean {
    return this.#handle === null;
  }

  #live(operation: string): Deno.PointerObject {
    if (this.#handle === null) {
      throw new ClosedHandleError({ kind: "domain", label: this.#name, operation });
    }
    return this.#handle;
  }

  /** The domain's name. Still readable after `free()`. */
  get name(): string {
    if (this.#handle !== null) {
      this.#name = borrowCString(libvirt().virDomainGetName(this.#handle)) ?? this.#name;
    }
    return this.#name;
  }

  /** The UUID in its canonical text form (`c7a5fdbd-cdaf-9455-926a-d65c16db1809`). */
  get uuid(): string {
    const buffer = new Uint8Array(VIR_UUID_STRING_BUFLEN);
    checkInt(libvirt().virDomainGetUUIDString(this.#live("uuid"), buffer), {
      operation: "virDomainGetUUIDString",
      context: `Cannot read the UUID of domain "${this.#name}"`,
    });
    const end = buffer.indexOf(0);
    return new TextDecoder().decode(buffer.subarray(0, end < 0 ? buffer.length : end));
  }

  /** The current state (`running`, `shutoff`, ...). */
  state(): DomainState {
    const state = new Int32Array(1);
    const reason = new Int32Array(1);
    checkInt(libvirt().virDomainGetState(this.#live("state"), state, reason, 0), {
      operation: "virDomainGetState",
      context: `Cannot read the state of domain "${this.#name}"`,
    });
    return STATES[state[0] ?? 0] ?? "nostate";
  }

  /**
   * The ID libvirt gave the running guest, new at each start, as of this handle's lookup; `null`
   * when it is shut off.
   */
  id(): number | null {
    const id = libvirt().virDomainGetID(this.#live("id"));
    return id === NO_DOMAIN_ID ? null : id;
  }

  /** Whether the domain is running (or paused) now. */
  isActive(): boolean {
    return checkInt(libvirt().virDomainIsActive(this.#live("isActive")), {
      operation: "virDomainIsActive",
      context: `Cannot tell whether domain "${this.#name}" is active`,
    }) === 1;
  }

  /** Whether the domain has a persistent definition (is not transient). */
  isPersistent(): boolean {
    return checkInt(libvirt().virDomainIsPersistent(this.#live("isPersistent")), {
      operation: "virDomainIsPersistent",
      context: `Cannot tell whether domain "${this.#name}" is persistent`,
    }) === 1;
  }

  /**
   * Whether the domain has a managed save image (`virsh managedsave`, or libvirt-guests'
   * suspend at host shutdown): its next start resumes that saved guest, not its definition.
   */
  hasManagedSaveImage(): boolean {
    return checkInt(
      libvirt().virDomainHasManagedSaveImage(this.#live("hasManagedSaveImage"), 0),
      {
        operation: "virDomainHasManagedSaveImage",
        context: `Cannot tell whether domain "${this.#name}" has a managed save image`,
      },
    ) === 1;
  }

  /** The domain XML: live by default, the persistent definition with `inactive`. */
  xml(options: DomainXmlOptions = {}): string {
    const flags = (options.inactive ? VIR_DOMAIN_XML_INACTIVE : 0) |
      (options.secure ? VIR_DOMAIN_XML_SECURE : 0);
    const pointer = checkPointer(libvirt().virDomainGetXMLDesc(this.#live("xml"), flags), {
      operation: "virDomainGetXMLDesc",
      context: `Cannot read the XML of domain "${this.#name}"`,
    });
    return takeCString(pointer) ?? "";
  }

  /**
   * Removes the persistent definition (a running domain keeps running, now transient). libvirt
   * refuses it for a domain with UEFI variables.
   */
  undefine(): void {
    checkInt(libvirt().virDomainUndefineFlags(this.#live("undefine"), 0), {
      operation: "virDomainUndefineFlags",
      context: `Cannot undefine domain "${this.#name}"`,
    });
  }

  /** Adds a device (`virDomainAttachDeviceFlags`). The test driver does not support it. */
  attachDevice(xml: string, options: DomainDeviceOptions): void {
    checkInt(
      libvirt().virDomainAttachDeviceFlags(
        this.#live("attachDevice"),
        cString(xml),
        deviceFlags(options),
      ),
      {
        operation: "virDomainAttachDeviceFlags",
        context: `Cannot attach a device to domain "${this.#name}"`,
      },
    );
  }

  /** Removes a device (`virDomainDetachDeviceFlags`). The test driver does not support it. */
  detachDevice(xml: string, options: DomainDeviceOptions): void {
    checkInt(
      libvirt().virDomainDetachDeviceFlags(
        this.#live("detachDevice"),
        cString(xml),
        deviceFlags(options),
      ),
      {
        operation: "virDomainDetachDeviceFlags",
        context: `Cannot detach a device from domain "${this.#name}"`,
      },
    );
  }

  /** Releases the handle. Idempotent; the domain itself is unaffected. */
  free(): void {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    finalizer.unregister(this);
    libvirt().virDomainFree(handle);
  }

  /** Same as {@link Domain.free}, for `using`. */
  [Symbol.dispose](): void {
    this.free();
  }

  /** `Domain { name: "win11", uuid: "...", state: "shutoff" }`. */
  [Symbol.for("Deno.customInspect")](): string {
    if (this.#handle === null) return `Domain { name: ${JSON.stringify(this.#name)}, freed: true }`;
    let detail: string;
    try {
      detail = `uuid: ${JSON.stringify(this.uuid)}, state: ${JSON.stringify(this.state())}`;
    } catch (error) {
      detail = `error: ${JSON.stringify((error as Error).message)}`;
    }
    return `Domain { name: ${JSON.stringify(this.name)}, ${detail} }`;
  }
}

function deviceFlags(options: DomainDeviceOptions): number {
  if (!options.live && !options.config) {
    throw new TypeError(`Device change affects nothing: set "live", "config" or both`);
  }
  return (options.live ? VIR_DOMAIN_AFFECT_LIVE : 0) |
    (options.config ? VIR_DOMAIN_AFFECT_CONFIG : 0);
}
