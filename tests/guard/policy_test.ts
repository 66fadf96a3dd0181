// The start guard's policies (`guard: enforce | warn | off` per VM and rule) on a built tree:
// from the config, through the file `apply` records in the state directory, to one hook run.

import { assertEquals, assertMatch, assertOk, assertThrows } from "../helpers/assert.ts";
import { loadFixtureHost, tempHostTree } from "../helpers/hosts.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { runGuard } from "../../lib/guard/run.ts";
import {
  bindRecords,
  ENFORCE,
  guardPolicies,
  type GuardPolicyFile,
  keepStricterRulePolicies,
  policyFor,
  stricterWhileApplying,
} from "../../lib/guard/policy.ts";
import {
  allowNextStart,
  readPolicyFile,
  readRefusalRecords,
  readVmPolicy,
  recordPolicies,
  recordRefusals,
  takeAllowance,
} from "../../lib/guard/state.ts";
import type { GuardRefusal } from "../../lib/guard/check.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { recordCase } from "../../scripts/reliability_report.ts";

// 0b:00.0 holds a 10de:1b06 on this tree, not the recorded 10de:2684 of rule "gpu"; nothing sits
// at 7f:1f.7, which a hand-added hostdev names.
/** The domain allowances are given for in these tests. */
const UUID = "0f3c1a52-7d4e-4b8a-9c61-2e5f8a9b0c11";

const XML = `<domain><name>win11</name><uuid>${UUID}</uuid>
  <metadata><pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">
    <pt:device address="0000:0b:00.0" vendor="10de" device="2684" class="030000" rule="gpu"/>
  </pt:hostdevs></metadata>
  <devices><hostdev mode='subsystem' type='pci' managed='yes'>
    <source><address domain='0x0000' bus='0x0b' slot='0x00' function='0x0'/></source>
  </hostdev><hostdev mode='subsystem' type='pci' managed='yes'>
    <source><address domain='0x0000' bus='0x7f' slot='0x1f' function='0x7'/></source>
  </hostdev></devices></domain>`;

function config(vmGuard: string | null, gpuGuard: string | null) {
  return parseConfig(
    `version: 1\nvms:\n  win11:\n${vmGuard === null ? "" : `    guard: ${vmGuard}\n`}` +
      `    devices:\n      - name: gpu\n        match: { vendor_id: 10de }\n` +
      (gpuGuard === null ? "" : `        guard: ${gpuGuard}\n`),
    { file: "c.yaml" },
  );
}

async function withTree(
  fn: (root: string, state: string) => void | Promise<void>,
  host = loadFixtureHost("x570-aorus-pro-wifi"),
) {
  await using tree = await tempHostTree(host);
  const state = await Deno.makeTempDir({ prefix: "passthrough-guard-policy-" });
  try {
    await fn(tree.dir, `${state}/state`);
  } finally {
    await Deno.remove(state, { recursive: true });
  }
}

/** The X570 tree with its NVMe (01:00.0) holding the host's mounted root. */
function mountedNvmeHost() {
  const host = loadFixtureHost("x570-aorus-pro-wifi");
  host.host_use = [
    { address: "0000:01:00.0", reason: "mounted-filesystem", detail: "/ on nvme0n1p2" },
  ];
  return host;
}

/** win11 holding that NVMe, recorded under rule "disk". */
const DISK_XML = `<domain><name>win11</name><uuid>${UUID}</uuid>
  <metadata><pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">
    <pt:device address="0000:01:00.0" vendor="1cc1" device="5350" class="010800" rule="disk"/>
  </pt:hostdevs></metadata>
  <devices><hostdev mode='subsystem' type='pci' managed='yes'>
    <source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>
  </hostdev></devices></domain>`;

/** One `prepare begin` of win11, given {@link XML} unless told another definition. */
function run(root: string, stateDir: string, xml = XML) {
  return runGuard({
    vm: "win11",
    operation: "prepare",
    subOperation: "begin",
    xml,
    reader: denoFsReader(),
    root,
    live: false,
    stateDir,
  });
}

/** `file` with win11's records in `xml` bound to its rules, as an apply of win11 leaves them. */
function applied(file: GuardPolicyFile, xml = XML): GuardPolicyFile {
  const records = Object.fromEntries(parseDomainXml(xml).records.map((r) => [r.address, r]));
  return bindRecords(file, { previous: null, applied: new Map([["win11", records]]) });
}

/** Each refusal's address and policy, and each line's head. */
function summary(result: Awaited<ReturnType<typeof run>>) {
  return {
    code: result.code,
    refusals: result.refusals.map((r) => [r.address, r.kind, r.policy]),
    heads: result.lines.map((l) => l.replace(/: (hostdev|cannot|the) .*$/, "")),
  };
}

const REFUSE = 'passthrough guard: refusing to start "win11"';
const WARN = 'passthrough guard: starting "win11" despite this (guard: warn)';

Deno.test("policy: without a recorded policy (an install from before policies) the guard enforces", async () => {
  await withTree(async (root, state) => {
    assertEquals(readVmPolicy(state, "win11"), { policy: ENFORCE, problem: null });
    assertEquals(summary(await run(root, state)), {
      code: 1,
      refusals: [["0000:0b:00.0", "replaced", "enforce"], ["0000:7f:1f.7", "missing", "enforce"]],
      heads: [REFUSE, REFUSE],
    });
  });
});

Deno.test("policy: a VM's warn lets the start go on, prints every refusal and records them", async () => {
  await withTree(async (root, state) => {
    recordPolicies(state, guardPolicies(config("warn", null)));
    assertEquals(summary(await run(root, state)), {
      code: 0,
      refusals: [["0000:0b:00.0", "replaced", "warn"], ["0000:7f:1f.7", "missing", "warn"]],
      heads: [WARN, WARN],
    });
    const [record] = readRefusalRecords(state);
    assertEquals(
      [record?.allowed, record?.refusals.map((r) => [r.address, r.policy])],
      [false, [["0000:0b:00.0", "warn"], ["0000:7f:1f.7", "warn"]]],
    );
  });
});

Deno.test("policy: a sysfs tree that is not there refuses the start whatever the policy", async () => {
  await withTree(async (_root, state) => {
    recordPolicies(state, guardPolicies(config("warn", "warn")));
    const gone = await run(`${state}/no-such-tree`, state);
    assertEquals([gone.code, gone.refusals], [1, []]);
    assertMatch(
      gone.lines[0]!,
      /^passthrough guard: refusing to start "win11": cannot read .*\/no-such-tree\/bus\/pci\/devices, so nothing was checked/,
    );
  });
});

Deno.test("policy: a sysfs tree that is a loop of symbolic links refuses the start as a missing one does, whatever the policy", async () => {
  await withTree(async (root, state) => {
    // Where the loop is: the root itself, a directory on the way, the devices' directory.
    const loops = [root, `${root}/bus`, `${root}/bus/pci/devices`];
    for (
      const [policy, allow] of [["enforce", false], ["warn", false], ["enforce", true]] as const
    ) {
      recordPolicies(state, guardPolicies(config(policy, policy)));
      for (const loop of loops) {
        // Moved aside, a link to itself in its place, then put back.
        Deno.renameSync(loop, `${state}.aside`);
        Deno.symlinkSync(loop.slice(loop.lastIndexOf("/") + 1), loop);
        if (allow) allowNextStart(state, "win11", { uuid: UUID });
        // It said "the check failed: Cannot open ...: ELOOP", as a refusal of the domain's.
        const looped = await run(root, state);
        assertEquals([looped.code, looped.lines, looped.refusals], [1, [
          `passthrough guard: refusing to start "win11": cannot read ${root}/bus/pci/devices ` +
          `(a loop of symbolic links at "${loop}"), so nothing was checked; see ` +
          `"passthrough hook status"`,
        ], []], `${policy} ${loop}`);
        // As over a missing tree, the allowance is left for a start that is checked.
        if (allow) assertEquals(takeAllowance(state, "win11", { uuid: UUID }), "allowed");
        Deno.removeSync(loop);
        Deno.renameSync(`${state}.aside`, loop);
      }
    }
    assertEquals(readRefusalRecords(state), []);
  });
});

Deno.test("policy: a passed device whose iommu_group link loops is refused as a loop, not as a group's name", async () => {
  await withTree(async (root, state) => {
    recordPolicies(state, guardPolicies(config("enforce", "enforce")));
    const link = `${root}/bus/pci/devices/0000:01:00.0/iommu_group`;
    Deno.removeSync(link);
    Deno.symlinkSync("iommu_group", link);
    const looped = await run(root, state, DISK_XML);
    assertEquals(looped.code, 1);
    // It said: its iommu_group link names "iommu_group", not an IOMMU group number.
    assertMatch(
      looped.lines.join("\n"),
      /0000:01:00\.0's iommu_group is a loop of symbolic links, not a link to an IOMMU group/,
    );
  });
});

Deno.test("policy: a VM without a PCI device to check starts over a tree that loops, as over one gone", async () => {
  await withTree(async (root, state) => {
    const none = `<domain><name>win11</name><uuid>${UUID}</uuid><devices/></domain>`;
    assertEquals(await run(`${state}/no-such-tree`, state, none), {
      code: 0,
      lines: [],
      refusals: [],
    });
    // It was refused: "the check failed: Cannot open ".../host_use.json": ELOOP", or nothing
    // was checked, over a tree that loops; nothing there is the VM's to check.
    Deno.removeSync(root, { recursive: true });
    Deno.symlinkSync(root.slice(root.lastIndexOf("/") + 1), root);
    assertEquals(await run(root, state, none), { code: 0, lines: [], refusals: [] });
    Deno.removeSync(root);
    Deno.mkdirSync(root);
  });
});

Deno.test("policy: a VM's off checks nothing, records nothing and creates nothing", async () => {
  await withTree(async (root, state) => {
    recordPolicies(state, guardPolicies(config("off", null)));
    assertEquals(await run(root, state), { code: 0, lines: [], refusals: [] });
    assertEquals(readRefusalRecords(state), []);
    assertThrows(() => Deno.statSync(`${state}/guard/refused`), Deno.errors.NotFound);
  });
});

Deno.test("policy: a rule's off drops its refusals only; the VM's policy judges hand-added ones", async () => {
  await withTree(async (root, state) => {
    recordPolicies(state, applied(guardPolicies(config(null, "off"))));
    assertEquals(summary(await run(root, state)), {
      code: 1,
      refusals: [["0000:7f:1f.7", "missing", "enforce"]],
      heads: [REFUSE],
    });
  });
});

Deno.test("policy: a rule's warn under an enforcing VM: its line warns, the hand-added one refuses", async () => {
  await withTree(async (root, state) => {
    recordPolicies(state, applied(guardPolicies(config(null, "warn"))));
    assertEquals(summary(await run(root, state)), {
      code: 1,
      refusals: [["0000:0b:00.0", "replaced", "warn"], ["0000:7f:1f.7", "missing", "enforce"]],
      heads: [WARN, REFUSE],
    });
  });
});

Deno.test("policy: warn, an allowance or a rule's off never lets a start take a device the host needs", async () => {
  // The recorded GPU's address now holds another device, and one the host uses: a rule's policy
  // never speaks for the host's device, so the stricter of the rule's and the VM's judges it.
  const host = loadFixtureHost("x570-aorus-pro-wifi");
  host.host_use = [
    { address: "0000:0b:00.0", reason: "mounted-filesystem", detail: "/ on nvme0n1p2" },
  ];
  await using tree = await tempHostTree(host);
  const state = await Deno.makeTempDir({ prefix: "passthrough-guard-replaced-" });
  try {
    const judged = async (vmGuard: string | null, gpuGuard: string | null) => {
      recordPolicies(`${state}/state`, applied(guardPolicies(config(vmGuard, gpuGuard))));
      const result = await run(tree.dir, `${state}/state`);
      const gpu = result.refusals.find((r) => r.address === "0000:0b:00.0");
      return [result.code, gpu?.kind, gpu?.policy];
    };
    assertEquals(await judged(null, "off"), [1, "replaced", "enforce"]);
    assertEquals(await judged(null, "warn"), [1, "replaced", "enforce"]);
    // warn never lets the host's disk go, whoever's policy it is.
    assertEquals(await judged("warn", "off"), [1, "replaced", "enforce"]);
    assertEquals(await judged("warn", null), [1, "replaced", "enforce"]);
    assertEquals(await judged("off", "warn"), [1, "replaced", "enforce"]);
    assertEquals(await judged("off", "enforce"), [1, "replaced", "enforce"]);
    // Both off: the guard was turned off for this VM, and checks nothing.
    assertEquals(await judged("off", "off"), [0, undefined, undefined]);
    // Nor does an allowance: it is used up, and says why it did not help.
    recordPolicies(`${state}/state`, guardPolicies(config(null, null)));
    allowNextStart(`${state}/state`, "win11", { uuid: UUID });
    const allowed = await run(tree.dir, `${state}/state`);
    assertEquals(allowed.code, 1);
    assertMatch(
      allowed.lines.join("\n"),
      /^passthrough guard: refusing to start "win11": hostdev 0000:0b:00\.0/m,
    );
    assertMatch(
      allowed.lines.at(-1)!,
      // The device at the recorded address is another one now: allow_host_critical would not
      // let it either (it speaks for the recorded device), so the line does not offer it.
      /^passthrough guard: "passthrough guard allow" does not let "win11" take a device the host needs \(nothing does: follow the refusal's fix \(passthrough plan --vm win11\)\); the allowance is used up$/,
    );
    assertEquals(takeAllowance(`${state}/state`, "win11", { uuid: UUID }), "none");
    // Replaced by a device the host does not need: the rule's policy alone, as before.
    host.host_use = [];
    await using free = await tempHostTree(host);
    recordPolicies(`${state}/state`, applied(guardPolicies(config(null, "off"))));
    const result = await run(free.dir, `${state}/state`);
    assertEquals(result.refusals.map((r) => r.address), ["0000:7f:1f.7"]);
  } finally {
    await Deno.remove(state, { recursive: true });
  }
});

Deno.test("policy: a rule's off never lets the host's device go either when it is the recorded one", async () => {
  // The NVMe recorded under rule "disk" is still there, and the host has since mounted its root
  // on it: a rule's off (or warn) speaks for checking the identity, not for taking the host's disk.
  const diskConfig = (vmGuard: string | null, diskGuard: string | null, allow = false) =>
    parseConfig(
      `version: 1\nvms:\n  win11:\n${vmGuard === null ? "" : `    guard: ${vmGuard}\n`}` +
        "    devices:\n      - name: disk\n        match: { vendor_id: 1cc1 }\n" +
        (diskGuard === null ? "" : `        guard: ${diskGuard}\n`) +
        (allow ? "        allow_host_critical: true\n" : ""),
      { file: "c.yaml" },
    );
  await withTree(async (root, state) => {
    const judged = async (vmGuard: string | null, diskGuard: string | null, allow = false) => {
      recordPolicies(
        state,
        applied(guardPolicies(diskConfig(vmGuard, diskGuard, allow)), DISK_XML),
      );
      const result = await run(root, state, DISK_XML);
      return [result.code, ...result.refusals.map((r) => `${r.kind} ${r.policy}`)];
    };
    assertEquals(await judged(null, null), [1, "host-needs enforce"]);
    assertEquals(await judged(null, "warn"), [1, "host-needs enforce"]);
    assertEquals(await judged(null, "off"), [1, "host-needs enforce"]);
    assertEquals(await judged("warn", "off"), [1, "host-needs enforce"]);
    // What lets it: allow_host_critical on the rule, or the guard turned off for the whole VM.
    assertEquals(await judged(null, "off", true), [0]);
    assertEquals(await judged("off", "off"), [0]);
    assertEquals(await judged("off", null), [0]);
  }, mountedNvmeHost());
});

Deno.test("policy: a file from before records were bound lifts nothing until the VM is applied, and its refusal says to apply it", async () => {
  // What an apply of an earlier version wrote: the rule's allow_host_critical, no records.
  const config = parseConfig(
    "version: 1\nvms:\n  win11:\n    devices:\n      - name: disk\n" +
      "        match: { vendor_id: 1cc1 }\n        allow_host_critical: true\n",
    { file: "c.yaml" },
  );
  await withTree(async (root, state) => {
    recordPolicies(state, guardPolicies(config));
    const refused = await run(root, state, DISK_XML);
    assertEquals(refused.code, 1);
    // `plan --vm win11` shows no change for it: only an apply binds its record.
    assertMatch(
      refused.lines.join("\n"),
      /rule "disk"'s allow_host_critical does not count here: .*last applied by a passthrough that listed no records\); fix: passthrough apply --vm win11$/,
    );
    recordPolicies(state, applied(guardPolicies(config), DISK_XML));
    assertEquals((await run(root, state, DISK_XML)).code, 0);
  }, mountedNvmeHost());
});

Deno.test("policy: a group mate bound for a VM is not offered the allow_host_critical its rule already has where it does not count", async () => {
  // The SATA controller on vfio-pci for some VM, merged into the NVMe's group 17; the rule says
  // allow_host_critical, but no apply bound win11's record to it.
  const host = loadFixtureHost("x570-aorus-pro-wifi");
  const sata = host.devices.find((d) => d.bdf === "0000:04:00.0")!;
  Object.assign(sata, { group: 17, driver: "vfio-pci" });
  const config = parseConfig(
    "version: 1\nvms:\n  win11:\n    devices:\n      - name: disk\n" +
      "        match: { vendor_id: 1cc1 }\n        allow_host_critical: true\n",
    { file: "c.yaml" },
  );
  await withTree(async (root, state) => {
    recordPolicies(state, guardPolicies(config));
    const refused = await run(root, state, DISK_XML);
    assertEquals(refused.refusals.map((r) => [r.kind, r.group?.forVm]), [["host-needs", true]]);
    const line = refused.lines.join("\n");
    assertMatch(
      line,
      /binds to vfio-pci for a VM: .*names that VM\); rule "disk"'s allow_host_critical does not count here/,
    );
    assertEquals(line.includes('if none does, "allow_host_critical: true" on rule "disk"'), false);
    // Nor does an allowance's line send the user to an apply alone: plan refuses the split if
    // another VM passes the member, so it says what the refusal says.
    allowNextStart(state, "win11", { uuid: UUID });
    assertMatch(
      (await run(root, state, DISK_XML)).lines.at(-1)!,
      /take a device the host needs \(if another VM passes the member, only giving the group's devices to one of the two does \(passthrough plan --vm win11 names that VM\); if none does, "passthrough apply --vm win11", recording it under a rule with "allow_host_critical: true", does\); the allowance is used up$/,
    );
    recordPolicies(state, applied(guardPolicies(config), DISK_XML));
    assertEquals((await run(root, state, DISK_XML)).code, 0);
  }, host);
});

Deno.test("policy: a platform function on vfio-pci in a passed device's group is one the host needs, not one bound for a VM", async () => {
  // The chipset's SMBus controller and ISA/LPC bridge merged into the NVMe's group 17 on vfio-pci:
  // the host cannot run without them whoever bound them, as plan judges another VM's member.
  for (
    const [bdf, what] of [["0000:00:14.0", "SMBus controller"], ["0000:00:14.3", "ISA/LPC bridge"]]
  ) {
    const host = loadFixtureHost("x570-aorus-pro-wifi");
    host.host_use = [];
    Object.assign(host.devices.find((d) => d.bdf === bdf)!, { group: 17, driver: "vfio-pci" });
    const config = parseConfig(
      "version: 1\nvms:\n  win11:\n    devices:\n      - name: disk\n" +
        "        match: { vendor_id: 1cc1 }\n",
      { file: "c.yaml" },
    );
    await withTree(async (root, state) => {
      recordPolicies(state, applied(guardPolicies(config), DISK_XML));
      const refused = await run(root, state, DISK_XML);
      assertEquals(refused.refusals.map((r) => [r.kind, r.group?.forVm]), [[
        "host-needs",
        undefined,
      ]]);
      const line = refused.lines.join("\n");
      assertMatch(
        line,
        new RegExp(`; the host needs it: ${what}: VFIO hands the guest the whole group`),
      );
      assertEquals(line.includes("does not use"), false, line);
    }, host);
  }
});

Deno.test("policy: a VM dropped from the config keeps its warn, never its off or allow_host_critical, for the host's device", async () => {
  // win11 had `guard: off`, or `allow_host_critical: true` on rule "disk"; the config now names
  // no VM, so the plan keeps its devices (vm-not-in-config) and apply keeps its policies: the
  // host has since mounted its root on the NVMe, and no written line gives it away any more.
  const empty = parseConfig("version: 1\nvms: {}\n", { file: "c.yaml" });
  await withTree(async (root, state) => {
    const judged = async (vmLine: string, ruleLine = "") => {
      const config = parseConfig(
        `version: 1\nvms:\n  win11:\n${vmLine}    devices:\n` +
          `      - name: disk\n        match: { vendor_id: 1cc1 }\n${ruleLine}`,
        { file: "c.yaml" },
      );
      recordPolicies(state, guardPolicies(config));
      const previous = readPolicyFile(state).file;
      recordPolicies(
        state,
        keepStricterRulePolicies(guardPolicies(empty), {
          config: empty,
          previous,
          settled: new Set(),
          kept: new Set(["win11"]),
        }),
      );
      const { policy } = readVmPolicy(state, "win11");
      const result = await run(root, state, DISK_XML);
      return [
        policy.guard,
        policy.allowHostCritical ?? [],
        result.code,
        ...result.refusals.map((r) => `${r.kind} ${r.policy}`),
      ];
    };
    assertEquals(await judged("    guard: off\n"), ["warn", [], 1, "host-needs enforce"]);
    assertEquals(await judged("", "        allow_host_critical: true\n"), [
      "enforce",
      [],
      1,
      "host-needs enforce",
    ]);
    // Its warn stays: a changed device would warn and start, as before (the host's never does).
    assertEquals(await judged("    guard: warn\n"), ["warn", [], 1, "host-needs enforce"]);
  }, mountedNvmeHost());
});

Deno.test("policy: a rule's enforce overrides its VM's off, and an allowance lets it go once", async () => {
  await withTree(async (root, state) => {
    recordPolicies(state, guardPolicies(config("off", "enforce")));
    assertEquals(summary(await run(root, state)), {
      code: 1,
      refusals: [["0000:0b:00.0", "replaced", "enforce"]],
      heads: [REFUSE],
    });
    allowNextStart(state, "win11", { uuid: UUID });
    const allowed = await run(root, state);
    assertEquals(allowed.code, 0);
    assertMatch(allowed.lines[0]!, /once despite this \(passthrough guard allow\)/);
    assertEquals(readRefusalRecords(state)[0]?.allowed, true);
  });
});

Deno.test("policy: an allowance is consumed by the next start even when it only warned", async () => {
  await withTree(async (root, state) => {
    recordPolicies(state, guardPolicies(config("warn", null)));
    allowNextStart(state, "win11", { uuid: UUID });
    const result = await run(root, state);
    // Nothing was enforced, so the allowance let nothing through; it was still the next start.
    assertEquals([result.code, readRefusalRecords(state)[0]?.allowed], [0, false]);
    assertEquals(takeAllowance(state, "win11", { uuid: UUID }), "none");
  });
});

Deno.test("policy: an allowance written while a start takes the old one stays for the next start", () => {
  const state = Deno.makeTempDirSync({ prefix: "passthrough-allow-race-" });
  const rename = Deno.renameSync;
  try {
    allowNextStart(state, "win11", { uuid: UUID, now: new Date(Date.now() - 1000) });
    // "passthrough guard allow win11" runs again just as the start has claimed the old one.
    let written = false;
    Deno.renameSync = (from, to) => {
      rename(from, to);
      if (!written && String(to).includes(".taken-")) {
        written = true;
        allowNextStart(state, "win11", { uuid: UUID });
      }
    };
    assertEquals(takeAllowance(state, "win11", { uuid: UUID }), "allowed");
    Deno.renameSync = rename;
    assertEquals(written, true);
    // The new one was not removed with the old: the next start has it.
    assertEquals(takeAllowance(state, "win11", { uuid: UUID }), "allowed");
    assertEquals(takeAllowance(state, "win11", { uuid: UUID }), "none");
    assertEquals([...Deno.readDirSync(`${state}/guard/allow`)], []);
    recordCase({
      area: "concurrency",
      name: "guard allow writes a new allowance while a start takes the old one",
      count: 1,
      outcome: "the start takes the old one; the new one stays for the next start",
      test: "tests/guard/policy_test.ts",
    });
  } finally {
    Deno.renameSync = rename;
    Deno.removeSync(state, { recursive: true });
  }
});

Deno.test("policy: an allowance another start of the VM removes as a leftover once claimed is still taken", () => {
  const state = Deno.makeTempDirSync({ prefix: "passthrough-allow-claim-race-" });
  const rename = Deno.renameSync;
  try {
    allowNextStart(state, "win11", { uuid: UUID });
    // A start of win11 by a second daemon, at the same moment, removes the claim as a leftover of
    // a killed start just after this one made it.
    let removed = false;
    Deno.renameSync = (from, to) => {
      rename(from, to);
      if (String(to).includes(".taken-")) {
        Deno.removeSync(to);
        removed = true;
      }
    };
    assertEquals(takeAllowance(state, "win11", { uuid: UUID }), "allowed");
    Deno.renameSync = rename;
    assertEquals(removed, true);
    assertEquals(takeAllowance(state, "win11", { uuid: UUID }), "none");
    recordCase({
      area: "concurrency",
      name: "two starts of one VM at once, one allowance",
      count: 1,
      outcome: "one start takes it even when the other removes its claim as a leftover",
      test: "tests/guard/policy_test.ts",
    });
  } finally {
    Deno.renameSync = rename;
    Deno.removeSync(state, { recursive: true });
  }
});

Deno.test("policy: a start removes no allowance of another VM whose name begins as a claim of its own", () => {
  const state = Deno.makeTempDirSync({ prefix: "passthrough-allow-claim-name-" });
  try {
    // Its file, win11.json.taken-7.json, starts as a claim of win11's would, but names no process.
    allowNextStart(state, "win11.json.taken-7", { uuid: UUID });
    assertEquals(takeAllowance(state, "win11", { uuid: UUID, alive: () => false }), "none");
    assertEquals(takeAllowance(state, "win11.json.taken-7", { uuid: UUID }), "allowed");
  } finally {
    Deno.removeSync(state, { recursive: true });
  }
});

Deno.test("policy: a killed start's claim is left where others may write to the allowances", () => {
  const state = Deno.makeTempDirSync({ prefix: "passthrough-allow-claim-open-" });
  try {
    allowNextStart(state, "win11", { uuid: UUID });
    const claim = `${state}/guard/allow/win11.json.taken-7`;
    Deno.renameSync(`${state}/guard/allow/win11.json`, claim);
    Deno.chmodSync(`${state}/guard/allow`, 0o777);
    // Whatever the start makes of the directory, it removes nothing from one it does not trust.
    try {
      takeAllowance(state, "win11", { uuid: UUID, alive: () => false });
    } catch {
      // Refused as untrusted: the hook says so.
    }
    assertEquals(Deno.statSync(claim).isFile, true);
  } finally {
    Deno.removeSync(state, { recursive: true });
  }
});

Deno.test("policy: a refusal record another start of the VM removes or clears at once is no error", () => {
  const state = Deno.makeTempDirSync({ prefix: "passthrough-record-race-" });
  const [rename, remove] = [Deno.renameSync, Deno.removeSync];
  const refusal = {
    vm: "win11",
    kind: "changed",
    address: "0000:0b:00.0",
    reason: "hostdev 0000:0b:00.0 holds 10de:1b06",
    fix: "passthrough plan --vm win11",
    hostNeeds: null,
    recorded: null,
  } as unknown as GuardRefusal;
  try {
    // A start of win11 by a second daemon, at the same moment, removes this one's temporary
    // record as a killed start's leftover, then (its start let through) the record itself.
    let taken = 0;
    Deno.renameSync = (from, to) => {
      if (taken++ === 0 && String(from).includes("/guard/refused/.")) remove(from);
      rename(from, to);
    };
    recordRefusals(state, "win11", [refusal], { allowed: false });
    Deno.renameSync = rename;
    assertEquals([taken, readRefusalRecords(state).map((r) => r.vm)], [2, ["win11"]]);
    Deno.removeSync = (path, options) => {
      if (String(path).endsWith("/guard/refused/win11.json")) remove(path);
      remove(path, options);
    };
    assertEquals(recordRefusals(state, "win11", [], { allowed: false }), null);
    Deno.removeSync = remove;
    assertEquals(readRefusalRecords(state), []);
    recordCase({
      area: "concurrency",
      name: "two starts of one VM at once record or clear its refusal",
      count: 1,
      outcome: "no error; the record of one of them stands",
      test: "tests/guard/policy_test.ts",
    });
  } finally {
    [Deno.renameSync, Deno.removeSync] = [rename, remove];
    Deno.removeSync(state, { recursive: true });
  }
});

Deno.test("policy: a damaged or foreign policy file enforces, and says so with the refusals", async () => {
  await withTree(async (root, state) => {
    recordPolicies(state, guardPolicies(config("off", null)));
    const path = `${state}/guard/policy.json`;
    const GPU = '{"address":"0000:0b:00.0","vendorId":"10de","deviceId":"2684",' +
      '"classCode":"030000","rule":"gpu"}';
    const noRule = GPU.replace(',"rule":"gpu"', "");
    // The same file with a well-formed record is read: the cases below fail on their damage.
    Deno.writeTextFileSync(
      path,
      `{"version":1,"config":"c","vms":{"win11":{"guard":"off","rules":{},"devices":{"0000:0b:00.0":${GPU}}}}}`,
    );
    assertEquals(readPolicyFile(state).problem, null);
    assertEquals(readVmPolicy(state, "win11").policy.guard, "off");
    for (
      const text of [
        "{",
        '{"version":1,"config":"c","vms":{"win11":{"guard":"of","rules":{}}}}',
        // A misspelt rule policy, and a file a later version wrote: neither is guessed at.
        '{"version":1,"config":"c","vms":{"win11":{"guard":"off","rules":{"gpu":"of"}}}}',
        '{"version":2,"config":"c","vms":{"win11":{"guard":"off","rules":{}}}}',
        // Each field of the wrong type.
        '{"version":1,"config":5,"vms":{"win11":{"guard":"off","rules":{}}}}',
        '{"version":1,"config":"c","vms":null}',
        '{"version":1,"config":"c","vms":{"win11":{"guard":"off","rules":null}}}',
        '{"version":1,"config":"c","vms":{"win11":{"guard":"off","rules":{},"allowHostCritical":"gpu"}}}',
        '{"version":1,"config":"c","vms":{"win11":{"guard":"off","rules":{},"allowHostCritical":[1]}}}',
        // The records apply bound to the rules' policies, of the wrong shape: a list, a record
        // that is no object, one under an address not canonical, one without its rule.
        ...["[]", '{"0000:0b:00.0":null}', `{"0b:00.0":${GPU}}`, `{"0000:0b:00.0":${noRule}}`].map(
          (devices) =>
            `{"version":1,"config":"c","vms":{"win11":{"guard":"off","rules":{},"devices":${devices}}}}`,
        ),
      ]
    ) {
      Deno.writeTextFileSync(path, text);
      const result = await run(root, state);
      assertEquals(result.code, 1, text);
      assertMatch(
        result.lines[0]!,
        /^passthrough guard: cannot read the guard policies in .*policy\.json \(not a passthrough policy file; run passthrough apply again\): enforcing$/,
      );
      assertEquals(result.refusals.length, 2);
    }
  });
});

Deno.test("policy: another VM's policy does not apply, and names like __proto__ stay keys", async () => {
  await withTree(async (root, state) => {
    const other = parseConfig(
      "version: 1\nvms:\n  __proto__:\n    guard: off\n    devices: []\n" +
        "  win12:\n    guard: off\n    devices:\n" +
        "      - { name: __proto__, match: { class: usb }, guard: enforce }\n",
      { file: "c.yaml" },
    );
    const policies = guardPolicies(other);
    assertEquals(Object.keys(policies.vms), ["__proto__", "win12"]);
    recordPolicies(state, policies);
    assertEquals(readVmPolicy(state, "__proto__").policy.guard, "off");
    // A VM the file does not name enforces, whatever its name.
    assertEquals(readVmPolicy(state, "toString").policy, ENFORCE);
    const win12 = readVmPolicy(state, "win12").policy;
    assertEquals([policyFor(win12, "__proto__"), policyFor(win12, "usb"), policyFor(win12, null)], [
      "enforce",
      "off",
      "off",
    ]);
    // A rule the file does not name takes the VM's policy, whatever its name: never a property
    // every object inherits, which no check would take for enforce.
    assertEquals(policyFor(win12, "constructor"), "off");
    assertEquals(policyFor(ENFORCE, "toString"), "enforce");
    assertEquals((await run(root, state)).code, 1);
  });
});

// On the X570 tree with its NVMe (01:00.0) mounted and its Intel NIC (06:00.0) routing: the
// NVMe recorded under rule "disk", a card recorded under "disk" that is not there any more
// (0b:00.0 holds a 10de:1b06), and the NIC added by hand.
const CRITICAL = `<domain><name>win11</name><uuid>${UUID}</uuid>
  <metadata><pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">
    <pt:device address="0000:01:00.0" vendor="1cc1" device="5350" class="010800" rule="disk"/>
    <pt:device address="0000:0b:00.0" vendor="10de" device="2684" class="030000" rule="disk"/>
  </pt:hostdevs></metadata>
  <devices>${
  ["01", "0b", "06"].map((bus) =>
    `<hostdev mode='subsystem' type='pci' managed='yes'>
    <source><address domain='0x0000' bus='0x${bus}' slot='0x00' function='0x0'/></source>
  </hostdev>`
  ).join("")
}</devices></domain>`;

function criticalConfig(allow: boolean) {
  return parseConfig(
    "version: 1\nvms:\n  win11:\n    devices:\n      - name: disk\n" +
      `        match: { vendor_id: 1cc1 }\n        allow_host_critical: ${allow}\n`,
    { file: "c.yaml" },
  );
}

Deno.test("policy: allow_host_critical lifts only the host-needs refusal of a device recorded under the rule", async () => {
  const host = loadFixtureHost("x570-aorus-pro-wifi");
  host.host_use = [
    { address: "0000:01:00.0", reason: "mounted-filesystem", detail: "/ on nvme0n1p2" },
    { address: "0000:06:00.0", reason: "default-route", detail: "default route via enp6s0" },
  ];
  await using tree = await tempHostTree(host);
  const state = await Deno.makeTempDir({ prefix: "passthrough-guard-critical-" });
  const start = (xml: string) =>
    runGuard({
      vm: "win11",
      operation: "prepare",
      subOperation: "begin",
      xml,
      reader: denoFsReader(),
      root: tree.dir,
      live: false,
      stateDir: `${state}/state`,
    });
  const kinds = (r: Awaited<ReturnType<typeof start>>) =>
    [r.code, r.refusals.map((x) => [x.address, x.kind])] as const;
  try {
    // Without the override every one is refused, the recorded NVMe too.
    assertEquals(
      recordPolicies(`${state}/state`, guardPolicies(criticalConfig(false))),
      "unchanged",
    );
    assertEquals(kinds(await start(CRITICAL)), [1, [
      ["0000:01:00.0", "host-needs"],
      ["0000:06:00.0", "host-needs"],
      ["0000:0b:00.0", "replaced"],
    ]]);
    // apply records the rule; the recorded NVMe starts, the replaced card and the hand-added NIC
    // are refused still.
    const policies = guardPolicies(criticalConfig(true));
    assertEquals(policies.vms, {
      win11: { guard: "enforce", rules: {}, allowHostCritical: ["disk"] },
    });
    assertEquals(recordPolicies(`${state}/state`, applied(policies, CRITICAL)), "written");
    assertEquals(readVmPolicy(`${state}/state`, "win11").policy.allowHostCritical, ["disk"]);
    assertEquals(kinds(await start(CRITICAL)), [1, [
      ["0000:06:00.0", "host-needs"],
      ["0000:0b:00.0", "replaced"],
    ]]);
    assertEquals(readRefusalRecords(`${state}/state`).length, 1);
    // The NVMe alone: the start goes on, says nothing, and the earlier refusal is forgotten.
    const alone = CRITICAL.replace(
      /<hostdev(?:(?!<\/hostdev>)[\s\S])*bus='0x0[b6]'[\s\S]*?<\/hostdev>/g,
      "",
    );
    assertEquals(await start(alone), { code: 0, lines: [], refusals: [] });
    assertEquals(readRefusalRecords(`${state}/state`), []);
    // A file whose list is damaged is no policy file: everything enforces again.
    const path = `${state}/state/guard/policy.json`;
    const text = Deno.readTextFileSync(path);
    Deno.writeTextFileSync(
      path,
      text.replace(/"allowHostCritical": \[[^\]]*\]/, '"allowHostCritical": "disk"'),
    );
    assertEquals(readVmPolicy(`${state}/state`, "win11").policy, ENFORCE);
    assertEquals((await start(alone)).code, 1);
  } finally {
    await Deno.remove(state, { recursive: true });
  }
});

Deno.test("recordPolicies() writes only non-default policies, and removes the file when none is left", async () => {
  await withTree((_root, state) => {
    assertEquals(recordPolicies(state, guardPolicies(config(null, null))), "unchanged");
    // An all-enforce config creates nothing, not even the state directory.
    assertThrows(() => Deno.statSync(state), Deno.errors.NotFound);
    assertEquals(recordPolicies(state, guardPolicies(config("warn", "warn"))), "written");
    assertEquals(JSON.parse(Deno.readTextFileSync(`${state}/guard/policy.json`)), {
      version: 1,
      config: "c.yaml",
      vms: { win11: { guard: "warn", rules: {} } },
    });
    assertEquals(Deno.statSync(`${state}/guard/policy.json`).mode! & 0o777, 0o600);
    assertEquals(recordPolicies(state, guardPolicies(config("warn", "warn"))), "unchanged");
    assertEquals(recordPolicies(state, guardPolicies(config(null, "off"))), "written");
    assertEquals(readVmPolicy(state, "win11").policy, { guard: "enforce", rules: { gpu: "off" } });
    assertEquals(recordPolicies(state, guardPolicies(config(null, null))), "removed");
    assertThrows(() => Deno.statSync(`${state}/guard/policy.json`), Deno.errors.NotFound);
  });
});

Deno.test("policy: a record of a device in a VMD domain (10000:e1:00.0) keeps the file readable", async () => {
  await withTree((_root, state) => {
    // Intel VMD puts the drives behind it in a PCI domain of five hex digits.
    const vmd = XML.replace('address="0000:0b:00.0"', 'address="10000:e1:00.0"');
    assertEquals(
      recordPolicies(state, applied(guardPolicies(config("warn", "off")), vmd)),
      "written",
    );
    assertEquals(readPolicyFile(state).problem, null);
    assertEquals(readVmPolicy(state, "win11").policy.guard, "warn");
    assertEquals(Object.keys(readVmPolicy(state, "win11").policy.devices ?? {}), ["10000:e1:00.0"]);
  });
});

Deno.test("guardPolicies() takes a VM whose config object has no guard (a library caller's) as enforce", () => {
  // parseConfig always fills in the VM's guard; a config built in code may leave it out.
  const parsed = config(null, "warn");
  const built = { ...parsed, vms: parsed.vms.map(({ guard: _guard, ...vm }) => vm) };
  assertEquals(guardPolicies(built).vms, { win11: { guard: "enforce", rules: { gpu: "warn" } } });
});

Deno.test("the guard's state files: a FIFO, a link to /dev/zero or a huge file is refused, never read", async () => {
  await withTree(async (root, state) => {
    allowNextStart(state, "win11", { uuid: UUID });
    recordPolicies(state, guardPolicies(config("warn", null)));
    const allowance = `${state}/guard/allow/win11.json`;
    const policy = `${state}/guard/policy.json`;
    const refused = `${state}/guard/refused/win11.json`;
    const plants: [string, (path: string) => void][] = [
      ["a FIFO", (path) => new Deno.Command("mkfifo", { args: [path] }).outputSync()],
      ["a link to /dev/zero", (path) => Deno.symlinkSync("/dev/zero", path)],
      ["a 1 GiB file", (path) => {
        Deno.writeTextFileSync(path, "{}");
        Deno.truncateSync(path, 1024 ** 3);
      }],
    ];
    const clear = (path: string) => Deno.removeSync(path);
    const clearIfThere = (path: string) => {
      try {
        clear(path);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
    };
    for (const [what, plant] of plants) {
      // The start enforces, saying what fixes it; apply replaces it without reading it (never
      // blocking or reading without end), or removes it when there is nothing to record.
      clearIfThere(policy);
      plant(policy);
      assertMatch(
        readPolicyFile(state).problem ?? "",
        new RegExp(`Refusing "${policy}": it .*; run passthrough apply again\\): enforcing$`),
        what,
      );
      assertEquals(recordPolicies(state, guardPolicies(config("warn", null))), "written", what);
      assertEquals(readVmPolicy(state, "win11").policy.guard, "warn", what);
      clear(policy);
      plant(policy);
      assertEquals(recordPolicies(state, guardPolicies(config(null, null))), "removed", what);
      assertThrows(() => Deno.lstatSync(policy), Deno.errors.NotFound);
      // The start: the allowance cannot be read, so it does not count, and the check says so.
      clearIfThere(allowance);
      plant(allowance);
      assertThrows(
        () => takeAllowance(state, "win11", { uuid: UUID }),
        /Refusing ".*win11\.json": it /,
        what,
      );
      // Taken (it counted for no start): planted again for the check.
      assertEquals(Deno.readDirSync(`${state}/guard/allow`).toArray(), [], what);
      plant(allowance);
      const result = await run(root, state);
      assertEquals(result.code, 1, what);
      assertOk(
        result.lines.some((l) =>
          l.startsWith("passthrough guard: cannot use its allowance (it does not count)")
        ),
      );
      // The start took it too: the next one does not meet it again.
      assertEquals(Deno.readDirSync(`${state}/guard/allow`).toArray(), [], what);
      // plan's reading of the refusals skips what it cannot read.
      clearIfThere(refused);
      plant(refused);
      assertEquals(readRefusalRecords(state), [], what);
      clear(refused);
    }
    recordCase({
      area: "fault",
      name:
        "guard policy, allowance and refusal files planted as a FIFO, a symlink to /dev/zero, a 1 GiB file",
      count: 9,
      outcome:
        "refused by name without reading; apply replaces the policy file unread; the start enforced, saying why",
      test: "tests/guard/policy_test.ts",
    });
  });
});

Deno.test("policy: a directory where the policy file belongs: the start enforces and apply refuses, both saying to remove it", async () => {
  await withTree(async (root, state) => {
    recordPolicies(state, guardPolicies(config("off", null)));
    const policy = `${state}/guard/policy.json`;
    Deno.removeSync(policy);
    Deno.mkdirSync(`${policy}/x`, { recursive: true });
    const fix = "; remove that directory, then run passthrough apply again";
    const result = await run(root, state);
    assertEquals(result.code, 1);
    assertEquals(
      result.lines[0],
      `passthrough guard: cannot read the guard policies in ${policy} (Refusing "${policy}": it is ` +
        `a directory, and passthrough writes only regular files there${fix}): enforcing`,
    );
    assertThrows(
      () => recordPolicies(state, guardPolicies(config("off", null))),
      Error,
      `Refusing "${policy}": it is a directory, and passthrough writes only regular files there${fix}`,
    );
    Deno.removeSync(policy, { recursive: true });
    assertEquals(recordPolicies(state, guardPolicies(config("off", null))), "written");
    assertEquals((await run(root, state)).code, 0);
  });
});

Deno.test("policy: one in a guard directory that is a link or writable by others is not trusted", async () => {
  await withTree(async (root, state) => {
    // guard: off for the VM: the start goes on unchecked, as long as the policy is trusted.
    recordPolicies(state, guardPolicies(config("off", null)));
    assertEquals((await run(root, state)).code, 0);
    const text = Deno.readTextFileSync(`${state}/guard/policy.json`);
    const elsewhere = `${state}-elsewhere`;
    Deno.mkdirSync(elsewhere);
    Deno.chmodSync(elsewhere, 0o777);
    Deno.writeTextFileSync(`${elsewhere}/policy.json`, text, { mode: 0o600 });
    Deno.removeSync(`${state}/guard`, { recursive: true });
    Deno.symlinkSync(elsewhere, `${state}/guard`);
    const linked = await run(root, state);
    assertEquals(linked.code, 1);
    assertMatch(
      linked.lines[0]!,
      /^passthrough guard: cannot read the guard policies in .*: enforcing$/,
    );
    // A real directory, but one others may write to.
    Deno.removeSync(`${state}/guard`);
    Deno.mkdirSync(`${state}/guard`);
    Deno.chmodSync(`${state}/guard`, 0o777);
    Deno.writeTextFileSync(`${state}/guard/policy.json`, text, { mode: 0o600 });
    const open = await run(root, state);
    assertEquals(open.code, 1);
    assertMatch(
      open.lines[0]!,
      /^passthrough guard: cannot read the guard policies in .*: enforcing$/,
    );
    // Made private again, it counts again.
    Deno.chmodSync(`${state}/guard`, 0o700);
    assertEquals((await run(root, state)).code, 0);
    Deno.removeSync(elsewhere, { recursive: true });
  });
});

Deno.test("policy: what the check cannot read is refused under warn, off rules and an allowance", async () => {
  // A record that cannot be read: what its hostdev is, and whether the host needs it, is unknown.
  const damaged = XML.replace('address="0000:0b:00.0"', 'address="not-an-address"');
  const start = (root: string, state: string) =>
    runGuard({
      vm: "win11",
      operation: "prepare",
      subOperation: "begin",
      xml: damaged,
      reader: denoFsReader(),
      root,
      live: false,
      stateDir: state,
    });
  await withTree(async (root, state) => {
    const unreadable = (result: Awaited<ReturnType<typeof start>>) =>
      result.refusals.filter((r) => r.kind === "unreadable").map((r) => r.policy);
    for (const [vmGuard, gpuGuard] of [["warn", null], ["warn", "off"], ["off", "enforce"]]) {
      recordPolicies(state, guardPolicies(config(vmGuard!, gpuGuard!)));
      const result = await start(root, state);
      assertEquals([result.code, unreadable(result)], [1, ["enforce"]], `${vmGuard}/${gpuGuard}`);
    }
    recordPolicies(state, guardPolicies(config(null, null)));
    allowNextStart(state, "win11", { uuid: UUID });
    const allowed = await start(root, state);
    assertEquals(allowed.code, 1);
    // Records that cannot be read leave the domain's UUID unread too: no allowance counts.
    assertMatch(
      allowed.lines.at(-1)!,
      /^passthrough guard: an allowance for "win11" does not count: this definition's UUID cannot be read, to tell it is the VM the allowance was given for; it is used up$/,
    );
    assertEquals(readRefusalRecords(state)[0]?.allowed, false);
    assertEquals(takeAllowance(state, "win11", { uuid: UUID }), "none");
    // The VM's off (every rule's too) still turns the guard off for it.
    recordPolicies(state, guardPolicies(config("off", null)));
    assertEquals((await start(root, state)).code, 0);
  });
});

Deno.test("policy: a renamed rule's old name taken by a new rule keeps the old rule's guard for its records until the VM is applied", async () => {
  // win11's records name "gpu" (the replaced GPU) and "disk" (the NVMe the host has since
  // mounted). The config renames both rules and gives their old names to new rules for other
  // devices, one `off`, one `allow_host_critical`; win11 is not applied (--vm, declined), so
  // its records still name "gpu" and "disk": neither rule's new line speaks for those devices.
  const renamed = (extra: string) =>
    parseConfig(
      "version: 1\nvms:\n  win11:\n    devices:\n" +
        "      - { name: nvidia, match: { vendor_id: 10de } }\n" +
        "      - { name: nvme, match: { vendor_id: 1cc1 } }\n" + extra,
      { file: "c.yaml" },
    );
  const judged = async (root: string, state: string, extra: string, xml: string) => {
    const before = parseConfig(
      "version: 1\nvms:\n  win11:\n    devices:\n" +
        "      - { name: gpu, match: { vendor_id: 10de } }\n" +
        "      - { name: disk, match: { vendor_id: 1cc1 } }\n",
      { file: "c.yaml" },
    );
    recordPolicies(state, guardPolicies(before));
    const config = renamed(extra);
    recordPolicies(
      state,
      keepStricterRulePolicies(guardPolicies(config), {
        config,
        previous: readPolicyFile(state).file,
        settled: new Set(),
        recorded: new Map([["win11", ["gpu", "disk"]]]),
      }),
    );
    const result = await run(root, state, xml);
    return [result.code, ...result.refusals.map((r) => `${r.kind} ${r.policy}`)];
  };
  await withTree(async (root, state) => {
    assertEquals(
      await judged(
        root,
        state,
        "      - { name: gpu, match: { vendor_id: 8086 }, guard: off }\n",
        XML,
      ),
      [1, "replaced enforce", "missing enforce"],
    );
  });
  await withTree(async (root, state) => {
    assertEquals(
      await judged(
        root,
        state,
        "      - { name: disk, match: { vendor_id: 8086 }, allow_host_critical: true }\n",
        DISK_XML,
      ),
      [1, "host-needs enforce"],
    );
  }, mountedNvmeHost());
});

Deno.test("keepStricterRulePolicies() leaves out a VM that is all enforce once its new allow_host_critical waits", () => {
  const config = parseConfig(
    "version: 1\nvms:\n  win11:\n    devices:\n" +
      "      - { name: disk, match: { vendor_id: 1cc1 }, allow_host_critical: true }\n",
    { file: "c.yaml" },
  );
  const kept = (settled: string[]) =>
    keepStricterRulePolicies(guardPolicies(config), {
      config,
      previous: null,
      settled: new Set(settled),
      recorded: new Map([["win11", ["disk"]]]),
    }).vms;
  assertEquals(kept([]), {});
  assertEquals(kept(["win11"]), {
    win11: { guard: "enforce", rules: {}, allowHostCritical: ["disk"] },
  });
});

Deno.test("policy: a rule renamed and loosened before its VM is applied: the refusal says its old name judges it, and what applies the new one", async () => {
  // win11's record names "gpu"; the config renamed it "nvidia" with guard: off (then with
  // allow_host_critical, its card now the host's console) and applied another VM only.
  const renamed = async (
    extra: string,
    host = loadFixtureHost("x570-aorus-pro-wifi"),
    allow = false,
    xml = XML,
    devices = `      - { name: nvidia, match: { vendor_id: 10de }${extra} }\n`,
  ) => {
    await using tree = await tempHostTree(host);
    const state = await Deno.makeTempDir({ prefix: "passthrough-guard-renamed-" });
    try {
      const before = parseConfig(
        "version: 1\nvms:\n  win11:\n    devices:\n      - { name: gpu, match: { vendor_id: 10de } }\n",
        { file: "c.yaml" },
      );
      const after = parseConfig(
        "version: 1\nvms:\n  win11:\n    devices:\n" + devices,
        { file: "c.yaml" },
      );
      const previous = applied(guardPolicies(before));
      const kept = keepStricterRulePolicies(guardPolicies(after), {
        config: after,
        previous,
        settled: new Set(),
        recorded: new Map([["win11", ["gpu"]]]),
      });
      recordPolicies(`${state}/state`, bindRecords(kept, { previous, applied: new Map() }));
      if (allow) allowNextStart(`${state}/state`, "win11", { uuid: UUID });
      const result = await run(tree.dir, `${state}/state`, xml);
      return [result.code, ...result.lines];
    } finally {
      await Deno.remove(state, { recursive: true });
    }
  };
  const waits = 'the recorded policies relax only rule "nvidia" \\(%s\\) for this VM, not "gpu": ' +
    'if "gpu" was renamed since the VM was last applied, its devices are judged by that name ' +
    'until "passthrough apply --vm win11" records them under the new one; fix: passthrough plan ' +
    "--vm win11$";
  const [code, line] = await renamed(", guard: off");
  assertEquals(code, 1);
  assertMatch(
    line as string,
    new RegExp(`not the recorded 10de:2684 .* of rule "gpu"; ${waits.replace("%s", "guard: off")}`),
  );
  const host = loadFixtureHost("x570-aorus-pro-wifi");
  host.host_use = [{ address: "0000:0b:00.0", reason: "console-vga", detail: "fbcon on it" }];
  // Recorded as the card that is there: only the host's need for it refuses it.
  const same = XML.replace('device="2684"', 'device="1b06"');
  const [, needed, ...more] = await renamed(", allow_host_critical: true", host, true, same);
  assertMatch(needed as string, /holds 10de:1b06 .* now, as the recorded 10de:1b06 /);
  // No advice to set allow_host_critical on "gpu", a rule the config no longer has.
  assertOk(!(needed as string).includes('on rule "gpu"'), needed as string);
  assertMatch(
    needed as string,
    new RegExp(
      `the host needs it: .*fbcon on it\\); ${waits.replace("%s", "allow_host_critical")}`,
    ),
  );
  // A rule not renamed ("gpu" kept, enforce) beside a laxer one: the note asserts no rename.
  const [, kept] = await renamed(
    "",
    undefined,
    false,
    XML,
    "      - { name: gpu, match: { vendor_id: 10de } }\n" +
      "      - { name: usb, match: { vendor_id: 1022 }, guard: off }\n",
  );
  assertMatch(
    kept as string,
    /not the recorded 10de:2684 .* relax only rule "usb" \(guard: off\) for this VM, not "gpu": if "gpu" was renamed since/,
  );
  // Nor in the line saying why the allowance did not help.
  assertEquals(
    more.at(-1),
    'passthrough guard: "passthrough guard allow" does not let "win11" take a device the host ' +
      'needs (only "passthrough apply --vm win11", recording it under a rule with ' +
      '"allow_host_critical: true", does); the allowance is used up',
  );
});

Deno.test("policy: a merged IOMMU group's members are judged as the devices are, allow_host_critical lifting only one VFIO would hand over", async () => {
  // The NVMe of rule "disk" (group 17) now shares its group with an unbound SATA controller
  // (which VFIO would hand the guest), a NIC on igb and an audio function on snd_hda_intel (on
  // which the start fails, "group 17 is not viable").
  const host = loadFixtureHost("x570-aorus-pro-wifi");
  const drivers: Record<string, string | null> = {
    "0000:04:00.0": null,
    "0000:06:00.0": "igb",
    "0000:0e:00.4": "snd_hda_intel",
  };
  for (const d of host.devices) {
    if (Object.hasOwn(drivers, d.bdf)) [d.group, d.driver] = [17, drivers[d.bdf]!];
  }
  const diskConfig = (vmGuard: string | null, allow: boolean) =>
    parseConfig(
      `version: 1\nvms:\n  win11:\n${vmGuard === null ? "" : `    guard: ${vmGuard}\n`}` +
        "    devices:\n      - name: disk\n        match: { vendor_id: 1cc1 }\n" +
        (allow ? "        allow_host_critical: true\n" : ""),
      { file: "c.yaml" },
    );
  await withTree(async (root, state) => {
    const judged = async (vmGuard: string | null, allow = false) => {
      recordPolicies(state, applied(guardPolicies(diskConfig(vmGuard, allow)), DISK_XML));
      const result = await run(root, state, DISK_XML);
      return [
        result.code,
        ...result.refusals.map((r) => `${r.group?.member} ${r.kind} ${r.policy}`),
      ];
    };
    assertEquals(await judged(null), [
      1,
      "0000:04:00.0 host-needs enforce",
      "0000:06:00.0 not-viable enforce",
      "0000:0e:00.4 not-viable enforce",
    ]);
    // The host's network controller is never taken on a warning; the audio function only warns.
    assertEquals(await judged("warn"), [
      1,
      "0000:04:00.0 host-needs enforce",
      "0000:06:00.0 not-viable enforce",
      "0000:0e:00.4 not-viable warn",
    ]);
    // allow_host_critical lets the guest take the unbound controller, as plan would; the NIC
    // stays on igb whatever it says, and the start would fail.
    assertEquals(await judged("warn", true), [
      1,
      "0000:06:00.0 not-viable enforce",
      "0000:0e:00.4 not-viable warn",
    ]);
    assertEquals(await judged("off"), [0]);
  }, host);
});

Deno.test("policy: a rule's enforce in a warn VM still refuses its records after a rename, until the VM is applied", async () => {
  // win11 warns, its rule "gpu" enforces; the config renames "gpu" to "nvidia" (the VM's warn
  // now) and another VM is applied: win11's record still names "gpu", whose enforce must hold.
  const before = parseConfig(
    "version: 1\nvms:\n  win11:\n    guard: warn\n    devices:\n" +
      "      - { name: gpu, match: { vendor_id: 10de }, guard: enforce }\n",
    { file: "c.yaml" },
  );
  const after = parseConfig(
    "version: 1\nvms:\n  win11:\n    guard: warn\n    devices:\n" +
      "      - { name: nvidia, match: { vendor_id: 10de } }\n",
    { file: "c.yaml" },
  );
  await withTree(async (root, state) => {
    const previous = applied(guardPolicies(before));
    const kept = keepStricterRulePolicies(guardPolicies(after), {
      config: after,
      previous,
      settled: new Set(),
      recorded: new Map([["win11", ["gpu"]]]),
    });
    recordPolicies(state, bindRecords(kept, { previous, applied: new Map() }));
    const result = summary(await run(root, state));
    assertEquals([result.code, result.refusals], [1, [
      ["0000:0b:00.0", "replaced", "enforce"],
      ["0000:7f:1f.7", "missing", "warn"],
    ]]);
  });
});

Deno.test("policy: a rule's off does not speak for a record apply did not bind (edited in, or from before binding)", async () => {
  // The record naming "gpu" was not left by an apply: it is judged as strictly as the VM.
  await withTree(async (root, state) => {
    recordPolicies(state, guardPolicies(config(null, "off")));
    assertEquals(summary(await run(root, state)).refusals, [
      ["0000:0b:00.0", "replaced", "enforce"],
      ["0000:7f:1f.7", "missing", "enforce"],
    ]);
  });
});

Deno.test("stricterWhileApplying(): a start while apply runs is judged device by device by the stricter of the old and new policies", async () => {
  await withTree(async (root, state) => {
    const meet = (before: GuardPolicyFile, after: GuardPolicyFile) => {
      recordPolicies(state, stricterWhileApplying(after, { previous: before, settled: new Set() }));
      return run(root, state);
    };
    const vmOff = applied(guardPolicies(config("off", null)));
    const gpuOff = applied(guardPolicies(config(null, "off")));
    const vmWarn = applied(guardPolicies(config("warn", null)));
    // The VM's off turned enforce, its rule off: the GPU both leave unchecked, the hand-added
    // hostdev the new enforce refuses.
    assertEquals(summary(await meet(vmOff, gpuOff)).refusals, [
      ["0000:7f:1f.7", "missing", "enforce"],
    ]);
    // The rule's off turned its VM's warn: the GPU warns, the hand-added hostdev is refused.
    assertEquals(summary(await meet(gpuOff, vmWarn)).refusals, [
      ["0000:0b:00.0", "replaced", "warn"],
      ["0000:7f:1f.7", "missing", "enforce"],
    ]);
    // Settled, the new policies alone.
    recordPolicies(
      state,
      stricterWhileApplying(vmWarn, { previous: gpuOff, settled: new Set(["win11"]) }),
    );
    assertEquals(summary(await run(root, state)).refusals, [
      ["0000:0b:00.0", "replaced", "warn"],
      ["0000:7f:1f.7", "missing", "warn"],
    ]);
  });
});
