/**
 * Property: `plan` and the start guard agree on one host. For random hosts (one in two using some
 * of its functions: a mounted filesystem's controller, the default route's NIC), configs and worlds
 * (`tests/helpers/plan_scenarios.ts`, shared with `tests/plan/property_plan_test.ts`), each host is built as a sysfs tree,
 * read by discovery as `plan` reads a host, planned, and every definition `apply` would define
 * from a plan that passed is handed to the guard's check over the same tree, under the policies
 * `apply` records: the guard refuses none of them, but what a warning of the plan names (no false
 * refusal, no silent pass). Then the tree changes under the applied definitions (a recorded card
 * swapped or removed, an unbound group mate bound to a host driver, a new card shifting a recorded
 * one and those after it one bus on) and is planned again: the guard refuses every swapped or
 * removed card, and nothing of a VM that plan neither refuses nor warns of (nor moves), and what
 * apply would define from the new plan starts as on any host. Seeded;
 * `PASSTHROUGH_PROPERTY_SEED` replays a failure.
 */

import fc from "fast-check";
import { assertEquals, assertOk } from "../helpers/assert.ts";
import { writeTempWorld } from "../helpers/world.ts";
import { tempHostTree } from "../helpers/hosts.ts";
import { type Scenario, scenarioArb, worldXml } from "../helpers/plan_scenarios.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { parseConfig } from "../../lib/config/config.ts";
import type { Config } from "../../lib/config/config.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import type { Plan, PlanIssue } from "../../lib/plan/types.ts";
import { readRecordsLeniently } from "../../lib/domain/lenient.ts";
import { guardCheck, policed, type PolicedRefusal } from "../../lib/guard/run.ts";
import { bindRecords, ENFORCE, guardPolicies } from "../../lib/guard/policy.ts";
import { formatRefusal } from "../../lib/guard/check.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import type { HostDescription, HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import type { HostUse, PciAddress } from "../../lib/host/types.ts";
import { canonicalPciAddress } from "../../lib/pci/address.ts";

const TEST = "tests/guard/plan_guard_property_test.ts";
const SEED = Number(Deno.env.get("PASSTHROUGH_PROPERTY_SEED") ?? "20261207");
const RUNS = 100;
/** Runs of the mutation property that change a host (the others are skipped). */
const MUTATION_RUNS = 40;

/**
 * The scenarios, where one host in two also uses one or two of its functions (a mounted
 * filesystem's controller, the default route's NIC), as `host_use.json` tells discovery and the
 * guard alike.
 */
const usingScenarioArb: fc.Arbitrary<Scenario> = fc.tuple(
  scenarioArb,
  fc.uniqueArray(fc.nat(), { maxLength: 2 }),
  fc.boolean(),
).map(([s, picks, uses]) => {
  if (!uses || picks.length === 0) return s;
  const devices = s.description.devices;
  const host_use: HostUse[] = picks.map((pick, i) => ({
    address: canonicalPciAddress(devices[pick % devices.length]!.bdf)!,
    reason: i === 0 ? "mounted-filesystem" : "default-route",
    detail: i === 0 ? "/ on nvme0n1p2" : "default route via eth0",
  }));
  const unique = host_use.filter((u, i) =>
    host_use.findIndex((o) => o.address === u.address) === i
  );
  return { ...s, description: { ...s.description, host_use: unique } };
});

/** The definitions `apply` would define from `plan`: none when it refuses. */
function applied(plan: Plan, s: Scenario): { vm: string; xml: string }[] {
  if (plan.errors.length > 0) return [];
  return plan.vms.flatMap((vm) =>
    vm.errors.length === 0 && s.domains.includes(vm.name)
      ? [{ vm: vm.name, xml: vm.desiredXml }]
      : []
  );
}

/** The refusals the hook would act on for `xml`, under the policies `apply` records for `config`. */
function guardRefusals(
  config: Config,
  { vm, xml, root }: { vm: string; xml: string; root: string },
): PolicedRefusal[] {
  const records = Object.fromEntries(
    readRecordsLeniently(xml).records.map((r) => [r.address, r]),
  );
  const file = bindRecords(guardPolicies(config), {
    previous: null,
    applied: new Map([[vm, records]]),
  });
  const found = guardCheck({ vm, xml, reader: denoFsReader(), root, live: false });
  return policed(found, file.vms[vm] ?? ENFORCE);
}

/**
 * The refusals `plan` did not warn of: a refusal is foreseen when a warning of the VM (not a note
 * of the normal flow) names the device it refuses; a group's refusal, when one names that member,
 * or a `drift` warning the passed device whose group it is (`plan` removes that hostdev).
 */
function unforeseen(refusals: readonly PolicedRefusal[], warnings: readonly PlanIssue[]): string[] {
  const named = (code?: string) =>
    new Set(warnings.flatMap((w) => w.info || (code ?? w.code) !== w.code ? [] : w.devices ?? []));
  const any = named();
  const drift = named("drift");
  return refusals.flatMap((r) => {
    const foreseen = r.group === undefined
      ? r.address !== null && any.has(r.address)
      : any.has(r.group.member) || (r.address !== null && drift.has(r.address));
    return foreseen ? [] : [formatRefusal(r)];
  });
}

Deno.test("the start guard refuses no definition apply writes from a plan that passed, on the same host", async () => {
  let checked = 0;
  let foreseen = 0;
  const property = fc.asyncProperty(usingScenarioArb, async (s) => {
    const config = parseConfig(JSON.stringify(s.config), { file: "random.yaml" });
    await using tree = await tempHostTree(s.description, { prefix: "passthrough-agree-" });
    const host = await discoverHost({ root: tree.dir, lspci: null, live: false });
    await using world = await writeTempWorld(worldXml(s));
    using port = openLibvirtPort(world.uri);
    const plan = planHostdevs({ config, host, libvirt: port });
    for (const { vm, xml } of applied(plan, s)) {
      checked++;
      const warnings = plan.vms.find((v) => v.name === vm)!.warnings;
      const refusals = guardRefusals(config, { vm, xml, root: tree.dir });
      foreseen += refusals.length;
      assertEquals(unforeseen(refusals, warnings), [], `${vm}: ${xml}`);
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
  assertOk(checked > 0, "no definition reached the guard");
  recordCase({
    area: "property",
    name: "random configs x random hosts x random worlds: the start guard agrees with plan",
    count: RUNS,
    outcome: `held (${checked} applied definitions checked at start, ${foreseen} refusals ` +
      "each foreseen by a warning of the plan)",
    test: TEST,
  });
});

/**
 * How the host changes after `apply`: a passed card swapped or gone, a group mate bound, or a new
 * card added before a passed one, shifting it and every card after it one bus on.
 */
type Mutation = { kind: "swap" | "remove" | "bind" | "shift"; pick: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  kind: fc.constantFrom<Mutation["kind"]>("swap", "remove", "bind", "shift"),
  pick: fc.nat(),
});

/**
 * `description` with a SATA controller added at `target`'s bus, which it and every bus after it
 * in its PCI domain (but the root bus) leave for the next one, with a VF's link to its PF and
 * what the host uses following their device. Only over hosts with one root bus per domain.
 */
function shifted(description: HostDescription, target: HostDeviceDescription): HostDescription {
  const busOf = (bdf: string) => parseInt(canonicalPciAddress(bdf)!.slice(5, 7), 16);
  const from = busOf(target.bdf);
  const domain = canonicalPciAddress(target.bdf)!.slice(0, 5);
  const moved = (bdf: string) => {
    const a = canonicalPciAddress(bdf)!;
    const bus = busOf(a);
    const stays = bus === 0 || bus < from || !a.startsWith(domain);
    return stays ? a : `${domain}${hex(bus + 1)}${a.slice(7)}`;
  };
  const group = Math.max(0, ...description.devices.map((d) => d.group ?? 0)) + 1;
  const sata: HostDeviceDescription = {
    bdf: `${domain}${hex(from)}:00.0`,
    group: description.devices.some((d) => d.group !== null) ? group : null,
    class: "0x010601",
    vendor: "0x1b4b",
    device: "0x9215",
    subsystem_vendor: null,
    subsystem_device: null,
    driver: "ahci",
    revision: null,
  };
  return {
    ...description,
    devices: [
      ...description.devices.map((d) => ({
        ...d,
        bdf: moved(d.bdf),
        ...(d.physfn == null ? {} : { physfn: moved(d.physfn) }),
      })),
      sata,
    ],
    ...(description.host_use === undefined
      ? {}
      : { host_use: description.host_use.map((u) => ({ ...u, address: moved(u.address) })) }),
  };
}

function hex(bus: number): string {
  return bus.toString(16).padStart(2, "0");
}

/**
 * `description` changed by `mutation` at one of `passed` (the addresses the applied definitions
 * pass), and the address it changed; `null` when nothing fits (a VF or PF stays: its links must
 * hold).
 */
function mutate(
  description: HostDescription,
  passed: readonly PciAddress[],
  mutation: Mutation,
): { description: HostDescription; address: PciAddress } | null {
  const devices = description.devices;
  const sriov = (d: HostDeviceDescription) =>
    d.physfn != null || devices.some((o) => o.physfn === d.bdf);
  const candidates = mutation.kind === "bind"
    // A function in a passed device's group that no definition passes, left unbound.
    ? devices.filter((d) =>
      d.group !== null && !passed.includes(d.bdf) && d.driver === null &&
      !d.class.startsWith("0x0604") &&
      devices.some((p) => passed.includes(p.bdf) && p.group === d.group)
    )
    : devices.filter((d) => passed.includes(d.bdf) && !sriov(d));
  const target = candidates[mutation.pick % Math.max(candidates.length, 1)];
  if (target === undefined) return null;
  if (mutation.kind === "shift") {
    const bus = (d: HostDeviceDescription) => canonicalPciAddress(d.bdf)!.slice(5, 7);
    const plain = description.root_buses == null && bus(target) !== "00" &&
      !devices.some((d) => bus(d) === "ff");
    return plain ? { description: shifted(description, target), address: target.bdf } : null;
  }
  const changed = mutation.kind === "remove"
    ? devices.filter((d) => d !== target)
    : devices.map((d) =>
      d !== target
        ? d
        : mutation.kind === "swap"
        ? { ...d, vendor: "0x1af4", device: "0x1042", class: "0x010000", serial: null }
        : { ...d, driver: "xhci_hcd" }
    );
  return { description: { ...description, devices: changed }, address: target.bdf };
}

Deno.test("after the host changes under an applied definition, the start guard refuses what plan refuses or warns of, and a swapped or removed card always", async () => {
  let mutated = 0;
  let refused = 0;
  let reapplied = 0;
  const property = fc.asyncProperty(usingScenarioArb, mutationArb, async (s, mutation) => {
    const config = parseConfig(JSON.stringify(s.config), { file: "random.yaml" });
    await using world = await writeTempWorld(worldXml(s));
    using port = openLibvirtPort(world.uri);
    // Most scenarios apply nothing passthrough records: skipped before any tree is built.
    const planned = applied(planHostdevs({ config, host: s.host, libvirt: port }), s);
    fc.pre(planned.some(({ xml }) => readRecordsLeniently(xml).records.length > 0));
    await using tree = await tempHostTree(s.description, { prefix: "passthrough-agree-" });
    const host = await discoverHost({ root: tree.dir, lspci: null, live: false });
    const definitions = applied(planHostdevs({ config, host, libvirt: port }), s);
    for (const { xml } of definitions) port.define(xml);
    // Only the devices passthrough recorded: a hand-added hostdev has no identity to check.
    const passed = definitions.flatMap(({ xml }) =>
      readRecordsLeniently(xml).records.map((r) => r.address)
    );
    const change = mutate(s.description, passed, mutation);
    fc.pre(change !== null);
    if (change === null) return;
    mutated++;
    await using after = await tempHostTree(change.description, { prefix: "passthrough-agree-" });
    const changedHost = await discoverHost({ root: after.dir, lspci: null, live: false });
    const again = planHostdevs({ config, host: changedHost, libvirt: port });
    for (const { vm, xml } of definitions) {
      const refusals = guardRefusals(config, { vm, xml, root: after.dir });
      refused += refusals.length;
      const records = readRecordsLeniently(xml).records;
      if (mutation.kind !== "bind" && records.some((r) => r.address === change.address)) {
        assertOk(
          refusals.some((r) => r.address === change.address),
          `${mutation.kind} of ${change.address} not refused for "${vm}"`,
        );
      }
      const vmPlan = again.vms.find((v) => v.name === vm)!;
      // A refused VM is refused whole; else each refusal is one plan warned of, or a hostdev it
      // moves to where its card is now (a note, as the change apply makes).
      if (again.errors.length > 0 || vmPlan.errors.length > 0) continue;
      const moved = new Set(vmPlan.move.map((m) => m.from));
      const left = refusals.filter((r) => r.address === null || !moved.has(r.address));
      assertEquals(unforeseen(left, vmPlan.warnings), [], `${vm} after ${mutation.kind}`);
    }
    // What apply defines from the new plan (moved cards followed) starts, as on any host.
    for (const { vm, xml } of applied(again, s)) {
      reapplied++;
      port.define(xml);
      const refusals = guardRefusals(config, { vm, xml, root: after.dir });
      const warnings = again.vms.find((v) => v.name === vm)!.warnings;
      assertEquals(unforeseen(refusals, warnings), [], `${vm} applied after ${mutation.kind}`);
    }
    // A refused VM's repair: each card it follows is the card recorded (its group may be refused
    // as it was before the shift).
    for (const vm of again.vms) {
      if (vm.repair === undefined || !s.domains.includes(vm.name)) continue;
      const xml = vm.repair.desiredXml;
      port.define(xml);
      const to = new Set((vm.repair.move ?? []).map((m) => m.to));
      const refusals = guardRefusals(config, { vm: vm.name, xml, root: after.dir });
      const followed = refusals.filter((r) =>
        r.group === undefined && r.address !== null && to.has(r.address)
      );
      assertEquals(
        followed.map((r) => formatRefusal(r)),
        [],
        `${vm.name} repaired after ${mutation.kind}`,
      );
    }
  });
  const details = await fc.check(property, { seed: SEED, numRuns: MUTATION_RUNS });
  if (details.failed) {
    throw new Error(
      `Property failed with PASSTHROUGH_PROPERTY_SEED=${SEED} (path ${details.counterexamplePath}): ${
        fc.stringify(details.counterexample)
      }: ${details.errorInstance}`,
    );
  }
  assertOk(
    mutated > 0 && refused > 0 && reapplied > 0,
    `mutated ${mutated}, refused ${refused}, applied again ${reapplied}`,
  );
  recordCase({
    area: "property",
    name: "random hosts changed after apply (a card swapped or removed, a group mate bound, " +
      "cards shifted one bus on): " +
      "the start guard refuses what plan refuses",
    count: mutated,
    outcome: `held (${mutated} hosts changed, ${refused} refusals checked, ${reapplied} ` +
      "definitions planned on the changed host checked at start)",
    test: TEST,
  });
});
