/**
 * `passthrough groups`: the host's IOMMU groups with their members, bridges and host-critical
 * members marked, or `[{ group, devices }]` as JSON.
 *
 * @module
 */

import type { CliIo } from "./context.ts";
import type { Parsed } from "./flags.ts";
import type { GROUPS } from "./specs.ts";
import type { HostTopology, IommuGroup } from "../lib/host/types.ts";
import { cardOf, hostCriticalReason } from "../lib/resolve/host_critical.ts";
import { loadHost } from "./host_options.ts";
import { renderTable } from "./table.ts";
import { painter } from "../lib/render/colors.ts";
import { deviceLabel, deviceNotes } from "./devices.ts";

/**
 * Why each member of `group` is needed by the host (platform function or in use right now),
 * by address. Other kinds of devices only count against a specific request, so not here.
 */
export function hostCriticalMembers(group: IommuGroup, host: HostTopology): Map<string, string> {
  const cards = new Set(group.devices.map((d) => cardOf(d.address)));
  const reasons = new Map<string, string>();
  for (const device of group.devices) {
    const reason = hostCriticalReason(device, { matchedCards: cards, hostUse: host.hostUse });
    if (reason !== null) reasons.set(device.address, reason);
  }
  return reasons;
}

/** Runs `passthrough groups`: a table, or `[{ group, devices }]` as JSON. */
export async function run({ values }: Parsed<typeof GROUPS>, io: CliIo): Promise<number> {
  const host = await loadHost(values.sysfs);
  if (values.json) {
    io.out(`${JSON.stringify(host.groups, null, 2)}\n`);
    return 0;
  }
  const paint = painter(io.color);
  if (host.iommu === "absent") {
    io.out(
      `${
        paint("yellow", "No IOMMU groups")
      }: the IOMMU is off or absent on this host, so no device can be passed through safely (see 'passthrough doctor')\n`,
    );
    return 0;
  }
  const rows: string[][] = [];
  for (const group of host.groups) {
    const critical = hostCriticalMembers(group, host);
    group.devices.forEach((d, i) => {
      const reason = critical.get(d.address);
      const notes = [deviceNotes(d, host, paint), reason ? paint("red", reason) : ""]
        .filter((n) => n !== "").join(", ");
      const status = i > 0 ? "" : critical.size > 0 ? paint("red", "host-critical") : "";
      rows.push([
        i === 0 ? String(group.group) : "",
        status,
        d.address,
        `${d.vendorId}:${d.deviceId}`,
        d.classCode,
        d.driver ?? "-",
        d.isBridge ? paint("dim", deviceLabel(d)) : deviceLabel(d),
        notes,
      ]);
    });
  }
  io.out(renderTable(
    ["GROUP", "STATUS", "ADDRESS", "IDS", "CLASS", "DRIVER", "DEVICE", "NOTES"].map((h) =>
      paint("bold", h)
    ),
    rows,
    io.color,
  ));
  if (host.hostUse === null) {
    io.out(
      `${
        paint("yellow", "Host use unknown")
      }: ${host.source} has no host_use.json, so devices the host uses right now are not marked; plan refuses it (capture it with 'passthrough snapshot' on that host)\n`,
    );
  }
  return 0;
}
