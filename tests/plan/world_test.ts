/**
 * Reading libvirt once into a plain-data world, and planning from that world alone: whatever
 * goes wrong while reading becomes data, never an exception out of the middle of planning.
 */

import { assertEquals, assertMatch, assertThrows } from "../helpers/assert.ts";
import { domainXml, HOST, vmOf, WIN10, withFault, withPort } from "../helpers/plan_world.ts";
import { config } from "../helpers/plan_world.ts";
import { Connection, openLibvirtPort } from "../../ffi/mod.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";
import { planHostdevs, planWorld } from "../../lib/plan/plan.ts";
import { readDefinition, readWorld, type World } from "../../lib/plan/world.ts";
import { configForHost, pickHostSection, UnknownHostError } from "../../lib/config/mod.ts";

const DEMO = new URL("../../demo/", import.meta.url).pathname;

const GPU_HOST = topologyFromDescription({
  devices: [{
    bdf: "0000:0b:00.0",
    group: 30,
    class: "0x030000",
    vendor: "0x10de",
    device: "0x1b06",
    subsystem_vendor: null,
    subsystem_device: null,
    driver: "vfio-pci",
    revision: null,
  }],
}, { source: "one-gpu" });

function wantsGpu(...vms: string[]) {
  return parseConfig(
    `version: 1\nvms:\n${
      vms.map((vm) => `  ${vm}:\n    devices:\n      - match: { vendor_device_id: 10de:1b06 }\n`)
        .join("")
    }`,
    { file: "c.yaml" },
  );
}

Deno.test("readWorld() reads every domain's state and definitions once, as plain data", () => {
  using libvirt = openLibvirtPort(`test://${DEMO}world.xml`);
  const world = readWorld(libvirt);
  assertEquals(world.uri, libvirt.uri);
  assertEquals(
    world.domains.map((d) => [d.name, d.active, d.persistent.kind, d.live?.kind ?? null]),
    [["gentoo", true, "parsed", "parsed"], ["win10", false, "parsed", null]],
  );
  const gentoo = world.domains[0]!;
  assertEquals(
    gentoo.persistent.kind === "parsed" && gentoo.persistent.xml,
    libvirt.getPersistentXml("gentoo"),
  );
  // Plain data: it survives a structured clone unchanged, and plans the same from the clone.
  const copy: World = structuredClone(world);
  assertEquals(copy, world);
  const config = parseConfig(Deno.readTextFileSync(`${DEMO}passthrough_config.yaml`), {
    file: "demo.yaml",
  });
  const host = topologyFromDescription(JSON.parse(Deno.readTextFileSync(`${DEMO}host.json`)), {
    source: "demo",
  });
  assertEquals(
    planWorld({ config, host, world: copy }),
    planHostdevs({ config, host, libvirt }),
  );
});

/**
 * A port over `test:///default` (one world shared by every connection of the process) that
 * undefines `victim` through a second connection right after listing it: the race of a domain
 * undefined between the listing and the read, with every answer coming from libvirt.
 */
function undefiningAfterList(victim: string): LibvirtPort & Disposable {
  const port = openLibvirtPort("test:///default");
  const other = Connection.open("test:///default");
  port.define(
    `<domain type='test'><name>${victim}</name><memory>1024</memory><os><type>hvm</type></os></domain>`,
  );
  return {
    uri: port.uri,
    listDomains() {
      const listed = port.listDomains();
      try {
        using domain = other.lookupDomainByName(victim);
        domain.undefine();
      } catch {
        // Undefined by the first listing already.
      }
      return listed;
    },
    getPersistentXml: (name, options) => port.getPersistentXml(name, options),
    getLiveXml: (name) => port.getLiveXml!(name),
    isActive: (name) => port.isActive(name),
    define: (xml) => port.define(xml),
    attachDevice: (...args) => port.attachDevice(...args),
    detachDevice: (...args) => port.detachDevice(...args),
    [Symbol.dispose]() {
      other.close();
      port.close();
    },
  };
}

Deno.test("planHostdevs() refuses a VM undefined between the listing and the read as unknown-vm, without throwing", () => {
  const victim = `vanishing-${crypto.randomUUID().slice(0, 8)}`;
  using libvirt = undefiningAfterList(victim);
  const world = readWorld(libvirt);
  assertEquals(world.domains.map((d) => d.name), ["test"], "the undefined domain is left out");

  using again = undefiningAfterList(victim);
  const plan = planHostdevs({ config: wantsGpu(victim), host: GPU_HOST, libvirt: again });
  assertEquals(plan.errors, []);
  assertEquals(plan.vms.map((vm) => [vm.name, vm.errors.map((e) => e.code), vm.changed]), [
    [victim, ["unknown-vm"], false],
  ]);
  assertMatch(plan.vms[0]!.errors[0]!.message, /is not defined in libvirt/);
});

/** A world of parsed test-driver definitions, plus `extra` snapshots. */
function worldWith(extra: World["domains"]): World {
  using libvirt = openLibvirtPort(`test://${DEMO}world.xml`);
  const world = readWorld(libvirt);
  return { ...world, domains: [...world.domains, ...extra] };
}

Deno.test("planWorld() refuses a VM whose definition libvirt did not return, and the plan as a whole", () => {
  const world = worldWith([{
    name: "router",
    active: false,
    persistent: { kind: "read-failed", error: "Cannot find domain: internal error" },
    live: null,
  }]);
  const config = parseConfig(
    "version: 1\nvms:\n  router:\n    devices: []\n" +
      "  win10:\n    devices:\n      - match: { vendor_device_id: 10de:1b06 }\n",
    { file: "c.yaml" },
  );
  const configured = planWorld({ config, host: GPU_HOST, world });
  assertEquals(configured.vms.map((vm) => [vm.name, vm.errors.map((e) => e.code)]), [
    ["router", ["unreadable-definition"]],
    ["win10", ["unreadable-definition"]],
  ]);
  assertEquals(
    configured.vms[0]!.errors[0]!.message,
    `Cannot read the definition of VM "router": Cannot find domain: internal error: the devices it holds are unknown`,
  );
  assertEquals(configured.errors.map((e) => [e.code, e.vm]), [["unreadable-definition", "router"]]);
  assertMatch(
    configured.errors[0]!.message,
    /^Cannot tell which PCI devices domain "router" holds/,
  );

  // Outside the config it still refuses the plan: it may hold the device win10 would take.
  const outside = planWorld({ config: wantsGpu("win10"), host: GPU_HOST, world });
  assertEquals(outside.errors.map((e) => [e.code, e.vm]), [["unreadable-definition", "router"]]);
  assertEquals(outside.vms.map((vm) => [vm.name, vm.errors.map((e) => e.code), vm.changed]), [
    ["win10", ["unreadable-definition"], false],
  ]);
});

Deno.test("planHostdevs() tells a VM undefined in a session reached by ssh, tcp or socket= it is the user's own libvirt", async () => {
  await withPort([WIN10], (port) => {
    for (
      const uri of [
        "qemu+ssh:///session",
        "qemu+tcp:///session",
        "qemu:///session?socket=/run/user/1000/libvirt/virtqemud-sock",
      ]
    ) {
      // The real port, seen under the URI a user would have connected with.
      const libvirt: LibvirtPort = { ...withFault(port, () => {}), uri };
      const cfg = config("  win11:\n    devices: []\n");
      const vm = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), "win11");
      assertMatch(
        vm.errors[0]!.message,
        /; ".*" is this user's own libvirt, not the host's: for the host's VMs connect to "qemu:\/\/\/system"/,
        uri,
      );
    }
    const system: LibvirtPort = { ...withFault(port, () => {}), uri: "qemu+ssh:///system" };
    const vm = vmOf(
      planHostdevs({ config: config("  win11:\n    devices: []\n"), host: HOST, libvirt: system }),
      "win11",
    );
    assertEquals(vm.errors[0]!.message.includes("own libvirt"), false);
  });
});

Deno.test("planHostdevs() reports a configured VM libvirt does not know as unknown-vm", async () => {
  await withPort([WIN10], (libvirt) => {
    const cfg = config("  win11:\n    devices: []\n");
    const vm = vmOf(planHostdevs({ config: cfg, host: HOST, libvirt }), "win11");
    assertEquals(vm.errors.map((e) => e.code), ["unknown-vm"]);
    assertMatch(vm.errors[0]!.message, /^VM "win11" is not defined in libvirt/);
    // The closest name libvirt knows, for a typo in the config.
    assertMatch(vm.errors[0]!.message, /fix the name in the config \(did you mean "win10"\?\)$/);
    assertEquals(vm.errors[0]!.location, "passthrough_config.yaml:3:3");
  });
});

Deno.test("planHostdevs() refuses a VM named as libvirt's but decomposed, and shows both escaped", async () => {
  // libvirt compares names byte for byte: "café" with é as one character is another domain than
  // "café" as e and an accent, and the two print the same.
  const composed = "caf\u00e9";
  const decomposed = "cafe\u0301";
  await withPort([domainXml(composed, "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e09")], (libvirt) => {
    const plan = planHostdevs({
      config: config(`  ${decomposed}:\n    devices: []\n`),
      host: HOST,
      libvirt,
    });
    const vm = vmOf(plan, decomposed);
    assertEquals(vm.errors.map((e) => e.code), ["unknown-vm"]);
    assertMatch(
      vm.errors[0]!.message,
      /\(did you mean "caf\u00e9"\? that is "caf\\u00e9", this is "cafe\\u0301"\)$/,
    );
    assertEquals(plan.vms.map((v) => v.name), [decomposed]);
  });
});

Deno.test("readWorld() reads definitions on a read-only connection, which refuses secrets", () => {
  // libvirt refuses VIR_DOMAIN_XML_SECURE on a read-only connection: the definition without
  // secrets still plans (apply then compares it with the secure one before any define).
  using libvirt = openLibvirtPort(`test://${DEMO}world.xml`, { readOnly: true });
  const world = readWorld(libvirt);
  assertEquals(
    world.domains.map((d) => [d.name, d.persistent.kind]),
    [["gentoo", "parsed"], ["win10", "parsed"]],
  );
});

/** A shut-off VM `name` on a fleet's host, defined as `xml` (with no devices unless told). */
function fleetDomain(
  name: string,
  xml = `<domain><name>${name}</name><devices/></domain>`,
): World["domains"][number] {
  return { name, active: false, persistent: readDefinition(xml), live: null };
}

/** A fleet host's libvirt world of `domains`. */
function fleetWorld(...domains: World["domains"]): World {
  return { uri: "test:///fleet", domains };
}

/** A config for hosts hv1 and hv2 that gives win10 the GPU by a rule for hv1 only. */
function gpuOnHv1() {
  return parseConfig(
    "version: 1\nhosts: { hv1: {}, hv2: {} }\nvms:\n  win10:\n    devices:\n" +
      "      - match: { vendor_device_id: 10de:1b06 }\n        host: hv1\n",
    { file: "fleet.yaml" },
  );
}

Deno.test("a config shared by several hosts is refused until cut down to one host's section", () => {
  const fleet = parseConfig(
    "version: 1\nhosts: { hv1: {}, hv2: {} }\nvms:\n  win10:\n    host: hv2\n    devices:\n" +
      "      - match: { vendor_device_id: 10de:1b06 }\n",
    { file: "fleet.yaml" },
  );
  const world = fleetWorld(fleetDomain("win10"));
  // hv1 would otherwise hand hv2's VM the GPU it has too.
  assertThrows(
    () => planWorld({ config: fleet, host: GPU_HOST, world }),
    TypeError,
    "fleet.yaml declares hosts: (a config shared by several hosts): plan one host's section",
  );
  const onHv1 = pickHostSection(fleet, { hostname: () => "hv1" })!.config;
  assertEquals(planWorld({ config: onHv1, host: GPU_HOST, world }).vms, []);
  const onHv2 = configForHost(fleet, "hv2");
  const [vm] = planWorld({ config: onHv2, host: GPU_HOST, world }).vms;
  assertEquals([vm?.name, vm?.add.map((a) => a.address)], ["win10", ["0000:0b:00.0"]]);
});

Deno.test("configForHost() refuses a host hosts: does not declare, whose plan removed hostdevs", () => {
  const fleet = gpuOnHv1();
  // win10 as hv1 left it: with the GPU passthrough added.
  const onHv1 = configForHost(fleet, "hv1");
  const world = fleetWorld(fleetDomain("win10"));
  assertEquals(planWorld({ config: onHv1, host: GPU_HOST, world }).vms[0]?.add.length, 1);
  // "hvl" for "hv1": win10 was kept with no rule, a plan that removes what hv1 added.
  // Named by the caller, not by --host: the message does not send a library script to a flag (and
  // suggests no other host a typo away, which names another machine).
  assertThrows(
    () => configForHost(fleet, "hvl"),
    UnknownHostError,
    'fleet.yaml has no section for host "hvl" under "hosts:" at fleet.yaml:2:1: ' +
      'it declares "hv1", "hv2": add a section named "hvl"',
  );
});

Deno.test("pickHostSection() from a library script sends it to no --host", () => {
  // The name came from the script (its own argument, a file), not from passthrough's --host.
  assertThrows(
    () => pickHostSection(gpuOnHv1(), { flag: "hv3", hostname: () => "hv1" }),
    UnknownHostError,
    'fleet.yaml has no section for host "hv3" under "hosts:" at fleet.yaml:2:1: ' +
      'it declares "hv1", "hv2": add a section named "hv3"',
  );
  assertThrows(
    () => pickHostSection(gpuOnHv1(), { hostname: () => "hv3" }),
    UnknownHostError,
    'fleet.yaml has no section for host "hv3" (this machine\'s host name, as uname -n prints it) under "hosts:" at fleet.yaml:2:1: ' +
      'it declares "hv1", "hv2": add a section named "hv3"',
  );
  assertThrows(
    () => pickHostSection(gpuOnHv1(), { flag: "hv3", hostname: () => "hv1", option: "--host" }),
    UnknownHostError,
    'fleet.yaml has no section for host "hv3" (--host) under "hosts:" at fleet.yaml:2:1: ' +
      'it declares "hv1", "hv2": pass --host NAME, or add a section named "hv3"',
  );
});

Deno.test("pickHostSection() names the section a host name in another case or with a look-alike meant", () => {
  const fleet = gpuOnHv1();
  // /etc/hostname in capitals, and a Cyrillic "\u04bb" typed for "h": the list of declared
  // hosts alone showed nothing amiss for the second.
  assertThrows(
    () => pickHostSection(fleet, { hostname: () => "HV1" }),
    UnknownHostError,
    'under "hosts:" at fleet.yaml:2:1 (did you mean "hv1"?): it declares "hv1", "hv2"',
  );
  assertThrows(
    () => pickHostSection(fleet, { flag: "\u04bbv2", hostname: () => "hv1" }),
    UnknownHostError,
    '(did you mean "hv2"? that is "hv2", this is "\\u04bbv2")',
  );
});

Deno.test("pickHostSection() suggests no other machine for a host name one digit or letter off", () => {
  // A fleet's names are numbered: "hv3" is a machine of its own, not a typo for "hv1", and
  // `did you mean "hv1"?` beside "pass --host NAME" points at another machine's section.
  const fleet = parseConfig(
    `version: 1\nhosts: { ${
      Array.from({ length: 50 }, (_, i) => `hv${i + 1}: {}`).join(", ")
    } }\n` +
      "vms: {}\n",
    { file: "fleet.yaml" },
  );
  for (const name of ["hv51", "hv100", "hv3x", "hvl"]) {
    assertThrows(
      () => pickHostSection(fleet, { hostname: () => name }),
      UnknownHostError,
      `fleet.yaml has no section for host "${name}" (this machine's host name, as uname -n prints it) under "hosts:" at fleet.yaml:2:1: it`,
    );
  }
  assertThrows(
    () => pickHostSection(gpuOnHv1(), { hostname: () => "hv3" }),
    UnknownHostError,
    'fleet.yaml has no section for host "hv3" (this machine\'s host name, as uname -n prints it) under "hosts:" at fleet.yaml:2:1: it declares',
  );
  // Another case or a look-alike letter is still the same name written another way.
  assertThrows(
    () => pickHostSection(fleet, { hostname: () => "\u04bbv7" }),
    UnknownHostError,
    '(did you mean "hv7"? that is "hv7", this is "\\u04bbv7")',
  );
});

Deno.test("planHostdevs() refuses a transient VM the config names, whose definition apply would make persistent", () => {
  // test:///default's running "test" domain, undefined, lives on as a transient domain (the
  // driver is shared by the process: it is defined again below).
  using libvirt = openLibvirtPort("test:///default");
  const xml = libvirt.getPersistentXml("test", { secure: true });
  {
    using other = Connection.open("test:///default");
    using domain = other.lookupDomainByName("test");
    domain.undefine();
  }
  try {
    const plan = planHostdevs({ config: wantsGpu("test"), host: GPU_HOST, libvirt });
    assertEquals(plan.vms.map((vm) => [vm.name, vm.errors.map((e) => e.code), vm.changed]), [
      ["test", ["transient-vm"], false],
    ]);
    assertEquals(
      plan.vms[0]!.errors[0]!.message,
      `VM "test" is a transient domain (no persistent definition), which apply does not make persistent: define it first (virsh dumpxml 'test' > vm.xml; virsh define vm.xml), or fix the name in the config`,
    );
    assertEquals(plan.vms[0]!.errors[0]!.location, "c.yaml:3:3");
  } finally {
    libvirt.define(xml);
  }
});

Deno.test("a VM planned on a host where none of its rules apply is planned with none: what passthrough added there is removed", () => {
  // docs/FLEET.md: the VM is kept (not dropped as vm-not-in-config, which would keep its devices).
  const fleet = gpuOnHv1();
  const empty = fleetWorld(fleetDomain("win10"));
  const [added] = planWorld({ config: configForHost(fleet, "hv1"), host: GPU_HOST, world: empty })
    .vms;
  assertEquals(added?.add.map((a) => a.address), ["0000:0b:00.0"]);
  // The same definition, as an apply left it, planned with the rules of a host they do not name.
  const applied: World = {
    ...empty,
    domains: [{ ...empty.domains[0]!, persistent: readDefinition(added!.desiredXml) }],
  };
  const onHv2 = configForHost(fleet, "hv2");
  assertEquals(onHv2.vms.map((vm) => [vm.name, vm.rules.length]), [["win10", 0]]);
  const [vm] = planWorld({ config: onHv2, host: GPU_HOST, world: applied }).vms;
  assertEquals([vm?.name, vm?.remove, vm?.errors], ["win10", ["0000:0b:00.0"], []]);
});

Deno.test("a VM moved to another host by hosts: is released here, and the refusal that keeps it says how on that host", () => {
  const fleet = (win10: string, gentoo: string) =>
    parseConfig(
      "version: 1\nhosts: { hv1: {}, hv2: {} }\nvms:\n" +
        `  win10:\n    ${win10}\n    devices:\n      - match: { vendor_device_id: 10de:1b06 }\n` +
        `  gentoo:\n    ${gentoo}\n    devices: []\n`,
      { file: "fleet.yaml" },
    );
  const empty = fleetWorld(fleetDomain("win10"), fleetDomain("gentoo"));
  const first = planWorld({
    config: configForHost(fleet("host: hv1", "host: hv1"), "hv1"),
    host: GPU_HOST,
    world: empty,
  });
  const added = first.vms.find((vm) => vm.name === "win10")!;
  assertEquals(added.add.map((a) => a.address), ["0000:0b:00.0"]);
  const applied: World = {
    ...empty,
    domains: [fleetDomain("win10", added.desiredXml), fleetDomain("gentoo")],
  };

  // gentoo stays on hv1: win10, now hv2's, leaves hv1 with its device, and the plan says why.
  const moved = planWorld({
    config: configForHost(fleet("host: hv2", "host: hv1"), "hv1"),
    host: GPU_HOST,
    world: applied,
  });
  const released = moved.vms.find((vm) => vm.name === "win10")!;
  assertEquals([released.remove, released.errors], [["0000:0b:00.0"], []]);
  assertEquals(released.reasoning, [
    'VM "win10" is planned only on "hv2" in config "fleet.yaml", not on "hv1": the hostdevs passthrough added here are removed (hand-added ones stay)',
  ]);

  // Both moved: hv1's section names no VM, so win10 keeps its device, and the way to release it
  // names this host (listing "win10: { devices: [] }" again would be a duplicate key).
  const none = planWorld({
    config: configForHost(fleet("host: hv2", "host: hv2"), "hv1"),
    host: GPU_HOST,
    world: applied,
  });
  const kept = none.vms.find((vm) => vm.name === "win10")!;
  assertEquals(kept.errors.map((e) => e.code), ["vm-not-in-config"]);
  assertEquals(
    kept.errors[0]!.message,
    'VM "win10" is not in config "fleet.yaml" for host "hv1" but holds hostdevs passthrough added: they are not released, since the config names no VM for host "hv1" (releasing every VM\'s devices is never done by omission). To release them, add "hv1" to the hosts of "win10" (hosts: [hv2, hv1]) and limit each of its rules to host: hv2: it is then planned on "hv1" with no rule',
  );
  // Doing what it says releases it on hv1.
  const hinted = parseConfig(
    "version: 1\nhosts: { hv1: {}, hv2: {} }\nvms:\n" +
      "  win10:\n    hosts: [hv2, hv1]\n    devices:\n" +
      "      - match: { vendor_device_id: 10de:1b06 }\n        host: hv2\n",
    { file: "fleet.yaml" },
  );
  const [done] = planWorld({ config: configForHost(hinted, "hv1"), host: GPU_HOST, world: applied })
    .vms;
  assertEquals([done?.name, done?.remove, done?.errors], ["win10", ["0000:0b:00.0"], []]);
  // Its rule is hv2's: said so, not that it is gone.
  assertEquals(done?.reasoning, [
    'Removed 0000:0b:00.0: "win10" has no rule "10de:1b06" for host "hv1"',
  ]);

  // A VM the file no longer names at all: named for this host only, with no device.
  const gone = planWorld({
    config: configForHost(
      parseConfig("version: 1\nhosts: { hv1: {}, hv2: {} }\nvms: {}\n", { file: "fleet.yaml" }),
      "hv1",
    ),
    host: GPU_HOST,
    world: applied,
  });
  assertMatch(
    gone.vms.find((vm) => vm.name === "win10")!.errors[0]!.message,
    /To release them, list "win10: \{ host: hv1, devices: \[\] \}" under vms:$/,
  );
});

Deno.test("pickHostSection() names the section a host name with its domain cut off or added meant, and picks none", () => {
  const fleet = gpuOnHv1();
  // A kernel name with its domain (hostnamectl on RHEL), or with DNS's trailing dot.
  for (const name of ["hv1.example.com", "HV1.example.com", "hv1."]) {
    assertThrows(
      () => pickHostSection(fleet, { hostname: () => name }),
      UnknownHostError,
      'under "hosts:" at fleet.yaml:2:1 (did you mean "hv1"? a host name matches a section ' +
        'only whole, with its domain): it declares "hv1", "hv2"',
    );
  }
  const long = parseConfig(
    "version: 1\nhosts: { hv1.a.example: {}, hv2.a.example: {}, hv2.b.example: {} }\nvms: {}\n",
    { file: "fleet.yaml" },
  );
  // The short name, and the FQDN with DNS's trailing dot (`hostname hv1.a.example.` is refused,
  // the kernel takes it from a boot script).
  for (const name of ["hv1", "hv1.a.example.", "HV1.A.example."]) {
    assertThrows(
      () => pickHostSection(long, { flag: name, hostname: () => "x" }),
      UnknownHostError,
      '(did you mean "hv1.a.example"?',
    );
  }
  // Two sections of that name in two domains, or another domain: either may be another machine.
  for (const name of ["hv2", "hv1.c.example"]) {
    assertThrows(
      () => pickHostSection(long, { flag: name, hostname: () => "x" }),
      UnknownHostError,
      `no section for host "${name}" under "hosts:" at fleet.yaml:2:1: it declares`,
    );
  }
});

Deno.test("pickHostSection() tells no one to add a section of a name the config refuses", () => {
  // A shell variable's trailing space, a path: the section this would have said to add is
  // refused by the config ("Invalid name").
  for (const name of ["hv1 ", "hv1/x", "-hv1"]) {
    assertThrows(
      () => pickHostSection(gpuOnHv1(), { flag: name, hostname: () => "x", option: "--host" }),
      UnknownHostError,
      `it declares "hv1", "hv2": pass --host NAME; "${name}" cannot name a section (use letters, ` +
        "digits, dots, dashes and underscores, starting with a letter or digit)",
    );
    assertThrows(() =>
      parseConfig(`version: 1\nhosts: { "${name}": {} }\nvms: {}\n`, { file: "c.yaml" })
    );
  }
});
