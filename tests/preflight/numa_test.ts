/**
 * `numa-mismatch` on the captured two-socket HP DL380p Gen8, with the NUMA node of its 82599 NIC
 * (04:00.0) and each node's CPU list added: a VM pinned to the other node is warned, with the
 * node to pin to; an unpinned VM or one pinned to the right node is not.
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { parseCpuList } from "../../lib/host/preflight.ts";
import { described, domain, planOn, vm, warningCodes, withHost } from "./trees.ts";

const NIC_RULE =
  "vms:\n  db:\n    devices:\n      - name: nic\n        match: { address: 04:00.0 }\n";

const TWO_NODES = described("hp-dl380p-g8", {
  devices: { "0000:04:00.0": { numa_node: 1 } },
  host: { numa_nodes: { "0": "0-7,16-23", "1": "8-15,24-31" } },
});

Deno.test("numa-mismatch: vCPUs pinned to node 0 for a NIC on node 1 names node 1 and its CPUs", async () => {
  await withHost(TWO_NODES, (built) => {
    const pinned = domain("db", "<vcpu placement='static' cpuset='0-3'>4</vcpu>");
    const db = vm(planOn(built, NIC_RULE, { db: pinned }), "db");
    const found = db.warnings.filter((w) => w.code === "numa-mismatch");
    assertEquals(found.map((w) => [w.devices, w.rule]), [[["0000:04:00.0"], "nic"]]);
    assertMatch(
      found[0]!.message,
      /sits on NUMA node 1 but VM "db" has its vCPUs pinned to CPUs 0-3 \(node 0\)/,
    );
    assertMatch(found[0]!.message, /pin it to node 1 \(CPUs 8-15,24-31\)/);
  });
});

Deno.test("numa-mismatch: vcpupin and numatune are read too", async () => {
  await withHost(TWO_NODES, (built) => {
    const vcpupin = domain(
      "db",
      "<vcpu>2</vcpu><cputune><vcpupin vcpu='0' cpuset='16'/><vcpupin vcpu='1' cpuset='17'/></cputune>",
    );
    assertEquals(
      warningCodes(vm(planOn(built, NIC_RULE, { db: vcpupin }), "db")),
      ["numa-mismatch"],
    );
    const memory = domain("db", "<numatune><memory mode='strict' nodeset='0'/></numatune>");
    const db = vm(planOn(built, NIC_RULE, { db: memory }), "db");
    assertMatch(db.warnings[0]?.message ?? "", /its memory pinned to node 0/);
  });
});

Deno.test("numa-mismatch: nothing for an unpinned VM or one pinned to the device's node", async () => {
  await withHost(TWO_NODES, (built) => {
    assertEquals(warningCodes(vm(planOn(built, NIC_RULE, { db: domain("db") }), "db")), []);
    const right = domain(
      "db",
      "<vcpu cpuset='8-11'>4</vcpu><numatune><memory nodeset='1'/></numatune>",
    );
    assertEquals(warningCodes(vm(planOn(built, NIC_RULE, { db: right }), "db")), []);
  });
});

Deno.test("parseDomainXml reads the pinning; parseCpuList reads libvirt's cpuset syntax", () => {
  const parsed = parseDomainXml(domain(
    "db",
    "<vcpu cpuset='0-3,^2'>3</vcpu><cputune><vcpupin vcpu='0' cpuset='5'/></cputune>" +
      "<numatune><memory nodeset='0'/><memnode cellid='0' nodeset='1'/></numatune>",
  ));
  assertEquals(parsed.pinning, { cpusets: ["0-3,^2", "5"], nodesets: ["0", "1"] });
  assertEquals(parseDomainXml(domain("db")).pinning, { cpusets: [], nodesets: [] });
  assertEquals(parseCpuList("0-3,^2"), [0, 1, 3]);
  assertEquals(parseCpuList("0-"), null);
});

Deno.test("numa-mismatch: nothing where the pinning or the device's node is unknown", async () => {
  await withHost(TWO_NODES, (built) => {
    const codes = (extra: string) =>
      warningCodes(vm(planOn(built, NIC_RULE, { db: domain("db", extra) }), "db"));
    // One cpuset libvirt's syntax does not cover makes the vCPUs' nodes unknown, not node 0.
    assertEquals(
      codes("<vcpu cpuset='0-3'>2</vcpu><cputune><vcpupin vcpu='1' cpuset='0-'/></cputune>"),
      [],
    );
    // CPUs the host does not have are on no node.
    assertEquals(codes("<vcpu cpuset='100-103'>4</vcpu>"), []);
    // A nodeset that cannot be read says nothing of the memory; the vCPUs are on the right node.
    assertEquals(
      codes("<vcpu cpuset='8-11'>4</vcpu><numatune><memory nodeset='one'/></numatune>"),
      [],
    );
  });
  // The NIC's node unknown (no numa_node, as on a one-node host's devices).
  const noNode = described("hp-dl380p-g8", {
    host: { numa_nodes: { "0": "0-7,16-23", "1": "8-15,24-31" } },
  });
  await withHost(noNode, (built) => {
    const pinned = domain(
      "db",
      "<vcpu cpuset='0-3'>4</vcpu><numatune><memory nodeset='0'/></numatune>",
    );
    assertEquals(built.host.devices.find((d) => d.address === "0000:04:00.0")?.numaNode, null);
    assertEquals(warningCodes(vm(planOn(built, NIC_RULE, { db: pinned }), "db")), []);
  });
});

Deno.test("numa-mismatch: the functions a rule takes on one node are named in one warning", async () => {
  // The four ports of the 03:00 NIC share IOMMU group 31: the rule takes them all.
  const ports = ["0000:03:00.0", "0000:03:00.1", "0000:03:00.2", "0000:03:00.3"];
  const fourPorts = described("hp-dl380p-g8", {
    devices: Object.fromEntries(ports.map((p) => [p, { numa_node: 1 }])),
    host: { numa_nodes: { "0": "0-7,16-23", "1": "8-15,24-31" } },
  });
  await withHost(fourPorts, (built) => {
    const rule =
      "vms:\n  db:\n    devices:\n      - name: nic\n        match: { address: 03:00.0 }\n";
    const pinned = domain("db", "<vcpu cpuset='0-3'>4</vcpu>");
    const found = vm(planOn(built, rule, { db: pinned }), "db").warnings
      .filter((w) => w.code === "numa-mismatch");
    assertEquals(found.map((w) => w.devices), [ports]);
    assertMatch(found[0]!.message, /\(rule "nic"\) sit on NUMA node 1 but VM "db"/);
  });
});

Deno.test("numa-mismatch: node lists are in numeric order", async () => {
  const many = described("hp-dl380p-g8", {
    devices: { "0000:04:00.0": { numa_node: 1 } },
    host: { numa_nodes: { "0": "0-7", "1": "8-15", "2": "16-23", "10": "24-31" } },
  });
  await withHost(many, (built) => {
    const pinned = domain("db", "<numatune><memory nodeset='10,2'/></numatune>");
    const db = vm(planOn(built, NIC_RULE, { db: pinned }), "db");
    assertMatch(db.warnings[0]?.message ?? "", /its memory pinned to node 2, 10:/);
  });
});
