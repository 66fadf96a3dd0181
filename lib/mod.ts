/**
 * passthrough as a library: discover a host's PCI devices and IOMMU groups, load a config, plan
 * `<hostdev>` changes for libvirt VMs, render diffs and apply them safely, from your own scripts.
 * Pair it with `ffi/mod.ts` for the libvirt connection (`openLibvirtPort`) and the live-`/sys`
 * reader (`libcSysfsReader`).
 *
 * @example The whole flow on a captured host and libvirt's test driver
 * ```ts
 * import { applyPlan, discoverHost, parseConfig, planHostdevs, renderDomainDiff } from "./mod.ts";
 * import { buildHostTree, loadHostDescription } from "./testing/mod.ts";
 * import { openLibvirtPort } from "../ffi/mod.ts";
 * import { assertEquals } from "../tests/helpers/assert.ts";
 *
 * const demo = new URL("../demo/", import.meta.url).pathname;
 * const tmp = Deno.makeTempDirSync();
 * buildHostTree(loadHostDescription(`${demo}host.json`), `${tmp}/sysfs`);
 * const host = await discoverHost({ root: `${tmp}/sysfs` });
 * const config = parseConfig(
 *   `version: 1\nvms:\n  win10:\n    devices:\n      - match: { vendor_device_id: "10de:1b80" }\n`,
 *   { file: "inline.yaml" },
 * );
 * using libvirt = openLibvirtPort(`test://${demo}world.xml`);
 *
 * const plan = planHostdevs({ config, host, libvirt });
 * const win10 = plan.vms[0]!;
 * assertEquals(win10.hostdevs, ["0000:21:00.0", "0000:21:00.1"]); // the GPU and its audio
 * console.log(renderDomainDiff(win10.currentXml, win10.desiredXml, { vm: "win10" }));
 *
 * const report = await applyPlan(plan, {
 *   libvirt,
 *   stateDir: `${tmp}/state`,
 *   confirm: (vm) => Promise.resolve(vm.name === "win10" ? "yes" : "no"),
 * });
 * assertEquals(report.changed, ["win10"]);
 * assertEquals(planHostdevs({ config, host, libvirt }).vms[0]!.changed, false);
 * Deno.removeSync(tmp, { recursive: true });
 * ```
 *
 * @module
 */

export * from "./pci/mod.ts";
export * from "./host/mod.ts";
export * from "./config/mod.ts";
export * from "./resolve/mod.ts";
export * from "./domain/mod.ts";
export * from "./render/mod.ts";
export * from "./plan/mod.ts";
export * from "./apply/mod.ts";
export * from "./state/mod.ts";
export * from "./guard/mod.ts";
