/**
 * `scripts/setup.sh` reuses a Deno already on PATH when it is the pinned version
 * (`tools/deno/package-lock.json`) and installs the pinned one from npm otherwise. Run on a copy
 * of the script and the lock, with `deno`, `npm` and `dpkg-query` stand-ins first on PATH that
 * record being called, so nothing is installed.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

/** A `deno` stand-in that prints `version` as `deno --version` does. */
function denoStub(version: string): string {
  return `#!/bin/sh\necho "deno ${version} (stable, release, x86_64-unknown-linux-gnu)"\n`;
}

/**
 * The `npm` stand-in: records its call and, as `npm ci` does, removes the node_modules of its
 * `--prefix` first; then installs a `deno` stand-in of `installs`, or fails (no network).
 */
function npmStub(installs: string | null): string {
  const install = installs === null ? "exit 1" : `${installDeno('"$3/node_modules"', installs)}`;
  return `echo "npm called: $*" >&2\n[ "$2" = --prefix ] && rm -rf "$3/node_modules"\n${install}`;
}

/**
 * Shell commands laying out a `deno` stand-in of `version` in the node_modules `into` as npm does:
 * the binary in the package's directory (the path `Deno.execPath()` gives, which an installed
 * hook runs) and `.bin/deno` a link to it (which bin/passthrough runs).
 */
function installDeno(into: string, version: string): string {
  return `mkdir -p ${into}/.bin ${into}/deno && printf '%s' '${
    denoStub(version)
  }' >${into}/deno/deno` +
    ` && chmod +x ${into}/deno/deno && ln -s ../deno/deno ${into}/.bin/deno`;
}

async function setup(
  denoVersion: string,
  installed?: string,
  bundle?: { built: string | null },
  options: {
    npmInstalls?: string | null;
    after?: (dir: string) => void;
    /** Stubs (`mv`, `rm`) that run the real command, then this shell command, from the checkout. */
    eachChange?: string;
  } = {},
): Promise<{ code: number; stderr: string; touched: boolean }> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-setup-" });
  try {
    await Deno.mkdir(`${dir}/scripts`);
    await Deno.mkdir(`${dir}/tools/deno`, { recursive: true });
    await Deno.mkdir(`${dir}/bin`);
    await Deno.copyFile(`${ROOT}scripts/setup.sh`, `${dir}/scripts/setup.sh`);
    for (const file of ["package.json", "package-lock.json"]) {
      await Deno.copyFile(`${ROOT}tools/deno/${file}`, `${dir}/tools/deno/${file}`);
    }
    const stub = async (name: string, body: string) => {
      await Deno.writeTextFile(`${dir}/bin/${name}`, `#!/bin/sh\n${body}\n`);
      await Deno.chmod(`${dir}/bin/${name}`, 0o755);
    };
    await stub("deno", `echo "deno ${denoVersion} (stable, release, x86_64-unknown-linux-gnu)"`);
    if (installed !== undefined) {
      // What an earlier run installed under tools/deno.
      const laid = new Deno.Command("sh", {
        args: ["-c", installDeno(`${dir}/tools/deno/node_modules`, installed)],
      }).outputSync();
      assertOk(laid.success, new TextDecoder().decode(laid.stderr));
    }
    for (const command of options.eachChange === undefined ? [] : ["mv", "rm"]) {
      await stub(
        command,
        `/bin/${command} "$@"; rc=$?\n(cd "${dir}" && ${options.eachChange})\nexit $rc`,
      );
    }
    await stub("npm", npmStub(options.npmInstalls === undefined ? "0.0.0" : options.npmInstalls));
    await stub("dpkg-query", `printf 'install ok installed'`);
    // A bundle_bin.sh stand-in: the sources' digest is "now", a build says so.
    await Deno.writeTextFile(
      `${dir}/scripts/bundle_bin.sh`,
      '#!/bin/sh\n[ "$1" = --sources-digest ] && { echo now; exit 0; }\necho "bundle built" >&2\n',
      { mode: 0o755 },
    );
    const old = new Date(2020, 0, 1);
    if (bundle?.built !== undefined && bundle.built !== null) {
      await Deno.mkdir(`${dir}/dist/bin`, { recursive: true });
      await Deno.writeTextFile(`${dir}/dist/bin/.sources`, `${bundle.built}\n`);
      await Deno.writeTextFile(`${dir}/dist/bin/main.js`, "");
      await Deno.utime(`${dir}/dist/bin/main.js`, old, old);
    }
    const output = await new Deno.Command("bash", {
      args: [`${dir}/scripts/setup.sh`],
      env: { PATH: `${dir}/bin:/usr/bin:/bin` },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    options.after?.(dir);
    let touched = false;
    try {
      touched = Deno.statSync(`${dir}/dist/bin/main.js`).mtime!.getTime() > old.getTime();
    } catch {
      // No bundle.
    }
    return { code: output.code, stderr: new TextDecoder().decode(output.stderr), touched };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("setup.sh uses the pinned Deno from PATH instead of installing one", async () => {
  const lock = JSON.parse(await Deno.readTextFile(`${ROOT}tools/deno/package-lock.json`));
  const pinned: string = lock.packages["node_modules/deno"].version;
  const reused = await setup(pinned);
  assertEquals(reused.code, 0, reused.stderr);
  assertMatch(reused.stderr, new RegExp(`setup: using deno ${pinned} from PATH \\(.*/bin/deno\\)`));
  assertOk(!reused.stderr.includes("npm called"), reused.stderr);

  const other = await setup("1.46.3");
  assertEquals(other.code, 0, other.stderr);
  assertMatch(other.stderr, new RegExp(`setup: installing Deno ${pinned} from npm`));
  assertMatch(other.stderr, /npm called: ci --prefix tools\/deno\.new\.\d+ /);
});

Deno.test({
  name: "the Deno lock is complete: npm ci accepts it as committed (npm install would rewrite it)",
  // Setup needs npm only where no deno of the pinned version is on PATH.
  ignore: (() => {
    try {
      return !new Deno.Command("npm", { args: ["--version"], stdout: "null", stderr: "null" })
        .outputSync().success;
    } catch {
      return true;
    }
  })(),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-lock-" });
    try {
      for (const file of ["package.json", "package-lock.json"]) {
        await Deno.copyFile(`${ROOT}tools/deno/${file}`, `${dir}/${file}`);
      }
      // A dry run resolves the whole tree against the lock and installs nothing. An incomplete
      // lock (one platform's optional binary recorded, as some npm versions write it) is refused
      // with EUSAGE, and `npm install` would then add the missing entries to the checkout.
      const output = await new Deno.Command("npm", {
        args: ["ci", "--dry-run", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(output.code, 0, new TextDecoder().decode(output.stderr));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("setup.sh installs the pinned Deno again when the pin moved past the one installed", async () => {
  const lock = JSON.parse(await Deno.readTextFile(`${ROOT}tools/deno/package-lock.json`));
  const pinned: string = lock.packages["node_modules/deno"].version;
  const current = await setup("1.46.3", pinned);
  assertEquals(current.code, 0, current.stderr);
  assertOk(!current.stderr.includes("npm called"), current.stderr);
  const older = await setup("1.46.3", "2.0.0");
  assertEquals(older.code, 0, older.stderr);
  assertMatch(older.stderr, /npm called: ci --prefix tools\/deno\.new\.\d+ /);
});

Deno.test("setup.sh replaces an installed Deno of another version even with the pinned one on PATH", async () => {
  const lock = JSON.parse(await Deno.readTextFile(`${ROOT}tools/deno/package-lock.json`));
  const pinned: string = lock.packages["node_modules/deno"].version;
  // bin/passthrough, the bundle and the hook use tools/deno first: it must be the pinned one.
  const result = await setup(pinned, "2.0.0");
  assertEquals(result.code, 0, result.stderr);
  assertMatch(result.stderr, /npm called: ci --prefix tools\/deno\.new\.\d+ /);
});

Deno.test("setup.sh builds the bundle unless it was built from these sources, by digest", async () => {
  const none = await setup("1.46.3", undefined, { built: null });
  assertMatch(none.stderr, /bundle built/);
  const other = await setup("1.46.3", undefined, { built: "before" });
  assertMatch(other.stderr, /bundle built/);
  // Built from these very sources: not built again, and told it is fresh (its time renewed, so
  // that bin/passthrough, which compares times, runs it rather than the sources).
  const same = await setup("1.46.3", undefined, { built: "now" });
  assertOk(!same.stderr.includes("bundle built"), same.stderr);
  assertEquals(same.touched, true);
});

Deno.test("setup.sh keeps the installed Deno, which the start guard runs, when npm ci fails", async () => {
  const lock = JSON.parse(await Deno.readTextFile(`${ROOT}tools/deno/package-lock.json`));
  const pinned: string = lock.packages["node_modules/deno"].version;
  const version = (dir: string) =>
    new TextDecoder().decode(
      new Deno.Command(`${dir}/tools/deno/node_modules/.bin/deno`, { args: ["--version"] })
        .outputSync().stdout,
    ).split(" ")[1];
  const entries = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  // The pin moved past the installed one, and the registry cannot be reached.
  const failed = await setup("1.46.3", "2.0.0", undefined, {
    npmInstalls: null,
    after: (dir) => {
      assertEquals(version(dir), "2.0.0");
      assertEquals(entries(`${dir}/tools`), ["deno"]);
      assertEquals(entries(`${dir}/tools/deno`), [
        "node_modules",
        "package-lock.json",
        "package.json",
      ]);
    },
  });
  assertEquals(failed.code, 1, failed.stderr);
  // Installed: in place of the old one, nothing left beside it.
  const done = await setup("1.46.3", "2.0.0", undefined, {
    npmInstalls: pinned,
    after: (dir) => {
      assertEquals(version(dir), pinned);
      assertEquals(entries(`${dir}/tools`), ["deno"]);
      assertEquals(entries(`${dir}/tools/deno/node_modules`), [".bin", "deno"]);
    },
  });
  assertEquals(done.code, 0, done.stderr);
});

Deno.test("setup.sh replaces the installed Deno with no instant where a VM start finds none", async () => {
  const lock = JSON.parse(await Deno.readTextFile(`${ROOT}tools/deno/package-lock.json`));
  const pinned: string = lock.packages["node_modules/deno"].version;
  // After every file moved or removed, both paths that run deno: the binary's own path, which an
  // installed hook names (`Deno.execPath()` resolves links), and `.bin/deno`, which
  // bin/passthrough runs. A failing run is recorded.
  const probe = ["tools/deno/node_modules/deno/deno", "tools/deno/node_modules/.bin/deno"]
    .map((path) =>
      `${path} --version >/dev/null 2>&1 || echo "${path} missing after: $*" >>probe.log`
    )
    .join("; ");
  const replaced = await setup("1.46.3", "2.0.0", undefined, {
    npmInstalls: pinned,
    eachChange: probe,
    after: (dir) => {
      let log = "";
      try {
        log = Deno.readTextFileSync(`${dir}/probe.log`);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
      assertEquals(log, "");
      const version = new Deno.Command(`${dir}/tools/deno/node_modules/deno/deno`, {
        args: ["--version"],
      }).outputSync();
      assertMatch(new TextDecoder().decode(version.stdout), new RegExp(`^deno ${pinned} `));
      assertEquals(
        [...Deno.readDirSync(`${dir}/tools`)].map((e) => e.name),
        ["deno"],
      );
    },
  });
  assertEquals(replaced.code, 0, replaced.stderr);
});

Deno.test("setup.sh refuses a profile it does not know before installing anything", async () => {
  // `setup.sh tests` (for `test`) went on as `runtime`: no test packages, and nothing said.
  const dir = await Deno.makeTempDir({ prefix: "passthrough-setup-" });
  try {
    await Deno.mkdir(`${dir}/scripts`);
    await Deno.copyFile(`${ROOT}scripts/setup.sh`, `${dir}/scripts/setup.sh`);
    const output = await new Deno.Command("bash", {
      args: [`${dir}/scripts/setup.sh`, "tests"],
      env: { PATH: "/usr/bin:/bin" },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(
      [output.code, new TextDecoder().decode(output.stderr)],
      [2, 'setup: unknown profile "tests": usage: scripts/setup.sh [runtime|test]\n'],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
