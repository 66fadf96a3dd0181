// Discovery through libvirt's node-device API: parsing, test-driver worlds built from the eight
// real hosts (compared with sysfs discovery over trees built from the same files), and a real
// libvirtd on this machine compared with /sys.
import { assertEquals, assertMatch, assertOk, assertThrows } from "../helpers/assert.ts";
import { libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";
import { testDomainXml, writeTempWorld } from "../helpers/world.ts";
import {
  discoverViaLibvirt,
  NodeDeviceXmlError,
  topologyFromNodeDevices,
} from "../../lib/host/nodedev.ts";
import { nodeDeviceName, nodeDeviceWorldXml } from "../../lib/testing/nodedev_world.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import { compareTopologies } from "../../lib/host/source_compare.ts";
import type { HostDescription } from "../../lib/testing/host_tree.ts";
import { HOST_NAMES, loadFixtureHost, tempHostTree } from "../helpers/hosts.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { openNodeDeviceSource } from "../../ffi/nodedev_source.ts";
import { Connection } from "../../ffi/connection.ts";
import { libcSysfsReader } from "../../ffi/libc_fs.ts";

const VIRTIO_VM = new URL("../fixtures/nodedev/virtio-vm/", import.meta.url);
function virtioVmXml(): string[] {
  return [...Deno.readDirSync(VIRTIO_VM)].map((e) => e.name).filter((n) => n.endsWith(".xml"))
    .sort().map((n) => Deno.readTextFileSync(new URL(n, VIRTIO_VM)));
}

/** A PCI node device as libvirt writes it; `extra` goes inside the PCI capability. */
function pciXml(
  address: { bus: number; slot: number; fn: number },
  options: { vendor?: string; product?: string; klass?: string | null; extra?: string } = {},
): string {
  const hex = (n: number, w: number) => `0x${n.toString(16).padStart(w, "0")}`;
  const klass = options.klass === null ? "" : `<class>${options.klass ?? "0x020000"}</class>`;
  return `<device>
  <name>pci_0000_${hex(address.bus, 2).slice(2)}_${
    hex(address.slot, 2).slice(2)
  }_${address.fn}</name>
  <parent>computer</parent>
  <capability type='pci'>
    ${klass}
    <domain>0</domain>
    <bus>${address.bus}</bus>
    <slot>${address.slot}</slot>
    <function>${address.fn}</function>
    <product id='${options.product ?? "0x1015"}'/>
    <vendor id='${options.vendor ?? "0x15b3"}'>Mellanox Technologies</vendor>
    ${options.extra ?? ""}
  </capability>
</device>`;
}

function groupXml(number: number, members: [number, number, number][]): string {
  return `<iommuGroup number='${number}'>${
    members.map(([b, s, f]) =>
      `<address domain='0x0000' bus='0x${b.toString(16).padStart(2, "0")}' slot='0x${
        s.toString(16).padStart(2, "0")
      }' function='0x${f}'/>`
    ).join("")
  }</iommuGroup>`;
}

Deno.test("topologyFromNodeDevices() reads a real libvirtd's node devices (captured virtio VM)", () => {
  const host = topologyFromNodeDevices(virtioVmXml(), { source: "qemu:///system" });
  assertEquals(host.source, "qemu:///system");
  assertEquals(host.iommu, "absent");
  assertEquals(host.groups, []);
  assertEquals(
    host.devices.map((d) => [d.address, d.vendorId, d.deviceId, d.classCode, d.driver]),
    [
      ["0000:00:00.0", "8086", "0d57", "060000", null],
      ["0000:00:01.0", "1af4", "1045", "ffff00", "virtio-pci"],
      ["0000:00:02.0", "1af4", "1042", "018000", "virtio-pci"],
      ["0000:00:03.0", "1af4", "1041", "020000", "virtio-pci"],
      ["0000:00:04.0", "1af4", "1053", "ffff00", "virtio-pci"],
      ["0000:00:05.0", "1af4", "1044", "ffff00", "virtio-pci"],
    ],
  );
  const balloon = host.devices[1]!;
  assertEquals(
    [balloon.vendorName, balloon.deviceName, balloon.iommuGroup, balloon.isBridge],
    ["Red Hat, Inc.", "Virtio 1.0 memory balloon", null, false],
  );
  // An empty <product/> is no name; a host bridge (0600) is not a PCI-to-PCI bridge.
  assertEquals([host.devices[0]?.deviceName, host.devices[0]?.isBridge], [null, false]);
  for (const d of host.devices) {
    assertEquals(
      [d.subsystemVendorId, d.subsystemDeviceId, d.revision, d.flr, d.serial, d.numaNode],
      [null, null, null, null, null, null],
    );
  }
});

Deno.test("topologyFromNodeDevices() reads SR-IOV links, NUMA node and groups", () => {
  const group = groupXml(7, [[1, 0, 0], [1, 0, 1], [1, 0, 2]]);
  const host = topologyFromNodeDevices([
    pciXml({ bus: 1, slot: 0, fn: 2 }, {
      product: "0x1016",
      extra: `<capability type='phys_function'>
        <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></capability>${group}`,
    }),
    pciXml({ bus: 1, slot: 0, fn: 0 }, {
      extra: `<capability type='virt_functions' maxCount='8'>
        <address domain='0x0000' bus='0x01' slot='0x00' function='0x2'/></capability>
        ${group}<numa node='1'/><pci-express><link validity='cap' port='0' speed='8' width='8'/>
        </pci-express>`,
    }),
    pciXml({ bus: 1, slot: 0, fn: 1 }, { extra: `${group}<numa node='-1'/>` }),
  ], { source: "test" });
  assertEquals(host.devices.map((d) => d.address), [
    "0000:01:00.0",
    "0000:01:00.1",
    "0000:01:00.2",
  ]);
  assertEquals(host.groups.map((g) => [g.group, g.devices.map((d) => d.address)]), [
    [7, ["0000:01:00.0", "0000:01:00.1", "0000:01:00.2"]],
  ]);
  const [pf, other, vf] = host.devices as [
    typeof host.devices[0],
    typeof host.devices[0],
    typeof host.devices[0],
  ];
  assertEquals([pf.virtfns, pf.physfn, pf.numaNode], [["0000:01:00.2"], null, 1]);
  // maxCount is sriov_totalvfs; the VFs listed are the enabled ones.
  assertEquals([pf.sriovTotalVfs, pf.sriovNumVfs], [8, 1]);
  assertEquals([vf.sriovTotalVfs, vf.sriovNumVfs], [undefined, undefined]);
  assertEquals([vf.physfn, vf.virtfns, vf.deviceId], ["0000:01:00.0", [], "1016"]);
  assertEquals(other.numaNode, null);
  assertEquals(host.iommu, "enabled");
});

Deno.test("topologyFromNodeDevices() flags a pci-bridge capability as a bridge without a class", () => {
  const host = topologyFromNodeDevices([
    pciXml({ bus: 0, slot: 0x1c, fn: 0 }, {
      klass: null,
      vendor: "0x8086",
      product: "0x8c10",
      extra: `<capability type='pci-bridge'/>${groupXml(8, [[0, 0x1c, 0]])}`,
    }),
    pciXml({ bus: 0, slot: 1, fn: 0 }, { klass: "0x060400", extra: groupXml(9, [[0, 1, 0]]) }),
  ], { source: "test" });
  assertEquals(
    host.devices.map((d) => [d.address, d.classCode, d.isBridge]),
    [["0000:00:01.0", "060400", true], ["0000:00:1c.0", "000000", true]],
  );
});

Deno.test("topologyFromNodeDevices() skips devices without a PCI capability", () => {
  const computer = `<device><name>computer</name><capability type='system'>
    <hardware><uuid>3b5b4b9e-5e7c-4d1a-9f3e-1c2d3e4f5a6b</uuid></hardware></capability></device>`;
  const host = topologyFromNodeDevices([computer, pciXml({ bus: 2, slot: 0, fn: 0 })], {
    source: "test",
  });
  assertEquals(host.devices.map((d) => d.address), ["0000:02:00.0"]);
});

Deno.test("topologyFromNodeDevices() refuses malformed XML, bad IDs and duplicate addresses", () => {
  assertThrows(
    () =>
      topologyFromNodeDevices([pciXml({ bus: 1, slot: 0, fn: 0 }), "<device><name>x"], {
        source: "test",
      }),
    (e: unknown) =>
      e instanceof NodeDeviceXmlError && e.index === 1 && e.device === null &&
      /^Cannot read node device #1: Malformed XML/.test(e.message),
  );
  assertThrows(
    () =>
      topologyFromNodeDevices([pciXml({ bus: 1, slot: 0, fn: 0 }, { vendor: "10de" })], {
        source: "test",
      }),
    (e: unknown) =>
      e instanceof NodeDeviceXmlError && e.device === "pci_0000_01_00_0" &&
      e.message ===
        `Cannot read node device "pci_0000_01_00_0": bad or missing <vendor id>: "10de"`,
  );
  assertThrows(
    () =>
      topologyFromNodeDevices([pciXml({ bus: 1, slot: 0, fn: 0 }, { klass: "0x0300" })], {
        source: "test",
      }),
    NodeDeviceXmlError,
  );
  assertThrows(
    () =>
      topologyFromNodeDevices(
        [pciXml({ bus: 1, slot: 0, fn: 0 }), pciXml({ bus: 1, slot: 0, fn: 0 })],
        { source: "test" },
      ),
    (e: unknown) =>
      e instanceof NodeDeviceXmlError && e.index === 1 && /also the address/.test(e.message),
  );
  // Group numbers are integers: one too big for a double would merge with its neighbours.
  assertThrows(
    () =>
      topologyFromNodeDevices([
        pciXml({ bus: 1, slot: 0, fn: 0 }, {
          extra: groupXml(3, [[1, 0, 0]]).replace("'3'", "'99999999999999999999'"),
        }),
      ], { source: "test" }),
    (e: unknown) =>
      e instanceof NodeDeviceXmlError &&
      e.message.endsWith(`bad <iommuGroup number>: "99999999999999999999"`),
  );
  assertThrows(
    () => topologyFromNodeDevices([`<domain type='test'><name>x</name></domain>`], { source: "t" }),
    /expected a <device> element, got <domain>/,
  );
});

Deno.test("topologyFromNodeDevices() reads IDs however libvirt spells them, and refuses what no device has", () => {
  const read = (xml: string) => topologyFromNodeDevices([xml], { source: "test" }).devices[0];
  const at = { bus: 1, slot: 0, fn: 0 };
  // Upper case and short IDs are the same IDs; an empty driver name, an odd NUMA node or VF
  // count are no value at all.
  const nic = read(
    pciXml(at, {
      vendor: "0X15B3",
      product: "0x15",
      klass: "0x02000A",
      extra: `<numa node='1.5'/><capability type='virt_functions' maxCount='70000'/>`,
    }).replace("</device>", "<driver><name> </name></driver></device>"),
  );
  assertEquals(
    [nic?.vendorId, nic?.deviceId, nic?.classCode, nic?.driver, nic?.numaNode, nic?.sriovTotalVfs],
    ["15b3", "0015", "02000a", null, null, undefined],
  );
  assertEquals(
    read(pciXml(at, { extra: `<capability type='virt_functions' maxCount='7.5'/>` }))
      ?.sriovTotalVfs,
    undefined,
  );
  // Two functions of one group that list its members in another order agree.
  const pair = topologyFromNodeDevices([
    pciXml(at, { extra: groupXml(3, [[1, 0, 0], [1, 0, 1]]) }),
    pciXml({ ...at, fn: 1 }, { extra: groupXml(3, [[1, 0, 1], [1, 0, 0]]) }),
  ], { source: "test" });
  assertEquals(pair.groups.map((g) => g.devices.length), [2]);
  // A CardBus bridge without a class is a bridge too.
  assertEquals(
    read(pciXml(at, { klass: null, extra: "<capability type='cardbus-bridge'/>" }))?.isBridge,
    true,
  );
  const refused = (xml: string, detail: string) =>
    assertThrows(
      () => read(xml),
      (e: unknown) =>
        e instanceof NodeDeviceXmlError &&
        e.message === `Cannot read node device "pci_0000_01_00_0": ${detail}`,
    );
  refused(pciXml(at, { vendor: "0x10de0" }), `bad or missing <vendor id>: "0x10de0"`);
  refused(pciXml(at).replace("<bus>1</bus>", "<bus> </bus>"), "no <bus> in the PCI capability");
  refused(pciXml(at).replace("<bus>1</bus>", "<bus>256</bus>"), "the PCI address is out of range");
  refused(
    pciXml(at, {
      extra: `<iommuGroup number='3'><address domain='0x0000' bus='0x01'/></iommuGroup>`,
    }),
    "bad <address> in <iommuGroup>",
  );
});

Deno.test("topologyFromNodeDevices() reports IOMMU groups that disagree or name unseen devices", () => {
  const cases: [string, string[], RegExp, string[]][] = [
    [
      "not in its own group",
      [pciXml({ bus: 1, slot: 0, fn: 0 }, { extra: groupXml(3, [[1, 0, 1]]) })],
      /^IOMMU group 3 at "0000:01:00.0": the device is not listed in its own group$/,
      ["0000:01:00.0"],
    ],
    [
      "member lists differ",
      [
        pciXml({ bus: 1, slot: 0, fn: 0 }, { extra: groupXml(3, [[1, 0, 0], [1, 0, 1]]) }),
        pciXml({ bus: 1, slot: 0, fn: 1 }, { extra: groupXml(3, [[1, 0, 1]]) }),
      ],
      /it lists "0000:01:00.1", "0000:01:00.0" lists "0000:01:00.0 0000:01:00.1"/,
      ["0000:01:00.0", "0000:01:00.1"],
    ],
    [
      "member not listed",
      [pciXml({ bus: 1, slot: 0, fn: 0 }, { extra: groupXml(3, [[1, 0, 0], [1, 0, 1]]) })],
      /member "0000:01:00.1" is not among the node devices/,
      ["0000:01:00.0", "0000:01:00.1"],
    ],
    [
      "member in another group",
      [
        pciXml({ bus: 1, slot: 0, fn: 0 }, { extra: groupXml(3, [[1, 0, 0], [1, 0, 1]]) }),
        pciXml({ bus: 1, slot: 0, fn: 1 }),
      ],
      /member "0000:01:00.1" reports group none/,
      ["0000:01:00.0", "0000:01:00.1"],
    ],
  ];
  for (const [label, xmls, pattern, devices] of cases) {
    const problems = topologyFromNodeDevices(xmls, { source: "test" }).groupInconsistencies;
    // The first problem found (the first case's missing member is a second one).
    assertEquals([problems[0]?.groups, problems[0]?.devices], [[3], devices], label);
    assertMatch(problems[0]?.detail ?? "", pattern, label);
  }
  // Every member listing one libvirt did not list says so once for the group.
  const both = [[1, 0, 0], [1, 0, 1], [1, 0, 2]] as [number, number, number][];
  const unseen = topologyFromNodeDevices([
    pciXml({ bus: 1, slot: 0, fn: 0 }, { extra: groupXml(3, both) }),
    pciXml({ bus: 1, slot: 0, fn: 1 }, { extra: groupXml(3, both) }),
  ], { source: "test" });
  assertEquals(unseen.groupInconsistencies.map((p) => p.devices), [[
    "0000:01:00.0",
    "0000:01:00.2",
  ]]);
});

async function sysfsTopology(description: HostDescription) {
  await using tree = await tempHostTree(description);
  return await discoverHost({ root: tree.dir });
}

for (const name of HOST_NAMES) {
  Deno.test(`discoverViaLibvirt() over a test-driver world of "${name}" matches sysfs discovery`, async () => {
    const description = loadFixtureHost(name);
    const sysfs = await sysfsTopology(description);
    await using world = await writeTempWorld(nodeDeviceWorldXml(description));
    using source = openNodeDeviceSource(world.uri);
    const libvirt = discoverViaLibvirt(source);
    assertEquals(libvirt.source, world.uri);
    assertEquals(libvirt.devices.length, description.devices.length);
    assertEquals(
      libvirt.groups.map((g) => [g.group, g.devices.map((d) => d.address)]),
      sysfs.groups.map((g) => [g.group, g.devices.map((d) => d.address)]),
    );
    // Same device set, groups, IDs, class, bridge flag and SR-IOV links. Subsystem IDs are not in
    // node-device XML (null, so not compared); the test driver drops <driver>.
    assertEquals(
      compareTopologies(sysfs, libvirt).filter((d) => d.kind !== "field" || d.field !== "driver"),
      [],
    );
    for (const d of libvirt.devices) {
      assertEquals(d.driver, null, `${d.address}: the test driver keeps no driver`);
      assertEquals(d.subsystemVendorId, null);
    }
    // Not comparing drivers would hide exactly these: every bound device of the description.
    const bound = description.devices.filter((d) => d.driver !== null).map((d) => d.bdf).sort();
    assertEquals(
      compareTopologies(sysfs, libvirt).map((diff) =>
        diff.kind === "field" && diff.field === "driver" ? diff.address : diff
      ),
      bound,
    );
  });
}

Deno.test("nodeDeviceWorldXml() writes the world's domains and names devices as libvirt does", async () => {
  const description = loadFixtureHost("c246-cx4lx-sriov");
  const xml = nodeDeviceWorldXml(description, {
    domains: [testDomainXml("vm1", { running: false }), testDomainXml("vm2")],
  });
  await using world = await writeTempWorld(xml);
  using conn = Connection.open(world.uri, { readOnly: true });
  const domains = conn.listDomains().map((dom) => {
    using owned = dom;
    return [owned.name, owned.isActive()];
  });
  assertEquals(domains.sort(), [["vm1", false], ["vm2", true]]);
  const names = conn.listNodeDevices({ cap: "pci" }).map((dev) => {
    using owned = dev;
    return owned.name;
  });
  assertEquals(names, description.devices.map((d) => nodeDeviceName(d.bdf)).sort());
});

const validator = (() => {
  try {
    Deno.statSync("/usr/bin/virt-xml-validate");
    Deno.statSync("/usr/bin/xmllint");
    return null;
  } catch {
    return "needs virt-xml-validate and xmllint (libvirt-clients, libxml2-utils)";
  }
})();

Deno.test({
  name: "nodeDeviceWorldXml() writes devices that libvirt's nodedev schema accepts",
  ignore: validator !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-nodedev-" });
    try {
      for (const name of ["c246-cx4lx-sriov", "z690-asus-adl"]) {
        const xml = nodeDeviceWorldXml(loadFixtureHost(name));
        // The `computer` device is the test driver's own minimal form (no <firmware>): only the
        // PCI devices are meant to look like libvirt's node-device XML.
        const devices = (xml.match(/<device>[\s\S]*?<\/device>/g) ?? [])
          .filter((d) => d.includes("<capability type='pci'>"));
        assertOk(devices.length > 2);
        for (const [i, device] of devices.entries()) {
          const path = `${dir}/${name}-${i}.xml`;
          await Deno.writeTextFile(path, device);
          const out = await new Deno.Command("virt-xml-validate", {
            args: [path, "nodedev"],
            stdout: "piped",
            stderr: "piped",
          }).output();
          assertEquals(out.code, 0, `${name} #${i}: ${new TextDecoder().decode(out.stderr)}`);
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

const unavailable = libvirtdUnavailable();

Deno.test({
  name: "discoverViaLibvirt() on a real libvirtd matches sysfs discovery of /sys",
  ignore: unavailable !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    using source = openNodeDeviceSource(daemon.uri);
    const libvirt = discoverViaLibvirt(source);
    const sysfs = await discoverHost({ root: "/sys", reader: libcSysfsReader(), live: true });
    assertOk(libvirt.devices.length > 0, "the real daemon lists no PCI devices");
    assertEquals(libvirt.devices.map((d) => d.address), sysfs.devices.map((d) => d.address));
    // A real daemon reports drivers, so nothing is ignored: IDs, class, bridge flag, group,
    // driver and SR-IOV links all agree with /sys.
    assertEquals(compareTopologies(sysfs, libvirt), []);
    assertEquals(libvirt.iommu, sysfs.iommu);
    // Names come from libvirt's own PCI ID database lookup, as lspci's do.
    const named = libvirt.devices.filter((d) => d.vendorName !== null);
    assertOk(named.length > 0, "no vendor names from libvirt");
  },
});

Deno.test("every source marks PCI-to-PCI, semi-transparent and CardBus bridges, and only those", async () => {
  const bridges = ["0000:00:01.0", "0000:00:1e.0", "0000:02:00.0"];
  const description: HostDescription = {
    devices: [
      { bdf: "0000:00:00.0", class: "0x060000", vendor: "0x8086" }, // host bridge: type 0
      { bdf: "0000:00:01.0", class: "0x060400", vendor: "0x8086" }, // PCI-to-PCI
      { bdf: "0000:00:1e.0", class: "0x060901", vendor: "0x8086" }, // semi-transparent
      { bdf: "0000:00:1f.0", class: "0x060100", vendor: "0x8086" }, // ISA bridge: type 0
      { bdf: "0000:02:00.0", class: "0x060700", vendor: "0x1180" }, // CardBus
      { bdf: "0000:03:00.0", class: "0x030000", vendor: "0x10de" },
    ].map((d, i) => ({
      ...d,
      group: i,
      device: "0x1234",
      subsystem_vendor: null,
      subsystem_device: null,
      driver: null,
      revision: "0x01",
    })),
  };
  const bridgesOf = (host: { devices: { address: string; isBridge: boolean }[] }) =>
    host.devices.filter((d) => d.isBridge).map((d) => d.address).sort();

  assertEquals(bridgesOf(topologyFromDescription(description, { source: "listing" })), bridges);
  await using tree = await tempHostTree(description);
  // The built tree's config headers say type 1 and 2, which lspci reads back as bridges too.
  const sysfs = await discoverHost({ root: tree.dir, reader: libcSysfsReader() });
  assertEquals(bridgesOf(sysfs), bridges);
  assertEquals(
    sysfs.devices.filter((d) => d.address === "0000:02:00.0").map((d) => d.className),
    ["CardBus bridge"],
  );
  await using world = await writeTempWorld(nodeDeviceWorldXml(description));
  using source = openNodeDeviceSource(world.uri);
  assertEquals(bridgesOf(discoverViaLibvirt(source)), bridges);
});
