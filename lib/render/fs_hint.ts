/**
 * What to do about a file system's refusal the system's own words leave unsaid: which mount is
 * read-only, which attribute makes a file root owns immutable. Loaded only when an error is one.
 *
 * @module
 */

import { shellWord } from "./shell.ts";
import { unescapeProcPath } from "../host/sysfs_device.ts";

/**
 * The `errno` of a system call Deno reports as `... (os error N): open '/path'`, in `error` or
 * its causes, with that message; `null` when there is none.
 */
function osErrorOf(error: unknown): { errno: number; message: string } | null {
  for (let current = error, depth = 0; current instanceof Error && depth < 5; depth++) {
    const found = /\(os error (\d+)\)/.exec(current.message);
    if (found !== null) return { errno: Number(found[1]), message: current.message };
    current = current.cause;
  }
  return null;
}

/** The mount points of `/proc/self/mountinfo` (its fifth field, `\040`-style escapes undone). */
function mountPoints(mountInfo: string): string[] {
  return mountInfo.split("\n").flatMap((line) => {
    const field = line.split(" ")[4];
    if (field === undefined || !field.startsWith("/")) return [];
    return [unescapeProcPath(field)];
  });
}

/** The mount `path` is on: the longest mount point that holds it. */
function mountOf(path: string, mountInfo: string): string | null {
  let best: string | null = null;
  for (const point of mountPoints(mountInfo)) {
    const holds = point === "/" || path === point || path.startsWith(`${point}/`);
    if (holds && (best === null || point.length > best.length)) best = point;
  }
  return best;
}

/**
 * How to fix what the file system refused, or `null`: EROFS names the read-only mount (from
 * `mountInfo`, the text of `/proc/self/mountinfo`, when given), EPERM the immutable or
 * append-only attribute that makes root's rename, unlink or write fail whatever the owner and
 * mode say (`chattr +i`), with the commands that show and clear it. The path is the last one the
 * system call's message quotes (`rename 'A' -> 'B'`: B); `realPath` gives where its links lead
 * (`realPathOfExisting` in `lib/state/paths.ts`), the path as written when absent.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const error = new Error("Read-only file system (os error 30): open '/srv/pt/.probe-1'");
 * assertEquals(
 *   fileSystemHint(error, "36 1 8:1 / /srv rw - ext4 /dev/sda1 rw\n"),
 *   'on the read-only mount "/srv": make it writable ("mount -o remount,rw /srv"), or use a directory elsewhere',
 * );
 * ```
 */
export function fileSystemHint(
  error: unknown,
  mountInfo: string | null,
  options: { realPath?: (path: string) => string | null } = {},
): string | null {
  const os = osErrorOf(error);
  if (os === null || (os.errno !== 30 && os.errno !== 1)) return null;
  const paths = [...os.message.matchAll(/'([^']+)'/g)].map((m) => m[1]!);
  const path = paths.at(-1);
  if (path === undefined || !path.startsWith("/")) return null;
  if (os.errno === 30) {
    // The mount is where the path leads: a hooks or state directory may be a link onto another.
    const where = options.realPath?.(path) ?? path;
    const mount = mountInfo === null ? null : mountOf(where, mountInfo);
    if (mount === null) {
      return `on a read-only mount ("findmnt -T ${
        shellWord(path)
      }" names it): make it writable, or use a directory elsewhere`;
    }
    return `on the read-only mount "${mount}": make it writable ("mount -o remount,rw ${
      shellWord(mount)
    }"), or use a directory elsewhere`;
  }
  const slash = path.lastIndexOf("/");
  const dir = slash === 0 ? "/" : path.slice(0, slash);
  const name = path.slice(slash + 1);
  // A temporary name passthrough was creating does not exist: only its directory can be at fault.
  const temporary = /^\..*\.tmp$|^\.probe-/.test(name);
  const shown = temporary ? [dir] : [dir, path];
  return `the system refused whatever the owner and mode: where "lsattr -d ${
    shown.map(shellWord).join(" ")
  }" shows "i" (immutable) or "a" (append-only), "chattr -i -a" on that path clears it; else check the owner and mode, or run as root`;
}
