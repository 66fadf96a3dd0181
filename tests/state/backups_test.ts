import { assertEquals, assertMatch, assertOk, assertThrows } from "../helpers/assert.ts";
import {
  BackupIntegrityError,
  BackupNotFoundError,
  DEFAULT_KEEP_BACKUPS,
  describeBackupProblem,
  encodeVmName,
  findBackup,
  inspectBackups,
  listBackups,
  pruneBackups,
  readBackupXml,
  writeBackup,
} from "../../lib/state/backups.ts";
import { sha256Hex } from "../../lib/state/sha256.ts";
import { openStateDir, StateDirError } from "../../lib/state/state_dir.ts";
import { runCli } from "../helpers/cli.ts";
import { chattr, immutableUnavailable } from "../helpers/immutable.ts";
import { describeError } from "../../main.ts";
import { recordCase } from "../../scripts/reliability_report.ts";

const TEST = "tests/state/backups_test.ts";

const UUID = "0b7e4a7c-2f0d-4b8e-9c43-5a1d6f3e8b21";

function tempDir(): string {
  return Deno.makeTempDirSync({ prefix: "passthrough-backups-test-" });
}

function xmlOf(name: string, note = ""): string {
  return `<domain type='test'>\n  <name>${name}</name>\n  <uuid>${UUID}</uuid>${note}\n</domain>\n`;
}

/** A backup of VM `vm` taken by apply, with `note` in its XML and the clock at `second`. */
function backupOf(
  state: Parameters<typeof writeBackup>[0],
  vm: string,
  options: { note?: string; second?: number } = {},
) {
  return writeBackup(state, {
    vm,
    uuid: UUID,
    xml: xmlOf(vm, options.note),
    reason: "apply",
    uri: "u",
    ...(options.second === undefined ? {} : { now: at(options.second) }),
  });
}

function at(seconds: number): Date {
  return new Date(Date.UTC(2026, 10, 24, 3, 0, seconds));
}

Deno.test("writeBackup() writes the XML and a sidecar, both 0600, under backups/<vm>/", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const xml = xmlOf("win11", "<graphics passwd='s3cret'/>");
    const entry = writeBackup(state, {
      vm: "win11",
      uuid: UUID,
      xml,
      reason: "apply",
      uri: "test:///x.xml",
      now: at(1),
    });
    assertEquals(entry.id, "20261124T030001.000Z-0b7e4a7c");
    assertEquals(entry.path, `${state.backupsPath}/win11/${entry.id}.xml`);
    assertEquals(Deno.readTextFileSync(entry.path), xml);
    assertEquals(entry.sha256, sha256Hex(xml));
    const sidecarPath = `${state.backupsPath}/win11/${entry.id}.json`;
    const sidecar = JSON.parse(Deno.readTextFileSync(sidecarPath));
    assertEquals(
      [sidecar.vm, sidecar.uuid, sidecar.time, sidecar.reason, sidecar.sha256, sidecar.file],
      ["win11", UUID, "2026-11-24T03:00:01.000Z", "apply", entry.sha256, `${entry.id}.xml`],
    );
    for (const path of [entry.path, sidecarPath]) {
      assertEquals((Deno.statSync(path).mode ?? 0) & 0o777, 0o600, path);
    }
    assertEquals((Deno.statSync(`${state.backupsPath}/win11`).mode ?? 0) & 0o777, 0o700);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("encodeVmName() keeps odd VM names inside backups/ and apart from each other", () => {
  const names = [
    "..",
    ".",
    "../../etc/passwd",
    "a/b",
    "a%2Fb",
    "-rf",
    ".hidden",
    "win 11",
    "wïn",
    "a\nb",
    "",
    "x".repeat(300),
    "x".repeat(300) + "y",
  ];
  const encoded = names.map(encodeVmName);
  assertEquals(new Set(encoded).size, names.length);
  for (const name of encoded) {
    assertOk(/^[A-Za-z0-9_%~-][A-Za-z0-9_.%~-]*$/.test(name), name);
    assertOk(name.length <= 255, name);
  }
  assertEquals(encodeVmName("a/b"), "a%2Fb");
  assertEquals(encodeVmName("a%2Fb"), "a%252Fb");
});

Deno.test("writeBackup() stores a VM named with slashes and dots under backups/", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const entry = writeBackup(state, {
      vm: "../../escape",
      uuid: UUID,
      xml: xmlOf("x"),
      reason: "apply",
      uri: "test:///x.xml",
    });
    assertOk(entry.path.startsWith(`${state.backupsPath}/%2E.%2F..%2Fescape/`), entry.path);
    assertEquals([...Deno.readDirSync(root)].map((e) => e.name), ["state"]);
    assertEquals(listBackups(state, "../../escape").map((e) => e.vm), ["../../escape"]);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("listBackups() lists newest first, per VM or for every VM", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const write = (vm: string, second: number, reason: "apply" | "rollback" = "apply") =>
      writeBackup(state, { vm, uuid: UUID, xml: xmlOf(vm), reason, uri: "u", now: at(second) });
    const a1 = write("a", 1);
    const b2 = write("b", 2);
    const a3 = write("a", 3, "rollback");
    // The same millisecond twice: kept apart by a counter, never overwritten.
    const a3bis = write("a", 3);
    assertEquals(a3bis.id, `${a3.id}-1`);
    assertEquals(listBackups(state, "a").map((e) => e.id), [a3bis.id, a3.id, a1.id]);
    // Counters order as numbers: the eleventh of one millisecond ("-10") is the newest.
    const more = Array.from({ length: 9 }, () => write("c", 4));
    assertEquals(more.at(-1)!.id.endsWith("-8"), true);
    const eleventh = [write("c", 4), write("c", 4)].at(-1)!;
    assertEquals(eleventh.id.endsWith("-10"), true);
    assertEquals(
      listBackups(state, "c").slice(0, 3).map((e) => /-(\d+)$/.exec(e.id)?.[1]),
      ["10", "9", "8"],
    );
    assertEquals(listBackups(state, "a")[1]?.reason, "rollback");
    assertEquals(listBackups(state).map((e) => e.vm).filter((vm) => vm !== "c"), [
      "a",
      "a",
      "b",
      "a",
    ]);
    assertEquals(listBackups(state).filter((e) => e.vm !== "c").map((e) => e.id)[2], b2.id);
    assertEquals(listBackups(state, "nobody"), []);
    // By path as well as by opened state directory, without creating anything.
    assertEquals(listBackups(`${root}/state`, "b").map((e) => e.id), [b2.id]);
    assertEquals(listBackups(`${root}/missing`), []);
    assertThrows(() => Deno.lstatSync(`${root}/missing`), Deno.errors.NotFound);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("writeBackup() files a backup taken after the clock stepped back as the VM's newest", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    // The clock ran an hour ahead, then NTP stepped it back.
    const ahead = backupOf(state, "a", { note: "<ahead/>", second: 3600 });
    const other = backupOf(state, "b", { second: 7200 });
    const after = backupOf(state, "a", { note: "<after/>", second: 1 });
    assertEquals(after.time, "2026-11-24T04:00:00.001Z");
    assertEquals(listBackups(state, "a").map((e) => e.id), [after.id, ahead.id]);
    assertEquals(findBackup(state, "a").id, after.id);
    assertEquals(readBackupXml(findBackup(state, "a")), xmlOf("a", "<after/>"));
    // Another VM's backups do not move its times; a later clock is taken as it reads.
    assertEquals(backupOf(state, "c", { second: 1 }).time, at(1).toISOString());
    assertEquals(backupOf(state, "a", { second: 7300 }).time, at(7300).toISOString());
    assertEquals(other.time, at(7200).toISOString());
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("pruneBackups() keeps the newest by the order rollback reads, after a clock step and within one millisecond", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    // The clock ran an hour ahead, then stepped back; then two backups in one millisecond.
    const ahead = backupOf(state, "a", { second: 3600 });
    const stepped = backupOf(state, "a", { second: 1 });
    const twin = backupOf(state, "a", { second: 1 });
    assertEquals(
      pruneBackups(listBackups(state, "a"), { uuid: UUID, uri: "u", keep: 0 }).removed,
      [],
    );
    assertEquals(
      pruneBackups(listBackups(state, "a"), { uuid: "other", uri: "u", keep: 1 }).removed,
      [],
    );
    const { removed, error } = pruneBackups(listBackups(state, "a"), {
      uuid: UUID,
      uri: "u",
      keep: 2,
    });
    assertEquals([removed.map((e) => e.id), error], [[ahead.id], null]);
    assertEquals(listBackups(state, "a").map((e) => e.id), [twin.id, stepped.id]);
    assertEquals(findBackup(state, "a").id, twin.id);
    // Both files go: nothing is left for `backups` to list as incomplete or damaged.
    assertEquals(inspectBackups(state, "a").problems, []);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("pruneBackups() neither counts nor removes a backup whose XML no longer matches its sha256", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const good = backupOf(state, "a", { second: 1 });
    const changed = backupOf(state, "a", { second: 2 });
    const newest = backupOf(state, "a", { second: 3 });
    // Changed on disk since: `rollback --to` refuses it, so it is listed as damaged.
    Deno.writeTextFileSync(changed.path, "<domain/>\n");
    const { removed, error } = pruneBackups(listBackups(state, "a"), {
      uuid: UUID,
      uri: "u",
      keep: 2,
    });
    // The two usable ones are the newest and the oldest: nothing goes.
    assertEquals([removed, error], [[], null]);
    assertEquals(listBackups(state, "a").map((e) => e.id), [newest.id, good.id]);
    assertEquals(readBackupXml(findBackup(state, "a", good.id)), xmlOf("a"));
    const one = pruneBackups(listBackups(state, "a"), { uuid: UUID, uri: "u", keep: 1 });
    // The damaged one stays for a person to look at.
    assertEquals(one.removed.map((e) => e.id), [good.id]);
    assertEquals(listBackups(state, "a").map((e) => e.id), [newest.id]);
    assertEquals(
      inspectBackups(state, "a").problems.map((p) => [p.kind, p.path]),
      [["damaged", changed.path]],
    );
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test({
  name:
    "pruneBackups() that cannot remove a sidecar keeps its XML and stops, so nothing is left damaged",
  ignore: immutableUnavailable() !== null,
  fn() {
    const root = tempDir();
    try {
      const state = openStateDir(`${root}/state`);
      const oldest = backupOf(state, "a", { second: 1 });
      const older = backupOf(state, "a", { second: 2 });
      const newest = backupOf(state, "a", { second: 3 });
      const sidecar = older.path.replace(/\.xml$/, ".json");
      assertOk(chattr("+i", sidecar), `chattr +i ${sidecar}`);
      let outcome;
      try {
        outcome = pruneBackups(listBackups(state, "a"), { uuid: UUID, uri: "u", keep: 1 });
      } finally {
        chattr("-i", sidecar);
      }
      // The sidecar goes first: a backup cut short there is whole, never one without its XML.
      assertEquals(outcome.removed, []);
      assertMatch(outcome.error ?? "", new RegExp(`^cannot remove "${older.path}": `));
      assertEquals(listBackups(state, "a").map((e) => e.id), [newest.id, older.id, oldest.id]);
      assertEquals(inspectBackups(state, "a").problems, []);
    } finally {
      Deno.removeSync(root, { recursive: true });
    }
  },
});

Deno.test("inspectBackups() lists an XML left without its sidecar, and a temporary file, as incomplete", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const entry = backupOf(state, "a");
    // What a run killed between the XML and its sidecar, or in the middle of a write, leaves.
    const orphan = `${state.backupsPath}/a/20991231T000000.000Z-deadbeef.xml`;
    Deno.writeTextFileSync(orphan, "<x/>");
    const temp = `${state.backupsPath}/a/.20991231T000001.000Z-deadbeef.xml.1234.tmp`;
    Deno.writeTextFileSync(temp, "<x");
    const killed = new Date(Date.now() - 3600 * 1000);
    for (const path of [orphan, temp]) Deno.utimeSync(path, killed, killed);
    assertEquals(listBackups(state, "a").map((e) => e.id), [entry.id]);
    const { entries, problems } = inspectBackups(state);
    assertEquals(entries.map((e) => e.id), [entry.id]);
    assertEquals(problems.map((p) => [p.kind, p.id, p.path]), [
      ["incomplete", null, temp],
      ["incomplete", "20991231T000000.000Z-deadbeef", orphan],
    ]);
    // Left for a person to look at, as every incomplete file is: said so, with what to do.
    assertEquals(
      describeBackupProblem(problems[0]!),
      `Backup "${temp}" is incomplete: a temporary file left by a run interrupted while writing a backup; nothing reads it: remove it`,
    );
    assertEquals(
      describeBackupProblem(problems[1]!),
      `Backup "${orphan}" is incomplete: its sidecar is missing (a run killed between the two writes leaves this, and defined nothing after it); it cannot be restored: remove it`,
    );
    // Never chosen: the newest intact backup is.
    assertEquals(findBackup(state, "a").id, entry.id);
    recordCase({
      area: "fault",
      name: "backup XML left without its sidecar (run killed between the writes)",
      count: 1,
      outcome: "listed as incomplete beside the intact backups, never restored",
      test: TEST,
    });
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("inspectBackups() reports a damaged sidecar and still lists every other backup", () => {
  const damages: [string, RegExp, (path: string) => void][] = [
    ["not JSON", /not valid JSON/, (path) => Deno.writeTextFileSync(path, "{ nope")],
    ["JSON null", /not a JSON object/, (path) => Deno.writeTextFileSync(path, "null")],
    ["a field missing", /field "uuid" is missing/, (path) => {
      Deno.writeTextFileSync(path, `{"vm":"a"}`);
    }],
    ["1 GiB (sparse)", /larger than 65536 bytes/, (path) => Deno.truncateSync(path, 1024 ** 3)],
    ["a FIFO", /not a regular file/, (path) => {
      Deno.removeSync(path);
      new Deno.Command("mkfifo", { args: [path] }).outputSync();
    }],
    ["a symlink to /dev/zero", /not a regular file/, (path) => {
      Deno.removeSync(path);
      Deno.symlinkSync("/dev/zero", path);
    }],
  ];

  for (const [name, detail, damage] of damages) {
    const root = tempDir();
    try {
      const state = openStateDir(`${root}/state`);
      const older = backupOf(state, "a", { note: "<old/>", second: 1 });
      const newer = backupOf(state, "a", { note: "<new/>", second: 2 });
      const other = backupOf(state, "b", { second: 3 });
      damage(`${state.backupsPath}/a/${older.id}.json`);
      const { entries, problems } = inspectBackups(state);
      assertEquals(entries.map((e) => e.id), [other.id, newer.id], name);
      assertEquals(problems.map((p) => [p.kind, p.id]), [["damaged", older.id]], name);
      assertMatch(problems[0]!.detail, detail, name);
      assertEquals(listBackups(state, "a").map((e) => e.id), [newer.id], name);
      // The VM's other backups stay reachable; the damaged one is refused by name.
      assertEquals(findBackup(state, "a").id, newer.id);
      assertThrows(() => findBackup(state, "a", older.id), BackupIntegrityError);
      // Damaged and newer than every intact one: the newest cannot be chosen silently.
      damage(`${state.backupsPath}/a/${newer.id}.json`);
      assertThrows(
        () => findBackup(state, "a"),
        /is damaged: .*"a" has no intact backup to restore/,
      );
      assertEquals(findBackup(state, "b").id, other.id);
    } finally {
      Deno.removeSync(root, { recursive: true });
    }
  }
  recordCase({
    area: "fault",
    name:
      "damaged backup sidecar (not JSON, null, field missing, 1 GiB, FIFO, symlink to /dev/zero)",
    count: damages.length,
    outcome: "reported as damaged; every other backup listed and restorable; never hangs",
    test: TEST,
  });
});

Deno.test("inspectBackups() reports a backup moved into another VM's directory as damaged, so backups numbers what rollback takes", async () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const a = backupOf(state, "a", { second: 1 });
    const b = backupOf(state, "b", { second: 2 });
    // b's backup copied by hand into a's directory (to restore it into a, say).
    const moved = b.id;
    const [dirA, dirB] = [`${state.backupsPath}/a`, `${state.backupsPath}/b`];
    Deno.copyFileSync(`${dirB}/${b.id}.xml`, `${dirA}/${moved}.xml`);
    Deno.copyFileSync(`${dirB}/${b.id}.json`, `${dirA}/${moved}.json`);
    const detail =
      `the sidecar names VM "b", whose backups are in "${dirB}": it is in another VM's directory; it cannot be restored`;
    const problems = [{ kind: "damaged", id: moved, path: `${dirA}/${moved}.json`, detail }];
    // Every VM's listing and a's alike: b has one backup, numbered 1, which rollback b --to 1 takes.
    assertEquals(inspectBackups(state), { entries: [b, a], problems });
    assertEquals(inspectBackups(state, "a"), { entries: [a], problems });
    assertEquals(findBackup(state, "b", "1").id, b.id);
    const human = await runCli(["backups", "--state-dir", state.path]);
    assertEquals(human.code, 1);
    assertEquals(human.stdout.split("\n").filter((l) => / b /.test(l)).length, 1);
    // Newer than a's own: rollback a does not pass over it silently.
    assertThrows(() => findBackup(state, "a"), BackupIntegrityError, "choose one with --to");
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("inspectBackups() reports a backup whose XML file is a FIFO, a symlink or a directory as damaged, not intact", () => {
  const damages: [string, RegExp, (path: string) => void][] = [
    ["a FIFO", /is not a regular file/, (path) => {
      new Deno.Command("mkfifo", { args: [path] }).outputSync();
    }],
    [
      "a symlink to /etc/passwd",
      /is a symbolic link/,
      (path) => Deno.symlinkSync("/etc/passwd", path),
    ],
    ["a directory", /is a directory/, (path) => Deno.mkdirSync(path)],
  ];
  for (const [name, detail, damage] of damages) {
    const root = tempDir();
    try {
      const state = openStateDir(`${root}/state`);
      const older = backupOf(state, "a", { note: "<old/>", second: 1 });
      const newer = backupOf(state, "a", { note: "<new/>", second: 2 });
      Deno.removeSync(newer.path);
      damage(newer.path);
      const { entries, problems } = inspectBackups(state, "a");
      assertEquals(entries.map((e) => e.id), [older.id], name);
      assertEquals(problems.map((p) => [p.kind, p.id]), [["damaged", newer.id]], name);
      assertMatch(problems[0]!.detail, new RegExp(`XML file "${newer.id}.xml" ${detail.source}`));
      // Newer than the intact one: the newest is not chosen silently, nor this one.
      assertThrows(() => findBackup(state, "a"), /is damaged: .*choose one with --to/, name);
      assertEquals(findBackup(state, "a", "1").id, older.id, name);
    } finally {
      Deno.removeSync(root, { recursive: true });
    }
  }
});

Deno.test("findBackup() picks the newest intact backup past a damaged file whose name is not a backup's", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const newest = backupOf(state, "a", { second: 1 });
    // Named by hand, not by a backup's time: it says nothing of what is newest.
    Deno.writeTextFileSync(`${state.backupsPath}/a/notes.json`, `{"note": "kept by hand"}\n`);
    Deno.mkdirSync(`${state.backupsPath}/a/sub.json`);
    const { problems } = inspectBackups(state, "a");
    assertEquals(problems.map((p) => [p.kind, p.id]), [["damaged", "notes"], ["damaged", "sub"]]);
    assertEquals(findBackup(state, "a").id, newest.id);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("findBackup() orders a damaged backup's counter as a number against the newest intact one", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    // Eleven within one millisecond: "-9" (the tenth) is damaged, "-10" (the eleventh) is not.
    const written = Array.from(
      { length: 11 },
      (_, i) => backupOf(state, "a", { second: 1, note: `${i}` }),
    );
    const [tenth, eleventh] = written.slice(-2);
    Deno.writeTextFileSync(tenth!.path, xmlOf("a", "changed"));
    assertEquals(findBackup(state, "a").id, eleventh!.id);
    // And the newest damaged one is named when it is the newest of all.
    Deno.writeTextFileSync(eleventh!.path, xmlOf("a", "changed"));
    assertThrows(() => findBackup(state, "a"), BackupIntegrityError, `${eleventh!.id}.xml`);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("passthrough backups lists the other backups, reports the damaged ones and exits 1", async () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const older = backupOf(state, "a", { second: 1 });
    const other = backupOf(state, "b", { second: 2 });
    const changed = backupOf(state, "b", { second: 3 });
    Deno.writeTextFileSync(`${state.backupsPath}/a/${older.id}.json`, "{ nope");
    // Its XML changed since its sidecar recorded its sha256: `rollback` refuses it.
    Deno.writeTextFileSync(changed.path, xmlOf("b", "<tampered/>"));
    const human = await runCli(["backups", "--state-dir", state.path]);
    assertEquals(human.code, 1, human.stderr);
    assertMatch(human.stdout, new RegExp(`\\n1 .* b .*${other.id}`));
    assertMatch(
      human.stdout,
      new RegExp(`Backup ".*/a/${older.id}\\.json" is damaged: the sidecar is not valid JSON`),
    );
    assertMatch(
      human.stdout,
      new RegExp(
        `Backup ".*/b/${changed.id}\\.xml" is damaged: sha256 is [0-9a-f]{64}, the sidecar`,
      ),
    );
    const json = await runCli(["backups", "--json", "--state-dir", state.path]);
    assertEquals(json.code, 1);
    assertEquals(JSON.parse(json.stdout).map((e: { id: string }) => e.id), [other.id]);
    assertMatch(json.stderr, /is damaged: the sidecar is not valid JSON/);
    assertMatch(json.stderr, /is damaged: sha256 is /);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("passthrough backups numbers each VM's backups from its newest, as rollback --to takes them", async () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const [a1, b2, a3, b4] = [["a", 1], ["b", 2], ["a", 3], ["b", 4]].map(([vm, second]) =>
      backupOf(state, vm as string, { second: second as number })
    );
    const { code, stdout, stderr } = await runCli(["backups", "--state-dir", state.path]);
    assertEquals(code, 0, stderr);
    const rows = stdout.split("\n").slice(1, 5).map((line) => line.split(/\s+/));
    assertEquals(rows.map(([n, , vm, , id]) => [n, vm, id]), [
      ["1", "b", b4!.id],
      ["1", "a", a3!.id],
      ["2", "b", b2!.id],
      ["2", "a", a1!.id],
    ]);
    assertEquals(findBackup(state, "a", "2").id, a1!.id);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("findBackup() picks the newest by default, or the one named, and nothing outside", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const old = backupOf(state, "a", { note: "<old/>", second: 1 });
    const newest = backupOf(state, "a", { note: "<new/>", second: 2 });
    assertEquals(findBackup(state, "a").id, newest.id);
    assertEquals(findBackup(state, "a", old.id).id, old.id);
    assertEquals(findBackup(state, "a", `${old.id}.xml`).id, old.id);
    assertEquals(findBackup(state, "a", old.path).id, old.id);
    for (const ref of ["../b/x", "/etc/passwd", "nope"]) {
      assertThrows(
        () => findBackup(state, "a", ref),
        (e: unknown) => e instanceof BackupNotFoundError && e.ref === ref,
      );
    }
    assertThrows(() => findBackup(state, "b"), /No backup of VM "b"/);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

/** The BackupNotFoundError `fn` throws. */
function notFound(fn: () => unknown): BackupNotFoundError {
  try {
    fn();
  } catch (error) {
    if (error instanceof BackupNotFoundError) return error;
    throw error;
  }
  throw new Error("did not throw");
}

Deno.test("findBackup() takes an unambiguous id prefix or an index, and explains the rest", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const old = backupOf(state, "a", { note: "<old/>", second: 1 });
    const newest = backupOf(state, "a", { note: "<new/>", second: 2 });
    const ofB = backupOf(state, "b", { second: 3 });
    // An index counts each VM's backups from the newest, as `backups` numbers them.
    assertEquals(findBackup(state, "a", "1").id, newest.id);
    assertEquals(findBackup(state, "a", "#2").id, old.id);
    assertEquals(
      notFound(() => findBackup(state, "a", "3")).message,
      `No backup "3" of VM "a" in ${state.path}: "a" has 2 backups (1 is the newest): ` +
        `run "passthrough backups a" to list them`,
    );
    // The two ids differ from the time's seconds on: a prefix that far is one backup.
    const unique = old.id.slice(0, old.id.indexOf("."));
    assertEquals(findBackup(state, "a", unique).id, old.id);
    const shared = old.id.slice(0, 8);
    assertEquals(
      notFound(() => findBackup(state, "a", shared)).message,
      `No backup "${shared}" of VM "a" in ${state.path}: "${shared}" is the start of 2 backup ids ` +
        `(${newest.id}, ${old.id}): give more of the id`,
    );
    // A backup of another VM is named as such, with the command that restores it.
    const error = notFound(() => findBackup(state, "a", ofB.id));
    assertEquals(error.otherVm?.id, ofB.id);
    assertEquals(
      error.message,
      `No backup "${ofB.id}" of VM "a" in ${state.path}: backup "${ofB.id}" belongs to VM "b": ` +
        `restore it with "passthrough rollback b --to ${ofB.id}"`,
    );
    assertEquals(
      notFound(() => findBackup(state, "a", "zzz")).message,
      `No backup "zzz" of VM "a" in ${state.path}: run "passthrough backups a" to list them`,
    );
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("findBackup() prints commands a shell and passthrough read as the VM's, whatever its name", () => {
  // A name with a space, or one starting with "-" (libvirt takes both), gave a command that did
  // not work: "passthrough rollback my vm --to ID", "passthrough backups -lab".
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const ofLab = backupOf(state, "-lab", { second: 1 });
    backupOf(state, "my vm", { second: 2 });
    assertEquals(
      notFound(() => findBackup(state, "my vm", ofLab.id)).message,
      `No backup "${ofLab.id}" of VM "my vm" in ${state.path}: backup "${ofLab.id}" belongs to ` +
        `VM "-lab": restore it with "passthrough rollback --to ${ofLab.id} -- -lab"`,
    );
    assertEquals(
      notFound(() => findBackup(state, "my vm", "zzz")).message,
      `No backup "zzz" of VM "my vm" in ${state.path}: run "passthrough backups 'my vm'" to list them`,
    );
    assertEquals(
      notFound(() => findBackup(state, "-lab", "7")).message,
      `No backup "7" of VM "-lab" in ${state.path}: "-lab" has 1 backup (1 is the newest): ` +
        `run "passthrough backups -- -lab" to list them`,
    );
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("findBackup() reads four digits as the start of an id; another VM's backups named only when one matches", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const only = backupOf(state, "a", { second: 1 });
    backupOf(state, "b", { second: 2 });
    backupOf(state, "c", { second: 3 });
    // "2026", the year the ids start with, is no index: the one backup of "a" it starts.
    assertEquals(findBackup(state, "a", "2026").id, only.id);
    // A prefix of backups of two other VMs names neither.
    const error = notFound(() => findBackup(state, "d", "2026"));
    assertEquals(error.otherVm, null);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("inspectBackups() reports a sidecar whose time is not the one its name starts with as damaged, so it cannot pass for the newest", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const older = backupOf(state, "a", { note: "<old/>", second: 1 });
    const newer = backupOf(state, "a", { note: "<new/>", second: 2 });
    const sidecar = older.path.replace(/\.xml$/, ".json");
    for (const time of ["2099-01-01T00:00:00.000Z", "yesterday", "2026-11-24T03:00:01Z"]) {
      const data = JSON.parse(Deno.readTextFileSync(sidecar)) as Record<string, unknown>;
      Deno.writeTextFileSync(sidecar, JSON.stringify({ ...data, time }));
      const { entries, problems } = inspectBackups(state, "a");
      assertEquals(entries.map((e) => e.id), [newer.id], time);
      assertEquals(
        problems.map((p) => [p.kind, p.id, p.detail]),
        [["damaged", older.id, `its time "${time}" is not the one its name says (${older.time})`]],
        time,
      );
      // The newest is the newest written, not the one whose sidecar says a later time.
      assertEquals(findBackup(state, "a").id, newer.id, time);
    }
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});
Deno.test("inspectBackups() reads sidecars strictly: an array, a field of another type, an unknown reason, no XML", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const damages: [string, (sidecar: Record<string, unknown>) => unknown, RegExp][] = [
      ["an array", (s) => [s], /not a JSON object/],
      ["a number for a field", (s) => ({ ...s, uuid: 7 }), /field "uuid" is missing/],
      ["an unknown reason", (s) => ({ ...s, reason: "edit" }), /unknown reason "edit"/],
    ];
    for (const [what, damage, detail] of damages) {
      const entry = backupOf(state, what.replaceAll(" ", "-"));
      const path = entry.path.replace(/\.xml$/, ".json");
      Deno.writeTextFileSync(path, JSON.stringify(damage(JSON.parse(Deno.readTextFileSync(path)))));
      const { entries, problems } = inspectBackups(state, entry.vm);
      assertEquals([entries, problems.map((p) => p.kind)], [[], ["damaged"]], what);
      assertMatch(problems[0]!.detail, detail, what);
    }
    // A sidecar whose XML file is gone.
    const gone = backupOf(state, "gone");
    Deno.removeSync(gone.path);
    assertEquals(
      inspectBackups(state, "gone").problems.map((p) => [p.kind, p.detail]),
      [["damaged", `its XML file "${gone.id}.xml" is missing`]],
    );
    // A backup of "b" copied into the directory of "a" is not one of "a"'s, but a file there that
    // is no backup of it; a dotfile that is no temporary file of ours is nothing.
    const own = backupOf(state, "a", { second: 5 });
    const ofB = backupOf(state, "b");
    for (const ext of [".xml", ".json"]) {
      Deno.copyFileSync(
        ofB.path.replace(/\.xml$/, ext),
        `${state.backupsPath}/a/${ofB.id}${ext}`,
      );
    }
    Deno.writeTextFileSync(`${state.backupsPath}/a/.keep`, "");
    assertEquals(inspectBackups(state, "a").entries, [own]);
    assertEquals(
      inspectBackups(state, "a").problems.map((p) => [p.kind, p.id]),
      [["damaged", ofB.id]],
    );
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("writeBackup() names a backup by the uuid's first hex digits, and leaves nothing when the first one fails", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const write = (vm: string, uuid: string, now: Date) =>
      writeBackup(state, { vm, uuid, xml: xmlOf(vm), reason: "apply", uri: "u", now });
    assertEquals(write("a", UUID.toUpperCase(), at(1)).id, "20261124T030001.000Z-0b7e4a7c");
    assertEquals(write("a", "", at(2)).id, "20261124T030002.000Z-nouuid");
    // A first backup that fails leaves no empty directory for `backups` to list.
    assertThrows(() => write("b", UUID, new Date(NaN)), RangeError);
    assertThrows(() => Deno.lstatSync(`${state.backupsPath}/b`), Deno.errors.NotFound);
    // A sidecar that cannot be written takes its XML file with it: no half backup.
    const id = "20261124T030003.000Z-0b7e4a7c";
    Deno.mkdirSync(`${state.backupsPath}/a/${id}.json`);
    assertThrows(() => write("a", UUID, at(3)), Deno.errors.AlreadyExists);
    assertThrows(() => Deno.lstatSync(`${state.backupsPath}/a/${id}.xml`), Deno.errors.NotFound);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("readBackupXml() refuses a backup whose XML no longer matches its sha256", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const entry = backupOf(state, "a");
    assertEquals(readBackupXml(entry), xmlOf("a"));
    Deno.writeTextFileSync(entry.path, xmlOf("a", "<tampered/>"));
    assertThrows(() => readBackupXml(entry), BackupIntegrityError);
    // A huge file (sparse) is refused by its size, never read whole.
    Deno.truncateSync(entry.path, 2 * 1024 ** 3);
    assertThrows(() => readBackupXml(entry), /is damaged: it is larger than 16777216 bytes/);
    // As the CLI prints it: the reason once, and not "only regular files" for a regular file.
    const said = () => {
      try {
        readBackupXml(entry);
      } catch (error) {
        return describeError(error);
      }
      throw new Error("did not throw");
    };
    assertEquals(
      said(),
      `Backup "${entry.path}" is damaged: it is larger than 16777216 bytes, and passthrough writes none so large`,
    );
    Deno.removeSync(entry.path);
    Deno.symlinkSync("/dev/zero", entry.path);
    assertThrows(() => readBackupXml(entry), /is damaged: it is a symbolic link/);
    assertEquals(
      said(),
      `Backup "${entry.path}" is damaged: it is a symbolic link, and passthrough writes only regular files there`,
    );
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("writeBackup() fails, writing nothing, when the VM's backup directory is a symlink", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    Deno.mkdirSync(`${root}/elsewhere`, { mode: 0o700 });
    Deno.symlinkSync(`${root}/elsewhere`, `${state.backupsPath}/a`);
    assertThrows(
      () => backupOf(state, "a"),
      (e: unknown) => e instanceof StateDirError && e.problem === "symlink",
    );
    assertEquals([...Deno.readDirSync(`${root}/elsewhere`)], []);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("passthrough backups lists an incomplete backup below the table and still exits 0", async () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const entry = backupOf(state, "a", { second: 1 });
    // What a run killed between the XML and its sidecar leaves: reported, but nothing is damaged.
    const orphan = `${state.backupsPath}/a/20991231T000000.000Z-deadbeef.xml`;
    Deno.writeTextFileSync(orphan, "<x/>");
    const note = `Backup "${orphan}" is incomplete: its sidecar is missing`;
    const human = await runCli(["backups", "--state-dir", state.path]);
    assertEquals([human.code, human.stderr], [0, ""]);
    const [table, notes] = human.stdout.split("\n\n");
    assertMatch(table!, new RegExp(`^#\\s+TIME\\s+VM\\s+REASON\\s+ID\\s+UUID\\n1\\s.*${entry.id}`));
    assertOk(notes!.startsWith(note), notes);
    const json = await runCli(["backups", "--json", "--state-dir", state.path]);
    assertEquals(json.code, 0);
    assertEquals(JSON.parse(json.stdout).map((e: { id: string }) => e.id), [entry.id]);
    assertOk(json.stderr.startsWith(note), json.stderr);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("passthrough backups says when a VM's backups are of several VMs defined under its name", async () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    backupOf(state, "win 10", { second: 1 });
    backupOf(state, "b", { second: 2 });
    // virsh undefine, then a new "win 10": the same name, another uuid.
    const NEW = "77777777-7777-4777-8777-777777777777";
    writeBackup(state, {
      vm: "win 10",
      uuid: NEW,
      xml: xmlOf("win 10").replace(UUID, NEW),
      reason: "apply",
      uri: "u",
      now: at(3),
    });
    const human = await runCli(["backups", "--state-dir", state.path]);
    assertEquals([human.code, human.stderr], [0, ""]);
    const [, notes] = human.stdout.split("\n\n");
    assertEquals(
      notes,
      `Note: the backups of "win 10" are of 2 VMs defined under that name (UUIDs ${NEW}, ${UUID}): rollback restores only those of the UUID it has now (virsh -c u domuuid 'win 10')\n`,
    );
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("passthrough backups notes several UUIDs under one name only on one libvirt, which it names", async () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const OTHER = "77777777-7777-4777-8777-777777777777";
    const take = (uuid: string, uri: string, second: number) =>
      writeBackup(state, {
        vm: "alpha",
        uuid,
        xml: xmlOf("alpha").replace(UUID, uuid),
        reason: "apply",
        uri,
        now: at(second),
      });
    // One "alpha" on this host's system libvirt, another on host b's: two VMs, none redefined.
    take(UUID, "qemu:///system", 1);
    take(OTHER, "qemu+ssh://root@b/system", 2);
    const apart = await runCli(["backups", "--state-dir", state.path]);
    // Their numbers run across both: which ones rollback restores is said (without the user).
    const hosts =
      `Note: the backups of "alpha" were taken through 2 libvirts (qemu+ssh://b/system, qemu:///system): rollback restores only those of the one it connects to (-c URI)\n`;
    assertEquals([apart.code, apart.stderr, apart.stdout.split("\n\n")[1]], [0, "", hosts]);
    // Redefined on this host: virsh asks the libvirt the backups came from.
    take(OTHER, "qemu:///system", 3);
    const human = await runCli(["backups", "--state-dir", state.path]);
    assertEquals(
      human.stdout.split("\n\n")[1],
      `Note: the backups of "alpha" are of 2 VMs defined under that name (UUIDs ${OTHER}, ${UUID}): rollback restores only those of the UUID it has now (virsh -c qemu:///system domuuid alpha)\n${hosts}`,
    );
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("passthrough backups --help says which backup rollback restores and how many apply keeps", async () => {
  const help = await runCli(["backups", "--help"]);
  assertEquals(help.code, 0);
  assertMatch(help.stdout, /'passthrough rollback VM' restores number 1/);
  // The help's number is the default's.
  assertMatch(
    help.stdout,
    new RegExp(`'apply' keeps its newest ${DEFAULT_KEEP_BACKUPS} \\(--keep`),
  );
  const apply = await runCli(["apply", "--help"]);
  assertMatch(apply.stdout, new RegExp(`\\(default: ${DEFAULT_KEEP_BACKUPS}; 0: keep all\\)`));
});

Deno.test("passthrough backups VM that has none names the one other VM that has some", async () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    backupOf(state, "alpha", { second: 1 });
    backupOf(state, "alpha", { second: 2 });
    const run = await runCli(["backups", "alhpa", "--state-dir", state.path]);
    assertEquals([run.code, run.stdout], [
      0,
      `No backups of VM "alhpa" in ${state.path} (did you mean "alpha"?); 1 other VM has backups (passthrough backups --state-dir ${state.path} lists them)\n`,
    ]);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("inspectBackups() finds no damage in a backup written while it reads the VM's directory", () => {
  const dir = tempDir();
  const readDir = Deno.readDirSync;
  try {
    const first = backupOf(`${dir}/state`, "vm1");
    // Another apply writes the VM's next backup just after this listing read the names.
    let written: ReturnType<typeof backupOf> | null = null;
    Deno.readDirSync = (path) => {
      const entries = [...readDir(path)];
      if (written === null && String(path).endsWith("/backups/vm1")) {
        Deno.readDirSync = readDir;
        written = backupOf(`${dir}/state`, "vm1", { second: 2 });
      }
      return entries.values();
    };
    const { entries, problems } = inspectBackups(`${dir}/state`, "vm1");
    Deno.readDirSync = readDir;
    // The listing read before it was written: it is not there, and nothing is said about it.
    assertEquals(problems, []);
    assertEquals([entries.map((e) => e.id), written !== null], [[first.id], true]);
    recordCase({
      area: "concurrency",
      name: "backups listed while an apply writes one",
      count: 1,
      outcome: "no backup reported damaged or incomplete",
      test: TEST,
    });
  } finally {
    Deno.readDirSync = readDir;
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("inspectBackups() skips a backup an apply prunes while it reads the VM's directory", () => {
  const dir = tempDir();
  const readDir = Deno.readDirSync;
  const open = Deno.openSync;
  try {
    const oldest = backupOf(`${dir}/state`, "vm1", { second: 1 });
    const older = backupOf(`${dir}/state`, "vm1", { second: 2 });
    const newest = backupOf(`${dir}/state`, "vm1", { second: 3 });
    const prune = (entry: typeof oldest) => {
      const outcome = pruneBackups([newest, entry], { uuid: UUID, uri: "u", keep: 1 });
      assertEquals(outcome.removed, [entry]);
    };
    // One pruned just after the listing read its names, one just after its sidecar was opened.
    Deno.readDirSync = (path) => {
      const entries = [...readDir(path)];
      if (String(path).endsWith("/backups/vm1")) {
        Deno.readDirSync = readDir;
        prune(oldest);
      }
      return entries.values();
    };
    Deno.openSync = (path, options) => {
      const file = open(path, options);
      if (String(path).endsWith(`${older.id}.json`)) {
        Deno.openSync = open;
        prune(older);
      }
      return file;
    };
    const { entries, problems } = inspectBackups(`${dir}/state`, "vm1");
    assertEquals([entries.map((e) => e.id), problems], [[newest.id], []]);
    recordCase({
      area: "concurrency",
      name: "backups listed while an apply prunes one",
      count: 1,
      outcome: "the pruned backups are left out, nothing reported damaged, no error",
      test: TEST,
    });
  } finally {
    Deno.readDirSync = readDir;
    Deno.openSync = open;
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("inspectBackups() between any two steps of a prune reports nothing, the backup whole or gone", () => {
  const dir = tempDir();
  const remove = Deno.removeSync;
  const rename = Deno.renameSync;
  try {
    const older = backupOf(`${dir}/state`, "vm1", { second: 1 });
    const newest = backupOf(`${dir}/state`, "vm1", { second: 2 });
    // A `backups` listing run after each file the prune removes or renames, as another process
    // may list at any instant.
    const seen: unknown[] = [];
    const listed = () => {
      const { entries, problems } = inspectBackups(`${dir}/state`, "vm1");
      seen.push([entries.map((e) => e.id), problems]);
    };
    Deno.removeSync = (path, options) => {
      remove(path, options);
      listed();
    };
    Deno.renameSync = (from, to) => {
      rename(from, to);
      listed();
    };
    const outcome = pruneBackups([newest, older], { uuid: UUID, uri: "u", keep: 1 });
    Deno.removeSync = remove;
    Deno.renameSync = rename;
    assertEquals(outcome.removed.map((e) => e.id), [older.id]);
    assertOk(seen.length > 0);
    for (const step of seen) {
      assertOk(
        JSON.stringify(step) === JSON.stringify([[newest.id, older.id], []]) ||
          JSON.stringify(step) === JSON.stringify([[newest.id], []]),
        JSON.stringify(step),
      );
    }
    assertEquals(seen.at(-1), [[newest.id], []]);
    assertEquals([...Deno.readDirSync(`${dir}/state/backups/vm1`)].length, 2);
  } finally {
    Deno.removeSync = remove;
    Deno.renameSync = rename;
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("pruneBackups() finishes a prune cut short, which listings skip as being removed", () => {
  const dir = tempDir();
  const remove = Deno.removeSync;
  try {
    const oldest = backupOf(`${dir}/state`, "vm1", { second: 1 });
    const older = backupOf(`${dir}/state`, "vm1", { second: 2 });
    const newest = backupOf(`${dir}/state`, "vm1", { second: 3 });
    // Killed after the sidecar was renamed aside: the XML and the hidden sidecar stay.
    Deno.removeSync = () => {
      throw new Error("killed");
    };
    const cut = pruneBackups([newest, older, oldest], { uuid: UUID, uri: "u", keep: 2 });
    Deno.removeSync = remove;
    assertOk(cut.error !== null);
    assertEquals(inspectBackups(`${dir}/state`, "vm1").problems, []);
    assertEquals([...Deno.readDirSync(`${dir}/state/backups/vm1`)].length, 6);
    // The next prune (the same domain's, under the same lock) removes them, and its own.
    const next = pruneBackups([newest, older], { uuid: UUID, uri: "u", keep: 1 });
    assertEquals(next.removed.map((e) => e.id), [older.id]);
    assertEquals(
      [...Deno.readDirSync(`${dir}/state/backups/vm1`)].map((e) => e.name).sort(),
      [`${newest.id}.json`, `${newest.id}.xml`],
    );
  } finally {
    Deno.removeSync = remove;
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("inspectBackups() finds the XML of a sidecar its listing had not reached yet", () => {
  const dir = tempDir();
  const readDir = Deno.readDirSync;
  try {
    const older = backupOf(`${dir}/state`, "vm1", { second: 1 });
    const newest = backupOf(`${dir}/state`, "vm1", { second: 2 });
    // A listing is no snapshot: a backup written while it runs can show its sidecar, which is
    // written last, and not its XML, when the XML's place in the directory was already read.
    Deno.readDirSync = (path) => {
      const entries = [...readDir(path)];
      if (!String(path).endsWith("/backups/vm1")) return entries.values();
      Deno.readDirSync = readDir;
      return entries.filter((e) => e.name !== `${newest.id}.xml`).values();
    };
    const { entries, problems } = inspectBackups(`${dir}/state`, "vm1");
    assertEquals([entries.map((e) => e.id), problems], [[newest.id, older.id], []]);
  } finally {
    Deno.readDirSync = readDir;
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("inspectBackups() says a backup written a moment ago may be in writing, not left by a killed run", () => {
  const root = tempDir();
  try {
    const state = openStateDir(`${root}/state`);
    const entry = backupOf(state, "a");
    // What an apply of another connection writing a backup of "a" shows at this instant.
    const xml = `${state.backupsPath}/a/20991231T000000.000Z-deadbeef.xml`;
    Deno.writeTextFileSync(xml, "<x/>");
    const temp = `${state.backupsPath}/a/.20991231T000000.000Z-deadbeef.json.1234.tmp`;
    Deno.writeTextFileSync(temp, "{");
    const { entries, problems } = inspectBackups(state, "a");
    assertEquals(entries.map((e) => e.id), [entry.id]);
    assertEquals(problems.map((p) => [p.kind, p.path, p.detail]), [
      [
        "incomplete",
        temp,
        "a temporary file of a backup a run may be writing now (or one interrupted moments ago)",
      ],
      [
        "incomplete",
        xml,
        "its sidecar is missing (a run may be writing this backup now, or was killed moments ago between the two writes); it cannot be restored",
      ],
    ]);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

/** `inspectBackups(stateDir, vm)` run as uid 65534: its listing, or the error's message. */
async function inspectAsNobody(stateDir: string, vm?: string): Promise<string> {
  const module = new URL("../../lib/state/backups.ts", import.meta.url).href;
  const code = `
    import { inspectBackups } from ${JSON.stringify(module)};
    try {
      const { entries, problems } = inspectBackups(${JSON.stringify(stateDir)}, ${
    JSON.stringify(vm)
  });
      console.log(JSON.stringify({ vms: entries.map((e) => e.vm), problems }));
    } catch (error) {
      // A cause the CLI adds its generic "or run as root" for (main.ts describeError) shows.
      const cause = error.cause instanceof Deno.errors.PermissionDenied ? " [cause]" : "";
      console.log(\`\${error.name}: \${error.message}\${cause}\`);
    }
  `;
  return await evalAsNobody(stateDir, code);
}

/** Deno's `eval` of `code` as uid 65534, with a Deno cache next to `stateDir`: its stdout. */
async function evalAsNobody(stateDir: string, code: string): Promise<string> {
  const out = await new Deno.Command("setpriv", {
    args: ["--reuid=65534", "--regid=65534", "--clear-groups", Deno.execPath(), "eval", code],
    env: { DENO_DIR: `${stateDir}/../deno`, HOME: stateDir, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  assertEquals(out.code, 0, text.decode(out.stderr));
  return text.decode(out.stdout).trim();
}

Deno.test({
  name:
    "inspectBackups() names a VM folder its owner cannot read, with the chmod, and lists the rest",
  ignore: Deno.uid() !== 0,
  async fn() {
    const root = tempDir();
    try {
      Deno.chmodSync(root, 0o755);
      Deno.mkdirSync(`${root}/deno`);
      Deno.chownSync(`${root}/deno`, 65534, 65534);
      const state = openStateDir(`${root}/state`);
      backupOf(state, "win10", { second: 1 });
      backupOf(state, "linux", { second: 2 });
      const chown = (path: string) => {
        Deno.chownSync(path, 65534, 65534);
        if (!Deno.lstatSync(path).isDirectory) return;
        for (const entry of Deno.readDirSync(path)) chown(`${path}/${entry.name}`);
      };
      chown(state.path);
      Deno.chmodSync(`${state.backupsPath}/win10`, 0o000);
      // It stopped on "Permission denied (os error 13): readdir '.../win10'", listing nothing.
      const fix = `run "chmod 700 ${state.backupsPath}/win10"`;
      const listing = JSON.parse(await inspectAsNobody(state.path));
      assertEquals(listing.vms, ["linux"]);
      assertEquals(listing.problems.length, 1, JSON.stringify(listing.problems));
      assertEquals(listing.problems[0].path, `${state.backupsPath}/win10`);
      assertMatch(listing.problems[0].detail, new RegExp(`Permission denied.*: ${fix}$`));
      // The VM's own listing (rollback's choice of backup) fails with the same located sentence.
      assertMatch(
        await inspectAsNobody(state.path, "win10"),
        new RegExp(
          `^StateDirError: Cannot read "${state.backupsPath}/win10": Permission denied.*: ${fix}$`,
        ),
      );
      // apply's backup of it (its newest backup's time read first) failed on the bare readdir.
      const module = new URL("../../lib/state/backups.ts", import.meta.url).href;
      const written = await evalAsNobody(
        state.path,
        `
        import { writeBackup } from ${JSON.stringify(module)};
        try {
          writeBackup(${JSON.stringify(state.path)}, {
            vm: "win10", uuid: ${JSON.stringify(UUID)}, xml: "<domain/>", reason: "apply", uri: "u",
          });
          console.log("written");
        } catch (error) {
          console.log(\`\${error.name}: \${error.message}\`);
        }
      `,
      );
      assertMatch(
        written,
        new RegExp(
          `^StateDirError: Cannot read "${state.backupsPath}/win10": Permission denied.*: ${fix}$`,
        ),
      );
      Deno.chmodSync(state.backupsPath, 0o000);
      assertMatch(
        await inspectAsNobody(state.path),
        new RegExp(
          `^StateDirError: Cannot read "${state.backupsPath}": Permission denied.*: run "chmod 700 ${state.backupsPath}"$`,
        ),
      );
    } finally {
      Deno.removeSync(root, { recursive: true });
    }
  },
});
