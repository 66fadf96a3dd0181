/**
 * The daily loop through the real CLI: which config `plan` reads when none is named (issue 16: a
 * missing one is one line naming every path tried), and the start guard's refusals shown by
 * `plan` (issue 13).
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import {
  canUnshareMounts,
  cliCommand,
  documentedFlags,
  openToAll,
  runCli,
  runInPrivateMounts,
} from "../helpers/cli.ts";
import { shellQuote } from "../../lib/render/shell.ts";
import { installHook, renderHookScript } from "../../lib/guard/hook_file.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { recordPolicies, recordRefusals } from "../../lib/guard/state.ts";
import { guardStartOnTree } from "../helpers/guard_run.ts";
import { lockUri } from "../../lib/state/lock.ts";
import {
  asSystemDaemon,
  type Libvirtd,
  libvirtdUnavailable,
  relayedRemoteUri,
  startDemoDaemon,
} from "../helpers/libvirtd.ts";

const DEMO = new URL("../../demo/", import.meta.url).pathname;
const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test("plan without a config names the paths it tried, in one line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-config-paths-" });
  try {
    const result = await runCli(["plan"], { cwd: dir });
    assertEquals(result.code, 1);
    assertEquals(result.stdout, "");
    assertEquals(result.stderr.trimEnd().split("\n").length, 1);
    assertMatch(
      result.stderr,
      /tried passthrough_config\.yaml \(current directory\), \/etc\/passthrough\/passthrough_config\.yaml \(host config\): name one with --config FILE or \$PASSTHROUGH_CONFIG/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("plan names the environment variable when the file it names is missing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-config-paths-" });
  try {
    const result = await runCli(["plan"], {
      cwd: dir,
      env: { PASSTHROUGH_CONFIG: `${dir}/nowhere.yaml` },
    });
    assertEquals(result.code, 1);
    assertMatch(result.stderr, /tried .*nowhere\.yaml \(\$PASSTHROUGH_CONFIG\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The refusal the guard records when `vm`'s recorded GPU address holds an NVMe drive. */
function recordMovedCardRefusal(stateDir: string, vm = "win10"): void {
  recordRefusals(stateDir, vm, [{
    vm,
    kind: "replaced",
    address: "0000:21:00.0",
    element: "hostdev",
    now: null,
    recorded: null,
    hostNeeds: null,
    reason: "hostdev 0000:21:00.0 now holds 144d:a808 (recorded 10de:1b80)",
    fix: `passthrough plan --vm ${vm}`,
  }], { allowed: false, now: new Date("2026-12-01T10:00:00.000Z") });
}

Deno.test("plan shows the start guard's recorded refusal under its VM, first", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "passthrough-guard-plan-" }));
  try {
    buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
    recordMovedCardRefusal(`${dir}/state`);
    // gentoo, which runs, has a warning of its own: the guard's comes before it.
    recordMovedCardRefusal(`${dir}/state`, "gentoo");
    const args = ["plan", "--config", `${DEMO}passthrough_config.yaml`, "--sysfs", `${dir}/sysfs`];
    const result = await runCli([...args, "--connect", `test://${DEMO}world.xml`], {
      env: { PASSTHROUGH_STATE_DIR: `${dir}/state` },
    });
    assertEquals(result.code, 0, result.stderr);
    const lines = result.stdout.split("\n");
    const at = lines.findIndex((l) => l.includes("[guard-refused]"));
    assertMatch(
      lines[at] ?? "",
      /^ {2}warning \[guard-refused\] The start guard checked "win10" at 2026-12-01T10:00:00\.000Z and refused it: hostdev 0000:21:00\.0 now holds 144d:a808/,
    );
    // win10's definition names no such address now (an apply since, after a move, fixed it): the
    // refusal is history, which the warning says rather than read as a start refused still.
    assertMatch(lines[at] ?? "", /; the definition of "win10" names none of them now$/);
    // Under win10, before gentoo's section.
    const win10 = lines.indexOf("VM win10 (shut off)");
    const gentoo = lines.findIndex((l) => l.startsWith("VM gentoo"));
    assertEquals(win10 < at && at < gentoo, true);
    const gentooWarnings = lines.slice(gentoo).filter((l) => l.startsWith("  warning ["));
    assertMatch(gentooWarnings[0] ?? "", /^ {2}warning \[guard-refused\] .*"gentoo"/);
    assertMatch(gentooWarnings[1] ?? "", /^ {2}warning \[vm-running\]/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The hook root installed, as libvirt would run it (it reads `DIR/hookstate`), in `DIR/hooks`. */
function installRootHook(dir: string): void {
  installHook(
    `${dir}/hooks/qemu.d`,
    renderHookScript({
      version: "0.1.0",
      deadline: 10,
      timeout: "/usr/bin/timeout",
      command: ["/bin/false"],
      env: {},
      stateDir: `${dir}/hookstate`,
      sysfs: "/sys",
    }),
  );
}

/**
 * Runs `command` in a private mount namespace whose /etc/libvirt/hooks is `DIR/hooks`, and whose
 * system daemon (`qemu:///system`) is `daemon` when given.
 */
async function inHooksNamespace(
  dir: string,
  command: string[],
  env: Record<string, string>,
  daemon?: Libvirtd,
): Promise<{ code: number; stdout: string; stderr: string }> {
  await Deno.mkdir("/etc/libvirt/hooks", { recursive: true });
  const system = daemon === undefined ? "" : ` && ${asSystemDaemon(daemon).setup}`;
  return await runInPrivateMounts(
    `mount --bind ${shellQuote(`${dir}/hooks`)} /etc/libvirt/hooks${system}`,
    command,
    env,
  );
}

Deno.test({
  name: "plan and apply use the installed hook's state directory: its refusals, its policies",
  ignore: !canUnshareMounts() || libvirtdUnavailable() !== null,
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "passthrough-guard-dir-" }));
    await using daemon = await startDemoDaemon();
    try {
      buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
      // The hook libvirt would run, in a private copy of /etc/libvirt/hooks; it reads hookstate.
      installRootHook(dir);
      recordMovedCardRefusal(`${dir}/hookstate`);
      const config = `${dir}/config.yaml`;
      Deno.writeTextFileSync(
        config,
        Deno.readTextFileSync(`${DEMO}passthrough_config.yaml`)
          .replace("  win10:\n", "  win10:\n    guard: warn\n"),
      );
      // Run as root would, with the hooks directory of its own; --state-dir names the backups.
      const run = (args: string[]) =>
        inHooksNamespace(
          dir,
          [
            ...cliCommand(),
            ...args,
            "--config",
            config,
            "--sysfs",
            `${dir}/sysfs`,
            "--connect",
            asSystemDaemon(daemon).uri,
          ],
          { NO_COLOR: "1", PASSTHROUGH_STATE_DIR: `${dir}/other` },
          daemon,
        );
      const plan = await run(["plan"]);
      assertEquals(plan.code, 0, plan.stderr);
      assertMatch(plan.stdout, /warning \[guard-refused\] The start guard checked "win10" at /);
      const applied = await run(["apply", "--yes", "--state-dir", `${dir}/backups`]);
      assertEquals(applied.code, 0, applied.stderr);
      assertMatch(applied.stdout, /\[guard-refused\]/);
      assertMatch(
        applied.stdout,
        new RegExp(
          `Start guard policies recorded in ${dir}/hookstate \\(the installed hook's state ` +
            `directory, not --state-dir\\): `,
        ),
      );
      assertEquals(Deno.statSync(`${dir}/hookstate/guard/policy.json`).isFile, true);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "apply on the test driver leaves the installed hook's policies alone: its world's go to --state-dir",
  ignore: !canUnshareMounts(),
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "passthrough-guard-test-" }));
    try {
      buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
      // The host's hook reads hookstate, where win10 starts with a warning.
      installRootHook(dir);
      recordPolicies(`${dir}/hookstate`, {
        version: 1,
        config: "host.yaml",
        vms: { win10: { guard: "warn", rules: {} } },
      });
      const before = Deno.readTextFileSync(`${dir}/hookstate/guard/policy.json`);
      const demo = Deno.readTextFileSync(`${DEMO}passthrough_config.yaml`);
      const apply = (config: string, state: string[], env: Record<string, string> = {}) => {
        Deno.writeTextFileSync(`${dir}/config.yaml`, config);
        return inHooksNamespace(dir, [
          ...cliCommand(),
          "apply",
          "--yes",
          ...state,
          "--config",
          `${dir}/config.yaml`,
          "--sysfs",
          `${dir}/sysfs`,
          "--connect",
          `test://${DEMO}world.xml`,
        ], { NO_COLOR: "1", ...env });
      };
      // A rehearsal without win10's policy: the host's win10 still warns (it enforced).
      const plain = await apply(demo, ["--state-dir", `${dir}/rehearsal`]);
      assertEquals(plain.code, 0, plain.stderr);
      assertEquals(Deno.readTextFileSync(`${dir}/hookstate/guard/policy.json`), before);
      // One with policies: recorded with the rehearsal's state, not where the hook reads.
      const off = demo.replace("  gentoo:\n", "  gentoo:\n    guard: off\n");
      const guarded = await apply(off, ["--state-dir", `${dir}/rehearsal`]);
      assertEquals(guarded.code, 0, guarded.stderr);
      assertMatch(
        guarded.stdout,
        new RegExp(`Start guard policies recorded in ${dir}/rehearsal: "gentoo" off\n`),
      );
      assertEquals(Deno.readTextFileSync(`${dir}/hookstate/guard/policy.json`), before);
      // Its state directory the hook's: not recorded, and said so.
      const there = await apply(off, [], { PASSTHROUGH_STATE_DIR: `${dir}/hookstate` });
      assertEquals(there.code, 0, there.stderr);
      assertMatch(
        there.stderr,
        /Note: start guard policies not recorded: the start guard guards the VMs of qemu:\/\/\/system, not those of "test:\/\/\//,
      );
      assertEquals(Deno.readTextFileSync(`${dir}/hookstate/guard/policy.json`), before);
      // Named another way (a trailing slash, a linked parent): still the hook's.
      Deno.symlinkSync(dir, `${dir}/alias`);
      for (const named of [`${dir}/hookstate/`, `${dir}/alias/hookstate`]) {
        const again = await apply(off, ["--state-dir", named]);
        assertEquals(again.code, 0, again.stderr);
        assertMatch(again.stderr, /Note: start guard policies not recorded: /);
        assertEquals(Deno.readTextFileSync(`${dir}/hookstate/guard/policy.json`), before);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "plan of another machine's libvirt shows none of this host's guard refusals, and says once where its are",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "passthrough-guard-plan-" }));
    await using daemon = await startDemoDaemon();
    try {
      // A tree captured on that machine, and this host's own guard state where plan reads it.
      buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
      recordMovedCardRefusal(`${dir}/state`);
      const uri = relayedRemoteUri(daemon, dir, "hv9.invalid");
      const plan = await runCli([
        "plan",
        "--config",
        `${DEMO}passthrough_config.yaml`,
        "--sysfs",
        `${dir}/sysfs`,
        "--connect",
        uri,
        "--allow-uri-programs",
      ], { env: { PASSTHROUGH_STATE_DIR: `${dir}/state` } });
      assertEquals(plan.code, 0, plan.stderr);
      // It showed this host's win10's refusal as the other machine's win10's.
      assertEquals(plan.stdout.includes("[guard-refused]"), false, plan.stdout);
      const notes = plan.stderr.split("\n").filter((line) => line.includes("start guard"));
      assertEquals(notes.length, 1, plan.stderr);
      assertMatch(
        notes[0]!,
        /^Note: the start guard's refusals and policies for the VMs of "qemu\+ext:\/\/hv9\.invalid\/system\?command=[^"]*" are on that machine, not shown here: /,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "apply to another machine's libvirt says once, with or without policies, that its guard state is on that machine",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "passthrough-guard-apply-" }));
    await using daemon = await startDemoDaemon();
    try {
      buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
      const uri = relayedRemoteUri(daemon, dir, "hv9.invalid");
      const demo = Deno.readTextFileSync(`${DEMO}passthrough_config.yaml`);
      // The demo's config records no policies; the second one does.
      for (const config of [demo, demo.replace("  gentoo:\n", "  gentoo:\n    guard: off\n")]) {
        Deno.writeTextFileSync(`${dir}/config.yaml`, config);
        const apply = await runCli([
          "apply",
          "--yes",
          "--config",
          `${dir}/config.yaml`,
          "--sysfs",
          `${dir}/sysfs`,
          "--connect",
          uri,
          "--allow-uri-programs",
          "--state-dir",
          `${dir}/state`,
        ]);
        assertEquals(apply.code, 0, apply.stderr);
        // Without policies it said nothing of the guard; with them, only that they were not recorded.
        const notes = apply.stderr.split("\n").filter((line) => line.includes("start guard"));
        assertEquals(notes.length, 1, apply.stderr);
        assertMatch(
          notes[0]!,
          /^Note: the start guard's refusals and policies for the VMs of "qemu\+ext:\/\/hv9\.invalid\/system\?command=[^"]*" are on that machine, neither shown nor recorded here: run passthrough apply there to record them$/,
        );
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "rollback over another machine's libvirt says before its question that the backup's PCI devices were checked against that libvirt's VMs only",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "passthrough-remote-rb-" }));
    await using daemon = await startDemoDaemon();
    try {
      buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
      const uri = relayedRemoteUri(daemon, dir, "hv9.invalid");
      const remote = ["--connect", uri, "--allow-uri-programs", "--state-dir", `${dir}/state`];
      const apply = await runCli([
        "apply",
        "--yes",
        "--config",
        `${DEMO}passthrough_config.yaml`,
        "--sysfs",
        `${dir}/sysfs`,
        ...remote,
      ]);
      assertEquals(apply.code, 0, apply.stderr);
      const rollback = () => runCli(["rollback", "win10", "--yes", ...remote]);
      // The first rollback takes win10's GPU away: nothing to say of it.
      const first = await rollback();
      assertEquals([first.code, first.stdout.includes("Warning")], [0, false], first.stdout);
      // The second gives it back: what this host cannot check there is said, with the diff.
      const second = await rollback();
      assertEquals(second.code, 0, second.stderr);
      const warnings = second.stdout.split("\n").filter((line) => line.startsWith("Warning"));
      assertEquals(warnings.length, 1, second.stdout);
      assertMatch(
        warnings[0]!,
        /^Warning: libvirt at "qemu\+ext:\/\/hv9\.invalid\/system\?command=[^"]*" is another machine: the backup gives "win10" 0000:21:00\.0, .*, checked only against the other VMs that libvirt defines, not against that host's IOMMU groups, SR-IOV functions or its own use of them/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "rollback judges a restore by the policies the installed hook reads, not --state-dir's",
  ignore: !canUnshareMounts() || libvirtdUnavailable() !== null,
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "passthrough-guard-back-" }));
    await using daemon = await startDemoDaemon();
    try {
      buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
      // The hook reads hookstate; --state-dir (the backups) is another directory.
      installRootHook(dir);
      const config = `${dir}/config.yaml`;
      const warn = Deno.readTextFileSync(`${DEMO}passthrough_config.yaml`)
        .replace("  win10:\n", "  win10:\n    guard: warn\n");
      const run = (args: string[]) =>
        inHooksNamespace(
          dir,
          [
            ...cliCommand(),
            ...args,
            "--connect",
            asSystemDaemon(daemon).uri,
            "--state-dir",
            `${dir}/backups`,
          ],
          { NO_COLOR: "1" },
          daemon,
        );
      const apply = (text: string) => {
        Deno.writeTextFileSync(config, text);
        return run([
          "apply",
          "--yes",
          "--vm",
          "win10",
          "--config",
          config,
          "--sysfs",
          `${dir}/sysfs`,
        ]);
      };
      // win10 given the demo host's cards (none of them on this host), then its USB rule dropped:
      // the backup holds the cards, which the start guard of this host finds missing.
      const first = await apply(warn);
      assertEquals(first.code, 0, `${first.stdout}${first.stderr}`);
      assertEquals(Deno.statSync(`${dir}/hookstate/guard/policy.json`).isFile, true);
      const second = await apply(warn.replace(/\n {6}- name: usb-rear\n[^\n]*\n/, "\n"));
      assertEquals(second.code, 0, `${second.stdout}${second.stderr}`);
      const back = await run(["rollback", "win10", "--yes"]);
      const out = `${back.stdout}${back.stderr}`;
      // The hook's "guard: warn" warns and goes on; it said the guard would refuse (enforce).
      assertMatch(
        out,
        /"win10" would not start as restored \(the start guard, by its policy, would warn and go on, and libvirt fails to find the device\)/,
      );
      assertEquals(out.includes("the start guard would refuse"), false, out);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "plan over the test driver shows its own state's refusals, not the installed hook's",
  ignore: !canUnshareMounts(),
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "passthrough-guard-plan-" }));
    try {
      buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
      // The host's hook refused its own win10, which the test world's win10 is not.
      installRootHook(dir);
      recordMovedCardRefusal(`${dir}/hookstate`);
      const plan = (env: Record<string, string>) =>
        inHooksNamespace(dir, [
          ...cliCommand(),
          "plan",
          "--config",
          `${DEMO}passthrough_config.yaml`,
          "--sysfs",
          `${dir}/sysfs`,
          "--connect",
          `test://${DEMO}world.xml`,
        ], { NO_COLOR: "1", ...env });
      const own = await plan({ PASSTHROUGH_STATE_DIR: `${dir}/rehearsal` });
      assertEquals(own.code, 0, own.stderr);
      assertEquals(own.stdout.includes("[guard-refused]"), false, own.stdout);
      // Its state directory the hook's: still the host's VMs' records, not the test world's.
      const there = await plan({ PASSTHROUGH_STATE_DIR: `${dir}/hookstate` });
      assertEquals(there.code, 0, there.stderr);
      assertEquals(there.stdout.includes("[guard-refused]"), false, there.stdout);
      // Its own state's refusals it shows.
      recordMovedCardRefusal(`${dir}/rehearsal`);
      const recorded = await plan({ PASSTHROUGH_STATE_DIR: `${dir}/rehearsal` });
      assertMatch(recorded.stdout, /warning \[guard-refused\] The start guard checked "win10" at /);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "apply whose guard policies cannot be written does not define the VM its old policy (off) would still judge, only the others",
  ignore: !canUnshareMounts(),
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "passthrough-guard-ro-" }));
    try {
      buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
      const demo = Deno.readTextFileSync(`${DEMO}passthrough_config.yaml`);
      const state = `${dir}/state`;
      const apply = (config: string, setup: string) => {
        Deno.writeTextFileSync(`${dir}/config.yaml`, config);
        return runInPrivateMounts(setup, [
          ...cliCommand(),
          "apply",
          "--yes",
          "--state-dir",
          state,
          "--config",
          `${dir}/config.yaml`,
          "--sysfs",
          `${dir}/sysfs`,
          "--connect",
          `test://${DEMO}world.xml`,
        ], { NO_COLOR: "1" });
      };
      // An earlier apply recorded win10's guard: off where its starts are judged.
      const off = await apply(demo.replace("  win10:\n", "  win10:\n    guard: off\n"), "true");
      assertEquals(off.code, 0, off.stderr);
      const before = Deno.readTextFileSync(`${state}/guard/policy.json`);
      // Now enforce, with the guard directory read-only: win10's off would judge its new devices.
      const guard = shellQuote(`${state}/guard`);
      const ro = await apply(
        demo,
        `mount --bind ${guard} ${guard} && mount -o remount,bind,ro ${guard}`,
      );
      assertEquals(ro.code, 1, ro.stderr);
      assertMatch(
        ro.stdout,
        /^skipped win10: Not applied: the start guard's policies could not be recorded in .*; make that directory writable and run passthrough apply again$/m,
      );
      // gentoo's policy (enforce) is the one the hook holds: defined.
      assertMatch(ro.stdout, /^changed gentoo /m);
      assertEquals(/^changed win10 /m.test(ro.stdout), false, ro.stdout);
      assertEquals(Deno.readTextFileSync(`${state}/guard/policy.json`), before);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "apply by another user than the hook's (a libvirt group member) does not fail on the hook's root-only state",
  ignore: !canUnshareMounts() || libvirtdUnavailable() !== null,
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "passthrough-guard-user-" }));
    // The system daemon's VMs, whose starts the hook guards.
    await using daemon = await startDemoDaemon();
    try {
      buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
      // The bundle bin/passthrough runs: it needs no npm cache, which this user has none of.
      const bundled = await new Deno.Command(`${ROOT}scripts/bundle_bin.sh`, {
        args: [`${dir}/bin`],
        stdout: "null",
        stderr: "piped",
      }).output();
      assertEquals(bundled.code, 0, new TextDecoder().decode(bundled.stderr));
      // Root's hook reads a state directory only root can read, holding a recorded policy.
      installRootHook(dir);
      await openToAll(dir);
      recordPolicies(`${dir}/hookstate`, {
        version: 1,
        config: "root.yaml",
        vms: { win10: { guard: "warn", rules: {} } },
      });
      await Deno.mkdir(`${dir}/user`, { mode: 0o700 });
      await Deno.chown(`${dir}/user`, 65534, 65534);
      const apply = async (config: string) => {
        Deno.writeTextFileSync(`${dir}/config.yaml`, config);
        await openToAll(`${dir}/config.yaml`);
        return await inHooksNamespace(
          dir,
          [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            Deno.execPath(),
            "run",
            "--quiet",
            "--cached-only",
            ...documentedFlags(),
            `${dir}/bin/main.js`,
            "apply",
            "--yes",
            "--state-dir",
            `${dir}/user/state`,
            "--config",
            `${dir}/config.yaml`,
            "--sysfs",
            `${dir}/sysfs`,
            "--connect",
            asSystemDaemon(daemon).uri,
          ],
          { NO_COLOR: "1", HOME: `${dir}/user`, DENO_DIR: `${dir}/user/deno` },
          daemon,
        );
      };
      const demo = Deno.readTextFileSync(`${DEMO}passthrough_config.yaml`);
      // Nothing to record: applied, with a note that the hook's policies went unchecked.
      const plain = await apply(demo);
      assertEquals(plain.code, 0, plain.stderr);
      assertMatch(
        plain.stderr,
        new RegExp(
          `Note: start guard policies not checked: the installed hook's state directory ` +
            `${dir}/hookstate is not this user's \\(.*\\); any policies recorded there still ` +
            `apply: run passthrough apply as root`,
        ),
      );
      // Something to record: that fails, and says where.
      const guarded = await apply(demo.replace("  win10:\n", "  win10:\n    guard: off\n"));
      assertEquals(guarded.code, 1, guarded.stderr);
      assertMatch(
        guarded.stderr,
        new RegExp(`Cannot record the start guard policies in ${dir}/hookstate`),
      );
      // Root's recorded policy is as it was.
      assertEquals(
        JSON.parse(Deno.readTextFileSync(`${dir}/hookstate/guard/policy.json`)).vms,
        { win10: { guard: "warn", rules: {} } },
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("plan says what the start guard does with a VM dropped from the config: the policy recorded for it", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "passthrough-guard-dropped-" }));
  try {
    buildHostTree(loadHostDescription(`${DEMO}host.json`), dir);
    // win10 as an apply left it (the GPU recorded), with a hostdev added by hand whose device is
    // gone (the test driver keeps no define from one process to the next).
    const world = Deno.readTextFileSync(`${DEMO}world.xml`).replace(
      "<description>Gaming VM: the GTX 1080 goes here</description>",
      `<description>Gaming VM</description>
    <metadata>
      <passthrough:hostdevs xmlns:passthrough='urn:passthrough:hostdevs:1' created='metadata'>
        <passthrough:device address='0000:21:00.0' vendor='10de' device='1b80' class='030000' driver='vfio-pci' rule='gtx1080'/>
      </passthrough:hostdevs>
    </metadata>`,
    ).replace(
      "<!-- A hand-added USB keyboard",
      `<hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='0x21' slot='0x00' function='0x0'/></source>
      </hostdev>
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='0xee' slot='0x00' function='0x0'/></source>
      </hostdev>
      <!-- A hand-added USB keyboard`,
    );
    Deno.writeTextFileSync(`${dir}/world.xml`, world);
    const demo = Deno.readTextFileSync(`${DEMO}passthrough_config.yaml`);
    Deno.writeTextFileSync(
      `${dir}/warn.yaml`,
      demo.replace("  win10:\n", "  win10:\n    guard: warn\n"),
    );
    // win10 taken out of the config: its devices stay until it is named with none.
    Deno.writeTextFileSync(`${dir}/dropped.yaml`, demo.replace(/ {2}win10:\n(?: {4}.*\n)*/, ""));
    const run = (args: string[], config: string) =>
      runCli([
        ...args,
        "--config",
        `${dir}/${config}`,
        "--sysfs",
        dir,
        "--connect",
        `test://${dir}/world.xml`,
      ], {
        env: { PASSTHROUGH_STATE_DIR: `${dir}/state` },
      });
    // An apply under "guard: warn", then one of gentoo only under the config without win10.
    await run(["apply", "--yes"], "warn.yaml");
    await run(["apply", "--yes", "--vm", "gentoo"], "dropped.yaml");
    const policies = JSON.parse(Deno.readTextFileSync(`${dir}/state/guard/policy.json`));
    assertEquals(policies.vms.win10.guard, "warn");
    const plan = await run(["plan"], "dropped.yaml");
    const missing = plan.stdout.split("\n").find((l) => l.includes("[hand-added-missing]"));
    assertMatch(
      missing ?? plan.stdout,
      /"win10" cannot start while it is missing \(its "guard: warn" has the start guard warn and go on, and libvirt fails to find the device\)/,
    );
    // As the guard does: it warns of the missing device and lets the start go on.
    const start = await guardStartOnTree({
      vm: "win10",
      xml: world.slice(world.indexOf("<domain"), world.indexOf("</domain>") + 9),
      dir,
      live: false,
      // The policies were recorded over the test world, whose starts this check stands for.
      connection: lockUri(`test://${dir}/world.xml`),
    });
    assertEquals([start.code, start.refusals.length > 0], [0, true]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
