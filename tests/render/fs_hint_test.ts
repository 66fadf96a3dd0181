/** `lib/render/fs_hint.ts`: what a file system's refusal says to do, from data alone. */

import { assertEquals } from "../helpers/assert.ts";
import { fileSystemHint } from "../../lib/render/fs_hint.ts";
import { realPathOfExisting } from "../../lib/state/paths.ts";

Deno.test("fileSystemHint() reads no file system: a link in the path leads elsewhere only through realPath", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-fs-hint-" });
  try {
    Deno.mkdirSync(`${dir}/ro`);
    Deno.symlinkSync(`${dir}/ro`, `${dir}/link`);
    const error = new Error(`Read-only file system (os error 30): open '${dir}/link/.probe-1'`);
    const mountInfo = `36 1 8:1 / ${dir}/link rw - ext4 /dev/sda1 rw\n` +
      `37 1 8:2 / ${dir}/ro ro - ext4 /dev/sda2 ro\n`;
    // The mount the data names for the path as written, whatever this host has at that path.
    assertEquals(
      fileSystemHint(error, mountInfo),
      `on the read-only mount "${dir}/link": make it writable ("mount -o remount,rw ${dir}/link"), or use a directory elsewhere`,
    );
    assertEquals(
      fileSystemHint(error, mountInfo, { realPath: realPathOfExisting }),
      `on the read-only mount "${dir}/ro": make it writable ("mount -o remount,rw ${dir}/ro"), or use a directory elsewhere`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
