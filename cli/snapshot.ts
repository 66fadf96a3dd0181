/**
 * `passthrough snapshot OUT`: captures this host's (or a `--sysfs` tree's) PCI/IOMMU topology
 * into a portable tree that `--sysfs OUT` reads back.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type CliIo, type Command, UsageError } from "./context.ts";
import { writeSnapshot } from "../lib/host/snapshot.ts";
import { LIVE_SYSFS, loadHost, readerFor } from "./host_options.ts";

const HELP = `Usage: passthrough snapshot [--sysfs DIR] OUT

Captures the PCI devices, IOMMU groups, kernel command line and host-use facts of this host
(or of a captured tree) into OUT, a sysfs-shaped tree: 'passthrough groups --sysfs OUT' then
shows the same host anywhere, e.g. to plan on another machine or to attach to a bug report.

Options:
  --sysfs DIR   Read a captured sysfs tree instead of /sys
  -h, --help    Show this help
`;

/** The `snapshot` command. */
export const snapshotCommand: Command = {
  name: "snapshot",
  summary: "capture the host's PCI/IOMMU topology into a portable tree",
  help: HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    let parsed;
    try {
      parsed = parseArgs({
        args,
        options: { sysfs: { type: "string" } },
        strict: true,
        allowPositionals: true,
      });
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
    const [out, ...extra] = parsed.positionals;
    if (out === undefined) throw new UsageError("Missing the output directory");
    if (extra.length > 0) throw new UsageError(`Unexpected argument "${extra[0]}"`);
    const root = parsed.values.sysfs ?? LIVE_SYSFS;
    const host = await loadHost(root);
    const summary = writeSnapshot(host, out, { root, reader: readerFor(root) });
    io.out(
      `Wrote ${summary.devices} devices in ${summary.groups} IOMMU groups from ${root} to ${out}\n`,
    );
    return 0;
  },
};
