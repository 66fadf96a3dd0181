/**
 * Planning until refusals settle: a refused VM keeps its definition, so what it holds counts as
 * held for the others, round after round; VMs left out by `vms` still report drift plan-wide.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import {
  baseDevices,
  config,
  dev,
  domainXml,
  GPU,
  GPU_AUDIO,
  HOST,
  host,
  LINUX,
  vmOf,
  WIN10,
  withPort,
} from "../helpers/plan_world.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { gpuIdentity } from "../helpers/devices.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { editDomainXml } from "../../lib/domain/domain_xml.ts";
import { planWorld } from "../../lib/plan/plan.ts";
import type { DeviceIdentity } from "../../lib/plan/types.ts";
import { dataWorld } from "../helpers/world.ts";
import { tempHostTree } from "../helpers/hosts.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { readHostFacts } from "../../lib/host/preflight.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";

const BLANK = { subsystem_vendor: null, subsystem_device: null, revision: null };
const GPU_ADDRESS = "0000:01:00.0";
/** One model of GPU with no serial: two of them are told apart by slot only. */
const GPU_ONE = {
  class: "0x030000",
  vendor: "0x10de",
  device: "0x2684",
  subsystem_vendor: "0x1043",
  subsystem_device: "0x88e2",
  driver: "vfio-pci",
};

/** `root/world.xml`: two shut-off test-driver domains, "alpha" and "beta", with no devices. */
function writeAlphaBetaWorld(root: string): void {
  Deno.writeTextFileSync(
    `${root}/world.xml`,
    `<?xml version="1.0"?>\n<node>\n${
      testDomain("alpha", "11111111-1111-4111-8111-111111111111")
    }\n${testDomain("beta", "22222222-2222-4222-8222-222222222222")}\n</node>\n`,
  );
}

function testDomain(name: string, uuid: string): string {
  return `<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>${name}</name>
    <uuid>${uuid}</uuid>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
    </devices>
    <test:runstate>5</test:runstate>
  </domain>`;
}

Deno.test("planHostdevs() limited to some VMs still reports drift in the others, plan-wide", async () => {
  const swapped = host([
    ...baseDevices(),
    dev({ bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x1002", device: "0x73df" }),
  ]);
  await withPort([WIN10, LINUX], (libvirt) => {
    const both = config(
      '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
        "  linux:\n    devices: []\n",
    );
    libvirt.define(vmOf(planHostdevs({ config: both, host: HOST, libvirt }), "win10").desiredXml);
    const limited = planHostdevs({ config: both, host: swapped, libvirt, vms: ["linux"] });
    assertEquals(limited.vms.map((vm) => vm.name), ["linux"]);
    const drift = limited.warnings.filter((w) => w.code === "drift");
    assertEquals([...new Set(drift.map((w) => w.vm))], ["win10"]);
    assertOk(
      drift.some((w) => w.devices?.[0] === "0000:01:00.0" && /now holds 1002:73df/.test(w.message)),
    );
    // The same warnings win10's own plan gives when it is planned; then not repeated plan-wide.
    const all = planHostdevs({ config: both, host: swapped, libvirt });
    assertEquals(all.warnings.filter((w) => w.code === "drift"), []);
    const only = planHostdevs({ config: both, host: swapped, libvirt, vms: ["win10"] });
    assertEquals(only.warnings.filter((w) => w.code === "drift"), []);
    // win10 is refused (its rule matches nothing): its stale hostdev is a refusal, listed first.
    // Plan-wide, the message says that what it describes waits for win10's own plan.
    const left =
      '; "win10" is left out of this plan: its own plan (passthrough plan --vm win10) does that';
    assertOk(drift.every((w) => w.message.endsWith(left)));
    assertEquals(
      vmOf(all, "win10").errors.filter((w) => w.code === "drift"),
      drift.map((w) => ({ ...w, message: w.message.slice(0, -left.length) })),
    );
    // Planned as `plan --vm linux -f F --sysfs T -c URI` does: that own plan reads the same
    // config, tree and libvirt, and a URI's password is not printed to paste.
    const run = {
      config: "/etc/pt/my config.yaml",
      sysfs: "/srv/tree",
      connect: "qemu+tcp://admin:s3cret@hv9/system",
    };
    const flagged = planHostdevs({ config: both, host: swapped, libvirt, vms: ["linux"], run })
      .warnings.filter((w) => w.code === "drift");
    assertEquals(flagged.length, drift.length);
    const own =
      "(passthrough plan --vm win10 --config '/etc/pt/my config.yaml' --sysfs /srv/tree " +
      "-c URI (your URI: this run's holds a password, not repeated here)) does that";
    assertOk(flagged.every((w) => w.message.endsWith(own)), flagged[0]?.message);
    assertOk(flagged.every((w) => !w.message.includes("s3cret")));
  });
});

Deno.test("planHostdevs() limited to some VMs reports the others' hostdevs on devices the host needs, plan-wide", async () => {
  const nvme = config(
    "  win10:\n    devices:\n      - name: nvme\n        match: { class: nvme }\n" +
      "  linux:\n    devices: []\n",
  );
  const rootFs = {
    address: "0000:03:00.0",
    reason: "mounted-filesystem" as const,
    detail: "/ on nvme0n1p2",
  };
  const needed = topologyFromDescription({ devices: baseDevices(), host_use: [rootFs] }, {
    source: "test-host",
  });
  await withPort([WIN10, LINUX], (libvirt) => {
    libvirt.define(
      vmOf(planHostdevs({ config: nvme, host: host(baseDevices()), libvirt }), "win10").desiredXml,
    );
    const limited = planHostdevs({ config: nvme, host: needed, libvirt, vms: ["linux"] });
    const hostNeeded = limited.warnings.filter((w) => w.code === "host-needed");
    assertEquals(hostNeeded.map((w) => [w.vm, w.devices]), [["win10", ["0000:03:00.0"]]]);
    assertMatch(
      hostNeeded[0]!.message,
      /mounted-filesystem: \/ on nvme0n1p2.*is left out of this plan/,
    );
  });
});

Deno.test("planHostdevs() limited to some VMs reports another VM's card that moved, plan-wide", async () => {
  // A new NVMe drive took the GPU's bus: win10's definition names the drive now, and win10's own
  // plan follows the card. `plan --vm linux` said nothing of it (a move is no drift warning).
  const homeFs = {
    address: GPU_ADDRESS,
    reason: "mounted-filesystem" as const,
    detail: "/home on nvme1n1p1",
  };
  const renumbered = topologyFromDescription({
    devices: [
      ...baseDevices(),
      dev({ bdf: GPU_ADDRESS, group: 1, class: "0x010802", vendor: "0x144d", device: "0xa808" }),
      { ...GPU, bdf: "0000:05:00.0", group: 5 },
      { ...GPU_AUDIO, bdf: "0000:05:00.1", group: 5 },
    ],
    host_use: [homeFs],
  }, { source: "test-host" });
  await withPort([WIN10, LINUX], (libvirt) => {
    const gpu = config(
      '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
        "  linux:\n    devices: []\n",
    );
    libvirt.define(vmOf(planHostdevs({ config: gpu, host: HOST, libvirt }), "win10").desiredXml);
    const own = vmOf(planHostdevs({ config: gpu, host: renumbered, libvirt }), "win10");
    assertEquals(own.move.map((m) => [m.from, m.to]), [
      [GPU_ADDRESS, "0000:05:00.0"],
      ["0000:01:00.1", "0000:05:00.1"],
    ]);
    const limited = planHostdevs({ config: gpu, host: renumbered, libvirt, vms: ["linux"] });
    const drift = limited.warnings.filter((w) => w.code === "drift");
    assertEquals(drift.map((w) => [w.vm, w.devices]), [
      ["win10", [GPU_ADDRESS, "0000:05:00.0"]],
      ["win10", ["0000:01:00.1", "0000:05:00.1"]],
    ]);
    assertMatch(
      drift[0]!.message,
      /^Hostdev 0000:01:00\.0 of "win10" \(rule "gpu"\) was recorded as 10de:2684 .* but the address now holds 144d:a808 .*: its card is now at 0000:05:00\.0 \(same IDs and serial\); "win10" is left out of this plan: its own plan \(passthrough plan --vm win10\) follows it there$/,
    );
  });
});

Deno.test("planHostdevs() refuses to give a device to a VM while a refused VM keeps it in its definition", () => {
  const root = Deno.makeTempDirSync({ prefix: "passthrough-fixpoint-" });
  try {
    writeAlphaBetaWorld(root);
    using port = openLibvirtPort(`test://${root}/world.xml`);
    port.define(editDomainXml(port.getPersistentXml("alpha", { secure: true }), {
      remove: [],
      add: [{ address: GPU_ADDRESS, managed: true }],
      records: [gpuIdentity(GPU_ADDRESS)],
    }));
    const host = topologyFromDescription({
      devices: [
        {
          bdf: GPU_ADDRESS,
          group: 7,
          class: "0x030000",
          vendor: "0x10de",
          device: "0x2684",
          driver: "vfio-pci",
          ...BLANK,
        },
      ],
    }, { source: "one-gpu" });
    // alpha's rule no longer matches (a typo): alpha is refused and keeps the GPU_ADDRESS as it is.
    const cfg = config(`  alpha:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2685" }
  beta:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684" }
`);
    const plan = planHostdevs({ config: cfg, host, libvirt: port });
    const [alpha, beta] = plan.vms;
    assertEquals(alpha?.errors.map((e) => e.code), ["no-match"]);
    assertEquals(alpha?.keep, [GPU_ADDRESS]);
    assertEquals(beta?.errors.map((e) => e.code), ["device-assigned-twice"]);
    assertMatch(beta!.errors[0]!.message, /"alpha" holds it in its definition now/);
    assertEquals(beta?.changed, false);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

/** A definition of `name` holding `owned` hostdevs this tool added (with their records). */
function owning(name: string, owned: DeviceIdentity[]): string {
  const empty =
    `<domain type='kvm'>\n  <name>${name}</name>\n  <devices>\n  </devices>\n</domain>\n`;
  return editDomainXml(empty, {
    remove: [],
    add: owned.map((r) => ({ address: r.address, managed: true })),
    records: owned,
  });
}

Deno.test("planWorld() settles refusals over several rounds, each refused VM keeping what it holds", () => {
  const twoCards = topologyFromDescription({
    devices: [
      { bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x10de", device: "0x2684" },
      { bdf: "0000:02:00.0", group: 2, class: "0x020000", vendor: "0x8086", device: "0x1533" },
    ].map((d) => ({ ...d, ...BLANK, driver: "vfio-pci" })),
  }, { source: "two-cards" });
  const nic: DeviceIdentity = {
    ...gpuIdentity("0000:02:00.0", { driver: "igb", rule: "nic" }),
    vendorId: "8086",
    deviceId: "1533",
    classCode: "020000",
  };
  const world = dataWorld({
    // alpha holds the GPU, but its rule no longer matches (a typo): refused in round 1.
    alpha: owning("alpha", [gpuIdentity("0000:01:00.0", { driver: "vfio-pci" })]),
    // beta holds the NIC, which its config no longer asks for, and wants the GPU.
    beta: owning("beta", [nic]),
    gamma: owning("gamma", []),
  });
  const cfg = config(`  alpha:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2685" }
  beta:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684" }
  gamma:
    devices:
      - name: nic
        match: { vendor_device_id: "8086:1533" }
`);
  const plan = planWorld({ config: cfg, host: twoCards, world });
  // Round 2 refuses beta (alpha keeps the GPU), so beta keeps the NIC; round 3 refuses gamma.
  assertEquals(plan.vms.map((vm) => [vm.name, vm.errors.map((e) => e.code), vm.changed]), [
    ["alpha", ["no-match"], false],
    ["beta", ["device-assigned-twice"], false],
    ["gamma", ["device-assigned-twice"], false],
  ]);
  assertMatch(plan.vms[1]!.errors[0]!.message, /"alpha" holds it in its definition now/);
  assertMatch(plan.vms[2]!.errors[0]!.message, /"beta" holds it in its definition now/);
  assertEquals(plan.vms.map((vm) => vm.keep), [["0000:01:00.0"], ["0000:02:00.0"], []]);
});

Deno.test("planHostdevs() limited to some VMs names a left-out VM starting with - as --vm=NAME", async () => {
  const swapped = host([
    ...baseDevices(),
    dev({ bdf: "0000:01:00.0", group: 1, class: "0x030000", vendor: "0x1002", device: "0x73df" }),
  ]);
  await withPort([domainXml("-lab", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e03"), LINUX], (libvirt) => {
    const both = config(
      '  "-lab":\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
        "  linux:\n    devices: []\n",
    );
    libvirt.define(vmOf(planHostdevs({ config: both, host: HOST, libvirt }), "-lab").desiredXml);
    const limited = planHostdevs({ config: both, host: swapped, libvirt, vms: ["linux"] });
    const drift = limited.warnings.filter((w) => w.code === "drift");
    assertOk(drift.length > 0);
    // `--vm -lab` fails: "Option '--vm' argument is ambiguous".
    assertOk(drift.every((w) => w.message.includes("(passthrough plan --vm=-lab)")));
  });
});

Deno.test("planHostdevs() limited to one VM of a swap names the plan that takes both", async () => {
  // Two identical GPUs, told apart by slot; the cards are swapped, so each VM's card is at the
  // other VM's address. Alone, each VM is refused (the other holds its card); together, each
  // follows its own.
  const gpu = (bdf: string, group: number, slot: string) => dev({ ...GPU_ONE, bdf, group, slot });
  const before = [
    ...baseDevices(),
    gpu("0000:01:00.0", 1, "PCIE1"),
    gpu("0000:05:00.0", 5, "PCIE2"),
  ];
  const after = [
    ...baseDevices(),
    gpu("0000:01:00.0", 1, "PCIE2"),
    gpu("0000:05:00.0", 5, "PCIE1"),
  ];
  const bySlot = config(
    '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684", slot: PCIE1 }\n' +
      '  linux:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684", slot: PCIE2 }\n',
  );
  const linux = domainXml("linux", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e02");
  await using beforeTree = await tempHostTree({ devices: before });
  await using afterTree = await tempHostTree({ devices: after });
  const first = await discoverHost({ root: beforeTree.dir });
  const swapped = await discoverHost({ root: afterTree.dir });
  await withPort([WIN10, linux], (libvirt) => {
    for (const vm of planHostdevs({ config: bySlot, host: first, libvirt }).vms) {
      libvirt.define(vm.desiredXml);
    }
    const both = planHostdevs({ config: bySlot, host: swapped, libvirt });
    assertEquals(both.vms.map((vm) => [vm.name, vm.errors, vm.move.map((m) => m.to)]), [
      ["win10", [], ["0000:05:00.0"]],
      ["linux", [], ["0000:01:00.0"]],
    ]);
    for (const [vm, other] of [["win10", "linux"], ["linux", "win10"]] as const) {
      const alone = vmOf(planHostdevs({ config: bySlot, host: swapped, libvirt, vms: [vm] }), vm);
      const twice = alone.errors.filter((e) => e.code === "device-assigned-twice");
      assertEquals(twice.length, 1);
      assertMatch(
        twice[0]!.message,
        new RegExp(
          `; "${other}" gives it up in its own plan: planned together, nothing is refused \\(passthrough plan --vm ${vm} --vm ${other}\\)$`,
        ),
      );
    }
    // Run with --sysfs and -c, the joint plan it names reads the same tree and libvirt.
    const run = { sysfs: afterTree.dir, connect: "qemu+ssh://root@hv2/system", stateDir: "/x" };
    const flagged = planHostdevs({ config: bySlot, host: swapped, libvirt, vms: ["win10"], run });
    assertOk(
      vmOf(flagged, "win10").errors.some((e) =>
        e.message.endsWith(
          `(passthrough plan --vm win10 --vm linux --sysfs ${afterTree.dir} -c qemu+ssh://root@hv2/system)`,
        )
      ),
    );
  });
});

Deno.test("planHostdevs() limited to one VM names no joint plan when the other VM keeps the device", async () => {
  const card = dev({ ...GPU_ONE, bdf: "0000:01:00.0", group: 1 });
  await using tree = await tempHostTree({ devices: [...baseDevices(), card] });
  const one = await discoverHost({ root: tree.dir });
  const both = config(
    '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
      '  linux:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n',
  );
  const linux = domainXml("linux", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e02");
  await withPort([WIN10, linux], (libvirt) => {
    const onlyLinux = config(
      "  win10:\n    devices: []\n" +
        '  linux:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n',
    );
    libvirt.define(
      vmOf(planHostdevs({ config: onlyLinux, host: one, libvirt }), "linux").desiredXml,
    );
    const alone = vmOf(planHostdevs({ config: both, host: one, libvirt, vms: ["win10"] }), "win10");
    const twice = alone.errors.filter((e) => e.code === "device-assigned-twice");
    assertEquals(twice.length, 1);
    assertMatch(
      twice[0]!.message,
      /: a device can belong to one VM only; give it to "win10" or "linux"$/,
    );
  });
});

Deno.test("planHostdevs() run with --sysfs points a bridge rule's refusal at the devices of that tree", async () => {
  await withPort([WIN10], (libvirt) => {
    const bridge = config(
      '  win10:\n    devices:\n      - name: bridge\n        match: { class: "0604" }\n',
    );
    const run = { sysfs: "/srv/trees/hv2", connect: "qemu+ssh://hv2/system" };
    const [issue] = vmOf(planHostdevs({ config: bridge, host: HOST, libvirt, run }), "win10")
      .errors.filter((e) => e.code === "no-match");
    // `devices` reads no libvirt: only the tree is repeated.
    assertOk(
      issue?.message.endsWith(
        'name the device behind it instead (see "passthrough devices --sysfs /srv/trees/hv2")',
      ),
      issue?.message,
    );
  });
});

Deno.test("planWorld() plans each VM of a chain of refusals at most twice, however long the chain", () => {
  // vm0's rule matches nothing; each later VM wants the card the one before holds. Each round
  // refuses one more VM, so the chain takes a round per VM: a VM whose conflicts did not change
  // is not planned again.
  const length = 24;
  const cards = Array.from({ length }, (_, i) => ({
    bdf: `0000:${(i + 1).toString(16).padStart(2, "0")}:00.0`,
    group: i + 1,
    class: "0x010802",
    vendor: "0x144d",
    device: "0xa808",
    ...BLANK,
    driver: "vfio-pci",
  }));
  const chain = topologyFromDescription({ devices: cards }, { source: "nvme-chain" });
  const identity = (address: string): DeviceIdentity => ({
    ...gpuIdentity(address, { driver: "vfio-pci", rule: "disk" }),
    vendorId: "144d",
    deviceId: "a808",
    classCode: "010802",
  });
  const world = dataWorld(Object.fromEntries(
    cards.map((c, i) => [`vm${i}`, owning(`vm${i}`, [identity(c.bdf)])]),
  ));
  const cfg = config(
    cards.map((_, i) =>
      `  vm${i}:\n    devices:\n      - name: disk\n        match: { vendor_device_id: "144d:a808", address: "${
        i === 0 ? "0000:ff:00.0" : cards[i - 1]!.bdf
      }" }\n`
    ).join(""),
  );
  const tree = Deno.makeTempDirSync({ prefix: "passthrough-chain-" });
  try {
    const real = readHostFacts({ reader: denoFsReader(), sysRoot: tree, procRoot: `${tree}/proc` });
    const planned = new Map<string, number>();
    const facts = {
      ...real,
      resetMethods: (address: string) => {
        planned.set(address, (planned.get(address) ?? 0) + 1);
        return real.resetMethods(address);
      },
    };
    const plan = planWorld({ config: cfg, host: chain, world, facts });
    assertEquals(
      plan.vms.map((vm) => vm.errors.map((e) => e.code)),
      cards.map((_, i) => [i === 0 ? "no-match" : "device-assigned-twice"]),
    );
    assertEquals(plan.vms.map((vm) => vm.keep), cards.map((c) => [c.bdf]));
    // Each card is judged once when its VM is first planned, once more when it is refused.
    assertEquals(planned.size, length - 1);
    assertOk([...planned.values()].every((n) => n <= 2), JSON.stringify([...planned]));
  } finally {
    Deno.removeSync(tree, { recursive: true });
  }
});
