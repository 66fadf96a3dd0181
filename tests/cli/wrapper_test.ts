// bin/passthrough, the wrapper every command starts through: run in a checkout of its own making
// (its main.ts and dist/bin/main.js print which of them ran), with the real Deno linked where the
// pinned one lives. It runs the bundle while no source is newer, the sources otherwise, finds its
// checkout however it is reached, and passes the arguments through untouched.
import { assertEquals } from "../helpers/assert.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const SAYS_WHICH = (which: string) =>
  `console.log(${JSON.stringify(which)} + " " + JSON.stringify(Deno.args));\n`;

/** A checkout with the real wrapper, a source tree of one file per level, and a fresh bundle. */
function fakeCheckout(dir: string): void {
  for (
    const sub of [
      "bin",
      "cli",
      "ffi",
      "lib/host",
      "demo",
      "dist/bin",
      "tools/deno/node_modules/.bin",
    ]
  ) {
    Deno.mkdirSync(`${dir}/${sub}`, { recursive: true });
  }
  Deno.copyFileSync(`${ROOT}bin/passthrough`, `${dir}/bin/passthrough`);
  Deno.chmodSync(`${dir}/bin/passthrough`, 0o755);
  Deno.symlinkSync(Deno.execPath(), `${dir}/tools/deno/node_modules/.bin/deno`);
  Deno.writeTextFileSync(`${dir}/main.ts`, SAYS_WHICH("sources"));
  // demo/: files the bundle embeds (cli/demo.ts).
  for (
    const file of ["deno.json", "cli/a.ts", "ffi/b.ts", "lib/mod.ts", "lib/host/c.ts", "demo/w.xml"]
  ) {
    Deno.writeTextFileSync(`${dir}/${file}`, "{}\n");
  }
  Deno.writeTextFileSync(`${dir}/dist/bin/main.js`, SAYS_WHICH("bundle"));
  freshen(dir);
}

/** Every source an hour old, the bundle now. */
function freshen(dir: string): void {
  const old = new Date(Date.now() - 3_600_000);
  for (
    const file of [
      "main.ts",
      "deno.json",
      "cli/a.ts",
      "ffi/b.ts",
      "lib/mod.ts",
      "lib/host/c.ts",
      "demo/w.xml",
    ]
  ) {
    Deno.utimeSync(`${dir}/${file}`, old, old);
  }
  Deno.utimeSync(`${dir}/dist/bin/main.js`, new Date(), new Date());
}

async function run(
  program: string,
  args: string[],
  cwd: string,
  path = `${cwd}:/usr/bin:/bin`,
): Promise<string> {
  const out = await new Deno.Command(program, {
    args,
    cwd,
    env: { PATH: path },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).trim();
}

Deno.test("bin/passthrough runs the bundle while it is fresh, the sources once one is newer", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-wrapper-" });
  try {
    fakeCheckout(dir);
    assertEquals(await run(`${dir}/bin/passthrough`, ["plan"], dir), 'bundle ["plan"]');
    for (
      const source of [
        "main.ts",
        "deno.json",
        "cli/a.ts",
        "ffi/b.ts",
        "lib/mod.ts",
        "lib/host/c.ts",
        "demo/w.xml",
      ]
    ) {
      Deno.utimeSync(
        `${dir}/${source}`,
        new Date(Date.now() + 60_000),
        new Date(Date.now() + 60_000),
      );
      assertEquals(await run(`${dir}/bin/passthrough`, ["plan"], dir), 'sources ["plan"]', source);
      freshen(dir);
    }
    Deno.removeSync(`${dir}/dist/bin/main.js`);
    assertEquals(await run(`${dir}/bin/passthrough`, [], dir), "sources []");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("bin/passthrough finds its checkout by a relative path, a symbolic link or PATH, and passes arguments as given", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-wrapper-" });
  try {
    fakeCheckout(`${dir}/checkout`);
    Deno.mkdirSync(`${dir}/elsewhere`);
    Deno.symlinkSync(`${dir}/checkout/bin/passthrough`, `${dir}/elsewhere/passthrough`);
    const args = ["plan", "--config", "a b.yaml", "$(touch PWNED)", "*", "--", ""];
    const expected = `bundle ${JSON.stringify(args)}`;
    assertEquals(await run("./bin/passthrough", args, `${dir}/checkout`), expected);
    assertEquals(await run("./passthrough", args, `${dir}/checkout/bin`), expected);
    assertEquals(await run("../checkout/bin/passthrough", args, `${dir}/elsewhere`), expected);
    assertEquals(await run("./passthrough", args, `${dir}/elsewhere`), expected);
    // Found on PATH (the test puts the directory of the link first).
    assertEquals(await run("passthrough", args, `${dir}/elsewhere`), expected);
    assertEquals([...Deno.readDirSync(`${dir}/elsewhere`)].map((e) => e.name), ["passthrough"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("bin/passthrough's freshness globs reach every source of this checkout", () => {
  // cli/*.ts, ffi/*.ts, lib/*.ts and lib/*/*.ts: a deeper source would go unnoticed when edited.
  const deeper: string[] = [];
  const walk = (dir: string, depth: number) => {
    for (const entry of Deno.readDirSync(`${ROOT}${dir}`)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) walk(path, depth + 1);
      else if (entry.name.endsWith(".ts") && depth > (dir.startsWith("lib") ? 1 : 0)) {
        deeper.push(path);
      }
    }
  };
  for (const top of ["cli", "ffi", "lib"]) walk(top, 0);
  assertEquals(deeper, []);
});
