/**
 * A home lab's hardware changes between `apply` and the next VM start, end to end: a GPU with its
 * HDMI audio and a USB controller applied to a Windows VM and an NVMe drive to a NAS VM on a real
 * `libvirtd`, then the host tree changed as a real change would, the installed start hook run as
 * libvirt runs it on the definition the daemon holds, and `plan` and `apply` run again.
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { type Libvirtd, libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";
import { runCli, runHook } from "../helpers/cli.ts";
import { dev } from "../helpers/plan_world.ts";
import { buildHostTree, type HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import type { HostUse } from "../../lib/host/types.ts";
import { HOOK_FILE_NAME } from "../../lib/guard/hook_file.ts";
import { allowanceFile } from "../../lib/guard/state.ts";
import { lockUri } from "../../lib/state/lock.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { Connection } from "../../ffi/mod.ts";

const unavailable = libvirtdUnavailable();

const CONFIG = `version: 1
vms:
  win11:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684" }
      - name: usb
        match: { vendor_device_id: "1b21:2142" }
  nas:
    devices:
      - name: nvme
        match: { vendor_device_id: "144d:a80a" }
`;

/** The home lab as applied: host NVMe and NIC on host drivers, the passed devices on vfio-pci. */
function homeLab(): HostDeviceDescription[] {
  return [
    dev({ bdf: "0000:00:00.0", group: 0, class: "0x060000", class_name: "Host bridge" }),
    dev({ bdf: "0000:00:01.0", group: 1, class: "0x060400", class_name: "PCI bridge" }),
    dev({ bdf: "0000:00:1f.0", group: 2, class: "0x060100", class_name: "ISA bridge" }),
    dev({
      bdf: "0000:01:00.0",
      group: 3,
      class: "0x010802",
      vendor: "0x144d",
      device: "0xa808",
      driver: "nvme",
      class_name: "Non-Volatile memory controller",
    }),
    dev({
      bdf: "0000:05:00.0",
      group: 4,
      class: "0x020000",
      device: "0x15f3",
      driver: "igc",
      class_name: "Ethernet controller",
    }),
    dev({
      bdf: "0000:0a:00.0",
      group: 5,
      class: "0x010802",
      vendor: "0x144d",
      device: "0xa80a",
      driver: "vfio-pci",
      serial: "00-25-38-b1-21-b0-6c-1d",
      class_name: "Non-Volatile memory controller",
    }),
    dev({
      bdf: "0000:0b:00.0",
      group: 6,
      class: "0x030000",
      vendor: "0x10de",
      device: "0x2684",
      subsystem_vendor: "0x1043",
      subsystem_device: "0x88e2",
      driver: "vfio-pci",
      class_name: "VGA compatible controller",
    }),
    dev({
      bdf: "0000:0b:00.1",
      group: 6,
      class: "0x040300",
      vendor: "0x10de",
      device: "0x22ba",
      subsystem_vendor: "0x1043",
      subsystem_device: "0x88e2",
      driver: "vfio-pci",
      class_name: "Audio device",
    }),
    dev({
      bdf: "0000:0c:00.0",
      group: 7,
      class: "0x0c0330",
      vendor: "0x1b21",
      device: "0x2142",
      driver: "vfio-pci",
      class_name: "USB controller",
    }),
  ];
}

const HOST_USE: HostUse[] = [
  { address: "0000:01:00.0", reason: "mounted-filesystem", detail: "/ on nvme0n1p2" },
  { address: "0000:05:00.0", reason: "default-route", detail: "default route via enp5s0" },
];

function qemuDomain(name: string, uuid: string): string {
  return `<domain type='qemu'>
  <name>${name}</name>
  <uuid>${uuid}</uuid>
  <memory unit='KiB'>65536</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices/>
</domain>`;
}

interface Lab extends AsyncDisposable {
  daemon: Libvirtd;
  dir: string;
  tree: string;
  hook: string;
  /** Rebuilds the host tree (where the hook reads) from `devices` and `hostUse`. */
  rebuild(devices: HostDeviceDescription[], hostUse?: HostUse[]): void;
  /** Runs `passthrough CMD` over the lab's config, tree, daemon and state. */
  cli(...args: string[]): ReturnType<typeof runCli>;
  /** The installed hook at `prepare begin` of `vm`, on the definition the daemon holds. */
  start(vm: string): ReturnType<typeof runHook>;
  hostdevs(vm: string): string[];
  parsed(vm: string): ReturnType<typeof parseDomainXml>;
}

async function lab(): Promise<Lab> {
  const daemon = await startLibvirtd();
  const dir = await Deno.makeTempDir({ prefix: "passthrough-home-lab-" });
  const tree = `${dir}/sysfs`;
  const rebuild = (devices: HostDeviceDescription[], hostUse = HOST_USE) => {
    Deno.removeSync(tree, { recursive: true });
    buildHostTree({ devices, host_use: hostUse }, tree);
  };
  Deno.mkdirSync(tree);
  rebuild(homeLab());
  await Deno.writeTextFile(`${dir}/passthrough_config.yaml`, CONFIG);
  {
    using conn = Connection.open(daemon.uri);
    conn.defineDomain(qemuDomain("win11", "0f3c1a52-7d4e-4b8a-9c61-2e5f8a9b0c11")).free();
    conn.defineDomain(qemuDomain("nas", "5d2e9a41-8c3b-4f6e-a1d7-3b9c0e2f4a68")).free();
  }
  const installed = await runCli([
    "hook",
    "install",
    "--hooks-dir",
    `${dir}/qemu.d`,
    "--state-dir",
    `${dir}/state`,
    "--sysfs",
    tree,
  ]);
  assertEquals(installed.code, 0, installed.stderr);
  const xml = (vm: string) => {
    using conn = Connection.open(daemon.uri, { readOnly: true });
    using dom = conn.lookupDomainByName(vm);
    return dom.xml({ inactive: true });
  };
  const hook = `${dir}/qemu.d/${HOOK_FILE_NAME}`;
  return {
    daemon,
    dir,
    tree,
    hook,
    rebuild,
    cli: (...args) =>
      runCli([
        ...args,
        "--config",
        `${dir}/passthrough_config.yaml`,
        "--sysfs",
        tree,
        "--connect",
        daemon.uri,
      ], { env: { PASSTHROUGH_STATE_DIR: `${dir}/state` } }),
    start: (vm) => runHook(hook, [vm, "prepare", "begin", "-"], xml(vm)),
    hostdevs: (vm) => parseDomainXml(xml(vm)).hostdevs.map((h) => h.address),
    parsed: (vm) => parseDomainXml(xml(vm)),
    async [Symbol.asyncDispose]() {
      await daemon.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** The lab applied as configured, each VM's start let through. */
async function applied(): Promise<Lab> {
  const l = await lab();
  const apply = await l.cli("apply", "--yes");
  assertEquals(apply.code, 0, apply.stderr + apply.stdout);
  assertEquals(l.hostdevs("win11"), ["0000:0b:00.0", "0000:0b:00.1", "0000:0c:00.0"]);
  assertEquals(l.hostdevs("nas"), ["0000:0a:00.0"]);
  for (const vm of ["win11", "nas"]) {
    const start = await l.start(vm);
    assertEquals([start.code, start.stderr], [0, ""]);
  }
  return l;
}

/** `vm`'s hostdevs as `host -> guest` addresses. */
function guestAddresses(l: Lab, vm: string): string[] {
  return l.parsed(vm).hostdevs.map((h) => `${h.address} -> ${h.guestAddress?.address ?? "none"}`);
}

Deno.test({
  name: "home lab: an NVMe added before the cards shifts their buses; the guard refuses each VM, " +
    "and apply follows every card, each keeping its guest address",
  ignore: unavailable !== null,
  async fn() {
    await using l = await applied();
    const before = guestAddresses(l, "win11");
    // A second host NVMe at 0a: every card after it one bus further on.
    const shifted = homeLab().map((d) => {
      const bus = parseInt(d.bdf.slice(5, 7), 16);
      if (bus < 0x0a) return d;
      return { ...d, bdf: `0000:${(bus + 1).toString(16).padStart(2, "0")}${d.bdf.slice(7)}` };
    });
    shifted.push(dev({
      bdf: "0000:0a:00.0",
      group: 9,
      class: "0x010802",
      vendor: "0x1e0f",
      device: "0x0001",
      driver: "nvme",
      class_name: "Non-Volatile memory controller",
    }));
    l.rebuild(shifted, [...HOST_USE, {
      address: "0000:0a:00.0",
      reason: "mounted-filesystem",
      detail: "/srv on nvme1n1p1",
    }]);
    const win11 = await l.start("win11");
    assertEquals(win11.code, 1);
    assertMatch(
      win11.stderr,
      /^passthrough guard: refusing to start "win11": hostdev 0000:0b:00\.0 holds 144d:a80a .* of rule "gpu"; fix: passthrough plan --vm win11\n/,
    );
    const nas = await l.start("nas");
    assertEquals(nas.code, 1);
    assertMatch(
      nas.stderr,
      /hostdev 0000:0a:00\.0 holds 1e0f:0001 .*; the host needs it: in use by the host \(mounted-filesystem: \/srv on nvme1n1p1\); fix: passthrough plan --vm nas\n$/,
    );

    const plan = await l.cli("plan", "--json");
    assertEquals(plan.code, 0, plan.stderr);
    const vms = JSON.parse(plan.stdout).vms as {
      name: string;
      move: { from: string; to: string }[];
      add: unknown[];
      remove: string[];
      warnings: { code: string }[];
    }[];
    const win = vms.find((v) => v.name === "win11")!;
    assertEquals(win.move.map((m) => `${m.from} -> ${m.to}`), [
      "0000:0b:00.0 -> 0000:0c:00.0",
      "0000:0b:00.1 -> 0000:0c:00.1",
      "0000:0c:00.0 -> 0000:0d:00.0",
    ]);
    assertEquals([win.add, win.remove], [[], []]);
    // Moves, not an address that held one card now kept for another.
    assertEquals(win.warnings.filter((w) => w.code === "drift"), []);

    const apply = await l.cli("apply", "--yes");
    assertEquals(apply.code, 0, apply.stderr + apply.stdout);
    assertMatch(
      apply.stdout,
      /changed win11 \(\+0 -0 hostdevs, 3 moved\): Defined "win11" \(0 added, 0 removed, 3 moved\)/,
    );
    assertMatch(apply.stdout, /changed nas \(\+0 -0 hostdevs, 1 moved\)/);
    // The guest sees its GPU, audio and USB controller where it always did (no new devices for
    // Windows to install drivers for).
    assertEquals(
      guestAddresses(l, "win11"),
      before.map((line) => line.replace(/^0000:0c/, "0000:0d").replace(/^0000:0b/, "0000:0c")),
    );
    assertEquals(l.hostdevs("nas"), ["0000:0b:00.0"]);
    for (const vm of ["win11", "nas"]) {
      const start = await l.start(vm);
      assertEquals([start.code, start.stderr], [0, ""]);
    }
  },
});

/** `devices` with the functions at `bdfs` changed by `change`. */
function changed(
  devices: HostDeviceDescription[],
  bdfs: string[],
  change: Partial<HostDeviceDescription>,
): HostDeviceDescription[] {
  return devices.map((d) => bdfs.includes(d.bdf) ? { ...d, ...change } : d);
}

Deno.test({
  name: "home lab: a kernel update merging the GPU's IOMMU group with the NIC's or the NAS " +
    "drive's refuses the start: the host needs the NIC, not the other VM's drive; plan refuses the VMs",
  ignore: unavailable !== null,
  async fn() {
    await using l = await applied();
    // With the NIC the host routes through: it needs it.
    l.rebuild(changed(homeLab(), ["0000:05:00.0"], { group: 6 }));
    const nic = await l.start("win11");
    assertEquals(nic.code, 1);
    assertMatch(
      nic.stderr,
      /^passthrough guard: refusing to start "win11": hostdev 0000:0b:00\.0's IOMMU group 6 also holds 0000:05:00\.0, 8086:15f3 \(class 020000, driver igc\), which "win11" does not pass; the host needs it: in use by the host \(default-route: default route via enp5s0\): .*; fix: passthrough plan --vm win11 /,
    );
    assertEquals((await l.start("nas")).code, 0);
    const planNic = await l.cli("plan", "--vm", "win11");
    assertEquals(planNic.code, 1, planNic.stderr);
    assertMatch(
      planNic.stdout,
      /refused \[group-contains-host-critical\] .*0000:05:00\.0 \(in use by the host \(default-route/,
    );

    // With the NAS VM's drive, on vfio-pci: the host does not use it, the other VM does.
    l.rebuild(changed(homeLab(), ["0000:0a:00.0"], { group: 6 }));
    const win11 = await l.start("win11");
    assertEquals(win11.code, 1);
    assertMatch(
      win11.stderr,
      /^passthrough guard: refusing to start "win11": hostdev 0000:0b:00\.0's IOMMU group 6 also holds 0000:0a:00\.0, 144d:a80a \(class 010802, driver vfio-pci\), which "win11" does not pass; a storage controller in another slot, which the host does not use but binds to vfio-pci for a VM: another VM's, if one passes it \(a group goes to one VM\): VFIO hands the guest the whole group; .*fix: passthrough plan --vm win11 /,
    );
    const nas = await l.start("nas");
    assertEquals(nas.code, 1);
    assertMatch(
      nas.stderr,
      /which "nas" does not pass; a display controller in another slot, which the host does not use but binds to vfio-pci for a VM: another VM's, if one passes it/,
    );
    // Nowhere does it say the host needs the other VM's device.
    assertEquals([win11.stderr, nas.stderr].some((e) => e.includes("the host needs it")), false);
    // Nor that allow_host_critical alone lets it start: plan refuses a split group whatever the
    // rule says. The plan it names instead names the other VM.
    for (const [vm, e] of [["win11", win11.stderr], ["nas", nas.stderr]] as const) {
      assertEquals(e.includes('only "allow_host_critical'), false, e);
      assertMatch(
        e,
        new RegExp(
          `; if another VM passes it, only giving the group's devices to one of the two lets it start \\(passthrough plan --vm ${vm} names that VM\\); if none does, "allow_host_critical: true" on rule`,
        ),
      );
    }
    // An allowance lifts no group split either: neither its note nor the allowed start's line
    // sends the user to allow_host_critical alone.
    const allow = await runCli([
      "guard",
      "allow",
      "win11",
      "--connect",
      l.daemon.uri,
      "--state-dir",
      `${l.dir}/state`,
    ]);
    assertEquals(allow.code, 0, allow.stderr);
    // The hook takes only an allowance given over qemu:///system, which the lab's daemon stands
    // for: the file names it, as guard allow over the system daemon writes it.
    const given = allowanceFile(`${l.dir}/state`, "win11")!;
    Deno.writeTextFileSync(
      given,
      Deno.readTextFileSync(given).replace(
        JSON.stringify(lockUri(l.daemon.uri)),
        JSON.stringify("qemu:///system"),
      ),
    );
    const allowed = await l.start("win11");
    assertEquals(allowed.code, 1);
    for (const said of [allow.stdout, allowed.stderr]) {
      assertEquals(said.includes('only "allow_host_critical: true" on rule "gpu"'), false, said);
      assertMatch(
        said,
        /if another VM passes the member, only giving the group's devices to one of the two does \(passthrough plan --vm win11 names that VM\); if none does, "allow_host_critical: true" on rule "gpu", then passthrough apply, does/,
      );
    }
    const followed = await l.cli("plan", "--vm", "win11");
    assertEquals(followed.code, 1, followed.stderr);
    assertMatch(
      followed.stdout,
      /refused \[group-shared-with-other-vm\] .*split between VMs .*"nas"/,
    );
    const plan = await l.cli("plan");
    assertEquals(plan.code, 1, plan.stderr);
    assertMatch(
      plan.stdout,
      /refused \[group-shared-with-other-vm\] .*IOMMU group 6 \(0000:0a:00\.0, 0000:0b:00\.0, 0000:0b:00\.1\) is split between VMs "nas"/,
    );
    // Each VM's refusal names the other's device as that VM's: neither says the host needs it
    // nor offers allow_host_critical, which would lift nothing while the group is split.
    const apply = await l.cli("apply", "--yes");
    assertEquals(apply.code, 1, apply.stderr);
    for (const out of [plan.stdout, apply.stdout]) {
      assertEquals(out.includes("group-contains-host-critical"), false, out);
      assertEquals(out.includes("override: allow_host_critical"), false, out);
      assertMatch(
        out,
        /added 0000:0b:00\.0 \(10de:2684 VGA compatible controller, which VM "win11" passes\)/,
      );
      assertMatch(
        out,
        /added 0000:0a:00\.0 \(144d:a80a Non-Volatile memory controller, which VM "nas" passes\)/,
      );
      assertMatch(
        out,
        /refused \[group-shared-with-other-vm\] .*split between VMs "nas" \(rule "nvme"\) and "win11"/,
      );
    }
  },
});

Deno.test({
  name: "home lab: the GPU back on its host driver (driverctl's override dropped) starts, and " +
    "plan says why it rewrites the GPU's record",
  ignore: unavailable !== null,
  async fn() {
    await using l = await applied();
    l.rebuild(changed(homeLab(), ["0000:0b:00.0"], { driver: "nvidia" }));
    // libvirt detaches a managed hostdev from its host driver itself: nothing to refuse.
    const start = await l.start("win11");
    assertEquals([start.code, start.stderr], [0, ""]);
    const plan = await l.cli("plan", "--vm", "win11");
    assertEquals(plan.code, 0, plan.stderr);
    assertMatch(plan.stdout, /driver='nvidia' rule='gpu'/);
    assertMatch(
      plan.stdout,
      /- 0000:0b:00\.0: on nvidia now, not the recorded vfio-pci \(rule "gpu"\): only its record changes\n/,
    );
    const apply = await l.cli("apply", "--yes", "--vm", "win11");
    assertEquals(apply.code, 0, apply.stderr + apply.stdout);
    // Applied, the plan is quiet again.
    const again = await l.cli("plan", "--vm", "win11", "--detailed-exitcode");
    assertEquals(again.code, 0, again.stdout);
  },
});

Deno.test({
  name: "home lab: a GPU swapped for the same model is refused until apply takes it; another " +
    "model is refused, and plan's repair removes it",
  ignore: unavailable !== null,
  async fn() {
    await using l = await applied();
    const gpu = ["0000:0b:00.0", "0000:0b:00.1"];
    l.rebuild(changed(homeLab(), gpu, { subsystem_device: "0x8900" }));
    const same = await l.start("win11");
    assertEquals(same.code, 1);
    assertMatch(
      same.stderr,
      /^passthrough guard: refusing to start "win11": hostdev 0000:0b:00\.0 holds 10de:2684 \(subsystem 1043:8900, .*not the recorded 10de:2684 \(subsystem 1043:88e2, .*; fix: passthrough plan --vm win11\n/,
    );
    const plan = await l.cli("plan", "--vm", "win11");
    assertMatch(
      plan.stdout,
      /rule "gpu" matches the new device, so it stays and its record is updated/,
    );
    assertEquals((await l.cli("apply", "--yes", "--vm", "win11")).code, 0);
    assertEquals((await l.start("win11")).code, 0);

    l.rebuild(changed(homeLab(), gpu, { device: "0x2704" }));
    assertEquals((await l.start("win11")).code, 1);
    const other = await l.cli("plan", "--vm", "win11");
    assertEquals(other.code, 1);
    assertMatch(other.stdout, /refused \[no-match\] .*Rule "gpu" of VM "win11" matches no device/);
    assertMatch(other.stdout, /repair removes hostdev 0000:0b:00\.0 \(refusal above\)/);
  },
});
