// compareTopologies(): what it reports between two discoveries of one host, on plain topologies
// and on real sources (a sysfs tree against a libvirt test-driver world) that disagree.
import { assertEquals } from "../helpers/assert.ts";
import { writeTempWorld } from "../helpers/world.ts";
import { loadFixtureHost, tempHostTree } from "../helpers/hosts.ts";
import {
  compareTopologies,
  formatSourceDifference,
  type SourceDifference,
} from "../../lib/host/source_compare.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import type { HostDescription, HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { nodeDeviceWorldXml } from "../../lib/testing/nodedev_world.ts";
import { discoverViaLibvirt } from "../../lib/host/nodedev.ts";
import { openNodeDeviceSource } from "../../ffi/nodedev_source.ts";

function device(bdf: string, extra: Partial<HostDeviceDescription> = {}): HostDeviceDescription {
  return {
    bdf,
    group: 1,
    class: "0x030000",
    vendor: "0x10de",
    device: "0x1b80",
    subsystem_vendor: "0x1458",
    subsystem_device: "0x3702",
    driver: "nouveau",
    revision: "0xa1",
    ...extra,
  };
}

function topology(devices: HostDeviceDescription[], source = "t") {
  return topologyFromDescription({ devices }, { source });
}

Deno.test("compareTopologies() finds nothing between identical topologies", () => {
  const devices = [device("0000:01:00.0"), device("0000:01:00.1", { class: "0x040300" })];
  assertEquals(compareTopologies(topology(devices, "a"), topology(devices, "b")), []);
});

Deno.test("compareTopologies() reports a device missing on either side, sorted by address", () => {
  const a = topology([device("0000:01:00.0"), device("0000:03:00.0", { group: 3 })]);
  const b = topology([device("0000:01:00.0"), device("0000:02:00.0", { group: 2 })]);
  assertEquals(compareTopologies(a, b), [
    { kind: "missing", address: "0000:02:00.0", missingFrom: "a" },
    { kind: "missing", address: "0000:03:00.0", missingFrom: "b" },
  ]);
});

Deno.test("compareTopologies() reports group, IDs, class, bridge flag and driver in field order", () => {
  const a = topology([device("0000:00:01.0"), device("0000:01:00.0")]);
  const b = topology([
    device("0000:00:01.0", { class: "0x060400", driver: "pcieport" }),
    device("0000:01:00.0", { group: 4, vendor: "0x1002", device: "0x73bf", driver: null }),
  ]);
  assertEquals(compareTopologies(a, b), [
    { kind: "field", address: "0000:00:01.0", field: "classCode", a: "030000", b: "060400" },
    { kind: "field", address: "0000:00:01.0", field: "isBridge", a: false, b: true },
    { kind: "field", address: "0000:00:01.0", field: "driver", a: "nouveau", b: "pcieport" },
    { kind: "field", address: "0000:01:00.0", field: "iommuGroup", a: 1, b: 4 },
    { kind: "field", address: "0000:01:00.0", field: "vendorId", a: "10de", b: "1002" },
    { kind: "field", address: "0000:01:00.0", field: "deviceId", a: "1b80", b: "73bf" },
    { kind: "field", address: "0000:01:00.0", field: "driver", a: "nouveau", b: null },
  ]);
});

Deno.test("compareTopologies() compares subsystem IDs and NUMA node only when both sides know them", () => {
  const a = topology([device("0000:01:00.0", { numa_node: 0 })]);
  const unknown = topology([
    device("0000:01:00.0", { subsystem_vendor: null, subsystem_device: null }),
  ]);
  assertEquals(compareTopologies(a, unknown), []);
  const other = topology([device("0000:01:00.0", { subsystem_device: "0x3703", numa_node: 1 })]);
  assertEquals(compareTopologies(a, other), [
    { kind: "field", address: "0000:01:00.0", field: "subsystemDeviceId", a: "3702", b: "3703" },
    { kind: "field", address: "0000:01:00.0", field: "numaNode", a: 0, b: 1 },
  ]);
});

Deno.test("compareTopologies() reports the IOMMU state and SR-IOV links", () => {
  const a = topology([
    device("0000:01:00.0", { class: "0x020000" }),
    device("0000:01:00.2", { class: "0x020000", physfn: "0000:01:00.0" }),
  ]);
  const b = topology([
    device("0000:01:00.0", { group: null, class: "0x020000" }),
    device("0000:01:00.2", { group: null, class: "0x020000" }),
  ]);
  assertEquals(compareTopologies(a, b), [
    { kind: "iommu", a: "enabled", b: "absent" },
    { kind: "field", address: "0000:01:00.0", field: "iommuGroup", a: 1, b: null },
    { kind: "field", address: "0000:01:00.0", field: "virtfns", a: "0000:01:00.2", b: "" },
    { kind: "field", address: "0000:01:00.2", field: "iommuGroup", a: 1, b: null },
    { kind: "field", address: "0000:01:00.2", field: "physfn", a: "0000:01:00.0", b: null },
  ]);
});

Deno.test("formatSourceDifference() names the sources and quotes strings", () => {
  const labels = { a: "sysfs", b: "libvirt" };
  const lines = ([
    { kind: "iommu", a: "enabled", b: "absent" },
    { kind: "missing", address: "0000:02:00.0", missingFrom: "b" },
    { kind: "missing", address: "0000:03:00.0", missingFrom: "a" },
    { kind: "field", address: "0000:01:00.0", field: "driver", a: "vfio-pci", b: null },
    { kind: "field", address: "0000:01:00.0", field: "isBridge", a: false, b: true },
    { kind: "field", address: "0000:01:00.0", field: "virtfns", a: "0000:01:00.2", b: "" },
    { kind: "field", address: "0000:01:00.2", field: "physfn", a: "0000:01:00.0", b: null },
  ] satisfies SourceDifference[]).map((d) => formatSourceDifference(d, labels));
  assertEquals(lines, [
    "IOMMU is enabled in sysfs, absent in libvirt",
    "0000:02:00.0: in sysfs only, missing from libvirt",
    "0000:03:00.0: in libvirt only, missing from sysfs",
    // Not "unknown": libvirt said the device has no driver, no VFs, no PF.
    `0000:01:00.0: driver is "vfio-pci" in sysfs, none in libvirt`,
    "0000:01:00.0: isBridge is false in sysfs, true in libvirt",
    `0000:01:00.0: virtfns is "0000:01:00.2" in sysfs, none in libvirt`,
    `0000:01:00.2: physfn is "0000:01:00.0" in sysfs, none in libvirt`,
  ]);
});

Deno.test("compareTopologies() finds a regrouped and a vanished device between sysfs and a test-driver world", async () => {
  const description = loadFixtureHost("b550-aorus-pro");
  const [first, second, ...rest] = description.devices;
  if (first === undefined || second === undefined) throw new Error("fixture too small");
  // libvirt's view: the first device moved to a group of its own, the second is gone.
  const moved: HostDescription = {
    devices: [{ ...first, group: 999 }, ...rest],
  };
  await using tree = await tempHostTree(description);
  const sysfs = await discoverHost({ root: tree.dir, lspci: null });
  await using world = await writeTempWorld(nodeDeviceWorldXml(moved));
  using source = openNodeDeviceSource(world.uri);
  const libvirt = discoverViaLibvirt(source);
  assertEquals(
    compareTopologies(sysfs, libvirt).filter((d) => d.kind !== "field" || d.field !== "driver"),
    [
      {
        kind: "field",
        address: first.bdf,
        field: "iommuGroup",
        a: first.group,
        b: 999,
      },
      { kind: "missing", address: second.bdf, missingFrom: "b" },
    ].sort((x, y) => x.address.localeCompare(y.address)),
  );
});

Deno.test("compareTopologies() joins a PF's virtual functions with spaces; formatSourceDifference() names the sides a and b by default", () => {
  const pf = device("0000:01:00.0", { class: "0x020000" });
  const vf = (bdf: string) => device(bdf, { class: "0x020000", physfn: "0000:01:00.0" });
  const a = topology([pf, vf("0000:01:00.2"), vf("0000:01:00.3")]);
  const b = topology([pf, vf("0000:01:00.2")]);
  const differences = compareTopologies(a, b);
  assertEquals(differences, [
    {
      kind: "field",
      address: "0000:01:00.0",
      field: "virtfns",
      a: "0000:01:00.2 0000:01:00.3",
      b: "0000:01:00.2",
    },
    { kind: "missing", address: "0000:01:00.3", missingFrom: "b" },
  ]);
  assertEquals(differences.map((d) => formatSourceDifference(d)), [
    `0000:01:00.0: virtfns is "0000:01:00.2 0000:01:00.3" in a, "0000:01:00.2" in b`,
    "0000:01:00.3: in a only, missing from b",
  ]);
});
