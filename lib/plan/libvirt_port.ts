/**
 * What `lib/` needs from libvirt, as an interface. `ffi/port.ts` implements it over the real
 * `libvirt.so.0`; planning and applying take it as a parameter so they never touch pointers.
 *
 * @module
 */

/** A domain as listed. */
export interface DomainSummary {
  /** The domain's name, unique on the connection. */
  name: string;
  /** Its uuid, lower-case with dashes (`virDomainGetUUIDString`). */
  uuid: string;
  /** Whether it is running now. */
  active: boolean;
  /** Whether it has a persistent definition; a transient domain vanishes when it stops. */
  persistent: boolean;
}

/** A virtual network as listed. */
export interface NetworkSummary {
  /** The network's name. */
  name: string;
  /**
   * Its XML: the running network's when it runs (`virNetworkGetXMLDesc`, flags 0); `null` when
   * it could not be read (`error` says why).
   */
  xml: string | null;
  /** Why its XML could not be read. */
  error?: string;
}

/** Flags for hot-plug: `live` changes the running guest, `config` the persistent definition. */
export interface DeviceChangeOptions {
  /** Change the running guest (`VIR_DOMAIN_AFFECT_LIVE`); it must be running. */
  live: boolean;
  /** Change the persistent definition too (`VIR_DOMAIN_AFFECT_CONFIG`). */
  config: boolean;
}

/** The libvirt operations passthrough uses. Every method throws `LibvirtError` on failure. */
export interface LibvirtPort {
  /** The canonical URI of the open connection (`qemu:///system`, `test:///...`). */
  readonly uri: string;
  /** Every domain, running or defined, sorted by name. */
  listDomains(): DomainSummary[];
  /**
   * The persistent definition (`VIR_DOMAIN_XML_INACTIVE`); `secure` adds secrets and must be set
   * when the XML is written back.
   */
  getPersistentXml(name: string, options?: { secure?: boolean }): string;
  /**
   * Optional: the running guest's definition (flags 0), which also holds devices hot-plugged
   * into it without a change to the persistent one. Planning counts those as held.
   */
  getLiveXml?(name: string): string;
  /** Whether the domain is running now. */
  isActive(name: string): boolean;
  /**
   * Optional: the ID of the running guest (`virDomainGetID`), which each start gives anew, so a
   * guest shut off and started again between two reads has another; `null` when shut off.
   */
  runId?(name: string): number | null;
  /**
   * Optional: whether the domain has a managed save image (`virsh managedsave`), which its next
   * start resumes, with the devices it was saved with, instead of booting its definition.
   */
  hasManagedSave?(name: string): boolean;
  /**
   * Optional: every virtual network, sorted by name; none when the connection has no network
   * driver. Planning reads the pools of hostdev networks (`<forward mode='hostdev'>`), whose VFs
   * libvirt hands to guests at their start. Throws only when the listing fails.
   */
  listNetworks?(): NetworkSummary[];
  /** Defines (or redefines) a domain with `VIR_DOMAIN_DEFINE_VALIDATE`. */
  define(xml: string): void;
  /** Hot-plugs a device (`virDomainAttachDeviceFlags`). */
  attachDevice(name: string, deviceXml: string, options: DeviceChangeOptions): void;
  /** Hot-unplugs a device (`virDomainDetachDeviceFlags`). */
  detachDevice(name: string, deviceXml: string, options: DeviceChangeOptions): void;
}
