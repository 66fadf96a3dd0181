import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { bundleAsTask, canUnshareMounts, runCli } from "../helpers/cli.ts";
import { shellQuote } from "../../lib/render/shell.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { libvirtdUnavailable, startLibvirtd, undefineUnlessIsolated } from "../helpers/libvirtd.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import { terminalSafe } from "../../lib/render/terminal.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const PLAYBOOK = `${ROOT}ansible/passthrough.yml`;
const TEST = "tests/cli/ansible_test.ts";
/** The playbook and the plugins Ansible finds beside it. */
const PLAYBOOK_FILES = [
  "passthrough.yml",
  "action_plugins/passthrough_diff.py",
  "filter_plugins/passthrough.py",
];
const HOSTS = new URL("../fixtures/hosts/", import.meta.url);

function which(program: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${program}`).isFile) return `${dir}/${program}`;
    } catch {
      // Not in this folder.
    }
  }
  return null;
}

/** Why the playbook cannot run here, or `null`. */
function ansibleUnavailable(): string | null {
  if (which("ansible-playbook") === null) return "ansible-playbook is not installed";
  if (Deno.uid() !== 0) return "needs root (a private libvirtd)";
  return libvirtdUnavailable();
}

async function run(
  program: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string }> {
  const output = await new Deno.Command(program, {
    args,
    // Ansible refuses to run in a locale that is not UTF-8 ("Detected None"), as a suite run
    // under LC_ALL=C would give it.
    env: { LC_ALL: "C.UTF-8", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: output.code, out: decode(output.stdout) + decode(output.stderr) };
}

/**
 * The playbook on the inventory `dir`/hosts, with `dir`'s bundle, guard and remote directory and
 * this Deno; `vars` add to those, `extra` goes before them, `env` adds to Ansible's; `wrapper`
 * runs ansible-playbook (with its arguments after its own).
 */
function playbookIn(
  dir: string,
  vars: Record<string, string>,
  extra: string[] = [],
  env: Record<string, string> = {},
  wrapper: string[] = [],
): Promise<{ code: number; out: string }> {
  const [program, ...args] = [...wrapper, "ansible-playbook"];
  return run(program!, [
    ...args,
    "-i",
    `${dir}/hosts`,
    PLAYBOOK,
    ...extra,
    "-e",
    JSON.stringify({
      passthrough_bundle: `${dir}/passthrough.js`,
      passthrough_guard: `${dir}/hook`,
      passthrough_deno: Deno.execPath(),
      passthrough_dir: `${dir}/remote`,
      ...vars,
    }),
  ], { ANSIBLE_NOCOLOR: "1", ANSIBLE_FORCE_COLOR: "0", ANSIBLE_LOCAL_TEMP: `${dir}/tmp`, ...env });
}

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

/** The status Ansible printed for the task named `task` on localhost (`ok`, `changed`, `fatal`). */
/** A VNC password in the VM's definition, which no output may show. */
const SECRET = "vnc7f3a9";

/** The part of `output` from the task's header to the next task's. */
function taskOutput(output: string, task: string): string {
  const at = output.indexOf(`TASK [${task}]`);
  if (at < 0) return "";
  const next = output.indexOf("TASK [", at + 1);
  return output.slice(at, next < 0 ? undefined : next);
}

/** The counts of a `PLAY RECAP` line of `host` in `output`, but `changed`. */
function recap(output: string, host: string): Record<string, number> | null {
  const line = new RegExp(`^${host} +: (.*)$`, "m").exec(output)?.[1];
  if (line === undefined) return null;
  const counts = [...line.matchAll(/(\w+)=(\d+)/g)].filter((m) => m[1] !== "changed");
  return Object.fromEntries(counts.map((m) => [m[1]!, Number(m[2])]));
}

/** docs/FLEET.md's "What a refusal looks like": its console sample. */
function fleetRefusalSample(): string {
  const doc = Deno.readTextFileSync(`${ROOT}docs/FLEET.md`);
  const at = doc.indexOf("```console", doc.indexOf("## What a refusal looks like"));
  return doc.slice(at, doc.indexOf("```\n", at + 1));
}

/** The tasks named in `output` from `TASK [first]` on, in order. */
function tasksFrom(output: string, first: string): string[] {
  const from = output.slice(output.indexOf(`TASK [${first}]`));
  return [...from.matchAll(/^TASK \[(.*)\]/gm)].map((m) => m[1]!);
}

function taskStatus(output: string, task: string): string | null {
  const at = output.indexOf(`TASK [${task}]`);
  if (at < 0) return null;
  const m = /\n(ok|changed|fatal|skipping): \[localhost\]/.exec(output.slice(at));
  return m?.[1] ?? null;
}

Deno.test({
  name: "the Ansible playbook passes ansible-lint",
  ignore: which("ansible-lint") === null,
  async fn() {
    // Its own config and cache: the user's would change which rules run.
    const home = await Deno.makeTempDir({ prefix: "passthrough-ansible-lint-" });
    try {
      const lint = await new Deno.Command("ansible-lint", {
        args: ["--nocolor", "--offline", "passthrough.yml"],
        cwd: `${ROOT}ansible`,
        env: { LC_ALL: "C.UTF-8", HOME: home, XDG_CACHE_HOME: `${home}/cache` },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = new TextDecoder().decode(lint.stdout) + new TextDecoder().decode(lint.stderr);
      assertEquals(lint.code, 0, out);
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the Ansible playbook applies this host's section once, shows the definitions' diffs under --diff, reports no change the second time, and fails a refusal",
  ignore: ansibleUnavailable() !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ansible-" });
    await using daemon = await startLibvirtd();
    const vm = `store-${crypto.randomUUID().slice(0, 8)}`;
    try {
      buildHostTree(
        loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS)),
        `${dir}/sysfs`,
      );
      {
        using port = openLibvirtPort(daemon.uri);
        port.define(`<domain type='qemu'>
  <name>${vm}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><graphics type='vnc' port='-1' autoport='yes' passwd='${SECRET}'/></devices>
</domain>`);
      }
      // The CLI and the start guard's check beside it, as `deno task bundle` writes them.
      await bundleAsTask(dir);
      // The fleet's shared config: this machine's section (picked by its host name) takes the
      // NVMe drive; the other host's rule would be refused here, but it is not this host's.
      const good = `${dir}/good.yaml`;
      await Deno.writeTextFile(
        good,
        `version: 1
hosts:
  ${Deno.hostname()}: {}
  elsewhere: {}
vms:
  ${vm}:
    devices:
      - { match: { class: nvme }, host: ${Deno.hostname()} }
      - { match: { vendor_device_id: "dead:beef" }, host: elsewhere }
`,
      );
      const refused = `${dir}/refused.yaml`;
      await Deno.writeTextFile(
        refused,
        // The rule's name holds a C1 control, which the CLI's JSON escapes and Ansible decodes.
        `version: 1\nvms:\n  ${vm}:\n    devices:\n      - name: "beef\\u009b2J"\n        match: { vendor_device_id: "dead:beef" }\n`,
      );
      // The host's settings in host_vars, as an operator keeps them (a play's own vars would
      // override these); the config named per run on the command line.
      await Deno.mkdir(`${dir}/inventory/host_vars`, { recursive: true });
      await Deno.writeTextFile(
        `${dir}/inventory/hosts`,
        "[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
      );
      await Deno.writeTextFile(
        `${dir}/inventory/host_vars/localhost.yml`,
        JSON.stringify({
          passthrough_bundle: `${dir}/passthrough.js`,
          passthrough_guard: `${dir}/hook`,
          passthrough_hooks_dir: `${dir}/hooks`,
          passthrough_deno: Deno.execPath(),
          passthrough_dir: `${dir}/remote`,
          passthrough_state_dir: `${dir}/state`,
          passthrough_connect: daemon.uri,
          passthrough_sysfs: `${dir}/sysfs`,
        }),
      );
      const playbook = (config: string, extra: string[] = [], book = PLAYBOOK) =>
        run("ansible-playbook", [
          "-i",
          `${dir}/inventory`,
          book,
          ...extra,
          "-e",
          JSON.stringify({ passthrough_config: config }),
        ], { ANSIBLE_NOCOLOR: "1", ANSIBLE_FORCE_COLOR: "0", ANSIBLE_LOCAL_TEMP: `${dir}/tmp` });

      // A host whose Deno is not the tested one fails before anything is copied to it.
      const otherDeno = await playbook(good, ["--check", "-e", "passthrough_deno_version=0.0.1"]);
      assertEquals(otherDeno.code, 2, otherDeno.out);
      assertEquals(taskStatus(otherDeno.out, "Passthrough Deno version check"), "fatal");
      assertMatch(
        otherDeno.out,
        new RegExp(
          `"this host runs Deno ${
            Deno.version.deno.replaceAll(".", "\\.")
          }; passthrough is tested with Deno 0\\.0\\.1 \\(passthrough_deno_version\\)`,
        ),
      );
      assertEquals(await exists(`${dir}/remote`), false);
      // A host's "deno --version" is quoted in that failure, its control characters escaped;
      // under -v too, where Ansible prints every command's output raw.
      const oddDeno = `${dir}/odd-deno`;
      await Deno.writeTextFile(
        oddDeno,
        "#!/bin/sh\nprintf '\\033]0;owned\\007\\302\\2332J deno-ish 1.0\\n'\n",
      );
      await Deno.chmod(oddDeno, 0o755);
      const odd = await playbook(good, ["--check", "-v", "-e", `passthrough_deno=${oddDeno}`]);
      assertEquals(odd.code, 2, odd.out);
      assertEquals(taskStatus(odd.out, "Passthrough Deno version check"), "fatal", odd.out);
      assertMatch(odd.out, /--version did not tell a Deno version \(.*2J deno-ish 1\.0\)/);
      assertEquals(
        // deno-lint-ignore no-control-regex
        /[\x07\x1b\u0080-\u009f]/.test(odd.out),
        false,
        "a control character reached the terminal",
      );
      // A Deno that cannot run says why on stderr, which the hidden task output no longer shows:
      // the check quotes it ("non-zero return code" alone said nothing).
      const brokenDeno = `${dir}/broken-deno`;
      await Deno.writeTextFile(
        brokenDeno,
        "#!/bin/sh\necho 'deno: error while loading shared libraries: libgcc_s.so.1' >&2\nexit 127\n",
      );
      await Deno.chmod(brokenDeno, 0o755);
      const broken = await playbook(good, ["--check", "-e", `passthrough_deno=${brokenDeno}`]);
      assertEquals(broken.code, 2, broken.out);
      assertMatch(
        broken.out,
        /did not tell a Deno version \(non-zero return code: deno: error while loading shared libraries: libgcc_s\.so\.1\)/,
      );
      // A copy of the playbook kept elsewhere (an operators' repository) has no pin beside it:
      // it runs with passthrough_deno_version set, and says what is missing without it.
      await Deno.mkdir(`${dir}/ops/action_plugins`, { recursive: true });
      await Deno.mkdir(`${dir}/ops/filter_plugins`);
      for (const file of PLAYBOOK_FILES) {
        await Deno.copyFile(`${ROOT}ansible/${file}`, `${dir}/ops/${file}`);
      }
      const copied = await playbook(good, [
        "--check",
        "-e",
        `passthrough_deno_version=${Deno.version.deno}`,
      ], `${dir}/ops/passthrough.yml`);
      assertEquals(copied.code, 0, copied.out);
      assertEquals(taskStatus(copied.out, "Passthrough Deno version check"), "ok", copied.out);
      const unpinned = await playbook(good, ["--check"], `${dir}/ops/passthrough.yml`);
      assertEquals(unpinned.code, 2, unpinned.out);
      assertMatch(unpinned.out, /tools\/deno\/package-lock\.json/);

      const check = await playbook(good, ["--check", "--diff"]);
      assertEquals(check.code, 0, check.out);
      assertEquals(taskStatus(check.out, "Passthrough plan (check mode)"), "changed", check.out);
      // --diff shows the definition as planned, as Ansible shows a changed file's.
      const planned = taskOutput(check.out, "Passthrough definitions");
      assertEquals(taskStatus(check.out, "Passthrough definitions"), "changed", check.out);
      assertMatch(
        planned,
        new RegExp(`--- before: ${vm} \\(now\\)\n\\+\\+\\+ after: ${vm} \\(planned\\)`),
      );
      assertMatch(planned, /^\+ *<hostdev mode='subsystem' type='pci' managed='yes'>$/m);
      assertEquals(check.out.includes(SECRET), false, "the VNC password is shown");
      // The config's copy shows no file diff: it would print every host's section, raw.
      assertEquals(taskStatus(check.out, "Passthrough config"), "changed", check.out);
      assertEquals(taskOutput(check.out, "Passthrough config").includes("elsewhere"), false);
      // --check installs nothing: the hook and its code wait for a real run, and the plan ran
      // its own copy of the bundle and config, elsewhere: not even passthrough_dir is made.
      assertEquals(taskStatus(check.out, "Passthrough start guard"), "skipping", check.out);
      assertEquals(await exists(`${dir}/remote`), false);

      // A run that outlasts passthrough_timeout is ended on the host, and the failure says so:
      // the first, --check's hook status (which passed as `changed` when it was ended).
      const slow = await playbook(good, ["--check", "-e", "passthrough_timeout=0.001"]);
      assertEquals(slow.code, 2, slow.out);
      assertMatch(
        taskOutput(slow.out, "Passthrough start guard failed"),
        /"msg": "timed out after 0\.001 s \(passthrough_timeout\)"/,
      );

      // A libvirtd that stops answering fails the host with the CLI's own message, not a hang
      // until passthrough_timeout.
      Deno.kill(daemon.pid, "SIGSTOP");
      let stuck;
      try {
        stuck = await playbook(good, ["--check", "-e", "passthrough_libvirt_timeout=1"]);
      } finally {
        Deno.kill(daemon.pid, "SIGCONT");
      }
      assertEquals(stuck.code, 2, stuck.out);
      assertMatch(
        stuck.out.slice(stuck.out.indexOf("TASK [Passthrough failed]")),
        /libvirt at \\"qemu:[^ ]*\\" did not answer in 1 s: is libvirtd running\?/,
      );

      const first = await playbook(good, ["--diff"]);
      assertEquals(first.code, 0, first.out);
      // --diff on a real run: the definition before the define, and the one libvirt holds now.
      const defined = taskOutput(first.out, "Passthrough definitions");
      assertMatch(
        defined,
        new RegExp(`--- before: ${vm} \\(before apply\\)\n\\+\\+\\+ after: ${vm} \\(defined\\)`),
      );
      assertMatch(defined, /^\+ *<hostdev mode='subsystem' type='pci' managed='yes'>$/m);
      assertEquals(first.out.includes(SECRET), false, "the VNC password is shown");
      assertEquals(taskStatus(first.out, "Passthrough apply"), "changed", first.out);
      assertMatch(
        taskOutput(first.out, "Passthrough report"),
        new RegExp(`"msg": "changed: ${vm}; skipped: none"`),
      );
      // The start guard: installed once, running the bundled check copied beside the CLI, and
      // what it did shown there, before the plan runs, not at the play's end.
      assertEquals(taskStatus(first.out, "Passthrough start guard"), "changed", first.out);
      const report = first.out.indexOf("RUNNING HANDLER [Passthrough start guard report]");
      assertOk(report > 0 && report < first.out.indexOf("TASK [Passthrough apply]"), first.out);
      assertMatch(first.out.slice(report), /^ok: \[localhost\] => \{\n *"msg": /m);
      const hook = await Deno.readTextFile(`${dir}/hooks/50-passthrough-guard`);
      assertMatch(
        hook,
        new RegExp(`'${dir}/remote/hook/hook_check\\.js' '--state-dir' '${dir}/state'`),
      );
      {
        using port = openLibvirtPort(daemon.uri);
        assertEquals(
          parseDomainXml(port.getPersistentXml(vm)).hostdevs.map((h) => h.address),
          ["0000:01:00.0"],
        );
      }

      const second = await playbook(good, ["--diff"]);
      assertEquals(second.code, 0, second.out);
      assertEquals(taskStatus(second.out, "Passthrough definitions"), "ok", second.out);
      assertEquals(taskStatus(second.out, "Passthrough apply"), "ok", second.out);
      assertEquals(taskStatus(second.out, "Passthrough start guard"), "ok", second.out);
      assertEquals(second.out.includes("RUNNING HANDLER"), false, second.out);
      assertMatch(second.out, /localhost\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0/);

      const badCheck = await playbook(refused, ["--check"]);
      assertEquals(badCheck.code, 2, badCheck.out);
      // The run's task does not fail itself: Ansible would print its whole result first.
      assertEquals(taskStatus(badCheck.out, "Passthrough plan (check mode)"), "ok", badCheck.out);
      assertEquals(taskStatus(badCheck.out, "Passthrough failed"), "fatal", badCheck.out);
      assertMatch(
        badCheck.out.slice(badCheck.out.indexOf("TASK [Passthrough failed]")),
        /Rule \\+"beef\\+u009b2J\\+" of VM/,
      );

      const bad = await playbook(refused);
      assertEquals(bad.code, 2, bad.out);
      assertEquals(taskStatus(bad.out, "Passthrough apply"), "ok", bad.out);
      assertMatch(bad.out, /localhost\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=1/);
      assertEquals(taskStatus(bad.out, "Passthrough failed"), "fatal", bad.out);
      assertMatch(bad.out, /Rule \\+"beef\\+u009b2J\\+" of VM/);
      // docs/FLEET.md shows this run: its tasks from the apply on, and its recap's counts (a
      // refused host, hv1; an applied one, hv2, as the fixed run below).
      const sample = fleetRefusalSample();
      assertEquals(tasksFrom(sample, "Passthrough apply"), tasksFrom(bad.out, "Passthrough apply"));
      assertEquals(recap(sample, "hv1"), recap(bad.out, "localhost"), bad.out);
      for (const out of [badCheck.out, bad.out]) {
        assertEquals(
          /[\u0080-\u009f]/.test(out),
          false,
          `a C1 control reached the terminal: ${out}`,
        );
      }
      // The fixed config applied again, a drift check reports nothing to change: the plan's own
      // copy (which still held the refused config) is not counted as a change.
      const fixed = await playbook(good);
      assertEquals(fixed.code, 0, fixed.out);
      assertEquals(recap(sample, "hv2"), recap(fixed.out, "localhost"), fixed.out);
      assertEquals(taskStatus(fixed.out, "Passthrough apply"), "ok", fixed.out);
      const drift = await playbook(good, ["--check"]);
      assertEquals(drift.code, 0, drift.out);
      assertMatch(drift.out, /localhost\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0/);
      // A start guard gone from the host is one a real run installs again: --check says so.
      await Deno.remove(`${dir}/hooks/50-passthrough-guard`);
      const unguarded = await playbook(good, ["--check"]);
      assertEquals(unguarded.code, 0, unguarded.out);
      assertMatch(unguarded.out, /localhost\s+: ok=\d+\s+changed=[1-9]/, unguarded.out);
      // A config changed on the controller is reported as a copy --check would make.
      await Deno.writeTextFile(good, `${await Deno.readTextFile(good)}# edited\n`);
      const edited = await playbook(good, ["--check"]);
      assertEquals(taskStatus(edited.out, "Passthrough config"), "changed", edited.out);
      assertEquals(
        (await Deno.readTextFile(`${dir}/remote/passthrough_config.yaml`)).includes("# edited"),
        false,
      );
      recordCase({
        area: "escaping",
        name: "a C1 control in a rule's name, through the Ansible playbook (which decodes JSON)",
        count: 2,
        outcome: "escaped again in the failure message; no control character reaches the terminal",
        test: TEST,
      });
    } finally {
      await undefineUnlessIsolated(daemon, [vm]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the playbook's passthrough_diff action shows a plan's changed VMs and a refused VM's repair, and nothing for output that is not a report",
  ignore: which("ansible-playbook") === null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ansible-diff-" });
    try {
      // A real plan of the demo: both VMs change.
      const demo = `${ROOT}demo`;
      buildHostTree(loadHostDescription(`${demo}/host.json`), `${dir}/sysfs`);
      const planned = await runCli([
        "plan",
        "--json",
        "--config",
        `${demo}/passthrough_config.yaml`,
        "--sysfs",
        `${dir}/sysfs`,
        "--connect",
        `test://${demo}/world.xml`,
      ], { env: { PASSTHROUGH_STATE_DIR: `${dir}/state` } });
      assertEquals(planned.code, 0, planned.stderr);
      await Deno.writeTextFile(`${dir}/plan.json`, planned.stdout);
      // The same plan as a refused VM's would read: unchanged, with a repair to define.
      const report = JSON.parse(planned.stdout);
      const win10 = report.vms.find((v: { name: string }) => v.name === "win10");
      // With a description holding C1 controls (U+009B starts an escape sequence on a terminal)
      // and a bidirectional override, as libvirt accepts them.
      const hostile = "<description>\u009b2J\u0085\u202etxt</description>";
      win10.currentXml = win10.currentXml.replace(/<description>.*<\/description>/, hostile);
      win10.desiredXml = win10.desiredXml.replace(/<description>.*<\/description>/, hostile);
      win10.repair = {
        remove: [],
        move: [],
        desiredXml: win10.desiredXml.replace(hostile, `${hostile}\n  <title>x</title>`),
      };
      win10.changed = false;
      report.vms = [win10];
      await Deno.writeTextFile(`${dir}/repair.json`, JSON.stringify(report));
      await Deno.writeTextFile(
        `${dir}/play.yml`,
        `- hosts: localhost
  gather_facts: false
  tasks:
${
          ["plan", "repair", "junk"].map((name) =>
            `    - name: ${name}
      passthrough_diff:
        diffs: "{{ lookup('file', '${dir}/${name}.json', errors='ignore') | default('killed', true) | passthrough_diffs }}"
`
          ).join("")
        }`,
      );
      const { code, out } = await run("ansible-playbook", [
        "-i",
        "localhost,",
        "-c",
        "local",
        "--diff",
        `${dir}/play.yml`,
      ], {
        ANSIBLE_NOCOLOR: "1",
        ANSIBLE_FORCE_COLOR: "0",
        ANSIBLE_LOCAL_TEMP: `${dir}/tmp`,
        ANSIBLE_ACTION_PLUGINS: `${ROOT}ansible/action_plugins`,
        ANSIBLE_FILTER_PLUGINS: `${ROOT}ansible/filter_plugins`,
        PATH: Deno.env.get("PATH") ?? "",
      });
      assertEquals(code, 0, out);
      const plan = taskOutput(out, "plan");
      assertEquals(taskStatus(out, "plan"), "changed", out);
      for (const vm of ["win10", "gentoo"]) {
        assertMatch(
          plan,
          new RegExp(`--- before: ${vm} \\(now\\)\\n\\+\\+\\+ after: ${vm} \\(planned\\)`),
        );
      }
      assertMatch(plan, /^\+ *<hostdev mode='subsystem' type='pci' managed='yes'>$/m);
      const repair = taskOutput(out, "repair");
      assertMatch(repair, /--- before: win10 \(now\)\n\+\+\+ after: win10 \(repair planned\)/);
      assertMatch(repair, /<description>\\u009b2J\\u0085\\u202etxt<\/description>/);
      assertEquals(
        /[\u0080-\u009f\u202e]/.test(out),
        false,
        "a control character reached the terminal",
      );
      recordCase({
        area: "escaping",
        name: "C1 controls and a bidi override in a definition, through the playbook's --diff",
        count: 1,
        outcome: "escaped in the diff Ansible prints",
        test: TEST,
      });
      assertEquals(taskStatus(out, "junk"), "ok", out);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "the playbook's filter escapes exactly the characters the CLI escapes",
  ignore: which("python3") === null,
  async fn() {
    const script = `import importlib.util, sys
spec = importlib.util.spec_from_file_location("f", sys.argv[1])
f = importlib.util.module_from_spec(spec)
spec.loader.exec_module(f)
print(",".join(f"{c}:{f.terminal_safe(chr(c))}" for c in range(0x110000)
  if not 0xd800 <= c < 0xe000 and f.terminal_safe(chr(c)) != chr(c)))`;
    const out = await new Deno.Command("python3", {
      args: ["-c", script, `${ROOT}ansible/filter_plugins/passthrough.py`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    // Every code point, as escaped: the tag characters past U+FFFF as their UTF-16 units.
    const cli = [];
    for (let c = 0; c < 0x110000; c++) {
      if (c >= 0xd800 && c < 0xe000) continue;
      const escaped = terminalSafe(String.fromCodePoint(c), false);
      if (escaped !== String.fromCodePoint(c)) cli.push(`${c}:${escaped}`);
    }
    assertEquals(new TextDecoder().decode(out.stdout).trim(), cli.join(","));
  },
});

Deno.test({
  name:
    "the playbook fails a host with the tool's own words: a refused start guard install, an unreachable libvirt (once), a bad config (located)",
  ignore: which("ansible-playbook") === null || Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ansible-hook-" });
    try {
      await bundleAsTask(dir);
      await Deno.writeTextFile(`${dir}/config.yaml`, "version: 1\nvms: {}\n");
      // A state directory another user could change: hook install refuses it.
      await Deno.mkdir(`${dir}/open`);
      await Deno.chmod(`${dir}/open`, 0o777);
      await Deno.writeTextFile(
        `${dir}/hosts`,
        "[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
      );
      // The playbook on this host with a state directory and a libvirt of the test's choosing.
      const playbook = (stateDir: string, connect = "test:///default", extra: string[] = []) =>
        playbookIn(dir, {
          passthrough_config: `${dir}/config.yaml`,
          passthrough_hooks_dir: `${dir}/hooks`,
          passthrough_state_dir: stateDir,
          passthrough_connect: connect,
        }, extra);
      // --check on a host never applied leaves it as it was: no passthrough_dir, no copy.
      buildHostTree(
        loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS)),
        `${dir}/sysfs`,
      );
      const tree = ["-e", `passthrough_sysfs=${dir}/sysfs`];
      const checked = await playbook(`${dir}/state`, "test:///default", ["--check", ...tree]);
      assertEquals(checked.code, 0, checked.out);
      assertEquals(taskStatus(checked.out, "Passthrough plan (check mode)"), "ok", checked.out);
      assertEquals(await exists(`${dir}/remote`), false);

      const { code, out } = await playbook(`${dir}/open/state`);
      assertEquals(code, 2, out);
      assertEquals(taskStatus(out, "Passthrough start guard failed"), "fatal", out);
      assertMatch(
        taskOutput(out, "Passthrough start guard failed"),
        /"msg": "passthrough hook: Refusing to install the start guard: [^"]*is writable by anyone/,
      );
      // The way out in the playbook's words: its variables, and the playbook again (the CLI's says
      // to keep --state-dir where only root can write and to install again, which it ran itself).
      assertMatch(
        taskOutput(out, "Passthrough start guard failed"),
        /Keep passthrough_dir, passthrough_state_dir, passthrough_hooks_dir and passthrough_deno where only root can write, or fix the owner and mode \(chmod o-w [^)]*\), then run the playbook again"/,
      );
      assertEquals(
        taskOutput(out, "Passthrough start guard failed").includes("--state-dir"),
        false,
      );
      assertEquals(out.includes("non-zero return code"), false, out);
      // Nothing is applied after the refusal.
      assertEquals(taskOutput(out, "Passthrough apply"), "");
      assertMatch(out, /localhost\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=1/);

      // An apply whose libvirt cannot be reached fails with its own one line (its JSON report's
      // error), once: no second run repeats it.
      const gone = await playbook(`${dir}/state`, `qemu+unix:///system?socket=${dir}/no-libvirtd`);
      assertEquals(gone.code, 2, gone.out);
      // The run's task does not fail itself: Ansible would print its whole result first.
      assertEquals(taskStatus(gone.out, "Passthrough apply"), "ok", gone.out);
      assertEquals(taskOutput(gone.out, "Passthrough apply").includes("FAILED"), false, gone.out);
      assertEquals(taskStatus(gone.out, "Passthrough refusals"), "skipping", gone.out);
      assertMatch(
        taskOutput(gone.out, "Passthrough failed"),
        /"msg": \["Cannot connect to libvirt at \\"qemu\+unix:[^"]*no-libvirtd\\" \(passthrough_connect\)[^"]*"\]/,
      );
      // A bad config: its error, then each problem where it is.
      await Deno.writeTextFile(`${dir}/config.yaml`, "version: 1\nvms:\n  x:\n    devices: 5\n");
      const bad = await playbook(`${dir}/state`);
      assertEquals(bad.code, 2, bad.out);
      // Located in the controller's file, whose lines the host's copy has.
      assertMatch(
        taskOutput(bad.out, "Passthrough failed"),
        new RegExp(
          `"msg": \\["Invalid config \\\\"${dir}/config\\.yaml\\\\": 1 problem", "${dir}/config\\.yaml:4:14: Expected a list`,
        ),
      );
      for (const run of [gone, bad]) {
        assertEquals(taskOutput(run.out, "Passthrough failed").includes(`${dir}/remote/`), false);
      }
      // A libvirt that does not answer: the CLI's line, its hint naming the playbook's variable.
      await Deno.writeTextFile(`${dir}/config.yaml`, "version: 1\nvms: {}\n");
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const held: Deno.Conn[] = [];
      const accepting = (async () => {
        for await (const conn of listener) held.push(conn);
      })();
      let silent;
      try {
        silent = await playbook(
          `${dir}/state`,
          `qemu+tcp://127.0.0.1:${listener.addr.port}/system`,
          ["-e", "passthrough_libvirt_timeout=1", ...tree],
        );
      } finally {
        listener.close();
        await accepting.catch(() => {});
        for (const conn of held) conn.close();
      }
      assertEquals(silent.code, 2, silent.out);
      assertMatch(
        taskOutput(silent.out, "Passthrough failed"),
        /did not answer in 1 s: is libvirtd running\? `systemctl status libvirtd`; wait longer with passthrough_libvirt_timeout \(seconds\)"/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the playbook fails a host where the play is not root before copying anything, saying to use become",
  ignore: which("ansible-playbook") === null || Deno.uid() !== 0 || which("su") === null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ansible-user-" });
    // Ansible's files for a become user that is not root: a folder that user can create.
    const remoteTmp = `${dir}-nobody`;
    try {
      await Deno.writeTextFile(`${dir}/config.yaml`, "version: 1\nvms: {}\n");
      await Deno.writeTextFile(`${dir}/passthrough.js`, "");
      await Deno.writeTextFile(
        `${dir}/hosts`,
        "[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3 " +
          'ansible_become=true ansible_become_method=su ansible_become_user=nobody ansible_become_flags="-s /bin/sh"\n',
      );
      const { code, out } = await playbookIn(
        dir,
        { passthrough_config: `${dir}/config.yaml` },
        [],
        {
          ANSIBLE_REMOTE_TEMP: remoteTmp,
        },
      );
      assertEquals(code, 2, out);
      assertEquals(taskStatus(out, "Passthrough root check"), "fatal", out);
      assertMatch(
        taskOutput(out, "Passthrough root check"),
        // become is on here: the message names the become user to change, not become alone.
        /"msg": "the play runs as UID 65534 on this host, and passthrough must run as root there: run the playbook with become as root \(-b, or become: true for these hosts, with become_user root, the default\) or log in as root"/,
      );
      assertEquals(await exists(`${dir}/remote`), false);
    } finally {
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(remoteTmp, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "the playbook fails a host with no section of a shared config naming passthrough_host, not --host",
  ignore: which("ansible-playbook") === null || Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ansible-section-" });
    try {
      await bundleAsTask(dir);
      const config = `${dir}/fleet.yaml`;
      await Deno.writeTextFile(config, "version: 1\nhosts:\n  hv1: {}\n  hv2: {}\nvms: {}\n");
      await Deno.writeTextFile(
        `${dir}/hosts`,
        "[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
      );
      const vars = {
        passthrough_config: config,
        passthrough_state_dir: `${dir}/state`,
        passthrough_hooks_dir: `${dir}/hooks`,
        passthrough_connect: "test:///default",
      };
      // By this machine's host name (no section), then by passthrough_host in another case: the
      // playbook runs --host itself, so the way out is its variable.
      for (
        const [extra, named] of [
          [["--check"], `"${Deno.hostname()}" (this machine's host name, as uname -n prints it)`],
          [["--check", "-e", "passthrough_host=HV1"], '"HV1" (passthrough_host)'],
        ] as const
      ) {
        const { code, out } = await playbookIn(dir, vars, [...extra]);
        assertEquals(code, 2, out);
        assertEquals(taskStatus(out, "Passthrough failed"), "fatal", out);
        const said = JSON.parse(
          /FAILED! => (\{.*\})\n/.exec(taskOutput(out, "Passthrough failed"))?.[1] ?? "{}",
        ).msg as string[];
        assertEquals(said.length, 1, out);
        assertMatch(
          said[0]!,
          new RegExp(
            `^${config} has no section for host ${
              named.replace(/[()]/g, "\\$&")
            } under "hosts:" at ${config}:2:1.*: it declares "hv1", "hv2": set passthrough_host, or add a section named`,
          ),
        );
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the playbook's failures name the variables it passes as flags: passthrough_connect, passthrough_sysfs, passthrough_host",
  ignore: which("ansible-playbook") === null || Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ansible-flags-" });
    try {
      await bundleAsTask(dir);
      buildHostTree(
        loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS)),
        `${dir}/sysfs`,
      );
      await Deno.writeTextFile(
        `${dir}/hosts`,
        "[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
      );
      const shared = `${dir}/fleet.yaml`;
      const single = `${dir}/single.yaml`;
      await Deno.writeTextFile(single, "version: 1\nvms: {}\n");
      const base = {
        passthrough_state_dir: `${dir}/state`,
        passthrough_hooks_dir: `${dir}/hooks`,
        passthrough_connect: "test:///default",
        passthrough_sysfs: `${dir}/sysfs`,
      };
      // What the host was told, and what the playbook's failure says instead: the flag is the
      // playbook's, the way out the variable the operator set.
      const cases: { section: string; vars: Record<string, string>; said: RegExp }[] = [
        {
          section: `hv1: { connect: "test:///default" }`,
          vars: { passthrough_config: shared, passthrough_host: "hv1" },
          said: new RegExp(
            `^passthrough_connect and hosts\\.hv1\\.connect in ${shared} both say where to look: keep one$`,
          ),
        },
        {
          section: `hv1: { sysfs: "${dir}/sysfs" }`,
          vars: { passthrough_config: shared, passthrough_host: "hv1" },
          said: new RegExp(
            `^passthrough_sysfs and hosts\\.hv1\\.sysfs in ${shared} both say where to look: keep one$`,
          ),
        },
        {
          section: "hv1: {}",
          vars: { passthrough_config: single, passthrough_host: "hv1" },
          said: new RegExp(
            `^passthrough_host needs a config with a "hosts:" section: ${single} has none$`,
          ),
        },
        {
          section: "hv1: {}",
          vars: {
            passthrough_config: single,
            passthrough_connect: `qemu+unix:///system?socket=${dir}/no-libvirtd`,
          },
          said:
            /^Cannot connect to libvirt at "qemu\+unix:[^"]*no-libvirtd" \(passthrough_connect\)/,
        },
      ];
      for (const { section, vars, said } of cases) {
        await Deno.writeTextFile(shared, `version: 1\nhosts:\n  ${section}\nvms: {}\n`);
        const { code, out } = await playbookIn(dir, { ...base, ...vars }, ["--check"]);
        assertEquals(code, 2, out);
        assertEquals(taskStatus(out, "Passthrough failed"), "fatal", out);
        const msg = JSON.parse(
          /FAILED! => (\{.*\})\n/.exec(taskOutput(out, "Passthrough failed"))?.[1] ?? "{}",
        ).msg as string[];
        assertEquals(msg.length, 1, out);
        assertMatch(msg[0]!, said);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the playbook says which VMs a failed host's apply defined before it fails the host for another VM's refusal",
  ignore: which("ansible-playbook") === null || Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ansible-mixed-" });
    try {
      await bundleAsTask(dir);
      buildHostTree(loadHostDescription(`${ROOT}demo/host.json`), `${dir}/sysfs`);
      await Deno.writeTextFile(
        `${dir}/hosts`,
        "[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
      );
      // The demo's two VMs: win10 gets its GTX 1080, gentoo's rule matches nothing here.
      await Deno.writeTextFile(
        `${dir}/config.yaml`,
        `version: 1
vms:
  win10:
    devices:
      - { name: gtx1080, match: { vendor_device_id: "10de:1b80" } }
  gentoo:
    devices:
      - { name: nope, match: { vendor_device_id: "dead:beef" } }
`,
      );
      const { code, out } = await playbookIn(dir, {
        passthrough_config: `${dir}/config.yaml`,
        passthrough_state_dir: `${dir}/state`,
        passthrough_hooks_dir: `${dir}/hooks`,
        passthrough_connect: `test://${ROOT}demo/world.xml`,
        passthrough_sysfs: `${dir}/sysfs`,
      });
      assertEquals(code, 2, out);
      assertEquals(taskStatus(out, "Passthrough apply"), "changed", out);
      assertEquals(taskStatus(out, "Passthrough failed"), "fatal", out);
      assertMatch(taskOutput(out, "Passthrough failed"), /Rule \\"nope\\" of VM \\"gentoo\\"/);
      // win10 was defined on the host the recap counts as failed: the operator is told so, and
      // before the failure, which ends the host's tasks.
      assertMatch(
        taskOutput(out, "Passthrough report"),
        /"msg": "changed: win10; skipped: gentoo"/,
      );
      assertOk(
        out.indexOf("TASK [Passthrough report]") < out.indexOf("TASK [Passthrough failed]"),
        out,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the playbook fails a host whose run said why on stderr alone with that reason, not the host section line beside it",
  ignore: which("ansible-playbook") === null || Deno.uid() !== 0 || !canUnshareMounts(),
  async fn() {
    const dir = await Deno.realPath(
      await Deno.makeTempDir({ prefix: "passthrough-ansible-stderr-" }),
    );
    try {
      await bundleAsTask(dir);
      buildHostTree(loadHostDescription(`${ROOT}demo/host.json`), `${dir}/sysfs`);
      await Deno.writeTextFile(
        `${dir}/hosts`,
        "[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
      );
      // A shared config: the run says on stderr which section it plans.
      const demo = Deno.readTextFileSync(`${ROOT}demo/passthrough_config.yaml`)
        .replace("version: 1\n", "version: 1\nhosts:\n  hv1: {}\n");
      const vars = {
        passthrough_config: `${dir}/config.yaml`,
        passthrough_host: "hv1",
        passthrough_state_dir: `${dir}/state`,
        passthrough_hooks_dir: `${dir}/hooks`,
        passthrough_connect: `test://${ROOT}demo/world.xml`,
        passthrough_sysfs: `${dir}/sysfs`,
      };
      // An earlier run recorded win10's guard: off where the start guard reads it.
      await Deno.writeTextFile(
        `${dir}/config.yaml`,
        demo.replace("  win10:\n", "  win10:\n    guard: off\n"),
      );
      const off = await playbookIn(dir, vars);
      assertEquals(off.code, 0, off.out);
      // Now enforce, with that directory read-only: apply cannot record it, defines only gentoo,
      // and says why on stderr (its JSON report has no error for it).
      await Deno.writeTextFile(`${dir}/config.yaml`, demo);
      const guard = shellQuote(`${dir}/state/guard`);
      const { code, out } = await playbookIn(dir, vars, [], {}, [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        `mount --bind ${guard} ${guard} && mount -o remount,bind,ro ${guard} && exec "$@"`,
        "sh",
      ]);
      assertEquals(code, 2, out);
      assertMatch(
        taskOutput(out, "Passthrough report"),
        /"msg": "changed: gentoo \(running: [^)]*\); skipped: win10"/,
      );
      const said = JSON.parse(
        /FAILED! => (\{.*\})\n/.exec(taskOutput(out, "Passthrough failed"))?.[1] ?? "{}",
      ).msg as string[];
      // It said the section line first, and once more from the re-plan.
      assertEquals(said.length, 1, out);
      assertMatch(
        said[0]!,
        /^Cannot record the start guard policies in [^\n]*: Read-only file system[^\n]*$/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the playbook fails a host whose apply was cut off as it printed its report with what the run said, not a template error",
  ignore: which("ansible-playbook") === null || Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ansible-cut-" });
    try {
      await bundleAsTask(dir);
      buildHostTree(
        loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS)),
        `${dir}/sysfs`,
      );
      await Deno.writeTextFile(`${dir}/config.yaml`, "version: 1\nvms: {}\n");
      await Deno.writeTextFile(
        `${dir}/hosts`,
        "[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
      );
      // A Deno whose apply is ended as it writes its report: the first lines of the JSON, then
      // the signal's line on stderr.
      const deno = `${dir}/deno`;
      await Deno.writeTextFile(
        deno,
        `#!/bin/sh\nfor a in "$@"; do\n  if [ "$a" = apply ]; then\n    printf '{\\n  "vms": [\\n'\n    echo 'passthrough apply: stopped by SIGTERM' >&2\n    exit 143\n  fi\ndone\nexec ${Deno.execPath()} "$@"\n`,
      );
      await Deno.chmod(deno, 0o755);
      const { code, out } = await playbookIn(dir, {
        passthrough_config: `${dir}/config.yaml`,
        passthrough_deno: deno,
        passthrough_deno_version: "",
        passthrough_state_dir: `${dir}/state`,
        passthrough_hooks_dir: `${dir}/hooks`,
        passthrough_connect: "test:///default",
        passthrough_sysfs: `${dir}/sysfs`,
      });
      assertEquals(code, 2, out);
      // It failed the run's task with "The conditional check ... failed. The error was: Expecting
      // value", printing the run's whole result, and the reason never came.
      assertEquals(taskStatus(out, "Passthrough apply"), "ok", out);
      assertMatch(
        taskOutput(out, "Passthrough failed"),
        /"msg": \["passthrough apply: stopped by SIGTERM"\]/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the playbook's --check fails a host whose hook status was cut off as it printed with what the run said, not a template error",
  ignore: which("ansible-playbook") === null || Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ansible-cut-status-" });
    try {
      await bundleAsTask(dir);
      buildHostTree(
        loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS)),
        `${dir}/sysfs`,
      );
      await Deno.writeTextFile(`${dir}/config.yaml`, "version: 1\nvms: {}\n");
      await Deno.writeTextFile(
        `${dir}/hosts`,
        "[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
      );
      // A Deno whose hook status is ended as it writes its report: the first lines of the JSON,
      // then the signal's line on stderr.
      const deno = `${dir}/deno`;
      await Deno.writeTextFile(
        deno,
        `#!/bin/sh\nfor a in "$@"; do\n  if [ "$a" = status ]; then\n    printf '{\\n  "path": '\n    echo 'passthrough hook: stopped by SIGTERM' >&2\n    exit 143\n  fi\ndone\nexec ${Deno.execPath()} "$@"\n`,
      );
      await Deno.chmod(deno, 0o755);
      const { code, out } = await playbookIn(dir, {
        passthrough_config: `${dir}/config.yaml`,
        passthrough_deno: deno,
        passthrough_deno_version: "",
        passthrough_state_dir: `${dir}/state`,
        passthrough_hooks_dir: `${dir}/hooks`,
        passthrough_connect: "test:///default",
        passthrough_sysfs: `${dir}/sysfs`,
      }, ["--check"]);
      assertEquals(code, 2, out);
      // It failed the task with "The conditional check ... failed. The error was: Expecting
      // value", printing the run's whole result, and the reason never came.
      assertEquals(taskStatus(out, "Passthrough start guard (check mode)"), "changed", out);
      assertMatch(
        taskOutput(out, "Passthrough start guard failed"),
        /"msg": "passthrough hook: stopped by SIGTERM"/,
      );
      assertEquals(taskOutput(out, "Passthrough plan (check mode)"), "");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the playbook's --check after a real run reports no change for a passthrough_sysfs written with a trailing slash",
  ignore: which("ansible-playbook") === null || Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ansible-sysfs-" });
    try {
      await bundleAsTask(dir);
      buildHostTree(
        loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS)),
        `${dir}/sysfs`,
      );
      await Deno.writeTextFile(`${dir}/config.yaml`, "version: 1\nvms: {}\n");
      await Deno.writeTextFile(
        `${dir}/hosts`,
        "[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
      );
      const vars = {
        passthrough_config: `${dir}/config.yaml`,
        passthrough_state_dir: `${dir}/state`,
        passthrough_hooks_dir: `${dir}/hooks`,
        passthrough_connect: "test:///default",
        // The hook records the tree as an absolute path without it, as `hook install` does.
        passthrough_sysfs: `${dir}/sysfs/`,
      };
      const applied = await playbookIn(dir, vars);
      assertEquals(applied.code, 0, applied.out);
      const drift = await playbookIn(dir, vars, ["--check"]);
      assertEquals(drift.code, 0, drift.out);
      // It said changed, every time: the hook's sysfs "DIR/sysfs" is not "DIR/sysfs/".
      assertEquals(taskStatus(drift.out, "Passthrough start guard (check mode)"), "ok", drift.out);
      assertMatch(drift.out, /localhost\s+: ok=\d+\s+changed=0\s/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the playbook's report says a changed VM that is running gets its devices after its next full power-off",
  ignore: which("ansible-playbook") === null || Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ansible-running-" });
    try {
      await bundleAsTask(dir);
      buildHostTree(loadHostDescription(`${ROOT}demo/host.json`), `${dir}/sysfs`);
      await Deno.writeTextFile(
        `${dir}/hosts`,
        "[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
      );
      // The demo: win10 is shut off, gentoo running (the playbook passes no --live).
      const { code, out } = await playbookIn(dir, {
        passthrough_config: `${ROOT}demo/passthrough_config.yaml`,
        passthrough_state_dir: `${dir}/state`,
        passthrough_hooks_dir: `${dir}/hooks`,
        passthrough_connect: `test://${ROOT}demo/world.xml`,
        passthrough_sysfs: `${dir}/sysfs`,
      });
      assertEquals(code, 0, out);
      // It said "changed: win10, gentoo" alone: a reboot inside gentoo does not bring its GPU.
      assertMatch(
        taskOutput(out, "Passthrough report"),
        /"msg": "changed: win10, gentoo \(running: takes effect after its next full power-off\); skipped: none"/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "the playbook's --check leaves no temporary directory on the host when a task fails",
  ignore: which("ansible-playbook") === null || Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ansible-check-tmp-" });
    try {
      // Where the host's temporary directories go (Ansible's tempfile asks Python's tempfile).
      await Deno.mkdir(`${dir}/host-tmp`);
      await Deno.writeTextFile(`${dir}/passthrough.js`, "");
      await Deno.writeTextFile(
        `${dir}/hosts`,
        "[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
      );
      const { code, out } = await playbookIn(
        dir,
        // A config the controller does not have: its copy fails.
        { passthrough_config: `${dir}/missing.yaml` },
        ["--check"],
        { TMPDIR: `${dir}/host-tmp` },
      );
      assertEquals(code, 2, out);
      assertEquals(taskStatus(out, "Passthrough config"), "fatal", out);
      assertEquals([...Deno.readDirSync(`${dir}/host-tmp`)].map((e) => e.name), [], out);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the playbook's --check stopped by Ctrl-C during the plan leaves no temporary directory once the plan ends",
  ignore: which("ansible-playbook") === null || which("setsid") === null || Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ansible-check-int-" });
    try {
      await Deno.mkdir(`${dir}/host-tmp`);
      await Deno.writeTextFile(`${dir}/passthrough.js`, "");
      await Deno.writeTextFile(`${dir}/config.yaml`, "version: 1\nvms: {}\n");
      await Deno.mkdir(`${dir}/hook`);
      await Deno.writeTextFile(`${dir}/hook/check.js`, "");
      await Deno.writeTextFile(
        `${dir}/hosts`,
        "[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
      );
      // A Deno whose plan waits (a slow libvirt) until the test ends it, saying where it waits.
      const deno = `${dir}/deno`;
      await Deno.writeTextFile(
        deno,
        `#!/bin/sh\nfor a in "$@"; do\n  if [ "$a" = plan ]; then echo $$ > ${dir}/planning; exec sleep 60; fi\ndone\nexec ${Deno.execPath()} "$@"\n`,
      );
      await Deno.chmod(deno, 0o755);
      // In a session of its own, whose process group Ctrl-C at a terminal would signal.
      const child = new Deno.Command("setsid", {
        args: [
          "ansible-playbook",
          "-i",
          `${dir}/hosts`,
          PLAYBOOK,
          "--check",
          "-e",
          JSON.stringify({
            passthrough_bundle: `${dir}/passthrough.js`,
            passthrough_guard: `${dir}/hook`,
            passthrough_deno: deno,
            passthrough_deno_version: "",
            passthrough_dir: `${dir}/remote`,
            passthrough_config: `${dir}/config.yaml`,
            passthrough_state_dir: `${dir}/state`,
          }),
        ],
        env: {
          LC_ALL: "C.UTF-8",
          ANSIBLE_NOCOLOR: "1",
          ANSIBLE_LOCAL_TEMP: `${dir}/tmp`,
          TMPDIR: `${dir}/host-tmp`,
        },
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      let plan = 0;
      for (let i = 0; i < 600 && plan === 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
        plan = Number(await Deno.readTextFile(`${dir}/planning`).catch(() => "0"));
      }
      const checkDirs = () =>
        [...Deno.readDirSync(`${dir}/host-tmp`)].map((e) => e.name).filter((name) =>
          name.startsWith("passthrough-check-")
        );
      const made = checkDirs();
      if (plan === 0) {
        const { stdout } = await child.output();
        throw new Error(`the plan did not start:\n${new TextDecoder().decode(stdout)}`);
      }
      Deno.kill(-child.pid, "SIGINT");
      const { stderr } = await child.output();
      assertMatch(new TextDecoder().decode(stderr), /User interrupted execution/);
      assertEquals(made.length, 1, "the plan's directory");
      // The plan goes on without Ansible (timeout(1) runs it in a process group of its own); its
      // end removes the directory.
      Deno.kill(plan, "SIGTERM");
      let left = made;
      for (let i = 0; i < 100 && left.length > 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
        left = checkDirs();
      }
      assertEquals(left, []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the playbook puts a new start guard check in place only once the chunks it imports are there",
  ignore: which("ansible-playbook") === null || Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-ansible-guard-update-" });
    try {
      await bundleAsTask(dir);
      await Deno.writeTextFile(`${dir}/config.yaml`, "version: 1\nvms: {}\n");
      await Deno.writeTextFile(
        `${dir}/hosts`,
        "[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
      );
      const vars = {
        passthrough_config: `${dir}/config.yaml`,
        passthrough_hooks_dir: `${dir}/hooks`,
        passthrough_state_dir: `${dir}/state`,
        passthrough_connect: "test:///default",
        passthrough_sysfs: `${dir}/sysfs`,
      };
      buildHostTree(
        loadHostDescription(new URL("x570-aorus-pro-wifi.json", HOSTS)),
        `${dir}/sysfs`,
      );
      const first = await playbookIn(dir, vars);
      assertEquals(first.code, 0, first.out);
      // The next version's check: its shared chunk (imported by the entry at load) named anew,
      // as a change to the code they share names it. Ansible copies a directory's files in the
      // order the directory lists them: the name tried here lists the entry before that chunk.
      const entry = await Deno.readTextFile(`${dir}/hook/hook_check.js`);
      const shared = /from"\.\/(chunk-[A-Za-z0-9]+\.js)"/.exec(entry)?.[1];
      assertOk(shared !== undefined, entry);
      const next = `${dir}/hook2`;
      let renamed = "";
      for (let n = 0; renamed === ""; n++) {
        await Deno.remove(next, { recursive: true }).catch(() => {});
        await Deno.mkdir(next);
        const name = `chunk-NEXT${n}.js`;
        for await (const file of Deno.readDir(`${dir}/hook`)) {
          const text = await Deno.readTextFile(`${dir}/hook/${file.name}`);
          const to = file.name === shared ? name : file.name;
          await Deno.writeTextFile(`${next}/${to}`, text.replaceAll(shared!, name));
        }
        const order = [...Deno.readDirSync(next)].map((e) => e.name);
        if (order.indexOf("hook_check.js") < order.indexOf(name)) renamed = name;
      }
      // Every module Ansible runs on the host waits, before it starts, for this test to look at
      // the host: through two FIFOs its Python interpreter, a script, opens in turn.
      for (const fifo of ["step", "go"]) {
        await new Deno.Command("mkfifo", { args: [`${dir}/${fifo}`] }).output();
      }
      await Deno.writeTextFile(
        `${dir}/python`,
        `#!/bin/sh\necho >'${dir}/step'\nread _ <'${dir}/go'\nexec /usr/bin/python3 "$@"\n`,
        { mode: 0o755 },
      );
      await Deno.writeTextFile(
        `${dir}/hosts`,
        `[passthrough_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=${dir}/python\n`,
      );
      const startVm = async () => {
        const child = new Deno.Command(`${dir}/hooks/50-passthrough-guard`, {
          args: ["vm", "prepare", "begin", "-"],
          stdin: "piped",
          stdout: "null",
          stderr: "piped",
        }).spawn();
        const writer = child.stdin.getWriter();
        await writer.write(new TextEncoder().encode("<domain><name>vm</name><devices/></domain>"));
        await writer.close();
        const { code, stderr } = await child.output();
        return { code, stderr: new TextDecoder().decode(stderr) };
      };
      const playing = playbookIn(dir, { ...vars, passthrough_guard: next });
      // What a VM start gets each time the check in place is another than at the step before.
      const starts: { code: number; stderr: string }[] = [];
      let placed = entry;
      for (;;) {
        const step = Deno.readTextFile(`${dir}/step`);
        if (await Promise.race([step.then(() => false), playing.then(() => true)])) {
          // Nothing will write the FIFO any more: written here, the read above ends.
          await Deno.writeTextFile(`${dir}/step`, "\n");
          await step;
          break;
        }
        const now = await Deno.readTextFile(`${dir}/remote/hook/hook_check.js`);
        if (now !== placed) starts.push(await startVm());
        placed = now;
        await Deno.writeTextFile(`${dir}/go`, "\n");
      }
      const second = await playing;
      assertEquals(second.code, 0, second.out);
      assertEquals(placed, await Deno.readTextFile(`${next}/hook_check.js`));
      // It said: exit 1, 'Module not found ".../remote/hook/chunk-NEXT0.js"': the new check was
      // in place before the chunk it imports, and every VM start in between was refused.
      assertEquals(starts, [{ code: 0, stderr: "" }]);
      recordCase({
        area: "concurrency",
        name: "a VM starts while the playbook copies a new start guard check",
        count: 1,
        outcome: "the start runs the previous check whole; the new one is placed after its chunks",
        test: TEST,
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
