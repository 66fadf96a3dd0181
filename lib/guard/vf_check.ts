/**
 * The start guard's check of recorded VFs (`vf:` rules' `<interface type='hostdev'>`): a VF's
 * address is derived from its PF's, so after the PF moved, or `sriov_numvfs` was set again, the
 * address may hold another PF's VF, or another index of the same one. The interface's address
 * must still be VF `index` of the PF at the recorded address, with the recorded identity: its
 * `physfn` link leads to that PF, and the PF's `virtfnN` link leads back to it. Reads only those
 * links and the PF.
 *
 * @module
 */

import type { PciAddress, PciDevice } from "../host/types.ts";
import type { VfIdentity } from "../plan/types.ts";
import { readDeviceAt } from "../host/sysfs_device.ts";
import { baseName, type SysfsReader } from "../host/sysfs.ts";
import { canonicalPciAddress } from "../pci/address.ts";
import { sameIdentity } from "../resolve/match.ts";

/** Why a recorded VF's interface must not be started, in words; `null` when it is sound. */
export function vfMismatch(
  record: VfIdentity,
  vf: PciDevice,
  sysfs: { reader: SysfsReader; root: string },
): string | null {
  const root = sysfs.root.replace(/(.)\/+$/, "$1");
  const what = recordedAs(record);
  if (vf.physfn === null) {
    return `hostdev interface ${vf.address} is no virtual function now (no physfn link), ${what}`;
  }
  // A VF's address follows from its PF's: at another PF's, it is that PF's VF (the other port of
  // a card with the same identity, once the VFs were made again), whatever the PF is.
  if (vf.physfn !== record.pf.address) {
    return `hostdev interface ${vf.address} is a VF of ${vf.physfn} now, not of ${record.pf.address}, ${what}`;
  }
  const pf = readDeviceAt(sysfs.reader, root, vf.physfn, {
    details: false,
    physfn: false,
    configSpace: record.pf.serial !== null,
  });
  // The hook reads serials as root; one a plan could not read (null) is not compared. Nor is a
  // slot: `plan` records none for a PF, and the PF is read here without one.
  const { slot: _slot, ...recordedPf } = record.pf;
  const samePf = pf !== null &&
    sameIdentity(recordedPf, record.pf.serial === null ? { ...pf, serial: null } : pf);
  if (!samePf) {
    const holds = pf === null ? "nothing" : `${pf.vendorId}:${pf.deviceId}`;
    return `hostdev interface ${vf.address} is a VF of ${vf.physfn}, which holds ${holds}, ${what}`;
  }
  const link = sysfs.reader.readLink(`${root}/bus/pci/devices/${vf.physfn}/virtfn${record.index}`);
  const indexed: PciAddress | null = link === null ? null : canonicalPciAddress(baseName(link));
  if (indexed !== vf.address) {
    return `hostdev interface ${vf.address} is not VF ${record.index} of ${vf.physfn} (virtfn${record.index} leads to ${
      indexed ?? "nothing"
    }), ${what}`;
  }
  return null;
}

/**
 * Why a recorded VF's interface whose address holds nothing must not be started: the VFs were
 * not made again since a reboot (`sriov_numvfs`), fewer were, or its PF moved.
 */
export function vfGone(record: VfIdentity, address: PciAddress): string {
  return `hostdev interface ${address} holds no device now, ${
    recordedAs(record)
  }: its PF's VFs are not there (not made again since a reboot, fewer of them, or the PF moved)`;
}

/** `recorded as VF 1 of 8086:10c9 serial ... at 0000:07:00.0 (rule "uplink")`. */
function recordedAs(record: VfIdentity): string {
  return `recorded as VF ${record.index} of ${record.pf.vendorId}:${record.pf.deviceId} ${
    record.pf.serial === null ? "" : `serial ${record.pf.serial} `
  }at ${record.pf.address} (rule ${JSON.stringify(record.pf.rule)})`;
}
