/** The scripts in `examples/` run as users run them and say what they promise. */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/mod.ts";

const EXAMPLE = new URL("../../examples/drift_check.ts", import.meta.url).pathname;

const DEMO = new URL("../../demo/", import.meta.url).pathname;

/**
 * The permissions docs/PERMISSIONS.md gives `examples/drift_check.ts` (its "Library scripts"), read
 * from there so the tests prove the documented set is enough.
 */
function documentedFlags(): string[] {
  const doc = Deno.readTextFileSync(new URL("../../docs/PERMISSIONS.md", import.meta.url));
  const line = /^`(--no-prompt --allow-[^`]*)`$/m.exec(doc)?.[1];
  if (line === undefined) throw new Error("docs/PERMISSIONS.md gives drift_check.ts no flags");
  return line.split(" ");
}

function driftCheck(...args: string[]): Promise<Deno.CommandOutput> {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...documentedFlags(), EXAMPLE, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
}

Deno.test("examples/drift_check.ts reports the demo's pending changes with exit code 3", async () => {
  const out = await driftCheck();
  const stdout = new TextDecoder().decode(out.stdout);
  assertEquals(out.code, 3, new TextDecoder().decode(out.stderr));
  assertMatch(stdout, /^win10: pending: \+3 -0$/m);
  assertMatch(stdout, /^gentoo: pending: \+3 -0$/m);
});

Deno.test("examples/drift_check.ts exits 1 when a VM is refused", async () => {
  // A nightly check must not read as "all matches" (0) when the plan refuses every VM.
  const dir = Deno.makeTempDirSync({ prefix: "drift-check-refused-" });
  try {
    buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
    const out = await driftCheck(
      `${DEMO}refused_config.yaml`,
      "--sysfs",
      `${dir}/sysfs`,
      "--connect",
      `test://${DEMO}world.xml`,
    );
    const stdout = new TextDecoder().decode(out.stdout);
    assertEquals(out.code, 1, new TextDecoder().decode(out.stderr));
    assertMatch(stdout, /^win10: refused: .*group-shared-with-other-vm/m);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("examples/drift_check.ts exits 1 when a VM is refused and a VM after it has changes pending", async () => {
  // A refusal (a card gone after a hardware change) read as "changes pending" (3) when a VM
  // planned after the refused one had changes: the worse status must win.
  const dir = Deno.makeTempDirSync({ prefix: "drift-check-mixed-" });
  try {
    buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
    const demo = Deno.readTextFileSync(`${DEMO}passthrough_config.yaml`);
    const mixed = demo.replace('"10de:1b80"', '"10de:ffff"');
    assertMatch(mixed, /10de:ffff/);
    Deno.writeTextFileSync(`${dir}/mixed.yaml`, mixed);
    const out = await driftCheck(
      `${dir}/mixed.yaml`,
      `--sysfs=${dir}/sysfs`,
      `--connect=test://${DEMO}world.xml`,
    );
    const stdout = new TextDecoder().decode(out.stdout);
    assertEquals(stdout, "win10: refused: no-match\ngentoo: pending: +3 -0\n");
    assertEquals(out.code, 1, new TextDecoder().decode(out.stderr));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("examples/drift_check.ts checks this host's section of a config shared by hosts", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "drift-check-fleet-" });
  try {
    buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
    // The demo's config, with gentoo moved to another host.
    const demo = Deno.readTextFileSync(`${DEMO}passthrough_config.yaml`);
    const fleet = demo
      .replace("vms:\n", `hosts: { ${JSON.stringify(Deno.hostname())}: {}, elsewhere: {} }\nvms:\n`)
      .replace("  gentoo:\n", "  gentoo:\n    host: elsewhere\n");
    assertMatch(fleet, /host: elsewhere/);
    Deno.writeTextFileSync(`${dir}/fleet.yaml`, fleet);
    const out = await driftCheck(
      `${dir}/fleet.yaml`,
      `--sysfs=${dir}/sysfs`,
      `-c`,
      `test://${DEMO}world.xml`,
    );
    const stdout = new TextDecoder().decode(out.stdout);
    assertEquals(out.code, 3, new TextDecoder().decode(out.stderr));
    assertEquals(stdout, "win10: pending: +3 -0\n");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("examples/drift_check.ts reads the tree and libvirt its host section names, as plan does", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "drift-check-section-" });
  try {
    buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
    // The section's tree is relative to the config's folder, as the CLI reads it.
    const section = `{ sysfs: sysfs, connect: "test://${DEMO}world.xml" }`;
    const demo = Deno.readTextFileSync(`${DEMO}passthrough_config.yaml`);
    const fleet = demo.replace(
      "vms:\n",
      `hosts: { ${JSON.stringify(Deno.hostname())}: ${section}, elsewhere: {} }\nvms:\n`,
    );
    Deno.writeTextFileSync(`${dir}/fleet.yaml`, fleet);
    // This machine's /sys and libvirt's default were read instead: a refusal, or no libvirt.
    const out = await driftCheck(`${dir}/fleet.yaml`);
    const stdout = new TextDecoder().decode(out.stdout);
    assertEquals(out.code, 3, new TextDecoder().decode(out.stderr));
    assertEquals(stdout, "win10: pending: +3 -0\ngentoo: pending: +3 -0\n");
    // A tree or URI given as well is one too many, as --sysfs or --connect is to plan.
    const both = await driftCheck(`${dir}/fleet.yaml`, "--sysfs", `${dir}/sysfs`);
    assertEquals(both.code, 2);
    assertMatch(
      new TextDecoder().decode(both.stderr),
      /^drift_check: --sysfs and hosts\..*\.sysfs in .*fleet\.yaml both say where to look: keep one\nUsage: drift_check\.ts /,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("examples/drift_check.ts takes --connect beside a host section that names only its tree", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "drift-check-connect-" });
  try {
    buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
    const demo = Deno.readTextFileSync(`${DEMO}passthrough_config.yaml`);
    const fleet = demo.replace(
      "vms:\n",
      `hosts: { ${JSON.stringify(Deno.hostname())}: { sysfs: sysfs }, elsewhere: {} }\nvms:\n`,
    );
    Deno.writeTextFileSync(`${dir}/fleet.yaml`, fleet);
    // By position the URI could only follow a tree, which the section's `sysfs:` then refused.
    const out = await driftCheck(`${dir}/fleet.yaml`, "--connect", `test://${DEMO}world.xml`);
    assertEquals(out.code, 3, new TextDecoder().decode(out.stderr));
    assertEquals(
      new TextDecoder().decode(out.stdout),
      "win10: pending: +3 -0\ngentoo: pending: +3 -0\n",
    );
    // Parsed as the CLI parses it: `-c URI`, `--connect=URI`, and a stray argument refused.
    const short = await driftCheck(`${dir}/fleet.yaml`, "-c", `test://${DEMO}world.xml`);
    assertEquals(short.code, 3, new TextDecoder().decode(short.stderr));
    const stray = await driftCheck(`${dir}/fleet.yaml`, `test://${DEMO}world.xml`);
    assertEquals(stray.code, 2);
    assertMatch(
      new TextDecoder().decode(stray.stderr),
      /^drift_check: Unexpected argument "test:\/\/.*world\.xml"\nUsage: drift_check\.ts /,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("examples/drift_check.ts answers --help with its usage, exit 0, and shows it after a usage error", async () => {
  // "Unknown option '--help'", exit 2, and no usage line after any usage error.
  for (const flag of ["--help", "-h"]) {
    const help = await driftCheck(flag);
    assertEquals([help.code, new TextDecoder().decode(help.stderr)], [0, ""]);
    assertMatch(new TextDecoder().decode(help.stdout), /^Usage: drift_check\.ts \[CONFIG\] /);
  }
  const wrong = await driftCheck("--sysfs");
  assertEquals([wrong.code, new TextDecoder().decode(wrong.stdout)], [2, ""]);
  assertMatch(new TextDecoder().decode(wrong.stderr), /^drift_check: .*\nUsage: drift_check\.ts /);
});

Deno.test("examples/drift_check.ts reads the live sysfs given as /sys/ as it reads /sys", async () => {
  const uri = `test://${DEMO}world.xml`;
  const config = `${DEMO}passthrough_config.yaml`;
  const plain = await driftCheck(config, "--sysfs", "/sys", "--connect", uri);
  // "/sys/" was read with Deno's own reads, which refuse /sys: an uncaught NotCapable.
  const slash = await driftCheck(config, "--sysfs", "/sys/", "--connect", uri);
  const text = (out: Deno.CommandOutput) => new TextDecoder().decode(out.stdout);
  assertEquals(new TextDecoder().decode(slash.stderr), "");
  assertEquals([slash.code, text(slash)], [plain.code, text(plain)]);
  assertMatch(text(plain), /^(win10|host): /m);
});

Deno.test("examples/drift_check.ts says in one line that the config is missing, exit code 1", async () => {
  const out = await driftCheck("/nonexistent/passthrough.yaml");
  const stderr = new TextDecoder().decode(out.stderr);
  // It printed an uncaught ConfigReadError with its stack.
  assertEquals(out.code, 1, stderr);
  assertEquals(
    stderr,
    'drift_check: Cannot read config "/nonexistent/passthrough.yaml": no such file\n',
  );
  assertEquals(new TextDecoder().decode(out.stdout), "");
});

Deno.test("examples/drift_check.ts refuses a tree with a link out of it, as plan does", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "drift-check-link-out-" });
  try {
    buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
    // The GPU's uevent read from a file outside the tree: a shared tree may point anywhere.
    const uevent = `${dir}/sysfs/bus/pci/devices/0000:21:00.0/uevent`;
    Deno.renameSync(uevent, `${dir}/outside`);
    Deno.symlinkSync(`${dir}/outside`, uevent);
    const out = await driftCheck(
      `${DEMO}passthrough_config.yaml`,
      "--sysfs",
      `${dir}/sysfs`,
      "--connect",
      `test://${DEMO}world.xml`,
    );
    const stderr = new TextDecoder().decode(out.stderr);
    // It read the file and reported the demo's pending changes (exit 3).
    assertEquals([out.code, new TextDecoder().decode(out.stdout)], [1, ""], stderr);
    assertMatch(
      stderr,
      /^drift_check: Refusing to read a tree with a link out of it: .*\/uevent" leads to ".*\/outside", outside the tree/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("examples/drift_check.ts prints what a tree names escaped, as the CLI does", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "drift-check-escape-" });
  try {
    buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
    // An entry that retitles the window, clears the screen (C1 CSI) and reverses the line.
    Deno.mkdirSync(`${dir}/sysfs/bus/pci/devices/x\x1b]0;pwned\x07\x9b2J\u202eevil`);
    const out = await driftCheck(
      `${DEMO}passthrough_config.yaml`,
      "--sysfs",
      `${dir}/sysfs`,
      "--connect",
      `test://${DEMO}world.xml`,
    );
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 1, stderr);
    // It printed them raw: the terminal ran them.
    assertMatch(
      stderr,
      /^drift_check: Not a sysfs tree entry: ".*\/x\\u001b\]0;pwned\\u0007\\u009b2J\\u202eevil"/,
    );
    // deno-lint-ignore no-control-regex
    assertEquals(stderr.match(/[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e]/g), null);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
