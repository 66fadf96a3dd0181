/** README's "run the main job" command: `passthrough demo`, as a user runs it. */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { runCli } from "../helpers/cli.ts";

Deno.test("passthrough demo plans, applies, converges and shows its refusals, leaving nothing behind", async () => {
  const before =
    [...Deno.readDirSync(Deno.env.get("TMPDIR") ?? "/tmp")].filter((e) =>
      e.name.startsWith("passthrough-demo-")
    ).length;
  const result = await runCli(["demo"]);
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
  const after =
    [...Deno.readDirSync(Deno.env.get("TMPDIR") ?? "/tmp")].filter((e) =>
      e.name.startsWith("passthrough-demo-")
    ).length;
  assertEquals(after, before, "the temporary directory is removed");
});

Deno.test("passthrough demo --keep leaves its directory and prints commands that plan it", async () => {
  const result = await runCli(["demo", "--keep"]);
  assertEquals(result.code, 0, result.stderr);
  const kept = /^Kept (\S+); look at it with:$/m.exec(result.stdout)?.[1];
  try {
    assertMatch(String(kept), /passthrough-demo-/);
    const commands = [...result.stdout.matchAll(/^ {2}passthrough (.+)$/gm)].map((m) => m[1]!);
    assertEquals(commands.map((c) => c.split(" ")[0]), ["groups", "devices", "plan"]);
    const groups = await runCli(commands[0]!.split(" "));
    assertEquals(groups.code, 0, groups.stderr);
    assertMatch(groups.stdout, /^26 .* 0000:21:00\.0 /m);
    const plan = await runCli(commands[2]!.split(" "));
    assertEquals(plan.code, 0, plan.stderr);
    // A new process, a new test-driver world: the demo's apply is not in it.
    assertMatch(plan.stdout, /2 VMs to change, 6 hostdevs to add, 0 to remove/);
  } finally {
    if (kept !== undefined) await Deno.remove(kept, { recursive: true });
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
