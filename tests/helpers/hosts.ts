/**
 * The eight captured real hosts in `tests/fixtures/hosts/` and temporary sysfs-shaped trees built
 * from them (or from any host description) for discovery and the real `lspci` to read.
 *
 * @module
 */

import {
  buildHostTree,
  type HostDescription,
  loadHostDescription,
} from "../../lib/testing/host_tree.ts";
import { libcSysfsReader } from "../../ffi/libc_fs.ts";
import { readDeviceAt, readHostUse } from "../../lib/host/sysfs_device.ts";
import type { HostUse, PciDevice } from "../../lib/host/types.ts";

/** `tests/fixtures/hosts/`. */
export const HOSTS = new URL("../fixtures/hosts/", import.meta.url);

/** Every captured host in `tests/fixtures/hosts/`, by file name without `.json`. */
export const HOST_NAMES: readonly string[] = [
  "b550-aorus-pro",
  "c246-cx4lx-sriov",
  "hp-dl380p-g8",
  "laptop-hm87-gtx765m",
  "supermicro-cfl",
  "trx40-creator",
  "x570-aorus-pro-wifi",
  "z690-asus-adl",
];

/** The description of captured host `name` (one of {@link HOST_NAMES}). */
export function loadFixtureHost(name: string): HostDescription {
  return loadHostDescription(new URL(`${name}.json`, HOSTS));
}

/** A temporary directory holding a sysfs-shaped tree; removed on dispose. */
export interface TempHostTree extends AsyncDisposable {
  /** The tree's root, for `--sysfs` or `discoverHost({ root })`. */
  dir: string;
}

/** Builds `description`'s sysfs tree in a fresh temporary directory named `PREFIX...`. */
export async function tempHostTree(
  description: HostDescription,
  options: { prefix?: string } = {},
): Promise<TempHostTree> {
  const dir = await Deno.makeTempDir({ prefix: options.prefix ?? "passthrough-host-" });
  try {
    buildHostTree(description, dir);
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** This machine's PCI functions and what its host uses of them, read from the live `/sys`. */
function liveDevicesAndUses(): { devices: PciDevice[]; uses: HostUse[] } {
  const reader = libcSysfsReader();
  const devices = (reader.listDir("/sys/bus/pci/devices") ?? [])
    .flatMap((a) => readDeviceAt(reader, "/sys", a) ?? []);
  return { devices, uses: readHostUse(reader, { root: "/sys", live: true, devices }) ?? [] };
}

/**
 * The NIC of this machine's default route (which the host needs), and a hand-written managed
 * `<hostdev>` naming it; `null` when no default route runs over a PCI function here.
 */
export function liveDefaultRouteNic(): { address: string; hostdev: string } | null {
  const address = liveDevicesAndUses().uses.find((u) => u.reason === "default-route")?.address;
  if (address === undefined) return null;
  const [domain, bus, slotFn] = address.split(":");
  const [slot, fn] = slotFn!.split(".");
  const hostdev = `<hostdev mode='subsystem' type='pci' managed='yes'><source><address ` +
    `domain='0x${domain}' bus='0x${bus}' slot='0x${slot}' function='0x${fn}'/></source></hostdev>`;
  return { address, hostdev };
}

/** A PCI function of this machine that is no bridge and that the host does not use, or `null`. */
export function liveSpareFunction(): string | null {
  const { devices, uses } = liveDevicesAndUses();
  const used = new Set(uses.map((u) => u.address));
  return devices.find((d) => !d.isBridge && !used.has(d.address))?.address ?? null;
}

/**
 * Why a test of this machine's real `/sys` cannot run here (no PCI devices listed), or `null`.
 * For `ignore:`.
 */
export function livePciMissing(): string | null {
  try {
    return [...Deno.readDirSync("/sys/bus/pci/devices")].length === 0
      ? "no PCI devices in /sys"
      : null;
  } catch {
    return "no /sys/bus/pci/devices";
  }
}

/** `/proc/net/route` with no route: the header line alone. */
export const ROUTE_HEADER =
  "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

/**
 * Puts the non-PCI device `name` on `bus` into IOMMU group `group` of the tree at `dir`, as the
 * kernel lists an AMD IVRS or Intel ACPI namespace device: a link in the group's listing to its
 * directory under `devices/`, which links its bus (`subsystem`) and, when bound, its `driver`.
 */
export function addNonPciGroupMember(
  dir: string,
  group: number,
  name: string,
  bus: string,
  driver: string | null,
): void {
  const device = `${dir}/devices/${bus}/${name}`;
  Deno.mkdirSync(device, { recursive: true });
  Deno.mkdirSync(`${dir}/bus/${bus}/drivers/${driver ?? "none"}`, { recursive: true });
  Deno.symlinkSync(`../../../bus/${bus}`, `${device}/subsystem`);
  if (driver !== null) {
    Deno.symlinkSync(`../../../bus/${bus}/drivers/${driver}`, `${device}/driver`);
  }
  Deno.symlinkSync(
    `../../../../devices/${bus}/${name}`,
    `${dir}/kernel/iommu_groups/${group}/devices/${name}`,
  );
}
