/** The scripts in `examples/` run as users run them and say what they promise. */

import { assertEquals, assertMatch } from "../helpers/assert.ts";

const EXAMPLE = new URL("../../examples/drift_check.ts", import.meta.url).pathname;

Deno.test("examples/drift_check.ts reports the demo's pending changes with exit code 3", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--allow-ffi",
      "--allow-run=lspci",
      "--allow-read",
      "--allow-write",
      "--allow-env=LOG_TOKENS,LOG_STREAM",
      EXAMPLE,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assertEquals(out.code, 3, new TextDecoder().decode(out.stderr));
  assertMatch(stdout, /^win10: pending: \+3 -0$/m);
  assertMatch(stdout, /^gentoo: pending: \+3 -0$/m);
});
