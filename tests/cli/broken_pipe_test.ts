/**
 * A reader that closes the CLI's standard output early (`passthrough groups --json | head`) gets
 * no error on stderr, and the command runs to its end (an `apply` records what it applied). A
 * real process, a real pipe.
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
import { generateHost } from "../../lib/testing/host_generator.ts";
import { documentedFlags, hasScript } from "../helpers/cli.ts";
import { demoTree } from "../helpers/reliability.ts";
import { pathExists } from "../../lib/state/paths.ts";

/** The demo world's win10: the policies apply records are bound to it. */
const DEMO_WIN10_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** `a` quoted for a shell. */
const quote = (a: string) => `'${a.replaceAll("'", "'\\''")}'`;

/** The shell line of `passthrough apply` of `config` over `sysfs` and the demo's world. */
function applyLine(sysfs: string, config: string, state: string): string {
  const world = new URL("../../demo/world.xml", import.meta.url).pathname;
  return [Deno.execPath(), "run", "--quiet", ...documentedFlags(), MAIN, "apply"]
    .concat("--config", config, "--sysfs", sysfs, "--connect", `test://${world}`)
    .concat("--state-dir", state).map(quote).join(" ");
}

/** Runs `command` under `script`, on a pseudo-terminal whose input and output the test holds. */
function inScript(
  command: string,
  stderr: "piped" | "null",
  signal?: AbortSignal,
): Deno.ChildProcess {
  return new Deno.Command("script", {
    args: ["-q", "-e", "-c", command, "/dev/null"],
    stdin: "piped",
    stdout: "piped",
    stderr,
    env: { NO_COLOR: "1" },
    ...signal && { signal },
  }).spawn();
}

Deno.test("a closed standard output ends a command quietly, exit 0", async () => {
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

Deno.test("help and the version to a full standard output are one line on stderr, exit 1", async () => {
  const cases: [string[], string][] = [
    [["--version"], "passthrough"],
    [["--help"], "passthrough"],
    [["plan", "--help"], "passthrough plan"],
    [["help", "plan"], "passthrough plan"],
  ];
  for (const [args, who] of cases) {
    // They printed "error: Uncaught (in promise) Error: Cannot write to standard output" and a
    // stack trace.
    const command = [Deno.execPath(), "run", ...documentedFlags(), MAIN, ...args]
      .map((arg) => `'${arg}'`).join(" ");
    const { code, stderr } = await new Deno.Command("sh", {
      args: ["-c", `exec ${command} > /dev/full`],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    assertEquals(
      [code, new TextDecoder().decode(stderr)],
      [1, `${who}: Cannot write to standard output: No space left on device (os error 28)\n`],
      args.join(" "),
    );
  }
});

Deno.test("apply --yes runs to its end when its standard output is closed", async () => {
  await using tree = await demoTree();
  const world = new URL("../../demo/world.xml", import.meta.url).pathname;
  const config = `${tree.dir}/c.yaml`;
  await Deno.writeTextFile(
    config,
    (await Deno.readTextFile(new URL("../../demo/passthrough_config.yaml", import.meta.url)))
      .replace("  win10:\n", "  win10:\n    guard: warn\n"),
  );
  const state = `${tree.dir}/state`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...documentedFlags(), MAIN, "apply", "--yes", "--config", config]
      .concat("--sysfs", tree.sysfs, "--connect", `test://${world}`, "--state-dir", state),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  // `apply --yes | true`: the reader is gone before the first line is written.
  await child.stdout.cancel();
  const { code, stderr } = await child.output();
  const files = [...Deno.readDirSync(state)].map((e) => e.name).sort();
  assertEquals(
    [
      code,
      new TextDecoder().decode(stderr),
      files,
      [...Deno.readDirSync(`${state}/backups`)].length,
    ],
    [0, "", ["backups", "guard"], 2],
  );
  // The start guard's policies were recorded, as an apply whose output is read records them.
  assertEquals(
    JSON.parse(await Deno.readTextFile(`${state}/guard/policy.json`)).vms,
    { win10: { guard: "warn", rules: {}, uuid: DEMO_WIN10_UUID } },
  );
});

Deno.test({
  name: "apply on a terminal whose standard output is closed asks nothing it cannot show",
  ignore: !hasScript(),
  fn: async () => {
    await using tree = await demoTree();
    const config = new URL("../../demo/passthrough_config.yaml", import.meta.url).pathname;
    const state = `${tree.dir}/state`;
    const apply = applyLine(tree.sysfs, config, state);
    // `passthrough apply 2>/dev/null | true` typed at a terminal: its questions go nowhere (with
    // standard error on the terminal they are asked there), its input stays open (the terminal),
    // and no answer comes.
    const line = `${apply} 2>/dev/null | true; echo "status \${PIPESTATUS[0]}"`;
    const child = inScript(`bash -c ${quote(line)}`, "piped", AbortSignal.timeout(20_000));
    const { code, stdout } = await child.output();
    const screen = new TextDecoder().decode(stdout);
    assertEquals(code, 0, screen);
    assertMatch(screen, /status 0/);
    // Nothing was applied: no backup was taken.
    const backups = [...Deno.readDirSync(`${state}/backups`)];
    assertEquals(backups, []);
  },
});

Deno.test({
  name: "apply at a terminal with its standard output in a file asks on standard error",
  ignore: !hasScript(),
  fn: async () => {
    await using tree = await demoTree();
    const config = new URL("../../demo/passthrough_config.yaml", import.meta.url).pathname;
    const log = `${tree.dir}/apply.log`;
    const apply = applyLine(tree.sysfs, config, `${tree.dir}/state`);
    // `passthrough apply > apply.log` typed at a terminal: its questions went to the file, and it
    // waited for answers to questions nobody saw.
    const screen = await onTerminal(`${apply} > ${quote(log)}; echo "status $?"`, [
      [/Apply the changes to "win10"\? \[y\/N\/a\/q\] $/, "y\n"],
      [/Apply the changes to "gentoo"\? \[y\/N\/a\/q\] $/, "n\n"],
    ]);
    assertMatch(screen, /status 0/);
    const written = await Deno.readTextFile(log);
    assertMatch(written, /changed win10/);
    assertMatch(written, /skipped gentoo: Declined/);
    assertEquals(/Apply the changes/.test(written), false, written);
  },
});

Deno.test({
  name: "apply whose terminal hangs up at a question still records the guard's policies",
  ignore: !hasScript(),
  fn: async () => {
    await using tree = await demoTree();
    const config = `${tree.dir}/c.yaml`;
    await Deno.writeTextFile(
      config,
      (await Deno.readTextFile(new URL("../../demo/passthrough_config.yaml", import.meta.url)))
        .replace("  win10:\n", "  win10:\n    guard: warn\n"),
    );
    const state = `${tree.dir}/state`;
    const child = inScript(applyLine(tree.sysfs, config, state), "null");
    const writer = child.stdin.getWriter();
    let screen = "";
    const decoder = new TextDecoder();
    for await (const chunk of child.stdout) {
      screen += decoder.decode(chunk, { stream: true });
      if (/Apply the changes to "win10"\? \[y\/N\/a\/q\] $/.test(screen)) {
        await writer.write(new TextEncoder().encode("y\n"));
      }
      if (/Apply the changes to "gentoo"\? \[y\/N\/a\/q\] $/.test(screen)) break;
    }
    // The terminal closes (an SSH session dropped): `script` goes, and its terminal with it.
    child.kill("SIGKILL");
    await child.status;
    await writer.close().catch(() => {});
    const policy = `${state}/guard/policy.json`;
    const lock = () => [...Deno.readDirSync(state)].some((e) => e.name.endsWith(".lock"));
    for (let i = 0; i < 200 && (lock() || !pathExists(policy)); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // Its questions' hung-up terminal failed the report's write, which ended the run before the
    // guard's policies were recorded.
    assertEquals(pathExists(policy), true, "policies recorded");
    assertEquals(
      JSON.parse(await Deno.readTextFile(policy)).vms,
      { win10: { guard: "warn", rules: {}, uuid: DEMO_WIN10_UUID } },
    );
    assertEquals(lock(), false, "lock released");
    assertEquals([...Deno.readDirSync(`${state}/backups`)].map((e) => e.name), ["win10"]);
  },
});

/** Runs `line` in bash on a pseudo-terminal, typing each answer once its question shows. */
async function onTerminal(line: string, answers: [RegExp, string][]): Promise<string> {
  const child = inScript(`bash -c ${quote(line)}`, "null", AbortSignal.timeout(20_000));
  const writer = child.stdin.getWriter();
  let screen = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    screen += decoder.decode(chunk, { stream: true });
    if (answers.length > 0 && answers[0]![0].test(screen)) {
      await writer.write(new TextEncoder().encode(answers.shift()![1]));
    }
    if (/status \d+/.test(screen)) break;
  }
  await writer.close().catch(() => {});
  await child.status;
  return screen.replaceAll("\r", "");
}

Deno.test({
  name:
    "apply and rollback at a terminal with standard output in a file show each diff above its question",
  ignore: !hasScript(),
  fn: async () => {
    await using tree = await demoTree();
    const demoWorld = new URL("../../demo/world.xml", import.meta.url).pathname;
    const config = new URL("../../demo/passthrough_config.yaml", import.meta.url).pathname;
    // A copy, read afresh at each connection: rollback restores only backups taken through the
    // libvirt it connects to, so both run over this one.
    const world = `${tree.dir}/world.xml`;
    await Deno.copyFile(demoWorld, world);
    const run = (args: string[], out: string) =>
      [Deno.execPath(), "run", "--quiet", ...documentedFlags(), MAIN, ...args]
        .concat("--state-dir", `${tree.dir}/state`).map(quote).join(" ") +
      ` > ${quote(`${tree.dir}/${out}`)}; echo "status $?"`;
    const apply = await onTerminal(
      run(
        ["apply", "--config", config, "--sysfs", tree.sysfs, "--connect", `test://${world}`],
        "a",
      ),
      [[/"win10"\? \[y\/N\/a\/q\] $/, "y\n"], [/"gentoo"\? \[y\/N\/a\/q\] $/, "n\n"]],
    );
    assertMatch(apply, /status 0/);
    // The plan went to the file: the questions alone were asked, each VM's diff unseen.
    assertMatch(
      apply,
      /--- win10 \(current\)\n[^]*<address domain='0x0000' bus='0x21'[^]*Apply the changes to "win10"\?/,
    );
    assertMatch(apply, /\n\s+--- gentoo \(current\)\n[^]*Apply the changes to "gentoo"\?/);
    assertMatch(await Deno.readTextFile(`${tree.dir}/a`), /--- win10 \(current\)/);

    // win10 now as another client left it: its backup (the demo's) differs by the description.
    await Deno.writeTextFile(
      world,
      (await Deno.readTextFile(demoWorld)).replace("the GTX 1080 goes here", "edited since"),
    );
    const rollback = await onTerminal(
      run(["rollback", "win10", "--connect", `test://${world}`], "r"),
      [[/Restore "win10" from this backup\? \[y\/N\] $/, "n\n"]],
    );
    assertMatch(rollback, /status 0/);
    assertMatch(rollback, /edited since[^]*the GTX 1080 goes here[^]*Restore "win10" from this/);
    assertMatch(await Deno.readTextFile(`${tree.dir}/r`), /edited since/);
  },
});
