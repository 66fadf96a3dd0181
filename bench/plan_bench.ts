/**
 * Planning cost: `planHostdevs()` for 10 and 100 VMs on generated hosts of 256, 1,024 and 4,096
 * PCI functions, in-process on top of a discovered topology, with the domains served by libvirt's
 * test driver through the real `libvirt.so.0` (so each plan includes reading and parsing every
 * domain's XML). Target: 100 VMs on 1,024 functions under 50 ms, linear in VMs and functions.
 *
 * Run: `deno bench --allow-all bench/plan_bench.ts`
 *
 * @module
 */

import { type OpenLibvirtPort, openLibvirtPort } from "../ffi/port.ts";
import { parseConfig } from "../lib/config/config.ts";
import { topologyFromDescription } from "../lib/testing/host_description.ts";
import { generateHost } from "../lib/testing/host_generator.ts";
import { discoverHost } from "../lib/host/discover.ts";
import { buildHostTree } from "../lib/testing/host_tree.ts";
import { planHostdevs } from "../lib/plan/plan.ts";
import type { HostTopology } from "../lib/host/types.ts";
import { COMPUTER_DEVICE } from "../tests/helpers/world.ts";

/** `BENCH_SMOKE=1` (tests/cli/bench_smoke_test.ts): the smallest size only, to check the set-up. */
const SMOKE = Deno.env.get("BENCH_SMOKE") === "1";
const FUNCTIONS = SMOKE ? [256] : [256, 1024, 4096];
const VMS = [10, 100];

/** One rule per VM, each naming a different card the way users do: serial, else ID + address. */
function configText(host: HostTopology, vms: number): string {
  const lines = ["version: 1", "vms:"];
  let vm = 0;
  for (const group of host.groups) {
    if (vm >= vms) break;
    const endpoints = group.devices.filter((d) => !d.isBridge);
    const card = endpoints[0];
    // Skip the platform and chipset groups: the planner would (rightly) refuse them.
    if (card === undefined || !/^(03|0108|02)/.test(card.classCode)) continue;
    // Nor SR-IOV physical functions: a PF must stay with its VFs, which go to other VMs here.
    if (card.virtfns.length > 0) continue;
    const match = card.serial !== null
      ? `{ vendor_device_id: "${card.vendorId}:${card.deviceId}", serial: "${card.serial}" }`
      : `{ vendor_device_id: "${card.vendorId}:${card.deviceId}", address: "${card.address}" }`;
    lines.push(`  vm${vm}:`, "    devices:", `      - name: card`, `        match: ${match}`);
    vm++;
  }
  if (vm < vms) throw new Error(`Host has only ${vm} assignable cards, ${vms} wanted`);
  return lines.join("\n") + "\n";
}

function worldXml(vms: number): string {
  const domains: string[] = [];
  for (let i = 0; i < vms; i++) {
    const uuid = `00000000-0000-4000-8000-${i.toString(16).padStart(12, "0")}`;
    domains.push(`  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>vm${i}</name>
    <uuid>${uuid}</uuid>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <source file='/var/lib/libvirt/images/vm${i}.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>
    </devices>
    <test:runstate>5</test:runstate>
  </domain>`);
  }
  return `<node>\n${domains.join("\n")}\n  ${COMPUTER_DEVICE}\n</node>\n`;
}

const dir = Deno.makeTempDirSync({ prefix: "passthrough-plan-bench-" });
/** The connections the benches plan through, closed at the end as every libvirt handle is. */
const ports: OpenLibvirtPort[] = [];
globalThis.addEventListener("unload", () => {
  for (const port of ports) port.close();
  Deno.removeSync(dir, { recursive: true });
});

for (const functions of FUNCTIONS) {
  const host = topologyFromDescription(generateHost(functions), {
    source: `generated-${functions}`,
  });
  for (const vms of VMS) {
    const config = parseConfig(configText(host, vms), { file: "bench.yaml" });
    const path = `${dir}/world-${vms}.xml`;
    Deno.writeTextFileSync(path, worldXml(vms));
    const libvirt = openLibvirtPort(`test://${path}`);
    ports.push(libvirt);
    // Sanity: the plan must be the real thing (every VM gets its card), or the timing means nothing.
    const plan = planHostdevs({ config, host, libvirt });
    const refused = plan.vms.filter((v) => v.errors.length > 0);
    if (refused.length > 0 || plan.vms.some((v) => v.add.length === 0)) {
      throw new Error(`Bench plan is not clean: ${refused[0]?.errors[0]?.message ?? "no adds"}`);
    }
    Deno.bench({
      name: `planHostdevs() ${vms} VMs on ${functions} functions`,
      group: `${vms} VMs`,
      baseline: functions === 1024,
      fn: () => {
        planHostdevs({ config, host, libvirt });
      },
    });
  }
}

Deno.bench({
  name: "parseConfig() 100 VMs",
  fn: (() => {
    const host = topologyFromDescription(generateHost(1024), { source: "generated-1024" });
    const text = configText(host, 100);
    return () => {
      parseConfig(text, { file: "bench.yaml" });
    };
  })(),
});

{
  // The whole in-process path a `plan` run takes after startup: discovery of a 1,024-function
  // sysfs tree (without lspci, which is a separate process), then planning 100 VMs.
  const tree = `${dir}/sysfs-1024`;
  buildHostTree(generateHost(1024), tree);
  const config = parseConfig(
    configText(await discoverHost({ root: tree, lspci: null }), 100),
    { file: "bench.yaml" },
  );
  const libvirt = openLibvirtPort(`test://${dir}/world-100.xml`);
  ports.push(libvirt);
  Deno.bench({
    name: "discoverHost() + planHostdevs() 100 VMs on 1024 functions",
    fn: async () => {
      const host = await discoverHost({ root: tree, lspci: null });
      planHostdevs({ config, host, libvirt });
    },
  });
}
