// The one-file `deno bundle` output, copied alone to a directory outside the checkout, runs the
// same commands as the sources with the documented permission flags and prints the same bytes.
// Also: the command table names each command once.
import { assertEquals, assertMatch, assertOk, assertThrows } from "../helpers/assert.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import { bundleAsTask, documentedFlags, runCli, wrapperV8Flags } from "../helpers/cli.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { COMMANDS } from "../../cli/commands.ts";

const ROOT = new URL("../../", import.meta.url);
const DEMO = new URL("../../demo/", import.meta.url);

Deno.test("the command table names each command once, and each help names its command", () => {
  const names = COMMANDS.map((c) => c.name);
  assertEquals(new Set(names).size, names.length);
  for (const command of COMMANDS) {
    assertMatch(command.help, new RegExp(`^Usage: passthrough ${command.name}\\b`));
  }
});

Deno.test("deno bundle output runs like the sources from a directory of its own", async (t) => {
  const work = await Deno.makeTempDir({ prefix: "passthrough-bundle-" });
  try {
    // As `deno task bundle` writes it, which the Ansible playbook copies to each host.
    await bundleAsTask(`${work}/build`);
    // Alone in a directory with nothing beside it: no demo/, no deno.json, no sources.
    const bundle = `${work}/alone/passthrough.js`;
    await Deno.mkdir(`${work}/alone`);
    await Deno.copyFile(`${work}/build/passthrough.js`, bundle);
    await Deno.remove(`${work}/build`, { recursive: true });
    const tree = `${work}/tree`;
    buildHostTree(loadHostDescription(new URL("host.json", DEMO)), tree);
    // With the flags the playbook runs it with: bin/passthrough's.
    const flags = [...documentedFlags(), wrapperV8Flags()];
    const same = async (args: string[]) => {
      const fromBundle = await runCli(args, { main: bundle, cwd: `${work}/alone`, flags });
      const fromSources = await runCli(args, { cwd: ROOT.pathname });
      assertEquals(fromBundle, fromSources, args.join(" "));
      return fromBundle;
    };

    await t.step("one file with no import left to resolve", async () => {
      const text = await Deno.readTextFile(bundle);
      // esbuild inlines the command table's dynamic imports as lazy initialisers.
      assertOk(!/import\(\s*["'][^"']*\.ts["']\s*\)/.test(text), "a dynamic import survived");
      assertOk(!/^import .* from ["']\.{1,2}\//m.test(text), "a relative import survived");
      assertOk(text.includes("init_groups()"), "the groups module is initialised lazily");
      // Each npm package's ES-module build (--platform browser): yaml's CommonJS one would load
      // Node's module loader at every start.
      assertOk(!text.includes('"node:module"'), "a CommonJS build is bundled");
    });

    await t.step("--help, a command's --help, version and an unknown command", async () => {
      const help = await same(["--help"]);
      assertEquals(help.code, 0);
      for (const entry of COMMANDS) assertMatch(help.stdout, new RegExp(`  ${entry.name} +`));
      assertEquals((await same(["groups", "--help"])).code, 0);
      assertEquals((await same(["--version"])).code, 0);
      assertEquals((await same(["no-such-command"])).code, 2);
    });

    await t.step("groups --json --sysfs TREE prints the same bytes", async () => {
      const groups = await same(["groups", "--json", "--sysfs", tree]);
      assertEquals([groups.code, groups.stderr], [0, ""]);
      assertOk(JSON.parse(groups.stdout).length > 10);
      assertEquals((await same(["devices", "--json", "--sysfs", tree])).code, 0);
    });

    await t.step(
      "plan --json on a built tree and a test-driver world prints the same plan",
      async () => {
        const plan = await same([
          "plan",
          "--json",
          "--config",
          new URL("passthrough_config.yaml", DEMO).pathname,
          "--sysfs",
          tree,
          "--connect",
          `test://${new URL("world.xml", DEMO).pathname}`,
        ]);
        assertEquals([plan.code, plan.stderr], [0, ""]);
        const parsed = JSON.parse(plan.stdout) as { vms: { name: string; changed: boolean }[] };
        assertOk(parsed.vms.some((vm) => vm.changed), "the demo config changes a VM");
      },
    );

    await t.step("demo runs from the bundle's directory without demo/ beside it", async () => {
      const demo = await runCli(["demo"], { main: bundle, cwd: `${work}/alone`, flags });
      assertEquals(demo.code, 0, demo.stderr);
      assertMatch(demo.stdout, /passthrough apply --yes/);
    });
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("scripts/bundle_bin.sh's chunks, which bin/passthrough runs, print what the sources print", async () => {
  const work = await Deno.makeTempDir({ prefix: "passthrough-bundle-bin-" });
  try {
    // DEST with a trailing slash, as a shell completes it.
    const built = await new Deno.Command(`${ROOT.pathname}scripts/bundle_bin.sh`, {
      args: [`${work}/bin/`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(built.code, 0, new TextDecoder().decode(built.stderr));
    // The start guard's check beside it, which `hook install` run from main.js makes the hook
    // run; it loads no other chunk than its own until a start needs the state code.
    const check = await Deno.readTextFile(`${work}/bin/hook/hook_check.js`);
    const imports = [...check.matchAll(/\bfrom\s*"([^"]+)"/g)].map((m) => m[1]!);
    assertOk(
      imports.length > 0 && imports.every((i) => i.startsWith("./chunk-")),
      imports.join(" "),
    );
    // Named through String(): Deno reads every module a literal dynamic import names when it
    // starts, so each command would read every other command's chunks.
    assertMatch(check, /import\(String\("\.\/state-[\w-]+\.js"\)\)/);
    // yaml's CommonJS build would load Node's module loader at every start: none is bundled.
    for (const entry of Deno.readDirSync(`${work}/bin`)) {
      if (!entry.isFile) continue;
      const text = await Deno.readTextFile(`${work}/bin/${entry.name}`);
      assertOk(!text.includes('"node:module"'), `${entry.name} imports node:module`);
      assertOk(!/\bimport\("\.\//.test(text), `${entry.name} has a literal dynamic import`);
    }
    // A build that fails (here: Deno cannot cache the bundler) leaves the bundle in place: an
    // installed start guard runs bin/hook/hook_check.js, and refuses every start without it.
    const failed = await new Deno.Command(`${ROOT.pathname}scripts/bundle_bin.sh`, {
      args: [`${work}/bin`],
      env: { DENO_DIR: "/proc/no-such-dir" },
      stdout: "null",
      stderr: "null",
    }).output();
    assertEquals(failed.code, 1);
    assertEquals(await Deno.readTextFile(`${work}/bin/hook/hook_check.js`), check);
    // What it was built from, by content, for setup.sh to compare with the sources it has.
    const digest = await new Deno.Command(`${ROOT.pathname}scripts/bundle_bin.sh`, {
      args: ["--sources-digest"],
    }).output();
    assertEquals(
      await Deno.readTextFile(`${work}/bin/.sources`),
      new TextDecoder().decode(digest.stdout),
    );
    assertMatch(await Deno.readTextFile(`${work}/bin/.sources`), /^[0-9a-f]{64}\n$/);
    // A chunk of the previous build stays one build longer, for its processes still running
    // (a VM start's check imports its state chunk after the rebuild swapped the directory).
    const rebuild = () =>
      new Deno.Command(`${ROOT.pathname}scripts/bundle_bin.sh`, {
        args: [`${work}/bin`],
        stdout: "null",
        stderr: "null",
      }).output();
    await Deno.writeTextFile(`${work}/bin/hook/state-PREVIOUS.js`, "export {};\n");
    await Deno.writeTextFile(`${work}/bin/.chunks`, "./hook/state-PREVIOUS.js\n", { append: true });
    assertEquals((await rebuild()).code, 0);
    assertEquals(Deno.statSync(`${work}/bin/hook/state-PREVIOUS.js`).isFile, true);
    assertEquals((await rebuild()).code, 0);
    assertThrows(() => Deno.statSync(`${work}/bin/hook/state-PREVIOUS.js`), Deno.errors.NotFound);
    assertEquals([...Deno.readDirSync(work)].map((e) => e.name), ["bin"]);
    recordCase({
      area: "fault",
      name: "the bundle's rebuild fails (setup.sh) while a start guard runs its check",
      count: 1,
      outcome: "the previous bundle stays whole in place; the hook keeps running it",
      test: "tests/cli/bundle_test.ts",
    });
    const main = `${work}/bin/main.js`;
    const tree = `${work}/tree`;
    buildHostTree(loadHostDescription(new URL("host.json", DEMO)), tree);
    const planArgs = [
      "--config",
      new URL("passthrough_config.yaml", DEMO).pathname,
      "--sysfs",
      tree,
      "--connect",
      `test://${new URL("world.xml", DEMO).pathname}`,
    ];
    for (
      const args of [
        ["--help"],
        ["groups", "--json", "--sysfs", tree],
        ["devices", "--sysfs", tree],
        ["plan", "--json", ...planArgs],
        ["plan", ...planArgs],
      ]
    ) {
      const fromChunks = await runCli(args, { main, cwd: ROOT.pathname });
      assertEquals(fromChunks, await runCli(args, { cwd: ROOT.pathname }), args.join(" "));
      assertEquals(fromChunks.code, 0, fromChunks.stderr);
    }
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("scripts/bundle_bin.sh: a source changed while it builds is newer than the bundle and not in its recorded digest; the digest covers the embedded demo", async () => {
  const work = await Deno.makeTempDir({ prefix: "passthrough-bundle-race-" });
  try {
    // A checkout of its own (no tools/deno/node_modules: the deno on PATH builds it).
    const root = `${work}/clone`;
    await Deno.mkdir(`${root}/scripts`, { recursive: true });
    await Deno.mkdir(`${root}/tools/deno`, { recursive: true });
    const entries = ["main.ts", "deno.json", "deno.lock", "cli", "lib", "ffi", "demo"];
    for (const entry of [...entries, "scripts/bundle_bin.sh", "tools/deno/package-lock.json"]) {
      const copied = await new Deno.Command("cp", {
        args: ["-r", `${ROOT.pathname}${entry}`, `${root}/${entry}`],
      }).output();
      assertEquals(copied.code, 0, entry);
    }
    // Deno, with a pull landing while it bundles main.ts: the source changes after it was read,
    // before main.js is written.
    await Deno.mkdir(`${work}/bin`);
    await Deno.writeTextFile(
      `${work}/bin/deno`,
      `#!/bin/sh
${JSON.stringify(Deno.execPath())} "$@" || exit
out= last=
for arg; do [ "$last" = --outdir ] && out=$arg; last=$arg; done
[ "$1 $last" = "bundle main.ts" ] || exit 0
sed -i 's/^export const VERSION = .*/export const VERSION = "9.9.9";/' cli/version.ts
touch "$out/main.js"
`,
      { mode: 0o755 },
    );
    const script = (args: string[]) =>
      new Deno.Command(`${root}/scripts/bundle_bin.sh`, {
        args,
        env: { PATH: `${work}/bin:${Deno.env.get("PATH")}` },
        stdout: "piped",
        stderr: "piped",
      }).output();
    const built = await script([]);
    assertEquals(built.code, 0, new TextDecoder().decode(built.stderr));
    assertMatch(await Deno.readTextFile(`${root}/cli/version.ts`), /"9\.9\.9"/);
    // bin/passthrough runs the sources, not the bundle of the old ones...
    const bundle = Deno.statSync(`${root}/dist/bin/main.js`).mtime!;
    assertOk(Deno.statSync(`${root}/cli/version.ts`).mtime! > bundle);
    // ...and setup.sh builds again: the digest recorded is not the sources' now.
    const now = new TextDecoder().decode((await script(["--sources-digest"])).stdout);
    assertOk(await Deno.readTextFile(`${root}/dist/bin/.sources`) !== now, now);
    // The demo's files are built in too (cli/demo.ts embeds them): a change to one is a change.
    await Deno.writeTextFile(`${root}/demo/world.xml`, "\n", { append: true });
    const demo = new TextDecoder().decode((await script(["--sources-digest"])).stdout);
    assertOk(demo !== now, demo);
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("scripts/bundle_bin.sh builds again with the start guard's check never missing from DEST", async () => {
  const work = await Deno.makeTempDir({ prefix: "passthrough-bundle-in-place-" });
  try {
    const build = () =>
      new Deno.Command(`${ROOT.pathname}scripts/bundle_bin.sh`, {
        args: [`${work}/bin`],
        stdout: "null",
        stderr: "piped",
      }).output();
    const first = await build();
    assertEquals(first.code, 0, new TextDecoder().decode(first.stderr));
    // A VM start loads the check at any moment: look for it all along three builds again.
    const check = `${work}/bin/hook/hook_check.js`;
    let done = false;
    const builds = (async () => {
      for (let i = 0; i < 3; i++) assertEquals((await build()).code, 0);
      done = true;
    })();
    let looks = 0;
    let missing = 0;
    while (!done) {
      for (let i = 0; i < 200; i++, looks++) {
        try {
          Deno.statSync(check);
        } catch {
          missing++;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    await builds;
    assertOk(looks > 1000, `${looks} looks`);
    assertEquals(missing, 0, `missing at ${missing} of ${looks} looks`);
    assertEquals([...Deno.readDirSync(work)].map((e) => e.name), ["bin"]);
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("scripts/bundle_bin.sh run twice at once leaves every chunk its entries import in DEST", async () => {
  const work = await Deno.makeTempDir({ prefix: "passthrough-bundle-twice-" });
  try {
    // A checkout of its own, whose deno is a stand-in writing an entry and one chunk named after
    // the build ($BUILD), as sources of another content would be named.
    const root = `${work}/clone`;
    for (const dir of ["scripts", "tools/deno", "cli", "lib", "ffi", "demo", "bin"]) {
      await Deno.mkdir(`${root}/${dir}`, { recursive: true });
    }
    for (const file of ["main.ts", "deno.json", "deno.lock", "tools/deno/package-lock.json"]) {
      await Deno.writeTextFile(`${root}/${file}`, "");
    }
    await Deno.copyFile(`${ROOT.pathname}scripts/bundle_bin.sh`, `${root}/scripts/bundle_bin.sh`);
    const stub = (name: string, body: string) =>
      Deno.writeTextFile(`${work}/bin/${name}`, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    await Deno.mkdir(`${work}/bin`);
    await stub(
      "deno",
      `out= last=
for arg; do [ "$last" = --outdir ] && out=$arg; last=$arg; done
name=chunk; [ "$last" = main.ts ] || name=check
entry=main; [ "$last" = main.ts ] || entry=hook_check
mkdir -p "$out" && echo "import(\\"./$name-$BUILD.js\\");" >"$out/$entry.js" && echo "$BUILD" >"$out/$name-$BUILD.js"`,
    );
    // Build "a" stops once it has put its first chunk in DEST, until the test lets it go on.
    await stub(
      "mv",
      `/bin/mv "$@" || exit
case "$BUILD $*" in "a "*/chunk-a.js*) echo >"${work}/a-paused"; cat "${work}/a-go" >/dev/null ;; esac`,
    );
    // Says when a build waits for another: such a wait is the way out of "a" stopping.
    await stub("flock", `[ "$BUILD" = b ] && echo >"${work}/b-waits"\nexec /usr/bin/flock "$@"`);
    for (const fifo of ["a-paused", "a-go", "b-waits"]) {
      const made = await new Deno.Command("mkfifo", { args: [`${work}/${fifo}`] }).output();
      assertOk(made.success);
    }
    const build = (id: string) =>
      new Deno.Command(`${root}/scripts/bundle_bin.sh`, {
        env: { PATH: `${work}/bin:${Deno.env.get("PATH")}`, BUILD: id },
        stdout: "null",
        stderr: "piped",
      }).spawn();
    const first = await build("o").output();
    assertEquals(first.code, 0, new TextDecoder().decode(first.stderr));
    const a = build("a");
    await Deno.readTextFile(`${work}/a-paused`);
    // "b" runs while "a" is halfway through putting its build in place: to its end, or until it
    // waits for "a".
    const b = build("b");
    let waited = false;
    const waits = Deno.readTextFile(`${work}/b-waits`).then(() => waited = true);
    await Promise.race([b.status, waits]);
    await Deno.writeTextFile(`${work}/a-go`, "go\n");
    const [aDone, bDone] = await Promise.all([a.output(), b.output()]);
    if (!waited) {
      await Deno.writeTextFile(`${work}/b-waits`, "");
      await waits;
    }
    assertEquals(aDone.code, 0, new TextDecoder().decode(aDone.stderr));
    assertEquals(bDone.code, 0, new TextDecoder().decode(bDone.stderr));
    // Whichever build's entries DEST holds, the chunks they import are there.
    const dest = `${root}/dist/bin`;
    for (const entry of ["main.js", "hook/hook_check.js"]) {
      const text = await Deno.readTextFile(`${dest}/${entry}`);
      const chunks = [...text.matchAll(/import\(String\("\.\/([^"]+)"\)\)/g)].map((m) => m[1]!);
      assertEquals(chunks.length, 1, text);
      const dir = entry.includes("/") ? `${dest}/hook` : dest;
      for (const chunk of chunks) {
        assertOk(Deno.statSync(`${dir}/${chunk}`).isFile, `${entry} imports ${chunk}`);
      }
    }
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});
