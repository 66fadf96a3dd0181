/**
 * `redactSecrets()`: the one redaction every output passes through. A password written into a
 * URI's user information is cut whole, up to the `@` before the host, whatever it holds.
 */

import { assertCpuWithin, assertEquals } from "../helpers/assert.ts";
import { redactSecrets } from "../../lib/domain/secrets.ts";

Deno.test("a URI's password is redacted whole, up to the last @ before the host", () => {
  const cases: [string, string][] = [
    ["qemu+tcp://admin:s3cret@hv9/system", "qemu+tcp://admin:***@hv9/system"],
    // Unencoded `@` and `:` are not valid there, but an operator may still type them.
    ["qemu+tcp://admin:p@ss@hv9/system", "qemu+tcp://admin:***@hv9/system"],
    ["qemu+tcp://admin:p@ss@hv9", "qemu+tcp://admin:***@hv9"],
    ["qemu+tcp://admin:pa:ss@hv9:16509/system", "qemu+tcp://admin:***@hv9:16509/system"],
    ["qemu+tcp://admin:s%40x@hv9/system", "qemu+tcp://admin:***@hv9/system"],
    // Nor are quotes, `/`, `?` or `#`; libvirt's "Unable to parse URI" then quotes the URI whole.
    ["qemu+tcp://admin:s3/c+r=@hv9/system", "qemu+tcp://admin:***@hv9/system"],
    ["qemu+tcp://admin:s3#c?r@hv9/system", "qemu+tcp://admin:***@hv9/system"],
    [`"qemu+tcp://admin:s3"cr@hv9:1/system"`, `"qemu+tcp://admin:***@hv9:1/system"`],
    [`'qemu+tcp://admin:s3'cr@hv9'`, `'qemu+tcp://admin:***@hv9'`],
    [`{"m": "at \\"qemu+tcp://a:s3\\"cr@h/x\\""}`, `{"m": "at \\"qemu+tcp://a:***@h/x\\""}`],
    // A space, or digits then `/` (which libvirt reads as a port and a path), hide no part either.
    ["qemu+ssh://user:pass word@hv9/system", "qemu+ssh://user:***@hv9/system"],
    [
      `at "qemu+ssh://u:a b@h/system": Unable to parse URI qemu+ssh://u:a b@h/system`,
      `at "qemu+ssh://u:***@h/system": Unable to parse URI qemu+ssh://u:***@h/system`,
    ],
    ["qemu+ssh://user:123/abc@hv9/system", "qemu+ssh://user:***@hv9/system"],
    ["qemu+ssh://user:123/a@b@hv9", "qemu+ssh://user:***@hv9"],
    ["qemu+ssh://user:/abc@hv9/system", "qemu+ssh://user:***@hv9/system"],
    // What follows the host (a path, a query, other words) is never taken for a password.
    ["qemu+ssh://a:b@h/system?keyfile=/k@y", "qemu+ssh://a:***@h/system?keyfile=/k@y"],
    ["qemu+ssh://a:b@h?keyfile=/k@y", "qemu+ssh://a:***@h?keyfile=/k@y"],
    [
      '"qemu+tcp://u:x@h1/system" and mail@example.org',
      '"qemu+tcp://u:***@h1/system" and mail@example.org',
    ],
    ["qemu+tcp://u:x@h1 qemu+tls://v:y@z@h2/", "qemu+tcp://u:***@h1 qemu+tls://v:***@h2/"],
    // No password: nothing changes, also with an `@` after a port (a home directory in AD).
    ["qemu+tcp://hv9:16509/system", "qemu+tcp://hv9:16509/system"],
    [
      "qemu+tcp://127.0.0.1:1/system?x=/home/alice@corp/y",
      "qemu+tcp://127.0.0.1:1/system?x=/home/alice@corp/y",
    ],
    [
      "qemu+ssh://hv1:2222/system?keyfile=/root/.ssh/id@work",
      "qemu+ssh://hv1:2222/system?keyfile=/root/.ssh/id@work",
    ],
    ["qemu+tcp://hv1:/system?k=a@b", "qemu+tcp://hv1:/system?k=a@b"],
    // An IPv6 host's brackets and colons are no user and password.
    [
      `libvirt at "qemu+tcp://[::1]:16509/system?keyfile=/root/.ssh/id@work" is another machine`,
      `libvirt at "qemu+tcp://[::1]:16509/system?keyfile=/root/.ssh/id@work" is another machine`,
    ],
    [
      "qemu+ssh://[2001:db8::1]/system: Cannot recv data: alice@2001:db8::1: Permission denied",
      "qemu+ssh://[2001:db8::1]/system: Cannot recv data: alice@2001:db8::1: Permission denied",
    ],
    ["qemu+ssh://u:pw@[::1]:22/system", "qemu+ssh://u:***@[::1]:22/system"],
    // Nor with words after a port, quoted or not, and an `@` among them.
    [
      "qemu+tcp://hv1:16509 failed, mail admin@corp",
      "qemu+tcp://hv1:16509 failed, mail admin@corp",
    ],
    [
      `"qemu+tcp://hv1:16509" failed, mail admin@corp`,
      `"qemu+tcp://hv1:16509" failed, mail admin@corp`,
    ],
    ["qemu+tcp://hv1:16509/system failed: a@b", "qemu+tcp://hv1:16509/system failed: a@b"],
    // Digits alone before the `@` are a password still.
    ["qemu+tcp://admin:1234@hv9/system", "qemu+tcp://admin:***@hv9/system"],
    ["qemu+ssh://root@hv9/system", "qemu+ssh://root@hv9/system"],
  ];
  for (const [text, expected] of cases) assertEquals(redactSecrets(text), expected, text);
});

Deno.test("a long line takes time growing with its length, not with its square", () => {
  // Each took seconds at 100 KB before the scans were bounded, and plan --json redacts a whole
  // definition: a 300 KB <description> of `a+` made it take 100 s.
  const patterns = ["a://b:c", "a://b:1/", "a://", "a.", "a+", "<cookie "];
  for (const pattern of patterns) {
    const line = pattern.repeat(300_000 / pattern.length);
    const redacted = assertCpuWithin(
      3000,
      () => redactSecrets(line),
      `${pattern} x ${line.length}`,
    );
    assertEquals(redacted, line, pattern);
  }
  // Bounded, a long password is still found.
  const long = `qemu+tcp://u:${"p".repeat(1000)}@h/system`;
  assertEquals(redactSecrets(long), "qemu+tcp://u:***@h/system");
});

Deno.test("a passwd with spaces around = and a cookie in CDATA or split across lines are redacted whole", () => {
  const cases: [string, string][] = [
    [`<graphics type='vnc' passwd = "s3cret"/>`, `<graphics type='vnc' passwd = '***'/>`],
    [
      `<cookie name='s'><![CDATA[a<b&c]]></cookie>`,
      `<cookie name='s'>***</cookie>`,
    ],
    // The first line of a value the diff shows split: the rest of the line is the value.
    [`<cookie name='s'><![CDATA[first<half`, `<cookie name='s'>***`],
  ];
  for (const [text, expected] of cases) assertEquals(redactSecrets(text), expected, text);
});

Deno.test("each secret is marked changed against the value at its own position", () => {
  const line = `<graphics passwd='b'/><graphics passwd='b'/>`;
  assertEquals(
    redactSecrets(line, ["a", "b"]),
    `<graphics passwd='***' (changed)/><graphics passwd='***'/>`,
  );
});
