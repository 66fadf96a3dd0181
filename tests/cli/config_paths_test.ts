/**
 * Which config `plan` reads when none is named (issue 16): a missing one is one line naming every
 * path tried and where a host keeps its config, not a raw read error.
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { runCli } from "../helpers/cli.ts";

Deno.test("plan without a config names the paths it tried, in one line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-config-paths-" });
  try {
    const result = await runCli(["plan"], { cwd: dir });
    assertEquals(result.code, 1);
    assertEquals(result.stdout, "");
    assertEquals(result.stderr.trimEnd().split("\n").length, 1);
    assertMatch(
      result.stderr,
      /tried passthrough_config\.yaml \(current directory\), \/etc\/passthrough\/passthrough_config\.yaml \(host config\): name one with --config FILE or \$PASSTHROUGH_CONFIG/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("plan names the environment variable when the file it names is missing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-config-paths-" });
  try {
    const result = await runCli(["plan"], {
      cwd: dir,
      env: { PASSTHROUGH_CONFIG: `${dir}/nowhere.yaml` },
    });
    assertEquals(result.code, 1);
    assertMatch(result.stderr, /tried .*nowhere\.yaml \(\$PASSTHROUGH_CONFIG\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
