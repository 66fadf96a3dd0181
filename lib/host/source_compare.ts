/**
 * Compares two discoveries of one host (sysfs + lspci against libvirt's node-device API, or a
 * snapshot against the live host) device by device, so a disagreement between the sources is
 * reported before anything is planned on either.
 *
 * @module
 */

import type { HostTopology, IommuState, PciAddress, PciDevice } from "./types.ts";
import { comparePciAddress } from "../pci/address.ts";

/** The per-device fields {@link compareTopologies} looks at. */
export type ComparedField =
  | "iommuGroup"
  | "vendorId"
  | "deviceId"
  | "subsystemVendorId"
  | "subsystemDeviceId"
  | "classCode"
  | "isBridge"
  | "driver"
  | "physfn"
  | "virtfns"
  | "numaNode";

/** Every compared field, in report order. */
export const COMPARED_FIELDS: readonly ComparedField[] = [
  "iommuGroup",
  "vendorId",
  "deviceId",
  "subsystemVendorId",
  "subsystemDeviceId",
  "classCode",
  "isBridge",
  "driver",
  "physfn",
  "virtfns",
  "numaNode",
];

/**
 * Fields one source may simply not know (`null` there means "not reported", not "none"):
 * libvirt's node-device XML has no subsystem IDs, and NUMA nodes are often unreported. They are
 * compared only when both sides have a value.
 */
export const OPTIONAL_FIELDS: readonly ComparedField[] = [
  "subsystemVendorId",
  "subsystemDeviceId",
  "numaNode",
];

/** A value of a compared field, as printed (`virtfns` joined with spaces). */
export type FieldValue = string | number | boolean | null;

/**
 * One way two topologies of a host disagree, or one disagrees with itself (`inconsistent`: an
 * entry of that side's `groupInconsistencies`). `a` and `b` follow the arguments' order.
 */
export type SourceDifference =
  | { kind: "iommu"; a: IommuState; b: IommuState }
  | {
    kind: "inconsistent";
    source: "a" | "b";
    groups: number[];
    devices: PciAddress[];
    detail: string;
  }
  | { kind: "missing"; address: PciAddress; missingFrom: "a" | "b" }
  | { kind: "field"; address: PciAddress; field: ComparedField; a: FieldValue; b: FieldValue };

function fieldValue(device: PciDevice, field: ComparedField): FieldValue {
  const value = device[field];
  return Array.isArray(value) ? value.join(" ") : value;
}

/**
 * Lists the differences between two topologies of one host: IOMMU state, each side's IOMMU group
 * data that disagrees with itself (its `groupInconsistencies`), devices present on one side only,
 * and per device the group, IDs, class, bridge flag, driver and SR-IOV links (see
 * {@link OPTIONAL_FIELDS} for fields compared only when both sides know them). Devices sorted by
 * address, fields in {@link COMPARED_FIELDS} order; empty when the sources agree.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { topologyFromDescription } from "../testing/host_description.ts";
 * const gpu = { bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x10de",
 *   device: "0x1b80", subsystem_vendor: null, subsystem_device: null, driver: "nouveau",
 *   revision: null };
 * const a = topologyFromDescription({ devices: [gpu] }, { source: "a" });
 * const b = topologyFromDescription({ devices: [{ ...gpu, driver: "vfio-pci" }] }, { source: "b" });
 * assertEquals(compareTopologies(a, b), [
 *   { kind: "field", address: "0000:01:00.0", field: "driver", a: "nouveau", b: "vfio-pci" },
 * ]);
 * ```
 */
export function compareTopologies(a: HostTopology, b: HostTopology): SourceDifference[] {
  const differences: SourceDifference[] = [];
  if (a.iommu !== b.iommu) differences.push({ kind: "iommu", a: a.iommu, b: b.iommu });
  for (const [source, topology] of [["a", a], ["b", b]] as const) {
    for (const { groups, devices, detail } of topology.groupInconsistencies) {
      differences.push({ kind: "inconsistent", source, groups, devices, detail });
    }
  }
  const inA = new Map(a.devices.map((d) => [d.address, d]));
  const inB = new Map(b.devices.map((d) => [d.address, d]));
  const addresses = [...new Set([...inA.keys(), ...inB.keys()])].sort(comparePciAddress);
  for (const address of addresses) {
    const da = inA.get(address);
    const db = inB.get(address);
    if (da === undefined || db === undefined) {
      differences.push({ kind: "missing", address, missingFrom: da === undefined ? "a" : "b" });
      continue;
    }
    for (const field of COMPARED_FIELDS) {
      const va = fieldValue(da, field);
      const vb = fieldValue(db, field);
      if (va === vb) continue;
      if (OPTIONAL_FIELDS.includes(field) && (va === null || vb === null)) continue;
      differences.push({ kind: "field", address, field, a: va, b: vb });
    }
  }
  return differences;
}

/**
 * One line for a difference, naming the sources by `labels` (default `a` and `b`; pass the
 * topologies' `source` to name them).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   formatSourceDifference(
 *     { kind: "field", address: "0000:01:00.0", field: "iommuGroup", a: 1, b: 2 },
 *     { a: "sysfs", b: "libvirt" },
 *   ),
 *   `0000:01:00.0: iommuGroup is 1 in sysfs, 2 in libvirt`,
 * );
 * ```
 */
export function formatSourceDifference(
  difference: SourceDifference,
  labels: { a: string; b: string } = { a: "a", b: "b" },
): string {
  // Fields a side may not know are compared only when both know them (OPTIONAL_FIELDS), so a
  // null or an empty list printed here is a side saying "none": no driver, group, PF or VFs.
  const show = (v: FieldValue) =>
    v === null || v === "" ? "none" : typeof v === "string" ? `"${v}"` : `${v}`;
  switch (difference.kind) {
    case "iommu":
      return `IOMMU is ${difference.a} in ${labels.a}, ${difference.b} in ${labels.b}`;
    case "inconsistent":
      return `${labels[difference.source]} disagrees with itself: ${difference.detail}`;
    case "missing": {
      const [has, lacks] = difference.missingFrom === "a"
        ? [labels.b, labels.a]
        : [labels.a, labels.b];
      return `${difference.address}: in ${has} only, missing from ${lacks}`;
    }
    case "field":
      return `${difference.address}: ${difference.field} is ${show(difference.a)} in ${labels.a}, ${
        show(difference.b)
      } in ${labels.b}`;
  }
}
