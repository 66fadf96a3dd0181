/**
 * Which processes hold given device nodes open, read from `/proc/PID/fd` as `fuser` reads it: the
 * kernel shows each open file's path as the target of its `fd/N` link.
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

/**
 * The processes under `procRoot` that hold any of `nodes` (absolute `/dev` paths) open, by node,
 * in process-ID order; a node no process holds is absent. A process that exits meanwhile, or
 * whose descriptors cannot be read here (another user's, when not run as root; one an LSM hides),
 * holds nothing. Paths are compared as the kernel shows them in the holder's mount namespace: a
 * container given a node under another name, a chroot, or a node deleted and made again is not
 * seen.
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
 * const holders = openBy(denoFsReader(), proc, new Set(["/dev/dri/card1", "/dev/dri/card0"]));
 * assertEquals([...holders], [["/dev/dri/card1", [{ pid: 812, command: "Xorg" }]]]);
 * Deno.removeSync(proc, { recursive: true });
 * ```
 */
export function openBy(
  reader: SysfsReader,
  procRoot: string,
  nodes: ReadonlySet<string>,
): Map<string, NodeHolder[]> {
  const holders = new Map<string, NodeHolder[]>();
  if (nodes.size === 0) return holders;
  const pids = (reader.listDir(procRoot) ?? []).filter((e) => /^[1-9][0-9]*$/.test(e))
    .map(Number).sort((a, b) => a - b);
  for (const pid of pids) {
    const held = heldBy(reader, `${procRoot}/${pid}`, nodes);
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
 * Which of `nodes` the process at `dir` holds open. None for a process whose descriptors cannot
 * be read: one that exited meanwhile, or one an LSM or ptrace rule hides from this one.
 */
function heldBy(reader: SysfsReader, dir: string, nodes: ReadonlySet<string>): Set<string> {
  const held = new Set<string>();
  try {
    for (const fd of reader.listDir(`${dir}/fd`) ?? []) {
      const target = reader.readLink(`${dir}/fd/${fd}`);
      if (target !== null && nodes.has(target)) held.add(target);
    }
  } catch {
    // Not seen, as `fuser` does not see it: a check that fails here would refuse every start.
  }
  return held;
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
