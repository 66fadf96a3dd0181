/**
 * Loads `libvirt.so.0` lazily, once per process (libc is `libc.ts`'s). Nothing is opened at import
 * time, so modules that only need types or pure logic never require `--allow-ffi` or an installed
 * libvirt.
 *
 * @module
 */

import { guardSymbols, libvirtDeadlineArmed } from "./deadline.ts";
import { libc } from "./libc.ts";
import { ERROR_FUNC_DEFINITION, LIBVIRT_SYMBOLS } from "./symbols.ts";

/** The default soname; the plain `libvirt.so` link only exists with `libvirt-dev`. */
export const DEFAULT_LIBVIRT_PATH = "libvirt.so.0";

/** Environment variable naming another libvirt library file to load. */
export const LIBVIRT_PATH_ENV = "PASSTHROUGH_LIBVIRT_PATH";

/** The bound libvirt functions. */
export type LibvirtSymbols = Deno.DynamicLibrary<typeof LIBVIRT_SYMBOLS>["symbols"];

/** libvirt (or libc) could not be loaded: the package is missing or the path is wrong. */
export class LibvirtLoadError extends Error {
  /** Always `"LibvirtLoadError"`. */
  override name = "LibvirtLoadError";
  /** The path handed to `Deno.dlopen`. */
  readonly path: string;

  /** `options.cause` carries `Deno.dlopen`'s own error. */
  constructor(path: string, options?: ErrorOptions) {
    super(
      `Cannot load libvirt from "${path}": install the Debian package "libvirt0" or set ${LIBVIRT_PATH_ENV}`,
      options,
    );
    this.path = path;
  }
}

/**
 * Opens libvirt from `path` and installs a no-op error callback, so libvirt (and libxml2, which it
 * reads XML with) never prints errors to stderr itself (they come back as exceptions instead). Not
 * memoised: most callers want {@link libvirt}.
 *
 * @example
 * ```ts
 * import { openLibvirtLibrary } from "./library.ts";
 * const lib = openLibvirtLibrary("libvirt.so.0");
 * if (typeof lib.virConnectOpen !== "function") throw new Error("virConnectOpen not bound");
 * ```
 */
export function openLibvirtLibrary(path: string): LibvirtSymbols {
  initialiseOpenSslWithoutAtExit();
  let library: Deno.DynamicLibrary<typeof LIBVIRT_SYMBOLS>;
  try {
    library = Deno.dlopen(path, LIBVIRT_SYMBOLS);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
      throw error;
    }
    throw new LibvirtLoadError(path, { cause: error });
  }
  // The error callback is process-global and must outlive every libvirt call: so only the main
  // thread ever touches libvirt (a Web Worker's callback would be freed when the worker ends while
  // libvirt still holds it: a crash). With every call synchronous on that one thread, a plain
  // (non-threadsafe) callback is enough.
  const silence = new Deno.UnsafeCallback(ERROR_FUNC_DEFINITION, () => {});
  library.symbols.virSetErrorFunc(null, silence.pointer);
  // The callback dies with this isolate, libvirt lives on in the process (a test or bench runner
  // runs several isolates in one): it must not keep pointing at freed code.
  globalThis.addEventListener("unload", () => library.symbols.virSetErrorFunc(null, null));
  silenceLibxml2();
  return library.symbols;
}

/** The libxml2 that libvirt links and reads every XML document with. */
const LIBXML2 = "libxml2.so.2";

const LIBXML2_SYMBOLS = {
  // void xmlSetGenericErrorFunc(void *ctx, xmlGenericErrorFunc handler);
  xmlSetGenericErrorFunc: { parameters: ["pointer", "function"], result: "void" },
  // xmlDocPtr xmlReadFile(const char *filename, const char *encoding, int options);
  xmlReadFile: { parameters: ["buffer", "pointer", "i32"], result: "pointer" },
  // void xmlFreeDoc(xmlDocPtr cur);
  xmlFreeDoc: { parameters: ["pointer"], result: "void" },
  // xmlXPathContextPtr xmlXPathNewContext(xmlDocPtr doc);
  xmlXPathNewContext: { parameters: ["pointer"], result: "pointer" },
  // void xmlXPathFreeContext(xmlXPathContextPtr ctxt);
  xmlXPathFreeContext: { parameters: ["pointer"], result: "void" },
  // xmlXPathObjectPtr xmlXPathEvalExpression(const xmlChar *str, xmlXPathContextPtr ctxt);
  xmlXPathEvalExpression: { parameters: ["buffer", "pointer"], result: "pointer" },
  // void xmlXPathFreeObject(xmlXPathObjectPtr obj);
  xmlXPathFreeObject: { parameters: ["pointer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The bound libxml2 functions. */
export type Libxml2Symbols = Deno.DynamicLibrary<typeof LIBXML2_SYMBOLS>["symbols"];

let cachedLibxml2: Libxml2Symbols | null | undefined;

/**
 * libxml2, opened once (never closed: libvirt, which links it, stays loaded until the process
 * ends); `null` without the permission or the library (then libvirt, which links it, cannot load
 * either).
 */
export function libxml2(): Libxml2Symbols | null {
  if (cachedLibxml2 !== undefined) return cachedLibxml2;
  cachedLibxml2 = null;
  if (Deno.permissions.querySync({ name: "ffi", path: LIBXML2 }).state !== "granted") return null;
  try {
    cachedLibxml2 = Deno.dlopen(LIBXML2, LIBXML2_SYMBOLS).symbols;
  } catch {
    // Not here: callers fall back as documented.
  }
  return cachedLibxml2;
}

/**
 * Points libxml2's generic error channel at a no-op, as `virSetErrorFunc` does libvirt's. libvirt
 * catches libxml2's parse errors into its own error, but not what libxml2 reports on that channel:
 * a test-driver world file that cannot be opened printed `I/O warning : failed to load external
 * entity "PATH"` on stderr beside the `LibvirtError` naming the same file. libxml2 keeps the
 * channel per thread, and libvirt is only called on this one. Best effort, like
 * {@link initialiseOpenSslWithoutAtExit}: without libxml2 here, nothing changes.
 */
function silenceLibxml2(): void {
  const xml = libxml2();
  if (xml === null) return;
  // `void (*xmlGenericErrorFunc)(void *ctx, const char *msg, ...)`: the variadic rest is never
  // read, so a two-pointer callback is called correctly.
  const silence = new Deno.UnsafeCallback(ERROR_FUNC_DEFINITION, () => {});
  xml.xmlSetGenericErrorFunc(null, silence.pointer);
  // A NULL handler is libxml2's default again, before this isolate frees the callback.
  globalThis.addEventListener("unload", () => xml.xmlSetGenericErrorFunc(null, null));
}

/** `OPENSSL_INIT_NO_ATEXIT` (OpenSSL 1.1.1b and later): register no `OPENSSL_cleanup()` at exit. */
const OPENSSL_INIT_NO_ATEXIT = 0x00080000n;

/** The OpenSSL that Debian's libvirt links, through curl and libssh2. */
const LIBCRYPTO = "libcrypto.so.3";

let openSslInitialised = false;

/**
 * Initialises OpenSSL before libvirt does, so that it registers no `OPENSSL_cleanup()` with
 * `atexit`. `deno test` and `deno bench` run each module on a thread of its own; when libvirt
 * first initialises OpenSSL there, that thread's exit and the main thread's `OPENSSL_cleanup()`
 * can free the thread's OpenSSL state twice, aborting the process as it exits
 * (openssl/openssl#6214). The operating system reclaims it all at exit anyway. Best effort, and
 * never a permission prompt: without `libcrypto.so.3`, or without the permission to load it, or
 * with OpenSSL already initialised, nothing changes.
 */
function initialiseOpenSslWithoutAtExit(): void {
  if (openSslInitialised) return;
  openSslInitialised = true;
  if (Deno.permissions.querySync({ name: "ffi", path: LIBCRYPTO }).state !== "granted") return;
  try {
    // Never closed: libvirt, which links it, stays loaded until the process ends.
    const crypto = Deno.dlopen(LIBCRYPTO, {
      OPENSSL_init_crypto: { parameters: ["u64", "pointer"], result: "i32" },
    });
    crypto.symbols.OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, null);
  } catch {
    // No libcrypto.so.3 here: libvirt links another OpenSSL, or none.
  }
}

let cachedLibvirt: LibvirtSymbols | undefined;
/** The symbols armed by the deadline (`deadline.ts`), made when one is first set. */
let guardedLibvirt: LibvirtSymbols | undefined;

function configuredPath(): string {
  // Without env permission the override cannot be read; fall back rather than fail so a run with
  // narrow permissions still works against the system library.
  const state = Deno.permissions.querySync({ name: "env", variable: LIBVIRT_PATH_ENV }).state;
  if (state !== "granted") return DEFAULT_LIBVIRT_PATH;
  const value = Deno.env.get(LIBVIRT_PATH_ENV);
  return value === undefined || value === "" ? DEFAULT_LIBVIRT_PATH : value;
}

/**
 * The process-wide libvirt, opened on first use from `PASSTHROUGH_LIBVIRT_PATH` or
 * `libvirt.so.0`, each call bounded while a deadline is set (`setLibvirtDeadline`). Throws
 * {@link LibvirtLoadError} when it cannot be loaded.
 */
export function libvirt(): LibvirtSymbols {
  cachedLibvirt ??= openLibvirtLibrary(configuredPath());
  if (!libvirtDeadlineArmed()) return cachedLibvirt;
  return guardedLibvirt ??= guardSymbols(cachedLibvirt);
}

const encoder = new TextEncoder();

/**
 * A NUL-terminated copy of `text` for a `const char*` parameter. Throws `TypeError` when `text`
 * is no string, or holds a NUL, which C would silently truncate at.
 */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  // A plain-JavaScript caller's number or object would fail below on `includes`, naming nothing.
  if (typeof text !== "string") throw new TypeError(`Expected a string, got ${valueKind(text)}`);
  if (text.includes("\0")) {
    throw new TypeError(`String contains a NUL character: "${text.replaceAll("\0", "\\0")}"`);
  }
  return encoder.encode(text + "\0");
}

/** `number 42`, `null`, `object`: what a wrong argument was, for a `TypeError`. */
export function valueKind(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  const kind = typeof value;
  return kind === "number" || kind === "boolean" || kind === "bigint" ? `${kind} ${value}` : kind;
}

/** Reads a `char*` the caller owns and releases it with libc `free()`; `null` stays `null`. */
export function takeCString(pointer: Deno.PointerValue): string | null {
  if (pointer === null) return null;
  try {
    return Deno.UnsafePointerView.getCString(pointer);
  } finally {
    libc().free(pointer);
  }
}

/** Reads a `const char*` libvirt owns (never freed here); `null` stays `null`. */
export function borrowCString(pointer: Deno.PointerValue): string | null {
  return pointer === null ? null : Deno.UnsafePointerView.getCString(pointer);
}
