/**
 * The one line a thrown value becomes in messages.
 *
 * @module
 */

/**
 * An error's message, or the thrown value as text (the stack stays out of what users read).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(errorText(new Error("no such domain")), "no such domain");
 * assertEquals(errorText("plain"), "plain");
 * ```
 */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The first `shown` of `items`, then how many more: a message stays one readable line however
 * long the list.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(someOf(["a", "b", "c"], 2), "a, b and 1 more");
 * assertEquals(someOf(["a", "b"], 2), "a, b");
 * ```
 */
export function someOf(items: readonly string[], shown = 4): string {
  return items.length <= shown
    ? items.join(", ")
    : `${items.slice(0, shown).join(", ")} and ${items.length - shown} more`;
}

/** `virErrorNumber`s of a connection libvirt's daemon refused to this user. */
const ACCESS_CODES = new Set([
  45, // VIR_ERR_AUTH_FAILED
  79, // VIR_ERR_AUTH_CANCELLED
  88, // VIR_ERR_ACCESS_DENIED
  94, // VIR_ERR_AUTH_UNAVAILABLE: polkit, with no agent to ask
]);

/**
 * What to do when libvirt refused to open a connection to this user (the `LibvirtError` of
 * `virConnectOpen`, or a cause of `error` that is one), or `null` for any other error: the daemon's
 * socket let only its owner or group in (`Permission denied`), polkit said no or could not be
 * asked (no D-Bus), or the daemon wants a SASL login, which no user or group here gives. Told by
 * the error's fields, not its class: `lib/` does not import `ffi/`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const refused = Object.assign(new Error("Cannot connect"), {
 *   name: "LibvirtError",
 *   code: 38,
 *   operation: "virConnectOpen",
 *   libvirtMessage: "Failed to connect socket to '/run/libvirt/libvirt-sock': Permission denied",
 * });
 * assertEquals(libvirtAccessAdvice(refused)?.startsWith("run as root"), true);
 * assertEquals(libvirtAccessAdvice(new Error("Permission denied")), null);
 * ```
 */
export function libvirtAccessAdvice(error: unknown): string | null {
  for (let current = error, depth = 0; current instanceof Error && depth < 5; depth++) {
    const fields = current as Error & {
      code?: unknown;
      operation?: unknown;
      libvirtMessage?: unknown;
    };
    if (
      current.name === "LibvirtError" && typeof fields.operation === "string" &&
      fields.operation.startsWith("virConnectOpen") && typeof fields.libvirtMessage === "string"
    ) {
      const message = fields.libvirtMessage;
      if (fields.code === 45 && /\bSASL\b/.test(message)) {
        // Neither root nor a group helps: the daemon (often another machine's) wants a login,
        // and virConnectOpen registers no credential callback, so SASL offers no mechanism
        // needing one and libvirt never looks in auth.conf.
        return "libvirt asks for a SASL login (a username and password), which passthrough cannot give: it answers no credential prompt, so libvirt's auth.conf is not read either; connect over ssh with a key instead (qemu+ssh://USER@HOST/system)";
      }
      if (/Unable to get system bus connection/.test(message)) {
        // auth_unix_rw = "polkit" on a host where D-Bus (so polkit) is not running: no group helps.
        return "libvirt asks polkit whether this user may manage it, and polkit cannot be reached: run as root";
      }
      if (
        // The socket's refusal only: `su alice` keeps root's XDG_RUNTIME_DIR, where alice's own
        // libvirt (qemu:///session) "Cannot create user runtime directory": no group helps there.
        (fields.code === 38 &&
          /^Failed to connect socket to '.*': Permission denied$/.test(message)) ||
        ACCESS_CODES.has(fields.code as number)
      ) {
        return `run as root, or as a user libvirt lets manage it (on Debian, a member of the "libvirt" group: adduser USER libvirt, then log in again)`;
      }
    }
    current = current.cause;
  }
  return null;
}
