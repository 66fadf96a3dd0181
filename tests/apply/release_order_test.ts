/**
 * Devices moving between VMs: the VM releasing a device (or part of its IOMMU group) is applied
 * first, and the VM taking it is held back when that release did not happen, so no device or
 * group ends up in two definitions.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { applyPlan, type ConfirmAnswer } from "../../lib/apply/apply.ts";
import { editDomainXml, parseDomainXml } from "../../lib/domain/domain_xml.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import type { Plan, VmPlan } from "../../lib/plan/types.ts";
import { gpuIdentity } from "../helpers/devices.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { emptyVmPlan } from "../../lib/plan/vm_edit.ts";
import { recordCase } from "../../scripts/reliability_report.ts";

const BLANK = { subsystem_vendor: null, subsystem_device: null, revision: null };

function config(vms: string) {
  return parseConfig(`version: 1\nvms:\n${vms}`, { file: "c.yaml" });
}

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

type Edit = Parameters<typeof editDomainXml>[1];
type TestPort = ReturnType<typeof openLibvirtPort>;

/** `name`'s definition in `port` given `address` (owned, recorded). */
function give(port: TestPort, name: string, address: string): void {
  port.define(editDomainXml(port.getPersistentXml(name, { secure: true }), {
    remove: [],
    add: [{ address, managed: true }],
    records: [gpuIdentity(address)],
  }));
}

/** The plan of `edit` to `name`'s definition in `port`, as the planner would make it. */
function vmPlanOf(port: TestPort, name: string, edit: Edit): VmPlan {
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
}

/** A plan of `vms` for `port`'s world in `root`; the port closed and `root` removed when disposed. */
function disposable(port: TestPort, root: string, vms: VmPlan[]) {
  const plan: Plan = {
    config: "c.yaml",
    host: "test",
    uri: port.uri,
    errors: [],
    warnings: [],
    vms,
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

/** A world where "alpha" holds the GPU (owned) and a plan moving it to "beta", listed first. */
function moveWorld() {
  const root = Deno.makeTempDirSync({ prefix: "passthrough-release-" });
  writeAlphaBetaWorld(root);
  const port = openLibvirtPort(`test://${root}/world.xml`);
  give(port, "alpha", GPU);
  return disposable(port, root, [
    vmPlanOf(port, "beta", {
      remove: [],
      add: [{ address: GPU, managed: true }],
      records: [gpuIdentity(GPU)],
    }),
    vmPlanOf(port, "alpha", { remove: [GPU], add: [], records: [] }),
  ]);
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

Deno.test("applyPlan() holds back a VM taking part of an IOMMU group another VM still holds part of", async () => {
  // Group 7: a GPU and its audio function. With `iommu_group: false`, each VM asks for one.
  const host = topologyFromDescription({
    devices: [
      { bdf: "0000:0b:00.0", group: 7, class: "0x030000", vendor: "0x10de", device: "0x1b80" },
      { bdf: "0000:0b:00.1", group: 7, class: "0x040300", vendor: "0x10de", device: "0x10f0" },
    ].map((d) => ({ ...d, ...BLANK, driver: "vfio-pci" })),
  }, { source: "test" });
  const root = Deno.makeTempDirSync({ prefix: "passthrough-release-" });
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

const NIC = "0000:02:00.0";

/**
 * "alpha" holds the GPU and "beta" the NIC (both owned), and a plan swapping them: alpha takes
 * the NIC and gives up the GPU, beta the reverse. Neither can go first alone: until the other
 * follows, one device would sit in both definitions.
 */
function swapWorld() {
  const root = Deno.makeTempDirSync({ prefix: "passthrough-swap-" });
  writeAlphaBetaWorld(root);
  const port = openLibvirtPort(`test://${root}/world.xml`);
  give(port, "alpha", GPU);
  give(port, "beta", NIC);
  const swap = (name: string, take: string, release: string) =>
    vmPlanOf(port, name, {
      remove: [release],
      add: [{ address: take, managed: true }],
      records: [gpuIdentity(take)],
    });
  return disposable(port, root, [swap("alpha", NIC, GPU), swap("beta", GPU, NIC)]);
}

Deno.test("applyPlan() asks every VM of a swap before defining any: one declined holds the other back", async () => {
  for (const answers of [["yes", "no"], ["no"]] as ConfirmAnswer[][]) {
    using w = swapWorld();
    const { asked, confirm } = answering(...answers);
    const report = await applyPlan(w.plan, {
      libvirt: w.port,
      stateDir: `${w.root}/state`,
      confirm,
    });
    assertEquals(asked, ["alpha", "beta"].slice(0, answers.length));
    const [alpha, beta] = report.vms;
    if (answers[0] === "no") {
      assertEquals([alpha!.code, beta!.code], ["declined", "blocked"]);
      assertEquals(
        beta!.message,
        'Not applied: it swaps devices with "alpha", which is not applied (Declined)',
      );
    } else {
      assertEquals([alpha!.code, beta!.code], ["blocked", "declined"]);
      assertMatch(alpha!.message, /swaps devices with "beta", which is not applied \(Declined\)/);
    }
    // Nothing was defined: each device is where it was, in one definition.
    assertEquals([pciHostdevs(w.port, "alpha"), pciHostdevs(w.port, "beta")], [[GPU], [NIC]]);
    assertEquals(report.ok, true);
  }
});

Deno.test("applyPlan() defines a swap whole, or quits it whole", async () => {
  {
    using w = swapWorld();
    const { asked, confirm } = answering("yes", "yes");
    const report = await applyPlan(w.plan, {
      libvirt: w.port,
      stateDir: `${w.root}/state`,
      confirm,
    });
    assertEquals(asked, ["alpha", "beta"]);
    assertEquals(report.changed, ["alpha", "beta"]);
    assertEquals([pciHostdevs(w.port, "alpha"), pciHostdevs(w.port, "beta")], [[NIC], [GPU]]);
  }
  {
    using w = swapWorld();
    const { asked, confirm } = answering("quit");
    const report = await applyPlan(w.plan, {
      libvirt: w.port,
      stateDir: `${w.root}/state`,
      confirm,
    });
    assertEquals(asked, ["alpha"]);
    assertEquals(report.vms.map((r) => [r.code, r.message]), [
      ["quit", "Quit"],
      ["quit", "Not asked: quit earlier"],
    ]);
    assertEquals([pciHostdevs(w.port, "alpha"), pciHostdevs(w.port, "beta")], [[GPU], [NIC]]);
  }
});

Deno.test("applyPlan() reports the definition a swap's undo could not restore", async () => {
  using w = swapWorld();
  const beta = w.plan.vms[1]!;
  beta.desiredXml = beta.desiredXml.replace(/<memory unit='KiB'>\d+</, "<memory unit='KiB'>lots<");
  // The third define is alpha's undo: libvirt refuses it.
  let defines = 0;
  const libvirt = Object.create(w.port);
  libvirt.define = (xml: string) => {
    if (++defines === 3) throw new Error("the daemon went away");
    return w.port.define(xml);
  };
  const report = await applyPlan(w.plan, {
    libvirt,
    stateDir: `${w.root}/state`,
    confirm: answering("yes", "yes").confirm,
  });
  const alpha = report.vms[0]!;
  assertEquals([alpha.code, alpha.restored], ["undone", false]);
  assertMatch(alpha.message, /restoring its previous definition failed \(the daemon went away\)/);
  // alpha keeps its new definition, and the report still shows it for a diff.
  assertEquals(pciHostdevs(w.port, "alpha"), [NIC]);
  assertOk(alpha.definition !== null);
  assertMatch(alpha.definition!.after, new RegExp(`<name>alpha</name>`));
});

Deno.test("applyPlan() undoes a swap's first define when the second VM fails", async () => {
  using w = swapWorld();
  // libvirt refuses beta's new definition, after alpha's was defined.
  const beta = w.plan.vms[1]!;
  beta.desiredXml = beta.desiredXml.replace(/<memory unit='KiB'>\d+</, "<memory unit='KiB'>lots<");
  const report = await applyPlan(w.plan, {
    libvirt: w.port,
    stateDir: `${w.root}/state`,
    confirm: answering("yes", "yes").confirm,
  });
  const [alpha, betaResult] = report.vms;
  assertEquals([alpha!.status, alpha!.code, alpha!.restored], ["failed", "undone", true]);
  assertEquals(alpha!.definition, null);
  assertEquals(betaResult!.code, "define-failed");
  assertMatch(
    alpha!.message,
    /^Defined "alpha" \(1 added, 1 removed\), then undone: "beta", which it swaps devices with, failed \(libvirt rejected the new definition of "beta".*\); its previous definition was restored$/s,
  );
  assertOk(alpha!.backup !== null);
  assertEquals(report.ok, false);
  // Back where they were: the GPU in alpha only, the NIC in beta only.
  assertEquals([pciHostdevs(w.port, "alpha"), pciHostdevs(w.port, "beta")], [[GPU], [NIC]]);
  recordCase({
    area: "fault",
    name: "two VMs swapping devices: one declined, quit, or its define refused",
    count: 4,
    outcome:
      "both asked before either is defined; the other held back or undone; each device in one definition",
    test: "tests/apply/release_order_test.ts",
  });
});

Deno.test("applyPlan() leaves a swap's first VM as it is when another client defined it before the undo", async () => {
  using w = swapWorld();
  const beta = w.plan.vms[1]!;
  beta.desiredXml = beta.desiredXml.replace(/<memory unit='KiB'>\d+</, "<memory unit='KiB'>lots<");
  // Another client (virsh edit) defines alpha after apply defined it, before beta's define fails.
  const libvirt = Object.create(w.port);
  libvirt.define = (xml: string) => {
    if (xml.includes("<name>beta</name>") && !edited) {
      edited = true;
      const alpha = w.port.getPersistentXml("alpha", { secure: true });
      w.port.define(alpha.replace("</uuid>", "</uuid><description>edited elsewhere</description>"));
    }
    return w.port.define(xml);
  };
  let edited = false;
  const report = await applyPlan(w.plan, {
    libvirt,
    stateDir: `${w.root}/state`,
    confirm: answering("yes", "yes").confirm,
  });
  const alpha = report.vms[0]!;
  assertEquals([alpha.status, alpha.code, alpha.restored], ["failed", "undone", false]);
  assertMatch(
    alpha.message,
    /then undone: "beta", .*; its previous definition was not restored: "alpha" was defined again since \(.*edited elsewhere.*\), and restoring it would overwrite that change, which no backup holds: check it, then run "passthrough rollback alpha", or a device sits in two definitions$/s,
  );
  // The other client's definition stands; apply's backup still holds the one before.
  assertMatch(w.port.getPersistentXml("alpha"), /<description>edited elsewhere<\/description>/);
  assertEquals(pciHostdevs(w.port, "alpha"), [NIC]);
});
