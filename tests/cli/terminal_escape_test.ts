/**
 * Control characters read from a captured tree (a driver or slot name is a file name, and may
 * hold any byte but `/`) never reach the terminal raw: `devices`, `groups` and `plan`'s candidate
 * lists print them escaped, with colour on (a real pty) or off, and `--json` stays valid JSON.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { hasScript, runCli, runCliOnPty } from "../helpers/cli.ts";
import { demoTree } from "../helpers/reliability.ts";
import { PAINTER_SEQUENCES } from "../../lib/render/colors.ts";
import { recordCase } from "../../scripts/reliability_report.ts";

const TEST = "tests/cli/terminal_escape_test.ts";
/** Retitles the window, clears the screen, moves up a line, returns the carriage, rings. */
const HOSTILE = "vfio\x1b]0;pwned\x07\x1b[2J\x1b[1A\r\x9b31m\u202eevil";
/** The GTX 1080 of the demo host: its driver and slot get hostile names. */
const GPU = "0000:21:00.0";

/** Control characters left in `text` once the painter's own colour sequences are removed. */
function rawControls(text: string): string[] {
  let plain = text.replace(/\r\n/g, "\n");
  for (const sequence of PAINTER_SEQUENCES) plain = plain.replaceAll(sequence, "");
  // deno-lint-ignore no-control-regex
  return [...plain.matchAll(/[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g)].map(
    (m) => `U+${m[0].charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** The demo tree with the GPU bound to a driver named {@link HOSTILE}, in a slot of that name. */
async function hostileTree() {
  const tree = await demoTree();
  const device = `${tree.sysfs}/bus/pci/devices/${GPU}`;
  Deno.removeSync(`${device}/driver`);
  Deno.mkdirSync(`${tree.sysfs}/bus/pci/drivers/${HOSTILE}`);
  Deno.symlinkSync(`../../drivers/${HOSTILE}`, `${device}/driver`);
  const uevent = Deno.readTextFileSync(`${device}/uevent`);
  Deno.writeTextFileSync(`${device}/uevent`, uevent.replace(/^DRIVER=.*$/m, `DRIVER=${HOSTILE}`));
  Deno.mkdirSync(`${tree.sysfs}/bus/pci/slots/${HOSTILE}`, { recursive: true });
  Deno.writeTextFileSync(`${tree.sysfs}/bus/pci/slots/${HOSTILE}/address`, "0000:21:00\n");
  return tree;
}

Deno.test("devices, groups and plan candidates print a hostile driver and slot name escaped", async () => {
  await using tree = await hostileTree();
  const config = `${tree.dir}/c.yaml`;
  // Two NVIDIA functions match by vendor: the refusal lists both candidates, the GPU's driver
  // and slot among them.
  Deno.writeTextFileSync(
    config,
    "version: 1\nvms:\n  win10:\n    devices:\n      - match: { vendor_id: 10de }\n",
  );
  const world = `test://${new URL("../../demo/world.xml", import.meta.url).pathname}`;
  const runs: [string, string[]][] = [
    ["devices", ["devices", "--sysfs", tree.sysfs]],
    ["groups", ["groups", "--sysfs", tree.sysfs]],
    ["plan", ["plan", "-f", config, "--sysfs", tree.sysfs, "-c", world]],
  ];
  for (const [label, args] of runs) {
    const run = await runCli(args);
    const text = run.stdout + run.stderr;
    assertEquals(rawControls(text), [], `${label}:\n${text}`);
    assertMatch(
      text,
      /vfio\\u001b\]0;pwned\\u0007\\u001b\[2J\\u001b\[1A\\u000d\\u009b31m\\u202eevil/,
    );
  }
  const plan = await runCli(runs[2]![1]);
  assertMatch(plan.stdout, /slot vfio\\u001b\]0;pwned.*driver vfio\\u001b\]0;pwned/);
  const json = await runCli(["devices", "--json", "--sysfs", tree.sysfs]);
  const devices = JSON.parse(json.stdout) as { address: string; driver: string | null }[];
  assertEquals(devices.find((d) => d.address === GPU)?.driver, HOSTILE);
  recordCase({
    area: "escaping",
    name: "control characters in driver and slot names of a captured tree",
    count: runs.length + 1,
    outcome: "escaped in human output, exact in --json",
    test: TEST,
  });
});

Deno.test({
  name: "on a colour terminal only the painter's own sequences reach it",
  ignore: !hasScript(),
  fn: async () => {
    await using tree = await hostileTree();
    await using session = runCliOnPty(["devices", "--sysfs", tree.sysfs], {
      env: { NO_COLOR: "" },
    });
    const { code, screen } = await session.finish();
    assertEquals(code, 0, screen);
    assertOk(screen.includes("\x1b[1m"), "colour is on");
    assertEquals(rawControls(screen), []);
    assertMatch(screen, /vfio\\u001b\]0;pwned/);
  },
});

Deno.test("a config value holding colour codes is quoted escaped in its error, never shortened", async () => {
  await using tree = await demoTree();
  const config = `${tree.dir}/c.yaml`;
  // Pasted from `lspci -nn | grep --color=always 10de`: the ID looks right on a terminal.
  await Deno.writeTextFile(
    config,
    'version: 1\nvms:\n  vm:\n    devices:\n      - match: { vendor_device_id: "\x1b[31m10de:1b80\x1b[m" }\n',
  );
  const run = await runCli(["plan", "--config", config, "--sysfs", tree.sysfs]);
  assertEquals(run.code, 1, run.stderr);
  assertMatch(run.stderr, /:5:36: Invalid vendor-device "\\u001b\[31m10de:1b80\\u001b\[m" at /);
  assertEquals(rawControls(run.stderr), []);
});

Deno.test("with colour on, an error quotes a value's colour codes escaped too", async () => {
  await using tree = await demoTree();
  const config = `${tree.dir}/c.yaml`;
  // The painter's own codes: the boundary let them through as colour, so the error read
  // `Invalid vendor-device "10de:1b80"` on a terminal, a valid-looking ID in red.
  const red = "\x1b[31m10de:1b80\x1b[39m";
  await Deno.writeTextFile(
    config,
    `version: 1\nvms:\n  vm:\n    devices:\n      - match: { vendor_device_id: "${red}" }\n`,
  );
  const runs = [
    await runCli(["plan", "--color=always", "--config", config, "--sysfs", tree.sysfs]),
    await runCli(["devices", "--color=always", "--class", red, "--sysfs", tree.sysfs]),
  ];
  assertEquals(runs.map((run) => run.code), [1, 2], runs.map((run) => run.stderr).join(""));
  assertMatch(runs[0]!.stderr, /:5:36: Invalid vendor-device "\\u001b\[31m10de:1b80\\u001b\[39m"/);
  assertMatch(runs[1]!.stderr, /Unknown class "\\u001b\[31m10de:1b80\\u001b\[39m"/);
  for (const run of runs) assertOk(!run.stderr.includes("\x1b"), run.stderr);
});

Deno.test("a newline or tab in a captured tree's slot or driver name stays in its row", async () => {
  await using tree = await demoTree();
  // Looks like a row of its own: a second GTX 1080 in group 99 with no driver.
  const forged = "PCIE1\n0000:99:00.0  99\t10de:1b80";
  const device = `${tree.sysfs}/bus/pci/devices/${GPU}`;
  Deno.removeSync(`${device}/driver`);
  Deno.mkdirSync(`${tree.sysfs}/bus/pci/drivers/${forged}`);
  Deno.symlinkSync(`../../drivers/${forged}`, `${device}/driver`);
  const uevent = Deno.readTextFileSync(`${device}/uevent`);
  Deno.writeTextFileSync(`${device}/uevent`, uevent.replace(/^DRIVER=.*$/m, `DRIVER=${forged}`));
  Deno.mkdirSync(`${tree.sysfs}/bus/pci/slots/${forged}`, { recursive: true });
  Deno.writeTextFileSync(`${tree.sysfs}/bus/pci/slots/${forged}/address`, "0000:21:00\n");
  const config = `${tree.dir}/c.yaml`;
  Deno.writeTextFileSync(
    config,
    "version: 1\nvms:\n  win10:\n    devices:\n      - match: { vendor_id: 10de }\n",
  );
  const world = `test://${new URL("../../demo/world.xml", import.meta.url).pathname}`;
  const devices = await runCli(["devices", "--sysfs", tree.sysfs, "--wide"]);
  const groups = await runCli(["groups", "--sysfs", tree.sysfs, "--wide", "26"]);
  const plan = await runCli(["plan", "-f", config, "--sysfs", tree.sysfs, "-c", world]);
  for (const run of [devices, groups, plan]) {
    const text = run.stdout + run.stderr;
    assertOk(!/^\s*0000:99:00\.0/m.test(text), text);
    assertOk(!text.includes("\t"), text);
    assertOk(text.includes("PCIE1\\u000a0000:99:00.0  99\\u000910de:1b80"), text);
  }
  // A rule on the demo host's two identical Starship USB controllers, one in a forged slot: its way
  // out names that slot as YAML reads it back.
  const usbSlot = "USB\n0000:99:00.0  99\t1022:148c";
  Deno.mkdirSync(`${tree.sysfs}/bus/pci/slots/${usbSlot}`, { recursive: true });
  Deno.writeTextFileSync(`${tree.sysfs}/bus/pci/slots/${usbSlot}/address`, "0000:23:00\n");
  Deno.writeTextFileSync(
    config,
    "version: 1\nvms:\n  win10:\n    devices:\n      - match: { vendor_device_id: 1022:148c }\n",
  );
  const twins = await runCli(["plan", "-f", config, "--sysfs", tree.sysfs, "-c", world]);
  assertEquals(twins.code, 1, twins.stderr);
  assertOk(
    twins.stdout.includes('0000:23:00.3 alone with slot "USB\\n0000:99:00.0  99\\t1022:148c"'),
    twins.stdout,
  );
  // Every row of the table is one device's: the demo host has 89.
  assertEquals(devices.stdout.trimEnd().split("\n").length, 1 + 89, devices.stdout);
  assertEquals(groups.stdout.trimEnd().split("\n").length, 1 + 2, groups.stdout);
});

Deno.test("a host use in a captured tree's host_use.json holding a newline stays in plan's refusal line", async () => {
  await using tree = await demoTree();
  // The demo host's boot NVMe, mounted where a newline starts what reads as a note of its own.
  Deno.writeTextFileSync(
    `${tree.sysfs}/host_use.json`,
    JSON.stringify([{
      address: "0000:4a:00.0",
      reason: "mounted-filesystem",
      detail: "/mnt/a\n  note [fine] b on nvme0n1p1",
    }]),
  );
  const config = `${tree.dir}/c.yaml`;
  Deno.writeTextFileSync(
    config,
    "version: 1\nvms:\n  win10:\n    devices:\n      - match: { vendor_device_id: 1987:5016 }\n",
  );
  const world = `test://${new URL("../../demo/world.xml", import.meta.url).pathname}`;
  const plan = await runCli(["plan", "-f", config, "--sysfs", tree.sysfs, "-c", world]);
  assertEquals(plan.code, 1, plan.stderr);
  assertOk(!/^\s*note \[fine\]/m.test(plan.stdout), plan.stdout);
  assertMatch(
    plan.stdout,
    /refused \[group-contains-host-critical\] .*\/mnt\/a\\u000a {2}note \[fine\] b on nvme0n1p1/,
  );
});

Deno.test("a driver name holding a tab is escaped on plan's note line, raw in --json", async () => {
  await using tree = await demoTree();
  // A tab lines the message up as two columns (lspci's line format lets a tab through, not a
  // newline).
  const forged = "nvidia\tx";
  const device = `${tree.sysfs}/bus/pci/devices/${GPU}`;
  Deno.removeSync(`${device}/driver`);
  Deno.mkdirSync(`${tree.sysfs}/bus/pci/drivers/${forged}`);
  Deno.symlinkSync(`../../drivers/${forged}`, `${device}/driver`);
  const uevent = Deno.readTextFileSync(`${device}/uevent`);
  Deno.writeTextFileSync(`${device}/uevent`, uevent.replace(/^DRIVER=.*$/m, `DRIVER=${forged}`));
  const config = `${tree.dir}/c.yaml`;
  Deno.writeTextFileSync(
    config,
    `version: 1\nvms:\n  win10:\n    devices:\n      - match: { address: "${GPU}" }\n`,
  );
  const world = `test://${new URL("../../demo/world.xml", import.meta.url).pathname}`;
  const plan = await runCli(["plan", "-f", config, "--sysfs", tree.sysfs, "-c", world]);
  const text = plan.stdout + plan.stderr;
  assertOk(text.includes('host driver "nvidia\\u0009x"'), text);
  assertOk(!text.includes("\t"), text);
  // Data stays raw: JSON escapes it itself, and a script reads the driver's real name.
  const json = await runCli(["plan", "-f", config, "--sysfs", tree.sysfs, "-c", world, "--json"]);
  assertOk(json.stdout.includes(JSON.stringify(forged).slice(1, -1)), json.stdout);
  assertOk(!json.stdout.includes("\\\\u0009"), json.stdout);
});
