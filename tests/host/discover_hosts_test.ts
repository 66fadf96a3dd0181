// Discovery over sysfs trees built from the eight real hosts, read back with the real lspci.
import { assertEquals, assertOk } from "../helpers/assert.ts";
import type { HostDescription } from "../../lib/testing/host_tree.ts";
import { HOST_NAMES, HOSTS, loadFixtureHost, tempHostTree } from "../helpers/hosts.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import { commandLspciRunner, lspciArgs, parseLspci } from "../../lib/host/lspci.ts";

const SHARED = new URL("../../../shared/hosts/", import.meta.url);

function hex(text: string | null, width: number): string | null {
  return text === null ? null : text.replace(/^0x/i, "").toLowerCase().padStart(width, "0");
}

async function withTree<T>(description: HostDescription, fn: (dir: string) => Promise<T>) {
  await using tree = await tempHostTree(description);
  return await fn(tree.dir);
}

for (const name of HOST_NAMES) {
  Deno.test(`discoverHost() reproduces every device of "${name}" with the real lspci`, async () => {
    const description = loadFixtureHost(name);
    await withTree(description, async (dir) => {
      const host = await discoverHost({ root: dir });
      assertEquals(host.iommu, "enabled");
      assertEquals(host.devices.length, description.devices.length);
      for (const d of description.devices) {
        const found = host.devices.find((x) => x.address === d.bdf);
        assertOk(found, `${d.bdf} missing`);
        assertEquals(
          {
            group: found.iommuGroup,
            vendor: found.vendorId,
            device: found.deviceId,
            subsystemVendor: found.subsystemVendorId,
            subsystemDevice: found.subsystemDeviceId,
            class: found.classCode,
            revision: found.revision,
            bridge: found.isBridge,
            driver: found.driver,
          },
          {
            group: d.group,
            vendor: hex(d.vendor, 4),
            device: hex(d.device, 4),
            subsystemVendor: hex(d.subsystem_vendor, 4),
            subsystemDevice: hex(d.subsystem_device, 4),
            class: hex(d.class, 6),
            revision: hex(d.revision, 2),
            bridge: d.class.toLowerCase().startsWith("0x0604"),
            driver: d.driver,
          },
          `${name} ${d.bdf}`,
        );
        // lspci read the tree: every device got its class name from the PCI ID database.
        assertOk(found.className !== null, `${d.bdf} has no class name from lspci`);
      }
      // lspci on its own (not merged with sysfs) reads the same IDs and driver.
      const records = parseLspci(await commandLspciRunner()(lspciArgs(dir)));
      assertEquals(records.size, description.devices.length);
      for (const d of description.devices) {
        const r = records.get(d.bdf);
        assertEquals(
          [r?.vendorId, r?.deviceId, r?.driver],
          [hex(d.vendor, 4), hex(d.device, 4), d.driver],
          `lspci ${name} ${d.bdf}`,
        );
      }
      // Groups as the kernel would list them, sorted, every member in exactly one group.
      const expected = topologyFromDescription(description, { source: dir });
      assertEquals(
        host.groups.map((g) => [g.group, g.devices.map((x) => x.address)]),
        expected.groups.map((g) => [g.group, g.devices.map((x) => x.address)]),
      );
    });
  });
}

Deno.test({
  name: "tests/fixtures/hosts holds byte-identical copies of the shared host files",
  ignore: (() => {
    try {
      return !Deno.statSync(SHARED).isDirectory;
    } catch {
      return true;
    }
  })(),
  fn() {
    for (const name of [...HOST_NAMES, "cases"]) {
      const ours = Deno.readFileSync(new URL(`${name}.json`, HOSTS));
      const theirs = Deno.readFileSync(new URL(`${name}.json`, SHARED));
      assertEquals(ours, theirs, name);
    }
  },
});

Deno.test("discoverHost() names devices from lspci and splits vendor from device", async () => {
  const description = loadFixtureHost("x570-aorus-pro-wifi");
  await withTree(description, async (dir) => {
    const host = await discoverHost({ root: dir });
    const gpu = host.devices.find((d) => d.address === "0000:0b:00.0");
    assertEquals(gpu?.vendorName, "NVIDIA Corporation");
    assertOk(gpu?.deviceName?.includes("GeForce GTX 1080 Ti"), gpu?.deviceName ?? "null");
    assertEquals(gpu?.className, "VGA compatible controller");
  });
});
