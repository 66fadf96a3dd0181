/**
 * Resolving the config on a host before any domain is looked at: host-wide issues (no IOMMU,
 * pcie_acs_override) and rules closed over IOMMU groups with their host-critical refusals.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import {
  baseDevices,
  config,
  dev,
  GPU,
  GPU_AUDIO,
  GPU_CONFIG,
  host,
  vmOf,
  WIN10,
  withPort,
} from "../helpers/plan_world.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import type { HostUse } from "../../lib/host/types.ts";
import { sriovHost } from "../helpers/plan_world.ts";
import { resolveConfig } from "../../lib/plan/resolve.ts";
import { loadFixtureHost } from "../helpers/hosts.ts";

Deno.test("planHostdevs() refuses everything on a host without IOMMU groups", async () => {
  const flat = topologyFromDescription(
    { devices: [GPU, GPU_AUDIO].map((d) => ({ ...d, group: null })) },
    { source: "flat" },
  );
  await withPort([WIN10], (libvirt) => {
    const plan = planHostdevs({ config: GPU_CONFIG, host: flat, libvirt });
    assertEquals(plan.errors.map((e) => e.code), ["no-iommu"]);
    assertMatch(plan.errors[0]!.message, /has no IOMMU groups/);
    const vm = vmOf(plan, "win10");
    assertOk(vm.errors.some((e) => e.code === "no-iommu"));
    assertEquals(vm.desiredXml, vm.currentXml);
  });
});

Deno.test("planHostdevs() warns about pcie_acs_override on the kernel command line", async () => {
  const acs = host([...baseDevices(), GPU, GPU_AUDIO], {
    cmdline: "BOOT_IMAGE=/vmlinuz root=/dev/nvme0n1p2 pcie_acs_override=downstream,multifunction",
  });
  await withPort([WIN10], (libvirt) => {
    const plan = planHostdevs({ config: GPU_CONFIG, host: acs, libvirt });
    assertEquals(plan.warnings.map((w) => w.code), ["acs-override"]);
    assertMatch(plan.warnings[0]!.message, /not real isolation boundaries/);
  });
});

Deno.test("resolveConfig() refuses a PF whose VF carries the host's default route, naming the override", () => {
  const use: HostUse = {
    address: "0000:01:10.2",
    reason: "default-route",
    detail: "default route via enp1s0f0v1",
  };
  const cfg = config(`  router:
    devices:
      - name: pf
        match: { address: "01:00.0" }
`);
  const errors = resolveConfig(cfg, sriovHost([use])).get("router")!.errors;
  assertEquals(errors.map((e) => e.code), ["group-contains-host-critical"]);
  assertMatch(errors[0]!.message, /0000:01:10\.2/);
  assertMatch(errors[0]!.message, /allow_host_critical: true/);
});

Deno.test("resolveConfig() refuses a VM taking the controller under its own block disk, matched or with its group", () => {
  // A SATA function on the GPU's card, in its IOMMU group; win10's disk /dev/sdb hangs under it.
  const sata = { ...GPU_AUDIO, bdf: "0000:01:00.2", class: "0x010601", device: "0x22bb" };
  const topology = host([...baseDevices(), GPU, GPU_AUDIO, sata]);
  const disks = (vm: string) =>
    new Map([[vm, new Map([["0000:01:00.2", ["disk /dev/sdb", "disk /dev/disk/by-id/ata-X"]]])]]);
  const byGroup = resolveConfig(GPU_CONFIG, topology, { deviceControllers: disks("win10") });
  const errors = byGroup.get("win10")!.errors;
  assertEquals(errors.map((e) => [e.code, e.rule, e.devices, e.group]), [
    ["own-device", "gpu", ["0000:01:00.2"], 1],
  ]);
  assertMatch(
    errors[0]!.message,
    /VM "win10" uses disk \/dev\/sdb, disk \/dev\/disk\/by-id\/ata-X on 0000:01:00\.2, and its rule "gpu" takes 0000:01:00\.2 with its IOMMU group: libvirt detaches that controller from the host at start, and those devices go with it: remove them/,
  );
  // Another VM's disk there is not win10's own (the group conflict with it is found elsewhere).
  const other = resolveConfig(GPU_CONFIG, topology, { deviceControllers: disks("nas") });
  assertEquals(other.get("win10")!.errors, []);
});

Deno.test("resolveConfig() warns when a rule with iommu_group: false leaves the controller of the VM's own disk in its group", () => {
  const sata = { ...GPU_AUDIO, bdf: "0000:01:00.2", class: "0x010601", device: "0x22bb" };
  const topology = host([...baseDevices(), GPU, GPU_AUDIO, sata]);
  const alone = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684" }
        iommu_group: false
`);
  const deviceControllers = new Map([["win10", new Map([["0000:01:00.2", ["disk /dev/sdb"]]])]]);
  const win10 = resolveConfig(alone, topology, { deviceControllers }).get("win10")!;
  assertEquals(win10.errors, []);
  const own = win10.warnings.filter((w) => w.code === "own-device");
  assertEquals(own.map((w) => [w.rule, w.devices, w.group]), [["gpu", ["0000:01:00.2"], 1]]);
  assertMatch(
    own[0]!.message,
    /shares IOMMU group 1 with 0000:01:00\.2, under disk \/dev\/sdb that "win10" uses: with iommu_group: false it stays with the host, .* which takes that device from "win10" too/,
  );
  // Two devices under it; and the NVMe under another disk, in a group of its own: not the rule's.
  const two = new Map([[
    "win10",
    new Map([
      ["0000:01:00.2", ["disk /dev/sdb", "disk /dev/sdc"]],
      ["0000:03:00.0", ["disk /dev/nvme0n1"]],
    ]),
  ]]);
  const both = resolveConfig(alone, topology, { deviceControllers: two }).get("win10")!;
  const warned = both.warnings.filter((w) => w.code === "own-device");
  assertEquals(warned.map((w) => w.devices), [["0000:01:00.2"]]);
  assertMatch(warned[0]!.message, /which takes those devices from "win10" too/);
  // A rule that takes the SATA function itself is refused for it; the GPU's rule is not warned.
  const taken = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684" }
        iommu_group: false
      - name: sata
        match: { vendor_device_id: "10de:22bb" }
        iommu_group: false
`);
  const refused = resolveConfig(taken, topology, { deviceControllers }).get("win10")!;
  assertEquals(refused.errors.map((e) => [e.code, e.rule]), [["own-device", "sata"]]);
  assertEquals(refused.warnings.filter((w) => w.code === "own-device"), []);
});

Deno.test("resolveConfig(): a default rule matching two cards of one IOMMU group is ambiguous, with or without the group", () => {
  // Two identical USB cards (slots 4 and 5) behind one PCIe switch without ACS, in group 5.
  const usb = (bdf: string, slot: string) =>
    dev({
      bdf,
      group: 5,
      slot,
      class: "0x0c0330",
      vendor: "0x1b21",
      device: "0x2142",
      driver: "xhci_hcd",
    });
  const topology = host([...baseDevices(), usb("0000:05:00.0", "4"), usb("0000:06:00.0", "5")]);
  const resolved = (match: string, more = "") =>
    resolveConfig(
      config(`  a:\n    devices:\n      - match: { ${match} }\n${more}`),
      topology,
    ).get("a")!;
  for (const more of ["", "        iommu_group: false\n"]) {
    const a = resolved('vendor_device_id: "1b21:2142"', more);
    assertEquals(a.errors.map((e) => e.code), ["ambiguous"]);
    assertEquals(a.errors[0]!.candidates?.map((c) => c.physicalSlot), ["4", "5"]);
    assertEquals(a.closure.devices, []);
  }
  // Narrowed to the card in slot 4, the other card comes with the group: the host's, refused.
  const narrowed = resolved('vendor_device_id: "1b21:2142", slot: "4"');
  assertEquals(narrowed.errors.map((e) => [e.code, e.devices]), [
    ["group-contains-host-critical", ["0000:06:00.0"]],
  ]);
  assertMatch(narrowed.errors[0]!.message, /0000:06:00\.0 \(USB controller in another slot\)/);
});

/** The GPU and its audio function on bus `bus`, in slot `slot` and IOMMU group `group`, no serial. */
function gpuInSlot(slot: string, bus: string, group: number) {
  return [GPU, GPU_AUDIO].map((d) => ({
    ...d,
    bdf: d.bdf.replace("0000:01:", `0000:${bus}:`),
    group,
    slot,
    serial: null,
    flr: true,
  }));
}

/** win10 taking the 10de:2684 GPU as rule "gpu", with `extra` match keys after the IDs. */
function gpuRule(extra: string) {
  return config(
    `  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684"${extra} }\n`,
  );
}

Deno.test("planHostdevs(): a second card like the one a rule took says which key keeps the VM's own, and that key plans no change", async () => {
  const before = host([...baseDevices(), ...gpuInSlot("PCIE1", "01", 1)]);
  const after = host([
    ...baseDevices(),
    ...gpuInSlot("PCIE1", "01", 1),
    ...gpuInSlot("PCIE2", "0b", 7),
  ]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: gpuRule(""), host: before, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: gpuRule(""), host: after, libvirt }), "win10");
    assertEquals(vm.errors.map((e) => e.code), ["ambiguous"]);
    assertMatch(
      vm.errors[0]!.message,
      /; "win10" holds 0000:01:00\.0 now: add slot: "PCIE1" to the rule to keep it$/,
    );
    const kept = vmOf(
      planHostdevs({ config: gpuRule(', slot: "PCIE1"'), host: after, libvirt }),
      "win10",
    );
    assertEquals([kept.errors, kept.changed], [[], false]);
  });
});

Deno.test("planHostdevs(): the key that keeps the VM's card names the recorded slot when a second card took its address", async () => {
  const before = host([...baseDevices(), ...gpuInSlot("PCIE1", "01", 1)]);
  // The new card sits before the VM's on the bus: it takes 01:00.0, the VM's card moves to 0b.
  const after = host([
    ...baseDevices(),
    ...gpuInSlot("PCIE2", "01", 1),
    ...gpuInSlot("PCIE1", "0b", 7),
  ]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: gpuRule(""), host: before, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: gpuRule(""), host: after, libvirt }), "win10");
    // Before: `holds 0000:01:00.0 now: add slot: "PCIE2"`, the new card's slot.
    assertMatch(
      vm.errors.find((e) => e.code === "ambiguous")?.message ?? "",
      /; "win10" holds 0000:0b:00\.0 now: add slot: "PCIE1" to the rule to keep it$/,
    );
    const kept = vmOf(
      planHostdevs({ config: gpuRule(', slot: "PCIE1"'), host: after, libvirt }),
      "win10",
    );
    assertEquals(kept.errors, []);
    assertEquals(kept.move.map((m) => [m.from, m.to]), [
      ["0000:01:00.0", "0000:0b:00.0"],
      ["0000:01:00.1", "0000:0b:00.1"],
    ]);
  });
});

Deno.test("planHostdevs(): a GPU of another model beside the one a class rule took is told apart by the IDs, which then plan no change", async () => {
  const classRule = (extra: string) =>
    config(`  win10:\n    devices:\n      - name: gpu\n        match: { class: vga${extra} }\n`);
  const before = host([...baseDevices(), GPU]);
  const after = host([...baseDevices(), GPU, {
    ...GPU,
    bdf: "0000:0b:00.0",
    device: "0x2704",
    group: 7,
  }]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: classRule(""), host: before, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: classRule(""), host: after, libvirt }), "win10");
    // Before: `add address: "0000:01:00.0"`, which a card added before it on the bus takes.
    assertMatch(
      vm.errors[0]?.message ?? "",
      /; "win10" holds 0000:01:00\.0 now: add vendor_device_id: "10de:2684" to the rule to keep it$/,
    );
    const kept = vmOf(
      planHostdevs({ config: classRule(', vendor_device_id: "10de:2684"'), host: after, libvirt }),
      "win10",
    );
    assertEquals([kept.errors, kept.changed], [[], false]);
  });
});

Deno.test("planHostdevs(): a twin told apart by nothing but the address is offered as the VM's card with the caveat that the address alone says so", async () => {
  const twin = (bus: string, group: number) =>
    [GPU, GPU_AUDIO].map((d) => ({
      ...d,
      bdf: d.bdf.replace("0000:01:", `0000:${bus}:`),
      group,
      serial: null,
      flr: true,
    }));
  const before = host([...baseDevices(), ...twin("01", 1)]);
  // Whether the new card went in before or after the VM's, the host looks the same.
  const after = host([...baseDevices(), ...twin("01", 1), ...twin("0b", 7)]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: gpuRule(""), host: before, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: gpuRule(""), host: after, libvirt }), "win10");
    // Before: `holds 0000:01:00.0 now: add address: "0000:01:00.0" to the rule to keep it`.
    assertMatch(
      vm.errors[0]?.message ?? "",
      /; "win10" holds 0000:01:00\.0 now, as far as its address tells: add address: "0000:01:00\.0" to the rule to keep it once you know it is the VM's card \(nothing it was recorded with tells these cards apart, and a card added before it on the bus takes its address\)$/,
    );
  });
});

Deno.test("planHostdevs(): twins on two NUMA nodes are told apart by numa_node, and the key kept by address says only its record does not", async () => {
  const nic = (bus: string, group: number, node: number) =>
    dev({
      bdf: `0000:${bus}:00.0`,
      group,
      class: "0x020000",
      device: "0x1521",
      driver: "igb",
      flr: true,
      numa_node: node,
    });
  const rules = config(
    '  win10:\n    devices:\n      - name: nic\n        match: { vendor_device_id: "8086:1521" }\n',
  );
  const before = host([...baseDevices(), nic("05", 5, 0)]);
  const after = host([...baseDevices(), nic("05", 5, 0), nic("85", 6, 1)]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: rules, host: before, libvirt }), "win10").desiredXml,
    );
    const message = vmOf(planHostdevs({ config: rules, host: after, libvirt }), "win10").errors[0]
      ?.message ?? "";
    assertMatch(message, /narrow it with "numa_node", or with "address"/);
    // Before: "(nothing else tells these cards apart, ...)", beside the numa_node it offered.
    assertMatch(
      message,
      /once you know it is the VM's card \(nothing it was recorded with tells these cards apart, and a card added before it on the bus takes its address\)$/,
    );
  });
});

Deno.test("planHostdevs(): the slot key that keeps the VM's card is YAML that reads back as its slot, quotes and backslashes included", async () => {
  for (const slot of ['SLOT "6"', "C:\\6"]) {
    const before = host([...baseDevices(), ...gpuInSlot(slot, "01", 1)]);
    const after = host([
      ...baseDevices(),
      ...gpuInSlot(slot, "01", 1),
      ...gpuInSlot("PCIE2", "0b", 7),
    ]);
    await withPort([WIN10], (libvirt) => {
      libvirt.define(
        vmOf(planHostdevs({ config: gpuRule(""), host: before, libvirt }), "win10").desiredXml,
      );
      const vm = vmOf(planHostdevs({ config: gpuRule(""), host: after, libvirt }), "win10");
      const key = /now: add (.*) to the rule to keep it$/.exec(vm.errors[0]?.message ?? "")?.[1];
      assertMatch(key ?? "", /^slot: /);
      // Before: `slot: "SLOT "6""`, which the config refused as YAML (and `"C:\6"` too).
      const kept = vmOf(
        planHostdevs({ config: gpuRule(`, ${key}`), host: after, libvirt }),
        "win10",
      );
      assertEquals([kept.errors, kept.changed], [[], false]);
    });
  }
});

Deno.test("planHostdevs(): the key that keeps the VM's NIC is its serial when only function 0 carries one", async () => {
  const port = (bus: string, fn: number, serial?: string) =>
    dev({
      bdf: `0000:${bus}:00.${fn}`,
      group: bus === "05" ? 5 : 6,
      class: "0x020000",
      device: "0x1521",
      driver: "igb",
      flr: true,
      ...(serial === undefined ? {} : { serial }),
    });
  const first = [port("05", 0, "a0-36-9f-ff-ff-00-00-01"), port("05", 1)];
  const before = host([...baseDevices(), ...first]);
  const after = host([
    ...baseDevices(),
    ...first,
    port("06", 0, "a0-36-9f-ff-ff-00-00-02"),
    port("06", 1),
  ]);
  const rules = config(
    '  win10:\n    devices:\n      - name: nic\n        match: { vendor_device_id: "8086:1521" }\n',
  );
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: rules, host: before, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: rules, host: after, libvirt }), "win10");
    assertMatch(
      vm.errors[0]?.message ?? "",
      /; "win10" holds 0000:05:00\.0 now: add serial: "a0-36-9f-ff-ff-00-00-01" to the rule to keep it$/,
    );
  });
});

Deno.test("resolveConfig() on the Z690 host passes its VMD controller without the drive behind it in its group", () => {
  // The drive goes with the controller (the domain leaves the host with the vmd driver): taken
  // as a group mate, it was a hostdev of its own and the VM was refused as taking a storage
  // controller the host needs.
  const z690 = loadFixtureHost("z690-asus-adl");
  const samsung = z690.devices.find((d) => d.bdf === "0000:06:00.0")!;
  const topology = topologyFromDescription(
    { ...z690, devices: [...z690.devices, { ...samsung, bdf: "10000:e1:00.0", group: 6 }] },
    { source: "z690 with a drive behind VMD" },
  );
  const cfg = config(`  vm1:
    devices:
      - name: vmd
        match: { vendor_device_id: "8086:467f" }
`);
  const vm = resolveConfig(cfg, topology).get("vm1")!;
  assertEquals([vm.errors, vm.closure.devices.map((d) => d.device.address)], [[], [
    "0000:00:0e.0",
  ]]);
  assertEquals(vm.closure.reasoning.filter((r) => r.includes("10000:e1:00.0")), [
    "Group 6: left out 10000:e1:00.0, behind Intel VMD: VFIO cannot assign it apart from the VMD controller, which takes its whole domain",
  ]);
});
