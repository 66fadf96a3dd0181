/**
 * One PCI function read from sysfs at a known address, and what the host uses among some
 * functions: the part of discovery (`discover.ts`) that needs neither lspci nor the IOMMU
 * group listings. Discovery reads every device with these same functions; the start guard, which
 * reads only the functions a VM names at every VM start, loads this module alone.
 *
 * @module
 */

import type { HostUse, HostUseReason, PciAddress, PciDevice } from "./types.ts";
import {
  canonicalPciAddress,
  canonicalPciSlot,
  comparePciAddress,
  libvirtNumber,
} from "../pci/address.ts";
import {
  baseName,
  MAX_MOUNTINFO_BYTES,
  readAttribute,
  readWholeText,
  type SysfsReader,
} from "./sysfs.ts";
import { isFileName, join } from "../state/paths.ts";
import { oneLine } from "../render/terminal.ts";
import { type DeviceNode, openBy } from "./open_files.ts";
import type { UsbSource } from "../domain/usb_source.ts";
import {
  bufferConfigReader,
  type ConfigSpaceHeaderFacts,
  readConfigSpace,
} from "../pci/config_space.ts";
import { isBridgeClass, isBridgeHeader } from "../pci/class.ts";

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
  options: DeviceReadOptions = {},
): PciDevice | null {
  const raw = readRawDevice(reader, root.replace(/(.)\/+$/, "$1"), address, options);
  // A device always has a uevent in the live sysfs; only a tree without one needs the listing.
  if (raw.uevent === null && reader.listDir(raw.path) === null) return null;
  return parseRawDevice(reader, raw);
}

/**
 * The SR-IOV virtual functions of the PF at `address` (its `virtfnN` links), sorted; none for a
 * device that has none. For a caller that read the PF alone ({@link readDeviceAt}): discovery
 * fills {@link PciDevice.virtfns} from the VFs' own links.
 */
export function readVirtualFunctions(
  reader: SysfsReader,
  root: string,
  address: PciAddress,
): PciAddress[] {
  const dir = `${root.replace(/(.)\/+$/, "$1")}/bus/pci/devices/${address}`;
  // Most devices have no SR-IOV capability, and a reader that lists directories knows without a
  // system call that the file is missing.
  const enabled = readAttribute(reader, `${dir}/sriov_numvfs`);
  if (enabled === null || enabled === "0") return [];
  const vfs = (reader.listDir(dir) ?? []).flatMap((entry) => {
    const link = /^virtfn[0-9]+$/.test(entry) ? reader.readLink(`${dir}/${entry}`) : null;
    const vf = link === null ? null : canonicalPciAddress(baseName(link));
    return vf === null ? [] : [vf];
  });
  return vfs.sort(comparePciAddress);
}

/**
 * Physical slot names by `DDDD:BB:SS` from `bus/pci/slots/NAME/address`, as lspci finds them
 * (the address names a slot, so every function of the card gets the slot's name); empty where
 * the firmware names no slots. Discovery fills every device's slot from it; the start guard reads
 * it only for a record that holds a slot.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { buildHostTree } from "../testing/host_tree.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const dir = Deno.makeTempDirSync();
 * buildHostTree({ devices: [{ bdf: "0000:05:00.0", group: 3, class: "0x030000",
 *   vendor: "0x1002", device: "0x67ff", subsystem_vendor: null, subsystem_device: null,
 *   driver: "amdgpu", revision: null, slot: "PCIE2" }] }, dir);
 * assertEquals(readPhysicalSlots(denoFsReader(), dir), new Map([["0000:05:00", "PCIE2"]]));
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function readPhysicalSlots(reader: SysfsReader, root: string): Map<string, string> {
  const slots = new Map<string, string>();
  const dir = `${root.replace(/(.)\/+$/, "$1")}/bus/pci/slots`;
  const names = reader.listDir(dir);
  if (names === null || names.length === 0) return slots;
  for (const name of names) {
    const text = readAttribute(reader, `${dir}/${name}/address`);
    const key = text === null ? null : canonicalPciSlot(text);
    if (key !== null) slots.set(key, name);
  }
  return slots;
}

/**
 * What the host uses among `devices`: on the live host (`live`), the controllers of its storage
 * (mounted filesystems, swap partitions, block devices under device-mapper, md or bcache, imported
 * ZFS pools' disks), the default route's NIC and the console's boot VGA, read from `/proc`, sysfs
 * and udev's database (`udevDataDir`, only for ZFS);
 * for a captured tree, its `host_use.json` (`null` when it has none: unknown). None among no
 * devices, whatever the tree holds (a VM without a PCI device to check). The same rules as
 * {@link discoverHost}, for callers that read only some devices ({@link readDeviceAt}).
 */
export function readHostUse(
  reader: SysfsReader,
  options: {
    root: string;
    live: boolean;
    devices: PciDevice[];
    procRoot?: string;
    udevDataDir?: string;
  },
): HostUse[] | null {
  const root = options.root.replace(/(.)\/+$/, "$1");
  // The host's use of nothing is nothing (a VM without passthrough, at every start), in a
  // captured tree too, however damaged: its host_use.json says only what uses which devices.
  if (options.devices.length === 0) return [];
  const uses = options.live
    ? liveHostUse(reader, {
      sysRoot: root,
      procRoot: options.procRoot ?? "/proc",
      udevDataDir: options.udevDataDir ?? "/run/udev/data",
      devices: options.devices,
    })
    : treeHostUse(reader, root);
  // A detail is quoted inside one-line messages (a refusal, a table's notes): a mount point, or
  // a captured tree's host_use.json, may hold a newline, which started a line of its own there.
  return uses?.map((u) => ({ ...u, detail: oneLine(u.detail, false) })) ?? null;
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

/** What one device directory holds, read with no parsing beyond the configuration space. */
export interface RawSysfsDevice {
  /** The directory's name (a PCI address unless the tree is damaged). */
  name: string;
  /** The directory, for the rare reads parsing needs (see {@link parseRawDevice}). */
  path: string;
  uevent: string | null;
  config: ConfigSpaceHeaderFacts | null;
  /** Whether the configuration space was asked for ({@link DeviceReadOptions.configSpace}). */
  configRead: boolean;
  groupLink: string | null;
  numaNode: string | null;
  physfnLink: string | null;
  modules: string | null;
  /** The link that is the entry itself (`../../../devices/pci0000:00/...`); `null` for a directory. */
  entryLink: string | null;
}

/** Which of a device's entries beyond its identity to read (all by default). */
export interface DeviceReadOptions {
  /**
   * The IOMMU group link, the NUMA node and (in a captured tree) the kernel modules; without them
   * those are unknown. The start guard, which checks identities, reads none of them.
   */
  details?: boolean;
  /** The `physfn` link of a VF; without it `physfn` is `null`. */
  physfn?: boolean;
  /**
   * The configuration space (FLR, serial number, header type, revision); without it those are
   * unknown, and a bridge is told by its class alone. The start guard reads it only where a
   * record holds a serial number to compare: to read it the kernel resumes the device's upstream
   * bridge, and the device itself from D3cold (`pci_config_pm_runtime_get`).
   */
  configSpace?: boolean;
}

/** The entries of one device directory that every device needs. */
export function readRawDevice(
  reader: SysfsReader,
  root: string,
  name: string,
  options: DeviceReadOptions = {},
): RawSysfsDevice {
  const { details = true, physfn = true, configSpace = true } = options;
  const path = `${root}/bus/pci/devices/${name}`;
  const live = root === "/sys";
  // `uevent` carries driver, class, IDs and subsystem IDs in one read (the kernel writes them
  // from the same struct as the single-value attributes).
  const uevent = reader.readText(`${path}/uevent`);
  // FLR and the serial number are in the configuration space's capabilities. Unprivileged
  // reads of a real device stop after the 64-byte header.
  const config = configSpace ? readConfig(reader, `${path}/config`, live) : null;
  const groupLink = details ? reader.readLink(`${path}/iommu_group`) : null;
  const numaNode = details ? reader.readText(`${path}/numa_node`) : null;
  const physfnLink = physfn ? reader.readLink(`${path}/physfn`) : null;
  // Not a kernel attribute: captured trees keep lspci's module list here (see host_tree.ts), so
  // the live /sys is not asked for it.
  const modules = live || !details ? null : reader.readText(`${path}/modules`);
  const entryLink = reader.readLink(path);
  return {
    name,
    path,
    uevent,
    config,
    configRead: configSpace,
    groupLink,
    numaNode,
    physfnLink,
    modules,
    entryLink,
  };
}

/**
 * One function's facts, or `null` when its directory's name is not a PCI address. Trees that
 * lack an entry the kernel always writes (`uevent`) are read from the single-value files instead,
 * and so are the revision (when the header says 00) and `boot_vga` (display devices only).
 */
export function parseRawDevice(reader: SysfsReader, raw: RawSysfsDevice): PciDevice | null {
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
    : raw.configRead
    ? hexId(attr("revision"), 2)
    : null;
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
    ...rootBusOf(raw.entryLink),
  };
}

/**
 * `rootBus` from an entry's link: whether what holds the function is a PCI root
 * (`pci0000:20`) rather than a bridge (`0000:00:03.1`); nothing for no link or another shape.
 */
function rootBusOf(link: string | null): Pick<PciDevice, "rootBus"> {
  const parent = link?.split("/").at(-2) ?? "";
  if (/^pci[0-9a-f]{4,8}:[0-9a-f]{2}$/i.test(parent)) return { rootBus: true };
  return canonicalPciAddress(parent) === null ? {} : { rootBus: false };
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

/**
 * What `snapshot` records; `vm-device` and `gpu-in-use` are the start guard's alone, read at
 * each start.
 */
const HOST_USE_REASONS: readonly HostUseReason[] = [
  "mounted-filesystem",
  "swap",
  "block-holder",
  "zfs-pool",
  "default-route",
  "network-route",
  "console-vga",
];

/**
 * At most this much of a captured tree's `host_use.json` is read: a host's every mount is an
 * entry (a Kubernetes node's bind mounts number hundreds), past the 64 KiB of an attribute.
 */
const HOST_USE_LIMIT = 16 << 20;

/** A captured tree's `host_use.json` (written by `snapshot`), or `null` (unknown) when absent. */
function treeHostUse(reader: SysfsReader, root: string): HostUse[] | null {
  const path = `${root}/host_use.json`;
  // The common small file in one read of an attribute's size; the reader's buffer grows to the
  // limit only for a file that fills that.
  let bytes = reader.readBytes(path, 65536);
  if (bytes?.length === 65536) bytes = reader.readBytes(path, HOST_USE_LIMIT + 1);
  if (bytes === null) return null;
  if (bytes.length > HOST_USE_LIMIT) {
    throw new SyntaxError(`Cannot parse "${root}/host_use.json": it is larger than 16 MiB`);
  }
  const text = new TextDecoder().decode(bytes);
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
  for (const item of data as unknown[]) {
    // `null` or a number as an entry is a bad one too, not a TypeError.
    const entry: Record<string, unknown> = typeof item === "object" && item !== null
      ? item as Record<string, unknown>
      : {};
    const address = typeof entry.address === "string" ? canonicalPciAddress(entry.address) : null;
    const reason = entry.reason as HostUseReason;
    if (address === null || !HOST_USE_REASONS.includes(reason)) {
      throw new SyntaxError(
        `Cannot parse "${root}/host_use.json": bad entry ${JSON.stringify(item)}`,
      );
    }
    uses.push({ address, reason, detail: typeof entry.detail === "string" ? entry.detail : "" });
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

/**
 * The PCI functions a guest given any of them takes a sysfs device path's device from: the one it
 * hangs under ({@link pciAncestor}), and each function above that hosts a PCI domain of its own
 * (Intel VMD: `0000:00:0e.0/pci10000:e0/10000:e0:06.0/10000:e1:00.0`), an endpoint that takes
 * every disk behind it to the guest. The bridges between are never passed.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const disk = "../../devices/pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:06.0/10000:e1:00.0/nvme/nvme0/nvme0n1";
 * assertEquals(pciFunctionsHolding(disk), ["10000:e1:00.0", "0000:00:0e.0"]);
 * ```
 */
export function pciFunctionsHolding(path: string): PciAddress[] {
  const address = pciAncestor(path);
  if (address === null) return [];
  const parts = path.split("/");
  const hosts = parts.flatMap((part, i) =>
    /^pci[0-9a-f]{4,8}:[0-9a-f]{2}$/i.test(parts[i + 1] ?? "") &&
      /^[0-9a-f]{4,}:/i.test(part)
      ? [canonicalPciAddress(part)]
      : []
  ).filter((a): a is PciAddress => a !== null && a !== address);
  return [address, ...hosts.reverse()];
}

/**
 * The PCI functions the link at `path` leads under ({@link pciFunctionsHolding}; `[]` when none
 * does), or `null` when `path` is no link.
 */
function linkedPciFunction(reader: SysfsReader, path: string): PciAddress[] | null {
  const link = reader.readLink(path);
  return link === null ? null : pciFunctionsHolding(link);
}

/**
 * The host's input devices (keyboards, mice, game controllers: `class/input/inputN`) by the PCI
 * functions a guest given any of them takes them from ({@link pciFunctionsHolding}: a USB
 * controller, an Intel VMD controller above one), each named once by its `name` file, in the
 * kernel's order. A PS/2 keyboard, a power button or `uinput` hangs under none.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const dir = Deno.makeTempDirSync();
 * const device = `${dir}/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/input/input5`;
 * Deno.mkdirSync(device, { recursive: true });
 * Deno.writeTextFileSync(`${device}/name`, "Logitech USB Receiver\n");
 * Deno.mkdirSync(`${dir}/class/input`, { recursive: true });
 * Deno.symlinkSync("../../devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/input/input5",
 *   `${dir}/class/input/input5`);
 * assertEquals(hostInputDevices(denoFsReader(), dir), new Map([
 *   ["0000:00:14.0", ["Logitech USB Receiver"]],
 * ]));
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function hostInputDevices(reader: SysfsReader, sysRoot: string): Map<PciAddress, string[]> {
  const byFunction = new Map<PciAddress, string[]>();
  for (const { entry, link } of inputLinks(reader, sysRoot)) {
    const functions = pciFunctionsHolding(link);
    if (functions.length === 0) continue;
    const device = inputDevicePath(link);
    const name = (device === null ? null : readInputName(reader, sysRoot, device))?.trim() || entry;
    for (const address of functions) {
      const names = byFunction.get(address) ?? [];
      if (!names.includes(name)) names.push(name);
      byFunction.set(address, names);
    }
  }
  return byFunction;
}

/**
 * The links of `class/input` (`input5` to `../../devices/...`), in the kernel's order; none
 * where `class` or `class/input` is itself a link (a captured tree's, to another tree's).
 * `event3` and `mouse0` are nodes of an `inputN`: each device is listed once, by it.
 */
export function inputLinks(
  reader: SysfsReader,
  sysRoot: string,
): { entry: string; link: string }[] {
  if (["class", "class/input"].some((dir) => reader.readLink(`${sysRoot}/${dir}`) !== null)) {
    return [];
  }
  return (reader.listDir(`${sysRoot}/class/input`) ?? [])
    .filter((e) => /^input\d+$/.test(e))
    .sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)))
    .flatMap((entry) => {
      const link = reader.readLink(`${sysRoot}/class/input/${entry}`);
      return link === null ? [] : [{ entry, link }];
    });
}

/**
 * The directory, from the sysfs root, of the input device a `class/input/inputN` link leads to,
 * when the link is the kernel's `../../devices/...` with no `.` or `..` in it and each part can
 * be a file's name; else `null`.
 */
export function inputDevicePath(link: string): string | null {
  if (!link.startsWith("../../devices/")) return null;
  const device = link.slice("../../".length);
  // A part over 255 characters names nothing in the tree, and stopped its snapshot.
  return device.split("/").every((part) => /^[\w.:+-]{1,255}$/.test(part) && !/^\.\.?$/.test(part))
    ? device
    : null;
}

/**
 * The `name` file of the input device at `device` ({@link inputDevicePath}), read only where it
 * lies inside the tree: neither a directory on the way nor the file is a link. A
 * captured tree is anyone's: a link in it (`devices/pci0000:00` to `/elsewhere`) had a file
 * outside it read, printed and copied into its snapshot. `null` when it is not read.
 */
export function readInputName(reader: SysfsReader, sysRoot: string, device: string): string | null {
  const parts = device.split("/");
  const steps = [...parts.map((_, i) => parts.slice(0, i + 1).join("/")), `${device}/name`];
  if (steps.some((step) => reader.readLink(`${sysRoot}/${step}`) !== null)) return null;
  return reader.readText(`${sysRoot}/${device}/name`);
}

/**
 * The PCI functions under `class/KIND/NAME`: its own, or, for a virtual device, those of the
 * devices it stands on, followed down: a device-mapper or md block device's `slaves`, a
 * multipath NVMe disk's controllers, and a bridge's, bond's, VLAN's or macvlan's `lower_*`
 * interfaces (a bridge's ports, a bond's slaves, a VLAN's parent), or an Open vSwitch bridge's
 * (see {@link openVswitchPorts}).
 */
export function pciDevicesUnder(
  reader: SysfsReader,
  sysRoot: string,
  kind: "block" | "net",
  name: string,
  depth = 0,
  // Each device is followed once: stacks share devices (two bridges over one bond), and a tree
  // may link in circles.
  seen: Set<string> = new Set(),
): PciAddress[] {
  if (depth > 8 || seen.has(name)) return [];
  seen.add(name);
  const path = `${sysRoot}/class/${kind}/${name}`;
  const link = reader.readLink(path);
  if (link === null) return [];
  const direct = pciFunctionsHolding(link);
  if (direct.length > 0) return direct;
  const subsystem = /\/nvme-subsystem\/(nvme-subsys\d+)\//.exec(link)?.[1];
  if (kind === "block" && subsystem !== undefined) {
    return nvmeSubsystemControllers(reader, sysRoot, subsystem);
  }
  const entries = reader.listDir(kind === "block" ? `${path}/slaves` : path) ?? [];
  const under = kind === "block"
    ? entries
    : entries.flatMap((e) => e.startsWith("lower_") ? [e.slice(6)] : []);
  if (kind === "net" && under.length === 0) under.push(...openVswitchPorts(reader, path, entries));
  return [
    ...new Set(
      under.flatMap((next) => pciDevicesUnder(reader, sysRoot, kind, next, depth + 1, seen)),
    ),
  ];
}

/** The device Open vSwitch's kernel datapath links every port it switches under. */
const OVS_DATAPATH = "ovs-system";

/**
 * The ports of the host's Open vSwitch datapath when the virtual interface at `path` (listed as
 * `entries`) may be one of its bridges or internal ports (`br0`, a management port), else none.
 * The kernel links each port (`eth0`, a bond's NICs, a tunnel's `vxlan_sys_4789`) only under the
 * datapath's own device, `ovs-system` (its `lower_*` links), never under the bridge it is in, and
 * shows nothing in sysfs that tells an internal port from a dummy interface: so, while a datapath
 * exists, any Ethernet interface with nothing under it that is no port of the datapath, tap,
 * bridge, bond, veth or device of a named type (`DEVTYPE`: vxlan, geneve, wlan, ...) counts as
 * standing on every port of the datapath. Too many for a dummy interface on such a host; none
 * missed for a bridge that carries the host's address or a guest's interface. Open vSwitch's
 * userspace datapath (`ovs-netdev`, DPDK) makes its bridges taps and links no port: not seen.
 */
function openVswitchPorts(reader: SysfsReader, path: string, entries: string[]): string[] {
  const datapath = `${path.slice(0, path.lastIndexOf("/"))}/${OVS_DATAPATH}`;
  const others = ["tun_flags", "bridge", "bonding", `upper_${OVS_DATAPATH}`];
  if (others.some((e) => entries.includes(e))) return [];
  const ports = (reader.listDir(datapath) ?? []).flatMap((e) =>
    e.startsWith("lower_") ? [e.slice(6)] : []
  );
  if (ports.length === 0) return [];
  const attribute = (file: string) => readAttribute(reader, `${path}/${file}`);
  // ARPHRD_ETHER, and its own link (a veth's `iflink` is its peer's index).
  if (attribute("type") !== "1" || attribute("iflink") !== attribute("ifindex")) return [];
  if (/^DEVTYPE=/m.test(attribute("uevent") ?? "")) return [];
  return ports;
}

/**
 * The NICs under the network interface `name` (see {@link pciDevicesUnder}), each with its
 * physical function when it is an SR-IOV VF: passing the PF to a guest unbinds its host driver,
 * which destroys the VF, and the macvtap or bridge on it with it. None for a name no interface
 * can have (it comes from a domain's XML: `/`, `.` or `..` would leave `class/net`); the kernel
 * allows any other, `.uplink` too.
 */
export function nicsUnder(reader: SysfsReader, sysRoot: string, name: string): PciAddress[] {
  if (!isFileName(name)) return [];
  const nics = pciDevicesUnder(reader, sysRoot, "net", name);
  const pfs = nics.flatMap((address) => {
    const link = reader.readLink(`${sysRoot}/bus/pci/devices/${address}/physfn`);
    const pf = link === null ? null : canonicalPciAddress(baseName(link));
    return pf === null ? [] : [pf];
  });
  return [...new Set([...nics, ...pfs])];
}

/**
 * The PCI functions of an NVMe subsystem's controllers. With native NVMe multipath (a drive whose
 * subsystem can have several controllers, such as a dual-port one) the kernel hangs the disk
 * (`nvme0n1`) under `devices/virtual/nvme-subsystem/nvme-subsysN`, not under a controller, and
 * links each controller (`nvme0`, `nvme1`) there.
 */
function nvmeSubsystemControllers(
  reader: SysfsReader,
  sysRoot: string,
  subsystem: string,
): PciAddress[] {
  const dir = `${sysRoot}/devices/virtual/nvme-subsystem/${subsystem}`;
  return (reader.listDir(dir) ?? []).filter((e) => /^nvme\d+$/.test(e)).sort().flatMap((e) => {
    return linkedPciFunction(reader, `${dir}/${e}`) ?? [];
  });
}

/** How many links a `/dev` path is followed through (`/dev/vg/lv` to `/dev/dm-3`). */
const MAX_DEV_LINKS = 8;

/**
 * The PCI functions under the block device at `path` (`/dev/nvme1n1`, `/dev/disk/by-id/...`,
 * `/dev/mapper/vg-lv`), read with `/dev` at `devRoot`: a link there names the device, and a
 * device-mapper or md device is followed down to the disks it stands on. Empty for a path
 * outside `/dev`, or a device on no PCI function.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.mkdirSync(`${dir}/sys/class/block`, { recursive: true });
 * Deno.mkdirSync(`${dir}/dev/disk/by-id`, { recursive: true });
 * Deno.symlinkSync("../../devices/pci0000:00/0000:00:01.1/0000:01:00.0/nvme/nvme0/nvme0n1",
 *   `${dir}/sys/class/block/nvme0n1`);
 * Deno.symlinkSync("../../nvme0n1", `${dir}/dev/disk/by-id/nvme-Example_123`);
 * const roots = { sysRoot: `${dir}/sys`, devRoot: `${dir}/dev` };
 * const reader = denoFsReader();
 * assertEquals(blockDeviceControllers(reader, roots, "/dev/disk/by-id/nvme-Example_123"), [
 *   "0000:01:00.0",
 * ]);
 * assertEquals(blockDeviceControllers(reader, roots, "/srv/disk.img"), []);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function blockDeviceControllers(
  reader: SysfsReader,
  roots: { sysRoot: string; devRoot: string },
  path: string,
): PciAddress[] {
  const name = devName(reader, roots.devRoot, path);
  return name === null ? [] : pciDevicesUnder(reader, roots.sysRoot, "block", name);
}

/**
 * The classes a character device a domain names can be in (`/dev/input/event3` is
 * `class/input/event3`, `/dev/ttyUSB0` `class/tty/ttyUSB0`): input devices, serial ports, HID
 * raw and USB misc devices (`hiddev`, `lp`), parallel ports, SCSI generic devices.
 */
const CHAR_DEVICE_CLASSES = ["input", "tty", "hidraw", "usbmisc", "ppdev", "scsi_generic"];

/**
 * The PCI function under the character device at `path` (`/dev/input/by-id/usb-...-event-kbd`,
 * `/dev/serial/by-id/...`, `/dev/ttyS4`), read with `/dev` at `devRoot`: a USB keyboard's or
 * serial adapter's USB controller, a PCI serial card. Empty for a path outside `/dev`, a device
 * in no class of {@link CHAR_DEVICE_CLASSES}, or one on no PCI function (`ttyS0` on the ISA
 * bus, a PS/2 keyboard).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.mkdirSync(`${dir}/sys/class/input`, { recursive: true });
 * Deno.mkdirSync(`${dir}/dev/input/by-id`, { recursive: true });
 * Deno.symlinkSync(
 *   "../../devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/0003:046D:C52B.0001/input/input5/event3",
 *   `${dir}/sys/class/input/event3`,
 * );
 * Deno.symlinkSync("../event3", `${dir}/dev/input/by-id/usb-Logitech_Receiver-event-kbd`);
 * Deno.mkdirSync(`${dir}/sys/class/tty`);
 * Deno.symlinkSync("../../devices/platform/serial8250/serial8250:0/serial8250:0.0/tty/ttyS0",
 *   `${dir}/sys/class/tty/ttyS0`);
 * const roots = { sysRoot: `${dir}/sys`, devRoot: `${dir}/dev` };
 * const reader = denoFsReader();
 * assertEquals(
 *   charDeviceControllers(reader, roots, "/dev/input/by-id/usb-Logitech_Receiver-event-kbd"),
 *   ["0000:00:14.0"],
 * );
 * assertEquals(charDeviceControllers(reader, roots, "/dev/ttyS0"), []);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function charDeviceControllers(
  reader: SysfsReader,
  roots: { sysRoot: string; devRoot: string },
  path: string,
): PciAddress[] {
  const name = devName(reader, roots.devRoot, path);
  if (name === null || !isFileName(name)) return [];
  for (const kind of CHAR_DEVICE_CLASSES) {
    const found = linkedPciFunction(reader, `${roots.sysRoot}/class/${kind}/${name}`);
    if (found !== null) return found;
  }
  return [];
}

/**
 * The PCI function of the SCSI host adapter `adapter` as libvirt names it (`scsi_host2`, which is
 * `class/scsi_host/host2`): a SATA, SAS or USB storage controller. Empty for another name or an
 * adapter on no PCI function.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.mkdirSync(`${dir}/class/scsi_host`, { recursive: true });
 * Deno.symlinkSync("../../devices/pci0000:00/0000:00:17.0/ata3/host2/scsi_host/host2",
 *   `${dir}/class/scsi_host/host2`);
 * assertEquals(scsiHostControllers(denoFsReader(), dir, "scsi_host2"), ["0000:00:17.0"]);
 * assertEquals(scsiHostControllers(denoFsReader(), dir, "scsi_host0x2"), ["0000:00:17.0"]);
 * assertEquals(scsiHostControllers(denoFsReader(), dir, "host2"), []);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function scsiHostControllers(
  reader: SysfsReader,
  sysRoot: string,
  adapter: string,
): PciAddress[] {
  // libvirt reads the number as strtoul does with base 0: `scsi_host010` is host8.
  const number = adapter.startsWith("scsi_host") ? libvirtNumber(adapter.slice(9)) : null;
  return number === null
    ? []
    : linkedPciFunction(reader, `${sysRoot}/class/scsi_host/host${number}`) ?? [];
}

/**
 * The parent PCI function of the mediated device `uuid` (`bus/mdev/devices/UUID`): the GPU a
 * vGPU or GVT-g slice is carved from; passing that function to a guest unbinds the host driver
 * that provides the mediated device. Empty for a UUID with no such device (not created yet) or
 * a parent on no PCI function.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const dir = Deno.makeTempDirSync();
 * const uuid = "c2177883-f1bb-47f0-914d-32a22e3a8804";
 * Deno.mkdirSync(`${dir}/bus/mdev/devices`, { recursive: true });
 * Deno.symlinkSync(`../../../devices/pci0000:00/0000:00:02.0/${uuid}`,
 *   `${dir}/bus/mdev/devices/${uuid}`);
 * assertEquals(mdevControllers(denoFsReader(), dir, uuid), ["0000:00:02.0"]);
 * assertEquals(mdevControllers(denoFsReader(), dir, "../../x"), []);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function mdevControllers(reader: SysfsReader, sysRoot: string, uuid: string): PciAddress[] {
  // From a domain's XML: only a UUID names a device there.
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(uuid)) return [];
  return linkedPciFunction(reader, `${sysRoot}/bus/mdev/devices/${uuid.toLowerCase()}`) ?? [];
}

/** A USB device plugged into the host, as `bus/usb/devices` describes it. */
export interface HostUsbDevice {
  /** Its sysfs name (`1-2.3`: bus 1, port 2, then port 3 of a hub). */
  name: string;
  /** `idVendor` and `idProduct`: 4 lower-case hex digits each. */
  vendorId: string;
  productId: string;
  /** `busnum` and `devnum`, as libvirt's `<address bus device>` gives them. */
  bus: number;
  device: number;
  /**
   * The PCI functions a guest given any of them takes it from ({@link pciFunctionsHolding}): the
   * USB controller it hangs under, and an Intel VMD controller above that; none for none.
   */
  controllers: PciAddress[];
}

/**
 * Every USB device plugged into the host (root hubs and interfaces left out), from
 * `bus/usb/devices` under `sysRoot`; a device whose attributes cannot be read is left out.
 */
export function readUsbDevices(reader: SysfsReader, sysRoot: string): HostUsbDevice[] {
  const dir = `${sysRoot}/bus/usb/devices`;
  return (reader.listDir(dir) ?? []).sort().flatMap((name) => {
    if (!/^\d+-\d+(?:\.\d+)*$/.test(name)) return [];
    const attribute = (file: string) => reader.readText(`${dir}/${name}/${file}`)?.trim() ?? "";
    const [vendorId, productId] = [attribute("idVendor"), attribute("idProduct")];
    const [bus, device] = [attribute("busnum"), attribute("devnum")];
    if (!/^[0-9a-f]{4}$/.test(vendorId) || !/^[0-9a-f]{4}$/.test(productId)) return [];
    if (!/^\d+$/.test(bus) || !/^\d+$/.test(device)) return [];
    const link = reader.readLink(`${dir}/${name}`);
    const controllers = link === null ? [] : pciFunctionsHolding(link);
    return [{ name, vendorId, productId, bus: Number(bus), device: Number(device), controllers }];
  });
}

/**
 * The controllers (USB, and an Intel VMD above one) of the host USB devices a USB hostdev's
 * `source` names: every plugged device matching all it gives (IDs, bus and device number), so a
 * source that fits several counts them all. Empty when none is plugged in.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const receiver = { name: "1-2", vendorId: "046d", productId: "c52b", bus: 1, device: 3,
 *   controllers: ["0000:00:14.0"] };
 * const source = { vendorId: "046d", productId: "c52b", bus: null, device: null };
 * assertEquals(usbDeviceControllers([receiver], source), ["0000:00:14.0"]);
 * assertEquals(usbDeviceControllers([receiver], { ...source, bus: 2, device: 3 }), []);
 * ```
 */
export function usbDeviceControllers(
  devices: readonly HostUsbDevice[],
  source: UsbSource,
): PciAddress[] {
  const found = new Set<PciAddress>();
  for (const d of devices) {
    if (source.vendorId !== null && d.vendorId !== source.vendorId) continue;
    if (source.productId !== null && d.productId !== source.productId) continue;
    if (source.bus !== null && d.bus !== source.bus) continue;
    if (source.device !== null && d.device !== source.device) continue;
    for (const controller of d.controllers) found.add(controller);
  }
  return [...found].sort();
}

/**
 * The kernel name of the device node at `path` under `/dev` (read at `devRoot`), its links
 * followed (`/dev/disk/by-id/x` to `../../nvme0n1`, `/dev/vg/lv` to `../dm-3`); `null` for a path
 * outside `/dev`.
 */
function devName(reader: SysfsReader, devRoot: string, path: string): string | null {
  let current = path;
  for (let hop = 0; hop < MAX_DEV_LINKS; hop++) {
    if (!current.startsWith("/dev/")) return null;
    const link = reader.readLink(`${devRoot}${current.slice(4)}`);
    if (link === null) break;
    current = link.startsWith("/") ? link : join(current.slice(0, current.lastIndexOf("/")), link);
  }
  return current.startsWith("/dev/") ? baseName(current) : null;
}

/** The routes through one interface: whether a default route, and the networks it carries. */
interface InterfaceRoutes {
  hasDefault: boolean;
  /** The first few of its networks (`192.0.2.0/24`, `fd00:5::/64`), for messages. */
  networks: string[];
  /**
   * How many routes to networks it carries: a network routed twice through it (two metrics)
   * counts twice once three are named, as keeping every prefix of a full table costs too much.
   */
  count: number;
}

/**
 * The kernel's route flags: `RTF_REJECT` (an unreachable or prohibit route), and IPv6's
 * `RTF_LOCAL` and `RTF_ANYCAST` (the host's own addresses, in the local table).
 */
const RTF_REJECT = 0x0200;
const RTF_ANYCAST = 0x00100000;
const RTF_LOCAL = 0x80000000;

/** How much of a routing table is read at a time, and the most read in all. */
const ROUTE_CHUNK_BYTES = 1024 * 1024;
const MAX_ROUTE_TABLE_BYTES = 1024 * 1024 * 1024;
/** A line longer than this is no route (each is some 150 bytes): it is skipped. */
const MAX_ROUTE_LINE = 4096;

/**
 * Calls `each` with every line of a routing table in `/proc/net`, read a chunk at a time (a host
 * with a full Internet routing table has a million routes, over 100 MB of text); nothing when
 * the table is missing (no IPv6), unless it is `required`. Throws when it goes on past 1 GiB: a
 * table read in part could leave out the host's own networks, or (IPv6 lists the default route
 * last) its default route.
 */
function forEachRouteLine(
  reader: SysfsReader,
  path: string,
  each: (line: string) => void,
  options: { required?: boolean } = {},
): void {
  using file = reader.openFile(path);
  if (file === null && options.required) {
    throw new Error(`Cannot read ${path}: which NICs the host routes through is unknown`);
  }
  if (file === null) return;
  const decoder = new TextDecoder();
  let rest = "";
  for (let offset = 0;;) {
    const chunk = file.readAt(offset, ROUTE_CHUNK_BYTES);
    if (chunk.length === 0) break;
    offset += chunk.length;
    if (offset > MAX_ROUTE_TABLE_BYTES) {
      throw new Error(
        `${path} is larger than ${MAX_ROUTE_TABLE_BYTES} bytes: which NICs the host routes through is unknown`,
      );
    }
    const lines = (rest + decoder.decode(chunk, { stream: true })).split("\n");
    rest = lines.pop() ?? "";
    if (rest.length > MAX_ROUTE_LINE) rest = "\0";
    for (const line of lines) if (!line.startsWith("\0")) each(line);
  }
  if (rest !== "" && !rest.startsWith("\0")) each(rest);
}

/** How many networks per interface {@link routesByInterface} keeps for messages. */
const NAMED_NETWORKS = 3;

/**
 * The routes the host sends traffic through, by interface: IPv4's main table (`net/route`; only
 * a route's first next hop) and every IPv6 table (`net/ipv6_route`), default routes and the
 * networks of its own addresses or static routes. Left out: the loopback's, reject routes, IPv6
 * local and anycast (own-address) routes, and link-local and multicast prefixes, which every
 * interface that is up carries.
 */
function routesByInterface(reader: SysfsReader, procRoot: string): Map<string, InterfaceRoutes> {
  const byInterface = new Map<string, InterfaceRoutes>();
  const add = (iface: string, prefix: string | null) => {
    if (prefix === null) return;
    const routes = byInterface.get(iface) ?? { hasDefault: false, networks: [], count: 0 };
    if (prefix === "default") routes.hasDefault = true;
    else if (!routes.networks.includes(prefix)) {
      routes.count++;
      if (routes.networks.length < NAMED_NETWORKS) routes.networks.push(prefix);
    }
    byInterface.set(iface, routes);
  };
  let header = true;
  // Every kernel with networking has IPv4's table: missing, /proc is not the host's whole one.
  forEachRouteLine(reader, `${procRoot}/net/route`, (line) => {
    if (header) return void (header = false);
    const [iface, destination, , flags, , , , mask] = line.trim().split(/\s+/);
    if (iface === undefined || iface === "lo" || mask === undefined) return;
    if ((parseInt(flags ?? "0", 16) & RTF_REJECT) !== 0) return;
    add(iface, ipv4Prefix(destination ?? "", mask));
  }, { required: true });
  // Destination, its prefix length, source, its length, next hop, metric, counts, flags, name.
  forEachRouteLine(reader, `${procRoot}/net/ipv6_route`, (line) => {
    const fields = line.trim().split(/\s+/);
    const iface = fields[9];
    if (iface === undefined || iface === "lo") return;
    const flags = parseInt(fields[8] ?? "0", 16);
    if ((flags & (RTF_REJECT | RTF_LOCAL | RTF_ANYCAST)) !== 0) return;
    add(iface, ipv6Prefix(fields[0] ?? "", fields[1] ?? ""));
  });
  return byInterface;
}

/**
 * The order of `/proc/net/route`'s hex digit pairs, first byte first: the kernel prints each
 * address as a number in the host's byte order.
 */
const IPV4_BYTE_ORDER = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1
  ? [6, 4, 2, 0]
  : [0, 2, 4, 6];

/**
 * `/proc/net/route`'s destination and mask (hex, in the host's byte order) as `a.b.c.d/len`,
 * `default`, or `null` for a link-local (169.254/16) or multicast prefix.
 */
function ipv4Prefix(destination: string, mask: string): string | null {
  if (!/^[0-9A-Fa-f]{8}$/.test(destination) || !/^[0-9A-Fa-f]{8}$/.test(mask)) return null;
  const bytes = (hex: string) => IPV4_BYTE_ORDER.map((i) => parseInt(hex.slice(i, i + 2), 16));
  const length = bytes(mask).reduce((n, b) => n + b.toString(2).replace(/0/g, "").length, 0);
  if (length === 0) return "default";
  const [a, b] = bytes(destination);
  if ((a === 169 && b === 254) || a! >= 224) return null;
  return `${bytes(destination).join(".")}/${length}`;
}

/**
 * `/proc/net/ipv6_route`'s destination (32 hex digits) and prefix length (hex) as
 * `fd00:5::/64`, `default`, or `null` for a link-local (`fe80::/10`) or multicast prefix.
 */
function ipv6Prefix(destination: string, lengthHex: string): string | null {
  if (!/^[0-9a-f]{32}$/i.test(destination) || !/^[0-9a-f]{2}$/i.test(lengthHex)) return null;
  const length = parseInt(lengthHex, 16);
  if (length === 0) return "default";
  const first = parseInt(destination.slice(0, 4), 16);
  if ((first & 0xffc0) === 0xfe80 || (first & 0xff00) === 0xff00) return null;
  const groups = destination.match(/.{4}/g)!.map((g) => parseInt(g, 16).toString(16));
  // The longest run of two or more zero groups becomes `::` (RFC 5952).
  let best = { at: -1, length: 1 };
  for (let i = 0; i < 8; i++) {
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > best.length) best = { at: i, length: j - i };
    i = j;
  }
  const text = best.at === -1
    ? groups.join(":")
    : `${groups.slice(0, best.at).join(":")}::${groups.slice(best.at + best.length).join(":")}`;
  return `${text}/${length}`;
}

/** Where the live host's facts are read: sysfs, `/proc` and udev's device database. */
interface LiveRoots {
  sysRoot: string;
  procRoot: string;
  udevDataDir: string;
}

/**
 * What the running host uses: controllers of its storage (mounted filesystems, swap partitions,
 * block devices held by device-mapper, md or bcache, disks of imported ZFS pools), the NICs it
 * routes through (a default route, or the networks of its own addresses and static routes; IPv4
 * or IPv6, through a bridge, bond or VLAN too), and the boot VGA when a framebuffer console is
 * bound.
 */
function liveHostUse(
  reader: SysfsReader,
  options: LiveRoots & { devices: PciDevice[] },
): HostUse[] {
  const known = new Set(options.devices.map((d) => d.address));
  const storage = storageUses(reader, options, known);
  const uses = [
    ...storage.filter((u) => known.has(u.address)),
    ...routeUses(reader, options).filter((u) => known.has(u.address)),
    ...consoleUses(reader, options),
  ];
  return sortHostUse(uses);
}

/**
 * The controllers of the host's storage. A controller with a mounted filesystem is named by the
 * mount alone (the most telling reason); the other storage reasons are added only for controllers
 * no mount names.
 */
function storageUses(
  reader: SysfsReader,
  roots: LiveRoots,
  known: ReadonlySet<PciAddress>,
): HostUse[] {
  const mounted = mountUses(reader, roots);
  const named = new Set(mounted.map((u) => u.address));
  const others = [
    ...swapUses(reader, roots),
    ...heldBlockUses(reader, roots),
    ...zfsPoolUses(reader, roots, known),
  ].filter((u) => !named.has(u.address));
  return [...mounted, ...others];
}

/**
 * `text` with the octal escapes `/proc` writes for a space, tab, newline and backslash in a path
 * (`\040`) undone.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(unescapeProcPath("/mnt/my\\040disk"), "/mnt/my disk");
 * ```
 */
export function unescapeProcPath(text: string): string {
  if (!text.includes("\\")) return text;
  return text.replace(
    /\\([0-7]{3})/g,
    (_, octal: string) => String.fromCharCode(parseInt(octal, 8)),
  );
}

/**
 * The controllers under each mounted filesystem's block devices, from `/proc/self/mountinfo`:
 * the device number it gives (`259:2`, found in `/sys/dev/block` even when the source says
 * `/dev/root`), and the source's `/dev` path (a bcachefs source lists several, `a:b`). Each
 * device is named once, by the first mount of it (bind mounts repeat it, by the thousand on a
 * container host). Throws when the table cannot be read whole: a table read in part, or not at
 * all, could leave the root disk out.
 */
function mountUses(reader: SysfsReader, roots: LiveRoots): HostUse[] {
  const { sysRoot, procRoot } = roots;
  const path = `${procRoot}/self/mountinfo`;
  const text = readWholeText(reader, path, MAX_MOUNTINFO_BYTES);
  if (text === null) throw new Error(`Cannot read ${path}: what the host has mounted is unknown`);
  const seen = new Set<string>();
  // Each block device's name, with the first mount point it was seen at.
  const mounted = new Map<string, string>();
  for (const line of text.split("\n")) {
    // ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
    const fields = line.split(" ");
    const separator = fields.indexOf("-", 6);
    const [number, target] = [fields[2], fields[4]];
    const [type, source] = [fields[separator + 1] ?? "", fields[separator + 2] ?? ""];
    if (separator === -1 || number === undefined || target === undefined) continue;
    const key = `${number} ${source}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const names: string[] = [];
    if (/^[1-9]\d*:\d+$/.test(number)) {
      const link = reader.readLink(`${sysRoot}/dev/block/${number}`);
      if (link !== null) names.push(baseName(link));
    }
    const sources = unescapeProcPath(source);
    for (const part of type === "bcachefs" ? sources.split(":") : [sources]) {
      const name = part.startsWith("/dev/") ? devName(reader, "/dev", part) : null;
      if (name !== null && name !== "root") names.push(name);
    }
    for (const name of names) if (!mounted.has(name)) mounted.set(name, unescapeProcPath(target));
  }
  const uses: HostUse[] = [];
  for (const [name, target] of mounted) {
    for (const address of pciDevicesUnder(reader, sysRoot, "block", name)) {
      uses.push({ address, reason: "mounted-filesystem", detail: `${target} on ${name}` });
    }
  }
  return [...uses, ...btrfsUses(reader, sysRoot)];
}

/**
 * The controllers of every device of each mounted btrfs filesystem: the mount table names one
 * device of a filesystem that spans several, and sysfs lists them all
 * (`/sys/fs/btrfs/UUID/devices`, present while it is mounted).
 */
function btrfsUses(reader: SysfsReader, sysRoot: string): HostUse[] {
  const uses: HostUse[] = [];
  for (const uuid of (reader.listDir(`${sysRoot}/fs/btrfs`) ?? []).sort()) {
    for (const name of (reader.listDir(`${sysRoot}/fs/btrfs/${uuid}/devices`) ?? []).sort()) {
      for (const address of pciDevicesUnder(reader, sysRoot, "block", name)) {
        const detail = `btrfs ${uuid} on ${name}`;
        uses.push({ address, reason: "mounted-filesystem", detail });
      }
    }
  }
  return uses;
}

/**
 * The controllers under each swap partition (`/proc/swaps`). A swap file lives on a mounted
 * filesystem, which {@link mountUses} already follows.
 */
function swapUses(reader: SysfsReader, { sysRoot, procRoot }: LiveRoots): HostUse[] {
  const uses: HostUse[] = [];
  // Whole, or refused: a swap partition listed past a head would read as the host's no more.
  const swaps = readWholeText(reader, `${procRoot}/swaps`) ?? "";
  for (const line of swaps.split("\n").slice(1)) {
    const [source, type] = line.trim().split(/\s+/);
    if (source === undefined || type !== "partition") continue;
    const name = devName(reader, "/dev", unescapeProcPath(source));
    if (name === null) continue;
    for (const address of pciDevicesUnder(reader, sysRoot, "block", name)) {
      uses.push({ address, reason: "swap", detail: `swap on ${name}` });
    }
  }
  return uses;
}

/** Virtual block devices that never stand on another block device: not worth a listing. */
const NO_SLAVES = /^(loop|zram|ram|nbd)\d/;

/**
 * The controllers of block devices that device-mapper (LVM, dm-crypt), md or bcache stands on:
 * each such virtual device lists them in its `slaves` directory (and each of them it in its
 * `holders`). An active logical volume holds its disk whether or not anything is mounted on it (a
 * VM's disk on LVM, a RAID member); handing the disk's controller to a guest would pull it from
 * under them. Read from the holders' side: a host has few of them, and many disks.
 */
function heldBlockUses(reader: SysfsReader, { sysRoot }: LiveRoots): HostUse[] {
  const uses: HostUse[] = [];
  const virtual = `${sysRoot}/devices/virtual/block`;
  for (const holder of (reader.listDir(virtual) ?? []).sort()) {
    if (NO_SLAVES.test(holder)) continue;
    const slaves = reader.listDir(`${virtual}/${holder}/slaves`) ?? [];
    if (slaves.length === 0) continue;
    const dmName = readAttribute(reader, `${virtual}/${holder}/dm/name`);
    const by = dmName === null ? holder : `${holder} (${dmName})`;
    for (const slave of slaves.sort()) {
      // Followed down: a slave may be a multipath NVMe disk, or itself device-mapper or md.
      for (const address of pciDevicesUnder(reader, sysRoot, "block", slave)) {
        uses.push({ address, reason: "block-holder", detail: `${slave} held by ${by}` });
      }
    }
  }
  return uses;
}

/**
 * The controllers of the disks of imported ZFS pools. ZFS opens its disks without listing itself
 * as a holder, and a pool's zvols and unmounted datasets leave no trace in the mount table; so a
 * pool counts as imported when `/proc/spl/kstat/zfs/POOL/state` exists, and a disk as one of its
 * members when udev's probe of it (`/run/udev/data/bMAJOR:MINOR`) says `zfs_member` with the
 * pool's name as its label. A disk udev has no record of (a host without udev's daemon, a disk
 * not probed yet) may be a member: it counts as one, as a pool's disk taken away would fault the
 * pool. Nothing is read on a host without imported pools.
 */
function zfsPoolUses(
  reader: SysfsReader,
  roots: LiveRoots,
  known: ReadonlySet<PciAddress>,
): HostUse[] {
  const { sysRoot, procRoot, udevDataDir } = roots;
  const kstat = `${procRoot}/spl/kstat/zfs`;
  const pools = new Set(
    (reader.listDir(kstat) ?? []).filter((e) => reader.readText(`${kstat}/${e}/state`) !== null),
  );
  if (pools.size === 0) return [];
  const uses: HostUse[] = [];
  // Worded once, on the first disk udev has no record of: it lists udev's whole database.
  let unprobed: ((name: string) => string) | undefined;
  for (const name of (reader.listDir(`${sysRoot}/class/block`) ?? []).sort()) {
    // Only a disk under a device asked about is worth its udev entry.
    const addresses = pciDevicesUnder(reader, sysRoot, "block", name).filter((a) => known.has(a));
    if (addresses.length === 0) continue;
    // A hidden disk (a path of a multipath NVMe drive) has no number, nor a `/dev` node to open.
    const number = readAttribute(reader, `${sysRoot}/class/block/${name}/dev`);
    if (number === null || !/^\d+:\d+$/.test(number)) continue;
    const record = readWholeText(reader, `${udevDataDir}/b${number}`);
    const detail = record === null
      ? (unprobed ??= unprobedDetail(reader, udevDataDir, pools))(name)
      : memberDetail(udevProperties(record), pools, name);
    if (detail === null) continue;
    for (const address of addresses) uses.push({ address, reason: "zfs-pool", detail });
  }
  return uses;
}

/** `ZFS pool tank on nvme1n1p1` when udev's probe says the disk is a member of an imported pool. */
function memberDetail(
  probe: ReadonlyMap<string, string>,
  pools: ReadonlySet<string>,
  name: string,
): string | null {
  const pool = udevLabel(probe);
  if (probe.get("ID_FS_TYPE") !== "zfs_member" || pool === null || !pools.has(pool)) return null;
  return `ZFS pool ${pool} on ${name}`;
}

/** Why a disk udev never probed may be a pool's: no record of it, or no database at all. */
function unprobedDetail(
  reader: SysfsReader,
  udevDataDir: string,
  pools: ReadonlySet<string>,
): (name: string) => string {
  const why = reader.listDir(udevDataDir) === null
    ? `udev has no database (${udevDataDir}) to say which disks it is on`
    : "udev has no record of that disk";
  const names = [...pools].sort().join(" or ");
  return (name) => `ZFS pool ${names} may be on ${name}: ${why}`;
}

/**
 * The label udev's probe read: `ID_FS_LABEL_ENC` decoded (`\x20` for a space), which keeps the
 * characters `ID_FS_LABEL` replaces with `_`; `null` when neither is there.
 */
function udevLabel(probe: ReadonlyMap<string, string>): string | null {
  const encoded = probe.get("ID_FS_LABEL_ENC");
  if (encoded === undefined) return probe.get("ID_FS_LABEL") ?? null;
  // Literal text (valid UTF-8 is kept as is) between `\xNN` escapes of single bytes.
  const encoder = new TextEncoder();
  const bytes = encoded.split(/\\x([0-9a-f]{2})/i).flatMap((part, i) =>
    i % 2 === 1 ? [parseInt(part, 16)] : [...encoder.encode(part)]
  );
  return new TextDecoder().decode(Uint8Array.from(bytes));
}

/** The `E:KEY=VALUE` properties of a udev database entry. */
function udevProperties(text: string): Map<string, string> {
  const properties = new Map<string, string>();
  for (const line of text.split("\n")) {
    const match = /^E:([^=]+)=(.*)$/.exec(line);
    if (match !== null) properties.set(match[1]!, match[2]!);
  }
  return properties;
}

/**
 * The NICs under each interface the host routes through, one use per NIC: the default route's
 * (`default-route`), or else the networks it carries (`network-route`: the host's address on a
 * management or storage network, a static route), named by up to three of them.
 */
function routeUses(reader: SysfsReader, { sysRoot, procRoot }: LiveRoots): HostUse[] {
  const byNic = new Map<
    PciAddress,
    { defaultVia: string | null; named: [string, string[]][]; count: number }
  >();
  for (const [iface, routes] of routesByInterface(reader, procRoot)) {
    for (const address of pciDevicesUnder(reader, sysRoot, "net", iface)) {
      const nic = byNic.get(address) ?? { defaultVia: null, named: [], count: 0 };
      if (routes.hasDefault) nic.defaultVia ??= iface;
      if (routes.networks.length > 0) nic.named.push([iface, routes.networks]);
      nic.count += routes.count;
      byNic.set(address, nic);
    }
  }
  return [...byNic].map(([address, { defaultVia, named, count }]): HostUse => {
    if (defaultVia !== null) {
      return { address, reason: "default-route", detail: `default route via ${defaultVia}` };
    }
    const shown: string[] = [];
    let left = NAMED_NETWORKS;
    for (const [iface, networks] of named) {
      if (left <= 0) break;
      shown.push(`${networks.slice(0, left).join(", ")} via ${iface}`);
      left -= Math.min(left, networks.length);
    }
    const more = count > NAMED_NETWORKS ? ` and ${count - NAMED_NETWORKS} more` : "";
    return { address, reason: "network-route", detail: `route to ${shown.join("; ")}${more}` };
  });
}

/** The major number of NVIDIA's `/dev/nvidiaN` (fixed by its driver, `NV_MAJOR_DEVICE_NUMBER`). */
const NVIDIA_MAJOR = 195;

/** A process that holds device nodes of a GPU open. */
export interface GpuHolder {
  /** Its process ID. */
  pid: number;
  /** Its command name (`Xorg`; `nvidia-persiste`: the kernel keeps 15 bytes); `""`: unreadable. */
  command: string;
  /** The GPU's nodes it holds (`/dev/dri/card1`, `/dev/dri/renderD129`, `/dev/nvidia0`). */
  nodes: string[];
}

/**
 * The processes holding device nodes of each GPU at `addresses` open (those none holds are
 * absent), in process-ID order: its DRM card and render nodes (listed in its sysfs `drm/`: a
 * compositor, Xorg, any OpenGL or Vulkan program) and NVIDIA's `/dev/nvidiaN` (the minor from the
 * driver's `driver/nvidia/gpus/ADDRESS/information`). Detaching such a GPU pulls it from under
 * them: NVIDIA's driver waits for them to let go, so the start hangs; others crash them or the
 * session. Read from `/proc/PID/fd` (see {@link openBy}; `pids`: the processes to look at, when
 * the caller has listed them): as a user, other users' processes are not seen.
 */
export function gpuHolders(
  reader: SysfsReader,
  roots: { sysRoot: string; procRoot: string },
  addresses: readonly PciAddress[],
  options: { pids?: readonly number[] } = {},
): Map<PciAddress, GpuHolder[]> {
  const nodes: (DeviceNode & { address: PciAddress })[] = [];
  const nvidia = nvidiaGpus(reader, roots.procRoot);
  for (const address of addresses) {
    const drm = `${roots.sysRoot}/bus/pci/devices/${address}/drm`;
    const names = (reader.listDir(drm) ?? []).filter((n) => /^(card|renderD)[0-9]+$/.test(n));
    for (const name of names.sort()) {
      const number = readAttribute(reader, `${drm}/${name}/dev`);
      const known = number !== null && /^[0-9]+:[0-9]+$/.test(number);
      nodes.push({ path: `/dev/dri/${name}`, number: known ? number : null, address });
    }
    const information = nvidia === null || nvidia.has(address)
      ? reader.readText(`${roots.procRoot}/driver/nvidia/gpus/${address}/information`)
      : null;
    const minor = /^Device Minor:\s*([0-9]+)\s*$/m.exec(information ?? "")?.[1];
    if (minor !== undefined) {
      const number = `${NVIDIA_MAJOR}:${Number(minor)}`;
      nodes.push({ path: `/dev/nvidia${minor}`, number, address });
    }
  }
  const addressOf = new Map(nodes.map((n) => [n.path, n.address]));
  const byAddress = new Map<PciAddress, Map<number, GpuHolder>>();
  for (const [node, holders] of openBy(reader, roots.procRoot, nodes, options)) {
    const address = addressOf.get(node)!;
    const processes = byAddress.get(address) ?? new Map<number, GpuHolder>();
    for (const { pid, command } of holders) {
      const holder = processes.get(pid) ?? { pid, command, nodes: [] };
      holder.nodes.push(node);
      processes.set(pid, holder);
    }
    byAddress.set(address, processes);
  }
  return new Map(
    [...byAddress].map(([address, processes]) => {
      const holders = [...processes.values()].sort((a, b) => a.pid - b.pid);
      for (const holder of holders) holder.nodes.sort();
      return [address, holders];
    }),
  );
}

/**
 * The names in NVIDIA's `driver/nvidia/gpus/` (one per GPU its driver holds; none without the
 * driver), so `information` is read for those alone, not tried for every function of the host;
 * `null` when the listing is refused: each GPU's file is then tried, as it may still be readable.
 */
function nvidiaGpus(reader: SysfsReader, procRoot: string): Set<string> | null {
  try {
    return new Set(reader.listDir(`${procRoot}/driver/nvidia/gpus`) ?? []);
  } catch {
    return null;
  }
}

/**
 * `gpu-in-use` for each GPU at `addresses` that a process holds open ({@link gpuHolders}), named
 * by the lowest process ID: `/dev/dri/card1, /dev/dri/renderD129 open in Xorg (pid 812) and 2
 * more processes`.
 */
export function gpuInUse(
  reader: SysfsReader,
  roots: { sysRoot: string; procRoot: string },
  addresses: readonly PciAddress[],
): HostUse[] {
  return [...gpuHolders(reader, roots, addresses)].map(([address, holders]): HostUse => {
    const { pid, command, nodes } = holders[0]!;
    const more = holders.length - 1;
    const others = more === 0 ? "" : ` and ${more} more process${more === 1 ? "" : "es"}`;
    const who = `${command === "" ? "a process" : command} (pid ${pid})`;
    return { address, reason: "gpu-in-use", detail: `${nodes.join(", ")} open in ${who}${others}` };
  });
}

/** The boot VGA device, when a framebuffer console is bound or a framebuffer exists. */
function consoleUses(
  reader: SysfsReader,
  options: LiveRoots & { devices: PciDevice[] },
): HostUse[] {
  const { sysRoot, procRoot, devices } = options;
  const consoles = reader.listDir(`${sysRoot}/class/vtconsole`) ?? [];
  const fbcon = consoles.some((c) =>
    readAttribute(reader, `${sysRoot}/class/vtconsole/${c}/bind`) === "1" &&
    /frame buffer/i.test(readAttribute(reader, `${sysRoot}/class/vtconsole/${c}/name`) ?? "")
  );
  const fb = (reader.readText(`${procRoot}/fb`) ?? "").trim() !== "";
  if (!fbcon && !fb) return [];
  return devices.filter((d) => d.bootVga === true).map((device) => ({
    address: device.address,
    reason: "console-vga",
    detail: `boot_vga=1 with ${fbcon ? "fbcon" : "a framebuffer"}`,
  }));
}
