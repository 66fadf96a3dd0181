/**
 * How the binding reports failures: `LibvirtError` with libvirt's code and message for failed
 * calls, `ClosedHandleError` for use after close, `LibvirtLoadError` when libvirt is missing.
 */

import { assert, assertEquals, assertMatch, assertThrows } from "../helpers/assert.ts";
import { nodeDeviceNamed, worldUri } from "../helpers/world.ts";
import {
  ClosedHandleError,
  Connection,
  lastLibvirtError,
  LibvirtError,
  LibvirtLoadError,
  VIR_ERR_NO_DOMAIN,
  VIR_ERR_OK,
  VIR_ERR_SYSTEM_ERROR,
  VIR_ERR_XML_DETAIL,
  VIR_ERR_XML_INVALID_SCHEMA,
} from "../../ffi/mod.ts";
import { openLibvirtLibrary } from "../../ffi/library.ts";

const WORLD = worldUri("two_vms_gpu");

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error("Expected an error, nothing was thrown");
}

function catchLibvirt(fn: () => unknown): LibvirtError {
  const error = catchError(fn);
  assert.ok(error instanceof LibvirtError, `expected LibvirtError, got ${error}`);
  return error;
}

Deno.test("lookupDomainByName() of an unknown domain throws LibvirtError code 42", () => {
  using conn = Connection.open(WORLD);
  const error = catchLibvirt(() => conn.lookupDomainByName("ghost"));
  assertEquals(error.code, VIR_ERR_NO_DOMAIN);
  assertEquals(error.name, "LibvirtError");
  assertEquals(error.operation, "virDomainLookupByName");
  assert.ok(error.domain > 0, "libvirt names the reporting module");
  assertEquals(error.message, `Cannot look up domain "ghost": ${error.libvirtMessage}`);
  assertMatch(error.libvirtMessage, /^Domain not found/);
});

Deno.test("defineDomain() of malformed XML throws LibvirtError code 35", () => {
  using conn = Connection.open(WORLD);
  const error = catchLibvirt(() => conn.defineDomain("<domain type='test'><name>broken</name>"));
  assertEquals(error.code, VIR_ERR_XML_DETAIL);
  assertEquals(error.operation, "virDomainDefineXMLFlags");
  assertMatch(error.message, /^Cannot define domain "broken": /);
});

Deno.test("defineDomain() of schema-invalid XML throws LibvirtError code 92", () => {
  using conn = Connection.open(WORLD);
  const xml = `<domain type='test'>
  <name>invalid</name>
  <memory unit='KiB'>1048576</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <hostdev mode='subsystem' type='pci' managed='yes'><source/><bogus/></hostdev>
  </devices>
</domain>`;
  const error = catchLibvirt(() => conn.defineDomain(xml));
  assertEquals(error.code, VIR_ERR_XML_INVALID_SCHEMA);
  assertMatch(error.message, /^Cannot define domain "invalid": XML document failed to validate/);
  // Nothing was defined.
  assertEquals(catchLibvirt(() => conn.lookupDomainByName("invalid")).code, VIR_ERR_NO_DOMAIN);
});

Deno.test("Connection.open() of a daemon socket that does not exist throws code 38", () => {
  const uri = "qemu:///system?socket=/nonexistent/passthrough-test/libvirt-sock";
  const error = catchLibvirt(() => Connection.open(uri));
  assertEquals(error.code, VIR_ERR_SYSTEM_ERROR);
  assertEquals(error.operation, "virConnectOpen");
  assertMatch(error.message, new RegExp(`^Cannot connect to libvirt at "${escape(uri)}": `));
  assertMatch(error.libvirtMessage, /\/nonexistent\/passthrough-test\/libvirt-sock/);
  const readOnly = catchLibvirt(() => Connection.open(uri, { readOnly: true }));
  assertEquals(readOnly.operation, "virConnectOpenReadOnly");
});

Deno.test("a failed call leaves no error behind for the next check", () => {
  using conn = Connection.open(WORLD);
  catchLibvirt(() => conn.lookupDomainByName("ghost"));
  const error = lastLibvirtError({ operation: "none", context: "Nothing failed" });
  assertEquals(error.code, VIR_ERR_OK);
  assertEquals(error.message, "Nothing failed: unknown libvirt error");
});

Deno.test("using a closed connection throws ClosedHandleError", () => {
  const conn = Connection.open(WORLD);
  conn.close();
  const error = catchError(() => conn.lookupDomainByName("win11"));
  assert.ok(error instanceof ClosedHandleError);
  assertEquals(error.kind, "connection");
  assertEquals(error.operation, "lookupDomainByName");
  assertEquals(
    error.message,
    `Cannot call "lookupDomainByName" on connection "${WORLD}": it was closed`,
  );
  assertThrows(() => conn.libVersion, ClosedHandleError);
  assertThrows(() => conn.listNodeDevices(), ClosedHandleError);
  assertEquals(conn.uri, WORLD, "the URI stays readable for messages");
});

Deno.test("using a freed domain or node device throws ClosedHandleError", () => {
  using conn = Connection.open(WORLD);
  const dom = conn.lookupDomainByName("win11");
  const dev = nodeDeviceNamed(conn, "pci_0000_01_00_0");
  dom.free();
  dev.free();
  const domError = catchError(() => dom.xml({ inactive: true }));
  assert.ok(domError instanceof ClosedHandleError);
  assertEquals(domError.message, `Cannot call "xml" on domain "win11": it was freed`);
  assertEquals(dom.name, "win11");
  for (const call of [() => dom.uuid, () => dom.state(), () => dom.undefine()]) {
    assertThrows(call, ClosedHandleError);
  }
  const devError = catchError(() => dev.xml());
  assert.ok(devError instanceof ClosedHandleError);
  assertEquals(devError.kind, "node device");
  assertEquals(
    devError.message,
    `Cannot call "xml" on node device "pci_0000_01_00_0": it was freed`,
  );
});

Deno.test("close() and free() are idempotent", () => {
  const conn = Connection.open(WORLD);
  const dom = conn.lookupDomainByName("gentoo");
  const dev = nodeDeviceNamed(conn, "pci_0000_05_00_0");
  dom.free();
  dom.free();
  dom[Symbol.dispose]();
  dev.free();
  dev[Symbol.dispose]();
  dev.free();
  conn.close();
  conn.close();
  conn[Symbol.dispose]();
  assertEquals([conn.closed, dom.freed, dev.freed], [true, true, true]);
});

Deno.test("a domain outlives the connection it came from", () => {
  // libvirt reference-counts the connection: closing it while a domain is held is safe.
  const conn = Connection.open(WORLD);
  using dom = conn.lookupDomainByName("win11");
  conn.close();
  assertEquals(dom.state(), "shutoff");
});

Deno.test("strings holding NUL are refused with TypeError before reaching C", () => {
  using conn = Connection.open(WORLD);
  assertThrows(() => conn.lookupDomainByName("win11\0evil"), TypeError);
});

Deno.test("openLibvirtLibrary() of a missing file throws LibvirtLoadError naming libvirt0", () => {
  const error = catchError(() => openLibvirtLibrary("/nonexistent/libvirt.so.0"));
  assert.ok(error instanceof LibvirtLoadError);
  assertEquals(error.path, "/nonexistent/libvirt.so.0");
  assertMatch(error.message, /^Cannot load libvirt from "\/nonexistent\/libvirt.so.0": /);
  assertMatch(error.message, /"libvirt0"/);
  assertEquals(error.message.includes("\n"), false);
});

Deno.test("PASSTHROUGH_LIBVIRT_PATH selects the library, loaded only on first use", async () => {
  const script = `
    import { Connection } from ${JSON.stringify(new URL("../../ffi/mod.ts", import.meta.url).href)};
    console.log("imported");
    try { Connection.open("test:///default"); } catch (e) { console.log(e.name + ": " + e.message); }
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    env: { PASSTHROUGH_LIBVIRT_PATH: "/nonexistent/libvirt.so.0", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  assertEquals(
    stdout,
    'imported\nLibvirtLoadError: Cannot load libvirt from "/nonexistent/libvirt.so.0": ' +
      'install the Debian package "libvirt0" or set PASSTHROUGH_LIBVIRT_PATH\n',
  );
  assertEquals(output.code, 0);
});

Deno.test("libvirt prints nothing to stderr when a call fails", async () => {
  const script = `
    import { Connection } from ${JSON.stringify(new URL("../../ffi/mod.ts", import.meta.url).href)};
    using conn = Connection.open("test:///default");
    try { conn.lookupDomainByName("ghost"); } catch (e) { console.log(e.code); }
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(new TextDecoder().decode(output.stdout), "42\n");
  assertEquals(new TextDecoder().decode(output.stderr), "");
});

Deno.test("opening a test-driver world file that is missing prints nothing to stderr", async () => {
  // libvirt's no-op error callback does not reach libxml2, which libvirt reads the file with: its
  // own "I/O warning : failed to load external entity" went to stderr beside the LibvirtError.
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-missing-world-" });
  const script = `
    import { Connection } from ${JSON.stringify(new URL("../../ffi/mod.ts", import.meta.url).href)};
    try { Connection.open(${JSON.stringify(`test://${dir}/missing.xml`)}); } catch (e) {
      console.log(e.name);
    }
  `;
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", script],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(new TextDecoder().decode(output.stdout), "LibvirtError\n");
    assertEquals(new TextDecoder().decode(output.stderr), "");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

Deno.test("at unload libvirt's error callback is unset, before the isolate frees it", async () => {
  // A test or bench runner frees an isolate's callbacks with the isolate while libvirt stays
  // loaded in the process; after "unload" a failing call reports through libvirt's default
  // handler (stderr) instead of the callback.
  const script = `
    import { libvirt } from ${
    JSON.stringify(new URL("../../ffi/library.ts", import.meta.url).href)
  };
    const open = () => libvirt().virConnectOpen(new TextEncoder().encode("nosuchdriver:///x\\0"));
    console.log(open() === null ? "refused" : "opened");
    globalThis.dispatchEvent(new Event("unload"));
    console.log(open() === null ? "refused" : "opened");
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assertEquals(output.code, 0, stderr);
  assertEquals(new TextDecoder().decode(output.stdout), "refused\nrefused\n");
  assertEquals(stderr.match(/^libvirt: /gm)?.length, 1, stderr);
});
