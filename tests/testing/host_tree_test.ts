// The host-tree builder: the sysfs shape discovery and the real lspci rely on.
import { assertEquals, assertMatch, assertThrows } from "../helpers/assert.ts";
import {
  buildHostTree,
  HostDescriptionError,
  type HostDeviceDescription,
  loadHostDescription,
} from "../../lib/testing/host_tree.ts";
import { commandLspciRunner } from "../../lib/host/lspci.ts";
import { nodeDeviceWorldXml } from "../../lib/testing/nodedev_world.ts";
import { pathExists } from "../../lib/state/paths.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { readDeviceAt } from "../../lib/host/sysfs_device.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import { loadFixtureHost } from "../helpers/hosts.ts";

function dev(bdf: string, extra: Partial<HostDeviceDescription> = {}): HostDeviceDescription {
  return {
    bdf,
    group: 5,
    class: "0x030000",
    vendor: "0x10de",
    device: "0x1b80",
    subsystem_vendor: "0x1043",
    subsystem_device: "0x8599",
    driver: "vfio-pci",
    revision: "0xa1",
    ...extra,
  };
}

function withDir(fn: (dir: string) => void | Promise<void>) {
  return async () => {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-tree-" });
    try {
      await fn(dir);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  };
}

Deno.test(
  "buildHostTree() writes attributes, uevent and links like the kernel",
  withDir((dir) => {
    buildHostTree({ devices: [dev("0000:0b:00.0")] }, dir);
    const d = `${dir}/bus/pci/devices/0000:0b:00.0`;
    const read = (name: string) => Deno.readTextFileSync(`${d}/${name}`);
    assertEquals(
      [read("vendor"), read("device"), read("class"), read("subsystem_vendor"), read("revision")],
      ["0x10de\n", "0x1b80\n", "0x030000\n", "0x1043\n", "0xa1\n"],
    );
    assertEquals(
      read("uevent"),
      "DRIVER=vfio-pci\nPCI_CLASS=30000\nPCI_ID=10DE:1B80\nPCI_SUBSYS_ID=1043:8599\nPCI_SLOT_NAME=0000:0b:00.0\n",
    );
    assertEquals(read("numa_node"), "-1\n");
    assertEquals(Deno.readLinkSync(`${d}/driver`), "../../drivers/vfio-pci");
    assertEquals(Deno.readLinkSync(`${d}/iommu_group`), "../../../../kernel/iommu_groups/5");
    assertEquals(
      Deno.realPathSync(`${dir}/kernel/iommu_groups/5/devices/0000:0b:00.0`),
      Deno.realPathSync(d),
    );
    // Unknown FLR: 64 bytes, as an unprivileged read of a real device returns.
    assertEquals(Deno.readFileSync(`${d}/config`).length, 64);
  }),
);

Deno.test(
  "buildHostTree() leaves null fields out instead of inventing values",
  withDir((dir) => {
    buildHostTree({
      devices: [dev("0000:01:00.0", {
        subsystem_vendor: null,
        subsystem_device: null,
        revision: null,
        driver: null,
        group: null,
      })],
    }, dir);
    const d = `${dir}/bus/pci/devices/0000:01:00.0`;
    const names = [...Deno.readDirSync(d)].map((e) => e.name).sort();
    for (
      const absent of ["subsystem_vendor", "subsystem_device", "revision", "driver", "iommu_group"]
    ) {
      assertEquals(names.includes(absent), false, absent);
    }
    assertEquals(Deno.readTextFileSync(`${d}/uevent`).includes("DRIVER="), false);
    assertThrows(() => Deno.statSync(`${dir}/kernel/iommu_groups`), Deno.errors.NotFound);
  }),
);

Deno.test(
  "buildHostTree() writes a type-1 header for bridges that the real lspci shows as one",
  withDir(async (dir) => {
    buildHostTree({
      devices: [
        dev("0000:00:01.1", {
          class: "0x060400",
          vendor: "0x1022",
          device: "0x1483",
          driver: "pcieport",
        }),
      ],
    }, dir);
    const config = Deno.readFileSync(`${dir}/bus/pci/devices/0000:00:01.1/config`);
    assertEquals(config[0x0e], 1);
    const text = await commandLspciRunner()(["-O", `sysfs.path=${dir}/bus/pci`, "-vv"]);
    assertMatch(text, /PCI bridge/);
    assertMatch(text, /Bus: primary=00, secondary=01, subordinate=01/);
  }),
);

Deno.test(
  "buildHostTree() writes SR-IOV links and counts in the kernel's layout",
  withDir((dir) => {
    buildHostTree({
      devices: [
        dev("0000:01:00.0", { class: "0x020000" }),
        dev("0000:01:00.3", { class: "0x020000", physfn: "0000:01:00.0" }),
        dev("0000:01:00.2", { class: "0x020000", physfn: "01:00.0" }),
      ],
    }, dir);
    const pf = `${dir}/bus/pci/devices/0000:01:00.0`;
    assertEquals(Deno.readTextFileSync(`${pf}/sriov_numvfs`), "2\n");
    assertEquals(Deno.readTextFileSync(`${pf}/sriov_totalvfs`), "2\n");
    assertEquals(
      [Deno.readLinkSync(`${pf}/virtfn0`), Deno.readLinkSync(`${pf}/virtfn1`)],
      ["../0000:01:00.2", "../0000:01:00.3"],
    );
    assertEquals(
      Deno.readLinkSync(`${dir}/bus/pci/devices/0000:01:00.2/physfn`),
      "../0000:01:00.0",
    );
  }),
);

Deno.test(
  "buildHostTree() keeps a function on a listed root bus under devices/pciDDDD:BB, where discovery, the guard and lspci read it",
  withDir(async (dir) => {
    // TRX40: four root complexes, whose bridges on buses 20, 40 and 60 sit on root buses too.
    const description = {
      ...loadFixtureHost("trx40-creator"),
      root_buses: ["00", "0000:20", "0000:40", "0000:60"],
    };
    // An SR-IOV NIC built into root bus 80, a VF beside its PF.
    description.devices.push(
      dev("0000:80:03.0", { class: "0x020000", driver: "ixgbe", group: 90 }),
      dev("0000:80:03.1", { class: "0x020000", physfn: "0000:80:03.0", group: 91 }),
    );
    description.root_buses.push("80");
    buildHostTree(description, dir);
    const entry = (address: string) => `${dir}/bus/pci/devices/${address}`;
    assertEquals(
      Deno.readLinkSync(entry("0000:20:03.1")),
      "../../../devices/pci0000:20/0000:20:03.1",
    );
    assertEquals(Deno.readLinkSync(`${entry("0000:80:03.0")}/virtfn0`), "../0000:80:03.1");
    assertEquals(
      Deno.readLinkSync(`${entry("0000:80:03.0")}/driver`),
      "../../../bus/pci/drivers/ixgbe",
    );
    const host = await discoverHost({ root: dir, lspci: commandLspciRunner() });
    const at = (address: string) => host.devices.find((d) => d.address === address)!;
    assertEquals(
      ["0000:00:01.1", "0000:20:03.1", "0000:21:00.0", "0000:80:03.0"].map((a) => {
        const d = at(a);
        return [a, d.rootBus, d.driver, d.iommuGroup, d.deviceName !== null];
      }),
      [
        ["0000:00:01.1", true, "pcieport", 1, true],
        ["0000:20:03.1", true, "pcieport", 19, true],
        ["0000:21:00.0", undefined, "vfio-pci", 26, true],
        ["0000:80:03.0", true, "ixgbe", 90, true],
      ],
    );
    assertEquals([at("0000:80:03.0").virtfns, at("0000:80:03.1").physfn], [
      ["0000:80:03.1"],
      "0000:80:03.0",
    ]);
    // The description read without a tree says the same.
    const described = topologyFromDescription(description, { source: "trx40" });
    assertEquals(
      described.devices.map((d) => [d.address, d.rootBus]),
      host.devices.map((d) => [d.address, d.rootBus]),
    );
    assertEquals(
      readDeviceAt(denoFsReader(), dir, "0000:40:01.1", { details: false })?.rootBus,
      true,
    );
  }),
);

Deno.test(
  "buildHostTree() writes a PF's sriov_totalvfs as described, also with no VF enabled",
  withDir((dir) => {
    buildHostTree(
      { devices: [dev("0000:01:00.0", { class: "0x020000", sriov_totalvfs: 7 })] },
      dir,
    );
    const pf = `${dir}/bus/pci/devices/0000:01:00.0`;
    assertEquals(
      [Deno.readTextFileSync(`${pf}/sriov_numvfs`), Deno.readTextFileSync(`${pf}/sriov_totalvfs`)],
      ["0\n", "7\n"],
    );
  }),
);

Deno.test(
  "buildHostTree() writes a serial number capability in 4096 bytes of config space",
  withDir((dir) => {
    buildHostTree({ devices: [dev("0000:01:00.0", { serial: "00-11-22-ff-ff-33-44-55" })] }, dir);
    const config = Deno.readFileSync(`${dir}/bus/pci/devices/0000:01:00.0/config`);
    assertEquals(config.length, 4096);
    assertEquals([...config.subarray(0x104, 0x10c)], [
      0x55,
      0x44,
      0x33,
      0xff,
      0xff,
      0x22,
      0x11,
      0x00,
    ]);
  }),
);

Deno.test(
  "buildHostTree() rejects bad addresses, IDs, serials and duplicates with the device named",
  withDir((dir) => {
    assertThrows(
      () => buildHostTree({ devices: [dev("0000:01:00.0", { vendor: "nvidia" })] }, `${dir}/a`),
      /Invalid vendor "nvidia" for device "0000:01:00.0"/,
    );
    assertThrows(
      () => buildHostTree({ devices: [dev("1:0.0")] }, `${dir}/b`),
      (e: unknown) => e instanceof HostDescriptionError && e.bdf === "1:0.0",
    );
    assertThrows(
      () => buildHostTree({ devices: [dev("0000:01:00.0"), dev("0000:01:00.0")] }, `${dir}/c`),
      /Duplicate device "0000:01:00.0"/,
    );
    assertThrows(
      () => buildHostTree({ devices: [dev("0000:01:00.0", { serial: "12345" })] }, `${dir}/d`),
      /Invalid serial "12345" for device "0000:01:00.0"/,
    );
  }),
);

Deno.test(
  "buildHostTree() and nodeDeviceWorldXml() refuse a physfn no kernel makes, with the VF named, writing nothing",
  withDir((dir) => {
    const pf = dev("0000:01:00.0", { class: "0x020000" });
    const vf = (bdf: string, physfn: string) => dev(bdf, { class: "0x020000", physfn });
    // The devices, and the message naming the VF whose physfn is wrong.
    const cases: [HostDeviceDescription[], string][] = [
      // Was "No such file or directory ... symlink '../0000:01:10.0' -> '.../0000:99:00.0/virtfn0'".
      [
        [pf, vf("0000:01:10.0", "0000:99:00.0")],
        `"0000:99:00.0" for device "0000:01:10.0": no device of the description has that address`,
      ],
      // Were written: a function that is its own VF, a VF of a VF, two VFs of each other.
      [
        [pf, vf("0000:01:10.0", "01:10.0")],
        `"01:10.0" for device "0000:01:10.0": the device itself`,
      ],
      [
        [pf, vf("0000:01:10.0", "0000:01:00.0"), vf("0000:01:10.1", "0000:01:10.0")],
        `"0000:01:10.0" for device "0000:01:10.1": a VF itself`,
      ],
      [
        [vf("0000:01:10.0", "0000:01:10.1"), vf("0000:01:10.1", "0000:01:10.0")],
        `"0000:01:10.1" for device "0000:01:10.0": a VF itself`,
      ],
      [[pf, vf("0000:01:10.0", "eth0")], `"eth0" for device "0000:01:10.0": not a PCI address`],
    ];
    for (const [i, [devices, detail]] of cases.entries()) {
      const message = `Invalid physfn ${detail}`;
      const check = (e: unknown) => e instanceof HostDescriptionError && e.message === message;
      assertThrows(() => buildHostTree({ devices }, `${dir}/${i}`), check, message);
      assertEquals(pathExists(`${dir}/${i}`), false, "a partial tree was written");
      assertThrows(() => nodeDeviceWorldXml({ devices }), check, message);
    }
  }),
);

Deno.test(
  "loadHostDescription() refuses a file that is no JSON, or a device without class, as HostDescriptionError",
  withDir((dir) => {
    const load = (text: string) => {
      Deno.writeTextFileSync(`${dir}/host.json`, text);
      return () => loadHostDescription(`${dir}/host.json`);
    };
    // Were a SyntaxError naming no file, and a TypeError from inside buildHostTree.
    assertThrows(load("{ devices: [] }"), HostDescriptionError, `"${dir}/host.json"`);
    const { class: _, ...noClass } = dev("0000:01:00.0");
    assertThrows(
      load(JSON.stringify({ devices: [noClass] })),
      HostDescriptionError,
      `"${dir}/host.json": device 1 "0000:01:00.0" needs "class" as a string`,
    );
    assertThrows(load('{"devices": [null]}'), HostDescriptionError);
  }),
);
