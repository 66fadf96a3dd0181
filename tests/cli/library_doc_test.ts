/**
 * docs/LIBRARY.md's code is what a developer copies first: every `ts` block type-checks against
 * the library as it is (the blocks read the live host and libvirt, so they are checked, not run;
 * the JSDoc examples are the ones that run).
 */

import { assertEquals, assertOk } from "../helpers/assert.ts";

const ROOT = new URL("../../", import.meta.url);
const GUIDE = Deno.readTextFileSync(new URL("docs/LIBRARY.md", ROOT));

/** The guide's `ts` blocks, with the repository-relative imports made absolute. */
function blocks(): string[] {
  return [...GUIDE.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) =>
    m[1]!.replaceAll(/from "\.\/(lib|ffi)\//g, `from "${ROOT.href}$1/`)
  );
}

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
