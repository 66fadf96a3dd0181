/**
 * `passthrough snapshot OUT`: captures this host's (or a `--sysfs` tree's) PCI/IOMMU topology
 * into a portable tree that `--sysfs OUT` reads back.
 *
 * @module
 */

import type { CliIo } from "./context.ts";
import type { Parsed } from "./flags.ts";
import type { SNAPSHOT } from "./specs.ts";
import { writeSnapshot } from "../lib/host/snapshot.ts";
import { isLiveRoot, LIVE_SYSFS, loadHost, readerFor } from "./host_options.ts";

/** Runs `passthrough snapshot OUT`. */
export async function run(
  { values, positionals: [out] }: Parsed<typeof SNAPSHOT>,
  io: CliIo,
): Promise<number> {
  const root = values.sysfs ?? LIVE_SYSFS;
  const host = await loadHost(root);
  // The live host spelled otherwise (`//sys`, a link to it) has its pre-flight files in `/proc`.
  const summary = writeSnapshot(host, out, {
    root,
    reader: readerFor(root),
    live: isLiveRoot(root),
  });
  io.out(
    `Wrote ${summary.devices} devices in ${summary.groups} IOMMU groups from ${root} to ${out}\n`,
  );
  if (isLiveRoot(root) && summary.headerOnly > 0) {
    // A plan of the snapshot elsewhere would match no `serial:` rule on those devices, silently.
    io.err(
      `Note: the configuration space of ${summary.headerOnly} of them could be read only up to its 64-byte header (the kernel shows the rest to root alone): their serial numbers and reset (FLR) capability are unknown to a plan of this snapshot; run snapshot as root to capture them\n`,
    );
  }
  return 0;
}
