/**
 * The flag table (`cli/flags.ts`) and the command table (`cli/commands.ts`): every command's help
 * lists exactly the flags it parses, every command refuses an unknown flag as a usage error (exit
 * 2, with its help), `doctor` takes `-c/--connect` like every command that opens libvirt,
 * command lines parse as `node:util` `parseArgs` parses them, and `--help` or a light command such
 * as `backups` never loads the YAML parser, the diff library or Deno's Node layer.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { runCli } from "../helpers/cli.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { COMMANDS } from "../../cli/commands.ts";
import type { CliIo } from "../../cli/context.ts";
import { defineCommand, type Flags } from "../../cli/flags.ts";
import { main } from "../../main.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const DEMO_HOST = new URL("../../demo/host.json", import.meta.url);

/** `main()` in process, with what it printed. */
async function runMain(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const io: CliIo = {
    out: (text) => void (out += text),
    err: (text) => void (err += text),
    color: false,
    interactive: false,
    readLine: () => Promise.resolve(null),
    env: () => undefined,
  };
  const code = await main(args, io);
  return { code, out, err };
}

/** The `--name` (and `-x`) of every line of the help's "Options:" section. */
function helpFlags(help: string): { name: string; short: string | null }[] {
  const section = help.split("\nOptions:\n")[1]?.split("\n\n")[0];
  assertOk(section !== undefined, `no "Options:" section in:\n${help}`);
  return [...section.matchAll(/^ {2}(?:-(\w), | {4})--([\w-]+)/gm)].map((m) => ({
    name: m[2]!,
    short: m[1] ?? null,
  }));
}

Deno.test("every command's help lists exactly the flags it parses, within 100 columns", () => {
  for (const command of COMMANDS) {
    const declared = Object.entries(command.flags).map(([name, flag]) => ({
      name,
      short: flag.short ?? null,
    }));
    assertEquals(helpFlags(command.help), declared, `flags in "${command.name}"'s help`);
    const shorts = declared.flatMap((f) => f.short ?? []);
    assertEquals(new Set(shorts).size, shorts.length, `"${command.name}" repeats a short flag`);
    assertOk(declared.some((f) => f.name === "help" && f.short === "h"), command.name);
    assertMatch(command.help, new RegExp(`^Usage: passthrough ${command.name}\\b`));
    for (const line of command.help.split("\n")) {
      assertOk(line.length <= 100, `"${command.name}" help line over 100 columns: ${line}`);
    }
  }
});

Deno.test("a flag, or its letter, takes a value in every command or in none", () => {
  // An option written before the command is read through any command's table (main.ts): one
  // flag taking a value in one command and none in another would make that reading a guess.
  const kinds = new Map<string, string>();
  for (const command of COMMANDS) {
    for (const [name, flag] of Object.entries(command.flags)) {
      for (const key of [`--${name}`, ...(flag.short === undefined ? [] : [`-${flag.short}`])]) {
        const kind = `${flag.type} (${command.name})`;
        const seen = kinds.get(key) ?? kind;
        assertEquals(seen.split(" ")[0], flag.type, `${key}: ${seen}, ${kind}`);
        kinds.set(key, seen);
      }
    }
  }
});

Deno.test("every command refuses an unknown flag with its help, exit 2", async () => {
  for (const command of COMMANDS) {
    const run = await runMain([command.name, "--bogus"]);
    assertEquals(run.code, 2, `${command.name}: ${run.err}`);
    assertEquals(run.out, "");
    assertEquals(
      run.err,
      `passthrough ${command.name}: Unknown option '--bogus'\n\n${command.help}`,
    );
  }
});

Deno.test("every command refuses a stray argument and a missing one", async () => {
  for (const command of COMMANDS) {
    // The usage line names the positionals: `Usage: passthrough rollback VM [options]`, and the
    // first subcommand: `Usage: passthrough guard allow VM [options]`.
    const usage = command.help.split("\n")[0]!.split(" ").slice(3, -1);
    // `devices [ADDRESS...]`, `groups [GROUP...]` take any number: checked below.
    if (usage.at(-1)?.endsWith("...]")) continue;
    const words = usage.map((word) => /^[a-z]/.test(word) ? word : "one");
    const run = await runMain([command.name, ...words, "stray"]);
    assertEquals(run.code, 2, `${command.name}: ${run.err}`);
    assertMatch(run.err, new RegExp(`^passthrough ${command.name}: Unexpected argument "stray"`));
  }
  assertMatch(
    (await runMain(["devices", "44:00.0", "stray"])).err,
    /^passthrough devices: "stray" is not a PCI address \(0000:44:00\.0, 44:00\.0, or 44:00/,
  );
  assertEquals((await runMain(["groups", "3", "x"])).code, 2);
  assertMatch((await runMain(["rollback", "--yes"])).err, /: Missing the VM to roll back\n/);
  assertMatch((await runMain(["snapshot"])).err, /: Missing the output directory\n/);
  assertMatch((await runMain(["guard", "allow"])).err, /: Missing the VM name\n/);
  // Given empty, a required argument is missing too: a usage error, not a runtime one.
  for (const args of [["snapshot", ""], ["rollback", "", "--yes"]]) {
    const run = await runMain(args);
    assertEquals(run.code, 2, run.err);
    assertMatch(run.err, /: Missing the (output directory|VM to roll back)\n/);
  }
  const scratch = Deno.makeTempDirSync({ prefix: "passthrough-flags-" });
  try {
    const empty = await runMain(["guard", "allow", "", "--state-dir", `${scratch}/state`]);
    assertEquals([empty.code, [...Deno.readDirSync(scratch)]], [2, []]);
    assertMatch(empty.err, /: Missing the VM name\n/);
  } finally {
    Deno.removeSync(scratch, { recursive: true });
  }
  assertMatch((await runMain(["hook"])).err, /: Missing the subcommand: install, status, /);
  // A command with one subcommand names it alone.
  assertMatch((await runMain(["guard"])).err, /: Missing the subcommand: allow\n/);
  assertMatch((await runMain(["hook", "frob"])).err, /: Unknown subcommand "frob": install, /);
  // A near name is suggested as for commands; "uninstall", a typo's distance from "install",
  // means remove: suggesting install would put back what the user is taking away.
  for (
    const [word, meant] of [
      ["uninstall", "remove"],
      ["stauts", "status"],
      ["delete", "remove"],
    ] as const
  ) {
    const run = await runMain(["hook", word]);
    assertEquals(run.code, 2, run.err);
    assertMatch(
      run.err,
      new RegExp(`: Unknown subcommand "${word}" \\(did you mean "${meant}"\\?\\): install, `),
    );
  }
  // The hook's help lists --json and --state-dir: "Unknown option" read as if there were none.
  assertMatch(
    (await runMain(["hook", "remove", "--json"])).err,
    /: Option '--json' is for hook install and hook status, not hook remove\n/,
  );
  assertMatch(
    (await runMain(["hook", "status", "--state-dir", "/tmp"])).err,
    /: Option '--state-dir' is for hook install and hook run, not hook status\n/,
  );
  assertMatch((await runMain(["hook", "remove", "--bogus"])).err, /: Unknown option '--bogus'\n/);
  // The help gave --state-dir a default for run too, which refuses to run without it.
  const run = await runMain(["hook", "run", "--", "vm", "prepare", "begin"]);
  assertMatch(run.err, /: Missing --state-dir DIR\n/);
  const help = (await runMain(["hook", "--help"])).out.replaceAll(/\s+/g, " ");
  assertMatch(
    help,
    / --state-dir DIR [^-]*\(install's default: \$PASSTHROUGH_STATE_DIR or \/var\/lib\/passthrough; run needs it\)/,
  );
});

Deno.test("-h in a bundle of short flags shows the help and runs nothing", async () => {
  const scratch = Deno.makeTempDirSync({ prefix: "passthrough-help-bundle-" });
  try {
    const demo = `${ROOT}demo/`;
    const world = ["--connect", `test://${demo}world.xml`, "--state-dir", `${scratch}/state`];
    for (
      const args of [
        ["apply", "-yh", "--config", `${demo}passthrough_config.yaml`, ...world],
        ["apply", "-hy", "--config", `${demo}passthrough_config.yaml`, ...world],
        ["rollback", "win10", "-yh", ...world],
      ]
    ) {
      const run = await runMain(args);
      const command = COMMANDS.find((c) => c.name === args[0])!;
      assertEquals([run.code, run.out, run.err], [0, command.help, ""], args.join(" "));
    }
    // Nothing ran: no state directory, no lock, no backup.
    assertEquals([...Deno.readDirSync(scratch)], []);
  } finally {
    Deno.removeSync(scratch, { recursive: true });
  }
});

Deno.test("an empty flag value is a usage error, never the working directory or a default", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-empty-flag-" });
  const cwd = Deno.cwd();
  try {
    Deno.chdir(dir);
    for (
      const args of [
        ["apply", "--yes", "--state-dir", ""],
        ["backups", "--state-dir="],
        ["rollback", "vm", "--to", ""],
        ["plan", "-c", ""],
        ["plan", "--vm", "a", "--vm", ""],
        ["hook", "install", "--hooks-dir", ""],
      ]
    ) {
      const run = await runMain(args);
      assertEquals(run.code, 2, args.join(" "));
      assertMatch(run.err, /: Option '--[a-z-]+' needs a value, not an empty string\n/);
    }
    // Nothing was made in the working directory (a state directory there, with backups/).
    assertEquals([...Deno.readDirSync(dir)], []);
  } finally {
    Deno.chdir(cwd);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("doctor -c URI and --connect URI probe that libvirt", async () => {
  const tree = await Deno.makeTempDir({ prefix: "passthrough-flags-" });
  try {
    buildHostTree(loadHostDescription(DEMO_HOST), tree);
    for (const flag of ["-c", "--connect"]) {
      const run = await runCli(["doctor", "--json", "--sysfs", tree, flag, "test:///default"]);
      const findings = JSON.parse(run.stdout) as { check: string; summary: string }[];
      const libvirt = findings.find((f) => f.check === "libvirt");
      assertMatch(libvirt?.summary ?? "", /^libvirt reachable: test:\/\/\/default \(libvirt /);
    }
    const old = await runCli(["doctor", "--sysfs", tree, "--uri", "test:///default"]);
    assertEquals(old.code, 2);
    assertMatch(old.stderr, /^passthrough doctor: Unknown option '--uri'/);
  } finally {
    await Deno.remove(tree, { recursive: true });
  }
});

interface ModuleGraph {
  modules: {
    specifier: string;
    dependencies?: { code?: { specifier: string }; isDynamic?: true }[];
  }[];
}

/**
 * What evaluating `path` (relative to the checkout) loads: its static imports, transitively, as
 * `deno info --json` reports them. Dynamic imports load later, only if run, and type-only imports
 * never: neither is followed. npm packages as their bare names, local modules relative.
 */
async function loadedBy(
  path: string,
): Promise<{ local: string[]; npm: string[]; node: string[] }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", path],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as ModuleGraph;
  const bySpecifier = new Map(graph.modules.map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const visit = (specifier: string) => {
    if (seen.has(specifier)) return;
    seen.add(specifier);
    for (const dependency of bySpecifier.get(specifier)?.dependencies ?? []) {
      if (dependency.code !== undefined && dependency.isDynamic !== true) {
        visit(dependency.code.specifier);
      }
    }
  };
  visit(new URL(path, `file://${ROOT}`).href);
  const local = [...seen].filter((s) => s.startsWith("file://"))
    .map((s) => s.slice(`file://${ROOT}`.length)).sort();
  // Each package once, by its name (scoped or not), without version or path.
  const npm = [
    ...new Set(
      [...seen].filter((s) => s.startsWith("npm:"))
        .map((s) => s.replace(/^npm:\/?/, "").replace(/^(@?[^@/]+(?:\/[^@/]+)?)@?.*$/, "$1")),
    ),
  ].sort();
  const node = [...seen].filter((s) => s.startsWith("node:")).sort();
  return { local, npm, node };
}

Deno.test("--help loads only the command table, and each command only what it uses", async () => {
  // What `passthrough CMD --help` and every usage error load: nothing a command uses.
  assertEquals(await loadedBy("main.ts"), {
    local: [
      "cli/commands.ts",
      "cli/context.ts",
      "cli/flags.ts",
      "cli/io.ts",
      "cli/specs.ts",
      "cli/version.ts",
      "lib/domain/secrets.ts",
      "lib/render/colors.ts",
      "lib/render/error_text.ts",
      "lib/render/redact.ts",
      "lib/render/suggest.ts",
      "lib/render/terminal.ts",
      "main.ts",
    ],
    npm: [],
    node: [],
  });
  const expected: Record<string, string[]> = {
    devices: [],
    groups: [],
    snapshot: [],
    doctor: [],
    backups: [],
    hook: [],
    guard: [],
    sources: ["fast-xml-parser"],
    // The diff library loads only when the plan is rendered for humans (not for --json).
    plan: ["fast-xml-parser", "yaml"],
    apply: ["diff", "fast-xml-parser", "yaml"],
    rollback: ["diff", "fast-xml-parser"],
    demo: ["diff", "fast-xml-parser", "yaml"],
  };
  assertEquals(Object.keys(expected).sort(), COMMANDS.map((c) => c.name).sort());
  // Any node: module loads Deno's Node compatibility layer at start (docs/BENCHMARKS.md): no
  // command loads one (paths through lib/state/paths.ts, SHA-256 from lib/state/sha256.ts).
  for (const [name, packages] of Object.entries(expected)) {
    const loaded = await loadedBy(`cli/${name}.ts`);
    assertEquals(loaded.npm, packages, `what cli/${name}.ts loads`);
    assertEquals(loaded.node, [], `node: modules of cli/${name}.ts`);
  }
});

Deno.test("the start hook's check loads the one-device sysfs reader, not discovery", async () => {
  // libvirt waits for the check at every VM start: discovery's lspci, group and bus-wide code
  // would be loaded and compiled for nothing (docs/BENCHMARKS.md).
  const { local, npm, node } = await loadedBy("cli/hook_check.ts");
  assertEquals({ npm, node }, { npm: [], node: [] });
  assertOk(local.includes("lib/host/sysfs_device.ts"), local.join(" "));
  for (const module of ["lib/host/discover.ts", "lib/host/lspci.ts", "lib/host/iommu_groups.ts"]) {
    assertOk(!local.includes(module), `${module} in ${local.join(" ")}`);
  }
});

/** `args` parsed by `node:util` `parseArgs` as the flag table once had it, or its usage error. */
function nodeParse(flags: Flags, args: string[]): string {
  const options: ParseArgsOptionsConfig = {};
  for (const [name, flag] of Object.entries(flags)) {
    options[name] = flag.type === "boolean"
      ? { type: "boolean", default: false, ...(flag.short ? { short: flag.short } : {}) }
      : {
        type: "string",
        multiple: flag.multiple ?? false,
        ...(flag.short ? { short: flag.short } : {}),
      };
  }
  try {
    const parsed = parseArgs({ args, options, strict: true, allowPositionals: true });
    // The one rule added to parseArgs's: an empty value is refused.
    const empty = Object.entries(parsed.values).find(([, v]) =>
      v === "" || (Array.isArray(v) && v.includes(""))
    );
    if (empty !== undefined) {
      return `usage error: Option '--${empty[0]}' needs a value, not an empty string`;
    }
    // A command line asking for help (`-yh` too) shows the help instead of running.
    if (parsed.values.help === true) return "help";
    return JSON.stringify([{ ...parsed.values }, parsed.positionals]);
  } catch (error) {
    return `usage error: ${(error as Error).message.replace(/\. To specify.*$/s, "")}`;
  }
}

/** `args` parsed by the flag table's own parser (a command taking any arguments), or its error. */
async function ownParse(flags: Flags, args: string[]): Promise<string> {
  let parsed = "";
  const command = defineCommand(
    { name: "x", summary: "", about: "", flags, positionals: [{ name: "A", variadic: true }] },
    () =>
      Promise.resolve(({ values, positionals }) => {
        parsed = JSON.stringify([{ ...values }, positionals]);
        return Promise.resolve(0);
      }),
  );
  try {
    await command.run(args, { out: () => void (parsed = "help") } as unknown as CliIo);
  } catch (error) {
    return `usage error: ${(error as Error).message}`;
  }
  return parsed;
}

Deno.test("every command's flags parse as node:util parseArgs parses them, errors included", async () => {
  let seed = 7;
  const random = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;
  for (const command of COMMANDS) {
    const names = Object.keys(command.flags);
    const shorts = Object.values(command.flags).flatMap((f) => f.short ? [f.short] : []);
    const words = [
      ...names.flatMap((n) => [`--${n}`, `--${n}=v`, `--${n}=`]),
      ...shorts.flatMap((s) => [`-${s}`, `-${s}val`]),
      `-${shorts.join("")}`,
      `-h${shorts.join("")}`,
      ...[
        "--bogus",
        "-z",
        "-",
        "--",
        "pos",
        "-x1",
        "--=a",
        "---",
        "-1",
        "--__proto__",
        "=",
        "--a=b=c",
      ],
    ];
    // A value written after "=" may start with a dash: it is the value, never ambiguous.
    for (const name of names.filter((n) => command.flags[n]!.type === "string")) {
      for (const args of [[`--${name}=-v`], [`--${name}`, "-v"]]) {
        assertEquals(await ownParse(command.flags, args), nodeParse(command.flags, args));
      }
    }
    for (let i = 0; i < 500; i++) {
      const args = Array.from({ length: random(6) }, () => words[random(words.length)]!);
      assertEquals(
        await ownParse(command.flags, args),
        nodeParse(command.flags, args),
        `${command.name} ${JSON.stringify(args)}`,
      );
    }
  }
});

Deno.test("backups' --state-dir help says nothing of a lock, which only apply and rollback take", () => {
  const help = (name: string) =>
    COMMANDS.find((command) => command.name === name)!.help.split("\nOptions:\n")[1]!.replaceAll(
      /\s+/g,
      " ",
    );
  assertMatch(help("apply"), /--state-dir DIR [^-]*the lock is in \/run\/passthrough as root/);
  assertMatch(help("rollback"), /--state-dir DIR [^-]*the lock is in \/run\/passthrough as root/);
  assertOk(!/lock/.test(help("backups")), help("backups"));
  assertMatch(
    help("backups"),
    /--state-dir DIR where the backups are read \(default: \$PASSTHROUGH_STATE_DIR or \/var\/lib\/passthrough\)/,
  );
});
