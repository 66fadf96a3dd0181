/**
 * libvirt failures as exceptions. Every failed call goes through {@link throwLastError}, which
 * reads libvirt's thread-local last error and resets it; that is only sound because every call in
 * `ffi/` is synchronous on the main thread.
 *
 * @module
 */

import { borrowCString, libvirt } from "./library.ts";
import { VIR_ERROR_LAYOUT } from "./symbols.ts";

/** `VIR_ERR_OK`: no error recorded (the call failed without telling libvirt's error layer). */
export const VIR_ERR_OK = 0;
/** `VIR_ERR_NO_SUPPORT`: the driver does not implement the call (e.g. attach on `test:///`). */
export const VIR_ERR_NO_SUPPORT = 3;
/** `VIR_ERR_XML_DETAIL`: malformed XML. */
export const VIR_ERR_XML_DETAIL = 35;
/** `VIR_ERR_OPERATION_DENIED`: e.g. a write on a read-only connection. */
export const VIR_ERR_OPERATION_DENIED = 29;
/** `VIR_ERR_SYSTEM_ERROR`: an OS call failed (e.g. the daemon socket is missing). */
export const VIR_ERR_SYSTEM_ERROR = 38;
/** `VIR_ERR_NO_DOMAIN`: no domain with that name or UUID. */
export const VIR_ERR_NO_DOMAIN = 42;
/** `VIR_ERR_OPERATION_INVALID`: not valid in the domain's current state. */
export const VIR_ERR_OPERATION_INVALID = 55;
/** `VIR_ERR_NO_NETWORK`: no network with that name (undefined since it was listed). */
export const VIR_ERR_NO_NETWORK = 43;
/** `VIR_ERR_XML_INVALID_SCHEMA`: `VIR_DOMAIN_DEFINE_VALIDATE` rejected the XML. */
export const VIR_ERR_XML_INVALID_SCHEMA = 92;

/** A libvirt call failed. `code` and `domain` are libvirt's `virErrorNumber`/`virErrorDomain`. */
export class LibvirtError extends Error {
  /** Always `"LibvirtError"`. */
  override name = "LibvirtError";
  /** `virErrorNumber` (compare with the `VIR_ERR_*` constants). */
  readonly code: number;
  /** `virErrorDomain`: which part of libvirt reported it. */
  readonly domain: number;
  /** libvirt's own message, as `virsh` would print it. */
  readonly libvirtMessage: string;
  /** The C function that failed (`virDomainLookupByName`). */
  readonly operation: string;

  /** Normally built by {@link lastLibvirtError}; `message` is the whole sentence. */
  constructor(
    message: string,
    fields: { code: number; domain: number; libvirtMessage: string; operation: string },
  ) {
    super(message);
    this.code = fields.code;
    this.domain = fields.domain;
    this.libvirtMessage = fields.libvirtMessage;
    this.operation = fields.operation;
  }
}

/** Which kind of handle was used after `close()`/`free()`. */
export type HandleKind = "connection" | "domain" | "node device" | "network";

/** A handle was used after it was closed or freed: a bug in the caller, never a libvirt error. */
export class ClosedHandleError extends Error {
  /** Always `"ClosedHandleError"`. */
  override name = "ClosedHandleError";
  /** Which kind of handle. */
  readonly kind: HandleKind;
  /** What identified the handle (URI or name). */
  readonly label: string;
  /** The method that was called on it. */
  readonly operation: string;

  /** Builds the message from the handle kind, its label and the method called. */
  constructor(fields: { kind: HandleKind; label: string; operation: string }) {
    const verb = fields.kind === "connection" ? "closed" : "freed";
    super(`Cannot call "${fields.operation}" on ${fields.kind} "${fields.label}": it was ${verb}`);
    this.kind = fields.kind;
    this.label = fields.label;
    this.operation = fields.operation;
  }
}

/** What was being done when a call failed, for the error. */
export interface LibvirtCall {
  /** The C function (`virDomainLookupByName`). */
  operation: string;
  /** What was attempted, sentence case (`Cannot look up domain "x"`). */
  context: string;
}

/**
 * Builds a {@link LibvirtError} from libvirt's last error after a failed call, then resets it.
 * `context` says what was attempted (`Cannot look up domain "x"`); libvirt's message follows a
 * colon.
 *
 * @example
 * ```ts
 * import { lastLibvirtError, VIR_ERR_NO_DOMAIN } from "./errors.ts";
 * import { Connection } from "./connection.ts";
 * using conn = Connection.open("test:///default");
 * try {
 *   conn.lookupDomainByName("missing");
 * } catch (error) {
 *   if ((error as { code?: number }).code !== VIR_ERR_NO_DOMAIN) throw error;
 * }
 * const error = lastLibvirtError({ operation: "virConnectOpen", context: "Nothing pending" });
 * if (error.code !== 0) throw new Error("expected an empty error after a reset");
 * ```
 */
export function lastLibvirtError(call: LibvirtCall): LibvirtError {
  const { operation, context } = call;
  const lib = libvirt();
  const pointer = lib.virGetLastError();
  let code = VIR_ERR_OK;
  let domain = 0;
  let libvirtMessage = "unknown libvirt error";
  if (pointer !== null) {
    const view = new Deno.UnsafePointerView(pointer);
    code = view.getInt32(VIR_ERROR_LAYOUT.code);
    domain = view.getInt32(VIR_ERROR_LAYOUT.domain);
    const message = borrowCString(
      Deno.UnsafePointer.create(view.getBigUint64(VIR_ERROR_LAYOUT.message)),
    );
    if (message !== null && message !== "") libvirtMessage = message;
  }
  lib.virResetLastError();
  return new LibvirtError(`${context}: ${libvirtMessage}`, {
    code,
    domain,
    libvirtMessage,
    operation,
  });
}

/** Throws the last libvirt error when `result` is a NULL pointer, else returns the pointer. */
export function checkPointer(result: Deno.PointerValue, call: LibvirtCall): Deno.PointerObject {
  if (result === null) throw lastLibvirtError(call);
  return result;
}

/** Throws the last libvirt error when an `int` result is negative, else returns it. */
export function checkInt(result: number, call: LibvirtCall): number {
  if (result < 0) throw lastLibvirtError(call);
  return result;
}
