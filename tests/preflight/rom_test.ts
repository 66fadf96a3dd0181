/**
 * `rom-unreadable` refuses the VM whose rule's `rom.file` QEMU cannot use: missing, not a ROM
 * image, not readable by QEMU's user, where AppArmor denies it; and hostile paths (a FIFO,
 * `/dev/zero`, a link loop, a huge file) are judged without hanging or reading them whole.
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { described, domain, planOn, vm, withHost } from "./trees.ts";
import { apparmorLetsQemuRead } from "../../lib/plan/preflight.ts";

function romRule(path: string): string {
  return "vms:\n  win:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: 10de:1b06 }\n" +
    `        rom: { file: ${JSON.stringify(path)} }\n`;
}

/** A ROM image: the 0x55AA signature and a few bytes. */
const ROM = new Uint8Array([0x55, 0xaa, 0x40, 0xe9, 0, 0, 0, 0]);

/** A world-searchable temporary directory (Deno makes them 0700, which QEMU's user cannot enter). */
function openDir(): string {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-rom-" });
  Deno.chmodSync(dir, 0o755);
  return dir;
}

async function refusal(path: string, apparmor = false): Promise<string | null> {
  const description = described("x570-aorus-pro-wifi", { host: { security: { apparmor } } });
  return await withHost(description, (built) => {
    const win = vm(planOn(built, romRule(path), { win: domain("win") }), "win");
    const errors = win.errors.filter((e) => e.code === "rom-unreadable");
    if (errors.length === 0) {
      assertEquals(win.changed, true);
      return null;
    }
    // A refusal: the definition is left as it is.
    assertEquals([win.changed, errors[0]!.rule, errors[0]!.devices], [false, "gpu", [
      "0000:0b:00.0",
    ]]);
    assertMatch(errors[0]!.message, /\/usr\/share\/vgabios\//);
    return errors[0]!.message;
  });
}

Deno.test("rom-unreadable: a valid, world-readable image passes; a missing one is refused", async () => {
  const dir = openDir();
  try {
    Deno.writeFileSync(`${dir}/gpu.rom`, ROM);
    Deno.chmodSync(`${dir}/gpu.rom`, 0o644);
    assertEquals(await refusal(`${dir}/gpu.rom`), null);
    assertMatch(
      (await refusal(`${dir}/missing.rom`))!,
      /missing\.rom" of rule "gpu" does not exist/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("rom-unreadable: no 0x55AA signature, not readable by libvirt-qemu, in a closed directory", async () => {
  const dir = openDir();
  try {
    Deno.writeFileSync(`${dir}/header.rom`, new Uint8Array([0x4e, 0x56, 0x47, 0x49, 0x55, 0xaa]));
    Deno.chmodSync(`${dir}/header.rom`, 0o644);
    assertMatch((await refusal(`${dir}/header.rom`))!, /option ROM signature 0x55AA/);
    Deno.writeFileSync(`${dir}/private.rom`, ROM);
    Deno.chmodSync(`${dir}/private.rom`, 0o600);
    assertMatch(
      (await refusal(`${dir}/private.rom`))!,
      /not readable by QEMU's user "libvirt-qemu" \(mode 600/,
    );
    Deno.mkdirSync(`${dir}/closed`, { mode: 0o700 });
    Deno.chmodSync(`${dir}/closed`, 0o700);
    Deno.writeFileSync(`${dir}/closed/gpu.rom`, ROM);
    Deno.chmodSync(`${dir}/closed/gpu.rom`, 0o644);
    assertMatch(
      (await refusal(`${dir}/closed/gpu.rom`))!,
      /closed, which "libvirt-qemu" cannot enter/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("rom-unreadable: outside the paths AppArmor lets QEMU read", async () => {
  const dir = openDir();
  try {
    Deno.writeFileSync(`${dir}/gpu.rom`, ROM);
    Deno.chmodSync(`${dir}/gpu.rom`, 0o644);
    assertMatch(
      (await refusal(`${dir}/gpu.rom`, true))!,
      /outside the paths AppArmor lets QEMU read/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("rom-unreadable: a FIFO, /dev/zero, a link loop and a huge file neither hang nor are read whole", async () => {
  const dir = openDir();
  try {
    const fifo = new Deno.Command("mkfifo", { args: [`${dir}/fifo.rom`] }).outputSync();
    assertEquals(fifo.success, true);
    assertMatch((await refusal(`${dir}/fifo.rom`))!, /is a FIFO, not a ROM image file/);
    Deno.symlinkSync("/dev/zero", `${dir}/zero.rom`);
    assertMatch((await refusal(`${dir}/zero.rom`))!, /is a character device/);
    assertMatch((await refusal("/dev/zero"))!, /a kernel or device file/);
    Deno.symlinkSync(`${dir}/loop-b.rom`, `${dir}/loop-a.rom`);
    Deno.symlinkSync(`${dir}/loop-a.rom`, `${dir}/loop-b.rom`);
    assertMatch((await refusal(`${dir}/loop-a.rom`))!, /symbolic link loop/);
    // 64 GiB, sparse: reading it whole would take minutes or fail; only its first bytes are read.
    using huge = Deno.openSync(`${dir}/huge.rom`, { write: true, create: true });
    huge.truncateSync(64 * 2 ** 30);
    Deno.chmodSync(`${dir}/huge.rom`, 0o644);
    const started = performance.now();
    assertMatch((await refusal(`${dir}/huge.rom`))!, /option ROM signature/);
    assertEquals(performance.now() - started < 20_000, true);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("rom-unreadable: AppArmor's readable paths are libvirt-qemu's firmware directories", () => {
  // From libvirt's src/security/apparmor/libvirt-qemu.in ("access to firmware's etc").
  for (
    const path of [
      "/usr/share/vgabios/gpu.rom",
      "/usr/share/edk2-ovmf/x64/OVMF.fd",
      "/usr/share/qemu-kvm/gpu.rom",
      "/usr/share/sgabios/sgabios.bin",
      "/usr/share/misc/sgabios.bin",
      "/usr/share/slof/slof.bin",
    ]
  ) assertEquals([path, apparmorLetsQemuRead(path)], [path, true]);
  // Not in it: iPXE's own directory (QEMU reaches its ROMs through /usr/share/qemu links, which
  // AppArmor resolves), libvirt's state directory, a look-alike prefix, a climb out.
  for (
    const path of [
      "/usr/lib/ipxe/qemu/efi-e1000.rom",
      "/var/lib/libvirt/vbios/gpu.rom",
      "/usr/share/vgabios-old/gpu.rom",
      "/usr/share/misc/magic",
      "/usr/share/vgabios/../../../home/u/gpu.rom",
    ]
  ) assertEquals([path, apparmorLetsQemuRead(path)], [path, false]);
});

const QEMU_ROM = "/usr/share/qemu/linuxboot.bin";

Deno.test({
  name: "rom-unreadable: AppArmor judges a link by where it leads",
  ignore: (() => {
    try {
      return !Deno.statSync(QEMU_ROM).isFile;
    } catch {
      return true;
    }
  })(),
  async fn() {
    const dir = openDir();
    try {
      Deno.symlinkSync(QEMU_ROM, `${dir}/gpu.rom`);
      assertEquals(await refusal(`${dir}/gpu.rom`, true), null);
      Deno.writeFileSync(`${dir}/real.rom`, ROM);
      Deno.chmodSync(`${dir}/real.rom`, 0o644);
      Deno.symlinkSync(`${dir}/real.rom`, `${dir}/link.rom`);
      assertMatch(
        (await refusal(`${dir}/link.rom`, true))!,
        /outside the paths AppArmor lets QEMU read \(it resolves to .*real\.rom\): libvirt adds a hostdev's device files to the VM's profile, not its ROM file/,
      );
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
