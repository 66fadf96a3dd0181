/**
 * Host discovery: a sysfs-shaped tree (the real `/sys` or a captured one) read through an
 * injected {@link SysfsReader}, plus one `lspci -nnkD` run for what sysfs lacks. Sysfs is the
 * truth for IDs, class, driver, group, NUMA node, SR-IOV links, `boot_vga` and the physical slot;
 * the `config` file gives FLR and the serial number (`lib/pci/config_space.ts`); lspci adds only the
 * names and kernel modules.
 *
 * @module
 */

import type { GroupInconsistency, HostTopology, PciAddress, PciDevice } from "./types.ts";
import { canonicalPciAddress, comparePciAddress, slotOf } from "../pci/address.ts";
import {
  baseName,
  checkCapturedTree,
  denoFsReader,
  isLinkLoop,
  readAttribute,
  readNonPciMember,
  type SysfsReader,
} from "./sysfs.ts";
import { groupDevices, parseGroupNumber, readGroupListings, settleGroups } from "./iommu_groups.ts";
import {
  commandLspciRunner,
  lspciArgs,
  LspciError,
  type LspciRecord,
  type LspciRunner,
  parseLspci,
  pciIdsVendorNames,
  splitVendorName,
  type VendorNames,
} from "./lspci.ts";
import {
  parseRawDevice,
  type RawSysfsDevice,
  readHostUse,
  readPhysicalSlots,
  readRawDevice,
} from "./sysfs_device.ts";

/** Options of {@link discoverHost}. */
export interface DiscoverOptions {
  /** The sysfs root: `/sys` (default) or a captured tree with the same shape. */
  root?: string;
  /** How files are read. Default: plain Deno file access (pass `libcSysfsReader()` for `/sys`). */
  reader?: SysfsReader;
  /**
   * How lspci runs; `null` skips it: names stay `null` and modules `[]` (FLR and serial numbers
   * come from each function's configuration space).
   */
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
}

/** Raised when the sysfs root has no PCI devices directory at all. */
export class SysfsRootError extends Error {
  /** The error's name. */
  override name = "SysfsRootError";
  /** The root that was given. */
  readonly root: string;
  /** Whether `root` itself is no directory (a mistyped path), rather than one without PCI devices. */
  readonly missing: boolean;
  /** Whether `root` itself is a loop of symbolic links (and so no directory either). */
  readonly loop: boolean;
  /**
   * Builds the error for the `root` that has no `bus/pci/devices`; `missing` when `root` is no
   * directory at all, so a mistyped path is not taken for a tree that lacks its PCI devices, and
   * `loop` when it is a loop of symbolic links, which no entry under it is to be named as.
   */
  constructor(
    root: string,
    { missing = false, loop = false }: { missing?: boolean; loop?: boolean } = {},
  ) {
    super(
      `Not a sysfs tree: "${root}": ${
        loop
          ? "a loop of symbolic links"
          : missing
          ? "no such directory"
          : "no bus/pci/devices directory"
      }`,
    );
    this.root = root;
    this.missing = missing || loop;
    this.loop = loop;
  }
}

/**
 * The {@link SysfsRootError} for `root`, read through `reader`, which has no `bus/pci/devices`:
 * a loop of symbolic links, no directory, or one without PCI devices.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.symlinkSync("loop", `${dir}/loop`);
 * assertEquals(sysfsRootError(`${dir}/loop`, denoFsReader()).loop, true);
 * assertEquals(sysfsRootError(dir, denoFsReader()).missing, false);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function sysfsRootError(
  root: string,
  reader: Pick<SysfsReader, "listDir">,
): SysfsRootError {
  if (rootIsLinkLoop(root, reader)) return new SysfsRootError(root, { loop: true });
  return new SysfsRootError(root, { missing: reader.listDir(root) === null });
}

/** Whether listing `root` fails on a loop of symbolic links; other failures are left to reads. */
function rootIsLinkLoop(root: string, reader: Pick<SysfsReader, "listDir">): boolean {
  try {
    reader.listDir(root);
    return false;
  } catch (error) {
    return isLinkLoop(error);
  }
}

/**
 * Raised when the host's PCI functions kept changing while discovery read them (a hot-plug, a
 * `remove` or `rescan`, SR-IOV VFs created or destroyed): every attempt saw functions appear or
 * vanish between listing `bus/pci/devices` and reading them, so no consistent view exists to plan
 * from. Running again once the host settles is the fix.
 */
export class HostChangedError extends Error {
  /** The error's name. */
  override name = "HostChangedError";
  /** Functions that appeared during the last attempt, sorted. */
  readonly appeared: PciAddress[];
  /** Functions that vanished during the last attempt, sorted. */
  readonly vanished: PciAddress[];
  /** Builds the error for the `root` read and what changed during the last attempt. */
  constructor(
    root: string,
    change: { appeared: PciAddress[]; vanished: PciAddress[] },
    options?: ErrorOptions,
  ) {
    const what = [
      ...change.appeared.map((a) => `${a} appeared`),
      ...change.vanished.map((a) => `${a} vanished`),
    ];
    super(
      `The PCI devices of "${root}" changed while they were read (${
        what.join(", ")
      }): run again once the host's devices settle`,
      options,
    );
    this.appeared = change.appeared;
    this.vanished = change.vanished;
  }
}

/**
 * Discovery reads sysfs this many times at most when functions appear or vanish during a read,
 * before it gives up with {@link HostChangedError}: a single hot-plug or VF change settles within
 * one more read; a host that keeps changing has no view to plan from.
 */
const READ_ATTEMPTS = 3;

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
  try {
    return await discover(options);
  } catch (error) {
    // Deno's message says to run with --allow-all; a script needs only libc's reader, which
    // lib/ cannot default to (it binds no C).
    if (
      options.reader !== undefined || !(error instanceof Deno.errors.NotCapable) ||
      !/ access to "\/(sys|proc)\//.test(error.message)
    ) {
      throw error;
    }
    throw new Deno.errors.NotCapable(
      `${error.message}: Deno's file API, which discoverHost reads with unless given a reader, ` +
        "cannot read /sys or /proc without it; pass `reader: libcSysfsReader()` " +
        "(from passthrough's ./ffi), which needs --allow-ffi only",
      { cause: error },
    );
  }
}

/** What {@link discoverHost} does, its errors as they come. */
async function discover(options: DiscoverOptions): Promise<HostTopology> {
  const root = (options.root ?? "/sys").replace(/(.)\/+$/, "$1");
  const reader = options.reader ?? denoFsReader();
  const live = options.live ?? root === "/sys";
  const runner = options.lspci === undefined ? commandLspciRunner() : options.lspci;
  // A root that is a loop is said to be one, as a missing root is, before an entry under it is
  // named as the loop by the checks below.
  if (!live && rootIsLinkLoop(root, reader)) throw new SysfsRootError(root, { loop: true });
  // Before lspci or the reader opens anything: a FIFO or device planted in a tree blocks them.
  if (!live && runner !== null) checkCapturedTree(root, reader);
  if (!live) checkEntryNames(reader, root);
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
  const { devices, groupInconsistencies, attempts } = await readSettledDevices(reader, {
    root,
    live,
    pause,
  });
  // A change seen by sysfs was likely seen by lspci too, which ran meanwhile: run it again over
  // the settled host, so names and modules describe the functions that were read.
  const lspciRun = attempts > 1 && runner !== null ? runner(lspciArgs(root)) : lspciText;
  lspciRun.catch(() => {});
  const vendorNames = options.vendorNames ?? pciIdsVendorNames();
  // Sysfs has named every vendor: look their names up (reading pci.ids) while lspci finishes.
  for (const device of devices) vendorNames(device.vendorId);
  const settle = { runner, root, reader, devices, changed: attempts > 1 };
  let lspci = parseLspci((await settledLspci(lspciRun, settle)) ?? "");
  // lspci lists the host as it starts, sysfs just after: a function added between the two has
  // no record (no names, no kernel modules, which a `driver` rule of a vfio-bound card needs).
  // lspci over a host lists every function sysfs does, so one run more, over the host as read
  // (not for one that listed none: that is no race, and a second run would say no more).
  const missed = lspci.size > 0 && devices.some((d) => !lspci.has(d.address));
  if (runner !== null && lspciRun === lspciText && missed) {
    const again = runner(lspciArgs(root));
    again.catch(() => {});
    lspci = parseLspci((await settledLspci(again, settle)) ?? "");
  }
  for (const device of devices) {
    const record = lspci.get(device.address);
    if (record !== undefined) mergeLspci(device, record, vendorNames);
  }
  const groups = groupDevices(devices);
  const kernelCmdline = readAttribute(reader, live ? "/proc/cmdline" : `${root}/cmdline`);
  const hostUse = readHostUse(reader, { root, live, devices });
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

/** The devices read from sysfs, and where its group data disagrees. */
interface SysfsDevices {
  devices: PciDevice[];
  groupInconsistencies: GroupInconsistency[];
}

/**
 * lspci's output once it finished without tripping over a function that vanished under it:
 * pcilib fails the whole run (`Cannot open .../bus/pci/devices/0000:01:00.1/config`) when a
 * function it listed is gone before it opens its files. Such a run is made again, up to
 * {@link READ_ATTEMPTS} runs in all; after the last, {@link HostChangedError} when the function
 * named is gone, is not among the functions sysfs read, or sysfs saw the host change (`changed`);
 * otherwise (a captured tree missing a file) lspci's own error.
 */
async function settledLspci(
  first: Promise<string | null>,
  { runner, root, reader, devices, changed }: {
    runner: LspciRunner | null;
    root: string;
    reader: SysfsReader;
    devices: readonly PciDevice[];
    changed: boolean;
  },
): Promise<string | null> {
  let run = first;
  for (let attempt = 1;; attempt++) {
    try {
      return await run;
    } catch (error) {
      const name = runner === null ? null : lspciMissingDevice(error);
      if (name === null) throw error;
      if (attempt < READ_ATTEMPTS) {
        run = runner!(lspciArgs(root));
        continue;
      }
      const address = canonicalPciAddress(name) ?? name;
      const gone = changed || !devices.some((d) => d.address === address) ||
        entryGone(reader, `${root}/bus/pci/devices/${name}`);
      if (!gone) throw error;
      throw new HostChangedError(root, { appeared: [], vanished: [address] }, { cause: error });
    }
  }
}

/** The function whose files a failed lspci run could not open (pcilib's complaint), or `null`. */
function lspciMissingDevice(error: unknown): string | null {
  if (!(error instanceof LspciError)) return null;
  return /Cannot open \S*\/bus\/pci\/devices\/([^/\s]+)\//.exec(error.message)?.[1] ?? null;
}

/**
 * {@link readDevices} until one read saw the same functions from its listing of
 * `bus/pci/devices` to its end: sysfs is no snapshot, and a function that vanished after the
 * listing would be read as an `ffff:ffff` device with no group, one that appeared would be missing
 * while its group listing names it. Throws {@link HostChangedError} after
 * {@link READ_ATTEMPTS} reads that each saw a change.
 */
async function readSettledDevices(
  reader: SysfsReader,
  { root, live, pause }: { root: string; live: boolean; pause: (() => Promise<void>) | undefined },
): Promise<SysfsDevices & { attempts: number }> {
  for (let attempt = 1;; attempt++) {
    const read = await readDevices(reader, root, { live, pause });
    if (!("changed" in read)) return { ...read, attempts: attempt };
    if (attempt === READ_ATTEMPTS) throw new HostChangedError(root, read.changed);
  }
}

/**
 * Reads every PCI function from sysfs alone (no lspci): IDs, class, driver, group, NUMA node,
 * SR-IOV links, `boot_vga`, the bridge flag, physical slot, and FLR and serial number from the
 * configuration space. Sorted by address. Calls `pause` now and then so other work (lspci's pipe)
 * runs. What changed instead when a function vanished while it was read (its `uevent`, which the
 * live kernel always writes, unreadable), or when listing `bus/pci/devices` again at the end names
 * other functions.
 */
async function readDevices(
  reader: SysfsReader,
  root: string,
  { live, pause }: { live: boolean; pause: (() => Promise<void>) | undefined },
): Promise<SysfsDevices | { changed: { appeared: PciAddress[]; vanished: PciAddress[] } }> {
  const names = listSysfsDevices(reader, root);
  const raw: RawSysfsDevice[] = [];
  const vanished = new Set<string>();
  for (let i = 0; i < names.length; i++) {
    if (pause !== undefined && i % 128 === 127) await pause();
    const entry = readRawDevice(reader, root, names[i]!);
    if (entry.uevent === null && (live || entryGone(reader, entry.path))) vanished.add(entry.name);
    raw.push(entry);
  }
  const settled = vanished.size === 0 ? finishDevices(reader, root, raw) : null;
  // Listed again after everything else is read (group listings, SR-IOV, slots): a function added
  // or removed at any point of the read shows here.
  const now = new Set(listSysfsDevices(reader, root));
  const before = new Set(names);
  const appeared = [...now].filter((name) => !before.has(name));
  for (const name of names) if (!now.has(name)) vanished.add(name);
  if (settled !== null && appeared.length === 0 && vanished.size === 0) return settled;
  const addresses = (list: Iterable<string>) =>
    [...list].map((name) => canonicalPciAddress(name) ?? name).sort(comparePciAddress);
  return { changed: { appeared: addresses(appeared), vanished: addresses(vanished) } };
}

/**
 * Whether nothing is at `path` any more: no directory, no link (a dangling one is a damaged tree,
 * not a change), no file (a damaged tree's entry). The live kernel writes every device's
 * `uevent`, so there a missing one says enough; a captured tree may hold none.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const dir = Deno.makeTempDirSync();
 * assertEquals([entryGone(denoFsReader(), dir), entryGone(denoFsReader(), `${dir}/x`)], [false, true]);
 * Deno.removeSync(dir);
 * ```
 */
export function entryGone(reader: SysfsReader, path: string): boolean {
  return reader.listDir(path) === null && reader.readLink(path) === null &&
    reader.readText(path) === null;
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
    ancestors: (address) => ancestorsOf(names.get(address)?.entryLink ?? null),
    other: (group, name) => readNonPciMember(reader, root, group, name),
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
 * The PCI ancestors of a device entry, nearest first, from the link the kernel makes it
 * (`../../../devices/pci0000:00/0000:00:03.1/0000:0b:00.0`, read with the entry); `[]` for a
 * directory.
 */
function ancestorsOf(link: string | null): PciAddress[] {
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

/**
 * Refuses a captured tree's `bus/pci/devices` entry that names a function otherwise than the
 * kernel does (`0000:0D:00.0`, `0d:00.0`, `foo`), unless it is a second name of an entry so named
 * (reported as two entries): lspci reads a function at the name it makes of its address
 * (`Cannot open .../0000:0d:00.0/config`, taken for a function that vanished), and cannot parse
 * one without a domain or without an address; apply's re-check and the start guard read it there
 * too.
 */
function checkEntryNames(reader: SysfsReader, root: string): void {
  const names = listSysfsDevices(reader, root);
  const listed = new Set(names);
  for (const name of names) {
    const address = canonicalPciAddress(name);
    if (address === name) continue;
    if (address !== null && name.split(":").length === 3 && listed.has(address)) continue;
    throw new Error(
      `Not a sysfs tree entry: "${root}/bus/pci/devices/${name}": the kernel names each PCI function by its address with its domain, in lower-case hex ("${
        address ?? "0000:01:00.0"
      }"), where lspci and passthrough read it: rename the entry, or capture the tree again with 'passthrough snapshot'`,
    );
  }
}

function listSysfsDevices(reader: SysfsReader, root: string): string[] {
  const names = reader.listDir(`${root}/bus/pci/devices`);
  if (names === null) throw sysfsRootError(root, reader);
  return names;
}

/**
 * A physical function's `sriov_totalvfs` and `sriov_numvfs`, each only where its file holds a
 * count (the capability's fields are 16 bits): nothing for a device without SR-IOV.
 */
function readSriov(
  reader: SysfsReader,
  path: string,
): Pick<PciDevice, "sriovTotalVfs" | "sriovNumVfs" | "macAddress"> {
  const total = vfCount(reader.readText(`${path}/sriov_totalvfs`));
  if (total === null) return {};
  const enabled = vfCount(reader.readText(`${path}/sriov_numvfs`));
  const mac = interfaceMac(reader, path);
  return {
    sriovTotalVfs: total,
    ...(enabled === null ? {} : { sriovNumVfs: enabled }),
    ...(mac === null ? {} : { macAddress: mac }),
  };
}

/**
 * The MAC of a device's network interface (the first by name, `net/IFACE/address`), or `null`:
 * no interface (another driver, or none), or no unicast MAC there.
 */
function interfaceMac(reader: SysfsReader, path: string): string | null {
  const name = firstInterface(reader, path);
  if (name === undefined) return null;
  const mac = readAttribute(reader, `${path}/net/${name}/address`)?.toLowerCase() ?? "";
  const unicast = /^[0-9a-f][02468ace](:[0-9a-f]{2}){5}$/.test(mac);
  return unicast && mac !== "00:00:00:00:00:00" ? mac : null;
}

/** The name of a device's first network interface by name (`net/IFACE`), if it has one. */
export function firstInterface(reader: SysfsReader, path: string): string | undefined {
  return reader.listDir(`${path}/net`)?.sort()[0];
}

function vfCount(text: string | null): number | null {
  const trimmed = text?.trim() ?? "";
  return /^[0-9]{1,5}$/.test(trimmed) && Number(trimmed) <= 0xffff ? Number(trimmed) : null;
}

/** Fills physical slot names from sysfs (`lspci -v` would print them, `-nnk` does not). */
function fillSlots(reader: SysfsReader, root: string, devices: PciDevice[]): void {
  const slots = readPhysicalSlots(reader, root);
  if (slots.size === 0) return;
  for (const device of devices) {
    device.physicalSlot = slots.get(slotOf(device.address)) ?? null;
  }
}
/** Fills what sysfs lacks from lspci's record; sysfs values are never overwritten. */
function mergeLspci(device: PciDevice, record: LspciRecord, vendorNames: VendorNames): void {
  const split = splitVendorName(record.vendorDeviceName, vendorNames(device.vendorId));
  device.vendorName = split.vendorName;
  device.deviceName = split.deviceName;
  device.className = record.className;
  if (record.modules.length > 0) device.modules = record.modules;
}
