/**
 * The documentation names command lines, flags, permissions, settings, files, exports and JSON
 * fields that users copy into scripts and playbooks. These tests keep those names true as the code
 * changes: every passthrough command line the docs show uses a command, subcommand and flags that
 * command takes; every other flag they name belongs to a tool they name (Deno, Ansible, virsh, ...),
 * not to a passthrough flag that was renamed or removed; every `deno run` of the CLI has
 * `bin/passthrough`'s permissions; PERMISSIONS.md's variables, FLEET.md's settings and LIBRARY.md's
 * exports are those of `bin/passthrough`, the playbook and `deno.json`; every repository file they
 * name exists; and every field and code README's `plan --json` section lists is printed, or is one
 * the code has.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { documentedFlags, runCli } from "../helpers/cli.ts";
import { parse } from "yaml";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { nvmeDescription } from "../../lib/testing/host_generator.ts";
import { checkPermissions } from "../../lib/guard/hook_file.ts";
import { parseConfig } from "../../lib/config/config.ts";
import * as SPECS from "../../cli/specs.ts";
import type { CommandSpec, Flags } from "../../cli/flags.ts";

const ROOT = new URL("../../", import.meta.url);
const DOCS = [
  "README.md",
  "CONTRIBUTING.md",
  "RELIABILITY.md",
  "docs/STATUS.md",
  "docs/PERMISSIONS.md",
  "docs/LIBRARY.md",
  "docs/FLEET.md",
];

/** Every command by name, with the flags `defineCommand` adds to each. */
const COMMANDS = new Map<string, CommandSpec>(
  Object.values(SPECS).map((spec) => [(spec as CommandSpec).name, spec as CommandSpec]),
);
const ADDED: Flags = {
  color: { type: "string", value: "WHEN", help: "" },
  help: { type: "boolean", short: "h", help: "" },
};

/** Flags the docs name that belong to other programs: Deno, Ansible, virsh, udevadm, ... */
const OTHER_TOOLS = new Set([
  "allow-all", // deno
  "allow-env",
  "allow-ffi",
  "allow-read",
  "allow-run",
  "allow-sys",
  "allow-write",
  "no-prompt",
  "no-config",
  "cached-only",
  "v8-flags",
  "no-lazy", // V8
  "no-sparkplug",
  "doc", // deno test --doc
  "lint", // deno doc --lint
  "version", // deno --version
  "check", // ansible-playbook --check
  "diff", // ansible-playbook --diff
  "forks", // ansible-playbook --forks
  "limit", // ansible-playbook --limit
  "all", // virsh list --all
  "live", // virsh detach-device --live (and apply --live)
  "paused", // virsh start --paused
  "type", // virsh attach-interface --type
  "settle", // udevadm trigger --settle
  "stop", // mdadm --stop
]);

/** Flags that passthrough once had and the docs mention as gone: they must stay gone. */
const REMOVED = new Set(["parallel", "host-timeout"]);

function read(path: string): string {
  return Deno.readTextFileSync(new URL(path, ROOT));
}

/** The code of a document: its fenced blocks' lines and its inline code spans. */
function codeOf(text: string): string[] {
  const code: string[] = [];
  const prose = text.replaceAll(/^ *```[^\n]*\n([\s\S]*?)^ *```$/gm, (_, block: string) => {
    // A line continued with a backslash is one command line.
    code.push(...block.replaceAll(/\\\n\s*/g, " ").split("\n").map((l) => l.trim()));
    return "";
  });
  for (const m of prose.matchAll(/`([^`]+)`/g)) code.push(m[1]!.replaceAll(/\s+/g, " "));
  return code;
}

/** The flags among a command line's words (`[--to` of a usage line too), without their values. */
function flagsIn(words: readonly string[]): string[] {
  return words.map((w) => w.replace(/^\[/, "")).filter((w) => /^--?[a-z]/.test(w))
    .map((w) => w.replace(/[=|\]].*$/, ""));
}

interface CommandLine {
  doc: string;
  text: string;
  command: string;
  words: string[];
}

/**
 * The passthrough command lines in `code`: those after `passthrough` (or `bin/passthrough`,
 * `passthrough.js`), and spans that start with a command's name and go on with a flag or a
 * subcommand (`plan --detailed-exitcode --json`, `hook install --json`).
 */
function commandLines(doc: string, code: readonly string[]): CommandLine[] {
  const lines: CommandLine[] = [];
  for (const text of code) {
    const starts: number[] = [];
    const words = text.split(" ").filter((w) => w !== "");
    words.forEach((w, i) => {
      if (/(^|\/)passthrough(\.js)?$/.test(w) && COMMANDS.has(words[i + 1] ?? "")) {
        starts.push(i + 1);
      }
    });
    const first = COMMANDS.get(words[0] ?? "");
    const next = words[1] ?? "";
    if (
      first !== undefined && starts.length === 0 &&
      (next.startsWith("-") || first.subcommands?.some((s) => s.name === next))
    ) starts.push(0);
    for (const start of starts) {
      const rest = words.slice(start + 1);
      // A shell separator, a comment or the prose after a span ends the command line.
      const end = rest.findIndex((w) => /^(#|;|\||&&|\)|\()/.test(w) || /[;)]$/.test(w));
      lines.push({
        doc,
        text,
        command: words[start]!,
        words: end < 0 ? rest : rest.slice(0, end),
      });
    }
  }
  return lines;
}

/** The flags a command line may use: its subcommand's, or the command's, and `--color`/`--help`. */
function allowedFlags(line: CommandLine): { flags: Flags; problem?: string } {
  const spec = COMMANDS.get(line.command)!;
  if (spec.subcommands === undefined) return { flags: { ...spec.flags, ...ADDED } };
  // The command named alone (`passthrough hook` installs ...), or its help: no subcommand.
  const first = line.words[0];
  if (first === undefined || first.startsWith("-")) return { flags: ADDED };
  const sub = spec.subcommands.find((s) => s.name === first);
  if (sub === undefined) {
    return {
      flags: ADDED,
      problem: `"${line.command} ${first}" is no subcommand of "${line.command}"`,
    };
  }
  return { flags: { ...sub.flags, ...ADDED } };
}

const ALL_LINES = DOCS.flatMap((doc) => commandLines(doc, codeOf(read(doc))));

/** What is wrong with each passthrough command line of `lines`: an unknown subcommand or flag. */
function lineProblems(lines: readonly CommandLine[]): string[] {
  const problems: string[] = [];
  for (const line of lines) {
    const { flags, problem } = allowedFlags(line);
    if (problem !== undefined) problems.push(`${line.doc}: \`${line.text}\`: ${problem}`);
    const shorts = new Map(
      Object.entries(flags).flatMap(([name, f]) => f.short === undefined ? [] : [[f.short, name]]),
    );
    for (const flag of flagsIn(line.words)) {
      const known = flag.startsWith("--")
        ? Object.hasOwn(flags, flag.slice(2))
        : [...flag.slice(1)].every((letter) => shorts.has(letter));
      // `virsh detach-device --live` and the like are other programs' lines, not passthrough's.
      if (!known) {
        problems.push(`${line.doc}: \`${line.text}\`: "${line.command}" takes no ${flag}`);
      }
    }
  }
  return problems;
}

Deno.test("docs: every passthrough command line shown uses flags its command takes", () => {
  assertOk(ALL_LINES.length > 40, `found only ${ALL_LINES.length} command lines in the docs`);
  assertEquals(lineProblems(ALL_LINES), []);
});

Deno.test("docs: a command with subcommands named alone, or with --help, is no wrong command line", () => {
  // Prose names the command (`passthrough hook` installs ...): only a wrong subcommand or flag is.
  const text = "The `passthrough hook` command (`passthrough guard --help`), not `passthrough " +
    "hook instal` nor `passthrough guard --json`.";
  assertEquals(lineProblems(commandLines("doc", codeOf(text))), [
    'doc: `passthrough hook instal`: "hook instal" is no subcommand of "hook"',
    'doc: `passthrough guard --json`: "guard" takes no --json',
  ]);
});

Deno.test("docs: every other flag named is a passthrough flag or another tool's, none removed", () => {
  const ours = new Set(
    [...COMMANDS.values()].flatMap((spec) => [
      ...Object.keys(spec.flags),
      ...(spec.subcommands ?? []).flatMap((s) => Object.keys(s.flags)),
    ]),
  );
  for (const name of Object.keys(ADDED)) ours.add(name);
  for (const name of REMOVED) assertOk(!ours.has(name), `--${name} is back: update docs/FLEET.md`);
  for (const name of OTHER_TOOLS) {
    // A name in both sets would let a doc's typo for one pass as the other.
    if (name !== "live") assertOk(!ours.has(name), `--${name} is now passthrough's own`);
  }
  const unknown: string[] = [];
  for (const doc of DOCS) {
    // Not inside a word: `ubuntu--vg-root` is a device-mapper name, not a flag.
    for (const m of read(doc).matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g)) {
      const name = m[1]!;
      if (!ours.has(name) && !OTHER_TOOLS.has(name) && !REMOVED.has(name)) {
        unknown.push(`${doc}: --${name}`);
      }
    }
  }
  assertEquals(unknown, []);
});

/** The keys of every object in `value`, as paths (`vms[].add[].rule`). */
function keyPaths(value: unknown, prefix = "", into = new Set<string>()): Set<string> {
  if (Array.isArray(value)) {
    for (const item of value) keyPaths(item, `${prefix}[]`, into);
  } else if (value !== null && typeof value === "object") {
    for (const [key, inner] of Object.entries(value)) {
      const path = prefix === "" ? key : `${prefix}.${key}`;
      into.add(path);
      keyPaths(inner, path, into);
    }
  }
  return into;
}

/** The JSON on stdout of a golden file (`tests/fixtures/golden/NAME.txt`). */
function goldenJson(name: string): unknown {
  const text = read(`tests/fixtures/golden/${name}.txt`);
  const stdout = text.slice(text.indexOf("--- stdout\n") + 11, text.indexOf("\n--- stderr"));
  return JSON.parse(stdout);
}

/** What `apply --yes --json` prints on the demo world, run by the real CLI. */
async function demoApplyJson(): Promise<unknown> {
  const demo = new URL("demo/", ROOT).pathname;
  const dir = await Deno.makeTempDir({ prefix: "passthrough-h148-docs-" });
  try {
    buildHostTree(loadHostDescription(`${demo}host.json`), `${dir}/sysfs`);
    await Deno.copyFile(`${demo}world.xml`, `${dir}/world.xml`);
    const result = await runCli([
      "apply",
      "--yes",
      "--json",
      "--config",
      `${demo}passthrough_config.yaml`,
      "--sysfs",
      `${dir}/sysfs`,
      "--connect",
      `test://${dir}/world.xml`,
      "--state-dir",
      `${dir}/state`,
    ]);
    assertEquals(result.code, 0, result.stderr);
    return JSON.parse(result.stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("README: the fields plan --json and apply --json are said to print are printed", async () => {
  const plan = new Set([
    ...keyPaths(goldenJson("plan_json")),
    ...keyPaths(goldenJson("plan_repair_json")),
  ]);
  const apply = keyPaths(await demoApplyJson());
  // README's outline of `plan --json`, as paths; `example`, `unplanned` and `section` are printed
  // only for the shipped example, with --vm and with `hosts:`, which the types say (below).
  const readme = read("README.md").replaceAll(/\s+/g, " ");
  const outline = /`(\{ "config", [^`]*\})`/.exec(readme)?.[1];
  assertOk(outline, "README's plan --json outline");
  const documented = outlinePaths(outline);
  assertOk(documented.length > 40, `only ${documented.length} paths in the outline`);
  const types = read("lib/plan/types.ts");
  // The goldens move cards only in a repair; `move` and `repair.move` are both `MovedHostdev[]`.
  const printed = (path: string) =>
    plan.has(path) || plan.has(path.replace(/^vms\[\]\.move\[\]/, "vms[].repair.move[]"));
  assertOk(/ move: MovedHostdev\[\];/.test(types) && /move\?: MovedHostdev\[\];/.test(types));
  const missing = documented.filter((path) =>
    !printed(path) &&
    !(/^(example|unplanned|section)$/.test(path) && new RegExp(`\\b${path}\\?:`).test(types))
  );
  assertEquals(missing, []);
  // The rest of the section names these, each where it says.
  for (
    const path of [
      "vms[].errors[].code",
      "vms[].errors[].message",
      "vms[].errors[].candidates",
      "vms[].warnings[].code",
      "vms[].warnings[].message",
      "vms[].repair.remove",
      "vms[].repair.move",
      "vms[].repair.desiredXml",
    ]
  ) assertOk(plan.has(path), `plan --json prints no ${path}`);
  for (
    const path of [
      "config",
      "vms[].name",
      "vms[].vm",
      "vms[].move",
      "vms[].status",
      "vms[].code",
      "vms[].definition",
      "vms[].definition.before",
      "vms[].definition.after",
      "summary.vmsToChange",
      "summary.refused",
      "summary.add",
      "summary.remove",
      "summary.moved",
      "summary.changed",
      "summary.unchanged",
      "summary.skipped",
      "summary.failed",
    ]
  ) assertOk(apply.has(path), `apply --yes --json prints no ${path}`);
});

/**
 * `{ "a", "b": [ { "c" } ], "d": { "e" } }` as the paths `a`, `b`, `b[].c`, `d`, `d.e`; notes in
 * brackets and the `"<address>": <IOMMU group>` placeholder are left out.
 */
function outlinePaths(outline: string): string[] {
  const text = outline.replaceAll(/\([^)]*\)/g, "").replaceAll(/"<[^>]*>": <[^>]*>/g, "");
  const paths: string[] = [];
  // The path of each object the outline is inside; the outermost is the top level.
  const stack: string[] = [];
  let last = "";
  for (const m of text.matchAll(/"([A-Za-z]+)"|\[ *\{|\{|\}/g)) {
    const prefix = stack.at(-1) ?? "";
    if (m[1] !== undefined) {
      last = prefix === "" ? m[1] : `${prefix}.${m[1]}`;
      paths.push(last);
    } else if (m[0].startsWith("[")) {
      stack.push(`${last}[]`);
    } else if (m[0] === "{") {
      stack.push(paths.length === 0 ? "" : last);
    } else {
      stack.pop();
    }
  }
  return paths;
}

Deno.test("docs: every deno run of the CLI they show has exactly bin/passthrough's permissions", () => {
  let runs = 0;
  for (const doc of DOCS) {
    for (const line of codeOf(read(doc))) {
      if (!/\bdeno run\b/.test(line) || !/(passthrough\.js|main\.ts)\b/.test(line)) continue;
      // `deno run <the flags below> dist/passthrough.js` points at the lines that have them.
      if (/<[^>]*flags[^>]*>/.test(line)) continue;
      runs++;
      const flags = line.split(" ").filter((w) => /^--(no-prompt|allow-)/.test(w));
      assertEquals(flags, documentedFlags(), `${doc}: ${line}`);
    }
  }
  assertOk(runs >= 2, `found only ${runs} deno run lines`);
});

Deno.test("docs/PERMISSIONS.md: the variables table is exactly bin/passthrough's --allow-env", () => {
  const allowed = documentedFlags().find((f) => f.startsWith("--allow-env="))!.slice(12).split(",");
  const text = read("docs/PERMISSIONS.md");
  const table = text.slice(text.indexOf("| variable "), text.indexOf("\n## "));
  const listed = [...table.matchAll(/^\| ([^|]+?) +\|/gm)].slice(2)
    .flatMap((m) => [...m[1]!.matchAll(/`([A-Z_]+)`/g)].map((v) => v[1]!));
  assertEquals([...listed].sort(), [...allowed].sort());
});

Deno.test("docs/FLEET.md: the variables table is every setting the playbook reads, with its defaults", () => {
  const playbook = read("ansible/passthrough.yml");
  const read_ = new Set(
    [...playbook.matchAll(/\b(passthrough_[a-z0-9_]+) *(?:\| *default\(|is defined)/g)]
      .map((m) => m[1]!),
  );
  const text = read("docs/FLEET.md");
  const rows = [...text.matchAll(/^\| `(passthrough_[a-z0-9_]+)` +\| ([^|]+?) +\|/gm)];
  assertEquals(rows.map((m) => m[1]!).sort(), [...read_].sort());
  // A default written as a literal is the playbook's literal.
  const [play] = parse(playbook) as { vars: Record<string, unknown> }[];
  const vars = JSON.stringify(play!.vars);
  for (const [, name, shown] of rows) {
    const literal = /^`([^`]+)`$/.exec(shown!)?.[1];
    if (literal === undefined || literal.includes("/") && !literal.startsWith("/")) continue;
    const expected = /^\d+$/.test(literal) ? `default(${literal})` : `default('${literal}')`;
    const uses = new RegExp(`${name} \\| ${expected.replaceAll(/[()]/g, "\\$&")}`);
    assertOk(uses.test(vars) || uses.test(playbook), `${name}: default ${literal}`);
  }
});

Deno.test("docs: every file of the repository they name exists", () => {
  // Build outputs (dist/), placeholders (NAME), files a user writes and absolute paths (`/bin/sh`)
  // are not the repository's.
  const missing: string[] = [];
  for (const doc of DOCS) {
    for (
      const m of read(doc).matchAll(
        /`(?:\.\/)?((?:lib|cli|ffi|tests|scripts|examples|ansible|bin|demo|docs|bench)\/[^`\s]*)`/g,
      )
    ) {
      const path = m[1]!.replace(/\/$/, "");
      if (/\bNAME\b|\*/.test(path) || path === "ansible/passthrough_config.yaml") continue;
      try {
        Deno.statSync(new URL(path, ROOT));
      } catch {
        missing.push(`${doc}: ${path}`);
      }
    }
  }
  assertEquals(missing, []);
});

Deno.test("docs/LIBRARY.md: its table is deno.json's exports, and each names what that module exports", async () => {
  const exports = JSON.parse(read("deno.json")).exports as Record<string, string>;
  const text = read("docs/LIBRARY.md");
  const rows = [...text.matchAll(/^\| `(\.[^`]*)` +\| `([^`]+)` +\| (.+?) +\|$/gm)];
  assertEquals(
    Object.fromEntries(rows.map((m) => [m[1]!, `./${m[2]!}`])),
    exports,
  );
  // Each function or class a row names (camelCase or PascalCase: not `main`'s `io`) is exported
  // by one of them: the ffi row names `applyPlan` as what takes its port.
  const modules = await Promise.all(rows.map((m) => import(new URL(m[2]!, ROOT).href)));
  const missing = rows.flatMap(([, , file, what]) =>
    [...what!.matchAll(/`([a-z]+[A-Z][A-Za-z0-9]*|[A-Z][A-Za-z0-9]+)`/g)]
      .map((m) => m[1]!)
      .filter((name) => !modules.some((module) => name in module))
      .map((name) => `${file}: ${name}`)
  );
  assertEquals(missing, []);
});

Deno.test("README: a failed --json command prints the error fields it says, config problems too", async () => {
  const readme = read("README.md").replaceAll(/\s+/g, " ");
  const error = /`\{ "error": \{ ([^}]*) \} \}`/.exec(readme)?.[1];
  const problems = /`\[\{ ([^}]*) \}\]`/.exec(readme)?.[1];
  assertOk(error && problems, "README names the error's and a problem's fields");
  const names = (list: string) => [...list.matchAll(/"(\w+)"/g)].map((m) => m[1]!);
  const dir = await Deno.makeTempDir({ prefix: "passthrough-h148-docs-error-" });
  try {
    await Deno.writeTextFile(`${dir}/bad.yaml`, "version: 1\nvms:\n  vm:\n    devise: []\n");
    const bad = await runCli(["plan", "--json", "--config", `${dir}/bad.yaml`]);
    assertEquals(bad.code, 1, bad.stderr);
    const json = JSON.parse(bad.stdout);
    assertEquals(Object.keys(json), ["error"]);
    // `problems` only for a config error.
    assertEquals(Object.keys(json.error), [...names(error), "problems"]);
    for (const problem of json.error.problems) assertEquals(Object.keys(problem), names(problems));
    const runtime = JSON.parse((await runCli(["plan", "--json", "-f", `${dir}/none.yaml`])).stdout);
    assertEquals(Object.keys(runtime.error), names(error));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The members of the string union `export type NAME = | "a" | "b"` in `file`. */
function unionOf(file: string, name: string): string[] {
  const source = read(file);
  const start = source.indexOf(`export type ${name}`);
  assertOk(start >= 0, `${file} has no ${name}`);
  return [...source.slice(start, source.indexOf(";", start)).matchAll(/"([a-z-]+)"/g)]
    .map((m) => m[1]!);
}

Deno.test("README: every code it lists as what plans emit and apply reports is one the code has, and rollback's are all of its", () => {
  // The other direction (every code explained) is readme_test's.
  const json = read("README.md").replaceAll(/\s+/g, " ");
  let plans = json.slice(
    json.indexOf("The codes plans emit:"),
    json.indexOf("The pre-flight codes"),
  );
  // The notes in brackets name other things (`<interface type='network'>`, `virsh edit`).
  for (let before = ""; before !== plans;) {
    before = plans;
    plans = plans.replaceAll(/\([^()]*\)/g, "");
  }
  const codes = (text: string) => [...text.matchAll(/`([a-z][a-z-]+)`/g)].map((m) => m[1]!);
  const issues = unionOf("lib/plan/types.ts", "IssueCode");
  assertOk(codes(plans).length > 25, "README lists the codes plans emit");
  assertEquals(codes(plans).filter((code) => !issues.includes(code)), []);
  const apply = json.slice(json.indexOf("Each VM of the report has"), json.indexOf("`ApplyCode`"));
  const statuses = ["status", "code", "changed", "unchanged", "skipped", "failed"];
  const applyCodes = unionOf("lib/apply/apply.ts", "ApplyCode");
  assertOk(codes(apply).length > 15, "README lists the codes apply reports");
  assertEquals(
    codes(apply).filter((code) => !statuses.includes(code) && !applyCodes.includes(code)),
    [],
  );
  // rollback's: every code, each status's, and nothing else; scripts branch on them.
  const rollback = json.slice(
    json.indexOf("`rollback --yes --json` prints"),
    json.indexOf("`RollbackCode`"),
  );
  const rollbackStatuses = unionOf("lib/apply/rollback.ts", "RollbackStatus");
  const rollbackCodes = unionOf("lib/apply/rollback.ts", "RollbackCode");
  const named = codes(rollback.slice(rollback.indexOf("`status` is") + 11));
  assertOk(rollbackCodes.length > 10, "lib/apply/rollback.ts has its codes");
  assertEquals(
    [...new Set(named)].sort(),
    [...new Set([...rollbackStatuses, ...rollbackCodes])].sort(),
  );
});

Deno.test("JSDoc: every {@link} of a deno.json export names a symbol that export documents", async () => {
  // `deno doc --lint` passes a link to a name the module does not export, and `deno doc --html`
  // then prints the bare name: a reader of that page finds nothing by it.
  const exports = JSON.parse(read("deno.json")).exports as Record<string, string>;
  const dangling: string[] = [];
  for (const file of Object.values(exports)) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["doc", "--json", file],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    const nodes = JSON.parse(new TextDecoder().decode(out.stdout)).nodes;
    const symbols: { name: string }[] = Object.values(nodes).flatMap((
      node,
    ) => (node as { symbols: { name: string }[] }).symbols);
    const byName = new Map(symbols.map((symbol) => [symbol.name, JSON.stringify(symbol)]));
    const visit = (value: unknown, where: string): void => {
      if (Array.isArray(value)) return value.forEach((item) => visit(item, where));
      if (typeof value !== "object" || value === null) return;
      const record = value as Record<string, unknown>;
      const location = record.location as { filename: string; line: number } | undefined;
      const here = location
        ? `${location.filename.replace(ROOT.href, "")}:${location.line}`
        : where;
      const doc = (record.jsDoc as { doc?: string } | undefined)?.doc ?? "";
      for (const [, target] of doc.matchAll(/\{@link(?:code|plain)?\s+([^\s}|]+)/g)) {
        const [name, member] = target!.split(".");
        const symbol = byName.get(name!);
        const found = symbol !== undefined &&
          (member === undefined || symbol.includes(`"name":"${member}"`));
        if (!found && !/^https?:/.test(target!)) dangling.push(`${file} ${here}: ${target}`);
      }
      for (const item of Object.values(record)) visit(item, here);
    };
    visit(symbols, file);
  }
  assertEquals([...new Set(dangling)], []);
});

Deno.test("README: the start guard's sample refusal is what the check prints for that start", async () => {
  // The sample: win11's GPU recorded at 0000:0b:00.0, where a Samsung NVMe drive sits now.
  const sample = read("README.md").match(
    /```text\nerror: Hook script execution failed: \.\.\. unexpected exit status 1: (.*)\n```/,
  )?.[1];
  assertOk(sample !== undefined, "README's start guard sample is gone");
  const host = loadHostDescription(new URL("tests/fixtures/hosts/x570-aorus-pro-wifi.json", ROOT));
  const group = host.devices.find((d) => d.bdf === "0000:0b:00.0")!.group;
  host.devices = host.devices.filter((d) => !d.bdf.startsWith("0000:0b:00."));
  host.devices.push(nvmeDescription("0000:0b:00.0", group ?? 30));
  const dir = await Deno.makeTempDir({ prefix: "passthrough-docs-guard-" });
  try {
    buildHostTree(host, `${dir}/sysfs`);
    const xml = `<domain type='kvm'><name>win11</name>
      <metadata><pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">
        <pt:device address="0000:0b:00.0" vendor="10de" device="2684" class="030000" rule="gpu"/>
      </pt:hostdevs></metadata>
      <devices><hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='0x0b' slot='0x00' function='0x0'/></source>
      </hostdev></devices></domain>`;
    const state = `${dir}/state`;
    const args = ["--state-dir", state, "--sysfs", `${dir}/sysfs`, "--", "win11", "prepare"];
    const check = await runCli(["hook", "run", ...args, "begin", "-"], {
      flags: ["--no-prompt", ...checkPermissions(state)],
      stdin: xml,
    });
    assertEquals([check.code, check.stdout, check.stderr], [1, "", `${sample}\n`]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("doctor --help names every check doctor reports, as --json's check field does", () => {
  // Its help named six of thirteen: vfio-pci.ids, driverctl, the boot VGA, busy GPU drivers,
  // resets, input devices and the bundle were checked unsaid.
  const source = read("lib/host/doctor.ts");
  const checks = new Set([...source.matchAll(/\bcheck: "([a-z-]+)"/g)].map((m) => m[1]!));
  assertOk(checks.size > 10, [...checks].join(" "));
  const help = COMMANDS.get("doctor")!.about;
  const missing = [...checks].filter((check) => !new RegExp(`(^|\\W)${check}\\b`).test(help));
  assertEquals(missing, []);
});

Deno.test("apply and rollback --help give the exit code of a stop by a signal, as README does", () => {
  // README: "an apply or rollback stopped by a signal exits 128 + its number"; their help's exit
  // codes stopped at 2, so a script reading 130 had only README to tell it what happened.
  assertOk(/stopped by a signal exits 128 \+ its number/.test(read("README.md")));
  for (const name of ["apply", "rollback"]) {
    const notes = (COMMANDS.get(name)!.notes ?? "").replaceAll(/\s+/g, " ");
    assertOk(
      /128 \+ N when a signal N stopped it \(130 Ctrl-C, 143 SIGTERM, 129 SIGHUP\)/.test(notes),
      notes,
    );
  }
});

Deno.test("README: the start guard's time against an empty deno run covers the latest benchmark round", () => {
  // README said 1.15x to 1.3x, 5 to 20 ms more, rounds after BENCHMARKS measured 1.55x and 23.5 ms:
  // a user weighing the hook read figures three rounds old.
  const bench = read("docs/BENCHMARKS.md");
  const latest = bench.slice(bench.search(/^## .*round/m)).split(/\n(?=## )/)[0]!
    .replaceAll(/\s+/g, " ");
  const ratio = Number(/the hook \(bin\) [\d.]+ ms, \*\*([\d.]+)x\*\*/.exec(latest)?.[1]);
  const own = Number(/The hook's own time over an empty script is ([\d.]+) ms/.exec(latest)?.[1]);
  assertOk(ratio > 1 && own > 0, `the latest round's hook figures not found: ${latest}`);
  const readme = read("README.md").replaceAll(/\s+/g, " ");
  const claim =
    /A start the check lets through takes ([\d.]+)x to ([\d.]+)x the time of `deno run` of an empty script.*?, ([\d.]+) to ([\d.]+) ms more/
      .exec(readme);
  assertOk(claim !== null, "README no longer says what a start the check lets through takes");
  const [low, high, fewest, most] = claim.slice(1).map(Number) as [number, number, number, number];
  assertOk(low <= ratio && ratio <= high, `README: ${low}x to ${high}x; latest round: ${ratio}x`);
  assertOk(
    fewest <= own && own <= most,
    `README: ${fewest} to ${most} ms; latest round: ${own} ms`,
  );
});

Deno.test("README: what a %YAML 1.1 file's ambiguous values come to is what the config reader does", () => {
  // README said every value YAML 1.1 alone reads as a number is refused where text goes; a match
  // criterion or a VM's name is taken as written (`slot: 1:2` is the slot "1:2"), which it did not
  // say, so a reader of that sentence expected a refusal for `vendor_id: 010`.
  const readme = read("README.md").replaceAll(/\s+/g, " ");
  const start = readme.indexOf("A file may start with `%YAML 1.1`");
  const yaml11 = readme.slice(start, start + 800);
  const refused = /reads as a boolean or a base-60 or octal number \(([^)]*)\) is refused/
    .exec(yaml11)?.[1];
  assertOk(refused !== undefined, "README no longer says which YAML 1.1 values are refused");
  const head = "%YAML 1.1\n---\nversion: 1\nvms:\n";
  const parses = (text: string) => {
    try {
      return parseConfig(text, { file: "c.yaml" });
    } catch {
      return null;
    }
  };
  for (const [, value] of refused.matchAll(/`([^`]+)`/g)) {
    const rule =
      `  vm:\n    devices:\n      - match: { vendor_id: "10de" }\n        name: ${value}\n`;
    assertEquals(parses(head + rule), null, `name: ${value} under %YAML 1.1`);
  }
  const written =
    /taken as written instead, in either version, and so is any VM or host name \(`vendor_id: 0x10de` is `10de`, `slot: 1:2` the slot `1:2`, a VM `010:` or `yes:` the VM `010` or `yes`\)/;
  assertMatch(yaml11, written);
  const config = parses(
    `${head}  010:\n    devices:\n      - match: { vendor_id: 0x10de, slot: 1:2 }\n  yes: { devices: [] }\n`,
  );
  assertEquals(config?.vms.map((vm) => vm.name), ["010", "yes"]);
  assertEquals(config?.vms[0]?.rules[0]?.match, { vendorId: "10de", slot: "1:2" });
});
