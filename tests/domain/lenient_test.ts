/**
 * The lenient reader. `scanHostdevsLeniently()`: the host PCI
 * addresses a domain XML names even when `parseDomainXml()` refuses it, so planning can count them
 * as held. It must take every host source address whatever the quoting, order, spacing and number
 * base, never the guest slot, say when a possible PCI device names no readable address, and never
 * throw. `normaliseXmlLine()`: the comparison key of one line of a definition, for diffs.
 */

import fc from "fast-check";
import {
  assert,
  assertCpuWithin,
  assertEquals,
  assertOk,
  assertThrows,
} from "../helpers/assert.ts";
import { editDomainXml, METADATA_NAMESPACE, parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { decodeXmlText } from "../../lib/domain/xml.ts";
import { decodeEntities } from "../../lib/domain/entities.ts";
import {
  normaliseXmlLine,
  normaliseXmlLines,
  readRecordsLeniently,
  RECORDS_NAMESPACE,
  RECORDS_PROBLEMS,
  scanHostdevPoolLeniently,
  scanHostdevsLeniently,
  scanNetworkInterfacesLeniently,
  scanPassedDevicesLeniently,
} from "../../lib/domain/lenient.ts";
import type { DeviceIdentity } from "../../lib/plan/types.ts";
import { canonicalPciAddress } from "../../lib/pci/address.ts";
import { noDevices } from "../../lib/domain/device_uses.ts";
import { recordCase } from "../../scripts/reliability_report.ts";

const FIXTURES = new URL("../fixtures/domains/", import.meta.url);

/** A domain whose devices are `devices`, damaged so that parseDomainXml() refuses it. */
function broken(devices: string): string {
  return `<domain type='kvm'><name>vm</name><devices>\n${devices}\n</devices>\n<oops></domain>`;
}

function assertRefusedStrictly(xml: string): void {
  assertThrows(() => parseDomainXml(xml));
}

Deno.test("scanHostdevsLeniently() reads single, double and mixed quotes", () => {
  const xml = broken(`
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>
    </hostdev>
    <hostdev mode="subsystem" type="pci" managed="no">
      <source><address domain="0x0000" bus="0x02" slot="0x00" function="0x1"/></source>
    </hostdev>
    <hostdev mode="subsystem" type='pci'>
      <source><address domain='0x0000' bus="0x03" slot='0x00' function="0x2"/></source>
    </hostdev>`);
  assertRefusedStrictly(xml);
  assertEquals(scanHostdevsLeniently(xml), {
    addresses: ["0000:01:00.0", "0000:02:00.1", "0000:03:00.2"],
    unresolved: 0,
  });
});

Deno.test("scanHostdevsLeniently() reads attributes in any order, with whitespace around =", () => {
  const xml = broken(`
    <hostdev
        managed = 'yes'
        type= "pci"	mode ='subsystem'   >
      <source  >
        <address   function = "0x3"
           slot='0x1f' bus = '0x0b'
           domain="0x0001"   />
      </source >
    </hostdev >`);
  assertRefusedStrictly(xml);
  assertEquals(scanHostdevsLeniently(xml), { addresses: ["0001:0b:1f.3"], unresolved: 0 });
});

Deno.test("scanHostdevsLeniently() never takes the guest-side address outside <source>", () => {
  // Host 0000:41:00.0; the guest slots 0000:00:07.0 (after </source>) and 0000:00:09.0 (before
  // <source>) are the VM's own PCI layout and must not be counted as host devices.
  const xml = broken(`
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x09' function='0x0'/>
      <source>
        <address domain='0x0000' bus='0x41' slot='0x00' function='0x0'/>
      </source>
      <alias name='hostdev0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0' multifunction='on'/>
    </hostdev>`);
  assertRefusedStrictly(xml);
  assertEquals(scanHostdevsLeniently(xml), { addresses: ["0000:41:00.0"], unresolved: 0 });

  // With no host address at all, the guest address is still not taken: the hostdev counts as
  // unresolved instead.
  for (
    const source of [
      "<source/>",
      "<source></source>",
      "<source>", // never closed: the guest address below must not be read as inside it
    ]
  ) {
    const noHost = broken(`
    <hostdev mode='subsystem' type='pci' managed='yes'>
      ${source}
      <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>
    </hostdev>`);
    assertEquals(scanHostdevsLeniently(noHost), { addresses: [], unresolved: 1 }, source);
  }
  // A stray </source> after the guest address does not close an empty <source/>.
  const stray = broken(`
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>
      </source>
    </hostdev>`);
  assertEquals(scanHostdevsLeniently(stray), { addresses: [], unresolved: 1 });
});

Deno.test("scanHostdevsLeniently() takes <source> and <address> by their whole names", () => {
  // Elements whose names only start with "source" or "address" (another schema's, or damage)
  // hold no host address: the one in <source><address> is taken, never theirs.
  const xml = broken(`
    <hostdev mode='subsystem' type='pci'>
      <sourcex><address domain='0' bus='0x09' slot='0' function='0'/></sourcex>
      <source>
        <addressx domain='0' bus='0x08' slot='0' function='0'/>
        <address domain='0' bus='0x41' slot='0' function='0'/>
      </source>
    </hostdev>`);
  assertEquals(scanHostdevsLeniently(xml), { addresses: ["0000:41:00.0"], unresolved: 0 });
});

Deno.test("scanHostdevsLeniently() reads hex and decimal numbers as libvirt does", () => {
  const xml = broken(`
    <hostdev mode='subsystem' type='pci'><source><address domain='0' bus='10' slot='31' function='7'/></source></hostdev>
    <hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='0x10' slot='0x1f' function='0x7'/></source></hostdev>
    <hostdev mode='subsystem' type='pci'><source><address domain='0X0000' bus='0X0A' slot='0x1F' function='0x0'/></source></hostdev>
    <hostdev mode='subsystem' type='pci'><source><address bus='0x21' slot='0x00' function='0x1'/></source></hostdev>
    <hostdev mode='subsystem' type='pci'><source><address bus='&#x30;x22' slot='0x00' function='0'/></source></hostdev>`);
  assertRefusedStrictly(xml);
  assertEquals(scanHostdevsLeniently(xml), {
    // decimal 10 is bus 0x0a; a missing domain is 0; character references are decoded.
    addresses: ["0000:0a:1f.0", "0000:0a:1f.7", "0000:10:1f.7", "0000:21:00.1", "0000:22:00.0"],
    unresolved: 0,
  });
});

Deno.test("scanHostdevsLeniently() reads <interface type='hostdev'> sources, not other interfaces", () => {
  const xml = broken(`
    <interface type='network'>
      <source network='default'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </interface>
    <interface managed="yes" type="hostdev">
      <mac address='52:54:00:6d:90:02'/>
      <source>
        <address type='pci' domain='0x0000' bus='0x01' slot='0x10' function='0x4'/>
      </source>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </interface>
    <interface type='hostdev'><source><address type="pci" function="0x2" slot="0x10" bus="0x01"/></source></interface>`);
  assertRefusedStrictly(xml);
  assertEquals(scanHostdevsLeniently(xml), {
    addresses: ["0000:01:10.2", "0000:01:10.4"],
    unresolved: 0,
  });
  // A type that cannot be read (unquoted) but says hostdev: taken to be a hostdev interface.
  const unquoted = broken(
    `<interface type=hostdev><source><address type='pci' domain='0' bus='0x05' slot='0' function='0'/></source></interface>`,
  );
  assertEquals(scanHostdevsLeniently(unquoted), { addresses: ["0000:05:00.0"], unresolved: 0 });
});

Deno.test("scanHostdevsLeniently() sorts and removes duplicates", () => {
  const hostdev = (bus: string) =>
    `<hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='${bus}' slot='0x00' function='0x0'/></source></hostdev>`;
  const xml = broken([hostdev("0x4c"), hostdev("0x01"), hostdev("0x4c"), hostdev("1")].join("\n"));
  assertEquals(scanHostdevsLeniently(xml).addresses, ["0000:01:00.0", "0000:4c:00.0"]);
});

Deno.test("scanHostdevsLeniently() skips usb, scsi, vhost-scsi and mdev hostdevs without counting them unresolved", () => {
  const xml = broken(`
    <hostdev mode='subsystem' type='usb' managed='yes'>
      <source><vendor id='0x046d'/><product id='0xc52b'/></source>
      <address type='usb' bus='0' port='1'/>
    </hostdev>
    <hostdev mode='subsystem' type='scsi'><source><adapter name='scsi_host0'/><address bus='0' target='0' unit='0'/></source></hostdev>
    <hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='c2177883-f1bb-47f0-914d-32a22e3a8804'/></source></hostdev>
    <hostdev mode='subsystem' type='scsi_host'><source protocol='vhost' wwpn='naa.5001405df3e54061'/></hostdev>
    <hostdev mode='capabilities' type='storage'><source><block>/dev/sdf1</block></source></hostdev>`);
  assertRefusedStrictly(xml);
  assertEquals(scanHostdevsLeniently(xml), { addresses: [], unresolved: 0 });
});

Deno.test("scanHostdevsLeniently() counts possible PCI devices with no readable host address as unresolved", () => {
  const cases: [string, number][] = [
    ["<hostdev>", 1], // no type: may be PCI
    ["<hostdev mode='subsystem' type='pci'/>", 1],
    [
      "<hostdev mode='subsystem' type='pci'><source><address bus='zz' slot='0' function='0'/></source></hostdev>",
      1,
    ],
    [
      "<hostdev mode='subsystem' type='pci'><source><address bus='0x01' slot='0x20' function='0'/></source></hostdev>",
      1,
    ],
    [
      "<hostdev mode='subsystem' type='pci'><source><address bus='0x01' slot='0x00' function='0x0",
      1,
    ],
    ["<hostdev mode='subsystem' type='pci", 1], // start tag never closes
    ["<interface type='hostdev'><source/></interface>", 1],
    ["<interface type='hostdev", 1],
    ["<interface type='network", 0],
    ["<hostdev type=pci><source><address bus='0x05' slot='0' function='0'/></source></hostdev>", 0],
  ];
  for (const [devices, unresolved] of cases) {
    const xml = broken(devices);
    assertRefusedStrictly(xml);
    assertEquals(scanHostdevsLeniently(xml).unresolved, unresolved, devices);
  }
  // An unquoted type is unreadable, so the hostdev is taken as a possible PCI device.
  assertEquals(
    scanHostdevsLeniently(
      broken(
        "<hostdev type=pci><source><address bus='0x05' slot='0' function='0'/></source></hostdev>",
      ),
    ).addresses,
    ["0000:05:00.0"],
  );
});

Deno.test("scanHostdevsLeniently() ignores comments, CDATA, processing instructions and <metadata>", () => {
  const pci =
    `<hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='0x09' slot='0x00' function='0x0'/></source></hostdev>`;
  const xml = `<domain type='kvm'><name>vm</name>
  <description><![CDATA[${pci}<hostdev>]]></description>
  <metadata>
    <other:devices xmlns:other='urn:someone:else'><hostdev xmlns='urn:someone:else'/>${pci}</other:devices>
    <passthrough:hostdevs xmlns:passthrough="urn:passthrough:hostdevs:1">
      <passthrough:device address="0000:0a:00.0" vendor="10de" device="1b80" class="030000" rule="gpu"/>
    </passthrough:hostdevs>
  </metadata>
  <devices>
    <!-- ${pci} <hostdev> -->
    <?pi ${pci} <hostdev> ?>
    <hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='0x0a' slot='0x00' function='0x0'/></source></hostdev>
  </devices>
</domain`;
  assertRefusedStrictly(xml);
  assertEquals(scanHostdevsLeniently(xml), { addresses: ["0000:0a:00.0"], unresolved: 0 });
  // An unterminated comment or metadata hides nothing: what follows may still be devices.
  assertEquals(scanHostdevsLeniently(`<domain><metadata><devices>${pci}`).addresses, [
    "0000:09:00.0",
  ]);
  assertEquals(scanHostdevsLeniently(`<domain><!-- <devices>${pci}`).addresses, ["0000:09:00.0"]);
  // Each alone: a CDATA section or a processing instruction is skipped without a comment near.
  for (const hider of [`<![CDATA[${pci}]]>`, `<?pi ${pci} ?>`]) {
    assertEquals(scanHostdevsLeniently(broken(hider)).addresses, [], hider);
  }
});

Deno.test("scanHostdevsLeniently() blanks <metadata> to its own end tag, not the first one", () => {
  const fake = (bus: string) =>
    `<hostdev xmlns="urn:b" mode="subsystem" type="pci"><source><address domain="0x0000" ` +
    `bus="0x${bus}" slot="0x00" function="0x0"/></source></hostdev>`;
  const real =
    `<hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='0x0a' slot='0x00' function='0x0'/></source></hostdev>`;
  // What libvirt keeps verbatim in another application's metadata: its own (unprefixed)
  // <metadata> element, and comments, CDATA and processing instructions saying </metadata>.
  const hiders = [
    `<app:x xmlns:app="urn:app"><metadata xmlns="urn:b">x</metadata>${fake("07")}</app:x>`,
    `<app:x xmlns:app="urn:app"><metadata xmlns="urn:b"><metadata/></metadata>${
      fake("07")
    }</app:x>`,
    `<app:x xmlns:app="urn:app"><!-- </metadata> -->${fake("07")}</app:x>`,
    `<app:x xmlns:app="urn:app"><![CDATA[</metadata>]]>${fake("07")}</app:x>`,
    `<app:x xmlns:app="urn:app"><?app </metadata> ?>${fake("07")}</app:x>`,
    `<app:x xmlns:app="urn:app"><metadata xmlns="urn:b">x</metadata >${fake("07")}</app:x>`,
  ];
  for (const metadata of hiders) {
    const xml = `<domain type='kvm'><name>vm</name>
  <metadata>
    ${metadata}
  </metadata>
  <devices>${real}</devices>
</domain>`;
    assertEquals(scanPassedDevicesLeniently(xml).devices, [
      { address: "0000:0a:00.0", element: "hostdev" },
    ], metadata);
  }
  // A <metadataX> is not a <metadata>; an unclosed nested one leaves the rest to be scanned.
  const unclosed = `<domain><metadata><metadata>${fake("07")}</metadata><devices>${real}`;
  assertEquals(scanHostdevsLeniently(unclosed).addresses, ["0000:07:00.0", "0000:0a:00.0"]);
  const other = `<domain><metadata><metadataX></metadataX>${fake("07")}</metadata>${real}`;
  assertEquals(scanHostdevsLeniently(other).addresses, ["0000:0a:00.0"]);
  // A nested <metadata> whose start tag cannot be read: where the outer one ends is unknown, so
  // nothing is hidden.
  const damaged = `<domain><metadata><metadata a='1>${
    fake("07")
  }</metadata></metadata><devices>${real}`;
  assertEquals(scanHostdevsLeniently(damaged).addresses, ["0000:07:00.0", "0000:0a:00.0"]);
  recordCase({
    area: "domain-xml",
    name:
      "another application's metadata saying </metadata> (nested <metadata>, comment, CDATA, PI) before devices of its own",
    count: hiders.length,
    outcome:
      "its content stays metadata: no device added, relabelled or hidden (the start guard's scan)",
    test: "tests/domain/lenient_test.ts",
  });
});

Deno.test("scanHostdevPoolLeniently() reads the <forward> after metadata that says </metadata>", () => {
  const network = (metadata: string) =>
    `<networkstatus><network><name>pool1</name>
    <metadata><app:x xmlns:app="urn:app">${metadata}</app:x></metadata>
    <forward mode='hostdev' managed='yes'><pf dev='ifb0'/>
      <address type='pci' domain='0x0000' bus='0x07' slot='0x10' function='0x2'/>
    </forward></network></networkstatus>`;
  for (
    const metadata of [
      `<y/>`,
      `<metadata xmlns="urn:b">x</metadata><forward xmlns="urn:b" mode="bridge"/>`,
      `<!-- </metadata> --><forward xmlns="urn:b" mode="nat"/>`,
    ]
  ) {
    assertEquals(scanHostdevPoolLeniently(network(metadata)), {
      addresses: ["0000:07:10.2"],
      unresolved: 0,
      pfs: ["ifb0"],
    }, metadata);
    const bridged = network(metadata).replace("mode='hostdev'", "mode='bridge'");
    assertEquals(scanNetworkInterfacesLeniently(bridged), {
      kind: "bridged",
      interfaces: ["ifb0"],
    }, metadata);
  }
});

Deno.test("scanHostdevsLeniently() returns nothing for garbage and never throws", () => {
  for (
    const garbage of [
      "",
      "not xml at all",
      "<<<>>>",
      "<hostdev",
      "<interface",
      "</hostdev></source></address>",
      "<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>",
      "<source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>",
      "\u0000\uffff<hostdev\u0000type='pci'>",
      "<hostdev mode='subsystem' type='pci'><source><address bus='&bogus;' slot='0' function='0'/></source></hostdev>",
    ]
  ) {
    const scan = scanHostdevsLeniently(garbage);
    assertEquals(scan.addresses, [], garbage);
  }
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string({ unit: "binary", maxLength: 400 }),
        fc.array(
          fc.constantFrom(
            "<hostdev",
            " type='pci'",
            ' type="hostdev"',
            "<interface",
            "<source",
            "</source>",
            "<address",
            " bus='0x01'",
            " slot='0x00'",
            " function='0x0'",
            "/>",
            ">",
            "<metadata>",
            "</metadata>",
            "<!--",
            "-->",
            "'",
            '"',
            "</hostdev>",
          ),
          { maxLength: 60 },
        ).map((parts) => parts.join("")),
      ),
      (text) => {
        const { addresses, unresolved } = scanHostdevsLeniently(text);
        assert(Number.isInteger(unresolved) && unresolved >= 0);
        assertEquals(addresses, [...new Set(addresses)].sort());
        for (const a of addresses) assertEquals(canonicalPciAddress(a), a);
      },
    ),
    { seed: 20261124, numRuns: 500 },
  );
});

Deno.test("scanHostdevsLeniently() stays linear on hostile input", () => {
  const hostile = [
    "<hostdev a='".repeat(50_000),
    "<hostdev type='pci'><source>".repeat(50_000),
    "<metadata><!--<![CDATA[<?".repeat(50_000),
    `<interface type='hostdev'>${"<source ".repeat(50_000)}`,
  ];
  for (const text of hostile) {
    // Quadratic scanning of these takes minutes; linear takes milliseconds.
    assertCpuWithin(5_000, () => scanHostdevsLeniently(text), `${text.slice(0, 30)}...`);
  }
});

Deno.test("scanHostdevsLeniently() agrees with parseDomainXml() on every readable fixture", () => {
  let compared = 0;
  for (const entry of Deno.readDirSync(FIXTURES)) {
    if (!entry.name.endsWith(".xml")) continue;
    const xml = Deno.readTextFileSync(new URL(entry.name, FIXTURES));
    let strict;
    try {
      strict = parseDomainXml(xml);
    } catch {
      continue;
    }
    const expected = [
      ...new Set([...strict.hostdevs.map((h) => h.address), ...strict.interfaceHostdevs]),
    ].sort();
    assertEquals(scanHostdevsLeniently(xml), { addresses: expected, unresolved: 0 }, entry.name);
    compared++;
  }
  assert(compared >= 5, `only ${compared} fixtures compared`);
});

Deno.test("normaliseXmlLines() stays linear on a comment libvirt keeps in <metadata>", () => {
  // libvirt keeps another application's comments and CDATA in <metadata> as written, and a
  // line's key is taken whatever the line holds: `<!-- <<<<…` of 80 KB held `plan` a minute.
  const long = 100_000;
  for (
    const line of [
      `<!-- ${"<".repeat(long)} -->`,
      `<!-- ${"<a '".repeat(long / 4)} -->`,
      `<![CDATA[${"<a".repeat(long / 2)}]]>`,
      `<!-- <a${" ".repeat(long)}x -->`,
      `<!-- <a${" ".repeat(long)}b> -->`,
      `<!-- <a b${" ".repeat(long)}= -->`,
    ]
  ) {
    assertCpuWithin(
      5_000,
      () => normaliseXmlLines([line, `  ${line}`]),
      `${line.slice(0, 12)}…`,
    );
  }
  // What the keys are for is unchanged: layout inside a tag does not count.
  assertEquals(
    normaliseXmlLine(`<rom  bar="on"   file='x' ></rom>`),
    normaliseXmlLine(`<rom bar='on' file='x'/>`),
  );
});

Deno.test("normaliseXmlLine() leaves quotes in text content alone", () => {
  assertEquals(normaliseXmlLine(`<d>say "x"</d>`), `<d>say "x"</d>`);
  assertEquals(normaliseXmlLine(`<d k="v">x = "y"</d>`), `<d k='v'>x = "y"</d>`);
});

Deno.test("normaliseXmlLine() normalises a start tag continued on the next line", () => {
  assertEquals(
    normaliseXmlLine(`    <disk type="file"  device="disk"`),
    normaliseXmlLine(`<disk type='file' device='disk'`),
  );
  assertOk(normaliseXmlLine(`<disk type='file'`) !== normaliseXmlLine(`<disk type='block'`));
});

// ---------------------------------------------------------------------------------------------
// readRecordsLeniently(): the start guard reads the records with it alone, so it must read what
// the strict reader reads and fail closed on anything else.

const RECORD: DeviceIdentity = {
  address: "0000:0b:00.0",
  vendorId: "10de",
  deviceId: "1b06",
  subsystemVendorId: "1458",
  subsystemDeviceId: "3730",
  classCode: "030000",
  serial: null,
  driver: "nouveau",
  rule: "gpu",
};

/** A well-formed domain whose `<metadata>` holds `metadata`. */
function withMetadata(metadata: string, devices = ""): string {
  return `<?xml version="1.0"?>
<domain type='kvm'>
  <name>vm</name>
  <metadata>
    ${metadata}
  </metadata>
  <devices>${devices}</devices>
</domain>
`;
}

const OURS = `<pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">
      <pt:device address="0000:0b:00.0" vendor="10de" device="1b06" subsystem-vendor="1458" subsystem-device="3730" class="030000" driver="nouveau" rule="gpu"/>
    </pt:hostdevs>`;

const UNREADABLE = "the domain XML holds passthrough records that cannot be read";

function assertReadsLikeStrict(xml: string, message?: string): void {
  const { records, vfRecords, uuid } = parseDomainXml(xml);
  assertEquals(
    readRecordsLeniently(xml),
    { records, vfRecords, problem: null, wellFormed: true, uuid },
    message,
  );
}

Deno.test("readRecordsLeniently() names the namespace domain_xml.ts writes", () => {
  assertEquals(RECORDS_NAMESPACE, METADATA_NAMESPACE);
});

Deno.test("readRecordsLeniently() reads what parseDomainXml() reads, whatever the quotes and prefix", () => {
  const variants = [
    OURS,
    OURS.replaceAll('"', "'"),
    OURS.replaceAll("pt:", "passthrough:").replace("xmlns:pt=", "xmlns:passthrough="),
    // The default namespace: no prefix at all.
    OURS.replaceAll("pt:", "").replace("xmlns:pt=", "xmlns="),
    // Spaces around =, attributes spread over lines, an explicit end tag.
    OURS.replace('address="0000:0b:00.0"', 'address = "0000:0b:00.0"\n        ')
      .replace('rule="gpu"/>', 'rule="gpu" ></pt:device>'),
    // Two records, the first with an explicit end tag: the second is read too.
    OURS.replace(
      'rule="gpu"/>',
      'rule="gpu"></pt:device>\n      <pt:device address="0000:0b:00.1" vendor="10de" device="10ef" class="040300" rule="gpu"/>',
    ),
    // Entities in values and in the namespace itself.
    OURS.replace('rule="gpu"', 'rule="a&amp;b &quot;q&quot; &#x3c;"')
      .replace("urn:passthrough:hostdevs:1", "urn&#58;passthrough:hostdevs:1"),
    // Another application's element beside ours, with a device of its own.
    `<other:hostdevs xmlns:other="urn:example:other"><other:device address="0000:0c:00.0"/></other:hostdevs>\n${OURS}`,
    // A self-closing records element: none.
    `<pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1"/>`,
    // Names XML allows beyond ASCII, which libvirt keeps in another application's metadata.
    `<app:données xmlns:app="urn:app"><app:café·1 app:été="oui"/><ö:x xmlns:ö="urn:ö"/></app:données>\n${OURS}`,
  ];
  for (const metadata of variants) {
    const xml = withMetadata(metadata);
    assertReadsLikeStrict(xml, metadata);
  }
  assertEquals(readRecordsLeniently(withMetadata(OURS)).records, [RECORD]);
  assertEquals(
    readRecordsLeniently(withMetadata(variants[5]!)).records.map((r) => r.address),
    ["0000:0b:00.0", "0000:0b:00.1"],
  );
  assertEquals(
    readRecordsLeniently(withMetadata(variants[6]!)).records[0]!.rule,
    'a&b "q" <',
  );
});

Deno.test("readRecordsLeniently() reads vf: interface records as parseDomainXml() does, and fails closed on a damaged one", () => {
  const vf =
    `<pt:interface address="0000:07:10.1" vf="3" mac="52:54:00:AB:CD:EF" pf-address="0000:07:00.0" vendor="8086" device="10c9" class="020000" serial="00-1b-21-ff-ff-a0-b1-c2" rule="uplink"/>`;
  const xml = withMetadata(OURS.replace("</pt:hostdevs>", `${vf}\n</pt:hostdevs>`));
  assertReadsLikeStrict(xml);
  const read = readRecordsLeniently(xml).vfRecords;
  assertEquals(read.map((r) => [r.address, r.index, r.mac, r.pf.address, r.pf.rule]), [
    ["0000:07:10.1", 3, "52:54:00:ab:cd:ef", "0000:07:00.0", "uplink"],
  ]);
  // Edited by hand in a spelling the config takes: read as the config reads it.
  const dashed = withMetadata(
    OURS.replace(
      "</pt:hostdevs>",
      `${vf.replaceAll(":AB:CD:EF", "-AB-CD-EF").replace("52:54:00", "52-54-00")}\n</pt:hostdevs>`,
    ),
  );
  assertEquals(readRecordsLeniently(dashed).vfRecords.map((r) => r.mac), ["52:54:00:ab:cd:ef"]);
  for (
    const damaged of [
      vf.replace(' vf="3"', ""),
      vf.replace('vf="3"', 'vf="x"'),
      vf.replace(' mac="52:54:00:AB:CD:EF"', ""),
      vf.replace('mac="52:54:00:AB:CD:EF"', 'mac="52:54:zz"'),
    ]
  ) {
    const result = readRecordsLeniently(
      withMetadata(OURS.replace("</pt:hostdevs>", `${damaged}</pt:hostdevs>`)),
    );
    assertEquals([result.records, result.vfRecords], [[], []], damaged);
    assertEquals(result.problem?.startsWith(UNREADABLE), true, damaged);
  }
});

Deno.test("readRecordsLeniently() skips comments and CDATA that hold fake records", () => {
  const fake = `<pt:device address="0000:0c:00.0" vendor="1" device="2" class="3" rule="x"/>`;
  const xml = withMetadata(
    OURS.replace(
      "</pt:hostdevs>",
      `<!-- ${fake} <pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1"> -->` +
        `<![CDATA[ ${fake} ]]><?pi ${fake} ?></pt:hostdevs>`,
    ),
    `<!-- <hostdev> ${fake} -->`,
  );
  assertReadsLikeStrict(xml);
  assertEquals(readRecordsLeniently(xml).records.map((r) => r.address), ["0000:0b:00.0"]);
  // Records only in a comment: none, and nothing to distrust.
  const commented = withMetadata(`<!-- ${OURS} -->`);
  assertEquals(readRecordsLeniently(commented), {
    records: [],
    vfRecords: [],
    problem: null,
    wellFormed: true,
    uuid: parseDomainXml(commented).uuid,
  });
});

Deno.test("readRecordsLeniently() reads a record's tag however its attributes and end are spelled, as the strict reader", () => {
  // The walk reads each tag in place, attribute by attribute: what separates them, either quote,
  // a `>` or `<` in a value, what ends the tag (`/>`, `>` and an end tag, with spaces or not).
  const space = fc.constantFrom("", " ", "\n  ", "\t");
  const value = fc.constantFrom("gpu", "a>b", "a<b", "it's", 'say "x"', "&amp;", "&bad;", "");
  const attribute = fc.tuple(
    fc.constantFrom("rule", "x", "rule"),
    space,
    space,
    value,
    fc.boolean(),
  )
    .map(([name, before, after, v, single]) => {
      const quote = single ? "'" : '"';
      return { name, text: `${name}${before}=${after}${quote}${v}${quote}` };
    });
  const end = fc.constantFrom(
    "/>",
    " />",
    "/ >",
    ">",
    " >",
    "></pt:device>",
    "></pt:device >",
    "></pt:device x='1'>",
    "> </pt:device\n>",
  );
  fc.assert(
    fc.property(fc.array(fc.tuple(space, attribute), { maxLength: 3 }), end, (extra, close) => {
      const base = 'pt:device address="0000:0b:00.0" vendor="10de" device="1b06" class="030000"';
      const attributes = extra.map(([before, a]) => `${before === "" ? " " : before}${a.text}`);
      const tag = `<${base}${attributes.join("")}${close}`;
      const xml = withMetadata(OURS.replace(/<pt:device [^]*?\/>/, tag));
      let strict: ReturnType<typeof parseDomainXml> | null;
      try {
        strict = parseDomainXml(xml);
      } catch {
        strict = null;
      }
      const lenient = readRecordsLeniently(xml);
      if (strict === null) {
        assertEquals([lenient.records, lenient.wellFormed], [[], false], tag);
        assertOk(lenient.problem?.startsWith(UNREADABLE), tag);
      } else {
        assertReadsLikeStrict(xml, tag);
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("readRecordsLeniently() reads the records of every domain editDomainXml() writes", () => {
  const base = Deno.readTextFileSync(new URL("metadata.xml", FIXTURES));
  const hex4 = fc.stringMatching(/^[0-9a-f]{4}$/);
  const text = fc.string({ unit: "grapheme", maxLength: 12 }).filter((t) =>
    // What an attribute can carry at all: XML characters only.
    // deno-lint-ignore no-control-regex
    !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/.test(t)
  );
  const record = fc.record({
    address: fc.constantFrom("0000:01:00.0", "0000:0b:00.1", "0001:ff:1f.7"),
    vendorId: hex4,
    deviceId: hex4,
    subsystemVendorId: fc.option(hex4),
    subsystemDeviceId: fc.option(hex4),
    classCode: fc.stringMatching(/^[0-9a-f]{6}$/),
    serial: fc.option(text),
    driver: fc.option(text),
    rule: text,
  });
  fc.assert(
    fc.property(fc.uniqueArray(record, { selector: (r) => r.address, maxLength: 3 }), (records) => {
      const xml = editDomainXml(base, { remove: [], add: [], records });
      assertReadsLikeStrict(xml);
    }),
    { numRuns: 200 },
  );
});

Deno.test("readRecordsLeniently() reads only the records element's children as records", () => {
  // Records in the default namespace, then another application's metadata with <device> elements
  // of its own: those are not records, and do not make the records unreadable.
  const ours = OURS.replaceAll("pt:", "").replace("xmlns:pt=", "xmlns=");
  const xml = withMetadata(
    `${ours}\n    <app xmlns="urn:app"><device kind="disk"/></app>`,
  );
  const read = readRecordsLeniently(xml);
  assertEquals([read.problem, read.records.map((r) => r.address)], [null, ["0000:0b:00.0"]]);
  assertReadsLikeStrict(xml);
  // An element of the records' namespace inside a record is refused by both, whatever its name:
  // a record there would be passed over.
  const record = OURS.split("\n")[1]!.trim().replace("/>", ">");
  for (
    const inner of [
      `<pt:device address="0000:0c:00.0" vendor="10de" device="1b06" class="030000" rule="x"/>`,
      `<pt:device kind="x"/>`,
    ]
  ) {
    const nested = withMetadata(
      `<pt:hostdevs xmlns:pt="${RECORDS_NAMESPACE}">${record}${inner}</pt:device></pt:hostdevs>`,
    );
    assertEquals(readRecordsLeniently(nested).records, [], inner);
    assertEquals(
      readRecordsLeniently(nested).problem,
      `${UNREADABLE}: ${RECORDS_PROBLEMS.notARecord}`,
      inner,
    );
    assertOk(strictRefuses(nested), inner);
  }
});

/** Whether parseDomainXml() refuses `xml`. */
function strictRefuses(xml: string): boolean {
  try {
    parseDomainXml(xml);
    return false;
  } catch {
    return true;
  }
}

Deno.test("parseDomainXml() and readRecordsLeniently() reach one verdict on every element beside the records", () => {
  const ns = RECORDS_NAMESPACE;
  const device = (prefix: string, address: string, declare = "") =>
    `<${prefix}device${declare} address="${address}" vendor="10de" device="10ef" class="040300" rule="gpu"/>`;
  const beside = (inside: string) =>
    OURS.replace("</pt:hostdevs>", `  ${inside}\n    </pt:hostdevs>`);
  // `null`: both refuse; else the addresses both read. An element in the records' namespace that
  // neither reads as a record is refused, not ignored: a record in a form this version does not
  // read would leave its device unchecked at start and taken for a hand-added one by `plan`.
  const cases: [string, string, string[] | null][] = [
    ["only the records", OURS, ["0000:0b:00.0"]],
    ["a second records element", `${OURS}\n${OURS}`, null],
    [
      "a second records element, another prefix",
      `${OURS}\n${OURS.replaceAll("pt:", "q:").replace("xmlns:pt=", "xmlns:q=")}`,
      null,
    ],
    [
      "a record under another prefix declared on it",
      beside(device("q:", "0000:0b:00.1", ` xmlns:q="${ns}"`)),
      null,
    ],
    [
      "a record under another prefix declared on the records element",
      beside(device("q:", "0000:0b:00.1")).replace(
        "<pt:hostdevs ",
        `<pt:hostdevs xmlns:q="${ns}" `,
      ),
      null,
    ],
    [
      "a record in the default namespace",
      beside(device("", "0000:0b:00.1", ` xmlns="${ns}"`)),
      null,
    ],
    [
      "a record's name in another namespace",
      beside(device("pt:", "0000:0b:00.1", ' xmlns:pt="urn:app"')),
      null,
    ],
    ["an unknown element in the namespace", beside("<pt:note/>"), null],
    [
      "a record inside a record",
      OURS.replace('rule="gpu"/>', `rule="gpu">${device("pt:", "0000:0c:00.0")}</pt:device>`),
      null,
    ],
    [
      "an element in the namespace beside the records",
      `${OURS}\n<pt:extra xmlns:pt="${ns}"/>`,
      null,
    ],
    [
      "a record in another application's metadata",
      `${OURS}\n<app:x xmlns:app="urn:app">${
        device("pt:", "0000:0c:00.0", ` xmlns:pt="${ns}"`)
      }</app:x>`,
      null,
    ],
    ["another application's element in the records", beside('<app:x xmlns:app="urn:app"/>'), [
      "0000:0b:00.0",
    ]],
    ["a device in no namespace in the records", beside(device("", "0000:0c:00.0")), [
      "0000:0b:00.0",
    ]],
    [
      "records in the default namespace",
      OURS.replaceAll("pt:", "").replace("xmlns:pt=", "xmlns="),
      ["0000:0b:00.0"],
    ],
  ];
  for (const [what, metadata, addresses] of cases) {
    const xml = withMetadata(metadata);
    const lenient = readRecordsLeniently(xml);
    if (addresses === null) {
      assertOk(strictRefuses(xml), `${what}: parseDomainXml() reads it`);
      assertOk(lenient.problem?.startsWith(UNREADABLE), `${what}: ${lenient.problem}`);
      assertEquals(lenient.records, [], what);
    } else {
      assertReadsLikeStrict(xml, what);
      assertEquals(lenient.records.map((r) => r.address), addresses, what);
    }
  }
});

Deno.test("readRecordsLeniently() finds no problem in a namespace only named in text or declared, as the strict reader", () => {
  // A description, and another application's copy of a definition kept as text: neither
  // declares the namespace, and the domain (passed by hand) holds no records to read.
  const xml = withMetadata(
    `<app:copy xmlns:app="urn:app">${
      OURS.replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    }</app:copy>`,
  ).replace("</name>", `</name>\n  <description>records: ${RECORDS_NAMESPACE}</description>`);
  assertEquals(readRecordsLeniently(xml).problem, null);
  assertReadsLikeStrict(xml);
  // Nor does another version's namespace declared by an element that is not in it.
  const unused = withMetadata(
    `<app:x xmlns:app="urn:app" xmlns:v2="urn:passthrough:hostdevs:2"/>\n    ${OURS}`,
  );
  assertEquals(readRecordsLeniently(unused).problem, null);
  assertReadsLikeStrict(unused);
});

Deno.test("readRecordsLeniently() fails closed on records it cannot read", () => {
  const cases: [string, string][] = [
    ["truncated", withMetadata(OURS).slice(0, -12)],
    ["a missing attribute", withMetadata(OURS.replace(' vendor="10de"', ""))],
    ["a bad address", withMetadata(OURS.replace("0000:0b:00.0", "0000:0b:00"))],
    ["two records elements", withMetadata(`${OURS}\n${OURS}`)],
    ["another version's records", withMetadata(OURS.replace("hostdevs:1", "hostdevs:2"))],
    [
      "two records of one address",
      withMetadata(OURS.replace(
        'rule="gpu"/>',
        'rule="gpu"/><pt:device address="0000:0b:00.0" vendor="10de" device="2684" class="030000" rule="x"/>',
      )),
    ],
    [
      "two interface records of one address",
      withMetadata(OURS.replace(
        'rule="gpu"/>',
        `rule="gpu"/>${
          `<pt:interface address="0000:0b:02.0" vf="0" mac="52:54:00:00:00:01" pf-address="0000:0b:00.0" vendor="10de" device="2684" class="020000" rule="x"/>`
            .repeat(2)
        }`,
      )),
    ],
    [
      "another version's records beside these",
      withMetadata(`${OURS}\n${OURS.replaceAll("pt", "v2").replace("hostdevs:1", "hostdevs:2")}`),
    ],
    [
      "an unquoted attribute",
      withMetadata(OURS.replace("serial", "x").replace('driver="nouveau"', "driver=nouveau")),
    ],
    ["a repeated attribute", withMetadata(OURS.replace('rule="gpu"', 'rule="gpu" rule="x"'))],
    [
      "attributes with no space between",
      withMetadata(OURS.replace('class="030000" driver', 'class="030000"driver')),
    ],
    ["an unknown entity", withMetadata(OURS.replace('rule="gpu"', 'rule="&nbsp;"'))],
    ["a reference to a non-character", withMetadata(OURS.replace('rule="gpu"', 'rule="&#0;"'))],
    ["an unknown entity elsewhere", withMetadata(OURS).replace("<name>vm", "<name>v&nbsp;m")],
    ["a non-character elsewhere", withMetadata(OURS).replace("<name>vm", "<name>v&#xFFFE;m")],
    ["a < in a value", withMetadata(OURS.replace('rule="gpu"', 'rule="a<b"'))],
    ["a DOCTYPE", `<!DOCTYPE domain [<!ENTITY x "y">]>\n${withMetadata(OURS)}`],
    ["an unterminated comment", withMetadata(`${OURS}<!-- never closed`)],
    ["mismatched end tags", withMetadata(OURS.replace("</pt:hostdevs>", "</pt:other>"))],
    ["a second root", `${withMetadata(OURS)}<domain/>`],
    ["text after the root", `${withMetadata(OURS)}oops`],
    ["text before the root", `oops${withMetadata(OURS)}`],
    [
      "an end tag with an attribute",
      withMetadata(OURS.replace("</pt:hostdevs>", "</pt:hostdevs x='1'>")),
    ],
    [
      "another root",
      withMetadata(OURS).replace("<domain type='kvm'>", "<dom>").replace("</domain>", "</dom>"),
    ],
    ["records outside <metadata>", withMetadata("", OURS)],
    ["records nested deeper", withMetadata(`<x:app xmlns:x="urn:x">${OURS}</x:app>`)],
    [
      "the namespace declared on <metadata>",
      withMetadata(OURS.replace(' xmlns:pt="urn:passthrough:hostdevs:1"', ""))
        .replace("<metadata>", `<metadata xmlns:pt="urn:passthrough:hostdevs:1">`),
    ],
  ];
  for (const [what, xml] of cases) {
    const read = readRecordsLeniently(xml);
    assertEquals(read.records, [], what);
    assertOk(read.problem?.startsWith(UNREADABLE), `${what}: ${read.problem}`);
    // The reason names attributes and elements, never a value from the XML.
    assertOk(!/0000:0b|nouveau|&|gpu/.test(read.problem!), `${what}: ${read.problem}`);
  }
  assertEquals(
    readRecordsLeniently(cases[1]![1]).problem,
    `${UNREADABLE}: a record lacks attribute "vendor"`,
  );
});

Deno.test("readRecordsLeniently() says nothing about damaged XML that holds no records, but that it is damaged", () => {
  for (
    const xml of [
      "",
      "not xml at all",
      withMetadata("<a:b xmlns:a='urn:x'/>").slice(0, -12),
      `<domain><name>vm</name><devices><hostdev mode='subsystem' type='pci'>`,
    ]
  ) {
    assertEquals(
      readRecordsLeniently(xml),
      { records: [], vfRecords: [], problem: null, wellFormed: false, uuid: null },
      xml,
    );
  }
  // Damaged, and names the namespace: what it says cannot be trusted.
  assertEquals(
    readRecordsLeniently(`<domain><metadata><x xmlns="${RECORDS_NAMESPACE}"`).problem,
    UNREADABLE,
  );
  // Damaged, with a records element whose namespace is written with a character reference.
  assertEquals(
    readRecordsLeniently(
      `<domain><metadata><pt:hostdevs xmlns:pt="urn&#58;passthrough:hostdevs:1"><pt:device`,
    ).problem,
    UNREADABLE,
  );
});

Deno.test("readRecordsLeniently() stays linear on hostile input", () => {
  for (
    const text of [
      `<domain><metadata><pt:hostdevs xmlns:pt="${RECORDS_NAMESPACE}">` +
      "<pt:device a='1' ".repeat(50_000),
      `<domain><metadata>${"<a b='".repeat(50_000)}hostdevs`,
      `<domain><metadata>${" <x".repeat(100_000)}</metadata></domain>hostdevs`,
    ]
  ) {
    const read = assertCpuWithin(
      5_000,
      () => readRecordsLeniently(text),
      `${text.slice(0, 30)}...`,
    );
    assertEquals(read.records, []);
  }
});

Deno.test("decodeEntities() decodes as decodeXmlText() does, and says null where it throws", () => {
  const piece = fc.oneof(
    fc.string({ maxLength: 4 }),
    fc.constantFrom("&amp;", "&lt;", "&gt;", "&apos;", "&quot;", "&", "&nbsp;", "&#", "&#x;"),
    fc.integer({ min: 0, max: 0x11ffff }).map((n) => `&#${n};`),
    fc.integer({ min: 0, max: 0x11ffff }).map((n) => `&#x${n.toString(16)};`),
  );
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 6 }).map((p) => p.join("")), (text) => {
      let strict: string | null;
      try {
        strict = decodeXmlText(text);
      } catch {
        strict = null;
      }
      assertEquals(decodeEntities(text), strict, text);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("scanPassedDevicesLeniently() says which element names each address", () => {
  const xml = broken(`
    <interface type='hostdev'><source><address type='pci' domain='0' bus='2' slot='0' function='0'/></source></interface>
    <interface type='hostdev'><source><address type='pci' domain='0' bus='1' slot='0' function='0'/></source></interface>
    <hostdev mode='subsystem' type='pci'><source><address domain='0' bus='1' slot='0' function='0'/></source></hostdev>`);
  assertEquals(scanPassedDevicesLeniently(xml), {
    devices: [
      { address: "0000:01:00.0", element: "hostdev" },
      { address: "0000:02:00.0", element: "interface" },
    ],
    unresolved: 0,
    unresolvedElements: [],
    ...noDevices(),
  });
  // The <hostdev> is named whichever comes first.
  const hostdevFirst = broken(`
    <hostdev mode='subsystem' type='pci'><source><address domain='0' bus='1' slot='0' function='0'/></source></hostdev>
    <interface type='hostdev'><source><address type='pci' domain='0' bus='1' slot='0' function='0'/></source></interface>`);
  assertEquals(scanPassedDevicesLeniently(hostdevFirst).devices, [
    { address: "0000:01:00.0", element: "hostdev" },
  ]);
});

Deno.test("scanPassedDevicesLeniently() lists the networks interfaces name", () => {
  const xml = broken(`
    <interface type='network'><mac address='52:54:00:00:00:01'/><source network='sriov' portgroup='a'/></interface>
    <interface type="network"><source network="default"/></interface>
    <interface type='network'><source network='sriov'/></interface>
    <interface type='bridge'><source bridge='br0' network='running-on'/></interface>
    <interface type='network'/>
    <interface type='network'><model type='virtio'/></interface><source network='outside'/>`);
  // A running guest's interface shows the type and device its network gave it.
  assertEquals(scanPassedDevicesLeniently(xml).networks, ["default", "running-on", "sriov"]);
  // Inside <metadata> or a comment, it is no interface.
  const hidden =
    `<domain><metadata><x><interface type='network'><source network='m'/></interface></x>
    </metadata><devices><!-- <interface type='network'><source network='c'/></interface> -->
    </devices></domain>`;
  assertEquals(scanPassedDevicesLeniently(hidden).networks, []);
});

Deno.test("scanHostdevPoolLeniently() reads a hostdev network's pool, failing closed on damage", () => {
  const net = (forward: string) =>
    `<!-- <forward mode='nat'/> --><networkstatus><network><name>n</name><metadata>
    <forward mode='nat'/></metadata>${forward}</network></networkstatus>`;
  const entry = (attrs: string) => `<address ${attrs}/>`;
  assertEquals(
    scanHostdevPoolLeniently(net(`<forward mode="hostdev" managed="no"><pf dev='enp65s0f0'/>
      ${entry("type='pci' domain='0x0000' bus='0x41' slot='0x10' function='0x1'")}
      ${entry("type='pci' bus='65' slot='16' function='1'")}
      ${entry("type='pci' domain='0x0000' bus='0x41' slot='0x02' function='0x0'")}
    </forward >`)),
    { addresses: ["0000:41:02.0", "0000:41:10.1"], unresolved: 0, pfs: ["enp65s0f0"] },
  );
  assertEquals(scanHostdevPoolLeniently(net("<forward mode='hostdev'/>")), {
    addresses: [],
    unresolved: 0,
    pfs: [],
  });
  // An entry that is not a readable PCI address, a forward that does not end or cannot be read.
  assertEquals(
    scanHostdevPoolLeniently(net(`<forward mode='hostdev'>${entry("type='pci' bus='0x41'")}
      ${entry("bus='0x41' slot='0' function='0'")}${entry("type='usb' bus='1' device='2'")}
      ${entry("type='pci' bus='0x41' slot='0x10' function='0x3'")}</forward>`)),
    { addresses: ["0000:41:10.3"], unresolved: 3, pfs: [] },
  );
  assertEquals(
    scanHostdevPoolLeniently(
      net(`<forward mode='hostdev'>${entry("type='pci' bus='1' slot='0' function='0'")}`),
    ),
    { addresses: [], unresolved: 1, pfs: [] },
  );
  assertEquals(scanHostdevPoolLeniently(net("<forward mode='hostdev' <x>")), {
    addresses: [],
    unresolved: 1,
    pfs: [],
  });
  for (const other of ["<forward mode='nat'/>", "<forward/>", "", "<forward mode='hostdevx'/>"]) {
    assertEquals(scanHostdevPoolLeniently(net(other)), null, other);
  }
  assertEquals(scanHostdevPoolLeniently("\0\u202e not xml"), null);
});

Deno.test("scanPassedDevicesLeniently() reads a start tag with a long run of name characters in linear time", () => {
  // 4 MB with no `=`: tried from each position, this would take days (the hook would hit its
  // deadline); a scan that ends is the assertion.
  const token = "a".repeat(4 << 20);
  const xml = broken(`<hostdev mode='subsystem' type='pci' ${token}>
    <source><address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></source></hostdev>`);
  assertEquals(scanPassedDevicesLeniently(xml).devices, [
    { address: "0000:03:00.0", element: "hostdev" },
  ]);
});

Deno.test("the lenient readers read a start tag of several MB or of a million attributes without throwing", () => {
  // Each overflowed the regular expressions' stack: the start guard refused with "the check
  // failed: Maximum call stack size exceeded", which no allowance lifted.
  const unquoted = `<domain><name>v</name><devices><hostdev ${"a =b ".repeat(3_000_000)}>`;
  const text = `<domain><name>v</name><devices><hostdev ${"x".repeat(15_000_000)}>`;
  for (const xml of [unquoted, text]) {
    assertEquals(scanHostdevsLeniently(xml), { addresses: [], unresolved: 1 });
    assertEquals(scanPassedDevicesLeniently(xml).unresolved, 1);
    assertEquals(readRecordsLeniently(xml).wellFormed, false);
  }
  const records = `<domain><name>v</name><metadata>
    <pt:hostdevs xmlns:pt="${RECORDS_NAMESPACE}">
      <pt:device address="0000:0b:00.0" vendor="10de" device="1b06" class="030000" rule="gpu"
        ${Array.from({ length: 1_000_000 }, (_, i) => `x${i}='1'`).join(" ")}/>
    </pt:hostdevs></metadata></domain>`;
  const read = readRecordsLeniently(records);
  assertEquals([read.problem, read.records.map((r) => r.address)], [null, ["0000:0b:00.0"]]);
  const unclosed = records.replace("x1='1'", "x1='1");
  assertEquals(readRecordsLeniently(unclosed).records, []);
});

Deno.test("scanPassedDevicesLeniently() counts an NVMe disk's PCI controller, not other disks", () => {
  const xml = broken(`
    <disk type='nvme' device='disk'><source type='pci' managed='yes' namespace='1'>
      <address domain='0x0001' bus='0x01' slot='0x00' function='0x0'/></source><target dev='vde'/></disk>
    <disk type='file' device='disk'><source file='/a.img'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/></disk>
    <disk type='nvme' device='disk'><source type='pci' managed='no'/></disk>
    <disk type='nvme' device='disk'><target dev='vdf'/></disk>
    <disk type='nvme' device='disk'/>`);
  // The last two have no source: nothing to detach, so nothing unresolved either.
  assertEquals(scanPassedDevicesLeniently(xml), {
    devices: [{ address: "0001:01:00.0", element: "disk" }],
    unresolved: 1,
    unresolvedElements: ["<disk> #3 <disk type='nvme' device='disk'>"],
    ...noDevices(),
  });
});

Deno.test("scanPassedDevicesLeniently() counts the NVMe controllers of a disk's backing chain", () => {
  const nvme = (bus: string) =>
    `<source type='pci' managed='yes' namespace='1'><address domain='0x0000' bus='0x${bus}' ` +
    `slot='0x00' function='0x0'/></source>`;
  // A disk-only snapshot of an NVMe disk: a qcow2 overlay whose backing store is the NVMe
  // namespace; and an NVMe disk whose chain holds another NVMe controller two levels down.
  const xml = broken(`
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/vm.snap'/>
      <backingStore type='nvme' index='1'><format type='raw'/>${
    nvme("03")
  }<backingStore/></backingStore>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='nvme' device='disk'><driver name='qemu' type='raw'/>${nvme("05")}
      <backingStore type='file' index='1'><format type='qcow2'/><source file='/b.qcow2'/>
        <backingStore type="nvme" index='2'><format type='raw'/>${nvme("06")}</backingStore>
      </backingStore><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='disk'><source file='/c.img'/>
      <backingStore type='nvme' index='1'><format type='raw'/><source type='pci'/></backingStore>
      <backingStore type='nvme' index='2'/><backingStore type='nvme</disk>`);
  const scan = scanPassedDevicesLeniently(xml);
  assertEquals(scan.devices, [
    { address: "0000:03:00.0", element: "disk" },
    { address: "0000:05:00.0", element: "disk" },
    { address: "0000:06:00.0", element: "disk" },
  ]);
  // A backing store that says nvme but whose address cannot be read may be one more.
  assertEquals(scan.unresolved, 3);
  // A hostdev of the same address keeps its own element's name.
  const both = broken(`<hostdev mode='subsystem' type='pci'>${nvme("03")}</hostdev>
    <disk type='file'><source file='/a'/><backingStore type='nvme'>${
    nvme("03")
  }</backingStore></disk>`);
  assertEquals(scanPassedDevicesLeniently(both).devices, [
    { address: "0000:03:00.0", element: "hostdev" },
  ]);
});

Deno.test("scanPassedDevicesLeniently() lists the host block devices of type='block' disks", () => {
  const xml = broken(`
    <disk type='block' device='disk'><driver name='qemu' type='raw'/>
      <source dev='/dev/disk/by-id/nvme-Samsung_SSD_970_S1'/><target dev='vdb' bus='virtio'/></disk>
    <disk type="block" device="lun"><source dev="/dev/sdb"><reservations managed='yes'/></source></disk>
    <disk type='block' device='cdrom'><target dev='sda'/></disk>
    <disk type='block'/>
    <disk type='file' device='disk'><source file='/dev/not-a-block'/></disk>
    <disk type='block' device='disk'><source dev='/dev/sdb'/></disk>`);
  assertEquals(scanPassedDevicesLeniently(xml).blockDisks, [
    "/dev/disk/by-id/nvme-Samsung_SSD_970_S1",
    "/dev/sdb",
  ]);
  // What QEMU also holds open: a block backing store (after a disk-only snapshot), a block copy's
  // mirror, a qcow2 image's raw data store.
  const held = broken(`
    <disk type='file' device='disk'><source file='/var/lib/libvirt/images/vm.snap1'/>
      <backingStore type='block' index='1'><format type='raw'/><source dev='/dev/vg/base'/>
      <backingStore/></backingStore><target dev='vda'/>
      <mirror type='block' job='copy' ready='yes'><format type='raw'/><source dev='/dev/sdc'/></mirror></disk>
    <disk type='file' device='disk'><source file='/srv/vm.qcow2'><dataStore type='block'>
      <format type='raw'/><source dev='/dev/mapper/data'/></dataStore></source><target dev='vdb'/></disk>`);
  assertEquals(scanPassedDevicesLeniently(held).blockDisks, [
    "/dev/mapper/data",
    "/dev/sdc",
    "/dev/vg/base",
  ]);
  // Inside <metadata> or a comment, it is no disk.
  const hidden = `<domain><metadata><disk type='block'><source dev='/dev/m'/></disk></metadata>
    <devices><!-- <disk type='block'><source dev='/dev/c'/></disk> --></devices></domain>`;
  assertEquals(scanPassedDevicesLeniently(hidden).blockDisks, []);
});

Deno.test("both readers read a USB hostdev's source: IDs, bus and device, or both, as libvirt reads numbers", () => {
  const devices = `
    <hostdev mode='subsystem' type='usb' managed='yes'>
      <source startupPolicy='optional'><vendor id='0x046D'/><product id='0xc52b'/></source>
      <address type='usb' bus='0' port='1'/>
    </hostdev>
    <hostdev mode='subsystem' type='usb'><source><address bus='0x0e' device='6'/></source>
      <boot order='1'/></hostdev>
    <hostdev mode='subsystem' type="usb"><source>
      <vendor id="4711"/><product id="0"/><address bus="1" device="010"/></source></hostdev>
    <hostdev mode='subsystem' type='usb'><source/></hostdev>
    <hostdev mode='capabilities' type='misc'><source><char>/dev/input/event3</char></source></hostdev>`;
  const expected = [
    { vendorId: "046d", productId: "c52b", bus: null, device: null },
    { vendorId: null, productId: null, bus: 14, device: 6 },
    { vendorId: "1267", productId: "0000", bus: 1, device: 8 },
  ];
  const xml = `<domain><name>vm</name><devices>${devices}</devices></domain>`;
  assertEquals(parseDomainXml(xml).usbDevices, expected);
  assertEquals(scanPassedDevicesLeniently(broken(devices)).usbDevices, expected);
  // In a comment or <metadata>, it is no device.
  const hidden = `<domain><metadata><hostdev mode='subsystem' type='usb'><source>
    <vendor id='0x1'/><product id='0x2'/></source></hostdev></metadata><devices><!--
    <hostdev mode='subsystem' type='usb'><source><address bus='1' device='2'/></source></hostdev>
    --></devices></domain>`;
  assertEquals(scanPassedDevicesLeniently(hidden).usbDevices, []);
});

Deno.test("both readers read the character devices of evdev and virtio passthrough inputs and of serial ports and the like of type 'dev'", () => {
  const devices = `
    <disk type='block' device='disk'><source dev='/dev/sdb'/><serial>WD-123</serial>
      <target dev='vda' bus='virtio'/></disk>
    <input type='evdev'><source dev='/dev/input/by-id/usb-Logitech_USB_Receiver-event-kbd'
      grab='all' grabToggle='ctrl-ctrl' repeat='on'/></input>
    <input type='mouse' bus='ps2'/>
    <input type="passthrough" bus="virtio"><source evdev="/dev/input/event7"/></input>
    <serial type='dev'><source path='/dev/serial/by-id/usb-FTDI_FT232R-if00-port0'/>
      <target port='0'/></serial>
    <serial type='pty'><target port='1'/></serial>
    <console type='dev'><source path='/dev/ttyS4'/><target type='serial' port='0'/></console>
    <parallel type='dev'><source path='/dev/parport0'/></parallel>
    <channel type='dev'><source path='/dev/ttyUSB1'/><target type='virtio' name='x'/></channel>
    <channel type='unix'><source mode='bind' path='/run/agent.sock'/></channel>
    <serial type='file'><source path='/var/log/vm.log'/></serial>`;
  const expected = [
    "/dev/input/by-id/usb-Logitech_USB_Receiver-event-kbd",
    "/dev/input/event7",
    "/dev/parport0",
    "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0",
    "/dev/ttyS4",
    "/dev/ttyUSB1",
  ];
  const xml = `<domain><name>vm</name><devices>${devices}</devices></domain>`;
  assertEquals(parseDomainXml(xml).charDevices, expected);
  assertEquals(scanPassedDevicesLeniently(xml).charDevices, expected);
  assertEquals(scanPassedDevicesLeniently(broken(devices)).charDevices, expected);
  // An element whose end tag is missing ends where the next device starts: a disk's source is
  // not taken for its own.
  const unclosed = `<input type='evdev'><disk type='block'><source dev='/dev/sdb'/></disk>
    <input type='evdev'><source dev='/dev/input/event2'/></input>`;
  assertEquals(scanPassedDevicesLeniently(broken(unclosed)).charDevices, ["/dev/input/event2"]);
  // In a comment or <metadata>, it is no device.
  const hidden = `<domain><metadata><serial type='dev'><source path='/dev/ttyS1'/></serial>
    </metadata><devices><!-- <input type='evdev'><source dev='/dev/input/event1'/></input> -->
    </devices></domain>`;
  assertEquals(scanPassedDevicesLeniently(hidden).charDevices, []);
  assertEquals(parseDomainXml(`<domain><name>v</name>${hidden.slice(8)}`).charDevices, []);
});

Deno.test("both readers read the networks of interfaces, and a running guest's network device as its network's", () => {
  const devices = `
    <interface type='network'><source network='lan'/><model type='virtio'/></interface>
    <interface type='direct'><source network='direct' portid='0c5d' dev='eth1' mode='vepa'/>
    </interface>
    <interface type='bridge'><source network='host-bridge' bridge='br0'/></interface>
    <interface type='bridge'><source bridge='br9'/></interface>`;
  const xml = `<domain><name>vm</name><devices>${devices}</devices></domain>`;
  const strict = parseDomainXml(xml);
  const lenient = scanPassedDevicesLeniently(broken(devices));
  for (const read of [strict, lenient]) {
    assertEquals(read.networks, ["direct", "host-bridge", "lan"]);
    assertEquals(read.netDevices, ["br9"]);
    assertEquals(read.networkDevices, [
      { network: "direct", device: "eth1" },
      { network: "host-bridge", device: "br0" },
    ]);
  }
  // A running domain's status keeps the interface on its network, with an <actual> element.
  const status = `<domstatus><domain><name>vm</name><devices>
    <interface type='network'><source network='direct'/><actual type='direct'>
      <source dev='eth2' mode='vepa'/></actual></interface>
    <interface type='network'><source network='lan'/><actual type='bridge'>
      <source bridge='br1'/></actual></interface>
    <interface type='network'><source network='default'/><actual type='network'>
      <source bridge='virbr0'/></actual></interface></devices></domain></domstatus>`;
  assertEquals(scanPassedDevicesLeniently(status).networkDevices, [
    { network: "direct", device: "eth2" },
    { network: "lan", device: "br1" },
  ]);
});

Deno.test("scanNetworkInterfacesLeniently() names a bridged network's host bridge or macvtap pool, nothing for other networks, and says what it cannot read", () => {
  const scan = (forward: string, rest = "") =>
    scanNetworkInterfacesLeniently(`<network><name>n</name>${forward}${rest}</network>`);
  const bridged = (...interfaces: string[]) => ({ kind: "bridged", interfaces });
  assertEquals(scan("<forward mode='bridge'/>", "<bridge name='br0'/>"), bridged("br0"));
  // Mode bridge without a bridge: macvtap in bridge mode on the pool.
  assertEquals(scan("<forward mode='bridge' dev='eth3'/>"), bridged("eth3"));
  assertEquals(
    scan(`<forward mode="private" dev="eth2"><interface dev="eth2"/><interface dev="eth1"/>
      </forward>`),
    bridged("eth1", "eth2"),
  );
  assertEquals(
    scan("<forward mode='passthrough'><pf dev='enp3s0f0'/></forward>"),
    bridged("enp3s0f0"),
  );
  assertEquals(scan("<forward mode='vepa'/>"), bridged());
  // NAT, routed, isolated, open and hostdev networks put guests on no host interface of theirs.
  for (const mode of ["nat", "route", "open", "hostdev"]) {
    assertEquals(scan(`<forward mode='${mode}' dev='eth0'/>`, "<bridge name='virbr1'/>"), {
      kind: "other",
    });
  }
  assertEquals(scan("", "<bridge name='virbr2'/>"), { kind: "other" });
  // What cannot be read is said so, not taken for a network on no host interface.
  assertEquals(scan("<forward mode='bridge").kind, "unreadable");
  assertEquals(scan("<forward mode='vepa'><interface dev='eth1'/>").kind, "unreadable");
  assertEquals(scanNetworkInterfacesLeniently("").kind, "unreadable");
  assertEquals(scanNetworkInterfacesLeniently("\0\0\0").kind, "unreadable");
  // In <metadata> or a comment, it is no forward.
  assertEquals(
    scan(
      "<metadata><forward mode='bridge'/><bridge name='br0'/></metadata><!-- <forward mode='vepa' dev='x'/> -->",
    ),
    { kind: "other" },
  );
});

Deno.test("both readers read the host adapter of a SCSI hostdev, not of an iSCSI one", () => {
  const devices = `
    <hostdev mode='subsystem' type='scsi' sgio='unfiltered' rawio='yes'>
      <source><adapter name='scsi_host2'/><address bus='0' target='0' unit='0'/></source>
      <address type='drive' controller='0' bus='0' target='0' unit='1'/></hostdev>
    <hostdev mode='subsystem' type='scsi'><source protocol='adapter'>
      <adapter name='scsi_host0'/><address bus='0' target='1' unit='0'/></source></hostdev>
    <hostdev mode='subsystem' type='scsi'><source protocol='iscsi' name='iqn.2014-08.com.example:storage/1'>
      <host name='example.com' port='3260'/></source></hostdev>
    <hostdev mode='subsystem' type='scsi_host'><source protocol='vhost' wwpn='naa.5123456789abcde0'/>
    </hostdev>
    <hostdev mode='subsystem' type='scsi'><source><address bus='0' target='0' unit='0'/></source></hostdev>`;
  const xml = `<domain><name>vm</name><devices>${devices}</devices></domain>`;
  assertEquals(parseDomainXml(xml).scsiHosts, ["scsi_host0", "scsi_host2"]);
  assertEquals(scanPassedDevicesLeniently(xml).scsiHosts, ["scsi_host0", "scsi_host2"]);
  assertEquals(scanPassedDevicesLeniently(broken(devices)).scsiHosts, ["scsi_host0", "scsi_host2"]);
});

Deno.test("both readers read the UUID of a mediated device's hostdev", () => {
  const devices = `
    <hostdev mode='subsystem' type='mdev' model='vfio-pci' display='on'>
      <source><address uuid='C2177883-F1BB-47F0-914D-32A22E3A8804'/></source></hostdev>
    <hostdev mode='subsystem' type='mdev' model='vfio-ap'><source>
      <address uuid="8a9b6f5e-0000-4000-8000-000000000001"/></source></hostdev>
    <hostdev mode='subsystem' type='mdev' model='vfio-pci'><source/></hostdev>`;
  const expected = ["8a9b6f5e-0000-4000-8000-000000000001", "c2177883-f1bb-47f0-914d-32a22e3a8804"];
  const xml = `<domain><name>vm</name><devices>${devices}</devices></domain>`;
  assertEquals(parseDomainXml(xml).mdevs, expected);
  assertEquals(scanPassedDevicesLeniently(xml).mdevs, expected);
  assertEquals(scanPassedDevicesLeniently(broken(devices)).mdevs, expected);
});

Deno.test("readRecordsLeniently() agrees with parseDomainXml() on generated metadata of any namespaces and nesting", () => {
  // Prefixes, default namespaces, redeclarations, nesting and self-closing elements as another
  // tool may write them: the guard (lenient) and plan (strict) must read the same records, and
  // refuse the same documents, or a start is let through that plan would refuse.
  const record = (bus: string) =>
    ` address="0000:${bus}:00.0" vendor="10de" device="1b06" class="030000" rule="gpu"`;
  const vf = ` address="0000:0b:02.0" vf="0" mac="52:54:00:00:00:01" pf-address="0000:0b:00.0"` +
    ` vendor="10de" device="2684" class="020000" rule="x"`;
  const prefix = fc.constantFrom("", "pt:", "q:");
  const declaration = (p: string, ns: string) =>
    ` xmlns${p === "" ? "" : `:${p.slice(0, -1)}`}="${ns}"`;
  const declarations = fc.oneof(
    { weight: 3, arbitrary: fc.constant("") },
    {
      weight: 1,
      arbitrary: fc.tuple(prefix, fc.constantFrom(RECORDS_NAMESPACE, "urn:app")).map(([p, ns]) =>
        declaration(p, ns)
      ),
    },
  );
  type Element = { name: string; attributes: string; kids: Element[] };
  const element: fc.Memo<Element> = fc.memo((depth) =>
    fc.record({
      name: fc.tuple(prefix, fc.constantFrom("device", "device", "interface", "note", "hostdevs"))
        .map(([p, local]) => p + local),
      attributes: fc.tuple(
        declarations,
        fc.constantFrom("", record("0b"), record("0c"), record("0d"), vf),
      ).map(([d, a]) => d + a),
      kids: depth <= 1 ? fc.constant([]) : fc.array(element(depth - 1), { maxLength: 2 }),
    })
  );
  const write = (e: Element): string =>
    e.kids.length === 0
      ? `<${e.name}${e.attributes}/>`
      : `<${e.name}${e.attributes}>${e.kids.map(write).join("")}</${e.name}>`;
  // Our records element, by any prefix, holding generated children, among generated elements.
  const records = fc.tuple(prefix, declarations, fc.array(element(2), { maxLength: 4 })).map((
    [p, other, kids],
  ) =>
    write({ name: `${p}hostdevs`, attributes: declaration(p, RECORDS_NAMESPACE) + other, kids })
  );
  const metadata = fc.tuple(fc.array(element(2), { maxLength: 2 }), records, fc.boolean()).map((
    [others, ours, first],
  ) => (first ? [ours, ...others.map(write)] : [...others.map(write), ours]).join(""));
  fc.assert(
    fc.property(metadata, (inner) => {
      const xml = withMetadata(inner);
      let strict;
      try {
        strict = parseDomainXml(xml);
      } catch (error) {
        strict = (error as Error).message;
      }
      const lenient = readRecordsLeniently(xml);
      if (typeof strict === "string") {
        assertEquals([lenient.problem !== null, lenient.records, lenient.vfRecords], [
          true,
          [],
          [],
        ], `${xml}\nstrict: ${strict}`);
      } else {
        assertEquals(lenient, {
          records: strict.records,
          vfRecords: strict.vfRecords,
          problem: null,
          wellFormed: true,
          uuid: strict.uuid,
        }, xml);
      }
    }),
    { seed: 20261207, numRuns: 1500 },
  );
});
