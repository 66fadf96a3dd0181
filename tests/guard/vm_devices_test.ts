// The start guard and the host devices VMs use without passing a PCI function: a
// `<disk type='block'>` on a whole host disk or a `<hostdev type='usb'>` keeps its controller busy
// while that VM runs, and libvirt does not count it as assigned, so a start that detaches the
// controller would pull the device from under the running VM (or from the VM being started). The
// running domains' status files (`/run/libvirt/qemu/NAME.xml`) are read only when a device the
// starting VM takes has such a device under it. On the Z690 tree: a Samsung NVMe at 06:00.0
// (nvme1n1), a GPU at 04:00.0, a USB controller at 41:00.0 with a Logitech receiver (bus 3,
// device 2), an Intel NIC at 0a:00.0 (enp10s0).

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { guardStartOnTree } from "../helpers/guard_run.ts";
import { loadFixtureHost, ROUTE_HEADER, tempHostTree } from "../helpers/hosts.ts";
import { hostdevXml as pciHostdev } from "../helpers/plan_world.ts";
import { sriovNic } from "../helpers/sriov.ts";
import { nvmeDiskXml } from "../helpers/devices.ts";
import { recordPolicies } from "../../lib/guard/state.ts";

const NVME = "0000:06:00.0";
const GPU = "0000:04:00.0";
const USB = "0000:41:00.0";
const NIC = "0000:0a:00.0";
const SERIAL = "0000:00:16.0";
const SATA = "0000:00:17.0";
const I2C = "0000:00:15.0";
const PARALLEL = "0000:00:15.1";
const VGPU = "c2177883-f1bb-47f0-914d-32a22e3a8804";
const KEYBOARD = "/dev/input/by-id/usb-Logitech_USB_Receiver-event-kbd";

function hostdev(address: string): string {
  const [, bus, slotFn] = address.split(":");
  const [slot, fn] = slotFn!.split(".");
  return `<hostdev mode='subsystem' type='pci' managed='yes'><source>
      <address domain='0x0000' bus='0x${bus}' slot='0x${slot}' function='0x${fn}'/>
    </source></hostdev>`;
}

/** A domain with `devices`, as libvirt hands it to the hook or keeps it in a status file. */
function domain(name: string, devices: string[]): string {
  return `<domain type='kvm'><name>${name}</name><devices>${devices.join("\n")}</devices></domain>`;
}

/** A running domain's status file, as the QEMU driver writes it. */
function status(name: string, devices: string[]): string {
  return `<!--
WARNING: THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE
OVERWRITTEN AND LOST. Changes to this xml configuration should be made using:
  virsh edit ${name}
-->
<domstatus state='running' reason='booted' pid='4242'>
  <monitor path='/var/lib/libvirt/qemu/domain-3-${name}/monitor.sock' type='unix'/>
  ${domain(name, devices)}
</domstatus>
`;
}

function blockDisk(path: string): string {
  return `<disk type='block' device='disk'><driver name='qemu' type='raw'/>
      <source dev='${path}' index='2'/><target dev='vdb' bus='virtio'/></disk>`;
}

/**
 * Runs the guard for "desktop" taking `devices`, with the running domains' status files
 * `running` and the running networks' `networks` (name to text), on the tree with `nvme1n1` under {@link NVME} and its by-id link.
 */
async function start(
  devices: string[],
  running: Record<string, string>,
  networks: Record<string, string> = {},
  tweak: (dir: string) => void = () => {},
) {
  const z690 = loadFixtureHost("z690-asus-adl");
  z690.host_use = [];
  await using tree = await tempHostTree(z690);
  const dir = tree.dir;
  Deno.mkdirSync(`${dir}/class/block`, { recursive: true });
  Deno.symlinkSync(
    `../../devices/pci0000:00/0000:00:1b.0/${NVME}/nvme/nvme1/nvme1n1`,
    `${dir}/class/block/nvme1n1`,
  );
  Deno.mkdirSync(`${dir}/dev/disk/by-id`, { recursive: true });
  Deno.symlinkSync("../../nvme1n1", `${dir}/dev/disk/by-id/nvme-Samsung_SSD_980_S6F1`);
  const receiver = `${dir}/devices/pci0000:00/0000:00:07.0/${USB}/usb3/3-1`;
  Deno.mkdirSync(receiver, { recursive: true });
  const attributes = { idVendor: "046d", idProduct: "c52b", busnum: "3", devnum: "2" };
  for (const [name, value] of Object.entries(attributes)) {
    Deno.writeTextFileSync(`${receiver}/${name}`, `${value}\n`);
  }
  Deno.mkdirSync(`${dir}/bus/usb/devices`, { recursive: true });
  Deno.symlinkSync(`../../..${receiver.slice(dir.length)}`, `${dir}/bus/usb/devices/3-1`);
  Deno.mkdirSync(`${dir}/class/net`, { recursive: true });
  Deno.mkdirSync(`${dir}/bus/pci/devices/${NIC}/net/enp10s0`, { recursive: true });
  Deno.symlinkSync(
    `../../devices/pci0000:00/0000:00:1c.4/${NIC}/net/enp10s0`,
    `${dir}/class/net/enp10s0`,
  );
  // br1 over enp10s0; enp10s0v0, a VF of it (0000:0a:10.0).
  Deno.mkdirSync(`${dir}/devices/virtual/net/br1`, { recursive: true });
  Deno.symlinkSync("../enp10s0", `${dir}/devices/virtual/net/br1/lower_enp10s0`);
  Deno.symlinkSync("../../devices/virtual/net/br1", `${dir}/class/net/br1`);
  Deno.symlinkSync(
    "../../devices/pci0000:00/0000:00:1c.4/0000:0a:10.0/net/enp10s0v0",
    `${dir}/class/net/enp10s0v0`,
  );
  Deno.mkdirSync(`${dir}/bus/pci/devices/0000:0a:10.0`, { recursive: true });
  Deno.symlinkSync(`../${NIC}`, `${dir}/bus/pci/devices/0000:0a:10.0/physfn`);
  // An evdev keyboard (the receiver's), and a serial port on the MEI function, which stands in
  // for a PCI serial card (the tree has none).
  Deno.mkdirSync(`${dir}/class/input`, { recursive: true });
  Deno.symlinkSync(
    `../../devices/pci0000:00/0000:00:07.0/${USB}/usb3/3-1/3-1:1.0/0003:046D:C52B.0001/input/input5/event5`,
    `${dir}/class/input/event5`,
  );
  Deno.mkdirSync(`${dir}/dev/input/by-id`, { recursive: true });
  Deno.symlinkSync("../event5", `${dir}${KEYBOARD}`);
  // Linux 6.8 and later put a UART's tty under its serial core port device.
  Deno.mkdirSync(`${dir}/class/tty`, { recursive: true });
  Deno.symlinkSync(
    `../../devices/pci0000:00/${SERIAL}/${SERIAL}:0/${SERIAL}:0.0/tty/ttyS4`,
    `${dir}/class/tty/ttyS4`,
  );
  Deno.symlinkSync(
    "../../devices/platform/serial8250/serial8250:0/serial8250:0.0/tty/ttyS0",
    `${dir}/class/tty/ttyS0`,
  );
  Deno.symlinkSync("../../devices/virtual/tty/tty1", `${dir}/class/tty/tty1`);
  // A parallel port on the second LPSS function, which stands in for a PCI parallel card.
  Deno.mkdirSync(`${dir}/class/ppdev`, { recursive: true });
  Deno.symlinkSync(
    `../../devices/pci0000:00/${PARALLEL}/parport0/ppdev/parport0`,
    `${dir}/class/ppdev/parport0`,
  );
  // A touchpad on the LPSS I2C controller.
  Deno.symlinkSync(
    `../../devices/pci0000:00/${I2C}/i2c_designware.0/i2c-0/i2c-ELAN0001:00/0018:04F3:3140.0002/input/input12/event12`,
    `${dir}/class/input/event12`,
  );
  Deno.mkdirSync(`${dir}/qemu`);
  for (const [name, text] of Object.entries(running)) {
    Deno.writeTextFileSync(`${dir}/qemu/${name}.xml`, text);
  }
  Deno.mkdirSync(`${dir}/class/scsi_host`, { recursive: true });
  Deno.symlinkSync(
    `../../devices/pci0000:00/${SATA}/ata4/host3/scsi_host/host3`,
    `${dir}/class/scsi_host/host3`,
  );
  // A vGPU carved from the GPU.
  Deno.mkdirSync(`${dir}/bus/mdev/devices`, { recursive: true });
  Deno.symlinkSync(
    `../../../devices/pci0000:00/0000:00:01.0/${GPU}/${VGPU}`,
    `${dir}/bus/mdev/devices/${VGPU}`,
  );
  Deno.mkdirSync(`${dir}/network`);
  for (const [name, text] of Object.entries(networks)) {
    Deno.writeTextFileSync(`${dir}/network/${name}.xml`, text);
  }
  Deno.mkdirSync(`${dir}/state`);
  tweak(dir);
  return guardStartOnTree({ vm: "desktop", xml: domain("desktop", devices), dir, live: false });
}

const BY_ID = "/dev/disk/by-id/nvme-Samsung_SSD_980_S6F1";

Deno.test("guard: taking the controller of a running VM's block disk refuses the start", async () => {
  const refused = await start([hostdev(NVME)], { nas: status("nas", [blockDisk(BY_ID)]) });
  assertEquals([refused.code, refused.refusals], [1, [["host-needs", NVME]]]);
  assertMatch(
    refused.line,
    /refusing to start "desktop": hostdev 0000:06:00\.0 holds 144d:a808 .*the host needs it: in use by the host \(vm-device: disk \/dev\/disk\/by-id\/nvme-Samsung_SSD_980_S6F1 of running VM "nas"\); hand-added/,
  );
  // By its kernel name too.
  const byName = await start([hostdev(NVME)], { nas: status("nas", [blockDisk("/dev/nvme1n1")]) });
  assertEquals(byName.refusals, [["host-needs", NVME]]);
});

Deno.test("guard: the starting VM's own status, other disks and other devices pass", async () => {
  // Its own status file (left by an earlier run), a running VM's disk on another controller, a
  // file-backed disk.
  const passes = await start([hostdev(NVME)], {
    desktop: status("desktop", [blockDisk(BY_ID)]),
    nas: status("nas", [
      blockDisk("/dev/sda"),
      `<disk type='file'><source file='${BY_ID}'/></disk>`,
    ]),
  });
  assertEquals([passes.code, passes.refusals], [0, []]);
  // The GPU has no block device under it: the running VMs' disks are not its business.
  const gpu = await start([hostdev(GPU)], { nas: status("nas", [blockDisk(BY_ID)]) });
  assertEquals([gpu.code, gpu.refusals], [0, []]);
});

Deno.test("guard: a running VM's status too large to read fails closed, only when it matters", async () => {
  // A status as large as libvirt writes (a definition with a 4 MiB description) is read.
  const large = status("nas", [blockDisk(BY_ID)]).padEnd(5 << 20, " ");
  const read = await start([hostdev(NVME)], { nas: large });
  assertEquals([read.code, read.refusals], [1, [["host-needs", NVME]]]);
  const huge = status("nas", [blockDisk(BY_ID)]).padEnd(33 << 20, " ");
  const refused = await start([hostdev(NVME)], { nas: huge });
  assertEquals([refused.code, refused.refusals], [1, [["unreadable", null]]]);
  assertMatch(refused.line, /the check failed: the status of running VM "nas" .* is larger than/);
  // Not read at all for a start that takes a device with nothing a VM can use under it, nor in
  // its IOMMU group (the Radeon in a group of its own; an LPSS function's group holds the I2C
  // controllers).
  const idle = await start([hostdev("0000:03:00.0")], { nas: huge });
  assertEquals([idle.code, idle.refusals], [0, []]);
});

Deno.test("guard: taking the controller of the VM's own block disk refuses the start, with no other VM running", async () => {
  const own = await start([hostdev(NVME), blockDisk(BY_ID)], {});
  assertEquals([own.code, own.refusals], [1, [["host-needs", NVME]]]);
  assertMatch(
    own.line,
    /hostdev 0000:06:00\.0 .*\(vm-device: disk \/dev\/disk\/by-id\/nvme-Samsung_SSD_980_S6F1 of this VM itself\)/,
  );
  // Its own disk on another controller, or a file, takes nothing from it.
  const other = await start([hostdev(NVME), blockDisk("/dev/sda"), blockDisk("/srv/vm.img")], {});
  assertEquals([other.code, other.refusals], [0, []]);
  const gpu = await start([hostdev(GPU), blockDisk(BY_ID)], {});
  assertEquals([gpu.code, gpu.refusals], [0, []]);
});

/** A USB hostdev of the receiver, by IDs (a definition) or by bus and device (a status). */
function usbHostdev(by: "ids" | "address"): string {
  const source = by === "ids"
    ? "<vendor id='0x046d'/><product id='0xc52b'/>"
    : "<address bus='3' device='2'/>";
  return `<hostdev mode='subsystem' type='usb' managed='yes'><source>${source}</source></hostdev>`;
}

Deno.test("guard: taking the controller of a USB device the VM or a running VM uses refuses the start", async () => {
  const other = await start([hostdev(USB)], { kbd: status("kbd", [usbHostdev("address")]) });
  assertEquals([other.code, other.refusals], [1, [["host-needs", USB]]]);
  assertMatch(
    other.line,
    /hostdev 0000:41:00\.0 .*\(vm-device: USB device at bus 3 device 2 of running VM "kbd"\)/,
  );
  const own = await start([hostdev(USB), usbHostdev("ids")], {});
  assertEquals([own.code, own.refusals], [1, [["host-needs", USB]]]);
  assertMatch(own.line, /\(vm-device: USB device 046d:c52b of this VM itself\)/);
  // A USB device that is not plugged in, or another controller taken: nothing to lose.
  const unplugged = usbHostdev("ids").replace("c52b", "c534");
  const absent = await start([hostdev(USB), unplugged], {});
  assertEquals([absent.code, absent.refusals], [0, []]);
  const gpu = await start([hostdev(GPU), usbHostdev("ids")], {
    kbd: status("kbd", [usbHostdev("address")]),
  });
  assertEquals([gpu.code, gpu.refusals], [0, []]);
});

Deno.test("guard: taking the NIC under a running VM's macvtap interface, or the VM's own, refuses the start", async () => {
  const macvtap = `<interface type='direct'><source dev='enp10s0' mode='bridge'/></interface>`;
  const other = await start([hostdev(NIC)], { router: status("router", [macvtap]) });
  assertEquals([other.code, other.refusals], [1, [["host-needs", NIC]]]);
  assertMatch(other.line, /\(vm-device: network interface enp10s0 of running VM "router"\)/);
  const own = await start([hostdev(NIC), macvtap], {});
  assertEquals([own.code, own.refusals], [1, [["host-needs", NIC]]]);
  assertMatch(own.line, /\(vm-device: network interface enp10s0 of this VM itself\)/);
  // A bridge whose port is the NIC; a macvtap on a VF of it (passing the PF destroys the VF).
  const bridge = `<interface type='bridge'><source bridge='br1'/></interface>`;
  const onBridge = await start([hostdev(NIC)], { router: status("router", [bridge]) });
  assertMatch(onBridge.line, /\(vm-device: network interface br1 of running VM "router"\)/);
  const onVf = await start([hostdev(NIC)], {
    router: status("router", [macvtap.replace("enp10s0", "enp10s0v0")]),
  });
  assertMatch(onVf.line, /\(vm-device: network interface enp10s0v0 of running VM "router"\)/);
  // An Open vSwitch bridge: the kernel links its port only under the datapath's device.
  const ovs = (dir: string) => {
    for (const [name, index] of [["ovs-system", 20], ["ovsbr0", 21]] as const) {
      const path = `${dir}/devices/virtual/net/${name}`;
      Deno.mkdirSync(path, { recursive: true });
      for (const file of ["type", "ifindex", "iflink"]) {
        Deno.writeTextFileSync(`${path}/${file}`, file === "type" ? "1\n" : `${index}\n`);
      }
      Deno.symlinkSync(`../../devices/virtual/net/${name}`, `${dir}/class/net/${name}`);
    }
    Deno.symlinkSync("../enp10s0", `${dir}/devices/virtual/net/ovs-system/lower_enp10s0`);
  };
  const openVswitch =
    `<interface type='bridge'><source bridge='ovsbr0'/><virtualport type='openvswitch'/></interface>`;
  const onOvs = await start([hostdev(NIC)], { router: status("router", [openVswitch]) }, {}, ovs);
  assertMatch(onOvs.line, /\(vm-device: network interface ovsbr0 of running VM "router"\)/);
  const ownOvs = await start([hostdev(NIC), openVswitch], {}, {}, ovs);
  assertMatch(ownOvs.line, /\(vm-device: network interface ovsbr0 of this VM itself\)/);
  // On another NIC, or another device taken: nothing to lose.
  const elsewhere = macvtap.replace("enp10s0", "enp9s0");
  const passes = await start([hostdev(NIC)], { router: status("router", [elsewhere]) });
  assertEquals([passes.code, passes.refusals], [0, []]);
  const gpu = await start([hostdev(GPU)], { router: status("router", [macvtap]) });
  assertEquals([gpu.code, gpu.refusals], [0, []]);
});

Deno.test("guard: taking the controller under an evdev input or a serial port the VM or a running VM uses refuses the start", async () => {
  const evdev = `<input type='evdev'><source dev='${KEYBOARD}' grab='all'/></input>`;
  const other = await start([hostdev(USB)], { kvm: status("kvm", [evdev]) });
  assertEquals([other.code, other.refusals], [1, [["host-needs", USB]]]);
  assertMatch(
    other.line,
    /\(vm-device: character device \/dev\/input\/by-id\/usb-Logitech_USB_Receiver-event-kbd of running VM "kvm"\)/,
  );
  const own = await start([hostdev(USB), evdev], {});
  assertEquals([own.code, own.refusals], [1, [["host-needs", USB]]]);
  assertMatch(own.line, /event-kbd of this VM itself\)/);
  // A serial port on a PCI card: the only device taken has no USB device, disk or NIC under it.
  const serial = `<serial type='dev'><source path='/dev/ttyS4'/><target port='0'/></serial>`;
  const console = await start([hostdev(SERIAL)], { bmc: status("bmc", [serial]) });
  assertEquals([console.code, console.refusals], [1, [["host-needs", SERIAL]]]);
  assertMatch(console.line, /\(vm-device: character device \/dev\/ttyS4 of running VM "bmc"\)/);
  // A touchpad on an I2C controller, in another running VM.
  const touchpad = `<input type='passthrough' bus='virtio'><source evdev='/dev/input/event12'/>
    </input>`;
  const i2c = await start([hostdev(I2C)], { lap: status("lap", [touchpad]) });
  // Its IOMMU group holds the other two I2C controllers, on intel-lpss: not viable either.
  assertEquals([i2c.code, i2c.refusals], [1, [
    ["host-needs", I2C],
    ["not-viable", I2C],
    ["not-viable", I2C],
  ]]);
  assertMatch(
    i2c.line,
    /\(vm-device: character device \/dev\/input\/event12 of running VM "lap"\)/,
  );
  // A parallel port on a PCI card, in another running VM.
  const parallel = `<parallel type='dev'><source path='/dev/parport0'/></parallel>`;
  const lpt = await start([hostdev(PARALLEL)], { old: status("old", [parallel]) });
  // Its IOMMU group holds the other two I2C controllers, on intel-lpss: not viable either.
  assertEquals([lpt.code, lpt.refusals], [1, [
    ["host-needs", PARALLEL],
    ["not-viable", PARALLEL],
    ["not-viable", PARALLEL],
  ]]);
  // Another device taken, or a port on no PCI function (the ISA ttyS0): nothing to lose.
  const gpu = await start([hostdev(GPU), evdev], { bmc: status("bmc", [serial]) });
  assertEquals([gpu.code, gpu.refusals], [0, []]);
  const isa = await start([hostdev(SERIAL)], {
    bmc: status("bmc", [serial.replace("ttyS4", "ttyS0")]),
  });
  assertEquals([isa.code, isa.refusals], [0, []]);
});

Deno.test("guard: taking the NIC under a bridged network the VM or a running VM is on refuses the start", async () => {
  // Network "lan" is bridged to br1, whose port is the NIC; "direct" is a macvtap pool on it.
  const networks = {
    lan: `<networkstatus><network><name>lan</name><forward mode='bridge'/><bridge name='br1'/>
      </network></networkstatus>`,
    direct: `<networkstatus><network><name>direct</name><forward mode='passthrough'>
      <interface dev='enp10s0' connections='1'/></forward></network></networkstatus>`,
  };
  const onLan =
    `<interface type='network'><source network='lan'/><model type='virtio'/></interface>`;
  const own = await start([hostdev(NIC), onLan], {}, networks);
  assertEquals([own.code, own.refusals], [1, [["host-needs", NIC]]]);
  assertMatch(own.line, /\(vm-device: network lan \(interface br1\) of this VM itself\)/);
  // A running VM's status names the network, with the device it gave (<actual>).
  const onDirect = `<interface type='network'><source network='direct'/>
    <actual type='direct'><source dev='enp10s0' mode='passthrough'/></actual></interface>`;
  const other = await start([hostdev(NIC)], { router: status("router", [onDirect]) }, networks);
  assertEquals([other.code, other.refusals], [1, [["host-needs", NIC]]]);
  assertMatch(
    other.line,
    /\(vm-device: network direct \(interface enp10s0\) of running VM "router"\)/,
  );
  // The device a running VM got counts even once its network is gone (virsh net-destroy).
  const gone = await start([hostdev(NIC)], { router: status("router", [onDirect]) }, {});
  assertEquals([gone.code, gone.refusals], [1, [["host-needs", NIC]]]);
  // A network's status that cannot be read fails closed.
  const broken = await start([hostdev(NIC), onLan], {}, { lan: "<networkstatus><network>" });
  assertEquals([broken.code, broken.refusals.map(([kind]) => kind)], [1, ["unreadable"]]);
  assertMatch(broken.line, /the status of network "lan": it is not a whole <network>/);
  // A network that does not run, or another device taken: nothing to lose.
  const stopped = await start([hostdev(NIC), onLan], {}, {});
  assertEquals([stopped.code, stopped.refusals], [0, []]);
  const gpu = await start(
    [hostdev(GPU), onLan],
    { router: status("router", [onDirect]) },
    networks,
  );
  assertEquals([gpu.code, gpu.refusals], [0, []]);
});

Deno.test("guard: taking the controller of a SCSI hostdev's adapter the VM or a running VM uses refuses the start", async () => {
  // scsi_host3 is a port of the SATA controller, which has no disk, USB device or NIC here.
  const scsi = `<hostdev mode='subsystem' type='scsi'><source><adapter name='scsi_host3'/>
    <address bus='0' target='0' unit='0'/></source></hostdev>`;
  const other = await start([hostdev(SATA)], { tape: status("tape", [scsi]) });
  assertEquals([other.code, other.refusals], [1, [["host-needs", SATA]]]);
  assertMatch(other.line, /\(vm-device: SCSI adapter scsi_host3 of running VM "tape"\)/);
  const own = await start([hostdev(SATA), scsi], {});
  assertEquals([own.code, own.refusals], [1, [["host-needs", SATA]]]);
  assertMatch(own.line, /\(vm-device: SCSI adapter scsi_host3 of this VM itself\)/);
  // Another adapter, or another device taken: nothing to lose.
  const elsewhere = await start([hostdev(SATA)], {
    tape: status("tape", [scsi.replace("scsi_host3", "scsi_host9")]),
  });
  assertEquals([elsewhere.code, elsewhere.refusals], [0, []]);
  const gpu = await start([hostdev(GPU)], { tape: status("tape", [scsi]) });
  assertEquals([gpu.code, gpu.refusals], [0, []]);
});

Deno.test("guard: taking a PF without a netdev under a VF a running VM's macvtap uses, or a USB NIC under a network the VM is on, refuses the start", async () => {
  // The PF's own netdev is gone (a PF driver without one, such as pci-pf-stub): only its VF has
  // one, and another running VM's macvtap is on it.
  const noPfNetdev = (dir: string) => {
    Deno.removeSync(`${dir}/class/net/enp10s0`);
    Deno.removeSync(`${dir}/bus/pci/devices/${NIC}/net`, { recursive: true });
    Deno.removeSync(`${dir}/devices/virtual/net/br1/lower_enp10s0`);
  };
  const onVf = `<interface type='direct'><source dev='enp10s0v0' mode='bridge'/></interface>`;
  const pf = await start([hostdev(NIC)], { router: status("router", [onVf]) }, {}, noPfNetdev);
  assertEquals([pf.code, pf.refusals], [1, [["host-needs", NIC]]]);
  assertMatch(pf.line, /\(vm-device: network interface enp10s0v0 of running VM "router"\)/);
  // A USB NIC under the USB controller taken, which network "wan" puts this VM on.
  const usbNic = (dir: string) =>
    Deno.symlinkSync(
      `../../devices/pci0000:00/0000:00:07.0/${USB}/usb3/3-2/3-2:1.0/net/enx0`,
      `${dir}/class/net/enx0`,
    );
  const wan = `<networkstatus><network><name>wan</name><forward mode='vepa'>
    <interface dev='enx0'/></forward></network></networkstatus>`;
  const onWan = `<interface type='network'><source network='wan'/></interface>`;
  const own = await start([hostdev(USB), onWan], {}, { wan }, usbNic);
  assertEquals([own.code, own.refusals], [1, [["host-needs", USB]]]);
  assertMatch(own.line, /\(vm-device: network wan \(interface enx0\) of this VM itself\)/);
});

Deno.test("guard: taking the parent GPU of a mediated device the VM or a running VM uses refuses the start", async () => {
  const mdev = `<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source>
    <address uuid='${VGPU}'/></source></hostdev>`;
  const other = await start([hostdev(GPU)], { vdi: status("vdi", [mdev]) });
  assertEquals([other.code, other.refusals], [1, [["host-needs", GPU]]]);
  assertMatch(
    other.line,
    new RegExp(`\\(vm-device: mediated device ${VGPU} of running VM "vdi"\\)`),
  );
  const own = await start([hostdev(GPU), mdev], {});
  assertEquals([own.code, own.refusals], [1, [["host-needs", GPU]]]);
  // Another mediated device, or another device taken: nothing to lose.
  const elsewhere = await start([hostdev(GPU)], {
    vdi: status("vdi", [mdev.replace("c2177883", "d2177883")]),
  });
  assertEquals([elsewhere.code, elsewhere.refusals], [0, []]);
  const nic = await start([hostdev(NIC)], { vdi: status("vdi", [mdev]) });
  assertEquals([nic.code, nic.refusals], [0, []]);
});

Deno.test("guard: an SR-IOV PF is refused while a VF of it is the host's or another running VM's", async () => {
  // Unbinding a PF's driver removes its VFs: the host's route over one, or another running
  // VM's VF (passed as an interface or a hostdev, in an IOMMU group of its own, so libvirt's own
  // check of the PF's group does not see it) goes with it.
  const PF = "0000:40:00.0";
  // The PF recorded under rule "nic", which `allowHostCritical` may name.
  const start = async (setup: (dir: string) => void, allowHostCritical: string[] = []) => {
    const host = loadFixtureHost("z690-asus-adl");
    host.host_use = [];
    host.devices.push(...sriovNic("40", 4));
    await using tree = await tempHostTree(host);
    const dir = tree.dir;
    Deno.mkdirSync(`${dir}/class/net`, { recursive: true });
    Deno.mkdirSync(`${dir}/qemu`);
    Deno.mkdirSync(`${dir}/state`);
    Deno.mkdirSync(`${dir}/proc/net`, { recursive: true });
    Deno.mkdirSync(`${dir}/proc/self`, { recursive: true });
    Deno.writeTextFileSync(`${dir}/proc/self/mountinfo`, "");
    Deno.writeTextFileSync(`${dir}/proc/net/route`, ROUTE_HEADER);
    setup(dir);
    recordPolicies(`${dir}/state`, {
      version: 1,
      config: "c.yaml",
      vms: {
        desktop: {
          guard: "enforce",
          rules: {},
          allowHostCritical,
          // The record below, as the apply that wrote it bound it.
          devices: {
            [PF]: {
              address: PF,
              vendorId: "8086",
              deviceId: "10c9",
              subsystemVendorId: "8086",
              subsystemDeviceId: "a03c",
              classCode: "020000",
              serial: null,
              driver: null,
              rule: "nic",
            },
          },
        },
      },
    });
    const xml = `<domain type='kvm'><name>desktop</name><metadata>
  <pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">
    <pt:device address="${PF}" vendor="8086" device="10c9" subsystem-vendor="8086"
      subsystem-device="a03c" class="020000" rule="nic"/>
  </pt:hostdevs></metadata><devices>${pciHostdev(PF)}</devices></domain>`;
    return await guardStartOnTree({ vm: "desktop", xml, dir, live: true });
  };
  const running = (dir: string, device: string) =>
    Deno.writeTextFileSync(
      `${dir}/qemu/router.xml`,
      `<domstatus state='running' pid='4242'><domain type='kvm' id='3'><name>router</name><devices>${device}</devices></domain></domstatus>`,
    );
  const vfInterface = `<interface type='hostdev' managed='yes'><mac address='52:54:00:11:22:33'/>
  <source><address type='pci' domain='0x0000' bus='0x40' slot='0x10' function='0x0'/></source>
  <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></interface>`;
  // As a running guest's status shows a VF a hostdev network gave it.
  const pooled = `<interface type='network'><mac address='52:54:00:11:22:34'/>
  <source network='sriov'/><actual type='hostdev' managed='yes'><driver name='vfio'/><source>
  <address type='pci' domain='0x0000' bus='0x40' slot='0x10' function='0x0'/></source></actual>
  <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></interface>`;
  // A state that passes, as plan's sriov-split has no override: allow_host_critical lifts none.
  for (const device of [vfInterface, pciHostdev("0000:40:10.0"), pooled]) {
    for (const allowed of [[], ["nic"]]) {
      const held = await start((dir) => running(dir, device), allowed);
      assertEquals([held.code, held.refusals], [1, [["busy", PF]]], String(allowed));
      assertMatch(
        held.line,
        /its virtual function 0000:40:10\.0 is in use \(vm-passed: (hostdev|hostdev interface) of running VM "router"\): unbinding it now would take that VF from the running guest; fix: shut down the VM the virtual function was given to/,
      );
      // What the guard reads is the running guest's: editing its definition does not lift it.
      assertMatch(
        held.line,
        /, or unplug it from that running guest \(virsh detach-device VM FILE --live, FILE holding its element from virsh dumpxml VM; virsh edit changes only its next start\), then start again$/,
      );
    }
  }
  const route = (dir: string) => {
    Deno.symlinkSync(
      `../../devices/pci0000:40/0000:40:10.2/net/enp64s0v1`,
      `${dir}/class/net/enp64s0v1`,
    );
    Deno.writeTextFileSync(
      `${dir}/proc/net/route`,
      `${ROUTE_HEADER}enp64s0v1\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n`,
    );
  };
  const routed = await start(route);
  assertEquals([routed.code, routed.refusals], [1, [["host-needs", PF]]]);
  assertMatch(
    routed.line,
    /its virtual function 0000:40:10\.2 is in use by the host \(default-route: default route via enp64s0v1\); only "allow_host_critical: true" on rule "nic"/,
  );
  // The host's own use is the rule's to lift; with another VM's VF as well, the start stays refused.
  assertEquals((await start(route, ["nic"])).code, 0);
  const both = await start((dir) => {
    route(dir);
    running(dir, vfInterface);
  }, ["nic"]);
  assertEquals([both.code, both.refusals], [1, [["busy", PF]]]);
  // Nothing on its VFs: the PF goes.
  const free = await start(() => {});
  assertEquals([free.code, free.refusals], [0, []]);
});

Deno.test("guard: taking the Intel VMD controller over a USB controller behind it refuses the start while the VM or a running VM uses a USB device there", async () => {
  const VMD = "0000:00:0e.0";
  // A USB card in a root port VMD remaps: the kernel hangs VMD's domain under its function.
  const behindVmd = (dir: string) => {
    const card = `devices/pci0000:00/${VMD}/pci10000:e0/10000:e0:1c.0/10000:e1:00.0`;
    const stick = `${dir}/${card}/usb5/5-1`;
    Deno.mkdirSync(stick, { recursive: true });
    const attributes = { idVendor: "0781", idProduct: "5581", busnum: "5", devnum: "2" };
    for (const [name, value] of Object.entries(attributes)) {
      Deno.writeTextFileSync(`${stick}/${name}`, `${value}\n`);
    }
    Deno.symlinkSync(`../../../${card}/usb5/5-1`, `${dir}/bus/usb/devices/5-1`);
  };
  const stick = (by: "ids" | "address") =>
    `<hostdev mode='subsystem' type='usb' managed='yes'><source>${
      by === "ids" ? "<vendor id='0x0781'/><product id='0x5581'/>" : "<address bus='5' device='2'/>"
    }</source></hostdev>`;
  const other = await start(
    [hostdev(VMD)],
    { nas: status("nas", [stick("address")]) },
    {},
    behindVmd,
  );
  assertEquals([other.code, other.refusals], [1, [["host-needs", VMD]]]);
  assertMatch(
    other.line,
    /hostdev 0000:00:0e\.0 .*\(vm-device: USB device at bus 5 device 2 of running VM "nas"\)/,
  );
  const own = await start([hostdev(VMD), stick("ids")], {}, {}, behindVmd);
  assertEquals([own.code, own.refusals], [1, [["host-needs", VMD]]]);
  assertMatch(own.line, /\(vm-device: USB device 0781:5581 of this VM itself\)/);
  // The receiver hangs under a controller outside VMD's domain: nothing to lose.
  const outside = await start([hostdev(VMD), usbHostdev("ids")], {}, {}, behindVmd);
  assertEquals([outside.code, outside.refusals], [0, []]);
});

Deno.test("guard: a function of the taken IOMMU group that a running VM was given refuses the start, naming that VM, whatever the policies", async () => {
  // The GPU's group 21 merged (an ACS or BIOS change) with the NVMe drive, a storage controller
  // the host needs from another slot, and the chipset's audio, which it does not: both on
  // vfio-pci, either one passed to the running "nas".
  const GPU_21 = "0000:03:00.0";
  const AUDIO = "0000:00:1f.3";
  const start = async (
    { held, guard, allowHostCritical }: {
      held: string | null;
      guard: "enforce" | "warn";
      allowHostCritical: string[];
    },
  ) => {
    const host = loadFixtureHost("z690-asus-adl");
    host.host_use = [];
    for (const d of host.devices) {
      if (d.bdf === NVME || d.bdf === AUDIO) Object.assign(d, { group: 21, driver: "vfio-pci" });
    }
    await using tree = await tempHostTree(host);
    const dir = tree.dir;
    Deno.mkdirSync(`${dir}/qemu`);
    Deno.mkdirSync(`${dir}/state`);
    if (held !== null) {
      Deno.writeTextFileSync(`${dir}/qemu/nas.xml`, status("nas", [hostdev(held)]));
    }
    const gpu = {
      address: GPU_21,
      vendorId: "1002",
      deviceId: "73df",
      subsystemVendorId: "1002",
      subsystemDeviceId: "0e36",
      classCode: "030000",
      serial: null,
      driver: null,
      rule: "gpu",
    };
    // As the apply that wrote the record bound it.
    const vms = { desktop: { guard, rules: {}, allowHostCritical, devices: { [GPU_21]: gpu } } };
    recordPolicies(`${dir}/state`, { version: 1, config: "c.yaml", vms });
    const xml = `<domain type='kvm'><name>desktop</name><metadata>
  <pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">
    <pt:device address="${GPU_21}" vendor="1002" device="73df" subsystem-vendor="1002"
      subsystem-device="0e36" class="030000" rule="gpu"/>
  </pt:hostdevs></metadata><devices>${hostdev(GPU_21)}</devices></domain>`;
    return await guardStartOnTree({ vm: "desktop", xml, dir, live: false });
  };
  for (const held of [NVME, AUDIO]) {
    for (const guard of ["enforce", "warn"] as const) {
      const refused = await start({ held, guard, allowHostCritical: ["gpu"] });
      assertEquals([refused.code, refused.refusals], [1, [["busy", GPU_21]]], `${held} ${guard}`);
      assertMatch(
        refused.line,
        new RegExp(
          `^passthrough guard: refusing to start "desktop": hostdev 0000:03:00\\.0's IOMMU group 21 also holds ${
            held.replaceAll(".", "\\.")
          }, .*driver vfio-pci\\), which "desktop" does not pass; it is in use \\(vm-passed: hostdev of running VM "nas"\\): VFIO hands a group to one guest at a time, so libvirt refuses this start while that guest runs; fix: passthrough plan --vm desktop`,
        ),
      );
    }
  }
  // With "nas" shut down: the drive is the rule's allow_host_critical to lift, the audio nothing.
  const free = await start({ held: null, guard: "enforce", allowHostCritical: [] });
  assertEquals([free.code, free.refusals], [1, [["host-needs", GPU_21]]]);
  assertEquals((await start({ held: null, guard: "enforce", allowHostCritical: ["gpu"] })).code, 0);
});

Deno.test("guard: a function of the taken IOMMU group a running VM was given as an NVMe disk is named as one", async () => {
  const host = loadFixtureHost("z690-asus-adl");
  host.host_use = [];
  for (const d of host.devices) {
    if (d.bdf === NVME) Object.assign(d, { group: 21, driver: "vfio-pci" });
  }
  await using tree = await tempHostTree(host);
  const dir = tree.dir;
  Deno.mkdirSync(`${dir}/qemu`);
  Deno.mkdirSync(`${dir}/state`);
  Deno.writeTextFileSync(`${dir}/qemu/nas.xml`, status("nas", [nvmeDiskXml("06", "vdb")]));
  const xml = domain("desktop", [hostdev("0000:03:00.0")]);
  const refused = await guardStartOnTree({ vm: "desktop", xml, dir, live: false });
  assertEquals([refused.code, refused.refusals], [1, [["busy", "0000:03:00.0"]]]);
  assertMatch(refused.line, /; it is in use \(vm-passed: NVMe disk of running VM "nas"\): /);
});
