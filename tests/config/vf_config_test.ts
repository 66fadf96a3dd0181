// `vf:` and `interface:` of a rule: normalised, and every mistake reported at its place.

import { assertEquals } from "../helpers/assert.ts";
import { ConfigErrors, parseConfig } from "../../lib/config/config.ts";

function parse(rule: string) {
  return parseConfig(
    `version: 1\nvms:\n  vm:\n    devices:\n      - match: { vendor_device_id: "8086:10c9" }\n${rule}`,
    { file: "c.yaml" },
  ).vms[0]!.rules[0]!;
}

/** Each error as `line:col path: start of the message`. */
function errors(rule: string): string[] {
  try {
    parse(rule);
  } catch (error) {
    if (!(error instanceof ConfigErrors)) throw error;
    return error.errors.map((e) =>
      `${e.line}:${e.column} ${e.path}: ${e.message.split(" at ")[0]}`
    );
  }
  throw new Error("expected the config to be refused");
}

Deno.test("parseConfig() reads vf: and interface:, normalising the MAC and the VLAN", () => {
  const any = parse("        vf: any\n        interface: { mac: auto, vlan: 20 }\n");
  assertEquals([any.vf, any.interface], ["any", {
    mac: "auto",
    vlan: { tags: [20], trunk: false },
  }]);
  const given = parse(
    '        vf: 3\n        interface: { mac: "52-54-00-AB-CD-EF", vlan: { tags: [10] } }\n',
  );
  assertEquals([given.vf, given.interface], [
    3,
    { mac: "52:54:00:ab:cd:ef", vlan: { tags: [10], trunk: false } },
  ]);
  // 0 and 4095, the VLAN IDs' bounds, are allowed themselves.
  for (const tag of [0, 4095]) {
    const bounds = parse(`        vf: 0\n        interface: { vlan: { tags: [${tag}] } }\n`);
    assertEquals(bounds.interface?.vlan?.tags, [tag]);
  }
  // vf: alone passes the VF as an interface with an automatic MAC.
  assertEquals(parse("        vf: any\n").interface, { mac: "auto" });
  // No vf: the rule is as before.
  const plain = parse("");
  assertEquals([plain.vf, plain.interface], [undefined, undefined]);
});

Deno.test("parseConfig() reports vf:/interface: mistakes with their place and a hint", () => {
  assertEquals(errors("        interface: { mac: auto }\n"), [
    '6:9 vms.vm.devices[0].interface: c.yaml:6:9: An "interface:" passes an SR-IOV virtual function: the rule has no "vf:"',
  ]);
  assertEquals(errors("        vf: some\n"), [
    '6:13 vms.vm.devices[0].vf: c.yaml:6:13: Invalid value "some": expected one of "any"',
  ]);
  assertEquals(errors("        vf: -1\n"), [
    "6:13 vms.vm.devices[0].vf: c.yaml:6:13: Value -1 is too small: the minimum is 0",
  ]);
  assertEquals(errors("        vf: any\n        count: 2\n"), [
    '7:9 vms.vm.devices[0].count: c.yaml:7:9: A "vf:" rule takes one virtual function of one physical function: "count" does not apply',
  ]);
  assertEquals(errors('        vf: 0\n        interface: { mac: "01:00:5e:00:00:01" }\n'), [
    '7:27 vms.vm.devices[0].interface.mac: c.yaml:7:27: Invalid MAC "01:00:5e:00:00:01": a multicast address, which no NIC can have',
  ]);
  assertEquals(errors('        vf: 0\n        interface: { mac: "52:54:00:12:34" }\n'), [
    '7:27 vms.vm.devices[0].interface.mac: c.yaml:7:27: Invalid mac "52:54:00:12:34"',
  ]);
  assertEquals(errors("        vf: 0\n        interface: { vlan: 4096 }\n"), [
    "7:28 vms.vm.devices[0].interface.vlan: c.yaml:7:28: Value 4096 is too large: the maximum is 4095",
  ]);
  // libvirt sets one VLAN tag on a VF, never a trunk: it would define one and refuse the start.
  const noTrunk = "An SR-IOV virtual function takes one VLAN tag, no trunk: libvirt would " +
    'refuse to start the VM ("vlan trunking is not supported by SR-IOV network devices")';
  assertEquals(errors("        vf: 0\n        interface: { vlan: { tags: [1, 2] } }\n"), [
    `7:36 vms.vm.devices[0].interface.vlan.tags: c.yaml:7:36: ${noTrunk}`,
  ]);
  assertEquals(errors("        vf: 0\n        interface: { vlan: { tags: [7], trunk: true } }\n"), [
    `7:48 vms.vm.devices[0].interface.vlan.trunk: c.yaml:7:48: ${noTrunk}`,
  ]);
  // An empty list: its hint asks for the one tag a VF takes, not for more, which is refused.
  const empty = "        vf: 0\n        interface: { vlan: { tags: [] } }\n";
  assertEquals(errors(empty), [
    "7:36 vms.vm.devices[0].interface.vlan.tags: c.yaml:7:36: Empty VLAN tag list",
  ]);
  let hint = "";
  try {
    parse(empty);
  } catch (error) {
    hint = (error as ConfigErrors).errors[0]!.message;
  }
  assertEquals(hint.endsWith("(give one tag: vlan: 20)"), true, hint);
  assertEquals(errors('        vf: 0\n        interface: { vlan: "20" }\n'), [
    '7:28 vms.vm.devices[0].interface.vlan: c.yaml:7:28: Expected an integer or a mapping, found the string "20"',
  ]);
});

Deno.test('parseConfig() tells a quoted vf: index to drop its quotes, not that only "any" is taken', () => {
  assertEquals(errors('        vf: "2"\n'), [
    '6:13 vms.vm.devices[0].vf: c.yaml:6:13: Expected "any" or an integer, found the string "2"',
  ]);
  let hint = "";
  try {
    parse('        vf: "2"\n');
  } catch (error) {
    hint = (error as ConfigErrors).errors[0]!.message;
  }
  assertEquals(hint.endsWith("(write the number without quotes: 2)"), true, hint);
  // Any other number quoted is no "any" either: both forms are named.
  for (const quoted of ["-1", "1.5"]) {
    assertEquals(errors(`        vf: "${quoted}"\n`), [
      `6:13 vms.vm.devices[0].vf: c.yaml:6:13: Expected "any" or an integer, found the string "${quoted}"`,
    ]);
  }
  // Another word is still one the string option names.
  assertEquals(errors('        vf: "Any"\n'), [
    '6:13 vms.vm.devices[0].vf: c.yaml:6:13: Invalid value "Any": expected one of "any"',
  ]);
});
