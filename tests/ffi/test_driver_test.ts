/**
 * The binding against the real `libvirt.so.0`, in process, through libvirt's test driver.
 */

import { assertEquals, assertMatch, assertOk, assertThrows } from "../helpers/assert.ts";
import {
  COMPUTER_DEVICE,
  nodeDeviceNamed,
  testDomainXml,
  worldUri,
  writeTempWorld,
} from "../helpers/world.ts";
import {
  ClosedHandleError,
  Connection,
  LibvirtError,
  openLibvirtPort,
  VIR_ERR_NO_DOMAIN,
  VIR_ERR_NO_SUPPORT,
  VIR_ERR_OPERATION_DENIED,
} from "../../ffi/mod.ts";

const WORLD = worldUri("two_vms_gpu");
const WIN11_UUID = "0b7e4a7c-2f0d-4b8e-9c43-5a1d6f3e8b21";

function names(items: { name: string; free(): void }[]): string[] {
  return items.map((item) => {
    const name = item.name;
    item.free();
    return name;
  });
}

Deno.test("Connection.open() opens a world read-write and reports its URI and version", () => {
  using conn = Connection.open(WORLD);
  assertEquals(conn.uri, WORLD);
  assertEquals(conn.readOnly, false);
  assertMatch(conn.libVersion, /^\d+\.\d+\.\d+$/);
  assertEquals(conn.closed, false);
});

Deno.test("Connection.open() with readOnly refuses to define", () => {
  using conn = Connection.open(WORLD, { readOnly: true });
  assertEquals(conn.readOnly, true);
  assertEquals(names(conn.listDomains()), ["gentoo", "win11"]);
  const error = assertThrowsLibvirt(() => conn.defineDomain(testDomainXml("ro-probe")));
  assertEquals(error.code, VIR_ERR_OPERATION_DENIED);
});

Deno.test("Connection.open() without a URI honours LIBVIRT_DEFAULT_URI", () => {
  const previous = Deno.env.get("LIBVIRT_DEFAULT_URI");
  Deno.env.set("LIBVIRT_DEFAULT_URI", WORLD);
  try {
    using conn = Connection.open();
    assertEquals(conn.uri, WORLD);
    using nullConn = Connection.open(null, { readOnly: true });
    assertEquals(nullConn.uri, WORLD);
  } finally {
    if (previous === undefined) Deno.env.delete("LIBVIRT_DEFAULT_URI");
    else Deno.env.set("LIBVIRT_DEFAULT_URI", previous);
  }
});

Deno.test("Connection.listDomains() lists running and shut-off domains sorted by name", () => {
  using conn = Connection.open(WORLD);
  const domains = conn.listDomains();
  try {
    assertEquals(domains.map((d) => d.name), ["gentoo", "win11"]);
    assertEquals(domains.map((d) => d.state()), ["running", "shutoff"]);
    assertEquals(domains.map((d) => d.isActive()), [true, false]);
    // The running guest's ID is the one its live XML carries; a shut-off domain has none.
    assertEquals(domains.map((d) => d.id()), [
      Number(/ id='(\d+)'/.exec(domains[0]!.xml())![1]),
      null,
    ]);
    assertEquals(domains.map((d) => d.isPersistent()), [true, true]);
  } finally {
    for (const d of domains) d.free();
  }
});

Deno.test("Connection.listDomains() returns an empty list for a world without domains", () => {
  using conn = Connection.open(worldUri("empty"));
  assertEquals(conn.listDomains(), []);
});

Deno.test("Connection.lookupDomainByName() finds the domain with its UUID", () => {
  using conn = Connection.open(WORLD);
  using byName = conn.lookupDomainByName("win11");
  assertEquals(byName.uuid, WIN11_UUID);
});

Deno.test("Connection.lookupDomainByName() throws LibvirtError 42 for an unknown name", () => {
  using conn = Connection.open(WORLD);
  const error = assertThrowsLibvirt(() => conn.lookupDomainByName("nope"));
  assertEquals(error.code, VIR_ERR_NO_DOMAIN);
  assertMatch(error.message, /^Cannot look up domain "nope": /);
});

Deno.test("Domain.xml() returns the inactive definition with hostdevs and hides secrets", () => {
  using conn = Connection.open(WORLD);
  using dom = conn.lookupDomainByName("win11");
  const xml = dom.xml({ inactive: true });
  assertMatch(xml, /<name>win11<\/name>/);
  assertEquals(xml.match(/<hostdev mode='subsystem' type='pci'/g)?.length, 2);
  assertMatch(xml, /function='0x1'/);
  assertEquals(xml.includes("s3cret"), false);
  assertMatch(dom.xml({ inactive: true, secure: true }), /passwd='s3cret'/);
  assertMatch(dom.xml(), /<domain type='test'/);
});

Deno.test("Connection.defineDomain() validates, and the definition reads back", () => {
  using conn = Connection.open(WORLD);
  using original = conn.lookupDomainByName("win11");
  const xml = original.xml({ inactive: true, secure: true });
  const edited = xml.replace(
    "</devices>",
    `<hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></source>
    </hostdev>
  </devices>`,
  );
  using redefined = conn.defineDomain(edited);
  assertEquals(redefined.uuid, WIN11_UUID);
  using reread = conn.lookupDomainByName("win11");
  const after = reread.xml({ inactive: true });
  assertEquals(after.match(/<hostdev mode='subsystem' type='pci'/g)?.length, 3);
  assertMatch(after, /bus='0x05'/);
});

Deno.test("Connection.defineDomain() defines a new domain that undefine() removes", () => {
  using conn = Connection.open(WORLD);
  {
    // A defined (never started) domain is shut off; <test:runstate> is only valid in world files.
    using dom = conn.defineDomain(testDomainXml("scratch"));
    assertEquals(dom.name, "scratch");
    assertEquals(dom.state(), "shutoff");
    assertEquals(dom.isPersistent(), true);
    assertEquals(names(conn.listDomains()), ["gentoo", "scratch", "win11"]);
    dom.undefine();
  }
  assertEquals(names(conn.listDomains()), ["gentoo", "win11"]);
  assertEquals(assertThrowsLibvirt(() => conn.lookupDomainByName("scratch")).code, 42);
});

Deno.test("Domain.attachDevice() surfaces the test driver's lack of support as code 3", () => {
  using conn = Connection.open(WORLD);
  using dom = conn.lookupDomainByName("win11");
  const hostdev = `<hostdev mode='subsystem' type='pci' managed='yes'>
    <source><address domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></source>
  </hostdev>`;
  const error = assertThrowsLibvirt(() => dom.attachDevice(hostdev, { live: false, config: true }));
  assertEquals(error.code, VIR_ERR_NO_SUPPORT);
  assertThrows(() => dom.detachDevice(hostdev, { live: false, config: false }), TypeError);
});

Deno.test("Connection.listNodeDevices() lists PCI devices whose XML carries IOMMU groups", () => {
  using conn = Connection.open(WORLD);
  assertEquals(names(conn.listNodeDevices({ cap: "pci" })), [
    "pci_0000_00_01_0",
    "pci_0000_01_00_0",
    "pci_0000_01_00_1",
    "pci_0000_05_00_0",
  ]);
  assertOk(names(conn.listNodeDevices()).includes("computer"));
  using gpu = nodeDeviceNamed(conn, "pci_0000_01_00_0");
  const xml = gpu.xml();
  assertMatch(xml, /<iommuGroup number='1'>/);
  assertMatch(xml, /<vendor id='0x10de'>/);
  assertEquals(xml.match(/<address /g)?.length, 2);
});

Deno.test("Deno.inspect() shows URI, name, UUID and state, and marks closed handles", () => {
  const conn = Connection.open(WORLD);
  const dom = conn.lookupDomainByName("win11");
  const dev = nodeDeviceNamed(conn, "pci_0000_01_00_1");
  assertEquals(
    Deno.inspect(conn),
    `Connection { uri: "${WORLD}", readOnly: false, closed: false }`,
  );
  assertEquals(
    Deno.inspect(dom),
    `Domain { name: "win11", uuid: "${WIN11_UUID}", state: "shutoff" }`,
  );
  assertEquals(Deno.inspect(dev), `NodeDevice { name: "pci_0000_01_00_1" }`);
  dom.free();
  dev.free();
  conn.close();
  assertEquals(Deno.inspect(dom), `Domain { name: "win11", freed: true }`);
  assertEquals(Deno.inspect(dev), `NodeDevice { name: "pci_0000_01_00_1", freed: true }`);
  assertMatch(Deno.inspect(conn), /closed: true/);
});

Deno.test("using disposes domains, node devices and the connection", () => {
  let dom;
  let dev;
  let conn;
  {
    using c = Connection.open(WORLD);
    using d = c.lookupDomainByName("gentoo");
    using n = nodeDeviceNamed(c, "pci_0000_05_00_0");
    conn = c;
    dom = d;
    dev = n;
  }
  assertEquals([conn.closed, dom.freed, dev.freed], [true, true, true]);
  assertEquals(dom.unsafeHandle, null);
  assertThrows(() => dom.xml(), ClosedHandleError);
  assertThrows(() => dev.xml(), ClosedHandleError);
  assertThrows(() => conn.listDomains(), ClosedHandleError);
});

Deno.test("a temporary world keeps its state per connection", async () => {
  await using world = await writeTempWorld(`<node>
  ${testDomainXml("alpha", { running: false })}
  ${COMPUTER_DEVICE}
</node>`);
  {
    using conn = Connection.open(world.uri);
    using _beta = conn.defineDomain(testDomainXml("beta"));
    assertEquals(names(conn.listDomains()), ["alpha", "beta"]);
  }
  using fresh = Connection.open(world.uri);
  assertEquals(names(fresh.listDomains()), ["alpha"]);
});

Deno.test("openLibvirtPort() implements LibvirtPort over the test driver", () => {
  using port = openLibvirtPort(WORLD);
  assertEquals(port.uri, WORLD);
  assertEquals(port.listDomains(), [
    {
      name: "gentoo",
      uuid: "4dea22b3-1d52-d8f3-2516-782e98a23fa0",
      active: true,
      persistent: true,
    },
    { name: "win11", uuid: WIN11_UUID, active: false, persistent: true },
  ]);
  assertEquals(port.isActive("gentoo"), true);
  assertEquals([typeof port.runId!("gentoo"), port.runId!("win11")], ["number", null]);
  const xml = port.getPersistentXml("win11", { secure: true });
  assertMatch(xml, /passwd='s3cret'/);
  assertEquals(port.getPersistentXml("win11").includes("s3cret"), false);
  port.define(
    xml.replace("<memory unit='KiB'>8388608</memory>", "<memory unit='KiB'>4194304</memory>"),
  );
  assertMatch(port.getPersistentXml("win11"), /<memory unit='KiB'>4194304<\/memory>/);
  assertEquals(assertThrowsLibvirt(() => port.isActive("nope")).code, VIR_ERR_NO_DOMAIN);
  port.close();
  port.close();
});

Deno.test("openLibvirtPort() names an argument of the wrong type from plain JavaScript", () => {
  // Each failed with a TypeError about its internals ("uri.includes is not a function").
  const wrong = <T>(value: unknown) => value as T;
  assertThrows(
    () => openLibvirtPort(wrong<string>(42)),
    TypeError,
    "Expected a libvirt URI (a string) or null, got number 42",
  );
  using port = openLibvirtPort(WORLD);
  assertThrows(
    () => port.getPersistentXml(wrong<string>({ name: "win11" })),
    TypeError,
    "Expected a string, got object",
  );
  assertThrows(() => port.isActive(wrong<string>(undefined)), TypeError, "got undefined");
  assertThrows(() => port.define(wrong<string>(null)), TypeError, "Expected a string, got null");
});

function assertThrowsLibvirt(fn: () => unknown): LibvirtError {
  try {
    fn();
  } catch (error) {
    if (error instanceof LibvirtError) return error;
    throw error;
  }
  throw new Error("Expected a LibvirtError, nothing was thrown");
}
