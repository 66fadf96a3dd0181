import { assertEquals, assertMatch } from "./helpers/assert.ts";
import { parseConfig } from "../lib/config.ts";
import { topologyFromDescription } from "../lib/host_description.ts";
import type { HostDeviceDescription } from "../lib/host_tree.ts";
import { resolveConfig } from "../lib/plan.ts";
import type { HostTopology, HostUse } from "../lib/types.ts";

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
  assertEquals(router.map((e) => e.code), ["device-assigned-twice"]);
  assertEquals(guest.map((e) => e.code), ["device-assigned-twice"]);
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
  assertEquals(errors.map((e) => e.code), ["device-assigned-twice"]);
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
