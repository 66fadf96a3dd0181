import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import {
  ConfigError,
  ConfigErrors,
  ConfigReadError,
  loadConfig,
  parseConfig,
} from "../../lib/config/config.ts";
import { CLASS_NAMES, configJsonSchemaText } from "../../lib/config/schema.ts";

const ROOT = new URL("../../", import.meta.url);
const CONFIGS = new URL("../fixtures/configs/", import.meta.url);

function errorsOf(text: string, file = "c.yaml"): ConfigError[] {
  try {
    parseConfig(text, { file });
  } catch (error) {
    if (error instanceof ConfigErrors) return error.errors;
    throw error;
  }
  throw new Error("expected the config to be refused");
}

function rules(yaml: string) {
  return parseConfig(`version: 1\nvms:\n  vm:\n    devices:\n${yaml}`, { file: "c.yaml" })
    .vms[0]!.rules;
}

Deno.test("parseConfig() takes unquoted IDs and classes as written, not as YAML numbers", () => {
  const [rule] = rules(`      - match:
          vendor_id: 0x10DE
          device_id: 2684
          subsystem_vendor_id: "1043"
          subsystem_device_id: 0X88E2
          class: 0300
`);
  // YAML alone would read 0x10DE as 4318 and 0300 as 300.
  assertEquals(rule?.match, {
    vendorId: "10de",
    deviceId: "2684",
    subsystemVendorId: "1043",
    subsystemDeviceId: "88e2",
    classText: "0300",
    classPrefixes: ["0300"],
  });
});

Deno.test("parseConfig() takes YAML 1.1 sexagesimal and binary numbers as the IDs written", () => {
  // YAML 1.1 reads 10:20 as 620 (base 60) and 0b10 as 2.
  const config = parseConfig(
    "%YAML 1.1\n---\nversion: 1\nvms:\n  vm:\n    devices:\n" +
      "      - match: { vendor_device_id: 10:20, subsystem_vendor_id: 0b10 }\n",
    { file: "c.yaml" },
  );
  assertEquals(config.vms[0]?.rules[0]?.match, {
    vendorId: "0010",
    deviceId: "0020",
    subsystemVendorId: "0b10",
  });
});

Deno.test("parseConfig() normalises quoted IDs, vendor_device_id, addresses and serials", () => {
  const [a, b] = rules(`      - match:
          vendor_device_id: "0x10DE:2684"
          subsystem_vendor_id: "0X1043"
          serial: "00:11:22:FF:FF:33:44:55"
      - match: { address: "0B:00.1", numa_node: 1, slot: 3 }
`);
  assertEquals(a?.match, {
    vendorId: "10de",
    deviceId: "2684",
    subsystemVendorId: "1043",
    serial: "00-11-22-ff-ff-33-44-55",
  });
  assertEquals(b?.match, { address: "0000:0b:00.1", numaNode: 1, slot: "3" });
});

Deno.test("parseConfig() refuses an ID that is not hex, with the expected form", () => {
  const [error] = errorsOf(
    'version: 1\nvms:\n  vm:\n    devices:\n      - match: { vendor_id: "10de", device_id: 26845 }\n',
  );
  assertOk(error);
  assertEquals([error.line, error.column], [5, 48]);
  assertEquals(error.path, "vms.vm.devices[0].match.device_id");
  assertMatch(error.message, /^c\.yaml:5:48: Invalid pci-id "26845"/);
  assertEquals(error.hint, 'expected up to 4 hex digits such as "10de" or "0x10de"');
});

Deno.test("parseConfig() fills in defaults and derives rule names", () => {
  const [a, b, c] = rules(`      - match: { vendor_device_id: "10de:2684" }
      - match: { vendor_device_id: "10de:2684", address: "01:00.0" }
      - match: { class: usb }
        all: true
        iommu_group: false
        managed: false
`);
  assertEquals(
    [a?.name, a?.count, a?.iommuGroup, a?.managed, a?.multifunction, a?.allowHostCritical],
    ["10de:2684", 1, true, true, false, false],
  );
  assertEquals(b?.name, "10de:2684#2");
  assertEquals([c?.name, c?.count, c?.iommuGroup, c?.managed], ["usb", "all", false, false]);
  assertEquals(c?.match.classPrefixes, ["0c03"]);
  assertEquals(a?.location, "c.yaml:5:9");
});

Deno.test("parseConfig() accepts class names and 2, 4 or 6 hex digits", () => {
  const got = rules(`      - match: { class: "03" }
      - match: { class: "0x0C03" }
      - match: { class: "010802" }
      - match: { class: audio }
      - match: { class: 3d }
`).map((r) => r.match.classPrefixes);
  assertEquals(got, [["03"], ["0c03"], ["010802"], ["0401", "0403"], ["0302"]]);
});

Deno.test('parseConfig() reads a class written with 0x as hex: "0x3d" is no 3D controller', () => {
  const [hex, name] = rules(`      - match: { class: "0x3D" }
      - match: { class: "3D" }
`);
  assertEquals([hex?.match.classPrefixes, hex?.match.classText], [["3d"], "0x3d"]);
  assertEquals([name?.match.classPrefixes, name?.match.classText], [["0302"], "3d"]);
});

Deno.test("parseConfig() takes no class name from Object's prototype: a located error, not a crash", () => {
  for (const name of ["constructor", "toString", "__proto__"]) {
    const [error] = errorsOf(
      `version: 1\nvms:\n  vm:\n    devices:\n      - match: { class: ${name} }\n`,
    );
    assertOk(error instanceof ConfigError, String(error));
    assertEquals([error.line, error.column], [5, 25], name);
    assertMatch(error.message, new RegExp(`Invalid class "${name}"`));
  }
});

Deno.test("parseConfig() reports an unknown key with its position and the nearest valid key", () => {
  const [error] = errorsOf(
    'version: 1\nvms:\n  vm:\n    devices:\n      - match: { vendor_idd: "10de" }\n',
  );
  assertOk(error instanceof ConfigError);
  assertEquals([error.file, error.line, error.column], ["c.yaml", 5, 18]);
  assertEquals(error.path, "vms.vm.devices[0].match.vendor_idd");
  assertEquals(error.hint, 'did you mean "vendor_id"?');
  assertEquals(
    error.message,
    'c.yaml:5:18: Unknown key "vendor_idd" at "vms.vm.devices[0].match.vendor_idd" (did you mean "vendor_id"?)',
  );
});

Deno.test("parseConfig() writes a key or value escaped where it differs from the one meant by a look-alike", () => {
  // A Cyrillic "\u0435" for "e" and "\u043e" for "o": the question showed two identical words.
  const [key] = errorsOf("version: 1\nvms:\n  vm:\n    d\u0435vices: []\n");
  assertEquals([key?.line, key?.column], [4, 5]);
  assertEquals(key?.hint, 'did you mean "devices"? that is "devices", this is "d\\u0435vices"');
  const [value] = errorsOf(
    'version: 1\nvms:\n  vm:\n    devices:\n      - guard: "\u043eff"\n        match: { vendor_id: "10de" }\n',
  );
  assertEquals([value?.line, value?.column], [5, 16]);
  assertEquals(value?.hint, 'did you mean "off"? that is "off", this is "\\u043eff"');
  const [host] = errorsOf(
    'version: 1\nhosts:\n  hv1: {}\nvms:\n  vm:\n    host: "\u04bbv1"\n    devices: []\n',
  );
  assertEquals([host?.line, host?.column], [6, 11]);
  assertEquals(host?.hint, 'did you mean "hv1"? that is "hv1", this is "\\u04bbv1"');
});

Deno.test("parseConfig() quotes an invalid ID or address escaped, a look-alike letter shown", () => {
  // A Cyrillic "\u041e" for the last "0" and a full-width colon: quoted as is, both read as valid.
  const [id, address] = errorsOf(
    'version: 1\nvms:\n  vm:\n    devices:\n      - match: { vendor_device_id: "10de:1b8\u041e" }\n' +
      '      - match: { address: "0000\uff1a23:00.3" }\n',
  );
  assertEquals([id?.line, id?.column], [5, 36]);
  assertMatch(id?.message ?? "", /: Invalid vendor-device "10de:1b8\\u041e" at /);
  assertEquals([address?.line, address?.column], [6, 27]);
  assertMatch(address?.message ?? "", /: Invalid pci-address "0000\\uff1a23:00\.3" at /);
});

Deno.test("parseConfig() quotes an invalid path readably: a path may hold any letters", () => {
  // Relative, not misspelt: its "\u00fc" and Japanese are what the user wrote, and read as such.
  const [rom] = errorsOf(
    'version: 1\nvms:\n  vm:\n    devices:\n      - match: { vendor_id: "10de" }\n' +
      '        rom: { file: "roms/M\u00fcller-\u65e5\u672c.rom" }\n',
  );
  assertEquals([rom?.line, rom?.column], [6, 22]);
  assertMatch(
    rom?.message ?? "",
    /: Invalid absolute-path "roms\/M\u00fcller-\u65e5\u672c\.rom" at /,
  );
});

Deno.test("parseConfig() says a host's discovery: was removed and what replaces it, not that it is unknown", () => {
  const [error] = errorsOf("version: 1\nhosts:\n  hv1:\n    discovery: libvirt\nvms: {}\n");
  assertEquals([error?.line, error?.column, error?.path], [4, 5, "hosts.hv1.discovery"]);
  assertMatch(error?.message ?? "", /: Key "discovery" was removed at "hosts\.hv1\.discovery" \(/);
  assertMatch(error?.hint ?? "", /"passthrough snapshot DIR" and give it as "sysfs: DIR"/);
});

Deno.test("parseConfig() says a host section's vms: goes at the top level with host:, not only that it is unknown", () => {
  // Nesting a host's VMs under its section is the first shape a fleet config takes.
  const errors = errorsOf(
    "version: 1\nhosts:\n  hv1:\n    vms:\n      win11:\n        devices: []\n",
  );
  const vms = errors.find((e) => e.path === "hosts.hv1.vms");
  assertEquals([vms?.line, vms?.column], [4, 5]);
  assertMatch(
    vms?.message ?? "",
    /: Key "vms" does not go in a host's section at "hosts\.hv1\.vms" \(/,
  );
  assertEquals(
    vms?.hint,
    'list the VMs under the top-level "vms:", and limit each to its hosts with "host: hv1" (or "hosts: [hv1, ...]")',
  );
});

Deno.test("parseConfig() refuses duplicate keys instead of keeping the last one", async () => {
  const file = new URL("duplicate_keys.yaml", CONFIGS).pathname;
  const error = await loadConfig(file).then(
    () => null,
    (e: unknown) => e,
  );
  assertOk(error instanceof ConfigErrors);
  const [first] = error.errors;
  assertOk(first);
  assertEquals([first.line, first.column], [6, 3]);
  assertMatch(first.message, /:6:3: Duplicate key: each key may appear once/);
});

Deno.test("parseConfig() refuses a key repeated through an alias (*k :) instead of keeping the last one", () => {
  // The rule read as written gives the GTX 1080; keeping the last entry gave the RX 580.
  const [inMatch] = errorsOf(
    'version: 1\nvms:\n  vm:\n    devices:\n      - match: { &v vendor_device_id: "10de:1b80", *v : "1002:67df" }\n',
  );
  assertEquals(
    inMatch?.message,
    "c.yaml:5:52: Duplicate key: each key may appear once (merge the two entries)",
  );
  // A VM whose rules a second entry named by an alias replaced.
  const [vm] = errorsOf(
    'version: 1\nvms:\n  &k vm: { devices: [ { match: { vendor_id: "10de" } } ] }\n  *k : { devices: [] }\n',
  );
  assertMatch(vm?.message ?? "", /^c\.yaml:4:3: Duplicate key/);
  // A written key after its alias, and a VM named by a number, are found too.
  const [after] = errorsOf("version: 1\nvms:\n  &k 100: { devices: [] }\n  *k : { devices: [] }\n");
  assertMatch(after?.message ?? "", /^c\.yaml:4:3: Duplicate key/);
  // An alias naming another key is no duplicate.
  const config = parseConfig(
    'version: 1\nhosts: { &h hv1: {} }\nvms:\n  vm:\n    devices: [ { match: { vendor_id: "10de" }, host: *h } ]\n',
    { file: "c.yaml" },
  );
  assertEquals(config.vms[0]?.rules[0]?.hosts, ["hv1"]);
});

Deno.test("parseConfig() refuses a tag it does not know instead of reading the value untagged", () => {
  // `!env` read the URI "LIBVIRT_URI" and the driver "GPU", which the writer did not mean.
  const errors = errorsOf(
    "version: 1\nhosts:\n  hv1: { connect: !env LIBVIRT_URI }\nvms:\n  !foo vm:\n    devices:\n" +
      "      - match: { driver: !env GPU, vendor_id: !!python/object:os.system '10de' }\n",
  );
  assertEquals(errors.map((e) => e.message), [
    'c.yaml:3:19: Unsupported tag "!env" (the config is plain YAML: remove the tag and write the value itself)',
    'c.yaml:5:3: Unsupported tag "!foo" (the config is plain YAML: remove the tag and write the value itself)',
    'c.yaml:7:26: Unsupported tag "!env" (the config is plain YAML: remove the tag and write the value itself)',
    'c.yaml:7:47: Unsupported tag "!!python/object:os.system" (the config is plain YAML: remove the tag and write the value itself)',
  ]);
  // YAML's own tags are read as YAML says.
  const [rule] = rules("      - match: { vendor_id: !!str 10de }\n        count: !!int '2'\n");
  assertEquals([rule?.match.vendorId, rule?.count], ["10de", 2]);
});

Deno.test("parseConfig() says a value does not fit YAML's own tag, not that the tag is unsupported", () => {
  // `!!int` is read (`count: !!int '2'` is 2): "Unsupported tag "!!int"" sent the user to a tag
  // that works, on a value that does not.
  const errors = errorsOf(
    'version: 1\nvms:\n  vm:\n    devices:\n      - match: { vendor_id: "10de" }\n' +
      "        count: !!int 2.0\n        managed: !!bool yes\n",
  );
  assertEquals(errors.map((e) => e.message), [
    'c.yaml:6:16: The value does not fit its tag "!!int" (write a value of that type, or remove the tag)',
    'c.yaml:7:18: The value does not fit its tag "!!bool" (write a value of that type, or remove the tag)',
  ]);
});

Deno.test("loadConfig() collects every problem of a file, in source order", async () => {
  const file = new URL("typos.yaml", CONFIGS).pathname;
  const error = await loadConfig(file).then(() => null, (e: unknown) => e);
  assertOk(error instanceof ConfigErrors);
  const got = error.errors.map((e) => [e.line, e.column, e.path, e.hint]);
  assertEquals(got, [
    [8, 11, "vms.win10.devices[0].match.vendor_idd", 'did you mean "vendor_id"?'],
    [
      9,
      22,
      "vms.win10.devices[0].match.device_id",
      'expected up to 4 hex digits such as "10de" or "0x10de"',
    ],
    [10, 16, "vms.win10.devices[0].count", "use 1 or more"],
    [11, 25, "vms.win10.devices[1].match.class", 'did you mean "vga"?'],
    [12, 18, "vms.win10.devices[1].managed", 'write true: YAML 1.2 reads "yes" as text'],
    [15, 9, "vms.linux.devices[0]", "keep one of them"],
  ]);
  assertMatch(error.message, /^Invalid config ".*typos\.yaml": 6 problems\n/);
  assertMatch(error.errors[2]!.message, /Value 0 is too small: the minimum is 1/);
  assertMatch(error.errors[5]!.message, /Keys "count" and "all" exclude each other/);
});

Deno.test("parseConfig() refuses wrong types, a missing match, an empty match and bad versions", () => {
  const got = errorsOf(`version: 2
vms:
  vm:
    devices:
      - name: a
      - match: {}
      - match: { address: "0000:0b:00.9" }
      - match: { vendor_device_id: "10de:2684", vendor_id: "1002" }
  other:
    devices: { match: {} }
`).map((e) => e.message.replace(/^c\.yaml:/, ""));
  assertEquals(got, [
    '1:10: Unsupported value 2: expected 1 at "version" (write 1)',
    '5:9: Missing key "match" at "vms.vm.devices[0]" (add "match:")',
    '6:16: Empty mapping at "vms.vm.devices[1].match" (give at least one of vendor_id, device_id, vendor_device_id, driver, subsystem_vendor_id, subsystem_device_id, class, slot, serial, numa_node, address)',
    '7:27: Invalid pci-address "0000:0b:00.9" at "vms.vm.devices[2].match.address" (expected a PCI address such as "0000:0b:00.0" or "0b:00.0")',
    '8:49: Conflicting criteria: "vendor_id" is "1002" but "vendor_device_id" says "10de" at "vms.vm.devices[3].match.vendor_id" (give the ID once)',
    '10:14: Expected a list, found a mapping at "vms.other.devices" (start each item with "- ")',
  ]);
});

Deno.test("parseConfig() locates a conflicting ID at its own key, also on the lines below match:", () => {
  const got = errorsOf(`version: 1
vms:
  vm:
    devices:
      - match:
          vendor_device_id: "10de:2684"
          driver: nvidia
          vendor_id: "1002"
          device_id: "2685"
`).map((e) => e.message.replace(/^c\.yaml:/, "").replace(/ \(give the ID once\)$/, ""));
  assertEquals(got, [
    '8:11: Conflicting criteria: "vendor_id" is "1002" but "vendor_device_id" says "10de" at "vms.vm.devices[0].match.vendor_id"',
    '9:11: Conflicting criteria: "device_id" is "2685" but "vendor_device_id" says "2684" at "vms.vm.devices[0].match.device_id"',
  ]);
});

Deno.test("parseConfig() refuses a conflicting device_id, a fraction, all: false, an empty host list; takes each bound itself", () => {
  const got = errorsOf(`version: 1
vms:
  vm:
    devices:
      - match: { vendor_device_id: "10de:2684", device_id: "2685" }
      - match: { vendor_device_id: "10de:2684" }
        count: 1.5
      - match: { vendor_device_id: "10de:2684" }
        all: false
      - match: { vendor_device_id: "10de:2684" }
        boot_order: 2147483648
`).map((e) => e.message.replace(/^c\.yaml:/, ""));
  assertEquals(got, [
    '5:49: Conflicting criteria: "device_id" is "2685" but "vendor_device_id" says "2684" at "vms.vm.devices[0].match.device_id" (give the ID once)',
    '7:16: Expected an integer, found number 1.5 at "vms.vm.devices[1].count" (write a whole number without quotes, e.g. 1)',
    '9:14: Unsupported value false: expected true at "vms.vm.devices[2].all" (omit the key)',
    '11:21: Value 2147483648 is too large: the maximum is 2147483647 at "vms.vm.devices[3].boot_order" (use 2147483647 or less)',
  ]);
  // keep_backups: takes what --keep-backups takes, one bound for both.
  assertEquals(
    errorsOf("version: 1\nhosts:\n  hv1: { keep_backups: 1000000 }\nvms: {}\n").map((e) =>
      e.message.replace(/^c\.yaml:/, "")
    ),
    [
      '3:24: Value 1000000 is too large: the maximum is 999999 at "hosts.hv1.keep_backups" (use 999999 or less)',
    ],
  );
  // An empty host list declares nothing a VM could name.
  assertEquals(
    errorsOf("version: 1\nhosts: {}\nvms:\n  vm:\n    devices: []\n").map((e) =>
      e.message.replace(/^c\.yaml:/, "")
    ),
    ['2:8: Empty host list at "hosts" (declare at least one host, or remove "hosts:")'],
  );
  // The bounds themselves are allowed.
  const [rule] = rules(`      - match: { vendor_device_id: "10de:2684" }
        boot_order: 2147483647
`);
  assertEquals(rule?.bootOrder, 2147483647);
});

Deno.test("parseConfig() refuses two host sections whose names differ only in case", () => {
  // One machine in DNS and in Ansible's inventory: which section it plans would hang on how its
  // kernel spells the name, and the other's rules would never apply.
  assertEquals(
    errorsOf("version: 1\nhosts:\n  hv1: {}\n  hv2: {}\n  HV1: {}\nvms: {}\n").map((e) =>
      e.message
    ),
    [
      'c.yaml:5:3: Host "HV1" is "hv1" (c.yaml:3:3) in another case at "hosts.HV1" ' +
      "(a machine plans only the section spelled as uname -n prints its name: merge the two)",
    ],
  );
  assertEquals(
    parseConfig("version: 1\nhosts: { hv1: {}, hv1.example.com: {} }\nvms: {}\n", {
      file: "c.yaml",
    })
      .hosts?.map((h) => h.name),
    ["hv1", "hv1.example.com"],
  );
});

Deno.test("parseConfig() tells a host declared with nothing after it to write {}", () => {
  // A list of names as a mapping's keys, the natural way to declare hosts with no settings.
  assertEquals(
    errorsOf("version: 1\nhosts:\n  hv1:\n  hv2: {}\nvms: {}\n").map((e) => [e.message, e.hint]),
    [[
      'c.yaml:3:7: Expected a mapping, found null at "hosts.hv1" (write {} for none, or "key: value" pairs: connect, sysfs, keep_backups)',
      'write {} for none, or "key: value" pairs: connect, sysfs, keep_backups',
    ]],
  );
});

Deno.test("parseConfig() refuses two rules of one VM with the same name", () => {
  const [error] = errorsOf(`version: 1
vms:
  vm:
    devices:
      - name: gpu
        match: { vendor_id: "10de" }
      - name: gpu
        match: { vendor_id: "1002" }
`);
  assertEquals(
    error?.message,
    'c.yaml:7:15: Duplicate rule name "gpu" in VM "vm" at "vms.vm.devices[1].name" (give each rule of a VM its own name)',
  );
});

Deno.test("parseConfig() gives every problem a hint", () => {
  const errors = errorsOf(`version: "1"
vms:
  vm:
    devices:
      - match: { numa_node: "0", address: [1] }
        multifunction: 1
        rom: on
`);
  assertEquals(errors.map((e) => [e.path, e.hint]), [
    ["version", "write a whole number without quotes, e.g. 1"],
    ["vms.vm.devices[0].match.numa_node", "write a whole number without quotes, e.g. 1"],
    ["vms.vm.devices[0].match.address", 'write a single value, quoted: "..."'],
    ["vms.vm.devices[0].multifunction", "write true or false without quotes"],
    ["vms.vm.devices[0].rom", 'write "key: value" pairs: bar, file'],
  ]);
});

Deno.test("parseConfig() follows YAML anchors and aliases, and refuses unknown ones", () => {
  const config = parseConfig(
    `version: 1
vms:
  a:
    devices:
      - &gpu
        name: gpu
        match: &nvidia { vendor_id: "10de", class: vga }
  b:
    devices:
      - *gpu
      - name: audio
        match: *nvidia
`,
    { file: "c.yaml" },
  );
  const [a, b] = config.vms;
  assertEquals(a?.rules[0]?.match, b?.rules[0]?.match);
  assertEquals(b?.rules[1]?.match.vendorId, "10de");
  assertEquals(b?.rules[0]?.location, "c.yaml:6:9");
  const [error] = errorsOf("version: 1\nvms:\n  a:\n    devices:\n      - *nothing\n");
  assertMatch(error?.message ?? "", /^c\.yaml:5:9: Unknown alias "\*nothing"/);
  assertEquals(error?.path, "vms.a.devices[0]");
});

Deno.test("parseConfig() locates a merge key (<<) of something but mappings instead of crashing", () => {
  // Under YAML 1.1, `<<: 3` stopped plan with "Merge sources must be maps or map aliases", as a
  // runtime error naming no file, line or key.
  const head = "%YAML 1.1\n---\nversion: 1\nvms:\n  vm:\n    devices:\n";
  const rule = "      - &g { match: { vendor_id: '10de' }, name: one }\n";
  for (const merge of ["3", "[ *g, 3 ]", "", "*v"]) {
    const errors = errorsOf(
      `${head}${rule}      - match: { vendor_id: &v '1002' }\n        <<: ${merge}\n`,
    );
    assertEquals(errors.map((e) => e.message), [
      'c.yaml:9:13: A merge key ("<<") takes a mapping or a list of mappings (merge an anchored mapping (<<: *name), or write the keys out)',
    ], merge);
  }
  // An unknown anchor is said once, with the key as written.
  const [unknown, ...more] = errorsOf(`${head}${rule}      - <<: *nope\n`);
  assertEquals(unknown?.path, "vms.vm.devices[1].<<");
  assertEquals(more, []);
  // Merging mappings still works.
  const config = parseConfig(`${head}${rule}      - <<: [ *g ]\n        name: two\n`, {
    file: "c.yaml",
  });
  assertEquals(config.vms[0]?.rules.map((r) => [r.name, r.match.vendorId]), [
    ["one", "10de"],
    ["two", "10de"],
  ]);
});

Deno.test("parseConfig() merges a merge key (<<: *base) without a %YAML 1.1 line, as editors do", () => {
  // It was the unknown key "<<" (did you mean "vf"?), and under vms: a VM named "<<".
  const config = parseConfig(
    `version: 1
vms:
  a: &vm
    guard: warn
    devices:
      - &gpu { name: gpu, match: { vendor_id: "10de" }, managed: false }
      - <<: *gpu
        name: audio
  b:
    <<: *vm
    devices: []
  "<<": { devices: [] }
`,
    { file: "c.yaml" },
  );
  assertEquals(config.vms.map((vm) => [vm.name, vm.guard, vm.rules.length]), [
    ["a", "warn", 2],
    ["b", "warn", 0],
    ["<<", "enforce", 0],
  ]);
  const audio = config.vms[0]?.rules[1];
  assertEquals([audio?.name, audio?.match.vendorId, audio?.managed], ["audio", "10de", false]);
  // What a merge brings in is checked as if written out.
  const [error] = errorsOf(
    'version: 1\nvms:\n  vm:\n    devices:\n      - <<: { match: { vendor_id: "10de" }, count: "2" }\n',
  );
  assertEquals(error?.path, "vms.vm.devices[0].count");
  assertMatch(error?.message ?? "", /^c\.yaml:5:9: Expected an integer, found the string "2"/);
});

Deno.test("parseConfig() refuses keys named like built-in object properties", () => {
  const [error] = errorsOf(
    'version: 1\nvms:\n  vm:\n    devices:\n      - match: { vendor_id: "10de", constructor: 1 }\n',
  );
  assertEquals(error?.path, "vms.vm.devices[0].match.constructor");
  assertMatch(error?.message ?? "", /^c\.yaml:5:37: Unknown key "constructor"/);
});

Deno.test("parseConfig() says where a second YAML document starts, not which yaml API to call", () => {
  // It said "Source contains multiple documents; please use YAML.parseAllDocuments()".
  for (const [text, line] of [["---\nversion: 1\n", 3], ["...\nversion: 1\n", 4]] as const) {
    const errors = errorsOf(`version: 1\nvms: {}\n${text}`);
    assertEquals(errors.map((e) => e.message), [
      `c.yaml:${line}:1: A second YAML document starts here: a config is one document (keep one: a "---" line starts another document, and so does content after a "..." line)`,
    ]);
  }
  // A document marked at its start and end is one.
  assertEquals(parseConfig("---\nversion: 1\nvms: {}\n...\n", { file: "c.yaml" }).vms, []);
});

Deno.test("parseConfig() counts columns of a file saved with a byte order mark as editors do", () => {
  // Line 1 was a column off (1:11), the invisible mark counted as one.
  const [error] = errorsOf("\ufeffversion: 2\r\nvms: {}\r\n");
  assertMatch(error?.message ?? "", /^c\.yaml:1:10: Unsupported value 2/);
  const [tag] = errorsOf("\ufeff!foo version: 1\nvms: {}\n");
  assertMatch(tag?.message ?? "", /^c\.yaml:1:1: Unsupported tag "!foo"/);
});

Deno.test("parseConfig() reads a file with CR-only line ends (classic Mac OS) line by line", () => {
  const lines = ["version: 1", "vms:", "  win11:", "    devices:", "      - name: gpu"];
  const text = [...lines, '        match: { vendor_idd: "10de" }', ""].join("\r");
  // It was one line: "Nested mappings are not allowed in compact mappings" at 1:10, 1:16, ...
  const errors = errorsOf(text);
  assertEquals(errors.map((e) => [e.line, e.column, e.path]), [
    [6, 18, "vms.win11.devices[0].match.vendor_idd"],
  ]);
  const config = parseConfig(text.replace("vendor_idd", "vendor_id"), { file: "c.yaml" });
  assertEquals(config.vms[0]?.rules[0]?.location, "c.yaml:5:9");
});

Deno.test("parseConfig() reports YAML syntax errors with their position", () => {
  const [error] = errorsOf("version: 1\nvms:\n  vm:\n    devices: [\n");
  assertOk(error);
  assertMatch(error.message, /^c\.yaml:\d+:\d+: /);
});

Deno.test("the committed passthrough_config.schema.json is the one generated from the schema", () => {
  const committed = Deno.readTextFileSync(new URL("passthrough_config.schema.json", ROOT));
  assertEquals(committed, configJsonSchemaText());
});

Deno.test("the JSON schema's guard: says warn, and a rule's off, still refuse a device the host needs", () => {
  // An editor shows this text on hover. It said warn starts "when a hostdev's address ... holds one
  // the host needs" and that a rule's value overrides its VM's, where the guard refuses the host's
  // own disk or NIC under warn and under a rule's off (lib/guard/run.ts policed()).
  const committed = Deno.readTextFileSync(new URL("passthrough_config.schema.json", ROOT));
  const descriptions: string[] = [];
  JSON.parse(committed, (key, value) => {
    if (key === "guard") descriptions.push(value.description);
    return value;
  });
  assertEquals(descriptions.length, 2); // a VM's and a rule's
  for (const description of descriptions) {
    assertOk(!/holds one the host needs: enforce/.test(description), description);
    assertMatch(description, /the host needs is refused under warn too, and under a rule's off/);
  }
});

Deno.test("the JSON schema refuses in every string the control characters loading refuses", () => {
  type Node = Record<string, unknown>;
  const strings: [string, Node][] = [];
  const walk = (node: unknown, at: string): void => {
    if (typeof node !== "object" || node === null) return;
    const n = node as Node;
    if (n.type === "string" && n.enum === undefined) strings.push([at, n]);
    for (const [key, child] of Object.entries(n)) walk(child, `${at}/${key}`);
  };
  walk(JSON.parse(configJsonSchemaText()), "#");
  // What an editor checks of a string: its own pattern, and a pattern it must not match.
  const accepts = (n: Node, value: string) =>
    (typeof n.pattern !== "string" || new RegExp(n.pattern, "u").test(value)) &&
    !(typeof (n.not as Node | undefined)?.pattern === "string" &&
      new RegExp((n.not as Node).pattern as string, "u").test(value));
  // A rule's name, its slot, a ROM file: each took a NUL or a \x01 the loader then refuses.
  assertOk(strings.length > 5, `${strings.length}`);
  for (const [at, n] of strings) {
    for (const value of ["/g\x00pu", "/g\x01pu", "/gpu\uFFFF"]) {
      assertOk(!accepts(n, value), `${at} accepts ${JSON.stringify(value)}`);
    }
    if (n.pattern === undefined) assertOk(accepts(n, "gpu\tone\n"), at);
  }
  const [error] = errorsOf(
    'version: 1\nvms:\n  vm:\n    devices:\n      - match: { vendor_id: "10de" }\n        name: "g\\x01pu"\n',
  );
  assertMatch(error?.message ?? "", /Invalid character U\+0001/);
});

Deno.test("the example passthrough_config.yaml is valid and points editors at the schema", async () => {
  const path = new URL("passthrough_config.yaml", ROOT).pathname;
  const text = Deno.readTextFileSync(path);
  assertMatch(text, /^# yaml-language-server: \$schema=\.\/passthrough_config\.schema\.json$/m);
  const config = await loadConfig(path);
  assertOk(config.vms.length >= 2);
  // Issue 16: the example is marked, so apply refuses it until the mark is removed.
  assertEquals(config.example, true);
  assertOk(config.vms.flatMap((v) => v.rules).some((r) => r.multifunction && r.rom?.bar === "off"));
});

Deno.test("parseConfig() reads host sections: connect and sysfs optional, sysfs from the config's folder", () => {
  const config = parseConfig(
    `version: 1
hosts:
  bare: {}
  local: { connect: "qemu:///system" }
  captured: { connect: "qemu+ssh://hv2/system", sysfs: trees/hv2 }
  absolute: { sysfs: /srv/hv3 }
vms:
  vm: { devices: [{ match: { class: vga } }] }
`,
    { file: "/etc/passthrough/fleet.yaml" },
  );
  assertEquals(
    config.hosts?.map((h) => [h.name, h.uri, h.sysfs, h.location]),
    [
      ["bare", null, null, "/etc/passthrough/fleet.yaml:3:3"],
      ["local", "qemu:///system", null, "/etc/passthrough/fleet.yaml:4:3"],
      [
        "captured",
        "qemu+ssh://hv2/system",
        "/etc/passthrough/trees/hv2",
        "/etc/passthrough/fleet.yaml:5:3",
      ],
      ["absolute", null, "/srv/hv3", "/etc/passthrough/fleet.yaml:6:3"],
    ],
  );
  assertEquals([config.vms[0]?.hosts, config.vms[0]?.rules[0]?.hosts], [undefined, undefined]);
});

Deno.test("parseConfig() without hosts: keeps a single-host config unchanged", () => {
  const config = parseConfig("version: 1\nvms:\n  vm: { devices: [{ match: { class: vga } }] }\n", {
    file: "c.yaml",
  });
  assertEquals("hosts" in config, false);
  assertEquals("hosts" in config.vms[0]!, false);
  assertEquals("hosts" in config.vms[0]!.rules[0]!, false);
});

Deno.test("parseConfig() locates host mistakes with nearest-name hints", () => {
  const errors = errorsOf(`version: 1
hosts:
  hv1: { connect: "qemu+ssh://hv1/system" }
  hv2: { connect: "qemu:///system", discovery: libvirt }
  hv3: { conect: "qemu:///system" }
  "bad name": { connect: "qemu:///system" }
vms:
  a:
    host: hv22
    devices: [{ match: { class: vga } }]
  b:
    hosts: [hv1]
    devices:
      - { match: { class: vga }, hosts: [hv2] }
      - { match: { class: usb }, host: hv1, hosts: [hv1] }
`);
  assertEquals(
    errors.map((e) => [e.line, e.column, e.path, e.message.replace(/^c\.yaml:\d+:\d+: /, "")]),
    [
      [
        4,
        37,
        "hosts.hv2.discovery",
        'Key "discovery" was removed at "hosts.hv2.discovery" (every host is read from its sysfs now: delete the line ("discovery: sysfs" was the default); for "discovery: libvirt", capture the host\'s tree there with "passthrough snapshot DIR" and give it as "sysfs: DIR")',
      ],
      [
        5,
        10,
        "hosts.hv3.conect",
        'Unknown key "conect" at "hosts.hv3.conect" (did you mean "connect"?)',
      ],
      [
        6,
        3,
        "hosts",
        'Invalid name "bad name" at "hosts" (use letters, digits, dots, dashes and underscores, starting with a letter or digit)',
      ],
      [9, 11, "vms.a.host", 'Unknown host "hv22" at "vms.a.host" (did you mean "hv2"?)'],
      [
        14,
        41,
        "vms.b.devices[0].hosts",
        'Rule names host "hv2" but VM "b" is not planned there at "vms.b.devices[0].hosts" (the VM is limited to "hv1")',
      ],
      [
        15,
        9,
        "vms.b.devices[1]",
        'Keys "host" and "hosts" exclude each other at "vms.b.devices[1]" (keep one of them)',
      ],
    ],
  );
});

Deno.test("parseConfig() refuses host: without a hosts: section", () => {
  const [error, ...rest] = errorsOf(
    "version: 1\nvms:\n  vm:\n    host: hv1\n    devices: [{ match: { class: vga } }]\n",
  );
  assertEquals(rest, []);
  assertEquals([error?.line, error?.column, error?.path], [4, 11, "vms.vm.host"]);
  assertMatch(
    error!.message,
    /No hosts are declared: "host" names hosts of the top-level "hosts:"/,
  );
});

Deno.test("parseConfig() lets one rule name repeat on disjoint hosts only", () => {
  const head = `version: 1
hosts: { a: { connect: "test:///a" }, b: { connect: "test:///b" } }
vms:
  vm:
    devices:
`;
  const config = parseConfig(
    head +
      "      - { name: gpu, host: a, match: { vendor_device_id: '10de:1b06' } }\n" +
      "      - { name: gpu, host: b, match: { vendor_device_id: '10de:1b80' } }\n",
    { file: "c.yaml" },
  );
  assertEquals(config.vms[0]?.rules.map((r) => [r.name, r.hosts]), [["gpu", ["a"]], ["gpu", [
    "b",
  ]]]);
  const [clash] = errorsOf(
    head +
      "      - { name: gpu, host: a, match: { class: vga } }\n" +
      "      - { name: gpu, match: { class: 3d } }\n",
  );
  assertMatch(clash!.message, /Duplicate rule name "gpu" in VM "vm" .*limit each to other hosts/);
});

Deno.test("parseConfig() takes VM names libvirt takes, spaces inside included", () => {
  const config = parseConfig(`version: 1\nvms:\n  "my vm": { devices: [] }\n`, { file: "c.yaml" });
  assertEquals(config.vms.map((vm) => vm.name), ["my vm"]);
  for (const name of ["a/b", "a\\tb", " x", "x ", "a\\nb"]) {
    const [error] = errorsOf(`version: 1\nvms:\n  "${name}": { devices: [] }\n`);
    assertMatch(error?.message ?? "", /^c\.yaml:3:3: Invalid name ".*" at "vms"/, name);
    // The hint says what is wrong, never to use the domain name the user did use.
    assertMatch(error?.message ?? "", /no "\/" and no control character .* no space at either end/);
  }
});

Deno.test("parseConfig() reads guard: per VM and per rule; a rule inherits its VM's, default enforce", () => {
  const config = parseConfig(
    `version: 1
vms:
  win11:
    guard: warn
    devices:
      - { name: gpu, match: { class: vga } }
      - { name: usb, match: { class: usb }, guard: off }
  nas:
    devices:
      - { name: hba, match: { class: sata } }
      - { name: nic, match: { class: ethernet }, guard: warn }
`,
    { file: "c.yaml" },
  );
  assertEquals(
    config.vms.map((vm) => [vm.name, vm.guard, vm.rules.map((r) => [r.name, r.guard])]),
    [
      ["win11", "warn", [["gpu", "warn"], ["usb", "off"]]],
      ["nas", "enforce", [["hba", "enforce"], ["nic", "warn"]]],
    ],
  );
});

Deno.test("parseConfig() refuses a bad guard: value, located, with a did-you-mean", () => {
  const errors = errorsOf(`version: 1
vms:
  win11:
    guard: enforced
    devices:
      - match: { class: vga }
        guard: warning
      - match: { class: usb }
        guard: false
`);
  assertEquals(errors.map((e) => [e.line, e.column, e.path, e.hint]), [
    [4, 12, "vms.win11.guard", 'did you mean "enforce"?'],
    [7, 16, "vms.win11.devices[0].guard", 'did you mean "warn"?'],
    [9, 16, "vms.win11.devices[1].guard", 'write "off"'],
  ]);
  // Quoted, false is no guard value either: the values it takes are named, not "quote the value".
  assertMatch(
    errors[2]!.message,
    /^c\.yaml:9:16: Expected one of "enforce", "warn", "off", found boolean false at "vms\.win11\.devices\[1\]\.guard" \(write "off"\)$/,
  );
  assertMatch(
    errors[0]!.message,
    /^c\.yaml:4:12: Invalid value "enforced": expected one of "enforce", "warn", "off" at "vms\.win11\.guard"/,
  );
});

Deno.test("parseConfig() locates a name or a key that is a list or a mapping where it is written", () => {
  // yaml reads such a key (`? [1]`) as a new object each time: it is found again by its place.
  const errors = errorsOf(
    "version: 1\nvms:\n  win:\n    devices:\n" +
      '      - match: { vendor_device_id: "10de:2684" }\n' +
      "        ? [1]\n        : 2\n" +
      "  ? { x: 1 }\n  : { devices: [] }\n",
  );
  assertEquals(errors.map((e) => e.message.split(" (")[0]), [
    'c.yaml:6:11: Invalid key: a list at "vms.win.devices[0]"',
    'c.yaml:8:5: Invalid name: a mapping at "vms"',
  ]);
});

Deno.test("parseConfig() takes a VM or host named by a number or a boolean as written", () => {
  const config = parseConfig(
    "version: 1\nhosts:\n  101: {}\nvms:\n  100:\n    devices: []\n  1e3: { devices: [] }\n" +
      "  0x1f: { devices: [] }\n  true: { devices: [] }\n",
    { file: "c.yaml" },
  );
  assertEquals(config.hosts?.map((h) => [h.name, h.location]), [["101", "c.yaml:3:3"]]);
  assertEquals(config.vms.map((vm) => [vm.name, vm.location]), [
    ["100", "c.yaml:5:3"],
    ["1e3", "c.yaml:7:3"],
    ["0x1f", "c.yaml:8:3"],
    ["true", "c.yaml:9:3"],
  ]);
  // The same name quoted beside it is a duplicate, located at the second, as yaml's own are.
  for (const [first, second] of [['"100"', "100"], ["100", '"100"']]) {
    assertEquals(
      errorsOf(`version: 1\nvms:\n  ${first}: { devices: [] }\n  ${second}: { devices: [] }\n`)
        .map((e) => e.message),
      ["c.yaml:4:3: Duplicate key: each key may appear once (merge the two entries)"],
    );
  }
  // A host name refused is that problem alone, not also an empty host list.
  assertEquals(
    errorsOf('version: 1\nhosts:\n  "a b": {}\nvms:\n  vm: { devices: [] }\n').map((e) =>
      e.message.split(" (")[0]
    ),
    ['c.yaml:3:3: Invalid name "a b" at "hosts"'],
  );
});

Deno.test("parseConfig() keeps VMs and hosts named like list indexes in file order", () => {
  // An object lists the keys "100" and "7" first: plan showed VM "100" before "web" above it.
  const config = parseConfig(
    "version: 1\nhosts: { b: {}, 7: {} }\nvms:\n  web: { devices: [] }\n  100: { devices: [] }\n" +
      '  "42": { devices: [] }\n',
    { file: "c.yaml" },
  );
  assertEquals(config.hosts?.map((h) => h.name), ["b", "7"]);
  assertEquals(config.vms.map((vm) => [vm.name, vm.location]), [
    ["web", "c.yaml:4:3"],
    ["100", "c.yaml:5:3"],
    ["42", "c.yaml:6:3"],
  ]);
});

Deno.test("parseConfig() takes two VMs or hosts YAML reads as one value as the two names written", () => {
  // Under %YAML 1.1 yes and on are both true: "Duplicate key" at the second, which is a name here.
  const config = parseConfig(
    "%YAML 1.1\n---\nversion: 1\nhosts: { yes: {}, on: {} }\nvms:\n" +
      "  yes: { host: on, devices: [] }\n  on: { devices: [] }\n  0x64: { devices: [] }\n" +
      "  100.0: { devices: [] }\n",
    { file: "c.yaml" },
  );
  assertEquals(config.hosts?.map((h) => h.name), ["yes", "on"]);
  assertEquals(config.vms.map((vm) => [vm.name, vm.hosts]), [
    ["yes", ["on"]],
    ["on", undefined],
    ["0x64", undefined],
    ["100.0", undefined],
  ]);
  // Written alike they are one key still, and so are two keys elsewhere read as one value.
  assertEquals(
    errorsOf("%YAML 1.1\n---\nversion: 1\nvms:\n  yes: { devices: [] }\n  yes: { devices: [] }\n")
      .map((e) => e.message),
    ["c.yaml:6:3: Duplicate key: each key may appear once (merge the two entries)"],
  );
});

Deno.test("parseConfig() takes host: and hosts: naming a host by a number or a boolean as written", () => {
  // `101:` declares the host "101": `host: 101` names it, as it would quoted.
  const config = parseConfig(
    "version: 1\nhosts:\n  101: {}\n  0x1f: {}\n  true: {}\nvms:\n  vm:\n    hosts: [0x1f, true, 101]\n" +
      '    devices:\n      - match: { vendor_id: "10de" }\n        host: 101\n',
    { file: "c.yaml" },
  );
  assertEquals(config.vms[0]?.hosts, ["0x1f", "true", "101"]);
  assertEquals(config.vms[0]?.rules[0]?.hosts, ["101"]);
  // A host list item that names nothing is still refused where it stands.
  assertEquals(
    errorsOf("version: 1\nhosts:\n  hv1: {}\nvms:\n  vm:\n    hosts: [hv1, ~]\n    devices: []\n")
      .map((e) => e.message.split(" (")[0]),
    ['c.yaml:6:18: Expected a string, found null at "vms.vm.hosts[1]"'],
  );
});

Deno.test("parseConfig() refuses an empty connect: or sysfs:, which would mean a default silently", () => {
  assertEquals(
    errorsOf('version: 1\nhosts:\n  hv1: { connect: "", sysfs: "" }\nvms:\n  vm: { devices: [] }\n')
      .map((e) => e.message),
    [
      'c.yaml:3:19: Empty value at "hosts.hv1.connect" (give a value, or remove the key for the default)',
      'c.yaml:3:30: Empty value at "hosts.hv1.sysfs" (give a value, or remove the key for the default)',
    ],
  );
});

Deno.test("parseConfig() refuses an empty driver:, which no device's driver is", () => {
  // Before: taken, and the rule matched no device on any host.
  assertEquals(
    errorsOf('version: 1\nvms:\n  vm:\n    devices:\n      - match: { class: vga, driver: "" }\n')
      .map((e) => e.message),
    [
      'c.yaml:5:38: Empty value at "vms.vm.devices[0].match.driver" (give a value, or remove the key for the default)',
    ],
  );
});

Deno.test("parseConfig() names the boolean a YAML 1.1 yes, no, on or off meant, and the word a boolean meant", () => {
  // YAML 1.2 reads `managed: no` as the word "no": the hint said to write it "without quotes".
  const errors = errorsOf(`version: 1
vms:
  vm:
    devices:
      - match: { class: vga }
        managed: no
        multifunction: On
        allow_no_flr: "true"
        iommu_group: 0
        rom: { bar: false }
        guard: false
`);
  assertEquals(errors.map((e) => [e.path, e.hint]), [
    ["vms.vm.devices[0].managed", 'write false: YAML 1.2 reads "no" as text'],
    ["vms.vm.devices[0].multifunction", 'write true: YAML 1.2 reads "On" as text'],
    ["vms.vm.devices[0].allow_no_flr", "write true without quotes"],
    ["vms.vm.devices[0].iommu_group", "write true or false without quotes"],
    ["vms.vm.devices[0].rom.bar", 'write "off"'],
    ["vms.vm.devices[0].guard", 'write "off"'],
  ]);
});

Deno.test("parseConfig() names the key a value written under the key it excludes belongs to", () => {
  // The hints said "write a whole number", "quote the value" and "start each item with -".
  const errors = errorsOf(`version: 1
hosts: { a: {}, b: {}, hv1: {} }
vms:
  vm:
    host: [a, b]
    devices:
      - match: { class: vga }
        count: all
      - match: { class: usb }
        hosts: hv1
      - { match: { class: nvme }, count: true }
      - { match: { class: sata }, all: 3 }
      - { match: { class: audio }, count: false }
      - { match: { class: wifi }, count: ALL }
`);
  assertEquals(errors.map((e) => [e.message.split(" at ")[0], e.hint]), [
    [
      "c.yaml:5:11: Expected a string, found a list",
      'a list goes under "hosts:": write hosts: in place of host:',
    ],
    [
      'c.yaml:8:16: Expected an integer, found the string "all"',
      "write all: true in place of count: all",
    ],
    [
      'c.yaml:10:16: Expected a list, found the string "hv1"',
      'one value goes under "host:": write host: hv1, or hosts: [hv1]',
    ],
    [
      "c.yaml:11:42: Expected an integer, found boolean true",
      "write all: true in place of count: true",
    ],
    ["c.yaml:12:40: Expected true or false, found number 3", "write count: 3 in place of all: 3"],
    [
      "c.yaml:13:43: Expected an integer, found boolean false",
      "write a whole number without quotes, e.g. 1",
    ],
    [
      'c.yaml:14:42: Expected an integer, found the string "ALL"',
      "write all: true in place of count: ALL",
    ],
  ]);
});

Deno.test("parseConfig() says what YAML read a text as where a string goes, and to quote it", () => {
  // "found number 41135085296 (quote the value)" did not say the MAC was read as base 60.
  const errors = errorsOf(`%YAML 1.1
---
version: 1
vms:
  vm:
    devices:
      - match: { class: ethernet }
        vf: 0
        interface: { mac: 52:54:00:12:34:56 }
        name: yes
      - { match: { class: usb }, name: 2026-12-07 }
      - { match: { class: vga }, name: ~ }
`);
  assertEquals(errors.map((e) => [e.message.split(" at ")[0], e.hint]), [
    [
      "c.yaml:9:27: Expected a string, found number 41135085296",
      'YAML 1.1 reads 52:54:00:12:34:56 as the sexagesimal (base 60) number 41135085296: quote it, "52:54:00:12:34:56"',
    ],
    [
      "c.yaml:10:15: Expected a string, found boolean true",
      'YAML 1.1 reads yes as the boolean true: quote it, "yes"',
    ],
    [
      "c.yaml:11:40: Expected a string, found an unsupported value",
      'YAML 1.1 reads 2026-12-07 as a date: quote it, "2026-12-07"',
    ],
    ["c.yaml:12:40: Expected a string, found null", 'YAML 1.1 reads ~ as null: quote it, "~"'],
  ]);
  // YAML 1.2 reads hex too; a number written as it prints needs no explaining.
  const hex = errorsOf(
    "version: 1\nvms:\n  vm:\n    devices:\n      - { match: { class: vga }, name: 0x10 }\n" +
      "      - { match: { class: usb }, name: 12 }\n",
  );
  assertEquals(hex.map((e) => e.hint), [
    'YAML reads 0x10 as the number 16: quote it, "0x10"',
    'quote the value: "..."',
  ]);
});

Deno.test("parseConfig() refuses a YAML 1.1 base-60 or octal number where a number goes", () => {
  // `vf: 1:2` passed VF 62 and `boot_order: 010` was 8, where YAML 1.2 reads "1:2" and 10.
  const errors = errorsOf(`%YAML 1.1
---
version: 1
vms:
  vm:
    devices:
      - match: { class: ethernet }
        vf: 1:2
        boot_order: 010
        interface: { vlan: 0x10 }
`);
  assertEquals(errors.map((e) => [e.message.split(" at ")[0], e.hint]), [
    [
      "c.yaml:8:13: Ambiguous number 1:2",
      "YAML 1.1 reads 1:2 as the sexagesimal (base 60) number 62: write the number meant in decimal",
    ],
    [
      "c.yaml:9:21: Ambiguous number 010",
      "YAML 1.1 reads 010 as the octal number 8: write the number meant in decimal",
    ],
  ]);
});

Deno.test("parseConfig() takes a YAML 1.1 octal number that YAML 1.2 reads as the same number", () => {
  // `boot_order: 07` is 7 to both: nothing is ambiguous, only `010` (8 or 10) is.
  const config = parseConfig(
    "%YAML 1.1\n---\nversion: 1\nvms:\n  vm:\n    devices:\n" +
      "      - { match: { class: vga }, boot_order: 07 }\n" +
      "      - { match: { class: usb }, count: 02 }\n",
    { file: "c.yaml" },
  );
  assertEquals(config.vms[0]?.rules.map((r) => [r.bootOrder, r.count]), [[7, 1], [undefined, 2]]);
});

Deno.test("parseConfig() takes a rule name from a block scalar without its line end, and refuses an empty or multi-line one", () => {
  // `name: |` keeps a line end: plan printed 'Rule "gpu\n" of VM "vm"' over two lines.
  const named = rules(
    '      - name: |\n          gpu\n        match: { class: vga }\n      - name: " usb "\n' +
      "        match: { class: usb }\n",
  );
  assertEquals(named.map((r) => r.name), ["gpu", "usb"]);
  const errors = errorsOf(`version: 1
vms:
  vm:
    devices:
      - name: ""
        match: { class: vga }
      - name: "gtx\\n1080"
        match: { class: usb }
      - name: "a\\tb"
        match: { class: nvme }
`);
  assertEquals(errors.map((e) => e.message.split(" (")[0]), [
    'c.yaml:5:15: Invalid name "" at "vms.vm.devices[0].name"',
    'c.yaml:7:15: Invalid name "gtx\\n1080" at "vms.vm.devices[1].name"',
    'c.yaml:9:15: Invalid name "a\\tb" at "vms.vm.devices[2].name"',
  ]);
  assertEquals(
    errors[0]?.hint,
    "expected a rule name on one line, with no tab",
  );
});

Deno.test("parseConfig() names an infinite or not-a-number value as such, not as null", () => {
  // JSON has no Infinity or NaN: the messages said "found number null".
  const errors = errorsOf(`version: 1
vms:
  vm:
    devices:
      - match: { numa_node: .nan }
        count: .inf
        boot_order: 1e400
        guard: -.Inf
`);
  assertEquals(errors.map((e) => e.message.split(" at ")[0]), [
    "c.yaml:5:29: Expected an integer, found number NaN",
    "c.yaml:6:16: Expected an integer, found number Infinity",
    "c.yaml:7:21: Expected an integer, found number Infinity",
    'c.yaml:8:16: Expected one of "enforce", "warn", "off", found number -Infinity',
  ]);
});

Deno.test("parseConfig() echoes a number out of bounds as written, not as the float YAML read", () => {
  // 123456789012345678901234567890 was echoed as 1.2345678901234568e+29.
  const errors = errorsOf(`version: 0x2
vms:
  vm:
    devices:
      - match: { class: vga }
        count: 123456789012345678901234567890
        boot_order: 0o0
        interface: { vlan: 0x1000 }
        vf: 0
`);
  assertEquals(errors.map((e) => e.message.split(" at ")[0]), [
    "c.yaml:1:10: Unsupported value 0x2: expected 1",
    "c.yaml:6:16: Value 123456789012345678901234567890 is too large: the maximum is 2147483647",
    "c.yaml:7:21: Value 0o0 is too small: the minimum is 1",
    "c.yaml:8:28: Value 0x1000 is too large: the maximum is 4095",
  ]);
});

Deno.test("parseConfig() names the values of a rom bar: written as a number or a boolean", () => {
  const errors = errorsOf(`version: 1
vms:
  win11:
    devices:
      - { match: { class: vga }, rom: { bar: 0 } }
      - { match: { class: usb }, rom: { bar: [on] } }
`);
  assertEquals(errors.map((e) => [e.line, e.path, e.message.split(" at ")[0], e.hint]), [
    [
      5,
      "vms.win11.devices[0].rom.bar",
      'c.yaml:5:46: Expected one of "on", "off", found number 0',
      null,
    ],
    [
      6,
      "vms.win11.devices[1].rom.bar",
      'c.yaml:6:46: Expected one of "on", "off", found a list',
      "write a single value",
    ],
  ]);
});

Deno.test("the JSON schema describes each ID as parseConfig() reads it", () => {
  const match = JSON.parse(configJsonSchemaText()).properties.vms.additionalProperties.properties
    .devices.items.properties.match.properties;
  // Leading zeros may be left out: "de" is "00de", as the description now says.
  const [rule] = rules(`      - match: { vendor_id: "de", device_id: "0x2684" }\n`);
  assertEquals(rule?.match, { vendorId: "00de", deviceId: "2684" });
  // Each key's example is a value of that key: a device ID example is no vendor ID.
  const examples = ["vendor_id", "device_id", "subsystem_vendor_id", "subsystem_device_id"].map(
    (key) => {
      const description: string = match[key].description;
      assertMatch(description, /: up to 4 hex digits \(leading zeros optional\), /);
      return /e\.g\. "([0-9a-f]{4})"/.exec(description)?.[1];
    },
  );
  assertEquals(examples, ["10de", "2684", "1043", "88e2"]);
});

Deno.test("every class name stands for classes PCI defines (the system's pci.ids)", () => {
  // "thunderbolt" stood for 0c0a, which PCI does not define: it matched nothing on any host.
  const defined = new Set<string>();
  let base = "", sub = "";
  for (const line of Deno.readTextFileSync("/usr/share/misc/pci.ids").split("\n")) {
    const c = /^C ([0-9a-f]{2}) /.exec(line);
    const s = /^\t([0-9a-f]{2}) /.exec(line);
    const p = /^\t\t([0-9a-f]{2}) /.exec(line);
    if (c) [base, sub] = [c[1]!, ""];
    else if (!line.startsWith("\t") && !line.startsWith("#") && line !== "") base = "";
    if (c) defined.add(base);
    else if (s && base !== "") defined.add(sub = base + s[1]);
    else if (p && sub !== "") defined.add(sub + p[1]);
  }
  const undefinedPrefixes = Object.entries(CLASS_NAMES).flatMap(([name, prefixes]) =>
    prefixes.filter((p) => !defined.has(p)).map((p) => `${name}: ${p}`)
  );
  assertEquals(undefinedPrefixes, []);
});

Deno.test("loadConfig() throws ConfigReadError whose problem says missing or a loop of links", async () => {
  // docs/LIBRARY.md: a script tells these apart by `problem`, not by the message.
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-h148-config-read-" });
  try {
    Deno.symlinkSync(`${dir}/b.yaml`, `${dir}/a.yaml`);
    Deno.symlinkSync(`${dir}/a.yaml`, `${dir}/b.yaml`);
    for (const [path, problem] of [[`${dir}/none.yaml`, "missing"], [`${dir}/a.yaml`, "loop"]]) {
      const error = await loadConfig(path!).then(() => null, (e: unknown) => e);
      assertOk(error instanceof ConfigReadError, `${path}: ${error}`);
      assertEquals([error.path, error.problem], [path, problem]);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
