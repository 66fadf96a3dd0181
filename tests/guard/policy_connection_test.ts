/**
 * Where the start guard's policies come from: the hook guards the VMs of this host's system
 * daemon, and takes only policies an apply over that daemon recorded. A rehearsal over a test
 * world copied from the host (the host's VM names and UUIDs) records its own in a state directory
 * a hook may be pointed at later: they must never let the host's VM start unchecked.
 *
 * @module
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { runCli } from "../helpers/cli.ts";
import { demoTree } from "../helpers/reliability.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { runGuard } from "../../lib/guard/run.ts";
import { readPolicyFile } from "../../lib/guard/state.ts";
import { recordPolicies } from "../../lib/guard/state.ts";
import { lockUri } from "../../lib/state/lock.ts";

const WORLD = new URL("../../demo/world.xml", import.meta.url).pathname;
const CONFIG = new URL("../../demo/passthrough_config.yaml", import.meta.url).pathname;

/** win10's definition in the demo world with a hand-added hostdev of a device the host lacks. */
function win10WithGoneDevice(): string {
  const world = Deno.readTextFileSync(WORLD);
  const start = world.indexOf("<domain");
  const xml = world.slice(start, world.indexOf("</domain>", start) + "</domain>".length);
  assertMatch(xml, /<name>win10<\/name>/);
  return xml.replace(
    "<devices>",
    "<devices><hostdev mode='subsystem' type='pci' managed='yes'><source>" +
      "<address domain='0x0000' bus='0x7f' slot='0x1f' function='0x7'/></source></hostdev>",
  );
}

Deno.test("policy: a test world's guard: off recorded where a hook is later pointed does not relax the host's VM; its own connection's check still obeys it", async () => {
  await using tree = await demoTree();
  const stateDir = `${tree.dir}/state`;
  const config = `${tree.dir}/config.yaml`;
  Deno.writeTextFileSync(
    config,
    Deno.readTextFileSync(CONFIG).replace("  win10:\n", "  win10:\n    guard: off\n"),
  );
  const uri = `test://${WORLD}`;
  const applied = await runCli(
    ["apply", "--config", config, "--sysfs", tree.sysfs, "--connect", uri, "--yes"],
    { env: { PASSTHROUGH_STATE_DIR: stateDir } },
  );
  assertEquals(applied.code, 0, applied.stderr);
  const recorded = readPolicyFile(stateDir).file;
  assertEquals(recorded?.vms.win10?.guard, "off");
  assertEquals(recorded?.uri, lockUri(uri));

  const start = (connection?: string) =>
    runGuard({
      vm: "win10",
      operation: "prepare",
      subOperation: "begin",
      xml: win10WithGoneDevice(),
      reader: denoFsReader(),
      root: tree.sysfs,
      live: false,
      stateDir,
      ...(connection === undefined ? {} : { connection }),
    });
  // The hook (the system daemon's): the rehearsal's off does not count, the gone device refuses.
  const hook = await start();
  assertEquals(hook.code, 1, hook.lines.join("\n"));
  assertMatch(
    hook.lines.join("\n"),
    new RegExp(
      `the guard policies in ${stateDir}/guard/policy\\.json were recorded by an apply over ` +
        `test://${WORLD.replaceAll(".", "\\.")}, not qemu:///system, whose VMs this guard ` +
        `checks: they do not count, every device is checked as "enforce"; ` +
        `"passthrough apply -c qemu:///system" records the config's for them`,
    ),
  );
  // The same check for the VMs of the world it was recorded over obeys it.
  assertEquals((await start(lockUri(uri))).code, 0);

  // hook status and hook install, which read the directory as the hook does, say so too.
  const hooks = `${tree.dir}/hooks`;
  const install = await runCli(["hook", "install", "--hooks-dir", hooks, "--state-dir", stateDir]);
  assertEquals(install.code, 0, install.stderr);
  assertMatch(install.stdout + install.stderr, /recorded by an apply over test:\/\//);
  const status = await runCli(["hook", "status", "--hooks-dir", hooks]);
  assertMatch(status.stdout, /policies: the guard policies in .* were recorded by an apply over/);
});

Deno.test("policy: a file from before the connection was recorded is obeyed as written, and hook status says to apply again", async () => {
  await using tree = await demoTree();
  const stateDir = `${tree.dir}/state`;
  recordPolicies(stateDir, {
    version: 1,
    config: "c.yaml",
    vms: { win10: { guard: "off", rules: {} } },
  });
  const hook = await runGuard({
    vm: "win10",
    operation: "prepare",
    subOperation: "begin",
    xml: win10WithGoneDevice(),
    reader: denoFsReader(),
    root: tree.sysfs,
    live: false,
    stateDir,
  });
  assertEquals(hook.code, 0, hook.lines.join("\n"));
  const hooks = `${tree.dir}/hooks`;
  assertEquals(
    (await runCli(["hook", "install", "--hooks-dir", hooks, "--state-dir", stateDir])).code,
    0,
  );
  const status = await runCli(["hook", "status", "--hooks-dir", hooks]);
  assertMatch(
    status.stdout,
    /policies: "win10" off \(from c\.yaml; recorded before passthrough noted the connection of the apply: if that was not qemu:\/\/\/system \(a test world, a session\), run passthrough apply -c qemu:\/\/\/system\)/,
  );
});

Deno.test("policy: guard allow over a test world, in a state directory a hook is later pointed at, does not let the host's VM start", async () => {
  await using tree = await demoTree();
  const stateDir = `${tree.dir}/state`;
  const uri = `test://${WORLD}`;
  // No hook installed in this hooks directory: the rehearsal's own --state-dir takes it.
  const allow = () =>
    runCli([
      "guard",
      "allow",
      "win10",
      "--connect",
      uri,
      "--state-dir",
      stateDir,
      "--hooks-dir",
      `${tree.dir}/hooks`,
    ]);
  const given = await allow();
  assertEquals(given.code, 0, given.stderr);
  const start = (connection?: string) =>
    runGuard({
      vm: "win10",
      operation: "prepare",
      subOperation: "begin",
      xml: win10WithGoneDevice(),
      reader: denoFsReader(),
      root: tree.sysfs,
      live: false,
      stateDir,
      ...(connection === undefined ? {} : { connection }),
    });
  // The hook (the system daemon's): refused, the allowance used up, and why it did not count.
  const hook = await start();
  assertEquals(hook.code, 1, hook.lines.join("\n"));
  assertMatch(
    hook.lines.join("\n"),
    /an allowance for "win10" was given by guard allow over another libvirt connection than qemu:\/\/\/system, whose VMs this guard checks; it does not count and is used up: run "passthrough guard allow win10 -c qemu:\/\/\/system --state-dir \S+" to start this one anyway/,
  );
  assertEquals((await start(lockUri(uri))).code, 1);
  // The same check for the VMs of the world it was given over takes it.
  assertEquals((await allow()).code, 0);
  assertEquals((await start(lockUri(uri))).code, 0);
});
