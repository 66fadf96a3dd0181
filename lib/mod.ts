/**
 * passthrough as a library: discover a host's PCI devices and IOMMU groups, load a config, plan
 * `<hostdev>` changes for libvirt VMs, render diffs and apply them safely, from your own scripts.
 * Pair it with `ffi/mod.ts` for the libvirt connection (`openLibvirtPort`) and the live-`/sys`
 * reader (`libcSysfsReader`).
 *
 * @example The whole flow on a captured host and libvirt's test driver
 * ```ts
 * import {
 *   applyPlan, buildHostTree, discoverHost, loadHostDescription, parseConfig, planHostdevs,
 *   renderDomainDiff,
 * } from "./mod.ts";
 * import { openLibvirtPort } from "../ffi/mod.ts";
 * import { assertEquals } from "../tests/helpers/assert.ts";
 *
 * const demo = new URL("../demo/", import.meta.url).pathname;
 * const tmp = Deno.makeTempDirSync();
 * buildHostTree(loadHostDescription(`${demo}host.json`), `${tmp}/sysfs`);
 * const host = await discoverHost({ root: `${tmp}/sysfs` });
 * const config = parseConfig(
 *   `version: 1\nvms:\n  win10:\n    devices:\n      - match: { vendor_device_id: "10de:1b80" }\n`,
 *   { file: "inline.yaml" },
 * );
 * using libvirt = openLibvirtPort(`test://${demo}world.xml`);
 *
 * const plan = planHostdevs({ config, host, libvirt });
 * const win10 = plan.vms[0]!;
 * assertEquals(win10.hostdevs, ["0000:21:00.0", "0000:21:00.1"]); // the GPU and its audio
 * console.log(renderDomainDiff(win10.currentXml, win10.desiredXml, { vm: "win10" }));
 *
 * const report = await applyPlan(plan, {
 *   libvirt,
 *   stateDir: `${tmp}/state`,
 *   confirm: (vm) => Promise.resolve(vm.name === "win10" ? "yes" : "no"),
 * });
 * assertEquals(report.changed, ["win10"]);
 * assertEquals(planHostdevs({ config, host, libvirt }).vms[0]!.changed, false);
 * Deno.removeSync(tmp, { recursive: true });
 * ```
 *
 * @module
 */

export type * from "./types.ts";
export type * from "./plan_types.ts";
export type * from "./libvirt_port.ts";
export * from "./pci_address.ts";

// Discovery: sysfs + lspci, captured trees, libvirt's node-device API.
export { discoverHost, type DiscoverOptions, SysfsRootError } from "./discovery.ts";
export { denoFsReader, type SysfsFile, type SysfsReader } from "./sysfs.ts";
export { commandLspciRunner, LspciError, type LspciRunner } from "./lspci.ts";
export { buildHostTree, HostDescriptionError, loadHostDescription } from "./host_tree.ts";
export type { HostDescription, HostDeviceDescription } from "./host_tree.ts";
export { topologyFromDescription } from "./host_description.ts";
export { writeSnapshot } from "./snapshot.ts";
export { type DoctorFinding, runDoctor } from "./doctor.ts";
export {
  discoverViaLibvirt,
  NodeDeviceGroupError,
  type NodeDeviceSource,
  NodeDeviceXmlError,
  topologyFromNodeDevices,
} from "./nodedev_discovery.ts";
export {
  compareTopologies,
  formatSourceDifference,
  type SourceDifference,
} from "./source_compare.ts";

// Config and planning.
export {
  type Config,
  ConfigError,
  ConfigErrors,
  type DeviceRule,
  loadConfig,
  type MatchCriteria,
  parseConfig,
  type VmConfig,
} from "./config.ts";
export { emptyVmPlan, planHostdevs, type PlanOptions, resolveConfig } from "./plan.ts";

// The domain XML and its diff.
export {
  DomainEditError,
  type DomainHostdev,
  DomainXmlError,
  editDomainXml,
  type LenientHostdevScan,
  lenientHostPciAddresses,
  METADATA_NAMESPACE,
  type ParsedDomain,
  parseDomainXml,
  scanHostdevsLeniently,
} from "./domain_xml.ts";
export { hasSignificantChanges, renderDomainDiff } from "./diff.ts";

// Applying, backups and rollback.
export {
  type ApplyOptions,
  applyPlan,
  type ApplyReport,
  type ConfirmAnswer,
  type VmApplyResult,
} from "./apply.ts";
export { type RollbackOptions, type RollbackReport, rollbackVm } from "./rollback.ts";
export { type BackupEntry, findBackup, listBackups, readBackupXml } from "./backups.ts";
export { DEFAULT_STATE_DIR, resolveStateDirPath, StateDirError } from "./state_dir.ts";
export { LockHeldError } from "./lock.ts";
