/**
 * `passthrough groups`: the host's IOMMU groups with their members, bridges and host-critical
 * members marked, or `[{ group, hostCritical, devices }]` as JSON; narrowed to groups by number.
 *
 * @module
 */

import { type CliIo, UsageError } from "./context.ts";
import { type Parsed, runFlags } from "./flags.ts";
import type { GROUPS } from "./specs.ts";
import type { HostTopology, IommuGroup } from "../lib/host/types.ts";
import { hostCriticalOnItsOwn, takenAlong } from "../lib/resolve/host_critical.ts";
import { loadHost } from "./host_options.ts";
import { renderTable } from "./table.ts";
import { painter } from "../lib/render/colors.ts";
import { followUpCommand } from "../lib/render/shell.ts";
import {
  alongNote,
  criticalNote,
  DEVICE_HEADERS,
  deviceCells,
  deviceLabel,
  deviceNotes,
  hostUseUnknownNote,
  sameIds,
} from "./devices.ts";

/** A usage error for a group given that is no number, before any read. */
function checkGroupNumbers(wanted: string[]): void {
  const malformed = wanted.find((w) => !/^\d+$/.test(w));
  if (malformed !== undefined) {
    throw new UsageError(`"${malformed}" is not an IOMMU group number`);
  }
}

/** The groups `wanted` names (all when none is); throws on a group the host does not have. */
function selected(host: HostTopology, wanted: string[]): IommuGroup[] {
  const unknown = wanted.filter((w) => !host.groups.some((g) => String(g.group) === w));
  if (unknown.length > 0) {
    const numbers = host.groups.map((g) => g.group);
    const range = numbers.length === 0
      ? "it has none"
      : `it has ${Math.min(...numbers)} to ${Math.max(...numbers)}`;
    throw new Error(`No IOMMU group ${unknown.join(", ")} on ${host.source}: ${range}`);
  }
  return wanted.length === 0
    ? host.groups
    : host.groups.filter((g) => wanted.includes(String(g.group)));
}

/**
 * Runs `passthrough groups`: a table (every row with its group's number and status), or
 * `[{ group, hostCritical, devices }]` as JSON, each device with its `hostCritical` reason and
 * what passing another card without it takes along (`takenAlong`).
 */
export async function run(
  { values, positionals }: Parsed<typeof GROUPS>,
  io: CliIo,
): Promise<number> {
  // A wrong command line is said whatever the tree: one that cannot be read is not said first.
  checkGroupNumbers(positionals);
  const host = await loadHost(values.sysfs);
  const groups = selected(host, positionals);
  if (values.json) {
    const json = groups.map((group) => {
      const { along, noCardAlone } = takenAlong(group.devices);
      const devices = group.devices.map((d) => ({
        ...d,
        hostCritical: hostCriticalOnItsOwn(d, host),
        takenAlong: along.get(d.address) ?? null,
      }));
      return {
        group: group.group,
        hostCritical: devices.some((d) => d.hostCritical !== null) || noCardAlone,
        devices,
      };
    });
    io.out(`${JSON.stringify(json, null, 2)}\n`);
    return 0;
  }
  const paint = painter(io.color);
  if (host.iommu === "absent") {
    io.out(
      `${
        paint("yellow", "No IOMMU groups")
      }: the IOMMU is off or absent on this host, so no device can be passed through safely (see '${
        followUpCommand(runFlags(values), "passthrough doctor")
      }')\n`,
    );
    return 0;
  }
  const twins = sameIds(host.devices, groups.flatMap((g) => g.devices));
  const rows: string[][] = [];
  for (const group of groups) {
    const reasons = group.devices.map((d) => hostCriticalOnItsOwn(d, host));
    // A group of several cards each taking another's controller along passes no card alone.
    const { along, noCardAlone } = takenAlong(group.devices);
    const critical = reasons.some((r) => r !== null) || noCardAlone;
    for (const [i, d] of group.devices.entries()) {
      const notes = [
        deviceNotes(d, host, paint, twins),
        criticalNote(d, host, paint, reasons[i]),
        alongNote(along.get(d.address), paint),
      ].filter((n) => n !== "").join(", ");
      rows.push([
        String(group.group),
        critical ? paint("red", "host-critical") : "",
        ...deviceCells(d),
        d.isBridge ? paint("dim", deviceLabel(d)) : deviceLabel(d),
        notes,
      ]);
    }
  }
  const header = ["GROUP", "STATUS", ...DEVICE_HEADERS, "DEVICE", "NOTES"];
  const fit = values.wide || io.columns === undefined
    ? undefined
    : { width: io.columns, column: header.indexOf("DEVICE") };
  io.out(renderTable(header.map((h) => paint("bold", h)), rows, io.color, fit));
  io.out(hostUseUnknownNote(host, paint));
  io.out(inconsistencyNotes(host, positionals.length === 0 ? null : groups, paint));
  return 0;
}

/**
 * Under the table: where sysfs's group data disagrees with itself (a device without a group on a
 * host with groups, a listing that contradicts a link), so a group shown may lack a member;
 * `plan` refuses a VM taking such a device (`group-inconsistent`). Of the `shown` groups only
 * (`null`: every group).
 */
function inconsistencyNotes(
  host: HostTopology,
  shown: readonly IommuGroup[] | null,
  paint: ReturnType<typeof painter>,
): string {
  const numbers = new Set(shown?.map((g) => g.group));
  return host.groupInconsistencies
    .filter((p) => shown === null || p.groups.some((g) => numbers.has(g)))
    .map((p) =>
      `${paint("yellow", "Group data disagrees")}: ${p.detail}; plan refuses a VM taking ${
        p.groups.length > 0 ? `a device of group ${p.groups.join(", ")}` : p.devices.join(", ")
      }\n`
    ).join("");
}
