/**
 * The host's own use of its devices on a running host (`readHostUse` with `live: true`): the NIC
 * of a default route, IPv4 or IPv6, or of a network the host routes to, also when the route goes
 * through a bridge, a bond or a VLAN (libvirt hosts usually put their uplink in a bridge). Built sysfs trees with a `class/net` and a
 * `/proc` of their own; the links are laid out as the kernel lays them out (`lower_*` in an upper
 * device's directory, as a bridge made here with `ip link` shows).
 */

import { ROUTE_HEADER } from "../helpers/hosts.ts";
import { assertEquals } from "../helpers/assert.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
import { pciDevicesUnder, readHostUse } from "../../lib/host/sysfs_device.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import type { PciDevice } from "../../lib/host/types.ts";
import { nicDescription as dev } from "../helpers/devices.ts";

const UPLINK = "0000:06:00.0";
const OTHER = "0000:07:00.0";

/**
 * A tree with two NICs (`enp6s0` at {@link UPLINK}, `enp7s0`), `br0` over `enp6s0`, `bond0` over
 * both and `vlan5` over `bond0`; `routes` as `/proc/net/route` and `ipv6` as `ipv6_route`.
 * `extra` adds to the tree (`dir` is its root).
 */
async function hostUse(routes: string[], ipv6: string[] = [], extra = (_dir: string) => {}) {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-host-use-" });
  try {
    buildHostTree({ devices: [dev(UPLINK, { group: 1 }), dev(OTHER, { group: 2 })] }, dir);
    const net = (name: string, target: string) => {
      Deno.mkdirSync(`${dir}/class/net`, { recursive: true });
      Deno.symlinkSync(target, `${dir}/class/net/${name}`);
    };
    const virtual = (name: string, lower: string[]) => {
      Deno.mkdirSync(`${dir}/devices/virtual/net/${name}`, { recursive: true });
      for (const l of lower) {
        Deno.symlinkSync(`../${l}`, `${dir}/devices/virtual/net/${name}/lower_${l}`);
      }
      net(name, `../../devices/virtual/net/${name}`);
    };
    net("enp6s0", `../../devices/pci0000:00/0000:00:01.2/${UPLINK}/net/enp6s0`);
    net("enp7s0", `../../devices/pci0000:00/0000:00:01.3/${OTHER}/net/enp7s0`);
    virtual("br0", ["enp6s0"]);
    virtual("bond0", ["enp6s0", "enp7s0"]);
    virtual("vlan5", ["bond0"]);
    virtual("lo", []);
    extra(dir);
    Deno.mkdirSync(`${dir}/proc/net`, { recursive: true });
    Deno.mkdirSync(`${dir}/proc/self`, { recursive: true });
    Deno.writeTextFileSync(`${dir}/proc/self/mountinfo`, "");
    Deno.writeTextFileSync(
      `${dir}/proc/net/route`,
      [ROUTE_HEADER.trimEnd(), ...routes]
        .join("\n"),
    );
    Deno.writeTextFileSync(`${dir}/proc/net/ipv6_route`, ipv6.join("\n"));
    const devices = [UPLINK, OTHER].map((address) => ({ address }) as PciDevice);
    return readHostUse(denoFsReader(), { root: dir, live: true, devices, procRoot: `${dir}/proc` })
      ?.map((u) => [u.address, u.detail]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A `/proc/net/route` line: a default route (0.0.0.0/0) via `iface`, or another route. */
function v4(iface: string, destination = "00000000", mask = "00000000"): string {
  return `${iface}\t${destination}\t0101A8C0\t0003\t0\t0\t0\t${mask}\t0\t0\t0`;
}

/** A `/proc/net/ipv6_route` line: `::/0` via `iface`, or another prefix. */
function v6(iface: string, destination = "0".repeat(32), length = "00"): string {
  return `${destination} ${length} ${"0".repeat(32)} 00 fd00${
    "0".repeat(27)
  }1 00000400 00000003 00000000 00000003 ${iface}`;
}

Deno.test("readHostUse(): the NIC of the IPv4 default route, directly or under a bridge, bond or VLAN", async () => {
  assertEquals(await hostUse([v4("enp6s0")]), [[UPLINK, "default route via enp6s0"]]);
  assertEquals(await hostUse([v4("br0")]), [[UPLINK, "default route via br0"]]);
  assertEquals(await hostUse([v4("vlan5")]), [
    [UPLINK, "default route via vlan5"],
    [OTHER, "default route via vlan5"],
  ]);
  // Its own network's route beside the default one: the default route names it.
  assertEquals(await hostUse([v4("enp6s0"), v4("enp6s0", "0000A8C0", "00FFFFFF")]), [
    [UPLINK, "default route via enp6s0"],
  ]);
});

Deno.test("readHostUse(): the NIC of the IPv6 default route; the loopback's reject route is none", async () => {
  assertEquals(await hostUse([], [v6("br0"), v6("lo")]), [[UPLINK, "default route via br0"]]);
  // One NIC on both routes is listed once per interface it carries them for.
  assertEquals(await hostUse([v4("enp6s0")], [v6("enp6s0")]), [[
    UPLINK,
    "default route via enp6s0",
  ]]);
});

Deno.test("readHostUse(): the NIC of a network the host routes to (its address's network, a static route)", async () => {
  // A management network on br0 (192.168.0.0/24) and a storage network on enp7s0 (fd00:5::/64).
  assertEquals(await hostUse([v4("br0", "0000A8C0", "00FFFFFF")]), [
    [UPLINK, "route to 192.168.0.0/24 via br0"],
  ]);
  assertEquals(await hostUse([], [v6("enp7s0", `fd000005${"0".repeat(24)}`, "40")]), [
    [OTHER, "route to fd00:5::/64 via enp7s0"],
  ]);
  // A static route through vlan5 too, and at most three networks named per interface.
  const many = ["0000A8C0", "0001A8C0", "0002A8C0", "0003A8C0"].map((d) =>
    v4("vlan5", d, "00FFFFFF")
  );
  assertEquals(await hostUse(many), [
    [UPLINK, "route to 192.168.0.0/24, 192.168.1.0/24, 192.168.2.0/24 via vlan5 and 1 more"],
    [OTHER, "route to 192.168.0.0/24, 192.168.1.0/24, 192.168.2.0/24 via vlan5 and 1 more"],
  ]);
  // One use per NIC: the default route's when it carries one, else its networks, by interface.
  assertEquals(await hostUse([v4("vlan5"), v4("br0", "0000A8C0", "00FFFFFF")]), [
    [UPLINK, "default route via vlan5"],
    [OTHER, "default route via vlan5"],
  ]);
  assertEquals(
    await hostUse([v4("br0", "0000A8C0", "00FFFFFF"), v4("enp6s0", "0000000A", "000000FF")]),
    [[UPLINK, "route to 192.168.0.0/24 via br0; 10.0.0.0/8 via enp6s0"]],
  );
  // Three named in all, across interfaces: the rest only counted.
  assertEquals(await hostUse([...many.slice(0, 3), v4("br0", "0000000A", "000000FF")]), [
    [UPLINK, "route to 192.168.0.0/24, 192.168.1.0/24, 192.168.2.0/24 via vlan5 and 1 more"],
    [OTHER, "route to 192.168.0.0/24, 192.168.1.0/24, 192.168.2.0/24 via vlan5"],
  ]);
});

Deno.test("readHostUse(): a routing table is read whole, a chunk at a time, past lines no route has", async () => {
  // 30,000 routes of a tunnel (no PCI device under it) before the storage network: 1.3 MB, more
  // than one chunk; a 10 KB line that is no route among them.
  const tunnel = Array.from(
    { length: 30000 },
    (_, i) =>
      v4("tun0", `${(i & 0xff).toString(16).padStart(2, "0").toUpperCase()}00000A`, "00FFFFFF"),
  );
  tunnel.splice(15000, 0, "x".repeat(10000));
  assertEquals(await hostUse([...tunnel, v4("enp7s0", "0000A8C0", "00FFFFFF")]), [
    [OTHER, "route to 192.168.0.0/24 via enp7s0"],
  ]);
});

Deno.test("readHostUse(): link-local, multicast, local and reject routes name no NIC", async () => {
  const reject = "enp6s0\t0000000A\t00000000\t0201\t0\t0\t0\t000000FF\t0\t0\t0";
  const routes = [
    v4("enp6s0", "0000FEA9", "0000FFFF"),
    v4("enp6s0", "000000E0", "000000F0"),
    reject,
  ];
  const zero = "0".repeat(32);
  const local = `fd00${
    "0".repeat(27)
  }2 80 ${zero} 00 ${zero} 00000000 00000004 00000000 80200001 enp7s0`;
  const anycast = `fd00${
    "0".repeat(28)
  } 80 ${zero} 00 ${zero} 00000000 00000001 00000000 00100001 enp7s0`;
  const ipv6 = [
    anycast,
    v6("enp7s0", `fe80${"0".repeat(28)}`, "40"),
    v6("enp7s0", `ff00${"0".repeat(28)}`, "08"),
    local,
    v6("lo", `${"0".repeat(31)}1`, "80"),
  ];
  assertEquals(await hostUse(routes, ipv6), []);
});

/**
 * Open vSwitch as the kernel lays it out (`net/openvswitch`): the datapath's own device
 * `ovs-system` over each port it switches (`enp7s0` here), its bridges and internal ports
 * (`ovsbr0`, `mgmt`) Ethernet devices with nothing under them; beside them a tap, a veth, a
 * WireGuard interface, and a Linux bridge and a bond without ports, as `ip link` makes them.
 */
function openVswitch(datapathPorts: string[]) {
  return (dir: string) => {
    const virtual = (name: string, files: Record<string, string>, lower: string[] = []) => {
      const path = `${dir}/devices/virtual/net/${name}`;
      Deno.mkdirSync(path, { recursive: true });
      for (const [file, text] of Object.entries(files)) {
        if (file.endsWith("/")) Deno.mkdirSync(`${path}/${file}`);
        else Deno.writeTextFileSync(`${path}/${file}`, `${text}\n`);
      }
      for (const l of lower) Deno.symlinkSync(`../${l}`, `${path}/lower_${l}`);
      Deno.symlinkSync(`../../devices/virtual/net/${name}`, `${dir}/class/net/${name}`);
    };
    const ether = (index: number, link = index) => ({
      type: "1",
      ifindex: `${index}`,
      iflink: `${link}`,
    });
    virtual("ovs-system", ether(10), datapathPorts);
    virtual("ovsbr0", ether(11));
    virtual("mgmt", ether(12));
    virtual("tap0", { ...ether(13), tun_flags: "0x1002" });
    virtual("veth0", ether(14, 15));
    virtual("wg0", { type: "65534", ifindex: "16", iflink: "16" });
    virtual("linuxbr", { ...ether(17), "bridge/": "", "brif/": "" });
    virtual("bond1", { ...ether(18), "bonding/": "" });
    // The datapath's tunnel ports (a port of it: its `upper_` link), and a VXLAN of the host's.
    for (
      const [name, index, type] of [["vxlan_sys_4789", 19, "vxlan"], [
        "genev_sys_6081",
        20,
        "geneve",
      ]] as const
    ) {
      virtual(name, { ...ether(index), uevent: `DEVTYPE=${type}\nINTERFACE=${name}` });
      Deno.symlinkSync("../ovs-system", `${dir}/devices/virtual/net/${name}/upper_ovs-system`);
    }
    virtual("vxlan7", { ...ether(21), uevent: "DEVTYPE=vxlan\nINTERFACE=vxlan7" });
  };
}

Deno.test("readHostUse(): an Open vSwitch bridge's routes name every port of the datapath", async () => {
  const ovs = openVswitch(["enp7s0"]);
  assertEquals(await hostUse([v4("ovsbr0")], [], ovs), [[OTHER, "default route via ovsbr0"]]);
  assertEquals(await hostUse([v4("mgmt", "0000A8C0", "00FFFFFF")], [], ovs), [
    [OTHER, "route to 192.168.0.0/24 via mgmt"],
  ]);
  // Interfaces Open vSwitch does not make, and the datapath's own ports: their routes name no
  // other port.
  const others = ["tap0", "veth0", "wg0", "linuxbr", "bond1", "vxlan7", "vxlan_sys_4789"];
  assertEquals(await hostUse(others.map((i) => v4(i)), [], ovs), []);
  // Without a datapath, or one with no port, an interface with nothing under it has no NIC.
  assertEquals(await hostUse([v4("ovsbr0")], [], openVswitch([])), []);
  assertEquals(await hostUse([v4("lo")]), []);
});

Deno.test("pciDevicesUnder(): each interface is read once, however a datapath's ports or a tree's circles fan out", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-ovs-" });
  try {
    Deno.mkdirSync(`${dir}/class/net`, { recursive: true });
    const taps = Array.from({ length: 20 }, (_, i) => `vnet${i}`);
    openVswitch(["vxlan_sys_4789", "genev_sys_6081", ...taps])(dir);
    for (const tap of taps) {
      Deno.mkdirSync(`${dir}/devices/virtual/net/${tap}`);
      Deno.writeTextFileSync(`${dir}/devices/virtual/net/${tap}/tun_flags`, "0x1002\n");
      Deno.symlinkSync(`../../devices/virtual/net/${tap}`, `${dir}/class/net/${tap}`);
    }
    const base = denoFsReader();
    const listed: string[] = [];
    const counting = {
      ...base,
      listDir: (path: string) => (listed.push(path), base.listDir(path)),
    };
    assertEquals(pciDevicesUnder(counting, dir, "net", "ovsbr0"), []);
    // ovsbr0, the datapath (twice: from ovsbr0, then as an interface), its 22 ports.
    assertEquals(listed.length <= 25, true, `${listed.length} listings`);
    // Three interfaces each over the other two: 3 listings, not 2 to the 9th.
    for (const name of ["c0", "c1", "c2"]) {
      Deno.mkdirSync(`${dir}/devices/virtual/net/${name}`);
      Deno.symlinkSync(`../../devices/virtual/net/${name}`, `${dir}/class/net/${name}`);
      for (const other of ["c0", "c1", "c2"].filter((o) => o !== name)) {
        Deno.symlinkSync(`../${other}`, `${dir}/devices/virtual/net/${name}/lower_${other}`);
      }
    }
    listed.length = 0;
    assertEquals(pciDevicesUnder(counting, dir, "net", "c0"), []);
    assertEquals(listed.length, 3);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readHostUse(): the boot VGA while a framebuffer console is bound or a framebuffer exists, and only then", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-console-" });
  try {
    Deno.mkdirSync(`${dir}/proc/self`, { recursive: true });
    Deno.mkdirSync(`${dir}/proc/net`);
    Deno.writeTextFileSync(`${dir}/proc/self/mountinfo`, "");
    Deno.writeTextFileSync(`${dir}/proc/net/route`, ROUTE_HEADER);
    Deno.writeTextFileSync(`${dir}/proc/fb`, "");
    const console = (name: string, text: string, bind: string) => {
      Deno.mkdirSync(`${dir}/class/vtconsole/${name}`, { recursive: true });
      Deno.writeTextFileSync(`${dir}/class/vtconsole/${name}/name`, `${text}\n`);
      Deno.writeTextFileSync(`${dir}/class/vtconsole/${name}/bind`, `${bind}\n`);
    };
    // The boot GPU, a second GPU, and a NIC (no boot_vga file: not a VGA device).
    const devices = [
      { address: "0000:0b:00.0", bootVga: true },
      { address: "0000:0c:00.0", bootVga: false },
      { address: UPLINK, bootVga: null },
    ] as PciDevice[];
    const read = () =>
      readHostUse(denoFsReader(), { root: dir, live: true, devices, procRoot: `${dir}/proc` })
        ?.map((u) => [u.address, u.reason, u.detail]);
    // A text console, a framebuffer console that is not bound, no framebuffer: no console use.
    console("vtcon0", "(S) dummy device", "1");
    console("vtcon1", "(M) frame buffer device", "0");
    assertEquals(read(), []);
    console("vtcon1", "(M) frame buffer device", "1");
    assertEquals(read(), [["0000:0b:00.0", "console-vga", "boot_vga=1 with fbcon"]]);
    // fbcon unbound (a display server on the framebuffer): the framebuffer alone still counts.
    console("vtcon1", "(M) frame buffer device", "0");
    Deno.writeTextFileSync(`${dir}/proc/fb`, "0 EFI VGA\n");
    assertEquals(read(), [["0000:0b:00.0", "console-vga", "boot_vga=1 with a framebuffer"]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
