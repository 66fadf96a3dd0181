/**
 * Planning: from a config, a discovered host and the VMs' definitions to a {@link Plan} (plain
 * data: per VM the hostdevs to add, keep and remove, the desired XML, refusals and warnings with
 * stable codes).
 *
 * @module
 */

export type * from "./types.ts";
export type * from "./libvirt_port.ts";
export { planHostdevs, type PlanOptions, planWorld, type PlanWorldOptions } from "./plan.ts";
export { hostIssues, resolveConfig, type ResolveOptions, type VmResolution } from "./resolve.ts";
export {
  type DeviceResolvers,
  onDefinedNetworks,
  type UnresolvedKind,
  type UsedDevices,
  withNetworks,
} from "./used_devices.ts";
export type { NetworkPool } from "./networks.ts";
export type { StartGuard } from "./issues.ts";
export {
  type BridgedNetwork,
  type DefinitionRead,
  type DomainSnapshot,
  type HostdevNetwork,
  type NetworksRead,
  readDefinition,
  readNetworks,
  readWorld,
  type World,
} from "./world.ts";
