/**
 * The host's PCI picture as plain data. Every module that reasons about devices speaks these
 * types; discovery (sysfs + lspci, or libvirt's node-device API) produces them.
 *
 * Field names are a contract: `devices --json` and `groups --json` print these objects, each
 * device with one more key, `hostCritical` (`passthrough devices --help` lists the keys).
 *
 * @module
 */

/** A canonical PCI address, `DDDD:BB:SS.F` in lower-case hex, e.g. `0000:01:00.0`. */
export type PciAddress = string;

/** One PCI function as discovered on a host. */
export interface PciDevice {
  /** Canonical address, `0000:01:00.0`. */
  address: PciAddress;
  /** Vendor ID, 4 lower-case hex digits without `0x` (`10de`). */
  vendorId: string;
  /** Device ID, 4 lower-case hex digits without `0x`. */
  deviceId: string;
  /** Subsystem vendor ID, or `null` when the host does not report one. */
  subsystemVendorId: string | null;
  /** Subsystem device ID, or `null`. */
  subsystemDeviceId: string | null;
  /** Class code with prog-if, 6 lower-case hex digits (`030000`). */
  classCode: string;
  /** Revision, 2 lower-case hex digits, or `null`. */
  revision: string | null;
  /** Human vendor name from the PCI ID database, or `null`. */
  vendorName: string | null;
  /** Human device name from the PCI ID database, or `null`. */
  deviceName: string | null;
  /** Human class name (`VGA compatible controller`), or `null`. */
  className: string | null;
  /** The kernel driver bound now, or `null` when unbound. */
  driver: string | null;
  /** Kernel modules able to drive this device (lspci's "Kernel modules"). */
  modules: string[];
  /** IOMMU group number, or `null` when the host has no IOMMU groups. */
  iommuGroup: number | null;
  /** NUMA node, or `null` when unknown (`-1` in sysfs). */
  numaNode: number | null;
  /** Physical slot name (`3`, `CPU1 SLOT2`), or `null`. */
  physicalSlot: string | null;
  /**
   * A bridge as VFIO sees one: a type-1 or type-2 header, or class 0604, 0609 or 0607 where the
   * header is not known (`lib/pci/class.ts`). Never passed to a guest.
   */
  isBridge: boolean;
  /**
   * Whether the function sits directly on a PCI root bus, as the kernel's link to its entry
   * shows (`devices/pci0000:20/0000:20:00.2`, on a host with several host bridges); absent where
   * the source does not say (a tree of plain directories, a description without `root_buses`):
   * bus 0 is then taken for the only root bus.
   */
  rootBus?: boolean;
  /** For an SR-IOV virtual function: the address of its physical function. */
  physfn: PciAddress | null;
  /** For an SR-IOV physical function: the addresses of its virtual functions. */
  virtfns: PciAddress[];
  /**
   * For an SR-IOV physical function: how many VFs it can provide (`sriov_totalvfs`). Absent on
   * any other device, and where the source does not say.
   */
  sriovTotalVfs?: number;
  /** For an SR-IOV physical function: how many VFs are enabled now (`sriov_numvfs`), or absent. */
  sriovNumVfs?: number;
  /**
   * For an SR-IOV physical function with a network interface: the current MAC of its first
   * interface by name (`net/IFACE/address`, lower case; a bond's slave shows the bond's), which
   * `mac: auto` derives from where the PF has no {@link PciDevice.serial}, one of this host's
   * own MACs; absent on any other device, and where the source does not say.
   */
  macAddress?: string;
  /** `true` when the firmware used this device as the boot display. `null` when not reported. */
  bootVga: boolean | null;
  /**
   * Function Level Reset capability, read from the device's config space; `null` when the config
   * space is not readable beyond the 64-byte header (an unprivileged read).
   */
  flr: boolean | null;
  /** PCIe Device Serial Number as lspci prints it (`00-11-22-ff-ff-33-44-55`), or `null`. */
  serial: string | null;
}

/** One IOMMU group: the unit of isolation that VFIO assigns as a whole. */
export interface IommuGroup {
  /** The group number: the name of its `/sys/kernel/iommu_groups/N` directory. */
  group: number;
  /** Members sorted by address. */
  devices: PciDevice[];
}

/**
 * IOMMU group data that disagrees with itself: a device's `iommu_group` link against the
 * group's own listing (`kernel/iommu_groups/N/devices`), a device listed in two groups, a
 * listed member that `bus/pci/devices` does not have, a group number that is not one, a device
 * with no group on a host that has groups, an entry that vanished while discovery read it. A
 * closure computed from such data could hand a guest part of a group, so no VM may take a
 * device in `devices` or a member of a group in `groups`.
 */
export interface GroupInconsistency {
  /** The groups whose membership cannot be trusted, ascending (may be empty). */
  groups: number[];
  /** The devices whose group cannot be trusted, sorted (may be empty). */
  devices: PciAddress[];
  /** What disagrees, naming the entries relative to the tree (`kernel/iommu_groups/7/devices`). */
  detail: string;
}

/** Whether the host exposes IOMMU groups at all. */
export type IommuState = "enabled" | "absent";

/** Everything discovery knows about one host. */
export interface HostTopology {
  /** Where the data came from: `/sys`, a captured tree's path, or a libvirt URI. */
  source: string;
  /** `absent` when `kernel/iommu_groups` is empty or missing: then no passthrough is safe. */
  iommu: IommuState;
  /** Every PCI function, sorted by address. */
  devices: PciDevice[];
  /** Every IOMMU group, sorted by number; empty when `iommu` is `absent`. */
  groups: IommuGroup[];
  /**
   * Where the host's IOMMU group data disagrees with itself (see {@link GroupInconsistency}):
   * planning refuses every VM that would take a device concerned (`group-inconsistent`).
   * Empty when the data agrees, and from sources that carry no second view to check against.
   */
  groupInconsistencies: GroupInconsistency[];
  /** The kernel command line when known (to spot ACS override), else `null`. */
  kernelCmdline: string | null;
  /**
   * Devices the running host is using right now: the controller of its storage (a mounted
   * filesystem, swap, a block device under LVM or md, a ZFS pool's disk), the NIC carrying the
   * default route, the boot VGA behind the console. Planning refuses to hand these
   * to a guest. `null` when unknown: only a live host or a tree captured with `snapshot`
   * (`host_use.json`) knows; libvirt's node-device API does not. Planning refuses a host whose
   * use is unknown (`host-use-unknown`).
   */
  hostUse: HostUse[] | null;
}

/**
 * Why the host needs a device right now: it is an ancestor of the block device of a mounted
 * filesystem, of a swap partition, of a block device that device-mapper, md or bcache holds, or
 * of a disk of an imported ZFS pool; it is the NIC carrying the default route, or a route to a
 * network the host has an address on or a static route to; it is the boot VGA device while a
 * framebuffer console is in use; or (the start guard only) it is a GPU whose device node a
 * process holds open, or it holds a block disk or USB device of
 * the starting VM or of another running VM.
 */
export type HostUseReason =
  | "mounted-filesystem"
  | "swap"
  | "block-holder"
  | "zfs-pool"
  | "default-route"
  | "network-route"
  | "console-vga"
  /**
   * A process holds the GPU's DRM or NVIDIA device node open (the start guard only; `plan`
   * warns, `host-driver-busy`).
   */
  | "gpu-in-use"
  /**
   * A block disk, USB, SCSI or mediated device, network interface (or network's) or character
   * device of the starting VM or another running VM (the start guard only; `plan` reads them
   * from definitions).
   */
  | "vm-device"
  /**
   * A PCI function another running VM was given (a `<hostdev>`, an `<interface type='hostdev'>`
   * or a hostdev network's entry): the start guard only, asked about the VFs of a PF the starting
   * VM takes, since unbinding the PF removes them (`plan` refuses the pair from definitions,
   * `sriov-split`), and about the other functions of the IOMMU groups it takes, which go to one
   * guest at a time (`plan`: `group-shared-with-other-vm`).
   */
  | "vm-passed";

/** One device the running host is using. */
export interface HostUse {
  /** The device's canonical address. */
  address: PciAddress;
  /** What the host uses it for. */
  reason: HostUseReason;
  /**
   * What was seen: `/ on nvme0n1p2`, `swap on nvme0n1p3`, `nvme1n1p1 held by dm-0 (vg-data)`,
   * `ZFS pool tank on nvme2n1p1`, `default route via enp5s0`, `boot_vga=1 with fbcon`,
   * `/dev/dri/card1 open in Xorg (pid 812)`.
   */
  detail: string;
}
