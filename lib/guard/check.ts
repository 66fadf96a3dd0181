/**
 * The start guard's check: given the domain XML libvirt hands a hook at `prepare begin`, which
 * hostdevs must not be started. libvirt's managed detach unbinds whatever sits at a hostdev's
 * address, and a BIOS update or a new card renumbers buses between `apply` and the next start;
 * so each PCI `<hostdev>` and `<interface type='hostdev'>` source address is read again from
 * sysfs and refused when the device passthrough recorded there is gone or replaced, or when the
 * device there is one the host needs (recorded or hand-added; `runGuard` lifts the latter for a
 * device recorded under a rule with `allow_host_critical: true`). An `<interface type='network'>`
 * whose network is a pool of VFs (`<forward mode='hostdev'>`) gets any free entry at start, so
 * every entry of the running pool is read too, and refused when it holds nothing, no VF (libvirt
 * takes only VFs into a pool: the buses moved), or a device the host needs. VFIO hands a guest
 * whole IOMMU groups while libvirt detaches only the hostdevs named, so a group merged since
 * `apply` (a BIOS, kernel or ACS change) is refused where another of its functions is one the
 * host needs or sits on a host driver (the start would fail, "group N is not viable").
 *
 * Only the addressed functions and the other members of their groups are read (no discovery of
 * the whole host, no lspci), so the check stays fast at every VM start. Unreadable XML fails
 * closed.
 *
 * @module
 */

import type { HostUse, PciAddress, PciDevice } from "../host/types.ts";
import type { DeviceIdentity, VfIdentity } from "../plan/types.ts";
import { vfGone, vfMismatch } from "./vf_check.ts";
import type { UsedDevices } from "../plan/used_devices.ts";
import type { SysfsReader } from "../host/sysfs.ts";
import { readDeviceAt, readPhysicalSlots, readVirtualFunctions } from "../host/sysfs_device.ts";
import { slotOf } from "../pci/address.ts";
import {
  type PassedElement,
  readRecordsLeniently,
  scanHostdevPoolLeniently,
  scanPassedDevicesLeniently,
} from "../domain/lenient.ts";
import { sameIdentity, VFIO_DRIVERS } from "../resolve/match.ts";
import { describeIdentity } from "../plan/issues.ts";
import {
  cardOf,
  hostCriticalOnItsOwn,
  hostCriticalReason,
  passedDeviceHostNeeds,
  virtualFunctionInUse,
} from "../resolve/host_critical.ts";
import { type GroupMate, groupMates, type OtherMate } from "../resolve/group_mates.ts";
import {
  baseName,
  hostDriverOf,
  leadsToLoop,
  notLinkKind,
  parseGroupNumber,
  readNonPciMember,
} from "../host/sysfs.ts";
import { flagWord, followUpCommand, shellWord } from "../render/shell.ts";
import { UNSAFE_ON_TERMINAL } from "../render/terminal.ts";
import { someOf } from "../render/error_text.ts";

/** Why the guard refuses one address. */
export type GuardRefusalKind =
  /** Another device than the recorded one sits at the address. */
  | "replaced"
  /** No device at the address. */
  | "missing"
  /** The device there is one the host needs (a mounted filesystem's controller, ...). */
  | "host-needs"
  /**
   * A program holds the device open (a GPU's DRM or NVIDIA node, `gpu-in-use`), or another
   * running VM was given a VF of it (an SR-IOV PF, `vm-passed`) or another function of its IOMMU
   * group ({@link GuardRefusal.group}), whatever else makes the host need it: a state that
   * passes, which no `allow_host_critical` lifts.
   */
  | "busy"
  /**
   * The address's IOMMU group also holds a function on a host driver that the domain does not
   * pass: libvirt detaches only the devices it names, so VFIO refuses the group ("group N is not
   * viable"), and unbinding that function would take it from the host.
   */
  | "not-viable"
  /** The domain XML names a host device whose address or record cannot be read. */
  | "unreadable";

/** An element that passes a host function ({@link PassedElement}), or `network`: a VF pool's entry. */
export type GuardElement = PassedElement | "network";

/** The facts the guard shows about the device at an address now. */
export type GuardDevice =
  & Pick<
    PciDevice,
    | "vendorId"
    | "deviceId"
    | "subsystemVendorId"
    | "subsystemDeviceId"
    | "classCode"
    | "serial"
    | "driver"
  >
  & {
    /**
     * The physical slot it sits in (`null`: none named), read only where the record holds a slot
     * to compare; absent otherwise.
     */
    slot?: string | null;
  };

/** One reason not to start the VM. */
export interface GuardRefusal {
  /** The VM, as libvirt named it to the hook. */
  vm: string;
  /** Why. */
  kind: GuardRefusalKind;
  /** The host address concerned; `null` when the XML does not let it be read. */
  address: PciAddress | null;
  /**
   * `hostdev`, `interface` (`<interface type='hostdev'>`) or `disk` (`<disk type='nvme'>`);
   * `network` for an entry of the pool of a hostdev network that an `<interface type='network'>`
   * names (libvirt hands the guest any free one at start).
   */
  element: GuardElement | null;
  /** The hostdev network whose pool lists the address (element `network` only). */
  network?: string;
  /** What sits at the address now; `null` when nothing does or the address is unknown. */
  now: GuardDevice | null;
  /**
   * The identity passthrough recorded for the address (for a `vf:` rule's VF, its PF's); `null`
   * for a hand-added hostdev.
   */
  recorded: DeviceIdentity | null;
  /**
   * Why the host needs the device there (`in use by the host (default-route: ...)`), or `null`.
   * Set whatever the kind: a replaced device can be one the host needs as well. For a refusal of
   * its IOMMU group ({@link GuardRefusal.group}), why the host needs the member named there.
   */
  hostNeeds: string | null;
  /**
   * Set when what is refused is another function of the address's IOMMU group, which the domain
   * does not pass and VFIO would hand the guest along (`host-needs`), which stays on a host
   * driver (`not-viable`), or which another running VM has (`busy`): the group, that member, and
   * its driver.
   */
  group?: {
    number: number;
    member: PciAddress;
    driver: string | null;
    /**
     * Set when the member is on a VFIO driver and the host does not use it: bound for a VM,
     * perhaps another VM's, whose split of the group no `allow_host_critical` lifts.
     */
    forVm?: boolean;
  };
  /** The whole reason in words, as {@link formatRefusal} prints it after the VM's name. */
  reason: string;
  /** The command that fixes it. */
  fix: string;
}

/** Input of {@link checkDomainStart}. */
export interface GuardCheckInput {
  /** The VM's name as libvirt passed it to the hook (first argument). */
  vm: string;
  /** The domain XML read from the hook's standard input. */
  xml: string;
  /** Reads the sysfs tree at `root`. */
  reader: SysfsReader;
  /** The sysfs root: `/sys`, or a captured tree. */
  root: string;
  /**
   * The devices the host uses among those read (see `readHostUse` in `lib/host/discover.ts`).
   * Called once with every device found at the domain's addresses and in their IOMMU groups,
   * and what else the start takes ({@link StartTakes}). `null` (a captured tree without host-use
   * facts) marks nothing; the live host always knows.
   */
  hostUse: (devices: PciDevice[], takes: StartTakes) => readonly HostUse[] | null;
  /**
   * The status XML of the running libvirt network `name` (libvirt keeps it in
   * `/run/libvirt/network/NAME.xml`), `null` when no such network runs; may throw when it
   * cannot be read. Without it, hostdev networks are not checked.
   */
  networkStatus?: (name: string) => string | null;
}

/** What a start takes besides the functions it names, which {@link GuardCheckInput.hostUse} judges. */
export interface StartTakes {
  /**
   * The host devices the domain itself uses (its block disks, USB and SCSI hostdevs, interfaces'
   * and networks' NICs and character devices, whose controllers it must keep: see `vmDeviceUses`).
   */
  own: UsedDevices;
  /**
   * The other functions of the IOMMU groups of the functions it names, which VFIO hands the guest
   * along: one another running VM passes is in use (`vm-passed`).
   */
  groupMates: PciAddress[];
}

/** A host address the domain passes through, and which element names it. */
interface Passed {
  address: PciAddress;
  element: PassedElement;
}

/** What the domain XML says. */
interface DomainFacts {
  passed: Passed[];
  records: DeviceIdentity[];
  /** The recorded VFs of `vf:` rules' interfaces. */
  vfRecords: VfIdentity[];
  /**
   * The host devices it uses: block disks, USB and SCSI hostdevs, interfaces, char devices, and
   * the networks its interfaces name (whose hostdev pools are checked too).
   */
  used: UsedDevices;
  /** Elements whose host address cannot be read, and records that cannot be read. */
  unreadable: string[];
}

/** How many elements with no readable host address a refusal names before "and N more". */
const NAMED_UNREADABLE = 5;

/**
 * Reads the passed-through addresses and the records with the lenient reader alone (no XML
 * library to load at every start): every PCI `<hostdev>` and `<interface type='hostdev'>`
 * source, counting those that name no readable host address, and the records, trusted only in a
 * well-formed document. What cannot be read fails closed.
 */
function readDomain(xml: string): DomainFacts {
  const unreadable: string[] = [];
  const lenient = scanPassedDevicesLeniently(xml);
  const elements = lenient.unresolvedElements;
  if (elements.length > 0) {
    // Each named as `virsh dumpxml` shows it, quoted: the line is made safe for a terminal later.
    // Counted by element: a <disk> with two unreadable NVMe sources is one device to find.
    // The first few only: the line is the hook's stderr, which virsh start prints whole.
    const named = someOf(elements.map((e) => JSON.stringify(e)), NAMED_UNREADABLE);
    unreadable.push(
      `${elements.length} passed-through device(s) in the domain XML name no readable host ` +
        `address: ${named}`,
    );
  }
  // The problem names no value from the XML, which can hold secrets.
  const { records, vfRecords, problem, wellFormed } = readRecordsLeniently(xml);
  if (problem !== null) unreadable.push(problem);
  // libvirt hands the hook a whole definition: anything else (nothing, a cut one) is not read.
  else if (!wellFormed) unreadable.push("the domain XML is not a whole, well-formed <domain>");
  return {
    passed: lenient.devices,
    records,
    vfRecords,
    // The scan is a UsedDevices itself (with the devices and counts read above).
    used: lenient,
    unreadable,
  };
}

/** An address in the VF pool of a hostdev network the domain names. */
interface Pooled {
  address: PciAddress;
  network: string;
}

/**
 * The addresses in the pools of the hostdev networks `networks` that run now, and a reason for
 * each network whose pool cannot be read whole (the check fails closed on it).
 */
function readPools(
  networks: readonly string[],
  status: GuardCheckInput["networkStatus"],
): { pooled: Pooled[]; unreadable: { network: string; reason: string }[] } {
  const pooled: Pooled[] = [];
  const unreadable: { network: string; reason: string }[] = [];
  for (const network of status === undefined ? [] : networks) {
    const name = JSON.stringify(network);
    let xml: string | null;
    try {
      xml = status!(network);
    } catch (error) {
      const reason = `the status of network ${name} cannot be read: ${(error as Error).message}`;
      unreadable.push({ network, reason });
      continue;
    }
    // Not running: libvirt refuses the start itself. Not a hostdev pool: nothing is detached.
    const pool = xml === null ? null : scanHostdevPoolLeniently(xml);
    if (pool === null) continue;
    if (pool.unresolved > 0) {
      unreadable.push({
        network,
        reason: `${pool.unresolved} entry(ies) of the device pool of hostdev network ${name} ` +
          "name no readable PCI address",
      });
    }
    for (const address of pool.addresses) pooled.push({ address, network });
  }
  return { pooled, unreadable };
}

/**
 * Whether `device` is the recorded card. The serial number counts only where one was recorded:
 * an unprivileged `plan` reads no serial (the configuration space stops at 64 bytes for it), the
 * hook runs as root and does. The physical slot counts only where one was recorded too (records
 * written before slots were recorded hold none), and the check reads the slots only then.
 */
function matchesRecord(record: DeviceIdentity, device: PciDevice): boolean {
  return sameIdentity(record, record.serial === null ? { ...device, serial: null } : device);
}

/**
 * `passthrough plan --vm NAME`, with NAME as a shell and the option parser read it; none of the
 * hook's flags: the plan is the user's to run, with their config and libvirt.
 */
export function fixCommand(vm: string): string {
  return followUpCommand(undefined, "passthrough plan", { options: [["--vm", vm]] });
}

/**
 * The fix for a hostdev passthrough did not write: removing it by hand, for any VM. `plan` never
 * removes it; for a device the host needs (`host-needed`) of a VM its config names, it says which
 * element to delete. One whose device is gone may also come back.
 */
function handAddedFix(vm: string, kind: GuardRefusalKind): string {
  const edit = `remove it with virsh edit ${shellWord(vm)}`;
  return kind === "missing"
    ? `${edit}, or bring its device back there`
    : `${edit} (${fixCommand(vm)} says which element, when the config names the VM: ` +
      "passthrough never removes a hostdev it did not add)";
}

/**
 * The fix for a recorded device whose address holds nothing: `plan` would remove the hostdev of a
 * card it cannot find, which is no fix for one that appears late (behind Thunderbolt, after the
 * daemon's autostart) or is put back; it is for one that moved or left.
 */
function missingFix(vm: string, address: PciAddress): string {
  return `start it again once ${address} is there again (a card found after the VM's ` +
    `autostart, such as behind Thunderbolt, or put back); if the card moved or left for good: ${
      fixCommand(vm)
    }`;
}

/** What the guard shows of `device`; its slot where it was read to compare with `recorded`'s. */
function now(device: PciDevice, recorded: DeviceIdentity | null): GuardDevice {
  const { vendorId, deviceId, subsystemVendorId, subsystemDeviceId, classCode, serial, driver } =
    device;
  return {
    vendorId,
    deviceId,
    subsystemVendorId,
    subsystemDeviceId,
    classCode,
    serial,
    ...(recorded?.slot === undefined ? {} : { slot: device.physicalSlot }),
    driver,
  };
}

/**
 * Every reason not to start `input.vm` now; `[]` when the start may go on. Reads only the
 * functions at the domain's host addresses.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { buildHostTree } from "../testing/host_tree.ts";
 * import { denoFsReader } from "../host/sysfs.ts";
 * const dir = Deno.makeTempDirSync();
 * buildHostTree({ devices: [{ bdf: "0000:0b:00.0", group: 1, class: "0x010802",
 *   vendor: "0x144d", device: "0xa808", subsystem_vendor: null, subsystem_device: null,
 *   driver: "nvme", revision: null }] }, dir);
 * const xml = `<domain><name>win11</name><devices>
 *   <hostdev mode='subsystem' type='pci' managed='yes'>
 *     <source><address domain='0x0000' bus='0x0b' slot='0x00' function='0x0'/></source>
 *   </hostdev></devices></domain>`;
 * const refusals = checkDomainStart({
 *   vm: "win11", xml, reader: denoFsReader(), root: dir, hostUse: () => [],
 * });
 * assertEquals(refusals, []); // hand-added, and nothing says the host needs it
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function checkDomainStart(input: GuardCheckInput): GuardRefusal[] {
  const { vm } = input;
  const read = readStart(input);
  const { facts, pools, found, pooled, groups, poolGroups, poolMates } = read;
  const { busy, mateNeeds, hostNeedsOf } = startJudges(read);
  return [
    ...facts.unreadable.map((reason) => unreadableRefusal(vm, reason)),
    ...pools.unreadable.map(({ network, reason }) => unreadableRefusal(vm, reason, network)),
    ...found.flatMap((f) => passedRefusal(f, { input, hostNeeds: hostNeedsOf(f.device), busy })),
    ...pooled.flatMap((p) => pooledRefusal(vm, p, hostNeedsOf(p.device))),
    ...unreadableGroups(vm, [
      { read: groups },
      { read: poolGroups, network: (a) => pooled.find((p) => p.address === a)!.network },
    ]),
    ...groups.mates.flatMap((mate) =>
      groupRefusal(mate, {
        vm,
        passed: found.find((f) => f.address === mate.of)!,
        ...mateNeeds(mate),
      })
    ),
    ...groups.others.flatMap((other) =>
      otherMemberRefusal(other, { vm, passed: found.find((f) => f.address === other.of)! })
    ),
    ...poolGroups.others.flatMap((other) =>
      otherMemberRefusal(other, { vm, passed: poolEntry(pooled, other.of) })
    ),
    ...poolMates.flatMap((mate) =>
      groupRefusal(mate, { vm, passed: poolEntry(pooled, mate.of), ...mateNeeds(mate) })
    ),
  ];
}

/** The pool entry at `address` as a passed device: its network's, recorded by no record. */
function poolEntry(
  pooled: StartReading["pooled"],
  address: PciAddress,
): PassedDevice & { network: string } {
  const { network, device } = pooled.find((p) => p.address === address)!;
  return { address, element: "network", device, recorded: null, vf: undefined, network };
}

/** What {@link checkDomainStart} reads before it judges the start. */
interface StartReading {
  facts: DomainFacts;
  pools: ReturnType<typeof readPools>;
  /** The devices the domain passes, as they are now. */
  found: PassedDevice[];
  /** The entries of its hostdev networks' pools, as they are now. */
  pooled: (Pooled & { device: PciDevice | null })[];
  groups: ReturnType<typeof readGroupMates>;
  poolGroups: ReturnType<typeof readGroupMates>;
  /** The group mates of pool entries that the domain does not pass itself. */
  poolMates: GroupMate[];
  hostUse: readonly HostUse[] | null;
  /** The cards of the devices the domain asked for ({@link cardOf}). */
  matchedCards: Set<string>;
}

/**
 * Reads the domain, its pools, the functions at their addresses with their groups' mates and
 * VFs, and what the host uses of all of them.
 */
function readStart(input: GuardCheckInput): StartReading {
  const facts = readDomain(input.xml);
  const pools = readPools(facts.used.networks, input.networkStatus);
  const found = readPassed(input, facts);
  const pooled = pools.pooled.map((p) => ({
    ...p,
    device: readDeviceAt(input.reader, input.root, p.address, { details: false, physfn: true }),
  }));
  const groups = readGroupMates(input, facts.passed.map((p) => p.address));
  // Whichever entry libvirt hands the guest, VFIO hands it that entry's group along.
  const poolGroups = readGroupMates(input, pooled.map((p) => p.address));
  const passedHere = new Set(facts.passed.map((p) => p.address));
  const poolMates = poolGroups.mates.filter((m) => !passedHere.has(m.device.address));
  const devices = new Map<PciAddress, PciDevice>();
  for (const { device } of [...found, ...pooled, ...groups.mates, ...poolMates]) {
    if (device) devices.set(device.address, device);
  }
  // A PF's VFs go when it leaves its driver: what the host or another VM uses on them counts.
  for (const vf of found.flatMap(({ device }) => virtualFunctionsOf(input, device))) {
    if (!devices.has(vf.address)) devices.set(vf.address, vf);
  }
  const mates = [...groups.mates, ...poolMates];
  const hostUse = input.hostUse([...devices.values()], {
    own: facts.used,
    groupMates: mates.map((m) => m.device.address),
  });
  // The domain's own cards (and its networks' VFs) were asked for: a storage or network
  // function among them is not "another slot's" (hostCriticalReason's rule); what the host uses
  // or the platform needs is.
  const matchedCards = new Set(
    [...found, ...pooled].flatMap(({ device }) => device === null ? [] : [cardOf(device)]),
  );
  return { facts, pools, found, pooled, groups, poolGroups, poolMates, hostUse, matchedCards };
}

/** How {@link checkDomainStart} judges what it read: what makes a device busy or needed. */
function startJudges({ hostUse, matchedCards }: StartReading) {
  // Held open by a program, or a VF of it another running VM's, whatever else the host uses it
  // for: no override lifts that (`plan` refuses the VF's pair with no override, `sriov-split`).
  const busy = (device: PciDevice) =>
    hostUse?.find((u) =>
      (u.address === device.address && u.reason === "gpu-in-use") ||
      (u.reason === "vm-passed" && device.virtfns.includes(u.address))
    ) ?? null;
  // A group goes to one guest at a time: libvirt refuses this start while another has a member.
  const mateNeeds = (mate: GroupMate) => {
    const held = hostUse?.find((u) =>
      u.address === mate.device.address && u.reason === "vm-passed"
    );
    // Unknown use (a captured tree without host_use.json) is no proof the host does not use it;
    // a platform function (an SMBus controller, an ISA/LPC bridge) the host needs whoever bound
    // it, as `plan` judges another VM's member (hostCriticalOnItsOwn).
    const used = (hostUse?.some((u) => u.address === mate.device.address) ?? true) ||
      hostCriticalOnItsOwn(mate.device, { hostUse }) !== null;
    return held === undefined
      ? {
        held: false,
        used,
        hostNeeds: hostCriticalReason(mate.device, { matchedCards, hostUse }),
      }
      : { held: true, used, hostNeeds: `in use (${held.reason}: ${held.detail})` };
  };
  // As `plan` judges what a definition keeps; the refusal names what makes it busy: the VF
  // another VM was given before the host's use.
  const hostNeedsOf = (device: PciDevice | null) =>
    device === null
      ? null
      : (busy(device)?.reason === "vm-passed" ? virtualFunctionInUse(device, hostUse) : null) ??
        passedDeviceHostNeeds(device, hostUse);
  return { busy, mateNeeds, hostNeedsOf };
}

/**
 * The other endpoints of the IOMMU groups of the addresses `passed`, which VFIO hands the guest
 * along: read from each address's `iommu_group` link and its group's listing, and each member's
 * identity and driver alone (its `uevent`). A link that names no group (`unnamed`) and an
 * `iommu_group` that is no link (`notLink`) are what {@link unreadableGroups} refuses.
 */
function readGroupMates(input: GuardCheckInput, passed: readonly PciAddress[]) {
  const { reader, root } = input;
  // A link that names no group fails closed: read as none, its group's members would go unjudged.
  const unnamed: { of: PciAddress; name: string }[] = [];
  // So does an `iommu_group` that is no link (the kernel makes a link, or nothing): a damaged tree.
  const notLink: { of: PciAddress; kind: string }[] = [];
  const found = groupMates(passed, {
    group: (address) => {
      const path = `${root}/bus/pci/devices/${address}/iommu_group`;
      const link = reader.readLink(path);
      if (link === null) {
        const kind = notLinkKind(reader, path);
        if (kind !== null) notLink.push({ of: address, kind });
        return null;
      }
      const name = baseName(link);
      const group = parseGroupNumber(name);
      if (group !== null) return group;
      // A looping link names whatever its last hop spells (often "iommu_group" itself).
      if (leadsToLoop(reader, path)) {
        notLink.push({ of: address, kind: "a loop of symbolic links" });
      } else unnamed.push({ of: address, name });
      return null;
    },
    // Sorted: a listing's order is the file system's, and the refusals follow it.
    members: (group) =>
      reader.listDir(`${root}/kernel/iommu_groups/${group}/devices`)?.sort() ?? null,
    device: (address) =>
      readDeviceAt(reader, root, address, { details: false, physfn: false, configSpace: false }),
    other: (group, name) => readNonPciMember(reader, root, group, name),
  });
  return { ...found, unnamed, notLink };
}

/**
 * The refusals for the groups {@link readGroupMates} could not read, each once: each fails closed.
 * A pool's entry (`network` names its network) is refused as the pool's, with the network's fix;
 * an address the domain passes that the pool lists too, as the domain's hostdev.
 */
function unreadableGroups(
  vm: string,
  reads: readonly {
    read: ReturnType<typeof readGroupMates>;
    network?: (address: PciAddress) => string;
  }[],
): GuardRefusal[] {
  const unknown = "so what else VFIO would hand the guest is unknown";
  const seen = new Set<PciAddress>();
  return reads.flatMap(({ read, network }) =>
    [
      ...read.unnamed.map(({ of, name }) => ({
        of,
        hostdev: `${of}'s iommu_group link names ${JSON.stringify(name)}`,
        entry: `whose iommu_group link names ${JSON.stringify(name)}`,
        tail: ", not an IOMMU group number",
      })),
      ...read.notLink.map(({ of, kind }) => ({
        of,
        hostdev: `${of}'s iommu_group`,
        entry: "whose iommu_group",
        tail: ` is ${kind}, not a link to an IOMMU group: the tree is damaged`,
      })),
      ...read.unlisted.map(({ group, of }) => ({
        of,
        hostdev: `the members of IOMMU group ${group} of ${of}`,
        entry: `the members of whose IOMMU group ${group}`,
        tail: ` cannot be read (kernel/iommu_groups/${group}/devices)`,
      })),
      ...read.unread.map(({ group, of, member }) => ({
        of,
        hostdev: `${of}'s IOMMU group ${group} lists ${JSON.stringify(member)}`,
        entry: `whose IOMMU group ${group} lists ${JSON.stringify(member)}`,
        tail: ", which cannot be read in bus/pci/devices",
      })),
    ].flatMap(({ of, hostdev, entry, tail }) => {
      if (seen.has(of)) return [];
      seen.add(of);
      const pool = network?.(of);
      return pool === undefined
        ? [unreadableRefusal(vm, `${hostdev}${tail}, ${unknown}`)]
        : [unreadableRefusal(
          vm,
          `hostdev network ${JSON.stringify(pool)} lists ${of}, ${entry}${tail}: libvirt may ` +
            `hand any free entry of the pool to this VM, ${unknown}`,
          pool,
        )];
    })
  );
}

/**
 * The refusal for a member of a passed device's IOMMU group that the domain does not pass, as
 * `plan` judges a group's members (`group-contains-host-critical`, `group-not-viable`,
 * `group-shared-with-other-vm`): another running VM's (`held`), libvirt refuses the start while
 * that VM runs (`busy`, which nothing lifts); on a host driver, the start fails ("group N is not
 * viable"), and unbinding it would take from the host what it needs, if it does (`not-viable`);
 * unbound or on vfio-pci, the guest takes it along, refused where the host needs it
 * (`host-needs`, which the recording rule's `allow_host_critical` lifts). None for an unbound
 * member the host does not need. For an entry of a hostdev network's pool (`network`), the
 * network's fix.
 */
function groupRefusal(
  { device: member, of, group }: GroupMate,
  { vm, passed, hostNeeds, held, used }: {
    vm: string;
    passed: PassedDevice & { network?: string };
    hostNeeds: string | null;
    held: boolean;
    /**
     * Whether the host uses the member (a mount, a route), may (its use unknown), or needs it
     * whoever bound it (a platform function).
     */
    used: boolean;
  },
): GuardRefusal[] {
  const bound = member.driver !== null && !VFIO_DRIVERS.has(member.driver);
  // Bound to VFIO and unused, a storage or display controller is most likely another VM's (a
  // group merged by a kernel or ACS change): "the host needs it" would send the user looking for
  // a host use that is not there.
  const forVm = !held && !used && member.driver !== null && VFIO_DRIVERS.has(member.driver);
  if (!held && !bound && hostNeeds === null) return [];
  const owner = passed.recorded ?? passed.vf?.pf ?? null;
  const { network } = passed;
  const whose = groupOwnerWords(passed, of);
  const holds = `${whose} IOMMU group ${group} also holds ${member.address}, ${
    describeIdentity({ ...member, driver: member.driver ?? "none" })
  }, which ${JSON.stringify(vm)} does not pass`;
  // Bound for a VM, it is a storage, network, display or USB controller: "a" fits each (platform
  // functions, whose names may take "an", are the host's, never bound for a VM).
  const needs = hostNeeds === null
    ? ""
    : forVm
    ? `; a ${hostNeeds}, which the host does not use but binds to ${member.driver} for a VM: ` +
      "another VM's, if one passes it (a group goes to one VM)"
    : `; ${held ? "it is" : "the host needs it:"} ${hostNeeds}`;
  const outcome = held
    ? ": VFIO hands a group to one guest at a time, so libvirt refuses this start while that " +
      "guest runs"
    : bound
    ? `: libvirt detaches only the devices ${
      JSON.stringify(vm)
    } names, so its start fails ("group ${group} is not viable") until it is unbound or on ` +
      `vfio-pci${hostNeeds === null ? "" : ", which takes from the host what it needs"}`
    : `: VFIO hands the guest the whole group${
      network !== undefined
        ? ""
        : owner === null
        ? "; hand-added, so no allow_host_critical lets it start"
        : forVm
        ? vmMemberOverride(vm, owner.rule)
        : hostNeedsOverride(owner.rule)
    }`;
  const pool = network === undefined
    ? ""
    : "; libvirt may hand any free entry of the pool to this VM";
  return [{
    vm,
    kind: held ? "busy" : bound ? "not-viable" : "host-needs",
    address: of,
    element: passed.element,
    ...(network === undefined ? {} : { network }),
    now: passed.device === null ? null : now(passed.device, passed.recorded),
    recorded: owner,
    hostNeeds: hostNeeds === null
      ? null
      : `its IOMMU group ${group} also holds ${member.address}: ${hostNeeds}`,
    group: {
      number: group,
      member: member.address,
      driver: member.driver,
      ...(forVm && hostNeeds !== null ? { forVm: true } : {}),
    },
    reason: `${holds}${needs}${outcome}${pool}`,
    fix: network !== undefined
      ? networkFixCommand(network)
      : owner === null
      ? `remove the hostdev with virsh edit ${shellWord(vm)}, or give ${of} an IOMMU group ` +
        "of its own again (the firmware's ACS or the kernel command line)"
      : `${fixCommand(vm)} (it judges the group as it is now), then passthrough apply ${
        flagWord("--vm", vm)
      }`,
  }];
}

/**
 * The way out for a group mate bound to VFIO for a VM: `allow_host_critical` lifts no split of a
 * group between two VMs (`plan` refuses `group-shared-with-other-vm` whatever the rule says), so
 * it is offered only for a member no VM passes; the hook cannot read the other definitions to
 * tell which.
 */
function vmMemberOverride(vm: string, rule: string): string {
  return `; if another VM passes it, only giving the group's devices to one of the two lets it ` +
    `start (${fixCommand(vm)} names that VM)${unpassedOverride(rule)}`;
}

/**
 * The `allow_host_critical` advice for a group mate bound to VFIO that no VM passes
 * ({@link hostNeedsOverride}'s words for such a member).
 *
 * @example
 * ```ts
 * import { assertMatch } from "../../tests/helpers/assert.ts";
 * assertMatch(unpassedOverride("gpu"), /^; if none does, "allow_host_critical: true" on rule "gpu"/);
 * ```
 */
export function unpassedOverride(rule: string): string {
  return `; if none does, "allow_host_critical: true" on rule ${
    JSON.stringify(rule)
  } (then passthrough apply) lets it start`;
}

/** Whose IOMMU group a group refusal names: the element's at `of`, or its hostdev network's. */
function groupOwnerWords(passed: PassedDevice & { network?: string }, of: PciAddress): string {
  return passed.network === undefined
    ? `${elementWords(passed.element)} ${of}'s`
    : `hostdev network ${JSON.stringify(passed.network)} lists ${of}, whose`;
}

/**
 * The refusal for a non-PCI member of a passed device's group (an ACPI or platform device) on a
 * host driver ({@link hostDriverOf}): libvirt's start fails. An unbound one is none of the guest's.
 */
function otherMemberRefusal(
  { member, of, group }: OtherMate,
  { vm, passed }: { vm: string; passed: PassedDevice & { network?: string } },
): GuardRefusal[] {
  const { name, bus } = member;
  const driver = hostDriverOf(member);
  if (driver === null) return [];
  const { network } = passed;
  const whose = groupOwnerWords(passed, of);
  return [{
    vm,
    kind: "not-viable",
    address: of,
    element: passed.element,
    ...(network === undefined ? {} : { network }),
    now: passed.device === null ? null : now(passed.device, passed.recorded),
    recorded: passed.recorded ?? passed.vf?.pf ?? null,
    hostNeeds: null,
    group: { number: group, member: name, driver },
    reason: `${whose} IOMMU group ${group} also holds ${name} (bus ${bus}, driver ${driver}), ` +
      `no PCI device: VFIO hands a guest none, but the start fails ("group ${group} is not ` +
      `viable") while a host driver holds it`,
    fix: network !== undefined
      ? networkFixCommand(network)
      : `unbind ${name} from ${driver} (/sys/bus/${bus}/drivers/${driver}/unbind), or give ` +
        `${of} an IOMMU group of its own (the firmware's ACS or the kernel command line)`,
  }];
}

/**
 * The VFs of `device` when it is an SR-IOV physical function, each read as the passed devices
 * are, and listed in its {@link PciDevice.virtfns}; none for anything else.
 */
function virtualFunctionsOf(input: GuardCheckInput, device: PciDevice | null): PciDevice[] {
  if (device === null || device.physfn !== null) return [];
  device.virtfns = readVirtualFunctions(input.reader, input.root, device.address);
  return device.virtfns.flatMap((address) => {
    const vf = readDeviceAt(input.reader, input.root, address, {
      details: false,
      physfn: true,
      configSpace: false,
    });
    return vf === null ? [] : [vf];
  });
}

/** A device the domain names, with what is at its address now and what was recorded for it. */
interface PassedDevice {
  address: PciAddress;
  element: GuardRefusal["element"];
  device: PciDevice | null;
  recorded: DeviceIdentity | null;
  vf: VfIdentity | undefined;
}

/** Each device the domain passes, read from sysfs with its records. */
function readPassed(input: GuardCheckInput, facts: ReturnType<typeof readDomain>): PassedDevice[] {
  // The slot names, read once and only for a record that holds a slot (older records do not).
  let slots: Map<string, string> | undefined;
  return facts.passed.map((p) => {
    const recorded = facts.records.find((r) => r.address === p.address) ?? null;
    // By address alone: a VF record is checked whichever element names its address.
    const vf = facts.vfRecords.find((r) => r.address === p.address);
    // Identity only: a VF's PF link where an interface may be one, the configuration space
    // only for a recorded serial number, and no IOMMU group, NUMA node or module list, which
    // the check does not use (every read costs at every start).
    const device = readDeviceAt(input.reader, input.root, p.address, {
      details: false,
      physfn: p.element === "interface" || vf !== undefined,
      configSpace: recorded !== null && recorded.serial !== null,
    });
    if (device !== null && recorded?.slot !== undefined) {
      slots ??= readPhysicalSlots(input.reader, input.root);
      device.physicalSlot = slots.get(slotOf(p.address)) ?? null;
    }
    return { ...p, device, recorded, vf };
  });
}

/** The refusal for one passed device, or none when it is what was recorded and the host's not. */
function passedRefusal(
  { address, element, device, recorded, vf }: PassedDevice,
  context: {
    input: GuardCheckInput;
    hostNeeds: string | null;
    busy: (device: PciDevice) => HostUse | null;
  },
): GuardRefusal[] {
  const { input, hostNeeds } = context;
  const vm = input.vm;
  const replaced = device !== null && recorded !== null && !matchesRecord(recorded, device);
  const vfWrong = vf === undefined
    ? null
    : device === null
    ? vfGone(vf, address)
    : vfMismatch(vf, device, input);
  if (device !== null && !replaced && hostNeeds === null && vfWrong === null) return [];
  const busy = device === null ? null : context.busy(device);
  const kind: GuardRefusalKind = device === null
    ? "missing"
    : replaced || vfWrong !== null
    ? "replaced"
    : busy !== null
    ? "busy"
    : "host-needs";
  // A recorded VF is its `vf:` rule's, through its PF's record: that rule's policy and its
  // `allow_host_critical` judge it, as `plan` judged it, and it is not hand-added.
  const owner = recorded ?? vf?.pf ?? null;
  const refusal: GuardRefusal = {
    vm,
    kind,
    address,
    element,
    now: device === null ? null : now(device, recorded),
    recorded: owner,
    hostNeeds,
    reason: "",
    fix: kind === "busy"
      ? busy?.reason === "vm-passed" ? VF_PASSED_FIX : BUSY_FIX
      : owner === null
      ? handAddedFix(vm, kind)
      : kind === "missing" && recorded !== null
      ? missingFix(vm, address)
      : fixCommand(vm),
  };
  refusal.reason = vfWrong ?? describeRefusal(refusal, recorded === null ? vf?.index : undefined);
  return [refusal];
}

/** The refusal for one entry of a hostdev network's pool, or none when it is a VF the host's not. */
function pooledRefusal(
  vm: string,
  { address, network, device }: { address: PciAddress; network: string; device: PciDevice | null },
  hostNeeds: string | null,
): GuardRefusal[] {
  // libvirt takes only VFs into a pool: anything else there means the buses moved under it.
  const notVf = device !== null && device.physfn === null;
  if (device !== null && !notVf && hostNeeds === null) return [];
  const refusal: GuardRefusal = {
    vm,
    kind: device === null ? "missing" : notVf ? "replaced" : "host-needs",
    address,
    element: "network",
    network,
    now: device === null ? null : now(device, null),
    recorded: null,
    hostNeeds,
    reason: "",
    fix: networkFixCommand(network),
  };
  refusal.reason = describePoolRefusal(refusal);
  return [refusal];
}

/**
 * A refusal for what cannot be read (the domain XML, a record, a hostdev network's status), so
 * nothing can be checked: the start fails closed. With `network`, its fix is the network's.
 */
export function unreadableRefusal(vm: string, reason: string, network?: string): GuardRefusal {
  return {
    vm,
    kind: "unreadable",
    address: null,
    element: network === undefined ? null : "network",
    ...(network === undefined ? {} : { network }),
    now: null,
    recorded: null,
    hostNeeds: null,
    reason,
    // libvirt writes a network's status again when it starts it.
    fix: network === undefined ? fixCommand(vm) : networkFixCommand(network),
  };
}

/** What corrects a hostdev network's pool: its addresses, then a restart (which lists a PF's VFs again). */
function networkFixCommand(network: string): string {
  const word = shellWord(network);
  return `correct the pool (virsh net-edit ${word}), then, with the guests that use it shut ` +
    `down, virsh net-destroy ${word}; virsh net-start ${word}`;
}

/** The reason in words for an entry of a hostdev network's pool. */
function describePoolRefusal(refusal: GuardRefusal): string {
  const holds = refusal.now === null ? "no device" : describeIdentity(refusal.now);
  const notVf = refusal.kind === "replaced" ? ", not an SR-IOV virtual function" : "";
  const needs = refusal.hostNeeds === null ? "" : `; the host needs it: ${refusal.hostNeeds}`;
  return `hostdev network ${JSON.stringify(refusal.network)} lists ${refusal.address}, which ` +
    `holds ${holds} now${notVf}${needs}; libvirt may hand any free entry of the pool to this VM`;
}

/** What lets a start go on past a device a program holds open. */
const BUSY_FIX = "close the programs holding it (a desktop's: stop the display manager, " +
  "systemctl stop display-manager), then start again";

/**
 * What lets a start take a PF past the VF another running VM was given: the guard reads that
 * VM's running definition, which editing its persistent one (virsh edit) does not change.
 */
const VF_PASSED_FIX = "shut down the VM the virtual function was given to, or unplug it from " +
  "that running guest (virsh detach-device VM FILE --live, FILE holding its element from " +
  "virsh dumpxml VM; virsh edit changes only its next start), then start again";

/**
 * The reason in words: what the address holds now against what was recorded; with `vfIndex`, the
 * record is the PF's of a recorded VF (VF `vfIndex` of it).
 */
function describeRefusal(refusal: GuardRefusal, vfIndex?: number): string {
  const element = elementWords(refusal.element);
  const holds = refusal.now === null ? "no device" : describeIdentity(refusal.now);
  const recorded = refusal.recorded === null
    ? " (hand-added: nothing recorded)"
    : `, ${refusal.kind === "host-needs" || refusal.kind === "busy" ? "as" : "not"} ${
      vfIndex === undefined ? "" : `VF ${vfIndex} of `
    }the recorded ${describeIdentity({ ...refusal.recorded, driver: null })} of rule ${
      JSON.stringify(refusal.recorded.rule)
    }`;
  const needs = refusal.hostNeeds === null
    ? ""
    : refusal.kind === "busy"
    ? `; ${refusal.hostNeeds.replace(/^in use by the host/, "in use")}: ${
      refusal.hostNeeds.startsWith("its virtual function")
        ? "unbinding it now would take that VF from the running guest"
        : "detaching it now would hang the start or crash them"
    }`
    : `; the host needs it: ${refusal.hostNeeds}`;
  // What lifts it, as `plan` says: only the recording rule's override, never for a hand-added one.
  const override = refusal.kind !== "host-needs"
    ? ""
    : refusal.recorded === null
    ? "; hand-added, so no allow_host_critical lets it start"
    : hostNeedsOverride(refusal.recorded.rule);
  return `${element} ${refusal.address} holds ${holds} now${recorded}${needs}${override}`;
}

/** How the guard names the element that passes a device (a refusal's, another running VM's). */
export function elementWords(element: GuardElement | null): string {
  return element === "interface"
    ? "hostdev interface"
    : element === "disk"
    ? "NVMe disk"
    : "hostdev";
}

/** What a refusal of a device the host needs, recorded under `rule`, says lifts it. */
export function hostNeedsOverride(rule: string): string {
  return `; only "allow_host_critical: true" on rule ${
    JSON.stringify(rule)
  } (then passthrough apply) lets it start`;
}

/**
 * One line for the hook's standard error (libvirt shows it in `virsh start`'s error): the VM,
 * the address, what is there now, what was recorded, why, and the command that fixes it. Names
 * no value from the XML but addresses, IDs and the rule's name, so no secret of the domain is
 * printed; control characters are replaced, so it stays one line. With `allowed`, the same
 * facts for a start that a one-shot allowance let go on; with `warn`, for a start the policy
 * `guard: warn` lets go on.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const refusal = { vm: "win11", kind: "missing" as const, address: "0000:0b:00.0",
 *   element: "hostdev" as const, now: null, recorded: null, hostNeeds: null,
 *   reason: "hostdev 0000:0b:00.0 holds no device now (hand-added: nothing recorded)",
 *   fix: "passthrough plan --vm win11" };
 * assertEquals(
 *   formatRefusal(refusal),
 *   'passthrough guard: refusing to start "win11": hostdev 0000:0b:00.0 holds no device now ' +
 *     "(hand-added: nothing recorded); fix: passthrough plan --vm win11",
 * );
 * ```
 */
export function formatRefusal(
  refusal: GuardRefusal,
  options: { allowed?: boolean; warn?: boolean } = {},
): string {
  const vm = JSON.stringify(refusal.vm);
  const head = options.warn
    ? `passthrough guard: starting ${vm} despite this (guard: warn)`
    : options.allowed
    ? `passthrough guard: starting ${vm} once despite this (passthrough guard allow)`
    : `passthrough guard: refusing to start ${vm}`;
  return guardLine(`${head}: ${refusal.reason}; fix: ${refusal.fix}`);
}

/**
 * `line` as the hook prints it: what a terminal would act on (C1's U+009B starts an escape; bidi
 * controls reorder what the line appears to say) is replaced, as are tab and newline, so it stays
 * one line. Every line the guard prints goes through it: each may name the VM, whose name the
 * domain's definer chose (libvirt allows C1 and bidi controls in it, which JSON.stringify keeps).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(guardLine('for "a\u009b31m\u202eb"\nnext'), 'for "a?31m?b"?next');
 * ```
 */
export function guardLine(line: string): string {
  return line.replace(UNSAFE_ON_TERMINAL, "?").replace(/[\t\n]/g, "?");
}
