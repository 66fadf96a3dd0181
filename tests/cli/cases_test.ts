/**
 * Every request of `tests/fixtures/hosts/cases.json` through the CLI as a user runs it:
 * `passthrough plan --json --sysfs TREE --connect test:///WORLD`, where TREE is a sysfs tree built
 * from the real host's listing and read back by the real `lspci`, and WORLD a libvirt test-driver
 * world holding the case's VMs. Host-critical cases are checked twice: refused by default, and
 * with `allow_host_critical: true` planned with exactly the expected devices and a warning.
 */

import { assertEquals, assertOk } from "../helpers/assert.ts";
import { type Case, loadCases } from "../helpers/cases.ts";
import { loadFixtureHost } from "../helpers/hosts.ts";
import { runCli } from "../helpers/cli.ts";
import { testDomainXml } from "../helpers/world.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
import { nvmeDescription } from "../../lib/testing/host_generator.ts";
import type { Plan, VmPlan } from "../../lib/plan/types.ts";

const cases = loadCases();
const dir = Deno.makeTempDirSync({ prefix: "passthrough-cases-cli-" });
const trees = new Map<string, string>();

function tree(host: string): string {
  let path = trees.get(host);
  if (path === undefined) {
    path = `${dir}/${host}`;
    buildHostTree(loadFixtureHost(host), path);
    trees.set(host, path);
  }
  return path;
}

function configYaml(c: Case, allowHostCritical: boolean): string {
  const requests = [{ vm: c.vm, match: c.match }, ...(c.other_requests ?? [])];
  const lines = ["version: 1", "vms:"];
  for (const vm of new Set(requests.map((r) => r.vm))) {
    lines.push(`  ${vm}:`, "    devices:");
    for (const r of requests.filter((r) => r.vm === vm)) {
      const address = r.match.bdf ? `, address: "${r.match.bdf}"` : "";
      lines.push(
        `      - match: { vendor_id: "${r.match.vendor_id}", device_id: "${r.match.device_id}"${address} }`,
      );
      if (allowHostCritical) lines.push("        allow_host_critical: true");
    }
  }
  return lines.join("\n") + "\n";
}

/** `passthrough plan --json` of `base`'s config.yaml and world.xml over the tree at `sysfs`. */
function planJson(base: string, sysfs: string): ReturnType<typeof runCli> {
  return runCli([
    "plan",
    "--json",
    "--config",
    `${base}/config.yaml`,
    "--sysfs",
    sysfs,
    "--connect",
    `test://${base}/world.xml`,
  ]);
}

async function planCase(c: Case, allowHostCritical: boolean): Promise<VmPlan> {
  const base = `${dir}/${c.id}${allowHostCritical ? "-allow" : ""}`;
  Deno.mkdirSync(base);
  const vms = new Set([c.vm, ...(c.other_requests ?? []).map((r) => r.vm)]);
  const domains = [...vms].map((vm) => testDomainXml(vm, { running: false })).join("\n");
  Deno.writeTextFileSync(`${base}/world.xml`, `<node>\n${domains}\n</node>\n`);
  Deno.writeTextFileSync(`${base}/config.yaml`, configYaml(c, allowHostCritical));
  const result = await planJson(base, tree(c.host));
  assertOk(
    result.stdout.startsWith("{"),
    `${c.id}: no JSON (exit ${result.code}): ${result.stderr}`,
  );
  const plan = JSON.parse(result.stdout) as Plan;
  const hasErrors = plan.errors.length > 0 || plan.vms.some((vm) => vm.errors.length > 0);
  assertEquals(result.code, hasErrors ? 1 : 0, `${c.id}: exit code`);
  const vm = plan.vms.find((v) => v.name === c.vm);
  assertOk(vm, `${c.id}: VM "${c.vm}" is in the plan`);
  return vm;
}

const codes = (issues: { code: string }[]) => issues.map((i) => i.code);

for (const c of cases) {
  Deno.test(`plan --json on the built "${c.host}" tree: case ${c.id}`, async () => {
    const vm = await planCase(c, false);
    const { expect } = c;
    if (expect.error !== undefined) {
      const issue = vm.errors.find((e) => e.code === expect.error);
      assertOk(issue, `${c.id}: expected ${expect.error}, got ${JSON.stringify(codes(vm.errors))}`);
      assertOk(issue.message.length > 0);
      if (expect.candidates) {
        assertEquals(
          (issue.candidates ?? []).map((d) => d.address).sort(),
          [...expect.candidates].sort(),
        );
      }
      if (expect.vms) assertEquals([...(issue.vms ?? [])].sort(), [...expect.vms].sort());
      if (expect.group !== undefined) assertEquals(issue.group, expect.group);
      assertEquals(vm.changed, false, "a refused VM is left as it is");
      return;
    }
    if (expect.warn === "group-contains-host-critical") {
      assertEquals(
        codes(vm.errors),
        ["group-contains-host-critical"],
        `${c.id}: refused by default`,
      );
      assertEquals(vm.changed, false);
      const allowed = await planCase(c, true);
      assertEquals(allowed.errors, [], `${c.id}: allowed`);
      assertOk(codes(allowed.warnings).includes("group-contains-host-critical"));
      assertEquals([...allowed.hostdevs].sort(), [...expect.devices!].sort());
      return;
    }
    assertEquals(vm.errors, [], `${c.id}: no refusal`);
    assertEquals([...vm.hostdevs].sort(), [...expect.devices!].sort(), `${c.id}: devices`);
    if (expect.no_warn) {
      assertOk(
        !codes(vm.warnings).includes("group-contains-host-critical"),
        `${c.id}: no host-critical warning`,
      );
    }
  });
}

/**
 * Renoir's internal bus, one IOMMU group, built at `base/sysfs` with a test-driver world holding
 * vm1 and `rule` as vm1's one rule: the iGPU and its HDMI audio are 1002's; the PSP, two USB
 * controllers and the audio coprocessor in the same slot are the CPU's (1022). Every function
 * carries the board's subsystem IDs, as on an MSI board.
 */
function apuTree(base: string, rule: string): void {
  const fn = (bdf: string, vendor: string, device: string, cls: string, driver: string) => ({
    bdf,
    group: 7,
    class: cls,
    vendor,
    device,
    subsystem_vendor: "0x1462",
    subsystem_device: "0x7c95",
    driver,
    revision: null,
  });
  buildHostTree({
    host_use: [],
    devices: [
      fn("0000:00:08.1", "0x1022", "0x1635", "0x060400", "pcieport"),
      fn("0000:05:00.0", "0x1002", "0x1638", "0x030000", "amdgpu"),
      fn("0000:05:00.1", "0x1002", "0x1637", "0x040300", "snd_hda_intel"),
      fn("0000:05:00.2", "0x1022", "0x15df", "0x108000", "ccp"),
      fn("0000:05:00.3", "0x1022", "0x1639", "0x0c0330", "xhci_hcd"),
      fn("0000:05:00.4", "0x1022", "0x1639", "0x0c0330", "xhci_hcd"),
      fn("0000:05:00.6", "0x1022", "0x15e3", "0x040300", "snd_hda_intel"),
    ],
  }, `${base}/sysfs`);
  Deno.writeTextFileSync(
    `${base}/world.xml`,
    `<node>\n${testDomainXml("vm1", { running: false })}\n</node>\n`,
  );
  Deno.writeTextFileSync(
    `${base}/config.yaml`,
    `version: 1\nvms:\n  vm1:\n    devices:\n      - name: igpu\n        ${rule}\n`,
  );
}

Deno.test("plan --json on a built AMD APU tree refuses the iGPU rule that takes the CPU's USB controllers in its slot", async () => {
  const base = `${dir}/apu`;
  apuTree(base, 'match: { vendor_device_id: "1002:1638" }');
  const result = await planJson(base, `${base}/sysfs`);
  const plan = JSON.parse(result.stdout) as Plan;
  const vm = plan.vms.find((v) => v.name === "vm1");
  // Before: planned, the USB controllers taken as the iGPU's own with a note on their drivers.
  assertEquals([result.code, vm?.changed, vm?.errors.map((e) => [e.code, e.devices])], [1, false, [
    ["group-contains-host-critical", ["0000:05:00.3", "0000:05:00.4"]],
  ]]);
});

Deno.test("plan --json on a built AMD APU tree does not count the CPU's functions in the iGPU's slot as a second card", async () => {
  for (
    const [name, rule] of [
      ["two", 'count: 2\n        match: { subsystem_vendor_id: "1462" }'],
      ["audio", "count: 2\n        match: { driver: snd_hda_intel }"],
      ["all", 'all: true\n        match: { subsystem_vendor_id: "1462" }'],
    ]
  ) {
    const base = `${dir}/apu-${name}`;
    apuTree(base, rule!);
    const result = await planJson(base, `${base}/sysfs`);
    const vm = (JSON.parse(result.stdout) as Plan).vms.find((v) => v.name === "vm1");
    // Before: planned, the iGPU's and the CPU's functions taken as two cards, the host's USB
    // controllers among them as matched, with a note on their drivers.
    assertEquals([result.code, vm?.changed, vm?.errors.map((e) => e.code)], [1, false, [
      "ambiguous",
    ]], name);
  }
  const base = `${dir}/apu-two`;
  const vm = (JSON.parse((await planJson(base, `${base}/sysfs`)).stdout) as Plan).vms[0]!;
  assertEquals(
    vm.errors[0]!.message,
    'Rule "igpu" of VM "vm1" counts functions of 2 vendors in slot 0000:05:00 (IOMMU group 7) as 2 cards, but they are one chip: 0000:05:00.0 + 0000:05:00.1 (vendor 1002), 0000:05:00.2 + 0000:05:00.3 + 0000:05:00.4 + 0000:05:00.6 (vendor 1022); another vendor\'s functions in a card\'s slot are built in beside it (an AMD APU\'s USB controllers are the CPU\'s): narrow it with "vendor_id"',
  );
});

Deno.test("plan --json on a built tree refuses a drive behind Intel VMD with an IOMMU group of its own", async () => {
  const base = `${dir}/vmd`;
  const blank = { subsystem_vendor: null, subsystem_device: null, revision: null };
  buildHostTree({
    host_use: [],
    devices: [
      { bdf: "0000:00:0e.0", group: 5, class: "0x010400", vendor: "0x8086", device: "0x467f" },
      nvmeDescription("10000:e1:00.0", 12),
      nvmeDescription("0000:02:00.0", 13, { device: "0xa80a" }),
    ].map((d) => ({ driver: "vmd", ...blank, ...d })),
  }, `${base}/sysfs`);
  Deno.writeTextFileSync(
    `${base}/world.xml`,
    `<node>\n${testDomainXml("vm1", { running: false })}\n</node>\n`,
  );
  const plan = async (match: string) => {
    Deno.writeTextFileSync(
      `${base}/config.yaml`,
      `version: 1\nvms:\n  vm1:\n    devices:\n      - name: nvme\n        match: ${match}\n`,
    );
    const result = await planJson(base, `${base}/sysfs`);
    const vm = (JSON.parse(result.stdout) as Plan).vms[0]!;
    return { code: result.code, vm };
  };
  // Before: planned with a note on its driver, a hostdev VFIO cannot assign apart from VMD's.
  const alone = await plan('{ vendor_device_id: "144d:a808" }');
  assertEquals([alone.code, alone.vm.changed, alone.vm.errors.map((e) => e.code)], [1, false, [
    "no-match",
  ]]);
  assertEquals(
    alone.vm.errors[0]!.message,
    'Rule "nvme" of VM "vm1" matches no device it can take (vendor_id "144d", device_id "a808"): 10000:e1:00.0 is behind an Intel VMD controller (PCI domain 10000, past the firmware\'s last, ffff), whose DMA the IOMMU sees as the controller\'s: VFIO cannot assign it apart from the controller, which takes its whole domain (0000:00:0e.0)',
  );
  // Before: ambiguous between the two drives; the one outside VMD is the one it can take.
  const any = await plan('{ class: "nvme" }');
  assertEquals([any.vm.errors, any.vm.hostdevs], [[], ["0000:02:00.0"]]);
});

Deno.test("plan --json on a built tree passes a VMD controller without its domain's drives, which share its group", async () => {
  const base = `${dir}/vmd-group`;
  Deno.mkdirSync(base);
  const blank = { subsystem_vendor: null, subsystem_device: null, revision: null };
  buildHostTree({
    host_use: [],
    devices: [
      { bdf: "0000:00:0e.0", group: 5, class: "0x010400", vendor: "0x8086", device: "0x467f" },
      nvmeDescription("10000:e1:00.0", 5),
    ].map((d) => ({ driver: "vmd", ...blank, ...d })),
  }, `${base}/sysfs`);
  Deno.writeTextFileSync(
    `${base}/world.xml`,
    `<node>\n${testDomainXml("vm1", { running: false })}\n</node>\n`,
  );
  Deno.writeTextFileSync(
    `${base}/config.yaml`,
    `version: 1\nvms:\n  vm1:\n    devices:\n      - name: vmd\n        match: { vendor_device_id: "8086:467f" }\n`,
  );
  const result = await planJson(base, `${base}/sysfs`);
  const vm = (JSON.parse(result.stdout) as Plan).vms[0]!;
  // Before: 10000:e1:00.0 added as a hostdev of its own (a group mate), and the plan refused as
  // host-critical: "storage controller in another slot", which moving no card can help.
  assertEquals([result.code, vm.errors.map((e) => e.message), vm.hostdevs], [0, [], [
    "0000:00:0e.0",
  ]]);
  assertEquals(
    vm.reasoning.filter((r) => r.includes("10000:e1:00.0")),
    ["Group 5: left out 10000:e1:00.0, behind Intel VMD: VFIO cannot assign it apart from the VMD controller, which takes its whole domain"],
  );
});

Deno.test("cases tree cleanup", () => {
  Deno.removeSync(dir, { recursive: true });
});
