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

Deno.test("a command that reads the host, run with SIGHUP ignored (nohup), is not ended by a hangup after lspci", async () => {
  await using tree = await demoTree();
  const hostOptions = new URL("../../cli/host_options.ts", import.meta.url).href;
  // What `plan`, `devices` and `doctor` do first (lspci included), then a wait in the event loop,
  // where Deno acts on a signal: the hangup that ends a `nohup passthrough plan` session.
  const script = `import { loadHost } from ${JSON.stringify(hostOptions)};
await loadHost(${JSON.stringify(tree.sysfs)});
console.log("loaded");
await new Promise((resolve) => setTimeout(resolve, 3000));
console.log("went on");`;
  const child = new Deno.Command("sh", {
    args: ["-c", `trap '' HUP; exec "$0" eval "$1"`, Deno.execPath(), script],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("loaded\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  assertMatch(out, /loaded\n/);
  // Deno takes the signal over a moment after its first child process: the hangup comes later.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  Deno.kill(child.pid, "SIGHUP");
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  const { code, signal } = await child.status;
  await child.stderr.cancel();
  // It was ended by the hangup (signal SIGHUP, or 129 from Deno's own exit).
  assertEquals([code, signal, out], [0, null, "loaded\nwent on\n"]);
});
