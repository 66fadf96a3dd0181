// One hook run on a built tree with a real state directory: the one-shot allowance, the refusal
// record, and the operations that must pass untouched.

import { assertEquals, assertMatch, assertOk, assertThrows } from "../helpers/assert.ts";
import { loadFixtureHost, tempHostTree } from "../helpers/hosts.ts";
import { denoFsReader, type SysfsReader } from "../../lib/host/sysfs.ts";
import { runGuard } from "../../lib/guard/run.ts";
import {
  ALLOWANCE_LIFETIME_MS,
  allowNextStart,
  guardRefusalIssue,
  readRefusalRecords,
  readReloadRecords,
  recordReload,
  takeAllowance,
} from "../../lib/guard/state.ts";
import { RELOAD_FILE } from "../../lib/guard/layout.ts";
import { StateDirError } from "../../lib/state/state_dir.ts";
import { recordCase } from "../../scripts/reliability_report.ts";

/** The domain allowances are given for in these tests. */
const UUID = "0f3c1a52-7d4e-4b8a-9c61-2e5f8a9b0c11";

const MOVED = `<domain><name>win11</name><uuid>${UUID}</uuid>
  <metadata><pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">
    <pt:device address="0000:0b:00.0" vendor="10de" device="2684" class="030000" rule="gpu"/>
  </pt:hostdevs></metadata>
  <devices><hostdev mode='subsystem' type='pci' managed='yes'>
    <source><address domain='0x0000' bus='0x0b' slot='0x00' function='0x0'/></source>
  </hostdev></devices></domain>`;

const IN_PLACE = MOVED.replace('device="2684"', 'device="1b06"');

async function withTree(fn: (root: string, state: string) => void | Promise<void>) {
  await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
  const state = await Deno.makeTempDir({ prefix: "passthrough-guard-state-" });
  try {
    await fn(tree.dir, `${state}/state`);
  } finally {
    await Deno.remove(state, { recursive: true });
  }
}

/**
 * Runs `code` in `deno eval`, which kills itself with SIGKILL at the moment under test (as a
 * deadline or the OOM killer would), and asserts that it died so.
 */
async function evalKilled(code: string): Promise<void> {
  const killed = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    stdout: "null",
    stderr: "piped",
  }).output();
  assertEquals(killed.signal, "SIGKILL", new TextDecoder().decode(killed.stderr));
}

function run(root: string, stateDir: string, xml: string | null, now?: Date) {
  return runGuard({
    vm: "win11",
    operation: "prepare",
    subOperation: "begin",
    xml,
    reader: denoFsReader(),
    root,
    live: false,
    stateDir,
    ...(now === undefined ? {} : { now }),
  });
}

Deno.test("runGuard() refuses, records the refusal, and forgets it after a clean start", async () => {
  await withTree(async (root, state) => {
    const refused = await run(root, state, MOVED);
    assertEquals(refused.code, 1);
    assertEquals(refused.lines.length, 1);
    assertMatch(
      refused.lines[0]!,
      /^passthrough guard: refusing to start "win11": hostdev 0000:0b:00\.0/,
    );
    const [record] = readRefusalRecords(state);
    assertEquals([record?.vm, record?.allowed, record?.refusals[0]?.kind], [
      "win11",
      false,
      "replaced",
    ]);
    const mode = Deno.statSync(`${state}/guard/refused/win11.json`).mode! & 0o777;
    assertEquals(mode, 0o600);
    assertEquals(Deno.statSync(`${state}/guard/refused`).mode! & 0o777, 0o700);
    const clean = await run(root, state, IN_PLACE);
    assertEquals([clean.code, clean.lines], [0, []]);
    assertEquals(readRefusalRecords(state), []);
  });
});

Deno.test("runGuard() lists and records the first 100 refusals of a start and counts the rest", async () => {
  await withTree(async (root, state) => {
    // Whoever may define a domain may give it thousands of hostdevs (here in PCI domain 1,
    // where the tree has nothing): each listed, the record outgrew what its readers take.
    const hostdevs = Array.from(
      { length: 5000 },
      (_, i) =>
        `<hostdev mode='subsystem' type='pci'><source><address domain='0x0001' bus='0x${
          (i >> 8).toString(16)
        }' slot='0x${((i >> 3) & 31).toString(16)}' function='0x${i & 7}'/></source></hostdev>`,
    );
    const xml = `<domain><name>win11</name><devices>${hostdevs.join("")}</devices></domain>`;
    const refused = await run(root, state, xml);
    assertEquals([refused.code, refused.lines.length, refused.refusals.length], [1, 101, 5000]);
    assertMatch(refused.lines[99]!, /^passthrough guard: refusing to start "win11": hostdev /);
    assertEquals(
      refused.lines[100],
      'passthrough guard: and 4900 more for "win11", not listed (only 100 are, here and in its ' +
        "record: those the host needs first)",
    );
    const [record] = readRefusalRecords(state);
    assertEquals([record?.vm, record?.refusals.length, record?.more], ["win11", 100, 4900]);
    assertMatch(guardRefusalIssue(record!).message, /holds no device now .*; and 4900 more$/);
  });
});

Deno.test("runGuard() lists and records a device the host needs even beyond the first 100 refusals", async () => {
  // `guard allow` reads the record to say an allowance will not start a VM taking a device the
  // host needs: one refusal of that kind after 100 others must still be listed and recorded.
  const host = loadFixtureHost("x570-aorus-pro-wifi");
  host.host_use = [
    { address: "0000:0b:00.0", reason: "mounted-filesystem", detail: "/ on nvme0n1p2" },
  ];
  await using tree = await tempHostTree(host);
  const state = await Deno.makeTempDir({ prefix: "passthrough-h152-guard-state-" });
  try {
    const absent = Array.from(
      { length: 150 },
      (_, i) =>
        `<hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='0x0a' slot='0x${
          (1 + (i >> 3)).toString(16)
        }' function='0x${i & 7}'/></source></hostdev>`,
    );
    // Addresses before 0000:0b:00.0 that hold nothing (bus 0x0a has slot 0 only): listed first.
    const xml = IN_PLACE.replace("<devices>", `<devices>${absent.join("")}`);
    const refused = await run(tree.dir, `${state}/state`, xml);
    assertEquals([refused.code, refused.refusals.length], [1, 151]);
    const needed = /hostdev 0000:0b:00\.0.*the host needs it/;
    assertEquals(refused.lines.filter((l) => needed.test(l)).length, 1, refused.lines.join("\n"));
    assertEquals(
      refused.lines.at(-1),
      'passthrough guard: and 51 more for "win11", not listed (only 100 are, here and in its record: those the host needs first)',
    );
    const [record] = readRefusalRecords(`${state}/state`);
    assertEquals(record?.refusals.length, 100);
    assertEquals(record?.refusals.filter((r) => r.hostNeeds !== null).map((r) => r.address), [
      "0000:0b:00.0",
    ]);
  } finally {
    await Deno.remove(state, { recursive: true });
  }
});

Deno.test("readRefusalRecords() skips a record of the wrong shape, as a damaged one", async () => {
  await withTree(async (root, state) => {
    await run(root, state, MOVED);
    const dir = `${state}/guard/refused`;
    const good = JSON.parse(Deno.readTextFileSync(`${dir}/win11.json`));
    // Valid JSON each, which plan and `guard allow` read fields of: skipped, not a TypeError.
    const shapes = ["null", "1", '{"vm":"a"}', '{"vm":"b","time":"t","allowed":false}'];
    shapes.push(JSON.stringify({ ...good, refusals: [null, ...good.refusals] }));
    shapes.push(JSON.stringify({ ...good, vm: 7 }));
    shapes.push(JSON.stringify({ ...good, refusals: [{ ...good.refusals[0], reason: 1 }] }));
    shapes.forEach((text, i) => Deno.writeTextFileSync(`${dir}/v${i}.json`, text, { mode: 0o600 }));
    assertEquals(readRefusalRecords(state).map((r) => r.vm), ["win11"]);
  });
});

Deno.test("runGuard() lets one start through with an allowance, then refuses again", async () => {
  await withTree(async (root, state) => {
    allowNextStart(state, "win11", { uuid: UUID });
    const allowed = await run(root, state, MOVED);
    assertEquals(allowed.code, 0);
    assertMatch(
      allowed.lines[0]!,
      /^passthrough guard: starting "win11" once despite this \(passthrough guard allow\): hostdev 0000:0b:00\.0/,
    );
    assertEquals(readRefusalRecords(state)[0]?.allowed, true);
    assertEquals((await run(root, state, MOVED)).code, 1);
  });
});

Deno.test("runGuard() refuses a VM defined under the name since the allowance, and one from before UUIDs", async () => {
  await withTree(async (root, state) => {
    // win11 undefined and another defined under its name (another <uuid>) within the hour.
    allowNextStart(state, "win11", { uuid: UUID });
    const other = "0b5c8b0e-3a55-4bd6-9a0c-5c4f5d7e2f11";
    const refused = await run(root, state, MOVED.replace(UUID, other));
    assertEquals(refused.code, 1, refused.lines.join("\n"));
    assertEquals(
      refused.lines.at(-1),
      `passthrough guard: an allowance for "win11" was given for another VM defined under that ` +
        `name, not this one (UUID ${other}); it does not count and is used up: run ` +
        `"passthrough guard allow win11 -c qemu:///system --state-dir ${state}" again to start this one anyway`,
    );
    assertEquals(readRefusalRecords(state)[0]?.allowed, false);
    assertEquals(takeAllowance(state, "win11", { uuid: UUID }), "none");
    // An allowance a passthrough wrote before it bound them (no uuid) counts for no domain.
    const { path } = allowNextStart(state, "win11", { uuid: UUID });
    const { uuid: _uuid, ...old } = JSON.parse(Deno.readTextFileSync(path));
    Deno.writeTextFileSync(path, JSON.stringify(old));
    const unbound = await run(root, state, MOVED);
    assertEquals(unbound.code, 1, unbound.lines.join("\n"));
    assertMatch(
      unbound.lines.at(-1)!,
      /^passthrough guard: an allowance for "win11" was given for another VM/,
    );
    // Given for this one, it counts.
    allowNextStart(state, "win11", { uuid: UUID });
    assertEquals((await run(root, state, MOVED)).code, 0);
  });
});

Deno.test("runGuard() lets a clean start go on without creating or writing any state", async () => {
  await withTree(async (root, state) => {
    assertEquals(await run(root, state, IN_PLACE), { code: 0, lines: [], refusals: [] });
    // Nothing recorded, nothing created: the state directory does not even exist.
    assertThrows(() => Deno.statSync(state), Deno.errors.NotFound);
    // Once the guard keeps something, a clean start of this VM clears its own record.
    await run(root, state, MOVED);
    assertEquals(readRefusalRecords(state).length, 1);
    assertEquals((await run(root, state, IN_PLACE)).code, 0);
    assertEquals(readRefusalRecords(state), []);
  });
});

Deno.test("runGuard() prints commands a shell and passthrough read as the VM's, whatever its name", async () => {
  await withTree(async (root, state) => {
    // libvirt takes any name without a "/": this one splits into two words unquoted, and reads
    // as an option after a bare --vm.
    const vm = "-my lab";
    const guard = (xml: string) =>
      runGuard({
        vm,
        operation: "prepare",
        subOperation: "begin",
        xml,
        reader: denoFsReader(),
        root,
        live: false,
        stateDir: state,
      });
    const moved = await guard(MOVED);
    assertMatch(moved.lines[0]!, /; fix: passthrough plan --vm='-my lab'$/);
    // A hand-added hostdev on a PCI bridge, with an allowance, which says what else would do.
    allowNextStart(state, vm, { uuid: UUID });
    const bridge = await guard(`<domain><name>x</name><uuid>${UUID}</uuid><devices>
      <hostdev mode='subsystem' type='pci'>
        <source><address domain='0x0000' bus='0x00' slot='0x01' function='0x0'/></source>
      </hostdev></devices></domain>`);
    assertEquals(bridge.code, 1);
    assertMatch(
      bridge.lines[0]!,
      / fix: remove it with virsh edit '-my lab' \(passthrough plan --vm='-my lab' says which/,
    );
    assertMatch(
      bridge.lines.at(-1)!,
      /\(nothing does: remove the hostdev from the definition \(virsh edit '-my lab'\)\); the allowance is used up$/,
    );
  });
});

Deno.test("guard allow and apply in processes at the same moment each replace the guard's files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-guard-race-" });
  const state = `${dir}/state`;
  try {
    // Each writes what the others write, each time: `guard allow` run twice for one VM, and
    // `apply` recording policies that change, or removing them.
    const code = `import { allowNextStart, recordPolicies } from ${
      JSON.stringify(new URL("../../lib/guard/state.ts", import.meta.url).href)
    };
      for (let i = 0; i < 60; i++) {
        allowNextStart(${JSON.stringify(state)}, "win11", { uuid: ${JSON.stringify(UUID)} });
        recordPolicies(${JSON.stringify(state)}, { version: 1, config: "c.yaml",
          vms: i % 3 === 2 ? {} : { win11: { guard: i % 3 === 0 ? "warn" : "off", rules: {} } } });
      }`;
    allowNextStart(state, "win11", { uuid: UUID });
    const outputs = await Promise.all(
      [1, 2, 3, 4].map(() =>
        new Deno.Command(Deno.execPath(), { args: ["eval", code], stdout: "null", stderr: "piped" })
          .output()
      ),
    );
    const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
    assertEquals(outputs.map((o) => [o.code, decode(o.stderr)]), [1, 2, 3, 4].map(() => [0, ""]));
    assertEquals(takeAllowance(state, "win11", { uuid: UUID }), "allowed");
    // Nothing left under a temporary name.
    assertEquals([...Deno.readDirSync(`${state}/guard/allow`)], []);
    const names = [...Deno.readDirSync(`${state}/guard`)].map((e) => e.name);
    assertEquals(names.filter((name) => name !== "policy.json"), ["allow"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runGuard() ignores an expired allowance and says so", async () => {
  await withTree(async (root, state) => {
    const given = new Date("2026-01-01T00:00:00Z");
    allowNextStart(state, "win11", { uuid: UUID, now: given });
    const later = new Date(given.getTime() + ALLOWANCE_LIFETIME_MS + 1000);
    const result = await run(root, state, MOVED, later);
    assertEquals(result.code, 1);
    assertEquals(
      result.lines.at(-1),
      // Into the state directory this hook reads, wherever the hook was installed.
      `passthrough guard: an allowance for "win11" had expired: run "passthrough guard allow win11 -c qemu:///system --state-dir ${state}" again to start it anyway`,
    );
    assertEquals(takeAllowance(state, "win11", { uuid: UUID }), "none");
  });
});

Deno.test("runGuard() tells an allowance dated ahead of the clock from an expired one", async () => {
  await withTree(async (root, state) => {
    const now = new Date("2026-01-01T00:00:00Z");
    // Written while the clock stood a day ahead (set back since), or on a host whose clock does.
    allowNextStart(state, "win11", {
      uuid: UUID,
      now: new Date(now.getTime() + 24 * 60 * 60 * 1000),
    });
    const result = await run(root, state, MOVED, now);
    assertEquals(result.code, 1);
    assertEquals(
      result.lines.at(-1),
      `passthrough guard: an allowance for "win11" was dated ahead of this host's clock (the clock was set back since it was written, or it came from another host); it does not count and is used up; check the clock ("timedatectl"), then run "passthrough guard allow win11 -c qemu:///system --state-dir ${state}" on this host to start it anyway`,
    );
    assertEquals(takeAllowance(state, "win11", { uuid: UUID }), "none");
  });
});

Deno.test("runGuard() does not offer a new allowance where none would start the VM", async () => {
  await withTree(async (root, state) => {
    const given = new Date("2026-01-01T00:00:00Z");
    allowNextStart(state, "win11", { uuid: UUID, now: given });
    const later = new Date(given.getTime() + ALLOWANCE_LIFETIME_MS + 1000);
    // A hand-added hostdev on the host bridge: the host needs it, which no allowance lifts.
    const bridge = `<domain><name>win11</name><devices>
      <hostdev mode='subsystem' type='pci'>
        <source><address domain='0x0000' bus='0x00' slot='0x01' function='0x0'/></source>
      </hostdev></devices></domain>`;
    const result = await run(root, state, bridge, later);
    assertEquals(result.code, 1);
    assertMatch(result.lines[0]!, /the host needs it: host bridge/);
    assertEquals(
      result.lines.at(-1),
      'passthrough guard: an allowance for "win11" had expired',
    );
  });
});

Deno.test("an allowance lasts 60 minutes; one written while the clock stood ahead, or stretched by hand, does not count", () => {
  const state = Deno.makeTempDirSync({ prefix: "passthrough-guard-clock-" });
  try {
    const now = new Date("2026-01-01T12:00:00Z");
    const at = (minutes: number) => new Date(now.getTime() + minutes * 60_000);
    // Written 30 days ahead (a clock put right since): its window has not begun.
    allowNextStart(state, "win11", { uuid: UUID, now: at(30 * 24 * 60) });
    assertEquals(takeAllowance(state, "win11", { uuid: UUID, now }), "future");
    // A few minutes ahead is a clock's usual drift: it counts.
    allowNextStart(state, "win11", { uuid: UUID, now: at(4) });
    assertEquals(takeAllowance(state, "win11", { uuid: UUID, now }), "allowed");
    // Ten minutes ahead is more than drift.
    allowNextStart(state, "win11", { uuid: UUID, now: at(10) });
    assertEquals(takeAllowance(state, "win11", { uuid: UUID, now }), "future");
    // The 60 minutes README promises: given 59 minutes ago it counts, 61 minutes ago not.
    allowNextStart(state, "win11", { uuid: UUID, now: at(-59) });
    assertEquals(takeAllowance(state, "win11", { uuid: UUID, now }), "allowed");
    allowNextStart(state, "win11", { uuid: UUID, now: at(-61) });
    assertEquals(takeAllowance(state, "win11", { uuid: UUID, now }), "expired");
    // A window longer than an allowance lasts (the file edited): not trusted.
    const { path } = allowNextStart(state, "win11", { uuid: UUID, now: at(-10) });
    const data = JSON.parse(Deno.readTextFileSync(path));
    data.expires = at(24 * 60).toISOString();
    Deno.writeTextFileSync(path, JSON.stringify(data));
    assertEquals(takeAllowance(state, "win11", { uuid: UUID, now }), "expired");
    allowNextStart(state, "win11", { uuid: UUID, now: at(-10) });
    assertEquals(takeAllowance(state, "win11", { uuid: UUID, now }), "allowed");
    // One copied from another VM's file (it names "win10"), or one that is not JSON: expired,
    // and used up all the same.
    const copied = allowNextStart(state, "win10", { uuid: UUID, now: at(-10) }).path;
    Deno.renameSync(copied, copied.replace(/win10\.json$/, "win11.json"));
    assertEquals(takeAllowance(state, "win11", { uuid: UUID, now }), "expired");
    assertEquals(takeAllowance(state, "win11", { uuid: UUID, now }), "none");
    Deno.writeTextFileSync(allowNextStart(state, "win11", { uuid: UUID, now: at(-10) }).path, "{");
    assertEquals(takeAllowance(state, "win11", { uuid: UUID, now }), "expired");
    assertEquals(takeAllowance(state, "win11", { uuid: UUID, now }), "none");
  } finally {
    Deno.removeSync(state, { recursive: true });
  }
});

Deno.test("runGuard() consumes an allowance on a clean start too: it is for the next start only", async () => {
  await withTree(async (root, state) => {
    allowNextStart(state, "win11", { uuid: UUID });
    assertEquals((await run(root, state, IN_PLACE)).code, 0);
    assertEquals((await run(root, state, MOVED)).code, 1);
  });
});

Deno.test("runGuard() passes every operation but prepare begin without reading anything", async () => {
  const untouchable: SysfsReader = {
    listDir: () => {
      throw new Error("read");
    },
    readText: () => {
      throw new Error("read");
    },
    readBytes: () => {
      throw new Error("read");
    },
    readLink: () => {
      throw new Error("read");
    },
    openFile: () => {
      throw new Error("read");
    },
  };
  for (
    const [operation, subOperation] of [
      ["prepare", "end"],
      ["start", "begin"],
      ["release", "end"],
      ["reconnect", "begin"],
      ["migrate", "begin"],
      ["restore", "begin"],
    ]
  ) {
    const result = await runGuard({
      vm: "win11",
      operation: operation!,
      subOperation: subOperation!,
      xml: MOVED,
      reader: untouchable,
      root: "/nonexistent",
      live: false,
      stateDir: "/nonexistent/state",
    });
    assertEquals(result, { code: 0, lines: [], refusals: [] }, `${operation} ${subOperation}`);
  }
});

Deno.test("runGuard() fails closed on oversized XML, and when the check itself fails", async () => {
  await withTree(async (root, state) => {
    const big = await run(root, state, null);
    assertEquals(big.code, 1);
    assertMatch(big.lines[0]!, /the domain XML is larger than 16777216 bytes/);
    // A damaged host_use.json makes the check throw: refused, not let through.
    Deno.writeTextFileSync(`${root}/host_use.json`, "{");
    const failed = await run(root, state, IN_PLACE);
    assertEquals(failed.code, 1);
    assertMatch(failed.lines[0]!, /the check failed: Cannot parse ".*host_use\.json"/);
  });
});

Deno.test("allowNextStart() keeps VM names that are not file names apart", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const state = `${dir}/state`;
    const { path } = allowNextStart(state, "../etc/passwd", { uuid: UUID });
    assertOk(path.startsWith(`${state}/guard/allow/`), path);
    assertEquals(takeAllowance(state, "../etc", { uuid: UUID }), "none");
    assertEquals(takeAllowance(state, "../etc/passwd", { uuid: UUID }), "allowed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an allowance in a guard directory others may write to, or one that is a link, does not count", async () => {
  await withTree(async (root, state) => {
    allowNextStart(state, "win11", { uuid: UUID });
    const allow = `${state}/guard/allow`;
    Deno.chmodSync(allow, 0o777);
    const open = await run(root, state, MOVED);
    assertEquals(open.code, 1);
    assertMatch(
      open.lines[0]!,
      /^passthrough guard: cannot use its allowance \(it does not count\): .*guard\/allow.*group- or world-writable/,
    );
    assertMatch(
      open.lines[1]!,
      /^passthrough guard: refusing to start "win11": hostdev 0000:0b:00\.0/,
    );
    // A link to a directory of the same files, private as it is: not ours either.
    Deno.chmodSync(allow, 0o700);
    Deno.renameSync(allow, `${state}/allow-elsewhere`);
    Deno.symlinkSync(`${state}/allow-elsewhere`, allow);
    assertEquals((await run(root, state, MOVED)).code, 1);
    // Put back: the allowance was never taken, and counts once.
    Deno.removeSync(allow);
    Deno.renameSync(`${state}/allow-elsewhere`, allow);
    assertEquals((await run(root, state, MOVED)).code, 0);
    assertEquals((await run(root, state, MOVED)).code, 1);
  });
});

Deno.test("a file where the guard's directory belongs: a clean start says nothing, a refused one why", async () => {
  await withTree(async (root, state) => {
    Deno.mkdirSync(state, { recursive: true, mode: 0o700 });
    Deno.writeTextFileSync(`${state}/guard`, "not a directory\n", { mode: 0o600 });
    assertEquals(await run(root, state, IN_PLACE), { code: 0, lines: [], refusals: [] });
    // No allowance is there to be read: not an error of its own.
    const refused = await run(root, state, MOVED);
    assertEquals(refused.code, 1);
    assertEquals(refused.lines.length, 3, refused.lines.join("\n"));
    assertMatch(refused.lines[0]!, /^passthrough guard: cannot read the guard policies in /);
    assertMatch(refused.lines[1]!, /^passthrough guard: refusing to start "win11": /);
    assertMatch(
      refused.lines[2]!,
      /^passthrough guard: cannot record the refusal in ".*\/guard\/refused\/win11\.json": /,
    );
  });
});

Deno.test("readRefusalRecords() lists one record per VM, by name, from the .json files alone", async () => {
  await withTree(async (root, state) => {
    const names = ["win11", "zeta", "alpha", "m-2", "m-10", "Beta"];
    for (const vm of [...names].reverse()) {
      await runGuard({
        vm,
        operation: "prepare",
        subOperation: "begin",
        xml: MOVED.replace("<name>win11</name>", `<name>${vm}</name>`),
        reader: denoFsReader(),
        root,
        live: false,
        stateDir: state,
      });
    }
    // Not a record, whatever it holds: an editor's backup of one.
    const dir = `${state}/guard/refused`;
    Deno.writeTextFileSync(
      `${dir}/win11.json~`,
      Deno.readTextFileSync(`${dir}/win11.json`).replace('"win11"', '"stray"'),
    );
    assertEquals(
      readRefusalRecords(state).map((r) => r.vm),
      ["alpha", "Beta", "m-10", "m-2", "win11", "zeta"],
    );
  });
});

Deno.test("guardRefusalIssue() words an allowed start, joins every refusal and names their devices", async () => {
  await withTree(async (root, state) => {
    // A second hostdev, added by hand, where nothing sits on this tree.
    const two = MOVED.replace(
      "</hostdev></devices>",
      "</hostdev><hostdev mode='subsystem' type='pci' managed='yes'><source><address " +
        "domain='0x0000' bus='0x7f' slot='0x1f' function='0x7'/></source></hostdev></devices>",
    );
    allowNextStart(state, "win11", { uuid: UUID });
    assertEquals((await run(root, state, two)).code, 0);
    const [allowed] = readRefusalRecords(state);
    const issue = guardRefusalIssue(allowed!);
    assertEquals([issue.code, issue.vm, issue.devices], [
      "guard-refused",
      "win11",
      ["0000:0b:00.0", "0000:7f:1f.7"],
    ]);
    assertMatch(
      issue.message,
      /^The start guard checked "win11" at \S+ and let it start once despite: hostdev 0000:0b:00\.0 [^;]+; hostdev 0000:7f:1f\.7 /,
    );
    // Said to be history only when the definition names none of the refused addresses now.
    const NONE = /names none of them now$/;
    assertEquals(NONE.test(issue.message), false);
    assertEquals(NONE.test(guardRefusalIssue(allowed!, new Set(["0000:0b:00.0"])).message), false);
    assertMatch(guardRefusalIssue(allowed!, new Set(["0000:0c:00.0"])).message, NONE);
    // XML it cannot read names no device.
    assertEquals((await run(root, state, null)).code, 1);
    const unreadableRecord = readRefusalRecords(state)[0]!;
    const unreadable = guardRefusalIssue(unreadableRecord);
    assertMatch(unreadable.message, / and refused it: /);
    assertEquals(NONE.test(guardRefusalIssue(unreadableRecord, new Set()).message), false);
    assertEquals("devices" in unreadable, false);
  });
});

Deno.test("readReloadRecords() takes a record with the daemon's name and pid, nothing less", async () => {
  await withTree((_root, state) => {
    recordReload(state, { name: "virtqemud", pid: 4242 }, new Date("2026-12-01T10:00:00Z"));
    assertEquals(readReloadRecords(state), [
      { name: "virtqemud", pid: 4242, time: "2026-12-01T10:00:00.000Z" },
    ]);
    const path = `${state}/guard/${RELOAD_FILE}`;
    Deno.writeTextFileSync(path, JSON.stringify({ name: "virtqemud", time: "x" }));
    assertEquals(readReloadRecords(state), []);
  });
});

Deno.test("a start killed between claiming its allowance and removing it leaves a claim the VM's next start removes", async () => {
  await withTree(async (root, state) => {
    allowNextStart(state, "win11", { uuid: UUID });
    // The hook killed at that moment (its deadline, the OOM killer): SIGKILL instead of the removal.
    const code = `import { takeAllowance } from ${
      JSON.stringify(new URL("../../lib/guard/state.ts", import.meta.url).href)
    };
      const remove = Deno.removeSync;
      Deno.removeSync = (path, options) => {
        if (String(path).includes(".taken-")) Deno.kill(Deno.pid, "SIGKILL");
        remove(path, options);
      };
      takeAllowance(${JSON.stringify(state)}, "win11", { uuid: ${JSON.stringify(UUID)} });`;
    await evalKilled(code);
    const allow = `${state}/guard/allow`;
    const names = () => [...Deno.readDirSync(allow)].map((e) => e.name);
    assertMatch(names().join(), /^win11\.json\.taken-[0-9]+$/);
    // It was never removed: every later start of every VM took the slow path for it.
    assertEquals((await run(root, state, IN_PLACE)).code, 0);
    assertEquals(names(), []);
    // The killed start consumed the allowance: the next one is refused.
    assertEquals((await run(root, state, MOVED)).code, 1);
  });
});

/** The state letter of process `pid` (`T`: stopped), from `/proc/PID/stat`. */
function processState(pid: number): string {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
}

/** Waits until process `pid` has stopped itself (`SIGSTOP`). */
async function untilStopped(pid: number): Promise<void> {
  for (let i = 0; processState(pid) !== "T"; i++) {
    if (i === 500) throw new Error(`process ${pid} never stopped`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

Deno.test("a start of the VM in another daemon leaves the claim of a start still running", async () => {
  await withTree(async (root, state) => {
    allowNextStart(state, "win11", { uuid: UUID });
    // A start (in one daemon) that stops just before it claims the allowance and just after.
    const code = `import { runGuard } from ${
      JSON.stringify(new URL("../../lib/guard/run.ts", import.meta.url).href)
    };
      import { denoFsReader } from ${
      JSON.stringify(new URL("../../lib/host/sysfs.ts", import.meta.url).href)
    };
      const rename = Deno.renameSync;
      Deno.renameSync = (from, to) => {
        if (!String(to).includes(".taken-")) return rename(from, to);
        Deno.kill(Deno.pid, "SIGSTOP");
        rename(from, to);
        Deno.kill(Deno.pid, "SIGSTOP");
      };
      const result = await runGuard({ vm: "win11", operation: "prepare", subOperation: "begin",
        xml: ${JSON.stringify(MOVED)}, reader: denoFsReader(), root: ${JSON.stringify(root)},
        live: false, stateDir: ${JSON.stringify(state)} });
      console.error(result.lines.join("\\n"));
      Deno.exit(result.code);`;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    try {
      await untilStopped(child.pid);
      // `guard allow` for another domain defined under the name since replaces the one it read.
      const other = "0b5c8b0e-3a55-4bd6-9a0c-5c4f5d7e2f11";
      allowNextStart(state, "win11", { uuid: other });
      Deno.kill(child.pid, "SIGCONT");
      await untilStopped(child.pid);
      // A start of the VM in a second daemon now: refused, and the claim left to its start.
      assertEquals((await run(root, state, MOVED)).code, 1);
      Deno.kill(child.pid, "SIGCONT");
    } catch (error) {
      child.kill("SIGKILL");
      await output;
      throw error;
    }
    const { code: exit, stderr: lines } = await output;
    // The replaced allowance does not let it start: the one it claimed was given for the other.
    assertEquals(exit, 1, new TextDecoder().decode(lines));
    assertMatch(
      new TextDecoder().decode(lines),
      /was given for another VM defined under that name/,
    );
    assertEquals([...Deno.readDirSync(`${state}/guard/allow`)], []);
    recordCase({
      area: "concurrency",
      name: "a start of one VM in each of two daemons while guard allow replaces its allowance",
      count: 1,
      outcome:
        "the claim of the running start is left to it; it judges by the allowance it claimed",
      test: "tests/guard/run_test.ts",
    });
  });
});

Deno.test("a start killed before renaming its refusal record into place leaves a temporary record the VM's next start removes", async () => {
  await withTree(async (root, state) => {
    // The hook killed at that moment (its deadline during a slow fsync): SIGKILL instead.
    const code = `import { runGuard } from ${
      JSON.stringify(new URL("../../lib/guard/run.ts", import.meta.url).href)
    };
      import { denoFsReader } from ${
      JSON.stringify(new URL("../../lib/host/sysfs.ts", import.meta.url).href)
    };
      const rename = Deno.renameSync;
      Deno.renameSync = (from, to) => {
        if (String(to).endsWith("/refused/win11.json")) Deno.kill(Deno.pid, "SIGKILL");
        rename(from, to);
      };
      await runGuard({ vm: "win11", operation: "prepare", subOperation: "begin",
        xml: ${JSON.stringify(MOVED)}, reader: denoFsReader(), root: ${JSON.stringify(root)},
        live: false, stateDir: ${JSON.stringify(state)} });`;
    await evalKilled(code);
    const refused = `${state}/guard/refused`;
    const names = () => [...Deno.readDirSync(refused)].map((e) => e.name).sort();
    assertMatch(names().join(), /^\.win11\.json\.[0-9a-f-]{36}\.tmp$/);
    // It was never removed: every later start of every VM took the slow path for it.
    assertEquals((await run(root, state, MOVED)).code, 1);
    assertEquals(names(), ["win11.json"]);
    assertEquals((await run(root, state, IN_PLACE)).code, 0);
    assertEquals(names(), []);
  });
});

Deno.test("a guard allow killed before renaming its allowance into place leaves a temporary file that sends no start down the slow path", async () => {
  await withTree(async (root, state) => {
    const url = (path: string) => new URL(path, import.meta.url).href;
    // guard allow killed at that moment (Ctrl-C in a slow fsync): SIGKILL instead of the rename.
    const code = `import { allowNextStart } from ${JSON.stringify(url("../../lib/guard/state.ts"))};
      const rename = Deno.renameSync;
      Deno.renameSync = (from, to) => {
        if (String(to).endsWith("/allow/win11.json")) Deno.kill(Deno.pid, "SIGKILL");
        rename(from, to);
      };
      allowNextStart(${JSON.stringify(state)}, "win11", { uuid: ${JSON.stringify(UUID)} });`;
    await evalKilled(code);
    const allow = `${state}/guard/allow`;
    assertMatch(
      [...Deno.readDirSync(allow)].map((e) => e.name).join(),
      /^\.win11\.json\.[0-9a-f-]{36}\.tmp$/,
    );
    // A start whose state code cannot load fails if it takes the slow path.
    const dir = Deno.makeTempDirSync({ dir: `${state}/..` });
    Deno.writeTextFileSync(`${dir}/state.ts`, 'throw new Error("the state code was loaded");\n');
    const config = JSON.parse(Deno.readTextFileSync(new URL("../../deno.json", import.meta.url)));
    Deno.writeTextFileSync(
      `${dir}/map.json`,
      JSON.stringify({
        imports: {
          ...config.imports,
          [url("../../lib/guard/state.ts")]: new URL(`file://${dir}/state.ts`).href,
        },
      }),
    );
    const start = (xml: string) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "eval",
          "--no-lock",
          `--import-map=${dir}/map.json`,
          `import { runGuard } from ${JSON.stringify(url("../../lib/guard/run.ts"))};
          import { denoFsReader } from ${JSON.stringify(url("../../lib/host/sysfs.ts"))};
          const result = await runGuard({ vm: "other", operation: "prepare", subOperation: "begin",
            xml: ${JSON.stringify(xml)}, reader: denoFsReader(), root: ${JSON.stringify(root)},
            live: false, stateDir: ${JSON.stringify(state)} });
          Deno.exit(result.code);`,
        ],
        stdout: "null",
        stderr: "piped",
      }).output();
    const clean = await start(IN_PLACE.replace("<name>win11</name>", "<name>other</name>"));
    assertEquals(clean.code, 0, new TextDecoder().decode(clean.stderr));
    // The same start with a refusal takes the slow path: the test can see it.
    const refused = await start(MOVED.replace("<name>win11</name>", "<name>other</name>"));
    assertMatch(new TextDecoder().decode(refused.stderr), /the state code was loaded/);
  });
});

Deno.test("readRefusalRecords() and readReloadRecords() trust only directories of ours, as the other state readers do", async () => {
  await withTree(async (root, state) => {
    await run(root, state, MOVED);
    recordReload(state, { name: "virtqemud", pid: 4242 }, new Date("2026-12-01T10:00:00Z"));
    const guard = `${state}/guard`;
    assertEquals(readRefusalRecords(state).map((r) => r.vm), ["win11"]);
    assertEquals(readReloadRecords(state).length, 1);
    // guard/refused a link to records another user planted: they were read, and plan showed them.
    const elsewhere = `${state}/../elsewhere`;
    Deno.renameSync(`${guard}/refused`, elsewhere);
    Deno.symlinkSync(elsewhere, `${guard}/refused`);
    assertThrows(() => readRefusalRecords(state), StateDirError, "it is a symbolic link");
    Deno.removeSync(`${guard}/refused`);
    Deno.renameSync(elsewhere, `${guard}/refused`);
    // A guard/ (or state directory) another user may write: its records were read as ours.
    Deno.chmodSync(guard, 0o777);
    assertThrows(() => readRefusalRecords(state), StateDirError, "group- or world-writable");
    assertEquals(readReloadRecords(state), []);
    Deno.chmodSync(guard, 0o700);
    Deno.chmodSync(state, 0o777);
    assertThrows(() => readRefusalRecords(state), StateDirError, "group- or world-writable");
    assertEquals(readReloadRecords(state), []);
    Deno.chmodSync(state, 0o700);
    if (Deno.uid() === 0) {
      Deno.chownSync(guard, 65534, null);
      assertThrows(() => readRefusalRecords(state), StateDirError, "owned by uid 65534");
      assertEquals(readReloadRecords(state), []);
      Deno.chownSync(guard, 0, null);
    }
    assertEquals(readRefusalRecords(state).map((r) => r.vm), ["win11"]);
    assertEquals(readReloadRecords(state).length, 1);
  });
});
