/**
 * `boot-vga` and `host-driver-busy` on the captured X570 host (GTX 1080 Ti at 0b:00.0, GT 710 at
 * 0c:00.0), with `boot_vga`, `/proc/iomem`, `/proc/modules`, processes holding the GPU open and a
 * console added.
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { libcSysfsReader } from "../../ffi/libc_fs.ts";
import { parseIomemFramebuffers, readHostFacts } from "../../lib/host/preflight.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { described, domain, planOn, vm, warningCodes, withHost } from "./trees.ts";

const GPU_RULE =
  "vms:\n  win:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: 10de:1b06 }\n";

/** `/proc/iomem` as root sees it on such a host: BOOTFB nested in the GPU's first BAR. */
const IOMEM = `00000000-00000fff : Reserved
e0000000-f1ffffff : PCI Bus 0000:0b
  e0000000-efffffff : 0000:0b:00.0
    e0000000-e07e8fff : BOOTFB
  f0000000-f1ffffff : 0000:0b:00.0
f6000000-f70fffff : PCI Bus 0000:0c
  f6000000-f6ffffff : 0000:0c:00.0
`;

Deno.test("boot-vga: the boot GPU whose BAR BOOTFB holds is a warning with the kernel parameter", async () => {
  const description = described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": { boot_vga: true }, "0000:0c:00.0": { boot_vga: false } },
    host: { proc: { iomem: IOMEM } },
  });
  await withHost(description, (built) => {
    const win = vm(planOn(built, GPU_RULE, { win: domain("win") }), "win");
    const found = win.warnings.filter((w) => w.code === "boot-vga");
    assertEquals(found.map((w) => [w.devices, w.rule]), [[["0000:0b:00.0"], "gpu"]]);
    assertMatch(found[0]!.message, /BOOTFB holds its memory/);
    assertMatch(found[0]!.message, /initcall_blacklist=sysfb_init/);
    assertMatch(found[0]!.message, /secondary GPU/);
    // A warning: the VM is still changed.
    assertEquals(win.changed, true);
    // Without facts (a host from libvirt or a description), nothing is judged.
    const blind = vm(planOn(built, GPU_RULE, { win: domain("win") }, { facts: false }), "win");
    assertEquals(warningCodes(blind).includes("boot-vga"), false);
  });
});

Deno.test("boot-vga: no warning for a secondary GPU, nor for the boot GPU once no framebuffer holds it", async () => {
  const secondary = described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": { boot_vga: false }, "0000:0c:00.0": { boot_vga: true } },
    host: { proc: { iomem: IOMEM } },
  });
  await withHost(secondary, (built) => {
    assertEquals(warningCodes(vm(planOn(built, GPU_RULE, { win: domain("win") }), "win")), []);
  });
  const released = described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": { boot_vga: true } },
    host: { proc: { iomem: IOMEM.replace(/ *e0000000-e07e8fff : BOOTFB\n/, "") } },
  });
  await withHost(released, (built) => {
    assertEquals(warningCodes(vm(planOn(built, GPU_RULE, { win: domain("win") }), "win")), []);
  });
});

Deno.test("boot-vga: BOOTFB in a BAR listed past the first 64 KiB of /proc/iomem is still found, through both readers", async () => {
  // A big server's table: thousands of reserved and PCI ranges before the GPU's BAR.
  const filler = Array.from(
    { length: 3000 },
    (_, i) => `${(i * 0x1000).toString(16).padStart(8, "0")}-00000fff : Reserved\n`,
  ).join("");
  const iomem = filler + IOMEM.slice(IOMEM.indexOf("e0000000"));
  assertEquals(iomem.length > 65536 && iomem.indexOf("BOOTFB") > 65536, true);
  const description = described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": { boot_vga: true }, "0000:0c:00.0": { boot_vga: false } },
    host: { proc: { iomem } },
  });
  await withHost(description, (built) => {
    const win = vm(planOn(built, GPU_RULE, { win: domain("win") }), "win");
    assertEquals(warningCodes(win).includes("boot-vga"), true);
    for (const reader of [denoFsReader(), libcSysfsReader()]) {
      const facts = readHostFacts({ reader, sysRoot: built.dir, procRoot: `${built.dir}/proc` });
      assertEquals([...facts.firmwareFramebuffers() ?? []], [["0000:0b:00.0", ["BOOTFB"]]]);
    }
  });
});

Deno.test("parseIomemFramebuffers: nesting works on zeroed addresses, overlap on a top-level efifb", () => {
  const unprivileged = IOMEM.replace(/[0-9a-f]{8}-[0-9a-f]{8}/g, "00000000-00000000");
  assertEquals([...parseIomemFramebuffers(unprivileged)], [["0000:0b:00.0", ["BOOTFB"]]]);
  const old = "e0000000-efffffff : 0000:0b:00.0\ne0000000-e02fffff : efifb\n" +
    "f6000000-f6ffffff : 0000:0c:00.0\n";
  assertEquals([...parseIomemFramebuffers(old)], [["0000:0b:00.0", ["efifb"]]]);
  assertEquals([...parseIomemFramebuffers("00000000-00000000 : efifb\n")], []);
});

const NVIDIA = {
  "0000:0b:00.0": { driver: "nvidia" },
  "0000:0b:00.1": { driver: "snd_hda_intel" },
};

Deno.test("host-driver-busy: nvidia's references, the processes holding the GPU and the console are named", async () => {
  const description = described("x570-aorus-pro-wifi", {
    devices: {
      ...NVIDIA,
      "0000:0b:00.0": {
        driver: "nvidia",
        drm: { card: 1, clients: [{ command: "Xorg", pid: 1433 }] },
        console: true,
      },
    },
    host: {
      proc: {
        modules: "nvidia_uvm 1437696 0 - Live 0x0\nnvidia_modeset 1314816 2 - Live 0x0\n" +
          "nvidia 56807424 5 nvidia_uvm,nvidia_modeset, Live 0x0\n",
      },
    },
  });
  await withHost(description, (built) => {
    const win = vm(planOn(built, GPU_RULE, { win: domain("win") }), "win");
    const busy = win.warnings.filter((w) => w.code === "host-driver-busy");
    assertEquals(busy.map((w) => w.devices), [["0000:0b:00.0"]]);
    const message = busy[0]!.message;
    assertMatch(message, /host driver "nvidia", which is in use/);
    assertMatch(message, /module nvidia has 3 references beyond .*\(nvidia_uvm, nvidia_modeset\)/);
    assertMatch(message, /its device nodes are open in Xorg \(pid 1433\)/);
    assertMatch(message, /framebuffer console on fb0/);
    assertMatch(message, /detach .* hangs/);
    // The normal-flow note stays: busy is the risk on top of it.
    assertEquals(warningCodes(win).includes("host-driver-in-use"), true);
  });
});

Deno.test("host-driver-busy: none when the module has only its dependent modules", async () => {
  const description = described("x570-aorus-pro-wifi", {
    devices: { ...NVIDIA, "0000:0c:00.0": { driver: "nvidia" } },
    host: { proc: { modules: "nvidia 56807424 1 nvidia_modeset, Live 0x0\n" } },
  });
  await withHost(description, (built) => {
    const win = vm(planOn(built, GPU_RULE, { win: domain("win") }), "win");
    assertEquals(warningCodes(win).includes("host-driver-busy"), false);
  });
  const other = described("x570-aorus-pro-wifi", {
    devices: { ...NVIDIA, "0000:0c:00.0": { driver: "nvidia" } },
    host: { proc: { modules: "nvidia 56807424 2 nvidia_modeset, Live 0x0\n" } },
  });
  await withHost(other, (built) => {
    const win = vm(planOn(built, GPU_RULE, { win: domain("win") }), "win");
    const busy = win.warnings.find((w) => w.code === "host-driver-busy");
    // The module drives the GT 710 too: its reference may be the host's card's.
    assertMatch(
      busy?.message ?? "",
      /1 reference .*the module also drives 0000:0c:00\.0: its references may be theirs/,
    );
  });
});

Deno.test("host-driver-busy: the module note only when a module reference is among the users", async () => {
  // Only Xorg holds the guest's GPU; the GT 710 shares the nvidia module, which has no reference
  // beyond nvidia_modeset: the references cannot be the GT 710's, so nothing is said of it.
  const description = described("x570-aorus-pro-wifi", {
    devices: {
      ...NVIDIA,
      "0000:0b:00.0": {
        driver: "nvidia",
        drm: { card: 1, clients: [{ command: "Xorg", pid: 1433 }] },
      },
      "0000:0c:00.0": { driver: "nvidia" },
    },
    host: { proc: { modules: "nvidia 56807424 1 nvidia_modeset, Live 0x0\n" } },
  });
  await withHost(description, (built) => {
    const win = vm(planOn(built, GPU_RULE, { win: domain("win") }), "win");
    const busy = win.warnings.find((w) => w.code === "host-driver-busy")?.message ?? "";
    assertMatch(busy, /which is in use: its device nodes are open in Xorg \(pid 1433\): libvirt/);
    assertEquals(busy.includes("the module also drives"), false, busy);
  });
});

Deno.test("host-driver-busy: none for a GPU on vfio-pci, whatever vfio_pci's references", async () => {
  // Guests running with other devices hold vfio_pci: the GPU has no host driver to detach.
  const description = described("x570-aorus-pro-wifi", {
    devices: { ...NVIDIA, "0000:0b:00.0": { driver: "vfio-pci" } },
    host: { proc: { modules: "vfio_pci 16384 2 - Live 0x0\nnvidia 56807424 3 - Live 0x0\n" } },
  });
  await withHost(description, (built) => {
    const win = vm(planOn(built, GPU_RULE, { win: domain("win") }), "win");
    assertEquals(warningCodes(win).includes("host-driver-busy"), false, warningCodes(win).join());
  });
});

/** Two GTX 1080 Ti: the one in slot 1 for the guest, the host's console on the other. */
function twinGpus(subsystem: { "0000:0b:00.0": string; "0000:0c:00.0": string }) {
  const gpu = (bdf: keyof typeof subsystem) => ({
    device: "0x1b06",
    subsystem_vendor: "0x1458",
    subsystem_device: subsystem[bdf],
    name: "NVIDIA Corporation GP102 [GeForce GTX 1080 Ti]",
  });
  return described("x570-aorus-pro-wifi", {
    devices: {
      "0000:0b:00.0": {
        ...gpu("0000:0b:00.0"),
        slot: "1",
        driver: "nvidia",
        drm: { card: 1, clients: [{ command: "Xorg", pid: 1433 }] },
      },
      "0000:0c:00.0": { ...gpu("0000:0c:00.0"), driver: "nvidia", console: true },
    },
  });
}

const SLOT_RULE = "vms:\n  win:\n    devices:\n      - name: gpu\n" +
  "        match: { vendor_device_id: 10de:1b06, slot: '1' }\n";

Deno.test("host-driver-busy: no vfio-pci.ids= advice that would take the host's GPU of the same model", async () => {
  await withHost(twinGpus({ "0000:0b:00.0": "3752", "0000:0c:00.0": "3752" }), (built) => {
    const win = vm(planOn(built, SLOT_RULE, { win: domain("win") }), "win");
    const busy = win.warnings.find((w) => w.code === "host-driver-busy");
    assertEquals(busy?.devices, ["0000:0b:00.0"]);
    const message = busy!.message;
    assertMatch(message, /stop them \(display manager/);
    assertMatch(
      message,
      /not vfio-pci\.ids=10de:1b06 at boot: it would bind 0000:0c:00\.0 too \(the same IDs\)/,
    );
    assertEquals(/\(vfio-pci\.ids=/.test(message), false);
    // The console is on the host's GPU, not this one: nothing to unbind for it.
    assertEquals(message.includes("vtconsole"), false);
  });
  await withHost(twinGpus({ "0000:0b:00.0": "3752", "0000:0c:00.0": "3702" }), (built) => {
    const win = vm(planOn(built, SLOT_RULE, { win: domain("win") }), "win");
    const busy = win.warnings.find((w) => w.code === "host-driver-busy");
    // The subsystem IDs tell the two boards apart: the entry names them.
    assertMatch(busy?.message ?? "", /: vfio-pci\.ids=10de:1b06:1458:3752, and "softdep /);
  });
});

Deno.test("host-driver-busy: the console to unbind is the framebuffer console's own vtconsole", async () => {
  const description = described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": { driver: "nvidia", console: true } },
  });
  await withHost(description, (built) => {
    Deno.renameSync(`${built.dir}/class/vtconsole/vtcon1`, `${built.dir}/class/vtconsole/vtcon2`);
    Deno.mkdirSync(`${built.dir}/class/vtconsole/vtcon0`);
    Deno.writeTextFileSync(`${built.dir}/class/vtconsole/vtcon0/name`, "(S) dummy device\n");
    Deno.writeTextFileSync(`${built.dir}/class/vtconsole/vtcon0/bind`, "0\n");
    const win = vm(planOn(built, GPU_RULE, { win: domain("win") }), "win");
    const message = win.warnings.find((w) => w.code === "host-driver-busy")?.message ?? "";
    assertMatch(message, /the framebuffer console on fb0 \(vtcon2\)/);
    assertMatch(message, /unbind the console \(echo 0 > \/sys\/class\/vtconsole\/vtcon2\/bind\)/);
    // Only the console holds it: there is nothing else to stop.
    assertEquals(message.includes("stop them"), false);
    // vfio-pci must load before the GPU's driver (nvidia here), or the entry binds nothing.
    assertMatch(
      message,
      /or bind the GPU to vfio-pci at boot: vfio-pci\.ids=10de:1b06, and "softdep nvidia pre: vfio-pci" in \/etc\/modprobe\.d so that vfio-pci loads first; then rebuild the initramfs, which holds a copy of modprobe\.d \(update-initramfs -u, dracut -f or mkinitcpio -P\)$/,
    );
  });
});

Deno.test("host-driver-busy: a framebuffer fbcon does not draw on is no console user (fb0, or fbcon=map:)", async () => {
  const description = described("x570-aorus-pro-wifi", {
    devices: {
      "0000:0b:00.0": { driver: "nvidia", console: true },
      "0000:0c:00.0": { driver: "nvidia" },
    },
    host: { proc: { modules: "nvidia 56807424 3 nvidia_modeset, Live 0x0\n" } },
  });
  await withHost(description, (built) => {
    // The guest's GPU has fb1, the host's fb0, where fbcon draws by default.
    const devices = `${built.dir}/bus/pci/devices`;
    Deno.renameSync(`${devices}/0000:0b:00.0/graphics/fb0`, `${devices}/0000:0b:00.0/graphics/fb1`);
    Deno.mkdirSync(`${devices}/0000:0c:00.0/graphics/fb0`, { recursive: true });
    // Facts read anew each time (they are read once per run).
    const message = () => {
      const facts = readHostFacts({
        reader: denoFsReader(),
        sysRoot: built.dir,
        procRoot: `${built.dir}/proc`,
      });
      return vm(planOn({ ...built, facts }, GPU_RULE, { win: domain("win") }), "win").warnings
        .find((w) => w.code === "host-driver-busy")?.message ?? "";
    };
    assertMatch(message(), /module nvidia has 2 references/);
    assertEquals(message().includes("framebuffer console"), false);
    assertEquals(message().includes("vtconsole"), false);
    // Consoles mapped to fb1 (on the tree's command line, where a snapshot keeps it): this GPU's.
    Deno.writeTextFileSync(`${built.dir}/cmdline`, "quiet fbcon=map:1\n");
    assertMatch(message(), /the framebuffer console on fb1 \(vtcon1\)/);
  });
});

Deno.test("host-driver-busy: a GPU driver built into the kernel gets driverctl, not vfio-pci.ids= and softdep, which it binds before", async () => {
  // nouveau built in (not in /proc/modules), the console on its GPU.
  const description = described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": { driver: "nouveau", console: true } },
    host: { proc: { modules: "snd_hda_intel 57344 3 - Live 0x0\n" } },
  });
  await withHost(description, (built) => {
    const win = vm(planOn(built, GPU_RULE, { win: domain("win") }), "win");
    const message = win.warnings.find((w) => w.code === "host-driver-busy")?.message ?? "";
    assertMatch(message, /unbind the console \(echo 0 > \/sys\/class\/vtconsole\/vtcon1\/bind\)/);
    assertEquals(message.includes("softdep"), false, message);
    assertEquals(message.includes("vfio-pci.ids="), false, message);
    assertMatch(
      message,
      /; "nouveau" is built into the kernel and binds 0000:0b:00\.0 before vfio-pci can: once the GPU is free, "driverctl set-override 0000:0b:00\.0 vfio-pci", which unbinds it at once and keeps it with vfio-pci across reboots \("driverctl unset-override 0000:0b:00\.0" undoes it\)$/,
    );
  });
});

Deno.test("host-driver-busy: with a vfio-pci.ids= on the command line already, the advice extends it rather than adding a second that would overwrite it", async () => {
  // The GT 710 at 0c:00.0 is bound at boot for another guest; the 1080 Ti is busy with nvidia.
  const description = (cmdline: string) =>
    described("x570-aorus-pro-wifi", {
      devices: { "0000:0b:00.0": { driver: "nvidia", console: true } },
      host: { cmdline },
    });
  await withHost(description("quiet vfio-pci.ids=10de:128b,10de:0e0f"), (built) => {
    const win = vm(planOn(built, GPU_RULE, { win: domain("win") }), "win");
    const message = win.warnings.find((w) => w.code === "host-driver-busy")?.message ?? "";
    assertMatch(
      message,
      /or bind the GPU to vfio-pci at boot: add 10de:1b06 to the vfio-pci\.ids= on the kernel command line, not as a second one \(vfio-pci keeps only the last\): vfio-pci\.ids=10de:128b,10de:0e0f,10de:1b06, and "softdep nvidia pre: vfio-pci"/,
    );
  });
  // Already named there: only the load order is missing.
  await withHost(description("quiet vfio-pci.ids=10de:1b06,10de:128b"), (built) => {
    const win = vm(planOn(built, GPU_RULE, { win: domain("win") }), "win");
    const message = win.warnings.find((w) => w.code === "host-driver-busy")?.message ?? "";
    assertMatch(
      message,
      /or bind the GPU to vfio-pci at boot: the kernel command line's vfio-pci\.ids=10de:1b06,10de:128b names it already: put "softdep nvidia pre: vfio-pci" in \/etc\/modprobe\.d/,
    );
  });
});
