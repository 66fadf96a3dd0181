/**
 * Property: for random configs over random host topologies (random IOMMU groups mixing GPUs,
 * audio, USB, NICs, NVMe and bridges, with repeated IDs; plus generated hosts) and random
 * libvirt worlds (test driver; hand-added hostdevs, VMs outside the config, missing VMs), built by
 * `tests/helpers/plan_scenarios.ts`, the plan never includes a bridge, never splits a group between
 * domains, never assigns one device twice, every refusal and warning has a known code and a
 * message, and applying the plan then planning again changes nothing. Seeded;
 * `PASSTHROUGH_PROPERTY_SEED` replays a failure.
 */

import fc from "fast-check";
import { assertEquals, assertOk } from "../helpers/assert.ts";
import { writeTempWorld } from "../helpers/world.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { type Scenario, scenarioArb, worldXml } from "../helpers/plan_scenarios.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import type { IssueCode, Plan, PlanIssue } from "../../lib/plan/types.ts";
import type { PciAddress } from "../../lib/host/types.ts";
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
