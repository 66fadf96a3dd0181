/**
 * Captured trees with files that are not files: a FIFO, a device node, a socket, or a link to
 * one where sysfs has an attribute, and attributes hundreds of megabytes long. lspci would block
 * on them and Deno's file API reads them without end, so discovery must never hang and never read
 * without bound: the tree is refused with the file named when lspci would read it, the readers
 * treat such files as unreadable, and lspci itself is killed after its time limit.
 */

import { assertEquals, assertMatch, assertOk, assertThrows } from "../helpers/assert.ts";
import { demoTree, gpuConfig } from "../helpers/reliability.ts";
import { documentedFlags, runCli } from "../helpers/cli.ts";
import { discoverHost, SysfsRootError } from "../../lib/host/discover.ts";
import { LspciError, runLspci } from "../../lib/host/lspci.ts";
import {
  checkCapturedTree,
  confinedReader,
  denoFsReader,
  readWholeText,
  type SysfsReader,
  SysfsTreeError,
} from "../../lib/host/sysfs.ts";
import { LibcFsError, libcSysfsReader } from "../../ffi/libc_fs.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import { pathExists } from "../../lib/state/paths.ts";

const TEST = "tests/host/special_files_test.ts";
const GPU = "0000:21:00.0";

/** The error `run` rejects with; fails when it resolves or rejects with another class. */
async function rejection<E extends Error>(
  run: () => Promise<unknown>,
  type: new (...args: never[]) => E,
): Promise<E> {
  try {
    await run();
  } catch (error) {
    assertOk(error instanceof type, `expected ${type.name}, got ${error}`);
    return error;
  }
  throw new Error(`expected ${type.name}, got none`);
}

function mkfifo(path: string): void {
  const out = new Deno.Command("mkfifo", { args: [path] }).outputSync();
  if (!out.success) throw new Error(`mkfifo ${path} failed`);
}

/** Replaces `file` of the GPU's entry with what `plant` makes at its path. */
function replace(root: string, file: string, plant: (path: string) => void): string {
  const path = `${root}/bus/pci/devices/${GPU}/${file}`;
  Deno.removeSync(path);
  plant(path);
  return path;
}

const SPECIAL: {
  name: string;
  plant: (root: string) => string;
  kind: string;
}[] = [
  {
    name: "a FIFO as a device's config",
    plant: (root) => replace(root, "config", mkfifo),
    kind: "a FIFO",
  },
  {
    name: "a FIFO as a device's vendor",
    plant: (root) => replace(root, "vendor", mkfifo),
    kind: "a FIFO",
  },
  {
    name: "config a link to /dev/zero",
    plant: (root) => replace(root, "config", (p) => Deno.symlinkSync("/dev/zero", p)),
    kind: "a character device",
  },
  {
    name: "uevent a link to /dev/zero",
    plant: (root) => replace(root, "uevent", (p) => Deno.symlinkSync("/dev/zero", p)),
    kind: "a character device",
  },
  {
    name: "a slot's address a FIFO",
    plant: (root) => {
      Deno.mkdirSync(`${root}/bus/pci/slots/7`, { recursive: true });
      const path = `${root}/bus/pci/slots/7/address`;
      mkfifo(path);
      return path;
    },
    kind: "a FIFO",
  },
  {
    name: "the snapshot's cmdline a FIFO",
    plant: (root) => {
      const path = `${root}/cmdline`;
      mkfifo(path);
      return path;
    },
    kind: "a FIFO",
  },
  {
    name: "the snapshot's host_use.json a FIFO",
    plant: (root) => {
      const path = `${root}/host_use.json`;
      Deno.removeSync(path);
      mkfifo(path);
      return path;
    },
    kind: "a FIFO",
  },
  {
    // Read whole by the pre-flight and copied by snapshot: a FIFO there read as an empty table.
    name: "the tree's proc/iomem a FIFO",
    plant: (root) => {
      Deno.mkdirSync(`${root}/proc`, { recursive: true });
      const path = `${root}/proc/iomem`;
      mkfifo(path);
      return path;
    },
    kind: "a FIFO",
  },
  {
    name: "a socket as a device's class",
    plant: (root) =>
      replace(root, "class", (p) => {
        // Deno removes its socket on close: a second link to it stays.
        const listener = Deno.listen({ transport: "unix", path: `${p}.sock` });
        Deno.linkSync(`${p}.sock`, p);
        listener.close();
      }),
    kind: "a socket",
  },
];

const READERS: [string, () => SysfsReader][] = [
  ["Deno fs", denoFsReader],
  // Types from directory listings instead of a stat per file (the start guard's reader).
  ["Deno fs, listings", () => denoFsReader({ listings: "/" })],
  ["libc", libcSysfsReader],
];

Deno.test("discovery refuses a captured tree with a FIFO, device or socket where lspci reads, naming it", async () => {
  for (const c of SPECIAL) {
    await using tree = await demoTree();
    const path = c.plant(tree.sysfs);
    for (const [label, reader] of READERS) {
      const started = performance.now();
      const error = await rejection(
        () => discoverHost({ root: tree.sysfs, reader: reader() }),
        SysfsTreeError,
      );
      assertMatch(error.message, new RegExp(`^Refusing to read a tree with ${c.kind}`));
      assertEquals(error.path, path);
      assertOk(error.message.includes(`"${path}"`), `${c.name} (${label}): ${error.message}`);
      assertOk(performance.now() - started < 5000, `${c.name} (${label}) took too long`);
    }
    recordCase({
      area: "sysfs",
      name: `${c.name} (discovery with lspci)`,
      count: READERS.length,
      outcome: "clear error naming the file, lspci not run",
      test: TEST,
    });
  }
});

Deno.test("without lspci, both readers read past FIFOs, device nodes and sockets without blocking", async () => {
  for (const c of SPECIAL) {
    await using tree = await demoTree();
    const path = c.plant(tree.sysfs);
    for (const [label, reader] of READERS) {
      let host;
      try {
        host = await discoverHost({ root: tree.sysfs, reader: reader(), lspci: null });
      } catch (error) {
        // Or a clear error about that file (libc reads a FIFO as empty: not JSON).
        assertOk((error as Error).message.includes(`"${path}"`), `${c.name} (${label}): ${error}`);
        continue;
      }
      // The device is still there, and still counts in its group.
      const gpu = host.devices.find((d) => d.address === GPU);
      assertEquals(gpu?.iommuGroup, 26, `${c.name} (${label})`);
    }
    recordCase({
      area: "sysfs",
      name: `${c.name} (sysfs readers)`,
      count: READERS.length,
      outcome: "read as unreadable or empty (or a clear error), no hang, bounded reads",
      test: TEST,
    });
  }
});

Deno.test("a --sysfs that is a loop of symbolic links is named as one by the libc reader, not as errno 40", async () => {
  await using tree = await demoTree();
  Deno.symlinkSync(`${tree.dir}/loop-b`, `${tree.dir}/loop-a`);
  Deno.symlinkSync(`${tree.dir}/loop-a`, `${tree.dir}/loop-b`);
  assertThrows(
    () => libcSysfsReader().listDir(`${tree.dir}/loop-a`),
    LibcFsError,
    ": ELOOP: a loop of symbolic links",
  );
  // Discovery says so of the root, in the words it has for a missing one.
  const root = await rejection(
    () => discoverHost({ root: `${tree.dir}/loop-a`, reader: libcSysfsReader(), lspci: null }),
    SysfsRootError,
  );
  assertEquals(root.message, `Not a sysfs tree: "${tree.dir}/loop-a": a loop of symbolic links`);
});

/** Replaces the entry at `path` with a symbolic link to itself. */
function loopAt(path: string): void {
  Deno.removeSync(path, { recursive: true });
  Deno.symlinkSync(path.slice(path.lastIndexOf("/") + 1), path);
}

const LOOPS: [string, (sysfs: string) => string][] = [
  ["a device's config", (sysfs) => `${sysfs}/bus/pci/devices/${GPU}/config`],
  ["a device's entry", (sysfs) => `${sysfs}/bus/pci/devices/${GPU}`],
  ["a device's IOMMU group", (sysfs) => `${sysfs}/kernel/iommu_groups/26`],
];

Deno.test("discovery refuses a captured tree with a loop of symbolic links, naming the loop", async () => {
  for (const [name, where] of LOOPS) {
    await using tree = await demoTree();
    const path = where(tree.sysfs);
    loopAt(path);
    for (const [label, reader] of READERS) {
      for (const lspci of [undefined, null]) {
        const error = await rejection(
          () =>
            discoverHost({
              root: tree.sysfs,
              reader: confinedReader(reader(), tree.sysfs),
              ...(lspci === null ? { lspci } : {}),
            }),
          SysfsTreeError,
        );
        assertEquals(
          [error.path, error.message],
          [
            path,
            `Refusing to read a tree with a loop of symbolic links at "${path}": the tree is damaged: capture it again with 'passthrough snapshot'`,
          ],
          `${name} (${label}, ${lspci === null ? "no lspci" : "lspci"})`,
        );
      }
    }
  }
});

Deno.test("groups, doctor and plan --sysfs TREE with a loop stop on one line naming it and what to do", async () => {
  await using tree = await demoTree();
  const groups = `${tree.sysfs}/kernel/iommu_groups`;
  // The GPU's group: read as "no such group", its device would look alone in it.
  loopAt(`${groups}/26`);
  Deno.writeTextFileSync(`${tree.dir}/c.yaml`, gpuConfig("test"));
  const plan = ["plan", "-f", `${tree.dir}/c.yaml`, "-c", "test:///default"];
  for (const command of [["groups"], ["doctor"], plan]) {
    const result = await runCli([...command, "--sysfs", tree.sysfs]);
    assertEquals(result.code, 1, result.stderr);
    // It said `Cannot open directory ".../26/devices": ELOOP: a loop of symbolic links`.
    assertEquals(
      result.stderr,
      `passthrough ${
        command[0]
      }: Refusing to read a tree with a loop of symbolic links at "${groups}/26": the tree is damaged: capture it again with 'passthrough snapshot'\n`,
    );
  }
});

Deno.test("a FIFO whose writer never writes: the libc reader stops with a clear error, Deno's reads it as unreadable", async () => {
  await using tree = await demoTree();
  const path = replace(tree.sysfs, "uevent", mkfifo);
  // Read and write at once: the open does not wait for a reader, and the FIFO stays open.
  using writer = Deno.openSync(path, { read: true, write: true });
  assertOk(writer);
  assertEquals(denoFsReader().readText(path), null);
  assertEquals(denoFsReader({ listings: tree.sysfs }).readText(path), null);
  const error = await rejection(
    () => discoverHost({ root: tree.sysfs, reader: libcSysfsReader(), lspci: null }),
    LibcFsError,
  );
  assertEquals(
    error.message,
    `Cannot read "${path}": EAGAIN: nothing to read, not a regular file`,
  );
  recordCase({
    area: "sysfs",
    name: "a FIFO held open by a writer that never writes",
    count: 1,
    outcome: "libc: clear error (was a busy loop); Deno fs: unreadable",
    test: TEST,
  });
});

Deno.test("the Deno reader reads the head of a 300 MB attribute, not the whole file", async () => {
  await using tree = await demoTree();
  const path = `${tree.sysfs}/bus/pci/devices/${GPU}/uevent`;
  const head = Deno.readFileSync(path);
  // Sparse: 300 MB on paper, nothing on disk.
  Deno.truncateSync(path, 300 * 1024 * 1024);
  const reader = denoFsReader();
  assertEquals(reader.readText(path)?.length, 65536);
  assertEquals(reader.readBytes(path, 4096)?.length, 4096);
  // Without a size from a stat, the same bounds.
  const listed = denoFsReader({ listings: tree.sysfs });
  assertEquals(listed.readText(path)?.length, 65536);
  assertEquals(listed.readBytes(path, 4096)?.length, 4096);
  const host = await discoverHost({ root: tree.sysfs, reader, lspci: null });
  // The uevent's lines come first, as in the kernel's file: nothing is lost.
  assertEquals(host.devices.find((d) => d.address === GPU)?.driver, "vfio-pci");
  assertOk(head.length < 4096);
  recordCase({
    area: "sysfs",
    name: "a 300 MB attribute file (Deno fs reader)",
    count: 1,
    outcome: "64 KiB read, as the libc reader",
    test: TEST,
  });
});

Deno.test("runLspci() kills lspci blocked on a FIFO after its time limit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-lspci-fifo-" });
  try {
    mkfifo(`${dir}/dump`);
    const started = performance.now();
    // -F reads a dump from a file: lspci's open of a FIFO blocks until a writer comes.
    const error = await rejection(
      () => runLspci("lspci", ["-F", `${dir}/dump`], 300),
      LspciError,
    );
    assertMatch(error.message, /^"lspci -F .*\/dump" did not finish within 300 ms and was killed/);
    assertOk(performance.now() - started < 5000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  recordCase({
    area: "sysfs",
    name: "lspci blocked on a FIFO",
    count: 1,
    outcome: "killed after its time limit, clear error",
    test: TEST,
  });
});

Deno.test("devices --sysfs TREE with a FIFO config exits 1 naming the file, with and without FFI", async () => {
  await using tree = await demoTree();
  const path = replace(tree.sysfs, "config", mkfifo);
  const withFfi = documentedFlags();
  const withoutFfi = withFfi.filter((f) => f !== "--allow-ffi");
  for (const flags of [withFfi, withoutFfi]) {
    const result = await runCli(["devices", "--sysfs", tree.sysfs], { flags });
    assertEquals(result.code, 1, result.stderr);
    assertOk(result.stderr.includes(`a FIFO where a file should be: "${path}"`), result.stderr);
  }
  recordCase({
    area: "sysfs",
    name: "devices --sysfs on a tree with a FIFO config",
    count: 2,
    outcome: "exit 1, the file named, no hang",
    test: TEST,
  });
});

Deno.test("snapshot --sysfs TREE with a FIFO as proc/modules exits 1 naming it, and writes nothing", async () => {
  await using tree = await demoTree();
  Deno.mkdirSync(`${tree.sysfs}/proc`);
  const path = `${tree.sysfs}/proc/modules`;
  mkfifo(path);
  const out = `${tree.dir}/snapshot`;
  const result = await runCli(["snapshot", out, "--sysfs", tree.sysfs]);
  // It was copied as an empty table: no module loaded, read later as the host's.
  assertEquals(result.code, 1, result.stderr);
  assertOk(result.stderr.includes(`a FIFO where a file should be: "${path}"`), result.stderr);
  assertEquals(await pathExists(out), false);
  recordCase({
    area: "sysfs",
    name: "snapshot --sysfs on a tree with a FIFO proc/modules",
    count: 1,
    outcome: "exit 1, the file named, nothing written",
    test: TEST,
  });
});

Deno.test("--sysfs TREE reads nothing a link leads to outside the tree, naming the link", async () => {
  await using tree = await demoTree();
  const secret = `${tree.dir}/secret`;
  Deno.writeTextFileSync(secret, "root:x:0:0:root:/root:/bin/bash\nvendor_id\t: GenuineIntel\n");
  const uevent = replace(tree.sysfs, "uevent", (path) => Deno.symlinkSync(secret, path));
  // `../..` out of the tree, and a captured /proc file to this host's own.
  Deno.mkdirSync(`${tree.sysfs}/proc`);
  Deno.symlinkSync("../../secret", `${tree.sysfs}/proc/cpuinfo`);
  const withFfi = documentedFlags();
  const withoutFfi = withFfi.filter((f) => f !== "--allow-ffi");
  for (const flags of [withFfi, withoutFfi]) {
    // doctor needs FFI for its other checks.
    const commands = flags === withFfi ? ["devices", "groups", "doctor", "snapshot"] : ["devices"];
    for (const command of commands) {
      const out = `${tree.dir}/snap`;
      const args = command === "snapshot" ? [out] : [];
      const result = await runCli([command, "--sysfs", tree.sysfs, ...args], { flags });
      // The snapshot copied the secret into its tree; the others read it as the device's uevent.
      assertEquals(result.code, 1, result.stderr);
      assertOk(
        result.stderr.includes(`link out of it: "${uevent}" leads to "${secret}", outside`),
        result.stderr,
      );
      assertEquals(Deno.statSync(tree.dir).isDirectory && !pathExists(out), true);
    }
  }
  // With the uevent a file again, the snapshot is written without the /proc file that leads out.
  replace(tree.sysfs, "uevent", (path) => Deno.writeTextFileSync(path, "DRIVER=nouveau\n"));
  const result = await runCli(["snapshot", "--sysfs", tree.sysfs, `${tree.dir}/snap`]);
  assertEquals(result.code, 0, result.stderr);
  assertEquals(pathExists(`${tree.dir}/snap/proc/cpuinfo`), false);
});

Deno.test("a confined reader resolves a tree's links as realpath does, and realpath only its root", async () => {
  await using tree = await demoTree();
  const root = tree.sysfs;
  const resolved: string[] = [];
  const realPath = (path: string) => (resolved.push(path), Deno.realPathSync(path));
  // Discovery resolves each device's directory and link from its parent's, not with a realpath.
  await discoverHost({
    root,
    reader: confinedReader(libcSysfsReader(), root, realPath),
    lspci: null,
  });
  assertEquals(resolved, [root]);
  Deno.writeTextFileSync(`${tree.dir}/secret`, "secret\n");
  Deno.mkdirSync(`${root}/a/b`, { recursive: true });
  Deno.writeTextFileSync(`${root}/a/b/file`, "inside\n");
  Deno.writeTextFileSync(`${root}/file`, "inside\n");
  const links: [string, string][] = [
    ["in", "a/b"],
    ["chain", "in/file"],
    ["up", "in/../../file"], // `..` after a link is its target's parent: inside
    ["out", "in/../../../secret"],
    ["through", "a/../in/../../../secret"],
    ["back", `../${root.slice(root.lastIndexOf("/") + 1)}/file`],
    ["absolute", `${root}/a/b/file`],
    ["absoluteOut", `${tree.dir}/secret`],
    ["outDir", tree.dir],
    ["loop1", "loop2/file"],
    ["loop2", "loop1"],
    ["dangling", "missing/file"],
  ];
  for (const [name, target] of links) Deno.symlinkSync(target, `${root}/${name}`);
  // The commands' reader, and the start guard's (links known from its directories' listings).
  for (const inner of [libcSysfsReader(), denoFsReader({ listings: root })]) {
    resolved.length = 0;
    const reader = confinedReader(inner, root, realPath);
    const refused = (path: string) => {
      try {
        reader.readText(path);
      } catch (error) {
        return error instanceof SysfsTreeError;
      }
      return false;
    };
    for (const path of [...links.map(([name]) => name), "outDir/secret", "in/file", "chain"]) {
      let outside = false;
      try {
        const real = Deno.realPathSync(`${root}/${path}`);
        outside = !real.startsWith(`${Deno.realPathSync(root)}/`);
      } catch (error) {
        // A dangling link: the read finds nothing. A loop: the tree is damaged, and refused.
        outside = error instanceof Deno.errors.FilesystemLoop;
      }
      assertEquals(refused(`${root}/${path}`), outside, path);
    }
    // Only links to absolute paths, above the tree's root, or in a loop were resolved whole.
    const whole = ["out", "through", "back", "absolute", "absoluteOut", "outDir", "loop1"];
    // And, refusing a loop, each loop's path, then the root and the links it leads through, to
    // name the entry that loops (loop1 leads into loop2, which leads back).
    const loops = ["loop1", "", "loop2", "loop2", "", "loop1"];
    assertEquals(
      resolved,
      [root, ...[...whole, ...loops].map((name) => name === "" ? root : `${root}/${name}`)],
    );
  }
});

Deno.test("the start guard's confined reader refuses a link out made after a directory was listed", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const root = `${dir}/tree`;
    Deno.mkdirSync(`${root}/d`, { recursive: true });
    Deno.mkdirSync(`${dir}/outside`);
    Deno.writeTextFileSync(`${dir}/outside/secret`, "secret\n");
    for (const name of ["a", "b"]) Deno.writeTextFileSync(`${root}/${name}`, `${name}\n`);
    const reader = confinedReader(denoFsReader({ listings: root }), root);
    // Lists the tree's top directory, for the reader's life.
    assertEquals(reader.readText(`${root}/a`), "a\n");
    // Then a file, a directory and a name the listing lacks become links out of the tree.
    Deno.removeSync(`${root}/b`);
    Deno.symlinkSync(`${dir}/outside/secret`, `${root}/b`);
    Deno.removeSync(`${root}/d`);
    Deno.symlinkSync(`${dir}/outside`, `${root}/d`);
    Deno.symlinkSync(`${dir}/outside`, `${root}/n`);
    for (const read of [`${root}/b`, `${root}/d/secret`, `${root}/n/secret`]) {
      assertThrows(() => reader.readText(read), SysfsTreeError, "a link out of it");
    }
    for (const list of [`${root}/d`, `${root}/n`]) {
      assertThrows(() => reader.listDir(list), SysfsTreeError, "a link out of it");
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test('confinedReader refuses a path whose ".." steps out of the tree, and reads one that stays in', () => {
  const dir = Deno.makeTempDirSync();
  try {
    const root = `${dir}/tree`;
    Deno.mkdirSync(`${root}/bus`, { recursive: true });
    Deno.writeTextFileSync(`${root}/cmdline`, "quiet\n");
    Deno.writeTextFileSync(`${dir}/secret`, "root:x:0:0\n");
    const reader = confinedReader(denoFsReader(), root);
    const real = Deno.realPathSync(dir);
    for (
      const [path, read] of [
        [`${root}/..`, (p: string) => reader.listDir(p)],
        [`${root}/bus/../..`, (p: string) => reader.listDir(p)],
        [`${root}/../secret`, (p: string) => reader.readText(p)],
        [`${root}/../secret`, (p: string) => reader.readLink(p)],
      ] as const
    ) {
      assertThrows(() => read(path), SysfsTreeError, `"${path}" leads to "${real}`);
    }
    assertEquals(reader.readText(`${root}/bus/../cmdline`), "quiet\n");
    assertEquals(reader.listDir(`${root}/bus/..`)?.sort(), ["bus", "cmdline"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("--sysfs TREE whose device directory links out to a FIFO is refused before lspci opens it", async () => {
  await using tree = await demoTree();
  // A device's directory that a link leads out of the tree, to one with a FIFO as its config.
  const device = `${tree.sysfs}/bus/pci/devices/${GPU}`;
  const outside = `${tree.dir}/outside`;
  Deno.renameSync(device, outside);
  Deno.removeSync(`${outside}/config`);
  mkfifo(`${outside}/config`);
  Deno.symlinkSync(outside, device);
  const withFfi = documentedFlags();
  const withoutFfi = withFfi.filter((f) => f !== "--allow-ffi");
  for (const flags of [withFfi, withoutFfi]) {
    const started = performance.now();
    const result = await runCli(["devices", "--sysfs", tree.sysfs], { flags });
    assertEquals(result.code, 1, result.stderr);
    // The tree check skipped the directory its confined reader refused: lspci blocked on the
    // FIFO until it was killed 10 s later.
    assertOk(performance.now() - started < 5000, `took ${performance.now() - started} ms`);
    // Without FFI the check lists with Deno, unconfined, and names the FIFO instead.
    const named = flags === withFfi
      ? `a link out of it: "${device}" leads to "${outside}", outside`
      : `a FIFO where a file should be: "${device}/config"`;
    assertOk(result.stderr.includes(named), result.stderr);
  }
});

Deno.test("the Deno reader with listings reads regular files and links to them, and nothing else", async () => {
  await using tree = await demoTree();
  const dir = `${tree.sysfs}/bus/pci/devices/${GPU}`;
  const uevent = Deno.readTextFileSync(`${dir}/uevent`);
  Deno.symlinkSync(`${dir}/uevent`, `${dir}/linked`);
  Deno.symlinkSync("/dev/zero", `${dir}/zero`);
  Deno.symlinkSync(`${dir}/missing`, `${dir}/dangling`);
  Deno.mkdirSync(`${dir}/subdir`);
  const reader = denoFsReader({ listings: tree.sysfs });
  assertEquals(reader.readText(`${dir}/uevent`), uevent);
  assertEquals(reader.readText(`${dir}/linked`), uevent);
  for (const name of ["zero", "dangling", "subdir", "missing"]) {
    assertEquals(reader.readText(`${dir}/${name}`), null, name);
    assertEquals(reader.readBytes(`${dir}/${name}`, 16), null, name);
    assertEquals(reader.openFile(`${dir}/${name}`), null, name);
  }
  assertEquals(reader.readText(`${tree.sysfs}/nonexistent/uevent`), null);
  // Listed once: a file that appears later reads as missing to this reader, not to a new one.
  Deno.writeTextFileSync(`${dir}/later`, "x");
  assertEquals(reader.readText(`${dir}/later`), null);
  assertEquals(denoFsReader({ listings: tree.sysfs }).readText(`${dir}/later`), "x");
  // Outside the listed root each file is looked up as it is read.
  const outside = denoFsReader({ listings: `${dir}/subdir` });
  assertEquals(outside.readText(`${dir}/uevent`), uevent);
  Deno.writeTextFileSync(`${dir}/later2`, "y");
  assertEquals(outside.readText(`${dir}/later2`), "y");
});

Deno.test("the libc reader's listing tells files, directories and links from FIFOs and sockets, as Deno's does", async () => {
  const dir = await Deno.makeTempDir();
  try {
    Deno.writeTextFileSync(`${dir}/file`, "x");
    Deno.mkdirSync(`${dir}/dir`);
    Deno.symlinkSync("/dev/zero", `${dir}/link`);
    mkfifo(`${dir}/fifo`);
    const listener = Deno.listen({ transport: "unix", path: `${dir}/socket` });
    try {
      const kinds = Object.fromEntries(
        (libcSysfsReader().listEntries?.(dir) ?? []).map((e) => [e.name, e.kind]),
      );
      assertEquals(kinds, {
        file: "file",
        dir: "directory",
        link: "symlink",
        fifo: "other",
        socket: "other",
      });
      const deno = Object.fromEntries(
        [...Deno.readDirSync(dir)].map((e) => [e.name, [e.isFile, e.isDirectory, e.isSymlink]]),
      );
      for (const [name, kind] of Object.entries(kinds)) {
        assertEquals(deno[name], [kind === "file", kind === "directory", kind === "symlink"], name);
      }
      assertEquals(libcSysfsReader().listEntries?.(`${dir}/missing`), null);
    } finally {
      listener.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readWholeText() reads a table whole through both readers, and refuses /dev/zero and a huge file at its cap", () => {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-whole-" });
  try {
    // Lines of differing lengths: a byte misplaced where the libc reader's buffer grows shows.
    const table = Array.from({ length: 20000 }, (_, i) => `${i} ${"x".repeat(i % 97)}\n`).join("");
    Deno.writeTextFileSync(`${dir}/iomem`, table);
    Deno.symlinkSync("/dev/zero", `${dir}/zero`);
    Deno.writeTextFileSync(`${dir}/huge`, "0x10de\n");
    Deno.truncateSync(`${dir}/huge`, 2 ** 40);
    for (const reader of [denoFsReader(), denoFsReader({ listings: dir }), libcSysfsReader()]) {
      assertEquals(readWholeText(reader, `${dir}/iomem`), table);
      assertThrows(() => readWholeText(reader, `${dir}/huge`), RangeError, "larger than 16777216");
    }
    // The Deno readers never open a device; libc's reads it to the cap and a byte, no further.
    assertThrows(() => readWholeText(libcSysfsReader(), `${dir}/zero`), RangeError, "larger than");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("both readers read only the head of a huge file (1 TiB, sparse), with and without listings", () => {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-huge-" });
  try {
    const path = `${dir}/vendor`;
    Deno.writeTextFileSync(path, "0x10de\n");
    Deno.truncateSync(path, 2 ** 40);
    // Read whole, the file would not fit in memory.
    const readers = [denoFsReader(), denoFsReader({ listings: dir }), libcSysfsReader()];
    for (const reader of readers) {
      const text = reader.readText(path);
      assertEquals([text?.length, text?.slice(0, 7)], [65536, "0x10de\n"]);
      assertEquals([4096, 10000].map((n) => reader.readBytes(path, n)?.length), [4096, 10000]);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the captured-tree check passes over what its reader cannot list, as discovery then reports it", () => {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-unlisted-" });
  try {
    Deno.mkdirSync(`${dir}/bus/pci/devices/${GPU}`, { recursive: true });
    mkfifo(`${dir}/bus/pci/devices/${GPU}/config`);
    const refusing: SysfsReader = {
      ...denoFsReader(),
      listEntries: () => {
        throw new Deno.errors.PermissionDenied("EACCES: permission denied");
      },
    };
    checkCapturedTree(dir, refusing);
    // The same tree listed: the FIFO is named.
    assertThrows(() => checkCapturedTree(dir, libcSysfsReader()), SysfsTreeError, "config");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/** A block device node this machine has (an unattached loop device reads nothing), or `null`. */
const BLOCK_DEVICE = (() => {
  try {
    return Deno.statSync("/dev/loop0").isBlockDevice ? "/dev/loop0" : null;
  } catch {
    return null;
  }
})();

Deno.test({
  name: "the captured-tree check names a block device where a file should be",
  ignore: BLOCK_DEVICE === null,
  fn() {
    const dir = Deno.makeTempDirSync({ prefix: "passthrough-block-" });
    try {
      Deno.mkdirSync(`${dir}/bus/pci/devices/${GPU}`, { recursive: true });
      Deno.symlinkSync(BLOCK_DEVICE!, `${dir}/bus/pci/devices/${GPU}/config`);
      assertThrows(() => checkCapturedTree(dir), SysfsTreeError, "with a block device where");
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
