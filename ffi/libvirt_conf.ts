/**
 * The URI libvirt will open for a name, found as libvirt finds it before it opens anything: no
 * name takes `LIBVIRT_DEFAULT_URI`, else `uri_default` of the libvirt.conf it reads (root's
 * `/etc/libvirt/libvirt.conf`, another user's `$XDG_CONFIG_HOME/libvirt/libvirt.conf`, by default
 * `~/.config/libvirt/libvirt.conf`); a name that is an alias of that file's `uri_aliases` stands
 * for the URI it names. What a caller needs of the URI before the open (is it ssh? would it run a
 * program?) holds then for the ones named only there too.
 *
 * @module
 */

import { borrowCString, cString, libxml2, type Libxml2Symbols } from "./library.ts";
import { libc } from "./libc.ts";
import { fileKind, readRegularFile } from "./libc_fs.ts";
import { libvirtConfUri, unescapeUriBytes } from "../lib/config/uri.ts";
import { UriProgramError, uriProgramReason } from "./uri_check.ts";

/** The largest libvirt.conf libvirt reads (virconf.c's `MAX_CONFIG_FILE_SIZE`). */
const MAX_CONF_BYTES = 10 * 1024 * 1024;

/**
 * The environment as libvirt reads it (libc's `getenv`: no Deno permission needed); `null` when
 * unset or, unless `keepEmpty`, empty.
 */
function environment(name: string, { keepEmpty = false } = {}): string | null {
  const value = borrowCString(libc().getenv(cString(name)));
  return value === null || (value === "" && !keepEmpty) ? null : value;
}

/** Offset of `pw_dir` in glibc's `struct passwd` on 64-bit Linux (after 3 pointers, 2 ids). */
const PW_DIR_OFFSET = 32;

/**
 * The home directory of the user passwd (or NSS) names for this process's uid, as GLib's
 * `g_get_home_dir()` takes it when `HOME` is unset; `null` when there is no such entry.
 */
function passwdHome(): string | null {
  const entry = libc().getpwuid(libc().getuid());
  if (entry === null) return null;
  const dir = borrowCString(new Deno.UnsafePointerView(entry).getPointer(PW_DIR_OFFSET));
  return dir === null || dir === "" ? null : dir;
}

/**
 * The libvirt.conf libvirt reads for this user. Its directory is GLib's
 * `g_get_user_config_dir()`: `XDG_CONFIG_HOME`, else `~/.config`, where `~` is `HOME` (set empty:
 * the working directory) or, unset, the passwd entry's home (a service or `env -u HOME` still has
 * a file there), or, with no entry either, `/`, as GLib falls back to.
 *
 * @example
 * ```ts
 * import { libvirtConfPath } from "./libvirt_conf.ts";
 * if (!libvirtConfPath().endsWith("/libvirt.conf")) throw new Error("not a libvirt.conf");
 * ```
 */
export function libvirtConfPath(): string {
  if (libc().getuid() === 0) return "/etc/libvirt/libvirt.conf";
  // GLib takes a `HOME` set empty as it is: its `.config` is then relative to the working
  // directory, and libvirt reads the file there.
  const home = environment("HOME", { keepEmpty: true }) ?? passwdHome() ?? "/";
  const userConfig = home === "" ? ".config" : `${home.replace(/\/+$/, "")}/.config`;
  return `${environment("XDG_CONFIG_HOME") ?? userConfig}/libvirt/libvirt.conf`;
}

/**
 * The URI libvirt will open for `uri` (`null`: its default), as far as it can be told before the
 * open; `null` when libvirt will pick a driver itself, or its config cannot be read.
 *
 * @example
 * ```ts
 * import { libvirtUriFor } from "./libvirt_conf.ts";
 * if (libvirtUriFor("test:///default") !== "test:///default") throw new Error("changed");
 * ```
 */
export function libvirtUriFor(uri: string | null): string | null {
  let text = "";
  try {
    // A file only, of the size libvirt reads at most: a FIFO no one writes, or a link to a
    // device, would hold this read with no deadline over it (libvirt's own read of it has one).
    // Through libc, as libvirt reads it: Deno's calls need permissions a script may lack.
    text = readRegularFile(libvirtConfPath(), MAX_CONF_BYTES) ?? "";
  } catch {
    // None there, or not readable by this user: libvirt reads none either.
  }
  return libvirtConfUri(uri, environment("LIBVIRT_DEFAULT_URI"), text);
}

/**
 * Checks `uri` (`null`: libvirt's default; given from `origin`) before libvirt opens it, and the
 * URI libvirt.conf makes of it (its `uri_default`, an alias), which libvirt opens all the same,
 * read once for both checks. Refuses a test-driver URI (`test:///ABS/PATH.xml`) naming something
 * that is not a regular file: libvirt reads a FIFO until a writer comes (forever) and a directory
 * or `/dev/zero` with parser noise on stderr (a missing file is libvirt's to report), or a world
 * naming such a file for libvirt to read (`<domain file='...'/>`). Then, unless
 * `allow` is `null` (URIs that run a program are allowed), throws a {@link UriProgramError} for
 * one that would make libvirt run a program (see `uri_check.ts`), with `allow` as its hint.
 *
 * @example
 * ```ts
 * import { checkUriToOpen } from "./libvirt_conf.ts";
 * checkUriToOpen("test:///default", { allow: "Allow it." });
 * checkUriToOpen("test:///nonexistent/world.xml", { allow: null });
 * let refused = false;
 * try {
 *   checkUriToOpen("test:///dev/null", { origin: "--connect", allow: null });
 * } catch {
 *   refused = true;
 * }
 * if (!refused) throw new Error("a device was let through");
 * ```
 */
export function checkUriToOpen(
  uri: string | null,
  options: { origin?: string | undefined; allow: string | null },
): void {
  const { origin, allow } = options;
  if (uri !== null) refuseTestDriverNonFile(uri, origin);
  const opened = libvirtUriFor(uri);
  const other = opened !== null && opened !== uri ? opened : null;
  if (other !== null) refuseTestDriverNonFile(other, confOrigin(uri, origin));
  if (allow === null) return;
  const given = uri === null ? null : uriProgramReason(uri);
  if (given !== null) {
    throw new UriProgramError(uri!, given, { ...(origin === undefined ? {} : { origin }), allow });
  }
  const reason = other === null ? null : uriProgramReason(other);
  if (reason !== null) {
    throw new UriProgramError(other!, reason, { origin: confOrigin(uri, origin), allow });
  }
}

/** The test-driver check of {@link checkUriToOpen} for one URI, as written. */
function refuseTestDriverNonFile(uri: string, origin: string | undefined): void {
  const written = /^test:\/\/(\/[^?#]*)/i.exec(uri)?.[1];
  if (written === undefined || written === "/default") return;
  // libvirt reads the path percent-decoded byte by byte (`%66ifo` is `fifo`; `%FF` the byte 0xFF,
  // which no UTF-8 text spells, so it is looked up as bytes).
  const bytes = unescapeUriBytes(written);
  const path = new TextDecoder().decode(bytes);
  const refuse = (read: string, fix: string) =>
    new Error(
      `Cannot use libvirt URI "${uri}"${origin === undefined ? "" : ` (${origin})`}: ` +
        `its test driver would read "${read}", which is not a regular file; ${fix}`,
    );
  const kind = fileKind(bytes).kind;
  if (kind === "other") throw refuse(path, "name a world XML file");
  if (kind !== "file") return;
  const named = worldFiles(path, bytes).find((file) => fileKind(file).kind === "other");
  if (named !== undefined) throw refuse(named, `name a regular file in ${path}`);
}

/**
 * The files a test-driver world at `path` (`bytes`, as libvirt opens it) names for libvirt to read
 * as it opens it: the `file` attribute of its `<domain>`, `<network>`, `<interface>`, `<pool>`,
 * its pools' `<volume>` and its `<device>` elements (libvirt's `testParseXMLDocFromFile`, on the
 * nodes its XPaths pick), relative ones from the world's directory. Read with libxml2 as libvirt
 * reads the world, so its encoding, character and entity references and attribute syntax are
 * taken as libvirt takes them (a text scan missed a `>` in an earlier attribute, `&#102;`, a DTD
 * entity and a UTF-16 world). None when the world cannot be parsed: libvirt reports that.
 */
function worldFiles(path: string, bytes: Uint8Array): string[] {
  const xml = libxml2();
  if (xml === null) return [];
  const file = new Uint8Array(bytes.length + 1);
  file.set(bytes);
  const doc = xml.xmlReadFile(
    file,
    null,
    XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_NONET,
  );
  if (doc === null) return [];
  const context = xml.xmlXPathNewContext(doc);
  try {
    if (context === null) return [];
    const count = xpathValue(xml, context, `count(${WORLD_FILE_ATTRIBUTES})`).number;
    const directory = path.slice(0, path.lastIndexOf("/") + 1);
    const files: string[] = [];
    for (let i = 1; i <= count; i++) {
      const name = xpathValue(xml, context, `string((${WORLD_FILE_ATTRIBUTES})[${i}])`).text;
      if (name !== "") files.push(name.startsWith("/") ? name : `${directory}${name}`);
    }
    return files;
  } finally {
    if (context !== null) xml.xmlXPathFreeContext(context);
    xml.xmlFreeDoc(doc);
  }
}

/** `XML_PARSE_NOERROR`, `XML_PARSE_NOWARNING`, `XML_PARSE_NONET` (libxml2's `parser.h`). */
const XML_PARSE_NOERROR = 32;
const XML_PARSE_NOWARNING = 64;
const XML_PARSE_NONET = 2048;

/** The `file` attributes libvirt's test driver reads files by (`test_driver.c`'s XPaths). */
const WORLD_FILE_ATTRIBUTES = ["domain", "network", "interface", "pool", "pool/volume", "device"]
  .map((element) => `/node/${element}/@file`).join(" | ");

/**
 * A number or string XPath `expression` yields (`xmlXPathObject`: `floatval` at 24, `stringval`
 * at 32 on 64-bit libxml2 2.9 and later).
 */
function xpathValue(
  xml: Libxml2Symbols,
  context: Deno.PointerObject,
  expression: string,
): { number: number; text: string } {
  const result = xml.xmlXPathEvalExpression(cString(expression), context);
  if (result === null) return { number: 0, text: "" };
  try {
    const view = new Deno.UnsafePointerView(result);
    return { number: view.getFloat64(24), text: borrowCString(view.getPointer(32)) ?? "" };
  } finally {
    xml.xmlXPathFreeObject(result);
  }
}

/**
 * Where libvirt.conf made another URI of `uri` (`null`: the default; given from `origin`): its
 * `uri_default`, or the alias `uri` (or `LIBVIRT_DEFAULT_URI`) names.
 */
function confOrigin(uri: string | null, origin: string | undefined): string {
  const name = uri ?? environment("LIBVIRT_DEFAULT_URI");
  return name === null
    ? `uri_default in ${libvirtConfPath()}`
    : `the alias ${JSON.stringify(name)}${
      origin === undefined ? "" : ` of ${origin}`
    } in ${libvirtConfPath()}`;
}
