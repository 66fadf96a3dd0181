/**
 * The {@link LibvirtPort} that `lib/` plans and applies against, implemented over the real
 * `libvirt.so.0` through {@link Connection}.
 *
 * @module
 */

import type {
  DeviceChangeOptions,
  DomainSummary,
  LibvirtPort,
  NetworkSummary,
} from "../lib/plan/libvirt_port.ts";
import { Connection, type ConnectionOpenOptions } from "./connection.ts";
import {
  LibvirtError,
  VIR_ERR_NO_DOMAIN,
  VIR_ERR_NO_NETWORK,
  VIR_ERR_NO_SUPPORT,
} from "./errors.ts";
import type { Network } from "./network.ts";

/**
 * A `LibvirtPort` (exported by `lib/mod.ts`) that owns its connection: close it with `close()`
 * or `using`.
 */
export type OpenLibvirtPort = LibvirtPort & Disposable & { close(): void };

/**
 * Opens `uri` (libvirt's default when `null` or omitted) and returns a port over it. Every
 * method throws `LibvirtError` on failure (`VIR_ERR_NO_DOMAIN` for an unknown name).
 *
 * @example
 * ```ts
 * import { openLibvirtPort } from "./port.ts";
 * using port = openLibvirtPort("test:///default");
 * const xml = port.getPersistentXml("test");
 * if (!xml.includes("<name>test</name>")) throw new Error("unexpected XML");
 * ```
 */
export function openLibvirtPort(
  uri?: string | null,
  options: ConnectionOpenOptions = {},
): OpenLibvirtPort {
  const conn = Connection.open(uri, options);
  return Object.assign(connectionPort(conn), {
    close(): void {
      conn.close();
    },
    [Symbol.dispose](): void {
      conn.close();
    },
  });
}

/**
 * A port over a connection the caller keeps (and closes): for a caller that also needs calls the
 * port does not make, such as a test that undefines a domain of the test driver's world, which
 * lives inside the one connection that opened it.
 *
 * @example
 * ```ts
 * import { Connection } from "./connection.ts";
 * import { connectionPort } from "./port.ts";
 * using conn = Connection.open("test:///default");
 * const port = connectionPort(conn);
 * if (!port.listDomains().some((d) => d.name === "test")) throw new Error("no test domain");
 * ```
 */
export function connectionPort(conn: Connection): LibvirtPort {
  return {
    get uri() {
      return conn.uri;
    },
    listDomains(): DomainSummary[] {
      // Every handle freed when this returns, also those after a domain whose reading throws.
      using owned = new DisposableStack();
      const domains = conn.listDomains().map((dom) => owned.use(dom));
      const out: DomainSummary[] = [];
      for (const dom of domains) {
        try {
          out.push({
            name: dom.name,
            uuid: dom.uuid,
            active: dom.isActive(),
            persistent: dom.isPersistent(),
          });
        } catch (error) {
          // Undefined (or a transient guest stopped) since it was listed: as if listed a moment
          // later, rather than failing every command over a domain it may not even name.
          if (error instanceof LibvirtError && error.code === VIR_ERR_NO_DOMAIN) continue;
          throw error;
        }
      }
      return out;
    },
    getPersistentXml(name: string, xmlOptions: { secure?: boolean } = {}): string {
      using dom = conn.lookupDomainByName(name);
      return dom.xml({ inactive: true, secure: xmlOptions.secure ?? false });
    },
    getLiveXml(name: string): string {
      using dom = conn.lookupDomainByName(name);
      return dom.xml({ inactive: false, secure: false });
    },
    runId(name: string): number | null {
      using dom = conn.lookupDomainByName(name);
      return dom.id();
    },
    isActive(name: string): boolean {
      using dom = conn.lookupDomainByName(name);
      return dom.isActive();
    },
    hasManagedSave(name: string): boolean {
      using dom = conn.lookupDomainByName(name);
      return dom.hasManagedSaveImage();
    },
    listNetworks(): NetworkSummary[] {
      let networks: Network[];
      try {
        networks = conn.listNetworks();
      } catch (error) {
        // A connection without a network driver (a session, a modular daemon without
        // virtnetworkd) has no network a guest could take a VF from.
        if (error instanceof LibvirtError && error.code === VIR_ERR_NO_SUPPORT) return [];
        throw error;
      }
      const out: NetworkSummary[] = [];
      for (const net of networks) {
        using owned = net;
        try {
          out.push({ name: owned.name, xml: owned.xml() });
        } catch (error) {
          // Undefined since it was listed: as if listed a moment later.
          if (error instanceof LibvirtError && error.code === VIR_ERR_NO_NETWORK) continue;
          out.push({ name: owned.name, xml: null, error: (error as Error).message });
        }
      }
      return out;
    },
    define(xml: string): void {
      using _dom = conn.defineDomain(xml);
    },
    attachDevice(name: string, deviceXml: string, change: DeviceChangeOptions): void {
      using dom = conn.lookupDomainByName(name);
      dom.attachDevice(deviceXml, change);
    },
    detachDevice(name: string, deviceXml: string, change: DeviceChangeOptions): void {
      using dom = conn.lookupDomainByName(name);
      dom.detachDevice(deviceXml, change);
    },
  };
}
