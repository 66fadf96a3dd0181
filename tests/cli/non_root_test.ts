/**
 * The CLI run by a user who is not root (uid 65534, through `setpriv`), against a real libvirtd
 * whose read-write socket only root may use (`unix_sock_rw_perms = "0700"`, as a socket of the
 * `libvirt` group is to a user outside it); its read-only socket stays open to all, libvirt's
 * default. What such a user is told, by `plan` and by `doctor`.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import {
  canUnshareMounts,
  documentedFlags,
  openToAll,
  runInPrivateMounts,
} from "../helpers/cli.ts";
import {
  asSystemDaemon,
  type Libvirtd,
  libvirtdUnavailable,
  startDemoDaemon,
  startLibvirtd,
} from "../helpers/libvirtd.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { shellQuote } from "../../lib/render/shell.ts";
import { installHook, renderHookScript } from "../../lib/guard/hook_file.ts";
import { POLICY_FILE } from "../../lib/guard/layout.ts";
import { pathExists } from "../../lib/state/paths.ts";
import { lockUri } from "../../lib/state/lock.ts";

const DEMO = new URL("../../demo/", import.meta.url).pathname;
const ROOT = new URL("../../", import.meta.url).pathname;
const NOBODY = 65534;

const unavailable = libvirtdUnavailable() ??
  (canUnshareMounts() ? null : "needs a private mount namespace (unshare -m)");

/** A daemon only root may manage, and a directory the user can read: bundle, tree, config. */
interface Scene extends AsyncDisposable {
  daemon: Libvirtd;
  dir: string;
  /** Runs the bundled CLI as {@link NOBODY}, after `setup` (shell, as root, in private mounts). */
  asUser(args: string[], setup?: string): Promise<Run>;
}

type Run = { code: number; stdout: string; stderr: string };

/**
 * A directory the user can read, with the bundled CLI, and a home of the user's own (`user/`);
 * `asUser` runs the CLI as {@link NOBODY} after `setup` (shell, as root, in private mounts).
 */
async function userDir(): Promise<
  { dir: string; asUser(args: string[], setup?: string): Promise<Run> } & AsyncDisposable
> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "passthrough-non-root-" }));
  // The bundle needs no npm cache, which this user has none of.
  const bundled = await new Deno.Command(`${ROOT}scripts/bundle_bin.sh`, {
    args: [`${dir}/bin`],
    stdout: "null",
    stderr: "piped",
  }).output();
  assertEquals(bundled.code, 0, new TextDecoder().decode(bundled.stderr));
  await openToAll(dir);
  await Deno.mkdir(`${dir}/user`, { mode: 0o700 });
  await Deno.chown(`${dir}/user`, NOBODY, NOBODY);
  return {
    dir,
    asUser: (args, setup = "true") =>
      runInPrivateMounts(setup, [
        "setpriv",
        `--reuid=${NOBODY}`,
        `--regid=${NOBODY}`,
        "--clear-groups",
        Deno.execPath(),
        "run",
        "--quiet",
        "--cached-only",
        ...documentedFlags(),
        `${dir}/bin/main.js`,
        ...args,
      ], { NO_COLOR: "1", HOME: `${dir}/user`, DENO_DIR: `${dir}/user/deno` }),
    [Symbol.asyncDispose]: async () => {
      // The session daemon libvirt starts for the user without --connect (it would exit when idle
      // for a while).
      try {
        Deno.kill(
          parseInt(Deno.readTextFileSync(`${dir}/user/.cache/libvirt/libvirtd.pid`), 10),
          "SIGTERM",
        );
      } catch {
        // Not started, or gone.
      }
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/**
 * {@link userDir} with the demo host's tree in `sysfs/` and, with `config`, the demo config in
 * `config.yaml`.
 */
async function userHost(
  { config = false }: { config?: boolean } = {},
): ReturnType<typeof userDir> {
  const user = await userDir();
  buildHostTree(loadHostDescription(`${DEMO}host.json`), `${user.dir}/sysfs`);
  if (config) Deno.copyFileSync(`${DEMO}passthrough_config.yaml`, `${user.dir}/config.yaml`);
  await openToAll(`${user.dir}/sysfs`, ...(config ? [`${user.dir}/config.yaml`] : []));
  return user;
}

/**
 * The `asUser` setup that starts in a directory the user may not enter, as /root is to a user
 * `su` or `sudo -u` left there.
 */
async function inDirItMayNotEnter(dir: string): Promise<string> {
  await Deno.mkdir(`${dir}/root-home`, { mode: 0o700 });
  return `cd ${shellQuote(`${dir}/root-home`)}`;
}

async function scene(): Promise<Scene> {
  const daemon = await startLibvirtd({ config: [`unix_sock_rw_perms = "0700"`] });
  // The user reaches the sockets through the daemon's directory.
  await Deno.chmod(daemon.dir, 0o755);
  const user = await userHost({ config: true });
  const { dir, asUser } = user;
  return {
    daemon,
    dir,
    asUser,
    async [Symbol.asyncDispose]() {
      await daemon.stop();
      await user[Symbol.asyncDispose]();
    },
  };
}

Deno.test({
  name: "plan by a user libvirt's socket shuts out says to run as root or join the libvirt group",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    const plan = await s.asUser([
      "plan",
      "--config",
      `${s.dir}/config.yaml`,
      "--sysfs",
      `${s.dir}/sysfs`,
      "--connect",
      s.daemon.uri,
    ]);
    assertEquals(plan.code, 1, plan.stderr);
    assertEquals(plan.stdout, "");
    assertEquals(plan.stderr.trimEnd().split("\n").length, 1, plan.stderr);
    assertMatch(
      plan.stderr,
      /^passthrough plan: Cannot connect to libvirt at ".*" \(--connect\): Failed to connect socket to '.*libvirt-sock': Permission denied \(run as root, or as a user libvirt lets manage it \(on Debian, a member of the "libvirt" group: adduser USER libvirt, then log in again\)\)$/m,
    );
    // doctor on the same URI: it cannot reach it at all, and says how to get in.
    const doctor = await s.asUser(
      ["doctor", "--json", "--sysfs", `${s.dir}/sysfs`, "--connect", s.daemon.uri],
    );
    const findings: { check: string; status: string; hint: string | null }[] = JSON.parse(
      doctor.stdout,
    );
    const libvirt = findings.find((f) => f.check === "libvirt");
    assertEquals(libvirt?.status, "fail", doctor.stdout);
    assertMatch(libvirt?.hint ?? "", /^run as root, or as a user libvirt lets manage it/);
  },
});

Deno.test({
  name: "doctor by a user libvirt lets in read-only warns that plan and apply are refused",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    // libvirt's default URI for its sockets: read-only opens libvirt-sock-ro, open to all.
    const doctor = await s.asUser(
      ["doctor", "--json", "--sysfs", `${s.dir}/sysfs`, "--connect", "qemu:///system"],
      `mount --bind ${shellQuote(s.daemon.dir)} /run/libvirt`,
    );
    const findings: { check: string; status: string; summary: string; hint: string | null }[] = JSON
      .parse(doctor.stdout);
    const libvirt = findings.find((f) => f.check === "libvirt");
    assertEquals(libvirt?.status, "warn", doctor.stdout + doctor.stderr);
    assertMatch(
      libvirt!.summary,
      /^libvirt answers read-only only: qemu:\/\/\/system \(libvirt \d+\.\d+\.\d+\); plan, apply and rollback, which open it read-write, are refused: .*Permission denied$/,
    );
    assertMatch(libvirt!.hint ?? "", /^run as root, or as a user libvirt lets manage it/);
    // And plan, as doctor said.
    const plan = await s.asUser(
      [
        "plan",
        "--config",
        `${s.dir}/config.yaml`,
        "--sysfs",
        `${s.dir}/sysfs`,
        "--connect",
        "qemu:///system",
      ],
      `mount --bind ${shellQuote(s.daemon.dir)} /run/libvirt`,
    );
    assertEquals(plan.code, 1, plan.stderr);
    assertMatch(plan.stderr, /libvirt-sock': Permission denied \(run as root/);
  },
});

Deno.test({
  name: "doctor over ssh as a user libvirt lets in read-only there warns, not that it is down",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    // ssh to a host where the login user is this one: libvirt runs the far side's helper here.
    Deno.writeTextFileSync(`${s.dir}/ssh`, `#!/bin/sh\nfor last; do :; done\nexec sh -c "$last"\n`);
    await Deno.chmod(`${s.dir}/ssh`, 0o755);
    const doctor = await s.asUser(
      [
        "doctor",
        "--json",
        "--sysfs",
        `${s.dir}/sysfs`,
        "--allow-uri-programs",
        "--connect",
        `qemu+ssh://nobody@hv3/system?command=${s.dir}/ssh`,
      ],
      `mount --bind ${shellQuote(s.daemon.dir)} /run/libvirt`,
    );
    const findings: { check: string; status: string; summary: string; hint: string | null }[] = JSON
      .parse(doctor.stdout);
    const libvirt = findings.find((f) => f.check === "libvirt");
    // It said: fail, Cannot reach libvirt: ... Permission denied: Connection reset by peer, and
    // to start libvirtd, which was running and answered read-only.
    assertEquals(libvirt?.status, "warn", doctor.stdout + doctor.stderr);
    assertMatch(
      libvirt!.summary,
      /^libvirt answers read-only only: qemu\+ssh:\/\/nobody@hv3\/system\?command=.* \(libvirt \d+\.\d+\.\d+\); plan, apply and rollback, which open it read-write, are refused: .*Permission denied/,
    );
    assertMatch(libvirt!.hint ?? "", /over ssh, the user the URI logs in as on that host$/);
  },
});

Deno.test({
  name: "backups by a user in root's state directory says to run as root",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    // As /var/lib/passthrough: root's, 0700, which the user may look at but not into.
    await Deno.mkdir(`${s.dir}/root-state`, { mode: 0o700 });
    const backups = await s.asUser(["backups", "--state-dir", `${s.dir}/root-state`]);
    assertEquals(backups.code, 1, backups.stderr);
    assertEquals(backups.stderr.trimEnd().split("\n").length, 1, backups.stderr);
    assertMatch(
      backups.stderr,
      /^passthrough backups: Refusing to use ".*\/root-state": it is owned by uid 0, not by the current user \(uid 65534\): run as root$/m,
    );
  },
});

Deno.test({
  name: "snapshot of the live host by a user says which facts only root could read",
  // The live /sys: a function whose configuration space shows more than its header to root.
  ignore: Deno.uid() !== 0 || !canUnshareMounts() ||
    !Array.from(Deno.readDirSync("/sys/bus/pci/devices")).some((entry) =>
      Deno.statSync(`/sys/bus/pci/devices/${entry.name}/config`).size > 64
    ),
  async fn() {
    await using user = await userDir();
    const { dir, asUser } = user;
    const snapshot = await asUser(["snapshot", `${dir}/user/snap`]);
    assertEquals(snapshot.code, 0, snapshot.stderr);
    const devices = Array.from(Deno.readDirSync("/sys/bus/pci/devices")).length;
    assertMatch(snapshot.stdout, new RegExp(`^Wrote ${devices} devices in `));
    assertMatch(
      snapshot.stderr,
      /^Note: the configuration space of \d+ of them could be read only up to its 64-byte header \(the kernel shows the rest to root alone\): their serial numbers and reset \(FLR\) capability are unknown to a plan of this snapshot; run snapshot as root to capture them\n$/,
    );
  },
});

Deno.test({
  name: "devices by a user in a directory it may not enter (su from root's home) still runs lspci",
  ignore: Deno.uid() !== 0 || !canUnshareMounts(),
  async fn() {
    await using user = await userHost();
    const { dir, asUser } = user;
    const devices = await asUser(
      ["devices", "--sysfs", `${dir}/sysfs`, "0000:21:00.0"],
      await inDirItMayNotEnter(dir),
    );
    // It said: Failed to spawn 'lspci': Permission denied (os error 13) (the system refused:
    // check the owner and mode of that path, or run as root).
    assertEquals(devices.code, 0, devices.stderr);
    assertMatch(devices.stdout, /^0000:21:00\.0 .*NVIDIA/m);
  },
});

Deno.test({
  name: "plan by a user in a directory it may not enter looks for the host's config next",
  ignore: Deno.uid() !== 0 || !canUnshareMounts(),
  async fn() {
    await using user = await userHost();
    const { dir, asUser } = user;
    const plan = await asUser(
      ["plan", "--sysfs", `${dir}/sysfs`, "--connect", `test://${DEMO}world.xml`],
      await inDirItMayNotEnter(dir),
    );
    // It said: Cannot read config "passthrough_config.yaml": permission denied (check its
    // owner and mode, or run as root), of a file that is not there, and never looked in /etc.
    assertEquals(plan.code, 1, plan.stderr);
    assertMatch(
      plan.stderr,
      /^passthrough plan: No config file: tried passthrough_config\.yaml \(current directory\), \/etc\/passthrough\/passthrough_config\.yaml \(host config\)/,
    );
  },
});

Deno.test({
  name:
    "plan by a user on libvirt's default for them (qemu:///session) says the host's VMs are in qemu:///system",
  ignore: unavailable !== null,
  async fn() {
    await using user = await userHost({ config: true });
    const { dir, asUser } = user;
    // No --connect: libvirt starts this user's session daemon (in $HOME) and opens it.
    const plan = await asUser([
      "plan",
      "--config",
      `${dir}/config.yaml`,
      "--sysfs",
      `${dir}/sysfs`,
    ]);
    assertEquals(plan.code, 1, plan.stderr);
    // It said only: not defined in libvirt ("qemu:///session"): define it first or fix the name.
    assertMatch(
      plan.stdout,
      /refused \[unknown-vm\] .*VM "win10" is not defined in libvirt \("qemu:\/\/\/session"\): define it first or fix the name in the config; "qemu:\/\/\/session" is this user's own libvirt, not the host's: for the host's VMs connect to "qemu:\/\/\/system" \(--connect, or connect: in the config\) as root or a member of the "libvirt" group$/m,
    );
  },
});

Deno.test({
  name:
    "plan by a user whose runtime directory is root's (su without -) is not told to join the libvirt group",
  ignore: unavailable !== null,
  async fn() {
    await using user = await userHost({ config: true });
    const { dir, asUser } = user;
    // As /run/user/0, which `su alice` leaves in XDG_RUNTIME_DIR: libvirt's session is there.
    await Deno.mkdir(`${dir}/run-user-0`, { mode: 0o700 });
    const plan = await asUser(
      ["plan", "--config", `${dir}/config.yaml`, "--sysfs", `${dir}/sysfs`],
      `export XDG_RUNTIME_DIR=${shellQuote(`${dir}/run-user-0`)}`,
    );
    assertEquals(plan.code, 1, plan.stderr);
    // It added: (run as root, or as a user libvirt lets manage it (on Debian, a member of the
    // "libvirt" group ...)), which changes nothing here.
    assertEquals(
      plan.stderr,
      `passthrough plan: Cannot connect to libvirt at its default URI: Cannot create user runtime directory '${dir}/run-user-0/libvirt': Permission denied\n`,
    );
  },
});

Deno.test({
  name:
    "doctor by a user on libvirt's default for them (qemu:///session) warns that it is not the host's",
  ignore: unavailable !== null,
  async fn() {
    await using user = await userHost();
    const { dir, asUser } = user;
    const doctor = await asUser(["doctor", "--json", "--sysfs", `${dir}/sysfs`]);
    const findings: { check: string; status: string; summary: string; hint: string | null }[] = JSON
      .parse(doctor.stdout);
    // It said: ok, libvirt reachable: qemu:///session.
    const libvirt = findings.find((f) => f.check === "libvirt");
    assertEquals(libvirt?.status, "warn", doctor.stdout + doctor.stderr);
    assertMatch(
      libvirt!.summary,
      /^libvirt reachable: qemu:\/\/\/session \(libvirt \d+\.\d+\.\d+\), this user's own libvirt, not the host's: the host's VMs are in qemu:\/\/\/system$/,
    );
    assertEquals(
      libvirt!.hint,
      `pass --connect qemu:///system (or set LIBVIRT_DEFAULT_URI), as root or a member of the "libvirt" group`,
    );
  },
});

Deno.test({
  name: "groups by a user on a captured tree it may not read says the system refused, and the fix",
  ignore: Deno.uid() !== 0 || !canUnshareMounts(),
  async fn() {
    await using user = await userHost();
    const { dir, asUser } = user;
    // As a tree root captured into a directory of its own.
    await Deno.chmod(`${dir}/sysfs/bus/pci/devices`, 0o700);
    const groups = await asUser(["groups", "--sysfs", `${dir}/sysfs`]);
    assertEquals(groups.code, 1, groups.stderr);
    // It said only: Cannot open directory "…/bus/pci/devices": EACCES.
    assertEquals(
      groups.stderr,
      `passthrough groups: Cannot open directory "${dir}/sysfs/bus/pci/devices": EACCES (the system refused: check the owner and mode of that path, or run as root)\n`,
    );
  },
});

Deno.test({
  name:
    "apply by a user who may not read the hooks directory says the guard policies were not recorded",
  ignore: Deno.uid() !== 0 || !canUnshareMounts() || libvirtdUnavailable() !== null,
  async fn() {
    await using user = await userHost({ config: true });
    // The system daemon's VMs, whose starts the hook guards.
    await using daemon = await startDemoDaemon();
    const system = asSystemDaemon(daemon);
    const { dir, asUser } = user;
    Deno.writeTextFileSync(
      `${dir}/config.yaml`,
      Deno.readTextFileSync(`${dir}/config.yaml`).replace(/^ {2}gentoo:$/m, "$&\n    guard: warn"),
    );
    // A hook root installed, reading a state directory of its own, in libvirt's root-only
    // directory.
    await Deno.mkdir(`${dir}/hooks/qemu.d`, { recursive: true });
    installHook(
      `${dir}/hooks/qemu.d`,
      renderHookScript({
        version: "1",
        deadline: 10,
        timeout: "/usr/bin/timeout",
        command: ["/bin/true"],
        env: {},
        stateDir: "/srv/hookstate",
        sysfs: "/sys",
      }),
    );
    await Deno.chmod(`${dir}/hooks`, 0o755);
    await Deno.chmod(`${dir}/hooks/qemu.d`, 0o700);
    const args = [
      "apply",
      "--yes",
      "--config",
      `${dir}/config.yaml`,
      "--sysfs",
      `${dir}/sysfs`,
      "--connect",
      system.uri,
      "--state-dir",
      `${dir}/user/state`,
    ];
    const bind = `mount --bind ${shellQuote(`${dir}/hooks`)} /etc/libvirt/hooks && ${system.setup}`;
    const apply = await asUser(args, bind);
    // Besides the note that its lock is its state directory's alone.
    const guardNotes = (stderr: string) => stderr.replace(/^Note: this run locks .*\n/m, "");
    // It said: Start guard policies recorded in …/user/state, where the hook never looks.
    assertEquals(apply.code, 0, apply.stderr);
    assertEquals(
      guardNotes(apply.stderr),
      "Note: cannot read the installed hook /etc/libvirt/hooks/qemu.d/50-passthrough-guard " +
        "(permission denied): start guard policies not recorded where it reads them; run " +
        "passthrough apply as root\n",
    );
    assertEquals(
      [...Deno.readDirSync(`${dir}/user/state`)].some((e) => e.name === POLICY_FILE),
      false,
    );
    // No hook at all: the usual state directory, with no note of the guard.
    await Deno.remove(`${dir}/hooks/qemu.d`, { recursive: true });
    const absent = await asUser(args, bind);
    assertEquals(absent.code, 0, absent.stderr);
    assertEquals(guardNotes(absent.stderr), "");
    assertMatch(
      absent.stdout,
      /^Start guard policies recorded in .*\/user\/state: "gentoo" warn$/m,
    );
  },
});

Deno.test({
  name:
    "a user with HOME unset: a URI that runs a program in the libvirt.conf of their passwd home is refused",
  ignore: !canUnshareMounts(),
  async fn() {
    await using user = await userHost();
    const { dir } = user;
    const mark = `${dir}/user/ran`;
    const script = `${dir}/planted.sh`;
    Deno.writeTextFileSync(script, `#!/bin/sh\ntouch ${shellQuote(mark)}\n`);
    await Deno.chmod(script, 0o755);
    const conf = `${dir}/user/.config/libvirt`;
    await Deno.mkdir(conf, { recursive: true });
    Deno.writeTextFileSync(
      `${conf}/libvirt.conf`,
      `uri_default = "qemu+ext:///system?command=${script}"\n`,
    );
    await openToAll(`${dir}/user/.config`, script);
    // The user's passwd entry gives the home libvirt falls back to (GLib's g_get_home_dir()).
    const passwd = Deno.readTextFileSync("/etc/passwd").replace(
      /^(nobody:[^:]*:[^:]*:[^:]*:[^:]*:)[^:]*:/m,
      `$1${dir}/user:`,
    );
    Deno.writeTextFileSync(`${dir}/passwd`, passwd);
    await openToAll(`${dir}/passwd`);
    const run = await user.asUser(
      ["sources", "--sysfs", `${dir}/sysfs`],
      `mount --bind ${shellQuote(`${dir}/passwd`)} /etc/passwd && unset HOME`,
    );
    assertEquals(run.code, 1, run.stdout + run.stderr);
    assertMatch(run.stderr, /Refusing libvirt URI "qemu\+ext:[^"]*" \(uri_default in /);
    assertMatch(run.stderr, new RegExp(`${dir}/user/\\.config/libvirt/libvirt\\.conf`));
    assertEquals(pathExists(mark), false, "libvirt ran the program");
  },
});

Deno.test({
  name:
    "a user with HOME set empty: the URI in .config/libvirt/libvirt.conf of the working directory is refused",
  ignore: !canUnshareMounts(),
  async fn() {
    await using user = await userHost();
    const { dir } = user;
    const mark = `${dir}/user/ran`;
    const script = `${dir}/planted.sh`;
    Deno.writeTextFileSync(script, `#!/bin/sh\ntouch ${shellQuote(mark)}\n`);
    await Deno.chmod(script, 0o755);
    const conf = `${dir}/user/.config/libvirt`;
    await Deno.mkdir(conf, { recursive: true });
    Deno.writeTextFileSync(
      `${conf}/libvirt.conf`,
      `uri_default = "qemu+ext:///system?command=${script}"\n`,
    );
    await openToAll(`${dir}/user/.config`, script);
    // GLib's home is then "", its config directory ".config": libvirt reads the file there. The
    // check took the empty HOME for unset and read the passwd home's (nobody's /nonexistent).
    const run = await user.asUser(
      ["sources", "--sysfs", `${dir}/sysfs`],
      `cd ${shellQuote(`${dir}/user`)} && export HOME=`,
    );
    assertEquals(run.code, 1, run.stdout + run.stderr);
    assertMatch(
      run.stderr,
      /Refusing libvirt URI "qemu\+ext:[^"]*" \(uri_default in \.config\/libvirt\/libvirt\.conf\)/,
    );
    assertEquals(pathExists(mark), false, "libvirt ran the program");
  },
});

Deno.test({
  name:
    "apply and rollback by a user say that root's runs and other state directories are not locked out",
  ignore: Deno.uid() !== 0 || !canUnshareMounts() || libvirtdUnavailable() !== null,
  async fn() {
    await using user = await userHost({ config: true });
    // A daemon any user may manage: the user's lock is in its state directory.
    await using daemon = await startDemoDaemon();
    const { dir, asUser } = user;
    const state = ["--state-dir", `${dir}/user/state`];
    const apply = await asUser([
      "apply",
      "--yes",
      ...state,
      "--config",
      `${dir}/config.yaml`,
      "--sysfs",
      `${dir}/sysfs`,
      "--connect",
      daemon.uri,
    ]);
    // It said nothing: root's apply could change the same VMs while this one ran.
    const note = `Note: this run locks "${lockUri(daemon.uri)}" in ${dir}/user/state, not in ` +
      "/run/passthrough (root's alone): an apply or rollback by root, or with another state " +
      "directory, is not kept out meanwhile; run it as root to lock that libvirt for the whole " +
      "host\n";
    assertOk(apply.stderr.startsWith(note), apply.stderr);
    const back = await asUser(["rollback", "win10", "--yes", ...state, "--connect", daemon.uri]);
    assertOk(back.stderr.startsWith(note), back.stderr);
  },
});
