import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { applyPlan, type ConfirmAnswer } from "../../lib/apply/apply.ts";
import { editDomainXml, parseDomainXml } from "../../lib/domain/domain_xml.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import type { Plan, VmPlan } from "../../lib/plan/types.ts";
import { gpuIdentity } from "../helpers/devices.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import type { HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { resolveConfig } from "../../lib/plan/resolve.ts";
import { emptyVmPlan } from "../../lib/plan/vm_edit.ts";
import type { HostTopology, HostUse } from "../../lib/host/types.ts";

const BLANK = { subsystem_vendor: null, subsystem_device: null, revision: null };

/** An SR-IOV NIC whose PF and two VFs each sit in their own IOMMU group (ACS present). */
function sriovHost(hostUse: HostUse[] = []): HostTopology {
  const devices: HostDeviceDescription[] = [
    {
      bdf: "0000:01:00.0",
      group: 1,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x1528",
      driver: "ixgbe",
      ...BLANK,
    },
    {
      bdf: "0000:01:10.0",
      group: 2,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x1515",
      driver: "vfio-pci",
      physfn: "0000:01:00.0",
      ...BLANK,
    },
    {
      bdf: "0000:01:10.2",
      group: 3,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x1515",
      driver: "ixgbevf",
      physfn: "0000:01:00.0",
      ...BLANK,
    },
  ];
  return topologyFromDescription({ devices, host_use: hostUse }, { source: "sriov" });
}

function config(vms: string) {
  return parseConfig(`version: 1\nvms:\n${vms}`, { file: "c.yaml" });
}

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

Deno.test("resolveConfig() refuses a PF whose VF carries the host's default route, naming the override", () => {
  const use: HostUse = {
    address: "0000:01:10.2",
    reason: "default-route",
    detail: "default route via enp1s0f0v1",
  };
  const cfg = config(`  router:
    devices:
      - name: pf
        match: { address: "01:00.0" }
`);
  const errors = resolveConfig(cfg, sriovHost([use])).get("router")!.errors;
  assertEquals(errors.map((e) => e.code), ["group-contains-host-critical"]);
  assertMatch(errors[0]!.message, /0000:01:10\.2/);
  assertMatch(errors[0]!.message, /allow_host_critical: true/);
});

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

const GPU = "0000:01:00.0";

/** A world where "alpha" holds the GPU (owned) and a plan moving it to "beta", listed first. */
function moveWorld(): { port: LibvirtPort & Disposable; root: string; plan: Plan } & Disposable {
  const root = Deno.makeTempDirSync({ prefix: "passthrough-review-" });
  writeAlphaBetaWorld(root);
  const port = openLibvirtPort(`test://${root}/world.xml`);
  port.define(editDomainXml(port.getPersistentXml("alpha", { secure: true }), {
    remove: [],
    add: [{ address: GPU, managed: true }],
    records: [gpuIdentity(GPU)],
  }));
  const vmPlan = (name: string, edit: Parameters<typeof editDomainXml>[1]): VmPlan => {
    const currentXml = port.getPersistentXml(name, { secure: true });
    const desiredXml = editDomainXml(currentXml, edit);
    return {
      ...emptyVmPlan(name, currentXml),
      hostdevs: edit.add.map((a) => a.address),
      add: edit.add.map((spec) => ({
        address: spec.address,
        rule: "gpu",
        reason: "matched" as const,
        group: 1,
        spec,
        identity: gpuIdentity(spec.address),
        description: "10de:2684 VGA compatible controller",
      })),
      remove: edit.remove,
      active: false,
      desiredXml,
      changed: desiredXml !== currentXml,
    };
  };
  const plan: Plan = {
    config: "c.yaml",
    host: "test",
    uri: port.uri,
    errors: [],
    warnings: [],
    vms: [
      vmPlan("beta", {
        remove: [],
        add: [{ address: GPU, managed: true }],
        records: [gpuIdentity(GPU)],
      }),
      vmPlan("alpha", { remove: [GPU], add: [], records: [] }),
    ],
  };
  return {
    port,
    root,
    plan,
    [Symbol.dispose]() {
      port.close();
      Deno.removeSync(root, { recursive: true });
    },
  };
}

function answering(...list: ConfirmAnswer[]) {
  const asked: string[] = [];
  const confirm = (vm: VmPlan) => {
    asked.push(vm.name);
    return Promise.resolve(list.shift() ?? "no");
  };
  return { asked, confirm };
}

function pciHostdevs(port: LibvirtPort, name: string): string[] {
  return parseDomainXml(port.getPersistentXml(name)).hostdevs.map((h) => h.address);
}

Deno.test("applyPlan() does not give a device to a VM when the VM holding it was declined", async () => {
  using w = moveWorld();
  const { asked, confirm } = answering("no", "yes");
  const report = await applyPlan(w.plan, { libvirt: w.port, stateDir: `${w.root}/state`, confirm });
  // The VM that frees the device is asked first; the one taking it is then not asked at all.
  assertEquals(asked, ["alpha"]);
  assertEquals(report.vms.map((r) => [r.vm, r.code]), [["beta", "blocked"], ["alpha", "declined"]]);
  assertMatch(report.vms[0]!.message, /0000:01:00\.0/);
  assertMatch(report.vms[0]!.message, /"alpha"/);
  assertEquals(pciHostdevs(w.port, "alpha"), [GPU]);
  assertEquals(pciHostdevs(w.port, "beta"), []);
});

Deno.test("applyPlan() frees a device before giving it to another VM, reporting in plan order", async () => {
  using w = moveWorld();
  const { asked, confirm } = answering("yes", "yes");
  const report = await applyPlan(w.plan, { libvirt: w.port, stateDir: `${w.root}/state`, confirm });
  assertEquals(asked, ["alpha", "beta"]);
  assertEquals(report.vms.map((r) => [r.vm, r.code]), [["beta", "applied"], ["alpha", "applied"]]);
  assertEquals(report.changed, ["beta", "alpha"]);
  assertEquals(pciHostdevs(w.port, "alpha"), []);
  assertEquals(pciHostdevs(w.port, "beta"), [GPU]);
});

/**
 * A stand-in port serving fixed XML: libvirt itself always returns definitions this tool reads,
 * so the real thing cannot produce the unreadable one this test needs.
 */
function fixedXmlPort(domains: Record<string, string>): LibvirtPort {
  const unused = () => {
    throw new Error("not used");
  };
  return {
    uri: "test:///fixed-xml",
    listDomains: () =>
      Object.keys(domains).map((name) => ({ name, uuid: "", active: false, persistent: true })),
    getPersistentXml: (name) => domains[name]!,
    isActive: () => false,
    define: unused,
    attachDevice: unused,
    detachDevice: unused,
  };
}

Deno.test("planHostdevs() warns about a domain outside the config it cannot read, saying what it counts as held", () => {
  const host = sriovHost();
  const libvirt = fixedXmlPort({
    router:
      "<domain type='test'><name>router</name><uuid>11111111-1111-4111-8111-111111111111</uuid><devices/></domain>",
    // Malformed, but naming no hostdev: a <hostdev> with no readable address would refuse the
    // whole plan (tests/plan/plan_unreadable_test.ts).
    other: "<domain type='test'><name>other</name><devices><disk></devices></domain>",
  });
  const plan = planHostdevs({
    config: config(
      `  router:\n    devices:\n      - name: vf\n        match: { address: "01:10.0" }\n`,
    ),
    host,
    libvirt,
  });
  assertEquals(plan.warnings.map((w) => w.code), ["unreadable-definition"]);
  assertMatch(plan.warnings[0]!.message, /"other"/);
  assertMatch(
    plan.warnings[0]!.message,
    /no PCI device could be found in it, so it counts as holding none$/,
  );
  assertEquals(plan.errors, []);
  assertEquals(plan.vms.map((vm) => [vm.name, vm.errors]), [["router", []]]);
});

Deno.test("closeOverGroups() with iommu_group: false warns when the members left out are ones the host needs", () => {
  const host = topologyFromDescription({
    devices: [
      {
        bdf: "0000:0b:00.0",
        group: 7,
        class: "0x030000",
        vendor: "0x10de",
        device: "0x1b06",
        driver: "nvidia",
        ...BLANK,
      },
      {
        bdf: "0000:0c:00.0",
        group: 7,
        class: "0x010802",
        vendor: "0x144d",
        device: "0xa808",
        driver: "nvme",
        ...BLANK,
      },
    ],
    host_use: [{ address: "0000:0c:00.0", reason: "mounted-filesystem", detail: "/ on nvme0n1p2" }],
  }, { source: "shared-group" });
  const cfg = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:1b06" }
        iommu_group: false
`);
  const resolved = resolveConfig(cfg, host).get("win10")!;
  assertEquals(resolved.errors, []);
  assertEquals(resolved.closure.devices.map((d) => d.device.address), ["0000:0b:00.0"]);
  const warning = resolved.warnings.find((w) => w.code === "group-contains-host-critical");
  assertMatch(warning!.message, /0000:0c:00\.0 \(in use by the host \(mounted-filesystem/);
  assertMatch(warning!.message, /Rule "gpu" of VM "win10"/);
});

Deno.test("planHostdevs() refuses to give a device to a VM while a refused VM keeps it in its definition", () => {
  const root = Deno.makeTempDirSync({ prefix: "passthrough-review-" });
  try {
    writeAlphaBetaWorld(root);
    using port = openLibvirtPort(`test://${root}/world.xml`);
    port.define(editDomainXml(port.getPersistentXml("alpha", { secure: true }), {
      remove: [],
      add: [{ address: GPU, managed: true }],
      records: [gpuIdentity(GPU)],
    }));
    const host = topologyFromDescription({
      devices: [
        {
          bdf: GPU,
          group: 7,
          class: "0x030000",
          vendor: "0x10de",
          device: "0x2684",
          driver: "vfio-pci",
          ...BLANK,
        },
      ],
    }, { source: "one-gpu" });
    // alpha's rule no longer matches (a typo): alpha is refused and keeps the GPU as it is.
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
    assertEquals(alpha?.keep, [GPU]);
    assertEquals(beta?.errors.map((e) => e.code), ["device-assigned-twice"]);
    assertMatch(beta!.errors[0]!.message, /"alpha" holds it in its definition now/);
    assertEquals(beta?.changed, false);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("applyPlan() holds back a VM taking part of an IOMMU group another VM still holds part of", async () => {
  // Group 7: a GPU and its audio function. With `iommu_group: false`, each VM asks for one.
  const host = topologyFromDescription({
    devices: [
      { bdf: "0000:0b:00.0", group: 7, class: "0x030000", vendor: "0x10de", device: "0x1b80" },
      { bdf: "0000:0b:00.1", group: 7, class: "0x040300", vendor: "0x10de", device: "0x10f0" },
    ].map((d) => ({ ...d, ...BLANK, driver: "vfio-pci" })),
  }, { source: "test" });
  const root = Deno.makeTempDirSync({ prefix: "passthrough-review-" });
  try {
    writeAlphaBetaWorld(root);
    using port = openLibvirtPort(`test://${root}/world.xml`);
    const rule = (name: string, id: string) =>
      `    devices:\n      - name: ${name}\n        match: { vendor_device_id: "${id}" }\n        iommu_group: false\n`;
    const first = planHostdevs({
      config: config(`  alpha:\n${rule("gpu", "10de:1b80")}`),
      host,
      libvirt: port,
    });
    const yes = () => Promise.resolve("yes" as const);
    await applyPlan(first, { libvirt: port, stateDir: `${root}/state`, confirm: yes });
    assertEquals(pciHostdevs(port, "alpha"), ["0000:0b:00.0"]);

    // alpha lets the GPU go; beta asks for the audio function of the same group.
    const plan = planHostdevs({
      config: config(`  alpha:\n    devices: []\n  beta:\n${rule("audio", "10de:10f0")}`),
      host,
      libvirt: port,
    });
    assertEquals(plan.groupOf, { "0000:0b:00.0": 7, "0000:0b:00.1": 7 });
    assertEquals(plan.vms.map((vm) => [vm.name, vm.errors]), [["alpha", []], ["beta", []]]);
    const { asked, confirm } = answering("no", "yes");
    const report = await applyPlan(plan, { libvirt: port, stateDir: `${root}/state`, confirm });
    assertEquals(asked, ["alpha"]);
    assertEquals(report.vms.map((r) => [r.vm, r.code]), [["alpha", "declined"], [
      "beta",
      "blocked",
    ]]);
    assertMatch(report.vms[1]!.message, /"0000:0b:00\.0", which "alpha" still holds/);
    // The group is not split between the two definitions.
    assertEquals(pciHostdevs(port, "alpha"), ["0000:0b:00.0"]);
    assertEquals(pciHostdevs(port, "beta"), []);

    // Accepted, the release goes first and the taker follows.
    const again = await applyPlan(plan, {
      libvirt: port,
      stateDir: `${root}/state`,
      confirm: answering("yes", "yes").confirm,
    });
    assertEquals(again.changed, ["alpha", "beta"]);
    assertEquals(pciHostdevs(port, "beta"), ["0000:0b:00.1"]);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});
