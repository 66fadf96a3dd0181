/**
 * libc's functions, bound with `Deno.dlopen("libc.so.6")` in one place for the whole tool: the file
 * calls of the sysfs reader (`libc_fs.ts`), `free()` for what libvirt allocates, `getenv`,
 * `getpwuid`, `getuid`, `kill`, and `getrusage` for the benchmarks. Each is bound on first use, so importing needs nothing.
 *
 * @module
 */

/** The C functions used, with their C result types (see `bind` for how they are bound). */
const SIGNATURES = {
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
  // int *__errno_location(void);
  __errno_location: { parameters: [], result: "pointer" },
  // ssize_t getxattr(const char *path, const char *name, void *value, size_t size);
  getxattr: { parameters: ["buffer", "buffer", "buffer", "usize"], result: "isize" },
  // int kill(pid_t pid, int sig);
  kill: { parameters: ["i32", "i32"], result: "i32" },
  // char *realpath(const char *path, char *resolved_path);
  realpath: { parameters: ["buffer", "buffer"], result: "pointer" },
  // int statfs(const char *path, struct statfs *buf);
  statfs: { parameters: ["buffer", "buffer"], result: "i32" },
  // int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf);
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  // void free(void *ptr); libvirt exports no virFree, and its char* results come from malloc.
  free: { parameters: ["pointer"], result: "void" },
  // char *getenv(const char *name);
  getenv: { parameters: ["buffer"], result: "pointer" },
  // struct passwd *getpwuid(uid_t uid);
  getpwuid: { parameters: ["u32"], result: "pointer" },
  // uid_t getuid(void);
  getuid: { parameters: [], result: "u32" },
  // int getrusage(int who, struct rusage *usage);
  getrusage: { parameters: ["i32", "buffer"], result: "i32" },
} as const;

type Name = keyof typeof SIGNATURES;

/** Each function as JavaScript calls it: integers as numbers (or bigints), pointers as such. */
type Libc = {
  [N in Name]: (
    ...args: Deno.ToNativeParameterTypes<typeof SIGNATURES[N]["parameters"]>
  ) => typeof SIGNATURES[N]["result"] extends "pointer" ? Deno.PointerValue
    : typeof SIGNATURES[N]["result"] extends "isize" ? number | bigint
    : typeof SIGNATURES[N]["result"] extends "void" ? void
    : number;
};

/** Whether this machine stores integers little-endian (every target of this tool does). */
export const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Functions bound together, in one `dlopen`, as soon as one of them is used. */
const GROUPS: readonly (readonly Name[])[] = [
  ["__errno_location", "openat", "read", "pread", "close", "readlinkat"],
  ["opendir", "readdir", "closedir"],
];

/**
 * Binds libc functions. `compiled`: as declared, so that `Deno.dlopen` compiles a fast-call
 * trampoline for each (Cranelift, at bind time), worth it for discovery's thousands of calls.
 * Otherwise each with its result declared as a struct of that one integer or pointer, for which
 * Deno compiles nothing: x86-64 (System V) and AArch64 (AAPCS64) return such a struct in the same
 * register as the integer itself, so the value is the same, and each call is slower, which costs
 * far less than the compilation in a process that makes a few dozen calls (the start hook).
 */
function bind(names: readonly Name[], compiled: boolean): Partial<Libc> {
  const symbols: Deno.ForeignLibraryInterface = Object.fromEntries(names.map((name) => {
    const { parameters, result } = SIGNATURES[name];
    // A void result has no value to return in a struct: it is bound as declared either way.
    const plain = compiled || result === "void";
    return [name, { parameters, result: plain ? result : { struct: [result] } }];
  }));
  const bound = Deno.dlopen("libc.so.6", symbols).symbols as Record<
    string,
    (...args: unknown[]) => unknown
  >;
  const value = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  return Object.fromEntries(names.map((name) => {
    const call = bound[name]!;
    const result = SIGNATURES[name].result;
    if (compiled || result === "void") return [name, call];
    const decode = result === "i32"
      ? (bytes: Uint8Array) => value(bytes).getInt32(0, LITTLE_ENDIAN)
      : result === "isize"
      ? (bytes: Uint8Array) => Number(value(bytes).getBigInt64(0, LITTLE_ENDIAN))
      : (bytes: Uint8Array) =>
        Deno.UnsafePointer.create(value(bytes).getBigUint64(0, LITTLE_ENDIAN));
    return [name, (...args: unknown[]) => decode(call(...args) as Uint8Array)];
  })) as Partial<Libc>;
}

/**
 * libc's functions, bound on first use (needs `--allow-ffi`), so importing needs nothing and a
 * process pays only for the functions it calls, with their {@link GROUPS}; `compiled` as in
 * `bind`. `__errno_location` is bound before any other (and only once, without a
 * trampoline): binding runs `dlopen`, which may set errno, so it must not happen between a failed
 * call and the reading of its errno.
 */
function lazyLibc(compiled: boolean): Libc {
  const lib = {} as Libc;
  for (const name of Object.keys(SIGNATURES) as Name[]) {
    Object.defineProperty(lib, name, {
      configurable: true,
      get() {
        if (errnoCell === undefined && name !== "__errno_location") errno();
        const group = (GROUPS.find((g) => g.includes(name)) ?? [name])
          .filter((n) => !compiled || n !== "__errno_location");
        const functions = bind(group, compiled);
        for (const [n, fn] of Object.entries(functions)) {
          Object.defineProperty(lib, n, { value: fn });
        }
        return functions[name];
      },
    });
  }
  return lib;
}

const compiledLibc = lazyLibc(true);
const plainLibc = lazyLibc(false);
let errnoCell: Int32Array | null | undefined;

/** The libc functions: with fast-call trampolines, or (`fewCalls`) without; see `bind`. */
export function libc(fewCalls = false): Libc {
  if (errnoCell === undefined) errno();
  return fewCalls ? plainLibc : compiledLibc;
}

/** This thread's `errno`, as the last libc call left it. */
export function errno(): number {
  if (errnoCell === undefined) {
    // errno lives in thread-local storage at an address fixed for the thread; FFI calls without
    // `nonblocking` run on this one, so the view is made once: a failed lookup per device is
    // common in discovery.
    const pointer = plainLibc.__errno_location();
    errnoCell = pointer === null
      ? null
      : new Int32Array(Deno.UnsafePointerView.getArrayBuffer(pointer, 4));
  }
  return errnoCell === null ? 0 : errnoCell[0]!;
}

/**
 * Sets this thread's `errno` to 0, before a call whose failure only errno tells apart from its
 * ordinary end: `readdir` returns NULL both at a directory's end and when listing it failed.
 */
export function clearErrno(): void {
  errno();
  if (errnoCell) errnoCell[0] = 0;
}
