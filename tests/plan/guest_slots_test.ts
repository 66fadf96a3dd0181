/**
 * Guest slots for `multifunction: true`: a card's functions share one guest slot with their
 * function numbers, in the slot the card already sits in, else on i440fx machines the first free
 * one of guest bus 0 from 0x10, and on q35 machines slot 0 behind a `pcie-root-port` of the
 * card's own (an empty one, else one the plan adds). Against libvirt's test driver, a real QEMU
 * libvirtd, and as pure data tests over planWorld() with no libvirt.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import {
  baseDevices,
  config,
  dev,
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
import { libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { Connection } from "../../ffi/connection.ts";
import { sriovNic } from "../helpers/sriov.ts";

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
    // Function 0 is in the slot already: no "function 0 is not passed" note.
    assertOk(
      later.reasoning.includes(
        "0000:01:00: 1 function joins the card's other functions in guest slot 0000:00:10 (multifunction)",
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

/** `xml` with each guest-address-less hostdev given slot `first`, `first + 1`... of guest bus 0. */
function placedByLibvirt(xml: string, first: number): string {
  let slot = first;
  return xml.replace(/<\/source>(?!\s*<address)/g, () => `</source>\n      ${pciAddress(slot++)}`);
}

Deno.test("planWorld() keeps a card libvirt placed when guest bus 0 is still full, rewriting nothing", () => {
  const full = Array.from(
    { length: 0x10 },
    (_, i) => `    <disk type='file'>${pciAddress(0x10 + i)}</disk>`,
  ).join("\n");
  const first = planOne(domain(full));
  const placed = placedByLibvirt(first.desiredXml, 0x05);
  const again = planOne(placed);
  assertEquals([again.changed, again.add, again.remove, again.keep], [false, [], [], [
    "0000:01:00.0",
    "0000:01:00.1",
  ]]);
  assertOk(
    again.reasoning.includes(
      "0000:01:00.0: multifunction is on, but its card has no guest slot: kept where libvirt placed it",
    ),
    again.reasoning.join("\n"),
  );
  // A slot freed later takes the card: the rewrite the rule asks for then happens.
  const freed = planOne(placed.replace(`<disk type='file'>${pciAddress(0x1f)}</disk>`, ""));
  assertEquals(freed.add.map((a) => a.spec.guestAddress?.slot), [0x1f, 0x1f]);
  assertOk(freed.reasoning.some((r) => /turned on, rewritten/.test(r)), freed.reasoning.join("\n"));
});

/** A q35 (or other `machine`) domain holding `devices`. */
function machineDomain(machine: string, devices: string): string {
  return domain(devices, `\n  <os><type arch='x86_64' machine='${machine}'>hvm</type></os>`);
}

/** The plan of `vm` for {@link MULTIFUNCTION} on {@link ONE_CARD}. */
function planOne(xml: string) {
  const [vm] = planWorld({ config: MULTIFUNCTION, host: ONE_CARD, world: dataWorld({ vm: xml }) })
    .vms;
  assertOk(vm);
  return vm;
}

/** Each added function's guest address as `bus:slot.function`. */
function busSlots(xml: string): string[] {
  return planOne(xml).add.map((a) => {
    const g = a.spec.guestAddress;
    return g === undefined
      ? "libvirt"
      : `${g.bus.toString(16)}:${g.slot.toString(16)}.${g.function}`;
  });
}

const ROOT = "    <controller type='pci' index='0' model='pcie-root'/>";

function rootPort(index: number, slot: number): string {
  return `    <controller type='pci' index='${index}' model='pcie-root-port'>${
    pciAddress(slot).replace("/>", " multifunction='on'/>")
  }</controller>`;
}

function onBus(bus: number): string {
  return `<address type='pci' domain='0x0000' bus='0x${
    bus.toString(16).padStart(2, "0")
  }' slot='0x00' function='0x0'/>`;
}

Deno.test("planWorld() puts a card behind a new pcie-root-port on q35 machines, functions kept", () => {
  const xml = machineDomain("pc-q35-7.2", ROOT);
  const vm = planOne(xml);
  assertEquals(vm.add.map((a) => a.spec.guestAddress), [
    { domain: 0, bus: 1, slot: 0, function: 0, multifunction: true },
    { domain: 0, bus: 1, slot: 0, function: 1 },
  ]);
  // The diff shows the controller: it is in the definition we write.
  assertOk(
    vm.desiredXml.includes(
      "<controller type='pci' index='1' model='pcie-root-port'/>\n    <hostdev ",
    ),
    vm.desiredXml,
  );
  assertMatch(
    vm.desiredXml,
    /<address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0' multifunction='on'\/>/,
  );
  assertOk(
    vm.reasoning.includes(
      "0000:01:00: 2 functions kept together in guest slot 0000:01:00 behind a new pcie-root-port (controller index 1) (multifunction)",
    ),
    vm.reasoning.join("\n"),
  );
  // Planned again over its own result, nothing changes (no second root port).
  assertEquals(planOne(vm.desiredXml).changed, false);
});

Deno.test("planWorld() keeps a moved card behind its pcie-root-port on q35, adding no other", () => {
  const first = planOne(machineDomain("pc-q35-7.2", ROOT));
  const moved = topologyFromDescription({
    devices: [
      { bdf: "0000:0b:00.0", group: 7, class: "0x030000", vendor: "0x10de", device: "0x2684" },
      { bdf: "0000:0b:00.1", group: 7, class: "0x040300", vendor: "0x10de", device: "0x22ba" },
    ].map((d) => ({ ...d, ...BLANK_IDS })),
  }, { source: "one-card-moved" });
  const [vm] = planWorld({
    config: MULTIFUNCTION,
    host: moved,
    world: dataWorld({ vm: first.desiredXml }),
  }).vms;
  assertOk(vm);
  assertEquals(vm.move.map((m) => m.to), ["0000:0b:00.0", "0000:0b:00.1"]);
  // Before, a second root port was added for the card and left empty once the move kept its place.
  assertEquals(vm.desiredXml.match(/model='pcie-root-port'/g)?.length, 1, vm.desiredXml);
  assertEquals(parseDomainXml(vm.desiredXml).hostdevs.map((h) => h.guestAddress?.address), [
    "0000:01:00.0",
    "0000:01:00.1",
  ]);
});

Deno.test("planWorld() takes the first free controller index on q35, past every bus a device names", () => {
  const devices = [
    ROOT,
    rootPort(1, 2),
    rootPort(2, 3),
    `    <disk type='file'>${onBus(1)}</disk>`,
    `    <disk type='file'>${onBus(2)}</disk>`,
    // A bus with no controller yet: libvirt adds one with that index, so it is not free.
    `    <disk type='file'>${onBus(5)}</disk>`,
  ].join("\n");
  const vm = planOne(machineDomain("q35", devices));
  assertEquals(busSlots(machineDomain("q35", devices)), ["6:0.0", "6:0.1"]);
  assertMatch(vm.desiredXml, /<controller type='pci' index='6' model='pcie-root-port'\/>/);
});

Deno.test("planWorld() reuses an empty pcie-root-port on q35 instead of adding one", () => {
  const devices = [
    ROOT,
    rootPort(1, 2),
    rootPort(2, 3),
    `    <disk type='file'>${onBus(1)}</disk>`,
  ].join("\n");
  const vm = planOne(machineDomain("pc-q35-8.0", devices));
  assertEquals(busSlots(machineDomain("pc-q35-8.0", devices)), ["2:0.0", "2:0.1"]);
  assertEquals(/model='pcie-root-port'\/>/.test(vm.desiredXml), false, vm.desiredXml);
  assertOk(
    vm.reasoning.some((r) => r.includes("behind the empty pcie-root-port of controller index 2")),
    vm.reasoning.join("\n"),
  );
});

Deno.test("planWorld() keeps guest bus 0 slots on i440fx machines and when no machine is named", () => {
  for (const machine of ["pc", "pc-i440fx-7.2"]) {
    const vm = planOne(machineDomain(machine, ""));
    assertEquals(busSlots(machineDomain(machine, "")), ["0:10.0", "0:10.1"]);
    assertEquals(/<controller/.test(vm.desiredXml), false);
  }
  assertEquals(busSlots(domain("")), ["0:10.0", "0:10.1"]);
});

/** {@link ONE_CARD} before its audio function appears: function 0 alone. */
const FUNCTION_ZERO = topologyFromDescription({
  devices: [
    { bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x10de", device: "0x2684" },
  ].map((d) => ({ ...d, ...BLANK_IDS })),
}, { source: "function-zero" });

Deno.test("planWorld() puts a card's function that appears later behind the card's root port on q35", () => {
  const [first] = planWorld({
    config: MULTIFUNCTION,
    host: FUNCTION_ZERO,
    world: dataWorld({ vm: machineDomain("q35", ROOT) }),
  }).vms;
  assertOk(first);
  assertMatch(first.desiredXml, /index='1' model='pcie-root-port'/);
  const later = planOne(first.desiredXml);
  assertEquals(later.add.map((a) => a.spec.guestAddress), [
    { domain: 0, bus: 1, slot: 0, function: 1 },
  ]);
  // Joining adds no controller: index 1 stays the only root port.
  assertEquals(later.desiredXml.match(/pcie-root-port/g)?.length, 1);
});

/** Whether libvirt's `virt-xml-validate` accepts `xml` as a domain; its output when it does not. */
async function validateDomain(xml: string): Promise<string | null> {
  const file = await Deno.makeTempFile({ suffix: ".xml" });
  try {
    await Deno.writeTextFile(file, xml);
    const out = await new Deno.Command("virt-xml-validate", { args: [file, "domain"] }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return out.success ? null : text;
  } finally {
    await Deno.remove(file);
  }
}

const noDaemon = libvirtdUnavailable() ??
  (new Deno.Command("sh", { args: ["-c", "command -v virt-xml-validate"], stdout: "null" })
      .outputSync().success
    ? null
    : "needs virt-xml-validate (libvirt-clients)");

/** A q35 domain for the QEMU driver holding `devices`. */
function q35Domain(name: string, devices: string): string {
  return `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='KiB'>131072</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <devices>
${devices}
  </devices>
</domain>
`;
}

/**
 * Defines `xml` (named `name`) on `uri`, plans a multifunction GPU for it, checks the plan's
 * definition validates and that libvirt keeps the card behind one root port; returns the plan.
 */
async function planOnQemu(uri: string, name: string, xml: string) {
  using libvirt = openLibvirtPort(uri);
  libvirt.define(xml);
  const cfg = config(`  ${name}:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
        multifunction: true
`);
  const first = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), name);
  assertEquals(first.errors, []);
  const bus = first.add[0]?.spec.guestAddress?.bus;
  assertOk(bus !== undefined && bus > 0, `bus ${bus}`);
  assertEquals(await validateDomain(first.desiredXml), null);
  libvirt.define(first.desiredXml);
  const stored = libvirt.getPersistentXml(name);
  assertEquals(await validateDomain(stored), null);
  // libvirt keeps one root port of that index, with both functions at their addresses behind it.
  const port = parseDomainXml(stored).pciControllers.filter((c) => c.index === bus);
  assertEquals(port, [{ index: bus, model: "pcie-root-port" }]);
  const hex = `0x${bus.toString(16).padStart(2, "0")}`;
  assertMatch(stored, new RegExp(`bus='${hex}' slot='0x00' function='0x0' multifunction='on'/>`));
  assertMatch(stored, new RegExp(`bus='${hex}' slot='0x00' function='0x1'/>`));
  const second = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), name);
  assertEquals([second.changed, second.add, second.remove], [false, [], []]);
  return first;
}

Deno.test({
  name: "a q35 card behind its own pcie-root-port is accepted and kept by a real QEMU libvirtd" +
    (noDaemon === null ? "" : ` (skipped: ${noDaemon})`),
  ignore: noDaemon !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    const names = ["spare", "new"].map((k) => `pt-q35-${k}-${crypto.randomUUID().slice(0, 8)}`);
    // Definitions can outlive the daemon when its state is not isolated: undefine at the end.
    using _cleanup = {
      [Symbol.dispose]() {
        using conn = Connection.open(daemon.uri);
        for (const name of names) {
          try {
            using dom = conn.lookupDomainByName(name);
            dom.undefine();
          } catch {
            // Never defined: nothing to clean up.
          }
        }
      },
    };
    // libvirt lays a bare q35 domain out with a root port per device and an empty spare one:
    // the card takes the spare, and the definition gains no controller.
    const spare = await planOnQemu(
      daemon.uri,
      names[0]!,
      q35Domain(
        names[0]!,
        `    <disk type='file' device='disk'><source file='/var/lib/libvirt/images/${
          names[0]
        }.qcow2'/><target dev='vda' bus='virtio'/></disk>`,
      ),
    );
    assertEquals(
      spare.desiredXml.match(/model='pcie-root-port'/g)?.length,
      spare.currentXml.match(/model='pcie-root-port'/g)?.length,
    );
    assertOk(
      spare.reasoning.some((r) => r.includes("behind the empty pcie-root-port")),
      spare.reasoning.join("\n"),
    );
    // With no spare, the plan adds the root port, at the first free index.
    const fresh = await planOnQemu(
      daemon.uri,
      names[1]!,
      q35Domain(
        names[1]!,
        "    <controller type='pci' index='0' model='pcie-root'/>\n    <controller type='usb' model='none'/>\n    <memballoon model='none'/>",
      ),
    );
    assertMatch(fresh.desiredXml, /<controller type='pci' index='1' model='pcie-root-port'\/>/);
  },
});

Deno.test({
  name:
    "a multifunction card a real QEMU libvirtd placed on a full guest bus 0 is kept, apply then plan shows no change" +
    (noDaemon === null ? "" : ` (skipped: ${noDaemon})`),
  ignore: noDaemon !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    const name = `pt-full-bus-${crypto.randomUUID().slice(0, 8)}`;
    using libvirt = openLibvirtPort(daemon.uri);
    using _cleanup = {
      [Symbol.dispose]() {
        using conn = Connection.open(daemon.uri);
        try {
          using dom = conn.lookupDomainByName(name);
          dom.undefine();
        } catch {
          // Never defined: nothing to clean up.
        }
      },
    };
    const disks = Array.from(
      { length: 0x10 },
      (_, i) =>
        `    <disk type='file' device='disk'><source file='/var/lib/libvirt/images/${name}-${i}.qcow2'/><target dev='vd${
          String.fromCharCode(0x61 + i)
        }' bus='virtio'/>${pciAddress(0x10 + i)}</disk>`,
    ).join("\n");
    libvirt.define(`<domain type='qemu'>
  <name>${name}</name>
  <memory unit='KiB'>131072</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
${disks}
  </devices>
</domain>
`);
    const cfg = config(`  ${name}:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
        multifunction: true
`);
    const first = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), name);
    assertEquals(first.add.map((a) => a.spec.guestAddress), [undefined, undefined]);
    libvirt.define(first.desiredXml);
    const second = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), name);
    assertEquals([second.changed, second.add, second.remove], [false, [], []]);
  },
});

Deno.test("planWorld() leaves a q35 card to libvirt when no controller index is free", () => {
  const xml = machineDomain("q35", `${ROOT}\n    <disk type='file'>${onBus(0xff)}</disk>`);
  assertEquals(busSlots(xml), ["libvirt", "libvirt"]);
  const vm = planOne(xml);
  assertEquals(/pcie-root-port/.test(vm.desiredXml), false);
  assertOk(
    vm.reasoning.includes(
      "0000:01:00: no free PCI controller index for a pcie-root-port for multifunction, libvirt places it",
    ),
    vm.reasoning.join("\n"),
  );
});

Deno.test("planWorld() counts only the slots of guest PCI domain 0 as used", () => {
  // A device in guest PCI domain 1 (a pxb-pcie's) does not take slot 0x10 of domain 0.
  const other = pciAddress(0x10).replace("domain='0x0000'", "domain='0x0001'");
  assertEquals(slots(domain(`    <disk type='file'>${other}</disk>`)), ["10.0", "10.1"]);
});

Deno.test("planWorld() uses slot 0x1f, the last of guest bus 0", () => {
  const busy = Array.from(
    { length: 0x0f },
    (_, i) => `    <disk type='file'>${pciAddress(0x10 + i)}</disk>`,
  ).join("\n");
  assertEquals(slots(domain(busy)), ["1f.0", "1f.1"]);
});

Deno.test("planWorld() takes controller index 255 on q35, the last one, and a new port's index past every controller's", () => {
  const last = machineDomain("q35", `${ROOT}\n    <disk type='file'>${onBus(0xfe)}</disk>`);
  assertEquals(busSlots(last), ["ff:0.0", "ff:0.1"]);
  assertMatch(
    planOne(last).desiredXml,
    /<controller type='pci' index='255' model='pcie-root-port'\/>/,
  );
  // A controller that is no root port, with nothing behind it, still has its index.
  const bridge = machineDomain(
    "q35",
    `${ROOT}\n    <controller type='pci' index='1' model='dmi-to-pci-bridge'>${
      pciAddress(0x1e)
    }</controller>`,
  );
  assertEquals(busSlots(bridge), ["2:0.0", "2:0.1"]);
});

/** A three-function card (a Turing GPU: VGA, HDMI audio, USB) in one IOMMU group. */
function turing(functions: number[]) {
  const all = [
    { bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x10de", device: "0x1e87" },
    { bdf: "0000:01:00.1", group: 1, class: "0x040300", vendor: "0x10de", device: "0x10f8" },
    { bdf: "0000:01:00.2", group: 1, class: "0x0c0330", vendor: "0x10de", device: "0x1ad8" },
  ];
  return topologyFromDescription({
    devices: all.filter((_, fn) => functions.includes(fn)).map((d) => ({ ...d, ...BLANK_IDS })),
  }, { source: "turing" });
}

Deno.test("planWorld() puts a card's function 0 that appears later into the slot its other functions share", () => {
  const audio = parseConfig(
    `version: 1
vms:
  vm:
    devices:
      - name: card
        match: { vendor_device_id: "10de:10f8" }
        multifunction: true
`,
    { file: "c.yaml" },
  );
  const plan = (functions: number[], xml: string) => {
    const [vm] =
      planWorld({ config: audio, host: turing(functions), world: dataWorld({ vm: xml }) })
        .vms;
    assertOk(vm);
    return vm;
  };
  // Function 0 hidden at first: functions 1 and 2 share a slot no function 0 marks multifunction.
  const first = plan([1, 2], domain(""));
  assertEquals(first.add.map((a) => a.spec.guestAddress), [
    { domain: 0, bus: 0, slot: 0x10, function: 1 },
    { domain: 0, bus: 0, slot: 0x10, function: 2 },
  ]);
  assertOk(
    first.reasoning.includes(
      "0000:01:00: 2 functions kept together in guest slot 0000:00:10 (multifunction); function 0 is not passed, the guest may not see them",
    ),
    first.reasoning.join("\n"),
  );
  const later = plan([0, 1, 2], first.desiredXml);
  assertEquals(later.add.map((a) => a.spec.guestAddress), [
    { domain: 0, bus: 0, slot: 0x10, function: 0, multifunction: true },
  ]);
  assertOk(
    later.reasoning.includes(
      "0000:01:00: 1 function joins the card's other functions in guest slot 0000:00:10 (multifunction)",
    ),
    later.reasoning.join("\n"),
  );
  assertEquals(plan([0, 1, 2], later.desiredXml).changed, false);
});

Deno.test("planWorld() leaves a card's later function to libvirt when its number is taken in the card's slot", () => {
  const [first] = planWorld({
    config: MULTIFUNCTION,
    host: FUNCTION_ZERO,
    world: dataWorld({ vm: domain("") }),
  }).vms;
  assertOk(first);
  assertOk(
    first.reasoning.includes(
      "0000:01:00: 1 function takes guest slot 0000:00:10 (multifunction)",
    ),
    first.reasoning.join("\n"),
  );
  // The user put a disk at function 1 of the card's slot since.
  const edited = first.desiredXml.replace(
    "<devices>\n",
    `<devices>\n    <disk type='file'>${pciAddress(0x10, 1)}</disk>\n`,
  );
  assertOk(edited !== first.desiredXml);
  const later = planOne(edited);
  // Function 1 of a slot of its own, with no function 0 there, would be hidden from the guest.
  assertEquals(later.add.map((a) => a.spec.guestAddress), [undefined]);
  assertOk(
    later.reasoning.includes(
      "0000:01:00: 1 function cannot join the card's function 0 (guest 0000:00:10.0): libvirt places it, so the guest sees it",
    ),
    later.reasoning.join("\n"),
  );
});

Deno.test("planWorld() keeps a card's function rewritten for a changed setting in the card's guest slot", () => {
  // boot_order goes to function 0 alone: a new value rewrites it, and function 1 stays.
  const booting = (order: number) =>
    parseConfig(
      `version: 1\nvms:\n  vm:\n    devices:\n      - name: gpu\n` +
        `        match: { vendor_device_id: "10de:2684" }\n        multifunction: true\n` +
        `        boot_order: ${order}\n`,
      { file: "c.yaml" },
    );
  const plan = (order: number, xml: string) => {
    const [vm] =
      planWorld({ config: booting(order), host: ONE_CARD, world: dataWorld({ vm: xml }) })
        .vms;
    assertOk(vm);
    return vm;
  };
  const first = plan(1, domain(""));
  const changed = plan(2, first.desiredXml);
  assertEquals([changed.remove, changed.add.map((a) => a.address)], [["0000:01:00.0"], [
    "0000:01:00.0",
  ]]);
  // Function 0 of the card's slot again, not a slot of its own with no function 1 beside it.
  assertEquals(changed.add[0]!.spec.guestAddress, {
    domain: 0,
    bus: 0,
    slot: 0x10,
    function: 0,
    multifunction: true,
  });
  assertEquals(plan(2, changed.desiredXml).changed, false);
});

Deno.test("planWorld() leaves a card's functions to libvirt when its function 0 is passed on its own", () => {
  // The GPU added by hand (virt-manager) where libvirt placed it, kept as written: its audio
  // function alone at function 1 of another slot would be a device the guest never finds.
  const handAdded = `    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>
      <boot order='2'/>
      ${pciAddress(0x07)}
    </hostdev>`;
  const vm = planOne(domain(handAdded));
  assertEquals(vm.add.map((a) => [a.address, a.spec.guestAddress]), [["0000:01:00.1", undefined]]);
  assertOk(
    vm.reasoning.includes(
      "0000:01:00: 1 function cannot join the card's function 0 (guest 0000:00:07.0): libvirt places it, so the guest sees it",
    ),
    vm.reasoning.join("\n"),
  );
  assertEquals(vm.reasoning.some((r) => r.includes("function 0 is not passed")), false);
  assertMatch(
    vm.desiredXml,
    /<boot order='2'\/>\s*<address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'\/>/,
  );
});

Deno.test("planWorld() keeps a card's function where libvirt placed it beside a function 0 passed on its own", () => {
  const handAdded = `    <hostdev mode='subsystem' type='pci' managed='no'>
      <source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>
      ${pciAddress(0x07)}
    </hostdev>`;
  const first = planOne(domain(handAdded));
  assertEquals(first.add.map((a) => [a.address, a.spec.guestAddress]), [[
    "0000:01:00.1",
    undefined,
  ]]);
  // libvirt gives the function a slot of its own as it stores the definition.
  const source =
    "<address domain='0x0000' bus='0x01' slot='0x00' function='0x1'/>\n      </source>";
  assertOk(first.desiredXml.includes(source), first.desiredXml);
  const placed = first.desiredXml.replace(source, `${source}\n      ${pciAddress(0x08)}`);
  const again = planOne(placed);
  assertEquals(
    [again.changed, again.add, again.remove],
    [false, [], []],
    again.reasoning.join("\n"),
  );
});

Deno.test("planWorld() moves a function libvirt placed beside a function 0 passed on its own once that one's slot can take it", () => {
  const handAdded = (on: string) =>
    `    <hostdev mode='subsystem' type='pci' managed='no'>
      <source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>
      ${pciAddress(0x07).replace("/>", `${on}/>`)}
    </hostdev>`;
  const multifunction = " multifunction='on'";
  const first = planOne(domain(handAdded("")));
  const source =
    "<address domain='0x0000' bus='0x01' slot='0x00' function='0x1'/>\n      </source>";
  // libvirt's placement, then function 0's slot marked multifunction by hand: as a first plan
  // beside it does, the function joins it there.
  const placed = first.desiredXml.replace(source, `${source}\n      ${pciAddress(0x08)}`)
    .replace(pciAddress(0x07), pciAddress(0x07).replace("/>", `${multifunction}/>`));
  assertEquals(slots(domain(handAdded(multifunction))), ["7.1"]);
  const again = planOne(placed);
  assertEquals(
    again.add.map((a) => a.spec.guestAddress?.slot),
    [0x07],
    again.reasoning.join("\n"),
  );
  assertEquals(again.remove, ["0000:01:00.1"]);
  // Once there, it stays.
  assertEquals(planOne(again.desiredXml).changed, false);
});

Deno.test("planWorld() leaves a card's functions to libvirt when its function 0 is a hand-written interface", () => {
  // A dual-port NIC: port 0 given by hand as a guest NIC, port 1 by a rule. Port 1 alone at
  // function 1 of a slot of its own would be a device the guest never finds.
  const nic = topologyFromDescription({
    devices: [
      { bdf: "0000:01:00.0", group: 1, class: "0x020000", vendor: "0x8086", device: "0x1521" },
      { bdf: "0000:01:00.1", group: 2, class: "0x020000", vendor: "0x8086", device: "0x1521" },
    ].map((d) => ({ ...d, ...BLANK_IDS })),
  }, { source: "dual-port" });
  const port1 = parseConfig(
    `version: 1\nvms:\n  vm:\n    devices:\n      - name: port1\n` +
      `        match: { vendor_device_id: "8086:1521", address: "01:00.1" }\n` +
      `        multifunction: true\n`,
    { file: "c.yaml" },
  );
  const handWritten = `    <interface type='hostdev' managed='yes'>
      <mac address='52:54:00:6d:90:02'/>
      <source><address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>
      ${pciAddress(0x07)}
    </interface>`;
  const [vm] =
    planWorld({ config: port1, host: nic, world: dataWorld({ vm: domain(handWritten) }) })
      .vms;
  assertOk(vm);
  assertEquals(vm.add.map((a) => [a.address, a.spec.guestAddress]), [["0000:01:00.1", undefined]]);
  assertOk(
    vm.reasoning.includes(
      "0000:01:00: 1 function cannot join the card's function 0 (guest 0000:00:07.0): libvirt places it, so the guest sees it",
    ),
    vm.reasoning.join("\n"),
  );
  assertEquals(vm.reasoning.some((r) => r.includes("function 0 is not passed")), false);
  // Where libvirt then places it, it stays.
  const source =
    "<address domain='0x0000' bus='0x01' slot='0x00' function='0x1'/>\n      </source>";
  const placed = vm.desiredXml.replace(source, `${source}\n      ${pciAddress(0x08)}`);
  assertOk(placed !== vm.desiredXml, vm.desiredXml);
  const [again] = planWorld({ config: port1, host: nic, world: dataWorld({ vm: placed }) }).vms;
  assertEquals(again?.changed, false, again?.reasoning.join("\n"));
});

Deno.test("planWorld() says when a hand-written interface in a card's guest slot loses the slot's function 0", () => {
  const card = topologyFromDescription({
    devices: [
      { bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x10de", device: "0x2684" },
      { bdf: "0000:01:00.1", group: 1, class: "0x040300", vendor: "0x10de", device: "0x22ba" },
      { bdf: "0000:02:00.0", group: 2, class: "0x020000", vendor: "0x8086", device: "0x1533" },
    ].map((d) => ({ ...d, ...BLANK_IDS })),
  }, { source: "card-and-nic" });
  const plan = (devices: string, xml: string) => {
    const config = parseConfig(`version: 1\nvms:\n  vm:\n    devices:${devices}`, {
      file: "c.yaml",
    });
    const [vm] = planWorld({ config, host: card, world: dataWorld({ vm: xml }) }).vms;
    assertOk(vm);
    return vm;
  };
  const gpu = `\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n` +
    `        multifunction: true\n`;
  const applied = plan(gpu, domain(""));
  assertMatch(applied.desiredXml, /slot='0x10' function='0x1'\/>/);
  // The NIC added by hand beside the card's functions, in the card's guest slot.
  const nic = `    <interface type='hostdev' managed='yes'>
      <source><address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/></source>
      ${pciAddress(0x10, 2)}
    </interface>
  </devices>`;
  const released = plan(" []\n", applied.desiredXml.replace("  </devices>", nic));
  assertEquals(released.remove, ["0000:01:00.0", "0000:01:00.1"]);
  assertOk(
    released.reasoning.includes(
      "0000:02:00.0 stays at guest 0000:00:10.2, whose function 0 leaves: the guest may not see it until a function 0 is there again",
    ),
    released.reasoning.join("\n"),
  );
});

Deno.test("planWorld() says when a card's function kept in its guest slot loses the slot's function 0", () => {
  // A firmware or ACS setting split the card's groups, and the rule now matches the audio alone.
  const split = topologyFromDescription({
    devices: [
      { bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x10de", device: "0x2684" },
      { bdf: "0000:01:00.1", group: 2, class: "0x040300", vendor: "0x10de", device: "0x22ba" },
    ].map((d) => ({ ...d, ...BLANK_IDS })),
  }, { source: "split" });
  const rule = (match: string) =>
    parseConfig(
      `version: 1\nvms:\n  vm:\n    devices:\n      - name: card\n        match: ${match}\n` +
        `        multifunction: true\n`,
      { file: "c.yaml" },
    );
  const plan = (match: string, xml: string) => {
    const [vm] = planWorld({ config: rule(match), host: split, world: dataWorld({ vm: xml }) })
      .vms;
    assertOk(vm);
    return vm;
  };
  const both = plan(`{ vendor_id: "10de" }\n        count: 2`, domain(""));
  assertMatch(both.desiredXml, /slot='0x10' function='0x1'\/>/);
  const audio = plan(`{ vendor_device_id: "10de:22ba" }`, both.desiredXml);
  assertEquals([audio.remove, audio.keep], [["0000:01:00.0"], ["0000:01:00.1"]]);
  assertOk(
    audio.reasoning.includes(
      "0000:01:00.1 stays at guest 0000:00:10.1, whose function 0 leaves: the guest may not see it until a function 0 is there again",
    ),
    audio.reasoning.join("\n"),
  );
  // Said once, when function 0 leaves: the next plan changes nothing.
  assertEquals(plan(`{ vendor_device_id: "10de:22ba" }`, audio.desiredXml).changed, false);
});

Deno.test("planWorld() puts a card behind a pcie-root-port on any machine with a pcie-root (aarch64 virt)", () => {
  // libvirt gives an aarch64 or riscv64 `virt` machine a pcie-root, as a q35 one: a card on it
  // directly would be an integrated endpoint, not the PCIe device its driver expects.
  for (const arch of ["aarch64", "riscv64"]) {
    const xml = domain(
      ROOT,
      `\n  <os><type arch='${arch}' machine='virt'>hvm</type></os>`,
    );
    assertEquals(busSlots(xml), ["1:0.0", "1:0.1"], arch);
    assertMatch(
      planOne(xml).desiredXml,
      /<controller type='pci' index='1' model='pcie-root-port'\/>/,
    );
  }
});

Deno.test("planWorld() says when a kept function loses its slot's function 0 to a released interface", () => {
  const nic = topologyFromDescription({ devices: sriovNic("07", 4) }, { source: "sriov" });
  const plan = (devices: string, xml: string) => {
    const config = parseConfig(`version: 1\nvms:\n  vm:\n    devices:${devices}`, {
      file: "c.yaml",
    });
    const [vm] = planWorld({ config, host: nic, world: dataWorld({ vm: xml }) }).vms;
    assertOk(vm);
    return vm;
  };
  const uplink = `\n      - name: uplink\n        match: { vendor_device_id: "8086:10c9" }\n` +
    `        vf: any\n        interface: { mac: auto }\n`;
  const applied = plan(uplink, domain("")).desiredXml;
  // The user put the VF's interface at function 0 of a slot, and a hostdev of their own beside it.
  const laidOut = applied.replace(
    "</interface>",
    `  ${pciAddress(0x10).replace("/>", " multifunction='on'/>")}\n    </interface>`,
  ).replace(
    "  </devices>",
    `    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x07' slot='0x10' function='0x2'/></source>
      ${pciAddress(0x10, 1)}
    </hostdev>
  </devices>`,
  );
  assertOk(laidOut.includes("multifunction='on'") && laidOut.includes("function='0x2'"), laidOut);
  const released = plan(" []\n", laidOut);
  assertEquals(released.remove, ["0000:07:10.0"]);
  assertOk(
    released.reasoning.includes(
      "0000:07:10.2 stays at guest 0000:00:10.1, whose function 0 leaves: the guest may not see it until a function 0 is there again",
    ),
    released.reasoning.join("\n"),
  );
});

Deno.test("planWorld() leaves two root-bus devices sharing a device number to libvirt, not one card's slot", () => {
  // On root bus 40 (a second host bridge, as on TRX40), 40:00.0 and 40:00.2 are two devices
  // built into the CPU, not one card's functions: one multifunction guest slot would show the
  // guest a card that does not exist, so each is a device of its own, where libvirt puts it.
  const onRoot = topologyFromDescription({
    root_buses: ["00", "40"],
    devices: [
      ...baseDevices(),
      dev({
        bdf: "0000:40:00.0",
        group: 40,
        class: "0x088000",
        vendor: "0x1022",
        device: "0x14a4",
      }),
      dev({
        bdf: "0000:40:00.2",
        group: 40,
        class: "0x108000",
        vendor: "0x1022",
        device: "0x1486",
      }),
    ],
  }, { source: "test-host" });
  const cfg = parseConfig(
    `version: 1\nvms:\n  vm:\n    devices:\n      - name: dummy\n` +
      `        match: { vendor_device_id: "1022:14a4" }\n        multifunction: true\n`,
    { file: "c.yaml" },
  );
  const plan = (xml: string) =>
    planWorld({ config: cfg, host: onRoot, world: dataWorld({ vm: xml }) }).vms[0]!;
  const vm = plan(domain(""));
  assertEquals(vm.add.map((a) => [a.address, a.spec.guestAddress]), [
    ["0000:40:00.0", undefined],
    ["0000:40:00.2", undefined],
  ]);
  assertEquals(vm.desiredXml.includes("multifunction"), false);
  assertOk(
    vm.reasoning.includes(
      "0000:40:00.2: a device of its own on a root bus, not a card's function: libvirt places it",
    ),
    vm.reasoning.join("\n"),
  );
  // Applied where libvirt put them (function 0 of a slot each), they stay: nothing to lay out.
  const placed = vm.desiredXml.replace(
    /(<address domain='0x0000' bus='0x40' slot='0x00' function='0x([02])'\/>\s*<\/source>)/g,
    (_, source, fn) => `${source}\n      ${pciAddress(0x07 + Number(fn))}`,
  );
  assertEquals(placed.match(/slot='0x0[79]'/g)?.length, 2);
  const again = plan(placed);
  assertEquals([again.changed, again.reasoning.filter((r) => r.includes("multifunction"))], [
    false,
    [],
  ]);
  // Laid out as one card by an earlier plan: rewritten where libvirt places them.
  const asCard = vm.desiredXml.replace(
    /(<address domain='0x0000' bus='0x40' slot='0x00' function='0x([02])'\/>\s*<\/source>)/g,
    (_, source, fn) =>
      `${source}\n      ${
        pciAddress(0x10, Number(fn)).replace("/>", fn === "0" ? " multifunction='on'/>" : "/>")
      }`,
  );
  const undone = plan(asCard);
  assertEquals(undone.add.map((a) => [a.address, a.spec.guestAddress]), [
    ["0000:40:00.0", undefined],
    ["0000:40:00.2", undefined],
  ]);
  assertOk(
    undone.reasoning.includes(
      "0000:40:00.0: a device of its own on a root bus, not a card's function, rewritten with libvirt's own guest address",
    ),
    undone.reasoning.join("\n"),
  );
});

Deno.test("planWorld() keeps an APU's functions of two vendors in one guest slot, and keeps it there", () => {
  // Behind a bridge a slot is one device: an AMD APU's iGPU (1002) and the USB controller (1022)
  // it carries are one device's functions, found by the guest through function 0.
  const apu = host([
    ...baseDevices(),
    dev({ bdf: "0000:0b:00.0", group: 9, class: "0x030000", vendor: "0x1002", device: "0x1638" }),
    dev({ bdf: "0000:0b:00.1", group: 9, class: "0x040300", vendor: "0x1002", device: "0x1637" }),
    dev({ bdf: "0000:0b:00.3", group: 9, class: "0x0c0330", vendor: "0x1022", device: "0x1639" }),
  ]);
  const cfg = parseConfig(
    `version: 1\nvms:\n  vm:\n    devices:\n      - name: igpu\n` +
      `        match: { vendor_device_id: "1002:1638" }\n        multifunction: true\n` +
      `        allow_host_critical: true\n`,
    { file: "c.yaml" },
  );
  const plan = (xml: string) =>
    planWorld({ config: cfg, host: apu, world: dataWorld({ vm: xml }) }).vms[0]!;
  const vm = plan(domain(""));
  assertEquals(vm.add.map((a) => `${a.spec.guestAddress?.slot}.${a.spec.guestAddress?.function}`), [
    "16.0",
    "16.1",
    "16.3",
  ]);
  assertEquals(plan(vm.desiredXml).changed, false);
});

Deno.test("planWorld() keeps the guest address of a root-bus device of a multifunction rule rewritten or moved", () => {
  // Under `multifunction: true` a root bus's function is a device of its own, placed by libvirt:
  // a changed boot_order or a move must not put it in a new guest slot (Windows would see a new
  // device), as neither does under a rule without `multifunction`.
  const onRoot = topologyFromDescription({
    root_buses: ["00", "40"],
    devices: [
      ...baseDevices(),
      dev({
        bdf: "0000:40:00.0",
        group: 40,
        class: "0x088000",
        vendor: "0x1022",
        device: "0x14a4",
      }),
    ],
  }, { source: "test-host" });
  const cfg = (extra: string) =>
    parseConfig(
      `version: 1\nvms:\n  vm:\n    devices:\n      - name: dummy\n` +
        `        match: { vendor_device_id: "1022:14a4" }\n        multifunction: true\n${extra}`,
      { file: "c.yaml" },
    );
  const plan = (xml: string, extra = "") =>
    planWorld({ config: cfg(extra), host: onRoot, world: dataWorld({ vm: xml }) }).vms[0]!;
  const placed = plan(domain("")).desiredXml.replace(
    /(<address domain='0x0000' bus='0x40' slot='0x00' function='0x0'\/>\s*<\/source>)/,
    `$1\n      ${pciAddress(0x07)}`,
  );
  assertEquals(plan(placed).changed, false);
  const booting = plan(placed, "        boot_order: 2\n");
  assertEquals(booting.errors, []);
  assertEquals(booting.remove, ["0000:40:00.0"]);
  assertEquals(
    parseDomainXml(booting.desiredXml).hostdevs.map((h) => [h.bootOrder, h.guestAddress?.address]),
    [[2, "0000:00:07.0"]],
  );
  assertEquals(plan(booting.desiredXml, "        boot_order: 2\n").changed, false);
  // Found at a new address (a firmware update renumbered it), it keeps its guest address too.
  const renumbered = topologyFromDescription({
    root_buses: ["00", "40"],
    devices: [
      ...baseDevices(),
      dev({
        bdf: "0000:40:01.0",
        group: 40,
        class: "0x088000",
        vendor: "0x1022",
        device: "0x14a4",
      }),
    ],
  }, { source: "test-host" });
  const moved = planWorld({ config: cfg(""), host: renumbered, world: dataWorld({ vm: placed }) })
    .vms[0]!;
  assertEquals(moved.move.map((m) => [m.from, m.to]), [["0000:40:00.0", "0000:40:01.0"]]);
  assertEquals(
    parseDomainXml(moved.desiredXml).hostdevs.map((h) => [h.address, h.guestAddress?.address]),
    [["0000:40:01.0", "0000:00:07.0"]],
  );
});
