/**
 * The libvirt URI a command opens, checked before libvirt sees it: a URI that would make libvirt
 * run a program it names (`qemu+ext:///system?command=...`, `command=` or `netcat=`) is refused
 * unless `--allow-uri-programs` is given, wherever it came from (`--connect`, a config's
 * `connect:`, `LIBVIRT_DEFAULT_URI`).
 *
 * @module
 */

import type { CliIo } from "./context.ts";
import { UriProgramError, uriProgramReason } from "../ffi/uri_check.ts";

/** The `CONNECT_FLAG` values a command passes on. */
export interface ConnectValues {
  connect?: string | undefined;
  "allow-uri-programs"?: boolean | undefined;
}

/**
 * Refuses the URI the command will open, unless `--allow-uri-programs`: `uri` as given (from
 * `origin`), else `LIBVIRT_DEFAULT_URI`. A URI that would run no program passes.
 */
export function checkConnectUri(
  uri: string | undefined,
  origin: string,
  allowed: boolean,
  io: CliIo,
): void {
  if (allowed) return;
  const fromEnvironment = io.env("LIBVIRT_DEFAULT_URI");
  const requested = uri ?? (fromEnvironment === "" ? undefined : fromEnvironment);
  if (requested === undefined) return;
  const reason = uriProgramReason(requested);
  if (reason === null) return;
  throw new UriProgramError(requested, reason, {
    origin: uri === undefined ? "LIBVIRT_DEFAULT_URI" : origin,
    allow: `Pass --allow-uri-programs if that is meant (see README, "Security notes").`,
  });
}

/** The URI of `--connect` (or `null` for the default), checked, with the open options to use. */
export function connectTarget(
  values: ConnectValues,
  io: CliIo,
): { uri: string | null; options: { allowUriPrograms: boolean } } {
  const allowed = values["allow-uri-programs"] === true;
  checkConnectUri(values.connect, "--connect", allowed, io);
  return { uri: values.connect ?? null, options: { allowUriPrograms: allowed } };
}
