/**
 * Golden snapshots of the main commands: the real CLI (README's permission flags, `NO_COLOR=1`)
 * on the demo world, its command line, exit code, stdout and stderr compared with one reviewed
 * file per command in `tests/fixtures/golden/`. A mismatch fails with a unified diff.
 *
 * After an intended change of output, rewrite the files and review them like code:
 *
 *     UPDATE_GOLDEN=1 deno test -A tests/cli/golden_test.ts
 *     git diff tests/fixtures/golden/
 *
 * Only volatile parts are normalised, each by one explicit replacement in {@link normalise}: the
 * temporary directory, the demo's random directory suffix, and backup timestamps (replaced by
 * placeholders of the same width so tables stay aligned). Device names come from the host's
 * `pci.ids` through the real `lspci`, so a different pci.ids version shows up as a diff here.
 */

import { createTwoFilesPatch } from "diff";
import { assertEquals } from "../helpers/assert.ts";
import { type CliResult, runCli } from "../helpers/cli.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { openLibvirtPort } from "../../ffi/port.ts";

const DEMO = new URL("../../demo/", import.meta.url).pathname;
const GOLDEN = new URL("../fixtures/golden/", import.meta.url).pathname;
const UPDATE = Deno.env.get("UPDATE_GOLDEN") === "1";

/** The demo world in a temporary directory; every path a command sees is under `dir`. */
interface Scene {
  dir: string;
  sysfs: string;
  uri: string;
  stateDir: string;
  config: string;
  refused: string;
  /** The demo config marked `example: true`, as the shipped example is. */
  example: string;
  /** The demo config applied (a test-driver world), and the GTX 1080 moved to bus 0x2a. */
  moved: { uri: string; sysfs: string; config: string };
}

/** One snapshot: `tests/fixtures/golden/NAME.txt` holds the output of `passthrough ARGS`. */
interface GoldenCase {
  name: string;
  args: (s: Scene) => string[];
  /** Checked even when updating, so UPDATE_GOLDEN cannot quietly accept a changed exit code. */
  code: number;
}

const host = (s: Scene) => ["--sysfs", s.sysfs];
const plan = (s: Scene, config: string) => ["--config", config, ...host(s), "--connect", s.uri];
/** The moved card's scene: its config, tree and world. */
const moved = (s: Scene) => [
  "--config",
  s.moved.config,
  "--sysfs",
  s.moved.sysfs,
  "--connect",
  s.moved.uri,
];

// In order: `backups` lists what `apply --yes` wrote to the same state directory. The test
// driver keeps domains per connection, so each process starts again from world.xml.
const CASES: GoldenCase[] = [
  { name: "help", args: () => ["--help"], code: 0 },
  { name: "devices", args: (s) => ["devices", ...host(s)], code: 0 },
  { name: "groups", args: (s) => ["groups", ...host(s)], code: 0 },
  { name: "groups_json", args: (s) => ["groups", "--json", ...host(s)], code: 0 },
  { name: "plan", args: (s) => ["plan", ...plan(s, s.config)], code: 0 },
  { name: "plan_json", args: (s) => ["plan", "--json", ...plan(s, s.config)], code: 0 },
  { name: "plan_refused", args: (s) => ["plan", ...plan(s, s.refused)], code: 1 },
  {
    name: "apply_yes",
    args: (s) => ["apply", "--yes", ...plan(s, s.config), "--state-dir", s.stateDir],
    code: 0,
  },
  { name: "backups", args: (s) => ["backups", "--state-dir", s.stateDir], code: 0 },
  // The running gentoo's changes are hot-plugged: the plan says so, and the test driver's refusal
  // of every hot-plug is reported (exit 1) while the definition keeps them.
  {
    name: "apply_live",
    args: (s) => ["apply", "--yes", "--live", ...plan(s, s.config), "--state-dir", `${s.dir}/live`],
    code: 1,
  },
  { name: "demo", args: () => ["demo"], code: 0 },
  { name: "plan_help", args: () => ["plan", "--help"], code: 0 },
  { name: "usage_error", args: () => ["plan", "--bogus"], code: 2 },
  // Issue 16: the shipped example is planned and says so, apply refuses it.
  { name: "plan_example", args: (s) => ["plan", ...plan(s, s.example)], code: 0 },
  {
    name: "apply_example",
    args: (s) => ["apply", "--yes", ...plan(s, s.example), "--state-dir", s.stateDir],
    code: 1,
  },
  // Issue 13: after the demo config was applied, the GTX 1080 moved to another bus and a rule of
  // win10 became ambiguous: the drift is refused first, and the repair follows the card.
  {
    name: "plan_repair",
    args: (s) => ["plan", ...moved(s)],
    code: 1,
  },
  // The same as JSON: the move counted under summary, the drift first among win10's errors.
  {
    name: "plan_repair_json",
    args: (s) => ["plan", "--json", ...moved(s)],
    code: 1,
  },
  // Issue 16: a selection says what it left unchecked.
  { name: "plan_vm", args: (s) => ["plan", "--vm", "win10", ...plan(s, s.config)], code: 0 },
  {
    name: "missing_config",
    args: (s) => ["plan", ...plan(s, `${s.dir}/missing_config.yaml`)],
    code: 1,
  },
];

async function makeScene(): Promise<Scene> {
  // realPath: the CLI may print resolved paths, and only one spelling is replaced by $TMP.
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "passthrough-golden-" }));
  await Deno.mkdir(`${dir}/demo`);
  for (const file of ["host.json", "world.xml", "passthrough_config.yaml", "refused_config.yaml"]) {
    await Deno.copyFile(`${DEMO}${file}`, `${dir}/demo/${file}`);
  }
  buildHostTree(loadHostDescription(`${dir}/demo/host.json`), `${dir}/sysfs`);
  const demoConfig = await Deno.readTextFile(`${dir}/demo/passthrough_config.yaml`);
  await Deno.writeTextFile(
    `${dir}/demo/example_config.yaml`,
    demoConfig.replace("version: 1\n", "version: 1\nexample: true\n"),
  );
  return {
    moved: await movedScene(dir, demoConfig),
    example: `${dir}/demo/example_config.yaml`,
    dir,
    sysfs: `${dir}/sysfs`,
    uri: `test://${dir}/demo/world.xml`,
    stateDir: `${dir}/state`,
    config: `${dir}/demo/passthrough_config.yaml`,
    refused: `${dir}/demo/refused_config.yaml`,
  };
}

/** win10's config in `plan_repair`: its USB rule is ambiguous (two identical controllers). */
const AMBIGUOUS_USB = `      - name: usb
        match: { vendor_device_id: "1022:148c" }
`;

/**
 * The scene of `plan_repair`: the demo world with the demo config applied (written as a world
 * file, since the test driver forgets defines between processes), a tree where the GTX 1080 and
 * its audio function sit at bus 0x2a, and the demo config with win10's USB rule made ambiguous.
 */
async function movedScene(dir: string, demoConfig: string): Promise<Scene["moved"]> {
  const description = loadHostDescription(`${dir}/demo/host.json`);
  const host = await discoverHost({ root: `${dir}/sysfs` });
  const world = await Deno.readTextFile(`${dir}/demo/world.xml`);
  const applied: string[] = [];
  {
    using libvirt = openLibvirtPort(`test://${dir}/demo/world.xml`);
    const config = parseConfig(demoConfig, { file: "passthrough_config.yaml" });
    for (const vm of planHostdevs({ config, host, libvirt }).vms) libvirt.define(vm.desiredXml);
    for (const { name, active } of libvirt.listDomains()) {
      const xml = libvirt.getPersistentXml(name).trim();
      applied.push(
        active ? xml : xml
          .replace("<domain type='test'", `<domain type='test' xmlns:test='${TEST_NS}'`)
          .replace(/<\/domain>$/, "  <test:runstate>5</test:runstate>\n</domain>"),
      );
    }
  }
  const head = world.slice(0, world.indexOf("  <domain"));
  await Deno.writeTextFile(
    `${dir}/demo/applied_world.xml`,
    `${head}${applied.join("\n")}\n</node>\n`,
  );
  const moved = description.devices.map((d) =>
    d.bdf.startsWith("0000:21:00.") ? { ...d, bdf: d.bdf.replace(":21:", ":2a:") } : d
  );
  buildHostTree({ ...description, devices: moved }, `${dir}/moved_sysfs`);
  const config = demoConfig.replace(/( {6}- name: usb-rear\n[^\n]*\n)/, AMBIGUOUS_USB);
  if (config === demoConfig) throw new Error("the demo config has no usb-rear rule to replace");
  await Deno.writeTextFile(`${dir}/demo/moved_config.yaml`, config);
  return {
    uri: `test://${dir}/demo/applied_world.xml`,
    sysfs: `${dir}/moved_sysfs`,
    config: `${dir}/demo/moved_config.yaml`,
  };
}

const TEST_NS = "http://libvirt.org/schemas/domain/test/1.0";

/** Replaces the volatile parts of `text`, and nothing else. */
function normalise(text: string, dir: string): string {
  return text
    .replaceAll(dir, () => "$TMP")
    // `demo` makes its own directory under TMPDIR (set to `dir`) with a random suffix.
    .replace(/passthrough-demo-[0-9a-f]+/g, "passthrough-demo-RANDOM")
    // Backup IDs and file names start with the time of the backup.
    .replace(/\b\d{8}T\d{6}\.\d{3}Z/g, "YYYYMMDDTHHMMSS.sssZ")
    // `backups` shows that time in ISO 8601.
    .replace(/\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/g, "YYYY-MM-DDTHH:MM:SS.sssZ");
}

/** Shell-style quoting, only where a word needs it. */
function quote(arg: string): string {
  return /^[\w@%+=:,./$-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

/** A stream's text as it is, with diff's marker when the last line has no newline. */
function stream(text: string): string {
  return text === "" || text.endsWith("\n") ? text : `${text}\n\\ No newline at end\n`;
}

/** The golden file's text: command line, exit code, then stdout and stderr verbatim. */
function render(args: string[], result: CliResult): string {
  return [
    `$ passthrough ${args.map(quote).join(" ")}`,
    `exit code: ${result.code}`,
    "--- stdout",
    stream(result.stdout) + "--- stderr",
    stream(result.stderr),
  ].join("\n");
}

async function readGolden(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/** Compares `actual` with the golden file `name`, or rewrites it under UPDATE_GOLDEN=1. */
async function compareGolden(name: string, actual: string): Promise<void> {
  const path = `${GOLDEN}${name}.txt`;
  if (UPDATE) {
    await Deno.mkdir(GOLDEN, { recursive: true });
    await Deno.writeTextFile(path, actual);
    return;
  }
  const expected = await readGolden(path);
  if (expected === null) {
    throw new Error(`Golden file "${path}" is missing: create it with UPDATE_GOLDEN=1`);
  }
  if (expected === actual) return;
  const patch = createTwoFilesPatch(
    `tests/fixtures/golden/${name}.txt`,
    "actual output",
    expected,
    actual,
    "expected",
    "actual",
  );
  throw new Error(
    `Output of "${name}" differs from its golden file (if intended, rerun with UPDATE_GOLDEN=1 ` +
      `and review the change):\n${patch}`,
  );
}

Deno.test("the main commands print exactly their golden files on the demo world", async (t) => {
  const scene = await makeScene();
  try {
    for (const c of CASES) {
      await t.step(c.name, async () => {
        const args = c.args(scene);
        const result = await runCli(args, {
          cwd: scene.dir,
          // Pinned so a developer's own settings cannot leak in; the flags above say the same.
          env: {
            TMPDIR: scene.dir,
            LIBVIRT_DEFAULT_URI: scene.uri,
            PASSTHROUGH_CONFIG: scene.config,
            PASSTHROUGH_STATE_DIR: scene.stateDir,
          },
        });
        assertEquals(result.code, c.code, `exit code of "${c.name}"; stderr:\n${result.stderr}`);
        await compareGolden(c.name, normalise(render(args, result), scene.dir));
      });
    }
  } finally {
    await Deno.remove(scene.dir, { recursive: true });
  }
});

Deno.test("every golden file belongs to a command the golden test runs", async () => {
  const files = [];
  for await (const entry of Deno.readDir(GOLDEN)) files.push(entry.name);
  assertEquals(files.sort(), CASES.map((c) => `${c.name}.txt`).sort());
});
