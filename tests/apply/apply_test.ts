import {
  assertEquals,
  assertMatch,
  assertOk,
  assertRejects,
  assertThrows,
} from "../helpers/assert.ts";
import { type OpenLibvirtPort, openLibvirtPort } from "../../ffi/port.ts";
import { Connection } from "../../ffi/connection.ts";
import { applyPlan, type ConfirmAnswer, describeXmlChange } from "../../lib/apply/apply.ts";
import { listBackups, readBackupXml, writeBackup } from "../../lib/state/backups.ts";
import { editDomainXml, parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { acquireConnectionLock, connectionLockPath, LockHeldError } from "../../lib/state/lock.ts";
import { StateDirError } from "../../lib/state/state_dir.ts";
import type { Plan, VmPlan } from "../../lib/plan/types.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import { confirmVm, confirmYesNo, makeConfirm } from "../../cli/confirm.ts";
import { renderApplyReport } from "../../cli/render_apply.ts";
import type { CliIo } from "../../cli/context.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { rollbackVm } from "../../lib/apply/rollback.ts";
import { loadConfig } from "../../lib/config/config.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { emptyVmPlan } from "../../lib/plan/vm_edit.ts";
import { loadHost } from "../../cli/host_options.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { checkDomainStart } from "../../lib/guard/check.ts";
import { readRefusalRecords, recordRefusals } from "../../lib/guard/state.ts";
import { libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";
import { canUnshareMounts, hasScript, runCli, runCliOnPty } from "../helpers/cli.ts";
import { plantDeadLock } from "../helpers/locks.ts";
import { gpuIdentity as identity } from "../helpers/devices.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import {
  baseDevices,
  config,
  dev,
  GPU,
  GPU_AUDIO,
  GPU_CONFIG,
  HOST,
  host,
  LINUX,
  vmOf,
  WIN10,
  withFault,
  withPort,
} from "../helpers/plan_world.ts";
import { demoTree, planGpu, qemuDomainXml } from "../helpers/reliability.ts";

const UUIDS: Record<string, string> = {
  alpha: "11111111-1111-4111-8111-111111111111",
  beta: "22222222-2222-4222-8222-222222222222",
  gamma: "33333333-3333-4333-8333-333333333333",
  web: "44444444-4444-4444-8444-444444444444",
  vault: "55555555-5555-4555-8555-555555555555",
};

function domain(name: string, options: { running?: boolean; secret?: boolean } = {}): string {
  const runstate = options.running === true ? "" : "\n    <test:runstate>5</test:runstate>";
  const graphics = options.secret === true
    ? "\n      <graphics type='vnc' port='-1' autoport='yes' passwd='s3cret'/>"
    : "";
  return `<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>${name}</name>
    <uuid>${UUIDS[name]}</uuid>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <source file='/var/lib/libvirt/images/${name}.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>${graphics}
    </devices>${runstate}
  </domain>`;
}

const WORLD = `<?xml version="1.0"?>
<node>
  ${domain("alpha")}
  ${domain("beta")}
  ${domain("gamma")}
  ${domain("web", { running: true })}
  ${domain("vault", { secret: true })}
</node>
`;

/** A test-driver world and a state directory, removed on dispose. */
interface Fixture extends Disposable {
  port: OpenLibvirtPort;
  stateDir: string;
  root: string;
}

function fixture(): Fixture {
  const root = Deno.makeTempDirSync({ prefix: "passthrough-apply-test-" });
  Deno.writeTextFileSync(`${root}/world.xml`, WORLD);
  const port = openLibvirtPort(`test://${root}/world.xml`);
  return {
    port,
    root,
    stateDir: `${root}/state`,
    [Symbol.dispose]() {
      port.close();
      Deno.removeSync(root, { recursive: true });
    },
  };
}

/** A hand-built plan for one VM: the real current XML, edited the way the planner would. */
function planVm(
  port: LibvirtPort,
  name: string,
  add: string[],
  options: { secure?: boolean; desiredXml?: string } = {},
): VmPlan {
  const currentXml = port.getPersistentXml(name, { secure: options.secure ?? true });
  const desiredXml = options.desiredXml ?? editDomainXml(currentXml, {
    remove: [],
    add: add.map((address) => ({ address, managed: true })),
    records: add.map((a) => identity(a)),
  });
  return {
    ...emptyVmPlan(name, currentXml),
    hostdevs: add,
    add: add.map((address) => ({
      address,
      rule: "gpu",
      reason: "matched" as const,
      group: 1,
      spec: { address, managed: true },
      identity: identity(address),
      description: "10de:2684 VGA compatible controller",
    })),
    active: port.isActive(name),
    desiredXml,
    changed: desiredXml !== currentXml,
  };
}

function planOf(port: LibvirtPort, vms: VmPlan[]): Plan {
  return { config: "test.yaml", host: "test", uri: port.uri, vms, errors: [], warnings: [] };
}

function answers(...list: ConfirmAnswer[]) {
  const asked: string[] = [];
  const confirm = (vm: VmPlan) => {
    asked.push(vm.name);
    return Promise.resolve(list.shift() ?? "no");
  };
  return { asked, confirm };
}

const yes = () => Promise.resolve<ConfirmAnswer>("yes");

function hostdevs(port: LibvirtPort, name: string): string[] {
  return parseDomainXml(port.getPersistentXml(name)).hostdevs.map((h) => h.address);
}

Deno.test("applyPlan() backs up the previous definition (with secrets, mode 0600) before defining", async () => {
  using f = fixture();
  const before = f.port.getPersistentXml("vault", { secure: true });
  assertOk(before.includes("s3cret"));
  const plan = planOf(f.port, [planVm(f.port, "vault", ["0000:01:00.0"])]);
  const report = await applyPlan(plan, { libvirt: f.port, stateDir: f.stateDir, confirm: yes });
  assertEquals(report.changed, ["vault"]);
  assertEquals(report.ok, true);
  const result = report.vms[0]!;
  assertEquals([result.status, result.code, result.effect], ["changed", "applied", "next-start"]);
  assertEquals(result.added, ["0000:01:00.0"]);
  assertEquals(hostdevs(f.port, "vault"), ["0000:01:00.0"]);
  // The secret survived the define.
  assertOk(f.port.getPersistentXml("vault", { secure: true }).includes("passwd='s3cret'"));
  const backups = listBackups(f.stateDir, "vault");
  assertEquals(backups.length, 1);
  assertEquals(backups[0]?.path, result.backup);
  assertEquals([backups[0]?.reason, backups[0]?.uuid], ["apply", UUIDS.vault]);
  assertEquals(readBackupXml(backups[0]!), before);
  assertEquals((Deno.statSync(backups[0]!.path).mode ?? 0) & 0o777, 0o600);
  assertEquals((Deno.statSync(f.stateDir).mode ?? 0) & 0o777, 0o700);
});

Deno.test("applyPlan() over a read-only connection fails once, before any question, backup or define", async () => {
  using f = fixture();
  const plan = planOf(f.port, [
    planVm(f.port, "alpha", ["0000:01:00.0"]),
    planVm(f.port, "beta", ["0000:02:00.0"]),
  ]);
  // libvirt-sock-ro opens every connection so, whatever the client asks.
  using readOnly = openLibvirtPort(f.port.uri, { readOnly: true });
  const { asked, confirm } = answers("yes", "yes");
  let message = "";
  try {
    await applyPlan(plan, { libvirt: readOnly, stateDir: f.stateDir, confirm });
  } catch (error) {
    message = (error as Error).message;
  }
  // Each VM failed with "Cannot read the definition of ...: operation forbidden: ...".
  assertEquals(
    message,
    `libvirt at "${f.port.uri}" answers this connection read-only: apply reads each definition with its secrets and defines it, so nothing was applied (Cannot read the XML of domain "alpha": operation forbidden: virDomainGetXMLDesc with secure flag); connect through its read-write socket (libvirt-sock, not libvirt-sock-ro), as root or a user libvirt lets manage it`,
  );
  assertEquals(asked, []);
  assertEquals([hostdevs(f.port, "alpha"), hostdevs(f.port, "beta")], [[], []]);
  assertEquals(listBackups(f.stateDir, "alpha"), []);
});

Deno.test("applyPlan() keeps the VM unchanged and the backup when libvirt rejects the XML", async () => {
  using f = fixture();
  const before = f.port.getPersistentXml("alpha", { secure: true });
  const invalid = before.replace("</devices>", "  <bogus-device/>\n  </devices>");
  const vm = planVm(f.port, "alpha", [], { desiredXml: invalid });
  const report = await applyPlan(planOf(f.port, [vm]), {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals(report.failed, ["alpha"]);
  assertEquals(report.ok, false);
  assertEquals(report.vms[0]?.code, "define-failed");
  assertMatch(report.vms[0]!.message, /libvirt rejected the new definition of "alpha"/);
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), before);
  assertEquals(listBackups(f.stateDir, "alpha").map((b) => b.path), [report.vms[0]!.backup]);
});

Deno.test("applyPlan() reports a define that failed but changed the definition as unknown, not rejected", async () => {
  using f = fixture();
  // libvirt committed the define, and the error came after (its reply lost): "rejected, which is
  // unchanged" would be false, and the user would not look.
  const lost = withFault(f.port, () => {}, () => {
    throw new Error("the reply was lost");
  });
  const report = await applyPlan(planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]), {
    libvirt: lost,
    stateDir: f.stateDir,
    confirm: yes,
  });
  const [alpha] = report.vms;
  assertEquals([alpha?.status, alpha?.code], ["failed", "define-unknown"]);
  assertMatch(
    alpha!.message,
    /^The define of "alpha" may or may not have taken effect: the reply was lost; its definition reads back changed: /,
  );
  assertEquals(hostdevs(f.port, "alpha"), ["0000:01:00.0"]);
});

Deno.test("applyPlan() prunes no backup of a VM whose define failed: the older ones are what puts it right", async () => {
  using f = fixture();
  const older = writeBackup(f.stateDir, {
    vm: "alpha",
    uuid: UUIDS.alpha!,
    xml: f.port.getPersistentXml("alpha", { secure: true }),
    reason: "apply",
    uri: f.port.uri,
    now: new Date(Date.UTC(2026, 0, 1)),
  });
  const before = f.port.getPersistentXml("alpha", { secure: true });
  const invalid = before.replace("</devices>", "  <bogus-device/>\n  </devices>");
  const report = await applyPlan(
    planOf(f.port, [planVm(f.port, "alpha", [], { desiredXml: invalid })]),
    { libvirt: f.port, stateDir: f.stateDir, confirm: yes, keepBackups: 1 },
  );
  const [alpha] = report.vms;
  assertEquals([alpha?.status, alpha?.code, alpha?.pruned], ["failed", "define-failed", []]);
  assertEquals(listBackups(f.stateDir, "alpha").map((b) => b.path), [alpha!.backup, older.path]);
});

Deno.test("applyPlan() keeps a changed VM's newest 10 backups when told no number", async () => {
  using f = fixture();
  const older = Array.from({ length: 10 }, (_, i) =>
    writeBackup(f.stateDir, {
      vm: "alpha",
      uuid: UUIDS.alpha!,
      xml: "<domain/>",
      reason: "apply",
      uri: f.port.uri,
      now: new Date(Date.UTC(2026, 0, 1, 0, 0, i)),
    }));
  const report = await applyPlan(planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]), {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals([report.keepBackups, report.vms[0]?.pruned], [10, [older[0]!.path]]);
  assertEquals(listBackups(f.stateDir, "alpha").length, 10);
});

Deno.test("applyPlan() keeps a changed VM's newest backups of its domain and removes the older ones", async () => {
  using f = fixture();
  const old = (uuid: string, second: number) =>
    writeBackup(f.stateDir, {
      vm: "alpha",
      uuid,
      xml: `<domain><name>alpha</name><uuid>${uuid}</uuid></domain>`,
      reason: "apply",
      uri: f.port.uri,
      now: new Date(Date.UTC(2026, 0, 1, 0, 0, second)),
    });
  const ours = [0, 1].map((i) => old(UUIDS.alpha!, i));
  // A domain once named alpha, undefined since: its backup may be the only way back. Kept, it
  // lies among those removed, which the report line must not imply went too.
  const gone = old("99999999-9999-4999-8999-999999999999", 2);
  ours.push(...[3, 4, 5].map((i) => old(UUIDS.alpha!, i)));
  const damaged = `${f.stateDir}/backups/alpha/20260101T000020.000Z-11111111.json`;
  Deno.writeTextFileSync(damaged, "{", { mode: 0o600 });
  // beta is declined: its backups stay whatever their number.
  const betas = Array.from({ length: 3 }, (_, i) =>
    writeBackup(f.stateDir, {
      vm: "beta",
      uuid: UUIDS.beta!,
      xml: "<domain/>",
      reason: "apply",
      uri: f.port.uri,
      now: new Date(Date.UTC(2026, 0, 1, 0, 0, i)),
    }));
  const plan = planOf(f.port, [
    planVm(f.port, "alpha", ["0000:01:00.0"]),
    planVm(f.port, "beta", ["0000:02:00.0"]),
  ]);
  const report = await applyPlan(plan, {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: answers("yes", "no").confirm,
    keepBackups: 2,
  });
  const [alpha, beta] = report.vms;
  assertEquals(alpha?.code, "applied");
  // The new backup and the newest before it stay; rollback's newest is the one just taken.
  assertEquals(alpha?.pruned, [3, 2, 1, 0].map((i) => ours[i]!.path));
  assertEquals(alpha?.pruneError, null);
  assertEquals(listBackups(f.stateDir, "alpha").map((b) => b.path), [
    alpha!.backup,
    ours[4]!.path,
    gone.path,
  ]);
  assertEquals(Deno.readTextFileSync(damaged), "{");
  assertEquals(beta?.pruned, []);
  assertEquals(listBackups(f.stateDir, "beta").length, betas.length);
  assertMatch(
    renderApplyReport(report, { color: false, plan }),
    new RegExp(
      `backup: ${alpha!.backup}\n  removed 4 older backups of "alpha", keeping its newest 2: ` +
        `4 of the backups from ${ours[0]!.id} to ${ours[3]!.id}\n`,
    ),
  );
  // 0 keeps them all.
  const again = await applyPlan(
    planOf(f.port, [planVm(f.port, "alpha", ["0000:02:00.0"])]),
    { libvirt: f.port, stateDir: f.stateDir, confirm: yes, keepBackups: 0 },
  );
  assertEquals(again.vms[0]?.pruned, []);
  assertEquals(listBackups(f.stateDir, "alpha").length, 4);
});

Deno.test("applyPlan() reads each backup of a changed VM once to check and prune them", async () => {
  using f = fixture();
  for (let second = 0; second < 3; second++) {
    writeBackup(f.stateDir, {
      vm: "alpha",
      uuid: UUIDS.alpha!,
      xml: `<domain><name>alpha</name><uuid>${UUIDS.alpha}</uuid></domain>`,
      reason: "apply",
      uri: f.port.uri,
      now: new Date(Date.UTC(2026, 0, 1, 0, 0, second)),
    });
  }
  // Each read hashes the whole XML (up to 16 MiB): a second listing doubled apply's reading.
  const reads = new Map<string, number>();
  const open = Deno.openSync;
  Deno.openSync = (path, options) => {
    const name = String(path);
    if (options?.write !== true && /\/backups\/alpha\/[^/.][^/]*\.xml$/.test(name)) {
      reads.set(name, (reads.get(name) ?? 0) + 1);
    }
    return open(path, options);
  };
  let report;
  try {
    report = await applyPlan(planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]), {
      libvirt: f.port,
      stateDir: f.stateDir,
      confirm: yes,
      keepBackups: 2,
    });
  } finally {
    Deno.openSync = open;
  }
  assertEquals(report.vms[0]?.pruned.length, 2);
  assertEquals([...reads.values()], [1, 1, 1, 1]);
});

Deno.test("applyPlan() keeps the backups another connection took of a domain with the same name and uuid", async () => {
  using f = fixture();
  // The same domain migrated to another host, or defined there from one XML: its backups are the
  // way back there, and an apply of that connection, which this lock does not exclude, prunes
  // them itself.
  const backup = (uri: string, second: number) =>
    writeBackup(f.stateDir, {
      vm: "alpha",
      uuid: UUIDS.alpha!,
      xml: `<domain><name>alpha</name><uuid>${UUIDS.alpha}</uuid></domain>`,
      reason: "apply",
      uri,
      now: new Date(Date.UTC(2026, 0, 1, 0, 0, second)),
    });
  const elsewhere = backup("qemu+ssh://hv2/system", 1);
  const ours = backup(`${f.port.uri}/`, 0);
  const report = await applyPlan(planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]), {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: yes,
    keepBackups: 1,
  });
  const [alpha] = report.vms;
  assertEquals(alpha?.code, "applied");
  // The one of this connection goes, though spelled with a trailing slash.
  assertEquals([alpha?.pruned, alpha?.pruneError], [[ours.path], null]);
  assertEquals(listBackups(f.stateDir, "alpha").map((b) => b.path), [
    alpha!.backup,
    elsewhere.path,
  ]);
});

Deno.test("applyPlan() refuses a plan whose XML names another domain or another uuid", async () => {
  using f = fixture();
  const vm = planVm(f.port, "beta", ["0000:01:00.0"]);
  const cases: [string, Partial<VmPlan>, RegExp][] = [
    [
      "desired name",
      { desiredXml: vm.desiredXml.replace("<name>beta</name>", "<name>gamma</name>") },
      /^Cannot apply "beta": the planned XML names domain "gamma"$/,
    ],
    [
      "current name",
      { currentXml: vm.currentXml.replace("<name>beta</name>", "<name>gamma</name>") },
      /^Cannot apply "beta": the planned XML names domain "beta"$/,
    ],
    [
      "uuid",
      { desiredXml: vm.desiredXml.replace(UUIDS.beta!, UUIDS.gamma!) },
      /^Cannot apply "beta": the planned XML has uuid "3{8}-.*", the current one "2{8}-.*"$/,
    ],
    [
      "no uuid",
      { desiredXml: vm.desiredXml.replace(/<uuid>[^<]*<\/uuid>/, "") },
      /the planned XML has uuid "", the current one/,
    ],
  ];
  for (const [what, change, message] of cases) {
    const report = await applyPlan(planOf(f.port, [{ ...vm, ...change }]), {
      libvirt: f.port,
      stateDir: f.stateDir,
      confirm: yes,
    });
    assertEquals([report.failed, report.vms[0]?.code], [["beta"], "invalid-plan"], what);
    assertMatch(report.vms[0]!.message, message, what);
  }
  assertEquals([hostdevs(f.port, "beta"), hostdevs(f.port, "gamma")], [[], []]);
  assertEquals(listBackups(f.stateDir, "beta"), []);
});

Deno.test("applyPlan() never makes a transient domain persistent", async () => {
  // test:///default's "test" domain is running; undefined, it lives on as a transient domain.
  using port = openLibvirtPort("test:///default");
  const vm = planVm(port, "test", ["0000:01:00.0"]);
  const stateDir = Deno.makeTempDirSync({ prefix: "passthrough-apply-transient-" });
  try {
    {
      using other = Connection.open("test:///default");
      using domain = other.lookupDomainByName("test");
      domain.undefine();
    }
    const report = await applyPlan(planOf(port, [vm]), { libvirt: port, stateDir, confirm: yes });
    assertEquals([report.failed, report.vms[0]?.code], [["test"], "invalid-plan"]);
    assertMatch(
      report.vms[0]!.message,
      /it is a transient domain, and defining it would make it persistent/,
    );
    assertEquals(port.listDomains().map((d) => [d.name, d.persistent]), [["test", false]]);
  } finally {
    // The default driver is shared by the process: leave "test" as it was.
    port.define(vm.currentXml);
    Deno.removeSync(stateDir, { recursive: true });
  }
});

Deno.test("applyPlan() does not overwrite a VM whose definition changed after the plan", async () => {
  using f = fixture();
  const vm = planVm(f.port, "beta", ["0000:01:00.0"]);
  // Someone edits the VM between plan and apply.
  const edited = vm.currentXml.replace("1048576</memory>", "2097152</memory>");
  f.port.define(edited);
  const changedNow = f.port.getPersistentXml("beta", { secure: true });
  const report = await applyPlan(planOf(f.port, [vm]), {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals(report.failed, ["beta"]);
  assertEquals(report.vms[0]?.code, "drift");
  assertMatch(report.vms[0]!.message, /changed since the plan.*2097152/);
  assertEquals(f.port.getPersistentXml("beta", { secure: true }), changedNow);
  assertEquals(listBackups(f.stateDir, "beta"), []);
});

Deno.test("applyPlan() refuses a plan computed from the definition without its passwords", async () => {
  using f = fixture();
  // Defining XML read without VIR_DOMAIN_XML_SECURE would erase the password: such a plan is
  // not the definition libvirt holds, so it is refused as drift and nothing is defined.
  const vm = planVm(f.port, "vault", ["0000:01:00.0"], { secure: false });
  assertOk(!vm.currentXml.includes("s3cret"));
  const report = await applyPlan(planOf(f.port, [vm]), {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals([report.changed, report.failed, report.vms[0]?.code], [[], ["vault"], "drift"]);
  assertOk(!report.vms[0]!.message.includes("s3cret"), report.vms[0]!.message);
  assertEquals(hostdevs(f.port, "vault"), []);
  assertOk(f.port.getPersistentXml("vault", { secure: true }).includes("passwd='s3cret'"));
});

Deno.test("applyPlan() honours yes, no, all and quit answers", async () => {
  using f = fixture();
  const plan = () =>
    planOf(f.port, [
      planVm(f.port, "alpha", ["0000:01:00.0"]),
      planVm(f.port, "beta", ["0000:02:00.0"]),
      planVm(f.port, "gamma", ["0000:03:00.0"]),
    ]);
  // no, then all: beta and gamma change, gamma without being asked.
  const first = answers("no", "all");
  const report = await applyPlan(plan(), {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: first.confirm,
  });
  assertEquals(first.asked, ["alpha", "beta"]);
  assertEquals([report.skipped, report.changed], [["alpha"], ["beta", "gamma"]]);
  assertEquals(report.vms[0]?.code, "declined");
  assertEquals(hostdevs(f.port, "alpha"), []);
  assertEquals(hostdevs(f.port, "gamma"), ["0000:03:00.0"]);

  // yes, then quit: alpha changes; the rest are skipped without asking.
  const second = answers("yes", "quit");
  const plan2 = planOf(f.port, [
    planVm(f.port, "alpha", ["0000:01:00.0"]),
    planVm(f.port, "beta", ["0000:01:00.1"], {
      desiredXml: editDomainXml(f.port.getPersistentXml("beta", { secure: true }), {
        remove: [],
        add: [{ address: "0000:01:00.1", managed: true }],
        records: [identity("0000:02:00.0"), identity("0000:01:00.1")],
      }),
    }),
    planVm(f.port, "gamma", [], {
      desiredXml: f.port.getPersistentXml("gamma", { secure: true }).replace(
        "1048576</memory>",
        "2097152</memory>",
      ),
    }),
  ]);
  const report2 = await applyPlan(plan2, {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: second.confirm,
  });
  assertEquals(second.asked, ["alpha", "beta"]);
  assertEquals(report2.changed, ["alpha"]);
  assertEquals(report2.vms.map((r) => r.code), ["applied", "quit", "quit"]);
  assertEquals(hostdevs(f.port, "beta"), ["0000:02:00.0"]);
});

Deno.test("applyPlan() refuses a confirm answer it does not know instead of applying", async () => {
  using f = fixture();
  // What a script's confirm returns when it forgets to map a prompt's input, or to return at all:
  // each of these redefined the VM as if it had answered "yes".
  for (const answer of ["n", "No", undefined, false]) {
    const plan = planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]);
    await assertRejects(
      () =>
        applyPlan(plan, {
          libvirt: f.port,
          stateDir: f.stateDir,
          confirm: () => Promise.resolve(answer as unknown as ConfirmAnswer),
        }),
      TypeError,
      `Invalid answer of confirm for VM "alpha": ${
        typeof answer === "string" ? `"${answer}"` : String(answer)
      } (expected "yes", "no", "all" or "quit")`,
    );
    assertEquals(hostdevs(f.port, "alpha"), []);
  }
  // The lock was released: the next apply runs.
  const plan = planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]);
  const report = await applyPlan(plan, { libvirt: f.port, stateDir: f.stateDir, confirm: yes });
  assertEquals(report.changed, ["alpha"]);
});

Deno.test("applyPlan() skips unchanged VMs and VMs with refusals without asking", async () => {
  using f = fixture();
  const refused = planVm(f.port, "beta", ["0000:01:00.0"]);
  refused.errors.push({ code: "no-match", message: 'Rule "gpu" matches no device' });
  const plan = planOf(f.port, [planVm(f.port, "alpha", []), refused]);
  const asked = answers("yes", "yes");
  const report = await applyPlan(plan, {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: asked.confirm,
  });
  assertEquals(asked.asked, []);
  assertEquals([report.unchanged, report.skipped, report.changed], [["alpha"], ["beta"], []]);
  assertEquals(report.vms.map((r) => r.code), ["no-changes", "plan-errors"]);
  assertEquals(report.ok, true);
  assertEquals(hostdevs(f.port, "beta"), []);
});

Deno.test("applyPlan() applies nothing when the plan has a host-wide refusal", async () => {
  using f = fixture();
  const plan = planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]);
  plan.errors.push({ code: "no-iommu", message: "The host has no IOMMU groups" });
  const asked = answers("yes");
  const report = await applyPlan(plan, {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: asked.confirm,
  });
  assertEquals([asked.asked, report.skipped, report.vms[0]?.code], [[], ["alpha"], "plan-errors"]);
  assertEquals(hostdevs(f.port, "alpha"), []);
});

Deno.test("applyPlan() converges: a plan recomputed after apply has nothing to change", async () => {
  using f = fixture();
  const report = await applyPlan(planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]), {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals(report.changed, ["alpha"]);
  // What the planner would compute now: the current XML already holds the hostdev.
  const now = f.port.getPersistentXml("alpha", { secure: true });
  const again = planVm(f.port, "alpha", [], { desiredXml: now });
  assertEquals(again.changed, false);
  const second = await applyPlan(planOf(f.port, [again]), {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals([second.changed, second.unchanged], [[], ["alpha"]]);
  assertEquals(listBackups(f.stateDir, "alpha").length, 1);
});

Deno.test("applyPlan() says a running VM changes at its next power-off, and reports a failed hot-plug", async () => {
  using f = fixture();
  const report = await applyPlan(planOf(f.port, [planVm(f.port, "web", ["0000:01:00.0"])]), {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals(report.vms[0]?.active, true);
  assertEquals(report.vms[0]?.effect, "next-power-off");
  assertMatch(report.vms[0]!.message, /next full power-off/);
  assertEquals(report.vms[0]?.live, null);

  // The test driver cannot hot-plug: the definition changes, the live part is reported failed.
  const live = await applyPlan(
    planOf(f.port, [planVm(f.port, "web", ["0000:01:00.0", "0000:01:00.1"], {
      desiredXml: editDomainXml(f.port.getPersistentXml("web", { secure: true }), {
        remove: [],
        add: [{ address: "0000:01:00.1", managed: true }],
        records: [identity("0000:01:00.0"), identity("0000:01:00.1")],
      }),
    })]),
    { libvirt: f.port, stateDir: f.stateDir, confirm: yes, live: true },
  );
  assertEquals(live.changed, ["web"]);
  assertEquals(live.liveFailed, ["web"]);
  assertEquals(live.ok, false);
  assertEquals(live.vms[0]?.live?.attached, []);
  assertEquals(live.vms[0]?.live?.errors.length, 1);
  assertEquals(live.vms[0]?.effect, "next-power-off");
  assertEquals(hostdevs(f.port, "web"), ["0000:01:00.0", "0000:01:00.1"]);

  // --live with only a record to change: nothing to hot-plug, so nothing is tried.
  const recordOnly = await applyPlan(
    planOf(f.port, [planVm(f.port, "web", [], {
      desiredXml: editDomainXml(f.port.getPersistentXml("web", { secure: true }), {
        remove: [],
        add: [],
        records: [identity("0000:01:00.0", { driver: "vfio-pci" }), identity("0000:01:00.1")],
      }),
    })]),
    { libvirt: f.port, stateDir: f.stateDir, confirm: yes, live: true },
  );
  assertEquals([recordOnly.changed, recordOnly.liveFailed, recordOnly.ok], [["web"], [], true]);
  assertEquals([recordOnly.vms[0]?.live, recordOnly.vms[0]?.effect], [null, "next-power-off"]);
  assertMatch(recordOnly.vms[0]!.message, /next full power-off/);
});

Deno.test("applyPlan() does not take a guest started before the define for the new definition when only guest addresses tell them apart", async () => {
  // "web" runs (a real test-driver guest) with a card kept in one guest slot (multifunction);
  // the rule's multifunction turned off, so the planner writes the card again without its guest
  // address for libvirt to place. apply read it shut off: it was started by another client
  // after that read, before the define, so it runs the old layout.
  const slot = { domain: 0, bus: 0, slot: 5, function: 0, multifunction: true };
  const card = { address: "0000:01:00.0", managed: true, guestAddress: slot };
  const root = Deno.makeTempDirSync({ prefix: "passthrough-apply-test-" });
  Deno.writeTextFileSync(
    `${root}/world.xml`,
    `<?xml version="1.0"?>\n<node>\n${
      editDomainXml(domain("web", { running: true }), {
        remove: [],
        add: [card],
        records: [identity(card.address)],
      })
    }\n</node>\n`,
  );
  using port = openLibvirtPort(`test://${root}/world.xml`);
  try {
    const currentXml = port.getPersistentXml("web", { secure: true });
    const desiredXml = editDomainXml(currentXml, {
      remove: [],
      add: [],
      records: [identity(card.address)],
      rewrite: [{ address: card.address, managed: true }],
    });
    assertOk(!/<address type='pci'/.test(parseDomainXml(desiredXml).hostdevs[0]!.xml));
    let defined = false;
    const racing: LibvirtPort = {
      get uri() {
        return port.uri;
      },
      listDomains: () => port.listDomains(),
      getPersistentXml: (name, options) => port.getPersistentXml(name, options),
      getLiveXml: (name) => port.getLiveXml!(name),
      isActive: (name) => defined && port.isActive(name),
      define: (xml) => {
        port.define(xml);
        defined = true;
      },
      attachDevice: (name, xml, change) => port.attachDevice(name, xml, change),
      detachDevice: (name, xml, change) => port.detachDevice(name, xml, change),
    };
    const vm = { ...planVm(port, "web", [], { desiredXml }), active: false };
    const report = await applyPlan(planOf(port, [vm]), {
      libvirt: racing,
      stateDir: `${root}/state`,
      confirm: yes,
    });
    // The running guest keeps the slot the old definition gave the card.
    assertMatch(parseDomainXml(port.getLiveXml!("web")).hostdevs[0]!.xml, /slot='0x05'/);
    const result = report.vms[0]!;
    assertEquals([result.status, result.effect, result.active], [
      "changed",
      "next-power-off",
      true,
    ]);
    assertMatch(
      result.message,
      /; it was started while this apply ran, before or after the define cannot be told \(.*both.*\): the change takes effect at its next full power-off at the latest$/,
    );
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("applyPlan() --live does not call a guest stopped since the define as planned", async () => {
  using f = fixture();
  // Real libvirt underneath; "alpha" (shut off) read as running until apply's look right after
  // its define: as a guest shut down after that look, before the hot-plug (while later VMs were
  // asked about).
  let defined = false;
  let looks = 0;
  const stopping: LibvirtPort = {
    get uri() {
      return f.port.uri;
    },
    listDomains: () => f.port.listDomains(),
    getPersistentXml: (name, options) => f.port.getPersistentXml(name, options),
    getLiveXml: (name) => f.port.getLiveXml!(name),
    isActive: (name) => !defined || looks++ === 0 || f.port.isActive(name),
    define: (xml) => {
      f.port.define(xml);
      defined = true;
    },
    attachDevice: (name, xml, change) => f.port.attachDevice(name, xml, change),
    detachDevice: (name, xml, change) => f.port.detachDevice(name, xml, change),
  };
  const report = await applyPlan(planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]), {
    libvirt: stopping,
    stateDir: f.stateDir,
    confirm: yes,
    live: true,
  });
  assertEquals(hostdevs(f.port, "alpha"), ["0000:01:00.0"]);
  // libvirt's "live" XML of a stopped domain is its new definition: not a guest holding the card.
  assertEquals(report.vms[0]?.live?.attached, []);
  assertEquals(report.vms[0]?.live?.errors.length, 1);
  assertEquals([report.ok, report.liveFailed], [false, ["alpha"]]);
  assertOk(!/already holds/.test(report.vms[0]!.message), report.vms[0]!.message);
});

Deno.test("applyPlan() restores the backup when the defined XML lacks the planned hostdevs", async () => {
  using f = fixture();
  const before = f.port.getPersistentXml("alpha", { secure: true });
  // Real libvirt underneath; the fault: the first define silently loses the new hostdev.
  let faults = 1;
  const faulty: LibvirtPort = {
    get uri() {
      return f.port.uri;
    },
    listDomains: () => f.port.listDomains(),
    getPersistentXml: (name, options) => f.port.getPersistentXml(name, options),
    isActive: (name) => f.port.isActive(name),
    define: (xml) => {
      if (faults-- > 0) {
        f.port.define(editDomainXml(xml, { remove: ["0000:01:00.0"], add: [], records: [] }));
      } else {
        f.port.define(xml);
      }
    },
    attachDevice: (name, xml, options) => f.port.attachDevice(name, xml, options),
    detachDevice: (name, xml, options) => f.port.detachDevice(name, xml, options),
  };
  const report = await applyPlan(planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]), {
    libvirt: faulty,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals(report.failed, ["alpha"]);
  assertEquals([report.vms[0]?.code, report.vms[0]?.restored], ["verify-failed", true]);
  assertMatch(report.vms[0]!.message, /missing \[0000:01:00\.0 managed owned\]/);
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), before);
});

Deno.test("applyPlan() defines nothing when the state directory is unusable", async () => {
  using f = fixture();
  const before = f.port.getPersistentXml("alpha", { secure: true });
  const plan = planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]);
  const asked = answers("yes");
  // A file where the state directory should be.
  Deno.writeTextFileSync(`${f.root}/file`, "");
  await assertRejects(
    () =>
      applyPlan(plan, {
        libvirt: f.port,
        stateDir: `${f.root}/file/state`,
        confirm: asked.confirm,
      }),
    (e: unknown) => e instanceof StateDirError && e.problem === "unwritable",
  );
  // A planted symlink as the state directory.
  Deno.mkdirSync(`${f.root}/real`, { mode: 0o700 });
  Deno.symlinkSync(`${f.root}/real`, `${f.root}/link`);
  await assertRejects(
    () => applyPlan(plan, { libvirt: f.port, stateDir: `${f.root}/link`, confirm: asked.confirm }),
    (e: unknown) => e instanceof StateDirError && e.problem === "symlink",
  );
  assertEquals(asked.asked, []);
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), before);
});

Deno.test("applyPlan() does not define a VM whose backup cannot be written", async () => {
  using f = fixture();
  const before = f.port.getPersistentXml("alpha", { secure: true });
  Deno.mkdirSync(`${f.stateDir}/backups`, { recursive: true, mode: 0o700 });
  Deno.chmodSync(f.stateDir, 0o700);
  // A file where alpha's backup directory should be; beta's is fine.
  Deno.writeTextFileSync(`${f.stateDir}/backups/alpha`, "");
  const plan = planOf(f.port, [
    planVm(f.port, "alpha", ["0000:01:00.0"]),
    planVm(f.port, "beta", ["0000:01:00.0"]),
  ]);
  const report = await applyPlan(plan, { libvirt: f.port, stateDir: f.stateDir, confirm: yes });
  assertEquals([report.failed, report.changed], [["alpha"], ["beta"]]);
  assertEquals(report.vms[0]?.code, "backup-failed");
  assertEquals(f.port.getPersistentXml("alpha", { secure: true }), before);
});

Deno.test("applyPlan() fails fast while another apply holds the lock", async () => {
  using f = fixture();
  const plan = planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]);
  Deno.mkdirSync(f.stateDir, { mode: 0o700 });
  using _held = acquireConnectionLock(f.port.uri, { stateDir: f.stateDir, command: "apply" });
  await assertRejects(
    () => applyPlan(plan, { libvirt: f.port, stateDir: f.stateDir, confirm: yes }),
    (e: unknown) => e instanceof LockHeldError && e.holder?.pid === Deno.pid,
  );
  assertEquals(hostdevs(f.port, "alpha"), []);
});

Deno.test("applyPlan() refuses a lock taken for another connection, before any backup or define", async () => {
  using f = fixture();
  const plan = planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]);
  Deno.mkdirSync(f.stateDir, { mode: 0o700 });
  // It would not keep out another apply of this connection, which takes this connection's lock.
  using lock = acquireConnectionLock("test:///elsewhere.xml", {
    stateDir: f.stateDir,
    command: "apply",
  });
  await assertRejects(
    () => applyPlan(plan, { libvirt: f.port, stateDir: f.stateDir, confirm: yes, lock }),
    TypeError,
    `is not the lock of "${f.port.uri}"`,
  );
  assertEquals(hostdevs(f.port, "alpha"), []);
  assertEquals(listBackups(f.stateDir, "alpha"), []);
});

/** An in-memory terminal that answers from `lines`. */
function scriptedIo(lines: string[], interactive = true): CliIo & { output: string[] } {
  const output: string[] = [];
  return {
    output,
    out: (text) => void output.push(text),
    err: (text) => void output.push(text),
    color: false,
    interactive,
    readLine: () => Promise.resolve(lines.shift() ?? null),
    env: () => undefined,
  };
}

Deno.test("confirmVm() reads y, n, a, q (and words), Enter is no, re-asks on anything else, quits at end of input", async () => {
  using f = fixture();
  const vm = planVm(f.port, "alpha", ["0000:01:00.0"]);
  const io = scriptedIo(["maybe", "Y", "", "  ", "no", "a", "QUIT", "yes", "all"]);
  const got = [];
  for (let i = 0; i < 8; i++) got.push(await confirmVm(io, vm));
  got.push(await confirmVm(io, vm));
  assertEquals(got, ["yes", "no", "no", "no", "all", "quit", "yes", "all", "quit"]);
  assertMatch(io.output.join(""), /Apply the changes to "alpha"\? \[y\/N\/a\/q\]/);
  assertEquals(io.output.filter((o) => /Please answer y, n, a or q/.test(o)).length, 1);
});

Deno.test("confirmVm() re-asks on a word every object has (constructor, __proto__)", async () => {
  using f = fixture();
  const vm = planVm(f.port, "alpha", ["0000:01:00.0"]);
  const io = scriptedIo(["constructor", "__proto__", "n"]);
  // It returned Object and Object.prototype: apply stopped at "Invalid answer of confirm".
  assertEquals(await confirmVm(io, vm), "no");
  assertEquals(io.output.filter((o) => /Please answer y, n, a or q/.test(o)).length, 2);
});

Deno.test("confirmYesNo() asks [y/N]: Enter and end of input are no, y is yes", async () => {
  const io = scriptedIo(["", "what", "y"]);
  assertEquals(await confirmYesNo(io, "Restore?"), false);
  assertEquals(await confirmYesNo(io, "Restore?"), true);
  assertEquals(await confirmYesNo(io, "Restore?"), false);
  assertMatch(io.output.join(""), /Restore\? \[y\/N\] /);
  assertMatch(io.output.join(""), /Please answer y or n/);
});

Deno.test("makeConfirm() prints what show() returns for a VM right before its question", async () => {
  using f = fixture();
  const vm = planVm(f.port, "alpha", ["0000:01:00.0"]);
  const io = scriptedIo(["y"]);
  const confirm = makeConfirm(io, { yes: false, show: (v) => `DIFF OF ${v.name}\n` });
  assertEquals(await confirm(vm), "yes");
  assertEquals(io.output.slice(0, 2), [
    "DIFF OF alpha\n",
    'Apply the changes to "alpha"? [y/N/a/q] ',
  ]);
});

Deno.test("makeConfirm() answers yes for every VM with --yes and never reads input", async () => {
  using f = fixture();
  const vm = planVm(f.port, "alpha", ["0000:01:00.0"]);
  const io = scriptedIo([], false);
  const confirm = makeConfirm(io, { yes: true });
  assertEquals(await confirm(vm), "all");
  assertEquals(io.output, []);
});

// ---------------------------------------------------------------------------------------------
// The CLI, spawned for real on the bundled demo (a real host's topology and a test-driver world).

const DEMO = new URL("../../demo/", import.meta.url).pathname;

/** A sysfs tree of the demo host and a temporary state directory. */
async function demoSetup(): Promise<{ root: string; args: string[] } & AsyncDisposable> {
  const root = await Deno.makeTempDir({ prefix: "passthrough-apply-cli-" });
  buildHostTree(loadHostDescription(`${DEMO}host.json`), `${root}/sysfs`);
  return {
    root,
    args: [
      "--config",
      `${DEMO}passthrough_config.yaml`,
      "--sysfs",
      `${root}/sysfs`,
      "--connect",
      `test://${DEMO}world.xml`,
      "--state-dir",
      `${root}/state`,
    ],
    [Symbol.asyncDispose]: () => Deno.remove(root, { recursive: true }),
  };
}

Deno.test("passthrough apply refuses to run without a terminal unless --yes (exit 1, one line)", async () => {
  await using demo = await demoSetup();
  const result = await runCli(["apply", ...demo.args], { flags: ["-A"], stdin: "y\ny\n" });
  assertEquals(result.code, 1);
  // A runtime error: one line with its fix, no usage dump.
  assertEquals(
    result.stderr,
    "passthrough apply: No terminal to confirm on: pass --yes to apply without asking\n",
  );
  assertEquals(listBackups(`${demo.root}/state`), []);
});

Deno.test("passthrough apply --keep-backups N keeps each changed VM's newest N backups and says what went", async () => {
  await using demo = await demoSetup();
  const state = `${demo.root}/state`;
  const apply = (...more: string[]) =>
    runCli(["apply", ...demo.args, "--yes", ...more], { flags: ["-A"] });
  // The test driver's world is each process's own: every run defines both VMs again.
  assertEquals((await apply()).code, 0);
  const first = listBackups(state, "win10");
  const second = await apply("--keep-backups", "1");
  assertEquals(second.code, 0, second.stderr);
  assertMatch(
    second.stdout,
    new RegExp(`removed 1 older backup of "win10", keeping its newest 1: ${first[0]!.id}\n`),
  );
  assertEquals(listBackups(state).map((b) => b.vm).sort(), ["gentoo", "win10"]);
  const json = await apply("--json", "--keep-backups", "1");
  const report = JSON.parse(json.stdout);
  assertEquals(report.keepBackups, 1);
  assertEquals(report.vms[0].pruned.length, 1);
  assertEquals(listBackups(state).length, 2);
  const bad = await apply("--keep-backups", "ten");
  assertEquals(bad.code, 2);
  assertMatch(
    bad.stderr,
    /--keep-backups takes a number of backups from 0 \(keep all\) to 999999, not "ten"/,
  );
  // A number, but more than it takes: the message says the bound, not "not a number".
  const huge = await apply("--keep-backups", "1000000");
  assertEquals(huge.code, 2);
  assertMatch(huge.stderr, /from 0 \(keep all\) to 999999, not "1000000"/);
  // The bound itself is taken, as `keep_backups: 999999` is.
  const most = await apply("--json", "--keep-backups", "999999");
  assertEquals([most.code, JSON.parse(most.stdout).keepBackups], [0, 999999], most.stderr);
  // Told no number, it keeps 10.
  const [taken] = listBackups(state, "win10");
  for (let i = 0; i < 12; i++) {
    const { vm, uuid, uri } = taken!;
    const now = new Date(Date.UTC(2026, 0, 1, 0, i));
    writeBackup(state, { vm, uuid, uri, reason: "apply", xml: "<domain/>", now });
  }
  const plain = await apply("--json");
  assertEquals([plain.code, JSON.parse(plain.stdout).keepBackups], [0, 10], plain.stderr);
  assertEquals(listBackups(state, "win10").length, 10);
});

Deno.test("passthrough apply keeps the number of backups its host section's keep_backups: says", async () => {
  await using demo = await demoSetup();
  const config = `${demo.root}/config.yaml`;
  Deno.writeTextFileSync(
    config,
    Deno.readTextFileSync(`${DEMO}passthrough_config.yaml`)
      .replace("version: 1\n", "version: 1\nhosts:\n  hv1: { keep_backups: 1 }\n"),
  );
  const args = ["--config", config, ...demo.args.slice(2), "--host", "hv1", "--yes"];
  const apply = (...more: string[]) => runCli(["apply", ...args, ...more], { flags: ["-A"] });
  assertEquals((await apply()).code, 0);
  const second = await apply();
  assertEquals(second.code, 0, second.stderr);
  assertMatch(second.stdout, /removed 1 older backup of "win10", keeping its newest 1: /);
  assertEquals(listBackups(`${demo.root}/state`).length, 2);
  const both = await apply("--keep-backups", "5");
  assertEquals(both.code, 2);
  assertMatch(
    both.stderr,
    /--keep-backups and hosts\.hv1\.keep_backups in .*config\.yaml both say how many backups to keep: keep one/,
  );
  // Without a terminal, the wrong command line is what is said (and fixed) first.
  const asking = args.filter((a) => a !== "--yes");
  const unasked = await runCli(["apply", ...asking, "--keep-backups", "5"], { flags: ["-A"] });
  assertEquals(unasked.code, 2, unasked.stderr);
  assertMatch(unasked.stderr, /both say how many backups to keep: keep one/);
  const ten = await runCli(["apply", ...asking, "--keep-backups", "ten"], { flags: ["-A"] });
  assertEquals(ten.code, 2, ten.stderr);
  assertMatch(ten.stderr, /--keep-backups takes a number of backups/);
});

Deno.test("passthrough apply --yes --json defines every VM and prints the report", async () => {
  await using demo = await demoSetup();
  // plan takes no --state-dir: the last two arguments.
  const planned = await runCli(["plan", ...demo.args.slice(0, -2), "--json"], { flags: ["-A"] });
  assertEquals(planned.code, 0, planned.stderr);
  const plan = JSON.parse(planned.stdout);
  const result = await runCli(["apply", ...demo.args, "--yes", "--json"], { flags: ["-A"] });
  assertEquals(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout);
  assertEquals([report.changed, report.failed, report.ok], [["win10", "gentoo"], [], true]);
  // Plan and apply JSON share their names: config, vms[].name, and the summary's counts.
  assertEquals(report.config, plan.config);
  assertEquals(report.vms.map((v: { name: string }) => v.name), ["win10", "gentoo"]);
  assertEquals(report.vms.map((v: { name: string; vm: string }) => v.name === v.vm), [true, true]);
  const add = plan.vms.reduce((n: number, v: { add: unknown[] }) => n + v.add.length, 0);
  assertOk(add > 0);
  assertEquals(plan.summary, {
    vmsToChange: 2,
    add,
    remove: 0,
    moved: 0,
    refused: 0,
    warnings: 1,
    repairRemove: 0,
    repairMoved: 0,
  });
  assertEquals(report.summary, {
    vmsToChange: 2,
    changed: 2,
    unchanged: 0,
    skipped: 0,
    failed: 0,
    add,
    remove: 0,
    moved: 0,
    refused: 0,
  });
  const backups = listBackups(`${demo.root}/state`);
  assertEquals(backups.map((b) => b.vm).sort(), ["gentoo", "win10"]);
  const listed = await runCli(["backups", "--json", "--state-dir", `${demo.root}/state`], {
    flags: ["-A"],
  });
  assertEquals(JSON.parse(listed.stdout), JSON.parse(JSON.stringify(backups)));
});

Deno.test({
  name: "passthrough apply asks per VM on a terminal and honours n then y",
  ignore: !hasScript(),
  async fn() {
    await using demo = await demoSetup();
    // `script` gives the program a real pseudo-terminal; the answers wait in its input queue.
    await using child = runCliOnPty(["apply", ...demo.args], { flags: ["-A"] });
    await child.type("n\ny\n");
    const out = await child.finish();
    const stdout = out.screen;
    assertEquals(out.code, 0, stdout);
    assertMatch(stdout, /Apply the changes to "win10"\? \[y\/N\/a\/q\]/);
    assertMatch(stdout, /Apply the changes to "gentoo"\? \[y\/N\/a\/q\]/);
    assertMatch(stdout, /skipped win10: Declined/);
    assertMatch(stdout, /changed gentoo/);
    assertEquals(listBackups(`${demo.root}/state`).map((b) => b.vm), ["gentoo"]);
  },
});

Deno.test({
  name: "passthrough apply and rollback on a terminal exit right after the last answer",
  ignore: !hasScript(),
  async fn() {
    await using demo = await demoSetup();
    {
      await using child = runCliOnPty(["apply", ...demo.args], { flags: ["-A"] });
      await child.waitFor(/Apply the changes to "win10"\?/);
      await child.type("n\n");
      await child.waitFor(/Apply the changes to "gentoo"\?/);
      await child.type("y\n");
      // The input stays open, as a user who answered and waits: the program must not wait for
      // another line.
      const { code, screen } = await child.exited(15_000);
      assertEquals(code, 0, screen);
      assertMatch(screen, /changed gentoo/);
    }
    // A backup that differs from the definition (the test driver's world is the process's own,
    // so each run starts from the demo world): rollback shows the diff and asks.
    const stateDir = `${demo.root}/state`;
    using port = openLibvirtPort(`test://${DEMO}world.xml`);
    const current = port.getPersistentXml("win10", { secure: true });
    const backup = writeBackup(stateDir, {
      vm: "win10",
      uuid: parseDomainXml(current).uuid ?? "",
      xml: current.replace(/<description>[^<]*<\/description>/, "<description>older</description>"),
      reason: "apply",
      uri: port.uri,
    });
    {
      await using child = runCliOnPty(
        ["rollback", "win10", "--connect", port.uri, "--state-dir", stateDir],
        { flags: ["-A"] },
      );
      const asked = await child.waitFor(/Restore "win10" from this backup\? \[y\/N\]/);
      assertMatch(asked, new RegExp(`\\+\\+\\+ win10 \\(backup ${backup.time}\\)`));
      await child.type("y\n");
      const { code, screen } = await child.exited(15_000);
      assertEquals(code, 0, screen);
      assertMatch(screen, /Restored "win10" from backup/);
    }
    recordCase({
      area: "fault",
      name: "interactive apply and rollback after the last answer, input left open",
      count: 2,
      outcome: "both exit at once, without waiting for another line or end of input",
      test: "tests/apply/apply_test.ts",
    });
  },
});

// ---------------------------------------------------------------------------------------------
// A real libvirtd (QEMU driver): it rewrites hostdevs (guest-side <address>), so the check after
// the define must match on host source addresses only.

const daemonMissing = libvirtdUnavailable();

Deno.test({
  name: "applyPlan() and rollbackVm() on a real QEMU libvirtd: define, check, restore",
  ignore: daemonMissing !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    using port = openLibvirtPort(daemon.uri);
    const name = `pt-apply-${Deno.pid}`;
    port.define(`<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><graphics type='vnc' autoport='yes' passwd='s3cret'/></devices>
</domain>`);
    const stateDir = `${daemon.dir}/state`;
    try {
      const before = port.getPersistentXml(name, { secure: true });
      const vm = planVm(port, name, ["0000:42:00.0", "0000:42:00.1"]);
      const report = await applyPlan(planOf(port, [vm]), { libvirt: port, stateDir, confirm: yes });
      assertEquals([report.changed, report.ok], [[name], true]);
      const after = port.getPersistentXml(name, { secure: true });
      // libvirt added guest addresses; the host side is exactly what was planned.
      assertMatch(after, /<address type='pci' domain='0x0000' bus='0x00'/);
      assertEquals(hostdevs(port, name), ["0000:42:00.0", "0000:42:00.1"]);
      assertOk(after.includes("s3cret"));
      assertEquals(readBackupXml(listBackups(stateDir, name)[0]!), before);

      const rolled = await rollbackVm(name, {
        libvirt: port,
        stateDir,
        confirm: () => Promise.resolve(true),
      });
      assertEquals(rolled.status, "restored");
      assertEquals(port.getPersistentXml(name, { secure: true }), before);
    } finally {
      new Deno.Command("virsh", {
        args: ["-c", daemon.uri, "undefine", name],
        stdout: "null",
        stderr: "null",
      })
        .outputSync();
    }
  },
});

Deno.test("applyPlan() with the real planner converges: planning again right after finds no changes", async () => {
  await using demo = await demoSetup();
  const config = await loadConfig(`${DEMO}passthrough_config.yaml`);
  const host = await loadHost(`${demo.root}/sysfs`);
  using port = openLibvirtPort(`test://${DEMO}world.xml`);
  const stateDir = `${demo.root}/state`;
  const first = planHostdevs({ config, host, libvirt: port });
  assertEquals(first.vms.filter((vm) => vm.changed).map((vm) => vm.name), ["win10", "gentoo"]);
  const report = await applyPlan(first, { libvirt: port, stateDir, confirm: yes });
  assertEquals([report.changed, report.ok], [["win10", "gentoo"], true]);

  const second = planHostdevs({ config, host, libvirt: port });
  assertEquals(second.vms.map((vm) => vm.changed), [false, false]);
  const again = await applyPlan(second, { libvirt: port, stateDir, confirm: yes });
  assertEquals([again.changed, again.unchanged], [[], ["win10", "gentoo"]]);
  assertEquals(listBackups(stateDir).length, 2);
});

Deno.test("passthrough apply fails fast naming the holder of the lock, and breaks a stale one", async () => {
  await using demo = await demoSetup();
  const stateDir = `${demo.root}/state`;
  Deno.mkdirSync(stateDir, { mode: 0o700 });
  const uri = `test://${DEMO}world.xml`;
  {
    using _held = acquireConnectionLock(uri, { stateDir, command: "rollback" });
    const result = await runCli(["apply", ...demo.args, "--yes"], { flags: ["-A"] });
    assertEquals(result.code, 1);
    assertMatch(
      result.stderr,
      new RegExp(`Another passthrough rollback holds the lock .*pid ${Deno.pid}`),
    );
    // It failed before planning: nothing printed, nothing backed up.
    assertEquals([result.stdout, listBackups(stateDir)], ["", []]);
  }
  const dead = {
    pid: 999999,
    host: "gone",
    startedAt: "2026-01-01T00:00:00.000Z",
    command: "apply",
  };
  const lockPath = connectionLockPath(uri, stateDir);
  Deno.writeTextFileSync(lockPath, JSON.stringify(dead), { mode: 0o600 });
  const result = await runCli(["apply", ...demo.args, "--yes"], { flags: ["-A"] });
  assertEquals(result.code, 0, result.stderr);
  assertMatch(result.stdout, /stale lock left by pid 999999/);
  assertThrows(() => Deno.lstatSync(lockPath), Deno.errors.NotFound);
});

Deno.test({
  name:
    "applyPlan() on a running QEMU guest (TCG): next-boot define, --live reports libvirt's hot-plug refusal and unplugs only what the guest holds",
  ignore: daemonMissing !== null || !canUnshareMounts(),
  async fn() {
    // A running guest needs virtlogd, or `stdio_handler = "file"` in /etc/libvirt/qemu.conf: give
    // the daemon that config in a private mount namespace instead of touching the host's. The
    // test daemon's /dev/kvm is an empty file (tests/helpers/libvirtd.ts), which libvirt cannot
    // move into a guest's private /dev: `namespaces = []` starts the guest without one.
    const etc = await Deno.makeTempDir({ prefix: "passthrough-etc-libvirt-" });
    try {
      await new Deno.Command("cp", { args: ["-a", "/etc/libvirt/.", `${etc}/`] }).output();
      await Deno.writeTextFile(`${etc}/qemu.conf`, 'stdio_handler = "file"\nnamespaces = []\n');
      const root = new URL("../../", import.meta.url).pathname;
      const code = `
        import { startLibvirtd } from "./tests/helpers/libvirtd.ts";
        import { openLibvirtPort } from "./ffi/port.ts";
        import { applyPlan } from "./lib/apply/apply.ts";
        import { editDomainXml, parseDomainXml } from "./lib/domain/domain_xml.ts";
        await using daemon = await startLibvirtd();
        using port = openLibvirtPort(daemon.uri);
        const name = "pt-running-" + Deno.pid;
        const virsh = (...args) => new TextDecoder().decode(
          new Deno.Command("virsh", { args: ["-c", daemon.uri, ...args], stderr: "null" }).outputSync().stdout);
        port.define("<domain type='qemu'><name>" + name + "</name><memory unit='MiB'>64</memory>" +
          "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>" +
          "<graphics type='vnc' autoport='yes' passwd='s3cret'/></devices></domain>");
        virsh("start", name);
        const record = (address) => ({ address, vendorId: "10de", deviceId: "2684", subsystemVendorId: null,
          subsystemDeviceId: null, classCode: "030000", serial: null, driver: null, rule: "gpu" });
        const plan = (addresses, remove = []) => {
          const currentXml = port.getPersistentXml(name, { secure: true });
          const have = parseDomainXml(currentXml).records.filter((r) => !remove.includes(r.address));
          const desiredXml = editDomainXml(currentXml, { remove,
            add: addresses.map((address) => ({ address, managed: true })),
            records: [...have, ...addresses.map(record)] });
          return { config: "", host: "", uri: port.uri, errors: [], warnings: [], vms: [{ name,
            hostdevs: [], add: [], remove: [], keep: [], move: [], reasoning: [], warnings: [],
            errors: [], active: true, currentXml, desiredXml, changed: true }] };
        };
        const out = {};
        try {
          out.active = port.isActive(name);
          const stateDir = daemon.dir + "/state";
          const confirm = () => Promise.resolve("yes");
          const first = await applyPlan(plan(["0000:42:00.0"]), { libvirt: port, stateDir, confirm });
          out.first = { effect: first.vms[0].effect, ok: first.ok };
          out.liveHostdevs = (virsh("dumpxml", name).match(/<hostdev/g) ?? []).length;
          const second = await applyPlan(plan(["0000:43:00.0"]), { libvirt: port, stateDir, confirm, live: true });
          out.second = { changed: second.changed, liveFailed: second.liveFailed, live: second.vms[0].live,
            effect: second.vms[0].effect };
          out.persistent = parseDomainXml(port.getPersistentXml(name)).hostdevs.map((h) => h.address);
          // 0000:42:00.0 went into the definition only: the guest has nothing to unplug.
          const third = await applyPlan(plan([], ["0000:42:00.0"]), { libvirt: port, stateDir, confirm, live: true });
          out.third = { ok: third.ok, live: third.vms[0].live, effect: third.vms[0].effect,
            message: third.vms[0].message };
          out.secretKept = port.getPersistentXml(name, { secure: true }).includes("s3cret");
        } finally {
          virsh("destroy", name);
          virsh("undefine", name);
        }
        console.log(JSON.stringify(out));
      `;
      const output = await new Deno.Command("unshare", {
        args: [
          "-m",
          "--propagation",
          "private",
          "sh",
          "-c",
          `mount --bind '${etc}' /etc/libvirt && exec '${Deno.execPath()}' eval --quiet "$0"`,
          code,
        ],
        cwd: root,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(output.stdout).trim();
      assertEquals(output.code, 0, new TextDecoder().decode(output.stderr));
      const out = JSON.parse(stdout.split("\n").at(-1) ?? "{}");
      assertEquals(out.active, true);
      // The define changes only the next boot: the running guest has no hostdev.
      assertEquals(out.first, { effect: "next-power-off", ok: true });
      assertEquals(out.liveHostdevs, 0);
      // LIVE-only hot-plug after the define: refused by QEMU here (no IOMMU), reported, and the
      // persistent definition holds each planned device exactly once.
      assertEquals(out.second.changed, [out.second.liveFailed[0]]);
      assertEquals(out.second.effect, "next-power-off");
      assertEquals(out.second.live.attached, []);
      assertMatch(
        out.second.live.errors[0],
        /Cannot attach "0000:43:00\.0".*passthrough of host PCI devices/,
      );
      assertEquals(out.persistent, ["0000:42:00.0", "0000:43:00.0"]);
      // A device only the definition held is not detached from the guest (libvirt would say
      // "device not found" and apply would call the hot-plug failed and exit 1).
      assertEquals(out.third.live, { detached: [], attached: [], errors: [], refused: false });
      assertEquals([out.third.ok, out.third.effect], [true, "now"]);
      assertMatch(out.third.message, /the running guest already holds the planned hostdevs/);
      assertEquals(out.secretKept, true);
    } finally {
      await Deno.remove(etc, { recursive: true });
    }
  },
});

Deno.test("applyPlan() still removes a refused VM's stale hostdev (issue 13), and only that", async () => {
  // win10 holds the GPU and its audio function; the audio function's address now holds an Intel
  // NIC (not the NVIDIA card's, refused too), and a second rule matches nothing, so the plan
  // refuses win10.
  const audioGone = host([
    ...baseDevices(),
    GPU,
    dev({ bdf: GPU_AUDIO.bdf, group: 1, class: "0x020000", vendor: "0x8086", device: "0x1539" }),
  ]);
  const withTypo = config(
    '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
      '      - name: usb\n        match: { vendor_device_id: "1234:5678" }\n',
  );
  const stateDir = Deno.makeTempDirSync({ prefix: "passthrough-repair-" });
  try {
    await withPort([WIN10], async (libvirt) => {
      libvirt.define(
        vmOf(planHostdevs({ config: GPU_CONFIG, host: HOST, libvirt }), "win10").desiredXml,
      );
      const plan = planHostdevs({ config: withTypo, host: audioGone, libvirt });
      const asked = answers("yes");
      const report = await applyPlan(plan, { libvirt, stateDir, confirm: asked.confirm });
      assertEquals(asked.asked, ["win10"]);
      const [result] = report.vms;
      assertEquals([result?.status, result?.code], ["changed", "repaired"]);
      assertEquals([result?.added, result?.removed], [[], [GPU_AUDIO.bdf]]);
      assertMatch(
        result?.message ?? "",
        /^Repaired "win10": removed the hostdev "0000:01:00.1"; the rest .*refuses it \(3 refusals\)/,
      );
      assertOk(result?.backup);
      const defined = parseDomainXml(libvirt.getPersistentXml("win10"));
      assertEquals(defined.hostdevs.map((h) => [h.address, h.owned]), [[GPU.bdf, true]]);
      assertEquals(defined.records.map((r) => r.address), [GPU.bdf]);
      // Planned again: the stale refusal is gone, the rule's own stands, nothing left to repair.
      const again = vmOf(planHostdevs({ config: withTypo, host: audioGone, libvirt }), "win10");
      assertEquals([again.errors.map((e) => e.code), again.repair], [
        ["no-match", "group-contains-host-critical"],
        undefined,
      ]);
    });
  } finally {
    Deno.removeSync(stateDir, { recursive: true });
  }
});

Deno.test("applyPlan() follows a refused VM's moved card (issue 13): the guard then passes, rollback restores", async () => {
  // win10 holds the GPU and its audio function at bus 0x01; the card now sits at bus 0x0b, and
  // a second rule matches nothing, so the plan refuses win10 but its repair follows the card.
  const moved = [
    ...baseDevices(),
    { ...GPU, bdf: "0000:0b:00.0", group: 7 },
    { ...GPU_AUDIO, bdf: "0000:0b:00.1", group: 7 },
  ];
  const root = Deno.makeTempDirSync({ prefix: "passthrough-follow-" });
  const stateDir = `${root}/state`;
  try {
    buildHostTree({ devices: [...baseDevices(), GPU, GPU_AUDIO] }, `${root}/before`);
    buildHostTree({ devices: moved }, `${root}/after`);
    const before = await discoverHost({ root: `${root}/before` });
    const after = await discoverHost({ root: `${root}/after` });
    const withTypo = config(
      '  win10:\n    devices:\n      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n' +
        '      - name: usb\n        match: { vendor_device_id: "1234:5678" }\n',
    );
    const guard = (xml: string) =>
      checkDomainStart({
        vm: "win10",
        xml,
        reader: denoFsReader(),
        root: `${root}/after`,
        hostUse: () => [],
      });
    await withPort([WIN10], async (libvirt) => {
      libvirt.define(
        vmOf(planHostdevs({ config: GPU_CONFIG, host: before, libvirt }), "win10").desiredXml,
      );
      const stale = libvirt.getPersistentXml("win10", { secure: true });
      // The start guard refuses the stale definition and records it, as the hook does.
      const refusals = guard(stale);
      assertEquals(refusals.map((r) => [r.kind, r.address]), [
        ["missing", GPU.bdf],
        ["missing", GPU_AUDIO.bdf],
      ]);
      recordRefusals(stateDir, "win10", refusals, { allowed: false });

      const plan = planHostdevs({ config: withTypo, host: after, libvirt });
      const asked = answers("yes");
      const report = await applyPlan(plan, { libvirt, stateDir, confirm: asked.confirm });
      assertEquals(asked.asked, ["win10"]);
      const [result] = report.vms;
      assertEquals([result?.status, result?.code], ["changed", "repaired"]);
      assertEquals([result?.added, result?.removed], [
        ["0000:0b:00.0", "0000:0b:00.1"],
        [GPU.bdf, GPU_AUDIO.bdf],
      ]);
      assertMatch(
        result?.message ?? "",
        /^Repaired "win10": followed the card of "0000:01:00\.0" to "0000:0b:00\.0", followed the card of "0000:01:00\.1" to "0000:0b:00\.1"; the rest is not applied: the plan refuses it \(3 refusals\)/,
      );
      const defined = libvirt.getPersistentXml("win10", { secure: true });
      const parsed = parseDomainXml(defined);
      assertEquals(parsed.hostdevs.map((h) => [h.address, h.owned]), [
        ["0000:0b:00.0", true],
        ["0000:0b:00.1", true],
      ]);
      assertEquals(parsed.records.map((r) => r.address), ["0000:0b:00.0", "0000:0b:00.1"]);
      // The guard's own check passes on the repaired definition; its record stays until the
      // next start, as after any apply.
      assertEquals(guard(defined), []);
      assertEquals(readRefusalRecords(stateDir).map((r) => r.vm), ["win10"]);
      // Planned again: no stale hostdev left, the rule's own refusal stands, nothing to repair.
      const again = vmOf(planHostdevs({ config: withTypo, host: after, libvirt }), "win10");
      assertEquals([again.errors.map((e) => e.code), again.repair], [["no-match"], undefined]);

      const rolled = await rollbackVm("win10", {
        libvirt,
        stateDir,
        confirm: () => Promise.resolve(true),
      });
      assertEquals(rolled.status, "restored");
      assertEquals(libvirt.getPersistentXml("win10", { secure: true }), stale);
    });
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("applyPlan() holds back a repair that follows a card another VM has not released yet", async () => {
  // "linux" holds the GPU at bus 0x0b and its rule is dropped, so it releases the card; win10
  // (refused by a rule that matches nothing) recorded that card at bus 0x01, and its repair
  // follows it to 0x0b: only once "linux" has let go.
  const root = Deno.makeTempDirSync({ prefix: "passthrough-follow-" });
  const stateDir = `${root}/state`;
  try {
    buildHostTree({ devices: [...baseDevices(), GPU, GPU_AUDIO] }, `${root}/before`);
    buildHostTree({
      devices: [
        ...baseDevices(),
        { ...GPU, bdf: "0000:0b:00.0", group: 7 },
        { ...GPU_AUDIO, bdf: "0000:0b:00.1", group: 7 },
      ],
    }, `${root}/after`);
    const before = await discoverHost({ root: `${root}/before` });
    const after = await discoverHost({ root: `${root}/after` });
    const gpuRule = '      - name: gpu\n        match: { vendor_device_id: "10de:2684" }\n';
    const typo = '      - name: usb\n        match: { vendor_device_id: "1234:5678" }\n';
    for (const answer of ["no", "yes"] as const) {
      await withPort([WIN10, LINUX], async (libvirt) => {
        const win10 = vmOf(planHostdevs({ config: GPU_CONFIG, host: before, libvirt }), "win10");
        libvirt.define(win10.desiredXml);
        const linux = config(`  linux:\n    devices:\n${gpuRule}`);
        libvirt.define(
          vmOf(planHostdevs({ config: linux, host: after, libvirt }), "linux").desiredXml,
        );
        const both = config(`  win10:\n    devices:\n${gpuRule}${typo}  linux:\n    devices: []\n`);
        const plan = planHostdevs({ config: both, host: after, libvirt });
        assertEquals(vmOf(plan, "win10").repair?.move?.map((m) => m.to), [
          "0000:0b:00.0",
          "0000:0b:00.1",
        ]);
        assertEquals(vmOf(plan, "linux").remove, ["0000:0b:00.0", "0000:0b:00.1"]);
        const asked = answers(answer, "yes");
        const report = await applyPlan(plan, { libvirt, stateDir, confirm: asked.confirm });
        // The VM releasing the card is asked first.
        const codes = Object.fromEntries(report.vms.map((r) => [r.vm, r.code]));
        if (answer === "no") {
          assertEquals(asked.asked, ["linux"]);
          assertEquals(codes, { win10: "blocked", linux: "declined" });
          assertEquals(hostdevs(libvirt, "win10"), [GPU.bdf, GPU_AUDIO.bdf]);
        } else {
          assertEquals(asked.asked, ["linux", "win10"]);
          assertEquals(codes, { win10: "repaired", linux: "applied" });
          assertEquals(hostdevs(libvirt, "win10"), ["0000:0b:00.0", "0000:0b:00.1"]);
          // linux kept its hand-added NIC only.
          assertEquals(hostdevs(libvirt, "linux"), ["0000:02:00.0"]);
        }
      });
    }
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test({
  name: "passthrough apply and rollback --json on a terminal without --yes are usage errors",
  ignore: !hasScript(),
  async fn() {
    await using demo = await demoSetup();
    const state = `${demo.root}/state`;
    for (
      const args of [
        ["apply", ...demo.args, "--json"],
        [
          "rollback",
          "win10",
          "--json",
          "--connect",
          `test://${DEMO}world.xml`,
          "--state-dir",
          state,
        ],
      ]
    ) {
      // On a terminal: the question would be asked, and mix with the JSON.
      await using child = runCliOnPty(args, { flags: ["-A"] });
      const { code, screen } = await child.finish();
      assertEquals(code, 2, screen);
      assertMatch(screen, /--json needs --yes: questions would mix with the JSON/);
    }
    assertEquals(listBackups(state), []);
  },
});

Deno.test("passthrough apply --yes exits 1 when the plan refused a VM, after applying the others", async () => {
  await using demo = await demoSetup();
  // The demo's config, and a rule for a VM libvirt does not define.
  const config = `${demo.root}/config.yaml`;
  Deno.writeTextFileSync(
    config,
    Deno.readTextFileSync(`${DEMO}passthrough_config.yaml`) +
      '  ghost:\n    devices:\n      - name: nvme\n        match: { vendor_device_id: "144d:a808" }\n',
  );
  const args = demo.args.map((a) => a === `${DEMO}passthrough_config.yaml` ? config : a);
  const result = await runCli(["apply", "--yes", ...args], { flags: ["-A"] });
  assertEquals(result.code, 1, result.stdout + result.stderr);
  assertMatch(result.stdout, /changed win10/);
  assertMatch(result.stdout, /refused \[unknown-vm\] .*VM "ghost" is not defined in libvirt/);
  assertEquals(listBackups(`${demo.root}/state`).map((b) => b.vm).sort(), ["gentoo", "win10"]);
});

Deno.test("passthrough apply says it broke a stale lock: in its report, or with --json on standard error", async () => {
  await using demo = await demoSetup();
  const plant = () => plantDeadLock(`test://${DEMO}world.xml`, `${demo.root}/state`);
  plant();
  const text = await runCli(["apply", "--yes", ...demo.args], { flags: ["-A"] });
  assertEquals(text.code, 0, text.stderr);
  assertMatch(text.stdout, /Broke a stale lock left by pid 999999/);
  plant();
  const json = await runCli(["apply", "--yes", "--json", ...demo.args], { flags: ["-A"] });
  assertEquals(json.code, 0, json.stderr);
  JSON.parse(json.stdout);
  assertEquals(
    json.stderr,
    `Note: removed a stale lock left by pid 999999 on "gone" (apply, started 2026-01-01T00:00:00.000Z)\n`,
  );
});

Deno.test("describeXmlChange() shows the spaces of a line that differs only in them, and no secret", () => {
  const before = "<domain><description>users:\n  - name: a\n    sudo: ALL\n</description>" +
    "\n<graphics type='vnc' passwd='s3cret'/></domain>";
  const after = before.replace("    sudo", "      sudo").replace("s3cret", "s3cret2");
  const text = describeXmlChange(before, after);
  assertEquals(
    text,
    `4 changed lines ("-    sudo: ALL", "+      sudo: ALL", "-<graphics type='vnc' passwd='***'/></domain>", ...)`,
  );
  assertOk(!text.includes("s3cret"), text);
  // A line that changed in more than its spaces is shown trimmed, as before.
  assertMatch(describeXmlChange("<a>\n  <b/>\n</a>", "<a>\n  <c/>\n</a>"), /"-<b\/>", "\+<c\/>"/);
});

Deno.test("describeXmlChange() shows no part of a password libvirt writes over two lines", () => {
  // libvirt writes a passwd's line break as it is: the drift of such a password changed one line.
  const before = "<domain>\n  <graphics type='vnc' passwd='Top\nOLDSECRET'/>\n</domain>";
  const after = before.replace("OLDSECRET", "NEWSECRET");
  const text = describeXmlChange(before, after);
  assertOk(!text.includes("SECRET") && !text.includes("Top"), text);
  assertMatch(text, /passwd='\*\*\*'/);
});
Deno.test({
  name:
    "applyPlan() on a real libvirtd: a VM with a managed save image is told its next start resumes it without the change",
  ignore: daemonMissing !== null || !canUnshareMounts(),
  async fn() {
    await using daemon = await startLibvirtd({ virtlogd: true });
    await using tree = await demoTree();
    using port = openLibvirtPort(daemon.uri);
    const name = `pt-saved-${Deno.pid}`;
    port.define(qemuDomainXml(name));
    const virsh = async (...args: string[]) => {
      const out = await new Deno.Command("virsh", {
        args: ["-c", daemon.uri, ...args],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder();
      assertEquals(out.code, 0, `virsh ${args.join(" ")}: ${text.decode(out.stderr)}`);
      return text.decode(out.stdout);
    };
    // A guest (TCG, no disk) started and saved, as libvirt-guests suspends guests at shutdown.
    await virsh("start", name);
    await virsh("managedsave", name);
    const plan = await planGpu(name, { sysfs: tree.sysfs, libvirt: port });
    const report = await applyPlan(plan, {
      libvirt: port,
      stateDir: `${tree.dir}/state`,
      confirm: () => Promise.resolve("yes"),
    });
    const result = report.vms[0]!;
    assertEquals([result.code, result.active, result.effect], ["applied", false, "next-power-off"]);
    assertMatch(
      result.message,
      new RegExp(
        `; it has a saved state \\(virsh managedsave\\), which its next start resumes without this change: the change takes effect at its next full power-off, or at its next start after "virsh managedsave-remove ${name}"`,
      ),
    );
    // Why: the next start resumes the saved guest, without the hostdevs just defined.
    await virsh("start", name);
    assertEquals(parseDomainXml(port.getLiveXml!(name)).hostdevs, []);
    assertEquals(parseDomainXml(port.getPersistentXml(name)).hostdevs.length, 2);
    await virsh("destroy", name);
  },
});

Deno.test("applyPlan() counts a moved card as moved in its message, as the report's line does", async () => {
  const moved = [
    ...baseDevices(),
    { ...GPU, bdf: "0000:0b:00.0", group: 7 },
    { ...GPU_AUDIO, bdf: "0000:0b:00.1", group: 7 },
  ];
  const root = Deno.makeTempDirSync({ prefix: "passthrough-h159-moved-" });
  try {
    buildHostTree({ devices: [...baseDevices(), GPU, GPU_AUDIO] }, `${root}/before`);
    buildHostTree({ devices: moved }, `${root}/after`);
    const before = await discoverHost({ root: `${root}/before` });
    const after = await discoverHost({ root: `${root}/after` });
    await withPort([WIN10], async (libvirt) => {
      libvirt.define(
        vmOf(planHostdevs({ config: GPU_CONFIG, host: before, libvirt }), "win10").desiredXml,
      );
      const plan = planHostdevs({ config: GPU_CONFIG, host: after, libvirt });
      assertEquals(vmOf(plan, "win10").move.length, 2);
      const report = await applyPlan(plan, {
        libvirt,
        stateDir: `${root}/state`,
        confirm: answers("yes").confirm,
      });
      const [result] = report.vms;
      assertEquals([result?.added.length, result?.removed.length], [2, 2]);
      assertEquals(result?.message, 'Defined "win10" (0 added, 0 removed, 2 moved)');
      assertMatch(
        renderApplyReport(report, { color: false, plan }),
        /^changed win10 \(\+0 -0 hostdevs, 2 moved\): Defined "win10" \(0 added, 0 removed, 2 moved\);/,
      );
    });
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("applyPlan() leaves a VM another client defined right after its define as it is", async () => {
  using f = fixture();
  const before = f.port.getPersistentXml("alpha", { secure: true });
  // Real libvirt underneath; another client saves a `virsh edit` opened before the apply right
  // after apply's define, before its read-back.
  let edited = false;
  const port: LibvirtPort = Object.create(f.port);
  port.define = (xml) => {
    f.port.define(xml);
    if (edited) return;
    edited = true;
    f.port.define(before.replace("</uuid>", "</uuid><description>edited elsewhere</description>"));
  };
  const report = await applyPlan(planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]), {
    libvirt: port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals([report.vms[0]?.code, report.vms[0]?.restored], ["verify-failed", false]);
  assertMatch(
    report.vms[0]!.message,
    /^"alpha" was defined again by another client right after this define, .*missing \[0000:01:00\.0 managed owned\].*; it was left as that client defined it \(.*edited elsewhere.* since the plan\), not restored over that change/s,
  );
  assertMatch(f.port.getPersistentXml("alpha"), /<description>edited elsewhere<\/description>/);
});

Deno.test("applyPlan() leaves a VM another client gave a hostdev right after its define as it is", async () => {
  using f = fixture();
  const before = f.port.getPersistentXml("alpha", { secure: true });
  // Another client's `virsh edit`, opened before the apply, changes only hostdevs: it hands the
  // VM 0000:02:00.0 by hand. libvirt never renders a hostdev a define did not send, so the
  // read-back is not this run's define, and restoring the backup would lose that edit.
  const hand = editDomainXml(before, {
    remove: [],
    add: [{ address: "0000:02:00.0", managed: true }],
    records: [],
  });
  let edited = false;
  const port: LibvirtPort = Object.create(f.port);
  port.define = (xml) => {
    f.port.define(xml);
    if (edited) return;
    edited = true;
    f.port.define(hand);
  };
  const report = await applyPlan(planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]), {
    libvirt: port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals([report.vms[0]?.code, report.vms[0]?.restored], ["verify-failed", false]);
  assertMatch(
    report.vms[0]!.message,
    /^"alpha" was defined again by another client right after this define, .*unexpected \[0000:02:00\.0 managed hand-added\].*; it was left as that client defined it \(hostdevs added "0000:02:00\.0".* since the plan\)/s,
  );
  assertEquals(hostdevs(f.port, "alpha"), ["0000:02:00.0"]);
});

Deno.test("applyPlan() leaves a VM another client gave a USB device right after its define as it is", async () => {
  using f = fixture();
  const before = f.port.getPersistentXml("alpha", { secure: true });
  // Only PCI hostdevs are apply's: a USB hostdev another client's `virsh edit` (opened before
  // the apply) added is that client's change, which restoring the backup would lose.
  const usb =
    "<hostdev mode='subsystem' type='usb' managed='yes'><source><vendor id='0x046d'/><product id='0xc52b'/></source></hostdev>";
  let edited = false;
  const port: LibvirtPort = Object.create(f.port);
  port.define = (xml) => {
    f.port.define(xml);
    if (edited) return;
    edited = true;
    f.port.define(before.replace("</devices>", `${usb}</devices>`));
  };
  const report = await applyPlan(planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]), {
    libvirt: port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals([report.vms[0]?.code, report.vms[0]?.restored], ["verify-failed", false]);
  assertMatch(report.vms[0]!.message, /it was left as that client defined it/);
  assertMatch(f.port.getPersistentXml("alpha"), /<hostdev mode='subsystem' type='usb'/);
});

Deno.test("applyPlan() leaves a VM another client took a kept hostdev from right after its define as it is", async () => {
  using f = fixture();
  // alpha holds a hand-added 0000:02:00.0; another client's `virsh edit`, opened before the apply,
  // removes it. libvirt may lose the hostdev a define adds, not one the VM held before it.
  f.port.define(editDomainXml(f.port.getPersistentXml("alpha", { secure: true }), {
    remove: [],
    add: [{ address: "0000:02:00.0", managed: true }],
    records: [],
  }));
  const before = f.port.getPersistentXml("alpha", { secure: true });
  let edited = false;
  const port: LibvirtPort = Object.create(f.port);
  port.define = (xml) => {
    f.port.define(xml);
    if (edited) return;
    edited = true;
    f.port.define(before.replace(/<hostdev [^]*?<\/hostdev>/, ""));
  };
  const report = await applyPlan(planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]), {
    libvirt: port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals([report.vms[0]?.code, report.vms[0]?.restored], ["verify-failed", false]);
  assertMatch(
    report.vms[0]!.message,
    /it was left as that client defined it \(hostdevs removed "0000:02:00\.0".* since the plan\)/s,
  );
  assertEquals(hostdevs(f.port, "alpha"), []);
});

for (
  const [what, edit] of [
    [
      "gave a kept hostdev a rom line",
      (x: string) => x.replace("</source>", "</source>\n      <rom bar='off'/>"),
    ],
    ["made a kept hostdev unmanaged", (x: string) => x.replace("managed='yes'", "managed='no'")],
  ] as const
) {
  Deno.test(`applyPlan() leaves a VM another client ${what} right after its define as it is`, async () => {
    using f = fixture();
    // alpha holds a hand-added 0000:02:00.0; another client's `virsh edit`, opened before the
    // apply, changes it. libvirt renders a hostdev it kept as it was, so the change is that client's.
    f.port.define(editDomainXml(f.port.getPersistentXml("alpha", { secure: true }), {
      remove: [],
      add: [{ address: "0000:02:00.0", managed: true }],
      records: [],
    }));
    const before = f.port.getPersistentXml("alpha", { secure: true });
    const theirs = edit(before);
    assertOk(theirs !== before);
    let edited = false;
    const port: LibvirtPort = Object.create(f.port);
    port.define = (xml) => {
      f.port.define(xml);
      if (edited) return;
      edited = true;
      f.port.define(theirs);
    };
    const report = await applyPlan(planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]), {
      libvirt: port,
      stateDir: f.stateDir,
      confirm: yes,
    });
    assertEquals([report.vms[0]?.code, report.vms[0]?.restored], ["verify-failed", false]);
    assertMatch(report.vms[0]!.message, /it was left as that client defined it/);
    assertEquals(hostdevs(f.port, "alpha"), ["0000:02:00.0"]);
    assertMatch(
      f.port.getPersistentXml("alpha", { secure: true }),
      what.includes("rom") ? /<rom bar='off'\/>/ : /managed='no'/,
    );
  });
}

Deno.test("applyPlan() leaves a VM another client changed a rewritten hostdev of right after its define as it is", async () => {
  using f = fixture();
  // alpha holds an owned 0000:01:00.0; the plan rewrites it in place (its rule now turns the ROM
  // BAR off), and another client makes it unmanaged right after the define (a `virsh edit` of
  // the new definition). The hostdev's address is the planned one, its settings are not apply's.
  f.port.define(editDomainXml(f.port.getPersistentXml("alpha", { secure: true }), {
    remove: [],
    add: [{ address: "0000:01:00.0", managed: true }],
    records: [identity("0000:01:00.0")],
  }));
  const current = f.port.getPersistentXml("alpha", { secure: true });
  const desiredXml = editDomainXml(current, {
    remove: [],
    add: [],
    records: [identity("0000:01:00.0")],
    rewrite: [{ address: "0000:01:00.0", managed: true, rom: { bar: "off" } }],
  });
  assertMatch(desiredXml, /<rom bar='off'\/>/);
  let edited = false;
  const port: LibvirtPort = Object.create(f.port);
  port.define = (xml) => {
    f.port.define(xml);
    if (edited) return;
    edited = true;
    f.port.define(
      f.port.getPersistentXml("alpha", { secure: true }).replace("managed='yes'", "managed='no'"),
    );
  };
  const vm = { ...planVm(f.port, "alpha", [], { desiredXml }), hostdevs: ["0000:01:00.0"] };
  const report = await applyPlan(planOf(f.port, [vm]), {
    libvirt: port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals([report.vms[0]?.code, report.vms[0]?.restored], ["verify-failed", false]);
  assertMatch(
    report.vms[0]!.message,
    /"0000:01:00\.0" read back other than defined.*; it was left as that client defined it/s,
  );
  assertMatch(f.port.getPersistentXml("alpha"), /managed='no'/);
  assertMatch(f.port.getPersistentXml("alpha"), /<rom bar='off'\/>/);
});

Deno.test("applyPlan() leaves a VM another client defined after the failed check as it is", async () => {
  using f = fixture();
  // Real libvirt underneath; the fault: the define silently loses the new hostdev, and another
  // client (virsh edit) defines alpha right after apply read it back, before the restore.
  let faulty = false;
  let edited = false;
  const port: LibvirtPort = Object.create(f.port);
  port.define = (xml) => {
    if (faulty) return f.port.define(xml);
    faulty = true;
    f.port.define(editDomainXml(xml, { remove: ["0000:01:00.0"], add: [], records: [] }));
  };
  port.getPersistentXml = (name, options) => {
    const text = f.port.getPersistentXml(name, options);
    if (faulty && !edited) {
      edited = true;
      f.port.define(text.replace("</uuid>", "</uuid><description>edited elsewhere</description>"));
    }
    return text;
  };
  const report = await applyPlan(planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]), {
    libvirt: port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals([report.vms[0]?.code, report.vms[0]?.restored], ["verify-failed", false]);
  assertMatch(
    report.vms[0]!.message,
    /missing \[0000:01:00\.0 managed owned\].*; the previous definition was not restored: "alpha" was defined again since \(.*edited elsewhere.*\), and restoring it would overwrite that change, which no backup holds: check it, then run "passthrough rollback alpha"$/s,
  );
  assertMatch(f.port.getPersistentXml("alpha"), /<description>edited elsewhere<\/description>/);
});

Deno.test("applyPlan() takes a guest address another client gives an added hostdev sent without one right after its define for libvirt's", async () => {
  using f = fixture();
  // The planner sent 0000:01:00.0 without a guest address, for libvirt to place; another client
  // (a `virsh edit` of the new definition) puts it in slot 9 before apply reads it back. Any
  // slot is one libvirt could have chosen, and the device is passed as planned: nothing to undo.
  let edited = false;
  const port: LibvirtPort = Object.create(f.port);
  port.define = (xml) => {
    f.port.define(xml);
    if (edited) return;
    edited = true;
    f.port.define(
      f.port.getPersistentXml("alpha", { secure: true }).replace(
        "</source>",
        "</source><address type='pci' domain='0x0000' bus='0x00' slot='0x09' function='0x0'/>",
      ),
    );
  };
  const report = await applyPlan(planOf(f.port, [planVm(f.port, "alpha", ["0000:01:00.0"])]), {
    libvirt: port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals([report.vms[0]?.status, report.vms[0]?.code, report.ok], [
    "changed",
    "applied",
    true,
  ]);
  assertEquals(report.vms[0]?.message, `Defined "alpha" (1 added, 0 removed)`);
  assertMatch(parseDomainXml(f.port.getPersistentXml("alpha")).hostdevs[0]!.xml, /slot='0x09'/);
});

Deno.test("applyPlan() leaves a VM another client moved a planned guest address of right after its define as it is, and says so", async () => {
  using f = fixture();
  // The planner put 0000:01:00.0 in guest slot 5 (function 0 of a multifunction card); another
  // client moves it to slot 9 before apply reads it back: not the layout planned, and restoring
  // the backup would lose that client's edit.
  const guestAddress = { domain: 0, bus: 0, slot: 5, function: 0, multifunction: true };
  const desiredXml = editDomainXml(f.port.getPersistentXml("alpha", { secure: true }), {
    remove: [],
    add: [{ address: "0000:01:00.0", managed: true, guestAddress }],
    records: [identity("0000:01:00.0")],
  });
  let edited = false;
  const port: LibvirtPort = Object.create(f.port);
  port.define = (xml) => {
    f.port.define(xml);
    if (edited) return;
    edited = true;
    f.port.define(
      f.port.getPersistentXml("alpha", { secure: true }).replace("slot='0x05'", "slot='0x09'"),
    );
  };
  const vm = planVm(f.port, "alpha", ["0000:01:00.0"], { desiredXml });
  const report = await applyPlan(planOf(f.port, [vm]), {
    libvirt: port,
    stateDir: f.stateDir,
    confirm: yes,
  });
  assertEquals([report.vms[0]?.code, report.vms[0]?.restored, report.ok], [
    "verify-failed",
    false,
    false,
  ]);
  assertMatch(
    report.vms[0]!.message,
    /"0000:01:00\.0" read back other than defined.*; it was left as that client defined it/s,
  );
  assertMatch(parseDomainXml(f.port.getPersistentXml("alpha")).hostdevs[0]!.xml, /slot='0x09'/);
});

Deno.test("applyPlan() calls checkpoint before each question with the VMs done so far, and right after each define with it", async () => {
  using f = fixture();
  const plan = planOf(f.port, [
    planVm(f.port, "alpha", ["0000:01:00.0"]),
    planVm(f.port, "beta", ["0000:02:00.0"]),
  ]);
  const seen: string[] = [];
  const { confirm } = answers("yes", "no");
  await applyPlan(plan, {
    libvirt: f.port,
    stateDir: f.stateDir,
    confirm,
    checkpoint: (done) => {
      seen.push(
        `${done.map((r) => `${r.vm}:${r.code}`).join(",")} alpha=${hostdevs(f.port, "alpha")}`,
      );
      return new Map();
    },
  });
  // beta is asked about (a checkpoint before it), declined, not defined: none after it.
  assertEquals(seen, [
    " alpha=",
    "alpha:applied alpha=0000:01:00.0",
    "alpha:applied alpha=0000:01:00.0",
  ]);
});
