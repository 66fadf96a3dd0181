/**
 * Secrets in a domain definition: which values libvirt shows only with `VIR_DOMAIN_XML_SECURE`,
 * and the one redaction every output applies to them. Dependency-free, so the CLI's error path
 * can load it without the XML modules.
 *
 * libvirt's domain formatter (`src/conf/domain_conf.c`) writes two kinds of values only under
 * `VIR_DOMAIN_DEF_FORMAT_SECURE`:
 *
 * - `passwd` on `<graphics>` (VNC, SPICE, RDP), through `virDomainGraphicsAuthDefFormatAttr`;
 * - the `<cookies>` of an HTTP or HTTPS disk source, each
 *   `<cookie name='NAME'>VALUE</cookie>`, in a disk's `<source>` and in its `<backingStore>` and
 *   `<mirror>` sources alike.
 *
 * Every other credential in a definition is a reference to a libvirt secret (a uuid or usage
 * name), not a value. `tests/cli/security_test.ts` checks this list against the installed
 * libvirt by reading one definition with and without the flag.
 *
 * @module
 */

/**
 * One secret value: a `passwd` attribute (groups 1 to 3: what precedes the value, the value in
 * double or in single quotes), a cookie's value (groups 4 and 5: the opening tag, the value up
 * to the closing tag or, for a value split across lines, the end of the text), or the password
 * of a URI's user information (groups 6 and 7: `scheme://user:`, the password up to the `@` before
 * the host, so that an unencoded `@`, `/`, `?`, `#`, quote or space in it hides no part: libvirt's
 * "Unable to parse URI" quotes such a URI whole), which libvirt does not use but an operator may
 * still write into `--connect`, `connect:` or `LIBVIRT_DEFAULT_URI`. The host is what follows the
 * first such `@` up to the end, a space, `/`, `?`, `#` or a quote, and holds no `@`. Digits then
 * a space, a quote or the end after the `:` are a port (`qemu+tcp://hv1:16509 failed, mail
 * admin@corp`), and so are digits then `/` (or a bare `/`) unless an `@` and a host follow before
 * any space, `?` or `#`: an `@` in a query (`qemu+tcp://hv1:16509/system?x=/home/alice@corp`) is
 * libvirt's usual place for one, one in the path (`qemu+ssh://user:123/abc@hv1/system`) is a
 * password's. The user holds no `[` or `]`, which only an IPv6 host's brackets can (RFC 3986):
 * `qemu+tcp://[::1]:16509/system?keyfile=/id@work` has no password. A password that starts with
 * digits then a space, a quote, `?` or `#`, one with a space longer than {@link MAX_SPACED}
 * characters, one longer than {@link MAX_PASSWORD}, or a URI whose scheme is longer than
 * {@link MAX_SCHEME}, is shown.
 */
/**
 * The longest URI password with a space that `SECRET` finds: a space may be the password's
 * or the end of the URI, so looking further would take other words for one.
 */
const MAX_SPACED = 256;
/**
 * The longest URI password, and the longest URI scheme, that `SECRET` finds: looking
 * further for the `@` from every `scheme://user:` of a long line, or for the `://` from every word
 * start, takes time growing with its square (a 100 KB line of `a://b:c`, `a.a.a` or `<cookie `
 * took seconds, and `plan --json` of a VM with a 300 KB `<description>` of `a+` 100 s); bounded,
 * it grows with its length.
 */
const MAX_PASSWORD = 1024;
const MAX_SCHEME = 32;

const SECRET = new RegExp(
  [
    String.raw`(\spasswd\s*=\s*)(?:"([^"]*)"|'([^']*)')`,
    // An attribute value holds no `<` (XML escapes it), so each `<cookie` looks only to the next.
    String.raw`(<cookie(?:\s[^<>]*)?(?<!/)>)((?:<!\[CDATA\[[\s\S]*?(?:\]\]>|$)|[^<])*)`,
    String.raw`(\b[A-Za-z][A-Za-z0-9+.-]{0,${MAX_SCHEME - 1}}://[^\s/?#@:'"\[\]]*:)` +
    String.raw`((?![0-9]*(?:[\s/?#'"]|$))(?:\S{1,${MAX_PASSWORD}}?|.{1,${MAX_SPACED}}?)` +
    String.raw`|[0-9]*/[^\s?#]{0,${MAX_PASSWORD}}?)` +
    String.raw`(?=@[^\s@/?#'"]*(?:[\s/?#'"]|$))`,
  ].join("|"),
  "g",
);

/** A `passwd` attribute: what precedes its value, and the value in its quotes. */
const PASSWD = /(\spasswd\s*=\s*)("[^"]*"|'[^']*')/g;

/**
 * `text` with the line breaks inside each `passwd` value shown as `&#10;` (`&#13;`), so that each
 * value is on one line: libvirt writes a password's line break as it is, and a view line by line
 * (a diff) would show each line's part of it, which {@link redactSecrets} of one line cannot find.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   passwordsOnOneLine("<graphics passwd='Top\nSecret'>\n</graphics>"),
 *   "<graphics passwd='Top&#10;Secret'>\n</graphics>",
 * );
 * ```
 */
export function passwordsOnOneLine(text: string): string {
  return text.replace(
    PASSWD,
    (_, head: string, value: string) =>
      head + value.replaceAll("\r", "&#13;").replaceAll("\n", "&#10;"),
  );
}

/** The value a `SECRET` match redacts. */
function valueOf(match: RegExpMatchArray | string[]): string {
  return match[2] ?? match[3] ?? match[5] ?? match[7] ?? "";
}

/**
 * `text` with every secret value replaced by `***`: the one redaction for anything printed from
 * a definition read with `VIR_DOMAIN_XML_SECURE` (diffs, `--json`, messages). Given `before`, the
 * secret values of the line this one replaces (see {@link secretValues}), a value that differs
 * from the one at the same position is marked `(changed)`, so a change that touches only a
 * secret stays visible.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   redactSecrets(`<graphics type='vnc' passwd='s3cret'/>`),
 *   `<graphics type='vnc' passwd='***'/>`,
 * );
 * assertEquals(
 *   redactSecrets(`<graphics type='vnc' passwd='new'/>`, ["old"]),
 *   `<graphics type='vnc' passwd='***' (changed)/>`,
 * );
 * assertEquals(
 *   redactSecrets(`<cookie name='session'>a1b2</cookie>`),
 *   `<cookie name='session'>***</cookie>`,
 * );
 * assertEquals(
 *   redactSecrets(`Cannot connect to "qemu+tcp://admin:s3cret@hv9/system" or qemu+tcp://hv9:16509/`),
 *   `Cannot connect to "qemu+tcp://admin:***@hv9/system" or qemu+tcp://hv9:16509/`,
 * );
 * ```
 */
export function redactSecrets(text: string, before?: readonly string[]): string {
  let index = 0;
  return text.replace(SECRET, (...match: string[]) => {
    const changed = before !== undefined && before[index] !== valueOf(match);
    index++;
    const mark = changed ? " (changed)" : "";
    const [, head, , , tag, , user] = match;
    if (head !== undefined) return `${head}'***'${mark}`;
    return user !== undefined ? `${user}***${mark}` : `${tag}***${mark}`;
  });
}

/**
 * The secret values of `text`, in order (for {@link redactSecrets}'s `before`).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(secretValues(`<graphics passwd="a'b"/><graphics passwd=''/>`), ["a'b", ""]);
 * assertEquals(secretValues(`<cookie name='t'>x=1</cookie>`), ["x=1"]);
 * ```
 */
export function secretValues(text: string): string[] {
  return [...text.matchAll(SECRET)].map(valueOf);
}

/**
 * `text` with each of `passwords` (a URI's, from {@link secretValues}) shown as `***` wherever it
 * is quoted as user information, `:PASSWORD@`: libvirt gives a URI's `user:password` to ssh as its
 * login name, and ssh's refusal (`admin:PASSWORD@hv1: Permission denied (publickey).`) quotes it
 * with no scheme before it, where {@link redactSecrets} finds no URI.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   redactUserPasswords("admin:pw@hv1: Permission denied (publickey).", ["pw"]),
 *   "admin:***@hv1: Permission denied (publickey).",
 * );
 * ```
 */
export function redactUserPasswords(text: string, passwords: readonly string[]): string {
  // The longest first: a password that holds a shorter one is hidden whole.
  const longestFirst = [...passwords].filter((p) => p !== "").sort((a, b) => b.length - a.length);
  return longestFirst.reduce((done, password) => done.split(`:${password}@`).join(":***@"), text);
}
