/**
 * `apply` reads the planned host's IOMMU groups and host use again before each define: between
 * the plan it showed and the define (the prompt, minutes), a function can be hot-added into a
 * group the VM takes, and the host can start using a device (a filesystem mounted on a disk of
 * the group). The host is a tree built by `host_tree.ts`, rebuilt after planning; libvirt is the
 * test driver.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import {
  baseDevices,
  config,
  dev,
  domainXml,
  GPU,
  GPU_AUDIO,
  GPU_CONFIG,
  WIN10,
  withFault,
  withPort,
} from "../helpers/plan_world.ts";
import { buildHostTree, type HostDescription } from "../../lib/testing/host_tree.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { applyPlan, type ApplyReport } from "../../lib/apply/apply.ts";
import { listBackups, writeBackup } from "../../lib/state/backups.ts";
import { openStateDir } from "../../lib/state/state_dir.ts";
import { type RollbackOptions, type RollbackReport, rollbackVm } from "../../lib/apply/rollback.ts";
import { hostDeviceReader, hostReader } from "../../cli/host_options.ts";
import { groupMatesHostNeeds } from "../../lib/apply/recheck.ts";
import { renderApplyReport } from "../../cli/render_apply.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import type { HostUse } from "../../lib/host/types.ts";
import { rulesStartGuard, type StartGuard } from "../../lib/plan/issues.ts";
import { runGuard } from "../../lib/guard/run.ts";
import { guardPolicies, type GuardPolicyFile } from "../../lib/guard/policy.ts";
import { recordPolicies } from "../../lib/guard/state.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";

/** An NVMe drive hot-added into the GPU's group 1, a function of the GPU's card (its vendor's). */
const NVME_IN_GROUP = dev({
  bdf: "0000:01:00.2",
  group: 1,
  class: "0x010802",
  vendor: "0x10de",
  device: "0xa808",
  driver: "nvme",
  class_name: "Non-Volatile memory controller",
});

/** Plans win10 over `before`, rebuilds the tree as `after`, applies with yes. */
async function planChangeApply(
  before: HostDescription,
  after: HostDescription,
  config = GPU_CONFIG,
  damage: (root: string) => void = () => {},
): Promise<{ report: ApplyReport; backups: number; xml: string; was: string }> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-host-recheck-" });
  try {
    const root = `${dir}/sysfs`;
    buildHostTree(before, root);
    const host = await discoverHost({ root, lspci: null });
    return await withPort([WIN10], async (libvirt: LibvirtPort) => {
      const plan = planHostdevs({ config, host, libvirt });
      assertEquals(plan.vms[0]!.errors, []);
      const was = libvirt.getPersistentXml("win10");
      // While apply waits at its prompt, the host changes.
      Deno.removeSync(root, { recursive: true });
      buildHostTree(after, root);
      damage(root);
      const report = await applyPlan(plan, {
        libvirt,
        stateDir: `${dir}/state`,
        confirm: () => Promise.resolve("yes"),
        hardware: hostDeviceReader(root),
        hostNow: { planned: host, ...hostReader(root) },
      });
      return {
        report,
        backups: listBackups(`${dir}/state`).length,
        xml: libvirt.getPersistentXml("win10"),
        was,
      };
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const PLANNED: HostDescription = { devices: [...baseDevices(), GPU, GPU_AUDIO] };

Deno.test("applyPlan() defines as planned when the groups and host use are as the plan read them", async () => {
  const { report, backups } = await planChangeApply(PLANNED, PLANNED);
  assertEquals([report.vms[0]!.status, report.vms[0]!.code, backups], ["changed", "applied", 1]);
});

Deno.test("applyPlan() does not define a VM whose IOMMU group gained a function since the plan", async () => {
  const { report, backups, xml, was } = await planChangeApply(PLANNED, {
    devices: [...PLANNED.devices, NVME_IN_GROUP],
  });
  const result = report.vms[0]!;
  // Before: defined with group 1's GPU and audio, the new drive in the group left to the host.
  assertEquals([result.status, result.code, backups, xml], ["failed", "hardware-changed", 0, was]);
  assertEquals(
    result.message,
    `Not applied to "win10": since the plan was made, the host's devices changed: IOMMU group 1 of "0000:01:00.0" (rule "gpu") now also holds "0000:01:00.2" (class 010802, driver nvme), which the plan did not see (VFIO hands a guest the whole group): run the plan again`,
  );
});

Deno.test("apply's report prints a new group mate's driver name holding a tab escaped, the result raw", async () => {
  // lspci's line format lets a tab through: kept, the report's line read as two columns.
  const { report } = await planChangeApply(PLANNED, {
    devices: [...PLANNED.devices, { ...NVME_IN_GROUP, driver: "nvme\tx" }],
  });
  assertOk(report.vms[0]!.message.includes("driver nvme\tx)"), report.vms[0]!.message);
  const text = renderApplyReport(report, { color: false });
  assertOk(!text.includes("\t"), text);
  assertOk(text.includes("driver nvme\\u0009x)"), text);
});

Deno.test("applyPlan() does not define a VM whose IOMMU group's listing cannot be read now", async () => {
  const after = { devices: [...PLANNED.devices, NVME_IN_GROUP] };
  const { report, backups, xml, was } = await planChangeApply(
    PLANNED,
    after,
    GPU_CONFIG,
    (root) => {
      Deno.removeSync(`${root}/kernel/iommu_groups/1/devices`, { recursive: true });
    },
  );
  const result = report.vms[0]!;
  // Before: read as a group without mates, defined although the drive joined it.
  assertEquals([result.status, result.code, backups, xml], ["failed", "hardware-changed", 0, was]);
  assertEquals(
    result.message,
    `Not applied to "win10": since the plan was made, the host's devices changed: the members of IOMMU group 1 of "0000:01:00.0" (rule "gpu") cannot be read now (kernel/iommu_groups/1/devices), so what else a guest would take with it is unknown: run the plan again`,
  );
});

Deno.test("applyPlan() does not define a VM whose device the host uses since the plan", async () => {
  const { report, backups, xml, was } = await planChangeApply(PLANNED, {
    ...PLANNED,
    host_use: [{ address: GPU.bdf, reason: "console-vga", detail: "the boot console" }],
  });
  const result = report.vms[0]!;
  // Before: defined, handing the host's console to the guest at its next start.
  assertEquals([result.status, result.code, backups, xml], ["failed", "hardware-changed", 0, was]);
  assertEquals(
    result.message,
    `Not applied to "win10": since the plan was made, the host's devices changed: "0000:01:00.0" (rule "gpu") is now in use by the host (console-vga: the boot console), which it was not at the plan: run the plan again`,
  );
});

Deno.test("applyPlan() does not define a VM whose group's disk the host mounted since the plan", async () => {
  // A card with its own NVMe drive: the plan passes it with the GPU (the same card).
  const card = { devices: [...PLANNED.devices, NVME_IN_GROUP] };
  const mounted = { address: NVME_IN_GROUP.bdf, reason: "mounted-filesystem", detail: "/srv" };
  const { report, backups, xml, was } = await planChangeApply(card, {
    ...card,
    host_use: [mounted as HostUse],
  });
  const result = report.vms[0]!;
  // Before: defined, handing the drive the host mounted to the guest at its next start.
  assertEquals([result.status, result.code, backups, xml], ["failed", "hardware-changed", 0, was]);
  assertEquals(
    result.message,
    `Not applied to "win10": since the plan was made, the host's devices changed: "0000:01:00.2" (rule "gpu") is now in use by the host (mounted-filesystem: /srv), which it was not at the plan: run the plan again`,
  );
});

Deno.test("applyPlan() does not define a VM whose SR-IOV function's VF the host uses since the plan", async () => {
  // An SR-IOV NIC: the plan refuses it while the host uses a VF, which leaving igb destroys.
  const pf = dev({ bdf: "0000:06:00.0", group: 13, class: "0x020000", device: "0x1521" });
  const vf = dev({ bdf: "0000:06:10.0", group: 14, class: "0x020000", physfn: pf.bdf });
  const devices = [...baseDevices(), pf, vf];
  const route = { address: vf.bdf, reason: "default-route", detail: "default route via enp6s16" };
  const { report, backups, xml, was } = await planChangeApply(
    { devices },
    { devices, host_use: [route as HostUse] },
    config(
      `  win10:\n    devices:\n      - name: nic\n        match: { vendor_device_id: "8086:1521" }\n`,
    ),
  );
  const result = report.vms[0]!;
  // Before: defined, the host's route going with the VF at the guest's start.
  assertEquals([result.status, result.code, backups, xml], ["failed", "hardware-changed", 0, was]);
  assertEquals(
    result.message,
    `Not applied to "win10": since the plan was made, the host's devices changed: the virtual function "0000:06:10.0" of "0000:06:00.0" (rule "nic") is now in use by the host (default-route: default route via enp6s16), which it was not at the plan (taking a physical function from its driver destroys its virtual functions): run the plan again`,
  );
});

/** Restores the backup `apply` wrote for win10 over a tree rebuilt as `after`, answering yes. */
async function applyChangeRollback(
  after: HostDescription,
  change: "before" | "at-question",
  extra: Partial<RollbackOptions> = {},
  damage: (root: string) => void = () => {},
): Promise<{ report: RollbackReport; xml: string; was: string }> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-host-recheck-" });
  try {
    const root = `${dir}/sysfs`;
    buildHostTree(PLANNED, root);
    const host = await discoverHost({ root, lspci: null });
    return await withPort([WIN10], async (libvirt: LibvirtPort) => {
      const stateDir = `${dir}/state`;
      const plan = planHostdevs({ config: GPU_CONFIG, host, libvirt });
      // The VM's definition without the GPU is the backup; back to it, then roll forward.
      const applied = await applyPlan(plan, {
        libvirt,
        stateDir,
        confirm: () => Promise.resolve("yes"),
      });
      assertEquals(applied.changed, ["win10"]);
      const withGpu = libvirt.getPersistentXml("win10", { secure: true });
      const uuid = listBackups(stateDir, "win10")[0]!.uuid;
      writeBackup(openStateDir(stateDir), {
        vm: "win10",
        uuid,
        xml: withGpu,
        reason: "apply",
        uri: libvirt.uri,
        now: new Date(Date.now() + 60_000),
      });
      libvirt.define(plan.vms[0]!.currentXml);
      const rebuild = () => {
        Deno.removeSync(root, { recursive: true });
        buildHostTree(after, root);
        damage(root);
      };
      if (change === "before") rebuild();
      const was = libvirt.getPersistentXml("win10", { secure: true });
      const report = await rollbackVm("win10", {
        libvirt,
        stateDir,
        host: hostReader(root),
        ...extra,
        confirm: () => {
          if (change === "at-question") rebuild();
          return Promise.resolve(true);
        },
      });
      return { report, xml: libvirt.getPersistentXml("win10", { secure: true }), was };
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("rollbackVm() does not restore a backup whose IOMMU group now holds a drive the host mounted", async () => {
  const { report, xml, was } = await applyChangeRollback({
    devices: [...PLANNED.devices, { ...NVME_IN_GROUP, bdf: "0000:05:00.0" }],
    host_use: [{ address: "0000:05:00.0", reason: "mounted-filesystem", detail: "/srv" }],
  }, "before");
  // Before: restored; the guest's start would fail on a group it cannot have, or, with the drive
  // unbound to let it start, take the host's mounted drive.
  assertEquals([report.status, report.code, xml], ["failed", "start-refused", was]);
  assertMatch(
    report.message,
    /^Refusing to restore backup "[^"]+" into "win10": IOMMU group 1 of "0000:01:00\.0" also holds "0000:05:00\.0", which it does not pass and the host needs \(in use by the host \(mounted-filesystem: \/srv\)\): VFIO hands a guest the whole group; "passthrough plan --vm win10" shows/,
  );
});

Deno.test("rollbackVm() does not restore a backup whose IOMMU group's listing cannot be read", async () => {
  const { report, xml, was } = await applyChangeRollback(PLANNED, "before", {}, (root) => {
    Deno.removeSync(`${root}/kernel/iommu_groups/1/devices`, { recursive: true });
  });
  // Before: restored, the group read as one without mates.
  assertEquals([report.status, report.code, xml], ["failed", "start-refused", was]);
  assertMatch(
    report.message,
    /: the members of IOMMU group 1 of "0000:01:00\.0" cannot be read now \(kernel\/iommu_groups\/1\/devices\), so what else a guest would take with it is unknown; /,
  );
});

Deno.test("rollbackVm() does not restore a backup whose IOMMU group lists a member bus/pci/devices lacks", async () => {
  const { report, xml, was } = await applyChangeRollback(
    {
      devices: [...PLANNED.devices, { ...NVME_IN_GROUP, bdf: "0000:05:00.0" }],
      host_use: [{ address: "0000:05:00.0", reason: "mounted-filesystem", detail: "/srv" }],
    },
    "before",
    {},
    (root) => {
      Deno.removeSync(`${root}/bus/pci/devices/0000:05:00.0`, { recursive: true });
    },
  );
  // Before: restored, the mounted drive's group read as one without it.
  assertEquals([report.status, report.code, xml], ["failed", "start-refused", was]);
  assertMatch(
    report.message,
    /: IOMMU group 1 of "0000:01:00\.0" lists "0000:05:00\.0", which cannot be read in bus\/pci\/devices now, so what else a guest would take with it is unknown; /,
  );
});

Deno.test("rollbackVm() does not restore a backup whose device's iommu_group link names no group", async () => {
  const { report, xml, was } = await applyChangeRollback(
    {
      devices: [...PLANNED.devices, { ...NVME_IN_GROUP, bdf: "0000:05:00.0" }],
      host_use: [{ address: "0000:05:00.0", reason: "mounted-filesystem", detail: "/srv" }],
    },
    "before",
    {},
    (root) => {
      for (const address of ["0000:01:00.0", "0000:01:00.1"]) {
        const link = `${root}/bus/pci/devices/${address}/iommu_group`;
        const target = Deno.readLinkSync(link);
        Deno.removeSync(link);
        Deno.symlinkSync(target.replace(/1$/, "one"), link);
      }
    },
  );
  // Before: restored, the GPU read as in no group and the mounted drive's group unjudged.
  assertEquals([report.status, report.code, xml], ["failed", "read-failed", was]);
  assertMatch(
    report.message,
    /\(Cannot read the IOMMU group of "0000:01:00\.0": its iommu_group link names "one", not an IOMMU group number\): nothing was defined$/,
  );
});

Deno.test("rollbackVm() does not restore a backup whose device's iommu_group is a directory no listing confirms", async () => {
  const { report, xml, was } = await applyChangeRollback(
    {
      devices: [...PLANNED.devices, { ...NVME_IN_GROUP, bdf: "0000:05:00.0" }],
      host_use: [{ address: "0000:05:00.0", reason: "mounted-filesystem", detail: "/srv" }],
    },
    "before",
    {},
    (root) => {
      for (const address of ["0000:01:00.0", "0000:01:00.1"]) {
        Deno.removeSync(`${root}/bus/pci/devices/${address}/iommu_group`);
        Deno.mkdirSync(`${root}/bus/pci/devices/${address}/iommu_group`);
        Deno.removeSync(`${root}/kernel/iommu_groups/1/devices/${address}`);
      }
    },
  );
  // Before: restored, the GPU read as in no group and the mounted drive's group unjudged.
  assertEquals([report.status, report.code, xml], ["failed", "read-failed", was]);
  assertMatch(
    report.message,
    /\(Cannot read the IOMMU group of "0000:01:00\.0": its iommu_group is a directory, not a link to an IOMMU group, and no kernel\/iommu_groups\/N\/devices lists it\): nothing was defined$/,
  );
});

Deno.test("groupMatesHostNeeds() counts no drive of a passed VMD controller's domain as a group mate", () => {
  const [vmd, drive] = [
    dev({
      bdf: "0000:00:0e.0",
      group: 5,
      class: "0x010400",
      vendor: "0x8086",
      device: "0x467f",
      driver: "vmd",
    }),
    dev({ bdf: "10000:e1:00.0", group: 5, class: "0x010802", driver: "nvme" }),
  ];
  const tree = { devices: [vmd, drive] };
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-host-recheck-" });
  try {
    buildHostTree(tree, dir);
    // Before: the drive, which goes with the controller, was "a storage controller in another
    // slot" the host needs, and the rollback was refused.
    assertEquals(groupMatesHostNeeds(["0000:00:0e.0"], hostReader(dir)), []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("rollbackVm() fails with read-failed when the host cannot be read, nothing defined", async () => {
  const { report, xml, was } = await applyChangeRollback(
    {
      devices: [...PLANNED.devices, { ...NVME_IN_GROUP, bdf: "0000:05:00.0" }],
    },
    "before",
    {},
    (root) => Deno.writeTextFileSync(`${root}/host_use.json`, "[{"),
  );
  // Before: rollbackVm threw the SyntaxError, with no report and no word of the rollback.
  assertEquals([report.status, report.code, xml], ["failed", "read-failed", was]);
  assertMatch(
    report.message,
    /^Not restored: cannot read the host's devices to check what backup "[^"]+" gives "win10" \(Cannot parse "[^"]+\/host_use\.json": .+\): nothing was defined$/,
  );
});

Deno.test("rollbackVm() looks at the IOMMU groups again after its question", async () => {
  const { report, xml, was } = await applyChangeRollback({
    devices: [...PLANNED.devices, { ...NVME_IN_GROUP, bdf: "0000:05:00.0" }],
    host_use: [{ address: "0000:05:00.0", reason: "mounted-filesystem", detail: "/srv" }],
  }, "at-question");
  assertEquals([report.status, report.code, xml], ["failed", "start-refused", was]);
});

Deno.test("rollbackVm() restores a backup whose IOMMU groups hold nothing the host needs", async () => {
  const { report } = await applyChangeRollback(PLANNED, "before");
  assertEquals([report.status, report.code], ["restored", "restored"]);
});

Deno.test("rollbackVm() asks the start guard again after its question", async () => {
  // The guard's view changes while the question is open (the host mounted the restored drive).
  let asked = 0;
  const { report, xml, was } = await applyChangeRollback(PLANNED, "before", {
    startRefusals: () => asked++ === 0 ? [] : ["the host mounted it"],
  });
  // Before: asked once, before the question, and restored.
  assertEquals([report.status, report.code, xml, asked], ["failed", "start-refused", was, 2]);
});

/** Applies win10, running, with `--live`; `afterDefine` changes the tree just after its define. */
async function applyLive(
  afterDefine: (root: string) => void,
  startGuard?: (vm: string) => StartGuard,
  policies?: GuardPolicyFile,
  planned = GPU_CONFIG,
): Promise<{ report: ApplyReport; attached: string[]; starts: boolean }> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-host-recheck-" });
  try {
    const root = `${dir}/sysfs`;
    buildHostTree(PLANNED, root);
    const host = await discoverHost({ root, lspci: null });
    const running = domainXml("win10", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01", "", true);
    return await withPort([running], async (port) => {
      const plan = planHostdevs({ config: planned, host, libvirt: port });
      const attached: string[] = [];
      // Real libvirt underneath; the host changes just after the define, as while a later VM is
      // asked about, before the hot-plug.
      const libvirt: LibvirtPort = {
        ...withFault(port, () => {}, () => afterDefine(root)),
        attachDevice: (_name, xml) => attached.push(xml),
        detachDevice: () => {},
      };
      const report = await applyPlan(plan, {
        libvirt,
        stateDir: `${dir}/state`,
        confirm: () => Promise.resolve("yes"),
        live: true,
        hardware: hostDeviceReader(root),
        hostNow: { planned: host, ...hostReader(root) },
        ...(startGuard === undefined ? {} : { startGuard }),
      });
      // The real start guard at the next start of the definition as defined, under `policies`
      // recorded as apply records them (with the records the definition holds).
      const xml = port.getPersistentXml("win10");
      const stateDir = `${dir}/guard`;
      Deno.mkdirSync(stateDir, { mode: 0o700 });
      if (policies !== undefined) {
        const devices = Object.fromEntries(
          parseDomainXml(xml).records.map((r) => [r.address, r]),
        );
        const vms = Object.fromEntries(
          Object.entries(policies.vms).map(([vm, p]) => [vm, { ...p, devices }]),
        );
        recordPolicies(stateDir, { ...policies, vms });
      }
      const { code } = await runGuard({
        vm: "win10",
        operation: "prepare",
        subOperation: "begin",
        xml,
        reader: denoFsReader(),
        root,
        live: false,
        stateDir,
      });
      return { report, attached, starts: code === 0 };
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("applyPlan() --live does not attach a device the host came to use after its define", async () => {
  const { report, attached } = await applyLive((root) => {
    Deno.removeSync(root, { recursive: true });
    buildHostTree({
      ...PLANNED,
      host_use: [{ address: GPU.bdf, reason: "console-vga", detail: "the boot console" }],
    }, root);
  });
  const result = report.vms[0]!;
  // Before: both functions attached, the host's console taken from it at once.
  assertEquals([attached, result.code, result.effect, report.liveFailed], [
    [],
    "applied",
    "next-power-off",
    ["win10"],
  ]);
  assertEquals(result.live?.errors, [
    `Not attached: since the plan was made, the host's devices changed: "0000:01:00.0" (rule "gpu") is now in use by the host (console-vga: the boot console), which it was not at the plan: its definition holds them even so, and its next start would take them as they are now (whether the start guard refuses that start depends on its "guard:" policies, which this apply was not given: under "guard: enforce", where it is installed, it refuses it only for a device it passes that is gone, another one, or one the host needs, or another function of their IOMMU groups that the host needs, that is on a host driver, or that a running VM was given): run "passthrough rollback win10" to restore the definition it had, or the plan again`,
  ]);
  // Before: "hot-plug failed, the change takes effect at the next full power-off", as if the
  // definition were safe to start.
  assertEquals(
    result.message,
    `Defined "win10" (2 added, 0 removed); not hot-plugged into the running guest, as the host's devices changed since the plan: not safe to start as defined`,
  );
  // Before: "Hot-plug failed: win10 (the change lands at the next power-off)", under the line
  // saying it is not safe to start.
  assertEquals(
    renderApplyReport(report, { color: false }).trimEnd().split("\n").at(-1),
    "Changed: win10. Skipped: none. Failed: none. Not hot-plugged: win10 (not safe to start as defined).",
  );
});

Deno.test("applyPlan() --live says what the start guard does at the next start, by the VM's policy and the hook", async () => {
  const console = (root: string) => {
    Deno.removeSync(root, { recursive: true });
    buildHostTree({
      ...PLANNED,
      host_use: [{ address: GPU.bdf, reason: "console-vga", detail: "the boot console" }],
    }, root);
  };
  const cases: [StartGuard, string][] = [
    [
      { policy: "enforce", hook: true },
      "(the start guard refuses that start only for a device it passes that is gone, another one, or one the host needs, or another function of their IOMMU groups that the host needs, that is on a host driver, or that a running VM was given)",
    ],
    [{ policy: "off", hook: true }, `(its "guard: off" has the start guard let that start go on)`],
    [
      { policy: "warn", hook: true },
      `(its "guard: warn" has the start guard warn and let that start go on, unless the host needs a device)`,
    ],
    [{ policy: "enforce", hook: false }, "(no start guard is installed to refuse that start)"],
  ];
  for (const [start, said] of cases) {
    const { report } = await applyLive(console, (vm) => (assertEquals(vm, "win10"), start));
    // Before: "(where the start guard is installed, it refuses that start)", whatever the policy.
    const error = report.vms[0]!.live!.errors[0]!;
    assertOk(error.includes(`as they are now ${said}: run "passthrough rollback win10"`), error);
  }
});

Deno.test("applyPlan() --live says which group changes the start guard refuses, and lets an unbound one go on", async () => {
  // A drive hot-added into the GPU's group after the define: the re-check refuses the attach, and
  // the start guard refuses the start while the drive is on its host driver (libvirt would fail
  // it, "group 1 is not viable"), not once it is unbound.
  for (const driver of ["nvme", null]) {
    const joined = (root: string) => {
      Deno.removeSync(root, { recursive: true });
      const member = { ...NVME_IN_GROUP, driver };
      buildHostTree({ ...PLANNED, devices: [...PLANNED.devices, member] }, root);
    };
    const { report, starts } = await applyLive(joined, () => ({ policy: "enforce", hook: true }));
    const error = report.vms[0]!.live!.errors[0]!;
    assertMatch(error, /now also holds "0000:01:00.2"/);
    assertEquals(starts, driver === null);
    assertOk(error.includes("that is on a host driver, or that a running VM was given)"), error);
  }
});

Deno.test("applyPlan() --live does not say the guard refuses a start its rule's guard: off lets go on", async () => {
  // win10 enforces, its gpu rule is "guard: off": the guard judges the GPU by its rule's policy.
  const ruleOff = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
        guard: off
`);
  const replaced = (root: string) => {
    Deno.removeSync(root, { recursive: true });
    buildHostTree({ devices: [...baseDevices(), { ...GPU, device: "0x2704" }, GPU_AUDIO] }, root);
  };
  const { report, starts } = await applyLive(
    replaced,
    // Before: startGuard({ guard: "enforce", guardHook: true }), the VM's policy alone.
    () => rulesStartGuard(ruleOff.vms[0]!, true),
    guardPolicies(ruleOff),
  );
  const error = report.vms[0]!.live!.errors[0]!;
  assertMatch(error, /"0000:01:00.0" \(rule "gpu"\) is now another device/);
  assertEquals(starts, true);
  assertOk(!error.includes("the start guard refuses that start"), error);
});

Deno.test("applyPlan() --live says the guard refuses a start for a rule that enforces beside one that is off", async () => {
  // win10's gpu rule enforces, its nic rule is "guard: off"; the GPU is replaced after the define.
  const twoRules = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
      - name: nic
        match: { address: "02:00.0" }
        guard: off
`);
  // In place: the re-check's reader holds the tree's root open.
  const replaced = (root: string) => {
    const gpu = `${root}/bus/pci/devices/${GPU.bdf}`;
    Deno.writeTextFileSync(`${gpu}/device`, "0x2704\n");
    const uevent = Deno.readTextFileSync(`${gpu}/uevent`);
    Deno.writeTextFileSync(`${gpu}/uevent`, uevent.replace(/:2684$/im, ":2704"));
  };
  const { report, starts } = await applyLive(
    replaced,
    () => rulesStartGuard(twoRules.vms[0]!, true),
    guardPolicies(twoRules),
    twoRules,
  );
  const error = report.vms[0]!.live!.errors[0]!;
  assertMatch(error, /"0000:01:00.0" \(rule "gpu"\) is now another device/);
  assertEquals(starts, false);
  // Before: "(its "guard: off" has the start guard let that start go on)", the laxest rule's.
  assertOk(
    error.includes(
      `as they are now (the start guard judges each device by its rule's "guard:": for rule "gpu" it refuses that start only for a device it passes that is gone, another one, or one the host needs, or another function of their IOMMU groups that the host needs, that is on a host driver, or that a running VM was given; for rule "nic" ("guard: off") it lets that start go on): run`,
    ),
    error,
  );
});

Deno.test("applyPlan() --live without the start guard's policies does not say the guard refuses the start", async () => {
  // A library caller that passes no startGuard, on a host whose guard has win10's GPU under a
  // rule's "guard: off": the guard lets the next start go on.
  const ruleOff = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
        guard: off
`);
  const replaced = (root: string) => {
    Deno.removeSync(root, { recursive: true });
    buildHostTree({ devices: [...baseDevices(), { ...GPU, device: "0x2704" }, GPU_AUDIO] }, root);
  };
  const { report, starts } = await applyLive(replaced, undefined, guardPolicies(ruleOff));
  const error = report.vms[0]!.live!.errors[0]!;
  assertEquals(starts, true);
  // Before: "(where the start guard is installed, it refuses that start only for a device it
  // passes that is gone, another one, ...)", the policy taken for "enforce".
  assertOk(
    error.includes(
      `as they are now (whether the start guard refuses that start depends on its "guard:" policies, which this apply was not given: under "guard: enforce", where it is installed, it refuses it only for a device it passes that is gone, another one, or one the host needs, or another function of their IOMMU groups that the host needs, that is on a host driver, or that a running VM was given): run`,
    ),
    error,
  );
});

Deno.test("applyPlan() --live attaches nothing, and reports, when the host cannot be read again", async () => {
  const { report, attached } = await applyLive((root) => {
    Deno.writeTextFileSync(`${root}/host_use.json`, "[{");
  });
  const result = report.vms[0]!;
  // Before: applyPlan threw after the define, every later guest's attach and the report lost.
  assertEquals([attached, result.code, report.liveFailed], [[], "applied", ["win10"]]);
  assertMatch(
    result.live!.errors[0]!,
    /^Not attached: the host's devices cannot be read again \(Cannot parse "[^"]+\/host_use\.json": .+\): its definition holds them even so/,
  );
  // Not that they changed: nothing says so.
  assertEquals(
    result.message,
    `Defined "win10" (2 added, 0 removed); not hot-plugged into the running guest, as the host's devices could not be read again: not known to be safe to start as defined`,
  );
});

Deno.test("applyPlan() refuses the VM whose host cannot be read again, and goes on with the others", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-host-recheck-" });
  try {
    const root = `${dir}/sysfs`;
    buildHostTree(PLANNED, root);
    const host = await discoverHost({ root, lspci: null });
    const other = domainXml("other", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e03");
    const both = config(`  other:
    devices:
      - name: nvme
        match: { vendor_device_id: "144d:a808" }
  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
`);
    await withPort([WIN10, other], async (port) => {
      const plan = planHostdevs({ config: both, host, libvirt: port });
      assertEquals(plan.vms.map((v) => [v.name, v.errors]), [["other", []], ["win10", []]]);
      // The tree breaks just after the first define, as while the host is changed under apply.
      const libvirt = withFault(port, () => {}, () => {
        Deno.writeTextFileSync(`${root}/host_use.json`, "[{");
      });
      const report = await applyPlan(plan, {
        libvirt,
        stateDir: `${dir}/state`,
        confirm: () => Promise.resolve("yes"),
        hardware: hostDeviceReader(root),
        hostNow: { planned: host, ...hostReader(root) },
      });
      // Before: applyPlan threw after "other" was defined, with no report of it.
      assertEquals(report.vms.map((v) => [v.vm, v.status, v.code]), [
        ["other", "changed", "applied"],
        ["win10", "failed", "read-failed"],
      ]);
      assertMatch(
        report.vms[1]!.message,
        /^Not applied to "win10": cannot read the host's devices again to check that they are as planned \(Cannot parse "[^"]+\/host_use\.json": .+\): run the plan again$/,
      );
      assertEquals(port.getPersistentXml("win10"), plan.vms[1]!.currentXml);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rollbackVm() refuses a link out of a tree replaced at its question, which its first read did not have", async () => {
  const { report, xml, was } = await applyChangeRollback(PLANNED, "at-question", {}, (root) => {
    // A file that the read before the question found is now a link out of the tree, to a file
    // that says what it said.
    const uevent = `${root}/bus/pci/devices/0000:01:00.0/uevent`;
    Deno.writeTextFileSync(`${root}/../outside`, Deno.readTextFileSync(uevent));
    Deno.removeSync(uevent);
    Deno.symlinkSync("../../../../../outside", uevent);
  });
  // Before: the read after the question took the path for the file the first read resolved,
  // read the file outside, and restored.
  assertEquals([report.status, report.code, xml], ["failed", "read-failed", was]);
  assertMatch(report.message, /link out of it: "[^"]+\/uevent" leads to "[^"]+\/outside"/);
});
