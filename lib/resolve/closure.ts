/**
 * IOMMU-group closure: VFIO hands a guest whole groups, so every other endpoint of a matched
 * device's group goes along (PCI-to-PCI bridges never do: they stay with the host). This module
 * computes each VM's device set from its resolved rules and refuses what is unsafe: devices the
 * host needs, a group split between VMs, one device taken twice.
 *
 * @module
 */

import type { DeviceRule } from "../config/config.ts";
import { cardOf, hostCriticalReason } from "./host_critical.ts";
import type { RuleResolution } from "./match.ts";
import { VFIO_DRIVERS } from "./match.ts";
import type { InclusionReason, PlanIssue } from "../plan/types.ts";
import type { HostTopology, PciAddress, PciDevice } from "../host/types.ts";

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
}

function label(device: PciDevice): string {
  const what = device.className ?? `class ${device.classCode}`;
  return `${device.address} (${device.vendorId}:${device.deviceId} ${what})`;
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
  const result: ClosureResult = { devices: [], reasoning: [], warnings: [], errors: [] };
  const byAddress = new Map<PciAddress, ClosedDevice>();
  const matchedBy = new Map<PciAddress, DeviceRule>();
  const groups = groupsOf(host);

  for (const resolution of resolutions) {
    const rule = resolution.rule;
    for (const device of resolution.devices) {
      const other = matchedBy.get(device.address);
      if (other !== undefined && other !== rule) {
        result.errors.push({
          code: "device-assigned-twice",
          message:
            `Device ${device.address} is matched by rules "${other.name}" and "${rule.name}" of VM "${vm}": narrow one of them`,
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

  for (const resolution of resolutions) {
    const rule = resolution.rule;
    if (resolution.devices.length === 0) continue;
    const taken: ClosedDevice[] = [];
    const take = (device: PciDevice, reason: InclusionReason) => {
      const existing = byAddress.get(device.address);
      if (existing) {
        // Already brought by another rule (as a group member, or matched there): one hostdev.
        if (reason === "matched" && existing.reason === "iommu-group") {
          existing.rule = rule;
          existing.reason = "matched";
        }
        return;
      }
      const closed = { device, rule, reason };
      byAddress.set(device.address, closed);
      taken.push(closed);
    };
    for (const device of resolution.devices) take(device, "matched");
    const matchedCards = new Set(resolution.devices.map((d) => cardOf(d.address)));
    const seenGroups = new Set<number>();
    for (const device of resolution.devices) {
      if (device.iommuGroup === null || seenGroups.has(device.iommuGroup)) continue;
      seenGroups.add(device.iommuGroup);
      const members = groups.get(device.iommuGroup) ?? [];
      const matchedHere = resolution.devices.filter((d) => d.iommuGroup === device.iommuGroup);
      const others = members.filter((m) => !matchedHere.includes(m));
      const bridges = others.filter((m) => m.isBridge);
      const endpoints = others.filter((m) => !m.isBridge);
      const head = `Group ${device.iommuGroup} (rule "${rule.name}"): matched ${
        matchedHere.map((d) => d.address).join(", ")
      }`;
      if (rule.iommuGroup) {
        for (const m of endpoints) take(m, "iommu-group");
        result.reasoning.push(
          head +
            (endpoints.length > 0
              ? `; added ${endpoints.map(label).join(", ")}: VFIO assigns the whole group`
              : "; no other endpoint in the group"),
        );
      } else if (endpoints.length > 0) {
        // Nothing is taken, but the VM only starts once these leave their host drivers: say so
        // when the host needs them, since the reasoning below tells the user to unbind them.
        const needed = endpoints.flatMap((m) => {
          const why = hostCriticalReason(m, { matchedCards, hostUse: host.hostUse });
          return why === null ? [] : [`${m.address} (${why})`];
        });
        if (needed.length > 0) {
          result.warnings.push({
            code: "group-contains-host-critical",
            message:
              `Rule "${rule.name}" of VM "${vm}" shares IOMMU group ${device.iommuGroup} with devices the host likely needs: ${
                needed.join(", ")
              }: with iommu_group: false they stay with the host, and "${vm}" cannot start until they are unbound or on vfio-pci, which takes them from the host`,
            vm,
            rule: rule.name,
            location: rule.location,
            group: device.iommuGroup,
            devices: endpoints.filter((m) =>
              hostCriticalReason(m, { matchedCards, hostUse: host.hostUse }) !== null
            ).map((m) => m.address),
          });
        }
        result.reasoning.push(
          `${head}; not added (iommu_group: false): ${
            endpoints.map(label).join(", ")
          }: they must be unbound or on vfio-pci for "${vm}" to start`,
        );
      } else {
        result.reasoning.push(`${head}; no other endpoint in the group`);
      }
      if (bridges.length > 0) {
        result.reasoning.push(
          `Group ${device.iommuGroup}: left out PCI bridge${bridges.length > 1 ? "s" : ""} ${
            bridges.map((b) => b.address).join(", ")
          }: bridges stay with the host`,
        );
      }
    }

    const critical = taken
      .map((c) => ({
        c,
        why: hostCriticalReason(c.device, { matchedCards, hostUse: host.hostUse }) ??
          virtualFunctionInUse(c.device, host),
      }))
      .filter((x) => x.why !== null);
    if (critical.length > 0) {
      const list = critical.map((x) => `${x.c.device.address} (${x.why})`).join(", ");
      const groupsHit = [...new Set(critical.map((x) => x.c.device.iommuGroup))];
      const issue: PlanIssue = {
        code: "group-contains-host-critical",
        message: rule.allowHostCritical
          ? `Rule "${rule.name}" of VM "${vm}" takes devices the host likely needs: ${list} (allowed by allow_host_critical: true)`
          : `Rule "${rule.name}" of VM "${vm}" would take devices the host likely needs: ${list}: move the card to another slot, or set "allow_host_critical: true" on the rule`,
        vm,
        rule: rule.name,
        location: rule.location,
        devices: critical.map((x) => x.c.device.address),
        override: "allow_host_critical: true",
      };
      if (groupsHit.length === 1 && groupsHit[0] !== null && groupsHit[0] !== undefined) {
        issue.group = groupsHit[0];
      }
      (rule.allowHostCritical ? result.warnings : result.errors).push(issue);
    }

    for (const c of taken) {
      const d = c.device;
      if (d.flr === false && !rule.allowNoFlr) {
        result.warnings.push({
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
      if (
        d.driver !== null && !VFIO_DRIVERS.has(d.driver) && !(options.current?.has(d.address))
      ) {
        result.warnings.push({
          code: "host-driver-in-use",
          message: rule.managed
            ? `Device ${d.address} (rule "${rule.name}") is bound to host driver "${d.driver}": libvirt detaches it when "${vm}" starts and the host loses it`
            : `Device ${d.address} is bound to host driver "${d.driver}" and rule "${rule.name}" has managed: false: bind it to vfio-pci before "${vm}" starts`,
          vm,
          rule: rule.name,
          location: rule.location,
          devices: [d.address],
        });
      }
    }
  }
  result.devices = [...byAddress.values()].sort((a, b) =>
    a.device.address < b.device.address ? -1 : a.device.address > b.device.address ? 1 : 0
  );
  return result;
}

/**
 * Why taking `device` (an SR-IOV physical function) takes something the host uses: its virtual
 * functions disappear when the PF leaves its host driver, so a VF the host uses is lost with it.
 */
function virtualFunctionInUse(device: PciDevice, host: HostTopology): string | null {
  for (const vf of device.virtfns) {
    const use = host.hostUse?.find((u) => u.address === vf);
    if (use) {
      return `its virtual function ${vf} is in use by the host (${use.reason}: ${use.detail})`;
    }
  }
  return null;
}

/** One VM's hold on an IOMMU group: planned from the config, or present in a domain now. */
export interface GroupClaim {
  vm: string;
  group: number;
  addresses: PciAddress[];
  /** The devices the VM asked for by name (its rules' matches, or every hostdev of a domain). */
  matched: PciAddress[];
  /** `config` when the VM's rules take it, `domain` when another domain's XML holds it now. */
  source: "config" | "domain";
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
    for (const vm of vms) {
      if (!list.some((c) => c.vm === vm && c.source === "config")) continue;
      const others = vms.filter((v) => v !== vm);
      const detail = held.filter((v) => v !== vm).length > 0
        ? ` (${
          held.filter((v) => v !== vm).map((v) => `"${v}"`).join(", ")
        } holds it in its definition now)`
        : "";
      const issue: PlanIssue = sameDevice.length > 0
        ? {
          code: "device-assigned-twice",
          message: `Device ${sameDevice.join(", ")} is assigned to VMs ${
            vms.map((v) => `"${v}"`).join(" and ")
          }${detail}: a device can belong to one VM only`,
          vm,
          group,
          devices: sameDevice,
          vms,
        }
        : {
          code: "group-shared-with-other-vm",
          message: `IOMMU group ${group} is split between VMs ${
            vms.map((v) => `"${v}"`).join(" and ")
          } (${
            addresses.join(", ")
          })${detail}: a group can only go to one VM; give the devices to ${
            others.length === 1 ? `"${vm}" or "${others[0]}"` : "one of them"
          }`,
          vm,
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
