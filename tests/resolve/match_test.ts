import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { type DeviceRule, parseConfig } from "../../lib/config/config.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import type { HostDescription, HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import { deviceMatches, recordedDriver, resolveRule } from "../../lib/resolve/match.ts";
import type { DeviceIdentity } from "../../lib/plan/types.ts";
import type { HostTopology } from "../../lib/host/types.ts";
import { gpuIdentity } from "../helpers/devices.ts";
import { loadFixtureHost, tempHostTree } from "../helpers/hosts.ts";
import { discoverHost } from "../../lib/host/discover.ts";

const HOSTS = new URL("../fixtures/hosts/", import.meta.url);

function realHost(name: string): HostTopology {
  const description = JSON.parse(
    Deno.readTextFileSync(new URL(`${name}.json`, HOSTS)),
  ) as HostDescription;
  return topologyFromDescription(description, { source: name });
}

function rule(yaml: string): DeviceRule {
  const config = parseConfig(`version: 1\nvms:\n  vm:\n    devices:\n      - ${yaml}\n`, {
    file: "c.yaml",
  });
  return config.vms[0]!.rules[0]!;
}

function dev(d: Partial<HostDeviceDescription> & { bdf: string }): HostDeviceDescription {
  return {
    group: null,
    class: "0x030000",
    vendor: "0x10de",
    device: "0x2684",
    subsystem_vendor: null,
    subsystem_device: null,
    driver: null,
    revision: null,
    ...d,
  };
}

function host(devices: HostDeviceDescription[]): HostTopology {
  return topologyFromDescription({ devices }, { source: "synthetic" });
}

Deno.test("resolveRule() takes several matched functions inside one IOMMU group as one card", () => {
  const result = resolveRule(
    rule('match: { vendor_device_id: "8086:1521" }'),
    realHost("supermicro-cfl"),
  );
  assertEquals(result.issue, null);
  assertEquals(result.devices.map((d) => d.address), ["0000:01:00.0", "0000:01:00.1"]);
  assertEquals(result.units.map((u) => u.group), [1]);
});

Deno.test("resolveRule() refuses IDs matching several groups and names subsystem IDs as the way out", () => {
  const twoBrands = host([
    dev({ bdf: "0000:01:00.0", group: 1, subsystem_vendor: "0x1043", subsystem_device: "0x88e2" }),
    dev({ bdf: "0000:02:00.0", group: 2, subsystem_vendor: "0x1462", subsystem_device: "0x5103" }),
  ]);
  const result = resolveRule(rule('match: { vendor_device_id: "10de:2684" }'), twoBrands);
  assertEquals(result.issue?.code, "ambiguous");
  assertEquals(result.devices, []);
  assertEquals(
    result.issue?.candidates?.map((c) => [c.address, c.subsystemVendorId, c.iommuGroup]),
    [
      ["0000:01:00.0", "1043", 1],
      ["0000:02:00.0", "1462", 2],
    ],
  );
  assertEquals(
    result.issue?.message,
    'Rule "10de:2684" of VM "vm" matches 2 devices in 2 IOMMU groups but takes 1: 0000:01:00.0 (group 1), 0000:02:00.0 (group 2): narrow it with "subsystem_vendor_id" and "subsystem_device_id", or with "address", or take them all with "all: true"',
  );
  assertEquals(result.issue?.location, "c.yaml:5:9");
});

Deno.test("resolveRule() takes the one card the subsystem IDs the ambiguity names narrow it to", () => {
  const twoBrands = host([
    dev({ bdf: "0000:01:00.0", group: 1, subsystem_vendor: "0x1043", subsystem_device: "0x88e2" }),
    dev({ bdf: "0000:02:00.0", group: 2, subsystem_vendor: "0x1462", subsystem_device: "0x5103" }),
  ]);
  const take = (criteria: string) => {
    const result = resolveRule(
      rule(`match: { vendor_device_id: "10de:2684", ${criteria} }`),
      twoBrands,
    );
    return [result.devices.map((d) => d.address), result.issue?.code ?? null];
  };
  assertEquals(take('subsystem_vendor_id: "1462", subsystem_device_id: "5103"'), [
    ["0000:02:00.0"],
    null,
  ]);
  // Either one alone, written as lspci prints it or with 0x.
  assertEquals(take('subsystem_vendor_id: "0x1462"'), [["0000:02:00.0"], null]);
  assertEquals(take('subsystem_device_id: "88E2"'), [["0000:01:00.0"], null]);
  // One card's vendor with the other's device: neither card, never the first found.
  assertEquals(take('subsystem_vendor_id: "1462", subsystem_device_id: "88e2"'), [[], "no-match"]);
});

Deno.test('resolveRule() does not offer "all: true" when one of the matches is a device the host uses', () => {
  const console = {
    address: "0000:01:00.0",
    reason: "console-vga" as const,
    detail: "boot_vga=1 with fbcon",
  };
  const twoCards = topologyFromDescription({
    devices: [
      dev({
        bdf: "0000:01:00.0",
        group: 1,
        subsystem_vendor: "0x1043",
        subsystem_device: "0x88e2",
      }),
      dev({
        bdf: "0000:02:00.0",
        group: 2,
        subsystem_vendor: "0x1462",
        subsystem_device: "0x5103",
      }),
    ],
    host_use: [console],
  }, { source: "synthetic" });
  const result = resolveRule(rule('match: { vendor_device_id: "10de:2684" }'), twoCards);
  assertEquals(result.issue?.code, "ambiguous");
  assertEquals(
    result.issue?.message,
    'Rule "10de:2684" of VM "vm" matches 2 devices in 2 IOMMU groups but takes 1: 0000:01:00.0 (group 1), 0000:02:00.0 (group 2): narrow it with "subsystem_vendor_id" and "subsystem_device_id", or with "address" (not all of them: 0000:01:00.0 is the host\'s (console-vga: boot_vga=1 with fbcon))',
  );
  // One card split into two groups, its first function the host's: only one function is offered.
  const port = (bdf: string, group: number) =>
    dev({ bdf, group, class: "0x020000", vendor: "0x8086", device: "0x1521" });
  const split = topologyFromDescription({
    devices: [port("0000:0a:00.0", 20), port("0000:0a:00.1", 21)],
    host_use: [{ address: "0000:0a:00.0", reason: "default-route", detail: "eno1" }],
  }, { source: "t" });
  const card = resolveRule(rule('match: { vendor_device_id: "8086:1521" }'), split);
  assertMatch(
    card.issue?.message ?? "",
    /: take one function with "address" \(not the whole card: 0000:0a:00\.0 is the host's \(default-route: eno1\)\)$/,
  );
});

Deno.test("resolveRule() suggests slot and serial when only those tell identical cards apart", () => {
  const identical = host([
    dev({ bdf: "0000:01:00.0", group: 1, slot: "1", serial: "00-00-00-00-00-00-00-01" }),
    dev({ bdf: "0000:02:00.0", group: 2, slot: "2", serial: "00-00-00-00-00-00-00-02" }),
  ]);
  const result = resolveRule(rule('match: { vendor_device_id: "10de:2684" }'), identical);
  assertMatch(
    result.issue?.message ?? "",
    /narrow it with "slot", or with "serial", or with "address", or take them all/,
  );
  const bySerial = resolveRule(
    rule('match: { vendor_device_id: "10de:2684", serial: "00-00-00-00-00-00-00-02" }'),
    identical,
  );
  assertEquals(bySerial.devices.map((d) => d.address), ["0000:02:00.0"]);
  const bySlot = resolveRule(rule("match: { class: vga, slot: 1 }"), identical);
  assertEquals(bySlot.devices.map((d) => d.address), ["0000:01:00.0"]);
});

Deno.test("resolveRule(): two cards in one IOMMU group are two cards, not one", () => {
  // Two identical USB cards behind one PCIe switch without ACS: both in group 5.
  const usb = (bdf: string, slot: string) =>
    dev({ bdf, group: 5, slot, class: "0x0c0330", vendor: "0x1b21", device: "0x2142" });
  const shared = host([
    dev({ bdf: "0000:04:08.0", group: 5, class: "0x060400", vendor: "0x10b5", device: "0x8747" }),
    usb("0000:05:00.0", "4"),
    usb("0000:06:00.0", "5"),
  ]);
  const one = resolveRule(rule('match: { vendor_device_id: "1b21:2142" }'), shared);
  assertEquals(one.issue?.code, "ambiguous");
  assertEquals(one.devices, []);
  assertEquals(one.issue?.candidates?.map((c) => c.address), ["0000:05:00.0", "0000:06:00.0"]);
  assertEquals(
    one.issue?.message,
    'Rule "1b21:2142" of VM "vm" matches 2 devices on 2 cards in 1 IOMMU group but takes 1: 0000:05:00.0 (group 5), 0000:06:00.0 (group 5): narrow it with "slot", or with "address", or take them all with "all: true"',
  );
  const two = resolveRule(
    rule('match: { vendor_device_id: "1b21:2142" }\n        count: 2'),
    shared,
  );
  assertEquals([two.issue, two.units.length], [null, 2]);
  const three = resolveRule(
    rule('match: { vendor_device_id: "1b21:2142" }\n        count: 3'),
    shared,
  );
  assertMatch(three.issue?.message ?? "", /needs 3 cards but matches 2 in 1 IOMMU group/);
  // A VF belongs to its PF's card: VFs of one PF in one group (slots 10 and 11) are one unit.
  const vf = (bdf: string) =>
    dev({
      bdf,
      group: 7,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x10ca",
      physfn: "07:00.0",
    });
  const sriov = host([
    dev({ bdf: "0000:07:00.0", group: 7, class: "0x020000", vendor: "0x8086", device: "0x10c9" }),
    vf("0000:07:10.0"),
    vf("0000:07:10.2"),
    vf("0000:07:11.0"),
  ]);
  const vfs = resolveRule(rule('match: { vendor_device_id: "8086:10ca" }'), sriov);
  assertEquals([vfs.issue, vfs.units.length, vfs.devices.length], [null, 1, 3]);
});

Deno.test("resolveRule() reports no-match with the nearest devices and what differs", () => {
  const result = resolveRule(
    rule('match: { vendor_device_id: "10de:1b07" }'),
    realHost("x570-aorus-pro-wifi"),
  );
  assertEquals(result.issue?.code, "no-match");
  assertEquals(result.issue?.candidates?.map((c) => c.address), [
    "0000:0b:00.0",
    "0000:0b:00.1",
    "0000:0c:00.0",
    "0000:0c:00.1",
  ]);
  assertMatch(
    result.issue?.message ?? "",
    /^Rule "10de:1b07" of VM "vm" matches no device \(vendor_id "10de", device_id "1b07"\): closest are 0000:0b:00\.0 \(device_id differs\)/,
  );
});

Deno.test("resolveRule(): a slot rule on a host whose firmware names no slot says so, not that the slot differs", () => {
  // None of the real hosts' listings has a slot: a name from the board's manual matches nothing.
  const result = resolveRule(
    rule('match: { class: vga, slot: "PCIE1" }'),
    realHost("x570-aorus-pro-wifi"),
  );
  assertEquals(result.issue?.code, "no-match");
  assertEquals(
    result.issue?.message,
    'Rule "vga-slot-PCIE1" of VM "vm" matches no device (class "vga", slot "PCIE1"): closest are 0000:0b:00.0 (in no named slot), 0000:0c:00.0 (in no named slot): the firmware names no physical slot on this host (\'passthrough devices\' shows none): tell the cards apart with "serial", or with "address"',
  );
  // Where some slot is named, a device in none is said to be in none, and no host-wide note.
  const host = topologyFromDescription({
    devices: [
      dev({ bdf: "0000:01:00.0", group: 1, slot: "2" }),
      dev({ bdf: "0000:02:00.0", group: 2 }),
    ],
  }, { source: "t" });
  const named = resolveRule(rule('match: { class: vga, slot: "PCIE1" }'), host);
  assertEquals(
    named.issue?.message,
    'Rule "vga-slot-PCIE1" of VM "vm" matches no device (class "vga", slot "PCIE1"): closest are 0000:01:00.0 (slot differs), 0000:02:00.0 (in no named slot)',
  );
});

Deno.test("resolveRule() with count takes that many groups and refuses fewer", () => {
  const x570 = realHost("x570-aorus-pro-wifi");
  const two = resolveRule(rule('match: { vendor_device_id: "1022:149c" }\n        count: 2'), x570);
  assertEquals(two.issue, null);
  assertEquals(two.units.length, 2);
  assertEquals(two.devices.map((d) => d.address), ["0000:08:00.1", "0000:08:00.3", "0000:0e:00.3"]);
  const four = resolveRule(
    rule('match: { vendor_device_id: "1022:149c" }\n        count: 4'),
    x570,
  );
  assertEquals(four.issue?.code, "no-match");
  assertMatch(four.issue?.message ?? "", /needs 4 IOMMU groups but matches 2/);
  assertEquals(four.issue?.candidates?.length, 3);
});

Deno.test("resolveRule() of a count: 2 rule matching three twins says to write a rule per card, which then takes each", () => {
  const three = host([
    dev({ bdf: "0000:01:00.0", group: 1, slot: "PCIE1", flr: true }),
    dev({ bdf: "0000:02:00.0", group: 2, slot: "PCIE2", flr: true }),
    dev({ bdf: "0000:05:00.0", group: 5, slot: "PCIE3", flr: true }),
  ]);
  const two = resolveRule(
    rule('match: { vendor_device_id: "10de:2684" }\n        count: 2'),
    three,
  );
  // Before: `narrow it with "slot"`: one slot names one card, and the rule still took two.
  assertMatch(
    two.issue?.message ?? "",
    /but takes 2: .*: write one rule per card \(without "count"\), each narrowed with "slot", or with "address"$/,
  );
  for (const [slot, address] of [["PCIE1", "0000:01:00.0"], ["PCIE3", "0000:05:00.0"]]) {
    const one = resolveRule(rule(`match: { vendor_device_id: "10de:2684", slot: ${slot} }`), three);
    assertEquals([one.issue, one.devices.map((d) => d.address)], [null, [address]]);
  }
});

Deno.test("resolveRule() with all: true takes every matching group", () => {
  const result = resolveRule(
    rule('match: { vendor_device_id: "1022:149c" }\n        all: true'),
    realHost("x570-aorus-pro-wifi"),
  );
  assertEquals(result.issue, null);
  assertEquals(result.devices.map((d) => d.address), [
    "0000:08:00.1",
    "0000:08:00.3",
    "0000:0e:00.3",
  ]);
});

Deno.test("resolveRule() never matches a PCI-to-PCI bridge", () => {
  const result = resolveRule(
    rule('match: { class: "0604" }\n        all: true'),
    realHost("b550-aorus-pro"),
  );
  assertEquals(result.issue?.code, "no-match");
  // Issue 16: it names the bridges as bridges, not "matches no device" with unrelated "closest".
  assertMatch(result.issue?.message ?? "", /matches no device it can take/);
  assertMatch(result.issue?.message ?? "", /are PCI bridges; bridges stay with the host/);
  assertEquals(result.issue?.message.includes("closest"), false);
  assertEquals(result.issue?.candidates?.every((c) => c.classCode.startsWith("0604")), true);
});

Deno.test("resolveRule() names the one bridge a rule by address matches", () => {
  const host = topologyFromDescription({
    devices: [dev({ bdf: "0000:00:01.1", class: "0x060400", vendor: "0x1022", device: "0x1483" })],
  }, { source: "t" });
  const result = resolveRule(rule('match: { address: "0000:00:01.1" }'), host);
  assertMatch(
    result.issue?.message ?? "",
    /: 0000:00:01\.1 is a PCI bridge; bridges stay with the host/,
  );
});

Deno.test("resolveRule() offers no drive behind Intel VMD as the closest device to a rule", () => {
  const drive = (bdf: string, group: number, device = "0xa808") =>
    dev({ bdf, group, class: "0x010802", vendor: "0x144d", device, driver: "nvme" });
  const host = topologyFromDescription({
    devices: [
      dev({ bdf: "0000:00:0e.0", group: 5, class: "0x010400", vendor: "0x8086", device: "0x467f" }),
      drive("10000:e1:00.0", 12),
      drive("10000:e2:00.0", 13),
      drive("0000:02:00.0", 3, "0xa80a"),
    ],
  }, { source: "t" });
  // No rule takes a device behind VMD: naming them sent the user to fit the rule to them.
  const near = resolveRule(rule('match: { vendor_device_id: "144d:a809" }'), host);
  assertEquals(near.issue?.candidates?.map((c) => c.address), ["0000:02:00.0"]);
  assertMatch(near.issue?.message ?? "", /: closest is 0000:02:00\.0 \(device_id differs\)$/);
  const none = resolveRule(
    rule('match: { vendor_device_id: "144d:a808", subsystem_vendor_id: "1043" }'),
    host,
  );
  assertEquals(none.issue?.candidates?.map((c) => c.address), ["0000:02:00.0"]);
  assertEquals(none.issue?.message.includes("10000:"), false);
});

Deno.test('resolveRule() cuts a long closest list with "and N more"', () => {
  const devices = Array.from(
    { length: 10 },
    (_, i) => dev({ bdf: `0000:0${i === 9 ? "a" : i}:00.0`, vendor: "0x10de", device: "0x1b06" }),
  );
  const host = topologyFromDescription({ devices }, { source: "t" });
  const result = resolveRule(rule('match: { vendor_device_id: "10de:1b07" }'), host);
  assertMatch(result.issue?.message ?? "", /\(device_id differs\) and 2 more$/);
  assertEquals(result.issue?.candidates?.length, 8);
});

Deno.test("resolveRule() recognises two functions of one card split into two IOMMU groups", () => {
  const port = (bdf: string, group: number) =>
    dev({ bdf, group, class: "0x020000", vendor: "0x8086", device: "0x1521" });
  const host = topologyFromDescription({
    devices: [port("0000:0a:00.0", 20), port("0000:0a:00.1", 21)],
  }, { source: "t" });
  const result = resolveRule(rule('match: { vendor_device_id: "8086:1521" }'), host);
  assertEquals(result.issue?.code, "ambiguous");
  assertMatch(
    result.issue?.message ?? "",
    /matches 2 functions of one card \(0000:0a:00\.0 group 20, 0000:0a:00\.1 group 21\).*take the whole card with "all: true"/,
  );
});

Deno.test("resolveRule(): two functions of one bus-00 slot in two groups are two devices, not a split card", () => {
  // Intel's serial I/O functions (I2C, SPI) share slot 15 of the root bus, each a device of its own.
  const lpss = (bdf: string, group: number) =>
    dev({ bdf, group, class: "0x0c8000", vendor: "0x8086", device: "0x7acc" });
  const host = topologyFromDescription({
    devices: [lpss("0000:00:15.0", 8), lpss("0000:00:15.1", 9)],
  }, { source: "t" });
  const result = resolveRule(rule('match: { vendor_device_id: "8086:7acc" }'), host);
  assertEquals(result.issue?.code, "ambiguous");
  assertMatch(
    result.issue?.message ?? "",
    /matches 2 devices in 2 IOMMU groups but takes 1: 0000:00:15\.0 \(group 8\), 0000:00:15\.1 \(group 9\)/,
  );
});

Deno.test("resolveRule() tells a 3D controller from a VGA controller by class name", () => {
  const laptop = realHost("laptop-hm87-gtx765m");
  assertEquals(
    resolveRule(rule('match: { class: 3d, vendor_id: "10de" }'), laptop).devices.map((d) =>
      d.address
    ),
    ["0000:01:00.0"],
  );
  assertEquals(
    resolveRule(rule('match: { class: vga, vendor_id: "10de" }'), laptop).issue?.code,
    "no-match",
  );
});

Deno.test("resolveRule() of a class rule alone that matches nothing offers the devices of its base class, as a laptop's 3D controller to class: vga", () => {
  const laptop = realHost("laptop-hm87-gtx765m");
  const vga = resolveRule(rule("match: { class: vga }"), laptop);
  // Before: `matches no device (class "vga")`, with no device named.
  assertEquals(vga.issue?.candidates?.map((c) => [c.address, c.classCode]), [
    ["0000:01:00.0", "030200"],
  ]);
  assertMatch(
    vga.issue?.message ?? "",
    /^Rule "vga" of VM "vm" matches no device \(class "vga"\): closest is 0000:01:00\.0 \(class differs\)$/,
  );
  // Nothing of the base class: nothing to offer.
  const crypto = resolveRule(rule("match: { class: crypto }"), laptop);
  assertEquals(
    crypto.issue?.message,
    'Rule "crypto" of VM "vm" matches no device (class "crypto")',
  );
});

Deno.test("resolveRule() of a driver rule alone that matches nothing offers the devices that driver could take, as a GPU vfio-pci holds from boot", () => {
  const held = host([
    dev({ bdf: "0000:01:00.0", group: 1, driver: "vfio-pci", modules: ["nouveau", "nvidia"] }),
    dev({ bdf: "0000:02:00.0", group: 2, class: "0x010802", device: "0xa808", driver: "nvme" }),
  ]);
  const nvidia = resolveRule(rule("match: { driver: nvidia }"), held);
  // Before: `matches no device (driver "nvidia")`, with no device named.
  assertEquals(nvidia.issue?.candidates?.map((c) => [c.address, c.driver]), [
    ["0000:01:00.0", "vfio-pci"],
  ]);
  assertMatch(
    nvidia.issue?.message ?? "",
    /^Rule "nvidia" of VM "vm" matches no device \(driver "nvidia"\): closest is 0000:01:00\.0 \(driver differs\)$/,
  );
});

Deno.test("resolveRule() of a slot rule alone that matches nothing offers the devices in named slots", () => {
  const slotted = host([
    dev({ bdf: "0000:01:00.0", group: 1, slot: "CPU1 SLOT2 PCI-E 4.0 X16", flr: true }),
    dev({ bdf: "0000:02:00.0", group: 2, class: "0x010802", device: "0xa808", flr: true }),
  ]);
  const typo = resolveRule(rule('match: { slot: "CPU1 SLOT2 PCIE 4.0 X16" }'), slotted);
  // Before: `matches no device (slot "CPU1 SLOT2 PCIE 4.0 X16")`, with no device named.
  assertEquals(typo.issue?.candidates?.map((c) => [c.address, c.physicalSlot]), [
    ["0000:01:00.0", "CPU1 SLOT2 PCI-E 4.0 X16"],
  ]);
  assertMatch(typo.issue?.message ?? "", /: closest is 0000:01:00\.0 \(slot differs\)$/);
});

Deno.test("resolveRule() matches by driver and by NUMA node", () => {
  const trx40 = realHost("trx40-creator");
  const byDriver = resolveRule(rule("match: { driver: nvme }"), trx40);
  assertEquals(byDriver.devices.map((d) => d.address), ["0000:4a:00.0"]);
  // Two ahci controllers in groups 51 and 52: the driver alone is ambiguous; the two xhci_hcd
  // controllers share group 50 and are one unit.
  assertEquals(resolveRule(rule("match: { driver: ahci }"), trx40).issue?.code, "ambiguous");
  assertEquals(resolveRule(rule("match: { driver: xhci_hcd }"), trx40).devices.length, 2);
  const numa = host([
    dev({ bdf: "0000:01:00.0", group: 1, numa_node: 0 }),
    dev({ bdf: "0000:81:00.0", group: 2, numa_node: 1 }),
  ]);
  assertEquals(
    resolveRule(rule('match: { vendor_id: "10de", numa_node: 1 }'), numa).devices.map((d) =>
      d.address
    ),
    ["0000:81:00.0"],
  );
});

Deno.test("deviceMatches() keeps driver: nvidia matching a vfio-pci card only through its record", () => {
  const vfio = host([
    dev({ bdf: "0000:01:00.0", group: 1, driver: "vfio-pci" }),
    dev({ bdf: "0000:02:00.0", group: 2, driver: "vfio-pci" }),
  ]);
  const [first, second] = vfio.devices as [typeof vfio.devices[0], typeof vfio.devices[0]];
  const record: DeviceIdentity = gpuIdentity("0000:01:00.0", { driver: "nvidia" });
  const criteria = { driver: "nvidia" };
  assertEquals(deviceMatches(first, criteria), false);
  assertEquals(deviceMatches(first, criteria, { records: [record] }), true);
  // An identical card without a serial is only the recorded one at the recorded address.
  assertEquals(deviceMatches(second, criteria, { records: [record] }), false);
  assertEquals(recordedDriver(second, [{ ...record, serial: null }]), null);
  // A record of another model never lends its driver.
  assertEquals(
    deviceMatches(first, criteria, { records: [{ ...record, deviceId: "2704" }] }),
    false,
  );
  // The record lends the driver it names, no other.
  assertEquals(deviceMatches(first, { driver: "amdgpu" }, { records: [record] }), false);
  // Without a record, lspci's candidate modules stand in only for the VM's own devices: never for
  // a card another VM or a tool bound to vfio-pci.
  const unrecorded = { ...second, modules: ["nvidiafb", "nouveau", "nvidia"] };
  assertEquals(deviceMatches(unrecorded, criteria), false);
  assertEquals(
    deviceMatches(unrecorded, criteria, { current: new Set([unrecorded.address]) }),
    true,
  );
  assertEquals(deviceMatches(unrecorded, criteria, { current: new Set([first.address]) }), false);
});

Deno.test("resolveRule() says a serial it could not read is unknown, not that it differs", async () => {
  // Read as a user other than root reads it: 0b:00.0's configuration space stops after its
  // 64-byte header; 0c:00.0's was read whole and has another serial.
  await using tree = await tempHostTree({
    devices: [
      dev({ bdf: "0000:0b:00.0", group: 30, device: "0x1b06", flr: null, serial: null }),
      dev({
        bdf: "0000:0c:00.0",
        group: 31,
        device: "0x1b06",
        flr: true,
        serial: "00-11-22-ff-ff-33-44-99",
      }),
    ],
  });
  const host = await discoverHost({ root: tree.dir });
  const result = resolveRule(
    rule('match: { vendor_device_id: "10de:1b06", serial: "00-11-22-ff-ff-33-44-55" }'),
    host,
  );
  assertEquals(result.issue?.code, "no-match");
  // The tree was captured so: read again as root it stops at the header all the same.
  assertMatch(
    result.issue?.message ?? "",
    /: closest are 0000:0b:00\.0 \(serial unknown: its configuration space could be read only up to its 64-byte header when the tree was captured, capture it again with passthrough snapshot as root\), 0000:0c:00\.0 \(serial differs\)$/,
  );
  // The live host, read by a user other than root.
  const live = { ...host, source: "/sys" };
  assertMatch(
    resolveRule(
      rule('match: { vendor_device_id: "10de:1b06", serial: "00-11-22-ff-ff-33-44-55" }'),
      live,
    ).issue?.message ?? "",
    /: closest are 0000:0b:00\.0 \(serial unknown: its configuration space could be read only up to its 64-byte header, run as root to read it\), 0000:0c:00\.0 \(serial differs\)$/,
  );
  // Naming only the serial, the rule has no closest device: the unread serial is said all the same.
  const alone = resolveRule(rule('match: { serial: "00-11-22-ff-ff-33-44-55" }'), live);
  assertMatch(
    alone.issue?.message ?? "",
    /\(serial "00-11-22-ff-ff-33-44-55"\): the serial number of 1 device is unknown here \(its configuration space could be read only up to its 64-byte header, run as root to read it\)$/,
  );
});

Deno.test('resolveRule() takes a Thunderbolt 4 NHI by "class: thunderbolt"', async () => {
  // The Z690 host's Maple Ridge NHI with the class lspci shows for it on the machine itself:
  // USB controller, prog-if 40 (USB4 Host Interface); the listing gave only its [0c03].
  const description = loadFixtureHost("z690-asus-adl");
  const devices = description.devices.map((d) =>
    d.bdf === "0000:0d:00.0" ? { ...d, class: "0x0c0340" } : d
  );
  await using tree = await tempHostTree({ ...description, devices });
  const host = await discoverHost({ root: tree.dir });
  const result = resolveRule(rule("match: { class: thunderbolt }"), host);
  assertEquals(result.issue, null);
  assertEquals(result.devices.map((d) => [d.address, d.driver]), [["0000:0d:00.0", "thunderbolt"]]);
  // Still a USB controller by class, as PCI files it.
  const usb = resolveRule(rule("match: { class: usb, vendor_device_id: 8086:1137 }"), host);
  assertEquals(usb.devices.map((d) => d.address), ["0000:0d:00.0"]);
});

Deno.test("resolveRule() of two GPU models a class rule matches names their IDs, which then take the one named", () => {
  // The X570 host's GTX 1080 Ti and GT 710: IDs tell them apart wherever they sit.
  const x570 = realHost("x570-aorus-pro-wifi");
  const vga = resolveRule(rule("match: { class: vga }"), x570);
  assertMatch(
    vga.issue?.message ?? "",
    /: narrow it with "vendor_device_id", or with "address", or take them all with "all: true"$/,
  );
  // With their audio functions matched too: each card's IDs are its own.
  const nvidia = resolveRule(rule('match: { vendor_id: "10de" }'), x570);
  assertMatch(
    nvidia.issue?.message ?? "",
    /: narrow it with "vendor_device_id", or with "address"/,
  );
  const named = resolveRule(rule('match: { class: vga, vendor_device_id: "10de:128b" }'), x570);
  assertEquals([named.issue, named.devices.map((d) => d.address)], [null, ["0000:0c:00.0"]]);
});

Deno.test("resolveRule() of twins told apart by the address alone offers the slot or serial that names one of them alone, which then resolves to it", () => {
  const twins = host([
    dev({ bdf: "0000:0a:00.0", group: 20, slot: "SLOT1", flr: true }),
    dev({ bdf: "0000:0b:00.0", group: 21, flr: true }),
    dev({
      bdf: "0000:20:00.0",
      group: 40,
      class: "0x010802",
      device: "0xa808",
      serial: "00-00-00-00-00-00-00-20",
    }),
    dev({ bdf: "0000:21:00.0", group: 41, class: "0x010802", device: "0xa808", flr: true }),
  ]);
  const gpu = resolveRule(rule('match: { vendor_device_id: "10de:2684" }'), twins);
  assertMatch(
    gpu.issue?.message ?? "",
    /: narrow it with "address", or 0000:0a:00\.0 alone with slot "SLOT1", or take them all with "all: true"$/,
  );
  const drive = resolveRule(rule('match: { vendor_device_id: "10de:a808" }'), twins);
  assertMatch(
    drive.issue?.message ?? "",
    /: narrow it with "address", or 0000:20:00\.0 alone with serial "00-00-00-00-00-00-00-20", or take them all with "all: true"$/,
  );
  // Copied into the rule, each suggestion takes exactly the one it named.
  const bySlot = resolveRule(rule('match: { vendor_device_id: "10de:2684", slot: SLOT1 }'), twins);
  assertEquals([bySlot.issue, bySlot.devices.map((d) => d.address)], [null, ["0000:0a:00.0"]]);
  const bySerial = resolveRule(
    rule('match: { vendor_device_id: "10de:a808", serial: "00-00-00-00-00-00-00-20" }'),
    twins,
  );
  assertEquals([bySerial.issue, bySerial.devices.map((d) => d.address)], [null, ["0000:20:00.0"]]);
});

Deno.test("resolveRule() of twins whose serial numbers this read could not see says a read as root may tell them apart", () => {
  // No `flr` and no `serial`: only the 64-byte header was readable, as for a user other than root.
  const unread = host([
    dev({ bdf: "0000:22:00.0", group: 42, class: "0x010802", device: "0x0009" }),
    dev({ bdf: "0000:23:00.0", group: 43, class: "0x010802", device: "0x0009" }),
  ]);
  const result = resolveRule(rule('match: { vendor_device_id: "10de:0009" }'), unread);
  assertMatch(
    result.issue?.message ?? "",
    /: narrow it with "address" \(a snapshot taken as root would hold their serial numbers, which may tell them apart\), or take them all with "all: true"$/,
  );
  const read = host([
    dev({ bdf: "0000:22:00.0", group: 42, class: "0x010802", device: "0x0009", flr: false }),
    dev({ bdf: "0000:23:00.0", group: 43, class: "0x010802", device: "0x0009", flr: false }),
  ]);
  const none = resolveRule(rule('match: { vendor_device_id: "10de:0009" }'), read);
  assertMatch(none.issue?.message ?? "", /: narrow it with "address", or take them all/);
});

Deno.test("resolveRule() of SR-IOV VFs of identical cards points to a vf: rule on their physical function", () => {
  const pf = (bus: string, group: number, serial: string) =>
    dev({
      bdf: `0000:${bus}:00.0`,
      group,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x1521",
      serial,
    });
  const vf = (bus: string, group: number) =>
    dev({
      bdf: `0000:${bus}:10.0`,
      group,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x1520",
      physfn: `0000:${bus}:00.0`,
      flr: true,
    });
  const sriov = host([
    pf("10", 30, "a0-36-9f-ff-ff-00-00-10"),
    vf("10", 31),
    pf("11", 33, "a0-36-9f-ff-ff-00-00-11"),
    vf("11", 34),
  ]);
  const result = resolveRule(rule('match: { vendor_device_id: "8086:1520" }'), sriov);
  assertMatch(
    result.issue?.message ?? "",
    /: narrow it with "address", or take them all with "all: true", or match their physical function instead and take one of its VFs with "vf: any"$/,
  );
});

Deno.test("resolveRule() of dual-port NICs with a serial on function 0 alone names the serial, which takes one card with its group", () => {
  // PCIe lets a multi-function card carry its Device Serial Number on function 0 only.
  const port = (bus: string, fn: number, serial?: string) =>
    dev({
      bdf: `0000:${bus}:00.${fn}`,
      group: bus === "05" ? 14 : 15,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x1521",
      flr: true,
      ...(serial === undefined ? {} : { serial }),
    });
  const nics = host([
    port("05", 0, "a0-36-9f-ff-ff-00-00-01"),
    port("05", 1),
    port("06", 0, "a0-36-9f-ff-ff-00-00-02"),
    port("06", 1),
  ]);
  const both = resolveRule(rule('match: { vendor_device_id: "8086:1521" }'), nics);
  assertMatch(
    both.issue?.message ?? "",
    /: narrow it with "serial", or with "address", or take them all/,
  );
  const one = resolveRule(
    rule('match: { vendor_device_id: "8086:1521", serial: "a0-36-9f-ff-ff-00-00-02" }'),
    nics,
  );
  assertEquals([one.issue, one.units.map((u) => u.group)], [null, [15]]);
});

/** The Z690 host with a Samsung drive behind its Intel VMD controller (0000:00:0e.0). */
function z690WithVmdDrive(group: number): HostTopology {
  const z690 = loadFixtureHost("z690-asus-adl");
  const samsung = z690.devices.find((d) => d.bdf === "0000:06:00.0")!;
  return topologyFromDescription(
    { ...z690, devices: [...z690.devices, { ...samsung, bdf: "10000:e1:00.0", group }] },
    { source: "z690 with a drive behind VMD" },
  );
}

Deno.test("resolveRule() on the Z690 host takes the drive outside Intel VMD, never its twin behind it", () => {
  // The same Samsung model at 06:00.0 and behind VMD: counted, the one behind VMD made the rule
  // ambiguous, and taken alone it is a hostdev VFIO cannot assign apart from the controller.
  const host = z690WithVmdDrive(30);
  const model = resolveRule(rule('match: { vendor_device_id: "144d:a808" }'), host);
  assertEquals([model.issue, model.devices.map((d) => d.address)], [null, ["0000:06:00.0"]]);
  const behind = resolveRule(rule('match: { address: "10000:e1:00.0" }'), host);
  assertEquals([behind.issue?.code, behind.devices], ["no-match", []]);
  assertMatch(
    behind.issue?.message ?? "",
    /: 10000:e1:00\.0 is behind an Intel VMD controller \(PCI domain 10000, .*, which takes its whole domain \(0000:00:0e\.0\)$/,
  );
  assertEquals(deviceMatches(host.devices.find((d) => d.address === "10000:e1:00.0")!, {}), false);
});
