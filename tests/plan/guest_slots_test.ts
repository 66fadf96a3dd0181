/**
 * Guest slots for `multifunction: true`: a card's functions share one slot of guest bus 0 with
 * their function numbers, in the slot the card already sits in or the first free one from 0x10.
 * Against libvirt's test driver, and as pure data tests over planWorld() with no libvirt.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import {
  baseDevices,
  config,
  GPU,
  HOST,
  host,
  vmOf,
  WIN10,
  withPort,
} from "../helpers/plan_world.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { dataWorld } from "../helpers/world.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { planWorld } from "../../lib/plan/plan.ts";

Deno.test("planHostdevs() lays applied hostdevs out again when multifunction is turned on or off", async () => {
  const withMulti = (on: boolean) =>
    config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
        multifunction: ${on}
`);
  await withPort([WIN10], (libvirt) => {
    const plan = (on: boolean) =>
      vmOf(planHostdevs({ config: withMulti(on), host: HOST, libvirt }), "win10");
    libvirt.define(plan(false).desiredXml);
    assertEquals(plan(false).changed, false);

    const on = plan(true);
    assertEquals([on.remove, on.add.map((a) => a.address)], [
      ["0000:01:00.0", "0000:01:00.1"],
      ["0000:01:00.0", "0000:01:00.1"],
    ]);
    assertOk(
      on.reasoning.some((r) => /multifunction of rule "gpu" turned on/.test(r)),
      on.reasoning.join("\n"),
    );
    assertMatch(on.desiredXml, /slot='0x10' function='0x0' multifunction='on'/);
    assertMatch(on.desiredXml, /slot='0x10' function='0x1'/);
    libvirt.define(on.desiredXml);
    assertEquals(plan(true).changed, false, "applied once, the layout is kept");

    const off = plan(false);
    assertEquals(off.remove, ["0000:01:00.0", "0000:01:00.1"]);
    assertOk(off.reasoning.some((r) => /turned off/.test(r)));
    assertEquals(/multifunction=/.test(off.desiredXml), false);
    libvirt.define(off.desiredXml);
    assertEquals(plan(false).changed, false);
    assertEquals(parseDomainXml(libvirt.getPersistentXml("win10")).hostdevs.map((h) => h.address), [
      "0000:01:00.0",
      "0000:01:00.1",
    ]);
  });
});

Deno.test("planHostdevs() keeps a multifunction card in one guest slot with its function numbers", async () => {
  const cfg = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684" }
        multifunction: true
        rom: { bar: "off" }
`);
  await withPort([WIN10], (libvirt) => {
    const vm = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), "win10");
    const [gpu, audio] = vm.add;
    assertOk(gpu && audio);
    assertEquals(gpu.spec.guestAddress, {
      domain: 0,
      bus: 0,
      slot: 0x10,
      function: 0,
      multifunction: true,
    });
    assertEquals(audio.spec.guestAddress, { domain: 0, bus: 0, slot: 0x10, function: 1 });
    // The ROM setting describes the device the user named, not the group members.
    assertEquals([gpu.spec.rom, audio.spec.rom], [{ bar: "off" }, undefined]);
    assertMatch(
      vm.desiredXml,
      /<address type='pci' domain='0x0000' bus='0x00' slot='0x10' function='0x0' multifunction='on'\/>/,
    );
    libvirt.define(vm.desiredXml);
    const again = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), "win10");
    assertEquals(again.changed, false);
  });
});

Deno.test("planHostdevs() puts a card's function that appears later into the card's guest slot", async () => {
  const cfg = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684" }
        multifunction: true
`);
  // The GPU's audio function is hidden until enabled (NVIDIA cards hide it from the host until a
  // config bit is set): the first apply sees only function 0.
  const before = host([...baseDevices(), GPU]);
  await withPort([WIN10], (libvirt) => {
    const first = vmOf(planHostdevs({ config: cfg, host: before, libvirt }), "win10");
    assertEquals(first.add.map((a) => a.spec.guestAddress), [
      { domain: 0, bus: 0, slot: 0x10, function: 0, multifunction: true },
    ]);
    libvirt.define(first.desiredXml);

    const later = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), "win10");
    assertEquals([later.remove, later.add.map((a) => a.address)], [[], ["0000:01:00.1"]]);
    // Function 1 of the card's own slot, not a slot of its own (0x11 was the next free one).
    assertEquals(later.add[0]!.spec.guestAddress, { domain: 0, bus: 0, slot: 0x10, function: 1 });
    assertOk(
      later.reasoning.some((r) =>
        /join the card's other functions in guest slot 0000:00:10/.test(r)
      ),
      later.reasoning.join("\n"),
    );
    libvirt.define(later.desiredXml);
    assertEquals(vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), "win10").changed, false);
  });
});

const BLANK_IDS = { subsystem_vendor: null, subsystem_device: null, revision: null, driver: null };
const ONE_CARD = topologyFromDescription({
  devices: [
    { bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x10de", device: "0x2684" },
    { bdf: "0000:01:00.1", group: 1, class: "0x040300", vendor: "0x10de", device: "0x22ba" },
  ].map((d) => ({ ...d, ...BLANK_IDS })),
}, { source: "one-card" });

const MULTIFUNCTION = parseConfig(
  `version: 1
vms:
  vm:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684" }
        multifunction: true
`,
  { file: "c.yaml" },
);

function pciAddress(slot: number, fn = 0): string {
  return `<address type='pci' domain='0x0000' bus='0x00' slot='0x${
    slot.toString(16).padStart(2, "0")
  }' function='0x${fn}'/>`;
}

function domain(devices: string, extra = ""): string {
  return `<domain type='kvm'>
  <name>vm</name>
  <uuid>6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01</uuid>${extra}
  <devices>
${devices}
  </devices>
</domain>
`;
}

/** The guest slot each added function got, as `slot.function`. */
function slots(xml: string): string[] {
  const [vm] =
    planWorld({ config: MULTIFUNCTION, host: ONE_CARD, world: dataWorld({ vm: xml }) }).vms;
  return (vm?.add ?? []).map((a) => {
    const g = a.spec.guestAddress;
    return g === undefined ? "libvirt" : `${g.slot.toString(16)}.${g.function}`;
  });
}

Deno.test("planWorld() puts a card's functions in the first free guest slot from 0x10, numbers kept", () => {
  assertEquals(slots(domain("")), ["10.0", "10.1"]);
  const busy = domain(`    <disk type='file'>${pciAddress(0x10)}</disk>
    <controller type='usb'>${pciAddress(0x11, 2)}</controller>`);
  assertEquals(slots(busy), ["12.0", "12.1"]);
});

Deno.test("planWorld() does not count addresses in comments or another application's metadata as used slots", () => {
  const xml = domain(
    `    <!-- <disk type='file'>${pciAddress(0x10)}</disk> -->`,
    `\n  <metadata><other:layout xmlns:other='urn:other'><disk>${
      pciAddress(0x10)
    }</disk></other:layout></metadata>`,
  );
  assertEquals(slots(xml), ["10.0", "10.1"]);
});

Deno.test("planWorld() gives every slot up when guest bus 0 is full, leaving placement to libvirt", () => {
  const full = Array.from(
    { length: 0x10 },
    (_, i) => `    <disk type='file'>${pciAddress(0x10 + i)}</disk>`,
  ).join("\n");
  assertEquals(slots(domain(full)), ["libvirt", "libvirt"]);
  const [vm] =
    planWorld({ config: MULTIFUNCTION, host: ONE_CARD, world: dataWorld({ vm: domain(full) }) })
      .vms;
  assertEquals(
    vm?.reasoning.filter((r) => r.includes("no free slot")),
    ["0000:01:00: no free slot on guest bus 0 for multifunction, libvirt places it"],
  );
});
