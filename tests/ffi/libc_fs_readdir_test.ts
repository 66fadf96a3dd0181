/**
 * A directory listing that fails midway (`readdir` returns NULL with errno set, as glibc does
 * when `getdents` fails) is an error, not the end of the directory. The kernel gives such a
 * failure too rarely to provoke here (glibc already reads ENOENT, a directory removed or a
 * process gone, as the end), so real libc is called with the failure injected at `readdir`: after
 * the first entry, a real failed call (`close(-1)`, EBADF) leaves errno set, and NULL comes back.
 */

import { assertEquals, assertOk, assertRejects, assertThrows } from "../helpers/assert.ts";
import { libc } from "../../ffi/libc.ts";
import { LibcFsError, libcReaderOver, libcSysfsReader } from "../../ffi/libc_fs.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
import { described } from "../preflight/trees.ts";

/** libc with `readdir` failing (EBADF) after the first `entries` entries of each directory. */
function failingReaddir(entries: number): ReturnType<typeof libc> {
  const real = libc();
  const seen = new Map<Deno.PointerValue, number>();
  return Object.create(real, {
    readdir: {
      value: (dir: Deno.PointerValue) => {
        const count = seen.get(dir) ?? 0;
        seen.set(dir, count + 1);
        if (count < entries) return real.readdir(dir);
        assertEquals(real.close(-1), -1);
        return null;
      },
    },
  });
}

Deno.test("libcSysfsReader() throws for a directory listing that fails midway, never a part of it", () => {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-readdir-" });
  try {
    for (const name of ["a", "b", "c"]) Deno.writeTextFileSync(`${dir}/${name}`, "");
    const reader = libcReaderOver(failingReaddir(1));
    assertThrows(() => reader.listDir(dir), LibcFsError, `Cannot list directory "${dir}": errno 9`);
    assertThrows(() => reader.listEntries?.(dir), LibcFsError);
    // A listing that ends as directories end is read whole, with errno left set by an earlier
    // failed call.
    assertEquals(libc().close(-1), -1);
    assertEquals(libcSysfsReader().listDir(dir)?.sort(), ["a", "b", "c"]);
    assertEquals(libcSysfsReader().listDir(`${dir}/missing`), null);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("discoverHost() through libc refuses a host whose listings fail midway, not a host of fewer devices", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-readdir-host-" });
  try {
    buildHostTree(described("x570-aorus-pro-wifi"), dir);
    const whole = await discoverHost({ root: dir, reader: libcSysfsReader(), lspci: null });
    assertOk(whole.devices.length > 2);
    await assertRejects(
      () =>
        discoverHost({
          root: dir,
          reader: libcReaderOver(failingReaddir(3)),
          lspci: null,
        }),
      LibcFsError,
      "Cannot list directory",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
