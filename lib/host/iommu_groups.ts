/**
 * IOMMU groups: the one grouping every discovery source (sysfs, libvirt's node devices, host
 * descriptions) shares, so their topologies compare equal; the strict parse of a group number;
 * and the cross-check of sysfs's two views of membership (each device's `iommu_group` link and
 * each group's `kernel/iommu_groups/N/devices` listing).
 *
 * @module
 */

import type { GroupInconsistency, IommuGroup, PciAddress, PciDevice } from "./types.ts";
import { hostDriverOf, type NonPciMember, parseGroupNumber, type SysfsReader } from "./sysfs.ts";
import { canonicalPciAddress, comparePciAddress, pciAddressParts } from "../pci/address.ts";

/**
 * The devices' IOMMU groups in ascending group order, members in the order given; devices with
 * no group (`iommuGroup: null`) are in none.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import type { PciDevice } from "./types.ts";
 * const a = { address: "0000:01:00.0", iommuGroup: 7 } as PciDevice;
 * const b = { address: "0000:00:1f.0", iommuGroup: 2 } as PciDevice;
 * const c = { address: "0000:00:00.0", iommuGroup: null } as PciDevice;
 * assertEquals(groupDevices([a, b, c]), [{ group: 2, devices: [b] }, { group: 7, devices: [a] }]);
 * ```
 */
export function groupDevices(devices: readonly PciDevice[]): IommuGroup[] {
  const byGroup = new Map<number, PciDevice[]>();
  for (const device of devices) {
    if (device.iommuGroup === null) continue;
    const members = byGroup.get(device.iommuGroup) ?? [];
    members.push(device);
    byGroup.set(device.iommuGroup, members);
  }
  return [...byGroup.entries()].sort(([a], [b]) => a - b).map(([group, members]) => ({
    group,
    devices: members,
  }));
}

// Discovery's callers take the group number's reading from here; it lives with the reader, which
// the start guard loads without this module.
export { parseGroupNumber } from "./sysfs.ts";

/** What sysfs says about membership, read but not yet judged (see {@link settleGroups}). */
export interface GroupEvidence {
  /** Per device: the last component of its `iommu_group` link, `null` without a link. */
  links: ReadonlyMap<PciAddress, string | null>;
  /**
   * `kernel/iommu_groups`: each entry's name and the names in its `devices` listing (`null`
   * when the entry has none). Empty when the tree has no `kernel/iommu_groups`.
   */
  listings: ReadonlyMap<string, readonly string[] | null>;
  /** The device's PCI ancestors, nearest first, when the tree records them (else `[]`). */
  ancestors?: (address: PciAddress) => PciAddress[];
  /**
   * The non-PCI device (ACPI, platform) listing `group` names as `name`, or `null` when it cannot
   * be read as one (`readNonPciMember`). Default: none is read.
   */
  other?: (group: number, name: string) => NonPciMember | null;
}

/**
 * Reads every `kernel/iommu_groups/N/devices` listing under `root` for {@link settleGroups}.
 * Names are sorted, so every reader gives the same evidence.
 */
export function readGroupListings(
  reader: SysfsReader,
  root: string,
): Map<string, string[] | null> {
  const listings = new Map<string, string[] | null>();
  for (const name of (reader.listDir(`${root}/kernel/iommu_groups`) ?? []).sort()) {
    listings.set(
      name,
      reader.listDir(`${root}/kernel/iommu_groups/${name}/devices`)?.sort() ?? null,
    );
  }
  return listings;
}

/**
 * Sets each device's `iommuGroup` from `evidence` and returns where the evidence disagrees. A
 * device's link decides its group; a device without a link takes the one group whose listing
 * names it (a partly copied tree). When listings exist, each link must be confirmed by exactly
 * its own group's listing, and every listed member must be a known device. A device left
 * without a group on a host that has groups is reported with the groups it most likely belongs
 * to: those of the other functions of its card, and of its nearest grouped PCI ancestor.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import type { PciDevice } from "./types.ts";
 * const gpu = { address: "0000:01:00.0", iommuGroup: null } as PciDevice;
 * const audio = { address: "0000:01:00.1", iommuGroup: null } as PciDevice;
 * const problems = settleGroups([gpu, audio], {
 *   links: new Map([["0000:01:00.0", "5"], ["0000:01:00.1", "5"]]),
 *   listings: new Map([["5", ["0000:01:00.0"]]]),
 * });
 * assertEquals([gpu.iommuGroup, audio.iommuGroup], [5, 5]);
 * assertEquals(problems.map((p) => [p.groups, p.devices]), [[[5], ["0000:01:00.1"]]]);
 * ```
 */
export function settleGroups(
  devices: readonly PciDevice[],
  evidence: GroupEvidence,
): GroupInconsistency[] {
  const problems: GroupInconsistency[] = [];
  const flag = (groups: (number | null)[], addresses: PciAddress[], detail: string) => {
    const known = groups.filter((g): g is number => g !== null);
    problems.push({
      groups: [...new Set(known)].sort((a, b) => a - b),
      devices: [...new Set(addresses)].sort(comparePciAddress),
      detail,
    });
  };
  const listedIn = readListings(devices, evidence, flag);
  for (const device of devices) {
    const address = device.address;
    const link = evidence.links.get(address) ?? null;
    const linked = link === null ? null : parseGroupNumber(link);
    const listed = listedIn.get(address) ?? [];
    device.iommuGroup = linked ?? (link === null && listed.length === 1 ? listed[0]! : null);
    const where = listed.map((g) => `kernel/iommu_groups/${g}/devices`).join(" and ");
    if (link !== null && linked === null) {
      flag(listed, [address], `${address}'s iommu_group link names "${link}", not a group number`);
    } else if (listed.length > 1) {
      flag([linked, ...listed], [address], `${where} all list ${address}`);
    } else if (linked !== null && evidence.listings.size > 0 && listed[0] !== linked) {
      flag(
        [linked, ...listed],
        [address],
        `${address}'s iommu_group link names group ${linked}, but ${
          listed.length === 0
            ? `kernel/iommu_groups/${linked}/devices does not list it`
            : `${where} lists it`
        }`,
      );
    }
  }
  flagGroupless(devices, evidence, listedIn, flag);
  return problems.sort((a, b) =>
    (a.groups[0] ?? -1) - (b.groups[0] ?? -1) ||
    comparePciAddress(a.devices[0] ?? "", b.devices[0] ?? "") || a.detail.localeCompare(b.detail)
  );
}

type Flag = (groups: (number | null)[], addresses: PciAddress[], detail: string) => void;

/** The groups listing each known device; flags listings that are not groups of known devices. */
function readListings(
  devices: readonly PciDevice[],
  { listings, other }: GroupEvidence,
  flag: Flag,
): Map<PciAddress, number[]> {
  const known = new Set(devices.map((d) => d.address));
  const listedIn = new Map<PciAddress, number[]>();
  for (const [name, members] of listings) {
    const group = parseGroupNumber(name);
    if (group === null) {
      const addresses = (members ?? []).map(canonicalPciAddress).filter((a) => a !== null);
      flag([], addresses, `kernel/iommu_groups/${name} is not a group number`);
      continue;
    }
    for (const entry of members ?? []) {
      const address = canonicalPciAddress(entry);
      const nonPci = address !== null && known.has(address) ? null : other?.(group, entry) ?? null;
      if (nonPci !== null) {
        // No guest takes it; only a host driver on it keeps VFIO from taking the group.
        const driver = hostDriverOf(nonPci);
        if (driver !== null) {
          flag(
            [group],
            [],
            `kernel/iommu_groups/${group}/devices lists "${entry}" (bus ${nonPci.bus}, driver ${driver}), no PCI device: VFIO takes a group only while no host driver holds any of its devices`,
          );
        }
        continue;
      }
      if (address === null || !known.has(address)) {
        // A member discovery cannot see (hot-added, or a device of no bus that can be read) would
        // be left behind.
        flag(
          [group],
          [],
          `kernel/iommu_groups/${group}/devices lists "${entry}", which is not in bus/pci/devices`,
        );
        continue;
      }
      listedIn.set(address, [...(listedIn.get(address) ?? []), group]);
    }
  }
  return listedIn;
}

/** Flags each device left without a group while others have one, with its likely groups. */
function flagGroupless(
  devices: readonly PciDevice[],
  evidence: GroupEvidence,
  listedIn: ReadonlyMap<PciAddress, readonly number[]>,
  flag: Flag,
): void {
  if (!devices.some((d) => d.iommuGroup !== null) && evidence.listings.size === 0) return;
  const groupOf = new Map(devices.map((d) => [d.address, d.iommuGroup]));
  for (const device of devices) {
    if (device.iommuGroup !== null) continue;
    const card = device.address.slice(0, -2);
    const mates = devices.filter((d) => d.address.startsWith(card) && d !== device);
    const ancestors = evidence.ancestors?.(device.address) ?? [];
    const ancestor = ancestors.find((a) => (groupOf.get(a) ?? null) !== null);
    flag(
      [...mates.map((d) => d.iommuGroup), ancestor === undefined ? null : groupOf.get(ancestor)!],
      [device.address],
      `${device.address} has no IOMMU group on a host that has groups (${
        groupless(evidence.links.get(device.address) ?? null, listedIn.get(device.address) ?? [])
      }): ${
        vmdDomainNote(device.address, ancestors) ??
          "VFIO cannot assign it, and the group it belongs to if it should have one (an entry that vanished while discovery read it, a damaged tree) is unknown"
      }`,
    );
  }
}

/** Why the evidence gives a device no group: its link names none, several listings, or nothing. */
function groupless(link: string | null, listed: readonly number[]): string {
  if (link !== null) return "its iommu_group link names no group number";
  if (listed.length > 1) return "more than one kernel/iommu_groups/N/devices lists it";
  return "no iommu_group link, and no kernel/iommu_groups/N/devices lists it";
}

/**
 * Why a groupless device in a PCI domain of its own has no group, or `null` for another: behind
 * Intel VMD, whose controller (a function of domain 0000) hosts the domain (`10000` and up) and
 * whose DMA the IOMMU sees for every device behind it, so none has a group of its own; VFIO
 * cannot assign one, and a guest given the controller takes them all. A captured tree records no
 * ancestors, so a domain past `ffff` alone names VMD there.
 */
function vmdDomainNote(address: PciAddress, ancestors: readonly PciAddress[]): string | null {
  const domain = pciAddressParts(address).domain;
  const host = ancestors.find((a) => pciAddressParts(a).domain !== domain);
  const domainText = address.slice(0, address.indexOf(":"));
  if (host !== undefined) {
    return `it is in PCI domain ${domainText}, which ${host} (an Intel VMD controller) hosts, and the IOMMU sees its DMA as ${host}'s: VFIO cannot assign it, and a guest given ${host} takes it too`;
  }
  if (domain <= 0xffff) return null;
  return `it is in PCI domain ${domainText}, past the firmware's last (ffff), as Intel VMD numbers the domain behind its controller, and the IOMMU sees its DMA as the controller's: VFIO cannot assign it, and a guest given the controller takes it too`;
}
