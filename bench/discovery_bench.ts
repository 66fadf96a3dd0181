/**
 * In-process discovery on generated hosts of 256, 1,024 and 4,096 functions (sysfs trees from
 * `lib/host_generator.ts`, built once in a temp dir). Three variants per size:
 * - `sysfs (libc)`: the reader the CLI uses for `/sys`, no lspci;
 * - `sysfs (Deno fs)`: the reader for captured trees, no lspci;
 * - `sysfs + lspci`: the whole discovery, including the one `lspci -vvvnnkD` process.
 *
 * Run: `deno bench --allow-all bench/discovery_bench.ts`
 *
 * @module
 */

import { generateHost } from "../lib/host_generator.ts";
import { buildHostTree } from "../lib/host_tree.ts";
import { discoverHost } from "../lib/discovery.ts";
import { denoFsReader } from "../lib/sysfs.ts";
import { libcSysfsReader } from "../ffi/libc_fs.ts";

const SIZES = [256, 1024, 4096];
const base = Deno.makeTempDirSync({ prefix: "passthrough-bench-" });
globalThis.addEventListener("unload", () => Deno.removeSync(base, { recursive: true }));

const libc = libcSysfsReader();
const denoFs = denoFsReader();

for (const size of SIZES) {
  const root = `${base}/${size}`;
  buildHostTree(generateHost(size), root);
  Deno.bench({
    name: `discovery ${size} functions: sysfs (libc), no lspci`,
    group: `sysfs-${size}`,
    baseline: true,
    async fn() {
      await discoverHost({ root, reader: libc, lspci: null });
    },
  });
  Deno.bench({
    name: `discovery ${size} functions: sysfs (Deno fs), no lspci`,
    group: `sysfs-${size}`,
    async fn() {
      await discoverHost({ root, reader: denoFs, lspci: null });
    },
  });
  Deno.bench({
    name: `discovery ${size} functions: sysfs (libc) + one lspci -vvvnnkD`,
    group: `full-${size}`,
    async fn() {
      await discoverHost({ root, reader: libc });
    },
  });
}
