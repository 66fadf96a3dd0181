/**
 * A real `libvirtd` (QEMU driver) for end-to-end tests, private to one test: its own socket
 * directory, and (when `unshare` works) its own mount namespace in which `/etc/libvirt/qemu`,
 * `/run/libvirt`, `/var/lib/libvirt/qemu` and `/var/cache/libvirt/qemu` are bind-mounted from the
 * temporary directory (and an empty file over `/dev/kvm`, see {@link launch}). That keeps definitions out of the host's `/etc/libvirt/qemu` (where they
 * would persist across daemons) and lets several daemons run at once without fighting over the
 * QEMU driver's lock in `/run/libvirt/qemu`.
 *
 * Needs root, `libvirtd` (Debian `libvirt-daemon`) and `qemu-system-x86_64`. Tests call
 * {@link libvirtdUnavailable} for their `ignore:` option.
 *
 * Options for tests that start guests: `hooksDir` puts a test's directory on `/etc/libvirt/hooks`
 * (libvirt runs the hooks found there when it starts), and `virtlogd` runs the log daemon that
 * starting a guest needs, in the same namespace.
 *
 * @module
 */

import { shellQuote } from "../../lib/render/shell.ts";
import { canUnshareMounts } from "./cli.ts";
import { Connection } from "../../ffi/mod.ts";

const LIBVIRTD = "/usr/sbin/libvirtd";
const VIRTLOGD = "/usr/sbin/virtlogd";
/** Where libvirt looks for hook scripts; a test's own directory is bind-mounted there. */
const HOOKS_DIR = "/etc/libvirt/hooks";
const QEMU = "/usr/bin/qemu-system-x86_64";
const KVM_DEVICE = "/dev/kvm";
const ETC_DIR = "/etc/libvirt";

/** Overlaid in the daemon's private mount namespace, each by a directory in the temp dir. */
const PRIVATE_DIRS = [
  "/run/libvirt",
  "/etc/libvirt/qemu",
  "/var/lib/libvirt/qemu",
  "/var/cache/libvirt/qemu",
  // virtlogd's own log and the guests' (`qemu/VM.log`): Debian's libvirt-daemon package alone
  // does not create the directory, and without it virtlogd does not start.
  "/var/log/libvirt",
] as const;

/** Options of {@link startLibvirtd}. */
export interface LibvirtdOptions {
  /** A directory to bind-mount on `/etc/libvirt/hooks` (needs the private mount namespace). */
  hooksDir?: string;
  /** Also run `virtlogd` (starting a guest needs it; needs the private mount namespace). */
  virtlogd?: boolean;
  /**
   * More `libvirtd.conf` lines, such as `unix_sock_rw_perms = "0700"` (a socket only root may use),
   * written before the helper's own so that they win (libvirt takes a setting's first value).
   */
  config?: string[];
}

/** A running private daemon. `stop()` (or `await using`) kills it and removes its directory. */
export interface Libvirtd extends AsyncDisposable {
  /** `qemu:///system?socket=DIR/libvirt-sock`. */
  uri: string;
  /** The temporary directory holding socket, config, log and (isolated) state. */
  dir: string;
  /** The running daemon's pid (a new one after {@link Libvirtd.restart}). */
  readonly pid: number;
  /** Whether definitions are isolated from the host's `/etc/libvirt/qemu`. */
  isolated: boolean;
  /** The daemon's log so far (for failure messages). */
  log(): Promise<string>;
  /**
   * Starts the daemon again after a test killed it, with the same config, socket and (when
   * isolated) the same private state, so definitions survive as across a real daemon restart.
   */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Why a real daemon cannot run here, or `null` when it can. Synchronous, for `Deno.test`'s
 * `ignore:` option.
 */
export function libvirtdUnavailable(): string | null {
  if (Deno.build.os !== "linux") return "libvirtd tests need Linux";
  if (Deno.uid() !== 0) return "libvirtd tests need root (the QEMU system driver runs as root)";
  if (!exists(LIBVIRTD)) return `libvirtd tests need "${LIBVIRTD}" (Debian package libvirt-daemon)`;
  if (!exists(QEMU)) return `libvirtd tests need "${QEMU}" (Debian package qemu-system-x86)`;
  return null;
}

async function run(cmd: string, args: string[]): Promise<Deno.CommandOutput> {
  return await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
}

async function ensureQemuUser(): Promise<void> {
  // The QEMU driver refuses to start without its unprivileged user ("Failed to parse user").
  if ((await run("getent", ["group", "libvirt-qemu"])).code !== 0) {
    await run("groupadd", ["-r", "libvirt-qemu"]);
  }
  if ((await run("getent", ["passwd", "libvirt-qemu"])).code !== 0) {
    const out = await run("useradd", [
      "-r",
      "-g",
      "libvirt-qemu",
      "-d",
      "/var/lib/libvirt",
      "-s",
      "/usr/sbin/nologin",
      "libvirt-qemu",
    ]);
    if (out.code !== 0 && (await run("getent", ["passwd", "libvirt-qemu"])).code !== 0) {
      throw new Error(
        `Cannot create user "libvirt-qemu": ${new TextDecoder().decode(out.stderr).trim()}`,
      );
    }
  }
}

/**
 * A copy of `/etc/libvirt` in `DIR/etc` whose `qemu.conf` starts guests without a private `/dev`:
 * libvirt would move the daemon's `/dev/kvm`, an empty file bound there (see {@link launch}), into
 * it, which the kernel refuses for a file bind mount ("Unable to move ... kvm mount to /dev/kvm").
 * Debian's packages ship no `qemu.conf`, so a file of our own cannot simply be bound over one.
 */
async function privateEtc(dir: string): Promise<void> {
  await Deno.mkdir(`${dir}/etc`);
  const copy = await run("cp", ["-a", `${ETC_DIR}/.`, `${dir}/etc/`]);
  if (copy.code !== 0) {
    throw new Error(`Cannot copy ${ETC_DIR}: ${new TextDecoder().decode(copy.stderr).trim()}`);
  }
  let conf = "";
  try {
    conf = await Deno.readTextFile(`${dir}/etc/qemu.conf`);
  } catch {
    // No qemu.conf: libvirt's defaults, as on Debian.
  }
  // A host's own `namespaces = [ "mount" ]` (one line, as libvirt's sample has it) gives way.
  const kept = conf.split("\n").filter((line) => !/^\s*namespaces\s*=/.test(line)).join("\n");
  const sep = kept === "" || kept.endsWith("\n") ? "" : "\n";
  await Deno.writeTextFile(`${dir}/etc/qemu.conf`, `${kept}${sep}namespaces = []\n`);
}

/**
 * How to end each daemon started and not stopped yet, run when the test file's runtime unloads: a
 * test that failed before its `stop()` (in a setup that throws after starting one) would leave
 * its daemon running for the ten idle minutes of `-t 600`, and its directory behind for good.
 */
const unstopped = new Set<() => void>();
globalThis.addEventListener("unload", () => {
  for (const end of unstopped) end();
});

/**
 * Kills with SIGKILL the QEMU processes the isolated daemon in `dir` started and has not stopped:
 * each outlives its daemon (libvirt leaves guests running when it exits), so a test that fails
 * between a guest's start and its destroy would leave it running for good. Found by the pid files
 * in the daemon's private `/run/libvirt/qemu`, signalled only while their command line is QEMU's
 * (a pid may be another's by now). Synchronous, for the unload listener.
 */
function killGuests(dir: string): void {
  const status = `${dir}/state-${PRIVATE_DIRS.indexOf("/run/libvirt")}/qemu`;
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(status)];
  } catch {
    return;
  }
  for (const { name } of entries) {
    if (!name.endsWith(".pid")) continue;
    try {
      const pid = parseInt(Deno.readTextFileSync(`${status}/${name}`), 10);
      if (Deno.readTextFileSync(`/proc/${pid}/cmdline`).startsWith(QEMU)) Deno.kill(pid, "SIGKILL");
    } catch {
      // Gone already.
    }
  }
}

/** Whether process `pid` is running (a zombie counts as gone). */
export function processAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // A zombie has exited; the container's init may be slow to reap it.
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return false;
  }
}

/**
 * Runs `libvirtd -d` on the config in `dir` (`-d` returns once the socket is up; `-t 600` makes a
 * forgotten daemon exit by itself after ten idle minutes), inside a private mount namespace with
 * `DIR/state-N` over each of {@link PRIVATE_DIRS} when `isolated`.
 */
async function launch(
  dir: string,
  isolated: boolean,
  options: LibvirtdOptions = {},
): Promise<Deno.CommandOutput> {
  const daemon = [LIBVIRTD, "-d", "-t", "600", "-f", `${dir}/libvirtd.conf`, "-p"]
    .concat(`${dir}/libvirtd.pid`).map(shellQuote).join(" ");
  if (!isolated) return await run("sh", ["-c", `exec ${daemon}`]);
  const steps = PRIVATE_DIRS.map((target, i) =>
    `mount --bind ${shellQuote(`${dir}/state-${i}`)} ${shellQuote(target)}`
  );
  // First, so that the binds below land inside the copy (see {@link privateEtc}).
  if (exists(KVM_DEVICE)) steps.unshift(`mount --bind ${shellQuote(`${dir}/etc`)} ${ETC_DIR}`);
  if (options.hooksDir !== undefined) {
    steps.push(`mount --bind ${shellQuote(options.hooksDir)} ${HOOKS_DIR}`);
  }
  if (options.virtlogd) {
    // Its socket goes to the private /run/libvirt, where this daemon's QEMU driver looks.
    steps.push(
      [VIRTLOGD, "-d", "-t", "600", "-p", `${dir}/virtlogd.pid`].map(shellQuote).join(" "),
    );
  }
  // A /dev/kvm the QEMU user cannot open (mode 0600, as on this kind of machine) makes libvirt
  // 9.0 probe QEMU again on every call: it probes as root, with KVM, then finds the cached
  // capabilities invalid because the QEMU user has no KVM (every define then takes seconds).
  // The daemon sees an empty file there instead: no KVM, as on machines without the device.
  if (exists(KVM_DEVICE)) steps.push(`mount --bind ${shellQuote(`${dir}/no-kvm`)} ${KVM_DEVICE}`);
  return await run("unshare", [
    "-m",
    "--propagation",
    "private",
    "sh",
    "-c",
    [...steps, `exec ${daemon}`].join(" && "),
  ]);
}

/** Starts a private `libvirtd` in a fresh temporary directory. */
export async function startLibvirtd(options: LibvirtdOptions = {}): Promise<Libvirtd> {
  const reason = libvirtdUnavailable();
  if (reason !== null) throw new Error(`Cannot start libvirtd: ${reason}`);
  await ensureQemuUser();
  const dir = await Deno.makeTempDir({ prefix: "passthrough-libvirtd-" });
  const conf = `${dir}/libvirtd.conf`;
  const pidFile = `${dir}/libvirtd.pid`;
  await Deno.writeTextFile(
    conf,
    [
      ...(options.config ?? []),
      `unix_sock_dir = "${dir}"`,
      `auth_unix_rw = "none"`,
      `auth_unix_ro = "none"`,
      `log_outputs = "3:file:${dir}/libvirtd.log"`,
      "",
    ].join("\n"),
  );
  const isolated = canUnshareMounts();
  if (!isolated && (options.hooksDir !== undefined || options.virtlogd)) {
    await Deno.remove(dir, { recursive: true });
    throw new Error("Cannot start libvirtd with hooks or virtlogd: no private mount namespace");
  }
  if (options.hooksDir !== undefined) await Deno.mkdir(HOOKS_DIR, { recursive: true });
  if (isolated) {
    await Deno.writeFile(`${dir}/no-kvm`, new Uint8Array(0), { mode: 0o600 });
    for (const [i, target] of PRIVATE_DIRS.entries()) {
      await Deno.mkdir(`${dir}/state-${i}`);
      // The mount point must exist on the host; an empty directory there is harmless.
      await Deno.mkdir(target, { recursive: true });
    }
    if (exists(KVM_DEVICE)) await privateEtc(dir);
  }
  const log = () => Deno.readTextFile(`${dir}/libvirtd.log`).catch(() => "");
  const output = await launch(dir, isolated, options);
  if (output.code !== 0) {
    const detail = new TextDecoder().decode(output.stderr).trim() || (await log()).trim();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new Error(`Cannot start libvirtd: exit code ${output.code}: ${detail}`);
  }
  const readPid = async () => parseInt((await Deno.readTextFile(pidFile)).trim(), 10);
  let pid = await readPid();
  // Synchronous, as an unload listener must be. Only a process whose command line names `dir` is
  // signalled (its pid may be another's by now); SIGKILL, so nothing writes there once removed.
  const end = () => {
    killGuests(dir);
    for (const file of ["libvirtd.pid", "virtlogd.pid"]) {
      try {
        const target = parseInt(Deno.readTextFileSync(`${dir}/${file}`), 10);
        if (Deno.readTextFileSync(`/proc/${target}/cmdline`).includes(dir)) {
          Deno.kill(target, "SIGKILL");
        }
      } catch {
        // Never written, or gone already.
      }
    }
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // Removed already.
    }
  };
  unstopped.add(end);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    unstopped.delete(end);
    killGuests(dir);
    try {
      Deno.kill(pid, "SIGTERM");
    } catch {
      // Already gone (the idle timeout, or a test killed it on purpose).
    }
    if (options.virtlogd) {
      try {
        Deno.kill(parseInt(await Deno.readTextFile(`${dir}/virtlogd.pid`), 10), "SIGTERM");
      } catch {
        // Gone already, or never written.
      }
    }
    for (let i = 0; i < 100 && processAlive(pid); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    if (processAlive(pid)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // Gone between the check and the kill.
      }
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const restart = async () => {
    // virtlogd keeps running: its socket is in the same private /run/libvirt directory.
    const output = await launch(dir, isolated, { ...options, virtlogd: false });
    if (output.code !== 0) {
      throw new Error(
        `Cannot restart libvirtd: ${new TextDecoder().decode(output.stderr).trim()}`,
      );
    }
    pid = await readPid();
  };
  return {
    uri: `qemu:///system?socket=${dir}/libvirt-sock`,
    dir,
    get pid() {
      return pid;
    },
    isolated,
    log,
    restart,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/**
 * Undefines `names` on `daemon` when its definitions are not isolated (no private mount
 * namespace: they landed in the host's /etc/libvirt/qemu); names never defined are skipped.
 */
export async function undefineUnlessIsolated(daemon: Libvirtd, names: string[]): Promise<void> {
  if (daemon.isolated) return;
  const { Connection } = await import("../../ffi/connection.ts");
  using conn = Connection.open(daemon.uri);
  for (const name of names) {
    try {
      using dom = conn.lookupDomainByName(name);
      dom.undefine();
    } catch {
      // Never defined (the test failed before).
    }
  }
}

/**
 * A URI naming another machine (`qemu+ext://AUTHORITY/system`, `AUTHORITY` such as
 * `hv9.invalid`) that still reaches `daemon`: the ext transport runs a program, written into
 * `dir`, that relays its standard input and output to the daemon's socket. Opening it needs
 * `--allow-uri-programs`.
 */
export function relayedRemoteUri(daemon: Libvirtd, dir: string, authority: string): string {
  const relay = `${dir}/relay.sh`;
  const socket = daemon.uri.split("socket=")[1]!;
  Deno.writeTextFileSync(
    `${dir}/relay.ts`,
    `const conn = await Deno.connect({ transport: "unix", path: ${JSON.stringify(socket)} });
    await Promise.all([Deno.stdin.readable.pipeTo(conn.writable), conn.readable.pipeTo(Deno.stdout.writable)]);`,
  );
  Deno.writeTextFileSync(
    relay,
    `#!/bin/sh\nexec ${shellQuote(Deno.execPath())} run -A ${shellQuote(`${dir}/relay.ts`)}\n`,
    { mode: 0o755 },
  );
  return `qemu+ext://${authority}/system?command=${relay}`;
}

/**
 * How a test reaches `daemon` as this host's system daemon, on the system daemon's own socket
 * (a private daemon's `socket=` is not that, see isSystemQemuUri): in a private mount namespace
 * whose `/run/libvirt` is the daemon's directory, `qemu:///system`. `setup`: the `sh` command
 * making it (for runInPrivateMounts, after others); `wrap`: runCli's, running the CLI there.
 */
export function asSystemDaemon(daemon: Libvirtd): { uri: string; setup: string; wrap: string[] } {
  const setup = `mkdir -p /run/libvirt && mount --bind ${shellQuote(daemon.dir)} /run/libvirt`;
  return {
    uri: "qemu:///system",
    setup,
    wrap: ["unshare", "-m", "--propagation", "private", "sh", "-c", `${setup} && exec "$@"`, "sh"],
  };
}

/**
 * A private daemon reached as `qemu:///system?socket=...` (asSystemDaemon: as the system's), any user
 * may use, defining `vms` (name to uuid; demo/world.xml's by default) shut off, without devices.
 */
export async function startDemoDaemon(
  vms: Record<string, string> = {
    win10: "6695eb01-f6a4-8304-79aa-97f2502e193f",
    gentoo: "4dea22b3-1d52-d8f3-2516-782e98a23fa0",
  },
): Promise<Libvirtd> {
  const daemon = await startLibvirtd({ config: [`unix_sock_rw_perms = "0777"`] });
  await Deno.chmod(daemon.dir, 0o755);
  using conn = Connection.open(daemon.uri);
  for (const [name, uuid] of Object.entries(vms)) {
    conn.defineDomain(
      `<domain type='qemu'><name>${name}</name><uuid>${uuid}</uuid>` +
        "<memory unit='KiB'>65536</memory><vcpu>1</vcpu>" +
        "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>",
    ).free();
  }
  return daemon;
}
