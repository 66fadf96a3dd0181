/**
 * `doctor`'s `boot-binding` finding: what `vfio-pci.ids` entries on the kernel command line and in
 * modprobe.d take at boot, on the captured X570 host (its GTX 1080 Ti at 0b:00.0 and a second card
 * of the same model put at 0c:00.0) built into a tree, and modprobe.d files written per case.
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { runCli } from "../helpers/cli.ts";
import { tempHostTree } from "../helpers/hosts.ts";
import { type DoctorFinding, runDoctor } from "../../lib/host/doctor.ts";
import { modprobeVfioIds } from "../../lib/host/boot_binding.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import type { HostDescription } from "../../lib/testing/host_tree.ts";
import { described, withHost } from "../preflight/trees.ts";
import { nvmeDescription } from "../../lib/testing/host_generator.ts";

/** The X570 with a second GTX 1080 Ti at 0c:00.0, subsystem devices as given, and `host`. */
function twins(
  subsystems: [string, string],
  host: Omit<Partial<HostDescription>, "devices"> = {},
): HostDescription {
  const gpu = (subsystem_device: string) => ({
    device: "0x1b06",
    subsystem_vendor: "0x1458",
    subsystem_device,
  });
  return described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": gpu(subsystems[0]), "0000:0c:00.0": gpu(subsystems[1]) },
    host,
  });
}

const CMDLINE = "BOOT_IMAGE=/vmlinuz amd_iommu=on vfio-pci.ids=10de:1b06,10de:10ef";

/** What a captured tree's `boot-binding` summary ends with: it holds no /etc to read. */
const UNREAD = "; /etc/modprobe.d and /etc/driverctl.d not read (a captured tree holds no /etc)";

/**
 * The `boot-binding` finding of a captured tree, its summary without {@link UNREAD}, which it
 * must end with.
 */
function commandLineOnly(finding: DoctorFinding | undefined): DoctorFinding | undefined {
  if (finding === undefined) return undefined;
  assertEquals(finding.summary.endsWith(UNREAD), true, finding.summary);
  return { ...finding, summary: finding.summary.slice(0, -UNREAD.length) };
}

async function bootBinding(description: HostDescription) {
  return await withHost(
    description,
    ({ host }) =>
      commandLineOnly(
        runDoctor({ host, reader: denoFsReader(), live: false }).find((f) =>
          f.check === "boot-binding"
        ),
      ),
  );
}

Deno.test("boot-binding: an entry that takes every card of the model warns and names them", async () => {
  const finding = await bootBinding(twins(["3752", "3752"], { cmdline: CMDLINE }));
  assertEquals(finding?.status, "warn");
  assertMatch(
    finding!.summary,
    /^vfio-pci\.ids=10de:1b06 \(kernel command line\) takes every card of that model: 0000:0b:00\.0, 0000:0c:00\.0; the host can use none of them$/,
  );
  // Identical boards: no narrower entry exists.
  assertMatch(finding!.hint ?? "", /^remove 10de:1b06 \(libvirt detaches a managed hostdev/);
});

Deno.test("boot-binding: an entry that takes two functions of one slot on a root bus other than 00 takes two devices", async () => {
  // Two identical accelerators built into root bus 80's slot 03: each a device of its own (not
  // one card's functions), so the entry takes both where one may be all the user meant.
  const accelerator = (bdf: string, group: number) => ({
    bdf,
    group,
    class: "0x120000",
    vendor: "0x8086",
    device: "0x4940",
    subsystem_vendor: null,
    subsystem_device: null,
    driver: "vfio-pci",
    revision: null,
  });
  const x570 = described("x570-aorus-pro-wifi");
  const finding = await bootBinding({
    ...x570,
    cmdline: "BOOT_IMAGE=/vmlinuz amd_iommu=on vfio-pci.ids=8086:4940",
    root_buses: ["0000:00", "0000:80"],
    devices: [...x570.devices, accelerator("0000:80:03.0", 90), accelerator("0000:80:03.1", 91)],
  });
  assertEquals(finding?.status, "warn");
  assertMatch(
    finding!.summary,
    /^vfio-pci\.ids=8086:4940 \(kernel command line\) takes every card of that model: 0000:80:03\.0, 0000:80:03\.1; /,
  );
});

Deno.test("boot-binding: boards that differ in subsystem IDs get the entries that take one each", async () => {
  const finding = await bootBinding(twins(["3752", "3702"], { cmdline: CMDLINE }));
  assertEquals(finding?.status, "warn");
  assertMatch(
    finding!.hint ?? "",
    /name its subsystem IDs instead of 10de:1b06: 10de:1b06:1458:3752 \(0000:0b:00\.0\), 10de:1b06:1458:3702 \(0000:0c:00\.0\)/,
  );
});

Deno.test("boot-binding: with a board the host uses, the hint's entry leaves it out and says how to apply it", async () => {
  const finding = await bootBinding(twins(["3752", "3702"], {
    cmdline: CMDLINE,
    host_use: [{ address: "0000:0c:00.0", reason: "console-vga", detail: "boot_vga=1 with fbcon" }],
  }));
  assertEquals(finding?.status, "fail");
  assertEquals(
    finding!.hint,
    "to leave the host its 0000:0c:00.0, write 10de:1b06:1458:3752 instead of 10de:1b06; " +
      "then update the boot loader's kernel command line (/etc/default/grub, then update-grub)",
  );
});

Deno.test("boot-binding: an entry that takes a device the host uses fails", async () => {
  const finding = await bootBinding(twins(["3752", "3752"], {
    cmdline: CMDLINE,
    host_use: [{ address: "0000:0c:00.0", reason: "console-vga", detail: "boot_vga=1 with fbcon" }],
  }));
  assertEquals(finding?.status, "fail");
  assertMatch(
    finding!.summary,
    /would take 0000:0c:00\.0, which the host uses \(boot_vga=1 with fbcon\), at a boot where vfio-pci probes it before its driver does/,
  );
});

Deno.test("boot-binding: each entry gets its own remedy, named once (one takes the host's device, one a model's every card)", async () => {
  // 10de:10ef takes 0b:00.1 only, which the host uses; 10de:1b06 takes both identical GPUs.
  const finding = await bootBinding(twins(["3752", "3752"], {
    cmdline: CMDLINE,
    host_use: [{ address: "0000:0b:00.1", reason: "console-vga", detail: "hdmi audio" }],
  }));
  assertEquals(finding?.status, "fail");
  assertEquals(
    finding!.hint,
    "remove 10de:10ef, 10de:1b06 (libvirt detaches a managed hostdev from its host driver at " +
      "start); " +
      "then update the boot loader's kernel command line (/etc/default/grub, then update-grub)",
  );
  assertMatch(finding!.summary, /takes every card of that model: 0000:0b:00\.0, 0000:0c:00\.0/);
});

Deno.test("boot-binding: one card per entry is ok and says what each takes; no entry, no finding", async () => {
  const finding = await bootBinding(
    described("x570-aorus-pro-wifi", { host: { cmdline: `${CMDLINE},8086:abcd quiet` } }),
  );
  assertEquals(finding, {
    check: "boot-binding",
    status: "ok",
    summary: "At boot vfio-pci.ids=10de:1b06 (kernel command line) takes 0000:0b:00.0; " +
      "vfio-pci.ids=10de:10ef (kernel command line) takes 0000:0b:00.1; " +
      "vfio-pci.ids=8086:abcd (kernel command line) takes nothing here",
    hint: null,
  });
  assertEquals(
    await bootBinding(described("x570-aorus-pro-wifi", { host: { cmdline: "quiet" } })),
    undefined,
  );
});

Deno.test("boot-binding: an entry repeated in one ids= is said once", async () => {
  const finding = await bootBinding(described("x570-aorus-pro-wifi", {
    host: { cmdline: "vfio-pci.ids=10de:1b06,10de:10ef,10de:1b06" },
  }));
  assertEquals(
    finding?.summary,
    "At boot vfio-pci.ids=10de:1b06 (kernel command line) takes 0000:0b:00.0; " +
      "vfio-pci.ids=10de:10ef (kernel command line) takes 0000:0b:00.1",
  );
});

Deno.test("modprobeVfioIds: /etc overrides a file of the same name, continued lines and comments read as modprobe reads them", () => {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-modprobe-" });
  try {
    Deno.mkdirSync(`${dir}/etc`);
    Deno.mkdirSync(`${dir}/lib`);
    Deno.writeTextFileSync(`${dir}/lib/vfio.conf`, "options vfio-pci ids=1111:2222\n");
    Deno.writeTextFileSync(
      `${dir}/etc/vfio.conf`,
      "# options vfio-pci ids=dead:beef\noptions vfio_pci disable_vga=1 \\\n  ids=10de:1b06,10de:10ef\n",
    );
    Deno.writeTextFileSync(`${dir}/lib/other.conf`, "options snd_hda_intel ids=10de:10ef\n");
    Deno.writeTextFileSync(`${dir}/lib/notes.txt`, "options vfio-pci ids=3333:4444\n");
    const entries = modprobeVfioIds(denoFsReader(), [`${dir}/etc`, `${dir}/run`, `${dir}/lib`])
      .flatMap((a) => a.entries);
    assertEquals(entries.map((e) => [e.text, e.source]), [
      ["10de:1b06", `${dir}/etc/vfio.conf`],
      ["10de:10ef", `${dir}/etc/vfio.conf`],
    ]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("modprobeVfioIds: a line continued mid-value joins without a space, and a quoted value is the kernel's", () => {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-modprobe-" });
  try {
    Deno.writeTextFileSync(`${dir}/a.conf`, "options vfio-pci ids=10de:1b06,\\\n10de:10ef # GPU\n");
    Deno.writeTextFileSync(`${dir}/b.conf`, 'options vfio_pci ids="1002:67df, 1002:aaf0"\n');
    const given = modprobeVfioIds(denoFsReader(), [dir]);
    assertEquals(given.map((a) => [a.value, a.entries.map((e) => e.text)]), [
      ["10de:1b06,10de:10ef", ["10de:1b06", "10de:10ef"]],
      ["1002:67df, 1002:aaf0", ["1002:67df", "1002:aaf0"]],
    ]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("doctor --sysfs: a captured tree's command line whose entry takes the host's console GPU exits 1", async () => {
  await using tree = await tempHostTree(twins(["3752", "3752"], {
    cmdline: CMDLINE,
    host_use: [{ address: "0000:0c:00.0", reason: "console-vga", detail: "boot_vga=1 with fbcon" }],
  }));
  const run = await runCli(["doctor", "--sysfs", tree.dir, "--no-libvirt"]);
  assertEquals(run.code, 1);
  assertMatch(run.stdout, /FAIL {2}boot-binding +vfio-pci\.ids=10de:1b06 \(kernel command line\)/);
});

Deno.test("doctor --sysfs: a quoted vfio-pci.ids= value is read as the kernel reads it, and one past -- as modprobe does", async () => {
  await using tree = await tempHostTree(twins(["3752", "3752"], {
    cmdline:
      'BOOT_IMAGE=/vmlinuz quiet vfio-pci.ids="10de:1b06, 10de:10ef" -- vfio-pci.ids=10de:1b06',
    host_use: [{ address: "0000:0c:00.0", reason: "console-vga", detail: "boot_vga=1 with fbcon" }],
  }));
  const run = await runCli(["doctor", "--sysfs", tree.dir, "--no-libvirt"]);
  assertEquals(run.code, 1);
  assertMatch(
    run.stdout,
    /FAIL {2}boot-binding +vfio-pci\.ids=10de:1b06 \(kernel command line\) would take 0000:0c:00\.0, which the host uses/,
  );
});

Deno.test("boot-binding: a device an entry takes that its own driver holds warns that the driver loaded first, and says how to load vfio-pci before it", async () => {
  const held = described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": { driver: "nvidia" }, "0000:0b:00.1": { driver: "snd_hda_intel" } },
    host: { cmdline: CMDLINE },
  });
  const finding = await bootBinding(held);
  assertEquals(finding?.status, "warn");
  assertEquals(
    finding!.summary,
    'vfio-pci.ids=10de:1b06 (kernel command line) did not take 0000:0b:00.0 at this boot: "nvidia" holds it, probably because it loaded before vfio-pci; ' +
      'vfio-pci.ids=10de:10ef (kernel command line) did not take 0000:0b:00.1 at this boot: "snd_hda_intel" holds it, probably because it loaded before vfio-pci',
  );
  assertEquals(
    finding!.hint,
    'to load vfio-pci first, add "softdep nvidia pre: vfio-pci", "softdep snd_hda_intel pre: vfio-pci" to a file in /etc/modprobe.d, then rebuild the initramfs, which holds a copy of modprobe.d (update-initramfs -u, dracut -f or mkinitcpio -P) and reboot',
  );
});

Deno.test("boot-binding: no softdep advice for an entry that takes every card of the model (loading vfio-pci first would take the host's too)", async () => {
  const finding = await bootBinding(described("x570-aorus-pro-wifi", {
    devices: {
      "0000:0b:00.0": { subsystem_vendor: "0x1458", subsystem_device: "0x3752" },
      "0000:0c:00.0": {
        device: "0x1b06",
        subsystem_vendor: "0x1458",
        subsystem_device: "0x3752",
        driver: "nvidia",
      },
    },
    host: { cmdline: "vfio-pci.ids=10de:1b06" },
  }));
  assertEquals(finding?.status, "warn");
  assertEquals(finding!.summary.includes("did not take"), false);
  assertEquals(finding!.hint?.includes("softdep"), false);
});

Deno.test("boot-binding: a driver built into the kernel (not in /proc/modules) gets driverctl, not softdep, which cannot order it", async () => {
  const held = described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": { driver: "nvidia" }, "0000:0b:00.1": { driver: "snd_hda_intel" } },
    host: { cmdline: CMDLINE, proc: { modules: "nvidia 56807424 0 - Live 0x0000000000000000\n" } },
  });
  const finding = await withHost(
    held,
    ({ host, facts }) =>
      commandLineOnly(
        runDoctor({ host, reader: denoFsReader(), live: false, facts }).find((f) =>
          f.check === "boot-binding"
        ),
      ),
  );
  assertEquals(finding?.status, "warn");
  assertEquals(
    finding!.hint,
    'to load vfio-pci first, add "softdep nvidia pre: vfio-pci" to a file in /etc/modprobe.d, then rebuild the initramfs, which holds a copy of modprobe.d (update-initramfs -u, dracut -f or mkinitcpio -P) and reboot; and ' +
      '"snd_hda_intel" is built into the kernel and binds 0000:0b:00.1 before vfio-pci can: leave it to libvirt\'s managed detach at start, or stop its users and run "driverctl set-override 0000:0b:00.1 vfio-pci", which unbinds it at once and keeps it with vfio-pci across reboots ("driverctl unset-override 0000:0b:00.1" undoes it)',
  );
});

Deno.test("boot-binding: softdep names the driver's module (modprobe.d keys softdeps by module), and a device bound to pci-stub on purpose is left alone", async () => {
  const held = described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": { driver: "pci-stub" }, "0000:0b:00.1": { driver: "nvidia-gpu" } },
    host: { cmdline: CMDLINE, proc: { modules: "i2c_nvidia_gpu 16384 0 - Live 0x0\n" } },
  });
  const finding = await withHost(held, ({ host, facts, dir }) => {
    Deno.mkdirSync(`${dir}/bus/pci/drivers/nvidia-gpu`, { recursive: true });
    Deno.symlinkSync(
      "../../../../module/i2c_nvidia_gpu",
      `${dir}/bus/pci/drivers/nvidia-gpu/module`,
    );
    return commandLineOnly(
      runDoctor({ host, reader: denoFsReader(), live: false, facts }).find((f) =>
        f.check === "boot-binding"
      ),
    );
  });
  assertEquals(
    finding?.summary,
    'vfio-pci.ids=10de:10ef (kernel command line) did not take 0000:0b:00.1 at this boot: "nvidia-gpu" holds it, probably because it loaded before vfio-pci',
  );
  assertMatch(
    finding!.hint ?? "",
    /^to load vfio-pci first, add "softdep i2c_nvidia_gpu pre: vfio-pci" /,
  );
});

Deno.test("doctor --sysfs: of two vfio-pci.ids= on the command line only the last counts: no softdep advice for the first one's device", async () => {
  await using tree = await tempHostTree(described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": { driver: "nvidia" }, "0000:0c:00.0": { driver: "vfio-pci" } },
    host: {
      cmdline: "BOOT_IMAGE=/vmlinuz vfio-pci.ids=10de:1b06 quiet vfio-pci.ids=10de:128b",
      proc: { modules: "nvidia 56807424 0 - Live 0x0\n" },
    },
  }));
  const run = await runCli(["doctor", "--sysfs", tree.dir, "--no-libvirt"]);
  assertEquals(run.code, 0);
  assertMatch(
    run.stdout,
    /warn {2}boot-binding +vfio-pci\.ids=10de:1b06 \(kernel command line\) takes nothing at boot: vfio-pci\.ids=10de:128b \(kernel command line\) comes after it, and vfio-pci keeps only the last ids= it is given; \/etc\/modprobe\.d and \/etc\/driverctl\.d not read \(a captured tree holds no \/etc\)\n/,
  );
  assertMatch(
    run.stdout,
    /-> give vfio-pci one ids= with every entry: vfio-pci\.ids=10de:1b06,10de:128b on the kernel command line, and remove the other vfio-pci\.ids= from the kernel command line; then update the boot loader's kernel command line/,
  );
  assertEquals(run.stdout.includes("softdep"), false);
});

Deno.test("boot-binding: an earlier ids= whose entries the last one repeats loses nothing, and each entry is said once", async () => {
  const finding = await bootBinding(described("x570-aorus-pro-wifi", {
    host: { cmdline: "vfio-pci.ids=10de:1b06 vfio-pci.ids=10de:1b06,10de:10ef" },
  }));
  assertEquals(finding, {
    check: "boot-binding",
    status: "ok",
    summary: "At boot vfio-pci.ids=10de:1b06 (kernel command line) takes 0000:0b:00.0; " +
      "vfio-pci.ids=10de:10ef (kernel command line) takes 0000:0b:00.1",
    hint: null,
  });
});

Deno.test("boot-binding: a modprobe.d ids= is overwritten by the command line's (modprobe gives that last)", async () => {
  const finding = await withHost(
    described("x570-aorus-pro-wifi", {
      devices: { "0000:0b:00.0": { driver: "nvidia" }, "0000:0c:00.0": { driver: "vfio-pci" } },
      host: { cmdline: "quiet vfio-pci.ids=10de:128b" },
    }),
    ({ host, dir }) => {
      Deno.mkdirSync(`${dir}/etc/modprobe.d`, { recursive: true });
      Deno.writeTextFileSync(`${dir}/etc/modprobe.d/vfio.conf`, "options vfio-pci ids=10de:1b06\n");
      return runDoctor({
        host,
        reader: denoFsReader(),
        live: true,
        sysRoot: dir,
        procRoot: `${dir}/proc`,
        modulesRoot: `${dir}/lib/modules`,
        modprobeDirs: [`${dir}/etc/modprobe.d`],
      }).find((f) => f.check === "boot-binding");
    },
  );
  assertEquals(finding?.status, "warn");
  assertMatch(
    finding!.summary,
    /^vfio-pci\.ids=10de:1b06 \(.*\/etc\/modprobe\.d\/vfio\.conf\) takes nothing at boot: vfio-pci\.ids=10de:128b \(kernel command line\) comes after it/,
  );
  assertMatch(
    finding!.hint ?? "",
    /^give vfio-pci one ids= with every entry: vfio-pci\.ids=10de:1b06,10de:128b on the kernel command line, and remove the ids= from .*vfio\.conf; /,
  );
  assertEquals(finding!.hint?.includes("softdep"), false);
});

/** doctor's boot-binding on a live-looking tree whose kernel has vfio-pci built in. */
async function builtInVfio(description: HostDescription, modprobe: string) {
  return await withHost(description, ({ host, dir }) => {
    Deno.mkdirSync(`${dir}/etc/modprobe.d`, { recursive: true });
    Deno.writeTextFileSync(`${dir}/etc/modprobe.d/vfio.conf`, modprobe);
    Deno.mkdirSync(`${dir}/proc/sys/kernel`, { recursive: true });
    Deno.writeTextFileSync(`${dir}/proc/sys/kernel/osrelease`, "6.1.0-test\n");
    Deno.mkdirSync(`${dir}/lib/modules/6.1.0-test`, { recursive: true });
    Deno.writeTextFileSync(
      `${dir}/lib/modules/6.1.0-test/modules.builtin`,
      "kernel/drivers/vfio/pci/vfio-pci.ko\n",
    );
    return runDoctor({
      host,
      reader: denoFsReader(),
      live: true,
      sysRoot: dir,
      procRoot: `${dir}/proc`,
      modulesRoot: `${dir}/lib/modules`,
      modprobeDirs: [`${dir}/etc/modprobe.d`],
    }).find((f) => f.check === "boot-binding");
  });
}

Deno.test("boot-binding: with vfio-pci built into the kernel, a modprobe.d entry is ignored and belongs on the command line", async () => {
  const finding = await builtInVfio(
    described("x570-aorus-pro-wifi", {
      devices: { "0000:0b:00.0": { driver: "nvidia" } },
      host: { cmdline: "quiet" },
    }),
    "options vfio-pci ids=10de:1b06\n",
  );
  assertEquals(finding?.status, "warn");
  assertMatch(
    finding!.summary,
    /^vfio-pci\.ids=10de:1b06 \(.*vfio\.conf\) is ignored: vfio-pci is built into this kernel, and modprobe\.d options reach modules only$/,
  );
  // No softdep: it cannot help an entry the kernel never reads.
  assertEquals(
    finding!.hint,
    "put 10de:1b06 on the kernel command line as vfio-pci.ids= instead; then update the boot loader's kernel command line (/etc/default/grub, then update-grub)",
  );
});

Deno.test("boot-binding: with vfio-pci built in, a module holding a device of a command-line entry was bound after boot: driverctl, not softdep", async () => {
  const description = described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": { driver: "nvidia" } },
    host: {
      cmdline: "quiet vfio-pci.ids=10de:1b06",
      proc: { modules: "nvidia 56807424 0 - Live 0x0\n" },
    },
  });
  const finding = await builtInVfio(description, "");
  assertEquals(finding?.status, "warn");
  assertEquals(
    finding!.summary,
    'vfio-pci.ids=10de:1b06 (kernel command line) did not take 0000:0b:00.0 at this boot: "nvidia" holds it, though vfio-pci is built into this kernel',
  );
  assertEquals(finding!.hint?.includes("softdep nvidia"), false);
  assertMatch(
    finding!.hint ?? "",
    /^"nvidia" was bound to 0000:0b:00\.0 after boot \(vfio-pci, built into this kernel, takes its ids before any module loads, so no softdep helps\): .*"driverctl set-override 0000:0b:00\.0 vfio-pci"/,
  );
});

Deno.test("boot-binding: with vfio-pci built in, an ids= past a bare -- goes to init: not said to overwrite the one before it, nor to have lost to a driver", async () => {
  const taken = await builtInVfio(
    described("x570-aorus-pro-wifi", {
      devices: { "0000:0b:00.0": { driver: "vfio-pci" }, "0000:0b:00.1": { driver: "vfio-pci" } },
      host: { cmdline: "quiet vfio-pci.ids=10de:1b06,10de:10ef -- vfio-pci.ids=10de:128b" },
    }),
    "",
  );
  assertEquals(
    taken?.summary,
    'vfio-pci.ids=10de:128b (kernel command line) is ignored: it comes after "--", which gives the rest of the line to init, and vfio-pci is built into this kernel',
  );
  const held = await builtInVfio(
    described("x570-aorus-pro-wifi", {
      devices: { "0000:0b:00.0": { driver: "nvidia" } },
      host: {
        cmdline: "quiet -- vfio-pci.ids=10de:1b06",
        proc: { modules: "nvidia 56807424 0 - Live 0x0\n" },
      },
    }),
    "",
  );
  assertMatch(held?.summary ?? "", /is ignored: it comes after "--"/);
  assertMatch(held?.hint ?? "", /^put 10de:1b06 on the kernel command line before "--" as /);
  assertEquals(held?.hint?.includes("driverctl"), false);
});

Deno.test("boot-binding: with vfio-pci built in and a vfio-pci.ids= on the command line, an ignored modprobe.d entry joins that one, not a second ids= that would overwrite it", async () => {
  const finding = await builtInVfio(
    described("x570-aorus-pro-wifi", {
      devices: { "0000:0c:00.0": { driver: "vfio-pci" } },
      host: { cmdline: "quiet vfio-pci.ids=10de:128b" },
    }),
    "options vfio-pci ids=10de:1b06,10de:10ef\n",
  );
  assertMatch(
    finding?.hint ?? "",
    /^add 10de:1b06,10de:10ef to the vfio-pci\.ids= on the kernel command line, not as a second one \(vfio-pci keeps only the last\): vfio-pci\.ids=10de:128b,10de:1b06,10de:10ef; then /,
  );
});

Deno.test("boot-binding: an ignored modprobe.d entry that would take every card of a model is not sent to the command line", async () => {
  const finding = await builtInVfio(
    twins(["3752", "3752"], { cmdline: "quiet" }),
    "options vfio-pci ids=10de:1b06\n",
  );
  // Ignored, it takes nothing: the summary says only that; the hint why it stays off the command line.
  assertEquals(
    finding!.summary.replace(/\(.*vfio\.conf\)/, "(vfio.conf)"),
    "vfio-pci.ids=10de:1b06 (vfio.conf) is ignored: vfio-pci is built into this kernel, and modprobe.d options reach modules only",
  );
  assertEquals(
    finding!.hint,
    "do not put 10de:1b06 on the kernel command line: it would take every card of that model: 0000:0b:00.0, 0000:0c:00.0",
  );
  assertEquals(finding!.status, "warn");
});

Deno.test("boot-binding: an overwritten ids= whose entry would take a device the host uses takes nothing at boot: a warning, not a failure, and its entry is not merged", async () => {
  // The user narrowed the entry in a second vfio-pci.ids=, which vfio-pci keeps; the first,
  // which would take the host's own board of the model, takes nothing.
  const finding = await bootBinding(twins(["3752", "3702"], {
    cmdline: "BOOT_IMAGE=/vmlinuz vfio-pci.ids=10de:1b06 quiet vfio-pci.ids=10de:1b06:1458:3752",
    host_use: [{ address: "0000:0c:00.0", reason: "console-vga", detail: "boot_vga=1 with fbcon" }],
  }));
  assertEquals(finding, {
    check: "boot-binding",
    status: "warn",
    summary: "vfio-pci.ids=10de:1b06 (kernel command line) takes nothing at boot: " +
      "vfio-pci.ids=10de:1b06:1458:3752 (kernel command line) comes after it, and vfio-pci " +
      "keeps only the last ids= it is given",
    hint: "give vfio-pci one ids= with every entry: vfio-pci.ids=10de:1b06:1458:3752 on the " +
      "kernel command line, and remove the other vfio-pci.ids= from the kernel command line; " +
      "then update the boot loader's kernel command line (/etc/default/grub, then update-grub); " +
      "and leave 10de:1b06 out of it: it would take 0000:0c:00.0, which the host uses " +
      "(boot_vga=1 with fbcon)",
  });
});

Deno.test("boot-binding: of two modprobe.d files the later one's ids= wins: the earlier one's entry takes no card, so it is not said to take every card of the model", async () => {
  const finding = await withHost(
    twins(["3752", "3752"], { cmdline: "quiet" }),
    ({ host, dir }) => {
      Deno.mkdirSync(`${dir}/etc/modprobe.d`, { recursive: true });
      Deno.writeTextFileSync(`${dir}/etc/modprobe.d/a.conf`, "options vfio-pci ids=10de:1b06\n");
      Deno.writeTextFileSync(`${dir}/etc/modprobe.d/b.conf`, "options vfio-pci ids=10de:10ef\n");
      return runDoctor({
        host,
        reader: denoFsReader(),
        live: true,
        sysRoot: dir,
        procRoot: `${dir}/proc`,
        modulesRoot: `${dir}/lib/modules`,
        modprobeDirs: [`${dir}/etc/modprobe.d`],
      }).find((f) => f.check === "boot-binding");
    },
  );
  assertEquals(finding?.status, "warn");
  assertMatch(
    finding!.summary,
    /^vfio-pci\.ids=10de:1b06 \(.*\/a\.conf\) takes nothing at boot: vfio-pci\.ids=10de:10ef \(.*\/b\.conf\) comes after it, and vfio-pci keeps only the last ids= it is given$/,
  );
  assertMatch(
    finding!.hint ?? "",
    /^give vfio-pci one ids= with every entry: "options vfio-pci ids=10de:10ef" in .*\/b\.conf, and remove the ids= from .*\/a\.conf; then rebuild the initramfs.*; and leave 10de:1b06 out of it: it would take every card of that model: 0000:0b:00\.0, 0000:0c:00\.0$/,
  );
});

/** doctor's `driverctl` finding on a live-looking X570 tree with `overrides` in driverctl.d. */
async function driverctlFinding(description: HostDescription, overrides: Record<string, string>) {
  return await withHost(description, ({ host, dir }) => {
    Deno.mkdirSync(`${dir}/etc/driverctl.d`, { recursive: true });
    for (const [name, text] of Object.entries(overrides)) {
      Deno.writeTextFileSync(`${dir}/etc/driverctl.d/${name}`, text);
    }
    return runDoctor({
      host,
      reader: denoFsReader(),
      live: true,
      sysRoot: dir,
      procRoot: `${dir}/proc`,
      modulesRoot: `${dir}/lib/modules`,
      modprobeDirs: [`${dir}/etc/modprobe.d`],
      driverctlDir: `${dir}/etc/driverctl.d`,
    }).find((f) => f.check === "driverctl");
  });
}

Deno.test("driverctl: an override that gives vfio-pci a device the host uses fails, naming the device, its use and the file", async () => {
  const finding = await driverctlFinding(
    described("x570-aorus-pro-wifi", {
      devices: { "0000:01:00.0": { driver: "nvme" }, "0000:0b:00.0": { driver: "vfio-pci" } },
      host: {
        host_use: [{
          address: "0000:01:00.0",
          reason: "mounted-filesystem",
          detail: "/ on nvme0n1p2",
        }],
      },
    }),
    { "pci-0000:01:00.0": "vfio-pci\n", "pci-0000:0b:00.0": "vfio-pci\n" },
  );
  assertEquals(finding?.status, "fail");
  assertMatch(
    finding!.summary,
    /^driverctl gives 0000:01:00\.0 to vfio-pci at every boot \(.*\/etc\/driverctl\.d\/pci-0000:01:00\.0\), but the host uses it \(\/ on nvme0n1p2\)/,
  );
  assertMatch(
    finding!.hint ?? "",
    /^driverctl --noprobe unset-override 0000:01:00\.0 \(--noprobe leaves/,
  );
  assertEquals(finding!.hint!.includes("0000:0b:00.0"), false);
});

Deno.test("driverctl: an override of an address that holds no device warns (a card put there later is taken); one per guest card is ok", async () => {
  const description = described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": { driver: "vfio-pci" } },
  });
  const stale = await driverctlFinding(description, {
    "pci-0000:2a:00.0": "vfio-pci\n",
    "pci-0000:0b:00.0": "vfio-pci\n",
  });
  assertEquals(stale?.status, "warn");
  assertMatch(stale!.summary, /0000:2a:00\.0 .*holds no device here/);
  assertMatch(stale!.hint ?? "", /driverctl --noprobe unset-override 0000:2a:00\.0/);
  const ok = await driverctlFinding(description, { "pci-0000:0b:00.0": "vfio-pci\n" });
  assertEquals(ok?.status, "ok");
  assertMatch(ok!.summary, /0000:0b:00\.0 \(.*\) to vfio-pci/);
  assertEquals(await driverctlFinding(description, {}), undefined);
});

Deno.test("driverctl: an override whose device another driver holds at this boot says it takes effect from the next boot", async () => {
  const finding = await driverctlFinding(
    described("x570-aorus-pro-wifi", {
      devices: { "0000:0b:00.0": { driver: "nvidia" }, "0000:0b:00.1": { driver: "vfio-pci" } },
    }),
    { "pci-0000:0b:00.0": "vfio-pci\n", "pci-0000:0b:00.1": "vfio-pci\n" },
  );
  assertEquals(finding?.status, "ok");
  // Before: "driverctl gives 0000:0b:00.0 (...) to vfio-pci at every boot", untrue of this one.
  assertMatch(
    finding!.summary,
    /^driverctl gives 0000:0b:00\.0 \([^)]*\) to vfio-pci from the next boot; "nvidia" holds it at this boot; driverctl gives 0000:0b:00\.1 \([^)]*\) to vfio-pci at every boot$/,
  );
});

Deno.test("driverctl: an override of a drive behind Intel VMD (domain 10000) the host uses fails too", async () => {
  const blank = { subsystem_vendor: null, subsystem_device: null, revision: null };
  const finding = await driverctlFinding({
    host_use: [{
      address: "10000:e1:00.0",
      reason: "mounted-filesystem",
      detail: "/ on nvme0n1p2",
    }],
    devices: [
      {
        bdf: "0000:00:0e.0",
        group: 5,
        class: "0x010400",
        vendor: "0x8086",
        device: "0x9a0b",
        driver: "vmd",
        ...blank,
      },
      { ...nvmeDescription("10000:e1:00.0", 1), group: null },
    ],
  }, { "pci-10000:e1:00.0": "vfio-pci\n" });
  assertEquals(finding?.status, "fail");
  assertMatch(
    finding!.summary,
    /^driverctl gives 10000:e1:00\.0 to vfio-pci at every boot \(.*\/pci-10000:e1:00\.0\), but the host uses it \(\/ on nvme0n1p2\)/,
  );
  assertMatch(finding!.hint ?? "", /^driverctl --noprobe unset-override 10000:e1:00\.0 /);
});
