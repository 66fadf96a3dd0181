/**
 * Faults on a real libvirtd and a real file system: the daemon killed between plan and apply and
 * in the middle of an apply, a define libvirt rejects, a VM another client changes while apply
 * runs, a full state directory, and two `apply` processes at once. After each: a clear error,
 * nothing half-written, and a rerun converges.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import {
  type Libvirtd,
  libvirtdUnavailable,
  startLibvirtd,
  undefineUnlessIsolated,
} from "../helpers/libvirtd.ts";
import { writeTempWorld } from "../helpers/world.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { Connection } from "../../ffi/connection.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import { applyPlan, type ConfirmAnswer } from "../../lib/apply/apply.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import type { Plan, VmPlan } from "../../lib/plan/types.ts";
import { type Config, parseConfig } from "../../lib/config/config.ts";
import { parseDomainXml, sameBesidesHostdevs, samePciDevice } from "../../lib/domain/domain_xml.ts";
import { listBackups, readBackupXml, writeBackup } from "../../lib/state/backups.ts";
import { loadHost } from "../../cli/host_options.ts";
import type { HostTopology } from "../../lib/host/types.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import {
  demoTree,
  gpuConfig,
  killHard,
  killHardSync,
  planGpu,
  qemuDomainXml,
  snapshotDir,
  snapshotDomains,
} from "../helpers/reliability.ts";
import { hasScript, runCli, runCliOnPty } from "../helpers/cli.ts";
import { withFault } from "../helpers/plan_world.ts";
import { PROC_DOMAIN_DEFINE_XML_FLAGS, startRpcHook } from "../helpers/rpc_hook.ts";
import { rollbackVm } from "../../lib/apply/rollback.ts";

const TEST = "tests/apply/faults_test.ts";
const A = "pt-fault-a";
const B = "pt-fault-b";
const daemonMissing = libvirtdUnavailable();

function twoVmConfig(): Config {
  return parseConfig(
    [
      "version: 1",
      "vms:",
      `  ${A}:`,
      "    devices:",
      '      - { name: gpu, match: { vendor_device_id: "10de:1b80" } }',
      `  ${B}:`,
      "    devices:",
      '      - { name: rx580, match: { vendor_device_id: "1002:67df" } }',
      "",
    ].join("\n"),
    { file: "faults.yaml" },
  );
}

const yes = (): Promise<ConfirmAnswer> => Promise.resolve("yes");
const yes2 = (): Promise<boolean> => Promise.resolve(true);

function hostdevsOf(port: LibvirtPort, vm: string): string[] {
  return parseDomainXml(port.getPersistentXml(vm)).hostdevs.map((h) => h.address).sort();
}

Deno.test({
  name:
    "applyPlan() on a real libvirtd: daemon killed between plan and apply and during apply, rejected define, concurrent edit; reruns converge",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    const host: HostTopology = await loadHost(tree.sysfs);
    const config = twoVmConfig();
    const stateDir = `${tree.dir}/state`;
    let port = openLibvirtPort(daemon.uri);
    const restart = async () => {
      port.close();
      await daemon.restart();
      port = openLibvirtPort(daemon.uri);
    };
    try {
      port.define(qemuDomainXml(A));
      port.define(qemuDomainXml(B));
      const original = snapshotDomains(port);

      // 1. Killed between plan and apply: nothing read, nothing backed up, nothing defined.
      const plan1 = planHostdevs({ config, host, libvirt: port });
      assertEquals(plan1.vms.map((vm) => vm.changed), [true, true]);
      const state0 = snapshotDir(stateDir);
      await killHard(daemon.pid);
      const r1 = await applyPlan(plan1, { libvirt: port, stateDir, confirm: yes });
      assertEquals(r1.vms.map((v) => v.code), ["read-failed", "read-failed"]);
      assertMatch(r1.vms[0]!.message, new RegExp(`^Cannot read the definition of "${A}": `));
      assertEquals(r1.ok, false);
      assertEquals(listBackups(stateDir), []);
      await restart();
      assertEquals(snapshotDomains(port), original);
      assertOk(Object.keys(state0).length === 0 || listBackups(stateDir).length === 0);
      recordCase({
        area: "fault",
        name: "libvirtd killed between plan and apply",
        count: 1,
        outcome: "read-failed per VM, no backup, definitions unchanged after restart",
        test: TEST,
      });

      // 2. Killed during apply, just before B's define: A is applied, B fails with its backup
      // written and intact; after a restart B is as it was, and a rerun converges.
      const plan2 = planHostdevs({ config, host, libvirt: port });
      const killingPort = withFault(port, (xml) => {
        if (parseDomainXml(xml).name === B) killHardSync(daemon.pid);
      });
      const r2 = await applyPlan(plan2, { libvirt: killingPort, stateDir, confirm: yes });
      // The connection died with the define: whether it was committed is unknown, and said so.
      assertEquals(r2.vms.map((v) => [v.vm, v.code]), [[A, "applied"], [B, "define-unknown"]]);
      assertMatch(
        r2.vms[1]!.message,
        new RegExp(`^The define of "${B}" may or may not have taken effect: .*check with`),
      );
      assertEquals(readBackupXml(listBackups(stateDir, B)[0]!), original[B]);
      await restart();
      assertEquals(hostdevsOf(port, A), ["0000:21:00.0", "0000:21:00.1"]);
      assertEquals(port.getPersistentXml(B, { secure: true }), original[B]);
      for (const backup of listBackups(stateDir)) readBackupXml(backup); // sha256 checked
      assertEquals(
        Object.keys(snapshotDir(stateDir)).filter((p) => p.endsWith(".tmp")),
        [],
        "no temporary files left",
      );
      const plan3 = planHostdevs({ config, host, libvirt: port });
      assertEquals(plan3.vms.map((vm) => vm.changed), [false, true]);
      const r3 = await applyPlan(plan3, { libvirt: port, stateDir, confirm: yes });
      assertEquals([r3.changed, r3.unchanged, r3.ok], [[B], [A], true]);
      const plan4 = planHostdevs({ config, host, libvirt: port });
      assertEquals(plan4.vms.map((vm) => vm.changed), [false, false]);
      recordCase({
        area: "fault",
        name: "libvirtd killed during apply (between two VMs' defines)",
        count: 1,
        outcome:
          "first VM applied, second's outcome reported unknown, backups intact, rerun converges",
        test: TEST,
      });

      // 3. The daemon dies right after a define: the check cannot read back. After a restart
      // the definition holds the change (or the old one), never a mix, and a rerun converges.
      const afterDefine = withFault(port, () => {}, () => killHardSync(daemon.pid));
      // The config still gives A its GPU: re-planning A alone with a changed ROM setting makes
      // a real edit to define.
      const romConfig = parseConfig(
        `version: 1\nvms:\n  ${A}:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:1b80" }\n        rom: { bar: "off" }\n`,
        { file: "rom.yaml" },
      );
      const plan6 = planHostdevs({ config: romConfig, host, libvirt: port });
      assertEquals(plan6.vms[0]?.changed, true);
      const r6 = await applyPlan(plan6, { libvirt: afterDefine, stateDir, confirm: yes });
      assertEquals(r6.vms[0]?.code, "verify-failed");
      // libvirt took the define before it died: the message must not say the VM lacks the
      // hostdevs, and must say how to find out once libvirt answers again.
      assertMatch(
        r6.vms[0]!.message,
        new RegExp(
          `^The new definition of "${A}" was defined but could not be read back to check its hostdevs: .*; restoring the backup ".*" failed too: .*, so "${A}" most likely holds the new definition: check with "passthrough plan" once libvirt answers`,
        ),
      );
      await restart();
      const held = port.getPersistentXml(A);
      assertOk(held.includes("<rom bar='off'/>"), "the define that succeeded is kept whole");
      const plan7 = planHostdevs({ config: romConfig, host, libvirt: port });
      assertEquals(plan7.vms[0]?.changed, false);
      recordCase({
        area: "fault",
        name: "libvirtd killed right after a define, before the check",
        count: 1,
        outcome: "verify-failed naming the backup; definition whole after restart; rerun converges",
        test: TEST,
      });

      // 4. A define libvirt rejects: the VM and the state directory's existing backups stay.
      const current = port.getPersistentXml(B, { secure: true });
      const bad: VmPlan = {
        ...plan7.vms[0]!,
        name: B,
        currentXml: current,
        desiredXml: current.replace("</devices>", "<bogus-device/>\n  </devices>"),
        changed: true,
        errors: [],
      };
      const beforeReject = snapshotDomains(port);
      const backupsBefore = listBackups(stateDir).length;
      const r8 = await applyPlan(planOf(port, [bad]), { libvirt: port, stateDir, confirm: yes });
      assertEquals(r8.vms[0]?.code, "define-failed");
      assertMatch(r8.vms[0]!.message, new RegExp(`libvirt rejected the new definition of "${B}"`));
      assertEquals(snapshotDomains(port), beforeReject);
      assertEquals(listBackups(stateDir).length, backupsBefore + 1);
      assertEquals(readBackupXml(listBackups(stateDir, B)[0]!), beforeReject[B]);
      recordCase({
        area: "fault",
        name: "define rejected by libvirt (schema)",
        count: 1,
        outcome: "define-failed, VM unchanged, its backup written and intact",
        test: TEST,
      });

      // 5. Another client (virsh, its own process) edits B while apply waits for confirmation.
      const onlyA = parseConfig(gpuConfig(A), { file: "only_a.yaml" });
      const dropB: Config = { ...onlyA, vms: [...onlyA.vms, { ...config.vms[1]!, rules: [] }] };
      const plan9 = planHostdevs({ config: dropB, host, libvirt: port });
      assertEquals(plan9.vms.map((vm) => vm.changed), [true, true]);
      const backups9 = listBackups(stateDir, B).length;
      const hostdevsB = hostdevsOf(port, B);
      assertEquals(hostdevsB.length, 2);
      const r9 = await applyPlan(plan9, {
        libvirt: port,
        stateDir,
        confirm: async (vm) => {
          if (vm.name === B) {
            const out = await new Deno.Command("virsh", {
              args: ["-c", daemon.uri, "desc", B, "--config", "--new-desc", "edited elsewhere"],
              stdout: "null",
              stderr: "piped",
            }).output();
            assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
          }
          return "yes";
        },
      });
      const b = r9.vms.find((v) => v.vm === B)!;
      assertEquals(b.code, "drift");
      assertMatch(
        b.message,
        /changed since the plan was made: .*edited elsewhere.*run the plan again/,
      );
      assertMatch(port.getPersistentXml(B), /<description>edited elsewhere<\/description>/);
      assertEquals(hostdevsOf(port, B), hostdevsB, "B's hostdevs were not removed");
      assertEquals(listBackups(stateDir, B).length, backups9, "no backup for a drifted VM");
      recordCase({
        area: "concurrency",
        name: "VM edited by another client (virsh) during apply",
        count: 1,
        outcome: "drift, the other client's change kept, nothing defined or backed up",
        test: TEST,
      });
    } finally {
      port.close();
    }
  },
});

function planOf(port: LibvirtPort, vms: VmPlan[]): Plan {
  return { config: "", host: "", uri: port.uri, errors: [], warnings: [], vms };
}

/** Whether this process may mount (root with CAP_SYS_ADMIN). */
function mountWorks(dir: string): boolean {
  const out = new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", dir],
    stdout: "null",
    stderr: "null",
  }).outputSync();
  return out.success;
}

Deno.test("applyPlan() defines nothing when the state directory's disk is full", async (t) => {
  const base = await Deno.makeTempDir({ prefix: "passthrough-full-" });
  const mountPoint = `${base}/mnt`;
  await Deno.mkdir(mountPoint);
  if (Deno.uid() !== 0 || !mountWorks(mountPoint)) {
    await Deno.remove(base, { recursive: true });
    await t.step({ name: "skipped: cannot mount a tmpfs here", ignore: true, fn: () => {} });
    return;
  }
  try {
    await using tree = await demoTree();
    // A definition larger than what is left on the 64 KiB tmpfs.
    const description = "x".repeat(80 * 1024);
    await using world = await writeTempWorld(`<node>
  <domain type='test'>
    <name>${A}</name>
    <uuid>4dea22b3-1d52-d8f3-2516-782e98a3fa01</uuid>
    <description>${description}</description>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
  </domain>
</node>`);
    using port = openLibvirtPort(world.uri);
    const stateDir = `${mountPoint}/state`;
    const plan = await planGpu(A, { sysfs: tree.sysfs, libvirt: port });
    const before = snapshotDomains(port);
    const report = await applyPlan(plan, { libvirt: port, stateDir, confirm: yes });
    assertEquals(report.vms[0]?.code, "backup-failed");
    // Where, since the system's error names no file.
    assertMatch(
      report.vms[0]!.message,
      new RegExp(
        `cannot write its backup in "${stateDir}/backups/${A}", so it was not defined: .*No space left`,
        "i",
      ),
    );
    assertEquals(snapshotDomains(port), before);
    // Nothing half-written: no backup, no sidecar, no temporary file.
    const left = Object.entries(snapshotDir(stateDir))
      .filter(([path, entry]) => path.startsWith("backups/") && !entry.startsWith("dir "))
      .map(([path]) => path);
    assertEquals(left, [], `left behind: ${left}`);
    // Not even an empty directory for the VM, which `backups` would list.
    assertEquals(
      Object.keys(snapshotDir(stateDir)).filter((path) => path.startsWith("backups/")),
      [],
    );
    recordCase({
      area: "fault",
      name: "state directory on a full file system (64 KiB tmpfs)",
      count: 1,
      outcome: "backup-failed, no define, no partial file",
      test: TEST,
    });
  } finally {
    await new Deno.Command("umount", { args: [mountPoint] }).output();
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("rollbackVm() defines nothing, and says whose backup failed where, when the state directory's disk is full", async (t) => {
  const base = await Deno.makeTempDir({ prefix: "passthrough-full-" });
  const mountPoint = `${base}/mnt`;
  await Deno.mkdir(mountPoint);
  if (Deno.uid() !== 0 || !mountWorks(mountPoint)) {
    await Deno.remove(base, { recursive: true });
    await t.step({ name: "skipped: cannot mount a tmpfs here", ignore: true, fn: () => {} });
    return;
  }
  try {
    const small = `<domain type='test'>
    <name>${A}</name>
    <uuid>4dea22b3-1d52-d8f3-2516-782e98a3fa01</uuid>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
  </domain>`;
    // Now the definition is larger than what is left on the 64 KiB tmpfs.
    await using world = await writeTempWorld(`<node>
${small.replace("</uuid>", `</uuid>\n    <description>${"x".repeat(80 * 1024)}</description>`)}
</node>`);
    using port = openLibvirtPort(world.uri);
    const stateDir = `${mountPoint}/state`;
    const earlier = writeBackup(stateDir, {
      vm: A,
      uuid: "4dea22b3-1d52-d8f3-2516-782e98a3fa01",
      xml: small,
      reason: "apply",
      uri: port.uri,
    });
    const before = snapshotDomains(port);
    const report = await rollbackVm(A, { libvirt: port, stateDir, confirm: yes2 });
    assertEquals([report.status, report.code, report.safetyBackup], [
      "failed",
      "backup-failed",
      null,
    ]);
    // The system's error names no file: the message says whose backup, where, and what it did.
    assertMatch(
      report.message,
      new RegExp(
        `^Not restored: cannot back up the definition of "${A}" that backup "${earlier.id}" would replace, in "${stateDir}/backups/${A}", so nothing was defined: .*No space left`,
        "i",
      ),
    );
    assertEquals(snapshotDomains(port), before);
    assertEquals(listBackups(stateDir, A).map((b) => b.id), [earlier.id]);
  } finally {
    await new Deno.Command("umount", { args: [mountPoint] }).output();
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("applyPlan() defines nothing when the state directory is on a read-only file system", async (t) => {
  const base = await Deno.makeTempDir({ prefix: "passthrough-ro-" });
  const mountPoint = `${base}/mnt`;
  await Deno.mkdir(mountPoint);
  if (Deno.uid() !== 0 || !mountWorks(mountPoint)) {
    await Deno.remove(base, { recursive: true });
    await t.step({ name: "skipped: cannot mount a tmpfs here", ignore: true, fn: () => {} });
    return;
  }
  try {
    // A state directory that exists and is private, then the file system turns read-only.
    await Deno.mkdir(`${mountPoint}/state/backups`, { recursive: true, mode: 0o700 });
    await Deno.chmod(`${mountPoint}/state`, 0o700);
    const remount = await new Deno.Command("mount", {
      args: ["-o", "remount,ro", mountPoint],
      stderr: "null",
    }).output();
    assertOk(remount.success, "remount read-only");
    await using tree = await demoTree();
    await using world = await writeTempWorld(`<node>
  <domain type='test'>
    <name>${A}</name>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
  </domain>
</node>`);
    using port = openLibvirtPort(world.uri);
    const stateDir = `${mountPoint}/state`;
    const plan = await planGpu(A, { sysfs: tree.sysfs, libvirt: port });
    const before = snapshotDomains(port);
    const state = snapshotDir(stateDir);
    let message = "";
    try {
      const report = await applyPlan(plan, { libvirt: port, stateDir, confirm: yes });
      assertEquals(report.vms[0]?.status, "failed");
      message = report.vms[0]!.message;
    } catch (error) {
      message = (error as Error).message;
    }
    assertMatch(message, /Read-only file system|read-only/i);
    assertEquals(snapshotDomains(port), before);
    assertEquals(snapshotDir(stateDir), state);
    recordCase({
      area: "fault",
      name: "state directory on a read-only file system",
      count: 1,
      outcome: "clear error before any define; definitions and state byte-identical",
      test: TEST,
    });
  } finally {
    await new Deno.Command("umount", { args: [mountPoint] }).output();
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test({
  name:
    "two passthrough apply processes at once on a real libvirtd: the second fails on the lock, the first applies once",
  ignore: daemonMissing !== null || !hasScript(),
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    using port = openLibvirtPort(daemon.uri);
    port.define(qemuDomainXml(A));
    const config = `${tree.dir}/config.yaml`;
    await Deno.writeTextFile(config, gpuConfig(A));
    const stateDir = `${tree.dir}/state`;
    const args = [
      "apply",
      "--config",
      config,
      "--sysfs",
      tree.sysfs,
      "--connect",
      daemon.uri,
      "--state-dir",
      stateDir,
    ];
    // The first run gets a real terminal (script) and holds the lock while it waits for "y".
    await using first = runCliOnPty(args, { flags: ["-A"] });
    const seen = await first.waitFor(/Apply the changes to "pt-fault-a"\?/);
    assertMatch(seen, /Apply the changes to "pt-fault-a"\?/);
    const second = await runCli([...args, "--yes"], { flags: ["-A"] });
    assertEquals(second.code, 1, second.stdout + second.stderr);
    assertMatch(second.stderr, /Another passthrough apply holds the lock/);
    assertEquals(second.stdout, "");
    assertEquals(listBackups(stateDir), []);
    await first.type("y\n");
    const { code, screen } = await first.finish();
    assertEquals(code, 0, screen);
    assertEquals(listBackups(stateDir).length, 1);
    assertEquals(hostdevsOf(port, A), ["0000:21:00.0", "0000:21:00.1"]);
    recordCase({
      area: "concurrency",
      name: "two apply processes at once (one waiting at its prompt)",
      count: 1,
      outcome: "second fails fast naming the holder, first applies exactly once",
      test: TEST,
    });
  },
});

Deno.test({
  name: "passthrough rollback exits 1 when it cannot tell whether the restore took effect",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    const stateDir = `${daemon.dir}/state`;
    using port = openLibvirtPort(daemon.uri);
    port.define(qemuDomainXml(A));
    const original = port.getPersistentXml(A, { secure: true });
    writeBackup(stateDir, {
      vm: A,
      uuid: parseDomainXml(original).uuid!,
      xml: original,
      reason: "apply",
      uri: daemon.uri,
    });
    port.define(original.replace("</name>", "</name>\n  <description>edited</description>"));
    {
      // The define's reply is dropped and the connection closed: nothing can be read back.
      await using cut = await startRpcHook({
        socket: `${daemon.dir}/libvirt-sock`,
        dir: daemon.dir,
        proc: PROC_DOMAIN_DEFINE_XML_FLAGS,
        command: ["true"],
        cut: true,
      });
      const result = await runCli(
        ["rollback", A, "--yes", "-c", cut.uri, "--state-dir", stateDir],
        { flags: ["-A"] },
      );
      await cut.ran;
      // A script must not take "may or may not have taken effect" for a restore.
      assertMatch(
        result.stdout,
        new RegExp(`The rollback of "${A}" to backup ".*" may or may not`),
      );
      assertEquals(result.code, 1, result.stdout + result.stderr);
    }
  },
});

Deno.test({
  name:
    "a define (or rollback) the daemon committed before dying is reported as unknown, naming the backup, not as rejected",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    const stateDir = `${tree.dir}/state`;
    let port = openLibvirtPort(daemon.uri);
    // A proxy in front of the daemon: it lets the define through, kills the daemon once the
    // define is committed and answered, and drops the answer.
    const cutter = () =>
      startRpcHook({
        socket: `${daemon.dir}/libvirt-sock`,
        dir: daemon.dir,
        proc: PROC_DOMAIN_DEFINE_XML_FLAGS,
        command: ["kill", "-KILL", String(daemon.pid)],
        cut: true,
      });
    try {
      port.define(qemuDomainXml(A));
      const original = port.getPersistentXml(A, { secure: true });
      {
        await using cut = await cutter();
        using through = openLibvirtPort(cut.uri);
        const plan = await planGpu(A, { sysfs: tree.sysfs, libvirt: through });
        // As `apply --sysfs TREE -c URI` runs it: the plan it says to check with reads the same.
        const run = { sysfs: tree.sysfs, connect: cut.uri };
        const report = await applyPlan(plan, { libvirt: through, stateDir, confirm: yes, run });
        await cut.ran;
        const result = report.vms[0]!;
        assertEquals([result.status, result.code, report.ok], ["failed", "define-unknown", false]);
        assertMatch(
          result.message,
          new RegExp(
            `^The define of "${A}" may or may not have taken effect: .*; its previous definition is in backup ".*": check with "passthrough plan`,
          ),
        );
        assertOk(
          result.message.includes(
            `check with "passthrough plan --sysfs ${tree.sysfs} -c '${cut.uri}'" (no change left`,
          ),
          result.message,
        );
        assertEquals(readBackupXml(listBackups(stateDir, A)[0]!), original);
        assertEquals(result.backup, listBackups(stateDir, A)[0]!.path);
      }
      port.close();
      await daemon.restart();
      port = openLibvirtPort(daemon.uri);
      // The daemon had committed it: the change is there, and planning again finds nothing to do.
      assertEquals(hostdevsOf(port, A), ["0000:21:00.0", "0000:21:00.1"]);
      const again = await planGpu(A, { sysfs: tree.sysfs, libvirt: port });
      assertEquals(again.vms[0]?.changed, false);

      // The same for a rollback to the backup taken before that define.
      {
        await using cut = await cutter();
        using through = openLibvirtPort(cut.uri);
        const report = await rollbackVm(A, { libvirt: through, stateDir, confirm: yes2 });
        await cut.ran;
        assertEquals([report.status, report.code], ["unknown", "define-unknown"]);
        assertMatch(
          report.message,
          new RegExp(
            `^The rollback of "${A}" to backup ".*" may or may not have taken effect: .*the replaced definition is in backup`,
          ),
        );
      }
      port.close();
      await daemon.restart();
      port = openLibvirtPort(daemon.uri);
      assertEquals(port.getPersistentXml(A, { secure: true }), original);
      recordCase({
        area: "fault",
        name: "libvirtd dies after committing a define, before its reply (apply and rollback)",
        count: 2,
        outcome: "define-unknown / unknown naming the backup and how to check; never 'unchanged'",
        test: TEST,
      });
    } finally {
      port.close();
    }
  },
});

Deno.test({
  name:
    "a device given to another VM by another client while apply waits at its prompt is not defined into a second VM",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    const stateDir = `${tree.dir}/state`;
    using port = openLibvirtPort(daemon.uri);
    const C = "pt-fault-c";
    port.define(qemuDomainXml(A));
    port.define(qemuDomainXml(C));
    const plan = await planGpu(A, { sysfs: tree.sysfs, libvirt: port });
    assertEquals(plan.vms[0]?.add.map((a) => a.address), ["0000:21:00.0", "0000:21:00.1"]);
    // The GPU's audio function, as `virsh attach-device --config` would add it by hand.
    const hostdev = `${tree.dir}/hostdev.xml`;
    await Deno.writeTextFile(
      hostdev,
      `<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x21' slot='0x00' function='0x1'/></source></hostdev>`,
    );
    const report = await applyPlan(plan, {
      libvirt: port,
      stateDir,
      confirm: async () => {
        const out = await new Deno.Command("virsh", {
          args: ["-c", daemon.uri, "attach-device", C, hostdev, "--config"],
          stdout: "null",
          stderr: "piped",
        }).output();
        assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
        return "yes";
      },
    });
    const result = report.vms[0]!;
    assertEquals([result.status, result.code, report.ok], ["failed", "conflict-changed", false]);
    assertMatch(
      result.message,
      new RegExp(
        `^Not applied to "${A}": since the plan was made, "${C}" holds "0000:21:00\\.1" in its persistent definition; .*run the plan again`,
      ),
    );
    assertEquals(hostdevsOf(port, A), [], "A was not defined");
    assertEquals(hostdevsOf(port, C), ["0000:21:00.1"], "the other client's change stands");
    assertEquals(listBackups(stateDir), [], "nothing backed up for a VM not defined");
    // Planned again, A is refused: the device is C's now.
    const again = await planGpu(A, { sysfs: tree.sysfs, libvirt: port });
    assertOk(again.vms[0]!.errors.length > 0);
    recordCase({
      area: "concurrency",
      name: "device attached to another VM (virsh attach-device --config) while apply waits",
      count: 1,
      outcome: "conflict-changed, nothing defined or backed up; the device stays in one definition",
      test: TEST,
    });
  },
});

/** A config giving `vm` the demo host's card with `id` (vendor:device). */
function cardConfig(vm: string, id: string): string {
  return `version: 1\nvms:\n  ${vm}:\n    devices:\n      - { name: card, match: { vendor_device_id: "${id}" } }\n`;
}

Deno.test({
  name:
    "two passthrough apply processes with different state directories on one libvirtd: one holds the connection's lock, the device ends in one definition",
  ignore: daemonMissing !== null || !hasScript(),
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    using port = openLibvirtPort(daemon.uri);
    const [C, D] = ["pt-fault-c", "pt-fault-d"];
    for (const vm of [A, B, C, D]) port.define(qemuDomainXml(vm));
    const apply = async (vm: string, id: string) => {
      const config = `${tree.dir}/${vm}.yaml`;
      await Deno.writeTextFile(config, cardConfig(vm, id));
      return [
        "apply",
        ...["--config", config, "--sysfs", tree.sysfs, "--connect", daemon.uri],
        ...["--state-dir", `${tree.dir}/state-${vm}`],
      ];
    };
    // 1. The first waits at its prompt, holding the lock of the connection; the second, with its
    // own state directory and a config giving the same card to another VM, fails at once.
    const RX580 = "1002:67df";
    const first = await apply(A, RX580);
    const second = await apply(B, RX580);
    {
      await using waiting = runCliOnPty(first, { flags: ["-A"] });
      await waiting.waitFor(new RegExp(`Apply the changes to "${A}"\\?`));
      const other = await runCli([...second, "--yes"], { flags: ["-A"] });
      assertEquals(other.code, 1, other.stdout + other.stderr);
      assertMatch(
        other.stderr,
        /Another passthrough apply holds the lock ".*" of "qemu:\/\/\/system\?socket=.*": pid \d+/,
      );
      assertEquals(other.stdout, "");
      await waiting.type("y\n");
      const { code, screen } = await waiting.finish();
      assertEquals(code, 0, screen);
    }
    assertEquals(hostdevsOf(port, A), ["0000:4c:00.0", "0000:4c:00.1"]);
    assertEquals(hostdevsOf(port, B), []);
    assertEquals(listBackups(`${tree.dir}/state-${B}`), []);

    // 2. Two started at once for the GTX 1080, each with its own state directory and VM: one
    // applies, the other fails on the lock, never both; or, when the first ends before the
    // second connects, the second takes the card from the first's VM (outside its config, an
    // orphan whose recorded card it releases): in one definition either way.
    const GTX1080 = "10de:1b80";
    const runs = await Promise.all([
      runCli([...(await apply(C, GTX1080)), "--yes"], { flags: ["-A"] }),
      runCli([...(await apply(D, GTX1080)), "--yes"], { flags: ["-A"] }),
    ]);
    const holders = [C, D].filter((vm) => hostdevsOf(port, vm).length > 0);
    assertEquals(holders.length, 1, runs.map((r) => r.stdout + r.stderr).join("\n"));
    const codes = runs.map((r) => r.code).sort();
    if (codes[1] === 0) {
      const holder = [C, D].indexOf(holders[0]!);
      const other = [C, D][1 - holder]!;
      assertMatch(runs[holder]!.stdout, new RegExp(`\\nVM ${other} \\(shut off\\)`));
    } else {
      assertEquals(codes, [0, 1]);
    }
    recordCase({
      area: "concurrency",
      name: "two apply processes with different --state-dir on one libvirtd (waiting, racing)",
      count: 2,
      outcome: "one holds the connection's lock; the other fails; the card in one definition",
      test: TEST,
    });
  },
});

Deno.test({
  name:
    "applyPlan() on a real libvirtd: an edit (virsh desc) landing after apply read the definition, before its define, is not overwritten",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    const stateDir = `${tree.dir}/state`;
    using port = openLibvirtPort(daemon.uri);
    port.define(qemuDomainXml(A));
    const before = port.getPersistentXml(A, { secure: true });
    const plan = await planGpu(A, { sysfs: tree.sysfs, libvirt: port });
    let edited = false;
    // The user's edit lands right after apply's read (its next call asks whether A runs); the
    // re-check of every domain and the synced backup still come before the define.
    const racing: LibvirtPort = {
      ...withFault(port, () => {}),
      isActive: (name) => {
        if (!edited) {
          edited = true;
          const out = new Deno.Command("virsh", {
            args: ["-c", daemon.uri, "desc", A, "--config", "pt-user-note"],
            stdout: "null",
            stderr: "piped",
          }).outputSync();
          assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
        }
        return port.isActive(name);
      },
    };
    const report = await applyPlan(plan, { libvirt: racing, stateDir, confirm: yes });
    const result = report.vms[0]!;
    assertEquals([result.status, result.code, report.ok], ["failed", "drift", false]);
    assertMatch(
      result.message,
      new RegExp(
        `^Not applied to "${A}": its definition changed since the plan was made: .*pt-user-note.*; run the plan again`,
      ),
    );
    const now = port.getPersistentXml(A, { secure: true });
    assertOk(now.includes("<description>pt-user-note</description>"), "the user's edit stands");
    assertEquals(hostdevsOf(port, A), []);
    // The backup taken before the last look holds the definition the plan was made from.
    assertEquals(listBackups(stateDir, A).map(readBackupXml), [before]);
    assertEquals(result.backup, listBackups(stateDir, A)[0]!.path);
    recordCase({
      area: "concurrency",
      name: "definition edited between apply's read and its define (virsh desc)",
      count: 1,
      outcome: "drift, nothing defined; the user's edit stands",
      test: TEST,
    });
  },
});

Deno.test({
  name:
    "applyPlan() on a real libvirtd: a VM another client starts after apply read it shut off is reported running, not as changed at its next start",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd({ virtlogd: true });
    await using tree = await demoTree();
    using port = openLibvirtPort(daemon.uri);
    port.define(qemuDomainXml(A).replace(/<graphics[^>]*\/>/, ""));
    const plan = await planGpu(A, { sysfs: tree.sysfs, libvirt: port });
    let started = false;
    // `virsh start` lands right after apply asked whether A runs (it did not).
    const racing: LibvirtPort = {
      ...withFault(port, () => {}),
      getLiveXml: (name) => port.getLiveXml!(name),
      isActive: (name) => {
        const active = port.isActive(name);
        if (!started) {
          started = true;
          const out = new Deno.Command("virsh", {
            args: ["-c", daemon.uri, "start", A],
            stdout: "null",
            stderr: "piped",
          }).outputSync();
          assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
        }
        return active;
      },
    };
    const report = await applyPlan(plan, {
      libvirt: racing,
      stateDir: `${tree.dir}/state`,
      confirm: yes,
    });
    const result = report.vms[0]!;
    assertEquals([result.status, result.effect, result.active], [
      "changed",
      "next-power-off",
      true,
    ]);
    assertMatch(
      result.message,
      /; it was started while this apply ran, so it runs without the change until its next full power-off$/,
    );
    assertEquals(port.isActive(A), true);
  },
});

Deno.test({
  name:
    "applyPlan() on a real libvirtd: a VM another client starts right after apply's define is reported running with the change, not without it",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd({ virtlogd: true });
    await using tree = await demoTree();
    using port = openLibvirtPort(daemon.uri);
    const stateDir = `${tree.dir}/state`;
    port.define(qemuDomainXml(A).replace(/<graphics[^>]*\/>/, ""));
    const gpu = await planGpu(A, { sysfs: tree.sysfs, libvirt: port });
    assertEquals((await applyPlan(gpu, { libvirt: port, stateDir, confirm: yes })).changed, [A]);
    // The GPU leaves A's config: apply removes its hostdevs, and without them A can start on this
    // host (no VFIO here), so the start shows which definition it took.
    const plan = planHostdevs({
      config: parseConfig(`version: 1\nvms:\n  ${A}:\n    devices: []\n`, { file: "c.yaml" }),
      host: await loadHost(tree.sysfs),
      libvirt: port,
    });
    assertEquals(plan.vms[0]!.remove.length, 2);
    // `virsh start` lands right after apply's define, before apply asks whether A runs.
    const racing: LibvirtPort = Object.create(port);
    let started = false;
    racing.define = (xml) => {
      port.define(xml);
      if (started) return;
      started = true;
      const out = new Deno.Command("virsh", {
        args: ["-c", daemon.uri, "start", A],
        stdout: "null",
        stderr: "piped",
      }).outputSync();
      assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    };
    const report = await applyPlan(plan, { libvirt: racing, stateDir, confirm: yes });
    const result = report.vms[0]!;
    assertEquals([result.status, result.effect, result.active], ["changed", "now", true]);
    assertMatch(
      result.message,
      /; it was started while this apply ran, after the define, so the running guest has the change already$/,
    );
    // Why: the guest runs without the hostdevs the define removed.
    assertEquals(parseDomainXml(port.getLiveXml!(A)).hostdevs, []);
    new Deno.Command("virsh", { args: ["-c", daemon.uri, "destroy", A], stdout: "null" })
      .outputSync();
  },
});

for (
  const [how, effect, note] of [
    [
      "destroy",
      "next-start",
      /; it was shut off while this apply ran, so the change takes effect at its next start$/,
    ],
    [
      "managedsave",
      "next-power-off",
      /; it was shut off while this apply ran; it has a saved state \(virsh managedsave\), which its next start resumes without this change/,
    ],
  ] as const
) {
  Deno.test({
    name:
      `applyPlan() on a real libvirtd: a running VM another client shuts off while apply runs (virsh ${how}) is reported shut off, and nothing is hot-plugged`,
    ignore: daemonMissing !== null,
    async fn() {
      await using daemon = await startLibvirtd({ virtlogd: true });
      await using tree = await demoTree();
      using port = openLibvirtPort(daemon.uri);
      const virsh = (...args: string[]) => {
        const out = new Deno.Command("virsh", {
          args: ["-c", daemon.uri, ...args],
          stdout: "null",
          stderr: "piped",
        }).outputSync();
        assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
      };
      port.define(qemuDomainXml(A).replace(/<graphics[^>]*\/>/, ""));
      virsh("start", A);
      const plan = await planGpu(A, { sysfs: tree.sysfs, libvirt: port });
      assertEquals(plan.vms[0]!.active, true);
      // The guest is shut off (or saved) right after apply's define.
      const racing: LibvirtPort = Object.create(port);
      let stopped = false;
      racing.define = (xml) => {
        port.define(xml);
        if (stopped) return;
        stopped = true;
        virsh(how, A);
      };
      const report = await applyPlan(plan, {
        libvirt: racing,
        stateDir: `${tree.dir}/state`,
        confirm: yes,
        live: true,
      });
      const result = report.vms[0]!;
      assertEquals([result.status, result.effect, result.active, result.live, report.ok], [
        "changed",
        effect,
        false,
        null,
        true,
      ]);
      assertMatch(result.message, note);
      assertEquals(port.isActive(A), false);
      if (how === "managedsave") virsh("managedsave-remove", A);
    },
  });
}

Deno.test({
  name:
    "applyPlan() on a real libvirtd: a VM another client starts while a later VM is asked about is reported running with the change, not as changed at its next start",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd({ virtlogd: true });
    await using tree = await demoTree();
    using port = openLibvirtPort(daemon.uri);
    const stateDir = `${tree.dir}/state`;
    port.define(qemuDomainXml(A).replace(/<graphics[^>]*\/>/, ""));
    port.define(qemuDomainXml(B));
    const gpu = await planGpu(A, { sysfs: tree.sysfs, libvirt: port });
    assertEquals((await applyPlan(gpu, { libvirt: port, stateDir, confirm: yes })).changed, [A]);
    // The GPU moves from A to B: A loses its hostdevs first, and without them A can start on
    // this host (no VFIO here).
    const plan = planHostdevs({
      config: parseConfig(
        `version: 1\nvms:\n  ${A}:\n    devices: []\n  ${B}:\n    devices:\n` +
          `      - { name: gpu, match: { vendor_device_id: "10de:1b80" } }\n`,
        { file: "c.yaml" },
      ),
      host: await loadHost(tree.sysfs),
      libvirt: port,
    });
    assertEquals(plan.vms.map((vm) => [vm.name, vm.changed]), [[A, true], [B, true]]);
    // `virsh start A` lands while apply asks about B, long after its look at A.
    const confirm = (vm: VmPlan): Promise<ConfirmAnswer> => {
      if (vm.name === B) {
        const out = new Deno.Command("virsh", {
          args: ["-c", daemon.uri, "start", A],
          stdout: "null",
          stderr: "piped",
        }).outputSync();
        assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
      }
      return Promise.resolve("yes");
    };
    const report = await applyPlan(plan, { libvirt: port, stateDir, confirm });
    assertEquals(report.changed, [A, B]);
    const result = report.vms[0]!;
    assertEquals([result.effect, result.active], ["now", true]);
    assertMatch(
      result.message,
      /; it was started while this apply ran, after the define, so the running guest has the change already$/,
    );
    assertEquals(parseDomainXml(port.getLiveXml!(A)).hostdevs, []);
    new Deno.Command("virsh", { args: ["-c", daemon.uri, "destroy", A], stdout: "null" })
      .outputSync();
  },
});

Deno.test({
  name:
    "applyPlan() on a real libvirtd: a VM another client restores from a save file while a later VM is asked about is reported running without the change",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd({ virtlogd: true });
    await using tree = await demoTree();
    using port = openLibvirtPort(daemon.uri);
    const virsh = (...args: string[]) => {
      const out = new Deno.Command("virsh", {
        args: ["-c", daemon.uri, ...args],
        stdout: "null",
        stderr: "piped",
      }).outputSync();
      assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    };
    // A runs without hostdevs and is saved to a file (`virsh save`, no managed save image): shut
    // off, and a `virsh restore` runs it again as saved, from the definition it had then.
    port.define(qemuDomainXml(A).replace(/<graphics[^>]*\/>/, ""));
    port.define(qemuDomainXml(B));
    virsh("start", A);
    const saved = `${tree.dir}/a.save`;
    virsh("save", A, saved);
    const plan = planHostdevs({
      config: twoVmConfig(),
      host: await loadHost(tree.sysfs),
      libvirt: port,
    });
    assertEquals(plan.vms.map((vm) => [vm.name, vm.changed]), [[A, true], [B, true]]);
    // `virsh restore` lands while apply asks about B, after its look at A found A shut off.
    const confirm = (vm: VmPlan): Promise<ConfirmAnswer> => {
      if (vm.name === B) virsh("restore", saved);
      return Promise.resolve("yes");
    };
    const report = await applyPlan(plan, { libvirt: port, stateDir: `${tree.dir}/state`, confirm });
    assertEquals(report.changed, [A, B]);
    const result = report.vms[0]!;
    // Why: the guest runs as saved, without the GPU the define gave A.
    assertEquals(parseDomainXml(port.getLiveXml!(A)).hostdevs, []);
    assertEquals([result.effect, result.active], ["next-power-off", true]);
    assertMatch(
      result.message,
      /; it was started while this apply ran, so it runs without the change until its next full power-off$/,
    );
    virsh("destroy", A);
  },
});

/**
 * A daemon whose running `pt-fault-a` holds no hostdev while its definition holds the GTX 1080
 * (applied while it ran), and a plan that takes the GPU from it, giving it to `pt-fault-b` when
 * `withB`: the new definition can start on this host (no VFIO here), so a restart shows that the
 * guest runs it.
 */
async function runningWithGpuDefined(
  daemon: Libvirtd,
  tree: { sysfs: string },
  options: { stateDir: string; withB: boolean },
): Promise<
  { port: ReturnType<typeof openLibvirtPort>; plan: Plan; virsh: (...args: string[]) => void }
> {
  const port = openLibvirtPort(daemon.uri);
  const virsh = (...args: string[]) => {
    const out = new Deno.Command("virsh", {
      args: ["-c", daemon.uri, ...args],
      stdout: "null",
      stderr: "piped",
    }).outputSync();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  };
  port.define(qemuDomainXml(A).replace(/<graphics[^>]*\/>/, ""));
  if (options.withB) port.define(qemuDomainXml(B));
  virsh("start", A);
  const gpu = await planGpu(A, { sysfs: tree.sysfs, libvirt: port });
  const given = await applyPlan(gpu, { libvirt: port, stateDir: options.stateDir, confirm: yes });
  assertEquals([given.changed, given.vms[0]!.effect], [[A], "next-power-off"]);
  const plan = planHostdevs({
    config: parseConfig(
      `version: 1\nvms:\n  ${A}:\n    devices: []\n` +
        (options.withB
          ? `  ${B}:\n    devices:\n      - { name: gpu, match: { vendor_device_id: "10de:1b80" } }\n`
          : ""),
      { file: "c.yaml" },
    ),
    host: await loadHost(tree.sysfs),
    libvirt: port,
  });
  assertEquals([plan.vms[0]!.active, plan.vms[0]!.remove.length], [true, 2]);
  return { port, plan, virsh };
}

Deno.test({
  name:
    "applyPlan() on a real libvirtd: a running VM another client shuts off and starts again right after apply's define is reported running with the change, not at its next full power-off",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd({ virtlogd: true });
    await using tree = await demoTree();
    const stateDir = `${tree.dir}/state`;
    const { port, plan, virsh } = await runningWithGpuDefined(daemon, tree, {
      stateDir,
      withB: false,
    });
    using _port = port;
    // `virsh destroy` and `virsh start` land right after apply's define, before its look at A.
    const racing: LibvirtPort = Object.create(port);
    let restarted = false;
    racing.define = (xml) => {
      port.define(xml);
      if (restarted) return;
      restarted = true;
      virsh("destroy", A);
      virsh("start", A);
    };
    const report = await applyPlan(plan, { libvirt: racing, stateDir, confirm: yes });
    const result = report.vms[0]!;
    // Why: the guest now runs the new definition, without the GPU it still had defined before.
    assertEquals(parseDomainXml(port.getLiveXml!(A)).hostdevs, []);
    assertEquals([result.status, result.effect, result.active], ["changed", "now", true]);
    assertMatch(
      result.message,
      /\(0 added, 2 removed\); it was shut off and started again while this apply ran, after the define, so the running guest has the change already$/,
    );
    virsh("destroy", A);
  },
});

Deno.test({
  name:
    "applyPlan() on a real libvirtd: a running VM another client shuts off and starts again while a later VM is asked about is reported running with the change, not at its next full power-off",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd({ virtlogd: true });
    await using tree = await demoTree();
    const stateDir = `${tree.dir}/state`;
    const { port, plan, virsh } = await runningWithGpuDefined(daemon, tree, {
      stateDir,
      withB: true,
    });
    using _port = port;
    assertEquals(plan.vms.map((vm) => [vm.name, vm.changed]), [[A, true], [B, true]]);
    // The restart lands while apply asks about B, after its look at A right after A's define.
    const confirm = (vm: VmPlan): Promise<ConfirmAnswer> => {
      if (vm.name === B) {
        virsh("destroy", A);
        virsh("start", A);
      }
      return Promise.resolve("yes");
    };
    const report = await applyPlan(plan, { libvirt: port, stateDir, confirm });
    assertEquals(report.changed, [A, B]);
    const result = report.vms[0]!;
    assertEquals(parseDomainXml(port.getLiveXml!(A)).hostdevs, []);
    assertEquals([result.effect, result.active], ["now", true]);
    assertMatch(
      result.message,
      /\(0 added, 2 removed\); it was shut off and started again while this apply ran, after the define, so the running guest has the change already$/,
    );
    virsh("destroy", A);
  },
});

Deno.test({
  name:
    "applyPlan() on a real libvirtd: a running VM another client shuts off while a later VM is asked about is reported shut off, the change at its next start",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd({ virtlogd: true });
    await using tree = await demoTree();
    const stateDir = `${tree.dir}/state`;
    const { port, plan, virsh } = await runningWithGpuDefined(daemon, tree, {
      stateDir,
      withB: true,
    });
    using _port = port;
    // `virsh destroy A` lands while apply asks about B, after its look at A right after A's define.
    const confirm = (vm: VmPlan): Promise<ConfirmAnswer> => {
      if (vm.name === B) virsh("destroy", A);
      return Promise.resolve("yes");
    };
    const report = await applyPlan(plan, { libvirt: port, stateDir, confirm });
    assertEquals(report.changed, [A, B]);
    const result = report.vms[0]!;
    assertEquals([result.effect, result.active], ["next-start", false]);
    assertMatch(
      result.message,
      /\(0 added, 2 removed\); it was shut off while this apply ran, so the change takes effect at its next start$/,
    );
    assertEquals(port.isActive(A), false);
  },
});

Deno.test({
  name:
    "rollbackVm() on a real libvirtd: an edit (virsh desc) landing after its last look at the definition, before its define, is not overwritten",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    const stateDir = `${tree.dir}/state`;
    using port = openLibvirtPort(daemon.uri);
    port.define(qemuDomainXml(A));
    const plan = await planGpu(A, { sysfs: tree.sysfs, libvirt: port });
    const applied = await applyPlan(plan, { libvirt: port, stateDir, confirm: yes });
    assertEquals(applied.changed, [A]);
    // Reads with secrets: the definition shown, then the look after the confirmation; the user's
    // edit lands right after that look, before the safety backup and the define.
    let reads = 0;
    const racing: LibvirtPort = {
      ...withFault(port, () => {}),
      getPersistentXml: (name, options) => {
        const xml = port.getPersistentXml(name, options);
        if (options?.secure === true && ++reads === 2) {
          const out = new Deno.Command("virsh", {
            args: ["-c", daemon.uri, "desc", A, "--config", "pt-user-note"],
            stdout: "null",
            stderr: "piped",
          }).outputSync();
          assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
        }
        return xml;
      },
    };
    const report = await rollbackVm(A, { libvirt: racing, stateDir, confirm: yes2 });
    assertEquals(report.status, "failed", report.message);
    assertMatch(
      report.message,
      new RegExp(
        `^Not restored: the definition of "${A}" changed since the rollback was shown: .*pt-user-note.*; run the rollback again`,
      ),
    );
    const now = port.getPersistentXml(A, { secure: true });
    assertOk(now.includes("<description>pt-user-note</description>"), "the user's edit stands");
    assertEquals(hostdevsOf(port, A), ["0000:21:00.0", "0000:21:00.1"], "nothing restored");
    recordCase({
      area: "concurrency",
      name: "definition edited between rollback's last look and its define (virsh desc)",
      count: 1,
      outcome: "failed, nothing defined; the user's edit stands",
      test: TEST,
    });
  },
});

Deno.test({
  name:
    "applyPlan() on a real libvirtd leaves a VM another client defined between its define and the read-back as that client defined it",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    const port = openLibvirtPort(daemon.uri);
    const names = ["pt-fault-echo-pc", "pt-fault-echo-q35"];
    try {
      for (const machine of ["pc", "q35"]) {
        const vm = `pt-fault-echo-${machine}`;
        port.define(qemuDomainXml(vm).replace("machine='pc'", `machine='${machine}'`));
        const plan = await planGpu(vm, { sysfs: tree.sysfs, libvirt: port });
        const before = port.getPersistentXml(vm, { secure: true });
        // Another client: a `virsh edit` opened before the apply, saved right after its define.
        const racing: LibvirtPort = Object.create(port);
        let echoed: boolean | null = null;
        racing.define = (xml) => {
          port.define(xml);
          if (echoed !== null) return;
          // libvirt's own rendering of this define (quotes, order, addresses, root ports) is ours.
          echoed = sameBesidesHostdevs(xml, port.getPersistentXml(vm, { secure: true }));
          port.define(
            before.replace("</uuid>", "</uuid>\n  <description>edited elsewhere</description>"),
          );
        };
        const report = await applyPlan(plan, {
          libvirt: racing,
          stateDir: `${tree.dir}/state`,
          confirm: yes,
        });
        assertEquals([machine, echoed], [machine, true]);
        assertEquals([report.vms[0]?.code, report.vms[0]?.restored], ["verify-failed", false]);
        assertMatch(
          report.vms[0]!.message,
          /^".*" was defined again by another client right after this define, and its definition no longer holds the planned hostdevs \(expected hostdevs missing \[0000:21:00\.0 .*\]\); it was left as that client defined it \(1 changed line \("\+<description>edited elsewhere<\/description>"\) since the plan\), not restored over that change, which no backup holds: check it with "passthrough plan"; "passthrough rollback pt-fault-echo-.*" restores its previous definition from backup ".*"$/,
        );
        assertMatch(port.getPersistentXml(vm), /<description>edited elsewhere<\/description>/);
      }
    } finally {
      port.close();
      await undefineUnlessIsolated(daemon, names);
    }
  },
});

Deno.test({
  name:
    "applyPlan() on a real libvirtd leaves a VM another client changed a kept hostdev of between its define and the read-back as that client defined it",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    const port = openLibvirtPort(daemon.uri);
    const vm = "pt-fault-kept-rom";
    try {
      // A hand-added hostdev without a guest address or driver: libvirt fills in what it fills in.
      port.define(qemuDomainXml(
        vm,
        "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></source></hostdev>",
      ));
      const plan = await planGpu(vm, { sysfs: tree.sysfs, libvirt: port });
      const before = port.getPersistentXml(vm, { secure: true });
      const kept = (xml: string) =>
        parseDomainXml(xml).hostdevs.find((h) => h.address === "0000:03:00.0")!.xml;
      const racing: LibvirtPort = Object.create(port);
      let echoed: boolean | null = null;
      racing.define = (xml) => {
        port.define(xml);
        if (echoed !== null) return;
        // libvirt's own rendering of the kept hostdev, sent as it was read, is ours.
        echoed = samePciDevice(kept(xml), kept(port.getPersistentXml(vm, { secure: true })));
        // Another client: a `virsh edit` opened before the apply, saved right after its define.
        port.define(before.replace("</source>", "</source>\n      <rom bar='off'/>"));
      };
      const report = await applyPlan(plan, {
        libvirt: racing,
        stateDir: `${tree.dir}/state`,
        confirm: yes,
      });
      assertEquals(echoed, true);
      assertEquals([report.vms[0]?.code, report.vms[0]?.restored], ["verify-failed", false]);
      assertMatch(
        report.vms[0]!.message,
        /it was left as that client defined it \(1 changed line \("\+<rom bar='off'\/>"\) since the plan\)/,
      );
      assertMatch(kept(port.getPersistentXml(vm)), /<rom bar='off'\/>/);
    } finally {
      port.close();
      await undefineUnlessIsolated(daemon, [vm]);
    }
  },
});

for (
  const [what, edit, left] of [
    [
      "gave an added hostdev a rom line",
      (x: string) => x.replace("</source>", "</source>\n      <rom bar='off'/>"),
      /<rom bar='off'\/>/,
    ],
    [
      "made an added hostdev unmanaged",
      (x: string) => x.replace("managed='yes'", "managed='no'"),
      /managed='no'/,
    ],
  ] as const
) {
  Deno.test({
    name:
      `applyPlan() on a real libvirtd leaves a VM another client ${what} between its define and the read-back as that client defined it`,
    ignore: daemonMissing !== null,
    async fn() {
      await using daemon = await startLibvirtd();
      await using tree = await demoTree();
      const port = openLibvirtPort(daemon.uri);
      const vm = "pt-fault-added-edit";
      try {
        port.define(qemuDomainXml(vm));
        const plan = await planGpu(vm, { sysfs: tree.sysfs, libvirt: port });
        const added = (xml: string) =>
          parseDomainXml(xml).hostdevs.find((h) => h.address === "0000:21:00.0")!.xml;
        const racing: LibvirtPort = Object.create(port);
        let echoed: boolean | null = null;
        racing.define = (xml) => {
          port.define(xml);
          if (echoed !== null) return;
          const echo = port.getPersistentXml(vm, { secure: true });
          // libvirt's own rendering of the added hostdev (a guest address filled in) is ours.
          echoed = samePciDevice(added(xml), added(echo));
          // Another client changes the hostdev this define added, right after the define (a
          // `virsh edit` of the new definition, a script's `virt-xml --edit`).
          const theirs = echo.replace(added(echo), edit(added(echo)));
          assertOk(theirs !== echo);
          port.define(theirs);
        };
        const report = await applyPlan(plan, {
          libvirt: racing,
          stateDir: `${tree.dir}/state`,
          confirm: yes,
        });
        assertEquals(echoed, true);
        assertEquals([report.vms[0]?.code, report.vms[0]?.restored], ["verify-failed", false]);
        assertMatch(
          report.vms[0]!.message,
          /^".*" was defined again by another client right after this define, .*"0000:21:00\.0" .*; it was left as that client defined it/s,
        );
        assertMatch(added(port.getPersistentXml(vm)), left);
      } finally {
        port.close();
        await undefineUnlessIsolated(daemon, [vm]);
      }
    },
  });
}

Deno.test({
  name:
    "applyPlan() on a real libvirtd leaves a VM another client undefined between its define and the read-back undefined",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    const port = openLibvirtPort(daemon.uri);
    const vm = "pt-fault-undefined";
    try {
      port.define(qemuDomainXml(vm));
      const plan = await planGpu(vm, { sysfs: tree.sysfs, libvirt: port });
      // Another client (`virsh undefine`) right after apply's define.
      const racing: LibvirtPort = Object.create(port);
      let gone = false;
      racing.define = (xml) => {
        port.define(xml);
        if (gone) return;
        gone = true;
        using conn = Connection.open(daemon.uri);
        using domain = conn.lookupDomainByName(vm);
        domain.undefine();
      };
      const report = await applyPlan(plan, {
        libvirt: racing,
        stateDir: `${tree.dir}/state`,
        confirm: yes,
      });
      assertEquals([report.vms[0]?.code, report.vms[0]?.restored], ["verify-failed", false]);
      assertMatch(
        report.vms[0]!.message,
        /^"pt-fault-undefined" was undefined by another client right after this define \(.*Domain not found.*\); it was left undefined, not defined again from its backup: "passthrough rollback pt-fault-undefined" defines its previous definition again from backup ".*"$/,
      );
      assertEquals(port.listDomains().some((d) => d.name === vm), false);
    } finally {
      port.close();
      await undefineUnlessIsolated(daemon, [vm]);
    }
  },
});
