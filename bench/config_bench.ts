/**
 * Config loading cost: `parseConfig()` (YAML parsing with source positions, schema validation,
 * normalisation) on generated configs of 500, 2,000 and 8,000 VMs, built in-process. Each VM has
 * 2 or 3 rules naming devices the ways users do: IDs with subsystem IDs and a driver, a class with
 * a slot, a serial, a NUMA node, an address, options (`rom`, `count`, `boot_order`, ...), and
 * every fourth VM reuses an anchored rule through a YAML alias. Target: linear in VMs, so in the
 * summary 2,000 VMs take about 4x and 8,000 about 16x the time of 500.
 *
 * Run: `deno bench --allow-all bench/config_bench.ts`
 *
 * @module
 */

import { parseConfig } from "../lib/config/config.ts";

/** `BENCH_SMOKE=1` (tests/cli/bench_smoke_test.ts): the smallest size only, to check the set-up. */
const SMOKE = Deno.env.get("BENCH_SMOKE") === "1";
const VMS = SMOKE ? [500] : [500, 2000, 8000];

/** `i` as `digits` lower-case hex digits. */
function hex(i: number, digits: number): string {
  return (i % 16 ** digits).toString(16).padStart(digits, "0");
}

/** A config of `vms` VMs, each with 2 or 3 rules of varied match keys, and its number of rules. */
function generateConfig(vms: number): { text: string; rules: number } {
  const lines = ["version: 1", "vms:"];
  let rules = 0;
  for (let i = 0; i < vms; i++) {
    lines.push(
      `  vm-${i}:`,
      "    devices:",
      "      - name: gpu",
      "        match:",
      `          vendor_device_id: "10de:${hex(i, 4)}"`,
      '          subsystem_vendor_id: "0x1043"',
      `          subsystem_device_id: "${hex(i * 7, 4)}"`,
      "          driver: nvidia",
      "        multifunction: true",
      '        rom: { bar: "off" }',
    );
    switch (i % 4) {
      case 0:
        // The first VM defines the rule the others reuse with `*audio`.
        lines.push(
          i === 0 ? "      - &audio" : "      -",
          "        name: audio",
          `        match: { class: audio, slot: "${i % 16}" }`,
        );
        break;
      case 1:
        lines.push(
          `      - match: { class: nvme, serial: "00-11-22-ff-ff-33-${hex(i >> 8, 2)}-${
            hex(i, 2)
          }" }`,
          "        boot_order: 1",
        );
        break;
      case 2:
        lines.push(
          '      - match: { vendor_id: "8086", device_id: "1521", numa_node: 0 }',
          "        count: 2",
          "        allow_no_flr: true",
        );
        break;
      case 3:
        lines.push("      - *audio");
        break;
    }
    rules += 2;
    if (i % 3 === 2) continue;
    rules++;
    if (i % 2 === 0) {
      lines.push(
        `      - match: { address: "0000:${hex(i >> 5, 2)}:${hex(i & 31, 2)}.0" }`,
        "        allow_host_critical: true",
      );
    } else {
      lines.push(
        '      - match: { class: wifi, vendor_id: "168c" }',
        "        managed: false",
        "        iommu_group: false",
      );
    }
  }
  return { text: lines.join("\n") + "\n", rules };
}

for (const vms of VMS) {
  const { text, rules: expected } = generateConfig(vms);
  // Sanity: every VM and rule must come out, or the timing measures an error path.
  const config = parseConfig(text, { file: "bench.yaml" });
  const rules = config.vms.reduce((sum, vm) => sum + vm.rules.length, 0);
  if (config.vms.length !== vms || rules !== expected) {
    throw new Error(`Bench config has ${config.vms.length} VMs and ${rules} rules`);
  }
  Deno.bench({
    name: `parseConfig() ${vms} VMs (${Math.round(text.length / 1024)} KiB)`,
    group: "parseConfig",
    baseline: vms === VMS[0],
    fn: () => {
      parseConfig(text, { file: "bench.yaml" });
    },
  });
}
