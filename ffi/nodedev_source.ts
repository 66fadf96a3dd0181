/**
 * The {@link NodeDeviceSource} that `lib/host/nodedev.ts` reads, over a real libvirt
 * connection: `virConnectListAllNodeDevices` with the PCI capability filter, then
 * `virNodeDeviceGetXMLDesc` on each.
 *
 * @module
 */

import type { NodeDeviceSource } from "../lib/host/nodedev.ts";
import { Connection, type ConnectionOpenOptions } from "./connection.ts";

/**
 * A `NodeDeviceSource` (exported by `lib/mod.ts`) that owns its connection: close it with
 * `close()` or `using`.
 */
export type OpenNodeDeviceSource = NodeDeviceSource & Disposable & { close(): void };

/**
 * A source over a connection the caller owns (and closes). Each node device handle is freed as
 * soon as its XML is read.
 *
 * @example
 * ```ts
 * import { Connection } from "./connection.ts";
 * import { nodeDeviceSource } from "./nodedev_source.ts";
 * import { nodeDeviceWorldXml } from "../lib/testing/nodedev_world.ts";
 * const dir = Deno.makeTempDirSync();
 * const path = `${dir}/world.xml`;
 * Deno.writeTextFileSync(path, nodeDeviceWorldXml({ devices: [{ bdf: "0000:01:00.0", group: 1,
 *   class: "0x030000", vendor: "0x10de", device: "0x1b80", subsystem_vendor: null,
 *   subsystem_device: null, driver: null, revision: null }] }));
 * using conn = Connection.open(`test://${path}`, { readOnly: true });
 * const xmls = nodeDeviceSource(conn).listPciNodeDeviceXml();
 * if (xmls.length !== 1 || !xmls[0]?.includes("<bus>1</bus>")) throw new Error("unexpected XML");
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function nodeDeviceSource(conn: Connection): NodeDeviceSource {
  return {
    get uri() {
      return conn.uri;
    },
    listPciNodeDeviceXml(): string[] {
      // Every handle freed when this returns, also when reading one of them throws.
      using owned = new DisposableStack();
      const devices = conn.listNodeDevices({ cap: "pci" }).map((device) => owned.use(device));
      return devices.map((device) => device.xml());
    },
  };
}

/**
 * Opens `uri` (libvirt's default when `null` or omitted) read-only, unless `options` says
 * otherwise (listing devices needs no more), and returns a source that owns the connection.
 *
 * @example
 * ```ts
 * import { openNodeDeviceSource } from "./nodedev_source.ts";
 * import { discoverViaLibvirt } from "../lib/host/nodedev.ts";
 * using source = openNodeDeviceSource("test:///default");
 * const host = discoverViaLibvirt(source);
 * if (host.source !== "test:///default") throw new Error(`unexpected source ${host.source}`);
 * ```
 */
export function openNodeDeviceSource(
  uri?: string | null,
  options: ConnectionOpenOptions = {},
): OpenNodeDeviceSource {
  const conn = Connection.open(uri, { readOnly: true, ...options });
  return Object.assign(nodeDeviceSource(conn), {
    close(): void {
      conn.close();
    },
    [Symbol.dispose](): void {
      conn.close();
    },
  });
}
