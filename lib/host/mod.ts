/**
 * The host: discovers PCI functions and IOMMU groups from a sysfs tree (the live `/sys` or a
 * captured one) and `lspci`, through an injected {@link SysfsReader}; captures snapshots; checks
 * readiness (`doctor`); compares with libvirt's node-device view.
 *
 * @module
 */

export type * from "./types.ts";
export {
  discoverHost,
  type DiscoverOptions,
  HostChangedError,
  SysfsRootError,
} from "./discover.ts";
export {
  type DeviceReadOptions,
  type GpuHolder,
  readDeviceAt,
  readHostUse,
} from "./sysfs_device.ts";
export {
  confinedReader,
  denoFsReader,
  type DirectoryEntry,
  type EntryKind,
  type NonPciMember,
  type SysfsFile,
  type SysfsReader,
  SysfsTreeError,
} from "./sysfs.ts";
export {
  commandLspciRunner,
  LspciError,
  type LspciRunner,
  pciIdsVendorNames,
  type VendorNames,
} from "./lspci.ts";
export {
  type SnapshotOptions,
  type SnapshotSummary,
  SnapshotTargetError,
  writeSnapshot,
} from "./snapshot.ts";
export {
  type DoctorFinding,
  type DoctorOptions,
  type DoctorStatus,
  type HookDoctorFacts,
  type LibvirtConnected,
  type LibvirtReach,
  runDoctor,
} from "./doctor.ts";
export {
  driverUsers,
  type HostFacts,
  type HostFactsOptions,
  type KernelModule,
  type QemuUser,
  readHostFacts,
  resetVerdict,
  type RomFileFacts,
} from "./preflight.ts";
export { discoverViaLibvirt, type NodeDeviceSource, NodeDeviceXmlError } from "./nodedev.ts";
export {
  COMPARED_FIELDS,
  type ComparedField,
  compareTopologies,
  type FieldValue,
  formatSourceDifference,
  OPTIONAL_FIELDS,
  type SourceDifference,
} from "./source_compare.ts";
