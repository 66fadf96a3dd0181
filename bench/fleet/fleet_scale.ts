// Fleet scale measurement (not a test): N private real libvirtd daemons x M qemu VMs, sysfs trees
// from a generated host, apply then plan through bin/passthrough at each --parallel given.
//   deno run -A bench/fleet/fleet_scale.ts N M PARALLEL...   (LATENCY=CONNECT_S,RTT_S adds a proxy)
import { startLibvirtd } from "../../tests/helpers/libvirtd.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { generateHost } from "../../lib/testing/host_generator.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
const n = Number(Deno.args[0]), m = Number(Deno.args[1]);
const dir = Deno.makeTempDirSync({ prefix: "fleet-scale-" });
const desc = generateHost(m * 6 + 40, { vfsPerNic: 2 });
const cards = [
  ...desc.devices.filter((d) => d.class === "0x010802"),
  ...desc.devices.filter((d) => d.class === "0x030000"),
].map((d) => d.bdf);
buildHostTree(desc, `${dir}/sysfs`);
const daemons = await Promise.all(Array.from({ length: n }, () => startLibvirtd()));
let yaml = "version: 1\nhosts:\n";
daemons.forEach((d, i) => {
  using port = openLibvirtPort(d.uri);
  for (let v = 0; v < m; v++) {
    port.define(
      `<domain type='qemu'><name>vm${v}</name><memory unit='MiB'>64</memory><os><type arch='x86_64' machine='pc'>hvm</type></os></domain>`,
    );
  }
  const latency = Deno.env.get("LATENCY");
  if (latency) {
    const [connect, rtt] = latency.split(",");
    const script = `${dir}/proxy${i}.sh`;
    Deno.writeTextFileSync(
      script,
      `#!/bin/sh\nexec /usr/bin/python3 ${
        new URL("slow_proxy.py", import.meta.url).pathname
      } ${d.dir}/libvirt-sock ${connect} ${rtt}\n`,
    );
    Deno.chmodSync(script, 0o755);
    yaml += `  h${i}: { connect: "qemu+ext:///system?command=${script}", sysfs: sysfs }\n`;
  } else {
    yaml += `  h${i}: { connect: "${d.uri}", sysfs: sysfs }\n`;
  }
});
yaml += "vms:\n" +
  Array.from(
    { length: m },
    (_, v) => `  vm${v}: { devices: [{ match: { address: "${cards[v]}" } }] }\n`,
  ).join("");
Deno.writeTextFileSync(`${dir}/fleet.yaml`, yaml);
async function time(args: string[]) {
  const t0 = performance.now();
  const out = await new Deno.Command(new URL("../../bin/passthrough", import.meta.url).pathname, {
    args,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  return [Math.round(performance.now() - t0), out.code] as const;
}
for (const p of Deno.args.slice(2)) {
  // Each round: apply (adds), plan (no changes), then reset by redefining without hostdevs.
  const apply = await time([
    "apply",
    "--yes",
    "--json",
    "-f",
    `${dir}/fleet.yaml`,
    "--state-dir",
    `${dir}/state${p}`,
    "--parallel",
    p,
  ]);
  const plan = await time([
    "plan",
    "--json",
    "--detailed-exitcode",
    "-f",
    `${dir}/fleet.yaml`,
    "--parallel",
    p,
  ]);
  console.log(
    `${n} hosts x ${m} VMs, --parallel ${p}: apply ${apply[0]} ms (exit ${apply[1]}), plan after ${
      plan[0]
    } ms (exit ${plan[1]})`,
  );
  for (const d of daemons) {
    using port = openLibvirtPort(d.uri);
    for (let v = 0; v < m; v++) {
      port.define(
        `<domain type='qemu'><name>vm${v}</name><uuid>${
          port.listDomains().find((x) => x.name === `vm${v}`)!.uuid
        }</uuid><memory unit='MiB'>64</memory><os><type arch='x86_64' machine='pc'>hvm</type></os></domain>`,
      );
    }
  }
}
await Promise.all(daemons.map((d) => d.stop()));
Deno.removeSync(dir, { recursive: true });
