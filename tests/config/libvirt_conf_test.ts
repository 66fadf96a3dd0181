import { assertEquals } from "../helpers/assert.ts";
import { libvirtConfUri } from "../../lib/config/uri.ts";

Deno.test("libvirt.conf's URIs are read as libvirt's virConf reads them", () => {
  const ssh = "qemu+ssh://root@[fe80::9]/system";
  const cases: [string | null, string, string | null][] = [
    // A `#` or `]` inside a string is the string's.
    [null, `uri_default = "qemu:///system#x" # a comment`, "qemu:///system#x"],
    ["v6", `uri_aliases = [\n  "a=test:///[x]#y",\n  "v6=${ssh}",\n]`, ssh],
    // Three quotes, over lines; single quotes; `;` between statements.
    [null, `uri_default = """${ssh}"""`, ssh],
    ["v6", `x = 1; uri_aliases = [ 'v6=${ssh}' ]`, ssh],
    // The first setting of two; an alias is matched whole.
    [null, `uri_default = "a"\nuri_default = "b"`, "a"],
    ["v", `uri_aliases = [ "v6=${ssh}" ]`, "v"],
    // Numbers signed either way, lists of numbers and of lists: libvirt reads on past them.
    ["v6", `max_a = +1\nuri_aliases = [ "v6=${ssh}" ]`, ssh],
    ["v6", `a = [ 1, -2 ]\nuri_aliases = [ "v6=${ssh}" ]`, ssh],
    ["v6", `a = [ [ "x" ], "y" ]\nuri_aliases = [ "v6=${ssh}" ]`, ssh],
    // A comment ends at a carriage return, as at a line feed.
    ["v6", `# the lab\ruri_aliases = [ "v6=${ssh}" ]`, ssh],
    ["v6", `a = 1 # the lab\ruri_aliases = [ "v6=${ssh}" ]`, ssh],
    // What libvirt refuses (a comment in a list, an unterminated string) is not read on from there.
    ["v6", `uri_aliases = [ # lab\n "v6=${ssh}" ]`, "v6"],
    [null, `uri_default = """${ssh}`, null],
  ];
  for (const [uri, text, expected] of cases) {
    assertEquals(libvirtConfUri(uri, null, text), expected, text);
  }
});

Deno.test("a large libvirt.conf is read without overflowing the stack", () => {
  for (const text of [" ".repeat(10 << 20), "#\n".repeat(5 << 20)]) {
    assertEquals(libvirtConfUri(null, null, text), null);
  }
});
