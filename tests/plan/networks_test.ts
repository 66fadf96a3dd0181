/**
 * Hostdev networks (`<forward mode='hostdev'>`) in the plan: libvirt hands each VF of the pool to
 * a guest's `<interface type='network'>` at its start, so a rule must not take a pool VF (one
 * device in two guests) nor the pool's PF (its VFs die with the PF's host driver). On the demo's
 * TRX40 host and world, read through the real libvirt test driver; the Aquantia NIC at
 * 0000:44:00.0 (`enp68s0` on the built live tree) stands in for a pool entry and for a PF.
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import {
  buildHostTree,
  type HostDescription,
  loadHostDescription,
} from "../../lib/testing/host_tree.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { readHostFacts } from "../../lib/host/preflight.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import { AQUANTIA, linkBridgeOverAquantia } from "../helpers/demo_net.ts";
import { loadFixtureHost, tempHostTree } from "../helpers/hosts.ts";
import { sriovNic } from "../helpers/sriov.ts";
import { guardCheck, runGuard } from "../../lib/guard/run.ts";
import { guardPolicies } from "../../lib/guard/policy.ts";
import { recordPolicies } from "../../lib/guard/state.ts";
import type { GuardPolicy } from "../../lib/config/config.ts";

const DEMO = new URL("../../demo/", import.meta.url).pathname;
const NIC = AQUANTIA;

/** The demo world with `networks` (XML) added, in a temporary directory with the built tree. */
async function demoWith(networks: string) {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-networks-" });
  buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
  const host = await discoverHost({ root: `${dir}/sysfs` });
  const world = Deno.readTextFileSync(`${DEMO}world.xml`).replace("</node>", `${networks}</node>`);
  Deno.writeTextFileSync(`${dir}/world.xml`, world);
  const libvirt = openLibvirtPort(`test://${dir}/world.xml`);
  return {
    dir,
    host,
    libvirt,
    [Symbol.dispose]() {
      libvirt.close();
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

const GENTOO_WANTS_NIC = parseConfig(
  `version: 1\nvms:\n  gentoo:\n    devices:\n      - match: { vendor_device_id: "1d6a:07b1" }\n`,
  { file: "nic.yaml" },
);

function network(name: string, forward: string): string {
  return `<network><name>${name}</name><forward mode='hostdev' managed='yes'>${forward}</forward></network>`;
}

Deno.test("plan refuses a rule taking a VF that a hostdev network hands out", async () => {
  using demo = await demoWith(
    network(
      "sriov",
      "<address type='pci' domain='0x0000' bus='0x44' slot='0x00' function='0x0'/>",
    ) +
      "<network><name>nat</name><forward mode='nat'/><ip address='192.168.122.1' netmask='255.255.255.0'/></network>",
  );
  const plan = planHostdevs({ config: GENTOO_WANTS_NIC, host: demo.host, libvirt: demo.libvirt });
  const gentoo = plan.vms[0]!;
  const group = demo.host.devices.find((d) => d.address === NIC)?.iommuGroup;
  assertEquals(typeof group, "number");
  assertEquals(gentoo.errors.map((e) => [e.code, e.devices, e.group]), [[
    "hostdev-network",
    [NIC],
    group,
  ]]);
  assertMatch(
    gentoo.errors[0]!.message,
    /VM "gentoo" would take 0000:44:00\.0 \(rule "1d6a:07b1"\), a VF that hostdev network "sriov" hands to guests at their start: .*virsh net-edit sriov.*then, with the guests that use it shut down, virsh net-destroy sriov; virsh net-start sriov\)$/,
  );
  assertEquals([gentoo.add, gentoo.changed], [[], false]);
});

Deno.test("plan refuses a rule taking the PF of a hostdev network, on the live host", async () => {
  using demo = await demoWith(network("sriov", "<pf dev='enp68s0'/>"));
  const sys = `${demo.dir}/sysfs`;
  Deno.mkdirSync(`${sys}/class/net`, { recursive: true });
  Deno.symlinkSync(
    `../../devices/pci0000:40/0000:40:01.3/${NIC}/net/enp68s0`,
    `${sys}/class/net/enp68s0`,
  );
  const roots = { reader: denoFsReader(), sysRoot: sys, procRoot: `${sys}/proc` };
  const live = readHostFacts({ ...roots, devRoot: `${demo.dir}/dev` });
  const plan = planHostdevs({
    config: GENTOO_WANTS_NIC,
    host: demo.host,
    libvirt: demo.libvirt,
    facts: live,
  });
  assertEquals(plan.vms[0]!.errors.map((e) => e.code), ["hostdev-network"]);
  assertMatch(plan.vms[0]!.errors[0]!.message, /the physical function of hostdev network "sriov"/);
  // A captured tree cannot say which function enp68s0 is.
  const captured = planHostdevs({
    config: GENTOO_WANTS_NIC,
    host: demo.host,
    libvirt: demo.libvirt,
    facts: readHostFacts(roots),
  });
  assertEquals(captured.vms[0]!.add.map((a) => a.address), [NIC]);
});

Deno.test("plan warns when the networks cannot be listed, and plans on", async () => {
  using demo = await demoWith("");
  const failing: LibvirtPort = {
    ...demo.libvirt,
    listNetworks() {
      throw new Error("this function is not supported by the connection driver");
    },
  };
  const plan = planHostdevs({ config: GENTOO_WANTS_NIC, host: demo.host, libvirt: failing });
  assertEquals(
    plan.warnings.filter((w) => w.code === "unreadable-definition").map((w) => w.message),
    [
      `Cannot list the networks of "${demo.libvirt.uri}": this function is not supported by the connection driver: hostdev networks' pools of VFs are not checked against the plan, and the NICs under bridged networks are not counted as their guests'`,
    ],
  );
  assertEquals(plan.vms[0]!.add.map((a) => a.address), [NIC]);
});

Deno.test("plan warns about a network it cannot read or a pool entry it cannot read, and checks the rest", async () => {
  using demo = await demoWith(
    network("sriov", "<address type='pci' domain='0x0000' bus='0x44' slot='0x00' function='0x0'/>"),
  );
  const partly: LibvirtPort = {
    ...demo.libvirt,
    listNetworks() {
      return [
        ...demo.libvirt.listNetworks!(),
        { name: "gone", xml: null, error: "internal error: boom" },
        {
          name: "odd",
          xml:
            "<network><name>odd</name><forward mode='hostdev'><address type='usb' bus='1' device='2'/></forward></network>",
        },
      ];
    },
  };
  const plan = planHostdevs({ config: GENTOO_WANTS_NIC, host: demo.host, libvirt: partly });
  assertEquals(
    plan.warnings.map((w) => [w.code, w.message]).filter(([code]) =>
      code === "unreadable-definition" || code === "hostdev-network"
    ),
    [
      [
        "unreadable-definition",
        `Cannot read network "gone": internal error: boom: if it is a hostdev network, its pool of VFs is not checked against the plan; if it is bridged to host interfaces, the NICs under them are not counted as its guests'`,
      ],
      [
        "hostdev-network",
        `Hostdev network "odd" lists 1 pool entry that cannot be read as PCI addresses: a rule may take a VF the network also hands out (virsh net-dumpxml odd)`,
      ],
    ],
  );
  assertEquals(plan.vms[0]!.errors.map((e) => e.code), ["hostdev-network"]);
});

Deno.test("plan counts the NIC under a bridged or macvtap network as the VMs' on it, on the live host", async () => {
  // win10's interface is on network "lan"; enp68s0 (the Aquantia NIC) is br0's port.
  const lan = "<network><name>lan</name><forward mode='bridge'/><bridge name='br0'/></network>";
  const direct = `<network><name>direct</name><forward mode='vepa'><interface dev='enp68s0'/>
    </forward></network>`;
  const nat = `<network><name>nat</name><forward mode='nat'/><bridge name='virbr9'/>
    <ip address='192.168.150.1' netmask='255.255.255.0'/></network>`;
  using demo = await demoWith(lan + direct + nat);
  const sys = `${demo.dir}/sysfs`;
  linkBridgeOverAquantia(sys);
  const roots = { reader: denoFsReader(), sysRoot: sys, procRoot: `${sys}/proc` };
  const live = readHostFacts({ ...roots, devRoot: `${demo.dir}/dev` });
  const onNetwork = (name: string) => {
    const xml = demo.libvirt.getPersistentXml("win10").replace(
      "</devices>",
      `<interface type='network'><source network='${name}'/><model type='virtio'/></interface>
      </devices>`,
    );
    demo.libvirt.define(xml);
  };
  const plan = (config = GENTOO_WANTS_NIC, facts = live) =>
    planHostdevs({ config, host: demo.host, libvirt: demo.libvirt, facts });

  onNetwork("lan");
  const taken = plan().vms[0]!.errors.find((e) => e.code === "device-assigned-twice");
  assertMatch(
    taken?.message ?? "",
    /; "win10" uses network lan \(interface br0\) on 0000:44:00\.0$/,
  );
  const own = plan(parseConfig(
    `version: 1\nvms:\n  win10:\n    devices:\n      - match: { vendor_device_id: "1d6a:07b1" }\n`,
    { file: "own.yaml" },
  )).vms[0]!;
  assertEquals(own.errors.map((e) => [e.code, e.devices]), [["own-device", [NIC]]]);
  // A captured tree has no interfaces to follow.
  assertEquals(plan(GENTOO_WANTS_NIC, readHostFacts(roots)).vms[0]!.add.map((a) => a.address), [
    NIC,
  ]);

  // A macvtap network's pool counts the same way; a NAT network puts guests on no host NIC.
  demo.libvirt.define(demo.libvirt.getPersistentXml("win10").replace("'lan'", "'direct'"));
  assertMatch(
    plan().vms[0]!.errors.map((e) => e.message).join("\n"),
    /"win10" uses network direct \(interface enp68s0\) on 0000:44:00\.0/,
  );
  demo.libvirt.define(demo.libvirt.getPersistentXml("win10").replace("'direct'", "'nat'"));
  assertEquals(plan().vms[0]!.add.map((a) => a.address), [NIC]);
});

/** A PCI `<address>` in a hostdev network's pool, as libvirt writes one. */
function poolAddress(address: string): string {
  const [domain, bus, slotFn] = address.split(":");
  const [slot, fn] = slotFn!.split(".");
  return `<address type='pci' domain='0x${domain}' bus='0x${bus}' slot='0x${slot}' function='0x${fn}'/>`;
}

/** VM "router", shut off, with an interface on network "sriov". */
const ROUTER = `<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
  <name>router</name><uuid>6695eb01-f6a4-8304-79aa-97f2502e1940</uuid>
  <memory unit='KiB'>1048576</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>
  <devices><interface type='network'><mac address='52:54:00:00:00:01'/>
  <source network='sriov'/></interface></devices><test:runstate>5</test:runstate></domain>`;

/**
 * The Z690 host with an igb PF at 40:00.0 and 4 VFs (and `hostUse`), and "router" on hostdev
 * network "sriov" whose pool lists `pool`: what `plan` refuses of router, and what the start
 * guard refuses at its start (reading the running network's status).
 */
async function routerOnPool(
  pool: string[],
  hostUse: HostDescription["host_use"] = [],
  { guard, guardHook }: { guard?: GuardPolicy; guardHook?: boolean } = {},
): Promise<
  { errors: [string, string[] | undefined][]; messages: string[]; guard: unknown[]; code: number }
> {
  const z690 = loadFixtureHost("z690-asus-adl");
  z690.devices.push(...sriovNic("40", 4));
  z690.host_use = hostUse;
  await using tree = await tempHostTree(z690);
  const forward = `<forward mode='hostdev' managed='yes'>${
    pool.map(poolAddress).join("")
  }</forward>`;
  Deno.writeTextFileSync(
    `${tree.dir}/world.xml`,
    `<node>${ROUTER}<network><name>sriov</name>${forward}</network></node>`,
  );
  const host = await discoverHost({ root: tree.dir, lspci: null });
  const libvirt = openLibvirtPort(`test://${tree.dir}/world.xml`);
  const policy = guard === undefined ? "" : `    guard: ${guard}\n`;
  const config = parseConfig(`version: 1\nvms:\n  router:\n${policy}    devices: []\n`, {
    file: "router.yaml",
  });
  let vm;
  try {
    vm = planHostdevs({ config, host, libvirt, ...(guardHook === undefined ? {} : { guardHook }) })
      .vms[0]!;
  } finally {
    libvirt.close();
  }
  Deno.mkdirSync(`${tree.dir}/network`);
  Deno.writeTextFileSync(
    `${tree.dir}/network/sriov.xml`,
    `<networkstatus><network><name>sriov</name>${forward}</network></networkstatus>`,
  );
  const refusals = guardCheck({
    vm: "router",
    xml: ROUTER,
    reader: denoFsReader(),
    root: tree.dir,
    live: false,
    networkStatusDir: `${tree.dir}/network`,
  });
  // The hook's verdict at its start, under the policies an apply of this config records.
  const stateDir = `${tree.dir}/state`;
  Deno.mkdirSync(stateDir, { mode: 0o700 });
  recordPolicies(stateDir, guardPolicies(config));
  const { code } = await runGuard({
    vm: "router",
    operation: "prepare",
    subOperation: "begin",
    xml: ROUTER,
    reader: denoFsReader(),
    root: tree.dir,
    live: false,
    stateDir,
    networkStatusDir: `${tree.dir}/network`,
  });
  return {
    errors: vm.errors.map((e) => [e.code, e.devices]),
    messages: vm.errors.map((e) => e.message),
    guard: refusals.map((r) => [r.kind, r.address, r.network]),
    code,
  };
}

Deno.test("plan refuses a VM on a hostdev network whose pool lists a VF the host uses, as the start guard does", async () => {
  // The host's default route runs over VF 40:10.2.
  const used = [
    { address: "0000:40:10.2", reason: "default-route", detail: "default route via enp64s0v1" },
  ] as const satisfies HostDescription["host_use"];
  const refused = await routerOnPool(["0000:40:10.0", "0000:40:10.2"], used, { guardHook: true });
  assertEquals(refused.errors, [["host-needed", ["0000:40:10.2"]]]);
  assertEquals(refused.messages, [
    `Hostdev network "sriov", which an interface of "router" is on, lists 0000:40:10.2, which holds 8086:10ca class 020000, which the host needs now (default-route: default route via enp64s0v1): libvirt may hand any free entry of the pool to "router" at its start, and the start guard refuses every start while the pool lists it: leave this one out of it (virsh net-edit sriov: a <pf> pool becomes a list of <address> entries; then, with the guests that use it shut down, virsh net-destroy sriov; virsh net-start sriov), then plan again`,
  ]);
  assertEquals(refused.guard, [["host-needs", "0000:40:10.2", "sriov"]]);
  // With the VF out of the pool, neither refuses.
  const spared = await routerOnPool(["0000:40:10.0"], used);
  assertEquals([spared.errors, spared.guard], [[], []]);
});

Deno.test("plan refuses a VM on a hostdev network whose pool lists an address holding nothing, or a PF, as the start guard does", async () => {
  const refused = await routerOnPool(["0000:40:10.0", "0000:77:10.1", "0000:40:00.0"]);
  assertEquals(refused.errors, [
    ["hostdev-network", ["0000:40:00.0"]],
    ["hostdev-network", ["0000:77:10.1"]],
  ]);
  assertMatch(
    refused.messages[0]!,
    /^Hostdev network "sriov", which an interface of "router" is on, lists 0000:40:00\.0, which holds 8086:10c9 class 020000, not an SR-IOV virtual function \(libvirt takes only VFs into a pool: the buses moved under it\): libvirt may hand /,
  );
  assertMatch(refused.messages[1]!, /lists 0000:77:10\.1, which holds no device: libvirt may /);
  assertEquals(refused.guard, [
    ["replaced", "0000:40:00.0", "sriov"],
    ["missing", "0000:77:10.1", "sriov"],
  ]);
});

Deno.test("plan says what the start guard does with a pool entry, by the VM's policy and the hook, as the hook does", async () => {
  const used = [
    { address: "0000:40:10.2", reason: "default-route", detail: "default route via enp64s0v1" },
  ] as const satisfies HostDescription["host_use"];
  // An entry that holds nothing, one that is no VF, and a VF the host needs.
  const entries = [[["0000:77:10.1"], []], [["0000:40:00.0"], []], [
    ["0000:40:10.2"],
    used,
  ]] as const;
  const clause = (message: string) => message.split(" at its start, and ")[1]!.split(": leave")[0];
  for (const [pool, hostUse] of entries) {
    for (const guard of ["enforce", "warn", "off"] as const) {
      const found = await routerOnPool([...pool], [...hostUse], { guard, guardHook: true });
      const refused = found.code === 1;
      const expected = refused
        ? "the start guard refuses every start while the pool lists it"
        : `its "guard: ${guard}" has the start guard ${guard === "warn" ? "warn and " : ""}let it`;
      assertEquals([pool[0], guard, found.messages.map(clause)], [pool[0], guard, [expected]]);
    }
    const none = await routerOnPool([...pool], [...hostUse], { guardHook: false });
    assertEquals(none.messages.map(clause), ["no start guard is installed to refuse it"]);
    const unknown = await routerOnPool([...pool], [...hostUse]);
    assertEquals(unknown.messages.map(clause), [
      "the start guard refuses every start while the pool lists it; without the guard, nothing stops it",
    ]);
  }
});

Deno.test("plan --vm: another VM on a hostdev network whose pool lists a VF the host uses is warned of, with no claim its plan edits the network", async () => {
  const z690 = loadFixtureHost("z690-asus-adl");
  z690.devices.push(...sriovNic("40", 4));
  z690.host_use = [
    { address: "0000:40:10.2", reason: "default-route", detail: "default route via enp64s0v1" },
  ];
  await using tree = await tempHostTree(z690);
  const forward = `<forward mode='hostdev' managed='yes'>${
    ["0000:40:10.0", "0000:40:10.2"].map(poolAddress).join("")
  }</forward>`;
  const other = ROUTER.replace("<name>router</name>", "<name>other</name>")
    .replace("6695eb01-f6a4-8304-79aa-97f2502e1940", "7695eb01-f6a4-8304-79aa-97f2502e1941")
    .replace("52:54:00:00:00:01", "52:54:00:00:00:02");
  Deno.writeTextFileSync(
    `${tree.dir}/world.xml`,
    `<node>${ROUTER}${other}<network><name>sriov</name>${forward}</network></node>`,
  );
  const host = await discoverHost({ root: tree.dir, lspci: null });
  using libvirt = openLibvirtPort(`test://${tree.dir}/world.xml`);
  const config = parseConfig(
    "version: 1\nvms:\n  router:\n    devices: []\n  other:\n    devices: []\n",
    { file: "router.yaml" },
  );
  const plan = planHostdevs({ config, host, libvirt, vms: ["router"] });
  assertEquals(plan.vms[0]!.errors.map((e) => [e.code, e.devices]), [
    ["host-needed", ["0000:40:10.2"]],
  ]);
  const warned = plan.warnings.filter((w) => w.vm === "other");
  assertEquals(warned.map((w) => [w.code, w.devices]), [["host-needed", ["0000:40:10.2"]]]);
  // No plan of "other" takes the VF out of the pool: the user does, as the message says.
  assertMatch(
    warned[0]!.message,
    /^Hostdev network "sriov", which an interface of "other" is on, lists 0000:40:10\.2, .*, then plan again; "other" is left out of this plan \(passthrough plan --vm other plans it\)$/,
  );
});

Deno.test("plan refuses a VM on a hostdev network whose pool lists a VF under a macvtap interface of it or another VM, as the start guard does", async () => {
  const z690 = loadFixtureHost("z690-asus-adl");
  const nic = sriovNic("40", 4);
  nic[3]!.net = { name: "enp64s0v1", address: "02:00:00:00:00:01" }; // VF 40:10.2
  z690.devices.push(...nic);
  z690.host_use = [];
  await using tree = await tempHostTree(z690);
  const dir = tree.dir;
  const vf = Deno.realPathSync(`${dir}/bus/pci/devices/0000:40:10.2`);
  Deno.mkdirSync(`${dir}/class/net`, { recursive: true });
  Deno.symlinkSync(
    `../..${vf.slice(Deno.realPathSync(dir).length)}/net/enp64s0v1`,
    `${dir}/class/net/enp64s0v1`,
  );
  const forward = `<forward mode='hostdev' managed='yes'>${
    ["0000:40:10.0", "0000:40:10.2"].map(poolAddress).join("")
  }</forward>`;
  Deno.mkdirSync(`${dir}/network`);
  Deno.writeTextFileSync(
    `${dir}/network/sriov.xml`,
    `<networkstatus><network><name>sriov</name>${forward}</network></networkstatus>`,
  );
  Deno.mkdirSync(`${dir}/qemu`);
  const macvtap = `<interface type='direct'><mac address='52:54:00:00:00:09'/>
    <source dev='enp64s0v1' mode='bridge'/></interface>`;
  // The same VF's netdev under a macvtap interface of router itself, or of VM "other".
  const withMacvtap = ROUTER.replace("</devices>", `${macvtap}</devices>`);
  const other = `<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>other</name><uuid>7695eb01-f6a4-8304-79aa-97f2502e1941</uuid>
    <memory unit='KiB'>1048576</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>
    <devices>${macvtap}</devices></domain>`;
  const facts = readHostFacts({
    reader: denoFsReader(),
    sysRoot: dir,
    procRoot: `${dir}/proc`,
    devRoot: `${dir}/dev`,
  });
  const host = await discoverHost({ root: dir, lspci: null });
  const config = parseConfig("version: 1\nvms:\n  router:\n    devices: []\n", {
    file: "router.yaml",
  });
  const planOf = (world: string) => {
    Deno.writeTextFileSync(
      `${dir}/world.xml`,
      `<node>${world}<network><name>sriov</name>${forward}</network></node>`,
    );
    using libvirt = openLibvirtPort(`test://${dir}/world.xml`);
    return planHostdevs({ config, host, libvirt, facts }).vms[0]!.errors;
  };
  const guard = (xml: string) =>
    guardCheck({
      vm: "router",
      xml,
      reader: denoFsReader(),
      root: dir,
      live: false,
      networkStatusDir: `${dir}/network`,
      qemuStatusDir: `${dir}/qemu`,
      devRoot: `${dir}/dev`,
    }).map((r) => [r.kind, r.address, r.network]);
  const tail =
    `: libvirt may hand any free entry of the pool to "router" at its start, and the start guard refuses every start while the pool lists it; without the guard, nothing stops it: leave this one out of it (virsh net-edit sriov: a <pf> pool becomes a list of <address> entries; then, with the guests that use it shut down, virsh net-destroy sriov; virsh net-start sriov), then plan again`;
  const own = planOf(withMacvtap);
  assertEquals(own.map((e) => [e.code, e.devices, e.message]), [[
    "hostdev-network",
    ["0000:40:10.2"],
    `Hostdev network "sriov", which an interface of "router" is on, lists 0000:40:10.2, which holds 8086:10ca class 020000, under network interface enp64s0v1 of "router"${tail}`,
  ]]);
  assertEquals(guard(withMacvtap), [["host-needs", "0000:40:10.2", "sriov"]]);
  // Another VM's: plan counts its definition; the guard, once it runs.
  const elsewhere = planOf(ROUTER + other);
  assertEquals(elsewhere.map((e) => [e.code, e.devices]), [["hostdev-network", ["0000:40:10.2"]]]);
  assertMatch(elsewhere[0]!.message, /, under network interface enp64s0v1 of "other": libvirt /);
  Deno.writeTextFileSync(
    `${dir}/qemu/other.xml`,
    `<domstatus state='running'>${other.replace("type='test'", "type='kvm'")}</domstatus>`,
  );
  assertEquals(guard(ROUTER), [["host-needs", "0000:40:10.2", "sriov"]]);
  // With no macvtap on a pool VF, neither refuses.
  Deno.removeSync(`${dir}/qemu/other.xml`);
  assertEquals([planOf(ROUTER), guard(ROUTER)], [[], []]);
});
