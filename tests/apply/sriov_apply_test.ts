/**
 * Applying `vf:` rules: the `<interface type='hostdev'>` the planner writes is defined, checked
 * and rolled back like a hostdev, through the real libvirt.so.0 test driver and a real QEMU
 * libvirtd (when one can start); planning again after applying changes nothing and keeps the MAC.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { applyPlan, type ConfirmAnswer } from "../../lib/apply/apply.ts";
import { rollbackVm } from "../../lib/apply/rollback.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import type { HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import { config, domainXml, vmOf, world } from "../helpers/plan_world.ts";
import { writeTempWorld } from "../helpers/world.ts";
import { libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";

const yes = () => Promise.resolve<ConfirmAnswer>("yes");
const BLANK = { subsystem_vendor: null, subsystem_device: null, revision: null };

/** A PF with three VFs, each in its own IOMMU group. */
const HOST = topologyFromDescription({
  devices: [
    {
      bdf: "0000:07:00.0",
      group: 20,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x10c9",
      driver: "igb",
      ...BLANK,
    },
    ...[0, 2, 4].map((fn, i): HostDeviceDescription => ({
      bdf: `0000:07:10.${fn}`,
      group: 30 + i,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x10ca",
      driver: "igbvf",
      physfn: "0000:07:00.0",
      ...BLANK,
    })),
  ],
}, { source: "sriov-apply" });

const RULES = (vms: string[]) =>
  config(
    vms.map((vm) =>
      `  ${vm}:
    devices:
      - name: uplink
        match: { vendor_device_id: "8086:10c9" }
        vf: any
        interface: { mac: auto, vlan: { tags: [20] } }
`
    ).join(""),
  );

function interfaces(port: LibvirtPort, name: string): [string, string | null, boolean][] {
  return parseDomainXml(port.getPersistentXml(name)).interfaces.map((
    i,
  ) => [i.address, i.mac, i.owned]);
}

Deno.test("applyPlan() defines vf: interfaces; planning again changes nothing, rollback restores", async () => {
  const a = domainXml("a", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0a");
  const b = domainXml("b", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0b");
  await using w = await writeTempWorld(world([a, b]));
  using port = openLibvirtPort(w.uri);
  const stateDir = `${w.path}.state`;
  try {
    const before = port.getPersistentXml("a", { secure: true });
    const first = planHostdevs({ config: RULES(["a", "b"]), host: HOST, libvirt: port });
    const report = await applyPlan(first, { libvirt: port, stateDir, confirm: yes });
    assertEquals([report.changed, report.ok], [["a", "b"], true]);
    assertEquals(report.vms.map((v) => v.added), [["0000:07:10.0"], ["0000:07:10.2"]]);
    const macA = interfaces(port, "a")[0]![1];
    assertEquals(interfaces(port, "a"), [["0000:07:10.0", macA, true]]);
    assertEquals(interfaces(port, "b")[0]?.[0], "0000:07:10.2");
    assertMatch(port.getPersistentXml("a"), /<vlan>\s*<tag id='20'\/>/);

    // Planning again, even with the VMs listed the other way round: nothing changes.
    const second = planHostdevs({ config: RULES(["b", "a"]), host: HOST, libvirt: port });
    assertEquals(second.vms.map((vm) => [vm.name, vm.changed, vm.errors]), [
      ["b", false, []],
      ["a", false, []],
    ]);
    const again = await applyPlan(second, { libvirt: port, stateDir, confirm: yes });
    assertEquals(again.unchanged, ["b", "a"]);
    assertEquals(interfaces(port, "a")[0]?.[1], macA);

    // Dropping the rule removes the owned interface; the metadata goes with it.
    const dropped = planHostdevs({
      config: config("  a:\n    devices: []\n"),
      host: HOST,
      libvirt: port,
    });
    assertEquals(vmOf(dropped, "a").remove, ["0000:07:10.0"]);
    await applyPlan(dropped, { libvirt: port, stateDir, confirm: yes });
    assertEquals(interfaces(port, "a"), []);
    assertOk(!port.getPersistentXml("a").includes("passthrough"));

    // Rollback restores the previous definition, the interface back with its MAC.
    const rolled = await rollbackVm("a", {
      libvirt: port,
      stateDir,
      confirm: () => Promise.resolve(true),
    });
    assertEquals(rolled.status, "restored");
    assertEquals(interfaces(port, "a"), [["0000:07:10.0", macA, true]]);
    assertOk(before !== port.getPersistentXml("a", { secure: true }));
  } finally {
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  }
});

const daemonMissing = libvirtdUnavailable();

Deno.test({
  name: "applyPlan() defines a vf: interface on a real QEMU libvirtd, which keeps its MAC and VLAN",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    using port = openLibvirtPort(daemon.uri);
    const name = `pt-sriov-${Deno.pid}`;
    port.define(`<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices/>
</domain>`);
    const stateDir = `${daemon.dir}/state`;
    try {
      const first = planHostdevs({ config: RULES([name]), host: HOST, libvirt: port });
      const planned = parseDomainXml(vmOf(first, name).desiredXml).interfaces[0];
      const report = await applyPlan(first, { libvirt: port, stateDir, confirm: yes });
      assertEquals([report.changed, report.ok], [[name], true], report.vms[0]?.message);
      const back = parseDomainXml(port.getPersistentXml(name)).interfaces;
      assertEquals(back.map((i) => [i.address, i.mac, i.owned, i.managed, i.vlan]), [
        ["0000:07:10.0", planned?.mac, true, true, { tags: [20], trunk: false }],
      ]);
      // libvirt formats it its own way (a guest address added); the plan still sees no change.
      const second = planHostdevs({ config: RULES([name]), host: HOST, libvirt: port });
      assertEquals([vmOf(second, name).changed, vmOf(second, name).errors], [false, []]);
    } finally {
      new Deno.Command("virsh", {
        args: ["-c", daemon.uri, "undefine", name],
        stdout: "null",
        stderr: "null",
      }).outputSync();
    }
  },
});

Deno.test("applyPlan() restores the backup when the defined XML lacks the planned interface", async () => {
  const a = domainXml("a", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0a");
  await using w = await writeTempWorld(world([a]));
  using port = openLibvirtPort(w.uri);
  const stateDir = `${w.path}.state`;
  const before = port.getPersistentXml("a", { secure: true });
  // Real libvirt underneath; the fault: the define silently loses the new interface.
  const faulty: LibvirtPort = {
    get uri() {
      return port.uri;
    },
    listDomains: () => port.listDomains(),
    getPersistentXml: (name, options) => port.getPersistentXml(name, options),
    isActive: (name) => port.isActive(name),
    define: (xml) =>
      port.define(
        xml.includes("<passthrough:interface")
          ? xml.replace(/<interface type='hostdev'[^]*?<\/interface>/, "")
          : xml,
      ),
    attachDevice: (name, xml, options) => port.attachDevice(name, xml, options),
    detachDevice: (name, xml, options) => port.detachDevice(name, xml, options),
  };
  try {
    const plan = planHostdevs({ config: RULES(["a"]), host: HOST, libvirt: port });
    const report = await applyPlan(plan, { libvirt: faulty, stateDir, confirm: yes });
    assertEquals([report.failed, report.vms[0]?.code], [["a"], "verify-failed"]);
    assertMatch(report.vms[0]!.message, /missing \[0000:07:10\.0 interface [0-9a-f:]+ owned\]/);
    assertEquals(port.getPersistentXml("a", { secure: true }), before);
  } finally {
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  }
});

Deno.test("applyPlan() leaves a VM another client changed a kept interface of right after its define as it is", async () => {
  // A hand-written interface on a VF; another client's `virsh edit`, opened before the apply,
  // gives it a VLAN, saved right after apply's define (which then lacks the planned interface).
  const hand = `
      <interface type='hostdev' managed='yes'>
        <mac address='52:54:00:aa:bb:cc'/>
        <source>
          <address type='pci' domain='0x0000' bus='0x07' slot='0x10' function='0x4'/>
        </source>
      </interface>`;
  const a = domainXml("a", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0a", hand);
  await using w = await writeTempWorld(world([a]));
  using port = openLibvirtPort(w.uri);
  const stateDir = `${w.path}.state`;
  const theirs = port.getPersistentXml("a", { secure: true })
    .replace("</source>", "</source>\n      <vlan><tag id='30'/></vlan>");
  let edited = false;
  const racing: LibvirtPort = Object.create(port);
  racing.define = (xml) => {
    port.define(xml);
    if (edited) return;
    edited = true;
    port.define(theirs);
  };
  try {
    const plan = planHostdevs({ config: RULES(["a"]), host: HOST, libvirt: port });
    const report = await applyPlan(plan, { libvirt: racing, stateDir, confirm: yes });
    assertEquals([report.vms[0]?.code, report.vms[0]?.restored], ["verify-failed", false]);
    assertMatch(report.vms[0]!.message, /it was left as that client defined it/);
    assertMatch(port.getPersistentXml("a"), /<tag id='30'\/>/);
  } finally {
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  }
});

Deno.test("applyPlan() --live hot-plugs a vf: interface into a running guest as an interface", async () => {
  const a = domainXml("a", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0a", "", true);
  await using w = await writeTempWorld(world([a]));
  using port = openLibvirtPort(w.uri);
  const stateDir = `${w.path}.state`;
  const attached: string[] = [];
  // Real libvirt underneath; hot-plug calls are recorded (the test driver cannot hot-plug PCI).
  const recording: LibvirtPort = {
    get uri() {
      return port.uri;
    },
    listDomains: () => port.listDomains(),
    getPersistentXml: (name, options) => port.getPersistentXml(name, options),
    getLiveXml: (name) => port.getLiveXml!(name),
    isActive: (name) => port.isActive(name),
    define: (xml) => port.define(xml),
    attachDevice: (_name, xml) => void attached.push(xml),
    detachDevice: (name, xml, options) => port.detachDevice(name, xml, options),
  };
  try {
    const plan = planHostdevs({ config: RULES(["a"]), host: HOST, libvirt: port });
    const report = await applyPlan(plan, {
      libvirt: recording,
      stateDir,
      confirm: yes,
      live: true,
    });
    assertEquals(report.vms[0]?.live?.attached, ["0000:07:10.0"]);
    assertEquals(attached.length, 1);
    assertMatch(
      attached[0]!,
      /^<interface type='hostdev' managed='yes'>[^]*<vlan>\s*<tag id='20'\/>/,
    );
  } finally {
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  }
});
