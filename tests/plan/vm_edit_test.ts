/**
 * The per-VM edit: which hostdevs are added, kept, rewritten, moved or removed, and the desired
 * XML. Pure data tests: definitions in, plan out, no libvirt.
 */

import { assertEquals } from "../helpers/assert.ts";
import { dataWorld } from "../helpers/world.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import { planWorld } from "../../lib/plan/plan.ts";
import type { VmPlan } from "../../lib/plan/types.ts";

const BLANK = { subsystem_vendor: null, subsystem_device: null, revision: null, driver: null };
const HOST = topologyFromDescription({
  devices: [
    { bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x10de", device: "0x2684" },
  ].map((d) => ({ ...d, ...BLANK })),
}, { source: "one-gpu" });

function gpuConfig(settings: string) {
  return parseConfig(
    `version: 1\nvms:\n  vm:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n${settings}`,
    { file: "c.yaml" },
  );
}

function domain(inside: string): string {
  return `<domain type='kvm'>
  <name>vm</name>
  <uuid>6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01</uuid>
${inside}
</domain>
`;
}

function planVm(settings: string, xml: string): VmPlan {
  const plan = planWorld({
    config: gpuConfig(settings),
    host: HOST,
    world: dataWorld({ vm: xml }),
  });
  return plan.vms[0]!;
}

Deno.test("planWorld() refuses boot_order only for <os><boot dev>, not for one in comments or metadata", () => {
  const bootOrder = "        boot_order: 1\n";
  const devices = "  <devices>\n  </devices>";
  const quiet = domain(
    `  <metadata><other:copy xmlns:other='urn:other'><os><boot dev='hd'/></os></other:copy></metadata>
  <os><type>hvm</type><!-- <boot dev='hd'/> --></os>
${devices}`,
  );
  const vm = planVm(bootOrder, quiet);
  assertEquals(vm.errors, []);
  assertEquals(vm.add.map((a) => a.spec.bootOrder), [1]);

  const booting = domain(`  <os><type>hvm</type><boot dev='hd'/></os>\n${devices}`);
  assertEquals(planVm(bootOrder, booting).errors.map((e) => e.code), ["boot-order-conflict"]);
});

Deno.test("planWorld() keeps an owned hostdev whose settings libvirt wrote back in its own style", () => {
  const settings = `        boot_order: 2\n        rom: { bar: "off", file: "/roms/a'b.rom" }\n`;
  const first = planVm(settings, domain("  <devices>\n  </devices>"));
  assertEquals(first.changed, true);
  // Double quotes, the quote in the file name raw, attributes reordered.
  const rewritten = first.desiredXml
    .replace("<boot order='2'/>", `<boot order="2"/>`)
    .replace(`<rom bar='off' file='/roms/a&apos;b.rom'/>`, `<rom file="/roms/a'b.rom" bar="off"/>`);
  assertEquals(rewritten === first.desiredXml, false, "the test rewrites the element");
  const again = planVm(settings, rewritten);
  assertEquals([again.changed, again.add, again.remove], [false, [], []]);

  // A setting that did change rewrites the element.
  const changed = planVm(`        boot_order: 3\n`, rewritten);
  assertEquals([changed.remove, changed.add.map((a) => a.spec.bootOrder)], [["0000:01:00.0"], [3]]);
});
