/**
 * What a VM's section shows first (issue 16): refusals before warnings, one line per rule and
 * code instead of one per function, and the managed flow's host-driver note after both.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { renderPlan, renderVmPlan, summaryLine } from "../../cli/render_plan.ts";
import { summarizePlan } from "../../cli/plan_summary.ts";
import type { Plan, PlanIssue, PlannedHostdev, VmPlan } from "../../lib/plan/types.ts";
import { applyJson, renderApplyReport } from "../../cli/render_apply.ts";
import { gpuIdentity } from "../helpers/devices.ts";
import type { ApplyReport, VmApplyResult } from "../../lib/apply/apply.ts";
import { config, domainXml, HOST, vmOf } from "../helpers/plan_world.ts";
import { dataWorld } from "../helpers/world.ts";
import { sriovNic } from "../helpers/sriov.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import { planWorld } from "../../lib/plan/plan.ts";

const ADDRESSES = ["0000:0a:00.0", "0000:0a:00.1", "0000:0a:00.2", "0000:0a:00.3", "0000:0a:00.4"];

function perFunction(code: "no-flr" | "host-driver-in-use", info?: true): PlanIssue[] {
  return ADDRESSES.map((address) => ({
    code,
    message: `Device ${address}: one line per function`,
    vm: "router",
    rule: "nic",
    devices: [address],
    ...(info ? { info } : {}),
  }));
}

function vm(errors: PlanIssue[], warnings: PlanIssue[]): VmPlan {
  return {
    name: "router",
    hostdevs: [],
    add: [],
    remove: [],
    keep: [],
    move: [],
    reasoning: [],
    warnings,
    errors,
    active: false,
    currentXml: "",
    desiredXml: "",
    changed: false,
  };
}

/** A hostdev a rule matched at `address` (only counted by the summaries). */
function hostdev(address: string): PlannedHostdev {
  return {
    address,
    rule: "gpu",
    reason: "matched",
    group: 1,
    spec: { address, managed: true },
    identity: gpuIdentity(address, { driver: null }),
    description: "10de:2684 VGA compatible controller",
  };
}

const refusal: PlanIssue = {
  code: "group-contains-host-critical",
  message: "the group holds the host's NIC",
  vm: "router",
  rule: "nic",
};

Deno.test("a VM's refusals come before its warnings, and per-function warnings are grouped", () => {
  const text = renderVmPlan(
    vm([refusal], [...perFunction("host-driver-in-use", true), ...perFunction("no-flr")]),
    { color: false },
  );
  const lines = text.trimEnd().split("\n").slice(2);
  assertEquals(lines.length, 3);
  assertMatch(lines[0]!, /^ {2}refused \[group-contains-host-critical\]/);
  assertMatch(
    lines[1]!,
    /^ {2}warning \[no-flr\] rule "nic": 5 functions without Function Level Reset: 0000:0a:00\.0, 0000:0a:00\.1, 0000:0a:00\.2, 0000:0a:00\.3 and 1 more: /,
  );
  assertMatch(lines[2]!, /^ {2}note \[host-driver-in-use\] rule "nic": 5 functions are bound/);
});

Deno.test("host-driver-in-use notes of the managed flow are not counted as warnings", () => {
  const plan: Plan = {
    config: "c.yaml",
    host: "/sys",
    uri: "test:///default",
    vms: [vm([], [...perFunction("host-driver-in-use", true), ...perFunction("no-flr")])],
    errors: [],
    warnings: [],
  };
  assertEquals(summarizePlan(plan).warnings, 5);
});

Deno.test("a --vm summary says how many configured VMs it did not check", () => {
  const plan: Plan = {
    config: "c.yaml",
    unplanned: ["router"],
    host: "/sys",
    uri: "test:///default",
    vms: [{ ...vm([], []), name: "win11" }],
    errors: [],
    warnings: [],
  };
  assertEquals(
    summaryLine(summarizePlan(plan)),
    "No changes: win11 matches the config; 1 other VM not planned",
  );
});

Deno.test("apply counts a moved card as moved, not as an add and a remove", () => {
  const moved = {
    ...vm([], []),
    name: "win11",
    changed: true,
    move: [
      { from: "0000:01:00.0", to: "0000:0b:00.0", rule: "gpu", evidence: "same IDs and serial" },
      { from: "0000:01:00.1", to: "0000:0b:00.1", rule: "gpu", evidence: "same IDs" },
    ],
  };
  const plan: Plan = {
    config: "c.yaml",
    host: "/sys",
    uri: "test:///default",
    vms: [moved],
    errors: [],
    warnings: [],
  };
  const report: ApplyReport = {
    uri: "test:///default",
    stateDir: "/tmp/s",
    keepBackups: 10,
    brokeStaleLock: null,
    vms: [{
      vm: "win11",
      status: "changed",
      code: "applied",
      message: 'Defined "win11"',
      added: ["0000:0b:00.0", "0000:0b:00.1", "0000:0c:00.0"],
      removed: ["0000:01:00.0", "0000:01:00.1"],
      active: false,
      effect: "next-start",
      backup: null,
      pruned: [],
      pruneError: null,
      restored: false,
      live: null,
      definition: null,
    }],
    changed: ["win11"],
    unchanged: [],
    skipped: [],
    failed: [],
    liveFailed: [],
    ok: true,
  };
  const first = renderApplyReport(report, { color: false, plan }).split("\n")[0]!;
  assertMatch(first, /^changed win11 \(\+1 -0 hostdevs, 2 moved\): /);
  // apply --json counts the same way, under the names plan --json uses.
  const json = JSON.parse(applyJson(report, plan));
  assertEquals(json.summary, {
    vmsToChange: 1,
    changed: 1,
    unchanged: 0,
    skipped: 0,
    failed: 0,
    add: 1,
    remove: 0,
    moved: 2,
    refused: 0,
  });
  assertEquals([json.config, json.vms[0].name, json.vms[0].move], ["c.yaml", "win11", moved.move]);
  // A hot-plug that failed (apply exits 1) is named in the last line, not only in the JSON.
  const live = renderApplyReport({ ...report, liveFailed: ["win11"], ok: false }, {
    color: false,
    plan,
  }).trimEnd().split("\n").at(-1);
  assertEquals(
    live,
    "Changed: win11. Skipped: none. Failed: none. Hot-plug failed: win11 (the change lands at the next power-off).",
  );
  // apply --live says what it did to the guest once, never "hot-plugged" when nothing was.
  for (
    const said of [
      "hot-plugged into the running guest",
      "the running guest already holds the planned hostdevs",
    ]
  ) {
    const now = {
      ...report.vms[0]!,
      active: true,
      effect: "now" as const,
      message: `Defined "win11"; ${said}`,
    };
    const line =
      renderApplyReport({ ...report, vms: [now] }, { color: false, plan }).split("\n")[0];
    assertEquals(line, `changed win11 (+1 -0 hostdevs, 2 moved): Defined "win11"; ${said}`);
  }
});

Deno.test("host-driver-in-use of an unmanaged rule stays a warning, grouped with its fix", () => {
  const text = renderVmPlan(vm([], perFunction("host-driver-in-use")), { color: false });
  const lines = text.trimEnd().split("\n").slice(2);
  assertEquals(lines.length, 1);
  assertMatch(
    lines[0]!,
    /^ {2}warning \[host-driver-in-use\] rule "nic": 5 functions are bound to host drivers and the rule has managed: false: .* bind them to vfio-pci/,
  );
});

Deno.test("a refused VM's repair is shown under its refusals: the stale hostdev and its diff", () => {
  const current = `<domain>
  <name>router</name>
  <devices>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x08' slot='0x00' function='0x0'/>
      </source>
    </hostdev>
  </devices>
</domain>
`;
  const drift: PlanIssue = {
    code: "drift",
    message:
      'Hostdev 0000:08:00.0 of "router" was recorded as 8086:1533 (rule "nic") but the address now holds 144d:a808 Non-Volatile memory controller: the repair removes it even while the other refusals of "router" stand',
    vm: "router",
    rule: "nic",
    devices: ["0000:08:00.0"],
  };
  const noMatch: PlanIssue = { code: "no-match", message: 'Rule "usb" matches no device' };
  const repaired = current.replace(/ {4}<hostdev[^]*<\/hostdev>\n/, "");
  const plan = {
    ...vm([drift, noMatch], []),
    currentXml: current,
    desiredXml: current,
    repair: { remove: ["0000:08:00.0"], desiredXml: repaired },
  };
  const text = renderVmPlan(plan, { color: false });
  assertMatch(text, /only the repair after the refusals below will change this VM/);
  const refusals = text.indexOf("[no-match]");
  const repair = text.indexOf("repair removes hostdev 0000:08:00.0 (refusal above)");
  assertEquals([refusals > 0, repair > refusals], [true, true]);
  assertMatch(text.slice(repair), /-\s+<hostdev mode='subsystem' type='pci' managed='yes'>/);
  const whole: Plan = {
    config: "c.yaml",
    host: "h",
    uri: "test:///default",
    vms: [plan],
    errors: [],
    warnings: [],
  };
  assertEquals(
    summaryLine(summarizePlan(whole)),
    "0 VMs to change, 0 hostdevs to add, 0 to remove, 1 VM refused, 1 hostdev to remove from refused VMs",
  );
  // A host-wide refusal (no IOMMU) refuses every VM, each counted once: `apply` skips them all.
  const noIommu = { code: "no-iommu", message: "no IOMMU groups" } as PlanIssue;
  const other = { ...plan, name: "other", errors: [], changed: true };
  const third = { ...plan, name: "third", errors: [], changed: false };
  assertEquals(
    summaryLine(summarizePlan({ ...whole, vms: [plan, other, third], errors: [noIommu] })),
    "0 VMs to change, 0 hostdevs to add, 0 to remove, 3 VMs refused, 1 hostdev to remove from refused VMs",
  );
});

Deno.test("a refused VM's repair that follows a moved card says where to, and counts it", () => {
  // Issue 13 item 4: the repair line says what it does, after the refusal that explains it.
  const at = (bus: string) =>
    `<domain>\n  <name>win11</name>\n  <devices>\n    <hostdev mode='subsystem' type='pci' managed='yes'>\n      <source>\n        <address domain='0x0000' bus='0x${bus}' slot='0x00' function='0x0'/>\n      </source>\n    </hostdev>\n  </devices>\n</domain>\n`;
  const drift: PlanIssue = {
    code: "drift",
    message:
      'Hostdev 0000:08:00.0 of "win11" was recorded as 10de:2684 (rule "gpu") but the address now holds nothing: its card is now at 0000:0c:00.0 (same IDs and serial): the repair follows it there even while the other refusals of "win11" stand, so that the next start cannot hand whatever appears there to the guest',
    vm: "win11",
    rule: "gpu",
    devices: ["0000:08:00.0", "0000:0c:00.0"],
  };
  const noMatch: PlanIssue = { code: "no-match", message: 'Rule "usb" matches no device' };
  const move = {
    from: "0000:08:00.0",
    to: "0000:0c:00.0",
    rule: "gpu",
    evidence: "same IDs and serial",
  };
  const plan = {
    ...vm([drift, noMatch], []),
    name: "win11",
    currentXml: at("08"),
    desiredXml: at("08"),
    repair: { remove: [], move: [move], desiredXml: at("0c") },
  };
  const text = renderVmPlan(plan, { color: false });
  const refusal = text.indexOf("[drift]");
  const line = text.indexOf(
    "repair follows the card of hostdev 0000:08:00.0 to 0000:0c:00.0, same IDs and serial (refusal above)",
  );
  assertEquals([refusal > 0, line > refusal, text.indexOf("[no-match]") > refusal], [
    true,
    true,
    true,
  ]);
  assertMatch(text.slice(line), /\+\s+<address domain='0x0000' bus='0x0c'/);
  const whole: Plan = {
    config: "c.yaml",
    host: "h",
    uri: "test:///default",
    vms: [plan],
    errors: [],
    warnings: [],
  };
  assertEquals(
    summaryLine(summarizePlan(whole)),
    "0 VMs to change, 0 hostdevs to add, 0 to remove, 1 VM refused, 1 hostdev to follow a moved card in refused VMs",
  );
});

Deno.test("a running VM's header says when its changes apply: next power-off, or now with --live", () => {
  const running = { ...vm([], []), active: true };
  const header = (options: { color: false; live?: boolean }) =>
    renderVmPlan(running, options).split("\n")[0];
  assertEquals(
    header({ color: false }),
    "VM router (running: changes apply at the next full power-off)",
  );
  assertEquals(
    header({ color: false, live: true }),
    "VM router (running: --live hot-plugs the changes now; what fails applies at the next full power-off)",
  );
  // A shut-off VM takes its changes at its next start either way.
  assertEquals(
    renderVmPlan(vm([], []), { color: false, live: true }).split("\n")[0],
    "VM router (shut off)",
  );
});

Deno.test("the summary counts what unrefused VMs change, moves included, and names the checked VMs in plan order", () => {
  const moveOf = (from: string, to: string) => ({ from, to, rule: "gpu", evidence: "same IDs" });
  const acs: PlanIssue = { code: "acs-override", message: "ACS override is on" };
  const plan: Plan = {
    config: "c.yaml",
    host: "/sys",
    uri: "test:///default",
    vms: [
      {
        ...vm([], [acs]),
        name: "win11",
        changed: true,
        add: [hostdev("0000:0c:00.0")],
        move: [moveOf("0000:01:00.0", "0000:0b:00.0"), moveOf("0000:01:00.1", "0000:0b:00.1")],
      },
      // Refused: neither its own changes nor its move count; its repair's move does.
      {
        ...vm([refusal], []),
        changed: true,
        add: [hostdev("0000:0e:00.0")],
        move: [moveOf("0000:02:00.0", "0000:0d:00.0")],
        repair: { remove: [], move: [moveOf("0000:02:00.0", "0000:0d:00.0")], desiredXml: "" },
      },
      // Not refused: a repair left on it by hand is no repair of a refused VM.
      {
        ...vm([], []),
        name: "lab",
        repair: {
          remove: ["0000:03:00.0"],
          move: [moveOf("0000:04:00.0", "0000:0f:00.0")],
          desiredXml: "",
        },
      },
    ],
    errors: [],
    warnings: [acs],
  };
  const summary = summarizePlan(plan);
  assertEquals(
    summaryLine(summary),
    "1 VM to change, 1 hostdev to add, 0 to remove, 2 moved, 1 VM refused, 1 hostdev to follow a moved card in refused VMs",
  );
  // The host's warning and win11's, each counted.
  assertEquals(summary.warnings, 2);
  const unchanged: Plan = {
    ...plan,
    unplanned: ["router"],
    vms: [{ ...vm([], []), name: "win11" }, { ...vm([], []), name: "alpha" }],
    warnings: [],
  };
  assertEquals(
    summaryLine(summarizePlan(unchanged)),
    "No changes: win11, alpha match the config; 1 other VM not planned",
  );
});

Deno.test("apply's report counts each VM by its own moves, and its summary only what changed", () => {
  const moveOf = (from: string, to: string) => ({ from, to, rule: "gpu", evidence: "same IDs" });
  const nasMove = moveOf("0000:02:00.0", "0000:0d:00.0");
  const winMoves = [moveOf("0000:01:00.0", "0000:0b:00.0"), moveOf("0000:01:00.1", "0000:0b:00.1")];
  const planned = (name: string, extra: Partial<VmPlan>): VmPlan => ({
    ...vm([], []),
    name,
    changed: true,
    ...extra,
  });
  const plan: Plan = {
    config: "c.yaml",
    host: "/sys",
    uri: "test:///default",
    vms: [
      planned("nas", { move: [nasMove] }),
      planned("win11", { add: [hostdev("0000:0c:00.0")], move: winMoves }),
      planned("router", { add: [hostdev("0000:0e:00.0")], errors: [refusal] }),
      planned("lab", { add: [hostdev("0000:0f:00.0")] }),
      planned("idle", { changed: false }),
    ],
    errors: [],
    warnings: [],
  };
  const outcome = (
    name: string,
    status: VmApplyResult["status"],
    code: VmApplyResult["code"],
    message: string,
    extra: Partial<VmApplyResult> = {},
  ): VmApplyResult => ({
    vm: name,
    status,
    code,
    message,
    added: [],
    removed: [],
    active: false,
    effect: null,
    backup: null,
    pruned: [],
    pruneError: null,
    restored: false,
    live: null,
    definition: null,
    ...extra,
  });
  const report: ApplyReport = {
    uri: "test:///default",
    stateDir: "/tmp/s",
    keepBackups: 10,
    brokeStaleLock: null,
    vms: [
      // Defined, then undone: what it added and the move it made are not counted.
      outcome("nas", "failed", "undone", 'Defined "nas" (1 added, 1 removed), then undone', {
        added: ["0000:0d:00.0"],
        removed: ["0000:02:00.0"],
        backup: "/tmp/s/backups/nas/1.xml",
        restored: true,
      }),
      outcome("win11", "changed", "applied", 'Defined "win11" (1 added, 0 removed, 2 moved)', {
        added: ["0000:0b:00.0", "0000:0b:00.1", "0000:0c:00.0"],
        removed: ["0000:01:00.0", "0000:01:00.1"],
        effect: "next-start",
      }),
      outcome("router", "skipped", "plan-errors", "Refused by the plan"),
      outcome("lab", "skipped", "declined", "Declined"),
      outcome("idle", "unchanged", "no-changes", "No changes"),
    ],
    changed: ["win11"],
    unchanged: ["idle"],
    skipped: ["router", "lab"],
    failed: ["nas"],
    liveFailed: [],
    ok: false,
  };
  assertEquals(renderApplyReport(report, { color: false, plan }).split("\n"), [
    'FAILED nas: Defined "nas" (1 added, 1 removed), then undone',
    "  backup: /tmp/s/backups/nas/1.xml",
    "  the previous definition was restored from the backup",
    'changed win11 (+1 -0 hostdevs, 2 moved): Defined "win11" (1 added, 0 removed, 2 moved); takes effect at the next start',
    "skipped router: Refused by the plan",
    "skipped lab: Declined",
    "unchanged idle: No changes",
    "Changed: win11. Skipped: router, lab. Failed: nas.",
    "",
  ]);
  const json = JSON.parse(applyJson(report, plan));
  assertEquals(json.summary, {
    vmsToChange: 3,
    changed: 1,
    unchanged: 1,
    skipped: 2,
    failed: 1,
    add: 1,
    remove: 0,
    moved: 2,
    refused: 1,
  });
  // Only a changed VM lists the moves it made.
  assertEquals(json.vms.map((v: { move: unknown[] }) => v.move), [[], winMoves, [], [], []]);
  // Fewer hostdevs changed than the plan moved (the host changed before apply): never negative.
  const partial = { ...report.vms[1]!, added: ["0000:0b:00.0"], removed: ["0000:01:00.0"] };
  const line = renderApplyReport({ ...report, vms: [partial] }, { color: false, plan });
  assertMatch(line, /^changed win11 \(\+0 -0 hostdevs, 1 moved\): /);
  // A message quoting a definition (a libvirt error) shows its password as ***, text or JSON.
  const quoted = {
    ...report,
    vms: [{ ...report.vms[0]!, message: "libvirt rejected <graphics passwd='pt-s3crt'/>" }],
  };
  const text = renderApplyReport(quoted, { color: false, plan });
  assertOk(!text.includes("pt-s3crt") && text.includes("passwd='***'"), text);
  const json2 = applyJson(quoted, plan);
  assertOk(!json2.includes("pt-s3crt") && json2.includes("passwd='***'"), json2);
});

Deno.test("renderVmPlan() says a VF follows its moved PF: it has no moved line of its own", () => {
  const uplink = config(
    '  a:\n    devices:\n      - name: uplink\n        match: { vendor_device_id: "8086:10c9" }\n        vf: 1\n',
  );
  const nic = (bus: string) =>
    topologyFromDescription({ devices: sriovNic(bus, 4) }, { source: "sriov-test" });
  const a = domainXml("a", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e0a");
  const first = planWorld({ config: uplink, host: nic("07"), world: dataWorld({ a }) });
  // The card went to another slot: PF 0000:09:00.0, its VFs on bus 09.
  const world = dataWorld({ a: vmOf(first, "a").desiredXml });
  const moved = vmOf(planWorld({ config: uplink, host: nic("09"), world }), "a");
  assertEquals(moved.move, []);
  const text = renderVmPlan(moved, { color: false });
  assertMatch(
    text,
    /\n {2}note \[moved\] VF 1 of "a" \(rule "uplink"\) moved with its physical function from 0000:07:00\.0 to 0000:09:00\.0: the interface follows it, 0000:07:10\.2 becomes 0000:09:10\.2\n/,
  );
});

Deno.test("renderPlan() tells apart the headings of two VMs whose names print alike", () => {
  // A Cyrillic "\u0456" for "i", and a zero-width joiner, which the terminal keeps and shows as
  // nothing: three sections headed "VM win10 (shut off)" read as one VM's.
  const names = ["win10", "w\u0456n10", "win10\u200d", "gentoo"];
  const world = dataWorld(Object.fromEntries(names.map((name, i) => [
    name,
    domainXml(name, `6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e1${i}`),
  ])));
  const plan = planWorld({
    config: config(names.map((name) => `  ${JSON.stringify(name)}: { devices: [] }\n`).join("")),
    host: HOST,
    world,
  });
  const headings = renderPlan(plan, { color: false }).split("\n").filter((l) =>
    l.startsWith("VM ")
  );
  assertEquals(headings, [
    'VM win10 ("win10") (shut off)',
    'VM w\u0456n10 ("w\\u0456n10") (shut off)',
    'VM win10\u200d ("win10\\u200d") (shut off)',
    "VM gentoo (shut off)",
  ]);
});

Deno.test("apply's report tells apart two VMs whose names print alike", () => {
  const result = (vm: string): VmApplyResult => ({
    vm,
    status: "unchanged",
    code: "no-changes",
    message: "No changes",
    added: [],
    removed: [],
    active: false,
    effect: null,
    backup: null,
    pruned: [],
    pruneError: null,
    restored: false,
    live: null,
    definition: null,
  });
  const report: ApplyReport = {
    uri: "test:///default",
    stateDir: "/tmp/s",
    keepBackups: 10,
    brokeStaleLock: null,
    vms: [result("win10"), result("w\u0456n10"), result("gentoo")],
    changed: [],
    unchanged: ["win10", "w\u0456n10", "gentoo"],
    skipped: [],
    failed: [],
    liveFailed: [],
    ok: true,
  };
  const lines = renderApplyReport(report, { color: false }).split("\n");
  assertEquals(lines.slice(0, 3), [
    'unchanged win10 ("win10"): No changes',
    'unchanged w\u0456n10 ("w\\u0456n10"): No changes',
    "unchanged gentoo: No changes",
  ]);
});
