/**
 * A reader that closes the CLI's standard output early (`passthrough groups --json | head`) ends
 * the process quietly: status 0 and nothing on stderr. A real process, a real pipe.
 */

import { assertEquals } from "../helpers/assert.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
import { generateHost } from "../../lib/testing/host_generator.ts";
import { documentedFlags } from "../helpers/cli.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

Deno.test("a closed standard output ends a command quietly", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-pipe-" });
  try {
    // Far more than a pipe holds (64 KiB): the writes go on after the reader has gone.
    buildHostTree(generateHost(512), dir);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...documentedFlags(), MAIN, "groups", "--json", "--sysfs", dir],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const reader = child.stdout.getReader();
    const first = await reader.read();
    assertEquals(first.done, false);
    await reader.cancel();
    const { code } = await child.status;
    const stderr = new TextDecoder().decode(
      new Uint8Array(await new Response(child.stderr).arrayBuffer()),
    );
    assertEquals([code, stderr], [0, ""]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a full standard output is one line on stderr, exit 1, also under --json", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-full-" });
  try {
    buildHostTree(generateHost(8), dir);
    for (const json of [[], ["--json"]]) {
      // Only a shell can hand the program /dev/full as its standard output.
      const command = [Deno.execPath(), "run", ...documentedFlags(), MAIN, "devices", ...json]
        .concat("--sysfs", dir).map((arg) => `'${arg}'`).join(" ");
      const { code, stdout, stderr } = await new Deno.Command("sh", {
        args: ["-c", `exec ${command} > /dev/full`],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).output();
      assertEquals(
        [code, new TextDecoder().decode(stdout), new TextDecoder().decode(stderr)],
        [
          1,
          "",
          "passthrough devices: Cannot write to standard output: No space left on device (os error 28)\n",
        ],
        `devices ${json.join(" ")}`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
