/**
 * A {@link SysfsReader} over libc's `openat`/`read`/`close`/`readlinkat`/`opendir`/`readdir`/
 * `closedir`, bound with `Deno.dlopen("libc.so.6")`. `openDir` opens a device directory once
 * (`O_PATH`) and reads its attributes relative to it, so each file costs no path walk. Deno 2.x refuses `Deno.readFile` under
 * `/sys` and `/proc` without `--allow-all` (denoland/deno#27564); going through libc needs only
 * `--allow-ffi`, so the documented permission set can read the real host.
 *
 * @module
 */

import type { SysfsDirReader, SysfsReader } from "../lib/sysfs.ts";

const SYMBOLS = {
  // int openat(int dirfd, const char *pathname, int flags);
  openat: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  // ssize_t read(int fd, void *buf, size_t count);
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // int close(int fd);
  close: { parameters: ["i32"], result: "i32" },
  // ssize_t readlinkat(int dirfd, const char *pathname, char *buf, size_t bufsiz);
  readlinkat: { parameters: ["i32", "buffer", "buffer", "usize"], result: "isize" },
  // DIR *opendir(const char *name);
  opendir: { parameters: ["buffer"], result: "pointer" },
  // struct dirent *readdir(DIR *dirp);
  readdir: { parameters: ["pointer"], result: "pointer" },
  // int closedir(DIR *dirp);
  closedir: { parameters: ["pointer"], result: "i32" },
  // int *__errno_location(void);
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
const O_DIRECTORY = 0o200000;
// Opening a FIFO planted in a captured tree would block until a writer appears; non-blocking,
// it opens at once and reads as empty (or fails), and regular and sysfs files ignore the flag.
const O_NONBLOCK = 0o4000;
/** Opens a directory only as a lookup anchor: no read permission needed, no access time. */
const O_PATH = 0o10000000;
/** `dirfd` meaning "relative to the working directory" (absolute paths ignore it anyway). */
const AT_FDCWD = -100;
/** `struct dirent` on x86_64/aarch64 glibc: d_ino@0, d_off@8, d_reclen@16, d_type@18, d_name@19. */
const DIRENT_NAME_OFFSET = 19;
/** errno values that mean "not there" for an optional sysfs attribute. */
const MISSING_ERRNO = new Set([
  2, /* ENOENT */
  6, /* ENXIO */
  19, /* ENODEV */
  20, /* ENOTDIR */
  21, /* EISDIR */
  22, /* EINVAL: readlink on a non-link */
  61, /* ENODATA */
  5, /* EIO: some sysfs attributes fail reads on devices that lack them */
]);
/** errno values a signal handler can leave behind: retry. */
const TRANSIENT_ERRNO = new Set([4, /* EINTR */ 11 /* EAGAIN */]);
const ERRNO_NAMES: Record<number, string> = { 1: "EPERM", 13: "EACCES", 24: "EMFILE" };

let libc: Libc | null = null;

/** Opens libc lazily (so importing this module needs no permission) and memoises it. */
function load(): Libc {
  libc ??= Deno.dlopen("libc.so.6", SYMBOLS).symbols;
  return libc;
}

/** Raised when libc reports a failure that is not "missing" (e.g. `EACCES`). */
export class LibcFsError extends Error {
  override name = "LibcFsError";
  /** The path that failed. */
  readonly path: string;
  /** The C `errno`. */
  readonly errno: number;
  constructor(operation: string, path: string, errno: number) {
    super(`Cannot ${operation} "${path}": ${ERRNO_NAMES[errno] ?? `errno ${errno}`}`);
    this.path = path;
    this.errno = errno;
  }
}

/**
 * A {@link SysfsReader} that reads through libc. Needs `--allow-ffi` only.
 *
 * @example
 * ```ts
 * import { assertOk } from "../tests/helpers/assert.ts";
 * const reader = libcSysfsReader();
 * assertOk(reader.listDir("/sys/bus/pci/devices") !== null);
 * ```
 */
export function libcSysfsReader(): SysfsReader {
  const lib = load();
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  let buffer = new Uint8Array(16384);
  const linkBuffer = new Uint8Array(4096);
  let pathBuffer = new Uint8Array(4096);
  // One reused buffer for NUL-terminated paths: discovery makes ~10 calls per device.
  const cString = (path: string) => {
    if (pathBuffer.length < path.length * 3 + 1) pathBuffer = new Uint8Array(path.length * 3 + 1);
    const { written } = encoder.encodeInto(path, pathBuffer);
    pathBuffer[written] = 0;
    return pathBuffer;
  };
  const errno = () => {
    const pointer = lib.__errno_location();
    return pointer === null ? 0 : new Deno.UnsafePointerView(pointer).getInt32(0);
  };
  // errno is read after the call returns; a signal handler running in between (Deno's
  // SIGCHLD handling while lspci runs) can leave EAGAIN or EINTR there. Those never mean
  // "missing" for open/read/readlink on files, so the call is simply repeated.
  let lastErrno = 0;
  const retrying = (call: () => number | bigint): number => {
    for (let attempt = 0;; attempt++) {
      const result = Number(call());
      if (result >= 0) return result;
      lastErrno = errno();
      if (!TRANSIENT_ERRNO.has(lastErrno) || attempt >= 8) return result;
    }
  };
  const fail = (operation: string, path: string): null => {
    const code = lastErrno;
    if (MISSING_ERRNO.has(code)) return null;
    throw new LibcFsError(operation, path, code);
  };
  // `name` is resolved against `dirfd`; `path` is the full path for messages.
  const readAll = (
    at: { dirfd: number; name: string; path: string },
    maxBytes: number,
  ): Uint8Array | null => {
    const { dirfd, name, path } = at;
    const fd = retrying(() => lib.openat(dirfd, cString(name), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (fd < 0) return fail("open", path);
    // A short read is the end of a sysfs attribute or a regular file, which saves one syscall
    // per file (they cost microseconds in VMs); /proc files are read until 0 as usual, because
    // seq_file hands them out in pieces.
    const untilZero = path.startsWith("/proc/");
    try {
      if (buffer.length < maxBytes) buffer = new Uint8Array(maxBytes);
      let length = 0;
      while (length < maxBytes) {
        const want = maxBytes - length;
        const n = retrying(() => lib.read(fd, buffer.subarray(length), BigInt(want)));
        if (n < 0) return fail("read", path);
        if (n === 0) break;
        length += n;
        if (n < want && !untilZero) break;
      }
      return buffer.slice(0, length);
    } finally {
      lib.close(fd);
    }
  };
  const readLinkAt = (at: { dirfd: number; name: string; path: string }): string | null => {
    const n = retrying(() =>
      lib.readlinkat(at.dirfd, cString(at.name), linkBuffer, BigInt(linkBuffer.length))
    );
    if (n < 0) return fail("read link", at.path);
    return decoder.decode(linkBuffer.subarray(0, n));
  };
  const absolute = (path: string) => ({ dirfd: AT_FDCWD, name: path, path });
  return {
    listDir(path) {
      let dir = lib.opendir(cString(path));
      for (let attempt = 0; dir === null && attempt < 8; attempt++) {
        lastErrno = errno();
        if (!TRANSIENT_ERRNO.has(lastErrno)) break;
        dir = lib.opendir(cString(path));
      }
      if (dir === null) return fail("open directory", path);
      const names: string[] = [];
      try {
        for (;;) {
          const entry = lib.readdir(dir);
          if (entry === null) break;
          const name = new Deno.UnsafePointerView(entry).getCString(DIRENT_NAME_OFFSET);
          if (name !== "." && name !== "..") names.push(name);
        }
      } finally {
        lib.closedir(dir);
      }
      return names;
    },
    readText(path) {
      const bytes = readAll(absolute(path), 65536);
      return bytes === null ? null : decoder.decode(bytes);
    },
    readBytes(path, maxBytes) {
      return readAll(absolute(path), maxBytes);
    },
    readLink(path) {
      return readLinkAt(absolute(path));
    },
    openDir(path): SysfsDirReader {
      // One lookup of the directory (on the real /sys, through the bus/pci/devices symlink and
      // the device's deep path) instead of one per attribute: path walks are most of the cost.
      const dirfd = retrying(() =>
        lib.openat(AT_FDCWD, cString(path), O_PATH | O_DIRECTORY | O_CLOEXEC)
      );
      // A missing directory reads as empty, like each of its attributes would.
      if (dirfd < 0) fail("open directory", path);
      let closed = false;
      const at = (name: string) => {
        if (closed) throw new Error(`Cannot read "${path}/${name}": the directory was closed`);
        return { dirfd, name, path: `${path}/${name}` };
      };
      return {
        readText(name) {
          const bytes = dirfd < 0 ? null : readAll(at(name), 65536);
          return bytes === null ? null : decoder.decode(bytes);
        },
        readBytes(name, maxBytes) {
          return dirfd < 0 ? null : readAll(at(name), maxBytes);
        },
        readLink(name) {
          return dirfd < 0 ? null : readLinkAt(at(name));
        },
        [Symbol.dispose]() {
          if (dirfd >= 0 && !closed) lib.close(dirfd);
          closed = true;
        },
      };
    },
  };
}
