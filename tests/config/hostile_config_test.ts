/**
 * Hostile and broken configs: each is refused with a located, readable error, and a spawned
 * `apply --yes` with it changes nothing (libvirt definitions on a real daemon and the state
 * directory are byte-identical afterwards).
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";
import {
  ConfigError,
  ConfigErrors,
  loadConfig,
  MAX_CONFIG_BYTES,
  parseConfig,
} from "../../lib/config/config.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { openStateDir } from "../../lib/state/state_dir.ts";
import { writeBackup } from "../../lib/state/backups.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import {
  demoTree,
  gpuConfig,
  qemuDomainXml,
  snapshotDir,
  snapshotDomains,
} from "../helpers/reliability.ts";
import { runCli } from "../helpers/cli.ts";

const TEST = "tests/config/hostile_config_test.ts";
const VM = "pt-hostile-config";
const enc = (text: string) => new TextEncoder().encode(text);

interface HostileConfig {
  name: string;
  bytes: Uint8Array;
  /** What the error must say. */
  error: RegExp;
}

function rule(match: string, extra = ""): Uint8Array {
  return enc(`version: 1\nvms:\n  ${VM}:\n    devices:\n      - match: ${match}\n${extra}`);
}

function hugeConfig(): Uint8Array {
  // About 10 MB of valid-looking VMs: parsing it whole would take minutes.
  const one = `  vm-NNNNNN:\n    devices: [ { match: { vendor_device_id: "10de:1b80" } } ]\n`;
  const count = Math.ceil(10_000_000 / one.length);
  const parts = ["version: 1\nvms:\n"];
  for (let i = 0; i < count; i++) parts.push(one.replace("NNNNNN", String(i).padStart(6, "0")));
  return enc(parts.join(""));
}

const CASES: HostileConfig[] = [
  {
    name: "malformed YAML (unclosed flow mapping)",
    bytes: enc(`version: 1\nvms:\n  ${VM}:\n    devices:\n      - match: { vendor_id: "10de"\n`),
    error: /:6:1: Flow map .* end with a }/,
  },
  {
    name: "tab indentation",
    bytes: enc(`version: 1\nvms:\n\t${VM}: {}\n`),
    error: /:3:1: Tabs are not allowed/,
  },
  {
    name: "wrong type: devices is a string",
    bytes: enc(`version: 1\nvms:\n  ${VM}:\n    devices: gpu\n`),
    error: /:4:\d+: Expected a list.*"vms\.pt-hostile-config\.devices"/,
  },
  {
    name: "wrong type: count is a string",
    bytes: rule(`{ vendor_id: "10de" }`, `        count: two\n`),
    error: /:6:\d+: .*integer.*count/,
  },
  {
    name: "wrong type: match is a list",
    bytes: rule(`[ "10de:1b80" ]`),
    error: /:5:\d+: Expected a mapping, found a list/,
  },
  {
    name: "duplicate VM names",
    bytes: enc(`version: 1\nvms:\n  ${VM}:\n    devices: []\n  ${VM}:\n    devices: []\n`),
    error: /:5:3: Duplicate key/,
  },
  {
    name: "duplicate keys in a match",
    bytes: rule(`{ vendor_id: "10de", vendor_id: "1002" }`),
    error: /:5:\d+: Duplicate key/,
  },
  {
    name: "vendor ID out of range (5 hex digits)",
    bytes: rule(`{ vendor_id: "10000" }`),
    error: /Invalid pci-id "10000"/,
  },
  {
    name: "vendor ID out of range (0x1ffff)",
    bytes: rule(`{ vendor_id: 0x1ffff }`),
    error: /Invalid pci-id "0x1ffff"/,
  },
  {
    name: "PCI address out of range (slot 0x20, function 8)",
    bytes: rule(`{ address: "0000:00:20.8" }`),
    error: /Invalid pci-address "0000:00:20\.8"/,
  },
  {
    name: "count below 1",
    bytes: rule(`{ vendor_id: "10de" }`, `        count: 0\n`),
    error: /Value 0 is too small/,
  },
  {
    name: "integer beyond C int (numa_node 1e20)",
    bytes: rule(`{ numa_node: 100000000000000000000 }`),
    error: /Value 100000000000000000000 is too large: the maximum is 2147483647/,
  },
  {
    name: "boot_order beyond C int",
    bytes: rule(`{ vendor_id: "10de" }`, `        boot_order: 4294967296\n`),
    error: /Value 4294967296 is too large/,
  },
  {
    name: "unsupported version",
    bytes: enc("version: 2\nvms: {}\n"),
    error: /:1:10: Unsupported value 2: expected 1 at "version"/,
  },
  {
    name: "two YAML documents",
    bytes: enc(`version: 1\nvms: {}\n---\nversion: 1\n`),
    error: /:3:1: A second YAML document starts here/,
  },
  {
    name: "empty file",
    bytes: enc(""),
    error: /:1:1: Empty config/,
  },
  {
    // Said "Expected a mapping, found null" at 1:4, the end of the "---".
    name: "a document start line and comments only",
    bytes: enc("---\n# passthrough config: nothing yet\n"),
    error: /:1:1: Empty config/,
  },
  {
    name: "VM name with quote, markup and newline",
    bytes: enc(
      `version: 1\nvms:\n  "a'<b>&\\n": { devices: [ { match: { vendor_id: "10de" } } ] }\n`,
    ),
    error: /:3:3: Invalid name/,
  },
  {
    name: "empty ROM file (libvirt refuses it only at define)",
    bytes: rule(`{ vendor_id: "10de" }`, `        rom: { file: "" }\n`),
    error: /:6:22: Invalid absolute-path "" at "vms\.pt-hostile-config\.devices\[0\]\.rom\.file"/,
  },
  {
    name: "relative ROM file",
    bytes: rule(`{ vendor_id: "10de" }`, `        rom: { file: gpu.rom }\n`),
    error: /:6:22: Invalid absolute-path "gpu\.rom" .*expected an absolute path/,
  },
  {
    // Written into the domain's <metadata>: libvirt refused the define (after a backup was
    // written), and its error quoted the whole definition.
    name: "NUL in a rule name (XML cannot hold it)",
    bytes: rule(`{ vendor_id: "10de" }`, `        name: "g\\0pu"\n`),
    // The library's message holds the NUL (the dot), the CLI's its escape.
    error:
      /:6:15: Invalid character U\+0000 in "g(.|\\u0000)pu" at "vms\.pt-hostile-config\.devices\[0\]\.name"/,
  },
  {
    name: "U+FFFF in a rule name (XML cannot hold it)",
    bytes: rule(`{ vendor_id: "10de" }`, `        name: "gpu\\uFFFF"\n`),
    error: /:6:15: Invalid character U\+FFFF in "gpu\uFFFF" at /,
  },
  {
    // A NUL stopped plan with Deno's "file name contained an unexpected NUL byte: stat ...".
    name: "control character in a ROM file (XML cannot hold it)",
    bytes: rule(`{ vendor_id: "10de" }`, `        rom: { file: "/usr/share/vgabios/\\x01.rom" }\n`),
    error:
      /:6:22: Invalid character U\+0001 in .* at "vms\.pt-hostile-config\.devices\[0\]\.rom\.file"/,
  },
  {
    name: "alias bomb (9^4 nested aliases)",
    bytes: enc(
      [
        "version: 1",
        `a0: &a0 [${Array(9).fill(`{ match: { vendor_id: "10de" } }`).join(",")}]`,
        ...[1, 2, 3, 4].map((i) => `a${i}: &a${i} [${Array(9).fill(`*a${i - 1}`).join(",")}]`),
        `vms:\n  ${VM}:\n    devices: *a4`,
        "",
      ].join("\n"),
    ),
    error: /:3:10: Aliases expand into too many copies/,
  },
  {
    name: "flow collections nested 30,000 deep",
    bytes: enc(`version: 1\nvms: ${"[".repeat(30_000)}${"]".repeat(30_000)}\n`),
    error: /:2:\d+: Nesting too deep/,
  },
  {
    name: "non-UTF-8 bytes in a VM name",
    bytes: new Uint8Array([...enc(`version: 1\nvms:\n  pt`), 0xff, 0xfe, ...enc(`: {}\n`)]),
    error: /:3:5: Invalid UTF-8 at byte 20 \(save the file as UTF-8\)/,
  },
  {
    // Crashed plan and apply with "Cannot read properties of undefined (reading 'normalize')".
    name: "a host list item that is no name (hosts: [hv1, {}])",
    bytes: enc(
      `version: 1\nhosts:\n  hv1: {}\nvms:\n  ${VM}:\n    hosts: [hv1, {}]\n    devices: []\n`,
    ),
    error: /:6:18: Expected a string, found a mapping at "vms\.pt-hostile-config\.hosts\[1\]"/,
  },
  {
    // The second merge key was ignored: rule "b" matched device 1234, not 5678.
    name: "two merge keys in one mapping",
    bytes: enc(
      `version: 1\nvms:\n  ${VM}:\n    devices:\n` +
        `      - name: a\n        match: &m { vendor_id: "8086", device_id: "1234" }\n` +
        `      - name: b\n        match:\n          <<: *m\n          <<: { device_id: "5678" }\n`,
    ),
    error: /:10:11: Duplicate merge key \("<<"\): a mapping takes one \(merge a list instead/,
  },
  {
    name: "YAML 1.1 boolean (managed: no)",
    bytes: rule(`{ vendor_id: "10de" }`, `        managed: no\n`),
    error: /:6:18: Expected true or false, found the string "no" .*\(write false: YAML 1\.2 reads/,
  },
  {
    name: "rule name over two lines",
    bytes: rule(`{ vendor_id: "10de" }`, `        name: "gtx\\n1080"\n`),
    error: /:6:15: Invalid name "gtx\\n1080" at "vms\.pt-hostile-config\.devices\[0\]\.name"/,
  },
  {
    name: "100 KB config",
    bytes: enc(`version: 1\nvms: {}\n${"#".repeat(100_000)}\n`),
    error: new RegExp(`:1:1: File too large: \\d+ bytes, the limit is ${MAX_CONFIG_BYTES}`),
  },
  {
    name: "10 MB config",
    bytes: hugeConfig(),
    error: new RegExp(`:1:1: File too large: \\d+ bytes, the limit is ${MAX_CONFIG_BYTES}`),
  },
];

Deno.test("loadConfig() refuses every hostile config with a located error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hostile-config-" });
  try {
    for (const c of CASES) {
      const path = `${dir}/config.yaml`;
      await Deno.writeFile(path, c.bytes);
      let caught: unknown = null;
      try {
        await loadConfig(path);
      } catch (error) {
        caught = error;
      }
      assertOk(caught instanceof ConfigErrors, `${c.name}: ${caught}`);
      assertMatch(caught.message, c.error, c.name);
      for (const e of caught.errors) {
        assertOk(e instanceof ConfigError, c.name);
        assertOk(e.line >= 1 && e.column >= 1, c.name);
        assertEquals(e.file, path);
      }
      recordCase({
        area: "config",
        name: c.name,
        count: 1,
        outcome: "clear error with file:line:col",
        test: TEST,
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * Awkward but valid spellings of {@link gpuConfig}: each must read as exactly that config, rule
 * locations aside (the lines differ).
 */
const AWKWARD: { name: string; text: string }[] = [
  {
    name: "byte order mark and CRLF line ends",
    text: `\ufeff${gpuConfig(VM)}`.replaceAll("\n", "\r\n"),
  },
  { name: "CR-only line ends (classic Mac OS)", text: gpuConfig(VM).replaceAll("\n", "\r") },
  { name: "a --- line before and a ... line after", text: `---\n${gpuConfig(VM)}...\n` },
  { name: "%YAML 1.2 directive", text: `%YAML 1.2\n---\n${gpuConfig(VM)}` },
  {
    name: "all in flow style, one line",
    text:
      `{version: 1, vms: {${VM}: {devices: [{name: gpu, match: {vendor_device_id: 10de:1b80}}]}}}\n`,
  },
  {
    name: "JSON",
    text: JSON.stringify({
      version: 1,
      vms: { [VM]: { devices: [{ name: "gpu", match: { vendor_device_id: "10de:1b80" } }] } },
    }),
  },
  {
    name: "hex numbers (0x10de, 0x1B80)",
    text:
      `version: 1\nvms:\n  ${VM}:\n    devices:\n      - name: gpu\n        match: { vendor_id: 0x10de, device_id: 0x1B80 }\n`,
  },
  {
    name: "tab after a colon, comment after a tab",
    text:
      `version:\t1\nvms:\n  ${VM}:\n    devices:\n      - name:\tgpu\t# the GTX\n        match: { vendor_device_id: "10de:1b80" }\n`,
  },
  {
    name: "merge key from an anchored rule (<<: *base)",
    text:
      `version: 1\nvms:\n  ${VM}:\n    devices:\n      - <<: &base { name: gpu, managed: true }\n        match: { vendor_device_id: "10de:1b80" }\n`,
  },
  {
    // YAML 1.1 reads yes as true, and 1b80 stays text; 0x10de is hex under both.
    name: "%YAML 1.1 document with managed: yes",
    text: `%YAML 1.1\n---\nversion: 1\nvms:\n  ${VM}:\n    devices:\n      - name: gpu\n` +
      `        match: { vendor_id: 0x10de, device_id: 1b80 }\n        managed: yes\n`,
  },
  {
    name: "rule name as a block scalar (name: |)",
    text:
      `version: 1\nvms:\n  ${VM}:\n    devices:\n      - name: |\n          gpu\n        match: { vendor_device_id: "10de:1b80" }\n`,
  },
];

Deno.test("parseConfig() reads awkward but valid YAML as the config it spells", () => {
  const plain = (text: string) =>
    parseConfig(text, { file: "c.yaml" }).vms.map((vm) => ({
      ...vm,
      location: "",
      rules: vm.rules.map((r) => ({ ...r, location: "" })),
    }));
  const expected = plain(gpuConfig(VM));
  for (const c of AWKWARD) {
    assertEquals(plain(c.text), expected, c.name);
    recordCase({ area: "config", name: c.name, count: 1, outcome: "read as meant", test: TEST });
  }
});

Deno.test("loadConfig() refuses /dev/zero and a FIFO without reading them", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hostile-config-" });
  const fifo = `${dir}/config.yaml`;
  assertEquals((await new Deno.Command("mkfifo", { args: [fifo] }).output()).code, 0);
  // Were the FIFO opened, nothing would ever write to it: a writer after a while turns that hang
  // into a failure.
  const unblock = setTimeout(() => Deno.openSync(fifo, { write: true }).close(), 5000);
  try {
    for (const path of ["/dev/zero", fifo]) {
      const error = await loadConfig(path).then(() => null, (e: unknown) => e);
      assertOk(error instanceof ConfigErrors, `${path}: ${error}`);
      assertMatch(error.message, /:1:1: Not a regular file \(give the path of a YAML file\)/);
      recordCase({
        area: "config",
        name: path === fifo ? "a FIFO as the config" : "/dev/zero as the config",
        count: 1,
        outcome: "clear error with file:line:col, nothing read",
        test: TEST,
      });
    }
  } finally {
    clearTimeout(unblock);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadConfig() refuses a huge config by its size, without reading it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-hostile-config-" });
  try {
    // Sparse: 512 MiB on disk costs nothing, read it would cost as much memory.
    const path = `${dir}/config.yaml`;
    Deno.writeTextFileSync(path, "version: 1\nvms: {}\n");
    Deno.truncateSync(path, 512 * 1024 * 1024);
    const before = Deno.memoryUsage().rss;
    const error = await loadConfig(path).then(() => null, (e: unknown) => e);
    const grown = Deno.memoryUsage().rss - before;
    assertOk(error instanceof ConfigErrors, `${error}`);
    assertMatch(error.message, /:1:1: File too large: 536870912 bytes, the limit is 65536/);
    assertOk(grown < 64 * 1024 * 1024, `the process grew by ${grown} bytes`);
    recordCase({
      area: "config",
      name: "a 512 MiB config",
      count: 1,
      outcome: "clear error with file:line:col, nothing read",
      test: TEST,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "passthrough apply --yes with a hostile config changes nothing on a real libvirtd",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    using port = openLibvirtPort(daemon.uri);
    port.define(qemuDomainXml(VM));
    const stateDir = `${tree.dir}/state`;
    // A state directory with history in it, so "unchanged" covers existing files too.
    writeBackup(openStateDir(stateDir), {
      vm: VM,
      uuid: "00000000-0000-0000-0000-000000000000",
      xml: "<domain/>",
      reason: "apply",
      uri: daemon.uri,
    });
    const config = `${tree.dir}/config.yaml`;
    const args = [
      "--config",
      config,
      "--sysfs",
      tree.sysfs,
      "--connect",
      daemon.uri,
      "--state-dir",
      stateDir,
    ];
    const domains = snapshotDomains(port);
    const state = snapshotDir(stateDir);

    // The valid config does change the VM: the refusals below are what keeps it unchanged.
    await Deno.writeTextFile(config, gpuConfig(VM));
    const baseline = await runCli(["plan", ...args.slice(0, 6), "--detailed-exitcode"], {
      flags: ["-A"],
    });
    assertEquals(baseline.code, 2, baseline.stderr);

    const hostile = [
      ...CASES,
      {
        name: "unknown VM",
        bytes: enc(gpuConfig("pt-no-such-vm")),
        error: /unknown-vm/,
      },
    ];
    for (const c of hostile) {
      await Deno.writeFile(config, c.bytes);
      const run = await runCli(["apply", ...args, "--yes"], { flags: ["-A"] });
      assertEquals(run.code, 1, `${c.name}: ${run.stdout}${run.stderr}`);
      assertMatch(run.stdout + run.stderr, c.error, c.name);
      assertOk(!/\n\s+at /.test(run.stderr), `${c.name}: no stack trace`);
      assertEquals(snapshotDomains(port), domains, c.name);
      assertEquals(snapshotDir(stateDir), state, c.name);
      recordCase({
        area: "config",
        name: `${c.name}: apply --yes on a real libvirtd`,
        count: 1,
        outcome: "exit 1, clear error, definitions and state directory byte-identical",
        test: TEST,
      });
    }
  },
});
