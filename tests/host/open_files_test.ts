/**
 * `openBy`: which processes hold device nodes open, from a `/proc` of its own whose `fd` links
 * lead to this machine's real `/dev/null` (1:3) and `/dev/zero` (1:5), so each descriptor has a
 * real device number. Each rule of the number-or-path choice is tried alone, and a process that
 * vanishes between two reads.
 */

import { assertEquals } from "../helpers/assert.ts";
import { openBy } from "../../lib/host/open_files.ts";
import { denoFsReader, type SysfsReader } from "../../lib/host/sysfs.ts";

/** A `/proc` with process 812 (`Xorg`) holding `/dev/null` open; `run` gets its directory. */
async function withProc<T>(run: (proc: string) => T): Promise<T> {
  const proc = await Deno.makeTempDir({ prefix: "passthrough-open-files-" });
  try {
    Deno.mkdirSync(`${proc}/812/fd`, { recursive: true });
    Deno.writeTextFileSync(`${proc}/812/comm`, "Xorg\n");
    Deno.symlinkSync("/dev/null", `${proc}/812/fd/3`);
    return run(proc);
  } finally {
    await Deno.remove(proc, { recursive: true });
  }
}

/** Another GPU's node, asked with it, so that descriptors are looked at by number. */
const CARD9 = { path: "/dev/dri/card9", number: "226:9" };

Deno.test("openBy(): a path whose device number is another node's is not that node; a node of no known number counts by path", async () => {
  await withProc((proc) => {
    const held = (node: { path: string; number: string | null }) => [
      ...openBy(denoFsReader(), proc, [node, CARD9]),
    ];
    // A container's /dev/null that is /dev/zero on the host (1:5): the held file is 1:3.
    assertEquals(held({ path: "/dev/null", number: "1:5" }), []);
    assertEquals(held({ path: "/dev/null", number: "1:3" }), [
      ["/dev/null", [{ pid: 812, command: "Xorg" }]],
    ]);
    // The node's own number unknown (its `dev` attribute unreadable): its path decides.
    assertEquals(held({ path: "/dev/null", number: null }), [
      ["/dev/null", [{ pid: 812, command: "Xorg" }]],
    ]);
  });
});

Deno.test("openBy(): a descriptor closed, or a process gone, between two reads is judged by what is left", async () => {
  await withProc((proc) => {
    const reader = denoFsReader();
    // The descriptor closed before its `stat`: the path it showed still names the node.
    const closed: SysfsReader = {
      ...reader,
      deviceNumber: () => {
        throw new Deno.errors.NotFound("closed meanwhile");
      },
    };
    const node = { path: "/dev/null", number: "1:3" };
    assertEquals([...openBy(closed, proc, [node, CARD9])], [
      ["/dev/null", [{ pid: 812, command: "Xorg" }]],
    ]);
    // The process exited before its name was read: still listed, with no name.
    const exited: SysfsReader = {
      ...reader,
      readText: (path, ...rest) => {
        if (path.endsWith("/comm")) throw new Deno.errors.NotFound("exited meanwhile");
        return reader.readText(path, ...rest);
      },
    };
    assertEquals([...openBy(exited, proc, [node])], [["/dev/null", [{ pid: 812, command: "" }]]]);
  });
});
