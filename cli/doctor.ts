/**
 * `passthrough doctor`: is this host ready for PCI passthrough? Exit 0 when nothing fails, 1
 * when a check fails.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type CliIo, type Command, UsageError } from "./context.ts";
import { type DoctorFinding, runDoctor } from "../lib/host/doctor.ts";
import { isLiveRoot, LIVE_SYSFS, loadHost, readerFor } from "./host_options.ts";
import { painter } from "../lib/render/colors.ts";
import { Connection } from "../ffi/connection.ts";

const HELP = `Usage: passthrough doctor [--json] [--sysfs DIR] [--uri URI] [--no-libvirt]

Checks that this host can pass PCI devices through: IOMMU on, interrupt remapping,
vfio-pci available, no ACS override, libvirt reachable. Exit 1 when a check fails.

Options:
  --json        Print the findings as JSON
  --sysfs DIR   Check a captured sysfs tree instead of /sys (host-only checks become warnings)
  --uri URI     libvirt URI to probe (default: LIBVIRT_DEFAULT_URI or libvirt's default)
  --no-libvirt  Skip the libvirt check
  -h, --help    Show this help
`;

/** Opens `uri` read-only and describes it; the error when it cannot. */
export function libvirtProbe(uri: string | null): () => string | Error {
  return () => {
    try {
      using conn = Connection.open(uri, { readOnly: true });
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

/** The `doctor` command with an injected libvirt probe (tests, or a pre-opened connection). */
export function createDoctorCommand(
  options: { probe?: (uri: string | null) => () => string | Error } = {},
): Command {
  return {
    name: "doctor",
    summary: "check that this host is ready for PCI passthrough",
    help: HELP,
    async run(args: string[], io: CliIo): Promise<number> {
      let values;
      try {
        ({ values } = parseArgs({
          args,
          options: {
            json: { type: "boolean" },
            sysfs: { type: "string" },
            uri: { type: "string" },
            "no-libvirt": { type: "boolean" },
          },
          strict: true,
          allowPositionals: false,
        }));
      } catch (error) {
        throw new UsageError((error as Error).message);
      }
      const root = values.sysfs ?? LIVE_SYSFS;
      const host = await loadHost(root);
      const live = isLiveRoot(root);
      const uri = values.uri ?? io.env("LIBVIRT_DEFAULT_URI") ?? null;
      const makeProbe = options.probe ?? libvirtProbe;
      const findings = runDoctor({
        host,
        reader: readerFor(root),
        live,
        ...(values["no-libvirt"] ? {} : { libvirtProbe: makeProbe(uri) }),
      });
      io.out(
        values.json ? `${JSON.stringify(findings, null, 2)}\n` : renderFindings(findings, io.color),
      );
      return findings.some((f) => f.status === "fail") ? 1 : 0;
    },
  };
}

/** The `doctor` command probing libvirt through `ffi/`. */
export const doctorCommand: Command = createDoctorCommand();
