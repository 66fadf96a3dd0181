import fc from "fast-check";
import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { type Config, parseConfig } from "../../lib/config/config.ts";
import { closeOverGroups, findGroupConflicts } from "../../lib/resolve/closure.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import type { HostDescription, HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import { resolveRule } from "../../lib/resolve/match.ts";
import { resolveConfig } from "../../lib/plan/resolve.ts";
import type { HostTopology, HostUse } from "../../lib/host/types.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { readDeviceAt } from "../../lib/host/sysfs_device.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { tempHostTree } from "../helpers/hosts.ts";

const HOSTS = new URL("../fixtures/hosts/", import.meta.url);

function realHost(name: string, extra: { host_use?: HostUse[] } = {}): HostTopology {
  const description = JSON.parse(
    Deno.readTextFileSync(new URL(`${name}.json`, HOSTS)),
  ) as HostDescription;
  return topologyFromDescription({ ...description, ...extra }, { source: name });
}

function config(vms: string): Config {
  return parseConfig(`version: 1\nvms:\n${vms}`, { file: "c.yaml" });
}

function closeVm(cfg: Config, host: HostTopology, current?: Set<string>) {
  const vm = cfg.vms[0]!;
  const resolutions = vm.rules.map((r) => resolveRule(r, host));
  return closeOverGroups(vm.name, resolutions, host, current ? { current } : {});
}

Deno.test("closeOverGroups() adds the group's other endpoints and leaves bridges out, saying so", () => {
  const cfg = config(`  linux:
    devices:
      - name: rx550
        match: { vendor_device_id: "1002:699f" }
        allow_host_critical: true
`);
  const closed = closeVm(cfg, realHost("b550-aorus-pro"));
  assertEquals(closed.devices.map((d) => [d.device.address, d.reason]), [
    ["0000:02:00.0", "iommu-group"],
    ["0000:02:00.1", "iommu-group"],
    ["0000:04:00.0", "matched"],
    ["0000:04:00.1", "iommu-group"],
    ["0000:05:00.0", "iommu-group"],
  ]);
  assertEquals(closed.reasoning, [
    'Group 15 (rule "rx550"): matched 0000:04:00.0; added 0000:02:00.0 (1022:43ee USB controller), 0000:02:00.1 (1022:43eb SATA controller), 0000:04:00.1 (1002:aae0 Audio device), 0000:05:00.0 (10ec:8125 Ethernet controller): VFIO assigns the whole group',
    "Group 15: left out PCI bridges 0000:02:00.2, 0000:03:00.0, 0000:03:08.0: bridges stay with the host",
  ]);
  // With the override the refusal becomes a warning.
  assertEquals(closed.errors, []);
  assertEquals(closed.warnings.map((w) => w.code).includes("group-contains-host-critical"), true);
});

Deno.test("closeOverGroups(): a function one rule brings in with its group and another rule matches is that rule's", () => {
  // Its record (and so the start guard's policy and the plan's wording) names the rule that chose
  // it, whichever rule came first.
  const cfg = config(`  linux:
    devices:
      - name: rx550
        match: { vendor_device_id: "1002:699f" }
        allow_host_critical: true
      - name: audio
        match: { vendor_device_id: "1002:aae0" }
        allow_host_critical: true
`);
  const closed = closeVm(cfg, realHost("b550-aorus-pro"));
  assertEquals(
    closed.devices.filter((d) => d.device.address.startsWith("0000:04:")).map((d) => [
      d.device.address,
      d.reason,
      d.rule.name,
    ]),
    [["0000:04:00.0", "matched", "rx550"], ["0000:04:00.1", "matched", "audio"]],
  );
});

Deno.test("closeOverGroups() refuses a group holding the host's LPC bridge and names the override", () => {
  const cfg = config(`  nas:
    devices:
      - name: sata
        match: { vendor_device_id: "8086:1d00" }
`);
  const closed = closeVm(cfg, realHost("hp-dl380p-g8"));
  const [error] = closed.errors;
  assertOk(error);
  assertEquals(error.code, "group-contains-host-critical");
  assertEquals(error.devices, ["0000:00:1f.0"]);
  assertEquals(error.group, 28);
  assertEquals(error.override, "allow_host_critical: true");
  assertEquals(
    error.message,
    'Rule "sata" of VM "nas" would take devices the host likely needs: 0000:00:1f.0 (ISA/LPC bridge): 0000:00:1f.2 is on bus 00, built into the chipset or CPU (or, on a virtual machine, on its root bus), where no slot moves it to another IOMMU group: pass a card in a slot with a group of its own instead, or set "allow_host_critical: true" on the rule',
  );
});

Deno.test("closeOverGroups(): a group member the host uses now is not offered to the override", () => {
  // B550's chipset group: the GPU shares it with the SATA controller of / and the NIC of the
  // default route. allow_host_critical would hand both to the guest: the refusal says so and
  // names no override.
  const host = realHost("b550-aorus-pro", {
    host_use: [
      { address: "0000:02:00.1", reason: "mounted-filesystem", detail: "/ on sda2" },
      { address: "0000:05:00.0", reason: "default-route", detail: "default route via enp5s0" },
    ],
  });
  const cfg = config(`  win:
    devices:
      - name: gpu
        match: { vendor_device_id: "1002:699f" }
`);
  const [error] = closeVm(cfg, host).errors;
  assertEquals(error?.code, "group-contains-host-critical");
  assertEquals(error?.override, undefined);
  assertMatch(
    error?.message ?? "",
    /: move the card to another slot \(another IOMMU group\); "allow_host_critical: true" would give the guest 0000:02:00\.1, 0000:05:00\.0, which the host uses now$/,
  );
  // Without that use (a captured tree that cannot say), the override is named as before.
  const [unknown] = closeVm(cfg, realHost("b550-aorus-pro")).errors;
  assertEquals(unknown?.override, "allow_host_critical: true");
});

Deno.test("closeOverGroups() refuses a device the running host uses, even when matched directly", () => {
  const host = realHost("trx40-creator", {
    host_use: [{ address: "0000:4a:00.0", reason: "mounted-filesystem", detail: "/ on nvme0n1p2" }],
  });
  const cfg = config(`  vm:
    devices:
      - name: disk
        match: { class: nvme }
`);
  const [error] = closeVm(cfg, host).errors;
  assertEquals(error?.code, "group-contains-host-critical");
  assertMatch(
    error?.message ?? "",
    /0000:4a:00\.0 \(in use by the host \(mounted-filesystem: \/ on nvme0n1p2\)\)/,
  );
  // The rule chose the host's own disk: no other slot makes it safe, so that is not the advice.
  assertMatch(
    error?.message ?? "",
    /: narrow the rule to another device \(serial, slot or address\), or, only if the host no longer needs it, set "allow_host_critical: true" on the rule$/,
  );
});

Deno.test("closeOverGroups() does not call a card's own functions in one slot host-critical", () => {
  const cfg = config(`  firewall:
    devices:
      - match: { vendor_device_id: "14e4:1657" }
`);
  const closed = closeVm(cfg, realHost("hp-dl380p-g8"));
  assertEquals(closed.errors, []);
  assertEquals(closed.devices.length, 4);
});

Deno.test("closeOverGroups(): on bus 00 a slot's other functions are other devices, not the one asked for", () => {
  // Intel's CNVi Wi-Fi sits at 00:14.3 beside the chipset's USB controller (00:14.0) and SRAM
  // (00:14.2), all three in group 7: taking the Wi-Fi takes the host's USB controller.
  const z690 = JSON.parse(
    Deno.readTextFileSync(new URL("z690-asus-adl.json", HOSTS)),
  ) as HostDescription;
  const cnvi: HostDeviceDescription = {
    bdf: "0000:00:14.3",
    group: 7,
    class: "0x028000",
    vendor: "0x8086",
    device: "0x7af0",
    subsystem_vendor: "0x8086",
    subsystem_device: "0x0094",
    driver: "iwlwifi",
    revision: "0x11",
  };
  const host = topologyFromDescription(
    { ...z690, devices: [...z690.devices, cnvi] },
    { source: "z690 with CNVi" },
  );
  const cfg = config(`  vm:
    devices:
      - name: wifi
        match: { vendor_device_id: "8086:7af0" }
`);
  const closed = closeVm(cfg, host);
  assertEquals(closed.devices.map((d) => d.device.address), [
    "0000:00:14.0",
    "0000:00:14.2",
    "0000:00:14.3",
  ]);
  const [error] = closed.errors;
  assertEquals([error?.code, error?.rule, error?.devices], [
    "group-contains-host-critical",
    "wifi",
    ["0000:00:14.0"],
  ]);
  assertMatch(
    error?.message ?? "",
    /0000:00:14\.0 \(USB controller in the same root-bus slot, not part of the device asked for\): 0000:00:14\.3 is on bus 00, built into the chipset or CPU \(or, on a virtual machine, on its root bus\), where no slot moves it to another IOMMU group: pass a card in a slot with a group of its own instead, or set "allow_host_critical: true" on the rule$/,
  );
});

Deno.test("closeOverGroups(): behind a bridge another vendor's USB controller in the card's slot is refused, not taken as the card's", () => {
  // An AMD APU (Renoir) whose internal bus is one group: the iGPU and its HDMI audio are 1002's;
  // the PSP, two USB controllers and the audio coprocessor in the same slot are the CPU's (1022).
  const fn = (bdf: string, vendor: string, device: string, cls: string): HostDeviceDescription => ({
    bdf,
    group: 7,
    class: cls,
    vendor,
    device,
    subsystem_vendor: null,
    subsystem_device: null,
    driver: null,
    revision: null,
  });
  const apu = topologyFromDescription({
    devices: [
      fn("0000:05:00.0", "0x1002", "0x1638", "0x030000"),
      fn("0000:05:00.1", "0x1002", "0x1637", "0x040300"),
      fn("0000:05:00.2", "0x1022", "0x15df", "0x108000"),
      fn("0000:05:00.3", "0x1022", "0x1639", "0x0c0330"),
      fn("0000:05:00.4", "0x1022", "0x1639", "0x0c0330"),
      fn("0000:05:00.6", "0x1022", "0x15e3", "0x040300"),
    ],
  }, { source: "apu" });
  const igpu = closeVm(
    config(
      '  vm:\n    devices:\n      - name: igpu\n        match: { vendor_device_id: "1002:1638" }\n',
    ),
    apu,
  );
  assertEquals(igpu.errors.map((e) => [e.code, e.devices, e.override]), [
    ["group-contains-host-critical", ["0000:05:00.3", "0000:05:00.4"], "allow_host_critical: true"],
  ]);
  assertMatch(
    igpu.errors[0]?.message ?? "",
    /0000:05:00\.3 \(USB controller of another vendor \(1022\) in the same slot, not part of the device asked for\), .*: 0000:05:00\.3, 0000:05:00\.4 share the chip of 0000:05:00\.0, and no slot moves them apart: pass a card in a slot with a group of its own instead, or set "allow_host_critical: true" on the rule$/,
  );
  // A GPU's own USB-C controller (one vendor in the slot) stays part of the card asked for.
  const turing = topologyFromDescription({
    devices: [
      fn("0000:0a:00.0", "0x10de", "0x1e87", "0x030000"),
      fn("0000:0a:00.1", "0x10de", "0x10f8", "0x040300"),
      fn("0000:0a:00.2", "0x10de", "0x1ad8", "0x0c0330"),
      fn("0000:0a:00.3", "0x10de", "0x1ad9", "0x0c8000"),
    ],
  }, { source: "turing" });
  const gpu = closeVm(
    config('  vm:\n    devices:\n      - match: { vendor_device_id: "10de:1e87" }\n'),
    turing,
  );
  assertEquals([gpu.errors, gpu.devices.length], [[], 4]);
  // HP's iLO (103c) carries a Matrox VGA (102b): its virtual USB controller, the remote console's
  // keyboard, mouse and media, is the iLO's, not the VGA's.
  const ilo = closeVm(
    config('  vm:\n    devices:\n      - match: { vendor_device_id: "102b:0533" }\n'),
    realHost("hp-dl380p-g8"),
  );
  assertEquals(ilo.errors.map((e) => [e.code, e.devices]), [
    ["group-contains-host-critical", ["0000:01:00.4"]],
  ]);
});

Deno.test("closeOverGroups() refuses one device matched by two rules of a VM", () => {
  const cfg = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:1b06" }
      - name: nvidia
        match: { vendor_id: "10de", class: display }
        all: true
`);
  const closed = closeVm(cfg, realHost("x570-aorus-pro-wifi"));
  const twice = closed.errors.find((e) => e.code === "device-assigned-twice");
  assertOk(twice);
  assertEquals(twice.devices, ["0000:0b:00.0"]);
  assertEquals(
    twice.message,
    'Device 0000:0b:00.0 is matched by rules "gpu" and "nvidia" of VM "win10": narrow one of them',
  );
});

function synthetic(devices: Partial<HostDeviceDescription>[]): HostTopology {
  return topologyFromDescription({
    devices: devices.map((d) => ({
      bdf: "0000:01:00.0",
      group: 1,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x1533",
      subsystem_vendor: null,
      subsystem_device: null,
      driver: null,
      revision: null,
      ...d,
    })),
  }, { source: "synthetic" });
}

Deno.test("closeOverGroups() warns about devices without FLR unless allow_no_flr is set", () => {
  const host = synthetic([{ flr: false }]);
  const rule = '      - match: { vendor_device_id: "8086:1533" }\n';
  const warned = closeVm(config(`  vm:\n    devices:\n${rule}`), host);
  const [warning] = warned.warnings;
  assertEquals(warning?.code, "no-flr");
  assertEquals(warning?.override, "allow_no_flr: true");
  assertMatch(warning?.message ?? "", /^Device 0000:01:00\.0 has no Function Level Reset/);
  const silenced = closeVm(
    config(`  vm:\n    devices:\n${rule}        allow_no_flr: true\n`),
    host,
  );
  assertEquals(silenced.warnings, []);
});

Deno.test("closeOverGroups() warns when a host driver holds the device, but not for vfio-pci or the VM's own", () => {
  const cfg = config('  vm:\n    devices:\n      - match: { vendor_device_id: "8086:1533" }\n');
  const igb = closeVm(cfg, synthetic([{ driver: "igb" }]));
  assertEquals(igb.warnings.map((w) => w.code), ["host-driver-in-use"]);
  assertMatch(
    igb.warnings[0]!.message,
    /\(rule "[^"]+"\) is bound to host driver "igb": libvirt detaches it when "vm" starts/,
  );
  // Issue 16: managed detach is the normal flow, shown as a note rather than a warning.
  assertEquals(igb.warnings[0]!.info, true);
  assertEquals(closeVm(cfg, synthetic([{ driver: "vfio-pci" }])).warnings, []);
  assertEquals(
    closeVm(cfg, synthetic([{ driver: "igb" }]), new Set(["0000:01:00.0"])).warnings,
    [],
  );
});

Deno.test("closeOverGroups() with iommu_group: false passes only the matched device and explains", () => {
  const cfg = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:1b06" }
        iommu_group: false
`);
  const closed = closeVm(cfg, realHost("x570-aorus-pro-wifi"));
  assertEquals(closed.devices.map((d) => d.device.address), ["0000:0b:00.0"]);
  assertMatch(closed.reasoning[0]!, /not added \(iommu_group: false\): 0000:0b:00\.1/);
});

Deno.test("closeOverGroups() with iommu_group: false warns of each member left on a host driver: the group is not viable", () => {
  // The real X570 board's group 30: the GTX 1060 and its audio; the board's SMBus moved into it.
  const description = JSON.parse(
    Deno.readTextFileSync(new URL("x570-aorus-pro-wifi.json", HOSTS)),
  ) as HostDescription;
  const withDrivers = (drivers: Record<string, string | null>) =>
    topologyFromDescription({
      ...description,
      devices: description.devices.map((d) =>
        d.bdf === "0000:00:14.0"
          ? { ...d, group: 30, driver: drivers[d.bdf] ?? null }
          : d.bdf in drivers
          ? { ...d, driver: drivers[d.bdf]! }
          : d
      ),
    }, { source: "x570" });
  const cfg = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:1b06" }
        iommu_group: false
`);
  const gpu = { "0000:0b:00.0": "nouveau" };
  // Its own audio on snd_hda_intel: nothing the host needs, but the start fails all the same.
  const audio = closeVm(cfg, withDrivers({ ...gpu, "0000:0b:00.1": "snd_hda_intel" }));
  assertEquals(audio.devices.map((d) => d.device.address), ["0000:0b:00.0"]);
  const notViable = audio.warnings.filter((w) => w.code.startsWith("group-"));
  assertEquals(notViable.map((w) => [w.code, w.group, w.devices]), [
    ["group-not-viable", 30, ["0000:0b:00.1"]],
  ]);
  assertMatch(
    notViable[0]!.message,
    /^Rule "gpu" of VM "win10" leaves the rest of IOMMU group 30 with the host \(iommu_group: false\), and 0000:0b:00\.1 is on snd_hda_intel: libvirt detaches only the devices "win10" names, so its start fails \("group 30 is not viable"\) until that one is unbound or on vfio-pci$/,
  );
  assertEquals(notViable[0]!.location, cfg.vms[0]!.rules[0]!.location);
  // The SMBus on its driver too: the host needs it, so the warning says what the fix takes.
  const smbus = closeVm(
    cfg,
    withDrivers({ ...gpu, "0000:0b:00.1": "snd_hda_intel", "0000:00:14.0": "piix4_smbus" }),
  );
  const critical = smbus.warnings.filter((w) => w.code.startsWith("group-"));
  assertEquals(critical.map((w) => [w.code, w.devices]), [
    ["group-contains-host-critical", ["0000:00:14.0", "0000:0b:00.1"]],
  ]);
  assertMatch(
    critical[0]!.message,
    /0000:00:14\.0 is on piix4_smbus \(SMBus controller\), 0000:0b:00\.1 is on snd_hda_intel: .* until those are unbound or on vfio-pci, which takes from the host what it needs$/,
  );
  // Unbound SMBus, audio on vfio-pci: the group is viable, but VFIO takes the host's SMBus along.
  const viable = closeVm(cfg, withDrivers({ ...gpu, "0000:0b:00.1": "vfio-pci" }));
  assertEquals(viable.warnings.filter((w) => w.code.startsWith("group-")), []);
  assertEquals(viable.errors.map((e) => [e.code, e.devices]), [
    ["group-contains-host-critical", ["0000:00:14.0"]],
  ]);
});

Deno.test("closeOverGroups() with iommu_group: false refuses a member left out that is unbound or on vfio-pci but one the host needs, as the start guard refuses its start", () => {
  const gpu = {
    bdf: "0000:0b:00.0",
    group: 7,
    class: "0x030000",
    vendor: "0x10de",
    device: "0x1b06",
    driver: "nouveau",
    ...BLANK_IDS,
  };
  // Another vendor's USB controller in the GPU's slot, unbound; the audio on vfio-pci.
  const usb = { ...gpu, bdf: "0000:0b:00.2", class: "0x0c0330", vendor: "0x1022", driver: null };
  const audio = { ...gpu, bdf: "0000:0b:00.1", class: "0x040300", driver: "vfio-pci" };
  const host = topologyFromDescription({ devices: [gpu, audio, usb] }, { source: "usb-mate" });
  const rule = (allow: string) =>
    config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:1b06", address: 0000:0b:00.0 }
        iommu_group: false
${allow}`);
  const refused = closeVm(rule(""), host);
  assertEquals(refused.devices.map((d) => d.device.address), ["0000:0b:00.0"]);
  assertEquals(refused.errors.map((e) => [e.code, e.group, e.devices]), [
    ["group-contains-host-critical", 7, ["0000:0b:00.2"]],
  ]);
  assertMatch(
    refused.errors[0]!.message,
    /^Rule "gpu" of VM "win10" leaves the rest of IOMMU group 7 with the host \(iommu_group: false\), but VFIO hands the guest the whole group, with devices the host likely needs: 0000:0b:00\.2 \(USB controller of another vendor \(1022\) in the same slot, not part of the device asked for, driver none\): the start guard refuses its start; .*"allow_host_critical: true" on the rule$/,
  );
  // The override makes it a warning, as it has the guard start it.
  const allowed = closeVm(rule("        allow_host_critical: true\n"), host);
  assertEquals(allowed.errors, []);
  assertEquals(
    allowed.warnings.filter((w) => w.code.startsWith("group-")).map((w) => w.code),
    ["group-contains-host-critical"],
  );
});

Deno.test("closeOverGroups() with iommu_group: false says nothing of a member another rule of the VM takes", () => {
  const description = JSON.parse(
    Deno.readTextFileSync(new URL("x570-aorus-pro-wifi.json", HOSTS)),
  ) as HostDescription;
  const drivers: Record<string, string> = {
    "0000:0b:00.0": "nouveau",
    "0000:0b:00.1": "snd_hda_intel",
  };
  const host = topologyFromDescription({
    ...description,
    devices: description.devices.map((d) =>
      d.bdf in drivers ? { ...d, driver: drivers[d.bdf]! } : d
    ),
  }, { source: "x570" });
  const gpu = `      - name: gpu
        match: { vendor_device_id: "10de:1b06" }
        iommu_group: false
`;
  const audio = `      - name: audio
        match: { vendor_device_id: "10de:10ef" }
        iommu_group: false
`;
  // The audio named by a rule of its own, before or after the GPU's: libvirt detaches both.
  for (const rules of [gpu + audio, audio + gpu]) {
    const closed = closeVm(config(`  win10:\n    devices:\n${rules}`), host);
    assertEquals(closed.devices.map((d) => d.device.address), ["0000:0b:00.0", "0000:0b:00.1"]);
    assertEquals(closed.warnings.filter((w) => w.code.startsWith("group-")), []);
    // The reasoning, written as each rule closes its group, must not say the start fails either.
    const leftLine = closed.reasoning.find((line) =>
      line.includes("not added (iommu_group: false)")
    );
    assertMatch(leftLine ?? "", /unless another rule of "win10" takes them/);
  }
});

const BLANK_IDS = { subsystem_vendor: null, subsystem_device: null, revision: null };

Deno.test("closeOverGroups() with iommu_group: false warns when the members left out are ones the host needs", () => {
  const host = topologyFromDescription({
    devices: [
      {
        bdf: "0000:0b:00.0",
        group: 7,
        class: "0x030000",
        vendor: "0x10de",
        device: "0x1b06",
        driver: "nvidia",
        ...BLANK_IDS,
      },
      {
        bdf: "0000:0c:00.0",
        group: 7,
        class: "0x010802",
        vendor: "0x144d",
        device: "0xa808",
        driver: "nvme",
        ...BLANK_IDS,
      },
    ],
    host_use: [{ address: "0000:0c:00.0", reason: "mounted-filesystem", detail: "/ on nvme0n1p2" }],
  }, { source: "shared-group" });
  const cfg = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:1b06" }
        iommu_group: false
`);
  const resolved = resolveConfig(cfg, host).get("win10")!;
  assertEquals(resolved.errors, []);
  assertEquals(resolved.closure.devices.map((d) => d.device.address), ["0000:0b:00.0"]);
  const warning = resolved.warnings.find((w) => w.code === "group-contains-host-critical");
  assertMatch(
    warning!.message,
    /0000:0c:00\.0 is on nvme \(in use by the host \(mounted-filesystem/,
  );
  assertMatch(warning!.message, /Rule "gpu" of VM "win10"/);
});

Deno.test("closeOverGroups(): cards of one group that two rules of the VM name are both asked for", () => {
  // A GPU (video + audio) and a USB card share group 5 behind one root port.
  const shared = (extra: { host_use?: HostUse[] } = {}) =>
    topologyFromDescription({
      devices: [
        {
          ...BLANK_IDS,
          bdf: "0000:00:1c.0",
          group: 5,
          class: "0x060400",
          vendor: "0x8086",
          device: "0xa338",
          driver: "pcieport",
        },
        {
          ...BLANK_IDS,
          bdf: "0000:0b:00.0",
          group: 5,
          class: "0x030000",
          vendor: "0x10de",
          device: "0x1b06",
          driver: "vfio-pci",
        },
        {
          ...BLANK_IDS,
          bdf: "0000:0b:00.1",
          group: 5,
          class: "0x040300",
          vendor: "0x10de",
          device: "0x10ef",
          driver: "vfio-pci",
        },
        {
          ...BLANK_IDS,
          bdf: "0000:0c:00.0",
          group: 5,
          class: "0x0c0330",
          vendor: "0x1b21",
          device: "0x2142",
          driver: "vfio-pci",
        },
      ],
      ...extra,
    }, { source: "shared-group" });
  const gpu = '      - name: gpu\n        match: { vendor_device_id: "10de:1b06" }\n';
  const usb = '      - name: usb\n        match: { vendor_device_id: "1b21:2142" }\n';
  for (const rules of [gpu + usb, usb + gpu]) {
    const closed = closeVm(config(`  vm:\n    devices:\n${rules}`), shared());
    assertEquals(closed.errors, []);
    assertEquals(closed.devices.map((d) => [d.device.address, d.reason]), [
      ["0000:0b:00.0", "matched"],
      ["0000:0b:00.1", "iommu-group"],
      ["0000:0c:00.0", "matched"],
    ]);
    // Left with the host, the other rule's card is no device the host needs either.
    const alone = closeVm(
      config(`  vm:\n    devices:\n${rules.replaceAll("}\n", "}\n        iommu_group: false\n")}`),
      shared(),
    );
    assertEquals([alone.errors, alone.warnings], [[], []]);
  }
  // The USB card holds a disk the host mounted: the refusal is the rule's that chose it, even when
  // the GPU's rule brought it first.
  const mounted = shared({
    host_use: [{ address: "0000:0c:00.0", reason: "mounted-filesystem", detail: "/srv on sdb1" }],
  });
  const [error, ...more] = closeVm(config(`  vm:\n    devices:\n${gpu + usb}`), mounted).errors;
  assertEquals([error?.rule, error?.devices, more], ["usb", ["0000:0c:00.0"], []]);
  assertMatch(error?.message ?? "", /: narrow the rule to another device/);
});

Deno.test("findGroupConflicts() refuses one device given to two VMs, naming both", () => {
  const cfg = config(`  a:
    devices:
      - match: { vendor_device_id: "10de:1b06" }
  b:
    devices:
      - match: { address: "0b:00.0" }
`);
  const resolved = resolveConfig(cfg, realHost("x570-aorus-pro-wifi"));
  const [a, b] = ["a", "b"].map((vm) => resolved.get(vm)!.errors[0]);
  for (const error of [a, b]) {
    assertEquals(error?.code, "device-assigned-twice");
    assertEquals(error?.vms, ["a", "b"]);
  }
  // Each VM's issue leads with its own rule's location and says where the other VM's rule is.
  assertEquals([a?.rule, a?.location, b?.rule, b?.location], [
    "10de:1b06",
    "c.yaml:5:9",
    "0000:0b:00.0",
    "c.yaml:8:9",
  ]);
  assertEquals(
    a?.message,
    'Device 0000:0b:00.0 is assigned to VMs "a" (rule "10de:1b06") and "b" (rule "0000:0b:00.0" at c.yaml:8:9): a device can belong to one VM only; give it to "a" or "b"',
  );
  assertEquals(
    b?.message,
    'Device 0000:0b:00.0 is assigned to VMs "a" (rule "10de:1b06" at c.yaml:5:9) and "b" (rule "0000:0b:00.0"): a device can belong to one VM only; give it to "b" or "a"',
  );
});

Deno.test("findGroupConflicts() names a domain outside the config that holds part of the group", () => {
  const issues = findGroupConflicts([
    {
      vm: "win10",
      group: 30,
      addresses: ["0000:0b:00.0", "0000:0b:00.1"],
      matched: ["0000:0b:00.0"],
      source: "config",
    },
    {
      vm: "old-vm",
      group: 30,
      addresses: ["0000:0b:00.1"],
      matched: ["0000:0b:00.1"],
      source: "domain",
    },
  ]);
  assertEquals([...issues.keys()], ["win10"]);
  const [issue] = issues.get("win10")!;
  // win10 asked for the GPU; the audio function old-vm holds only comes with the group.
  assertEquals(issue?.code, "group-shared-with-other-vm");
  assertEquals([issue?.group, issue?.vms], [30, ["old-vm", "win10"]]);
  assertMatch(
    issue?.message ?? "",
    /^IOMMU group 30 \(0000:0b:00\.0, 0000:0b:00\.1\) is split between VMs "old-vm" and "win10" \("old-vm" holds it in its definition now\)/,
  );
});

Deno.test("findGroupConflicts() names at most four VMs in each issue, its own first", () => {
  // Every VM's issue naming every other grows as the square of the VMs: 400 VMs whose one rule
  // takes every function of a vendor (a 24 KB config) made `plan` run for half a minute.
  const vms = ["a", "b", "c", "d", "e", "f", "g"];
  const issues = findGroupConflicts(vms.map((vm, i) => ({
    vm,
    group: 30,
    addresses: ["0000:0b:00.0"],
    matched: ["0000:0b:00.0"],
    source: "config" as const,
    rules: [{ name: "gpu", location: `c.yaml:${i + 3}:9` }],
  })));
  assertEquals(
    issues.get("a")?.[0]?.message,
    'Device 0000:0b:00.0 is assigned to VMs "a" (rule "gpu"), "b" (rule "gpu" at c.yaml:4:9), "c" (rule "gpu" at c.yaml:5:9), "d" (rule "gpu" at c.yaml:6:9) and 3 more: a device can belong to one VM only; give it to one of them',
  );
  assertMatch(
    issues.get("f")?.[0]?.message ?? "",
    /^Device 0000:0b:00\.0 is assigned to VMs "f" \(rule "gpu"\), "a" \(rule "gpu" at c\.yaml:3:9\), "b" .*, "c" .* and 3 more: /,
  );
  // Every VM is still listed, where a program reads them.
  assertEquals(issues.get("f")?.[0]?.vms, vms);
});

Deno.test("findGroupConflicts() names at most four VMs that hold the group in their definitions", () => {
  // A GPU is often in the definitions of many VMs, one of them running at a time: each message
  // listed every one of them.
  const holders = ["h1", "h2", "h3", "h4", "h5", "h6"];
  const issues = findGroupConflicts([
    {
      vm: "win11",
      group: 30,
      addresses: ["0000:0b:00.0"],
      matched: ["0000:0b:00.0"],
      source: "config",
    },
    ...holders.map((vm) => ({
      vm,
      group: 30,
      addresses: ["0000:0b:00.0"],
      matched: [],
      source: "domain" as const,
    })),
  ]);
  const message = issues.get("win11")?.[0]?.message ?? "";
  assertMatch(
    message,
    / \("h1", "h2", "h3", "h4" and 2 more hold it in their definitions now\): /,
  );
  assertEquals(message.includes('"h5"'), false);
  assertEquals(issues.get("win11")?.[0]?.vms, [...holders, "win11"]);
});

Deno.test("closeOverGroups() on every real host: whole groups, never a bridge, matched devices first", () => {
  const names = [...Deno.readDirSync(HOSTS)]
    .map((e) => e.name)
    .filter((n) => n.endsWith(".json") && n !== "cases.json")
    .map((n) => n.replace(/\.json$/, ""));
  fc.assert(
    fc.property(
      fc.constantFrom(...names),
      fc.nat(),
      fc.boolean(),
      (name, pick, wholeGroup) => {
        const host = realHost(name);
        const endpoints = host.devices.filter((d) => !d.isBridge);
        const target = endpoints[pick % endpoints.length]!;
        const cfg = config(`  vm:
    devices:
      - match: { address: "${target.address}" }
        iommu_group: ${wholeGroup}
        allow_host_critical: true
`);
        const closed = closeVm(cfg, host);
        const got = closed.devices.map((d) => d.device.address);
        const members = host.groups.find((g) => g.group === target.iommuGroup)?.devices ?? [];
        const expected = wholeGroup
          ? members.filter((m) => !m.isBridge).map((m) => m.address)
          : [target.address];
        assertEquals(got, expected);
        assertEquals(closed.devices.filter((d) => d.device.isBridge), []);
        assertEquals(closed.devices.filter((d) => d.reason === "matched").map((d) => d.device), [
          target,
        ]);
        assertEquals(closed.errors, []);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("closeOverGroups(): on a root bus other than 00, as the tree's links show, a slot's other functions are other devices", async () => {
  // A host with two host bridges (pci0000:00, pci0000:80): a NIC at 80:03.0 and, in its slot
  // and group, the host's disk controller at 80:03.1, both integrated endpoints of one vendor.
  const fn = (bdf: string, cls: string, device: string): HostDeviceDescription => ({
    bdf,
    group: 7,
    class: cls,
    vendor: "0x1af4",
    device,
    subsystem_vendor: null,
    subsystem_device: null,
    driver: null,
    revision: null,
  });
  const functions = ["0000:80:03.0", "0000:80:03.1"];
  const closeOn = async (place: string) => {
    await using tree = await tempHostTree({
      devices: [
        { ...fn("0000:00:01.0", "0x060400", "0x0001"), group: 0, vendor: "0x8086" },
        fn(functions[0]!, "0x020000", "0x1041"),
        fn(functions[1]!, "0x010000", "0x1042"),
      ],
    });
    // As the kernel lays them out: each entry of bus/pci/devices a link to where it sits.
    for (const address of functions) {
      Deno.mkdirSync(`${tree.dir}/${place}`, { recursive: true });
      Deno.renameSync(`${tree.dir}/bus/pci/devices/${address}`, `${tree.dir}/${place}/${address}`);
      Deno.symlinkSync(`../../../${place}/${address}`, `${tree.dir}/bus/pci/devices/${address}`);
    }
    const host = await discoverHost({ root: tree.dir, lspci: null });
    // The start guard reads one device at a time, the same way.
    const one = readDeviceAt(denoFsReader(), tree.dir, functions[1]!, { details: false });
    assertEquals(one?.rootBus, host.devices.at(-1)?.rootBus);
    const cfg = config(`  vm:
    devices:
      - name: nic
        match: { vendor_device_id: "1af4:1041" }
`);
    return { host, closed: closeVm(cfg, host) };
  };
  const root = await closeOn("devices/pci0000:80");
  assertEquals(root.host.devices.map((d) => [d.address, d.rootBus]), [
    ["0000:00:01.0", undefined],
    ["0000:80:03.0", true],
    ["0000:80:03.1", true],
  ]);
  const [error] = root.closed.errors;
  assertEquals([error?.code, error?.devices], ["group-contains-host-critical", ["0000:80:03.1"]]);
  assertMatch(
    error?.message ?? "",
    /0000:80:03\.1 \(storage controller in the same root-bus slot, not part of the device asked for\): 0000:80:03\.0 is on root bus 80, built into the chipset or CPU/,
  );
  // Behind a bridge the two are one card, its storage function what was asked for.
  const card = await closeOn("devices/pci0000:00/0000:00:01.0");
  assertEquals(card.host.devices.map((d) => d.rootBus), [undefined, false, false]);
  assertEquals(card.closed.errors, []);
});
