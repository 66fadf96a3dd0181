/**
 * The `--sysfs DIR` option shared by `devices`, `groups`, `snapshot` and `doctor`, and how a
 * command turns it into a discovered {@link HostTopology}.
 *
 * @module
 */

import type { HostTopology } from "../lib/host/types.ts";
import { discoverHost } from "../lib/host/discover.ts";
import { denoFsReader, type SysfsReader } from "../lib/host/sysfs.ts";
import { libcSysfsReader } from "../ffi/libc_fs.ts";

/** The real sysfs root. */
export const LIVE_SYSFS = "/sys";

/**
 * The reader for `root`: libc (Deno refuses `/sys` and `/proc` without `--allow-all`, and libc
 * is twice as fast on trees too). A captured tree falls back to plain Deno reads when FFI is
 * not permitted, since `--allow-read` suffices there.
 */
export function readerFor(root: string): SysfsReader {
  if (isLiveRoot(root)) return libcSysfsReader();
  try {
    return libcSysfsReader();
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
      return denoFsReader();
    }
    throw error;
  }
}

/** Whether `root` is this host's own sysfs. */
export function isLiveRoot(root: string): boolean {
  return root.replace(/(.)\/+$/, "$1") === LIVE_SYSFS;
}

/** Options of {@link loadHost}. */
export interface LoadHostOptions {
  /**
   * Split lspci's names into vendor and device with `pci.ids` (default `true`). `plan` and
   * `apply` print no device names, so they skip reading the file.
   */
  vendorNames?: boolean;
}

/** Discovers the host at `root` (default `/sys`) with the reader that suits it. */
export function loadHost(
  root: string | undefined,
  options: LoadHostOptions = {},
): Promise<HostTopology> {
  const sysfs = root ?? LIVE_SYSFS;
  return discoverHost({
    root: sysfs,
    reader: readerFor(sysfs),
    live: isLiveRoot(sysfs),
    ...(options.vendorNames === false ? { vendorNames: () => null } : {}),
  });
}
