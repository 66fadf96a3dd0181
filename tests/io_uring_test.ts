/**
 * `ffi/io_uring.ts` on this machine's real kernel, and discovery reading files in the background
 * through it: every result must be what the file-by-file reader says, including missing files,
 * directories, FIFOs and files longer than a page. Skipped where the kernel refuses io_uring (the
 * reason is in the test name).
 */

import { assertEquals, assertOk } from "./helpers/assert.ts";
import {
  BATCH_MISSING,
  BATCH_RETRY,
  ioUringUnavailableReason,
  openUringFileBatch,
  SLOT_BYTES,
} from "../ffi/io_uring.ts";
import { IO_URING_ENV, libcSysfsReader } from "../ffi/libc_fs.ts";
import { discoverHost } from "../lib/host/discover.ts";
import type { SysfsReader } from "../lib/host/sysfs.ts";
import { generateHost } from "../lib/testing/host_generator.ts";
import { HOST_NAMES, livePciMissing, loadFixtureHost, tempHostTree } from "./helpers/hosts.ts";

// Probe once: the first batch makes the process's ring, or finds why it cannot.
openUringFileBatch([])?.[Symbol.dispose]();
const unavailable = ioUringUnavailableReason();
const suffix = unavailable === null ? "" : ` (skipped: ${unavailable})`;

/** A directory with one entry of each kind a sysfs tree can hold, and what each should read as. */
async function oddFiles(dir: string): Promise<string[]> {
  await Deno.writeTextFile(`${dir}/small`, "PCI_ID=10DE:1B80\n");
  await Deno.writeFile(`${dir}/empty`, new Uint8Array(0));
  await Deno.writeFile(`${dir}/page`, new Uint8Array(SLOT_BYTES).fill(0x41));
  await Deno.writeFile(`${dir}/long`, new Uint8Array(SLOT_BYTES + 904).fill(0x42));
  await Deno.mkdir(`${dir}/directory`);
  const fifo = await new Deno.Command("mkfifo", { args: [`${dir}/fifo`] }).output();
  assertEquals(fifo.code, 0);
  await Deno.symlink("small", `${dir}/link`);
  return ["small", "empty", "page", "long", "missing", "directory", "fifo", "link"]
    .map((name) => `${dir}/${name}`);
}

Deno.test({
  name:
    `openUringFileBatch() reads whole files, says which are missing and leaves the rest${suffix}`,
  ignore: unavailable !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-uring-" });
    try {
      const paths = await oddFiles(dir);
      using batch = openUringFileBatch(paths)!;
      assertOk(batch !== null);
      const text = (i: number) => new TextDecoder().decode(batch.bytes(i));
      assertEquals([batch.wait(0), text(0)], [17, "PCI_ID=10DE:1B80\n"]);
      assertEquals([batch.wait(1), text(1)], [0, ""]);
      assertEquals(batch.wait(2), SLOT_BYTES);
      // Longer than a slot: the first page, and the length says "at least".
      assertEquals([batch.wait(3), batch.bytes(3)?.[0]], [SLOT_BYTES, 0x42]);
      assertEquals(batch.wait(4), BATCH_MISSING);
      // A directory opens but fails to read: left to the ordinary path, never called missing.
      assertEquals(batch.wait(5), BATCH_RETRY);
      // A FIFO without a writer opens non-blocking and reads as empty, as file by file.
      assertEquals(batch.wait(6), 0);
      assertEquals([batch.wait(7), text(7)], [17, "PCI_ID=10DE:1B80\n"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: `openUringFileBatch() reads more files than it has slots and ring entries${suffix}`,
  ignore: unavailable !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-uring-" });
    try {
      const paths: string[] = [];
      for (let i = 0; i < 3000; i++) {
        // Every fifth is missing, so failed opens and their cancelled reads free slots too.
        if (i % 5 !== 4) await Deno.writeTextFile(`${dir}/f${i}`, `${i}\n`.repeat(i % 7));
        paths.push(`${dir}/f${i}`);
      }
      using batch = openUringFileBatch(paths)!;
      // Out of order: waiting for the last file first must queue everything before it.
      assertEquals(batch.wait(2999), BATCH_MISSING);
      for (let i = 0; i < 3000; i++) {
        const want = i % 5 === 4 ? BATCH_MISSING : `${i}\n`.length * (i % 7);
        assertEquals(batch.wait(i), want, paths[i]);
        if (want > 0) {
          assertEquals(new TextDecoder().decode(batch.bytes(i)), `${i}\n`.repeat(i % 7));
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    `openUringFileBatch() runs one batch at a time, and disposing one mid-way drains it${suffix}`,
  ignore: unavailable !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-uring-" });
    try {
      for (let i = 0; i < 1500; i++) await Deno.writeTextFile(`${dir}/f${i}`, "x\n");
      const paths = Array.from({ length: 1500 }, (_, i) => `${dir}/f${i}`);
      const first = openUringFileBatch(paths)!;
      assertEquals(first.wait(0), 2);
      // Another batch now would share the slots the first is still reading into.
      assertEquals(openUringFileBatch(paths), null);
      first[Symbol.dispose]();
      let closed = "";
      try {
        first.wait(1);
      } catch (error) {
        closed = (error as Error).message;
      }
      assertEquals(closed, "The io_uring batch was closed");
      using second = openUringFileBatch(paths)!;
      assertEquals([second.wait(1499), second.wait(0)], [2, 2]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: `libcSysfsReader().readFiles() reads every file as readText() would${suffix}`,
  ignore: unavailable !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-uring-" });
    try {
      const paths = await oddFiles(dir);
      const reader = libcSysfsReader();
      const expected = paths.map((path) => reader.readText(path));
      // The page-long and longer files are read whole by the ordinary path.
      assertEquals(expected[3]?.length, SLOT_BYTES + 904);
      using batch = reader.readFiles!(paths)!;
      assertOk(batch !== null);
      assertEquals(paths.map((_, i) => batch.readText(i)), expected);
      // Bytes are lent up to the limit asked for.
      assertEquals(batch.withBytes(3, 64, (bytes) => bytes.length), 64);
      assertEquals(batch.withBytes(4, 64, (bytes) => bytes.length), null);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("libcSysfsReader() reads file by file when told to, or when PASSTHROUGH_IO_URING=0", () => {
  assertEquals(libcSysfsReader({ ioUring: false }).readFiles!(["/nonexistent"]), null);
  const before = Deno.env.get(IO_URING_ENV);
  Deno.env.set(IO_URING_ENV, "0");
  try {
    assertEquals(libcSysfsReader().readFiles!(["/nonexistent"]), null);
  } finally {
    if (before === undefined) Deno.env.delete(IO_URING_ENV);
    else Deno.env.set(IO_URING_ENV, before);
  }
});

/** The libc reader, counting the batches discovery starts. */
function countingReader(): { reader: SysfsReader; batches: () => number } {
  const libc = libcSysfsReader();
  let batches = 0;
  return {
    reader: {
      ...libc,
      readFiles(paths) {
        batches++;
        return libc.readFiles!(paths);
      },
    },
    batches: () => batches,
  };
}

Deno.test({
  name:
    `discoverHost() in the background finds what it finds file by file, on every fixture host${suffix}`,
  ignore: unavailable !== null,
  async fn() {
    const fileByFile = libcSysfsReader({ ioUring: false });
    for (const name of HOST_NAMES) {
      await using tree = await tempHostTree(loadFixtureHost(name));
      const { reader, batches } = countingReader();
      const background = await discoverHost({
        root: tree.dir,
        reader,
        lspci: null,
        backgroundReadsFrom: 0,
      });
      assertEquals(batches(), 1, name);
      assertEquals(
        background,
        await discoverHost({ root: tree.dir, reader: fileByFile, lspci: null }),
      );
    }
  },
});

Deno.test({
  name: `discoverHost() in the background on a generated SR-IOV host of 1,024 functions${suffix}`,
  ignore: unavailable !== null,
  async fn() {
    await using tree = await tempHostTree(generateHost(1024));
    const { reader, batches } = countingReader();
    const background = await discoverHost({ root: tree.dir, reader, lspci: null });
    assertEquals(batches(), 1);
    const plain = await discoverHost({
      root: tree.dir,
      reader: libcSysfsReader({ ioUring: false }),
      lspci: null,
    });
    assertEquals(background, plain);
    assertEquals(background.devices.length, 1024);
    assertOk(background.devices.some((d) => d.virtfns.length > 0));
    assertOk(background.devices.some((d) => d.serial !== null));
  },
});

Deno.test("discoverHost() reads a host smaller than backgroundReadsFrom file by file", async () => {
  await using tree = await tempHostTree(loadFixtureHost("supermicro-cfl"));
  const { reader, batches } = countingReader();
  const host = await discoverHost({
    root: tree.dir,
    reader,
    lspci: null,
    backgroundReadsFrom: 1e6,
  });
  assertEquals(batches(), 0);
  assertOk(host.devices.length > 0);
});

Deno.test("discoverHost() reads file by file while lspci runs, unless told otherwise", async () => {
  await using tree = await tempHostTree(generateHost(256));
  const lspci = () => Promise.resolve("");
  const alongside = countingReader();
  await discoverHost({ root: tree.dir, reader: alongside.reader, lspci });
  // lspci is what discovery waits for, and the kernel thread would compete with it for a core.
  assertEquals(alongside.batches(), 0);
  const told = countingReader();
  await discoverHost({ root: tree.dir, reader: told.reader, lspci, backgroundReadsFrom: 0 });
  assertEquals(told.batches(), 1);
});

Deno.test({
  name: `discoverHost() in the background on this machine's real /sys${suffix}`,
  ignore: unavailable !== null || livePciMissing() !== null,
  async fn() {
    const { reader, batches } = countingReader();
    const background = await discoverHost({ reader, lspci: null, backgroundReadsFrom: 0 });
    assertEquals(batches(), 1);
    const plain = await discoverHost({ reader: libcSysfsReader({ ioUring: false }), lspci: null });
    assertEquals(background, plain);
    assertOk(background.devices.length > 0);
  },
});
