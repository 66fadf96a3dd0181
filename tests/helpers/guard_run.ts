/**
 * The start guard run on a built tree at `dir` as the hook runs it at `prepare begin`, with the
 * tree's own state directory, libvirt status directories, `/dev` and `/proc`
 * (`dir/state`, `dir/qemu`, `dir/network`, `dir/dev`, `dir/proc`).
 */

import { runGuard } from "../../lib/guard/run.ts";
import { formatRefusal } from "../../lib/guard/check.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";

/** The exit code, each refusal as `[kind, address]`, and the lines `virsh start` would show. */
export async function guardStartOnTree(
  options: { vm: string; xml: string; dir: string; live: boolean; connection?: string },
) {
  const { vm, xml, dir, live, connection } = options;
  const result = await runGuard({
    vm,
    operation: "prepare",
    subOperation: "begin",
    xml,
    reader: denoFsReader(),
    root: dir,
    live,
    stateDir: `${dir}/state`,
    procRoot: `${dir}/proc`,
    qemuStatusDir: `${dir}/qemu`,
    networkStatusDir: `${dir}/network`,
    devRoot: `${dir}/dev`,
    ...(connection === undefined ? {} : { connection }),
  });
  return {
    code: result.code,
    refusals: result.refusals.map((r) => [r.kind, r.address]),
    line: result.refusals.map((r) => formatRefusal(r)).join("\n"),
  };
}
