/**
 * Every request of `tests/fixtures/hosts/cases.json` (real hosts' IOMMU listings with the outcome
 * a correct tool reaches) through config → match → closure, asserting exactly the expected
 * devices, errors, candidates and warnings; then every case with a device set through the whole
 * planner against libvirt's test driver, applied and planned again.
 */

import { assertEquals, assertOk } from "../helpers/assert.ts";
import { type Case, type CaseMatch, loadCases } from "../helpers/cases.ts";
import { loadFixtureHost } from "../helpers/hosts.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { resolveConfig } from "../../lib/plan/resolve.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { COMPUTER_DEVICE, writeTempWorld } from "../helpers/world.ts";
import type { HostTopology } from "../../lib/host/types.ts";

const cases = loadCases();
const hosts = new Map<string, HostTopology>();

function host(name: string): HostTopology {
  let topology = hosts.get(name);
  if (topology === undefined) {
    const description = loadFixtureHost(name);
    topology = topologyFromDescription(description, { source: name });
    hosts.set(name, topology);
  }
  return topology;
}

function ruleYaml(match: CaseMatch, extra: string): string {
  const address = match.bdf ? `, address: "${match.bdf}"` : "";
  return `      - match: { vendor_id: "${match.vendor_id}", device_id: "${match.device_id}"${address} }${extra}\n`;
}

function configFor(c: Case, extra = ""): string {
  const vms = new Map<string, string[]>([[c.vm, [ruleYaml(c.match, extra)]]]);
  for (const other of c.other_requests ?? []) {
    vms.set(other.vm, [...(vms.get(other.vm) ?? []), ruleYaml(other.match, "")]);
  }
  let text = "version: 1\nvms:\n";
  for (const [vm, rules] of vms) text += `  ${vm}:\n    devices:\n${rules.join("")}`;
  return text;
}

function run(c: Case, extra = "") {
  const config = parseConfig(configFor(c, extra), { file: `${c.id}.yaml` });
  const resolved = resolveConfig(config, host(c.host));
  const vm = resolved.get(c.vm);
  assertOk(vm, `VM "${c.vm}" resolved`);
  return vm;
}

Deno.test("cases.json holds the cases this suite expects", () => {
  assertOk(cases.length >= 25, `${cases.length} cases`);
});

for (const c of cases) {
  Deno.test(`case ${c.id}: ${c.why.split(":")[0]!.slice(0, 80)}`, () => {
    const vm = run(c);
    const codes = (issues: { code: string }[]) => issues.map((i) => i.code);
    if (c.expect.error !== undefined) {
      const error = vm.errors.find((e) => e.code === c.expect.error);
      assertOk(error, `expected ${c.expect.error}, got ${JSON.stringify(codes(vm.errors))}`);
      assertOk(error.message.length > 0);
      if (c.expect.candidates) {
        assertEquals(
          error.candidates?.map((x) => x.address).sort(),
          [...c.expect.candidates].sort(),
        );
      }
      if (c.expect.vms) assertEquals(error.vms, c.expect.vms);
      if (c.expect.group !== undefined) assertEquals(error.group, c.expect.group);
      return;
    }
    if (c.expect.warn === "group-contains-host-critical") {
      // Refused by default, naming the override ...
      const refusal = vm.errors.find((e) => e.code === c.expect.warn);
      assertOk(refusal, `expected a refusal, got ${JSON.stringify(codes(vm.errors))}`);
      assertEquals(refusal.override, "allow_host_critical: true");
      // ... and with the override, a warning and exactly the expected set.
      const allowed = run(c, "\n        allow_host_critical: true");
      assertEquals(allowed.errors, []);
      assertOk(codes(allowed.warnings).includes(c.expect.warn));
      assertEquals(allowed.closure.devices.map((d) => d.device.address), c.expect.devices);
      return;
    }
    assertEquals(vm.errors, [], JSON.stringify(vm.errors.map((e) => e.message)));
    assertEquals(vm.closure.devices.map((d) => d.device.address), c.expect.devices);
    if (c.expect.no_warn) {
      assertEquals(
        codes(vm.warnings).filter((code) => code === "group-contains-host-critical"),
        [],
      );
    }
  });
}

function worldFor(vms: string[]): string {
  const domains = vms.map((vm, i) =>
    `  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>${vm}</name>
    <uuid>00000000-0000-4000-8000-${i.toString(16).padStart(12, "0")}</uuid>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <devices/>
    <test:runstate>5</test:runstate>
  </domain>`
  );
  return `<node>\n${domains.join("\n")}\n  ${COMPUTER_DEVICE}\n</node>\n`;
}

for (const c of cases.filter((c) => c.expect.devices !== undefined)) {
  Deno.test(`case ${c.id} through planHostdevs(): exactly the expected hostdevs, then no change`, async () => {
    const extra = c.expect.warn === "group-contains-host-critical"
      ? "\n        allow_host_critical: true"
      : "";
    const config = parseConfig(configFor(c, extra), { file: `${c.id}.yaml` });
    await using world = await writeTempWorld(worldFor(config.vms.map((v) => v.name)));
    using libvirt = openLibvirtPort(world.uri);
    const first = planHostdevs({ config, host: host(c.host), libvirt });
    const vm = first.vms.find((v) => v.name === c.vm)!;
    assertEquals(vm.errors, []);
    assertEquals(vm.hostdevs, c.expect.devices);
    for (const other of first.vms) libvirt.define(other.desiredXml);
    const second = planHostdevs({ config, host: host(c.host), libvirt });
    assertEquals(second.vms.map((v) => v.changed), second.vms.map(() => false));
    assertEquals(second.vms.find((v) => v.name === c.vm)?.keep, c.expect.devices);
  });
}
