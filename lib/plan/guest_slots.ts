/**
 * The hostdev specs of the devices a VM gains, and their guest slots: for rules with
 * `multifunction: true`, a card's functions share one slot of guest bus 0 with their host function
 * numbers, so the guest sees the card as one device. Pure.
 *
 * @module
 */

import type { ClosedDevice } from "../resolve/closure.ts";
import { cardOf } from "../resolve/host_critical.ts";
import type { GuestPciAddress, ParsedDomain } from "../domain/domain_xml.ts";
import { pciAddressParts } from "../pci/address.ts";
import type { PciAddress } from "../host/types.ts";
import type { HostdevSpec } from "./types.ts";

/** Slots from here up leave the low ones to the devices libvirt places itself. */
const FIRST_SLOT = 0x10;
const LAST_SLOT = 0x1f;

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

/** The slot and function of a guest address on guest bus 0 (domain 0), or `null` elsewhere. */
function onBusZero(guest: GuestPciAddress): { slot: number; fn: number } | null {
  const p = pciAddressParts(guest.address);
  return p.domain === 0 && p.bus === 0 ? { slot: p.slot, fn: p.function } : null;
}

/** A slot of guest bus 0 in use: the functions devices use in it, and whether 0 says multifunction. */
interface UsedSlot {
  functions: Set<number>;
  multifunction: boolean;
}

/** Every slot of guest bus 0 the definition's devices use. */
function usedSlots(domain: ParsedDomain): Map<number, UsedSlot> {
  const bySlot = new Map<number, UsedSlot>();
  for (const guest of domain.guestAddresses) {
    const at = onBusZero(guest);
    if (at === null) continue;
    const entry = bySlot.get(at.slot) ?? { functions: new Set<number>(), multifunction: false };
    entry.functions.add(at.fn);
    if (at.fn === 0 && guest.multifunction) entry.multifunction = true;
    bySlot.set(at.slot, entry);
  }
  return bySlot;
}

/**
 * Where each host card's hostdevs already sit on guest bus 0, for cards whose functions share one
 * guest slot: by host card (`DDDD:BB:SS`), the guest slot and what uses it.
 */
function appliedCardSlots(
  domain: ParsedDomain,
  used: ReadonlyMap<number, UsedSlot>,
): Map<string, UsedSlot & { slot: number }> {
  const cards = new Map<string, UsedSlot & { slot: number }>();
  for (const hostdev of domain.hostdevs) {
    const at = hostdev.guestAddress === null ? null : onBusZero(hostdev.guestAddress);
    const entry = at === null ? undefined : used.get(at.slot);
    // Only a slot laid out as a card (multifunction) is joined, never libvirt's own placement.
    if (at !== null && entry !== undefined && (entry.multifunction || entry.functions.size > 1)) {
      cards.set(cardOf(hostdev.address), { slot: at.slot, ...entry });
    }
  }
  return cards;
}

/** The functions being added, grouped by card and rule, for rules with `multifunction: true`. */
function multifunctionCards(adding: readonly ClosedDevice[]): ClosedDevice[][] {
  const cards = new Map<string, ClosedDevice[]>();
  for (const c of adding) {
    if (!c.rule.multifunction) continue;
    const key = `${c.rule.name}@${cardOf(c.device.address)}`;
    cards.set(key, [...(cards.get(key) ?? []), c]);
  }
  return [...cards.values()];
}

/**
 * Host specs for the devices being added; for rules with `multifunction: true`, a card's
 * functions get guest addresses in one slot of guest bus 0, function numbers preserved: the slot
 * the card's functions already applied sit in (a function that appeared later, e.g. a GPU's audio
 * function enabled after the first apply, joins them), else a free one. Says what it did in
 * `reasoning`.
 */
export function assignGuestSlots(
  adding: readonly ClosedDevice[],
  firstMatched: ReadonlySet<PciAddress>,
  domain: ParsedDomain,
  reasoning: string[],
): Map<PciAddress, HostdevSpec> {
  const specs = new Map(adding.map((c) => [c.device.address, specFor(c, firstMatched)]));
  const cards = multifunctionCards(adding);
  if (cards.length === 0) return specs;
  const used = usedSlots(domain);
  const applied = appliedCardSlots(domain, used);
  let next = FIRST_SLOT;
  for (const members of cards) {
    const card = cardOf(members[0]!.device.address);
    const functions = members.map((m) => pciAddressParts(m.device.address).function);
    const joined = applied.get(card);
    // The card's slot, when every new function's number is free there and function 0 is
    // marked multifunction already or comes now (the guest then sees the whole card).
    const join = joined !== undefined && functions.every((fn) => !joined.functions.has(fn)) &&
      (joined.multifunction || functions.includes(0));
    if (!join) {
      while (next <= LAST_SLOT && used.has(next)) next++;
      if (next > LAST_SLOT) {
        reasoning.push(`${card}: no free slot on guest bus 0 for multifunction, libvirt places it`);
        continue;
      }
    }
    const slot = join ? joined.slot : next++;
    for (const m of members) {
      const fn = pciAddressParts(m.device.address).function;
      const spec = specs.get(m.device.address)!;
      spec.guestAddress = { domain: 0, bus: 0, slot, function: fn };
      if (fn === 0) spec.guestAddress.multifunction = true;
    }
    const hasFunctionZero = functions.includes(0) || (join && joined.functions.has(0));
    reasoning.push(slotReasoning(card, members.length, { slot, join, hasFunctionZero }));
  }
  return specs;
}

function slotReasoning(
  card: string,
  count: number,
  { slot, join, hasFunctionZero }: { slot: number; join: boolean; hasFunctionZero: boolean },
): string {
  const where = `guest slot 0000:00:${slot.toString(16).padStart(2, "0")}`;
  return `${card}: ${count} function${count > 1 ? "s" : ""} ${
    join ? `join the card's other functions in ${where}` : `kept together in ${where}`
  } (multifunction)${
    hasFunctionZero ? "" : "; function 0 is not passed, the guest may not see them"
  }`;
}
