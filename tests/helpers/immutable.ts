/**
 * `chattr +i` for tests of files the system refuses to change whatever their owner and mode, and
 * whether it works here at all: it needs root and a file system that keeps the flag. A test that
 * cannot set it is ignored, not passed with nothing asserted.
 *
 * @module
 */

/** `chattr` `flags` on `path`; false where the file system or the user cannot. */
export function chattr(flags: string, path: string): boolean {
  try {
    return new Deno.Command("chattr", { args: [flags, path], stderr: "null" }).outputSync().success;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

let probed: string | null | undefined;

/**
 * Why `chattr +i` cannot make a file immutable in the temporary directory tests use, or `null`
 * when it can. Synchronous, for `Deno.test`'s `ignore:` option; probed once per process.
 */
export function immutableUnavailable(): string | null {
  if (probed !== undefined) return probed;
  const file = Deno.makeTempFileSync({ prefix: "passthrough-chattr-probe-" });
  try {
    probed = chattr("+i", file)
      ? null
      : `chattr +i does not work in ${
        Deno.env.get("TMPDIR") ?? "/tmp"
      } (needs root, and a file system that keeps the flag)`;
  } finally {
    chattr("-i", file);
    Deno.removeSync(file);
  }
  return probed;
}
