/**
 * planHostdevs() against the real libvirt.so.0 (test driver worlds) over plain host topologies:
 * ownership, hand-added hostdevs, idempotence, stable identity across the vfio-pci rebind, moved
 * cards, drift, refusals and the XML it produces.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { COMPUTER_DEVICE, writeTempWorld } from "../helpers/world.ts";
import { libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { Connection } from "../../ffi/connection.ts";
import { type Config, parseConfig } from "../../lib/config/config.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import type { HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import type { Plan, VmPlan } from "../../lib/plan/types.ts";
import type { HostTopology } from "../../lib/host/types.ts";

type Dev = Partial<HostDeviceDescription> & { bdf: string; group: number | null; class: string };

function dev(d: Dev): HostDeviceDescription {
  return {
    vendor: "0x8086",
    device: "0x0001",
    subsystem_vendor: null,
    subsystem_device: null,
    driver: null,
    revision: null,
    ...d,
  };
}

const GPU: HostDeviceDescription = dev({
  bdf: "0000:01:00.0",
  group: 1,
  class: "0x030000",
  vendor: "0x10de",
  device: "0x2684",
  subsystem_vendor: "0x1043",
  subsystem_device: "0x88e2",
  driver: "nvidia",
  serial: "00-11-22-ff-ff-33-44-55",
  class_name: "VGA compatible controller",
});
const GPU_AUDIO: HostDeviceDescription = dev({
  bdf: "0000:01:00.1",
  group: 1,
  class: "0x040300",
  vendor: "0x10de",
  device: "0x22ba",
  driver: "snd_hda_intel",
  class_name: "Audio device",
});

function baseDevices(): HostDeviceDescription[] {
  return [
    dev({ bdf: "0000:00:00.0", group: 0, class: "0x060000", class_name: "Host bridge" }),
    dev({ bdf: "0000:00:01.0", group: 1, class: "0x060400", class_name: "PCI bridge" }),
    dev({ bdf: "0000:00:1f.0", group: 4, class: "0x060100", class_name: "ISA bridge" }),
    dev({
      bdf: "0000:00:1f.4",
      group: 4,
      class: "0x0c0500",
      device: "0x7aa3",
      class_name: "SMBus",
    }),
    dev({
      bdf: "0000:02:00.0",
      group: 2,
      class: "0x020000",
      device: "0x1533",
      driver: "igb",
      class_name: "Ethernet controller",
    }),
    dev({
      bdf: "0000:03:00.0",
      group: 3,
      class: "0x010802",
      vendor: "0x144d",
      device: "0xa808",
      driver: "nvme",
      class_name: "Non-Volatile memory controller",
    }),
  ];
}

function host(devices: HostDeviceDescription[], extra: { cmdline?: string } = {}): HostTopology {
  return topologyFromDescription({ devices, ...extra }, { source: "test-host" });
}

const HOST = host([...baseDevices(), GPU, GPU_AUDIO]);

function domainXml(name: string, uuid: string, extra = "", running = false): string {
  return `  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>${name}</name>
    <uuid>${uuid}</uuid>
    <memory unit='KiB'>1048576</memory>
    <os>
      <type arch='x86_64'>hvm</type>
    </os>
    <devices>
      <disk type='file' device='disk'>
        <source file='/var/lib/libvirt/images/${name}.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>${extra}
    </devices>${running ? "" : "\n    <test:runstate>5</test:runstate>"}
  </domain>`;
}

const HAND_ADDED_NIC = `
      <hostdev mode='subsystem' type='pci' managed='no'>
        <source>
          <address domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>
        </source>
        <!-- added by hand -->
      </hostdev>`;

function world(domains: string[]): string {
  return `<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads><active>2</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>4194304</memory>
${domains.join("\n")}
  ${COMPUTER_DEVICE}
</node>
`;
}

const WIN10 = domainXml("win10", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01");
const LINUX = domainXml("linux", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e02", HAND_ADDED_NIC, true);

function config(yaml: string): Config {
  return parseConfig(`version: 1\nvms:\n${yaml}`, { file: "passthrough_config.yaml" });
}

const GPU_CONFIG = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
`);

function vmOf(plan: Plan, name: string): VmPlan {
  const vm = plan.vms.find((v) => v.name === name);
  assertOk(vm, `plan has VM "${name}"`);
  return vm;
}

async function withPort<T>(
  domains: string[],
  fn: (port: ReturnType<typeof openLibvirtPort>) => T | Promise<T>,
): Promise<T> {
  await using w = await writeTempWorld(world(domains));
  using port = openLibvirtPort(w.uri);
  return await fn(port);
}

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
    assertEquals(refused.errors.map((e) => e.code), ["no-match"]);
    const drift = refused.warnings.find((w) => w.code === "drift");
    assertOk(drift);
    assertMatch(drift.message, /recorded as 10de:2684 serial 00-11-22-ff-ff-33-44-55/);
    assertMatch(drift.message, /now holds 1002:73df/);
    assertEquals(refused.desiredXml, refused.currentXml);
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

Deno.test("planHostdevs() limited to some VMs still reports drift in the others, plan-wide", async () => {
  const swapped = host([
    ...baseDevices(),
    dev({ bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x1002", device: "0x73df" }),
  ]);
  await withPort([WIN10, LINUX], (libvirt) => {
    const both = config(
      '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
        "  linux:\n    devices: []\n",
    );
    libvirt.define(vmOf(planHostdevs({ config: both, host: HOST, libvirt }), "win10").desiredXml);
    const limited = planHostdevs({ config: both, host: swapped, libvirt, vms: ["linux"] });
    assertEquals(limited.vms.map((vm) => vm.name), ["linux"]);
    const drift = limited.warnings.filter((w) => w.code === "drift");
    assertEquals([...new Set(drift.map((w) => w.vm))], ["win10"]);
    assertOk(
      drift.some((w) => w.devices?.[0] === "0000:01:00.0" && /now holds 1002:73df/.test(w.message)),
    );
    // The same warnings win10's own plan gives when it is planned; then not repeated plan-wide.
    const all = planHostdevs({ config: both, host: swapped, libvirt });
    assertEquals(all.warnings.filter((w) => w.code === "drift"), []);
    assertEquals(vmOf(all, "win10").warnings.filter((w) => w.code === "drift"), drift);
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

Deno.test("planHostdevs() refuses a group another domain holds and leaves the XML unchanged", async () => {
  const other = domainXml(
    "router",
    "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e03",
    `
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source>
          <address domain='0x0000' bus='0x01' slot='0x00' function='0x1'/>
        </source>
      </hostdev>`,
  );
  await withPort([WIN10, other], (libvirt) => {
    const vm = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    const error = vm.errors.find((e) => e.code === "group-shared-with-other-vm");
    assertOk(error, JSON.stringify(vm.errors));
    assertEquals(error.vms, ["router", "win10"]);
    assertEquals(error.group, 1);
    assertMatch(error.message, /IOMMU group 1 is split between VMs "router" and "win10"/);
    assertEquals(vm.desiredXml, vm.currentXml);
    assertEquals(vm.changed, false);
  });
});

Deno.test("planHostdevs() reports a configured VM libvirt does not know as unknown-vm", async () => {
  await withPort([WIN10], (libvirt) => {
    const cfg = config("  win11:\n    devices: []\n");
    const vm = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), "win11");
    assertEquals(vm.errors.map((e) => e.code), ["unknown-vm"]);
    assertMatch(vm.errors[0]!.message, /^VM "win11" is not defined in libvirt/);
    assertEquals(vm.errors[0]!.location, "passthrough_config.yaml:3:3");
  });
});

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

Deno.test("planHostdevs() refuses a device another configured VM holds as a hand-added hostdev", async () => {
  const cfg = config(`  win10:
    devices:
      - name: nic
        match: { vendor_device_id: "8086:1533" }
  linux:
    devices: []
`);
  await withPort([WIN10, LINUX], (libvirt) => {
    const plan = planHostdevs({ config: cfg, host: HOST, libvirt });
    const [error] = vmOf(plan, "win10").errors;
    assertEquals(error?.code, "device-assigned-twice");
    assertEquals(error?.vms, ["linux", "win10"]);
    assertMatch(error?.message ?? "", /\("linux" holds it in its definition now\)/);
    // linux changes nothing and keeps its hand-added NIC.
    assertEquals(vmOf(plan, "linux").errors, []);
    assertEquals(vmOf(plan, "linux").changed, false);
  });
});

Deno.test("planHostdevs() counts the current devices of configured VMs left out by vms", async () => {
  await withPort([WIN10, LINUX], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    libvirt.define(applied.desiredXml);
    // The GPU moves to linux in the config, but only linux is planned: win10 still holds it.
    const cfg = config(`  win10:
    devices: []
  linux:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684" }
`);
    const only = planHostdevs({ config: cfg, host: HOST, libvirt, vms: ["linux"] });
    assertEquals(only.vms.map((v) => v.name), ["linux"]);
    assertEquals(vmOf(only, "linux").errors.map((e) => e.code), ["device-assigned-twice"]);
    // Planned together, win10 releases it and linux takes it.
    const both = planHostdevs({ config: cfg, host: HOST, libvirt });
    assertEquals(vmOf(both, "win10").remove, ["0000:01:00.0", "0000:01:00.1"]);
    assertEquals(vmOf(both, "linux").add.map((a) => a.address), ["0000:01:00.0", "0000:01:00.1"]);
  });
});
