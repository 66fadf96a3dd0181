/**
 * The repair of a refused VM (issue 13 item 4): a stale hostdev follows its moved card when an
 * unrefused VM's move could, else is removed with the reason; a hostdev on a device the host needs
 * now is a refusal printed first, removed by the repair when passthrough added it, and explained
 * (how to remove it by hand) when it was added by hand. Hosts are sysfs trees built from
 * descriptions and read by discovery and the real lspci; domains live in libvirt's test driver.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import {
  baseDevices,
  config,
  dev,
  domainXml,
  GPU,
  GPU_AUDIO,
  GPU_CONFIG,
  hostdevXml,
  i350Port,
  LINUX,
  vmOf,
  WIN10,
  withPort,
} from "../helpers/plan_world.ts";
import { loadFixtureHost, tempHostTree } from "../helpers/hosts.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import type { HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import type { HostTopology, HostUse } from "../../lib/host/types.ts";
import type { VmPlan } from "../../lib/plan/types.ts";
import { planHostdevs, planWorld } from "../../lib/plan/plan.ts";
import { dataWorld } from "../helpers/world.ts";
import { sriovNic } from "../helpers/sriov.ts";
import { nvmeDiskXml } from "../helpers/devices.ts";
import { recordPolicies } from "../../lib/guard/state.ts";
import { guardPolicies } from "../../lib/guard/policy.ts";
import { guardStartOnTree } from "../helpers/guard_run.ts";

/** The topology discovery reads from a tree built of `devices` and `hostUse`. */
async function treeHost(
  devices: HostDeviceDescription[],
  hostUse: HostUse[] = [],
): Promise<HostTopology> {
  await using tree = await tempHostTree({ devices, host_use: hostUse });
  return await discoverHost({ root: tree.dir });
}

/** The GPU and its audio function at bus 0x0b in IOMMU group 7, plus `extra`. */
function movedGpu(extra: HostDeviceDescription[] = []): HostDeviceDescription[] {
  return [
    ...baseDevices(),
    { ...GPU, bdf: "0000:0b:00.0", group: 7 },
    { ...GPU_AUDIO, bdf: "0000:0b:00.1", group: 7 },
    ...extra,
  ];
}

/** win10's GPU rule and a second rule that matches nothing, so the plan refuses win10. */
const WITH_TYPO = config(
  '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
    '      - name: usb\n        match: { vendor_device_id: "1234:5678" }\n',
);

const NVME = "0000:03:00.0";
const ROOT_FS: HostUse = { address: NVME, reason: "mounted-filesystem", detail: "/ on nvme0n1p2" };

Deno.test("a refused VM's repair follows its moved card, rewriting the hostdevs in place", async () => {
  const before = await treeHost([...baseDevices(), GPU, GPU_AUDIO]);
  const after = await treeHost(movedGpu());
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: GPU_CONFIG, host: before, libvirt }), "win10").desiredXml,
    );
    const plan = planHostdevs({ config: WITH_TYPO, host: after, libvirt });
    const vm = vmOf(plan, "win10");
    // The stale hostdevs are refusals printed first, then the rule's own.
    assertEquals(vm.errors.map((e) => e.code), ["drift", "drift", "no-match"]);
    assertMatch(
      vm.errors[0]!.message,
      /now holds nothing: its card is now at 0000:0b:00\.0 \(same IDs and serial\): the repair follows it there even while the other refusals of "win10" stand/,
    );
    assertMatch(
      vm.errors[0]!.message,
      /so that the next start cannot hand whatever appears there to the guest$/,
    );
    assertEquals(vm.errors[0]!.devices, [GPU.bdf, "0000:0b:00.0"]);
    assertEquals([vm.changed, vm.desiredXml === vm.currentXml, vm.move], [false, true, []]);
    assertEquals(vm.repair?.remove, []);
    assertEquals(vm.repair?.move, [
      { from: GPU.bdf, to: "0000:0b:00.0", rule: "gpu", evidence: "same IDs and serial" },
      {
        from: GPU_AUDIO.bdf,
        to: "0000:0b:00.1",
        rule: "gpu",
        evidence: "same IDs, the only such device on the host",
      },
    ]);
    const repaired = parseDomainXml(vm.repair?.desiredXml ?? "");
    assertEquals(repaired.hostdevs.map((h) => [h.address, h.owned]), [
      ["0000:0b:00.0", true],
      ["0000:0b:00.1", true],
    ]);
    // The records follow, keeping the host drivers the cards were resolved with.
    assertEquals(repaired.records.map((r) => [r.address, r.driver, r.rule]), [
      ["0000:0b:00.0", "nvidia", "gpu"],
      ["0000:0b:00.1", "snd_hda_intel", "gpu"],
    ]);
    // In place: within <devices>, only the two source addresses change.
    const devices = (xml: string) => xml.slice(xml.indexOf("<devices>")).split("\n");
    const was = devices(vm.currentXml);
    const now = devices(vm.repair!.desiredXml);
    assertEquals(was.length, now.length);
    assertEquals(now.filter((line, i) => line !== was[i]).map((l) => l.trim()), [
      "<address domain='0x0000' bus='0x0b' slot='0x00' function='0x0'/>",
      "<address domain='0x0000' bus='0x0b' slot='0x00' function='0x1'/>",
    ]);
    // apply orders and holds back VMs by the groups of what a repair takes too.
    assertEquals(plan.groupOf?.["0000:0b:00.0"], 7);
  });
});

Deno.test("a repair follows a card moved to another slot, and its record names the slot it is in now", async () => {
  const inSlot = (slot: string, card: HostDeviceDescription[]) => card.map((d) => ({ ...d, slot }));
  const before = await treeHost([...baseDevices(), ...inSlot("1", [GPU, GPU_AUDIO])]);
  // Moved by hand from slot 1 to slot 3: its serial proves it, whatever the slot recorded.
  const after = await treeHost([...baseDevices(), ...inSlot("3", movedGpu().slice(-2))]);
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: before, libvirt }), "win10");
    assertEquals(parseDomainXml(applied.desiredXml).records.map((r) => r.slot), ["1", "1"]);
    libvirt.define(applied.desiredXml);
    const vm = vmOf(planHostdevs({ config: WITH_TYPO, host: after, libvirt }), "win10");
    assertEquals(vm.repair?.move?.map((m) => [m.from, m.to, m.evidence]), [
      [GPU.bdf, "0000:0b:00.0", "same IDs and serial"],
      [GPU_AUDIO.bdf, "0000:0b:00.1", "same IDs, the only such device on the host"],
    ]);
    // The start guard compares the slot recorded: the one the card sits in now.
    const repaired = parseDomainXml(vm.repair?.desiredXml ?? "");
    assertEquals(repaired.records.map((r) => [r.address, r.slot]), [
      ["0000:0b:00.0", "3"],
      ["0000:0b:00.1", "3"],
    ]);
  });
});

Deno.test("a repair does not follow a card into an IOMMU group another domain holds: it removes the hostdev and says why", async () => {
  const before = await treeHost([...baseDevices(), GPU, GPU_AUDIO]);
  const after = await treeHost(movedGpu());
  // "other" (not in the config) holds the moved card's audio function by hand.
  const other = domainXml(
    "other",
    "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e03",
    hostdevXml("0000:0b:00.1"),
  );
  await withPort([WIN10, other], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: GPU_CONFIG, host: before, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: WITH_TYPO, host: after, libvirt }), "win10");
    assertEquals(vm.errors.slice(0, 2).map((e) => e.code), ["drift", "drift"]);
    assertOk(vm.errors.some((e) => e.code === "group-shared-with-other-vm" && e.group === 7));
    assertMatch(
      vm.errors[0]!.message,
      /its card is now at 0000:0b:00\.0 \(same IDs and serial\) but the repair does not follow it: rule "gpu" is refused there \(\[group-shared-with-other-vm\] below\); it removes the hostdev even while/,
    );
    assertEquals([vm.repair?.move, vm.repair?.remove], [[], [GPU.bdf, GPU_AUDIO.bdf]]);
    const repaired = parseDomainXml(vm.repair?.desiredXml ?? "");
    assertEquals([repaired.hostdevs, repaired.records], [[], []]);
  });
});

Deno.test("a repair does not follow a card whose new IOMMU group holds a device it would not add", async () => {
  const before = await treeHost([...baseDevices(), GPU, GPU_AUDIO]);
  // The card's own USB-C controller (NVIDIA's), come with it.
  const usb = dev({
    bdf: "0000:0b:00.2",
    group: 7,
    class: "0x0c0330",
    vendor: "0x10de",
    device: "0x1ada",
  });
  const after = await treeHost(movedGpu([usb]));
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: GPU_CONFIG, host: before, libvirt }), "win10").desiredXml,
    );
    // Unrefused, the plan moves both functions and adds the group's new member.
    const whole = vmOf(planHostdevs({ config: GPU_CONFIG, host: after, libvirt }), "win10");
    assertEquals([whole.errors, whole.move.length, whole.add.map((a) => a.address)], [
      [],
      2,
      ["0000:0b:00.2"],
    ]);
    // Refused, the repair adds nothing: following would give the guest part of group 7.
    const vm = vmOf(planHostdevs({ config: WITH_TYPO, host: after, libvirt }), "win10");
    assertMatch(
      vm.errors[0]!.message,
      /does not follow it: its new IOMMU group 7 also holds 0000:0b:00\.2, which a repair does not add; it removes the hostdev/,
    );
    assertEquals([vm.repair?.move, vm.repair?.remove], [[], [GPU.bdf, GPU_AUDIO.bdf]]);
  });
});

Deno.test("an owned hostdev on a device the host needs now is a refusal printed first, removed by the repair", async () => {
  const free = await treeHost(baseDevices());
  const needed = await treeHost(baseDevices(), [ROOT_FS]);
  const nvme = (extra: string) =>
    config(`  win10:\n    devices:\n      - name: nvme\n        match: { class: nvme }\n${extra}`);
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: nvme(""), host: free, libvirt }), "win10");
    assertEquals([applied.errors, applied.add.map((a) => a.address)], [[], [NVME]]);
    libvirt.define(applied.desiredXml);

    // The rule still takes it: refused twice, the hostdev's refusal first; the repair removes it.
    const vm = vmOf(planHostdevs({ config: nvme(""), host: needed, libvirt }), "win10");
    assertEquals(vm.errors.map((e) => e.code), ["host-needed", "group-contains-host-critical"]);
    assertMatch(
      vm.errors[0]!.message,
      /^Hostdev 0000:03:00\.0 of "win10" \(rule "nvme"\) holds 144d:a808 .*, which the host needs now \(mounted-filesystem: \/ on nvme0n1p2\): the repair removes it even while the other refusals of "win10" stand, so that the next start cannot take it from the host$/,
    );
    assertEquals(vm.repair?.remove, [NVME]);
    const repaired = parseDomainXml(vm.repair?.desiredXml ?? "");
    assertEquals([repaired.hostdevs, repaired.records], [[], []]);

    // Nothing else refused (the rule is gone): still a refusal, not a silent removal.
    const gone = config("  win10:\n    devices: []\n");
    const alone = vmOf(planHostdevs({ config: gone, host: needed, libvirt }), "win10");
    assertEquals(alone.errors.map((e) => e.code), ["host-needed"]);
    assertMatch(alone.errors[0]!.message, /: the repair removes it, so that the next start/);
    assertEquals([alone.changed, alone.repair?.remove], [false, [NVME]]);

    // allow_host_critical: true on its rule keeps it, with the rule's warning.
    const allowed = nvme("        allow_host_critical: true\n");
    const kept = vmOf(planHostdevs({ config: allowed, host: needed, libvirt }), "win10");
    assertEquals([kept.errors, kept.repair, kept.keep], [[], undefined, [NVME]]);
    assertOk(kept.warnings.some((w) => w.code === "group-contains-host-critical"));
  });
});

Deno.test("a hand-added hostdev on a device the host needs now is a refusal saying how to remove it", async () => {
  const route: HostUse = {
    address: "0000:02:00.0",
    reason: "default-route",
    detail: "default route via enp2s0",
  };
  const needed = await treeHost(baseDevices(), [route]);
  await withPort([LINUX], (libvirt) => {
    const vm = vmOf(
      planHostdevs({ config: config("  linux:\n    devices: []\n"), host: needed, libvirt }),
      "linux",
    );
    assertEquals(vm.errors.map((e) => [e.code, e.devices]), [["host-needed", ["0000:02:00.0"]]]);
    assertMatch(
      vm.errors[0]!.message,
      /^Hostdev 0000:02:00\.0 of "linux" was added by hand and holds 8086:1533 .*, which the host needs now \(default-route: default route via enp2s0\): passthrough never edits what was added by hand, so remove it yourself: run "virsh edit linux", delete the <hostdev> whose <source> has <address domain='0x0000' bus='0x02' slot='0x00' function='0x0'\/>, then plan again$/,
    );
    // Never edited: no repair, the definition is kept.
    assertEquals([vm.repair, vm.changed, vm.keep], [undefined, false, ["0000:02:00.0"]]);
  });
  // The same for an <interface type='hostdev'> on that NIC.
  const router = domainXml(
    "router",
    "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e04",
    `
      <interface type='hostdev' managed='yes'>
        <source>
          <address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>
        </source>
      </interface>`,
  );
  await withPort([router], (libvirt) => {
    const cfg = config("  router:\n    devices: []\n");
    const vm = vmOf(planHostdevs({ config: cfg, host: needed, libvirt }), "router");
    assertEquals(vm.errors.map((e) => e.code), ["host-needed"]);
    assertMatch(
      vm.errors[0]!.message,
      /^Hostdev interface 0000:02:00\.0 of "router" was added by hand .*delete the <interface type='hostdev'> whose <source> has <address domain='0x0000' bus='0x02'/,
    );
    assertEquals([vm.repair, vm.changed], [undefined, false]);
  });
});

Deno.test("a hand-added hostdev on a PCI bridge or a platform function is refused, as the start guard refuses it", async () => {
  await using tree = await tempHostTree({ devices: baseDevices() });
  const host = await discoverHost({ root: tree.dir });
  // The root port and the LPC bridge by hand: no host use names them, what they are does.
  const xml = domainXml(
    "linux",
    "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e05",
    hostdevXml("0000:00:01.0") + hostdevXml("0000:00:1f.0"),
  );
  await withPort([xml], async (libvirt) => {
    const vm = vmOf(
      planHostdevs({ config: config("  linux:\n    devices: []\n"), host, libvirt }),
      "linux",
    );
    assertEquals(vm.errors.map((e) => [e.code, e.devices]), [
      ["host-needed", ["0000:00:01.0"]],
      ["host-needed", ["0000:00:1f.0"]],
      // The SMBus in the LPC bridge's group, which the guard refuses too (below).
      ["group-contains-host-critical", ["0000:00:1f.4"]],
    ]);
    assertMatch(
      vm.errors[0]!.message,
      /^Hostdev 0000:00:01\.0 of "linux" was added by hand and holds 8086:.*, which the host needs now \(a PCI bridge, with the devices behind it\): passthrough never edits/,
    );
    assertMatch(vm.errors[1]!.message, /which the host needs now \(ISA\/LPC bridge\)/);
    const start = await guardStartOnTree({
      vm: "linux",
      xml: libvirt.getPersistentXml("linux"),
      dir: tree.dir,
      live: false,
    });
    assertEquals(start.refusals, [
      ["host-needs", "0000:00:01.0"],
      ["host-needs", "0000:00:1f.0"],
      ["host-needs", "0000:00:1f.0"],
    ]);
  });
});

Deno.test("a hand-added hostdev whose IOMMU group holds a function the host needs is refused, as the start guard refuses it", async () => {
  // A SATA controller beside the LPC bridge (unbound) and the SMBus (unbound) in group 4.
  const sata = dev({ bdf: "0000:00:1f.2", group: 4, class: "0x010601", driver: "vfio-pci" });
  await using tree = await tempHostTree({ devices: [...baseDevices(), sata] });
  const host = await discoverHost({ root: tree.dir });
  const xml = domainXml(
    "linux",
    "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e06",
    hostdevXml("0000:00:1f.2"),
  );
  await withPort([xml], async (libvirt) => {
    const vm = vmOf(
      planHostdevs({ config: config("  linux:\n    devices: []\n"), host, libvirt }),
      "linux",
    );
    assertEquals(vm.errors.map((e) => [e.code, e.group, e.devices]), [
      ["group-contains-host-critical", 4, ["0000:00:1f.0"]],
      ["group-contains-host-critical", 4, ["0000:00:1f.4"]],
    ]);
    assertMatch(
      vm.errors[0]!.message,
      /^IOMMU group 4 of what "linux" was given by hand also holds .* at 0000:00:1f\.0, which it does not pass and the host needs \(ISA\/LPC bridge\): VFIO hands the guest the whole group, so the start guard refuses the start, and no allow_host_critical lifts it for a device added by hand; remove that element \(virsh edit linux\)/,
    );
    const start = await guardStartOnTree({
      vm: "linux",
      xml: libvirt.getPersistentXml("linux"),
      dir: tree.dir,
      live: false,
    });
    assertEquals(start.refusals, [["host-needs", "0000:00:1f.2"], ["host-needs", "0000:00:1f.2"]]);
  });
});

Deno.test("a hand-added hostdev whose IOMMU group holds a function the host needs on its driver is refused for the group not being viable, as the start guard says", async () => {
  // The Supermicro's shared SRAM by hand: its group holds the chipset's USB controller on xhci_hcd.
  await using tree = await tempHostTree({ ...loadFixtureHost("supermicro-cfl"), host_use: [] });
  const host = await discoverHost({ root: tree.dir });
  const sram = "0000:00:14.2";
  const xml = domainXml("linux", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e08", hostdevXml(sram));
  await withPort([xml], async (libvirt) => {
    const vm = vmOf(
      planHostdevs({ config: config("  linux:\n    devices: []\n"), host, libvirt }),
      "linux",
    );
    assertEquals(vm.errors.map((e) => [e.code, e.devices]), [
      ["group-contains-host-critical", ["0000:00:14.0"]],
    ]);
    assertMatch(
      vm.errors[0]!.message,
      /at 0000:00:14\.0 \(driver xhci_hcd\), which it does not pass and the host needs \(USB controller [^)]*\): libvirt detaches only the devices "linux" names, so its start fails \("group 4 is not viable"\) until it is unbound or on vfio-pci, which takes from the host what it needs; remove that element \(virsh edit linux\)/,
    );
    const start = await guardStartOnTree({ vm: "linux", xml, dir: tree.dir, live: false });
    assertEquals(start.refusals, [["not-viable", sram]]);
    assertMatch(start.line, /libvirt detaches only the devices "linux" names, so its start fails/);
  });
});

Deno.test("an iommu_group: false rule's group member the VM passes by hand is not refused as left with the host, as the start guard starts it", async () => {
  // Group 1: the GPU (taken by the rule alone), its audio and another vendor's USB controller on
  // vfio-pci; the VM passes the USB controller by hand, so VFIO hands the guest nothing more.
  const usb = dev({ bdf: "0000:05:00.0", group: 1, class: "0x0c0330", vendor: "0x1b21" });
  const audio = { ...GPU_AUDIO, driver: "vfio-pci" };
  await using tree = await tempHostTree({
    devices: [...baseDevices(), GPU, audio, { ...usb, driver: "vfio-pci" }],
  });
  const host = await discoverHost({ root: tree.dir });
  const cfg = config(
    '  linux:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
      "        iommu_group: false\n",
  );
  const xml = domainXml("linux", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e07", hostdevXml(usb.bdf));
  await withPort([xml], async (libvirt) => {
    const vm = vmOf(planHostdevs({ config: cfg, host, libvirt }), "linux");
    assertEquals(vm.errors, []);
    libvirt.define(vm.desiredXml);
    recordPolicies(`${tree.dir}/state`, guardPolicies(cfg));
    const start = await guardStartOnTree({
      vm: "linux",
      xml: libvirt.getPersistentXml("linux"),
      dir: tree.dir,
      live: false,
    });
    assertEquals([start.code, start.refusals], [0, []]);
  });
});

Deno.test("a hand-added hostdev the host needs is refused, as the start guard refuses it, even where a rule with allow_host_critical takes it", async () => {
  const route: HostUse = { address: "0000:02:00.0", reason: "default-route", detail: "via enp2s0" };
  await using tree = await tempHostTree({ devices: baseDevices(), host_use: [route] });
  const host = await discoverHost({ root: tree.dir });
  // linux has the NIC by hand; the rule takes it too and says the host may lose it.
  const cfg = config(
    "  linux:\n    devices:\n      - name: nic\n        match: { address: 0000:02:00.0 }\n" +
      "        allow_host_critical: true\n",
  );
  await withPort([LINUX], async (libvirt) => {
    const vm = vmOf(planHostdevs({ config: cfg, host, libvirt }), "linux");
    // Hand-added hostdevs are never taken over, so nothing records the rule for it.
    assertEquals(vm.errors.map((e) => [e.code, e.devices]), [["host-needed", ["0000:02:00.0"]]]);
    assertMatch(vm.errors[0]!.message, /was added by hand .*remove it yourself/);
    recordPolicies(`${tree.dir}/state`, guardPolicies(cfg));
    const start = await guardStartOnTree({
      vm: "linux",
      xml: libvirt.getPersistentXml("linux"),
      dir: tree.dir,
      live: false,
    });
    assertEquals([start.code, start.refusals], [1, [["host-needs", "0000:02:00.0"]]]);
  });
});

Deno.test("an NVMe disk on the controller the host needs now is a refusal saying how to remove it, as the start guard refuses it", async () => {
  await using tree = await tempHostTree({ devices: baseDevices(), host_use: [ROOT_FS] });
  const host = await discoverHost({ root: tree.dir });
  const a = domainXml("a", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0a", nvmeDiskXml("03", "vdb"));
  const vm = vmOf(
    planWorld({ config: config("  a:\n    devices: []\n"), host, world: dataWorld({ a }) }),
    "a",
  );
  assertEquals(vm.errors.map((e) => [e.code, e.devices]), [["host-needed", [NVME]]]);
  assertMatch(
    vm.errors[0]!.message,
    /^NVMe disk 0000:03:00\.0 of "a" was added by hand and holds 144d:a808 .*\(mounted-filesystem: .*\): passthrough never edits what was added by hand, so remove it yourself: run "virsh edit a", delete the <disk type='nvme'> whose <source> has <address domain='0x0000' bus='0x03' slot='0x00' function='0x0'\/>, then plan again$/,
  );
  assertEquals([vm.repair, vm.changed], [undefined, false]);
  const start = await guardStartOnTree({ vm: "a", xml: vm.currentXml, dir: tree.dir, live: false });
  assertEquals([start.code, start.refusals], [1, [["host-needs", NVME]]]);
});

Deno.test("an unprivileged plan, which reads no serial, keeps a card recorded with one at its address, refused VM or not", async () => {
  const gpu = config(
    '  a:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n',
  );
  const a = domainXml("a", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0a");
  // Applied as root, which reads the GPU's serial number and records it.
  const applied = vmOf(
    planWorld({
      config: gpu,
      host: await treeHost([...baseDevices(), GPU, GPU_AUDIO]),
      world: dataWorld({ a }),
    }),
    "a",
  ).desiredXml;
  assertMatch(applied, /serial='00-11-22-ff-ff-33-44-55'/);
  // The same card read unprivileged: the configuration space stops after its 64-byte header.
  const unread = await treeHost([...baseDevices(), { ...GPU, serial: null }, GPU_AUDIO]);
  const world = dataWorld({ a: applied });
  const kept = vmOf(planWorld({ config: gpu, host: unread, world }), "a");
  assertEquals([kept.errors, kept.warnings, kept.changed], [[], [], false]);
  // Refused for another rule: the GPU is no drift, and the repair does not remove it.
  const typo = config(
    '  a:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
      '      - name: typo\n        match: { vendor_device_id: "dead:beef" }\n',
  );
  const refused = vmOf(planWorld({ config: typo, host: unread, world }), "a");
  assertEquals([refused.errors.map((e) => e.code), refused.repair], [["no-match"], undefined]);
});

Deno.test("a vf: rule's own interface on a VF the host needs now is refused as the rule's, not as added by hand", async () => {
  const uplink = config(
    '  a:\n    devices:\n      - name: uplink\n        match: { vendor_device_id: "8086:10c9" }\n' +
      "        vf: 1\n",
  );
  const a = domainXml("a", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0a");
  const applied = vmOf(
    planWorld({ config: uplink, host: await treeHost(sriovNic("07", 4)), world: dataWorld({ a }) }),
    "a",
  ).desiredXml;
  // The host routes through that VF since.
  const route: HostUse = { address: "0000:07:10.2", reason: "default-route", detail: "via x" };
  const host = await treeHost(sriovNic("07", 4), [route]);
  const vm = vmOf(planWorld({ config: uplink, host, world: dataWorld({ a: applied }) }), "a");
  const needed = vm.errors.filter((e) => e.code === "host-needed");
  assertEquals(needed.map((e) => [e.rule, e.devices]), [["uplink", ["0000:07:10.2"]]]);
  assertMatch(
    needed[0]!.message,
    /^Hostdev interface 0000:07:10\.2 of "a" \(rule "uplink"\) holds 8086:10ca .*, which the host needs now \(default-route: via x\): the repair does not remove an interface, so remove it yourself: run "virsh edit a", delete the <interface type='hostdev'> /,
  );
});

Deno.test("a hostdev whose recorded device is gone is drift alone, also when the host needs what is there now", async () => {
  const free = await treeHost(baseDevices());
  // Another NVMe drive (another model) at the same address, carrying the root filesystem.
  const swapped = baseDevices().map((d) => d.bdf === NVME ? { ...d, device: "0xa80a" } : d);
  const needed = await treeHost(swapped, [ROOT_FS]);
  const nvme = config(
    "  win10:\n    devices:\n      - name: nvme\n        match: { class: nvme }\n",
  );
  await withPort([WIN10], async (libvirt) => {
    libvirt.define(vmOf(planHostdevs({ config: nvme, host: free, libvirt }), "win10").desiredXml);
    const gone = config("  win10:\n    devices: []\n");
    const vm = vmOf(planHostdevs({ config: gone, host: needed, libvirt }), "win10");
    // The record is of the drive that left: the plan removes the hostdev as drift. The drive
    // there now was never this VM's, so it is no host-needed refusal of this VM.
    assertEquals(
      [vm.errors, vm.warnings.map((w) => w.code), vm.remove],
      [[], ["drift"], [NVME]],
    );
    // Refused for another reason, the repair removes it, saying what the start would take.
    const typo = config(
      '  win10:\n    devices:\n      - name: usb\n        match: { vendor_device_id: "1234:5678" }\n',
    );
    const refused = vmOf(planHostdevs({ config: typo, host: needed, libvirt }), "win10");
    assertEquals(refused.errors.map((e) => e.code), ["drift", "no-match"]);
    assertMatch(
      refused.errors[0]!.message,
      /the repair removes it even while the other refusals of "win10" stand, so that the next start cannot hand that device, which the host needs \(mounted-filesystem: \/ on nvme0n1p2\), to the guest$/,
    );
    assertEquals(refused.repair?.remove, [NVME]);
    // The same drive where the host does not need it: "that device", no more.
    const spare = await treeHost(swapped);
    const plain = vmOf(planHostdevs({ config: typo, host: spare, libvirt }), "win10");
    assertMatch(
      plain.errors[0]!.message,
      /so that the next start cannot hand that device to the guest$/,
    );
  });
});

/** win10 holding the GPU as `GPU_CONFIG` applied it on the GPU's first host, then `edit`ed. */
async function appliedGpu(
  libvirt: Parameters<Parameters<typeof withPort>[1]>[0],
  edit = (xml: string) => xml,
): Promise<void> {
  const before = await treeHost([...baseDevices(), GPU, GPU_AUDIO]);
  libvirt.define(
    edit(vmOf(planHostdevs({ config: GPU_CONFIG, host: before, libvirt }), "win10").desiredXml),
  );
}

/** What the repair of win10 does to the GPU's two stale hostdevs: `[move targets, removals]`. */
function gpuRepair(vm: VmPlan): [string[], string[]] {
  return [vm.repair?.move?.map((m) => m.to) ?? [], vm.repair?.remove ?? []];
}

const BOTH_GONE: [string[], string[]] = [[], [GPU.bdf, GPU_AUDIO.bdf]];
const BOTH_FOLLOWED: [string[], string[]] = [["0000:0b:00.0", "0000:0b:00.1"], []];

Deno.test("a repair never follows a card while the plan has host-wide refusals", async () => {
  // No host_use.json: whether the host needs the card's new address is unknown.
  const after = { ...await treeHost(movedGpu()), hostUse: null };
  await withPort([WIN10], async (libvirt) => {
    await appliedGpu(libvirt);
    const vm = vmOf(planHostdevs({ config: GPU_CONFIG, host: after, libvirt }), "win10");
    assertEquals(vm.errors.map((e) => e.code), ["drift", "drift", "host-use-unknown"]);
    assertMatch(
      vm.errors[0]!.message,
      /its card is now at 0000:0b:00\.0 \(same IDs and serial\) but the repair does not follow it: the plan has host-wide refusals; it removes the hostdev/,
    );
    assertEquals(gpuRepair(vm), BOTH_GONE);
  });
});

Deno.test("a repair does not follow a card to an address the host needs, unless its rule allows it", async () => {
  const vga: HostUse = {
    address: "0000:0b:00.0",
    reason: "console-vga",
    detail: "boot_vga=1 with fbcon",
  };
  const after = await treeHost(movedGpu(), [vga]);
  await withPort([WIN10], async (libvirt) => {
    await appliedGpu(libvirt);
    const vm = vmOf(planHostdevs({ config: GPU_CONFIG, host: after, libvirt }), "win10");
    assertEquals(vm.errors.map((e) => e.code), ["drift", "drift", "group-contains-host-critical"]);
    // The card itself is the console's; its audio function shares the refused group.
    assertMatch(
      vm.errors[0]!.message,
      /does not follow it: the host needs it there \(console-vga: boot_vga=1 with fbcon\); it removes/,
    );
    assertMatch(
      vm.errors[1]!.message,
      /does not follow it: rule "gpu" is refused there \(\[group-contains-host-critical\] below\)/,
    );
    assertEquals(gpuRepair(vm), BOTH_GONE);

    // allow_host_critical: true on the rule: an unrefused move would go there, so the repair does.
    const allowed = config(
      '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
        "        allow_host_critical: true\n" +
        '      - name: usb\n        match: { vendor_device_id: "1234:5678" }\n',
    );
    const kept = vmOf(planHostdevs({ config: allowed, host: after, libvirt }), "win10");
    assertEquals(kept.errors.map((e) => e.code), ["drift", "drift", "no-match"]);
    assertEquals(gpuRepair(kept), BOTH_FOLLOWED);
  });
});

Deno.test("a repair does not follow a card while its rule is refused for any reason", async () => {
  const after = await treeHost(movedGpu());
  // boot_order next to <os><boot dev>: a refusal of rule "gpu" naming no device or group.
  const booting = config(
    '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
      "        boot_order: 2\n",
  );
  await withPort([WIN10], async (libvirt) => {
    await appliedGpu(libvirt, (xml) => xml.replace("</os>", "  <boot dev='hd'/>\n  </os>"));
    const vm = vmOf(planHostdevs({ config: booting, host: after, libvirt }), "win10");
    assertEquals(vm.errors.map((e) => e.code), ["drift", "drift", "boot-order-conflict"]);
    assertMatch(
      vm.errors[0]!.message,
      /does not follow it: rule "gpu" is refused there \(\[boot-order-conflict\] below\)/,
    );
    assertEquals(gpuRepair(vm), BOTH_GONE);
  });
});

Deno.test("a repair does not follow a card into a group another rule's refusal names a device of", async () => {
  // Rule "usb" is ambiguous between a controller in the card's new group 7 and one in group 8.
  const usb = (bdf: string, group: number) =>
    dev({ bdf, group, class: "0x0c0330", vendor: "0x1b21", device: "0x2142" });
  const after = await treeHost(movedGpu([usb("0000:0b:00.2", 7), usb("0000:0c:00.0", 8)]));
  const cfg = config(
    '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
      '      - name: usb\n        match: { vendor_device_id: "1b21:2142" }\n',
  );
  await withPort([WIN10], async (libvirt) => {
    await appliedGpu(libvirt);
    const vm = vmOf(planHostdevs({ config: cfg, host: after, libvirt }), "win10");
    assertEquals(vm.errors.slice(0, 2).map((e) => e.code), ["drift", "drift"]);
    assertOk(vm.errors.some((e) => e.code === "ambiguous" && e.rule === "usb"));
    assertMatch(
      vm.errors[0]!.message,
      /does not follow it: rule "gpu" is refused there \(\[ambiguous\] below\)/,
    );
    assertEquals(gpuRepair(vm), BOTH_GONE);
  });
});

Deno.test("a repair looks for a card only among what its own rule takes", async () => {
  // "gpu" names the card by its old address too; another rule of win10 takes it where it is now.
  const narrowed = config(
    "  win10:\n    devices:\n      - name: gpu\n" +
      '        match: { vendor_device_id: "10de:2684", address: "0000:01:00.0" }\n' +
      '      - name: nv\n        match: { vendor_device_id: "10de:2684" }\n',
  );
  const after = await treeHost(movedGpu());
  await withPort([WIN10], async (libvirt) => {
    await appliedGpu(libvirt);
    const vm = vmOf(planHostdevs({ config: narrowed, host: after, libvirt }), "win10");
    assertEquals(vm.errors.map((e) => e.code), ["drift", "drift", "no-match"]);
    assertMatch(
      vm.errors[0]!.message,
      /its card is now at 0000:0b:00\.0 \(same IDs and serial\) but the repair does not follow it: rule "gpu" does not take it there; it removes/,
    );
    assertEquals(gpuRepair(vm), BOTH_GONE);
  });
});

Deno.test("a repair follows two functions with one serial to two addresses, never one twice", async () => {
  // A dual-port NIC whose functions carry the same device serial number, moved from bus 05 to 0c.
  const port = (bdf: string, group: number) => i350Port(bdf, group, "a0-36-9f-ff-ff-12-34-56");
  const nic = config(
    '  win10:\n    devices:\n      - name: nic\n        match: { vendor_device_id: "8086:1521" }\n',
  );
  const withTypo = config(
    '  win10:\n    devices:\n      - name: nic\n        match: { vendor_device_id: "8086:1521" }\n' +
      '      - name: usb\n        match: { vendor_device_id: "1234:5678" }\n',
  );
  const before = await treeHost([
    ...baseDevices(),
    port("0000:05:00.0", 5),
    port("0000:05:00.1", 5),
  ]);
  const after = await treeHost([
    ...baseDevices(),
    port("0000:0c:00.0", 9),
    port("0000:0c:00.1", 9),
  ]);
  await withPort([WIN10], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: nic, host: before, libvirt }), "win10");
    assertEquals(applied.add.map((a) => a.address), ["0000:05:00.0", "0000:05:00.1"]);
    libvirt.define(applied.desiredXml);
    const vm = vmOf(planHostdevs({ config: withTypo, host: after, libvirt }), "win10");
    assertEquals(vm.errors.map((e) => e.code), ["drift", "drift", "no-match"]);
    assertEquals(vm.repair?.move?.map((m) => [m.from, m.to]), [
      ["0000:05:00.0", "0000:0c:00.0"],
      ["0000:05:00.1", "0000:0c:00.1"],
    ]);
  });
});

Deno.test("a drift refusal says the serial of the drive recorded and of the one there now", async () => {
  // Two drives of one model in two VMs swap slots while both VMs are refused: told apart only by
  // their serials, which both sides of the message say, with the rule.
  const drive = (bdf: string, serial: string) =>
    dev({
      bdf,
      group: bdf === "0000:06:00.0" ? 6 : 7,
      class: "0x010802",
      vendor: "0x1e0f",
      device: "0x0009",
      subsystem_vendor: "0x1e0f",
      subsystem_device: "0x0001",
      driver: "nvme",
      serial,
    });
  const [a, b] = ["8c-e3-8e-ff-ff-10-20-30", "8c-e3-8e-ff-ff-10-20-31"];
  const rules = (typo: string) =>
    config(
      [["va", a], ["vb", b]].map(([vm, serial]) =>
        `  ${vm}:\n    devices:\n      - name: d\n` +
        `        match: { vendor_device_id: "1e0f:0009", serial: "${serial}" }\n${typo}`
      ).join(""),
    );
  const typo = '      - name: usb\n        match: { vendor_device_id: "1234:5678" }\n';
  const before = await treeHost([
    ...baseDevices(),
    drive("0000:06:00.0", a),
    drive("0000:07:00.0", b),
  ]);
  const after = await treeHost([
    ...baseDevices(),
    drive("0000:06:00.0", b),
    drive("0000:07:00.0", a),
  ]);
  const va = domainXml("va", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e11");
  const vb = domainXml("vb", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e12");
  await withPort([va, vb], (libvirt) => {
    const applied = planHostdevs({ config: rules(""), host: before, libvirt });
    for (const vm of applied.vms) libvirt.define(vm.desiredXml);
    const vm = vmOf(planHostdevs({ config: rules(typo), host: after, libvirt }), "va");
    assertEquals(vm.errors[0]?.code, "drift");
    assertMatch(
      vm.errors[0]!.message,
      new RegExp(
        '^Hostdev 0000:06:00\\.0 of "va" \\(rule "d"\\) was recorded as 1e0f:0009 \\(subsystem ' +
          `1e0f:0001, class 010802, serial ${a}\\) but the address now holds 1e0f:0009 \\(subsystem ` +
          `1e0f:0001, class 010802, serial ${b}\\): its card is now at 0000:07:00\\.0`,
      ),
    );
  });
});

Deno.test("a hostdev on a device the host needs is allowed by its recorded rule's allow_host_critical, a hand-added one by none", async () => {
  const free = await treeHost(baseDevices());
  const needed = await treeHost(baseDevices(), [ROOT_FS]);
  const nvme = (match: string) =>
    config(
      `  win10:\n    devices:\n      - name: nvme\n        match: ${match}\n` +
        "        allow_host_critical: true\n",
    );
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: nvme("{ class: nvme }"), host: free, libvirt }), "win10")
        .desiredXml,
    );
    // The rule that added it allows it: it matches nothing now, yet the hostdev is no refusal.
    const typo = nvme('{ vendor_device_id: "1234:5678" }');
    const vm = vmOf(planHostdevs({ config: typo, host: needed, libvirt }), "win10");
    assertEquals([vm.errors.map((e) => e.code), vm.repair], [["no-match"], undefined]);
  });
  // A hand-added hostdev on the root disk's controller, taken by a rule that allows it: a rule
  // never takes a hand-added hostdev over, so nothing records it, and the start guard would
  // refuse it at every start: refused, with how to remove it (the rule then adds its own).
  const hand = domainXml("win10", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01", hostdevXml(NVME));
  await withPort([hand], (libvirt) => {
    const vm = vmOf(
      planHostdevs({ config: nvme("{ class: nvme }"), host: needed, libvirt }),
      "win10",
    );
    assertEquals(vm.errors.map((e) => e.code), ["host-needed"]);
    assertMatch(vm.errors[0]!.message, /was added by hand .*remove it yourself/);
  });
});

Deno.test("a repair says where a card went when the VM names that address already, and does not follow it there", async () => {
  const after = await treeHost(movedGpu());
  await withPort([WIN10], async (libvirt) => {
    // A hostdev added by hand at 0000:0b:00.0, where the GPU is now.
    await appliedGpu(
      libvirt,
      (xml) => xml.replace("</devices>", `${hostdevXml("0000:0b:00.0")}\n  </devices>`),
    );
    const vm = vmOf(planHostdevs({ config: WITH_TYPO, host: after, libvirt }), "win10");
    assertEquals(vm.errors.map((e) => e.code).slice(0, 2), ["drift", "drift"]);
    assertMatch(
      vm.errors[0]!.message,
      /its card is now at 0000:0b:00\.0 \(same IDs and serial\) but the repair does not follow it: "win10" names that address already; it removes the hostdev/,
    );
    // The audio function follows: with the hand-added hostdev, group 7 is whole in the VM.
    assertEquals(gpuRepair(vm), [["0000:0b:00.1"], [GPU.bdf]]);
    const repaired = parseDomainXml(vm.repair?.desiredXml ?? "");
    // In place: the audio function's hostdev where it was, the hand-added one kept after it.
    assertEquals(repaired.hostdevs.map((h) => [h.address, h.owned]), [
      ["0000:0b:00.1", true],
      ["0000:0b:00.0", false],
    ]);
    // With rule "gpu" gone from the config, the repair still says where each card is.
    const typo = config(
      '  win10:\n    devices:\n      - name: usb\n        match: { vendor_device_id: "1234:5678" }\n',
    );
    const gone = vmOf(planHostdevs({ config: typo, host: after, libvirt }), "win10");
    assertMatch(
      gone.errors[0]!.message,
      /now at 0000:0b:00\.0 .*: "win10" names that address already;/,
    );
    assertMatch(
      gone.errors[1]!.message,
      /now at 0000:0b:00\.1 .*: rule "gpu" is no longer in the config;/,
    );
    assertEquals(gpuRepair(gone), BOTH_GONE);
  });
});

/** A Renesas 1912:0014 USB 3 controller at `bdf`, alone in IOMMU group `group`. */
function usbController(bdf: string, group: number): HostDeviceDescription {
  return dev({
    bdf,
    group,
    class: "0x0c0330",
    vendor: "0x1912",
    device: "0x0014",
    subsystem_vendor: "0x1912",
    subsystem_device: "0x0014",
    driver: "xhci_hcd",
  });
}

Deno.test("a rule naming its device by address alone is refused when another device sits there now, and the repair removes the hostdev", async () => {
  const rules = config(
    '  win10:\n    devices:\n      - name: usb\n        match: { address: "0000:08:00.0" }\n',
  );
  const before = await treeHost([
    ...baseDevices(),
    usbController("0000:07:00.0", 7),
    usbController("0000:08:00.0", 8),
  ]);
  // The controller at 08:00.0 gave way to a NIC: the address alone cannot tell.
  const nic = dev({
    bdf: "0000:08:00.0",
    group: 8,
    class: "0x020000",
    device: "0x1533",
    subsystem_vendor: "0x8086",
    subsystem_device: "0x0001",
    driver: "igb",
  });
  const after = await treeHost([...baseDevices(), usbController("0000:07:00.0", 7), nic]);
  const same = await treeHost([
    ...baseDevices(),
    usbController("0000:07:00.0", 7),
    usbController("0000:08:00.0", 8),
  ]);
  const withSerial = await treeHost([
    ...baseDevices(),
    usbController("0000:07:00.0", 7),
    { ...usbController("0000:08:00.0", 8), serial: "00-11-22-ff-ff-33-44-66" },
  ]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: rules, host: before, libvirt }), "win10").desiredXml,
    );
    // The recorded controller still there: nothing to say.
    const kept = vmOf(planHostdevs({ config: rules, host: same, libvirt }), "win10");
    assertEquals([kept.errors, kept.changed], [[], false]);
    // A serial seen now where none was recorded (an earlier read may not have reached it) is no
    // proof of another card.
    const read = vmOf(planHostdevs({ config: rules, host: withSerial, libvirt }), "win10");
    assertEquals(read.errors, []);
    const vm = vmOf(planHostdevs({ config: rules, host: after, libvirt }), "win10");
    const own = vm.errors.find((e) => e.rule === "usb" && e.location !== undefined);
    assertEquals(own?.code, "drift");
    assertMatch(
      own!.message,
      /^Rule "usb" of VM "win10" names its device by address alone, and 0000:08:00\.0 now holds 8086:1533 \(subsystem 8086:0001, class 020000\), not the recorded 1912:0014 \(subsystem 1912:0014, class 0c0330\): add the IDs of the device you mean to the rule \(vendor_device_id: "1912:0014" for the recorded one, "8086:1533" to take the new one\)$/,
    );
    assertEquals(vm.changed, false);
    assertEquals(vm.repair?.remove, ["0000:08:00.0"]);
  });
});

Deno.test("a repair does not say a removed card went to its twin that the VM holds at its own recorded address", async () => {
  const rules = config(
    "  win10:\n    devices:\n" +
      '      - name: a\n        match: { vendor_device_id: "1912:0014", address: "07:00.0" }\n' +
      '      - name: b\n        match: { vendor_device_id: "1912:0014", address: "08:00.0" }\n',
  );
  const before = await treeHost([
    ...baseDevices(),
    usbController("0000:07:00.0", 7),
    usbController("0000:08:00.0", 8),
  ]);
  // The controller at 08:00.0 was pulled; its twin at 07:00.0 is rule a's, recorded there.
  const after = await treeHost([...baseDevices(), usbController("0000:07:00.0", 7)]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: rules, host: before, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: rules, host: after, libvirt }), "win10");
    const stale = vm.errors.find((e) => e.code === "drift");
    assertMatch(
      stale?.message ?? "",
      /^Hostdev 0000:08:00\.0 of "win10" \(rule "b"\) was recorded as 1912:0014 .* but the address now holds nothing: the repair removes it even while/,
    );
    assertEquals(vm.repair?.remove, ["0000:08:00.0"]);
    assertEquals(vm.repair?.move, []);
  });
});

Deno.test("a refused VM's repair follows each card a new card shifted one bus on, as an unrefused VM's plan does", async () => {
  const rules = config(
    '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
      '      - name: usb\n        match: { vendor_device_id: "1912:0014" }\n',
  );
  const refused = config(
    '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
      '      - name: usb\n        match: { vendor_device_id: "1912:0014" }\n' +
      '      - name: typo\n        match: { vendor_device_id: "1234:5678" }\n',
  );
  const before = await treeHost([
    ...movedGpu(),
    usbController("0000:0c:00.0", 8),
  ]);
  // A SATA controller added before the GPU: the GPU moved to 0c, the USB controller to 0d.
  const sata = dev({ bdf: "0000:0b:00.0", group: 9, class: "0x010601", driver: "ahci" });
  const after = await treeHost([
    ...baseDevices(),
    sata,
    { ...GPU, bdf: "0000:0c:00.0", group: 7 },
    { ...GPU_AUDIO, bdf: "0000:0c:00.1", group: 7 },
    usbController("0000:0d:00.0", 8),
  ]);
  await withPort([WIN10], async (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: rules, host: before, libvirt }), "win10").desiredXml,
    );
    const moves = (m: { from: string; to: string }[] | undefined) =>
      (m ?? []).map((x) => [x.from, x.to]);
    const plain = vmOf(planHostdevs({ config: rules, host: after, libvirt }), "win10");
    const shifted = [
      ["0000:0b:00.0", "0000:0c:00.0"],
      ["0000:0b:00.1", "0000:0c:00.1"],
      ["0000:0c:00.0", "0000:0d:00.0"],
    ];
    assertEquals(moves(plain.move), shifted);
    const vm = vmOf(planHostdevs({ config: refused, host: after, libvirt }), "win10");
    assertEquals([moves(vm.repair?.move), vm.repair?.remove], [shifted, []]);
    const repaired = parseDomainXml(vm.repair?.desiredXml ?? "");
    assertEquals(repaired.records.map((r) => [r.address, r.rule]), [
      ["0000:0c:00.0", "gpu"],
      ["0000:0c:00.1", "gpu"],
      ["0000:0d:00.0", "usb"],
    ]);
    // Two cards that swapped slots: each follows its card into the address the other leaves.
    const swapped = await treeHost([
      ...baseDevices(),
      usbController("0000:0b:00.0", 8),
      { ...GPU, bdf: "0000:0c:00.0", group: 7 },
      { ...GPU_AUDIO, bdf: "0000:0c:00.1", group: 7 },
    ]);
    const swap = vmOf(planHostdevs({ config: refused, host: swapped, libvirt }), "win10");
    assertEquals([moves(swap.repair?.move), swap.repair?.remove], [[
      ["0000:0b:00.0", "0000:0c:00.0"],
      ["0000:0b:00.1", "0000:0c:00.1"],
      ["0000:0c:00.0", "0000:0b:00.0"],
    ], []]);
  });
});

/** A Samsung NVMe drive of one model at `bdf`, with `serial` and, if given, in slot `slot`. */
function nvmeTwin(bdf: string, serial: string | null, slot?: string): HostDeviceDescription {
  return dev({
    bdf,
    group: Number.parseInt(bdf.slice(5, 7), 16),
    class: "0x010802",
    vendor: "0x144d",
    device: "0xa80a",
    subsystem_vendor: "0x144d",
    subsystem_device: "0xa801",
    driver: "nvme",
    flr: true,
    serial,
    ...(slot === undefined ? {} : { slot }),
  });
}

const SERIAL_A = "00-11-22-ff-ff-33-44-0a";
const SERIAL_B = "00-11-22-ff-ff-33-44-0b";
const SERIAL_C = "00-11-22-ff-ff-33-44-0c";

/** win10 takes the drive at 0b:00.0 by its IDs and address, no serial or slot. */
const NVME_AT_0B = config(
  '  win10:\n    devices:\n      - name: nas\n        match: { vendor_device_id: "144d:a80a", address: "0b:00.0" }\n',
);

Deno.test("a rule of IDs and address whose recorded drive a new drive shifted one bus on is refused, naming where its drive went", async () => {
  const before = await treeHost([
    ...baseDevices(),
    nvmeTwin("0000:0a:00.0", SERIAL_A),
    nvmeTwin("0000:0b:00.0", SERIAL_B),
  ]);
  // Drive C added before them: A moved to 0b:00.0, the VM's drive B to 0c:00.0.
  await using tree = await tempHostTree({
    devices: [
      ...baseDevices(),
      nvmeTwin("0000:0a:00.0", SERIAL_C),
      nvmeTwin("0000:0b:00.0", SERIAL_A),
      nvmeTwin("0000:0c:00.0", SERIAL_B),
    ],
    host_use: [],
  });
  const after = await discoverHost({ root: tree.dir });
  await withPort([WIN10], async (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: NVME_AT_0B, host: before, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: NVME_AT_0B, host: after, libvirt }), "win10");
    const own = vm.errors.find((e) => e.rule === "nas" && e.location !== undefined);
    assertEquals(own?.code, "drift");
    assertEquals(own?.devices, ["0000:0b:00.0", "0000:0c:00.0"]);
    assertMatch(
      own!.message,
      new RegExp(
        `^Rule "nas" of VM "win10" takes 0000:0b:00\\.0 by its address, and the device there now is 144d:a80a \\(subsystem 144d:a801, class 010802, serial ${SERIAL_A}\\), not the recorded one \\(serial ${SERIAL_B}\\), which is now at 0000:0c:00\\.0 \\(same IDs and serial\\): a card added or removed before it renumbered the buses: to keep the VM's card, set address: "0000:0c:00\\.0", or serial: "${SERIAL_B}" in its place \\(which follows it wherever it sits\\); to take the one at 0000:0b:00\\.0 instead, add serial: "${SERIAL_A}"$`,
      ),
    );
    // The warning that handed drive A over is gone: the VM keeps its definition, and the repair
    // takes the hostdev away from 0b:00.0 so that no start hands drive A over either.
    assertEquals(vm.warnings.filter((w) => w.code === "drift"), []);
    assertEquals([vm.changed, vm.repair?.remove], [false, ["0000:0b:00.0"]]);
    // The start guard refuses the start as it is, with the same record.
    const start = await guardStartOnTree({
      vm: "win10",
      xml: libvirt.getPersistentXml("win10"),
      dir: tree.dir,
      live: false,
    });
    assertEquals(start.refusals, [["replaced", "0000:0b:00.0"]]);
    // Either fix the refusal names keeps the VM's drive B, moved to its new address.
    for (const key of ['address: "0000:0c:00.0"', `serial: "${SERIAL_B}"`]) {
      const fixed = vmOf(
        planHostdevs({ config: config(NVME_AT_0B_WITH(key)), host: after, libvirt }),
        "win10",
      );
      assertEquals(fixed.errors, [], key);
      assertEquals(fixed.hostdevs, ["0000:0c:00.0"], key);
    }
  });
});

/** {@link NVME_AT_0B}'s YAML with `key` in place of its address. */
function NVME_AT_0B_WITH(key: string): string {
  return `  win10:\n    devices:\n      - name: nas\n        match: { vendor_device_id: "144d:a80a", ${key} }\n`;
}

Deno.test("a rule of IDs and address whose recorded drive is gone from the host is refused when the drive there now may have been elsewhere, and warned about when it sits in the recorded slot", async () => {
  const before = await treeHost([
    ...baseDevices(),
    nvmeTwin("0000:0a:00.0", SERIAL_A),
    nvmeTwin("0000:0b:00.0", SERIAL_B),
  ]);
  // Drive B gone, and a drive C at 0b:00.0: put in its place, or shifted there from elsewhere.
  const replaced = await treeHost([
    ...baseDevices(),
    nvmeTwin("0000:0a:00.0", SERIAL_A),
    nvmeTwin("0000:0b:00.0", SERIAL_C),
  ]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: NVME_AT_0B, host: before, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: NVME_AT_0B, host: replaced, libvirt }), "win10");
    const own = vm.errors.find((e) => e.rule === "nas" && e.location !== undefined);
    assertEquals(own?.code, "drift");
    assertMatch(
      own!.message,
      new RegExp(
        `^Rule "nas" of VM "win10" takes 0000:0b:00\\.0 by its address, and the device there now is 144d:a80a \\(subsystem 144d:a801, class 010802, serial ${SERIAL_C}\\), not the recorded one \\(serial ${SERIAL_B}\\), which is on the host no more: a card removed before it shifts the next one onto its address, so this may be a card that was elsewhere: if you replaced the VM's card with this one, add serial: "${SERIAL_C}" to the rule; to keep the VM's card, put it back$`,
      ),
    );
    assertEquals([vm.changed, vm.repair?.remove], [false, ["0000:0b:00.0"]]);
  });
  // In slots the firmware names: drive C sits in the slot drive B was recorded in.
  const slotted = await treeHost([
    ...baseDevices(),
    nvmeTwin("0000:0a:00.0", SERIAL_A, "M2_1"),
    nvmeTwin("0000:0b:00.0", SERIAL_B, "M2_2"),
  ]);
  const inPlace = await treeHost([
    ...baseDevices(),
    nvmeTwin("0000:0a:00.0", SERIAL_A, "M2_1"),
    nvmeTwin("0000:0b:00.0", SERIAL_C, "M2_2"),
  ]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: NVME_AT_0B, host: slotted, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: NVME_AT_0B, host: inPlace, libvirt }), "win10");
    assertEquals(vm.errors, []);
    assertMatch(
      vm.warnings.find((w) => w.code === "drift")?.message ?? "",
      new RegExp(
        `serial ${SERIAL_C}, slot M2_2\\): rule "nas" matches the new device, so it stays and its record is updated$`,
      ),
    );
  });
});

Deno.test("a rule of IDs and address whose recorded card a new card shifted out of its recorded slot is refused, with no serial to tell them apart", async () => {
  const slotted = (bdf: string, slot: string) => ({ ...nvmeTwin(bdf, null, slot), flr: true });
  const before = await treeHost([
    ...baseDevices(),
    slotted("0000:0a:00.0", "M2_1"),
    slotted("0000:0b:00.0", "M2_2"),
  ]);
  const after = await treeHost([
    ...baseDevices(),
    slotted("0000:0a:00.0", "M2_3"),
    slotted("0000:0b:00.0", "M2_1"),
    slotted("0000:0c:00.0", "M2_2"),
  ]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: NVME_AT_0B, host: before, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: NVME_AT_0B, host: after, libvirt }), "win10");
    const own = vm.errors.find((e) => e.rule === "nas" && e.location !== undefined);
    assertMatch(
      own?.message ?? "",
      /, not the recorded one \(slot M2_2\), which is now at 0000:0c:00\.0 \(same IDs and subsystem in the recorded slot M2_2\): a card added or removed before it renumbered the buses: to keep the VM's card, set address: "0000:0c:00\.0", or slot: "M2_2" in its place \(which stays with the slot\); to take the one at 0000:0b:00\.0 instead, add slot: "M2_1"$/,
    );
  });
});

Deno.test("a rule of IDs and address whose card was replaced in place by another board of its chip is warned about, not refused as moved onto another VM's twin", async () => {
  // No serials: the two drives are told apart by their subsystem alone, once one is replaced.
  const twin = (bdf: string, subsystem = "0xa801") => ({
    ...nvmeTwin(bdf, null),
    subsystem_device: subsystem,
  });
  const both = config(
    '  win10:\n    devices:\n      - name: a\n        match: { vendor_device_id: "144d:a80a", address: "0a:00.0" }\n' +
      '  linux:\n    devices:\n      - name: b\n        match: { vendor_device_id: "144d:a80a", address: "0b:00.0" }\n',
  );
  const before = await treeHost([...baseDevices(), twin("0000:0a:00.0"), twin("0000:0b:00.0")]);
  // win10's drive replaced in its place by one of another subsystem; linux keeps its own.
  const after = await treeHost([
    ...baseDevices(),
    twin("0000:0a:00.0", "0xa802"),
    twin("0000:0b:00.0"),
  ]);
  await withPort([WIN10, LINUX], (libvirt) => {
    const applied = planHostdevs({ config: both, host: before, libvirt });
    for (const name of ["win10", "linux"]) libvirt.define(vmOf(applied, name).desiredXml);
    const vm = vmOf(planHostdevs({ config: both, host: after, libvirt }), "win10");
    // linux's drive sits at the address recorded for it: no card of win10's went there.
    assertEquals(vm.errors, []);
    assertEquals(vm.hostdevs, ["0000:0a:00.0"]);
    assertMatch(
      vm.warnings.find((w) => w.code === "drift")?.message ?? "",
      /subsystem 144d:a802, class 010802\): rule "a" matches the new device, so it stays and its record is updated$/,
    );
  });
});

Deno.test("a recorded slot holding a newline stays on the refusal's line where the card it names moved", async () => {
  // The recorded slot comes back from the domain's metadata and a slot name is a file name in a
  // captured tree: "not the recorded one (slot ...)" wrote it raw while the evidence beside it
  // escaped it, and the rest read as a line of plan's output of its own.
  const m2 = "M2_2\n  refused [fake]";
  const slotted = (bdf: string, slot: string) => ({ ...nvmeTwin(bdf, null, slot), flr: true });
  const before = await treeHost([
    ...baseDevices(),
    slotted("0000:0a:00.0", "M2_1"),
    slotted("0000:0b:00.0", m2),
  ]);
  const after = await treeHost([
    ...baseDevices(),
    slotted("0000:0a:00.0", "M2_3"),
    slotted("0000:0b:00.0", "M2_1"),
    slotted("0000:0c:00.0", m2),
  ]);
  await withPort([WIN10], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: NVME_AT_0B, host: before, libvirt }), "win10").desiredXml,
    );
    const vm = vmOf(planHostdevs({ config: NVME_AT_0B, host: after, libvirt }), "win10");
    const own = vm.errors.find((e) => e.rule === "nas" && e.location !== undefined);
    const escaped = "M2_2\\u000a  refused [fake]";
    assertOk(
      (own?.message ?? "").includes(
        `, not the recorded one (slot ${escaped}), which is now at 0000:0c:00.0 (same IDs and subsystem in the recorded slot ${escaped})`,
      ),
      own?.message,
    );
  });
});
