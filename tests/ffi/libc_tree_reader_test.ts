/**
 * The captured-tree reader that the kernel keeps inside the tree (`libcTreeReader`, openat2 with
 * `RESOLVE_BENEATH`): what leads out is refused by the kernel and named by the confined reader,
 * what stays in is read without a link check, as the confined reader alone reads it.
 */

import { assertEquals, assertOk, assertThrows } from "../helpers/assert.ts";
import { confinedReader, type SysfsReader, SysfsTreeError } from "../../lib/host/sysfs.ts";
import { libcSysfsReader, libcTreeReader } from "../../ffi/libc_fs.ts";
import { demoTree } from "../helpers/reliability.ts";
import { runCli } from "../helpers/cli.ts";

/** A tree at `ROOT/tree` with a secret beside it, and links in and out of it. */
function hostileTree(dir: string): string {
  const root = `${dir}/tree`;
  Deno.mkdirSync(`${root}/a/b`, { recursive: true });
  Deno.mkdirSync(`${dir}/outside`);
  Deno.writeTextFileSync(`${dir}/secret`, "root:x:0:0\n");
  Deno.writeTextFileSync(`${dir}/outside/config`, "outside\n");
  Deno.symlinkSync("/etc/passwd", `${dir}/outside/link`);
  Deno.writeTextFileSync(`${root}/a/b/file`, "inside\n");
  Deno.writeTextFileSync(`${root}/file`, "inside\n");
  const links: [string, string][] = [
    ["in", "a/b"],
    ["chain", "in/file"],
    ["up", "in/../../file"],
    ["out", "in/../../../secret"],
    ["back", "../tree/file"], // out and back in: the kernel refuses it, the check reads it
    ["absolute", `${root}/a/b/file`], // inside, though the kernel refuses any absolute link
    ["absoluteOut", `${dir}/secret`],
    ["dev", "../outside"],
    ["loop1", "loop2/file"],
    ["loop2", "loop1"],
    ["dangling", "missing/file"],
  ];
  for (const [name, target] of links) Deno.symlinkSync(target, `${root}/${name}`);
  return root;
}

/** `reader` with each call it gets counted by method name. */
function counted(reader: SysfsReader, calls: Map<string, number>): SysfsReader {
  const wrapped: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(reader)) {
    wrapped[name] = (...args: unknown[]) => {
      calls.set(name, (calls.get(name) ?? 0) + 1);
      return (method as (...a: unknown[]) => unknown)(...args);
    };
  }
  return wrapped as unknown as SysfsReader;
}

/** What a read gives: its value, `refused` for a `SysfsTreeError`, or the other error's name. */
function outcome(read: () => unknown): unknown {
  try {
    return read();
  } catch (error) {
    return error instanceof SysfsTreeError ? "refused" : (error as Error).name;
  }
}

Deno.test("libcTreeReader() refuses in the kernel what leads out of the tree, naming the link, and reads the rest as the confined reader does", () => {
  const dir = Deno.realPathSync(Deno.makeTempDirSync());
  try {
    const root = hostileTree(dir);
    const calls = new Map<string, number>();
    const confined = confinedReader(libcSysfsReader(), root);
    const reader = libcTreeReader(root, counted(confinedReader(libcSysfsReader(), root), calls));
    assertOk(reader !== null, "openat2 is missing on this kernel");
    const reads: [string, (r: SysfsReader) => unknown][] = [
      ["readText", (r) => r.readText(`${root}/file`)],
      ["readText in/file", (r) => r.readText(`${root}/in/file`)],
      ["readBytes chain", (r) => r.readBytes(`${root}/chain`, 4)],
      ["readText up", (r) => r.readText(`${root}/up`)],
      ["listDir in", (r) => r.listDir(`${root}/in`)],
      ["listEntries a", (r) => r.listEntries!(`${root}/a`)],
      ["readLink in", (r) => r.readLink(`${root}/in`)],
      ["readLink absoluteOut", (r) => r.readLink(`${root}/absoluteOut`)],
      ["readLink of a file", (r) => r.readLink(`${root}/file`)],
      ["readText missing", (r) => r.readText(`${root}/a/missing`)],
      ["readText dangling", (r) => r.readText(`${root}/dangling`)],
      ["openFile", (r) => r.openFile(`${root}/a/b/file`)?.[Symbol.dispose]()],
      ["readText bus/../file", (r) => r.readText(`${root}/a/../file`)],
    ];
    for (const [name, read] of reads) {
      assertEquals(outcome(() => read(reader)), outcome(() => read(confined)), name);
    }
    // All of them read by the kernel alone: no link checked, nothing left to the other reader.
    assertEquals(calls.size, 0, JSON.stringify([...calls]));
    const refused: [string, (r: SysfsReader) => unknown][] = [
      ["readText out", (r) => r.readText(`${root}/out`)],
      ["readText absoluteOut", (r) => r.readText(`${root}/absoluteOut`)],
      ["readBytes dev/config", (r) => r.readBytes(`${root}/dev/config`, 16)],
      ["openFile dev/config", (r) => r.openFile(`${root}/dev/config`)],
      ["listDir dev", (r) => r.listDir(`${root}/dev`)],
      ["listEntries dev", (r) => r.listEntries!(`${root}/dev`)],
      ["readLink dev/link", (r) => r.readLink(`${root}/dev/link`)],
      ["listDir ..", (r) => r.listDir(`${root}/..`)],
      ["readText a/../../secret", (r) => r.readText(`${root}/a/../../secret`)],
    ];
    for (const [name, read] of refused) {
      assertEquals(outcome(() => read(reader)), "refused", name);
    }
    assertThrows(
      () => reader.readText(`${root}/dev/config`),
      SysfsTreeError,
      `"${root}/dev" leads to "${dir}/outside", outside`,
    );
    // What the kernel refuses but stays inside is read; a loop fails as it always did.
    assertEquals(reader.readText(`${root}/absolute`), "inside\n");
    assertEquals(reader.readText(`${root}/back`), "inside\n");
    assertEquals(
      outcome(() => reader.readText(`${root}/loop1`)),
      outcome(() => confined.readText(`${root}/loop1`)),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("libcTreeReader() is null for a root that cannot be opened, and reads paths elsewhere through the other reader", () => {
  const dir = Deno.realPathSync(Deno.makeTempDirSync());
  try {
    const libc = libcSysfsReader();
    assertEquals(libcTreeReader(`${dir}/missing`, libc), null);
    Deno.writeTextFileSync(`${dir}/file`, "x");
    assertEquals(libcTreeReader(`${dir}/file`, libc), null);
    const root = hostileTree(dir);
    const calls = new Map<string, number>();
    const reader = libcTreeReader(`${root}/`, counted(libc, calls))!;
    assertEquals(reader.readText(`${dir}/secret`), "root:x:0:0\n");
    assertEquals(reader.listDir(root)?.includes("file"), true);
    assertEquals(reader.readText(`${root}//file`), "inside\n");
    assertEquals([...calls], [["readText", 2], ["listDir", 1]]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/**
 * A command that runs the rest of its arguments with openat2(2) failing with `errno`, as on a
 * kernel before 5.6 (ENOSYS) or under a container's seccomp filter (EPERM): a filter installed
 * with Python's ctypes (x86_64 and aarch64 number openat2 alike: 437).
 */
function withoutOpenat2(errno: number): string[] {
  const script = `
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
ins = lambda code, jt, jf, k: struct.pack("HBBI", code, jt, jf, k)
prog = ins(0x20, 0, 0, 0) + ins(0x15, 0, 1, 437) + ins(0x06, 0, 0, 0x50000 | ${errno}) + ins(0x06, 0, 0, 0x7fff0000)
buf = ctypes.create_string_buffer(prog)
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fp = Fprog(4, ctypes.cast(buf, ctypes.c_void_p))
if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(fp), 0, 0):
    sys.exit("seccomp: errno %d" % ctypes.get_errno())
os.execvp(sys.argv[1], sys.argv[1:])
`;
  return ["python3", "-c", script];
}

Deno.test("--sysfs TREE where openat2 fails (old kernel, seccomp) reads the tree and refuses a link out as before", async () => {
  await using tree = await demoTree();
  const device = `${tree.sysfs}/bus/pci/devices/0000:21:00.0`;
  const expected = await runCli(["groups", "--json", "--sysfs", tree.sysfs]);
  assertEquals(expected.code, 0, expected.stderr);
  Deno.writeTextFileSync(`${tree.dir}/secret`, "DRIVER=secret\n");
  for (const errno of [38, /* ENOSYS */ 1 /* EPERM */]) {
    const wrap = withoutOpenat2(errno);
    const result = await runCli(["groups", "--json", "--sysfs", tree.sysfs], { wrap });
    assertEquals([result.code, result.stdout], [0, expected.stdout], result.stderr);
  }
  const uevent = `${Deno.realPathSync(device)}/uevent`;
  Deno.removeSync(uevent);
  Deno.symlinkSync(`${tree.dir}/secret`, uevent);
  for (const wrap of [undefined, withoutOpenat2(38), withoutOpenat2(1)]) {
    const result = await runCli(["groups", "--json", "--sysfs", tree.sysfs], wrap && { wrap });
    assertEquals(result.code, 1, result.stderr);
    assertOk(
      result.stderr.includes(`link out of it: "${device}/uevent" leads to "${tree.dir}/secret"`),
      result.stderr,
    );
  }
});
