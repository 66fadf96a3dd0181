/**
 * Conflicts between VMs: an IOMMU group or a device claimed twice, counting what other domains
 * hold now (outside the config, left out by `vms`, hand-added), and SR-IOV functions split
 * between VMs.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import {
  baseDevices,
  config,
  domainXml,
  GPU,
  GPU_AUDIO,
  GPU_CONFIG,
  HOST,
  LINUX,
  vmOf,
  WIN10,
  withPort,
} from "../helpers/plan_world.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { sriovHost } from "../helpers/plan_world.ts";
import { resolveConfig } from "../../lib/plan/resolve.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import type { HostUse } from "../../lib/host/types.ts";

Deno.test("planHostdevs() refuses a group another domain holds and leaves the XML unchanged", async () => {
  const other = domainXml(
    "router",
    "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e03",
    `
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source>
          <address domain='0x0000' bus='0x01' slot='0x00' function='0x1'/>
        </source>
      </hostdev>`,
  );
  await withPort([WIN10, other], (libvirt) => {
    const vm = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    const error = vm.errors.find((e) => e.code === "group-shared-with-other-vm");
    assertOk(error, JSON.stringify(vm.errors));
    assertEquals(error.vms, ["router", "win10"]);
    assertEquals(error.group, 1);
    assertMatch(
      error.message,
      /IOMMU group 1 \(0000:01:00\.0, 0000:01:00\.1\) is split between VMs "router" and "win10" \(rule "gpu"\)/,
    );
    assertEquals(vm.desiredXml, vm.currentXml);
    assertEquals(vm.changed, false);
  });
});

Deno.test("planHostdevs() refuses a device another configured VM holds as a hand-added hostdev", async () => {
  const cfg = config(`  win10:
    devices:
      - name: nic
        match: { vendor_device_id: "8086:1533" }
  linux:
    devices: []
`);
  await withPort([WIN10, LINUX], (libvirt) => {
    const plan = planHostdevs({ config: cfg, host: HOST, libvirt });
    const [error] = vmOf(plan, "win10").errors;
    assertEquals(error?.code, "device-assigned-twice");
    assertEquals(error?.vms, ["linux", "win10"]);
    assertMatch(error?.message ?? "", /\("linux" holds it in its definition now\)/);
    // linux changes nothing and keeps its hand-added NIC.
    assertEquals(vmOf(plan, "linux").errors, []);
    assertEquals(vmOf(plan, "linux").changed, false);
  });
});

Deno.test("planHostdevs() counts the current devices of configured VMs left out by vms", async () => {
  await withPort([WIN10, LINUX], (libvirt) => {
    const applied = vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10");
    libvirt.define(applied.desiredXml);
    // The GPU moves to linux in the config, but only linux is planned: win10 still holds it.
    const cfg = config(`  win10:
    devices: []
  linux:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684" }
`);
    const only = planHostdevs({ config: cfg, host: HOST, libvirt, vms: ["linux"] });
    assertEquals(only.vms.map((v) => v.name), ["linux"]);
    assertEquals(vmOf(only, "linux").errors.map((e) => e.code), ["device-assigned-twice"]);
    // Planned together, win10 releases it and linux takes it.
    const both = planHostdevs({ config: cfg, host: HOST, libvirt });
    assertEquals(vmOf(both, "win10").remove, ["0000:01:00.0", "0000:01:00.1"]);
    assertEquals(vmOf(both, "linux").add.map((a) => a.address), ["0000:01:00.0", "0000:01:00.1"]);
  });
});

Deno.test("resolveConfig() refuses a PF in one VM while another VM takes one of its VFs", () => {
  const cfg = config(`  router:
    devices:
      - name: pf
        match: { address: "01:00.0" }
  guest:
    devices:
      - name: vf
        match: { address: "01:10.0" }
`);
  const resolved = resolveConfig(cfg, sriovHost());
  const router = resolved.get("router")!.errors;
  const guest = resolved.get("guest")!.errors;
  assertEquals(router.map((e) => e.code), ["sriov-split"]);
  assertEquals(guest.map((e) => e.code), ["sriov-split"]);
  assertEquals(router[0]?.devices, ["0000:01:00.0", "0000:01:10.0"]);
  assertEquals(router[0]?.vms, ["guest", "router"]);
  assertMatch(router[0]!.message, /virtual function 0000:01:10\.0 of 0000:01:00\.0/);
  assertMatch(router[0]!.message, /"guest"/);
  // The guest holds that VF in its definition too: still one refusal, not one per claim.
  const held = resolveConfig(cfg, sriovHost(), { held: new Map([["guest", ["0000:01:10.0"]]]) });
  assertEquals(held.get("router")!.errors.map((e) => e.code), ["sriov-split"]);
});

Deno.test("resolveConfig() names each VM's own rule and its location in an sriov-split refusal", () => {
  const cfg = config(`  router:
    devices:
      - name: pf
        match: { address: "01:00.0" }
  guest:
    devices:
      - name: vf
        match: { address: "01:10.0" }
`);
  const resolved = resolveConfig(cfg, sriovHost(), {
    held: new Map([["other", ["0000:01:10.2"]]]),
  });
  const where = (vm: string) =>
    resolved.get(vm)!.errors.map((e) => [e.code, e.rule, e.location?.replace(/^.*?:/, "")]);
  // Its rule's line and column, as every other refusal of a rule: the PF's rule both times.
  assertEquals(where("router"), [
    ["sriov-split", "pf", "5:9"],
    ["sriov-split", "pf", "5:9"],
  ]);
  assertEquals(where("guest"), [["sriov-split", "vf", "9:9"]]);
});

Deno.test("resolveConfig() refuses a PF whose VF another domain holds now", () => {
  const cfg = config(`  router:
    devices:
      - name: pf
        match: { address: "01:00.0" }
`);
  const resolved = resolveConfig(cfg, sriovHost(), {
    held: new Map([["other", ["0000:01:10.2"]]]),
  });
  const errors = resolved.get("router")!.errors;
  assertEquals(errors.map((e) => e.code), ["sriov-split"]);
  assertMatch(errors[0]!.message, /"other" holds it in its definition now/);
});

Deno.test("resolveConfig() lets one VM take a PF and its own VF, and two VMs take sibling VFs", () => {
  const cfg = config(`  a:
    devices:
      - name: vf0
        match: { address: "01:10.0" }
  b:
    devices:
      - name: vf2
        match: { address: "01:10.2" }
`);
  const resolved = resolveConfig(cfg, sriovHost());
  assertEquals(resolved.get("a")!.errors, []);
  assertEquals(resolved.get("b")!.errors, []);
  const same = resolveConfig(
    config(`  a:
    devices:
      - name: pf
        match: { address: "01:00.0" }
      - name: vf
        match: { address: "01:10.0" }
`),
    sriovHost(),
  );
  assertEquals(same.get("a")!.errors, []);
});

Deno.test("resolveConfig() judges a group mate another VM's rule matches as that VM's, unless the host uses it", () => {
  const cfg = config(`  win10:
    devices:
      - name: gpu
        match: { address: "01:00.0" }
  nas:
    devices:
      - name: nvme
        match: { address: "03:00.0" }
`);
  // A kernel update merged the NVMe drive into the GPU's group.
  const merged = (hostUse: HostUse[]) =>
    topologyFromDescription({
      devices: [...baseDevices(), GPU, GPU_AUDIO].map((d) =>
        d.bdf === "0000:03:00.0" ? { ...d, group: 1 } : d
      ),
      host_use: hostUse,
    }, { source: "test-host" });
  const resolved = resolveConfig(cfg, merged([]));
  for (const vm of ["win10", "nas"]) {
    assertEquals(resolved.get(vm)!.errors.map((e) => e.code), ["group-shared-with-other-vm"], vm);
  }
  assertMatch(
    resolved.get("nas")!.closure.reasoning.join("\n"),
    /added 0000:01:00\.0 \(10de:2684 VGA compatible controller, which VM "win10" passes\)/,
  );
  // The host mounts its root from that drive: it needs it whoever else asks for it.
  const used = resolveConfig(
    cfg,
    merged([{ address: "0000:03:00.0", reason: "mounted-filesystem", detail: "/ on nvme0n1p2" }]),
  );
  const critical = used.get("win10")!.errors.find((e) => e.code === "group-contains-host-critical");
  assertOk(critical, JSON.stringify(used.get("win10")!.errors));
  assertMatch(
    critical.message,
    /0000:03:00\.0 \(in use by the host \(mounted-filesystem: \/ on nvme0n1p2\)\)/,
  );
});

Deno.test("resolveConfig() does not call a group mate another VM's rule matches one the host needs when an iommu_group: false rule leaves it", () => {
  const cfg = config(`  win10:
    devices:
      - name: gpu
        match: { address: "01:00.0" }
        iommu_group: false
  nas:
    devices:
      - name: nvme
        match: { address: "03:00.0" }
`);
  // A kernel update merged the NAS VM's NVMe drive, bound to vfio-pci for it, into the GPU's group.
  const merged = (hostUse: HostUse[]) =>
    topologyFromDescription({
      devices: [...baseDevices(), GPU, GPU_AUDIO].map((d) =>
        d.bdf === "0000:03:00.0" ? { ...d, group: 1, driver: "vfio-pci" } : d
      ),
      host_use: hostUse,
    }, { source: "test-host" });
  const resolved = resolveConfig(cfg, merged([])).get("win10")!;
  const issues = [...resolved.errors, ...resolved.warnings];
  assertEquals(
    issues.filter((e) => e.code === "group-contains-host-critical"),
    [],
    JSON.stringify(issues),
  );
  assertEquals(issues.some((e) => e.override === "allow_host_critical: true"), false);
  assertMatch(
    resolved.closure.reasoning.join("\n"),
    /not added \(iommu_group: false\): 0000:01:00\.1 \([^)]*\), 0000:03:00\.0 \(144d:[0-9a-f]{4} Non-Volatile memory controller, which VM "nas" passes\)/,
  );
  // The host mounts its root from that drive: it needs it whoever else asks for it.
  const used = resolveConfig(
    cfg,
    merged([{ address: "0000:03:00.0", reason: "mounted-filesystem", detail: "/ on nvme0n1p2" }]),
  ).get("win10")!;
  const critical = used.errors.find((e) => e.code === "group-contains-host-critical");
  assertOk(critical, JSON.stringify(used.errors));
  assertMatch(critical.message, /0000:03:00\.0 \(in use by the host \(mounted-filesystem/);
});
