/**
 * A libvirtd that stops answering, for real: a private daemon stopped with `SIGSTOP` (its socket
 * still accepts connections: the kernel queues them), stopped between two calls of a command, or
 * holding back the reply to a define. Each command must give up after `--libvirt-timeout`,
 * exit 1 and say where libvirt was, instead of waiting forever.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { type Libvirtd, libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";
import {
  canUnshareMounts,
  documentedFlags,
  hasScript,
  MAIN,
  type PtySession,
  runCliOnPty,
} from "../helpers/cli.ts";
import {
  PROC_CONNECT_LIST_ALL_DOMAINS,
  PROC_DOMAIN_DEFINE_XML_FLAGS,
  startRpcHook,
} from "../helpers/rpc_hook.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { Connection } from "../../ffi/mod.ts";

const DEMO = new URL("../../demo/", import.meta.url).pathname;
const unavailable = libvirtdUnavailable();

/** How long a test waits for the CLI before killing it: far past the 1 s deadline it is given. */
const SAFETY_MS = 120_000;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** Whether the test had to kill it: the CLI hung. */
  killed: boolean;
}

/** Runs the CLI, killed (and reported so) if it is still running after {@link SAFETY_MS}. */
async function runBounded(args: string[]): Promise<Run> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...documentedFlags(), MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    child.kill("SIGKILL");
  }, SAFETY_MS);
  const out = await child.output();
  clearTimeout(timer);
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr), killed };
}

interface Scene extends AsyncDisposable {
  daemon: Libvirtd;
  dir: string;
  /** Every flag but `--connect`. */
  args: string[];
  xml(name: string): string;
}

async function scene(): Promise<Scene> {
  const daemon = await startLibvirtd();
  const dir = await Deno.makeTempDir({ prefix: "passthrough-libvirt-timeout-" });
  buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
  await Deno.writeTextFile(
    `${dir}/passthrough_config.yaml`,
    `version: 1\nvms:\n  win10:\n    devices:\n      - name: gtx1080\n` +
      `        match: { vendor_device_id: "10de:1b80" }\n`,
  );
  {
    using conn = Connection.open(daemon.uri);
    conn.defineDomain(`<domain type='qemu'><name>win10</name>
  <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid><memory unit='KiB'>65536</memory>
  <vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os></domain>`).free();
  }
  return {
    daemon,
    dir,
    args: [
      "--config",
      `${dir}/passthrough_config.yaml`,
      "--sysfs",
      `${dir}/sysfs`,
      "--libvirt-timeout",
      "1",
    ],
    xml(name) {
      using conn = Connection.open(daemon.uri, { readOnly: true });
      using dom = conn.lookupDomainByName(name);
      return dom.xml({ inactive: true });
    },
    async [Symbol.asyncDispose]() {
      // A stopped daemon ends on SIGKILL too; continued, it also ends as the helper expects.
      try {
        Deno.kill(daemon.pid, "SIGCONT");
      } catch {
        // Already gone.
      }
      await daemon.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test({
  name: "plan --libvirt-timeout 1 gives up on a stopped libvirtd: exit 1, one line naming the URI",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    Deno.kill(s.daemon.pid, "SIGSTOP");
    for (const command of ["plan", "doctor", "sources"]) {
      const args = command === "plan"
        ? [...s.args, "--connect", s.daemon.uri]
        : ["--sysfs", `${s.dir}/sysfs`, "--libvirt-timeout", "1", "--connect", s.daemon.uri];
      const run = await runBounded([command, ...args]);
      assert(!run.killed, `${command} hung on a stopped daemon: ${run.stderr}`);
      assertEquals(run.code, 1, `${command}: ${run.stderr}`);
      assertMatch(
        run.stderr,
        new RegExp(
          `^passthrough ${command}: libvirt at "${
            s.daemon.uri.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")
          }" did not answer in 1 s: ` +
            "is libvirtd running\\? `systemctl status libvirtd`; wait longer with --libvirt-timeout",
        ),
        command,
      );
    }
  },
});

Deno.test({
  name: "plan gives up when the daemon stops between two of its calls",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    await using hook = await startRpcHook({
      socket: `${s.daemon.dir}/libvirt-sock`,
      dir: s.daemon.dir,
      proc: PROC_CONNECT_LIST_ALL_DOMAINS,
      command: ["kill", "-STOP", String(s.daemon.pid)],
    });
    const run = await runBounded(["plan", ...s.args, "--connect", hook.uri]);
    assert(!run.killed, `plan hung: ${run.stderr}`);
    assertMatch(await hook.ran, /^ran 0 /);
    assertEquals(run.code, 1, run.stderr);
    assertEquals(run.stdout, "");
    // Opened by then: the message names the URI libvirt gave back.
    assertMatch(run.stderr, /libvirt at "qemu:\/\/\/system\?socket=[^"]*" did not answer in 1 s/);
  },
});

Deno.test({
  name: "apply gives up when a define is not answered, and says the define's outcome is unknown",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    const before = s.xml("win10");
    // The daemon defines; its reply is held back past the deadline (the proxy runs `sleep`
    // before passing it on).
    await using hook = await startRpcHook({
      socket: `${s.daemon.dir}/libvirt-sock`,
      dir: s.daemon.dir,
      proc: PROC_DOMAIN_DEFINE_XML_FLAGS,
      command: ["sleep", "10"],
    });
    const run = await runBounded(
      ["apply", ...s.args, "--connect", hook.uri, "--state-dir", `${s.dir}/state`, "--yes"],
    );
    assert(!run.killed, `apply hung: ${run.stderr}`);
    assertEquals(run.code, 1, run.stderr);
    assertMatch(
      run.stderr,
      /^passthrough apply: libvirt at .* did not answer in 1 s, while defining "win10": whether that define took effect is unknown \(its previous definition is in a backup: `passthrough backups`\)/,
    );
    assert(s.xml("win10") !== before, "the daemon did define: the reply alone was held back");
  },
});

Deno.test("--libvirt-timeout refuses what is not a number of seconds (exit 2)", async () => {
  const run = await runBounded(["sources", "--libvirt-timeout", "soon"]);
  assertEquals(run.code, 2, run.stderr);
  assertMatch(
    run.stderr,
    /--libvirt-timeout takes a number of seconds \(0 for no limit\), not "soon"/,
  );
  // A wrong command line is said first: plan and apply reported the missing config (exit 1),
  // and the wrong value only once that was fixed.
  for (const command of ["plan", "apply"]) {
    const first = await runBounded(
      [command, "--libvirt-timeout", "soon", "--config", "/nonexistent/passthrough_config.yaml"],
    );
    assertEquals(first.code, 2, first.stderr);
    assertMatch(first.stderr, /^passthrough \w+: --libvirt-timeout takes a number of seconds/);
  }
});

/** A libvirt that takes connections and never answers (a socket that only listens), on a port. */
async function withSilentLibvirt(body: (port: number) => Promise<void>): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })();
  try {
    await body(listener.addr.port);
  } finally {
    listener.close();
    await accepting.catch(() => {});
    for (const conn of held) conn.close();
  }
}

Deno.test("the deadline's message hides a password written into the URI, as every error does", async () => {
  await withSilentLibvirt(async (port) => {
    const uri = `qemu+tcp://admin:s3cret-pw@127.0.0.1:${port}/system`;
    const run = await runBounded(["sources", "--libvirt-timeout", "1", "--connect", uri]);
    assert(!run.killed, `sources hung: ${run.stderr}`);
    assertEquals(run.code, 1, run.stderr);
    assertMatch(
      run.stderr,
      /libvirt at "qemu\+tcp:\/\/admin:\*\*\*@127\.0\.0\.1:\d+\/system" did not/,
    );
    assert(!run.stderr.includes("s3cret-pw"), run.stderr);
  });
});

Deno.test("doctor prints its findings when libvirt does not answer, its libvirt one saying why", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-libvirt-timeout-doctor-" });
  try {
    buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
    await withSilentLibvirt(async (port) => {
      const uri = `qemu+tcp://admin:s3cret-pw@127.0.0.1:${port}/system`;
      const args = ["doctor", "--sysfs", `${dir}/sysfs`, "--libvirt-timeout", "1"];
      const run = await runBounded([...args, "--connect", uri]);
      assert(!run.killed, `doctor hung: ${run.stderr}`);
      assertEquals(run.code, 1, run.stderr);
      assertMatch(run.stdout, /^ok {4}iommu +IOMMU on: \d+ groups/);
      assertMatch(
        run.stdout,
        /\nFAIL {2}libvirt +Cannot reach libvirt: libvirt at "qemu\+tcp:\/\/admin:\*\*\*@127\.0\.0\.1:\d+\/system" did not answer in 1 s: is libvirtd running\?/,
      );
      assert(!run.stdout.includes("s3cret-pw"), run.stdout);
      assertMatch(run.stderr, /^passthrough doctor: libvirt at .* did not answer in 1 s/);
      // Under --json, stdout is the error report alone, as for every error.
      const json = await runBounded([...args, "--json", "--connect", uri]);
      assertEquals(json.code, 1, json.stderr);
      assertMatch(JSON.parse(json.stdout).error.message, /did not answer in 1 s/);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("under --json, a libvirt that does not answer is reported on stdout as every error is", async () => {
  await withSilentLibvirt(async (port) => {
    const uri = `qemu+tcp://admin:s3cret-pw@127.0.0.1:${port}/system`;
    const run = await runBounded(["sources", "--json", "--libvirt-timeout", "1", "--connect", uri]);
    assert(!run.killed, `sources hung: ${run.stderr}`);
    assertEquals(run.code, 1, run.stderr);
    const report = JSON.parse(run.stdout);
    assertEquals(report.error.kind, "runtime");
    assertMatch(
      report.error.message,
      /^libvirt at "qemu\+tcp:\/\/admin:\*\*\*@127\.0\.0\.1:\d+\/system" did not answer in 1 s/,
    );
    assertMatch(run.stderr, /^passthrough sources: libvirt at .* did not answer in 1 s/);
  });
});

/** A wrapper that runs the command with `path` bound over root's libvirt.conf, in a mount
 * namespace of the run's own. */
function asLibvirtConf(path: string): string[] {
  return [
    "unshare",
    "-m",
    "--propagation",
    "private",
    "sh",
    "-c",
    `mount --bind '${path}' /etc/libvirt/libvirt.conf && exec "$@"`,
    "sh",
  ];
}

/**
 * Runs `body` with a directory holding an `ssh` that asks as ssh does, on the terminal, writes
 * what it was answered to `answered` there, then fails the connection.
 */
async function withAskingSsh(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-libvirt-timeout-ssh-" });
  try {
    await Deno.writeTextFile(
      `${dir}/ssh`,
      `#!/bin/sh\nprintf 'root@hv9 password: ' > /dev/tty\nread -r answer < /dev/tty\n` +
        `echo "answered $answer" > '${dir}/answered'\nexit 255\n`,
      { mode: 0o755 },
    );
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Answers the password prompt on `pty` later than the deadline and its grace second, and checks
 * that the run waited for it: ssh read the answer while passthrough was there to wait.
 */
async function answerLate(pty: PtySession, dir: string): Promise<string> {
  await pty.waitFor(/password: /);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  // Typing fails when the run is already over: the screen then says why.
  await pty.type("hunter2\r").catch(() => {});
  const { code, screen } = await pty.exited(SAFETY_MS);
  assertEquals(code, 1, screen);
  assert(!screen.includes("did not answer"), screen);
  assertEquals(await Deno.readTextFile(`${dir}/answered`), "answered hunter2\n");
  return screen;
}

Deno.test({
  name: "the deadline does not end an ssh password prompt at a terminal, nor leave ssh behind",
  ignore: !hasScript(),
  async fn() {
    await withAskingSsh(async (dir) => {
      await using pty = runCliOnPty(
        ["sources", "--libvirt-timeout", "1", "--connect", "qemu+ssh://root@hv9.invalid/system"],
        { env: { PATH: `${dir}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}` } },
      );
      const screen = await answerLate(pty, dir);
      assertMatch(screen, /Cannot connect to libvirt at "qemu\+ssh:\/\/root@hv9\.invalid\/system"/);
    });
  },
});

Deno.test({
  name:
    "an ssh URI named only by libvirt.conf (its uri_default, an alias) is waited for at a terminal as one given",
  ignore: !hasScript() || !canUnshareMounts(),
  async fn() {
    for (const connect of [[], ["--connect", "hv9"]]) {
      await withAskingSsh(async (dir) => {
        await Deno.writeTextFile(
          `${dir}/libvirt.conf`,
          // As virConf reads it: a `#` or `]` in a string is the string's (an IPv6 host).
          `# a comment = "test:///default"\nuri_aliases = [\n  "v6=test:///[::1]#x",\n` +
            `  "hv9=qemu+ssh://root@[fe80::9]/system",\n] # the lab's\n` +
            `uri_default = "qemu+ssh://root@hv9.invalid/system?keyfile=/root/.ssh/id#2"\n`,
        );
        await using pty = runCliOnPty(["sources", "--libvirt-timeout", "1", ...connect], {
          env: { PATH: `${dir}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}` },
          wrap: asLibvirtConf(`${dir}/libvirt.conf`),
        });
        const screen = await answerLate(pty, dir);
        assertMatch(screen, /Cannot connect to libvirt at (its default URI|"hv9")/, connect.join());
      });
    }
  },
});

Deno.test({
  name:
    "a libvirt.conf that is not a file (a FIFO no one writes) is left to libvirt, under the deadline",
  ignore: !hasScript() || !canUnshareMounts(),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-libvirt-timeout-fifo-" });
    try {
      const made = await new Deno.Command("mkfifo", { args: [`${dir}/libvirt.conf`] }).output();
      assert(made.success, "mkfifo");
      // Read at a terminal only (is the URI ssh?), before libvirt reads it within the deadline.
      await using pty = runCliOnPty(
        ["sources", "--libvirt-timeout", "1", "--connect", "qemu+tcp://127.0.0.1:1/system"],
        {
          wrap: asLibvirtConf(`${dir}/libvirt.conf`),
        },
      );
      const { code, screen } = await pty.exited(30_000);
      assertEquals(code, 1, screen);
      assertMatch(screen, /passthrough sources: libvirt at .* did not answer in 1 s/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("a URI too long for the deadline's command is cut in its message, not left unsaid", async () => {
  await withSilentLibvirt(async (port) => {
    // libvirt's TCP transport ignores the user: thousands of characters of it still connect.
    for (const [user, json] of [["u".repeat(7900), true], ["u".repeat(17000), false]] as const) {
      const uri = `qemu+tcp://${user}@127.0.0.1:${port}/system`;
      const args = ["sources", "--libvirt-timeout", "1", "--connect", uri];
      const run = await runBounded(json ? [...args, "--json"] : args);
      assert(!run.killed, `sources hung: ${run.stderr}`);
      assertEquals(run.code, 1, run.stderr);
      assertMatch(
        run.stderr,
        /^passthrough sources: libvirt at "qemu\+tcp:\/\/u+.* did not answer in 1 s/,
      );
      if (json) assertMatch(JSON.parse(run.stdout).error.message, /did not answer in 1 s/);
    }
  });
});
