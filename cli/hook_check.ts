/**
 * The start guard's check as an entry point of its own: what the installed hook runs at
 * `prepare begin` from a checkout or beside a bundle (`passthrough hook run` runs the same, for
 * compiled binaries). It loads neither the command table nor `node:util`: libvirt waits for this
 * at every VM start. Writes only to standard error; exits 0 to let the start go on, 1 to stop it,
 * 2 on bad arguments (which also stops it: failing closed).
 *
 * Usage: hook_check.ts --state-dir DIR [--sysfs DIR] [--hooks-dir DIR] -- VM OPERATION SUB-OPERATION
 * EXTRA
 *
 * @module
 */

import { MAX_XML_BYTES, runGuard } from "../lib/guard/run.ts";
import { guardLine } from "../lib/guard/check.ts";
import { confinedReader, denoFsReader, type SysfsReader } from "../lib/host/sysfs.ts";
import { writeAllSync } from "./io.ts";
import { errorText } from "../lib/render/error_text.ts";

/** The arguments the hook passes. */
export interface HookCheckArgs {
  stateDir: string;
  sysfs: string;
  /** The directory of the hook that runs the check, which `hook status` is to read. */
  hooksDir?: string;
  /** libvirt's four hook arguments. */
  vm: string;
  operation: string;
  subOperation: string;
}

/**
 * Reads `--state-dir DIR [--sysfs DIR] -- VM OP SUBOP [EXTRA]`; a string saying what is wrong
 * when they are not that.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * assertEquals(
 *   parseHookCheckArgs(["--state-dir", "/s", "--", "-vm", "prepare", "begin", "-"]),
 *   { stateDir: "/s", sysfs: "/sys", vm: "-vm", operation: "prepare", subOperation: "begin" },
 * );
 * ```
 */
export function parseHookCheckArgs(args: readonly string[]): HookCheckArgs | string {
  const options: Record<string, string> = {};
  let i = 0;
  for (; i < args.length && args[i] !== "--"; i += 2) {
    const flag = args[i]!;
    const value = args[i + 1];
    if (
      (flag !== "--state-dir" && flag !== "--sysfs" && flag !== "--hooks-dir") ||
      value === undefined
    ) {
      return `Unexpected argument "${flag}"`;
    }
    options[flag] = value;
  }
  const [vm, operation, subOperation] = args.slice(i + 1);
  if (options["--state-dir"] === undefined) return "Missing --state-dir DIR";
  if (vm === undefined || operation === undefined || subOperation === undefined) {
    return "Missing the hook's arguments after --: VM OPERATION SUB-OPERATION";
  }
  return {
    stateDir: options["--state-dir"],
    sysfs: options["--sysfs"] ?? "/sys",
    ...(options["--hooks-dir"] === undefined ? {} : { hooksDir: options["--hooks-dir"] }),
    vm,
    operation,
    subOperation,
  };
}

/** Standard input, up to `max` bytes; `null` when there is more. Synchronous: no streams. */
function readStdin(max: number): Uint8Array | null {
  let buffer = new Uint8Array(64 * 1024);
  let length = 0;
  for (;;) {
    if (length === buffer.length) {
      const bigger = new Uint8Array(buffer.length * 2);
      bigger.set(buffer);
      buffer = bigger;
    }
    const n = Deno.stdin.readSync(buffer.subarray(length));
    if (n === null) return buffer.subarray(0, length);
    length += n;
    if (length > max) return null;
  }
}

/**
 * Whether `root` is this host's `/sys`, however spelled (`/sys/.`, `//sys`, a link to it): a
 * captured tree has no host use to read, so taking the live one for a tree would let the host's
 * own disk controller or NIC through. Without libc (the check loads none): another mount of
 * sysfs is not recognised here; `hook install` writes it as `/sys`.
 */
function isLiveSysfs(root: string): boolean {
  if (root === "/sys") return true;
  try {
    return Deno.realPathSync(root) === "/sys";
  } catch (error) {
    // A path Deno will not resolve for this process is taken as live: its reads then fail on
    // the permission, never pass as a tree without host use.
    return error instanceof Deno.errors.NotCapable;
  }
}

/**
 * Runs the check for the hook's arguments, reading sysfs and `/proc` with `reader`, writing
 * refusals to `err`; returns the exit code. Every operation but `prepare begin` returns 0 before
 * anything is read. `live` says whether `args.sysfs` is this host's sysfs, when the caller can
 * tell better (through libc) than this module. A captured tree is read only inside itself
 * (`confinedReader`), as the commands' `--sysfs` reads one; the live `/sys`, read at every VM
 * start, as it is.
 */
export async function checkStart(
  args: HookCheckArgs,
  err: (text: string) => void,
  reader: SysfsReader,
  live?: boolean,
): Promise<number> {
  if (args.operation !== "prepare" || args.subOperation !== "begin") return 0;
  const bytes = readStdin(MAX_XML_BYTES);
  const root = args.sysfs.replace(/(.)\/+$/, "$1");
  const isLive = live ?? isLiveSysfs(root);
  const result = await runGuard({
    vm: args.vm,
    operation: args.operation,
    subOperation: args.subOperation,
    xml: bytes === null ? null : new TextDecoder().decode(bytes),
    reader: isLive ? reader : confinedReader(reader, root),
    root,
    live: isLive,
    stateDir: args.stateDir,
    ...(args.hooksDir === undefined ? {} : { hooksDir: args.hooksDir }),
  });
  if (result.lines.length > 0) err(`${result.lines.join("\n")}\n`);
  return result.code;
}

/**
 * {@link checkStart} for a command line; exit 2 (which stops the start too) when it is bad.
 * Reads with Deno's own file system calls, which under `/sys` and `/proc` need `--allow-all`:
 * the hook runs this entry with it (see `checkPermissions` in `lib/guard/hook_file.ts`).
 */
function hookCheck(
  args: readonly string[],
  err: (text: string) => void,
): Promise<number> {
  const parsed = parseHookCheckArgs(args);
  if (typeof parsed === "string") {
    // Only a hook passes these: one written by another passthrough (one that ran its own
    // deadline passed --deadline) refuses every start here until it is written again. The
    // same words as `hook run`'s usageHint in cli/specs.ts, which this lean entry does not load.
    err(
      `passthrough hook run: ${parsed}: install the hook again, as "passthrough hook status" ` +
        "says (a hook written by another passthrough passes arguments this check does not take)\n",
    );
    return Promise.resolve(2);
  }
  return checkStart(parsed, err, denoFsReader({ listings: parsed.sysfs }));
}

/** Writes all of `text` to standard error. */
function writeError(text: string): void {
  writeAllSync(Deno.stderr, text);
}

/** {@link hookCheck} of this process's arguments; a check that throws fails closed, in a line. */
async function checkThisStart(): Promise<number> {
  try {
    return await hookCheck(Deno.args, writeError);
  } catch (error) {
    // Without a stack trace; naming the VM, as virsh start shows this line alone (a module of a
    // bundle gone, say).
    const message = errorText(error);
    const args = parseHookCheckArgs(Deno.args);
    const refusing = typeof args === "string"
      ? ""
      : `refusing to start ${JSON.stringify(args.vm)}: `;
    writeError(`${guardLine(`passthrough guard: ${refusing}the check failed: ${message}`)}\n`);
    return 1;
  }
}

if (import.meta.main) {
  void checkThisStart().then((code) => {
    Deno.exitCode = code;
    // Deno stores the code cache of the modules it compiled (for the next start) in a turn of
    // its event loop, which an exit from this promise chain can come before (an awaited write
    // or stat may complete at once): then every start compiled the whole check again. Once the
    // loop is idle, that turn has run: exit then rather than tear the runtime down, which takes
    // longer than the check. Everything is written (synchronously).
    addEventListener("beforeunload", () => Deno.exit(code));
  });
}
