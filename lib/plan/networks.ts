/**
 * Hostdev networks (`<forward mode='hostdev'>`) as planning counts them: libvirt hands each VF of
 * the pool to a guest's `<interface type='network'>` at its start, whichever is free, so a rule
 * that passes a pool VF puts one device in two guests, and a rule that passes the pool's PF
 * destroys every VF of it (the PF's host driver owns them). Pure.
 *
 * @module
 */

import type { ClosureResult } from "../resolve/closure.ts";
import type { HostTopology, HostUse, PciAddress, PciDevice } from "../host/types.ts";
import { describe, type StartGuard, startGuardDoes } from "./issues.ts";
import { cardOf, hostCriticalReason, virtualFunctionInUse } from "../resolve/host_critical.ts";
import type { PlanIssue } from "./types.ts";
import { shellWord } from "../render/shell.ts";
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
 * The pools of `networks` on `host`: the VFs their XML lists and, where `netDeviceControllers`
 * (the live host's `HostFacts`) names the function of a `<pf dev>`, every VF of it (VFs created
 * after the network started count too: a refusal more, never one less); their PFs, from the VFs'
 * `physfn` and the `<pf dev>` names.
 */
export function networkPools(
  networks: readonly HostdevNetwork[],
  host: HostTopology,
  netDeviceControllers?: (name: string) => PciAddress[] | null,
): NetworkPool[] {
  const byAddress = new Map(host.devices.map((d) => [d.address, d]));
  return networks.map((network) => {
    const pfs = new Set(network.pfs.flatMap((dev) => netDeviceControllers?.(dev) ?? []));
    const vfs = new Set(network.addresses);
    for (const pf of pfs) for (const vf of byAddress.get(pf)?.virtfns ?? []) vfs.add(vf);
    // The PF of each listed VF, which the host's topology knows on a captured tree too.
    for (const vf of network.addresses) {
      const physfn = byAddress.get(vf)?.physfn;
      if (physfn) pfs.add(physfn);
    }
    return { name: network.name, vfs: [...vfs].sort(), pfs: [...pfs].sort() };
  });
}

/**
 * The plan-wide warnings of reading the networks: a failed listing or a network that cannot be
 * read (`unreadable-definition`: it may be a hostdev pool, or bridge guests to host NICs), an
 * unreadable pool entry (`hostdev-network`).
 */
export function networkWarnings(networks: NetworksRead | undefined, uri: string): PlanIssue[] {
  if (networks === undefined) return [];
  if (networks.kind === "read-failed") {
    // The libvirt binding's error already opens with what failed: say it once.
    const opening = `${listingFailure(uri)}: `;
    const cause = networks.error.startsWith(opening)
      ? networks.error
      : `${opening}${networks.error}`;
    return [{
      code: "unreadable-definition",
      message:
        `${cause}: hostdev networks' pools of VFs are not checked against the plan, and the NICs under bridged networks are not counted as their guests'`,
    }];
  }
  return [
    ...networks.unreadable.map(({ name, error }) => ({
      code: "unreadable-definition" as const,
      message: `${
        unreadableNetwork(name)
      }: ${error}: if it is a hostdev network, its pool of VFs is not checked against the plan; if it is bridged to host interfaces, the NICs under them are not counted as its guests'`,
    })),
    ...networks.hostdev.filter((n) => n.unresolved > 0).map((n) => ({
      code: "hostdev-network" as const,
      message: `Hostdev network ${JSON.stringify(n.name)} lists ${n.unresolved} pool entr${
        n.unresolved === 1 ? "y" : "ies"
      } that cannot be read as PCI addresses: a rule may take a VF the network also hands out (virsh net-dumpxml ${
        shellWord(n.name)
      })`,
    })),
  ];
}

function listingFailure(uri: string): string {
  return `Cannot list the networks of "${uri}"`;
}

function unreadableNetwork(name: string): string {
  return `Cannot read network ${JSON.stringify(name)}`;
}

/**
 * Whether `issue` is {@link networkWarnings}' warning that network `name`, or every network, of
 * connection `uri` could not be read.
 */
export function warnsUnreadableNetwork(issue: PlanIssue, uri: string, name: string): boolean {
  return issue.code === "unreadable-definition" &&
    (issue.message.startsWith(`${unreadableNetwork(name)}: `) ||
      issue.message.startsWith(`${listingFailure(uri)}: `));
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
      const name = JSON.stringify(pool.name);
      const net = shellWord(pool.name);
      const what = vf
        ? `a VF that hostdev network ${name} hands to guests at their start: a device can belong to one guest only: take a VF outside the pool, or ${
          leaveOutOfPool(pool.name)
        }`
        : `the physical function of hostdev network ${name}: passing it to a guest destroys the VFs the network hands out: leave it with the host, or remove the network first (with the guests that use it shut down: virsh net-destroy ${net}; virsh net-undefine ${net})`;
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

/**
 * The refusal of VM `vm`, whose interface is on hostdev network `network`, for the pool entry at
 * `address`, which `holds` what makes it wrong: libvirt may hand it to the VM at its start, and
 * what the start guard does then ({@link startGuardDoes} of `start`; `hostNeeds`: whether the
 * host needs what the entry holds).
 */
export function poolEntryMessage(
  vm: string,
  { network, address, holds, start, hostNeeds }: {
    network: string;
    address: PciAddress;
    holds: string;
    start: StartGuard;
    hostNeeds: boolean;
  },
): string {
  const refuses = "the start guard refuses every start while the pool lists it";
  const guard = {
    none: "no start guard is installed to refuse it",
    off: `its "guard: off" has the start guard let it`,
    warn: `its "guard: warn" has the start guard warn and let it`,
    refuses,
    unknown: `${refuses}; without the guard, nothing stops it`,
  }[startGuardDoes(start, hostNeeds)];
  return `Hostdev network ${
    JSON.stringify(network)
  }, which an interface of "${vm}" is on, lists ${address}, which ${holds}: libvirt may hand any free entry of the pool to "${vm}" at its start, and ${guard}: ${
    leaveOutOfPool(network)
  }, then plan again`;
}

/**
 * Whether the start guard counts `device`, an entry of a pool, as one the host needs: what the
 * host or a domain uses, a platform function, or a PF whose VF is used (it reads the entry's own
 * card as asked for).
 */
function poolEntryNeeded(device: PciDevice, hostUse: readonly HostUse[] | null): boolean {
  const matchedCards = new Set([cardOf(device)]);
  return hostCriticalReason(device, { matchedCards, hostUse }) !== null ||
    virtualFunctionInUse(device, hostUse) !== null;
}

/**
 * The `hostdev-network` refusals of VM `vm`, whose interfaces are on `networks`: an entry of such
 * a network's pool that holds no device, or one that is not an SR-IOV VF (libvirt takes only VFs
 * into a pool: the buses moved under it), or a VF under a host device a domain uses
 * (`deviceControllers`: its netdev under a macvtap interface of this VM or another), as the start
 * guard refuses them under `guard: enforce` (a `vm-device` use: handed to the guest, it pulls that
 * device away); each says what the guard does under the VM's `start` policy.
 */
export function poolEntryErrors(
  vm: string,
  networks: readonly string[],
  pools: readonly NetworkPool[],
  byAddress: ReadonlyMap<PciAddress, PciDevice>,
  { deviceControllers, hostUse = null, start }: {
    deviceControllers?: ReadonlyMap<string, ReadonlyMap<PciAddress, readonly string[]>> | undefined;
    /** What the host uses ({@link HostTopology.hostUse}). */
    hostUse?: readonly HostUse[] | null;
    start: StartGuard;
  },
): PlanIssue[] {
  // This VM's own uses first, then the other domains' by name.
  const users = [...deviceControllers ?? []].sort(([a], [b]) =>
    a === vm ? -1 : b === vm ? 1 : a < b ? -1 : a > b ? 1 : 0
  );
  const usedBy = (address: PciAddress) =>
    users.flatMap(([owner, controllers]) => {
      const uses = controllers.get(address);
      return uses === undefined ? [] : [`${uses.join(", ")} of "${owner}"`];
    });
  return pools.filter((pool) => networks.includes(pool.name)).flatMap((pool) =>
    pool.vfs.flatMap((address): PlanIssue[] => {
      const device = byAddress.get(address);
      const used = device === undefined ? [] : usedBy(address);
      if (device !== undefined && device.physfn !== null && used.length === 0) return [];
      const holds = device === undefined
        ? "holds no device"
        : device.physfn !== null
        ? `holds ${describe(device)}, under ${used.join("; ")}`
        : `holds ${
          describe(device)
        }, not an SR-IOV virtual function (libvirt takes only VFs into a pool: the buses moved under it)`;
      return [{
        code: "hostdev-network",
        message: poolEntryMessage(vm, {
          network: pool.name,
          address,
          holds,
          start,
          // A VF under a domain's device is a `vm-device` use: the guard counts it as the host's.
          hostNeeds: device !== undefined && (used.length > 0 || poolEntryNeeded(device, hostUse)),
        }),
        vm,
        devices: [address],
      }];
    })
  );
}

/**
 * How to take a VF out of hostdev network `network`'s pool: libvirt reads a pool again only when
 * the network starts.
 */
function leaveOutOfPool(network: string): string {
  const net = shellWord(network);
  return `leave this one out of it (virsh net-edit ${net}: a <pf> pool becomes a list of ` +
    `<address> entries; then, with the guests that use it shut down, virsh net-destroy ${net}; ` +
    `virsh net-start ${net})`;
}
