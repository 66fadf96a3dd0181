/**
 * The live host spelled another way (`/sys/.`, `//sys`, `/sys/bus/..`, a symbolic link or a bind
 * mount of `/sys`) is still the live host: read with its host use (the boot disk's controller,
 * the default route's NIC), refused with another machine's libvirt. Never read as a captured tree.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { canUnshareMounts, cliCommand, runCli, runInPrivateMounts } from "../helpers/cli.ts";
import { shellQuote } from "../../lib/render/shell.ts";
import { isLiveRoot, liveSysfsRoot } from "../../cli/host_options.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import { demoTree } from "../helpers/reliability.ts";
import { liveDefaultRouteNic } from "../helpers/hosts.ts";

const TEST = "tests/cli/live_root_test.ts";

Deno.test("isLiveRoot() decides on the resolved path: every spelling of /sys is live, a tree is not", async () => {
  await using tree = await demoTree();
  const link = `${tree.dir}/sys-link`;
  Deno.symlinkSync("/sys", link);
  Deno.symlinkSync(tree.sysfs, `${tree.dir}/tree-link`);
  const live = ["/sys", "/sys/", "/sys/.", "//sys", "///sys//", "/sys/bus/..", "/sys/./", link];
  for (const spelling of live) {
    assertEquals(liveSysfsRoot(spelling), "/sys", spelling);
  }
  for (const tree_ of [tree.sysfs, `${tree.sysfs}/.`, `${tree.dir}/tree-link`, "/nonexistent"]) {
    assertOk(!isLiveRoot(tree_), `${tree_} is not the live host`);
  }
  recordCase({
    area: "security",
    name: "live /sys spelled /sys/., //sys, /sys/bus/.., a symlink",
    count: live.length,
    outcome: "read as the live host",
    test: TEST,
  });
});

/** The NOTES column of `devices`, by address. */
function notes(stdout: string): string[] {
  return stdout.split("\n").filter((l) => /^[0-9a-f]{4}:/.test(l)).map((l) =>
    `${l.slice(0, 12)} ${l.includes("host: ") ? l.slice(l.indexOf("host: ")) : ""}`
  );
}

Deno.test("devices --sysfs with /sys spelled another way keeps the host-use notes", async () => {
  const reference = await runCli(["devices"]);
  assertEquals(reference.code, 0, reference.stderr);
  // The notes compared are there to lose: the NIC of the default route is marked.
  const nic = liveDefaultRouteNic();
  if (nic !== null) {
    assertOk(
      notes(reference.stdout).some((n) => n.startsWith(nic.address) && n.includes("host: ")),
      reference.stdout,
    );
  }
  await using tree = await demoTree();
  const link = `${tree.dir}/sys-link`;
  Deno.symlinkSync("/sys", link);
  for (const spelling of ["/sys/.", "//sys", "/sys/bus/..", link]) {
    const run = await runCli(["devices", "--sysfs", spelling]);
    assertEquals(run.code, 0, run.stderr);
    assertEquals(notes(run.stdout), notes(reference.stdout), spelling);
  }
});

Deno.test("plan refuses another machine's libvirt with this machine's /sys however spelled", async () => {
  await using tree = await demoTree();
  const config = `${tree.dir}/c.yaml`;
  Deno.writeTextFileSync(config, "version: 1\nvms:\n  vm1: { devices: [] }\n");
  for (const spelling of ["/sys/.", "/sys/bus/.."]) {
    const run = await runCli([
      "plan",
      "-f",
      config,
      "--sysfs",
      spelling,
      "-c",
      "qemu+ssh://hv2.invalid/system",
    ]);
    assertEquals(run.code, 1, run.stderr);
    assertMatch(run.stderr, /is another machine, and this machine's \/sys says nothing/);
  }
  // A tree captured there is what plans that machine: libvirt is reached for (and here, fails).
  const remote = await runCli([
    "plan",
    "-f",
    config,
    "--sysfs",
    tree.sysfs,
    "-c",
    "qemu+tcp://127.0.0.1:1/system",
  ]);
  assertEquals(remote.code, 1, remote.stderr);
  assertMatch(remote.stderr, /127\.0\.0\.1/);
  assertEquals(remote.stderr.includes("is another machine"), false, remote.stderr);
  recordCase({
    area: "security",
    name: "remote libvirt with /sys spelled /sys/. or /sys/bus/..",
    count: 2,
    outcome: "refused before connecting",
    test: TEST,
  });
});

Deno.test({
  name: "devices --sysfs on a bind mount of /sys is the live host",
  ignore: !canUnshareMounts(),
  fn: async () => {
    const reference = await runCli(["devices"]);
    await using tree = await demoTree();
    const mount = `${tree.dir}/bound`;
    Deno.mkdirSync(mount);
    // The bind mount lives in a private mount namespace that ends with the command.
    const out = await runInPrivateMounts(
      `mount --rbind /sys ${shellQuote(mount)}`,
      [...cliCommand(), "devices", "--sysfs", mount],
      { NO_COLOR: "1" },
    );
    assertEquals(out.code, 0, out.stderr);
    assertEquals(notes(out.stdout), notes(reference.stdout));
    recordCase({
      area: "security",
      name: "live /sys through a bind mount",
      count: 1,
      outcome: "read as the live host",
      test: TEST,
    });
  },
});
