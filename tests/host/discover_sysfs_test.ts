// Discovery rules over small built trees, read with the real lspci: SR-IOV, FLR, serials,
// slots, NUMA, boot VGA, bridges by header type, no IOMMU, host use, errors.
import { livePciMissing } from "../helpers/hosts.ts";
import { lspciVerboseFacts } from "../helpers/lspci_verbose.ts";
import {
  assertEquals,
  assertMatch,
  assertOk,
  assertRejects,
  assertThrows,
} from "../helpers/assert.ts";
import {
  buildHostTree,
  type HostDescription,
  loadHostDescription,
} from "../../lib/testing/host_tree.ts";
import { discoverHost, SysfsRootError } from "../../lib/host/discover.ts";
import { pciAncestor } from "../../lib/host/sysfs_device.ts";
import {
  LspciError,
  parseLspci,
  pciIdsVendorNames,
  splitVendorName,
} from "../../lib/host/lspci.ts";
import type { HostTopology } from "../../lib/host/types.ts";
import { denoFsReader, type SysfsReader } from "../../lib/host/sysfs.ts";
import { bufferConfigReader, readConfigSpace } from "../../lib/pci/config_space.ts";
import { nicDescription as dev } from "../helpers/devices.ts";

async function discover(description: HostDescription): Promise<HostTopology> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-sysfs-" });
  try {
    buildHostTree(description, dir);
    return await discoverHost({ root: dir });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("discoverHost() links SR-IOV virtual functions to their physical function", async () => {
  const host = await discover({
    devices: [
      dev("0000:01:00.0"),
      dev("0000:01:00.2", { device: "0x1016", physfn: "0000:01:00.0" }),
      dev("0000:01:00.3", { device: "0x1016", physfn: "0000:01:00.0" }),
    ],
  });
  const pf = host.devices[0];
  assertEquals(pf?.virtfns, ["0000:01:00.2", "0000:01:00.3"]);
  assertEquals(pf?.physfn, null);
  assertEquals(host.devices.slice(1).map((d) => d.physfn), ["0000:01:00.0", "0000:01:00.0"]);
});

Deno.test("discoverHost() reads FLR and serial numbers through lspci's capabilities", async () => {
  const host = await discover({
    devices: [
      dev("0000:01:00.0", { flr: true, serial: "00-11-22-ff-ff-33-44-55" }),
      dev("0000:02:00.0", { group: 2, flr: false, serial: "00-11-22-ff-ff-33-44-66" }),
      dev("0000:03:00.0", { group: 3, flr: true }),
      dev("0000:04:00.0", { group: 4 }),
    ],
  });
  assertEquals(
    host.devices.map((d) => [d.flr, d.serial]),
    [
      [true, "00-11-22-ff-ff-33-44-55"],
      [false, "00-11-22-ff-ff-33-44-66"],
      [true, null],
      // No readable capabilities (like an unprivileged read of a real device): unknown.
      [null, null],
    ],
  );
});

Deno.test("discoverHost() reads slot, NUMA node, boot VGA and modules", async () => {
  const host = await discover({
    devices: [
      dev("0000:01:00.0", {
        class: "0x030000",
        slot: "CPU1 SLOT2",
        numa_node: 1,
        boot_vga: true,
        modules: ["nouveau", "nvidiafb"],
      }),
      dev("0000:02:00.0", { group: 2, class: "0x030200", numa_node: -1, boot_vga: false }),
      dev("0000:03:00.0", { group: 3 }),
    ],
  });
  assertEquals(
    host.devices.map((d) => [d.physicalSlot, d.numaNode, d.bootVga, d.modules]),
    [
      ["CPU1 SLOT2", 1, true, ["nouveau", "nvidiafb"]],
      [null, null, false, []],
      [null, null, null, []],
    ],
  );
});

Deno.test("discoverHost() treats a type-1 header as a bridge whatever its class", async () => {
  const dir = await Deno.makeTempDir();
  try {
    buildHostTree({
      devices: [
        dev("0000:00:1c.0", { class: "0x060400", driver: "pcieport" }),
        dev("0000:00:1d.0", { class: "0x088000" }),
        dev("0000:00:1f.0", { class: "0x060100", driver: null }),
      ],
    }, dir);
    // A vendor-specific class on a type-1 header (seen on some switch ports).
    const config = `${dir}/bus/pci/devices/0000:00:1d.0/config`;
    const bytes = Deno.readFileSync(config);
    bytes[0x0e] = 0x81;
    Deno.writeFileSync(config, bytes);
    const host = await discoverHost({ root: dir, lspci: null });
    assertEquals(host.devices.map((d) => d.isBridge), [true, true, false]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("discoverHost() reports a host without IOMMU groups as absent, not an error", async () => {
  const host = await discover({
    devices: [dev("0000:01:00.0", { group: null }), dev("0000:02:00.0", { group: null })],
  });
  assertEquals(host.iommu, "absent");
  assertEquals(host.groups, []);
  assertEquals(host.devices.map((d) => d.iommuGroup), [null, null]);
  // No group anywhere is no disagreement about groups: the plan's no-iommu refusal says it all.
  assertEquals(host.groupInconsistencies, []);
});

Deno.test("discoverHost() looks vendor names up while lspci still runs", async () => {
  const dir = await Deno.makeTempDir();
  try {
    buildHostTree({
      devices: [dev("0000:01:00.0", { group: 1 }), dev("0000:02:00.0", { group: 2 })],
    }, dir);
    const asked: string[] = [];
    let finish = (_text: string) => {};
    // lspci finishes only once a vendor name was asked for: were names looked up after lspci,
    // discovery would never end (and Deno would fail the test on its pending promise).
    const lspci = () => new Promise<string>((resolve) => finish = resolve);
    const host = await discoverHost({
      root: dir,
      lspci,
      vendorNames: (id) => {
        asked.push(id);
        finish("");
        return null;
      },
    });
    assertEquals(host.devices.length, 2);
    assertEquals(new Set(asked), new Set(host.devices.map((d) => d.vendorId)));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("discoverHost() sorts devices and groups and canonicalises addresses", async () => {
  const host = await discover({
    devices: [
      dev("0000:0A:00.1", { group: 12 }),
      dev("0000:0a:00.0", { group: 12 }),
      dev("0000:00:02.0", { group: 3 }),
    ],
  });
  assertEquals(host.devices.map((d) => d.address), [
    "0000:00:02.0",
    "0000:0a:00.0",
    "0000:0a:00.1",
  ]);
  assertEquals(host.groups.map((g) => g.group), [3, 12]);
});

Deno.test("discoverHost() takes the command line and host use from a captured tree", async () => {
  const host = await discover({
    cmdline: "BOOT_IMAGE=/vmlinuz intel_iommu=on",
    host_use: [{
      address: "0000:01:00.0",
      reason: "default-route",
      detail: "default route via eth0",
    }],
    devices: [dev("0000:01:00.0")],
  });
  assertEquals(host.kernelCmdline, "BOOT_IMAGE=/vmlinuz intel_iommu=on");
  assertEquals(host.hostUse, [
    { address: "0000:01:00.0", reason: "default-route", detail: "default route via eth0" },
  ]);
  // A description lists all its host uses: none listed is known, and the tree says so.
  const bare = await discover({ devices: [dev("0000:01:00.0")] });
  assertEquals([bare.kernelCmdline, bare.hostUse], [null, []]);
  // An empty command line is none.
  assertEquals(
    (await discover({ cmdline: "\n", devices: [dev("0000:01:00.0")] })).kernelCmdline,
    null,
  );
});

Deno.test("discoverHost() reports host use as unknown for a tree without host_use.json", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-sysfs-" });
  try {
    buildHostTree({ devices: [dev("0000:01:00.0")] }, dir);
    await Deno.remove(`${dir}/host_use.json`);
    const host = await discoverHost({ root: dir });
    assertEquals([host.devices.length, host.hostUse], [1, null]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("discoverHost() refuses a damaged host_use.json, naming the file and what is wrong", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-sysfs-" });
  try {
    buildHostTree({ devices: [dev("0000:01:00.0")] }, dir);
    const file = `${dir}/host_use.json`;
    // Each would otherwise read as "the host uses nothing", or fail with an unnamed TypeError.
    const damaged: [string, RegExp][] = [
      ["{", /Cannot parse ".*host_use\.json": /],
      ['{"0000:01:00.0": "swap"}', /Cannot parse ".*host_use\.json": not an array/],
      ['"0000:01:00.0"', /Cannot parse ".*host_use\.json": not an array/],
      ['[{"address": "0000:01:00.0", "reason": "in-use"}]', /bad entry .*"in-use"/],
      ['[{"address": "01:00", "reason": "swap"}]', /bad entry .*"01:00"/],
      ["[null]", /bad entry null/],
      ["[1]", /bad entry 1/],
    ];
    // Every reason `snapshot` writes reads back.
    const reasons = ["mounted-filesystem", "swap", "block-holder", "zfs-pool", "default-route"];
    const uses = [...reasons, "network-route", "console-vga"].map((reason) => ({
      address: "0000:01:00.0",
      reason,
      detail: reason,
    }));
    Deno.writeTextFileSync(file, JSON.stringify(uses));
    assertEquals((await discoverHost({ root: dir })).hostUse?.map((u) => u.reason), [
      ...uses.map((u) => u.reason).sort(),
    ]);
    for (const [text, message] of damaged) {
      Deno.writeTextFileSync(file, text);
      const error = await discoverHost({ root: dir }).catch((e: Error) => e);
      assertOk(error instanceof SyntaxError, `${text}: ${error}`);
      assertMatch(String(error), message);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("discoverHost() rejects a directory that is not a sysfs tree", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assertRejects(() => discoverHost({ root: dir, lspci: null }), SysfsRootError);
    // With lspci failing too: that error, which nobody awaits, is no unhandled rejection.
    const lspci = () => Promise.reject(new Error("lspci: not found"));
    await assertRejects(() => discoverHost({ root: dir, lspci }), SysfsRootError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("discoverHost() reports a failing lspci with its arguments", async () => {
  const dir = await Deno.makeTempDir();
  try {
    buildHostTree({ devices: [dev("0000:01:00.0")] }, dir);
    await assertRejects(
      () => discoverHost({ root: dir, lspci: () => Promise.reject(new LspciError("boom", [])) }),
      LspciError,
    );
    const { commandLspciRunner } = await import("../../lib/host/lspci.ts");
    await assertRejects(
      () => discoverHost({ root: dir, lspci: commandLspciRunner("lspci-not-installed-here") }),
      // PATH may lack lspci's directory where pciutils is installed (a cron job's or a unit's
      // PATH on a system keeping it in /usr/sbin): "install pciutils" alone misled there.
      /Cannot run "lspci-not-installed-here": not found in any directory on PATH: install pciutils, or add the directory holding it to PATH/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseLspci() reads a real virtio VM's lspci -vvvnnkD output", () => {
  const text = Deno.readTextFileSync(
    new URL("../fixtures/hosts/lspci-virtio-vm.txt", import.meta.url),
  );
  const records = parseLspci(text);
  assertEquals([...records.keys()], [
    "0000:00:00.0",
    "0000:00:01.0",
    "0000:00:02.0",
    "0000:00:03.0",
    "0000:00:04.0",
    "0000:00:05.0",
  ]);
  const net = records.get("0000:00:03.0");
  assertEquals(
    [net?.className, net?.vendorId, net?.deviceId, net?.driver],
    ["Ethernet controller", "1af4", "1041", "virtio-pci"],
  );
  assertEquals(net?.vendorDeviceName, "Red Hat, Inc. Virtio 1.0 network device");
  // The oracle for config space: the host bridge has no capability list, so FLR is impossible.
  assertEquals(lspciVerboseFacts(text).get("0000:00:00.0"), { flr: false, serial: null });
});

Deno.test("lspci -vvv as the oracle: DevCtl's FLReset is ignored, AF FLR read; parseLspci() reads modules", () => {
  const text = [
    "0000:05:00.0 Non-Volatile memory controller [0108]: Samsung Electronics Co Ltd NVMe SSD Controller SM981/PM981/PM983 [144d:a808] (prog-if 02 [NVM Express])",
    "\tSubsystem: Samsung Electronics Co Ltd SSD 970 EVO Plus [144d:a801]",
    "\tPhysical Slot: 2",
    "\tNUMA node: 0",
    "\tIOMMU group: 14",
    "\tCapabilities: [70] Express (v2) Endpoint, MSI 00",
    "\t\tDevCap:\tMaxPayload 256 bytes, PhantFunc 0, Latency L0s unlimited, L1 unlimited",
    "\t\t\tExtTag- AttnBtn- AttnInd- PwrInd- RBE+ FLReset- SlotPowerLimit 0W",
    "\t\tDevCtl:\tCorrErr+ NonFatalErr+ FatalErr+ UnsupReq+",
    "\t\t\tRlxdOrd+ ExtTag- PhantFunc- AuxPwr- NoSnoop+ FLReset+",
    "\tKernel driver in use: nvme",
    "\tKernel modules: nvme",
    "",
    "0000:00:1f.3 Audio device [0403]: Intel Corporation Cannon Lake PCH cAVS [8086:a348] (rev 10)",
    "\tCapabilities: [50] PCI Advanced Features",
    "\t\tAFCap: TP+ FLR+",
    "\t\tAFCtrl: FLR-",
    "\tKernel modules: snd_hda_intel, snd_sof_pci_intel_cnl",
    "",
  ].join("\n");
  const facts = lspciVerboseFacts(text);
  assertEquals(facts.get("0000:05:00.0")?.flr, false);
  assertEquals(facts.get("0000:00:1f.3")?.flr, true);
  const records = parseLspci(text);
  assertEquals(records.get("0000:05:00.0")?.driver, "nvme");
  assertEquals(records.get("0000:00:1f.3")?.modules, ["snd_hda_intel", "snd_sof_pci_intel_cnl"]);
});

Deno.test("splitVendorName() separates a known vendor and keeps unknown names whole", () => {
  assertEquals(
    splitVendorName("NVIDIA Corporation GP104 [GeForce GTX 1080]", "NVIDIA Corporation"),
    {
      vendorName: "NVIDIA Corporation",
      deviceName: "GP104 [GeForce GTX 1080]",
    },
  );
  assertEquals(splitVendorName("Intel Corporation Device", "Intel Corporation"), {
    vendorName: "Intel Corporation",
    deviceName: null,
  });
  assertEquals(splitVendorName("Odd Name", null), { vendorName: null, deviceName: "Odd Name" });
});

Deno.test("pciAncestor() finds the PCI function behind a block or net device path", () => {
  assertEquals(
    pciAncestor("../../devices/pci0000:00/0000:00:01.2/0000:02:00.0/nvme/nvme0/nvme0n1"),
    "0000:02:00.0",
  );
  assertEquals(pciAncestor("../../devices/virtual/net/lo"), null);
});

Deno.test({
  name: "discoverHost() on the live /sys finds the root filesystem's controller",
  ignore: (() => {
    try {
      return Deno.readLinkSync("/sys/class/block/vda") === "" || !Deno.statSync("/sys").isDirectory;
    } catch {
      return true;
    }
  })(),
  async fn() {
    const { libcSysfsReader } = await import("../../ffi/libc_fs.ts");
    const host = await discoverHost({ reader: libcSysfsReader() });
    assertEquals(host.source, "/sys");
    assertOk(host.kernelCmdline !== null);
    const listed = Deno.readDirSync("/sys/bus/pci/devices");
    assertEquals(host.devices.length, [...listed].length);
    const mounted = (host.hostUse ?? []).filter((u) => u.reason === "mounted-filesystem");
    assertOk(mounted.some((u) => u.detail.startsWith("/ on ")), JSON.stringify(host.hostUse));
  },
});

Deno.test({
  name: "pciIdsVendorNames() finds every vendor line of the system pci.ids",
  ignore: (() => {
    try {
      return !Deno.statSync("/usr/share/misc/pci.ids").isFile;
    } catch {
      return true;
    }
  })(),
  fn() {
    const text = Deno.readTextFileSync("/usr/share/misc/pci.ids");
    const expected = new Map<string, string>();
    for (const m of text.matchAll(/^([0-9a-f]{4}) {2}(.*)$/gm)) {
      if (!expected.has(m[1]!)) expected.set(m[1]!, m[2]!.trim());
    }
    assertOk(expected.size > 1000, `${expected.size} vendors`);
    const names = pciIdsVendorNames(["/usr/share/misc/pci.ids"]);
    for (const [id, name] of expected) assertEquals(names(id.toUpperCase()), name, id);
    assertEquals(names("zzzz"), null);
    assertEquals(pciIdsVendorNames(["/nonexistent/pci.ids"])("8086"), null);
  },
});

Deno.test("pciIdsVendorNames() reads vendor lines only: the first line, the first of two, no device line", () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.writeTextFileSync(
      `${dir}/pci.ids`,
      [
        "1af4  Red Hat, Inc.",
        "\t1000  Virtio network device",
        "\t10de  not a vendor",
        "10DE  upper case is not a vendor line",
        "1af4  second entry for the same ID",
        "C 03  Display controller",
        "8086 one space is not a vendor line",
        "10de  NVIDIA Corporation \r",
        "abcd  Last line without newline",
      ].join("\n"),
    );
    const names = pciIdsVendorNames([`${dir}/missing.ids`, `${dir}/pci.ids`]);
    assertEquals(names("1AF4"), "Red Hat, Inc.");
    assertEquals(names("1af4"), "Red Hat, Inc.");
    assertEquals(names("10de"), "NVIDIA Corporation");
    assertEquals(names("1000"), null);
    assertEquals(names("8086"), null);
    assertEquals(names("abcd"), "Last line without newline");
    assertEquals(names("c 03"), null);
    assertEquals(names(""), null);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("discoverHost() tells revision 00 from a tree that recorded no revision", async () => {
  const host = await discover({
    devices: [
      dev("0000:01:00.0", { revision: "0x00" }),
      dev("0000:02:00.0", { group: 2, revision: null }),
      dev("0000:03:00.0", { group: 3, revision: "0xa1" }),
    ],
  });
  assertEquals(host.devices.map((d) => d.revision), ["00", null, "a1"]);
});

Deno.test("both readers read text, bytes, links and offsets by path, and refuse a closed file", async () => {
  const { libcSysfsReader } = await import("../../ffi/libc_fs.ts");
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/class`, "0x030000\n");
    await Deno.symlink("../../kernel/iommu_groups/7", `${dir}/iommu_group`);
    for (
      const [label, reader] of [["Deno fs", denoFsReader()], ["libc", libcSysfsReader()]] as const
    ) {
      assertEquals(reader.readText(`${dir}/class`), "0x030000\n", label);
      assertEquals(reader.readBytes(`${dir}/class`, 4), new TextEncoder().encode("0x03"), label);
      assertEquals(reader.readLink(`${dir}/iommu_group`), "../../kernel/iommu_groups/7", label);
      assertEquals(
        [reader.readText(`${dir}/missing`), reader.readLink(`${dir}/class`)],
        [null, null],
        label,
      );
      const file = reader.openFile(`${dir}/class`)!;
      assertEquals(new TextDecoder().decode(file.readAt(2, 4)), "0300", label);
      assertEquals(file.readAt(9, 4).length, 0, label);
      file[Symbol.dispose]();
      assertThrows(() => file.readAt(0, 1), /the file was closed/);
      assertEquals(reader.openFile(`${dir}/nope/class`), null, label);
      assertEquals(
        [reader.readText(`${dir}/nope/class`), reader.readLink(`${dir}/nope/x`)],
        [null, null],
        label,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "discoverHost() on the live /sys reads config registers by offset, never the whole file",
  ignore: livePciMissing() !== null,
  async fn() {
    const { libcSysfsReader } = await import("../../ffi/libc_fs.ts");
    const libc = libcSysfsReader();
    const whole: string[] = [];
    const sparse: string[] = [];
    // The real reader, recording which way each device's config is read.
    const spy: SysfsReader = {
      ...libc,
      readBytes(path, maxBytes) {
        if (path.endsWith("/config")) whole.push(path);
        return libc.readBytes(path, maxBytes);
      },
      openFile(path) {
        if (path.endsWith("/config")) sparse.push(path);
        return libc.openFile(path);
      },
    };
    const live = await discoverHost({ reader: spy, lspci: null });
    assertEquals(whole, []);
    assertEquals(sparse.length, live.devices.length);
    // The same facts as reading every config file whole.
    for (const device of live.devices) {
      const bytes = libc.readBytes(`/sys/bus/pci/devices/${device.address}/config`, 4096)!;
      const facts = readConfigSpace(bufferConfigReader(bytes));
      assertEquals([device.flr, device.serial], [facts.flr, facts.serial], device.address);
      assertEquals(device.revision, bytes[8]!.toString(16).padStart(2, "0"), device.address);
    }
  },
});

Deno.test("discoverHost() lists a PF's VFs from the VFs' physfn links, never from a VF", async () => {
  const root = await Deno.makeTempDir({ prefix: "passthrough-vf-" });
  try {
    buildHostTree({
      devices: [
        dev("0000:01:00.0", { group: 1 }),
        dev("0000:01:00.1", { group: 2 }),
        dev("0000:01:00.2", { group: 3 }),
        dev("0000:01:00.3", { group: 4 }),
        dev("0000:01:00.4", { group: 5 }),
      ],
    }, root);
    const devices = `${root}/bus/pci/devices`;
    // The PF's own links are not what is read: one is stale, one is missing.
    await Deno.symlink("../0000:01:00.3", `${devices}/0000:01:00.0/virtfn0`);
    await Deno.symlink("../0000:01:00.0", `${devices}/0000:01:00.2/physfn`);
    await Deno.symlink("../0000:01:00.0", `${devices}/0000:01:00.1/physfn`);
    // A VF's link to another VF (impossible on a real host) makes neither a PF.
    await Deno.symlink("../0000:01:00.1", `${devices}/0000:01:00.4/physfn`);
    const host = await discoverHost({ root, lspci: null });
    const byAddress = new Map(host.devices.map((d) => [d.address, d]));
    assertEquals(byAddress.get("0000:01:00.0")?.virtfns, ["0000:01:00.1", "0000:01:00.2"]);
    assertEquals(byAddress.get("0000:01:00.1")?.virtfns, []);
    assertEquals(byAddress.get("0000:01:00.1")?.physfn, "0000:01:00.0");
    assertEquals(byAddress.get("0000:01:00.3")?.physfn, null);
    assertEquals(byAddress.get("0000:01:00.4")?.physfn, "0000:01:00.1");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test({
  name: "discoverHost() takes /sys spelled with a trailing slash as the live host, reading /proc",
  ignore: livePciMissing() !== null,
  async fn() {
    const { libcSysfsReader } = await import("../../ffi/libc_fs.ts");
    const host = await discoverHost({ root: "/sys/", reader: libcSysfsReader(), lspci: null });
    assertEquals(host.source, "/sys");
    // A captured tree's host use would be its host_use.json, which /sys has not: null.
    assertOk(host.hostUse !== null);
    const cmdline = Deno.readTextFileSync("/proc/cmdline").trim();
    assertEquals(host.kernelCmdline, cmdline === "" ? null : cmdline);
  },
});

Deno.test("discoverHost() keeps an SR-IOV count only where its file holds a 16-bit number", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-sysfs-" });
  try {
    const nics = ["0000:01:00.0", "0000:02:00.0", "0000:03:00.0", "0000:04:00.0"];
    buildHostTree({ devices: nics.map((a) => dev(a)) }, dir);
    const write = (address: string, total: string, enabled: string | null) => {
      Deno.writeTextFileSync(`${dir}/bus/pci/devices/${address}/sriov_totalvfs`, total);
      if (enabled !== null) {
        Deno.writeTextFileSync(`${dir}/bus/pci/devices/${address}/sriov_numvfs`, enabled);
      }
    };
    write(nics[0]!, "65535\n", "0\n");
    write(nics[1]!, "70000\n", "4\n");
    write(nics[2]!, "8 VFs\n", "4\n");
    const host = await discoverHost({ root: dir, lspci: null });
    const counts = host.devices.map((d) => [
      "sriovTotalVfs" in d ? d.sriovTotalVfs : "none",
      "sriovNumVfs" in d ? d.sriovNumVfs : "none",
    ]);
    // No total, no SR-IOV: the enabled count is not read, and a device without the files has
    // neither key.
    assertEquals(counts, [[65535, 0], ["none", "none"], ["none", "none"], ["none", "none"]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("discoverHost() without lspci leaves names unknown and modules empty, and still reads FLR and serials", async () => {
  // docs/LIBRARY.md, "Discovery without lspci": what a watcher that skips lspci still gets.
  const dir = await Deno.makeTempDir({ prefix: "passthrough-h148-no-lspci-" });
  try {
    const demo = loadHostDescription(new URL("../../demo/host.json", import.meta.url));
    // The demo's first NVMe drive, given a serial number (the demo has none).
    const nvme = demo.devices.findIndex((d) => d.class.startsWith("0x0108"));
    assertOk(nvme >= 0, "the demo has an NVMe drive");
    const devices = demo.devices.map((d, i) =>
      i === nvme ? { ...d, flr: true, serial: "00-11-22-ff-ff-33-44-55" } : d
    );
    buildHostTree({ ...demo, devices }, dir);
    const withLspci = await discoverHost({ root: dir });
    const without = await discoverHost({ root: dir, lspci: null });
    assertEquals(without.devices.map((d) => d.address), withLspci.devices.map((d) => d.address));
    for (const d of without.devices) {
      assertEquals([d.vendorName, d.deviceName, d.className, d.modules], [null, null, null, []]);
    }
    // lspci named them: the test would pass on names alone if it had not run.
    assertOk(withLspci.devices.some((d) => d.vendorName !== null && d.className !== null));
    const facts = (host: typeof without) => host.devices.map((d) => [d.address, d.flr, d.serial]);
    assertEquals(facts(without), facts(withLspci));
    assertOk(without.devices.some((d) => d.serial !== null), "the demo has serial numbers");
    assertOk(without.devices.some((d) => d.flr === true), "the demo has FLR");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("discoverHost() without a reader says to pass libcSysfsReader() when Deno refuses /sys", async () => {
  // Deno's own message says to run with --allow-all, which the library never needs: the live
  // /sys is read through libc, given as the reader.
  const script = `import { discoverHost } from "${
    new URL("../../lib/mod.ts", import.meta.url).href
  }";\ntry { await discoverHost({ lspci: null }); } catch (e) { console.log(\`\${(e as Error).name}: \${(e as Error).message}\`); }\n`;
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-discover-reader-" });
  try {
    Deno.writeTextFileSync(`${dir}/live.ts`, script);
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        ...["run", "--quiet", "--no-prompt", "--allow-read", "--allow-ffi"],
        ...["--config", new URL("../../deno.json", import.meta.url).pathname, `${dir}/live.ts`],
      ],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const said = new TextDecoder().decode(out.stdout);
    assertEquals(new TextDecoder().decode(out.stderr), "");
    assertMatch(said, /^NotCapable: Requires all access to "\/sys\/bus\/pci\/devices"/);
    assertMatch(said, /pass `reader: libcSysfsReader\(\)` \(from passthrough's \.\/ffi\)/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
