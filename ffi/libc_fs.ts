/**
 * A {@link SysfsReader} over libc's `openat`/`read`/`close`/`readlinkat`/`opendir`/`readdir`/
 * `closedir`, bound with `Deno.dlopen("libc.so.6")`. `openDir` opens a device directory once
 * (`O_PATH`) and reads its attributes relative to it, so each file costs no path walk;
 * `readFiles` reads many at once through io_uring where the kernel allows (`ffi/io_uring.ts`).
 * Deno 2.x refuses `Deno.readFile` under `/sys` and `/proc` without `--allow-all`
 * (denoland/deno#27564); going through libc needs only `--allow-ffi`, so the documented permission
 * set can read the real host.
 *
 * @module
 */

import type { SysfsDirReader, SysfsFile, SysfsFileBatch, SysfsReader } from "../lib/host/sysfs.ts";
import {
  BATCH_MISSING,
  ioUringUnavailableReason,
  openUringFileBatch,
  SLOT_BYTES,
  type UringFileBatch,
} from "./io_uring.ts";
import { errno, libc } from "./libc.ts";

const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
const O_DIRECTORY = 0o200000;
// Opening a FIFO planted in a captured tree would block until a writer appears; non-blocking,
// it opens at once and reads as empty (or fails), and regular and sysfs files ignore the flag.
const O_NONBLOCK = 0o4000;
/** Opens a directory only as a lookup anchor: no read permission needed, no access time. */
const O_PATH = 0o10000000;
/** How every attribute is opened. */
const FILE_FLAGS = O_RDONLY | O_NONBLOCK | O_CLOEXEC;
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

/** Options of {@link libcSysfsReader}. */
export interface LibcSysfsReaderOptions {
  /**
   * Whether `readFiles` may read through io_uring (`ffi/io_uring.ts`) where the kernel allows
   * it. Default: yes, unless the environment variable `PASSTHROUGH_IO_URING` is `0` (a switch
   * for users of a kernel where it misbehaves); `false` makes every read go file by file.
   */
  ioUring?: boolean;
}

/** The environment variable that turns io_uring off when set to `0`. */
export const IO_URING_ENV = "PASSTHROUGH_IO_URING";

function ioUringAllowedByEnvironment(): boolean {
  // Asked first, so a library user's process is never prompted for it: without --allow-env for
  // the variable, it cannot have been meant for this process.
  const status = Deno.permissions.querySync({ name: "env", variable: IO_URING_ENV });
  return status.state !== "granted" || Deno.env.get(IO_URING_ENV) !== "0";
}

/**
 * Whether `libcSysfsReader().readFiles` can read through io_uring in this process: `null` when it
 * can, else why not (turned off by the environment, or the kernel's refusal). Makes the process's
 * ring when it can (see `ffi/io_uring.ts`).
 */
export function ioUringStatus(): string | null {
  if (!ioUringAllowedByEnvironment()) return `turned off by ${IO_URING_ENV}=0`;
  openUringFileBatch([])?.[Symbol.dispose]();
  return ioUringUnavailableReason();
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
export function libcSysfsReader(options: LibcSysfsReaderOptions = {}): SysfsReader {
  const lib = libc();
  const ioUring = options.ioUring ?? ioUringAllowedByEnvironment();
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  let buffer = new Uint8Array(16384);
  const linkBuffer = new Uint8Array(4096);
  const linkBufferSize = BigInt(linkBuffer.length);
  let pathBuffer = new Uint8Array(4096);
  // One reused buffer for NUL-terminated absolute paths.
  const cString = (path: string): Uint8Array => {
    if (pathBuffer.length < path.length * 3 + 1) pathBuffer = new Uint8Array(path.length * 3 + 1);
    const { written } = encoder.encodeInto(path, pathBuffer);
    pathBuffer[written] = 0;
    return pathBuffer;
  };
  // Entry names read relative to a directory repeat for every device (`uevent`, `config`):
  // encode each once. Bounded, because `virtfnN` names are many on SR-IOV hosts.
  const names = new Map<string, Uint8Array>();
  const cName = (name: string): Uint8Array => {
    let encoded = names.get(name);
    if (encoded === undefined) {
      encoded = encoder.encode(`${name}\0`);
      if (names.size < 4096) names.set(name, encoded);
    }
    return encoded;
  };
  // errno is read after the call returns; a signal handler running in between (Deno's
  // SIGCHLD handling while lspci runs) can leave EAGAIN or EINTR there. Those never mean
  // "missing" for open/read/readlink on files, so the call is simply repeated. The loops are
  // spelled out rather than shared through a callback: discovery makes ~15 calls per device,
  // and V8 keeps FFI calls on its fast path only in small monomorphic functions.
  let lastErrno = 0;
  const openAt = (dirfd: number, path: Uint8Array, flags: number): number => {
    for (let attempt = 0;; attempt++) {
      const fd = lib.openat(dirfd, path, flags);
      if (fd >= 0) return fd;
      lastErrno = errno();
      if (!TRANSIENT_ERRNO.has(lastErrno) || attempt >= 8) return fd;
    }
  };
  const readLinkAt = (dirfd: number, path: Uint8Array): number => {
    for (let attempt = 0;; attempt++) {
      const n = Number(lib.readlinkat(dirfd, path, linkBuffer, linkBufferSize));
      if (n >= 0) return n;
      lastErrno = errno();
      if (!TRANSIENT_ERRNO.has(lastErrno) || attempt >= 8) return n;
    }
  };
  // Reads up to `maxBytes` into `buffer` and closes `fd`: the length, or -1 (see lastErrno).
  // A short read is the end of a sysfs attribute or a regular file, which saves one syscall
  // per file (they cost microseconds in VMs); /proc files are read until 0 as usual, because
  // seq_file hands them out in pieces.
  const readFd = (fd: number, maxBytes: number, untilZero: boolean): number => {
    try {
      if (buffer.length < maxBytes) buffer = new Uint8Array(maxBytes);
      let length = 0;
      while (length < maxBytes) {
        const want = maxBytes - length;
        const n = Number(
          lib.read(fd, length === 0 ? buffer : buffer.subarray(length), BigInt(want)),
        );
        if (n < 0) {
          lastErrno = errno();
          if (TRANSIENT_ERRNO.has(lastErrno)) continue;
          return -1;
        }
        if (n === 0) break;
        length += n;
        if (n < want && !untilZero) break;
      }
      return length;
    } finally {
      lib.close(fd);
    }
  };
  const fail = (operation: string, path: string): null => {
    const code = lastErrno;
    if (MISSING_ERRNO.has(code)) return null;
    throw new LibcFsError(operation, path, code);
  };
  const readAbsolute = (path: string, maxBytes: number): number | null => {
    const fd = openAt(AT_FDCWD, cString(path), FILE_FLAGS);
    if (fd < 0) return fail("open", path);
    const n = readFd(fd, maxBytes, path.startsWith("/proc/"));
    return n < 0 ? fail("read", path) : n;
  };
  /**
   * The entries of one open directory. A class, not an object of closures: discovery opens one
   * per device, and its methods are then shared instead of allocated each time.
   */
  class DirReader implements SysfsDirReader {
    #closed = false;
    constructor(readonly path: string, readonly dirfd: number) {}
    /** The entry's length in `buffer`, or `null` when it is missing. */
    #read(name: string, maxBytes: number): number | null {
      const fd = this.#open(name);
      if (fd === null) return null;
      const n = readFd(fd, maxBytes, false);
      return n < 0 ? fail("read", `${this.path}/${name}`) : n;
    }
    #open(name: string): number | null {
      this.#check(name);
      if (this.dirfd < 0) return null;
      const fd = openAt(this.dirfd, cName(name), FILE_FLAGS);
      return fd < 0 ? fail("open", `${this.path}/${name}`) : fd;
    }
    #check(name: string): void {
      if (this.#closed) {
        throw new Error(`Cannot read "${this.path}/${name}": the directory was closed`);
      }
    }
    readText(name: string): string | null {
      const n = this.#read(name, 65536);
      return n === null ? null : decoder.decode(buffer.subarray(0, n));
    }
    readBytes(name: string, maxBytes: number): Uint8Array | null {
      const n = this.#read(name, maxBytes);
      return n === null ? null : buffer.slice(0, n);
    }
    withBytes<T>(name: string, maxBytes: number, use: (bytes: Uint8Array) => T): T | null {
      const n = this.#read(name, maxBytes);
      return n === null ? null : use(buffer.subarray(0, n));
    }
    readLink(name: string): string | null {
      this.#check(name);
      if (this.dirfd < 0) return null;
      const n = readLinkAt(this.dirfd, cName(name));
      return n < 0
        ? fail("read link", `${this.path}/${name}`)
        : decoder.decode(linkBuffer.subarray(0, n));
    }
    openFile(name: string): SysfsFile | null {
      const fd = this.#open(name);
      return fd === null ? null : new FileReader(`${this.path}/${name}`, fd);
    }
    [Symbol.dispose](): void {
      if (this.dirfd >= 0 && !this.#closed) lib.close(this.dirfd);
      this.#closed = true;
    }
  }

  /** An open file read at offsets (`pread`). */
  class FileReader implements SysfsFile {
    #open = true;
    constructor(readonly path: string, readonly fd: number) {}
    readAt(offset: number, length: number): Uint8Array {
      if (!this.#open) throw new Error(`Cannot read "${this.path}": the file was closed`);
      if (buffer.length < length) buffer = new Uint8Array(length);
      for (let attempt = 0;; attempt++) {
        const n = Number(lib.pread(this.fd, buffer, BigInt(length), BigInt(offset)));
        if (n >= 0) return buffer.slice(0, n);
        lastErrno = errno();
        if (!TRANSIENT_ERRNO.has(lastErrno) || attempt >= 8) break;
      }
      // A register the kernel will not read reads as absent, like a short read.
      if (MISSING_ERRNO.has(lastErrno)) return new Uint8Array(0);
      throw new LibcFsError("read", this.path, lastErrno);
    }
    [Symbol.dispose](): void {
      if (this.#open) lib.close(this.fd);
      this.#open = false;
    }
  }

  /**
   * A batch of io_uring reads with the ordinary path behind it: a file the batch could not read
   * (any error but ENOENT, or longer than a page when all of it is wanted) is read again here,
   * so every result means what the file-by-file reader would have said.
   */
  class BatchReader implements SysfsFileBatch {
    constructor(readonly batch: UringFileBatch, readonly paths: readonly string[]) {}
    poll(): void {
      this.batch.poll();
    }
    readText(index: number): string | null {
      const n = this.batch.wait(index);
      if (n === BATCH_MISSING) return null;
      if (n >= 0 && n < SLOT_BYTES) return decoder.decode(this.batch.bytes(index));
      const length = readAbsolute(this.paths[index]!, 65536);
      return length === null ? null : decoder.decode(buffer.subarray(0, length));
    }
    withBytes<T>(index: number, maxBytes: number, use: (bytes: Uint8Array) => T): T | null {
      const n = this.batch.wait(index);
      if (n === BATCH_MISSING) return null;
      if (n >= 0 && (n < SLOT_BYTES || maxBytes <= SLOT_BYTES)) {
        const bytes = this.batch.bytes(index)!;
        return use(bytes.length > maxBytes ? bytes.subarray(0, maxBytes) : bytes);
      }
      const length = readAbsolute(this.paths[index]!, maxBytes);
      return length === null ? null : use(buffer.subarray(0, length));
    }
    [Symbol.dispose](): void {
      this.batch[Symbol.dispose]();
    }
  }

  return {
    readFiles(paths) {
      const batch = ioUring ? openUringFileBatch(paths) : null;
      return batch === null ? null : new BatchReader(batch, paths);
    },
    listDir(path) {
      let dir = lib.opendir(cString(path));
      for (let attempt = 0; dir === null && attempt < 8; attempt++) {
        lastErrno = errno();
        if (!TRANSIENT_ERRNO.has(lastErrno)) break;
        dir = lib.opendir(cString(path));
      }
      if (dir === null) return fail("open directory", path);
      const entries: string[] = [];
      try {
        for (;;) {
          const entry = lib.readdir(dir);
          if (entry === null) break;
          const name = new Deno.UnsafePointerView(entry).getCString(DIRENT_NAME_OFFSET);
          if (name !== "." && name !== "..") entries.push(name);
        }
      } finally {
        lib.closedir(dir);
      }
      return entries;
    },
    readText(path) {
      const n = readAbsolute(path, 65536);
      return n === null ? null : decoder.decode(buffer.subarray(0, n));
    },
    readBytes(path, maxBytes) {
      const n = readAbsolute(path, maxBytes);
      return n === null ? null : buffer.slice(0, n);
    },
    readLink(path) {
      const n = readLinkAt(AT_FDCWD, cString(path));
      return n < 0 ? fail("read link", path) : decoder.decode(linkBuffer.subarray(0, n));
    },
    openDir(path): SysfsDirReader {
      // One lookup of the directory (on the real /sys, through the bus/pci/devices symlink and
      // the device's deep path) instead of one per attribute: path walks are most of the cost.
      const dirfd = openAt(AT_FDCWD, cString(path), O_PATH | O_DIRECTORY | O_CLOEXEC);
      // A missing directory reads as empty, like each of its attributes would.
      if (dirfd < 0) fail("open directory", path);
      return new DirReader(path, dirfd);
    },
  };
}
