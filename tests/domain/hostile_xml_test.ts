/**
 * Hostile domain XML and markup in names and values: DOCTYPE and entity declarations are refused
 * (never expanded, never fetched), huge documents and unusual namespaces are handled, a doctored
 * backup cannot be rolled back, and quotes, `<`, `&` and newlines in rule names, ROM paths and VM
 * names are escaped so they come back from libvirt exactly as written.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { writeTempWorld } from "../helpers/world.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { DomainXmlError, editDomainXml, parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { readRecordsLeniently } from "../../lib/domain/lenient.ts";
import { listBackups, writeBackup } from "../../lib/state/backups.ts";
import { sha256Hex } from "../../lib/state/sha256.ts";
import { openStateDir } from "../../lib/state/state_dir.ts";
import { rollbackVm } from "../../lib/apply/rollback.ts";
import { applyPlan } from "../../lib/apply/apply.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { loadHost } from "../../cli/host_options.ts";
import { renderPlan } from "../../cli/render_plan.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import { demoTree, snapshotDir, snapshotDomains } from "../helpers/reliability.ts";

const TEST = "tests/domain/hostile_xml_test.ts";

const HOSTDEV =
  `<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x21' slot='0x00' function='0x0'/></source></hostdev>`;

function domain(body: string, prolog = ""): string {
  return `${prolog}<domain type='kvm'>\n  <name>vm</name>\n  ${body}\n  <devices>\n    ${HOSTDEV}\n  </devices>\n</domain>\n`;
}

const REFUSED: [string, string][] = [
  [
    "DOCTYPE with an internal entity",
    domain("<description>&x;</description>", `<!DOCTYPE domain [<!ENTITY x "expanded">]>\n`),
  ],
  [
    "external entity (file:///etc/passwd)",
    domain(
      "<description>&xxe;</description>",
      `<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n`,
    ),
  ],
  [
    "parameter entity fetching a URL",
    domain("", `<!DOCTYPE domain [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>\n`),
  ],
  [
    "billion laughs",
    domain(
      "<description>&l9;</description>",
      `<!DOCTYPE domain [<!ENTITY l0 "ha">${
        Array.from({ length: 9 }, (_, i) => `<!ENTITY l${i + 1} "${`&l${i};`.repeat(10)}">`).join(
          "",
        )
      }]>\n`,
    ),
  ],
  ["DOCTYPE after a comment", domain("", `<!-- hi -->\n<!DOCTYPE domain SYSTEM "x.dtd">\n`)],
  ["undeclared entity reference", domain("<description>&xxe;</description>")],
  ["character reference to NUL in the name", domain("").replace("<name>vm", "<name>v&#0;m")],
  ["unclosed element", domain("<description>open")],
];

Deno.test("parseDomainXml() refuses DOCTYPE, entity declarations and bad references, expanding nothing", () => {
  const passwd = (() => {
    try {
      return Deno.readTextFileSync("/etc/passwd").split("\n")[0] ?? "root:x:";
    } catch {
      return "root:x:";
    }
  })();
  for (const [name, xml] of REFUSED) {
    let caught: unknown = null;
    try {
      parseDomainXml(xml);
    } catch (error) {
      caught = error;
    }
    assertOk(caught instanceof DomainXmlError, `${name}: ${caught}`);
    assertOk(caught.line >= 1, name);
    assertOk(!caught.message.includes(passwd) && !caught.message.includes("hahaha"), name);
    let editError: unknown = null;
    try {
      editDomainXml(xml, {
        remove: [],
        add: [{ address: "0000:22:00.0", managed: true }],
        records: [],
      });
    } catch (error) {
      editError = error;
    }
    assertOk(editError instanceof DomainXmlError, `${name}: edit ${editError}`);
    recordCase({
      area: "domain-xml",
      name,
      count: 1,
      outcome: "DomainXmlError with a position; nothing expanded or fetched",
      test: TEST,
    });
  }
});

Deno.test("parseDomainXml() refuses our namespace declared by another tool with no records element, as the start guard refuses its starts", () => {
  // Nothing this version writes: records in a form it does not read may be in it. plan read the
  // VM as holding none while the guard refused every start of it.
  const ns = "urn:passthrough:hostdevs:1";
  const cases: [string, string, string][] = [
    [
      "our namespace bound to an odd prefix by another tool",
      domain(`<metadata><zz:other xmlns:zz='${ns}'/></metadata>`),
      "line 3, column 13",
    ],
    [
      "our namespace declared on <metadata>, no records element",
      domain(`<metadata xmlns:pt='${ns}'><app:x xmlns:app='urn:app'/></metadata>`),
      "line 3, column 3",
    ],
  ];
  for (const [name, xml, at] of cases) {
    assertEquals(
      readRecordsLeniently(xml).problem,
      "the domain XML holds passthrough records that cannot be read: the records namespace is " +
        "declared on another element than <hostdevs>",
      name,
    );
    let caught: unknown = null;
    try {
      parseDomainXml(xml);
    } catch (error) {
      caught = error;
    }
    assertOk(caught instanceof DomainXmlError, `${name}: ${caught}`);
    assertEquals(
      caught.message,
      "The records namespace is declared on another element than <hostdevs>, and no records " +
        "element declares it: the start guard refuses every start of the VM until this " +
        `declaration is removed, with any element in that namespace: at ${at}`,
      name,
    );
    recordCase({
      area: "domain-xml",
      name,
      count: 1,
      outcome: "DomainXmlError in the start guard's words, as the guard refuses its starts",
      test: TEST,
    });
  }
});

Deno.test("parseDomainXml() reads huge documents, CDATA, processing instructions and unusual namespaces", () => {
  const accepted: [string, string, number][] = [
    ["20 MB description", domain(`<description>${"x&amp;".repeat(4_000_000)}</description>`), 1],
    [
      "CDATA holding a fake hostdev",
      domain(`<description><![CDATA[${HOSTDEV.replace("0x21", "0x99")}]]></description>`),
      1,
    ],
    [
      "processing instruction",
      domain("<?pi data?>", "<?xml version='1.0' encoding='UTF-8'?>\n"),
      1,
    ],
    [
      "default namespace on foreign metadata",
      domain(
        `<metadata><x xmlns='urn:other'><hostdev><source><address bus='0x77'/></source></hostdev></x></metadata>`,
      ),
      1,
    ],
  ];
  for (const [name, xml, hostdevs] of accepted) {
    const parsed = parseDomainXml(xml);
    assertEquals([parsed.name, parsed.hostdevs.length], ["vm", hostdevs], name);
    assertEquals(parsed.hostdevs[0]?.address, "0000:21:00.0", name);
    const added = editDomainXml(xml, {
      remove: [],
      add: [{ address: "0000:22:00.0", managed: true }],
      records: [{
        address: "0000:22:00.0",
        vendorId: "10de",
        deviceId: "1b80",
        subsystemVendorId: null,
        subsystemDeviceId: null,
        classCode: "030000",
        serial: null,
        driver: null,
        rule: "r",
      }],
    });
    assertEquals(
      editDomainXml(added, { remove: ["0000:22:00.0"], add: [], records: [] }),
      xml,
      name,
    );
    recordCase({
      area: "domain-xml",
      name,
      count: 1,
      outcome: "read; edit round-trips byte for byte",
      test: TEST,
    });
  }
  // A prefixed root element is not a libvirt domain.
  assertOk(
    (() => {
      try {
        parseDomainXml(
          `<lv:domain xmlns:lv='http://libvirt.org/schemas/domain'><lv:name>vm</lv:name></lv:domain>`,
        );
        return false;
      } catch (error) {
        return error instanceof DomainXmlError;
      }
    })(),
    "prefixed root refused",
  );
  recordCase({
    area: "domain-xml",
    name: "prefixed root element (lv:domain)",
    count: 1,
    outcome: "DomainXmlError",
    test: TEST,
  });
});

const WORLD = (name: string) =>
  `<node>
  <domain type='test'>
    <name>${name}</name>
    <uuid>4dea22b3-1d52-d8f3-2516-782e98a3fa01</uuid>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
  </domain>
</node>`;

Deno.test("rollbackVm() refuses a doctored backup with a DOCTYPE and changes nothing", async () => {
  await using tree = await demoTree();
  await using world = await writeTempWorld(WORLD("vm"));
  using port = openLibvirtPort(world.uri);
  const stateDir = `${tree.dir}/state`;
  const current = port.getPersistentXml("vm", { secure: true });
  const hostile = current.replace(
    "<domain",
    `<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<domain`,
  ).replace("</name>", "</name>\n  <description>&xxe;</description>");
  const entry = writeBackup(openStateDir(stateDir), {
    vm: "vm",
    uuid: "4dea22b3-1d52-d8f3-2516-782e98a3fa01",
    xml: hostile,
    reason: "apply",
    uri: port.uri,
  });
  assertEquals(entry.sha256, sha256Hex(hostile));
  const domains = snapshotDomains(port);
  const state = snapshotDir(stateDir);
  let outcome: string;
  try {
    const report = await rollbackVm("vm", {
      libvirt: port,
      stateDir,
      confirm: () => Promise.resolve(true),
    });
    assertEquals(report.status, "failed");
    outcome = report.message;
  } catch (error) {
    outcome = (error as Error).message;
  }
  assertMatch(outcome, /DOCTYPE/);
  assertEquals(snapshotDomains(port), domains);
  assertEquals(snapshotDir(stateDir), state);
  assertEquals(listBackups(stateDir, "vm").length, 1);
  recordCase({
    area: "domain-xml",
    name: "rollback from a doctored backup with DOCTYPE and external entity",
    count: 1,
    outcome: "refused; definitions and state directory byte-identical",
    test: TEST,
  });
});

Deno.test("markup in rule names and ROM paths survives plan, define and re-plan exactly (no injection)", async () => {
  await using tree = await demoTree();
  await using world = await writeTempWorld(WORLD("vm"));
  using port = openLibvirtPort(world.uri);
  // A rule name is one line without tabs (the config refuses others): markup is what may inject.
  const ruleName = `gpu'"<x>&amp; </passthrough:device>`;
  // libvirt's schema allows no newline in a file path; everything else must pass through.
  const romFile = `/roms/a'b"<c>&d .rom`;
  const config = parseConfig(
    [
      "version: 1",
      "vms:",
      "  vm:",
      "    devices:",
      `      - name: ${JSON.stringify(ruleName)}`,
      '        match: { vendor_device_id: "10de:1b80" }',
      `        rom: { file: ${JSON.stringify(romFile)} }`,
      "",
    ].join("\n"),
    { file: "markup.yaml" },
  );
  const host = await loadHost(tree.sysfs);
  const plan = planHostdevs({ config, host, libvirt: port });
  const vm = plan.vms[0]!;
  assertEquals(vm.errors, []);
  // Nothing in the planned XML is markup the user did not write as text.
  const desired = parseDomainXml(vm.desiredXml);
  assertEquals(desired.records.map((r) => r.rule), [ruleName, ruleName]);
  assertOk(!vm.desiredXml.includes("<x>"), "no injected element");
  renderPlan(plan, { color: false });
  const report = await applyPlan(plan, {
    libvirt: port,
    stateDir: `${tree.dir}/state`,
    confirm: () => Promise.resolve("yes"),
  });
  assertEquals(report.changed, ["vm"], JSON.stringify(report.vms));
  const stored = port.getPersistentXml("vm");
  assertEquals(parseDomainXml(stored).records.map((r) => r.rule), [ruleName, ruleName]);
  const again = planHostdevs({ config, host, libvirt: port });
  assertEquals(again.vms[0]?.changed, false, again.vms[0]?.desiredXml);
  recordCase({
    area: "escaping",
    name: "rule name and ROM path with ' \" < > & and a closing tag",
    count: 1,
    outcome: "escaped; libvirt returns them exactly; re-plan changes nothing",
    test: TEST,
  });
});

Deno.test("a domain named with quotes, < and & outside the config is quoted, never injected, in refusals", async () => {
  await using tree = await demoTree();
  const odd = `o'dd"<b>&amp;`;
  await using world = await writeTempWorld(`<node>
  <domain type='test'>
    <name>vm</name>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
  </domain>
  <domain type='test'>
    <name>${odd.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll('"', "&quot;")}</name>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>${HOSTDEV.replace("0x0'", "0x1'")}</devices>
  </domain>
</node>`);
  using port = openLibvirtPort(world.uri);
  assertOk(port.listDomains().some((d) => d.name === odd), "libvirt kept the odd name");
  const plan = planHostdevs({
    config: parseConfig(
      `version: 1\nvms:\n  vm:\n    devices:\n      - match: { vendor_device_id: "10de:1b80" }\n`,
      { file: "c.yaml" },
    ),
    host: await loadHost(tree.sysfs),
    libvirt: port,
  });
  const refusal = plan.vms[0]!.errors.find((e) => e.code === "group-shared-with-other-vm");
  assertOk(refusal !== undefined, JSON.stringify(plan.vms[0]!.errors));
  assertOk(refusal.message.includes(`"${odd}"`), refusal.message);
  assertEquals(plan.vms[0]!.desiredXml, plan.vms[0]!.currentXml);
  assertEquals(JSON.parse(JSON.stringify(plan)).vms[0].errors[0].message, refusal.message);
  recordCase({
    area: "escaping",
    name: "domain outside the config named o'dd\"<b>&amp; holding a group member",
    count: 1,
    outcome: "refusal quotes the exact name; XML unchanged",
    test: TEST,
  });
});
