/**
 * passthrough as a library: discover a host's PCI devices and IOMMU groups, load a config, plan
 * `<hostdev>` changes for libvirt VMs, render diffs and apply them safely.
 *
 * @module
 */

export type * from "./types.ts";
export type * from "./plan_types.ts";
export type * from "./libvirt_port.ts";
export * from "./pci_address.ts";
