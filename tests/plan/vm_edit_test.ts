/**
 * The per-VM edit: which hostdevs are added, kept, rewritten, moved or removed, the records and
 * the desired XML. Against the real libvirt.so.0 (test driver worlds, and a real QEMU libvirtd
 * when one can start), and as pure data tests over planWorld() with no libvirt.
 */

import { assertEquals, assertMatch, assertOk, assertThrows } from "../helpers/assert.ts";
import {
  baseDevices,
  config,
  dev,
  domainXml,
  GPU,
  GPU_AUDIO,
  GPU_CONFIG,
  HOST,
  host,
  hostdevXml,
  i350Port,
  LINUX,
  vmOf,
  WIN10,
  withPort,
} from "../helpers/plan_world.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { type DataDomain, dataWorld } from "../helpers/world.ts";
import { libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { Connection } from "../../ffi/connection.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { planWorld } from "../../lib/plan/plan.ts";
import type { Plan, VmPlan } from "../../lib/plan/types.ts";
import { tempHostTree } from "../helpers/hosts.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { nvmeDiskXml } from "../helpers/devices.ts";

Deno.test("planHostdevs() adds a matched GPU and its group's audio function, with records", async () => {
  await withPort([WIN10], (libvirt) => {
    const plan = planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt });
    const vm = vmOf(plan, "win10");
    assertEquals(vm.errors, []);
    assertEquals(vm.add.map((a) => [a.address, a.reason]), [
      ["0000:01:00.0", "matched"],
      ["0000:01:00.1", "iommu-group"],
    ]);
    assertEquals(vm.hostdevs, ["0000:01:00.0", "0000:01:00.1"]);
    assertOk(vm.changed);
    const parsed = parseDomainXml(vm.desiredXml);
    assertEquals(parsed.hostdevs.map((h) => [h.address, h.owned, h.managed]), [
      ["0000:01:00.0", true, true],
      ["0000:01:00.1", true, true],
    ]);
    assertEquals(parsed.records.map((r) => [r.address, r.driver, r.rule]), [
      ["0000:01:00.0", "nvidia", "gpu"],
      ["0000:01:00.1", "snd_hda_intel", "gpu"],
    ]);
    assertOk(vm.reasoning.some((r) => r.includes("left out PCI bridge 0000:00:01.0")));
    assertOk(vm.warnings.some((w) => w.code === "host-driver-in-use"));
  });
});

Deno.test("planHostdevs() changes nothing when planned again after applying", async () => {
  await withPort([WIN10], (libvirt) => {
    const first = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    libvirt.define(first.desiredXml);
    const second = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    assertEquals(second.changed, false);
    assertEquals(second.desiredXml, second.currentXml);
    assertEquals([second.add, second.remove, second.move], [[], [], []]);
    assertEquals(second.keep, ["0000:01:00.0", "0000:01:00.1"]);
    // The GPU is the VM's already: "the host loses it" was said when it was added.
    assertOk(first.warnings.some((w) => w.code === "host-driver-in-use"));
    assertEquals(second.warnings.filter((w) => w.code === "host-driver-in-use"), []);
  });
});

Deno.test("planHostdevs() still matches driver: nvidia after libvirt rebinds the GPU to vfio-pci", async () => {
  const rebound = host([
    ...baseDevices(),
    { ...GPU, driver: "vfio-pci" },
    { ...GPU_AUDIO, driver: "vfio-pci" },
  ]);
  await withPort([WIN10], (libvirt) => {
    // Without a record, vfio-pci is just vfio-pci: the rule does not match.
    const fresh = vmOf(planHostdevs({ config: GPU_CONFIG, host: rebound, libvirt }), "win10");
    assertEquals(fresh.errors.map((e) => e.code), ["no-match"]);

    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    libvirt.define(applied.desiredXml);
    const after = vmOf(planHostdevs({ config: GPU_CONFIG, host: rebound, libvirt }), "win10");
    assertEquals(after.errors, []);
    assertEquals(after.changed, false);
    assertEquals(after.remove, []);
    assertEquals(after.keep, ["0000:01:00.0", "0000:01:00.1"]);
    // The driver it was resolved with is kept in the records, not replaced by vfio-pci.
    assertEquals(parseDomainXml(after.desiredXml).records.map((r) => r.driver), [
      "nvidia",
      "snd_hda_intel",
    ]);
  });
});

Deno.test("planHostdevs() does not change a group member's record when libvirt binds it to vfio-pci and back", async () => {
  // The GPU's audio function had no driver when the plan was applied: its record says none, and
  // a start (vfio-pci) or a stop (none again) must not make the plan change, or drift checks fire.
  const unbound = host([...baseDevices(), GPU, { ...GPU_AUDIO, driver: null }]);
  const started = host([
    ...baseDevices(),
    { ...GPU, driver: "vfio-pci" },
    { ...GPU_AUDIO, driver: "vfio-pci" },
  ]);
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: unbound, libvirt }), "win10");
    assertEquals(parseDomainXml(applied.desiredXml).records.map((r) => r.driver), [
      "nvidia",
      null,
    ]);
    libvirt.define(applied.desiredXml);
    for (const now of [started, unbound]) {
      const again = vmOf(planHostdevs({ config: GPU_CONFIG, host: now, libvirt }), "win10");
      assertEquals([again.errors, again.changed], [[], false]);
    }
  });
});

Deno.test("planHostdevs() keeps hand-added hostdevs byte for byte and never duplicates them", async () => {
  await withPort([LINUX], (libvirt) => {
    const cfg = config(`  linux:
    devices:
      - name: nic
        match: { vendor_device_id: "8086:1533" }
      - name: nvme
        match: { class: nvme }
        allow_host_critical: true
`);
    const vm = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), "linux");
    assertEquals(vm.errors, []);
    assertEquals(vm.add.map((a) => a.address), ["0000:03:00.0"]);
    assertEquals(vm.hostdevs, ["0000:02:00.0", "0000:03:00.0"]);
    const handAdded = parseDomainXml(vm.currentXml).hostdevs[0];
    assertOk(handAdded !== undefined && !handAdded.owned);
    assertOk(vm.desiredXml.includes(handAdded.xml));
    const parsed = parseDomainXml(vm.desiredXml);
    assertEquals(parsed.hostdevs.filter((h) => h.address === "0000:02:00.0").length, 1);
    assertEquals(parsed.records.map((r) => r.address), ["0000:03:00.0"]);
    assertOk(vm.reasoning.some((r) => r.includes("hand-added hostdev: kept as written")));
    // Running domain: the change waits for the next power cycle.
    assertOk(vm.warnings.some((w) => w.code === "vm-running"));
  });
});

Deno.test("planHostdevs() removes owned hostdevs of a rule dropped from the config", async () => {
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    libvirt.define(applied.desiredXml);
    const empty = config("  win10:\n    devices: []\n");
    const vm = vmOf(planHostdevs({ config: empty, host: HOST, libvirt }), "win10");
    assertEquals(vm.remove, ["0000:01:00.0", "0000:01:00.1"]);
    assertEquals(vm.hostdevs, []);
    const parsed = parseDomainXml(vm.desiredXml);
    assertEquals([parsed.hostdevs, parsed.records], [[], []]);
  });
});

Deno.test("planHostdevs() says which rule is gone when its hostdevs leave the VM", async () => {
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(
      planHostdevs({ config: config("  win10:\n    devices: []\n"), host: HOST, libvirt }),
      "win10",
    );
    assertEquals(vm.remove, ["0000:01:00.0", "0000:01:00.1"]);
    assertEquals(vm.reasoning, [
      'Removed 0000:01:00.0, 0000:01:00.1: "win10" has no rule "gpu" any more',
    ]);
  });
});

Deno.test("planHostdevs() keeps the hostdevs of a renamed rule where they are and says their records change", async () => {
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10").desiredXml,
    );
    const before = parseDomainXml(libvirt.getPersistentXml("win10"));
    const renamed = config(`  win10:
    devices:
      - name: graphics
        match: { vendor_device_id: "10de:2684", driver: nvidia }
`);
    const vm = vmOf(planHostdevs({ config: renamed, host: HOST, libvirt }), "win10");
    // No hostdev removed and added again: the guest keeps its devices where they were.
    assertEquals([vm.add, vm.remove, vm.move], [[], [], []]);
    assertEquals(vm.keep, ["0000:01:00.0", "0000:01:00.1"]);
    assertOk(vm.changed);
    const after = parseDomainXml(vm.desiredXml);
    assertEquals(after.hostdevs, before.hostdevs);
    assertEquals(after.records.map((r) => [r.address, r.rule]), [
      ["0000:01:00.0", "graphics"],
      ["0000:01:00.1", "graphics"],
    ]);
    assertEquals(vm.reasoning.filter((r) => r.includes("recorded under")), [
      '0000:01:00.0, 0000:01:00.1: recorded under rule "gpu", now under rule "graphics" (the rule was renamed, or another rule takes them): the record says so, the hostdev stays',
    ]);
    libvirt.define(vm.desiredXml);
    const again = vmOf(planHostdevs({ config: renamed, host: HOST, libvirt }), "win10");
    assertEquals([again.changed, again.reasoning.filter((r) => r.includes("recorded under"))], [
      false,
      [],
    ]);
  });
});

Deno.test("planHostdevs() moves a card found at a new address with the same IDs and serial", async () => {
  const movedHost = host([
    ...baseDevices(),
    { ...GPU, bdf: "0000:0b:00.0", group: 7 },
    { ...GPU_AUDIO, bdf: "0000:0b:00.1", group: 7 },
  ]);
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    libvirt.define(applied.desiredXml);
    const vm = vmOf(planHostdevs({ config: GPU_CONFIG, host: movedHost, libvirt }), "win10");
    assertEquals(vm.errors, []);
    assertEquals(vm.move.find((m) => m.from === "0000:01:00.0"), {
      from: "0000:01:00.0",
      to: "0000:0b:00.0",
      rule: "gpu",
      evidence: "same IDs and serial",
    });
    assertEquals(vm.hostdevs, ["0000:0b:00.0", "0000:0b:00.1"]);
    assertEquals(parseDomainXml(vm.desiredXml).hostdevs.map((h) => h.address), [
      "0000:0b:00.0",
      "0000:0b:00.1",
    ]);
    assertOk(vm.reasoning.some((r) => r.startsWith("Moved from 0000:01:00.0 to 0000:0b:00.0")));
  });
});

Deno.test("planHostdevs() keeps a moved card's guest address", async () => {
  // Issue 16: the moved GPU stays where the guest saw it, not wherever libvirt puts a new one.
  const movedHost = host([
    ...baseDevices(),
    { ...GPU, bdf: "0000:0b:00.0", group: 7 },
    { ...GPU_AUDIO, bdf: "0000:0b:00.1", group: 7 },
  ]);
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    const source = "<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>";
    assertOk(applied.desiredXml.includes(source));
    const withGuest = applied.desiredXml.replace(
      /(bus='0x01' slot='0x00' function='0x0'\/>\s*<\/source>)/,
      "$1\n      <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>",
    );
    assertOk(withGuest !== applied.desiredXml);
    libvirt.define(withGuest);
    const vm = vmOf(planHostdevs({ config: GPU_CONFIG, host: movedHost, libvirt }), "win10");
    assertEquals(vm.move.map((m) => m.to), ["0000:0b:00.0", "0000:0b:00.1"]);
    const gpu = parseDomainXml(vm.desiredXml).hostdevs.find((h) => h.address === "0000:0b:00.0");
    assertEquals(gpu?.guestAddress?.address, "0000:00:07.0");
    // Issue 16: rewritten in place, in the same order, so the devices' diff is the two source
    // address lines and nothing else.
    assertEquals(parseDomainXml(vm.desiredXml).hostdevs.map((h) => h.address), [
      "0000:0b:00.0",
      "0000:0b:00.1",
    ]);
    const devices = (xml: string) => xml.slice(xml.indexOf("<devices>")).split("\n");
    const was = devices(vm.currentXml);
    const now = devices(vm.desiredXml);
    assertEquals(was.length, now.length);
    assertEquals(now.filter((line, i) => line !== was[i]).map((l) => l.trim()), [
      "<address domain='0x0000' bus='0x0b' slot='0x00' function='0x0'/>",
      "<address domain='0x0000' bus='0x0b' slot='0x00' function='0x1'/>",
    ]);
  });
});

Deno.test("planHostdevs() lays a moved card out anew when multifunction turns on with the move", async () => {
  const movedHost = host([
    ...baseDevices(),
    { ...GPU, bdf: "0000:0b:00.0", group: 7 },
    { ...GPU_AUDIO, bdf: "0000:0b:00.1", group: 7 },
  ]);
  const together = config(
    '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n        multifunction: true\n',
  );
  await withPort([WIN10], (libvirt) => {
    // As a QEMU libvirtd lays it out: each function at function 0 of a guest slot of its own.
    let slot = 6;
    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    libvirt.define(applied.desiredXml.replace(
      /<\/source>/g,
      () =>
        `</source>\n<address type='pci' domain='0x0000' bus='0x00' slot='0x0${++slot}' function='0x0'/>`,
    ));
    const vm = vmOf(planHostdevs({ config: together, host: movedHost, libvirt }), "win10");
    assertEquals(vm.move.map((m) => m.to), ["0000:0b:00.0", "0000:0b:00.1"]);
    // Function 0 marked multifunction, both functions in one guest slot.
    const laidOut = parseDomainXml(vm.desiredXml).hostdevs.map((h) => h.guestAddress);
    assertEquals(laidOut.map((g) => g?.multifunction), [true, false]);
    assertEquals(new Set(laidOut.map((g) => g?.address.slice(0, -2))).size, 1);
    // Applied, it is done: the next plan changes nothing.
    libvirt.define(vm.desiredXml);
    const again = vmOf(planHostdevs({ config: together, host: movedHost, libvirt }), "win10");
    assertEquals([again.changed, again.add, again.remove], [false, [], []]);
    // Turned off as the card moves back: libvirt's own guest addresses, done in one apply too.
    const back = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    assertEquals(back.move.map((m) => m.to), [GPU.bdf, GPU_AUDIO.bdf]);
    assertEquals(parseDomainXml(back.desiredXml).hostdevs.map((h) => h.guestAddress), [null, null]);
    libvirt.define(back.desiredXml);
    const last = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    assertEquals(last.changed, false);
  });
});

Deno.test("planHostdevs() rewrites a moved card's hostdevs where they are, before the ones after them", async () => {
  // Issue 16: the GPU's hostdevs come before the NIC's; after the move they still do, and the
  // diff of <devices> is their two source address lines, not a removal and an addition.
  const both = config(
    '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
      '      - name: nic\n        match: { vendor_device_id: "8086:1533" }\n',
  );
  const movedHost = host([
    ...baseDevices(),
    { ...GPU, bdf: "0000:0b:00.0", group: 7 },
    { ...GPU_AUDIO, bdf: "0000:0b:00.1", group: 7 },
  ]);
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: both, host: HOST, libvirt }), "win10");
    assertEquals(applied.errors, []);
    libvirt.define(applied.desiredXml);
    const vm = vmOf(planHostdevs({ config: both, host: movedHost, libvirt }), "win10");
    assertEquals(vm.move.map((m) => m.to), ["0000:0b:00.0", "0000:0b:00.1"]);
    assertEquals(parseDomainXml(vm.desiredXml).hostdevs.map((h) => h.address), [
      "0000:0b:00.0",
      "0000:0b:00.1",
      "0000:02:00.0",
    ]);
    const devices = (xml: string) => xml.slice(xml.indexOf("<devices>")).split("\n");
    const was = devices(vm.currentXml);
    const now = devices(vm.desiredXml);
    assertEquals(now.filter((line, i) => line !== was[i]).map((l) => l.trim()), [
      "<address domain='0x0000' bus='0x0b' slot='0x00' function='0x0'/>",
      "<address domain='0x0000' bus='0x0b' slot='0x00' function='0x1'/>",
    ]);
  });
});

Deno.test("planHostdevs() moves a dual-port NIC whose functions share IDs as one card", async () => {
  // Issue 16: two functions with identical IDs and no serial are one card moving, not drift.
  const port = (bdf: string) => i350Port(bdf, 9);
  const nicConfig = config(
    '  win10:\n    devices:\n      - name: nic\n        match: { vendor_device_id: "8086:1521" }\n        all: true\n',
  );
  const before = host([...baseDevices(), port("0000:05:00.0"), port("0000:05:00.1")]);
  const after = host([...baseDevices(), port("0000:06:00.0"), port("0000:06:00.1")]);
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: nicConfig, host: before, libvirt }), "win10");
    assertEquals(applied.errors, []);
    libvirt.define(applied.desiredXml);
    const vm = vmOf(planHostdevs({ config: nicConfig, host: after, libvirt }), "win10");
    assertEquals(vm.errors, []);
    assertEquals(vm.move.map((m) => [m.from, m.to]), [
      ["0000:05:00.0", "0000:06:00.0"],
      ["0000:05:00.1", "0000:06:00.1"],
    ]);
    assertEquals(vm.warnings.filter((w) => w.code === "drift"), []);
    assertEquals(vm.remove, []);
    // The `moved` code README promises, one per function, for --json.
    assertEquals(
      vm.warnings.filter((w) => w.code === "moved").map((w) => w.devices),
      [["0000:05:00.0", "0000:06:00.0"], ["0000:05:00.1", "0000:06:00.1"]],
    );
  });
});

Deno.test("planHostdevs() does not call a card moved while another device on the host has its IDs", async () => {
  // Two identical NICs with no serial, each a card of its own; the rule names one by address.
  const nic = i350Port;
  const rule = (address: string) =>
    config(
      "  win10:\n    devices:\n      - name: nic\n" +
        `        match: { vendor_device_id: "8086:1521", address: "${address}" }\n`,
    );
  const before = host([...baseDevices(), nic("0000:05:00.0", 5), nic("0000:06:00.0", 6)]);
  const after = host([...baseDevices(), nic("0000:0c:00.0", 9), nic("0000:0d:00.0", 10)]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: rule("0000:05:00.0"), host: before, libvirt }), "win10")
        .desiredXml,
    );
    // Which of the two is the recorded card is unknown: the old hostdev goes, the match is new.
    const vm = vmOf(planHostdevs({ config: rule("0000:0c:00.0"), host: after, libvirt }), "win10");
    assertEquals([vm.errors, vm.move], [[], []]);
    assertEquals([vm.remove, vm.add.map((a) => a.address)], [["0000:05:00.0"], ["0000:0c:00.0"]]);
    assertEquals(vm.warnings.filter((w) => w.code === "drift").map((w) => w.devices), [[
      "0000:05:00.0",
    ]]);
  });
});

Deno.test("planHostdevs() moves one port of a dual-port NIC to the same function of the moved card", async () => {
  // Each function in an IOMMU group of its own (ACS): the VM had port 1 alone, now takes both.
  const port = (bdf: string, group: number) => i350Port(bdf, group);
  const portOne = config(
    "  win10:\n    devices:\n      - name: nic\n" +
      '        match: { vendor_device_id: "8086:1521", address: "0000:05:00.1" }\n',
  );
  const both = config(
    '  win10:\n    devices:\n      - name: nic\n        match: { vendor_device_id: "8086:1521" }\n        all: true\n',
  );
  const before = host([...baseDevices(), port("0000:05:00.0", 9), port("0000:05:00.1", 10)]);
  const after = host([...baseDevices(), port("0000:06:00.0", 9), port("0000:06:00.1", 10)]);
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: portOne, host: before, libvirt }), "win10");
    assertEquals(applied.add.map((a) => a.address), ["0000:05:00.1"]);
    libvirt.define(applied.desiredXml);
    const vm = vmOf(planHostdevs({ config: both, host: after, libvirt }), "win10");
    assertEquals(vm.move.map((m) => [m.from, m.to, m.evidence]), [
      ["0000:05:00.1", "0000:06:00.1", "same IDs, function 1 of the only such card on the host"],
    ]);
    assertEquals(vm.add.map((a) => a.address), ["0000:06:00.0"]);
  });
});

Deno.test("planHostdevs() does not call two functions of one slot on a root bus a moved card", async () => {
  // The VM had port 1 of a card at 05:00; now the only ports with its IDs are two functions in
  // one slot of root bus 80: built into the chip, each a device of its own, no card that moved.
  const all = config(
    '  win10:\n    devices:\n      - name: nic\n        match: { vendor_device_id: "8086:1521" }\n        all: true\n',
  );
  const portOne = config(
    "  win10:\n    devices:\n      - name: nic\n" +
      '        match: { vendor_device_id: "8086:1521", address: "0000:05:00.1" }\n',
  );
  const before = host([
    ...baseDevices(),
    i350Port("0000:05:00.0", 9),
    i350Port("0000:05:00.1", 10),
  ]);
  const after = host([...baseDevices(), i350Port("0000:80:03.0", 9), i350Port("0000:80:03.1", 10)]);
  for (const d of after.devices.filter((d) => d.address.startsWith("0000:80:"))) d.rootBus = true;
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: portOne, host: before, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: all, host: after, libvirt }), "win10");
    assertEquals(vm.move, []);
    assertEquals([vm.remove, vm.add.map((a) => a.address)], [["0000:05:00.1"], [
      "0000:80:03.0",
      "0000:80:03.1",
    ]]);
  });
});

Deno.test("planHostdevs() moves two functions with one serial to two addresses, and only by their own rule", async () => {
  // A dual-port NIC whose functions carry the same device serial number, moved from bus 05 to 0c.
  const port = (bdf: string) => i350Port(bdf, 9, "a0-36-9f-ff-ff-12-34-56");
  const named = (name: string) =>
    config(
      `  win10:\n    devices:\n      - name: ${name}\n        match: { vendor_device_id: "8086:1521" }\n`,
    );
  const before = host([...baseDevices(), port("0000:05:00.0"), port("0000:05:00.1")]);
  const after = host([...baseDevices(), port("0000:0c:00.0"), port("0000:0c:00.1")]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: named("nic"), host: before, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: named("nic"), host: after, libvirt }), "win10");
    assertEquals([vm.errors, vm.add, vm.remove], [[], [], []]);
    assertEquals(vm.move.map((m) => [m.from, m.to]), [
      ["0000:05:00.0", "0000:0c:00.0"],
      ["0000:05:00.1", "0000:0c:00.1"],
    ]);
    // Taken by a rule of another name, the card is that rule's new device, not a move.
    const renamed = vmOf(planHostdevs({ config: named("uplink"), host: after, libvirt }), "win10");
    assertEquals(renamed.move, []);
    assertEquals([renamed.remove, renamed.add.map((a) => [a.address, a.rule])], [
      ["0000:05:00.0", "0000:05:00.1"],
      [["0000:0c:00.0", "uplink"], ["0000:0c:00.1", "uplink"]],
    ]);
  });
});

/** A Kioxia NVMe drive (1e0f:0009) with a device serial number, in IOMMU group `group`. */
function kioxia(bdf: string, group: number) {
  const nvme = { class: "0x010802", vendor: "0x1e0f", device: "0x0009", driver: "nvme" };
  return dev({ bdf, group, ...nvme, serial: "8c-e3-8e-ff-ff-10-20-30" });
}

/** win10 takes the Kioxia drive and the I350 NIC by IDs; `nic` is more of the NIC's rule. */
function diskAndNic(nic = "") {
  return config(
    '  win10:\n    devices:\n      - name: disk\n        match: { vendor_device_id: "1e0f:0009" }\n' +
      '      - name: nic\n        match: { vendor_device_id: "8086:1521" }\n        all: true\n' +
      nic,
  );
}

/**
 * A drive at 07:00.0 and a dual-port NIC with one serial at 08:00, then a new device at bus 04
 * shifting both by one bus: the drive now sits where the NIC's port 0 was.
 */
function renumbered() {
  const port = (bdf: string, group: number) => i350Port(bdf, group, "a0-36-9f-ff-ff-12-34-56");
  const at = (bus: number) => [
    kioxia(`0000:0${bus}:00.0`, 7),
    port(`0000:0${bus + 1}:00.0`, 8),
    port(`0000:0${bus + 1}:00.1`, 8),
  ];
  return { before: host([...baseDevices(), ...at(7)]), after: host([...baseDevices(), ...at(8)]) };
}

Deno.test("planHostdevs() follows each port of a dual-port NIC with one serial to its own function", async () => {
  // Port 0's old address now holds the drive: each card is followed from where it was, port 1
  // to port 1 (09:00.1), not to the first function with the serial (09:00.0).
  const { before, after } = renumbered();
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: diskAndNic(), host: before, libvirt }), "win10");
    assertEquals(applied.errors, []);
    libvirt.define(applied.desiredXml);
    const vm = vmOf(planHostdevs({ config: diskAndNic(), host: after, libvirt }), "win10");
    assertEquals(vm.errors, []);
    assertEquals(vm.move.map((m) => [m.from, m.to, m.evidence]), [
      ["0000:07:00.0", "0000:08:00.0", "same IDs and serial"],
      ["0000:08:00.0", "0000:09:00.0", "same IDs and serial"],
      ["0000:08:00.1", "0000:09:00.1", "same IDs and serial"],
    ]);
    assertEquals([vm.add, vm.remove], [[], []]);
  });
});

Deno.test("planHostdevs() keeps a moved multifunction card whole in its guest slot when a port's old address holds another device", async () => {
  // Port 0's old address holds the drive now: each card is followed from where it was.
  // Both ports take the slot the card had, at their function numbers, function 0 marked
  // multifunction.
  const { before, after } = renumbered();
  const together = diskAndNic("        multifunction: true\n");
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: together, host: before, libvirt }), "win10");
    assertEquals(applied.errors, []);
    libvirt.define(applied.desiredXml);
    const slot = (fn: number, multifunction = false) => ({
      address: `0000:00:10.${fn}`,
      multifunction,
    });
    const was = parseDomainXml(applied.desiredXml).hostdevs;
    assertEquals(was.map((h) => [h.address, h.guestAddress]), [
      ["0000:07:00.0", null],
      ["0000:08:00.0", slot(0, true)],
      ["0000:08:00.1", slot(1)],
    ]);
    const vm = vmOf(planHostdevs({ config: together, host: after, libvirt }), "win10");
    assertEquals(vm.errors, []);
    const nic = parseDomainXml(vm.desiredXml).hostdevs.filter((h) =>
      h.address.startsWith("0000:09")
    );
    assertEquals(nic.map((h) => [h.address, h.guestAddress]).sort(), [
      ["0000:09:00.0", slot(0, true)],
      ["0000:09:00.1", slot(1)],
    ]);
    libvirt.define(vm.desiredXml);
    const again = vmOf(planHostdevs({ config: together, host: after, libvirt }), "win10");
    assertEquals([again.changed, again.add, again.remove, again.move], [false, [], [], []]);
  });
});

Deno.test("planHostdevs() does not call a card moved while it is still where it was", async () => {
  // Two ports with one serial, each in an IOMMU group of its own; the rule names one by address.
  const port = (bdf: string, group: number) => i350Port(bdf, group, "a0-36-9f-ff-ff-12-34-56");
  const rule = (address: string) =>
    config(
      "  win10:\n    devices:\n      - name: nic\n" +
        `        match: { vendor_device_id: "8086:1521", address: "${address}" }\n`,
    );
  const nics = host([...baseDevices(), port("0000:05:00.0", 9), port("0000:05:00.1", 10)]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: rule("0000:05:00.0"), host: nics, libvirt }), "win10")
        .desiredXml,
    );
    // Port 0 is still there: the rule now naming port 1 swaps ports, it moves nothing.
    const vm = vmOf(planHostdevs({ config: rule("0000:05:00.1"), host: nics, libvirt }), "win10");
    assertEquals([vm.move, vm.remove, vm.add.map((a) => a.address)], [[], ["0000:05:00.0"], [
      "0000:05:00.1",
    ]]);
    assertEquals(vm.warnings.filter((w) => w.code === "moved" || w.code === "drift"), []);
  });
});

Deno.test("planHostdevs() never follows a card to an address the VM holds already by hand", async () => {
  const moved = host([
    ...baseDevices(),
    { ...GPU, bdf: "0000:0b:00.0", group: 7 },
    { ...GPU_AUDIO, bdf: "0000:0b:00.1", group: 7 },
  ]);
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    libvirt.define(
      applied.desiredXml.replace("</devices>", `${hostdevXml("0000:0b:00.0")}\n  </devices>`),
    );
    const vm = vmOf(planHostdevs({ config: GPU_CONFIG, host: moved, libvirt }), "win10");
    assertEquals(vm.errors, []);
    // The GPU's hostdev goes (the hand-added one passes the card already); its audio follows.
    assertEquals([vm.remove, vm.move.map((m) => [m.from, m.to]), vm.add], [
      ["0000:01:00.0"],
      [["0000:01:00.1", "0000:0b:00.1"]],
      [],
    ]);
    const hostdevs = parseDomainXml(vm.desiredXml).hostdevs.map((h) => [h.address, h.owned]);
    assertEquals(hostdevs, [["0000:0b:00.1", true], ["0000:0b:00.0", false]]);
  });
});

/** One of two identical GPUs without serial numbers (GPU and its audio) at `bus`, in `slot`. */
function identicalCard(bus: string, group: number, slot: string) {
  return [
    { ...GPU, bdf: `0000:${bus}:00.0`, group, serial: null, slot },
    { ...GPU_AUDIO, bdf: `0000:${bus}:00.1`, group, slot },
  ];
}

/** Two VMs, each rule naming its identical card by its slot. */
const BY_SLOT = config(`  win10:
    devices:
      - name: gpu1
        match: { vendor_device_id: "10de:2684", slot: PCIE1 }
  linux:
    devices:
      - name: gpu2
        match: { vendor_device_id: "10de:2684", slot: PCIE2 }
`);

Deno.test("planWorld() follows identical cards by their recorded slots after new hardware renumbers the buses", () => {
  // Two identical GPUs without serial numbers, each VM's rule naming its card's slot. A new NVMe
  // drive at bus 0a shifts both one bus up: PCIE1's card now sits where PCIE2's was recorded.
  const before = host([
    ...baseDevices(),
    ...identicalCard("0a", 10, "PCIE1"),
    ...identicalCard("0b", 11, "PCIE2"),
  ]);
  const nvme = dev({ bdf: "0000:0a:00.0", group: 12, class: "0x010802", driver: "nvme" });
  const after = host([
    ...baseDevices(),
    nvme,
    ...identicalCard("0b", 10, "PCIE1"),
    ...identicalCard("0c", 11, "PCIE2"),
  ]);
  const linux = domainXml("linux", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e02");
  const applied = planWorld({
    config: BY_SLOT,
    host: before,
    world: dataWorld({ win10: WIN10, linux }),
  });
  const records = (vm: VmPlan) =>
    parseDomainXml(vm.desiredXml).records.map((r) => [r.address, r.slot]);
  assertEquals(records(vmOf(applied, "linux")), [
    ["0000:0b:00.0", "PCIE2"],
    ["0000:0b:00.1", "PCIE2"],
  ]);
  const world = dataWorld({
    win10: vmOf(applied, "win10").desiredXml,
    linux: vmOf(applied, "linux").desiredXml,
  });
  const plan = planWorld({ config: BY_SLOT, host: after, world });
  // The audio function has no subsystem IDs to compare.
  const evidence = (slot: string, ids = "same IDs and subsystem") =>
    `${ids} in the recorded slot ${slot}`;
  const moves = (vm: VmPlan) => vm.move.map((m) => [m.from, m.to, m.evidence]);
  // linux's recorded address holds win10's card now: not "still there", its own card moved on.
  assertEquals(moves(vmOf(plan, "linux")), [
    ["0000:0b:00.0", "0000:0c:00.0", evidence("PCIE2")],
    ["0000:0b:00.1", "0000:0c:00.1", evidence("PCIE2", "same IDs")],
  ]);
  // win10's card is the one at linux's old address: moved there, not removed and added again.
  assertEquals(moves(vmOf(plan, "win10")), [
    ["0000:0a:00.0", "0000:0b:00.0", evidence("PCIE1")],
    ["0000:0a:00.1", "0000:0b:00.1", evidence("PCIE1", "same IDs")],
  ]);
  for (const vm of plan.vms) {
    assertEquals([vm.errors, vm.add, vm.remove], [[], [], []]);
    assertEquals(vm.warnings.filter((w) => w.code === "drift"), []);
  }
  assertEquals(records(vmOf(plan, "linux")), [
    ["0000:0c:00.0", "PCIE2"],
    ["0000:0c:00.1", "PCIE2"],
  ]);
});

Deno.test("planWorld() says why a record written before slots were recorded gains one", () => {
  const slotted = host([...baseDevices(), { ...GPU, slot: "4" }, { ...GPU_AUDIO, slot: "4" }]);
  const applied = vmOf(
    planWorld({ config: GPU_CONFIG, host: HOST, world: dataWorld({ win10: WIN10 }) }),
    "win10",
  );
  // The firmware names no slots on HOST: the records hold none, as older records do.
  assertEquals(parseDomainXml(applied.desiredXml).records.map((r) => r.slot), [
    undefined,
    undefined,
  ]);
  const vm = vmOf(
    planWorld({
      config: GPU_CONFIG,
      host: slotted,
      world: dataWorld({ win10: applied.desiredXml }),
    }),
    "win10",
  );
  assertEquals([vm.changed, vm.add, vm.remove, vm.move], [true, [], [], []]);
  assertEquals(vm.warnings.filter((w) => w.code === "drift"), []);
  assertEquals(vm.reasoning.filter((r) => r.includes("added to its record")), [
    '0000:01:00.0: slot 4 added to its record (rule "gpu"), which the start guard compares from then on',
    '0000:01:00.1: slot 4 added to its record (rule "gpu"), which the start guard compares from then on',
  ]);
});

Deno.test("planWorld() writes a newline in a slot name gaining a record escaped, on the reasoning's one line", () => {
  // A captured tree's slot name is a file name: a newline there started a "why" line of its own.
  const slot = "4\n    - Group 9: nothing to see";
  const slotted = host([...baseDevices(), { ...GPU, slot }, { ...GPU_AUDIO, slot }]);
  const applied = vmOf(
    planWorld({ config: GPU_CONFIG, host: HOST, world: dataWorld({ win10: WIN10 }) }),
    "win10",
  );
  const vm = vmOf(
    planWorld({
      config: GPU_CONFIG,
      host: slotted,
      world: dataWorld({ win10: applied.desiredXml }),
    }),
    "win10",
  );
  assertEquals(vm.reasoning.filter((r) => r.includes("added to its record")), [
    '0000:01:00.0: slot 4\\u000a    - Group 9: nothing to see added to its record (rule "gpu"), which the start guard compares from then on',
    '0000:01:00.1: slot 4\\u000a    - Group 9: nothing to see added to its record (rule "gpu"), which the start guard compares from then on',
  ]);
});

Deno.test("planWorld() writes a newline in a recorded driver name escaped, on the reasoning's one line", () => {
  // The recorded driver comes back from the domain's metadata (and a captured tree's driver is a
  // file name): a newline in it started a "why" line of its own under the VM.
  const driver = "nvidia\n    - Group 9: nothing to see";
  const named = host([...baseDevices(), { ...GPU, driver }, { ...GPU_AUDIO, driver }]);
  const rules = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684" }
`);
  const applied = vmOf(
    planWorld({ config: rules, host: named, world: dataWorld({ win10: WIN10 }) }),
    "win10",
  );
  const vm = vmOf(
    planWorld({ config: rules, host: HOST, world: dataWorld({ win10: applied.desiredXml }) }),
    "win10",
  );
  const rebound = vm.reasoning.filter((r) => r.includes("only its record changes"));
  assertEquals(rebound.length, 2, vm.reasoning.join("\n"));
  for (const line of rebound) {
    assertOk(line.includes("nvidia\\u000a    - Group 9: nothing to see"), line);
  }
});

Deno.test("planWorld() keeps the recorded driver of a card on vfio-pci whose slot the firmware renamed", () => {
  // The record's slot aside, it is still the card's: its driver (the rule's) must stay recorded,
  // or the next plan finds the rule matching nothing.
  const cfg = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
`);
  const named = (slot: string | null, driver?: string) => [
    { ...GPU, serial: null, slot, ...(driver ? { driver, modules: ["nvidia"] } : {}) },
    { ...GPU_AUDIO, slot, ...(driver ? { driver, modules: ["snd_hda_intel"] } : {}) },
  ];
  const first = planWorld({
    config: cfg,
    host: host([...baseDevices(), ...named("PCIE1")]),
    world: dataWorld({ win10: WIN10 }),
  });
  const renamed = host([...baseDevices(), ...named("1", "vfio-pci")]);
  let xml = vmOf(first, "win10").desiredXml;
  for (const round of [1, 2]) {
    const vm = vmOf(
      planWorld({ config: cfg, host: renamed, world: dataWorld({ win10: xml }) }),
      "win10",
    );
    assertEquals([vm.errors, vm.add, vm.remove], [[], [], []], `round ${round}`);
    assertEquals(parseDomainXml(vm.desiredXml).records.map((r) => [r.slot, r.driver]), [
      ["1", "nvidia"],
      ["1", "snd_hda_intel"],
    ]);
    xml = vm.desiredXml;
  }
});

Deno.test("planWorld() does not call identical cards whose slots were renamed moved", () => {
  // Neither card moved; the firmware names the slots 1 and 2 now. Each rule names the old slot,
  // so it matches nothing: refused, and no "moved" evidence (two such devices are on the host).
  const linux = domainXml("linux", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e02");
  const applied = planWorld({
    config: BY_SLOT,
    host: host([
      ...baseDevices(),
      ...identicalCard("0a", 10, "PCIE1"),
      ...identicalCard("0b", 11, "PCIE2"),
    ]),
    world: dataWorld({ win10: WIN10, linux }),
  });
  const plan = planWorld({
    config: BY_SLOT,
    host: host([
      ...baseDevices(),
      ...identicalCard("0a", 10, "1"),
      ...identicalCard("0b", 11, "2"),
    ]),
    world: dataWorld({
      win10: vmOf(applied, "win10").desiredXml,
      linux: vmOf(applied, "linux").desiredXml,
    }),
  });
  for (const vm of plan.vms) {
    assertEquals(vm.move, [], vm.name);
    assertEquals(vm.errors.some((e) => e.code === "no-match"), true, vm.name);
    assertEquals(vm.errors.some((e) => /the only such device/.test(e.message)), false, vm.name);
  }
});

Deno.test("planHostdevs() keeps a hostdev whose address holds another card its rule matches, saying so", async () => {
  // The same model with another serial: a replaced card in the same slot.
  const replaced = host([
    ...baseDevices(),
    { ...GPU, serial: "00-11-22-ff-ff-33-44-66" },
    GPU_AUDIO,
  ]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: GPU_CONFIG, host: replaced, libvirt }), "win10");
    assertEquals([vm.errors, vm.add, vm.remove, vm.move], [[], [], [], []]);
    const drift = vm.warnings.filter((w) => w.code === "drift");
    assertEquals(drift.map((w) => w.devices), [[GPU.bdf]]);
    // Both sides say what tells them apart, and the rule that recorded it.
    assertEquals(
      drift[0]!.message,
      'Hostdev 0000:01:00.0 of "win10" (rule "gpu") was recorded as 10de:2684 (subsystem 1043:88e2, class 030000, serial 00-11-22-ff-ff-33-44-55) but the address now holds 10de:2684 (subsystem 1043:88e2, class 030000, serial 00-11-22-ff-ff-33-44-66): rule "gpu" matches the new device, so it stays and its record is updated',
    );
    const records = parseDomainXml(vm.desiredXml).records;
    assertEquals(records.map((r) => [r.address, r.serial]), [
      [GPU.bdf, "00-11-22-ff-ff-33-44-66"],
      [GPU_AUDIO.bdf, null],
    ]);
  });
});

Deno.test("planHostdevs() reports drift when an owned address now holds another device", async () => {
  const swapped = host([
    ...baseDevices(),
    dev({ bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x1002", device: "0x73df" }),
  ]);
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    libvirt.define(applied.desiredXml);
    // The rule no longer matches: refused, and the stale hostdev is reported, not kept silently.
    const refused = vmOf(planHostdevs({ config: GPU_CONFIG, host: swapped, libvirt }), "win10");
    // Issue 13: the stale hostdev is a refusal of its own, listed before the rule's.
    assertEquals(refused.errors.map((e) => e.code), ["drift", "drift", "no-match"]);
    const drift = refused.errors.find((w) => w.code === "drift");
    assertOk(drift);
    assertMatch(
      drift.message,
      /\(rule "gpu"\) was recorded as 10de:2684 \(subsystem 1043:88e2, class 030000, serial 00-11-22-ff-ff-33-44-55\)/,
    );
    assertMatch(drift.message, /now holds 1002:73df \(class 030000\)/);
    assertEquals(refused.desiredXml, refused.currentXml);
    assertEquals(refused.changed, false);
    // Issue 13 item 4: the stale hostdevs are removed even so, and nothing else changes.
    assertEquals(refused.repair?.remove, ["0000:01:00.0", "0000:01:00.1"]);
    assertMatch(
      drift.message,
      /the repair removes it even while the other refusals of "win10" stand/,
    );
    const repaired = parseDomainXml(refused.repair?.desiredXml ?? "");
    assertEquals([repaired.hostdevs, repaired.records], [[], []]);
    // With the rule gone, the plan removes the stale hostdevs and says why.
    const empty = config("  win10:\n    devices: []\n");
    const fixed = vmOf(planHostdevs({ config: empty, host: swapped, libvirt }), "win10");
    assertEquals(fixed.remove, ["0000:01:00.0", "0000:01:00.1"]);
    assertEquals(
      fixed.warnings.filter((w) => w.code === "drift").map((w) => w.devices),
      [["0000:01:00.0"], ["0000:01:00.1"]],
    );
  });
});

Deno.test("planHostdevs() repairs a refused VM by removing only its stale hostdev, keeping the rest", async () => {
  // The GPU is still there, its audio function's address now holds a NIC; a second rule is
  // refused (matches nothing): the repair removes the audio hostdev alone, adds nothing.
  const audioGone = host([
    ...baseDevices().filter((d) => d.bdf !== GPU_AUDIO.bdf),
    GPU,
    dev({ bdf: GPU_AUDIO.bdf, group: 1, class: "0x020000", vendor: "0x8086", device: "0x1539" }),
  ]);
  const withTypo = config(
    '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
      '      - name: usb\n        match: { vendor_device_id: "1234:5678" }\n',
  );
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: withTypo, host: audioGone, libvirt }), "win10");
    assertEquals(vm.errors.map((e) => e.code)[0], "drift");
    assertOk(vm.errors.some((e) => e.code === "no-match"));
    assertEquals(vm.changed, false);
    assertEquals(vm.repair?.remove, [GPU_AUDIO.bdf]);
    const repaired = parseDomainXml(vm.repair?.desiredXml ?? "");
    assertEquals(repaired.hostdevs.map((h) => [h.address, h.owned]), [[GPU.bdf, true]]);
    assertEquals(repaired.records.map((r) => r.address), [GPU.bdf]);
    // The GPU's hostdev is byte for byte what it was.
    const gpu = parseDomainXml(vm.currentXml).hostdevs.find((h) => h.address === GPU.bdf);
    assertOk(gpu !== undefined && vm.repair!.desiredXml.includes(gpu.xml));
    // A refused VM without stale hostdevs has no repair.
    const clean = vmOf(planHostdevs({ config: withTypo, host: HOST, libvirt }), "win10");
    assertEquals([clean.errors.map((e) => e.code), clean.repair], [["no-match"], undefined]);
  });
});

Deno.test("planHostdevs() matches driver: for a hand-added device libvirt moved to vfio-pci by its kernel modules, in its own VM only", async () => {
  // The NVMe drive is on vfio-pci (libvirt detached it for a guest) and lspci lists "nvme" as its
  // kernel module; no identity was recorded, because the hostdev was added by hand.
  const vfioNvme = host(
    baseDevices().map((d) =>
      d.bdf === "0000:03:00.0" ? { ...d, driver: "vfio-pci", modules: ["nvme"] } : d
    ),
  );
  const handAdded = `
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source>
          <address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>
        </source>
      </hostdev>`;
  const rule = config(
    '  win10:\n    devices:\n      - name: disk\n        match: { driver: nvme, class: "0108" }\n',
  );
  await withPort(
    [domainXml("win10", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01", handAdded)],
    (libvirt) => {
      const vm = vmOf(planHostdevs({ config: rule, host: vfioNvme, libvirt }), "win10");
      assertEquals(vm.errors, []);
      assertEquals([vm.add, vm.remove, vm.keep], [[], [], ["0000:03:00.0"]]);
      assertEquals(vm.changed, false);
    },
  );
  // Not in the VM's definition: a vfio-pci device is not taken for driver: nvme on a guess.
  await withPort([WIN10], (libvirt) => {
    const vm = vmOf(planHostdevs({ config: rule, host: vfioNvme, libvirt }), "win10");
    assertEquals(vm.errors.map((e) => e.code), ["no-match"]);
  });
});

Deno.test("planHostdevs() rewrites an owned hostdev whose settings changed", async () => {
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    libvirt.define(applied.desiredXml);
    const unmanaged = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
        managed: false
`);
    const vm = vmOf(planHostdevs({ config: unmanaged, host: HOST, libvirt }), "win10");
    assertEquals(vm.remove, ["0000:01:00.0", "0000:01:00.1"]);
    assertEquals(vm.add.map((a) => [a.address, a.spec.managed]), [
      ["0000:01:00.0", false],
      ["0000:01:00.1", false],
    ]);
    assertEquals(parseDomainXml(vm.desiredXml).hostdevs.map((h) => h.managed), [false, false]);
    // Moved at the same time: the hostdevs follow the card and take the new settings.
    const moved = host([
      ...baseDevices(),
      { ...GPU, bdf: "0000:0b:00.0", group: 7 },
      { ...GPU_AUDIO, bdf: "0000:0b:00.1", group: 7 },
    ]);
    const both = vmOf(planHostdevs({ config: unmanaged, host: moved, libvirt }), "win10");
    assertEquals(both.move.map((m) => m.to), ["0000:0b:00.0", "0000:0b:00.1"]);
    assertEquals(parseDomainXml(both.desiredXml).hostdevs.map((h) => [h.address, h.managed]), [
      ["0000:0b:00.0", false],
      ["0000:0b:00.1", false],
    ]);
  });
});

Deno.test("planHostdevs() keeps the guest address of an owned hostdev rewritten for its settings", async () => {
  // A changed boot_order or rom must not move the GPU the guest sees to a new guest slot (a new
  // driver install), as a moved card keeps its guest address.
  const bootable = domainXml("win10", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01", DISK_BOOT);
  await withPort([bootable], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    // As a QEMU libvirtd stores it: each hostdev at a guest slot of its own.
    const placed = applied.desiredXml
      .replace(
        /(bus='0x01' slot='0x00' function='0x0'\/>\s*<\/source>)/,
        "$1\n      <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>",
      )
      .replace(
        /(bus='0x01' slot='0x00' function='0x1'\/>\s*<\/source>)/,
        "$1\n      <address type='pci' domain='0x0000' bus='0x00' slot='0x08' function='0x0'/>",
      );
    libvirt.define(placed);
    const guests = (xml: string) =>
      parseDomainXml(xml).hostdevs.map((h) => [h.address, h.guestAddress?.address ?? null]);
    assertEquals(guests(libvirt.getPersistentXml("win10", { secure: true })), [
      ["0000:01:00.0", "0000:00:07.0"],
      ["0000:01:00.1", "0000:00:08.0"],
    ]);
    const booting = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
        boot_order: 2
        rom: { bar: "off" }
`);
    const vm = vmOf(planHostdevs({ config: booting, host: HOST, libvirt }), "win10");
    assertEquals(vm.errors, []);
    assertEquals(vm.remove, ["0000:01:00.0"]);
    const gpu = parseDomainXml(vm.desiredXml).hostdevs.find((h) => h.address === "0000:01:00.0");
    assertEquals([gpu?.bootOrder, gpu?.romBar], [2, "off"]);
    assertEquals(guests(vm.desiredXml).sort(), [
      ["0000:01:00.0", "0000:00:07.0"],
      ["0000:01:00.1", "0000:00:08.0"],
    ]);
    libvirt.define(vm.desiredXml);
    const again = vmOf(planHostdevs({ config: booting, host: HOST, libvirt }), "win10");
    assertEquals(again.changed, false);
  });
});

Deno.test("planHostdevs() rewrites an owned hostdev for its settings where it is, keeping the user's own children", async () => {
  const bootable = domainXml("win10", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01", DISK_BOOT);
  await withPort([bootable], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    // Set by hand on the applied GPU: a driver, an alias, an ACPI index (the guest's NIC name).
    const own = applied.desiredXml
      .replace(
        /(<hostdev mode='subsystem' type='pci' managed='yes'>)(\s*<source>\s*<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'\/>\s*<\/source>)/,
        "$1\n      <driver name='vfio'/>$2\n      <alias name='ua-gpu'/>\n      <acpi index='7'/>",
      );
    assertOk(own !== applied.desiredXml, "the test sets them");
    libvirt.define(own);
    const current = libvirt.getPersistentXml("win10", { secure: true });
    const booting = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
        boot_order: 2
`);
    const vm = vmOf(planHostdevs({ config: booting, host: HOST, libvirt }), "win10");
    assertEquals(vm.errors, []);
    assertEquals(vm.currentXml, current);
    // One line more, in the same place: nothing the user wrote is dropped or moved.
    const lines = (xml: string) => xml.split("\n");
    const added = lines(vm.desiredXml).filter((l) => !lines(current).includes(l));
    assertEquals(added.map((l) => l.trim()), ["<boot order='2'/>"]);
    assertEquals(lines(vm.desiredXml).length, lines(current).length + 1);
    libvirt.define(vm.desiredXml);
    const defined = libvirt.getPersistentXml("win10", { secure: true });
    for (const kept of ["<driver name='vfio'/>", "<alias name='ua-gpu'/>", "<acpi index='7'/>"]) {
      assertOk(defined.includes(kept), `${kept} kept`);
    }
    const again = vmOf(planHostdevs({ config: booting, host: HOST, libvirt }), "win10");
    assertEquals(again.changed, false);
  });
});

Deno.test("planHostdevs() follows a moved card whose settings changed too where it is, keeping the user's own children", async () => {
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    const own = applied.desiredXml.replace(
      /(bus='0x01' slot='0x00' function='0x0'\/>\s*<\/source>)/,
      "$1\n      <alias name='ua-gpu'/>\n      <acpi index='7'/>\n" +
        "      <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>",
    );
    assertOk(own !== applied.desiredXml, "the test sets them");
    libvirt.define(own);
    const current = libvirt.getPersistentXml("win10", { secure: true });
    const unmanaged = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
        managed: false
`);
    const moved = host([
      ...baseDevices(),
      { ...GPU, bdf: "0000:0b:00.0", group: 7 },
      { ...GPU_AUDIO, bdf: "0000:0b:00.1", group: 7 },
    ]);
    const vm = vmOf(planHostdevs({ config: unmanaged, host: moved, libvirt }), "win10");
    assertEquals(vm.move.map((m) => m.to), ["0000:0b:00.0", "0000:0b:00.1"]);
    const hostdevs = parseDomainXml(vm.desiredXml).hostdevs;
    // Same places, new addresses and settings, and the GPU's alias, ACPI index and guest slot.
    assertEquals(hostdevs.map((h) => [h.address, h.managed, h.owned]), [
      ["0000:0b:00.0", false, true],
      ["0000:0b:00.1", false, true],
    ]);
    assertEquals(hostdevs[0]?.guestAddress?.address, "0000:00:07.0");
    assertMatch(hostdevs[0]!.xml, /<alias name='ua-gpu'\/>\s*<acpi index='7'\/>/);
    assertEquals(vm.desiredXml.split("\n").length, current.split("\n").length);
    libvirt.define(vm.desiredXml);
    const again = vmOf(planHostdevs({ config: unmanaged, host: moved, libvirt }), "win10");
    assertEquals(again.changed, false);
  });
});

const DISK_BOOT = `
      <disk type='file' device='disk'>
        <source file='/var/lib/libvirt/images/boot.qcow2'/>
        <target dev='vdb' bus='virtio'/>
        <boot order='1'/>
      </disk>`;

Deno.test("planHostdevs() gives boot_order to the rule's first matched device only", async () => {
  const cfg = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_id: "10de" }
        boot_order: 2
`);
  const bootable = domainXml("win10", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01", DISK_BOOT);
  await withPort([bootable], (libvirt) => {
    const vm = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), "win10");
    assertEquals(vm.errors, []);
    // Boot order must be unique in a domain: group members and further matches get none.
    assertEquals(vm.add.map((a) => [a.address, a.spec.bootOrder]), [
      ["0000:01:00.0", 2],
      ["0000:01:00.1", undefined],
    ]);
    assertMatch(vm.desiredXml, /<boot order='2'\/>/);
    libvirt.define(vm.desiredXml);
    const again = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), "win10");
    assertEquals(again.changed, false);
  });
});

Deno.test("planHostdevs() refuses boot_order for a domain that boots by <os><boot dev>", async () => {
  const cfg = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684" }
        boot_order: 1
`);
  await withPort([WIN10], (libvirt) => {
    const vm = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), "win10");
    assertMatch(vm.currentXml, /<boot dev='hd'\/>/);
    assertEquals(vm.errors.map((e) => e.code), ["boot-order-conflict"]);
    assertEquals(
      vm.errors[0]!.message,
      `Rule "gpu" sets boot_order but VM "win10" boots by <os><boot dev=...>, which libvirt refuses to combine: replace the <boot dev> lines with <boot order='N'/> on its disk, or drop boot_order`,
    );
    assertEquals(vm.desiredXml, vm.currentXml);
  });
});

/** A GPU rule and an I350 port rule for win10, with the boot orders given (none: omitted). */
function twoRuleConfig(gpu: number | null, nic: number | null) {
  const order = (n: number | null) => n === null ? "" : `        boot_order: ${n}\n`;
  return config(
    `  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n${
      order(gpu)
    }      - name: nic\n        match: { vendor_device_id: "8086:1521" }\n${order(nic)}`,
  );
}

const NIC_HOST = host([...baseDevices(), GPU, GPU_AUDIO, i350Port("0000:05:00.0", 9)]);

Deno.test("planHostdevs() refuses a boot_order another device of the VM has, which libvirt rejects at define", async () => {
  const bootable = domainXml("win10", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01", DISK_BOOT);
  await withPort([bootable], (libvirt) => {
    // The premise: libvirt refuses the definition such a plan would make.
    const fine = vmOf(
      planHostdevs({ config: twoRuleConfig(2, null), host: NIC_HOST, libvirt }),
      "win10",
    );
    assertEquals(fine.errors, []);
    assertThrows(
      () => libvirt.define(fine.desiredXml.replace("<boot order='2'/>", "<boot order='1'/>")),
      Error,
      "boot order '1' used for more than one device",
    );

    // The disk's order, at the rule's line.
    const disk = vmOf(
      planHostdevs({ config: twoRuleConfig(1, null), host: NIC_HOST, libvirt }),
      "win10",
    );
    assertEquals(disk.errors.map((e) => [e.code, e.rule, e.location]), [
      ["boot-order-conflict", "gpu", "passthrough_config.yaml:5:9"],
    ]);
    assertEquals(
      disk.errors[0]!.message,
      `Rule "gpu" sets boot_order 1, which a <disk> of VM "win10" has too, and libvirt refuses one boot order on two devices: give the rule a boot_order no other device has`,
    );
    assertEquals(disk.desiredXml, disk.currentXml);

    // Two rules of the VM with one order: the second is refused.
    const twice = vmOf(
      planHostdevs({ config: twoRuleConfig(3, 3), host: NIC_HOST, libvirt }),
      "win10",
    );
    assertEquals(twice.errors.map((e) => [e.code, e.rule]), [["boot-order-conflict", "nic"]]);
    assertMatch(twice.errors[0]!.message, /which rule "gpu" of VM "win10" has too/);
  });
});

Deno.test("planHostdevs() lets rules trade the boot orders of hostdevs it wrote, and keeps a hand-written one's", async () => {
  const bootable = domainXml("win10", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01", DISK_BOOT);
  await withPort([bootable], (libvirt) => {
    const first = vmOf(
      planHostdevs({ config: twoRuleConfig(2, 3), host: NIC_HOST, libvirt }),
      "win10",
    );
    assertEquals(first.errors, []);
    libvirt.define(first.desiredXml);
    const swapped = vmOf(
      planHostdevs({ config: twoRuleConfig(3, 2), host: NIC_HOST, libvirt }),
      "win10",
    );
    assertEquals(swapped.errors, []);
    libvirt.define(swapped.desiredXml);
  });
  // The GPU written by hand with order 1: kept as written, so the rule writes no order of its own.
  const hand = hostdevXml("0000:01:00.0").replace(
    "</source>",
    "</source>\n        <boot order='1'/>",
  );
  const handWritten = domainXml("win10", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01", hand);
  await withPort([handWritten], (libvirt) => {
    const vm = vmOf(
      planHostdevs({ config: twoRuleConfig(1, null), host: NIC_HOST, libvirt }),
      "win10",
    );
    assertEquals(vm.errors, []);
    libvirt.define(vm.desiredXml);
  });
});

Deno.test("planHostdevs() lets boot_order be when the rule's first device is kept as a <disk type='nvme'> or a hand-added hostdev", async () => {
  const nvmeRule = config(
    `  win10:\n    devices:\n      - name: nvme\n        match: { vendor_device_id: "144d:a808" }\n        boot_order: 1\n`,
  );
  // The NVMe drive given by hand as a disk that boots first: kept as written, and the rule
  // writes no order of its own, so its order 1 is no other device's.
  const nvme = nvmeDiskXml("03", "vdb").replace("</disk>", "  <boot order='1'/>\n    </disk>");
  await withPort([domainXml("win10", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01", nvme)], (libvirt) => {
    const vm = vmOf(planHostdevs({ config: nvmeRule, host: HOST, libvirt }), "win10");
    assertEquals(vm.errors, []);
    libvirt.define(vm.desiredXml);
  });
  // The GPU added by hand to a VM booting by <os><boot dev>: the rule writes no boot order there.
  const gpuRule = config(
    `  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n        boot_order: 1\n`,
  );
  const hand = domainXml(
    "win10",
    "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01",
    hostdevXml("0000:01:00.0"),
  );
  await withPort([hand], (libvirt) => {
    const vm = vmOf(planHostdevs({ config: gpuRule, host: HOST, libvirt }), "win10");
    assertMatch(vm.currentXml, /<boot dev='hd'\/>/);
    assertEquals(vm.errors, []);
    libvirt.define(vm.desiredXml);
  });
});

const noDaemon = libvirtdUnavailable();

Deno.test({
  name: "planHostdevs() is idempotent on a real QEMU libvirtd that adds guest addresses" +
    (noDaemon === null ? "" : ` (skipped: ${noDaemon})`),
  ignore: noDaemon !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    using libvirt = openLibvirtPort(daemon.uri);
    const name = `pt-plan-${crypto.randomUUID().slice(0, 8)}`;
    // Definitions can outlive the daemon when its state is not isolated: undefine at the end.
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
    libvirt.define(`<domain type='qemu'>
  <name>${name}</name>
  <memory unit='KiB'>131072</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/${name}.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
    </disk>
  </devices>
</domain>
`);
    const cfg = config(`  ${name}:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
        multifunction: true
        boot_order: 2
        rom: { bar: "on" }
`);
    const first = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), name);
    assertEquals(first.errors, []);
    libvirt.define(first.desiredXml);
    const stored = libvirt.getPersistentXml(name);
    // The QEMU driver keeps our guest slot and multifunction flag.
    assertMatch(stored, /slot='0x10' function='0x0' multifunction='on'/);
    const second = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), name);
    assertEquals([second.changed, second.add, second.remove], [false, [], []]);
    assertEquals(second.keep, ["0000:01:00.0", "0000:01:00.1"]);
  },
});

Deno.test({
  name:
    "planHostdevs() keeps what a real QEMU libvirtd and the user gave a hostdev rewritten for its settings" +
    (noDaemon === null ? "" : ` (skipped: ${noDaemon})`),
  ignore: noDaemon !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    using libvirt = openLibvirtPort(daemon.uri);
    const name = `pt-rewrite-${crypto.randomUUID().slice(0, 8)}`;
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
    libvirt.define(`<domain type='qemu'>
  <name>${name}</name>
  <memory unit='KiB'>131072</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/${name}.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
    </disk>
  </devices>
</domain>
`);
    const rule = (more: string) =>
      config(`  ${name}:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
${more}`);
    libvirt.define(vmOf(planHostdevs({ config: rule(""), host: HOST, libvirt }), name).desiredXml);
    // The QEMU driver gave each hostdev a guest slot; the user puts the GPU at slot 9 (below it,
    // free slots libvirt would fill first) and gives it an alias.
    const placed = libvirt.getPersistentXml(name, { secure: true });
    const guests = (xml: string) =>
      parseDomainXml(xml).hostdevs.map((h) => [h.address, h.guestAddress?.address ?? null]);
    const gpu = /(bus='0x01' slot='0x00' function='0x0'\/>\s*<\/source>\s*)<address [^>]*\/>/;
    assertMatch(placed, gpu);
    libvirt.define(placed.replace(
      gpu,
      "$1<alias name='ua-gpu'/>\n      <address type='pci' domain='0x0000' bus='0x00' slot='0x09' function='0x0'/>",
    ));
    const slots = guests(libvirt.getPersistentXml(name, { secure: true }));
    assertEquals(slots[0], ["0000:01:00.0", "0000:00:09.0"]);
    const booting = rule("        boot_order: 2\n");
    const vm = vmOf(planHostdevs({ config: booting, host: HOST, libvirt }), name);
    assertEquals([vm.errors, vm.remove], [[], ["0000:01:00.0"]]);
    libvirt.define(vm.desiredXml);
    const stored = libvirt.getPersistentXml(name, { secure: true });
    assertEquals(guests(stored), slots);
    assertMatch(stored, /<boot order='2'\/>\s*<alias name='ua-gpu'\/>/);
    const again = vmOf(planHostdevs({ config: booting, host: HOST, libvirt }), name);
    assertEquals(again.changed, false);
  },
});

const BLANK_IDS = { subsystem_vendor: null, subsystem_device: null, revision: null, driver: null };
const ONE_GPU = topologyFromDescription({
  devices: [
    { bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x10de", device: "0x2684" },
  ].map((d) => ({ ...d, ...BLANK_IDS })),
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
    host: ONE_GPU,
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

Deno.test("planWorld() warns that a card moved away from a running VM cannot start in the other one before it stops", () => {
  // win10 got the GPU (and its audio) by the plan; the config now gives it to linux.
  const applied = planWorld({ config: GPU_CONFIG, host: HOST, world: dataWorld({ win10: WIN10 }) });
  const win10 = vmOf(applied, "win10").desiredXml;
  const moved = config(`  win10:
    devices: []
  linux:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
`);
  const linux = domainXml("linux", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e02");
  const planWith = (holder: DataDomain) =>
    planWorld({ config: moved, host: HOST, world: dataWorld({ win10: holder, linux }) });
  const heldWarnings = (plan: Plan) =>
    vmOf(plan, "linux").warnings.filter((w) => w.code === "held-by-running-vm");

  const running = planWith({ xml: win10, active: true });
  assertEquals(vmOf(running, "win10").remove, ["0000:01:00.0", "0000:01:00.1"]);
  assertEquals(vmOf(running, "linux").add.map((a) => a.address), ["0000:01:00.0", "0000:01:00.1"]);
  const [warning] = heldWarnings(running);
  assertEquals([warning?.vm, warning?.devices], ["linux", ["0000:01:00.0", "0000:01:00.1"]]);
  assertMatch(warning!.message, /running VM "win10" holds them until it is powered off: "linux"/);
  assertMatch(warning!.message, /apply --live unplugs them from "win10"/);

  // Shut off, or already unplugged from the running guest: nothing holds the card.
  assertEquals(heldWarnings(planWith(win10)), []);
  assertEquals(heldWarnings(planWith({ xml: win10, active: true, liveXml: WIN10 })), []);
  // Only hot-plugged into the running guest (not in its definition): held too. The plan then
  // refuses linux (the device is held), so nothing is added and no such warning is given.
  const hotPlugged = planWith({ xml: WIN10, active: true, liveXml: win10 });
  assertEquals(vmOf(hotPlugged, "linux").changed, false);
  assertEquals(heldWarnings(hotPlugged), []);
});

Deno.test("planWorld() after a card was applied away from a running VM: the VM that got it is warned, not refused", () => {
  const applied = planWorld({ config: GPU_CONFIG, host: HOST, world: dataWorld({ win10: WIN10 }) });
  const win10 = vmOf(applied, "win10").desiredXml;
  const moved = config(`  win10:
    devices: []
  linux:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
`);
  const linux = domainXml("linux", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e02");
  const first = planWorld({
    config: moved,
    host: HOST,
    world: dataWorld({ win10: { xml: win10, active: true }, linux }),
  });
  // As apply without --live leaves it: win10's definition lost the card, its guest still has it.
  const after = planWorld({
    config: moved,
    host: HOST,
    world: dataWorld({
      win10: { xml: vmOf(first, "win10").desiredXml, active: true, liveXml: win10 },
      linux: vmOf(first, "linux").desiredXml,
    }),
  });
  const got = vmOf(after, "linux");
  assertEquals([got.errors, got.changed], [[], false]);
  assertEquals(got.hostdevs, ["0000:01:00.0", "0000:01:00.1"]);
  const held = got.warnings.filter((w) => w.code === "held-by-running-vm");
  assertEquals(held.map((w) => w.devices), [["0000:01:00.0", "0000:01:00.1"]]);
  assertMatch(
    held[0]!.message,
    /are in the definition of "linux" but running VM "win10" holds them/,
  );
  // The command that unplugs them, whole: virsh needs the domain and a file per device.
  assertMatch(
    held[0]!.message,
    / unless they are unplugged from "win10" \(virsh detach-device win10 FILE --live, FILE holding one's <hostdev> element \(a VF's <interface type='hostdev'>\) from virsh dumpxml win10, once for each\)$/,
  );
  const liveOnly = after.warnings.find((w) => w.code === "live-only-hostdev");
  assertMatch(liveOnly!.message, /removed from it while the guest ran/);
  // A third VM taking the card the running guest holds is still refused.
  const third = planWorld({
    config: config(`  win10:
    devices: []
  linux:
    devices: []
  other:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
`),
    host: HOST,
    world: dataWorld({
      win10: { xml: vmOf(first, "win10").desiredXml, active: true, liveXml: win10 },
      linux: vmOf(first, "linux").desiredXml,
      other: domainXml("other", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e03"),
    }),
  });
  assertEquals(vmOf(third, "other").errors.map((e) => e.code), ["device-assigned-twice"]);
});

Deno.test("planHostdevs() says why a function that came with its group leaves once the group split", async () => {
  // The GPU's audio function joined win10 only with group 1; a firmware or ACS change put it in a
  // group of its own. It leaves, and the plan says why rather than only removing it in the diff.
  const split = { ...GPU_AUDIO, group: 9 };
  await using before = await tempHostTree({ devices: [...baseDevices(), GPU, GPU_AUDIO] });
  await using after = await tempHostTree({ devices: [...baseDevices(), GPU, split] });
  const whole = await discoverHost({ root: before.dir });
  const apart = await discoverHost({ root: after.dir });
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: GPU_CONFIG, host: whole, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: GPU_CONFIG, host: apart, libvirt }), "win10");
    assertEquals([vm.errors, vm.remove, vm.hostdevs], [[], ["0000:01:00.1"], ["0000:01:00.0"]]);
    assertOk(
      vm.reasoning.includes(
        'Removed 0000:01:00.1: rule "gpu" takes 0000:01:00.0 of its card, in IOMMU group 1, and this function is in group 9: a function comes with a matched device only from its group (one a firmware or ACS setting split no longer brings it): match it in a rule to keep it',
      ),
      vm.reasoning.join("\n"),
    );
    // A function removed for another reason (the rule dropped) gets no such line.
    const dropped = vmOf(
      planHostdevs({ config: config("  win10:\n    devices: []\n"), host: apart, libvirt }),
      "win10",
    );
    assertEquals(dropped.remove, ["0000:01:00.0", "0000:01:00.1"]);
    assertEquals(dropped.reasoning.filter((r) => r.includes("group split")), []);
  });
});

Deno.test("planHostdevs() does not say a group split when a narrowed rule leaves a function of a card whose groups never changed", async () => {
  // Both ports of an I350, each in its own group all along, taken by one rule (all: true); the
  // rule is then narrowed to port 0. Port 1 leaves because of the config, not a split.
  await using tree = await tempHostTree({
    devices: [...baseDevices(), i350Port("0000:05:00.0", 40), i350Port("0000:05:00.1", 41)],
  });
  const ports = await discoverHost({ root: tree.dir });
  const rule = (match: string, all: string) =>
    config(`  win10:\n    devices:\n      - name: nics\n        match: ${match}\n${all}`);
  await withPort([WIN10], (libvirt) => {
    const both = vmOf(
      planHostdevs({
        config: rule('{ vendor_device_id: "8086:1521" }', "        all: true\n"),
        host: ports,
        libvirt,
      }),
      "win10",
    );
    assertEquals(both.add.map((a) => a.address), ["0000:05:00.0", "0000:05:00.1"]);
    libvirt.define(both.desiredXml);
    const narrowed = vmOf(
      planHostdevs({
        config: rule('{ vendor_device_id: "8086:1521", address: "0000:05:00.0" }', ""),
        host: ports,
        libvirt,
      }),
      "win10",
    );
    assertEquals([narrowed.errors, narrowed.remove], [[], ["0000:05:00.1"]]);
    const said = narrowed.reasoning.filter((r) => r.startsWith("Removed 0000:05:00.1"));
    assertEquals(said, [
      'Removed 0000:05:00.1: rule "nics" takes 0000:05:00.0 of its card, in IOMMU group 40, and this function is in group 41: a function comes with a matched device only from its group (one a firmware or ACS setting split no longer brings it): match it in a rule to keep it',
    ]);
  });
});

Deno.test("planWorld() warns of a hand-written interface's device a running VM holds, and lists it in hostdevs and keep", () => {
  const applied = vmOf(
    planWorld({ config: GPU_CONFIG, host: HOST, world: dataWorld({ win10: WIN10 }) }),
    "win10",
  ).desiredXml;
  const both = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
  linux:
    devices: []
`);
  // The GPU's function 0 given to linux by hand as an interface, while win10 runs with it.
  const linux = domainXml("linux", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e02").replace(
    "</devices>",
    `  <interface type='hostdev' managed='yes'><mac address='52:54:00:6d:90:02'/><source><address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source></interface>
  </devices>`,
  );
  const plan = planWorld({
    config: both,
    host: HOST,
    world: dataWorld({ win10: { xml: applied, active: true }, linux }),
  });
  const got = vmOf(plan, "linux");
  assertEquals([got.hostdevs, got.keep], [["0000:01:00.0"], ["0000:01:00.0"]]);
  const held = got.warnings.filter((w) => w.code === "held-by-running-vm");
  assertEquals(held.map((w) => w.devices), [["0000:01:00.0"]]);
});

Deno.test("planWorld() warns of a hand-added hostdev or interface whose device is gone, naming the VM, element and address", () => {
  const elements = [
    `<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x0a' slot='0x00' function='0x0'/></source><address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></hostdev>`,
    `<interface type='hostdev' managed='yes'><mac address='52:54:00:6d:90:02'/><source><address type='pci' domain='0x0000' bus='0x0b' slot='0x00' function='0x0'/></source></interface>`,
    // A hand-added hostdev whose device is there says nothing.
    hostdevXml("0000:01:00.0"),
  ];
  const linux = domainXml("my linux", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e02").replace(
    "</devices>",
    `  ${elements.join("\n    ")}\n  </devices>`,
  );
  const plan = planWorld({
    config: config(`  my linux:\n    devices: []\n`),
    host: HOST,
    world: dataWorld({ "my linux": linux }),
  });
  const vm = vmOf(plan, "my linux");
  assertEquals(vm.changed, false);
  const gone = vm.warnings.filter((w) => w.code === "hand-added-missing");
  assertEquals(gone.map((w) => [w.vm, w.devices]), [
    ["my linux", ["0000:0a:00.0"]],
    ["my linux", ["0000:0b:00.0"]],
  ]);
  assertEquals(
    gone[0]!.message,
    `Hand-added <hostdev> 0000:0a:00.0 (guest address 0000:00:07.0) of VM "my linux" holds no device on this host: "my linux" cannot start while it is missing (the start guard refuses it; without the guard, libvirt fails to find the device): bring the device back there, or remove the element with virsh edit 'my linux'`,
  );
  assertMatch(
    gone[1]!.message,
    /^Hand-added <interface type='hostdev'> 0000:0b:00\.0 of VM "my linux"/,
  );
  // What stops the start is what the VM's policy and the installed hook make of it.
  const stopper = (policy: string, guardHook?: boolean) => {
    const planned = planWorld({
      config: config(`  my linux:\n    guard: ${policy}\n    devices: []\n`),
      host: HOST,
      world: dataWorld({ "my linux": linux }),
      ...(guardHook === undefined ? {} : { guardHook }),
    });
    const warning = vmOf(planned, "my linux").warnings.find((w) => w.code === "hand-added-missing");
    return /cannot start while it is missing \((.*)\): bring/.exec(warning?.message ?? "")?.[1];
  };
  assertEquals(
    [
      stopper("enforce", true),
      stopper("warn", true),
      stopper("warn"),
      stopper("off", true),
      stopper("enforce", false),
    ],
    [
      "the start guard refuses it",
      'its "guard: warn" has the start guard warn and go on, and libvirt fails to find the device',
      'its "guard: warn" has the start guard warn and go on, and libvirt fails to find the device',
      'its "guard: off" has the start guard pass it, and libvirt fails to find the device',
      "no start guard is installed: libvirt fails to find the device",
    ],
  );
});

Deno.test("planWorld() lists a refused VM's hand-written interface in hostdevs and keep", () => {
  const refused = config(`  linux:
    devices:
      - name: gone
        match: { vendor_device_id: "dead:beef" }
`);
  const linux = domainXml("linux", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e02").replace(
    "</devices>",
    `  <interface type='hostdev' managed='yes'><mac address='52:54:00:6d:90:02'/><source><address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source></interface>
  </devices>`,
  );
  const got = vmOf(
    planWorld({ config: refused, host: HOST, world: dataWorld({ linux }) }),
    "linux",
  );
  assertEquals(got.errors.map((e) => e.code), ["no-match"]);
  // The definition is kept as it is: its interface stays, so `plan --json` lists it.
  assertEquals([got.hostdevs, got.keep], [["0000:01:00.0"], ["0000:01:00.0"]]);
});
