// FLR and serial numbers read from PCI configuration space, checked against what the real
// `lspci -vvv` prints for the same bytes: built trees (host_tree.ts capabilities), edited
// configs (AF FLR, root ports, loops, broken chains), this VM's captured and live config files.
import { livePciMissing } from "../helpers/hosts.ts";
import { assertEquals, assertOk } from "../helpers/assert.ts";
import {
  bufferConfigReader,
  type ConfigSpaceFacts,
  readConfigSpace,
} from "../../lib/pci/config_space.ts";
import { libcSysfsReader } from "../../ffi/libc_fs.ts";
import { buildHostTree, type HostDescription } from "../../lib/testing/host_tree.ts";
import { generateHost } from "../../lib/testing/host_generator.ts";
import { commandLspciRunner } from "../../lib/host/lspci.ts";
import { lspciVerboseFacts } from "../helpers/lspci_verbose.ts";
import { nicDescription as dev } from "../helpers/devices.ts";

const VIRTIO = new URL("../fixtures/config_space/virtio-vm/", import.meta.url);

/** What `lspci -vvvnnkD` says about FLR and serials for every device of the tree at `root`. */
async function lspciFacts(root: string | null): Promise<Map<string, ConfigSpaceFacts>> {
  const args = ["-vvvnnkD"];
  if (root !== null) args.unshift("-O", `sysfs.path=${root}/bus/pci`);
  return lspciVerboseFacts(await commandLspciRunner()(args));
}

/** FLR and serial from a whole `config` file's bytes. */
function flrAndSerial(bytes: Uint8Array): ConfigSpaceFacts {
  const { flr, serial } = readConfigSpace(bufferConfigReader(bytes));
  return { flr, serial };
}

/** Our reading of every device's `config` in the tree at `root`. */
function configFacts(root: string): Map<string, ConfigSpaceFacts> {
  const dir = `${root}/bus/pci/devices`;
  const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  return new Map(names.map((n) => [n, flrAndSerial(Deno.readFileSync(`${dir}/${n}/config`))]));
}

async function withTree<T>(
  description: HostDescription,
  edit: (root: string) => void,
  fn: (root: string) => Promise<T>,
): Promise<T> {
  const root = await Deno.makeTempDir({ prefix: "passthrough-config-" });
  try {
    buildHostTree(description, root);
    edit(root);
    return await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/** Rewrites bytes of one device's config file. */
function patch(root: string, bdf: string, edits: Record<number, number>): void {
  const path = `${root}/bus/pci/devices/${bdf}/config`;
  const bytes = Deno.readFileSync(path);
  for (const [at, value] of Object.entries(edits)) bytes[Number(at)] = value;
  Deno.writeFileSync(path, bytes);
}

Deno.test("flrAndSerial() reads FLR and serials from configs built by host_tree.ts", async () => {
  await withTree(
    {
      devices: [
        dev("0000:01:00.0", { flr: true, serial: "00-11-22-ff-ff-33-44-55" }),
        dev("0000:02:00.0", { group: 2, flr: false, serial: "a0-b1-c2-d3-e4-f5-06-17" }),
        dev("0000:03:00.0", { group: 3, flr: true }),
        dev("0000:04:00.0", { group: 4, flr: false }),
        dev("0000:05:00.0", { group: 5 }),
      ],
    },
    () => {},
    (root) => {
      assertEquals([...configFacts(root).values()], [
        { flr: true, serial: "00-11-22-ff-ff-33-44-55" },
        { flr: false, serial: "a0-b1-c2-d3-e4-f5-06-17" },
        { flr: true, serial: null },
        { flr: false, serial: null },
        // Only the 64-byte header, as an unprivileged read of a real device: unknown.
        { flr: null, serial: null },
      ]);
      return Promise.resolve();
    },
  );
});

Deno.test("flrAndSerial() agrees with lspci -vvv on a generated host of 256 functions", async () => {
  await withTree(generateHost(256), () => {}, async (root) => {
    const ours = configFacts(root);
    const theirs = await lspciFacts(root);
    assertEquals(theirs.size, 256);
    assertEquals(ours, theirs);
    const values = [...ours.values()];
    assertOk(values.some((f) => f.flr === true) && values.some((f) => f.flr === false));
    assertOk(values.some((f) => f.serial !== null));
  });
});

Deno.test("flrAndSerial() agrees with lspci -vvv on edited capability lists", async () => {
  const devices = [
    dev("0000:01:00.0", { flr: true }), // root port below: FLR bit set but not an endpoint
    dev("0000:02:00.0", { group: 2, flr: false }), // AF capability with FLR
    dev("0000:03:00.0", { group: 3, flr: false }), // chain loops back on itself
    dev("0000:04:00.0", { group: 4, flr: false }), // chain broken (id 0xff)
    dev("0000:05:00.0", { group: 5 }), // no capability list at all (Status Cap-)
    dev("0000:06:00.0", { group: 6, flr: true, serial: "01-02-03-04-05-06-07-08" }), // DSN second
    dev("0000:07:00.0", { group: 7, flr: true }), // legacy endpoint with FLR
    dev("0000:08:00.0", { group: 8, flr: false, serial: "01-02-03-04-05-06-07-09" }), // no ext
  ];
  await withTree({ devices }, (root) => {
    patch(root, "0000:01:00.0", { 0x42: 0x42 }); // PCIe type 4: root port
    patch(root, "0000:02:00.0", { 0x41: 0x50, 0x50: 0x13, 0x51: 0x00, 0x53: 0x03 });
    patch(root, "0000:03:00.0", { 0x41: 0x40 });
    patch(root, "0000:04:00.0", { 0x41: 0x60, 0x60: 0xff });
    patch(root, "0000:05:00.0", { 0x06: 0x00 });
    // A vendor-specific extended capability at 0x100 pointing at the DSN moved to 0x140.
    const path = `${root}/bus/pci/devices/0000:06:00.0/config`;
    const bytes = Deno.readFileSync(path);
    bytes.copyWithin(0x140, 0x100, 0x10c);
    new DataView(bytes.buffer).setUint32(0x100, (0x140 << 20) | (1 << 16) | 0x000b, true);
    Deno.writeFileSync(path, bytes);
    patch(root, "0000:07:00.0", { 0x42: 0x12 }); // PCIe type 1: legacy endpoint
    patch(root, "0000:08:00.0", { 0x40: 0x01 }); // power management instead of PCIe: no ext caps
  }, async (root) => {
    const ours = configFacts(root);
    assertEquals(ours, await lspciFacts(root));
    assertEquals([...ours.values()], [
      { flr: false, serial: null },
      { flr: true, serial: null },
      { flr: false, serial: null },
      { flr: false, serial: null },
      { flr: false, serial: null },
      { flr: true, serial: "01-02-03-04-05-06-07-08" },
      { flr: true, serial: null },
      { flr: false, serial: null },
    ]);
  });
});

Deno.test("flrAndSerial() reads this kind of virtio VM as lspci -vvv did (captured files)", () => {
  const records = lspciVerboseFacts(
    Deno.readTextFileSync(new URL("../fixtures/hosts/lspci-virtio-vm.txt", import.meta.url)),
  );
  assertEquals(records.size, 6);
  for (const [address, facts] of records) {
    const bytes = Deno.readFileSync(new URL(`${address.replaceAll(":", "-")}.config`, VIRTIO));
    assertEquals(flrAndSerial(bytes), facts, address);
  }
});

Deno.test({
  name: "flrAndSerial() agrees with lspci -vvv on this machine's /sys",
  ignore: livePciMissing() !== null,
  async fn() {
    const theirs = await lspciFacts(null);
    assertEquals(configFacts("/sys"), theirs);
  },
});

Deno.test("flrAndSerial() answers unknown for truncated or empty configs", () => {
  assertEquals(flrAndSerial(new Uint8Array(0)), { flr: null, serial: null });
  const header = new Uint8Array(64);
  header[0x06] = 0x10;
  header[0x34] = 0x40;
  assertEquals(flrAndSerial(header), { flr: null, serial: null });
  // A capability list flag with a null pointer: nothing listed, as lspci prints nothing.
  header[0x34] = 0;
  assertEquals(flrAndSerial(header), { flr: null, serial: null });
});

/** `read` wrapped to count the bytes asked for. */
function counting(read: (offset: number, length: number) => Uint8Array) {
  const counter = {
    bytes: 0,
    calls: 0,
    read: (offset: number, length: number) => {
      counter.calls++;
      counter.bytes += length;
      return read(offset, length);
    },
  };
  return counter;
}

Deno.test("readConfigSpace() reads only the visited registers and finds what the whole file gives", async () => {
  await withTree(generateHost(256), () => {}, (root) => {
    const dir = `${root}/bus/pci/devices`;
    let asked = 0;
    let whole = 0;
    for (const name of [...Deno.readDirSync(dir)].map((e) => e.name)) {
      const bytes = Deno.readFileSync(`${dir}/${name}/config`);
      const counter = counting(bufferConfigReader(bytes));
      const facts = readConfigSpace(counter.read);
      assertEquals({ flr: facts.flr, serial: facts.serial }, flrAndSerial(bytes), name);
      assertEquals([facts.revision, facts.headerType], [bytes[8], bytes[0x0e]! & 0x7f], name);
      asked += counter.bytes;
      whole += bytes.length;
    }
    // The generated configs are 64 to 4,096 bytes; the walk needs a few dozen of them.
    assertOk(asked * 10 < whole, `asked for ${asked} of ${whole} bytes`);
    return Promise.resolve();
  });
});

Deno.test({
  name: "libc openFile() reads this machine's /sys config at offsets, as the whole file reads",
  ignore: livePciMissing() !== null,
  fn() {
    const reader = libcSysfsReader();
    for (const name of reader.listDir("/sys/bus/pci/devices") ?? []) {
      const path = `/sys/bus/pci/devices/${name}/config`;
      const bytes = reader.readBytes(path, 4096);
      assertOk(bytes !== null && bytes.length >= 64, name);
      using file = reader.openFile(path);
      assertOk(file !== null, name);
      const counter = counting((offset, length) => file.readAt(offset, length));
      const sparse = readConfigSpace(counter.read);
      assertEquals(sparse, readConfigSpace(bufferConfigReader(bytes)), name);
      assertOk(counter.bytes <= 128, `${name}: ${counter.bytes} bytes in ${counter.calls} reads`);
      // Past the end of the space, and the header again at its offset.
      assertEquals(file.readAt(bytes.length, 4).length, 0, name);
      assertEquals(file.readAt(8, 1)[0], bytes[8], name);
    }
    assertEquals(reader.openFile("/sys/bus/pci/devices/nope"), null);
  },
});
