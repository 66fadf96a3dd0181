/**
 * Host discovery: a sysfs-shaped tree (the real `/sys` or a captured one) read through an
 * injected {@link SysfsReader}, plus one `lspci -nnkD` run for what sysfs lacks. Sysfs is the
 * truth for IDs, class, driver, group, NUMA node, SR-IOV links, `boot_vga` and the physical slot;
 * the `config` file gives FLR and the serial number (`lib/pci/config_space.ts`); lspci adds only the
 * names and kernel modules.
 *
 * @module
 */

import type {
  GroupInconsistency,
  HostTopology,
  HostUse,
  HostUseReason,
  PciAddress,
  PciDevice,
} from "./types.ts";
import { canonicalPciAddress, canonicalPciSlot, comparePciAddress } from "../pci/address.ts";
import {
  baseName,
  checkCapturedTree,
  denoFsReader,
  readAttribute,
  type SysfsReader,
} from "./sysfs.ts";
import {
  bufferConfigReader,
  type ConfigSpaceHeaderFacts,
  readConfigSpace,
} from "../pci/config_space.ts";
import { groupDevices, parseGroupNumber, readGroupListings, settleGroups } from "./iommu_groups.ts";
import { isBridgeClass, isBridgeHeader } from "../pci/class.ts";
import {
  commandLspciRunner,
  lspciArgs,
  type LspciRecord,
  type LspciRunner,
  parseLspci,
  pciIdsVendorNames,
  splitVendorName,
  type VendorNames,
} from "./lspci.ts";

/** Options of {@link discoverHost}. */
export interface DiscoverOptions {
  /** The sysfs root: `/sys` (default) or a captured tree with the same shape. */
  root?: string;
  /** How files are read. Default: plain Deno file access (pass `libcSysfsReader()` for `/sys`). */
  reader?: SysfsReader;
  /** How lspci runs; `null` skips it (names, modules, FLR and serial stay unknown). */
  lspci?: LspciRunner | null;
  /**
   * Vendor name lookup that cuts lspci's joined "vendor device" names in two. Default:
   * {@link pciIdsVendorNames} over the system `pci.ids`.
   */
  vendorNames?: VendorNames;
  /**
   * Whether `root` is the running host's own sysfs, so `/proc` may be read for the kernel
   * command line and host use. Default: `root` is `/sys`.
   */
  live?: boolean;
  /** Where `/proc` is for a live host. Default `/proc`. */
  procRoot?: string;
}

/** Raised when the sysfs root has no PCI devices directory at all. */
export class SysfsRootError extends Error {
  /** The error's name. */
  override name = "SysfsRootError";
  /** The root that was given. */
  readonly root: string;
  /** Builds the error for the `root` that has no `bus/pci/devices`. */
  constructor(root: string) {
    super(`Not a sysfs tree: "${root}": no bus/pci/devices directory`);
    this.root = root;
  }
}

/**
 * Discovers the host's PCI devices and IOMMU groups.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { buildHostTree } from "../testing/host_tree.ts";
 * const dir = Deno.makeTempDirSync();
 * buildHostTree({ devices: [{ bdf: "0000:01:00.0", group: 3, class: "0x030000",
 *   vendor: "0x10de", device: "0x1b80", subsystem_vendor: null, subsystem_device: null,
 *   driver: "nouveau", revision: "0xa1" }] }, dir);
 * const host = await discoverHost({ root: dir, lspci: null });
 * assertEquals(host.groups.map((g) => g.group), [3]);
 * assertEquals(host.devices[0]?.driver, "nouveau");
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export async function discoverHost(options: DiscoverOptions = {}): Promise<HostTopology> {
  const root = (options.root ?? "/sys").replace(/(.)\/+$/, "$1");
  const reader = options.reader ?? denoFsReader();
  const live = options.live ?? root === "/sys";
  const runner = options.lspci === undefined ? commandLspciRunner() : options.lspci;
  // Before lspci or the reader opens anything: a FIFO or device planted in a tree blocks them.
  if (!live && runner !== null) checkCapturedTree(root);
  // Start lspci first so it runs while sysfs is read.
  const lspciText = runner === null ? Promise.resolve(null) : runner(lspciArgs(root));
  // If sysfs fails first, lspci's own failure must not surface as an unhandled rejection.
  lspciText.catch(() => {});
  // Deno drains lspci's pipe only when this thread yields to its event loop; without the pauses
  // lspci blocks on a full pipe until sysfs is read, and the two never overlap. A zero timeout
  // through AbortSignal, since setTimeout loads Deno's Node compatibility layer (its timers).
  const pause = runner === null ? undefined : () =>
    new Promise<void>((resolve) => {
      AbortSignal.timeout(0).addEventListener("abort", () => resolve(), { once: true });
    });
  const { devices, groupInconsistencies } = await readDevices(reader, root, pause);
  const lspci = parseLspci((await lspciText) ?? "");
  const vendorNames = options.vendorNames ?? pciIdsVendorNames();
  for (const device of devices) {
    const record = lspci.get(device.address);
    if (record !== undefined) mergeLspci(device, record, vendorNames);
  }
  const groups = groupDevices(devices);
  const procRoot = options.procRoot ?? "/proc";
  const kernelCmdline = live
    ? readAttribute(reader, `${procRoot}/cmdline`)
    : readAttribute(reader, `${root}/cmdline`);
  const hostUse = live
    ? liveHostUse(reader, { sysRoot: root, procRoot, devices })
    : treeHostUse(reader, root);
  return {
    source: root,
    iommu: groups.length > 0 ? "enabled" : "absent",
    devices,
    groups,
    groupInconsistencies,
    kernelCmdline: kernelCmdline === "" ? null : kernelCmdline,
    hostUse,
  };
}

/**
 * The one PCI function at `address`, read from sysfs alone (no lspci, no other device), or `null`
 * when nothing is there. For callers that need a few known addresses fast, such as the start
 * guard; names, modules and the physical slot stay unknown.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { buildHostTree } from "../testing/host_tree.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const dir = Deno.makeTempDirSync();
 * buildHostTree({ devices: [{ bdf: "0000:01:00.0", group: 3, class: "0x030000",
 *   vendor: "0x10de", device: "0x1b80", subsystem_vendor: null, subsystem_device: null,
 *   driver: "nouveau", revision: "0xa1" }] }, dir);
 * assertEquals(readDeviceAt(denoFsReader(), dir, "0000:01:00.0")?.deviceId, "1b80");
 * assertEquals(readDeviceAt(denoFsReader(), dir, "0000:02:00.0"), null);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function readDeviceAt(
  reader: SysfsReader,
  root: string,
  address: PciAddress,
): PciDevice | null {
  const raw = readRawDevice(reader, root.replace(/(.)\/+$/, "$1"), address);
  // A device always has a uevent in the live sysfs; only a tree without one needs the listing.
  if (raw.uevent === null && reader.listDir(raw.path) === null) return null;
  return parseRawDevice(reader, raw);
}

/**
 * What the host uses among `devices`: on the live host (`live`), the controllers of mounted
 * filesystems, the default route's NIC and the console's boot VGA, read from `/proc` and sysfs;
 * for a captured tree, its `host_use.json` (`null` when it has none: unknown). The same rules as
 * {@link discoverHost}, for callers that read only some devices ({@link readDeviceAt}).
 */
export function readHostUse(
  reader: SysfsReader,
  options: { root: string; live: boolean; devices: PciDevice[]; procRoot?: string },
): HostUse[] | null {
  const root = options.root.replace(/(.)\/+$/, "$1");
  return options.live
    ? liveHostUse(reader, {
      sysRoot: root,
      procRoot: options.procRoot ?? "/proc",
      devices: options.devices,
    })
    : treeHostUse(reader, root);
}

/** Hexadecimal digits only; tested, not matched, so nothing is allocated. */
const HEX_DIGITS = /^[0-9a-f]+$/i;

function hexId(text: string | null, width: number): string | null {
  if (text === null) return null;
  const trimmed = text.trim();
  const digits = trimmed.startsWith("0x") || trimmed.startsWith("0X") ? trimmed.slice(2) : trimmed;
  if (digits === "" || !HEX_DIGITS.test(digits)) return null;
  const lower = digits.toLowerCase();
  return lower.length === width ? lower : lower.padStart(width, "0").slice(-width);
}

/** The devices read from sysfs, and where its group data disagrees. */
interface SysfsDevices {
  devices: PciDevice[];
  groupInconsistencies: GroupInconsistency[];
}

/**
 * Reads every PCI function from sysfs alone (no lspci): IDs, class, driver, group, NUMA node,
 * SR-IOV links, `boot_vga`, the bridge flag, physical slot, and FLR and serial number from the
 * configuration space. Sorted by address. Calls `pause` now and then so other work (lspci's pipe)
 * runs.
 */
async function readDevices(
  reader: SysfsReader,
  root: string,
  pause: (() => Promise<void>) | undefined,
): Promise<SysfsDevices> {
  const names = listSysfsDevices(reader, root);
  const raw: RawSysfsDevice[] = [];
  for (let i = 0; i < names.length; i++) {
    if (pause !== undefined && i % 128 === 127) await pause();
    raw.push(readRawDevice(reader, root, names[i]!));
  }
  return finishDevices(reader, root, raw);
}

/**
 * Discovery reads every device first and parses afterwards: the system calls and the parsing
 * each run faster in a loop of their own than interleaved. Groups are settled against the
 * group listings (`settleGroups`); a second entry for one address is kept out and reported.
 */
function finishDevices(reader: SysfsReader, root: string, raw: RawSysfsDevice[]): SysfsDevices {
  const devices: PciDevice[] = [];
  const links = new Map<PciAddress, string | null>();
  const names = new Map<PciAddress, RawSysfsDevice>();
  const duplicates: GroupInconsistency[] = [];
  for (const entry of raw) {
    const device = parseRawDevice(reader, entry);
    if (device === null) continue;
    const link = entry.groupLink === null ? null : baseName(entry.groupLink);
    const first = names.get(device.address);
    if (first !== undefined) {
      const groups = [first.groupLink, entry.groupLink].flatMap((l) => {
        const group = l === null ? null : parseGroupNumber(baseName(l));
        return group === null ? [] : [group];
      });
      duplicates.push({
        groups: [...new Set(groups)].sort((a, b) => a - b),
        devices: [device.address],
        detail:
          `bus/pci/devices has two entries for ${device.address}: "${first.name}" and "${entry.name}"`,
      });
      continue;
    }
    names.set(device.address, entry);
    links.set(device.address, link);
    devices.push(device);
  }
  const groupInconsistencies = settleGroups(devices, {
    links,
    listings: readGroupListings(reader, root),
    ancestors: (address) => ancestorsOf(reader, names.get(address)?.path),
  });
  devices.sort((a, b) => comparePciAddress(a.address, b.address));
  linkVirtualFunctions(devices);
  for (const device of devices) {
    // The kernel makes `sriov_*` for SR-IOV physical functions only: never for a VF nor a bridge
    // (class 06), which skip the lookup. Discovery only: the start guard has no use for them.
    if (device.physfn !== null || device.classCode.startsWith("06")) continue;
    Object.assign(device, readSriov(reader, names.get(device.address)!.path));
  }
  fillSlots(reader, root, devices);
  return { devices, groupInconsistencies: [...duplicates, ...groupInconsistencies] };
}

/**
 * The PCI ancestors of the device entry at `path`, nearest first, from the link the kernel
 * makes it (`../../../devices/pci0000:00/0000:00:03.1/0000:0b:00.0`); `[]` for a directory.
 */
function ancestorsOf(reader: SysfsReader, path: string | undefined): PciAddress[] {
  const link = path === undefined ? null : reader.readLink(path);
  if (link === null) return [];
  const parts = link.split("/").slice(0, -1).reverse();
  return parts.flatMap((part) => {
    const address = /^[0-9a-f]{4,8}:/i.test(part) ? canonicalPciAddress(part) : null;
    return address === null ? [] : [address];
  });
}

/**
 * Each physical function's VFs, from the VFs' `physfn` links, which discovery reads for every
 * device anyway: the kernel creates a VF's `physfn` and its PF's `virtfnN` together, so probing
 * `virtfn0`, `virtfn1`, … as well would cost one more system call per function and per VF and
 * say nothing new. `devices` is sorted, so each list is too.
 */
function linkVirtualFunctions(devices: PciDevice[]): void {
  let byAddress: Map<PciAddress, PciDevice> | undefined;
  for (const device of devices) {
    if (device.physfn === null) continue;
    byAddress ??= new Map(devices.map((d) => [d.address, d]));
    const pf = byAddress.get(device.physfn);
    // A VF never has VFs of its own: a damaged tree's link to one is not followed.
    if (pf !== undefined && pf.physfn === null) pf.virtfns.push(device.address);
  }
}

function listSysfsDevices(reader: SysfsReader, root: string): string[] {
  const names = reader.listDir(`${root}/bus/pci/devices`);
  if (names === null) throw new SysfsRootError(root);
  return names;
}

/** What one device directory holds, read with no parsing beyond the configuration space. */
interface RawSysfsDevice {
  /** The directory's name (a PCI address unless the tree is damaged). */
  name: string;
  /** The directory, for the rare reads parsing needs (see {@link parseRawDevice}). */
  path: string;
  uevent: string | null;
  config: ConfigSpaceHeaderFacts | null;
  groupLink: string | null;
  numaNode: string | null;
  physfnLink: string | null;
  modules: string | null;
}

/** The entries of one device directory that every device needs. */
function readRawDevice(reader: SysfsReader, root: string, name: string): RawSysfsDevice {
  const path = `${root}/bus/pci/devices/${name}`;
  const live = root === "/sys";
  // `uevent` carries driver, class, IDs and subsystem IDs in one read (the kernel writes them
  // from the same struct as the single-value attributes).
  const uevent = reader.readText(`${path}/uevent`);
  // FLR and the serial number are in the configuration space's capabilities. Unprivileged
  // reads of a real device stop after the 64-byte header.
  const config = readConfig(reader, `${path}/config`, live);
  const groupLink = reader.readLink(`${path}/iommu_group`);
  const numaNode = reader.readText(`${path}/numa_node`);
  const physfnLink = reader.readLink(`${path}/physfn`);
  // Not a kernel attribute: captured trees keep lspci's module list here (see host_tree.ts), so
  // the live /sys is not asked for it.
  const modules = live ? null : reader.readText(`${path}/modules`);
  return { name, path, uevent, config, groupLink, numaNode, physfnLink, modules };
}

/**
 * One function's facts, or `null` when its directory's name is not a PCI address. Trees that
 * lack an entry the kernel always writes (`uevent`) are read from the single-value files instead,
 * and so are the revision (when the header says 00) and `boot_vga` (display devices only).
 */
function parseRawDevice(reader: SysfsReader, raw: RawSysfsDevice): PciDevice | null {
  const address = canonicalPciAddress(raw.name);
  if (address === null) return null;
  const attr = (file: string) => readAttribute(reader, `${raw.path}/${file}`);
  const uevent = parseUevent(raw.uevent);
  const classCode = hexId(uevent?.PCI_CLASS ?? attr("class"), 6) ?? "000000";
  const [ueventVendor, ueventDevice] = (uevent?.PCI_ID ?? "").split(":");
  // The kernel writes PCI_SUBSYS_ID whenever it writes PCI_ID; only a tree without them needs
  // the subsystem files.
  const subsystem = uevent?.PCI_SUBSYS_ID;
  const [ueventSubVendor, ueventSubDevice] = (subsystem ?? "").split(":");
  const fromFiles = subsystem === undefined && uevent?.PCI_ID === undefined;
  const vendorId = hexId(ueventVendor || attr("vendor"), 4) ?? "ffff";
  const deviceId = hexId(ueventDevice || attr("device"), 4) ?? "ffff";
  const subsystemVendorId = hexId(
    ueventSubVendor || (fromFiles ? attr("subsystem_vendor") : null),
    4,
  );
  const subsystemDeviceId = hexId(
    ueventSubDevice || (fromFiles ? attr("subsystem_device") : null),
    4,
  );
  const driver = uevent !== null
    ? uevent.DRIVER ?? null
    : baseNameOrNull(reader.readLink(`${raw.path}/driver`));
  const config = raw.config;
  // Header types 1 and 2 (bit 7 is the multi-function flag) are bridges even when the class
  // code says otherwise.
  const headerType = config?.headerType ?? 0;
  // The revision byte of the header is what the kernel's `revision` attribute reports; only a
  // zero there needs the file, to tell revision 00 from a captured tree that recorded none.
  const configRevision = config?.revision ?? 0;
  const revision = configRevision !== 0
    ? configRevision.toString(16).padStart(2, "0")
    : hexId(attr("revision"), 2);
  const numa = raw.numaNode?.trim() ?? "";
  const numaNumber = numa === "" ? NaN : Number(numa);
  // The kernel creates boot_vga only for display-class devices: skip the lookup elsewhere.
  const bootVga = classCode.startsWith("03") ? attr("boot_vga") : null;
  const modules = raw.modules?.trim() ?? null;
  return {
    address,
    vendorId,
    deviceId,
    subsystemVendorId,
    subsystemDeviceId,
    classCode,
    revision,
    vendorName: null,
    deviceName: null,
    className: null,
    driver,
    modules: modules === null ? [] : modules.split(",").filter((m) => m !== ""),
    // Settled against the group listings once every device is read (see finishDevices).
    iommuGroup: null,
    numaNode: Number.isInteger(numaNumber) && numaNumber >= 0 ? numaNumber : null,
    physicalSlot: null,
    isBridge: isBridgeClass(classCode) || isBridgeHeader(headerType),
    physfn: raw.physfnLink === null ? null : canonicalPciAddress(baseName(raw.physfnLink)),
    // Filled from the VFs' own `physfn` links (see linkVirtualFunctions).
    virtfns: [],
    bootVga: bootVga === null ? null : bootVga === "1",
    flr: config?.flr ?? null,
    serial: config?.serial ?? null,
  };
}

/**
 * A physical function's `sriov_totalvfs` and `sriov_numvfs`, each only where its file holds a
 * count (the capability's fields are 16 bits): nothing for a device without SR-IOV.
 */
function readSriov(
  reader: SysfsReader,
  path: string,
): Pick<PciDevice, "sriovTotalVfs" | "sriovNumVfs"> {
  const total = vfCount(reader.readText(`${path}/sriov_totalvfs`));
  if (total === null) return {};
  const enabled = vfCount(reader.readText(`${path}/sriov_numvfs`));
  return enabled === null
    ? { sriovTotalVfs: total }
    : { sriovTotalVfs: total, sriovNumVfs: enabled };
}

function vfCount(text: string | null): number | null {
  const trimmed = text?.trim() ?? "";
  return /^[0-9]{1,5}$/.test(trimmed) && Number(trimmed) <= 0xffff ? Number(trimmed) : null;
}

/**
 * Physical slot names by `DDDD:BB:SS` from `bus/pci/slots/NAME/address`, as lspci finds them
 * (the address names a slot, so every function of the card gets the slot's name).
 */
function readSlots(reader: SysfsReader, root: string): Map<string, string> {
  const slots = new Map<string, string>();
  const names = reader.listDir(`${root}/bus/pci/slots`);
  if (names === null || names.length === 0) return slots;
  for (const name of names) {
    const text = readAttribute(reader, `${root}/bus/pci/slots/${name}/address`);
    const key = text === null ? null : canonicalPciSlot(text);
    if (key !== null) slots.set(key, name);
  }
  return slots;
}

/** Fills physical slot names from sysfs (`lspci -v` would print them, `-nnk` does not). */
function fillSlots(reader: SysfsReader, root: string, devices: PciDevice[]): void {
  const slots = readSlots(reader, root);
  if (slots.size === 0) return;
  for (const device of devices) {
    device.physicalSlot = slots.get(device.address.slice(0, -2)) ?? null;
  }
}

/**
 * The configuration-space facts of a device, or `null` without a `config` file. On the live
 * sysfs only the visited registers are read (see {@link readConfigSpace}); a captured tree's file
 * is read whole, in one call.
 */
function readConfig(
  reader: SysfsReader,
  path: string,
  live: boolean,
): ConfigSpaceHeaderFacts | null {
  if (live) {
    using file = reader.openFile(path);
    return file === null ? null : readConfigSpace((offset, length) => file.readAt(offset, length));
  }
  const bytes = reader.readBytes(path, 4096);
  return bytes === null ? null : readConfigSpace(bufferConfigReader(bytes));
}

function baseNameOrNull(link: string | null): string | null {
  return link === null ? null : baseName(link);
}

/** The lines of a PCI device's `uevent` that discovery reads. */
interface UeventFields {
  PCI_CLASS?: string;
  PCI_ID?: string;
  PCI_SUBSYS_ID?: string;
  DRIVER?: string;
}

const UEVENT_KEYS = ["PCI_CLASS", "PCI_ID", "PCI_SUBSYS_ID", "DRIVER"] as const;

/** The known `KEY=value` lines of a sysfs `uevent` file, or `null` when there is none. */
function parseUevent(text: string | null): UeventFields | null {
  if (text === null) return null;
  const fields: UeventFields = {};
  // Scanned in place rather than split into lines and pairs: this runs once per device.
  for (let start = 0; start < text.length;) {
    let end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    for (const key of UEVENT_KEYS) {
      if (text.startsWith(key, start) && text.charCodeAt(start + key.length) === 61 /* = */) {
        fields[key] = text.slice(start + key.length + 1, end).trim();
        break;
      }
    }
    start = end + 1;
  }
  return fields;
}

/** Fills what sysfs lacks from lspci's record; sysfs values are never overwritten. */
function mergeLspci(device: PciDevice, record: LspciRecord, vendorNames: VendorNames): void {
  const split = splitVendorName(record.vendorDeviceName, vendorNames(device.vendorId));
  device.vendorName = split.vendorName;
  device.deviceName = split.deviceName;
  device.className = record.className;
  if (record.modules.length > 0) device.modules = record.modules;
  // Slot, FLR and serial come from sysfs and config space; lspci's (with -v) only fill gaps.
  device.physicalSlot ??= record.physicalSlot;
  device.numaNode ??= record.numaNode;
}

const HOST_USE_REASONS: readonly HostUseReason[] = [
  "mounted-filesystem",
  "default-route",
  "console-vga",
];

/** A captured tree's `host_use.json` (written by `snapshot`), or `null` (unknown) when absent. */
function treeHostUse(reader: SysfsReader, root: string): HostUse[] | null {
  const text = reader.readText(`${root}/host_use.json`);
  if (text === null) return null;
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new SyntaxError(`Cannot parse "${root}/host_use.json": ${(error as Error).message}`);
  }
  if (!Array.isArray(data)) {
    throw new SyntaxError(`Cannot parse "${root}/host_use.json": not an array`);
  }
  const uses: HostUse[] = [];
  for (const item of data as Record<string, unknown>[]) {
    const address = typeof item.address === "string" ? canonicalPciAddress(item.address) : null;
    const reason = item.reason as HostUseReason;
    if (address === null || !HOST_USE_REASONS.includes(reason)) {
      throw new SyntaxError(
        `Cannot parse "${root}/host_use.json": bad entry ${JSON.stringify(item)}`,
      );
    }
    uses.push({ address, reason, detail: typeof item.detail === "string" ? item.detail : "" });
  }
  return sortHostUse(uses);
}

function sortHostUse(uses: HostUse[]): HostUse[] {
  const seen = new Set<string>();
  return uses
    .filter((u) => {
      const key = `${u.address} ${u.reason} ${u.detail}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    })
    .sort((a, b) =>
      comparePciAddress(a.address, b.address) || a.reason.localeCompare(b.reason) ||
      a.detail.localeCompare(b.detail)
    );
}

/** The PCI function a sysfs device path hangs under (the last PCI address component). */
export function pciAncestor(path: string): PciAddress | null {
  const parts = path.split("/");
  for (let i = parts.length - 1; i >= 0; i--) {
    const address = canonicalPciAddress(parts[i] ?? "");
    if (address !== null && /^[0-9a-f]{4,}:/i.test(parts[i] ?? "")) return address;
  }
  return null;
}

/** Block device names behind `name`, following device-mapper/md `slaves` down to disks. */
function blockPciDevices(
  reader: SysfsReader,
  sysRoot: string,
  name: string,
  depth = 0,
): PciAddress[] {
  if (depth > 8) return [];
  const link = reader.readLink(`${sysRoot}/class/block/${name}`);
  if (link === null) return [];
  const direct = pciAncestor(link);
  if (direct !== null) return [direct];
  const slaves = reader.listDir(`${sysRoot}/class/block/${name}/slaves`) ?? [];
  return slaves.flatMap((slave) => blockPciDevices(reader, sysRoot, slave, depth + 1));
}

/** The block device name for a mount source (`/dev/nvme0n1p2`, `/dev/mapper/vg-root`). */
function blockName(reader: SysfsReader, source: string): string | null {
  if (!source.startsWith("/dev/")) return null;
  const link = reader.readLink(source);
  // /dev/mapper/* and /dev/disk/by-* are links to ../dm-0 and the like.
  return baseName(link ?? source);
}

/**
 * What the running host uses: controllers of mounted filesystems, the NIC carrying the default
 * route, and the boot VGA when a framebuffer console is bound.
 */
function liveHostUse(
  reader: SysfsReader,
  options: { sysRoot: string; procRoot: string; devices: PciDevice[] },
): HostUse[] {
  const { sysRoot, procRoot, devices } = options;
  const uses: HostUse[] = [];
  const known = new Set(devices.map((d) => d.address));
  const mounts = reader.readText(`${procRoot}/self/mounts`) ?? "";
  for (const line of mounts.split("\n")) {
    const [source, target] = line.split(" ");
    if (source === undefined || target === undefined) continue;
    const name = blockName(reader, source);
    if (name === null) continue;
    for (const address of blockPciDevices(reader, sysRoot, name)) {
      if (known.has(address)) {
        uses.push({
          address,
          reason: "mounted-filesystem",
          detail: `${target.replace(/\\040/g, " ")} on ${name}`,
        });
      }
    }
  }
  const routes = reader.readText(`${procRoot}/net/route`) ?? "";
  for (const line of routes.split("\n").slice(1)) {
    const [iface, destination, , , , , , mask] = line.trim().split(/\s+/);
    if (iface === undefined || destination !== "00000000" || mask !== "00000000") continue;
    const link = reader.readLink(`${sysRoot}/class/net/${iface}`);
    const address = link === null ? null : pciAncestor(link);
    if (address !== null && known.has(address)) {
      uses.push({ address, reason: "default-route", detail: `default route via ${iface}` });
    }
  }
  const consoles = reader.listDir(`${sysRoot}/class/vtconsole`) ?? [];
  const fbcon = consoles.some((c) =>
    readAttribute(reader, `${sysRoot}/class/vtconsole/${c}/bind`) === "1" &&
    /frame buffer/i.test(readAttribute(reader, `${sysRoot}/class/vtconsole/${c}/name`) ?? "")
  );
  const fb = (reader.readText(`${procRoot}/fb`) ?? "").trim() !== "";
  if (fbcon || fb) {
    for (const device of devices) {
      if (device.bootVga === true) {
        uses.push({
          address: device.address,
          reason: "console-vga",
          detail: `boot_vga=1 with ${fbcon ? "fbcon" : "a framebuffer"}`,
        });
      }
    }
  }
  return sortHostUse(uses);
}
