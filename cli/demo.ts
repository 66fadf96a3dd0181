/**
 * `passthrough demo`: the main job end to end on embedded data, on any machine. It builds a
 * sysfs tree of a real host (`demo/host.json`, an ASRock TRX40 Creator's published IOMMU
 * listing) in a temporary directory, opens libvirt's test driver on `demo/world.xml`, plans
 * `demo/passthrough_config.yaml`, applies with backups into a temporary state directory, and
 * plans again to show that nothing is left to do.
 *
 * Everything runs in one process on one connection: the test driver keeps its state per
 * connection, so a second process would not see the applied change.
 *
 * @module
 */

import { buildHostTree, loadHostDescription } from "../lib/testing/host_tree.ts";
import { loadConfig } from "../lib/config/config.ts";
import { planHostdevs } from "../lib/plan/plan.ts";
import { applyPlan } from "../lib/apply/apply.ts";
import { openLibvirtPort } from "../ffi/port.ts";
import type { CliIo } from "./context.ts";
import type { Parsed } from "./flags.ts";
import type { DEMO } from "./specs.ts";
import { loadHost } from "./host_options.ts";
import { renderPlan } from "./render_plan.ts";
import { renderApplyReport } from "./render_apply.ts";
import { painter } from "../lib/render/colors.ts";
import { errorText } from "../lib/render/error_text.ts";
import { flagWord, shellWord } from "../lib/render/shell.ts";

// Embedded at build time rather than read from `../demo/` beside this module, so the one-file
// `deno bundle` output runs the demo from anywhere (Ansible copies it alone to each host).
import hostJson from "../demo/host.json" with { type: "text" };
import worldXml from "../demo/world.xml" with { type: "text" };
import configYaml from "../demo/passthrough_config.yaml" with { type: "text" };
import refusedYaml from "../demo/refused_config.yaml" with { type: "text" };

/** Writes the embedded demo files into `dir` (the libvirt test driver and config loader read paths). */
function writeDemoFiles(dir: string): void {
  Deno.mkdirSync(dir, { recursive: true });
  Deno.writeTextFileSync(`${dir}/host.json`, hostJson);
  Deno.writeTextFileSync(`${dir}/world.xml`, worldXml);
  Deno.writeTextFileSync(`${dir}/passthrough_config.yaml`, configYaml);
  Deno.writeTextFileSync(`${dir}/refused_config.yaml`, refusedYaml);
}

/**
 * What `--keep` prints: where the demo is, and the commands that look at it. Each process opens
 * the test driver's world afresh from `world.xml`, so a plan there shows the changes again.
 */
function keptNote(tmp: string): string {
  const options = flagWord("--sysfs", `${tmp}/sysfs`);
  const config = flagWord("--config", `${tmp}/demo/passthrough_config.yaml`);
  const world = flagWord("--connect", testDriverUri(`${tmp}/demo/world.xml`));
  const program = wrapperBeside(Deno.mainModule) ?? "passthrough";
  return [
    "",
    `Kept ${shellWord(tmp)}; look at it with:`,
    `  ${program} groups ${options}`,
    `  ${program} devices ${options}`,
    `  ${program} plan ${options} ${config} ${world}`,
    "(libvirt's test driver reads world.xml again in each process: the apply above is not in it)",
    "",
  ].join("\n");
}

/**
 * The clone's `bin/passthrough`, shell-quoted, when `main` (`Deno.mainModule`) is its `main.ts` or
 * the bundle `setup.sh` built (`dist/bin/main.js`): the README's first run (`bin/passthrough demo
 * --keep`) comes before `passthrough` is on PATH, where the commands printed would not be found.
 * `null` elsewhere (a bundle copied alone to a host), where `passthrough` is the name to use.
 */
function wrapperBeside(main: string): string | null {
  if (!main.startsWith("file:")) return null;
  const path = decodeURIComponent(new URL(main).pathname);
  const root = path.endsWith("/dist/bin/main.js")
    ? path.slice(0, -"/dist/bin/main.js".length)
    : path.slice(0, path.lastIndexOf("/"));
  try {
    return Deno.statSync(`${root}/bin/passthrough`).isFile
      ? shellWord(`${root}/bin/passthrough`)
      : null;
  } catch {
    return null;
  }
}

/**
 * `test://PATH` with each path segment percent-encoded: libvirt cannot parse a URI holding a space
 * (a `$TMPDIR` such as `/tmp/my dir`), and decodes `%20` back to the file's name.
 */
function testDriverUri(path: string): string {
  return `test://${path.split("/").map(encodeURIComponent).join("/")}`;
}

/** Runs `passthrough demo`: exit 0 when every step did what the demo shows. */
export async function run({ values }: Parsed<typeof DEMO>, io: CliIo): Promise<number> {
  const paint = painter(io.color);
  const step = (text: string) => io.out(`\n${paint("cyan", `==> ${text}`)}\n\n`);
  let tmp: string;
  try {
    tmp = await Deno.makeTempDir({ prefix: "passthrough-demo-" });
  } catch (error) {
    // Deno's message names no directory ("...: tmpdir"): it is $TMPDIR's, else /tmp.
    throw new Error(
      `Cannot create the demo's directory in $TMPDIR (else /tmp): ${
        errorText(error)
      }: set TMPDIR to a writable directory, or unset it`,
      { cause: error },
    );
  }
  try {
    const sysfs = `${tmp}/sysfs`;
    const stateDir = `${tmp}/state`;
    const demoDir = `${tmp}/demo`;
    writeDemoFiles(demoDir);
    const description = loadHostDescription(`${demoDir}/host.json`);
    buildHostTree(description, sysfs);
    const worldPath = `${demoDir}/world.xml`;
    const configPath = `${demoDir}/passthrough_config.yaml`;
    step(
      `Host: ${description.devices.length} PCI functions of a real ASRock TRX40 Creator, as a sysfs tree`,
    );
    const host = await loadHost(sysfs);
    io.out(
      `${host.devices.length} functions, ${host.groups.length} IOMMU groups, ` +
        `${
          host.devices.filter((d) => d.isBridge).length
        } bridges (read back with lspci from ${sysfs})\n`,
    );
    const config = await loadConfig(configPath);
    using libvirt = openLibvirtPort(testDriverUri(worldPath));

    step(
      "passthrough plan --sysfs .../sysfs --config .../demo/passthrough_config.yaml " +
        "--connect test://.../demo/world.xml",
    );
    const plan = planHostdevs({ config, host, libvirt });
    io.out(renderPlan(plan, { color: io.color }));

    step("passthrough apply --yes");
    const report = await applyPlan(plan, {
      libvirt,
      stateDir,
      confirm: () => Promise.resolve("yes"),
    });
    io.out(renderApplyReport(report, { color: io.color }));

    step("passthrough plan (again)");
    const again = planHostdevs({ config, host, libvirt });
    io.out(renderPlan(again, { color: io.color }));

    step("passthrough plan --config demo/refused_config.yaml (what is refused, and why)");
    const refusedConfig = await loadConfig(`${demoDir}/refused_config.yaml`);
    const refused = planHostdevs({ config: refusedConfig, host, libvirt });
    io.out(renderPlan(refused, { color: io.color }));
    const refusedCodes = [...new Set(refused.vms.flatMap((vm) => vm.errors.map((e) => e.code)))]
      .sort();
    if (values.keep) io.out(keptNote(tmp));
    const expected = ["ambiguous", "group-shared-with-other-vm"];
    return report.ok && again.vms.every((vm) => !vm.changed) &&
        JSON.stringify(refusedCodes) === JSON.stringify(expected)
      ? 0
      : 1;
  } finally {
    if (!values.keep) await Deno.remove(tmp, { recursive: true });
  }
}
