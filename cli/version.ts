/**
 * The version of passthrough: printed by `--version`, written into the start guard's hook so
 * that `hook status` and `doctor` can tell a hook left by another version.
 *
 * @module
 */

/** This passthrough's version (as in `deno.json`). */
export const VERSION = "0.1.0";
