/**
 * `devices` and `groups` answer the first questions (issue 16): tables fitted to the terminal
 * (`--wide` to see whole names), subsystem, slot and NUMA columns, devices with the same IDs
 * marked, filters by address, class and group, every group row numbered, and host-critical
 * status in the table and in `--json` as `plan` judges it. In process through `main()` on the
 * demo host (a real sysfs tree read with the real lspci) and the libvirt test driver.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import type { CliIo } from "../../cli/context.ts";
import { main } from "../../main.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";
import { configJsonSchemaText } from "../../lib/config/schema.ts";
import { nvmeDescription } from "../../lib/testing/host_generator.ts";

const DEMO = new URL("../../demo/", import.meta.url).pathname;

async function run(
  args: string[],
  columns?: number,
): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const io: CliIo = {
    out: (text) => void (out += text),
    err: (text) => void (err += text),
    color: false,
    interactive: false,
    ...(columns === undefined ? {} : { columns }),
    readLine: () => Promise.resolve(null),
    env: () => undefined,
  };
  const code = await main(args, io);
  return { code, out, err };
}

const dir = await Deno.makeTempDir({ prefix: "passthrough-tables-" });
buildHostTree(loadHostDescription(`${DEMO}host.json`), `${dir}/sysfs`);
const HOST = ["--sysfs", `${dir}/sysfs`];

/** Each data row of a table as its cells by column name, cut where the header's names start. */
function cells(out: string): Record<string, string>[] {
  const [header, ...lines] = out.trimEnd().split("\n");
  const starts = [...header!.matchAll(/\S+/g)].map((m) => [m[0], m.index] as const);
  return lines.map((line) =>
    Object.fromEntries(starts.map(([name, start], i) => {
      const end = starts[i + 1]?.[1] ?? line.length;
      return [name, line.slice(start, end).trim()];
    }))
  );
}

/** The data rows of a table (without its header). */
function rows(out: string): string[][] {
  return out.trimEnd().split("\n").slice(1).map((line) => line.split(/ {2,}/));
}

Deno.test("devices and groups fit the terminal, cutting names; --wide and pipes do not", async () => {
  for (const command of ["devices", "groups"]) {
    const fitted = await run([command, ...HOST], 120);
    assertEquals(fitted.code, 0, fitted.err);
    for (const line of fitted.out.trimEnd().split("\n")) {
      assertOk(line.length <= 120, `${command}: ${line.length} columns: ${line}`);
    }
    assertOk(fitted.out.includes("…"), `${command}: no name was cut`);
    const wide = await run([command, ...HOST, "--wide"], 120);
    assertOk(!wide.out.includes("…"));
    assertMatch(wide.out, /Starship\/Matisse Internal PCIe GPP Bridge 0 to bus\[E:B\]/);
    // Not a terminal: nothing to fit.
    assertEquals((await run([command, ...HOST])).out, wide.out);
  }
});

Deno.test("README: on a narrow terminal names are cut to the width it says, and lines then wrap", async () => {
  // It said "Tables fit the terminal": at 80 columns the demo's lines are wider, as a name cut
  // shorter would say nothing.
  const readme = Deno.readTextFileSync(new URL("../../README.md", import.meta.url));
  const least = Number(
    /cut device names, then notes, to no less than (\d+) columns each/.exec(
      readme.replaceAll(/\s+/g, " "),
    )?.[1],
  );
  for (const command of ["devices", "groups"]) {
    const narrow = await run([command, ...HOST], 40);
    const cut = narrow.out.split("\n").flatMap((line) => line.match(/\S[^ ]*(?: [^ ]+)*…/g) ?? []);
    assertOk(cut.length > 0, `${command}: no name was cut`);
    assertEquals([...new Set(cut.map((cell) => cell.length))], [least], cut.join("\n"));
    assertOk(narrow.out.split("\n").some((line) => line.length > 40), command);
  }
});

Deno.test("devices shows subsystem, slot and NUMA, and marks devices with the same IDs", async () => {
  const table = await run(["devices", ...HOST]);
  const header = table.out.split("\n")[0]!.split(/ {2,}/);
  assertEquals(header, [
    "ADDRESS",
    "GROUP",
    "IDS",
    "SUBSYSTEM",
    "CLASS",
    "SLOT",
    "NUMA",
    "DRIVER",
    "DEVICE",
    "NOTES",
  ]);
  // The two Starship USB controllers the refused demo config cannot tell apart.
  const usb = rows(table.out).find((r) => r[0] === "0000:23:00.3");
  assertEquals(usb?.at(-1), "same IDs as 0000:03:00.3");
  // The first of them is not marked; bridges, alike by design, are not either.
  assertOk(!rows(table.out).find((r) => r[0] === "0000:03:00.3")?.at(-1)?.includes("same IDs"));
  assertOk(!table.out.includes("same IDs as 0000:00:01.0"));
  // Asked for alone, it still names its twin.
  const alone = await run(["devices", ...HOST, "23:00.3"]);
  assertEquals(rows(alone.out)[0]?.at(-1), "same IDs as 0000:03:00.3");
});

Deno.test("devices and groups narrowed to the first of two devices with the same IDs name the other", async () => {
  // 0000:03:00.3 is the first Starship USB controller; the full table marks only 0000:23:00.3.
  const card = await run(["devices", ...HOST, "03:00"]);
  assertEquals(
    rows(card.out).find((r) => r[0] === "0000:03:00.3")?.at(-1),
    "same IDs as 0000:23:00.3",
  );
  const group = await run(["groups", ...HOST, "15"]);
  assertEquals(rows(group.out).map((r) => [r[1], r.at(-1)]), [
    ["0000:03:00.3", "same IDs as 0000:23:00.3"],
  ]);
  // With its twin in the table, the twin's row says it once.
  const both = await run(["devices", ...HOST, "03:00.3", "23:00.3"]);
  assertEquals(rows(both.out).map((r) => r.filter((c) => c.startsWith("same IDs"))), [
    [],
    ["same IDs as 0000:03:00.3"],
  ]);
});

Deno.test("a dual-port NIC: subsystem, slot and NUMA filled in, its twin named", async () => {
  const tree = `${dir}/nic`;
  const port = (bdf: string, group: number) => ({
    bdf,
    group,
    class: "0x020000",
    vendor: "0x8086",
    device: "0x1533",
    subsystem_vendor: "0x15d9",
    subsystem_device: "0x1533",
    driver: "igb",
    revision: "0x03",
    slot: "4",
    numa_node: 1,
  });
  buildHostTree({ devices: [port("0000:44:00.0", 3), port("0000:44:00.1", 4)] }, tree);
  const table = await run(["devices", "--sysfs", tree]);
  assertEquals(table.code, 0, table.err);
  const [first, second] = rows(table.out);
  const cells = ["8086:1533", "15d9:1533", "020000", "4", "1", "igb"];
  assertEquals(first?.slice(0, 8), ["0000:44:00.0", "3", ...cells]);
  assertEquals(second?.slice(0, 8), ["0000:44:00.1", "4", ...cells]);
  assertEquals(second?.at(-1), "same IDs as 0000:44:00.0");
  assertOk(!first?.at(-1)?.includes("same IDs"));
});

Deno.test("devices and groups show the serial of drives with the same IDs, which tells them apart", async () => {
  const tree = `${dir}/drives`;
  buildHostTree({
    devices: [
      nvmeDescription("0000:03:00.0", 12, { serial: "00-25-38-b1-71-00-00-01" }),
      nvmeDescription("0000:04:00.0", 13, { serial: "00-25-38-b1-71-00-00-02" }),
      nvmeDescription("0000:05:00.0", 14, { serial: "00-25-38-b1-71-00-00-03", device: "0xa80a" }),
    ],
  }, tree);
  const table = await run(["devices", "--sysfs", tree]);
  assertEquals(table.code, 0, table.err);
  const [first, second, own] = rows(table.out);
  assertEquals(first?.at(-1), "serial 00-25-38-b1-71-00-00-01");
  assertEquals(second?.at(-1), "same IDs as 0000:03:00.0, serial 00-25-38-b1-71-00-00-02");
  // A drive of its own model needs no serial to be told apart.
  assertEquals(own?.[0], "0000:05:00.0");
  assertOk(!own?.join(" ").includes("serial"), table.out);
  const groups = await run(["groups", "--sysfs", tree]);
  assertEquals(groups.code, 0, groups.err);
  assertOk(groups.out.includes("serial 00-25-38-b1-71-00-00-02"), groups.out);
});

Deno.test("devices notes a PF's VFs, a VF's PF, the boot VGA, twins and the host's use", async () => {
  const tree = `${dir}/sriov`;
  const fn = (bdf: string, group: number, more: Record<string, unknown>) => ({
    bdf,
    group,
    class: "0x020000",
    vendor: "0x8086",
    device: "0x1572",
    subsystem_vendor: null,
    subsystem_device: null,
    driver: null,
    revision: "0x01",
    ...more,
  });
  buildHostTree({
    devices: [
      fn("0000:03:00.0", 5, { class: "0x030000", vendor: "0x10de", boot_vga: true }),
      fn("0000:44:00.0", 6, {}),
      fn("0000:44:02.0", 7, { device: "0x154c", physfn: "0000:44:00.0" }),
      fn("0000:44:02.1", 8, { device: "0x154c", physfn: "0000:44:00.0" }),
      fn("0000:44:02.2", 9, { device: "0x154c", physfn: "0000:44:00.0" }),
      // The PF's model on another board (its subsystem): told apart by a rule, so no twin.
      fn("0000:45:00.0", 10, { subsystem_vendor: "0x8086", subsystem_device: "0x0001" }),
      // A device lspci's database does not know, by a vendor it does.
      fn("0000:46:00.0", 11, { device: "0x0ff0" }),
      // A vendor it does not know either: the class's name.
      fn("0000:47:00.0", 12, { vendor: "0x0bad" }),
    ],
    host_use: [
      { address: "0000:45:00.0", reason: "default-route", detail: "default route via eno1" },
      // A use recorded without words: its reason stands in.
      { address: "0000:45:00.0", reason: "network-route", detail: "" },
    ],
  }, tree);
  const table = await run(["devices", "--sysfs", tree, "--wide"]);
  assertEquals(table.code, 0, table.err);
  assertEquals(rows(table.out).map((r) => [r[0], r.at(-1)]), [
    ["0000:03:00.0", "boot VGA"],
    ["0000:44:00.0", "3 VFs"],
    ["0000:44:02.0", "VF of 0000:44:00.0"],
    ["0000:44:02.1", "VF of 0000:44:00.0, same IDs as 0000:44:02.0"],
    ["0000:44:02.2", "VF of 0000:44:00.0, same IDs as 0000:44:02.0"],
    ["0000:45:00.0", "host: default route via eno1, host: network-route"],
    ["0000:46:00.0", "Intel Corporation Device 0ff0"],
    ["0000:47:00.0", "Ethernet controller"],
  ]);
});

Deno.test("devices of a host without IOMMU groups lists them and says so under the table", async () => {
  const tree = `${dir}/no-iommu`;
  buildHostTree({
    devices: [{
      bdf: "0000:01:00.0",
      group: null,
      class: "0x010802",
      vendor: "0x144d",
      device: "0xa808",
      subsystem_vendor: null,
      subsystem_device: null,
      driver: "nvme",
      revision: null,
    }],
  }, tree);
  const table = await run(["devices", "--sysfs", tree]);
  assertEquals(table.code, 0, table.err);
  assertEquals(rows(table.out).map((r) => r.slice(0, 2)), [
    ["0000:01:00.0", "-"],
    ["No IOMMU groups: the IOMMU is off or absent on this host"],
  ]);
  const group = await run(["groups", "--sysfs", tree, "0"]);
  assertEquals([group.code, group.err], [
    1,
    `passthrough groups: No IOMMU group 0 on ${tree}: it has none\n`,
  ]);
  // What doctor says of that tree, not of this machine's /sys.
  const groups = await run(["groups", "--sysfs", tree]);
  assertEquals(
    groups.out,
    "No IOMMU groups: the IOMMU is off or absent on this host, so no device can be passed " +
      `through safely (see 'passthrough doctor --sysfs ${tree}')\n`,
  );
});

Deno.test("devices ADDRESS... and --class narrow the list; a wrong one is one line, exit 1", async () => {
  const card = await run(["devices", ...HOST, "21:00"]);
  assertEquals(rows(card.out).map((r) => r[0]), ["0000:21:00.0", "0000:21:00.1"]);
  const two = await run(["devices", ...HOST, "0000:4C:00.1", "21:00.0"]);
  assertEquals(rows(two.out).map((r) => r[0]), ["0000:21:00.0", "0000:4c:00.1"]);
  const nvme = await run(["devices", ...HOST, "--class", "nvme"]);
  assertOk(rows(nvme.out).length > 0);
  assertOk(rows(nvme.out).every((r) => r[4]!.startsWith("0108")), nvme.out);
  // Names and codes in any case.
  for (const klass of ["NVMe", "0108", "0x0108"]) {
    assertEquals((await run(["devices", ...HOST, "--class", klass])).out, nvme.out, klass);
  }
  const usb = await run(["devices", ...HOST, "--class", "0c03"]);
  assertOk(rows(usb.out).length > 0);
  assertEquals((await run(["devices", ...HOST, "--class", "0C03"])).out, usb.out);
  // Not an address at all: a usage error, not a search.
  const typo = await run(["devices", ...HOST, "21:0"]);
  assertEquals([typo.code, typo.out], [2, ""]);
  assertMatch(typo.err, /^passthrough devices: "21:0" is not a PCI address \(0000:44:00\.0, /);
  const vga = await run(["devices", ...HOST, "--class", "0300", "--json"]);
  assertEquals(
    JSON.parse(vga.out).map((d: { classCode: string }) => d.classCode.slice(0, 4)),
    ["0300", "0300", "0300"],
  );
  // Nothing of that class there: said, not a table of headers alone (JSON: an empty list).
  const none = await run(["devices", ...HOST, "21:00", "--class", "nvme"]);
  assertEquals(
    [none.code, none.out],
    [0, `No device of class "nvme" at 21:00 on ${dir}/sysfs\n`],
  );
  const noneJson = await run(["devices", ...HOST, "21:00", "--class", "nvme", "--json"]);
  assertEquals([noneJson.code, noneJson.out], [0, "[]\n"]);
  const missing = await run(["devices", ...HOST, "99:00.0"]);
  assertEquals(missing.code, 1);
  assertEquals(
    missing.err,
    // The devices of that same tree, not of /sys.
    `passthrough devices: No device at 99:00.0 on ${dir}/sysfs: 'passthrough devices --sysfs ${dir}/sysfs' lists them\n`,
  );
  // A class no name matches is a usage error (exit 2), with the closest name.
  const badClass = await run(["devices", ...HOST, "--class", "nvm"]);
  assertEquals(badClass.code, 2);
  assertMatch(
    badClass.err,
    /^passthrough devices: Unknown class "nvm" \(did you mean "nvme"\?\): give a class code/,
  );
});

Deno.test("devices ADDRESS takes a PCI domain of more than four digits (Intel VMD's 10000), as the table writes it", async () => {
  const vmd = await Deno.makeTempDir({ prefix: "passthrough-tables-vmd-" });
  try {
    const nvme = (bdf: string, group: number) => ({
      bdf,
      group,
      class: "0x010802",
      vendor: "0x144d",
      device: "0xa80a",
      subsystem_vendor: "0x144d",
      subsystem_device: "0xa801",
      driver: "nvme",
      revision: null,
    });
    buildHostTree({ devices: [nvme("0000:01:00.0", 1), nvme("10000:e1:00.0", 2)] }, vmd);
    const listed = await run(["devices", "--sysfs", vmd]);
    assertEquals(rows(listed.out).map((r) => r[0]), ["0000:01:00.0", "10000:e1:00.0"]);
    for (const wanted of ["10000:e1:00.0", "10000:E1:00", "00010000:e1:00.0"]) {
      const one = await run(["devices", "--sysfs", vmd, wanted]);
      assertEquals([one.code, rows(one.out).map((r) => r[0])], [0, ["10000:e1:00.0"]], wanted);
    }
  } finally {
    await Deno.remove(vmd, { recursive: true });
  }
});

Deno.test("groups GROUP... narrows, and every row carries its group's number and status", async () => {
  const table = await run(["groups", ...HOST, "11", "26"]);
  assertEquals(table.code, 0, table.err);
  const lines = rows(table.out);
  assertEquals(lines.length, 10);
  assertEquals(new Set(lines.map((r) => r[0])), new Set(["11", "26"]));
  // Group 11 (host bridges) is host-critical on each of its 8 rows, not only the first.
  assertEquals(lines.filter((r) => r[0] === "11" && r[1] === "host-critical").length, 8);
  const missing = await run(["groups", ...HOST, "999"]);
  assertEquals(missing.code, 1);
  assertMatch(missing.err, /^passthrough groups: No IOMMU group 999 on .*: it has 0 to \d+\n$/);
  const typo = await run(["groups", ...HOST, "1a"]);
  assertEquals([typo.code, typo.out], [2, ""]);
  assertMatch(typo.err, /^passthrough groups: "1a" is not an IOMMU group number\n\nUsage: /);
});

Deno.test("groups says under the table when a shown group's data disagrees (a member without a group), which plan refuses", async () => {
  const tree = `${dir}/groupless`;
  const x570 = loadHostDescription(
    new URL("../fixtures/hosts/x570-aorus-pro-wifi.json", import.meta.url),
  );
  buildHostTree({
    ...x570,
    host_use: [],
    devices: x570.devices.map((d) => d.bdf === "0000:0b:00.1" ? { ...d, group: null } : d),
  }, tree);
  const gpu = await run(["groups", "--sysfs", tree, "30"]);
  assertEquals(gpu.code, 0, gpu.err);
  assertMatch(
    gpu.out,
    /\nGroup data disagrees: 0000:0b:00\.1 has no IOMMU group on a host that has groups .*; plan refuses a VM taking a device of group 30\n$/,
  );
  const all = await run(["groups", "--sysfs", tree]);
  assertMatch(all.out, /Group data disagrees: 0000:0b:00\.1 /);
  const other = await run(["groups", "--sysfs", tree, "31"]);
  assertEquals(other.out.includes("disagrees"), false);
});

Deno.test("host-critical in --json agrees with what plan refuses", async () => {
  const groups = JSON.parse((await run(["groups", ...HOST, "10", "26", "--json"])).out);
  assertEquals(
    groups.map((g: { group: number; hostCritical: boolean }) => [g.group, g.hostCritical]),
    [
      [10, true],
      [26, false],
    ],
  );
  assertEquals(groups[0].devices.map((d: { hostCritical: string | null }) => d.hostCritical), [
    "SMBus controller",
    "ISA/LPC bridge",
  ]);
  const devices = JSON.parse((await run(["devices", ...HOST, "00:14", "21:00", "--json"])).out);
  assertEquals(devices.map((d: { hostCritical: string | null }) => d.hostCritical), [
    "SMBus controller",
    "ISA/LPC bridge",
    null,
    null,
  ]);
  // plan refuses the SMBus controller as host-critical and takes the GPU.
  const config = `${dir}/critical.yaml`;
  await Deno.writeTextFile(
    config,
    `version: 1\nvms:\n  win10:\n    devices:\n      - name: smbus\n        match: { address: "0000:00:14.0" }\n`,
  );
  const plan = await run([
    "plan",
    "--json",
    "--config",
    config,
    ...HOST,
    "--connect",
    `test://${DEMO}world.xml`,
  ]);
  const codes = JSON.parse(plan.out).vms.flatMap((vm: { errors: { code: string }[] }) =>
    vm.errors.map((e) => e.code)
  );
  assertOk(codes.includes("group-contains-host-critical"), plan.out);
});

Deno.test("groups marks a group whose every card takes another's controller along, and names what plan refuses", async () => {
  // B550: the chipset's USB and SATA, a Radeon and the NIC share group 15; Z690: the PCH's USB
  // controller shares group 7 with its SRAM, which nobody passes.
  const trees = { b550: `${dir}/b550`, z690: `${dir}/z690` };
  for (const [name, file] of [["b550", "b550-aorus-pro"], ["z690", "z690-asus-adl"]] as const) {
    const host = loadHostDescription(new URL(`../fixtures/hosts/${file}.json`, import.meta.url));
    buildHostTree({ ...host, host_use: [] }, trees[name]);
  }
  const b550 = cells((await run(["groups", "--sysfs", trees.b550, "15", "--wide"])).out);
  assertEquals(b550.map((r) => `${r.ADDRESS} ${r.STATUS}`), [
    "0000:02:00.0 host-critical",
    "0000:02:00.1 host-critical",
    "0000:02:00.2 host-critical",
    "0000:03:00.0 host-critical",
    "0000:03:08.0 host-critical",
    "0000:04:00.0 host-critical",
    "0000:04:00.1 host-critical",
    "0000:05:00.0 host-critical",
  ]);
  const notes = (rows: Record<string, string>[], address: string) =>
    rows.find((r) => r.ADDRESS === address)?.NOTES;
  assertEquals(
    notes(b550, "0000:02:00.1"),
    "plan refuses 0000:04:00.0 or 0000:05:00.0 without it",
  );
  assertEquals(
    notes(b550, "0000:04:00.0"),
    "plan refuses 0000:02:00.0 or 0000:05:00.0 without it",
  );
  // The GPU's audio goes with it: no other card's rule takes an audio function as the host's.
  assertEquals(notes(b550, "0000:04:00.1"), "");
  const json = JSON.parse((await run(["groups", "--sysfs", trees.b550, "15", "--json"])).out);
  assertEquals(json[0].hostCritical, true);
  // --json says why, as the notes do: every device's own hostCritical is null, so a script read
  // the group as host-critical with nothing in it the host needs.
  const along = (devices: { address: string; takenAlong: unknown }[], address: string) =>
    devices.find((d) => d.address === address)?.takenAlong;
  assertEquals(along(json[0].devices, "0000:02:00.1"), {
    reason: "storage controller in another slot",
    by: ["0000:04:00.0", "0000:05:00.0"],
  });
  assertEquals(along(json[0].devices, "0000:04:00.1"), null);
  const devicesJson = JSON.parse(
    (await run(["devices", "--sysfs", trees.b550, "04:00", "--json"])).out,
  );
  assertEquals(along(devicesJson, "0000:04:00.0"), {
    reason: "display controller in another slot",
    by: ["0000:02:00.0", "0000:05:00.0"],
  });
  // devices notes it as groups does.
  const devices = cells((await run(["devices", "--sysfs", trees.b550, "04:00", "--wide"])).out);
  assertEquals(devices.map((r) => r.NOTES), [notes(b550, "0000:04:00.0"), ""]);
  // The USB controller passes alone: only passing the SRAM without it is refused.
  const z690 = cells((await run(["groups", "--sysfs", trees.z690, "7", "--wide"])).out);
  assertEquals(z690.map((r) => r.STATUS), ["", ""]);
  assertEquals(notes(z690, "0000:00:14.0"), "plan refuses 0000:00:14.2 without it");
  // What plan says of the Radeon alone, which `groups 15` now shows.
  const config = `${dir}/b550.yaml`;
  await Deno.writeTextFile(
    config,
    `version: 1\nvms:\n  win10:\n    devices:\n      - match: { vendor_device_id: "1002:699f" }\n`,
  );
  const plan = await run([
    "plan",
    "--config",
    config,
    "--sysfs",
    trees.b550,
    "-c",
    `test://${DEMO}world.xml`,
  ]);
  assertMatch(
    plan.out,
    /group-contains-host-critical.*0000:02:00\.0 \(USB controller in another slot\), 0000:02:00\.1 \(storage controller in another slot\), 0000:05:00\.0 \(network controller in another slot\)/,
  );
});

Deno.test("groups and devices mark no group for a drive behind Intel VMD, which plan passes with its controller", async () => {
  // No rule matches a drive behind VMD and plan leaves it out of the controller's group: it is no
  // card of its own. Counted as one, the group read host-critical and each was said refused
  // without the other, while plan passes the controller (tests/plan/resolve_test.ts).
  const z690 = loadHostDescription(
    new URL("../fixtures/hosts/z690-asus-adl.json", import.meta.url),
  );
  const samsung = z690.devices.find((d) => d.bdf === "0000:06:00.0")!;
  const tree = `${dir}/z690-vmd`;
  buildHostTree({
    ...z690,
    devices: [...z690.devices, { ...samsung, bdf: "10000:e1:00.0", group: 6 }],
    host_use: [],
  }, tree);
  const groups = cells((await run(["groups", "--sysfs", tree, "6", "--wide"])).out);
  assertEquals(groups.map((r) => `${r.ADDRESS} ${r.STATUS}|${r.NOTES}`), [
    "0000:00:0e.0 |",
    "10000:e1:00.0 |same IDs as 0000:06:00.0",
  ]);
  const json = JSON.parse((await run(["groups", "--sysfs", tree, "6", "--json"])).out);
  assertEquals(json[0].hostCritical, false);
  const devices = cells((await run(["devices", "--sysfs", tree, "00:0e.0", "--wide"])).out);
  assertEquals(devices.map((r) => r.NOTES), [""]);
});

globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

Deno.test("devices and groups of a tree that does not say what its host uses say so under the table", async () => {
  const unknown = await Deno.makeTempDir({ prefix: "passthrough-tables-unknown-" });
  try {
    buildHostTree(loadHostDescription(`${DEMO}host.json`), unknown);
    Deno.removeSync(`${unknown}/host_use.json`);
    for (const command of ["devices", "groups"]) {
      const known = await run([command, ...HOST]);
      assertEquals(known.out.includes("Host use unknown"), false, command);
      const table = await run([command, "--sysfs", unknown]);
      assertEquals(table.code, 0, table.err);
      assertMatch(
        table.out,
        new RegExp(
          `\\nHost use unknown: ${unknown} has no host_use\\.json, so devices the host uses right now are not marked`,
        ),
      );
    }
  } finally {
    await Deno.remove(unknown, { recursive: true });
  }
});

Deno.test("devices --help names the config's match key of every JSON key that has one", async () => {
  const help = (await run(["devices", "--help"])).out.replace(/\s+/g, " ");
  const schema = JSON.parse(configJsonSchemaText()) as unknown;
  const matchKeys = (node: unknown): string[] => {
    if (node === null || typeof node !== "object") return [];
    const record = node as Record<string, unknown>;
    const match = (record.properties as Record<string, { properties?: object }> | undefined)
      ?.match?.properties;
    if (match !== undefined) return Object.keys(match);
    return Object.values(record).flatMap(matchKeys);
  };
  const keys = [...new Set(matchKeys(schema))];
  assertOk(keys.includes("numa_node"), keys.join(" "));
  // vendor_device_id is two JSON keys at once.
  for (const key of keys.filter((k) => k !== "vendor_device_id")) {
    assertOk(help.includes(`[${key}]`), `${key} is not named in devices --help`);
  }
});

Deno.test("devices --help and groups --help name every key their --json prints of a device", async () => {
  // README: "--json prints every field a rule can match (the keys are listed in devices --help)";
  // rootBus was printed and listed nowhere, so a script could not tell what it meant.
  const printed = new Set<string>();
  const devices = JSON.parse((await run(["devices", ...HOST, "--json"])).out) as object[];
  const groups = JSON.parse((await run(["groups", ...HOST, "--json"])).out) as {
    devices: object[];
  }[];
  for (const device of [...devices, ...groups.flatMap((g) => g.devices)]) {
    for (const key of Object.keys(device)) printed.add(key);
  }
  assertOk(printed.has("rootBus"), [...printed].join(" "));
  for (const command of ["devices", "groups"]) {
    const help = (await run([command, "--help"])).out.replace(/\s+/g, " ");
    const keys = help.slice(help.indexOf("JSON keys of a device"));
    const missing = [...printed].filter((key) => !new RegExp(`\\b${key}\\b`).test(keys));
    assertEquals(missing, [], `${command} --help`);
  }
});
