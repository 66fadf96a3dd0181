/**
 * `reset` on captured hosts with `reset_method` added: the TRX40's RX 480 (Polaris, needs
 * vendor-reset), the B550's Navi 21 whose HDMI audio sits alone in its group on the same bus (a
 * bus reset would reset the VGA function left to the host), and how `no-flr` gives way to it.
 */

import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { described, domain, planOn, vm, warningCodes, withHost } from "./trees.ts";
import { configJsonSchemaText } from "../../lib/config/schema.ts";

const POLARIS_RULE =
  "vms:\n  win:\n    devices:\n      - name: rx480\n        match: { vendor_device_id: 1002:67df }\n";

Deno.test("reset: a Polaris GPU without vendor-reset loaded says to install and load it", async () => {
  const description = described("trx40-creator", {
    devices: {
      "0000:4c:00.0": { reset_method: "bus" },
      "0000:4c:00.1": { reset_method: "flr bus" },
    },
    host: { proc: { modules: "amdgpu 9031680 0 - Live 0x0\n" } },
  });
  await withHost(description, (built) => {
    const win = vm(planOn(built, POLARIS_RULE, { win: domain("win") }), "win");
    const resets = win.warnings.filter((w) => w.code === "reset");
    assertEquals(resets.map((w) => [w.devices, w.override]), [[
      ["0000:4c:00.0"],
      "allow_no_flr: true",
    ]]);
    assertMatch(resets[0]!.message, /AMD Polaris GPU.*install and load vendor-reset/);
    assertMatch(
      resets[0]!.message,
      /echo device_specific > \/sys\/bus\/pci\/devices\/0000:4c:00\.0\/reset_method/,
    );
  });
});

Deno.test("reset: vendor-reset loaded but not selected, then selected", async () => {
  const loaded = { proc: { modules: "vendor_reset 106496 0 - Live 0x0\n" } };
  await withHost(
    described("trx40-creator", {
      devices: { "0000:4c:00.0": { reset_method: "bus" } },
      host: loaded,
    }),
    (built) => {
      const win = vm(planOn(built, POLARIS_RULE, { win: domain("win") }), "win");
      assertMatch(
        win.warnings.find((w) => w.code === "reset")?.message ?? "",
        /vendor-reset is loaded: echo device_specific/,
      );
    },
  );
  await withHost(
    described("trx40-creator", {
      devices: { "0000:4c:00.0": { reset_method: "device_specific bus" } },
      host: loaded,
    }),
    (built) => {
      const win = vm(planOn(built, POLARIS_RULE, { win: domain("win") }), "win");
      assertEquals(warningCodes(win).includes("reset"), false);
    },
  );
});

const AUDIO_RULE =
  "vms:\n  win:\n    devices:\n      - name: hdmi\n        match: { vendor_device_id: 1002:ab28 }\n";

Deno.test("reset: a bus reset that would also reset a device left to the host", async () => {
  const description = described("b550-aorus-pro", {
    devices: { "0000:08:00.1": { reset_method: "bus" }, "0000:08:00.0": { reset_method: "bus" } },
  });
  await withHost(description, (built) => {
    // The Navi 21's audio function is alone in group 19; its VGA function (group 18) stays.
    const win = vm(planOn(built, AUDIO_RULE, { win: domain("win") }), "win");
    const reset = win.warnings.filter((w) => w.code === "reset");
    assertEquals(reset.map((w) => w.devices), [["0000:08:00.1"]]);
    assertMatch(
      reset[0]!.message,
      /^Device 0000:08:00\.1 \(rule "hdmi"\) can only be reset by a secondary-bus reset, which would also reset 0000:08:00\.0/,
    );
    assertMatch(reset[0]!.message, /: give them to "win" too, or move the card to a slot/);
    // Taking both functions, the bus holds nothing else: no bus warning (the VGA function is
    // judged as a Navi 21 instead).
    const both = vm(
      planOn(
        built,
        `${AUDIO_RULE}      - name: vga\n        match: { vendor_device_id: 1002:73a5 }\n`,
        { win: domain("win") },
      ),
      "win",
    );
    assertEquals(
      both.warnings.filter((w) => w.code === "reset").map((w) => w.devices),
      [["0000:08:00.0"]],
    );
    assertMatch(both.warnings.find((w) => w.code === "reset")!.message, /Navi 21/);
  });
});

Deno.test("reset: a bus shared with the host's console GPU is not to be given to the guest", async () => {
  const description = described("b550-aorus-pro", {
    devices: {
      "0000:08:00.1": { reset_method: "bus" },
      "0000:08:00.0": { reset_method: "bus" },
    },
    host: {
      host_use: [{
        address: "0000:08:00.0",
        reason: "console-vga",
        detail: "boot_vga=1 with fbcon",
      }],
    },
  });
  await withHost(description, (built) => {
    const win = vm(planOn(built, AUDIO_RULE, { win: domain("win") }), "win");
    const reset = win.warnings.find((w) => w.code === "reset")?.message ?? "";
    assertMatch(
      reset,
      /: move the card to a slot of its own \(not all of them can go to "win": 0000:08:00\.0 is the host's, console-vga: boot_vga=1 with fbcon\) \(set "allow_no_flr: true"/,
    );
    assertEquals(reset.includes("too"), false);
  });
});

Deno.test("reset: allow_no_flr silences it; an empty reset_method says nothing", async () => {
  const description = described("b550-aorus-pro", {
    devices: { "0000:08:00.1": { reset_method: "bus", flr: false } },
  });
  await withHost(description, (built) => {
    const allowed = vm(
      planOn(built, `${AUDIO_RULE}        allow_no_flr: true\n`, { win: domain("win") }),
      "win",
    );
    assertEquals(warningCodes(allowed), []);
  });
  // The kernel never writes an empty reset_method (it hides the file instead): unknown, so the
  // config space's FLR bit still speaks.
  const empty = described("b550-aorus-pro", {
    devices: { "0000:08:00.1": { reset_method: "", flr: false } },
  });
  await withHost(empty, (built) => {
    assertEquals(warningCodes(vm(planOn(built, AUDIO_RULE, { win: domain("win") }), "win")), [
      "no-flr",
    ]);
  });
});

Deno.test("reset replaces no-flr where reset_method is known; no-flr stays where it is not", async () => {
  // FLR is absent on both; the audio function has a power-management reset, which is usable.
  const known = described("b550-aorus-pro", {
    devices: { "0000:08:00.1": { flr: false, reset_method: "pm bus" } },
  });
  await withHost(known, (built) => {
    assertEquals(warningCodes(vm(planOn(built, AUDIO_RULE, { win: domain("win") }), "win")), []);
  });
  const unknown = described("b550-aorus-pro", { devices: { "0000:08:00.1": { flr: false } } });
  await withHost(unknown, (built) => {
    assertEquals(warningCodes(vm(planOn(built, AUDIO_RULE, { win: domain("win") }), "win")), [
      "no-flr",
    ]);
  });
});

Deno.test("allow_no_flr is described as silencing both reset warnings, in the TS and the JSON schema", () => {
  const committed = JSON.parse(
    Deno.readTextFileSync(new URL("../../passthrough_config.schema.json", import.meta.url)),
  );
  const generated = JSON.parse(configJsonSchemaText());
  for (const schema of [committed, generated]) {
    const found: string[] = [];
    JSON.stringify(schema, (key, value) => {
      if (key === "allow_no_flr") found.push(value.description);
      return value;
    });
    assertEquals(found.length > 0, true);
    for (const description of found) {
      assertMatch(description, /`no-flr`/);
      assertMatch(description, /`reset`/);
    }
  }
});

const X570_GPU_RULE =
  "vms:\n  win:\n    devices:\n      - name: gtx1070\n        match: { vendor_device_id: 10de:1b06 }\n";

Deno.test("reset: a bus reset warns only when it would reset a device the VM does not take", async () => {
  // The X570's GTX 1070 (0b:00.0) and its HDMI audio (0b:00.1) share group 30 and bus 0b.
  const description = described("x570-aorus-pro-wifi", {
    devices: { "0000:0b:00.0": { reset_method: "bus" }, "0000:0b:00.1": { reset_method: "bus" } },
  });
  await withHost(description, (built) => {
    const win = vm(planOn(built, X570_GPU_RULE, { win: domain("win") }), "win");
    assertEquals(win.warnings.filter((w) => w.code === "reset"), []);
  });
  // The audio function in a group of its own stays on the host: the GPU's bus reset would reset
  // it too, so the plan says so.
  const split = described("x570-aorus-pro-wifi", {
    devices: {
      "0000:0b:00.0": { reset_method: "bus" },
      "0000:0b:00.1": { reset_method: "bus", group: 99 },
    },
  });
  await withHost(split, (built) => {
    const win = vm(planOn(built, X570_GPU_RULE, { win: domain("win") }), "win");
    const reset = win.warnings.filter((w) => w.code === "reset");
    assertEquals(reset.map((w) => w.devices), [["0000:0b:00.0"]]);
    assertMatch(
      reset[0]!.message,
      /^GPU 0000:0b:00\.0 \(rule "gtx1070"\) can only be .* would also reset 0000:0b:00\.1 on the same bus/,
    );
  });
});
