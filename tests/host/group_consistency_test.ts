/**
 * IOMMU group data that disagrees with itself: sysfs has two views of membership (each device's
 * `iommu_group` link and each group's `kernel/iommu_groups/N/devices` listing), and a damaged,
 * hostile or changing tree can make them disagree. Discovery reports each disagreement on the
 * topology and the plan refuses every VM that would take a device concerned, while VMs on
 * consistent groups are still planned.
 */

import { assertEquals, assertOk } from "../helpers/assert.ts";
import { demoTree } from "../helpers/reliability.ts";
import { addNonPciGroupMember } from "../helpers/hosts.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
import { writeTempWorld } from "../helpers/world.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { parseGroupNumber } from "../../lib/host/iommu_groups.ts";
import { denoFsReader, type SysfsReader } from "../../lib/host/sysfs.ts";
import { libcSysfsReader } from "../../ffi/libc_fs.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import type { HostTopology } from "../../lib/host/types.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import { recordCase } from "../../scripts/reliability_report.ts";

const TEST = "tests/host/group_consistency_test.ts";

// On the demo host: the GTX 1080 and its audio function share group 26, the RX 580 and its
// audio group 59.
const GPU = "0000:21:00.0";
const AUDIO = "0000:21:00.1";
const CONFIG = `version: 1
vms:
  a:
    devices:
      - name: gtx1080
        match: { vendor_device_id: "10de:1b80" }
  b:
    devices:
      - name: rx580
        match: { vendor_device_id: "1002:67df" }
`;

const WORLD = `<node>${
  ["a", "b"].map((name) =>
    `<domain type='test'><name>${name}</name><memory unit='KiB'>1048576</memory>
      <os><type arch='x86_64'>hvm</type></os></domain>`
  ).join("")
}</node>`;

interface DamageCase {
  name: string;
  /** Damages the tree at `root` before discovery. */
  damage?: (root: string) => void;
  /** Wraps the reader, to change the tree while discovery reads it. */
  during?: (root: string, reader: SysfsReader) => SysfsReader;
  /** Every group and device some reported inconsistency must name. */
  groups: number[];
  devices: string[];
  /** The VMs refused with `group-inconsistent`; the others are planned. */
  refused: string[];
}

const devices = (root: string) => `${root}/bus/pci/devices`;
const listing = (root: string, group: number | string) =>
  `${root}/kernel/iommu_groups/${group}/devices`;

/** Re-points a device's `iommu_group` link at group directory `name`. */
function relink(root: string, address: string, name: string): void {
  Deno.removeSync(`${devices(root)}/${address}/iommu_group`);
  Deno.symlinkSync(
    `../../../../kernel/iommu_groups/${name}`,
    `${devices(root)}/${address}/iommu_group`,
  );
}

/**
 * Moves the audio function under `bridges` (from the root port down), as the kernel lays sysfs
 * out: its `bus/pci/devices` entry a link to it there. Then takes its group away: no
 * `iommu_group` link, not in its group's listing.
 */
function groupless(root: string, bridges: string[]): void {
  const path = ["devices/pci0000:00", ...bridges].join("/");
  Deno.mkdirSync(`${root}/${path}`, { recursive: true });
  Deno.renameSync(`${devices(root)}/${AUDIO}`, `${root}/${path}/${AUDIO}`);
  Deno.symlinkSync(`../../../${path}/${AUDIO}`, `${devices(root)}/${AUDIO}`);
  Deno.removeSync(`${root}/${path}/${AUDIO}/iommu_group`);
  Deno.removeSync(`${listing(root, 26)}/${AUDIO}`);
}

const CASES: DamageCase[] = [
  {
    name: "a group member missing from bus/pci/devices",
    damage: (root) =>
      Deno.symlinkSync(
        "../../../../devices/pci0000:00/0000:00:03.1/0000:21:00.2",
        `${listing(root, 26)}/0000:21:00.2`,
      ),
    groups: [26],
    devices: [],
    refused: ["a"],
  },
  {
    name: "an iommu_group link that contradicts the group listings",
    damage: (root) => relink(root, AUDIO, "59"),
    groups: [26, 59],
    devices: [AUDIO],
    refused: ["a", "b"],
  },
  {
    name: "a device listed in two groups",
    damage: (root) =>
      Deno.symlinkSync(
        `../../../../devices/pci0000:00/0000:00:03.1/${AUDIO}`,
        `${listing(root, 59)}/${AUDIO}`,
      ),
    groups: [26, 59],
    devices: [AUDIO],
    refused: ["a", "b"],
  },
  {
    name: "a device with no group on a host with groups (its card's group is refused)",
    damage: (root) => {
      Deno.removeSync(`${devices(root)}/${AUDIO}/iommu_group`);
      Deno.removeSync(`${listing(root, 26)}/${AUDIO}`);
    },
    groups: [26],
    devices: [AUDIO],
    refused: ["a"],
  },
  {
    name: "a device with no group behind a bridge of another group (both groups are refused)",
    damage: (root) => groupless(root, ["0000:00:01.1"]),
    groups: [1, 26],
    devices: [AUDIO],
    refused: ["a"],
  },
  {
    name: "an IOMMU function without a group, as on real AMD hosts (nothing else refused)",
    damage: (root) => {
      const iommu = `${devices(root)}/0000:00:00.2`;
      Deno.mkdirSync(iommu);
      Deno.writeTextFileSync(
        `${iommu}/uevent`,
        "PCI_CLASS=80600\nPCI_ID=1022:1481\nPCI_SUBSYS_ID=1022:1481\n",
      );
    },
    groups: [],
    devices: ["0000:00:00.2"],
    refused: [],
  },
  {
    name: "a group number too big for a double (99999999999999999999)",
    damage: (root) => {
      Deno.renameSync(
        `${root}/kernel/iommu_groups/26`,
        `${root}/kernel/iommu_groups/99999999999999999999`,
      );
      relink(root, GPU, "99999999999999999999");
      relink(root, AUDIO, "99999999999999999999");
    },
    groups: [],
    devices: [GPU, AUDIO],
    refused: ["a"],
  },
  {
    name: "a group number spelled another way (0x1a for 26)",
    damage: (root) => relink(root, AUDIO, "0x1a"),
    groups: [26],
    devices: [AUDIO],
    refused: ["a"],
  },
  {
    name: "two bus/pci/devices entries for one address (00000000:21:00.1 beside 0000:21:00.1)",
    damage: (root) => Deno.symlinkSync(AUDIO, `${devices(root)}/00000000:21:00.1`),
    groups: [26],
    devices: [AUDIO],
    refused: ["a"],
  },
  // A device removed while discovery reads (after the listing of bus/pci/devices, before the
  // group listings) is no damage: discovery reads again (tests/host/hot_change_test.ts).
];

/** Whether some reported inconsistency names every expected group and device. */
function reported(host: HostTopology, c: DamageCase): boolean {
  const groups = new Set(host.groupInconsistencies.flatMap((p) => p.groups));
  const addresses = new Set(host.groupInconsistencies.flatMap((p) => p.devices));
  return c.groups.every((g) => groups.has(g)) && c.devices.every((d) => addresses.has(d));
}

/** Discovers the damaged demo tree with `readerName`'s reader. */
async function discoverCase(c: DamageCase, readerName: "deno" | "libc"): Promise<HostTopology> {
  await using tree = await demoTree();
  c.damage?.(tree.sysfs);
  const base = readerName === "deno" ? denoFsReader() : libcSysfsReader();
  const reader = c.during?.(tree.sysfs, base) ?? base;
  const host = await discoverHost({ root: tree.sysfs, reader, lspci: null });
  assertOk(
    reported(host, c),
    `${c.name} (${readerName}): ${JSON.stringify(host.groupInconsistencies)}`,
  );
  return host;
}

/** Plans {@link CONFIG} over `host` and checks which VMs are refused. */
function checkPlan(c: DamageCase, host: HostTopology, libvirt: LibvirtPort): void {
  const plan = planHostdevs({ config: parseConfig(CONFIG, { file: "c.yaml" }), host, libvirt });
  for (const vm of plan.vms) {
    const label = `${c.name}: VM ${vm.name}`;
    if (c.refused.includes(vm.name)) {
      assertOk(vm.errors.some((e) => e.code === "group-inconsistent"), label);
      assertEquals(vm.add, [], label);
    } else {
      assertEquals(vm.errors, [], label);
      assertEquals(vm.add.length, 2, label);
    }
  }
}

Deno.test("a consistent tree reports no group inconsistency and plans both VMs", async () => {
  const c = { name: "undamaged", groups: [], devices: [], refused: [] };
  const host = await discoverCase(c, "libc");
  assertEquals(host.groupInconsistencies, []);
  await using world = await writeTempWorld(WORLD);
  using port = openLibvirtPort(world.uri);
  checkPlan(c, host, port);
});

Deno.test("IOMMU group data that disagrees with itself refuses the VMs taking the groups concerned", async () => {
  await using world = await writeTempWorld(WORLD);
  using port = openLibvirtPort(world.uri);
  for (const c of CASES) {
    const fromDeno = await discoverCase(c, "deno");
    const fromLibc = await discoverCase(c, "libc");
    // One answer from either reader, so the CLI says the same with or without FFI.
    assertEquals(fromDeno, { ...fromLibc, source: fromDeno.source }, c.name);
    checkPlan(c, fromLibc, port);
    recordCase({
      area: "sysfs",
      name: c.name,
      count: 1,
      outcome: "reported on the topology; VMs taking the groups refused (group-inconsistent)",
      test: TEST,
    });
  }
});

Deno.test("the group-inconsistent refusal names the rule, the devices and what disagrees", async () => {
  await using tree = await demoTree();
  relink(tree.sysfs, AUDIO, "59");
  const host = await discoverHost({ root: tree.sysfs, lspci: null });
  await using world = await writeTempWorld(WORLD);
  using port = openLibvirtPort(world.uri);
  const plan = planHostdevs({
    config: parseConfig(CONFIG, { file: "c.yaml" }),
    host,
    libvirt: port,
  });
  const issue = plan.vms[0]!.errors.find((e) => e.code === "group-inconsistent")!;
  // The audio function's link puts it in group 59, so the VM's closure holds the GPU alone.
  assertEquals([issue.vm, issue.rule, issue.devices], ["a", "gtx1080", [GPU]]);
  assertEquals(
    issue.message,
    `VM "a" would take ${GPU} (rule "gtx1080"), but the IOMMU group data of "${tree.sysfs}" disagrees: ${AUDIO}'s iommu_group link names group 59, but kernel/iommu_groups/26/devices lists it: the whole group cannot be known, so nothing is planned for "a" until discovery reads consistent data (rerun it; recapture a tree with 'passthrough snapshot')`,
  ); // Two groups disagree: the refusal names no one group.
  assertEquals(issue.group, undefined);
});

Deno.test("a group-inconsistent refusal about one group names it", async () => {
  await using tree = await demoTree();
  // The audio function links to group 26, whose listing leaves it out.
  Deno.removeSync(`${listing(tree.sysfs, 26)}/${AUDIO}`);
  const host = await discoverHost({ root: tree.sysfs, lspci: null });
  assertEquals(host.groupInconsistencies.map((p) => [p.groups, p.devices]), [[[26], [AUDIO]]]);
  await using world = await writeTempWorld(WORLD);
  using port = openLibvirtPort(world.uri);
  const plan = planHostdevs({
    config: parseConfig(CONFIG, { file: "c.yaml" }),
    host,
    libvirt: port,
  });
  const issue = plan.vms[0]!.errors.find((e) => e.code === "group-inconsistent");
  assertEquals([issue?.devices, issue?.group], [[GPU, AUDIO], 26]);
});

Deno.test("each disagreement says what it is: a link naming no group number, a group directory named by none", async () => {
  const details = async (damage: (root: string) => void) => {
    await using tree = await demoTree();
    damage(tree.sysfs);
    const host = await discoverHost({ root: tree.sysfs, lspci: null });
    return host.groupInconsistencies.map((p) => [p.devices, p.detail]);
  };
  const badLink = await details((root) => relink(root, AUDIO, "0x1a"));
  assertOk(
    badLink.some(([devices, detail]) =>
      `${devices}` === AUDIO &&
      detail === `${AUDIO}'s iommu_group link names "0x1a", not a group number`
    ),
    JSON.stringify(badLink),
  );
  const badName = await details((root) => {
    Deno.mkdirSync(listing(root, "abc"), { recursive: true });
    Deno.symlinkSync(
      `../../../../devices/pci0000:00/0000:00:03.1/${AUDIO}`,
      `${listing(root, "abc")}/${AUDIO}`,
    );
  });
  assertEquals(badName, [[[AUDIO], "kernel/iommu_groups/abc is not a group number"]]);
});

Deno.test("a device left without a group says why: its link names no number, or two listings name it", async () => {
  const groupless = async (damage: (root: string) => void) => {
    await using tree = await demoTree();
    damage(tree.sysfs);
    const host = await discoverHost({ root: tree.sysfs, lspci: null });
    return host.groupInconsistencies.map((p) => p.detail).filter((d) =>
      d.includes("no IOMMU group")
    )
      .map((d) => d.slice(0, d.indexOf(":", d.indexOf("(")) + 1));
  };
  const has = `${AUDIO} has no IOMMU group on a host that has groups`;
  // Group 26 lists it: it was said to have no link and no listing.
  assertEquals(await groupless((root) => relink(root, AUDIO, "twenty-six")), [
    `${has} (its iommu_group link names no group number):`,
  ]);
  assertEquals(
    await groupless((root) => {
      Deno.removeSync(`${devices(root)}/${AUDIO}/iommu_group`);
      Deno.symlinkSync(
        Deno.readLinkSync(`${listing(root, 26)}/${AUDIO}`),
        `${listing(root, 59)}/${AUDIO}`,
      );
    }),
    [`${has} (more than one kernel/iommu_groups/N/devices lists it):`],
  );
});

Deno.test("a tree with iommu_group links and no kernel/iommu_groups listings takes the links' groups", async () => {
  await using tree = await demoTree();
  Deno.removeSync(`${tree.sysfs}/kernel/iommu_groups`, { recursive: true });
  const host = await discoverHost({ root: tree.sysfs, lspci: null });
  assertEquals(host.groupInconsistencies, []);
  const group = (address: string) => host.devices.find((d) => d.address === address)?.iommuGroup;
  assertEquals([group(GPU), group(AUDIO)], [26, 26]);
});

Deno.test("parseGroupNumber(): the kernel's int range, in decimal without leading zeros", () => {
  assertEquals(
    ["0", "26", "2147483647", "2147483648", "026", "0x1a", "-1", ""].map(parseGroupNumber),
    [0, 26, 2147483647, null, null, null, null, null],
  );
});

Deno.test("a device with no group behind two bridges names the nearer bridge's group", async () => {
  await using tree = await demoTree();
  // Under root port 00:01.1 (group 1), the bridge 20:03.1 (group 19).
  groupless(tree.sysfs, ["0000:00:01.1", "0000:20:03.1"]);
  const host = await discoverHost({ root: tree.sysfs, lspci: null });
  const flagged = host.groupInconsistencies.filter((p) => p.devices.includes(AUDIO));
  assertEquals(flagged.map((p) => p.groups), [[19, 26]]);
});

Deno.test("two bus/pci/devices entries for one address name each entry's group once, in order", async () => {
  const twoEntries = async (damage: (root: string) => void) => {
    await using tree = await demoTree();
    damage(tree.sysfs);
    const host = await discoverHost({ root: tree.sysfs, lspci: null });
    return host.groupInconsistencies.filter((p) => p.detail.includes("two entries"))
      .map((p) => [p.groups, p.devices]);
  };
  // A second name for the same entry: its one group, once.
  const alias = (root: string) => Deno.symlinkSync(AUDIO, `${devices(root)}/00000000:21:00.1`);
  assertEquals(await twoEntries(alias), [[[26], [AUDIO]]]);
  // A second entry whose link names group 59: both groups, whichever entry is listed first.
  const copy = (root: string) => {
    const from = `${devices(root)}/${AUDIO}`;
    const to = `${devices(root)}/00000000:21:00.1`;
    Deno.mkdirSync(to);
    for (const entry of Deno.readDirSync(from)) {
      if (entry.isFile) Deno.copyFileSync(`${from}/${entry.name}`, `${to}/${entry.name}`);
    }
    Deno.symlinkSync("../../../../kernel/iommu_groups/59", `${to}/iommu_group`);
  };
  assertEquals(await twoEntries(copy), [[[26, 59], [AUDIO]]]);
});

Deno.test("a device behind Intel VMD without a group is said to be VMD's, with the controller when the tree shows it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-groups-vmd-" });
  try {
    const blank = { subsystem_vendor: null, subsystem_device: null, revision: null, driver: null };
    buildHostTree({
      devices: [
        {
          bdf: "0000:00:0e.0",
          group: 5,
          class: "0x010400",
          vendor: "0x8086",
          device: "0x9a0b",
          ...blank,
        },
        {
          bdf: "10000:e1:00.0",
          group: null,
          class: "0x010802",
          vendor: "0x144d",
          device: "0xa808",
          ...blank,
        },
      ],
    }, dir);
    const detail = async () => {
      const host = await discoverHost({ root: dir, lspci: null });
      return host.groupInconsistencies.map((p) => [p.groups, p.devices, p.detail]);
    };
    const note = (host: string) =>
      `10000:e1:00.0 has no IOMMU group on a host that has groups (no iommu_group link, and no kernel/iommu_groups/N/devices lists it): it is in PCI domain 10000, ${host}, and the IOMMU sees its DMA as ${
        host.startsWith("which") ? "0000:00:0e.0's" : "the controller's"
      }: VFIO cannot assign it, and a guest given ${
        host.startsWith("which") ? "0000:00:0e.0" : "the controller"
      } takes it too`;
    // A captured tree keeps no topology: the domain alone says VMD.
    assertEquals(await detail(), [[
      [],
      ["10000:e1:00.0"],
      note(
        "past the firmware's last (ffff), as Intel VMD numbers the domain behind its controller",
      ),
    ]]);
    // The kernel's layout: VMD's domain hangs under the controller's function.
    const at = "devices/pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:06.0/10000:e1:00.0";
    Deno.mkdirSync(`${dir}/${at.slice(0, at.lastIndexOf("/"))}`, { recursive: true });
    Deno.renameSync(`${dir}/bus/pci/devices/10000:e1:00.0`, `${dir}/${at}`);
    Deno.symlinkSync(`../../../${at}`, `${dir}/bus/pci/devices/10000:e1:00.0`);
    assertEquals(await detail(), [[
      [5],
      ["10000:e1:00.0"],
      note("which 0000:00:0e.0 (an Intel VMD controller) hosts"),
    ]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a non-PCI member of a group is judged by its driver: none is harmless, a host driver refuses", async () => {
  await using tree = await demoTree();
  await using world = await writeTempWorld(WORLD);
  using port = openLibvirtPort(world.uri);
  const plan = async () => {
    const host = await discoverHost({ root: tree.sysfs, lspci: null });
    const config = parseConfig(CONFIG, { file: "c.yaml" });
    return { host, plan: planHostdevs({ config, host, libvirt: port }) };
  };
  // Unbound (AMD IVRS lists such ACPI devices): VFIO takes the group past it.
  addNonPciGroupMember(tree.sysfs, 26, "AMDI0020:00", "platform", null);
  const free = await plan();
  assertEquals(free.host.groupInconsistencies, []);
  assertEquals(free.plan.vms.map((vm) => [vm.name, vm.errors, vm.add.length]), [
    ["a", [], 2],
    ["b", [], 2],
  ]);
  // On a host driver: group 26 is not viable, and only the VM taking it is refused.
  addNonPciGroupMember(tree.sysfs, 26, "INT33C2:00", "acpi", "i2c_designware");
  const bound = await plan();
  assertEquals(bound.host.groupInconsistencies.map((p) => [p.groups, p.detail]), [[
    [26],
    'kernel/iommu_groups/26/devices lists "INT33C2:00" (bus acpi, driver i2c_designware), no PCI device: VFIO takes a group only while no host driver holds any of its devices',
  ]]);
  assertEquals(bound.plan.vms.map((vm) => [vm.name, vm.errors.map((e) => e.code)]), [
    ["a", ["group-inconsistent"]],
    ["b", []],
  ]);
});
