/**
 * `apply` reads the planned host again before each define: between the plan it showed and the
 * define (the prompt, minutes), a card can be hot-removed or swapped, SR-IOV VFs destroyed and
 * made again, a rescan can renumber a group. The host is a tree built by `host_tree.ts`, changed
 * after planning; libvirt is the test driver.
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import {
  baseDevices,
  config,
  GPU,
  GPU_AUDIO,
  GPU_CONFIG,
  WIN10,
  withPort,
} from "../helpers/plan_world.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { applyPlan, type ApplyReport } from "../../lib/apply/apply.ts";
import { listBackups } from "../../lib/state/backups.ts";
import { hostDeviceReader } from "../../cli/host_options.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import { hardwareSincePlan } from "../../lib/apply/recheck.ts";
import { emptyVmPlan } from "../../lib/plan/vm_edit.ts";
import type { PciDevice } from "../../lib/host/types.ts";

const AUDIO = "0000:01:00.1";

/** Plans win10 over a tree of the test host, runs `change` on the tree, applies with yes. */
async function planChangeApply(
  change: (root: string) => void,
  captured: (root: string) => void = () => {},
): Promise<{ report: ApplyReport; backups: number; xml: string; before: string }> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hardware-recheck-" });
  try {
    const root = `${dir}/sysfs`;
    // In a named slot: the plan records it, so the check must read it too.
    const inSlot = [GPU, GPU_AUDIO].map((d) => ({ ...d, slot: "PCIE1" }));
    buildHostTree({ devices: [...baseDevices(), ...inSlot] }, root);
    captured(root);
    const host = await discoverHost({ root, lspci: null });
    return await withPort([WIN10], async (libvirt: LibvirtPort) => {
      const plan = planHostdevs({ config: GPU_CONFIG, host, libvirt });
      assertEquals(plan.vms[0]!.add.map((a) => a.address), ["0000:01:00.0", AUDIO]);
      const before = libvirt.getPersistentXml("win10");
      // While apply waits at its prompt, the host changes.
      change(root);
      const report = await applyPlan(plan, {
        libvirt,
        stateDir: `${dir}/state`,
        confirm: () => Promise.resolve("yes"),
        hardware: hostDeviceReader(root),
      });
      return {
        report,
        backups: listBackups(`${dir}/state`).length,
        xml: libvirt.getPersistentXml("win10"),
        before,
      };
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("applyPlan() defines as planned when the host's devices are as the plan read them", async () => {
  const { report, backups } = await planChangeApply(() => {});
  assertEquals([report.vms[0]!.status, report.vms[0]!.code, backups], ["changed", "applied", 1]);
});

Deno.test("applyPlan() defines as planned over a tree whose group a device's listing gives, not its link", async () => {
  // A partly copied tree: the audio function has no iommu_group link, and discovery takes its
  // group from kernel/iommu_groups/1/devices. Nothing changes after the plan.
  const { report, backups } = await planChangeApply(() => {}, (root) => {
    Deno.removeSync(`${root}/bus/pci/devices/${AUDIO}/iommu_group`);
  });
  // Before: refused, "0000:01:00.1" (rule "gpu") is now in IOMMU group none, not 1.
  assertEquals([report.vms[0]!.status, report.vms[0]!.code, backups], ["changed", "applied", 1]);
});

Deno.test("applyPlan() does not define a VM whose device was hot-removed since the plan", async () => {
  const { report, backups, xml, before } = await planChangeApply((root) => {
    Deno.removeSync(`${root}/bus/pci/devices/${AUDIO}`, { recursive: true });
    Deno.removeSync(`${root}/kernel/iommu_groups/1/devices/${AUDIO}`);
  });
  const result = report.vms[0]!;
  // Before: defined with a hostdev for a function no longer on the host.
  assertEquals([result.status, result.code, report.ok], ["failed", "hardware-changed", false]);
  assertEquals(
    result.message,
    `Not applied to "win10": since the plan was made, the host's devices changed: "${AUDIO}" (rule "gpu") is gone from the host: run the plan again`,
  );
  assertEquals([backups, xml], [0, before]);
});

Deno.test("applyPlan() does not define a VM whose device is another card, or in another group, since the plan", async () => {
  const { report } = await planChangeApply((root) => {
    // Another card in the slot: a different device ID in the files the kernel writes.
    const dir = `${root}/bus/pci/devices/0000:01:00.0`;
    Deno.writeTextFileSync(`${dir}/device`, "0x2704\n");
    const uevent = Deno.readTextFileSync(`${dir}/uevent`);
    Deno.writeTextFileSync(`${dir}/uevent`, uevent.replace("10DE:2684", "10DE:2704"));
    // A rescan put the audio function in a group of its own.
    Deno.removeSync(`${root}/bus/pci/devices/${AUDIO}/iommu_group`);
    Deno.mkdirSync(`${root}/kernel/iommu_groups/41/devices`, { recursive: true });
    Deno.symlinkSync(
      "../../../../kernel/iommu_groups/41",
      `${root}/bus/pci/devices/${AUDIO}/iommu_group`,
    );
  });
  const result = report.vms[0]!;
  assertEquals([result.status, result.code], ["failed", "hardware-changed"]);
  assertMatch(
    result.message,
    /"0000:01:00\.0" \(rule "gpu"\) is now another device \(device 2684, now 2704\)/,
  );
  assertMatch(result.message, /"0000:01:00\.1" \(rule "gpu"\) is now in IOMMU group 41, not 1/);
});

Deno.test("hardwareSincePlan() checks a moved card's new address: still there, in the group the plan saw", () => {
  const move = { from: "0000:02:00.0", to: "0000:05:00.0", rule: "gpu", evidence: "serial" };
  const vm = { ...emptyVmPlan("a", ""), move: [move] };
  const at = (group: number) => () => ({ address: "0000:05:00.0", iommuGroup: group }) as PciDevice;
  assertEquals(hardwareSincePlan(vm, at(7), { "0000:05:00.0": 7 }), []);
  assertEquals(hardwareSincePlan(vm, () => null, { "0000:05:00.0": 7 }), [
    `"0000:05:00.0" (rule "gpu", the card that moved from "0000:02:00.0") is gone from the host`,
  ]);
  assertEquals(hardwareSincePlan(vm, at(9), { "0000:05:00.0": 7 }), [
    `"0000:05:00.0" (rule "gpu", the card that moved from "0000:02:00.0") is now in IOMMU group 9, not 7`,
  ]);
});

Deno.test("applyPlan() does not define a vf: interface whose VF was destroyed since the plan (sriov_numvfs written)", async () => {
  const blank = { subsystem_vendor: null, subsystem_device: null, revision: null };
  const nic = { class: "0x020000", vendor: "0x8086", ...blank };
  const vfs = [0, 2].map((fn, i) => ({
    ...nic,
    bdf: `0000:07:10.${fn}`,
    group: 30 + i,
    device: "0x10ca",
    driver: "igbvf",
    physfn: "0000:07:00.0",
  }));
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hardware-recheck-" });
  try {
    const root = `${dir}/sysfs`;
    buildHostTree({
      devices: [
        { ...nic, bdf: "0000:07:00.0", group: 20, device: "0x10c9", driver: "igb" },
        ...vfs,
      ],
    }, root);
    const host = await discoverHost({ root, lspci: null });
    const rules = config(`  win10:
    devices:
      - name: uplink
        match: { vendor_device_id: "8086:10c9" }
        vf: any
        interface: { mac: auto }
`);
    await withPort([WIN10], async (libvirt: LibvirtPort) => {
      const plan = planHostdevs({ config: rules, host, libvirt });
      assertEquals(plan.vms[0]!.add.map((a) => a.address), ["0000:07:10.0"]);
      // The PF's VFs destroyed (echo 0 > sriov_numvfs) while apply waits at its prompt.
      for (const vf of vfs) {
        Deno.removeSync(`${root}/bus/pci/devices/${vf.bdf}`, { recursive: true });
      }
      const report = await applyPlan(plan, {
        libvirt,
        stateDir: `${dir}/state`,
        confirm: () => Promise.resolve("yes"),
        hardware: hostDeviceReader(root),
      });
      assertEquals([report.vms[0]!.status, report.vms[0]!.code], ["failed", "hardware-changed"]);
      assertMatch(
        report.vms[0]!.message,
        /"0000:07:10\.0" \(rule "uplink"\) is gone from the host/,
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
