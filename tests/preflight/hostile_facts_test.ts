/**
 * A captured tree whose pre-flight files are hostile (a FIFO for `proc/iomem`, `/dev/zero` for
 * `proc/modules`, a FIFO for a `reset_method`) plans without hanging and without a finding made
 * up from them, through both readers the CLI uses.
 */

import { assertEquals } from "../helpers/assert.ts";
import { libcSysfsReader } from "../../ffi/libc_fs.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { readHostFacts } from "../../lib/host/preflight.ts";
import { denoFsReader, type SysfsReader } from "../../lib/host/sysfs.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
import { described, domain, planOn, QEMU_PASSWD, vm } from "./trees.ts";

const RULE =
  "vms:\n  win:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: 10de:1b06 }\n";

for (const [name, reader] of [["libc", libcSysfsReader()], ["deno", denoFsReader()]] as const) {
  Deno.test(`pre-flight facts from FIFOs and /dev/zero read as unknown (${name} reader)`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-preflight-hostile-" });
    try {
      buildHostTree(
        described("x570-aorus-pro-wifi", { devices: { "0000:0b:00.0": { boot_vga: true } } }),
        dir,
      );
      await Deno.mkdir(`${dir}/proc`);
      const fifo = (path: string) =>
        assertEquals(new Deno.Command("mkfifo", { args: [path] }).outputSync().success, true);
      fifo(`${dir}/proc/iomem`);
      await Deno.symlink("/dev/zero", `${dir}/proc/modules`);
      fifo(`${dir}/bus/pci/devices/0000:0b:00.0/reset_method`);
      const host = await discoverHost({ root: dir, lspci: null, vendorNames: () => null });
      const facts = readHostFacts({
        reader: reader as SysfsReader,
        sysRoot: dir,
        procRoot: `${dir}/proc`,
        passwd: () => QEMU_PASSWD,
      });
      const win = vm(planOn({ host, facts, dir }, RULE, { win: domain("win") }), "win");
      assertEquals([win.warnings.map((w) => w.code), win.errors], [[], []]);
      // Read at most once, bounded: /dev/zero's zeros are no module list.
      assertEquals(facts.modules()?.size ?? 0, 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
