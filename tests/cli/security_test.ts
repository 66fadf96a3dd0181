/**
 * Security: no shell anywhere (sources scanned, lspci run with an argument array), private state
 * that never follows planted symlinks, the documented permission set is enough for every
 * command against a real daemon, and secrets read with `VIR_DOMAIN_XML_SECURE` never reach
 * output, messages or JSON.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { libvirtdUnavailable, relayedRemoteUri, startLibvirtd } from "../helpers/libvirtd.ts";
import { writeTempWorld } from "../helpers/world.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { Connection } from "../../ffi/connection.ts";
import { commandLspciRunner, lspciArgs } from "../../lib/host/lspci.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { acquireConnectionLock, connectionLockPath } from "../../lib/state/lock.ts";
import { applyPlan } from "../../lib/apply/apply.ts";
import { redactSecrets, secretValues } from "../../lib/domain/secrets.ts";
import { redactedJson } from "../../lib/render/redact.ts";
import { renderDomainDiff } from "../../lib/render/diff.ts";
import { encodeVmName, writeBackup } from "../../lib/state/backups.ts";
import { openStateDir, StateDirError } from "../../lib/state/state_dir.ts";
import { main } from "../../main.ts";
import { runCli } from "../helpers/cli.ts";
import { pathExists } from "../../lib/state/paths.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import { DEMO_HOST, demoTree, gpuConfig, planGpu, snapshotDir } from "../helpers/reliability.ts";

const TEST = "tests/cli/security_test.ts";
const ROOT = new URL("../../", import.meta.url).pathname;
const SECRET = "pt-s3crt";
const COOKIE = "pt-c00kie-s3crt";

/** An HTTPS CD-ROM whose source sends a session cookie with the value `value`. */
function cookieDisk(value: string): string {
  return `<disk type='network' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source protocol='https' name='/iso/install.iso'>
        <host name='example.org' port='443'/>
        <cookies><cookie name='session'>${value}</cookie></cookies>
      </source>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>`;
}

function sourceFiles(): string[] {
  const files: string[] = [`${ROOT}main.ts`, `${ROOT}bin/passthrough`];
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(`${ROOT}${dir}`)) {
      if (entry.isDirectory) walk(`${dir}/${entry.name}`);
      else if (entry.isFile && entry.name.endsWith(".ts")) {
        files.push(`${ROOT}${dir}/${entry.name}`);
      }
    }
  };
  for (const dir of ["lib", "cli", "ffi"]) walk(dir);
  return files.sort();
}

Deno.test("the shipped sources never start a shell and spawn only lspci", () => {
  const shellPatterns: [RegExp, string][] = [
    [/\bsh\s+-c\b/, "sh -c"],
    [/["'`](?:\/bin\/|\/usr\/bin\/)?(?:ba|z|da)?sh["'`]/, "a shell as a program"],
    [/\bshell\s*:\s*true\b/, "shell: true"],
    [/\bchild_process\b/, "node:child_process"],
    [/\bDeno\.run\b/, "Deno.run"],
    [/\bexecSync\b|\bspawnSync\b/, "exec/spawn helpers"],
  ];
  const files = sourceFiles();
  const spawns: string[] = [];
  for (const file of files) {
    const text = Deno.readTextFileSync(file);
    const code = file.endsWith(".ts")
      ? text.split("\n").filter((l) => !/^\s*(\/\/|\*|\/\*\*)/.test(l)).join("\n")
      : "";
    for (const [pattern, what] of shellPatterns) {
      assertOk(!pattern.test(code), `${file} uses ${what}`);
    }
    for (const m of code.matchAll(/new Deno\.Command\(([^,)]*)/g)) {
      spawns.push(`${file.slice(ROOT.length)}: ${m[1]}`);
    }
  }
  // The one spawn: lspci's runner, whose program is "lspci" unless a caller passes another.
  assertEquals(spawns, ["lib/host/lspci.ts: program"]);
  assertMatch(
    Deno.readTextFileSync(`${ROOT}lib/host/lspci.ts`),
    /commandLspciRunner\(program = "lspci"\)/,
  );
  // bin/passthrough execs deno with fixed flags and passes the user's arguments as "$@" only,
  // after an entry that is main.ts or the bundle built from it.
  const wrapper = Deno.readTextFileSync(`${ROOT}bin/passthrough`);
  assertMatch(wrapper, /"\$entry" "\$@"\s*$/);
  assertEquals(
    [...wrapper.matchAll(/^\s*entry="([^"]*)"$/gm)].map((m) => m[1]),
    ["$here/main.ts", "$bundle"],
  );
  assertMatch(wrapper, /^bundle="\$here\/dist\/bin\/main\.js"$/m);
  assertOk(!/\beval\b/.test(wrapper));
  recordCase({
    area: "security",
    name: "source scan: no shell, one spawn (lspci)",
    count: files.length,
    outcome: "no shell found",
    test: TEST,
  });
});

Deno.test("commandLspciRunner() passes a tree path full of shell syntax as one argument", async () => {
  const base = await Deno.makeTempDir({ prefix: "passthrough-security-" });
  // If anything ran this through a shell, the commands in the name would create files.
  const root = `${base}/t; touch ${base}/PWNED1 $(touch ${base}/PWNED2) \`touch ${base}/PWNED3\``;
  try {
    buildHostTree(loadHostDescription(DEMO_HOST), root);
    const args = lspciArgs(root);
    assertEquals(args.slice(0, 2), ["-O", `sysfs.path=${root}/bus/pci`]);
    const host = await discoverHost({ root, lspci: commandLspciRunner() });
    assertEquals(host.devices.length, loadHostDescription(DEMO_HOST).devices.length);
    // lspci read the tree at that exact path: names come from it.
    assertOk(host.devices.some((d) => d.className !== null));
    const planted = [...Deno.readDirSync(base)].map((e) => e.name).filter((n) => /PWNED/.test(n));
    assertEquals(planted, []);
    recordCase({
      area: "security",
      name: "sysfs path with ; $( ) and backticks given to lspci",
      count: 1,
      outcome: "one argument, nothing executed",
      test: TEST,
    });
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("the connection lock never writes through a lock symlink planted in the state directory", () => {
  const base = Deno.makeTempDirSync({ prefix: "passthrough-security-" });
  try {
    const state = `${base}/state`;
    Deno.mkdirSync(state, { mode: 0o700 });
    const victim = `${base}/victim`;
    Deno.writeTextFileSync(victim, "precious\n", { mode: 0o644 });
    Deno.symlinkSync(victim, connectionLockPath("test:///default", state));
    let outcome = "acquired";
    try {
      using lock = acquireConnectionLock("test:///default", { stateDir: state, command: "apply" });
      assertOk(!Deno.lstatSync(lock.path).isSymlink, "the held lock is a regular file");
    } catch (error) {
      outcome = (error as Error).message;
    }
    assertEquals(Deno.readTextFileSync(victim), "precious\n", outcome);
    assertEquals((Deno.statSync(victim).mode ?? 0) & 0o777, 0o644);
    recordCase({
      area: "security",
      name: "lock path is a planted symlink",
      count: 1,
      outcome: "target untouched",
      test: TEST,
    });
  } finally {
    Deno.removeSync(base, { recursive: true });
  }
});

Deno.test("applyPlan() never quotes a password in its drift message", async () => {
  await using tree = await demoTree();
  await using world = await writeTempWorld(`<node>
  <domain type='test'>
    <name>pt-sec</name>
    <uuid>4dea22b3-1d52-d8f3-2516-782e98a3fa01</uuid>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <graphics type='vnc' port='-1' autoport='yes' passwd='${SECRET}'/>
    </devices>
  </domain>
</node>`);
  using port = openLibvirtPort(world.uri);
  const plan = await planGpu("pt-sec", { sysfs: tree.sysfs, libvirt: port });
  assertEquals(plan.vms[0]?.changed, true);
  // The plan holds the definition with its password (apply defines it); its JSON shows none.
  assertOk(plan.vms[0]!.desiredXml.includes(`passwd='${SECRET}'`));
  assertOk(!redactedJson(plan).includes(SECRET), "plan --json shows no secret");
  // Another client edits the VM after the plan: a drift, described without the password.
  const secure = port.getPersistentXml("pt-sec", { secure: true });
  port.define(
    secure.replace("</graphics>", "</graphics>").replace(
      /<graphics [^>]*passwd='[^']*'/,
      (m) => m.replace(SECRET, "n3wpass"),
    ).replace("<devices>", "<description>edited</description>\n  <devices>"),
  );
  const report = await applyPlan(plan, {
    libvirt: port,
    stateDir: `${tree.dir}/state`,
    confirm: () => Promise.resolve("yes"),
  });
  const result = report.vms[0]!;
  assertEquals(result.code, "drift");
  assertMatch(result.message, /description/);
  assertOk(!result.message.includes(SECRET) && !result.message.includes("n3wpass"), result.message);
  recordCase({
    area: "security",
    name: "password in a drifted definition",
    count: 1,
    outcome: "drift reported, password never quoted",
    test: TEST,
  });
});

Deno.test("redactSecrets() hides passwords in either quote style and keeps the rest", () => {
  assertEquals(
    redactSecrets(`<graphics type="spice" passwd="a'b" passwdValidTo='x'/>`),
    `<graphics type="spice" passwd='***' passwdValidTo='x'/>`,
  );
  assertEquals(redactSecrets("<name>passwd</name>"), "<name>passwd</name>");
});

Deno.test("renderDomainDiff() redacts passwords and marks one that changed", () => {
  const before = `<domain>\n  <graphics type='vnc' passwd='0ld-pass'/>\n</domain>\n`;
  const after = before.replace("0ld-pass", SECRET);
  const diff = renderDomainDiff(before, after, { vm: "vm" });
  assertOk(!diff.includes(SECRET) && !diff.includes("0ld-pass"), diff);
  assertOk(diff.includes("\n-  <graphics type='vnc' passwd='***'/>\n"), diff);
  assertOk(diff.includes("\n+  <graphics type='vnc' passwd='***' (changed)/>\n"), diff);
  // Another attribute changing beside an unchanged password: no mark.
  const moved = renderDomainDiff(after, after.replace("vnc", "spice"), { vm: "vm" });
  assertOk(!moved.includes("(changed)") && !moved.includes(SECRET), moved);
  const shown = renderDomainDiff(before, after, { vm: "vm", showSecrets: true });
  assertOk(shown.includes(SECRET) && shown.includes("0ld-pass"), shown);
});

Deno.test("renderDomainDiff() hides a password libvirt writes over two lines, and marks its change", () => {
  // libvirt writes a line break in a password as it is (the test driver formats as the QEMU one).
  using conn = Connection.open("test:///default");
  using dom = conn.defineDomain(
    `<domain type='test'><name>passwd-lines</name><memory>65536</memory>` +
      `<os><type>hvm</type></os><devices>` +
      `<graphics type='vnc' port='-1' passwd='Top&#10;${SECRET}'/></devices></domain>`,
  );
  const before = dom.xml({ inactive: true, secure: true });
  assertOk(before.includes(`passwd='Top\n${SECRET}'`), before);
  const diff = renderDomainDiff(before, before.replace(SECRET, "n3w-pass"), { vm: "vm" });
  // Its lines showed: "passwd='Top", then "-pt-s3crt'>" and "+n3w-pass'>".
  assertOk(!/Top|pt-s3crt|n3w-pass/.test(diff), diff);
  assertMatch(
    diff,
    /\n\+ *<graphics type='vnc' port='-1' autoport='yes' passwd='\*\*\*' \(changed\)>\n/,
  );
});

async function runWrapper(args: string[]): Promise<{ code: number; out: string }> {
  const output = await new Deno.Command(`${ROOT}bin/passthrough`, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: output.code, out: decode(output.stdout) + decode(output.stderr) };
}

Deno.test({
  name:
    "bin/passthrough's documented permissions suffice for devices, plan, apply --yes, rollback --yes on a real libvirtd, and no secret is printed",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    using port = openLibvirtPort(daemon.uri);
    const vm = "pt-security";
    // An HTTPS CD-ROM with a session cookie: libvirt shows its value only with
    // VIR_DOMAIN_XML_SECURE, like the VNC password.
    port.define(`<domain type='qemu'>
  <name>${vm}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>${cookieDisk(COOKIE)}<graphics type='vnc' autoport='yes' passwd='${SECRET}'/></devices>
</domain>`);
    const original = port.getPersistentXml(vm, { secure: true });
    assertOk(original.includes(SECRET) && original.includes(COOKIE));
    const config = `${tree.dir}/config.yaml`;
    await Deno.writeTextFile(config, gpuConfig(vm));
    const stateDir = `${tree.dir}/state`;
    const common = ["--config", config, "--sysfs", tree.sysfs, "--connect", daemon.uri];
    const state = ["--state-dir", stateDir];
    const runs: [string, string[], number][] = [
      ["devices", ["devices"], 0],
      ["plan", ["plan", ...common], 0],
      ["plan --json", ["plan", ...common, "--json"], 0],
      ["apply --yes", ["apply", ...common, ...state, "--yes"], 0],
      ["apply --yes --json (converged)", ["apply", ...common, ...state, "--yes", "--json"], 0],
      ["backups", ["backups", vm, ...state], 0],
      ["backups --json", ["backups", vm, ...state, "--json"], 0],
      ["rollback --yes", ["rollback", vm, "--connect", daemon.uri, ...state, "--yes"], 0],
      [
        "rollback --yes --json",
        ["rollback", vm, "--connect", daemon.uri, ...state, "--yes", "--json"],
        0,
      ],
    ];
    const outputs: Record<string, string> = {};
    for (const [name, args, code] of runs) {
      const run = await runWrapper(args);
      assertEquals(run.code, code, `${name}: ${run.out}`);
      assertOk(!/NotCapable|Requires .* access|--allow-/.test(run.out), `${name}: ${run.out}`);
      assertOk(!run.out.includes(SECRET), `${name} printed the password`);
      assertOk(!run.out.includes(COOKIE), `${name} printed the cookie`);
      outputs[name] = run.out;
    }
    assertMatch(outputs["plan"]!, /\+\s+<hostdev mode='subsystem' type='pci' managed='yes'>/);
    const planned = JSON.parse(outputs["plan --json"]!);
    assertMatch(planned.vms[0].currentXml, /<graphics type='vnc'/);
    assertEquals(JSON.parse(outputs["apply --yes --json (converged)"]!).unchanged, [vm]);
    // After apply and the two rollbacks (the second restores the first's safety backup, i.e. the
    // applied definition), the password is still in libvirt.
    const now = port.getPersistentXml(vm, { secure: true });
    assertOk(now.includes(SECRET), "apply and rollback kept the password");
    assertOk(now.includes(`<cookie name='session'>${COOKIE}</cookie>`), "and the cookie");
    // Backups hold the secure XML, so they are private: 0700 directories, 0600 files.
    const modes = snapshotDir(stateDir);
    for (const [path, entry] of Object.entries(modes)) {
      const [type, mode] = entry.split(" ");
      assertEquals(mode, type === "dir" ? "700" : "600", `${path}: ${type} ${mode}`);
      assertOk(type !== "link", `${path} is a symlink`);
    }
    assertOk(Object.values(modes).some((e) => e.includes(SECRET)), "backups keep the secret");
    recordCase({
      area: "security",
      name: "VM with an HTTPS disk with <cookies>: plan, apply --yes, rollback --yes",
      count: runs.length,
      outcome: "plans and applies; cookie kept in libvirt and backups, never printed",
      test: TEST,
    });
    recordCase({
      area: "security",
      name: "documented permission set: devices, plan, apply --yes, backups, rollback --yes",
      count: runs.length,
      outcome: "all succeed on a real libvirtd; no password in any output",
      test: TEST,
    });
    recordCase({
      area: "security",
      name: "state directory and backup modes after apply and rollback",
      count: Object.keys(modes).length,
      outcome: "0700 directories, 0600 files, no symlinks",
      test: TEST,
    });
  },
});

Deno.test("writeBackup() refuses a per-VM backups directory planted as a symlink and writes nothing through it", () => {
  const base = Deno.makeTempDirSync({ prefix: "passthrough-security-" });
  try {
    const state = openStateDir(`${base}/state`);
    const elsewhere = `${base}/elsewhere`;
    Deno.mkdirSync(elsewhere, { mode: 0o700 });
    Deno.symlinkSync(elsewhere, `${base}/state/backups/${encodeVmName("vm")}`);
    let error: unknown = null;
    try {
      writeBackup(state, {
        vm: "vm",
        uuid: "u",
        xml: "<domain/>",
        reason: "apply",
        uri: "test:///x",
      });
    } catch (e) {
      error = e;
    }
    assertOk(error instanceof StateDirError, String(error));
    assertEquals([...Deno.readDirSync(elsewhere)], []);
    recordCase({
      area: "security",
      name: "per-VM backups directory is a planted symlink",
      count: 1,
      outcome: "StateDirError, nothing written through it",
      test: TEST,
    });
  } finally {
    Deno.removeSync(base, { recursive: true });
  }
});

Deno.test("passthrough rollback shows passwords as *** in its diff unless --show-secrets", async () => {
  await using tree = await demoTree();
  await using world = await writeTempWorld(`<node>
  <domain type='test'>
    <name>vm</name>
    <uuid>4dea22b3-1d52-d8f3-2516-782e98a3fa01</uuid>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <devices><graphics type='vnc' port='-1' autoport='yes' passwd='${SECRET}'/></devices>
  </domain>
</node>`);
  const stateDir = `${tree.dir}/state`;
  {
    using port = openLibvirtPort(world.uri);
    const secure = port.getPersistentXml("vm", { secure: true });
    // A backup that differs on the password's line, so the diff must show that line.
    writeBackup(openStateDir(stateDir), {
      vm: "vm",
      uuid: "4dea22b3-1d52-d8f3-2516-782e98a3fa01",
      xml: secure.replace(SECRET, "0ld-pass").replace("autoport='yes'", "autoport='no'"),
      reason: "apply",
      uri: port.uri,
    });
  }
  const runRollback = async (extra: string[]) => {
    const out: string[] = [];
    const code = await main([
      "rollback",
      "vm",
      "--connect",
      world.uri,
      "--state-dir",
      stateDir,
      ...extra,
    ], {
      out: (t) => out.push(t),
      err: (t) => out.push(t),
      color: false,
      interactive: true,
      readLine: () => Promise.resolve("n"),
      env: () => undefined,
    });
    return { code, text: out.join("") };
  };
  const hidden = await runRollback([]);
  assertEquals(hidden.code, 0, hidden.text);
  assertMatch(hidden.text, /-.*passwd='\*\*\*'/);
  assertOk(!hidden.text.includes(SECRET) && !hidden.text.includes("0ld-pass"), hidden.text);
  const shown = await runRollback(["--show-secrets"]);
  assertOk(shown.text.includes(SECRET) && shown.text.includes("0ld-pass"), shown.text);
  let newer: { time: string };
  {
    // A newer backup that differs only in the password: the rollback still shows a change.
    using port = openLibvirtPort(world.uri);
    const secure = port.getPersistentXml("vm", { secure: true });
    newer = writeBackup(openStateDir(stateDir), {
      vm: "vm",
      uuid: "4dea22b3-1d52-d8f3-2516-782e98a3fa01",
      xml: secure.replace(SECRET, "0ld-pass"),
      reason: "apply",
      uri: port.uri,
    });
  }
  const onlyPassword = await runRollback([]);
  assertMatch(onlyPassword.text, /^\+.*passwd='\*\*\*' \(changed\)/m);
  // The diff's sides are named: what is defined now, and the backup by its time.
  assertOk(
    onlyPassword.text.includes(`--- vm (current)\n+++ vm (backup ${newer.time})\n`),
    onlyPassword.text,
  );
  assertOk(
    !onlyPassword.text.includes(SECRET) && !onlyPassword.text.includes("0ld-pass"),
    onlyPassword.text,
  );
  recordCase({
    area: "security",
    name: "rollback diff of definitions read with secrets",
    count: 3,
    outcome: "passwords shown as *** unless --show-secrets; a reverted password shows (changed)",
    test: TEST,
  });
});

Deno.test("redactSecrets() hides every value libvirt formats only with VIR_DOMAIN_XML_SECURE", async () => {
  // Each kind of secret libvirt has: graphics passwords, and cookies of a network disk source,
  // its backing store's included.
  await using world = await writeTempWorld(`<node>
  <domain type='test'>
    <name>vm</name>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='network' device='disk'>
        <source protocol='https' name='/a.img'>
          <host name='example.org'/>
          <cookies><cookie name='s'>${COOKIE}-1</cookie><cookie name='t'>${COOKIE}-2</cookie></cookies>
        </source>
        <backingStore type='network'>
          <format type='raw'/>
          <source protocol='http' name='/b.img'>
            <host name='example.org'/>
            <cookies><cookie name='u'>${COOKIE}-3</cookie></cookies>
          </source>
          <backingStore/>
        </backingStore>
        <target dev='vda' bus='virtio'/>
      </disk>
      <graphics type='vnc' port='-1' passwd='${SECRET}-vnc'/>
      <graphics type='spice' port='-1' passwd='${SECRET}-spice'/>
    </devices>
  </domain>
</node>`);
  using port = openLibvirtPort(world.uri);
  const secure = port.getPersistentXml("vm", { secure: true });
  const plain = port.getPersistentXml("vm").replace(/<uuid>.*<\/uuid>/, "");
  // What the secure read adds: every attribute value (but element names' `name=`) and text of
  // its lines that the plain read does not have anywhere.
  const plainLines = new Set(plain.split("\n"));
  const added = secure.split("\n").filter((line) => !plainLines.has(line) && !/<uuid>/.test(line))
    .flatMap((line) => [
      ...[...line.matchAll(/\s(?!name=)[\w-]+='([^']*)'/g)].map((m) => m[1]!),
      ...[...line.matchAll(/>([^<]+)</g)].map((m) => m[1]!),
    ])
    .filter((value) => value.trim() !== "" && !plain.includes(value));
  assertEquals(added.sort(), [
    `${COOKIE}-1`,
    `${COOKIE}-2`,
    `${COOKIE}-3`,
    `${SECRET}-spice`,
    `${SECRET}-vnc`,
  ]);
  assertEquals(secretValues(secure).sort(), added);
  const before = secure.replace(`${COOKIE}-1`, "older");
  const printed = [
    redactSecrets(secure),
    redactedJson({ xml: secure }),
    renderDomainDiff(before, secure, { vm: "vm" }),
    renderDomainDiff("<domain>\n</domain>\n", secure, { vm: "vm" }),
  ];
  for (const text of printed) {
    for (const value of [...added, "older"]) assertOk(!text.includes(value), `${value} in ${text}`);
  }
  assertMatch(printed[2]!, /^\+\s*<cookie name='s'>\*\*\* \(changed\)<\/cookie>/m);
  recordCase({
    area: "security",
    name: "every value libvirt shows only with VIR_DOMAIN_XML_SECURE (passwd, disk cookies)",
    count: added.length,
    outcome: "redacted in text, --json and diffs; a changed cookie marked (changed)",
    test: TEST,
  });
});

Deno.test("passthrough rollback shows disk cookies as *** in its diff and marks one that changed", async () => {
  await using tree = await demoTree();
  await using world = await writeTempWorld(`<node>
  <domain type='test'>
    <name>vm</name>
    <uuid>4dea22b3-1d52-d8f3-2516-782e98a3fa01</uuid>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>${cookieDisk(COOKIE)}</devices>
  </domain>
</node>`);
  const stateDir = `${tree.dir}/state`;
  {
    using port = openLibvirtPort(world.uri);
    const secure = port.getPersistentXml("vm", { secure: true });
    assertOk(secure.includes(COOKIE));
    writeBackup(openStateDir(stateDir), {
      vm: "vm",
      uuid: "4dea22b3-1d52-d8f3-2516-782e98a3fa01",
      xml: secure.replace(COOKIE, "0ld-c00kie"),
      reason: "apply",
      uri: port.uri,
    });
  }
  const out: string[] = [];
  const code = await main(["rollback", "vm", "--connect", world.uri, "--state-dir", stateDir], {
    out: (t) => out.push(t),
    err: (t) => out.push(t),
    color: false,
    interactive: true,
    readLine: () => Promise.resolve("n"),
    env: () => undefined,
  });
  const text = out.join("");
  assertEquals(code, 0, text);
  assertOk(!text.includes(COOKIE) && !text.includes("0ld-c00kie"), text);
  assertMatch(text, /^\+\s*<cookie name='session'>\*\*\* \(changed\)<\/cookie>/m);
  recordCase({
    area: "security",
    name: "rollback diff of a disk cookie that differs from the backup's",
    count: 1,
    outcome: "cookie values shown as ***, the change marked (changed)",
    test: TEST,
  });
});

Deno.test("a password written into a libvirt URI is shown as *** in messages and JSON", async () => {
  await using tree = await demoTree();
  const config = `${tree.dir}/c.yaml`;
  await Deno.writeTextFile(config, gpuConfig("vm"));
  // A quote, `#`, `?` or `/` in the password makes libvirt quote the whole URI ("Unable to parse
  // URI ..."); a plain one fails at once too: nothing listens on port 1.
  // A space makes libvirt quote it too; digits then `/` it reads as a port and a path.
  const passwords = [SECRET, `${SECRET}"x`, `x'${SECRET}`, `${SECRET}#x?y`, `${SECRET}/+=`];
  for (const password of [...passwords, `${SECRET} x`, `123/${SECRET}`]) {
    const uri = `qemu+tcp://admin:${password}@127.0.0.1:1/system`;
    for (const json of [[], ["--json"]]) {
      const ways: [string[], Record<string, string>][] = [
        [["--connect", uri], {}],
        [[], { LIBVIRT_DEFAULT_URI: uri }],
      ];
      for (const [flags, env] of ways) {
        const args = ["plan", ...json, "--sysfs", tree.sysfs, "--config", config, ...flags];
        const { code, stdout, stderr } = await runCli(args, { env });
        assertEquals(code, 1, stderr);
        assertEquals(`${stdout}${stderr}`.includes(SECRET), false, `${stdout}${stderr}`);
        assertMatch(`${stdout}${stderr}`, /qemu\+tcp:\/\/admin:\*\*\*@127\.0\.0\.1:1\/system/);
      }
    }
  }
  recordCase({
    area: "security",
    name: "a password in a libvirt URI's user information",
    count: 2,
    outcome: "shown as *** in the error message and the JSON error",
    test: TEST,
  });
});

Deno.test("a password in an ssh URI is *** where ssh's refusal quotes it as the login name", async () => {
  await using tree = await demoTree();
  // libvirt runs `ssh -l admin:PASSWORD hv9` (the password decoded); refused, OpenSSH's ssh
  // prints this line (as it does against a real sshd), which libvirt puts in its error.
  await Deno.writeTextFile(
    `${tree.dir}/ssh`,
    `#!/bin/sh\nwhile [ "$1" != -l ]; do shift; done\n` +
      `echo "$2@hv9: Permission denied (publickey)." >&2\nexit 255\n`,
    { mode: 0o755 },
  );
  const uri = `qemu+ssh://admin:${SECRET}@hv9/system`;
  // Written encoded, as a password holding `@` or `:` must be: libvirt decodes it for ssh.
  const encoded = `qemu+ssh://admin:${SECRET.replace("-", "%2D")}%40x@hv9/system`;
  const path = `${tree.dir}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`;
  const ways: [string[], Record<string, string>][] = [
    [["--connect", uri], { PATH: path }],
    [[], { PATH: path, LIBVIRT_DEFAULT_URI: uri }],
    [["--connect", encoded], { PATH: path }],
  ];
  // libvirt quotes ssh's stderr only when it has read it by the time the connection ends, which
  // a loaded machine can miss once; the password must never show, and the line shows masked.
  let quoted = 0;
  for (const json of [[], ["--json"]]) {
    for (const [flags, env] of ways) {
      for (const command of ["sources", "doctor"]) {
        const args = [command, ...json, "--sysfs", tree.sysfs, ...flags];
        const { stdout, stderr } = await runCli(args, { env });
        const out = `${stdout}${stderr}`;
        assertEquals(out.includes(SECRET), false, out);
        if (!out.includes("Permission denied")) continue;
        assertMatch(out, /admin:\*\*\*@hv9: Permission denied/, `${args.join(" ")}\n${out}`);
        quoted++;
      }
    }
  }
  assertOk(quoted > 8, `libvirt quoted ssh's refusal in ${quoted} of 12 runs`);
});

Deno.test({
  name: "a password in an ssh URI is *** where a real ssh's refusal quotes it escaped",
  ignore: Deno.uid() !== 0 || !pathExists("/usr/sbin/sshd") || !pathExists("/usr/bin/ssh"),
  async fn() {
    await using tree = await demoTree();
    // A real sshd on this host that takes keys only, and none: every login is refused.
    await new Deno.Command("ssh-keygen", {
      args: ["-q", "-t", "ed25519", "-N", "", "-f", `${tree.dir}/hostkey`],
    }).output();
    const port = (() => {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      listener.close();
      return (listener.addr as Deno.NetAddr).port;
    })();
    Deno.mkdirSync("/run/sshd", { recursive: true });
    const sshd = new Deno.Command("/usr/sbin/sshd", {
      args: [
        "-D",
        "-e",
        ...["-o", `Port=${port}`, "-o", "ListenAddress=127.0.0.1"],
        ...["-o", `HostKey=${tree.dir}/hostkey`, "-o", "AuthorizedKeysFile=/dev/null"],
        ...["-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no"],
        ...["-o", "UsePAM=no", "-o", `PidFile=${tree.dir}/sshd.pid`],
        "-f",
        "/dev/null",
      ],
      stderr: "null",
    }).spawn();
    try {
      for (let i = 0; i < 100; i++) {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          break;
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
      // The real ssh, kept from root's known_hosts.
      await Deno.writeTextFile(
        `${tree.dir}/ssh`,
        `#!/bin/sh\nexec /usr/bin/ssh -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no "$@"\n`,
        { mode: 0o755 },
      );
      const env = { PATH: `${tree.dir}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}` };
      // ssh writes `\` as `\\` and a byte outside ASCII as `\ooo` in what it logs
      // ("admin:T\303\266pSecret@127.0.0.1: Permission denied (publickey).").
      for (const password of ["Top%5CSecret", "T%C3%B6pSecret"]) {
        const uri = `qemu+ssh://admin:${password}@127.0.0.1:${port}/system?no_tty=1`;
        const { stdout, stderr } = await runCli(["sources", "--sysfs", tree.sysfs, "-c", uri], {
          env,
        });
        const out = `${stdout}${stderr}`;
        assertMatch(out, /admin:\*\*\*@127\.0\.0\.1: Permission denied/, password);
        assertEquals(out.includes("Secret"), false, out);
      }
    } finally {
      sshd.kill();
      await sshd.status;
    }
  },
});

Deno.test("a password in a libvirt URI is *** in a config error and a usage error, as text and as JSON", async () => {
  await using tree = await demoTree();
  const uri = `qemu+tcp://admin:${SECRET}@hv1/system`;
  const config = `${tree.dir}/c.yaml`;
  // A config value holding a control character is quoted in its error (escaped).
  await Deno.writeTextFile(
    config,
    `version: 1\nhosts:\n  lab:\n    connect: "${uri}\\x01"\nvms: {}\n`,
  );
  for (const json of [[], ["--json"]]) {
    const runs = [
      // --json printed "message": "... Invalid character U+0001 in \"qemu+tcp://admin:pt-s3crt@...".
      ["plan", ...json, "--sysfs", tree.sysfs, "--config", config, "--host", "lab"],
      // The URI without --connect: "Unexpected argument \"qemu+tcp://admin:pt-s3crt@hv1/system\"".
      ["plan", ...json, "--sysfs", tree.sysfs, "--config", config, uri],
    ];
    for (const args of runs) {
      const { code, stdout, stderr } = await runCli(args);
      assertOk(code !== 0, stderr);
      assertEquals(`${stdout}${stderr}`.includes(SECRET), false, `${stdout}${stderr}`);
      assertMatch(`${stdout}${stderr}`, /qemu\+tcp:\/\/admin:\*\*\*@hv1\/system/);
    }
  }
});

Deno.test("sources shows a password written into a libvirt URI as ***, as text and as JSON", async () => {
  await using tree = await demoTree();
  // The test driver opens a URI with user information, and gives it back as written.
  const uri = `test://admin:${SECRET}@${ROOT}tests/fixtures/worlds/empty.xml`;
  for (const json of [[], ["--json"]]) {
    const { stdout, stderr } = await runCli([
      "sources",
      ...json,
      "--sysfs",
      tree.sysfs,
      "--connect",
      uri,
    ]);
    // It printed "libvirt (test://admin:pt-s3crt@/...): 0 functions" and "libvirt": "test://...".
    assertEquals(`${stdout}${stderr}`.includes(SECRET), false, `${stdout}${stderr}`);
    assertMatch(stdout, /test:\/\/admin:\*\*\*@\//);
  }
});

Deno.test("doctor shows a password written into a libvirt URI as ***, as text and as JSON", async () => {
  await using tree = await demoTree();
  const uri = `qemu+tcp://admin:${SECRET}@127.0.0.1:1/system`;
  for (const json of [[], ["--json"]]) {
    const args = ["doctor", ...json, "--sysfs", tree.sysfs, "--connect", uri];
    const { stdout, stderr } = await runCli(args);
    // Its libvirt finding quoted the URI as given: "Cannot reach libvirt: ... admin:pt-s3crt@...".
    assertEquals(`${stdout}${stderr}`.includes(SECRET), false, `${stdout}${stderr}`);
    assertMatch(stdout, /qemu\+tcp:\/\/admin:\*\*\*@127\.0\.0\.1:1\/system/);
  }
});

Deno.test("backups --json shows a password in the libvirt URI a backup came from as ***", async () => {
  const base = Deno.makeTempDirSync({ prefix: "passthrough-security-" });
  try {
    // As `apply --connect test://u:PASSWORD@/ABS/world.xml` records it (the test driver opens it).
    const uri = `test://admin:${SECRET}@/srv/world.xml`;
    const state = openStateDir(`${base}/state`);
    writeBackup(state, { vm: "vm", uuid: "u", xml: "<domain/>", reason: "apply", uri });
    const run = await runCli(["backups", "--json", "--state-dir", `${base}/state`]);
    assertEquals(run.code, 0, run.stderr);
    // It printed "uri": "test://admin:pt-s3crt@/srv/world.xml".
    assertEquals(run.stdout.includes(SECRET), false, run.stdout);
    assertEquals(JSON.parse(run.stdout)[0].uri, "test://admin:***@/srv/world.xml");
  } finally {
    Deno.removeSync(base, { recursive: true });
  }
});

Deno.test({
  name: "apply to another machine's libvirt shows a password in its URI as *** in its guard note",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    // A URI with a host that still reaches the private daemon.
    const uri = relayedRemoteUri(daemon, tree.dir, `admin:${SECRET}@hv9.invalid`);
    const config = `${tree.dir}/c.yaml`;
    // A guard policy: the note says the guard state is on that machine, naming the URI.
    await Deno.writeTextFile(
      config,
      gpuConfig("pt-absent").replace("devices:", "guard: warn\n    devices:"),
    );
    const { stdout, stderr } = await runCli([
      "apply",
      "--yes",
      "--sysfs",
      tree.sysfs,
      "--config",
      config,
      "--connect",
      uri,
      "--allow-uri-programs",
      "--state-dir",
      `${tree.dir}/state`,
    ]);
    assertMatch(
      stderr,
      /the start guard's refusals and policies for the VMs of "qemu\+ext:\/\/admin:\*\*\*@hv9\.invalid\/system/,
    );
    // It printed the URI as libvirt gave it back, password and all.
    assertEquals(`${stdout}${stderr}`.includes(SECRET), false, `${stdout}${stderr}`);
  },
});
