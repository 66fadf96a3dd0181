/**
 * The check made just before each define: is any device the VM is about to take now held by
 * another domain, beyond what the plan already knew of? The plan refused every VM taking a device
 * another domain held, but minutes may pass between the plan and the define (the prompt), and
 * another client (`virsh attach-device`, `virsh define`, another passthrough run) may hand the
 * device to another domain meanwhile. Defining then would put one device in two definitions.
 *
 * What another domain may still hold, because the plan counted on it: a device a planned VM
 * releases, in that VM's persistent definition while the VM is not applied yet (two VMs swapping
 * devices: the first goes first) and unchanged since the plan, and in its running definition when
 * it was running at plan time (the release takes effect at its next power-off). Anything else
 * another domain holds of what the VM takes (the device, or with the plan's `groupOf`, another
 * function of its IOMMU group) is new since the plan; so is a domain whose holdings cannot be read.
 * Pure: the world is read by the caller.
 *
 * @module
 */

import { heldAddresses } from "../domain/domain_xml.ts";
import type { HostTopology, HostUse, PciAddress, PciDevice } from "../host/types.ts";
import { sameIdentityAsRead } from "../resolve/match.ts";
import { behindVmd, cardOf, hostCriticalReason } from "../resolve/host_critical.ts";
import { groupMates } from "../resolve/group_mates.ts";
import type { NonPciMember } from "../host/sysfs.ts";
import type { Plan, VmPlan } from "../plan/types.ts";
import type { DefinitionRead, DomainSnapshot, World } from "../plan/world.ts";
import { repairView } from "../plan/repair.ts";
import {
  controllersUnder,
  type DeviceResolvers,
  type UnresolvedKind,
  usedDevicesIn,
} from "../plan/used_devices.ts";
import { warnsUnresolvedDevice } from "../plan/issues.ts";
import { warnsUnreadableNetwork } from "../plan/networks.ts";
import { errorText } from "../render/error_text.ts";

/** What a definition holds, as far as the re-check goes. */
interface Held {
  /** The PCI addresses it passes, and the controllers under the host devices it uses. */
  addresses: PciAddress[];
  /** What it uses under each such controller (`disk /dev/sdb`), by the controller's address. */
  uses: Map<PciAddress, string[]>;
  /** Why that is not fully known, or `null`. */
  unknown: string | null;
}

/**
 * The PCI addresses a definition holds, and why that is not fully known (or `null`); with
 * `resolvers`, the controllers under the host devices it uses too. A disk, character device or
 * network that cannot be read makes them unknown, unless `warned` says the plan warned about it
 * already.
 */
function heldBy(
  read: DefinitionRead,
  resolvers: DeviceResolvers | undefined,
  warned: (path: string, kind: UnresolvedKind) => boolean,
): Held {
  const unread: string[] = [];
  const uses = controllersUnder([usedDevicesIn(read)], resolvers, (path, error, kind) => {
    if (!warned(path, kind)) {
      unread.push(`its ${kind} ${path} cannot be read: ${errorText(error)}`);
    }
  });
  const add = (addresses: PciAddress[], unknown: string | null): Held => ({
    addresses: [...addresses, ...uses.keys()],
    uses,
    unknown: unknown ?? (unread.length > 0 ? unread.join("; ") : null),
  });
  switch (read.kind) {
    case "parsed":
      return add(heldAddresses(read.domain), null);
    case "unreadable":
      return add(
        read.scan.addresses,
        read.scan.unresolved > 0
          ? `it holds ${read.scan.unresolved} hostdev(s) with no readable address`
          : null,
      );
    case "read-failed":
      return add([], `its definition cannot be read: ${read.error}`);
  }
}

/** Whether `address` is, or shares a known IOMMU group with, a device `vm` takes. */
function takenBy(vm: VmPlan, groupOf: Readonly<Record<PciAddress, number>>) {
  const taking = new Set([...vm.add.map((a) => a.address), ...vm.move.map((m) => m.to)]);
  const groups = new Set(
    [...taking].map((a) => groupOf[a]).filter((g): g is number => g !== undefined),
  );
  return {
    any: taking.size > 0,
    has: (address: PciAddress) =>
      taking.has(address) || (groupOf[address] !== undefined && groups.has(groupOf[address]!)),
  };
}

/**
 * Why defining `vm` now would put a device in two definitions, one sentence per other domain
 * (empty when nothing it takes is held elsewhere beyond what `plan` counted on). `world` is the
 * connection read just before the define, after the defines of the VMs applied before `vm`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { readDefinition } from "../plan/world.ts";
 * import { emptyVmPlan } from "../plan/vm_edit.ts";
 * // "a" takes 0000:01:00.0 (a card that moved there); meanwhile "b" was given it.
 * const move = { from: "0000:02:00.0", to: "0000:01:00.0", rule: "gpu", evidence: "same IDs" };
 * const vm = { ...emptyVmPlan("a", ""), move: [move] };
 * const plan = { config: "", host: "", uri: "", errors: [], warnings: [], vms: [vm] };
 * const held = readDefinition(`<domain><name>b</name><devices><hostdev mode='subsystem'
 *   type='pci'><source><address domain='0' bus='1' slot='0' function='0'/></source></hostdev>
 *   </devices></domain>`);
 * const world = { uri: "", domains: [{ name: "b", active: false, persistent: held, live: null }] };
 * assertEquals(heldSincePlan(vm, plan, world), [
 *   `"b" holds "0000:01:00.0" in its persistent definition`,
 * ]);
 * ```
 */
export function heldSincePlan(
  vm: VmPlan,
  plan: Plan,
  world: World,
  resolvers?: DeviceResolvers,
): string[] {
  const taken = takenBy(vm, plan.groupOf ?? {});
  if (!taken.any) return [];
  const planned = new Map(plan.vms.map((v) => [v.name, v]));
  const none = new Set<PciAddress>();
  const expected = (domain: DomainSnapshot, which: "persistent" | "running") => {
    const other = planned.get(domain.name);
    if (other === undefined) return none;
    const counted = which === "persistent"
      // Not applied yet and unchanged: the plan counted on its release coming after this define.
      ? domain.persistent.kind !== "read-failed" && domain.persistent.xml === other.currentXml
      // A guest running at plan time keeps what it releases until its next power-off.
      : other.active === true;
    const gives = repairView(other);
    return counted ? new Set([...gives.remove, ...gives.move.map((m) => m.from)]) : none;
  };
  return heldElsewhere(vm.name, taken.has, world, {
    expected,
    ...(resolvers === undefined ? {} : { resolvers }),
    warned: (domain, path, kind) =>
      plan.warnings.some((w) =>
        kind === "network"
          ? warnsUnreadableNetwork(w, plan.uri, path)
          : warnsUnresolvedDevice(w, domain, path)
      ),
  });
}

/** Options of {@link heldElsewhere}. */
export interface HeldElsewhereOptions {
  /** The devices a domain's definition may still hold: what the plan counted on. Default none. */
  expected?: (domain: DomainSnapshot, which: "persistent" | "running") => ReadonlySet<PciAddress>;
  /**
   * Which controllers are under a host device (on the live host): with them, the controllers
   * under the host devices other domains use (see `controllersUnder`) count as held by them.
   * Default: not resolved.
   */
  resolvers?: DeviceResolvers;
  /**
   * Whether the plan warned that it could not read the disk, character device or network `path`
   * of `domain`: it counts nothing, as in the plan. Any other that cannot be read makes what its
   * domain holds unknown. Default: none was warned about.
   */
  warned?: (domain: string, path: string, kind: UnresolvedKind) => boolean;
}

/**
 * One sentence per definition (persistent or running) of a domain other than `name` that holds
 * a device `takes` accepts, beyond the devices `options.expected` allows it, or whose holdings
 * cannot be read: empty when defining `name` with those devices puts none of them in two
 * definitions.
 */
export function heldElsewhere(
  name: string,
  takes: (address: PciAddress) => boolean,
  world: World,
  options: HeldElsewhereOptions = {},
): string[] {
  const problems: string[] = [];
  for (const domain of world.domains) {
    if (domain.name === name) continue;
    const reads: ["persistent" | "running", DefinitionRead][] = [["persistent", domain.persistent]];
    if (domain.live !== null) reads.push(["running", domain.live]);
    for (const [which, read] of reads) {
      const warned = (path: string, kind: UnresolvedKind) =>
        options.warned?.(domain.name, path, kind) ?? false;
      const { addresses, uses, unknown } = heldBy(read, options.resolvers, warned);
      if (unknown !== null) {
        problems.push(`what "${domain.name}" holds is unknown (${which} definition: ${unknown})`);
        continue;
      }
      const allowed = options.expected?.(domain, which) ?? new Set();
      const clash = [...new Set(addresses)].filter((a) => takes(a) && !allowed.has(a)).sort();
      if (clash.length > 0) {
        const named = (a: PciAddress) =>
          uses.has(a) ? `"${a}" (under its ${uses.get(a)!.join(", ")})` : `"${a}"`;
        problems.push(
          `"${domain.name}" holds ${clash.map(named).join(", ")} in its ${which} definition`,
        );
      }
    }
  }
  return problems;
}

/**
 * One PCI function of the host as it is now, its `iommuGroup` read too, or `null` when nothing is
 * at `address` (see `hostDeviceReader` in `cli/host_options.ts`). It throws where the group cannot
 * be told (an `iommu_group` link that names no group number, one that is no link): read as in
 * none, the device's group would go unjudged, and the checks that read it fail closed on the throw.
 */
export type ReadHostDevice = (address: PciAddress) => PciDevice | null;

/**
 * Why the devices `vm` takes are no longer the ones its plan showed, one sentence per device
 * (empty when each is still there, the same card, in the same IOMMU group: for a card that moved,
 * the group `groupOf` gives, the plan's `groupOf`). Between the plan and
 * the define (the prompt, minutes) a card can be hot-removed or swapped, SR-IOV VFs destroyed and
 * made again, a group renumbered by a rescan: defining then would hand the guest whatever now sits
 * at the address, or nothing. What `read` cannot tell (a serial number an unprivileged read does
 * not reach) is not compared.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { emptyVmPlan } from "../plan/vm_edit.ts";
 * import type { PlannedHostdev } from "../plan/types.ts";
 * const identity = { address: "0000:01:00.1", vendorId: "10de", deviceId: "10f0",
 *   subsystemVendorId: null, subsystemDeviceId: null, classCode: "040300", serial: null,
 *   driver: "snd_hda_intel", rule: "gpu" };
 * const add = { address: "0000:01:00.1", rule: "gpu", group: 1, identity } as PlannedHostdev;
 * const vm = { ...emptyVmPlan("a", ""), add: [add] };
 * assertEquals(hardwareSincePlan(vm, () => null), [
 *   `"0000:01:00.1" (rule "gpu") is gone from the host`,
 * ]);
 * ```
 */
export function hardwareSincePlan(
  vm: VmPlan,
  read: ReadHostDevice,
  groupOf: Readonly<Record<PciAddress, number>> = {},
): string[] {
  const problems: string[] = [];
  // A card that moved was proven at its new address by the plan; it must still be there, in the
  // group the plan saw (`Plan.groupOf`).
  for (const move of vm.move) {
    const named = `"${move.to}" (rule "${move.rule}", the card that moved from "${move.from}")`;
    const now = read(move.to);
    const group = groupOf[move.to];
    if (now === null) {
      problems.push(`${named} is gone from the host`);
    } else if (group !== undefined && now.iommuGroup !== group) {
      problems.push(`${named} is now in IOMMU group ${now.iommuGroup ?? "none"}, not ${group}`);
    }
  }
  for (const entry of vm.add) {
    const named = `"${entry.address}" (rule "${entry.rule}")`;
    const now = read(entry.address);
    if (now === null) {
      problems.push(`${named} is gone from the host`);
    } else if (!sameIdentityAsRead(entry.identity, now)) {
      problems.push(`${named} is now another device (${identityChange(entry.identity, now)})`);
    } else if (now.iommuGroup !== entry.group) {
      problems.push(
        `${named} is now in IOMMU group ${now.iommuGroup ?? "none"}, not ${entry.group ?? "none"}`,
      );
    }
  }
  return problems;
}

/** The identity fields that differ, `vendor 10de, now 1002`. */
function identityChange(
  was: PlannedHostdevIdentity,
  now: PciDevice,
): string {
  const fields: [string, string | null, string | null][] = [
    ["vendor", was.vendorId, now.vendorId],
    ["device", was.deviceId, now.deviceId],
    ["subsystem vendor", was.subsystemVendorId, now.subsystemVendorId],
    ["subsystem device", was.subsystemDeviceId, now.subsystemDeviceId],
    ["class", was.classCode, now.classCode],
    ["serial", was.serial, now.serial],
    ["slot", was.slot ?? null, was.slot === undefined ? null : now.physicalSlot],
  ];
  return fields.filter(([, a, b]) => a !== b)
    .map(([name, a, b]) => `${name} ${a ?? "none"}, now ${b ?? "none"}`).join("; ");
}

type PlannedHostdevIdentity = VmPlan["add"][number]["identity"];

/**
 * The host's devices, IOMMU groups and use as they are now (see `hostReader` in
 * `cli/host_options.ts`).
 */
export interface HostRead {
  /** One PCI function as it is now, or `null` when none is at the address. */
  device: ReadHostDevice;
  /** The addresses IOMMU group `group` lists now, or `null` when the host lists no groups. */
  groupMembers: (group: number) => PciAddress[] | null;
  /** What the host uses now of `devices`, or `null` when that cannot be told. */
  hostUse: (devices: PciDevice[]) => readonly HostUse[] | null;
  /**
   * The non-PCI device (ACPI, platform) group `group`'s listing names as `name`, or `null` when
   * it cannot be read as one. Default: none is read, and such a member is unread.
   */
  otherMember?: (group: number, name: string) => NonPciMember | null;
}

/** {@link HostRead} beside the host the plan was computed from. */
export interface HostNow extends HostRead {
  /** The host the plan read: its groups and what it used. */
  planned: Pick<HostTopology, "groups" | "hostUse">;
}

/**
 * Why the IOMMU groups of the devices `vm` takes, or the host's use of them, are no longer what
 * its plan judged, one sentence per change (empty when none). The plan refused a group holding a
 * device the host needs and a group split with another domain; between the plan and the define a
 * function can be hot-added into the group (VFIO hands the guest all of it, so the VM would take
 * it, or not start), and the host can start using a device of the group (a filesystem mounted on
 * its disk, the route or the console moved to it). A new PCI bridge does not count: bridges stay
 * with the host. The VFs of an SR-IOV PF it takes are destroyed when the PF leaves its driver:
 * their use counts too. Use the plan already knew of was judged by the plan.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { emptyVmPlan } from "../plan/vm_edit.ts";
 * import type { PciDevice } from "../host/types.ts";
 * import type { PlannedHostdev } from "../plan/types.ts";
 * const add = { address: "0000:01:00.0", rule: "gpu", group: 1 } as PlannedHostdev;
 * const vm = { ...emptyVmPlan("a", ""), add: [add] };
 * const gpu = { address: "0000:01:00.0", isBridge: false, virtfns: [] as string[] } as PciDevice;
 * const now = {
 *   planned: { groups: [{ group: 1, devices: [gpu] }], hostUse: [] },
 *   device: () => gpu,
 *   groupMembers: () => ["0000:01:00.0"],
 *   hostUse: () => [{ address: "0000:01:00.0", reason: "console-vga" as const, detail: "fb0" }],
 * };
 * assertEquals(hostSincePlan(vm, now), [
 *   `"0000:01:00.0" (rule "gpu") is now in use by the host (console-vga: fb0), which it was not at the plan`,
 * ]);
 * ```
 */
export function hostSincePlan(
  vm: VmPlan,
  now: HostNow,
  groupOf: Readonly<Record<PciAddress, number>> = {},
): string[] {
  const read = now.device;
  const taking = new Map<PciAddress, string>([
    ...vm.add.map((a): [PciAddress, string] => [a.address, `"${a.address}" (rule "${a.rule}")`]),
    ...vm.move.map((m): [PciAddress, string] => [m.to, `"${m.to}" (rule "${m.rule}")`]),
  ]);
  if (taking.size === 0) return [];
  const planned = new Map(now.planned.groups.map((g) => [g.group, g.devices]));
  const problems: string[] = [];
  // Everything VFIO would hand over with the VM's devices, as the host is now.
  const bound = new Map<PciAddress, PciDevice>();
  const seen = new Set<number>();
  for (const [address, named] of taking) {
    const device = read(address);
    if (device !== null) bound.set(address, device);
    const group = groupOf[address] ?? device?.iommuGroup ?? null;
    if (group === null || seen.has(group)) continue;
    seen.add(group);
    const before = new Set((planned.get(group) ?? []).map((d) => d.address));
    const members = now.groupMembers(group);
    if (members === null) {
      problems.push(unlistedGroup(group, named));
      continue;
    }
    for (const mate of members) {
      if (taking.has(mate) || bound.has(mate)) continue;
      const other = read(mate);
      // A VMD domain's devices go with their controller, as the plan leaves them out.
      if (other === null || other.isBridge || behindVmd(other)) continue;
      bound.set(mate, other);
      if (before.has(mate)) continue;
      problems.push(
        `IOMMU group ${group} of ${named} now also holds "${mate}" (${
          other.className ?? `class ${other.classCode}`
        }${
          other.driver === null ? "" : `, driver ${other.driver}`
        }), which the plan did not see (VFIO hands a guest the whole group)`,
      );
    }
  }
  // An SR-IOV PF leaving its driver destroys its VFs: one the host uses goes too (the plan
  // refused such a PF, `virtualFunctionInUse`).
  const pfOf = new Map<PciAddress, PciAddress>();
  for (const [address, device] of bound) {
    for (const vf of device.virtfns) if (!bound.has(vf)) pfOf.set(vf, address);
  }
  const vfs = [...pfOf.keys()].flatMap((vf) => read(vf) ?? []);
  const use = now.hostUse([...bound.values(), ...vfs]);
  if (use === null) {
    return [...problems, "what the host uses of them cannot be read now"];
  }
  const known = new Set((now.planned.hostUse ?? []).map((u) => `${u.address} ${u.reason}`));
  for (const u of use) {
    if (known.has(`${u.address} ${u.reason}`)) continue;
    const pf = pfOf.get(u.address);
    if (pf !== undefined) {
      problems.push(
        `the virtual function "${u.address}" of ${
          taking.get(pf) ?? `"${pf}" (in the IOMMU group of a device it takes)`
        } is now in use by the host (${u.reason}: ${u.detail}), which it was not at the plan (taking a physical function from its driver destroys its virtual functions)`,
      );
      continue;
    }
    if (!bound.has(u.address)) continue;
    problems.push(
      `${
        taking.get(u.address) ?? `"${u.address}", in the IOMMU group of a device it takes,`
      } is now in use by the host (${u.reason}: ${u.detail}), which it was not at the plan`,
    );
  }
  return problems;
}

/**
 * Why passing `passed` (the hostdevs of a definition about to be restored) would take from the
 * host a device it needs, one sentence per such device: VFIO hands a guest the whole IOMMU group,
 * so a function that joined a passed device's group (a hot-added one, groups merged by a kernel
 * command line without the ACS override), or one the host uses now, goes too, or the guest does
 * not start. A PCI bridge stays with the host. The device's own use is the start guard's. A member
 * a group's listing names that cannot be read (and a second read still names) is one sentence too:
 * what it is, and so what the guest would take, is unknown. A member in `options.refused` is
 * left to the caller, which judged it already (the start guard's line on one a running VM has, or
 * its pass of one a rule's `allow_host_critical: true` lets the guest take).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import type { PciDevice } from "../host/types.ts";
 * const device = (address: string, classCode: string) =>
 *   ({ address, classCode, iommuGroup: 1, isBridge: false }) as PciDevice;
 * const host = {
 *   device: (a: string) => device(a, a.endsWith(".0") ? "030000" : "010802"),
 *   groupMembers: () => ["0000:01:00.0", "0000:05:00.0"],
 *   hostUse: () => [{ address: "0000:05:00.0", reason: "mounted-filesystem" as const, detail: "/" }],
 * };
 * assertEquals(groupMatesHostNeeds(["0000:01:00.0"], host), [
 *   `IOMMU group 1 of "0000:01:00.0" also holds "0000:05:00.0", which it does not pass and the host needs (in use by the host (mounted-filesystem: /)): VFIO hands a guest the whole group`,
 * ]);
 * ```
 */
export function groupMatesHostNeeds(
  passed: readonly PciAddress[],
  host: HostRead,
  options: { refused?: ReadonlySet<PciAddress> } = {},
): string[] {
  const passing = new Set(passed);
  const { mates, unlisted, unread } = groupMates(passing, {
    device: host.device,
    group: (address) => host.device(address)?.iommuGroup ?? null,
    members: host.groupMembers,
    // A non-PCI member is no device the guest takes from the host; one on a host driver makes
    // the group not viable, which the start guard's check says (no refusal of the restore).
    ...(host.otherMember === undefined ? {} : { other: host.otherMember }),
  });
  const problems = [
    ...unlisted.map(({ group, of }) => unlistedGroup(group, `"${of}"`)),
    ...unread.map(({ group, of, member }) =>
      `IOMMU group ${group} of "${of}" lists ${
        JSON.stringify(member)
      }, which cannot be read in bus/pci/devices now, so what else a guest would take with it is unknown`
    ),
  ];
  if (mates.length === 0) return problems;
  const hostUse = host.hostUse(mates.map((m) => m.device));
  if (hostUse === null) {
    return [
      ...problems,
      `what the host uses of the IOMMU groups of ${
        [...passing].map((a) => `"${a}"`).join(", ")
      } cannot be read now`,
    ];
  }
  const matchedCards = new Set(
    [...passing].flatMap((a) => {
      const device = host.device(a);
      return device === null ? [] : [cardOf(device)];
    }),
  );
  return [
    ...problems,
    ...mates.flatMap(({ device, of, group }) => {
      if (options.refused?.has(device.address)) return [];
      const why = hostCriticalReason(device, { matchedCards, hostUse });
      return why === null ? [] : [
        `IOMMU group ${group} of "${of}" also holds "${device.address}", which it does not pass and the host needs (${why}): VFIO hands a guest the whole group`,
      ];
    }),
  ];
}

/**
 * Why a group whose listing cannot be read fails the check: read as empty, it would pass as a
 * group without mates, when what else VFIO would hand over with the device is unknown.
 */
function unlistedGroup(group: number, named: string): string {
  return `the members of IOMMU group ${group} of ${named} cannot be read now ` +
    `(kernel/iommu_groups/${group}/devices), so what else a guest would take with it is unknown`;
}
