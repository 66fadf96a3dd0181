/**
 * Property: for random configs over random host topologies (random IOMMU groups mixing GPUs,
 * audio, USB, NICs, NVMe and bridges, with repeated IDs; plus generated hosts) and random
 * libvirt worlds (test driver; hand-added hostdevs, VMs outside the config, missing VMs), the
 * plan never includes a bridge, never splits a group between domains, never assigns one device
 * twice, every refusal and warning has a known code and a message, and applying the plan then
 * planning again changes nothing. Seeded; `PASSTHROUGH_PROPERTY_SEED` replays a failure.
 */

import fc from "fast-check";
import { assertEquals, assertOk } from "../helpers/assert.ts";
import { writeTempWorld } from "../helpers/world.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import type { HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import { generateHost } from "../../lib/testing/host_generator.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import type { IssueCode, Plan, PlanIssue } from "../../lib/plan/types.ts";
import { pciAddressToLibvirt } from "../../lib/pci/address.ts";
import type { HostTopology, PciAddress } from "../../lib/host/types.ts";
import { recordCase } from "../../scripts/reliability_report.ts";

const TEST = "tests/plan/property_plan_test.ts";
const SEED = Number(Deno.env.get("PASSTHROUGH_PROPERTY_SEED") ?? "20261124");
const RUNS = 100;

const CODES: ReadonlySet<IssueCode> = new Set<IssueCode>([
  "no-match",
  "ambiguous",
  "group-shared-with-other-vm",
  "device-assigned-twice",
  "sriov-split",
  "group-contains-host-critical",
  "group-not-viable",
  "no-iommu",
  "acs-override",
  "no-flr",
  "host-driver-in-use",
  "drift",
  "moved",
  "unknown-vm",
  "vm-not-in-config",
  "vm-running",
  "boot-order-conflict",
  "vf-unavailable",
  "host-needed",
  "mac-conflict",
]);

/** Device kinds and the IDs they may carry (few, so identical cards and ambiguity happen). */
const KINDS = {
  bridge: { class: "0x060400", ids: [["0x8086", "0x1901"], ["0x1022", "0x1483"]] },
  gpu: { class: "0x030000", ids: [["0x10de", "0x2684"], ["0x1002", "0x67df"]] },
  audio: { class: "0x040300", ids: [["0x10de", "0x22ba"], ["0x1002", "0xaaf0"]] },
  usb: { class: "0x0c0330", ids: [["0x1022", "0x149c"], ["0x1b21", "0x2142"]] },
  nic: { class: "0x020000", ids: [["0x8086", "0x1533"]] },
  nvme: { class: "0x010802", ids: [["0x144d", "0xa808"]] },
  isa: { class: "0x060100", ids: [["0x8086", "0xa305"]] },
} as const;
type Kind = keyof typeof KINDS;

const deviceArb = fc.record({
  kind: fc.constantFrom<Kind>("bridge", "gpu", "audio", "usb", "nic", "nvme", "gpu", "usb", "isa"),
  id: fc.nat(1),
  driver: fc.constantFrom(null, "vfio-pci", "nouveau", "xhci_hcd", "igb"),
  flr: fc.option(fc.boolean(), { nil: null }),
});

const hostArb = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      groups: fc.array(fc.array(deviceArb, { minLength: 1, maxLength: 4 }), {
        minLength: 1,
        maxLength: 7,
      }),
      noIommu: fc.integer({ min: 0, max: 15 }),
    }).map(({ groups, noIommu }) => {
      const devices: HostDeviceDescription[] = [];
      groups.forEach((members, g) => {
        members.forEach((m, f) => {
          const ids = KINDS[m.kind].ids;
          const [vendor, device] = ids[m.id % ids.length]!;
          devices.push({
            bdf: `0000:${(g + 1).toString(16).padStart(2, "0")}:00.${f}`,
            // One host in sixteen has no IOMMU at all.
            group: noIommu === 0 ? null : g + 10,
            class: KINDS[m.kind].class,
            vendor,
            device,
            subsystem_vendor: null,
            subsystem_device: null,
            driver: m.kind === "bridge" ? "pcieport" : m.driver,
            revision: null,
            flr: m.flr,
          });
        });
      });
      return topologyFromDescription({ devices }, { source: "random" });
    }),
  },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 8, max: 60 }).map((n) =>
      topologyFromDescription(generateHost(n, { vfsPerNic: 2 }), { source: `generated-${n}` })
    ),
  },
);

interface Scenario {
  host: HostTopology;
  config: unknown;
  /** Hand-added hostdevs per domain (unique across domains). */
  worldHostdevs: Record<string, PciAddress[]>;
  /** Domains in the world (configured ones may be missing; an outsider may exist). */
  domains: string[];
}

const scenarioArb: fc.Arbitrary<Scenario> = hostArb.chain((host) => {
  const devices = host.devices;
  const ruleArb = fc.record({
    device: fc.nat(devices.length - 1),
    byAddress: fc.nat(2).map((n) => n > 0),
    // Mostly IDs; sometimes a class alone (wide, often ambiguous).
    byClassOnly: fc.nat(5).map((n) => n === 0),
    count: fc.constantFrom(undefined, 1, 2, "all"),
    iommuGroup: fc.constantFrom(undefined, true, false),
    allowHostCritical: fc.boolean(),
    allowNoFlr: fc.boolean(),
    vf: fc.nat(2).map((n) => n === 0),
  }).map((r) => {
    // On a host with SR-IOV NICs, one rule in three takes any VF of one, as an interface.
    const pfs = devices.filter((d) => d.virtfns.length > 0);
    if (r.vf && pfs.length > 0) {
      const pf = pfs[r.device % pfs.length]!;
      return { match: { address: pf.address }, vf: "any", interface: { vlan: 10 } };
    }
    const d = devices[r.device]!;
    const match: Record<string, string> = r.byClassOnly
      ? { class: d.classCode.slice(0, 4) }
      : { vendor_device_id: `${d.vendorId}:${d.deviceId}` };
    if (r.byAddress) match.address = d.address;
    const rule: Record<string, unknown> = { match };
    if (r.count === "all") rule.all = true;
    else if (r.count !== undefined) rule.count = r.count;
    if (r.iommuGroup !== undefined) rule.iommu_group = r.iommuGroup;
    if (r.allowHostCritical) rule.allow_host_critical = true;
    if (r.allowNoFlr) rule.allow_no_flr = true;
    return rule;
  });
  return fc.record({
    vms: fc.array(fc.array(ruleArb, { maxLength: 2 }), { minLength: 1, maxLength: 3 }),
    missing: fc.nat(4),
    outsider: fc.boolean(),
    hand: fc.uniqueArray(
      fc.record({ device: fc.nat(devices.length - 1), owner: fc.nat(3) }),
      { maxLength: 3, selector: (h) => h.device },
    ),
  }).map(({ vms, missing, outsider, hand }) => {
    const names = vms.map((_, i) => `vm${i}`);
    const config = {
      version: 1,
      vms: Object.fromEntries(vms.map((rules, i) => [names[i], { devices: rules }])),
    };
    // One configured VM in five is not defined in libvirt (unknown-vm).
    const domains = names.filter((_, i) => !(missing === 0 && i === 0));
    if (outsider) domains.push("outsider");
    const worldHostdevs: Record<string, PciAddress[]> = {};
    for (const h of hand) {
      const owner = domains[h.owner % domains.length];
      if (owner === undefined) continue;
      (worldHostdevs[owner] ??= []).push(devices[h.device]!.address);
    }
    return { host, config, worldHostdevs, domains };
  });
});

function worldXml(s: Scenario): string {
  const domain = (name: string, i: number) => {
    const hostdevs = (s.worldHostdevs[name] ?? []).map((address) => {
      const a = pciAddressToLibvirt(address);
      return `<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='${a.domain}' bus='${a.bus}' slot='${a.slot}' function='${a.function}'/></source></hostdev>`;
    });
    return `<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>${name}</name>
    <uuid>4dea22b3-1d52-d8f3-2516-${String(i).padStart(12, "0")}</uuid>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <test:runstate>5</test:runstate>
    <devices>
      ${hostdevs.join("\n      ")}
    </devices>
  </domain>`;
  };
  return `<node>\n  ${s.domains.map(domain).join("\n  ")}\n</node>\n`;
}

function issues(plan: Plan): PlanIssue[] {
  return [
    ...plan.errors,
    ...plan.warnings,
    ...plan.vms.flatMap((vm) => [...vm.errors, ...vm.warnings]),
  ];
}

/** What each domain holds once the plan is applied (refused VMs keep their definition). */
function effectiveHostdevs(plan: Plan, s: Scenario): Map<string, PciAddress[]> {
  const held = new Map<string, PciAddress[]>();
  for (const name of s.domains) held.set(name, [...(s.worldHostdevs[name] ?? [])]);
  for (const vm of plan.vms) {
    if (!s.domains.includes(vm.name)) continue;
    const applies = plan.errors.length === 0 && vm.errors.length === 0;
    const parsed = parseDomainXml(applies ? vm.desiredXml : vm.currentXml);
    held.set(vm.name, [
      ...parsed.hostdevs.map((h) => h.address),
      ...parsed.interfaces.map((i) => i.address),
    ]);
  }
  return held;
}

Deno.test("planHostdevs() on random hosts, configs and worlds: no bridge, no split group, no device twice, coded refusals, converges", async () => {
  let runs = 0;
  let applied = 0;
  let refusals = 0;
  let interfaces = 0;
  const property = fc.asyncProperty(scenarioArb, async (s) => {
    runs++;
    const config = parseConfig(JSON.stringify(s.config), { file: "random.yaml" });
    await using world = await writeTempWorld(worldXml(s));
    using port = openLibvirtPort(world.uri);
    const plan = planHostdevs({ config, host: s.host, libvirt: port });
    const byAddress = new Map(s.host.devices.map((d) => [d.address, d]));

    // Every refusal and warning names its reason.
    for (const issue of issues(plan)) {
      assertOk(CODES.has(issue.code), `unknown code "${issue.code}"`);
      assertOk(typeof issue.message === "string" && issue.message.length > 0, issue.code);
    }
    refusals += plan.errors.length + plan.vms.reduce((n, vm) => n + vm.errors.length, 0);

    const held = effectiveHostdevs(plan, s);
    const owner = new Map<PciAddress, string>();
    for (const [name, addresses] of held) {
      for (const address of addresses) {
        // One device is never given twice (hand-added ones are unique by construction).
        assertOk(!owner.has(address), `"${address}" held by "${owner.get(address)}" and "${name}"`);
        owner.set(address, name);
      }
    }
    for (const vm of plan.vms) {
      if (!vm.changed) assertEquals(vm.desiredXml, vm.currentXml);
      const applies = plan.errors.length === 0 && vm.errors.length === 0;
      if (!applies) continue;
      for (const add of vm.add) {
        const device = byAddress.get(add.address);
        assertOk(device !== undefined, `"${add.address}" is not on the host`);
        // Never a bridge.
        assertOk(!device.isBridge, `bridge "${add.address}" planned for "${vm.name}"`);
        // Never a group split between domains: no other domain holds a member of its group.
        if (device.iommuGroup === null) continue;
        for (const member of s.host.devices.filter((d) => d.iommuGroup === device.iommuGroup)) {
          const other = owner.get(member.address);
          assertOk(
            other === undefined || other === vm.name,
            `group ${device.iommuGroup} split: "${add.address}" to "${vm.name}", "${member.address}" in "${other}"`,
          );
        }
      }
      for (const hostdev of parseDomainXml(vm.desiredXml).hostdevs) {
        if (hostdev.owned) assertOk(!byAddress.get(hostdev.address)?.isBridge);
      }
    }

    // Apply (define what the plan would define) and plan again: nothing left to do.
    const defined: string[] = [];
    if (plan.errors.length === 0) {
      for (const vm of plan.vms) {
        if (vm.changed && vm.errors.length === 0) {
          port.define(vm.desiredXml);
          defined.push(vm.name);
          interfaces += vm.add.filter((a) => a.spec.interface !== undefined).length;
        }
      }
    }
    applied += defined.length;
    // No two interfaces share a MAC.
    const macs = plan.vms.flatMap((vm) =>
      s.domains.includes(vm.name) ? parseDomainXml(vm.desiredXml).macs : []
    );
    assertEquals(new Set(macs).size, macs.length, `MACs given twice: ${macs.join(", ")}`);
    const again = planHostdevs({ config, host: s.host, libvirt: port });
    for (const vm of again.vms) {
      if (defined.includes(vm.name)) {
        assertEquals([vm.name, vm.changed, vm.errors], [vm.name, false, []]);
      }
    }
  });
  const details = await fc.check(property, { seed: SEED, numRuns: RUNS });
  if (details.failed) {
    throw new Error(
      `Property failed with PASSTHROUGH_PROPERTY_SEED=${SEED} (path ${details.counterexamplePath}): ${
        fc.stringify(details.counterexample)
      }: ${details.errorInstance}`,
    );
  }
  // The generator must reach both outcomes, or the property proves little.
  assertOk(applied > 0 && refusals > 0, `applied ${applied}, refusals ${refusals}`);
  assertOk(interfaces > 0, "no vf: interface was applied");
  recordCase({
    area: "property",
    name: "random configs x random hosts x random worlds: plan invariants and convergence",
    count: runs,
    outcome:
      `held (${applied} VM definitions applied and re-planned, ${refusals} refusals checked)`,
    test: TEST,
  });
});
