/**
 * A {@link SysfsReader} over libc's `openat`/`read`/`pread`/`close`/`readlinkat`/`opendir`/
 * `readdir`/`closedir`/`statx`, bound with `Deno.dlopen("libc.so.6")`. Deno 2.x refuses
 * `Deno.readFile` under `/sys` and `/proc` without `--allow-all` (denoland/deno#27564); going
 * through libc needs only `--allow-ffi`, so the documented permission set can read the real host.
 * Also `getxattr` (a file's SELinux label) and `kill` (`Deno.kill` needs an unrestricted
 * `--allow-run`).
 *
 * @module
 */

import type { DirectoryEntry, EntryKind, SysfsFile, SysfsReader } from "../lib/host/sysfs.ts";
import { clearErrno, errno, libc, LITTLE_ENDIAN } from "./libc.ts";

const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
// Opening a FIFO planted in a captured tree would block until a writer appears; non-blocking,
// it opens at once and reads as empty (or fails), and regular and sysfs files ignore the flag.
const O_NONBLOCK = 0o4000;
/** How every file is opened. */
const FILE_FLAGS = O_RDONLY | O_NONBLOCK | O_CLOEXEC;
/** `dirfd` meaning "relative to the working directory" (absolute paths ignore it anyway). */
const AT_FDCWD = -100;
/** `struct dirent` on x86_64/aarch64 glibc: d_ino@0, d_off@8, d_reclen@16, d_type@18, d_name@19. */
const DIRENT_NAME_OFFSET = 19;
const DIRENT_TYPE_OFFSET = 18;
/**
 * `statx` (glibc 2.28): its `struct statx` is the same on every architecture, unlike `struct
 * stat`. `AT_STATX_DONT_SYNC`: a network file system answers from its cache, never waits on its
 * server. `STATX_TYPE`: the mode's file type is all that is asked; the device number always comes.
 */
const AT_STATX_DONT_SYNC = 0x4000;
const STATX_TYPE = 0x1;
const STATX_SIZE = 256;
/** `stx_mode` (u16), `stx_rdev_major` and `stx_rdev_minor` (u32) in `struct statx`. */
const STATX_MODE_OFFSET = 28;
const STATX_RDEV_MAJOR_OFFSET = 128;
const STATX_RDEV_MINOR_OFFSET = 132;
/** `STATX_SIZE`, the mask bit that asks for `stx_size` (u64), and where that lies. */
const STATX_SIZE_BIT = 0x200;
const STATX_SIZE_OFFSET = 40;
/** `S_IFMT`, `S_IFCHR` and `S_IFREG`: the file type bits of a mode, and two types. */
const S_IFMT = 0o170000;
const S_IFCHR = 0o020000;
const S_IFREG = 0o100000;
/** `d_type` values (`DT_DIR`, `DT_REG`, `DT_LNK`); `DT_UNKNOWN` (0) and the rest read as "other". */
const DIRENT_KINDS: Record<number, EntryKind> = { 4: "directory", 8: "file", 10: "symlink" };
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
const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  3: "ESRCH",
  11: "EAGAIN: nothing to read, not a regular file",
  13: "EACCES",
  24: "EMFILE",
  40: "ELOOP: a loop of symbolic links",
};

/** Raised when libc reports a failure that is not "missing" (e.g. `EACCES`). */
export class LibcFsError extends Error {
  /** The error's name. */
  override name = "LibcFsError";
  /** The path that failed. */
  readonly path: string;
  /** The C `errno` (`13` is `EACCES`); the message names the common ones. */
  readonly errno: number;
  /** Builds the error; `operation` is what failed (`open`, `read`, `read link`). */
  constructor(operation: string, path: string, errno: number) {
    super(`Cannot ${operation} "${path}": ${ERRNO_NAMES[errno] ?? `errno ${errno}`}`);
    this.path = path;
    this.errno = errno;
  }
}

/**
 * A `SysfsReader` (exported by `lib/mod.ts`) that reads through libc. Needs `--allow-ffi` only.
 * With `fewCalls`, for a process that reads a few dozen files in its whole life (the start hook),
 * libc is bound without compiling fast-call trampolines, which would cost more than the reads.
 *
 * @example
 * ```ts
 * import { assertOk } from "../tests/helpers/assert.ts";
 * const reader = libcSysfsReader();
 * assertOk(reader.listDir("/sys/bus/pci/devices") !== null);
 * ```
 */
export function libcSysfsReader(options: { fewCalls?: boolean } = {}): SysfsReader {
  return libcReaderOver(libc(options.fewCalls));
}

/**
 * {@link libcSysfsReader} calling the functions of `lib`, not of the package's exports: a test
 * injects there a failure the kernel gives too rarely to provoke (a listing that fails midway).
 */
export function libcReaderOver(lib: ReturnType<typeof libc>): SysfsReader {
  const reader = new LibcReader(lib);
  // A plain object, as every reader is: a caller may spread it to replace one method.
  return {
    listDir: (path) => reader.listDir(path),
    listEntries: (path) => reader.listEntries(path),
    readText: (path) => reader.readText(path),
    readBytes: (path, maxBytes) => reader.readBytes(path, maxBytes),
    readLink: (path) => reader.readLink(path),
    deviceNumber: (path) => reader.deviceNumber(path),
    openFile: (path) => reader.openFile(path),
  };
}

/** How often a call that failed with a {@link TRANSIENT_ERRNO} is tried again. */
const RETRIES = 8;

/**
 * The reader behind {@link libcSysfsReader}: one reused buffer for file contents, one for link
 * targets and one for NUL-terminated paths, and the errno of the last failed call.
 */
class LibcReader {
  readonly #lib: ReturnType<typeof libc>;
  readonly #encoder = new TextEncoder();
  readonly #decoder = new TextDecoder();
  #buffer = new Uint8Array(16384);
  readonly #linkBuffer = new Uint8Array(4096);
  #pathBuffer = new Uint8Array(4096);
  // errno is read after the call returns; a signal handler running in between (Deno's SIGCHLD
  // handling while lspci runs) can leave EAGAIN or EINTR there. Those never mean "missing" for
  // open/read/readlink on files, so the call is simply repeated.
  #lastErrno = 0;

  constructor(lib: ReturnType<typeof libc>) {
    this.#lib = lib;
  }

  listDir(path: string): string[] | null {
    const entries: string[] = [];
    return this.#readDirectory(path, (name) => entries.push(name)) ? entries : null;
  }

  listEntries(path: string): DirectoryEntry[] | null {
    const entries: DirectoryEntry[] = [];
    const read = this.#readDirectory(path, (name, type) => {
      entries.push({ name, kind: DIRENT_KINDS[type] ?? "other" });
    });
    return read ? entries : null;
  }

  readText(path: string): string | null {
    const n = this.#readFile(path, 65536);
    return n === null ? null : this.#decoder.decode(this.#buffer.subarray(0, n));
  }

  readBytes(path: string, maxBytes: number): Uint8Array | null {
    const n = this.#readFile(path, maxBytes);
    return n === null ? null : this.#buffer.slice(0, n);
  }

  readLink(path: string): string | null {
    const size = BigInt(this.#linkBuffer.length);
    for (let attempt = 0;; attempt++) {
      const n = Number(this.#lib.readlinkat(AT_FDCWD, this.#cString(path), this.#linkBuffer, size));
      if (n >= 0) return this.#decoder.decode(this.#linkBuffer.subarray(0, n));
      if (!this.#retry(attempt)) return this.#fail("read link", path);
    }
  }

  deviceNumber(path: string): string | null {
    const info = new Uint8Array(STATX_SIZE);
    for (let attempt = 0;; attempt++) {
      const path0 = this.#cString(path);
      if (this.#lib.statx(AT_FDCWD, path0, AT_STATX_DONT_SYNC, STATX_TYPE, info) === 0) break;
      if (!this.#retry(attempt)) return this.#fail("stat", path);
    }
    const view = new DataView(info.buffer);
    if ((view.getUint16(STATX_MODE_OFFSET, LITTLE_ENDIAN) & S_IFMT) !== S_IFCHR) return null;
    const major = view.getUint32(STATX_RDEV_MAJOR_OFFSET, LITTLE_ENDIAN);
    return `${major}:${view.getUint32(STATX_RDEV_MINOR_OFFSET, LITTLE_ENDIAN)}`;
  }

  openFile(path: string): SysfsFile | null {
    const fd = this.#openFd(path);
    return fd < 0 ? this.#fail("open", path) : new LibcFile(path, fd, this);
  }

  /** `pread` into the shared buffer, for {@link LibcFile}; `buffer.slice` of what was read. */
  readAt(file: { path: string; fd: number }, offset: number, length: number): Uint8Array {
    if (this.#buffer.length < length) this.#buffer = new Uint8Array(length);
    for (let attempt = 0;; attempt++) {
      const n = Number(this.#lib.pread(file.fd, this.#buffer, BigInt(length), BigInt(offset)));
      if (n >= 0) return this.#buffer.slice(0, n);
      if (!this.#retry(attempt)) break;
    }
    // A register the kernel will not read reads as absent, like a short read.
    if (MISSING_ERRNO.has(this.#lastErrno)) return new Uint8Array(0);
    throw new LibcFsError("read", file.path, this.#lastErrno);
  }

  /** Closes a file of {@link openFile}. */
  close(fd: number): void {
    this.#lib.close(fd);
  }

  /** Records errno after a failed call; whether the call is worth repeating. */
  #retry(attempt: number): boolean {
    this.#lastErrno = errno();
    return TRANSIENT_ERRNO.has(this.#lastErrno) && attempt < RETRIES;
  }

  /** `null` when the last failure means "missing"; otherwise throws. */
  #fail(operation: string, path: string): null {
    if (MISSING_ERRNO.has(this.#lastErrno)) return null;
    throw new LibcFsError(operation, path, this.#lastErrno);
  }

  /** `path` NUL-terminated in the reused path buffer. */
  #cString(path: string): Uint8Array {
    refuseNul(path);
    if (this.#pathBuffer.length < path.length * 3 + 1) {
      this.#pathBuffer = new Uint8Array(path.length * 3 + 1);
    }
    const { written } = this.#encoder.encodeInto(path, this.#pathBuffer);
    this.#pathBuffer[written] = 0;
    return this.#pathBuffer;
  }

  #openFd(path: string): number {
    for (let attempt = 0;; attempt++) {
      const fd = this.#lib.openat(AT_FDCWD, this.#cString(path), FILE_FLAGS);
      if (fd >= 0 || !this.#retry(attempt)) return fd;
    }
  }

  /** The file's length in the buffer, or `null` when it is missing. */
  #readFile(path: string, maxBytes: number): number | null {
    const fd = this.#openFd(path);
    if (fd < 0) return this.#fail("open", path);
    const n = this.#readFd(fd, maxBytes, path.startsWith("/proc/"));
    return n < 0 ? this.#fail("read", path) : n;
  }

  /**
   * Reads up to `maxBytes` into the buffer and closes `fd`: the length, or -1 (see the errno). A
   * short read is the end of a sysfs attribute or a regular file, which saves one syscall per
   * file; /proc files are read until 0 as usual, because seq_file hands them out in pieces. The
   * buffer grows as the file fills it, not to `maxBytes` at once: a caller that reads a table
   * whole asks for a cap of megabytes, and the table is most often a few KiB.
   */
  #readFd(fd: number, maxBytes: number, untilZero: boolean): number {
    try {
      let length = 0;
      // A FIFO whose writer never writes answers EAGAIN forever: retries are counted.
      let retries = 0;
      while (length < maxBytes) {
        if (length === this.#buffer.length) this.#grow(Math.min(maxBytes, length * 4));
        const want = Math.min(maxBytes, this.#buffer.length) - length;
        const into = length === 0 ? this.#buffer : this.#buffer.subarray(length);
        const n = Number(this.#lib.read(fd, into, BigInt(want)));
        if (n < 0) {
          if (this.#retry(retries++)) continue;
          return -1;
        }
        if (n === 0) break;
        length += n;
        if (n < want && !untilZero) break;
      }
      return length;
    } finally {
      this.#lib.close(fd);
    }
  }

  /** The buffer made `size` bytes long, what it holds kept. */
  #grow(size: number): void {
    const bigger = new Uint8Array(size);
    bigger.set(this.#buffer);
    this.#buffer = bigger;
  }

  /**
   * Calls `each` for each entry of a directory but `.` and `..`; `false` when it is missing.
   * Throws {@link LibcFsError} when the listing fails midway, whatever the errno: `readdir`
   * returns NULL at the end and on a failure alike, and a listing cut short (no holders, a group
   * of one) would read as all there is.
   */
  #readDirectory(path: string, each: (name: string, type: number) => void): boolean {
    let dir = this.#lib.opendir(this.#cString(path));
    for (let attempt = 0; dir === null && this.#retry(attempt); attempt++) {
      dir = this.#lib.opendir(this.#cString(path));
    }
    if (dir === null) return this.#fail("open directory", path) ?? false;
    try {
      for (;;) {
        // Only errno tells a failure from the end, and the end leaves it as it was.
        clearErrno();
        const entry = this.#lib.readdir(dir);
        if (entry === null) {
          const code = errno();
          if (code !== 0) throw new LibcFsError("list directory", path, code);
          break;
        }
        const view = new Deno.UnsafePointerView(entry);
        const name = view.getCString(DIRENT_NAME_OFFSET);
        if (name !== "." && name !== "..") each(name, view.getUint8(DIRENT_TYPE_OFFSET));
      }
    } finally {
      this.#lib.closedir(dir);
    }
    return true;
  }
}

/** An open file read at offsets (`pread`), through its reader's buffer. */
class LibcFile implements SysfsFile {
  #open = true;
  constructor(readonly path: string, readonly fd: number, readonly reader: LibcReader) {}
  readAt(offset: number, length: number): Uint8Array {
    if (!this.#open) throw new Error(`Cannot read "${this.path}": the file was closed`);
    return this.reader.readAt(this, offset, length);
  }
  [Symbol.dispose](): void {
    if (this.#open) this.reader.close(this.fd);
    this.#open = false;
  }
}

/**
 * What `path` is, links followed, asked through libc (with `--allow-ffi` alone, where Deno's own
 * `stat` needs `--allow-read`): a regular file with its size, `"other"` (a directory, FIFO,
 * device, socket), or `"missing"` (also when this user may not look). `path` may be given as
 * bytes, for a name no UTF-8 text spells (a URI's `%FF`).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * assertEquals(fileKind("/dev/null"), { kind: "other" });
 * assertEquals(fileKind("/nonexistent/passthrough"), { kind: "missing" });
 * ```
 */
export function fileKind(
  path: string | Uint8Array,
): { kind: "file"; size: number } | { kind: "other" } | { kind: "missing" } {
  const info = new Uint8Array(STATX_SIZE);
  const mask = STATX_TYPE | STATX_SIZE_BIT;
  if (libc().statx(AT_FDCWD, cPath(path), AT_STATX_DONT_SYNC, mask, info) !== 0) {
    return { kind: "missing" };
  }
  const view = new DataView(info.buffer);
  if ((view.getUint16(STATX_MODE_OFFSET, LITTLE_ENDIAN) & S_IFMT) !== S_IFREG) {
    return { kind: "other" };
  }
  return { kind: "file", size: Number(view.getBigUint64(STATX_SIZE_OFFSET, LITTLE_ENDIAN)) };
}

/**
 * The text of `path` when it is a regular file (links followed) of at most `maxBytes`, else
 * `null`: missing, of another kind (a FIFO or device is never read, so never blocks) or larger.
 * Through libc, as a C library reads its config, so with `--allow-ffi` alone: Deno's own calls
 * would need `--allow-read`, and a check that took their refusal for no file would pass.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * assertEquals(readRegularFile("/dev/null", 10), null);
 * assertEquals(readRegularFile("/nonexistent/passthrough", 10), null);
 * ```
 */
export function readRegularFile(path: string, maxBytes: number): string | null {
  const found = fileKind(path);
  if (found.kind !== "file" || found.size > maxBytes) return null;
  // Opened without blocking: a FIFO put in its place since reads as empty.
  const bytes = new LibcReader(libc()).readBytes(path, found.size);
  return bytes === null ? null : new TextDecoder().decode(bytes);
}

/** A path as the kernel resolves it: see {@link resolvePath}. */
export interface ResolvedPath {
  /** The canonical absolute path: no `.`, `..`, repeated slashes or symbolic links. */
  path: string;
  /** Whether it lies on a sysfs file system (the kernel's own, wherever it is mounted). */
  sysfs: boolean;
}

/** `PATH_MAX`: the buffer `realpath` writes into. */
const PATH_MAX = 4096;
/** `SYSFS_MAGIC` from `<linux/magic.h>`: `statfs`'s `f_type` of a sysfs mount. */
const SYSFS_MAGIC = 0x62656572;

/**
 * Resolves `path` with libc's `realpath` and asks `statfs` what file system it lies on; `null`
 * when it does not exist. Goes through libc because Deno refuses to resolve or stat paths under
 * `/sys` without `--allow-all`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * assertEquals(resolvePath("/sys/bus/.."), { path: "/sys", sysfs: true });
 * assertEquals(resolvePath("/nonexistent/passthrough"), null);
 * ```
 */
export function resolvePath(path: string): ResolvedPath | null {
  const lib = libc();
  const name = cPath(path);
  const resolved = new Uint8Array(PATH_MAX);
  if (lib.realpath(name, resolved) === null) return null;
  const end = resolved.indexOf(0);
  const canonical = new TextDecoder().decode(resolved.subarray(0, end < 0 ? PATH_MAX : end));
  // struct statfs starts with f_type (a long) on every 64-bit glibc target; the rest is unused.
  const info = new BigInt64Array(16);
  const ok = lib.statfs(resolved, new Uint8Array(info.buffer)) === 0;
  return { path: canonical, sysfs: ok && info[0] === BigInt(SYSFS_MAGIC) };
}

/** NUL-terminated UTF-8 (or the bytes as given), for the calls below (not the reader's hot path). */
function cPath(text: string | Uint8Array): Uint8Array<ArrayBuffer> {
  if (typeof text === "string") {
    refuseNul(text);
    return new TextEncoder().encode(`${text}\0`);
  }
  if (text.includes(0)) refuseNul(new TextDecoder().decode(text));
  const bytes = new Uint8Array(text.length + 1);
  bytes.set(text);
  return bytes;
}

/**
 * Throws `TypeError` for a path holding a NUL: C would end it there and read another file (a
 * root `/x\0/y` read as `/x`), where Deno's own file API refuses it.
 */
function refuseNul(path: string): void {
  if (path.includes("\0")) {
    throw new TypeError(`Path contains a NUL character: "${path.replaceAll("\0", "\\0")}"`);
  }
}

/** `ENOTSUP`: the file system keeps no extended attributes. */
const ENOTSUP = 95;

/**
 * The extended attribute `name` of `path` as text without its trailing NUL (an SELinux label
 * from `security.selinux`), or `null` when the file or attribute is missing or the file system
 * has none. Needs `--allow-ffi` only.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * assertEquals(readXattr("/nonexistent/file", "security.selinux"), null);
 * ```
 */
export function readXattr(path: string, name: string): string | null {
  const lib = libc();
  const value = new Uint8Array(4096);
  const n = Number(lib.getxattr(cPath(path), cPath(name), value, BigInt(value.length)));
  if (n >= 0) return new TextDecoder().decode(value.subarray(0, n)).replace(/\0+$/, "");
  const code = errno();
  if (MISSING_ERRNO.has(code) || code === ENOTSUP) return null;
  throw new LibcFsError("read extended attribute of", path, code);
}

/**
 * Sends signal number `signal` to process `pid` with libc's `kill`: `Deno.kill` needs an
 * unrestricted `--allow-run`, which the CLI's permission set does not grant. Throws
 * {@link LibcFsError} (`ESRCH`, `EPERM`) when it fails.
 *
 * @example
 * ```ts
 * import { assertThrows } from "../tests/helpers/assert.ts";
 * assertThrows(() => signalProcess(1, 0), RangeError); // never init, nor a process group
 * ```
 */
export function signalProcess(pid: number, signal: number): void {
  if (!Number.isSafeInteger(pid) || pid <= 1) throw new RangeError(`Not a process id: ${pid}`);
  if (libc().kill(pid, signal) !== 0) throw new LibcFsError("signal process", String(pid), errno());
}
