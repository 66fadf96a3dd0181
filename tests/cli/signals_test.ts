/**
 * `apply` and the signals that ask it to stop (cli/signals.ts), on a real pseudo-terminal with the
 * demo world (libvirt's test driver).
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { hasScript, runCliOnPty } from "../helpers/cli.ts";
import { demoTree } from "../helpers/reliability.ts";

const DEMO = new URL("../../demo/", import.meta.url).pathname;

Deno.test({
  name: "apply run with SIGHUP ignored (nohup) goes on through a hangup at its question",
  ignore: !hasScript(),
  fn: async () => {
    await using tree = await demoTree();
    const args = ["apply", "--config", `${DEMO}passthrough_config.yaml`, "--sysfs", tree.sysfs]
      .concat("--connect", `test://${DEMO}world.xml`, "--state-dir", `${tree.dir}/state`);
    // What `nohup` does, with the terminal kept for the questions.
    await using pty = runCliOnPty(args, { shell: `echo "pid $$"; trap '' HUP` });
    const pid = Number(/pid (\d+)/.exec(await pty.waitFor(/pid \d+/))![1]);
    await pty.waitFor(/Apply the changes to "win10"\? \[y\/N\/a\/q\] $/);
    // A session's hangup, which nohup's caller asked to be ignored: caught, it stopped apply.
    Deno.kill(pid, "SIGHUP");
    await new Promise((resolve) => setTimeout(resolve, 500));
    await pty.type("y\n");
    await pty.waitFor(/Apply the changes to "gentoo"\? \[y\/N\/a\/q\] $/);
    await pty.type("n\n");
    const { code, screen } = await pty.exited(20_000);
    assertMatch(screen, /changed win10/);
    assertEquals(/stopped by SIGHUP/.test(screen), false, screen);
    assertEquals(code, 0, screen);
  },
});
