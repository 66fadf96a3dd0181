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
    example: `${dir}/demo/example_config.yaml`,
    dir,
    sysfs: `${dir}/sysfs`,
    uri: `test://${dir}/demo/world.xml`,
    stateDir: `${dir}/state`,
    config: `${dir}/demo/passthrough_config.yaml`,
    refused: `${dir}/demo/refused_config.yaml`,
  };
}

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
