/**
 * `passthrough sources`: discovers the host twice, through sysfs + `lspci` and through libvirt's
 * node-device API, and reports where the two disagree. Only the first plans: libvirt cannot say
 * what the host itself uses (mounts, default route, console), so this is a check of libvirt's
 * view, never a way to plan.
 *
 * @module
 */

import type { CliIo } from "./context.ts";
import type { Parsed } from "./flags.ts";
import type { SOURCES } from "./specs.ts";
import { compareTopologies, formatSourceDifference } from "../lib/host/source_compare.ts";
import { discoverViaLibvirt } from "../lib/host/nodedev.ts";
import { openNodeDeviceSource } from "../ffi/nodedev_source.ts";
import { loadHost } from "./host_options.ts";
import { connectTarget } from "./connect.ts";
import { painter } from "../lib/render/colors.ts";
import { redactSecrets } from "../lib/domain/secrets.ts";
import { redactedJson } from "../lib/render/redact.ts";

/** Runs `passthrough sources`: exit 0 when the two discoveries agree, 1 when they differ. */
export async function run({ values }: Parsed<typeof SOURCES>, io: CliIo): Promise<number> {
  const target = connectTarget(values, io, "sources");
  const sysfs = await loadHost(values.sysfs);
  using source = openNodeDeviceSource(target.uri, target.options);
  const libvirt = discoverViaLibvirt(source);
  const differences = compareTopologies(sysfs, libvirt);
  // libvirt's source is the URI as libvirt gives it back, a password written into it included.
  if (values.json) {
    io.out(redactedJson({ sysfs: sysfs.source, libvirt: libvirt.source, differences }));
    return differences.length === 0 ? 0 : 1;
  }
  const paint = painter(io.color);
  const labels = { a: "sysfs", b: "libvirt" };
  io.out(
    `sysfs (${sysfs.source}): ${sysfs.devices.length} functions, ${sysfs.groups.length} IOMMU groups\n` +
      redactSecrets(
        `libvirt (${libvirt.source}): ${libvirt.devices.length} functions, ${libvirt.groups.length} IOMMU groups\n`,
      ),
  );
  if (differences.length === 0) {
    io.out(paint("green", "The two sources agree\n"));
    return 0;
  }
  for (const difference of differences) {
    io.out(`  ${formatSourceDifference(difference, labels)}\n`);
  }
  io.out(paint("yellow", `${differences.length} differences\n`));
  return 1;
}
