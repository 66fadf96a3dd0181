/**
 * The check before each define, on worlds built from data: what another domain may still hold
 * because the plan counted on it (a swap's other half, a running guest that releases at its next
 * power-off), and what is new since the plan (a device given to another domain, a guest started
 * since, a definition that cannot be read).
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { heldSincePlan } from "../../lib/apply/recheck.ts";
import { emptyVmPlan } from "../../lib/plan/vm_edit.ts";
import type { Plan, VmPlan } from "../../lib/plan/types.ts";
import { dataWorld } from "../helpers/world.ts";
import { domainXml, GPU_CONFIG, HOST, WIN10, withPort } from "../helpers/plan_world.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { applyPlan } from "../../lib/apply/apply.ts";
import { listBackups } from "../../lib/state/backups.ts";
import type { DeviceResolvers } from "../../lib/plan/used_devices.ts";
import { unresolvedDeviceWarning } from "../../lib/plan/issues.ts";

const GPU = "0000:01:00.0";
const AUDIO = "0000:01:00.1";
const NIC = "0000:02:00.0";

function domain(name: string, addresses: string[]): string {
  const hostdevs = addresses.map((a) => {
    const [, bus, slot, fn] = /^0000:(..):(..)\.(.)$/.exec(a)!;
    return `<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x${bus}' slot='0x${slot}' function='0x${fn}'/></source></hostdev>`;
  }).join("");
  return `<domain type='test'><name>${name}</name><devices>${hostdevs}</devices></domain>`;
}

/** A VM plan taking `take` (as a moved card) and releasing `release`, planned from `xml`. */
function vmPlan(
  name: string,
  xml: string,
  change: { take?: string[]; release?: string[]; active?: boolean },
): VmPlan {
  return {
    ...emptyVmPlan(name, xml),
    move: (change.take ?? []).map((to) => ({ from: "0000:7f:00.0", to, rule: "r", evidence: "" })),
    remove: change.release ?? [],
    active: change.active ?? false,
  };
}

function planOf(vms: VmPlan[], groupOf?: Record<string, number>): Plan {
  return {
    config: "",
    host: "",
    uri: "",
    errors: [],
    warnings: [],
    vms,
    ...(groupOf === undefined ? {} : { groupOf }),
  };
}

Deno.test("heldSincePlan() allows what the plan counted on: a swap's other half, a running releaser", () => {
  // alpha and beta swap: alpha (first) takes beta's GPU, beta takes alpha's NIC after.
  const alphaXml = domain("alpha", [NIC]);
  const betaXml = domain("beta", [GPU]);
  const alpha = vmPlan("alpha", alphaXml, { take: [GPU], release: [NIC] });
  const beta = vmPlan("beta", betaXml, { take: [NIC], release: [GPU] });
  const plan = planOf([alpha, beta]);
  assertEquals(heldSincePlan(alpha, plan, dataWorld({ alpha: alphaXml, beta: betaXml })), []);
  // beta runs with the GPU and releases it at its next power-off: the plan said so.
  const running = vmPlan("beta", betaXml, { release: [GPU], active: true });
  const applied = domain("beta", []);
  const world = dataWorld({
    alpha: alphaXml,
    beta: { xml: applied, active: true, liveXml: betaXml },
  });
  assertEquals(heldSincePlan(alpha, planOf([alpha, running]), world), []);
});

Deno.test("heldSincePlan() refuses what is new since the plan", () => {
  const alphaXml = domain("alpha", []);
  const alpha = vmPlan("alpha", alphaXml, { take: [GPU, AUDIO] });
  const plan = planOf([alpha], { [GPU]: 7, [AUDIO]: 7 });
  const cases: [string, Parameters<typeof dataWorld>[0], RegExp][] = [
    [
      "another domain was given the device",
      { alpha: alphaXml, gamma: domain("gamma", [AUDIO]) },
      /^"gamma" holds "0000:01:00\.1" in its persistent definition$/,
    ],
    [
      "a guest started since holds it hot-plugged",
      {
        alpha: alphaXml,
        gamma: { xml: domain("gamma", []), active: true, liveXml: domain("gamma", [GPU]) },
      },
      /^"gamma" holds "0000:01:00\.0" in its running definition$/,
    ],
    [
      "a definition cannot be read any more",
      { alpha: alphaXml, gamma: "<domain><name>gamma</name><devices><hostdev type='pci'>" },
      /^"gamma" holds|^what "gamma" holds is unknown/,
    ],
  ];
  for (const [name, world, expected] of cases) {
    const problems = heldSincePlan(alpha, plan, dataWorld(world));
    assertEquals(problems.length, 1, `${name}: ${problems}`);
    assertMatch(problems[0]!, expected, name);
  }
  // A releaser that was not running at plan time and now runs with the device: new.
  const betaXml = domain("beta", [GPU]);
  const beta = vmPlan("beta", betaXml, { release: [GPU], active: false });
  const started = dataWorld({
    alpha: alphaXml,
    beta: { xml: domain("beta", []), active: true, liveXml: betaXml },
  });
  assertEquals(heldSincePlan(alpha, planOf([alpha, beta]), started), [
    `"beta" holds "0000:01:00.0" in its running definition`,
  ]);
  // A VM that takes nothing is never held back, not even by a domain it cannot read.
  const unknown = dataWorld({
    alpha: alphaXml,
    gamma: "<domain><name>gamma</name><devices><hostdev type='pci'>",
  });
  assertEquals(heldSincePlan(alpha, plan, unknown).length, 1);
  assertEquals(heldSincePlan(vmPlan("alpha", alphaXml, {}), plan, unknown), []);
});

Deno.test("heldSincePlan() refuses a group-mate given away, a releaser edited since, an unreadable definition's addresses, a failed read", () => {
  const alphaXml = domain("alpha", []);
  // alpha takes the GPU; its audio function shares IOMMU group 7 and goes with it.
  const alpha = vmPlan("alpha", alphaXml, { take: [GPU] });
  const grouped = planOf([alpha], { [GPU]: 7, [AUDIO]: 7 });
  assertEquals(
    heldSincePlan(alpha, grouped, dataWorld({ alpha: alphaXml, gamma: domain("gamma", [AUDIO]) })),
    [`"gamma" holds "0000:01:00.1" in its persistent definition`],
  );
  // beta releases the GPU, but its definition was changed after the plan (still holding it).
  const betaXml = domain("beta", [GPU]);
  const beta = vmPlan("beta", betaXml, { release: [GPU] });
  const edited = domain("beta", [GPU, NIC]);
  assertEquals(
    heldSincePlan(alpha, planOf([alpha, beta]), dataWorld({ alpha: alphaXml, beta: edited })),
    [`"beta" holds "0000:01:00.0" in its persistent definition`],
  );
  // beta moves its card away from the GPU's address: the plan counted on that too.
  const moving = { ...beta, remove: [], move: [{ from: GPU, to: NIC, rule: "r", evidence: "" }] };
  assertEquals(
    heldSincePlan(alpha, planOf([alpha, moving]), dataWorld({ alpha: alphaXml, beta: betaXml })),
    [],
  );
  // An unreadable definition still holds the addresses a lenient scan finds in it.
  const broken = `${domain("gamma", [GPU]).replace("</devices></domain>", "")}<devices`;
  assertEquals(
    heldSincePlan(alpha, grouped, dataWorld({ alpha: alphaXml, gamma: broken })),
    [`"gamma" holds "0000:01:00.0" in its persistent definition`],
  );
  // A definition libvirt would not give: what it holds is unknown.
  const world = dataWorld({ alpha: alphaXml });
  world.domains.push({
    name: "gamma",
    active: false,
    persistent: { kind: "read-failed", error: "internal error: connection lost" },
    live: null,
  });
  assertEquals(heldSincePlan(alpha, grouped, world), [
    `what "gamma" holds is unknown (persistent definition: its definition cannot be read: internal error: connection lost)`,
  ]);
});

/** Resolvers that place block disks, USB devices, NICs and character devices by table. */
function resolvers(
  disks: Record<string, string[]>,
  usb: Record<string, string[]> = {},
  nics: Record<string, string[]> = {},
  chars: Record<string, string[]> = {},
): DeviceResolvers {
  return {
    blockDeviceControllers: (path) => disks[path] ?? [],
    usbDeviceControllers: (source) => usb[`${source.vendorId}:${source.productId}`] ?? [],
    netDeviceControllers: (name) => nics[name] ?? [],
    charDeviceControllers: (path) => chars[path] ?? [],
  };
}

Deno.test("heldSincePlan() counts the controllers under another domain's disks, USB and SCSI devices, interfaces and character devices, when it can resolve them", () => {
  const alphaXml = domain("alpha", []);
  const alpha = vmPlan("alpha", alphaXml, { take: [NIC] });
  const plan = planOf([alpha]);
  const nas = (devices: string) =>
    `<domain type='test'><name>nas</name><devices>${devices}</devices></domain>`;
  const disk = `<disk type='block' device='disk'><source dev='/dev/nvme1n1'/>` +
    `<target dev='vdb'/></disk>`;
  const usb = `<hostdev mode='subsystem' type='usb'><source><vendor id='0x046d'/>` +
    `<product id='0xc52b'/></source></hostdev>`;
  // A block disk and a USB receiver given to nas since the plan, on the controller alpha takes.
  const world = dataWorld({ alpha: alphaXml, nas: nas(disk + usb) });
  const both = resolvers({ "/dev/nvme1n1": [NIC] }, { "046d:c52b": [NIC] });
  assertEquals(heldSincePlan(alpha, plan, world, both), [
    `"nas" holds "0000:02:00.0" (under its disk /dev/nvme1n1, USB device 046d:c52b) in its persistent definition`,
  ]);
  const bridge = `<interface type='bridge'><source bridge='br0'/></interface>`;
  const onBridge = dataWorld({ alpha: alphaXml, nas: nas(bridge) });
  assertEquals(heldSincePlan(alpha, plan, onBridge, resolvers({}, {}, { br0: [NIC] })), [
    `"nas" holds "0000:02:00.0" (under its network interface br0) in its persistent definition`,
  ]);
  const evdev = `<input type='evdev'><source dev='/dev/input/event3'/></input>`;
  const onInput = dataWorld({ alpha: alphaXml, nas: nas(evdev) });
  const keyboard = resolvers({}, {}, {}, { "/dev/input/event3": [NIC] });
  assertEquals(heldSincePlan(alpha, plan, onInput, keyboard), [
    `"nas" holds "0000:02:00.0" (under its character device /dev/input/event3) in its persistent definition`,
  ]);
  const deniedInput: DeviceResolvers = {
    ...keyboard,
    charDeviceControllers: () => {
      throw new Error("EACCES");
    },
  };
  assertEquals(heldSincePlan(alpha, plan, onInput, deniedInput), [
    `what "nas" holds is unknown (persistent definition: its character device /dev/input/event3 cannot be read: EACCES)`,
  ]);
  const scsi = `<hostdev mode='subsystem' type='scsi'><source><adapter name='scsi_host2'/>` +
    `<address bus='0' target='0' unit='0'/></source></hostdev>`;
  const onAdapter = dataWorld({ alpha: alphaXml, nas: nas(scsi) });
  const adapter = { ...resolvers({}), scsiHostControllers: () => [NIC] };
  assertEquals(heldSincePlan(alpha, plan, onAdapter, adapter), [
    `"nas" holds "0000:02:00.0" (under its SCSI adapter scsi_host2) in its persistent definition`,
  ]);
  const onlyUsb = dataWorld({ alpha: alphaXml, nas: nas(usb) });
  assertEquals(heldSincePlan(alpha, plan, onlyUsb, both), [
    `"nas" holds "0000:02:00.0" (under its USB device 046d:c52b) in its persistent definition`,
  ]);
  // Without resolvers (a captured tree), or with ones that cannot say, nothing is held.
  assertEquals(heldSincePlan(alpha, plan, world), []);
  const unknown: DeviceResolvers = {
    blockDeviceControllers: () => null,
    usbDeviceControllers: () => null,
  };
  assertEquals(heldSincePlan(alpha, plan, world, unknown), []);
  // A disk path that cannot be read: what nas holds is unknown, unless the plan warned about it.
  const denied: DeviceResolvers = {
    ...unknown,
    blockDeviceControllers: () => {
      throw new Error("EACCES");
    },
  };
  assertEquals(heldSincePlan(alpha, plan, world, denied), [
    `what "nas" holds is unknown (persistent definition: its disk /dev/nvme1n1 cannot be read: EACCES)`,
  ]);
  const warned = { ...plan, warnings: [unresolvedDeviceWarning("nas", "/dev/nvme1n1", "EACCES")] };
  assertEquals(heldSincePlan(alpha, warned, world, denied), []);
  // Devices on another controller are not alpha's business.
  const elsewhere = resolvers({ "/dev/nvme1n1": [GPU] }, { "046d:c52b": [GPU] });
  assertEquals(heldSincePlan(alpha, plan, world, elsewhere), []);
});

/** `plan` applied through `libvirt`, every question answered yes, with `devices`; its report. */
async function applyYes(
  plan: Plan,
  libvirt: Parameters<typeof applyPlan>[1]["libvirt"],
  devices: DeviceResolvers,
) {
  const stateDir = Deno.makeTempDirSync();
  try {
    const report = await applyPlan(plan, {
      libvirt,
      stateDir,
      confirm: () => Promise.resolve("yes"),
      devices,
    });
    return { report, backups: listBackups(stateDir) };
  } finally {
    Deno.removeSync(stateDir, { recursive: true });
  }
}

Deno.test("applyPlan() re-checks other domains' block disks with the plan's host facts before each define", async () => {
  await withPort([WIN10], async (libvirt) => {
    const plan = planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt });
    assertEquals(plan.vms[0]!.add.map((a) => a.address), [GPU, AUDIO]);
    // While apply would wait at its prompt, nas is defined with the disk under the GPU's card.
    libvirt.define(domainXml(
      "nas",
      "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0a",
      `<disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='vdb'/></disk>`,
      true, // No test-driver run state: libvirt validates what is defined.
    ));
    const { report, backups } = await applyYes(plan, libvirt, resolvers({ "/dev/sdz": [AUDIO] }));
    const result = report.vms[0]!;
    assertEquals([result.status, result.code], ["failed", "conflict-changed"]);
    assertMatch(
      result.message,
      /since the plan was made, "nas" holds "0000:01:00\.1" \(under its disk \/dev\/sdz\) in its persistent definition/,
    );
    assertEquals(backups, []);
  });
});

Deno.test("applyPlan() re-checks other domains' networks too, read again before each define", async () => {
  const lan = `<network><name>lan</name><forward mode='bridge'/><bridge name='br0'/></network>`;
  await withPort([WIN10, lan], async (libvirt) => {
    const plan = planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt });
    assertEquals(plan.vms[0]!.add.map((a) => a.address), [GPU, AUDIO]);
    // While apply would wait at its prompt, nas is defined on network lan, whose bridge's port is
    // under the GPU's card.
    libvirt.define(domainXml(
      "nas",
      "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0b",
      `<interface type='network'><source network='lan'/></interface>`,
      true,
    ));
    const onBridge = resolvers({}, {}, { br0: [AUDIO] });
    const result = (await applyYes(plan, libvirt, onBridge)).report.vms[0]!;
    assertEquals([result.status, result.code], ["failed", "conflict-changed"]);
    assertMatch(
      result.message,
      /"nas" holds "0000:01:00\.1" \(under its network lan \(interface br0\)\) in its persistent definition/,
    );
    // Networks that cannot be listed now: what nas holds is unknown, not nothing.
    const failing = {
      ...libvirt,
      listNetworks(): never {
        throw new Error("boom");
      },
    };
    const unknown = (await applyYes(plan, failing, onBridge)).report.vms[0]!;
    assertMatch(
      unknown.message,
      /what "nas" holds is unknown \(persistent definition: its network lan cannot be read: the networks cannot be listed: boom\)/,
    );
    // Unless the plan warned it could not list them either: then they count nothing, as there.
    const warned = planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt: failing });
    assertEquals(warned.warnings.map((w) => w.code), ["unreadable-definition"]);
    const applied = (await applyYes(warned, failing, onBridge)).report.vms[0]!;
    assertEquals([applied.status, applied.message], [
      "changed",
      'Defined "win10" (2 added, 0 removed)',
    ]);
  });
});

Deno.test("applyPlan() counts nothing under a network the plan warned it could not read, and only that one", async () => {
  const bridged = (name: string, bridge: string) =>
    `<network><name>${name}</name><forward mode='bridge'/><bridge name='${bridge}'/></network>`;
  // nas is on network lan, whose bridge's port is under the GPU's card.
  const nas = domainXml(
    "nas",
    "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0b",
    `<interface type='network'><source network='lan'/></interface>`,
    true,
  );
  const onBridge = resolvers({}, {}, { br0: [AUDIO], br1: [AUDIO] });
  /** `(warnedAbout, unreadableAtApply)`: the status and message of applying the plan. */
  const applyWith = (atPlan: string, atApply: string) =>
    withPort([WIN10, nas, bridged("lan", "br0"), bridged("dmz", "br1")], async (libvirt) => {
      const unreadable = (name: string) => ({
        ...libvirt,
        listNetworks: () =>
          libvirt.listNetworks!().map((n) =>
            n.name === name ? { name, xml: null, error: "access denied" } : n
          ),
      });
      const plan = planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt: unreadable(atPlan) });
      assertEquals(
        plan.warnings.map((w) => [w.code, w.message.split(":")[0]]),
        [["unreadable-definition", `Cannot read network "${atPlan}"`]],
      );
      const result = (await applyYes(plan, unreadable(atApply), onBridge)).report.vms[0]!;
      return [result.status, result.message];
    });
  // The plan could not read lan and said so: nas's interface on it counts nothing, as there.
  assertEquals(await applyWith("lan", "lan"), ["changed", 'Defined "win10" (2 added, 0 removed)']);
  // The plan warned about dmz, not lan: lan unreadable at apply makes what nas holds unknown.
  const [status, message] = await applyWith("dmz", "lan");
  assertEquals(status, "failed");
  assertMatch(
    message!,
    /what "nas" holds is unknown \(persistent definition: its network lan cannot be read: access denied\)/,
  );
});
