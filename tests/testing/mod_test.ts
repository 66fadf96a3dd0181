// The `./testing` export (lib/testing/mod.ts) as a library user has it: a captured host as a
// sysfs tree and as a libvirt test-driver world, which the two discoveries read as one host.
import { assertEquals } from "../helpers/assert.ts";
import { loadFixtureHost, tempHostTree } from "../helpers/hosts.ts";
import { writeTempWorld } from "../helpers/world.ts";
import { nodeDeviceName, nodeDeviceWorldXml } from "../../lib/testing/mod.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { discoverViaLibvirt } from "../../lib/host/nodedev.ts";
import { compareTopologies } from "../../lib/host/source_compare.ts";
import { openNodeDeviceSource } from "../../ffi/nodedev_source.ts";

// tests/host/nodedev_test.ts compares the two on every captured host; this is the export's path.
Deno.test("./testing's nodeDeviceWorldXml() builds a world libvirt reads as the host's tree", async () => {
  // The test driver drops <driver>: without drivers the two sources agree in full.
  const full = loadFixtureHost("c246-cx4lx-sriov");
  const description = { ...full, devices: full.devices.map((d) => ({ ...d, driver: null })) };
  await using tree = await tempHostTree(description);
  await using world = await writeTempWorld(nodeDeviceWorldXml(description));
  const sysfs = await discoverHost({ root: tree.dir, lspci: null });
  using source = openNodeDeviceSource(world.uri);
  const libvirt = discoverViaLibvirt(source);
  assertEquals(compareTopologies(sysfs, libvirt), []);
  assertEquals(libvirt.devices.length, description.devices.length);
  assertEquals(nodeDeviceName("0000:0a:00.1"), "pci_0000_0a_00_1");
});
