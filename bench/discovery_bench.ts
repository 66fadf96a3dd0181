/**
 * In-process discovery on generated hosts of 256, 1,024 and 4,096 functions (sysfs trees from
 * `lib/testing/host_generator.ts`, built once in a temp dir). Per size:
 * - `sysfs (libc)`: the reader the CLI uses for `/sys` and trees, no lspci (target at 1,024
 *   functions: under 30 ms);
 * - `sysfs (Deno fs)`: the fallback reader for trees when FFI is not permitted, no lspci;
 * - `reads only (libc)`: the same files and links read per device with no parsing at all, the
 *   floor the syscalls set on this machine;
 * - `sysfs + lspci`: the whole discovery, including the one `lspci -nnkD` process it overlaps.
 *
 * And on this machine's own `/sys` (its few real devices): discovery reading each `config` at
 * the offsets the capability walk visits, against reading every `config` whole (4 KiB, one
 * configuration cycle per 4 bytes).
 *
 * Run: `deno bench --allow-all bench/discovery_bench.ts`
 *
 * @module
 */

import { generateHost } from "../lib/testing/host_generator.ts";
import { buildHostTree } from "../lib/testing/host_tree.ts";
import { discoverHost } from "../lib/host/discover.ts";
import { denoFsReader, type SysfsReader } from "../lib/host/sysfs.ts";
import { bufferConfigReader } from "../lib/pci/config_space.ts";
import { libcSysfsReader } from "../ffi/libc_fs.ts";

/** `BENCH_SMOKE=1` (tests/cli/bench_smoke_test.ts): the smallest size only, to check the set-up. */
const SMOKE = Deno.env.get("BENCH_SMOKE") === "1";
const SIZES = SMOKE ? [256] : [256, 1024, 4096];
const base = Deno.makeTempDirSync({ prefix: "passthrough-bench-" });
globalThis.addEventListener("unload", () => Deno.removeSync(base, { recursive: true }));

const libc = libcSysfsReader();
const denoFs = denoFsReader();

for (const size of SIZES) buildHostTree(generateHost(size), `${base}/${size}`);
// Flush the trees just written: otherwise the kernel's writeback of thousands of new files runs
// during the first measurements, and they time the fixture's creation as much as discovery.
new Deno.Command("sync").outputSync();

for (const size of SIZES) {
  const root = `${base}/${size}`;
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
    name: `discovery ${size} functions: reads only (libc), no parsing`,
    group: `sysfs-${size}`,
    fn() {
      for (const name of libc.listDir(`${root}/bus/pci/devices`) ?? []) {
        const dir = `${root}/bus/pci/devices/${name}`;
        libc.readText(`${dir}/uevent`);
        libc.readBytes(`${dir}/config`, 4096);
        libc.readLink(`${dir}/iommu_group`);
        libc.readText(`${dir}/numa_node`);
        libc.readLink(`${dir}/physfn`);
        libc.readText(`${dir}/modules`);
      }
    },
  });
  Deno.bench({
    name: `discovery ${size} functions: sysfs (libc) + one lspci -nnkD`,
    group: `full-${size}`,
    async fn() {
      await discoverHost({ root, reader: libc });
    },
  });
}

/** The libc reader with an `openFile` that reads the whole file: each `config` is read whole. */
const wholeConfig: SysfsReader = {
  ...libc,
  openFile(path) {
    const bytes = libc.readBytes(path, 4096);
    return bytes === null ? null : { readAt: bufferConfigReader(bytes), [Symbol.dispose]() {} };
  },
};
const liveFunctions = libc.listDir("/sys/bus/pci/devices")?.length ?? 0;
Deno.bench({
  name: `discovery of this host's /sys (${liveFunctions} functions): config read by offset`,
  group: "live-sys",
  baseline: true,
  ignore: liveFunctions === 0,
  async fn() {
    await discoverHost({ reader: libc, lspci: null });
  },
});
Deno.bench({
  name: `discovery of this host's /sys (${liveFunctions} functions): config read whole`,
  group: "live-sys",
  ignore: liveFunctions === 0,
  async fn() {
    await discoverHost({ reader: wholeConfig, lspci: null });
  },
});
