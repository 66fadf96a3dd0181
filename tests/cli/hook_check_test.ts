/**
 * The check's own entry (`cli/hook_check.ts`), what the installed hook runs at `prepare begin`:
 * its arguments, which fail closed (exit 2) when they are not the hook's, and what it reads as
 * the live host.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { canUnshareMounts, runCli, runHook, runInPrivateMounts } from "../helpers/cli.ts";
import {
  liveDefaultRouteNic,
  livePciMissing,
  loadFixtureHost,
  tempHostTree,
} from "../helpers/hosts.ts";
import { parseHookCheckArgs } from "../../cli/hook_check.ts";
import { MAX_XML_BYTES } from "../../lib/guard/run.ts";
import { hostdevXml } from "../helpers/plan_world.ts";
import { ALLOWANCE_LIFETIME_MS, allowNextStart } from "../../lib/guard/state.ts";
import { UNSAFE_ON_TERMINAL } from "../../lib/render/terminal.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { planHostdevs } from "../../lib/plan/plan.ts";
import { openLibvirtPort } from "../../ffi/port.ts";

const CHECK = new URL("../../cli/hook_check.ts", import.meta.url).pathname;
const HOOK_ARGS = ["--", "vm", "prepare", "begin", "-"];

/** Runs the check's entry as the hook does (`--allow-all`), `stdin` as the domain XML. */
function runCheck(args: string[], stdin?: string) {
  return runCli(args, {
    main: CHECK,
    flags: ["--allow-all"],
    ...(stdin === undefined ? {} : { stdin }),
  });
}

Deno.test("parseHookCheckArgs() takes --state-dir and --sysfs only, each with a value, and three hook arguments", () => {
  assertEquals(parseHookCheckArgs(["--state-dir", "/s", "--sysfs", "/t", ...HOOK_ARGS]), {
    stateDir: "/s",
    sysfs: "/t",
    vm: "vm",
    operation: "prepare",
    subOperation: "begin",
  });
  const cases: [string[], string][] = [
    [["--state-dir", "/s", "--root", "/t", ...HOOK_ARGS], 'Unexpected argument "--root"'],
    [["--state-dir", "/s", "--sysfs"], 'Unexpected argument "--sysfs"'],
    [["--sysfs", "/t", ...HOOK_ARGS], "Missing --state-dir DIR"],
    [
      ["--state-dir", "/s", "--", "vm", "prepare"],
      "Missing the hook's arguments after --: VM OPERATION SUB-OPERATION",
    ],
  ];
  for (const [args, error] of cases) assertEquals(parseHookCheckArgs(args), error, args.join(" "));
});

Deno.test("the check's entry stops the start (exit 2) on arguments that are not the hook's", async () => {
  const run = await runCheck(["--state-dir", "/nonexistent", "--sysfs"]);
  assertEquals([run.code, run.stdout], [2, ""]);
  assertEquals(
    run.stderr,
    'passthrough hook run: Unexpected argument "--sysfs": install the hook again, as "passthrough ' +
      'hook status" says (a hook written by another passthrough passes arguments this check does ' +
      "not take)\n",
  );
});

Deno.test({
  name: "the check's entry reads /sys spelled another way as the live host, with its host use",
  ignore: livePciMissing() !== null,
  async fn() {
    const live = liveDefaultRouteNic();
    if (live === null) return;
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-check-" });
    try {
      Deno.symlinkSync("/sys", `${dir}/sys-link`);
      // A hand-added hostdev on the NIC of this host's default route.
      const xml = `<domain type='kvm'><name>vm</name><devices>${live.hostdev}</devices></domain>`;
      for (const sysfs of ["/sys/.", `${dir}/sys-link`]) {
        const run = await runCheck(
          ["--state-dir", `${dir}/state`, "--sysfs", sysfs, ...HOOK_ARGS],
          xml,
        );
        assertEquals([run.code, run.stdout], [1, ""], `${sysfs}: ${run.stderr}`);
        assertMatch(run.stderr, new RegExp(`hostdev ${live.address} .*the host needs it`), sysfs);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("the check's entry refuses a domain XML one byte over its bound, without parsing it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-check-" });
  try {
    const xml = `<domain type='kvm'><name>vm</name>`;
    const run = await runCheck(
      ["--state-dir", `${dir}/state`, "--sysfs", dir, ...HOOK_ARGS],
      xml + " ".repeat(MAX_XML_BYTES + 1 - xml.length),
    );
    assertEquals([run.code, run.stdout], [1, ""]);
    assertMatch(run.stderr, new RegExp(`larger than ${MAX_XML_BYTES} bytes`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the check's entry lets every operation but prepare begin go on, saying nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-check-" });
  try {
    // A tree with no PCI function at all: at prepare begin, the hostdev's address holds nothing.
    Deno.mkdirSync(`${dir}/tree/bus/pci/devices`, { recursive: true });
    const xml = `<domain type='kvm'><name>vm</name><devices>${
      hostdevXml("0000:0b:00.0")
    }</devices></domain>`;
    const run = (operation: string, subOperation: string) =>
      runCheck(
        [
          "--state-dir",
          `${dir}/state`,
          "--sysfs",
          `${dir}/tree`,
          "--",
          "vm",
          operation,
          subOperation,
          "-",
        ],
        xml,
      );
    const refused = await run("prepare", "begin");
    assertEquals(refused.code, 1, refused.stderr);
    // A failure at reconnect would kill running guests; migrate and restore read standard output.
    for (
      const [operation, subOperation] of [
        ["start", "begin"],
        ["reconnect", "begin"],
        ["migrate", "begin"],
        ["restore", "begin"],
        ["release", "end"],
        ["prepare", "end"],
      ]
    ) {
      const other = await run(operation!, subOperation!);
      assertEquals(
        [other.code, other.stdout, other.stderr],
        [0, "", ""],
        `${operation} ${subOperation}`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("every line the check's entry prints names the VM without a terminal's controls", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-check-" });
  try {
    Deno.mkdirSync(`${dir}/tree/bus/pci/devices`, { recursive: true });
    // libvirt takes C1 controls (U+009B starts an escape) and bidi controls in a domain's name,
    // which whoever may define a domain chooses; an expired allowance names the VM again.
    const vm = "vm\u009b31m\u202eevil";
    allowNextStart(`${dir}/state`, vm, {
      uuid: "0f3c1a52-7d4e-4b8a-9c61-2e5f8a9b0c11",
      now: new Date(Date.now() - 2 * ALLOWANCE_LIFETIME_MS),
    });
    const xml = `<domain type='kvm'><name>vm</name><devices>${
      hostdevXml("0000:0b:00.0")
    }</devices></domain>`;
    const run = await runCheck(
      ["--state-dir", `${dir}/state`, "--sysfs", `${dir}/tree`, "--", vm, "prepare", "begin", "-"],
      xml,
    );
    assertEquals([run.code, run.stdout], [1, ""], run.stderr);
    const lines = run.stderr.trimEnd().split("\n");
    assertEquals(lines.length, 2, run.stderr);
    assertMatch(lines[1]!, /^passthrough guard: an allowance for "vm\?31m\?evil" had expired/);
    assertEquals(run.stderr.replace(UNSAFE_ON_TERMINAL, "#").includes("#"), false, run.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a check that throws stops the start in one line, with no stack trace", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-check-" });
  try {
    Deno.mkdirSync(`${dir}/tree/bus/pci/devices`, { recursive: true });
    // Standard input that cannot be read: a directory.
    const out = await new Deno.Command("sh", {
      args: [
        "-c",
        'exec "$@" < /',
        "sh",
        Deno.execPath(),
        "run",
        "--quiet",
        "--allow-all",
        CHECK,
        ...["--state-dir", `${dir}/state`, "--sysfs", `${dir}/tree`, ...HOOK_ARGS],
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals([out.code, out.stdout.length], [1, 0], stderr);
    assertMatch(
      stderr,
      /^passthrough guard: refusing to start "vm": the check failed: Is a directory \(os error 21\)\n$/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * A hook an older passthrough wrote (`tests/fixtures/hooks/NAME.sh`, its paths made placeholders)
 * as it reads after the clone it runs was updated in place: it runs this checkout's check.
 */
function writeOldHook(name: string, dir: string): string {
  const old = Deno.readTextFileSync(new URL(`../fixtures/hooks/${name}.sh`, import.meta.url));
  const checkout = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
  const hook = `${dir}/50-passthrough-guard`;
  Deno.writeTextFileSync(
    hook,
    old.replaceAll("@DENO@", Deno.execPath()).replaceAll("@CHECKOUT@", checkout)
      .replaceAll("@STATE@", `${dir}/state`).replaceAll("@SYSFS@", `${dir}/tree`),
    { mode: 0o755 },
  );
  return hook;
}

/** {@link runHook} with the Deno cache this test uses (hooks that old name none of their own). */
function runOldHook(hook: string, xml: string) {
  const denoDir = Deno.env.get("DENO_DIR");
  return runHook(
    hook,
    ["vm", "prepare", "begin", "-"],
    xml,
    denoDir === undefined ? {} : { DENO_DIR: denoDir },
  );
}

Deno.test("a hook written by the first passthrough with a guard, run after an update, says to install it again", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-check-" });
  try {
    Deno.mkdirSync(`${dir}/tree/bus/pci/devices`, { recursive: true });
    Deno.mkdirSync(`${dir}/state`, { mode: 0o700 });
    // Written by "hook install" at 3db6eb7 (hook format 1): the check may read its state
    // directory alone.
    const hook = writeOldHook("format1_3db6eb7", dir);
    const xml = `<domain type='kvm'><name>vm</name><devices>${
      hostdevXml("0000:0b:00.0")
    }</devices></domain>`;
    const run = await runOldHook(hook, xml);
    assertEquals([run.code, run.stdout], [1, ""], run.stderr);
    assertMatch(
      run.stderr,
      /^passthrough guard: refusing to start "vm": the hook's command does not allow a read: .*; fix: install the hook again, as "passthrough hook status" says: its command lacks a permission the check needs \(a hook written by an older passthrough\)\n$/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a hook written by a passthrough whose check ran its own deadline, run after an update, says to install it again", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-check-" });
  try {
    Deno.mkdirSync(`${dir}/tree/bus/pci/devices`, { recursive: true });
    Deno.mkdirSync(`${dir}/state`, { mode: 0o700 });
    // Written by "hook install" at 170e001: it passes the check --deadline.
    const hook = writeOldHook("format1_170e001", dir);
    const run = await runOldHook(hook, "<domain type='kvm'><name>vm</name></domain>");
    assertEquals([run.code, run.stdout], [1, ""], run.stderr);
    assertEquals(
      run.stderr,
      'passthrough hook run: Unexpected argument "--deadline": install the hook again, as ' +
        '"passthrough hook status" says (a hook written by another passthrough passes arguments ' +
        "this check does not take)\n",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hook run (the check a bundle's or a binary's hook runs) given a hook's old arguments says to install the hook again, as the lean check does", async () => {
  // A hook written at 170e001 for a bundle or a compiled binary ran `hook run ... --deadline 10`:
  // after an update it said only "Unknown option '--deadline'" and the command's help.
  const args = ["--state-dir", "/nonexistent", "--deadline", "10", "--", "vm", "prepare", "begin"];
  const cli = await runCli(["hook", "run", ...args], { stdin: "<domain/>" });
  const lean = await runCheck(args);
  assertEquals([cli.code, lean.code], [2, 2]);
  const hint = ': install the hook again, as "passthrough hook status" says (a hook written by ' +
    "another passthrough passes arguments this check does not take)\n";
  assertEquals(
    cli.stderr.split("\n\n")[0] + "\n",
    `passthrough hook: Unknown option '--deadline'${hint}`,
  );
  assertEquals(lean.stderr, `passthrough hook run: Unexpected argument "--deadline"${hint}`);
});

Deno.test("the check's entry needs no environment, network, program or FFI, and writes only its state directory", async () => {
  // docs/PERMISSIONS.md: the hook runs the check with --allow-all (Deno reads /sys only so), and
  // the check "writes only the state directory, reads no environment, starts no program and opens
  // no connection". On a captured tree it needs no --allow-all: run it with reads, writes to the
  // state directory alone and nothing else, so any other access fails the start it should pass.
  const dir = await Deno.makeTempDir({ prefix: "passthrough-h148-check-perms-" });
  try {
    const description = loadHostDescription(new URL("../../demo/host.json", import.meta.url));
    buildHostTree(description, `${dir}/sysfs`);
    const host = await discoverHost({ root: `${dir}/sysfs` });
    const config = parseConfig(
      Deno.readTextFileSync(new URL("../../demo/passthrough_config.yaml", import.meta.url)),
      { file: "passthrough_config.yaml" },
    );
    const world = new URL("../../demo/world.xml", import.meta.url).pathname;
    let xml: string;
    {
      using libvirt = openLibvirtPort(`test://${world}`);
      const vm = planHostdevs({ config, host, libvirt }).vms.find((v) => v.name === "win10")!;
      assertOk(vm.add.length > 0 && vm.errors.length === 0, "win10 takes devices");
      xml = vm.desiredXml;
    }
    // As applied: the devices recorded, the tree unchanged. Then the GPU moved to bus 0x2a.
    const moved = description.devices.map((d) =>
      d.bdf.startsWith("0000:21:00.") ? { ...d, bdf: d.bdf.replace(":21:", ":2a:") } : d
    );
    buildHostTree({ ...description, devices: moved }, `${dir}/moved`);
    const state = `${dir}/state`;
    Deno.mkdirSync(state, { mode: 0o700 });
    const flags = ["--no-prompt", "--allow-read", `--allow-write=${state}`];
    const run = (sysfs: string, allow: string[]) =>
      runCli(["--state-dir", state, "--sysfs", sysfs, "--", "win10", "prepare", "begin", "-"], {
        main: CHECK,
        flags: allow,
        stdin: xml,
      });
    const ok = await run(`${dir}/sysfs`, flags);
    assertEquals([ok.code, ok.stderr], [0, ""]);
    const refused = await run(`${dir}/moved`, flags);
    assertEquals(refused.code, 1, refused.stderr);
    assertMatch(refused.stderr, /refusing to start "win10"/);
    // The same as with --allow-all, as the hook runs it.
    const all = await run(`${dir}/moved`, ["--allow-all"]);
    assertEquals([all.code, all.stderr], [refused.code, refused.stderr]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a refusal the check cannot record for a full disk says where it is not recorded",
  ignore: !canUnshareMounts(),
  fn: async () => {
    await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
    const dir = await Deno.makeTempDir({ prefix: "passthrough-full-refused-" });
    try {
      const state = `${dir}/state`;
      const refused = `${state}/guard/refused`;
      Deno.mkdirSync(refused, { recursive: true, mode: 0o700 });
      Deno.chmodSync(state, 0o700);
      Deno.chmodSync(`${state}/guard`, 0o700);
      const xml = `${dir}/win11.xml`;
      // What the guard recorded 0000:0b:00.0 as, where the tree now has another device.
      Deno.writeTextFileSync(
        xml,
        `<domain><name>win11</name><uuid>0f3c1a52-7d4e-4b8a-9c61-2e5f8a9b0c11</uuid>
  <metadata><pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">
    <pt:device address="0000:0b:00.0" vendor="10de" device="2684" class="030000" rule="gpu"/>
  </pt:hostdevs></metadata>
  <devices><hostdev mode='subsystem' type='pci' managed='yes'>
    <source><address domain='0x0000' bus='0x0b' slot='0x00' function='0x0'/></source>
  </hostdev></devices></domain>`,
      );
      // The state directory's probe passes; guard/refused/, a full tmpfs, takes no record: the
      // disk filled between the two.
      const out = await runInPrivateMounts(
        `mount -t tmpfs -o size=64k,mode=700 passthrough-test ${refused} && ` +
          `(dd if=/dev/zero of=${refused}/fill bs=4k 2>/dev/null; true) && exec <${xml}`,
        [
          Deno.execPath(),
          "run",
          "--quiet",
          "--allow-all",
          CHECK,
          "--state-dir",
          state,
          "--sysfs",
          tree.dir,
          "--",
          "win11",
          "prepare",
          "begin",
          "-",
        ],
        { NO_COLOR: "1" },
      );
      assertEquals([out.code, out.stdout], [1, ""], out.stderr);
      // It said "cannot record the refusal: No space left on device (os error 28)": no path.
      assertMatch(
        out.stderr,
        new RegExp(
          `\npassthrough guard: cannot record the refusal in "${refused}/win11\\.json": No space left on device \\(os error 28\\)\n$`,
        ),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("the check on a captured tree refuses a link out of it, through both entries, before reading what it leads to", async () => {
  await using tree = await tempHostTree(loadFixtureHost("x570-aorus-pro-wifi"));
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-check-link-" });
  try {
    // What the guard recorded at 0000:0b:00.0, where the tree has a 10de:1b06 now.
    const xml = `<domain><name>vm</name><uuid>0f3c1a52-7d4e-4b8a-9c61-2e5f8a9b0c11</uuid>
  <metadata><pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">
    <pt:device address="0000:0b:00.0" vendor="10de" device="2684" class="030000" rule="gpu"/>
  </pt:hostdevs></metadata>
  <devices><hostdev mode='subsystem' type='pci' managed='yes'>
    <source><address domain='0x0000' bus='0x0b' slot='0x00' function='0x0'/></source>
  </hostdev></devices></domain>`;
    const args = ["--state-dir", `${dir}/state`, "--sysfs", tree.dir, ...HOOK_ARGS];
    const refused = await runCheck(args, xml);
    assertEquals(refused.code, 1, refused.stderr);
    assertMatch(refused.stderr, /holds 10de:1b06 .* now, not the recorded 10de:2684/);
    // The tree's `uevent` of that function made a link to a file outside it, which says 2684.
    const uevent = Deno.realPathSync(`${tree.dir}/bus/pci/devices/0000:0b:00.0/uevent`);
    Deno.writeTextFileSync(
      `${dir}/uevent`,
      Deno.readTextFileSync(uevent).replace(":1B06", ":2684"),
    );
    Deno.removeSync(uevent);
    Deno.symlinkSync(`${dir}/uevent`, uevent);
    const outside = new RegExp(
      `^passthrough guard: refusing to start "vm": the check failed: Refusing to read a tree ` +
        `with a link out of it: ` +
        `"${tree.dir}/bus/pci/devices/0000:0b:00\\.0/uevent" leads to "${dir}/uevent", outside`,
    );
    const lean = await runCheck(args, xml);
    assertEquals([lean.code, lean.stdout], [1, ""], lean.stderr);
    assertMatch(lean.stderr, outside);
    const cli = await runCli(["hook", "run", ...args], { stdin: xml });
    assertEquals([cli.code, cli.stdout], [1, ""], cli.stderr);
    assertMatch(cli.stderr, outside);
    // Not a changed device but a tree not to be read: no allowance lets the start go on.
    allowNextStart(`${dir}/state`, "vm", { uuid: "0f3c1a52-7d4e-4b8a-9c61-2e5f8a9b0c11" });
    assertEquals((await runCheck(args, xml)).code, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
