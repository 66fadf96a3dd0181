/**
 * `passthrough devices`: every PCI function of the host (or a captured tree) as a table fitted
 * to the terminal, or the {@link PciDevice} objects as JSON; narrowed to addresses or a class.
 *
 * @module
 */

import { type CliIo, UsageError } from "./context.ts";
import { type Parsed, runFlags } from "./flags.ts";
import type { DEVICES } from "./specs.ts";
import type { HostTopology, PciDevice } from "../lib/host/types.ts";
import { hostCriticalOnItsOwn, type TakenAlong, takenAlong } from "../lib/resolve/host_critical.ts";
import { canonicalPciAddress, slotOf } from "../lib/pci/address.ts";
import { CLASS_NAMES, classPrefixesOf } from "../lib/config/schema.ts";
import { loadHost } from "./host_options.ts";
import { renderTable } from "./table.ts";
import { didYouMean } from "../lib/render/suggest.ts";
import { followUpCommand, type RunFlags } from "../lib/render/shell.ts";
import { type Paint, painter } from "../lib/render/colors.ts";

/**
 * Short notes for a device: bridge, SR-IOV role, host use, a twin with the same IDs, and its
 * serial number where another card has its IDs.
 */
export function deviceNotes(
  device: PciDevice,
  host: HostTopology,
  paint: Paint,
  twins: ReadonlyMap<string, string> = new Map(),
): string {
  const notes: string[] = [];
  if (device.isBridge) notes.push(paint("dim", "bridge"));
  if (device.physfn !== null) notes.push(`VF of ${device.physfn}`);
  if (device.virtfns.length > 0) notes.push(`${device.virtfns.length} VFs`);
  if (device.bootVga === true) notes.push("boot VGA");
  const twin = twins.get(device.address);
  if (twin !== undefined) notes.push(`same IDs as ${twin}`);
  // What tells it from an identical card: without it the table showed twins alike, and a rule
  // for one of them could not be written from it.
  if (device.serial !== null && hasTwinCard(device, host)) notes.push(`serial ${device.serial}`);
  // Each of the host's uses (a disk may hold / and swap): they make it host-critical.
  for (const use of host.hostUse?.filter((u) => u.address === device.address) ?? []) {
    notes.push(paint("red", `host: ${use.detail === "" ? use.reason : use.detail}`));
  }
  return notes.join(", ");
}

/** Whether another card of `host` has `device`'s vendor, device and subsystem IDs. */
function hasTwinCard(device: PciDevice, host: HostTopology): boolean {
  if (device.isBridge) return false;
  const card = slotOf(device.address);
  return host.devices.some((d) =>
    !d.isBridge && slotOf(d.address) !== card && d.vendorId === device.vendorId &&
    d.deviceId === device.deviceId && d.subsystemVendorId === device.subsystemVendorId &&
    d.subsystemDeviceId === device.subsystemDeviceId
  );
}

/**
 * Why the host needs `device` on its own (`reason`, from {@link hostCriticalOnItsOwn} unless the
 * caller has it), painted, for a table's notes: `""` when it does not, or when its uses by the
 * host say it already ({@link deviceNotes}).
 */
export function criticalNote(
  device: PciDevice,
  host: HostTopology,
  paint: Paint,
  reason: string | null = hostCriticalOnItsOwn(device, host),
): string {
  if (reason === null || host.hostUse?.some((u) => u.address === device.address)) return "";
  return paint("red", reason);
}

/**
 * `plan refuses 0000:04:00.0 or 0000:05:00.0 without it`, painted: the cards whose passing
 * without this member `plan` refuses (`group-contains-host-critical`, which says why); `""` for a
 * member none takes along. Short, as a table fitted to a terminal cuts the names for the notes.
 */
export function alongNote(along: TakenAlong | undefined, paint: Paint): string {
  if (along === undefined) return "";
  return paint("red", `plan refuses ${along.by.join(" or ")} without it`);
}

/**
 * For each device whose vendor, device and subsystem IDs repeat an earlier device's, that
 * device's address: a rule matching by IDs cannot tell them apart. The first of them is marked
 * too, with the next one, when the table (`shown`) holds none of the later ones (`devices 03:00`
 * asks for its card alone), or it would look as if nothing shared its IDs. Bridges, which the
 * platform repeats by design and which stay with the host, are left out.
 */
export function sameIds(
  devices: readonly PciDevice[],
  shown: readonly PciDevice[] = devices,
): Map<string, string> {
  const byIds = new Map<string, string[]>();
  for (const d of devices) {
    if (d.classCode.startsWith("06") || d.classCode.startsWith("13")) continue;
    const key = `${d.vendorId}:${d.deviceId}:${d.subsystemVendorId}:${d.subsystemDeviceId}`;
    byIds.set(key, [...(byIds.get(key) ?? []), d.address]);
  }
  const visible = new Set(shown.map((d) => d.address));
  const twins = new Map<string, string>();
  for (const [first, ...later] of byIds.values()) {
    if (later.length === 0) continue;
    for (const address of later) twins.set(address, first!);
    if (!later.some((a) => visible.has(a))) twins.set(first!, later[0]!);
  }
  return twins;
}

/** The human description of a device (`NVIDIA Corporation GP104 [GeForce GTX 1080]`). */
export function deviceLabel(device: PciDevice): string {
  // lspci's own wording when the ID database knows the vendor but not the device.
  const deviceName = device.deviceName ??
    (device.vendorName !== null ? `Device ${device.deviceId}` : null);
  const name = [device.vendorName, deviceName].filter((s) => s !== null).join(" ");
  return name === "" ? (device.className ?? "") : name;
}

/** The cells every device table shows, after its group column: IDs, slot, NUMA, driver, name. */
export function deviceCells(d: PciDevice): string[] {
  return [
    d.address,
    `${d.vendorId}:${d.deviceId}`,
    d.subsystemVendorId === null ? "-" : `${d.subsystemVendorId}:${d.subsystemDeviceId ?? "?"}`,
    d.classCode,
    d.physicalSlot ?? "-",
    d.numaNode === null ? "-" : String(d.numaNode),
    d.driver ?? "-",
  ];
}

/** The headers of {@link deviceCells}. */
export const DEVICE_HEADERS = ["ADDRESS", "IDS", "SUBSYSTEM", "CLASS", "SLOT", "NUMA", "DRIVER"];

/**
 * The canonical function (`0000:44:00.0`) or card (`0000:44:00`) that `wanted` names: `44:00.0`
 * or `0000:44:00.0`, `44:00` for every function of the card, with a domain of up to 8 hex digits
 * as the kernel numbers them (Intel VMD's are `10000` and up); `null` when it names none.
 */
function wantedAddress(wanted: string): string | null {
  if (/\.[0-7]$/.test(wanted)) return canonicalPciAddress(wanted);
  const first = canonicalPciAddress(`${wanted}.0`);
  return first === null ? null : slotOf(first);
}

/** Whether `address` is the function or on the card that `wanted` ({@link wantedAddress}) names. */
function matchesAddress(address: string, wanted: string): boolean {
  return address === wanted || slotOf(address) === wanted;
}

/** The addresses given, as typed and parsed: a usage error for one that is none, before any read. */
function wantedAddresses(addresses: string[]): WantedDevice[] {
  const malformed = addresses.find((a) => wantedAddress(a) === null);
  if (malformed !== undefined) {
    throw new UsageError(
      `"${malformed}" is not a PCI address (0000:44:00.0, 44:00.0, or 44:00 for a whole card)`,
    );
  }
  return addresses.map((a) => ({ text: a, address: wantedAddress(a)! }));
}

/** An address given on the command line, as typed and parsed. */
interface WantedDevice {
  text: string;
  address: string;
}

/**
 * The devices `wanted` and `--class` name (all when neither is given); throws on a typo,
 * pointing at the `devices` of the same tree (`run`'s `--sysfs`).
 */
function selected(
  host: HostTopology,
  { wanted, klass, run }: { wanted: WantedDevice[]; klass: string | undefined; run: RunFlags },
): PciDevice[] {
  let devices = host.devices;
  if (wanted.length > 0) {
    const unknown = wanted.filter((w) =>
      !devices.some((d) => matchesAddress(d.address, w.address))
    );
    if (unknown.length > 0) {
      throw new Error(
        `No device at ${unknown.map((w) => w.text).join(", ")} on ${host.source}: '${
          followUpCommand(run, "passthrough devices")
        }' lists them`,
      );
    }
    devices = devices.filter((d) => wanted.some((w) => matchesAddress(d.address, w.address)));
  }
  if (klass !== undefined) {
    const prefixes = classPrefixesOf(klass) ?? [];
    devices = devices.filter((d) => prefixes.some((p) => d.classCode.startsWith(p)));
  }
  return devices;
}

/**
 * Under a table of a captured tree without `host_use.json`: the devices the host needs are not
 * marked, which an unmarked row must not be taken to mean. `""` when the host use is known.
 */
export function hostUseUnknownNote(host: HostTopology, paint: Paint): string {
  if (host.hostUse !== null) return "";
  return `${
    paint("yellow", "Host use unknown")
  }: ${host.source} has no host_use.json, so devices the host uses right now are not marked; plan refuses it (capture it with 'passthrough snapshot' on that host)\n`;
}

/** A `--class` no class is named by: a usage error, before anything is read. */
function checkClass(klass: string | undefined): void {
  if (klass === undefined || classPrefixesOf(klass) !== null) return;
  const names = Object.keys(CLASS_NAMES);
  throw new UsageError(
    `Unknown class "${klass}"${didYouMean(klass, names)}: give a class code prefix (02, 0200) ` +
      `or one of ${names.join(", ")}`,
  );
}

/**
 * Runs `passthrough devices`: a table, or the {@link PciDevice} objects as JSON, each with its
 * `hostCritical` reason and what passing another card without it takes along (`takenAlong`).
 */
export async function run(
  { values, positionals }: Parsed<typeof DEVICES>,
  io: CliIo,
): Promise<number> {
  // A wrong command line is said whatever the tree: one that cannot be read is not said first.
  checkClass(values.class);
  const wanted = wantedAddresses(positionals);
  const host = await loadHost(values.sysfs);
  const devices = selected(host, {
    wanted,
    klass: values.class,
    run: runFlags(values),
  });
  const along = new Map(
    host.groups.flatMap((g) => [...takenAlong(g.devices).along]),
  );
  if (values.json) {
    const json = devices.map((d) => ({
      ...d,
      hostCritical: hostCriticalOnItsOwn(d, host),
      takenAlong: along.get(d.address) ?? null,
    }));
    io.out(`${JSON.stringify(json, null, 2)}\n`);
    return 0;
  }
  const paint = painter(io.color);
  if (devices.length === 0 && values.class !== undefined) {
    // A table of headers alone read as if the filter had not been applied, or had failed.
    const at = positionals.length === 0 ? "" : ` at ${positionals.join(", ")}`;
    io.out(`No device of class "${values.class}"${at} on ${host.source}\n`);
    return 0;
  }
  const twins = sameIds(host.devices, devices);
  const rows = devices.map((d) => {
    const notes = [
      deviceNotes(d, host, paint, twins),
      criticalNote(d, host, paint),
      alongNote(along.get(d.address), paint),
    ];
    const [address, ...cells] = deviceCells(d);
    return [
      address!,
      d.iommuGroup === null ? "-" : String(d.iommuGroup),
      ...cells,
      deviceLabel(d),
      notes.filter((n) => n !== "").join(", "),
    ];
  });
  const header = ["ADDRESS", "GROUP", ...DEVICE_HEADERS.slice(1), "DEVICE", "NOTES"];
  const fit = values.wide || io.columns === undefined
    ? undefined
    : { width: io.columns, column: header.indexOf("DEVICE") };
  io.out(renderTable(header.map((h) => paint("bold", h)), rows, io.color, fit));
  io.out(hostUseUnknownNote(host, paint));
  if (host.iommu === "absent") {
    io.out(paint("yellow", "No IOMMU groups: the IOMMU is off or absent on this host\n"));
  }
  return 0;
}
