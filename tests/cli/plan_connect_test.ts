/**
 * `plan` opens libvirt on another thread while it discovers the host (`discoverWhileConnecting`
 * in `cli/plan_options.ts`): a discovery failure is still the one reported when both fail, a
 * connection failure alone is reported once with its URI, and neither leaves the process hanging
 * on the other.
 */

import { assertEquals, assertOk } from "../helpers/assert.ts";
import { runCli } from "../helpers/cli.ts";
import { demoTree } from "../helpers/reliability.ts";

Deno.test("plan reports a discovery failure before a connection failure, and a connection failure once", async () => {
  await using tree = await demoTree();
  const config = `${tree.dir}/c.yaml`;
  Deno.writeTextFileSync(config, "version: 1\nvms:\n  vm1: { devices: [] }\n");
  const uri = `qemu:///system?socket=${tree.dir}/no-such-socket`;

  const both = await runCli([
    "plan",
    "-f",
    config,
    "--sysfs",
    `${tree.dir}/no-such-tree`,
    "--connect",
    uri,
  ]);
  assertEquals(both.code, 1);
  assertOk(both.stderr.includes(`Not a sysfs tree: "${tree.dir}/no-such-tree"`), both.stderr);
  assertOk(!both.stderr.includes("Cannot connect"), both.stderr);

  const connection = await runCli(["plan", "-f", config, "--sysfs", tree.sysfs, "--connect", uri]);
  assertEquals(connection.code, 1);
  assertEquals(
    connection.stderr.split(`Cannot connect to libvirt at "${uri}": `).length - 1,
    1,
    connection.stderr,
  );
  assertOk(connection.stderr.includes("no-such-socket"), connection.stderr);
});
