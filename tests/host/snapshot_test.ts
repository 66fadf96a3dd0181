// snapshot round trips: a captured tree reads back as the same host, with the real lspci.
import { assertEquals, assertOk, assertThrows } from "../helpers/assert.ts";
import { pathExists } from "../../lib/state/paths.ts";
import {
  buildHostTree,
  type HostDescription,
  type HostDeviceDescription,
  loadHostDescription,
} from "../../lib/testing/host_tree.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { sharedCmdline, SnapshotTargetError, writeSnapshot } from "../../lib/host/snapshot.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { hostInputDevices } from "../../lib/host/sysfs_device.ts";
import { addNonPciGroupMember } from "../helpers/hosts.ts";
import type { HostTopology } from "../../lib/host/types.ts";
import { generateHost } from "../../lib/testing/host_generator.ts";
import { readHostFacts } from "../../lib/host/preflight.ts";
import { cpuVendor } from "../../lib/host/doctor.ts";
import { cardOf } from "../../lib/resolve/host_critical.ts";
import { described } from "../preflight/trees.ts";
import {
  canUnshareMounts,
  cliCommand,
  documentedFlags,
  MAIN,
  runInPrivateMounts,
} from "../helpers/cli.ts";

const HOSTS = new URL("../fixtures/hosts/", import.meta.url);

/** Snapshots the tree of `description`, discovers it again, and lets `inspect` look at both. */
async function roundTrip(
  description: HostDescription,
  options: {
    lspci?: null;
    /** Changes the built tree before it is snapshotted (a damaged tree). */
    edit?: (root: string) => void;
    inspect?: (root: string, out: string) => void;
  } = {},
): Promise<HostTopology> {
  const root = await Deno.makeTempDir({ prefix: "passthrough-snap-src-" });
  const out = `${await Deno.makeTempDir({ prefix: "passthrough-snap-" })}/tree`;
  try {
    buildHostTree(description, root);
    options.edit?.(root);
    // Without lspci when asked: discovery then reads what only the tree holds.
    const lspci = options.lspci === null ? { lspci: null } : {};
    const before = await discoverHost({ root, ...lspci });
    writeSnapshot(before, out, { root, reader: denoFsReader() });
    const after = await discoverHost({ root: out, ...lspci });
    assertEquals({ ...after, source: root }, before);
    options.inspect?.(root, out);
    return after;
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(out.slice(0, -"/tree".length), { recursive: true });
  }
}

for (const name of ["x570-aorus-pro-wifi", "c246-cx4lx-sriov", "hp-dl380p-g8"]) {
  Deno.test(`writeSnapshot() of the "${name}" tree reads back as the same host`, async () => {
    await roundTrip(loadHostDescription(new URL(`${name}.json`, HOSTS)));
  });
}

Deno.test("writeSnapshot() keeps SR-IOV links, serials, FLR, slots, cmdline and host use", async () => {
  const host = generateHost(120, { vfsPerNic: 8 });
  // A PF that can provide more VFs than it has enabled: both counts are captured.
  const pf = host.devices.find((d) => d.device === "0x1572")!;
  pf.sriov_totalvfs = 64;
  // Its interface's MAC, which mac: auto derives from for a PF without a serial.
  pf.net = { name: "enp1s0f0", address: "3C:FD:FE:00:00:01" };
  host.host_use = [
    { address: "0000:00:1f.2", reason: "mounted-filesystem", detail: "/ on sda2" },
  ];
  // The guard reads a VF's index from its PF's virtfnN link: the kernel's numbering, kept.
  const links = (tree: string) =>
    [...Deno.readDirSync(`${tree}/bus/pci/devices/${pf.bdf}`)]
      .filter((e) => e.name.startsWith("virtfn"))
      .map((e) => [e.name, Deno.readLinkSync(`${tree}/bus/pci/devices/${pf.bdf}/${e.name}`)])
      .sort();
  const after = await roundTrip(host, {
    inspect: (root, out) => {
      assertEquals(links(root).length, 8);
      assertEquals(links(out), links(root));
    },
  });
  const [read, vf] = [pf.bdf, `${pf.bdf.slice(0, -4)}02.0`].map((a) =>
    after.devices.find((d) => d.address === a)
  );
  assertEquals([read?.sriovTotalVfs, read?.sriovNumVfs, read?.virtfns.length], [64, 8, 8]);
  assertEquals(read?.macAddress, "3c:fd:fe:00:00:01");
  assertEquals(vf !== undefined && "sriovTotalVfs" in vf, false);
});

Deno.test("writeSnapshot() keeps each device's kernel modules for a discovery without lspci", async () => {
  const description = described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": { modules: ["nouveau", "nvidia"] } },
  });
  const after = await roundTrip(description, { lspci: null });
  const gpu = after.devices.find((d) => d.address === "0000:0b:00.0");
  assertEquals(gpu?.modules, ["nouveau", "nvidia"]);
});

Deno.test("writeSnapshot() keeps no URI password of the kernel command line", async () => {
  // An install or network-boot URL with its credentials, as a kickstart or ignition line has.
  const cmdline = "root=/dev/nvme0n1p2 intel_iommu=on pcie_acs_override=downstream " +
    "inst.ks=http://admin:hunter2@10.0.0.1/ks.cfg";
  const root = await Deno.makeTempDir({ prefix: "passthrough-snap-src-" });
  const out = `${await Deno.makeTempDir({ prefix: "passthrough-snap-" })}/tree`;
  try {
    buildHostTree(described("x570-aorus-pro-wifi", { host: { cmdline } }), root);
    const before = await discoverHost({ root, lspci: null });
    writeSnapshot(before, out, { root, reader: denoFsReader() });
    const after = await discoverHost({ root: out, lspci: null });
    // What the checks read (the IOMMU and ACS override parameters) is kept; the password is not.
    assertEquals(
      after.kernelCmdline,
      "root=/dev/nvme0n1p2 intel_iommu=on pcie_acs_override=downstream " +
        "inst.ks=http://admin:***@10.0.0.1/ks.cfg",
    );
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(out.slice(0, -"/tree".length), { recursive: true });
  }
});

Deno.test("writeSnapshot() redacts a URI password within its own parameter: the ACS override and vfio-pci.ids after it are kept", async () => {
  // The kernel splits its command line at spaces (outside quotes): a URI without a password in
  // its own word (an anonymous FTP's empty one, a host:name) ended at the @ of a later
  // parameter (serial-getty@ttyS0), and everything between, the checks' parameters, was ***.
  const cmdline = "inst.ks=ftp://anonymous:@10.0.0.1/ks.cfg pcie_acs_override=downstream " +
    "vfio-pci.ids=10de:1b80,10de:10f0 inst.ks=http://admin:hunter2@10.0.0.1/ks.cfg " +
    'x="http://u:p q@h" systemd.wants=serial-getty@ttyS0.service';
  const root = await Deno.makeTempDir({ prefix: "passthrough-snap-src-" });
  const out = `${await Deno.makeTempDir({ prefix: "passthrough-snap-" })}/tree`;
  try {
    buildHostTree(described("x570-aorus-pro-wifi", { host: { cmdline } }), root);
    const before = await discoverHost({ root, lspci: null });
    writeSnapshot(before, out, { root, reader: denoFsReader() });
    const after = await discoverHost({ root: out, lspci: null });
    assertEquals(
      after.kernelCmdline,
      "inst.ks=ftp://anonymous:@10.0.0.1/ks.cfg pcie_acs_override=downstream " +
        "vfio-pci.ids=10de:1b80,10de:10f0 inst.ks=http://admin:***@10.0.0.1/ks.cfg " +
        'x="http://u:***@h" systemd.wants=serial-getty@ttyS0.service',
    );
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(out.slice(0, -"/tree".length), { recursive: true });
  }
});

Deno.test({
  name: "writeSnapshot() of the live /sys reads back as this host",
  ignore: (() => {
    try {
      return !Deno.statSync("/sys/bus/pci/devices").isDirectory;
    } catch {
      return true;
    }
  })(),
  async fn() {
    const { libcSysfsReader } = await import("../../ffi/libc_fs.ts");
    const reader = libcSysfsReader();
    const out = `${await Deno.makeTempDir({ prefix: "passthrough-live-" })}/tree`;
    try {
      const live = await discoverHost({ reader });
      writeSnapshot(live, out, { root: "/sys", reader });
      const again = await discoverHost({ root: out });
      // The command line as written: a URI password on it (a netboot's) is `***`.
      const cmdline = live.kernelCmdline === null ? null : sharedCmdline(live.kernelCmdline);
      assertEquals({ ...again, source: "/sys" }, { ...live, kernelCmdline: cmdline });
      // The live host's /proc beside /sys: its CPU's maker, and nothing else of cpuinfo.
      const vendor = /^vendor_id\s*:\s*(\S+)/m.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1];
      const captured = (() => {
        try {
          return Deno.readTextFileSync(`${out}/proc/cpuinfo`);
        } catch {
          return null;
        }
      })();
      assertEquals(
        captured,
        vendor === undefined ? null : `processor\t: 0\nvendor_id\t: ${vendor}\n`,
      );
    } finally {
      await Deno.remove(out.slice(0, -"/tree".length), { recursive: true });
    }
  },
});

/** A host with no devices: what a snapshot's refusals of its target are tested with. */
function emptyHost(): HostTopology {
  return {
    source: "x",
    iommu: "absent",
    devices: [],
    groups: [],
    groupInconsistencies: [],
    kernelCmdline: null,
    hostUse: [],
  };
}

Deno.test("writeSnapshot() names the temporary directory a killed snapshot left, which ls does not show", async () => {
  // A snapshot killed while it wrote left only its hidden temporary directory: the next one said
  // "it exists and is not empty" of a directory `ls` shows empty.
  const dir = await Deno.makeTempDir();
  try {
    const left = `${dir}/out/.snapshot-${crypto.randomUUID()}.tmp`;
    Deno.mkdirSync(`${left}/bus/pci/devices`, { recursive: true });
    const host = emptyHost();
    assertThrows(
      () => writeSnapshot(host, `${dir}/out`, { root: dir, reader: denoFsReader() }),
      SnapshotTargetError,
      `Cannot write snapshot to "${dir}/out": it holds only ${
        left.slice(`${dir}/out/`.length)
      }, left by a snapshot that was stopped while it wrote; remove it (rm -r ${left}), then run ` +
        `snapshot again`,
    );
    assertOk(pathExists(`${left}/bus/pci/devices`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeSnapshot() refuses a target that is not empty", async () => {
  const dir = await Deno.makeTempDir();
  try {
    Deno.writeTextFileSync(`${dir}/keep`, "x");
    const host = emptyHost();
    assertThrows(
      () => writeSnapshot(host, dir, { root: dir, reader: denoFsReader() }),
      SnapshotTargetError,
    );
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["keep"]);
    // A file, a FIFO or a symbolic link (dangling or to an empty directory) is refused by what it
    // is, and nothing is created through the link.
    const empty = `${dir}/empty`;
    Deno.mkdirSync(empty);
    Deno.writeTextFileSync(`${dir}/blank`, "");
    new Deno.Command("mkfifo", { args: [`${dir}/fifo`] }).outputSync();
    Deno.symlinkSync(`${dir}/nowhere`, `${dir}/dangling`);
    Deno.symlinkSync(empty, `${dir}/link`);
    for (
      const [name, reason] of [
        ["keep", "it is not a directory"],
        ["blank", "it is not a directory"],
        ["fifo", "it is not a directory"],
        ["dangling", "it is a symbolic link"],
        ["link", "it is a symbolic link"],
      ]
    ) {
      assertThrows(
        () => writeSnapshot(host, `${dir}/${name}`, { root: dir, reader: denoFsReader() }),
        SnapshotTargetError,
        `Cannot write snapshot to "${dir}/${name}": ${reason}`,
      );
    }
    assertEquals([...Deno.readDirSync(empty)], []);
    assertThrows(() => Deno.lstatSync(`${dir}/nowhere`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "snapshot on a full disk leaves nothing at OUT, nor in an empty OUT that is a mount point, and says so",
  ignore: !canUnshareMounts(),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-snap-full-" });
    try {
      buildHostTree(loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS)), `${dir}/src`);
      const mnt = `${dir}/mnt`;
      Deno.mkdirSync(mnt);
      // Run in a private mount namespace on a 64 KiB tmpfs, far smaller than the tree.
      const snapshot = (out: string) =>
        runInPrivateMounts(
          `mount -t tmpfs -o size=64k tmpfs ${mnt}`,
          [
            "sh",
            "-c",
            `"$@"; echo "code $?"; ls -A ${mnt}`,
            "sh",
            ...cliCommand(),
            "snapshot",
            out,
            "--sysfs",
            `${dir}/src`,
          ],
        );
      for (const [out, left] of [[`${mnt}/snap`, ""], [mnt, ""]] as const) {
        const run = await snapshot(out);
        assertEquals(run.stdout, `code 1\n${left}`, run.stderr);
        assertEquals(
          run.stderr.replace(/: No space left on device \(os error 28\): .*;/, ": ENOSPC;"),
          `passthrough snapshot: Cannot write snapshot to "${out}": ENOSPC; nothing was left there\n`,
        );
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** The pre-flight facts of the tree at `root`, as `plan` and `doctor` read them. */
function preflightView(root: string, host: Awaited<ReturnType<typeof discoverHost>>) {
  const facts = readHostFacts({ reader: denoFsReader(), sysRoot: root, procRoot: `${root}/proc` });
  return {
    resets: host.devices.map((d) => [d.address, facts.resetMethods(d.address)]),
    framebuffers: [...facts.firmwareFramebuffers() ?? []],
    modules: [...facts.modules() ?? []].map(([name, m]) => [name, m.refcount, m.holders]),
    nvidiaModule: facts.moduleOfDriver("nvidia"),
    holders: facts.gpuHolders("0000:0b:00.0"),
    otherHolders: facts.gpuHolders("0000:0c:00.0"),
    consoles: facts.consoleFramebuffers("0000:0b:00.0"),
    cpuNodes: [...facts.cpuNodes() ?? []],
    node1: facts.nodeCpuList(1),
    confinement: facts.confinement(),
    vendor: cpuVendor({ host, reader: denoFsReader(), live: false, procRoot: `${root}/proc` }),
  };
}

const PREFLIGHT_IOMEM =
  "e0000000-f01fffff : PCI Bus 0000:0b\n  e0000000-efffffff : 0000:0b:00.0\n" +
  "    e0000000-e07e8fff : BOOTFB\n";
const PREFLIGHT_MODULES =
  "nvidia_uvm 1540096 0 - Live 0xffffffffc1200000 (POE)\nnvidia 56807424 3 nvidia_uvm, Live 0xffffffffc0a00000 (POE)\n";

Deno.test("writeSnapshot() keeps the pre-flight facts: reset_method, /proc, GPU holders, console, NUMA, confinement", async () => {
  const description = described("x570-aorus-pro-wifi", {
    devices: {
      "0000:0b:00.0": {
        reset_method: "bus",
        boot_vga: true,
        driver: "nvidia",
        drm: { card: 0, clients: [{ command: "Xorg", pid: 1234 }] },
        console: true,
      },
      "0000:0b:00.1": { reset_method: "flr bus" },
      // The same process holds the second GPU open too.
      "0000:0c:00.0": { drm: { card: 1, clients: [{ command: "Xorg", pid: 1234 }] } },
    },
    host: {
      proc: { iomem: PREFLIGHT_IOMEM, modules: PREFLIGHT_MODULES, cpuinfo_vendor: "GenuineIntel" },
      numa_nodes: { "0": "0-7", "1": "8-15" },
      security: { apparmor: true, selinux: true },
    },
  });
  const root = await Deno.makeTempDir({ prefix: "passthrough-snap-src-" });
  const out = `${await Deno.makeTempDir({ prefix: "passthrough-snap-" })}/tree`;
  try {
    buildHostTree(description, root);
    Deno.symlinkSync("../../../../module/nvidia_custom", `${root}/bus/pci/drivers/nvidia/module`);
    // What else a process holding the GPU shows in /proc: its other files and its environment.
    Deno.symlinkSync("/home/alice/.Xauthority", `${root}/proc/1234/fd/7`);
    Deno.writeTextFileSync(`${root}/proc/1234/environ`, "XAUTHORITY=/home/alice/.Xauthority\0");
    // What else /proc/cpuinfo holds: nothing the pre-flight reads.
    Deno.writeTextFileSync(
      `${root}/proc/cpuinfo`,
      "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu vme\n",
    );
    // Where root's /proc/iomem shows the kernel image: KASLR's secret, which the pre-flight
    // does not read.
    const ram = "00100000-bfffffff : System RAM\n";
    Deno.writeTextFileSync(
      `${root}/proc/iomem`,
      `${ram}  01000000-02259aff : Kernel code\n  02400000-02dfdfff : Kernel rodata\n` +
        `  02e00000-0307a57f : Kernel data\n  03928000-03a59fff : Kernel bss\n${PREFLIGHT_IOMEM}`,
    );
    const before = await discoverHost({ root, lspci: null });
    writeSnapshot(before, out, { root, reader: denoFsReader() });
    const after = await discoverHost({ root: out, lspci: null });
    const expected = preflightView(root, before);
    // The facts are there to be lost: none of them is the default of an empty tree.
    assertEquals(expected.resets.filter(([, m]) => m !== null).length, 2);
    assertEquals(expected.framebuffers, [["0000:0b:00.0", ["BOOTFB"]]]);
    assertEquals(expected.nvidiaModule, "nvidia_custom");
    assertEquals(expected.holders, [{ pid: 1234, command: "Xorg", nodes: ["/dev/dri/card0"] }]);
    assertEquals(expected.otherHolders, [{
      pid: 1234,
      command: "Xorg",
      nodes: ["/dev/dri/card1"],
    }]);
    assertEquals(expected.confinement, { apparmor: true, selinux: true });
    assertEquals(expected.consoles, ["fb0"]);
    assertEquals(expected.vendor, "intel");
    assertEquals(preflightView(out, after), expected);
    // Only what the pre-flight reads is copied: no kernel address, no other file of a process.
    assertEquals(
      Deno.readTextFileSync(`${out}/proc/modules`),
      "nvidia_uvm 1540096 0 - Live 0x0000000000000000\n" +
        "nvidia 56807424 3 nvidia_uvm, Live 0x0000000000000000\n",
    );
    assertEquals(Deno.readTextFileSync(`${out}/proc/iomem`), `${ram}${PREFLIGHT_IOMEM}`);
    const process = [...Deno.readDirSync(`${out}/proc/1234`)].map((e) => e.name).sort();
    assertEquals(process, ["comm", "fd"]);
    assertEquals([...Deno.readDirSync(`${out}/proc/1234/fd`)].length, 2);
    assertEquals(
      Deno.readTextFileSync(`${out}/proc/cpuinfo`),
      "processor\t: 0\nvendor_id\t: GenuineIntel\n",
    );
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(out.slice(0, -"/tree".length), { recursive: true });
  }
});

Deno.test("writeSnapshot() keeps the input devices that hang under a PCI function (host-input)", async () => {
  const root = await Deno.makeTempDir({ prefix: "passthrough-snap-src-" });
  const out = `${await Deno.makeTempDir({ prefix: "passthrough-snap-" })}/tree`;
  try {
    buildHostTree(loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS)), root);
    const link = (entry: string, under: string, name: string) => {
      const device = `devices/${under}/${entry}`;
      Deno.mkdirSync(`${root}/${device}`, { recursive: true });
      Deno.writeTextFileSync(`${root}/${device}/name`, `${name}\n`);
      Deno.mkdirSync(`${root}/class/input`, { recursive: true });
      Deno.symlinkSync(`../../${device}`, `${root}/class/input/${entry}`);
    };
    link("input5", "pci0000:00/0000:00:07.1/0000:08:00.1/usb1/1-2/1-2:1.0/input", "USB Keyboard");
    // The PS/2 keyboard hangs under no PCI function: nothing a plan reads.
    link("input2", "platform/i8042/serio0/input", "AT Translated Set 2 keyboard");
    // A link leaving the tree is not followed into the snapshot.
    Deno.symlinkSync("../../../../etc", `${root}/class/input/input9`);
    const host = await discoverHost({ root, lspci: null });
    writeSnapshot(host, out, { root, reader: denoFsReader() });
    const expected = new Map([["0000:08:00.1", ["USB Keyboard"]]]);
    assertEquals(hostInputDevices(denoFsReader(), root), expected);
    // Before: an empty map, so a plan of the snapshot gave no host-input warning.
    assertEquals(hostInputDevices(denoFsReader(), out), expected);
    assertEquals([...Deno.readDirSync(`${out}/class/input`)].map((e) => e.name), ["input5"]);
    assertEquals(await discoverHost({ root: out, lspci: null }), { ...host, source: out });
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(out.slice(0, -"/tree".length), { recursive: true });
  }
});

Deno.test("writeSnapshot() and hostInputDevices() read no input device's name outside the tree", async () => {
  const root = await Deno.makeTempDir({ prefix: "passthrough-snap-src-" });
  const outside = await Deno.makeTempDir({ prefix: "passthrough-snap-outside-" });
  const out = `${await Deno.makeTempDir({ prefix: "passthrough-snap-" })}/tree`;
  try {
    buildHostTree(loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS)), root);
    // A crafted tree: its links are the kernel's shape, but a directory on the way, or the
    // name file, is a link out of it.
    const usb = "devices/pci0000:00/0000:00:07.1/0000:08:00.1/usb1";
    Deno.mkdirSync(`${root}/${usb.slice(0, usb.lastIndexOf("/"))}`, { recursive: true });
    Deno.mkdirSync(`${outside}/1-2/1-2:1.0/input/input5`, { recursive: true });
    Deno.writeTextFileSync(`${outside}/1-2/1-2:1.0/input/input5/name`, "Secret outside\n");
    Deno.symlinkSync(outside, `${root}/${usb}`);
    const mouse = "devices/pci0000:00/0000:00:08.1/0000:0e:00.3/usb3/3-1/3-1:1.0/input/input6";
    Deno.mkdirSync(`${root}/${mouse}`, { recursive: true });
    Deno.writeTextFileSync(`${outside}/name`, "Another secret\n");
    Deno.symlinkSync(`${outside}/name`, `${root}/${mouse}/name`);
    Deno.mkdirSync(`${root}/class/input`, { recursive: true });
    Deno.symlinkSync(`../../${usb}/1-2/1-2:1.0/input/input5`, `${root}/class/input/input5`);
    Deno.symlinkSync(`../../${mouse}`, `${root}/class/input/input6`);
    // The devices still count (their links say where they hang), known by their entries.
    const expected = new Map([["0000:08:00.1", ["input5"]], ["0000:0e:00.3", ["input6"]]]);
    assertEquals(hostInputDevices(denoFsReader(), root), expected);
    const host = await discoverHost({ root, lspci: null });
    writeSnapshot(host, out, { root, reader: denoFsReader() });
    assertEquals(hostInputDevices(denoFsReader(), out), expected);
    const copied = new Deno.Command("grep", { args: ["-r", "-l", "ecret", out] }).outputSync();
    assertEquals(new TextDecoder().decode(copied.stdout), "");
    // Nor another tree's listing, through a `class` that is a link.
    Deno.symlinkSync(`${root}/class`, `${outside}/class`);
    assertEquals(hostInputDevices(denoFsReader(), outside), new Map());
  } finally {
    for (const dir of [root, outside, out.slice(0, -"/tree".length)]) {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("writeSnapshot() copies no pre-flight file that is not one: a FIFO, a link to another file", async () => {
  const description = described("x570-aorus-pro-wifi", {
    host: { proc: { iomem: PREFLIGHT_IOMEM, cpuinfo_vendor: "AuthenticAMD" } },
  });
  const root = await Deno.makeTempDir({ prefix: "passthrough-snap-src-" });
  const out = `${await Deno.makeTempDir({ prefix: "passthrough-snap-" })}/tree`;
  try {
    buildHostTree(description, root);
    const secret = `${root}/secret`;
    Deno.writeTextFileSync(secret, "root:$6$salt$hash:19000:0:99999:7:::\n");
    Deno.removeSync(`${root}/proc/iomem`);
    Deno.symlinkSync(secret, `${root}/proc/iomem`);
    Deno.mkdirSync(`${root}/fs/selinux`, { recursive: true });
    Deno.symlinkSync(secret, `${root}/fs/selinux/enforce`);
    new Deno.Command("mkfifo", { args: [`${root}/proc/modules`] }).outputSync();
    const host = await discoverHost({ root, lspci: null });
    writeSnapshot(host, out, { root, reader: denoFsReader() });
    assertEquals(Deno.readTextFileSync(`${out}/proc/iomem`), "");
    assertEquals([...Deno.readDirSync(`${out}/proc`)].map((e) => e.name).sort(), [
      "cpuinfo",
      "iomem",
    ]);
    assertThrows(() => Deno.statSync(`${out}/fs/selinux/enforce`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(out.slice(0, -"/tree".length), { recursive: true });
  }
});

Deno.test("writeSnapshot() holds the identifying facts README's Secrets part names", async () => {
  // What a plan matches by and judges with, and identifies the machine: a serial number (in the
  // config space's bytes, unseen by someone reading the files), a PF's MAC, a mount point.
  const description = described("c246-cx4lx-sriov");
  const nic = description.devices.find((d) => d.bdf === "0000:01:00.0")!;
  nic.sriov_totalvfs = 8;
  nic.serial = "00-25-38-5b-91-b0-4e-7c";
  nic.net = { name: "enp1s0f0", address: "3c:fd:fe:12:34:56" };
  description.host_use = [
    { address: nic.bdf, reason: "mounted-filesystem", detail: "/home/alice on nvme0n1p3" },
  ];
  const after = await roundTrip(description);
  const read = after.devices.find((d) => d.address === nic.bdf);
  assertEquals([read?.serial, read?.macAddress], ["00-25-38-5b-91-b0-4e-7c", "3c:fd:fe:12:34:56"]);
  assertEquals(after.hostUse?.[0]?.detail, "/home/alice on nvme0n1p3");
  const readme = Deno.readTextFileSync(new URL("../../README.md", import.meta.url));
  const said = /A snapshot holds [\s\S]*?bug report\./.exec(readme)?.[0].replace(/\s+/g, " ");
  for (const fact of ["serial numbers", "MACs", "kernel command line", "mount points"]) {
    assertEquals(said?.includes(fact), true, `README's snapshot sentence names ${fact}: ${said}`);
  }
});

Deno.test("writeSnapshot() of a host with hundreds of mounts reads back: its host_use.json is over 64 KiB", async () => {
  // A Kubernetes node: each pod's volumes are bind mounts from the root disk.
  const description = described("x570-aorus-pro-wifi");
  const disk = description.devices.find((d) => d.class.startsWith("0x0108"))!;
  description.host_use = Array.from({ length: 600 }, (_, i) => ({
    address: disk.bdf,
    reason: "mounted-filesystem" as const,
    detail:
      `/var/lib/kubelet/pods/${crypto.randomUUID()}/volumes/kubernetes.io~secret/token-${i} on nvme0n1p2`,
  }));
  // It read the first 64 KiB alone: "Unterminated string in JSON at position 65536".
  const after = await roundTrip(description, { lspci: null });
  assertEquals(after.hostUse?.length, 600);
});

Deno.test("snapshot of a tree whose sriov_numvfs is no count ends, as discovery does", async () => {
  const host = generateHost(120, { vfsPerNic: 2 });
  const pf = host.devices.find((d) => d.device === "0x1572")!;
  const root = await Deno.makeTempDir({ prefix: "passthrough-snap-src-" });
  const out = `${await Deno.makeTempDir({ prefix: "passthrough-snap-" })}/tree`;
  try {
    buildHostTree(host, root);
    // Beyond the capability's 16 bits (a damaged or hand-edited tree): it walked virtfn0,
    // virtfn1, ... up to it, 10^11 lookups, hanging the snapshot.
    Deno.writeTextFileSync(`${root}/bus/pci/devices/${pf.bdf}/sriov_numvfs`, "99999999999\n");
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", ...documentedFlags(), MAIN, "snapshot", "--sysfs", root, out],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).spawn();
    const result = await child.output();
    assertEquals(
      [result.code, new TextDecoder().decode(result.stderr)],
      [0, ""],
      "snapshot ended within 60 s",
    );
    // The PF's VF links are those it has, under the kernel's numbering, as with a true count.
    const links = (tree: string) =>
      [...Deno.readDirSync(`${tree}/bus/pci/devices/${pf.bdf}`)]
        .filter((e) => e.name.startsWith("virtfn"))
        .map((e) => [e.name, Deno.readLinkSync(`${tree}/bus/pci/devices/${pf.bdf}/${e.name}`)])
        .sort();
    assertEquals(links(out), links(root));
    assertEquals(links(root).length, 2);
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(out.slice(0, -"/tree".length), { recursive: true });
  }
});

Deno.test("writeSnapshot() of a tree with a driver or input device name over 255 bytes", async () => {
  const root = await Deno.makeTempDir({ prefix: "passthrough-snap-src-" });
  const out = `${await Deno.makeTempDir({ prefix: "passthrough-snap-" })}/tree`;
  try {
    buildHostTree(described("x570-aorus-pro-wifi"), root);
    // No kernel names a driver or a device so (no directory could hold it): a crafted tree.
    const long = "d".repeat(256);
    const device = `${root}/bus/pci/devices/0000:0b:00.0`;
    const uevent = Deno.readTextFileSync(`${device}/uevent`).replace(/^DRIVER=.*\n/m, "");
    Deno.writeTextFileSync(`${device}/uevent`, `DRIVER=${long}\n${uevent}`);
    Deno.mkdirSync(`${root}/class/input`, { recursive: true });
    const input = `../../devices/pci0000:00/0000:00:08.1/0000:0e:00.3/${long}/input/input7`;
    Deno.symlinkSync(input, `${root}/class/input/input7`);
    const before = await discoverHost({ root, lspci: null });
    // It stopped at "File name too long (os error 36): mkdir '.../bus/pci/drivers/ddd...'".
    writeSnapshot(before, out, { root, reader: denoFsReader() });
    const after = await discoverHost({ root: out, lspci: null });
    assertEquals({ ...after, source: root }, before);
    assertEquals(after.devices.find((d) => d.address === "0000:0b:00.0")?.driver, long);
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(out.slice(0, -"/tree".length), { recursive: true });
  }
});

Deno.test("writeSnapshot() writes nothing outside OUT for a tree whose driver name is a path", async () => {
  const root = await Deno.makeTempDir({ prefix: "passthrough-snap-src-" });
  const dir = await Deno.makeTempDir({ prefix: "passthrough-snap-" });
  const out = `${dir}/tree`;
  try {
    const bound = { devices: { "0000:0b:00.0": { driver: "nouveau" } } };
    buildHostTree(described("x570-aorus-pro-wifi", bound), root);
    // A hostile or damaged tree (one attached to a bug report): its uevent names a "driver" that
    // climbs out of bus/pci/drivers/, without a driver link.
    const device = `${root}/bus/pci/devices/0000:0b:00.0`;
    const uevent = Deno.readTextFileSync(`${device}/uevent`).replace(/^DRIVER=.*\n/m, "");
    Deno.writeTextFileSync(`${device}/uevent`, `DRIVER=../../../../escape\n${uevent}`);
    Deno.removeSync(`${device}/driver`);
    const before = await discoverHost({ root, lspci: null });
    assertEquals(
      before.devices.find((d) => d.address === "0000:0b:00.0")?.driver,
      "../../../../escape",
    );
    writeSnapshot(before, out, { root, reader: denoFsReader() });
    // It made bus/pci/drivers/../../../../escape, a directory beside OUT.
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["tree"]);
    const after = await discoverHost({ root: out, lspci: null });
    assertEquals({ ...after, source: root }, before);
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeSnapshot() keeps an iommu_group link that names another group or none: the snapshot's group data disagrees as the tree's does", async () => {
  const x570 = loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS));
  // 0000:0b:00.1, the GPU's audio function, is in group 30 with the GPU.
  for (const target of ["99", "thirty", ".."]) {
    await roundTrip(x570, {
      lspci: null,
      edit: (root) => {
        const link = `${root}/bus/pci/devices/0000:0b:00.1/iommu_group`;
        Deno.removeSync(link);
        Deno.symlinkSync(`../../../../kernel/iommu_groups/${target}`, link);
      },
      inspect: (_root, out) => {
        // Before: a link to a group 99 the snapshot made, which listed the function.
        assertEquals(pathExists(`${out}/kernel/iommu_groups/99`), false);
      },
    });
  }
});

Deno.test("writeSnapshot() keeps a group's non-PCI members, their bus and driver: a plan of the snapshot judges them as one of the tree does", async () => {
  const x570 = loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS));
  // The GPU's group 30 lists an unbound AMD IVRS ACPI device and one on a host driver.
  const host = await roundTrip(x570, {
    lspci: null,
    edit: (root) => {
      addNonPciGroupMember(root, 30, "AMDI0020:00", "platform", null);
      addNonPciGroupMember(root, 30, "INT33C2:00", "acpi", "i2c_designware");
    },
  });
  // Before: the snapshot listed both as links to bus/pci/devices, where neither is, and its
  // plan refused every group holding one as "not in bus/pci/devices".
  assertEquals(host.groupInconsistencies.map((p) => p.detail), [
    'kernel/iommu_groups/30/devices lists "INT33C2:00" (bus acpi, driver i2c_designware), no PCI device: VFIO takes a group only while no host driver holds any of its devices',
  ]);
});

Deno.test("writeSnapshot() keeps an input device whose class/input link is absolute or has a '..': a plan of the snapshot warns (host-input) as one of the tree does", async () => {
  const root = await Deno.makeTempDir({ prefix: "passthrough-snap-src-" });
  const out = `${await Deno.makeTempDir({ prefix: "passthrough-snap-" })}/tree`;
  const again = `${out}-again`;
  try {
    buildHostTree(loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS)), root);
    Deno.mkdirSync(`${root}/class/input`, { recursive: true });
    // A tree copied with its links made absolute, and one a tool wrote with a step back.
    const usb = "pci0000:00/0000:00:07.1/0000:08:00.1/usb1/1-2/1-2:1.0/input/input5";
    Deno.symlinkSync(`/sys/devices/${usb}`, `${root}/class/input/input5`);
    const mouse = "pci0000:00/0000:00:08.1/0000:0e:00.3/usb3/3-1/../3-1/3-1:1.0/input/input6";
    Deno.symlinkSync(`../../devices/${mouse}`, `${root}/class/input/input6`);
    // A step back that makes 0000:00:08.1 no host of a PCI domain: not rewritten into one.
    Deno.symlinkSync(
      "../../devices/pci0000:00/0000:00:08.1/../pci10000:e0/10000:e0:00.0/usb4/input/input7",
      `${root}/class/input/input7`,
    );
    const expected = new Map([
      ["0000:08:00.1", ["input5"]],
      ["0000:0e:00.3", ["input6"]],
      ["10000:e0:00.0", ["input7"]],
    ]);
    assertEquals(hostInputDevices(denoFsReader(), root), expected);
    const host = await discoverHost({ root, lspci: null });
    writeSnapshot(host, out, { root, reader: denoFsReader() });
    // Before: input5 and input6 were left out, and a plan of the snapshot gave no warning.
    assertEquals(hostInputDevices(denoFsReader(), out), expected);
    writeSnapshot(await discoverHost({ root: out, lspci: null }), again, {
      root: out,
      reader: denoFsReader(),
    });
    assertEquals(hostInputDevices(denoFsReader(), again), expected);
    // Each as the kernel writes it: nothing in the snapshot leads out of it.
    for (const entry of Deno.readDirSync(`${out}/class/input`)) {
      const link = Deno.readLinkSync(`${out}/class/input/${entry.name}`);
      assertOk(link.startsWith("../../devices/pci") && !/\/\.\.?\//.test(link.slice(6)), link);
    }
  } finally {
    for (const dir of [root, out.slice(0, -"/tree".length)]) {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

/**
 * Lays the devices of the tree at `root` out as sysfs does: each directory moved to
 * `devices/PLACE` (`placeOf` its address) with a `bus/pci/devices` link to it, and its own links
 * made to lead from there.
 */
function nestDevices(root: string, placeOf: (address: string) => string): void {
  const addresses = [...Deno.readDirSync(`${root}/bus/pci/devices`)].map((e) => e.name);
  // Parents first: a child is moved into its parent's new directory.
  for (const address of addresses.sort((a, b) => placeOf(a).length - placeOf(b).length)) {
    const place = `devices/${placeOf(address)}`;
    const to = `${root}/${place}`;
    Deno.mkdirSync(to.slice(0, to.lastIndexOf("/")), { recursive: true });
    Deno.renameSync(`${root}/bus/pci/devices/${address}`, to);
    Deno.symlinkSync(`../../../${place}`, `${root}/bus/pci/devices/${address}`);
    for (const entry of Deno.readDirSync(to)) {
      if (!entry.isSymlink || entry.name === "physfn" || entry.name.startsWith("virtfn")) continue;
      // Led from bus/pci/devices/ADDRESS: `../../drivers/x`, `../../../../kernel/...`.
      const target = Deno.readLinkSync(`${to}/${entry.name}`);
      const ups = target.match(/^(\.\.\/)*/)![0].length / 3;
      const from = ["bus", "pci", "devices", address].slice(0, 4 - ups).join("/");
      const fromRoot = `${from}${from === "" ? "" : "/"}${target.slice(ups * 3)}`;
      Deno.removeSync(`${to}/${entry.name}`);
      Deno.symlinkSync(
        `${"../".repeat(place.split("/").length)}${fromRoot}`,
        `${to}/${entry.name}`,
      );
    }
  }
}

Deno.test("writeSnapshot() lays devices out as sysfs does: a plan of the snapshot refuses a VM taking a VMD controller as one of the tree does", async () => {
  const z690 = loadHostDescription(new URL("z690-asus-adl.json", HOSTS));
  // Its VMD controller, 0000:00:0e.0 in group 6, with a root port and an NVMe drive behind it:
  // the IOMMU gives these no group, and discovery finds the controller above them in their
  // entries' links.
  const behind = (bdf: string, cls: string, driver: string) => ({
    bdf,
    group: null,
    class: cls,
    vendor: "0x8086",
    device: "0x0001",
    subsystem_vendor: null,
    subsystem_device: null,
    driver,
    revision: null,
  });
  const host = {
    ...z690,
    devices: [
      ...z690.devices,
      behind("10000:e0:06.0", "0x060400", "pcieport"),
      behind("10000:e1:00.0", "0x010802", "nvme"),
    ],
  };
  const after = await roundTrip(host, {
    edit: (root) =>
      nestDevices(
        root,
        (address) =>
          address.startsWith("10000:")
            ? `pci0000:00/0000:00:0e.0/pci10000:e0/${
              address === "10000:e0:06.0" ? "" : "10000:e0:06.0/"
            }${address}`
            : `pci0000:00/${address}`,
      ),
  });
  // Before: the snapshot's entries were directories, so nothing named the controller above the
  // drive, and a plan taking group 6 went on.
  assertEquals(
    after.groupInconsistencies.map((p) => [p.groups, p.devices]),
    [[[6], ["10000:e0:06.0"]], [[6], ["10000:e1:00.0"]]],
  );
});

Deno.test("writeSnapshot() keeps a root bus under a platform device (an ARM host's PCIe controller): a function on root bus 80 stays a device of its own", async () => {
  const x570 = loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS));
  // A second PCIe controller, its root bus 80 holding a NIC and, in its slot and IOMMU group,
  // the host's disk controller: two devices built into the SoC, as the root bus shows.
  const fn = (bdf: string, cls: string): HostDeviceDescription => ({
    bdf,
    group: 90,
    class: cls,
    vendor: "0x1af4",
    device: "0x1041",
    subsystem_vendor: null,
    subsystem_device: null,
    driver: null,
    revision: null,
  });
  const host = {
    ...x570,
    devices: [...x570.devices, fn("0000:80:03.0", "0x020000"), fn("0000:80:03.1", "0x010601")],
  };
  const after = await roundTrip(host, {
    lspci: null,
    // Where a device tree's kernel keeps them: below the controller's platform device.
    edit: (root) =>
      nestDevices(
        root,
        (address) =>
          address.startsWith("0000:80:")
            ? `platform/soc/fe150000.pcie/pci0000:80/${address}`
            : `pci0000:00/${address}`,
      ),
  });
  const disk = after.devices.find((d) => d.address === "0000:80:03.1")!;
  // Before: the snapshot kept it as a directory, read back as part of the NIC's card, which a
  // plan taking the NIC took it with unrefused.
  assertEquals([disk.rootBus, cardOf(disk)], [true, "0000:80:03.1"]);
});

Deno.test("writeSnapshot() keeps a function on a root bus other than 00 on one where its entry's link is not the kernel's shape", async () => {
  const x570 = loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS));
  const fn = (bdf: string, cls: string): HostDeviceDescription => ({
    bdf,
    group: 90,
    class: cls,
    vendor: "0x1af4",
    device: "0x1041",
    subsystem_vendor: null,
    subsystem_device: null,
    driver: null,
    revision: null,
  });
  const host = {
    ...x570,
    root_buses: ["0000:80"],
    devices: [...x570.devices, fn("0000:80:03.0", "0x020000"), fn("0000:80:03.1", "0x010601")],
  };
  const after = await roundTrip(host, {
    lspci: null,
    // A link with a `..` inside, which the snapshot does not follow: its device was written as a
    // directory, no root bus above it.
    edit: (root) => {
      const entry = `${root}/bus/pci/devices/0000:80:03.1`;
      Deno.removeSync(entry);
      Deno.mkdirSync(`${root}/devices/x`);
      Deno.symlinkSync("../../../devices/x/../pci0000:80/0000:80:03.1", entry);
    },
  });
  const disk = after.devices.find((d) => d.address === "0000:80:03.1")!;
  assertEquals([disk.rootBus, cardOf(disk)], [true, "0000:80:03.1"]);
});

Deno.test("writeSnapshot() writes nothing outside OUT for a tree whose devices' links lead through another's virtfn link", async () => {
  const root = await Deno.makeTempDir({ prefix: "passthrough-snap-src-" });
  const dir = await Deno.makeTempDir({ prefix: "passthrough-snap-" });
  const out = `${dir}/a/tree`;
  try {
    buildHostTree(loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS)), root);
    nestDevices(root, (address) => `pci0000:00/${address}`);
    // A hostile tree: each of the first devices has a `virtfn0` to `..`, and the next one's entry
    // leads through it, which in the tree is its own directory beside the others. In the
    // snapshot each such link climbed two levels from one level higher than the last.
    const chain = [...Deno.readDirSync(`${root}/bus/pci/devices`)].map((e) => e.name).sort()
      .slice(0, 5);
    let place = `devices/pci0000:00/${chain[0]}`;
    for (const [i, address] of chain.slice(1).entries()) {
      Deno.symlinkSync("..", `${root}/devices/pci0000:00/${chain[i]}/virtfn0`);
      place = `${place}/virtfn0/${address}`;
      Deno.removeSync(`${root}/bus/pci/devices/${address}`);
      Deno.symlinkSync(`../../../${place}`, `${root}/bus/pci/devices/${address}`);
    }
    const before = await discoverHost({ root, lspci: null });
    Deno.mkdirSync(`${dir}/a`);
    writeSnapshot(before, out, { root, reader: denoFsReader() });
    // The last device's files were written in a/, beside OUT.
    const outside: string[] = [];
    const walk = (at: string) => {
      for (const entry of Deno.readDirSync(at)) {
        const path = `${at}/${entry.name}`;
        if (path === out) continue;
        outside.push(path.slice(dir.length + 1));
        if (entry.isDirectory) walk(path);
      }
    };
    walk(dir);
    assertEquals(outside, ["a"]);
    const after = await discoverHost({ root: out, lspci: null });
    assertEquals(after.devices.map((d) => d.address), before.devices.map((d) => d.address));
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeSnapshot() keeps a tree whose device's entry leads through a later device's virtfn link", async () => {
  const root = await Deno.makeTempDir({ prefix: "passthrough-snap-src-" });
  const dir = await Deno.makeTempDir({ prefix: "passthrough-snap-" });
  const out = `${dir}/tree`;
  try {
    buildHostTree(loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS)), root);
    nestDevices(root, (address) => `pci0000:00/${address}`);
    // The first device by address leads through the last's `virtfn0` (to `..`): written in
    // address order, its place was made a directory where the last one's link then belonged.
    const addresses = [...Deno.readDirSync(`${root}/bus/pci/devices`)].map((e) => e.name).sort();
    const [first, last] = [addresses[0]!, addresses.at(-1)!];
    Deno.symlinkSync("..", `${root}/devices/pci0000:00/${last}/virtfn0`);
    Deno.removeSync(`${root}/bus/pci/devices/${first}`);
    Deno.symlinkSync(
      `../../../devices/pci0000:00/${last}/virtfn0/${first}`,
      `${root}/bus/pci/devices/${first}`,
    );
    const before = await discoverHost({ root, lspci: null });
    writeSnapshot(before, out, { root, reader: denoFsReader() });
    const after = await discoverHost({ root: out, lspci: null });
    assertEquals(after.devices.map((d) => d.address), before.devices.map((d) => d.address));
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  }
});
