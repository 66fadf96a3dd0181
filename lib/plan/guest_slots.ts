/**
 * The hostdev specs of the devices a VM gains, and their guest slots: for rules with
 * `multifunction: true`, a card's functions share one guest slot with their host function
 * numbers, so the guest sees the card as one device. On i440fx (`pc`) machines that slot is on
 * guest bus 0; on q35 machines (and others with a `pcie-root`, as aarch64 `virt`) it is slot 0 of
 * a `pcie-root-port` of the card's own (the layout
 * VFIO guides describe, and what PCIe drivers expect), added to the definition when no empty
 * one is there. Pure.
 *
 * @module
 */

import type { ClosedDevice } from "../resolve/closure.ts";
import type { GuestPciAddress, ParsedDomain, PciControllerSpec } from "../domain/domain_xml.ts";
import { pciAddressParts, slotOf } from "../pci/address.ts";
import type { PciAddress, PciDevice } from "../host/types.ts";
import type { HostdevSpec } from "./types.ts";
import { cardOf, onRootBus } from "../resolve/host_critical.ts";

/** Why a root bus's function gets no card layout ({@link cardOf}). */
export const ROOT_BUS_DEVICE = "a device of its own on a root bus, not a card's function";
/** Slots from here up leave the low ones to the devices libvirt places itself. */
const FIRST_SLOT = 0x10;
const LAST_SLOT = 0x1f;
/** The highest guest bus number (a controller index) libvirt accepts. */
const LAST_BUS = 0xff;

/**
 * How the rule of `closed` writes its hostdev (guest address aside). ROM and boot settings
 * describe the device the user named, not the group members it drags in; boot order must be
 * unique in a domain, so only the rule's first matched device (in `firstMatched`) gets it.
 */
export function specFor(closed: ClosedDevice, firstMatched: ReadonlySet<PciAddress>): HostdevSpec {
  const rule = closed.rule;
  const spec: HostdevSpec = { address: closed.device.address, managed: rule.managed };
  if (closed.reason === "matched" && rule.rom !== undefined) spec.rom = { ...rule.rom };
  if (rule.bootOrder !== undefined && firstMatched.has(closed.device.address)) {
    spec.bootOrder = rule.bootOrder;
  }
  return spec;
}

/** Where a guest function sits: bus and slot of guest PCI domain 0, and function. */
interface GuestSpot {
  bus: number;
  slot: number;
  fn: number;
}

/** The bus, slot and function of a guest address in PCI domain 0, or `null` in another domain. */
function inDomainZero(guest: GuestPciAddress): GuestSpot | null {
  const p = pciAddressParts(guest.address);
  return p.domain === 0 ? { bus: p.bus, slot: p.slot, fn: p.function } : null;
}

/** One key per guest slot of PCI domain 0. */
function slotKey(bus: number, slot: number): number {
  return bus * 0x100 + slot;
}

/** A guest slot in use: the functions devices use in it, and whether 0 says multifunction. */
interface UsedSlot {
  functions: Set<number>;
  multifunction: boolean;
}

/** Every guest slot of PCI domain 0 the definition's devices use, by {@link slotKey}. */
function usedSlots(domain: ParsedDomain): Map<number, UsedSlot> {
  const bySlot = new Map<number, UsedSlot>();
  for (const guest of domain.guestAddresses) {
    const at = inDomainZero(guest);
    if (at === null) continue;
    const key = slotKey(at.bus, at.slot);
    const entry = bySlot.get(key) ?? { functions: new Set<number>(), multifunction: false };
    entry.functions.add(at.fn);
    if (at.fn === 0 && guest.multifunction) entry.multifunction = true;
    bySlot.set(key, entry);
  }
  return bySlot;
}

/**
 * The guest slots once the edit is done, for joining: `used` without the functions of the
 * hostdevs and owned `<interface type='hostdev'>`s the edit removes (`changes.leaving`), so a
 * card rewritten or moved whole can take its own functions' places again.
 */
function usedAfterEdit(
  domain: ParsedDomain,
  used: ReadonlyMap<number, UsedSlot>,
  changes: HostdevChanges,
): Map<number, UsedSlot> {
  const after = new Map(
    [...used].map(([key, entry]) => [key, { ...entry, functions: new Set(entry.functions) }]),
  );
  for (const hostdev of [...domain.hostdevs, ...domain.interfaces.filter((i) => i.owned)]) {
    if (!changes.leaving.has(hostdev.address) || hostdev.guestAddress === null) continue;
    const at = inDomainZero(hostdev.guestAddress);
    const entry = at === null ? undefined : after.get(slotKey(at.bus, at.slot));
    if (at === null || entry === undefined) continue;
    entry.functions.delete(at.fn);
    if (at.fn === 0) entry.multifunction = false;
  }
  return after;
}

/** A guest slot a card's functions take. */
interface CardSlot {
  bus: number;
  slot: number;
}

/**
 * Where each host card's hostdevs already sit, for cards whose functions share one guest slot:
 * by host card (`DDDD:BB:SS`), the guest slot. A moved function's hostdev speaks for the card at
 * its new address; one the edit releases (leaving, nothing added at its address) for none.
 */
function appliedCardSlots(
  domain: ParsedDomain,
  used: ReadonlyMap<number, UsedSlot>,
  adding: ReadonlySet<PciAddress>,
  changes: HostdevChanges,
): Map<string, CardSlot> {
  const movedTo = new Map([...changes.movedFrom].map(([to, from]) => [from, to]));
  const cards = new Map<string, CardSlot>();
  for (const hostdev of domain.hostdevs) {
    const now = movedTo.get(hostdev.address) ??
      (changes.leaving.has(hostdev.address) && !adding.has(hostdev.address)
        ? undefined
        : hostdev.address);
    const at = hostdev.guestAddress === null ? null : inDomainZero(hostdev.guestAddress);
    const entry = at === null ? undefined : used.get(slotKey(at.bus, at.slot));
    // Only a slot laid out as a card (multifunction) is joined, never libvirt's own placement.
    if (
      now !== undefined && at !== null && entry !== undefined &&
      (entry.multifunction || entry.functions.size > 1)
    ) {
      cards.set(slotOf(now), { bus: at.bus, slot: at.slot });
    }
  }
  return cards;
}

/**
 * The function 0s the guest has after the edit apart from the cards being laid out, by host
 * address: hostdevs and `<interface type='hostdev'>`s the edit keeps (a hand-added one kept as
 * written, another rule's) and those another rule adds. The value is the guest address, `null`
 * where libvirt places it.
 */
function functionZeroes(
  domain: ParsedDomain,
  adding: ReadonlySet<PciAddress>,
  changes: HostdevChanges,
): Map<PciAddress, string | null> {
  const zeroes = new Map<PciAddress, string | null>();
  for (const hostdev of [...domain.hostdevs, ...domain.interfaces]) {
    if (pciAddressParts(hostdev.address).function !== 0) continue;
    if (changes.leaving.has(hostdev.address)) continue;
    zeroes.set(hostdev.address, hostdev.guestAddress?.address ?? null);
  }
  for (const address of adding) {
    if (pciAddressParts(address).function === 0 && !zeroes.has(address)) zeroes.set(address, null);
  }
  return zeroes;
}

/**
 * The card whose functions share a guest slot: on a root bus the function itself ({@link cardOf}),
 * a device of its own; elsewhere its host slot, whatever vendors its functions report: behind its
 * bridge a slot is one device, whose other functions the guest finds through its function 0 (an
 * APU's iGPU and the USB controllers it carries, which `cardOf` tells apart for the host's sake).
 */
function guestCardOf(device: PciDevice): string {
  return onRootBus(device) ? cardOf(device) : slotOf(device.address);
}

/**
 * Whether `closed` is laid out as a card's function by `multifunction: true`: a root bus's
 * function is a device of its own, where libvirt places it, as under a rule without it.
 */
export function laidOutAsCard(closed: Pick<ClosedDevice, "device" | "rule">): boolean {
  return closed.rule.multifunction && !onRootBus(closed.device);
}

/**
 * The functions being added, grouped by card ({@link guestCardOf}) and rule, for rules with
 * `multifunction: true`.
 */
function multifunctionCards(adding: readonly ClosedDevice[]): ClosedDevice[][] {
  const cards = new Map<string, ClosedDevice[]>();
  for (const c of adding) {
    if (!c.rule.multifunction) continue;
    const key = `${c.rule.name}@${guestCardOf(c.device)}`;
    cards.set(key, [...(cards.get(key) ?? []), c]);
  }
  return [...cards.values()];
}

/**
 * Whether the domain's guest PCI bus is PCIe: a q35 machine type (`q35`, `pc-q35-7.2`) or a
 * `pcie-root` controller, which libvirt gives every PCIe machine (aarch64 and riscv64 `virt`
 * too); else i440fx rules.
 */
function isPcie(domain: ParsedDomain): boolean {
  return (domain.machine !== null && domain.machine.includes("q35")) ||
    domain.pciControllers.some((c) => c.model === "pcie-root");
}

/**
 * Hands out free guest slots for whole cards: on guest bus 0 from 0x10 (i440fx), or slot 0 of a
 * `pcie-root-port` with nothing behind it (q35), an existing empty one first (a spare the
 * definition holds, or one a card left when it was released), else a new one at a free index,
 * recorded in `controllers` so the edit adds it.
 */
class SlotAllocator {
  readonly controllers: PciControllerSpec[] = [];
  #next = FIRST_SLOT;
  #spare: number[];
  #nextIndex: number;

  constructor(private readonly domain: ParsedDomain, private readonly used: Map<number, UsedSlot>) {
    const busy = new Set([...used.keys()].map((key) => Math.floor(key / 0x100)));
    const indexes = domain.pciControllers.flatMap((c) => c.index === null ? [] : [c.index]);
    this.#spare = domain.pciControllers.flatMap((c) =>
      c.model === "pcie-root-port" && c.index !== null && !busy.has(c.index) ? [c.index] : []
    );
    // Past every index and every bus a device names: libvirt adds controllers for those itself.
    this.#nextIndex = Math.max(0, ...indexes, ...busy) + 1;
  }

  /** A free slot for a card, or a sentence saying why there is none. */
  take(): { bus: number; slot: number; port: "spare" | "new" | null } | string {
    if (isPcie(this.domain)) {
      const spare = this.#spare.shift();
      if (spare !== undefined) return { bus: spare, slot: 0, port: "spare" };
      if (this.#nextIndex > LAST_BUS) return "no free PCI controller index for a pcie-root-port";
      const index = this.#nextIndex++;
      this.controllers.push({ index, model: "pcie-root-port" });
      return { bus: index, slot: 0, port: "new" };
    }
    while (this.#next <= LAST_SLOT && this.used.has(slotKey(0, this.#next))) this.#next++;
    if (this.#next > LAST_SLOT) return "no free slot on guest bus 0";
    return { bus: 0, slot: this.#next++, port: null };
  }
}

/**
 * What the edit does to the hostdevs the definition holds, as the guest slots of the cards being
 * added see it.
 */
export interface HostdevChanges {
  /** By the host address a moved function sits at now, the address its hostdev had. */
  movedFrom: ReadonlyMap<PciAddress, PciAddress>;
  /**
   * The hostdevs the edit removes (rewritten, released or moved) whose guest address no new
   * hostdev keeps as it is: their guest functions are free for the cards being added.
   */
  leaving: ReadonlySet<PciAddress>;
}

/** What {@link assignGuestSlots} decides: each added device's spec, and controllers to add. */
export interface GuestLayout {
  /** By host address, the hostdev spec of every device being added. */
  specs: Map<PciAddress, HostdevSpec>;
  /** The `pcie-root-port`s the cards' guest addresses need that the definition lacks (q35). */
  controllers: PciControllerSpec[];
}

/**
 * Host specs for the devices being added; for rules with `multifunction: true`, a card's
 * functions get guest addresses in one guest slot, function numbers preserved: the slot the
 * card's functions already applied sit in (a function that appeared later, e.g. a GPU's audio
 * function enabled after the first apply, joins them; a card moved or rewritten whole takes its
 * slot again), else a free one: on guest bus 0 for i440fx machines, behind a `pcie-root-port` of
 * the card's own for q35 ones (see {@link SlotAllocator}). Functions that cannot join the card's
 * function 0 where the guest has it (added by hand, by another rule, or its slot's numbers taken)
 * are left to libvirt: apart from function 0 the guest would not find them. Says what it did in
 * `reasoning`.
 */
export function assignGuestSlots(
  adding: readonly ClosedDevice[],
  firstMatched: ReadonlySet<PciAddress>,
  domain: ParsedDomain,
  reasoning: string[],
  changes: HostdevChanges = { movedFrom: new Map(), leaving: new Set() },
): GuestLayout {
  const specs = new Map(adding.map((c) => [c.device.address, specFor(c, firstMatched)]));
  const cards = multifunctionCards(adding);
  if (cards.length === 0) return { specs, controllers: [] };
  const used = usedSlots(domain);
  const applied = appliedCardSlots(domain, used, new Set(specs.keys()), changes);
  // New slots only where nothing is now, so one a hostdev leaves is never handed to another card.
  const allocator = new SlotAllocator(domain, used);
  const after = usedAfterEdit(domain, used, changes);
  const zeroes = functionZeroes(domain, new Set(specs.keys()), changes);
  for (const members of cards) {
    if (onRootBus(members[0]!.device)) {
      // A device of its own: function 0 of a slot of its own, as libvirt places it, is where the
      // guest finds it; `multifunction='on'` would show a card that is not there.
      reasoning.push(`${members[0]!.device.address}: ${ROOT_BUS_DEVICE}: libvirt places it`);
      continue;
    }
    const card = slotOf(members[0]!.device.address);
    const functions = members.map((m) => pciAddressParts(m.device.address).function);
    const joined = applied.get(card);
    const there = joined === undefined ? undefined : after.get(slotKey(joined.bus, joined.slot));
    // The card's slot, when every new function's number is free there and function 0 is
    // marked multifunction already or comes now (the guest then sees the whole card).
    const join = joined !== undefined && there !== undefined &&
      functions.every((fn) => !there.functions.has(fn)) &&
      (there.multifunction || functions.includes(0));
    const zero = zeroes.get(`${card}.0`);
    if (!join && !functions.includes(0) && zero !== undefined) {
      // A guest finds a slot's other functions only through its function 0: in a slot of
      // their own they would be invisible, so libvirt gives each a slot where it is function 0.
      reasoning.push(aloneReasoning(card, members.length, zero));
      continue;
    }
    const taken = join ? { bus: joined.bus, slot: joined.slot, port: null } : allocator.take();
    if (typeof taken === "string") {
      reasoning.push(`${card}: ${taken} for multifunction, libvirt places it`);
      continue;
    }
    const hasFunctionZero = functions.includes(0) || (join && there.functions.has(0));
    if (join) {
      // Taken now: another card joining the slot finds these functions in use.
      for (const fn of functions) there.functions.add(fn);
      there.multifunction ||= functions.includes(0);
    }
    for (const m of members) {
      const fn = pciAddressParts(m.device.address).function;
      const spec = specs.get(m.device.address)!;
      spec.guestAddress = { domain: 0, bus: taken.bus, slot: taken.slot, function: fn };
      if (fn === 0) spec.guestAddress.multifunction = true;
    }
    reasoning.push(slotReasoning(card, members.length, { ...taken, join, hasFunctionZero }));
  }
  return { specs, controllers: allocator.controllers };
}

/**
 * A note for each hostdev or `<interface type='hostdev'>` the edit keeps at a function other than
 * 0 of a guest slot whose function 0 it removes with nothing in its place (`remove`: the host
 * addresses of those it removes; `specs`: those it adds): a guest finds a slot's functions only
 * through function 0.
 */
export function strandedFunctions(
  domain: ParsedDomain,
  remove: ReadonlySet<PciAddress>,
  specs: ReadonlyMap<PciAddress, HostdevSpec>,
): string[] {
  const before = usedSlots(domain);
  const after = usedAfterEdit(domain, before, { movedFrom: new Map(), leaving: remove });
  for (const { guestAddress: g } of specs.values()) {
    if (g?.domain === 0) after.get(slotKey(g.bus, g.slot))?.functions.add(g.function);
  }
  return [...domain.hostdevs, ...domain.interfaces].flatMap((kept) => {
    const at = kept.guestAddress === null ? null : inDomainZero(kept.guestAddress);
    if (remove.has(kept.address) || at === null || at.fn === 0) return [];
    const key = slotKey(at.bus, at.slot);
    if (!before.get(key)?.functions.has(0) || after.get(key)?.functions.has(0)) return [];
    return [
      `${kept.address} stays at guest ${
        kept.guestAddress!.address
      }, whose function 0 leaves: the guest may not see it until a function 0 is there again`,
    ];
  });
}

function aloneReasoning(card: string, count: number, zero: string | null): string {
  const what = count > 1 ? `${count} functions cannot` : "1 function cannot";
  const at = zero === null ? "" : ` (guest ${zero})`;
  return `${card}: ${what} join the card's function 0${at}: libvirt places ${
    count > 1 ? "them, so the guest sees them" : "it, so the guest sees it"
  }`;
}

function slotReasoning(
  card: string,
  count: number,
  { bus, slot, port, join, hasFunctionZero }: {
    bus: number;
    slot: number;
    port: "spare" | "new" | null;
    join: boolean;
    hasFunctionZero: boolean;
  },
): string {
  const hex = (n: number) => n.toString(16).padStart(2, "0");
  const where = `guest slot 0000:${hex(bus)}:${hex(slot)}`;
  const behind = port === "new"
    ? ` behind a new pcie-root-port (controller index ${bus})`
    : port === "spare"
    ? ` behind the empty pcie-root-port of controller index ${bus}`
    : "";
  const what = join
    ? `${count > 1 ? `${count} functions join` : "1 function joins"} the card's other functions in`
    : count > 1
    ? `${count} functions kept together in`
    : "1 function takes";
  return `${card}: ${what} ${where}${behind} (multifunction)${
    hasFunctionZero ? "" : "; function 0 is not passed, the guest may not see them"
  }`;
}
