/**
 * Messages that must say the right thing: a shared state directory is not to be chmod-ed, the
 * system's EACCES is not Deno's permission set and its cause is said once, an unreadable config
 * names its path and why, a libvirt error names the URI `LIBVIRT_DEFAULT_URI` gave, and a VM
 * named twice with `--vm` is planned once, and a rule with `iommu_group: false` names the group
 * members left on host drivers, which make its start fail, and a loop of symbolic links at a
 * captured tree's top level is named where it loops.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import {
  canUnshareMounts,
  cliCommand,
  documentedFlags,
  runCli,
  runInPrivateMounts,
} from "../helpers/cli.ts";
import { demoTree, gpuConfig } from "../helpers/reliability.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import { loadFixtureHost, tempHostTree } from "../helpers/hosts.ts";
import { testDomainXml, worldUri, writeTempWorld } from "../helpers/world.ts";
import { nodeDeviceWorldXml } from "../../lib/testing/nodedev_world.ts";
import { chattr, immutableUnavailable } from "../helpers/immutable.ts";

/** The libvirt `guard allow` reads the VM it binds an allowance to from (win11 in it). */
const GUARD_WORLD = worldUri("guard_allow");

const TEST = "tests/cli/messages_test.ts";

Deno.test("a shared (sticky, world-writable) state directory is refused without chmod advice; one only its group may write gets both ways", async () => {
  await using tree = await demoTree();
  const shared = `${tree.dir}/shared`;
  Deno.mkdirSync(shared);
  Deno.chmodSync(shared, 0o1777);
  const run = await runCli(["backups", "--state-dir", shared]);
  assertEquals(run.code, 1, run.stderr);
  assertMatch(
    run.stderr,
    /mode 1777\), a directory shared with other users: use one of passthrough's own/,
  );
  assertOk(!run.stderr.includes("chmod"), run.stderr);
  // A directory of the user's own that is merely too open is still told to tighten.
  const loose = `${tree.dir}/loose`;
  Deno.mkdirSync(loose);
  Deno.chmodSync(loose, 0o777);
  const own = await runCli(["backups", "--state-dir", loose]);
  assertMatch(own.stderr, /\(mode 0777\); run "chmod 700 .*loose"/);
  // A directory only its group may write may be a team's on purpose: both ways are offered.
  const team = `${tree.dir}/team`;
  Deno.mkdirSync(team);
  Deno.chmodSync(team, 0o2775);
  const group = await runCli(["backups", "--state-dir", team]);
  assertEquals(group.code, 1, group.stderr);
  assertMatch(
    group.stderr,
    /\(mode 2775\); if it is passthrough's alone, run "chmod 700 .*team"; if its group shares it on purpose, use one of passthrough's own, such as the default \/var\/lib\/passthrough/,
  );
});

Deno.test("unreadable, missing and looping configs name the path and the reason", async () => {
  await using tree = await demoTree();
  Deno.symlinkSync(`${tree.dir}/loop-b`, `${tree.dir}/loop-a`);
  Deno.symlinkSync(`${tree.dir}/loop-a`, `${tree.dir}/loop-b`);
  const loop = await runCli(["plan", "-f", `${tree.dir}/loop-a`]);
  assertEquals(loop.code, 1);
  assertEquals(
    loop.stderr,
    `passthrough plan: Cannot read config "${tree.dir}/loop-a": a loop of symbolic links\n`,
  );
  const missing = await runCli(["plan", "-f", `${tree.dir}/none.yaml`]);
  assertEquals(
    missing.stderr,
    // Issue 16: one line naming the path tried and where a host keeps its config. The file was
    // named, so the fix is the path, not naming one with --config (which it said).
    `passthrough plan: No config file: tried ${tree.dir}/none.yaml (--config): nothing is ` +
      `there: check the path; a host keeps it in /etc/passthrough/passthrough_config.yaml\n`,
  );
  const named = await runCli(["plan"], { env: { PASSTHROUGH_CONFIG: `${tree.dir}/none.yaml` } });
  assertMatch(
    named.stderr,
    /none\.yaml \(\$PASSTHROUGH_CONFIG\): nothing is there: check the path;/,
  );
  // An empty $PASSTHROUGH_CONFIG is unset, as an empty $PASSTHROUGH_STATE_DIR is: the defaults
  // are tried, not an empty path.
  const empty = await runCli(["plan"], { env: { PASSTHROUGH_CONFIG: "" }, cwd: tree.dir });
  assertMatch(empty.stderr, /No config file: tried passthrough_config\.yaml \(current directory\)/);
  // `-f <(cat x)` is a pipe: refused as such, not read (twice) into an "Empty config".
  const pipe = await new Deno.Command("bash", {
    args: [
      "-c",
      'exec "$@" -f <(printf "version: 1\\nvms: {}\\n")',
      "bash",
      ...cliCommand(),
      "plan",
    ],
    env: { NO_COLOR: "1" },
    stderr: "piped",
    stdout: "null",
  }).output();
  assertMatch(
    new TextDecoder().decode(pipe.stderr),
    /Invalid config "\/dev\/fd\/\d+": 1 problem\n.*:1:1: Not a regular file \(give the path of a YAML file\)/,
  );
  recordCase({
    area: "config",
    name: "config path: symlink loop, missing, a pipe",
    count: 3,
    outcome: "path and reason said",
    test: TEST,
  });
});

Deno.test("apply with a config error leaves no state directory behind; an unusable one still stops it before planning", async () => {
  await using tree = await demoTree();
  const state = `${tree.dir}/state`;
  const world = `${tree.dir}/world.xml`;
  Deno.writeTextFileSync(
    world,
    "<node><domain type='test'><name>vm</name><memory>1024</memory><os><type>hvm</type></os></domain></node>",
  );
  const args = ["--sysfs", tree.sysfs, "--connect", `test://${world}`, "--state-dir", state];
  Deno.writeTextFileSync(`${tree.dir}/bad.yaml`, "version: 1\nvms:\n  vm:\n    devices: 7\n");
  const bad = await runCli(["apply", "--yes", "-f", `${tree.dir}/bad.yaml`, ...args]);
  assertEquals(bad.code, 1, bad.stderr);
  assertMatch(bad.stderr, /bad\.yaml:4:/);
  assertEquals([...Deno.readDirSync(tree.dir)].map((e) => e.name).sort(), [
    "bad.yaml",
    "sysfs",
    "world.xml",
  ]);
  // A file where the state directory should be: refused, nothing planned or printed.
  Deno.writeTextFileSync(state, "");
  Deno.writeTextFileSync(`${tree.dir}/good.yaml`, gpuConfig("vm"));
  const unusable = await runCli(["apply", "--yes", "-f", `${tree.dir}/good.yaml`, ...args]);
  assertEquals([unusable.code, unusable.stdout], [1, ""], unusable.stderr);
  assertMatch(unusable.stderr, /Cannot use ".*state": it is not a directory/);
});

Deno.test({
  name:
    "a config under /dev/shm is refused by Deno's rule for /dev, told so, not told to pass --allow-all",
  ignore: !isDirectory("/dev/shm"),
  fn: async () => {
    const dir = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: "passthrough-" });
    try {
      Deno.writeTextFileSync(`${dir}/c.yaml`, "version: 1\nvms: {}\n");
      const run = await runCli(["plan", "-f", `${dir}/c.yaml`]);
      assertEquals(run.code, 1, run.stderr);
      assertMatch(
        run.stderr,
        /^passthrough plan: Requires all access to ".*c\.yaml" \(Deno opens a file under \/dev, \/proc or \/sys only with --allow-all, which passthrough does not run with: use a path elsewhere/,
      );
      assertOk(!run.stderr.includes("run again"), run.stderr);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

/** Whether `path` is a directory here. */
function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

Deno.test({
  name: "the default state directory made group-writable is told to chmod 700, not to use itself",
  ignore: !canUnshareMounts(),
  fn: async () => {
    // /var/lib is a private tmpfs here: the host's own state directory is never touched.
    const out = await runInPrivateMounts(
      "mount -t tmpfs passthrough-test /var/lib && mkdir /var/lib/passthrough && " +
        "chmod 2775 /var/lib/passthrough",
      [...cliCommand(), "backups"],
      { NO_COLOR: "1" },
    );
    assertEquals(out.code, 1, out.stderr);
    assertMatch(out.stderr, /\(mode 2775\); run "chmod 700 \/var\/lib\/passthrough"\n$/);
  },
});

/** Whether `unshare -U` works here: root then meets file modes like any user. */
function canDropToUser(): boolean {
  try {
    return new Deno.Command("unshare", { args: ["-U", "true"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** `passthrough ARGS` in a user namespace, where file modes apply even to root. */
async function runAsUser(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command("unshare", {
    args: ["-U", ...cliCommand(), ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test({
  name: "EACCES is the system's refusal, said once, never blamed on Deno's permissions",
  ignore: !canDropToUser(),
  fn: async () => {
    await using tree = await demoTree();
    const config = `${tree.dir}/c.yaml`;
    Deno.writeTextFileSync(config, "version: 1\nvms: {}\n", { mode: 0o000 });
    Deno.chmodSync(config, 0o000);
    const closed = `${tree.dir}/closed`;
    Deno.mkdirSync(`${closed}/state`, { recursive: true });
    Deno.chmodSync(closed, 0o600);
    const unreadable = await runAsUser(["plan", "-f", config]);
    assertEquals(unreadable.code, 1);
    assertEquals(
      unreadable.stderr,
      `passthrough plan: Cannot read config "${config}": permission denied (check its owner and mode, or run as root)\n`,
    );
    const state = await runAsUser(["backups", "--state-dir", `${closed}/state`]);
    assertEquals(state.code, 1);
    assertMatch(state.stderr, /Cannot use state directory ".*": Permission denied \(os error 13\)/);
    assertEquals(state.stderr.match(/Permission denied/g)?.length, 1, state.stderr);
    assertMatch(state.stderr, /\(the system refused: check the owner and mode of that path/);
    assertOk(!state.stderr.includes("README"), state.stderr);
    recordCase({
      area: "fault",
      name: "EACCES on the config and the state directory",
      count: 2,
      outcome: "said once, as the system's refusal",
      test: TEST,
    });
  },
});

Deno.test("a libvirt error names the URI LIBVIRT_DEFAULT_URI gave", async () => {
  await using tree = await demoTree();
  const config = `${tree.dir}/c.yaml`;
  Deno.writeTextFileSync(config, "version: 1\nvms:\n  vm1: { devices: [] }\n");
  const uri = `qemu:///system?socket=${tree.dir}/no-such-socket`;
  const run = await runCli(["plan", "-f", config, "--sysfs", tree.sysfs], {
    env: { LIBVIRT_DEFAULT_URI: uri },
  });
  assertEquals(run.code, 1);
  assertOk(
    run.stderr.includes(`Cannot connect to libvirt at "${uri}" (LIBVIRT_DEFAULT_URI)`),
    run.stderr,
  );
});

Deno.test("a VM named twice with --vm is planned and applied once", async () => {
  await using tree = await demoTree();
  const world = new URL("../../demo/world.xml", import.meta.url).pathname;
  const config = new URL("../../demo/passthrough_config.yaml", import.meta.url).pathname;
  const args = ["--vm", "win10", "--vm", "win10", "-f", config, "--sysfs", tree.sysfs];
  const connect = ["--connect", `test://${world}`];
  const plan = await runCli(["plan", "--json", ...args, ...connect]);
  const json = JSON.parse(plan.stdout);
  assertEquals(
    [plan.code, json.vms.map((vm: { name: string }) => vm.name), json.summary.add],
    [0, ["win10"], 3],
    plan.stderr,
  );
  const state = ["--state-dir", `${tree.dir}/state`];
  const apply = await runCli(["apply", "--yes", ...args, ...connect, ...state]);
  assertEquals(apply.code, 0, `${apply.stdout}${apply.stderr}`);
  assertMatch(apply.stdout, /\nChanged: win10\. Skipped: none\. Failed: none\.\n/);
});

Deno.test({
  name: "a state directory on a read-only mount names the mount and how to make it writable",
  ignore: !canUnshareMounts(),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ro-mount-" });
    try {
      const mount = `${dir}/mnt`;
      // A private tmpfs, its state directory made, then the mount turned read-only.
      const out = await runInPrivateMounts(
        `mkdir ${mount} && mount -t tmpfs passthrough-test ${mount} && ` +
          `mkdir -m 700 ${mount}/state && mount -o remount,ro ${mount}`,
        [
          ...cliCommand(),
          "guard",
          "allow",
          "win11",
          "--connect",
          GUARD_WORLD,
          "--state-dir",
          `${mount}/state`,
        ],
        { NO_COLOR: "1" },
      );
      assertEquals(out.code, 1, out.stderr);
      // It said "Read-only file system (os error 30): open '...'" and nothing more.
      assertMatch(
        out.stderr,
        new RegExp(
          `Read-only file system \\(os error 30\\): open '${mount}/state/\\.probe-[^']+' \\(on the read-only mount "${mount}": make it writable \\("mount -o remount,rw ${mount}"\\), or use a directory elsewhere\\)\\n$`,
        ),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "apply whose backups directory is read-only says why no backup could be made",
  ignore: !canUnshareMounts(),
  fn: async () => {
    await using tree = await demoTree();
    const world = new URL("../../demo/world.xml", import.meta.url).pathname;
    const config = new URL("../../demo/passthrough_config.yaml", import.meta.url).pathname;
    const backups = `${tree.dir}/state/backups`;
    Deno.mkdirSync(backups, { recursive: true, mode: 0o700 });
    Deno.chmodSync(`${tree.dir}/state`, 0o700);
    // The state directory writable, its backups/ a read-only bind mount of itself.
    const out = await runInPrivateMounts(
      `mount --bind ${backups} ${backups} && mount -o remount,bind,ro ${backups}`,
      [
        ...cliCommand(),
        "apply",
        "--yes",
        "--vm",
        "win10",
        "-f",
        config,
        "--sysfs",
        tree.sysfs,
        "--connect",
        `test://${world}`,
        "--state-dir",
        `${tree.dir}/state`,
      ],
      { NO_COLOR: "1" },
    );
    assertEquals(out.code, 1, `${out.stdout}${out.stderr}`);
    // It said "Cannot create state directory ".../backups/win10"" and not why.
    assertMatch(
      out.stdout,
      new RegExp(
        `\nFAILED win10: Not applied to "win10": cannot write its backup in "${backups}/win10", so it was not defined: Cannot create state directory "${backups}/win10": Read-only file system \\(os error 30\\): mkdir '${backups}/win10'\n`,
      ),
    );
    assertEquals([...Deno.readDirSync(backups)], []);
  },
});

Deno.test({
  name: "guard allow on a full state directory says the allowance was not recorded, and where",
  ignore: !canUnshareMounts(),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-full-allow-" });
    try {
      const mount = `${dir}/mnt`;
      // A 64 KiB tmpfs, its state directory made, then filled to the last block.
      const out = await runInPrivateMounts(
        `mkdir ${mount} && mount -t tmpfs -o size=64k passthrough-test ${mount} && ` +
          `mkdir -m 700 ${mount}/state && ` +
          `(dd if=/dev/zero of=${mount}/fill bs=4k 2>/dev/null; true)`,
        [
          ...cliCommand(),
          "guard",
          "allow",
          "win11",
          "--connect",
          GUARD_WORLD,
          "--state-dir",
          `${mount}/state`,
        ],
        { NO_COLOR: "1" },
      );
      assertEquals([out.code, out.stdout], [1, ""]);
      // It said "State directory ... is not writable: No space left on device (os error 28)",
      // not that no allowance was given.
      assertEquals(
        out.stderr,
        `passthrough guard: Did not record the allowance for "win11" in ${mount}/state, so its next start is checked as any other: State directory "${mount}/state" is not writable: No space left on device (os error 28)\n`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "guard allow on a full state directory says an allowance given earlier is unchanged",
  ignore: !canUnshareMounts(),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-full-allow-again-" });
    try {
      const mount = `${dir}/mnt`;
      // The same "guard allow" run once with room (its allowance written), then on a full disk.
      const out = await runInPrivateMounts(
        `mkdir ${mount} && mount -t tmpfs -o size=64k passthrough-test ${mount} && ` +
          `mkdir -m 700 ${mount}/state && "$@" >/dev/null && ` +
          `(dd if=/dev/zero of=${mount}/fill bs=4k 2>/dev/null; true)`,
        [
          ...cliCommand(),
          "guard",
          "allow",
          "win11",
          "--connect",
          GUARD_WORLD,
          "--state-dir",
          `${mount}/state`,
        ],
        { NO_COLOR: "1" },
      );
      assertEquals([out.code, out.stdout], [1, ""]);
      // It said "so its next start is checked as any other", while the first allowance lets it
      // go on.
      assertEquals(
        out.stderr,
        `passthrough guard: Did not record the allowance for "win11" in ${mount}/state; the one given earlier is unchanged (${mount}/state/guard/allow/win11.json): State directory "${mount}/state" is not writable: No space left on device (os error 28)\n`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a hooks directory linked onto a read-only mount names that mount, not the link's",
  ignore: !canUnshareMounts(),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ro-link-" });
    try {
      const mount = `${dir}/mnt`;
      // qemu.d a link into a read-only tree (a generated one); the link itself on a writable mount.
      const out = await runInPrivateMounts(
        `mkdir ${mount} && mount -t tmpfs passthrough-test ${mount} && ` +
          `mkdir ${mount}/qemu.d && mount -o remount,ro ${mount} && ln -s ${mount}/qemu.d ${dir}/qemu.d`,
        [
          ...cliCommand(),
          "hook",
          "install",
          "--hooks-dir",
          `${dir}/qemu.d`,
          "--state-dir",
          `${dir}/state`,
        ],
        { NO_COLOR: "1" },
      );
      assertEquals(out.code, 1, out.stderr);
      // It named the mount holding the link ("/", already writable) and said to remount it.
      assertMatch(
        out.stderr,
        new RegExp(
          `Read-only file system \\(os error 30\\): mkdir '${dir}/qemu.d/[^']+'; no hook was installed \\(on the read-only mount "${mount}": make it writable \\("mount -o remount,rw ${mount}"\\), or use a directory elsewhere\\)\\n$`,
        ),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a state file that cannot be replaced (chattr +i) says how to see and clear the attribute",
  ignore: immutableUnavailable() !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-immutable-" });
    const allowance = `${dir}/state/guard/allow/win11.json`;
    const immutable = (flags: string) => chattr(flags, allowance);
    try {
      assertEquals(
        (await runCli([
          "guard",
          "allow",
          "win11",
          "--connect",
          GUARD_WORLD,
          "--state-dir",
          `${dir}/state`,
        ])).code,
        0,
      );
      assertOk(immutable("+i"), `chattr +i ${allowance}`);
      const run = await runCli([
        "guard",
        "allow",
        "win11",
        "--connect",
        GUARD_WORLD,
        "--state-dir",
        `${dir}/state`,
      ]);
      immutable("-i");
      assertEquals(run.code, 1, run.stderr);
      // It said "the system refused: check the owner and mode of that path, or run as root", to root.
      assertOk(
        run.stderr.endsWith(
          ` -> '${allowance}' (the system refused whatever the owner and mode: where "lsattr -d ${dir}/state/guard/allow ${allowance}" shows "i" (immutable) or "a" (append-only), "chattr -i -a" on that path clears it; else check the owner and mode, or run as root)\n`,
        ),
        run.stderr,
      );
    } finally {
      immutable("-i");
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("plan warns, at the rule, of each member an iommu_group: false rule leaves on a host driver", async () => {
  // The real X570 board, read by the real lspci: group 30 holds the GTX 1060 and its audio, and
  // here also the root NVMe the host boots from (as a board without ACS would put it).
  const host = loadFixtureHost("x570-aorus-pro-wifi");
  const drivers: Record<string, string> = {
    "0000:0b:00.0": "nouveau",
    "0000:0b:00.1": "snd_hda_intel",
    "0000:01:00.0": "nvme",
  };
  host.devices = host.devices.map((d) => ({
    ...d,
    driver: drivers[d.bdf] ?? d.driver,
    group: d.bdf === "0000:01:00.0" ? 30 : d.group,
  }));
  host.host_use = [{
    address: "0000:01:00.0",
    reason: "mounted-filesystem",
    detail: "/ on nvme0n1p2",
  }];
  await using tree = await tempHostTree(host);
  await using world = await writeTempWorld(
    nodeDeviceWorldXml(host, { domains: [testDomainXml("win10", { running: false })] }),
  );
  const config = `${tree.dir}/c.yaml`;
  await Deno.writeTextFile(
    config,
    'version: 1\nvms:\n  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:1b06" }\n        iommu_group: false\n',
  );
  const run = await runCli(["plan", "-f", config, "--sysfs", tree.dir, "-c", world.uri]);
  assertEquals(run.code, 0, run.stderr);
  assertMatch(
    run.stdout,
    /warning \[group-contains-host-critical\] .*c\.yaml:5:9: Rule "gpu" of VM "win10" leaves the rest of IOMMU group 30 with the host \(iommu_group: false\), and 0000:01:00\.0 is on nvme \(in use by the host \(mounted-filesystem: \/ on nvme0n1p2\)\), 0000:0b:00\.1 is on snd_hda_intel: libvirt detaches only the devices "win10" names, so its start fails \("group 30 is not viable"\)/,
  );
});

Deno.test("a loop of symbolic links at a captured tree's top level is named where it loops", async () => {
  // `bus` as a loop was named `bus/pci/devices` without --allow-ffi, and `devices` (which each
  // bus/pci/devices entry links into) as the first entry linking there, with either reader.
  const withoutFfi = documentedFlags().filter((f) => f !== "--allow-ffi");
  for (const entry of ["bus", "devices", "kernel"]) {
    await using tree = await demoTree();
    const loop = `${tree.sysfs}/${entry}`;
    Deno.removeSync(loop, { recursive: true });
    Deno.symlinkSync(entry, loop);
    for (const flags of [documentedFlags(), withoutFfi]) {
      for (const command of [["groups"], ["snapshot", `${tree.dir}/snapshot`]]) {
        const run = await runCli([...command, "--sysfs", tree.sysfs], { flags });
        assertEquals(
          [run.code, run.stderr],
          [
            1,
            `passthrough ${
              command[0]
            }: Refusing to read a tree with a loop of symbolic links at "${loop}": the tree is damaged: capture it again with 'passthrough snapshot'\n`,
          ],
          `${entry}, ${command[0]}${flags === withoutFfi ? " without FFI" : ""}`,
        );
      }
    }
  }
});
