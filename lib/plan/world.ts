/**
 * The one place planning reads libvirt: every domain's state and definitions, read once into
 * plain data (a {@link World}) that the planner then works on without any I/O. Whatever goes wrong
 * while reading (a definition the strict reader refuses, a read libvirt fails, a guest that stops
 * or a domain undefined between the listing and the read) becomes data here, never an exception
 * out of the middle of planning.
 *
 * @module
 */

import { type ParsedDomain, parseDomainXml } from "../domain/domain_xml.ts";
import {
  type LenientHostdevScan,
  scanHostdevPoolLeniently,
  scanHostdevsLeniently,
  scanNetworkInterfacesLeniently,
} from "../domain/lenient.ts";
import type { PciAddress } from "../host/types.ts";
import type { LibvirtPort } from "./libvirt_port.ts";
import { errorText } from "../render/error_text.ts";

/**
 * One definition of a domain as read: parsed by the strict reader; refused by it (with what the
 * lenient scan still finds in it); or not returned by libvirt at all.
 */
export type DefinitionRead =
  | { kind: "parsed"; xml: string; domain: ParsedDomain }
  | { kind: "unreadable"; xml: string; error: string; scan: LenientHostdevScan }
  | { kind: "read-failed"; error: string };

/** One domain as planning sees it. Plain data. */
export interface DomainSnapshot {
  /** The domain's name. */
  name: string;
  /** Whether it was running when listed. */
  active: boolean;
  /**
   * `true` for a transient domain (running, with no persistent definition, gone once it stops),
   * which `apply` does not make persistent; absent: persistent.
   */
  transient?: boolean;
  /** The persistent definition (`VIR_DOMAIN_XML_INACTIVE`), as planning reads it. */
  persistent: DefinitionRead;
  /**
   * The running definition, which also holds devices hot-plugged without a change to the
   * persistent one: read for a domain listed as running when the port can read it. `null` when
   * not read, and when the guest stopped before it could be read (it then holds nothing live).
   */
  live: DefinitionRead | null;
}

/**
 * A hostdev network (`<forward mode='hostdev'>`): a pool of SR-IOV VFs that libvirt hands to a
 * guest's `<interface type='network'>` at its start, whichever entry is free.
 */
export interface HostdevNetwork {
  /** The network's name. */
  name: string;
  /** The pool's PCI addresses as its XML lists them (a running network lists its PF's VFs). */
  addresses: PciAddress[];
  /** Pool entries that could not be read. */
  unresolved: number;
  /** The host interfaces of its `<pf dev>` elements. */
  pfs: string[];
}

/**
 * A network that puts its guests on host interfaces: a `<forward mode='bridge'>` network on a
 * host bridge, or a macvtap network (see `scanNetworkInterfacesLeniently`). A guest's
 * `<interface type='network'>` on it uses one of them while it runs.
 */
export interface BridgedNetwork {
  /** The network's name. */
  name: string;
  /** The host bridge, or the macvtap pool (`<forward dev>`, `<interface dev>`, `<pf dev>`). */
  interfaces: string[];
}

/** The hostdev and bridged networks of a connection as read, or why they could not be. */
export type NetworksRead =
  | {
    kind: "read";
    hostdev: HostdevNetwork[];
    bridged: BridgedNetwork[];
    /** Networks whose XML could not be read: any of them may be a hostdev pool. */
    unreadable: { name: string; error: string }[];
  }
  | { kind: "read-failed"; error: string };

/** Every domain of a libvirt connection, read once. Plain data (see {@link readWorld}). */
export interface World {
  /** The canonical URI of the connection. */
  uri: string;
  /** Every domain, in the port's order (sorted by name). */
  domains: DomainSnapshot[];
  /** Its hostdev and bridged networks; absent when the port cannot list networks. */
  networks?: NetworksRead;
}

/**
 * Reads one definition as {@link readWorld} does: through the strict reader, else the lenient
 * scan with the strict reader's complaint. For worlds built from XML by hand (tests, scripts).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(readDefinition("<domain><name>vm</name></domain>").kind, "parsed");
 * const broken = readDefinition("<domain><name>vm</name><devices>");
 * assertEquals(broken.kind === "unreadable" && broken.scan, { addresses: [], unresolved: 0 });
 * ```
 */
export function readDefinition(xml: string): DefinitionRead {
  try {
    return { kind: "parsed", xml, domain: parseDomainXml(xml) };
  } catch (error) {
    return { kind: "unreadable", xml, error: errorText(error), scan: scanHostdevsLeniently(xml) };
  }
}

/** Whether `name` still exists; `true` when libvirt cannot say (the read error then stands). */
function stillListed(libvirt: LibvirtPort, name: string): boolean {
  try {
    return libvirt.listDomains().some((d) => d.name === name);
  } catch {
    return true;
  }
}

/** Whether the guest still runs; a domain libvirt no longer finds does not. */
function stillActive(libvirt: LibvirtPort, name: string): boolean {
  try {
    return libvirt.isActive(name);
  } catch {
    return false;
  }
}

/**
 * The running definition of a domain listed as running, or `null` when the guest stopped since
 * it was listed: a stopped guest holds nothing live, so neither a failed read nor a definition
 * the strict reader refuses says anything then.
 */
function readLive(libvirt: LibvirtPort, name: string): DefinitionRead | null {
  if (libvirt.getLiveXml === undefined) return null;
  let read: DefinitionRead;
  try {
    read = readDefinition(libvirt.getLiveXml(name));
  } catch (error) {
    read = { kind: "read-failed", error: errorText(error) };
  }
  if (read.kind !== "parsed" && !stillActive(libvirt, name)) return null;
  return read;
}

/**
 * The persistent definition with its secrets: the plan's XML is what `apply` defines, so it must
 * keep the passwords. A read-only connection may not read secrets (libvirt refuses
 * `VIR_DOMAIN_XML_SECURE` there); the definition without them still plans, and `apply`, which
 * compares the plan's XML with the secure one before defining, then refuses a VM whose
 * passwords the plan lacks (`drift`) instead of erasing them.
 */
function readPersistentXml(libvirt: LibvirtPort, name: string): string {
  try {
    return libvirt.getPersistentXml(name, { secure: true });
  } catch {
    return libvirt.getPersistentXml(name);
  }
}

/**
 * Reads every domain of `libvirt` once: its state, its persistent definition and, for a running
 * guest, its live definition, each parsed by the strict reader or, when that refuses it, scanned
 * leniently. A domain undefined between the listing and the read is left out, as if listed a
 * moment later; any other failed read is kept as `read-failed`. Never throws for one domain;
 * only a failed listing throws. Also reads the networks (see {@link readNetworks}), unless
 * `networks: false` (a re-check before a define that counts no host devices).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { openLibvirtPort } from "../../ffi/port.ts";
 * // libvirt's built-in test world has one running domain, "test".
 * using libvirt = openLibvirtPort("test:///default");
 * const world = readWorld(libvirt);
 * assertEquals(world.domains.map((d) => [d.name, d.active, d.persistent.kind, d.live?.kind]), [
 *   ["test", true, "parsed", "parsed"],
 * ]);
 * ```
 */
export function readWorld(libvirt: LibvirtPort, options: { networks?: boolean } = {}): World {
  const domains: DomainSnapshot[] = [];
  for (const { name, active, persistent: defined } of libvirt.listDomains()) {
    let persistent: DefinitionRead;
    try {
      persistent = readDefinition(readPersistentXml(libvirt, name));
    } catch (error) {
      if (!stillListed(libvirt, name)) continue;
      persistent = { kind: "read-failed", error: errorText(error) };
    }
    domains.push({
      name,
      active,
      ...(defined ? {} : { transient: true }),
      persistent,
      live: active ? readLive(libvirt, name) : null,
    });
  }
  const networks = options.networks === false ? null : readNetworks(libvirt);
  return { uri: libvirt.uri, domains, ...(networks === null ? {} : { networks }) };
}

/**
 * The hostdev networks (`<forward mode='hostdev'>` pools) and bridged networks (a host bridge, a
 * macvtap pool) of `libvirt`; `null` when the port cannot list networks. A failed listing is kept
 * as `read-failed`, a network that cannot be read in `unreadable`.
 */
export function readNetworks(libvirt: LibvirtPort): NetworksRead | null {
  if (libvirt.listNetworks === undefined) return null;
  try {
    const hostdev: HostdevNetwork[] = [];
    const bridged: BridgedNetwork[] = [];
    const unreadable: { name: string; error: string }[] = [];
    for (const { name, xml, error } of libvirt.listNetworks()) {
      if (xml === null) {
        unreadable.push({ name, error: error ?? "no XML" });
        continue;
      }
      const pool = scanHostdevPoolLeniently(xml);
      if (pool !== null) hostdev.push({ name, ...pool });
      const scan = scanNetworkInterfacesLeniently(xml);
      if (scan.kind === "bridged") bridged.push({ name, interfaces: scan.interfaces });
      if (scan.kind === "unreadable") unreadable.push({ name, error: scan.reason });
    }
    return { kind: "read", hostdev, bridged, unreadable };
  } catch (error) {
    return { kind: "read-failed", error: errorText(error) };
  }
}
