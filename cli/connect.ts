/**
 * The libvirt URI a command opens, checked before libvirt sees it: a URI that would make libvirt
 * run a program it names (`qemu+ext:///system?command=...`, `command=` or `netcat=`) is refused
 * unless `--allow-uri-programs` is given, wherever it came from (`--connect`, a config's
 * `connect:`, `LIBVIRT_DEFAULT_URI`, libvirt.conf's `uri_default` or an alias); a test-driver URI
 * must name a regular file.
 *
 * @module
 */

import { type CliIo, UsageError } from "./context.ts";
import type { ConnectionOpenOptions } from "../ffi/connection.ts";
import { checkUriToOpen, libvirtUriFor } from "../ffi/libvirt_conf.ts";
import { transportProgram } from "../lib/config/uri.ts";

/** The `CONNECT_FLAG` values a command passes on. */
export interface ConnectValues {
  connect?: string | undefined;
  "allow-uri-programs"?: boolean | undefined;
  "libvirt-timeout"?: string | undefined;
  json?: boolean | undefined;
}

/**
 * How long one libvirt call may go unanswered by default, in seconds: twice libvirt's own wait
 * for a busy domain's job lock (30 s, after which that call fails by itself), so a healthy but
 * busy daemon is waited for, and a stopped or deadlocked one is not waited for forever.
 */
const DEFAULT_LIBVIRT_TIMEOUT = 60;

/**
 * The seconds of `--libvirt-timeout` (its default when absent; `0`: no bound), or a
 * {@link UsageError} for anything but a number of seconds.
 */
export function libvirtTimeout(value: string | undefined): number {
  if (value === undefined) return DEFAULT_LIBVIRT_TIMEOUT;
  const seconds = /^\d+(\.\d+)?$/.test(value.trim()) ? Number(value) : NaN;
  // Past a year, the timer's seconds lose nothing, but no one means it: a typo.
  if (!Number.isFinite(seconds) || seconds > 31_536_000) {
    throw new UsageError(
      `--libvirt-timeout takes a number of seconds (0 for no limit), not "${value}"`,
    );
  }
  return seconds;
}

/**
 * `target` with the deadline of `--libvirt-timeout` (`run.value`; see {@link libvirtTimeout}),
 * reported as `--json` reports errors when `run.json`:
 * each libvirt call of the command is bounded by it, except on the test driver, which has no
 * daemon to wait for, and the open of an ssh or ext URI when `run.interactive` (stdin a terminal):
 * that program may be asking the user something, for as long as they take (Ctrl-C ends it). The
 * URI is the one libvirt opens: libvirt.conf's `uri_default` when none is given, an alias resolved.
 */
export function withLibvirtTimeout(
  target: ConnectTarget,
  run: { value: string | undefined; interactive: boolean; json: boolean; command: string },
): ConnectTarget {
  const seconds = libvirtTimeout(run.value);
  if (seconds === 0 || (target.uri !== null && /^test:/i.test(target.uri))) return target;
  // ssh (or an ext program) asks a person at the terminal for a password or an unknown host's
  // key while libvirt opens: ended mid-question, it kept reading the terminal after we were gone.
  const asks = run.interactive && transportProgram(libvirtUriFor(target.uri) ?? "") !== null;
  return {
    uri: target.uri,
    options: {
      ...target.options,
      deadline: {
        seconds,
        // Named as every other error of the command is (`passthrough apply: ...`).
        who: `passthrough ${run.command}`,
        hint: "wait longer with --libvirt-timeout N (seconds)",
        ...(asks ? { afterOpen: true } : {}),
        ...(run.json ? { json: true } : {}),
      },
    },
  };
}

/** The URI a command opens (`null`: libvirt's default) and the options to open it with. */
export interface ConnectTarget {
  uri: string | null;
  options: ConnectionOpenOptions & { allowUriPrograms: boolean };
}

/**
 * The URI the command will open, `uri` as given (from `origin`), else `LIBVIRT_DEFAULT_URI` as
 * `io` reads it (what an embedder of `main` gives, not only the process's own), checked: one that
 * would run a program is refused unless `--allow-uri-programs`, and a test-driver URI naming a
 * FIFO, a directory or a device.
 */
export function checkConnectUri(
  uri: string | undefined,
  origin: string,
  allowed: boolean,
  io: CliIo,
): ConnectTarget {
  const fromEnvironment = io.env("LIBVIRT_DEFAULT_URI");
  const requested = uri ?? (fromEnvironment === "" ? undefined : fromEnvironment);
  const allow = allowed ? null : ALLOW_HINT;
  if (requested === undefined) {
    checkUriToOpen(null, { allow });
    return { uri: null, options: { allowUriPrograms: allowed } };
  }
  const from = uri === undefined ? "LIBVIRT_DEFAULT_URI" : origin;
  checkUriToOpen(requested, { origin: from, allow });
  return { uri: requested, options: { allowUriPrograms: allowed, origin: from } };
}

/** How a refused URI is allowed on the command line. */
const ALLOW_HINT = `Pass --allow-uri-programs if that is meant (see README, "Security notes").`;

/**
 * The URI of `--connect` (else `LIBVIRT_DEFAULT_URI`, else `null`), checked (see above), with
 * the deadline of `--libvirt-timeout` for `command` (`doctor`).
 */
export function connectTarget(values: ConnectValues, io: CliIo, command: string): ConnectTarget {
  const allowed = values["allow-uri-programs"] === true;
  const target = checkConnectUri(values.connect, "--connect", allowed, io);
  return withLibvirtTimeout(target, {
    value: values["libvirt-timeout"],
    interactive: io.interactive,
    json: values.json === true,
    command,
  });
}
