/**
 * The pre-flight findings through the CLI, spawned with README's permissions: `plan --json` on a
 * captured tree carries `boot-vga` (read from the tree and its `proc/`), and refuses
 * the VM with `rom-unreadable`; `doctor --json` lists the host-wide view.
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { runCli } from "../helpers/cli.ts";
import { testDomainXml, writeTempWorld } from "../helpers/world.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
import { nodeDeviceWorldXml } from "../../lib/testing/nodedev_world.ts";
import { described } from "./trees.ts";

const HOST = described("x570-aorus-pro-wifi", {
  devices: {
    "0000:0b:00.0": { boot_vga: true, reset_method: "bus" },
    "0000:0c:00.0": { reset_method: "flr bus" },
    "0000:0b:00.1": { reset_method: "flr bus" },
  },
  host: { proc: { iomem: "e0000000-efffffff : 0000:0b:00.0\n  e0000000-e07e8fff : BOOTFB\n" } },
});

interface JsonIssue {
  code: string;
  devices?: string[];
}

Deno.test("plan --json carries the pre-flight warnings and the rom-unreadable refusal; doctor lists them", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-preflight-cli-" });
  await using world = await writeTempWorld(
    nodeDeviceWorldXml(HOST, { domains: [testDomainXml("win", { running: false })] }),
  );
  try {
    buildHostTree(HOST, `${dir}/sysfs`);
    const rule = "vms:\n  win:\n    devices:\n      - name: gpu\n" +
      "        match: { vendor_device_id: 10de:1b06 }\n";
    await Deno.writeTextFile(`${dir}/c.yaml`, `version: 1\n${rule}`);
    const args = ["-f", `${dir}/c.yaml`, "--sysfs", `${dir}/sysfs`, "-c", world.uri];
    const planned = await runCli(["plan", "--json", ...args]);
    const plan = JSON.parse(planned.stdout) as {
      vms: { warnings: JsonIssue[]; errors: JsonIssue[] }[];
    };
    assertEquals(
      plan.vms[0]!.warnings.map((w) => [w.code, w.devices]),
      // Its bus-only reset is no finding: the audio function, the bus's only other device, goes
      // to the same VM (and doctor, host-wide, sees it in the card's IOMMU group).
      [["boot-vga", ["0000:0b:00.0"]]],
    );
    await Deno.writeTextFile(
      `${dir}/c.yaml`,
      `version: 1\n${rule}        rom: { file: ${JSON.stringify(`${dir}/missing.rom`)} }\n`,
    );
    const refused = await runCli(["plan", "--json", ...args]);
    const errors = (JSON.parse(refused.stdout) as { vms: { errors: JsonIssue[] }[] }).vms[0]!
      .errors;
    assertEquals(errors.map((e) => e.code), ["rom-unreadable"]);
    const doctor = await runCli(["doctor", "--json", "--no-libvirt", "--sysfs", `${dir}/sysfs`]);
    const findings = JSON.parse(doctor.stdout) as { check: string; status: string }[];
    assertEquals(
      findings.filter((f) => ["boot-vga", "reset"].includes(f.check)).map((f) => f.status),
      ["warn", "ok"],
    );
    assertMatch(doctor.stdout, /held by BOOTFB/);
    // Warnings alone do not fail the host.
    assertEquals([doctor.code, findings.filter((f) => f.status === "fail")], [0, []]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
