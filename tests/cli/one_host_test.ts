/**
 * One process plans one host: a shared config's `hosts:` gives each host its section, picked by
 * `--host` or this machine's host name, and planning refuses any host whose own use of its
 * devices is unknown (a captured tree without `host_use.json`, libvirt's node-device API, another
 * machine's libvirt with this machine's `/sys`). The CLI runs spawned with README's permissions.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { runCli } from "../helpers/cli.ts";
import { loadFixtureHost } from "../helpers/hosts.ts";
import { testDomainXml, writeTempWorld } from "../helpers/world.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
import { nodeDeviceWorldXml } from "../../lib/testing/nodedev_world.ts";
import { discoverViaLibvirt } from "../../lib/host/nodedev.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { openNodeDeviceSource } from "../../ffi/nodedev_source.ts";
import { openLibvirtPort } from "../../ffi/port.ts";

/** hv1 is the X570 board, hv2 the TRX40 one. */
const HV1 = loadFixtureHost("x570-aorus-pro-wifi");
const HV2 = loadFixtureHost("trx40-creator");

/** Two VMs: "render" takes each host's own GPU, "store" an NVMe drive on hv2 only. */
function sharedConfig(sections: string): string {
  return `version: 1
hosts:
${sections}
vms:
  render:
    devices:
      - { name: gpu, host: hv1, match: { vendor_device_id: "10de:1b06" } }
      - { name: gpu, host: hv2, match: { vendor_device_id: "10de:1b80" } }
  store:
    host: hv2
    devices: [{ match: { class: nvme } }]
`;
}

const WORLD = nodeDeviceWorldXml(HV1, {
  domains: [testDomainXml("render", { running: false }), testDomainXml("store")],
});

interface JsonPlan {
  host: string;
  section?: string;
  errors: { code: string; message: string }[];
  vms: { name: string; add: { address: string }[]; errors: { code: string }[] }[];
}

Deno.test("a captured tree without host_use.json refuses to plan; with it, the same tree plans", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-one-host-" });
  await using world = await writeTempWorld(WORLD);
  try {
    buildHostTree(HV1, `${dir}/sysfs`);
    await Deno.remove(`${dir}/sysfs/host_use.json`);
    await Deno.writeTextFile(
      `${dir}/c.yaml`,
      "version: 1\nvms:\n  store:\n    devices: [{ match: { class: nvme } }]\n",
    );
    const args = ["-f", `${dir}/c.yaml`, "--sysfs", `${dir}/sysfs`, "-c", world.uri];
    const json = await runCli(["plan", "--json", ...args]);
    assertEquals(json.code, 1, json.stderr);
    const plan = JSON.parse(json.stdout) as JsonPlan;
    assertEquals(plan.errors.map((e) => e.code), ["host-use-unknown"]);
    assertMatch(
      plan.errors[0]!.message,
      /^The tree at ".*\/sysfs" has no host_use\.json, .*: capture the tree with 'passthrough snapshot DIR' on that host/,
    );
    assertEquals(plan.vms.map((vm) => vm.errors.map((e) => e.code)), [["host-use-unknown"]]);

    const text = await runCli(["plan", ...args]);
    assertEquals(text.code, 1);
    assertMatch(text.stdout, /refused \[host-use-unknown\] The tree at /);

    // A refusal of the whole host stands with no VM to refuse.
    await Deno.writeTextFile(`${dir}/none.yaml`, "version: 1\nvms: {}\n");
    const empty = await runCli(["plan", "--json", ...args.with(1, `${dir}/none.yaml`)]);
    assertEquals(empty.code, 1, empty.stderr);
    assertEquals((JSON.parse(empty.stdout) as JsonPlan).errors.map((e) => e.code), [
      "host-use-unknown",
    ]);

    // Apply changes nothing either.
    const apply = await runCli(["apply", "--yes", "--state-dir", `${dir}/state`, ...args]);
    assertEquals(apply.code, 1, apply.stdout + apply.stderr);
    assertMatch(apply.stdout, /Changed: none\./);

    await Deno.writeTextFile(`${dir}/sysfs/host_use.json`, "[]\n");
    const known = await runCli(["plan", "--json", ...args]);
    assertEquals(known.code, 0, known.stderr);
    assertEquals(
      (JSON.parse(known.stdout) as JsonPlan).vms.map((vm) => vm.add.map((a) => a.address)),
      [["0000:01:00.0"]],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("planning through libvirt's node-device API refuses: it knows nothing of the host's use", async () => {
  await using world = await writeTempWorld(WORLD);
  using source = openNodeDeviceSource(world.uri);
  const host = discoverViaLibvirt(source);
  assertEquals(host.hostUse, null);
  using libvirt = openLibvirtPort(world.uri);
  const config = parseConfig(
    "version: 1\nvms:\n  store:\n    devices: [{ match: { class: nvme } }]\n",
    { file: "c.yaml" },
  );
  const plan = planHostdevs({ config, host, libvirt });
  assertEquals(plan.errors.map((e) => e.code), ["host-use-unknown"]);
  assertMatch(plan.errors[0]!.message, /^Host "test:\/\/.*" was discovered through libvirt/);
  assertEquals(plan.vms[0]?.changed, false);
});

Deno.test("a shared config plans only the section of --host, or of this machine's host name", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-one-host-" });
  await using world = await writeTempWorld(WORLD);
  try {
    buildHostTree(HV1, `${dir}/hv1`);
    buildHostTree(HV2, `${dir}/hv2`);
    const config = `${dir}/shared.yaml`;
    await Deno.writeTextFile(config, sharedConfig("  hv1: { sysfs: hv1 }\n  hv2: { sysfs: hv2 }"));

    const picked = await runCli(["plan", "--json", "-f", config, "--host", "hv1", "-c", world.uri]);
    assertEquals(picked.code, 0, picked.stderr);
    const plan = JSON.parse(picked.stdout) as JsonPlan;
    // Only hv1's VMs and rules, against hv1's tree: "store" is limited to hv2.
    assertEquals([plan.host, plan.section], [`${dir}/hv1`, "hv1"]);
    assertEquals(
      plan.vms.map((vm) => [vm.name, vm.add.map((a) => a.address)]),
      [["render", ["0000:0b:00.0", "0000:0b:00.1"]]],
    );
    assertEquals(
      picked.stderr,
      `Host section "hv1" of ${config} (--host), declared at ${config}:3:3\n`,
    );
    // apply --json names it too, as plan --json does.
    const applied = await runCli([
      "apply",
      "--yes",
      "--json",
      "-f",
      config,
      "--host",
      "hv1",
      "-c",
      world.uri,
      "--state-dir",
      `${dir}/state`,
    ]);
    assertEquals(applied.code, 0, applied.stderr);
    assertEquals((JSON.parse(applied.stdout) as JsonPlan).section, "hv1");

    // Without --host, the section named after this machine (here in hv2's place).
    const own = Deno.hostname();
    await Deno.writeTextFile(
      config,
      sharedConfig(`  hv1: { sysfs: hv1 }\n  ${own}: { sysfs: hv2 }`).replaceAll(
        "host: hv2",
        `host: ${own}`,
      ),
    );
    const mine = await runCli(["plan", "--json", "-f", config, "-c", world.uri]);
    assertEquals(mine.code, 0, mine.stderr);
    assertEquals((JSON.parse(mine.stdout) as JsonPlan).section, own);
    assertEquals(
      mine.stderr,
      `Host section "${own}" of ${config} (this machine's host name), declared at ${config}:4:3\n`,
    );
    assertEquals(
      (JSON.parse(mine.stdout) as JsonPlan).vms.map((vm) => [
        vm.name,
        vm.add.map((a) => a.address),
      ]),
      [["render", ["0000:21:00.0", "0000:21:00.1"]], ["store", ["0000:4a:00.0"]]],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a shared config without this host's section, and flags that clash with it, are errors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-one-host-" });
  await using world = await writeTempWorld(WORLD);
  try {
    buildHostTree(HV1, `${dir}/hv1`);
    const config = `${dir}/shared.yaml`;
    await Deno.writeTextFile(config, sharedConfig("  hv1: { sysfs: hv1 }\n  hv2: {}"));
    const run = (...args: string[]) => runCli(["plan", "-f", config, "-c", world.uri, ...args]);

    // No section is named after this machine (hv1 and hv2 are not its name).
    assertOk(!["hv1", "hv2"].includes(Deno.hostname()));
    const none = await run();
    assertEquals([none.code, none.stdout], [1, ""]);
    assertMatch(
      none.stderr,
      /has no section for host ".*" \(this machine's host name, as uname -n prints it\) under "hosts:" at .*shared\.yaml:2:1: it declares "hv1", "hv2": pass --host NAME/,
    );
    const wrong = await run("--host", "hv3");
    assertEquals(wrong.code, 1);
    assertMatch(wrong.stderr, /has no section for host "hv3" \(--host\)/);
    // A VM of another host's section is not this host's to plan.
    const elsewhere = await run("--host", "hv1", "--vm", "store");
    assertEquals(elsewhere.code, 1);
    assertMatch(
      elsewhere.stderr,
      /VM "store" is not in .*shared\.yaml for host "hv1": it names "render"\n$/,
    );

    const both = await run("--host", "hv1", "--sysfs", `${dir}/hv1`);
    assertEquals(both.code, 2);
    assertMatch(
      both.stderr,
      /--sysfs and hosts\.hv1\.sysfs in .* both say where to look: keep one/,
    );

    // The same for --connect: which libvirt to define in would be a guess.
    const connected = `${dir}/connected.yaml`;
    await Deno.writeTextFile(
      connected,
      sharedConfig(`  hv1: { sysfs: hv1, connect: ${JSON.stringify(world.uri)} }\n  hv2: {}`),
    );
    const clash = await runCli(["plan", "-f", connected, "--host", "hv1", "-c", world.uri]);
    assertEquals([clash.code, clash.stdout], [2, ""]);
    assertMatch(
      clash.stderr,
      /--connect and hosts\.hv1\.connect in .* both say where to look: keep one/,
    );

    // hv2 has no tree: with a remote URI it would be planned against this machine's /sys.
    const remote = await runCli([
      "plan",
      "-f",
      config,
      "--host",
      "hv2",
      "-c",
      "qemu+ssh://hv2.invalid/system",
    ]);
    assertEquals(remote.code, 1);
    assertMatch(
      remote.stderr,
      /libvirt at "qemu\+ssh:\/\/hv2\.invalid\/system" is another machine, and this machine's \/sys says nothing about its devices/,
    );

    const single = `${dir}/single.yaml`;
    await Deno.writeTextFile(single, "version: 1\nvms:\n  store: { devices: [] }\n");
    const flag = await runCli(["plan", "-f", single, "--host", "hv1"]);
    assertEquals(flag.code, 2);
    assertMatch(flag.stderr, /--host needs a config with a "hosts:" section/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Runs the CLI in a UTS namespace of its own whose host name is `name` (`uname -n`): needs root. */
function asHost(name: string): string[] {
  return [
    "unshare",
    "--uts",
    "sh",
    "-c",
    'printf %s "$0" >/proc/sys/kernel/hostname && exec "$@"',
    name,
  ];
}

Deno.test({
  name:
    "a host named with its domain, or without, finds no section of the other form and is told which",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-one-host-" });
    await using world = await writeTempWorld(WORLD);
    try {
      buildHostTree(HV1, `${dir}/hv1`);
      const config = `${dir}/shared.yaml`;
      await Deno.writeTextFile(config, sharedConfig("  hv1: { sysfs: hv1 }\n  hv2: {}"));
      const args = ["-f", config, "-c", world.uri];
      // The kernel's name as RHEL's hostnamectl sets it: the section is "hv1", never picked by
      // a guess, and the message says where "hosts:" is and which section was meant.
      for (
        const [name, command] of [["hv1.example.com", ["plan"]], ["HV1.Example.COM", [
          "apply",
          "--yes",
        ]]] as const
      ) {
        const run = await runCli([...command, ...args], { wrap: asHost(name) });
        assertEquals([run.code, run.stdout], [1, ""], run.stderr);
        assertEquals(
          run.stderr,
          `passthrough ${
            command[0]
          }: ${config} has no section for host "${name}" (this machine's host name, as uname -n prints it) under "hosts:" at ${config}:2:1 (did you mean "hv1"? a host name matches a section only whole, with its domain): it declares "hv1", "hv2": pass --host NAME, or add a section named "${name}"\n`,
        );
      }
      // The reverse: a short kernel name, sections named with their domain.
      await Deno.writeTextFile(
        config,
        sharedConfig("  hv1.example.com: { sysfs: hv1 }\n  hv2.example.com: {}")
          .replaceAll("host: hv1", "host: hv1.example.com").replaceAll(
            "host: hv2",
            "host: hv2.example.com",
          ),
      );
      const short = await runCli(["plan", ...args], { wrap: asHost("hv2") });
      assertEquals(short.code, 1, short.stderr);
      assertMatch(
        short.stderr,
        /\(did you mean "hv2\.example\.com"\? a host name matches a section only whole/,
      );
      // Another domain's "hv1" may be another machine: nothing is suggested.
      const other = await runCli(["plan", ...args], { wrap: asHost("hv1.lab.example.com") });
      assertEquals(other.code, 1, other.stderr);
      assertMatch(
        other.stderr,
        /under "hosts:" at .*:2:1: it declares "hv1\.example\.com", "hv2\.example\.com"/,
      );
      // Named whole, it is picked.
      const exact = await runCli(["plan", "--json", ...args], { wrap: asHost("hv1.example.com") });
      assertEquals(exact.code, 0, exact.stderr);
      assertMatch(
        exact.stderr,
        /^Host section "hv1\.example\.com" of .* \(this machine's host name\), declared at .*:3:3\n$/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
