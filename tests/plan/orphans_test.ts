/**
 * VMs that leave the config: the hostdevs this tool added are removed (a device dropped from the
 * config leaves the VM, whether its rule or its whole VM entry went), hand-added ones stay; a
 * configured VM whose definition cannot be read is refused on its own; and devices given to a VM
 * otherwise than as a `<hostdev>` count as taken: an `<interface type='hostdev'>`, an NVMe disk's
 * controller, and (on the live host) the controller under a block disk.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { planHostdevs, planWorld } from "../../lib/plan/plan.ts";
import { config, domainXml, GPU_CONFIG, HOST, vmOf } from "../helpers/plan_world.ts";
import { dataWorld } from "../helpers/world.ts";
import { applyPlan } from "../../lib/apply/apply.ts";
import { type ParsedDomain, parseDomainXml } from "../../lib/domain/domain_xml.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import type { PlanIssue } from "../../lib/plan/types.ts";
import { nvmeDiskXml } from "../helpers/devices.ts";
import { type HostFacts, readHostFacts } from "../../lib/host/preflight.ts";
import type { HostTopology } from "../../lib/host/types.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { snapshotDomains } from "../helpers/reliability.ts";
import { linkBridgeOverAquantia } from "../helpers/demo_net.ts";

const DEMO = new URL("../../demo/", import.meta.url).pathname;

const BOTH = `version: 1
vms:
  win10:
    devices:
      - name: gtx1080
        match: { vendor_device_id: "10de:1b80" }
  gentoo:
    devices:
      - name: rx580
        match: { vendor_device_id: "1002:67df" }
`;
const GENTOO_ONLY = `version: 1
vms:
  gentoo:
    devices:
      - name: rx580
        match: { vendor_device_id: "1002:67df" }
`;

async function demoHost() {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-orphans-" });
  buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
  const host = await discoverHost({ root: `${dir}/sysfs` });
  return { dir, host, [Symbol.dispose]: () => Deno.removeSync(dir, { recursive: true }) };
}

/** The demo world with `devices` added to win10's, written to `dir`; its path. */
function worldWith(dir: string, devices: string): string {
  const world = Deno.readTextFileSync(`${DEMO}world.xml`).replace(
    "</devices>\n    <test:runstate>",
    `  ${devices}\n    </devices>\n    <test:runstate>`,
  );
  Deno.writeTextFileSync(`${dir}/world.xml`, world);
  return `${dir}/world.xml`;
}

/** A copy of the world file `world` in `dir` in which win10 runs; its path. */
function withWin10Running(dir: string, world: string): string {
  const running = Deno.readTextFileSync(world).replace(
    /(<name>win10<\/name>[\s\S]*?<test:runstate>)5</,
    "$11<",
  );
  Deno.writeTextFileSync(`${dir}/running.xml`, running);
  return `${dir}/running.xml`;
}

/** A config giving `vm` the one device with `id` (vendor:device). */
function wants(vm: string, id: string) {
  return parseConfig(
    `version: 1\nvms:\n  ${vm}:\n    devices:\n      - match: { vendor_device_id: "${id}" }\n`,
    { file: `${vm}.yaml` },
  );
}

/** The facts of the demo's tree in `dir`: on the live host (its `dev` too), and as captured. */
function factsOf(dir: string) {
  const sys = `${dir}/sysfs`;
  const roots = { reader: denoFsReader(), sysRoot: sys, procRoot: `${sys}/proc` };
  return {
    live: readHostFacts({ ...roots, devRoot: `${dir}/dev` }),
    captured: readHostFacts(roots),
  };
}

/** The plan of `vm` asking for the device `id` on `host`. */
function planFor(
  { host, libvirt, facts }: { host: HostTopology; libvirt: LibvirtPort; facts: HostFacts },
  vm: string,
  id: string,
) {
  return planHostdevs({ config: wants(vm, id), host, libvirt, facts });
}

/** That gentoo's plan is refused as taking a device win10 holds. */
function assertTakenFromWin10(plan: ReturnType<typeof planHostdevs>): PlanIssue {
  const issue = plan.vms[0]!.errors.find((e) => e.code === "device-assigned-twice");
  assert(issue !== undefined, JSON.stringify(plan.vms[0]!.errors));
  assertEquals([...(issue.vms ?? [])].sort(), ["gentoo", "win10"]);
  assertEquals(plan.vms[0]!.add, []);
  return issue;
}

/** That win10 asking for the device it holds as `as` keeps it so, adding no hostdev. */
function assertKeptInWin10(plan: ReturnType<typeof planHostdevs>, as: string): void {
  const win10 = plan.vms[0]!;
  assertEquals(win10.errors, []);
  assertEquals(win10.add, []);
  assertMatch(win10.reasoning.join("\n"), new RegExp(`already in "win10" as ${as}`));
}

Deno.test("planHostdevs() removes the hostdevs it added to a VM dropped from the config, keeping hand-added ones", async () => {
  using demo = await demoHost();
  using libvirt = openLibvirtPort(`test://${DEMO}world.xml`);
  const first = planHostdevs({
    config: parseConfig(BOTH, { file: "both.yaml" }),
    host: demo.host,
    libvirt,
  });
  const report = await applyPlan(first, {
    libvirt,
    stateDir: `${demo.dir}/state`,
    confirm: () => Promise.resolve("yes"),
  });
  assertEquals(report.changed, ["win10", "gentoo"]);

  const config = parseConfig(GENTOO_ONLY, { file: "gentoo.yaml" });
  const plan = planHostdevs({ config, host: demo.host, libvirt });
  const win10 = plan.vms.find((vm) => vm.name === "win10");
  assert(win10 !== undefined, "win10 is planned although the config no longer names it");
  assertEquals(win10.remove.sort(), ["0000:21:00.0", "0000:21:00.1"]);
  assertMatch(win10.reasoning[0]!, /no longer in config "gentoo\.yaml"/);
  // Said once for the VM, not again for each of its rules.
  assertEquals(win10.reasoning.length, 1);
  assertEquals(plan.vms.find((vm) => vm.name === "gentoo")?.changed, false);

  // Limited to gentoo, win10 is left alone.
  const limited = planHostdevs({ config, host: demo.host, libvirt, vms: ["gentoo"] });
  assertEquals(limited.vms.map((vm) => vm.name), ["gentoo"]);

  await applyPlan(plan, {
    libvirt,
    stateDir: `${demo.dir}/state`,
    confirm: () => Promise.resolve("yes"),
  });
  const after = libvirt.getPersistentXml("win10");
  const parsed = parseDomainXml(after);
  assertEquals(parsed.hostdevs, []);
  assertEquals(parsed.records, []);
  assertMatch(after, /<hostdev mode='subsystem' type='usb'/, "the hand-added USB device stays");
  // Nothing left to release: the VM drops out of the plan.
  assertEquals(planHostdevs({ config, host: demo.host, libvirt }).vms.map((vm) => vm.name), [
    "gentoo",
  ]);
});

Deno.test("planHostdevs() keeps a dropped VM's devices while the config names a VM libvirt lacks, or names none", async () => {
  using demo = await demoHost();
  using libvirt = openLibvirtPort(`test://${DEMO}world.xml`);
  const stateDir = `${demo.dir}/state`;
  const yes = () => Promise.resolve("yes" as const);
  await applyPlan(
    planHostdevs({ config: parseConfig(BOTH, { file: "both.yaml" }), host: demo.host, libvirt }),
    { libvirt, stateDir, confirm: yes },
  );
  const applied = snapshotDomains(libvirt);

  // win10 typed "winl0": the unknown name is refused, and win10 is not stripped.
  const typo = parseConfig(BOTH.replace("win10:", "winl0:"), { file: "typo.yaml" });
  const plan = planHostdevs({ config: typo, host: demo.host, libvirt });
  const byName = new Map(plan.vms.map((vm) => [vm.name, vm]));
  assertEquals(byName.get("winl0")?.errors.map((e) => e.code), ["unknown-vm"]);
  const win10 = byName.get("win10")!;
  assertEquals([win10.changed, win10.remove, win10.errors.map((e) => e.code)], [
    false,
    [],
    ["vm-not-in-config"],
  ]);
  assertMatch(
    win10.errors[0]!.message,
    /VM "win10" is not in config "typo\.yaml" but holds hostdevs passthrough added: they are not released while the config names "winl0", which libvirt does not have/,
  );
  assertEquals(byName.get("gentoo")?.errors, []);
  const report = await applyPlan(plan, { libvirt, stateDir, confirm: yes });
  assertEquals(report.changed, []);
  assertEquals(snapshotDomains(libvirt), applied);

  // vms: {} releases nothing; naming each VM with devices: [] does.
  const empty = planHostdevs({
    config: parseConfig("version: 1\nvms: {}\n", { file: "empty.yaml" }),
    host: demo.host,
    libvirt,
  });
  assertEquals(empty.vms.map((vm) => [vm.name, vm.changed, vm.errors.map((e) => e.code)]), [
    ["gentoo", false, ["vm-not-in-config"]],
    ["win10", false, ["vm-not-in-config"]],
  ]);
  const message = empty.vms[1]!.errors[0]!.message;
  assertMatch(
    message,
    /is not in config "empty\.yaml" .*: they are not released, since the config names no VM/,
  );
  assertMatch(message, /"win10: \{ devices: \[\] \}" under vms:/);
  await applyPlan(empty, { libvirt, stateDir, confirm: yes });
  assertEquals(snapshotDomains(libvirt), applied);

  const explicit = planHostdevs({
    config: parseConfig("version: 1\nvms:\n  win10: { devices: [] }\n  gentoo: { devices: [] }\n", {
      file: "release.yaml",
    }),
    host: demo.host,
    libvirt,
  });
  assertEquals(explicit.vms.map((vm) => [vm.name, vm.remove.length, vm.errors]), [
    ["win10", 2, []],
    ["gentoo", 2, []],
  ]);
  recordCase({
    area: "config",
    name: "misspelt VM name, or vms: {}, with applied VMs",
    count: 2,
    outcome: "dropped VMs refused (vm-not-in-config), nothing released",
    test: "tests/plan/orphans_test.ts",
  });
});

/**
 * A stand-in port serving fixed XML, used only here: libvirt itself always returns well-formed
 * definitions, so the real thing cannot produce the unreadable one this test needs.
 */
function fixedXmlPort(domains: Record<string, string>): LibvirtPort {
  return {
    uri: "test:///fixed-xml",
    listDomains: () =>
      Object.keys(domains).map((name) => ({ name, uuid: "", active: false, persistent: true })),
    getPersistentXml: (name) => domains[name]!,
    isActive: () => false,
    define: () => {
      throw new Error("not used");
    },
    attachDevice: () => {
      throw new Error("not used");
    },
    detachDevice: () => {
      throw new Error("not used");
    },
  };
}

Deno.test("planHostdevs() refuses only the VM whose definition cannot be read", async () => {
  using demo = await demoHost();
  using real = openLibvirtPort(`test://${DEMO}world.xml`);
  const libvirt = fixedXmlPort({
    // Malformed, but naming no hostdev: a <hostdev> with no readable address would refuse the
    // whole plan (tests/plan/unreadable_test.ts).
    win10: "<domain type='test'><name>win10</name><devices><disk></devices></domain>",
    gentoo: real.getPersistentXml("gentoo"),
  });
  const plan = planHostdevs({
    config: parseConfig(BOTH, { file: "both.yaml" }),
    host: demo.host,
    libvirt,
  });
  const [win10, gentoo] = plan.vms;
  assertEquals(win10?.errors.map((e) => e.code), ["unreadable-definition"]);
  assertMatch(win10!.errors[0]!.message, /Cannot read the definition of VM "win10": /);
  assertMatch(win10!.errors[0]!.message, /no PCI device could be found in it/);
  assertEquals(plan.errors, []);
  assertEquals(win10?.changed, false);
  assertEquals(gentoo?.errors, []);
  assertEquals(gentoo?.add.map((a) => a.address), ["0000:4c:00.0", "0000:4c:00.1"]);
});

/**
 * Devices win10 holds other than as a `<hostdev>`, which planning must count as taken: the
 * Aquantia NIC as an SR-IOV-style interface, the Phison NVMe (win10's boot disk) as an NVMe disk.
 */
const HELD_OTHERWISE = [
  {
    as: "an <interface type='hostdev'>",
    id: "1d6a:07b1",
    xml: `<interface type='hostdev' managed='yes'>
        <source><address type='pci' domain='0x0000' bus='0x44' slot='0x00' function='0x0'/></source>
      </interface>`,
    read: (d: ParsedDomain) => d.interfaceHostdevs,
    address: "0000:44:00.0",
  },
  {
    as: "a <disk type='nvme'>",
    id: "1987:5016",
    xml: nvmeDiskXml("4a", "vdb"),
    read: (d: ParsedDomain) => d.nvmeDisks,
    address: "0000:4a:00.0",
  },
];

for (const held of HELD_OTHERWISE) {
  Deno.test(`planHostdevs() counts ${held.as} as taken and never adds it twice`, async () => {
    using demo = await demoHost();
    const world = worldWith(demo.dir, held.xml);
    using libvirt = openLibvirtPort(`test://${world}`);
    assertEquals(held.read(parseDomainXml(libvirt.getPersistentXml("win10"))), [held.address]);
    // gentoo asks for the device win10 holds.
    assertTakenFromWin10(
      planHostdevs({ config: wants("gentoo", held.id), host: demo.host, libvirt }),
    );
    // win10 itself asking for it: kept as it is, no <hostdev> added next to it.
    assertKeptInWin10(
      planHostdevs({ config: wants("win10", held.id), host: demo.host, libvirt }),
      held.as,
    );
  });
}

Deno.test("planHostdevs() counts a running guest's hot-plugged hostdevs as held, with a warning", async () => {
  using demo = await demoHost();
  // win10 runs with the Aquantia NIC (group of 0000:44:00.0) passed through.
  const world = Deno.readTextFileSync(`${DEMO}world.xml`).replace(
    "</devices>\n    <test:runstate>5</test:runstate>",
    `  <hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='0x44' slot='0x00' function='0x0'/></source>
      </hostdev>
    </devices>
    <test:runstate>1</test:runstate>`,
  );
  Deno.writeTextFileSync(`${demo.dir}/world.xml`, world);
  using libvirt = openLibvirtPort(`test://${demo.dir}/world.xml`);
  // Redefining the running guest without it leaves the NIC in the live definition only: what a
  // hot-plug (virsh attach-device --live) leaves behind.
  libvirt.define(
    libvirt.getPersistentXml("win10").replace(
      /<hostdev mode='subsystem' type='pci'[\s\S]*?<\/hostdev>\s*/,
      "",
    ),
  );
  assertEquals(parseDomainXml(libvirt.getPersistentXml("win10")).hostdevs, []);
  assertEquals(parseDomainXml(libvirt.getLiveXml!("win10")).hostdevs.map((h) => h.address), [
    "0000:44:00.0",
  ]);

  const wantsNic = parseConfig(
    `version: 1\nvms:\n  gentoo:\n    devices:\n      - match: { vendor_device_id: "1d6a:07b1" }\n`,
    { file: "nic.yaml" },
  );
  const plan = planHostdevs({ config: wantsNic, host: demo.host, libvirt });
  const gentoo = plan.vms.find((vm) => vm.name === "gentoo")!;
  const refusal = gentoo.errors.find((e) =>
    e.code === "group-shared-with-other-vm" || e.code === "device-assigned-twice"
  );
  assert(refusal !== undefined, JSON.stringify(gentoo.errors));
  assertEquals([...(refusal.vms ?? [])].sort(), ["gentoo", "win10"]);
  assertEquals(gentoo.changed, false);
  const warning = plan.warnings.find((w) => w.code === "live-only-hostdev");
  assert(warning !== undefined, JSON.stringify(plan.warnings));
  assertEquals([warning.vm, warning.devices], ["win10", ["0000:44:00.0"]]);
  assertMatch(
    warning.message,
    /Running VM "win10" has "0000:44:00\.0" in its running guest but not in its persistent definition \(hot-plugged/,
  );

  // win10 itself asking for it: the persistent definition gets it, with no conflict.
  const own = parseConfig(
    `version: 1\nvms:\n  win10:\n    devices:\n      - match: { vendor_device_id: "1d6a:07b1" }\n`,
    { file: "own.yaml" },
  );
  const win10 = planHostdevs({ config: own, host: demo.host, libvirt }).vms[0]!;
  assertEquals(win10.errors, []);
  assertEquals(win10.add.map((a) => a.address), ["0000:44:00.0"]);
});

Deno.test("planHostdevs() counts the controller of another VM's <disk type='block'> as taken, on the live host", async () => {
  using demo = await demoHost();
  // win10's second disk is the whole Phison NVMe (0000:4a:00.0), by its /dev/disk/by-id name.
  const world = worldWith(
    demo.dir,
    `<disk type='block' device='disk'>
        <driver name='qemu' type='raw'/>
        <source dev='/dev/disk/by-id/nvme-Phison_E16_1234'/>
        <target dev='vdb' bus='virtio'/>
      </disk>`,
  );
  const sys = `${demo.dir}/sysfs`;
  Deno.mkdirSync(`${sys}/class/block`, { recursive: true });
  Deno.symlinkSync(
    "../../devices/pci0000:40/0000:40:01.1/0000:4a:00.0/nvme/nvme0/nvme0n1",
    `${sys}/class/block/nvme0n1`,
  );
  Deno.mkdirSync(`${demo.dir}/dev/disk/by-id`, { recursive: true });
  Deno.symlinkSync("../../nvme0n1", `${demo.dir}/dev/disk/by-id/nvme-Phison_E16_1234`);
  using libvirt = openLibvirtPort(`test://${world}`);
  assertEquals(parseDomainXml(libvirt.getPersistentXml("win10")).blockDisks, [
    "/dev/disk/by-id/nvme-Phison_E16_1234",
  ]);
  const wantsNvme = wants("gentoo", "1987:5016");
  const roots = { reader: denoFsReader(), sysRoot: sys, procRoot: `${sys}/proc` };

  // gentoo asks for the controller of win10's disk: refused, naming win10.
  const live = readHostFacts({ ...roots, devRoot: `${demo.dir}/dev` });
  const refused = planHostdevs({ config: wantsNvme, host: demo.host, libvirt, facts: live });
  assertMatch(
    assertTakenFromWin10(refused).message,
    /"win10" holds it in its definition now\): .*; "win10" uses disk \/dev\/disk\/by-id\/nvme-Phison_E16_1234 on 0000:4a:00\.0$/,
  );

  // win10 asking for it itself: its start would detach the controller and lose the disk.
  const own = planHostdevs({
    config: wants("win10", "1987:5016"),
    host: demo.host,
    libvirt,
    facts: live,
  });
  const win10 = own.vms[0]!;
  assertEquals(win10.errors.map((e) => [e.code, e.rule, e.devices]), [
    ["own-device", "1987:5016", ["0000:4a:00.0"]],
  ]);
  assertMatch(
    win10.errors[0]!.message,
    /VM "win10" uses disk \/dev\/disk\/by-id\/nvme-Phison_E16_1234 on 0000:4a:00\.0, and its rule "1987:5016" matches 0000:4a:00\.0: .*remove it from the VM first \(virsh edit win10\), or leave 0000:4a:00\.0 with the host$/,
  );
  assertEquals([win10.add, win10.changed], [[], false]);
  {
    // Only the running guest has the disk (virsh attach-disk --live): virsh edit cannot remove it.
    using port = openLibvirtPort(`test://${withWin10Running(demo.dir, world)}`);
    assertEquals(port.isActive("win10"), true);
    port.define(
      port.getPersistentXml("win10").replace(/<disk type='block'[\s\S]*?<\/disk>\s*/, ""),
    );
    const running = planHostdevs({
      config: wants("win10", "1987:5016"),
      host: demo.host,
      libvirt: port,
      facts: live,
    });
    assertMatch(
      running.vms[0]!.errors[0]!.message,
      /uses disk \/dev\/disk\/by-id\/nvme-Phison_E16_1234 \(attached to the running guest only\) on 0000:4a:00\.0.*\(virsh edit win10; what only the running guest uses: virsh detach-device win10 FILE --live\)/,
    );
  }

  // A /dev path that cannot be read is a warning naming the disk, not silently nothing.
  const denied = {
    ...roots.reader,
    readLink(path: string) {
      if (path.startsWith(`${demo.dir}/dev/`)) throw new Error(`EACCES: ${path}`);
      return roots.reader.readLink(path);
    },
  };
  const unreadable = readHostFacts({ ...roots, reader: denied, devRoot: `${demo.dir}/dev` });
  const warned = planHostdevs({ config: wantsNvme, host: demo.host, libvirt, facts: unreadable });
  assertMatch(
    warned.warnings.map((w) => `${w.code}: ${w.message}`).join("\n"),
    /unreadable-definition: Cannot tell which PCI controller holds "\/dev\/disk\/by-id\/nvme-Phison_E16_1234", a disk of VM "win10": EACCES/,
  );

  // A definition the strict reader refuses (a record damaged by hand) holds its disks all the same.
  Deno.writeTextFileSync(
    `${demo.dir}/damaged.xml`,
    Deno.readTextFileSync(world).replace(
      "<name>win10</name>",
      `<name>win10</name>
    <metadata><passthrough:hostdevs xmlns:passthrough="urn:passthrough:hostdevs:1">
      <passthrough:device address="not-an-address" vendor="1d6a" device="07b1" class="020000" rule="x"/>
    </passthrough:hostdevs></metadata>`,
    ),
  );
  {
    using damaged = openLibvirtPort(`test://${demo.dir}/damaged.xml`);
    assertTakenFromWin10(
      planHostdevs({ config: wantsNvme, host: demo.host, libvirt: damaged, facts: live }),
    );
  }

  // A captured tree has no /dev: which controller holds the disk is unknown there.
  const captured = readHostFacts(roots);
  const planned = planHostdevs({ config: wantsNvme, host: demo.host, libvirt, facts: captured });
  assertEquals(planned.vms[0]!.errors, []);
  assertEquals(planned.vms[0]!.add.map((a) => a.address), ["0000:4a:00.0"]);
});

Deno.test("planHostdevs() counts the controller of a VM's USB hostdev as that VM's, on the live host", async () => {
  using demo = await demoHost();
  // The demo's win10 takes a Logitech receiver, plugged here into the ASMedia USB controller
  // (0000:43:00.0).
  const world = worldWith(demo.dir, "");
  const sys = `${demo.dir}/sysfs`;
  const device = `${sys}/devices/pci0000:40/0000:40:03.1/0000:43:00.0/usb3/3-1`;
  Deno.mkdirSync(device, { recursive: true });
  const attributes = { idVendor: "046d", idProduct: "c52b", busnum: "3", devnum: "2" };
  for (const [name, value] of Object.entries(attributes)) {
    Deno.writeTextFileSync(`${device}/${name}`, `${value}\n`);
  }
  Deno.mkdirSync(`${sys}/bus/usb/devices`, { recursive: true });
  Deno.symlinkSync(
    "../../../devices/pci0000:40/0000:40:03.1/0000:43:00.0/usb3/3-1",
    `${sys}/bus/usb/devices/3-1`,
  );
  using libvirt = openLibvirtPort(`test://${world}`);
  assertEquals(parseDomainXml(libvirt.getPersistentXml("win10")).usbDevices, [
    { vendorId: "046d", productId: "c52b", bus: null, device: null },
  ]);
  const { live, captured } = factsOf(demo.dir);
  const on = { host: demo.host, libvirt, facts: live };

  // gentoo asks for the controller: refused, naming win10.
  const refused = planFor(on, "gentoo", "1b21:3242");
  assertMatch(
    assertTakenFromWin10(refused).message,
    /"win10" holds it in its definition now\): .*; "win10" uses USB device 046d:c52b on 0000:43:00\.0$/,
  );

  // win10 asking for it itself: its start would detach the controller and lose the receiver.
  const own = planFor(on, "win10", "1b21:3242");
  assertEquals(own.vms[0]!.errors.map((e) => [e.code, e.devices]), [
    ["own-device", ["0000:43:00.0"]],
  ]);
  assertMatch(
    own.vms[0]!.errors[0]!.message,
    /VM "win10" uses USB device 046d:c52b on 0000:43:00\.0/,
  );

  {
    // Running, win10's live definition has the bus and device libvirt found: the same receiver.
    using port = openLibvirtPort(`test://${withWin10Running(demo.dir, world)}`);
    const running: LibvirtPort = {
      ...port,
      getLiveXml: (name) =>
        port.getLiveXml!(name).replace("</source>", "<address bus='3' device='2'/></source>"),
    };
    const message = planHostdevs({
      config: wants("win10", "1b21:3242"),
      host: demo.host,
      libvirt: running,
      facts: live,
    }).vms[0]!.errors[0]!.message;
    assertMatch(message, /VM "win10" uses USB device 046d:c52b on 0000:43:00\.0, and/);
    assertEquals(/running guest/.test(message), false, message);
  }

  // A captured tree does not say what is plugged in.
  const planned = planFor({ ...on, facts: captured }, "gentoo", "1b21:3242");
  assertEquals(planned.vms[0]!.add.map((a) => a.address), ["0000:43:00.0"]);
});

Deno.test("planHostdevs() counts the NIC under a VM's bridge or macvtap interface as that VM's, on the live host", async () => {
  using demo = await demoHost();
  // win10 is on bridge br0, whose port is the Aquantia NIC (enp68s0, 0000:44:00.0).
  const world = worldWith(
    demo.dir,
    `<interface type='bridge'><mac address='52:54:00:aa:bb:cc'/><source bridge='br0'/>
        <model type='virtio'/></interface>`,
  );
  const sys = `${demo.dir}/sysfs`;
  linkBridgeOverAquantia(sys);
  using libvirt = openLibvirtPort(`test://${world}`);
  assertEquals(parseDomainXml(libvirt.getPersistentXml("win10")).netDevices, ["br0"]);
  const roots = { reader: denoFsReader(), sysRoot: sys, procRoot: `${sys}/proc` };
  const live = readHostFacts({ ...roots, devRoot: `${demo.dir}/dev` });

  const refused = planHostdevs({
    config: wants("gentoo", "1d6a:07b1"),
    host: demo.host,
    libvirt,
    facts: live,
  });
  assertMatch(
    assertTakenFromWin10(refused).message,
    /; "win10" uses network interface br0 on 0000:44:00\.0$/,
  );
  const own = planHostdevs({
    config: wants("win10", "1d6a:07b1"),
    host: demo.host,
    libvirt,
    facts: live,
  });
  assertEquals(own.vms[0]!.errors.map((e) => [e.code, e.devices]), [["own-device", [
    "0000:44:00.0",
  ]]]);
  {
    // A macvtap on the NIC itself (<interface type='direct'>) holds it the same way.
    const direct = worldWith(
      demo.dir,
      `<interface type='direct'><source dev='enp68s0' mode='bridge'/><model type='virtio'/></interface>`,
    );
    using port = openLibvirtPort(`test://${direct}`);
    const taken = planHostdevs({
      config: wants("gentoo", "1d6a:07b1"),
      host: demo.host,
      libvirt: port,
      facts: live,
    });
    assertMatch(
      assertTakenFromWin10(taken).message,
      /"win10" uses network interface enp68s0 on 0000:44:00\.0$/,
    );
  }
  {
    // Running on network "wan", which is gone (virsh net-destroy): the macvtap its live XML
    // shows still counts, as its definition's network's, not as the running guest's alone.
    const onWan = worldWith(
      demo.dir,
      `<interface type='network'><source network='wan'/><model type='virtio'/></interface>`,
    );
    using port = openLibvirtPort(`test://${withWin10Running(demo.dir, onWan)}`);
    const running: LibvirtPort = {
      ...port,
      getLiveXml: (name) =>
        port.getLiveXml!(name).replace(
          /<interface type='network'>[\s\S]*?<\/interface>/,
          `<interface type='direct'><source network='wan' portid='7d2c' dev='enp68s0' mode='vepa'/>
          </interface>`,
        ),
    };
    const taken = planHostdevs({
      config: wants("gentoo", "1d6a:07b1"),
      host: demo.host,
      libvirt: running,
      facts: live,
    });
    assertMatch(
      assertTakenFromWin10(taken).message,
      /"win10" uses network wan \(interface enp68s0\) on 0000:44:00\.0$/,
    );
  }
  // A captured tree has no interfaces to follow.
  const captured = planHostdevs({
    config: wants("gentoo", "1d6a:07b1"),
    host: demo.host,
    libvirt,
    facts: readHostFacts(roots),
  });
  assertEquals(captured.vms[0]!.add.map((a) => a.address), ["0000:44:00.0"]);
});

Deno.test("planHostdevs() counts the controller under a VM's evdev input or serial device as that VM's, on the live host", async () => {
  using demo = await demoHost();
  // win10 reads a USB keyboard through evdev and a USB serial adapter, both plugged into the
  // ASMedia USB controller (0000:43:00.0).
  const keyboard = "/dev/input/by-id/usb-Keychron_K2-event-kbd";
  const adapter = "/dev/serial/by-id/usb-FTDI_FT232R_A1B2-if00-port0";
  const world = worldWith(
    demo.dir,
    `<input type='evdev'><source dev='${keyboard}' grab='all' repeat='on'/></input>
    <serial type='dev'><source path='${adapter}'/><target port='0'/></serial>`,
  );
  const sys = `${demo.dir}/sysfs`;
  const usb = "../../devices/pci0000:40/0000:40:03.1/0000:43:00.0/usb3";
  Deno.mkdirSync(`${sys}/class/input`, { recursive: true });
  Deno.mkdirSync(`${sys}/class/tty`, { recursive: true });
  Deno.symlinkSync(
    `${usb}/3-2/3-2:1.0/0003:3434:0281.0001/input/input9/event9`,
    `${sys}/class/input/event9`,
  );
  Deno.symlinkSync(`${usb}/3-3/3-3:1.0/ttyUSB0/tty/ttyUSB0`, `${sys}/class/tty/ttyUSB0`);
  Deno.mkdirSync(`${demo.dir}/dev/input/by-id`, { recursive: true });
  Deno.mkdirSync(`${demo.dir}/dev/serial/by-id`, { recursive: true });
  Deno.symlinkSync("../event9", `${demo.dir}${keyboard}`);
  Deno.symlinkSync("../../ttyUSB0", `${demo.dir}${adapter}`);
  using libvirt = openLibvirtPort(`test://${world}`);
  assertEquals(parseDomainXml(libvirt.getPersistentXml("win10")).charDevices, [
    keyboard,
    adapter,
  ]);
  const { live, captured } = factsOf(demo.dir);
  const on = { host: demo.host, libvirt, facts: live };

  assertMatch(
    assertTakenFromWin10(planFor(on, "gentoo", "1b21:3242")).message,
    new RegExp(
      `; "win10" uses character device ${keyboard}, character device ${adapter} on ` +
        `0000:43:00\\.0$`,
    ),
  );
  // win10 asking for the controller itself: its start would pull its own keyboard away.
  const own = planFor(on, "win10", "1b21:3242");
  assertEquals(own.vms[0]!.errors.map((e) => [e.code, e.devices]), [["own-device", [
    "0000:43:00.0",
  ]]]);
  assertMatch(own.vms[0]!.errors[0]!.message, /VM "win10" uses character device \/dev\/input\//);

  // A /dev path that cannot be read is a warning naming the device, not silently nothing.
  const reader = denoFsReader();
  const denied = {
    ...reader,
    readLink(path: string) {
      if (path.startsWith(`${demo.dir}/dev/input/`)) throw new Error(`EACCES: ${path}`);
      return reader.readLink(path);
    },
  };
  const roots = {
    reader: denied,
    sysRoot: sys,
    procRoot: `${sys}/proc`,
    devRoot: `${demo.dir}/dev`,
  };
  const warned = planFor({ ...on, facts: readHostFacts(roots) }, "gentoo", "1b21:3242");
  assertMatch(
    warned.warnings.map((w) => `${w.code}: ${w.message}`).join("\n"),
    /unreadable-definition: Cannot tell which PCI controller holds "\/dev\/input\/by-id\/usb-Keychron_K2-event-kbd", a character device of VM "win10": EACCES/,
  );

  // A captured tree has no /dev to follow.
  const planned = planFor({ ...on, facts: captured }, "gentoo", "1b21:3242");
  assertEquals(planned.vms[0]!.add.map((a) => a.address), ["0000:43:00.0"]);
});

Deno.test("planHostdevs() counts the controller under a VM's SCSI hostdev as that VM's, on the live host", async () => {
  using demo = await demoHost();
  // win10 takes a USB disk's SCSI device (usb-storage puts scsi_host4 under the ASMedia USB
  // controller, 0000:43:00.0).
  const world = worldWith(
    demo.dir,
    `<hostdev mode='subsystem' type='scsi'><source><adapter name='scsi_host4'/>
        <address bus='0' target='0' unit='0'/></source></hostdev>`,
  );
  const sys = `${demo.dir}/sysfs`;
  Deno.mkdirSync(`${sys}/class/scsi_host`, { recursive: true });
  Deno.symlinkSync(
    "../../devices/pci0000:40/0000:40:03.1/0000:43:00.0/usb3/3-4/3-4:1.0/host4/scsi_host/host4",
    `${sys}/class/scsi_host/host4`,
  );
  using libvirt = openLibvirtPort(`test://${world}`);
  assertEquals(parseDomainXml(libvirt.getPersistentXml("win10")).scsiHosts, ["scsi_host4"]);
  const { live, captured } = factsOf(demo.dir);
  const plan = (vm: string, facts = live) =>
    planFor({ host: demo.host, libvirt, facts }, vm, "1b21:3242");

  assertMatch(
    assertTakenFromWin10(plan("gentoo")).message,
    /; "win10" uses SCSI adapter scsi_host4 on 0000:43:00\.0$/,
  );
  assertEquals(plan("win10").vms[0]!.errors.map((e) => [e.code, e.devices]), [["own-device", [
    "0000:43:00.0",
  ]]]);
  // A captured tree has no adapters to follow.
  assertEquals(plan("gentoo", captured).vms[0]!.add.map((a) => a.address), ["0000:43:00.0"]);
});

Deno.test("planHostdevs() counts the parent GPU of a VM's mediated device as that VM's, on the live host", async () => {
  using demo = await demoHost();
  // win10 has a vGPU carved from the RX 580 (0000:4c:00.0).
  const uuid = "c2177883-f1bb-47f0-914d-32a22e3a8804";
  const world = worldWith(
    demo.dir,
    `<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='${uuid}'/>
        </source></hostdev>`,
  );
  const sys = `${demo.dir}/sysfs`;
  Deno.mkdirSync(`${sys}/bus/mdev/devices`, { recursive: true });
  Deno.symlinkSync(
    `../../../devices/pci0000:40/0000:40:03.1/0000:4c:00.0/${uuid}`,
    `${sys}/bus/mdev/devices/${uuid}`,
  );
  using libvirt = openLibvirtPort(`test://${world}`);
  assertEquals(parseDomainXml(libvirt.getPersistentXml("win10")).mdevs, [uuid]);
  const { live, captured } = factsOf(demo.dir);
  const plan = (vm: string, facts = live) =>
    planFor({ host: demo.host, libvirt, facts }, vm, "1002:67df");

  assertMatch(
    assertTakenFromWin10(plan("gentoo")).message,
    new RegExp(`; "win10" uses mediated device ${uuid} on 0000:4c:00\\.0$`),
  );
  assertEquals(plan("win10").vms[0]!.errors.map((e) => [e.code, e.devices]), [["own-device", [
    "0000:4c:00.0",
  ]]]);
  // A captured tree has no mediated devices to follow.
  assertEquals(plan("gentoo", captured).vms[0]!.add.map((a) => a.address), [
    "0000:4c:00.0",
    "0000:4c:00.1",
  ]);
});

Deno.test("a plan limited to some VMs never counts an orphan's devices as released", () => {
  // win10 holds the GPU as passthrough gave it, and has left the config; gentoo's rule takes it.
  const win10 = domainXml("win10", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01");
  const held =
    vmOf(planWorld({ config: GPU_CONFIG, host: HOST, world: dataWorld({ win10 }) }), "win10")
      .desiredXml;
  const gentoo = domainXml("gentoo", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e02");
  const cfg = config(
    '  gentoo:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n',
  );
  const world = dataWorld({ win10: held, gentoo });
  // Planned whole, the orphan releases the GPU and gentoo takes it in the same plan.
  const whole = planWorld({ config: cfg, host: HOST, world });
  assertEquals(vmOf(whole, "win10").remove, ["0000:01:00.0", "0000:01:00.1"]);
  assertEquals(vmOf(whole, "gentoo").add.map((a) => a.address), ["0000:01:00.0", "0000:01:00.1"]);
  // Limited to gentoo, win10 is not planned, so it keeps the GPU: gentoo is refused.
  const limited = planWorld({ config: cfg, host: HOST, world, vms: ["gentoo"] });
  assertEquals(limited.vms.map((v) => v.name), ["gentoo"]);
  assertEquals(vmOf(limited, "gentoo").errors.map((e) => e.code), ["device-assigned-twice"]);
  assertEquals(vmOf(limited, "gentoo").add, []);
});
