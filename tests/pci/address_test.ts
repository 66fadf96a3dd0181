/**
 * One PCI domain, however it is spelled: `0000`, `00000000` and libvirt's `0x00000000` name the
 * same segment in config criteria, sysfs names, slot addresses and libvirt XML.
 */

import { assertEquals, assertRejects } from "../helpers/assert.ts";
import { demoTree } from "../helpers/reliability.ts";
import { writeTempWorld } from "../helpers/world.ts";
import {
  canonicalPciAddress,
  comparePciAddress,
  pciAddressFromLibvirt,
  pciAddressToLibvirt,
} from "../../lib/pci/address.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { recordCase } from "../../scripts/reliability_report.ts";

const TEST = "tests/pci/address_test.ts";

Deno.test("canonicalPciAddress() reads a domain as a number: 4 to 8 digits, one canonical form", () => {
  for (const spelling of ["0000:21:00.0", "00000000:21:00.0", "000000:21:00.0", "21:00.0"]) {
    assertEquals(canonicalPciAddress(spelling), "0000:21:00.0", spelling);
  }
  assertEquals(canonicalPciAddress("0001:21:00.0"), "0001:21:00.0");
  assertEquals(canonicalPciAddress("00010000:e1:00.0"), "10000:e1:00.0");
  // libvirt's attributes and sysfs names meet in the same form.
  assertEquals(
    pciAddressFromLibvirt({ domain: "0x00000000", bus: "0x21", slot: "0x00", function: "0x0" }),
    canonicalPciAddress("00000000:21:00.0"),
  );
  // A domain past 0xffff (behind Intel VMD), as libvirt writes it and reads it back.
  const vmd = { domain: "0x10000", bus: "0xe1", slot: "0x00", function: "0x0" };
  assertEquals(pciAddressFromLibvirt(vmd), "10000:e1:00.0");
  assertEquals(pciAddressToLibvirt("10000:e1:00.0"), vmd);
  assertEquals(pciAddressFromLibvirt({ ...vmd, domain: "0xffffffff" }), "ffffffff:e1:00.0");
  assertEquals(pciAddressFromLibvirt({ ...vmd, domain: "0x100000000" }), null);
  assertEquals(
    ["10000:00:00.0", "ffff:00:00.0", "0000:21:00.0"].sort(comparePciAddress),
    ["0000:21:00.0", "ffff:00:00.0", "10000:00:00.0"],
  );
});

Deno.test("an 8-digit zero domain in a slot address and a config criterion names the device", async () => {
  await using tree = await demoTree();
  const devices = `${tree.sysfs}/bus/pci/devices`;
  // A slot address and a criterion spelled with 8-digit domains, as some tools write them.
  Deno.mkdirSync(`${tree.sysfs}/bus/pci/slots/7`, { recursive: true });
  Deno.writeTextFileSync(`${tree.sysfs}/bus/pci/slots/7/address`, "00000000:21:00\n");
  const host = await discoverHost({ root: tree.sysfs, lspci: null });
  const gpu = host.devices.find((d) => d.deviceId === "1b80");
  assertEquals([gpu?.address, gpu?.physicalSlot, gpu?.iommuGroup], ["0000:21:00.0", "7", 26]);
  await using world = await writeTempWorld(`<node><domain type='test'><name>vm</name>
    <memory unit='KiB'>1048576</memory><os><type arch='x86_64'>hvm</type></os>
    <devices><hostdev mode='subsystem' type='pci' managed='yes'><source>
      <address domain='0x00000000' bus='0x21' slot='0x00' function='0x1'/>
    </source></hostdev></devices></domain></node>`);
  using port = openLibvirtPort(world.uri);
  const config = parseConfig(
    'version: 1\nvms:\n  vm:\n    devices:\n      - name: gpu\n        match: { address: "00000000:21:00.0" }\n',
    { file: "c.yaml" },
  );
  const vm = planHostdevs({ config, host, libvirt: port }).vms[0]!;
  assertEquals(vm.errors, []);
  // The audio function the VM holds is recognised as the GPU's group mate, not a stranger.
  assertEquals([vm.add.map((a) => a.address), vm.keep], [["0000:21:00.0"], ["0000:21:00.1"]]);
  // An entry so named is refused: lspci, apply's re-check and the guard read the kernel's name.
  Deno.renameSync(`${devices}/0000:21:00.0`, `${devices}/00000000:21:00.0`);
  await assertRejects(
    () => discoverHost({ root: tree.sysfs, lspci: null }),
    Error,
    'Not a sysfs tree entry: "' + `${devices}/00000000:21:00.0"`,
  );
  recordCase({
    area: "config",
    name: "address criterion and slot address with an 8-digit zero domain",
    count: 1,
    outcome: "normalised to 0000: the device matches and its slot is named",
    test: TEST,
  });
});

Deno.test("pciAddressFromLibvirt() reads numbers as libvirt does: hex, octal with a leading 0, decimal", () => {
  const at = (bus: string) => pciAddressFromLibvirt({ bus, slot: "0", function: "0" });
  assertEquals([at("0x10"), at("010"), at("10"), at("0")], [
    "0000:10:00.0",
    "0000:08:00.0",
    "0000:0a:00.0",
    "0000:00:00.0",
  ]);
  // Not numbers to libvirt either: it refuses the definition.
  assertEquals([at("08"), at("0x"), at("-1"), at("1e1")], [null, null, null, null]);
  // Spaces around a number are read past; a number past 2^53 or a part out of range is none.
  assertEquals(at(" 0x10 "), "0000:10:00.0");
  assertEquals(at(`0x${"f".repeat(20)}`), null);
  assertEquals(at("0x100"), null);
  assertEquals(pciAddressFromLibvirt({ bus: "1", slot: "0x20", function: "0" }), null);
  assertEquals(pciAddressFromLibvirt({ bus: "1", slot: "0", function: "8" }), null);
});

Deno.test("canonicalPciAddress() refuses a slot past 0x1f, a function past 7, a domain past 8 digits", () => {
  for (
    const text of ["01:20.0", "0000:01:20.0", "0000:01:00.8", "01:00.9", "123456789:01:00.0"]
  ) {
    assertEquals(canonicalPciAddress(text), null, text);
  }
  // Spaces around are read past.
  assertEquals(canonicalPciAddress(" 0000:01:00.1\n"), "0000:01:00.1");
});
