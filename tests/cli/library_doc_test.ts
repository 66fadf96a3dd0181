/**
 * docs/LIBRARY.md's code is what a developer copies first: every `ts` block type-checks against
 * the library as it is, and the whole flow (written for the live host and libvirt) runs with its
 * paths swapped for the demo's captured host and test-driver world. Its claims about the data are
 * checked against the CLI's own output.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { describeError, main } from "../../main.ts";
import type { CliIo } from "../../cli/context.ts";
import { applyPlan, discoverHost, loadConfig, planHostdevs, redactedJson } from "../../lib/mod.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/mod.ts";
import { openLibvirtPort } from "../../ffi/mod.ts";

const ROOT = new URL("../../", import.meta.url);
const GUIDE = Deno.readTextFileSync(new URL("docs/LIBRARY.md", ROOT));
/** The guide's text with its line breaks as spaces, for sentences that `deno fmt` rewraps. */
const PROSE = GUIDE.replaceAll(/\s+/g, " ");

/** The guide's `lang` blocks. */
function blocksOf(lang: string): string[] {
  return [...GUIDE.matchAll(new RegExp(`^\`\`\`${lang}\n([\\s\\S]*?)^\`\`\`$`, "gm"))]
    .map((m) => m[1]!);
}

/** The guide's `ts` blocks written at the repository root, their imports made absolute. */
function blocks(): string[] {
  return blocksOf("ts").filter((code) => !code.includes(PACKAGE)).map((code) =>
    code.replaceAll(/from "\.\/(lib|ffi)\//g, `from "${ROOT.href}$1/`)
  );
}

/** The package name another project imports the library by. */
const PACKAGE = `"${JSON.parse(Deno.readTextFileSync(new URL("deno.json", ROOT))).name}`;

Deno.test("docs/LIBRARY.md: every ts block type-checks against the library", async () => {
  const found = blocks();
  assertOk(found.length >= 2, "the guide has lost its examples");
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-library-doc-" });
  try {
    for (const [i, code] of found.entries()) {
      const file = `${dir}/block_${i}.ts`;
      Deno.writeTextFileSync(file, code);
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["check", "--quiet", "--config", new URL("deno.json", ROOT).pathname, file],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assertEquals(out.code, 0, `block ${i + 1} of docs/LIBRARY.md:\n${code}\n${stderr}`);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("docs/LIBRARY.md: the whole flow runs as written on a captured host and the test driver", async () => {
  // Only its paths are swapped: the demo's tree for /sys, its config and libvirt world, a
  // temporary state directory, and the demo's VM for "win11".
  const flow = blocks().find((code) => code.includes("applyPlan(plan"))!;
  const demo = new URL("demo/", ROOT).pathname;
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-library-flow-" });
  try {
    buildHostTree(loadHostDescription(`${demo}host.json`), `${dir}/sysfs`);
    let code = flow;
    for (
      const [from, to] of [
        ["discoverHost({ reader })", `discoverHost({ reader, root: "${dir}/sysfs" })`],
        [`sysRoot: "/sys"`, `sysRoot: "${dir}/sysfs"`],
        ["/etc/passthrough/passthrough_config.yaml", `${demo}passthrough_config.yaml`],
        [`stateDir: "/var/lib/passthrough"`, `stateDir: "${dir}/state"`],
        [`vm.name === "win11"`, `vm.name === "win10"`],
      ]
    ) {
      assertOk(code.includes(from!), `the whole flow no longer has ${from}`);
      code = code.replace(from!, to!);
    }
    Deno.writeTextFileSync(`${dir}/flow.ts`, code);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", "--config", new URL("deno.json", ROOT).pathname, "flow.ts"],
      cwd: dir,
      env: { LIBVIRT_DEFAULT_URI: `test://${demo}world.xml`, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals([out.code, stderr], [0, ""], stdout);
    // Both VMs' diffs, then the report: win10 confirmed and changed, gentoo declined.
    assertMatch(stdout, /^--- win10 \(current\)\n\+\+\+ win10 \(new\)\n/m);
    assertMatch(stdout, /^--- gentoo \(current\)\n/m);
    assertOk(stdout.endsWith(`[ "win10" ] []\n`), stdout);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("docs/LIBRARY.md: the whole flow applies with the re-check apply makes", () => {
  // apply passes the plan's facts as `devices`; without them applyPlan's last check before a
  // define does not see another domain's disk or NIC under a controller the VM takes.
  const flow = blocks().find((code) => code.includes("applyPlan(plan"));
  assertOk(flow !== undefined, "the guide has lost its applyPlan example");
  assertMatch(flow, /const facts = readHostFacts\(/);
  assertMatch(flow, /applyPlan\(plan, \{[^}]*\n {2}devices: facts,\n\}\)/);
  assertEquals(flow.includes("planHostdevs({ config, host, libvirt, facts })"), true);
});

Deno.test("docs/LIBRARY.md: plan --json is planHostdevs()' plan through redactedJson, plus summary", async () => {
  // The guide says so, and that the plan itself holds the passwords JSON.stringify would print.
  assertMatch(PROSE, /`redactedJson\(plan\)`, as `--json` does, not `JSON.stringify`/);
  assertMatch(PROSE, /but for the `summary` the CLI adds/);
  const demo = new URL("demo/", ROOT).pathname;
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-library-json-" });
  try {
    buildHostTree(loadHostDescription(`${demo}host.json`), `${dir}/sysfs`);
    const world = Deno.readTextFileSync(`${demo}world.xml`);
    const withPassword = world.replace(
      "<devices>",
      "<devices>\n      <graphics type='vnc' port='-1' autoport='yes' passwd='s3cret'/>",
    );
    assertOk(withPassword !== world);
    Deno.writeTextFileSync(`${dir}/world.xml`, withPassword);
    const uri = `test://${dir}/world.xml`;
    const configPath = `${demo}passthrough_config.yaml`;

    const host = await discoverHost({ root: `${dir}/sysfs` });
    const config = await loadConfig(configPath);
    using libvirt = openLibvirtPort(uri);
    const plan = planHostdevs({ config, host, libvirt });
    assertOk(JSON.stringify(plan).includes("passwd='s3cret'"));

    let out = "";
    const io: CliIo = {
      out: (text) => void (out += text),
      err: () => {},
      color: false,
      interactive: false,
      readLine: () => Promise.resolve(null),
      env: () => undefined,
    };
    const args = ["plan", "--json", "--sysfs", `${dir}/sysfs`, "--config", configPath];
    assertEquals(await main([...args, "--connect", uri], io), 0);
    assertOk(!out.includes("s3cret") && out.includes("passwd='***'"));
    const { summary, ...printed } = JSON.parse(out);
    assertOk(typeof summary === "object" && summary !== null);
    assertEquals(printed, JSON.parse(redactedJson(plan)));

    // So does the apply report, which the guide says to print the same way.
    assertMatch(
      PROSE,
      /and `applyPlan`'s report too \(each changed VM's `definition` holds them\)/,
    );
    const report = await applyPlan(plan, {
      libvirt,
      stateDir: `${dir}/state`,
      confirm: () => Promise.resolve("yes"),
    });
    assertEquals(report.changed, ["win10", "gentoo"]);
    assertOk(JSON.stringify(report).includes("passwd='s3cret'"));
    assertOk(!redactedJson(report).includes("s3cret"));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("main() opens the LIBVIRT_DEFAULT_URI its io gives, not the process's", async () => {
  // The `./cli` export reads and writes through `io`: an embedder's environment names the libvirt
  // the commands open. It used to be checked, then libvirt opened the process's own default.
  const demo = new URL("demo/", ROOT).pathname;
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-library-env-" });
  try {
    buildHostTree(loadHostDescription(`${demo}host.json`), `${dir}/sysfs`);
    const run = async (args: string[], env: Record<string, string>) => {
      let out = "";
      let err = "";
      const io: CliIo = {
        out: (text) => void (out += text),
        err: (text) => void (err += text),
        color: false,
        interactive: false,
        readLine: () => Promise.resolve(null),
        env: (name) => env[name],
      };
      return { code: await main(args, io), out, err };
    };
    const uri = `test://${demo}world.xml`;
    const env = { LIBVIRT_DEFAULT_URI: uri, PASSTHROUGH_CONFIG: `${demo}passthrough_config.yaml` };
    const plan = await run(["plan", "--json", "--sysfs", `${dir}/sysfs`], env);
    assertEquals([plan.code, plan.err], [0, ""]);
    assertEquals(JSON.parse(plan.out).uri, uri);
    const sources = await run(["sources", "--json", "--sysfs", `${dir}/sysfs`], env);
    // Exit 1: the demo world has no node devices, so the two discoveries differ.
    assertEquals([sources.code, sources.err], [1, ""]);
    assertEquals(JSON.parse(sources.out).libvirt, uri);
    // Named as coming from there when it cannot be opened.
    const missing = `test://${dir}/missing.xml`;
    const failed = await run(["plan", "--sysfs", `${dir}/sysfs`], {
      ...env,
      LIBVIRT_DEFAULT_URI: missing,
    });
    assertEquals(failed.code, 1);
    assertMatch(failed.err, new RegExp(`at "${missing}" \\(LIBVIRT_DEFAULT_URI\\)`));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("docs/LIBRARY.md: a project in another directory links the checkout and runs its example", async () => {
  // Deno reads only the running project's deno.json, so lib/'s npm names (mapped in ours) do not
  // resolve in a script that imports lib/mod.ts by path; the guide says so and how to link instead.
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-library-project-" });
  const run = (args: string[], cwd: string) =>
    new Deno.Command(Deno.execPath(), {
      args,
      cwd,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    })
      .output();
  try {
    Deno.mkdirSync(`${dir}/by-path`);
    Deno.writeTextFileSync(
      `${dir}/by-path/script.ts`,
      `import { parseConfig } from "${ROOT.href}lib/mod.ts";\nconsole.log(parseConfig);\n`,
    );
    const byPath = await run(["run", "--quiet", "--cached-only", "script.ts"], `${dir}/by-path`);
    const said = /`(Import "fast-xml-parser" not a dependency)`/.exec(GUIDE)?.[1];
    assertOk(said !== undefined, "the guide no longer says why an import by path fails");
    assertEquals(byPath.code, 1);
    assertOk(new TextDecoder().decode(byPath.stderr).includes(said), "by path");

    const [config] = blocksOf("json");
    const [script] = blocksOf("ts").filter((code) => code.includes(PACKAGE));
    assertOk(
      config !== undefined && script !== undefined,
      "the guide lost its other-project example",
    );
    // The guide's checkout is a sibling of the project: its path, made this checkout's.
    const linked = JSON.parse(config);
    assertEquals(linked.links, ["../passthrough"]);
    linked.links = [new URL(".", ROOT).pathname];
    Deno.mkdirSync(`${dir}/tool`);
    Deno.writeTextFileSync(`${dir}/tool/deno.json`, JSON.stringify(linked));
    Deno.writeTextFileSync(`${dir}/tool/tool.ts`, script);
    // Permissions as the guide gives them.
    assertMatch(PROSE, /This one runs with `--allow-ffi` alone/);
    // Not --cached-only: Deno resolves a linked checkout's npm packages (their dependencies too)
    // from the registry's package list, which installing ours from its lock file does not keep,
    // so a fresh machine's cache lacked it for fast-xml-parser's dependency. JSR, unreachable
    // here, is still never asked.
    const out = await run(
      ["run", "--quiet", "--no-prompt", "--allow-ffi", "tool.ts"],
      `${dir}/tool`,
    );
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals([out.code, stderr], [0, ""]);
    assertMatch(new TextDecoder().decode(out.stdout), /^\d+ PCI functions\n$/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("docs/LIBRARY.md: describeError() prints a library error as the CLI does, causes and all", async () => {
  // describeError() is what the CLI prints for an error: its message, the causes the message
  // does not already hold, secrets hidden.
  assertMatch(PROSE, /print one as the CLI does with `describeError\(error\)` \(from `\.\/cli`\)/);
  const demo = new URL("demo/", ROOT).pathname;
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-library-error-" });
  try {
    buildHostTree(loadHostDescription(`${demo}host.json`), `${dir}/sysfs`);
    // A directory no one can make, root included: its message names it, its cause says why.
    const stateDir = "/proc/passthrough-library-error";
    const uri = `test://${demo}world.xml`;
    const config = `${demo}passthrough_config.yaml`;
    let err = "";
    const io: CliIo = {
      out: () => {},
      err: (text) => void (err += text),
      color: false,
      interactive: false,
      readLine: () => Promise.resolve(null),
      env: () => undefined,
    };
    const args = ["apply", "--yes", "--sysfs", `${dir}/sysfs`, "-f", config, "-c", uri];
    assertEquals(await main([...args, "--state-dir", stateDir], io), 1);

    const host = await discoverHost({ root: `${dir}/sysfs` });
    using libvirt = openLibvirtPort(uri);
    const plan = planHostdevs({ config: await loadConfig(config), host, libvirt });
    const confirm = () => Promise.resolve("yes" as const);
    const error = await applyPlan(plan, { libvirt, stateDir, confirm }).then(() => null, (e) => e);
    assertOk(error instanceof Error);
    assertEquals(`passthrough apply: ${describeError(error)}\n`, err);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
