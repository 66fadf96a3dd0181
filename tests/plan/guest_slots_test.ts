/**
 * Guest slots for `multifunction: true`: a card's functions share one slot of guest bus 0 with
 * their function numbers, in the slot the card already sits in or the first free one from 0x10.
 * Pure data tests: definitions in, plan out, no libvirt.
 */

import { assertEquals } from "../helpers/assert.ts";
import { dataWorld } from "../helpers/world.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import { planWorld } from "../../lib/plan/plan.ts";

const BLANK = { subsystem_vendor: null, subsystem_device: null, revision: null, driver: null };
const HOST = topologyFromDescription({
  devices: [
    { bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x10de", device: "0x2684" },
    { bdf: "0000:01:00.1", group: 1, class: "0x040300", vendor: "0x10de", device: "0x22ba" },
  ].map((d) => ({ ...d, ...BLANK })),
}, { source: "one-card" });

const CONFIG = parseConfig(
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
  const [vm] = planWorld({ config: CONFIG, host: HOST, world: dataWorld({ vm: xml }) }).vms;
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
  const [vm] = planWorld({ config: CONFIG, host: HOST, world: dataWorld({ vm: domain(full) }) })
    .vms;
  assertEquals(
    vm?.reasoning.filter((r) => r.includes("no free slot")),
    ["0000:01:00: no free slot on guest bus 0 for multifunction, libvirt places it"],
  );
});
