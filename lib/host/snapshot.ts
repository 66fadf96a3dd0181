/**
 * Captures a host's PCI/IOMMU topology (the live `/sys` or a captured tree) into a portable
 * sysfs-shaped tree that discovery and `lspci -O sysfs.path=` read back as the same host: attribute
 * files and `config` bytes are copied as read, links are rewritten relative to the new tree (a
 * device where sysfs keeps it, below the PCI functions it hangs under, when the tree shows that), and
 * what only a live host knows is written beside them (`cmdline`, with any URI password as `***`
 * ({@link sharedCmdline}), `host_use.json`, and lspci's module list as a `modules` file per
 * device).
 *
 * The pre-flight facts (`lib/host/preflight.ts`) are captured too, so a snapshot plans with them:
 * each device's `reset_method`, DRM card and render nodes and console framebuffers, the processes
 * holding a GPU's nodes open, the bound consoles, the input devices that hang under a PCI function
 * (`class/input`), the NUMA nodes' CPU lists, the AppArmor and
 * SELinux switches, the drivers' modules, and under `proc/` the files the pre-flight reads from
 * `/proc`. Each is read bounded and only when it is a regular file (the reader's rule), and only
 * what the pre-flight reads is written: `/proc/modules` without the modules' kernel addresses
 * and `/proc/iomem` without the kernel image's ranges (which defeat KASLR), `/proc/cpuinfo` as its vendor line alone, a process holding a GPU open
 * as its command name and the links to the GPU's nodes alone (`proc/PID/comm`, `proc/PID/fd/N`:
 * none of its other files).
 *
 * @module
 */

import type { HostTopology, PciAddress, PciDevice } from "./types.ts";
import {
  baseName,
  type NonPciMember,
  parseGroupNumber,
  readNonPciMember,
  readWholeText,
  type SysfsReader,
} from "./sysfs.ts";
import { busOf } from "../pci/address.ts";
import {
  type GpuHolder,
  gpuHolders,
  inputDevicePath,
  inputLinks,
  pciFunctionsHolding,
  readInputName,
} from "./sysfs_device.ts";
import { unknownOnError } from "./preflight.ts";
import { entryGone, firstInterface, HostChangedError } from "./discover.ts";
import { readGroupListings } from "./iommu_groups.ts";
import { redactSecrets } from "../domain/secrets.ts";
import { errorText } from "../render/error_text.ts";
import { join, pathExists } from "../state/paths.ts";
import { shellWord } from "../render/shell.ts";

/**
 * The kernel command line as a snapshot writes it: a snapshot is made to be shared, and an install
 * or boot URL's password (`inst.ks=` with `user:password@`) is no parameter any check reads, so it
 * is written as `***`. Word by word as the kernel splits them (`kernelParams`: at spaces outside
 * double quotes): on the whole line, a URI with no password in its word
 * (`ftp://anonymous:@host`) took all up to a later word's `@` (`serial-getty@ttyS0`) for one,
 * `pcie_acs_override=` and `vfio-pci.ids=` with it.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   sharedCmdline("ks=ftp://a:@h/k iommu=pt ks=http://u:pw@h/k x=getty@tty1"),
 *   "ks=ftp://a:@h/k iommu=pt ks=http://u:***@h/k x=getty@tty1",
 * );
 * ```
 */
export function sharedCmdline(cmdline: string): string {
  return cmdline.replace(/(?:[^\s"]|"[^"]*(?:"|$))+/g, (word) => redactSecrets(word));
}

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
  "reset_method",
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
  /**
   * Whether `root` is the running host's own sysfs, however spelled (`//sys`, a link to `/sys`),
   * so the pre-flight files are read from the host's `/proc`, not from `root`'s `proc/`.
   * Default: `root` is `/sys`, as for `discoverHost`.
   */
  live?: boolean;
}

/** What a snapshot wrote. */
export interface SnapshotSummary {
  /** The snapshot directory, as given to {@link writeSnapshot}. */
  out: string;
  /** How many PCI functions it holds. */
  devices: number;
  /** How many IOMMU groups it holds (`0` for a host without IOMMU). */
  groups: number;
  /**
   * How many functions' configuration space it holds only up to the 64-byte header (what a
   * process without root may read): their serial numbers and reset capability are unknown to a
   * plan of the snapshot.
   */
  headerOnly: number;
}

/**
 * Raised when the snapshot target exists and is not an empty directory: a symbolic link, another
 * kind of file, or a directory with entries.
 */
export class SnapshotTargetError extends Error {
  /** The error's name. */
  override name = "SnapshotTargetError";
  /** The target path. */
  readonly path: string;
  /** Builds the error for target `path`; `reason` says what it is (default: a non-empty one). */
  constructor(path: string, reason = "it exists and is not empty") {
    super(`Cannot write snapshot to "${path}": ${reason}`);
    this.path = path;
  }
}

function ensureEmptyTarget(out: string): void {
  let stat: Deno.FileInfo;
  try {
    // Not followed: a link, dangling or not, would put the snapshot somewhere else than named.
    stat = Deno.lstatSync(out);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  if (stat.isSymlink) throw new SnapshotTargetError(out, "it is a symbolic link");
  if (!stat.isDirectory) throw new SnapshotTargetError(out, "it is not a directory");
  const names = [...Deno.readDirSync(out)].map((e) => e.name);
  if (names.length === 0) return;
  // A snapshot killed while it wrote (Ctrl-C, `kill`) leaves its hidden temporary directory: the
  // target then looks empty to `ls`, and "not empty" alone would not say what is in it.
  if (names.every((name) => TEMP_NAME.test(name))) {
    throw new SnapshotTargetError(
      out,
      `it holds only ${names.join(", ")}, left by a snapshot that was stopped while it wrote; ` +
        `remove ${names.length === 1 ? "it" : "them"} (rm -r ${
          names.map((name) => shellWord(join(out, name))).join(" ")
        }), then run snapshot again`,
    );
  }
  throw new SnapshotTargetError(out);
}

/** The temporary directory {@link writeSnapshot} writes the tree into before moving it up. */
const TEMP_NAME = /^\.snapshot-[0-9a-f-]{36}\.tmp$/;

/**
 * Writes the snapshot of `host` (discovered from `options.root`) into `out`, which must not exist
 * or be an empty directory (not a symbolic link to one): else {@link SnapshotTargetError}. The
 * tree appears whole or not at all: a failure (a full disk) removes what was written, and throws
 * an `Error` naming `out`.
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
  ensureEmptyTarget(out);
  // Written into a temporary directory inside `out` (on the same file system, also when `out`
  // is a mount point), then moved up whole: a run stopped half-way (a full disk) leaves no
  // partial tree that `devices --sysfs` would show as the host with devices missing, and that
  // a second snapshot would refuse as not empty.
  const made = !pathExists(out);
  if (made) Deno.mkdirSync(out, { recursive: true });
  const temp = join(out, `.snapshot-${crypto.randomUUID()}.tmp`);
  try {
    const summary = writeTree(host, temp, options);
    for (const entry of Deno.readDirSync(temp)) {
      Deno.renameSync(join(temp, entry.name), join(out, entry.name));
    }
    Deno.removeSync(temp);
    return { ...summary, out };
  } catch (error) {
    // `out` was empty: all in it is this run's.
    try {
      for (const entry of [...Deno.readDirSync(out)]) {
        Deno.removeSync(join(out, entry.name), { recursive: true });
      }
      if (made) Deno.removeSync(out);
    } catch {
      // What cannot be removed is said by the error below only as its cause.
    }
    throw new Error(
      `Cannot write snapshot to "${out}": ${errorText(error)}; nothing was left there`,
      { cause: error },
    );
  }
}

/** Writes the snapshot's tree into `out`, a directory not made yet. */
function writeTree(host: HostTopology, out: string, options: SnapshotOptions): SnapshotSummary {
  const { root, reader } = options;
  // The pre-flight files are optional evidence: one this process may not read (other users'
  // processes and `/proc/iomem`'s addresses are root's) is left out, not failing the snapshot.
  const facts = unknownOnError(reader);
  // The `/proc` beside `root`, whose pre-flight files are captured.
  const live = options.live ?? /^\/sys\/*$/.test(root);
  const procRoot = live ? "/proc" : `${root}/proc`;
  // One scan of `/proc` for every device's holders.
  const holders = gpuHolders(
    facts,
    { sysRoot: root, procRoot },
    host.devices.map((d) => d.address),
  );
  let headerOnly = 0;
  const devicesDir = `${out}/bus/pci/devices`;
  Deno.mkdirSync(devicesDir, { recursive: true });
  Deno.mkdirSync(`${out}/bus/pci/drivers`, { recursive: true });
  // Where sysfs keeps each device (see writeDevice), shallowest first: a place that leads through
  // another device's directory is made after that directory's links, so through none of them.
  const placed = host.devices.map((device) => ({
    device,
    place: devicePlace(
      reader.readLink(`${root}/bus/pci/devices/${device.address}`),
      device.address,
    ) ?? rootBusPlace(device),
  })).sort((a, b) => depth(a.place) - depth(b.place));
  for (const { device, place } of placed) {
    if (writeDevice(device, place, { root, out, reader, facts, live, holders })) headerOnly++;
  }
  for (const slot of reader.listDir(`${root}/bus/pci/slots`) ?? []) {
    const address = reader.readText(`${root}/bus/pci/slots/${slot}/address`);
    if (address === null) continue;
    Deno.mkdirSync(`${out}/bus/pci/slots/${slot}`, { recursive: true });
    Deno.writeTextFileSync(`${out}/bus/pci/slots/${slot}/address`, address);
  }
  if (host.kernelCmdline !== null) {
    Deno.writeTextFileSync(`${out}/cmdline`, `${sharedCmdline(host.kernelCmdline)}\n`);
  }
  // A snapshot of a tree that did not know its host's use stays unknowing.
  if (host.hostUse !== null) {
    Deno.writeTextFileSync(`${out}/host_use.json`, `${JSON.stringify(host.hostUse, null, 2)}\n`);
  }
  copyGroupListings(reader, root, out);
  copyHostFacts(facts, root, out);
  copyInputDevices(facts, root, out);
  copyProcFacts(facts, procRoot, out);
  return { out, devices: host.devices.length, groups: host.groups.length, headerOnly };
}

/**
 * Writes one device's directory under `out` (its attributes, config space, driver, IOMMU group
 * and SR-IOV links), at its place `found` (devicePlace) where that can be made; whether
 * only its 64-byte header could be read.
 */
function writeDevice(
  device: PciDevice,
  found: string | null,
  options: {
    root: string;
    out: string;
    reader: SysfsReader;
    facts: SysfsReader;
    live: boolean;
    holders: ReadonlyMap<PciAddress, GpuHolder[]>;
  },
): boolean {
  const { root, out, reader, facts, live, holders } = options;
  const devicesDir = `${out}/bus/pci/devices`;
  const from = `${root}/bus/pci/devices/${device.address}`;
  const to = `${devicesDir}/${device.address}`;
  // Where sysfs keeps the device (`found`), below the PCI functions it hangs under, which
  // discovery reads from the entry's link (a VMD controller above an NVMe drive); a directory
  // where it has none. A place through a link written before (another device's `virtfn0` to
  // `../..`) would put the device elsewhere, its links' `../` counted from the wrong depth, and
  // files outside `out`.
  const place = found !== null && makeDirectoriesBelow(out, found) ? found : null;
  if (place === null) Deno.mkdirSync(to);
  else Deno.symlinkSync(`../../../${place}`, to);
  // The links below lead from where the directory is, as the kernel's do.
  const up = "../".repeat((place ?? "bus/pci/devices/x").split("/").length);
  let uevent = false;
  for (const name of ATTRIBUTES) {
    const bytes = reader.readBytes(`${from}/${name}`, 65536);
    if (bytes !== null) Deno.writeFileSync(`${to}/${name}`, bytes);
    if (name === "uevent") uevent = bytes !== null;
  }
  // Discovery read it a moment ago: one removed since would be written as a directory of
  // nothing, read back from the snapshot as an ffff:ffff device still in its group.
  if (!uevent && (live || entryGone(reader, from))) {
    throw new HostChangedError(root, { appeared: [], vanished: [device.address] });
  }
  // As much config space as this process may read: 4096 bytes as root, 64 otherwise, so the
  // snapshot shows lspci exactly the capabilities the live host showed.
  const config = reader.readBytes(`${from}/config`, 4096);
  if (config !== null) Deno.writeFileSync(`${to}/config`, config);
  copyDisplayFacts({
    reader: facts,
    from,
    to,
    out,
    holders: holders.get(device.address) ?? [],
  });
  if (device.modules.length > 0) {
    Deno.writeTextFileSync(`${to}/modules`, `${device.modules.join(",")}\n`);
  }
  // A captured tree's uevent may name any "driver" (`../../../../x`, 300 letters): only a name
  // that can be one path component gets a directory under drivers/, else it would be made
  // outside `out`, or stop the snapshot ("File name too long"). The copied uevent still names it.
  if (device.driver !== null && isFileName(device.driver)) {
    copyDriverModule(facts, root, out, device.driver);
    Deno.symlinkSync(`${up}bus/pci/drivers/${device.driver}`, `${to}/driver`);
  }
  // The link as read, not the group discovery settled on: one naming a group whose listing
  // leaves the device out, or no group number, made a group of its own in the snapshot, whose
  // plan then left the device out of its group unrefused (see copyGroupListings).
  const group = reader.readLink(`${from}/iommu_group`);
  if (group !== null) {
    Deno.symlinkSync(`${up}kernel/iommu_groups/${baseName(group)}`, `${to}/iommu_group`);
  }
  if (device.macAddress !== undefined) copyInterfaceMac(reader, from, to);
  if (device.physfn !== null) Deno.symlinkSync(`../${device.physfn}`, `${to}/physfn`);
  // Keep the kernel's virtfnN numbering: it is the VF index, not the sorted position. The
  // links the PF has, not `sriov_numvfs` counted up to: a damaged tree's 99999999999 there
  // meant as many lookups, a snapshot that never ended.
  for (const name of reader.listDir(from) ?? []) {
    const link = /^virtfn\d+$/.test(name) ? reader.readLink(`${from}/${name}`) : null;
    if (link !== null) Deno.symlinkSync(`../${baseName(link)}`, `${to}/${name}`);
  }
  return config !== null && config.length <= 64;
}

/**
 * Where the link of a `bus/pci/devices` entry leads, from the tree's root, when it has the
 * kernel's shape (`../../../devices/pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:06.0/ADDRESS`):
 * through a PCI root, each part one plain name, ending in `address`. The root may hang under
 * another device (an ARM host's PCIe controller, `devices/platform/soc/fe150000.pcie/pci0000:80`;
 * Hyper-V's VMBus): kept, the snapshot still shows a function on a root bus other than 00 as one
 * (`rootBus`). `null` for another link (one from elsewhere, with a `..` inside it) or none: the
 * snapshot then keeps the device as a directory in `bus/pci/devices`, and no PCI function or root
 * bus above it.
 */
function devicePlace(link: string | null, address: PciAddress): string | null {
  const place = /^\.\.\/\.\.\/\.\.\/(devices\/(?:[^/]+\/)*?pci[0-9a-f]{4,8}:[0-9a-f]{2}\/.+)$/i
    .exec(link ?? "")?.[1];
  const plain = place?.split("/").every((part) =>
    /^[\w.:+-]{1,255}$/.test(part) && !/^\.\.?$/.test(part)
  );
  return plain && place!.endsWith(`/${address}`) ? place! : null;
}

/**
 * A place for a function discovery read on a root bus ({@link PciDevice.rootBus}) from a link the
 * snapshot does not follow (see {@link devicePlace}): right below its root
 * (`devices/pci0000:80/ADDRESS`), the rest of that link unknown. As a directory in
 * `bus/pci/devices` a function on a bus other than 00 was read back as on a bridge's bus, another
 * card's part. `null` for any other device.
 */
function rootBusPlace(device: PciDevice): string | null {
  return device.rootBus === true ? `devices/pci${busOf(device.address)}/${device.address}` : null;
}

/** How many directories down a device's place is; 0 for none (a directory in bus/pci/devices). */
function depth(place: string | null): number {
  return place === null ? 0 : place.split("/").length;
}

/**
 * Makes the directories of `path` below `out`, as `mkdir -p` does but through no link or file: a
 * snapshot's links lead anywhere in it, so a directory made through one is not where `path` says.
 * `false` (and nothing more made) at the first part that is not a directory of its own.
 */
function makeDirectoriesBelow(out: string, path: string): boolean {
  let at = out;
  for (const part of path.split("/")) {
    at = `${at}/${part}`;
    try {
      if (!Deno.lstatSync(at).isDirectory) return false;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      Deno.mkdirSync(at);
    }
  }
  return true;
}

/**
 * Each `kernel/iommu_groups/N/devices` listing as read, with the devices' own `iommu_group` links
 * (writeDevice) the evidence discovery settles groups from (`settleGroups`): a snapshot's group
 * data agrees or disagrees with itself as the tree's did. A PCI member's entry is a link to its
 * device, which discovery reads by name alone; a non-PCI one's (an ACPI or platform device) is a
 * link to its directory under `devices/BUS/`, with its `subsystem` and `driver` links, which
 * discovery judges it by (`readNonPciMember`): as a link to bus/pci/devices, where it is not, a
 * plan of the snapshot refused its group where one of the tree passed it.
 */
function copyGroupListings(reader: SysfsReader, root: string, out: string): void {
  for (const [name, members] of readGroupListings(reader, root)) {
    const dir = `${out}/kernel/iommu_groups/${name}`;
    Deno.mkdirSync(members === null ? dir : `${dir}/devices`, { recursive: true });
    const group = parseGroupNumber(name);
    for (const entry of members ?? []) {
      const other = group === null ? null : readNonPciMember(reader, root, group, entry);
      const device = other === null ? null : copyNonPciMember(other, out);
      Deno.symlinkSync(
        `../../../../${device ?? `bus/pci/devices/${entry}`}`,
        `${dir}/devices/${entry}`,
      );
    }
  }
}

/**
 * Writes a non-PCI group member's directory (`devices/BUS/NAME`, its `subsystem` and `driver`
 * links) under `out` and returns its path there, or `null` when a name could not name a file.
 */
function copyNonPciMember(member: NonPciMember, out: string): string | null {
  const { name, bus, driver } = member;
  if (!isFileName(name) || !isFileName(bus) || (driver !== null && !isFileName(driver))) {
    return null;
  }
  const device = `devices/${bus}/${name}`;
  // Listed by two groups (a damaged tree): written once, both listings link to it.
  if (pathExists(`${out}/${device}`)) return device;
  Deno.mkdirSync(`${out}/${device}`, { recursive: true });
  Deno.symlinkSync(`../../../bus/${bus}`, `${out}/${device}/subsystem`);
  if (driver !== null) {
    Deno.symlinkSync(`../../../bus/${bus}/drivers/${driver}`, `${out}/${device}/driver`);
  }
  return device;
}

/** Whether `name` can name a file: not `.` or `..`, no `/` or NUL, 1 to 255 bytes (`NAME_MAX`). */
function isFileName(name: string): boolean {
  return /^(?!\.\.?$)[^/\0]+$/.test(name) && new TextEncoder().encode(name).length <= 255;
}

/** Writes `text` at `path` under `out`, making its directories. */
function put(out: string, path: string, data: string | Uint8Array): void {
  Deno.mkdirSync(`${out}/${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
  if (typeof data === "string") Deno.writeTextFileSync(`${out}/${path}`, data);
  else Deno.writeFileSync(`${out}/${path}`, data);
}

/**
 * An SR-IOV physical function's network interface and its MAC (`net/IFACE/address`), which
 * `mac: auto` derives from where the PF has no serial: a plan of the snapshot gives the MACs a
 * plan on the host gives.
 */
function copyInterfaceMac(reader: SysfsReader, from: string, to: string): void {
  const name = firstInterface(reader, from);
  const address = name === undefined ? null : reader.readBytes(`${from}/net/${name}/address`, 64);
  if (address === null) return;
  Deno.mkdirSync(`${to}/net/${name}`, { recursive: true });
  Deno.writeFileSync(`${to}/net/${name}/address`, address);
}

/** The driver's directory, and its `module` link when it has one (`nvidia` behind `nvidia`). */
function copyDriverModule(reader: SysfsReader, root: string, out: string, driver: string): void {
  const dir = `${out}/bus/pci/drivers/${driver}`;
  Deno.mkdirSync(dir, { recursive: true });
  const link = reader.readLink(`${root}/bus/pci/drivers/${driver}/module`);
  const name = link === null ? "" : baseName(link);
  // Only the name is read (`baseName`): the link may dangle in the snapshot. Several devices
  // share a driver, so the first writes it.
  if (/^[\w-]+$/.test(name) && reader.readLink(`${dir}/module`) === null) {
    Deno.symlinkSync(`../../../../module/${name}`, `${dir}/module`);
  }
}

/**
 * A device's DRM card and render nodes and framebuffers (directories: their names are the
 * facts), and the processes holding its nodes open (`gpuHolders`) as their command name and one
 * `fd` link per node, under `proc/`.
 */
function copyDisplayFacts(
  { reader, from, to, out, holders }: {
    reader: SysfsReader;
    from: string;
    to: string;
    out: string;
    holders: readonly GpuHolder[];
  },
): void {
  for (const node of reader.listDir(`${from}/drm`) ?? []) {
    if (/^(card|renderD)\d+$/.test(node)) Deno.mkdirSync(`${to}/drm/${node}`, { recursive: true });
  }
  for (const holder of holders) {
    // A process holding two GPUs open is met twice: its descriptors are numbered on.
    const fds = `${out}/proc/${holder.pid}/fd`;
    Deno.mkdirSync(fds, { recursive: true });
    const taken = [...Deno.readDirSync(fds)].length;
    if (taken === 0 && holder.command !== "") {
      put(out, `proc/${holder.pid}/comm`, `${holder.command}\n`);
    }
    holder.nodes.forEach((node, i) => Deno.symlinkSync(node, `${fds}/${taken + i}`));
  }
  for (const fb of reader.listDir(`${from}/graphics`) ?? []) {
    if (/^fb\d+$/.test(fb)) Deno.mkdirSync(`${to}/graphics/${fb}`, { recursive: true });
  }
}

/**
 * The small host-wide files the pre-flight reads, each with the shape it must have: anything
 * else in their place (a tree whose file links elsewhere) is not copied.
 */
const HOST_FILES: readonly [RegExp, RegExp][] = [
  [/^class\/vtconsole\/vtcon\d+\/name$/, /^[\x20-\x7e]{0,80}\n?$/],
  [/^class\/vtconsole\/vtcon\d+\/bind$/, /^[01]\n?$/],
  [/^devices\/system\/node\/node\d+\/cpulist$/, /^[\d,\-]*\n?$/],
  [/^module\/apparmor\/parameters\/enabled$/, /^[YN]\n?$/],
  [/^fs\/selinux\/enforce$/, /^[01]\n?$/],
];

/** The bound consoles, the NUMA nodes' CPU lists and the AppArmor and SELinux switches. */
function copyHostFacts(reader: SysfsReader, root: string, out: string): void {
  const copy = (path: string) => {
    const text = reader.readText(`${root}/${path}`);
    const shape = HOST_FILES.find(([name]) => name.test(path))?.[1];
    if (text !== null && shape?.test(text)) put(out, path, text);
  };
  for (const con of reader.listDir(`${root}/class/vtconsole`) ?? []) {
    if (!/^vtcon\d+$/.test(con)) continue;
    copy(`class/vtconsole/${con}/name`);
    copy(`class/vtconsole/${con}/bind`);
  }
  for (const node of reader.listDir(`${root}/devices/system/node`) ?? []) {
    if (/^node\d+$/.test(node)) copy(`devices/system/node/${node}/cpulist`);
  }
  copy("module/apparmor/parameters/enabled");
  copy("fs/selinux/enforce");
}

/**
 * The host's input devices that hang under a PCI function (`class/input/inputN`, a keyboard on a
 * USB controller), as the link the kernel made and the device's `name`: a plan of the snapshot
 * warns (`host-input`) as a plan on the host does. A link of another shape (an absolute one, a
 * `..` inside it), whose device discovery does not read, becomes one of the kernel's shape under
 * the same functions ({@link kernelInputLink}), without a name; nor is a name copied that is not
 * one printable line or that lies outside the tree ({@link readInputName}).
 */
function copyInputDevices(reader: SysfsReader, root: string, out: string): void {
  for (const { entry, link } of inputLinks(reader, root)) {
    const functions = pciFunctionsHolding(link);
    if (functions.length === 0) continue;
    const known = inputDevicePath(link);
    const written = known === null ? kernelInputLink(entry, functions) : link;
    const device = inputDevicePath(written)!;
    Deno.mkdirSync(`${out}/${device}`, { recursive: true });
    Deno.mkdirSync(`${out}/class/input`, { recursive: true });
    Deno.symlinkSync(written, `${out}/class/input/${entry}`);
    const name = known === null ? null : readInputName(reader, root, known);
    if (name !== null && /^[\x20-\x7e]{1,128}\n?$/.test(name)) put(out, `${device}/name`, name);
  }
}

/**
 * A `class/input` link of the kernel's shape under the PCI functions `functions` (as
 * {@link pciFunctionsHolding} gives them: the one the device hangs under, then each above it that
 * hosts a PCI domain), each below a PCI root of its own bus; the bridges between are not known.
 */
function kernelInputLink(entry: string, functions: readonly PciAddress[]): string {
  const path = [...functions].reverse().flatMap((address) => [
    `pci${busOf(address)}`,
    address,
  ]);
  return `../../devices/${path.join("/")}/${entry}`;
}

/**
 * A `/proc` text file whole, `null` when missing or not regular; refused past its limit (it was
 * cut at 1 MiB): a table cut short would be captured as the host's, and read later as all it
 * holds.
 */
function readProcText(reader: SysfsReader, path: string): string | null {
  return readWholeText(reader, path);
}

/** `proc/iomem` without the kernel image's ranges, `proc/modules` without addresses, `proc/cpuinfo`'s vendor alone. */
function copyProcFacts(reader: SysfsReader, procRoot: string, out: string): void {
  const iomem = readProcText(reader, `${procRoot}/iomem`);
  if (iomem !== null) {
    // Its ranges and their names; a line of any other shape is not something iomem writes.
    // Without where the kernel image lies (`Kernel code`, `Kernel data`, ...): that defeats KASLR
    // as the modules' addresses do, and the pre-flight reads only PCI ranges and framebuffers.
    const ranges = iomem.split("\n").filter((l) =>
      /^ *[0-9a-f]+-[0-9a-f]+ : [\x20-\x7e]*$/i.test(l) && !/ : Kernel /.test(l)
    );
    put(out, "proc/iomem", ranges.map((l) => `${l}\n`).join(""));
  }
  const modules = readProcText(reader, `${procRoot}/modules`);
  if (modules !== null) {
    // Name, size, reference count, dependents and state; the load address becomes zero, as an
    // unprivileged read shows it.
    const lines = modules.split("\n").flatMap((line) => {
      const fields = line.trim().split(/\s+/);
      return fields.length >= 3 && /^\w+$/.test(fields[0]!) && /^\d+$/.test(fields[2]!)
        ? [`${fields.slice(0, 5).join(" ")} 0x0000000000000000\n`]
        : [];
    });
    put(out, "proc/modules", lines.join(""));
  }
  const cpuinfo = readProcText(reader, `${procRoot}/cpuinfo`);
  const vendor = cpuinfo === null ? undefined : /^vendor_id\s*:\s*(\S+)/m.exec(cpuinfo)?.[1];
  if (vendor !== undefined) put(out, "proc/cpuinfo", `processor\t: 0\nvendor_id\t: ${vendor}\n`);
}
