/**
 * What a moved card's evidence and a drifted device's identity say, on one line: a slot or
 * driver name read from a captured tree is a file name, and may hold a newline.
 */

import { assertEquals } from "../helpers/assert.ts";
import { findMovedCard } from "../../lib/resolve/moves.ts";
import { describeIdentity } from "../../lib/plan/issues.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";

/** A slot name that reads as a line of `plan`'s reasoning of its own. */
const SLOT = "PCIE1\n    - Group 9: nothing";

Deno.test("findMovedCard() names a recorded slot holding a newline escaped in its evidence", () => {
  const host = topologyFromDescription({
    devices: [{
      bdf: "0000:0c:00.0",
      group: 7,
      class: "0x030000",
      vendor: "0x10de",
      device: "0x2684",
      subsystem_vendor: null,
      subsystem_device: null,
      driver: "vfio-pci",
      revision: null,
      slot: SLOT,
    }],
  }, { source: "t" });
  const record = {
    address: "0000:08:00.0",
    vendorId: "10de",
    deviceId: "2684",
    subsystemVendorId: null,
    subsystemDeviceId: null,
    classCode: "030000",
    serial: null,
    driver: "nvidia",
    rule: "gpu",
    slot: SLOT,
  };
  const card = findMovedCard(
    record,
    "0000:08:00.0",
    host.devices.map((device) => ({ device })),
    host,
  );
  assertEquals(card?.evidence, "same IDs in the recorded slot PCIE1\\u000a    - Group 9: nothing");
});

Deno.test("describeIdentity() writes a slot or driver name holding a newline escaped", () => {
  assertEquals(
    describeIdentity({
      vendorId: "10de",
      deviceId: "2684",
      subsystemVendorId: null,
      subsystemDeviceId: null,
      classCode: "030000",
      serial: null,
      slot: SLOT,
      driver: "nvidia\nx",
    }),
    "10de:2684 (class 030000, slot PCIE1\\u000a    - Group 9: nothing, driver nvidia\\u000ax)",
  );
});
