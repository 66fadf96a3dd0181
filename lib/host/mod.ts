/**
 * The host: discovers PCI functions and IOMMU groups from a sysfs tree (the live `/sys` or a
 * captured one) and `lspci`, through an injected {@link SysfsReader}; captures snapshots; checks
 * readiness (`doctor`); compares with libvirt's node-device view.
 *
 * @module
 */

export type * from "./types.ts";
export { discoverHost, type DiscoverOptions, SysfsRootError } from "./discover.ts";
export { denoFsReader, type SysfsFile, type SysfsReader } from "./sysfs.ts";
export { commandLspciRunner, LspciError, type LspciRunner } from "./lspci.ts";
export { writeSnapshot } from "./snapshot.ts";
export { type DoctorFinding, runDoctor } from "./doctor.ts";
export {
  discoverViaLibvirt,
  NodeDeviceGroupError,
  type NodeDeviceSource,
  NodeDeviceXmlError,
  topologyFromNodeDevices,
} from "./nodedev.ts";
export {
  compareTopologies,
  formatSourceDifference,
  type SourceDifference,
} from "./source_compare.ts";
