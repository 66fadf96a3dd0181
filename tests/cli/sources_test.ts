/**
 * `passthrough sources` through the CLI: sysfs + lspci against libvirt's node-device API, on a
 * built tree with a test-driver world made from the same real host, and on this machine's real
 * `/sys` against a real libvirtd.
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
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
