// `<interface type='hostdev'>` in domain XML: written from a spec, recorded in our metadata
// (`<passthrough:interface>`), removed again byte for byte, and hand-written ones refused.

import { assertEquals, assertMatch, assertThrows } from "../helpers/assert.ts";
import { DomainEditError, editDomainXml, parseDomainXml } from "../../lib/domain/domain_xml.ts";
import type { DeviceIdentity, VfIdentity } from "../../lib/plan/types.ts";

const XML = `<domain type='kvm'>
  <name>vm</name>
  <devices>
    <interface type='network'>
      <mac address='52:54:00:00:00:01'/>
      <source network='default'/>
    </interface>
  </devices>
</domain>
`;

const PF: DeviceIdentity = {
  address: "0000:07:00.0",
  vendorId: "8086",
  deviceId: "10c9",
  subsystemVendorId: "8086",
  subsystemDeviceId: "a03c",
  classCode: "020000",
  serial: "00-1b-21-ff-ff-a0-b1-c2",
  driver: "igb",
  rule: "uplink",
};

const RECORD: VfIdentity = { address: "0000:07:10.2", index: 1, mac: "52:54:00:ab:cd:ef", pf: PF };

const SPEC = {
  address: "0000:07:10.2",
  managed: true,
  interface: { mac: "52:54:00:ab:cd:ef", vlan: { tags: [20], trunk: false } },
};

Deno.test("editDomainXml() writes an owned interface with its record, and removes both exactly", () => {
  const added = editDomainXml(XML, { remove: [], add: [SPEC], records: [], vfRecords: [RECORD] });
  assertMatch(
    added,
    /<interface type='hostdev' managed='yes'>\n {6}<mac address='52:54:00:ab:cd:ef'\/>\n {6}<source>\n {8}<address type='pci' domain='0x0000' bus='0x07' slot='0x10' function='0x2'\/>/,
  );
  const parsed = parseDomainXml(added);
  assertEquals(parsed.interfaces.map((i) => [i.address, i.owned, i.mac, i.vlan]), [
    ["0000:07:10.2", true, "52:54:00:ab:cd:ef", { tags: [20], trunk: false }],
  ]);
  assertEquals(parsed.vfRecords, [RECORD]);
  assertEquals(parsed.records, []);
  // Every interface MAC counts as taken, the network one too.
  assertEquals(parsed.macs, ["52:54:00:00:00:01", "52:54:00:ab:cd:ef"]);
  // An edit that does not name VF records keeps them (a repair of hostdevs only).
  assertEquals(
    parseDomainXml(editDomainXml(added, { remove: [], add: [], records: [] })).vfRecords,
    [
      RECORD,
    ],
  );
  const removed = editDomainXml(added, {
    remove: ["0000:07:10.2"],
    add: [],
    records: [],
    vfRecords: [],
  });
  assertEquals(removed, XML);
});

Deno.test("editDomainXml() never removes a hand-written interface, nor adds one twice", () => {
  const hand = XML.replace(
    "  </devices>",
    `    <interface type='hostdev'>
      <source><address type='pci' domain='0x0000' bus='0x07' slot='0x10' function='0x2'/></source>
    </interface>
  </devices>`,
  );
  assertEquals(parseDomainXml(hand).interfaces.map((i) => i.owned), [false]);
  assertThrows(
    () => editDomainXml(hand, { remove: ["0000:07:10.2"], add: [], records: [] }),
    DomainEditError,
    "not added by passthrough",
  );
  assertThrows(
    () => editDomainXml(hand, { remove: [], add: [SPEC], records: [] }),
    DomainEditError,
    "already has it",
  );
});

Deno.test("parseDomainXml() reads metadata written before interface records existed", () => {
  const old = `<domain><name>vm</name>
  <metadata>
    <passthrough:hostdevs xmlns:passthrough='urn:passthrough:hostdevs:1'>
      <passthrough:device address='0000:01:00.0' vendor='10de' device='2684' class='030000' rule='gpu'/>
    </passthrough:hostdevs>
  </metadata>
  <devices/>
</domain>`;
  const parsed = parseDomainXml(old);
  assertEquals([parsed.records.length, parsed.vfRecords, parsed.interfaces], [1, [], []]);
  // A record missing its VF index is refused, like a device record missing its IDs.
  const broken = old.replace(
    "</passthrough:hostdevs>",
    "<passthrough:interface address='0000:07:10.2' mac='52:54:00:ab:cd:ef' " +
      "pf-address='0000:07:00.0' vendor='8086' device='1572' class='020000' rule='nic'/>" +
      "</passthrough:hostdevs>",
  );
  assertThrows(() => parseDomainXml(broken), SyntaxError, "bad address or VF index");
  // And one missing what it names its PF by.
  assertThrows(
    () => parseDomainXml(broken.replace(" pf-address='0000:07:00.0'", "")),
    SyntaxError,
    'lacks attribute "pf-address"',
  );
});
