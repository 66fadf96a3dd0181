import { assertEquals } from "../helpers/assert.ts";
import { isRemoteUri, isSystemQemuUri, sessionDriver } from "../../lib/config/uri.ts";
import { lockUri } from "../../lib/state/lock.ts";
import { libvirtdUnavailable, startLibvirtd, undefineUnlessIsolated } from "../helpers/libvirtd.ts";
import { qemuDomainXml } from "../helpers/reliability.ts";
import { Connection } from "../../ffi/mod.ts";

const unavailable = libvirtdUnavailable();

Deno.test("a transport with no host reaches this host's system daemon, whose starts run the hook", () => {
  // libvirt connects a tcp, tls or ssh transport without a host to localhost.
  for (const transport of ["tcp", "tls", "ssh", "libssh", "libssh2"]) {
    const uri = `qemu+${transport}:///system`;
    assertEquals(isRemoteUri(uri), false, uri);
    assertEquals(isSystemQemuUri(uri), true, uri);
  }
  assertEquals(isSystemQemuUri("qemu+tcp:///session"), false);
  assertEquals(isSystemQemuUri("qemu+tls://hv1/system"), false);
});

Deno.test("a session reached by any local transport or socket is this user's own libvirt", () => {
  for (
    const uri of [
      "qemu:///session",
      "QEMU+unix:///session/",
      "qemu+ssh:///session",
      "qemu+tcp:///session",
      "qemu:///session?socket=/run/user/1000/libvirt/virtqemud-sock",
    ]
  ) assertEquals(sessionDriver(uri), "qemu", uri);
  for (const uri of ["qemu:///system", "qemu+ssh://hv1/session", "test:///default", "session"]) {
    assertEquals(sessionDriver(uri), null, uri);
  }
});

Deno.test("isSystemQemuUri() counts a socket= only when it is one the system daemon listens on", () => {
  // Its hooks directory, definitions and state are this host's only on its own sockets.
  for (
    const uri of [
      "qemu:///system?socket=/run/libvirt/libvirt-sock",
      "qemu+unix:///system?socket=/var/run/libvirt/virtqemud-sock-ro",
      "qemu:///system?socket=/run//libvirt/./virtqemud-sock",
      "qemu:///system?socket=%2Frun%2Flibvirt%2Flibvirt-sock-ro",
      "qemu:///system?socket=/tmp/s&SOCKET=/run/libvirt/libvirt-sock",
    ]
  ) assertEquals(isSystemQemuUri(uri), true, uri);
  for (
    const uri of [
      "qemu:///system?socket=/tmp/passthrough-libvirtd-1/libvirt-sock",
      "qemu+unix:///system?socket=/run/libvirt/libvirt-admin-sock",
      "qemu:///system?socket=/run/libvirt/x/../../private/libvirt-sock",
      "qemu:///system?socket=run/libvirt/libvirt-sock",
      "qemu:///system?Socket=/run/libvirt/libvirt-sock&socket=/srv/ct/libvirt-sock",
    ]
  ) assertEquals(isSystemQemuUri(uri), false, uri);
});

Deno.test({
  name:
    "isSystemQemuUri() reads socket= after a ; as libvirt does, which reaches that private daemon" +
    (unavailable === null ? "" : ` (skipped: ${unavailable})`),
  ignore: unavailable !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    const socket = `${daemon.dir}/libvirt-sock`;
    const name = `pt-semicolon-${crypto.randomUUID().slice(0, 8)}`;
    {
      using conn = Connection.open(daemon.uri);
      using _dom = conn.defineDomain(qemuDomainXml(name));
    }
    try {
      // libvirt splits the query at `&`, or at `;` where no `&` follows (viruri.c).
      for (
        const uri of [
          `qemu:///system?no_tty=1;socket=${socket}`,
          `qemu:///system?socket=/run/libvirt/libvirt-sock&no_tty=1;socket=${socket}`,
        ]
      ) {
        // The private daemon's VM is found there: libvirt took the socket after the `;`.
        using conn = Connection.open(uri);
        using _dom = conn.lookupDomainByName(name);
        assertEquals(isSystemQemuUri(uri), false, uri);
      }
      // With an `&` after it, a `;` is part of the value: the socket is "/run/...-sock;x=1".
      assertEquals(
        isSystemQemuUri("qemu:///system?socket=/run/libvirt/libvirt-sock;x=1&y=2"),
        false,
      );
      assertEquals(
        isSystemQemuUri(`qemu:///system?socket=${socket};socket=/run/libvirt/libvirt-sock&y=2`),
        false,
      );
    } finally {
      await undefineUnlessIsolated(daemon, [name]);
    }
  },
});

Deno.test({
  name: "isSystemQemuUri() is false for a name= the daemon opens in the system driver's place" +
    (unavailable === null ? "" : ` (skipped: ${unavailable})`),
  ignore: unavailable !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    // The daemon opens `name` for the client: the test driver's world, not its QEMU VMs.
    {
      using conn = Connection.open(`${daemon.uri}&name=test:///default`);
      assertEquals(conn.listDomains().map((domain) => domain.name), ["test"]);
    }
    for (
      const uri of [
        "qemu:///system?name=test:///default",
        "qemu:///system?socket=/run/libvirt/libvirt-sock&NAME=qemu:///session",
        "qemu:///system?name=qemu:///system&name=qemu:///embed?root=/tmp/e",
      ]
    ) assertEquals(isSystemQemuUri(uri), false, uri);
    for (
      const uri of [
        "qemu:///system?name=qemu:///system",
        "qemu+unix:///system?name=qemu%3A%2F%2F%2Fsystem%2F",
      ]
    ) assertEquals(isSystemQemuUri(uri), true, uri);
  },
});

Deno.test({
  name:
    "a percent-escaped path (qemu:///%73ystem) is the system QEMU driver libvirt opens, and its lock" +
    (unavailable === null ? "" : ` (skipped: ${unavailable})`),
  ignore: unavailable !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    const socket = `socket=${daemon.dir}/libvirt-sock`;
    const name = `pt-escaped-${crypto.randomUUID().slice(0, 8)}`;
    {
      using conn = Connection.open(daemon.uri);
      using _dom = conn.defineDomain(qemuDomainXml(name));
    }
    try {
      // libvirt unescapes the path: the daemon's QEMU driver, its VM there.
      using conn = Connection.open(`qemu:///%73ystem?${socket}`);
      using _dom = conn.lookupDomainByName(name);
    } finally {
      await undefineUnlessIsolated(daemon, [name]);
    }
    assertEquals(lockUri(`qemu:///%73ystem?${socket}`), lockUri(`qemu:///system?${socket}`));
    // Two applies on the system daemon, one of each spelling, must exclude each other.
    assertEquals(lockUri("qemu:///%73yst%65m"), "qemu:///system");
    assertEquals(isSystemQemuUri("qemu:///%73ystem"), true);
    assertEquals(isSystemQemuUri("qemu+unix:///syst%65m/"), true);
    assertEquals(isSystemQemuUri("qemu:///s%2fystem"), false);
  },
});
