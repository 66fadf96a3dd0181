/**
 * `virConnectPtr` as a class: the entry point to libvirt.
 *
 * @module
 */

import { setLibvirtDeadline, setLibvirtDeadlineTarget, withDeadlineNote } from "./deadline.ts";
import { Domain } from "./domain.ts";
import {
  checkInt,
  checkPointer,
  ClosedHandleError,
  lastLibvirtError,
  LibvirtError,
} from "./errors.ts";
import { borrowCString, cString, libvirt, takeCString, valueKind } from "./library.ts";
import { libc } from "./libc.ts";
import { Network } from "./network.ts";
import { NodeDevice } from "./node_device.ts";
import { checkUriToOpen, libvirtUriFor } from "./libvirt_conf.ts";
import { unescapeUriBytes, unescapeUriPart } from "../lib/config/uri.ts";
import { redactUserPasswords, secretValues } from "../lib/domain/secrets.ts";
import {
  VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV,
  VIR_DOMAIN_DEFINE_VALIDATE,
} from "./symbols.ts";

/** Options for {@link Connection.open}. */
export interface ConnectionOpenOptions {
  /** Open with `virConnectOpenReadOnly`: enough for listing and reading XML. */
  readOnly?: boolean;
  /**
   * Open a URI that makes libvirt run a program it names (`qemu+ext:///system?command=...`,
   * `?command=` or `?netcat=` on ssh; see `ffi/uri_check.ts`), given or made of the one given by
   * libvirt.conf (its `uri_default`, an alias). Default `false`: refused with a `UriProgramError`
   * before libvirt sees it.
   */
  allowUriPrograms?: boolean;
  /**
   * Where a `uri` given came from (`--connect`, `LIBVIRT_DEFAULT_URI` as the caller read it),
   * named beside it in errors. A `uri` of `null` read from the environment is named so anyway.
   */
  origin?: string;
  /**
   * Bound each libvirt call of this process from now on (the open included) by
   * `deadline.seconds`: past it, the process prints why (`deadline.who: libvirt at "URI" did not
   * answer in N s: ...; deadline.hint`) and exits with status 1 (see `deadline.ts`). Default:
   * calls wait as long as libvirt makes them, which is forever when the daemon is stopped.
   */
  deadline?: {
    seconds: number;
    who?: string;
    hint?: string;
    /** Also print the failure on standard output as `{ "error": { "kind", "message" } }`. */
    json?: boolean;
    /**
     * Leave the open itself unbounded, bounding the calls after it: the transport runs a program
     * (`ssh`) that may ask a person at the terminal for a password or a host key, for as long as
     * they take to answer.
     */
    afterOpen?: boolean;
  };
}

/** The environment variable libvirt opens when given no URI. */
const DEFAULT_URI_ENV = "LIBVIRT_DEFAULT_URI";

/**
 * `LIBVIRT_DEFAULT_URI` as libvirt itself will read it (libc's `getenv`, so no Deno permission
 * is needed and nothing differs from what libvirt sees); `null` when unset or empty.
 */
function defaultUriFromEnvironment(): string | null {
  const value = borrowCString(libc().getenv(cString(DEFAULT_URI_ENV)));
  return value === null || value === "" ? null : value;
}

/**
 * `error` (of opening `uri`; `null`: libvirt's default) with the URI's password shown as `***`
 * (as written, and decoded) where libvirt's message quotes it as ssh does, `admin:PASSWORD@hv1`,
 * without the URI's scheme
 * (see `redactUserPasswords`); the URI libvirt.conf makes of `uri` (an alias, its `uri_default`)
 * is the one ssh was given then.
 */
function withoutUriPasswords(error: LibvirtError, uri: string | null): LibvirtError {
  // libvirt gives ssh the user information decoded (`p%40ss` as `p@ss`), and ssh's refusal
  // quotes it escaped as ssh escapes what it logs.
  const passwords = [uri, libvirtUriFor(uri)].flatMap((u) => u === null ? [] : secretValues(u))
    .flatMap((password) => [
      password,
      unescapeUriPart(password),
      sshLogged(unescapeUriBytes(password)),
    ]);
  if (passwords.length === 0) return error;
  const hide = (text: string) => redactUserPasswords(text, passwords);
  return new LibvirtError(hide(error.message), {
    code: error.code,
    domain: error.domain,
    libvirtMessage: hide(error.libvirtMessage),
    operation: error.operation,
  });
}

/**
 * `bytes` as OpenSSH writes them in a message on stderr (log.c's `strnvis` with `VIS_SAFE |
 * VIS_OCTAL`): a backslash doubled; printable ASCII, space, tab, line feed, backspace, bell and carriage
 * return as they are; any other byte (a non-ASCII letter's) as `\ooo`.
 */
function sshLogged(bytes: Uint8Array): string {
  return [...bytes].map((byte) => {
    if (byte === 0x5c) return "\\\\";
    if ((byte >= 0x20 && byte < 0x7f) || [0x07, 0x08, 0x09, 0x0a, 0x0d].includes(byte)) {
      return String.fromCharCode(byte);
    }
    return `\\${byte.toString(8).padStart(3, "0")}`;
  }).join("");
}

/** Options for {@link Connection.listNodeDevices}. */
export interface ListNodeDevicesOptions {
  /** Only devices with this capability. */
  cap?: "pci";
}

// Connections the caller forgot to close are closed when collected; explicit close() stays the
// rule, this only stops a slow leak of sockets.
const finalizer = new FinalizationRegistry<Deno.PointerObject>((pointer) => {
  libvirt().virConnectClose(pointer);
});

/**
 * A connection to a libvirt driver. Close it with `close()` or `using`.
 *
 * @example
 * ```ts
 * import { Connection } from "./connection.ts";
 * using conn = Connection.open("test:///default", { readOnly: true });
 * const names = conn.listDomains().map((dom) => {
 *   using owned = dom;
 *   return owned.name;
 * });
 * if (names.join() !== "test") throw new Error(`unexpected domains: ${names}`);
 * ```
 */
export class Connection {
  #handle: Deno.PointerObject | null;
  readonly #uri: string;
  readonly #readOnly: boolean;

  private constructor(handle: Deno.PointerObject, fields: { uri: string; readOnly: boolean }) {
    this.#handle = handle;
    this.#uri = fields.uri;
    this.#readOnly = fields.readOnly;
    finalizer.register(this, handle, this);
  }

  /**
   * Opens `uri`; `null`, `""` or omitted opens `LIBVIRT_DEFAULT_URI` when set, else libvirt's
   * default.
   * Throws `UriProgramError` for a URI that would run a program (unless allowed), and
   * `LibvirtError` when the driver or daemon is unreachable.
   */
  static open(uri?: string | null, options: ConnectionOpenOptions = {}): Connection {
    // Loaded first: a library that cannot load is reported before anything about the URI.
    libvirt();
    // libvirt's own first choice, read here so it is checked and named in errors like a URI
    // given; its next choices (libvirt.conf's uri_default, aliases) are checked where read.
    // An empty name is no name to libvirt (its default, `LIBVIRT_DEFAULT_URI` first): checked
    // as such, or the default's program would run unchecked.
    const given = uri === "" ? null : uri ?? null;
    if (given !== null && typeof given !== "string") {
      throw new TypeError(`Expected a libvirt URI (a string) or null, got ${valueKind(given)}`);
    }
    const fromEnvironment = given === null ? defaultUriFromEnvironment() : null;
    const requested = given ?? fromEnvironment;
    const origin = fromEnvironment === null ? options.origin : DEFAULT_URI_ENV;
    checkUriToOpen(requested, {
      origin,
      allow: options.allowUriPrograms === true
        ? null
        : "Open it with allowUriPrograms: true if that is meant.",
    });
    const name = requested === null ? null : cString(requested);
    const deadline = options.deadline;
    const bound = (open: boolean) => {
      if (deadline === undefined) return;
      const unbounded = open && deadline.afterOpen === true;
      setLibvirtDeadline(unbounded ? null : deadline.seconds, {
        target: requested === null ? "its default URI" : JSON.stringify(requested),
        who: deadline.who,
        hint: deadline.hint,
        json: deadline.json,
      });
    };
    bound(true);
    // Read after the deadline is set: these symbols are armed by it.
    const opener = libvirt();
    const readOnly = options.readOnly ?? false;
    const handle = readOnly ? opener.virConnectOpenReadOnly(name) : opener.virConnectOpen(name);
    if (handle === null) {
      throw withoutUriPasswords(
        lastLibvirtError({
          operation: readOnly ? "virConnectOpenReadOnly" : "virConnectOpen",
          context: requested === null
            ? "Cannot connect to libvirt at its default URI"
            : `Cannot connect to libvirt at "${requested}"${
              origin === undefined ? "" : ` (${origin})`
            }`,
        }),
        requested,
      );
    }
    if (deadline?.afterOpen === true) bound(false);
    const lib = libvirt();
    let canonical: string;
    try {
      canonical = takeCString(checkPointer(lib.virConnectGetURI(handle), {
        operation: "virConnectGetURI",
        context: "Cannot read the connection URI",
      })) ?? "";
    } catch (error) {
      lib.virConnectClose(handle);
      throw error;
    }
    if (options.deadline !== undefined) setLibvirtDeadlineTarget(JSON.stringify(canonical));
    return new Connection(handle, { uri: canonical, readOnly });
  }

  /** The raw `virConnectPtr`, or `null` once closed. */
  get unsafeHandle(): Deno.PointerObject | null {
    return this.#handle;
  }

  /** The canonical URI libvirt reports (`test:///default`, `qemu:///system`). */
  get uri(): string {
    return this.#uri;
  }

  /** Whether the connection was opened read-only. */
  get readOnly(): boolean {
    return this.#readOnly;
  }

  /** Whether {@link Connection.close} was called. */
  get closed(): boolean {
    return this.#handle === null;
  }

  #live(operation: string): Deno.PointerObject {
    if (this.#handle === null) {
      throw new ClosedHandleError({ kind: "connection", label: this.#uri, operation });
    }
    return this.#handle;
  }

  /** The version of the libvirt library in use, `major.minor.release` (`9.0.0`). */
  get libVersion(): string {
    const out = new BigUint64Array(1);
    checkInt(libvirt().virConnectGetLibVersion(this.#live("libVersion"), out), {
      operation: "virConnectGetLibVersion",
      context: "Cannot read the libvirt version",
    });
    const version = Number(out[0] ?? 0n);
    return `${Math.floor(version / 1_000_000)}.${Math.floor(version / 1000) % 1000}.${
      version % 1000
    }`;
  }

  /**
   * Every object a `virConnectListAll*` call returns (`what`, for the error), wrapped, sorted by
   * name. Each one's handle is the caller's to free; on a failure none is left behind.
   */
  #listAll<T extends { name: string; free(): void }>(
    call: {
      operation: string;
      what: string;
      list: (connection: Deno.PointerObject, out: BigUint64Array) => number;
    },
    own: {
      wrap: (pointer: Deno.PointerObject) => T;
      release: (pointer: Deno.PointerObject) => void;
    },
  ): T[] {
    const out = new BigUint64Array(1);
    const count = checkInt(call.list(this.#live(call.operation), out), {
      operation: call.operation,
      context: `Cannot list the ${call.what} of "${this.#uri}"`,
    });
    return adoptArray(out, count, own).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0
    );
  }

  /** Every domain, running or defined, sorted by name. The caller frees each. */
  listDomains(): Domain[] {
    return this.#listAll({
      operation: "virConnectListAllDomains",
      what: "domains",
      list: (connection, out) => libvirt().virConnectListAllDomains(connection, out, 0),
    }, {
      wrap: (pointer) => new Domain(pointer),
      release: (pointer) => libvirt().virDomainFree(pointer),
    });
  }

  /** The domain called `name`. Throws `LibvirtError` with `VIR_ERR_NO_DOMAIN` when absent. */
  lookupDomainByName(name: string): Domain {
    const pointer = libvirt().virDomainLookupByName(
      this.#live("lookupDomainByName"),
      cString(name),
    );
    return new Domain(checkPointer(pointer, {
      operation: "virDomainLookupByName",
      context: `Cannot look up domain "${name}"`,
    }));
  }

  /**
   * Defines or redefines a domain from its XML (keep the `<uuid>` when redefining), validated
   * against libvirt's RNG schema (`VIR_DOMAIN_DEFINE_VALIDATE`): without it libvirt silently
   * drops unknown elements.
   */
  defineDomain(xml: string): Domain {
    const handle = this.#live("defineDomain");
    const text = cString(xml);
    const pointer = withDeadlineNote(
      `while defining${
        domainNameHint(xml) || " a domain"
      }: whether that define took effect is unknown ` +
        "(its previous definition is in a backup: `passthrough backups`)",
      () => libvirt().virDomainDefineXMLFlags(handle, text, VIR_DOMAIN_DEFINE_VALIDATE),
    );
    return new Domain(checkPointer(pointer, {
      operation: "virDomainDefineXMLFlags",
      context: `Cannot define domain${domainNameHint(xml)}`,
    }));
  }

  /** Every network, running or defined, sorted by name. The caller frees each. */
  listNetworks(): Network[] {
    return this.#listAll({
      operation: "virConnectListAllNetworks",
      what: "networks",
      list: (connection, out) => libvirt().virConnectListAllNetworks(connection, out, 0),
    }, {
      wrap: (pointer) => new Network(pointer),
      release: (pointer) => libvirt().virNetworkFree(pointer),
    });
  }

  /** Node devices (all, or only PCI with `cap: "pci"`), sorted by name. The caller frees each. */
  listNodeDevices(options: ListNodeDevicesOptions = {}): NodeDevice[] {
    const flags = options.cap === "pci" ? VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV : 0;
    return this.#listAll({
      operation: "virConnectListAllNodeDevices",
      what: "node devices",
      list: (connection, out) => libvirt().virConnectListAllNodeDevices(connection, out, flags),
    }, {
      wrap: (pointer) => new NodeDevice(pointer),
      release: (pointer) => libvirt().virNodeDeviceFree(pointer),
    });
  }

  /** Closes the connection. Idempotent. Domains still held keep libvirt's side alive. */
  close(): void {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    finalizer.unregister(this);
    libvirt().virConnectClose(handle);
  }

  /** Same as {@link Connection.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** `Connection { uri: "test:///default", readOnly: false, closed: false }`. */
  [Symbol.for("Deno.customInspect")](): string {
    return `Connection { uri: ${JSON.stringify(this.#uri)}, readOnly: ${this.#readOnly}, closed: ${
      this.#handle === null
    } }`;
  }
}

/**
 * Wraps each element of a `virConnectListAll*` array, then frees the array itself. If wrapping
 * fails midway, the wrapped objects and the remaining raw handles are released before rethrowing.
 */
function adoptArray<T extends { free(): void }>(
  out: BigUint64Array,
  count: number,
  handlers: { wrap(pointer: Deno.PointerObject): T; release(pointer: Deno.PointerObject): void },
): T[] {
  const array = Deno.UnsafePointer.create(out[0] ?? 0n);
  if (array === null) return [];
  const view = new Deno.UnsafePointerView(array);
  const pointers: Deno.PointerObject[] = [];
  for (let i = 0; i < count; i++) {
    const pointer = Deno.UnsafePointer.create(view.getBigUint64(i * 8));
    if (pointer !== null) pointers.push(pointer);
  }
  libc().free(array);
  const wrapped: T[] = [];
  try {
    for (const pointer of pointers) wrapped.push(handlers.wrap(pointer));
  } catch (error) {
    for (const item of wrapped) item.free();
    for (const pointer of pointers.slice(wrapped.length)) handlers.release(pointer);
    throw error;
  }
  return wrapped;
}

/** ` "name"` from the XML's first `<name>`, so define errors say which domain failed. */
function domainNameHint(xml: string): string {
  const match = /<name>\s*([^<]*?)\s*<\/name>/.exec(xml);
  return match?.[1] ? ` "${match[1]}"` : "";
}
