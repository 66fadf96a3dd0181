// `passthrough hook install|status|remove`, `guard allow` and `doctor`'s hook finding, run as a
// user runs them (a spawned CLI with the documented permissions) into temporary directories; the
// installed hook then runs as libvirt runs it, on a sysfs tree built from a captured host.

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import {
  applyYes,
  canUnshareMounts,
  cliCommand,
  runCli,
  runHook,
  runInPrivateMounts,
} from "../helpers/cli.ts";
import {
  liveDefaultRouteNic,
  livePciMissing,
  loadFixtureHost,
  tempHostTree,
} from "../helpers/hosts.ts";
import {
  checkCommand,
  checkPermissions,
  findTimeout,
  HOOK_FILE_NAME,
  HOOK_FORMAT,
  installHook,
  renderHookScript,
} from "../../lib/guard/hook_file.ts";
import type { DoctorFinding } from "../../lib/host/doctor.ts";
import { allowNextStart, recordPolicies, recordRefusals } from "../../lib/guard/state.ts";
import { guardCheck } from "../../lib/guard/run.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { guardPolicies } from "../../lib/guard/policy.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { testDomainXml, worldUri } from "../helpers/world.ts";
import { pathExists } from "../../lib/state/paths.ts";
import { lockUri } from "../../lib/state/lock.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
import { asSystemDaemon, libvirtdUnavailable, startDemoDaemon } from "../helpers/libvirtd.ts";

/** The libvirt `guard allow` reads the VM it binds an allowance to from (win11 in it). */
const GUARD_WORLD = worldUri("guard_allow");

/** win11's `<uuid>`: the policies apply records hold only for the domain they were recorded for. */
const WIN11_UUID = "0f3c1a52-7d4e-4b8a-9c61-2e5f8a9b0c11";

/**
 * A private daemon defining {@link GUARD_WORLD}'s VMs under their UUIDs, reached as the system
 * daemon through {@link asSystemDaemon}: `guard allow` gives an allowance where the installed hook
 * reads only for the VMs whose starts run it.
 */
function startGuardDaemon() {
  return startDemoDaemon({
    win11: WIN11_UUID,
    ["v".repeat(200)]: "5d2e9a41-8c3b-4f6e-a1d7-3b9c0e2f4a68",
  });
}

const MOVED = `<domain type='kvm'><name>win11</name><uuid>${WIN11_UUID}</uuid>
  <metadata><pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">
    <pt:device address="0000:0b:00.0" vendor="10de" device="2684" class="030000" rule="gpu"/>
  </pt:hostdevs></metadata>
  <devices><hostdev mode='subsystem' type='pci' managed='yes'>
    <source><address domain='0x0000' bus='0x0b' slot='0x00' function='0x0'/></source>
    <address type='pci' domain='0x0000' bus='0x06' slot='0x00' function='0x0'/>
  </hostdev></devices></domain>`;

/** `hook install` into `DIR/qemu.d` with its state in `DIR/state`, over the tree at `sysfs`. */
function installArgs(dir: string, sysfs: string): string[] {
  return [
    "hook",
    "install",
    "--hooks-dir",
    `${dir}/qemu.d`,
    "--state-dir",
    `${dir}/state`,
    "--sysfs",
    sysfs,
  ];
}

/**
 * Runs `fn` with a temporary directory (`prefix`) and an empty one in /dev/shm, which Deno reads
 * only with --allow-all, for a tree; removes both after (the tree only if `fn` left it).
 */
async function withShmTree(
  prefix: string,
  fn: (dir: string, tree: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix });
  const tree = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "passthrough-tree-" });
  try {
    await fn(dir, tree);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(tree, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  }
}

/** Installs the hook into `DIR/qemu.d` with its state in `DIR/state`, over the tree at `sysfs`. */
async function installOnTree(dir: string, sysfs: string): Promise<string> {
  const installed = await runCli(installArgs(dir, sysfs));
  assertEquals(installed.code, 0, installed.stderr);
  return `${dir}/qemu.d/${HOOK_FILE_NAME}`;
}

Deno.test("hook install, status and remove manage one executable in the hooks directory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-cli-" });
  try {
    const hooks = `${dir}/qemu.d`;
    const common = ["--hooks-dir", hooks];
    const before = await runCli(["hook", "status", ...common]);
    assertEquals(before.code, 1);
    assertMatch(before.stdout, /problem: No hook at .*50-passthrough-guard/);

    const first = await runCli(["hook", "install", ...common, "--state-dir", `${dir}/s`, "--json"]);
    assertEquals(first.code, 0, first.stderr);
    const report = JSON.parse(first.stdout);
    assertEquals([report.path, report.changed], [`${hooks}/${HOOK_FILE_NAME}`, true]);
    assertMatch(
      report.messages[1],
      new RegExp(`^It runs \\S+ \\S+/cli/hook_check\\.ts \\(deadline 10 s, state in ${dir}/s\\)$`),
    );
    assertEquals(
      report.messages.at(-1),
      `Not in /etc/libvirt/hooks/qemu.d: libvirt's system daemon does not run it from ${hooks} (no daemon reloaded)`,
    );
    assertEquals(Deno.statSync(report.path).mode! & 0o7777, 0o755);
    // The state directory exists (checked at install), private.
    assertEquals(Deno.statSync(`${dir}/s`).mode! & 0o777, 0o700);

    const unchanged = await runCli([
      "hook",
      "install",
      ...common,
      "--state-dir",
      `${dir}/s`,
      "--json",
    ]);
    assertEquals(JSON.parse(unchanged.stdout).changed, false);
    const again = await runCli(["hook", "install", ...common, "--state-dir", `${dir}/s`]);
    assertEquals(again.code, 0, again.stderr);
    assertMatch(again.stdout, /^The start guard is already installed and up to date: /);
    // Nothing new for a daemon to see: no reload, not even the word about one.
    assertEquals(again.stdout.includes("daemon"), false, again.stdout);

    const status = await runCli(["hook", "status", ...common]);
    assertEquals(status.code, 0, status.stdout);
    assertMatch(status.stdout, /installed by passthrough 0\.1\.0 \(this is 0\.1\.0\); executable/);
    assertMatch(status.stdout, /present: .*\/cli\/hook_check\.ts\n/);
    assertMatch(status.stdout, /deadline: 10 s with \S*timeout; state: .*\/s; sysfs: \/sys\n/);
    assertMatch(
      status.stdout,
      /\n {2}guards: starts only; a hot-plug \(virsh attach-device --live\) and virsh nodedev-detach run no hook\n/,
    );
    assertMatch(status.stdout, / {2}up to date\n$/);

    Deno.chmodSync(report.path, 0o644);
    assertMatch(
      (await runCli(["hook", "status", ...common])).stdout,
      /installed by passthrough 0\.1\.0 \(this is 0\.1\.0\); NOT executable\n/,
    );
    const broken = await runCli(["hook", "status", ...common, "--json"]);
    assertEquals(broken.code, 1);
    assertEquals(JSON.parse(broken.stdout).problems, ["not executable, so libvirt skips it"]);
    // The fix writes this hook again where it is, with its own state directory.
    assertEquals(
      JSON.parse(broken.stdout).fix,
      `passthrough hook install --hooks-dir ${hooks} --state-dir ${dir}/s`,
    );
    assertMatch(
      (await runCli(["hook", "status", ...common])).stdout,
      new RegExp(
        `\n {2}fix: passthrough hook install --hooks-dir ${hooks} --state-dir ${dir}/s\n$`,
      ),
    );
    Deno.chmodSync(report.path, 0o755);

    // A hook whose directory another user owns: status says so; install refuses, changing nothing.
    Deno.chownSync(hooks, 65534, 65534);
    const theirs = await runCli(["hook", "status", ...common, "--json"]);
    assertEquals(JSON.parse(theirs.stdout).problems, [
      `another user could change what it runs as root: ${hooks} belongs to uid 65534`,
    ]);
    // Installing again would be refused: the fix says where to install first.
    assertEquals(
      JSON.parse(theirs.stdout).fix,
      "install passthrough where only root can write (/opt/passthrough), then passthrough hook " +
        `install --hooks-dir ${hooks} --state-dir ${dir}/s`,
    );
    const text = Deno.readTextFileSync(report.path);
    const refused = await runCli([
      "hook",
      "install",
      ...common,
      "--state-dir",
      `${dir}/s`,
      "--deadline",
      "9",
    ]);
    assertEquals(refused.code, 1);
    assertMatch(
      refused.stderr,
      new RegExp(`Refusing to install the start guard: .*, and ${hooks} belongs to uid 65534, so`),
    );
    assertEquals(Deno.readTextFileSync(report.path), text);
    Deno.chownSync(hooks, 0, 0);
    // A state directory under one anyone can write to: refused before it is created.
    Deno.mkdirSync(`${dir}/open`, { mode: 0o777 });
    Deno.chmodSync(`${dir}/open`, 0o777);
    const open = await runCli(["hook", "install", ...common, "--state-dir", `${dir}/open/s`]);
    assertEquals(open.code, 1);
    assertMatch(open.stderr, new RegExp(`${dir}/open is writable by anyone \\(mode 0777\\)`));
    assertEquals([...Deno.readDirSync(`${dir}/open`)], []);
    // Or behind root's link into another user's directory.
    Deno.mkdirSync(`${dir}/theirs`);
    Deno.chownSync(`${dir}/theirs`, 65534, 65534);
    Deno.symlinkSync(`${dir}/theirs`, `${dir}/ln`);
    const linked = await runCli(["hook", "install", ...common, "--state-dir", `${dir}/ln/s`]);
    assertEquals(linked.code, 1);
    assertMatch(linked.stderr, new RegExp(`${dir}/theirs belongs to uid 65534`));
    assertEquals([...Deno.readDirSync(`${dir}/theirs`)], []);
    assertEquals(Deno.readTextFileSync(report.path), text);
    // Changed by hand (the guard turned off): status says so.
    Deno.writeTextFileSync(report.path, text.replace(/^\[ "\$2"/m, 'exit 0\n[ "$2"'));
    const edited = await runCli(["hook", "status", ...common, "--json"]);
    assertEquals(JSON.parse(edited.stdout).problems, [
      "changed since it was written: it may not check what it should",
    ]);
    // One written by an older passthrough (a script without this one's format line) says so,
    // rather than that it was changed by hand.
    Deno.writeTextFileSync(report.path, text.replace(/^# passthrough-hook-format: \d+\n/m, ""));
    const older = await runCli(["hook", "status", ...common, "--json"]);
    assertEquals(JSON.parse(older.stdout).problems, [
      `written by an older passthrough (hook format 1, this one writes ${HOOK_FORMAT}) or changed by hand ` +
      "since: it may not check what it should",
    ]);
    // One whose settings have another shape (one passthrough wrote with no "timeout", as it ran
    // its own deadline): still ours, so status says install, and install and remove replace it.
    const otherShape = text.replace(/"timeout":"[^"]*",/, "")
      .replace(/^# passthrough-hook-format: \d+\n/m, "");
    assertOk(otherShape !== text.replace(/^# passthrough-hook-format: \d+\n/m, ""));
    Deno.writeTextFileSync(report.path, otherShape);
    const unreadable = JSON.parse((await runCli(["hook", "status", ...common, "--json"])).stdout);
    assertEquals([unreadable.problems, unreadable.fix], [
      [
        `written by another passthrough (hook format 1, this one writes ${HOOK_FORMAT}), whose settings this ` +
        "one cannot read: it may not check what it should",
      ],
      // With its own state directory, as for any hook of ours: the default is another state.
      `passthrough hook install --hooks-dir ${hooks} --state-dir ${dir}/s`,
    ]);
    const replaced = await runCli(["hook", "install", ...common, "--state-dir", `${dir}/s`]);
    assertEquals(replaced.code, 0, replaced.stderr);
    assertEquals(Deno.readTextFileSync(report.path), text);
    Deno.writeTextFileSync(report.path, otherShape);

    const removed = await runCli(["hook", "remove", ...common]);
    assertEquals([removed.code, removed.stdout], [0, `Removed the start guard: ${report.path}\n`]);
    assertEquals([...Deno.readDirSync(hooks)], []);
    assertEquals(
      (await runCli(["hook", "remove", ...common])).stdout,
      `No hook at ${report.path}\n`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "doctor looks at the hook's SELinux label only where SELinux is on (a tmpfs stands in for selinuxfs)",
  // SELinux cannot run on this kernel: a private mount namespace puts a file where selinuxfs
  // keeps the switch, which is all doctor reads of it besides the hook's own label.
  ignore: livePciMissing() !== null || !canUnshareMounts(),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-selinux-" });
    try {
      const hooks = `${dir}/qemu.d`;
      const install = await runCli(["hook", "install", "--hooks-dir", hooks, "--state-dir", dir]);
      assertEquals(install.code, 0, install.stderr);
      // Enforcing: a hook without libvirt's label may be denied what it reads.
      const out = await runInPrivateMounts(
        "mount -t tmpfs none /sys/fs && mkdir /sys/fs/selinux && echo 1 >/sys/fs/selinux/enforce",
        [...cliCommand(), "doctor", "--json", "--no-libvirt", "--hooks-dir", hooks],
        { NO_COLOR: "1" },
      );
      assertOk(out.code === 0 || out.code === 1, out.stderr);
      const enforcing = (JSON.parse(out.stdout) as DoctorFinding[]).find((f) =>
        f.check === "hook"
      )!;
      assertEquals(enforcing.status, "warn");
      assertMatch(enforcing.summary, /; SELinux label unknown, not virt_hook_t$/);
      assertMatch(enforcing.hint!, /; restorecon -v .*50-passthrough-guard; /);
      // Without SELinux, no word of it.
      const plain = await runCli(["doctor", "--json", "--no-libvirt", "--hooks-dir", hooks]);
      const hook = (JSON.parse(plain.stdout) as DoctorFinding[]).find((f) => f.check === "hook")!;
      assertEquals([hook.summary.includes("SELinux"), hook.hint?.includes("restorecon")], [
        false,
        false,
      ]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "hook install in libvirt's directory reloads the running daemon, and doctor says so (a stand-in daemon)",
  // No libvirtd may be restarted here: a private mount namespace gives /run and /etc/libvirt
  // their own empty directories, and a copy of sleep named libvirtd, ignoring SIGHUP as the
  // daemon does, stands in for it by its pid file and name.
  ignore: livePciMissing() !== null || !canUnshareMounts() || !pathExists("/etc/libvirt"),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-reload-" });
    const hadHook = pathExists(`/etc/libvirt/hooks/qemu.d/${HOOK_FILE_NAME}`);
    let child: Deno.ChildProcess | null = null;
    try {
      Deno.copyFileSync("/bin/sleep", `${dir}/libvirtd`);
      child = new Deno.Command("sh", {
        args: ["-c", 'trap "" HUP; exec "$0" infinity', `${dir}/libvirtd`],
        stdout: "null",
        stderr: "null",
      }).spawn();
      // Found by its name: once sh has become it.
      const pid = child.pid;
      const comm = () => {
        try {
          return Deno.readTextFileSync(`/proc/${pid}/comm`).trim();
        } catch {
          return null;
        }
      };
      for (let i = 0; i < 100 && comm() !== "libvirtd"; i++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assertEquals(comm(), "libvirtd");
      const out = await runInPrivateMounts(
        `mount -t tmpfs none /run && mount -t tmpfs none /etc/libvirt && ` +
          `echo ${pid} >/run/libvirtd.pid`,
        [
          "sh",
          "-c",
          '"$@" hook install --state-dir "$STATE" --json >"$OUT/install.json" && ' +
          '{ "$@" doctor --json --no-libvirt >"$OUT/doctor.json" || [ $? = 1 ]; }',
          "sh",
          ...cliCommand(),
        ],
        { NO_COLOR: "1", STATE: `${dir}/state`, OUT: dir },
      );
      assertEquals(out.code, 0, out.stderr);
      const install = JSON.parse(Deno.readTextFileSync(`${dir}/install.json`));
      assertEquals(
        install.messages.at(-1),
        `Reloaded libvirtd (pid ${pid}) with SIGHUP: it runs the hook from now on`,
      );
      const findings = JSON.parse(Deno.readTextFileSync(`${dir}/doctor.json`)) as DoctorFinding[];
      const hook = findings.find((f) => f.check === "hook")!;
      assertEquals(hook.status, "ok", hook.summary);
      assertMatch(
        hook.summary,
        new RegExp(
          `^Start guard /etc/libvirt/hooks/qemu\\.d/${HOOK_FILE_NAME}: installed by ` +
            `this version \\(0\\.1\\.0\\); libvirtd \\(pid ${pid}\\) was reloaded at \\S+; guards starts only;`,
        ),
      );
      // Nothing of it outside the namespace.
      assertEquals(pathExists(`/etc/libvirt/hooks/qemu.d/${HOOK_FILE_NAME}`), hadHook);
    } finally {
      if (child !== null) {
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
        await child.status;
      }
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("hook status names what is wrong with the file at the hook's path, and exits 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-status-" });
  try {
    const hooks = `${dir}/qemu.d`;
    const path = `${hooks}/${HOOK_FILE_NAME}`;
    const status = async () => {
      const run = await runCli(["hook", "status", "--hooks-dir", hooks, "--json"]);
      return { code: run.code, problems: JSON.parse(run.stdout).problems };
    };
    // An install killed before its rename, and no hook: both said.
    Deno.mkdirSync(hooks);
    const leftover = `${hooks}/.${HOOK_FILE_NAME}.1b4e28ba-2fa1-11d2-883f-0016d3cca427.tmp`;
    Deno.writeTextFileSync(leftover, "", { mode: 0o755 });
    assertEquals(await status(), {
      code: 1,
      problems: [
        `No hook at ${path}`,
        `${leftover} is left from an interrupted install (libvirt runs it if it is executable)`,
      ],
    });
    Deno.removeSync(leftover);
    // Someone else's hook under our name: its fix keeps it (hook install refuses to replace it,
    // leaving the file and creating nothing).
    Deno.writeTextFileSync(path, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    assertEquals(await status(), { code: 1, problems: [`${path} is not a passthrough hook`] });
    const fix = (await runCli(["hook", "status", "--hooks-dir", hooks])).stdout.split("\n").at(-2);
    assertEquals(
      fix,
      `  fix: rename it (libvirt runs every executable in ${hooks}: mv ${path} ${hooks}/50-own-hook)` +
        ` or move it out of ${hooks}, then passthrough hook install --hooks-dir ${hooks}`,
    );
    const install = await runCli([
      "hook",
      "install",
      "--hooks-dir",
      hooks,
      "--state-dir",
      `${dir}/s`,
    ]);
    assertEquals(install.code, 1, install.stdout);
    assertEquals(
      install.stderr,
      `passthrough hook: Refusing to install the start guard over "${path}": it is not a passthrough hook: ` +
        `rename it (libvirt runs every executable in ${hooks}: mv ${path} ${hooks}/50-own-hook) or move it ` +
        `out of ${hooks}, then install again\n`,
    );
    assertEquals(Deno.readTextFileSync(path), "#!/bin/sh\nexit 0\n");
    assertEquals(await pathExists(`${dir}/s`), false);
    Deno.removeSync(path);
    // Ours, written by another version for a program that is gone since (paths under this
    // test's own directory: a fixed path such as /nonexistent may exist on a machine).
    const gone = `${dir}/gone`;
    const settings = {
      version: "0.0.9",
      deadline: 10,
      timeout: findTimeout() ?? "/usr/bin/timeout",
      command: [`${gone}/deno`, "run", `${gone}/hook_check.js`, "--state-dir", dir],
      env: {},
      stateDir: `${dir}/state`,
      sysfs: "/sys",
    };
    installHook(hooks, renderHookScript(settings));
    const listing = (await runCli(["hook", "status", "--hooks-dir", hooks])).stdout;
    assertOk(
      listing.includes(`\n  MISSING: ${gone}/deno\n  MISSING: ${gone}/hook_check.js\n`),
      listing,
    );
    assertEquals(await status(), {
      code: 1,
      problems: [
        `it runs ${gone}/deno, which is missing: every VM start would be refused`,
        `it runs ${gone}/hook_check.js, which is missing: every VM start would be refused`,
        "written by passthrough 0.0.9, this is 0.1.0",
      ],
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hook status gives the chmod that fixes a hooks or state directory anyone can write, and that fix works", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-mode-" });
  try {
    Deno.chmodSync(dir, 0o755);
    const [hooks, state] = [`${dir}/qemu.d`, `${dir}/state`];
    const install = ["hook", "install", "--hooks-dir", hooks, "--state-dir", state];
    assertEquals((await runCli(install)).code, 0);
    const command = `passthrough hook install --hooks-dir ${hooks} --state-dir ${state}`;
    for (const [path, mode, chmod] of [[hooks, 0o777, "o-w"], [state, 0o757, "o-w"]] as const) {
      Deno.chmodSync(path, mode);
      const status = await runCli(["hook", "status", "--hooks-dir", hooks, "--json"]);
      assertEquals(status.code, 1);
      assertEquals(JSON.parse(status.stdout).fix, `chmod ${chmod} ${path}, then ${command}`);
      // Installing again alone is refused, and says the same chmod.
      const again = await runCli(install);
      assertEquals(again.code, 1);
      assertMatch(
        again.stderr,
        new RegExp(`or fix the owner and mode \\(chmod ${chmod} ${path}\\)`),
      );
      // The fix as printed works.
      Deno.chmodSync(path, mode & ~0o002);
      assertEquals((await runCli(install)).code, 0);
      assertEquals((await runCli(["hook", "status", "--hooks-dir", hooks])).code, 0);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hook install refuses a state directory that is a symbolic link, and writes no hook", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-state-link-" });
  try {
    Deno.mkdirSync(`${dir}/real`, { mode: 0o700 });
    Deno.symlinkSync(`${dir}/real`, `${dir}/state`);
    const run = await runCli([
      "hook",
      "install",
      "--hooks-dir",
      `${dir}/qemu.d`,
      "--state-dir",
      `${dir}/state`,
    ]);
    assertEquals(run.code, 1, run.stdout);
    assertMatch(run.stderr, new RegExp(`${dir}/state.*symbolic link`));
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["real", "state"]);
    assertEquals([...Deno.readDirSync(`${dir}/real`)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hook install refuses a Deno cache in the state directory that is a file or a symbolic link, and writes no hook", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-deno-dir-" });
  try {
    Deno.mkdirSync(`${dir}/state`, { mode: 0o700 });
    Deno.mkdirSync(`${dir}/elsewhere`, { mode: 0o700 });
    const install = () =>
      runCli(["hook", "install", "--hooks-dir", `${dir}/qemu.d`, "--state-dir", `${dir}/state`]);
    // A file there failed as "File exists (os error 17): mkdir", saying nothing of what it is.
    Deno.writeTextFileSync(`${dir}/state/deno`, "");
    const file = await install();
    assertEquals([file.code, file.stdout], [1, ""]);
    assertEquals(
      file.stderr,
      `passthrough hook: Cannot use "${dir}/state/deno": it is not a directory\n`,
    );
    // A link was followed: the hook, run as root, kept its code caches (and HOME) out of the
    // private state directory, wherever the link led.
    Deno.removeSync(`${dir}/state/deno`);
    Deno.symlinkSync(`${dir}/elsewhere`, `${dir}/state/deno`);
    const link = await install();
    assertEquals([link.code, link.stdout], [1, ""]);
    assertMatch(link.stderr, new RegExp(`"${dir}/state/deno": it is a symbolic link`));
    assertEquals(pathExists(`${dir}/qemu.d/${HOOK_FILE_NAME}`), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hook install into a hooks directory that is a link to nothing says so, and creates nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-dangling-" });
  try {
    // /etc/libvirt/hooks/qemu.d kept as a link into a tree not there (yet): libvirt runs nothing.
    Deno.symlinkSync(`${dir}/dotfiles/qemu.d`, `${dir}/qemu.d`);
    Deno.writeTextFileSync(`${dir}/file`, "");
    for (
      const [hooks, problem] of [
        [
          `${dir}/qemu.d`,
          `"${dir}/qemu.d" is a symbolic link to "${dir}/dotfiles/qemu.d", which does not exist: make that directory or remove the link`,
        ],
        [`${dir}/file/qemu.d`, `"${dir}/file" is not a directory`],
      ]
    ) {
      const run = await runCli([
        "hook",
        "install",
        "--hooks-dir",
        hooks!,
        "--state-dir",
        `${dir}/state`,
      ]);
      assertEquals([run.code, run.stdout], [1, ""]);
      assertEquals(
        run.stderr,
        `passthrough hook: Cannot install the start guard in "${hooks}": ${problem}, then install again\n`,
      );
      assertEquals([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["file", "qemu.d"]);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "hook install on a full hooks directory says where and why, and leaves no file libvirt runs",
  // A 64 KiB tmpfs over the hooks directory, in a private mount namespace.
  ignore: !canUnshareMounts(),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-full-" });
    await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
    try {
      const hooks = `${dir}/qemu.d`;
      const hook = `${hooks}/${HOOK_FILE_NAME}`;
      Deno.mkdirSync(hooks);
      const install = (deadline: string) =>
        `"$@" hook install --hooks-dir "$HOOKS" --state-dir "$OUT/state" --sysfs "$TREE" ` +
        `--deadline ${deadline} >/dev/null 2>"$OUT/err" || echo $? >"$OUT/code"`;
      const fill = `(dd if=/dev/zero of="$HOOKS/fill" bs=4k 2>/dev/null; true)`;
      const out = await runInPrivateMounts(
        `mount -t tmpfs -o size=64k,mode=755 tmpfs "$HOOKS"`,
        [
          "sh",
          "-c",
          // Full before any hook; then full again after one was installed, for its update.
          `${fill} && ${
            install("10")
          } && mkdir "$OUT/first" && ls -A "$HOOKS" >"$OUT/first/ls" && ` +
          `mv "$OUT/err" "$OUT/code" "$OUT/first" && rm "$HOOKS/fill" && ${install("10")} && ` +
          `cp "$HOOKS/${HOOK_FILE_NAME}" "$OUT/before" && ${fill} && ${install("11")} && ` +
          `ls -A "$HOOKS" >"$OUT/ls" && cp "$HOOKS/${HOOK_FILE_NAME}" "$OUT/after"`,
          "sh",
          ...cliCommand(),
        ],
        { NO_COLOR: "1", HOOKS: hooks, OUT: dir, TREE: tree.dir },
      );
      assertEquals(out.code, 0, out.stderr);
      const read = (name: string) => Deno.readTextFileSync(`${dir}/${name}`);
      // No write error names its file: the message does, and what was left in place.
      assertEquals([read("first/code"), read("first/err")], [
        "1\n",
        `passthrough hook: Cannot write the start guard "${hook}": No space left on device (os error 28); no hook was installed\n`,
      ]);
      assertEquals(read("first/ls"), "fill\n");
      assertEquals([read("code"), read("err")], [
        "1\n",
        `passthrough hook: Cannot write the start guard "${hook}": No space left on device (os error 28); the hook there is unchanged\n`,
      ]);
      assertEquals(read("ls"), `${HOOK_FILE_NAME}\nfill\n`);
      assertEquals(read("after"), read("before"));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("hook status reports a state directory that became a symbolic link after install, and its fix works", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-state-moved-" });
  try {
    const [hooks, state] = [`${dir}/qemu.d`, `${dir}/state`];
    const install = ["hook", "install", "--hooks-dir", hooks, "--state-dir", state];
    assertEquals((await runCli(install)).code, 0);
    // Moved to another disk, say, and linked back: the check refuses the link.
    Deno.renameSync(state, `${dir}/real`);
    Deno.symlinkSync(`${dir}/real`, state);
    const status = async () =>
      JSON.parse((await runCli(["hook", "status", "--hooks-dir", hooks, "--json"])).stdout);
    const linked = await status();
    assertEquals(linked.problems, [
      `its state directory ${state} is a symbolic link to ${dir}/real, which the check refuses: ` +
      `it reads no allowance and records no refusal`,
    ]);
    assertEquals(linked.fix, `rm ${state} && mv ${dir}/real ${state}`);
    Deno.removeSync(state);
    Deno.renameSync(`${dir}/real`, state);
    assertEquals((await status()).problems, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hook status reports the captured tree its hook reads gone, as the refusal it causes says, and its fix works", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-tree-gone-" });
  try {
    const [hooks, state, tree] = [`${dir}/qemu.d`, `${dir}/state`, `${dir}/tree`];
    buildHostTree(loadFixtureHost("x570-aorus-pro-wifi"), tree);
    const hook = await installOnTree(dir, tree);
    Deno.renameSync(tree, `${dir}/elsewhere`);
    // Every start is refused, pointing at the hook status that reads this hook's directory.
    const refused = await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED);
    assertEquals(refused.code, 1);
    const named = `so nothing was checked; see "passthrough hook status --hooks-dir ${hooks}"\n`;
    assertOk(refused.stderr.endsWith(named), refused.stderr);
    const status = await runCli(["hook", "status", "--hooks-dir", hooks, "--json"]);
    assertEquals(status.code, 1);
    const report = JSON.parse(status.stdout);
    assertEquals(report.problems, [
      `it reads the captured tree ${tree}, which has no bus/pci/devices now: every VM start is ` +
      `refused, with nothing checked`,
    ]);
    assertEquals(
      report.fix,
      `put the tree back at ${tree}, or guard this host's /sys: ` +
        `passthrough hook install --hooks-dir ${hooks} --state-dir ${state}`,
    );
    // Installing again over the missing tree is refused, and leaves the hook as it was.
    const again = await runCli(installArgs(dir, tree));
    assertEquals(again.code, 1);
    assertMatch(again.stderr, /Not a sysfs tree: ".*\/tree": no such directory/);
    // The tree back: nothing wrong.
    Deno.renameSync(`${dir}/elsewhere`, tree);
    assertEquals(
      JSON.parse((await runCli(["hook", "status", "--hooks-dir", hooks, "--json"])).stdout)
        .problems,
      [],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the hook refuses every start over a captured tree that became a loop of symbolic links, as over one gone, whatever the policy", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-tree-loop-" });
  try {
    const [hooks, state, tree] = [`${dir}/qemu.d`, `${dir}/state`, `${dir}/tree`];
    buildHostTree(loadFixtureHost("x570-aorus-pro-wifi"), tree);
    const hook = await installOnTree(dir, tree);
    const see = `so nothing was checked; see "passthrough hook status --hooks-dir ${hooks}"\n`;
    const start = () => runHook(hook, ["win11", "prepare", "begin", "-"], MOVED);
    // The tree itself, then its devices' directory, a link to itself.
    for (const loop of [tree, `${tree}/bus/pci/devices`]) {
      Deno.renameSync(loop, `${dir}/aside`);
      Deno.symlinkSync(loop.slice(loop.lastIndexOf("/") + 1), loop);
      for (const policy of ["enforce", "warn"]) {
        const config = `version: 1\nvms:\n  win11:\n    guard: ${policy}\n    devices:\n` +
          `      - name: gpu\n        match: { vendor_id: 10de }\n`;
        recordPolicies(state, guardPolicies(parseConfig(config, { file: "c.yaml" })));
        // It said "the check failed: Cannot open ...: ELOOP" with "passthrough plan" as its fix.
        assertEquals(await start(), {
          code: 1,
          stdout: "",
          stderr: `passthrough guard: refusing to start "win11": cannot read ${tree}/bus/pci/` +
            `devices (a loop of symbolic links at "${loop}"), ${see}`,
        });
      }
      // hook status says it, as it says a tree gone.
      const status = await runCli(["hook", "status", "--hooks-dir", hooks, "--json"]);
      assertMatch(JSON.parse(status.stdout).problems[0], /which has no bus\/pci\/devices now/);
      Deno.removeSync(loop);
      Deno.renameSync(`${dir}/aside`, loop);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the hook refuses a start over a captured tree with a device entry that loops, whatever the policy, with the tree's fix", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-device-loop-" });
  try {
    const [hooks, state, tree] = [`${dir}/qemu.d`, `${dir}/state`, `${dir}/tree`];
    buildHostTree(loadFixtureHost("x570-aorus-pro-wifi"), tree);
    const hook = await installOnTree(dir, tree);
    const device = `${tree}/bus/pci/devices/0000:0b:00.0`;
    // The device itself, then its uevent (what its identity is read from), a link to itself.
    for (const loop of [device, `${device}/uevent`]) {
      Deno.renameSync(loop, `${dir}/aside`);
      Deno.symlinkSync(loop.slice(loop.lastIndexOf("/") + 1), loop);
      for (const policy of ["enforce", "warn"]) {
        const config = `version: 1\nvms:\n  win11:\n    guard: ${policy}\n    devices:\n` +
          `      - name: gpu\n        match: { vendor_id: 10de }\n`;
        recordPolicies(state, guardPolicies(parseConfig(config, { file: "c.yaml" })));
        // Its fix was "passthrough plan --vm win11", which reads the same tree.
        assertEquals(await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED), {
          code: 1,
          stdout: "",
          stderr: `passthrough guard: refusing to start "win11": the check failed: Refusing to ` +
            `read a tree with a loop of symbolic links at "${loop}": the tree is damaged: ` +
            `capture it again with 'passthrough snapshot'; fix: capture the tree at ${tree} ` +
            `again (passthrough snapshot DIR, as root, on the host it describes); see ` +
            `"passthrough hook status --hooks-dir ${hooks}"\n`,
        });
      }
      Deno.removeSync(loop);
      Deno.renameSync(`${dir}/aside`, loop);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "hook install takes a captured tree Deno reads only with --allow-all (/dev/shm), and hook status finds it there",
  // The CLI's --allow-read does not reach /dev: the tree was "no bus/pci/devices", so install
  // refused it and hook status said every start was refused, while the check (run with
  // --allow-all) read it and let a start through.
  ignore: !pathExists("/dev/shm"),
  fn: () =>
    withShmTree("passthrough-hook-shm-", async (dir, tree) => {
      buildHostTree(loadFixtureHost("x570-aorus-pro-wifi"), tree);
      const hook = await installOnTree(dir, tree);
      const start = await runHook(
        hook,
        ["w", "prepare", "begin", "-"],
        "<domain type='kvm'><name>w</name><devices/></domain>",
      );
      assertEquals(start.code, 0, start.stderr);
      const status = await runCli(["hook", "status", "--hooks-dir", `${dir}/qemu.d`, "--json"]);
      assertEquals(JSON.parse(status.stdout).problems, []);
    }),
});

Deno.test({
  name:
    "hook install refuses a tree under /dev that is not there, and hook status says a hook reading one refuses every start",
  // /dev/shm is emptied by a reboot: a hook over a tree captured there refused every start, while
  // install took the path and hook status said "up to date" (Deno will not stat under /dev).
  ignore: !pathExists("/dev/shm"),
  fn: () =>
    withShmTree("passthrough-hook-shm-gone-", async (dir, tree) => {
      const install = await runCli(installArgs(dir, `${tree}/none`));
      assertEquals(install.code, 1, install.stdout);
      assertOk(install.stderr.includes(`Not a sysfs tree: "${tree}/none"`), install.stderr);
      buildHostTree(loadFixtureHost("x570-aorus-pro-wifi"), tree);
      await installOnTree(dir, tree);
      // The reboot.
      await Deno.remove(tree, { recursive: true });
      const status = await runCli(["hook", "status", "--hooks-dir", `${dir}/qemu.d`, "--json"]);
      assertEquals(status.code, 1, status.stdout);
      assertEquals(JSON.parse(status.stdout).sysfsMissing, true);
    }),
});

Deno.test("hook install refuses a --sysfs that is no tree, and writes no hook", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-no-tree-" });
  try {
    const hooks = `${dir}/qemu.d`;
    const install = await runCli(installArgs(dir, `${dir}/none`));
    assertEquals(install.code, 1);
    assertEquals(
      install.stderr,
      `passthrough hook: Not a sysfs tree: "${dir}/none": no such directory (the hook would ` +
        `refuse every VM start, checking nothing)\n`,
    );
    // A directory that lacks only the PCI devices is said to lack them.
    await Deno.mkdir(`${dir}/empty`);
    const empty = await runCli(installArgs(dir, `${dir}/empty`));
    assertEquals(empty.code, 1);
    assertMatch(empty.stderr, /Not a sysfs tree: ".*\/empty": no bus\/pci\/devices directory \(/);
    // A loop of symbolic links, in those words: it said `Cannot open directory ...: ELOOP`.
    Deno.symlinkSync("loop", `${dir}/loop`);
    const loop = await runCli(installArgs(dir, `${dir}/loop`));
    assertEquals(
      [loop.code, loop.stderr],
      [
        1,
        `passthrough hook: Not a sysfs tree: "${dir}/loop": a loop of symbolic links (the hook ` +
        `would refuse every VM start, checking nothing)\n`,
      ],
    );
    assertEquals(pathExists(`${hooks}/${HOOK_FILE_NAME}`), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "guard allow never lets a start take a device the host needs, and says so",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    // The system daemon's VMs, whose starts the hook guards.
    await using daemon = await startGuardDaemon();
    const system = asSystemDaemon(daemon);
    const host = loadFixtureHost("x570-aorus-pro-wifi");
    host.host_use = [
      { address: "0000:0b:00.0", reason: "mounted-filesystem", detail: "/ on nvme0n1p2" },
    ];
    await using tree = await tempHostTree(host);
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-cli-" });
    try {
      const hooks = `${dir}/qemu.d`;
      const state = ["--state-dir", `${dir}/state`];
      // The tree named relative to where install runs.
      const [parent, name] = [
        tree.dir.slice(0, tree.dir.lastIndexOf("/")),
        tree.dir.split("/").at(-1)!,
      ];
      const installed = await runCli(
        ["hook", "install", "--hooks-dir", hooks, ...state, "--sysfs", name],
        { cwd: parent },
      );
      assertEquals(installed.code, 0, installed.stderr);
      const hook = `${hooks}/${HOOK_FILE_NAME}`;
      assertEquals((await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED)).code, 1);
      // A tree named relative to here is written by its absolute path (libvirt runs hooks from /).
      const relative = await runCli(
        ["hook", "status", "--hooks-dir", hooks, "--json"],
      );
      assertEquals(JSON.parse(relative.stdout).settings.sysfs, tree.dir);
      const allow = await runCli([
        "guard",
        "allow",
        "win11",
        "--connect",
        system.uri,
        "--hooks-dir",
        hooks,
      ], { wrap: system.wrap });
      assertMatch(
        allow.stdout,
        /\nNote: its last refusal names 0000:0b:00\.0, which the host needs \(in use by the host \(mounted-filesystem: \/ on nvme0n1p2\)\): an allowance does not let a start take it/,
      );
      const again = await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED);
      assertEquals(again.code, 1);
      assertMatch(
        again.stderr,
        /^passthrough guard: refusing to start "win11": hostdev 0000:0b:00\.0/,
      );
      assertMatch(
        again.stderr,
        /"passthrough guard allow" does not let "win11" take a device the host needs/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("guard allow without an installed hook writes where its help says", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-cli-" });
  try {
    const help = await runCli(["guard", "allow", "--help"]);
    assertMatch(
      help.stdout.replace(/\s+/g, " "),
      /--state-dir DIR where the allowance goes \(default: the installed hook's state directory, else \$PASSTHROUGH_STATE_DIR or \/var\/lib\/passthrough\)/,
    );
    Deno.mkdirSync(`${dir}/qemu.d`);
    const allow = await runCli([
      "guard",
      "allow",
      "win11",
      "--connect",
      GUARD_WORLD,
      "--hooks-dir",
      `${dir}/qemu.d`,
    ], {
      env: { PASSTHROUGH_STATE_DIR: `${dir}/env-state` },
    });
    assertEquals(allow.code, 0, allow.stderr);
    assertOk(pathExists(`${dir}/env-state/guard/allow/win11.json`), allow.stdout);
    assertMatch(allow.stdout, /\nNote: no start guard is installed in /);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("guard allow over a test world never writes where the installed hook reads", async () => {
  await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-cli-" });
  try {
    const hooks = `${dir}/qemu.d`;
    // The host's hook reads DIR/state; the test world's win11 has the host's win11's UUID.
    const hook = await installOnTree(dir, tree.dir);
    const allow = (state: string[], env: Record<string, string> = {}) =>
      runCli(
        ["guard", "allow", "win11", "--connect", GUARD_WORLD, "--hooks-dir", hooks, ...state],
        { env },
      );
    // Its state directory the hook's, by the flag or by the environment: refused.
    for (
      const [state, env] of [
        [["--state-dir", `${dir}/state`], {}],
        [[], { PASSTHROUGH_STATE_DIR: `${dir}/state` }],
      ] as const
    ) {
      const refused = await allow([...state], env);
      assertEquals([refused.code, refused.stdout], [1, ""], refused.stderr);
      assertMatch(
        refused.stderr,
        new RegExp(
          `Cannot give an allowance for the VMs of "test://.*guard_allow\\.xml" in ${dir}/state: the start guard reads it there for the VMs of qemu:///system, whose VM with UUID ${WIN11_UUID} would start unchecked; --state-dir DIR gives it in DIR, "-c qemu:///system" to the host's VM\n$`,
        ),
      );
      assertEquals(pathExists(`${dir}/state/guard/allow/win11.json`), false);
    }
    // The host's win11 still starts refused.
    assertEquals((await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED)).code, 1);
    // Its own state directory: the allowance goes there, and it says the hook does not read it.
    const own = await allow(["--state-dir", `${dir}/rehearsal`]);
    assertEquals(own.code, 0, own.stderr);
    assertOk(pathExists(`${dir}/rehearsal/guard/allow/win11.json`), own.stdout);
    assertOk(
      own.stdout.endsWith(
        `\nNote: the installed hook reads ${dir}/state, not ${dir}/rehearsal, and guards the VMs of qemu:///system, not those of "${GUARD_WORLD}"\n`,
      ),
      own.stdout,
    );
    assertEquals(pathExists(`${dir}/state/guard/allow/win11.json`), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "guard allow for a VM the system daemon does not define, by any spelling of its URI, sends the user nowhere else",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    await using daemon = await startGuardDaemon();
    const system = asSystemDaemon(daemon);
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-cli-" });
    try {
      for (
        const uri of [
          system.uri,
          "qemu+unix:///system?socket=/run/libvirt/libvirt-sock",
          "qemu:///system?socket=/var/run/libvirt/libvirt-sock",
        ]
      ) {
        const run = await runCli(
          ["guard", "allow", "win1", "-c", uri, "--hooks-dir", `${dir}/qemu.d`],
          { env: { PASSTHROUGH_STATE_DIR: `${dir}/state` }, wrap: system.wrap },
        );
        assertEquals([run.code, run.stdout], [1, ""], run.stderr);
        assertMatch(run.stderr, /libvirt defines no VM "win1" \(did you mean "win11"\?\)/);
        // It said: '; the start guard's VMs are those of qemu:///system: "... -c qemu:///system"
        // reads it there', for the very daemon it had read.
        assertEquals(run.stderr.includes("the start guard's VMs are those of"), false, run.stderr);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "guard allow through a private daemon's socket= never writes where the installed hook reads",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    // Not the system daemon's socket: its hooks and definitions may be its own (a container's),
    // and its win11 has the host's win11's UUID.
    await using daemon = await startGuardDaemon();
    await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-cli-" });
    try {
      const hook = await installOnTree(dir, tree.dir);
      const allow = await runCli(
        ["guard", "allow", "win11", "-c", daemon.uri, "--hooks-dir", `${dir}/qemu.d`],
        { env: { PASSTHROUGH_STATE_DIR: `${dir}/state` } },
      );
      assertEquals([allow.code, allow.stdout], [1, ""], allow.stderr);
      assertMatch(
        allow.stderr,
        new RegExp(
          `Cannot give an allowance for the VMs of "qemu:///system\\?socket=${daemon.dir}/libvirt-sock" in ${dir}/state: the start guard reads it there for the VMs of qemu:///system, whose VM with UUID ${WIN11_UUID} would start unchecked`,
        ),
      );
      assertEquals(pathExists(`${dir}/state/guard/allow/win11.json`), false);
      // The host's win11 still starts refused.
      assertEquals((await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED)).code, 1);
      // Nor is this daemon's VM sent to the system daemon as if it had been read there.
      const typo = await runCli(
        ["guard", "allow", "win1", "-c", daemon.uri, "--hooks-dir", `${dir}/qemu.d`],
        { env: { PASSTHROUGH_STATE_DIR: `${dir}/state` } },
      );
      assertEquals(typo.code, 1, typo.stderr);
      assertMatch(typo.stderr, /; the start guard's VMs are those of qemu:\/\/\/system: "/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("guard allow exits 0 with its allowance given when the refusal records cannot be read", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-cli-" });
  try {
    Deno.mkdirSync(`${dir}/qemu.d`);
    Deno.mkdirSync(`${dir}/state/guard`, { recursive: true, mode: 0o700 });
    // A stray file where the guard keeps its refusal records.
    Deno.writeTextFileSync(`${dir}/state/guard/refused`, "");
    const allow = await runCli([
      "guard",
      "allow",
      "win11",
      "--connect",
      GUARD_WORLD,
      "--hooks-dir",
      `${dir}/qemu.d`,
      "--state-dir",
      `${dir}/state`,
    ]);
    assertEquals(allow.code, 0, allow.stderr);
    assertOk(pathExists(`${dir}/state/guard/allow/win11.json`), allow.stdout);
    assertMatch(allow.stdout, /^The next start of "win11" \(UUID [0-9a-f-]+\) goes on once/);
    assertEquals(
      allow.stderr,
      `Note: cannot read the start guard's refusal records: Cannot use "${dir}/state/guard/refused": ` +
        "it is not a directory; remove it (the start guard keeps its refusal records there)\n",
    );
    // Unread, the records do not say the guard refused nothing.
    assertEquals(allow.stdout.includes("has no refusal recorded"), false, allow.stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "the installed hook refuses a moved card until guard allow lets one start through",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    // The system daemon's VMs, whose starts the hook guards.
    await using daemon = await startGuardDaemon();
    const system = asSystemDaemon(daemon);
    await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-cli-" });
    try {
      const hooks = `${dir}/qemu.d`;
      const hook = await installOnTree(dir, tree.dir);
      const refused = await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED);
      assertEquals([refused.code, refused.stdout], [1, ""]);
      assertEquals(
        refused.stderr,
        'passthrough guard: refusing to start "win11": hostdev 0000:0b:00.0 holds 10de:1b06 ' +
          '(class 030000) now, not the recorded 10de:2684 (class 030000) of rule "gpu"; ' +
          "fix: passthrough plan --vm win11\n",
      );

      // guard allow finds the hook's state directory by itself.
      const allow = await runCli([
        "guard",
        "allow",
        "win11",
        "--connect",
        system.uri,
        "--hooks-dir",
        hooks,
      ], { wrap: system.wrap });
      assertEquals(allow.code, 0, allow.stderr);
      assertMatch(
        allow.stdout,
        /^The next start of "win11" \(UUID 0f3c1a52-7d4e-4b8a-9c61-2e5f8a9b0c11\) goes on once even if the guard refuses it, and uses this allowance up even if libvirt, QEMU or another hook then fails it \(until /,
      );
      assertMatch(allow.stdout, new RegExp(`${dir}/state/guard/allow/win11\\.json\\)\\n$`));
      // A name libvirt defines no VM under is refused: the allowance is for the VM defined now.
      const typo = await runCli([
        "guard",
        "allow",
        "win1",
        "--connect",
        GUARD_WORLD,
        "--hooks-dir",
        hooks,
      ]);
      assertEquals([typo.code, typo.stdout], [1, ""], typo.stderr);
      assertMatch(
        typo.stderr,
        /libvirt defines no VM "win1" \(did you mean "win11"\?\) at test:\/\/.*guard_allow\.xml: an allowance is for the VM defined under that name now; define it first/,
      );
      // Read where the hook's VMs are, whatever the default URI is.
      assertEquals(
        typo.stderr.endsWith(
          `; the start guard's VMs are those of qemu:///system: "passthrough guard allow win1 --hooks-dir ${hooks} -c qemu:///system" reads it there\n`,
        ),
        true,
        typo.stderr,
      );
      assertEquals(pathExists(`${dir}/state/guard/allow/win1.json`), false);
      // Another host's libvirt: its VM is not the one this host's hook starts.
      const remote = await runCli(
        [
          "guard",
          "allow",
          "win11",
          "--connect",
          "qemu+ssh://hv1.invalid/system",
          "--hooks-dir",
          hooks,
        ],
      );
      assertEquals(remote.code, 1, remote.stderr);
      assertMatch(
        remote.stderr,
        /Cannot give an allowance through qemu\+ssh:\/\/hv1\.invalid\/system: another host's start guard never reads this host's state directory; run passthrough guard allow on that host\n$/,
      );
      // A VM defined under the name since (another <uuid>) does not take win11's allowance.
      const other = MOVED.replace(WIN11_UUID, "0b5c8b0e-3a55-4bd6-9a0c-5c4f5d7e2f11");
      const impostor = await runHook(hook, ["win11", "prepare", "begin", "-"], other);
      assertEquals(impostor.code, 1, impostor.stderr);
      assertMatch(
        impostor.stderr,
        /\npassthrough guard: an allowance for "win11" was given for another VM defined under that name, not this one \(UUID 0b5c8b0e-3a55-4bd6-9a0c-5c4f5d7e2f11\); it does not count and is used up: run "passthrough guard allow win11 -c qemu:\/\/\/system --state-dir \S+" again to start this one anyway\n$/,
      );
      assertEquals(
        (await runCli(
          ["guard", "allow", "win11", "--connect", system.uri, "--hooks-dir", hooks],
          { wrap: system.wrap },
        )).code,
        0,
      );
      const allowed = await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED);
      assertEquals([allowed.code, allowed.stdout], [0, ""]);
      assertMatch(allowed.stderr, /^passthrough guard: starting "win11" once despite this/);
      assertEquals((await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED)).code, 1);

      const record = JSON.parse(await Deno.readTextFile(`${dir}/state/guard/refused/win11.json`));
      assertEquals([record.vm, record.allowed, record.refusals[0].address], [
        "win11",
        false,
        "0000:0b:00.0",
      ]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("apply records the config's guard policies, and the installed hook starts with a warning", async () => {
  // The host needs the other GPU (0c:00.0), which no rule matches: only the hook sees it.
  const host = loadFixtureHost("x570-aorus-pro-wifi");
  host.host_use = [{ address: "0000:0c:00.0", reason: "console-vga", detail: "fbcon on it" }];
  await using tree = await tempHostTree(host);
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-cli-" });
  try {
    const hooks = `${dir}/qemu.d`;
    const state = `${dir}/state`;
    Deno.writeTextFileSync(
      `${dir}/world.xml`,
      `<node>\n${testDomainXml("win11", { running: false, uuid: WIN11_UUID })}\n</node>\n`,
    );
    // The hook takes only policies recorded over qemu:///system, which this test world stands
    // for: between applies the file names that connection, as an apply over it leaves it.
    const world = `test://${dir}/world.xml`;
    const recordedOver = (uri: string) => {
      const file = `${state}/guard/policy.json`;
      if (!pathExists(file)) return;
      const text = Deno.readTextFileSync(file);
      const policies = JSON.parse(text);
      if (policies.uri === uri) return;
      Deno.writeTextFileSync(file, text.replace(JSON.stringify(policies.uri), JSON.stringify(uri)));
    };
    const apply = async (guard: string, rule = "") => {
      Deno.writeTextFileSync(
        `${dir}/config.yaml`,
        `version: 1\nvms:\n  win11:\n${guard}    devices:\n` +
          `      - { name: gpu, match: { vendor_device_id: "10de:1b06" }${rule} }\n`,
      );
      recordedOver(lockUri(world));
      const applied = await applyYes(`${dir}/config.yaml`, tree.dir, world, state);
      recordedOver("qemu:///system");
      return applied;
    };
    const installed = await runCli(
      ["hook", "install", "--hooks-dir", hooks, "--state-dir", state, "--sysfs", tree.dir],
    );
    assertEquals(installed.code, 0, installed.stderr);
    const hook = `${hooks}/${HOOK_FILE_NAME}`;

    const warned = await apply("    guard: warn\n");
    assertEquals(warned.code, 0, warned.stderr);
    assertMatch(
      warned.stdout,
      new RegExp(`Start guard policies recorded in ${state}: "win11" warn\\n$`),
    );
    const status = await runCli(["hook", "status", "--hooks-dir", hooks]);
    assertMatch(status.stdout, /\n {2}policies: "win11" warn \(from .*\/config\.yaml\)\n/);
    const started = await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED);
    assertEquals([started.code, started.stdout], [0, ""]);
    assertMatch(
      started.stderr,
      /^passthrough guard: starting "win11" despite this \(guard: warn\): hostdev 0000:0b:00\.0 holds 10de:1b06 .*; fix: passthrough plan --vm win11\n$/,
    );
    const record = JSON.parse(await Deno.readTextFile(`${state}/guard/refused/win11.json`));
    assertEquals([record.allowed, record.refusals[0].policy], [false, "warn"]);

    // The same config again changes nothing and says nothing about the guard.
    const again = await apply("    guard: warn\n");
    assertEquals(again.code, 0, again.stderr);
    assertOk(!again.stdout.includes("Start guard"), again.stdout);

    const enforced = await apply("");
    assertEquals(enforced.code, 0, enforced.stderr);
    assertMatch(enforced.stdout, /Start guard policies removed from .*: every VM enforces\n$/);
    assertEquals((await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED)).code, 1);
    const after = await runCli(["hook", "status", "--hooks-dir", hooks, "--json"]);
    assertEquals(JSON.parse(after.stdout).policies, null);
    assertMatch(
      (await runCli(["hook", "status", "--hooks-dir", hooks])).stdout,
      /\n {2}policies: every VM enforces/,
    );

    // A card recorded under rule "gpu" that the host needs: refused, and still refused once the
    // rule says allow_host_critical, as apply never recorded that card under it.
    const needed = MOVED.replaceAll("0x0b", "0x0c").replace(
      'address="0000:0b:00.0" vendor="10de" device="2684"',
      'address="0000:0c:00.0" vendor="10de" device="128b"',
    );
    const refused = await runHook(hook, ["win11", "prepare", "begin", "-"], needed);
    assertEquals(refused.code, 1);
    assertMatch(refused.stderr, /only "allow_host_critical: true" on rule "gpu"/);
    const critical = await apply("", ", allow_host_critical: true");
    assertEquals(critical.code, 0, critical.stderr);
    assertMatch(
      critical.stdout,
      new RegExp(
        `Start guard policies recorded in ${state}: "win11" enforce, rule "gpu" ` +
          "allow_host_critical\n$",
      ),
    );
    // Rule "gpu" took 10de:1b06 at 0b:00.0: a record of the console's GPU under its name, which
    // no apply wrote (edited in, or copied from another VM), does not borrow its override.
    const borrowed = await runHook(hook, ["win11", "prepare", "begin", "-"], needed);
    assertEquals([borrowed.code, borrowed.stdout], [1, ""]);
    assertMatch(
      borrowed.stderr,
      /\(console-vga: fbcon on it\); rule "gpu"'s allow_host_critical does not count here: passthrough apply recorded no such device under it at 0000:0c:00\.0 for this VM .*; fix: passthrough apply --vm win11\n$/,
    );
    assertEquals((await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED)).code, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the hook's check loads no package and no node: module, at a start and with state", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "info",
      "--json",
      new URL("../../cli/hook_check.ts", import.meta.url).pathname,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    roots: string[];
    modules: {
      specifier: string;
      dependencies?: { code?: { specifier: string }; isDynamic?: true }[];
    }[];
  };
  const bySpecifier = new Map(info.modules.map((m) => [m.specifier, m]));
  /** What evaluating the entry loads: code edges only (type-only imports are erased). */
  const loaded = (dynamic: boolean) => {
    const seen = new Set<string>();
    const visit = (specifier: string) => {
      if (seen.has(specifier)) return;
      seen.add(specifier);
      for (const d of bySpecifier.get(specifier)?.dependencies ?? []) {
        if (d.code !== undefined && (dynamic || d.isDynamic !== true)) visit(d.code.specifier);
      }
    };
    visit(info.roots[0]!);
    return [...seen];
  };
  // At every start: local modules only (the domain is read with the lenient reader, which loads
  // no XML library).
  const always = loaded(false);
  const packages = (specifiers: string[]) =>
    specifiers.filter((s) => !s.startsWith("file:") && !s.startsWith("node:"))
      // The package's name, scoped or not, without version or path.
      .map((s) => s.replace(/^npm:\/?/, "").replace(/^(@?[^@/]+(?:\/[^@/]+)?)@?.*$/, "$1"));
  assertEquals(packages(always), []);
  assertEquals(always.filter((s) => s.startsWith("node:")), []);
  assertOk(always.length > 5, always.join(" "));
  assertOk(!always.some((s) => s.endsWith("/lib/domain/xml.ts")), always.join(" "));
  // With state to take or record: still no package (a hook run from the sources would resolve it
  // from the cache of the HOME libvirt gives it, and fail every start without it) and no node:
  // built-in, whose Node layer would take longer to load than the check.
  const all = loaded(true);
  assertEquals(packages(all), []);
  assertEquals(all.filter((s) => s.startsWith("node:")), []);
  assertOk(all.some((s) => s.endsWith("/lib/guard/state.ts")), all.join(" "));
});

Deno.test("bench/hook_process.ts runs, and every hook run in it exits as it should", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../../bench/hook_process.ts", import.meta.url).pathname,
      "--runs",
      "1",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 0, text);
  assertMatch(text, /hook prepare begin \(main\.ts\) +[0-9.]+ ms/);
  // The check run alone, without the hook's wrapper, as the hook's settings line names it.
  assertMatch(text, /check alone \(bin\), no wrapper +[0-9.]+ ms/);
});

Deno.test("hook run, what a bundle without its check or a compiled binary runs, checks with the hook's permissions", async () => {
  await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-run-" });
  try {
    const state = `${dir}/state`;
    const flags = ["--no-prompt", ...checkPermissions(state)];
    const run = (args: string[]) =>
      runCli(["hook", "run", "--state-dir", state, "--sysfs", tree.dir, "--", ...args], {
        flags,
        stdin: MOVED,
      });
    const refused = await run(["win11", "prepare", "begin", "-"]);
    assertEquals([refused.code, refused.stdout], [1, ""]);
    assertMatch(refused.stderr, /^passthrough guard: refusing to start "win11": hostdev 0000:0b/);
    // After "--" a VM may be called "-h": it is the hook's argument, not a request for help.
    const other = await run(["-h", "release", "end", "-"]);
    assertEquals([other.code, other.stdout, other.stderr], [0, "", ""]);
    const missing = await runCli(["hook", "run", "--", "win11", "prepare", "begin"], { flags });
    assertEquals(missing.code, 2);
    assertMatch(missing.stderr, /^passthrough hook: Missing --state-dir DIR\n/);
    // This host's /sys however spelled is the live host, with its use: a hand-added hostdev on
    // the NIC of its default route is refused.
    const nic = livePciMissing() === null ? liveDefaultRouteNic() : null;
    if (nic !== null) {
      const live = await runCli(
        ["hook", "run", "--state-dir", state, "--sysfs", "/sys/.", "--", "vm", "prepare", "begin"],
        {
          flags,
          stdin: `<domain type='kvm'><name>vm</name><devices>${nic.hostdev}</devices></domain>`,
        },
      );
      assertEquals([live.code, live.stdout], [1, ""], live.stderr);
      assertMatch(live.stderr, new RegExp(`hostdev ${nic.address} .*the host needs it`));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the check the hook runs with --allow-all needs only reads and its state directory", async () => {
  await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-scope-" });
  try {
    const state = `${dir}/state`;
    // No environment, no program, no network, no write outside the state directory: were the
    // check to use any, Deno would refuse it here, and the check would fail closed, not refuse.
    const config = new URL("../../deno.json", import.meta.url).pathname;
    const flags = ["--no-prompt", "--config", config, "--allow-read", `--allow-write=${state}`];
    const main = new URL("../../cli/hook_check.ts", import.meta.url).pathname;
    const start = (stdin: string) =>
      runCli(["--state-dir", state, "--sysfs", tree.dir, "--", "win11", "prepare", "begin", "-"], {
        flags,
        main,
        stdin,
      });
    const refused = await start(MOVED);
    assertEquals([refused.code, refused.stdout], [1, ""]);
    assertMatch(
      refused.stderr,
      /^passthrough guard: refusing to start "win11": hostdev 0000:0b:00\.0 holds 10de:1b06 .*\n$/,
    );
    assertEquals([...Deno.readDirSync(`${state}/guard/refused`)].length, 1);
    // The card as recorded: the start goes on, and the refusal record is cleared.
    const passed = await start(MOVED.replace('device="2684"', 'device="1b06"'));
    assertEquals([passed.code, passed.stdout, passed.stderr], [0, "", ""]);
    assertEquals([...Deno.readDirSync(`${state}/guard/refused`)].length, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hook and guard refuse bad usage with exit 2", async () => {
  for (
    const args of [
      ["hook"],
      ["hook", "frobnicate"],
      ["hook", "install", "--deadline", "0", "--hooks-dir", "/nonexistent"],
      ["hook", "install", "--deadline", "1.5", "--hooks-dir", "/nonexistent"],
      ["hook", "install", "--deadline", "601", "--hooks-dir", "/nonexistent"],
      ["hook", "install", "--deadline", "10s", "--hooks-dir", "/nonexistent"],
      ["hook", "status", "extra"],
      ["guard", "allow"],
      ["guard", "deny", "vm"],
    ]
  ) {
    const run = await runCli(args);
    assertEquals(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
    assertMatch(run.stderr, new RegExp(`^passthrough ${args[0]}: `));
  }
});

Deno.test("hook install refuses a --deadline JavaScript reads as a number but that is no whole number of seconds as written, and writes no hook", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-deadline-" });
  try {
    for (const deadline of ["0x10", "6e2", "0b11", "0o7"]) {
      const run = await runCli(installArgs(dir, "/sys").toSpliced(2, 0, "--deadline", deadline));
      assertEquals([run.code, run.stdout], [2, ""], `--deadline ${deadline}: ${run.stderr}`);
      assertMatch(
        run.stderr,
        new RegExp(
          `^passthrough hook: --deadline must be a whole number of seconds from 1 to 600, not "${deadline}"\n`,
        ),
      );
      assertEquals(pathExists(`${dir}/qemu.d`), false);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "doctor reports the hook missing before install and in place after",
  ignore: livePciMissing() !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-doctor-" });
    try {
      const hooks = `${dir}/qemu.d`;
      const doctor = async () => {
        const run = await runCli(["doctor", "--json", "--no-libvirt", "--hooks-dir", hooks]);
        assertOk(run.code === 0 || run.code === 1, run.stderr);
        return (JSON.parse(run.stdout) as DoctorFinding[]).find((f) => f.check === "hook")!;
      };
      const before = await doctor();
      assertEquals([before.status, before.hint], [
        "warn",
        `passthrough hook install --hooks-dir ${hooks}`,
      ]);
      assertMatch(before.summary, /^No start guard at .*50-passthrough-guard/);
      const text = await runCli(["doctor", "--no-libvirt", "--hooks-dir", hooks]);
      console.log(`$ passthrough doctor --no-libvirt (before install)\n${text.stdout}`);

      const install = await runCli([
        "hook",
        "install",
        "--hooks-dir",
        hooks,
        "--state-dir",
        `${dir}/s`,
      ]);
      assertEquals(install.code, 0, install.stderr);
      const after = await doctor();
      // Installed and intact; but libvirt runs no hook from a temporary directory.
      assertEquals(after.status, "warn", after.summary);
      assertMatch(after.summary, /^Start guard .*: installed by this version \(0\.1\.0\); /);
      assertMatch(after.summary, /libvirt's system daemon does not run hooks from .*qemu\.d/);
      const text2 = await runCli(["doctor", "--no-libvirt", "--hooks-dir", hooks]);
      console.log(`$ passthrough doctor --no-libvirt (after install)\n${text2.stdout}`);

      Deno.chmodSync(`${hooks}/${HOOK_FILE_NAME}`, 0o600);
      const broken = await doctor();
      assertEquals(broken.status, "fail");
      assertMatch(broken.summary, /not executable, so libvirt skips it/);
      // Its fix writes the same hook again: this directory and this state directory.
      assertEquals(
        broken.hint?.split("; ")[0],
        `passthrough hook install --hooks-dir ${hooks} --state-dir ${dir}/s`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "this host's /sys spelled another way is still read as the live host: its NIC is refused",
  ignore: livePciMissing() !== null,
  async fn() {
    const live = liveDefaultRouteNic();
    if (live === null) return;
    const xml = `<domain type='kvm'><name>vm</name><devices>${live.hostdev}</devices></domain>`;
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-live-" });
    try {
      await Deno.symlink("/sys", `${dir}/sys-link`);
      const check = new URL("../../cli/hook_check.ts", import.meta.url).pathname;
      const checkArgs = (sysfs: string) => [
        "--state-dir",
        `${dir}/s`,
        "--sysfs",
        sysfs,
        "--",
        "vm",
        "prepare",
        "begin",
        "-",
      ];
      for (const sysfs of ["/sys", "/sys/.", "//sys/", `${dir}/sys-link`]) {
        const run = await new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", check, ...checkArgs(sysfs)],
          stdin: "piped",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        const writer = run.stdin.getWriter();
        await writer.write(new TextEncoder().encode(xml));
        await writer.close();
        const out = await run.output();
        const stderr = new TextDecoder().decode(out.stderr);
        assertEquals(out.code, 1, `${sysfs}: ${stderr}`);
        assertMatch(stderr, /the host needs it: in use by the host \(default-route: /, sysfs);
      }
      // `hook run` (what a hook runs from a bundle without the check, or a compiled binary),
      // with the documented permissions: Deno will not resolve these paths for it, and libc
      // decides, as `install` does; before, "/sys/." read as a tree without host use and passed.
      for (const sysfs of ["/sys/.", "//sys/", `${dir}/sys-link`]) {
        const run = await runCli(["hook", "run", ...checkArgs(sysfs)], { stdin: xml });
        assertEquals(run.code, 1, `${sysfs}: ${run.stderr}`);
        assertMatch(run.stderr, /the host needs it: in use by the host \(default-route: /, sysfs);
      }
      // And install writes such a spelling as /sys.
      const installed = await runCli([
        "hook",
        "install",
        "--hooks-dir",
        `${dir}/h`,
        "--state-dir",
        `${dir}/s`,
        "--sysfs",
        `${dir}/sys-link`,
      ]);
      assertEquals(installed.code, 0, installed.stderr);
      const script = await Deno.readTextFile(`${dir}/h/${HOOK_FILE_NAME}`);
      assertMatch(script, /'--sysfs' '\/sys' --/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a hook installed from the sources runs with state under a HOME whose Deno cache is empty",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    // The system daemon's VMs, whose starts the hook guards.
    await using daemon = await startGuardDaemon();
    const system = asSystemDaemon(daemon);
    const onSystem = { wrap: system.wrap };
    // libvirt gives hooks its own HOME: the npm cache there may hold nothing. With an allowance or a
    // refusal record in the state directory the check loads the state code, which loaded an npm
    // package, so every start (a VM without a hostdev too) failed with "npm package not found".
    await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-home-" });
    try {
      const common = ["--hooks-dir", `${dir}/qemu.d`];
      const hook = await installOnTree(dir, tree.dir);
      const home = { HOME: `${dir}/home` };
      Deno.mkdirSync(home.HOME);
      // A refusal recorded for win11, and an allowance for a VM with a name too long to keep.
      assertEquals((await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED, home)).code, 1);
      const long = "v".repeat(200);
      assertEquals(
        (await runCli(["guard", "allow", long, "--connect", system.uri, ...common], onSystem)).code,
        0,
      );
      const plain = testDomainXml("plain");
      assertEquals(
        await runHook(hook, ["plain", "prepare", "begin", "-"], plain, home),
        { code: 0, stdout: "", stderr: "" },
      );
      // The allowance is found by the same (hashed) file name the CLI wrote, and used up.
      const allowed = await runHook(
        hook,
        [long, "prepare", "begin", "-"],
        MOVED.replace("<name>win11</name>", `<name>${long}</name>`)
          // Its UUID in tests/fixtures/worlds/guard_allow.xml.
          .replace(WIN11_UUID, "5d2e9a41-8c3b-4f6e-a1d7-3b9c0e2f4a68"),
        home,
      );
      assertEquals(allowed.code, 0, allowed.stderr);
      assertMatch(allowed.stderr, /starting "v+" once despite this \(passthrough guard allow\)/);
      assertEquals([...Deno.readDirSync(`${dir}/state/guard/allow`)], []);
      // Deno's cache is the one the hook names, in its private state directory: nothing in the
      // HOME libvirt passes (which may be another user's) is read or written.
      assertMatch(Deno.readTextFileSync(hook), new RegExp(`DENO_DIR='${dir}/state/deno' `));
      assertEquals([...Deno.readDirSync(home.HOME)], []);
      assertOk([...Deno.readDirSync(`${dir}/state/deno`)].length > 0);
      assertEquals(Deno.statSync(`${dir}/state/deno`).mode! & 0o777, 0o700);
      // A start refused for what the check could not read: guard allow says it will not help.
      const damaged = MOVED.replace('address="0000:0b:00.0"', 'address="not-an-address"');
      assertEquals(
        (await runHook(hook, ["win11", "prepare", "begin", "-"], damaged, home)).code,
        1,
      );
      const allow = await runCli(
        ["guard", "allow", "win11", "--connect", system.uri, ...common],
        onSystem,
      );
      assertMatch(
        allow.stdout,
        /\nNote: its last start was refused because the domain XML holds passthrough records that cannot be read: a record has a bad address: an allowance does not let a start go on past that \(what could not be read may be a device the host needs\); fix it first\n/,
      );
      // Told another state directory, guard allow writes there and says the hook does not read it;
      // with no hook in the directory it is told, it says so.
      const elsewhere = await runCli([
        "guard",
        "allow",
        "win11",
        "--connect",
        system.uri,
        ...common,
        "--state-dir",
        `${dir}/x`,
      ], onSystem);
      assertEquals(elsewhere.code, 0, elsewhere.stderr);
      assertMatch(elsewhere.stdout, /\(until \S+; .*\/x\/guard\/allow\/win11\.json\)\n/);
      assertOk(
        elsewhere.stdout.endsWith(`\nNote: the installed hook reads ${dir}/state, not ${dir}/x\n`),
        elsewhere.stdout,
      );
      const none = await runCli([
        "guard",
        "allow",
        "win11",
        "--connect",
        GUARD_WORLD,
        "--hooks-dir",
        `${dir}/none`,
        // Its own: the default is the host's /var/lib/passthrough, which a hook may read.
        "--state-dir",
        `${dir}/none-state`,
      ]);
      assertEquals(none.code, 0, none.stderr);
      assertOk(
        none.stdout.endsWith(`\nNote: no start guard is installed in ${dir}/none\n`),
        none.stdout,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("the installed hook's first run stores the check's code cache in the hook's Deno cache", async () => {
  // Until it is stored, every VM start compiles the whole check. Deno stores it in an event loop
  // turn, which an exit straight from the check could come before: on most fresh caches it did.
  await withShmTree("passthrough-hook-cache-", async (dir, tree) => {
    Deno.mkdirSync(`${tree}/bus/pci/devices`, { recursive: true });
    const hook = await installOnTree(dir, tree);
    const check = new URL("../../cli/hook_check.ts", import.meta.url).href;
    const cache = `${dir}/state/deno`;
    // Each run on an empty cache, as after an install, a Deno upgrade or a changed check.
    for (let run = 1; run <= 3; run++) {
      for (const entry of Deno.readDirSync(cache)) {
        Deno.removeSync(`${cache}/${entry.name}`, { recursive: true });
      }
      const started = await runHook(
        hook,
        ["plain", "prepare", "begin", "-"],
        testDomainXml("plain"),
      );
      assertEquals(started, { code: 0, stdout: "", stderr: "" });
      const stored = [...Deno.readDirSync(cache)]
        .filter((e) => e.name.startsWith("v8_code_cache"))
        .map((e) => new TextDecoder().decode(Deno.readFileSync(`${cache}/${e.name}`)))
        .some((text) => text.includes(check));
      assertOk(stored, `run ${run}: no code cache entry for ${check} in ${cache}`);
    }
  });
});

Deno.test("the installed hook runs whatever HOME libvirt passes: a file, or one with a .npmrc Deno cannot read", async () => {
  // Deno reads $HOME/.npmrc (with HOME unset, the passwd entry's: /root for libvirtd) before it
  // runs any code, and stops on one it cannot read: every start was refused with Deno's "Error
  // loading .npmrc", naming no VM and no passthrough.
  await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-npmrc-" });
  try {
    const hook = await installOnTree(dir, tree.dir);
    Deno.writeTextFileSync(`${dir}/file`, "");
    Deno.mkdirSync(`${dir}/home`);
    Deno.writeTextFileSync(`${dir}/home/.npmrc`, "registry=not-a-url\n");
    for (const HOME of [`${dir}/file`, `${dir}/home`]) {
      const plain = testDomainXml("plain");
      assertEquals(
        await runHook(hook, ["plain", "prepare", "begin", "-"], plain, { HOME }),
        { code: 0, stdout: "", stderr: "" },
        HOME,
      );
      const refused = await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED, { HOME });
      assertEquals(refused.code, 1);
      assertMatch(refused.stderr, /^passthrough guard: refusing to start "win11": /);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("doctor run by another user than root who may not read the hooks directory still reports every check", async () => {
  // libvirt's hooks directory may be root's alone: doctor stopped at it with one "Permission
  // denied" line and reported none of its checks.
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "passthrough-doctor-user-" }));
  try {
    await Deno.chmod(dir, 0o755);
    await installOnTree(dir, "/sys");
    await Deno.chmod(`${dir}/qemu.d`, 0o700);
    await Deno.mkdir(`${dir}/user`, { mode: 0o700 });
    await Deno.chown(`${dir}/user`, 65534, 65534);
    const out = await new Deno.Command("setpriv", {
      args: [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        ...cliCommand(),
        "doctor",
        "--no-libvirt",
        "--hooks-dir",
        `${dir}/qemu.d`,
      ],
      clearEnv: true,
      env: {
        NO_COLOR: "1",
        PATH: "/usr/bin:/bin",
        HOME: `${dir}/user`,
        DENO_DIR: `${dir}/user/deno`,
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(stderr, "");
    assertMatch(stdout, /^(ok {2}|warn|FAIL) {2}iommu /m);
    assertMatch(
      stdout,
      new RegExp(
        `^warn  hook +Cannot tell whether a start guard is installed: Permission denied \\(os error 13\\): stat '${dir}/qemu\\.d/${HOOK_FILE_NAME}'\n +-> run doctor as root\n`,
        "m",
      ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hook install says which guard policies the hook obeys, and when they were not recorded for the hook it replaces", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-policies-" });
  try {
    const hooks = `${dir}/qemu.d`;
    const off = parseConfig(
      "version: 1\nvms:\n  win11:\n    guard: off\n    devices:\n" +
        "      - name: gpu\n        match: { vendor_id: 10de }\n",
      { file: "old.yaml" },
    );
    // An apply long ago recorded "guard: off" in a; the hook then moved to b.
    recordPolicies(`${dir}/a`, guardPolicies(off));
    const install = (state: string) =>
      runCli(["hook", "install", "--hooks-dir", hooks, "--state-dir", state]);
    const first = await install(`${dir}/b`);
    assertEquals(first.code, 0, first.stderr);
    assertMatch(first.stdout, /\nIts guard policies: every VM enforces \(none recorded\)\n/);
    // Back to a: its old policy is obeyed again, and said so, with where it came from.
    const back = await install(`${dir}/a`);
    assertEquals(back.code, 0, back.stderr);
    assertMatch(
      back.stdout,
      new RegExp(
        `\\nIts guard policies, recorded in ${dir}/a from old\\.yaml: "win11" off; the hook it ` +
          `replaces read ${dir}/b, so these were not recorded for it \\(passthrough apply ` +
          `records the config's current ones\\)\\n`,
      ),
    );
    // The same directory again: recorded for this very hook, so nothing more to say.
    const same = await install(`${dir}/a`);
    assertMatch(
      same.stdout,
      /\nIts guard policies, recorded in .*: "win11" off \(passthrough apply/,
    );
    // Damaged, or naming no VM: said as such (every VM then enforces).
    const file = `${dir}/a/guard/policy.json`;
    Deno.writeTextFileSync(file, JSON.stringify({ version: 1, config: "old.yaml", vms: {} }));
    assertMatch(
      (await install(`${dir}/a`)).stdout,
      /\nIts guard policies: every VM enforces \(none recorded\)\n/,
    );
    Deno.writeTextFileSync(file, "{");
    assertMatch(
      (await install(`${dir}/a`)).stdout,
      new RegExp(
        `\\nIts guard policies: cannot read the guard policies in ${file} \\(not a ` +
          `passthrough policy file; run passthrough apply again\\): enforcing\\n`,
      ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hook status and doctor from the bundle bin/passthrough runs: an update that kept old file times is a stale bundle, and setup.sh is the fix", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-old-times-" });
  try {
    // A checkout of its own, with what scripts/bundle_bin.sh builds from, built by it.
    const root = `${dir}/clone`;
    const here = new URL("../../", import.meta.url).pathname;
    await Deno.mkdir(`${root}/scripts`, { recursive: true });
    await Deno.mkdir(`${root}/tools/deno`, { recursive: true });
    for (
      const entry of [
        "main.ts",
        "deno.json",
        "deno.lock",
        "cli",
        "lib",
        "ffi",
        "demo", // bundled too (cli/demo.ts imports its files)
        "scripts/bundle_bin.sh",
        "tools/deno/package-lock.json",
      ]
    ) {
      const copied = await new Deno.Command("cp", {
        args: ["-rp", `${here}${entry}`, `${root}/${entry}`],
      }).output();
      assertEquals(copied.code, 0, entry);
    }
    const build = async () => {
      const built = await new Deno.Command(`${root}/scripts/bundle_bin.sh`, {
        env: { PATH: `${Deno.execPath().replace(/\/[^/]*$/, "")}:${Deno.env.get("PATH")}` },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(built.code, 0, new TextDecoder().decode(built.stderr));
    };
    await build();
    // Run as bin/passthrough runs it while no source is newer than the bundle.
    const bundled = { main: `${root}/dist/bin/main.js` };
    const hooks = `${dir}/qemu.d`;
    const installed = await runCli(
      ["hook", "install", "--hooks-dir", hooks, "--state-dir", `${dir}/state`],
      bundled,
    );
    assertEquals(installed.code, 0, installed.stderr);
    const status = async () => {
      const run = await runCli(["hook", "status", "--hooks-dir", hooks, "--json"], bundled);
      return { code: run.code, ...JSON.parse(run.stdout) };
    };
    assertEquals((await status()).problems, []);
    // A release unpacked over it (tar -x, rsync -a, cp -p): other contents, the release's older
    // file times, so bin/passthrough and the start guard both run the bundle of the old ones.
    const source = `${root}/lib/mod.ts`;
    const old = Deno.statSync(source).mtime!;
    await Deno.writeTextFile(source, `// the next release\n${await Deno.readTextFile(source)}`);
    Deno.utimeSync(source, old, old);
    assertOk(Deno.statSync(`${root}/dist/bin/main.js`).mtime! > old);
    const stale = await status();
    assertEquals(stale.problems, [
      `it runs the bundle in ${root}/dist/bin, which was built from other sources than those ` +
      `beside it, though none is newer (an update that kept the files' times, as tar, rsync -a ` +
      `or cp -p do), so bin/passthrough runs that bundle too: build it again with ` +
      `${root}/scripts/setup.sh`,
    ]);
    assertEquals([stale.code, stale.fix], [1, `${root}/scripts/setup.sh`]);
    const doctor = await runCli(
      ["doctor", "--json", "--no-libvirt", "--hooks-dir", hooks],
      bundled,
    );
    const findings = JSON.parse(doctor.stdout) as DoctorFinding[];
    const finding = findings.find((f) => f.check === "hook")!;
    assertEquals(finding.status, "warn");
    assertOk(finding.summary.includes(`: ${stale.problems[0]}; `), finding.summary);
    // And, hook or none, that every command runs the old code.
    assertEquals(findings.find((f) => f.check === "bundle"), {
      check: "bundle",
      status: "warn",
      summary: `bin/passthrough runs the bundle in ${root}/dist/bin, which was built from other ` +
        `sources than those beside it, though none is newer (an update that kept the files' ` +
        `times, as tar, rsync -a or cp -p do): every command runs the code from before the update`,
      hint: `build it again: ${root}/scripts/setup.sh`,
    });
    // Built again from them (as setup.sh does, by their digest): up to date.
    await build();
    assertEquals((await status()).problems, []);
    const rebuilt = await runCli(
      ["doctor", "--json", "--no-libvirt", "--hooks-dir", hooks],
      bundled,
    );
    assertEquals(
      (JSON.parse(rebuilt.stdout) as DoctorFinding[]).find((f) => f.check === "bundle"),
      undefined,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hook status after an update without setup.sh: the hook's bundle is older than the sources, and setup.sh is the fix", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-stale-" });
  try {
    // A checkout of its own (sources copied), whose bundle the hook runs.
    const root = `${dir}/clone`;
    const here = new URL("../../", import.meta.url).pathname;
    await Deno.mkdir(root);
    for (const entry of ["main.ts", "deno.json", "deno.lock", "cli", "lib", "ffi"]) {
      const copied = await new Deno.Command("cp", { args: ["-r", `${here}${entry}`, root] })
        .output();
      assertEquals(copied.code, 0);
    }
    await Deno.mkdir(`${root}/dist/bin/hook`, { recursive: true });
    await Deno.writeTextFile(`${root}/dist/bin/main.js`, "");
    await Deno.writeTextFile(`${root}/dist/bin/hook/hook_check.js`, "");
    const settings = {
      version: "0.1.0",
      deadline: 10,
      timeout: findTimeout() ?? "/usr/bin/timeout",
      command: checkCommand(
        {
          execPath: Deno.execPath(),
          mainModule: `file://${root}/dist/bin/main.js`,
          standalone: false,
        },
        { stateDir: `${dir}/state`, sysfs: "/sys" },
      ),
      env: { DENO_DIR: `${dir}/state/deno` },
      stateDir: `${dir}/state`,
      sysfs: "/sys",
    };
    installHook(`${dir}/qemu.d`, renderHookScript(settings));
    const status = async () => {
      const run = await runCli(["hook", "status", "--hooks-dir", `${dir}/qemu.d`, "--json"], {
        main: `${root}/main.ts`,
      });
      return { code: run.code, ...JSON.parse(run.stdout) };
    };
    // An update without setup.sh: a source newer than the bundle.
    Deno.utimeSync(`${root}/dist/bin/main.js`, new Date(2020, 0, 1), new Date(2020, 0, 1));
    const stale = await status();
    assertEquals(stale.code, 1);
    assertEquals(stale.problems, [
      `it runs the bundle in ${root}/dist/bin, which is older than the sources beside it ` +
      `(bin/passthrough runs the sources meanwhile): build it again with ${root}/scripts/setup.sh`,
    ]);
    assertEquals(stale.fix, `${root}/scripts/setup.sh`);
    // doctor says the same, from the same check.
    const doctor = async () => {
      const run = await runCli(
        ["doctor", "--json", "--no-libvirt", "--hooks-dir", `${dir}/qemu.d`],
        { main: `${root}/main.ts` },
      );
      return (JSON.parse(run.stdout) as DoctorFinding[]).find((f) => f.check === "hook")!;
    };
    const finding = await doctor();
    assertEquals(finding.status, "warn");
    assertOk(finding.summary.includes(`: ${stale.problems[0]}; `), finding.summary);
    assertOk(finding.hint?.startsWith(`${root}/scripts/setup.sh; `), finding.hint ?? "");
    // Built again: not called stale (this process runs the sources, which write another hook).
    Deno.utimeSync(`${root}/dist/bin/main.js`, new Date(), new Date());
    const fresh = await status();
    assertEquals(fresh.problems, ["not what 'hook install' writes from here now"]);
    assertMatch((await doctor()).summary, /: installed by this version \(0\.1\.0\); /);
    // A source in each place bin/passthrough looks is newer than the bundle; one as old is not.
    const built = new Date(2020, 0, 1);
    Deno.utimeSync(`${root}/dist/bin/main.js`, built, built);
    const touched = await new Deno.Command("find", {
      args: [
        root,
        "-path",
        `${root}/dist`,
        "-prune",
        "-o",
        "-exec",
        "touch",
        "-d",
        "2019-01-01",
        "{}",
        "+",
      ],
    }).output();
    assertEquals(touched.code, 0);
    assertEquals((await status()).problems, fresh.problems);
    for (
      const source of ["main.ts", "cli/hook.ts", "ffi/libc.ts", "lib/mod.ts", "lib/host/mod.ts"]
    ) {
      Deno.utimeSync(`${root}/${source}`, new Date(), new Date());
      assertEquals((await status()).problems, stale.problems, source);
      Deno.utimeSync(`${root}/${source}`, built, built);
      assertEquals((await status()).problems, fresh.problems, source);
    }
    // A hook that runs the sources, while the bundle beside them is older: up to date.
    Deno.utimeSync(`${root}/main.ts`, new Date(), new Date());
    const fromSources = {
      ...settings,
      command: checkCommand(
        { execPath: Deno.execPath(), mainModule: `file://${root}/main.ts`, standalone: false },
        { stateDir: `${dir}/state`, sysfs: "/sys" },
      ),
    };
    installHook(`${dir}/qemu.d`, renderHookScript(fromSources));
    const current = await status();
    assertEquals([current.code, current.problems, current.fix], [0, [], null]);
    // No bundle at all is no stale one.
    installHook(`${dir}/qemu.d`, renderHookScript(settings));
    Deno.removeSync(`${root}/dist/bin/main.js`);
    assertEquals((await status()).problems, fresh.problems);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a hook started on a deleted state directory makes it again root's alone (0700)", async () => {
  await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-umask-" });
  try {
    const hook = await installOnTree(dir, tree.dir);
    await Deno.remove(`${dir}/state`, { recursive: true });
    // libvirt runs hooks under its umask, 022.
    const wrapper = `${dir}/under-022`;
    Deno.writeTextFileSync(wrapper, `#!/bin/sh\numask 022\nexec '${hook}' "$@"\n`, {
      mode: 0o755,
    });
    const started = await runHook(
      wrapper,
      ["plain", "prepare", "begin", "-"],
      testDomainXml("plain"),
      { HOME: dir },
    );
    assertEquals(started, { code: 0, stdout: "", stderr: "" });
    assertEquals(Deno.statSync(`${dir}/state`).mode! & 0o777, 0o700);
    assertEquals(Deno.statSync(`${dir}/state/deno`).mode! & 0o777, 0o700);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a hook whose state directory or Deno cache became a file refuses every start naming the VM and the file, hook status says so, and its fix works", async () => {
  await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-state-file-" });
  try {
    const hook = await installOnTree(dir, tree.dir);
    const hooks = `${dir}/qemu.d`;
    const start = () => runHook(hook, ["plain", "prepare", "begin", "-"], testDomainXml("plain"));
    const status = async () => {
      const run = await runCli(["hook", "status", "--hooks-dir", hooks, "--json"]);
      const report = JSON.parse(run.stdout);
      return { code: run.code, problems: report.problems, fix: report.fix };
    };
    for (
      const [path, what] of [
        [`${dir}/state`, "its state directory"],
        [`${dir}/state/deno`, "its Deno cache"],
      ]
    ) {
      // A file where the directory was (a restore, a mistyped redirection): Deno, which keeps the
      // check's cache there, stops before the check runs, in words naming neither.
      await Deno.remove(path!, { recursive: true });
      Deno.writeTextFileSync(path!, "not a directory\n");
      const refused = await start();
      assertEquals([refused.code, refused.stdout], [1, ""], refused.stderr);
      assertOk(
        refused.stderr.endsWith(
          `passthrough guard: refusing to start "plain": ${what} ${path} is not a directory, so ` +
            "the check cannot run (Deno keeps its cache there); move that file aside, and the " +
            `next start makes the directory again; see "passthrough hook status --hooks-dir ${hooks}"\n`,
        ),
        refused.stderr,
      );
      assertEquals(await status(), {
        code: 1,
        problems: [
          `${what} ${path} is not a directory: the check cannot run (Deno keeps its cache ` +
          "there), so every VM start is refused",
        ],
        fix: `mv ${path} ${path}.aside`,
      });
      Deno.renameSync(path!, `${path}.aside`);
      assertEquals(await start(), { code: 0, stdout: "", stderr: "" });
      assertEquals(await status(), { code: 0, problems: [], fix: null });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a hook whose Deno stops before the check runs refuses every start naming the VM, hook status says why, and its fix works", async () => {
  await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-deno-stops-" });
  try {
    const hook = await installOnTree(dir, tree.dir);
    const hooks = `${dir}/qemu.d`;
    const cache = `${dir}/state/deno`;
    const start = () => runHook(hook, ["plain", "prepare", "begin", "-"], testDomainXml("plain"));
    const status = async () => {
      const run = await runCli(["hook", "status", "--hooks-dir", hooks, "--json"]);
      const report = JSON.parse(run.stdout);
      return { code: run.code, problems: report.problems, fix: report.fix };
    };
    const cases: { name: string; make: () => void; problem: string; fix: string }[] = [{
      // Deno reads $HOME/.npmrc (HOME is the hook's cache) before any code: one it cannot read.
      name: "a .npmrc that is a directory",
      make: () => Deno.mkdirSync(`${cache}/.npmrc`),
      problem: `${cache}/.npmrc is there, which passthrough never writes: Deno reads it before ` +
        "the check at every start (the hook's HOME), and stops every start on one it cannot " +
        "read or parse",
      fix: `mv ${cache}/.npmrc ${cache}/.npmrc.aside`,
    }, {
      name: "a .npmrc whose registry is no URL",
      make: () => Deno.writeTextFileSync(`${cache}/.npmrc`, "registry=not-a-url\n"),
      problem: `${cache}/.npmrc is there, which passthrough never writes: Deno reads it before ` +
        "the check at every start (the hook's HOME), and stops every start on one it cannot " +
        "read or parse",
      fix: `mv ${cache}/.npmrc ${cache}/.npmrc.aside`,
    }, {
      name: "a Deno cache that is a link to itself",
      make: () => {
        Deno.removeSync(cache, { recursive: true });
        Deno.symlinkSync("deno", cache);
      },
      problem: `its Deno cache ${cache} is not a directory: the check cannot run (Deno keeps its ` +
        "cache there), so every VM start is refused",
      fix: `mv ${cache} ${cache}.aside`,
    }];
    for (const { name, make, problem, fix } of cases) {
      make();
      const refused = await start();
      assertEquals([refused.code, refused.stdout], [1, ""], name);
      // Deno's own words first, then the line naming the VM and where to look.
      assertMatch(refused.stderr, /^error: /, name);
      assertOk(
        refused.stderr.endsWith(
          '\npassthrough guard: refusing to start "plain": the check could not run: Deno stopped ' +
            `before it, as said above (failing closed); see "passthrough hook status --hooks-dir ` +
            `${hooks}", which says why\n`,
        ),
        `${name}: ${refused.stderr}`,
      );
      assertEquals(await status(), { code: 1, problems: [problem], fix }, name);
      const moved = await new Deno.Command("sh", { args: ["-c", fix] }).output();
      assertEquals(moved.code, 0, name);
      assertEquals(await start(), { code: 0, stdout: "", stderr: "" }, name);
      assertEquals(await status(), { code: 0, problems: [], fix: null }, name);
      Deno.removeSync(fix.split(" ").at(-1)!, { recursive: true });
    }
    // A check that ran and refused says so in its own lines: nothing is added to them.
    const refused = await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED);
    assertEquals(refused.code, 1);
    assertMatch(refused.stderr, /^passthrough guard: refusing to start "win11": /);
    assertEquals(refused.stderr.includes("could not run"), false, refused.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hook status reports a hook Deno cache that became a symbolic link, which hook install refuses, with the rm that removes the link alone", async () => {
  await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-cache-link-" });
  try {
    const hook = await installOnTree(dir, tree.dir);
    const hooks = `${dir}/qemu.d`;
    const cache = `${dir}/state/deno`;
    const start = () => runHook(hook, ["plain", "prepare", "begin", "-"], testDomainXml("plain"));
    const status = async () => {
      const run = await runCli(["hook", "status", "--hooks-dir", hooks, "--json"]);
      const report = JSON.parse(run.stdout);
      return { code: run.code, problems: report.problems, fix: report.fix };
    };
    Deno.mkdirSync(`${dir}/elsewhere`);
    for (
      const [target, where] of [
        ["/nonexistent/x", `to /nonexistent/x, which does not exist`],
        [`${dir}/elsewhere`, `to ${dir}/elsewhere`],
      ]
    ) {
      // Starts still pass: it said "up to date", while an install refuses such a link.
      Deno.removeSync(cache, { recursive: true });
      Deno.symlinkSync(target!, cache);
      assertEquals((await start()).code, 0, target);
      assertEquals(await status(), {
        code: 1,
        problems: [
          `its Deno cache ${cache} is a symbolic link ${where}: hook install refuses one, as ` +
          "the check, run as root at every VM start, keeps its code cache where the link " +
          "leads, out of its private state directory",
        ],
        fix: `rm ${cache}`,
      }, target);
      const removed = await new Deno.Command("sh", { args: ["-c", `rm ${cache}`] }).output();
      assertEquals(removed.code, 0);
      assertEquals(await start(), { code: 0, stdout: "", stderr: "" }, target);
      assertEquals(await status(), { code: 0, problems: [], fix: null }, target);
    }
    const doctor = await runCli(["doctor", "--json", "--no-libvirt", "--hooks-dir", hooks]);
    assertEquals(doctor.stdout.includes("symbolic link"), false);
    Deno.symlinkSync("/nonexistent/x", `${cache}.new`);
    Deno.removeSync(cache, { recursive: true });
    Deno.renameSync(`${cache}.new`, cache);
    const linked = await runCli(["doctor", "--json", "--no-libvirt", "--hooks-dir", hooks]);
    assertMatch(linked.stdout, /its Deno cache .* is a symbolic link to \/nonexistent\/x/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a hook running a bundle with a module gone refuses every start naming the VM, and hook status names the module and setup.sh", async () => {
  await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-chunk-" });
  try {
    const root = new URL("../../", import.meta.url).pathname;
    const built = await new Deno.Command(`${root}scripts/bundle_bin.sh`, {
      args: [`${dir}/bin`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(built.code, 0, new TextDecoder().decode(built.stderr));
    const installed = await runCli(installArgs(dir, tree.dir), { main: `${dir}/bin/main.js` });
    assertEquals(installed.code, 0, installed.stderr);
    const hook = `${dir}/qemu.d/${HOOK_FILE_NAME}`;
    const hooks = `${dir}/qemu.d`;
    const start = () => runHook(hook, ["plain", "prepare", "begin", "-"], testDomainXml("plain"));
    const status = async () => {
      const run = await runCli(["hook", "status", "--hooks-dir", hooks, "--json"], {
        main: `${dir}/bin/main.js`,
      });
      const report = JSON.parse(run.stdout);
      return { code: run.code, problems: report.problems, fix: report.fix };
    };
    assertEquals(await start(), { code: 0, stdout: "", stderr: "" });
    assertEquals(await status(), { code: 0, problems: [], fix: null });
    const modules = [...Deno.readDirSync(`${dir}/bin/hook`)].map((e) => e.name)
      .filter((name) => name !== "hook_check.js" && name.endsWith(".js")).sort();
    // A chunk the check imports (Deno stops before it) and the state code (loaded at a start).
    assertEquals(modules.length, 2, modules.join(" "));
    for (const module of modules) {
      const path = `${dir}/bin/hook/${module}`;
      Deno.renameSync(path, `${path}.aside`);
      // A start the state code is loaded for: win11, whose card moved, is refused and recorded.
      const refused = await runHook(hook, ["win11", "prepare", "begin", "-"], MOVED);
      assertEquals([refused.code, refused.stdout], [1, ""], module);
      // Deno's words then the hook's line, or the check's own line: each naming the VM.
      assertMatch(
        refused.stderr,
        /(^|\n)passthrough guard: refusing to start "win11": the check (could not run|failed): /,
        module,
      );
      assertEquals(await status(), {
        code: 1,
        problems: [
          `its check's module ${path} is missing: VM starts are refused, with nothing checked`,
        ],
        fix: "build the bundle again (scripts/setup.sh in passthrough's clone, or the Ansible " +
          "playbook again)",
      }, module);
      Deno.renameSync(`${path}.aside`, path);
      assertEquals(await start(), { code: 0, stdout: "", stderr: "" });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a copy of the hook kept beside it in qemu.d, which libvirt runs too and which refuses the start guard allow lets through, is reported by hook install, status and remove", async () => {
  await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-copy-" });
  try {
    const hook = await installOnTree(dir, tree.dir);
    const hooks = `${dir}/qemu.d`;
    // Kept before an update, as cp -p keeps it: executable, so libvirt runs it after the hook.
    const copy = `${hook}.bak`;
    Deno.copyFileSync(hook, copy);
    Deno.chmodSync(copy, 0o755);
    // A guard allow lets neither through: the hook uses the allowance up, the copy refuses.
    allowNextStart(`${dir}/state`, "win11", { uuid: WIN11_UUID });
    const starts = [];
    for (const path of [hook, copy]) {
      starts.push((await runHook(path, ["win11", "prepare", "begin", "-"], MOVED)).code);
    }
    assertEquals(starts, [0, 1]);

    const problem = `${copy} is another passthrough hook or a link to one, which libvirt also ` +
      "runs at every start: a guard allow lets no start through (one of the two uses it up, the other " +
      "refuses), and it checks by its own settings";
    const status = await runCli(["hook", "status", "--hooks-dir", hooks, "--json"]);
    assertEquals(status.code, 1, status.stdout);
    const report = JSON.parse(status.stdout);
    assertEquals([report.problems, report.fix], [[problem], `rm ${copy}`]);
    const install = await runCli([...installArgs(dir, tree.dir)]);
    assertEquals(install.code, 0, install.stderr);
    assertOk(install.stdout.includes(`\nNote: ${problem}: rm ${copy}\n`), install.stdout);
    // guard allow, whose allowance the copy makes useless, says so too.
    const allow = await runCli([
      "guard",
      "allow",
      "win11",
      "--connect",
      GUARD_WORLD,
      "--hooks-dir",
      hooks,
      "--state-dir",
      `${dir}/rehearsal`,
    ]);
    assertEquals(allow.code, 0, allow.stderr);
    assertOk(allow.stdout.endsWith(`\nNote: ${problem}: rm ${copy}\n`), allow.stdout);
    const remove = await runCli(["hook", "remove", "--hooks-dir", hooks]);
    assertEquals(remove.code, 0, remove.stderr);
    assertEquals(
      remove.stdout,
      `Removed the start guard: ${hook}\nNote: ${problem}: rm ${copy}\n`,
    );
    // Not removed: passthrough never deletes a file it did not write there.
    assertEquals(pathExists(copy), true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a symbolic link in qemu.d to the hook, which libvirt runs as a second hook, is reported by hook status, remove and install with the rm that removes the link alone", async () => {
  await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-link-" });
  try {
    const hook = await installOnTree(dir, tree.dir);
    const hooks = `${dir}/qemu.d`;
    // A link made by hand (or by a package's alternatives) to "enable" the guard: libvirt runs
    // every executable of qemu.d, following links, so the hook runs twice at every start.
    const link = `${hooks}/60-passthrough-guard`;
    Deno.symlinkSync(hook, link);
    allowNextStart(`${dir}/state`, "win11", { uuid: WIN11_UUID });
    const starts = [];
    for (const path of [hook, link]) {
      starts.push((await runHook(path, ["win11", "prepare", "begin", "-"], MOVED)).code);
    }
    assertEquals(starts, [0, 1]);

    const problem = `${link} is another passthrough hook or a link to one, which libvirt also ` +
      "runs at every start: a guard allow lets no start through (one of the two uses it up, the " +
      "other refuses), and it checks by its own settings";
    const status = await runCli(["hook", "status", "--hooks-dir", hooks, "--json"]);
    assertEquals(status.code, 1, status.stdout);
    const report = JSON.parse(status.stdout);
    assertEquals([report.problems, report.fix], [[problem], `rm ${link}`]);
    const remove = await runCli(["hook", "remove", "--hooks-dir", hooks]);
    assertEquals(remove.code, 0, remove.stderr);
    assertEquals(
      remove.stdout,
      `Removed the start guard: ${hook}\nNote: ${link} led to it and now leads nowhere (an ` +
        `install would make it run the hook a second time): rm ${link}\n`,
    );
    const install = await runCli([...installArgs(dir, tree.dir)]);
    assertEquals(install.code, 0, install.stderr);
    assertOk(install.stdout.endsWith(`\nNote: ${problem}: rm ${link}\n`), install.stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("guard allow says a refusal of another function of the IOMMU group names that function, not the passed device as one the host needs", async () => {
  // The Z690 GPU's group 21 merged with the chipset's audio, on vfio-pci and given to running VM
  // "nas": the refusal is of the audio, which the host does not need.
  const host = loadFixtureHost("z690-asus-adl");
  host.host_use = [];
  for (const d of host.devices) {
    if (d.bdf === "0000:00:1f.3") Object.assign(d, { group: 21, driver: "vfio-pci" });
  }
  await using tree = await tempHostTree(host);
  const source = (bus: string, fn: string) =>
    `<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' ` +
    `bus='0x${bus}' slot='0x${bus === "00" ? "1f" : "00"}' function='0x${fn}'/></source></hostdev>`;
  Deno.mkdirSync(`${tree.dir}/qemu`);
  Deno.writeTextFileSync(
    `${tree.dir}/qemu/nas.xml`,
    `<domstatus state='running'><domain type='kvm'><name>nas</name><devices>${
      source("00", "3")
    }</devices></domain></domstatus>`,
  );
  const refusals = guardCheck({
    vm: "win11",
    xml: `<domain type='kvm'><name>win11</name><uuid>${WIN11_UUID}</uuid><devices>${
      source("03", "0")
    }</devices></domain>`,
    reader: denoFsReader(),
    root: tree.dir,
    live: false,
    qemuStatusDir: `${tree.dir}/qemu`,
  });
  assertEquals(refusals.map((r) => [r.kind, r.address]), [["busy", "0000:03:00.0"]]);
  const stateDir = `${tree.dir}/state`;
  Deno.mkdirSync(stateDir);
  recordRefusals(stateDir, "win11", refusals, { allowed: false });
  const allow = await runCli([
    "guard",
    "allow",
    "win11",
    "--connect",
    GUARD_WORLD,
    "--state-dir",
    stateDir,
  ]);
  assertEquals(allow.code, 0, allow.stderr);
  assertMatch(
    allow.stdout,
    /\nNote: its last refusal names 0000:03:00\.0, whose IOMMU group 21 also holds 0000:00:1f\.3: in use \(vm-passed: hostdev of running VM "nas"\): an allowance does not let a start take it; nothing does: follow the refusal's fix\n/,
  );
});
