/**
 * `passthrough devices`: every PCI function of the host (or a captured tree) as a table, or the
 * {@link PciDevice} objects as JSON.
 *
 * @module
 */

import type { CliIo } from "./context.ts";
import type { Parsed } from "./flags.ts";
import type { DEVICES } from "./specs.ts";
import type { HostTopology, PciDevice } from "../lib/host/types.ts";
import { loadHost } from "./host_options.ts";
import { renderTable } from "./table.ts";
import { type Paint, painter } from "../lib/render/colors.ts";

/** Short notes for a device: bridge, SR-IOV role, host use. */
export function deviceNotes(device: PciDevice, host: HostTopology, paint: Paint): string {
  const notes: string[] = [];
  if (device.isBridge) notes.push(paint("dim", "bridge"));
  if (device.physfn !== null) notes.push(`VF of ${device.physfn}`);
  if (device.virtfns.length > 0) notes.push(`${device.virtfns.length} VFs`);
  if (device.bootVga === true) notes.push("boot VGA");
  for (const use of host.hostUse?.filter((u) => u.address === device.address) ?? []) {
    notes.push(paint("yellow", `host: ${use.detail}`));
  }
  return notes.join(", ");
}

/** The human description of a device (`NVIDIA Corporation GP104 [GeForce GTX 1080]`). */
export function deviceLabel(device: PciDevice): string {
  // lspci's own wording when the ID database knows the vendor but not the device.
  const deviceName = device.deviceName ??
    (device.vendorName !== null ? `Device ${device.deviceId}` : null);
  const name = [device.vendorName, deviceName].filter((s) => s !== null).join(" ");
  return name === "" ? (device.className ?? "") : name;
}

/** Runs `passthrough devices`: a table, or the {@link PciDevice} objects as JSON. */
export async function run({ values }: Parsed<typeof DEVICES>, io: CliIo): Promise<number> {
  const host = await loadHost(values.sysfs);
  if (values.json) {
    io.out(`${JSON.stringify(host.devices, null, 2)}\n`);
    return 0;
  }
  const paint = painter(io.color);
  const rows = host.devices.map((d) => [
    d.address,
    d.iommuGroup === null ? "-" : String(d.iommuGroup),
    `${d.vendorId}:${d.deviceId}`,
    d.classCode,
    d.driver ?? "-",
    deviceLabel(d),
    deviceNotes(d, host, paint),
  ]);
  io.out(renderTable(
    ["ADDRESS", "GROUP", "IDS", "CLASS", "DRIVER", "DEVICE", "NOTES"].map((h) => paint("bold", h)),
    rows,
    io.color,
  ));
  if (host.iommu === "absent") {
    io.out(paint("yellow", "No IOMMU groups: the IOMMU is off or absent on this host\n"));
  }
  return 0;
}
