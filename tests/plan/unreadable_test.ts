/**
 * Domains whose definition `parseDomainXml()` refuses still hold their devices: the PCI devices a
 * lenient scan finds in them count as held, so no other VM is planned to take them, and a hostdev
 * whose host address cannot be read at all refuses the whole plan.
 *
 * The real libvirt test driver keeps whatever an application writes in `<metadata>`, so a
 * passthrough record damaged by a hand edit is a definition libvirt serves and this tool cannot
 * read: most tests here use exactly that. libvirt never serves a PCI hostdev without a host
 * address, so the tests of that refusal use a stand-in port with fixed XML.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { runCli } from "../helpers/cli.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { applyPlan } from "../../lib/apply/apply.ts";
import { parseDomainXml } from "../../lib/domain/domain_xml.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import type { Plan, PlanIssue } from "../../lib/plan/types.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { planHasErrors } from "../../cli/plan_options.ts";
import { sriovHost } from "../helpers/plan_world.ts";

const DEMO = new URL("../../demo/", import.meta.url).pathname;

/** A passthrough record a hand edit broke: libvirt keeps it, parseDomainXml() refuses it. */
const DAMAGED_METADATA = `<metadata>
      <passthrough:hostdevs xmlns:passthrough="urn:passthrough:hostdevs:1">
        <passthrough:device address="not-an-address" vendor="1d6a" device="07b1" class="020000" rule="nic"/>
      </passthrough:hostdevs>
    </metadata>`;

/**
 * A PCI hostdev of host `bus`:00.`fn` with a guest slot 0000:00:07.0 after `</source>` (the
 * demo host has a real device at 0000:00:07.0, which must never count as held).
 */
function pciHostdev(bus: string, fn = "0x0"): string {
  return `<hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='${bus}' slot='0x00' function='${fn}'/></source>
        <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>
      </hostdev>`;
}

/** A test-driver domain `name` (one UUID for all: tests redefine it) with `devices`, running or shut off. */
function domainXml(
  name: string,
  { devices, metadata = "", running }: { devices: string; metadata?: string; running: boolean },
): string {
  return `<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>${name}</name>
    <uuid>3c138f3b-90e5-41b7-ad69-ab5a3b075c9d</uuid>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    ${metadata}
    <devices>
      ${devices}
    </devices>
    <test:runstate>${running ? 1 : 5}</test:runstate>
  </domain>`;
}

interface Scene extends Disposable {
  dir: string;
  host: Awaited<ReturnType<typeof discoverHost>>;
  /** The demo world with `extra` domains added and `edit` applied, written to DIR/world.xml. */
  world(extra: string[], edit?: (xml: string) => string): string;
}

async function scene(): Promise<Scene> {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-unreadable-" });
  buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
  const host = await discoverHost({ root: `${dir}/sysfs` });
  return {
    dir,
    host,
    world(extra, edit = (xml) => xml) {
      const xml = edit(Deno.readTextFileSync(`${DEMO}world.xml`))
        .replace("</node>", `${extra.join("\n")}\n</node>`);
      Deno.writeTextFileSync(`${dir}/world.xml`, xml);
      return `test://${dir}/world.xml`;
    },
    [Symbol.dispose]: () => Deno.removeSync(dir, { recursive: true }),
  };
}

function wants(vm: string, vendorDevice: string): string {
  return `  ${vm}:\n    devices:\n      - name: wanted\n        match: { vendor_device_id: "${vendorDevice}" }\n`;
}

function config(...vms: string[]) {
  return parseConfig(`version: 1\nvms:\n${vms.join("")}`, { file: "c.yaml" });
}

/** The refusal of `vm` for taking what another VM holds, with the VMs it names. */
function conflict(plan: Plan, vm: string): PlanIssue {
  const errors = plan.vms.find((v) => v.name === vm)?.errors ?? [];
  const issue = errors.find((e) =>
    e.code === "device-assigned-twice" || e.code === "group-shared-with-other-vm"
  );
  assert(issue !== undefined, `${vm} is not refused: ${JSON.stringify(errors)}`);
  return issue;
}

Deno.test("planHostdevs() counts the PCI devices an unreadable domain outside the config names as held", async () => {
  using s = await scene();
  // router (not in the config) holds the Aquantia NIC 44:00.0, the GTX 1080's audio 21:00.1
  // (group 26) and the Realtek NIC 46:00.0 as an <interface type='hostdev'>.
  using libvirt = openLibvirtPort(s.world([
    domainXml("router", {
      metadata: DAMAGED_METADATA,
      running: false,
      devices: `${pciHostdev("0x44")}
      ${pciHostdev("0x21", "0x1")}
      <interface type='hostdev' managed='yes'>
        <source><address type='pci' domain='0x0000' bus='0x46' slot='0x00' function='0x0'/></source>
      </interface>`,
    }),
  ]));
  let refusedStrictly = false;
  try {
    parseDomainXml(libvirt.getPersistentXml("router"));
  } catch {
    refusedStrictly = true;
  }
  assert(refusedStrictly, "libvirt must serve a definition parseDomainXml() refuses");

  const nic = planHostdevs({ config: config(wants("gentoo", "1d6a:07b1")), host: s.host, libvirt });
  const twice = conflict(nic, "gentoo");
  assertEquals([twice.code, twice.devices, twice.vms], [
    "device-assigned-twice",
    ["0000:44:00.0"],
    ["gentoo", "router"],
  ]);
  assertMatch(twice.message, /"router" holds it in its definition now/);
  assertEquals(nic.vms[0]!.changed, false);
  assertEquals(nic.errors, [], "every hostdev was read: no plan-wide refusal");
  const warning = nic.warnings.find((w) => w.code === "unreadable-definition");
  assert(warning !== undefined, JSON.stringify(nic.warnings));
  assertEquals([warning.vm, warning.devices], [
    "router",
    ["0000:21:00.1", "0000:44:00.0", "0000:46:00.0"],
  ]);
  assertMatch(
    warning.message,
    /^Cannot read the definition of domain "router", which is not in the config: Passthrough record has a bad address "not-an-address": at line \d+, column \d+: the PCI devices it names, "0000:21:00\.1", "0000:44:00\.0", "0000:46:00\.0", count as held by "router" for conflicts$/,
  );

  // A group member it holds splits the group; the interface's VF is taken.
  const gpu = planHostdevs({ config: config(wants("gentoo", "10de:1b80")), host: s.host, libvirt });
  assertEquals(conflict(gpu, "gentoo").code, "group-shared-with-other-vm");
  assertEquals(conflict(gpu, "gentoo").vms, ["gentoo", "router"]);
  const realtek = planHostdevs({
    config: config(wants("gentoo", "10ec:8125")),
    host: s.host,
    libvirt,
  });
  assertEquals(conflict(realtek, "gentoo").devices, ["0000:46:00.0"]);

  // What it does not hold is planned as before.
  const rx580 = planHostdevs({
    config: config(wants("gentoo", "1002:67df")),
    host: s.host,
    libvirt,
  });
  assertEquals(rx580.vms[0]!.errors, []);
  assertEquals(rx580.vms[0]!.add.map((a) => a.address), ["0000:4c:00.0", "0000:4c:00.1"]);
});

Deno.test("planHostdevs() refuses a configured VM it cannot read and counts its devices as held for the others", async () => {
  using s = await scene();
  // win10's own definition carries the damaged record and the Aquantia NIC.
  using libvirt = openLibvirtPort(s.world([], (xml) =>
    xml.replace(
      "<description>Gaming VM: the GTX 1080 goes here</description>",
      `<description>Gaming VM: the GTX 1080 goes here</description>\n    ${DAMAGED_METADATA}`,
    ).replace(
      "<!-- A hand-added USB keyboard",
      `${pciHostdev("0x44")}\n      <!-- A hand-added USB keyboard`,
    )));
  const plan = planHostdevs({
    config: config(wants("win10", "10de:1b80"), wants("gentoo", "1d6a:07b1")),
    host: s.host,
    libvirt,
  });
  const [win10, gentoo] = plan.vms;
  assertEquals(win10?.errors.map((e) => [e.code, e.devices]), [
    ["unreadable-definition", ["0000:44:00.0"]],
  ]);
  assertMatch(
    win10!.errors[0]!.message,
    /^Cannot read the definition of VM "win10": Passthrough record has a bad address "not-an-address": .*: the PCI device it names, "0000:44:00\.0", counts as held by "win10" for conflicts$/,
  );
  assertEquals(win10?.changed, false);
  const twice = conflict(plan, "gentoo");
  assertEquals([twice.code, twice.vms], ["device-assigned-twice", ["gentoo", "win10"]]);
  assertEquals(gentoo?.changed, false);
  assertEquals(plan.errors, [], "the USB hostdev is not a PCI device it may hold");
});

Deno.test("planHostdevs() counts devices in a running guest's unreadable live definition as held", async () => {
  using s = await scene();
  // router runs with the NIC and a damaged record; its persistent definition is then replaced by
  // a clean one without the NIC, which leaves both in the live definition only (what a hot-plug
  // leaves behind).
  using libvirt = openLibvirtPort(s.world([
    domainXml("router", { metadata: DAMAGED_METADATA, running: true, devices: pciHostdev("0x44") }),
  ]));
  libvirt.define(
    domainXml("router", { running: true, devices: "" }).replace(/<test:runstate>.*/, ""),
  );
  assertEquals(parseDomainXml(libvirt.getPersistentXml("router")).hostdevs, []);
  let liveRefused = false;
  try {
    parseDomainXml(libvirt.getLiveXml!("router"));
  } catch {
    liveRefused = true;
  }
  assert(liveRefused, "the live definition must be one parseDomainXml() refuses");

  const plan = planHostdevs({
    config: config(wants("gentoo", "1d6a:07b1")),
    host: s.host,
    libvirt,
  });
  const twice = conflict(plan, "gentoo");
  assertEquals([twice.devices, twice.vms], [["0000:44:00.0"], ["gentoo", "router"]]);
  assertEquals(plan.errors, []);
  const unreadable = plan.warnings.find((w) => w.code === "unreadable-definition");
  assert(unreadable !== undefined, JSON.stringify(plan.warnings));
  assertEquals([unreadable.vm, unreadable.devices], ["router", ["0000:44:00.0"]]);
  assertMatch(
    unreadable.message,
    /^Cannot read the running definition of domain "router": .*: the PCI device it names beyond its persistent definition, "0000:44:00\.0", counts as held by "router" until the guest stops$/,
  );
  const liveOnly = plan.warnings.find((w) => w.code === "live-only-hostdev");
  assertEquals([liveOnly?.vm, liveOnly?.devices], ["router", ["0000:44:00.0"]]);
});

Deno.test("planHostdevs() counts live-only devices of a running guest whose both definitions are unreadable", async () => {
  using s = await scene();
  using libvirt = openLibvirtPort(s.world([
    domainXml("router", { metadata: DAMAGED_METADATA, running: true, devices: pciHostdev("0x44") }),
  ]));
  // The persistent definition keeps the damaged record but no longer the NIC.
  libvirt.define(
    domainXml("router", { metadata: DAMAGED_METADATA, running: true, devices: "" })
      .replace(/<test:runstate>.*/, ""),
  );

  const plan = planHostdevs({
    config: config(wants("gentoo", "1d6a:07b1")),
    host: s.host,
    libvirt,
  });
  assertEquals(conflict(plan, "gentoo").vms, ["gentoo", "router"]);
  assertEquals(
    plan.warnings.map((w) => [w.code, w.devices]),
    [
      ["unreadable-definition", undefined],
      ["unreadable-definition", ["0000:44:00.0"]],
      ["live-only-hostdev", ["0000:44:00.0"]],
    ],
  );
  assertMatch(
    plan.warnings[0]!.message,
    /no PCI device could be found in it, so it counts as holding none$/,
  );
  assertEquals(plan.errors, []);
});

/**
 * A stand-in port serving fixed XML, used only where libvirt cannot help: it never serves a PCI
 * hostdev without a host address.
 */
function fixedXmlPort(
  domains: Record<string, string>,
  live: Record<string, string> = {},
): LibvirtPort & { defined: string[] } {
  const unused = () => {
    throw new Error("not used");
  };
  const defined: string[] = [];
  return {
    uri: "test:///fixed-xml",
    defined,
    listDomains: () =>
      Object.keys(domains).map((name) => ({
        name,
        uuid: "",
        active: name in live,
        persistent: true,
      })),
    getPersistentXml: (name) => domains[name]!,
    getLiveXml: (name) => live[name] ?? domains[name]!,
    isActive: (name) => name in live,
    define: (xml) => void defined.push(xml),
    attachDevice: unused,
    detachDevice: unused,
  };
}

/** A definition parseDomainXml() refuses whose one hostdev names no readable host address. */
const NO_ADDRESS =
  "<domain type='test'><name>other</name><devices><hostdev mode='subsystem' type='pci' managed='yes'><source></hostdev></devices></domain>";

Deno.test("planHostdevs() refuses the whole plan when an unreadable domain has a hostdev without a readable address", async () => {
  using s = await scene();
  using real = openLibvirtPort(s.world([]));
  const libvirt = fixedXmlPort({ other: NO_ADDRESS, gentoo: real.getPersistentXml("gentoo") });
  const plan = planHostdevs({
    config: config(wants("gentoo", "1002:67df")),
    host: s.host,
    libvirt,
  });
  assertEquals(plan.errors.map((e) => [e.code, e.vm]), [["unreadable-definition", "other"]]);
  assertEquals(
    plan.errors[0]!.message,
    `Cannot tell which PCI devices domain "other" holds: its definition cannot be read and a hostdev in it names no readable host address: nothing is applied until the definition is fixed (virsh edit other) or the domain is undefined`,
  );
  assertMatch(
    plan.warnings[0]!.message,
    /no PCI device could be found in it, so it counts as holding none; 1 hostdev names no readable host address, so the whole plan is refused$/,
  );
  // gentoo's own plan carries the refusal, as with other host-wide refusals.
  assertEquals(plan.vms[0]!.errors.map((e) => e.code), ["unreadable-definition"]);
  assert(planHasErrors(plan));

  const report = await applyPlan(plan, {
    libvirt,
    stateDir: `${s.dir}/state`,
    confirm: () => Promise.resolve("yes"),
  });
  assertEquals(report.vms.map((r) => [r.vm, r.code]), [["gentoo", "plan-errors"]]);
  assertEquals(libvirt.defined, [], "nothing is defined");
});

Deno.test("planHostdevs() refuses the whole plan for a configured VM or a live definition with an unreadable hostdev", async () => {
  using s = await scene();
  using real = openLibvirtPort(s.world([]));
  const gentoo = real.getPersistentXml("gentoo");
  // The configured VM is refused on its own, and the plan as a whole too.
  const configured = planHostdevs({
    config: config(wants("other", "10de:1b80"), wants("gentoo", "1002:67df")),
    host: s.host,
    libvirt: fixedXmlPort({ other: NO_ADDRESS, gentoo }),
  });
  assertEquals(configured.errors.map((e) => [e.code, e.vm]), [["unreadable-definition", "other"]]);
  assertEquals(configured.vms.map((vm) => [vm.name, vm.errors.map((e) => e.code)]), [
    ["other", ["unreadable-definition"]],
    ["gentoo", ["unreadable-definition"]],
  ]);

  // A running guest whose live definition has such a hostdev.
  const running = planHostdevs({
    config: config(wants("gentoo", "1002:67df")),
    host: s.host,
    libvirt: fixedXmlPort({
      other: "<domain type='test'><name>other</name><devices/></domain>",
      gentoo,
    }, { other: NO_ADDRESS }),
  });
  assertEquals(running.errors.map((e) => [e.code, e.vm]), [["unreadable-definition", "other"]]);
  // Only stopping the guest ends what it runs with: virsh edit changes the persistent
  // definition, and undefining leaves the guest running (transient) as it is.
  assertMatch(
    running.errors[0]!.message,
    /its running definition cannot be read and a hostdev in it names no readable host address: nothing is applied until the guest is stopped \(virsh shutdown other\)$/,
  );
  assertMatch(
    running.warnings[0]!.message,
    /^Cannot read the running definition of domain "other": .*: no PCI device beyond its persistent definition could be found in it; 1 hostdev names no readable host address, so the whole plan is refused$/,
  );
});

Deno.test("planHostdevs() does not refuse the plan for an unreadable domain whose hostdevs are all USB", async () => {
  using s = await scene();
  using real = openLibvirtPort(s.world([]));
  const libvirt = fixedXmlPort({
    other:
      "<domain type='test'><name>other</name><devices><hostdev mode='subsystem' type='usb'><source><vendor id='0x046d'/></source></hostdev></devices>",
    gentoo: real.getPersistentXml("gentoo"),
  });
  const plan = planHostdevs({
    config: config(wants("gentoo", "1002:67df")),
    host: s.host,
    libvirt,
  });
  assertEquals(plan.errors, []);
  assertEquals(plan.warnings.map((w) => w.code), ["unreadable-definition"]);
  assertMatch(
    plan.warnings[0]!.message,
    /no PCI device could be found in it, so it counts as holding none$/,
  );
  assertEquals(plan.vms[0]!.add.map((a) => a.address), ["0000:4c:00.0", "0000:4c:00.1"]);
});

Deno.test("plan and apply exit 1 and take nothing from an unreadable domain (CLI, test driver)", async () => {
  using s = await scene();
  const uri = s.world([
    domainXml("router", {
      metadata: DAMAGED_METADATA,
      running: false,
      devices: pciHostdev("0x44"),
    }),
  ]);
  Deno.writeTextFileSync(`${s.dir}/c.yaml`, `version: 1\nvms:\n${wants("gentoo", "1d6a:07b1")}`);
  const args = ["--config", `${s.dir}/c.yaml`, "--sysfs", `${s.dir}/sysfs`, "--connect", uri];

  const plan = await runCli(["plan", ...args, "--detailed-exitcode"]);
  assertEquals(plan.code, 1, plan.stdout + plan.stderr);
  assertMatch(
    plan.stdout,
    /Device 0000:44:00\.0 is assigned to VMs "gentoo" \(rule "wanted"\) and "router" \("router" holds/,
  );
  assertMatch(plan.stdout, /"0000:44:00\.0", counts as held by "router" for conflicts/);

  const apply = await runCli(["apply", ...args, "--state-dir", `${s.dir}/state`, "--yes"]);
  assertEquals(apply.code, 1, apply.stdout + apply.stderr);
  assertMatch(apply.stdout, /gentoo/);
  assert(!/changed gentoo/.test(apply.stdout), apply.stdout);
});

Deno.test("planHostdevs() warns about a domain outside the config it cannot read, saying what it counts as held", () => {
  const host = sriovHost();
  const libvirt = fixedXmlPort({
    router:
      "<domain type='test'><name>router</name><uuid>11111111-1111-4111-8111-111111111111</uuid><devices/></domain>",
    // Malformed, but naming no hostdev: a <hostdev> with no readable address would refuse the
    // whole plan (below).
    other: "<domain type='test'><name>other</name><devices><disk></devices></domain>",
  });
  const plan = planHostdevs({
    config: config(
      `  router:\n    devices:\n      - name: vf\n        match: { address: "01:10.0" }\n`,
    ),
    host,
    libvirt,
  });
  assertEquals(plan.warnings.map((w) => w.code), ["unreadable-definition"]);
  assertMatch(plan.warnings[0]!.message, /"other"/);
  assertMatch(
    plan.warnings[0]!.message,
    /no PCI device could be found in it, so it counts as holding none$/,
  );
  assertEquals(plan.errors, []);
  assertEquals(plan.vms.map((vm) => [vm.name, vm.errors]), [["router", []]]);
});
