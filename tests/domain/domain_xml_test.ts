import {
  assertCpuWithin,
  assertEquals,
  assertMatch,
  assertOk,
  assertThrows,
} from "../helpers/assert.ts";
import {
  DomainEditError,
  DomainXmlError,
  editDomainXml,
  heldAddresses,
  METADATA_NAMESPACE,
  parseDomainXml,
} from "../../lib/domain/domain_xml.ts";
import type { DeviceIdentity, HostdevSpec } from "../../lib/plan/types.ts";
import { readRecordsLeniently } from "../../lib/domain/lenient.ts";

const FIXTURES = new URL("../fixtures/domains/", import.meta.url);

function fixture(name: string): string {
  return Deno.readTextFileSync(new URL(name, FIXTURES));
}

function fixtureNames(): string[] {
  return [...Deno.readDirSync(FIXTURES)].map((e) => e.name).filter((n) => n.endsWith(".xml"))
    .sort();
}

function record(address: string, overrides: Partial<DeviceIdentity> = {}): DeviceIdentity {
  return {
    address,
    vendorId: "10de",
    deviceId: "2684",
    subsystemVendorId: "1043",
    subsystemDeviceId: "88e2",
    classCode: "030000",
    serial: null,
    driver: "nouveau",
    rule: "gpu",
    ...overrides,
  };
}

function add(xml: string, specs: HostdevSpec[], records?: DeviceIdentity[]): string {
  const before = parseDomainXml(xml).records;
  return editDomainXml(xml, {
    remove: [],
    add: specs,
    records: records ?? [...before, ...specs.map((s) => record(s.address))],
  });
}

const SMALL = `<domain type='kvm'>
  <name>vm1</name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
  <memory unit='KiB'>1048576</memory>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/a.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
`;

Deno.test("parseDomainXml() reads name, uuid and PCI hostdevs in document order", () => {
  const parsed = parseDomainXml(fixture("hostdev-pci-multifunction.xml"));
  assertEquals(parsed.name, "delete");
  assertEquals(parsed.uuid, "583a8e8e-f0ce-4f53-89ab-092862148b25");
  assertEquals(parsed.hostdevs.map((h) => h.address), [
    "0005:90:01.0",
    "0001:01:00.1",
    "0001:01:00.0",
    "0005:90:01.2",
    "0005:90:01.3",
    "0000:06:12.1",
    "0000:06:12.2",
  ]);
  assertOk(parsed.hostdevs.every((h) => h.managed && !h.owned));
  assertEquals(parsed.records, []);
});

Deno.test("parseDomainXml() keeps each hostdev's exact original text", () => {
  const xml = fixture("pci-rom.xml");
  const parsed = parseDomainXml(xml);
  assertEquals(parsed.hostdevs.length, 2);
  for (const hostdev of parsed.hostdevs) {
    assertOk(xml.includes(hostdev.xml));
    assertMatch(
      hostdev.xml,
      /^<hostdev mode='subsystem' type='pci' managed='yes'>[\s\S]*<\/hostdev>$/,
    );
  }
  assertMatch(parsed.hostdevs[1]?.xml ?? "", /<rom bar='on' file='\/etc\/fake\/bootrom.bin'\/>/);
});

Deno.test("parseDomainXml() ignores usb, mdev and interface hostdevs", () => {
  assertEquals(parseDomainXml(fixture("hostdev-usb-address-device.xml")).hostdevs, []);
  assertEquals(parseDomainXml(fixture("hostdev-mdev-display.xml")).hostdevs, []);
  assertEquals(parseDomainXml(fixture("net-hostdev-multidomain.xml")).hostdevs, []);
  // moredevs-hvm has both an <interface type='hostdev'> and one PCI <hostdev>.
  assertEquals(parseDomainXml(fixture("moredevs-hvm.xml")).hostdevs.length, 1);
});

Deno.test("parseDomainXml() decodes entities in the name", () => {
  assertEquals(parseDomainXml(fixture("test-escape-paths.xml")).name, "XenGuest2&test");
});

Deno.test("parseDomainXml() reads managed='no' and decimal source addresses", () => {
  const xml = `<domain><name>d</name><devices>
    <hostdev mode='subsystem' type='pci' managed='no'><source>
      <address domain='0' bus='10' slot='3' function='1'/></source></hostdev>
    <hostdev type='pci'><source><address bus='0x0a' slot='0x00' function='0x0'/></source></hostdev>
  </devices></domain>`;
  assertEquals(
    parseDomainXml(xml).hostdevs.map((h) => [h.address, h.managed]),
    [["0000:0a:03.1", false], ["0000:0a:00.0", false]],
  );
});

Deno.test("parseDomainXml() throws DomainXmlError with line and column on malformed XML", () => {
  const error = assertThrowsDomainXmlError(
    "<domain>\n  <name>x</name>\n  <devices>\n  </device>\n</domain>",
  );
  assertEquals(error.line, 4);
  assertOk(error.column > 0);
  assertMatch(error.message, /line 4/);
});

Deno.test("parseDomainXml() refuses a DOCTYPE instead of expanding its entities", () => {
  const error = assertThrowsDomainXmlError(
    `<?xml version="1.0"?>\n<!DOCTYPE domain [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n` +
      `<domain><name>&x;</name></domain>`,
  );
  assertEquals([error.line, error.column], [2, 1]);
  assertMatch(error.message, /DOCTYPE/);
});

Deno.test("parseDomainXml() refuses undeclared entity references", () => {
  const error = assertThrowsDomainXmlError("<domain>\n<name>a&lol;</name></domain>");
  assertEquals(error.line, 2);
});

Deno.test("parseDomainXml() refuses two records elements, at the second, rather than pick one", () => {
  // A block pasted from another VM's <metadata>, under another prefix: which records hold is
  // not guessed.
  const xml = `<domain><name>d</name><metadata>
  <pt:hostdevs xmlns:pt='${METADATA_NAMESPACE}'><pt:device address='0000:01:00.0' vendor='10de'
    device='2684' class='030000' rule='gpu'/></pt:hostdevs>
    <other:hostdevs xmlns:other='${METADATA_NAMESPACE}'/>
</metadata></domain>`;
  const error = assertThrowsDomainXmlError(xml);
  assertEquals([error.line, error.column], [4, 5]);
  assertEquals(
    error.message,
    "The domain metadata holds two passthrough records elements: at line 4, column 5",
  );
  // Another application's <hostdevs> (another namespace) is no second one.
  const foreign = xml.replace(`xmlns:other='${METADATA_NAMESPACE}'`, "xmlns:other='urn:x'");
  assertEquals(parseDomainXml(foreign).records.map((r) => r.rule), ["gpu"]);
});

Deno.test("parseDomainXml() refuses two records of one address rather than take the first", () => {
  const record = (device: string) =>
    `<pt:device address='0000:01:00.0' vendor='10de' device='${device}' class='030000' rule='gpu'/>`;
  const xml = `<domain><name>d</name><metadata>
  <pt:hostdevs xmlns:pt='${METADATA_NAMESPACE}'>${record("2684")}${record("1b06")}</pt:hostdevs>
</metadata></domain>`;
  const error = assertThrowsDomainXmlError(xml);
  assertEquals(
    error.message,
    `Two passthrough records name one address: "0000:01:00.0": at line 2, column 3`,
  );
});

Deno.test("parseDomainXml() refuses records of another version rather than take their hostdevs for hand-added", () => {
  const xml = `<domain><name>d</name><metadata>
  <pt:hostdevs xmlns:pt='urn:passthrough:hostdevs:2'><pt:device address='0000:01:00.0'
    vendor='10de' device='2684' class='030000' rule='gpu'/></pt:hostdevs>
</metadata><devices><hostdev mode='subsystem' type='pci' managed='yes'>
  <source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>
</hostdev></devices></domain>`;
  const error = assertThrowsDomainXmlError(xml);
  assertEquals([error.line, error.column], [2, 3]);
  assertEquals(
    error.message,
    "An element of the passthrough records is of another version of passthrough (namespace " +
      `"urn:passthrough:hostdevs:2"; this one reads "${METADATA_NAMESPACE}"): plan with the ` +
      "passthrough that wrote them: at line 2, column 3",
  );
  // Another application's namespace that merely ends alike is no version of ours.
  const foreign = xml.replace("urn:passthrough:hostdevs:2", "urn:app:hostdevs:2");
  assertEquals(parseDomainXml(foreign).records, []);
});

Deno.test("parseDomainXml() refuses an element of another version's records at any depth, as the start guard does", () => {
  const v2 = "<v2:hostdevs xmlns:v2='urn:passthrough:hostdevs:2'/>";
  const record =
    "<pt:device address='0000:01:00.0' vendor='10de' device='2684' class='030000' rule='gpu'/>";
  for (
    const nested of [
      `<pt:hostdevs xmlns:pt='${METADATA_NAMESPACE}'>${record}\n${v2}</pt:hostdevs>`,
      `<app:x xmlns:app='urn:app'>\n${v2}</app:x>\n<pt:hostdevs xmlns:pt='${METADATA_NAMESPACE}'>${record}</pt:hostdevs>`,
    ]
  ) {
    const xml = `<domain><name>d</name><metadata>\n${nested}\n</metadata></domain>`;
    // The guard refuses every start of it: plan says so, where it is.
    assertMatch(readRecordsLeniently(xml).problem ?? "", /another version of passthrough/);
    const error = assertThrowsDomainXmlError(xml);
    assertEquals(
      error.message,
      "An element of the passthrough records is of another version of passthrough (namespace " +
        `"urn:passthrough:hostdevs:2"; this one reads "${METADATA_NAMESPACE}"): plan with the ` +
        "passthrough that wrote them: at line 3, column 1",
    );
  }
});

Deno.test("parseDomainXml() and the start guard refuse an element of another version's records whose namespace an enclosing element declares", () => {
  // Both read no records and no problem: the guard started the devices without the check their
  // records were written for, and plan took them for hand-added ones.
  const record =
    "<device address='0000:01:00.0' vendor='10de' device='2684' class='030000' rule='gpu'/>";
  for (
    const nested of [
      `<app:x xmlns:app='urn:app' xmlns:v2='urn:passthrough:hostdevs:2'>\n<v2:hostdevs>${
        record.replace("<device", "<v2:device")
      }</v2:hostdevs></app:x>`,
      `<app:x xmlns:app='urn:app' xmlns='urn:passthrough:hostdevs:2'>\n<hostdevs>${record}</hostdevs></app:x>`,
    ]
  ) {
    const xml = `<domain><name>d</name><metadata>\n${nested}\n</metadata></domain>`;
    assertMatch(readRecordsLeniently(xml).problem ?? "", /another version of passthrough/);
    assertEquals(
      assertThrowsDomainXmlError(xml).message,
      "An element of the passthrough records is of another version of passthrough (namespace " +
        `"urn:passthrough:hostdevs:2"; this one reads "${METADATA_NAMESPACE}"): plan with the ` +
        "passthrough that wrote them: at line 3, column 1",
    );
  }
  // Declared and unused, or rebound before use: nothing of it is read, nothing refused.
  const unused =
    `<domain><name>d</name><metadata><app:x xmlns:app='urn:app' xmlns:v2='urn:passthrough:hostdevs:2'><app:y/></app:x></metadata></domain>`;
  assertEquals(readRecordsLeniently(unused).problem, null);
  assertEquals(parseDomainXml(unused).records, []);
  // The declarations in force are kept once, not copied per element: nested elements each
  // declaring a prefix of their own are read in time linear in the document.
  const deep = `<domain><name>d</name><metadata>${
    Array.from({ length: 20_000 }, (_, i) => `<x xmlns:p${i}='urn:a'>`).join("")
  }${"</x>".repeat(20_000)}</metadata></domain>`;
  assertCpuWithin(5_000, () => [parseDomainXml(deep), readRecordsLeniently(deep)], "20,000 deep");
});

Deno.test("parseDomainXml() refuses a records element that is no child of <metadata>, as the start guard does", () => {
  const ours =
    `<pt:hostdevs xmlns:pt='${METADATA_NAMESPACE}'><pt:device address='0000:01:00.0' vendor='10de' device='2684' class='030000' rule='gpu'/></pt:hostdevs>`;
  for (
    const xml of [
      `<domain><name>d</name><metadata><app:x xmlns:app='urn:app'>\n${ours}</app:x></metadata></domain>`,
      `<domain><name>d</name><metadata/><devices>\n${ours}</devices></domain>`,
      // In a second <metadata>, which libvirt never writes: plan reads the first alone.
      `<domain><name>d</name><metadata/><metadata>\n${ours}</metadata></domain>`,
    ]
  ) {
    assertMatch(readRecordsLeniently(xml).problem ?? "", /not a child of <metadata>/);
    assertEquals(
      assertThrowsDomainXmlError(xml).message,
      "The passthrough records element is not a child of <metadata>, where passthrough reads " +
        "records: the start guard refuses every start of the VM until it is moved there or " +
        "removed: at line 2, column 1",
    );
  }
});

Deno.test("parseDomainXml() refuses a records element whose namespace an enclosing element declares, as the start guard does", () => {
  // The guard refuses every start of such a VM; plan read no records, so it took the VM's
  // hostdevs for hand-added ones.
  const device =
    "<pt:device address='0000:01:00.0' vendor='10de' device='2684' class='030000' rule='gpu'/>";
  for (
    const [xml, at] of [
      [
        `<domain><name>d</name><metadata><app:x xmlns:app='urn:app' xmlns:pt='${METADATA_NAMESPACE}'>\n<pt:hostdevs>${device}</pt:hostdevs></app:x></metadata></domain>`,
        "line 2, column 1",
      ],
      [
        `<domain><name>d</name><metadata xmlns:pt='${METADATA_NAMESPACE}'>\n<pt:hostdevs>${device}</pt:hostdevs></metadata></domain>`,
        "line 2, column 1",
      ],
      [
        `<domain><name>d</name><metadata><x xmlns='${METADATA_NAMESPACE}'>\n<hostdevs/></x></metadata></domain>`,
        "line 2, column 1",
      ],
      // Beside a records element of its own: the guard read those and started the VM.
      [
        `<domain><name>d</name><metadata><pt:hostdevs xmlns:pt='${METADATA_NAMESPACE}'>${device}</pt:hostdevs><app:x xmlns:app='urn:app' xmlns:q='${METADATA_NAMESPACE}'>\n<q:hostdevs/></app:x></metadata></domain>`,
        "line 2, column 1",
      ],
      // Next to our records element, before or after it: the guard read only that one.
      [
        `<domain><name>d</name><metadata><pt:hostdevs xmlns:pt='${METADATA_NAMESPACE}'>${device}</pt:hostdevs><x xmlns='${METADATA_NAMESPACE}'>\n<hostdevs/></x></metadata></domain>`,
        "line 2, column 1",
      ],
      [
        `<domain><name>d</name><metadata><app:x xmlns:app='urn:app' xmlns:pt='${METADATA_NAMESPACE}'>\n<pt:hostdevs>${
          device.replace("01:00.0", "02:00.0")
        }</pt:hostdevs></app:x><pt:hostdevs xmlns:pt='${METADATA_NAMESPACE}'>${device}</pt:hostdevs></metadata></domain>`,
        "line 2, column 1",
      ],
    ]
  ) {
    assertMatch(readRecordsLeniently(xml!).problem ?? "", /declared on another element/);
    assertEquals(
      assertThrowsDomainXmlError(xml!).message,
      "The records namespace is declared on another element than <hostdevs> (an enclosing " +
        "element declares it for this records element): the start guard refuses every start " +
        `of the VM until the records element declares it itself or is removed: at ${at}`,
    );
  }
  // Declared on the records element itself, and again on an enclosing one: read.
  const again =
    `<domain><name>d</name><metadata xmlns:pt='${METADATA_NAMESPACE}'><pt:hostdevs xmlns:pt='${METADATA_NAMESPACE}'>${device}</pt:hostdevs></metadata></domain>`;
  assertEquals(parseDomainXml(again).records.map((r) => r.address), ["0000:01:00.0"]);
  assertEquals(readRecordsLeniently(again).problem, null);
});

Deno.test("parseDomainXml() says what is wrong with records it refuses in the start guard's words", () => {
  const record = (rule: string) =>
    `<pt:device address='0000:01:00.0' vendor='10de' device='2684' class='030000' rule='${rule}'/>`;
  const ours = (inner: string) =>
    `<pt:hostdevs xmlns:pt='${METADATA_NAMESPACE}'>${inner}</pt:hostdevs>`;
  const metadata = (inner: string) =>
    `<domain><name>d</name><metadata>${inner}</metadata></domain>`;
  for (
    const xml of [
      metadata(ours(`${record("gpu")}<v2:x xmlns:v2='urn:passthrough:hostdevs:2'/>`)),
      metadata(`<app:x xmlns:app='urn:app'>${ours(record("gpu"))}</app:x>`),
      metadata(ours(record("gpu")) + ours("")),
      metadata(ours(record("gpu") + record("audio"))),
      metadata(
        `<app:x xmlns:app='urn:app' xmlns:pt='${METADATA_NAMESPACE}'><pt:hostdevs/></app:x>`,
      ),
    ]
  ) {
    const problem = readRecordsLeniently(xml).problem ?? "";
    const words = problem.replace(
      /^the domain XML holds passthrough records that cannot be read: /,
      "",
    );
    assertOk(words !== problem, problem);
    const message = assertThrowsDomainXmlError(xml).message;
    assertOk(message.toLowerCase().startsWith(words), `${message} | ${words}`);
  }
});

Deno.test("parseDomainXml() refuses a domain without a name, or another root", () => {
  assertMatch(assertThrowsDomainXmlError("<domain><uuid>u</uuid></domain>").message, /<name>/);
  assertMatch(assertThrowsDomainXmlError("<network><name>n</name></network>").message, /domain/);
});

Deno.test("parseDomainXml() refuses a PCI hostdev without a source address", () => {
  const error = assertThrowsDomainXmlError(
    "<domain><name>d</name><devices>\n<hostdev mode='subsystem' type='pci'><source/></hostdev>" +
      "</devices></domain>",
  );
  assertEquals([error.line, error.column], [2, 1]);
});

function assertThrowsDomainXmlError(xml: string): DomainXmlError {
  try {
    parseDomainXml(xml);
  } catch (error) {
    assertOk(error instanceof DomainXmlError, `expected DomainXmlError, got ${error}`);
    assertOk(error instanceof SyntaxError);
    return error;
  }
  throw new Error("parseDomainXml() did not throw");
}

Deno.test("parseDomainXml() is not fooled by markup in comments, CDATA and attribute values", () => {
  const xml = `<?xml version='1.0'?>
<!-- <domain><name>fake</name></domain> -->
<domain type='kvm'>
  <name>real</name>
  <description><![CDATA[<devices><hostdev mode='subsystem' type='pci'/></devices>]]></description>
  <devices>
    <?pi <hostdev> ?>
    <disk device="a>b" type='x"y'><source file='/x/<!--'/></disk>
    <!-- <hostdev mode='subsystem' type='pci'><source><address bus='0x09' slot='0' function='0'/></source></hostdev> -->
    <hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source></hostdev>
  </devices>
</domain>`;
  const parsed = parseDomainXml(xml.replace("file='/x/<!--'", "file='/x/&lt;!--'"));
  assertEquals(parsed.name, "real");
  assertEquals(parsed.hostdevs.map((h) => h.address), ["0000:01:00.0"]);
});

Deno.test("parseDomainXml() reads records on whatever prefix binds our namespace", () => {
  const xml = `<domain><name>d</name><metadata>
    <p:hostdevs xmlns:p='${METADATA_NAMESPACE}'><p:device address='01:00.0' vendor='10de' device='1' class='030000' rule='r'/></p:hostdevs>
    <q:hostdevs xmlns:q='urn:someone:else'><q:device address='02:00.0'/></q:hostdevs>
  </metadata><devices>
    <hostdev mode='subsystem' type='pci'><source><address bus='0x01' slot='0x00' function='0x0'/></source></hostdev>
  </devices></domain>`;
  const parsed = parseDomainXml(xml);
  assertEquals(parsed.records, [{
    address: "0000:01:00.0",
    vendorId: "10de",
    deviceId: "1",
    subsystemVendorId: null,
    subsystemDeviceId: null,
    classCode: "030000",
    serial: null,
    driver: null,
    rule: "r",
  }]);
  assertEquals(parsed.hostdevs[0]?.owned, true);
});

Deno.test("editDomainXml() with nothing to do returns the input unchanged", () => {
  for (const name of fixtureNames()) {
    const xml = fixture(name);
    const same = editDomainXml(xml, { remove: [], add: [], records: parseDomainXml(xml).records });
    assertOk(same === xml, name);
  }
});

Deno.test("editDomainXml() add then remove restores every fixture byte for byte", () => {
  for (const name of fixtureNames()) {
    const xml = fixture(name);
    const added = add(xml, [{ address: "0000:7f:1f.7", managed: true }]);
    assertOk(added !== xml, name);
    const restored = editDomainXml(added, { remove: ["0000:7f:1f.7"], add: [], records: [] });
    assertEquals(restored, xml, name);
  }
});

Deno.test("editDomainXml() appends after the last hostdev in libvirt's style", () => {
  const xml = fixture("pci-rom.xml");
  const added = add(xml, [{ address: "0000:01:00.0", managed: true }]);
  assertOk(
    added.includes(`      <rom bar='on' file='/etc/fake/bootrom.bin'/>
    </hostdev>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
      </source>
    </hostdev>
    <memballoon model='virtio'/>`),
    added,
  );
  assertEquals(parseDomainXml(added).hostdevs.map((h) => [h.address, h.owned]), [
    ["0000:06:12.5", false],
    ["0000:06:12.6", false],
    ["0000:01:00.0", true],
  ]);
});

Deno.test("editDomainXml() appends before </devices> when there is no hostdev", () => {
  const added = add(SMALL, [{ address: "0000:01:00.0", managed: false }]);
  assertOk(
    added.includes(`    </disk>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <source>
        <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
      </source>
    </hostdev>
  </devices>`),
    added,
  );
});

Deno.test("editDomainXml() writes rom, boot order and a multifunction guest address", () => {
  const added = add(SMALL, [{
    address: "0000:0a:00.1",
    managed: true,
    rom: { bar: "off", file: "/roms/a&b'<c>\".rom" },
    bootOrder: 2,
    guestAddress: { domain: 0, bus: 5, slot: 0x1f, function: 1, multifunction: true },
  }]);
  assertOk(
    added.includes(`    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x0a' slot='0x00' function='0x1'/>
      </source>
      <boot order='2'/>
      <rom bar='off' file='/roms/a&amp;b&apos;&lt;c&gt;&quot;.rom'/>
      <address type='pci' domain='0x0000' bus='0x05' slot='0x1f' function='0x1' multifunction='on'/>
    </hostdev>
`),
    added,
  );
});

Deno.test("parseDomainXml() reads boot order, ROM, guest address and managed as typed fields", () => {
  const added = add(SMALL, [{
    address: "0000:0a:00.1",
    managed: false,
    rom: { bar: "off", file: "/roms/a&b'<c>\".rom" },
    bootOrder: 2,
    guestAddress: { domain: 0, bus: 5, slot: 0x1f, function: 1, multifunction: true },
  }, { address: "0000:0b:00.0", managed: true }]);
  const [full, bare] = parseDomainXml(added).hostdevs;
  assertEquals(
    [full?.managed, full?.bootOrder, full?.romBar, full?.romFile, full?.guestAddress],
    [false, 2, "off", "/roms/a&b'<c>\".rom", { address: "0000:05:1f.1", multifunction: true }],
  );
  assertEquals(
    [bare?.managed, bare?.bootOrder, bare?.romBar, bare?.romFile, bare?.guestAddress],
    [true, null, null, null, null],
  );
  // As libvirt writes them back: decimal numbers, another quote style, a ROM without bar.
  const libvirtStyle = parseDomainXml(`<domain><name>d</name><devices>
    <hostdev mode="subsystem" type="pci" managed="yes"><source><address bus="1" slot="0" function="0"/></source>
      <boot order="10"/><rom file="/r.bin"/><address type="pci" bus="0" slot="16" function="2"/></hostdev>
  </devices></domain>`).hostdevs[0];
  assertEquals(
    [libvirtStyle?.bootOrder, libvirtStyle?.romBar, libvirtStyle?.romFile],
    [10, null, "/r.bin"],
  );
  assertEquals(libvirtStyle?.guestAddress, { address: "0000:00:10.2", multifunction: false });
});

Deno.test("parseDomainXml() reads unreadable field values as absent, never refusing the domain", () => {
  const hostdev = parseDomainXml(`<domain><name>d</name><devices>
    <hostdev mode='subsystem' type='pci' managed='maybe'><source><address bus='1' slot='0' function='0'/></source>
      <boot order='first'/><rom bar='auto'/><address type='ccw' cssid='0xfe' ssid='0' devno='1'/></hostdev>
    <hostdev mode='subsystem' type='pci'><source><address bus='2' slot='0' function='0'/></source>
      <address type='pci' bus='0' slot='0x40' function='0'/></hostdev>
  </devices></domain>`).hostdevs;
  assertEquals(
    hostdev.map((h) => [h.managed, h.bootOrder, h.romBar, h.romFile, h.guestAddress]),
    [[false, null, null, null, null], [false, null, null, null, null]],
  );
});

Deno.test("parseDomainXml() lists every device's guest PCI address and <os><boot dev>, never from comments or metadata", () => {
  const parsed = parseDomainXml(`<domain><name>d</name>
  <metadata><other:notes xmlns:other='urn:other'><os><boot dev='cdrom'/></os><devices><disk><address type='pci' domain='0x0000' bus='0x00' slot='0x11' function='0x0'/></disk></devices></other:notes></metadata>
  <os><type>hvm</type><boot dev='hd'/><!-- <boot dev='network'/> --><boot dev='cdrom'/></os>
  <devices>
    <disk type='file'><target dev='vda'/><address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/></disk>
    <!-- <disk><address type='pci' domain='0x0000' bus='0x00' slot='0x12' function='0x0'/></disk> -->
    <controller type='usb'><address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2' multifunction='on'/></controller>
    <controller type='scsi'><address type='drive' controller='0' bus='0' target='0' unit='0'/></controller>
    <interface type='hostdev'><source><address type='pci' domain='0x0000' bus='0x00' slot='0x13' function='0x0'/></source></interface>
    <hostdev mode='subsystem' type='pci'><source><address bus='0' slot='0x14' function='0'/></source><address type='pci' bus='0x02' slot='0x00' function='0x0'/></hostdev>
  </devices></domain>`);
  assertEquals(parsed.bootDevices, ["hd", "cdrom"]);
  assertEquals(parsed.guestAddresses, [
    { address: "0000:00:04.0", multifunction: false },
    { address: "0000:00:01.2", multifunction: true },
    { address: "0000:02:00.0", multifunction: false },
  ]);
});

Deno.test("editDomainXml() escapes quotes, <, & and newlines in record values", () => {
  const tricky = record("0000:01:00.0", { rule: `a'b"c<d>&e\nf\tg`, serial: "&#10;" });
  const added = add(SMALL, [{ address: "0000:01:00.0", managed: true }], [tricky]);
  assertOk(added.includes(`rule='a&apos;b&quot;c&lt;d&gt;&amp;e&#10;f&#9;g'`), added);
  assertEquals(parseDomainXml(added).records, [tricky]);
});

Deno.test("editDomainXml() creates <metadata> after the identity elements", () => {
  const added = add(SMALL, [{ address: "0000:01:00.0", managed: true }]);
  assertOk(
    added.startsWith(`<domain type='kvm'>
  <name>vm1</name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
  <metadata>
    <passthrough:hostdevs xmlns:passthrough='urn:passthrough:hostdevs:1' created='metadata'>
      <passthrough:device address='0000:01:00.0' vendor='10de' device='2684' subsystem-vendor='1043' subsystem-device='88e2' class='030000' driver='nouveau' rule='gpu'/>
    </passthrough:hostdevs>
  </metadata>
  <memory unit='KiB'>1048576</memory>`),
    added,
  );
});

Deno.test("editDomainXml() keeps other applications' metadata byte for byte", () => {
  const xml = fixture("metadata.xml");
  const added = add(xml, [{ address: "0000:01:00.0", managed: true }]);
  assertOk(added.includes(`  <app2:bar xmlns:app2="http://bar.com/" maman="baz">barish</app2:bar>
  <passthrough:hostdevs`));
  const removed = editDomainXml(added, { remove: ["0000:01:00.0"], add: [], records: [] });
  assertEquals(removed, xml);
});

Deno.test("editDomainXml() keeps hand-added hostdevs byte for byte", () => {
  const xml = fixture("hostdev-pci-multifunction.xml");
  const handAdded = parseDomainXml(xml).hostdevs.map((h) => h.xml);
  const added = add(xml, [{ address: "0000:01:00.0", managed: true }]);
  const moved = editDomainXml(added, {
    remove: ["0000:01:00.0"],
    add: [{ address: "0000:02:00.0", managed: true }],
    records: [record("0000:02:00.0")],
  });
  const after = parseDomainXml(moved);
  assertEquals(after.hostdevs.filter((h) => !h.owned).map((h) => h.xml), handAdded);
  assertEquals(after.hostdevs.filter((h) => h.owned).map((h) => h.address), ["0000:02:00.0"]);
});

Deno.test("editDomainXml() refuses to remove a hand-added hostdev", () => {
  const xml = fixture("pci-rom.xml");
  assertThrows(
    () => editDomainXml(xml, { remove: ["0000:06:12.5"], add: [], records: [] }),
    (error: unknown) => error instanceof DomainEditError && error.address === "0000:06:12.5",
  );
});

Deno.test("editDomainXml() refuses to add a hostdev the domain already has", () => {
  const xml = fixture("pci-rom.xml");
  assertThrows(
    () => add(xml, [{ address: "06:12.5", managed: true }]),
    (error: unknown) => error instanceof DomainEditError && /already has/.test(error.message),
  );
});

Deno.test("editDomainXml() removes an owned hostdev libvirt gave a guest address and alias", () => {
  const added = add(SMALL, [{ address: "0000:01:00.0", managed: true }]);
  // What libvirt hands back after defining: guest address and an alias inside our hostdev.
  const libvirtView = added.replace(
    `      </source>\n    </hostdev>`,
    `      </source>\n      <alias name='hostdev0'/>\n` +
      `      <address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x0'/>\n` +
      `    </hostdev>`,
  );
  assertOk(libvirtView !== added);
  const removed = editDomainXml(libvirtView, { remove: ["0000:01:00.0"], add: [], records: [] });
  assertEquals(removed, SMALL);
});

Deno.test("editDomainXml() rewrites records in place and keeps the created marker", () => {
  const added = add(SMALL, [{ address: "0000:01:00.0", managed: true }]);
  const updated = editDomainXml(added, {
    remove: [],
    add: [],
    records: [record("0000:01:00.0", { driver: "vfio-pci" })],
  });
  assertMatch(updated, /driver='vfio-pci'/);
  assertEquals(updated.replace("vfio-pci", "nouveau"), added);
  assertEquals(editDomainXml(updated, { remove: ["0000:01:00.0"], add: [], records: [] }), SMALL);
});

Deno.test("editDomainXml() creates <devices> when missing and removes it again", () => {
  const xml = fixture("xml2vmx-annotation.xml");
  const added = add(xml, [{ address: "0000:01:00.0", managed: true }]);
  assertMatch(added, / {2}<devices>\n {4}<hostdev [^]*<\/hostdev>\n {2}<\/devices>\n<\/domain>/);
  assertMatch(added, /created='devices metadata'/);
  assertEquals(editDomainXml(added, { remove: ["0000:01:00.0"], add: [], records: [] }), xml);
});

Deno.test("editDomainXml() opens <devices/> and <metadata/> and closes them again", () => {
  const xml = "<domain type='kvm'>\n  <name>d</name>\n  <metadata/>\n  <devices/>\n</domain>\n";
  const added = add(xml, [{ address: "0000:01:00.0", managed: true }]);
  assertEquals(parseDomainXml(added).hostdevs.map((h) => h.owned), [true]);
  assertMatch(added, /<devices>\n {4}<hostdev/);
  assertEquals(editDomainXml(added, { remove: ["0000:01:00.0"], add: [], records: [] }), xml);
});

Deno.test("editDomainXml() works on one-line documents and CRLF line ends", () => {
  const oneLine = "<domain><name>d</name><devices><disk/></devices></domain>";
  const added = add(oneLine, [{ address: "0000:01:00.0", managed: true }]);
  assertOk(!added.includes("\n"));
  assertEquals(parseDomainXml(added).hostdevs.length, 1);
  assertEquals(editDomainXml(added, { remove: ["0000:01:00.0"], add: [], records: [] }), oneLine);

  const crlf = SMALL.replaceAll("\n", "\r\n");
  const addedCrlf = add(crlf, [{ address: "0000:01:00.0", managed: true }]);
  assertOk(!/[^\r]\n/.test(addedCrlf));
  assertEquals(editDomainXml(addedCrlf, { remove: ["0000:01:00.0"], add: [], records: [] }), crlf);
});

Deno.test("editDomainXml() follows the document's indentation unit", () => {
  const tabs = SMALL.replaceAll("  ", "\t");
  const added = add(tabs, [{ address: "0000:01:00.0", managed: true }]);
  assertOk(added.includes("\t<metadata>\n\t\t<passthrough:hostdevs"), added);
  assertOk(added.includes("\t\t<hostdev mode='subsystem' type='pci' managed='yes'>\n"), added);
});

Deno.test("editDomainXml() output re-parses, with hostdevs and records as requested", () => {
  for (const name of fixtureNames()) {
    const xml = fixture(name);
    const before = parseDomainXml(xml);
    const added = add(xml, [
      { address: "0000:7f:1f.6", managed: true },
      { address: "0000:7f:1f.7", managed: true },
    ]);
    const after = parseDomainXml(added);
    assertEquals(after.hostdevs.length, before.hostdevs.length + 2, name);
    assertEquals(after.records.map((r) => r.address), ["0000:7f:1f.6", "0000:7f:1f.7"], name);
    assertEquals(after.name, before.name);
  }
});

Deno.test("editDomainXml() output validates with virt-xml-validate", {
  ignore: !hasCommand("virt-xml-validate"),
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-domain-xml-" });
  try {
    const path = `${dir}/edited.xml`;
    await Deno.writeTextFile(
      path,
      add(fixture("pci-rom.xml"), [{
        address: "0000:0a:00.1",
        managed: true,
        rom: { bar: "on", file: "/roms/a&b'.rom" },
        guestAddress: { domain: 0, bus: 0, slot: 9, function: 0, multifunction: true },
      }]),
    );
    const { code } = await new Deno.Command("virt-xml-validate", {
      args: [path, "domain"],
      stdout: "null",
      stderr: "piped",
    }).output();
    assertEquals(code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function hasCommand(name: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${name}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Through real libvirt: what libvirt stores and hands back must still parse, keep ownership and
// allow a clean removal.

import { Connection } from "../../ffi/mod.ts";
import { libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";

function libvirtDomain(type: "test" | "qemu", name: string): string {
  return `<domain type='${type}'>
  <name>${name}</name>
  <memory unit='KiB'>131072</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
  </devices>
</domain>
`;
}

/** Adds two owned hostdevs, defines, re-reads, removes them and defines again. */
function roundTripThroughLibvirt(conn: Connection, xml: string): void {
  const gpu = record("0000:41:00.0", { rule: `gpu "main" & <friends>` });
  const audio = record("0000:41:00.1", { classCode: "040300", driver: null });
  const added = editDomainXml(xml, {
    remove: [],
    add: [{ address: gpu.address, managed: true, rom: { bar: "on" } }, {
      address: audio.address,
      managed: true,
    }],
    records: [gpu, audio],
  });
  let stored: string;
  {
    using dom = conn.defineDomain(added);
    stored = dom.xml({ inactive: true, secure: true });
  }
  const parsed = parseDomainXml(stored);
  assertEquals(parsed.hostdevs.map((h) => [h.address, h.owned, h.managed]), [
    [gpu.address, true, true],
    [audio.address, true, true],
  ]);
  assertEquals(parsed.records, [gpu, audio]);
  // Nothing to do on libvirt's own formatting: the text comes back untouched.
  assertOk(editDomainXml(stored, { remove: [], add: [], records: [audio, gpu] }) === stored);

  const removed = editDomainXml(stored, {
    remove: [gpu.address, audio.address],
    add: [],
    records: [],
  });
  let after: string;
  {
    using dom = conn.defineDomain(removed);
    after = dom.xml({ inactive: true });
  }
  const reparsed = parseDomainXml(after);
  assertEquals(reparsed.hostdevs, []);
  assertEquals(reparsed.records, []);
  assertOk(!after.includes("<metadata"), after);
  assertOk(!after.includes("passthrough"), after);
}

Deno.test("editDomainXml() output survives libvirt's test driver define and re-read", () => {
  using conn = Connection.open("test:///default");
  const name = `pt-dx-${crypto.randomUUID().slice(0, 8)}`;
  roundTripThroughLibvirt(conn, libvirtDomain("test", name));
});

Deno.test("editDomainXml() rewrites an owned hostdev with <teaming> into a definition libvirt's schema accepts", () => {
  // libvirt's schema takes a PCI hostdev's <driver>, <teaming> and <source> as one group that
  // libxml2 wants unbroken: a <rom> or <boot> between <source> and <teaming> fails to validate.
  using conn = Connection.open("test:///default");
  const name = `pt-dx-${crypto.randomUUID().slice(0, 8)}`;
  const xml = libvirtDomain("test", name).replace(
    "  </devices>",
    `    <interface type='user'>
      <mac address='52:54:00:00:00:01'/>
      <model type='virtio'/>
      <teaming type='persistent'/>
      <alias name='ua-backup0'/>
    </interface>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x03' slot='0x07' function='0x1'/>
      </source>
      <teaming type='transient' persistent='ua-backup0'/>
    </hostdev>
  </devices>`,
  );
  const owned = editDomainXml(xml, { remove: [], add: [], records: [record("0000:03:07.1")] });
  let stored: string;
  {
    using dom = conn.defineDomain(owned);
    stored = dom.xml({ inactive: true });
  }
  const rewritten = editDomainXml(stored, {
    remove: [],
    add: [],
    records: parseDomainXml(stored).records,
    rewrite: [{ address: "0000:03:07.1", managed: true, rom: { bar: "off" } }],
  });
  using dom = conn.defineDomain(rewritten);
  const [hostdev] = parseDomainXml(dom.xml({ inactive: true })).hostdevs;
  assertEquals([hostdev?.owned, hostdev?.romBar], [true, "off"]);
  assertMatch(hostdev?.xml ?? "", /<teaming type='transient' persistent='ua-backup0'\/>/);
});

const unavailable = libvirtdUnavailable();

Deno.test({
  name: "editDomainXml() removes owned hostdevs after the QEMU driver added guest addresses" +
    (unavailable === null ? "" : ` (skipped: ${unavailable})`),
  ignore: unavailable !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    using conn = Connection.open(daemon.uri);
    const name = `pt-dx-${crypto.randomUUID().slice(0, 8)}`;
    try {
      roundTripThroughLibvirt(conn, libvirtDomain("qemu", name));
    } finally {
      try {
        using dom = conn.lookupDomainByName(name);
        dom.undefine();
      } catch {
        // Not defined: nothing to clean up.
      }
    }
  },
});

Deno.test("editDomainXml() round-trips around comments and odd layouts next to its anchors", () => {
  const hostdev = `<hostdev mode='subsystem' type='pci' managed='yes'><source>` +
    `<address domain='0x0000' bus='0x06' slot='0x00' function='0x0'/></source></hostdev>`;
  const variants = [
    // A comment after the last hostdev on its line stays with it.
    `<domain>\n  <name>d</name>\n  <devices>\n    ${hostdev} <!-- hand-added -->\n  </devices>\n</domain>\n`,
    // A multi-line comment and another element share the hostdev's line.
    `<domain>\n  <name>d</name>\n  <devices>\n    ${hostdev}<disk/><!-- a\n b -->\n  </devices>\n</domain>`,
    // The identity elements carry comments; the root's children are indented by tabs.
    `<domain>\n\t<name>d</name> <!-- n -->\n\t<uuid>u</uuid><!--u-->\n\t<devices>\n\t\t${hostdev}\n\t</devices>\n</domain>`,
    // The closing tags share lines with content.
    `<domain><name>d</name>\n<devices>${hostdev}\n</devices></domain>`,
    // CRLF, a BOM and a declaration.
    `\uFEFF<?xml version='1.0'?>\r\n<domain>\r\n  <name>d</name>\r\n  <devices>\r\n  </devices>\r\n</domain>\r\n`,
  ];
  for (const xml of variants) {
    const added = add(xml, [
      { address: "0000:01:00.0", managed: true },
      { address: "0000:01:00.1", managed: true },
    ]);
    const parsed = parseDomainXml(added);
    assertEquals(parsed.hostdevs.filter((h) => h.owned).length, 2, added);
    assertEquals(parsed.records.length, 2);
    const restored = editDomainXml(added, {
      remove: ["0000:01:00.0", "0000:01:00.1"],
      add: [],
      records: [],
    });
    assertEquals(restored, xml);
  }
});

Deno.test("parseDomainXml() reads a DOCTYPE mentioned in a prolog comment as text", () => {
  const xml = "<!-- no <!DOCTYPE here -->\n<domain><name>d</name></domain>";
  assertEquals(parseDomainXml(xml).name, "d");
});

Deno.test("parseDomainXml() refuses character references to non-XML characters", () => {
  assertThrowsDomainXmlError("<domain><name>a&#0;</name></domain>");
});

Deno.test("parseDomainXml() reads name, UUID and MACs alike whether markup is in them or not", () => {
  // Text alone is read from the document; text with a comment or CDATA through the XML library.
  const xml = (name: string, uuid: string, mac: string) =>
    `<domain><name>${name}</name><uuid>${uuid}</uuid><devices>
  <interface type='network'><!-- <mac address='52:54:00:00:00:99'/> --><mac address='${mac}'/><source network='default'/></interface>
  <interface type='bridge'><mac address='52:54:00:00:00:02'/><source bridge='br0'/></interface>
</devices></domain>`;
  const plain = parseDomainXml(xml("a&amp;b&#x43;", " 0c7a&#45;4ee2 ", "52:54:00:AB:&#x43;D:ef"));
  const marked = parseDomainXml(
    xml("a&amp;b<!-- x -->&#x43;", "<![CDATA[ 0c7a-]]>4ee2 ", "52:54:00:ab:cd:EF"),
  );
  for (const parsed of [plain, marked]) {
    assertEquals(
      [parsed.name, parsed.uuid, parsed.macs],
      ["a&bC", "0c7a-4ee2", ["52:54:00:ab:cd:ef", "52:54:00:00:00:02"]],
    );
  }
  assertEquals(parseDomainXml("<domain><name>vm</name><uuid/></domain>").uuid, "");
  const error = assertThrowsDomainXmlError("<domain>\n  <name>vm</name><uuid>&#1;</uuid></domain>");
  assertMatch(error.message, /^Cannot read "<uuid>": at line 2, column 18/);
});

Deno.test("parseDomainXml() locates a record whose attribute holds a non-XML character", () => {
  const xml = `<domain><name>vm</name><metadata>
  <pt:hostdevs xmlns:pt='${METADATA_NAMESPACE}'>
    <pt:device address='0000:0b:00.0' vendor='10de' device='1b06' class='030000' rule='g&amp;pu'/>
    <pt:device address='0000:0b:00.1' vendor='10de' device='10ef' class='040300' rule='&#0;'/>
  </pt:hostdevs></metadata></domain>`;
  const error = assertThrowsDomainXmlError(xml);
  // The record itself, not the element that holds it.
  assertMatch(error.message, /^Cannot read "<pt:device>": at line 4, column 5/);
  assertEquals(
    parseDomainXml(xml.replace("&#0;", "&lt;gpu&gt;")).records.map((r) => r.rule),
    ["g&pu", "<gpu>"],
  );
});

Deno.test("editDomainXml() rewrites an owned hostdev removed and added in one edit", () => {
  const xml = fixture("pci-rom.xml");
  const added = add(xml, [{ address: "0000:01:00.0", managed: true }]);
  const rewritten = editDomainXml(added, {
    remove: ["0000:01:00.0"],
    add: [{ address: "0000:01:00.0", managed: true, rom: { bar: "off" } }],
    records: [record("0000:01:00.0")],
  });
  const hostdevs = parseDomainXml(rewritten).hostdevs;
  assertEquals(hostdevs.map((h) => [h.address, h.owned]), [
    ["0000:06:12.5", false],
    ["0000:06:12.6", false],
    ["0000:01:00.0", true],
  ]);
  assertMatch(hostdevs[2]?.xml ?? "", /<rom bar='off'\/>/);
  assertEquals(editDomainXml(rewritten, { remove: ["0000:01:00.0"], add: [], records: [] }), xml);
});

Deno.test("editDomainXml() rewrites an owned hostdev in place, keeping the children its spec does not describe", () => {
  const added = add(SMALL, [
    { address: "0000:01:00.0", managed: true, rom: { bar: "on", file: "/roms/old.rom" } },
    { address: "0000:05:00.0", managed: true },
  ]);
  // Set by hand: a driver before <source>; an alias, an ACPI index and a guest address after it.
  const own = added
    .replace(
      /(managed='yes'>)(\s*<source>\s*<address domain='0x0000' bus='0x01')/,
      "$1\n      <driver name='vfio'/>$2",
    )
    .replace(
      /(<rom bar='on' file='\/roms\/old.rom'\/>)/,
      "<alias name='ua-gpu'/>\n      $1\n      <acpi index='7'/>\n" +
        "      <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>",
    );
  assertOk(own.includes("<acpi index='7'/>") && own.includes("<driver name='vfio'/>"), own);
  const records = parseDomainXml(own).records;
  const rewritten = editDomainXml(own, {
    remove: [],
    add: [],
    records,
    rewrite: [{
      address: "0000:01:00.0",
      managed: false,
      bootOrder: 2,
      guestAddress: { domain: 0, bus: 0, slot: 7, function: 0 },
    }],
  });
  const hostdevs = parseDomainXml(rewritten).hostdevs;
  // Same place, new settings, the user's children kept.
  assertEquals(hostdevs.map((h) => [h.address, h.managed, h.bootOrder, h.romFile]), [
    ["0000:01:00.0", false, 2, null],
    ["0000:05:00.0", true, null, null],
  ]);
  assertEquals(hostdevs[0]?.guestAddress?.address, "0000:00:07.0");
  for (const kept of ["<driver name='vfio'/>", "<alias name='ua-gpu'/>", "<acpi index='7'/>"]) {
    assertOk(hostdevs[0]?.xml.includes(kept), `${kept} kept`);
  }
  const lines = (xml: string) => xml.split("\n");
  assertEquals(lines(rewritten).filter((l) => !lines(own).includes(l)).map((l) => l.trim()), [
    "<hostdev mode='subsystem' type='pci' managed='no'>",
    "<boot order='2'/>",
  ]);
  assertEquals(lines(own).filter((l) => !lines(rewritten).includes(l)).map((l) => l.trim()), [
    "<rom bar='on' file='/roms/old.rom'/>",
  ]);
  // Never a hostdev the user wrote, nor one the edit also removes.
  const hand = SMALL.replace(
    "</devices>",
    "  <hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x09' slot='0x00' function='0x0'/></source></hostdev>\n  </devices>",
  );
  assertThrows(
    () =>
      editDomainXml(hand, {
        remove: [],
        add: [],
        records: [],
        rewrite: [{ address: "0000:09:00.0", managed: true }],
      }),
    DomainEditError,
    "not added by passthrough",
  );
  assertThrows(
    () =>
      editDomainXml(own, {
        remove: ["0000:01:00.0"],
        add: [],
        records,
        rewrite: [{ address: "0000:01:00.0", managed: true }],
      }),
    DomainEditError,
    "also removed",
  );
  // Written again at another address (`from`), never onto one the domain holds.
  const moved = editDomainXml(own, {
    remove: [],
    add: [],
    records,
    rewrite: [{ address: "0000:0b:00.0", managed: true, from: "0000:01:00.0" }],
  });
  assertEquals(parseDomainXml(moved).hostdevs.map((h) => h.address), [
    "0000:0b:00.0",
    "0000:05:00.0",
  ]);
  assertOk(parseDomainXml(moved).hostdevs[0]?.xml.includes("<acpi index='7'/>"));
  assertThrows(
    () =>
      editDomainXml(own, {
        remove: [],
        add: [],
        records,
        rewrite: [{ address: "0000:05:00.0", managed: true, from: "0000:01:00.0" }],
      }),
    DomainEditError,
    `already has "0000:05:00.0"`,
  );
});

Deno.test("editDomainXml() creates <devices> and <metadata> in a one-line domain", () => {
  const xml = "<domain><name>d</name></domain>";
  const added = add(xml, [{ address: "0000:01:00.0", managed: true }]);
  assertOk(!added.includes("\n"), added);
  assertEquals(parseDomainXml(added).hostdevs.map((h) => h.owned), [true]);
  assertEquals(editDomainXml(added, { remove: ["0000:01:00.0"], add: [], records: [] }), xml);
});

Deno.test("editDomainXml() moves an owned hostdev in place: one source address line changes", () => {
  const xml = `<domain>
  <name>vm</name>
  <devices>
    <disk type='file' device='disk'/>
  </devices>
</domain>
`;
  const one = editDomainXml(xml, {
    remove: [],
    add: [
      { address: "0000:01:00.0", managed: true, bootOrder: 2, rom: { bar: "off" } },
      { address: "0000:05:00.0", managed: true },
    ],
    records: [record("0000:01:00.0"), record("0000:05:00.0")],
  });
  const withGuest = one.replace(
    /(bus='0x01' slot='0x00' function='0x0'\/>\s*<\/source>)/,
    "$1\n      <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>",
  );
  const moved = editDomainXml(withGuest, {
    remove: [],
    add: [],
    records: [record("0000:05:00.0"), record("0000:0b:00.0")],
    move: [{ from: "0000:01:00.0", to: "0000:0b:00.0" }],
  });
  const before = parseDomainXml(withGuest).hostdevs;
  const after = parseDomainXml(moved).hostdevs;
  // Same position (before the 05:00.0 hostdev), settings and guest address; owned at the new address.
  assertEquals(after.map((h) => h.address), ["0000:0b:00.0", "0000:05:00.0"]);
  assertEquals(
    after.map((h) => [h.owned, h.bootOrder, h.romBar, h.guestAddress?.address ?? null]),
    before.map((h) => [true, h.bootOrder, h.romBar, h.guestAddress?.address ?? null]),
  );
  const changed = (a: string, b: string) => {
    const x = a.split("\n");
    const y = b.split("\n");
    return x.filter((line, i) => line !== y[i]);
  };
  // Outside the metadata, the one changed line is the source address.
  const devicesOf = (s: string) => s.slice(s.indexOf("<devices>"));
  assertEquals(changed(devicesOf(withGuest), devicesOf(moved)), [
    "        <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>",
  ]);
  assertMatch(moved, /<address domain='0x0000' bus='0x0b' slot='0x00' function='0x0'\/>/);
  // Refused: a hand-added or absent source, or a target the domain already has.
  const refuse = (move: { from: string; to: string }) =>
    assertThrows(
      () => editDomainXml(withGuest, { remove: [], add: [], records: [], move: [move] }),
      DomainEditError,
    );
  refuse({ from: "0000:02:00.0", to: "0000:0b:00.0" });
  refuse({ from: "0000:01:00.0", to: "0000:05:00.0" });
  const handAdded = withGuest.replace(/<passthrough:device address='0000:01:00.0'[^>]*\/>/, "");
  assertThrows(
    () =>
      editDomainXml(handAdded, {
        remove: [],
        add: [],
        records: [record("0000:05:00.0")],
        move: [{ from: "0000:01:00.0", to: "0000:0b:00.0" }],
      }),
    DomainEditError,
    "not added by passthrough",
  );
});

Deno.test("parseDomainXml() reads the machine type and the <controller type='pci'> indexes, never from comments", () => {
  const parsed = parseDomainXml(`<domain><name>d</name>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <controller type='pci' index='0' model='pcie-root'/>
    <!-- <controller type='pci' index='7' model='pcie-root-port'/> -->
    <controller type='pci' index='0x2' model='pcie-root-port'/>
    <controller type='usb' index='0' model='qemu-xhci'/>
    <controller type='pci' index='3' model='pcie-root-port'><target chassis='3'/></controller>
    <controller type='pci' model='pcie-to-pci-bridge'/>
  </devices></domain>`);
  assertEquals(parsed.machine, "pc-q35-7.2");
  assertEquals(parsed.pciControllers, [
    { index: 0, model: "pcie-root" },
    { index: null, model: "pcie-root-port" },
    { index: 3, model: "pcie-root-port" },
    { index: null, model: "pcie-to-pci-bridge" },
  ]);
  assertEquals(parseDomainXml(SMALL).machine, null);
  assertEquals(parseDomainXml(SMALL).pciControllers, []);
});

Deno.test("editDomainXml() adds a pcie-root-port before the added hostdevs, refusing a taken index", () => {
  const xml = SMALL.replace(
    "  <devices>\n",
    "  <devices>\n    <controller type='pci' index='0' model='pcie-root'/>\n",
  );
  const spec: HostdevSpec = {
    address: "0000:01:00.0",
    managed: true,
    guestAddress: { domain: 0, bus: 1, slot: 0, function: 0, multifunction: true },
  };
  const edited = editDomainXml(xml, {
    remove: [],
    add: [spec],
    records: [record("0000:01:00.0")],
    addControllers: [{ index: 1, model: "pcie-root-port" }],
  });
  assertOk(
    edited.includes(
      "\n    <controller type='pci' index='1' model='pcie-root-port'/>\n    <hostdev mode='subsystem' type='pci' managed='yes'>",
    ),
    edited,
  );
  assertEquals(parseDomainXml(edited).pciControllers.map((c) => c.index), [0, 1]);
  // Removing the hostdev later leaves the controller: it is libvirt's to keep, and reused.
  const removed = editDomainXml(edited, { remove: ["0000:01:00.0"], add: [], records: [] });
  assertEquals(parseDomainXml(removed).pciControllers.map((c) => c.index), [0, 1]);
  for (const index of [0, 256, 1.5]) {
    assertThrows(
      () =>
        editDomainXml(xml, {
          remove: [],
          add: [],
          records: [],
          addControllers: [{ index, model: "pcie-root-port" }],
        }),
      RangeError,
    );
  }
  assertThrows(
    () =>
      editDomainXml(edited, {
        remove: [],
        add: [],
        records: [record("0000:01:00.0")],
        addControllers: [{ index: 1, model: "pcie-root-port" }],
      }),
    RangeError,
    "already has one",
  );
});

Deno.test("parseDomainXml() lists NVMe disks' controllers and block disks' devices", () => {
  const xml = `<domain type='kvm'><name>vm</name><devices>
    <disk type='nvme' device='disk'><driver name='qemu' type='raw'/>
      <source type='pci' managed='yes' namespace='1'>
        <address domain='0x0001' bus='0x02' slot='0x00' function='0x0'/>
      </source><target dev='vda' bus='virtio'/></disk>
    <disk type='nvme' device='disk'><target dev='vdb' bus='virtio'/></disk>
    <disk type='block' device='disk'><source dev='/dev/disk/by-id/ata-WDC_1'/><target dev='vdc'/></disk>
    <disk type='block' device='cdrom'><target dev='sda' bus='sata'/></disk>
    <disk type='file' device='disk'><source file='/srv/vm.qcow2'><dataStore type='block'>
      <format type='raw'/><source dev='/dev/mapper/data'/></dataStore></source>
      <backingStore type='block' index='1'><format type='raw'/><source dev='/dev/vg/base'/>
      </backingStore><target dev='vdd'/></disk>
  </devices></domain>`;
  const parsed = parseDomainXml(xml);
  // An NVMe disk without a source (libvirt's schema allows it) detaches nothing.
  assertEquals(parsed.nvmeDisks, ["0001:02:00.0"]);
  // A disk-only snapshot of an NVMe disk: its backing store's controller is detached too.
  const snapshot = parseDomainXml(xml.replace(
    "<target dev='vdd'/>",
    `<target dev='vdd'/></disk><disk type='file' device='disk'><source file='/s.qcow2'/>
      <backingStore type='nvme' index='1'><format type='raw'/><source type='pci' managed='yes'
      namespace='1'><address domain='0x0000' bus='0x07' slot='0x00' function='0x0'/></source>
      <backingStore type='nvme' index='2'><format type='raw'/><source type='pci' managed='yes'
      namespace='1'><address domain='0x0000' bus='0x08' slot='0x00' function='0x0'/></source>
      </backingStore></backingStore><target dev='vde'/>`,
  ));
  assertEquals(snapshot.nvmeDisks, ["0001:02:00.0", "0000:07:00.0", "0000:08:00.0"]);
  assertThrows(
    () =>
      parseDomainXml(xml.replace(
        "<target dev='vdd'/>",
        `<target dev='vdd'/></disk><disk type='file'><source file='/s'/><backingStore
        type='nvme'><source type='pci'><address type='usb' bus='1' port='1'/></source>
        </backingStore><target dev='vde'/>`,
      )),
    DomainXmlError,
    "NVMe backing store has no valid source address",
  );
  assertEquals(parsed.blockDisks, [
    "/dev/disk/by-id/ata-WDC_1",
    "/dev/mapper/data",
    "/dev/vg/base",
  ]);
  assertEquals(heldAddresses(parsed), ["0001:02:00.0"]);
  // A source whose address cannot be read is refused, as a hostdev's is.
  assertThrows(
    () => parseDomainXml(xml.replace("bus='0x02'", "bus='zz'")),
    /NVMe disk has no valid source address: at line 2, column 5/,
  );
});

Deno.test("editDomainXml() refuses to remove what the domain lacks, or what is no PCI address", () => {
  const added = add(SMALL, [{ address: "0000:01:00.0", managed: true }]);
  const remove = (address: string) => () =>
    editDomainXml(added, { remove: [address], add: [], records: [] });
  assertThrows(remove("0000:09:00.0"), DomainEditError, "the domain does not have it");
  assertThrows(remove("not-an-address"), TypeError, 'Not a PCI address: "not-an-address"');
});

Deno.test("editDomainXml() refuses to move a hostdev it also removes, or two onto one address", () => {
  const both = add(SMALL, [
    { address: "0000:01:00.0", managed: true },
    { address: "0000:02:00.0", managed: true },
  ]);
  const edit = (
    move: { from: string; to: string }[],
    extra: Partial<Parameters<typeof editDomainXml>[1]> = {},
  ) =>
  () => editDomainXml(both, { remove: [], add: [], records: [], move, ...extra });
  assertThrows(
    edit([{ from: "0000:01:00.0", to: "0000:0b:00.0" }], { remove: ["0000:01:00.0"] }),
    DomainEditError,
    "it is also removed",
  );
  // The first move takes 0b:00.0: a second move there, or an add of it, would hold it twice.
  assertThrows(
    edit([
      { from: "0000:01:00.0", to: "0000:0b:00.0" },
      { from: "0000:02:00.0", to: "0000:0b:00.0" },
    ]),
    DomainEditError,
    "the domain already has that address",
  );
  assertThrows(
    edit([{ from: "0000:01:00.0", to: "0000:0b:00.0" }], {
      add: [{ address: "0000:0b:00.0", managed: true }],
    }),
    DomainEditError,
    "the domain already has it",
  );
  // A move frees its old address: a hostdev may be added there.
  const swapped = edit([{ from: "0000:01:00.0", to: "0000:0b:00.0" }], {
    add: [{ address: "0000:01:00.0", managed: true }],
    records: [record("0000:0b:00.0"), record("0000:01:00.0"), record("0000:02:00.0")],
  })();
  assertEquals(parseDomainXml(swapped).hostdevs.map((h) => h.address), [
    "0000:0b:00.0",
    "0000:02:00.0",
    "0000:01:00.0",
  ]);
});

Deno.test("editDomainXml() refuses to add one address twice in one edit", () => {
  assertThrows(
    () =>
      add(SMALL, [
        { address: "0000:01:00.0", managed: true },
        { address: "01:00.0", managed: true },
      ]),
    DomainEditError,
    "the domain already has it",
  );
});

Deno.test("editDomainXml() keeps what the user put in a <devices> or <metadata> it created", () => {
  const xml = fixture("xml2vmx-annotation.xml");
  const added = add(xml, [{ address: "0000:01:00.0", managed: true }]);
  assertMatch(added, /created='devices metadata'/);
  const remove = (edited: string) =>
    editDomainXml(edited, { remove: ["0000:01:00.0"], add: [], records: [] });
  // An element, or only a comment, written there since.
  const disk = "<disk type='file' device='disk'><source file='/a.img'/><target dev='vda'/></disk>";
  for (const mine of [disk, "<!-- the user's note -->"]) {
    // Before the hostdev and after it.
    for (
      const edited of [
        added.replace("<devices>\n", `<devices>\n    ${mine}\n`),
        added.replace("</devices>", `  ${mine}\n  </devices>`),
      ]
    ) {
      assertOk(edited !== added);
      const removed = remove(edited);
      assertOk(removed.includes(mine), mine);
      assertMatch(removed, /<devices>/);
      assertEquals(parseDomainXml(removed).hostdevs, []);
    }
  }
  const other = "<app:note xmlns:app='urn:example:app'>kept</app:note>";
  const withMeta = added.replace("</metadata>", `  ${other}\n  </metadata>`);
  const removed = remove(withMeta);
  assertOk(removed.includes(`<metadata>`) && removed.includes(other));
  assertEquals(parseDomainXml(removed).records, []);
});

Deno.test("editDomainXml() removes only the hostdev's element when its line holds more", () => {
  const added = add(SMALL, [{ address: "0000:01:00.0", managed: true }]);
  const after = "<!-- hand-written, same line -->";
  const edited = added.replace(/<\/hostdev>\n/, `</hostdev>${after}\n`);
  assertOk(edited !== added);
  const removed = editDomainXml(edited, { remove: ["0000:01:00.0"], add: [], records: [] });
  assertOk(removed.includes(after));
  assertEquals(parseDomainXml(removed).hostdevs, []);
});

Deno.test("editDomainXml() records a <devices> it creates even when the records stay the same", () => {
  // The records list 01:00.0, but <devices> (its hostdev with it) was deleted by hand.
  const added = add(SMALL, [{ address: "0000:01:00.0", managed: true }]);
  assertMatch(added, /created='metadata'/);
  const cut = (xml: string) => xml.replace(/\n {2}<devices>[^]*<\/devices>/, "");
  const noDevices = cut(added);
  const records = parseDomainXml(noDevices).records;
  assertEquals(records.map((r) => r.address), ["0000:01:00.0"]);
  const readded = editDomainXml(noDevices, {
    remove: [],
    add: [{ address: "0000:01:00.0", managed: true }],
    records,
  });
  assertMatch(readded, /created='devices metadata'/);
  // So that removing it restores the domain as it was before passthrough, less what was cut.
  assertEquals(
    editDomainXml(readded, { remove: ["0000:01:00.0"], add: [], records: [] }),
    cut(SMALL),
  );
});

Deno.test("editDomainXml() keeps the comments written inside an owned hostdev it rewrites, where they were", () => {
  const added = add(SMALL, [{
    address: "0000:01:00.0",
    managed: true,
    rom: { bar: "on" },
    guestAddress: { domain: 0, bus: 0, slot: 7, function: 0 },
  }]);
  // A comment before <source>, one after the <rom> the rewrite drops, and one inside <source>,
  // which goes with it (the spec writes <source>).
  const own = added
    .replace(
      /(managed='yes'>)(\s*<source>)/,
      "$1\n      <!-- RTX 4090: the guest driver binds by slot 7 -->$2",
    )
    .replace("<rom bar='on'/>", "<rom bar='on'/>\n      <!-- <rom file='/roms/old.rom'/> -->")
    .replace("<source>", "<source><!-- host side -->");
  const rewritten = editDomainXml(own, {
    remove: [],
    add: [],
    records: parseDomainXml(own).records,
    rewrite: [{
      address: "0000:01:00.0",
      managed: true,
      bootOrder: 1,
      guestAddress: { domain: 0, bus: 0, slot: 7, function: 0 },
    }],
  });
  const hostdev = parseDomainXml(rewritten).hostdevs[0]!;
  assertEquals([hostdev.bootOrder, hostdev.romBar], [1, null]);
  assertEquals(
    hostdev.xml.split("\n").map((l) => l.trim()),
    [
      "<hostdev mode='subsystem' type='pci' managed='yes'>",
      "<!-- RTX 4090: the guest driver binds by slot 7 -->",
      "<source>",
      "<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>",
      "</source>",
      "<boot order='1'/>",
      "<!-- <rom file='/roms/old.rom'/> -->",
      "<address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>",
      "</hostdev>",
    ],
  );
});

Deno.test("parseDomainXml() lists each device's <boot order> with its element, never from comments or metadata", () => {
  const parsed = parseDomainXml(`<domain><name>d</name>
  <metadata><other:notes xmlns:other='urn:other'><devices><disk><boot order='7'/></disk></devices></other:notes></metadata>
  <devices>
    <disk type='file'><target dev='vda'/><boot order=' 2 '/></disk>
    <!-- <disk><boot order='5'/></disk> -->
    <interface type='network'><source network='default'/><boot order='1'/></interface>
    <hostdev mode='subsystem' type='pci'><source><address bus='0' slot='0x14' function='0'/></source><boot order='3'/></hostdev>
    <redirdev bus='usb' type='spicevmc'><boot order='x'/></redirdev>
  </devices></domain>`);
  assertEquals(parsed.bootOrders, [
    { device: "disk", order: 2 },
    { device: "interface", order: 1 },
    { device: "hostdev", order: 3 },
  ]);
});
