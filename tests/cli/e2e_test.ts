/**
 * End to end, as a user runs it: the real CLI in its own processes (with exactly README's
 * permission flags), a real `libvirtd` with the QEMU driver started privately for each test, and
 * a sysfs tree of a real host (the demo's ASRock TRX40 Creator) read by the real `lspci`.
 * Prompts are answered on a real pseudo-terminal. Skipped when no daemon can run here.
 */

import { assert, assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { type Libvirtd, libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";
import { documentedFlags, hasScript, runCli, runCliOnPty } from "../helpers/cli.ts";
import {
  PROC_DOMAIN_DEFINE_XML_FLAGS,
  PROC_DOMAIN_GET_XML_DESC,
  startRpcHook,
} from "../helpers/rpc_hook.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { listBackups } from "../../lib/state/backups.ts";
import {
  allowanceFile,
  allowNextStart,
  readRefusalRecords,
  readVmPolicy,
} from "../../lib/guard/state.ts";
import { policyFor } from "../../lib/guard/policy.ts";
import { Connection } from "../../ffi/mod.ts";
import { runGuard } from "../../lib/guard/run.ts";
import { lockUri } from "../../lib/state/lock.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";

const DEMO = new URL("../../demo/", import.meta.url).pathname;
const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const unavailable = libvirtdUnavailable();

const CONFIG = `version: 1
vms:
  win10:
    devices:
      - name: gtx1080
        match: { vendor_device_id: "10de:1b80" }
  gentoo:
    devices:
      - name: rx580
        match: { vendor_id: "1002", device_id: "67df" }
`;

function qemuDomain(name: string, uuid: string): string {
  return `<domain type='qemu'>
  <name>${name}</name>
  <uuid>${uuid}</uuid>
  <memory unit='KiB'>65536</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <hostdev mode='subsystem' type='usb' managed='yes'>
      <source><vendor id='0x046d'/><product id='0xc52b'/></source>
    </hostdev>
  </devices>
</domain>`;
}

/** A private daemon with two shut-off VMs, a host tree, a config and a state directory. */
interface Scene extends AsyncDisposable {
  daemon: Libvirtd;
  dir: string;
  /** Flags every command takes. */
  args: string[];
  stateDir: string;
  xml(name: string): string;
}

async function scene(): Promise<Scene> {
  const daemon = await startLibvirtd();
  const dir = await Deno.makeTempDir({ prefix: "passthrough-e2e-" });
  buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
  await Deno.writeTextFile(`${dir}/passthrough_config.yaml`, CONFIG);
  {
    using conn = Connection.open(daemon.uri);
    conn.defineDomain(qemuDomain("win10", "6695eb01-f6a4-8304-79aa-97f2502e193f")).free();
    conn.defineDomain(qemuDomain("gentoo", "4dea22b3-1d52-d8f3-2516-782e98a23fa0")).free();
  }
  const stateDir = `${dir}/state`;
  return {
    daemon,
    dir,
    stateDir,
    args: [
      "--config",
      `${dir}/passthrough_config.yaml`,
      "--sysfs",
      `${dir}/sysfs`,
      "--connect",
      daemon.uri,
    ],
    xml(name) {
      using conn = Connection.open(daemon.uri, { readOnly: true });
      using dom = conn.lookupDomainByName(name);
      return dom.xml({ inactive: true });
    },
    async [Symbol.asyncDispose]() {
      await daemon.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** {@link CONFIG} with win10's guard turned to warn. */
const WARN_WIN10 = CONFIG.replace("  win10:\n", "  win10:\n    guard: warn\n");

/** A config that names gentoo alone. */
const GENTOO_ONLY =
  'version: 1\nvms:\n  gentoo:\n    devices:\n      - match: { vendor_id: "1002", device_id: "67df" }\n        name: rx580\n';

/** win10's PCI hostdevs, and the guard policy its next start would have. */
function win10Guarded(s: Scene): [string[], string] {
  return [pciSources(s.xml("win10")), readVmPolicy(s.stateDir, "win10").policy.guard];
}

/** Writes `config` as the scene's config file and runs `apply --yes` over it with `more` flags. */
async function applyConfig(s: Scene, config: string, ...more: string[]) {
  await Deno.writeTextFile(`${s.dir}/passthrough_config.yaml`, config);
  return await runCli(["apply", "--yes", ...s.args, ...more], {
    env: { PASSTHROUGH_STATE_DIR: s.stateDir },
  });
}

/** {@link applyConfig}, which must succeed. */
async function appliedConfig(s: Scene, config: string, ...more: string[]) {
  const result = await applyConfig(s, config, ...more);
  assertEquals(result.code, 0, result.stderr + result.stdout);
  return result;
}

/** `rollback VM --yes` of the scene's state. */
function rollbackYes(s: Scene, vm: string) {
  return runCli(["rollback", vm, "--state-dir", s.stateDir, "--connect", s.daemon.uri, "--yes"]);
}

/** Starts the CLI with `args`, no input, its output piped to the test (which may signal it). */
function spawnCli(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...documentedFlags(), MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
}

/** A config whose win10 (`vmGuard` its guard line, or "") enforces its GPU under `rule`. */
function ruleConfig(vmGuard: string, rule: string): string {
  return `version: 1
vms:
  win10:
${vmGuard}    devices:
      - name: ${rule}
        guard: enforce
        match: { vendor_device_id: "10de:1b80" }
  gentoo:
    devices:
      - name: rx580
        match: { vendor_id: "1002", device_id: "67df" }
`;
}

/** The rule win10's GPU record names, and the policy the start guard applies to it by that rule. */
function gpuPolicy(s: Scene) {
  const rules = parseDomainXml(s.xml("win10")).records.map((r) => r.rule);
  const { policy } = readVmPolicy(s.stateDir, "win10");
  return [rules[0], policyFor(policy, rules[0]!)];
}

function pciSources(xml: string): string[] {
  return parseDomainXml(xml).hostdevs.map((h) => h.address);
}

Deno.test({
  name:
    "plan, apply --yes, plan again: the real daemon converges and a second apply has nothing to do",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    const before = s.xml("win10");

    const plan = await runCli(["plan", ...s.args, "--detailed-exitcode"]);
    assertEquals(plan.code, 2, plan.stderr);
    assertMatch(
      plan.stdout,
      /\+\s+<address domain='0x0000' bus='0x21' slot='0x00' function='0x0'\/>/,
    );
    assertMatch(plan.stdout, /added 0000:21:00\.1 .*VFIO assigns the whole group/);
    assertMatch(plan.stdout, /2 VMs to change, 4 hostdevs to add, 0 to remove/);
    assertEquals(s.xml("win10"), before, "plan changed nothing");

    const json = JSON.parse((await runCli(["plan", ...s.args, "--json"])).stdout);
    assertEquals(
      json.vms.map((vm: { name: string; hostdevs: string[] }) => [vm.name, vm.hostdevs]),
      [["win10", ["0000:21:00.0", "0000:21:00.1"]], ["gentoo", ["0000:4c:00.0", "0000:4c:00.1"]]],
    );

    const apply = await runCli(["apply", ...s.args, "--state-dir", s.stateDir, "--yes"]);
    assertEquals(apply.code, 0, apply.stderr + apply.stdout);
    assertMatch(apply.stdout, /changed win10/);
    assertMatch(apply.stdout, /changed gentoo/);
    assertEquals(pciSources(s.xml("win10")), ["0000:21:00.0", "0000:21:00.1"]);
    assertEquals(pciSources(s.xml("gentoo")), ["0000:4c:00.0", "0000:4c:00.1"]);
    // The hand-added USB hostdev survives, and the daemon's guest addresses are kept.
    assertMatch(s.xml("win10"), /<vendor id='0x046d'\/>/);
    assertEquals(listBackups(s.stateDir).map((b) => b.vm).sort(), ["gentoo", "win10"]);

    const again = await runCli(["plan", ...s.args, "--detailed-exitcode"]);
    assertEquals(again.code, 0, again.stdout);
    assertMatch(again.stdout, /No changes/);
    const second = await runCli(["apply", ...s.args, "--state-dir", s.stateDir, "--yes"]);
    assertEquals(second.code, 0, second.stderr);
    assertMatch(second.stdout, /No changes/i);
    assertEquals(listBackups(s.stateDir).length, 2, "no define, so no new backup");
  },
});

/** The VM whose plan section was printed last on `screen`. */
function lastSection(screen: string): string | undefined {
  return [...screen.matchAll(/^VM (\S+)/gm)].at(-1)?.[1];
}

Deno.test({
  name:
    "apply on a terminal: each question under its VM's diff; y applies, Enter skips, q stops before the rest",
  ignore: unavailable !== null || !hasScript(),
  async fn() {
    await using s = await scene();
    const gentooBefore = s.xml("gentoo");
    {
      await using pty = runCliOnPty(["apply", ...s.args, "--state-dir", s.stateDir]);
      const first = await pty.waitFor(/Apply the changes to "win10"\? \[y\/N\/a\/q\]/);
      // Each question sits right under its VM's diff: the last section before it is that VM's.
      assertMatch(
        first,
        /VM win10[^\n]*\n {2}--- win10 \(current\)[^]*?\+ +<hostdev[^]*Apply the changes to "win10"/,
      );
      assertEquals(lastSection(first), "win10");
      await pty.type("\n"); // Enter means no.
      const second = await pty.waitFor(/Apply the changes to "gentoo"\? \[y\/N\/a\/q\]/);
      assertEquals(lastSection(second), "gentoo");
      await pty.type("y\n");
      const { code, screen } = await pty.finish();
      assertEquals(code, 0, screen);
      assertMatch(screen, /skipped win10/);
      assertMatch(screen, /changed gentoo/);
    }
    assertEquals(pciSources(s.xml("win10")), []);
    assert(s.xml("gentoo") !== gentooBefore);
    {
      // Roll gentoo back, then quit at the first question: nothing changes.
      const back = await rollbackYes(s, "gentoo");
      assertEquals(back.code, 0, back.stderr + back.stdout);
      await using pty = runCliOnPty(["apply", ...s.args, "--state-dir", s.stateDir]);
      await pty.waitFor(/Apply the changes to "win10"\?/);
      await pty.type("q\n");
      const { code, screen } = await pty.finish();
      assertEquals(code, 0, screen);
      assertMatch(screen, /Changed: none\./);
    }
    assertEquals(pciSources(s.xml("win10")), []);
    assertEquals(pciSources(s.xml("gentoo")), []);
  },
});

Deno.test({
  name: "a definition changed by another client while apply waits at the prompt is not overwritten",
  ignore: unavailable !== null || !hasScript(),
  async fn() {
    await using s = await scene();
    await using pty = runCliOnPty(["apply", ...s.args, "--state-dir", s.stateDir, "--vm", "win10"]);
    await pty.waitFor(/Apply the changes to "win10"\?/);
    // Someone edits win10 (virsh edit, virt-manager...) between the plan and the answer.
    const edited = s.xml("win10").replace(
      /<vcpu[^>]*>1<\/vcpu>/,
      "<vcpu placement='static'>2</vcpu>",
    );
    assert(edited !== s.xml("win10"));
    {
      using conn = Connection.open(s.daemon.uri);
      conn.defineDomain(edited).free();
    }
    const current = s.xml("win10");
    await pty.type("y\n");
    const { code, screen } = await pty.finish();
    assertEquals(code, 1, screen);
    assertMatch(screen, /win10.*changed since the plan/is);
    assertEquals(s.xml("win10"), current, "the other client's change stands");
    assertEquals(listBackups(s.stateDir), []);
  },
});

Deno.test({
  name: "rollback restores the definition from before apply exactly",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    const original = s.xml("win10");
    const apply = await runCli([
      "apply",
      ...s.args,
      "--state-dir",
      s.stateDir,
      "--yes",
      "--vm",
      "win10",
    ]);
    assertEquals(apply.code, 0, apply.stderr + apply.stdout);
    assert(s.xml("win10") !== original);

    const listed = await runCli(["backups", "win10", "--state-dir", s.stateDir, "--json"]);
    assertEquals(JSON.parse(listed.stdout).length, 1);

    const back = await rollbackYes(s, "win10");
    assertEquals(back.code, 0, back.stderr + back.stdout);
    assertEquals(s.xml("win10"), original);
    // The rollback itself backed up the applied definition first.
    assertEquals(listBackups(s.stateDir, "win10").length, 2);
  },
});

Deno.test({
  name: "apply with the daemon stopped fails cleanly and writes nothing",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    await s.daemon.stop();
    const apply = await runCli(["apply", ...s.args, "--state-dir", s.stateDir, "--yes"]);
    assertEquals(apply.code, 1);
    assertMatch(apply.stderr, /^passthrough apply: .*(connect|socket)/im);
    assert(!/\n\s+at /.test(apply.stderr), `no stack trace:\n${apply.stderr}`);
    assertEquals(listBackups(s.stateDir), []);
  },
});

Deno.test({
  name: "apply without a terminal and without --yes refuses with exit 1 and changes nothing",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    const before = s.xml("win10");
    const apply = await runCli(["apply", ...s.args, "--state-dir", s.stateDir], {
      stdin: "y\ny\n",
    });
    assertEquals(apply.code, 1);
    assertMatch(apply.stderr, /--yes/);
    assertEquals(s.xml("win10"), before);
  },
});

Deno.test({
  name:
    "apply --yes stopped by SIGTERM between two VMs swapping cards finishes the swap, says so, exit 143",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    // gentoo holds the GTX 1080 and win10 the RX 580 first; CONFIG swaps them.
    const first = `${s.dir}/first.yaml`;
    await Deno.writeTextFile(
      first,
      CONFIG.replace("win10:", "x:").replace("gentoo:", "win10:").replace("x:", "gentoo:"),
    );
    const setup = await runCli(
      ["apply", ...s.args, "--config", first, "--state-dir", s.stateDir, "--yes"],
    );
    assertEquals(setup.code, 0, setup.stderr + setup.stdout);
    assertEquals(pciSources(s.xml("gentoo")), ["0000:21:00.0", "0000:21:00.1"]);
    const gentooBackups = `${s.stateDir}/backups/gentoo`;
    const before = [...Deno.readDirSync(gentooBackups)].length;
    const child = spawnCli(["apply", ...s.args, "--state-dir", s.stateDir, "--yes"]);
    const output = child.output();
    // win10 is defined first; gentoo's backup being written is the moment between the two
    // defines, when win10 holds the GTX 1080 that gentoo still holds too.
    for (let i = 0; i < 20_000; i++) {
      if ([...Deno.readDirSync(gentooBackups)].length > before) break;
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    child.kill("SIGTERM");
    const { code, stdout, stderr } = await output;
    const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
    // Killed there, it left "0000:21:00.0" in both definitions and said nothing.
    assertEquals(
      [pciSources(s.xml("win10")), pciSources(s.xml("gentoo"))],
      [["0000:21:00.0", "0000:21:00.1"], ["0000:4c:00.0", "0000:4c:00.1"]],
      text,
    );
    assertEquals(code, 143, text);
    assertMatch(text, /changed win10/);
    assertMatch(text, /changed gentoo/);
    assertMatch(text, /passthrough apply: stopped by SIGTERM: /);
  },
});

Deno.test({
  name:
    "Ctrl-C at apply's second question stops there and reports the VM applied before it, exit 130",
  ignore: unavailable !== null || !hasScript(),
  async fn() {
    await using s = await scene();
    await using pty = runCliOnPty(["apply", ...s.args, "--state-dir", s.stateDir]);
    await pty.waitFor(/Apply the changes to "win10"\? \[y\/N\/a\/q\]/);
    await pty.type("y\n");
    await pty.waitFor(/Apply the changes to "gentoo"\? \[y\/N\/a\/q\]/);
    await pty.type("\x03");
    // Killed there, it printed nothing of win10's define, which had been made.
    const { code, screen } = await pty.exited(20_000);
    assertMatch(screen, /changed win10 \(\+2 -0 hostdevs\)/);
    assertMatch(screen, /skipped gentoo: Quit/);
    assertMatch(screen, /passthrough apply: stopped by SIGINT: /);
    assertEquals(code, 130, screen);
    assertEquals(pciSources(s.xml("win10")), ["0000:21:00.0", "0000:21:00.1"]);
    assertEquals(pciSources(s.xml("gentoo")), []);
  },
});

Deno.test({
  name: "rollback --yes stopped by SIGTERM during its define finishes it, reports it and exits 143",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    const original = s.xml("win10");
    const apply = await runCli(["apply", ...s.args, "--state-dir", s.stateDir, "--yes"]);
    assertEquals(apply.code, 0, apply.stderr + apply.stdout);
    // The SIGTERM is sent while the define's reply is held back: the define is made, and the
    // rollback is waiting for it.
    const pidFile = `${s.dir}/rollback.pid`;
    await using hook = await startRpcHook({
      socket: `${s.daemon.dir}/libvirt-sock`,
      dir: s.daemon.dir,
      proc: PROC_DOMAIN_DEFINE_XML_FLAGS,
      command: ["sh", "-c", `kill -TERM "$(cat '${pidFile}')"`],
    });
    const child = spawnCli(
      ["rollback", "win10", "--state-dir", s.stateDir, "--connect", hook.uri, "--yes"],
    );
    await Deno.writeTextFile(pidFile, String(child.pid));
    const { code, stdout, stderr } = await child.output();
    const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
    assertMatch(await hook.ran, /^ran 0 /);
    // Killed there, it printed nothing of whether the VM was restored.
    assertMatch(text, /Restored "win10" from backup /);
    assertMatch(text, /passthrough rollback: stopped by SIGTERM: /);
    assertEquals(code, 143, text);
    assertEquals(s.xml("win10"), original);
  },
});

/**
 * A libvirt URI whose `ext` transport runs a tunnel (as `qemu+ssh://` runs ssh) to the socket of
 * `hook`, in the caller's process group: a Ctrl-C ends it as it ends ssh.
 */
async function tunnelUri(dir: string, hook: { uri: string }): Promise<string> {
  const socket = hook.uri.slice(hook.uri.indexOf("socket=") + "socket=".length);
  await Deno.writeTextFile(
    `${dir}/tunnel.ts`,
    `const conn = await Deno.connect({ transport: "unix", path: ${JSON.stringify(socket)} });\n` +
      "await Promise.race([Deno.stdin.readable.pipeTo(conn.writable), " +
      "conn.readable.pipeTo(Deno.stdout.writable)]);\n",
  );
  await Deno.writeTextFile(
    `${dir}/tunnel`,
    `#!/bin/sh\nexec '${Deno.execPath()}' run --quiet -A '${dir}/tunnel.ts'\n`,
    { mode: 0o755 },
  );
  return `qemu+ext:///system?command=${dir}/tunnel`;
}

Deno.test({
  name:
    "Ctrl-C during a define over a tunnelled connection says the tunnel ended with it and how to stop apply or rollback alone",
  ignore: unavailable !== null || !hasScript(),
  async fn() {
    await using s = await scene();
    const original = s.xml("win10");
    // What the terminal does at Ctrl-C: SIGINT to its foreground process group (the command and
    // the tunnel libvirt runs for it), sent while the define's reply is held back.
    const pgFile = `${s.dir}/pgid`;
    const ctrlC = ["sh", "-c", `kill -INT -"$(cat '${pgFile}')"`];
    const run = async (command: string[], hook: { uri: string }) => {
      const uri = await tunnelUri(s.dir, hook);
      const args = [...command, "--connect", uri, "--allow-uri-programs", "--yes"];
      await using pty = runCliOnPty(args, { shell: `echo $$ > '${pgFile}'` });
      return await pty.exited(30_000);
    };
    {
      await using hook = await startRpcHook({
        socket: `${s.daemon.dir}/libvirt-sock`,
        dir: s.daemon.dir,
        proc: PROC_DOMAIN_DEFINE_XML_FLAGS,
        command: ctrlC,
      });
      const apply = ["apply", ...s.args.slice(0, 4), "--vm", "win10", "--state-dir", s.stateDir];
      const { code, screen } = await run(apply, hook);
      assertEquals(code, 130, screen);
      assertMatch(await hook.ran, /^ran 0 /);
      // The define was made; the closed connection could not tell.
      assertEquals(pciSources(s.xml("win10")), ["0000:21:00.0", "0000:21:00.1"]);
      assertMatch(screen, /FAILED win10: The define of "win10" may or may not have taken effect/);
      // It said nothing of why the connection closed under the define.
      assertMatch(
        screen,
        /passthrough apply: the Ctrl-C also ended the program of the ext transport libvirt runs for "qemu\+ext:\/\/\/system\?command=[^"]*tunnel", which closed the connection: what failed above may have been defined even so, as its line says; to stop apply over ext and let it finish the VM it is defining, send SIGTERM to its process alone \(kill PID\)/,
      );
    }
    {
      await using hook = await startRpcHook({
        socket: `${s.daemon.dir}/libvirt-sock`,
        dir: s.daemon.dir,
        proc: PROC_DOMAIN_DEFINE_XML_FLAGS,
        command: ctrlC,
      });
      const { code, screen } = await run(["rollback", "win10", "--state-dir", s.stateDir], hook);
      assertEquals(code, 130, screen);
      assertMatch(await hook.ran, /^ran 0 /);
      assertEquals(s.xml("win10"), original);
      assertMatch(
        screen,
        /passthrough rollback: the Ctrl-C also ended the program of the ext transport libvirt runs for "[^"]*", which closed the connection: .*; to stop rollback over ext and let it finish its define, send SIGTERM/,
      );
    }
  },
});

Deno.test({
  name:
    "Ctrl-C during the read-back of a define over a tunnelled connection says the tunnel ended with it",
  ignore: unavailable !== null || !hasScript(),
  async fn() {
    await using s = await scene();
    const pgFile = `${s.dir}/pgid`;
    const ctrlC = ["sh", "-c", `kill -INT -"$(cat '${pgFile}')"`];
    const run = async (command: string[]) => {
      // The define's reply passes: the Ctrl-C comes while the definition is read back.
      await using hook = await startRpcHook({
        socket: `${s.daemon.dir}/libvirt-sock`,
        dir: s.daemon.dir,
        proc: PROC_DOMAIN_GET_XML_DESC,
        after: PROC_DOMAIN_DEFINE_XML_FLAGS,
        command: ctrlC,
      });
      const uri = await tunnelUri(s.dir, hook);
      const args = [...command, "--connect", uri, "--allow-uri-programs", "--yes"];
      await using pty = runCliOnPty(args, { shell: `echo $$ > '${pgFile}'` });
      const out = await pty.exited(30_000);
      assertMatch(await hook.ran, /^ran 0 /);
      return out;
    };
    const apply = ["apply", ...s.args.slice(0, 4), "--vm", "win10", "--state-dir", s.stateDir];
    const applied = await run(apply);
    assertEquals(applied.code, 130, applied.screen);
    assertEquals(pciSources(s.xml("win10")), ["0000:21:00.0", "0000:21:00.1"]);
    assertMatch(
      applied.screen,
      /FAILED win10: The new definition of "win10" was defined but could not be read back/,
    );
    // Only "stopped by SIGINT" followed: not why the connection closed, nor how to stop alone.
    assertMatch(
      applied.screen,
      /passthrough apply: the Ctrl-C also ended the program of the ext transport libvirt runs for "[^"]*", which closed the connection: what failed above may have been defined even so/,
    );
    const rolled = await run(["rollback", "win10", "--state-dir", s.stateDir]);
    assertEquals(rolled.code, 130, rolled.screen);
    assertMatch(
      rolled.screen,
      /passthrough rollback: the Ctrl-C also ended the program of the ext transport libvirt runs for "[^"]*", which closed the connection: /,
    );
  },
});

Deno.test({
  name: "Ctrl-C at rollback's question restores nothing, says so, exit 130",
  ignore: unavailable !== null || !hasScript(),
  async fn() {
    await using s = await scene();
    const apply = await runCli(["apply", ...s.args, "--state-dir", s.stateDir, "--yes"]);
    assertEquals(apply.code, 0, apply.stderr + apply.stdout);
    const applied = s.xml("win10");
    await using pty = runCliOnPty(
      ["rollback", "win10", "--state-dir", s.stateDir, "--connect", s.daemon.uri],
    );
    await pty.waitFor(/Restore "win10" from this backup\? \[y\/N\]/);
    await pty.type("\x03");
    const { code, screen } = await pty.exited(20_000);
    assertMatch(screen, /Rollback of "win10" declined/);
    assertMatch(screen, /passthrough rollback: stopped by SIGINT: /);
    assertEquals(code, 130, screen);
    assertEquals(s.xml("win10"), applied);
  },
});

Deno.test({
  name:
    "a renamed rule's guard: enforce in a warn VM holds for its recorded devices while its VM is not applied (--vm), and goes with the old name once it is",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    const config = (rule: string) => ruleConfig("    guard: warn\n", rule);
    await appliedConfig(s, config("gtx1080"));
    assertEquals(gpuPolicy(s), ["gtx1080", "enforce"]);

    // Renamed, and only gentoo applied: win10's records still name "gtx1080".
    const limited = await appliedConfig(s, config("gpu"), "--vm", "gentoo");
    assertEquals(gpuPolicy(s), ["gtx1080", "enforce"]);
    assertMatch(limited.stdout, /"win10" warn, rule "gpu" enforce, rule "gtx1080" enforce/);

    // win10 applied: its records name "gpu", and the old name's policy is gone.
    await appliedConfig(s, config("gpu"));
    assertEquals(gpuPolicy(s), ["gpu", "enforce"]);
    assertEquals(readVmPolicy(s.stateDir, "win10").policy.rules, { gpu: "enforce" });
  },
});

Deno.test({
  name:
    "a VM dropped from a config that names no VM keeps its devices and its guard policies; released, it loses both",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    await appliedConfig(s, WARN_WIN10);
    assertEquals(readVmPolicy(s.stateDir, "win10").policy.guard, "warn");

    // Emptied: refused, nothing released, so the guard judges win10's GPU as before.
    const emptied = await applyConfig(s, "version: 1\nvms: {}\n");
    assertEquals(emptied.code, 1, emptied.stderr + emptied.stdout);
    assertMatch(emptied.stdout, /refused \[vm-not-in-config\] VM "win10"/);
    assertEquals(win10Guarded(s), [["0000:21:00.0", "0000:21:00.1"], "warn"]);

    // Released (another VM named): its devices and its policies go.
    await appliedConfig(s, GENTOO_ONLY);
    assertEquals(win10Guarded(s), [[], "enforce"]);
  },
});

Deno.test({
  name:
    "a VM dropped from the config keeps its guard policies while apply --vm naming another leaves its devices; released, it loses both",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    await appliedConfig(s, WARN_WIN10);

    // --vm gentoo: win10 is not planned, so its devices stay, and so does its policy.
    await appliedConfig(s, GENTOO_ONLY, "--vm", "gentoo");
    assertEquals(win10Guarded(s), [["0000:21:00.0", "0000:21:00.1"], "warn"]);

    // Every VM planned: win10's devices are released, and its policy goes with them.
    await appliedConfig(s, GENTOO_ONLY);
    assertEquals(win10Guarded(s), [[], "enforce"]);
  },
});

Deno.test({
  name:
    "a renamed rule's devices keep the enforce their VM gave them when it turns warn, and names no record holds do not pile up",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    // win10 enforces (no file entry at all): its GPU is enforced as rule "gtx1080"'s.
    await appliedConfig(s, ruleConfig("", "gtx1080"));
    assertEquals(gpuPolicy(s), ["gtx1080", "enforce"]);

    // Renamed "gpu", still enforce, in a VM now warn; only gentoo applied: the record still
    // names "gtx1080", which had the VM's enforce.
    await appliedConfig(s, ruleConfig("    guard: warn\n", "gpu"), "--vm", "gentoo");
    assertEquals(gpuPolicy(s), ["gtx1080", "enforce"]);

    // Renamed again before win10 is applied: "gpu" was never recorded, and is not kept.
    await appliedConfig(s, ruleConfig("    guard: warn\n", "graphics"), "--vm", "gentoo");
    assertEquals(gpuPolicy(s), ["gtx1080", "enforce"]);
    assertEquals(readVmPolicy(s.stateDir, "win10").policy.rules, {
      graphics: "enforce",
      gtx1080: "enforce",
    });
  },
});

Deno.test({
  name:
    "a rule's guard loosened waits for its VM to be applied (--vm naming another keeps enforce), and a plain apply settles it",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    await appliedConfig(s, CONFIG);
    assertEquals(gpuPolicy(s), ["gtx1080", "enforce"]);
    const loosened = CONFIG.replace(
      '"10de:1b80" }\n',
      '"10de:1b80" }\n        guard: warn\n',
    );
    // win10 not applied: its record's name may now be another rule's, so it stays strict.
    await appliedConfig(s, loosened, "--vm", "gentoo");
    assertEquals(gpuPolicy(s), ["gtx1080", "enforce"]);
    // A change of policy alone plans no change for win10: applied, its warn holds.
    await appliedConfig(s, loosened);
    assertEquals(gpuPolicy(s), ["gtx1080", "warn"]);
  },
});

Deno.test({
  name:
    "a VM dropped from the config whose release is declined keeps its devices and its guard policies, its off as warn",
  ignore: unavailable !== null,
  async fn() {
    await using s = await scene();
    await appliedConfig(s, CONFIG.replace("  win10:\n", "  win10:\n    guard: off\n"));
    assertEquals(readVmPolicy(s.stateDir, "win10").policy.guard, "off");

    await Deno.writeTextFile(`${s.dir}/passthrough_config.yaml`, GENTOO_ONLY);
    {
      await using pty = runCliOnPty(["apply", ...s.args, "--state-dir", s.stateDir]);
      await pty.waitFor(/Apply the changes to "win10"\?/);
      await pty.type("n\n");
      const { code, screen } = await pty.finish();
      assertEquals(code, 0, screen);
    }
    assertEquals(win10Guarded(s), [["0000:21:00.0", "0000:21:00.1"], "warn"]);
  },
});

Deno.test({
  name:
    "a VM undefined and another defined under its name does not inherit its recorded guard: off until apply records it",
  ignore: unavailable !== null || !hasVirsh(),
  async fn() {
    await using s = await scene();
    await appliedConfig(s, CONFIG.replace("  win10:\n", "  win10:\n    guard: off\n"));
    const before = parseDomainXml(s.xml("win10")).uuid;
    assertEquals(
      readVmPolicy(s.stateDir, "win10", before, { connection: lockUri(s.daemon.uri) }).policy
        .guard,
      "off",
    );
    // Someone with libvirt access replaces win10 by a VM of their own with the host's device.
    const virsh = (...args: string[]) =>
      new Deno.Command("/usr/bin/virsh", { args: ["-c", s.daemon.uri, ...args], stdout: "null" })
        .outputSync();
    assertEquals(virsh("undefine", "win10").code, 0);
    const other = qemuDomain("win10", "0b5c8b0e-3a55-4bd6-9a0c-5c4f5d7e2f11").replace(
      "  <devices>\n",
      "  <devices>\n    <hostdev mode='subsystem' type='pci' managed='yes'><source>" +
        "<address domain='0x0000' bus='0x7f' slot='0x1f' function='0x7'/></source></hostdev>\n",
    );
    {
      using conn = Connection.open(s.daemon.uri);
      conn.defineDomain(other).free();
    }
    const start = () =>
      runGuard({
        vm: "win10",
        operation: "prepare",
        subOperation: "begin",
        xml: s.xml("win10"),
        reader: denoFsReader(),
        root: `${s.dir}/sysfs`,
        live: false,
        stateDir: s.stateDir,
        // Recorded over the private daemon, whose starts this check stands for.
        connection: lockUri(s.daemon.uri),
      });
    // Before: the old win10's off checked nothing, and the start went on.
    const refused = await start();
    assertEquals(refused.code, 1, refused.lines.join("\n"));
    assertMatch(
      refused.lines.join("\n"),
      new RegExp(
        `the guard policies recorded for "win10" are for the VM of UUID ${before}, not this one ` +
          `\\(0b5c8b0e-3a55-4bd6-9a0c-5c4f5d7e2f11\\): they do not count, every device is checked ` +
          `as "enforce"; "passthrough apply --vm win10" records them for it`,
      ),
    );
    // An apply of another VM leaves them bound to the old one; one of win10 binds them to it.
    await appliedConfig(
      s,
      CONFIG.replace("  win10:\n", "  win10:\n    guard: off\n"),
      "--vm",
      "gentoo",
    );
    assertEquals((await start()).code, 1);
    await appliedConfig(s, CONFIG.replace("  win10:\n", "  win10:\n    guard: off\n"));
    assertEquals((await start()).code, 0);
  },
});

function hasVirsh(): boolean {
  try {
    return Deno.statSync("/usr/bin/virsh").isFile;
  } catch {
    return false;
  }
}

/** `runGuard` at `vm`'s start as the hook runs it, on `xml` (its definition by default). */
function startOf(s: Scene, vm: string, xml = s.xml(vm)) {
  return runGuard({
    vm,
    operation: "prepare",
    subOperation: "begin",
    xml,
    reader: denoFsReader(),
    root: `${s.dir}/sysfs`,
    live: false,
    stateDir: s.stateDir,
    // Recorded over the private daemon, whose starts this check stands for.
    connection: lockUri(s.daemon.uri),
  });
}

/** `xml` with a hand-added hostdev of a device the host does not have: what enforce refuses. */
function withGoneDevice(xml: string): string {
  return xml.replace(
    "<devices>\n",
    "<devices>\n<hostdev mode='subsystem' type='pci' managed='yes'><source>" +
      "<address domain='0x0000' bus='0x7f' slot='0x1f' function='0x7'/></source></hostdev>\n",
  );
}

Deno.test({
  name:
    "a VM's new guard policy holds from its define on: enforce over an old off while apply asks about the next VM, off over an old enforce only once defined",
  ignore: unavailable !== null || !hasScript(),
  async fn() {
    await using s = await scene();
    const OFF = CONFIG.replace("  win10:\n", "  win10:\n    guard: off\n");
    // The old config's off recorded for win10 (bound to it), neither VM changed yet.
    await appliedConfig(s, OFF, "--vm", "gentoo");
    assertEquals((await rollbackYes(s, "gentoo")).code, 0);
    assertEquals(readVmPolicy(s.stateDir, "win10").policy.guard, "off");
    allowNextStart(s.stateDir, "gentoo", { uuid: parseDomainXml(s.xml("gentoo")).uuid! });
    {
      await Deno.writeTextFile(`${s.dir}/passthrough_config.yaml`, CONFIG);
      await using pty = runCliOnPty(["apply", ...s.args, "--state-dir", s.stateDir]);
      await pty.waitFor(/Apply the changes to "win10"\?/);
      await pty.type("y\n");
      await pty.waitFor(/Apply the changes to "gentoo"\?/);
      // win10 is defined with the new config's devices: its start is judged by its new enforce.
      assertEquals(pciSources(s.xml("win10")), ["0000:21:00.0", "0000:21:00.1"]);
      const started = await startOf(s, "win10", withGoneDevice(s.xml("win10")));
      assertEquals(started.code, 1, started.lines.join("\n"));
      await pty.type("n\n");
      const { code, screen } = await pty.finish();
      assertEquals(code, 0, screen);
    }
    assertEquals(readVmPolicy(s.stateDir, "win10").policy.guard, "enforce");
    // The records written while it ran leave the allowance and the refusal record as they were.
    assertOk(allowanceFile(s.stateDir, "gentoo") !== null);
    assertEquals(readRefusalRecords(s.stateDir).map((r) => [r.vm, r.allowed]), [["win10", false]]);
    assertEquals((await rollbackYes(s, "win10")).code, 0);
    {
      // The reverse: off replaces enforce once win10 is defined, not before its answer.
      await Deno.writeTextFile(`${s.dir}/passthrough_config.yaml`, OFF);
      await using pty = runCliOnPty(["apply", ...s.args, "--state-dir", s.stateDir]);
      await pty.waitFor(/Apply the changes to "win10"\?/);
      assertEquals(readVmPolicy(s.stateDir, "win10").policy.guard, "enforce");
      await pty.type("y\n");
      await pty.waitFor(/Apply the changes to "gentoo"\?/);
      const started = await startOf(s, "win10", withGoneDevice(s.xml("win10")));
      assertEquals(started.code, 0, started.lines.join("\n"));
      await pty.type("q\n");
      const { code, screen } = await pty.finish();
      assertEquals(code, 0, screen);
      assertMatch(screen, /Start guard policies recorded in .*: "win10" off\r?\n/);
    }
  },
});

Deno.test({
  name:
    "apply killed (SIGKILL) right as a VM's define lands leaves its start judged by the stricter of its old off and new enforce",
  ignore: unavailable !== null || !hasScript(),
  async fn() {
    await using s = await scene();
    const OFF = CONFIG.replace("  win10:\n", "  win10:\n    guard: off\n");
    await appliedConfig(s, OFF, "--vm", "gentoo");
    assertEquals(readVmPolicy(s.stateDir, "win10").policy.guard, "off");
    await Deno.writeTextFile(`${s.dir}/passthrough_config.yaml`, CONFIG);
    // The define's reply is held back while apply is killed: the define is made, nothing after it.
    const pidFile = `${s.dir}/apply.pid`;
    await using hook = await startRpcHook({
      socket: `${s.daemon.dir}/libvirt-sock`,
      dir: s.daemon.dir,
      proc: PROC_DOMAIN_DEFINE_XML_FLAGS,
      command: ["sh", "-c", `kill -KILL "$(cat '${pidFile}')"`],
    });
    const args = s.args.map((a) => a === s.daemon.uri ? hook.uri : a);
    const child = spawnCli(["apply", ...args, "--vm", "win10", "--state-dir", s.stateDir, "--yes"]);
    await Deno.writeTextFile(pidFile, String(child.pid));
    const { code } = await child.output();
    assertMatch(await hook.ran, /^ran 0 /);
    assertEquals(code, 137);
    assertEquals(pciSources(s.xml("win10")), ["0000:21:00.0", "0000:21:00.1"]);
    // Neither the old off nor the new enforce alone: the stricter, enforce.
    assertEquals(readVmPolicy(s.stateDir, "win10").policy.guard, "enforce");
    const started = await startOf(s, "win10", withGoneDevice(s.xml("win10")));
    assertEquals(started.code, 1, started.lines.join("\n"));
  },
});

Deno.test({
  name:
    "a VM found unchanged is judged by its new guard policy while apply asks about the next VM, not by its old off",
  ignore: unavailable !== null || !hasScript(),
  async fn() {
    await using s = await scene();
    const OFF = CONFIG.replace("  win10:\n", "  win10:\n    guard: off\n");
    // Both VMs applied under the old config, win10 off; gentoo back to its old devices.
    await appliedConfig(s, OFF);
    assertEquals((await rollbackYes(s, "gentoo")).code, 0);
    assertEquals(readVmPolicy(s.stateDir, "win10").policy.guard, "off");
    await Deno.writeTextFile(`${s.dir}/passthrough_config.yaml`, CONFIG);
    await using pty = runCliOnPty(["apply", ...s.args, "--state-dir", s.stateDir]);
    // win10's definition is the new config's already: it is not asked about.
    await pty.waitFor(/Apply the changes to "gentoo"\?/);
    assertEquals(readVmPolicy(s.stateDir, "win10").policy.guard, "enforce");
    const started = await startOf(s, "win10", withGoneDevice(s.xml("win10")));
    assertEquals(started.code, 1, started.lines.join("\n"));
    await pty.type("n\n");
    const { code, screen } = await pty.finish();
    assertEquals(code, 0, screen);
    assertMatch(screen, /Start guard policies removed from .*: every VM enforces\r?\n/);
  },
});
