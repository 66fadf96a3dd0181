/**
 * Hostdev networks (`<forward mode='hostdev'>`) as planning counts them: libvirt hands each VF of
 * the pool to a guest's `<interface type='network'>` at its start, whichever is free, so a rule
 * that passes a pool VF puts one device in two guests, and a rule that passes the pool's PF
 * destroys every VF of it (the PF's host driver owns them). Pure.
 *
 * @module
 */

import type { ClosureResult } from "../resolve/closure.ts";
import type { HostTopology, PciAddress } from "../host/types.ts";
import type { PlanIssue } from "./types.ts";
import { shellWord } from "./repair.ts";
import type { HostdevNetwork, NetworksRead } from "./world.ts";

/** One hostdev network's pool, by PCI address. */
export interface NetworkPool {
  /** The network's name. */
  name: string;
  /** Its VFs: those its XML lists, and the VFs of its PFs. */
  vfs: PciAddress[];
  /** Its PFs (`<pf dev>`), where the host says which functions they are. */
  pfs: PciAddress[];
}

/**
 * The pools of `networks` on `host`. `netDeviceControllers` names the PCI functions under a host
 * interface (the live host's `HostFacts`); without it a `<pf dev>` resolves to nothing, and only
 * the addresses the network's XML lists count.
 */
export function networkPools(
  networks: readonly HostdevNetwork[],
  host: HostTopology,
  netDeviceControllers?: (name: string) => PciAddress[] | null,
): NetworkPool[] {
  const byAddress = new Map(host.devices.map((d) => [d.address, d]));
  return networks.map((network) => {
    const pfs = [...new Set(network.pfs.flatMap((dev) => netDeviceControllers?.(dev) ?? []))];
    const vfs = new Set(network.addresses);
    for (const pf of pfs) for (const vf of byAddress.get(pf)?.virtfns ?? []) vfs.add(vf);
    return { name: network.name, vfs: [...vfs].sort(), pfs: pfs.sort() };
  });
}

/** The plan-wide warnings of reading the networks: a failed listing, unreadable pool entries. */
export function networkWarnings(networks: NetworksRead | undefined, uri: string): PlanIssue[] {
  if (networks === undefined) return [];
  if (networks.kind === "read-failed") {
    return [{
      code: "hostdev-network",
      message:
        `Cannot list the networks of "${uri}": ${networks.error}: hostdev networks' pools of VFs are not checked against the plan`,
    }];
  }
  return networks.hostdev.filter((n) => n.unresolved > 0).map((n) => ({
    code: "hostdev-network",
    message: `Hostdev network "${n.name}" lists ${n.unresolved} pool entr${
      n.unresolved === 1 ? "y" : "ies"
    } that cannot be read as PCI addresses: a rule may take a VF the network also hands out (virsh net-dumpxml ${
      shellWord(n.name)
    })`,
  }));
}

/**
 * The `hostdev-network` refusals of VM `vm`: its closure takes a VF of a hostdev network's pool,
 * or a PF whose VFs a pool hands out.
 */
export function networkPoolErrors(
  vm: string,
  closure: ClosureResult,
  pools: readonly NetworkPool[],
): PlanIssue[] {
  return closure.devices.flatMap(({ device, rule }) =>
    pools.flatMap((pool): PlanIssue[] => {
      const vf = pool.vfs.includes(device.address);
      if (!vf && !pool.pfs.includes(device.address)) return [];
      const what = vf
        ? `a VF that hostdev network "${pool.name}" hands to guests at their start: a device can belong to one guest only: take it out of the pool (virsh net-edit ${
          shellWord(pool.name)
        }), or take a VF outside it`
        : `the physical function of hostdev network "${pool.name}": passing it to a guest destroys the VFs the network hands out: leave it with the host, or remove the network first (virsh net-destroy ${
          shellWord(pool.name)
        }; virsh net-undefine ${shellWord(pool.name)})`;
      return [{
        code: "hostdev-network",
        message: `VM "${vm}" would take ${device.address} (rule "${rule.name}"), ${what}`,
        vm,
        rule: rule.name,
        location: rule.location,
        devices: [device.address],
        ...(device.iommuGroup === null ? {} : { group: device.iommuGroup }),
      }];
    })
  );
}
