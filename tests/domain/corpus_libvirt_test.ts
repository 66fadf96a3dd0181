/**
 * What libvirt holds, not just the text the tool writes: a domain defined in libvirt's test driver
 * goes through `plan` + `apply` adding a managed hostdev, `apply` removing it, `rollback` to the
 * newest backup and `rollback` to the oldest, and after each step its inactive definition
 * (`virDomainGetXMLDesc` with `INACTIVE | SECURE`, through `ffi/`) must be exactly what it was
 * at the matching earlier step. libvirt's own output is the comparison's normal form, so only what
 * libvirt itself normalises is ignored; a definition libvirt would reformat again on a second
 * define (a few of its test files move auto-indexed controllers) is taken after that second define.
 * The diff shown before each define must reproduce, line for line, the XML defined.
 *
 * Inputs: the libvirt test domains committed in `tests/fixtures/domains/` and hand-made cases the
 * corpus lacks (CDATA, CRLF, tabs, an XML declaration, Unicode names, numeric references, other
 * tools' metadata, a definition of megabytes); with `../shared/libvirt-domains/` present, its
 * files with a hostdev of any kind, an `<interface type='hostdev'>`, a comment, a namespace or an
 * entity (about half of its 409; each validated define costs tens of milliseconds), through the
 * define, edit and read-back alone (the apply and rollback steps define the text they are given,
 * which the first tier checks). The test driver drops what only a hypervisor driver keeps
 * (`<qemu:commandline>`, for one), so the first tier runs again on a real QEMU driver when this
 * machine can start one.
 */
import { assertEquals, assertOk } from "../helpers/assert.ts";
import { Connection } from "../../ffi/connection.ts";
import { connectionPort } from "../../ffi/port.ts";
import { applyPlan } from "../../lib/apply/apply.ts";
import { rollbackVm } from "../../lib/apply/rollback.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { editDomainXml, parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import { renderDomainDiff } from "../../lib/render/diff.ts";
import { listBackups } from "../../lib/state/backups.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import { gpuIdentity } from "../helpers/devices.ts";
import { libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";

const FIXTURES = new URL("../fixtures/domains/", import.meta.url);
const CORPUS = new URL("../../../shared/libvirt-domains/", import.meta.url);
const GPU = "0000:7e:00.0";

const HOST = topologyFromDescription({
  devices: [{
    bdf: GPU,
    group: 30,
    class: "0x030000",
    vendor: "0x10de",
    device: "0x1b06",
    subsystem_vendor: null,
    subsystem_device: null,
    driver: "vfio-pci",
    revision: null,
  }],
}, { source: "corpus-libvirt" });

function xmlFiles(dir: URL): { name: string; xml: string }[] {
  return [...Deno.readDirSync(dir)]
    .filter((e) => e.isFile && e.name.endsWith(".xml"))
    .map((e) => e.name)
    .sort()
    .map((name) => ({ name, xml: Deno.readTextFileSync(new URL(name, dir)) }));
}

/**
 * The corpus files `INDEX.tsv` lists with a hostdev of any kind, an `<interface type='hostdev'>`,
 * a comment, a namespace declaration or a character entity.
 */
function corpusSubset(): { name: string; xml: string }[] {
  const [header = "", ...rows] = Deno.readTextFileSync(new URL("INDEX.tsv", CORPUS)).trim()
    .split("\n").map((line) => line.split("\t"));
  const column = (row: string[], name: string) => row[header.indexOf(name)] ?? "";
  return rows
    .filter((row) =>
      column(row, "hostdev_kinds") !== "-" || column(row, "comments") !== "0" ||
      column(row, "foreign_ns") !== "no" || column(row, "entities") !== "-"
    )
    .map((row) => column(row, "file"))
    .sort()
    .map((name) => ({ name, xml: Deno.readTextFileSync(new URL(name, CORPUS)) }));
}

function corpusPresent(): boolean {
  try {
    return Deno.statSync(CORPUS).isDirectory;
  } catch {
    return false;
  }
}

/** A domain of the hand-made cases: q35, shut off, `extra` after `<uuid>`, `devices` inside. */
function handMade(extra: string, options: { devices?: string; head?: string; nl?: string } = {}) {
  const nl = options.nl ?? "\n";
  return `${options.head ?? ""}<domain type='kvm'>${nl}  <name>vm</name>${nl}` +
    `  <uuid>6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01</uuid>${nl}${extra}` +
    `  <memory unit='KiB'>1048576</memory>${nl}` +
    `  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>${nl}` +
    `  <devices>${nl}${options.devices ?? ""}  </devices>${nl}</domain>${nl}`;
}

const HAND_MADE: { name: string; xml: string }[] = Object.entries({
  cdata: handMade("  <description><![CDATA[a <b> & </devices> ]]></description>\n"),
  declaration: handMade("", { head: "<?xml version='1.0' encoding='UTF-8'?>\n" }),
  crlf: handMade("  <title>x</title>\r\n", { nl: "\r\n" }),
  tabs: handMade("\t<title>\tx</title>\n", {
    devices:
      "\t\t<disk type='file' device='disk'>\t<source file='/a'/><target dev='vda'/></disk>\n",
  }),
  unicode: handMade(
    "  <title>Ünïcødé 🎮 — x</title>\n  <description>日本語 &lt;b&gt; &#x1F600; &#169;</description>\n",
  ).replace("<name>vm</name>", "<name>vm-日本 é</name>"),
  markup: handMade("  <description>&#60;hostdev&#62; &lt;/devices&gt; &amp;</description>\n"),
  metadata: handMade(
    "  <metadata>\n    <app:foo xmlns:app='urn:x'><![CDATA[<hostdevs/>]]></app:foo>\n" +
      "    <!-- theirs -->\n  </metadata>\n",
  ),
  large: handMade(`  <description>${"x".repeat(2_000_000)}</description>\n`),
}).map(([name, xml]) => ({ name, xml }));

/** A config giving the domain the GPU, or nothing. */
function configFor(vm: string, gpu: boolean) {
  const devices = gpu
    ? `\n      - name: gpu\n        match: { vendor_device_id: "10de:1b06" }\n`
    : " []\n";
  return parseConfig(`version: 1\nvms:\n  ${JSON.stringify(vm)}:\n    devices:${devices}`, {
    file: "c.yaml",
  });
}

/**
 * `before` patched with the diff `renderDomainDiff` shows the user (no context, so no line is
 * shortened): what they say yes to.
 */
function patchedWithShownDiff(before: string, after: string): string {
  const old = before.split("\n");
  const out: string[] = [];
  let next = 0;
  const lines = renderDomainDiff(before, after, { vm: "v", context: 0, showSecrets: true })
    .split("\n").slice(2, -1);
  for (const line of lines) {
    const hunk = /^@@ -(\d+),(\d+) /.exec(line);
    if (hunk !== null) {
      const [start, count] = [Number(hunk[1]), Number(hunk[2])];
      const keep = count === 0 ? start : start - 1;
      out.push(...old.slice(next, keep));
      next = keep + count;
    } else if (line.startsWith("+")) out.push(line.slice(1));
  }
  return [...out, ...old.slice(next)].join("\n");
}

/**
 * Defines `xml` through `conn` and runs `fn` with the domain's name and its inactive definition
 * in libvirt's normal form, then undefines it; `null` when libvirt refuses `xml`.
 */
async function withDefined<T>(
  conn: Connection,
  xml: string,
  fn: (port: LibvirtPort, name: string, before: string) => Promise<T> | T,
): Promise<T | null> {
  const port = connectionPort(conn);
  let name: string;
  try {
    using domain = conn.defineDomain(xml);
    name = domain.name;
  } catch {
    return null;
  }
  try {
    conn.defineDomain(port.getPersistentXml(name, { secure: true })).free();
    return await fn(port, name, port.getPersistentXml(name, { secure: true }));
  } finally {
    using domain = conn.lookupDomainByName(name);
    domain.undefine();
  }
}

/** A connection to an empty test-driver world of its own, removed on dispose. */
function emptyTestWorld(): Connection & Disposable {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-corpus-libvirt-" });
  Deno.writeTextFileSync(`${dir}/world.xml`, "<node></node>\n");
  const conn = Connection.open(`test://${dir}/world.xml`);
  return Object.assign(conn, {
    [Symbol.dispose]() {
      conn.close();
      Deno.removeSync(dir, { recursive: true });
    },
  });
}

/**
 * Runs {@link applyAndRollBack} on each of `domains` through `conn` and returns the problems,
 * each after its name; a domain libvirt refuses is one when `refused` says so.
 */
async function applyAndRollBackEach(
  conn: Connection,
  domains: { name: string; xml: string }[],
  refused: (file: string) => string | null,
): Promise<string[]> {
  const failures: string[] = [];
  for (const { name: file, xml } of domains) {
    const stateDir = await Deno.makeTempDir({ prefix: "passthrough-corpus-state-" });
    try {
      const problems = await withDefined(
        conn,
        xml,
        (port, name, before) => applyAndRollBack(port, name, before, stateDir),
      );
      const refusal = problems === null ? refused(file) : null;
      if (refusal !== null) failures.push(`${file}: ${refusal}`);
      failures.push(...(problems ?? []).map((p) => `${file}: ${p}`));
    } finally {
      await Deno.remove(stateDir, { recursive: true });
    }
  }
  return failures;
}

/** The steps of one domain whose libvirt definition is not what it must be; none when all hold. */
async function applyAndRollBack(
  port: LibvirtPort,
  name: string,
  before: string,
  stateDir: string,
): Promise<string[]> {
  const problems: string[] = [];
  const read = () => port.getPersistentXml(name, { secure: true });
  const apply = async (gpu: boolean) => {
    const plan = planHostdevs({ config: configFor(name, gpu), host: HOST, libvirt: port });
    const vm = plan.vms[0];
    assertOk(vm?.changed && vm.errors.length === 0, `${name}: the plan changes it`);
    // The diff prints lines without their carriage return.
    const patched = patchedWithShownDiff(vm.currentXml, vm.desiredXml);
    if (patched.replaceAll("\r\n", "\n") !== vm.desiredXml.replaceAll("\r\n", "\n")) {
      problems.push(`the diff shown does not give the XML defined (${gpu ? "add" : "remove"})`);
    }
    const report = await applyPlan(plan, {
      libvirt: port,
      stateDir,
      confirm: () => Promise.resolve("yes"),
    });
    assertEquals(report.vms.map((r) => r.code), ["applied"], name);
  };
  await apply(true);
  const added = read();
  const mine = parseDomainXml(added).hostdevs.filter((h) => h.address === GPU);
  if (mine.length !== 1 || !mine[0]?.owned) problems.push("the added hostdev is not held as ours");
  await apply(false);
  if (read() !== before) problems.push("removing the hostdev did not give back the definition");
  const [oldest] = listBackups(stateDir, name).sort((a, b) => a.time < b.time ? -1 : 1);
  await rollbackVm(name, { libvirt: port, stateDir, confirm: () => Promise.resolve(true) });
  if (read() !== added) problems.push("rollback to the newest backup did not give back the add");
  await rollbackVm(name, {
    libvirt: port,
    stateDir,
    backup: oldest?.id ?? "",
    confirm: () => Promise.resolve(true),
  });
  if (read() !== before) problems.push("rollback to the oldest backup did not give back the start");
  return problems;
}

Deno.test("apply and rollback keep everything libvirt holds of libvirt's test domains and hand-made ones", async () => {
  using conn = emptyTestWorld();
  const failures = await applyAndRollBackEach(
    conn,
    [...xmlFiles(FIXTURES), ...HAND_MADE],
    () => "the test driver refuses it",
  );
  assertEquals(failures, []);
});

Deno.test({
  name: "adding and removing a hostdev keeps everything libvirt holds of the corpus's hostdev, " +
    "comment, namespace and entity domains",
  ignore: !corpusPresent(),
  async fn() {
    const failures: string[] = [];
    let accepted = 0;
    const files = corpusSubset();
    using conn = emptyTestWorld();
    for (const { name: file, xml } of files) {
      const problem = await withDefined(conn, xml, (port, name, before) => {
        accepted++;
        const { records } = parseDomainXml(before);
        conn.defineDomain(editDomainXml(before, {
          remove: [],
          add: [{ address: GPU, managed: true }],
          records: [...records, gpuIdentity(GPU)],
        })).free();
        const added = port.getPersistentXml(name, { secure: true });
        if (!parseDomainXml(added).hostdevs.some((h) => h.address === GPU && h.owned)) {
          return "the added hostdev is not held as ours";
        }
        conn.defineDomain(editDomainXml(added, { remove: [GPU], add: [], records })).free();
        return port.getPersistentXml(name, { secure: true }) === before
          ? null
          : "removing the hostdev did not give back the definition";
      });
      if (problem !== null) failures.push(`${file}: ${problem}`);
    }
    // The test driver refuses some (libvirt's own negative tests, mostly): not too many.
    assertOk(
      accepted > files.length * 0.9,
      `the test driver accepts ${accepted} of ${files.length}`,
    );
    assertEquals(failures, []);
  },
});

/**
 * libvirt's test driver drops what only a hypervisor driver keeps (`<qemu:commandline>`,
 * `<seclabel>`, ...), so the fixtures and hand-made cases also go through a real QEMU driver,
 * as `type='qemu'` (no /dev/kvm here) and under names of their own.
 */
Deno.test({
  name: "apply and rollback keep everything a real QEMU driver holds of the same domains",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    using conn = Connection.open(daemon.uri);
    const domains = [...xmlFiles(FIXTURES), ...HAND_MADE].map(({ name, xml }, i) => ({
      name,
      xml: xml.replace(/<domain type=(['"])(kvm|test)\1/, "<domain type='qemu'")
        .replace(/<name>[^<]*<\/name>/, `<name>passthrough-corpus-${i}</name>`)
        .replace(/<uuid>[^<]*<\/uuid>/, ""),
    }));
    // QEMU refuses fixtures of other architectures and hypervisors and libvirt's negative tests;
    // the cases of namespaces, metadata and hostdevs it keeps must all get through.
    const mustPass = new Set([
      ...HAND_MADE.map((d) => d.name),
      "qemu-ns-domain-commandline-ns0.xml",
      "metadata.xml",
      "hostdev-pci-multifunction.xml",
      "hostdev-usb-address-device.xml",
      "pci-rom.xml",
    ]);
    const refused = (file: string) => mustPass.has(file) ? "QEMU refuses it" : null;
    assertEquals(await applyAndRollBackEach(conn, domains, refused), []);
  },
});
