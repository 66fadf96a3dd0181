/**
 * `rom-unreadable` refuses the VM whose rule's `rom.file` QEMU cannot use: missing, not a ROM
 * image, not readable by QEMU's user, where AppArmor denies it; and hostile paths (a FIFO,
 * `/dev/zero`, a link loop, a huge file) are judged without hanging or reading them whole.
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { described, domain, planOn, vm, withHost } from "./trees.ts";
import { apparmorLetsQemuRead } from "../../lib/plan/preflight.ts";
import { setXattr } from "../helpers/xattr.ts";
import { tempHostTree } from "../helpers/hosts.ts";

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

async function refusal(
  path: string,
  security: { apparmor?: boolean; selinux?: boolean } = {},
): Promise<string | null> {
  const description = described("x570-aorus-pro-wifi", {
    host: { security: { apparmor: false, ...security } },
  });
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
    // A rule that matches nothing is refused for that alone: its ROM is not judged.
    const nothing = described("x570-aorus-pro-wifi");
    await withHost(nothing, (built) => {
      const rule = romRule(`${dir}/missing.rom`).replace("10de:1b06", "10de:ffff");
      const win = vm(planOn(built, rule, { win: domain("win") }), "win");
      assertEquals(win.errors.map((e) => e.code), ["no-match"]);
    });
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
    // Half a signature is none.
    Deno.writeFileSync(`${dir}/half.rom`, new Uint8Array([0x55, 0x00, 0x40, 0xe9]));
    Deno.chmodSync(`${dir}/half.rom`, 0o644);
    assertMatch((await refusal(`${dir}/half.rom`))!, /option ROM signature 0x55AA/);
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
      (await refusal(`${dir}/gpu.rom`, { apparmor: true }))!,
      /outside the paths AppArmor lets QEMU read/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("rom-unreadable: an SELinux type QEMU may not read, only while SELinux enforces", async () => {
  const dir = openDir();
  try {
    const rom = (type: string) => {
      const path = `${dir}/${type}.rom`;
      Deno.writeFileSync(path, ROM);
      Deno.chmodSync(path, 0o644);
      setXattr(path, "security.selinux", `unconfined_u:object_r:${type}:s0`);
      return path;
    };
    for (
      const type of [
        "user_home_t",
        "admin_home_t",
        "user_tmp_t",
        "tmp_t",
        "default_t",
        "unlabeled_t",
      ]
    ) {
      assertMatch(
        (await refusal(rom(type), { selinux: true })) ?? `${type} passed`,
        new RegExp(`has SELinux type ${type}, which QEMU \\(svirt_t\\) may not read`),
      );
    }
    // Types QEMU reads: its own ROMs' (usr_t), and what libvirt gives a kernel.
    assertEquals(await refusal(rom("usr_t"), { selinux: true }), null);
    assertEquals(await refusal(rom("virt_content_t"), { selinux: true }), null);
    // Permissive or off: the label stops nothing.
    assertEquals(await refusal(rom("user_home_t"), { selinux: false }), null);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

const REPO = new URL("../../", import.meta.url).pathname;

Deno.test("rom-unreadable: a ROM file passthrough may not look at is not judged", async () => {
  // A plan with read access to the tree and the sources only, as a library user may run it: the
  // ROM, not a ROM image, cannot even be looked at (Deno's NotCapable, or EACCES for a user).
  await using tree = await tempHostTree(described("x570-aorus-pro-wifi"), {
    prefix: "passthrough-rom-tree-",
  });
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-rom-" });
  try {
    Deno.writeFileSync(`${dir}/gpu.rom`, new Uint8Array([0x4e, 0x56]));
    const script = `${tree.dir}/plan.ts`;
    Deno.writeTextFileSync(
      script,
      `import { discoverTree, domain, planOn, vm } from ${
        JSON.stringify(`${REPO}tests/preflight/trees.ts`)
      };
const built = await discoverTree(${JSON.stringify(tree.dir)});
const rom = ${JSON.stringify(`${dir}/gpu.rom`)};
const win = vm(planOn(built, ${
        JSON.stringify(romRule(`${dir}/gpu.rom`))
      }, { win: domain("win") }), "win");
console.log(JSON.stringify([built.facts.romFile(rom).kind, win.errors.map((e) => e.code), win.changed]));
`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        "--no-prompt",
        `--config=${REPO}deno.json`,
        `--allow-read=${tree.dir},${REPO}`,
        "--allow-env",
        script,
      ],
      cwd: REPO,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 0, stderr);
    assertEquals(JSON.parse(new TextDecoder().decode(out.stdout)), ["unchecked", [], true]);
    // Where it can look, the same file is refused.
    assertMatch((await refusal(`${dir}/gpu.rom`))!, /option ROM signature 0x55AA/);
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
      "/usr/share/misc/sgabios.bin.d/gpu.rom",
      "/srv/usr/share/vgabios/gpu.rom",
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
      assertEquals(await refusal(`${dir}/gpu.rom`, { apparmor: true }), null);
      Deno.writeFileSync(`${dir}/real.rom`, ROM);
      Deno.chmodSync(`${dir}/real.rom`, 0o644);
      Deno.symlinkSync(`${dir}/real.rom`, `${dir}/link.rom`);
      assertMatch(
        (await refusal(`${dir}/link.rom`, { apparmor: true }))!,
        /outside the paths AppArmor lets QEMU read \(it resolves to .*real\.rom\): libvirt adds a hostdev's device files to the VM's profile, not its ROM file/,
      );
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
