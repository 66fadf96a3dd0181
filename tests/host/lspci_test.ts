/**
 * The lspci boundary: the arguments discovery runs it with, the parse of `lspci -nnkD` (lspci's
 * placeholders for unknown names, any case), the vendor-name split, the `pci.ids` lookup, and the
 * time limit on a run (with the real `sleep`).
 */

import { assertEquals, assertMatch, assertRejects } from "../helpers/assert.ts";
import {
  lspciArgs,
  LspciError,
  parseLspci,
  pciIdsVendorNames,
  runLspci,
  splitVendorName,
} from "../../lib/host/lspci.ts";
import { discoverHost } from "../../lib/host/discover.ts";
import { buildHostTree, loadHostDescription } from "../../lib/testing/host_tree.ts";

Deno.test("lspciArgs() points lspci at a captured tree, never at the live /sys however spelled", () => {
  assertEquals(lspciArgs("/sys"), ["-nnkD"]);
  assertEquals(lspciArgs("/sys//"), ["-nnkD"]);
  assertEquals(lspciArgs("/tmp/tree"), ["-O", "sysfs.path=/tmp/tree/bus/pci", "-nnkD"]);
});

Deno.test("lspci reads the tree a relative root names through a symbolic link, as the reader does", async () => {
  const dir = Deno.realPathSync(Deno.makeTempDirSync({ prefix: "passthrough-lspci-cwd-" }));
  const cwd = Deno.cwd();
  try {
    const host = loadHostDescription(new URL("../../demo/host.json", import.meta.url).pathname);
    buildHostTree(host, `${dir}/real/tree`);
    // Another host beside it: the same addresses, other devices.
    const other = structuredClone(host);
    for (const device of other.devices) [device.vendor, device.device] = ["0x8086", "0x1572"];
    buildHostTree(other, `${dir}/tree`);
    Deno.mkdirSync(`${dir}/real/sub`);
    Deno.symlinkSync(`${dir}/real/sub`, `${dir}/link`);
    Deno.chdir(dir);
    // `link/..` is `real/`: the kernel's answer, and the reader's.
    const discovered = await discoverHost({ root: "link/../tree", vendorNames: () => null });
    const bridge = discovered.devices.find((d) => d.address === "0000:00:01.0")!;
    assertEquals(bridge.vendorId, "1022");
    // It named the other tree's device: "... Intel Corporation Ethernet Controller X710".
    assertMatch(bridge.deviceName ?? "", /Starship\/Matisse/);
  } finally {
    Deno.chdir(cwd);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("parseLspci() reads lspci's placeholders as unknown names, IDs in any case, and skips a bad address", () => {
  const text = [
    "0000:05:00.0 Class [FF00]: Device [1AB4:0B1C] (rev A1)",
    "\tKernel driver in use: vfio-pci",
    "\tKernel modules: a , b,",
    "0000:01:20.0 VGA compatible controller [0300]: NVIDIA Corporation GP104 [10de:1b80]",
    "",
  ].join("\n");
  const records = parseLspci(text);
  assertEquals([...records.keys()], ["0000:05:00.0"]);
  const record = records.get("0000:05:00.0")!;
  assertEquals(
    [record.className, record.vendorDeviceName, record.vendorId, record.deviceId],
    [null, null, "1ab4", "0b1c"],
  );
  assertEquals([record.driver, record.modules], ["vfio-pci", ["a", "b"]]);
});

Deno.test("splitVendorName() cuts the vendor's name only at a word's end", () => {
  assertEquals(splitVendorName("Intel Corporation I350", "Intel Corporation"), {
    vendorName: "Intel Corporation",
    deviceName: "I350",
  });
  // "Intel" is not the vendor of "Intelligent ...": the whole text is the device's name.
  assertEquals(splitVendorName("Intelligent Fabric X", "Intel"), {
    vendorName: "Intel",
    deviceName: "Intelligent Fabric X",
  });
  assertEquals(splitVendorName("Intel Device", "Intel"), { vendorName: "Intel", deviceName: null });
});

Deno.test("pciIdsVendorNames() answers vendor lines only, not class or device lines", () => {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-pci-ids-" });
  try {
    Deno.writeTextFileSync(
      `${dir}/pci.ids`,
      "10de  NVIDIA Corporation\n\t1b80  GP104\nC 03  Display controller\n",
    );
    const names = pciIdsVendorNames([`${dir}/missing`, `${dir}/pci.ids`]);
    assertEquals([names("10DE"), names("C 03"), names("1b80")], ["NVIDIA Corporation", null, null]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("runLspci() kills a run past its time limit and says so", async () => {
  const started = Date.now();
  await assertRejects(() => runLspci("sleep", ["30"], 200), (error: unknown) => {
    assertEquals(error instanceof LspciError, true);
    assertMatch(
      (error as Error).message,
      /^"sleep 30" did not finish within 200 ms and was killed/,
    );
    return true;
  });
  // Killed, not waited for.
  assertEquals(Date.now() - started < 20_000, true);
});

Deno.test("runLspci() does not count time this thread was blocked against the run", async () => {
  // Opening libvirt or reading a large tree blocks the thread while lspci runs: lspci then
  // finishes, or waits on a full pipe, and the late timer is no sign that it hangs.
  const block = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  const short = runLspci("true", [], 200);
  block(600);
  assertEquals(await short, "");
  const long = runLspci("seq", ["1", "100000"], 200);
  block(600);
  assertEquals((await long).split("\n").length, 100_001);
});

Deno.test("runLspci() says when a failed run printed nothing, and names the signal that ended one", async () => {
  const message = async (program: string, args: string[]) => {
    let text = "";
    await assertRejects(() => runLspci(program, args, 10_000), (error: unknown) => {
      assertEquals(error instanceof LspciError, true);
      text = (error as Error).message;
      return true;
    });
    return text;
  };
  assertEquals(
    await message("false", []),
    `"false" failed with exit code 1 and printed no message`,
  );
  assertEquals(
    await message("sh", ["-c", "echo broken >&2; exit 2"]),
    `"sh -c echo broken >&2; exit 2" failed with exit code 2: broken`,
  );
  assertEquals(
    await message("sh", ["-c", "kill -SEGV $$"]),
    `"sh -c kill -SEGV $$" was killed by signal SIGSEGV and printed no message`,
  );
});
