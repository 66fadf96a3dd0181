/**
 * The host's storage as host use on a running host (`readHostUse` with `live: true`): besides
 * mounted filesystems, swap partitions, block devices that device-mapper or md holds (an LVM volume
 * group of VM disks, mounted or not), and the disks of imported ZFS pools. A built sysfs tree with
 * `class/block` laid out as the kernel lays it out (partitions under their disk, `holders` and
 * `slaves` links, `dm/name`), a `/proc` and a udev database of its own.
 */

import { ROUTE_HEADER } from "../helpers/hosts.ts";
import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
import { blockDeviceControllers, readHostUse } from "../../lib/host/sysfs_device.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import type { PciDevice } from "../../lib/host/types.ts";
import { nvmeDescription } from "../../lib/testing/host_generator.ts";

/** Six NVMe controllers, one disk each (`nvme0n1` at 0000:01:00.0, ...). */
const NVME = [1, 2, 3, 4, 5, 6].map((bus) => `0000:0${bus}:00.0`);

/** What a host's storage is, as the files that say so. */
interface Storage {
  /** `/proc/self/mountinfo` lines ({@link mount}); `null`: no such file. */
  mounts?: string[] | null;
  /**
   * `false`: no `/proc/net/route` (a `/proc` mounted with `subset=pid`); a number: the table's
   * header followed by that many zero bytes (a sparse file, no disk used).
   */
  routes?: false | number;
  /** Mounted btrfs filesystems: UUID to the devices `/sys/fs/btrfs/UUID/devices` lists. */
  btrfs?: Record<string, string[]>;
  /**
   * A dual-port NVMe drive under native multipath: `nvme9n1` (259:40) and `nvme9n1p1` (259:41)
   * hang under `nvme-subsys9`, whose controllers sit on the 5th and 6th NVMe functions.
   */
  multipath?: boolean;
  swaps?: string[];
  /** Device-mapper and md devices: name, `dm/name` (empty for md), the partitions they stand on. */
  dm?: [string, string, string[]][];
  /** Imported pools (`/proc/spl/kstat/zfs/POOL/state`). */
  pools?: string[];
  /**
   * udev's probe of a disk: its name and `E:` lines. Every other block device has a record
   * without a filesystem type, except the `unprobed` ones, which have none.
   */
  udev?: [string, string[]][];
  /** Block devices udev has no record of. */
  unprobed?: string[];
  /** Block devices the kernel hides (`hidden` 1, no `dev`: no number, no `/dev` node). */
  hidden?: string[];
  /** `false`: no udev database at all (a host without udev's daemon). */
  udevDatabase?: false;
}

/** `readHostUse` over the tree, as `[address, reason, detail]`. */
async function storageUse(storage: Storage) {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-storage-use-" });
  try {
    buildHostTree({
      devices: NVME.map((bdf, i) => nvmeDescription(bdf, i + 1)),
    }, dir);
    Deno.mkdirSync(`${dir}/class/block`, { recursive: true });
    NVME.forEach((bdf, i) => {
      const disk = `devices/pci0000:00/0000:00:01.${i}/${bdf}/nvme/nvme${i}/nvme${i}n1`;
      block(dir, `nvme${i}n1`, disk, `259:${i * 4}`);
      for (const p of [1, 2, 3]) {
        block(dir, `nvme${i}n1p${p}`, `${disk}/nvme${i}n1p${p}`, `259:${i * 4 + p}`);
      }
    });
    if (storage.multipath) {
      const subsystem = `${dir}/devices/virtual/nvme-subsystem/nvme-subsys9`;
      Deno.mkdirSync(subsystem, { recursive: true });
      for (const i of [4, 5]) {
        const controller = `devices/pci0000:00/0000:00:01.${i}/${NVME[i]}/nvme/nvme${i}`;
        Deno.symlinkSync(`../../../../${controller}`, `${subsystem}/nvme${i}`);
      }
      const disk = "devices/virtual/nvme-subsystem/nvme-subsys9/nvme9n1";
      block(dir, "nvme9n1", disk, "259:40");
      block(dir, "nvme9n1p1", `${disk}/nvme9n1p1`, "259:41");
    }
    for (const [uuid, devices] of Object.entries(storage.btrfs ?? {})) {
      Deno.mkdirSync(`${dir}/fs/btrfs/${uuid}/devices`, { recursive: true });
      for (const name of devices) {
        Deno.symlinkSync(
          `../../../../class/block/${name}`,
          `${dir}/fs/btrfs/${uuid}/devices/${name}`,
        );
      }
    }
    for (const [dm, name, slaves] of storage.dm ?? []) {
      block(dir, dm, `devices/virtual/block/${dm}`, `253:${dm.replace(/\D/g, "")}`);
      // An md device has no dm directory.
      if (name === "") Deno.removeSync(`${dir}/devices/virtual/block/${dm}/dm`);
      else Deno.writeTextFileSync(`${dir}/devices/virtual/block/${dm}/dm/name`, `${name}\n`);
      for (const slave of slaves) {
        const at = Deno.readLinkSync(`${dir}/class/block/${slave}`).replace("../../", "");
        Deno.symlinkSync(`../../${slave}`, `${dir}/devices/virtual/block/${dm}/slaves/${slave}`);
        Deno.symlinkSync(`../../../${dm}`, `${dir}/${at}/holders/${dm}`);
      }
    }
    Deno.mkdirSync(`${dir}/proc/self`, { recursive: true });
    // No routes: the IPv4 table's header alone (the host-use scan reads it).
    Deno.mkdirSync(`${dir}/proc/net`);
    if (storage.routes !== false) Deno.writeTextFileSync(`${dir}/proc/net/route`, ROUTE_HEADER);
    if (typeof storage.routes === "number") {
      Deno.truncateSync(`${dir}/proc/net/route`, ROUTE_HEADER.length + storage.routes);
    }
    if (storage.mounts !== null) {
      Deno.writeTextFileSync(`${dir}/proc/self/mountinfo`, (storage.mounts ?? []).join("\n"));
    }
    Deno.writeTextFileSync(
      `${dir}/proc/swaps`,
      ["Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority", ...storage.swaps ?? []].join("\n"),
    );
    const kstat = `${dir}/proc/spl/kstat/zfs`;
    Deno.mkdirSync(kstat, { recursive: true });
    Deno.writeTextFileSync(`${kstat}/arcstats`, "");
    for (const pool of storage.pools ?? []) {
      Deno.mkdirSync(`${kstat}/${pool}`);
      Deno.writeTextFileSync(`${kstat}/${pool}/state`, "ONLINE\n");
    }
    for (const name of storage.hidden ?? []) {
      Deno.writeTextFileSync(`${dir}/class/block/${name}/hidden`, "1\n");
      Deno.removeSync(`${dir}/class/block/${name}/dev`);
    }
    if (storage.udevDatabase !== false) {
      Deno.mkdirSync(`${dir}/run/udev/data`, { recursive: true });
      const probed = new Map(storage.udev ?? []);
      for (const { name: disk } of Deno.readDirSync(`${dir}/class/block`)) {
        if (storage.unprobed?.includes(disk)) continue;
        const number = Deno.readTextFileSync(`${dir}/class/block/${disk}/dev`).trim();
        const lines = probed.get(disk) ?? ["E:SUBSYSTEM=block", `E:DEVNAME=/dev/${disk}`];
        Deno.writeTextFileSync(`${dir}/run/udev/data/b${number}`, lines.join("\n"));
      }
    }
    const devices = NVME.map((address) => ({ address }) as PciDevice);
    return readHostUse(denoFsReader(), {
      root: dir,
      live: true,
      devices,
      procRoot: `${dir}/proc`,
      udevDataDir: `${dir}/run/udev/data`,
    })?.map((u) => [u.address, u.reason, u.detail]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A block device at `path` (under the tree), listed in `class/block`, with `holders` and `dev`. */
function block(dir: string, name: string, path: string, number: string): void {
  Deno.mkdirSync(`${dir}/${path}/holders`, { recursive: true });
  Deno.mkdirSync(`${dir}/${path}/slaves`, { recursive: true });
  Deno.mkdirSync(`${dir}/${path}/dm`, { recursive: true });
  Deno.writeTextFileSync(`${dir}/${path}/dev`, `${number}\n`);
  Deno.symlinkSync(`../../${path}`, `${dir}/class/block/${name}`);
  Deno.mkdirSync(`${dir}/dev/block`, { recursive: true });
  Deno.symlinkSync(`../../${path}`, `${dir}/dev/block/${number}`);
}

/** A `/proc/self/mountinfo` line: the device number, mount point, type and source. */
function mount(number: string, target: string, type: string, source: string): string {
  return `36 1 ${number} / ${target} rw,relatime shared:1 - ${type} ${source} rw`;
}

/** A `/proc/swaps` line for a partition or a file. */
function swap(path: string, type = "partition"): string {
  return `${path}\t${type}\t\t8388604\t\t0\t\t-2`;
}

/** udev's probe of a ZFS pool's disk. */
function zfsMember(pool: string): string[] {
  return [
    "S:disk/by-id/nvme-x",
    "E:ID_FS_TYPE=zfs_member",
    `E:ID_FS_LABEL=${pool}`,
    "E:ID_FS_USAGE=filesystem",
  ];
}

Deno.test("readHostUse(): a swap partition's controller; a swap file is its filesystem's", async () => {
  assertEquals(await storageUse({ swaps: [swap("/dev/nvme1n1p3")] }), [
    [NVME[1], "swap", "swap on nvme1n1p3"],
  ]);
  // A swap file lives on a filesystem; with that filesystem mounted, the mount names the controller.
  assertEquals(
    await storageUse({
      mounts: [mount("259:9", "/srv/my\\040data", "ext4", "/dev/nvme2n1p1")],
      swaps: [swap("/srv/my\\040data/swapfile", "file"), swap("/dev/zram0")],
    }),
    [[NVME[2], "mounted-filesystem", "/srv/my data on nvme2n1p1"]],
  );
});

Deno.test("readHostUse(): a swap partition listed past the first 64 KiB of /proc/swaps is still the host's", async () => {
  // Thousands of swap files (a host that adds one per tenant) before the partition.
  const files = Array.from({ length: 2000 }, (_, i) => swap(`/var/swap/tenant-${i}`, "file"));
  assertEquals(files.join("\n").length > 65536, true);
  assertEquals(await storageUse({ swaps: [...files, swap("/dev/nvme1n1p3")] }), [
    [NVME[1], "swap", "swap on nvme1n1p3"],
  ]);
});

Deno.test("readHostUse(): a controller with a mounted filesystem is named by the mount alone", async () => {
  assertEquals(
    await storageUse({
      mounts: [mount("259:2", "/", "ext4", "/dev/nvme0n1p2")],
      swaps: [swap("/dev/nvme0n1p3")],
      dm: [["dm-0", "vg-data", ["nvme0n1p1"]]],
    }),
    [[NVME[0], "mounted-filesystem", "/ on nvme0n1p2"]],
  );
});

Deno.test("readHostUse(): a disk that device-mapper or md holds, mounted or not, and swap on LVM", async () => {
  assertEquals(
    await storageUse({
      dm: [
        ["dm-0", "vg-vms", ["nvme3n1p1", "nvme4n1p1"]],
        ["dm-1", "vg-swap", ["nvme3n1p2"]],
        ["md127", "", ["nvme5n1p1"]],
      ],
      swaps: [swap("/dev/dm-1")],
    }),
    [
      [NVME[3], "block-holder", "nvme3n1p1 held by dm-0 (vg-vms)"],
      [NVME[3], "block-holder", "nvme3n1p2 held by dm-1 (vg-swap)"],
      [NVME[3], "swap", "swap on dm-1"],
      [NVME[4], "block-holder", "nvme4n1p1 held by dm-0 (vg-vms)"],
      [NVME[5], "block-holder", "nvme5n1p1 held by md127"],
    ],
  );
});

Deno.test("readHostUse(): the disks of an imported ZFS pool, not those of a pool that is not imported", async () => {
  assertEquals(
    await storageUse({
      pools: ["tank"],
      udev: [
        ["nvme1n1p1", zfsMember("tank")],
        ["nvme2n1", zfsMember("tank")],
        ["nvme3n1p1", zfsMember("exported")],
        ["nvme4n1p1", ["E:ID_FS_TYPE=ext4", "E:ID_FS_LABEL=tank"]],
      ],
    }),
    [
      [NVME[1], "zfs-pool", "ZFS pool tank on nvme1n1p1"],
      [NVME[2], "zfs-pool", "ZFS pool tank on nvme2n1"],
    ],
  );
  // Without an imported pool, udev's database is not read: a member alone is no use.
  assertEquals(await storageUse({ udev: [["nvme1n1p1", zfsMember("tank")]] }), []);
});

Deno.test("readHostUse(): a disk udev has no record of may be an imported pool's, and counts as one", async () => {
  assertEquals(
    await storageUse({
      pools: ["tank", "backup"],
      udev: [["nvme1n1p1", zfsMember("tank")]],
      unprobed: ["nvme3n1p2"],
    }),
    [
      [NVME[1], "zfs-pool", "ZFS pool tank on nvme1n1p1"],
      [
        NVME[3],
        "zfs-pool",
        "ZFS pool backup or tank may be on nvme3n1p2: udev has no record of that disk",
      ],
    ],
  );
  // Without udev's daemon there is no database: every disk may be a member, one use per disk.
  const uses = await storageUse({ pools: ["tank"], udevDatabase: false });
  assertEquals(uses?.length, 6 * 4);
  const [address, reason, detail] = uses![0]!;
  assertEquals([address, reason], [NVME[0], "zfs-pool"]);
  assertMatch(
    detail!,
    /^ZFS pool tank may be on nvme0n1: udev has no database \(\/.+\/run\/udev\/data\) to say which disks it is on$/,
  );
  // A hidden disk (as the paths of a multipath NVMe drive, nvme5c5n1, are) has no number, no
  // /dev node and no record.
  assertEquals(
    await storageUse({ pools: ["tank"], unprobed: ["nvme5n1"], hidden: ["nvme5n1"] }),
    [],
  );
  // No pool imported: no disk is asked about, with or without udev.
  assertEquals(await storageUse({ udevDatabase: false, unprobed: ["nvme1n1"] }), []);
});

Deno.test("readHostUse(): storage nothing uses is no host use", async () => {
  assertEquals(
    await storageUse({
      mounts: [mount("0:25", "/tmp", "tmpfs", "tmpfs"), mount("0:48", "/tank", "zfs", "tank/data")],
      swaps: [swap("/dev/zram0")],
    }),
    [],
  );
});

Deno.test("readHostUse(): a root the mount table calls /dev/root, a filesystem on several disks", async () => {
  assertEquals(
    await storageUse({
      mounts: [
        // Mounted by the kernel without an initramfs: only the device number says which disk.
        mount("259:6", "/", "ext4", "/dev/root"),
        mount("0:40", "/data", "bcachefs", "/dev/nvme2n1p1:/dev/nvme3n1p1"),
        mount("0:33", "/srv", "btrfs", "/dev/nvme4n1p1"),
      ],
      btrfs: { "5e1f0c2a-0d6b-4f7e-9a52-1b2c3d4e5f60": ["nvme4n1p1", "nvme5n1p1"] },
    }),
    [
      [NVME[1], "mounted-filesystem", "/ on nvme1n1p2"],
      [NVME[2], "mounted-filesystem", "/data on nvme2n1p1"],
      [NVME[3], "mounted-filesystem", "/data on nvme3n1p1"],
      [NVME[4], "mounted-filesystem", "/srv on nvme4n1p1"],
      [NVME[4], "mounted-filesystem", "btrfs 5e1f0c2a-0d6b-4f7e-9a52-1b2c3d4e5f60 on nvme4n1p1"],
      [NVME[5], "mounted-filesystem", "btrfs 5e1f0c2a-0d6b-4f7e-9a52-1b2c3d4e5f60 on nvme5n1p1"],
    ],
  );
});

Deno.test("readHostUse(): a disk under NVMe native multipath names every controller of its subsystem", async () => {
  assertEquals(
    await storageUse({
      multipath: true,
      mounts: [mount("259:41", "/var/lib/libvirt", "xfs", "/dev/nvme9n1p1")],
    }),
    [
      [NVME[4], "mounted-filesystem", "/var/lib/libvirt on nvme9n1p1"],
      [NVME[5], "mounted-filesystem", "/var/lib/libvirt on nvme9n1p1"],
    ],
  );
  // LVM on it, nothing mounted: held, on both controllers.
  assertEquals(
    await storageUse({ multipath: true, dm: [["dm-0", "vg-vms", ["nvme9n1p1"]]] }),
    [
      [NVME[4], "block-holder", "nvme9n1p1 held by dm-0 (vg-vms)"],
      [NVME[5], "block-holder", "nvme9n1p1 held by dm-0 (vg-vms)"],
    ],
  );
});

Deno.test("readHostUse(): a device mounted many times (a table over the 64 KiB a text read takes) is named once, by its first mount", async () => {
  const binds = Array.from(
    { length: 4000 },
    (_, i) => mount("259:2", `/var/lib/docker/containers/c${i}/hostname`, "ext4", "/dev/nvme0n1p2"),
  );
  // The last line, far past 64 KiB, counts as much as the first.
  const last = mount("259:6", "/srv", "ext4", "/dev/nvme1n1p2");
  assertEquals(
    await storageUse({ mounts: [mount("259:2", "/", "ext4", "/dev/nvme0n1p2"), ...binds, last] }),
    [
      [NVME[0], "mounted-filesystem", "/ on nvme0n1p2"],
      [NVME[1], "mounted-filesystem", "/srv on nvme1n1p2"],
    ],
  );
});

Deno.test("readHostUse(): a live host whose mount table cannot be read is an error, not no mounts", async () => {
  const error = await storageUse({ mounts: null }).catch((e: Error) => e);
  assertMatch(
    String(error),
    /Cannot read .*\/proc\/self\/mountinfo: what the host has mounted is unknown/,
  );
});

Deno.test("readHostUse(): a mount table over 64 MiB is an error, not the part of it read", async () => {
  // Some 300,000 container mounts, the root disk's last: read in part, the root would be missed.
  const line = mount("0:60", `/run/containers/${"x".repeat(180)}`, "overlay", "overlay");
  const lines = Array.from({ length: Math.ceil(64 * 1024 * 1024 / line.length) }, () => line);
  const error = await storageUse({
    mounts: [...lines, mount("259:2", "/", "ext4", "/dev/nvme0n1p2")],
  })
    .catch((e: Error) => e);
  assertMatch(String(error), /\/proc\/self\/mountinfo" whole: it is larger than 67108864 bytes/);
});

Deno.test("readHostUse(): a live host whose IPv4 routing table cannot be read is an error, not no routes", async () => {
  const error = await storageUse({ routes: false }).catch((e: Error) => e);
  assertMatch(
    String(error),
    /Cannot read .*\/proc\/net\/route: which NICs the host routes through is unknown/,
  );
});

Deno.test("readHostUse(): a routing table over 1 GiB is an error, not the part of it read", async () => {
  const GiB = 1024 * 1024 * 1024;
  const error = await storageUse({ routes: GiB }).catch((e: Error) => e);
  assertMatch(
    String(error),
    /\/proc\/net\/route is larger than 1073741824 bytes: which NICs the host routes through is unknown/,
  );
  // Up to the cap, it is read whole (and its zero bytes are no route).
  assertEquals(await storageUse({ routes: GiB - ROUTE_HEADER.length }), []);
});

Deno.test("readHostUse(): a ZFS pool whose name has a space, as udev encodes its label", async () => {
  assertEquals(
    await storageUse({
      pools: ["my pool"],
      udev: [["nvme1n1p1", [
        "E:ID_FS_TYPE=zfs_member",
        "E:ID_FS_LABEL=my_pool",
        "E:ID_FS_LABEL_ENC=my\\x20pool",
      ]]],
    }),
    [[NVME[1], "zfs-pool", "ZFS pool my pool on nvme1n1p1"]],
  );
});

Deno.test("blockDeviceControllers() follows /dev links to the kernel's name, through several", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-dev-links-" });
  try {
    Deno.mkdirSync(`${dir}/sys/class/block`, { recursive: true });
    Deno.symlinkSync(
      `../../devices/pci0000:00/0000:00:01.0/${NVME[0]}/nvme/nvme0/nvme0n1`,
      `${dir}/sys/class/block/nvme0n1`,
    );
    for (const sub of ["disk/by-id", "vms"]) {
      Deno.mkdirSync(`${dir}/dev/${sub}`, { recursive: true });
    }
    Deno.symlinkSync("../../nvme0n1", `${dir}/dev/disk/by-id/nvme-Samsung_1`);
    // An absolute link to another link, as an administrator's own names often are.
    Deno.symlinkSync("/dev/disk/by-id/nvme-Samsung_1", `${dir}/dev/vms/nas`);
    // A relative link to a link in another directory: each is read from where the last one led.
    Deno.symlinkSync("../nvme0n1", `${dir}/dev/vms/data`);
    Deno.mkdirSync(`${dir}/dev/disk/by-label`);
    Deno.symlinkSync("../../vms/data", `${dir}/dev/disk/by-label/DATA`);
    Deno.symlinkSync("loop-b", `${dir}/dev/vms/loop-a`);
    Deno.symlinkSync("loop-a", `${dir}/dev/vms/loop-b`);
    const roots = { sysRoot: `${dir}/sys`, devRoot: `${dir}/dev` };
    const read = (path: string) => blockDeviceControllers(denoFsReader(), roots, path);
    assertEquals(read("/dev/vms/nas"), [NVME[0]]);
    assertEquals(read("/dev/disk/by-id/nvme-Samsung_1"), [NVME[0]]);
    assertEquals(read("/dev/nvme0n1"), [NVME[0]]);
    assertEquals(read("/dev/disk/by-label/DATA"), [NVME[0]]);
    // A loop of links, a path outside /dev: nothing, and no hang.
    assertEquals(read("/dev/vms/loop-a"), []);
    assertEquals(read("/srv/images/nas.img"), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readHostUse(): a disk behind Intel VMD makes the VMD controller the host's too, as passing it takes the disk", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-storage-vmd-" });
  try {
    const vmd = "0000:00:0e.0";
    const nvme = "10000:e1:00.0";
    const blank = { subsystem_vendor: null, subsystem_device: null, revision: null };
    buildHostTree({
      devices: [
        {
          bdf: vmd,
          group: 5,
          class: "0x010400",
          vendor: "0x8086",
          device: "0x9a0b",
          driver: "vmd",
          ...blank,
        },
        { ...nvmeDescription(nvme, 1), group: null },
      ],
    }, dir);
    Deno.mkdirSync(`${dir}/class/block`, { recursive: true });
    // The kernel hangs VMD's own PCI domain (`pci10000:e0`) under the VMD controller's function.
    const disk = `devices/pci0000:00/${vmd}/pci10000:e0/10000:e0:06.0/${nvme}/nvme/nvme0/nvme0n1`;
    block(dir, "nvme0n1", disk, "259:0");
    block(dir, "nvme0n1p1", `${disk}/nvme0n1p1`, "259:1");
    Deno.mkdirSync(`${dir}/proc/self`, { recursive: true });
    Deno.mkdirSync(`${dir}/proc/net`);
    Deno.writeTextFileSync(`${dir}/proc/net/route`, ROUTE_HEADER);
    Deno.writeTextFileSync(`${dir}/proc/swaps`, "Filename\tType\tSize\tUsed\tPriority\n");
    Deno.writeTextFileSync(
      `${dir}/proc/self/mountinfo`,
      mount("259:1", "/", "ext4", "/dev/nvme0n1p1"),
    );
    const uses = (devices: string[]) =>
      readHostUse(denoFsReader(), {
        root: dir,
        live: true,
        devices: devices.map((address) => ({ address }) as PciDevice),
        procRoot: `${dir}/proc`,
        udevDataDir: `${dir}/run/udev/data`,
      })?.map((u) => [u.address, u.reason, u.detail]);
    // The start guard reads the use of the devices a VM takes alone: the VMD controller.
    assertEquals(uses([vmd]), [[vmd, "mounted-filesystem", "/ on nvme0n1p1"]]);
    assertEquals(uses([vmd, nvme]), [
      [vmd, "mounted-filesystem", "/ on nvme0n1p1"],
      [nvme, "mounted-filesystem", "/ on nvme0n1p1"],
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readHostUse(): a mount with no optional fields (private, as without systemd) or several", async () => {
  // OpenRC hosts (Alpine) mount privately: no `shared:N` before the separator. A slave mount of
  // a container runtime lists two.
  assertEquals(
    await storageUse({
      mounts: [
        "22 1 259:2 / / rw,relatime - ext4 /dev/nvme0n1p2 rw",
        "40 22 259:5 / /srv rw,relatime shared:7 master:1 - xfs /dev/nvme1n1p1 rw",
      ],
    }),
    [
      [NVME[0], "mounted-filesystem", "/ on nvme0n1p2"],
      [NVME[1], "mounted-filesystem", "/srv on nvme1n1p1"],
    ],
  );
});

Deno.test("readHostUse(): a mount point holding a newline or tab keeps its detail on one line", async () => {
  // The kernel writes them octal-escaped; undone, the newline split every message naming the
  // mount, and what followed it read as a line of its own.
  assertEquals(
    await storageUse({
      mounts: [mount("259:5", "/mnt/a\\012\\011refused\\040b", "ext4", "/dev/nvme1n1p1")],
    }),
    [[NVME[1], "mounted-filesystem", "/mnt/a\\u000a\\u0009refused b on nvme1n1p1"]],
  );
});
