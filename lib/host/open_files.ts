/**
 * Which processes hold given device nodes open, read from `/proc/PID/fd` as `fuser` reads it: the
 * kernel shows each open file's path as the target of its `fd/N` link, and `stat` of the link
 * reaches the open file itself.
 *
 * @module
 */

import type { SysfsReader } from "./sysfs.ts";

/** A process that holds a node open. */
export interface NodeHolder {
  /** Its process ID. */
  pid: number;
  /** Its command name (`/proc/PID/comm`, at most 15 bytes), `""` when gone or unreadable. */
  command: string;
}

/** A device node asked about: its path in `/dev`, and its device number when known. */
export interface DeviceNode {
  /** `/dev/dri/card1`. */
  path: string;
  /** `226:1` (`major:minor`), or `null` when unknown: the node is then known by its path alone. */
  number: string | null;
}

/**
 * The processes under `procRoot` that hold any of `nodes` open, by node path, in process-ID
 * order; a node no process holds is absent. A process that exits meanwhile, or whose descriptors
 * cannot be read here (another user's, when not run as root; one an LSM hides), holds nothing.
 * `pids`: the processes to look at, when the caller has listed them ({@link processIds}).
 *
 * With the reader's {@link SysfsReader.deviceNumber} and a node's number known, a descriptor holds
 * the node when its link leads to a character device of that number, whatever the path; else
 * when the kernel shows the node's path as the link's target. So the node counts under another
 * name in a container's own `/dev` (the kernel shows the path as the container sees it:
 * `/dev/gpu0`) or deleted and made again (`/dev/dri/card1 (deleted)`), and a path a container gave
 * another GPU's node (`--device /dev/dri/renderD129:/dev/dri/renderD128`) does not count for the
 * GPU that path names on the host. Only targets under `/dev/` are asked (not `/dev/pts/`), where
 * the kernel's own file systems hold device nodes: a `stat` of a file on a network or FUSE mount
 * whose server hangs would hang too (a user's `~/dev/` included), and a desktop's thousands of
 * sockets, pipes and files cost no call. A node made elsewhere (`mknod /tmp/gpu`, a chroot's
 * `/srv/root/dev/`) is not seen.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const proc = Deno.makeTempDirSync();
 * Deno.mkdirSync(`${proc}/812/fd`, { recursive: true });
 * Deno.writeTextFileSync(`${proc}/812/comm`, "Xorg\n");
 * Deno.symlinkSync("/dev/dri/card1", `${proc}/812/fd/14`);
 * Deno.symlinkSync("/dev/null", `${proc}/812/fd/0`);
 * const card = (n: number) => ({ path: `/dev/dri/card${n}`, number: `226:${n}` });
 * const holders = openBy(denoFsReader(), proc, [card(1), card(0)]);
 * assertEquals([...holders], [["/dev/dri/card1", [{ pid: 812, command: "Xorg" }]]]);
 * // `/dev/null` is the character device 1:3, whatever its name.
 * const nullDevice = openBy(denoFsReader(), proc, [{ path: "/dev/zilch", number: "1:3" }]);
 * assertEquals([...nullDevice], [["/dev/zilch", [{ pid: 812, command: "Xorg" }]]]);
 * Deno.removeSync(proc, { recursive: true });
 * ```
 */
export function openBy(
  reader: SysfsReader,
  procRoot: string,
  nodes: readonly DeviceNode[],
  options: { pids?: readonly number[] } = {},
): Map<string, NodeHolder[]> {
  const holders = new Map<string, NodeHolder[]>();
  if (nodes.length === 0) return holders;
  const wanted: Wanted = {
    byPath: new Map(nodes.map((n) => [n.path, n.number])),
    byNumber: new Map(nodes.flatMap((n) => n.number === null ? [] : [[n.number, n.path]])),
  };
  for (const pid of options.pids ?? processIds(reader, procRoot)) {
    const held = heldBy(reader, `${procRoot}/${pid}`, wanted);
    if (held.size === 0) continue;
    const command = commandOf(reader, `${procRoot}/${pid}`);
    for (const node of held) {
      const list = holders.get(node) ?? [];
      list.push({ pid, command });
      holders.set(node, list);
    }
  }
  return holders;
}

/**
 * The process IDs under `procRoot`, in order; none when it is missing.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const proc = Deno.makeTempDirSync();
 * for (const name of ["812", "self", "77"]) Deno.mkdirSync(`${proc}/${name}`);
 * assertEquals(processIds(denoFsReader(), proc), [77, 812]);
 * Deno.removeSync(proc, { recursive: true });
 * ```
 */
export function processIds(reader: SysfsReader, procRoot: string): number[] {
  return (reader.listDir(procRoot) ?? []).filter((e) => /^[1-9][0-9]*$/.test(e))
    .map(Number).sort((a, b) => a - b);
}

/** The nodes asked about: by path (to the number), and by device number (to the path). */
interface Wanted {
  byPath: ReadonlyMap<string, string | null>;
  byNumber: ReadonlyMap<string, string>;
}

/**
 * Which nodes the process at `dir` holds open, by path. None for a process whose descriptors
 * cannot be read: one that exited meanwhile, or one an LSM or ptrace rule hides from this one.
 */
function heldBy(reader: SysfsReader, dir: string, wanted: Wanted): Set<string> {
  const held = new Set<string>();
  const byNumber = reader.deviceNumber !== undefined && wanted.byNumber.size > 0;
  try {
    for (const fd of reader.listDir(`${dir}/fd`) ?? []) {
      const link = `${dir}/fd/${fd}`;
      const target = reader.readLink(link);
      if (target === null) continue;
      // Terminals (devpts) are never a GPU's node: the most common descriptors cost no call.
      const asked = byNumber && target.startsWith("/dev/") && !target.startsWith("/dev/pts/");
      const number = asked ? numberOf(reader, link) : null;
      const node = number === null ? undefined : wanted.byNumber.get(number);
      if (node !== undefined) held.add(node);
      // A path names its node only when a number cannot say: a container may give one GPU's
      // node another GPU's path (--device /dev/dri/renderD129:/dev/dri/renderD128).
      else if (
        wanted.byPath.has(target) && (number === null || wanted.byPath.get(target) === null)
      ) {
        held.add(target);
      }
    }
  } catch {
    // Not seen, as `fuser` does not see it: a check that fails here would refuse every start.
  }
  return held;
}

/**
 * The device number the descriptor's link leads to; `null` when it closed meanwhile or the kernel
 * refuses the `stat`.
 */
function numberOf(reader: SysfsReader, link: string): string | null {
  try {
    return reader.deviceNumber!(link);
  } catch {
    return null;
  }
}

/**
 * The process's command name on one line: any program may name itself, also with a newline
 * (`PR_SET_NAME`), which would forge a line of its own where the name is printed.
 */
function commandOf(reader: SysfsReader, dir: string): string {
  let text: string | null = null;
  try {
    text = reader.readText(`${dir}/comm`);
  } catch {
    // As a process gone meanwhile.
  }
  // deno-lint-ignore no-control-regex
  return (text ?? "").replace(/\n$/, "").replace(/[\x00-\x1f\x7f]/g, "?");
}
