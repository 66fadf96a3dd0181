/**
 * A libvirt URI must not run a program: libvirt's `ext` transport runs its `command`, and
 * `command=` / `netcat=` name the programs the ssh transports run. From `--connect`, a config's
 * `connect:`, `LIBVIRT_DEFAULT_URI` or libvirt.conf (its `uri_default`, an alias), such a URI is
 * refused before libvirt sees it, for every command that opens libvirt, unless
 * `--allow-uri-programs`; the library refuses it too. A
 * test-driver URI naming a FIFO or a directory is refused before libvirt reads it (and blocks).
 */

import { assertEquals, assertMatch, assertOk, assertThrows } from "../helpers/assert.ts";
import { canUnshareMounts, documentedFlags, MAIN, runCli } from "../helpers/cli.ts";
import { demoTree } from "../helpers/reliability.ts";
import { COMPUTER_DEVICE } from "../helpers/world.ts";
import { Connection } from "../../ffi/connection.ts";
import { UriProgramError, uriProgramReason } from "../../ffi/uri_check.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import { pathExists } from "../../lib/state/paths.ts";

const TEST = "tests/cli/uri_programs_test.ts";

Deno.test("uriProgramReason() finds the program however the URI spells it, and nothing else", () => {
  const runs = [
    "qemu+ext:///system?command=/tmp/x",
    "qemu+ext:///system",
    "QEMU+EXT:///system?command=/tmp/x",
    "qemu+ssh://hv1/system?command=/tmp/x",
    "qemu+ssh://hv1/system?COMMAND=/tmp/x",
    "qemu+ssh://hv1/system?%63ommand=/tmp/x",
    "qemu+ssh://hv1/system?keyfile=/k;command=/tmp/x",
    "qemu+ssh://hv1/system?keyfile=/k;command=/tmp/x&no_tty=1",
    "qemu+ssh://hv1/system?x;command=/tmp/x&no_tty=1",
    "qemu+ssh://hv1/system?no_tty=1&keyfile=/k%23;netcat=/tmp/nc",
    "qemu+ssh://hv1/system?no_tty=1&netcat=/tmp/nc",
    "qemu+libssh2://hv1/system?netcat=/tmp/nc",
    "qemu+tcp://hv1/system?name=qemu%2Bext%3A%2F%2F%2Fsystem%3Fcommand%3D%2Ftmp%2Fx",
  ];
  for (const uri of runs) assertOk(uriProgramReason(uri) !== null, uri);
  const safe = [
    "qemu:///system",
    "qemu+ssh://root@hv1/system",
    "qemu+ssh://hv1/system?keyfile=/root/.ssh/k&no_verify=1&socket=/run/libvirt/s",
    "qemu+libssh://hv1/system?known_hosts=/root/kh&sshauth=privkey",
    "qemu+tls://hv1/system?pkipath=/pki",
    "qemu+unix:///system?socket=/tmp/libvirt-sock",
    "test:///default",
    "test:///tmp/command=x.xml",
    "qemu+tcp://hv1/system?name=qemu:///system",
  ];
  for (const uri of safe) assertEquals(uriProgramReason(uri), null, uri);
  assertEquals(
    uriProgramReason("qemu+ssh://hv1/system?netcat=/tmp/nc"),
    `its "netcat" parameter names the program libvirt runs on the remote host ("/tmp/nc")`,
  );
  // The program named is the one libvirt runs: the last of its name, split as libvirt splits.
  assertEquals(
    uriProgramReason("qemu+ext:///system?command=/a&COMMAND=/b;x&no_tty=1"),
    `its "ext" transport runs the program its "command" parameter names ("/b;x")`,
  );
  assertEquals(
    uriProgramReason("qemu+ssh://hv1/system?netcat=/a;netcat=/b&no_tty=1"),
    `its "netcat" parameter names the program libvirt runs on the remote host ("/a;netcat=/b")`,
  );
});

/** A script that leaves a mark when run, and the mark. */
function planted(dir: string): { script: string; mark: string } {
  const script = `${dir}/tunnel.sh`;
  const mark = `${dir}/RAN`;
  Deno.writeTextFileSync(script, `#!/bin/sh\ntouch '${mark}'\nexit 1\n`, { mode: 0o755 });
  return { script, mark };
}

/** The error `fn` throws (failing when it returns). */
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected an error");
}

Deno.test("Connection.open() refuses a URI that runs a program, given or from LIBVIRT_DEFAULT_URI", async () => {
  await using tree = await demoTree();
  const { script, mark } = planted(tree.dir);
  const uri = `test+ext:///default?command=${script}`;
  const error = thrown(() => Connection.open(uri, { readOnly: true }));
  assertOk(error instanceof UriProgramError, String(error));
  assertMatch(error.message, /Refusing libvirt URI ".*": its "ext" transport runs the program/);
  const previous = Deno.env.get("LIBVIRT_DEFAULT_URI");
  Deno.env.set("LIBVIRT_DEFAULT_URI", uri);
  try {
    const fromEnv = thrown(() => Connection.open(null));
    assertOk(fromEnv instanceof UriProgramError, String(fromEnv));
    assertMatch(fromEnv.message, /\(LIBVIRT_DEFAULT_URI\)/);
  } finally {
    if (previous === undefined) Deno.env.delete("LIBVIRT_DEFAULT_URI");
    else Deno.env.set("LIBVIRT_DEFAULT_URI", previous);
  }
  assertOk(!pathExists(mark), "the program ran");
  // Allowed explicitly, libvirt does run it: the refusal is what kept it from running.
  assertThrows(() => Connection.open(uri, { readOnly: true, allowUriPrograms: true }));
  assertOk(pathExists(mark), "allowed, the program runs");
});

Deno.test("Connection.open(\"\") is libvirt's default URI, so LIBVIRT_DEFAULT_URI's program is refused", async () => {
  // libvirt opens an empty name as no name at all: its default, LIBVIRT_DEFAULT_URI first. Taken
  // as a URI of its own, "" ran nothing by itself and so passed unchecked, and libvirt ran the
  // program the environment's URI names.
  await using tree = await demoTree();
  const { script, mark } = planted(tree.dir);
  const previous = Deno.env.get("LIBVIRT_DEFAULT_URI");
  Deno.env.set("LIBVIRT_DEFAULT_URI", `test+ext:///default?command=${script}`);
  try {
    const error = thrown(() => Connection.open(""));
    assertOk(error instanceof UriProgramError, String(error));
    assertMatch(error.message, /\(LIBVIRT_DEFAULT_URI\)/);
  } finally {
    if (previous === undefined) Deno.env.delete("LIBVIRT_DEFAULT_URI");
    else Deno.env.set("LIBVIRT_DEFAULT_URI", previous);
  }
  assertOk(!pathExists(mark), "the program ran");
});

Deno.test("every command that opens libvirt refuses a URI that runs a program", async () => {
  await using tree = await demoTree();
  const { script, mark } = planted(tree.dir);
  const uri = `qemu+ext:///system?command=${script}`;
  const config = `${tree.dir}/c.yaml`;
  Deno.writeTextFileSync(config, "version: 1\nvms:\n  vm1: { devices: [] }\n");
  const fleet = `${tree.dir}/fleet.yaml`;
  Deno.writeTextFileSync(
    fleet,
    `version: 1\nhosts:\n  hv1: { connect: ${JSON.stringify(uri)}, sysfs: sysfs }\n` +
      "vms:\n  vm1: { devices: [] }\n",
  );
  const state = `${tree.dir}/state`;
  const runs: [string, string[], Record<string, string>?][] = [
    ["plan -c", ["plan", "-f", config, "--sysfs", tree.sysfs, "-c", uri]],
    ["plan, hosts.hv1.connect", ["plan", "-f", fleet, "--host", "hv1"]],
    ["plan, LIBVIRT_DEFAULT_URI", ["plan", "-f", config, "--sysfs", tree.sysfs], {
      LIBVIRT_DEFAULT_URI: uri,
    }],
    ["apply -c", [
      "apply",
      "--yes",
      "-f",
      config,
      "--sysfs",
      tree.sysfs,
      "--state-dir",
      state,
      "-c",
      uri,
    ]],
    ["rollback -c", ["rollback", "vm1", "--yes", "--state-dir", state, "-c", uri]],
    ["sources -c", ["sources", "--sysfs", tree.sysfs, "-c", uri]],
    ["doctor -c", ["doctor", "--sysfs", tree.sysfs, "-c", uri]],
  ];
  for (const [label, args, env] of runs) {
    const run = await runCli(args, env === undefined ? {} : { env });
    assertEquals(run.code, 1, `${label}: ${run.stdout}${run.stderr}`);
    assertMatch(
      run.stdout + run.stderr,
      /Refusing libvirt URI "qemu\+ext:\/\/\/system\?command=[^"]*" \([^)]*\): its "ext" transport runs the program its "command" parameter names/,
      label,
    );
    assertMatch(run.stdout + run.stderr, /--allow-uri-programs/, label);
    assertOk(!pathExists(mark), `${label} ran the program`);
  }
  const located = await runCli(["plan", "-f", fleet, "--host", "hv1"]);
  assertMatch(
    located.stderr,
    /\(hosts\.hv1\.connect in .*fleet\.yaml, section declared at .*fleet\.yaml:3:3\)/,
  );
  const fromEnv = await runCli(["plan", "-f", config, "--sysfs", tree.sysfs], {
    env: { LIBVIRT_DEFAULT_URI: uri },
  });
  assertMatch(fromEnv.stderr, /\(LIBVIRT_DEFAULT_URI\)/);

  // With the flag the URI is opened as given: libvirt runs the program (which fails here).
  const allowed = await runCli([
    "plan",
    "-f",
    config,
    "--sysfs",
    tree.sysfs,
    "-c",
    uri,
    "--allow-uri-programs",
  ]);
  assertEquals(allowed.code, 1);
  assertOk(pathExists(mark), "--allow-uri-programs let libvirt run it");
  recordCase({
    area: "security",
    name: "libvirt URI running a program (+ext, command=, netcat=) from -c, connect:, env",
    count: runs.length,
    outcome: "refused before libvirt sees it, nothing run",
    test: TEST,
  });
});

Deno.test({
  name: "a URI that runs a program is refused when libvirt.conf names it (uri_default, an alias)",
  ignore: !canUnshareMounts(),
  async fn() {
    await using tree = await demoTree();
    const { script, mark } = planted(tree.dir);
    const uri = `qemu+ext:///system?command=${script}`;
    const conf = `${tree.dir}/libvirt.conf`;
    // Settings before them that libvirt reads past: a number signed `+`, a list of numbers, a
    // comment ended by a carriage return.
    Deno.writeTextFileSync(
      conf,
      `max_x = +1\nx = [ 1, 2 ] # lab\ruri_aliases = [ "lab=${uri}" ]\n# default\ruri_default = "${uri}"\n`,
    );
    // Root's libvirt.conf, as libvirt reads it, replaced in the run's own mount namespace.
    const wrap = [
      "unshare",
      "-m",
      "--propagation",
      "private",
      "sh",
      "-c",
      `mount --bind '${conf}' /etc/libvirt/libvirt.conf && exec "$@"`,
      "sh",
    ];
    const config = `${tree.dir}/c.yaml`;
    Deno.writeTextFileSync(config, "version: 1\nvms:\n  vm1: { devices: [] }\n");
    const runs: [string, string[], RegExp, Record<string, string>?][] = [
      [
        "sources -c lab",
        ["sources", "--sysfs", tree.sysfs, "-c", "lab"],
        /the alias "lab" of --connect in \/etc\/libvirt\/libvirt\.conf\)/,
      ],
      ["plan, uri_default", ["plan", "-f", config, "--sysfs", tree.sysfs], /uri_default in /],
      ["doctor, LIBVIRT_DEFAULT_URI=lab", ["doctor", "--sysfs", tree.sysfs], /the alias "lab"/, {
        LIBVIRT_DEFAULT_URI: "lab",
      }],
    ];
    for (const [label, args, origin, env] of runs) {
      const run = await runCli(args, { wrap, ...(env === undefined ? {} : { env }) });
      assertEquals(run.code, 1, `${label}: ${run.stdout}${run.stderr}`);
      assertMatch(run.stdout + run.stderr, /Refusing libvirt URI "qemu\+ext:[^"]*" \(/, label);
      assertMatch(run.stdout + run.stderr, origin, label);
      assertMatch(run.stdout + run.stderr, /its "ext" transport runs the program/, label);
      assertOk(!pathExists(mark), `${label} ran the program`);
    }
    const allowed = await runCli(["sources", "--sysfs", tree.sysfs, "--allow-uri-programs"], {
      wrap,
    });
    assertEquals(allowed.code, 1, allowed.stderr);
    assertOk(pathExists(mark), "--allow-uri-programs let libvirt run it");
  },
});

Deno.test({
  name: "a library script refuses libvirt.conf's program URI with --allow-ffi alone",
  ignore: !canUnshareMounts(),
  async fn() {
    // libvirt reads libvirt.conf through C whatever Deno allows: the check must read it so too.
    // It read the file with Deno's own calls and the uid with Deno.uid(), and took a refused
    // permission for no file: docs/PERMISSIONS.md's set for a library script (no --allow-sys=uid)
    // opened the URI and libvirt ran the program.
    const dir = Deno.makeTempDirSync({ prefix: "passthrough-uri-library-" });
    try {
      const { script, mark } = planted(dir);
      Deno.writeTextFileSync(
        `${dir}/libvirt.conf`,
        `uri_default = "qemu+ext:///system?command=${script}"\n`,
      );
      Deno.writeTextFileSync(
        `${dir}/open.ts`,
        `import { openLibvirtPort } from "${
          new URL("../../ffi/mod.ts", import.meta.url).href
        }";\n` +
          `try { openLibvirtPort(null).close(); } catch (e) { console.log((e as Error).name); }\n`,
      );
      const permissionSets = [
        ["--allow-ffi"],
        ["--allow-ffi", "--allow-read", "--allow-sys=hostname"],
      ];
      for (const permissions of permissionSets) {
        const out = await new Deno.Command("unshare", {
          args: [
            ...["-m", "--propagation", "private", "sh", "-c"],
            `mount --bind '${dir}/libvirt.conf' /etc/libvirt/libvirt.conf && exec "$@"`,
            ...["sh", Deno.execPath(), "run", "--quiet", "--no-prompt", ...permissions],
            `${dir}/open.ts`,
          ],
          env: { NO_COLOR: "1" },
          stdout: "piped",
          stderr: "piped",
        }).output();
        const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
        assertEquals(said, "UriProgramError\n", permissions.join(" "));
        assertOk(!pathExists(mark), `${permissions.join(" ")}: libvirt ran the program`);
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("a test-driver URI naming a FIFO or a directory is refused at once, never read", async () => {
  await using tree = await demoTree();
  const fifo = `${tree.dir}/world.fifo`;
  await new Deno.Command("mkfifo", { args: [fifo] }).output();
  const config = `${tree.dir}/c.yaml`;
  Deno.writeTextFileSync(config, "version: 1\nvms:\n  vm1: { devices: [] }\n");
  const state = `${tree.dir}/state`;
  for (
    const [path, shown] of [[fifo, fifo], [`${tree.dir}/world%2efifo`, fifo], [tree.dir, tree.dir]]
  ) {
    const uri = `test://${path}`;
    const runs: [string[], Record<string, string>][] = [
      [["plan", "-f", config, "--sysfs", tree.sysfs, "-c", uri], {}],
      [["plan", "-f", config, "--sysfs", tree.sysfs], { LIBVIRT_DEFAULT_URI: uri }],
      [
        ["apply", "--yes", "-f", config, "--sysfs", tree.sysfs, "--state-dir", state, "-c", uri],
        {},
      ],
      [["rollback", "vm1", "--yes", "--state-dir", state, "-c", uri], {}],
      [["sources", "--sysfs", tree.sysfs, "-c", uri], {}],
      [["doctor", "--sysfs", tree.sysfs, "-c", uri], {}],
    ];
    for (const [args, env] of runs) {
      // libvirt blocks on a FIFO until a writer comes: a run cut short by the timeout fails.
      const run = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--quiet", ...documentedFlags(), MAIN, ...args],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1", ...env },
        signal: AbortSignal.timeout(20_000),
      }).output();
      const stderr = new TextDecoder().decode(run.stderr);
      assertEquals(run.code, 1, `${args.join(" ")}: ${stderr}`);
      assertMatch(
        stderr,
        new RegExp(`its test driver would read "${shown}", which is not a regular file`),
        args.join(" "),
      );
    }
  }
});

Deno.test("openLibvirtPort() refuses a test-driver URI naming a FIFO or a directory at once", async () => {
  // The CLI checked it before opening; a library script opened it, and libvirt waited on the
  // FIFO for a writer forever. Run with --allow-ffi alone: the check needs no read permission.
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-uri-fifo-" });
  try {
    const fifo = `${dir}/world.fifo`;
    await new Deno.Command("mkfifo", { args: [fifo] }).output();
    const script = `${dir}/open.ts`;
    Deno.writeTextFileSync(
      script,
      `import { openLibvirtPort } from "${new URL("../../ffi/mod.ts", import.meta.url).href}";\n` +
        `try { openLibvirtPort(Deno.args[0]!).close(); console.log("opened"); }\n` +
        `catch (e) { console.log((e as Error).message); }\n`,
    );
    for (const path of [fifo, dir]) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--quiet", "--no-prompt", "--allow-ffi", script, `test://${path}`],
        env: { NO_COLOR: "1" },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(20_000),
      }).output();
      const said = new TextDecoder().decode(out.stdout);
      assertEquals(new TextDecoder().decode(out.stderr), "", path);
      assertMatch(
        said,
        new RegExp(
          `^Cannot use libvirt URI "test://${path}": its test driver would read "${path}", which is not a regular file`,
        ),
      );
    }
    // A world file opens, with --allow-ffi alone.
    const world = new URL("../../demo/world.xml", import.meta.url).pathname;
    const opened = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--no-prompt", "--allow-ffi", script, `test://${world}`],
      stdout: "piped",
    }).output();
    assertEquals(new TextDecoder().decode(opened.stdout), "opened\n");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a test-driver URI naming a FIFO by a byte no UTF-8 spells (%FF) is refused at once", async () => {
  // libvirt unescapes the path byte by byte; read as UTF-8 text, "%FF" was no path at all, so
  // the check let it through and libvirt waited on the FIFO for a writer forever (the test
  // driver has no --libvirt-timeout).
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-uri-fifo-byte-" });
  try {
    await new Deno.Command("sh", {
      args: ["-c", `mkfifo "$1/$(printf '\\377').fifo"`, "sh", dir],
    }).output();
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { openLibvirtPort } from "${
          new URL("../../ffi/mod.ts", import.meta.url).href
        }";\n` +
        `try { openLibvirtPort(Deno.args[0]).close(); console.log("opened"); }\n` +
        `catch (e) { console.log(e.message); }\n`,
        `test://${dir}/%FF.fifo`,
      ],
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(20_000),
    }).output();
    assertEquals(out.success, true, new TextDecoder().decode(out.stderr));
    assertMatch(
      new TextDecoder().decode(out.stdout),
      /its test driver would read ".*\.fifo", which is not a regular file/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a test-driver world naming a FIFO in a file attribute is refused at once, never read", async () => {
  // libvirt's test driver reads the file a world's <domain file='...'/> (or network, interface,
  // pool, volume, device) names as it opens the world: a FIFO there waited for a writer forever,
  // with no --libvirt-timeout over the test driver. Disk sources inside a domain are not read.
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-uri-world-fifo-" });
  try {
    await new Deno.Command("mkfifo", { args: [`${dir}/vm.fifo`] }).output();
    const world = (inner: string) => `<node>\n  ${COMPUTER_DEVICE}\n  ${inner}\n</node>\n`;
    Deno.writeTextFileSync(`${dir}/fifo.xml`, world(`<domain file='vm.fifo'/>`));
    Deno.writeTextFileSync(
      `${dir}/disk.xml`,
      world(
        `<domain type='test'><name>vm</name><memory>1024</memory><os><type>hvm</type></os>` +
          `<devices><disk type='file'><source file='${dir}/vm.fifo'/>` +
          `<target dev='vda'/></disk></devices></domain>`,
      ),
    );
    const open = async (file: string) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "eval",
          `import { openLibvirtPort } from "${
            new URL("../../ffi/mod.ts", import.meta.url).href
          }";\n` +
          `try { openLibvirtPort(Deno.args[0]).close(); console.log("opened"); }\n` +
          `catch (e) { console.log(e.message); }\n`,
          `test://${dir}/${file}`,
        ],
        env: { NO_COLOR: "1" },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(20_000),
      }).output();
      assertEquals(out.success, true, new TextDecoder().decode(out.stderr));
      return new TextDecoder().decode(out.stdout);
    };
    assertMatch(
      await open("fifo.xml"),
      new RegExp(`its test driver would read "${dir}/vm.fifo", which is not a regular file`),
    );
    assertEquals(await open("disk.xml"), "opened\n");
    // Spellings libxml2 reads as that same file, which a text scan missed.
    const utf16 = (text: string) =>
      new Uint8Array([0xff, 0xfe, ...[...text].flatMap((c) => [c.charCodeAt(0), 0])]);
    const spellings: [string, string | Uint8Array][] = [
      ["gt.xml", world(`<domain note='a>b' file='vm.fifo'/>`)],
      ["charref.xml", world(`<domain file='vm.&#102;i&#x66;o'/>`)],
      ["entity.xml", `<!DOCTYPE node [<!ENTITY f "vm.fifo">]>\n${world(`<domain file='&f;'/>`)}`],
      [
        "utf16.xml",
        utf16(`<?xml version="1.0" encoding="UTF-16"?>\n${world(`<pool file='vm.fifo'/>`)}`),
      ],
    ];
    for (const [file, text] of spellings) {
      if (typeof text === "string") Deno.writeTextFileSync(`${dir}/${file}`, text);
      else Deno.writeFileSync(`${dir}/${file}`, text);
      assertMatch(
        await open(file),
        new RegExp(`its test driver would read "${dir}/vm.fifo", which is not a regular file`),
        file,
      );
    }
    // A commented-out element is no file libvirt reads.
    Deno.writeTextFileSync(`${dir}/comment.xml`, world(`<!-- <domain file='vm.fifo'/> -->`));
    assertEquals(await open("comment.xml"), "opened\n");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({
  name: "openLibvirtPort() refuses a FIFO that libvirt.conf's uri_default or an alias names",
  ignore: !canUnshareMounts(),
  async fn() {
    // Only the URI given was looked at: the one libvirt.conf makes of it was opened, and libvirt
    // waited on the FIFO for a writer forever.
    const dir = Deno.makeTempDirSync({ prefix: "passthrough-uri-conf-fifo-" });
    try {
      const fifo = `${dir}/world.fifo`;
      await new Deno.Command("mkfifo", { args: [fifo] }).output();
      Deno.writeTextFileSync(
        `${dir}/libvirt.conf`,
        `uri_aliases = [ "lab=test://${fifo}" ]\nuri_default = "test://${fifo}"\n`,
      );
      const script = `${dir}/open.ts`;
      Deno.writeTextFileSync(
        script,
        `import { openLibvirtPort } from "${
          new URL("../../ffi/mod.ts", import.meta.url).href
        }";\n` +
          `try { openLibvirtPort(Deno.args[0] ?? null).close(); console.log("opened"); }\n` +
          `catch (e) { console.log((e as Error).message); }\n`,
      );
      const runs: [string | null, string][] = [
        [null, "uri_default in"],
        ["lab", `the alias "lab" in`],
      ];
      for (const [name, origin] of runs) {
        const out = await new Deno.Command("unshare", {
          args: [
            ...["-m", "--propagation", "private", "sh", "-c"],
            `mount --bind '${dir}/libvirt.conf' /etc/libvirt/libvirt.conf && exec "$@"`,
            ...["sh", Deno.execPath(), "run", "--quiet", "--no-prompt", "--allow-ffi", script],
            ...(name === null ? [] : [name]),
          ],
          env: { NO_COLOR: "1" },
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
          signal: AbortSignal.timeout(20_000),
        }).output();
        assertEquals(
          new TextDecoder().decode(out.stdout),
          `Cannot use libvirt URI "test://${fifo}" (${origin} /etc/libvirt/libvirt.conf): ` +
            `its test driver would read "${fifo}", which is not a regular file; name a world XML file\n`,
          String(name),
        );
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
