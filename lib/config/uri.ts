/**
 * libvirt connection URIs, apart from the config code (and its YAML parser), for the commands
 * that only need to know where a URI points.
 *
 * @module
 */

import { resolve } from "../state/paths.ts";

/**
 * Whether a libvirt URI names another machine (`qemu+ssh://hv1/system`) rather than this one
 * (`qemu:///system`, `test:///default`): a URI with a host part is remote.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(isRemoteUri("qemu+ssh://root@hv1/system"), true);
 * assertEquals(isRemoteUri("qemu:///system?socket=/tmp/s"), false);
 * ```
 */
export function isRemoteUri(uri: string): boolean {
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(uri);
  if (m === null) return false;
  const authority = (m[1] ?? "").replace(/^[^@]*@/, "").replace(/:\d*$/, "");
  return authority !== "";
}

/** Transports that reach this host when the URI names none (libvirt connects to localhost). */
const LOCAL_TRANSPORTS = new Set(["unix", "tcp", "tls", "ssh", "libssh", "libssh2"]);

/**
 * The driver and instance (`/system`, `/session`) of a daemon on this host that `uri` reaches:
 * no host part, and no transport or one libvirt takes to localhost; `?socket=` only picks the
 * socket. The instance is unescaped, as libvirt reads it. `null`: another machine, or not a URI.
 */
function localDaemon(uri: string): { driver: string; instance: string } | null {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return null;
  }
  const [driver = "", transport] = url.protocol.slice(0, -1).toLowerCase().split("+", 2);
  if (url.host !== "" || (transport !== undefined && !LOCAL_TRANSPORTS.has(transport))) return null;
  // libvirt unescapes the path (`/%73ystem` is `/system`, which its QEMU driver opens).
  return { driver, instance: unescapeUriPart(url.pathname).replace(/\/+$/, "") };
}

/**
 * The sockets a system QEMU daemon of this host listens on (libvirt's `remote_sockets.c`:
 * virtqemud's, or libvirtd's and virtproxyd's, read-write and read-only) under `/run/libvirt` or
 * its `/var/run` spelling (libvirt's own); the `-admin-sock`s answer no QEMU URI.
 */
const SYSTEM_SOCKETS = new Set(
  ["/run/libvirt", "/var/run/libvirt"].flatMap((dir) =>
    ["libvirt-sock", "libvirt-sock-ro", "virtqemud-sock", "virtqemud-sock-ro"].map((name) =>
      `${dir}/${name}`
    )
  ),
);

/**
 * `%XX` escapes decoded byte-wise, leniently like libxml's unescaping (a stray `%` stays, a `+`
 * is a `+`): a URI's part as libvirt uses it.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(unescapeUriPart("p%40ss%+"), "p@ss%+");
 * ```
 */
export function unescapeUriPart(text: string): string {
  return text.includes("%") ? new TextDecoder().decode(unescapeUriBytes(text)) : text;
}

/**
 * The bytes of {@link unescapeUriPart}'s text, as libvirt passes them on (a `%FF` is the byte).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals([...unescapeUriBytes("a%FF")], [0x61, 0xff]);
 * ```
 */
export function unescapeUriBytes(text: string): Uint8Array {
  const bytes: number[] = [];
  const raw = new TextEncoder().encode(text);
  for (let i = 0; i < raw.length; i++) {
    const hex = String.fromCharCode(raw[i + 1] ?? 0, raw[i + 2] ?? 0);
    if (raw[i] === 0x25 && /^[0-9a-fA-F]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(raw[i]!);
    }
  }
  return new Uint8Array(bytes);
}

/** One parameter of a libvirt URI's query: its name (lowercased) and its value, both unescaped. */
export interface UriParameter {
  /** The name, unescaped and lowercased: libvirt's drivers compare names without case. */
  name: string;
  /** The value, unescaped; `""` for a name with no `=`. */
  value: string;
}

/**
 * The parameters of a libvirt URI's query, in order, as libvirt reads them (`viruri.c`): the
 * query split at each `&`, or at a `;` where no `&` follows (so `?a=1;socket=/s` has a `socket`
 * of `/s`, and in `?socket=/s;a=1&b=2` the socket is `/s;a=1`), each part unescaped. A part
 * starting with `=` is skipped by libvirt; one without `=` is a name with no value. Any text is
 * read, URI or not.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(uriParameters("qemu:///system?%53ocket=/s;a=1&no_tty"), [
 *   { name: "socket", value: "/s;a=1" },
 *   { name: "no_tty", value: "" },
 * ]);
 * ```
 */
export function uriParameters(uri: string): UriParameter[] {
  const query = uri.includes("?") ? uri.slice(uri.indexOf("?") + 1).split("#")[0]! : "";
  const parameters: UriParameter[] = [];
  for (let rest = query; rest !== "";) {
    const end = rest.includes("&")
      ? rest.indexOf("&")
      : rest.includes(";")
      ? rest.indexOf(";")
      : rest.length;
    const part = rest.slice(0, end);
    const eq = part.indexOf("=");
    if (eq !== 0) {
      parameters.push({
        name: unescapeUriPart(eq < 0 ? part : part.slice(0, eq)).toLowerCase(),
        value: eq < 0 ? "" : unescapeUriPart(part.slice(eq + 1)),
      });
    }
    rest = rest.slice(end + 1);
  }
  return parameters;
}

/**
 * The value a libvirt URI gives its parameter `wanted` (`socket`, `name`), as libvirt reads it
 * ({@link uriParameters}), the last of that name in any case (the remote driver's choice).
 * `undefined`: none, or not a URI.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(uriParameter("qemu:///system?socket=/a&SOCKET=/b", "socket"), "/b");
 * assertEquals(uriParameter("qemu:///system?no_tty=1;socket=/c", "socket"), "/c");
 * assertEquals(uriParameter("qemu:///system", "socket"), undefined);
 * ```
 */
export function uriParameter(uri: string, wanted: string): string | undefined {
  if (!URL.canParse(uri)) return undefined;
  return uriParameters(uri).findLast((p) => p.name === wanted)?.value;
}

/**
 * Whether a libvirt URI reaches this host's system QEMU daemon (`qemu:///system`, also through
 * `+unix`, or `+tcp`, `+tls` or `+ssh` with no host, which libvirt takes to localhost), whose VM
 * starts run the start guard's hook; a session, the test driver or another driver's VMs never do.
 * A `socket=` (libvirt takes the last, by any case) counts only when it is one of the system
 * daemon's own: any other is a private daemon's (a container's, a test's), whose hooks directory
 * and definitions may be its own, and whose policies or allowance in the host hook's state
 * directory would let the host's VM of the same UUID start unchecked. A `name=` is the URI the
 * daemon opens in its place (`name=test:///default` lists the test driver's VMs): it counts only
 * when that URI is the system QEMU driver's.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(isSystemQemuUri("qemu+unix:///system/?socket=/var/run/libvirt/virtqemud-sock"), true);
 * assertEquals(isSystemQemuUri("qemu+unix:///system/?socket=/tmp/s"), false);
 * assertEquals(isSystemQemuUri("qemu+tls:///system"), true);
 * assertEquals(isSystemQemuUri("qemu:///session"), false);
 * assertEquals(isSystemQemuUri("test:///default"), false);
 * assertEquals(isSystemQemuUri("qemu+ssh://hv1/system"), false);
 * assertEquals(isSystemQemuUri("qemu:///system?name=test:///default"), false);
 * ```
 */
export function isSystemQemuUri(uri: string): boolean {
  const daemon = localDaemon(uri);
  if (daemon?.driver !== "qemu" || daemon.instance !== "/system") return false;
  const name = uriParameter(uri, "name");
  // Each name is shorter than the URI holding it: this ends.
  if (name !== undefined && !isSystemQemuUri(name)) return false;
  const socket = uriParameter(uri, "socket");
  // A relative one is under the directory the program runs in, whichever that is.
  return socket === undefined ||
    // Its `.`, `..` and repeated slashes read as the kernel reads them where no component is a
    // link (the sockets' directories are not).
    (socket.startsWith("/") && SYSTEM_SOCKETS.has(resolve(socket)));
}

/**
 * The program libvirt runs in this process's group to carry a connection to `uri`: `ssh` for the
 * `ssh` transport (or the program its `command` names), `ext` for the `ext` transport's `command`;
 * `null` where libvirt connects itself (`+unix`, `+tcp`, `+tls`, `+libssh`, `+libssh2`, local).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(transportProgram("qemu+ssh://root@hv1/system"), "ssh");
 * assertEquals(transportProgram("qemu+ext:///system?command=/usr/local/bin/tunnel"), "ext");
 * assertEquals(transportProgram("qemu+libssh2://hv1/system"), null);
 * assertEquals(transportProgram("qemu:///system"), null);
 * ```
 */
export function transportProgram(uri: string): "ssh" | "ext" | null {
  const transport = /^[A-Za-z][A-Za-z0-9.-]*\+(ssh|ext):/i.exec(uri)?.[1]?.toLowerCase();
  return transport === "ssh" || transport === "ext" ? transport : null;
}

/**
 * The driver (`qemu`) of this host's session daemon that a libvirt URI reaches: the connecting
 * user's own libvirt (`qemu:///session`, libvirt's default for a user other than root; also
 * through `+unix` or another `socket=`, or `+tcp`, `+tls` or `+ssh` with no host), which holds
 * none of the host's VMs. `null`: any other URI.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(sessionDriver("qemu+ssh:///session"), "qemu");
 * assertEquals(sessionDriver("qemu:///session?socket=/run/user/1000/libvirt/virtqemud-sock"), "qemu");
 * assertEquals(sessionDriver("qemu:///system"), null);
 * assertEquals(sessionDriver("qemu+ssh://hv1/session"), null);
 * ```
 */
export function sessionDriver(uri: string): string | null {
  const daemon = localDaemon(uri);
  return daemon?.instance === "/session" && daemon.driver !== "" ? daemon.driver : null;
}

/** A value of a libvirt.conf setting: a string, a list of values, or other (a number). */
type ConfValue = string | ConfValue[] | null;

/**
 * The settings of libvirt.conf's `text`, read as libvirt's virConf reads it: `name = value`
 * statements ended by a line's end or `;`; strings in `"..."`, `'...'` or `"""..."""` (several
 * lines), taken as written (no escapes); numbers (`-1`, `+1`); lists of any of these in `[...]`
 * over any lines; `#` starts a comment outside a string and a list, up to a line feed or a carriage
 * return. Reading stops where a statement is not understood: libvirt refuses the whole file then.
 * A setting given twice is its first.
 */
function confSettings(text: string): Map<string, ConfValue> {
  const settings = new Map<string, ConfValue>();
  let at = 0;
  // Between statements: blanks, lines' ends and comments; in a list, no comments (virConf's).
  const skip = (what: RegExp) => {
    what.lastIndex = at;
    at += what.exec(text)?.[0].length ?? 0;
  };
  const between = () => {
    // A loop, not one pattern's `(...|...)*`: that backtracks through every character of a large
    // file on the regular expression engine's stack, which it overflows.
    for (let from = -1; from !== at;) {
      from = at;
      skip(/[ \t\r\n]*/y);
      // A comment ends at a carriage return too: libvirt reads a statement after one.
      if (text[at] === "#") skip(/[^\r\n]*/y);
    }
  };
  const string = (): string | undefined => {
    // One that opens with three quotes ends with three, as libvirt reads it.
    const m = text.startsWith('"""', at) ? /"""([\s\S]*?)"""/y : /"([^"\n]*)"|'([^'\n]*)'/y;
    m.lastIndex = at;
    const found = m.exec(text);
    if (found === null) return undefined;
    at = m.lastIndex;
    return found[1] ?? found[2] ?? "";
  };
  const value = (): ConfValue | undefined => {
    if (text[at] !== "[") {
      const s = string();
      if (s !== undefined) return s;
      const number = /[-+]?[0-9]+/y;
      number.lastIndex = at;
      if (number.exec(text) === null) return undefined;
      at = number.lastIndex;
      return null;
    }
    at++;
    // Any values, numbers and lists too, as libvirt reads them: one not understood here would end
    // the reading before settings libvirt goes on to read (an alias that runs a program).
    const list: ConfValue[] = [];
    for (;;) {
      skip(/[ \t\r\n]*/y);
      if (text[at] === "]") break;
      const item = value();
      if (item === undefined) return undefined;
      list.push(item);
      skip(/[ \t\r\n]*/y);
      if (text[at] === ",") at++;
      else if (text[at] !== "]") return undefined;
    }
    at++;
    return list;
  };
  for (;;) {
    between();
    while (text[at] === ";") {
      at++;
      between();
    }
    if (at >= text.length) return settings;
    const name = /([A-Za-z_][A-Za-z0-9_.]*)[ \t]*=[ \t]*/y;
    name.lastIndex = at;
    const key = name.exec(text)?.[1];
    if (key === undefined) return settings;
    at = name.lastIndex;
    const v = value();
    if (v === undefined) return settings;
    if (!settings.has(key)) settings.set(key, v);
    skip(/[ \t]*/y);
    if (at < text.length && !/[\r\n;#]/.test(text[at] ?? "")) return settings;
  }
}

/**
 * The URI libvirt opens for `uri` (`null`: its default), given `LIBVIRT_DEFAULT_URI` (`env`) and
 * the text of the libvirt.conf it reads: no URI takes `env`, else `uri_default`; one that is an
 * alias in `uri_aliases` (`name=URI`) stands for its URI. `null`: libvirt picks a driver itself.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const conf = `uri_aliases = [ "v6=qemu+ssh://root@[::1]/system",\n] # the lab`;
 * assertEquals(libvirtConfUri("v6", null, conf), "qemu+ssh://root@[::1]/system");
 * assertEquals(libvirtConfUri(null, null, `uri_default = "qemu:///system#x"`), "qemu:///system#x");
 * ```
 */
export function libvirtConfUri(
  uri: string | null,
  env: string | null,
  text: string,
): string | null {
  const settings = confSettings(text);
  const configured = settings.get("uri_default");
  const name = uri ?? env ?? (typeof configured === "string" ? configured : null);
  if (name === null) return null;
  const aliases = settings.get("uri_aliases");
  // libvirt matches the whole alias, which has no `=`.
  const alias = (Array.isArray(aliases) ? aliases : []).find((entry): entry is string =>
    typeof entry === "string" && entry.includes("=") && entry.slice(0, entry.indexOf("=")) === name
  );
  return alias === undefined ? name : alias.slice(name.length + 1);
}
