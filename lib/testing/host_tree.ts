/**
 * Turns a host description (the format of `tests/fixtures/hosts/*.json`) into a sysfs-shaped
 * tree that discovery and the real `lspci -O sysfs.path=TREE/bus/pci` both read.
 *
 * Fillers for what a description leaves `null` or out (documented because they are visible):
 * - `subsystem_vendor`/`subsystem_device`/`revision` `null`: the sysfs file is not written, so
 *   discovery reports `null` again (config space holds 0 there).
 * - `driver` `null`: no `driver` link (unbound).
 * - `group` `null` on every device: no `kernel/iommu_groups` (a host without IOMMU).
 * - `numa_node` absent or null: `-1` (unknown). `boot_vga` absent: no file (`bootVga: null`).
 * - `root_buses` absent: every `bus/pci/devices` entry a directory (no `rootBus`); given, a
 *   function on one of them a link to `devices/pciDDDD:BB/ADDRESS`.
 * - `slot`: a `bus/pci/slots/NAME/address` file. `cmdline`: a `cmdline` file at the root.
 * - `host_use`: a `host_use.json` at the root, `[]` when absent (the description is the whole
 *   truth about its host), so planning from the tree knows the host's use.
 * - `flr` and `serial` both absent: a 64-byte `config` with a capability pointer, exactly what an
 *   unprivileged read of a real device returns, so lspci prints `<access denied>` and FLR stays
 *   unknown (`null`). `flr` given: a PCI Express capability with DevCap FLReset±. `serial`
 *   given: a 4096-byte config with a Device Serial Number extended capability (and the PCIe
 *   capability that must precede it, FLReset as `flr`, default `false`).
 * - `irq` `0` and zero `resource` lines: lspci skips devices without them.
 * - `modules`: written as `modules` beside `modalias` for snapshots; lspci only reports modules
 *   through libkmod, which needs `/lib/modules` of the running kernel.
 * - Pre-flight facts (`lib/host/preflight.ts`), each only when given: `reset_method`; `drm` (a
 *   `drm/cardN` directory, and the processes with it open as `proc/PID/comm` and a
 *   `proc/PID/fd/N` link to `/dev/dri/cardN`, as the kernel shows them); `console` (a
 *   `graphics/fbN` directory and a bound fbcon in `class/vtconsole`);
 *   `proc` (captured `iomem`, `modules` and the CPU vendor as `cpuinfo`, under `proc/`);
 *   `numa_nodes` (`devices/system/node/nodeN/cpulist`); `security` (AppArmor's and SELinux's
 *   switches).
 *
 * @module
 */

import type { HostUse, PciAddress } from "../host/types.ts";
import { busOf, canonicalPciAddress, pciAddressParts } from "../pci/address.ts";
import { headerTypeOfClass } from "../pci/class.ts";

/**
 * One PCI function of a host description: the shared format plus optional extras. IDs are hex
 * strings with or without `0x`, in any case; `null` means the source listing did not show it.
 */
export interface HostDeviceDescription {
  /** The function's address, `0000:01:00.0` (or `01:00.0`, domain 0). */
  bdf: string;
  /** Its IOMMU group number; `null` on every device describes a host without IOMMU. */
  group: number | null;
  /** `0x030000`: 6 hex digits with prog-if. */
  class: string;
  /** Vendor ID, `0x10de`. */
  vendor: string;
  /** Device ID, `0x1b80`. */
  device: string;
  /** Subsystem vendor ID, or `null` (no `subsystem_vendor` file is written). */
  subsystem_vendor: string | null;
  /** Subsystem device ID, or `null` (no `subsystem_device` file is written). */
  subsystem_device: string | null;
  /** The bound kernel driver (`vfio-pci`), or `null` when unbound. */
  driver: string | null;
  /** Revision, `0xa1`, or `null` (no `revision` file is written). */
  revision: string | null;
  /**
   * Class name as the listing showed it (`VGA compatible controller`). Not written to the tree
   * (lspci names classes itself); used by `topologyFromDescription()`.
   */
  class_name?: string | null;
  /**
   * Vendor and device name as one string, as lspci joins them (`NVIDIA Corporation GP104`). Not
   * written to the tree; the device name in `topologyFromDescription()`.
   */
  name?: string | null;
  /** Device Serial Number as lspci prints it: `00-11-22-ff-ff-33-44-55`. */
  serial?: string | null;
  /** Physical slot name (`bus/pci/slots/NAME/address`). */
  slot?: string | null;
  /** Its network interface: its name and MAC (`net/NAME/address`). */
  net?: { name: string; address: string } | null;
  /** NUMA node; absent or `null` writes `-1` (unknown). */
  numa_node?: number | null;
  /** For a virtual function: its physical function's address. */
  physfn?: string | null;
  /**
   * For an SR-IOV physical function: how many VFs it can provide (`sriov_totalvfs`); absent: as
   * many as the description lists. A PF with none listed gets `sriov_numvfs` 0.
   */
  sriov_totalvfs?: number | null;
  /**
   * Function Level Reset: `true`/`false` write a PCIe capability with or without FLReset;
   * absent or `null` (with no `serial`) leaves it unknown, as an unprivileged read would.
   */
  flr?: boolean | null;
  /** Whether the firmware used it as the boot display (`boot_vga` file); absent: no file. */
  boot_vga?: boolean | null;
  /** Kernel modules (kept in a `modules` file: lspci needs libkmod and `/lib/modules`). */
  modules?: string[] | null;
  /** The `reset_method` attribute's methods (`flr bus`); absent: no file (an older kernel). */
  reset_method?: string | null;
  /** Its DRM card number, and the processes with it open. */
  drm?: { card: number; clients?: { command: string; pid: number }[] } | null;
  /** `true`: a framebuffer of this device carries the (bound) framebuffer console. */
  console?: boolean | null;
}

/** Captured `/proc` files of a host, written under the tree's `proc/`. */
export interface HostProcDescription {
  /** `/proc/iomem` as captured (as root: with addresses). */
  iomem?: string;
  /** `/proc/modules` as captured. */
  modules?: string;
  /** `vendor_id` of `/proc/cpuinfo` (`GenuineIntel`, `AuthenticAMD`). */
  cpuinfo_vendor?: string;
}

/** A host description: the shared format plus optional extras. */
export interface HostDescription {
  /** Where the listing came from (a URL for the captured real hosts). */
  source?: string;
  /** `true` when only the IOMMU groups seen whole were transcribed. */
  partial?: boolean;
  /** Free text about the machine. */
  notes?: string;
  /** Every PCI function, in any order. */
  devices: HostDeviceDescription[];
  /**
   * The host's PCI root buses (`0000:00`, `0000:20`: each `[0000:20]` of `lspci -t`), on a host
   * with several host bridges. A function on one sits under `devices/pciDDDD:BB/`, its
   * `bus/pci/devices` entry a link there, as the kernel keeps it, so discovery reads it as on a
   * root bus (`rootBus`). Absent: every entry a directory, and bus 00 taken for the only root bus.
   */
  root_buses?: string[] | null;
  /** Written as `cmdline` at the tree root (discovery's `kernelCmdline`). */
  cmdline?: string | null;
  /** Written as `host_use.json` at the tree root (`[]` when absent). */
  host_use?: HostUse[];
  /** Captured `/proc` files, written under `proc/`. */
  proc?: HostProcDescription;
  /** Each NUMA node's CPU list (`{"0": "0-15", "1": "16-31"}`). */
  numa_nodes?: Record<string, string>;
  /** Whether AppArmor is enabled and SELinux enforcing. */
  security?: { apparmor?: boolean; selinux?: boolean };
}

/** Raised when a description is malformed (bad address, class or ID). */
export class HostDescriptionError extends Error {
  /** The error's name. */
  override name = "HostDescriptionError";
  /** The device's `bdf` as given, when the problem is in one device. */
  readonly bdf: string | null;
  /** Builds the error; `bdf` names the faulty device, `null` for the description as a whole. */
  constructor(message: string, bdf: string | null = null) {
    super(message);
    this.bdf = bdf;
  }
}

/** Reads and checks a host description JSON file. */
export function loadHostDescription(path: string | URL): HostDescription {
  const text = Deno.readTextFileSync(path);
  let data: HostDescription;
  try {
    data = JSON.parse(text) as HostDescription;
  } catch (error) {
    throw new HostDescriptionError(
      `Not a host description: "${path}": ${(error as Error).message}`,
    );
  }
  if (!Array.isArray(data?.devices)) {
    throw new HostDescriptionError(`Not a host description: "${path}": no "devices" array`);
  }
  // The fields every device needs, which the builders read as strings: a hand-written file
  // without one failed inside them with a TypeError naming no device.
  for (const [i, d] of data.devices.entries()) {
    const missing = ["bdf", "class", "vendor", "device"].filter((key) =>
      typeof (d as unknown as Record<string, unknown> | null)?.[key] !== "string"
    );
    if (missing.length > 0) {
      const bdf = typeof d?.bdf === "string" ? d.bdf : null;
      throw new HostDescriptionError(
        `Not a host description: "${path}": device ${i + 1}${bdf === null ? "" : ` "${bdf}"`} ` +
          `needs ${missing.map((key) => `"${key}"`).join(", ")} as a string`,
        bdf,
      );
    }
  }
  return data;
}

function hexNumber(text: string, bdf: string, field: string, max: number): number {
  const m = /^(?:0x)?([0-9a-f]+)$/i.exec(text.trim());
  const n = m ? parseInt(m[1] ?? "", 16) : NaN;
  if (!Number.isFinite(n) || n > max) {
    throw new HostDescriptionError(`Invalid ${field} "${text}" for device "${bdf}"`, bdf);
  }
  return n;
}

function hex(n: number, width: number): string {
  return `0x${n.toString(16).padStart(width, "0")}`;
}

function configSpace(
  d: HostDeviceDescription,
  ids: { vendor: number; device: number; classCode: number; revision: number; header: 0 | 1 | 2 },
): Uint8Array {
  const serial = d.serial ?? null;
  const capabilities = (d.flr ?? null) !== null || serial !== null;
  const bytes = new Uint8Array(serial !== null ? 4096 : capabilities ? 256 : 64);
  const view = new DataView(bytes.buffer);
  view.setUint16(0x00, ids.vendor, true);
  view.setUint16(0x02, ids.device, true);
  // A CardBus header keeps its capability pointer and subsystem IDs elsewhere: it gets none.
  const cardbus = ids.header === 2;
  if (!cardbus) view.setUint16(0x06, 0x0010, true); // Status: capability list present
  view.setUint8(0x08, ids.revision);
  view.setUint8(0x09, ids.classCode & 0xff);
  view.setUint8(0x0a, (ids.classCode >> 8) & 0xff);
  view.setUint8(0x0b, (ids.classCode >> 16) & 0xff);
  view.setUint8(0x0e, ids.header);
  if (ids.header !== 0) {
    // Bus numbers are not in the listings; a plausible secondary bus keeps lspci quiet.
    const bus = pciAddressParts(d.bdf).bus;
    view.setUint8(0x18, bus);
    view.setUint8(0x19, Math.min(bus + 1, 0xff));
    view.setUint8(0x1a, Math.min(bus + 1, 0xff));
  } else {
    if (d.subsystem_vendor != null) {
      view.setUint16(0x2c, hexNumber(d.subsystem_vendor, d.bdf, "subsystem vendor", 0xffff), true);
    }
    if (d.subsystem_device != null) {
      view.setUint16(0x2e, hexNumber(d.subsystem_device, d.bdf, "subsystem device", 0xffff), true);
    }
  }
  if (cardbus) return bytes;
  view.setUint8(0x34, 0x40);
  if (capabilities) {
    // PCI Express capability v2: endpoint (or root port for bridges), DevCap bit 28 = FLR.
    view.setUint8(0x40, 0x10);
    view.setUint16(0x42, 0x0002 | ((ids.header === 1 ? 4 : 0) << 4), true);
    view.setUint32(0x44, d.flr === true ? 1 << 28 : 0, true);
  }
  if (serial !== null) {
    const m =
      /^([0-9a-f]{2})-([0-9a-f]{2})-([0-9a-f]{2})-([0-9a-f]{2})-([0-9a-f]{2})-([0-9a-f]{2})-([0-9a-f]{2})-([0-9a-f]{2})$/i
        .exec(serial);
    if (!m) throw new HostDescriptionError(`Invalid serial "${serial}" for device "${d.bdf}"`);
    const b = m.slice(1).map((x) => parseInt(x, 16));
    view.setUint32(0x100, 0x00010003, true); // DSN extended capability, version 1, last
    view.setUint32(0x104, ((b[4]! << 24) | (b[5]! << 16) | (b[6]! << 8) | b[7]!) >>> 0, true);
    view.setUint32(0x108, ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0, true);
  }
  return bytes;
}

/**
 * Refuses a VF whose `physfn` the kernel could not have made, naming the VF: a PF the description
 * does not hold (the tree's `physfn` would dangle, and its PF's `virtfnN` could not be written:
 * "No such file or directory ... virtfn0"), the VF itself, or another VF (a VF has no VFs).
 * For the builders of this folder.
 */
export function checkPhysfns(description: HostDescription): void {
  const byAddress = new Map(description.devices.flatMap((d) => {
    const address = canonicalPciAddress(d.bdf);
    return address === null ? [] : [[address, d]];
  }));
  for (const d of description.devices) {
    if (d.physfn == null) continue;
    const pf = canonicalPciAddress(d.physfn);
    const why = pf === null
      ? "not a PCI address"
      : !byAddress.has(pf)
      ? "no device of the description has that address"
      : pf === canonicalPciAddress(d.bdf)
      ? "the device itself"
      : byAddress.get(pf)!.physfn != null
      ? "a VF itself"
      : null;
    if (why !== null) {
      throw new HostDescriptionError(
        `Invalid physfn "${d.physfn}" for device "${d.bdf}": ${why}`,
        d.bdf,
      );
    }
  }
}

/**
 * Writes the sysfs-shaped tree for `description` into `dir` (which must exist or be creatable).
 * Returns the canonical addresses written, sorted.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * buildHostTree({ devices: [{ bdf: "0000:00:01.0", group: 1, class: "0x060400",
 *   vendor: "0x8086", device: "0x1901", subsystem_vendor: null, subsystem_device: null,
 *   driver: "pcieport", revision: null }] }, dir);
 * assertEquals(Deno.readLinkSync(`${dir}/bus/pci/devices/0000:00:01.0/iommu_group`),
 *   "../../../../kernel/iommu_groups/1");
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function buildHostTree(
  description: HostDescription,
  dir: string,
): PciAddress[] {
  checkPhysfns(description);
  const devicesDir = `${dir}/bus/pci/devices`;
  Deno.mkdirSync(devicesDir, { recursive: true });
  Deno.mkdirSync(`${dir}/bus/pci/drivers`, { recursive: true });
  const addresses: PciAddress[] = [];
  const vfsOf = new Map<PciAddress, PciAddress[]>();
  const groups = new Set<number>();
  const consoles = { count: 0 };
  const rootBuses = rootBusesOf(description);
  for (const d of description.devices) {
    const address = canonicalPciAddress(d.bdf);
    if (address === null) throw new HostDescriptionError(`Invalid address "${d.bdf}"`, d.bdf);
    if (addresses.includes(address)) {
      throw new HostDescriptionError(`Duplicate device "${address}"`, d.bdf);
    }
    addresses.push(address);
    const vendor = hexNumber(d.vendor, d.bdf, "vendor", 0xffff);
    const device = hexNumber(d.device, d.bdf, "device", 0xffff);
    const classCode = hexNumber(d.class, d.bdf, "class", 0xffffff);
    const revision = d.revision == null ? 0 : hexNumber(d.revision, d.bdf, "revision", 0xff);
    const header = headerTypeOfClass(classCode);
    const path = `${devicesDir}/${address}`;
    const place = placeDevice(dir, address, rootBuses);
    // Each link leads from where the directory is, as the kernel's do.
    const link = (target: string, name: string) =>
      Deno.symlinkSync(relativePath(place, target), `${path}/${name}`);
    const write = (name: string, text: string) => Deno.writeTextFileSync(`${path}/${name}`, text);
    write("vendor", `${hex(vendor, 4)}\n`);
    write("device", `${hex(device, 4)}\n`);
    write("class", `${hex(classCode, 6)}\n`);
    if (d.subsystem_vendor != null) {
      write(
        "subsystem_vendor",
        `${hex(hexNumber(d.subsystem_vendor, d.bdf, "subsystem vendor", 0xffff), 4)}\n`,
      );
    }
    if (d.subsystem_device != null) {
      write(
        "subsystem_device",
        `${hex(hexNumber(d.subsystem_device, d.bdf, "subsystem device", 0xffff), 4)}\n`,
      );
    }
    if (d.revision != null) write("revision", `${hex(revision, 2)}\n`);
    write("irq", "0\n");
    write("resource", "0x0000000000000000 0x0000000000000000 0x0000000000000000\n".repeat(13));
    write("numa_node", `${d.numa_node ?? -1}\n`);
    if (d.boot_vga != null) write("boot_vga", d.boot_vga ? "1\n" : "0\n");
    const sub = (v: string | null | undefined) =>
      v == null ? "*" : hex(hexNumber(v, d.bdf, "subsystem", 0xffff), 8).slice(2).toUpperCase();
    const up = (n: number, w: number) => n.toString(16).padStart(w, "0").toUpperCase();
    write(
      "modalias",
      `pci:v0000${up(vendor, 4)}d0000${up(device, 4)}sv${sub(d.subsystem_vendor)}sd${
        sub(d.subsystem_device)
      }bc${up(classCode >> 16, 2)}sc${up((classCode >> 8) & 0xff, 2)}i${up(classCode & 0xff, 2)}\n`,
    );
    const upper = (n: number) => n.toString(16).padStart(4, "0").toUpperCase();
    const subsys = d.subsystem_vendor != null && d.subsystem_device != null
      ? `PCI_SUBSYS_ID=${upper(hexNumber(d.subsystem_vendor, d.bdf, "subsystem vendor", 0xffff))}:${
        upper(hexNumber(d.subsystem_device, d.bdf, "subsystem device", 0xffff))
      }\n`
      : "";
    // The kernel's format: class without leading zeros, IDs upper-case.
    write(
      "uevent",
      `${d.driver != null ? `DRIVER=${d.driver}\n` : ""}PCI_CLASS=${
        classCode.toString(16).toUpperCase()
      }\n` +
        `PCI_ID=${hex(vendor, 4).slice(2).toUpperCase()}:${
          hex(device, 4).slice(2).toUpperCase()
        }\n` +
        `${subsys}PCI_SLOT_NAME=${address}\n`,
    );
    if (d.modules != null) write("modules", `${d.modules.join(",")}\n`);
    if (d.reset_method != null) write("reset_method", `${d.reset_method}\n`);
    writeDisplayFacts(dir, path, d, consoles);
    Deno.writeFileSync(
      `${path}/config`,
      configSpace(d, { vendor, device, classCode, revision, header }),
    );
    if (d.driver != null) {
      Deno.mkdirSync(`${dir}/bus/pci/drivers/${d.driver}`, { recursive: true });
      link(`bus/pci/drivers/${d.driver}`, "driver");
    }
    if (d.group !== null) {
      const groupDir = `${dir}/kernel/iommu_groups/${d.group}/devices`;
      if (!groups.has(d.group)) Deno.mkdirSync(groupDir, { recursive: true });
      groups.add(d.group);
      link(`kernel/iommu_groups/${d.group}`, "iommu_group");
      Deno.symlinkSync(`../../../../bus/pci/devices/${address}`, `${groupDir}/${address}`);
    }
    if (d.net != null) {
      Deno.mkdirSync(`${path}/net/${d.net.name}`, { recursive: true });
      Deno.writeTextFileSync(`${path}/net/${d.net.name}/address`, `${d.net.address}\n`);
    }
    if (d.slot != null) {
      const slotDir = `${dir}/bus/pci/slots/${d.slot}`;
      Deno.mkdirSync(slotDir, { recursive: true });
      Deno.writeTextFileSync(`${slotDir}/address`, `${address.slice(0, -2)}\n`);
    }
    if (d.physfn != null) {
      const pf = canonicalPciAddress(d.physfn)!; // checkPhysfns
      link(placeOf(pf, rootBuses), "physfn");
      vfsOf.set(pf, [...(vfsOf.get(pf) ?? []), address]);
    }
  }
  const totals = new Map(description.devices.flatMap((d) => {
    const address = canonicalPciAddress(d.bdf);
    return address !== null && d.sriov_totalvfs != null ? [[address, d.sriov_totalvfs]] : [];
  }));
  for (const pf of new Set([...vfsOf.keys(), ...totals.keys()])) {
    const path = `${devicesDir}/${pf}`;
    const vfs = (vfsOf.get(pf) ?? []).sort();
    vfs.forEach((vf, i) =>
      Deno.symlinkSync(
        relativePath(placeOf(pf, rootBuses), placeOf(vf, rootBuses)),
        `${path}/virtfn${i}`,
      )
    );
    Deno.writeTextFileSync(`${path}/sriov_numvfs`, `${vfs.length}\n`);
    Deno.writeTextFileSync(`${path}/sriov_totalvfs`, `${totals.get(pf) ?? vfs.length}\n`);
  }
  if (description.cmdline != null) {
    Deno.writeTextFileSync(`${dir}/cmdline`, `${description.cmdline}\n`);
  }
  writeHostFacts(dir, description, consoles.count > 0);
  // A description lists every device its host uses, so none listed is knowledge too.
  Deno.writeTextFileSync(
    `${dir}/host_use.json`,
    `${JSON.stringify(description.host_use ?? [], null, 2)}\n`,
  );
  return addresses.sort();
}

/**
 * The description's {@link HostDescription.root_buses}, canonical (`0000:20`, as {@link busOf}
 * writes them). Throws {@link HostDescriptionError} on one that is no bus.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(rootBusesOf({ devices: [], root_buses: ["00", "0000:20"] }), new Set(["0000:00", "0000:20"]));
 * ```
 */
export function rootBusesOf(description: HostDescription): Set<string> {
  return new Set((description.root_buses ?? []).map((bus) => {
    const address = canonicalPciAddress(`${bus}:00.0`);
    if (address === null) throw new HostDescriptionError(`Invalid root bus "${bus}"`);
    return busOf(address);
  }));
}

/**
 * Where the directory of the function at `address` is, from the tree's root: on one of
 * `rootBuses`, `devices/pciDDDD:BB/ADDRESS`, as the kernel keeps it (discovery reads `rootBus`
 * from the entry's link there); else `bus/pci/devices/ADDRESS`, a directory, as the PCI functions
 * above it are not described.
 */
function placeOf(address: PciAddress, rootBuses: ReadonlySet<string>): string {
  const bus = busOf(address);
  return rootBuses.has(bus) ? `devices/pci${bus}/${address}` : `bus/pci/devices/${address}`;
}

/** Makes the directory of `address` at its {@link placeOf}, and its entry's link there; the place. */
function placeDevice(dir: string, address: PciAddress, rootBuses: ReadonlySet<string>): string {
  const entry = `bus/pci/devices/${address}`;
  const place = placeOf(address, rootBuses);
  Deno.mkdirSync(`${dir}/${place}`, { recursive: true });
  if (place !== entry) Deno.symlinkSync(relativePath("bus/pci/devices", place), `${dir}/${entry}`);
  return place;
}

/** The relative link from directory `from` to `to`, both paths from the tree's root. */
function relativePath(from: string, to: string): string {
  const a = from.split("/");
  const b = to.split("/");
  let common = 0;
  while (common < a.length && common < b.length && a[common] === b[common]) common++;
  return [...a.slice(common).map(() => ".."), ...b.slice(common)].join("/");
}

/** A device's DRM card, the processes with it open and its console framebuffer, when described. */
function writeDisplayFacts(
  dir: string,
  path: string,
  d: HostDeviceDescription,
  consoles: { count: number },
): void {
  if (d.drm != null) {
    Deno.mkdirSync(`${path}/drm/card${d.drm.card}`, { recursive: true });
    for (const { command, pid } of d.drm.clients ?? []) {
      const fds = `${dir}/proc/${pid}/fd`;
      Deno.mkdirSync(fds, { recursive: true });
      Deno.writeTextFileSync(`${dir}/proc/${pid}/comm`, `${command}\n`);
      const fd = [...Deno.readDirSync(fds)].length;
      Deno.symlinkSync(`/dev/dri/card${d.drm.card}`, `${fds}/${fd}`);
    }
  }
  if (d.console === true) {
    Deno.mkdirSync(`${path}/graphics/fb${consoles.count++}`, { recursive: true });
  }
}

/** The host-wide pre-flight files: `proc/`, NUMA nodes, security switches, a bound fbcon. */
function writeHostFacts(dir: string, description: HostDescription, fbcon: boolean): void {
  const put = (path: string, text: string) => {
    Deno.mkdirSync(`${dir}/${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
    Deno.writeTextFileSync(`${dir}/${path}`, text);
  };
  const proc = description.proc ?? {};
  if (proc.iomem !== undefined) put("proc/iomem", proc.iomem);
  if (proc.modules !== undefined) put("proc/modules", proc.modules);
  if (proc.cpuinfo_vendor !== undefined) {
    put("proc/cpuinfo", `processor\t: 0\nvendor_id\t: ${proc.cpuinfo_vendor}\n`);
  }
  for (const [node, cpus] of Object.entries(description.numa_nodes ?? {})) {
    put(`devices/system/node/node${node}/cpulist`, `${cpus}\n`);
  }
  const security = description.security ?? {};
  if (security.apparmor !== undefined) {
    put("module/apparmor/parameters/enabled", security.apparmor ? "Y\n" : "N\n");
  }
  if (security.selinux !== undefined) put("fs/selinux/enforce", security.selinux ? "1\n" : "0\n");
  if (fbcon) {
    put("class/vtconsole/vtcon1/name", "(M) frame buffer device\n");
    put("class/vtconsole/vtcon1/bind", "1\n");
  }
}
