/**
 * Golden-file tests: the expected diff text is committed under `tests/fixtures/diffs/`. To
 * regenerate after an intended change, run with `UPDATE_GOLDEN=1` and review the git diff.
 */
import { assertEquals, assertMatch, assertOk, assertThrows } from "../helpers/assert.ts";
import {
  hasSignificantChanges,
  MAX_CONTEXT_LINE,
  renderDomainDiff,
} from "../../lib/render/diff.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import { editDomainXml } from "../../lib/domain/domain_xml.ts";
import type { DeviceIdentity } from "../../lib/plan/types.ts";

const DOMAINS = new URL("../fixtures/domains/", import.meta.url);
const GOLDEN = new URL("../fixtures/diffs/", import.meta.url);
const UPDATE = Deno.env.get("UPDATE_GOLDEN") === "1";

function domain(name: string): string {
  return Deno.readTextFileSync(new URL(name, DOMAINS));
}

function assertGolden(actual: string, name: string): void {
  const url = new URL(name, GOLDEN);
  if (UPDATE) Deno.writeTextFileSync(url, actual);
  assertEquals(actual, Deno.readTextFileSync(url));
}

const GPU: DeviceIdentity = {
  address: "0000:01:00.0",
  vendorId: "10de",
  deviceId: "2684",
  subsystemVendorId: "1043",
  subsystemDeviceId: "88e2",
  classCode: "030000",
  serial: null,
  driver: "nvidia",
  rule: "gpu",
};
const AUDIO: DeviceIdentity = {
  ...GPU,
  address: "0000:01:00.1",
  deviceId: "22ba",
  classCode: "040300",
  driver: "snd_hda_intel",
};

function withGpu(xml: string): string {
  return editDomainXml(xml, {
    remove: [],
    add: [
      { address: GPU.address, managed: true, rom: { bar: "on" } },
      { address: AUDIO.address, managed: true },
    ],
    records: [GPU, AUDIO],
  });
}

Deno.test("renderDomainDiff() shows added hostdevs and our metadata", () => {
  const before = domain("pci-rom.xml");
  assertGolden(renderDomainDiff(before, withGpu(before), { vm: "QEMUGuest2" }), "add_gpu.diff");
});

Deno.test("renderDomainDiff() shows removed hostdevs and metadata", () => {
  const with2 = withGpu(domain("pci-rom.xml"));
  const after = editDomainXml(with2, {
    remove: [GPU.address, AUDIO.address],
    add: [],
    records: [],
  });
  assertGolden(renderDomainDiff(with2, after, { vm: "QEMUGuest2" }), "remove_gpu.diff");
});

Deno.test("renderDomainDiff() shows a moved card as its changed record and source address", () => {
  const with2 = withGpu(domain("hostdev-pci-multifunction.xml"));
  const moved = editDomainXml(with2, {
    remove: [AUDIO.address],
    add: [{ address: "0000:02:00.1", managed: true }],
    records: [GPU, { ...AUDIO, address: "0000:02:00.1" }],
  });
  assertGolden(renderDomainDiff(with2, moved, { vm: "delete", context: 1 }), "move_audio.diff");
});

Deno.test("renderDomainDiff() colours +, - and @@ lines only when asked", () => {
  const before = domain("pci-rom.xml");
  const after = withGpu(before);
  const colored = renderDomainDiff(before, after, { vm: "QEMUGuest2", color: true });
  assertGolden(colored, "add_gpu_color.diff");
  assertOk(
    colored.includes("\x1b[32m+    <hostdev mode='subsystem' type='pci' managed='yes'>\x1b[39m"),
  );
  assertOk(colored.includes("\x1b[36m@@ "));
  // Stripping the escapes gives the plain rendering.
  // deno-lint-ignore no-control-regex
  const stripped = colored.replace(/\x1b\[[0-9;]*m/g, "");
  assertEquals(stripped, renderDomainDiff(before, after, { vm: "QEMUGuest2" }));
  assertOk(!renderDomainDiff(before, after, { vm: "QEMUGuest2" }).includes("\x1b"));
});

Deno.test("renderDomainDiff() ignores quote style and whitespace-only changes", () => {
  const before = domain("pci-rom.xml");
  const reformatted = before
    .replaceAll("'", '"')
    .replace('<memballoon model="virtio"/>', "<memballoon  model='virtio' ></memballoon>")
    .replaceAll("\n  ", "\n\t")
    .replace("</domain>\n", "</domain>   ");
  assertOk(reformatted !== before);
  assertEquals(hasSignificantChanges(before, reformatted), false);
  assertEquals(renderDomainDiff(before, reformatted, { vm: "QEMUGuest2" }), "");
});

Deno.test("renderDomainDiff() prints original lines around insignificant changes", () => {
  const before = "<domain>\n  <name>vm</name>\n  <devices>\n  </devices>\n</domain>\n";
  const after =
    '<domain>\n    <name>vm</name>\n  <devices>\n    <disk type="file"/>\n  </devices>\n</domain>\n';
  assertGolden(renderDomainDiff(before, after, { vm: "vm" }), "mixed_whitespace.diff");
});

Deno.test("renderDomainDiff() keeps separate hunks for distant changes and honours context", () => {
  const lines = Array.from({ length: 30 }, (_, i) => `  <l n='${i}'/>`);
  const before = ["<domain>", ...lines, "</domain>", ""].join("\n");
  const changed = [...lines];
  changed[2] = "  <l n='two'/>";
  changed[25] = "  <l n='twenty-five'/>";
  const after = ["<domain>", ...changed, "</domain>", ""].join("\n");
  assertGolden(renderDomainDiff(before, after, { vm: "vm", context: 2 }), "two_hunks.diff");
  const wide = renderDomainDiff(before, after, { vm: "vm", context: 20 });
  assertEquals(wide.split("\n").filter((l) => l.startsWith("@@")).length, 1);
  const none = renderDomainDiff(before, after, { vm: "vm", context: 0 });
  assertEquals(none.split("\n").filter((l) => l.startsWith(" ")).length, 0);
});

Deno.test("renderDomainDiff() refuses a negative context", () => {
  assertThrows(() => renderDomainDiff("<a/>", "<b/>", { vm: "vm", context: -1 }), RangeError);
});

Deno.test("hasSignificantChanges() sees value, element and text changes", () => {
  assertEquals(hasSignificantChanges("<a x='1'/>", "<a x='2'/>"), true);
  assertEquals(hasSignificantChanges("<a x='1'/>", "<a y='1'/>"), true);
  assertEquals(hasSignificantChanges("<a>t</a>", "<a>t </a>"), true);
  assertEquals(hasSignificantChanges("<a/>\n<b/>", "<b/>\n<a/>"), true);
  assertEquals(hasSignificantChanges("<a x='it&apos;s'/>", `<a x="it's"/>`), false);
  assertEquals(hasSignificantChanges("<a/>\n\n<b/>\n", "<a/>\n<b/>"), false);
  assertEquals(hasSignificantChanges("<a></a>", "<a/>"), false);
});

Deno.test("hasSignificantChanges() sees the spaces and blank lines of text spanning lines", () => {
  const yaml = (text: string) =>
    `<domain>\n  <description>${text}</description>\n  <vcpu>1</vcpu>\n</domain>\n`;
  const nested = yaml("users:\n  - name: admin\n    sudo: ALL\n");
  assertEquals(hasSignificantChanges(nested, yaml("users:\n- name: admin\nsudo: ALL\n")), true);
  assertEquals(
    hasSignificantChanges(nested, yaml("users:\n  - name: admin\n\n    sudo: ALL\n")),
    true,
  );
  assertEquals(
    hasSignificantChanges(nested, yaml("users:  \n  - name: admin\n    sudo: ALL\n")),
    true,
  );
  // Layout around the text is still layout.
  assertEquals(hasSignificantChanges(nested, `\n${nested.replaceAll("\n  <", "\n\t<")}`), false);
  const diff = renderDomainDiff(nested, yaml("users:\n- name: admin\nsudo: ALL\n"), { vm: "vm" });
  assertEquals(diff.split("\n").filter((l) => /^[-+](?!-- |\+\+ )/.test(l)), [
    "-  - name: admin",
    "-    sudo: ALL",
    "+- name: admin",
    "+sudo: ALL",
  ]);
});

Deno.test("renderDomainDiff() cuts long unchanged lines, never changed ones", () => {
  const description = `  <description>${"x".repeat(3 * 1024 * 1024)}</description>`;
  const long = "  <title>" + "y".repeat(500) + "</title>";
  const before = `<domain>\n${description}\n  <vcpu>1</vcpu>\n</domain>\n`;
  const after = `<domain>\n${description}\n  <vcpu>2</vcpu>\n${long}\n</domain>\n`;
  const diff = renderDomainDiff(before, after, { vm: "vm" });
  assertOk(diff.length < 2000, `${diff.length} characters`);
  const context = diff.split("\n").find((l) => l.startsWith("   <description>"))!;
  assertEquals(context.length <= MAX_CONTEXT_LINE + 1, true);
  assertMatch(context, /… \(3145\d{3} more characters, unchanged\)$/);
  assertOk(diff.split("\n").includes(`+${long}`), "a changed line is shown whole");
  recordCase({
    area: "escaping",
    name: "3 MB <description> line as diff context",
    count: 1,
    outcome: "cut to 200 characters, changed lines whole",
    test: "tests/render/diff_test.ts",
  });
});

Deno.test("renderDomainDiff() prints no carriage return of a CRLF definition", () => {
  const before = "<domain>\r\n  <name>vm</name>\r\n  <vcpu>1</vcpu>\r\n</domain>\r\n";
  const after = before.replace("<vcpu>1</vcpu>", "<vcpu>2</vcpu>");
  const diff = renderDomainDiff(before, after, { vm: "vm" });
  // A carriage return would send the terminal's cursor back over the line it ends.
  assertEquals(
    diff,
    "--- vm (current)\n+++ vm (new)\n@@ -1,4 +1,4 @@\n <domain>\n   <name>vm</name>\n" +
      "-  <vcpu>1</vcpu>\n+  <vcpu>2</vcpu>\n </domain>\n",
  );
});

Deno.test("hasSignificantChanges() sees lines added at the end or removed from it", () => {
  const before = "<domain>\n  <name>vm</name>\n";
  assertEquals(hasSignificantChanges(before, `${before}</domain>\n`), true);
  assertEquals(hasSignificantChanges(`${before}</domain>\n`, before), true);
});

Deno.test("renderDomainDiff() refuses a context that is not a whole number", () => {
  assertThrows(
    () => renderDomainDiff("<a/>", "<b/>", { vm: "vm", context: 1.5 }),
    RangeError,
    '"1.5"',
  );
});

Deno.test("renderDomainDiff() joins hunks whose contexts touch, as diff -u does", () => {
  const lines = Array.from({ length: 20 }, (_, i) => `  <l n='${i}'/>`);
  const render = (gap: number) => {
    const changed = [...lines];
    changed[3] = "  <l n='first'/>";
    changed[3 + gap + 1] = "  <l n='second'/>";
    return renderDomainDiff(lines.join("\n"), changed.join("\n"), { vm: "vm", context: 2 });
  };
  const hunks = (diff: string) => diff.split("\n").filter((l) => l.startsWith("@@"));
  // Four unchanged lines between the changes: two of context after one, two before the other.
  assertEquals(hunks(render(4)), ["@@ -2,10 +2,10 @@"]);
  assertEquals(hunks(render(5)), ["@@ -2,5 +2,5 @@", "@@ -8,5 +8,5 @@"]);
});

Deno.test("renderDomainDiff() numbers a hunk with no old or no new lines as diff -u does", () => {
  const before = "<domain>\n  <name>vm</name>\n</domain>\n";
  const added = "<domain>\n  <name>vm</name>\n  <vcpu>2</vcpu>\n</domain>\n";
  // With no line on one side, the hunk starts at the line before the change.
  assertEquals(
    renderDomainDiff(before, added, { vm: "vm", context: 0 }).split("\n").slice(2, 4),
    ["@@ -2,0 +3,1 @@", "+  <vcpu>2</vcpu>"],
  );
  assertEquals(
    renderDomainDiff(added, before, { vm: "vm", context: 0 }).split("\n").slice(2, 4),
    ["@@ -3,1 +2,0 @@", "-  <vcpu>2</vcpu>"],
  );
});

Deno.test("renderDomainDiff() cuts an unchanged line from one character over the limit", () => {
  const line = (length: number) => `  <title>${"t".repeat(length - 17)}</title>`;
  const render = (context: string) =>
    renderDomainDiff(
      `<domain>\n${context}\n  <vcpu>1</vcpu>\n</domain>\n`,
      `<domain>\n${context}\n  <vcpu>2</vcpu>\n</domain>\n`,
      { vm: "vm" },
    ).split("\n")[4]!;
  assertEquals(render(line(MAX_CONTEXT_LINE)), ` ${line(MAX_CONTEXT_LINE)}`);
  const cut = render(line(MAX_CONTEXT_LINE + 1));
  assertEquals(
    cut,
    ` ${line(MAX_CONTEXT_LINE + 1).slice(0, 160)}… (41 more characters, unchanged)`,
  );
  // An emoji across the cut is left out whole: no half of a surrogate pair is printed.
  const emoji = render(`${"e".repeat(159)}😀${"e".repeat(100)}`);
  assertEquals(emoji, ` ${"e".repeat(159)}… (102 more characters, unchanged)`);
});

Deno.test("renderDomainDiff() paints removed lines red", () => {
  const before = "<domain>\n  <vcpu>1</vcpu>\n</domain>\n";
  const colored = renderDomainDiff(before, "<domain>\n</domain>\n", { vm: "vm", color: true });
  assertOk(colored.includes("\x1b[31m-  <vcpu>1</vcpu>\x1b[39m"), colored);
});
