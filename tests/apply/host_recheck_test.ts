/**
 * `apply` reads the planned host's IOMMU groups and host use again before each define: between
 * the plan it showed and the define (the prompt, minutes), a function can be hot-added into a
 * group the VM takes, and the host can start using a device (a filesystem mounted on a disk of
 * the group). The host is a tree built by `host_tree.ts`, rebuilt after planning; libvirt is the
 * test driver.
 */

import { assertEquals } from "../helpers/assert.ts";
import {
  baseDevices,
  dev,
  GPU,
  GPU_AUDIO,
  GPU_CONFIG,
  WIN10,
  withPort,
} from "../helpers/plan_world.ts";
import { buildHostTree, type HostDescription } from "../../lib/testing/host_tree.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { applyPlan, type ApplyReport } from "../../lib/apply/apply.ts";
import { listBackups } from "../../lib/state/backups.ts";
import { hostDeviceReader, hostNowReader } from "../../cli/host_options.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import type { HostUse } from "../../lib/host/types.ts";

/** An NVMe drive hot-added into the GPU's group 1. */
const NVME_IN_GROUP = dev({
  bdf: "0000:01:00.2",
  group: 1,
  class: "0x010802",
  vendor: "0x144d",
  device: "0xa808",
  driver: "nvme",
  class_name: "Non-Volatile memory controller",
});

/** Plans win10 over `before`, rebuilds the tree as `after`, applies with yes. */
async function planChangeApply(
  before: HostDescription,
  after: HostDescription,
): Promise<{ report: ApplyReport; backups: number; xml: string; was: string }> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-host-recheck-" });
  try {
    const root = `${dir}/sysfs`;
    buildHostTree(before, root);
    const host = await discoverHost({ root, lspci: null });
    return await withPort([WIN10], async (libvirt: LibvirtPort) => {
      const plan = planHostdevs({ config: GPU_CONFIG, host, libvirt });
      assertEquals(plan.vms[0]!.errors, []);
      const was = libvirt.getPersistentXml("win10");
      // While apply waits at its prompt, the host changes.
      Deno.removeSync(root, { recursive: true });
      buildHostTree(after, root);
      const report = await applyPlan(plan, {
        libvirt,
        stateDir: `${dir}/state`,
        confirm: () => Promise.resolve("yes"),
        hardware: hostDeviceReader(root),
        hostNow: hostNowReader(root, host),
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
