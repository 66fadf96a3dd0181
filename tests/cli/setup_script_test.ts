/**
 * `scripts/setup.sh` reuses a Deno already on PATH when it is the pinned version
 * (`tools/deno/package-lock.json`) and installs the pinned one from npm otherwise. Run on a copy
 * of the script and the lock, with `deno`, `npm` and `dpkg-query` stand-ins first on PATH that
 * record being called, so nothing is installed.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

async function setup(denoVersion: string): Promise<{ code: number; stderr: string }> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-setup-" });
  try {
    await Deno.mkdir(`${dir}/scripts`);
    await Deno.mkdir(`${dir}/tools/deno`, { recursive: true });
    await Deno.mkdir(`${dir}/bin`);
    await Deno.copyFile(`${ROOT}scripts/setup.sh`, `${dir}/scripts/setup.sh`);
    await Deno.copyFile(
      `${ROOT}tools/deno/package-lock.json`,
      `${dir}/tools/deno/package-lock.json`,
    );
    const stub = async (name: string, body: string) => {
      await Deno.writeTextFile(`${dir}/bin/${name}`, `#!/bin/sh\n${body}\n`);
      await Deno.chmod(`${dir}/bin/${name}`, 0o755);
    };
    await stub("deno", `echo "deno ${denoVersion} (stable, release, x86_64-unknown-linux-gnu)"`);
    await stub("npm", `echo "npm called: $*" >&2`);
    await stub("dpkg-query", `printf 'install ok installed'`);
    const output = await new Deno.Command("bash", {
      args: [`${dir}/scripts/setup.sh`],
      env: { PATH: `${dir}/bin:/usr/bin:/bin` },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: output.code, stderr: new TextDecoder().decode(output.stderr) };
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
  assertMatch(other.stderr, /npm called: install --prefix tools\/deno/);
});
