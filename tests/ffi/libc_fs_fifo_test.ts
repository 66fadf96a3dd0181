/**
 * A FIFO planted in a captured sysfs tree (a snapshot from an untrusted host, a bug report) must
 * not hang discovery: with lspci (which would block on it) the tree is refused before anything
 * opens it; without lspci the libc reader opens files non-blocking and reads past it.
 */

import { assertEquals } from "../helpers/assert.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { SysfsTreeError } from "../../lib/host/sysfs.ts";
import { assertRejects } from "../helpers/assert.ts";
import { libcSysfsReader } from "../../ffi/libc_fs.ts";

Deno.test("libcSysfsReader() reads a FIFO in place of a sysfs attribute without blocking", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-fifo-" });
  try {
    buildHostTree(
      loadHostDescription(new URL("../fixtures/hosts/supermicro-cfl.json", import.meta.url)),
      dir,
    );
    const device = `${dir}/bus/pci/devices/0000:01:00.0`;
    for (const name of ["numa_node", "boot_vga"]) {
      await Deno.remove(`${device}/${name}`).catch(() => {});
      const made = await new Deno.Command("mkfifo", { args: [`${device}/${name}`] }).output();
      assertEquals(made.code, 0);
    }
    const reader = libcSysfsReader();
    assertEquals(reader.readText(`${device}/numa_node`), "");
    // With lspci the tree is refused, naming the FIFO, before lspci could block on it.
    await assertRejects(() => discoverHost({ root: dir, reader }), SysfsTreeError, "FIFO");
    // Without lspci discovery finishes (a blocking open would hang the test until its timeout).
    const host = await discoverHost({ root: dir, reader, lspci: null });
    const nic = host.devices.find((d) => d.address === "0000:01:00.0");
    assertEquals(nic?.vendorId, "8086");
    assertEquals(nic?.numaNode, null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
