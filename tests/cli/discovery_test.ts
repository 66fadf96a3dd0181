// The real CLI, spawned with exactly the documented permission flags (bin/passthrough's, read by
// tests/helpers/cli.ts; no --allow-all): the real /sys through libc, the real lspci, captured
// trees, and one-line permission errors.
import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
import type { IommuGroup, PciDevice } from "../../lib/host/types.ts";
import { type CliResult, documentedFlags, runCli } from "../helpers/cli.ts";
import { HOST_NAMES, loadFixtureHost, tempHostTree } from "../helpers/hosts.ts";

/** Exactly the flags README documents (from bin/passthrough), so they are proven sufficient. */
const FLAGS = documentedFlags();

function cli(args: string[], flags: string[] = FLAGS): Promise<CliResult> {
  return runCli(args, { flags });
}

const LIVE_PCI = (() => {
  try {
    return [...Deno.readDirSync("/sys/bus/pci/devices")].map((e) => e.name).sort();
  } catch {
    return null;
  }
})();

Deno.test({
  name: "devices lists every PCI function of the real /sys with the documented flags",
  ignore: LIVE_PCI === null,
  async fn() {
    const run = await cli(["devices"]);
    assertEquals([run.code, run.stderr], [0, ""]);
    for (const address of LIVE_PCI ?? []) assertMatch(run.stdout, new RegExp(`^${address} `, "m"));
    const json = await cli(["devices", "--json"]);
    const devices = JSON.parse(json.stdout) as PciDevice[];
    assertEquals(devices.map((d) => d.address), LIVE_PCI);
    assertOk(devices.every((d) => "iommuGroup" in d && "flr" in d));
  },
});

Deno.test({
  name: "groups on the real /sys reports missing IOMMU groups in one line, exit 0",
  ignore: LIVE_PCI === null || (() => {
    try {
      return [...Deno.readDirSync("/sys/kernel/iommu_groups")].length > 0;
    } catch {
      return false;
    }
  })(),
  async fn() {
    const run = await cli(["groups"]);
    assertEquals(run.code, 0);
    assertMatch(run.stdout, /^No IOMMU groups: /);
    assertEquals((await cli(["groups", "--json"])).stdout.trim(), "[]");
  },
});

for (
  const [missing, flags, hint] of [
    ["--allow-ffi", FLAGS.filter((f) => f !== "--allow-ffi"), /--allow-ffi/],
    ["--allow-run", FLAGS.filter((f) => f !== "--allow-run=lspci"), /--allow-run/],
  ] as const
) {
  Deno.test({
    name: `devices without ${missing} explains the missing permission in one line`,
    ignore: LIVE_PCI === null,
    async fn() {
      const run = await cli(["devices"], [...flags]);
      assertEquals(run.code, 1);
      assertEquals(run.stdout, "");
      const lines = run.stderr.trimEnd().split("\n");
      assertEquals(lines.length, 1, run.stderr);
      assertMatch(lines[0] ?? "", /^passthrough devices: /);
      assertMatch(lines[0] ?? "", hint);
    },
  });
}

Deno.test("devices --sysfs TREE without --allow-ffi reads the tree with Deno's own reads, alike", async () => {
  await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
  const withFfi = await cli(["devices", "--sysfs", tree.dir]);
  const without = await cli(
    ["devices", "--sysfs", tree.dir],
    FLAGS.filter((f) => f !== "--allow-ffi"),
  );
  assertEquals([without.code, without.stderr], [0, ""]);
  assertEquals(without.stdout, withFfi.stdout);
});

Deno.test("devices --sysfs of a path that does not exist says so, and lists nothing of this host", async () => {
  const run = await cli(["devices", "--sysfs", "/nonexistent/tree"]);
  assertEquals([run.code, run.stdout], [1, ""]);
  assertEquals(
    run.stderr,
    `passthrough devices: Not a sysfs tree: "/nonexistent/tree": no such directory\n`,
  );
});

Deno.test("a --sysfs that is itself a loop of symbolic links is said to be one, as a missing one is", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-cli-loop-" });
  try {
    const loop = `${dir}/loop`;
    Deno.symlinkSync("loop", loop);
    // It named a file under it as the loop ("…/loop/cmdline"; without FFI "…/loop/bus/pci/devices").
    const said = (command: string) =>
      `passthrough ${command}: Not a sysfs tree: "${loop}": a loop of symbolic links\n`;
    for (const command of ["devices", "groups", "doctor"]) {
      const run = await cli([command, "--sysfs", loop]);
      assertEquals([run.code, run.stdout, run.stderr], [1, "", said(command)]);
    }
    const snapshot = await cli(["snapshot", "--sysfs", loop, `${dir}/out`]);
    assertEquals([snapshot.code, snapshot.stderr], [1, said("snapshot")]);
    const noFfi = await cli(["devices", "--sysfs", loop], FLAGS.filter((f) => f !== "--allow-ffi"));
    assertEquals([noFfi.code, noFfi.stderr], [1, said("devices")]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("groups --json --sysfs TREE matches every shared host file", async () => {
  for (const name of HOST_NAMES) {
    const description = loadFixtureHost(name);
    await using tree = await tempHostTree(description, { prefix: `passthrough-cli-${name}-` });
    const dir = tree.dir;
    const run = await cli(["groups", "--json", "--sysfs", dir]);
    assertEquals(run.code, 0, run.stderr);
    const groups = JSON.parse(run.stdout) as IommuGroup[];
    const got = groups.flatMap((g) =>
      g.devices.map((
        d,
      ) => [g.group, d.address, d.vendorId, d.deviceId, d.classCode, d.driver, d.isBridge])
    );
    const hex = (s: string) => s.replace(/^0x/, "").toLowerCase();
    const expected = description.devices
      .map((d) => [
        d.group,
        d.bdf,
        hex(d.vendor),
        hex(d.device),
        hex(d.class),
        d.driver,
        hex(d.class).startsWith("0604"),
      ])
      .sort((a, b) =>
        (a[0] as number) - (b[0] as number) || String(a[1]).localeCompare(String(b[1]))
      );
    assertEquals(got, expected, name);
  }
});

Deno.test("groups --sysfs TREE marks bridges and host-critical groups in a table", async () => {
  await using tree = await tempHostTree(loadFixtureHost("b550-aorus-pro"));
  const dir = tree.dir;
  const run = await cli(["groups", "--sysfs", dir]);
  assertEquals(run.code, 0, run.stderr);
  assertOk(!run.stdout.includes("\x1b["), "no colour with NO_COLOR");
  const lines = run.stdout.split("\n");
  assertMatch(
    lines[0] ?? "",
    /^GROUP\s+STATUS\s+ADDRESS\s+IDS\s+SUBSYSTEM\s+CLASS\s+SLOT\s+NUMA\s+DRIVER\s+DEVICE\s+NOTES$/,
  );
  assertOk(lines.some((l) => /bridge/.test(l)));
  assertOk(lines.some((l) => /host-critical/.test(l)));
  // Columns line up: every address starts at the same offset.
  const offsets = new Set(
    lines.filter((l) => /0000:[0-9a-f]{2}:/.test(l)).map((l) => l.search(/0000:[0-9a-f]{2}:/)),
  );
  assertEquals(offsets.size, 1);
});

Deno.test("snapshot OUT then groups --sysfs OUT shows the same host", async () => {
  const dir = await Deno.makeTempDir();
  try {
    buildHostTree(loadFixtureHost("c246-cx4lx-sriov"), `${dir}/src`);
    const snap = await cli(["snapshot", "--sysfs", `${dir}/src`, `${dir}/out`]);
    assertEquals(snap.code, 0, snap.stderr);
    assertEquals(snap.stdout, `Wrote 6 devices in 1 IOMMU groups from ${dir}/src to ${dir}/out\n`);
    const a = await cli(["groups", "--json", "--sysfs", `${dir}/src`]);
    const b = await cli(["groups", "--json", "--sysfs", `${dir}/out`]);
    assertEquals(b.stdout, a.stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "snapshot --sysfs //sys captures the live host's /proc pre-flight files as of /sys",
  ignore: LIVE_PCI === null,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const plain = await cli(["snapshot", `${dir}/plain`]);
      assertEquals(plain.code, 0, plain.stderr);
      // The live sysfs spelled otherwise was taken for a tree with its own `proc/`: the snapshot
      // lost /proc/iomem, /proc/modules, the CPU vendor and the processes holding a GPU.
      const other = await cli(["snapshot", "--sysfs", "//sys", `${dir}/other`]);
      assertEquals(other.code, 0, other.stderr);
      const files = (root: string) =>
        [...Deno.readDirSync(`${root}/proc`)].map((e) => e.name).sort();
      assertOk(files(`${dir}/plain`).includes("cpuinfo"));
      assertEquals(files(`${dir}/other`), files(`${dir}/plain`));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("devices rejects unknown flags with usage, exit 2", async () => {
  const run = await cli(["devices", "--bogus"]);
  assertEquals(run.code, 2);
  assertMatch(run.stderr, /^passthrough devices: Unknown option '--bogus'/);
  assertMatch(run.stderr, /Usage: passthrough devices/);
  const snap = await cli(["snapshot"]);
  assertEquals(snap.code, 2);
  assertMatch(snap.stderr, /Missing the output directory/);
});

Deno.test("doctor --sysfs TREE --json reports findings and fails without IOMMU", async () => {
  const dir = await Deno.makeTempDir();
  try {
    buildHostTree({
      cmdline: "quiet pcie_acs_override=downstream",
      devices: [{
        bdf: "0000:00:00.0",
        group: null,
        class: "0x060000",
        vendor: "0x8086",
        device: "0x3e30",
        subsystem_vendor: null,
        subsystem_device: null,
        driver: null,
        revision: null,
      }],
    }, dir);
    const run = await cli(["doctor", "--sysfs", dir, "--json", "--no-libvirt"]);
    assertEquals(run.code, 1, run.stderr);
    const findings = JSON.parse(run.stdout) as { check: string; status: string }[];
    assertEquals(findings.map((f) => [f.check, f.status]), [
      ["iommu", "fail"],
      ["interrupt-remapping", "fail"],
      ["acs-override", "warn"],
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
