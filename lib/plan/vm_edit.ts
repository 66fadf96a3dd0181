/**
 * The per-VM edit: from what a VM's rules resolve to and its current definition, the hostdevs
 * it gains, keeps, rewrites, moves and loses, and the XML it will be defined with. Pure.
 *
 * - Only hostdevs listed in our metadata (owned) are ever removed or rewritten. A rule that
 *   resolves to a device the VM already has as a hand-added hostdev keeps that element byte for
 *   byte and does not take it over (no record, so dropping the rule later never removes what the
 *   user wrote by hand); the reasoning says so. It is never duplicated.
 * - An owned hostdev whose card now sits at another address (same IDs and serial, or same IDs
 *   when the card is the only candidate) is moved (`VmPlan.move`, not listed in add/remove).
 * - `drift` (an owned address now holding a different device or nothing) is a warning: the plan
 *   itself corrects it (the stale hostdev is removed or re-resolved, visible in the diff), so a
 *   wrong device is never kept silently.
 * - A hostdev on a device the host needs now refuses the VM. A refused VM keeps its definition
 *   as it is, but for its stale and host-needed owned hostdevs: `VmPlan.repair` (`repair.ts`)
 *   removes them or follows a moved card, and `apply` defines that even while the VM is refused.
 *
 * @module
 */

import type { ClosedDevice } from "../resolve/closure.ts";
import { recordOf, sameIdentityAsRead, VFIO_DRIVERS } from "../resolve/match.ts";
import { cardOf } from "../resolve/host_critical.ts";
import {
  type DomainHostdev,
  editDomainXml,
  type GuestPciAddress,
  type ParsedDomain,
} from "../domain/domain_xml.ts";
import type { HostTopology, PciAddress, PciDevice } from "../host/types.ts";
import { pciAddressFromParts, pciAddressParts, slotOf } from "../pci/address.ts";
import {
  assignGuestSlots,
  type GuestLayout,
  laidOutAsCard,
  ROOT_BUS_DEVICE,
  specFor,
  strandedFunctions,
} from "./guest_slots.ts";
import { describe, driftWarning, handAddedMissingWarning, startGuard } from "./issues.ts";
import { findMovedCard } from "../resolve/moves.ts";
import { handAddedGroupIssues, hostNeededHostdevs, repairRefused } from "./repair.ts";
import { preflightIssues } from "./preflight.ts";
import type { HostFacts } from "../host/preflight.ts";
import { type NetworkPool, poolEntryErrors } from "./networks.ts";
import {
  interfaceChanged,
  interfaceDriftWarning,
  interfaceSpecOf,
  ownedInterface,
  releasedInterfaces,
  vfRecordOf,
} from "./interfaces.ts";
import type { VmResolution } from "./resolve.ts";
import type {
  DeviceIdentity,
  HostdevSpec,
  MovedHostdev,
  PlanIssue,
  PlannedHostdev,
  VfIdentity,
  VmPlan,
} from "./types.ts";
import type { VfChoice } from "../resolve/vf.ts";
import type { GuardPolicy } from "../config/config.ts";
import { oneLine } from "../render/terminal.ts";

/** What {@link planVm} needs besides the VM's definition and resolution. */
export interface VmContext {
  host: HostTopology;
  byAddress: ReadonlyMap<PciAddress, PciDevice>;
  /** Plan-wide refusals: each refuses this VM too. */
  globalErrors: readonly PlanIssue[];
  active: boolean | null;
  /** Host facts for the pre-flight findings (`preflight.ts`); absent: none are judged. */
  facts?: HostFacts;
  /** The pools of the hostdev networks, whose entries the VM's network interfaces may get. */
  pools?: readonly NetworkPool[];
  /**
   * Per domain, the PCI devices under host devices it uses (a block disk, a NIC its macvtap is
   * on), with what they are: a pool entry among them is refused, as the start guard does.
   */
  deviceControllers?: ReadonlyMap<string, ReadonlyMap<PciAddress, readonly string[]>>;
  /** `true` for a VM dropped from the config, planned with no rules (it says so once). */
  dropped?: boolean;
  /** The host section planned (`hosts:`), whose rules are the VM's here; absent: none. */
  section?: string;
  /** The VM's `guard:` policy, which judges its hand-added hostdevs; absent: `enforce`. */
  guard?: GuardPolicy;
  /** Whether the start guard is installed on the host planned; absent: unknown. */
  guardHook?: boolean;
}

/** The edit being built for one VM. */
interface Edit {
  readonly plan: VmPlan;
  readonly domain: ParsedDomain;
  /** Every device the VM's rules want, by address. */
  readonly desired: ReadonlyMap<PciAddress, ClosedDevice>;
  /** Each rule's first matched device: the one that gets its boot order. */
  readonly firstMatched: ReadonlySet<PciAddress>;
  /** Devices whose hostdev is written (new, rewritten or moved to). */
  readonly toAdd: ClosedDevice[];
  /** Owned hostdevs deleted (rewritten, moved from, or no longer wanted). */
  readonly remove: Set<PciAddress>;
  /** The new metadata records. */
  readonly records: DeviceIdentity[];
  /** The VF each `vf:` rule takes, by address: written as interfaces. */
  readonly vfs: ReadonlyMap<PciAddress, VfChoice>;
  /** The new VF records. */
  readonly vfRecords: VfIdentity[];
  /** Owned interfaces whose VF moved with its PF: the VF's old and new address. */
  readonly nicMoves: { from: PciAddress; to: PciAddress }[];
  /** The names of the VM's rules. */
  readonly rules: ReadonlySet<string>;
  /** Kept hostdevs whose record names another rule now, by `"old\0new"` rule names. */
  readonly renamed: Map<string, PciAddress[]>;
  /**
   * Owned hostdevs whose recorded card moved on while another wanted card moved in (new hardware
   * shifted the buses): each follows its own card, not the address.
   */
  readonly displaced: Set<PciAddress>;
  /**
   * Owned hostdevs rewritten only for their rule's `multifunction` turned on, with the reasoning
   * line that says so: kept as they are when no guest slot is free for their card.
   */
  readonly relayout: Map<PciAddress, string>;
}

/**
 * A plan for `name` that changes nothing: `xml` as both the current and the desired definition,
 * no hostdevs listed, no issues. The planner fills it in; scripts and tests building a plan by
 * hand spread it and override what they change.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const vm = { ...emptyVmPlan("win10", "<domain/>"), desiredXml: "<domain></domain>", changed: true };
 * assertEquals([vm.currentXml, vm.add, vm.changed], ["<domain/>", [], true]);
 * ```
 */
export function emptyVmPlan(name: string, xml: string): VmPlan {
  return {
    name,
    hostdevs: [],
    add: [],
    remove: [],
    keep: [],
    move: [],
    reasoning: [],
    warnings: [],
    errors: [],
    active: null,
    currentXml: xml,
    desiredXml: xml,
    changed: false,
  };
}

/** The identity recorded for `device`, as resolved by `rule`. */
function identityOf(
  device: PciDevice,
  rule: string,
  records: readonly DeviceIdentity[],
): DeviceIdentity {
  // Once libvirt has moved the card to vfio-pci, keep the driver it was first resolved with,
  // none included (a group member without a driver): else each start and stop changes the plan.
  const record = device.driver !== null && VFIO_DRIVERS.has(device.driver)
    ? recordOf(device, records)
    : null;
  const driver = record !== null ? record.driver : device.driver;
  // A serial this read could not reach keeps the recorded one (see sameIdentityAsRead).
  const serial = device.serial ??
    (device.flr !== null
      ? null
      : records.find((r) => r.address === device.address && sameIdentityAsRead(r, device))
        ?.serial ?? null);
  return {
    address: device.address,
    vendorId: device.vendorId,
    deviceId: device.deviceId,
    subsystemVendorId: device.subsystemVendorId,
    subsystemDeviceId: device.subsystemDeviceId,
    classCode: device.classCode,
    serial,
    ...(device.physicalSlot === null ? {} : { slot: device.physicalSlot }),
    driver,
    rule,
  };
}

/** The settings of an existing hostdev the planner writes (guest address aside), comparable. */
function settingsOfHostdev(hostdev: DomainHostdev): string {
  return JSON.stringify([
    hostdev.managed,
    hostdev.bootOrder ?? "",
    hostdev.romBar ?? "",
    hostdev.romFile ?? "",
  ]);
}

/** The settings of a spec, comparable with {@link settingsOfHostdev}. */
function settingsOfSpec(spec: HostdevSpec): string {
  return JSON.stringify([
    spec.managed,
    spec.bootOrder ?? "",
    spec.rom?.bar ?? "",
    spec.rom?.file ?? "",
  ]);
}

/**
 * Whether a hostdev sits in a multifunction guest slot, as `multifunction: true` lays cards out
 * (function numbers kept, function 0 marked `multifunction='on'`). libvirt's own placement puts
 * each hostdev at function 0 of a slot of its own, unmarked.
 */
function inMultifunctionSlot(hostdev: DomainHostdev): boolean {
  const guest = hostdev.guestAddress;
  return guest !== null && (guest.multifunction || pciAddressParts(guest.address).function !== 0);
}

/**
 * Whether the card of `closed`, a function other than 0, has its function 0 in the guest apart
 * from `closed`'s rule (added by hand, as an interface, by another rule) and `assignGuestSlots`,
 * laying `closed` out again, would leave it where libvirt places it (function 0's slot cannot take
 * it): libvirt's placement is then no `multifunction` turned on.
 */
function besideOtherFunctionZero(edit: Edit, closed: ClosedDevice): boolean {
  const address = closed.device.address;
  if (pciAddressParts(address).function === 0) return false;
  const zero = `${slotOf(address)}.0`;
  const wanted = edit.desired.get(zero);
  const apart = [...edit.domain.hostdevs, ...edit.domain.interfaces].some((d) =>
    d.address === zero &&
    (!d.owned || (wanted !== undefined && wanted.rule.name !== closed.rule.name))
  );
  // Rewritten, it would join a function 0 whose slot is marked multifunction since.
  return apart && assignGuestSlots([closed], edit.firstMatched, edit.domain, [], {
        movedFrom: new Map(),
        leaving: new Set([address]),
      }).specs.get(address)?.guestAddress === undefined;
}

/**
 * libvirt refuses per-device boot order next to `<os><boot dev=...>`, and one boot order on two
 * devices (`boot order '1' used for more than one device`): say so before apply, at the rule.
 */
function bootOrderConflicts(
  vm: string,
  domain: ParsedDomain,
  resolution: VmResolution,
): PlanIssue[] {
  // A first device kept as written (a hand-added hostdev or interface, a `<disk type='nvme'>`)
  // gets no boot order from the rule: nothing of the rule's meets libvirt's checks.
  const kept = new Set([
    ...[...domain.hostdevs, ...domain.interfaces].filter((d) => !d.owned).map((d) => d.address),
    ...domain.nvmeDisks,
  ]);
  const setting = resolution.rules.filter((r) =>
    r.rule.bootOrder !== undefined && r.devices.length > 0 && !kept.has(r.devices[0]!.address)
  );
  if (domain.bootDevices.length > 0) {
    return setting.map((r): PlanIssue => ({
      code: "boot-order-conflict",
      message:
        `Rule "${r.rule.name}" sets boot_order but VM "${vm}" boots by <os><boot dev=...>, which libvirt refuses to combine: replace the <boot dev> lines with <boot order='N'/> on its disk, or drop boot_order`,
      vm,
      rule: r.rule.name,
      location: r.rule.location,
    }));
  }
  // Our own hostdevs and interfaces are written again from the rules, or removed: their orders
  // are free. A hand-written one stays as it is, and so do the other devices.
  const ours = new Set(
    [...domain.hostdevs, ...domain.interfaces].flatMap((d) =>
      d.owned && d.bootOrder !== null ? [d.bootOrder] : []
    ),
  );
  const taken = new Map(
    domain.bootOrders.filter((b) => !ours.has(b.order)).map((b) => [b.order, `a <${b.device}>`]),
  );
  const issues: PlanIssue[] = [];
  for (const r of setting) {
    const order = r.rule.bootOrder!;
    const holder = taken.get(order);
    if (holder === undefined) {
      taken.set(order, `rule "${r.rule.name}"`);
      continue;
    }
    issues.push({
      code: "boot-order-conflict",
      message:
        `Rule "${r.rule.name}" sets boot_order ${order}, which ${holder} of VM "${vm}" has too, and libvirt refuses one boot order on two devices: give the rule a boot_order no other device has`,
      vm,
      rule: r.rule.name,
      location: r.rule.location,
    });
  }
  return issues;
}

/** One wanted device the VM already has as an owned hostdev: kept, or rewritten if it changed. */
function keepOrRewrite(edit: Edit, have: DomainHostdev, closed: ClosedDevice): void {
  const { plan, domain } = edit;
  const { address } = have;
  const rule = closed.rule.name;
  const record = domain.records.find((r) => r.address === address);
  if (record !== undefined && !sameIdentityAsRead(record, closed.device)) {
    const outcome = `rule "${rule}" matches the new device, so it stays and its record is updated`;
    plan.warnings.push({ ...driftWarning(plan.name, record, closed.device, outcome), rule });
  } else if (
    record !== undefined && record.slot === undefined && closed.device.physicalSlot !== null
  ) {
    // A record written before slots were recorded: only its metadata changes, so say why.
    plan.reasoning.push(
      `${address}: slot ${
        oneLine(closed.device.physicalSlot, false)
      } added to its record (rule "${rule}"), which the start guard compares from then on`,
    );
  }
  if (record !== undefined && record.rule !== rule) {
    // Only the record changes: say so, or the diff shows metadata rewritten with no word why
    // (and the start guard's policies go by the recorded rule name).
    const key = `${record.rule}\0${rule}`;
    edit.renamed.set(key, [...edit.renamed.get(key) ?? [], address]);
  }
  const identity = identityOf(closed.device, rule, domain.records);
  edit.records.push(identity);
  if (
    record !== undefined && sameIdentityAsRead(record, closed.device) &&
    record.driver !== identity.driver
  ) {
    // Bound otherwise since (driverctl's override dropped, a vfio-pci.ids= entry removed): only
    // the metadata changes, so say why, or `plan --detailed-exitcode` reports a change unexplained.
    // The recorded name comes back from the domain's metadata, newlines and all.
    const named = (driver: string | null) => driver === null ? "no driver" : oneLine(driver, false);
    plan.reasoning.push(
      `${address}: on ${named(identity.driver)} now, not the recorded ${
        named(record.driver)
      } (rule "${rule}"): only its record changes`,
    );
  }
  // A root bus's function is no card's: libvirt's placement is its layout (`assignGuestSlots`).
  const on = laidOutAsCard(closed);
  let why: string | null = null;
  if (settingsOfHostdev(have) !== settingsOfSpec(specFor(closed, edit.firstMatched))) {
    why = `${address}: settings of rule "${rule}" changed, rewritten`;
  } else if (inMultifunctionSlot(have) !== on && !(on && besideOtherFunctionZero(edit, closed))) {
    // `multifunction` turned on or off: the guest addresses are laid out again.
    why = closed.rule.multifunction && !on
      ? `${address}: ${ROOT_BUS_DEVICE}, rewritten with libvirt's own guest address`
      : `${address}: multifunction of rule "${rule}" turned ${on ? "on" : "off"}, rewritten with ${
        on ? "one guest slot per card" : "libvirt's own guest addresses"
      }`;
    // Whether a slot is free is known once the cards are laid out (`keepUnplaced`).
    if (on) edit.relayout.set(address, why);
  }
  if (why === null) return;
  edit.remove.add(address);
  edit.toAdd.push(closed);
  if (!edit.relayout.has(address)) plan.reasoning.push(why);
}

/**
 * Whether the card recorded at `have`'s address, now holding another wanted device, is proven to
 * sit at another address its rule wants ({@link findMovedCard}): a card added before it shifted
 * the buses, so each card moved one bus on. Keeping the hostdev for the device now there would
 * hand it the guest address of the card that left, and show the moves as drift.
 */
function cardMovedOn(edit: Edit, have: DomainHostdev, context: VmContext): boolean {
  const record = edit.domain.records.find((r) => r.address === have.address);
  const now = context.byAddress.get(have.address);
  if (record === undefined || now === undefined || sameIdentityAsRead(record, now)) return false;
  const candidates = [...edit.desired.values()].filter((c) =>
    c.rule.name === record.rule && c.device.address !== have.address
  );
  return findMovedCard(record, have.address, candidates, context.host) !== undefined;
}

/** Every wanted device: added, kept as written (hand-added or an interface), kept or rewritten. */
function takeWanted(edit: Edit, context: VmContext): void {
  const { plan, domain } = edit;
  const existing = new Map(domain.hostdevs.map((h) => [h.address, h]));
  for (const [address, closed] of edit.desired) {
    const have = existing.get(address);
    const kept = (as: string, not: string) =>
      plan.reasoning.push(
        `${address} (rule "${closed.rule.name}") is already in "${plan.name}" as ${as}: kept as written, ${not}`,
      );
    const choice = edit.vfs.get(address);
    const nic = ownedInterface(domain, address);
    const rewrite = (why: string) => {
      edit.remove.add(address);
      edit.toAdd.push(closed);
      plan.reasoning.push(`${address}: ${why} (rule "${closed.rule.name}"), rewritten`);
    };
    if (choice !== undefined && (nic !== undefined || have?.owned === true)) {
      // Our interface, kept or rewritten; or our hostdev of a VF a `vf:` rule now takes.
      const was = domain.vfRecords.find((r) => r.address === address);
      if (
        nic !== undefined && was !== undefined && was.pf.address === choice.pf.address &&
        !sameIdentityAsRead(was.pf, choice.pf)
      ) {
        const outcome =
          `rule "${closed.rule.name}" matches the new device, so it stays and its record is updated`;
        plan.warnings.push(interfaceDriftWarning(plan.name, was, choice.pf, outcome));
      }
      edit.vfRecords.push(vfRecordOf(choice, closed.rule.name, domain.vfRecords));
      if (nic === undefined) rewrite("hostdev now taken as an interface");
      else if (interfaceChanged(nic, specOf(edit, closed))) rewrite("interface changed");
    } else if (have === undefined && nic !== undefined) {
      // Our interface of a VF a rule now takes as a plain hostdev.
      edit.records.push(identityOf(closed.device, closed.rule.name, domain.records));
      rewrite("interface now taken as a hostdev");
    } else if (have === undefined && domain.interfaceHostdevs.includes(address)) {
      kept("an <interface type='hostdev'>", "not added twice");
    } else if (have === undefined && domain.nvmeDisks.includes(address)) {
      kept("a <disk type='nvme'>", "not added twice");
    } else if (have === undefined) edit.toAdd.push(closed);
    else if (!have.owned) kept("a hand-added hostdev", "not taken over");
    else if (cardMovedOn(edit, have, context)) {
      // Written again from its rule; `releaseUnwanted` follows the card recorded here.
      edit.displaced.add(address);
      edit.remove.add(address);
      edit.toAdd.push(closed);
      edit.records.push(identityOf(closed.device, closed.rule.name, domain.records));
    } else keepOrRewrite(edit, have, closed);
  }
  for (const [key, addresses] of edit.renamed) {
    const [was, now] = key.split("\0");
    plan.reasoning.push(
      `${
        addresses.join(", ")
      }: recorded under rule "${was}", now under rule "${now}" (the rule was renamed, or another rule takes ${
        addresses.length === 1 ? "it" : "them"
      }): the record says so, the hostdev stays`,
    );
  }
}

/** The spec of a wanted device: an interface for a `vf:` rule's VF. */
function specOf(edit: Edit, closed: ClosedDevice, spec = specFor(closed, edit.firstMatched)) {
  const choice = edit.vfs.get(closed.device.address);
  if (choice !== undefined) spec.interface = interfaceSpecOf(closed, choice);
  return spec;
}

/** Owned hostdevs no longer wanted: removed, unless the same card now sits at a new address. */
function releaseUnwanted(edit: Edit, context: VmContext): void {
  const { plan, domain } = edit;
  const released = releasedInterfaces(plan.name, domain, edit.vfs, context.byAddress);
  for (const address of released.remove) edit.remove.add(address);
  plan.warnings.push(...released.notes);
  plan.reasoning.push(...released.reasoning);
  edit.nicMoves.push(...released.moved);
  const claimed = new Set<PciAddress>();
  // Hostdevs removed although their card is still there, by the rule that recorded them.
  const dropped = new Map<string, PciAddress[]>();
  for (const have of domain.hostdevs) {
    if (!have.owned || (edit.desired.has(have.address) && !edit.displaced.has(have.address))) {
      continue;
    }
    edit.remove.add(have.address);
    const record = domain.records.find((r) => r.address === have.address);
    if (record === undefined) continue;
    const now = context.byAddress.get(have.address);
    const stillThere = now !== undefined && sameIdentityAsRead(record, now);
    const candidates = edit.toAdd.filter((c) =>
      !claimed.has(c.device.address) && c.rule.name === record.rule
    );
    const target = stillThere
      ? undefined
      : findMovedCard(record, have.address, candidates, context.host);
    if (target !== undefined) {
      const { found: closed, evidence } = target;
      claimed.add(closed.device.address);
      plan.move.push({
        from: have.address,
        to: closed.device.address,
        rule: closed.rule.name,
        evidence,
      });
      plan.warnings.push({
        code: "moved",
        message:
          `Hostdev ${have.address} of "${plan.name}" (rule "${closed.rule.name}") moved to ${closed.device.address}, ${evidence}: the hostdev follows it`,
        vm: plan.name,
        rule: closed.rule.name,
        devices: [have.address, closed.device.address],
        info: true,
      });
      plan.reasoning.push(
        `Moved from ${have.address} to ${closed.device.address}, ${evidence} (rule "${closed.rule.name}")`,
      );
    } else if (!stillThere) {
      plan.warnings.push(driftWarning(plan.name, record, now, "it is removed"));
    } else {
      const left = leftItsGroup(have.address, now, record.rule, edit.desired);
      if (left !== null) plan.reasoning.push(left);
      else dropped.set(record.rule, [...dropped.get(record.rule) ?? [], have.address]);
    }
  }
  // A VM dropped from the config says so once, for all of its hostdevs (`fixpoint.ts`).
  if (context.dropped === true) return;
  for (const [rule, addresses] of dropped) {
    const them = addresses.length === 1 ? "it" : "them";
    plan.reasoning.push(
      `Removed ${addresses.join(", ")}: ${
        edit.rules.has(rule)
          ? `rule "${rule}" no longer takes ${them}`
          : `"${plan.name}" has no rule "${rule}"${
            context.section === undefined ? " any more" : ` for host "${context.section}"`
          }`
      }`,
    );
  }
}

/**
 * Why a function still there leaves the VM when another function of its card stays under the same
 * rule in another IOMMU group: a function comes with a matched device only from its group (a GPU's
 * audio), so a firmware or ACS change that split the group drops it. Nothing records the group it
 * had, and a narrowed rule leaves a function of a card whose groups never changed the same way, so
 * this says what holds now, not that the group split. Without it, the diff removes it with no word
 * why. `null` otherwise.
 */
function leftItsGroup(
  address: PciAddress,
  now: PciDevice,
  rule: string,
  desired: ReadonlyMap<PciAddress, ClosedDevice>,
): string | null {
  const card = cardOf(now);
  const sibling = [...desired.values()].find((c) =>
    c.rule.name === rule && cardOf(c.device) === card &&
    c.device.iommuGroup !== now.iommuGroup
  );
  if (sibling === undefined) return null;
  return `Removed ${address}: rule "${rule}" takes ${sibling.device.address} of its card, in IOMMU group ${
    sibling.device.iommuGroup ?? "none"
  }, and this function is in group ${
    now.iommuGroup ?? "none"
  }: a function comes with a matched device only from its group (one a firmware or ACS setting split no longer brings it): match it in a rule to keep it`;
}

function planned(closed: ClosedDevice, spec: HostdevSpec, edit: Edit): PlannedHostdev {
  const choice = edit.vfs.get(closed.device.address);
  return {
    address: closed.device.address,
    rule: closed.rule.name,
    reason: closed.reason,
    group: closed.device.iommuGroup,
    spec,
    identity: identityOf(closed.device, closed.rule.name, edit.domain.records),
    description: describe(closed.device),
    ...(choice === undefined
      ? {}
      : { vf: vfRecordOf(choice, closed.rule.name, edit.domain.vfRecords) }),
  };
}

/**
 * The moves whose hostdev keeps its old guest address as it is, so the guest sees the same device
 * where it was (no new driver install) and the diff shows the source address change at the same
 * guest address, not one device becoming another: those libvirt placed, not laid out as a card
 * ({@link laidOutAsCard}: a root bus's function is not). A `multifunction: true` card is laid out whole by `assignGuestSlots`, in the
 * slot its hostdevs had when its functions are free there (else a port whose sibling's old
 * address now holds another device would keep its place and leave the card split); one whose
 * rule's `multifunction` turned on or off with the move takes the new layout, as a card that
 * stayed is rewritten with it.
 */
function movesKeepingGuestAddress(
  plan: VmPlan,
  domain: ParsedDomain,
  toAdd: readonly ClosedDevice[],
): { move: MovedHostdev; guest: GuestPciAddress }[] {
  return plan.move.flatMap((move) => {
    const old = domain.hostdevs.find((h) => h.address === move.from);
    const guest = old?.guestAddress ?? null;
    const closed = toAdd.find((c) => c.device.address === move.to);
    if (old === undefined || guest === null || closed === undefined) return [];
    return laidOutAsCard(closed) || inMultifunctionSlot(old) ? [] : [{ move, guest }];
  });
}

/**
 * The owned hostdevs rewritten where they are (a changed `managed`, `rom` or `boot_order`) that
 * keep their guest address, as a moved card does: the guest must not see its GPU or NIC at a new
 * place (a new driver install, a renamed interface) because its boot order changed. Those libvirt
 * placed, not laid out as a card ({@link laidOutAsCard}), and not rewritten as an interface; a
 * `multifunction` card is laid out by `assignGuestSlots`, and one whose `multifunction` turned on
 * or off takes the new layout.
 */
function rewritesKeepingGuestAddress(
  edit: Edit,
): { move: Pick<MovedHostdev, "to">; guest: GuestPciAddress }[] {
  return edit.toAdd.flatMap((closed) => {
    const address = closed.device.address;
    if (!edit.remove.has(address) || edit.vfs.has(address) || laidOutAsCard(closed)) return [];
    // A card moved here keeps the guest address it had (`movesKeepingGuestAddress`).
    if (edit.plan.move.some((m) => m.to === address || m.from === address)) return [];
    const old = edit.domain.hostdevs.find((h) => h.address === address && h.owned);
    const guest = old?.guestAddress ?? null;
    if (old === undefined || guest === null || inMultifunctionSlot(old)) return [];
    return [{ move: { to: address }, guest }];
  });
}

/** The specs of the hostdevs chosen to keep their guest address get it. */
function keepGuestAddresses(
  specs: Map<PciAddress, HostdevSpec>,
  keeping: readonly { move: Pick<MovedHostdev, "to">; guest: GuestPciAddress }[],
): void {
  for (const { move, guest } of keeping) {
    const spec = specs.get(move.to);
    if (spec === undefined) continue;
    const { domain: d, bus, slot, function: fn } = pciAddressParts(guest.address);
    spec.guestAddress = {
      domain: d,
      bus,
      slot,
      function: fn,
      ...(guest.multifunction ? { multifunction: true } : {}),
    };
  }
}

/**
 * The moves whose hostdev is rewritten in place (only its source address changes, so it keeps
 * its position and the diff shows one line): those whose new spec has the old element's settings
 * and guest address. Any other moved card is removed and written again from its spec.
 */
function movesInPlace(
  plan: VmPlan,
  domain: ParsedDomain,
  specs: ReadonlyMap<PciAddress, HostdevSpec>,
): { from: PciAddress; to: PciAddress }[] {
  return plan.move.filter((move) => {
    const have = domain.hostdevs.find((h) => h.address === move.from);
    const spec = specs.get(move.to);
    if (have === undefined || spec === undefined) return false;
    if (settingsOfHostdev(have) !== settingsOfSpec(spec)) return false;
    const guest = have.guestAddress;
    if (spec.guestAddress === undefined) return guest === null;
    if (guest === null) return false;
    const { multifunction, ...parts } = spec.guestAddress;
    return pciAddressFromParts(parts) === guest.address &&
      (multifunction ?? false) === guest.multifunction;
  }).map(({ from, to }) => ({ from, to }));
}

/**
 * Whether `address` holds one element of `domain`'s, owned, and of `spec`'s kind (an
 * `<interface>` for a spec with `interface`, else a `<hostdev>`): one that can be written again.
 */
function soleOwnedAt(
  domain: ParsedDomain,
  address: PciAddress,
  spec: HostdevSpec | undefined,
): boolean {
  const hostdevs = domain.hostdevs.filter((h) => h.address === address);
  const nics = domain.interfaces.filter((i) => i.address === address);
  const [one] = spec?.interface === undefined ? hostdevs : nics;
  return hostdevs.length + nics.length === 1 && one?.owned === true;
}

/** The identity record of each device added, but for those also removed (rewritten in place). */
function recordAdded(edit: Edit): void {
  const { domain, toAdd, remove } = edit;
  for (const closed of toAdd) {
    const choice = edit.vfs.get(closed.device.address);
    if (choice !== undefined && !remove.has(closed.device.address)) {
      edit.vfRecords.push(vfRecordOf(choice, closed.rule.name, domain.vfRecords));
    } else if (!remove.has(closed.device.address)) {
      edit.records.push(identityOf(closed.device, closed.rule.name, domain.records));
    }
  }
}

/** The plan's removed, kept and final hostdev lists, and the records sorted by address. */
function listOutcome(edit: Edit): void {
  const { plan, domain, toAdd, remove } = edit;
  const movedFrom = new Set(plan.move.map((m) => m.from));
  plan.remove = [...remove].filter((a) => !movedFrom.has(a)).sort();
  plan.keep = [...domain.hostdevs, ...domain.interfaces].map((d) => d.address)
    .filter((a) => !remove.has(a)).sort();
  plan.hostdevs = [...new Set([...plan.keep, ...toAdd.map((c) => c.device.address)])].sort();
  edit.records.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
  edit.vfRecords.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
}

/**
 * The hostdevs rewritten only for `multifunction` turned on whose card found no guest slot
 * (`specs` gives them none): libvirt would place them again where they are, so they are kept as
 * they are, or every plan would rewrite them.
 */
function keepUnplaced(edit: Edit, specs: ReadonlyMap<PciAddress, HostdevSpec>): void {
  for (const [address, why] of edit.relayout) {
    if (specs.get(address)?.guestAddress !== undefined) {
      edit.plan.reasoning.push(why);
      continue;
    }
    edit.remove.delete(address);
    const at = edit.toAdd.findIndex((c) => c.device.address === address);
    if (at >= 0) edit.toAdd.splice(at, 1);
    edit.plan.reasoning.push(
      `${address}: multifunction is on, but its card has no guest slot: kept where libvirt placed it`,
    );
  }
}

/**
 * The guest addresses of the hostdevs written: moved and rewritten ones keeping theirs,
 * `multifunction` cards laid out (see `assignGuestSlots`), the rest left to libvirt. Returns
 * each added device's spec, by address, and the controllers the layout adds.
 */
function layOut(edit: Edit): GuestLayout {
  const { plan, domain, toAdd, remove } = edit;
  const keeping = movesKeepingGuestAddress(plan, domain, toAdd);
  const rewrites = rewritesKeepingGuestAddress(edit);
  // Their guest slots stay taken: no card laid out now may be put there.
  const kept = new Set([
    ...keeping.map(({ move }) => move.from),
    ...rewrites.map(({ move }) => move.to),
  ]);
  const layout = assignGuestSlots(toAdd, edit.firstMatched, domain, plan.reasoning, {
    movedFrom: new Map(plan.move.map((m) => [m.to, m.from])),
    leaving: new Set([...remove].filter((a) => !kept.has(a))),
  });
  keepUnplaced(edit, layout.specs);
  for (const closed of toAdd) specOf(edit, closed, layout.specs.get(closed.device.address));
  keepGuestAddresses(layout.specs, [...keeping, ...rewrites]);
  plan.reasoning.push(...strandedFunctions(domain, remove, layout.specs));
  return layout;
}

/** The desired XML: the edit's removals, additions, rewrites and moves applied to `xml`. */
function editedXml(edit: Edit, xml: string, { specs, controllers }: GuestLayout): string {
  const { plan, domain, toAdd, remove } = edit;
  const movedTo = new Set(plan.move.map((m) => m.to));
  const movedFrom = new Set(plan.move.map((m) => m.from));
  const inPlace = movesInPlace(plan, domain, specs);
  const from = new Set(inPlace.map((m) => m.from));
  const to = new Set(inPlace.map((m) => m.to));
  // A hostdev or interface rewritten at the same address (its settings changed) is written again
  // where it is, keeping the user's own children (`<alias>`, `<acpi>`, a NIC's guest address...).
  const again = new Set(
    toAdd.map((c) => c.device.address).filter((a) =>
      remove.has(a) && !movedTo.has(a) && !movedFrom.has(a) &&
      soleOwnedAt(domain, a, specs.get(a))
    ),
  );
  // An interface whose VF moved with its PF, and a moved card whose settings changed too (not
  // moved in place above), are written again where they were, at their new address: the guest
  // keeps the NIC's ACPI index and what else the user set, as for a card that only moved. Only
  // one owned element of the spec's kind at the old address, nothing at the new one.
  const movable = ({ from: old, to: now }: { from: PciAddress; to: PciAddress }) =>
    specs.has(now) && soleOwnedAt(domain, old, specs.get(now)) && remove.has(old) &&
    !remove.has(now) && !domain.hostdevs.some((h) => h.address === now) &&
    !domain.interfaces.some((i) => i.address === now);
  const movedAgain = [
    ...edit.nicMoves,
    ...plan.move.filter((m) => !from.has(m.from)),
  ].filter(movable);
  const movedAgainFrom = new Set(movedAgain.map((m) => m.from));
  const movedAgainTo = new Set(movedAgain.map((m) => m.to));
  const rewrite = [
    ...[...again].map((a) => specs.get(a)!),
    ...movedAgain.map(({ from: old, to: now }) => ({ ...specs.get(now)!, from: old })),
  ];
  return editDomainXml(xml, {
    ...(controllers.length > 0 ? { addControllers: controllers } : {}),
    remove: [...remove].filter((a) => !from.has(a) && !again.has(a) && !movedAgainFrom.has(a)),
    add: toAdd.filter((c) => {
      const a = c.device.address;
      return !to.has(a) && !again.has(a) && !movedAgainTo.has(a);
    }).map((c) => specs.get(c.device.address)!),
    ...(rewrite.length > 0 ? { rewrite } : {}),
    records: edit.records,
    vfRecords: edit.vfRecords,
    move: inPlace,
  });
}

/** The lists, records and desired XML from the decisions taken. */
function finishEdit(edit: Edit, xml: string, active: boolean | null): VmPlan {
  const { plan, toAdd, remove } = edit;
  recordAdded(edit);
  const layout = layOut(edit);
  const movedTo = new Set(plan.move.map((m) => m.to));
  // New hostdevs first, then the rewritten ones (listed as both removed and added).
  const fresh = toAdd.filter((c) =>
    !movedTo.has(c.device.address) && !remove.has(c.device.address)
  );
  const rewritten = toAdd.filter((c) =>
    remove.has(c.device.address) && !movedTo.has(c.device.address)
  );
  for (const closed of [...fresh, ...rewritten]) {
    plan.add.push(planned(closed, layout.specs.get(closed.device.address)!, edit));
  }
  listOutcome(edit);
  plan.desiredXml = editedXml(edit, xml, layout);
  plan.changed = plan.desiredXml !== plan.currentXml;
  if (plan.changed && active === true) warnRunning(plan);
  return plan;
}

/** A changed definition of a running VM takes effect only at its next cold start. */
function warnRunning(plan: VmPlan): void {
  plan.warnings.push({
    code: "vm-running",
    message:
      `VM "${plan.name}" is running: the new definition takes effect the next time it is powered off and started`,
    vm: plan.name,
  });
}

/** A warning for each hand-written hostdev or interface whose host address holds no device. */
function handAddedMissing(vm: string, domain: ParsedDomain, context: VmContext): PlanIssue[] {
  const { byAddress } = context;
  const start = startGuard(context);
  const gone = (d: { address: PciAddress; owned: boolean }) =>
    !d.owned && !byAddress.has(d.address);
  const at = (d: { address: PciAddress; guestAddress: GuestPciAddress | null }) => ({
    address: d.address,
    guest: d.guestAddress?.address ?? null,
  });
  return [
    ...domain.hostdevs.filter(gone).map((h) =>
      handAddedMissingWarning(vm, "hostdev", at(h), start)
    ),
    ...domain.interfaces.filter(gone).map((i) =>
      handAddedMissingWarning(vm, "interface", at(i), start)
    ),
  ];
}

/**
 * The plan of one VM: its definition (`xml`, parsed as `domain`) edited to hold what its rules
 * resolve to. A VM with any refusal (its own, a conflict, or plan-wide) keeps its definition.
 */
export function planVm(
  xml: string,
  domain: ParsedDomain,
  resolution: VmResolution,
  context: VmContext,
): VmPlan {
  const vm = resolution.vm;
  const plan = emptyVmPlan(vm, xml);
  plan.active = context.active;
  plan.reasoning.push(...resolution.closure.reasoning);
  const preflight = context.facts === undefined
    ? null
    : preflightIssues(vm, domain, resolution, { host: context.host, facts: context.facts });
  // Where reset_method is known, `reset` judges the reset and the older `no-flr` gives way.
  plan.warnings.push(
    ...resolution.warnings.filter((w) =>
      w.code !== "no-flr" || !w.devices?.every((d) => preflight?.resetJudged.has(d))
    ),
    ...preflight?.warnings ?? [],
  );
  plan.errors.push(
    ...context.globalErrors.map((e) => ({ ...e, vm })),
    ...resolution.errors,
    ...bootOrderConflicts(vm, domain, resolution),
    ...preflight?.errors ?? [],
    ...poolEntryErrors(vm, domain.networks, context.pools ?? [], context.byAddress, {
      deviceControllers: context.deviceControllers,
      hostUse: context.host.hostUse,
      start: startGuard(context),
    }),
  );
  plan.warnings.push(...handAddedMissing(vm, domain, context));
  const handGroups = handAddedGroupIssues(vm, domain, { resolution, host: context.host });
  plan.errors.push(...handGroups.errors);
  plan.warnings.push(...handGroups.warnings);
  const needed = hostNeededHostdevs(domain, resolution, context.host, context.pools);
  if (plan.errors.length > 0 || needed.length > 0) {
    return repairRefused(plan, domain, { resolution, context, needed });
  }
  const edit: Edit = {
    plan,
    domain,
    desired: new Map(resolution.closure.devices.map((c) => [c.device.address, c])),
    firstMatched: new Set(
      resolution.rules.flatMap((r) => r.devices.length > 0 ? [r.devices[0]!.address] : []),
    ),
    toAdd: [],
    remove: new Set(),
    records: [],
    vfs: resolution.vfs,
    vfRecords: [],
    nicMoves: [],
    rules: new Set(resolution.rules.map((r) => r.rule.name)),
    renamed: new Map(),
    relayout: new Map(),
    displaced: new Set(),
  };
  takeWanted(edit, context);
  releaseUnwanted(edit, context);
  return finishEdit(edit, xml, context.active);
}
