/**
 * What VFIO hands a guest along with the functions a definition passes: the other endpoints of
 * their IOMMU groups (PCI bridges stay with the host, and a VMD domain's devices go with their
 * controller). `rollback` asks it of a backup before restoring it, and the start guard of a
 * domain at every start; `plan` judges the same members as it closes a VM's groups (closure.ts).
 *
 * @module
 */

import type { PciAddress, PciDevice } from "../host/types.ts";
import type { NonPciMember } from "../host/sysfs.ts";
import { behindVmd } from "./host_critical.ts";

/** How {@link groupMates} reads the host. */
export interface GroupMatesRead {
  /** The function at `address` now, or `null` when none is there. */
  device: (address: PciAddress) => PciDevice | null;
  /** The IOMMU group of the passed function at `address`, or `null` when it is in none. */
  group: (address: PciAddress) => number | null;
  /** The addresses IOMMU group `group` lists now, or `null` when the listing cannot be read. */
  members: (group: number) => PciAddress[] | null;
  /**
   * The non-PCI device (ACPI, platform) a listing names as `name` in `group`, or `null` when it
   * cannot be read as one. Default: none is read, and such a member is unread.
   */
  other?: (group: number, name: string) => NonPciMember | null;
}

/** A non-PCI member of a passed device's IOMMU group ({@link groupMates}). */
export interface OtherMate {
  /** The device, as read now. */
  member: NonPciMember;
  /** The passed device whose group lists it. */
  of: PciAddress;
  /** The IOMMU group. */
  group: number;
}

/** A function of a passed device's IOMMU group that the definition does not pass. */
export interface GroupMate {
  /** The function, as read now. */
  device: PciDevice;
  /** The passed device whose group holds it (the first passed one of that group). */
  of: PciAddress;
  /** The IOMMU group. */
  group: number;
}

/** A member a group's listing names that cannot be read as a PCI function ({@link groupMates}). */
export interface UnreadMate {
  /** The name the listing gives it. */
  member: string;
  /** The passed device whose group lists it. */
  of: PciAddress;
  /** The IOMMU group. */
  group: number;
}

/**
 * The endpoints of the IOMMU groups of `passed` that `passed` does not name, each once, in the
 * order of `passed` and then of the group's listing; the groups whose listing cannot be read
 * (`unlisted`, with the passed device they hold): read as empty, such a group would pass as one
 * without mates; and the members a listing names that cannot be read as a PCI function and that
 * a second read of the listing still names (`unread`): skipped, what VFIO would hand the guest
 * with them would go unjudged. One the second read no longer lists was hot-removed meanwhile.
 * A member `read.other` reads as a non-PCI device is in `others`, for its driver to be judged:
 * VFIO hands a guest no such device, but one on a host driver makes the group not viable.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import type { PciDevice } from "../host/types.ts";
 * const device = (address: string, isBridge = false) => ({ address, isBridge }) as PciDevice;
 * const read = {
 *   device: (a: string) => device(a, a === "0000:00:01.0"),
 *   group: () => 1,
 *   members: () => ["0000:00:01.0", "0000:01:00.0", "0000:01:00.1", "0000:05:00.0"],
 * };
 * const { mates } = groupMates(["0000:01:00.0", "0000:01:00.1"], read);
 * assertEquals(mates.map((m) => [m.group, m.of, m.device.address]), [
 *   [1, "0000:01:00.0", "0000:05:00.0"],
 * ]);
 * ```
 */
export function groupMates(
  passed: Iterable<PciAddress>,
  read: GroupMatesRead,
): {
  mates: GroupMate[];
  unlisted: { group: number; of: PciAddress }[];
  unread: UnreadMate[];
  others: OtherMate[];
} {
  const passing = new Set(passed);
  const mates = new Map<PciAddress, GroupMate>();
  const unlisted: { group: number; of: PciAddress }[] = [];
  const unread: UnreadMate[] = [];
  const others: OtherMate[] = [];
  const seen = new Set<number>();
  for (const of of passing) {
    const group = read.group(of);
    if (group === null || seen.has(group)) continue;
    seen.add(group);
    const members = read.members(group);
    if (members === null) {
      unlisted.push({ group, of });
      continue;
    }
    for (const address of members) {
      if (passing.has(address) || mates.has(address)) continue;
      const device = read.device(address);
      const other = device === null ? read.other?.(group, address) ?? null : null;
      if (other !== null) {
        others.push({ member: other, of, group });
        continue;
      }
      if (device === null) {
        if (read.members(group)?.includes(address) ?? true) {
          unread.push({ member: address, of, group });
        }
        continue;
      }
      if (device.isBridge || behindVmd(device)) continue;
      mates.set(address, { device, of, group });
    }
  }
  return { mates: [...mates.values()], unlisted, unread, others };
}
