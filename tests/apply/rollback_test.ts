import { assertEquals, assertMatch, assertOk, assertRejects } from "../helpers/assert.ts";
import { Connection } from "../../ffi/connection.ts";
import { connectionPort, openLibvirtPort } from "../../ffi/port.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import { applyPlan } from "../../lib/apply/apply.ts";
import { renderDomainDiff } from "../../lib/render/diff.ts";
import {
  BackupIntegrityError,
  BackupNotFoundError,
  listBackups,
  readBackupXml,
  writeBackup,
} from "../../lib/state/backups.ts";
import { editDomainXml, parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { pathExists } from "../../lib/state/paths.ts";
import { acquireConnectionLock, LockHeldError } from "../../lib/state/lock.ts";
import { plantDeadLock } from "../helpers/locks.ts";
import { hostdevXml } from "../helpers/plan_world.ts";
import {
  BackupMismatchError,
  type RollbackOptions,
  type RollbackPreview,
  type RollbackReport,
  rollbackVm,
  type StartRefusal,
} from "../../lib/apply/rollback.ts";
import type { DeviceResolvers } from "../../lib/plan/used_devices.ts";
import type { VmPlan } from "../../lib/plan/types.ts";
import { emptyVmPlan } from "../../lib/plan/vm_edit.ts";
import { gpuIdentity as identity } from "../helpers/devices.ts";
import {
  addNonPciGroupMember,
  liveDefaultRouteNic,
  livePciMissing,
  liveSpareFunction,
  loadFixtureHost,
  tempHostTree,
} from "../helpers/hosts.ts";
import { libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";
import { canUnshareMounts } from "../helpers/cli.ts";
import { recordPolicies } from "../../lib/guard/state.ts";
import { guardCheck, policed, runGuard } from "../../lib/guard/run.ts";
import { ENFORCE, type VmGuardPolicy } from "../../lib/guard/policy.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { startVerdict } from "../../cli/rollback.ts";
import { hostReader } from "../../cli/host_options.ts";
import { libcSysfsReader } from "../../ffi/libc_fs.ts";
import { demoTree, killHard, planGpu, qemuDomainXml } from "../helpers/reliability.ts";

const UUID_A = "11111111-1111-4111-8111-111111111111";
const UUID_B = "22222222-2222-4222-8222-222222222222";

function domain(name: string, uuid: string, running: boolean): string {
  const runstate = running ? "" : "\n    <test:runstate>5</test:runstate>";
  return `<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>${name}</name>
    <uuid>${uuid}</uuid>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <graphics type='vnc' port='-1' autoport='yes' passwd='s3cret'/>
    </devices>${runstate}
  </domain>`;
}

interface Fixture extends Disposable {
  /** The test driver's world lives in this connection: undefine a domain through it. */
  conn: Connection;
  port: LibvirtPort;
  stateDir: string;
}

/** alpha (shut off) and beta (running) with `networks` beside them. */
function fixture(networks = ""): Fixture {
  const root = Deno.makeTempDirSync({ prefix: "passthrough-rollback-test-" });
  Deno.writeTextFileSync(
    `${root}/world.xml`,
    `<node>\n${domain("alpha", UUID_A, false)}\n${
      domain("beta", UUID_B, true)
    }\n${networks}</node>\n`,
  );
  const conn = Connection.open(`test://${root}/world.xml`);
  return {
    conn,
    port: connectionPort(conn),
    stateDir: `${root}/state`,
    [Symbol.dispose]() {
      conn.close();
      Deno.removeSync(root, { recursive: true });
    },
  };
}

/**
 * Applies "add these hostdevs to `name`" for real, leaving a backup of the previous state; `now`
 * is the clock it reads.
 */
async function addHostdevs(
  f: Fixture,
  name: string,
  addresses: string[],
  now?: Date,
): Promise<void> {
  const currentXml = f.port.getPersistentXml(name, { secure: true });
  const previous = parseDomainXml(currentXml).records;
  const desiredXml = editDomainXml(currentXml, {
    remove: [],
    add: addresses.map((address) => ({ address, managed: true })),
    records: [...previous, ...addresses.map((a) => identity(a))],
  });
  const vm: VmPlan = { ...emptyVmPlan(name, currentXml), desiredXml, changed: true };
  const report = await applyPlan(
    { config: "c", host: "h", uri: f.port.uri, vms: [vm], errors: [], warnings: [] },
    {
      libvirt: f.port,
      stateDir: f.stateDir,
      confirm: () => Promise.resolve("yes"),
      ...(now === undefined ? {} : { now: () => now }),
    },
  );
  assertEquals(report.changed, [name]);
}

/** Applies `address` to VM `name`, then its release: the backup of the second apply holds it. */
async function addThenRelease(f: Fixture, name: string, address: string): Promise<void> {
  await addHostdevs(f, name, [address]);
  const withIt = f.port.getPersistentXml(name, { secure: true });
  const released = editDomainXml(withIt, { remove: [address], add: [], records: [] });
  const vm: VmPlan = { ...emptyVmPlan(name, withIt), desiredXml: released, changed: true };
  const report = await applyPlan(
    { config: "c", host: "h", uri: f.port.uri, vms: [vm], errors: [], warnings: [] },
    { libvirt: f.port, stateDir: f.stateDir, confirm: () => Promise.resolve("yes") },
  );
  assertEquals(report.changed, [name]);
}

function hostdevs(f: Fixture, name: string): string[] {
  return parseDomainXml(f.port.getPersistentXml(name)).hostdevs.map((h) => h.address);
}

const yes = () => Promise.resolve(true);

/** Adds `device` to beta's persistent definition, as `virsh attach-device --config` would. */
function addToBeta(f: Fixture, device: string): void {
  f.port.define(
    f.port.getPersistentXml("beta", { secure: true }).replace("</devices>", `${device}</devices>`),
  );
}

/** This host's facts with nothing under any disk, USB device or interface. */
const NO_DEVICES: DeviceResolvers = {
  blockDeviceControllers: () => [],
  usbDeviceControllers: () => [],
};

/** Rolls alpha back to its newest backup, answering yes, with `devices` as this host's facts. */
function rollAlpha(f: Fixture, devices: DeviceResolvers): Promise<RollbackReport> {
  return rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes, devices });
}

/** Rolls `vm` back to its newest backup with `extra` options, noting whether it asked first. */
/** Devices in the IOMMU groups `groupOf` gives (none: no such device), without SR-IOV. */
function inGroups(
  groupOf: (address: string) => number | null,
): NonNullable<RollbackOptions["readDevice"]> {
  return (address) => {
    const group = groupOf(address);
    return group === null ? null : { iommuGroup: group, physfn: null, virtfns: [] };
  };
}

async function rollbackNotingQuestion(
  f: Fixture,
  vm: string,
  extra: Partial<RollbackOptions> = {},
): Promise<{ report: RollbackReport; asked: boolean }> {
  let asked = false;
  const report = await rollbackVm(vm, {
    libvirt: f.port,
    stateDir: f.stateDir,
    ...extra,
    confirm: () => {
      asked = true;
      return Promise.resolve(true);
    },
  });
  return { report, asked };
}

Deno.test("rollbackVm() restores the newest backup exactly and backs up what it replaces", async () => {
  using f = fixture();
  const original = f.port.getPersistentXml("alpha", { secure: true });
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  const applied = f.port.getPersistentXml("alpha", { secure: true });
  const previews: RollbackPreview[] = [];
  const report = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: (preview) => {
      previews.push(preview);
      return Promise.resolve(true);
    },
  });
  assertEquals([report.status, report.code], ["restored", "restored"]);
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), original);
  assertEquals(hostdevs(f, "alpha"), []);
  assertEquals(previews.length, 1);
  assertEquals([previews[0]?.currentXml, previews[0]?.backupXml], [applied, original]);
  // The replaced definition is itself backed up, so the rollback can be undone.
  assertEquals(report.safetyBackup?.reason, "rollback");
  const backups = listBackups(f.stateDir, "alpha");
  assertEquals(backups.map((b) => b.reason), ["rollback", "apply"]);
  assertEquals(Deno.readTextFileSync(backups[0]!.path), applied);

  // Undo the rollback: the newest backup is now the applied state.
  const redo = await rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes });
  assertEquals(redo.status, "restored");
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), applied);
});

Deno.test("rollbackVm() restores an older backup named with a backup id", async () => {
  using f = fixture();
  const original = f.port.getPersistentXml("alpha", { secure: true });
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  await addHostdevs(f, "alpha", ["0000:02:00.0"]);
  assertEquals(hostdevs(f, "alpha"), ["0000:01:00.0", "0000:02:00.0"]);
  const oldest = listBackups(f.stateDir, "alpha").at(-1)!;
  const report = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    backup: oldest.id,
    confirm: yes,
  });
  assertEquals([report.status, report.backup.id], ["restored", oldest.id]);
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), original);
});

Deno.test("rollbackVm() run again with the same id finds the VM restored; with the same number, it restores another", async () => {
  using f = fixture();
  const original = f.port.getPersistentXml("alpha", { secure: true });
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  await addHostdevs(f, "alpha", ["0000:02:00.0"]);
  // README: a script names the backup it restores by id, so that a second run changes nothing.
  const oldest = listBackups(f.stateDir, "alpha").at(-1)!;
  for (const status of ["restored", "unchanged"]) {
    const report = await rollbackVm("alpha", {
      libvirt: f.port,
      stateDir: f.stateDir,
      backup: oldest.id,
      confirm: yes,
    });
    assertEquals(report.status, status, report.message);
    assertEquals(f.port.getPersistentXml("alpha", { secure: true }), original);
  }
  // A number counts from the newest backup, and each rollback adds one: "2" is another now.
  await addHostdevs(f, "alpha", ["0000:02:00.0"]);
  assertEquals(hostdevs(f, "alpha"), ["0000:02:00.0"]);
  const restored: string[][] = [];
  for (let run = 0; run < 2; run++) {
    const report = await rollbackVm("alpha", {
      libvirt: f.port,
      stateDir: f.stateDir,
      backup: "2",
      confirm: yes,
    });
    assertEquals(report.status, "restored", report.message);
    restored.push(hostdevs(f, "alpha"));
  }
  assertEquals(restored, [["0000:01:00.0", "0000:02:00.0"], []]);
});

Deno.test("rollbackVm() undoes the last apply after the clock stepped back between two", async () => {
  using f = fixture();
  const real = new Date();
  // The first apply with the clock an hour ahead; NTP steps it back before the second.
  await addHostdevs(f, "alpha", ["0000:01:00.0"], new Date(real.getTime() + 3_600_000));
  await addHostdevs(f, "alpha", ["0000:02:00.0"], real);
  const report = await rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes });
  assertEquals(report.status, "restored", report.message);
  assertEquals(hostdevs(f, "alpha"), ["0000:01:00.0"]);
  // Asked again, it undoes that rollback.
  const redo = await rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes });
  assertEquals(redo.status, "restored", redo.message);
  assertEquals(hostdevs(f, "alpha"), ["0000:01:00.0", "0000:02:00.0"]);
});

Deno.test("rollbackVm() changes nothing when declined", async () => {
  using f = fixture();
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  const applied = f.port.getPersistentXml("alpha", { secure: true });
  const report = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: () => Promise.resolve(false),
  });
  assertEquals([report.status, report.code, report.safetyBackup], ["declined", "declined", null]);
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), applied);
  assertEquals(listBackups(f.stateDir, "alpha").length, 1);
});

Deno.test("rollbackVm() refuses a confirm answer that is no boolean instead of restoring", async () => {
  using f = fixture();
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  const applied = f.port.getPersistentXml("alpha", { secure: true });
  // applyPlan's answers, or a prompt's input passed on: "no" restored the backup, as if true.
  for (const answer of ["no", "n", undefined]) {
    await assertRejects(
      () =>
        rollbackVm("alpha", {
          libvirt: f.port,
          stateDir: f.stateDir,
          confirm: () => Promise.resolve(answer as unknown as boolean),
        }),
      TypeError,
      `Invalid answer of confirm for the rollback of "alpha": ${
        typeof answer === "string" ? `"${answer}"` : String(answer)
      } (expected true or false)`,
    );
    assertEquals(f.port.getPersistentXml("alpha", { secure: true }), applied);
  }
  assertEquals(listBackups(f.stateDir, "alpha").length, 1);
  // The lock was released: the next rollback runs.
  const report = await rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes });
  assertEquals(report.status, "restored");
});

Deno.test("rollbackVm() does not ask or define when the VM already matches the backup", async () => {
  using f = fixture();
  const xml = f.port.getPersistentXml("alpha", { secure: true });
  writeBackup(f.stateDir, { vm: "alpha", uuid: UUID_A, xml, reason: "apply", uri: f.port.uri });
  let asked = 0;
  const report = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: () => Promise.resolve(++asked > 0),
  });
  assertEquals([report.status, report.code, asked], ["unchanged", "no-changes", 0]);
});

Deno.test("rollbackVm() refuses a backup whose uuid is not the VM's", async () => {
  using f = fixture();
  const before = f.port.getPersistentXml("alpha", { secure: true });
  // A backup filed under alpha that actually holds another domain with alpha's name.
  const foreign = before.replace(UUID_A, "99999999-9999-4999-8999-999999999999")
    .replace("1048576</memory>", "2097152</memory>");
  writeBackup(f.stateDir, {
    vm: "alpha",
    uuid: "99999999-9999-4999-8999-999999999999",
    xml: foreign,
    reason: "apply",
    uri: f.port.uri,
  });
  await assertRejects(
    () => rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes }),
    (e: unknown) =>
      e instanceof BackupMismatchError && e.vmUuid === UUID_A &&
      e.backupUuid === "99999999-9999-4999-8999-999999999999",
  );
  // Beta's definition filed under alpha's name is refused too.
  writeBackup(f.stateDir, {
    vm: "alpha",
    uuid: UUID_A,
    xml: f.port.getPersistentXml("beta", { secure: true }),
    reason: "apply",
    uri: f.port.uri,
  });
  await assertRejects(
    () => rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes }),
    (e: unknown) =>
      e instanceof BackupMismatchError && /backup is of domain "beta"/.test(e.message),
  );
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), before);
});

Deno.test("rollbackVm() refuses a backup whose file and sidecar disagree on the uuid, or of another domain for a VM that is gone", async () => {
  using f = fixture();
  const before = f.port.getPersistentXml("alpha", { secure: true });
  const betaBefore = f.port.getPersistentXml("beta", { secure: true });
  const OTHER = "99999999-9999-4999-8999-999999999999";
  const mismatch = (e: unknown) => e instanceof BackupMismatchError;
  // The sidecar says alpha's uuid, the XML another; then the other way round. The other one is
  // named as the backup's.
  for (const [uuid, xml] of [[UUID_A, before.replace(UUID_A, OTHER)], [OTHER, before]]) {
    writeBackup(f.stateDir, {
      vm: "alpha",
      uuid: uuid!,
      xml: xml!,
      reason: "apply",
      uri: f.port.uri,
    });
    await assertRejects(
      () => rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes }),
      (e: unknown) =>
        mismatch(e) && (e as BackupMismatchError).backupUuid === OTHER &&
        (e as Error).message.endsWith(
          `the backup is of uuid "${OTHER}", the VM has uuid "${UUID_A}"`,
        ),
      `sidecar ${uuid}`,
    );
  }
  // "gamma" is undefined, so no uuid to compare: beta's definition filed under its name is refused
  // by name, and beta is not redefined.
  writeBackup(f.stateDir, {
    vm: "gamma",
    uuid: UUID_B,
    xml: betaBefore.replace("1048576</memory>", "2097152</memory>"),
    reason: "apply",
    uri: f.port.uri,
  });
  await assertRejects(
    () => rollbackVm("gamma", { libvirt: f.port, stateDir: f.stateDir, confirm: yes }),
    (e: unknown) => mismatch(e) && /backup is of domain "beta"/.test((e as Error).message),
  );
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), before);
  assertEquals(f.port.getPersistentXml("beta", { secure: true }), betaBefore);
});

Deno.test("rollbackVm() restores only backups taken through its own connection, a VM of that name and uuid on another libvirt aside", async () => {
  // Two libvirts (two hosts) each defining alpha with one uuid (defined from one XML, or
  // migrated), their backups in one state directory.
  using here = fixture();
  using there = fixture();
  const stateDir = here.stateDir;
  const original = here.port.getPersistentXml("alpha", { secure: true });
  const onThere = { ...there, stateDir, port: there.port } as Fixture;
  await addHostdevs(onThere, "alpha", ["0000:01:00.0"]);
  const theirs = listBackups(stateDir, "alpha");
  // None taken here: the other host's definition (its PCI addresses) is not restored into this
  // host's alpha, and the refusal names where those backups came from.
  await assertRejects(
    () => rollbackVm("alpha", { libvirt: here.port, stateDir, confirm: yes }),
    (e: unknown) =>
      e instanceof BackupNotFoundError && e.otherConnection?.id === theirs[0]!.id &&
      e.message.includes(`taken through ${there.port.uri}, not ${here.port.uri}`),
  );
  assertEquals(hostdevs(here, "alpha"), []);
  // One taken here, then one more there: the newest of this connection is restored.
  await addHostdevs({ ...here, stateDir } as Fixture, "alpha", ["0000:03:00.0"]);
  await addHostdevs(onThere, "alpha", ["0000:02:00.0"]);
  assertEquals(listBackups(stateDir, "alpha")[0]!.uri, there.port.uri);
  const report = await rollbackVm("alpha", { libvirt: here.port, stateDir, confirm: yes });
  assertEquals(report.status, "restored");
  assertEquals(here.port.getPersistentXml("alpha", { secure: true }), original);
  // Theirs named by id or number is refused, with the command that restores it there.
  for (const ref of [theirs[0]!.id, listBackups(stateDir, "alpha")[1]!.id, "2"]) {
    await assertRejects(
      () => rollbackVm("alpha", { libvirt: here.port, stateDir, backup: ref, confirm: yes }),
      (e: unknown) =>
        e instanceof BackupNotFoundError && e.otherConnection !== null &&
        e.message.endsWith(`--to ${e.otherConnection.id} -c ${there.port.uri}"`),
      ref,
    );
  }
  assertEquals(hostdevs(here, "alpha"), []);
});
Deno.test("rollbackVm() refuses a lock taken for another connection", async () => {
  using f = fixture();
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  using lock = acquireConnectionLock("test:///elsewhere.xml", {
    stateDir: f.stateDir,
    command: "rollback",
  });
  await assertRejects(
    () => rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes, lock }),
    TypeError,
  );
  assertEquals(hostdevs(f, "alpha"), ["0000:01:00.0"]);
});

Deno.test("rollbackVm() with a state directory that does not exist creates none", async () => {
  using f = fixture();
  // A mistyped state directory: it was created (with backups/) before no backup was found.
  await assertRejects(
    () => rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes }),
    BackupNotFoundError,
  );
  assertEquals(pathExists(f.stateDir), false);
});

Deno.test("rollbackVm() reports a missing backup and a held lock before writing anything", async () => {
  using f = fixture();
  await assertRejects(
    () => rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes }),
    BackupNotFoundError,
  );
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  await assertRejects(
    () =>
      rollbackVm("alpha", {
        libvirt: f.port,
        stateDir: f.stateDir,
        backup: "../../etc/passwd",
        confirm: yes,
      }),
    BackupNotFoundError,
  );
  {
    using _held = acquireConnectionLock(f.port.uri, { stateDir: f.stateDir, command: "apply" });
    await assertRejects(
      () => rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes }),
      LockHeldError,
    );
  }
  assertEquals(hostdevs(f, "alpha"), ["0000:01:00.0"]);
  assertEquals(listBackups(f.stateDir, "alpha").length, 1);
});

Deno.test("rollbackVm() of a newest backup whose XML is damaged says how to choose another, and defines nothing", async () => {
  using f = fixture();
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  await addHostdevs(f, "alpha", ["0000:02:00.0"]);
  const [newest, older] = listBackups(f.stateDir, "alpha");
  // Cut short, as a disk that filled (or a hand edit) can leave it.
  Deno.truncateSync(newest!.path, 100);
  await assertRejects(
    () => rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes }),
    BackupIntegrityError,
    `Backup "${newest!.path}" is damaged: sha256 is `,
  );
  await assertRejects(
    () => rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes }),
    BackupIntegrityError,
    `; it is newer than every intact backup of "alpha": choose one with --to (run "passthrough backups alpha")`,
  );
  assertEquals(hostdevs(f, "alpha"), ["0000:01:00.0", "0000:02:00.0"]);
  // Named, it is refused as is: the user chose it.
  await assertRejects(
    () =>
      rollbackVm("alpha", {
        libvirt: f.port,
        stateDir: f.stateDir,
        backup: newest!.id,
        confirm: yes,
      }),
    BackupIntegrityError,
    "the sidecar recorded ",
  );
  const report = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    backup: older!.id,
    confirm: yes,
  });
  assertEquals(report.status, "restored", report.message);
  assertEquals(hostdevs(f, "alpha"), []);
});

Deno.test("rollbackVm() of the only backup, its XML damaged, sends the user to no other backup", async () => {
  using f = fixture();
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  const [only] = listBackups(f.stateDir, "alpha");
  Deno.truncateSync(only!.path, 100);
  await assertRejects(
    () => rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes }),
    BackupIntegrityError,
    `; "alpha" has no intact backup to restore`,
  );
  assertEquals(hostdevs(f, "alpha"), ["0000:01:00.0"]);
});

Deno.test("rollbackVm() reports a backup libvirt rejects as failed and leaves the VM as it was", async () => {
  using f = fixture();
  const before = f.port.getPersistentXml("alpha", { secure: true });
  writeBackup(f.stateDir, {
    vm: "alpha",
    uuid: UUID_A,
    xml: before.replace("</devices>", "  <bogus-device/>\n  </devices>"),
    reason: "apply",
    uri: f.port.uri,
  });
  const report = await rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes });
  assertEquals([report.status, report.code], ["failed", "define-failed"]);
  assertMatch(report.message, /libvirt rejected backup/);
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), before);
});

Deno.test("rollbackVm() reports a definition libvirt stores other than the backup as failed, naming the safety backup", async () => {
  using f = fixture();
  const before = f.port.getPersistentXml("alpha", { secure: true });
  // Hand-edited in MiB: libvirt takes it but stores KiB, so what it holds is not the backup.
  const inMiB = before.replace(
    "<memory unit='KiB'>1048576</memory>",
    "<memory unit='MiB'>1024</memory>",
  )
    .replace("<currentMemory unit='KiB'>1048576</currentMemory>", "");
  assertOk(inMiB.includes("unit='MiB'"));
  writeBackup(f.stateDir, {
    vm: "alpha",
    uuid: UUID_A,
    xml: inMiB,
    reason: "apply",
    uri: f.port.uri,
  });
  const report = await rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes });
  assertEquals([report.status, report.code], ["failed", "verify-failed"]);
  assertOk(report.safetyBackup !== null);
  assertMatch(
    report.message,
    new RegExp(
      `^After the rollback the definition of "alpha" differs from backup "[^"]+": .*memory.*; the replaced definition is in backup "${report.safetyBackup.id}"$`,
    ),
  );
  // The safety backup holds what was replaced.
  assertEquals(Deno.readTextFileSync(report.safetyBackup.path), before);
});

Deno.test("rollbackVm() on a running VM says the definition applies at its next power-off", async () => {
  using f = fixture();
  await addHostdevs(f, "beta", ["0000:01:00.0"]);
  const report = await rollbackVm("beta", { libvirt: f.port, stateDir: f.stateDir, confirm: yes });
  assertEquals([report.status, report.active], ["restored", true]);
  assertMatch(report.message, /next full power-off/);
  assertEquals(hostdevs(f, "beta"), []);
});

Deno.test("rollbackVm() accepts a hand-edited backup that differs from libvirt's output only in formatting", async () => {
  using f = fixture();
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  const applied = f.port.getPersistentXml("alpha", { secure: true });
  // Double quotes and no indentation: libvirt writes it back its own way.
  const reformatted = applied.replace(/'/g, '"').split("\n").map((l) => l.trim()).join("\n");
  const edited = writeBackup(f.stateDir, {
    vm: "alpha",
    uuid: UUID_A,
    xml: reformatted,
    reason: "apply",
    uri: f.port.uri,
  });
  await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    backup: listBackups(f.stateDir, "alpha").at(-1)!.id,
    confirm: yes,
  });
  assertEquals(hostdevs(f, "alpha"), []);
  const report = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    backup: edited.id,
    confirm: yes,
  });
  assertEquals([report.status, report.backup.id], ["restored", edited.id]);
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), applied);
});

Deno.test("rollbackVm() restores a definition libvirt reads back with its devices in its own order, and finds it restored again", async () => {
  using f = fixture();
  // USB controllers without an index: libvirt first keeps the companion before its master, and
  // puts the master first once it stores the definition again (as apply and rollback do).
  const usb =
    "<controller type='usb' model='ich9-uhci1'/><controller type='usb' model='ich9-ehci1'/>";
  f.port.define(
    f.port.getPersistentXml("alpha", { secure: true }).replace("</devices>", `${usb}</devices>`),
  );
  const original = f.port.getPersistentXml("alpha", { secure: true });
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  const report = await rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes });
  assertEquals(report.status, "restored", report.message);
  assertEquals(hostdevs(f, "alpha"), []);
  const restored = f.port.getPersistentXml("alpha", { secure: true });
  assertOk(restored !== original, "libvirt kept the backup's order: nothing to test");
  assertEquals(
    restored.split("\n").sort().join("\n"),
    original.split("\n").sort().join("\n"),
  );
  // Asked again, it has that definition: nothing defined, no other backup written.
  const again = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    backup: report.backup.id,
    confirm: yes,
  });
  assertEquals([again.status, again.safetyBackup], ["unchanged", null]);
  assertEquals(listBackups(f.stateDir, "alpha").map((b) => b.reason), ["rollback", "apply"]);
});

Deno.test("rollbackVm() restores a backup whose interfaces are in another order: their order counts", async () => {
  using f = fixture();
  // The first interface is the one a legacy network boot uses; libvirt keeps the order given.
  const nics = (first: string, second: string) =>
    `<interface type='network'><mac address='${first}'/><source network='default'/></interface>` +
    `<interface type='network'><mac address='${second}'/><source network='default'/></interface>`;
  const [a, b] = ["52:54:00:00:00:0a", "52:54:00:00:00:0b"];
  const base = f.port.getPersistentXml("alpha", { secure: true });
  f.port.define(base.replace("</devices>", `${nics(a, b)}</devices>`));
  const before = f.port.getPersistentXml("alpha", { secure: true });
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  const applied = f.port.getPersistentXml("alpha", { secure: true });
  // The same two interfaces, each with the guest address libvirt gave it, swapped.
  const blocks = [...before.matchAll(/ *<interface[^]*?<\/interface>\n/g)].map((m) => m[0]);
  assertEquals(blocks.length, 2);
  f.port.define(before.replace(blocks[0]! + blocks[1]!, blocks[1]! + blocks[0]!));
  assertOk(
    f.port.getPersistentXml("alpha", { secure: true }).indexOf(b) <
      f.port.getPersistentXml("alpha", { secure: true }).indexOf(a),
  );
  const report = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    backup: listBackups(f.stateDir, "alpha")[0]!.id,
    confirm: yes,
  });
  assertEquals(report.status, "restored", report.message);
  const restored = f.port.getPersistentXml("alpha", { secure: true });
  assertOk(restored.indexOf(a) < restored.indexOf(b), restored);
  assertOk(restored !== applied);
});

/** cloud-init user data as YAML, whose indentation is its meaning. */
const USER_DATA = "#cloud-config\nusers:\n  - name: admin\n    sudo: ALL\nruncmd:\n  - reboot";
/** The same lines with the indentation lost and a blank line added: other YAML. */
const FLATTENED = "#cloud-config\nusers:\n- name: admin\nsudo: ALL\nruncmd:\n\n- reboot";

/** alpha with `userData` in its `<description>` and in another tool's `<metadata>`, as libvirt keeps it. */
function defineUserData(f: Fixture, userData: string): string {
  const xml = f.port.getPersistentXml("alpha", { secure: true })
    .replace(/\n {2}<description>[^]*<\/metadata>/, "")
    .replace(
      "</uuid>",
      `</uuid>\n  <description>${userData}</description>\n  <metadata>\n` +
        `    <ci:user-data xmlns:ci="urn:example:cloud-init">${userData}</ci:user-data>\n` +
        "  </metadata>",
    );
  f.port.define(xml);
  return f.port.getPersistentXml("alpha", { secure: true });
}

Deno.test("rollbackVm() restores a backup whose text differs only in its spaces and blank lines, and shows them", async () => {
  using f = fixture();
  const original = defineUserData(f, USER_DATA);
  assertOk(original.includes("\n    sudo: ALL\n"));
  writeBackup(f.stateDir, {
    vm: "alpha",
    uuid: UUID_A,
    xml: original,
    reason: "apply",
    uri: f.port.uri,
  });
  defineUserData(f, FLATTENED);
  let diff = "";
  const report = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: (preview) => {
      diff = renderDomainDiff(preview.currentXml!, preview.backupXml, { vm: "alpha" });
      return Promise.resolve(true);
    },
  });
  assertEquals(report.status, "restored", report.message);
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), original);
  // The diff confirmed shows the lines whose meaning changed, in both elements.
  const changed = diff.split("\n").filter((l) => /^[-+](?!-- |\+\+ )/.test(l));
  assertEquals(changed.filter((l) => l === "-sudo: ALL" || l === "+    sudo: ALL").length, 4);
  assertEquals(changed.filter((l) => l === "-").length, 2);
  // Restored, it has the backup's definition.
  const again = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    backup: report.backup.id,
    confirm: yes,
  });
  assertEquals(again.status, "unchanged");
});

Deno.test("rollbackVm() reports a restore whose text libvirt holds with other spaces as failed", async () => {
  using f = fixture();
  const original = defineUserData(f, USER_DATA);
  writeBackup(f.stateDir, {
    vm: "alpha",
    uuid: UUID_A,
    xml: original,
    reason: "apply",
    uri: f.port.uri,
  });
  f.port.define(original.replace("1048576</memory>", "2097152</memory>"));
  // A libvirt that loses the text's indentation as it stores the definition.
  const flattening: LibvirtPort = {
    ...f.port,
    define: (xml) => f.port.define(xml.replaceAll("\n    sudo: ALL", "\nsudo: ALL")),
  };
  const report = await rollbackVm("alpha", {
    libvirt: flattening,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals(report.status, "failed");
  assertMatch(report.message, /^After the rollback the definition of "alpha" differs from backup/);
});

// ---------------------------------------------------------------------------------------------
// The CLI, spawned for real. The test driver keeps no state across processes, so the VM seen by
// `rollback` is the world file's: the backup written here makes a real difference to restore.

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/**
 * A test-driver world in `root` holding VM alpha (shut off), and a backup of it (as `apply` writes
 * one) whose definition is `edit` of alpha's now; with `vm`, that VM instead.
 */
async function alphaWithBackup(
  root: string,
  edit: (xml: string) => string,
  vm = { name: "alpha", uuid: UUID_A, running: false },
): Promise<{ world: string; stateDir: string }> {
  const world = `${root}/world.xml`;
  await Deno.writeTextFile(world, `<node>\n${domain(vm.name, vm.uuid, vm.running)}\n</node>\n`);
  const stateDir = `${root}/state`;
  using port = openLibvirtPort(`test://${world}`);
  const xml = edit(port.getPersistentXml(vm.name, { secure: true }));
  writeBackup(stateDir, { vm: vm.name, uuid: vm.uuid, xml, reason: "apply", uri: port.uri });
  return { world, stateDir };
}

Deno.test({
  name: "passthrough rollback refuses a backup whose hostdev is a device this host needs now",
  ignore: livePciMissing() !== null,
  async fn() {
    const live = liveDefaultRouteNic();
    if (live === null) return;
    const { address: nic, hostdev } = live;
    const root = await Deno.makeTempDir({ prefix: "passthrough-rollback-cli-" });
    try {
      // A hand-added hostdev on the NIC of this host's default route.
      const { world, stateDir } = await alphaWithBackup(
        root,
        (xml) => xml.replace("</devices>", `${hostdev}\n</devices>`),
      );
      const args = ["rollback", "alpha", "--yes", "--connect", `test://${world}`];
      const result = await cli([...args, "--state-dir", stateDir]);
      assertEquals(result.code, 1, result.stderr);
      assertMatch(
        result.stdout,
        new RegExp(
          `^Refusing to restore backup ".*" into "alpha": hostdev ${nic} holds .* the host needs ` +
            `it: in use by the host \\(default-route: .*; "passthrough plan --vm alpha -c test://${world}" shows`,
        ),
      );
      // Nothing was written: no backup of the definition it would have replaced.
      assertEquals(listBackups(stateDir, "alpha").length, 1);
      // A script tells this refusal from a failed define by its code, not the sentence.
      const json = await cli([...args, "--state-dir", stateDir, "--json"]);
      assertEquals(json.code, 1, json.stderr);
      const report = JSON.parse(json.stdout);
      assertEquals([report.status, report.code, report.safetyBackup], [
        "failed",
        "start-refused",
        null,
      ]);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "passthrough rollback restores a device the host needs that its rule's allow_host_critical lets the start guard start",
  ignore: livePciMissing() !== null,
  async fn() {
    const live = liveDefaultRouteNic();
    if (live === null) return;
    const { address: nic, hostdev } = live;
    const sys = (file: string) =>
      Deno.readTextFileSync(`/sys/bus/pci/devices/${nic}/${file}`).trim().replace(/^0x/, "");
    // As apply records a device of rule "nic", whose allow_host_critical: true plan honoured.
    const record = `<metadata><pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1"><pt:device ` +
      `address="${nic}" vendor="${sys("vendor")}" device="${sys("device")}" subsystem-vendor="${
        sys("subsystem_vendor")
      }" subsystem-device="${sys("subsystem_device")}" class="${
        sys("class")
      }" rule="nic"/></pt:hostdevs></metadata>`;
    const root = await Deno.makeTempDir({ prefix: "passthrough-h152-rollback-cli-" });
    try {
      const { world, stateDir } = await alphaWithBackup(root, (xml) => {
        // In libvirt's own form (where it puts the metadata), as apply's backups hold it.
        using port = openLibvirtPort(`test://${root}/world.xml`);
        port.define(
          xml.replace("</devices>", `${hostdev}\n</devices>`).replace(
            "</domain>",
            `${record}\n</domain>`,
          ),
        );
        return port.getPersistentXml("alpha", { secure: true });
      });
      const args = ["rollback", "alpha", "--yes", "--json", "--connect", `test://${world}`];
      // Without the override the guard refuses it, and so does the rollback.
      const refused = await cli([...args, "--state-dir", stateDir]);
      assertEquals([refused.code, JSON.parse(refused.stdout).code], [1, "start-refused"]);
      const policy = { guard: "enforce" as const, rules: {}, allowHostCritical: ["nic"] };
      const config = `${root}/passthrough_config.yaml`;
      // The rule allows it, but no apply left that record there (an edited record, or a file an
      // earlier version wrote): the guard refuses to start it, and so does the rollback.
      recordPolicies(stateDir, { version: 1, config, vms: { alpha: policy } });
      const unbound = await cli([...args, "--state-dir", stateDir]);
      assertEquals([unbound.code, JSON.parse(unbound.stdout).code], [1, "start-refused"]);
      assertMatch(
        JSON.parse(unbound.stdout).message,
        new RegExp(`rule "nic"'s allow_host_critical does not count here: .* at ${nic} `),
      );
      const backupXml = readBackupXml(listBackups(stateDir, "alpha")[0]!);
      // As apply leaves it: the record it wrote, listed under the rule.
      const devices = Object.fromEntries(
        parseDomainXml(backupXml).records.map((r) => [r.address, r]),
      );
      recordPolicies(stateDir, { version: 1, config, vms: { alpha: { ...policy, devices } } });
      const guard = await runGuard({
        vm: "alpha",
        operation: "prepare",
        subOperation: "begin",
        xml: backupXml,
        reader: libcSysfsReader(),
        root: "/sys",
        live: true,
        stateDir,
      });
      assertEquals([guard.code, guard.lines], [0, []], "the start guard starts it");
      const json = await cli([...args, "--state-dir", stateDir]);
      const report = JSON.parse(json.stdout);
      assertEquals(
        [json.code, report.status, report.code],
        [0, "restored", "restored"],
        json.stdout,
      );
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "passthrough rollback warns, before it asks, that a restored hostdev whose address holds no device keeps the VM from starting",
  ignore: livePciMissing() !== null,
  async fn() {
    // An address no machine like this one has: the card the backup recorded there is gone.
    const gone = "0000:fe:1f.7";
    assertEquals(pathExists(`/sys/bus/pci/devices/${gone}`), false);
    const root = await Deno.makeTempDir({ prefix: "passthrough-rollback-cli-" });
    try {
      const rollback = async (dir: string, flags: string[], guard?: "warn" | "off") => {
        await Deno.mkdir(`${root}/${dir}`);
        const { world, stateDir } = await alphaWithBackup(
          `${root}/${dir}`,
          (xml) =>
            editDomainXml(xml, {
              remove: [],
              add: [{ address: gone, managed: true }],
              records: [identity(gone)],
            }),
        );
        // The policy an apply of alpha with `guard:` recorded, which the hook judges it by.
        const vms = guard === undefined ? {} : { alpha: { guard, rules: {}, uuid: UUID_A } };
        if (guard !== undefined) recordPolicies(stateDir, { version: 1, config: "c.yaml", vms });
        const args = ["--connect", `test://${world}`, "--state-dir", stateDir];
        const result = await cli(["rollback", "alpha", "--yes", ...flags, ...args]);
        assertEquals(result.code, 0, result.stderr);
        return { world, stdout: result.stdout };
      };
      const warning = (world: string) =>
        `the start guard would refuse to start "alpha" as restored: hostdev ${gone} holds no device now, not the recorded 10de:2684 (class 030000) of rule "gpu"; fix: start it again once ${gone} is there again (a card found after the VM's autostart, such as behind Thunderbolt, or put back); if the card moved or left for good: passthrough plan --vm alpha -c test://${world}`;
      const json = await rollback("json", ["--json"]);
      const report = JSON.parse(json.stdout);
      assertEquals([report.status, report.warnings], ["restored", [warning(json.world)]]);
      // Shown with the diff, before the outcome (and before the question without --yes).
      const text = await rollback("text", []);
      assertOk(
        text.stdout.includes(`\n </domain>\nWarning: ${warning(text.world)}\nRestored "alpha"`),
        text.stdout,
      );
      // Under guard: warn or off the hook lets the start go on: libvirt fails it.
      for (const guard of ["warn", "off"] as const) {
        const lax = await rollback(guard, ["--json"], guard);
        const lets = guard === "warn" ? "warn and go on" : "pass it";
        assertEquals(JSON.parse(lax.stdout).warnings, [
          warning(lax.world).replace(
            'the start guard would refuse to start "alpha" as restored',
            `"alpha" would not start as restored (the start guard, by its policy, would ${lets}, and libvirt fails to find the device)`,
          ),
        ]);
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test("passthrough rollback without a terminal says first that a VM has no backup", async () => {
  // It said "No terminal to confirm on: pass --yes", and with --yes that there was nothing to
  // roll back: the user learnt it only once they had given what no question needed.
  const root = await Deno.makeTempDir({ prefix: "passthrough-rollback-cli-" });
  try {
    const { world, stateDir: backedUp } = await alphaWithBackup(root, (xml) => xml);
    await Deno.mkdir(`${root}/empty`);
    for (
      const [stateDir, where] of [[`${root}/empty`, "empty"], [`${root}/none`, "none \\(which"]]
    ) {
      const args = ["rollback", "alpha", "--connect", `test://${world}`, "--state-dir", stateDir!];
      const result = await cli(args);
      assertEquals([result.code, result.stdout], [1, ""], result.stderr);
      assertMatch(
        result.stderr,
        new RegExp(`^passthrough rollback: No backup of VM "alpha" in .*/${where}`),
      );
    }
    // Nor is a question needed for a VM that already has its backup's definition.
    const same = await cli(["rollback", "alpha", "-c", `test://${world}`, "--state-dir", backedUp]);
    assertEquals(same.code, 0, same.stderr);
    assertMatch(same.stdout, /^VM "alpha" already has the definition of backup "/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("passthrough rollback --yes restores a backup, and backups lists both", async () => {
  const root = await Deno.makeTempDir({ prefix: "passthrough-rollback-cli-" });
  try {
    const { world, stateDir } = await alphaWithBackup(
      root,
      (xml) => xml.replace("1048576</memory>", "2097152</memory>"),
    );
    const noTerminal = await cli([
      "rollback",
      "alpha",
      "--connect",
      `test://${world}`,
      "--state-dir",
      stateDir,
    ]);
    assertEquals(noTerminal.code, 1);
    assertEquals(
      noTerminal.stderr,
      "passthrough rollback: No terminal to confirm on: pass --yes to roll back without asking\n",
    );

    const result = await cli([
      "rollback",
      "alpha",
      "--yes",
      "--json",
      "--connect",
      `test://${world}`,
      "--state-dir",
      stateDir,
    ]);
    assertEquals(result.code, 0, result.stderr);
    const report = JSON.parse(result.stdout);
    assertEquals([report.status, report.safetyBackup.reason], ["restored", "rollback"]);

    const listed = await cli(["backups", "alpha", "--state-dir", stateDir]);
    assertEquals(listed.code, 0);
    const rows = listed.stdout.trimEnd().split("\n");
    assertMatch(rows[0]!, /^#\s+TIME\s+VM\s+REASON\s+ID\s+UUID$/);
    // `#` numbers alpha's backups from the newest: what `rollback --to N` takes.
    assertEquals(rows.slice(1).map((r) => r.split(/\s+/)).map((c) => [c[0], c[2], c[3]]), [
      ["1", "alpha", "rollback"],
      ["2", "alpha", "apply"],
    ]);
    const missing = await cli([
      "rollback",
      "alpha",
      "--yes",
      "--to",
      "nope",
      "--connect",
      `test://${world}`,
      "--state-dir",
      stateDir,
    ]);
    assertEquals(missing.code, 1);
    assertMatch(missing.stderr, /No backup "nope" of VM "alpha"/);
    // It says where it looked.
    assertOk(missing.stderr.includes(`of VM "alpha" in ${stateDir}:`), missing.stderr);
    // And the command it advises lists that directory, not the default one.
    assertOk(
      missing.stderr.includes(`run "passthrough backups alpha --state-dir ${stateDir}" to list`),
      missing.stderr,
    );

    const rollback = (to: string) =>
      cli([
        "rollback",
        "alpha",
        "--yes",
        "--json",
        "--to",
        to,
        "--connect",
        `test://${world}`,
        "--state-dir",
        stateDir,
      ]);
    // The index `backups` showed: 2 is the apply backup, the older one.
    const second = await rollback("2");
    assertEquals(second.code, 0, second.stderr);
    const applyId = rows[2]!.split(/\s+/)[4]!;
    assertEquals(JSON.parse(second.stdout).backup.id, applyId);
    // A unique start of an id (the date and time up to the milliseconds) names it too.
    const byPrefix = await rollback(applyId.slice(0, applyId.indexOf("Z")));
    assertEquals(byPrefix.code, 0, byPrefix.stderr);
    assertEquals(JSON.parse(byPrefix.stdout).backup.id, applyId);
    // With --yes, the text output still shows what the rollback changes, before the outcome.
    const text = await cli([
      "rollback",
      "alpha",
      "--yes",
      "--to",
      applyId,
      "--connect",
      `test://${world}`,
      "--state-dir",
      stateDir,
    ]);
    assertEquals(text.code, 0, text.stderr);
    assertMatch(text.stdout, /^Backup \S+ \(apply, [^)]+\)\n--- alpha \(current\)\n/);
    assertMatch(
      text.stdout,
      /\n\+ {2}<memory unit='KiB'>2097152<\/memory>\n[^]*\nRestored "alpha"/,
    );

    // A backup of another VM is explained, not just missing.
    const ofBeta = writeBackup(stateDir, {
      vm: "beta",
      uuid: UUID_B,
      xml: domain("beta", UUID_B, false),
      reason: "apply",
      uri: `test://${world}`,
    });
    const other = await rollback(ofBeta.id);
    assertEquals(other.code, 1);
    assertMatch(other.stderr, new RegExp(`backup "${ofBeta.id}" belongs to VM "beta"`));
    // Its command restores it through the same libvirt and state directory.
    assertOk(
      other.stderr.includes(
        `"passthrough rollback beta --to ${ofBeta.id} -c test://${world} --state-dir ${stateDir}"`,
      ),
      other.stderr,
    );

    // A mistyped state directory says it does not exist, and rollback creates nothing there.
    const none = await cli(["backups", "--state-dir", `${root}/absent`]);
    assertEquals([none.code, none.stdout], [0, `No backups: ${root}/absent does not exist\n`]);
    // A mistyped VM name reads as a VM never backed up unless the closest one is named.
    const misspelt = await cli(["backups", "alhpa", "--state-dir", stateDir]);
    assertEquals([misspelt.code, misspelt.stdout], [
      0,
      `No backups of VM "alhpa" in ${stateDir} (did you mean "alpha"?); 2 other VMs have backups (passthrough backups --state-dir ${stateDir} lists them)\n`,
    ]);
    const typo = await cli([
      "rollback",
      "alpha",
      "--yes",
      "--connect",
      `test://${world}`,
      "--state-dir",
      `${root}/absent`,
    ]);
    assertEquals(typo.code, 1);
    assertMatch(
      typo.stderr,
      new RegExp(`No backup of VM "alpha" in ${root}/absent \\(which does not exist\\)`),
    );
    assertOk(!pathExists(`${root}/absent`), "rollback created the state directory");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("rollbackVm() does not overwrite a change made to the VM while the question was open", async () => {
  using f = fixture();
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  const before = listBackups(f.stateDir, "alpha").length;
  let edited = "";
  const report = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: () => {
      // Someone else redefines the VM (virsh edit) while the user reads the preview.
      edited = f.port.getPersistentXml("alpha", { secure: true }).replace(
        "1048576</memory>",
        "2097152</memory>",
      );
      f.port.define(edited);
      return Promise.resolve(true);
    },
  });
  assertEquals([report.status, report.code], ["failed", "drift"]);
  assertMatch(report.message, /"alpha".*changed since/);
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), edited);
  assertEquals(hostdevs(f, "alpha"), ["0000:01:00.0"]);
  assertEquals(listBackups(f.stateDir, "alpha").length, before);
});

Deno.test("rollbackVm() names the safety backup it wrote when the definition changed just before the define", async () => {
  using f = fixture();
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  const shown = f.port.getPersistentXml("alpha", { secure: true });
  const before = listBackups(f.stateDir, "alpha").length;
  let edited = "";
  // The user's edit (virsh edit) lands once the safety backup is written: on the last look.
  const racing: LibvirtPort = {
    ...f.port,
    get uri() {
      return f.port.uri;
    },
    getPersistentXml: (name, options) => {
      if (edited === "" && listBackups(f.stateDir, "alpha").length > before) {
        edited = shown.replace("1048576</memory>", "2097152</memory>");
        f.port.define(edited);
      }
      return f.port.getPersistentXml(name, options);
    },
  };
  const report = await rollbackVm("alpha", { libvirt: racing, stateDir: f.stateDir, confirm: yes });
  assertEquals(report.status, "failed");
  assertMatch(
    report.message,
    /^Not restored: the definition of "alpha" changed since the rollback/,
  );
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), edited);
  // The backup written before the last look exists: the report names it (a script needs its id).
  const written = listBackups(f.stateDir, "alpha");
  assertEquals(written.length, before + 1);
  assertOk(report.safetyBackup !== null, "the safety backup written is named");
  assertEquals(report.safetyBackup.id, written.find((b) => b.reason === "rollback")?.id);
  assertEquals(Deno.readTextFileSync(report.safetyBackup.path), shown);
});

Deno.test("rollbackVm() does not restore a backup giving the VM a device another domain holds now", async () => {
  using f = fixture();
  const GPU = "0000:01:00.0";
  // alpha lets the GPU go (its backup holds it), and beta takes it.
  await addThenRelease(f, "alpha", GPU);
  await addHostdevs(f, "beta", [GPU]);
  const before = f.port.getPersistentXml("alpha", { secure: true });
  const { report: rolled, asked } = await rollbackNotingQuestion(f, "alpha");
  assertEquals([rolled.status, rolled.code, asked], ["failed", "held-elsewhere", false]);
  assertMatch(
    rolled.message,
    /^Not restored: backup ".*" gives "alpha" devices held elsewhere now: "beta" holds "0000:01:00\.0" in its persistent definition; .*two definitions/,
  );
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), before);
  assertEquals(hostdevs(f, "beta"), [GPU]);
});

Deno.test("rollbackVm() does not restore a backup giving the VM a device whose IOMMU group another domain holds a device of now", async () => {
  using f = fixture();
  const GPU = "0000:01:00.0";
  const AUDIO = "0000:01:00.1";
  // alpha lets the GPU go (its backup holds it), and beta takes the GPU's audio function, in
  // the GPU's group: plan would refuse the group to both (group-shared-with-other-vm).
  await addThenRelease(f, "alpha", GPU);
  await addHostdevs(f, "beta", [AUDIO]);
  const before = f.port.getPersistentXml("alpha", { secure: true });
  const { report: rolled, asked } = await rollbackNotingQuestion(f, "alpha", {
    readDevice: inGroups((a) => a.startsWith("0000:01:00.") ? 5 : null),
  });
  assertEquals([rolled.status, rolled.code, asked], ["failed", "held-elsewhere", false]);
  assertEquals(
    rolled.message,
    `Not restored: backup "${rolled.backup.id}" gives "alpha" "0000:01:00.0" (IOMMU group 5), and another domain holds a device of that group now: "beta" holds "0000:01:00.1" in its persistent definition; a group's devices can go to one VM only (plan refuses it: group-shared-with-other-vm): release them there first`,
  );
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), before);
  // A device in another group does not hold it back.
  const other = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    readDevice: inGroups((a) => a === GPU ? 5 : 6),
    confirm: yes,
  });
  assertEquals(other.status, "restored", other.message);
  assertEquals(hostdevs(f, "alpha"), [GPU]);
});

Deno.test("rollbackVm() names only the devices of the IOMMU group another domain holds a device of", async () => {
  using f = fixture();
  const [GPU, AUDIO, NIC] = ["0000:01:00.0", "0000:01:00.1", "0000:02:00.0"];
  // alpha lets the GPU and a NIC in another group go (its backup holds both); beta takes the
  // GPU's audio function: the GPU's group is the one shared, not the NIC's.
  await addHostdevs(f, "alpha", [GPU, NIC]);
  const withThem = f.port.getPersistentXml("alpha", { secure: true });
  const released = editDomainXml(withThem, { remove: [GPU, NIC], add: [], records: [] });
  const release: VmPlan = {
    ...emptyVmPlan("alpha", withThem),
    desiredXml: released,
    changed: true,
  };
  await applyPlan(
    { config: "c", host: "h", uri: f.port.uri, vms: [release], errors: [], warnings: [] },
    { libvirt: f.port, stateDir: f.stateDir, confirm: () => Promise.resolve("yes") },
  );
  await addHostdevs(f, "beta", [AUDIO]);
  const rolled = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    readDevice: inGroups((a) => a.startsWith("0000:01:00.") ? 5 : a === NIC ? 6 : null),
    confirm: yes,
  });
  assertEquals([rolled.status, rolled.code], ["failed", "held-elsewhere"]);
  assertMatch(rolled.message, /gives "alpha" "0000:01:00\.0" \(IOMMU group 5\), and another/);
  assertEquals(rolled.message.includes(NIC), false, rolled.message);
});

Deno.test("rollbackVm() does not restore a backup giving the VM an SR-IOV PF whose VF another domain holds now, nor a VF whose PF it holds", async () => {
  const PF = "0000:03:00.0";
  const VF = "0000:03:02.0";
  for (const [given, held] of [[PF, VF], [VF, PF]] as const) {
    using f = fixture();
    // alpha lets `given` go (its backup holds it); beta takes its PF or VF, in another group.
    await addThenRelease(f, "alpha", given);
    await addHostdevs(f, "beta", [held]);
    const before = f.port.getPersistentXml("alpha", { secure: true });
    const rolled = await rollbackVm("alpha", {
      libvirt: f.port,
      stateDir: f.stateDir,
      readDevice: (a) => ({
        iommuGroup: a === PF ? 7 : 8,
        physfn: a === VF ? PF : null,
        virtfns: a === PF ? [VF] : [],
      }),
      confirm: yes,
    });
    assertEquals([rolled.status, rolled.code], ["failed", "held-elsewhere"]);
    assertEquals(
      rolled.message,
      `Not restored: backup "${rolled.backup.id}" gives "alpha" an SR-IOV function whose PF or VF another domain holds now: "beta" holds "${held}" in its persistent definition; a PF and its VFs stay with one VM (plan refuses it: sriov-split): release them there first`,
    );
    assertEquals(f.port.getPersistentXml("alpha", { secure: true }), before);
  }
});

Deno.test("rollbackVm() does not restore a backup whose device another domain was given while the question was open", async () => {
  using f = fixture();
  const GPU = "0000:01:00.0";
  await addThenRelease(f, "alpha", GPU);
  const before = f.port.getPersistentXml("alpha", { secure: true });
  const rolled = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: () => {
      // virsh attach-device --config beta gpu.xml, while the user reads the preview.
      const beta = f.port.getPersistentXml("beta", { secure: true });
      f.port.define(editDomainXml(beta, {
        remove: [],
        add: [{ address: GPU, managed: true }],
        records: [],
      }));
      return Promise.resolve(true);
    },
  });
  assertEquals(rolled.status, "failed");
  assertMatch(rolled.message, /"beta" holds "0000:01:00\.0" in its persistent definition/);
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), before);
});

Deno.test("rollbackVm() reads the host's devices again after the question, once per device per check", async () => {
  using f = fixture();
  const [GPU, AUDIO] = ["0000:01:00.0", "0000:01:00.1"];
  await addThenRelease(f, "alpha", GPU);
  await addHostdevs(f, "beta", [AUDIO]);
  const before = f.port.getPersistentXml("alpha", { secure: true });
  // The audio function is in a group of its own until the question, in the GPU's after it.
  let asked = false;
  const reads: string[] = [];
  const rolled = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    readDevice: (address) => {
      reads.push(`${asked ? "after" : "before"} ${address}`);
      return { iommuGroup: address === AUDIO && !asked ? 6 : 5, physfn: null, virtfns: [] };
    },
    confirm: () => {
      asked = true;
      return Promise.resolve(true);
    },
  });
  // Before: the answers read before the question were used after it, and alpha was restored.
  assertEquals([rolled.status, rolled.code], ["failed", "held-elsewhere"], rolled.message);
  assertMatch(rolled.message, /"beta" holds "0000:01:00\.1" in its persistent definition/);
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), before);
  assertEquals(reads.toSorted(), [
    `after ${GPU}`,
    `after ${AUDIO}`,
    `before ${GPU}`,
    `before ${AUDIO}`,
  ]);
});

Deno.test("rollbackVm() does not restore a backup giving the VM the controller under another domain's USB device", async () => {
  using f = fixture();
  const GPU = "0000:01:00.0";
  await addThenRelease(f, "alpha", GPU);
  // beta now takes a USB receiver plugged into that controller (as this host's facts say).
  addToBeta(
    f,
    `<hostdev mode='subsystem' type='usb' managed='yes'><source><vendor id='0x046d'/>` +
      `<product id='0xc52b'/></source></hostdev>`,
  );
  const rolled = await rollAlpha(f, { ...NO_DEVICES, usbDeviceControllers: () => [GPU] });
  assertEquals(rolled.status, "failed");
  assertMatch(
    rolled.message,
    /held elsewhere now: "beta" holds "0000:01:00\.0" \(under its USB device 046d:c52b\) in its persistent definition/,
  );
  // Without this host's facts (a remote connection), nothing says so.
  const blind = await rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes });
  assertEquals(blind.status, "restored");
});

Deno.test("rollbackVm() does not define a VM undefined while the question was open", async () => {
  using f = fixture();
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  const report = await rollbackUndefiningAtQuestion(f, "alpha");
  assertEquals(report.status, "failed");
  assertMatch(report.message, /"alpha" changed since the rollback was shown: it was undefined; /);
  assertEquals(f.port.listDomains().map((d) => d.name), ["beta"]);
});

/** Undefines `name` through the fixture's connection: a running VM runs on, as a transient domain. */
function undefine(f: Fixture, name: string): void {
  using domain = f.conn.lookupDomainByName(name);
  domain.undefine();
}

/** Rolls `vm` back, undefining it while the question is open. */
function rollbackUndefiningAtQuestion(f: Fixture, vm: string) {
  return rollbackVm(vm, {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: () => {
      undefine(f, vm);
      return Promise.resolve(true);
    },
  });
}

Deno.test("rollbackVm() of a VM renamed since its backup says so before asking, and defines nothing", async () => {
  using f = fixture();
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  // virsh domrename alpha gamma: the same uuid under another name.
  const xml = f.port.getPersistentXml("alpha", { secure: true });
  undefine(f, "alpha");
  f.port.define(xml.replace("<name>alpha</name>", "<name>gamma</name>"));
  const { report, asked } = await rollbackNotingQuestion(f, "alpha");
  assertEquals([report.status, report.code, report.safetyBackup, asked], [
    "failed",
    "renamed",
    null,
    false,
  ]);
  assertEquals(
    report.message,
    `Not restored: "alpha" is not defined, and its uuid ${UUID_A} is "gamma" now (renamed): libvirt takes no second domain with that uuid; to restore backup "${report.backup.id}", rename it back with "virsh domrename gamma alpha" (while it is shut off), then run "passthrough rollback alpha --to ${report.backup.id}"`,
  );
  assertEquals(f.port.listDomains().map((d) => d.name).sort(), ["beta", "gamma"]);
});

Deno.test("rollbackVm() of a VM whose uuid a transient domain carries now says to wait for it to go, not to rename it", async () => {
  using f = fixture();
  // delta's backup; delta was undefined, and its definition started as a transient "beta" (virsh
  // create): virsh domrename takes no transient domain, and one shut off is gone.
  const xml = f.port.getPersistentXml("beta", { secure: true });
  writeBackup(f.stateDir, {
    vm: "delta",
    uuid: UUID_B,
    xml: xml.replace("<name>beta</name>", "<name>delta</name>"),
    reason: "apply",
    uri: f.port.uri,
  });
  undefine(f, "beta");
  const report = await rollbackVm("delta", { libvirt: f.port, stateDir: f.stateDir, confirm: yes });
  assertEquals([report.status, report.code], ["failed", "renamed"]);
  assertEquals(
    report.message,
    `Not restored: "delta" is not defined, and its uuid ${UUID_B} is the transient domain "beta" now: libvirt takes no second domain with that uuid; once "beta" is shut off and gone, run "passthrough rollback delta --to ${report.backup.id}"`,
  );
});

Deno.test("rollbackVm() refuses a transient domain, as apply does, and defines nothing", async () => {
  using f = fixture();
  await addHostdevs(f, "beta", ["0000:01:00.0"]);
  undefine(f, "beta");
  const { report, asked } = await rollbackNotingQuestion(f, "beta");
  assertEquals([report.status, report.code, report.safetyBackup, asked], [
    "failed",
    "transient",
    null,
    false,
  ]);
  assertEquals(
    report.message,
    `Not restored: "beta" is a transient domain, and defining backup "${report.backup.id}" would make it persistent; once it is shut off and gone, "passthrough rollback beta --to ${report.backup.id}" defines it from the backup`,
  );
  assertEquals(f.port.listDomains().find((d) => d.name === "beta")?.persistent, false);
  assertEquals(listBackups(f.stateDir, "beta").length, 1);
});

Deno.test("rollbackVm() does not define a running VM undefined while the question was open", async () => {
  using f = fixture();
  await addHostdevs(f, "beta", ["0000:01:00.0"]);
  const report = await rollbackUndefiningAtQuestion(f, "beta");
  assertEquals([report.status, report.code, report.safetyBackup], ["failed", "transient", null]);
  assertMatch(report.message, /^Not restored: "beta" is a transient domain, /);
  assertEquals(f.port.listDomains().find((d) => d.name === "beta")?.persistent, false);
  assertEquals(listBackups(f.stateDir, "beta").length, 1);
});

Deno.test("rollbackVm() is not held back by a device its VM already shares with another domain", async () => {
  using f = fixture();
  const GPU = "0000:01:00.0";
  // The newest backup holds the GPU; alpha holds it now too, as beta does (added by hand).
  await addHostdevs(f, "alpha", [GPU]);
  await addHostdevs(f, "alpha", ["0000:02:00.0"]);
  addToBeta(f, hostdevXml(GPU));
  // Restoring adds nothing another domain holds: the double it keeps was there before.
  const report = await rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes });
  assertEquals(report.status, "restored", report.message);
  assertEquals(hostdevs(f, "alpha"), [GPU]);
});

Deno.test("rollbackVm() does not restore a backup giving the VM the NIC under another domain's network", async () => {
  const NIC = "0000:44:00.0";
  using f = fixture(
    "<network><name>lan</name><forward mode='bridge'/><bridge name='br0'/></network>\n",
  );
  await addThenRelease(f, "alpha", NIC);
  addToBeta(
    f,
    "<interface type='network'><source network='lan'/><model type='virtio'/></interface>",
  );
  // This host's facts: br0's port is the NIC.
  const rolled = await rollAlpha(f, {
    ...NO_DEVICES,
    netDeviceControllers: (name: string) => name === "br0" ? [NIC] : null,
  });
  assertEquals(rolled.status, "failed");
  assertMatch(rolled.message, /"beta" holds "0000:44:00\.0" \(under its network lan/);
  assertEquals(hostdevs(f, "alpha"), []);
});

Deno.test("rollbackVm() does not restore a backup giving the VM a VF of a hostdev network's pool, nor the pool's PF", async () => {
  const [VF, PF] = ["0000:05:10.0", "0000:05:00.0"];
  using f = fixture(
    `<network><name>sriov</name><forward mode='hostdev' managed='yes'>
      <address type='pci' domain='0x0000' bus='0x05' slot='0x10' function='0x0'/>
    </forward></network>\n`,
  );
  const sriov: NonNullable<RollbackOptions["readDevice"]> = (address) =>
    address === VF
      ? { iommuGroup: 20, physfn: PF, virtfns: [] }
      : address === PF
      ? { iommuGroup: 21, physfn: null, virtfns: [VF] }
      : null;
  for (const address of [VF, PF]) {
    await addThenRelease(f, "alpha", address);
    const { report, asked } = await rollbackNotingQuestion(f, "alpha", {
      devices: NO_DEVICES,
      readDevice: sriov,
    });
    assertEquals([report.status, report.code, asked], ["failed", "held-elsewhere", false], address);
    assertMatch(report.message, /hostdev network "sriov"/, address);
    assertMatch(report.message, /plan refuses it: hostdev-network/, address);
    assertEquals(hostdevs(f, "alpha"), [], address);
  }
});
Deno.test("rollbackVm() counts nothing for another domain's disk it cannot look under", async () => {
  using f = fixture();
  const GPU = "0000:01:00.0";
  await addThenRelease(f, "alpha", GPU);
  addToBeta(
    f,
    "<disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='vdb'/></disk>",
  );
  // As in plan, which warns about it: the way back does not hang on a disk this host cannot read.
  const rolled = await rollAlpha(f, {
    ...NO_DEVICES,
    blockDeviceControllers: (path: string): string[] => {
      throw new Error(`${path}: permission denied`);
    },
  });
  assertEquals(rolled.status, "restored", rolled.message);
  assertEquals(hostdevs(f, "alpha"), [GPU]);
});

/**
 * A fake port for fault injection (a failure libvirt gives only when its daemon goes away, which
 * the test driver cannot do): the fixture's real port, whose `method` throws from its `after`-th
 * call on.
 */
function failing(
  f: Fixture,
  method: "listDomains" | "getPersistentXml",
  after: number,
): LibvirtPort {
  let calls = 0;
  const fail = () => {
    if (++calls >= after) throw new Error("End of file while reading data: Input/output error");
  };
  return {
    get uri() {
      return f.port.uri;
    },
    listDomains: () => (method === "listDomains" && fail(), f.port.listDomains()),
    getPersistentXml: (name, options) => (
      method === "getPersistentXml" && fail(), f.port.getPersistentXml(name, options)
    ),
    getLiveXml: (name) => f.port.getLiveXml!(name),
    isActive: (name) => f.port.isActive(name),
    listNetworks: () => f.port.listNetworks!(),
    define: (xml) => f.port.define(xml),
    attachDevice: (name, xml, options) => f.port.attachDevice(name, xml, options),
    detachDevice: (name, xml, options) => f.port.detachDevice(name, xml, options),
  };
}

Deno.test("rollbackVm() restores nothing when libvirt cannot be read before or after the define", async () => {
  using f = fixture();
  const GPU = "0000:01:00.0";
  await addThenRelease(f, "alpha", GPU);
  const before = f.port.getPersistentXml("alpha", { secure: true });
  const roll = (libvirt: LibvirtPort) =>
    rollbackVm("alpha", { libvirt, stateDir: f.stateDir, confirm: yes });
  // Listings: the VM's summary, the look at the other domains before asking, the VM's own look
  // after the answer, the other domains' again. The second fails, then the third.
  const unlisted = await roll(failing(f, "listDomains", 2));
  assertEquals([unlisted.status, unlisted.code], ["failed", "read-failed"]);
  assertMatch(
    unlisted.message,
    /^Not restored: cannot read the other domains to check that no device backup ".*" gives "alpha" is held elsewhere: .*Input\/output error$/,
  );
  const unread = await roll(failing(f, "listDomains", 3));
  assertEquals([unread.status, unread.code], ["failed", "read-failed"]);
  assertMatch(unread.message, /^Cannot read "alpha" before the rollback: .*Input\/output error$/);
  assertEquals([f.port.getPersistentXml("alpha", { secure: true }), unread.safetyBackup], [
    before,
    null,
  ]);
  // Definitions read: alpha's, then every domain's (alpha's and beta's) before asking; alpha's
  // and every domain's again after the answer, alpha's once more just before the define; the
  // eighth, alpha's read back, fails.
  const blind = await roll(failing(f, "getPersistentXml", 8));
  assertEquals([blind.status, blind.code], ["failed", "verify-failed"]);
  assertOk(blind.safetyBackup !== null);
  assertEquals(
    blind.message,
    `Cannot read "alpha" back after the rollback: End of file while reading data: Input/output error; the replaced definition is in backup "${blind.safetyBackup.id}"`,
  );
});

Deno.test("rollbackVm() reports read-failed, defining nothing, when the VM cannot be read before its checks", async () => {
  using f = fixture();
  await addThenRelease(f, "alpha", "0000:01:00.0");
  const before = f.port.getPersistentXml("alpha", { secure: true });
  const roll = (libvirt: LibvirtPort) =>
    rollbackVm("alpha", { libvirt, stateDir: f.stateDir, confirm: yes });
  // The first listing finds alpha's domain, to check the backup is of it.
  const unfound = await roll(failing(f, "listDomains", 1));
  assertEquals([unfound.status, unfound.code, unfound.active], ["failed", "read-failed", false]);
  assertMatch(
    unfound.message,
    /^Not restored: cannot read "alpha" to compare it with backup ".*": .*Input\/output error; nothing was defined$/,
  );
  // The first definition read is alpha's own, to compare with the backup.
  const unread = await roll(failing(f, "getPersistentXml", 1));
  assertEquals([unread.status, unread.code, unread.safetyBackup], ["failed", "read-failed", null]);
  assertMatch(
    unread.message,
    /^Not restored: cannot read "alpha" to compare it with backup ".*": .*Input\/output error; nothing was defined$/,
  );
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), before);
  // Undefined, the second listing looks for its uuid under another name (renamed).
  undefine(f, "alpha");
  const unlisted = await roll(failing(f, "listDomains", 2));
  assertEquals([unlisted.status, unlisted.code], ["failed", "read-failed"]);
  assertMatch(
    unlisted.message,
    /^Not restored: cannot read "alpha" to compare it with backup ".*": .*Input\/output error; nothing was defined$/,
  );
  assertEquals(f.port.listDomains().some((d) => d.name === "alpha"), false);
});

Deno.test("passthrough rollback that fails after writing its safety backup names it as the definition shown", async () => {
  const root = await Deno.makeTempDir({ prefix: "passthrough-rollback-cli-" });
  try {
    // Hand-edited in MiB: libvirt takes it but stores KiB, so the check after the define fails.
    const { world, stateDir } = await alphaWithBackup(
      root,
      (xml) =>
        xml.replace("<memory unit='KiB'>1048576</memory>", "<memory unit='MiB'>1024</memory>")
          .replace("<currentMemory unit='KiB'>1048576</currentMemory>", ""),
    );
    const result = await cli([
      "rollback",
      "alpha",
      "--yes",
      "--connect",
      `test://${world}`,
      "--state-dir",
      stateDir,
    ]);
    assertEquals(result.code, 1, result.stderr);
    const safety = listBackups(stateDir, "alpha").find((b) => b.reason === "rollback");
    assertOk(safety !== undefined);
    assertMatch(
      result.stdout,
      new RegExp(`\nThe definition shown was backed up as "${safety.id}"\n$`),
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("passthrough rollback of a VM renamed since its backups names the name they are filed under", async () => {
  const root = await Deno.makeTempDir({ prefix: "passthrough-rollback-cli-" });
  try {
    const world = `${root}/world.xml`;
    await Deno.writeTextFile(world, `<node>\n${domain("alpha", UUID_A, false)}\n</node>\n`);
    const uri = `test://${world}`;
    const stateDir = `${root}/state`;
    // Applied as "old-alpha", then `virsh domrename old-alpha alpha`: its backups keep that name.
    const xml = (() => {
      using port = openLibvirtPort(uri);
      return port.getPersistentXml("alpha", { secure: true })
        .replace("<name>alpha</name>", "<name>old-alpha</name>");
    })();
    writeBackup(stateDir, { vm: "old-alpha", uuid: UUID_A, xml, reason: "apply", uri });
    const result = await cli(["rollback", "alpha", "--yes", "-c", uri, "--state-dir", stateDir]);
    assertEquals([result.code, result.stdout], [1, ""]);
    assertEquals(
      result.stderr,
      `passthrough rollback: No backup of VM "alpha" in ${stateDir}: its uuid ${UUID_A} has backups filed as "old-alpha", the name it had when they were taken (renamed since): "passthrough rollback old-alpha -c ${uri} --state-dir ${stateDir}" says how to restore one\n`,
    );
    // Which it does.
    const told = await cli(["rollback", "old-alpha", "--yes", "-c", uri, "--state-dir", stateDir]);
    assertEquals(told.code, 1);
    assertMatch(told.stdout, /rename it back with "virsh domrename alpha old-alpha"/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
Deno.test("passthrough rollback hides a changed password, notes a stale lock, and explains a VM with no backup, one not defined and a mistyped one", async () => {
  const root = await Deno.makeTempDir({ prefix: "passthrough-rollback-cli-" });
  try {
    // A backup that differs only in the VNC password.
    const { world, stateDir } = await alphaWithBackup(
      root,
      (xml) => xml.replace("passwd='s3cret'", "passwd='older-secret'"),
    );
    const uri = `test://${world}`;
    plantDeadLock(uri, stateDir);
    const args = ["--connect", uri, "--state-dir", stateDir];
    const restored = await cli(["rollback", "alpha", "--yes", ...args]);
    assertEquals(restored.code, 0, restored.stderr);
    assertMatch(restored.stdout, /^\+ +<graphics .*passwd='\*\*\*' \(changed\)/m);
    assertOk(!/s3cret|older-secret/.test(restored.stdout), restored.stdout);
    assertMatch(restored.stdout, /\nThe replaced definition was backed up as "[^"]+"\n$/);
    assertEquals(
      restored.stderr,
      `Note: removed a stale lock left by pid 999999 on "gone" (apply, started 2026-01-01T00:00:00.000Z)\n`,
    );
    // A VM libvirt defines, with no backup: apply makes them.
    const empty = `${root}/empty-state`;
    Deno.mkdirSync(empty, { mode: 0o700 });
    const none = await cli(["rollback", "alpha", "--yes", "--connect", uri, "--state-dir", empty]);
    assertEquals([none.code, none.stderr], [
      1,
      `passthrough rollback: No backup of VM "alpha" in ${empty}: 'passthrough apply' backs a VM up before it changes it\n`,
    ]);
    // A backup of a VM libvirt does not define: it is defined from the backup.
    const GAMMA = "33333333-3333-4333-8333-333333333333";
    writeBackup(stateDir, {
      vm: "gamma",
      uuid: GAMMA,
      // As libvirt writes a definition: alpha's, renamed.
      xml: (() => {
        using port = openLibvirtPort(uri);
        return port.getPersistentXml("alpha", { secure: true })
          .replace("<name>alpha</name>", "<name>gamma</name>").replace(UUID_A, GAMMA);
      })(),
      reason: "apply",
      uri,
    });
    const defined = await cli(["rollback", "gamma", "--yes", ...args]);
    assertEquals(defined.code, 0, defined.stdout + defined.stderr);
    assertMatch(
      defined.stdout,
      /\nVM "gamma" is not defined now: it will be defined from the backup\nRestored "gamma"/,
    );
    const misspelt = await cli(["rollback", "alhpa", "--yes", ...args]);
    assertEquals(misspelt.code, 1);
    assertEquals(
      misspelt.stderr,
      `passthrough rollback: No backup of VM "alhpa" in ${stateDir}, and libvirt defines no VM "alhpa" (did you mean "alpha"?): defined VMs: "alpha"\n`,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test({
  name: "passthrough rollback refuses a backup whose recorded device was replaced at its address",
  ignore: livePciMissing() !== null,
  async fn() {
    // A function of this machine the host does not use: its recorded identity says a GPU.
    const spare = liveSpareFunction();
    if (spare === null) return;
    const root = await Deno.makeTempDir({ prefix: "passthrough-rollback-cli-" });
    try {
      const { world, stateDir } = await alphaWithBackup(
        root,
        (xml) =>
          editDomainXml(xml, {
            remove: [],
            add: [{ address: spare, managed: true }],
            records: [identity(spare)],
          }),
      );
      const args = ["--connect", `test://${world}`, "--state-dir", stateDir];
      const result = await cli(["rollback", "alpha", "--yes", ...args]);
      assertEquals(result.code, 1, result.stderr);
      assertMatch(
        result.stdout,
        new RegExp(`^Refusing to restore backup ".*" into "alpha": hostdev ${spare} `),
      );
      assertEquals(listBackups(stateDir, "alpha").length, 1);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "passthrough rollback's refusal names a VM whose name needs quoting as a shell and plan read it",
  ignore: livePciMissing() !== null,
  async fn() {
    const spare = liveSpareFunction();
    if (spare === null) return;
    const root = await Deno.makeTempDir({ prefix: "passthrough-rollback-cli-" });
    try {
      const vm = "-my alpha";
      const { world, stateDir } = await alphaWithBackup(
        root,
        (xml) =>
          editDomainXml(xml, {
            remove: [],
            add: [{ address: spare, managed: true }],
            records: [identity(spare)],
          }),
        { name: vm, uuid: UUID_A, running: false },
      );
      const args = ["--connect", `test://${world}`, "--state-dir", stateDir];
      const result = await cli(["rollback", "--yes", ...args, "--", vm]);
      assertEquals(result.code, 1, result.stderr);
      // The same libvirt as the rollback's: -c repeated.
      assertOk(
        result.stdout.includes(
          `; "passthrough plan --vm='-my alpha' -c test://${world}" shows what the config`,
        ),
        result.stdout,
      );
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test("passthrough rollback of a running VM says before the outcome when the restore takes effect", async () => {
  const root = await Deno.makeTempDir({ prefix: "passthrough-rollback-cli-" });
  try {
    const { world, stateDir } = await alphaWithBackup(
      root,
      (xml) => xml.replace("1048576</memory>", "2097152</memory>"),
      { name: "beta", uuid: UUID_B, running: true },
    );
    const args = ["--connect", `test://${world}`, "--state-dir", stateDir];
    const result = await cli(["rollback", "beta", "--yes", ...args]);
    assertEquals(result.code, 0, result.stderr);
    assertMatch(
      result.stdout,
      /\nVM "beta" is running: the restored definition takes effect at its next full power-off\nRestored "beta" from backup "[^"]+"; it is running/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test({
  name:
    "rollbackVm() on a real libvirtd: a VM with a managed save image is told its next start resumes it, not the restored definition",
  ignore: libvirtdUnavailable() !== null || !canUnshareMounts(),
  async fn() {
    await using daemon = await startLibvirtd({ virtlogd: true });
    await using tree = await demoTree();
    const stateDir = `${tree.dir}/state`;
    using port = openLibvirtPort(daemon.uri);
    const name = `pt-saved-${Deno.pid}`;
    port.define(qemuDomainXml(name));
    const virsh = async (...args: string[]) => {
      const out = await new Deno.Command("virsh", {
        args: ["-c", daemon.uri, ...args],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(out.code, 0, `virsh ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
    };
    // Running, the GPU applied (for its next power-off), then saved, as libvirt-guests suspends
    // guests at host shutdown: the saved guest has a description its definition lacks.
    await virsh("start", name);
    const plan = await planGpu(name, { sysfs: tree.sysfs, libvirt: port });
    const yes = () => Promise.resolve("yes" as const);
    assertEquals((await applyPlan(plan, { libvirt: port, stateDir, confirm: yes })).changed, [
      name,
    ]);
    await virsh("desc", name, "--live", "pt-saved-state");
    await virsh("managedsave", name);
    const report = await rollbackVm(name, {
      libvirt: port,
      stateDir,
      confirm: () => Promise.resolve(true),
    });
    assertEquals([report.status, report.active], ["restored", false]);
    assertMatch(
      report.message,
      new RegExp(
        `^Restored "${name}" from backup "[^"]+"; it has a saved state \\(virsh managedsave\\), which its next start resumes without this change: the change takes effect at its next full power-off, or at its next start after "virsh managedsave-remove ${name}" \\(the saved state is lost\\)$`,
      ),
    );
    // Why: the next start resumes the saved guest, not the definition just restored.
    await virsh("start", name);
    const live = port.getLiveXml!(name);
    assertOk(live.includes("<description>pt-saved-state</description>"), live);
    assertOk(!port.getPersistentXml(name).includes("pt-saved-state"));
    await virsh("destroy", name);
  },
});

Deno.test({
  name:
    "rollbackVm() on a real libvirtd killed before it reads the VM: read-failed, nothing defined",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    const stateDir = `${tree.dir}/state`;
    const name = `pt-killed-${Deno.pid}`;
    let port = openLibvirtPort(daemon.uri);
    try {
      port.define(qemuDomainXml(name));
      const xml = port.getPersistentXml(name, { secure: true });
      const uuid = parseDomainXml(xml).uuid!;
      const backupXml = xml.replace("</name>", "</name><description>old</description>");
      writeBackup(stateDir, { vm: name, uuid, xml: backupXml, reason: "apply", uri: port.uri });
      await killHard(daemon.pid);
      const report = await rollbackVm(name, { libvirt: port, stateDir, confirm: yes });
      assertEquals([report.status, report.code, report.safetyBackup], [
        "failed",
        "read-failed",
        null,
      ]);
      assertMatch(
        report.message,
        new RegExp(
          `^Not restored: cannot read "${name}" to compare it with backup ".*": .*; nothing was defined$`,
        ),
      );
      port.close();
      await daemon.restart();
      port = openLibvirtPort(daemon.uri);
      assertEquals(port.getPersistentXml(name, { secure: true }), xml);
    } finally {
      port.close();
    }
  },
});

Deno.test("rollbackVm() of a VM renamed and another defined under its name says it was renamed", async () => {
  using f = fixture();
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  // virsh domrename alpha alpha-old (its uuid kept), then a new alpha with another uuid.
  const NEW = "77777777-7777-4777-8777-777777777777";
  const old = f.port.getPersistentXml("alpha", { secure: true });
  undefine(f, "alpha");
  f.port.define(old.replace("<name>alpha</name>", "<name>alpha-old</name>"));
  f.port.define(old.replace(UUID_A, NEW));
  await assertRejects(
    () => rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes }),
    BackupMismatchError,
    `the VM has uuid "${NEW}": it is another VM, defined under that name since the backup's VM was renamed "alpha-old", and no backup of "alpha" is of its uuid; "passthrough backups alpha" lists them`,
  );
});

Deno.test("rollbackVm() of a VM defined again with a new uuid says which backup is of it, or that none is", async () => {
  using f = fixture();
  await addHostdevs(f, "alpha", ["0000:01:00.0"]);
  // virsh undefine alpha; virsh define of a new alpha: the same name, another uuid.
  const NEW = "77777777-7777-4777-8777-777777777777";
  const old = f.port.getPersistentXml("alpha", { secure: true });
  undefine(f, "alpha");
  f.port.define(old.replace(UUID_A, NEW));
  const refused = (advice: RegExp) => (e: unknown) =>
    e instanceof BackupMismatchError && e.vmUuid === NEW && e.backupUuid === UUID_A &&
    advice.test(e.message);
  await assertRejects(
    () => rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes }),
    refused(
      /the VM has uuid "7{8}-.*": it was defined again since, and no backup of "alpha" is of its uuid; "passthrough backups alpha" lists them$/,
    ),
  );
  const mine = writeBackup(f.stateDir, {
    vm: "alpha",
    uuid: NEW,
    xml: old.replace(UUID_A, NEW).replace("1048576</memory>", "2097152</memory>"),
    reason: "apply",
    uri: f.port.uri,
  });
  // An old definition's backup asked for by name.
  const oldId = listBackups(f.stateDir, "alpha").find((b) => b.uuid === UUID_A)!.id;
  await assertRejects(
    () =>
      rollbackVm("alpha", { libvirt: f.port, stateDir: f.stateDir, confirm: yes, backup: oldId }),
    refused(
      new RegExp(
        `it was defined again since: "passthrough rollback alpha --to ${mine.id}" restores the newest backup of its uuid; "passthrough backups alpha" lists them$`,
      ),
    ),
  );
});

/**
 * What `rollback` makes of the start guard's check of a backup of "win11" passing the Z690 GPU
 * (0000:03:00.0, recorded under rule "gpu") on that tree with the chipset's audio 0000:00:1f.3
 * moved into its IOMMU group 21 on `driver`, given to running VM "nas" when `held`.
 */
async function groupVerdict(
  { driver, held, policy }: { driver: string; held: boolean; policy: VmGuardPolicy },
) {
  const host = loadFixtureHost("z690-asus-adl");
  host.host_use = [];
  for (const d of host.devices) {
    if (d.bdf === "0000:00:1f.3") Object.assign(d, { group: 21, driver });
  }
  await using tree = await tempHostTree(host);
  Deno.mkdirSync(`${tree.dir}/qemu`);
  if (held) {
    Deno.writeTextFileSync(
      `${tree.dir}/qemu/nas.xml`,
      `<domstatus state='running' pid='4242'><domain type='kvm' id='3'><name>nas</name><devices>${
        hostdevXml("0000:00:1f.3")
      }</devices></domain></domstatus>`,
    );
  }
  const xml = `<domain type='kvm'><name>win11</name><metadata>
  <pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">
    <pt:device address="0000:03:00.0" vendor="1002" device="73df" subsystem-vendor="1002"
      subsystem-device="0e36" class="030000" rule="gpu"/>
  </pt:hostdevs></metadata><devices>${hostdevXml("0000:03:00.0")}</devices></domain>`;
  const checked = guardCheck({
    vm: "win11",
    xml,
    reader: denoFsReader(),
    root: tree.dir,
    live: false,
    qemuStatusDir: `${tree.dir}/qemu`,
  });
  return startVerdict(checked, { vm: "win11", policy, plan: "passthrough plan --vm win11 -c URI" });
}

Deno.test("startVerdict() refuses a backup whose IOMMU group holds a function a running VM was given, which rollback's own group check does not see", async () => {
  // The audio is no class the host needs (groupMatesHostNeeds passes it), and the backup adds no
  // device to the current definition (so the held-elsewhere check asks nothing of its group).
  const { refusals, warnings } = await groupVerdict({
    driver: "vfio-pci",
    held: true,
    policy: ENFORCE,
  });
  assertEquals(warnings, []);
  assertEquals(refusals.length, 1);
  const refusal = refusals[0] as StartRefusal;
  assertEquals(refusal.groupMember, "0000:00:1f.3");
  assertMatch(
    refusal.reason,
    /^hostdev 0000:03:00\.0's IOMMU group 21 also holds 0000:00:1f\.3, .*; it is in use \(vm-passed: hostdev of running VM "nas"\): VFIO hands a group to one guest at a time/,
  );
  // Once "nas" is shut down, nothing is left to refuse: an unbound function the host does not need.
  assertEquals(await groupVerdict({ driver: "vfio-pci", held: false, policy: ENFORCE }), {
    refusals: [],
    warnings: [],
  });
});

Deno.test("startVerdict() warns that libvirt fails a restored VM whose IOMMU group holds a function on a host driver, whatever the guard's policy", async () => {
  const lines = [];
  for (const guard of ["enforce", "warn", "off"] as const) {
    const { refusals, warnings } = await groupVerdict({
      driver: "snd_hda_intel",
      held: false,
      policy: { guard, rules: {} },
    });
    assertEquals(refusals, []);
    assertEquals(warnings.length, 1);
    assertMatch(
      warnings[0]!,
      /: hostdev 0000:03:00\.0's IOMMU group 21 also holds 0000:00:1f\.3, .*driver snd_hda_intel\), which "win11" does not pass: .*; fix: passthrough plan --vm win11 -c URI \(it judges the group as it is now\)/,
    );
    lines.push(warnings[0]!.slice(0, warnings[0]!.indexOf(": hostdev")));
  }
  assertEquals(lines, [
    'the start guard would refuse to start "win11" as restored',
    '"win11" would not start as restored (the start guard, by its policy, would warn and go on, and libvirt fails it: group 21 is not viable)',
    '"win11" would not start as restored (the start guard, by its policy, would pass it, and libvirt fails it: group 21 is not viable)',
  ]);
});

Deno.test("rollbackVm() says once why a storage function of its group that a running VM has keeps it from restoring", async () => {
  // The chipset NVMe 0000:06:00.0 moved into the GPU's group 21 on vfio-pci, given to "nas".
  const host = loadFixtureHost("z690-asus-adl");
  host.host_use = [];
  for (const d of host.devices) {
    if (d.bdf === "0000:06:00.0") Object.assign(d, { group: 21, driver: "vfio-pci" });
  }
  await using tree = await tempHostTree(host);
  Deno.mkdirSync(`${tree.dir}/qemu`);
  Deno.writeTextFileSync(
    `${tree.dir}/qemu/nas.xml`,
    `<domstatus state='running' pid='4242'><domain type='kvm' id='3'><name>nas</name><devices>${
      hostdevXml("0000:06:00.0")
    }</devices></domain></domstatus>`,
  );
  using f = fixture();
  f.port.define(
    f.port.getPersistentXml("alpha", { secure: true }).replace(
      "</devices>",
      `${hostdevXml("0000:03:00.0")}\n</devices>`,
    ),
  );
  const xml = f.port.getPersistentXml("alpha", { secure: true });
  writeBackup(f.stateDir, {
    vm: "alpha",
    uuid: UUID_A,
    reason: "apply",
    uri: f.port.uri,
    xml: xml.replace("1048576</memory>", "2097152</memory>"),
  });
  const report = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: yes,
    host: hostReader(tree.dir),
    startRefusals: (xml) =>
      startVerdict(
        guardCheck({
          vm: "alpha",
          xml,
          reader: denoFsReader(),
          root: tree.dir,
          live: false,
          qemuStatusDir: `${tree.dir}/qemu`,
        }),
        { vm: "alpha", policy: ENFORCE, plan: "passthrough plan --vm alpha" },
      ).refusals,
  });
  assertEquals(report.code, "start-refused");
  // Before: a second sentence on the same member, "the host needs (storage controller in
  // another slot)", which the host does not use: "nas" has it.
  assertMatch(
    report.message,
    /^Refusing to restore backup "[^"]+" into "alpha": hostdev 0000:03:00\.0's IOMMU group 21 also holds 0000:06:00\.0, [^;]+; it is in use \(vm-passed: hostdev of running VM "nas"\): VFIO hands a group to one guest at a time, so libvirt refuses this start while that guest runs; "passthrough plan --vm alpha" shows /,
  );
});

Deno.test("rollbackVm() restores a backup whose group member the host needs when the guard starts it by its rule's allow_host_critical", async () => {
  // The chipset NVMe 0000:06:00.0 moved into the GPU's group 21 on vfio-pci: a storage function
  // of another slot, which the host needs unless rule "gpu" says allow_host_critical: true.
  const host = loadFixtureHost("z690-asus-adl");
  host.host_use = [];
  for (const d of host.devices) {
    if (d.bdf === "0000:06:00.0") Object.assign(d, { group: 21, driver: "vfio-pci" });
  }
  await using tree = await tempHostTree(host);
  const record = `<metadata><pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1"><pt:device ` +
    `address="0000:03:00.0" vendor="1002" device="73df" subsystem-vendor="1002" ` +
    `subsystem-device="0e36" class="030000" rule="gpu"/></pt:hostdevs></metadata>`;
  using f = fixture();
  f.port.define(
    f.port.getPersistentXml("alpha", { secure: true })
      .replace("</devices>", `${hostdevXml("0000:03:00.0")}\n</devices>`)
      .replace("</domain>", `${record}\n</domain>`),
  );
  const xml = f.port.getPersistentXml("alpha", { secure: true });
  writeBackup(f.stateDir, {
    vm: "alpha",
    uuid: UUID_A,
    reason: "apply",
    uri: f.port.uri,
    xml: xml.replace("1048576</memory>", "2097152</memory>"),
  });
  // As apply leaves it: the record it wrote, under a rule that allows what the host needs.
  const devices = Object.fromEntries(parseDomainXml(xml).records.map((r) => [r.address, r]));
  const rollback = (policy: VmGuardPolicy) =>
    rollbackVm("alpha", {
      libvirt: f.port,
      stateDir: f.stateDir,
      confirm: yes,
      host: hostReader(tree.dir),
      startRefusals: (xml) =>
        startVerdict(
          guardCheck({ vm: "alpha", xml, reader: denoFsReader(), root: tree.dir, live: false }),
          { vm: "alpha", policy, plan: "passthrough plan --vm alpha" },
        ).refusals,
    });
  const strict = await rollback({ ...ENFORCE, devices });
  assertEquals(strict.code, "start-refused");
  assertMatch(strict.message, /also holds "?0000:06:00\.0"?, .*the host needs/);
  const allowed = { ...ENFORCE, allowHostCritical: ["gpu"], devices };
  // The guard starts it: nothing of the group is refused.
  const guard = policed(
    guardCheck({ vm: "alpha", xml, reader: denoFsReader(), root: tree.dir, live: false }),
    allowed,
  );
  assertEquals(guard, []);
  assertEquals((await rollback(allowed)).code, "restored");
});

Deno.test("rollbackVm() restores a backup whose hostdev's group holds an unbound non-PCI device, as the start guard starts it", async () => {
  await using tree = await tempHostTree(loadFixtureHost("z690-asus-adl"));
  // An ACPI device the firmware's IVRS puts in the GPU's group 21, bound to no driver.
  addNonPciGroupMember(tree.dir, 21, "AMDI0020:00", "platform", null);
  using f = fixture();
  f.port.define(
    f.port.getPersistentXml("alpha", { secure: true }).replace(
      "</devices>",
      `${hostdevXml("0000:03:00.0")}\n</devices>`,
    ),
  );
  const xml = f.port.getPersistentXml("alpha", { secure: true });
  writeBackup(f.stateDir, {
    vm: "alpha",
    uuid: UUID_A,
    reason: "apply",
    uri: f.port.uri,
    xml: xml.replace("1048576</memory>", "2097152</memory>"),
  });
  const check = (xml: string) =>
    startVerdict(
      guardCheck({ vm: "alpha", xml, reader: denoFsReader(), root: tree.dir, live: false }),
      { vm: "alpha", policy: ENFORCE, plan: "passthrough plan --vm alpha" },
    );
  const report = await rollbackVm("alpha", {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: yes,
    host: hostReader(tree.dir),
    startRefusals: (xml) => check(xml).refusals,
    startWarnings: (xml) => check(xml).warnings,
  });
  // Before: refused, "lists "AMDI0020:00", which cannot be read in bus/pci/devices now".
  assertEquals([report.code, report.warnings], ["restored", []], report.message);
});
