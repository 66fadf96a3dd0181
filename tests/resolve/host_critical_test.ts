/**
 * `hostCriticalReason()`: which devices planning and the start guard call ones the host needs
 * when a VM would take them: what the host uses now, platform functions, and storage, network,
 * display and USB controllers of another slot than the cards asked for. Each class, one by one.
 */

import { assertEquals } from "../helpers/assert.ts";
import {
  cardOf,
  hostCriticalOnItsOwn,
  hostCriticalReason,
} from "../../lib/resolve/host_critical.ts";
import type { PciDevice } from "../../lib/host/types.ts";

const ASKED = { matchedCards: new Set(["0000:0b:00 10de"]), hostUse: [] };

Deno.test("hostCriticalReason(): every platform class, whatever was asked for", () => {
  for (
    const [classCode, reason] of [
      ["060000", "host bridge"],
      ["060100", "ISA/LPC bridge"],
      ["058000", "memory controller"],
      ["0c0500", "SMBus controller"],
    ] as const
  ) {
    assertEquals(
      hostCriticalReason({ address: "0000:00:14.0", vendorId: "10de", classCode }, ASKED),
      reason,
    );
    // Even as a function of the card asked for.
    assertEquals(
      hostCriticalReason({ address: "0000:0b:00.3", vendorId: "10de", classCode }, ASKED),
      reason,
    );
  }
});

Deno.test("hostCriticalReason(): storage, network, display and USB controllers of another slot", () => {
  for (
    const [classCode, what] of [
      ["010802", "storage controller"],
      ["010601", "storage controller"],
      ["020000", "network controller"],
      ["028000", "network controller"],
      ["030000", "display controller"],
      ["030200", "display controller"],
      ["0c0330", "USB controller"],
    ] as const
  ) {
    assertEquals(
      hostCriticalReason({ address: "0000:0c:00.0", vendorId: "10de", classCode }, ASKED),
      `${what} in another slot`,
      classCode,
    );
    // A function of the card asked for is what was asked for.
    assertEquals(
      hostCriticalReason({ address: "0000:0b:00.1", vendorId: "10de", classCode }, ASKED),
      null,
    );
  }
  // Other classes of another slot (audio, a serial bus controller but USB, a signal processor).
  for (const classCode of ["040300", "0c8000", "118000", "0c0010"]) {
    assertEquals(
      hostCriticalReason({ address: "0000:0c:00.0", vendorId: "10de", classCode }, ASKED),
      null,
    );
  }
});

Deno.test("hostCriticalReason(): on bus 00 each function is a device of its own", () => {
  // The chipset's slot 14: USB at .0, SRAM at .2, CNVi Wi-Fi at .3; the Wi-Fi was asked for.
  const wifi = {
    matchedCards: new Set([cardOf({ address: "0000:00:14.3", vendorId: "8086" })]),
    hostUse: [],
  };
  assertEquals(
    hostCriticalReason({ address: "0000:00:14.0", vendorId: "10de", classCode: "0c0330" }, wifi),
    "USB controller in the same root-bus slot, not part of the device asked for",
  );
  assertEquals(
    hostCriticalReason({ address: "0000:00:14.3", vendorId: "10de", classCode: "028000" }, wifi),
    null,
  );
  assertEquals(
    hostCriticalReason({ address: "0000:00:17.0", vendorId: "10de", classCode: "010601" }, wifi),
    "storage controller in another slot",
  );
  // Behind a bridge, a slot's functions of one vendor stay one card.
  assertEquals(cardOf({ address: "0000:0b:00.3", vendorId: "10de" }), "0000:0b:00 10de");
  assertEquals(cardOf({ address: "0000:00:14.3", vendorId: "8086" }), "0000:00:14.3");
});

Deno.test("hostCriticalReason(): behind a bridge another vendor's function in the slot is another device", () => {
  // An AMD APU's slot: the iGPU (1002) was asked for; its HDMI audio is 1002's, the USB
  // controller beside it the CPU's (1022).
  const igpu = {
    matchedCards: new Set([cardOf({ address: "0000:05:00.0", vendorId: "1002" })]),
    hostUse: [],
  };
  assertEquals(
    hostCriticalReason({ address: "0000:05:00.3", vendorId: "1022", classCode: "0c0330" }, igpu),
    "USB controller of another vendor (1022) in the same slot, not part of the device asked for",
  );
  assertEquals(
    hostCriticalReason({ address: "0000:05:00.1", vendorId: "1002", classCode: "040300" }, igpu),
    null,
  );
});

Deno.test("hostCriticalReason(): what the host uses now comes first, on any function", () => {
  const hostUse = [{ address: "0000:0b:00.0", reason: "default-route" as const, detail: "via x" }];
  assertEquals(
    hostCriticalReason({ address: "0000:0b:00.0", vendorId: "10de", classCode: "020000" }, {
      ...ASKED,
      hostUse,
    }),
    "in use by the host (default-route: via x)",
  );
  // Unknown use marks nothing here: planning refuses such a host as a whole.
  assertEquals(
    hostCriticalReason({ address: "0000:0b:00.0", vendorId: "10de", classCode: "020000" }, {
      ...ASKED,
      hostUse: null,
    }),
    null,
  );
});

Deno.test("hostCriticalOnItsOwn(): a listing shows platform functions and the host's use, no slot guesses", () => {
  const at = (address: string, classCode: string, virtfns: string[] = []) =>
    ({ address, classCode, virtfns }) as PciDevice;
  const hostUse = [{
    address: "0000:05:00.0",
    reason: "mounted-filesystem" as const,
    detail: "/ on nvme0n1",
  }, { address: "0000:07:10.0", reason: "default-route" as const, detail: "via enp7s0v0" }];
  // An SR-IOV PF whose VF carries the host's route, as `plan` refuses it.
  assertEquals(
    hostCriticalOnItsOwn(at("0000:07:00.0", "020000", ["0000:07:10.0"]), { hostUse }),
    "its virtual function 0000:07:10.0 is in use by the host (default-route: via enp7s0v0)",
  );
  assertEquals(hostCriticalOnItsOwn(at("0000:0c:00.0", "020000"), { hostUse }), null);
  assertEquals(hostCriticalOnItsOwn(at("0000:00:1f.0", "060100"), { hostUse }), "ISA/LPC bridge");
  assertEquals(
    hostCriticalOnItsOwn(at("0000:05:00.0", "010802"), { hostUse }),
    "in use by the host (mounted-filesystem: / on nvme0n1)",
  );
});
