/**
 * A consistent command line (issue 16): `help CMD` is `CMD --help`, `-V`, did-you-mean for
 * commands and VM names, runtime errors as one line with their fix (exit 1, no usage dump),
 * usage errors that do not read as "changes pending" under `--detailed-exitcode`, `--color`
 * on every command, and config errors as JSON on stdout under `--json`. Run in process through
 * `main()` on the demo world (real sysfs tree, real libvirt test driver).
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import type { CliIo } from "../../cli/context.ts";
import { COMMANDS } from "../../cli/commands.ts";
import { main } from "../../main.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";

const DEMO = new URL("../../demo/", import.meta.url).pathname;

/** `main()` in process with what it printed; `color` as a terminal would report it. */
async function run(
  args: string[],
  color = false,
): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const io: CliIo = {
    out: (text) => void (out += text),
    err: (text) => void (err += text),
    color,
    interactive: false,
    readLine: () => Promise.resolve(null),
    env: () => undefined,
  };
  const code = await main(args, io);
  return { code, out, err };
}

interface Scene extends AsyncDisposable {
  dir: string;
  host: string[];
  plan: string[];
}

async function scene(): Promise<Scene> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-consistency-" });
  buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
  const host = ["--sysfs", `${dir}/sysfs`];
  return {
    dir,
    host,
    plan: [
      "--config",
      `${DEMO}passthrough_config.yaml`,
      ...host,
      "--connect",
      `test://${DEMO}world.xml`,
    ],
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

Deno.test("help CMD prints what CMD --help prints; -V is --version", async () => {
  for (const command of COMMANDS) {
    const help = await run(["help", command.name]);
    assertEquals(help, await run([command.name, "--help"]), command.name);
    assertEquals(help.code, 0);
  }
  assertEquals(await run(["-V"]), await run(["--version"]));
  assertMatch((await run(["-V"])).out, /^passthrough \d+\.\d+\.\d+\n$/);
});

Deno.test("an unknown command gets a did-you-mean in one line, exit 2", async () => {
  const typo = await run(["plna"]);
  assertEquals(typo.code, 2);
  assertEquals(
    typo.err,
    `passthrough: Unknown command "plna" (did you mean "plan"?)\n` +
      "Run 'passthrough --help' for the list of commands.\n",
  );
  assertMatch((await run(["help", "grops"])).err, /did you mean "groups"\?/);
  // Nothing close: the list of commands, after a line in sentence case as every other message.
  assertMatch(
    (await run(["zzzzzz"])).err,
    /^passthrough: Unknown command "zzzzzz"\n\n.*Commands:\n/s,
  );
});

Deno.test("an option written before the command says options go after it, exit 2", async () => {
  // virsh's habit (`virsh -c URI list`): it read as an unknown command named "-c".
  const before = await run(["-c", "qemu:///system", "plan", "--vm", "win10"]);
  assertEquals(before.code, 2);
  assertEquals(
    before.err,
    `passthrough: Option "-c" comes before the command "plan": options go after it ` +
      `(passthrough plan [options])\n` +
      "Run 'passthrough plan --help' for its options.\n",
  );
  assertMatch((await run(["--color=never", "devices"])).err, /Option "--color=never" comes/);
  // A script that asked that command for JSON parses stdout: the usage error is there too, as
  // for an option written after the command.
  for (const args of [["-c", "qemu:///system", "plan", "--json"], ["--json", "devices"]]) {
    const json = await run(args);
    assertEquals(json.code, 2, json.err);
    assertEquals(JSON.parse(json.out).error, {
      kind: "usage",
      message: json.err.split("\n")[0]!.replace("passthrough: ", ""),
    });
    assertMatch(json.out, /comes before the command/);
  }
  // An option's value is no command: in `--vm plan apply`, "plan" is the VM and the command
  // `apply`; it named "plan" as the command.
  const valued = await run(["--vm", "plan", "apply", "--yes"]);
  assertEquals(valued.code, 2);
  assertMatch(valued.err, /^passthrough: Option "--vm" comes before the command "apply"/);
  assertMatch((await run(["-c", "devices", "--json", "groups"])).err, /command "groups"/);
  assertMatch((await run(["--vm=plan", "apply"])).err, /command "apply"/);
  const only = await run(["--vm", "plan"]);
  assertMatch(only.err, /^passthrough: Option "--vm" needs a command first\n/);
  // `--color` takes auto, always or never alone: a command's name after it is no value. It said
  // `Option "--color" needs a command first`.
  assertMatch(
    (await run(["--color", "plan"])).err,
    /^passthrough: Option "--color" comes before the command "plan"/,
  );
  assertMatch((await run(["--color", "never", "plan"])).err, /command "plan"/);
  assertMatch((await run(["--color", "devices", "--vm", "x", "plan"])).err, /command "devices"/);
  // Only where the command has JSON output.
  assertEquals((await run(["--json", "demo"])).out, "");
  // No command at all: the list of commands, after the line that says so.
  const alone = await run(["--json"]);
  assertEquals(alone.code, 2);
  assertMatch(alone.err, /^passthrough: Option "--json" needs a command first\n\n.*Commands:\n/s);
});

Deno.test('a "--" before the command ends the options: the next word is the command', async () => {
  // It said `Option "--" comes before the command "plan"`: "--" is no option (POSIX), and a
  // wrapper's `passthrough -- "$@"` writes it there.
  const help = await run(["--", "plan", "--help"]);
  assertEquals([help.code, help.err], [0, ""]);
  assertMatch(help.out, /^Usage: passthrough plan /);
  const bad = await run(["--", "plan", "--bogus", "--detailed-exitcode"]);
  assertEquals(bad.code, 1, bad.err);
  assertMatch(bad.err, /^passthrough plan: Unknown option '--bogus'/);
  // After it, a word spelt like an option is data: no version, help or JSON asked for.
  const version = await run(["--", "--version"]);
  assertEquals([version.code, version.out], [2, ""]);
  assertMatch(version.err, /^passthrough: Unknown command "--version"/);
  assertEquals((await run(["--", "--detailed-exitcode", "plan"])).code, 2);
  assertEquals((await run(["--", "--json", "plan"])).out, "");
  const alone = await run(["--"]);
  assertEquals(alone.code, 2);
  assertMatch(alone.out, /^passthrough .*\n\nUsage: passthrough <command>/);
});

Deno.test('help -- CMD is help CMD: the "--" after help ends its options too', async () => {
  // It said `Option "--" comes before the command "plan"`, as `passthrough -- plan` once did.
  assertEquals(await run(["help", "--", "plan"]), await run(["help", "plan"]));
  assertEquals(await run(["--", "help", "--", "plan"]), await run(["help", "plan"]));
  assertEquals(await run(["help", "--"]), await run(["help"]));
  // After it, a word spelt like an option is data, as after a leading "--".
  const option = await run(["help", "--", "--version"]);
  assertEquals([option.code, option.out], [2, ""]);
  assertMatch(option.err, /^passthrough: Unknown command "--version"/);
  assertMatch((await run(["help", "--", "plna"])).err, /^passthrough: Unknown command "plna"/);
});

Deno.test("help takes --color and --help before its topic, as every command does", async () => {
  // `help --color plan` said `Option "--color" comes before the command "plan"` (exit 2), and
  // `help --color` that the option needs a command first: help is the command there.
  const plan = await run(["help", "plan"]);
  assertEquals(await run(["help", "--color", "plan"]), plan);
  assertEquals(await run(["help", "--color", "never", "plan"]), plan);
  assertEquals(await run(["help", "--color=always", "-h", "plan"]), plan);
  assertEquals(await run(["help", "--color", "never", "--", "plan"]), plan);
  assertEquals(await run(["help", "--color"]), await run(["help"]));
  assertEquals(await run(["help", "--color", "always"]), await run(["help"]));
  // Only auto, always or never is its value, as before a command: "plna" is the topic.
  assertMatch((await run(["help", "--color", "plna"])).err, /^passthrough: Unknown command "plna"/);
});

Deno.test("help after the options every command takes is still the command, and prints its topic's help", async () => {
  // `--color never help plan` said `Option "--color" comes before the command "plan"` (exit 2):
  // help is the command there, and the options are its own, as in `help --color never plan`.
  const plan = await run(["help", "plan"]);
  assertEquals(await run(["--color", "never", "help", "plan"]), plan);
  assertEquals(await run(["--color", "help", "plan"]), plan);
  assertEquals(await run(["--color=always", "-h", "help", "--", "plan"]), plan);
  assertEquals(await run(["--color", "never", "help"]), await run(["help"]));
  // An option before a command is still said to go after it.
  assertMatch(
    (await run(["--color", "never", "plan"])).err,
    /^passthrough: Option "--color" comes before the command "plan"/,
  );
});

Deno.test("rollback without a terminal says a wrong command line first, as apply does", async () => {
  // It said "No terminal to confirm on" (exit 1), and the usage error only once --yes was given.
  const json = await run(["rollback", "win10", "--json"]);
  assertEquals(json.code, 2, json.err);
  assertEquals(JSON.parse(json.out).error, {
    kind: "usage",
    message: "--json needs --yes: questions would mix with the JSON",
  });
  const timeout = await run(["rollback", "win10", "--libvirt-timeout", "soon"]);
  assertEquals(timeout.code, 2, timeout.err);
  assertMatch(timeout.err, /^passthrough rollback: --libvirt-timeout takes a number of seconds/);
  assertEquals((await run(["apply", "--json"])).code, 2);
});

Deno.test("devices and groups say a malformed argument before a tree they cannot read", async () => {
  // It said the tree was missing (exit 1), and the wrong argument only once --sysfs was right.
  const missing = "/nonexistent/passthrough-tree";
  const devices = await run(["devices", "--sysfs", missing, "44:00.x"]);
  assertEquals(devices.code, 2, devices.err);
  assertMatch(devices.err, /^passthrough devices: "44:00.x" is not a PCI address/);
  const groups = await run(["groups", "--sysfs", missing, "two", "--json"]);
  assertEquals(groups.code, 2, groups.err);
  assertEquals(JSON.parse(groups.out).error.kind, "usage");
  assertMatch(groups.err, /^passthrough groups: "two" is not an IOMMU group number/);
});

Deno.test("doctor --no-libvirt still refuses a --libvirt-timeout that is no number, exit 2", async () => {
  // It ran every check but libvirt's, exit 0 or 1, and never said the value was wrong.
  const json = await run(["doctor", "--no-libvirt", "--libvirt-timeout", "soon", "--json"]);
  assertEquals(json.code, 2, json.err);
  assertEquals(JSON.parse(json.out).error.kind, "usage");
  assertMatch(json.err, /^passthrough doctor: --libvirt-timeout takes a number of seconds/);
});

Deno.test("--detailed-exitcode: a usage error exits 1, never 2 (changes pending)", async () => {
  const bad = await run(["plan", "--detailed-exitcode", "--bogus"]);
  assertEquals(bad.code, 1);
  assertMatch(bad.err, /Unknown option '--bogus'/);
  assertEquals((await run(["plan", "--bogus"])).code, 2);
  // Written with a value (terraform's -detailed-exitcode=true), it is refused as a usage error,
  // which exited 2: "changes pending" to the script that asked for it.
  const valued = await run(["plan", "--detailed-exitcode=true"]);
  assertEquals(valued.code, 1, valued.err);
  assertMatch(valued.err, /Option '--detailed-exitcode' does not take an argument/);
  // Written before the command (virsh's order), or after one misspelt: a usage error all the same.
  const before = await run(["--detailed-exitcode", "plan"]);
  assertEquals(before.code, 1, before.err);
  assertMatch(before.err, /Option "--detailed-exitcode" comes before the command "plan"/);
  assertEquals((await run(["plna", "--detailed-exitcode=true"])).code, 1);
  assertEquals((await run(["--detailed-exitcode"])).code, 1);
  // After "--", words are data, not flags.
  assertEquals((await run(["plna", "--", "--detailed-exitcode"])).code, 2);
  // And --json=true printed no JSON: the script that asked for it found nothing on stdout.
  const json = await run(["plan", "--json=true"]);
  assertEquals(json.code, 2, json.err);
  assertEquals(JSON.parse(json.out).error, {
    kind: "usage",
    message: "Option '--json' does not take an argument",
  });
});

Deno.test("an unknown --vm is a runtime error: one line, the closest name, no usage", async () => {
  await using s = await scene();
  const typo = await run(["plan", ...s.plan, "--vm", "win1O"]);
  assertEquals(typo.code, 1);
  assertEquals(
    typo.err,
    `passthrough plan: VM "win1O" is not in ${DEMO}passthrough_config.yaml (did you mean "win10"?): it names "win10", "gentoo"\n`,
  );
});

Deno.test("rollback of an unknown VM names the closest defined VM and lists them", async () => {
  await using s = await scene();
  const args = ["--yes", "--connect", `test://${DEMO}world.xml`, "--state-dir", `${s.dir}/state`];
  const typo = await run(["rollback", "gentoox", ...args]);
  assertEquals(typo.code, 1);
  assertEquals(
    typo.err,
    `passthrough rollback: No backup of VM "gentoox" in ${s.dir}/state (which does not exist), and libvirt defines no VM "gentoox" (did you mean "gentoo"?): defined VMs: "gentoo", "win10"\n`,
  );
  const known = await run(["rollback", "win10", ...args]);
  assertEquals(known.code, 1);
  assertMatch(
    known.err,
    /^passthrough rollback: No backup of VM "win10" in .*: 'passthrough apply' backs/,
  );
  assertOk(!known.err.includes("Usage:"));
});

Deno.test("--color=always|never|auto on every command, declared once", async () => {
  await using s = await scene();
  for (const command of COMMANDS) assertOk("color" in command.flags, command.name);
  const always = await run(["groups", ...s.host, "--color=always"]);
  assertEquals(always.code, 0, always.err);
  assertOk(always.out.includes("\x1b[1mGROUP"), always.out);
  const never = await run(["groups", ...s.host, "--color", "never"], true);
  assertOk(!never.out.includes("\x1b"), "--color never printed colour");
  const auto = await run(["groups", ...s.host], true);
  assertOk(auto.out.includes("\x1b[1mGROUP"), auto.out);
  const bad = await run(["groups", ...s.host, "--color=sometimes"]);
  assertEquals(bad.code, 2);
  assertMatch(bad.err, /--color takes auto, always or never, not "sometimes"/);
});

Deno.test("plan --json prints config errors as JSON on stdout", async () => {
  await using s = await scene();
  const config = `${s.dir}/bad.yaml`;
  await Deno.writeTextFile(config, "version: 1\nvms:\n  win10:\n    devise: []\n");
  const args = ["--config", config, ...s.plan.slice(2)];
  const result = await run(["plan", "--json", ...args]);
  assertEquals(result.code, 1);
  const json = JSON.parse(result.out);
  assertEquals(json.error.kind, "config");
  assertOk(json.error.problems.length >= 1);
  assertEquals(json.error.problems[0].file, config);
  assertEquals(json.error.problems[0].line, 4);
  assertMatch(result.err, /Invalid config/);
  // Without --json, stdout stays empty.
  assertEquals((await run(["plan", ...args])).out, "");
  // Any other failure too: a config that is not there, a VM it does not name.
  const missing = await run(["plan", "--json", "--config", `${s.dir}/absent.yaml`]);
  assertEquals(missing.code, 1);
  const absent = JSON.parse(missing.out);
  assertEquals(absent.error.kind, "runtime");
  assertMatch(absent.error.message, /^No config file: tried .*absent\.yaml \(--config\)/);
  assertMatch(missing.err, /No config file/);
  assertEquals((await run(["plan", "--config", `${s.dir}/absent.yaml`])).out, "");
});

Deno.test("--json prints a usage error as JSON on stdout too, as it prints a runtime one", async () => {
  const takers = COMMANDS.filter((c) => Object.hasOwn(c.flags, "json")).map((c) => c.name);
  assertEquals(
    takers,
    ["devices", "groups", "doctor", "sources", "plan", "apply", "rollback", "backups", "hook"],
  );
  for (const name of takers) {
    const args = name === "hook" ? ["hook", "status", "--json", "--bogus"] : [
      name,
      "--json",
      "--bogus",
    ];
    const bad = await run(args);
    assertEquals(bad.code, 2, name);
    assertEquals(JSON.parse(bad.out), {
      error: { kind: "usage", message: "Unknown option '--bogus'" },
    }, name);
    // stderr as without --json: the message and the help.
    assertEquals(bad.err, (await run(args.filter((a) => a !== "--json"))).err, name);
  }
  // Under --detailed-exitcode the exit is 1, the JSON the same.
  const detailed = await run(["plan", "--json", "--detailed-exitcode", "--vm"]);
  assertEquals(detailed.code, 1);
  assertEquals(JSON.parse(detailed.out).error, {
    kind: "usage",
    message: "Option '--vm <value>' argument missing",
  });
  // A bad --color, and a subcommand missing, are usage errors too.
  assertEquals(JSON.parse((await run(["groups", "--json", "--color=x"])).out).error.kind, "usage");
  assertEquals(JSON.parse((await run(["hook", "--json"])).out).error, {
    kind: "usage",
    message: "Missing the subcommand: install, status, remove or run",
  });
  // A command with no JSON output prints none; nor does --json after "--" (data, not a flag).
  assertEquals((await run(["snapshot", "--json", "--bogus"])).out, "");
  assertEquals((await run(["plan", "--bogus", "--", "--json"])).out, "");
});
