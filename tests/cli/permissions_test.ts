/**
 * The permission set is written in `bin/passthrough`; README, the `deno.json` tasks and the
 * Ansible playbook must say exactly the same, or users and CI would run with flags nobody tested.
 * The playbook also runs the bundle with `bin/passthrough`'s V8 flags.
 */

import { assertEquals, assertOk } from "../helpers/assert.ts";
import { parse } from "yaml";
import { documentedFlags, wrapperV8Flags } from "../helpers/cli.ts";

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

Deno.test("the Ansible playbook runs the bundle with exactly bin/passthrough's flags", () => {
  const text = Deno.readTextFileSync(new URL("ansible/passthrough.yml", ROOT));
  const [play] = parse(text) as { vars: Record<string, unknown> }[];
  assertOk(play, "the playbook has a play");
  // --no-prompt is written in passthrough_run itself, so overriding the lists cannot drop it.
  assertEquals(
    play.vars.passthrough_default_permissions,
    documentedFlags().filter((f) => f !== "--no-prompt"),
  );
  assertEquals(play.vars.passthrough_default_v8_flags, [wrapperV8Flags()]);
  const oneLine = (name: string) => String(play.vars[name]).replace(/\s+/g, " ").trim();
  assertEquals(
    oneLine("_pt_deno_run"),
    "{{ ['timeout', '-k', '10', _pt_timeout | string, _pt_deno, 'run', '--quiet', '--no-prompt', " +
      "'--no-config'] + (passthrough_v8_flags | default(passthrough_default_v8_flags)) + " +
      "(passthrough_permissions | default(passthrough_default_permissions)) }}",
  );
  assertEquals(
    oneLine("passthrough_run"),
    "{{ _pt_deno_run + [_pt_run_dir ~ '/passthrough.js'] }}",
  );
  // Every `deno run` of the playbook goes through _pt_deno_run.
  assertEquals([...text.matchAll(/'run'/g)].length, 1, "one deno run in the playbook");
  // No setting is a play var: those would win over the inventory, host_vars and group_vars.
  const settings = Object.keys(play.vars).filter((k) =>
    k.startsWith("passthrough_") && !k.startsWith("passthrough_default_")
  );
  assertEquals(settings.sort(), ["passthrough_common_args", "passthrough_run"]);
});
