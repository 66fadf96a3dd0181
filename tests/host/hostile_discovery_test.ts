/**
 * Broken discovery input: `lspci` output that is truncated, reordered, localized, from another
 * pciutils version or garbage, and sysfs trees with missing files, dangling links, entries of the
 * wrong type and absurd values. Sysfs stays the authority for identity and groups; lspci can only
 * add facts, never invent a safety property (FLR) or a device; damaged trees give a clear error
 * or a topology that cannot split a group.
 */

import {
  assertEquals,
  assertMatch,
  assertOk,
  assertRejects,
  assertThrows,
} from "../helpers/assert.ts";
import { writeTempWorld } from "../helpers/world.ts";
import { buildHostTree, type HostDescription } from "../../lib/testing/host_tree.ts";
import { generateHost } from "../../lib/testing/host_generator.ts";
import { discoverHost, SysfsRootError } from "../../lib/host/discover.ts";
import { commandLspciRunner, lspciArgs } from "../../lib/host/lspci.ts";
import { denoFsReader, type SysfsReader } from "../../lib/host/sysfs.ts";
import { libcSysfsReader, readXattr } from "../../ffi/libc_fs.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import type { HostTopology, PciDevice } from "../../lib/host/types.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import { demoTree, gpuConfig } from "../helpers/reliability.ts";
import { loadFixtureHost, tempHostTree } from "../helpers/hosts.ts";

const TEST = "tests/host/hostile_discovery_test.ts";

/** A generated host with FLR on its NICs, serials, SR-IOV and bridges. */
function description(): HostDescription {
  const host = generateHost(48, { vfsPerNic: 2 });
  return {
    ...host,
    devices: host.devices.map((d) =>
      d.class === "0x020000" && d.physfn == null ? { ...d, flr: true } : d
    ),
  };
}

async function withTree<T>(fn: (root: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hostile-discovery-" });
  try {
    buildHostTree(description(), `${dir}/sysfs`);
    return await fn(`${dir}/sysfs`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const IDENTITY: (keyof PciDevice)[] = [
  "address",
  "vendorId",
  "deviceId",
  "subsystemVendorId",
  "subsystemDeviceId",
  "classCode",
  "driver",
  "iommuGroup",
  "isBridge",
  "physfn",
  "virtfns",
];

function identity(host: HostTopology) {
  return host.devices.map((d) => Object.fromEntries(IDENTITY.map((k) => [k, d[k]])));
}

function records(text: string): string[] {
  return text.split(/\n(?=\S)/).filter((r) => r.trim() !== "");
}

const LSPCI_VARIANTS: [string, (text: string) => string][] = [
  ["truncated mid-line", (t) => t.slice(0, Math.floor(t.length / 2))],
  [
    "truncated inside the last record's capabilities",
    (t) => t.slice(0, t.lastIndexOf("Capabilities:") + 30),
  ],
  ["headers only", (t) => records(t).map((r) => r.split("\n")[0]).join("\n") + "\n"],
  ["records reordered", (t) => records(t).reverse().join("\n") + "\n"],
  [
    "localized labels (German)",
    (t) =>
      t.replaceAll("Kernel driver in use", "Verwendeter Kerneltreiber")
        .replaceAll("Capabilities:", "Fähigkeiten:")
        .replaceAll("Physical Slot", "Physischer Steckplatz")
        .replaceAll("IOMMU group", "IOMMU-Gruppe"),
  ],
  ["another version: no domain prefix (no -D)", (t) => t.replace(/^0000:/gm, "")],
  [
    "another version: a new field in every record",
    (t) => records(t).map((r) => r.replace("\n", "\n\tNewField: x\n")).join("\n") + "\n",
  ],
  [
    "extra device that sysfs does not have",
    (t) =>
      t +
      "0000:ff:1f.7 Ethernet controller [0200]: Fake [8086:1533]\n\tCapabilities: [40] Express (v2) Endpoint\n\t\tDevCap:\tFLReset+\n",
  ],
  [
    "binary garbage",
    () => String.fromCharCode(...Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256)),
  ],
  ["empty output", () => ""],
];

Deno.test("discoverHost() with broken lspci output keeps sysfs identities and never invents FLR, serials or devices", async () => {
  await withTree(async (root) => {
    const real = await commandLspciRunner()(lspciArgs(root));
    const baseline = await discoverHost({ root, lspci: () => Promise.resolve(real) });
    assertOk(baseline.devices.some((d) => d.flr === true), "the baseline has FLR devices");
    assertOk(baseline.devices.some((d) => d.serial !== null), "the baseline has serials");
    const byAddress = new Map(baseline.devices.map((d) => [d.address, d]));
    for (const [name, mutate] of LSPCI_VARIANTS) {
      const host = await discoverHost({ root, lspci: () => Promise.resolve(mutate(real)) });
      assertEquals(identity(host), identity(baseline), name);
      assertEquals(host.groups.map((g) => g.group), baseline.groups.map((g) => g.group), name);
      for (const d of host.devices) {
        const b = byAddress.get(d.address)!;
        // Truncation may hide an FLR line (false: the conservative answer), never add one.
        assertOk([b.flr, null, false].includes(d.flr), `${name}: ${d.address} flr ${d.flr}`);
        assertOk(!(d.flr === true && b.flr !== true), `${name}: FLR invented for ${d.address}`);
        assertOk(d.serial === b.serial || d.serial === null, `${name}: ${d.address} serial`);
        assertOk(d.className === b.className || d.className === null, `${name}: ${d.address}`);
      }
      if (name === "records reordered" || name.startsWith("another version")) {
        assertEquals(host, baseline, name);
      }
      if (name.startsWith("localized")) {
        // Unreadable labels mean "unknown" at worst, never "no FLR" for a device that has it.
        const lost = host.devices.filter((d) =>
          byAddress.get(d.address)!.flr === true && d.flr === false
        );
        assertEquals(lost, [], name);
      }
      recordCase({
        area: "lspci",
        name,
        count: 1,
        outcome: "sysfs identities and groups unchanged; lspci facts equal or unknown",
        test: TEST,
      });
    }
  });
});

/** Each damage is applied to a fresh tree of the generated host. */
const SYSFS_DAMAGE: {
  name: string;
  damage: (root: string, devices: string) => void;
  /** Either a clear error, or a check on the topology. */
  expect: RegExp | ((host: HostTopology, baseline: HostTopology) => void);
}[] = [
  {
    name: "no bus/pci/devices directory",
    damage: (root) => Deno.removeSync(`${root}/bus`, { recursive: true }),
    expect: /Not a sysfs tree: ".*": no bus\/pci\/devices directory/,
  },
  {
    name: "bus/pci/devices is a file",
    damage: (root) => {
      Deno.removeSync(`${root}/bus/pci/devices`, { recursive: true });
      Deno.writeTextFileSync(`${root}/bus/pci/devices`, "x");
    },
    expect: /Not a sysfs tree/,
  },
  {
    name: "a GPU audio function without its iommu_group link",
    damage: (_, devices) => Deno.removeSync(`${devices}/0000:01:00.1/iommu_group`),
    expect: (host, baseline) => assertEquals(host.groups, baseline.groups),
  },
  {
    name: "dangling iommu_group and driver links",
    damage: (root, devices) => {
      Deno.removeSync(`${root}/kernel/iommu_groups`, { recursive: true });
      Deno.removeSync(`${devices}/0000:01:00.0/driver`);
      Deno.symlinkSync("../../../bus/pci/drivers/gone", `${devices}/0000:01:00.0/driver`);
    },
    // Links are read, not followed: the group number and driver name are in the link itself.
    expect: (host, baseline) => assertEquals(identity(host), identity(baseline)),
  },
  {
    name: "missing uevent, vendor and class files",
    damage: (_, devices) => {
      for (const f of ["uevent", "vendor", "class"]) {
        Deno.removeSync(`${devices}/0000:01:00.0/${f}`);
      }
    },
    expect: (host) => {
      const d = host.devices.find((x) => x.address === "0000:01:00.0")!;
      // Unknown identity matches no rule, and the device still counts in its group.
      assertEquals([d.vendorId, d.classCode, d.iommuGroup !== null], ["ffff", "000000", true]);
    },
  },
  {
    name: "attribute files that are directories (unreadable as files)",
    damage: (_, devices) => {
      for (const f of ["uevent", "config", "numa_node"]) {
        Deno.removeSync(`${devices}/0000:01:00.0/${f}`);
        Deno.mkdirSync(`${devices}/0000:01:00.0/${f}`);
      }
    },
    expect: (host) => assertOk(host.devices.some((d) => d.address === "0000:01:00.0")),
  },
  {
    name: "attribute files longer than a page (uevent 6 KiB, config 8 KiB)",
    damage: (_, devices) => {
      const dir = `${devices}/0000:01:00.0`;
      const uevent = Deno.readTextFileSync(`${dir}/uevent`);
      Deno.writeTextFileSync(`${dir}/uevent`, uevent + "X_PADDING=" + "x".repeat(6144) + "\n");
      const config = Deno.readFileSync(`${dir}/config`);
      const long = new Uint8Array(8192);
      long.set(config.subarray(0, 4096));
      Deno.writeFileSync(`${dir}/config`, long);
    },
    // The IDs, driver and class come from the uevent's first lines, FLR and the serial from the
    // first 4 KiB of config, as the kernel's own files hold them.
    expect: (host, baseline) => assertEquals(identity(host), identity(baseline)),
  },
  {
    name: "absurd values (sriov_numvfs 99999999999, numa_node -7, class banana)",
    damage: (_, devices) => {
      Deno.writeTextFileSync(`${devices}/0000:01:00.0/sriov_numvfs`, "99999999999\n");
      Deno.writeTextFileSync(`${devices}/0000:01:00.0/sriov_totalvfs`, "7\n");
      Deno.writeTextFileSync(`${devices}/0000:01:00.0/numa_node`, "-7\n");
      Deno.removeSync(`${devices}/0000:01:00.0/uevent`);
      Deno.writeTextFileSync(`${devices}/0000:01:00.0/class`, "banana\n");
    },
    expect: (host) => {
      const d = host.devices.find((x) => x.address === "0000:01:00.0")!;
      assertEquals([d.virtfns, d.numaNode, d.classCode], [[], null, "000000"]);
      // A count beyond the capability's 16 bits is no count: only the total is kept.
      assertEquals([d.sriovTotalVfs, "sriovNumVfs" in d], [7, false]);
    },
  },
  {
    // One with a name that is no address is refused (see the test of entry names below).
    name: "a device entry that is a regular file",
    damage: (_, devices) => {
      Deno.writeTextFileSync(`${devices}/0000:fe:00.0`, "");
    },
    expect: (host, baseline) => {
      assertEquals(host.devices.length, baseline.devices.length + 1);
      assertEquals(host.devices.find((d) => d.address === "0000:fe:00.0")?.iommuGroup, null);
    },
  },
];

Deno.test("discoverHost() on damaged sysfs trees: a clear error or a topology that keeps groups whole", async () => {
  const baseline = await withTree((root) => discoverHost({ root, lspci: null }));
  for (const c of SYSFS_DAMAGE) {
    await withTree(async (root) => {
      c.damage(root, `${root}/bus/pci/devices`);
      // Deno's file API and libc: the same answer from each.
      const readers: [string, SysfsReader][] = [
        ["Deno fs", denoFsReader()],
        ["libc", libcSysfsReader()],
      ];
      let first: HostTopology | null = null;
      for (const [label, reader] of readers) {
        let host: HostTopology | null = null;
        let error: unknown = null;
        try {
          host = await discoverHost({ root, lspci: null, reader });
        } catch (e) {
          error = e;
        }
        if (c.expect instanceof RegExp) {
          assertOk(error instanceof SysfsRootError, `${c.name} (${label}): ${error}`);
          assertMatch((error as Error).message, c.expect);
        } else {
          assertEquals(error, null, `${c.name} (${label})`);
          c.expect(host!, baseline);
          if (first === null) first = host;
          else assertEquals(host, first, `${c.name} (${label})`);
        }
      }
      recordCase({
        area: "sysfs",
        name: c.name,
        count: 1,
        outcome: c.expect instanceof RegExp ? "clear error" : "handled, groups whole",
        test: TEST,
      });
    });
  }
});

Deno.test("discoverHost() refuses a root holding a NUL through libc as through Deno's reader", async () => {
  await withTree(async (root) => {
    // C ends a path at its NUL: libc read the tree "/x/sysfs" for "/x/sysfs\0/other", and found
    // no device there, where Deno's reader refuses the path.
    const named = `${root}\0/other`;
    for (const reader of [denoFsReader(), libcSysfsReader()]) {
      await assertRejects(
        () => discoverHost({ root: named, lspci: null, reader }),
        TypeError,
        "NUL",
      );
    }
    const libc = libcSysfsReader();
    const first = [...Deno.readDirSync(`${root}/bus/pci/devices`)][0]!.name;
    const file = `${root}/bus/pci/devices/${first}/vendor`;
    assertEquals(libc.readText(file), Deno.readTextFileSync(file));
    assertThrows(() => libc.readText(`${file}\0.old`), TypeError, "contains a NUL character");
    assertThrows(() => readXattr(`${file}\0.old`, "security.selinux"), TypeError, "NUL");
  });
});

Deno.test("planHostdevs() still gives a GPU's whole group when its audio function lost the iommu_group link", async () => {
  await using tree = await demoTree();
  Deno.removeSync(`${tree.sysfs}/bus/pci/devices/0000:21:00.1/iommu_group`);
  const host = await discoverHost({ root: tree.sysfs });
  await using world = await writeTempWorld(`<node><domain type='test'><name>vm</name>
    <memory unit='KiB'>1048576</memory><os><type arch='x86_64'>hvm</type></os></domain></node>`);
  using port = openLibvirtPort(world.uri);
  const plan = planHostdevs({
    config: parseConfig(gpuConfig("vm"), { file: "c.yaml" }),
    host,
    libvirt: port,
  });
  assertEquals(plan.vms[0]?.add.map((a) => a.address), ["0000:21:00.0", "0000:21:00.1"]);
  recordCase({
    area: "sysfs",
    name: "plan over a tree missing a group member's iommu_group link",
    count: 1,
    outcome: "whole group planned (from kernel/iommu_groups)",
    test: TEST,
  });
});

Deno.test("discoverHost() refuses a tree entry not named as the kernel names a function, before lspci runs", async () => {
  await using tree = await tempHostTree(loadFixtureHost("z690-asus-adl"));
  const devices = `${tree.dir}/bus/pci/devices`;
  const calls: string[][] = [];
  const lspci = (args: string[]) => (calls.push(args), commandLspciRunner()(args));
  for (const name of ["0000:0D:00.0", "0d:00.0"]) {
    Deno.renameSync(
      `${devices}/${Deno.readDirSync(devices).find((e) => /0d:00\.0$/i.test(e.name))!.name}`,
      `${devices}/${name}`,
    );
    // Before: "changed while they were read (0000:0d:00.0 vanished)" from lspci's "Cannot open
    // .../0000:0d:00.0/config", or lspci's "Couldn't parse entry name 0d:00.0".
    await assertRejects(
      () => discoverHost({ root: tree.dir, lspci }),
      Error,
      `Not a sysfs tree entry: "${devices}/${name}": the kernel names each PCI function by its address with its domain, in lower-case hex ("0000:0d:00.0"), where lspci and passthrough read it: rename the entry, or capture the tree again with 'passthrough snapshot'`,
    );
  }
  // Nor is an entry that names no address at all read: lspci said "Couldn't parse entry name".
  Deno.renameSync(`${devices}/0d:00.0`, `${devices}/foo`);
  await assertRejects(
    () => discoverHost({ root: tree.dir, lspci }),
    Error,
    `Not a sysfs tree entry: "${devices}/foo": the kernel names each PCI function by its address with its domain, in lower-case hex ("0000:01:00.0"), where lspci and passthrough read it: rename the entry, or capture the tree again with 'passthrough snapshot'`,
  );
  assertEquals(calls, []);
  // A second name beside the kernel's is no reason to refuse (it is reported as two entries).
  Deno.renameSync(`${devices}/foo`, `${devices}/0000:0d:00.0`);
  Deno.symlinkSync("0000:0d:00.0", `${devices}/00000000:0d:00.0`);
  const host = await discoverHost({ root: tree.dir, lspci });
  assertEquals(host.devices.filter((d) => d.address === "0000:0d:00.0").length, 1);
});
