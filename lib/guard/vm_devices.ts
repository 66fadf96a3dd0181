/**
 * The host devices VMs use without passing a PCI function through, as the start guard sees them:
 * a `<disk type='block'>` on a whole host disk (`/dev/disk/by-id/nvme-...`), a
 * `<hostdev type='usb'>`, `type='scsi'` or `type='mdev'` (a vGPU on its GPU), an
 * `<interface type='direct'>` or `type='bridge'` on a NIC (or `type='network'` on a network
 * bridged to one), or an `<input type='evdev'>` or `<serial type='dev'>` on a USB or PCI device
 * keeps the PCI controller under it busy while its VM runs, and libvirt does not know it: a
 * start that detaches the controller pulls the device from under that VM. Read from the QEMU
 * driver's status files (`/run/libvirt/qemu/NAME.xml`, one per running domain): the hook must
 * not call libvirt. The starting VM's own such devices count
 * the same way: taking their controller would pull them from under the guest being started.
 *
 * @module
 */

import type { HostUse, PciAddress, PciDevice } from "../host/types.ts";
import type { SysfsReader } from "../host/sysfs.ts";
import {
  blockDeviceControllers,
  charDeviceControllers,
  type HostUsbDevice,
  mdevControllers,
  nicsUnder,
  pciAncestor,
  pciDevicesUnder,
  pciFunctionsHolding,
  readUsbDevices,
  scsiHostControllers,
  usbDeviceControllers,
} from "../host/sysfs_device.ts";
import { scanPassedDevicesLeniently } from "../domain/lenient.ts";
import { elementWords } from "./check.ts";
import { describeUsbSource } from "../domain/usb_source.ts";
import type { UsedDevices } from "../plan/used_devices.ts";

/** Where libvirt's QEMU driver keeps the status XML of each running domain. */
export const QEMU_STATUS_DIR = "/run/libvirt/qemu";

/**
 * The most of a libvirt status file (a running domain's, a running network's) the check reads: twice
 * the largest domain XML the check takes on stdin, since a status holds the definition and more. A
 * larger one refuses the start (a status read in part could hide devices), so the cap stays above
 * what libvirt writes, not near a network pool's size (256 VFs take about 25 KB).
 */
const MAX_STATUS_XML_BYTES = 32 * 1024 * 1024;

/**
 * A libvirt status file's XML, read whole; `null` when it is missing (the domain or network no
 * longer runs). Throws when it is larger than 32 MiB: a status read in part could hide devices.
 */
export function readStatusXml(reader: SysfsReader, file: string): string | null {
  const bytes = reader.readBytes(file, MAX_STATUS_XML_BYTES + 1);
  if (bytes === null) return null;
  if (bytes.length > MAX_STATUS_XML_BYTES) {
    throw new Error(`it is larger than ${MAX_STATUS_XML_BYTES} bytes`);
  }
  return new TextDecoder().decode(bytes);
}

/** Where {@link vmDeviceUses} reads: sysfs, `/dev`, the status files. */
export interface VmDeviceRoots {
  sysRoot: string;
  devRoot: string;
  statusDir: string;
}

/** USB devices and root hubs (`1-2`, `1-2.4`, `usb1`), not their interfaces (`1-2:1.0`). */
const USB_DEVICES = { dir: "bus/usb/devices", entry: /^[^:]+$/ };

/**
 * The sysfs directories whose entries link to the host devices VMs use, with the entries that
 * can be such a device: USB devices ({@link USB_DEVICES}); network interfaces and SCSI hosts;
 * serial ports, not the virtual consoles (`tty1`, `console`, `ptmx`); input event devices (what
 * evdev reads); parallel ports; mediated devices.
 */
const DEVICE_DIRS: readonly { dir: string; entry: RegExp }[] = [
  USB_DEVICES,
  { dir: "class/net", entry: /^[^:]+$/ },
  { dir: "class/scsi_host", entry: /^host\d+$/ },
  { dir: "class/tty", entry: /^(?!tty\d*$|console$|ptmx$)[^:]+$/ },
  { dir: "class/input", entry: /^event\d+$/ },
  { dir: "class/ppdev", entry: /^parport\d+$/ },
  { dir: "bus/mdev/devices", entry: /^[0-9a-f-]+$/ },
];

/**
 * Which of `devices` have a block device, a USB device, a SCSI host adapter, a network
 * interface or a character device under them (a disk, USB, storage or network controller, a
 * serial card, an I2C controller with a touchpad): only their starts need the other VMs' devices
 * resolved.
 */
function withHostDevices(
  reader: SysfsReader,
  sysRoot: string,
  devices: readonly PciDevice[],
): Set<PciAddress> {
  const wanted = new Set(devices.map((d) => d.address));
  const found = new Set<PciAddress>();
  for (const name of reader.listDir(`${sysRoot}/class/block`) ?? []) {
    for (const address of pciDevicesUnder(reader, sysRoot, "block", name)) {
      if (wanted.has(address)) found.add(address);
    }
  }
  for (const { dir, entry } of DEVICE_DIRS) {
    for (const address of linkedFunctions(reader, `${sysRoot}/${dir}`, entry)) {
      if (wanted.has(address)) found.add(address);
      // A NIC that is an SR-IOV VF: passing its PF destroys it (see `nicsUnder`).
      const pf = dir === "class/net"
        ? reader.readLink(`${sysRoot}/bus/pci/devices/${address}/physfn`)
        : null;
      const pfAddress = pf === null ? null : pciAncestor(pf);
      if (pfAddress !== null && wanted.has(pfAddress)) found.add(pfAddress);
    }
  }
  return found;
}

/** The PCI functions the entries of `dir` that match `entry` hang under (`pciFunctionsHolding`). */
function linkedFunctions(reader: SysfsReader, dir: string, entry: RegExp): PciAddress[] {
  return (reader.listDir(dir) ?? []).flatMap((name) => {
    const link = entry.test(name) ? reader.readLink(`${dir}/${name}`) : null;
    return link === null ? [] : pciFunctionsHolding(link);
  });
}

/**
 * The devices among `devices` under a host device the starting VM itself uses (`own`: resolved
 * directly, a few links each; its USB devices only when a device taken is a USB controller with
 * devices plugged in) or another running VM uses (`vm` is the one starting, whose own status is
 * skipped): as host use, reason `vm-device`; and the VFs among `devices` of a PF among them, and
 * the `groupMates` (what VFIO hands the guest along with the IOMMU groups it takes), that another
 * running VM was given, reason `vm-passed`. The other VMs' status files are read only when one
 * runs and one of `devices` has a disk, a USB device, a SCSI host adapter, a network interface or
 * a character device under it, or is such a VF, or there are group mates. Throws
 * when a status file is larger than 32 MiB, a disk's or character device's path cannot be read,
 * or `networkInterfaces` throws (the check then fails closed).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "../host/sysfs.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.mkdirSync(`${dir}/sys/class/block`, { recursive: true });
 * Deno.mkdirSync(`${dir}/qemu`);
 * Deno.symlinkSync("../../devices/pci0000:00/0000:00:01.1/0000:01:00.0/nvme/nvme0/nvme0n1",
 *   `${dir}/sys/class/block/nvme0n1`);
 * Deno.writeTextFileSync(`${dir}/qemu/nas.xml`, `<domstatus><domain><name>nas</name><devices>
 *   <disk type='block' device='disk'><source dev='/dev/nvme0n1'/></disk></devices></domain></domstatus>`);
 * const roots = { sysRoot: `${dir}/sys`, devRoot: `${dir}/dev`, statusDir: `${dir}/qemu` };
 * const nvme = { address: "0000:01:00.0" } as import("../host/types.ts").PciDevice;
 * const own = {
 *   blockDisks: [], usbDevices: [], scsiHosts: [], mdevs: [], netDevices: [], charDevices: [],
 *   networks: [],
 *   networkDevices: [],
 * };
 * assertEquals(vmDeviceUses(denoFsReader(), roots, { vm: "desktop", devices: [nvme], own }), [{
 *   address: "0000:01:00.0", reason: "vm-device", detail: 'disk /dev/nvme0n1 of running VM "nas"',
 * }]);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function vmDeviceUses(
  reader: SysfsReader,
  roots: VmDeviceRoots,
  options: {
    vm: string;
    devices: readonly PciDevice[];
    own: UsedDevices;
    /** The host interfaces a running libvirt network puts guests on (none: not resolved). */
    networkInterfaces?: (name: string) => readonly string[];
    /**
     * The other functions of the IOMMU groups the start takes, which it does not name: libvirt
     * refuses a start whose group holds one another guest has, and no policy lifts that.
     */
    groupMates?: readonly PciAddress[];
  },
): HostUse[] {
  const uses: HostUse[] = [];
  let plugged: HostUsbDevice[] | null = null;
  let usbControllers: Set<PciAddress> | null = null;
  // Each USB device's attributes are read only when a device taken is a USB controller in use.
  const usbUnder = (among: ReadonlySet<PciAddress>) => {
    usbControllers ??= new Set(
      linkedFunctions(reader, `${roots.sysRoot}/${USB_DEVICES.dir}`, USB_DEVICES.entry),
    );
    return [...among].some((address) => usbControllers!.has(address));
  };
  const useAll = (used: UsedDevices, whose: string, among: ReadonlySet<PciAddress>) => {
    const use = (addresses: readonly PciAddress[], what: string) => {
      for (const address of addresses) {
        if (among.has(address)) {
          uses.push({ address, reason: "vm-device", detail: `${what} of ${whose}` });
        }
      }
    };
    for (const path of used.blockDisks) {
      use(blockDeviceControllers(reader, roots, path), `disk ${path}`);
    }
    for (const source of used.usbDevices.length > 0 && usbUnder(among) ? used.usbDevices : []) {
      plugged ??= readUsbDevices(reader, roots.sysRoot);
      use(usbDeviceControllers(plugged, source), describeUsbSource(source));
    }
    for (const uuid of used.mdevs) {
      use(mdevControllers(reader, roots.sysRoot, uuid), `mediated device ${uuid}`);
    }
    for (const adapter of used.scsiHosts) {
      use(scsiHostControllers(reader, roots.sysRoot, adapter), `SCSI adapter ${adapter}`);
    }
    for (const name of used.netDevices) {
      use(nicsUnder(reader, roots.sysRoot, name), `network interface ${name}`);
    }
    for (const path of used.charDevices) {
      use(charDeviceControllers(reader, roots, path), `character device ${path}`);
    }
    const onNetwork = (network: string, name: string) =>
      use(nicsUnder(reader, roots.sysRoot, name), `network ${network} (interface ${name})`);
    for (const network of used.networks) {
      for (const name of options.networkInterfaces?.(network) ?? []) onNetwork(network, name);
    }
    for (const { network, device } of used.networkDevices) onNetwork(network, device);
  };
  useAll(options.own, "this VM itself", new Set(options.devices.map((d) => d.address)));
  // Most starts find no other VM running: one listing, and nothing else is read.
  const others = otherRunningVms(reader, roots.statusDir, options.vm);
  if (others.length === 0) return uses;
  const candidates = withHostDevices(reader, roots.sysRoot, options.devices);
  const along = new Set([...vfsOfTakenPfs(options.devices), ...options.groupMates ?? []]);
  if (candidates.size === 0 && along.size === 0) return uses;
  for (const name of others) {
    const xml = readOtherStatus(reader, roots.statusDir, name);
    // Gone since the listing: that VM stopped.
    if (xml === null) continue;
    const whose = `running VM ${JSON.stringify(name)}`;
    const scan = scanPassedDevicesLeniently(xml);
    for (const { address, element } of scan.devices) {
      if (!along.has(address)) continue;
      uses.push({ address, reason: "vm-passed", detail: `${elementWords(element)} of ${whose}` });
    }
    useAll(scan, whose, candidates);
  }
  return uses;
}

/** The names of the VMs running besides `vm`, from libvirt's status files in `statusDir`. */
function otherRunningVms(reader: SysfsReader, statusDir: string, vm: string): string[] {
  return (reader.listDir(statusDir) ?? [])
    .flatMap((entry) => entry.endsWith(".xml") ? [entry.slice(0, -4)] : [])
    .filter((name) => name !== vm)
    .sort();
}

/**
 * The VFs among `devices` whose PF is among them too. One another VM holds is in use (the check
 * asks about a PF's VFs too): libvirt checks only the PF's own address and IOMMU group, and the VF
 * would go with the PF.
 */
function vfsOfTakenPfs(devices: readonly PciDevice[]): Set<PciAddress> {
  const taken = new Set(devices.map((d) => d.address));
  return new Set(
    devices.flatMap((d) => d.physfn !== null && taken.has(d.physfn) ? [d.address] : []),
  );
}

/** The status XML of running VM `name`; `null` when it is gone (the VM stopped). */
function readOtherStatus(reader: SysfsReader, statusDir: string, name: string): string | null {
  const file = `${statusDir}/${name}.xml`;
  try {
    return readStatusXml(reader, file);
  } catch (error) {
    const why = (error as Error).message;
    throw new Error(`the status of running VM ${JSON.stringify(name)} (${file}): ${why}`);
  }
}
