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
 * whose descriptors cannot be read here (another user's, when not run as root), holds nothing.
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
    const fdDir = `${procRoot}/${pid}/fd`;
    const held = new Set<string>();
    for (const fd of reader.listDir(fdDir) ?? []) {
      const target = reader.readLink(`${fdDir}/${fd}`);
      if (target !== null && nodes.has(target)) held.add(target);
    }
    if (held.size === 0) continue;
    const command = (reader.readText(`${procRoot}/${pid}/comm`) ?? "").trim();
    for (const node of held) {
      const list = holders.get(node) ?? [];
      list.push({ pid, command });
      holders.set(node, list);
    }
  }
  return holders;
}
