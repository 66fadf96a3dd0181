/**
 * `passthrough sources`: discovers the host twice, through sysfs + `lspci` and through libvirt's
 * node-device API, and reports where the two disagree. Only the first plans: libvirt cannot say
 * what the host itself uses (mounts, default route, console), so this is a check of libvirt's
 * view, never a way to plan.
 *
 * @module
 */

import type { Command } from "./context.ts";
import { compareTopologies, formatSourceDifference } from "../lib/host/source_compare.ts";
import { discoverViaLibvirt } from "../lib/host/nodedev.ts";
import { openNodeDeviceSource } from "../ffi/nodedev_source.ts";
import { loadHost } from "./host_options.ts";
import { parseFlags } from "./plan_options.ts";
import { painter } from "../lib/render/colors.ts";

const HELP = `Usage: passthrough sources [--sysfs DIR] [--connect URI] [--json]

Discovers PCI devices and IOMMU groups through sysfs + lspci and through libvirt's node-device
API (on the same host: a local URI), and lists every difference: devices missing on one side,
IOMMU groups, IDs, class, bridge flag, driver, SR-IOV links. libvirt does not report subsystem
IDs, slots, serials or FLR, so those are not compared; libvirt's test driver drops drivers.

Options:
      --sysfs DIR     read a captured sysfs tree instead of /sys
  -c, --connect URI   libvirt URI (default: $LIBVIRT_DEFAULT_URI or libvirt's default)
      --json          print { "sysfs", "libvirt", "differences": [...] }

Exit codes: 0 the sources agree, 1 they differ or one failed, 2 usage error.
`;

/** The `sources` command. */
export const sourcesCommand: Command = {
  name: "sources",
  summary: "compare sysfs/lspci discovery with libvirt's node-device API",
  help: HELP,
  async run(args, io) {
    const { values } = parseFlags(args, {
      sysfs: { type: "string" },
      connect: { type: "string", short: "c" },
      json: { type: "boolean", default: false },
    });
    const sysfs = await loadHost(values.sysfs);
    using source = openNodeDeviceSource(values.connect ?? null);
    const libvirt = discoverViaLibvirt(source);
    const differences = compareTopologies(sysfs, libvirt);
    if (values.json) {
      io.out(
        JSON.stringify({ sysfs: sysfs.source, libvirt: libvirt.source, differences }, null, 2) +
          "\n",
      );
      return differences.length === 0 ? 0 : 1;
    }
    const paint = painter(io.color);
    const labels = { a: "sysfs", b: "libvirt" };
    io.out(
      `sysfs (${sysfs.source}): ${sysfs.devices.length} functions, ${sysfs.groups.length} IOMMU groups\n` +
        `libvirt (${libvirt.source}): ${libvirt.devices.length} functions, ${libvirt.groups.length} IOMMU groups\n`,
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
  },
};
