/**
 * IOMMU-group closure: VFIO hands a guest whole groups, so every other endpoint of a matched
 * device's group goes along (PCI-to-PCI bridges never do: they stay with the host). This module
 * computes each VM's device set from its resolved rules and refuses what is unsafe: devices the
 * host needs, a group split between VMs, one device taken twice.
 *
 * @module
 */

import type { DeviceRule } from "../config/config.ts";
import {
  behindVmd,
  cardOf,
  hostCriticalOnItsOwn,
  hostCriticalReason,
  onRootBus,
  virtualFunctionInUse,
} from "./host_critical.ts";
import type { RuleResolution } from "./match.ts";
import { VFIO_DRIVERS } from "./match.ts";
import type { InclusionReason, PlanIssue } from "../plan/types.ts";
import type { HostTopology, PciAddress, PciDevice } from "../host/types.ts";
import { pciAddressParts, slotOf } from "../pci/address.ts";

/** One device in a VM's closed set, and the rule that brought it. */
export interface ClosedDevice {
  /** The host device. */
  device: PciDevice;
  /** The rule that matched it, or whose match brought it in. */
  rule: DeviceRule;
  /** Matched by the rule, or a member of a matched device's IOMMU group. */
  reason: InclusionReason;
}

/** A VM's device set after closure, with the reasoning and the issues found. */
export interface ClosureResult {
  /** Sorted by address. */
  devices: ClosedDevice[];
  /** For humans: which group members were added and which bridges left out. */
  reasoning: string[];
  /** No FLR, a host driver in use, host-critical members left out. */
  warnings: PlanIssue[];
  /** Refusals: host-critical members, one device matched by two rules. */
  errors: PlanIssue[];
}

/** Options for {@link closeOverGroups}. */
export interface ClosureOptions {
  /** Addresses the VM holds now (a device it already has is not "in use by the host"). */
  current?: ReadonlySet<PciAddress>;
  /**
   * Addresses the VM's definition passes by hand (a hand-added hostdev, an interface no `vf:` rule
   * recorded, an NVMe disk): they stay passed whatever the plan does, so an `iommu_group: false`
   * rule leaves none of them with the host.
   */
  handPassed?: ReadonlySet<PciAddress>;
  /**
   * The devices VMs' own rules match, by address, to the VM: a group mate another VM's rule
   * matches is that VM's device, which the host needs only as {@link hostCriticalOnItsOwn} says
   * (plan refuses the split group itself, `group-shared-with-other-vm`, which no
   * `allow_host_critical` lifts).
   */
  matchedBy?: ReadonlyMap<PciAddress, string>;
}

function label(device: PciDevice, note = ""): string {
  const what = device.className ?? `class ${device.classCode}`;
  return `${device.address} (${device.vendorId}:${device.deviceId} ${what}${note})`;
}

// Built once per host: closure runs once per VM against the same topology.
const GROUPS = new WeakMap<HostTopology, Map<number, PciDevice[]>>();

function groupsOf(host: HostTopology): Map<number, PciDevice[]> {
  let groups = GROUPS.get(host);
  if (groups === undefined) {
    groups = new Map(host.groups.map((g) => [g.group, g.devices]));
    GROUPS.set(host, groups);
  }
  return groups;
}

/**
 * Closes `resolutions` (the resolved rules of VM `vm`) over their IOMMU groups.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { parseConfig } from "../config/config.ts";
 * import { topologyFromDescription } from "../testing/host_description.ts";
 * import { resolveRule } from "./match.ts";
 * const blank = { subsystem_vendor: null, subsystem_device: null, driver: null, revision: null };
 * const host = topologyFromDescription({ devices: [
 *   { bdf: "0000:00:03.1", group: 30, class: "0x060400", vendor: "0x1022", device: "0x1483", ...blank },
 *   { bdf: "0000:0b:00.0", group: 30, class: "0x030000", vendor: "0x10de", device: "0x1b06", ...blank },
 *   { bdf: "0000:0b:00.1", group: 30, class: "0x040300", vendor: "0x10de", device: "0x10ef", ...blank },
 * ] }, { source: "example" });
 * const config = parseConfig(
 *   "version: 1\nvms:\n  win10:\n    devices:\n      - match: { vendor_device_id: 10de:1b06 }\n",
 *   { file: "c.yaml" },
 * );
 * const closed = closeOverGroups("win10", [resolveRule(config.vms[0]!.rules[0]!, host)], host);
 * assertEquals(closed.devices.map((d) => d.device.address), ["0000:0b:00.0", "0000:0b:00.1"]);
 * ```
 */
export function closeOverGroups(
  vm: string,
  resolutions: readonly RuleResolution[],
  host: HostTopology,
  options: ClosureOptions = {},
): ClosureResult {
  const closing: Closing = {
    vm,
    host,
    groups: groupsOf(host),
    byAddress: new Map(),
    // What any of the VM's rules asked for: a card one rule names is no bystander in another's.
    matchedCards: new Set(resolutions.flatMap((r) => r.devices.map(cardOf))),
    result: { devices: [], reasoning: [], warnings: [], errors: [] },
    leftBehind: [],
    matchedBy: options.matchedBy ?? new Map(),
  };
  closing.result.errors.push(...matchedTwice(vm, resolutions));
  const resolved = resolutions.filter((r) => r.devices.length > 0);
  for (const resolution of resolved) closeRule(closing, resolution);
  // Judged once every rule has taken its devices: a member another rule of the VM takes, or one
  // its definition passes by hand, is no member left with the host.
  for (const left of closing.leftBehind) {
    const endpoints = left.endpoints.filter((m) =>
      !closing.byAddress.has(m.address) && !options.handPassed?.has(m.address)
    );
    const warning = leftBehindBound(closing, left.rule, left.group, endpoints);
    if (warning !== null) closing.result.warnings.push(warning);
    const needed = leftBehindNeeded(closing, left.rule, left.group, endpoints);
    if (needed !== null) {
      (left.rule.allowHostCritical ? closing.result.warnings : closing.result.errors).push(needed);
    }
  }
  // Once every rule has taken its devices, each is judged under the rule it ended up with: the
  // one that matched it, else the first whose group brought it.
  for (const { rule } of resolved) checkRule(closing, rule, options);
  closing.result.devices = [...closing.byAddress.values()].sort((a, b) =>
    a.device.address < b.device.address ? -1 : a.device.address > b.device.address ? 1 : 0
  );
  return closing.result;
}

/** What {@link closeOverGroups} builds up over one VM's rules. */
interface Closing {
  readonly vm: string;
  readonly host: HostTopology;
  readonly groups: ReadonlyMap<number, PciDevice[]>;
  /** Every device taken so far, by address: one hostdev each, whichever rules bring it. */
  readonly byAddress: Map<PciAddress, ClosedDevice>;
  /** The cards ({@link cardOf}) of the devices the VM's rules matched. */
  readonly matchedCards: ReadonlySet<string>;
  readonly result: ClosureResult;
  /** The other endpoints of each group an `iommu_group: false` rule matched in. */
  readonly leftBehind: { rule: DeviceRule; group: number; endpoints: PciDevice[] }[];
  /** {@link ClosureOptions.matchedBy}. */
  readonly matchedBy: ReadonlyMap<PciAddress, string>;
}

/** The other VM whose rules match `device`, or `undefined`. */
function otherVmOf(closing: Closing, device: PciDevice): string | undefined {
  const vm = closing.matchedBy.get(device.address);
  return vm === closing.vm ? undefined : vm;
}

/** {@link label}, naming the other VM whose rules match `device`, if one does. */
function ownedLabel(closing: Closing, device: PciDevice): string {
  const other = otherVmOf(closing, device);
  return label(device, other === undefined ? "" : `, which VM "${other}" passes`);
}

/**
 * Whether the host needs `device`, a group mate a rule of the VM does not match, as
 * {@link hostCriticalReason} says; one another VM's rules match is that VM's, needed by the host
 * only as {@link hostCriticalOnItsOwn} says: `allow_host_critical` lifts nothing there (the split
 * refusal, `group-shared-with-other-vm`, stays), and moving this VM's card is not the only way out.
 */
function mateHostNeeds(closing: Closing, device: PciDevice): string | null {
  const { host, matchedCards } = closing;
  return otherVmOf(closing, device) === undefined
    ? hostCriticalReason(device, { matchedCards, hostUse: host.hostUse })
    : hostCriticalOnItsOwn(device, host);
}

/** `device-assigned-twice` for every device two rules of `vm` match. */
function matchedTwice(vm: string, resolutions: readonly RuleResolution[]): PlanIssue[] {
  const matchedBy = new Map<PciAddress, DeviceRule>();
  const errors: PlanIssue[] = [];
  for (const { rule, devices } of resolutions) {
    for (const device of devices) {
      const other = matchedBy.get(device.address);
      if (other !== undefined && other !== rule) {
        // Two `vf: N` rules naming one VF: their matches name the PF, which no narrowing changes.
        const fix = typeof rule.vf === "number" && typeof other.vf === "number"
          ? `give one of them another VF index, or "vf: any"`
          : "narrow one of them";
        errors.push({
          code: "device-assigned-twice",
          message:
            `Device ${device.address} is matched by rules "${other.name}" and "${rule.name}" of VM "${vm}": ${fix}`,
          vm,
          rule: rule.name,
          location: rule.location,
          devices: [device.address],
          ...(device.iommuGroup === null ? {} : { group: device.iommuGroup }),
        });
        continue;
      }
      matchedBy.set(device.address, rule);
    }
  }
  return errors;
}

/**
 * Takes `device` for the rule unless an earlier rule already did (one hostdev per device); a
 * device matched here that an earlier rule only brought as a group member becomes this rule's.
 */
function take(
  closing: Closing,
  rule: DeviceRule,
  device: PciDevice,
  reason: InclusionReason,
): void {
  const existing = closing.byAddress.get(device.address);
  if (existing) {
    if (reason === "matched" && existing.reason === "iommu-group") {
      existing.rule = rule;
      existing.reason = "matched";
    }
    return;
  }
  closing.byAddress.set(device.address, { device, rule, reason });
}

/** One rule: its matches, then their groups. */
function closeRule(closing: Closing, resolution: RuleResolution): void {
  for (const device of resolution.devices) take(closing, resolution.rule, device, "matched");
  const matchedGroups = new Set(
    resolution.devices.flatMap((d) => d.iommuGroup === null ? [] : [d.iommuGroup]),
  );
  for (const group of matchedGroups) closeGroup(closing, resolution, group);
}

/** The checks on the devices `rule` ended up with: host-critical ones, no FLR, host drivers. */
function checkRule(closing: Closing, rule: DeviceRule, options: ClosureOptions): void {
  const taken = [...closing.byAddress.values()].filter((c) => c.rule === rule);
  const critical = takenHostCritical(closing, rule, taken);
  if (critical !== null) {
    (rule.allowHostCritical ? closing.result.warnings : closing.result.errors).push(critical);
  }
  closing.result.warnings.push(...takenDeviceWarnings(closing.vm, rule, taken, options));
}

/**
 * One IOMMU group of a rule's matches: its other endpoints are taken (`iommu_group: true`) or
 * named as left behind, and its bridges stay with the host. Says so in the reasoning.
 */
function closeGroup(closing: Closing, resolution: RuleResolution, group: number): void {
  const { rule } = resolution;
  const { result } = closing;
  const members = closing.groups.get(group) ?? [];
  const matchedHere = resolution.devices.filter((d) => d.iommuGroup === group);
  const others = members.filter((m) => !matchedHere.includes(m));
  const bridges = others.filter((m) => m.isBridge);
  // A VMD domain's devices go with their controller, never as hostdevs of their own.
  const hosted = others.filter((m) => !m.isBridge && behindVmd(m));
  const endpoints = others.filter((m) => !m.isBridge && !behindVmd(m));
  const head = `Group ${group} (rule "${rule.name}"): matched ${
    matchedHere.map((d) => d.address).join(", ")
  }`;
  if (rule.iommuGroup) {
    for (const m of endpoints) take(closing, rule, m, "iommu-group");
    result.reasoning.push(
      head +
        (endpoints.length > 0
          ? `; added ${
            endpoints.map((m) => ownedLabel(closing, m)).join(", ")
          }: VFIO assigns the whole group`
          : "; no other endpoint in the group"),
    );
  } else if (endpoints.length > 0) {
    closing.leftBehind.push({ rule, group, endpoints });
    result.reasoning.push(
      `${head}; not added (iommu_group: false): ${
        endpoints.map((m) => ownedLabel(closing, m)).join(", ")
      }: unless another rule of "${closing.vm}" takes them, they must be unbound or on vfio-pci for it to start`,
    );
  } else {
    result.reasoning.push(`${head}; no other endpoint in the group`);
  }
  if (hosted.length > 0) {
    result.reasoning.push(
      `Group ${group}: left out ${
        hosted.map((d) => d.address).join(", ")
      }, behind Intel VMD: VFIO cannot assign ${
        hosted.length > 1 ? "them" : "it"
      } apart from the VMD controller, which takes its whole domain`,
    );
  }
  if (bridges.length > 0) {
    result.reasoning.push(
      `Group ${group}: left out PCI bridge${bridges.length > 1 ? "s" : ""} ${
        bridges.map((b) => b.address).join(", ")
      }: bridges stay with the host`,
    );
  }
}

/**
 * With `iommu_group: false` nothing more is taken, but VFIO opens a group only when none of its
 * endpoints is bound to a host driver, and libvirt's managed='yes' detaches only the devices the
 * definition names: the start fails ("group N is not viable") while any of `endpoints` keeps its
 * host driver. A warning naming those, with their drivers and what the host uses them for:
 * `group-contains-host-critical` when the host needs one of them, `group-not-viable` otherwise.
 * `null` when every one is unbound or on vfio-pci or pci-stub.
 */
function leftBehindBound(
  closing: Closing,
  rule: DeviceRule,
  group: number,
  endpoints: readonly PciDevice[],
): PlanIssue | null {
  const { vm, host, matchedCards } = closing;
  const bound = endpoints.flatMap((m) =>
    m.driver === null || VFIO_DRIVERS.has(m.driver) ? [] : [{
      m,
      driver: m.driver,
      why: hostCriticalReason(m, { matchedCards, hostUse: host.hostUse }),
    }]
  );
  if (bound.length === 0) return null;
  const needed = bound.some((b) => b.why !== null);
  return {
    code: needed ? "group-contains-host-critical" : "group-not-viable",
    message:
      `Rule "${rule.name}" of VM "${vm}" leaves the rest of IOMMU group ${group} with the host (iommu_group: false), and ${
        bound.map((b) => `${b.m.address} is on ${b.driver}${b.why === null ? "" : ` (${b.why})`}`)
          .join(", ")
      }: libvirt detaches only the devices "${vm}" names, so its start fails ("group ${group} is not viable") until ${
        bound.length === 1 ? "that one is" : "those are"
      } unbound or on vfio-pci${needed ? ", which takes from the host what it needs" : ""}`,
    vm,
    rule: rule.name,
    location: rule.location,
    group,
    devices: bound.map((b) => b.m.address),
  };
}

/**
 * With `iommu_group: false`, the group's other endpoints that are unbound or on a VFIO driver
 * (which {@link leftBehindBound} lets pass) but that the host likely needs: VFIO takes the whole
 * group from the host at start, and the start guard refuses it as it refuses a device the host
 * needs, unless the rule's `allow_host_critical: true` (a warning then, a refusal otherwise).
 * `null` when there is none.
 */
function leftBehindNeeded(
  closing: Closing,
  rule: DeviceRule,
  group: number,
  endpoints: readonly PciDevice[],
): PlanIssue | null {
  const { vm } = closing;
  const needed = endpoints.flatMap((m) => {
    if (m.driver !== null && !VFIO_DRIVERS.has(m.driver)) return [];
    const why = mateHostNeeds(closing, m);
    return why === null ? [] : [{ m, why }];
  });
  if (needed.length === 0) return null;
  const outcome = rule.allowHostCritical
    ? " (allowed by allow_host_critical: true)"
    : `: the start guard refuses its start; move the card to a slot with a group of its own, or, ` +
      `only if the host no longer needs ${needed.length === 1 ? "it" : "them"}, set ` +
      `"allow_host_critical: true" on the rule`;
  return {
    code: "group-contains-host-critical",
    message:
      `Rule "${rule.name}" of VM "${vm}" leaves the rest of IOMMU group ${group} with the host (iommu_group: false), but VFIO hands the guest the whole group, with devices the host likely needs: ${
        needed.map(({ m, why }) => `${m.address} (${why}, driver ${m.driver ?? "none"})`)
          .join(", ")
      }${outcome}`,
    vm,
    rule: rule.name,
    location: rule.location,
    group,
    devices: needed.map(({ m }) => m.address),
  };
}

/**
 * `group-contains-host-critical` when the rule takes devices the host needs, or an SR-IOV
 * physical function whose virtual function the host uses; a warning under
 * `allow_host_critical: true`, a refusal otherwise. `null` when it takes none.
 */
function takenHostCritical(
  closing: Closing,
  rule: DeviceRule,
  taken: readonly ClosedDevice[],
): PlanIssue | null {
  const { vm, host, matchedCards } = closing;
  const critical = taken
    // A group mate another VM passes is that VM's, not the host's, unless the host needs it
    // whichever card is asked for: "allow_host_critical" lifts nothing there (the split refusal
    // stays), and moving this VM's card is not the only way out.
    .filter((c) =>
      c.reason === "matched" || otherVmOf(closing, c.device) === undefined ||
      hostCriticalOnItsOwn(c.device, host) !== null
    )
    .map((c) => ({
      c,
      why: hostCriticalReason(c.device, { matchedCards, hostUse: host.hostUse }) ??
        virtualFunctionInUse(c.device, host.hostUse),
    }))
    .filter((x) => x.why !== null);
  if (critical.length === 0) return null;
  const list = critical.map((x) => `${x.c.device.address} (${x.why})`).join(", ");
  const groupsHit = [...new Set(critical.map((x) => x.c.device.iommuGroup))];
  // Group members the host uses now (its disk, its network): the override would hand them over.
  const inUse = critical.filter((x) =>
    x.c.reason !== "matched" && host.hostUse?.some((u) => u.address === x.c.device.address)
  );
  const issue: PlanIssue = {
    code: "group-contains-host-critical",
    message: rule.allowHostCritical
      ? `Rule "${rule.name}" of VM "${vm}" takes devices the host likely needs: ${list} (allowed by allow_host_critical: true)`
      : `Rule "${rule.name}" of VM "${vm}" would take devices the host likely needs: ${list}: ${
        critical.some((x) => x.c.reason === "matched")
          // The rule chose the host's own device: no slot makes that one safe to give away. A
          // `vf: N` rule's match names the PF, and narrowing it picks no other VF: its index does.
          ? `${
            typeof rule.vf === "number"
              ? `name another VF index, or "vf: any" (which passes over the VFs the host uses)`
              : "narrow the rule to another device (serial, slot or address)"
          }, or, only if the host no longer needs it, set "allow_host_critical: true" on the rule`
          : inUse.length > 0
          ? `${
            moveAdvice(
              taken,
              critical.map((x) => x.c.device),
            )
          }; "allow_host_critical: true" would give the guest ${
            inUse.map((x) => x.c.device.address).join(", ")
          }, which the host uses now`
          : `${
            moveAdvice(
              taken,
              critical.map((x) => x.c.device),
            )
          }, or set "allow_host_critical: true" on the rule`
      }`,
    vm,
    rule: rule.name,
    location: rule.location,
    devices: critical.map((x) => x.c.device.address),
    ...(inUse.length > 0 && !rule.allowHostCritical
      ? {}
      : { override: "allow_host_critical: true" }),
  };
  if (groupsHit.length === 1 && groupsHit[0] !== null && groupsHit[0] !== undefined) {
    issue.group = groupsHit[0];
  }
  return issue;
}

/**
 * How to get the rule's devices into an IOMMU group of their own: a card moves to another slot,
 * but a device on bus 00 is built into the chipset or CPU, and no slot moves it, nor parts another
 * vendor's function in a matched device's slot from it ({@link hostCriticalReason}).
 */
function moveAdvice(taken: readonly ClosedDevice[], critical: readonly PciDevice[]): string {
  const matchedDevices = taken.filter((c) => c.reason === "matched").map((c) => c.device);
  const matched = matchedDevices.map((d) => d.address);
  // Another vendor's function in a matched function's slot is in the same chip (an APU's USB
  // controllers beside its iGPU): moving a card cannot part them.
  const slots = new Set(matched.map(slotOf));
  const mates = critical.filter((d) => !onRootBus(d) && slots.has(slotOf(d.address)));
  if (mates.length > 0) {
    const chips = matched.filter((a) => mates.some((d) => slotOf(d.address) === slotOf(a)));
    return `${mates.map((d) => d.address).join(", ")} share${
      mates.length === 1 ? "s" : ""
    } the chip of ${
      chips.join(", ")
    }, and no slot moves them apart: pass a card in a slot with a group of its own instead`;
  }
  const buses = [
    ...new Set(matched.map((a) => pciAddressParts(a).bus.toString(16).padStart(2, "0"))),
  ];
  return matched.length > 0 && matchedDevices.every((d) => onRootBus(d))
    ? `${matched.join(", ")} ${matched.length === 1 ? "is" : "are"} on ${
      buses.join(", ") === "00" ? "bus 00" : `root bus ${buses.join(", ")}`
    }, built into the chipset or CPU (or, on a virtual machine, on its root bus), where no slot moves ${
      matched.length === 1 ? "it" : "them"
    } to another IOMMU group: pass a card in a slot with a group of its own instead`
    : "move the card to another slot (another IOMMU group)";
}

/**
 * Per device the rule takes: `no-flr` (unless `allow_no_flr`), and `host-driver-in-use` for one
 * bound to a host driver that the VM does not hold already.
 */
function takenDeviceWarnings(
  vm: string,
  rule: DeviceRule,
  taken: readonly ClosedDevice[],
  options: ClosureOptions,
): PlanIssue[] {
  const warnings: PlanIssue[] = [];
  for (const { device: d } of taken) {
    if (d.flr === false && !rule.allowNoFlr) {
      warnings.push({
        code: "no-flr",
        message:
          `Device ${d.address} has no Function Level Reset: it may not reset between guest boots (set "allow_no_flr: true" on rule "${rule.name}" to silence this)`,
        vm,
        rule: rule.name,
        location: rule.location,
        devices: [d.address],
        override: "allow_no_flr: true",
      });
    }
    if (d.driver !== null && !VFIO_DRIVERS.has(d.driver) && !(options.current?.has(d.address))) {
      warnings.push({
        code: "host-driver-in-use",
        message: rule.managed
          ? `Device ${d.address} (rule "${rule.name}") is bound to host driver "${d.driver}": libvirt detaches it when "${vm}" starts and the host loses it`
          : `Device ${d.address} is bound to host driver "${d.driver}" and rule "${rule.name}" has managed: false: bind it to vfio-pci before "${vm}" starts`,
        vm,
        rule: rule.name,
        location: rule.location,
        devices: [d.address],
        ...(rule.managed ? { info: true as const } : {}),
      });
    }
  }
  return warnings;
}

/** One VM's hold on an IOMMU group: planned from the config, or present in a domain now. */
export interface GroupClaim {
  /** The configured VM, or the domain, that claims the group. */
  vm: string;
  /** The IOMMU group number. */
  group: number;
  /** Canonical host addresses of the group's functions the VM holds or will hold. */
  addresses: PciAddress[];
  /** The devices the VM asked for by name (its rules' matches, or every hostdev of a domain). */
  matched: PciAddress[];
  /** `config` when the VM's rules take it, `domain` when another domain's XML holds it now. */
  source: "config" | "domain";
  /** For a `config` claim: the rules whose devices these are, in config order. */
  rules?: readonly Pick<DeviceRule, "name" | "location">[];
}

/**
 * `"win" (rule "gpu")` for the VM an issue is about (its location leads the line), `"win" (rule
 * "gpu" at FILE:LINE:COL)` for another configured VM, `"win"` for a domain's hold.
 */
function claimant(rulesOf: ReadonlyMap<string, readonly Rule[]>, vm: string, about: string) {
  const rules = rulesOf.get(vm) ?? [];
  const named = rules.map((r) => `rule "${r.name}"${vm === about ? "" : ` at ${r.location}`}`);
  return rules.length === 0 ? `"${vm}"` : `"${vm}" (${named.join(", ")})`;
}

/** A claim's rules, by name and location. */
type Rule = Pick<DeviceRule, "name" | "location">;

/**
 * The most VMs one issue names: every VM's issue naming every other would grow as the square of
 * the VMs sharing a group (a rule every VM has, matching every function, in a small config).
 */
const NAMED_CLAIMANTS = 4;

/** `"a" (rule "x") and "b" (rule "y" at FILE:LINE:COL)`: `about` first when not all are named. */
function claimantList(
  rulesOf: ReadonlyMap<string, readonly Rule[]>,
  vms: readonly string[],
  about: string,
): string {
  if (vms.length <= NAMED_CLAIMANTS) {
    return vms.map((v) => claimant(rulesOf, v, about)).join(" and ");
  }
  const named = [about];
  for (const v of vms) {
    if (named.length === NAMED_CLAIMANTS) break;
    if (v !== about) named.push(v);
  }
  return `${named.map((v) => claimant(rulesOf, v, about)).join(", ")} and ${
    vms.length - named.length
  } more`;
}

/**
 * The `group-shared-with-other-vm` and cross-VM `device-assigned-twice` refusals among `claims`,
 * keyed by VM (each VM involved gets the issue). A group is the unit of isolation: two guests can
 * never each hold part of one. No override exists.
 */
export function findGroupConflicts(claims: readonly GroupClaim[]): Map<string, PlanIssue[]> {
  const byGroup = new Map<number, GroupClaim[]>();
  for (const claim of claims) {
    const list = byGroup.get(claim.group) ?? [];
    list.push(claim);
    byGroup.set(claim.group, list);
  }
  const out = new Map<string, PlanIssue[]>();
  for (const [group, list] of [...byGroup.entries()].sort(([a], [b]) => a - b)) {
    const vms = [...new Set(list.map((c) => c.vm))].sort();
    if (vms.length < 2) continue;
    const addresses = [...new Set(list.flatMap((c) => c.addresses))].sort();
    // Two VMs naming the same device is a different mistake from splitting a group.
    const sameDevice = addresses.filter((a) =>
      new Set(list.filter((c) => c.matched.includes(a)).map((c) => c.vm)).size > 1
    );
    const held = list.filter((c) => c.source === "domain").map((c) => c.vm);
    const rulesOf = new Map<string, Rule[]>();
    for (const claim of list) {
      rulesOf.set(claim.vm, [...(rulesOf.get(claim.vm) ?? []), ...(claim.rules ?? [])]);
    }
    const configured = new Set(list.flatMap((c) => c.source === "config" ? [c.vm] : []));
    const heldSet = new Set(held);
    // The domains other than `about` that hold the group. Capped as the claimants are, and found
    // without copying `held`: a GPU is often in the definitions of many VMs at once.
    const holdsIt = (about: string) => {
      const count = held.length - (heldSet.has(about) ? 1 : 0);
      if (count === 0) return "";
      const named: string[] = [];
      for (const v of held) {
        if (named.length === NAMED_CLAIMANTS) break;
        if (v !== about) named.push(`"${v}"`);
      }
      const more = count - named.length;
      return count === 1
        ? ` (${named[0]} holds it in its definition now)`
        : ` (${named.join(", ")}${
          more > 0 ? ` and ${more} more` : ""
        } hold it in their definitions now)`;
    };
    for (const vm of vms) {
      if (!configured.has(vm)) continue;
      const detail = holdsIt(vm);
      const own = rulesOf.get(vm)?.[0];
      const where = own === undefined ? {} : { rule: own.name, location: own.location };
      const issue: PlanIssue = sameDevice.length > 0
        ? {
          code: "device-assigned-twice",
          message: `Device ${sameDevice.join(", ")} is assigned to VMs ${
            claimantList(rulesOf, vms, vm)
          }${detail}: a device can belong to one VM only; give it to ${
            vms.length === 2 ? `"${vm}" or "${vms.find((v) => v !== vm)}"` : "one of them"
          }`,
          vm,
          ...where,
          group,
          devices: sameDevice,
          vms,
        }
        : {
          code: "group-shared-with-other-vm",
          message: `IOMMU group ${group} (${addresses.join(", ")}) is split between VMs ${
            claimantList(rulesOf, vms, vm)
          }${detail}: a group can only go to one VM; give the devices to ${
            vms.length === 2 ? `"${vm}" or "${vms.find((v) => v !== vm)}"` : "one of them"
          }`,
          vm,
          ...where,
          group,
          devices: addresses,
          vms,
        };
      const list2 = out.get(vm) ?? [];
      list2.push(issue);
      out.set(vm, list2);
    }
  }
  return out;
}
