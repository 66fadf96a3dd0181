/**
 * `doctor`'s host-wide view of the pre-flight findings, on trees built from captured real hosts
 * with the facts added: which GPUs are the boot VGA (and held by a firmware framebuffer), which
 * host drivers are busy, which devices lack a reset; and the IOMMU hint naming the CPU maker
 * from a tree's captured `proc/cpuinfo`.
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { type DoctorFinding, runDoctor } from "../../lib/host/doctor.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { described, withHost } from "../preflight/trees.ts";
import type { HostUse } from "../../lib/host/types.ts";

function byCheck(findings: DoctorFinding[], check: string): DoctorFinding | undefined {
  return findings.find((f) => f.check === check);
}

const IOMEM = "e0000000-efffffff : 0000:0b:00.0\n  e0000000-e07e8fff : BOOTFB\n";

Deno.test("doctor: boot VGA held by BOOTFB, nvidia busy, devices without a reset", async () => {
  const description = described("x570-aorus-pro-wifi", {
    devices: {
      "0000:0b:00.0": {
        boot_vga: true,
        driver: "nvidia",
        drm: { card: 0, clients: [{ command: "Xorg", pid: 812 }] },
        reset_method: "bus",
      },
      "0000:0b:00.1": { reset_method: "flr bus" },
      "0000:0c:00.0": { boot_vga: false, driver: "nouveau", reset_method: "pm bus" },
    },
    host: {
      proc: { iomem: IOMEM, modules: "nvidia 56807424 0 - Live 0x0\nnouveau 2 0 - Live 0x0\n" },
    },
  });
  await withHost(description, ({ host, facts }) => {
    const findings = runDoctor({ host, reader: denoFsReader(), live: false, facts });
    const boot = byCheck(findings, "boot-vga");
    assertEquals(boot?.status, "warn");
    assertMatch(boot?.summary ?? "", /0000:0b:00\.0 is held by BOOTFB/);
    assertMatch(boot?.hint ?? "", /initcall_blacklist=sysfb_init/);
    const busy = byCheck(findings, "host-driver-busy");
    assertEquals(busy?.status, "warn");
    assertMatch(
      busy?.summary ?? "",
      /0000:0b:00\.0 \(nvidia: its device nodes are open in Xorg \(pid 812\)\)/,
    );
    assertEquals(/0000:0c:00\.0/.test(busy?.summary ?? ""), false);
    // 0b:00.0 resets only by bus, but its bus holds nothing but its own audio function, in its
    // IOMMU group: the reset touches nothing that is not passed with it.
    assertEquals(byCheck(findings, "reset")?.status, "ok");
  });
});

Deno.test("doctor: a busy GPU the host uses is named as the host's, not one to bind to vfio-pci at boot", async () => {
  // A dual-GPU desktop: the GTX 1080 Ti is the host's console (fbcon, Xorg), the GT 710 the
  // guest's, which a game still holds.
  const console = {
    address: "0000:0b:00.0",
    reason: "console-vga",
    detail: "boot_vga=1 with fbcon",
  };
  const host = (guestBusy: boolean) =>
    described("x570-aorus-pro-wifi", {
      devices: {
        "0000:0b:00.0": {
          boot_vga: true,
          driver: "nvidia",
          console: true,
          drm: { card: 0, clients: [{ command: "Xorg", pid: 812 }] },
        },
        "0000:0c:00.0": {
          driver: "nouveau",
          drm: guestBusy ? { card: 1, clients: [{ command: "steam", pid: 900 }] } : null,
        },
      },
      host: {
        host_use: [console as HostUse],
        proc: { modules: "nvidia 56807424 0 - Live 0x0\nnouveau 2 0 - Live 0x0\n" },
      },
    });
  await withHost(host(true), ({ host, facts }) => {
    const busy = byCheck(
      runDoctor({ host, reader: denoFsReader(), live: false, facts }),
      "host-driver-busy",
    );
    assertEquals(busy?.status, "warn");
    assertEquals(
      busy?.summary,
      "GPU host drivers in use: 0000:0c:00.0 (nouveau: its device nodes are open in steam (pid 900)); 0000:0b:00.0 left out: the host uses it (console-vga: boot_vga=1 with fbcon), its driver's users are the host's own",
    );
  });
  // Only the host's GPU busy: nothing to do before passing the other.
  await withHost(host(false), ({ host, facts }) => {
    const busy = byCheck(
      runDoctor({ host, reader: denoFsReader(), live: false, facts }),
      "host-driver-busy",
    );
    assertEquals(
      [busy?.status, busy?.summary, busy?.hint],
      [
        "ok",
        "No user seen on the host drivers of 0000:0c:00.0; 0000:0b:00.0 left out: the host uses it (console-vga: boot_vga=1 with fbcon), its driver's users are the host's own",
        null,
      ],
    );
  });
});

Deno.test("doctor: a bus-only reset warns only when it would reset a device not passed with it", async () => {
  const facts = {
    "0000:0b:00.0": { reset_method: "bus" },
    "0000:0b:00.1": { reset_method: "bus" },
    "0000:0c:00.0": { reset_method: "flr bus" },
  };
  // The GTX 1070's two functions share group 30 on bus 0b: each bus reset resets only the card.
  await withHost(described("x570-aorus-pro-wifi", { devices: facts }), ({ host, facts }) => {
    const reset = byCheck(runDoctor({ host, reader: denoFsReader(), live: false, facts }), "reset");
    assertEquals([reset?.status, reset?.summary], ["ok", "Every device can be reset (3 read)"]);
  });
  // The audio function in a group of its own (as an ACS quirk splits them): it need not go where
  // the VGA function goes, so each one's bus reset may reset a device held elsewhere.
  const split = described("x570-aorus-pro-wifi", {
    devices: { ...facts, "0000:0b:00.1": { reset_method: "bus", group: 99 } },
  });
  await withHost(split, ({ host, facts }) => {
    const reset = byCheck(runDoctor({ host, reader: denoFsReader(), live: false, facts }), "reset");
    assertEquals(reset?.status, "warn");
    assertEquals(
      reset?.summary,
      "2 devices lack a reset of their own: 0000:0b:00.0 (bus-only, which also resets 0000:0b:00.1), 0000:0b:00.1 (bus-only, which also resets 0000:0b:00.0)",
    );
  });
});

Deno.test("doctor: nothing to report reads ok, and unknown facts leave the checks out", async () => {
  const quiet = described("x570-aorus-pro-wifi", {
    devices: {
      "0000:0b:00.0": { boot_vga: true, driver: "nvidia", reset_method: "flr bus" },
    },
    host: { proc: { iomem: "e0000000-efffffff : 0000:0b:00.0\n", modules: "" } },
  });
  await withHost(quiet, ({ host, facts }) => {
    const findings = runDoctor({ host, reader: denoFsReader(), live: false, facts });
    assertEquals(
      ["boot-vga", "host-driver-busy", "reset"].map((c) => byCheck(findings, c)?.status),
      ["ok", "ok", "ok"],
    );
  });
  await withHost(described("x570-aorus-pro-wifi"), ({ host, facts }) => {
    const findings = runDoctor({ host, reader: denoFsReader(), live: false, facts });
    assertEquals(
      ["boot-vga", "host-driver-busy", "reset"].map((c) => byCheck(findings, c)),
      [undefined, undefined, undefined],
    );
  });
});

Deno.test("doctor: a tree's captured cpuinfo names the CPU maker in the IOMMU hint", async () => {
  // The partial ConnectX listing has no host bridge, so only cpuinfo can name the maker.
  const noIommu = (vendor?: string) =>
    described("c246-cx4lx-sriov", {
      host: vendor === undefined ? {} : { proc: { cpuinfo_vendor: vendor } },
      devices: Object.fromEntries(
        described("c246-cx4lx-sriov").devices.map((d) => [d.bdf, { group: null }]),
      ),
    });
  await withHost(noIommu("GenuineIntel"), ({ host }) => {
    const iommu = byCheck(runDoctor({ host, reader: denoFsReader(), live: false }), "iommu");
    assertMatch(iommu?.hint ?? "", /^Enable VT-d in the firmware setup, add intel_iommu=on/);
  });
  await withHost(noIommu("AuthenticAMD"), ({ host }) => {
    const iommu = byCheck(runDoctor({ host, reader: denoFsReader(), live: false }), "iommu");
    assertMatch(iommu?.hint ?? "", /^Enable the IOMMU \(AMD-Vi/);
  });
  await withHost(noIommu(), ({ host }) => {
    const iommu = byCheck(runDoctor({ host, reader: denoFsReader(), live: false }), "iommu");
    assertMatch(iommu?.hint ?? "", /VT-d \(Intel\) or AMD-Vi \(AMD\)/);
  });
});
