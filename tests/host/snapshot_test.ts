// snapshot round trips: a captured tree reads back as the same host, with the real lspci.
import { assertEquals, assertThrows } from "../helpers/assert.ts";
import {
  buildHostTree,
  type HostDescription,
  loadHostDescription,
} from "../../lib/testing/host_tree.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { SnapshotTargetError, writeSnapshot } from "../../lib/host/snapshot.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { generateHost } from "../../lib/testing/host_generator.ts";

const HOSTS = new URL("../fixtures/hosts/", import.meta.url);

async function roundTrip(description: HostDescription): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "passthrough-snap-src-" });
  const out = `${await Deno.makeTempDir({ prefix: "passthrough-snap-" })}/tree`;
  try {
    buildHostTree(description, root);
    const before = await discoverHost({ root });
    writeSnapshot(before, out, { root, reader: denoFsReader() });
    const after = await discoverHost({ root: out });
    assertEquals({ ...after, source: root }, before);
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(out.slice(0, -"/tree".length), { recursive: true });
  }
}

for (const name of ["x570-aorus-pro-wifi", "c246-cx4lx-sriov", "hp-dl380p-g8"]) {
  Deno.test(`writeSnapshot() of the "${name}" tree reads back as the same host`, async () => {
    await roundTrip(loadHostDescription(new URL(`${name}.json`, HOSTS)));
  });
}

Deno.test("writeSnapshot() keeps SR-IOV links, serials, FLR, slots, cmdline and host use", async () => {
  const host = generateHost(120, { vfsPerNic: 8 });
  host.host_use = [
    { address: "0000:00:1f.2", reason: "mounted-filesystem", detail: "/ on sda2" },
  ];
  await roundTrip(host);
});

Deno.test({
  name: "writeSnapshot() of the live /sys reads back as this host",
  ignore: (() => {
    try {
      return !Deno.statSync("/sys/bus/pci/devices").isDirectory;
    } catch {
      return true;
    }
  })(),
  async fn() {
    const { libcSysfsReader } = await import("../../ffi/libc_fs.ts");
    const reader = libcSysfsReader();
    const out = `${await Deno.makeTempDir({ prefix: "passthrough-live-" })}/tree`;
    try {
      const live = await discoverHost({ reader });
      writeSnapshot(live, out, { root: "/sys", reader });
      const again = await discoverHost({ root: out });
      assertEquals({ ...again, source: "/sys" }, live);
    } finally {
      await Deno.remove(out.slice(0, -"/tree".length), { recursive: true });
    }
  },
});

Deno.test("writeSnapshot() refuses a target that is not empty", async () => {
  const dir = await Deno.makeTempDir();
  try {
    Deno.writeTextFileSync(`${dir}/keep`, "x");
    const host = {
      source: "x",
      iommu: "absent" as const,
      devices: [],
      groups: [],
      groupInconsistencies: [],
      kernelCmdline: null,
      hostUse: [],
    };
    assertThrows(
      () => writeSnapshot(host, dir, { root: dir, reader: denoFsReader() }),
      SnapshotTargetError,
    );
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["keep"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
