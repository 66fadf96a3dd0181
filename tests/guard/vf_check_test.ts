// The start guard on recorded VFs (`vf:` rules' interfaces), over sysfs trees whose VFs carry
// `physfn` and `virtfnN` links, read through the real file-system reader: a VF's address is
// derived from its PF's, so the address must still be VF N of a PF with the recorded identity.

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { tempHostTree } from "../helpers/hosts.ts";
import { dualPortNic, sriovNic } from "../helpers/sriov.ts";
import { config, domainXml, vmOf } from "../helpers/plan_world.ts";
import { dataWorld } from "../helpers/world.ts";
import type { HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { checkDomainStart, type GuardRefusal } from "../../lib/guard/check.ts";
import { planWorld } from "../../lib/plan/plan.ts";
import { recordPolicies } from "../../lib/guard/state.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { bindRecords, guardPolicies } from "../../lib/guard/policy.ts";
import { guardStartOnTree } from "../helpers/guard_run.ts";

/** VM `a` with `vf: 1` of the igb card; more rules may follow. */
const UPLINK = `  a:
    devices:
      - name: uplink
        match: { vendor_device_id: "8086:10c9" }
        vf: 1
        interface: { mac: auto, vlan: 20 }
`;
const RULE = config(UPLINK);

/**
 * The XML `vf: 1` (or `rules`) is written with on a tree of `devices` (discovered from the tree),
 * adding `adds`.
 */
async function plannedXml(
  devices: HostDeviceDescription[],
  rules = RULE,
  adds = ["0000:07:10.2"],
): Promise<string> {
  await using tree = await tempHostTree({ devices, host_use: [] });
  const host = await discoverHost({ root: tree.dir, lspci: null });
  const a = domainXml("a", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0a");
  const plan = planWorld({ config: rules, host, world: dataWorld({ a }) });
  const vm = vmOf(plan, "a");
  assertEquals([vm.errors, vm.add.map((x) => x.address)], [[], adds]);
  return vm.desiredXml;
}

/** The guard's refusals for `xml` at a start on a tree of `devices`. */
async function check(xml: string, devices: HostDeviceDescription[]): Promise<GuardRefusal[]> {
  await using tree = await tempHostTree({ devices, host_use: [] });
  return checkDomainStart({
    vm: "a",
    xml,
    reader: denoFsReader(),
    root: tree.dir,
    hostUse: () => [],
  });
}

Deno.test("guard: a recorded VF starts while its address is VF N of the recorded PF", async () => {
  const xml = await plannedXml(sriovNic("07", 4));
  assertEquals(await check(xml, sriovNic("07", 4)), []);
});

Deno.test("guard: a recorded VF's PF record is compared without a slot, which plan never writes there", async () => {
  const xml = await plannedXml(sriovNic("07", 4, { slot: "PCIE3" }));
  // A record that does hold one (by hand, or a later writer): its PF is read with no slot.
  const slotted = xml.replace(/( pf-address='[^']*')/, "$1 slot='PCIE3'");
  assertEquals(slotted === xml, false, "the PF record is where the test expects it");
  assertEquals(await check(slotted, sriovNic("07", 4, { slot: "PCIE3" })), []);
});

Deno.test("guard: each of two recorded VFs is checked against its own record", async () => {
  const two = config(`${UPLINK}      - name: storage
        match: { vendor_device_id: "8086:10c9" }
        vf: 3
        interface: { mac: auto, vlan: 30 }
`);
  const xml = await plannedXml(sriovNic("07", 4), two, ["0000:07:10.2", "0000:07:10.6"]);
  assertEquals(await check(xml, sriovNic("07", 4)), []);
});

Deno.test("guard: a recorded VF whose PF is another card now is refused", async () => {
  const xml = await plannedXml(sriovNic("07", 4));
  const other = sriovNic("07", 4, { device: "0x1528", serial: "00-1b-21-ff-ff-00-00-01" });
  const [refusal, ...rest] = await check(xml, other);
  assertEquals([rest, refusal?.kind, refusal?.element], [[], "replaced", "interface"]);
  assertEquals(refusal?.recorded?.deviceId, "10c9");
  assertMatch(
    refusal!.reason,
    /interface 0000:07:10\.2 is a VF of 0000:07:00\.0, which holds 8086:1528, recorded as VF 1 of 8086:10c9/,
  );
  // Recorded by passthrough, so the plan follows or removes it: not a hand-added device's fix.
  assertEquals(refusal?.fix, "passthrough plan --vm a");
});

Deno.test("guard: a recorded VF is checked even where a hostdev names its address too", async () => {
  const xml = await plannedXml(sriovNic("07", 4));
  const hostdev = `<hostdev mode='subsystem' type='pci' managed='yes'><source><address ` +
    `domain='0x0000' bus='0x07' slot='0x10' function='0x2'/></source></hostdev>`;
  const both = xml.replace("</devices>", `${hostdev}\n  </devices>`);
  const other = sriovNic("07", 4, { device: "0x1528", serial: "00-1b-21-ff-ff-00-00-01" });
  const [refusal, ...rest] = await check(both, other);
  assertEquals([rest, refusal?.kind, refusal?.address], [[], "replaced", "0000:07:10.2"]);
  assertMatch(refusal!.reason, /is a VF of 0000:07:00\.0, which holds 8086:1528/);
});

Deno.test("guard: a recorded VF whose address is another index of its PF now is refused", async () => {
  const xml = await plannedXml(sriovNic("07", 4));
  // The same PF with a VF stride of 1: 07:10.2 is its VF 2, VF 1 sits at 07:10.1.
  const [pf, ...vfs] = sriovNic("07", 4);
  const restrided = [pf!, ...vfs.map((vf, i) => ({ ...vf, bdf: `0000:07:10.${i}` }))];
  const [refusal] = await check(xml, restrided);
  assertEquals(refusal?.kind, "replaced");
  assertMatch(
    refusal!.reason,
    /is not VF 1 of 0000:07:00\.0 \(virtfn1 leads to 0000:07:10\.1\)/,
  );
  // One VF made again, at the recorded address as the PF's VF 0 (another VF offset): the PF has
  // no VF 1 at all, which the refusal says rather than passing the VF found there.
  const [onlyPf, onlyVf] = sriovNic("07", 1);
  const [short] = await check(xml, [onlyPf!, { ...onlyVf!, bdf: "0000:07:10.2" }]);
  assertEquals(short?.kind, "replaced");
  assertMatch(short!.reason, /is not VF 1 of 0000:07:00\.0 \(virtfn1 leads to nothing\)/);
});

Deno.test("guard: a recorded VF address that holds no VF, or nothing, is refused", async () => {
  const xml = await plannedXml(sriovNic("07", 4));
  // SR-IOV turned off, another function at the old VF's address.
  const [pf, first, second] = sriovNic("07", 4);
  const plain = { ...second!, physfn: null, device: "0x10d3" };
  const [notVf] = await check(xml, [pf!, { ...first!, physfn: null }, plain]);
  assertMatch(notVf!.reason, /is no virtual function now \(no physfn link\)/);
  // The VFs not made again since a reboot: recorded, so the plan's fix, not a hand-added one's.
  const [gone] = await check(xml, [pf!]);
  assertEquals([gone?.kind, gone?.recorded?.deviceId, gone?.fix], [
    "missing",
    "10c9",
    "passthrough plan --vm a",
  ]);
  assertEquals(
    gone!.reason,
    'hostdev interface 0000:07:10.2 holds no device now, recorded as VF 1 of 8086:10c9 serial 00-1b-21-ff-ff-a0-b1-c2 at 0000:07:00.0 (rule "uplink"): its PF\'s VFs are not there (not made again since a reboot, fewer of them, or the PF moved)',
  );
});

Deno.test("guard: a recorded VF whose address is the other port's VF now is refused, alike as the ports are", async () => {
  for (const serial of [null, "00-1b-21-ff-ff-a0-b1-c2"]) {
    const rule = config(`  a:
    devices:
      - name: uplink
        match: { address: "0000:07:00.0" }
        vf: 1
        interface: { mac: auto, vlan: 20 }
`);
    const xml = await plannedXml(dualPortNic(2, 0, serial), rule, ["0000:07:00.3"]);
    assertEquals(await check(xml, dualPortNic(2, 0, serial)), []);
    // Made again, port 1's only: 07:00.3 is its VF 1, of the same identity and index.
    const [refusal, ...rest] = await check(xml, dualPortNic(0, 2, serial));
    assertEquals([rest, refusal?.kind, refusal?.fix], [[], "replaced", "passthrough plan --vm a"]);
    assertMatch(
      refusal!.reason,
      /^hostdev interface 0000:07:00\.3 is a VF of 0000:07:00\.1 now, not of 0000:07:00\.0, recorded as VF 1 of 8086:10c9 /,
    );
  }
});

Deno.test("guard: a recorded VF's PF has its configuration space read only for a recorded serial", async () => {
  const configsRead = async (devices: HostDeviceDescription[]) => {
    const xml = await plannedXml(devices);
    await using tree = await tempHostTree({ devices, host_use: [] });
    const inner = denoFsReader();
    const read: string[] = [];
    const refusals = checkDomainStart({
      vm: "a",
      xml,
      reader: {
        ...inner,
        readBytes: (path, max) => (read.push(path), inner.readBytes(path, max)),
        openFile: (path) => (read.push(path), inner.openFile(path)),
      },
      root: tree.dir,
      hostUse: () => [],
    });
    assertEquals(refusals, []);
    return read.filter((p) => p.endsWith("/config")).map((p) => p.slice(tree.dir.length));
  };
  // The PF's serial recorded (as root plans it): read, to be compared.
  assertEquals(await configsRead(sriovNic("07", 4)), ["/bus/pci/devices/0000:07:00.0/config"]);
  // None recorded: nothing to compare, so no config is read (reading one can wake the device).
  assertEquals(await configsRead(sriovNic("07", 4, { serial: null })), []);
});

Deno.test("guard: a recorded VF the host uses is its vf: rule's, whose allow_host_critical lets it start as plan let it", async () => {
  const devices = sriovNic("07", 4);
  // VF 1 of the PF carries the host's default route.
  const hostUse = [{ address: "0000:07:10.2", reason: "default-route" as const, detail: "via x" }];
  await using tree = await tempHostTree({ devices, host_use: hostUse });
  const host = await discoverHost({ root: tree.dir, lspci: null });
  const a = domainXml("a", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0a");
  const start = (rules: typeof RULE, xml: string) => {
    // As an apply of "a" leaves it: the VF's record (its PF's) bound at the VF's address.
    const { vfRecords } = parseDomainXml(xml);
    const applied = new Map([[
      "a",
      Object.fromEntries(vfRecords.map((vf) => [vf.address, vf.pf])),
    ]]);
    recordPolicies(
      `${tree.dir}/state`,
      bindRecords(guardPolicies(rules), { previous: null, applied }),
    );
    return guardStartOnTree({ vm: "a", xml, dir: tree.dir, live: false });
  };

  const allowed = config(`${UPLINK}        allow_host_critical: true\n`);
  const vm = vmOf(planWorld({ config: allowed, host, world: dataWorld({ a }) }), "a");
  assertEquals([vm.errors, vm.add.map((x) => x.address)], [[], ["0000:07:10.2"]]);
  assertEquals((await start(allowed, vm.desiredXml)).code, 0);

  // Without the override: refused as the rule's VF, with plan as its fix, not as hand-added.
  const refused = await start(RULE, vm.desiredXml);
  assertEquals([refused.code, refused.refusals], [1, [["host-needs", "0000:07:10.2"]]]);
  assertMatch(
    refused.line,
    /holds 8086:10ca .* now, as VF 1 of the recorded 8086:10c9 .* of rule "uplink"; the host needs it: in use by the host \(default-route: via x\); only "allow_host_critical: true" on rule "uplink" \(then passthrough apply\) lets it start; fix: passthrough plan --vm a$/,
  );
});

Deno.test("guard: a recorded VF's group merged with a function the host needs is its vf: rule's to lift", async () => {
  const xml = await plannedXml(sriovNic("07", 4));
  // VF 1's group 31 now also holds an unbound NVMe drive, which VFIO would hand the guest along.
  const drive: HostDeviceDescription = {
    bdf: "0000:09:00.0",
    group: 31,
    class: "0x010802",
    vendor: "0x144d",
    device: "0xa808",
    subsystem_vendor: "0x144d",
    subsystem_device: "0xa801",
    driver: null,
    revision: null,
  };
  const refusals = await check(xml, [...sriovNic("07", 4), drive]);
  assertEquals(
    refusals.map((r) => [r.kind, r.address, r.group?.member, r.recorded?.rule, r.fix]),
    [[
      "host-needs",
      "0000:07:10.2",
      "0000:09:00.0",
      "uplink",
      "passthrough plan --vm a (it judges the group as it is now), then passthrough apply --vm a",
    ]],
  );
  assertMatch(refusals[0]!.reason, /only "allow_host_critical: true" on rule "uplink"/);
});
