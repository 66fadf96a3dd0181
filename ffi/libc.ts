/**
 * libc, bound once per thread with `Deno.dlopen("libc.so.6")` for the modules that call it
 * directly: `ffi/libc_fs.ts` (sysfs reads) and `ffi/io_uring.ts` (background reads). Opened on
 * first use, so importing needs no permission.
 *
 * @module
 */

const SYMBOLS = {
  // int openat(int dirfd, const char *pathname, int flags);
  openat: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  // ssize_t read(int fd, void *buf, size_t count);
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // ssize_t pread(int fd, void *buf, size_t count, off_t offset);
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
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
  // long syscall(long number, ...): io_uring has no glibc wrapper.
  syscall4: { name: "syscall", parameters: ["i64", "i64", "i64", "i64"], result: "i64" },
  syscall7: {
    name: "syscall",
    parameters: ["i64", "i64", "i64", "i64", "i64", "i64", "i64"],
    result: "i64",
  },
  // void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  // int munmap(void *addr, size_t length);
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  // void *malloc(size_t size);
  malloc: { parameters: ["usize"], result: "pointer" },
  // void free(void *ptr);
  free: { parameters: ["pointer"], result: "void" },
  // int *__errno_location(void);
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The bound libc functions. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let bound: Libc | null = null;
let errnoView: Deno.UnsafePointerView | null = null;

/** libc, opened on first use (needs `--allow-ffi`) and memoised. */
export function libc(): Libc {
  if (bound === null) {
    bound = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
    // errno lives in thread-local storage at an address fixed for the thread; FFI calls without
    // `nonblocking` run on this one (the main thread: no code here runs in workers), so the
    // view is made once: a failed lookup per device is common in discovery.
    const pointer = bound.__errno_location();
    errnoView = pointer === null ? null : new Deno.UnsafePointerView(pointer);
  }
  return bound;
}

/** This thread's `errno`, as the last libc call left it. */
export function errno(): number {
  return errnoView === null ? 0 : errnoView.getInt32(0);
}
