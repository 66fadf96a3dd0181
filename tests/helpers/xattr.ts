/**
 * Writes a file's extended attribute with libc's `setxattr`, for tests that give a ROM file an
 * SELinux label on a host without SELinux: as root, ext4 and tmpfs keep `security.selinux` like
 * any attribute, and the CLI's reader (`readXattr`) reads it back. Test-only: passthrough never
 * writes labels.
 *
 * @module
 */

/** Sets attribute `name` of `path` to `value` (NUL-terminated, as SELinux writes labels). */
export function setXattr(path: string, name: string, value: string): void {
  const libc = Deno.dlopen("libc.so.6", {
    setxattr: { parameters: ["buffer", "buffer", "buffer", "usize", "i32"], result: "i32" },
  });
  try {
    const text = (s: string) => new TextEncoder().encode(`${s}\0`);
    const bytes = text(value);
    if (libc.symbols.setxattr(text(path), text(name), bytes, BigInt(bytes.length), 0) !== 0) {
      throw new Error(`setxattr ${name} on ${path} failed`);
    }
  } finally {
    libc.close();
  }
}
