/**
 * `passthrough doctor`: is this host ready for PCI passthrough? Exit 0 when nothing fails, 1
 * when a check fails.
 *
 * @module
 */

import type { CliIo } from "./context.ts";
import type { Parsed } from "./flags.ts";
import type { DOCTOR } from "./specs.ts";
import { type DoctorFinding, runDoctor } from "../lib/host/doctor.ts";
import { isLiveRoot, LIVE_SYSFS, loadHost, readerFor } from "./host_options.ts";
import { painter } from "../lib/render/colors.ts";
import { Connection, type ConnectionOpenOptions } from "../ffi/connection.ts";
import { connectTarget } from "./connect.ts";

/** Opens `uri` read-only and describes it; the error when it cannot. */
export function libvirtProbe(
  uri: string | null,
  options: ConnectionOpenOptions = {},
): () => string | Error {
  return () => {
    try {
      using conn = Connection.open(uri, { ...options, readOnly: true });
      return `${conn.uri} (libvirt ${conn.libVersion})`;
    } catch (error) {
      return error instanceof Error ? error : new Error(String(error));
    }
  };
}

/** Renders findings as aligned lines with a hint under each non-ok one. */
export function renderFindings(findings: DoctorFinding[], color: boolean): string {
  const paint = painter(color);
  const width = Math.max(...findings.map((f) => f.check.length));
  const lines: string[] = [];
  for (const f of findings) {
    const status = f.status === "ok"
      ? paint("green", "ok  ")
      : f.status === "warn"
      ? paint("yellow", "warn")
      : paint("red", "FAIL");
    lines.push(`${status}  ${f.check.padEnd(width)}  ${f.summary}`);
    if (f.hint !== null) lines.push(`${" ".repeat(width + 8)}${paint("dim", `-> ${f.hint}`)}`);
  }
  return `${lines.join("\n")}\n`;
}

/** Runs `passthrough doctor`: exit 1 when a check fails. */
export async function run({ values }: Parsed<typeof DOCTOR>, io: CliIo): Promise<number> {
  const root = values.sysfs ?? LIVE_SYSFS;
  const target = values["no-libvirt"] ? null : connectTarget(values, io);
  const host = await loadHost(root);
  const findings = runDoctor({
    host,
    reader: readerFor(root),
    live: isLiveRoot(root),
    ...(target === null ? {} : { libvirtProbe: libvirtProbe(target.uri, target.options) }),
  });
  io.out(
    values.json ? `${JSON.stringify(findings, null, 2)}\n` : renderFindings(findings, io.color),
  );
  return findings.some((f) => f.status === "fail") ? 1 : 0;
}
