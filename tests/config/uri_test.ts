import { assertEquals } from "../helpers/assert.ts";
import { isRemoteUri, isSystemQemuUri } from "../../lib/config/uri.ts";

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
