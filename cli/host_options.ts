/**
 * The `--sysfs DIR` option shared by `devices`, `groups`, `snapshot` and `doctor`, and how a
 * command turns it into a discovered {@link HostTopology}.
 *
 * @module
 */

import type { HostTopology, PciAddress, PciDevice } from "../lib/host/types.ts";
import { discoverHost } from "../lib/host/discover.ts";
import {
  readDeviceAt,
  readHostUse,
  readPhysicalSlots,
  readVirtualFunctions,
} from "../lib/host/sysfs_device.ts";
import { slotOf } from "../lib/pci/address.ts";
import {
  baseName,
  confinedReader,
  denoFsReader,
  notLinkKind,
  readNonPciMember,
  type SysfsReader,
} from "../lib/host/sysfs.ts";
import { parseGroupNumber, readGroupListings, settleGroups } from "../lib/host/iommu_groups.ts";
import { libcSysfsReader, readXattr, resolvePath } from "../ffi/libc_fs.ts";
import { type HostFacts, readHostFacts } from "../lib/host/preflight.ts";
import { keepIgnoredSignals } from "./signals.ts";
import type { HostRead } from "../lib/apply/recheck.ts";

/** The real sysfs root. */
export const LIVE_SYSFS = "/sys";

/**
 * The reader for `root`: libc (Deno refuses `/sys` and `/proc` without `--allow-all`, and libc
 * is faster on trees too: docs/BENCHMARKS.md). A captured tree falls back to plain Deno reads when FFI is
 * not permitted, since `--allow-read` suffices there, and is read only inside itself
 * ({@link confinedReader}).
 */
export function readerFor(root: string): SysfsReader {
  if (isLiveRoot(root)) return libcSysfsReader();
  // A captured tree is read only inside itself (`confinedReader`).
  try {
    return confinedReader(libcSysfsReader(), root);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
      return confinedReader(denoFsReader(), root);
    }
    throw error;
  }
}

/**
 * The sysfs root to read when `root` is this host's own sysfs however it is spelled (`/sys/.`,
 * `//sys`, `/sys/bus/..`, a symbolic link to `/sys`, a bind mount of it): {@link LIVE_SYSFS}, or
 * the resolved mount point; `null` for a captured tree. Decided on the resolved path, since a
 * live host read as a tree would lose every host-use refusal. When FFI is not permitted, Deno
 * resolves the path; a path it refuses to resolve is under `/sys`, `/proc` or `/dev` (or not
 * readable at all), so it is taken as live: reading it then fails on the permission, never as
 * a tree without host use.
 */
export function liveSysfsRoot(root: string): string | null {
  if (root === LIVE_SYSFS) return LIVE_SYSFS;
  let resolved: { path: string; sysfs: boolean } | null;
  try {
    resolved = resolvePath(root);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotCapable)) throw error;
    try {
      resolved = { path: Deno.realPathSync(root), sysfs: false };
    } catch (denoError) {
      if (denoError instanceof Deno.errors.NotCapable) return LIVE_SYSFS;
      resolved = null;
    }
  }
  if (resolved === null) return null;
  if (resolved.path === LIVE_SYSFS) return LIVE_SYSFS;
  return resolved.sysfs ? resolved.path : null;
}

/** Whether `root` is this host's own sysfs, however spelled (see {@link liveSysfsRoot}). */
export function isLiveRoot(root: string): boolean {
  return liveSysfsRoot(root) !== null;
}

/** Options of {@link loadHost}. */
export interface LoadHostOptions {
  /**
   * Split lspci's names into vendor and device with `pci.ids` (default `true`). `plan` and
   * `apply` print no device names, so they skip reading the file.
   */
  vendorNames?: boolean;
}

/**
 * Discovers the host at `root` (default `/sys`) with the reader that suits it. Every command that
 * reads a host comes here, and lspci's run makes Deno end the process on a hangup from then on,
 * one `nohup` asked to be ignored too: `nohup passthrough plan` was killed when its session
 * closed. Such signals stay ignored (`keepIgnoredSignals`).
 */
export function loadHost(
  root: string | undefined,
  options: LoadHostOptions = {},
): Promise<HostTopology> {
  keepIgnoredSignals();
  const sysfs = root ?? LIVE_SYSFS;
  const live = liveSysfsRoot(sysfs);
  // The live host is read at its canonical root, so lspci reads it as itself too.
  const read = live ?? sysfs;
  return discoverHost({
    root: read,
    reader: readerFor(read),
    live: live !== null,
    ...(options.vendorNames === false ? { vendorNames: () => null } : {}),
  });
}

/**
 * Where the host at `root` (default `/sys`) is read: the live `/sys` at its canonical path, or a
 * captured tree without its trailing slashes; `live` says which.
 */
function sysfsRootOf(root: string | undefined): { sysRoot: string; live: boolean } {
  const live = liveSysfsRoot(root ?? LIVE_SYSFS);
  return live === null
    ? { sysRoot: (root ?? LIVE_SYSFS).replace(/(.)\/+$/, "$1"), live: false }
    : { sysRoot: live, live: true };
}

/**
 * The pre-flight facts of the host at `root` (default `/sys`): the live `/sys` and `/proc`, or a
 * captured tree and its `proc/`. Nothing is read until a finding asks.
 */
export function hostFactsFor(root: string | undefined): HostFacts {
  const { sysRoot, live } = sysfsRootOf(root);
  return readHostFacts({
    reader: readerFor(sysRoot),
    sysRoot,
    procRoot: live ? "/proc" : `${sysRoot}/proc`,
    ...(live ? { devRoot: "/dev" } : {}),
    readLabel: (path) => {
      try {
        return readXattr(path, "security.selinux");
      } catch {
        return null;
      }
    },
  });
}

/**
 * Reads one PCI function of the host at `root` (default `/sys`) as it is now, with its IOMMU
 * group (its `iommu_group` link, else the one group listing it, as discovery reads it) and its
 * physical slot, or `null` when none is at the address: `apply` checks with it before each define
 * that the devices planned are still there, the same, in the same group. Throws for a link that
 * names no group number, and for an `iommu_group` that is no link where no listing names the
 * device (see `ReadHostDevice`).
 */
export function hostDeviceReader(
  root: string | undefined,
): (address: PciAddress) => PciDevice | null {
  // Nothing is resolved or opened until apply asks: `plan` builds this too.
  let at: { sysRoot: string } | undefined;
  return (address) => {
    const { sysRoot } = at ??= sysfsRootOf(root);
    // A reader per read (see hostReader).
    const reader = readerFor(sysRoot);
    const device = readDeviceAt(reader, sysRoot, address);
    if (device === null) return null;
    const link = reader.readLink(`${sysRoot}/bus/pci/devices/${address}/iommu_group`);
    device.iommuGroup = link === null ? null : parseGroupNumber(baseName(link));
    // Read as in no group, its group's other functions would go unjudged (as the guard has it).
    if (link !== null && device.iommuGroup === null) {
      throw new Error(
        `Cannot read the IOMMU group of "${address}": its iommu_group link names ${
          JSON.stringify(baseName(link))
        }, not an IOMMU group number`,
      );
    }
    // As discovery does: a device without a link (a partly copied tree) is in the one group
    // whose listing names it; else a plan over such a tree was refused as a group change.
    if (link === null) {
      settleGroups([device], { links: new Map(), listings: readGroupListings(reader, sysRoot) });
      // The kernel makes a link or nothing: anything else there is a damaged tree, whose group,
      // unless a listing names it as discovery takes it, is unknown, not none.
      const kind = device.iommuGroup === null
        ? notLinkKind(reader, `${sysRoot}/bus/pci/devices/${address}/iommu_group`)
        : null;
      if (kind !== null) {
        throw new Error(
          `Cannot read the IOMMU group of "${address}": its iommu_group is ${kind}, not a link ` +
            "to an IOMMU group, and no kernel/iommu_groups/N/devices lists it",
        );
      }
    }
    // The plan records a card's named slot, and compares it: a card in a slot read without it
    // would be another card.
    device.physicalSlot = readPhysicalSlots(reader, sysRoot).get(slotOf(address)) ?? null;
    // As discovery has them: apply's re-check reads the host's use of an SR-IOV PF's VFs.
    device.virtfns = readVirtualFunctions(reader, sysRoot, address);
    return device;
  };
}

/**
 * The devices, IOMMU groups and host use of the host at `root` (default `/sys`) as they are now:
 * `apply` checks with them before each define that no function joined the groups a VM takes and
 * that the host uses none of them since the plan; `rollback` that a backup's groups hold nothing
 * the host needs.
 */
export function hostReader(root: string | undefined): HostRead {
  // Nothing is resolved or opened until apply or rollback asks: `plan` builds this too.
  let at: { sysRoot: string; live: boolean } | undefined;
  // A reader per read: a tree's reader resolves each path once for its life (`confinedReader`),
  // and a tree replaced at its path since (at apply's or rollback's question) is another tree,
  // whose links out are refused only when resolved again.
  const opened = () => {
    at ??= sysfsRootOf(root);
    return { ...at, reader: readerFor(at.sysRoot) };
  };
  return {
    device: hostDeviceReader(root),
    groupMembers: (group) => {
      const { reader, sysRoot } = opened();
      return reader.listDir(`${sysRoot}/kernel/iommu_groups/${group}/devices`)?.sort() ?? null;
    },
    hostUse: (devices) => {
      const { reader, sysRoot, live } = opened();
      return readHostUse(reader, { root: sysRoot, live, devices });
    },
    otherMember: (group, name) => {
      const { reader, sysRoot } = opened();
      return readNonPciMember(reader, sysRoot, group, name);
    },
  };
}
