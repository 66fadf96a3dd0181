/**
 * How the in-process costs of one large input grow (issue 15: time at most linear in functions
 * and VMs). Each case runs at 1x, 2x, 4x and 8x one size, grouped, with 1x as the baseline, so
 * `deno bench` prints how many times slower each larger size is: about 2, 4 and 8 when linear.
 *
 * - `findGroupConflicts()`: N configured VMs taking one GPU that every one of them also holds in
 *   its definition now (a template cloned N times);
 * - `scanXml()`, which reads every domain `plan`, `apply` and the start guard read: a domain
 *   of N disks with no `&` in it;
 * - `renderDomainDiff()`: a domain whose `<description>` has N lines, with one hostdev added.
 *
 * Run: `deno bench --allow-all bench/scaling_bench.ts`
 *
 * @module
 */

import { findGroupConflicts, type GroupClaim } from "../lib/resolve/closure.ts";
import type { PciAddress } from "../lib/host/types.ts";
import { scanXml } from "../lib/domain/xml.ts";
import { renderDomainDiff } from "../lib/render/diff.ts";

/** `BENCH_SMOKE=1` (tests/cli/bench_smoke_test.ts): the smallest size only, to check the set-up. */
const SMOKE = Deno.env.get("BENCH_SMOKE") === "1";
const FACTORS = SMOKE ? [1] : [1, 2, 4, 8];

/** One bench per factor of `size`, in one group, the smallest the baseline. */
function scaling(what: string, size: number, prepare: (size: number) => () => void): void {
  for (const factor of FACTORS) {
    Deno.bench({
      name: `${what} ${size * factor}`,
      group: what,
      baseline: factor === 1,
      fn: prepare(size * factor),
    });
  }
}

const GPU = ["0000:01:00.0", "0000:01:00.1"] as PciAddress[];

scaling("findGroupConflicts() VMs sharing a GPU", 1000, (vms) => {
  const claims: GroupClaim[] = [];
  for (let i = 0; i < vms; i++) {
    const rules = [{ name: "gpu", location: `config.yaml:${i + 3}:7` }];
    claims.push({ vm: `vm${i}`, group: 1, addresses: GPU, matched: GPU, source: "config", rules });
    claims.push({ vm: `vm${i}`, group: 1, addresses: GPU, matched: GPU, source: "domain" });
  }
  return () => {
    findGroupConflicts(claims);
  };
});

scaling("scanXml() disks", 5000, (disks) => {
  const xml = `<domain type='kvm'>\n  <name>vm</name>\n  <devices>\n${
    Array.from({ length: disks }, (_, i) =>
      `    <disk type='file' device='disk'>\n      <source file='/var/lib/img/d${i}.qcow2'/>\n` +
      `      <target dev='vd${i}' bus='virtio'/>\n    </disk>\n`).join("")
  }  </devices>\n</domain>\n`;
  return () => {
    scanXml(xml);
  };
});

scaling("renderDomainDiff() description lines", 12_500, (lines) => {
  const before = `<domain type='kvm'>\n  <name>vm</name>\n  <description>${
    "line &amp; x\n".repeat(lines)
  }</description>\n  <devices>\n  </devices>\n</domain>\n`;
  const after = before.replace(
    "  </devices>",
    "    <hostdev mode='subsystem' type='pci' managed='yes'>\n      <source>\n" +
      "        <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>\n" +
      "      </source>\n    </hostdev>\n  </devices>",
  );
  return () => {
    renderDomainDiff(before, after, { vm: "vm" });
  };
});
