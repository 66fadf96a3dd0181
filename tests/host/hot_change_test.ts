/**
 * Discovery while the host changes under it: sysfs is no snapshot, so a PCI function can be
 * hot-removed or added (a Thunderbolt dock, PCIe hotplug, `echo 1 > remove`, `rescan`, SR-IOV VFs
 * created or destroyed) between listing `bus/pci/devices` and reading a function's files, and
 * `lspci` runs beside the sysfs reads. The tree is changed at exact points through the injected
 * reader and lspci runner. Discovery gives either a view of one moment or a one-line error.
 */

import { assertEquals, assertMatch, assertOk, assertRejects } from "../helpers/assert.ts";
import { buildHostTree, type HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import { discoverHost, HostChangedError } from "../../lib/host/discover.ts";
import { commandLspciRunner, LspciError, type LspciRunner } from "../../lib/host/lspci.ts";
import { denoFsReader, type SysfsReader } from "../../lib/host/sysfs.ts";
import { writeSnapshot } from "../../lib/host/snapshot.ts";

function existsSync(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function device(
  bdf: string,
  group: number,
  [cls, vendor, id, driver]: [string, string, string, string | null],
): HostDeviceDescription {
  return {
    bdf,
    group,
    class: cls,
    vendor,
    device: id,
    subsystem_vendor: null,
    subsystem_device: null,
    driver,
    revision: "0xa1",
  };
}

const AUDIO = "0000:01:00.1";

/** A GPU and its audio function in group 1, an NVMe drive in group 2. */
async function withTree(fn: (root: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hot-change-" });
  try {
    buildHostTree({
      devices: [
        device("0000:00:00.0", 0, ["0x060000", "0x8086", "0x3e30", null]),
        device("0000:01:00.0", 1, ["0x030000", "0x10de", "0x1b80", "nouveau"]),
        device(AUDIO, 1, ["0x040300", "0x10de", "0x10f0", "snd_hda_intel"]),
        device("0000:03:00.0", 2, ["0x010802", "0x144d", "0xa808", "nvme"]),
      ],
    }, `${dir}/sysfs`);
    await fn(`${dir}/sysfs`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Hot-removes `address` as the kernel does: its device entry and its group's member link. */
function hotRemove(root: string, address: string, group: number): void {
  Deno.renameSync(`${root}/bus/pci/devices/${address}`, `${root}/.${address}`);
  Deno.renameSync(
    `${root}/kernel/iommu_groups/${group}/devices/${address}`,
    `${root}/.${address}.group`,
  );
}

/** Puts back what {@link hotRemove} took away (a `rescan`). */
function hotAdd(root: string, address: string, group: number): void {
  Deno.renameSync(`${root}/.${address}`, `${root}/bus/pci/devices/${address}`);
  Deno.renameSync(
    `${root}/.${address}.group`,
    `${root}/kernel/iommu_groups/${group}/devices/${address}`,
  );
}

/** A reader that calls `onList` each time `bus/pci/devices` has just been listed. */
function listingHook(root: string, onList: (count: number) => void): SysfsReader {
  const base = denoFsReader();
  let count = 0;
  return {
    ...base,
    listDir(path) {
      const names = base.listDir(path);
      if (path === `${root}/bus/pci/devices`) onList(++count);
      return names;
    },
  };
}

Deno.test("discoverHost() reads again when a function is hot-removed between listing and reading it: no ffff:ffff device", async () => {
  await withTree(async (root) => {
    const reader = listingHook(root, (count) => {
      if (count === 1) hotRemove(root, AUDIO, 1);
    });
    const host = await discoverHost({ root, reader, lspci: null });
    // Before: the listed but vanished function was read as vendor ffff, class 000000, no group.
    assertEquals(host.devices.map((d) => [d.address, d.vendorId]), [
      ["0000:00:00.0", "8086"],
      ["0000:01:00.0", "10de"],
      ["0000:03:00.0", "144d"],
    ]);
    assertEquals(host.groupInconsistencies, []);
    assertEquals(host.groups.map((g) => [g.group, g.devices.map((d) => d.address)]), [
      [0, ["0000:00:00.0"]],
      [1, ["0000:01:00.0"]],
      [2, ["0000:03:00.0"]],
    ]);
  });
});

Deno.test("discoverHost() reads again when a function is hot-removed after its entry was read, before the group listings", async () => {
  await withTree(async (root) => {
    const base = denoFsReader();
    let removed = false;
    const reader: SysfsReader = {
      ...base,
      listDir(path) {
        if (!removed && path === `${root}/kernel/iommu_groups`) {
          removed = true;
          hotRemove(root, AUDIO, 1);
        }
        return base.listDir(path);
      },
    };
    const host = await discoverHost({ root, reader, lspci: null });
    // Before: the function read before it went was kept, and its group refused as inconsistent.
    assertEquals(host.groupInconsistencies, []);
    assertEquals(host.devices.map((d) => d.address), [
      "0000:00:00.0",
      "0000:01:00.0",
      "0000:03:00.0",
    ]);
  });
});

Deno.test("discoverHost() reads again when a function is hot-added after the listing: its group is whole", async () => {
  await withTree(async (root) => {
    hotRemove(root, AUDIO, 1);
    const reader = listingHook(root, (count) => {
      if (count === 1) hotAdd(root, AUDIO, 1);
    });
    const host = await discoverHost({ root, reader, lspci: null });
    // Before: the group listing named a function the listing missed (a refusal of group 1).
    assertEquals(host.groupInconsistencies, []);
    assertEquals(host.groups.find((g) => g.group === 1)?.devices.map((d) => d.address), [
      "0000:01:00.0",
      AUDIO,
    ]);
  });
});

Deno.test("discoverHost() fails in one line naming the function when the host keeps changing on every read", async () => {
  await withTree(async (root) => {
    // A function that comes and goes at every listing (a flapping link, a loop of remove/rescan).
    let present = true;
    const reader = listingHook(root, () => {
      if (present) hotRemove(root, AUDIO, 1);
      else hotAdd(root, AUDIO, 1);
      present = !present;
    });
    const error = await rejection(discoverHost({ root, reader, lspci: null }));
    assertMatch(
      error.message,
      new RegExp(
        `^The PCI devices of "${root}" changed while they were read \\(${AUDIO} (appeared|vanished)\\): run again once the host's devices settle$`,
      ),
    );
    assertOk(!error.message.includes("\n"));
  });
});

/** The {@link HostChangedError} `promise` rejects with; fails when it resolves or rejects else. */
async function rejection(promise: Promise<unknown>): Promise<HostChangedError> {
  try {
    await promise;
  } catch (error) {
    assertOk(error instanceof HostChangedError, `${error}`);
    return error;
  }
  throw new Error("Expected a HostChangedError, but discovery succeeded");
}

/** pcilib's complaint when a function it listed is gone before it opens its files. */
function pcilibVanished(root: string, address: string): LspciError {
  const args = ["-O", `sysfs.path=${root}/bus/pci`, "-nnkD"];
  return new LspciError(
    `"lspci ${
      args.join(" ")
    }" failed with exit code 1: pcilib: Cannot open ${root}/bus/pci/devices/${address}/config\nlspci: Cannot open ${root}/bus/pci/devices/${address}/vendor: No such file or directory`,
    args,
  );
}

Deno.test("discoverHost() runs lspci again when a function vanished under it, and keeps its names", async () => {
  await withTree(async (root) => {
    const real = commandLspciRunner();
    let runs = 0;
    const lspci: LspciRunner = (args) => {
      runs++;
      return runs === 1 ? Promise.reject(pcilibVanished(root, AUDIO)) : real(args);
    };
    const host = await discoverHost({ root, reader: denoFsReader(), lspci });
    // Before: the whole discovery failed with lspci's two-line pcilib error.
    assertEquals(runs, 2);
    assertEquals(host.devices.length, 4);
    assertOk(host.devices.every((d) => d.className !== null), "lspci's names kept");
  });
});

Deno.test("discoverHost() says the host changed when lspci keeps failing on a function sysfs does not see", async () => {
  await withTree(async (root) => {
    hotRemove(root, AUDIO, 1);
    const lspci: LspciRunner = () => Promise.reject(pcilibVanished(root, AUDIO));
    const error = await rejection(discoverHost({ root, reader: denoFsReader(), lspci }));
    assertMatch(error.message, new RegExp(`\\(${AUDIO} vanished\\): run again`));
  });
});

Deno.test("discoverHost() keeps lspci's own error when the function it cannot read is still there", async () => {
  await withTree(async (root) => {
    // A captured tree missing a file lspci needs: not a change, and not reported as one.
    const lspci: LspciRunner = () => Promise.reject(pcilibVanished(root, AUDIO));
    await assertRejects(
      () => discoverHost({ root, reader: denoFsReader(), lspci }),
      LspciError,
      "pcilib: Cannot open",
    );
  });
});

Deno.test("writeSnapshot() of a function hot-removed after discovery fails in one line and writes nothing", async () => {
  await withTree(async (root) => {
    const host = await discoverHost({ root, lspci: null });
    hotRemove(root, AUDIO, 1);
    const out = `${root}/../snapshot`;
    // Before: the snapshot held the function as a directory of nothing, read back from it as an
    // ffff:ffff device of class 000000 still in group 1.
    let message = "";
    try {
      writeSnapshot(host, out, { root, reader: denoFsReader() });
    } catch (error) {
      message = (error as Error).message;
    }
    assertMatch(
      message,
      new RegExp(
        `^Cannot write snapshot to ".*": The PCI devices of ".*" changed while they were read \\(${AUDIO} vanished\\): run again once the host's devices settle; nothing was left there$`,
      ),
    );
    assertEquals(existsSync(out), false);
  });
});

Deno.test("discoverHost() runs lspci again when it missed a function hot-added before sysfs was listed", async () => {
  await withTree(async (root) => {
    hotRemove(root, AUDIO, 1);
    let runs = 0;
    // lspci lists the host, then the function arrives before discovery lists bus/pci/devices.
    const lspci: LspciRunner = (args) => {
      runs++;
      const output = new Deno.Command("lspci", { args, stdout: "piped", stderr: "null" })
        .outputSync();
      if (runs === 1) hotAdd(root, AUDIO, 1);
      return Promise.resolve(new TextDecoder().decode(output.stdout));
    };
    const host = await discoverHost({ root, reader: denoFsReader(), lspci });
    const audio = host.devices.find((d) => d.address === AUDIO);
    // Before: sysfs's function had no lspci record: no names, no kernel modules.
    assertEquals([runs, audio?.className], [2, "Audio device"]);
  });
});
