/**
 * Captures a host's PCI/IOMMU topology (the live `/sys` or a captured tree) into a portable
 * sysfs-shaped tree that discovery and `lspci -O sysfs.path=` read back as the same host:
 * attribute files and `config` bytes are copied as read, links are rewritten relative to the new
 * tree, and what only a live host knows is written beside them (`cmdline`, `host_use.json`, and
 * lspci's module list as a `modules` file per device).
 *
 * @module
 */

import type { HostTopology } from "./types.ts";
import { baseName, type SysfsReader } from "./sysfs.ts";

/** Attribute files copied as is when present. */
const ATTRIBUTES = [
  "uevent",
  "vendor",
  "device",
  "class",
  "subsystem_vendor",
  "subsystem_device",
  "revision",
  "irq",
  "resource",
  "numa_node",
  "boot_vga",
  "modalias",
  "sriov_numvfs",
  "sriov_totalvfs",
  "local_cpulist",
];

/** Options of {@link writeSnapshot}. */
export interface SnapshotOptions {
  /** The sysfs root `host` was discovered from: its files are the ones copied. */
  root: string;
  /**
   * The reader to copy files with: `libcSysfsReader()` (from `ffi/`) for the live `/sys`, which
   * Deno's own file API refuses to read without `--allow-all`; `denoFsReader()` for a captured
   * tree.
   */
  reader: SysfsReader;
}

/** What a snapshot wrote. */
export interface SnapshotSummary {
  /** The snapshot directory, as given to {@link writeSnapshot}. */
  out: string;
  /** How many PCI functions it holds. */
  devices: number;
  /** How many IOMMU groups it holds (`0` for a host without IOMMU). */
  groups: number;
}

/** Raised when the snapshot target exists and is not an empty directory. */
export class SnapshotTargetError extends Error {
  /** The error's name. */
  override name = "SnapshotTargetError";
  /** The target path. */
  readonly path: string;
  /** Builds the error for the non-empty target `path`. */
  constructor(path: string) {
    super(`Cannot write snapshot to "${path}": it exists and is not empty`);
    this.path = path;
  }
}

function ensureEmptyTarget(out: string): void {
  try {
    const stat = Deno.statSync(out);
    if (!stat.isDirectory || [...Deno.readDirSync(out)].length > 0) {
      throw new SnapshotTargetError(out);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/**
 * Writes the snapshot of `host` (discovered from `options.root`) into `out`, which must not exist
 * or be empty.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { buildHostTree } from "../testing/host_tree.ts";
 * import { discoverHost } from "./discover.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const root = Deno.makeTempDirSync();
 * buildHostTree({ devices: [{ bdf: "0000:01:00.0", group: 7, class: "0x010802",
 *   vendor: "0x144d", device: "0xa808", subsystem_vendor: null, subsystem_device: null,
 *   driver: "nvme", revision: null }] }, root);
 * const host = await discoverHost({ root, lspci: null });
 * const out = `${Deno.makeTempDirSync()}/snap`;
 * writeSnapshot(host, out, { root, reader: denoFsReader() });
 * const again = await discoverHost({ root: out, lspci: null });
 * assertEquals(again.devices, host.devices);
 * Deno.removeSync(root, { recursive: true });
 * Deno.removeSync(out, { recursive: true });
 * ```
 */
export function writeSnapshot(
  host: HostTopology,
  out: string,
  options: SnapshotOptions,
): SnapshotSummary {
  const { root, reader } = options;
  ensureEmptyTarget(out);
  const devicesDir = `${out}/bus/pci/devices`;
  Deno.mkdirSync(devicesDir, { recursive: true });
  Deno.mkdirSync(`${out}/bus/pci/drivers`, { recursive: true });
  for (const device of host.devices) {
    const from = `${root}/bus/pci/devices/${device.address}`;
    const to = `${devicesDir}/${device.address}`;
    Deno.mkdirSync(to);
    for (const name of ATTRIBUTES) {
      const bytes = reader.readBytes(`${from}/${name}`, 65536);
      if (bytes !== null) Deno.writeFileSync(`${to}/${name}`, bytes);
    }
    // As much config space as this process may read: 4096 bytes as root, 64 otherwise, so the
    // snapshot shows lspci exactly the capabilities the live host showed.
    const config = reader.readBytes(`${from}/config`, 4096);
    if (config !== null) Deno.writeFileSync(`${to}/config`, config);
    if (device.modules.length > 0) {
      Deno.writeTextFileSync(`${to}/modules`, `${device.modules.join(",")}\n`);
    }
    if (device.driver !== null) {
      Deno.mkdirSync(`${out}/bus/pci/drivers/${device.driver}`, { recursive: true });
      Deno.symlinkSync(`../../drivers/${device.driver}`, `${to}/driver`);
    }
    if (device.iommuGroup !== null) {
      const groupDir = `${out}/kernel/iommu_groups/${device.iommuGroup}/devices`;
      Deno.mkdirSync(groupDir, { recursive: true });
      Deno.symlinkSync(`../../../../kernel/iommu_groups/${device.iommuGroup}`, `${to}/iommu_group`);
      Deno.symlinkSync(
        `../../../../bus/pci/devices/${device.address}`,
        `${groupDir}/${device.address}`,
      );
    }
    if (device.physfn !== null) Deno.symlinkSync(`../${device.physfn}`, `${to}/physfn`);
    // Keep the kernel's virtfnN numbering: it is the VF index, not the sorted position.
    const numVfs = Number(reader.readText(`${from}/sriov_numvfs`)?.trim() ?? "0");
    for (let i = 0; i < numVfs; i++) {
      const link = reader.readLink(`${from}/virtfn${i}`);
      if (link !== null) Deno.symlinkSync(`../${baseName(link)}`, `${to}/virtfn${i}`);
    }
  }
  for (const slot of reader.listDir(`${root}/bus/pci/slots`) ?? []) {
    const address = reader.readText(`${root}/bus/pci/slots/${slot}/address`);
    if (address === null) continue;
    Deno.mkdirSync(`${out}/bus/pci/slots/${slot}`, { recursive: true });
    Deno.writeTextFileSync(`${out}/bus/pci/slots/${slot}/address`, address);
  }
  if (host.kernelCmdline !== null) {
    Deno.writeTextFileSync(`${out}/cmdline`, `${host.kernelCmdline}\n`);
  }
  // A snapshot of a tree that did not know its host's use stays unknowing.
  if (host.hostUse !== null) {
    Deno.writeTextFileSync(`${out}/host_use.json`, `${JSON.stringify(host.hostUse, null, 2)}\n`);
  }
  return { out, devices: host.devices.length, groups: host.groups.length };
}
