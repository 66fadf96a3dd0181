/**
 * Boot-time vfio-pci bindings by IDs: `vfio-pci.ids=` on the kernel command line and
 * `options vfio-pci ids=` in modprobe.d. The kernel binds every device whose IDs match an entry,
 * whatever its address, so one entry written for a guest's card also takes an identical card the
 * host was meant to keep (the second NIC of a model, the host's own GPU of the same model). This
 * module finds those entries and the devices each one takes here.
 *
 * @module
 */

import { readWholeText, type SysfsReader } from "./sysfs.ts";
import { canonicalPciAddress } from "../pci/address.ts";
import type { PciAddress, PciDevice } from "./types.ts";

/** One entry of a vfio-pci `ids` list, as the kernel reads it. */
export interface VfioIdsEntry {
  /** Where it is written: `kernel command line` or a modprobe.d file's path. */
  source: string;
  /** The entry as written (`10de:1b06`). */
  text: string;
  /** The IDs it matches (`null`: any, the kernel's `ffffffff`). */
  vendor: number | null;
  device: number | null;
  subvendor: number | null;
  subdevice: number | null;
  /** Class and mask (`0`, `0`: any class). */
  classCode: number;
  classMask: number;
}

/** Where modprobe reads its configuration, the overriding directory first (modprobe.d(5)). */
export const MODPROBE_DIRS = [
  "/etc/modprobe.d",
  "/run/modprobe.d",
  "/usr/local/lib/modprobe.d",
  "/usr/lib/modprobe.d",
  "/lib/modprobe.d",
] as const;

/** The `source` of an entry on the kernel command line. */
export const CMDLINE_SOURCE = "kernel command line";

/** How to rebuild the initramfs, which holds a copy of modprobe.d, on the common distributions. */
export const REBUILD_INITRAMFS =
  "rebuild the initramfs, which holds a copy of modprobe.d (update-initramfs -u, dracut -f or mkinitcpio -P)";

/**
 * The modprobe.d line that loads vfio-pci before `module` (a module name, as modprobe.d keys
 * them: `i2c_nvidia_gpu`, not the driver's `nvidia-gpu`), so that an `ids` entry binds first.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(softdepLine("nvidia"), "softdep nvidia pre: vfio-pci");
 * ```
 */
export function softdepLine(module: string): string {
  return `softdep ${module} pre: vfio-pci`;
}

/**
 * The command that gives `address` to vfio-pci now and at every boot, for a device whose driver
 * binds it before any `vfio-pci.ids=` can (built into the kernel), with its undo.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   driverctlOverride("0000:0b:00.1"),
 *   '"driverctl set-override 0000:0b:00.1 vfio-pci", which unbinds it at once and keeps it ' +
 *     'with vfio-pci across reboots ("driverctl unset-override 0000:0b:00.1" undoes it)',
 * );
 * ```
 */
export function driverctlOverride(address: string): string {
  return `"driverctl set-override ${address} vfio-pci", which unbinds it at once and keeps it ` +
    `with vfio-pci across reboots ("driverctl unset-override ${address}" undoes it)`;
}

const ANY_ID = 0xffffffff;
const HEX = /^(0x)?[0-9a-f]{1,8}$/i;

/**
 * The entries of an `ids` value (`10de:1b06,10de:10ef`), each
 * `vendor:device[:subvendor[:subdevice[:class[:class_mask]]]]` in hex; what the kernel rejects
 * (fewer than two fields, not hex) is left out, as the kernel leaves it.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const [gpu, board] = parseVfioIds("10de:1b06,10de:1b06:1458:3752,bad", "kernel command line");
 * assertEquals([gpu!.vendor, gpu!.device, gpu!.subvendor], [0x10de, 0x1b06, null]);
 * assertEquals([board!.subvendor, board!.subdevice], [0x1458, 0x3752]);
 * ```
 */
export function parseVfioIds(value: string, source: string): VfioIdsEntry[] {
  return value.split(",").flatMap((text) => {
    const fields = text.trim().split(":");
    if (fields.length < 2 || fields.length > 6 || !fields.every((f) => HEX.test(f))) return [];
    const [vendor, device, subvendor, subdevice, classCode, classMask] = fields.map((f) =>
      parseInt(f, 16)
    );
    const id = (n: number | undefined) => n === undefined || n === ANY_ID ? null : n;
    return [{
      source,
      text: text.trim(),
      vendor: id(vendor),
      device: id(device),
      subvendor: id(subvendor),
      subdevice: id(subdevice),
      classCode: classCode ?? 0,
      classMask: classMask ?? 0,
    }];
  });
}

/** Whether the kernel would bind `device` to vfio-pci for `entry` (`pci_match_one_device`). */
export function vfioIdsMatch(entry: VfioIdsEntry, device: PciDevice): boolean {
  const same = (id: number | null, value: string | null) =>
    id === null || (value !== null && parseInt(value, 16) === id);
  return same(entry.vendor, device.vendorId) && same(entry.device, device.deviceId) &&
    same(entry.subvendor, device.subsystemVendorId) &&
    same(entry.subdevice, device.subsystemDeviceId) &&
    ((entry.classCode ^ parseInt(device.classCode, 16)) & entry.classMask) === 0;
}

/** One parameter of a kernel command line: its name and value (`null`: no `=`). */
export interface KernelParam {
  param: string;
  value: string | null;
}

/**
 * The parameters of a kernel command line as the kernel reads them (`next_arg()`): a double
 * quote keeps spaces in a word, and the quotes around a value, or around the whole word, are not
 * part of it. Module options from modprobe.d reach the kernel as such a line too. Words
 * after a bare `--` are read too: they go to init, not to a built-in module, but modprobe
 * reads the whole line for the options of the module it loads, past `--` as well.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(kernelParams('quiet vfio-pci.ids="10de:1b06, 10de:10ef"'), [
 *   { param: "quiet", value: null },
 *   { param: "vfio-pci.ids", value: "10de:1b06, 10de:10ef" },
 * ]);
 * ```
 */
export function kernelParams(line: string): KernelParam[] {
  const params: KernelParam[] = [];
  let rest = line.trimStart();
  while (rest !== "") {
    const quoted = rest.startsWith('"');
    const args = quoted ? rest.slice(1) : rest;
    let inQuote = quoted;
    let equals = -1;
    let i = 0;
    for (; i < args.length; i++) {
      const c = args[i]!;
      if (/\s/.test(c) && !inQuote) break;
      if (equals < 0 && c === "=") equals = i;
      if (c === '"') inQuote = !inQuote;
    }
    // The kernel cuts a closing quote when the value or the whole word opened with one.
    let word = args.slice(0, i);
    const valueQuoted = equals >= 0 && word[equals + 1] === '"';
    if ((quoted || valueQuoted) && word.endsWith('"') && (word.length - 1 > equals + 1 || quoted)) {
      word = word.slice(0, -1);
    }
    rest = args.slice(i + 1).trimStart();
    if (equals < 0) {
      params.push({ param: word, value: null });
    } else {
      const value = word.slice(equals + 1);
      params.push({
        param: word.slice(0, equals),
        value: valueQuoted ? value.slice(1) : value,
      });
    }
  }
  return params;
}

/**
 * One `ids=` given to vfio-pci: where, the value as written, and its entries. vfio-pci's `ids` is
 * a string parameter, which each `ids=` overwrites: of several, the kernel keeps the last one
 * (modprobe gives the module the options of modprobe.d, in file name order, then those of the
 * kernel command line).
 */
export interface VfioIdsAssignment {
  /** Where it is written: `kernel command line` or a modprobe.d file's path. */
  source: string;
  /** The value as the kernel reads it (`10de:1b06,10de:10ef`; empty for a bare `ids=`). */
  value: string;
  /** Its entries ({@link parseVfioIds}). */
  entries: VfioIdsEntry[];
  /**
   * After a bare `--` on the kernel command line: the kernel gives it to init, so a built-in
   * vfio-pci never sees it (modprobe reads it for a module all the same).
   */
  toInit: boolean;
}

function assignment(value: string, source: string, toInit = false): VfioIdsAssignment {
  return { source, value, entries: parseVfioIds(value, source), toInit };
}

/**
 * The `vfio-pci.ids=` (or `vfio_pci.ids=`) of a kernel command line, in order, read as the
 * kernel reads it (`"10de:1b06,10de:10ef"` in quotes is the same value); those after a bare `--`
 * marked `toInit`.
 */
export function cmdlineVfioIds(cmdline: string | null): VfioIdsAssignment[] {
  let toInit = false;
  return kernelParams(cmdline ?? "").flatMap(({ param, value }) => {
    // The kernel's parse_args() stops at the first bare `--`.
    if (param === "--" && value === null) toInit = true;
    return param.replaceAll("-", "_") === "vfio_pci.ids" && value !== null
      ? [assignment(value, CMDLINE_SOURCE, toInit)]
      : [];
  });
}

/** One option of a module in modprobe.d: the file, the parameter and its value. */
export interface ModprobeOption extends KernelParam {
  /** The modprobe.d file's path. */
  source: string;
}

/**
 * The options modprobe.d gives `module` (`vfio_pci`: dashes and underscores alike), in the order
 * modprobe gives them: by file name; of files of one name, the first directory's (`dirs`, default
 * {@link MODPROBE_DIRS}); hidden files left out. Comments and continued lines are read as modprobe
 * reads them.
 */
export function modprobeOptions(
  reader: SysfsReader,
  module: string,
  dirs: readonly string[] = MODPROBE_DIRS,
): ModprobeOption[] {
  const files = new Map<string, string>();
  for (const dir of dirs) {
    for (const name of reader.listDir(dir) ?? []) {
      // kmod skips hidden files (`.name.conf`; conf_files_filter_out()): they set nothing.
      if (name.startsWith(".") || !name.endsWith(".conf") || files.has(name)) continue;
      files.set(name, `${dir}/${name}`);
    }
  }
  const wanted = module.replaceAll("-", "_");
  return [...files.keys()].sort().flatMap((name) => {
    const path = files.get(name)!;
    const text = readWholeText(reader, path) ?? "";
    // modprobe joins a line ending in a backslash to the next as it is, without a space, and
    // hands the rest of an options line to the kernel, which reads it as it reads its command
    // line (quotes, a parameter given twice).
    return text.replace(/\\\n/g, "").split("\n").flatMap((line) => {
      const found = /^[\t ]*options[\t ]+(\S+)(.*)$/.exec(line);
      if (found === null || found[1]!.replaceAll("-", "_") !== wanted) return [];
      return kernelParams(found[2]!).map((p) => ({ ...p, source: path }));
    });
  });
}

/**
 * The `ids=` of `options vfio-pci … ids=…` lines in modprobe.d ({@link modprobeOptions}), in the
 * order modprobe gives them.
 */
export function modprobeVfioIds(
  reader: SysfsReader,
  dirs: readonly string[] = MODPROBE_DIRS,
): VfioIdsAssignment[] {
  return modprobeOptions(reader, "vfio_pci", dirs).flatMap(({ param, value, source }) =>
    param === "ids" && value !== null ? [assignment(value, source)] : []
  );
}

/**
 * Whether a boolean module parameter's value is true as the kernel reads it (`kstrtobool`, and a
 * bare name for true): `1`, `y`, `Y`, `on`, `true`...
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals([null, "1", "Y", "on", "true", "0", "off", "n"].map(kernelTrue),
 *   [true, true, true, true, true, false, false, false]);
 * ```
 */
export function kernelTrue(value: string | null): boolean {
  return value === null || /^([1yYtT]|[oO][nN])/.test(value);
}

/**
 * What an entry matches, as one string: entries of equal keys take the same devices
 * (`10de:1b06` and `10DE:1b06:ffffffff`).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const [a, b] = parseVfioIds("10de:1b06,10DE:1b06:ffffffff", "kernel command line");
 * assertEquals(vfioIdsKey(a!), vfioIdsKey(b!));
 * ```
 */
export function vfioIdsKey(entry: VfioIdsEntry): string {
  return [
    entry.vendor,
    entry.device,
    entry.subvendor,
    entry.subdevice,
    entry.classCode,
    entry.classMask,
  ].join(":");
}

/**
 * Of `assignments` in the order vfio-pci is given them, the one it keeps (the last; `null` when
 * there is none), those it overwrites that name an entry the kept one does not, and those entries
 * (each once), which take nothing at boot.
 */
export function keptVfioIds(assignments: readonly VfioIdsAssignment[]): {
  kept: VfioIdsAssignment | null;
  overwritten: VfioIdsAssignment[];
  lost: VfioIdsEntry[];
} {
  const kept = assignments.at(-1) ?? null;
  const seen = new Set(kept?.entries.map(vfioIdsKey) ?? []);
  const lost: VfioIdsEntry[] = [];
  for (const entry of assignments.slice(0, -1).flatMap((a) => a.entries)) {
    if (seen.has(vfioIdsKey(entry))) continue;
    seen.add(vfioIdsKey(entry));
    lost.push(entry);
  }
  return {
    kept,
    overwritten: assignments.slice(0, -1).filter((a) => a.entries.some((e) => lost.includes(e))),
    lost,
  };
}

/** How {@link vfioIdsBinding} would bind a device at boot. */
export type VfioIdsBinding =
  /** `vfio-pci.ids=` with these IDs takes this device and none that the host keeps. */
  | { kind: "ids"; ids: string }
  /** The devices the host keeps that any `vfio-pci.ids=` entry for this device would take too. */
  | { kind: "twins"; ids: string; twins: PciAddress[] };

/**
 * The `vfio-pci.ids=` entry that binds `device` to vfio-pci at boot without taking a device the
 * host keeps. The kernel binds every device whose IDs match an entry, whatever its address, so
 * the entry names the subsystem IDs too when they tell `device` from another device of its model
 * outside `passed` (the devices going to guests); when nothing tells them apart, no entry is safe.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const gpu = (address: string, subsystemDeviceId: string) => ({
 *   address, vendorId: "10de", deviceId: "1b06", subsystemVendorId: "1458", subsystemDeviceId,
 * });
 * const mine = gpu("0000:0b:00.0", "3752");
 * assertEquals(vfioIdsBinding(mine, [mine], new Set()), { kind: "ids", ids: "10de:1b06" });
 * const other = gpu("0000:0c:00.0", "3702");
 * assertEquals(vfioIdsBinding(mine, [mine, other], new Set()), {
 *   kind: "ids",
 *   ids: "10de:1b06:1458:3752",
 * });
 * assertEquals(vfioIdsBinding(mine, [mine, other], new Set(["0000:0c:00.0"])).kind, "ids");
 * assertEquals(vfioIdsBinding(mine, [mine, gpu("0000:0c:00.0", "3752")], new Set()), {
 *   kind: "twins",
 *   ids: "10de:1b06",
 *   twins: ["0000:0c:00.0"],
 * });
 * ```
 */
export function vfioIdsBinding(
  device: Pick<
    PciDevice,
    "address" | "vendorId" | "deviceId" | "subsystemVendorId" | "subsystemDeviceId"
  >,
  devices: readonly Pick<
    PciDevice,
    "address" | "vendorId" | "deviceId" | "subsystemVendorId" | "subsystemDeviceId"
  >[],
  passed: ReadonlySet<PciAddress>,
): VfioIdsBinding {
  const ids = `${device.vendorId}:${device.deviceId}`;
  const kept = devices.filter((d) =>
    d.address !== device.address && !passed.has(d.address) &&
    d.vendorId === device.vendorId && d.deviceId === device.deviceId
  );
  if (kept.length === 0) return { kind: "ids", ids };
  const { subsystemVendorId: vendor, subsystemDeviceId: sub } = device;
  const twins = kept.filter((d) =>
    vendor === null || sub === null ||
    (d.subsystemVendorId ?? vendor) === vendor && (d.subsystemDeviceId ?? sub) === sub
  );
  if (twins.length > 0) return { kind: "twins", ids, twins: twins.map((d) => d.address) };
  return { kind: "ids", ids: `${ids}:${vendor}:${sub}` };
}

/** Where driverctl keeps the overrides it applies at every boot (`set-override` without `--nosave`). */
export const DRIVERCTL_DIR = "/etc/driverctl.d";

/** One override driverctl applies at boot: the driver it gives the device at `address`. */
export interface DriverctlOverride {
  /** The file it is kept in (`/etc/driverctl.d/pci-0000:0b:00.0`). */
  source: string;
  /** The address it names: driverctl binds whatever sits there, whichever card that is. */
  address: PciAddress;
  /** The driver it gives the device (`vfio-pci`). */
  driver: string;
}

/**
 * The PCI overrides kept in `dir` (driverctl names each file `pci-ADDRESS` and writes the driver
 * in it), sorted by address; files of other buses, hidden ones and empty ones left out.
 */
export function driverctlOverrides(
  reader: SysfsReader,
  dir: string = DRIVERCTL_DIR,
): DriverctlOverride[] {
  return (reader.listDir(dir) ?? []).flatMap((name) => {
    // Its domain as sysfs spells it: four hex digits, five behind Intel VMD (`10000`).
    const named = /^pci-([0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])$/i.exec(name)?.[1];
    const address = named === undefined ? null : canonicalPciAddress(named);
    if (address === null) return [];
    const driver = (reader.readText(`${dir}/${name}`) ?? "").trim();
    return driver === "" ? [] : [{ source: `${dir}/${name}`, address, driver }];
  }).sort((a, b) => a.address.localeCompare(b.address));
}
