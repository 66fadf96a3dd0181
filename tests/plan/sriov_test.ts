/**
 * `vf:` rules: an SR-IOV VF of a PF known by its identity, passed as `<interface type='hostdev'>`
 * with a stable MAC and VLAN. Pure planner tests over planWorld() (no libvirt), and the written
 * definitions defined through the real libvirt.so.0 test driver with schema validation.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { config, domainXml, vmOf, withPort } from "../helpers/plan_world.ts";
import { type DataDomain, dataWorld } from "../helpers/world.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { normaliseXmlLine } from "../../lib/domain/lenient.ts";
import { planHostdevs, planWorld } from "../../lib/plan/plan.ts";
import type { Plan } from "../../lib/plan/types.ts";
import type { Config } from "../../lib/config/config.ts";
import type { HostTopology } from "../../lib/host/types.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import type { HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import { autoMac } from "../../lib/resolve/vf.ts";
import type { HostFacts } from "../../lib/host/preflight.ts";
import { dualPortNic, sriovNic } from "../helpers/sriov.ts";
import { tempHostTree } from "../helpers/hosts.ts";
import { generateHost } from "../../lib/testing/host_generator.ts";
import { discoverHost } from "../../lib/host/discover.ts";

function sriovHost(bus = "07", vfs = 4): HostTopology {
  return topologyFromDescription({ devices: sriovNic(bus, vfs) }, { source: "sriov-test" });
}

const UPLINK = (vm: string, vf = "any", nic = "{ mac: auto, vlan: 20 }") =>
  `  ${vm}:
    devices:
      - name: uplink
        match: { vendor_device_id: "8086:10c9" }
        vf: ${vf}
        interface: ${nic}
`;

const A = domainXml("a", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0a");
const B = domainXml("b", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0b");

function plan(cfg: Config, host: HostTopology, domains: Record<string, DataDomain>): Plan {
  return planWorld({ config: cfg, host, world: dataWorld(domains) });
}

/** Each VM's domain as the plan would leave it (its desired XML), for the next round. */
function applied(p: Plan): Record<string, string> {
  return Object.fromEntries(p.vms.map((vm) => [vm.name, vm.desiredXml]));
}

Deno.test("vf: any gives two VMs different VFs of one PF, as interfaces with MAC and VLAN", () => {
  const p = plan(config(UPLINK("a") + UPLINK("b")), sriovHost(), { a: A, b: B });
  const [a, b] = [vmOf(p, "a"), vmOf(p, "b")];
  assertEquals([a.errors, b.errors], [[], []]);
  assertEquals(a.add.map((x) => [x.address, x.vf?.index, x.vf?.pf.address]), [
    ["0000:07:10.0", 0, "0000:07:00.0"],
  ]);
  assertEquals(b.add.map((x) => [x.address, x.vf?.index]), [["0000:07:10.2", 1]]);
  const parsed = parseDomainXml(a.desiredXml);
  assertEquals(parsed.hostdevs, []);
  assertEquals(
    parsed.interfaces.map((i) => [i.address, i.owned, i.managed, i.vlan]),
    [["0000:07:10.0", true, true, { tags: [20], trunk: false }]],
  );
  assertEquals(parsed.vfRecords.map((r) => [r.address, r.index, r.pf.address, r.pf.rule]), [
    ["0000:07:10.0", 0, "0000:07:00.0", "uplink"],
  ]);
  // Locally administered, unicast, and not the other VM's.
  const mac = parsed.interfaces[0]!.mac!;
  assertEquals(parseInt(mac.slice(0, 2), 16) & 3, 2);
  assertOk(mac !== parseDomainXml(b.desiredXml).interfaces[0]?.mac);
  assertMatch(a.desiredXml, /<vlan>\s*<tag id='20'\/>\s*<\/vlan>/);
  assertOk(a.reasoning.some((r) => r.includes("VF 0 of 0000:07:00.0")), a.reasoning.join("\n"));
});

Deno.test("vf: the VF and MAC stay the same across plans and after applying", () => {
  const cfg = config(UPLINK("a") + UPLINK("b"));
  const first = plan(cfg, sriovHost(), { a: A, b: B });
  const again = plan(cfg, sriovHost(), { a: A, b: B });
  assertEquals(applied(again), applied(first));
  // Applied, then planned with the VMs listed the other way: nothing moves, nothing changes.
  const swapped = config(UPLINK("b") + UPLINK("a"));
  const second = plan(swapped, sriovHost(), applied(first));
  for (const vm of second.vms) {
    assertEquals([vm.name, vm.errors, vm.changed, vm.add], [vm.name, [], false, []]);
  }
  assertEquals(vmOf(second, "a").keep, ["0000:07:10.0"]);
  assertEquals(applied(second), applied(first));
});

Deno.test("vf: any keeps its VF and MAC when the record names the rule as a block scalar wrote it", () => {
  const first = plan(config(UPLINK("a") + UPLINK("b")), sriovHost(), { a: A, b: B });
  // `name: |` wrote "uplink\n" into the records; the config reads that rule as "uplink" now.
  const before = applied(first).b!.replaceAll("rule='uplink'", "rule='uplink&#10;'");
  const block = UPLINK("b").replace("name: uplink", "name: |\n          uplink");
  const second = plan(config(UPLINK("a") + block), sriovHost(), {
    a: applied(first).a!,
    b: before,
  });
  const b = vmOf(second, "b");
  assertEquals([b.errors, b.changed, b.keep, b.add], [[], false, ["0000:07:10.2"], []]);
  assertEquals(
    parseDomainXml(b.desiredXml).interfaces[0]?.mac,
    parseDomainXml(before).interfaces[0]?.mac,
  );
});

Deno.test("vf: any keeps the VF it holds when a lower one becomes free", () => {
  const z = (extra: string) => domainXml("z", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0f", extra);
  const first = plan(config(UPLINK("a")), sriovHost(), { a: A, z: z(HAND_WRITTEN) });
  assertEquals(vmOf(first, "a").add.map((x) => x.address), ["0000:07:10.2"]);
  // z lets VF 0 go: a stays on VF 1 rather than moving its NIC.
  const second = plan(config(UPLINK("a")), sriovHost(), { a: applied(first).a!, z: z("") });
  assertEquals([vmOf(second, "a").changed, vmOf(second, "a").keep], [false, ["0000:07:10.2"]]);
});

Deno.test("vf: an explicit VF index is taken, a given MAC and a VLAN are written", () => {
  const nic = '{ mac: "52:54:00:AB:CD:01", vlan: { tags: [10] } }';
  const p = plan(config(UPLINK("a", "2", nic)), sriovHost(), { a: A });
  const a = vmOf(p, "a");
  assertEquals(a.add.map((x) => [x.address, x.spec.interface]), [
    ["0000:07:10.4", { mac: "52:54:00:ab:cd:01", vlan: { tags: [10], trunk: false } }],
  ]);
  assertMatch(a.desiredXml, /<vlan>\s*<tag id='10'\/>\s*<\/vlan>/);
});

Deno.test("vf: a changed VLAN rewrites the owned interface, keeping its VF and MAC", () => {
  const first = plan(config(UPLINK("a")), sriovHost(), { a: A });
  const before = parseDomainXml(vmOf(first, "a").desiredXml).interfaces[0]!;
  const p = plan(config(UPLINK("a", "any", "{ vlan: 30 }")), sriovHost(), applied(first));
  const a = vmOf(p, "a");
  assertEquals([a.remove, a.add.map((x) => x.address)], [["0000:07:10.0"], ["0000:07:10.0"]]);
  const after = parseDomainXml(a.desiredXml).interfaces;
  assertEquals(after.map((i) => [i.address, i.mac, i.vlan?.tags]), [
    [before.address, before.mac, [30]],
  ]);
});

Deno.test("vf: a changed VLAN rewrites the interface where it is, keeping its guest address, ACPI index and alias", async () => {
  await withPort([A], (port) => {
    const first = vmOf(
      planHostdevs({ config: config(UPLINK("a")), host: sriovHost(), libvirt: port }),
      "a",
    );
    // Where a QEMU libvirtd placed the guest's NIC, and what names it in a Linux guest (eno3).
    const own = first.desiredXml.replace(
      /(<\/vlan>)/,
      "$1\n      <alias name='ua-uplink'/>\n      <acpi index='3'/>\n" +
        "      <address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'/>",
    );
    assertOk(own !== first.desiredXml, "the test places the NIC");
    port.define(own);
    const current = port.getPersistentXml("a", { secure: true });
    const cfg = config(UPLINK("a", "any", "{ vlan: 30 }"));
    const a = vmOf(planHostdevs({ config: cfg, host: sriovHost(), libvirt: port }), "a");
    assertEquals(a.currentXml, current);
    // The tag line alone changes.
    const lines = (xml: string) => xml.split("\n");
    assertEquals(lines(a.desiredXml).length, lines(current).length);
    assertEquals(
      lines(a.desiredXml).filter((l, i) => l !== lines(current)[i]).map((l) => l.trim()),
      ["<tag id='30'/>"],
    );
    port.define(a.desiredXml);
    const nic = parseDomainXml(port.getPersistentXml("a", { secure: true })).interfaces[0]!;
    assertEquals([nic.vlan?.tags, nic.owned], [[30], true]);
    assertMatch(
      nic.xml,
      /<alias name='ua-uplink'\/>\s*<acpi index='3'\/>\s*<address type='pci' domain='0x0000' bus='0x00' slot='0x06'/,
    );
    const again = vmOf(planHostdevs({ config: cfg, host: sriovHost(), libvirt: port }), "a");
    assertEquals(again.changed, false);
  });
});

Deno.test("vf: a PF that moved is followed, the VF re-derived by index, the MAC kept", () => {
  const first = plan(config(UPLINK("a", "1")), sriovHost("07"), { a: A });
  const mac = parseDomainXml(vmOf(first, "a").desiredXml).interfaces[0]!.mac;
  // The card went to another slot: PF 0000:09:00.0, its VFs on bus 09.
  const p = plan(config(UPLINK("a", "1")), sriovHost("09"), applied(first));
  const a = vmOf(p, "a");
  assertEquals(a.errors, []);
  assertEquals([a.remove, a.add.map((x) => x.address)], [["0000:07:10.2"], ["0000:09:10.2"]]);
  const moved = a.warnings.find((w) => w.code === "moved");
  assertEquals(moved?.devices, ["0000:07:10.2", "0000:09:10.2"]);
  const parsed = parseDomainXml(a.desiredXml);
  assertEquals(parsed.interfaces.map((i) => [i.address, i.mac]), [["0000:09:10.2", mac]]);
  assertEquals(parsed.vfRecords.map((r) => [r.index, r.pf.address]), [[1, "0000:09:00.0"]]);
  // Also with vf: any: the VF it held is found again through its PF's identity.
  const anyFirst = plan(config(UPLINK("a")), sriovHost("07"), { a: A });
  const anyMoved = plan(config(UPLINK("a")), sriovHost("09"), applied(anyFirst));
  assertEquals(vmOf(anyMoved, "a").add.map((x) => [x.address, x.vf?.index]), [[
    "0000:09:10.0",
    0,
  ]]);
});

Deno.test("vf: an interface following its moved PF keeps its place, guest address and ACPI index", async () => {
  await withPort([A], (port) => {
    const cfg = config(UPLINK("a"));
    const first = vmOf(planHostdevs({ config: cfg, host: sriovHost("07"), libvirt: port }), "a");
    // Where a QEMU libvirtd placed the guest's NIC, and what names it in a Linux guest (eno3).
    const placed = first.desiredXml.replace(
      /(\n( *)<\/vlan>)/,
      "$1\n$2<acpi index='3'/>\n" +
        "$2<address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'/>",
    );
    assertOk(placed !== first.desiredXml, "the test places the NIC");
    port.define(placed);
    const own = port.getPersistentXml("a", { secure: true });
    // The card went to another slot: PF 0000:09:00.0, its VFs on bus 09.
    const a = vmOf(planHostdevs({ config: cfg, host: sriovHost("09"), libvirt: port }), "a");
    assertEquals(a.currentXml, own);
    assertEquals(a.warnings.find((w) => w.code === "moved")?.devices, [
      "0000:07:10.0",
      "0000:09:10.0",
    ]);
    // Its VF's source address and its record change; nothing else (quote style aside, which the
    // diff does not show either).
    const lines = (xml: string) => xml.split("\n").map(normaliseXmlLine);
    assertEquals(lines(a.desiredXml).length, lines(own).length);
    const changed = lines(a.desiredXml).filter((l, i) => l !== lines(own)[i]);
    assertEquals(changed.length, 2, changed.join("\n"));
    assertMatch(changed[0]!, /^<passthrough:interface address='0000:09:10\.0'/);
    assertEquals(
      changed[1],
      "<address type='pci' domain='0x0000' bus='0x09' slot='0x10' function='0x0'/>",
    );
    // libvirt takes it (schema validation), and the next plan changes nothing.
    port.define(a.desiredXml);
    const nic = parseDomainXml(port.getPersistentXml("a", { secure: true })).interfaces[0]!;
    assertEquals([nic.address, nic.owned], ["0000:09:10.0", true]);
    assertMatch(
      nic.xml,
      /<acpi index='3'\/>\s*<address type='pci' domain='0x0000' bus='0x00' slot='0x06'/,
    );
    const again = vmOf(planHostdevs({ config: cfg, host: sriovHost("09"), libvirt: port }), "a");
    assertEquals(again.changed, false);
  });
});

Deno.test("vf: only a PF that left its address for another with its identity is called moved", () => {
  // Two NICs of one model: the second at bus 09 with its own serial and IOMMU groups.
  const second = (serial: string | null) =>
    sriovNic("09", 4, { serial }).map((d) => ({ ...d, group: (d.group ?? 0) + 100 }));
  const onBus = (bus: string, vf: string) =>
    config(`  a:
    devices:
      - name: uplink
        match: { vendor_device_id: "8086:10c9", address: "0000:${bus}:00.0" }
        vf: ${vf}
        interface: { mac: auto }
`);
  const moved = (p: Plan) => vmOf(p, "a").warnings.filter((w) => w.code === "moved");
  const topology = (devices: HostDeviceDescription[]) =>
    topologyFromDescription({ devices }, { source: "two-nics" });
  const both = topology([...sriovNic("07", 4, { serial: null }), ...second(null)]);
  const first = plan(onBus("07", "1"), both, { a: A });
  assertEquals(vmOf(first, "a").add.map((x) => x.address), ["0000:07:10.2"]);
  // The rule now names the other NIC, VF 1 too: the first (its twin) is still there.
  const other = plan(onBus("09", "1"), both, applied(first));
  assertEquals(vmOf(other, "a").add.map((x) => x.address), ["0000:09:10.2"]);
  assertEquals(moved(other), []);
  // The first NIC left, and the one at bus 09 is another card (its own serial).
  const firstOfA = plan(onBus("07", "1"), sriovHost("07"), { a: A });
  const replaced = plan(
    onBus("09", "1"),
    topology(second("00-1b-21-ff-ff-00-00-09")),
    applied(firstOfA),
  );
  assertEquals(vmOf(replaced, "a").add.map((x) => x.address), ["0000:09:10.2"]);
  assertEquals(moved(replaced), []);
  // The PF moved, but the rule now takes another VF index of it: a new VF, not a move.
  const vf1 = plan(config(UPLINK("a", "1")), sriovHost("07"), { a: A });
  const otherIndex = plan(config(UPLINK("a", "2")), sriovHost("09"), applied(vf1));
  assertEquals(vmOf(otherIndex, "a").add.map((x) => x.address), ["0000:09:10.4"]);
  assertEquals(moved(otherIndex), []);
});

Deno.test("vf: a PF replaced at its address by another card of its model is drift, as a hostdev's card is", () => {
  // By its IDs alone: a rule naming the address too is refused instead (the test below).
  const byAddress = (vf: string) =>
    config(`  a:
    devices:
      - name: uplink
        match: { vendor_device_id: "8086:10c9" }
        vf: ${vf}
`);
  // Another NIC of the model in the slot: its own serial, VFs at the same addresses.
  const other = topologyFromDescription({
    devices: sriovNic("07", 4, { serial: "00-1b-21-ff-ff-00-00-01" }),
  }, { source: "sriov-test" });
  const recorded =
    /^Interface 0000:07:10\.2 of "a" \(rule "uplink"\) was recorded as VF 1 of 8086:10c9 \(subsystem 8086:a03c, class 020000, serial 00-1b-21-ff-ff-a0-b1-c2\) at 0000:07:00\.0 but 0000:07:00\.0 now holds 8086:10c9 \(subsystem 8086:a03c, class 020000, serial 00-1b-21-ff-ff-00-00-01\): /;
  // Before: the record was rewritten, or the interface replaced, with no word of another card.
  const first = plan(byAddress("1"), sriovHost("07"), { a: A });
  const kept = vmOf(plan(byAddress("1"), other, applied(first)), "a");
  const keptDrift = kept.warnings.filter((w) => w.code === "drift").map((w) => w.message);
  assertEquals(keptDrift.length, 1, keptDrift.join("\n"));
  assertMatch(keptDrift[0]!, recorded);
  assertMatch(
    keptDrift[0]!,
    /: rule "uplink" matches the new device, so it stays and its record is updated$/,
  );
  // With vf: any, the VF it held is no longer the one it holds for the rule: it is removed.
  const anyFirst = plan(byAddress("any"), sriovHost("07"), { a: A });
  const anyA = vmOf(plan(byAddress("any"), other, applied(anyFirst)), "a");
  const removed = anyA.warnings.filter((w) => w.code === "drift").map((w) => w.message);
  assertEquals(anyA.remove, ["0000:07:10.0"]);
  assertEquals(removed.length, 1, removed.join("\n"));
  assertMatch(removed[0]!.replace("07:10.0", "07:10.2").replace("VF 0", "VF 1"), recorded);
  assertMatch(removed[0]!, /: it is removed$/);
  // Named by its address too, the card there may have been elsewhere: refused, as a hostdev's is.
  const pinned = config(`  a:
    devices:
      - name: uplink
        match: { vendor_device_id: "8086:10c9", address: "07:00.0" }
        vf: 1
`);
  const pinnedFirst = plan(pinned, sriovHost("07"), { a: A });
  const refused = vmOf(plan(pinned, other, applied(pinnedFirst)), "a");
  assertMatch(
    refused.errors.find((e) => e.location !== undefined)?.message ?? "",
    /, which is on the host no more: .*add serial: "00-1b-21-ff-ff-00-00-01" to the rule; to keep the VM's card, put it back$/,
  );
});

Deno.test("vf: a rule of IDs and address whose recorded PF a new NIC shifted one bus on is refused, as a hostdev's is, and either fix follows the PF", () => {
  const uplink = (match: string) =>
    config(`  a:
    devices:
      - name: uplink
        match: { vendor_device_id: "8086:10c9", ${match} }
        vf: 1
`);
  const serial = (last: string) => `00-1b-21-ff-ff-00-00-${last}`;
  // Two NICs of one model, each in IOMMU groups of its own.
  const nic = (bus: string, last: string, groups: number) =>
    sriovNic(bus, 2, { serial: serial(last) }).map((d) => ({ ...d, group: d.group! + groups }));
  const host = (...nics: HostDeviceDescription[][]) =>
    topologyFromDescription({ devices: nics.flat() }, { source: "sriov-test" });
  const byAddress = uplink('address: "08:00.0"');
  const first = plan(byAddress, host(nic("07", "0a", 0), nic("08", "0b", 100)), { a: A });
  assertEquals(vmOf(first, "a").add.map((x) => x.address), ["0000:08:10.2"]);
  // NIC C added before them: A moved to 08:00.0, the VM's NIC B to 09:00.0.
  const after = host(nic("07", "0c", 0), nic("08", "0a", 100), nic("09", "0b", 200));
  const a = vmOf(plan(byAddress, after, applied(first)), "a");
  const own = a.errors.find((e) => e.rule === "uplink" && e.location !== undefined);
  assertEquals(own?.code, "drift");
  assertEquals(own?.devices, ["0000:08:00.0", "0000:09:00.0"]);
  assertMatch(
    own!.message,
    new RegExp(
      `not the recorded one \\(serial ${
        serial("0b")
      }\\), which is now at 0000:09:00\\.0 \\(same IDs and serial\\): a card added or removed before it renumbered the buses: to keep the VM's card, set address: "0000:09:00\\.0", or serial: "${
        serial("0b")
      }" in its place \\(which follows it wherever it sits\\); to take the one at 0000:08:00\\.0 instead, add serial: "${
        serial("0a")
      }"$`,
    ),
  );
  // No word of NIC A's VF as the interface: the repair removes it until the rule is fixed.
  assertEquals(a.warnings.filter((w) => w.code === "drift"), []);
  assertEquals(a.repair?.remove, ["0000:08:10.2"]);
  // Either fix the refusal names follows NIC B, with the interface's MAC.
  const mac = vmOf(first, "a").add[0]!.vf?.mac;
  for (const key of ['address: "0000:09:00.0"', `serial: "${serial("0b")}"`]) {
    const fixed = vmOf(plan(uplink(key), after, applied(first)), "a");
    assertEquals(fixed.errors, [], key);
    assertEquals(fixed.add.map((x) => [x.address, x.vf?.mac]), [["0000:09:10.2", mac]], key);
  }
});

Deno.test("vf: any switched to the other port of a dual-port card takes a free VF, not the record's", () => {
  // The ports share one serial; z holds port 0's VF 0 (07:00.2), so a's record is VF 1 (07:00.3).
  const host = topologyFromDescription(
    { devices: dualPortNic(2, 2, "00-1b-21-ff-ff-a0-b1-c2") },
    { source: "sriov-test" },
  );
  const onPort = (f: number) =>
    config(`  a:
    devices:
      - name: uplink
        match: { vendor_device_id: "8086:10c9", address: "0000:07:00.${f}" }
        vf: any
`);
  const z = domainXml(
    "z",
    "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0f",
    `<interface type='hostdev' managed='yes'><mac address='52:54:00:00:00:99'/><source>
      <address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x2'/>
      </source></interface>`,
  );
  const first = plan(onPort(0), host, { a: A, z });
  assertEquals(vmOf(first, "a").add.map((x) => [x.address, x.vf?.index]), [["0000:07:00.3", 1]]);
  // Port 0 is still at its address: port 1 is another PF, whose lowest free VF is taken.
  const a = vmOf(plan(onPort(1), host, { ...applied(first), z }), "a");
  assertEquals(a.add.map((x) => [x.address, x.vf?.index]), [["0000:07:00.4", 0]]);
  const why = a.reasoning.find((r) => r.startsWith("VF 0 of 0000:07:00.1"));
  assertOk(why?.includes("the lowest free VF") && !why.includes("follows"), a.reasoning.join("\n"));
  assertEquals(a.warnings.filter((w) => w.code === "moved"), []);
});

const HAND_WRITTEN = `
      <interface type='hostdev' managed='yes'>
        <mac address='52:54:00:00:00:99'/>
        <source>
          <address type='pci' domain='0x0000' bus='0x07' slot='0x10' function='0x0'/>
        </source>
      </interface>`;

Deno.test("vf: a hand-written interface is never touched, and its VF and MAC count as taken", () => {
  const handA = domainXml("a", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0a", HAND_WRITTEN);
  // b's any VF skips a's hand-written VF 0.
  const p = plan(config(UPLINK("b", "any", '{ mac: "52:54:00:00:00:98" }')), sriovHost(), {
    a: handA,
    b: B,
  });
  assertEquals(vmOf(p, "b").add.map((x) => x.address), ["0000:07:10.2"]);
  // A rule of a naming that VF keeps the element as written and records nothing.
  const own = plan(config(UPLINK("a", "0")), sriovHost(), { a: handA });
  const a = vmOf(own, "a");
  assertEquals([a.errors, a.changed, a.add], [[], false, []]);
  assertOk(a.reasoning.some((r) => r.includes("kept as written")));
  // No rule at all: the hand-written interface stays too.
  const none = plan(config("  a:\n    devices: []\n"), sriovHost(), { a: handA });
  assertEquals(vmOf(none, "a").changed, false);
  // A given MAC another domain's interface uses is refused.
  const clash = plan(config(UPLINK("b", "any", '{ mac: "52:54:00:00:00:99" }')), sriovHost(), {
    a: handA,
    b: B,
  });
  assertEquals(vmOf(clash, "b").errors.map((e) => e.code), ["mac-conflict"]);
});

Deno.test("vf: mac auto tells hosts apart by the PF's serial, else by its interface's MAC", () => {
  const macOn = (extra: Partial<HostDeviceDescription>, source = "sriov-test") => {
    const host = topologyFromDescription({ devices: sriovNic("07", 4, extra) }, { source });
    return vmOf(plan(config(UPLINK("a")), host, { a: A }), "a").add[0]?.spec.interface?.mac;
  };
  const net = (address: string) => ({ net: { name: "enp7s0f0", address } });
  // The PF's serial decides; a host's sysfs path (its snapshot's, elsewhere) does not.
  assertEquals(macOn({}), autoMac("00-1b-21-ff-ff-a0-b1-c2", "a", "uplink", 0));
  assertEquals(macOn({}, "/srv/snapshots/hv1"), macOn({}));
  assertEquals(macOn(net("00:1b:21:a0:b1:c2")), macOn({}));
  // Two hosts' PFs without a serial: their interfaces' MACs.
  const hv1 = macOn({ serial: null, ...net("00:1B:21:A0:B1:C2") });
  const hv2 = macOn({ serial: null, ...net("00:1b:21:a0:b1:c3") });
  assertEquals(hv1, autoMac("00:1b:21:a0:b1:c2", "a", "uplink", 0));
  assertEquals(hv2, autoMac("00:1b:21:a0:b1:c3", "a", "uplink", 0));
  // Neither: the same MAC on every host.
  assertEquals(macOn({ serial: null }), autoMac("", "a", "uplink", 0));
});

Deno.test("vf: mac auto steps past a MAC another domain uses", () => {
  const taken = autoMac("00-1b-21-ff-ff-a0-b1-c2", "a", "uplink", 0);
  const other = domainXml(
    "z",
    "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0f",
    `\n      <interface type='network'><mac address='${taken}'/><source network='default'/></interface>`,
  );
  const alone = plan(config(UPLINK("a")), sriovHost(), { a: A });
  assertEquals(vmOf(alone, "a").add[0]?.spec.interface?.mac, taken);
  const p = plan(config(UPLINK("a")), sriovHost(), { a: A, z: other });
  const mac = vmOf(p, "a").add[0]?.spec.interface?.mac;
  assertEquals(mac, autoMac("00-1b-21-ff-ff-a0-b1-c2", "a", "uplink", 1));
  // Also a MAC only a running guest's live definition has (an interface hot-plugged into it).
  const plain = domainXml("z", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0f", "", true);
  const live = plan(config(UPLINK("a")), sriovHost(), {
    a: A,
    z: { xml: plain, active: true, liveXml: other },
  });
  assertEquals(vmOf(live, "a").add[0]?.spec.interface?.mac, mac);
});

Deno.test('vf: a rule matching two PFs is told to narrow to one, never to take "all: true"', () => {
  // The two ports of one card, each in a group of its own.
  const split = topologyFromDescription({ devices: dualPortNic(2, 2, null) }, { source: "split" });
  const [ports] = vmOf(plan(config(UPLINK("a")), split, { a: A }), "a").errors;
  assertEquals(ports?.code, "ambiguous");
  assertMatch(
    ports!.message,
    /matches 2 functions of one card .*: a "vf:" rule takes a VF of one physical function: narrow it with "address"$/,
  );
  // Two cards: what tells them apart, and no "all: true", which a vf: rule may not have.
  const other = { group: 21, serial: "00-1b-21-ff-ff-a0-b1-c3" };
  const cards = topologyFromDescription({
    devices: [...sriovNic("07", 2), ...sriovNic("08", 2, other)],
  }, { source: "two cards" });
  const [pfs] = vmOf(plan(config(UPLINK("a")), cards, { a: A }), "a").errors;
  assertEquals(pfs?.code, "ambiguous");
  assertMatch(pfs!.message, /: narrow it with "serial", or with "address"$/);
});

Deno.test("vf: too few VFs, all VFs taken, and a PF given to a VM are refused", () => {
  const SYSFS = "/sys/bus/pci/devices/0000:07:00\\.0/sriov_numvfs";
  // The PF can provide 8: the refusal gives the commands that enable them.
  const roomy = topologyFromDescription(
    { devices: sriovNic("07", 4, { sriov_totalvfs: 8 }) },
    { source: "sriov-test" },
  );
  const few = plan(config(UPLINK("a", "7")), roomy, { a: A });
  const [issue] = vmOf(few, "a").errors;
  assertEquals([issue?.code, issue?.devices], ["vf-unavailable", ["0000:07:00.0"]]);
  assertMatch(
    issue!.message,
    new RegExp(
      `VF 7 of 0000:07:00\\.0: PF 0000:07:00\\.0 has 4 VFs enabled of 8 possible: echo 0 > ${SYSFS}; echo 8 > ${SYSFS} \\(stop the VMs using its VFs first\\)`,
    ),
  );
  // It can provide 4 only: no command raises that, the refusal says what can be asked.
  const beyond = vmOf(plan(config(UPLINK("a", "7")), sriovHost(), { a: A }), "a").errors[0];
  assertMatch(
    beyond!.message,
    /has 4 VFs enabled of 4 possible: it has no VF 7; name an index below 4, or "vf: any"/,
  );
  // Where the source does not say how many it can provide (libvirt's node devices).
  const unknown = sriovHost();
  delete unknown.devices.find((d) => d.address === "0000:07:00.0")!.sriovTotalVfs;
  const vague = vmOf(plan(config(UPLINK("a", "7")), unknown, { a: A }), "a").errors[0];
  assertMatch(vague!.message, /has 4 VFs enabled: raise .*0000:07:00\.0\/sriov_numvfs to 8/);
  assertMatch(vague!.message, /sriov_totalvfs/);
  // A function without the SR-IOV capability (no sriov_* files): nothing to raise.
  const plain = sriovHost();
  const pf = plain.devices.find((d) => d.address === "0000:07:00.0")!;
  for (const vf of pf.virtfns) plain.devices = plain.devices.filter((d) => d.address !== vf);
  pf.virtfns = [];
  delete pf.sriovTotalVfs;
  delete pf.sriovNumVfs;
  for (const vf of ["0", "any"]) {
    const none = vmOf(plan(config(UPLINK("a", vf)), plain, { a: A }), "a").errors[0];
    assertMatch(
      none!.message,
      /asks for (VF 0|a VF) of 0000:07:00\.0, which is not SR-IOV capable \(it has no sriov_totalvfs\): match a function that is, or drop "vf:" to pass the function itself$/,
    );
    assertEquals(none!.message.includes("sriov_numvfs"), false);
  }
  // One VF of one possible, two VMs asking for any: the second is refused, naming who holds it.
  const one = plan(config(UPLINK("a") + UPLINK("b")), sriovHost("07", 1), { a: A, b: B });
  assertEquals(vmOf(one, "a").errors, []);
  assertEquals(vmOf(one, "b").errors.map((e) => e.code), ["vf-unavailable"]);
  assertMatch(
    vmOf(one, "b").errors[0]!.message,
    /all 1 are taken: 0 \(0000:07:10\.0\) by "a" \(rule "uplink"\)\. PF 0000:07:00\.0 has 1 VF enabled of 1 possible: it cannot provide more; free one of the VFs above$/,
  );
  // The PF itself in another domain's definition.
  const pfHostdev = `
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='0x07' slot='0x00' function='0x0'/></source>
      </hostdev>`;
  const split = plan(config(UPLINK("a")), sriovHost(), {
    a: A,
    z: domainXml("z", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0f", pfHostdev),
  });
  assertEquals(vmOf(split, "a").errors.map((e) => [e.code, e.vms]), [
    ["sriov-split", ["a", "z"]],
  ]);
});

Deno.test("vf: discovery reads a PF's interface MAC, a unicast one only, and no VF's", async () => {
  const macOf = async (address: string, vf = false) => {
    const net = { name: "eth0", address };
    const devices = sriovNic("07", 1, vf ? {} : { net });
    if (vf) devices[1]!.net = net;
    await using tree = await tempHostTree({ devices });
    const host = await discoverHost({ root: tree.dir, lspci: null });
    return host.devices.filter((d) => "macAddress" in d).map((d) => [d.address, d.macAddress]);
  };
  assertEquals(await macOf("00:1B:21:A0:B1:C2"), [["0000:07:00.0", "00:1b:21:a0:b1:c2"]]);
  for (const address of ["01:00:5e:00:00:01", "00:00:00:00:00:00", "not a mac", ""]) {
    assertEquals(await macOf(address), [], address);
  }
  assertEquals(await macOf("00:1b:21:a0:b1:c2", true), []);
});

Deno.test("vf: a PF with no VF enabled: discovery reads sriov_totalvfs, the refusal says to raise it", async () => {
  await using tree = await tempHostTree({ devices: sriovNic("07", 0, { sriov_totalvfs: 7 }) });
  const host = await discoverHost({ root: tree.dir, lspci: null });
  const pf = host.devices.find((d) => d.address === "0000:07:00.0")!;
  assertEquals([pf.sriovTotalVfs, pf.sriovNumVfs], [7, 0]);
  const [issue] = vmOf(plan(config(UPLINK("a")), host, { a: A }), "a").errors;
  assertEquals(
    issue?.message,
    `Rule "uplink" of VM "a" asks for any free VF of 0000:07:00.0, but it has no VF enabled. PF 0000:07:00.0 has 0 VFs enabled of 7 possible: echo 1 > /sys/bus/pci/devices/0000:07:00.0/sriov_numvfs (not kept across a reboot: set it at boot, with a udev rule or a systemd unit)`,
  );
});

Deno.test("vf: a PF without its network driver: the refusal says to give it back before raising sriov_numvfs", async () => {
  const dir = "/sys/bus/pci/devices/0000:07:00.0";
  const cases: [string | null, string][] = [
    [null, ""],
    ["vfio-pci", `echo 0000:07:00.0 > ${dir}/driver/unbind; `],
  ];
  for (const [driver, unbind] of cases) {
    await using tree = await tempHostTree({
      devices: sriovNic("07", 0, { sriov_totalvfs: 7, driver }),
    });
    const host = await discoverHost({ root: tree.dir, lspci: null });
    const [issue] = vmOf(plan(config(UPLINK("a")), host, { a: A }), "a").errors;
    assertEquals(issue?.code, "vf-unavailable");
    // The kernel refuses the count without the PF's driver: "echo 1 > sriov_numvfs" alone failed.
    assertOk(
      issue!.message.endsWith(
        `PF 0000:07:00.0 has 0 VFs enabled of 7 possible: 0000:07:00.0 is bound to ${
          driver === null ? "no driver" : `"${driver}"`
        }, not its network driver, so the kernel refuses a count in ${dir}/sriov_numvfs: give it back to its network driver first (echo > ${dir}/driver_override; ${unbind}echo 0000:07:00.0 > /sys/bus/pci/drivers_probe), then echo 1 > ${dir}/sriov_numvfs (not kept across a reboot: set it at boot, with a udev rule or a systemd unit)`,
      ),
      issue!.message,
    );
  }
});

Deno.test("vf: a VF another domain holds is refused when named by index", () => {
  const held = domainXml("z", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0f", HAND_WRITTEN);
  const p = plan(config(UPLINK("a", "0", '{ mac: "52:54:00:00:00:01" }')), sriovHost(), {
    a: A,
    z: held,
  });
  const codes = vmOf(p, "a").errors.map((e) => e.code);
  assertOk(codes.includes("device-assigned-twice") || codes.includes("group-shared-with-other-vm"));
  assertEquals(vmOf(p, "a").changed, false);
});

Deno.test("vf: two rules of a VM naming one VF index are told to change an index, not to narrow", () => {
  const rule = (name: string) =>
    `      - name: ${name}\n        match: { vendor_device_id: "8086:10c9" }\n        vf: 0\n`;
  const p = plan(config(`  a:\n    devices:\n${rule("u1")}${rule("u2")}`), sriovHost(), { a: A });
  const [issue] = vmOf(p, "a").errors;
  assertEquals(issue?.code, "device-assigned-twice");
  // Both matches name the one PF: narrowing either still gives VF 0.
  assertMatch(
    issue!.message,
    /matched by rules "u1" and "u2" of VM "a": give one of them another VF index, or "vf: any"$/,
  );
});

Deno.test("vf: a recorded MAC edited by hand is read as the config reads MACs, or refuses the VM, never throws", () => {
  const first = plan(config(UPLINK("a", "any", '{ mac: "52:54:00:ab:cd:ef" }')), sriovHost(), {
    a: A,
  });
  const xml = applied(first).a!;
  const edited = (mac: string) =>
    xml.replace(/(<passthrough:interface [^>]*mac=')52:54:00:ab:cd:ef'/, `$1${mac}'`);
  assertOk(edited("x") !== xml);
  // mac: auto writes the recorded MAC back: in dashes and upper case it is the same MAC.
  const dashed = vmOf(
    plan(config(UPLINK("a")), sriovHost(), { a: edited("52-54-00-AB-CD-EF") }),
    "a",
  );
  assertEquals(dashed.errors, []);
  assertEquals(parseDomainXml(dashed.desiredXml).interfaces.map((i) => i.mac), [
    "52:54:00:ab:cd:ef",
  ]);
  // No MAC at all: the VM's definition is unreadable, said so; the plan goes on.
  const bad = vmOf(plan(config(UPLINK("a")), sriovHost(), { a: edited("52:54:zz") }), "a");
  assertEquals(bad.errors.map((e) => e.code), ["unreadable-definition"]);
  assertMatch(bad.errors[0]!.message, /interface record has a bad MAC: at line 5/);
});

Deno.test("vf: a PF sharing its VFs' IOMMU group (real ConnectX-4 Lx host) is refused", async () => {
  const real = JSON.parse(
    await Deno.readTextFile(new URL("../fixtures/hosts/c246-cx4lx-sriov.json", import.meta.url)),
  ) as { devices: HostDeviceDescription[] };
  // The capture shows the VFs (15b3:1016) but not their links: VFs 01:00.2-.3 are of PF .0.
  const devices = real.devices.map((d) =>
    d.device === "0x1016" ? { ...d, physfn: "0000:01:00.0" } : d
  );
  const host = topologyFromDescription({ devices }, { source: "c246" });
  const rule = (match: string) =>
    config(`  a:\n    devices:\n      - name: uplink\n        match: ${match}\n        vf: any\n`);
  // Both PFs sit in group 1: the match must say which.
  const ambiguous = plan(rule('{ vendor_device_id: "15b3:1015" }'), host, { a: A });
  const [issue] = vmOf(ambiguous, "a").errors;
  assertEquals(issue?.code, "ambiguous");
  assertEquals(issue?.candidates?.map((c) => c.address), ["0000:01:00.0", "0000:01:00.1"]);
  assertMatch(issue!.message, /narrow it with .*"address"/);
  // Named, its VF would bring the PF along (one group): refused.
  const named = plan(rule('{ address: "0000:01:00.0" }'), host, { a: A });
  const codes = vmOf(named, "a").errors.map((e) => e.code);
  assertOk(codes.includes("sriov-split"), codes.join(", "));
});

Deno.test("vf: the written definitions pass libvirt's schema (test driver, VALIDATE)", async () => {
  const cfg = config(
    UPLINK("a") +
      UPLINK("b", "3", '{ mac: "52:54:00:12:34:56", vlan: { tags: [42] } }'),
  );
  await withPort([A, B], (port) => {
    const p = planHostdevs({ config: cfg, host: sriovHost(), libvirt: port });
    for (const vm of p.vms) {
      assertOk(vm.changed && vm.errors.length === 0, vm.name);
      port.define(vm.desiredXml);
      const back = parseDomainXml(port.getPersistentXml(vm.name));
      assertEquals(
        back.interfaces.map((i) => [i.address, i.owned, i.mac]),
        parseDomainXml(vm.desiredXml).interfaces.map((i) => [i.address, true, i.mac]),
      );
    }
    // A schema-invalid interface is refused by the same define: the check is real.
    const broken = p.vms[0]!.desiredXml.replace("<vlan>", "<vlan bogus='1'>");
    let refused = false;
    try {
      port.define(broken);
    } catch {
      refused = true;
    }
    assertOk(refused, "libvirt refused the invalid interface");
  });
});

Deno.test("vf: on a generated host's tree, VF indexes are the PF's virtfnN links", async () => {
  const description = generateHost(40, { vfsPerNic: 8 });
  const pf = description.devices.find((d) => d.device === "0x1572")!.bdf;
  await using tree = await tempHostTree(description);
  const links = [0, 1].map((i) =>
    Deno.readLinkSync(`${tree.dir}/bus/pci/devices/${pf}/virtfn${i}`).replace(/^.*\//, "")
  );
  assertEquals(Deno.readTextFileSync(`${tree.dir}/bus/pci/devices/${pf}/sriov_numvfs`), "8\n");
  const host = await discoverHost({ root: tree.dir, lspci: null });
  const rule = (vm: string) =>
    `  ${vm}:
    devices:
      - name: uplink
        match: { address: "${pf}" }
        vf: any
`;
  const p = plan(config(rule("a") + rule("b")), host, { a: A, b: B });
  assertEquals(
    p.vms.map((vm) => vm.add.map((x) => [x.address, x.vf?.index])),
    [[[links[0], 0]], [[links[1], 1]]],
  );
});

Deno.test("vf: a VM dropped from the config loses its owned interface, hand-written ones stay", () => {
  const first = plan(config(UPLINK("a")), sriovHost(), { a: A });
  // a's definition also gets a hand-written interface on VF 3.
  const withHand = applied(first).a!.replace(
    "    </devices>",
    `  <interface type='hostdev'>
        <source><address type='pci' domain='0x0000' bus='0x07' slot='0x10' function='0x6'/></source>
      </interface>
    </devices>`,
  );
  const p = plan(config(UPLINK("b")), sriovHost(), { a: withHand, b: B });
  const a = vmOf(p, "a");
  assertEquals([a.errors, a.remove], [[], ["0000:07:10.0"]]);
  const left = parseDomainXml(a.desiredXml);
  assertEquals([left.interfaces.map((i) => [i.address, i.owned]), left.vfRecords], [
    [["0000:07:10.6", false]],
    [],
  ]);
  // b, planned in the same run, does not take the VF a still holds until a is applied.
  assertEquals(vmOf(p, "b").add.map((x) => x.address), ["0000:07:10.2"]);
});

Deno.test("vf: a PF another VM's rule takes is an sriov-split for both VMs", () => {
  const z = domainXml("z", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0f");
  const cfg = config(
    UPLINK("a") +
      '  z:\n    devices:\n      - name: nic\n        match: { address: "0000:07:00.0" }\n',
  );
  const p = plan(cfg, sriovHost(), { a: A, z });
  for (const name of ["a", "z"]) {
    const vm = vmOf(p, name);
    assertEquals([vm.errors.map((e) => e.code), vm.changed], [["sriov-split"], false]);
  }
});

Deno.test("vf: a VF the host uses is skipped by any and refused by index", () => {
  const host = topologyFromDescription({
    devices: sriovNic("07", 4),
    host_use: [{ address: "0000:07:10.0", reason: "default-route", detail: "default via eth9" }],
  }, { source: "sriov-test" });
  const any = plan(config(UPLINK("a")), host, { a: A });
  assertEquals(vmOf(any, "a").add.map((x) => x.address), ["0000:07:10.2"]);
  const named = plan(config(UPLINK("a", "0")), host, { a: A });
  assertEquals(vmOf(named, "a").errors.map((e) => e.code), ["group-contains-host-critical"]);
  // Narrowing the match (serial, slot, address) picks the same PF, so the same VF 0.
  assertMatch(
    vmOf(named, "a").errors[0]!.message,
    /\(default-route: default via eth9\)\): name another VF index, or "vf: any" \(which passes over the VFs the host uses\), or, only if the host no longer needs it, set "allow_host_critical: true" on the rule$/,
  );
});

Deno.test("vf: no advice to set sriov_numvfs to 0 when that removes a VF the host uses", () => {
  const host = topologyFromDescription({
    devices: sriovNic("07", 1, { sriov_totalvfs: 7 }),
    host_use: [{ address: "0000:07:10.0", reason: "default-route", detail: "default via eth9" }],
  }, { source: "sriov-test" });
  const [issue] = vmOf(plan(config(UPLINK("a")), host, { a: A }), "a").errors;
  assertEquals(issue?.code, "vf-unavailable");
  assertMatch(
    issue?.message ?? "",
    /more VFs means setting \/sys\/bus\/pci\/devices\/0000:07:00\.0\/sriov_numvfs to 0 first, which removes every VF, and the host uses 0000:07:10\.0 \(default-route: default via eth9\): move the host off it first, or free a VF$/,
  );
  assertEquals(issue?.message.includes("echo 0"), false);
});

Deno.test("vf: no advice to give a PF on vfio-pci back to its driver when that removes a VF the host uses", () => {
  // vfio-pci's VFs (enable_sriov) with one given to the host's network driver by hand: unbinding
  // the PF removes every VF, the host's default route with them.
  const host = topologyFromDescription({
    devices: sriovNic("07", 1, { sriov_totalvfs: 7, driver: "vfio-pci" }),
    host_use: [{ address: "0000:07:10.0", reason: "default-route", detail: "default via eth9" }],
  }, { source: "sriov-test" });
  const [issue] = vmOf(plan(config(UPLINK("a")), host, { a: A }), "a").errors;
  assertEquals(issue?.code, "vf-unavailable");
  assertMatch(
    issue?.message ?? "",
    /and the host uses 0000:07:10\.0 \(default-route: default via eth9\): move the host off it first, or free a VF$/,
  );
  assertEquals(issue?.message.includes("unbind"), false);
});

Deno.test("vf: boot_order and rom of a vf: rule go on its interface; changing them rewrites it", () => {
  const rule = (extra: string) =>
    config(UPLINK("a") + extra.split("\n").map((l) => l && `        ${l}`).join("\n"));
  const first = plan(rule('boot_order: 2\nrom: { bar: "off" }\n'), sriovHost(), { a: A });
  const nic = parseDomainXml(vmOf(first, "a").desiredXml).interfaces[0]!;
  assertEquals([nic.bootOrder, nic.romBar], [2, "off"]);
  const same = plan(rule('boot_order: 2\nrom: { bar: "off" }\n'), sriovHost(), applied(first));
  assertEquals(vmOf(same, "a").changed, false);
  const changed = plan(rule("boot_order: 2\n"), sriovHost(), applied(first));
  assertEquals(vmOf(changed, "a").remove, ["0000:07:10.0"]);
  assertEquals(parseDomainXml(vmOf(changed, "a").desiredXml).interfaces[0]?.romBar, null);
});

Deno.test("vf: a changed MAC, boot order, managed or ROM file rewrites the owned interface", () => {
  const rule = (nic: string, extra = "") =>
    config(UPLINK("a", "any", nic) + extra.split("\n").map((l) => l && `        ${l}`).join("\n"));
  const first = plan(rule("{ mac: auto }", "boot_order: 2\n"), sriovHost(), { a: A });
  const was = parseDomainXml(vmOf(first, "a").desiredXml).interfaces[0]!;
  assertEquals([was.managed, was.bootOrder, was.romFile], [true, 2, null]);
  const changes: [string, string, (nic: typeof was) => unknown, unknown][] = [
    ['{ mac: "52:54:00:ab:cd:09" }', "boot_order: 2\n", (n) => n.mac, "52:54:00:ab:cd:09"],
    ["{ mac: auto }", "boot_order: 3\n", (n) => n.bootOrder, 3],
    ["{ mac: auto }", "boot_order: 2\nmanaged: false\n", (n) => n.managed, false],
    [
      "{ mac: auto }",
      'boot_order: 2\nrom: { file: "/usr/share/roms/igbvf.rom" }\n',
      (n) => n.romFile,
      "/usr/share/roms/igbvf.rom",
    ],
  ];
  for (const [nic, extra, field, want] of changes) {
    const a = vmOf(plan(rule(nic, extra), sriovHost(), applied(first)), "a");
    assertEquals([a.remove, a.add.map((x) => x.address)], [[was.address], [was.address]], extra);
    assertEquals(field(parseDomainXml(a.desiredXml).interfaces[0]!), want, extra);
  }
});

Deno.test("vf: a refused VM's interface that is no longer its VF is removed by the repair", () => {
  const first = plan(config(UPLINK("a", "1")), sriovHost("07"), { a: A });
  const refusedCfg = config(
    UPLINK("a", "1") + '      - name: gpu\n        match: { vendor_device_id: "10de:9999" }\n',
  );
  // The same PF with a VF stride of 1: 0000:07:10.2 is its VF 2 now.
  const [pf, ...vfs] = sriovNic("07", 4);
  const restrided = topologyFromDescription({
    devices: [pf!, ...vfs.map((vf, i) => ({ ...vf, bdf: `0000:07:10.${i}` }))],
  }, { source: "sriov-test" });
  const p = plan(refusedCfg, restrided, applied(first));
  const a = vmOf(p, "a");
  assertEquals(a.errors.map((e) => e.code), ["drift", "no-match"]);
  assertMatch(a.errors[0]!.message, /recorded as VF 1 .* but it is VF 2 of 0000:07:00\.0 now/);
  assertEquals(a.repair?.remove, ["0000:07:10.2"]);
  const repaired = parseDomainXml(a.repair!.desiredXml);
  assertEquals([repaired.interfaces, repaired.vfRecords], [[], []]);
  // Each other way the address can stop being the recorded VF.
  const [, , vf1] = sriovNic("07", 4);
  const hosts: [string, HostDeviceDescription[], RegExp][] = [
    [
      "gone",
      [pf!, ...vfs.filter((v) => v.bdf !== vf1!.bdf)],
      /but nothing is there now: it is removed/,
    ],
    [
      "no VF",
      [pf!, ...vfs.map((v) => v.bdf === vf1!.bdf ? { ...v, physfn: null } : v)],
      /but it holds 8086:10ca .*, no VF: it is removed/,
    ],
    [
      "another card",
      sriovNic("07", 4, { serial: "00-1b-21-ff-ff-00-00-01" }),
      // What tells the cards apart is said: their serials.
      /but it is a VF of 0000:07:00\.0, which holds 8086:10c9 \(subsystem 8086:a03c, class 020000, serial 00-1b-21-ff-ff-00-00-01\), not the recorded 8086:10c9 \(subsystem 8086:a03c, class 020000, serial 00-1b-21-ff-ff-a0-b1-c2\): it is removed/,
    ],
  ];
  for (const [what, devices, message] of hosts) {
    const host = topologyFromDescription({ devices }, { source: "sriov-test" });
    const vm = vmOf(plan(refusedCfg, host, applied(first)), "a");
    assertEquals(vm.errors[0]?.code, "drift", what);
    assertMatch(vm.errors[0]!.message, message, what);
    assertEquals(vm.repair?.remove, ["0000:07:10.2"], what);
  }
  // On the unchanged host the refused VM keeps its interface: nothing to repair.
  const intact = plan(refusedCfg, sriovHost("07"), applied(first));
  assertEquals([vmOf(intact, "a").errors.map((e) => e.code), vmOf(intact, "a").repair], [
    ["no-match"],
    undefined,
  ]);
});

Deno.test("vf: a VF that is the other port's now, alike as the ports are, is drift the repair removes", () => {
  const byAddress = `  a:
    devices:
      - name: uplink
        match: { address: "0000:07:00.0" }
        vf: 1
`;
  const host = (vfs0: number, vfs1: number) =>
    topologyFromDescription({ devices: dualPortNic(vfs0, vfs1, null) }, { source: "sriov-test" });
  const first = plan(config(byAddress), host(2, 0), { a: A });
  assertEquals(vmOf(first, "a").add.map((x) => x.address), ["0000:07:00.3"]);
  // The VFs made again on port 1 only: 07:00.3 is its VF 1, and port 0 has none.
  const a = vmOf(plan(config(byAddress), host(0, 2), applied(first)), "a");
  assertEquals(a.errors.map((e) => e.code), ["drift", "vf-unavailable"]);
  assertMatch(
    a.errors[0]!.message,
    /^Interface 0000:07:00\.3 of "a" was recorded as VF 1 of 8086:10c9 at 0000:07:00\.0 \(rule "uplink"\) but it is a VF of 0000:07:00\.1 now: it is removed/,
  );
  assertEquals(a.repair?.remove, ["0000:07:00.3"]);
});

Deno.test("vf: a VF passed as a hostdev becomes an interface under a vf: rule, and back", () => {
  const asHostdev = config(
    '  a:\n    devices:\n      - name: uplink\n        match: { address: "0000:07:10.0" }\n',
  );
  const first = plan(asHostdev, sriovHost(), { a: A });
  assertEquals(parseDomainXml(vmOf(first, "a").desiredXml).hostdevs.map((h) => h.owned), [true]);
  const toNic = plan(config(UPLINK("a", "0")), sriovHost(), applied(first));
  const nic = parseDomainXml(vmOf(toNic, "a").desiredXml);
  assertEquals([nic.hostdevs, nic.records], [[], []]);
  assertEquals(nic.interfaces.map((i) => [i.address, i.owned]), [["0000:07:10.0", true]]);
  assertEquals(nic.vfRecords.map((r) => r.index), [0]);
  const back = plan(asHostdev, sriovHost(), applied(toNic));
  const dev = parseDomainXml(vmOf(back, "a").desiredXml);
  assertEquals([dev.interfaces, dev.vfRecords], [[], []]);
  assertEquals(dev.hostdevs.map((h) => [h.address, h.owned]), [["0000:07:10.0", true]]);
  assertEquals(dev.records.map((r) => r.rule), ["uplink"]);
  // Planned once more, each form is stable.
  assertEquals(vmOf(plan(asHostdev, sriovHost(), applied(back)), "a").changed, false);
});

/** `domains` as a world whose connection has the hostdev network `sriov` with `pool`. */
function withPool(
  domains: Record<string, DataDomain>,
  pool: { addresses?: string[]; pfs?: string[] },
) {
  const network = {
    name: "sriov",
    addresses: pool.addresses ?? [],
    unresolved: 0,
    pfs: pool.pfs ?? [],
  };
  return {
    ...dataWorld(domains),
    networks: { kind: "read" as const, hostdev: [network], bridged: [], unreadable: [] },
  };
}

Deno.test("vf: any skips the VFs a hostdev network hands out; a VF it holds already is refused, not moved", () => {
  const world = withPool({ a: A }, { addresses: ["0000:07:10.0"] });
  const p = planWorld({ config: config(UPLINK("a")), host: sriovHost(), world });
  const a = vmOf(p, "a");
  assertEquals(a.errors, []);
  assertEquals(a.add.map((x) => [x.address, x.vf?.index]), [["0000:07:10.2", 1]]);
  // An explicit VF index on the pool's VF: refused, naming the network.
  const explicit = planWorld({ config: config(UPLINK("a", "0")), host: sriovHost(), world });
  const [refusal] = vmOf(explicit, "a").errors;
  assertEquals(refusal?.code, "hostdev-network");
  assertMatch(refusal!.message, /hostdev network "sriov"/);
  // a holds VF 0 already (applied before the network listed it): kept, and refused by name.
  const held = planWorld({
    config: config(UPLINK("a")),
    host: sriovHost(),
    world: dataWorld({ a: A }),
  });
  const again = withPool(applied(held), { addresses: ["0000:07:10.0"] });
  const next = vmOf(
    planWorld({ config: config(UPLINK("a")), host: sriovHost(), world: again }),
    "a",
  );
  assertEquals(next.errors.map((e) => [e.code, e.devices]), [["hostdev-network", [
    "0000:07:10.0",
  ]]]);
});

Deno.test("a rule taking the PF of a hostdev network's VFs is refused, on a captured tree too", () => {
  const pf = `  a:
    devices:
      - name: nic
        match: { vendor_device_id: "8086:10c9" }
`;
  const world = withPool({ a: A }, { addresses: ["0000:07:10.0", "0000:07:10.2"] });
  const a = vmOf(planWorld({ config: config(pf), host: sriovHost(), world }), "a");
  assertEquals(a.errors.map((e) => [e.code, e.devices]), [["hostdev-network", ["0000:07:00.0"]]]);
  assertMatch(a.errors[0]!.message, /the physical function of hostdev network "sriov"/);
});

Deno.test("a <pf dev> pool holds every VF of its PF, where the host says which function it is", () => {
  const world = withPool({ a: A }, { pfs: ["enp7s0"] });
  const facts = {
    netDeviceControllers: (name: string) => name === "enp7s0" ? ["0000:07:00.0"] : [],
  };
  const p = planWorld({
    config: config(UPLINK("a")),
    host: sriovHost(),
    world,
    facts: facts as unknown as HostFacts,
  });
  const [refusal] = vmOf(p, "a").errors;
  assertEquals(refusal?.code, "vf-unavailable");
  assertMatch(refusal!.message, /hostdev network "sriov"/);
  // Without the host's facts (a captured tree), the name resolves to nothing.
  const blind = planWorld({ config: config(UPLINK("a")), host: sriovHost(), world });
  assertEquals(vmOf(blind, "a").errors, []);
});

Deno.test("vf: an unprivileged plan, which reads no serial, keeps the interface and its PF record as root applied them", () => {
  const cfg = config(UPLINK("a", "any"));
  const first = applied(plan(cfg, sriovHost(), { a: A }));
  assertMatch(first.a!, /<passthrough:interface [^>]*serial='00-1b-21-ff-ff-a0-b1-c2'/);
  // The same card read without root: no serial (nor FLR) past the 64-byte header.
  const unread = topologyFromDescription({ devices: sriovNic("07", 4, { serial: null }) }, {
    source: "unprivileged",
  });
  const again = vmOf(plan(cfg, unread, first), "a");
  assertEquals([again.errors, again.warnings, again.changed], [[], [], false]);
});

Deno.test("vf: a given MAC its PF's network interface has is refused as mac-conflict", () => {
  const pfMac = "00:1b:21:a0:b1:c2";
  const host = topologyFromDescription({
    devices: sriovNic("07", 4, { serial: null, net: { name: "enp7s0f0", address: pfMac } }),
  }, { source: "sriov-test" });
  // Copied from `ip link` as it prints it, or as written on the card's label.
  for (const written of [pfMac.toUpperCase(), pfMac.replaceAll(":", "-")]) {
    const p = plan(config(UPLINK("a", "any", `{ mac: "${written}" }`)), host, { a: A });
    const errors = vmOf(p, "a").errors;
    assertEquals(errors.map((e) => e.code), ["mac-conflict"], written);
    assertMatch(errors[0]!.message, /the host \(the network interface of 0000:07:00\.0\)/);
  }
});

Deno.test("vf: a VF address changed by the other port's new VF count is not called a moved PF", () => {
  const onPort1 = config(`  a:
    devices:
      - name: uplink
        match: { vendor_device_id: "8086:10c9", address: "0000:07:00.1" }
        vf: any
`);
  const dual = (vfs0: number) =>
    topologyFromDescription(
      { devices: dualPortNic(vfs0, 2, "00-1b-21-ff-ff-a0-b1-c2") },
      { source: "sriov-test" },
    );
  const first = plan(onPort1, dual(2), { a: A });
  assertEquals(vmOf(first, "a").add.map((x) => x.address), ["0000:07:00.4"]);
  // Port 0 got a third VF: port 1's VF 0 is at 07:00.5 now, port 1 never left 07:00.1.
  const a = vmOf(plan(onPort1, dual(3), applied(first)), "a");
  assertEquals(a.add.map((x) => [x.address, x.vf?.index]), [["0000:07:00.5", 0]]);
  const why = a.reasoning.find((r) => r.startsWith("VF 0 of 0000:07:00.1"));
  assertMatch(
    why ?? a.reasoning.join("\n"),
    /it was 0000:07:00\.4, before the VFs were made again/,
  );
  assertOk(!why?.includes("its PF was"), why);
});

Deno.test("vf: a PF on vfio-pci whose VFs are all taken: giving it back says it removes them", () => {
  const held = domainXml("z", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0f", HAND_WRITTEN);
  const host = topologyFromDescription(
    { devices: sriovNic("07", 1, { driver: "vfio-pci", sriov_totalvfs: 7 }) },
    { source: "sriov-test" },
  );
  const [issue] = vmOf(plan(config(UPLINK("a")), host, { a: A, z: held }), "a").errors;
  assertMatch(
    issue?.message ?? "",
    /drivers_probe, which removes its VF: stop the VMs using it first\), then echo 2 > /,
  );
});

Deno.test("vf: a rule naming another VF index is not told the VFs were made again", () => {
  const first = plan(config(UPLINK("a", "0")), sriovHost(), { a: A });
  const a = vmOf(plan(config(UPLINK("a", "1")), sriovHost(), applied(first)), "a");
  assertEquals(a.add.map((x) => [x.address, x.vf?.index]), [["0000:07:10.2", 1]]);
  const why = a.reasoning.find((r) => r.startsWith("VF 1 of 0000:07:00.0"));
  // The config named VF 1 instead of VF 0: sriov_numvfs never changed.
  assertMatch(
    why ?? a.reasoning.join("\n"),
    /the index the rule names, .*; it was VF 0 \(0000:07:10\.0\)$/,
  );
});

Deno.test("vf: a VF a running VM still holds is to be unplugged as the interface the guest has, not a hostdev", () => {
  const host = sriovHost();
  const first = plan(config(UPLINK("a", "0")), host, { a: A, b: B });
  const held = vmOf(first, "a").desiredXml;
  // Applied to b without --live while a ran: a's guest keeps the VF.
  const moved = config(`  a:\n    devices: []\n${UPLINK("b", "0")}`);
  const applying = plan(moved, host, { a: { xml: held, active: true }, b: B });
  const after = plan(moved, host, {
    a: { xml: vmOf(applying, "a").desiredXml, active: true, liveXml: held },
    b: vmOf(applying, "b").desiredXml,
  });
  const [warning] = vmOf(after, "b").warnings.filter((w) => w.code === "held-by-running-vm");
  // The guest has it as <interface type='hostdev'>: there was no <hostdev> to find in dumpxml.
  assertMatch(parseDomainXml(held).interfaces[0]?.address ?? "", /^0000:07:10\.0$/);
  assertMatch(
    warning?.message ?? "",
    /\(virsh detach-device a FILE --live, FILE holding its <hostdev> element \(a VF's <interface type='hostdev'>\) from virsh dumpxml a\)$/,
  );
});

Deno.test("a rule taking a PF whose VF the host routes through is refused: the VF goes with the PF", async () => {
  // The host's default route runs over VF 0 (a VF given to the host's own network driver):
  // passing the PF to a guest unbinds its driver, which destroys every VF and the route with it.
  await using tree = await tempHostTree({
    devices: sriovNic("07", 2),
    host_use: [{ address: "0000:07:10.0", reason: "default-route", detail: "default via eth9" }],
  });
  const host = await discoverHost({ root: tree.dir });
  const pf = `  a:
    devices:
      - name: nic
        match: { vendor_device_id: "8086:10c9" }
`;
  const a = vmOf(plan(config(pf), host, { a: A }), "a");
  assertEquals(a.errors.map((e) => [e.code, e.devices]), [
    ["group-contains-host-critical", ["0000:07:00.0"]],
  ]);
  assertMatch(
    a.errors[0]!.message,
    /0000:07:00\.0 \(its virtual function 0000:07:10\.0 is in use by the host \(default-route: default via eth9\)\)/,
  );
  assertEquals(a.changed, false);
});

Deno.test("vf: a VF recorded under a rule name with a line end (before names were trimmed) keeps its MAC", () => {
  // `name: |` read as "uplink\n" before rule names were trimmed: the interface was recorded under
  // that name, with the auto MAC derived from it, as here (that version's output).
  const cfg = config(
    '  a:\n    devices:\n      - name: uplink\n        match: { vendor_device_id: "8086:10c9" }\n' +
      "        vf: any\n        interface: { mac: auto }\n",
  );
  const now = vmOf(plan(cfg, sriovHost(), { a: A }), "a").desiredXml;
  const mac = now.match(/<mac address='([^']+)'/)![1]!;
  const before = now.replace("rule='uplink'", "rule='uplink&#10;'").replaceAll(
    mac,
    "0a:d4:00:97:8e:6b",
  );
  assertOk(before.includes("rule='uplink&#10;'") && mac !== "0a:d4:00:97:8e:6b");
  const again = vmOf(plan(cfg, sriovHost(), { a: before }), "a");
  assertEquals(again.errors, []);
  const nic = parseDomainXml(again.desiredXml);
  assertEquals(nic.interfaces.map((i) => [i.address, i.mac]), [[
    "0000:07:10.0",
    "0a:d4:00:97:8e:6b",
  ]]);
  assertEquals(nic.vfRecords.map((r) => [r.mac, r.pf.rule]), [["0a:d4:00:97:8e:6b", "uplink"]]);
});
