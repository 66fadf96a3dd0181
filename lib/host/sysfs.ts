/**
 * The injected reader discovery reads a sysfs-shaped tree through, and a plain `Deno` file-system
 * implementation of it for captured trees. The real `/sys` is read through `ffi/libc_fs.ts`
 * instead, because Deno 2.x refuses reads under `/sys` and `/proc` without `--allow-all`.
 *
 * @module
 */

/**
 * Reads a sysfs-shaped tree. Every method takes an absolute path and returns `null` when the
 * entry does not exist, so discovery never needs exceptions for optional attributes.
 */
export interface SysfsReader {
  /** Entry names of a directory (without `.` and `..`), or `null` when it is missing. */
  listDir(path: string): string[] | null;
  /**
   * Entries of a directory with their kinds as the listing gives them (links not followed), or
   * `null` when it is missing; optional, for the captured-tree check
   * (`snapshot --check`, `doctor --sysfs`), which lists every device's directory.
   */
  listEntries?(path: string): DirectoryEntry[] | null;
  /**
   * A small text file's contents as is, or `null` when it is missing or unreadable: at most its
   * first 64 KiB, which holds any kernel attribute (a page at most). A table that can be longer
   * (`/proc/iomem`, `/proc/swaps`), where what comes last counts, passthrough reads whole with
   * one `readBytes` one byte past its cap, refusing rather than cutting one over it.
   */
  readText(path: string): string | null;
  /** Up to `maxBytes` bytes of a file (e.g. PCI `config`), or `null` when it is missing. */
  readBytes(path: string, maxBytes: number): Uint8Array | null;
  /** A symbolic link's target as stored (often relative), or `null` when it is not a link. */
  readLink(path: string): string | null;
  /**
   * Opens a file for reads at offsets, or `null` when it is missing. Discovery reads the live
   * `config` file this way: every 4 bytes read is a configuration cycle on the device, and the
   * capability walk needs only a few dozen bytes.
   */
  openFile(path: string): SysfsFile | null;
  /**
   * The device number (`226:1`) of the character device at `path`, links followed (a process's
   * `fd/N` link leads to the file it holds open, wherever and under whatever name), or `null` for
   * anything else or nothing; optional: where it is absent, nodes are known by path alone.
   */
  deviceNumber?(path: string): string | null;
}

/** What a directory listing says an entry is; `other` covers FIFOs, devices, sockets, unknown. */
export type EntryKind = "file" | "directory" | "symlink" | "other";

/** One entry of a directory listing ({@link SysfsReader.listEntries}). */
export interface DirectoryEntry {
  /** The entry's name. */
  name: string;
  /** Its kind, from the listing (`d_type`): a link is `symlink`, whatever it points to. */
  kind: EntryKind;
}

/** An open file read at offsets. Dispose it when done (`using`). */
export interface SysfsFile extends Disposable {
  /** Up to `length` bytes at `offset`: fewer at the end of the file or where reads are denied. */
  readAt(offset: number, length: number): Uint8Array;
}

function isMissing(error: unknown): boolean {
  return error instanceof Deno.errors.NotFound ||
    (error instanceof Error &&
      /ENOTDIR|EINVAL|Not a directory|Invalid argument/.test(error.message));
}

/** At most this much of a text file is read, as the libc reader does (`ffi/libc_fs.ts`). */
const TEXT_LIMIT = 65536;

/**
 * A {@link SysfsReader} over `Deno.readDirSync`/`readFileSync`/`readLinkSync`/`openSync`: needs
 * only `--allow-read`, and works for captured trees anywhere except under `/sys` and `/proc`.
 * Permission errors are thrown, not turned into `null`, so a missing flag is reported as such.
 *
 * Deno cannot open a file non-blocking, so each file's type is checked first (links followed):
 * only regular files are read, at most 64 KiB of text or the bytes asked for.
 * A FIFO, device node or socket planted in a tree reads as unreadable (`null`): opening a FIFO
 * blocks until a writer appears, a terminal blocks on read, and `/dev/zero` never ends.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/vendor`, "0x10de\n");
 * const reader = denoFsReader();
 * assertEquals(reader.readText(`${dir}/vendor`), "0x10de\n");
 * assertEquals(reader.readText(`${dir}/missing`), null);
 * {
 *   using file = reader.openFile(`${dir}/vendor`)!;
 *   assertEquals(new TextDecoder().decode(file.readAt(2, 4)), "10de");
 * }
 * assertEquals(reader.openFile(`${dir}/missing`), null);
 * Deno.symlinkSync("/dev/zero", `${dir}/config`);
 * assertEquals(reader.readBytes(`${dir}/config`, 4096), null);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 *
 * With `listings: ROOT`, the type of a file under ROOT comes from its directory's listing, read
 * once for the reader's life, instead of a `stat` per file (links are still followed with one):
 * for a short-lived reader of a few small directories, such as the start guard's, which reads a
 * handful of files in each device's directory of a sysfs tree at every VM start. Files that
 * appear after their directory was listed read as missing. Elsewhere (`/proc`, whose listing
 * holds every process), each file is still `stat`ed.
 */
export function denoFsReader(options: { listings?: string } = {}): SysfsReader {
  const decoder = new TextDecoder();
  const under = options.listings === undefined ? null : `${options.listings.replace(/\/+$/, "")}/`;
  const regular = listedRegularFile();
  const readRegularFile = (path: string, maxBytes: number) =>
    under === null || !path.startsWith(under)
      ? readStatedFile(path, maxBytes)
      : readListedFile(path, maxBytes, regular);
  return {
    listDir(path) {
      try {
        const names: string[] = [];
        for (const entry of Deno.readDirSync(path)) names.push(entry.name);
        return names;
      } catch (error) {
        if (isMissing(error)) return null;
        throw error;
      }
    },
    readText(path) {
      const bytes = readRegularFile(path, TEXT_LIMIT);
      return bytes === null ? null : decoder.decode(bytes);
    },
    readBytes(path, maxBytes) {
      return readRegularFile(path, maxBytes);
    },
    readLink(path) {
      try {
        return Deno.readLinkSync(path);
      } catch (error) {
        if (isMissing(error)) return null;
        throw error;
      }
    },
    deviceNumber(path) {
      try {
        const info = Deno.statSync(path);
        return info.isCharDevice && info.rdev !== null ? formatDeviceNumber(info.rdev) : null;
      } catch (error) {
        if (isMissing(error)) return null;
        throw error;
      }
    },
    openFile(path) {
      try {
        const listed = under !== null && path.startsWith(under);
        if (!(listed ? regular(path) : regularFileSize(path) !== null)) return null;
        return new DenoFile(path, Deno.openSync(path, { read: true }));
      } catch (error) {
        if (isMissing(error)) return null;
        throw error;
      }
    },
  };
}

/**
 * `major:minor` of a `dev_t` as glibc encodes it (`gnu_dev_major`, `gnu_dev_minor`): the
 * major's low 12 bits in bits 8-19 and the rest from bit 44, the minor's low 8 bits in bits 0-7
 * and the rest in bits 20-43.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(formatDeviceNumber(0xe281), "226:129");
 * assertEquals(formatDeviceNumber(0x1000_0000_0000 + 0x100 + 0x40_0000 + 0x56), "4097:1110");
 * ```
 */
export function formatDeviceNumber(rdev: number): string {
  const dev = BigInt(rdev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n);
  const minor = (dev & 0xffn) | ((dev >> 12n) & 0xffffff00n);
  return `${major}:${minor}`;
}

/** The size of the regular file at `path` (links followed), or `null` for anything else. */
function regularFileSize(path: string): number | null {
  try {
    const info = Deno.statSync(path);
    return info.isFile ? info.size : null;
  } catch (error) {
    if (isMissing(error)) return null;
    throw error;
  }
}

/**
 * Whether the entry at a path is a regular file (links followed), from its directory's listing,
 * listed once (see {@link denoFsReader}); `false` for anything else or nothing.
 */
function listedRegularFile(): (path: string) => boolean {
  const listings = new Map<string, Map<string, Deno.DirEntry> | null>();
  const list = (dir: string): Map<string, Deno.DirEntry> | null => {
    try {
      const entries = new Map<string, Deno.DirEntry>();
      for (const entry of Deno.readDirSync(dir)) entries.set(entry.name, entry);
      return entries;
    } catch (error) {
      if (isMissing(error)) return null;
      throw error;
    }
  };
  return (path) => {
    const slash = path.lastIndexOf("/");
    const dir = slash <= 0 ? "/" : path.slice(0, slash);
    let listing = listings.get(dir);
    if (listing === undefined) listings.set(dir, listing = list(dir));
    const entry = listing?.get(path.slice(slash + 1));
    if (entry === undefined) return false;
    return entry.isSymlink ? regularFileSize(path) !== null : entry.isFile;
  };
}

/**
 * Up to `maxBytes` of the file at `path` when `regular` says it is a regular file, or `null`;
 * read in full to its end or `maxBytes`, since a listing gives no size.
 */
function readListedFile(
  path: string,
  maxBytes: number,
  regular: (path: string) => boolean,
): Uint8Array | null {
  try {
    if (!regular(path)) return null;
    using file = Deno.openSync(path, { read: true });
    return readHead(file, maxBytes, true);
  } catch (error) {
    if (isMissing(error) || error instanceof Deno.errors.IsADirectory) return null;
    throw error;
  }
}

/**
 * Up to `maxBytes` from the start of an open file: reads until its end or `maxBytes`, into a
 * buffer that starts at a page (what a sysfs attribute holds) and grows only as the file does.
 * With `shortReadEnds`, for a sysfs attribute or a regular file (never `/proc`, whose files come
 * in pieces), a read that fills less than asked is the end, as the libc reader has it: one read
 * call less per file.
 */
function readHead(file: Deno.FsFile, maxBytes: number, shortReadEnds = false): Uint8Array {
  let bytes = new Uint8Array(Math.min(maxBytes, 4096));
  let filled = 0;
  while (filled < maxBytes) {
    if (filled === bytes.length) {
      const bigger = new Uint8Array(Math.min(maxBytes, bytes.length * 4));
      bigger.set(bytes);
      bytes = bigger;
    }
    const asked = bytes.length - filled;
    const n = file.readSync(bytes.subarray(filled));
    if (n === null || n === 0) break;
    filled += n;
    if (shortReadEnds && n < asked) break;
  }
  return bytes.subarray(0, filled);
}

/** Up to `maxBytes` of the regular file at `path` (a `stat` first), or `null`. */
function readStatedFile(path: string, maxBytes: number): Uint8Array | null {
  try {
    const size = regularFileSize(path);
    if (size === null) return null;
    if (size <= maxBytes) {
      const bytes = Deno.readFileSync(path);
      return bytes.length > maxBytes ? bytes.slice(0, maxBytes) : bytes;
    }
    // Larger than asked for: read only the head, never the whole file.
    using file = Deno.openSync(path, { read: true });
    return readHead(file, maxBytes);
  } catch (error) {
    if (isMissing(error) || error instanceof Deno.errors.IsADirectory) return null;
    throw error;
  }
}

/** {@link SysfsFile} over a `Deno.FsFile`: a seek, then reads until `length` or the end. */
class DenoFile implements SysfsFile {
  #open = true;
  constructor(readonly path: string, readonly file: Deno.FsFile) {}
  readAt(offset: number, length: number): Uint8Array {
    if (!this.#open) throw new Error(`Cannot read "${this.path}": the file was closed`);
    const bytes = new Uint8Array(length);
    let filled = 0;
    try {
      this.file.seekSync(offset, Deno.SeekMode.Start);
      while (filled < length) {
        const n = this.file.readSync(bytes.subarray(filled));
        if (n === null || n === 0) break;
        filled += n;
      }
    } catch (error) {
      // As the libc reader: what cannot be read at this offset reads as absent.
      if (!isMissing(error) && !(error instanceof Deno.errors.IsADirectory)) throw error;
    }
    return bytes.slice(0, filled);
  }
  [Symbol.dispose](): void {
    if (this.#open) this.file.close();
    this.#open = false;
  }
}

/** The last path component (`../../../bus/pci/drivers/nvme` → `nvme`). */
export function baseName(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

/**
 * What the entry at `path` is when it is a directory, a file or anything else rather than a link
 * (`a directory`, `a file`, or a FIFO, device node or socket), or `null` for a link or nothing:
 * where the kernel makes a link (a device's `iommu_group`), any of them is a damaged tree, which
 * `readLink` alone reads as nothing.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.mkdirSync(`${dir}/iommu_group`);
 * const reader = denoFsReader();
 * assertEquals([notLinkKind(reader, `${dir}/iommu_group`), notLinkKind(reader, `${dir}/x`)],
 *   ["a directory", null]);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function notLinkKind(reader: SysfsReader, path: string): string | null {
  if (reader.readLink(path) !== null) return null;
  if (reader.listDir(path) !== null) return "a directory";
  if (reader.readText(path) !== null) return "a file";
  // A FIFO, device node or socket reads as nothing above, and so would pass as no entry.
  const slash = path.lastIndexOf("/");
  return reader.listDir(path.slice(0, slash))?.includes(path.slice(slash + 1))
    ? "a special file or an unreadable one"
    : null;
}

/**
 * Whether following the entry at `path` meets a loop of symbolic links: the system's ELOOP, or a
 * captured tree's reader naming one (its {@link SysfsTreeError}). A link the kernel made never
 * loops; one that does is a damaged tree, to be named as such rather than by its target's name.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.symlinkSync("iommu_group", `${dir}/iommu_group`);
 * Deno.symlinkSync("missing", `${dir}/dangling`);
 * const reader = denoFsReader();
 * assertEquals([leadsToLoop(reader, `${dir}/iommu_group`), leadsToLoop(reader, `${dir}/dangling`)],
 *   [true, false]);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function leadsToLoop(reader: SysfsReader, path: string): boolean {
  try {
    reader.listDir(path);
    return false;
  } catch (error) {
    return isLinkLoop(error) || (error instanceof SysfsTreeError && error.loop);
  }
}

/** A device an IOMMU group's listing names that is no PCI function (ACPI, platform). */
export interface NonPciMember {
  /** Its name in the listing (`AMDI0020:00`). */
  name: string;
  /** Its bus (`platform`, `acpi`), the last component of its `subsystem` link. */
  bus: string;
  /** Its driver, or `null` when it is bound to none. */
  driver: string | null;
}

/**
 * The non-PCI device `kernel/iommu_groups/GROUP/devices/NAME` names under `root` (an AMD IVRS
 * ACPI device, an Intel ACPI namespace device, a platform device), read through the listing's
 * link: its bus and driver. `null` when it cannot be read as one (no bus link, a driver entry that
 * is no link) or is a PCI function, which bus/pci/devices should show: it then stays unread.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.mkdirSync(`${dir}/devices/platform/AMDI0020:00`, { recursive: true });
 * Deno.symlinkSync("../../../bus/platform", `${dir}/devices/platform/AMDI0020:00/subsystem`);
 * Deno.mkdirSync(`${dir}/kernel/iommu_groups/3/devices`, { recursive: true });
 * Deno.symlinkSync("../../../../devices/platform/AMDI0020:00",
 *   `${dir}/kernel/iommu_groups/3/devices/AMDI0020:00`);
 * assertEquals(readNonPciMember(denoFsReader(), dir, 3, "AMDI0020:00"),
 *   { name: "AMDI0020:00", bus: "platform", driver: null });
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function readNonPciMember(
  reader: SysfsReader,
  root: string,
  group: number,
  name: string,
): NonPciMember | null {
  const entry = `${root}/kernel/iommu_groups/${group}/devices/${name}`;
  const subsystem = reader.readLink(`${entry}/subsystem`);
  if (subsystem === null || baseName(subsystem) === "pci") return null;
  const driver = reader.readLink(`${entry}/driver`);
  // A driver entry that is no link may hide a driver: read as unbound, the group would pass.
  if (driver === null && notLinkKind(reader, `${entry}/driver`) !== null) return null;
  return { name, bus: baseName(subsystem), driver: driver === null ? null : baseName(driver) };
}

/** The VFIO drivers of non-PCI devices, which leave their group viable as vfio-pci does. */
const NON_PCI_VFIO_DRIVERS: ReadonlySet<string> = new Set([
  "vfio-platform",
  "vfio-amba",
  "vfio-fsl-mc",
]);

/**
 * The host driver holding `member`, or `null` when none does (unbound, or on a VFIO driver).
 * VFIO hands a guest no non-PCI device, but takes a group only while no host driver holds any
 * of its devices: one that does makes the group not viable, and libvirt's start fails.
 */
export function hostDriverOf(member: NonPciMember): string | null {
  const { driver } = member;
  return driver === null || NON_PCI_VFIO_DRIVERS.has(driver) ? null : driver;
}

/** The text of a sysfs attribute without its trailing newline, or `null`. */
export function readAttribute(reader: SysfsReader, path: string): string | null {
  const text = reader.readText(path);
  if (text === null) return null;
  const trimmed = text.trim();
  return trimmed;
}

/**
 * The most {@link readWholeText} reads (16 MiB): far over the largest `/proc` table a big server
 * writes (`/proc/cpuinfo` of 1,024 CPUs is some 1.5 MiB), far under what would hurt to hold.
 */
export const WHOLE_TEXT_LIMIT = 16 << 20;

/** The most of `/proc/self/mountinfo` read: 64 MiB is some 250,000 container mounts. */
export const MAX_MOUNTINFO_BYTES = 64 << 20;

/**
 * The whole text of a file that can outgrow the 64 KiB `readText` reads of an attribute (a
 * `/proc/iomem`, `/proc/modules` or `/proc/stat` of a big server), or `null` when it is missing.
 * Throws `RangeError` when it is larger than `maxBytes`: a table read in part would leave out
 * whatever comes last (the framebuffer in the highest BAR), and read as "not there". The read
 * itself stops at `maxBytes` and a byte, so `/dev/zero` in its place ends too.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/iomem`, "x".repeat(70000) + "\nBOOTFB\n");
 * const reader = denoFsReader();
 * assertEquals(readWholeText(reader, `${dir}/iomem`)?.endsWith("BOOTFB\n"), true);
 * assertEquals(readWholeText(reader, `${dir}/missing`), null);
 * assertThrows(() => readWholeText(reader, `${dir}/iomem`, 1000), RangeError, "larger than 1000");
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function readWholeText(
  reader: SysfsReader,
  path: string,
  maxBytes: number = WHOLE_TEXT_LIMIT,
): string | null {
  const bytes = reader.readBytes(path, maxBytes + 1);
  if (bytes === null) return null;
  if (bytes.length > maxBytes) {
    throw new RangeError(`Cannot read "${path}" whole: it is larger than ${maxBytes} bytes`);
  }
  return new TextDecoder().decode(bytes);
}

/** The `kind` of a {@link SysfsTreeError} for a loop of symbolic links. */
const LINK_LOOP = "a loop of symbolic links";

/**
 * Whether `error` is the system's `ELOOP` (a loop of symbolic links), from libc's reader or
 * Deno's: told by its message, as `lib/` imports neither `ffi/` nor a Deno error class for it.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(isLinkLoop(new Error("Too many levels of symbolic links (os error 40)")), true);
 * assertEquals(isLinkLoop(new Error("No such file or directory (os error 2)")), false);
 * ```
 */
export function isLinkLoop(error: unknown): boolean {
  return error instanceof Error && /ELOOP|too many levels of symbolic links/i.test(error.message);
}

/**
 * The entry of the tree at `root` that is a loop of symbolic links, on the way to `path`, where
 * the system met one: the first from the root down (the root included) that the system cannot resolve, or, when that
 * is a link into another entry that loops (`bus/pci/devices/X` into a looping `devices`), that
 * entry, as the user would find it. `path` itself when the walk finds none.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.mkdirSync(`${dir}/bus`);
 * Deno.symlinkSync("devices", `${dir}/devices`);
 * Deno.symlinkSync("../devices/x", `${dir}/bus/x`);
 * assertEquals(linkLoopAt(dir, `${dir}/bus/x/config`), `${dir}/devices`);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function linkLoopAt(
  root: string,
  path: string,
  { realPath = Deno.realPathSync, readLink = Deno.readLinkSync }: {
    realPath?: (path: string) => string;
    readLink?: (path: string) => string;
  } = {},
): string {
  const top = root.replace(/(.)\/+$/, "$1");
  // Each path resolved once (`null`: a loop; `undefined`: another failure): a loop's links lead
  // the walk back where it has been.
  const known = new Map<string, string | null>();
  const real = (at: string): string | null | undefined => {
    if (!known.has(at)) {
      try {
        known.set(at, realPath(at));
      } catch (error) {
        if (!isLinkLoop(error)) return undefined;
        known.set(at, null);
      }
    }
    return known.get(at);
  };
  // The first entry below the root, on the way to `at`, that the system cannot resolve; the root
  // itself when it loops, as then no name under it resolves either.
  const firstLoop = (at: string): string | null => {
    for (let end = top.length; end !== -1;) {
      end = at.indexOf("/", end + 1);
      const prefix = end === -1 ? at : at.slice(0, end);
      if (real(prefix) === null) return real(top) === null ? top : prefix;
    }
    return null;
  };
  // Where the link `at` leads, spelt from the root as `at` is; `null` out of the tree's names
  // (an absolute target, above the root, a ".." after a name, which a link may turn around).
  const targetOf = (at: string): string | null => {
    let target: string;
    try {
      target = readLink(at);
    } catch {
      return null;
    }
    const realRoot = real(top);
    const dir = real(at.slice(0, at.lastIndexOf("/")));
    if (typeof realRoot !== "string" || typeof dir !== "string" || target.startsWith("/")) {
      return null;
    }
    if (dir !== realRoot && !dir.startsWith(`${realRoot}/`)) return null;
    const ups = /^(\.\.\/)*/.exec(target)![0].length / 3;
    const rest = target.slice(ups * 3);
    const steps = dir.slice(realRoot.length).split("/").filter((p) => p !== "");
    if (ups > steps.length || /(^|\/)\.\.(\/|$)/.test(rest)) return null;
    return [top, ...steps.slice(0, steps.length - ups), rest].join("/");
  };
  const seen = new Set<string>();
  let at = firstLoop(path);
  while (at !== null && !seen.has(at)) {
    seen.add(at);
    const target = targetOf(at);
    const next = target === null ? null : firstLoop(target);
    if (next === null) return at;
    at = next;
  }
  return at ?? path;
}

/**
 * Raised for a captured tree with a FIFO, device node or socket where a file should be, with a
 * loop of symbolic links, or with a link out of it where discovery reads (the reader a captured
 * tree is read through).
 */
export class SysfsTreeError extends Error {
  /** The error's name. */
  override name = "SysfsTreeError";
  /** The offending entry. */
  readonly path: string;
  /** Whether the entry is a loop of symbolic links (the tree damaged, not hostile). */
  readonly loop: boolean;
  /**
   * Builds the error for the entry at `path`, which is `kind` (`a FIFO`, `a loop of symbolic
   * links`), or, with `leadsTo`, which leads there, outside the tree.
   */
  constructor(path: string, kind: string, leadsTo?: string) {
    super(
      kind === LINK_LOOP
        ? `Refusing to read a tree with a loop of symbolic links at "${path}": the tree is damaged: capture it again with 'passthrough snapshot'`
        : leadsTo === undefined
        ? `Refusing to read a tree with ${kind} where a file should be: "${path}": lspci would block on it or read it without end, and opening a device can act on it; the tree is damaged or hostile: capture it again with 'passthrough snapshot'`
        : `Refusing to read a tree with ${kind}: "${path}" leads to "${leadsTo}", outside the tree; the tree is damaged or hostile: capture it again with 'passthrough snapshot'`,
    );
    this.path = path;
    this.loop = kind === LINK_LOOP;
  }
}

/**
 * `reader` kept inside the captured tree at `root`: a path under `root` that a link leads out of
 * it (a device's `uevent` to `/etc/passwd`, `bus/pci/devices/X` to `/sys/...`) is refused with
 * {@link SysfsTreeError}, before it is read, as is one whose `..` steps out of it. A tree is anyone's (one attached to a bug report):
 * what such a link led to was printed, and copied into its snapshot. Links read as links
 * (`readLink`: their target's name is the fact) need only their directory inside; a dangling
 * link is left to the read, which finds nothing. A loop of symbolic links at a path or on the way
 * to it is refused with {@link SysfsTreeError} naming the entry that loops: the tree is damaged,
 * and read as nothing there, a device's group or driver would be taken for none, not unknown.
 * Paths outside `root` are the caller's own, and read as they are. A tree is taken to be at rest: each path is resolved once
 * for the reader's life, one link at a time from its directory's resolution, as realpath(3)
 * does; `realPath` (default `Deno.realPathSync`) resolves only the root and what leaves it (a
 * link to an absolute path or above the root, a loop).
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/vendor`, "0x10de\n");
 * Deno.symlinkSync("/etc/passwd", `${dir}/uevent`);
 * const reader = confinedReader(denoFsReader(), dir);
 * assertEquals(reader.readText(`${dir}/vendor`), "0x10de\n");
 * assertThrows(() => reader.readText(`${dir}/uevent`), /leads to "\/etc\/passwd", outside/);
 * assertEquals(reader.readLink(`${dir}/uevent`), "/etc/passwd");
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function confinedReader(
  reader: SysfsReader,
  root: string,
  realPath: (path: string) => string = Deno.realPathSync,
): SysfsReader {
  const resolve = (path: string): string | null => {
    try {
      return realPath(path);
    } catch {
      // Missing, a loop, unreadable: the read itself finds nothing there, or says why.
      return null;
    }
  };
  const top = root.replace(/(.)\/+$/, "$1");
  const realRoot = resolve(top);
  if (realRoot === null) return reader;
  const inside = (path: string) =>
    realRoot === "/" || path === realRoot || path.startsWith(`${realRoot}/`);
  const under = (path: string) => path.startsWith(`${top}/`);
  // A ".." step leaves `root` without a link (`${root}/..`): where it leads is what is read.
  const dotted = (path: string) => {
    if (!under(path) || !/\/\.\.(\/|$)/.test(path)) return;
    const real = resolve(path.endsWith("/..") ? path : path.slice(0, path.lastIndexOf("/")));
    if (real !== null && !inside(real)) throw new SysfsTreeError(path, 'a ".." out of it', real);
  };
  const underReal = (path: string) => path.startsWith(`${realRoot}/`);
  // A realpath per directory walked the whole path again each time; here each name is read as a
  // link once, and a link's target walked from its directory's resolution.
  const resolved = new Map<string, string | null>([[top, realRoot], [realRoot, realRoot]]);
  const real = (path: string, depth = 0): string | null => {
    let known = resolved.get(path);
    if (known === undefined) resolved.set(path, known = resolveIn(path, depth));
    return known;
  };
  const resolveIn = (path: string, depth: number): string | null => {
    // Outside the tree, or a name that is not a step down (`..`): resolved whole.
    if (!under(path) && !underReal(path)) return resolve(path);
    const slash = path.lastIndexOf("/");
    const name = path.slice(slash + 1);
    if (name === "" || name === "." || name === "..") return resolve(path);
    const dir = real(path.slice(0, slash), depth);
    if (dir === null) return null;
    let target: string | null;
    try {
      target = reader.readLink(path);
    } catch {
      // A denied directory, a loop on the way: resolved whole, which finds nothing or says why.
      return resolve(path);
    }
    if (target === null) return `${dir}/${name}`;
    // To an absolute path, or deeper than the kernel follows links: resolved whole.
    if (target.startsWith("/") || depth >= 40) return resolve(path);
    let at = dir;
    for (const part of target.split("/")) {
      if (part === "" || part === ".") continue;
      if (part === "..") at = at.slice(0, at.lastIndexOf("/")) || "/";
      // Above the root, perhaps to come back into it: resolved whole.
      else if (!underReal(at) && at !== realRoot) return resolve(path);
      else {
        const next = real(`${at}/${part}`, depth + 1);
        if (next === null) return null;
        at = next;
      }
    }
    return at;
  };
  const refuseOutside = (path: string) => {
    const at = real(path);
    if (at !== null && !inside(at)) throw new SysfsTreeError(path, "a link out of it", at);
  };
  const check = (path: string) => {
    dotted(path);
    if (!under(path)) return;
    refuseOutside(path.slice(0, path.lastIndexOf("/")));
    refuseOutside(path);
  };
  // Inside the tree a loop is damage, never "nothing there".
  const read = <T>(path: string, run: () => T): T => {
    try {
      return run();
    } catch (error) {
      if (!under(path) || !isLinkLoop(error)) throw error;
      throw new SysfsTreeError(linkLoopAt(top, path, { realPath }), LINK_LOOP);
    }
  };
  const confined: SysfsReader = {
    listDir: (path) => (check(path), read(path, () => reader.listDir(path))),
    readText: (path) => (check(path), read(path, () => reader.readText(path))),
    readBytes: (path, maxBytes) => {
      check(path);
      return read(path, () => reader.readBytes(path, maxBytes));
    },
    readLink: (path) => {
      dotted(path);
      if (under(path)) refuseOutside(path.slice(0, path.lastIndexOf("/")));
      return read(path, () => reader.readLink(path));
    },
    openFile: (path) => (check(path), read(path, () => reader.openFile(path))),
  };
  if (reader.listEntries !== undefined) {
    confined.listEntries = (path) => (check(path), read(path, () => reader.listEntries!(path)));
  }
  if (reader.deviceNumber !== undefined) {
    confined.deviceNumber = (path) => (check(path), read(path, () => reader.deviceNumber!(path)));
  }
  return confined;
}

/**
 * Refuses a captured tree that has a FIFO, a device node or a socket, or a link to one, where
 * discovery or lspci opens files: every entry of `bus/pci/devices/*` and `bus/pci/slots/*` (lspci
 * opens most of them), the snapshot's own `cmdline` and `host_use.json`, and the `/proc` tables
 * the pre-flight and `snapshot` read from its `proc/` ({@link CAPTURED_PROC_FILES}). A FIFO or a terminal
 * blocks `open` or `read`, a device such as `/dev/zero` never ends, and opening some devices acts
 * on them. Dangling links are harmless (opening them fails); a loop of symbolic links there is a
 * damaged tree, which lspci would stop on with its own message. Throws
 * {@link SysfsTreeError} naming the first one found, or the link out of the tree that `reader`
 * refuses to list ({@link confinedReader}); what cannot be listed (`/sys`, `/proc` without
 * `--allow-all`) is not checked. Lists through `reader` when it can tell kinds
 * ({@link SysfsReader.listEntries}: libc's listing is the cheaper), else through Deno.
 *
 * @example
 * ```ts
 * import { assertThrows } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.mkdirSync(`${dir}/bus/pci/devices/0000:01:00.0`, { recursive: true });
 * Deno.writeTextFileSync(`${dir}/bus/pci/devices/0000:01:00.0/vendor`, "0x10de\n");
 * checkCapturedTree(dir);
 * Deno.symlinkSync("/dev/zero", `${dir}/bus/pci/devices/0000:01:00.0/config`);
 * assertThrows(() => checkCapturedTree(dir), /with a character device where a file should be/);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function checkCapturedTree(root: string, reader?: SysfsReader): void {
  const list = reader?.listEntries === undefined ? (path: string) => entries(root, path) : (
    path: string,
  ) => {
    try {
      return reader.listEntries?.(path) ?? [];
    } catch (error) {
      // A link out of the tree (`confinedReader`): lspci, which reads the tree unconfined,
      // must not start.
      if (error instanceof SysfsTreeError) throw error;
      // As `entries`: what cannot be listed here is not checked (discovery then reports it).
      return [];
    }
  };
  const dirs = ["devices", "slots"].flatMap((sub) =>
    list(`${root}/bus/pci/${sub}`).map((e) => `${root}/bus/pci/${sub}/${e.name}`)
  );
  const files = [
    `${root}/cmdline`,
    `${root}/host_use.json`,
    ...CAPTURED_PROC_FILES.map((name) => `${root}/proc/${name}`),
  ];
  for (const dir of dirs) {
    for (const entry of list(dir)) {
      if (entry.kind === "file" || entry.kind === "directory") continue;
      // Links that are only ever read as links (their target's name is the fact) are harmless.
      if (entry.kind === "symlink" && LINK_ONLY.test(entry.name)) continue;
      files.push(`${dir}/${entry.name}`);
    }
  }
  for (const path of files) {
    const kind = specialKindAt(path);
    if (kind !== null) {
      throw new SysfsTreeError(kind === LINK_LOOP ? linkLoopAt(root, path) : path, kind);
    }
  }
}

/**
 * The files of a captured tree's `proc/` that are opened: the pre-flight reads `iomem` and
 * `modules` whole and `cmdline`, `snapshot` copies `iomem`, `modules` and `cpuinfo`. The libc
 * reader opens a FIFO there without blocking and reads it as empty, a table then taken as the
 * host's (no module loaded, no framebuffer).
 */
const CAPTURED_PROC_FILES = ["iomem", "modules", "cpuinfo", "cmdline"];

/** Entries of a device directory that discovery and lspci read with `readlink`, never open. */
const LINK_ONLY = /^(driver|iommu_group|physfn|subsystem|firmware_node|virtfn[0-9]+)$/;

/**
 * A directory's entries (their kinds come from the listing, without a `stat` each), or none
 * when it is missing, not a directory or not readable here; a loop of symbolic links on the way
 * is refused, named where it loops in the tree at `root`.
 */
function entries(root: string, path: string): DirectoryEntry[] {
  try {
    return [...Deno.readDirSync(path)].map((e) => ({
      name: e.name,
      kind: e.isFile ? "file" : e.isDirectory ? "directory" : e.isSymlink ? "symlink" : "other",
    }));
  } catch (error) {
    if (isLinkLoop(error)) throw new SysfsTreeError(linkLoopAt(root, path), LINK_LOOP);
    return [];
  }
}

/**
 * What the entry at `path` is (links followed) when it is not a file or directory (a loop of
 * symbolic links among them), or `null`.
 */
function specialKindAt(path: string): string | null {
  try {
    return specialFileKind(Deno.statSync(path));
  } catch (error) {
    return isLinkLoop(error) ? LINK_LOOP : null;
  }
}

/**
 * What a file is when it is a FIFO, a device node or a socket (`a FIFO`, `a character device`,
 * ...): the files that block or never end when read; `null` for anything else.
 */
export function specialFileKind(info: Deno.FileInfo): string | null {
  return info.isFifo
    ? "a FIFO"
    : info.isCharDevice
    ? "a character device"
    : info.isBlockDevice
    ? "a block device"
    : info.isSocket
    ? "a socket"
    : null;
}

/** The largest group number: the kernel numbers groups with a non-negative `int`. */
const MAX_GROUP = 0x7fffffff;

/**
 * A group number as the kernel writes one (decimal, no sign, no leading zero, at most
 * 2147483647), or `null`. `Number()` would read `99999999999999999999` as an integer and `007`
 * as 7, so two spellings could name one group or a number could lose its last digits.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(parseGroupNumber("26"), 26);
 * assertEquals(["99999999999999999999", "007", "-1", "1.0", ""].map(parseGroupNumber),
 *   [null, null, null, null, null]);
 * ```
 */
export function parseGroupNumber(text: string): number | null {
  if (!/^(0|[1-9][0-9]{0,9})$/.test(text)) return null;
  const n = Number(text);
  return n <= MAX_GROUP ? n : null;
}
