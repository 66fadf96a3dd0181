/**
 * The permission set is written in `bin/passthrough`; README and the `deno.json` tasks must say
 * exactly the same, or users and CI would run with flags nobody tested.
 */

import { assertEquals, assertOk } from "../helpers/assert.ts";
import { documentedFlags } from "../helpers/cli.ts";

const ROOT = new URL("../../", import.meta.url);

function flagsIn(command: string): string[] {
  return command.split(/\s+/).filter((word) => /^--(no-prompt|allow-)/.test(word));
}

Deno.test("deno.json's run, demo and compile tasks use exactly bin/passthrough's flags", () => {
  const tasks = JSON.parse(Deno.readTextFileSync(new URL("deno.json", ROOT))).tasks;
  for (const name of ["passthrough", "demo", "compile"]) {
    assertEquals(flagsIn(tasks[name].command), documentedFlags(), `task "${name}"`);
  }
});

Deno.test("README documents exactly bin/passthrough's flags", () => {
  const readme = Deno.readTextFileSync(new URL("README.md", ROOT));
  const block = /```sh\n(deno run --no-prompt[\s\S]*?)```/.exec(readme)?.[1];
  assertOk(block, "README has the permissions command block");
  assertEquals(flagsIn(block.replaceAll("\\\n", " ")), documentedFlags());
});
