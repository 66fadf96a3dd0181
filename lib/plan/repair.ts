/**
 * The repair of a refused VM. A refused VM keeps its definition, but some of its hostdevs must not
 * stay until the next start whatever else is refused: libvirt's managed detach unbinds whatever
 * sits at a hostdev's address, so
 *
 * - a stale owned hostdev (its address now holds another device, or nothing) would hand that
 *   device to the guest: the repair follows its card to its new address when an unrefused VM's
 *   move could (same evidence, and the new address free of every refusal), else removes it;
 * - an owned hostdev on a device the host needs now (a mounted filesystem's controller, the NIC of
 *   the default route, the console's VGA) would take it from the host: the repair removes it,
 *   unless its rule says `allow_host_critical: true`;
 * - a hand-added hostdev (or `<interface type='hostdev'>`) on such a device is never edited: the
 *   refusal says how to remove it by hand.
 *
 * Each is a refusal of its own, listed first among the VM's refusals, and the repair is what
 * `apply` defines for the VM (code `repaired`) while the other refusals stand. Pure.
 *
 * @module
 */

import type { ClosedDevice } from "../resolve/closure.ts";
import { sameIdentityAsRead, VFIO_DRIVERS } from "../resolve/match.ts";
import {
  editDomainXml,
  handPassedAddresses,
  heldAddresses,
  type ParsedDomain,
} from "../domain/domain_xml.ts";
import { staleInterfaces } from "./interfaces.ts";
import type { HostTopology, HostUse, PciAddress, PciDevice } from "../host/types.ts";
import { comparePciAddress, pciAddressToLibvirt } from "../pci/address.ts";
import { describe, driftWarning, type StartGuard, startGuard } from "./issues.ts";
import { findMovedCard, movedRecord } from "../resolve/moves.ts";
import { cardOf, hostCriticalReason, passedDeviceHostNeeds } from "../resolve/host_critical.ts";
import { groupMates } from "../resolve/group_mates.ts";
import { shellWord } from "../render/shell.ts";
import type { VmResolution } from "./resolve.ts";
import type { DeviceIdentity, MovedHostdev, PlanIssue, VmPlan } from "./types.ts";
import type { VmContext } from "./vm_edit.ts";
import { type NetworkPool, poolEntryMessage } from "./networks.ts";

/** A hostdev of a VM whose device the host needs now. */
export interface HostNeeded {
  /** The hostdev's host address. */
  address: PciAddress;
  /** The device there now. */
  device: PciDevice;
  /**
   * Why the host needs it: what the host uses it for (`default-route: eth0`), or what it is (`a
   * PCI bridge, with the devices behind it`), as the start guard says it.
   */
  why: string;
  /**
   * An `owned` hostdev, a `hand-added` one, an `<interface type='hostdev'>` (`interface`), a
   * `<disk type='nvme'>` (`disk`: libvirt detaches its controller at start as a hostdev's), or
   * an entry of the pool of a hostdev network an `<interface type='network'>` is on (`network`).
   */
  kind: "owned" | "hand-added" | "interface" | "disk" | "network";
  /** The rule recorded for an owned hostdev, when one is. */
  rule: string | null;
  /** The hostdev network whose pool lists it (kind `network` only). */
  network?: string;
}

/**
 * The hostdevs of `domain` whose device the host needs now (`host.hostUse`; for one the domain
 * names itself, not owned, also a bridge or platform function: {@link passedDeviceHostNeeds}),
 * in the domain's order, interfaces and then NVMe disks last: owned ones whose recorded card is still there (a stale one is the
 * repair's in any case) and whose rule does not say `allow_host_critical: true`, and every
 * hand-added one: a rule taking it records nothing for it (hand-added hostdevs are never
 * taken over), so the start guard, which lifts only a recorded device's refusal, would refuse
 * it whatever the rule says (as `plan` does; only the VM's `guard: off` has the guard pass it).
 * Each refuses the VM.
 */
export function hostNeededHostdevs(
  domain: ParsedDomain,
  resolution: VmResolution,
  host: HostTopology,
  pools: readonly NetworkPool[] = [],
): HostNeeded[] {
  const out: HostNeeded[] = [];
  const uses = host.hostUse;
  // Only an owned hostdev or interface, whose record apply writes again under the rule taking it.
  const allowedBy = (address: PciAddress, rule: string | null) =>
    rule !== null && (
      resolution.rules.some((r) => r.rule.allowHostCritical && r.rule.name === rule) ||
      resolution.closure.devices.some((c) =>
        c.device.address === address && c.rule.allowHostCritical
      )
    );
  const check = (
    address: PciAddress,
    kind: HostNeeded["kind"],
    owner: { record?: DeviceIdentity; rule: string | null; network?: string },
  ) => {
    const device = host.devices.find((d) => d.address === address);
    if (device === undefined) return;
    const use = uses?.find((u) => u.address === address);
    // An owned device is judged by its rule's resolution; one the definition names itself (the
    // start guard reads each such address alone) by what it is, as the guard judges it.
    const why = use !== undefined
      ? `${use.reason}: ${use.detail}`
      : kind === "owned"
      ? null
      : passedDeviceHostNeeds(device, uses);
    if (why === null) return;
    if (owner.record !== undefined && !sameIdentityAsRead(owner.record, device)) return;
    const { rule, network } = owner;
    if (allowedBy(address, rule)) return;
    out.push({ address, device, why, kind, rule, ...(network === undefined ? {} : { network }) });
  };
  for (const have of domain.hostdevs) {
    if (!have.owned) check(have.address, "hand-added", { rule: null });
    else {
      const record = domain.records.find((r) => r.address === have.address);
      check(have.address, "owned", {
        ...(record === undefined ? {} : { record }),
        rule: record?.rule ?? null,
      });
    }
  }
  // A `vf:` rule's interface is its rule's through the PF's record; any other was added by hand.
  for (const address of domain.interfaceHostdevs) {
    const vf = domain.vfRecords.find((r) => r.address === address);
    check(address, "interface", { rule: vf?.pf.rule ?? null });
  }
  // Never written by passthrough: the start guard judges it as it judges a hand-added hostdev.
  for (const address of domain.nvmeDisks) check(address, "disk", { rule: null });
  // libvirt hands any free entry of a hostdev network's pool to an interface on it at start, so
  // the start guard refuses the start while any entry is a device the host needs (but under
  // the VM's `guard: off`: the plan refuses it whatever the policy).
  for (const pool of pools.filter((p) => domain.networks.includes(p.name))) {
    for (const address of pool.vfs) check(address, "network", { rule: null, network: pool.name });
  }
  return out;
}

/** What {@link repairRefused} works from besides the VM's plan and definition. */
export interface RepairInput {
  /** The VM's rules resolved and closed over IOMMU groups (refused or not). */
  resolution: VmResolution;
  /** The host and the plan-wide refusals. */
  context: VmContext;
  /** The VM's hostdevs on devices the host needs ({@link hostNeededHostdevs}). */
  needed: readonly HostNeeded[];
}

/** A stale owned hostdev: its record, and what its address holds now. */
interface Stale {
  from: PciAddress;
  record: DeviceIdentity;
  now: PciDevice | undefined;
  /** Where its card is, when proven, and whether the repair follows it there. */
  card?: { to: PciAddress; evidence: string; closed?: ClosedDevice; blocked: string | null };
}

/** Why a card is not followed to an address the VM's definition names already. */
function namedAlready(plan: VmPlan): string {
  return `"${plan.name}" names that address already`;
}

/**
 * Why the repair does not follow `stale`'s card to `closed`, or `null` when it does: the checks
 * an unrefused VM's move passes (no plan-wide refusal, none of the VM's refusals about the rule
 * or the new IOMMU group, not a device the host needs, not an address the VM names already).
 */
function followBlocker(
  plan: VmPlan,
  stale: Stale,
  closed: ClosedDevice,
  input: RepairInput & { names: ReadonlySet<PciAddress> },
): string | null {
  const { host, globalErrors } = input.context;
  const to = closed.device.address;
  if (globalErrors.length > 0) return "the plan has host-wide refusals";
  if (input.names.has(to)) return namedAlready(plan);
  const use = host.hostUse?.find((u) => u.address === to);
  if (use !== undefined && !closed.rule.allowHostCritical) {
    return `the host needs it there (${use.reason}: ${use.detail})`;
  }
  const group = closed.device.iommuGroup;
  const members = new Set(
    group === null
      ? [to]
      : host.devices.filter((d) => d.iommuGroup === group).map((d) => d.address),
  );
  const refusal = plan.errors.find((e) =>
    e.rule === stale.record.rule || (group !== null && e.group === group) ||
    (e.devices ?? []).some((a) => members.has(a))
  );
  if (refusal === undefined) return null;
  return `rule "${stale.record.rule}" is refused there ([${refusal.code}] below)`;
}

/**
 * Where each stale hostdev's card is and whether the repair follows it: among the devices its
 * rule takes (the evidence of an unrefused VM's move), else anywhere on the host (to say where it
 * is and why it is not followed). A followed card whose new IOMMU group holds a device the repair
 * would not put in the VM is not followed either: the group goes to a guest whole.
 */
function locateCards(
  plan: VmPlan,
  stales: Stale[],
  input: RepairInput,
  held: { names: ReadonlySet<PciAddress>; accounted: ReadonlySet<PciAddress> },
) {
  const { host } = input.context;
  // A stale hostdev's address is left by the repair (followed or removed), so another stale
  // card may take it: a new card shifted each card one bus on, each into the next one's address.
  const names = new Set([...held.names].filter((a) => !stales.some((s) => s.from === a)));
  const claimed = new Set<PciAddress>();
  for (const stale of stales) {
    // An address the VM names already stays a candidate, so that the refusal can say the card
    // is there (followBlocker then refuses it), unless it holds the card recorded there: then
    // it is the twin the VM holds, and saying the stale card went there was false.
    const free = (a: PciAddress) => !claimed.has(a) && !held.accounted.has(a);
    const taken = input.resolution.closure.devices.filter((c) =>
      c.rule.name === stale.record.rule && free(c.device.address)
    );
    const hit = findMovedCard(stale.record, stale.from, taken, host);
    if (hit !== undefined) {
      const closed = hit.found;
      const blocked = followBlocker(plan, stale, closed, { ...input, names });
      stale.card = { to: closed.device.address, evidence: hit.evidence, closed, blocked };
      claimed.add(closed.device.address);
      continue;
    }
    const anywhere = host.devices.filter((d) => d.address !== stale.from && free(d.address));
    const seen = findMovedCard(
      stale.record,
      stale.from,
      anywhere.map((device) => ({ device })),
      host,
    );
    if (seen === undefined) continue;
    const to = seen.found.device.address;
    const ruled = input.resolution.rules.some((r) => r.rule.name === stale.record.rule);
    stale.card = {
      to,
      evidence: seen.evidence,
      blocked: names.has(to)
        ? namedAlready(plan)
        : ruled
        ? `rule "${stale.record.rule}" does not take it there`
        : `rule "${stale.record.rule}" is no longer in the config`,
    };
  }
  // A group only goes whole: drop follows until every followed group is complete.
  for (let changed = true; changed;) {
    changed = false;
    const followed = new Set(
      stales.flatMap((s) => s.card?.blocked === null ? [s.card.to] : []),
    );
    for (const stale of stales) {
      const card = stale.card;
      const group = card?.closed?.device.iommuGroup ?? null;
      if (card === undefined || card.blocked !== null || group === null) continue;
      const missing = input.resolution.closure.devices
        .map((c) => c.device)
        .filter((d) => d.iommuGroup === group && !followed.has(d.address) && !names.has(d.address))
        .map((d) => d.address);
      if (missing.length === 0) continue;
      card.blocked = `its new IOMMU group ${group} also holds ${
        missing.join(", ")
      }, which a repair does not add`;
      changed = true;
    }
  }
}

/** The end of each repair refusal: what the repair does, and why it matters. */
function staleIssue(vm: string, stale: Stale, hostUse: HostUse | undefined, stand: string) {
  const that = stale.now === undefined
    ? "whatever appears there"
    : hostUse === undefined
    ? "that device"
    : `that device, which the host needs (${hostUse.reason}: ${hostUse.detail}),`;
  const why = `so that the next start cannot hand ${that} to the guest`;
  const card = stale.card;
  const outcome = card === undefined
    ? `the repair removes it${stand}, ${why}`
    : card.blocked === null
    ? `its card is now at ${card.to} (${card.evidence}): the repair follows it there${stand}, ${why}`
    : `its card is now at ${card.to} (${card.evidence}) but the repair does not follow it: ${card.blocked}; it removes the hostdev${stand}, ${why}`;
  const issue = driftWarning(vm, stale.record, stale.now, outcome);
  return card?.blocked === null ? { ...issue, devices: [stale.from, card.to] } : issue;
}

/** The refusal of a hostdev on a device the host needs: removed, or to remove by hand. */
function neededIssue(
  vm: string,
  needed: HostNeeded,
  { stand, start }: { stand: string; start: StartGuard },
): PlanIssue {
  const { address, device, why, kind, rule } = needed;
  const element = kind === "interface"
    ? "<interface type='hostdev'>"
    : kind === "disk"
    ? "<disk type='nvme'>"
    : "<hostdev>";
  const holds = `holds ${describe(device)}, which the host needs now (${why})`;
  const head = kind === "interface"
    ? "Hostdev interface"
    : kind === "disk"
    ? "NVMe disk"
    : "Hostdev";
  const a = pciAddressToLibvirt(address);
  const ruled = rule === null ? "" : ` (rule "${rule}")`;
  const byHand = `remove it yourself: run "virsh edit ${
    shellWord(vm)
  }", delete the ${element} whose <source> has <address domain='${a.domain}' bus='${a.bus}' slot='${a.slot}' function='${a.function}'/>, then plan again`;
  const message = kind === "network"
    ? poolEntryMessage(vm, { network: needed.network!, address, holds, start, hostNeeds: true })
    : kind === "owned"
    ? `Hostdev ${address} of "${vm}"${ruled} ${holds}: the repair removes it${stand}, so that the next start cannot take it from the host`
    : rule !== null
    // A `vf:` rule's own interface: the repair removes hostdevs, not interfaces.
    ? `${head} ${address} of "${vm}"${ruled} ${holds}: the repair does not remove an interface, so ${byHand}`
    : `${head} ${address} of "${vm}" was added by hand and ${holds}: passthrough never edits what was added by hand, so ${byHand}`;
  return {
    code: "host-needed",
    message,
    vm,
    ...(rule === null ? {} : { rule }),
    devices: [address],
  };
}

/**
 * A refused VM's plan: its definition kept as it is (`hostdevs` and `keep` are what it holds),
 * its stale and host-needed hostdevs refused first, and `repair` holding their removals and
 * moves when there are any.
 */
export function repairRefused(plan: VmPlan, domain: ParsedDomain, input: RepairInput): VmPlan {
  const { host, byAddress } = input.context;
  const names = new Set(heldAddresses(domain));
  const stales: Stale[] = [];
  // Addresses that still hold the card recorded there: that card is accounted for, and is no
  // stale hostdev's card, however alike the two are.
  const accounted = new Set<PciAddress>();
  for (const have of domain.hostdevs) {
    const record = domain.records.find((r) => r.address === have.address);
    const now = byAddress.get(have.address);
    // A hostdev passthrough added has a record; one added by hand has none.
    if (record === undefined) continue;
    if (now !== undefined && sameIdentityAsRead(record, now)) {
      accounted.add(have.address);
      continue;
    }
    stales.push({ from: have.address, record, now });
  }
  locateCards(plan, stales, input, { names, accounted });
  const nics = staleInterfaces(plan.name, domain, byAddress);
  const others = plan.errors.length + stales.length + nics.issues.length + input.needed.length - 1;
  const stand = others > 0 ? ` even while the other refusals of "${plan.name}" stand` : "";
  const first: PlanIssue[] = [];
  const start = startGuard(input.context);
  for (const have of domain.hostdevs) {
    const stale = stales.find((s) => s.from === have.address);
    const use = host.hostUse?.find((u) => u.address === have.address);
    if (stale !== undefined) first.push(staleIssue(plan.name, stale, use, stand));
    const needed = input.needed.find((n) =>
      n.address === have.address && (n.kind === "owned" || n.kind === "hand-added")
    );
    if (needed !== undefined) first.push(neededIssue(plan.name, needed, { stand, start }));
  }
  for (const needed of input.needed.filter((n) => n.kind !== "owned" && n.kind !== "hand-added")) {
    first.push(neededIssue(plan.name, needed, { stand, start }));
  }
  plan.errors.unshift(...first, ...nics.issues);
  plan.hostdevs = [...domain.hostdevs, ...domain.interfaces].map((d) => d.address).sort();
  plan.keep = [...plan.hostdevs];
  const move: MovedHostdev[] = stales.flatMap((s) =>
    s.card?.blocked === null
      ? [{ from: s.from, to: s.card.to, rule: s.record.rule, evidence: s.card.evidence }]
      : []
  );
  const movedTo = new Map(move.map((m) => [m.from, m.to]));
  const remove = [
    ...stales.filter((s) => !movedTo.has(s.from)).map((s) => s.from),
    ...input.needed.filter((n) => n.kind === "owned").map((n) => n.address),
    ...nics.remove,
  ].sort(comparePciAddress);
  if (remove.length === 0 && move.length === 0) return plan;
  const gone = new Set(remove);
  const records = domain.records
    .filter((r) => !gone.has(r.address))
    .map((r) => {
      const to = movedTo.get(r.address);
      return to === undefined ? r : movedRecord(r, byAddress.get(to)!);
    })
    .sort((a, b) => comparePciAddress(a.address, b.address));
  plan.repair = {
    remove,
    move,
    desiredXml: editDomainXml(plan.currentXml, {
      remove,
      add: [],
      records,
      vfRecords: domain.vfRecords.filter((r) => !gone.has(r.address)),
      move: move.map(({ from, to }) => ({ from, to })),
    }),
  };
  return plan;
}

/**
 * The change `apply` makes for `vm`: its plan, or for a refused VM with a repair, that repair as
 * a plan with no refusals (its removals and moves, nothing added), so that asking, ordering,
 * checking, defining and verifying treat a repair as any change.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { emptyVmPlan } from "./vm_edit.ts";
 * const refused = {
 *   ...emptyVmPlan("win11", "<domain/>"),
 *   errors: [{ code: "no-match" as const, message: "..." }],
 *   repair: { remove: ["0000:08:00.0"], desiredXml: "<domain></domain>" },
 * };
 * const view = repairView(refused);
 * assertEquals([view.errors, view.remove, view.move, view.changed], [[], ["0000:08:00.0"], [], true]);
 * ```
 */
export function repairView(vm: VmPlan): VmPlan {
  if (vm.errors.length === 0 || vm.repair === undefined) return vm;
  return {
    ...vm,
    add: [],
    remove: vm.repair.remove,
    move: vm.repair.move ?? [],
    errors: [],
    desiredXml: vm.repair.desiredXml,
    changed: true,
  };
}

/**
 * The refusals for the IOMMU groups of the devices `domain` passes that no rule of it takes (a
 * hand-added hostdev, an `<interface type='hostdev'>` no `vf:` rule recorded, a `<disk
 * type='nvme'>`): VFIO hands the guest each such group whole, and libvirt detaches only what the
 * definition names, so the start guard refuses the start while another endpoint of the group is
 * one the host needs (`group-contains-host-critical`, which no `allow_host_critical` lifts: nothing
 * records a rule for such a device) or sits on a host driver (`group-not-viable`, a warning: the
 * start fails in any case). A group a rule of the VM takes is the closure's to judge.
 */
export function handAddedGroupIssues(
  vm: string,
  domain: ParsedDomain,
  { resolution, host }: { resolution: VmResolution; host: HostTopology },
): { errors: PlanIssue[]; warnings: PlanIssue[] } {
  const byAddress = new Map(host.devices.map((d) => [d.address, d]));
  const ruled = new Set(resolution.closure.devices.map((c) => c.device.address));
  const hand = handPassedAddresses(domain).filter((a) => !ruled.has(a));
  const groupOf = (address: PciAddress) => byAddress.get(address)?.iommuGroup ?? null;
  const ruledGroups = new Set([...ruled].map(groupOf));
  const handGroups = new Set(hand.map(groupOf).filter((g) => g !== null && !ruledGroups.has(g)));
  const passing = [...heldAddresses(domain), ...ruled];
  const { mates } = groupMates(passing, {
    device: (address) => byAddress.get(address) ?? null,
    group: groupOf,
    members: (group) =>
      host.groups.find((g) => g.group === group)?.devices.map((d) => d.address) ?? null,
  });
  const matchedCards = new Set(
    passing.flatMap((a) => byAddress.has(a) ? [cardOf(byAddress.get(a)!)] : []),
  );
  const errors: PlanIssue[] = [];
  const warnings: PlanIssue[] = [];
  for (const { device, group } of mates.filter((m) => handGroups.has(m.group))) {
    const bound = device.driver !== null && !VFIO_DRIVERS.has(device.driver);
    const why = hostCriticalReason(device, { matchedCards, hostUse: host.hostUse });
    if (!bound && why === null) continue;
    const holds = `IOMMU group ${group} of what "${vm}" was given by hand also holds ${
      describe(device)
    } at ${device.address}${bound ? ` (driver ${device.driver})` : ""}, which it does not pass${
      why === null ? "" : ` and the host needs (${why})`
    }`;
    // On a host driver, the start fails before VFIO takes anything: what the guard says then.
    const outcome = bound
      ? `libvirt detaches only the devices "${vm}" names, so its start fails ("group ${group} is not viable") until it is unbound or on vfio-pci${
        why === null ? "" : ", which takes from the host what it needs"
      }`
      : "VFIO hands the guest the whole group, so the start guard refuses the start, and no " +
        "allow_host_critical lifts it for a device added by hand";
    const issue: PlanIssue = {
      code: why === null ? "group-not-viable" : "group-contains-host-critical",
      message: why === null
        ? `${holds}: ${outcome}`
        : `${holds}: ${outcome}; remove that element (virsh edit ${
          shellWord(vm)
        }), or give it an IOMMU group of its own (the firmware's ACS or the kernel command line)`,
      vm,
      group,
      devices: [device.address],
    };
    (why === null ? warnings : errors).push(issue);
  }
  return { errors, warnings };
}
