/**
 * The host facts the pre-flight findings judge (`lib/plan/preflight.ts`, `doctor`): firmware
 * framebuffers in `/proc/iomem`, module reference counts in `/proc/modules`, a device's
 * `reset_method`, the processes holding a GPU open and the console, the CPU list of each NUMA
 * node, and what QEMU would find at a ROM file's path. Read lazily and at most once per run each:
 * the planner asks only about the devices it plans, so a plan without a GPU reads neither `/proc`
 * file.
 *
 * A live host is read at `/sys` and `/proc`; a captured tree keeps the same files under its own
 * root and `ROOT/proc` (the tree builder writes them, `lib/testing/host_tree.ts`).
 *
 * @module
 */

import type { PciAddress, PciDevice } from "./types.ts";
import {
  baseName,
  denoFsReader,
  isLinkLoop,
  readAttribute,
  readWholeText,
  specialFileKind,
  type SysfsReader,
} from "./sysfs.ts";
import { canonicalPciAddress } from "../pci/address.ts";
import {
  blockDeviceControllers,
  charDeviceControllers,
  type GpuHolder,
  gpuHolders,
  hostInputDevices,
  mdevControllers,
  nicsUnder,
  readUsbDevices,
  scsiHostControllers,
  usbDeviceControllers,
} from "./sysfs_device.ts";
import type { UsbSource } from "../domain/usb_source.ts";
import { processIds } from "./open_files.ts";

/** One line of `/proc/modules`. */
export interface KernelModule {
  /** The module's name (`nvidia`). */
  name: string;
  /** Its reference count: modules depending on it plus open files and other holders. */
  refcount: number;
  /** The loaded modules that depend on it (`nvidia_modeset`, `nvidia_uvm`). */
  holders: string[];
}

/** What QEMU would find at a `rom.file` path, judged without reading more than its first bytes. */
export interface RomFileFacts {
  /**
   * `missing`, `special` (FIFO, device, directory, socket), `loop` (a symbolic link loop),
   * `file`, or `unchecked` when passthrough itself may not look (then nothing is judged).
   */
  kind: "missing" | "special" | "loop" | "file" | "unchecked";
  /** For `special`: what it is (`a FIFO`); for `unchecked`: why. */
  detail?: string;
  /** For `file`: its size in bytes. */
  size?: number;
  /** For `file`: the first two bytes (`0x55 0xAA` for an option ROM). */
  head?: Uint8Array;
  /** For `file`: permission bits, owner and group. */
  mode?: number;
  /** Owner user ID. */
  uid?: number;
  /** Owner group ID. */
  gid?: number;
  /** Directories on the way that QEMU's user cannot search (no `x` for it), outermost first. */
  closedDirs?: string[];
  /** The SELinux type of its label (`user_home_t`), or `null` when unknown. */
  selinuxType?: string | null;
  /**
   * For `file`: the path with every link resolved, which is the one AppArmor judges (a link in
   * `/usr/share/vgabios/` to a file elsewhere is denied; a link to it is allowed).
   */
  realPath?: string;
}

/** QEMU's system user, as `/etc/passwd` has it. */
export interface QemuUser {
  /** `libvirt-qemu` (Debian) or `qemu` (Fedora). */
  name: string;
  /** User ID. */
  uid: number;
  /** Primary group ID. */
  gid: number;
}

/** The facts pre-flight findings read; every method is answered once and remembered. */
export interface HostFacts {
  /**
   * The device's `reset_method` list (`["flr", "bus"]`); `null` when it has no such file (a
   * kernel before 5.15, or a device without any reset) or it is empty.
   */
  resetMethods(address: PciAddress): string[] | null;
  /**
   * Firmware framebuffers (`efifb`, `simpledrm`, `BOOTFB`, `vesafb`) holding a PCI device's
   * memory, by device: nested under its BAR in `/proc/iomem`, or overlapping it. `null` when
   * `/proc/iomem` is unreadable.
   */
  firmwareFramebuffers(): Map<PciAddress, string[]> | null;
  /** `/proc/modules` by module name; `null` when unreadable. */
  modules(): Map<string, KernelModule> | null;
  /** The module behind a driver (`nvidia` for `nvidia`, `snd_hda_intel` for `snd_hda_intel`). */
  moduleOfDriver(driver: string): string;
  /**
   * Processes with the device's DRM or NVIDIA nodes open (`gpuHolders`; as a user, only the
   * user's own processes are seen).
   */
  gpuHolders(address: PciAddress): GpuHolder[];
  /** Framebuffers of the device a bound framebuffer console (fbcon) draws on (`fb0`). */
  consoleFramebuffers(address: PciAddress): string[];
  /** The bound framebuffer console's entry in `class/vtconsole` (`vtcon1`), or `null`. */
  frameBufferConsole(): string | null;
  /**
   * The names of the host's input devices under the device (`Logitech USB Receiver`, see
   * `hostInputDevices`): its keyboard and mouse on a USB controller; none when there are none or
   * they cannot be read.
   */
  inputDevices(address: PciAddress): string[];
  /** CPU number to NUMA node; `null` when the host says nothing about its nodes. */
  cpuNodes(): Map<number, number> | null;
  /** A node's CPU list as the kernel writes it (`16-31`), or `null`. */
  nodeCpuList(node: number): string | null;
  /** What QEMU would find at `path`. */
  romFile(path: string): RomFileFacts;
  /** QEMU's user, or `null` when neither `libvirt-qemu` nor `qemu` exists. */
  qemuUser(): QemuUser | null;
  /** Whether AppArmor and SELinux (enforcing) confine QEMU on the host. */
  confinement(): { apparmor: boolean; selinux: boolean };
  /**
   * The PCI functions under the block device at `path` (a `<disk type='block'>` source such as
   * `/dev/disk/by-id/nvme-...`): its controller, or those of the disks a device-mapper or md
   * device stands on. `null` when unknown: only the live host's `/dev` can say. Throws when the
   * path or sysfs cannot be read.
   */
  blockDeviceControllers(path: string): PciAddress[] | null;
  /**
   * The USB controllers under the host USB devices a `<hostdev type='usb'>` source names (see
   * `usbDeviceControllers`). `null` when unknown: only the live host says what is plugged in.
   */
  usbDeviceControllers(source: UsbSource): PciAddress[] | null;
  /**
   * The PCI function of a SCSI host adapter (`scsi_host2`, a `<hostdev type='scsi'>` adapter).
   * `null` when unknown: only the live host's adapters say.
   */
  scsiHostControllers(adapter: string): PciAddress[] | null;
  /**
   * The parent PCI function of a mediated device (`<hostdev type='mdev'>`, by UUID). `null` when
   * unknown: only the live host's mediated devices say.
   */
  mdevControllers(uuid: string): PciAddress[] | null;
  /**
   * The PCI functions under a host network interface (`enp65s0f0`; a bond's or bridge's own
   * NICs). `null` when unknown: only the live host's interfaces say.
   */
  netDeviceControllers(name: string): PciAddress[] | null;
  /**
   * The PCI function under the character device at `path` (an evdev input's or a serial port's
   * `/dev/...`, see `charDeviceControllers`). `null` when unknown: only the live host's `/dev`
   * can say. Throws when the path or sysfs cannot be read.
   */
  charDeviceControllers(path: string): PciAddress[] | null;
}

/** Options of {@link readHostFacts}. */
export interface HostFactsOptions {
  /** Reads the sysfs root and the proc root. */
  reader: SysfsReader;
  /** `/sys`, or a captured tree's root. */
  sysRoot: string;
  /** `/proc`, or `ROOT/proc` for a captured tree. */
  procRoot: string;
  /** A file's SELinux label (`security.selinux`), when the host can say; default none. */
  readLabel?: (path: string) => string | null;
  /** The password database's text; default `/etc/passwd` read when first needed. */
  passwd?: () => string | null;
  /**
   * The host's `/dev`, on the live host only: block device paths name devices there. Absent (a
   * captured tree): which controller holds a block device, or a USB device, is unknown.
   */
  devRoot?: string;
}

/** The framebuffer names firmware and the early kernel register in `/proc/iomem`. */
const FIRMWARE_FB = /^(efifb|simpledrm|BOOTFB|vesafb|simple-framebuffer)/i;

/** A range of `/proc/iomem` with its nesting depth. */
interface IomemEntry {
  depth: number;
  start: bigint;
  end: bigint;
  name: string;
}

/**
 * The firmware framebuffers of an `/proc/iomem` text, by the PCI device whose memory they hold.
 * Nesting is read from the indentation, so it works on an unprivileged read, which shows every
 * address as zero.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const iomem = "e0000000-f01fffff : PCI Bus 0000:0b\n  e0000000-efffffff : 0000:0b:00.0\n" +
 *   "    e0000000-e07e8fff : BOOTFB\n";
 * assertEquals([...parseIomemFramebuffers(iomem)], [["0000:0b:00.0", ["BOOTFB"]]]);
 * ```
 */
export function parseIomemFramebuffers(text: string): Map<PciAddress, string[]> {
  const entries: IomemEntry[] = [];
  for (const line of text.split("\n")) {
    const m = /^( *)([0-9a-f]+)-([0-9a-f]+) : (.*)$/i.exec(line);
    if (m === null) continue;
    entries.push({
      depth: m[1]!.length,
      start: BigInt(`0x${m[2]}`),
      end: BigInt(`0x${m[3]}`),
      name: m[4]!.trim(),
    });
  }
  const out = new Map<PciAddress, string[]>();
  const add = (address: PciAddress, name: string) => {
    const names = out.get(address) ?? [];
    if (!names.includes(name)) names.push(name);
    out.set(address, names);
  };
  const stack: IomemEntry[] = [];
  for (const entry of entries) {
    while (stack.length > 0 && stack[stack.length - 1]!.depth >= entry.depth) stack.pop();
    if (FIRMWARE_FB.test(entry.name)) {
      const owner = [...stack].reverse().find((e) => pciName(e.name) !== null);
      if (owner !== undefined) add(pciName(owner.name)!, entry.name);
      else if (entry.end > 0n) {
        // Not nested (older kernels register efifb at the top): compare addresses instead.
        for (const bar of entries) {
          const address = pciName(bar.name);
          if (
            address !== null && bar.end > 0n && bar.start <= entry.end && entry.start <= bar.end
          ) {
            add(address, entry.name);
          }
        }
      }
    }
    stack.push(entry);
  }
  return out;
}

/** The canonical address when an iomem name is exactly a PCI address, else `null`. */
function pciName(name: string): PciAddress | null {
  return /^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i.test(name)
    ? canonicalPciAddress(name)
    : null;
}

/**
 * `/proc/modules` by module name.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const modules = parseProcModules(
 *   "nvidia 56807424 3 nvidia_uvm,nvidia_modeset, Live 0x0000000000000000\n",
 * );
 * assertEquals(modules.get("nvidia")?.holders, ["nvidia_uvm", "nvidia_modeset"]);
 * ```
 */
export function parseProcModules(text: string): Map<string, KernelModule> {
  const out = new Map<string, KernelModule>();
  for (const line of text.split("\n")) {
    const [name, , refcount, deps] = line.trim().split(/\s+/);
    if (name === undefined || name === "" || refcount === undefined) continue;
    const count = Number(refcount);
    out.set(name, {
      name,
      refcount: Number.isInteger(count) ? count : 0,
      holders: deps === undefined || deps === "-" ? [] : deps.split(",").filter((d) => d !== ""),
    });
  }
  return out;
}

/**
 * A kernel CPU list (`0-3,8,10-11`, with `^N` exclusions as libvirt's `cpuset` allows) as
 * numbers; `null` when malformed.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(parseCpuList("0-3,^2,8"), [0, 1, 3, 8]);
 * ```
 */
export function parseCpuList(text: string): number[] | null {
  const set = new Set<number>();
  const excluded = new Set<number>();
  for (const part of text.trim().split(",")) {
    if (part.trim() === "") continue;
    const m = /^\s*(\^)?(\d+)(?:-(\d+))?\s*$/.exec(part);
    if (m === null) return null;
    const from = Number(m[2]);
    const to = m[3] === undefined ? from : Number(m[3]);
    if (to < from || to - from > 65536) return null;
    for (let n = from; n <= to; n++) (m[1] ? excluded : set).add(n);
  }
  return [...set].filter((n) => !excluded.has(n)).sort((a, b) => a - b);
}

/** Memoizes a thunk. */
function once<T>(read: () => T): () => T {
  let done = false;
  let value: T;
  return () => {
    if (!done) {
      value = read();
      done = true;
    }
    return value;
  };
}

/** Memoizes a one-argument function. */
function byKey<K, T>(read: (key: K) => T): (key: K) => T {
  const cache = new Map<K, T>();
  return (key) => {
    if (!cache.has(key)) cache.set(key, read(key));
    return cache.get(key)!;
  };
}

/**
 * The facts of the host at `sysRoot`/`procRoot`, read lazily through `reader` (ROM files through
 * the local file system, since `rom.file` names a path where QEMU runs).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.mkdirSync(`${dir}/proc`);
 * Deno.writeTextFileSync(`${dir}/proc/modules`, "vendor_reset 16384 0 - Live 0x0\n");
 * const facts = readHostFacts({ reader: denoFsReader(), sysRoot: dir, procRoot: `${dir}/proc` });
 * assertEquals(facts.modules()?.has("vendor_reset"), true);
 * assertEquals(facts.resetMethods("0000:01:00.0"), null);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function readHostFacts(options: HostFactsOptions): HostFacts {
  const reader = unknownOnError(options.reader);
  return {
    ...driverFacts(reader, options),
    ...consoleFacts(reader, options),
    ...numaFacts(reader, options.sysRoot),
    ...qemuFacts(reader, options),
    ...controllerFacts(reader, options),
  };
}

/** Reset methods, firmware framebuffers, loaded modules, a driver's module. */
function driverFacts(
  reader: SysfsReader,
  { sysRoot, procRoot }: HostFactsOptions,
): Pick<HostFacts, "resetMethods" | "firmwareFramebuffers" | "modules" | "moduleOfDriver"> {
  return {
    resetMethods: byKey((address) => {
      const text = readAttribute(reader, `${sysRoot}/bus/pci/devices/${address}/reset_method`);
      const methods = text === null ? [] : text.split(/\s+/).filter((m) => m !== "");
      // The kernel hides the file when a device has no method, so an empty one (a FIFO read
      // without a writer, a damaged tree) says nothing.
      return methods.length === 0 ? null : methods;
    }),
    // Both tables read whole: a big server's outgrow an attribute's 64 KiB, and what a head
    // leaves out (the framebuffer in the highest BAR) would read as not there.
    firmwareFramebuffers: once(() => {
      const text = wholeOrUnknown(reader, `${procRoot}/iomem`);
      return text === null ? null : parseIomemFramebuffers(text);
    }),
    modules: once(() => {
      const text = wholeOrUnknown(reader, `${procRoot}/modules`);
      return text === null ? null : parseProcModules(text);
    }),
    moduleOfDriver: byKey((driver) => {
      const link = reader.readLink(`${sysRoot}/bus/pci/drivers/${driver}/module`);
      return link === null ? driver.replaceAll("-", "_") : baseName(link);
    }),
  };
}

/** Who holds a GPU (processes, the framebuffer console), and the host's keyboard and mouse. */
function consoleFacts(
  reader: SysfsReader,
  { sysRoot, procRoot }: HostFactsOptions,
): Pick<
  HostFacts,
  "gpuHolders" | "consoleFramebuffers" | "frameBufferConsole" | "inputDevices"
> {
  // fbcon draws on fb0 unless `fbcon=map:` maps consoles to other framebuffers (one digit each).
  // The command line where discovery reads it: the live `/proc`, or a captured tree's root.
  const consoleFramebufferNumbers = once(() => {
    const cmdline = readAttribute(reader, `${procRoot}/cmdline`) ??
      readAttribute(reader, `${sysRoot}/cmdline`) ?? "";
    const map = /(?:^|\s)fbcon=(?:[^\s]*,)?map:(\d+)/.exec(cmdline)?.[1];
    return new Set(map === undefined ? [0] : [...map].map(Number));
  });
  const frameBufferConsole = once(() =>
    (reader.listDir(`${sysRoot}/class/vtconsole`) ?? []).sort().find((c) =>
      readAttribute(reader, `${sysRoot}/class/vtconsole/${c}/bind`) === "1" &&
      /frame buffer/i.test(readAttribute(reader, `${sysRoot}/class/vtconsole/${c}/name`) ?? "")
    ) ?? null
  );
  // One scan of `/proc` for every GPU of the host, however many the plan or `doctor` ask about.
  // No process, no holder: a captured tree's `proc/` keeps only its GPUs' holders, often none,
  // and then no function's `drm/` is listed.
  const allGpuHolders = once(() => {
    const pids = processIds(reader, procRoot);
    if (pids.length === 0) return new Map<PciAddress, GpuHolder[]>();
    const addresses = (reader.listDir(`${sysRoot}/bus/pci/devices`) ?? []).flatMap((name) =>
      canonicalPciAddress(name) ?? []
    );
    return gpuHolders(reader, { sysRoot, procRoot }, addresses, { pids });
  });
  // One listing of `class/input` for every controller asked about.
  const allInputDevices = once(() => hostInputDevices(reader, sysRoot));
  return {
    gpuHolders: (address) => allGpuHolders().get(address) ?? [],
    consoleFramebuffers: byKey((address) => {
      const drawn = consoleFramebufferNumbers();
      const fbs = (reader.listDir(`${sysRoot}/bus/pci/devices/${address}/graphics`) ?? [])
        .filter((f) => /^fb\d+$/.test(f) && drawn.has(Number(f.slice(2))));
      return fbs.length > 0 && frameBufferConsole() !== null ? fbs.sort() : [];
    }),
    frameBufferConsole,
    inputDevices: (address) => allInputDevices().get(address) ?? [],
  };
}

/** The NUMA nodes' CPUs. */
function numaFacts(
  reader: SysfsReader,
  sysRoot: string,
): Pick<HostFacts, "cpuNodes" | "nodeCpuList"> {
  const nodeCpuList = byKey((node: number) =>
    readAttribute(reader, `${sysRoot}/devices/system/node/node${node}/cpulist`)
  );
  const cpuNodes = once(() => {
    const nodes = (reader.listDir(`${sysRoot}/devices/system/node`) ?? [])
      .flatMap((n) => /^node(\d+)$/.exec(n) ? [Number(n.slice(4))] : []);
    if (nodes.length === 0) return null;
    const map = new Map<number, number>();
    for (const node of nodes) {
      for (const cpu of parseCpuList(nodeCpuList(node) ?? "") ?? []) map.set(cpu, node);
    }
    return map;
  });
  return { cpuNodes, nodeCpuList };
}

/** What QEMU may open: ROM files, its user, AppArmor and SELinux. */
function qemuFacts(
  reader: SysfsReader,
  options: HostFactsOptions,
): Pick<HostFacts, "romFile" | "qemuUser" | "confinement"> {
  const { sysRoot } = options;
  const passwd = options.passwd ?? (() => denoFsReader().readText("/etc/passwd"));
  const qemuUser = once(() => parseQemuUser(passwd() ?? ""));
  return {
    romFile: byKey((path) => {
      const facts = inspectRomFile(path, options.readLabel);
      const user = qemuUser();
      if (facts.kind === "file" && user !== null) facts.closedDirs = closedDirectories(path, user);
      return facts;
    }),
    qemuUser,
    confinement: once(() => ({
      apparmor: /^[Yy1]/.test(
        readAttribute(reader, `${sysRoot}/module/apparmor/parameters/enabled`) ?? "",
      ),
      selinux: readAttribute(reader, `${sysRoot}/fs/selinux/enforce`) === "1",
    })),
  };
}

/**
 * Which PCI controllers hold a block, USB, SCSI host, mediated, network or character device: on
 * the live host only (`devRoot`); a captured tree holds none of what is plugged in.
 */
function controllerFacts(
  reader: SysfsReader,
  options: HostFactsOptions,
): Pick<
  HostFacts,
  | "blockDeviceControllers"
  | "usbDeviceControllers"
  | "mdevControllers"
  | "scsiHostControllers"
  | "netDeviceControllers"
  | "charDeviceControllers"
> {
  const { sysRoot, devRoot } = options;
  const usbDevices = once(() => readUsbDevices(reader, sysRoot));
  return {
    // The reader that throws: a path that cannot be read is the caller's to report, not none.
    blockDeviceControllers: byKey((path) =>
      devRoot === undefined
        ? null
        : blockDeviceControllers(options.reader, { sysRoot, devRoot }, path)
    ),
    usbDeviceControllers: (source) =>
      devRoot === undefined ? null : usbDeviceControllers(usbDevices(), source),
    mdevControllers: (uuid) =>
      devRoot === undefined ? null : mdevControllers(reader, sysRoot, uuid),
    scsiHostControllers: (adapter) =>
      devRoot === undefined ? null : scsiHostControllers(reader, sysRoot, adapter),
    netDeviceControllers: (name) => devRoot === undefined ? null : nicsUnder(reader, sysRoot, name),
    charDeviceControllers: byKey((path) =>
      devRoot === undefined
        ? null
        : charDeviceControllers(options.reader, { sysRoot, devRoot }, path)
    ),
  };
}

/**
 * `reader` with every failure read as absent: a fact that cannot be read (another user's process,
 * a denied `/proc` file) is unknown, and an unknown fact is never a finding.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const refusing = () => {
 *   throw new Error("EACCES");
 * };
 * const reader = unknownOnError({ ...denoFsReader(), readText: refusing });
 * assertEquals(reader.readText("/proc/iomem"), null);
 * ```
 */
export function unknownOnError(reader: SysfsReader): SysfsReader {
  const safe = <A extends unknown[], R>(fn: (...args: A) => R | null) => (...args: A) => {
    try {
      return fn(...args);
    } catch {
      return null;
    }
  };
  return {
    listDir: safe((path: string) => reader.listDir(path)),
    readText: safe((path: string) => reader.readText(path)),
    readBytes: safe((path: string, max: number) => reader.readBytes(path, max)),
    readLink: safe((path: string) => reader.readLink(path)),
    openFile: safe((path: string) => reader.openFile(path)),
    ...(reader.deviceNumber === undefined
      ? {}
      : { deviceNumber: safe((path: string) => reader.deviceNumber!(path)) }),
  };
}

/**
 * {@link readWholeText} of a pre-flight table, `null` (unknown) when it is larger than the limit
 * too (`/dev/zero` in a captured tree), as when it cannot be read at all.
 */
function wholeOrUnknown(reader: SysfsReader, path: string): string | null {
  try {
    return readWholeText(reader, path);
  } catch {
    return null;
  }
}

/** QEMU's user from a password database: `libvirt-qemu` first, then `qemu`. */
function parseQemuUser(passwd: string): QemuUser | null {
  for (const name of ["libvirt-qemu", "qemu"]) {
    const line = passwd.split("\n").find((l) => l.startsWith(`${name}:`));
    const [, , uid, gid] = line?.split(":") ?? [];
    if (uid !== undefined && gid !== undefined && /^\d+$/.test(uid) && /^\d+$/.test(gid)) {
      return { name, uid: Number(uid), gid: Number(gid) };
    }
  }
  return null;
}

/** `a FIFO`, `a character device`, ...: what a non-regular file is. */
function specialKind(info: Deno.FileInfo): string {
  return info.isDirectory ? "a directory" : specialFileKind(info) ?? "not a regular file";
}

/**
 * What QEMU would find at a ROM path: only a regular file is opened (links followed), and only
 * its first two bytes are read, so a FIFO, `/dev/zero`, a link loop or a huge file cannot hang
 * or exhaust the run.
 */
function inspectRomFile(
  path: string,
  readLabel: ((path: string) => string | null) | undefined,
): RomFileFacts {
  // Deno refuses these without --allow-all; nothing there is a ROM image anyway.
  if (/^\/(proc|sys|dev)(\/|$)/.test(path)) {
    return { kind: "special", detail: "a kernel or device file, not a ROM image" };
  }
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { kind: "missing" };
    if (isLinkLoop(error)) return { kind: "loop" };
    if (error instanceof Deno.errors.PermissionDenied) {
      return { kind: "unchecked", detail: `this user cannot look at it (${error.message})` };
    }
    if (error instanceof Deno.errors.NotCapable) {
      return { kind: "unchecked", detail: "passthrough runs without permission to read it" };
    }
    throw error;
  }
  if (!info.isFile) return { kind: "special", detail: specialKind(info) };
  let head: Uint8Array | null = null;
  try {
    head = denoFsReader().readBytes(path, 2);
  } catch {
    head = null;
  }
  const facts: RomFileFacts = {
    kind: "file",
    size: info.size,
    mode: info.mode ?? 0o644,
    uid: info.uid ?? 0,
    gid: info.gid ?? 0,
    selinuxType: readLabel?.(path)?.split(":")[2] ?? null,
  };
  if (head !== null) facts.head = head;
  try {
    facts.realPath = Deno.realPathSync(path);
  } catch {
    // Unresolvable after a successful stat (a race, a denied component): judge the path given.
  }
  return facts;
}

/**
 * The directories on the way to `path` that `user` cannot search, outermost first; directories
 * that cannot be looked at are skipped (no evidence).
 */
function closedDirectories(path: string, user: QemuUser): string[] {
  const closed: string[] = [];
  const parts = path.split("/").slice(1, -1);
  for (let i = 1; i <= parts.length; i++) {
    const dir = `/${parts.slice(0, i).join("/")}`;
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(dir);
    } catch {
      continue;
    }
    if (!permits(info.mode ?? 0o755, info.uid ?? 0, info.gid ?? 0, user, 0o1)) closed.push(dir);
  }
  return closed;
}

/** Whether `user` has `bit` (4 read, 1 search) on a file of this mode and owner. */
export function permits(
  mode: number,
  uid: number,
  gid: number,
  user: QemuUser,
  bit: number,
): boolean {
  if (user.uid === 0) return true;
  if (uid === user.uid) return (mode & (bit << 6)) !== 0;
  if (gid === user.gid) return (mode & (bit << 3)) !== 0;
  return (mode & bit) !== 0;
}

/**
 * AMD GPUs that do not reset reliably without vendor-reset (gnif/vendor-reset): Polaris, Vega
 * 10/12/20, Navi 10/14/21/23, as device-ID ranges.
 */
const VENDOR_RESET_IDS: readonly [number, number, string][] = [
  [0x67c0, 0x67ff, "Polaris"],
  [0x6980, 0x699f, "Polaris"],
  [0x6860, 0x687f, "Vega"],
  [0x69a0, 0x69af, "Vega"],
  [0x66a0, 0x66af, "Vega"],
  [0x7310, 0x731f, "Navi 10"],
  [0x7340, 0x734f, "Navi 14"],
  [0x73a0, 0x73bf, "Navi 21"],
  [0x73e0, 0x73ff, "Navi 23"],
];

/** The family name when `device` is an AMD GPU known to need vendor-reset, else `null`. */
function vendorResetFamily(
  device: Pick<PciDevice, "vendorId" | "deviceId" | "classCode">,
): string | null {
  if (device.vendorId !== "1002" || !device.classCode.startsWith("03")) return null;
  const id = parseInt(device.deviceId, 16);
  return VENDOR_RESET_IDS.find(([from, to]) => id >= from && id <= to)?.[2] ?? null;
}

/**
 * How a device resets, from its `reset_method`: `ok` (a reset of its own, or vendor-reset's
 * `device_specific` for a GPU that needs it), `vendor-reset` (an AMD GPU without it selected) or
 * `bus-only` (only a secondary-bus reset, which resets everything on the bus).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const nic = { vendorId: "8086", deviceId: "10fb", classCode: "020000" };
 * assertEquals(resetVerdict(nic, ["pm", "bus"]), { kind: "ok" });
 * assertEquals(resetVerdict(nic, ["bus"]), { kind: "bus-only" });
 * ```
 */
export function resetVerdict(
  device: Pick<PciDevice, "vendorId" | "deviceId" | "classCode">,
  methods: readonly string[],
): { kind: "ok" | "bus-only" } | { kind: "vendor-reset"; family: string } {
  const family = vendorResetFamily(device);
  if (family !== null) {
    return methods[0] === "device_specific" ? { kind: "ok" } : { kind: "vendor-reset", family };
  }
  return methods.some((m) => m !== "bus" && m !== "cxl_bus")
    ? { kind: "ok" }
    : { kind: "bus-only" };
}

/**
 * Who uses a display device's host driver: the module's references beyond the modules depending
 * on it, processes with its DRM nodes open, the framebuffer console on it. Empty when nothing is
 * known to, or when it is bound to no driver (callers leave out the vfio drivers).
 */
export function driverUsers(device: PciDevice, facts: HostFacts): string[] {
  const { driver, address } = device;
  if (driver === null || !device.classCode.startsWith("03")) return [];
  const users: string[] = [];
  const module = facts.modules()?.get(facts.moduleOfDriver(driver));
  if (module !== undefined && module.refcount > module.holders.length) {
    const opens = module.refcount - module.holders.length;
    users.push(
      `module ${module.name} has ${opens} reference${
        opens === 1 ? "" : "s"
      } beyond the modules depending on it${
        module.holders.length > 0 ? ` (${module.holders.join(", ")})` : ""
      }`,
    );
  }
  const holders = facts.gpuHolders(address);
  if (holders.length > 0) {
    const named = holders.map((p) =>
      `${p.command === "" ? "a process" : p.command} (pid ${p.pid})`
    );
    users.push(`its device nodes are open in ${named.join(", ")}`);
  }
  const consoles = facts.consoleFramebuffers(address);
  if (consoles.length > 0) {
    users.push(`the framebuffer console on ${consoles.join(", ")} (${facts.frameBufferConsole()})`);
  }
  return users;
}
