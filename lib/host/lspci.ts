/**
 * One `lspci -nnkD` run and its parser. Discovery takes IDs, class, driver, groups, slots, FLR
 * and the serial number from sysfs and config space (the truth) and only what sysfs lacks from
 * here: human names and kernel modules (lspci finds those through libkmod).
 *
 * Why `-nnkD`: it is the least output that holds both (`-vvv` adds every capability, which
 * discovery reads from config space itself; docs/BENCHMARKS.md compares `-vmm`). It joins the
 * vendor and device names, so {@link splitVendorName} separates them with the vendor table of the
 * same `pci.ids` file lspci reads.
 *
 * @module
 */

import type { PciAddress } from "./types.ts";
import { canonicalPciAddress } from "../pci/address.ts";
import { isAbsolute } from "../state/paths.ts";

/** Runs `lspci` with an argument array and resolves to its standard output. */
export type LspciRunner = (args: string[]) => Promise<string>;

/** What one device's `lspci -nnkD` paragraph says. */
export interface LspciRecord {
  address: PciAddress;
  className: string | null;
  /** Vendor and device names as lspci joins them (`NVIDIA Corporation GP104 [GeForce GTX 1080]`). */
  vendorDeviceName: string | null;
  vendorId: string;
  deviceId: string;
  driver: string | null;
  modules: string[];
}

/** Raised when `lspci` cannot run or fails. */
export class LspciError extends Error {
  /** The error's name. */
  override name = "LspciError";
  /** The arguments lspci was run with. */
  readonly args: string[];
  /** Builds the error; `message` says what failed (spawn error, exit status, stderr). */
  constructor(message: string, args: string[], options?: ErrorOptions) {
    super(message, options);
    this.args = args;
  }
}

/** The flags discovery runs lspci with (plus `-O sysfs.path=ROOT/bus/pci` for a tree). */
const LSPCI_FLAGS: readonly string[] = ["-nnkD"];

/** The argument array for one discovery run over `root` (`/sys` or a captured tree). */
export function lspciArgs(root: string): string[] {
  const args = [...LSPCI_FLAGS];
  // Absolute: lspci runs in `/` (see runLspci), not in this process's working directory. The
  // working directory prefixed, not the path normalised: `link/../tree` is the kernel's (the tree
  // beside where `link` points, which the reader reads), not `tree` here.
  if (root.replace(/\/+$/, "") !== "/sys") {
    const path = isAbsolute(root) ? root : `${Deno.cwd()}/${root}`;
    args.unshift("-O", `sysfs.path=${path}/bus/pci`);
  }
  return args;
}

/**
 * How long one lspci run may take before it is killed. lspci over a host's few hundred
 * functions takes well under a second; one that runs this long is blocked on a file, and
 * discovery must fail clearly rather than hang.
 */
const LSPCI_TIME_LIMIT_MS = 10_000;

/**
 * The default runner: `Deno.Command("lspci", { args })`, an argument array, never a shell, with
 * 10 seconds to finish.
 */
export function commandLspciRunner(program = "lspci"): LspciRunner {
  return (args) => runLspci(program, args, LSPCI_TIME_LIMIT_MS);
}

/**
 * Runs `program args` (no shell, no stdin) and resolves to its standard output. stderr is read
 * and only shown when it fails (lspci prints a harmless libkmod warning on hosts without
 * `/lib/modules`). A run still going after `timeLimitMs` is killed and reported: discovery
 * checks a captured tree before lspci reads it (`checkCapturedTree` in `sysfs.ts`), and this is
 * the backstop for what no check foresees.
 */
export async function runLspci(
  program: string,
  args: string[],
  timeLimitMs: number,
): Promise<string> {
  let child: Deno.ChildProcess;
  try {
    // In `/`: Deno starts a child in this process's working directory, and one this user may
    // not enter (`sudo -u alice` or `su alice` from root's home) failed every command with
    // "Failed to spawn '/usr/bin/lspci': Permission denied", blaming lspci.
    child = new Deno.Command(program, {
      args,
      cwd: "/",
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      // Found through PATH, which may lack the directory of an installed lspci (a cron job's or
      // a unit's PATH where pciutils keeps it in /usr/sbin): both fixes are named.
      throw new LspciError(
        `Cannot run "${program}": not found in any directory on PATH: install pciutils, or add the directory holding it to PATH`,
        args,
        { cause: error },
      );
    }
    throw error;
  }
  const limit = killWhenHung(child, timeLimitMs);
  let output: Deno.CommandOutput;
  try {
    output = await child.output();
  } finally {
    limit.stop();
  }
  const command = [program, ...args].join(" ");
  if (limit.killed()) {
    throw new LspciError(
      `"${command}" did not finish within ${timeLimitMs} ms and was killed: a file it reads blocks (a FIFO or device in a captured tree) or the host's PCI access hangs`,
      args,
    );
  }
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr).trim();
    // A crash leaves no message and an exit code of 128 plus its signal, which reads as lspci's.
    const how = output.signal === null
      ? `failed with exit code ${output.code}`
      : `was killed by signal ${output.signal}`;
    throw new LspciError(
      `"${command}" ${how}${stderr === "" ? " and printed no message" : `: ${stderr}`}`,
      args,
    );
  }
  return new TextDecoder().decode(output.stdout);
}

/**
 * Kills `child` once it has run `timeLimitMs` while this thread could read its output. While the
 * thread is blocked (opening libvirt, reading a large tree) the child finishes or waits on a
 * full pipe, and no timer fires. So the limit runs as ten ticks of a tenth each: a tick that
 * fires late counts once, not for the time the thread was away, so that wait is not blamed on the
 * child. A child that hangs while this thread waits on it is killed on time.
 */
function killWhenHung(
  child: Deno.ChildProcess,
  timeLimitMs: number,
): { killed(): boolean; stop(): void } {
  let killed = false;
  let ticks = 0;
  let signal: AbortSignal;
  const expire = () => {
    if (++ticks < 10) return arm();
    try {
      child.kill("SIGKILL");
      killed = true;
    } catch {
      // It ended before the kill (not yet collected): its own outcome stands.
    }
  };
  // Not setTimeout: in Deno that loads its Node compatibility layer (timers) at every start.
  const arm = () => {
    signal = AbortSignal.timeout(timeLimitMs / 10);
    signal.addEventListener("abort", expire);
  };
  arm();
  return { killed: () => killed, stop: () => signal.removeEventListener("abort", expire) };
}

const HEADER =
  /^(\S+) (.*?) ?\[([0-9a-f]{4})\]: (.*?) ?\[([0-9a-f]{4}):([0-9a-f]{4})\](?: \(rev [0-9a-f]{2}\))?(?: \(prog-if [0-9a-f]{2}(?: \[.*\])?\))?\s*$/i;

/**
 * Parses `lspci -nnkD` output into one record per device, keyed by canonical address. Unknown
 * lines are ignored, so newer lspci versions (or more `-v`) that print more still parse.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const text = [
 *   "0000:01:00.0 VGA compatible controller [0300]: NVIDIA Corporation GP104 [10de:1b80] (rev a1)",
 *   "\tKernel driver in use: vfio-pci",
 *   "\tKernel modules: nouveau",
 *   "",
 * ].join("\n");
 * const record = parseLspci(text).get("0000:01:00.0");
 * assertEquals(record?.driver, "vfio-pci");
 * assertEquals(record?.modules, ["nouveau"]);
 * ```
 */
export function parseLspci(text: string): Map<PciAddress, LspciRecord> {
  const records = new Map<PciAddress, LspciRecord>();
  for (const paragraph of text.split(/\n(?=\S)/)) {
    const lines = paragraph.split("\n");
    const header = HEADER.exec(lines[0] ?? "");
    if (!header) continue;
    const address = canonicalPciAddress(header[1] ?? "");
    if (address === null) continue;
    const className = (header[2] ?? "").trim();
    const joined = (header[4] ?? "").trim();
    const record: LspciRecord = {
      address,
      className: className === "" || className === "Class" ? null : className,
      vendorDeviceName: joined === "" || joined === "Device" ? null : joined,
      vendorId: (header[5] ?? "").toLowerCase(),
      deviceId: (header[6] ?? "").toLowerCase(),
      driver: null,
      modules: [],
    };
    for (const line of lines.slice(1)) {
      let m: RegExpExecArray | null;
      if ((m = /^\tKernel driver in use: (.+)$/.exec(line))) record.driver = m[1] ?? null;
      else if ((m = /^\tKernel modules: (.+)$/.exec(line))) {
        record.modules = (m[1] ?? "").split(",").map((x) => x.trim()).filter((x) => x !== "");
      }
    }
    records.set(address, record);
  }
  return records;
}

/**
 * Looks a vendor's name up by its ID (4 hex digits without `0x`, any case), as written in the
 * `pci.ids` file lspci uses; `null` when the vendor is unknown. Discovery uses it to cut lspci's
 * joined "vendor device" name in two.
 */
export type VendorNames = (vendorId: string) => string | null;

const PCI_IDS_PATHS = ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"];

/**
 * Looks vendor names up in `pci.ids` (vendor lines only): the first readable file of `paths`
 * (default: `/usr/share/misc/pci.ids`, then `/usr/share/hwdata/pci.ids`) is read on the first
 * lookup, and each vendor asked for is found by one search for its line (`XXXX  Name` at the
 * start of a line; device lines start with a tab), remembered for the next device of the same
 * vendor: a host has a few dozen vendors, `pci.ids` thousands, so nothing indexes them all.
 * Returns a lookup that always answers `null` when no file is readable.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/pci.ids`, "# comment\n10de  NVIDIA Corporation\n\t1b80  GP104\n");
 * const names = pciIdsVendorNames([`${dir}/pci.ids`]);
 * assertEquals(names("10DE"), "NVIDIA Corporation");
 * assertEquals(names("1b80"), null);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function pciIdsVendorNames(paths: readonly string[] = PCI_IDS_PATHS): VendorNames {
  let text: string | null | undefined;
  const found = new Map<string, string | null>();
  return (vendorId) => {
    if (text === undefined) {
      text = null;
      for (const path of paths) {
        try {
          text = Deno.readTextFileSync(path);
          break;
        } catch {
          // Try the next location; names are optional.
        }
      }
    }
    const id = vendorId.toLowerCase();
    let name = found.get(id);
    if (name === undefined) {
      name = text === null ? null : vendorLine(text, id);
      found.set(id, name);
    }
    return name;
  };
}

/**
 * The name on the first `XXXX  Name` line of `pci.ids` for vendor `id` (lower case), as lspci's
 * own lookup takes the first; `null` when there is none or `id` is not 4 lower-case hex digits.
 */
function vendorLine(text: string, id: string): string | null {
  if (!/^[0-9a-f]{4}$/.test(id)) return null;
  const line = `${id}  `;
  let start = 0;
  if (!text.startsWith(line)) {
    const at = text.indexOf(`\n${line}`);
    if (at < 0) return null;
    start = at + 1;
  }
  const end = text.indexOf("\n", start);
  return text.slice(start + line.length, end < 0 ? text.length : end).trim();
}

/**
 * Splits lspci's joined `VENDOR DEVICE` name with a known vendor name. When the vendor is
 * unknown the whole text is taken as the device name; lspci's placeholder `Device` becomes null.
 */
export function splitVendorName(
  joined: string | null,
  vendorName: string | null,
): { vendorName: string | null; deviceName: string | null } {
  if (joined === null) return { vendorName, deviceName: null };
  if (vendorName !== null && (joined === vendorName || joined.startsWith(`${vendorName} `))) {
    const rest = joined.slice(vendorName.length).trim();
    return { vendorName, deviceName: rest === "" || rest === "Device" ? null : rest };
  }
  return { vendorName, deviceName: joined };
}
