/**
 * `passthrough sources` through the CLI: sysfs + lspci against libvirt's node-device API, on a
 * built tree with a test-driver world made from the same real host, and on this machine's real
 * `/sys` against a real libvirtd.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { pathExists } from "../../lib/state/paths.ts";
import { runCli } from "../helpers/cli.ts";
import { libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { nodeDeviceWorldXml } from "../../lib/testing/nodedev_world.ts";
import type { SourceDifference } from "../../lib/host/source_compare.ts";

const HOST = new URL("../fixtures/hosts/z690-asus-adl.json", import.meta.url);

Deno.test("passthrough sources finds only the drivers the test driver drops, then a moved group", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-sources-" });
  try {
    const description = loadHostDescription(HOST);
    buildHostTree(description, `${dir}/sysfs`);
    const world = nodeDeviceWorldXml(description);
    await Deno.writeTextFile(`${dir}/world.xml`, world);
    const args = [
      "sources",
      "--json",
      "--sysfs",
      `${dir}/sysfs`,
      "--connect",
      `test://${dir}/world.xml`,
    ];
    const same = await runCli(args);
    const report = JSON.parse(same.stdout) as { differences: SourceDifference[] };
    const bound = description.devices.filter((d) => d.driver !== null).length;
    assertEquals(report.differences.length, bound);
    assertEquals(report.differences.every((d) => d.kind === "field" && d.field === "driver"), true);
    assertEquals(same.code, 1);

    // The RX 6700 XT's audio function (group 22) claimed by libvirt to be in group 99.
    const moved = world.replace(
      /(<name>pci_0000_03_00_1<\/name>[\s\S]*?<iommuGroup number=')22(')/,
      "$199$2",
    );
    await Deno.writeTextFile(`${dir}/world.xml`, moved);
    const differ = await runCli(args.filter((a) => a !== "--json"));
    assertMatch(differ.stdout, /0000:03:00\.1: iommuGroup is 22 in sysfs, 99 in libvirt/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "passthrough sources: this machine's /sys and a real libvirtd agree",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    const result = await runCli(["sources", "--connect", daemon.uri]);
    assertEquals(result.code, 0, result.stdout + result.stderr);
    assertMatch(result.stdout, /The two sources agree/);
  },
});

Deno.test("passthrough sources prints both counts, every difference and how many; agreeing sources exit 0", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-sources-" });
  try {
    // Without drivers, which the test driver drops: the two sources agree.
    const full = loadHostDescription(HOST);
    const description = { ...full, devices: full.devices.map((d) => ({ ...d, driver: null })) };
    buildHostTree(description, `${dir}/sysfs`);
    const world = nodeDeviceWorldXml(description);
    await Deno.writeTextFile(`${dir}/world.xml`, world);
    const uri = `test://${dir}/world.xml`;
    const args = ["sources", "--sysfs", `${dir}/sysfs`, "--connect", uri];
    const functions = description.devices.length;
    const groups = new Set(description.devices.map((d) => d.group)).size;
    const header = `sysfs (${dir}/sysfs): ${functions} functions, ${groups} IOMMU groups\n` +
      `libvirt (${uri}): ${functions} functions, ${groups} IOMMU groups\n`;

    const same = await runCli(args);
    assertEquals([same.code, same.stdout], [0, `${header}The two sources agree\n`]);
    const json = await runCli([...args, "--json"]);
    assertEquals([json.code, JSON.parse(json.stdout)], [0, {
      sysfs: `${dir}/sysfs`,
      libvirt: uri,
      differences: [],
    }]);

    // libvirt lacks the Wi-Fi card (alone in group 27) and claims the RX 6700 XT's two functions
    // (groups 21 and 22) are in groups 98 and 99.
    const lacking = nodeDeviceWorldXml({
      ...description,
      devices: description.devices.filter((d) => d.bdf !== "0000:09:00.0"),
    });
    const moved = lacking
      .replace(/(<name>pci_0000_03_00_0<\/name>[\s\S]*?<iommuGroup number=')21(')/, "$198$2")
      .replace(/(<name>pci_0000_03_00_1<\/name>[\s\S]*?<iommuGroup number=')22(')/, "$199$2");
    await Deno.writeTextFile(`${dir}/world.xml`, moved);
    const differ = await runCli(args);
    assertEquals([differ.code, differ.stdout], [
      1,
      `sysfs (${dir}/sysfs): ${functions} functions, ${groups} IOMMU groups\n` +
      `libvirt (${uri}): ${functions - 1} functions, ${groups - 1} IOMMU groups\n` +
      "  0000:03:00.0: iommuGroup is 21 in sysfs, 98 in libvirt\n" +
      "  0000:03:00.1: iommuGroup is 22 in sysfs, 99 in libvirt\n" +
      "  0000:09:00.0: in sysfs only, missing from libvirt\n" +
      "3 differences\n",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("passthrough sources reports a group member libvirt's node devices lack, and compares the rest", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-sources-" });
  try {
    // The ConnectX-4 Lx's six functions share group 1. libvirt reads <iommuGroup> from sysfs when
    // it prints a device, but lists the devices udev told it of: 01:00.1 not yet (or no more).
    const full = loadHostDescription(new URL("c246-cx4lx-sriov.json", HOST));
    const description = { ...full, devices: full.devices.map((d) => ({ ...d, driver: null })) };
    buildHostTree(description, `${dir}/sysfs`);
    const world = nodeDeviceWorldXml(description).replace(
      / {2}<device>\n {4}<name>pci_0000_01_00_1<\/name>[\s\S]*?<\/device>\n/,
      "",
    );
    await Deno.writeTextFile(`${dir}/world.xml`, world);
    const uri = `test://${dir}/world.xml`;
    const args = ["sources", "--sysfs", `${dir}/sysfs`, "--connect", uri];
    const text = await runCli(args);
    assertEquals([text.code, text.stderr, text.stdout], [
      1,
      "",
      `sysfs (${dir}/sysfs): 6 functions, 1 IOMMU groups\n` +
      `libvirt (${uri}): 5 functions, 1 IOMMU groups\n` +
      `  libvirt disagrees with itself: IOMMU group 1 at "0000:01:00.0": member "0000:01:00.1" ` +
      "is not among the node devices\n" +
      "  0000:01:00.1: in sysfs only, missing from libvirt\n" +
      "2 differences\n",
    ]);
    const json = await runCli([...args, "--json"]);
    assertEquals(JSON.parse(json.stdout).differences[0], {
      kind: "inconsistent",
      source: "b",
      groups: [1],
      devices: ["0000:01:00.0", "0000:01:00.1"],
      detail:
        'IOMMU group 1 at "0000:01:00.0": member "0000:01:00.1" is not among the node devices',
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("passthrough sources --allow-uri-programs opens a URI that runs a program", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-sources-" });
  try {
    buildHostTree(loadHostDescription(HOST), `${dir}/sysfs`);
    const mark = `${dir}/RAN`;
    const script = `${dir}/tunnel.sh`;
    await Deno.writeTextFile(script, `#!/bin/sh\ntouch '${mark}'\nexit 1\n`, { mode: 0o755 });
    const uri = `qemu+ext:///system?command=${script}`;
    const refused = await runCli(["sources", "--sysfs", `${dir}/sysfs`, "-c", uri]);
    assertEquals([refused.code, pathExists(mark)], [1, false]);
    // Allowed, libvirt runs the program (which fails here): the flag reaches the connection.
    const allowed = await runCli([
      "sources",
      "--sysfs",
      `${dir}/sysfs`,
      "-c",
      uri,
      "--allow-uri-programs",
    ]);
    assertEquals(allowed.code, 1);
    assertOk(pathExists(mark), "--allow-uri-programs let libvirt run it");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
