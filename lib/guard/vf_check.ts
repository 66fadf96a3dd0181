/**
 * The start guard's check of recorded VFs (`vf:` rules' `<interface type='hostdev'>`): a VF's
 * address is derived from its PF's, so after the PF moved, or `sriov_numvfs` was set again, the
 * address may hold another PF's VF, or another index of the same one. The interface's address
 * must still be VF `index` of a PF with the recorded identity: its `physfn` link leads to that
 * PF, and the PF's `virtfnN` link leads back to it. Reads only those links and the PF.
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
  const what = `recorded as VF ${record.index} of ${record.pf.vendorId}:${record.pf.deviceId} ${
    record.pf.serial === null ? "" : `serial ${record.pf.serial} `
  }(rule ${JSON.stringify(record.pf.rule)})`;
  if (vf.physfn === null) {
    return `hostdev interface ${vf.address} is no virtual function now (no physfn link), ${what}`;
  }
  const pf = readDeviceAt(sysfs.reader, root, vf.physfn, {
    details: false,
    physfn: false,
    configSpace: record.pf.serial !== null,
  });
  // The hook reads serials as root; one a plan could not read (null) is not compared.
  const samePf = pf !== null &&
    sameIdentity(record.pf, record.pf.serial === null ? { ...pf, serial: null } : pf);
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
