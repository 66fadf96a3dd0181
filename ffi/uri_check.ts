/**
 * Which libvirt URIs make libvirt run a program its author chose. libvirt's remote driver starts
 * programs for some transports and parameters (docs/uri.rst in libvirt): the `ext` transport
 * runs its `command` to carry the protocol; the `ssh` transport runs its `command` in place of
 * `ssh`; `netcat` names the program the `ssh` transports run on the remote host. Those run
 * outside Deno's `--allow-run`, so {@link Connection.open} refuses them unless allowed. Plain
 * `+ssh` (the system `ssh`), `+libssh`, `+libssh2`, `+tls`, `+tcp`, `+unix` and local URIs run
 * nothing chosen by the URI.
 *
 * @module
 */

import { uriParameters } from "../lib/config/uri.ts";

/** The remote driver's parameters that name a program to run (matched case-insensitively). */
const PROGRAM_PARAMETERS: Readonly<Record<string, string>> = {
  command: "names the program libvirt runs to reach the daemon (the ext tunnel, or ssh's binary)",
  netcat: "names the program libvirt runs on the remote host",
};

/**
 * Why libvirt would run a program `uri` names, or `null` when it would not. The parameters are
 * read as libvirt reads them (with the config module's `uriParameters`), and the value named is
 * the one libvirt runs, the last of its name; a `name` parameter, the URI the remote side opens,
 * is checked the same way.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * assertEquals(uriProgramReason("qemu+ssh://root@hv1/system"), null);
 * assertEquals(
 *   uriProgramReason("qemu+ext:///system?command=/tmp/x"),
 *   'its "ext" transport runs the program its "command" parameter names ("/tmp/x")',
 * );
 * ```
 */
export function uriProgramReason(uri: string, depth = 0): string | null {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(uri)?.[1] ?? "";
  const plus = scheme.indexOf("+");
  const transport = plus < 0 ? "" : scheme.slice(plus + 1).toLowerCase();
  const read = uriParameters(uri);
  // Erring toward refusing: the parameters a split at every `;` finds are checked too, so a
  // program hidden in another parameter's value (`?keyfile=/k;command=/x&no_tty=1`) is refused.
  const parameters = [...read, ...uriParameters(uri.replaceAll(";", "&"))];
  const valueOf = (name: string) =>
    (read.findLast((p) => p.name === name) ?? parameters.find((p) => p.name === name))?.value;
  if (transport === "ext") {
    const command = valueOf("command");
    return `its "ext" transport runs the program its "command" parameter names${
      command === undefined ? "" : ` (${JSON.stringify(command)})`
    }`;
  }
  for (const { name, value } of parameters) {
    const why = PROGRAM_PARAMETERS[name];
    if (why !== undefined) {
      return `its "${name}" parameter ${why} (${JSON.stringify(valueOf(name))})`;
    }
    if (name === "name" && depth < 4) {
      const inner = uriProgramReason(value, depth + 1);
      if (inner !== null) return `its "name" parameter is a URI that would run a program: ${inner}`;
    }
  }
  return null;
}

/** Raised for a libvirt URI that would run a program, when that is not allowed. */
export class UriProgramError extends Error {
  /** The error's name. */
  override name = "UriProgramError";
  /** The URI refused. */
  readonly uri: string;
  /** Why it would run a program (see {@link uriProgramReason}). */
  readonly reason: string;
  /**
   * Builds the error; `origin` says where the URI came from (`--connect`, `LIBVIRT_DEFAULT_URI`),
   * `allow` how to allow it anyway.
   */
  constructor(uri: string, reason: string, options: { origin?: string; allow: string }) {
    super(
      `Refusing libvirt URI ${JSON.stringify(uri)}${
        options.origin === undefined ? "" : ` (${options.origin})`
      }: ${reason}, and libvirt runs it outside Deno's permissions. ${options.allow}`,
    );
    this.uri = uri;
    this.reason = reason;
  }
}
