/** README's "run the main job" command: `passthrough demo`, as a user runs it. */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { type CliResult, documentedFlags, MAIN, runCli } from "../helpers/cli.ts";
import { shellQuote } from "../../lib/render/shell.ts";

Deno.test("passthrough demo plans, applies, converges and shows its refusals, leaving nothing behind", async () => {
  // A TMPDIR of its own: another run's demo in the shared /tmp (a parallel test, another
  // checkout's suite) made or removed a directory of its own between the two counts.
  const tmpdir = await Deno.makeTempDir({ prefix: "passthrough-tmpdir-" });
  const result = await runCli(["demo"], { env: { TMPDIR: tmpdir } });
  const left = [...Deno.readDirSync(tmpdir)].map((e) => e.name);
  await Deno.remove(tmpdir, { recursive: true });
  assertEquals(result.code, 0, result.stderr);
  const out = result.stdout;
  assertMatch(out, /89 functions, 73 IOMMU groups, 22 bridges/);
  assertMatch(out, /2 VMs to change, 6 hostdevs to add, 0 to remove/);
  assertMatch(out, /changed win10 \(\+3 -0 hostdevs\)/);
  assertMatch(out, /changed gentoo \(\+3 -0 hostdevs\)/);
  assertMatch(out, /No changes: every VM matches the config/);
  assertMatch(out, /refused \[ambiguous\] .*refused_config\.yaml:\d+:\d+: Rule "usb"/);
  assertMatch(
    out,
    /refused \[group-shared-with-other-vm\] \S+refused_config\.yaml:7:9: IOMMU group 26 \(0000:21:00\.0, 0000:21:00\.1\) is split between VMs "gentoo" \(rule "hdmi-audio" at \S+refused_config\.yaml:19:9\) and "win10" \(rule "gtx1080"\)/,
  );
  // The hand-added USB keyboard of win10 is never touched: no removed line mentions it.
  assertEquals(/^\s+-\s.*046d/m.test(out), false);
  assertEquals(left, [], "the temporary directory is removed");
});

/** Runs `line` as a user types it into `sh`, `passthrough` being this checkout's CLI. */
async function runAsTyped(line: string): Promise<CliResult> {
  const passthrough = [Deno.execPath(), "run", "--quiet", ...documentedFlags(), MAIN]
    .map(shellQuote).join(" ");
  const out = await new Deno.Command("sh", {
    args: ["-c", `passthrough() { ${passthrough} "$@"; }\n${line}`],
    env: { NO_COLOR: "1" },
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/** `demo --keep` under `tmpdir`, then the commands it printed, run as typed. */
async function keepAndLook(tmpdir?: string): Promise<void> {
  const result = await runCli(["demo", "--keep"], tmpdir ? { env: { TMPDIR: tmpdir } } : {});
  assertEquals(result.code, 0, result.stderr);
  const shown = /^Kept (.+); look at it with:$/m.exec(result.stdout)?.[1];
  const kept = shown === undefined ? undefined : (await runAsTyped(`printf %s ${shown}`)).stdout;
  try {
    assertMatch(String(kept), /passthrough-demo-/);
    assertOk(kept!.startsWith(tmpdir ?? ""), `${kept} is in ${tmpdir}`);
    // The checkout's wrapper, as README's first run comes before `passthrough` is on PATH: the
    // commands named `passthrough`, which a clone alone does not put there.
    const commands = [
      ...result.stdout.matchAll(/^ {2}((\S+) (groups|devices|plan) --sysfs .*)$/gm),
    ];
    assertEquals(
      commands.map((m) => [m[2], m[3]]),
      ["groups", "devices", "plan"].map((c) => [
        new URL("../../bin/passthrough", import.meta.url).pathname,
        c,
      ]),
    );
    const groups = await runAsTyped(commands[0]![1]!);
    assertEquals(groups.code, 0, groups.stderr);
    assertMatch(groups.stdout, /^26 .* 0000:21:00\.0 /m);
    const plan = await runAsTyped(commands[2]![1]!);
    assertEquals(plan.code, 0, plan.stderr);
    // A new process, a new test-driver world: the demo's apply is not in it.
    assertMatch(plan.stdout, /2 VMs to change, 6 hostdevs to add, 0 to remove/);
  } finally {
    if (kept !== undefined) await Deno.remove(kept, { recursive: true });
  }
}

Deno.test("passthrough demo --keep leaves its directory and prints commands that plan it", async () => {
  await keepAndLook();
});

Deno.test("passthrough demo --keep under a TMPDIR with a space and a quote prints commands sh runs as typed", async () => {
  const tmpdir = await Deno.makeTempDir({ prefix: "passthrough demo's tmp " });
  try {
    // libvirt refused the world's URI with a space in it, and sh split the unquoted paths.
    await keepAndLook(tmpdir);
  } finally {
    await Deno.remove(tmpdir, { recursive: true });
  }
});

Deno.test("passthrough demo with TMPDIR naming a missing directory says that is where it failed", async () => {
  // Deno's own error names no directory ("No such file or directory (os error 2): tmpdir").
  const result = await runCli(["demo"], { env: { TMPDIR: "/nonexistent/passthrough-tmp" } });
  assertEquals(result.code, 1);
  assertEquals(result.stdout, "");
  assertMatch(
    result.stderr,
    /^passthrough demo: Cannot create the demo's directory in \$TMPDIR \(else \/tmp\): No such file or directory \(os error 2\)[^\n]*: set TMPDIR to a writable directory, or unset it\n$/,
  );
});
