// The start guard and hostdev networks: an `<interface type='network'>` whose network is a pool
// of VFs (`<forward mode='hostdev'>`) gets whichever entry is free at start, and libvirt's managed
// detach unbinds whatever sits at that address. Checked on the Z690 tree with an SR-IOV NIC
// added, the network's status XML as libvirt's network driver writes it.

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { loadFixtureHost, ROUTE_HEADER, tempHostTree } from "../helpers/hosts.ts";
import { sriovNic } from "../helpers/sriov.ts";
import type { HostDescription } from "../../lib/testing/host_tree.ts";
import { denoFsReader, type SysfsReader } from "../../lib/host/sysfs.ts";
import { readHostUse } from "../../lib/host/sysfs_device.ts";
import { checkDomainStart, formatRefusal, type GuardRefusal } from "../../lib/guard/check.ts";
import { guardCheck, runGuard } from "../../lib/guard/run.ts";

/** The Z690 host, its NIC on the default route, with an igb PF at 40:00.0 and 4 VFs. */
function host(): HostDescription {
  const z690 = loadFixtureHost("z690-asus-adl");
  z690.host_use = [
    { address: "0000:0a:00.0", reason: "default-route", detail: "default route via enp10s0" },
  ];
  z690.devices.push(...sriovNic("40", 4));
  return z690;
}

const VFS = ["0000:40:10.0", "0000:40:10.2", "0000:40:10.4", "0000:40:10.6"];

function libvirtAddress(address: string, extra = ""): string {
  const [domain, bus, slotFn] = address.split(":");
  const [slot, fn] = slotFn!.split(".");
  return `<address type='pci' domain='0x${domain}' bus='0x${bus}' slot='0x${slot}' ` +
    `function='0x${fn}'${extra}/>`;
}

/** A running network's status file, as `/run/libvirt/network/NAME.xml` holds it. */
function status(name: string, forward: string): string {
  return `<!--
WARNING: THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE
OVERWRITTEN AND LOST. Changes to this xml configuration should be made using:
  virsh net-edit ${name}
-->
<networkstatus>
  <class_id bitmap='0-2'/>
  <floor sum='0'/>
  <network connections='1'>
    <name>${name}</name>
    <uuid>8b5d5d05-7e8e-4d0c-9d0e-2f3b4f5a6b7c</uuid>
    ${forward}
  </network>
</networkstatus>
`;
}

/** A hostdev pool: a PF's, with its VFs listed as libvirt lists them once the network runs. */
function pool(addresses: string[]): string {
  return `<forward mode='hostdev' managed='yes'>
      <pf dev='enp64s0'/>
      ${
    addresses.map((a, i) => libvirtAddress(a, i === 0 ? " connections='1'" : "")).join("\n      ")
  }
    </forward>`;
}

/** A VM with a NIC from each network in `networks`. */
function domain(networks: string[]): string {
  const nics = networks.map((n, i) =>
    `<interface type='network'>
      <mac address='52:54:00:00:00:0${i}'/>
      <source network='${n}'/>
      <model type='virtio'/>
    </interface>`
  );
  return `<domain type='kvm'><name>router</name><devices>${nics.join("")}</devices></domain>`;
}

async function check(
  xml: string,
  networks: Record<string, string | Error>,
): Promise<{ refusals: GuardRefusal[]; asked: string[] }> {
  await using tree = await tempHostTree(host());
  const reader: SysfsReader = denoFsReader();
  const asked: string[] = [];
  const refusals = checkDomainStart({
    vm: "router",
    xml,
    reader,
    root: tree.dir,
    hostUse: (devices) => readHostUse(reader, { root: tree.dir, live: false, devices }),
    networkStatus: (name) => {
      asked.push(name);
      const found = networks[name];
      if (found instanceof Error) throw found;
      return found ?? null;
    },
  });
  return { refusals, asked };
}

function summary(refusals: GuardRefusal[]): [string, string | null, string | undefined][] {
  return refusals.map((r) => [r.kind, r.address, r.network]);
}

Deno.test("guard: a VM on a hostdev network whose pool holds its VFs starts", async () => {
  const { refusals, asked } = await check(domain(["sriov", "default"]), {
    sriov: status("sriov", pool(VFS)),
    default: status(
      "default",
      "<forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>",
    ),
  });
  assertEquals(refusals, []);
  assertEquals(asked, ["default", "sriov"]);
});

Deno.test("guard: a pool entry that now holds the default route's NIC refuses the start", async () => {
  // The buses moved: one entry of the pool now names the host's own NIC, which is no VF.
  const { refusals } = await check(domain(["sriov"]), {
    sriov: status("sriov", pool([VFS[0]!, "0000:0a:00.0"])),
  });
  assertEquals(summary(refusals), [["replaced", "0000:0a:00.0", "sriov"]]);
  assertMatch(
    formatRefusal(refusals[0]!),
    new RegExp(
      '^passthrough guard: refusing to start "router": hostdev network "sriov" lists ' +
        String.raw`0000:0a:00\.0, which holds 8086:\w{4} \(.*\) now, not an SR-IOV virtual ` +
        String
          .raw`function; the host needs it: in use by the host \(default-route: default route ` +
        String.raw`via enp10s0\); libvirt may hand any free entry of the pool to this VM; fix: ` +
        String.raw`correct the pool \(virsh net-edit sriov\), then, with the guests that use it ` +
        String.raw`shut down, virsh net-destroy sriov; ` +
        "virsh net-start sriov$",
    ),
  );
});

Deno.test("README: the sample refusal of a hostdev network's pool is what the guard prints", async () => {
  // README's sample is this test's host: the Z690's I225-V on the default route, in the pool.
  const readme = Deno.readTextFileSync(new URL("../../README.md", import.meta.url));
  const sample = readme.match(/```text\n(passthrough guard: refusing to start "router": .*)\n```/)
    ?.[1];
  const { refusals } = await check(domain(["sriov"]), {
    sriov: status("sriov", pool([VFS[0]!, "0000:0a:00.0"])),
  });
  assertEquals(refusals.map((r) => formatRefusal(r)), [sample]);
});

Deno.test("guard: a pool entry that holds nothing, or a PF, refuses the start", async () => {
  const { refusals } = await check(domain(["sriov"]), {
    sriov: status("sriov", pool([...VFS, "0000:40:00.0", "0000:77:10.1"])),
  });
  assertEquals(summary(refusals), [
    ["replaced", "0000:40:00.0", "sriov"],
    ["missing", "0000:77:10.1", "sriov"],
  ]);
  assertMatch(refusals[1]!.reason, /lists 0000:77:10\.1, which holds no device now;/);
});

Deno.test("guard: networks that do not run or are no hostdev pool are not checked", async () => {
  const { refusals, asked } = await check(domain(["gone", "lan", "sriov"]), {
    lan: status("lan", "<forward mode='bridge'/><bridge name='br0'/>"),
    // No <forward>: an isolated network.
    sriov: status("sriov", ""),
  });
  assertEquals([refusals, asked], [[], ["gone", "lan", "sriov"]]);
});

Deno.test("guard: a hostdev network whose pool cannot be read fails closed", async () => {
  const cut = status("sriov", pool(VFS)).replace(/<\/forward>[\s\S]*/, "");
  const odd = status(
    "odd",
    pool([]).replace("<pf dev='enp64s0'/>", "<address type='usb' bus='1' device='2'/>"),
  );
  const { refusals } = await check(domain(["sriov", "odd", "locked"]), {
    sriov: cut,
    odd,
    locked: new Error("permission denied"),
  });
  assertEquals(refusals.map((r) => r.network), ["locked", "odd", "sriov"]);
  assertEquals(refusals.map((r) => [r.kind, r.reason]), [
    ["unreadable", 'the status of network "locked" cannot be read: permission denied'],
    [
      "unreadable",
      '1 entry(ies) of the device pool of hostdev network "odd" name no readable PCI address',
    ],
    [
      "unreadable",
      '1 entry(ies) of the device pool of hostdev network "sriov" name no readable PCI address',
    ],
  ]);
});

Deno.test("guard: a pool entry the domain also names as a hostdev is read and judged once each", async () => {
  const xml = domain(["sriov"]).replace(
    "</devices>",
    `<hostdev mode='subsystem' type='pci' managed='yes'><source>${
      libvirtAddress("0000:0a:00.0")
    }</source></hostdev></devices>`,
  );
  const { refusals } = await check(xml, { sriov: status("sriov", pool(["0000:0a:00.0"])) });
  assertEquals(summary(refusals), [
    ["host-needs", "0000:0a:00.0", undefined],
    ["replaced", "0000:0a:00.0", "sriov"],
  ]);
});

Deno.test("runGuard() reads a network's status from its directory, refusing a huge one", async () => {
  await using tree = await tempHostTree(host());
  const dir = await Deno.makeTempDir();
  const stateDir = await Deno.makeTempDir();
  try {
    // The hook's arguments at a start, on the tree; networks read from `dir` unless told none.
    const at = { vm: "router", operation: "prepare", subOperation: "begin", live: false, stateDir };
    const run = (xml: string, networkStatusDir: string | null = dir) =>
      runGuard({
        ...at,
        xml,
        reader: denoFsReader(),
        root: tree.dir,
        ...(networkStatusDir === null ? {} : { networkStatusDir }),
      });
    await Deno.writeTextFile(`${dir}/sriov.xml`, status("sriov", pool([VFS[1]!, "0000:0a:00.0"])));
    const refused = await run(domain(["sriov"]));
    assertEquals([refused.code, refused.refusals.map((r) => [r.kind, r.address])], [1, [[
      "replaced",
      "0000:0a:00.0",
    ]]]);
    await Deno.writeTextFile(`${dir}/big.xml`, status("big", pool(VFS)).padEnd(33 << 20, " "));
    const big = await run(domain(["big"]));
    assertEquals([big.code, big.lines], [1, [
      'passthrough guard: refusing to start "router": the status of network "big" cannot be read: ' +
      "it is larger than 33554432 bytes; fix: correct the pool (virsh net-edit big), then, " +
      "with the guests that use it shut down, virsh net-destroy big; virsh net-start big",
    ]]);
    // A name with a slash names no libvirt network: nothing outside the directory is read.
    await Deno.writeTextFile(`${tree.dir}/x.xml`, status("x", pool(["0000:0a:00.0"])));
    const escaped = await run(domain([`../${tree.dir.split("/").pop()}/x`]));
    assertEquals(escaped.code, 0);
    // Without a directory (a captured tree), networks are not read.
    const none = await run(domain(["sriov"]), null);
    assertEquals(none.code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(stateDir, { recursive: true });
  }
});

Deno.test("guard: on the live host, a pool VF that carries the host's default route refuses the start", async () => {
  // The host took VF 40:10.2 for its own uplink (enp64s0v1), and the pool still lists it: host
  // use is read for the pool's entries too, though the domain names no hostdev of its own.
  await using tree = await tempHostTree(host());
  Deno.mkdirSync(`${tree.dir}/class/net`, { recursive: true });
  Deno.symlinkSync(
    `../../devices/pci0000:40/0000:40:00.0/${VFS[1]}/net/enp64s0v1`,
    `${tree.dir}/class/net/enp64s0v1`,
  );
  Deno.mkdirSync(`${tree.dir}/proc/net`, { recursive: true });
  Deno.mkdirSync(`${tree.dir}/proc/self`, { recursive: true });
  Deno.writeTextFileSync(`${tree.dir}/proc/self/mountinfo`, "");
  Deno.writeTextFileSync(
    `${tree.dir}/proc/net/route`,
    ROUTE_HEADER +
      "enp64s0v1\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
  );
  Deno.writeTextFileSync(`${tree.dir}/proc/net/ipv6_route`, "");
  const reader = denoFsReader();
  const refusals = checkDomainStart({
    vm: "router",
    xml: domain(["sriov"]),
    reader,
    root: tree.dir,
    hostUse: (devices) =>
      readHostUse(reader, { root: tree.dir, live: true, devices, procRoot: `${tree.dir}/proc` }),
    networkStatus: () => status("sriov", pool(VFS)),
  });
  assertEquals(summary(refusals), [["host-needs", VFS[1]!, "sriov"]]);
  assertMatch(
    refusals[0]!.reason,
    /lists 0000:40:10\.2, which holds 8086:10ca \(.*\) now; the host needs it: in use by the host \(default-route: default route via enp64s0v1\)/,
  );
});

Deno.test("guard: a pool entry whose IOMMU group now holds a function the host needs refuses the start", async () => {
  // The first VF's group 30 merged with the unbound NVMe drive at 06:00.0 (an ACS change): VFIO
  // would hand it to the guest along with that VF.
  const merged = host();
  for (const d of merged.devices) {
    if (d.bdf === "0000:06:00.0") Object.assign(d, { group: 30, driver: null });
  }
  await using tree = await tempHostTree(merged);
  const reader: SysfsReader = denoFsReader();
  const refusals = checkDomainStart({
    vm: "router",
    xml: domain(["sriov"]),
    reader,
    root: tree.dir,
    hostUse: (devices) => readHostUse(reader, { root: tree.dir, live: false, devices }),
    networkStatus: () => status("sriov", pool(VFS)),
  });
  assertEquals(summary(refusals), [["host-needs", VFS[0]!, "sriov"]]);
  assertEquals(refusals[0]!.group, { number: 30, member: "0000:06:00.0", driver: null });
  assertMatch(
    formatRefusal(refusals[0]!),
    new RegExp(
      String.raw`refusing to start "router": hostdev network "sriov" lists 0000:40:10\.0, whose ` +
        String.raw`IOMMU group 30 also holds 0000:06:00\.0, 144d:a808 \(.*driver none\), which ` +
        String.raw`"router" does not pass; the host needs it: storage controller in another ` +
        String.raw`slot: VFIO hands the guest the whole group; libvirt may hand any free entry ` +
        String.raw`of the pool to this VM; fix: correct the pool \(virsh net-edit sriov\)`,
    ),
  );
});

Deno.test("guard: on the live host, a pool entry whose group now holds the default route's NIC refuses the start, saying so", async () => {
  // The NIC at 0a:00.0 merged into the first VF's group 30: routes are read for the devices
  // asked about alone, so the entry's group mates must be among them.
  const merged = host();
  for (const d of merged.devices) if (d.bdf === "0000:0a:00.0") d.group = 30;
  await using tree = await tempHostTree(merged);
  const nic = Deno.realPathSync(`${tree.dir}/bus/pci/devices/0000:0a:00.0`);
  Deno.mkdirSync(`${tree.dir}/class/net`, { recursive: true });
  Deno.symlinkSync(
    `../..${nic.slice(Deno.realPathSync(tree.dir).length)}/net/enp10s0`,
    `${tree.dir}/class/net/enp10s0`,
  );
  Deno.mkdirSync(`${tree.dir}/proc/net`, { recursive: true });
  Deno.mkdirSync(`${tree.dir}/proc/self`, { recursive: true });
  Deno.writeTextFileSync(`${tree.dir}/proc/self/mountinfo`, "");
  Deno.writeTextFileSync(
    `${tree.dir}/proc/net/route`,
    ROUTE_HEADER + "enp10s0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
  );
  Deno.writeTextFileSync(`${tree.dir}/proc/net/ipv6_route`, "");
  const reader = denoFsReader();
  const refusals = checkDomainStart({
    vm: "router",
    xml: domain(["sriov"]),
    reader,
    root: tree.dir,
    hostUse: (devices) =>
      readHostUse(reader, { root: tree.dir, live: true, devices, procRoot: `${tree.dir}/proc` }),
    networkStatus: () => status("sriov", pool(VFS)),
  });
  assertEquals(summary(refusals), [["not-viable", VFS[0]!, "sriov"]]);
  assertEquals(
    refusals[0]!.hostNeeds,
    "its IOMMU group 30 also holds 0000:0a:00.0: in use by the host (default-route: default " +
      "route via enp10s0)",
  );
});

Deno.test("guard: a pool entry's group mate that the domain passes itself is the domain's, not left on its driver", async () => {
  // The NVMe drive at 06:00.0 merged into the first VF's group 30, and the domain passes it: its
  // managed hostdev leaves nvme at start, so the pool's entry hands the guest nothing more.
  const merged = host();
  for (const d of merged.devices) {
    if (d.bdf === "0000:06:00.0") d.group = 30;
    if (d.bdf === VFS[0]) d.driver = "vfio-pci";
  }
  await using tree = await tempHostTree(merged);
  const reader: SysfsReader = denoFsReader();
  const hostdev = `<hostdev mode='subsystem' type='pci' managed='yes'><source>${
    libvirtAddress("0000:06:00.0")
  }</source></hostdev>`;
  const refusals = checkDomainStart({
    vm: "router",
    xml: domain(["sriov"]).replace("<devices>", `<devices>${hostdev}`),
    reader,
    root: tree.dir,
    hostUse: (devices) => readHostUse(reader, { root: tree.dir, live: false, devices }),
    networkStatus: () => status("sriov", pool(VFS)),
  });
  assertEquals(summary(refusals), []);
});

Deno.test("guard: an address the domain passes and its network's pool lists, whose group cannot be told, is refused once", async () => {
  // Read for the hostdev and again for the pool entry: the same refusal twice, word for word.
  await using tree = await tempHostTree(host());
  const link = `${tree.dir}/bus/pci/devices/${VFS[0]}/iommu_group`;
  const target = Deno.readLinkSync(link);
  Deno.removeSync(link);
  Deno.symlinkSync(target.replace(/[0-9]+$/, "thirty"), link);
  const hostdev = `<hostdev mode='subsystem' type='pci' managed='yes'><source>${
    libvirtAddress(VFS[0]!)
  }</source></hostdev>`;
  const refusals = checkDomainStart({
    vm: "router",
    xml: domain(["sriov"]).replace("<devices>", `<devices>${hostdev}`),
    reader: denoFsReader(),
    root: tree.dir,
    hostUse: () => [],
    networkStatus: () => status("sriov", pool(VFS)),
  });
  assertEquals(refusals.map((r) => [r.kind, r.reason]), [[
    "unreadable",
    `${VFS[0]}'s iommu_group link names "thirty", not an IOMMU group number, so what else ` +
    "VFIO would hand the guest is unknown",
  ]]);
});

Deno.test("guard: a pool entry whose group cannot be told is refused as the network's, with its fix", async () => {
  // The address is in no <hostdev> of the domain: the refusal says where it comes from.
  await using tree = await tempHostTree(host());
  const link = `${tree.dir}/bus/pci/devices/${VFS[1]}/iommu_group`;
  const target = Deno.readLinkSync(link);
  Deno.removeSync(link);
  Deno.symlinkSync(target.replace(/[0-9]+$/, "thirty"), link);
  const refusals = checkDomainStart({
    vm: "router",
    xml: domain(["sriov"]),
    reader: denoFsReader(),
    root: tree.dir,
    hostUse: () => [],
    networkStatus: () => status("sriov", pool(VFS)),
  });
  assertEquals(summary(refusals), [["unreadable", null, "sriov"]]);
  assertEquals(
    formatRefusal(refusals[0]!),
    `passthrough guard: refusing to start "router": hostdev network "sriov" lists ${VFS[1]}, ` +
      `whose iommu_group link names "thirty", not an IOMMU group number: libvirt may hand any ` +
      "free entry of the pool to this VM, so what else VFIO would hand the guest is unknown; " +
      "fix: correct the pool (virsh net-edit sriov), then, with the guests that use it shut " +
      "down, virsh net-destroy sriov; virsh net-start sriov",
  );
});

Deno.test("guard: a pool entry whose IOMMU group now holds a function a running VM was given refuses the start, naming that VM", async () => {
  // The first VF's group 30 merged with the NVMe drive at 06:00.0, on vfio-pci in running "nas".
  const merged = host();
  for (const d of merged.devices) {
    if (d.bdf === "0000:06:00.0") Object.assign(d, { group: 30, driver: "vfio-pci" });
  }
  await using tree = await tempHostTree(merged);
  for (const dir of ["qemu", "network"]) Deno.mkdirSync(`${tree.dir}/${dir}`);
  Deno.writeTextFileSync(`${tree.dir}/network/sriov.xml`, status("sriov", pool(VFS)));
  Deno.writeTextFileSync(
    `${tree.dir}/qemu/nas.xml`,
    `<domstatus state='running'><domain type='kvm'><name>nas</name><devices>
      <hostdev mode='subsystem' type='pci' managed='yes'><source>${
      libvirtAddress("0000:06:00.0")
    }</source></hostdev></devices></domain></domstatus>`,
  );
  const refusals = guardCheck({
    vm: "router",
    xml: domain(["sriov"]),
    reader: denoFsReader(),
    root: tree.dir,
    live: false,
    qemuStatusDir: `${tree.dir}/qemu`,
    networkStatusDir: `${tree.dir}/network`,
  });
  assertEquals(summary(refusals), [["busy", VFS[0]!, "sriov"]]);
  assertMatch(
    formatRefusal(refusals[0]!),
    new RegExp(
      String.raw`hostdev network "sriov" lists 0000:40:10\.0, whose IOMMU group 30 also holds ` +
        String
          .raw`0000:06:00\.0, .*driver vfio-pci\), which "router" does not pass; it is in use ` +
        String
          .raw`\(vm-passed: hostdev of running VM "nas"\): VFIO hands a group to one guest at ` +
        String.raw`a time, so libvirt refuses this start while that guest runs; libvirt may hand ` +
        String.raw`any free entry of the pool to this VM; fix: correct the pool`,
    ),
  );
});
