// The start guard's check on sysfs trees built from captured hosts (with host_use facts), read
// through the real file-system reader: what it refuses, what it lets through, what it reads.

import { assertEquals, assertMatch, assertOk, assertThrows } from "../helpers/assert.ts";
import {
  addNonPciGroupMember,
  loadFixtureHost,
  ROUTE_HEADER,
  tempHostTree,
} from "../helpers/hosts.ts";
import type { HostDescription } from "../../lib/testing/host_tree.ts";
import type { HostUse } from "../../lib/host/types.ts";
import { denoFsReader, type SysfsReader } from "../../lib/host/sysfs.ts";
import { readDeviceAt, readHostUse } from "../../lib/host/sysfs_device.ts";
import { checkDomainStart, formatRefusal, type GuardRefusal } from "../../lib/guard/check.ts";
import { nvmeDiskXml } from "../helpers/devices.ts";
import { sriovNic } from "../helpers/sriov.ts";

/** The Z690 host (subsystem IDs everywhere), its boot NVMe mounted and its NIC routing. */
function z690(): HostDescription {
  const host = loadFixtureHost("z690-asus-adl");
  host.host_use = [
    { address: "0000:05:00.0", reason: "mounted-filesystem", detail: "/ on nvme0n1p2" },
    { address: "0000:0a:00.0", reason: "default-route", detail: "default route via enp10s0" },
  ];
  host.devices.push({
    bdf: "0000:0e:00.0",
    group: 40,
    class: "0x010802",
    vendor: "0x144d",
    device: "0xa80a",
    subsystem_vendor: "0x144d",
    subsystem_device: "0xa801",
    driver: "nvme",
    revision: null,
    serial: "00-11-22-ff-ff-33-44-55",
  });
  return host;
}

function hex(n: string): string {
  return `0x${n}`;
}

function hostdev(address: string, guest?: string): string {
  const [domain, bus, slotFn] = address.split(":");
  const [slot, fn] = slotFn!.split(".");
  const guestAddress = guest === undefined ? "" : `\n      <address type='pci' ${guest}/>`;
  return `<hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='${hex(domain!)}' bus='${hex(bus!)}' slot='${hex(slot!)}' function='${
    hex(fn!)
  }'/></source>${guestAddress}
    </hostdev>`;
}

interface Rec {
  address: string;
  vendor: string;
  device: string;
  sub?: [string, string];
  klass: string;
  serial?: string;
  slot?: string;
  rule: string;
}

function domain(name: string, devices: string[], records: Rec[] = []): string {
  const recs = records.map((r) =>
    `<pt:device address="${r.address}" vendor="${r.vendor}" device="${r.device}"${
      r.sub ? ` subsystem-vendor="${r.sub[0]}" subsystem-device="${r.sub[1]}"` : ""
    } class="${r.klass}"${r.serial ? ` serial="${r.serial}"` : ""}${
      r.slot ? ` slot="${r.slot}"` : ""
    } rule="${r.rule}"/>`
  ).join("\n      ");
  return `<domain type='kvm'>
  <name>${name}</name>
  <metadata>
    <pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">
      ${recs}
    </pt:hostdevs>
  </metadata>
  <devices>
    ${devices.join("\n    ")}
  </devices>
</domain>`;
}

const GPU: Rec = {
  address: "0000:03:00.0",
  vendor: "1002",
  device: "73df",
  sub: ["1002", "0e36"],
  klass: "030000",
  rule: "gpu",
};
const AUDIO: Rec = {
  address: "0000:03:00.1",
  vendor: "1002",
  device: "ab28",
  sub: ["1002", "ab28"],
  klass: "040300",
  rule: "gpu",
};

/** The Z690 host's second NVMe drive (see z690()), recorded without its serial number. */
const NVME: Rec = {
  address: "0000:0e:00.0",
  vendor: "144d",
  device: "a80a",
  sub: ["144d", "a801"],
  klass: "010802",
  rule: "disk",
};

/** A reader that remembers every path it was asked for. */
function recordingReader(): { reader: SysfsReader; paths: string[] } {
  const inner = denoFsReader();
  const paths: string[] = [];
  const reader: SysfsReader = {
    listDir: (p) => (paths.push(p), inner.listDir(p)),
    readText: (p) => (paths.push(p), inner.readText(p)),
    readBytes: (p, n) => (paths.push(p), inner.readBytes(p, n)),
    readLink: (p) => (paths.push(p), inner.readLink(p)),
    openFile: (p) => (paths.push(p), inner.openFile(p)),
  };
  return { reader, paths };
}

async function check(
  xml: string,
  options: { vm?: string; host?: HostDescription } = {},
): Promise<{ refusals: GuardRefusal[]; paths: string[]; root: string }> {
  await using tree = await tempHostTree(options.host ?? z690());
  const { reader, paths } = recordingReader();
  const refusals = checkDomainStart({
    vm: options.vm ?? "win11",
    xml,
    reader,
    root: tree.dir,
    hostUse: (devices) => readHostUse(reader, { root: tree.dir, live: false, devices }),
  });
  return { refusals, paths: paths.map((p) => p.slice(tree.dir.length)), root: tree.dir };
}

function summary(refusals: GuardRefusal[]): [string, string | null][] {
  return refusals.map((r) => [r.kind, r.address]);
}

Deno.test("checkDomainStart() lets a start go on when every recorded identity is in place", async () => {
  const { refusals } = await check(
    domain("win11", [hostdev(GPU.address), hostdev(AUDIO.address)], [GPU, AUDIO]),
  );
  assertEquals(refusals, []);
});

Deno.test("checkDomainStart() refuses a recorded card whose address now holds another card", async () => {
  // After a renumbering, the address recorded for the RX 6600 holds the other GPU.
  const moved = { ...GPU, address: "0000:04:00.0" };
  const { refusals } = await check(domain("win11", [hostdev(moved.address)], [moved]));
  assertEquals(summary(refusals), [["replaced", "0000:04:00.0"]]);
  assertEquals(
    formatRefusal(refusals[0]!),
    'passthrough guard: refusing to start "win11": hostdev 0000:04:00.0 holds 1002:67ff ' +
      "(subsystem 1462:8a91, class 030000, driver vfio-pci) now, not the recorded 1002:73df " +
      '(subsystem 1002:0e36, class 030000) of rule "gpu"; fix: passthrough plan --vm win11',
  );
});

Deno.test("checkDomainStart() tells identical chips apart by subsystem and serial", async () => {
  const otherBoard = { ...GPU, sub: ["1462", "0e36"] as [string, string] };
  assertEquals(
    summary((await check(domain("vm", [hostdev(GPU.address)], [otherBoard]))).refusals),
    [["replaced", GPU.address]],
  );
  // The same IDs in another class: a card switched to its compute mode, or another function.
  const compute = { ...GPU, klass: "030200" };
  assertEquals(
    summary((await check(domain("vm", [hostdev(GPU.address)], [compute]))).refusals),
    [["replaced", GPU.address]],
  );
  const nvme = NVME;
  // No serial recorded (an unprivileged plan reads none): the serial read now does not count.
  assertEquals((await check(domain("vm", [hostdev(nvme.address)], [nvme]))).refusals, []);
  assertEquals(
    (await check(domain("vm", [hostdev(nvme.address)], [{
      ...nvme,
      serial: "00-11-22-ff-ff-33-44-55",
    }]))).refusals,
    [],
  );
  const other = { ...nvme, serial: "00-11-22-ff-ff-33-44-66" };
  assertEquals(
    summary((await check(domain("vm", [hostdev(nvme.address)], [other]))).refusals),
    [["replaced", nvme.address]],
  );
});

Deno.test("checkDomainStart() tells identical cards apart by the recorded slot, read only for it", async () => {
  // Two identical RX 560s without serial numbers, in slots PCIE1 and PCIE2; a new NVMe drive
  // shifted the buses, so the address recorded for PCIE2's card holds PCIE1's now.
  const host = z690();
  for (const device of host.devices) {
    if (device.bdf.startsWith("0000:04:00.")) device.slot = "PCIE1";
  }
  const RX560: Rec = {
    address: "0000:04:00.0",
    vendor: "1002",
    device: "67ff",
    sub: ["1462", "8a91"],
    klass: "030000",
    rule: "gpu2",
  };
  const recorded = { ...RX560, slot: "PCIE2" };
  const refused = await check(domain("beta", [hostdev(RX560.address)], [recorded]), {
    vm: "beta",
    host,
  });
  assertEquals(summary(refused.refusals), [["replaced", RX560.address]]);
  assertEquals(
    formatRefusal(refused.refusals[0]!),
    'passthrough guard: refusing to start "beta": hostdev 0000:04:00.0 holds 1002:67ff ' +
      "(subsystem 1462:8a91, class 030000, slot PCIE1, driver vfio-pci) now, not the recorded " +
      '1002:67ff (subsystem 1462:8a91, class 030000, slot PCIE2) of rule "gpu2"; fix: ' +
      "passthrough plan --vm beta",
  );
  // The slot's names are read for the record that holds one, and only then.
  assertOk(refused.paths.includes("/bus/pci/slots"));
  const inSlot = await check(
    domain("alpha", [hostdev(RX560.address)], [{
      ...RX560,
      slot: "PCIE1",
    }]),
    { host },
  );
  assertEquals(inSlot.refusals, []);
  // A record written before slots were recorded compares none, and reads none.
  const older = await check(domain("beta", [hostdev(RX560.address)], [RX560]), { host });
  assertEquals(older.refusals, []);
  assertEquals(older.paths.filter((p) => p.startsWith("/bus/pci/slots")), []);
  // A slot recorded, and the firmware names none now: not the recorded card either.
  const unnamed = await check(domain("beta", [hostdev(RX560.address)], [recorded]));
  assertEquals(summary(unnamed.refusals), [["replaced", RX560.address]]);
  assertMatch(unnamed.refusals[0]!.reason, /class 030000, in no named slot, driver vfio-pci\) now/);
});

Deno.test("checkDomainStart() refuses an address that holds nothing, recorded or not", async () => {
  const gone = { ...GPU, address: "0000:07:00.0" };
  const { refusals } = await check(
    domain("vm", [hostdev(gone.address), hostdev("0000:42:00.0")], [gone]),
  );
  assertEquals(summary(refusals), [["missing", "0000:07:00.0"], ["missing", "0000:42:00.0"]]);
  assertMatch(refusals[0]!.reason, /holds no device now, not the recorded 1002:73df/);
  assertMatch(refusals[1]!.reason, /holds no device now \(hand-added: nothing recorded\)/);
  // plan says nothing of a hand-added hostdev whose device is gone: it is no fix to offer.
  assertEquals(refusals[1]!.fix, "remove it with virsh edit win11, or bring its device back there");
});

Deno.test("checkDomainStart() tells a recorded device that holds nothing (a card not yet found at an autostart) to start again once it is there", async () => {
  const gone = { ...GPU, address: "0000:07:00.0" };
  const { refusals } = await check(domain("vm", [hostdev(gone.address)], [gone]));
  // plan would remove the hostdev of a card it cannot find: no fix for a card found late.
  assertEquals(
    refusals[0]!.fix,
    "start it again once 0000:07:00.0 is there again (a card found after the VM's autostart, " +
      "such as behind Thunderbolt, or put back); if the card moved or left for good: " +
      "passthrough plan --vm win11",
  );
});

Deno.test("checkDomainStart() refuses a device the host needs, hand-added or recorded", async () => {
  const nvme: Rec = {
    address: "0000:05:00.0",
    vendor: "15b7",
    device: "5011",
    sub: ["15b7", "5011"],
    klass: "010800",
    rule: "disk",
  };
  const { refusals } = await check(
    domain("vm", [hostdev("0000:0a:00.0"), hostdev(nvme.address), hostdev("0000:00:1f.0")], [
      nvme,
    ]),
  );
  assertEquals(summary(refusals), [
    ["host-needs", "0000:00:1f.0"],
    ["host-needs", "0000:05:00.0"],
    ["host-needs", "0000:0a:00.0"],
    // The LPC bridge's group holds its audio and SMBus functions, on their host drivers.
    ["not-viable", "0000:00:1f.0"],
    ["not-viable", "0000:00:1f.0"],
  ]);
  // Each says what would let it start: the recording rule's override, and for a hand-added
  // hostdev nothing.
  const HAND = "; hand-added, so no allow_host_critical lets it start";
  assertMatch(refusals[0]!.reason, new RegExp(`the host needs it: ISA/LPC bridge${HAND}$`));
  assertMatch(
    refusals[1]!.reason,
    /, as the recorded 15b7:5011 .* of rule "disk"; the host needs it: in use by the host \(mounted-filesystem: \/ on nvme0n1p2\); only "allow_host_critical: true" on rule "disk" \(then passthrough apply\) lets it start$/,
  );
  assertMatch(
    refusals[2]!.reason,
    new RegExp(
      "\\(hand-added: nothing recorded\\); the host needs it: in use by the host " +
        `\\(default-route: default route via enp10s0\\)${HAND}$`,
    ),
  );
  // plan refuses it too (host-needed) and says which element to delete, but never removes it: no
  // "or plan", which read as another way to remove it.
  assertEquals(
    refusals[2]!.fix,
    "remove it with virsh edit win11 (passthrough plan --vm win11 says which element, when the " +
      "config names the VM: passthrough never removes a hostdev it did not add)",
  );
});

Deno.test("checkDomainStart() refuses a hostdev whose address holds a PCI bridge", async () => {
  // 00:01.0 is a root port (class 0604, pcieport) on this host.
  const { refusals } = await check(domain("vm", [hostdev("0000:00:01.0")]));
  assertEquals(summary(refusals), [["host-needs", "0000:00:01.0"]]);
  assertMatch(
    refusals[0]!.reason,
    /the host needs it: a PCI bridge, with the devices behind it; hand-added, so no allow_host_critical lets it start$/,
  );
});

Deno.test("checkDomainStart() lets a hand-added storage or network card through when the host does not use it", async () => {
  // The plan's "another slot" rule is about functions dragged along; a hostdev is asked for.
  assertEquals(
    (await check(domain("vm", [hostdev("0000:06:00.0"), hostdev("0000:08:00.0")]))).refusals,
    [],
  );
});

Deno.test("checkDomainStart() reads host addresses in <source> only, and hostdev interfaces too", async () => {
  // The guest-side address libvirt adds (bus 0x05: the mounted NVMe's host address) is ignored.
  const { refusals } = await check(
    domain("vm", [
      hostdev(GPU.address, "domain='0x0000' bus='0x05' slot='0x00' function='0x0'"),
      `<interface type='hostdev' managed='yes'>
      <mac address='52:54:00:6d:90:02'/>
      <source><address type='pci' domain='0x0000' bus='0x0a' slot='0x00' function='0x0'/></source>
      <address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>
    </interface>`,
    ], [GPU]),
  );
  assertEquals(summary(refusals), [["host-needs", "0000:0a:00.0"]]);
  assertEquals(refusals[0]!.element, "interface");
  assertMatch(formatRefusal(refusals[0]!), /: hostdev interface 0000:0a:00\.0 holds 8086:15f3/);
});

Deno.test("checkDomainStart() fails closed on a hostdev interface whose source it cannot read", async () => {
  const { refusals } = await check(
    domain("vm", [
      hostdev(GPU.address),
      `<interface type='hostdev'><mac address='52:54:00:6d:90:02'/></interface>`,
      `<interface type='hostdev'><source><address type='usb' bus='1' device='2'/></source></interface>`,
    ], [GPU]),
  );
  // The USB source is no PCI device; the interface without a source may be one.
  assertEquals(summary(refusals), [["unreadable", null]]);
  // Named, so a user finds it in `virsh dumpxml`: its number among the interfaces, its tag.
  assertEquals(
    refusals[0]!.reason,
    `1 passed-through device(s) in the domain XML name no readable host address: "<interface> #1 <interface type='hostdev'>"`,
  );
  // A long start tag is cut, on one line, quoted.
  const long = await check(
    domain("vm", [`<hostdev mode='subsystem' type='pci' x='${'\n"'.repeat(50)}'/>`], []),
  );
  const reason = long.refusals[0]!.reason;
  assertMatch(
    reason,
    /: "<hostdev> #1 <hostdev mode='subsystem' type='pci' x=' \\" \\" .*\.\.\."$/,
  );
  assertOk(reason.length < 200 && !reason.includes("\n"), reason);
});

Deno.test("checkDomainStart() reads only the addressed functions, their groups' listings and the host-use facts", async () => {
  const { paths } = await check(domain("vm", [hostdev(GPU.address)], [GPU]));
  const outside = paths.filter((p) =>
    !p.startsWith(`/bus/pci/devices/${GPU.address}`) && p !== "/host_use.json"
  );
  // Its group 21 holds it alone: no other function is read.
  assertEquals(outside, ["/kernel/iommu_groups/21/devices"]);
  // Of the SR-IOV files, only whether VFs are enabled (a PF's VFs go with it): the hook's reader
  // knows a missing file from the directory's listing, with no system call.
  assertEquals(paths.filter((p) => p.includes("sriov_") || p.includes("virtfn")), [
    `/bus/pci/devices/${GPU.address}/sriov_numvfs`,
  ]);
});

Deno.test("checkDomainStart() counts the elements it names as unreadable, once each", async () => {
  // One <disk> whose source and backing store are both NVMe with no readable address.
  const disk = `<disk type='nvme' device='disk'><source type='pci'/>
    <backingStore type='nvme'><source type='pci'/></backingStore><target dev='vda'/></disk>`;
  const { refusals } = await check(domain("vm", [hostdev(GPU.address), disk], [GPU]));
  assertEquals(summary(refusals), [["unreadable", null]]);
  assertEquals(
    refusals[0]!.reason,
    `1 passed-through device(s) in the domain XML name no readable host address: "<disk> #1 <disk type='nvme' device='disk'>"`,
  );
});

Deno.test("checkDomainStart() reads a configuration space only to compare a recorded serial", async () => {
  // Reading config resumes a suspended bridge, and a device in D3cold: only a serial needs it.
  const config = (address: string) => `/bus/pci/devices/${address}/config`;
  const plain = await check(domain("vm", [hostdev(GPU.address), hostdev(AUDIO.address)], [GPU]));
  assertEquals(plain.refusals, []);
  assertEquals(plain.paths.filter((p) => p.endsWith("/config")), []);
  const nvme = { ...NVME, serial: "00-11-22-ff-ff-33-44-66" };
  const serial = await check(domain("vm", [hostdev(nvme.address)], [nvme]));
  assertEquals(serial.paths.filter((p) => p.endsWith("/config")), [config(nvme.address)]);
  // Read, and compared: the serial there now differs.
  assertEquals(summary(serial.refusals), [["replaced", nvme.address]]);
  assertMatch(serial.refusals[0]!.reason, /serial 00-11-22-ff-ff-33-44-55/);
});

Deno.test("checkDomainStart() fails closed on XML it cannot read strictly", async () => {
  // Truncated: the strict reader refuses it; the lenient scanner still finds the replaced card
  // and the hostdev without a readable source, and the records cannot be trusted.
  const xml = domain("vm", [hostdev("0000:04:00.0")], [{ ...GPU, address: "0000:04:00.0" }])
    .replace("</devices>", "<hostdev mode='subsystem' type='pci'><source/></hostdev></devices>")
    .slice(0, -12);
  const { refusals } = await check(xml);
  assertEquals(summary(refusals), [["unreadable", null], ["unreadable", null]]);
  assertEquals(refusals.map((r) => r.reason), [
    `1 passed-through device(s) in the domain XML name no readable host address: "<hostdev> #2 <hostdev mode='subsystem' type='pci'>"`,
    "the domain XML holds passthrough records that cannot be read",
  ]);
  // The address it could read is still checked (here: it holds a device, nothing recorded).
  const hostile = `<domain><name>vm</name><devices>${hostdev("0000:42:00.0")}`;
  assertEquals(summary((await check(hostile)).refusals), [
    ["unreadable", null],
    ["missing", "0000:42:00.0"],
  ]);
  // Nothing, something else, or a definition cut before its first hostdev: nothing is known to
  // be safe, so nothing starts (libvirt always hands the whole definition).
  for (const text of ["", "garbage", xml.slice(0, 40), "<domain><name>vm</name></domain><x/>"]) {
    const { refusals: cut } = await check(text);
    assertEquals(summary(cut), [["unreadable", null]], text);
    assertEquals(cut[0]!.reason, "the domain XML is not a whole, well-formed <domain>");
  }
  // A whole definition without a hostdev has nothing to refuse.
  assertEquals((await check("<domain><name>vm</name><devices/></domain>")).refusals, []);
});

Deno.test("checkDomainStart() reads the records leniently: odd spelling read, damage fails closed", async () => {
  const moved = { ...GPU, address: "0000:04:00.0" };
  const xml = domain("vm", [hostdev(moved.address)], [moved]);
  // Another prefix, single quotes, an entity in the namespace, and a fake record in a comment
  // that would say the card is in place: the record is read, the card refused.
  const odd = xml.replaceAll("pt:", "p2:").replace("xmlns:pt=", "xmlns:p2=")
    .replaceAll('"', "'").replace("urn:passthrough", "urn&#x3a;passthrough")
    .replace(
      "</p2:hostdevs>",
      `<!-- <p2:device address='0000:04:00.0' vendor='1002' device='67ff' sub` +
        `system-vendor='1462' subsystem-device='8a91' class='030000' rule='gpu'/> --></p2:hostdevs>`,
    );
  assertEquals(summary((await check(odd)).refusals), [["replaced", "0000:04:00.0"]]);
  // A record that lacks an attribute: refused as unreadable, and the address is still checked.
  const damaged = xml.replace(' vendor="1002"', "");
  const { refusals } = await check(
    damaged.replace(hostdev(moved.address), hostdev("0000:42:00.0")),
  );
  assertEquals(summary(refusals), [["unreadable", null], ["missing", "0000:42:00.0"]]);
  assertEquals(
    refusals[0]!.reason,
    'the domain XML holds passthrough records that cannot be read: a record lacks attribute "vendor"',
  );
  // A hostdev in a comment or CDATA is no device.
  const commented = domain("vm", [
    `<!-- ${hostdev("0000:42:00.0")} -->`,
    `<![CDATA[${hostdev("0000:43:00.0")}]]>`,
  ]);
  assertEquals((await check(commented)).refusals, []);
});

Deno.test("checkDomainStart() survives hostile input and never echoes the XML", async () => {
  const secret = "pt-s3crt-passwd";
  const garbage = new Uint8Array(1 << 20);
  for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 7919) % 256;
  const binary = new TextDecoder().decode(garbage);
  const { refusals: none } = await check(binary);
  assertOk(none.every((r) => r.kind === "unreadable"));
  const leaky = `<domain><name>vm</name><devices>
    <graphics type='vnc' passwd='${secret}'/>
    <hostdev mode='subsystem' type='pci'><source><address bus='${secret}'/></source></hostdev>
    <hostdev mode='subsystem' type='pci'><source><address bus='0x42' slot='0' function='0'/></source></hostdev>
  </devices></domain>`;
  const { refusals } = await check(leaky, { vm: "we\nird" });
  assertEquals(summary(refusals), [["unreadable", null], ["missing", "0000:42:00.0"]]);
  for (const refusal of refusals) {
    const line = formatRefusal(refusal);
    assertOk(!line.includes(secret), line);
    assertOk(!line.includes("\n"), line);
  }
  assertMatch(
    formatRefusal(refusals[1]!),
    /fix: remove it with virsh edit 'we\?ird', or bring its device back there$/,
  );
});

Deno.test("the hook's libc reader (fewCalls) reads a tree as the default one does, errors included", async () => {
  await using tree = await tempHostTree(z690());
  const { libcSysfsReader, LibcFsError } = await import("../../ffi/libc_fs.ts");
  const few = libcSysfsReader({ fewCalls: true });
  const fast = libcSysfsReader();
  const device = `${tree.dir}/bus/pci/devices/${GPU.address}`;
  for (const reader of [few, fast]) {
    assertEquals(reader.readText(`${device}/uevent`), Deno.readTextFileSync(`${device}/uevent`));
    assertEquals(
      reader.readLink(`${device}/iommu_group`),
      Deno.readLinkSync(`${device}/iommu_group`),
    );
    assertEquals(
      reader.listDir(device)?.sort(),
      [...Deno.readDirSync(device)].map((e) => e.name).sort(),
    );
    // Missing, a directory read as a file, a file read as a link: absent, as errno says.
    assertEquals(reader.readText(`${device}/nonexistent`), null);
    assertEquals(reader.readText(device), null);
    assertEquals(reader.readLink(`${device}/uevent`), null);
    // Any other errno is an error (here ENAMETOOLONG), never "absent".
    assertThrows(() => reader.readText(`${device}/${"x".repeat(300)}`), LibcFsError);
    using file = reader.openFile(`${device}/config`);
    assertEquals(file?.readAt(0, 4).length, 4);
  }
  assertEquals(
    readDeviceAt(few, tree.dir, GPU.address),
    readDeviceAt(denoFsReader(), tree.dir, GPU.address),
  );
});

Deno.test("formatRefusal() replaces C1 controls, line separators, bidi overrides and marks too", () => {
  const refusal: GuardRefusal = {
    vm: "vm\u009b2J\u202e\u2028\u200fx\tt",
    kind: "missing",
    address: "0000:0b:00.0",
    element: "hostdev",
    now: null,
    recorded: null,
    hostNeeds: null,
    reason: "hostdev 0000:0b:00.0 holds no device now",
    fix: "passthrough plan --vm x\u0085",
  };
  assertEquals(
    formatRefusal(refusal),
    'passthrough guard: refusing to start "vm?2J???x\\tt": hostdev 0000:0b:00.0 holds no device now; ' +
      "fix: passthrough plan --vm x?",
  );
});

Deno.test("checkDomainStart() checks the PCI controller of an NVMe disk, which libvirt detaches too", async () => {
  const nvme = (bus: string) => nvmeDiskXml(bus, "vde");
  const file = `<disk type='file' device='disk'><source file='/var/lib/libvirt/images/a.qcow2'/>
      <target dev='vda' bus='virtio'/><address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></disk>`;
  // The boot NVMe (mounted: the host needs it), and an address that holds nothing.
  const { refusals } = await check(domain("win11", [file, nvme("05"), nvme("77")]));
  assertEquals(summary(refusals), [["host-needs", "0000:05:00.0"], ["missing", "0000:77:00.0"]]);
  assertMatch(
    refusals[0]!.reason,
    /^NVMe disk 0000:05:00\.0 holds 15b7:5011 .* the host needs it: in use by the host \(mounted-filesystem/,
  );
  // The second NVMe, which the host does not use: it may go.
  assertEquals((await check(domain("win11", [file, nvme("0e")]))).refusals, []);
});

Deno.test("checkDomainStart() checks the NVMe controllers of a disk's backing chain", async () => {
  // A disk-only snapshot of an NVMe disk: the overlay is a file, the NVMe its backing store,
  // which libvirt detaches from the host at start all the same.
  const snapshot = (bus: string) =>
    `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/win11.snap'/>
      <backingStore type='nvme' index='1'><format type='raw'/>
        <source type='pci' managed='yes' namespace='1'>
          <address domain='0x0000' bus='0x${bus}' slot='0x00' function='0x0'/>
        </source><backingStore/></backingStore>
      <target dev='vda' bus='virtio'/></disk>`;
  const { refusals } = await check(domain("win11", [snapshot("05")]));
  assertEquals(summary(refusals), [["host-needs", "0000:05:00.0"]]);
  assertMatch(refusals[0]!.reason, /^NVMe disk 0000:05:00\.0 holds 15b7:5011 .* the host needs it/);
  assertEquals((await check(domain("win11", [snapshot("0e")]))).refusals, []);
});

Deno.test("checkDomainStart() calls a GPU held open busy, whichever of its uses comes first", async () => {
  await using tree = await tempHostTree(z690());
  const uses: HostUse[] = [
    { address: GPU.address, reason: "console-vga", detail: "boot_vga=1 with fbcon" },
    { address: GPU.address, reason: "gpu-in-use", detail: "/dev/dri/card1 open in Xorg (pid 812)" },
  ];
  for (const hostUse of [uses, [...uses].reverse()]) {
    const refusals = checkDomainStart({
      vm: "win11",
      xml: domain("win11", [hostdev(GPU.address)], [GPU]),
      reader: denoFsReader(),
      root: tree.dir,
      hostUse: () => hostUse,
    });
    assertEquals(summary(refusals), [["busy", GPU.address]]);
  }
});

/** The Z690 host with `moves` put in the GPU's IOMMU group 21 (an ACS or BIOS change). */
function mergedInto21(moves: Record<string, { driver?: string | null }>): HostDescription {
  const host = z690();
  for (const d of host.devices) {
    const move = moves[d.bdf];
    if (move === undefined) continue;
    d.group = 21;
    if (move.driver !== undefined) d.driver = move.driver;
  }
  return host;
}

Deno.test("checkDomainStart() refuses a group merged with a function the host needs, on its driver or not", async () => {
  const xml = domain("win11", [hostdev(GPU.address), hostdev(AUDIO.address)], [GPU, AUDIO]);
  // The default route's NIC, on igc: the start fails ("not viable") and unbinding it would cut
  // the host off; an unbound NVMe drive, which VFIO would hand the guest along.
  const host = mergedInto21({ "0000:0a:00.0": {}, "0000:06:00.0": { driver: null } });
  const { refusals } = await check(xml, { host });
  assertEquals(summary(refusals), [["host-needs", GPU.address], ["not-viable", GPU.address]]);
  assertEquals(refusals.map((r) => r.group), [
    { number: 21, member: "0000:06:00.0", driver: null },
    { number: 21, member: "0000:0a:00.0", driver: "igc" },
  ]);
  assertEquals(
    refusals.map((r) => formatRefusal(r)),
    [
      'passthrough guard: refusing to start "win11": hostdev 0000:03:00.0\'s IOMMU group 21 also ' +
      "holds 0000:06:00.0, 144d:a808 (subsystem 144d:a801, class 010800, driver none), which " +
      '"win11" does not pass; the host needs it: storage controller in another slot: VFIO hands ' +
      'the guest the whole group; only "allow_host_critical: true" on rule "gpu" (then ' +
      "passthrough apply) lets it start; fix: passthrough plan --vm win11 (it judges the group " +
      "as it is now), then passthrough apply --vm win11",
      'passthrough guard: refusing to start "win11": hostdev 0000:03:00.0\'s IOMMU group 21 also ' +
      "holds 0000:0a:00.0, 8086:15f3 (subsystem 1043:87d2, class 020000, driver igc), which " +
      '"win11" does not pass; the host needs it: in use by the host (default-route: default ' +
      'route via enp10s0): libvirt detaches only the devices "win11" names, so its start fails ' +
      '("group 21 is not viable") until it is unbound or on vfio-pci, which takes from the host ' +
      "what it needs; fix: passthrough plan --vm win11 (it judges the group as it is now), then " +
      "passthrough apply --vm win11",
    ],
  );
  assertEquals(
    refusals[1]!.hostNeeds,
    "its IOMMU group 21 also holds 0000:0a:00.0: in use by the host (default-route: default route via enp10s0)",
  );
  // Hand-added: no rule recorded it, so none's allow_host_critical lifts it.
  const hand = await check(domain("win11", [hostdev(GPU.address), hostdev(AUDIO.address)]), {
    host,
  });
  assertMatch(
    hand.refusals[0]!.reason,
    /the whole group; hand-added, so no allow_host_critical lets it start$/,
  );
});

Deno.test("checkDomainStart() names a group mate on vfio-pci as bound for a VM only where the tree says what the host uses", async () => {
  const xml = domain("win11", [hostdev(GPU.address), hostdev(AUDIO.address)], [GPU, AUDIO]);
  const host = mergedInto21({ "0000:0e:00.0": { driver: "vfio-pci" } });
  // A tree captured without host_use.json: what the host uses of the drive is unknown.
  await using tree = await tempHostTree(host);
  await Deno.remove(`${tree.dir}/host_use.json`);
  const reader = denoFsReader();
  const refusals = checkDomainStart({
    vm: "win11",
    xml,
    reader,
    root: tree.dir,
    hostUse: (devices) => readHostUse(reader, { root: tree.dir, live: false, devices }),
  });
  assertEquals(summary(refusals), [["host-needs", GPU.address]]);
  assertEquals(refusals[0]!.group, { number: 21, member: "0000:0e:00.0", driver: "vfio-pci" });
  assertMatch(
    refusals[0]!.reason,
    /does not pass; the host needs it: storage controller in another slot: VFIO hands the guest the whole group; only "allow_host_critical: true" on rule "gpu"/,
  );
});

Deno.test("checkDomainStart() on the live host reads what the host uses among its groups' other functions", async () => {
  // The NIC at 0a:00.0, which carries the default route, merged into the GPU's group 21: on the
  // live host, routes are read for the devices asked about alone.
  await using tree = await tempHostTree(mergedInto21({ "0000:0a:00.0": {} }));
  const nic = Deno.realPathSync(`${tree.dir}/bus/pci/devices/0000:0a:00.0`);
  Deno.mkdirSync(`${tree.dir}/class/net`, { recursive: true });
  Deno.symlinkSync(
    `../..${nic.slice(Deno.realPathSync(tree.dir).length)}/net/enp10s0`,
    `${tree.dir}/class/net/enp10s0`,
  );
  Deno.mkdirSync(`${tree.dir}/proc/net`, { recursive: true });
  Deno.mkdirSync(`${tree.dir}/proc/self`, { recursive: true });
  Deno.writeTextFileSync(`${tree.dir}/proc/self/mountinfo`, "");
  Deno.writeTextFileSync(
    `${tree.dir}/proc/net/route`,
    ROUTE_HEADER + "enp10s0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
  );
  Deno.writeTextFileSync(`${tree.dir}/proc/net/ipv6_route`, "");
  const reader = denoFsReader();
  const refusals = checkDomainStart({
    vm: "win11",
    xml: domain("win11", [hostdev(GPU.address), hostdev(AUDIO.address)], [GPU, AUDIO]),
    reader,
    root: tree.dir,
    hostUse: (devices) =>
      readHostUse(reader, { root: tree.dir, live: true, devices, procRoot: `${tree.dir}/proc` }),
  });
  assertEquals(refusals.map((r) => [r.kind, r.group?.member, r.hostNeeds]), [[
    "not-viable",
    "0000:0a:00.0",
    "its IOMMU group 21 also holds 0000:0a:00.0: in use by the host (default-route: default " +
    "route via enp10s0)",
  ]]);
});

Deno.test("checkDomainStart() refuses a group member left on a host driver, and no bridge or unbound bystander", async () => {
  // The chipset's audio, on snd_hda_intel: a function the host does not need, still bound.
  const host = mergedInto21({
    "0000:00:1f.3": {},
    "0000:02:00.0": {}, // the GPU's own upstream bridge: bridges stay with the host
    "0000:00:14.2": {}, // no driver, and nothing the host needs
  });
  const { refusals } = await check(
    domain("win11", [hostdev(GPU.address), hostdev(AUDIO.address)], [GPU, AUDIO]),
    { host },
  );
  assertEquals(summary(refusals), [["not-viable", GPU.address]]);
  assertEquals(refusals[0]!.hostNeeds, null);
  assertMatch(
    refusals[0]!.reason,
    /also holds 0000:00:1f\.3, 8086:7ad0 \(.*driver snd_hda_intel\), which "win11" does not pass: libvirt detaches only the devices "win11" names, so its start fails \("group 21 is not viable"\) until it is unbound or on vfio-pci$/,
  );
  // A hand-added hostdev: nothing is recorded for plan to judge again.
  const hand = await check(domain("win11", [hostdev(GPU.address), hostdev(AUDIO.address)]), {
    host,
  });
  assertEquals(
    hand.refusals[0]!.fix,
    "remove the hostdev with virsh edit win11, or give 0000:03:00.0 an IOMMU group of its own " +
      "again (the firmware's ACS or the kernel command line)",
  );
});

Deno.test("checkDomainStart() fails closed on a passed device's group whose listing cannot be read", async () => {
  await using tree = await tempHostTree(z690());
  Deno.removeSync(`${tree.dir}/kernel/iommu_groups/21`, { recursive: true });
  Deno.mkdirSync(`${tree.dir}/kernel/iommu_groups/21`);
  const refusals = checkDomainStart({
    vm: "win11",
    xml: domain("win11", [hostdev(GPU.address)], [GPU]),
    reader: denoFsReader(),
    root: tree.dir,
    hostUse: () => [],
  });
  assertEquals(summary(refusals), [["unreadable", null]]);
  assertMatch(refusals[0]!.reason, /members of IOMMU group 21 of 0000:03:00\.0 cannot be read/);
});

Deno.test("checkDomainStart() fails closed on a group member listed but not in bus/pci/devices, and passes one hot-removed meanwhile", async () => {
  // Group 21 merged with the default route's NIC, on igc: a start that fails ("not viable").
  await using tree = await tempHostTree(mergedInto21({ "0000:0a:00.0": {} }));
  const nic = `${tree.dir}/bus/pci/devices/0000:0a:00.0`;
  const listed = `${tree.dir}/kernel/iommu_groups/21/devices/0000:0a:00.0`;
  const start = (reader: SysfsReader) =>
    checkDomainStart({
      vm: "win11",
      xml: domain("win11", [hostdev(GPU.address)], [GPU]),
      reader,
      root: tree.dir,
      hostUse: () => [],
    });
  assertEquals(summary(start(denoFsReader())), [["not-viable", GPU.address]]);
  Deno.renameSync(nic, `${tree.dir}/nic-aside`);
  // Before: skipped, and the start went on.
  const refusals = start(denoFsReader());
  assertEquals(summary(refusals), [["unreadable", null]]);
  assertEquals(
    formatRefusal(refusals[0]!),
    'passthrough guard: refusing to start "win11": 0000:03:00.0\'s IOMMU group 21 lists ' +
      '"0000:0a:00.0", which cannot be read in bus/pci/devices, so what else VFIO would hand ' +
      "the guest is unknown; fix: passthrough plan --vm win11",
  );
  // Removed from the listing as well while its entry was read: gone, nothing to judge.
  const base = denoFsReader();
  const racing: SysfsReader = {
    ...base,
    readText: (path) => {
      if (path.startsWith(`${nic}/`)) Deno.removeSync(listed);
      return base.readText(path);
    },
  };
  assertEquals(start(racing), []);
});

Deno.test("checkDomainStart() judges a non-PCI member of a group by its driver", async () => {
  await using tree = await tempHostTree(z690());
  const start = () =>
    checkDomainStart({
      vm: "win11",
      xml: domain("win11", [hostdev(GPU.address), hostdev(AUDIO.address)], [GPU, AUDIO]),
      reader: denoFsReader(),
      root: tree.dir,
      hostUse: () => [],
    });
  // Unbound: VFIO takes the group's ownership past it, and hands the guest no such device.
  addNonPciGroupMember(tree.dir, 21, "AMDI0020:00", "platform", null);
  assertEquals(start(), []);
  // On a host driver: the group is not viable, and libvirt fails the start.
  addNonPciGroupMember(tree.dir, 21, "INT33C2:00", "acpi", "i2c_designware");
  const refusals = start();
  assertEquals(summary(refusals), [["not-viable", GPU.address]]);
  assertMatch(
    refusals[0]!.reason,
    /^hostdev 0000:03:00\.0's IOMMU group 21 also holds INT33C2:00 \(bus acpi, driver i2c_designware\), no PCI device: .*\("group 21 is not viable"\)/,
  );
});

Deno.test("checkDomainStart() refuses a group whose listing cannot be read once, however many of its functions the domain passes", async () => {
  await using tree = await tempHostTree(mergedInto21({ [AUDIO.address]: {} }));
  Deno.removeSync(`${tree.dir}/kernel/iommu_groups/21`, { recursive: true });
  Deno.mkdirSync(`${tree.dir}/kernel/iommu_groups/21`);
  const refusals = checkDomainStart({
    vm: "win11",
    xml: domain("win11", [hostdev(GPU.address), hostdev(AUDIO.address)], [GPU, AUDIO]),
    reader: denoFsReader(),
    root: tree.dir,
    hostUse: () => [],
  });
  assertEquals(summary(refusals), [["unreadable", null]]);
  assertMatch(refusals[0]!.reason, /members of IOMMU group 21 of 0000:03:00\.0 cannot be read/);
});

Deno.test("checkDomainStart() fails closed on a passed device whose iommu_group link names no group", async () => {
  // Its group 21 merged with the default route's NIC, which the link no longer lets be found.
  await using tree = await tempHostTree(mergedInto21({ "0000:0a:00.0": {} }));
  const link = `${tree.dir}/bus/pci/devices/${GPU.address}/iommu_group`;
  const target = Deno.readLinkSync(link);
  Deno.removeSync(link);
  Deno.symlinkSync(target.replace(/21$/, "twenty-one"), link);
  const refusals = checkDomainStart({
    vm: "win11",
    xml: domain("win11", [hostdev(GPU.address)], [GPU]),
    reader: denoFsReader(),
    root: tree.dir,
    hostUse: () => [],
  });
  assertEquals(summary(refusals), [["unreadable", null]]);
  assertMatch(
    refusals[0]!.reason,
    /0000:03:00\.0's iommu_group link names "twenty-one", not an IOMMU group number/,
  );
});
Deno.test("checkDomainStart() fails closed on a passed device whose iommu_group link loops, naming the loop", async () => {
  await using tree = await tempHostTree(mergedInto21({ "0000:0a:00.0": {} }));
  const link = `${tree.dir}/bus/pci/devices/${GPU.address}/iommu_group`;
  Deno.removeSync(link);
  Deno.symlinkSync("iommu_group", link);
  const refusals = checkDomainStart({
    vm: "win11",
    xml: domain("win11", [hostdev(GPU.address)], [GPU]),
    reader: denoFsReader(),
    root: tree.dir,
    hostUse: () => [],
  });
  assertEquals(summary(refusals), [["unreadable", null]]);
  assertMatch(
    refusals[0]!.reason,
    /0000:03:00\.0's iommu_group is a loop of symbolic links, not a link to an IOMMU group/,
  );
});
Deno.test("checkDomainStart() fails closed on a passed device whose iommu_group is a directory, a file or a FIFO", async () => {
  for (
    const [kind, make] of [
      ["a directory", (path: string) => Deno.mkdirSync(path)],
      ["a file", (path: string) => Deno.writeTextFileSync(path, "21\n")],
      [
        "a special file or an unreadable one",
        (path: string) => void new Deno.Command("mkfifo", { args: [path] }).outputSync(),
      ],
    ] as const
  ) {
    await using tree = await tempHostTree(mergedInto21({ "0000:0a:00.0": {} }));
    const link = `${tree.dir}/bus/pci/devices/${GPU.address}/iommu_group`;
    Deno.removeSync(link);
    make(link);
    // Before: read as no group, and the merged group's NIC on igc went unjudged.
    const refusals = checkDomainStart({
      vm: "win11",
      xml: domain("win11", [hostdev(GPU.address)], [GPU]),
      reader: denoFsReader({ listings: tree.dir }),
      root: tree.dir,
      hostUse: () => [],
    });
    assertEquals(summary(refusals), [["unreadable", null]]);
    assertEquals(
      refusals[0]!.reason,
      `0000:03:00.0's iommu_group is ${kind}, not a link to an IOMMU group: the tree is damaged, ` +
        "so what else VFIO would hand the guest is unknown",
    );
  }
});

Deno.test("checkDomainStart() refuses a card that differs from its record in subsystem device or vendor ID alone", async () => {
  // Two models one maker builds on one chip (a TUF and a Strix RX 6600) share the vendor, device
  // and subsystem vendor IDs: only the subsystem device ID says which card sits there now.
  const otherModel = { ...GPU, sub: ["1002", "0e37"] as [string, string] };
  assertEquals(
    summary((await check(domain("vm", [hostdev(GPU.address)], [otherModel]))).refusals),
    [["replaced", GPU.address]],
  );
  // Device IDs are the vendor's own: the same one under another vendor ID is another chip.
  const otherVendor = { ...GPU, vendor: "1022" };
  assertEquals(
    summary((await check(domain("vm", [hostdev(GPU.address)], [otherVendor]))).refusals),
    [["replaced", GPU.address]],
  );
});

Deno.test("checkDomainStart() names the VF another running VM holds before one the host uses, whichever comes first", async () => {
  // The PF's VF 0 carries the host's default route, VF 1 is in a running guest: that guest's is
  // the refusal no override lifts, so the reason names it, as the fix does.
  await using tree = await tempHostTree({ devices: sriovNic("07", 2) });
  const pf: Rec = {
    address: "0000:07:00.0",
    vendor: "8086",
    device: "10c9",
    sub: ["8086", "a03c"],
    klass: "020000",
    rule: "nic",
  };
  const uses: HostUse[] = [
    { address: "0000:07:10.0", reason: "default-route", detail: "default route via eth9" },
    { address: "0000:07:10.2", reason: "vm-passed", detail: 'hostdev of running VM "router"' },
  ];
  for (const hostUse of [uses, [...uses].reverse()]) {
    const refusals = checkDomainStart({
      vm: "desktop",
      xml: domain("desktop", [hostdev(pf.address)], [pf]),
      reader: denoFsReader(),
      root: tree.dir,
      hostUse: () => hostUse,
    });
    assertEquals(summary(refusals), [["busy", pf.address]]);
    assertMatch(
      refusals[0]!.reason,
      /; its virtual function 0000:07:10\.2 is in use \(vm-passed: hostdev of running VM "router"\): unbinding it now would take that VF from the running guest$/,
    );
  }
});

Deno.test("checkDomainStart() names the first few unreadable elements and counts the rest", async () => {
  // Thousands of them made one line of hundreds of kilobytes, which virsh start prints whole.
  const unread = `<hostdev mode='subsystem' type='pci'><source/></hostdev>`;
  const { refusals } = await check(domain("vm", Array(3000).fill(unread), []));
  assertEquals(summary(refusals), [["unreadable", null]]);
  const named = [1, 2, 3, 4, 5].map((n) =>
    `"<hostdev> #${n} <hostdev mode='subsystem' type='pci'>"`
  );
  assertEquals(
    refusals[0]!.reason,
    `3000 passed-through device(s) in the domain XML name no readable host address: ${
      named.join(", ")
    } and 2995 more`,
  );
  // Up to the cap, each is named.
  const few = await check(domain("vm", Array(5).fill(unread), []));
  assertEquals(
    few.refusals[0]!.reason,
    `5 passed-through device(s) in the domain XML name no readable host address: ${
      named.join(", ")
    }`,
  );
});
