import { assertEquals } from "../helpers/assert.ts";
import { isRemoteUri, isSystemQemuUri, sessionDriver } from "../../lib/config/uri.ts";

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
