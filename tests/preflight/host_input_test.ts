/**
 * `host-input`: a USB controller a VM's rule takes that carries the host's keyboard or mouse
 * (`class/input/inputN` links through its PCI function) is warned about, naming the controller,
 * the input devices and the VM; not refused, as a USB card with the guest's own keyboard is a
 * common setup. A built tree, with the input devices linked in as the kernel links them.
 */

import { assertEquals } from "../helpers/assert.ts";
import { readHostUse } from "../../lib/host/sysfs_device.ts";
import { runDoctor } from "../../lib/host/doctor.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import type { HostDescription } from "../../lib/testing/host_tree.ts";
import { type BuiltHost, domain, planOn, vm, warningCodes, withHost } from "./trees.ts";

const blank = { subsystem_vendor: null, subsystem_device: null, revision: null };

/** A root port, and behind it a USB 3 card at 05:00.0 in a group of its own. */
const USB_CARD: HostDescription = {
  host_use: [],
  devices: [
    { bdf: "0000:00:1c.0", group: 6, class: "0x060400", vendor: "0x8086", device: "0x7ab8" },
    { bdf: "0000:05:00.0", group: 7, class: "0x0c0330", vendor: "0x1912", device: "0x0014" },
  ].map((d) => ({ driver: null, ...blank, ...d })),
};

const USB_RULE =
  "vms:\n  vm1:\n    devices:\n      - name: usb\n        match: { vendor_device_id: 1912:0014 }\n";

/** Links `class/input/inputN` under `dir` to a device named `name` at `under` (a device path). */
function addInput(dir: string, entry: string, under: string, name: string): void {
  const device = `devices/${under}/${entry}`;
  Deno.mkdirSync(`${dir}/${device}`, { recursive: true });
  Deno.writeTextFileSync(`${dir}/${device}/name`, `${name}\n`);
  Deno.mkdirSync(`${dir}/class/input`, { recursive: true });
  Deno.symlinkSync(`../../${device}`, `${dir}/class/input/${entry}`);
}

const ON_CARD = "pci0000:00/0000:00:1c.0/0000:05:00.0/usb3/3-1/3-1:1.0/0003:046D:C52B.0001/input";

Deno.test("plan warns that the host loses the keyboard and mouse on a USB controller a VM takes", async () => {
  await withHost(USB_CARD, (built) => {
    addInput(built.dir, "input4", ON_CARD, "Logitech USB Receiver");
    addInput(built.dir, "input5", ON_CARD, "Logitech USB Receiver Mouse");
    // The PS/2 keyboard hangs under no PCI function: the host keeps it.
    addInput(built.dir, "input2", "platform/i8042/serio0/input", "AT Translated Set 2 keyboard");
    // As before, the host's use does not count it: the policy is a warning, not a refusal.
    assertEquals(
      readHostUse(denoFsReader(), { root: built.dir, live: false, devices: built.host.devices }),
      [],
    );
    const vm1 = vm(planOn(built, USB_RULE, { vm1: domain("vm1") }), "vm1");
    assertEquals([vm1.errors, vm1.hostdevs], [[], ["0000:05:00.0"]]);
    // Before: no warning at all.
    const found = vm1.warnings.filter((w) => w.code === "host-input");
    assertEquals(found.map((w) => [w.devices, w.rule, w.vm, w.location]), [
      [["0000:05:00.0"], "usb", "vm1", "preflight.yaml:5:9"],
    ]);
    assertEquals(
      found[0]!.message,
      'Device 0000:05:00.0 (rule "usb") carries the host\'s input devices "Logitech USB Receiver", "Logitech USB Receiver Mouse" (/sys/class/input): the host loses them while "vm1" runs; plug what the host needs into another controller',
    );
  });
});

Deno.test("plan gives no host-input warning where no input device hangs under the VM's devices", async () => {
  await withHost(USB_CARD, (built) => {
    // No class/input at all (a captured tree, this VM's live /sys), then only a PS/2 keyboard.
    assertEquals(warningCodes(vm(planOn(built, USB_RULE, { vm1: domain("vm1") }), "vm1")), []);
    addInput(built.dir, "input2", "platform/i8042/serio0/input", "AT Translated Set 2 keyboard");
    assertEquals(warningCodes(vm(planOn(built, USB_RULE, { vm1: domain("vm1") }), "vm1")), []);
  });
});

Deno.test("doctor lists the controllers the host's input devices hang under", async () => {
  const hostInput = (built: BuiltHost) =>
    runDoctor({ host: built.host, reader: denoFsReader(), live: false, facts: built.facts })
      .filter((f) => f.check === "host-input");
  // None hangs under a PCI function: nothing to list.
  await withHost(USB_CARD, (built) => assertEquals(hostInput(built), []));
  await withHost(USB_CARD, (built) => {
    addInput(built.dir, "input4", ON_CARD, "Logitech USB Receiver");
    assertEquals(hostInput(built), [{
      check: "host-input",
      status: "ok",
      summary:
        'The host\'s input devices hang under 0000:05:00.0 ("Logitech USB Receiver"): a VM given it takes them from the host while it runs (plan warns, host-input)',
      hint: null,
    }]);
  });
});
