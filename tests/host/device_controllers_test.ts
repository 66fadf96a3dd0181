/**
 * The PCI functions under the host devices a domain names (`charDeviceControllers`,
 * `readUsbDevices` with `usbDeviceControllers`, `mdevControllers`, `nicsUnder`): what the start
 * guard and `plan` look up so that a device a VM uses is not pulled from under it. Built sysfs
 * trees laid out as the kernel lays them out; each class, name form and field is tried alone, so
 * that losing any one of them shows.
 */

import { assertEquals } from "../helpers/assert.ts";
import {
  charDeviceControllers,
  mdevControllers,
  nicsUnder,
  readUsbDevices,
  usbDeviceControllers,
} from "../../lib/host/sysfs_device.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";

/** A temporary directory for `run`, removed after it. */
async function inTree(run: (dir: string) => void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-controllers-" });
  try {
    run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A link at `dir/path` to `target`, its directory made first. */
function link(dir: string, path: string, target: string): void {
  Deno.mkdirSync(`${dir}/${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
  Deno.symlinkSync(target, `${dir}/${path}`);
}

/**
 * Character devices of every class a domain can name, each on a PCI function of its own, with
 * its sysfs path as the kernel gives it (from `/sys/devices`).
 */
const CHAR_DEVICES: [kind: string, name: string, address: string, path: string][] = [
  [
    "input",
    "event3",
    "0000:00:14.0",
    "pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/0003:046D:C52B.0001/input/input5/event3",
  ],
  [
    "tty",
    "ttyUSB0",
    "0000:03:00.0",
    "pci0000:00/0000:00:1c.0/0000:03:00.0/usb3/3-1/3-1:1.0/ttyUSB0/tty/ttyUSB0",
  ],
  [
    "hidraw",
    "hidraw2",
    "0000:04:00.0",
    "pci0000:00/0000:00:1c.1/0000:04:00.0/usb5/5-1/5-1:1.1/0003:1050:0407.0003/hidraw/hidraw2",
  ],
  [
    "usbmisc",
    "hiddev0",
    "0000:05:00.3",
    "pci0000:00/0000:00:1c.2/0000:05:00.3/usb7/7-4/7-4:1.0/usbmisc/hiddev0",
  ],
  [
    "ppdev",
    "parport0",
    "0000:06:00.0",
    "pci0000:00/0000:00:1c.3/0000:06:00.0/parport0/ppdev/parport0",
  ],
  [
    "scsi_generic",
    "sg1",
    "0000:00:17.0",
    "pci0000:00/0000:00:17.0/ata2/host1/target1:0:0/1:0:0:0/scsi_generic/sg1",
  ],
];

Deno.test("charDeviceControllers(): the PCI function under a device of each class, through /dev links", async () => {
  await inTree((dir) => {
    for (const [kind, name, , path] of CHAR_DEVICES) {
      link(dir, `sys/class/${kind}/${name}`, `../../devices/${path}`);
    }
    link(dir, "dev/input/by-id/usb-Logitech_USB_Receiver-event-kbd", "../event3");
    link(dir, "dev/serial/by-id/usb-FTDI_FT232R-if00-port0", "../../ttyUSB0");
    const roots = { sysRoot: `${dir}/sys`, devRoot: `${dir}/dev` };
    const read = (path: string) => charDeviceControllers(denoFsReader(), roots, path);
    for (const [, name, address] of CHAR_DEVICES) {
      assertEquals([name, read(`/dev/${name}`)], [name, [address]]);
    }
    assertEquals(read("/dev/input/by-id/usb-Logitech_USB_Receiver-event-kbd"), ["0000:00:14.0"]);
    assertEquals(read("/dev/serial/by-id/usb-FTDI_FT232R-if00-port0"), ["0000:03:00.0"]);
    // A device of another class (a disk), a path outside /dev, /dev itself: none.
    link(
      dir,
      "sys/class/block/nvme0n1",
      "../../devices/pci0000:00/0000:00:01.1/0000:01:00.0/nvme/nvme0/nvme0n1",
    );
    assertEquals(read("/dev/nvme0n1"), []);
    assertEquals(read("/srv/event3"), []);
    assertEquals(read("/dev/.."), []);
  });
});

/** A USB device in `bus/usb/devices`: its sysfs name, IDs, bus and device number, controller. */
function usbDevice(
  dir: string,
  [name, ids, bus, device, controller]: [string, string, number, number, string],
): void {
  // A root hub (`usb1`) is the controller's child; a device hangs under the hubs of its name.
  const hubs = name.startsWith("usb")
    ? []
    : name.split(".").map((_, i, parts) => parts.slice(0, i + 1).join("."));
  const path = ["devices/pci0000:00/0000:00:08.1", controller, `usb${bus}`, ...hubs].join("/");
  Deno.mkdirSync(`${dir}/${path}`, { recursive: true });
  const [vendor, product] = ids.split(":");
  const files = { idVendor: vendor, idProduct: product, busnum: bus, devnum: device };
  for (const [file, value] of Object.entries(files)) {
    Deno.writeTextFileSync(`${dir}/${path}/${file}`, `${value}\n`);
  }
  link(dir, `bus/usb/devices/${name}`, `../../../${path}`);
}

Deno.test("usbDeviceControllers(): devices behind hubs, and a source's bus and device number each narrow it", async () => {
  await inTree((dir) => {
    // Two identical receivers: one behind a hub on bus 1, one on bus 3 of another controller.
    usbDevice(dir, ["1-2", "05e3:0610", 1, 2, "0000:0b:00.3"]);
    usbDevice(dir, ["1-2.3", "046d:c52b", 1, 5, "0000:0b:00.3"]);
    usbDevice(dir, ["3-1", "046d:c52b", 3, 2, "0000:0c:00.3"]);
    // An interface of the receiver, and bus 1's root hub: no device plugged in.
    Deno.mkdirSync(`${dir}/bus/usb/devices/1-2.3:1.0`);
    usbDevice(dir, ["usb1", "1d6b:0002", 1, 1, "0000:0b:00.3"]);
    const plugged = readUsbDevices(denoFsReader(), dir);
    assertEquals(plugged.map((d) => [d.name, d.bus, d.device, d.controllers]), [
      ["1-2", 1, 2, ["0000:0b:00.3"]],
      ["1-2.3", 1, 5, ["0000:0b:00.3"]],
      ["3-1", 3, 2, ["0000:0c:00.3"]],
    ]);
    const controllers = (bus: number | null, device: number | null) =>
      usbDeviceControllers(plugged, { vendorId: "046d", productId: "c52b", bus, device });
    assertEquals(controllers(null, null), ["0000:0b:00.3", "0000:0c:00.3"]);
    assertEquals(controllers(3, null), ["0000:0c:00.3"]);
    assertEquals(controllers(1, 5), ["0000:0b:00.3"]);
    // Device 2 of bus 1 is the hub, device 2 of bus 3 the other receiver: neither is this one.
    assertEquals(controllers(1, 2), []);
    assertEquals(controllers(3, 5), []);
    // Another product of the same vendor (its other receiver model), the root hub's IDs.
    const other = { vendorId: "046d", productId: "c534", bus: null, device: null };
    assertEquals(usbDeviceControllers(plugged, other), []);
    const rootHub = { vendorId: "1d6b", productId: "0002", bus: null, device: null };
    assertEquals(usbDeviceControllers(plugged, rootHub), []);
    // By bus and device number alone (libvirt's `<address>` without IDs).
    const byAddress = { vendorId: null, productId: null, bus: 1, device: 5 };
    assertEquals(usbDeviceControllers(plugged, byAddress), ["0000:0b:00.3"]);
  });
});

Deno.test("mdevControllers(): a UUID the domain writes in upper case names the device sysfs lists in lower case", async () => {
  await inTree((dir) => {
    const uuid = "c2177883-f1bb-47f0-914d-32a22e3a8804";
    link(dir, `bus/mdev/devices/${uuid}`, `../../../devices/pci0000:00/0000:00:02.0/${uuid}`);
    assertEquals(mdevControllers(denoFsReader(), dir, uuid.toUpperCase()), ["0000:00:02.0"]);
    assertEquals(mdevControllers(denoFsReader(), dir, uuid.replace("c2", "d2")), []);
  });
});

Deno.test("nicsUnder(): any name the kernel allows, a leading dot too; none for a name that would leave class/net", async () => {
  await inTree((dir) => {
    const nic = "../../devices/pci0000:00/0000:00:1c.4/0000:07:00.0/net";
    link(dir, "class/net/.uplink", `${nic}/.uplink`);
    link(dir, "class/net/enp7s0", `${nic}/enp7s0`);
    link(
      dir,
      "class/block/nvme0n1",
      "../../devices/pci0000:00/0000:00:01.1/0000:01:00.0/nvme/nvme0/nvme0n1",
    );
    const read = (name: string) => nicsUnder(denoFsReader(), dir, name);
    assertEquals(read(".uplink"), ["0000:07:00.0"]);
    assertEquals(read("enp7s0"), ["0000:07:00.0"]);
    // From a hostile domain: a path to a disk, the class directory itself.
    assertEquals(read("../block/nvme0n1"), []);
    assertEquals(read(".."), []);
    assertEquals(read("."), []);
    assertEquals(read(""), []);
  });
});
