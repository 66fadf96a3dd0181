/**
 * Host readiness checks for passthrough: IOMMU on, interrupt remapping, `vfio-pci` available,
 * ACS override, libvirt reachable, the start guard's hook in place and seen by the daemon. Each
 * finding says what is wrong and what to do.
 *
 * Interrupt remapping is judged without `dmesg` (unreadable without privileges): the IOMMU's
 * own capability register in `/sys/class/iommu/dmar*\/intel-iommu/ecap` (bit 3, IR), AMD's
 * `ivhd*` units (AMD-Vi always remaps interrupts unless disabled), and the command line
 * (`intremap=off` or `intremap=nosid,off`, `nointremap`, `allow_unsafe_interrupts`).
 *
 * @module
 */

import type { HostTopology, PciDevice } from "./types.ts";
import { readAttribute, readWholeText, type SysfsReader } from "./sysfs.ts";
import { busOf, slotOf } from "../pci/address.ts";
import { cardOf } from "../resolve/host_critical.ts";
import {
  foreignHookAdvice,
  GUARD_SCOPE,
  hookFileProblems,
  type HookInspection,
  installCommand,
  otherHookProblem,
  type StaleBundle,
  unreadableHookReason,
} from "../guard/hook_file.ts";
import { dirname } from "../state/paths.ts";
import { shellWord } from "../render/shell.ts";
import { libvirtAccessAdvice, someOf } from "../render/error_text.ts";
import { isRemoteUri, sessionDriver } from "../config/uri.ts";
import type { RunningDaemon } from "../guard/daemon.ts";
import type { ReloadRecord } from "../guard/state.ts";
import { driverUsers, type HostFacts, resetVerdict } from "./preflight.ts";
import {
  CMDLINE_SOURCE,
  cmdlineVfioIds,
  driverctlOverride,
  driverctlOverrides,
  keptVfioIds,
  kernelParams,
  kernelTrue,
  modprobeOptions,
  modprobeVfioIds,
  REBUILD_INITRAMFS,
  softdepLine,
  type VfioIdsAssignment,
  vfioIdsBinding,
  type VfioIdsEntry,
  vfioIdsKey,
  vfioIdsMatch,
} from "./boot_binding.ts";

/** How a check came out. `fail` blocks passthrough; `warn` needs the user's judgement. */
export type DoctorStatus = "ok" | "warn" | "fail";

/** One check's outcome. */
export interface DoctorFinding {
  /**
   * Stable identifier: `iommu`, `interrupt-remapping`, `vfio-pci`, `acs-override`, `boot-vga`,
   * `host-driver-busy`, `reset`, `host-input`, `libvirt`, `hook`, `boot-binding`, `driverctl`,
   * `bundle`.
   */
  check: string;
  /** How the check came out: `fail` blocks passthrough, `warn` needs the user's judgement. */
  status: DoctorStatus;
  /** What was found, one sentence. */
  summary: string;
  /** What to do about it, or `null` when nothing is needed. */
  hint: string | null;
}

/** Options of {@link runDoctor}. */
export interface DoctorOptions {
  /** The discovered host. */
  host: HostTopology;
  /** Reads the live host's `/sys`, `/proc` and `/lib/modules` (libc reader on a live host). */
  reader: SysfsReader;
  /** Whether `host` is this machine (else a captured tree: module and IOMMU units unknown). */
  live: boolean;
  /** The sysfs root of the live host. Default `/sys`. */
  sysRoot?: string;
  /** Default `/proc` on a live host, the tree's `proc/` for a captured one. */
  procRoot?: string;
  /** Default `/lib/modules`. */
  modulesRoot?: string;
  /** Where modprobe's configuration is read on a live host. Default `MODPROBE_DIRS`. */
  modprobeDirs?: readonly string[];
  /** Where driverctl keeps its overrides on a live host. Default `DRIVERCTL_DIR`. */
  driverctlDir?: string;
  /** Opens libvirt and says how far it let this user in ({@link LibvirtReach}). */
  libvirtProbe?: () => LibvirtReach;
  /**
   * The start guard's hook and what runs it (live hosts only): adds the `hook` finding; the
   * error when the hooks directory could not be read (another user than root).
   */
  hook?: HookDoctorFacts | Error;
  /**
   * The bundle this doctor runs from when it was built from other sources than those beside it
   * (`bin/passthrough` runs it while no source is newer): adds the `bundle` finding.
   */
  bundle?: StaleBundle | null;
  /**
   * The host's pre-flight facts (`readHostFacts`): adds the host-wide `boot-vga`,
   * `host-driver-busy`, `reset` and `host-input` findings, each left out when its facts are
   * unknown (`host-input` also when no input device hangs under a PCI function).
   */
  facts?: HostFacts;
}

/** What the `hook` finding judges. */
export interface HookDoctorFacts {
  /** The installed hook (`inspectHook`). */
  inspection: HookInspection;
  /** Whether libvirt's system daemon runs the hooks of the hook's directory (`readByLibvirt`). */
  readByLibvirt: boolean;
  /** This passthrough's version. */
  version: string;
  /** The running libvirtd/virtqemud (`findHookDaemons`). */
  daemons: RunningDaemon[];
  /** Reloads `hook install` recorded in the hook's state directory. */
  reloads: ReloadRecord[];
  /**
   * `null` when SELinux is off (no `/sys/fs/selinux/enforce`); else the hook's label
   * (`security.selinux`, `null` when unreadable) and whether it is enforcing.
   */
  selinux: { enforcing: boolean; label: string | null } | null;
  /** The bundle the hook runs when it is older than its sources (`staleBundle`). */
  staleBundle?: StaleBundle | null;
}

function cmdlineHas(cmdline: string | null, pattern: RegExp): string | null {
  if (cmdline === null) return null;
  for (const word of cmdline.split(/\s+/)) if (pattern.test(word)) return word;
  return null;
}

/** The CPU maker, whose IOMMU (VT-d or AMD-Vi) the hints name. */
export type CpuVendor = "intel" | "amd" | null;

/**
 * The CPU maker: `vendor_id` in `/proc/cpuinfo` (a captured tree's `proc/cpuinfo`); when it is
 * missing or unreadable, the host bridge's PCI vendor, which is the CPU maker's on x86.
 */
export function cpuVendor(options: DoctorOptions): CpuVendor {
  const procRoot = options.procRoot ?? (options.live ? "/proc" : `${options.host.source}/proc`);
  // The head is enough: the first CPU's block names the vendor, and every CPU's is the same.
  const cpuinfo = options.reader.readText(`${procRoot}/cpuinfo`) ?? "";
  const id = /^vendor_id\s*:\s*(\S+)/m.exec(cpuinfo)?.[1];
  if (id === "GenuineIntel") return "intel";
  if (id === "AuthenticAMD" || id === "HygonGenuine") return "amd";
  const bridge = options.host.devices.find((d) => d.classCode.startsWith("0600"))?.vendorId;
  return bridge === "8086" ? "intel" : bridge === "1022" || bridge === "1d94" ? "amd" : null;
}

function iommuHint(vendor: CpuVendor): string {
  const check = "reboot, and check that /sys/kernel/iommu_groups is populated";
  if (vendor === "intel") {
    return `Enable VT-d in the firmware setup, add intel_iommu=on to the kernel command line, ${check}`;
  }
  if (vendor === "amd") {
    return `Enable the IOMMU (AMD-Vi; "IOMMU" or "AMD-Vi" in the firmware setup, next to SVM), make sure the kernel command line has no amd_iommu=off or iommu=off (the kernel turns it on by default; amd_iommu=on is no option of it), ${check}`;
  }
  return `Enable VT-d (Intel) or AMD-Vi (AMD) in the firmware setup, add intel_iommu=on to the kernel command line (Intel; AMD's IOMMU is on by default unless amd_iommu=off or iommu=off says otherwise), ${check}`;
}

function checkIommu(host: HostTopology, vendor: CpuVendor): DoctorFinding {
  if (host.iommu === "enabled") {
    return {
      check: "iommu",
      status: "ok",
      summary: `IOMMU on: ${host.groups.length} groups over ${host.devices.length} devices`,
      hint: null,
    };
  }
  return {
    check: "iommu",
    status: "fail",
    summary: "No IOMMU groups: the IOMMU is off or absent, so no device can be isolated",
    hint: iommuHint(vendor),
  };
}

/**
 * The word of the command line that leaves interrupt remapping off, or `null`. The kernel reads
 * the words in order up to a bare `--` (`parse_args()`), each `on` or `off` undoing the one before:
 * `intremap=` is a comma list whose items it compares by prefix (`setup_irqremapping()`:
 * `intremap=nosid,off` is off, `intremap=off intremap=on` on).
 */
function remappingOff(cmdline: string | null): string | null {
  let off: string | null = null;
  for (const { param, value } of kernelParams(cmdline ?? "")) {
    if (param === "--" && value === null) break;
    const word = value === null ? param : `${param}=${value}`;
    if (word === "nointremap" || /^intel_iommu=.*\birq_remap_off\b/.test(word)) off = word;
    if (param !== "intremap" || value === null) continue;
    for (const item of value.split(",")) {
      if (item.startsWith("on")) off = null;
      else if (item.startsWith("off")) off = word;
    }
  }
  return off;
}

/**
 * `null` on a captured tree whose command line says nothing against remapping: the IOMMU units
 * are not part of a tree, so there is nothing to judge and nothing the user could do.
 */
function checkInterruptRemapping(options: DoctorOptions, vendor: CpuVendor): DoctorFinding | null {
  const { host, reader, live } = options;
  const sysRoot = options.sysRoot ?? "/sys";
  const cmdline = host.kernelCmdline;
  const off = remappingOff(cmdline);
  if (off !== null) {
    return {
      check: "interrupt-remapping",
      status: "fail",
      summary: `Interrupt remapping is disabled on the kernel command line: "${off}"`,
      hint:
        `Remove "${off}" from the kernel command line; without remapping a guest can forge interrupts`,
    };
  }
  // The module takes the parameter from modprobe.d, then the command line, when it loads (libvirt
  // loads it at the first start): the last one given counts, as its value reads now once loaded.
  // The kernel matches parameter names with dashes and underscores alike. Built in, it takes the
  // command line's only, and not past a bare `--` (the kernel gives the rest to init).
  const builtIn = moduleBuiltIn(options, "vfio_iommu_type1");
  let toInit = false;
  const given = [
    ...(live && !builtIn ? modprobeOptions(reader, "vfio_iommu_type1", options.modprobeDirs) : []),
    ...kernelParams(cmdline ?? "").flatMap((p) => {
      if (p.param === "--" && p.value === null) toInit = true;
      if (toInit && builtIn) return [];
      const [module, param] = p.param.replaceAll("-", "_").split(".");
      return module === "vfio_iommu_type1"
        ? [{ ...p, param: param ?? "", source: CMDLINE_SOURCE }]
        : [];
    }),
  ].filter((p) => p.param.replaceAll("-", "_") === "allow_unsafe_interrupts").at(-1);
  const unsafe = given !== undefined && kernelTrue(given.value)
    ? `${given.source === CMDLINE_SOURCE ? "vfio_iommu_type1." : ""}allow_unsafe_interrupts${
      given.value === null ? "" : `=${given.value}`
    } ${given.source === CMDLINE_SOURCE ? "on the kernel command line" : `in ${given.source}`}`
    : null;
  const unsafeParam = live
    ? readAttribute(reader, `${sysRoot}/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts`)
    : null;
  if (unsafe !== null || unsafeParam === "Y") {
    return {
      check: "interrupt-remapping",
      status: "warn",
      summary: `Unsafe interrupts are allowed (${unsafe ?? "allow_unsafe_interrupts=Y"})`,
      hint:
        "Only acceptable when the platform cannot remap interrupts; a guest may then inject interrupts into the host",
    };
  }
  if (host.iommu === "absent") {
    return {
      check: "interrupt-remapping",
      status: "fail",
      summary: "No IOMMU, so no interrupt remapping",
      hint: "Enable the IOMMU first (see the iommu check)",
    };
  }
  return live ? remappingUnits(reader, sysRoot, vendor) : null;
}

/** Whether the live host's IOMMU units remap interrupts (VT-d's ecap IR bit; AMD-Vi always). */
function remappingUnits(reader: SysfsReader, sysRoot: string, vendor: CpuVendor): DoctorFinding {
  const units = reader.listDir(`${sysRoot}/class/iommu`) ?? [];
  const intel = units.filter((u) => u.startsWith("dmar"));
  const amd = units.filter((u) => u.startsWith("ivhd"));
  if (intel.length > 0) {
    const withoutIr = intel.filter((u) => {
      const ecap = readAttribute(reader, `${sysRoot}/class/iommu/${u}/intel-iommu/ecap`);
      return ecap === null || (parseInt(ecap, 16) & 0x8) === 0;
    });
    if (withoutIr.length === 0) {
      return {
        check: "interrupt-remapping",
        status: "ok",
        summary: `Interrupt remapping supported by every VT-d unit (${intel.join(", ")})`,
        hint: null,
      };
    }
    return {
      check: "interrupt-remapping",
      status: "warn",
      summary: `VT-d units without interrupt remapping (ecap IR bit clear): ${
        withoutIr.join(", ")
      }`,
      hint:
        "Check the firmware for an interrupt remapping option (x2APIC); VFIO refuses such devices unless unsafe interrupts are allowed",
    };
  }
  if (amd.length > 0) {
    return {
      check: "interrupt-remapping",
      status: "ok",
      summary: `AMD-Vi units present (${amd.join(", ")}); they remap interrupts unless disabled`,
      hint: null,
    };
  }
  return {
    check: "interrupt-remapping",
    status: "warn",
    summary: "IOMMU groups exist but no IOMMU unit is listed under /sys/class/iommu",
    hint: `Check the kernel log as root: ${
      vendor === "amd"
        ? "dmesg | grep -i AMD-Vi"
        : vendor === "intel"
        ? "dmesg | grep -i -e DMAR -e remapping"
        : "dmesg | grep -i -e DMAR -e AMD-Vi -e remapping"
    }`,
  };
}

const VFIO_PCI_FILES = ["vfio-pci.ko", "vfio-pci.ko.xz", "vfio-pci.ko.zst", "vfio-pci.ko.gz"];

/** `null` on a captured tree without a device bound to vfio-pci: its modules are not in a tree. */
function checkVfioPci(options: DoctorOptions): DoctorFinding | null {
  const { host, reader, live } = options;
  const bound = host.devices.filter((d) => d.driver === "vfio-pci").length;
  if (!live) {
    return bound > 0
      ? {
        check: "vfio-pci",
        status: "ok",
        summary: `vfio-pci is bound to ${bound} devices in the captured tree`,
        hint: null,
      }
      : null;
  }
  const sysRoot = options.sysRoot ?? "/sys";
  if (reader.listDir(`${sysRoot}/bus/pci/drivers/vfio-pci`) !== null) {
    return {
      check: "vfio-pci",
      status: "ok",
      summary: `vfio-pci is loaded${bound > 0 ? ` and bound to ${bound} devices` : ""}`,
      hint: null,
    };
  }
  if (reader.listDir(`${sysRoot}/module/vfio_pci`) !== null) {
    return { check: "vfio-pci", status: "ok", summary: "vfio-pci is loaded", hint: null };
  }
  const release = kernelRelease(options);
  if (release !== null) {
    if (moduleBuiltIn(options, "vfio_pci")) {
      return {
        check: "vfio-pci",
        status: "ok",
        summary: "vfio-pci is built into the kernel",
        hint: null,
      };
    }
    const dir = `${options.modulesRoot ?? "/lib/modules"}/${release}/kernel/drivers/vfio/pci`;
    const found = (reader.listDir(dir) ?? []).find((f) => VFIO_PCI_FILES.includes(f));
    if (found !== undefined) {
      return {
        check: "vfio-pci",
        status: "ok",
        summary:
          `vfio-pci is available as a module (${dir}/${found}); libvirt loads it when needed`,
        hint: null,
      };
    }
  }
  return {
    check: "vfio-pci",
    status: "fail",
    summary: `vfio-pci is neither loaded nor installed for kernel "${release ?? "unknown"}"`,
    hint:
      "Install the kernel's modules package (it ships vfio-pci) or build the kernel with CONFIG_VFIO_PCI",
  };
}

/** The running kernel's release (`6.1.0-18-amd64`), on the live host; `null` when unknown. */
function kernelRelease(options: DoctorOptions): string | null {
  if (!options.live) return null;
  return readAttribute(options.reader, `${options.procRoot ?? "/proc"}/sys/kernel/osrelease`);
}

/**
 * Whether the live host's kernel has `module` (`vfio_pci`) built in: its `modules.builtin` lists
 * it, by file name (`vfio-pci.ko`), dashes and underscores alike as kmod matches them.
 */
function moduleBuiltIn(options: DoctorOptions, module: string): boolean {
  const release = kernelRelease(options);
  if (release === null) return false;
  const builtin = readWholeText(
    options.reader,
    `${options.modulesRoot ?? "/lib/modules"}/${release}/modules.builtin`,
  ) ?? "";
  const wanted = `${module.replaceAll("-", "_")}.ko`;
  return builtin.split("\n").some((line) =>
    line.slice(line.lastIndexOf("/") + 1).replaceAll("-", "_") === wanted
  );
}

/**
 * Where the unknown kernel command line can be found. Not 'passthrough snapshot' of what doctor
 * read: it records the command line from the same place, so its capture has none either.
 */
function unknownCmdlineHint(host: HostTopology, live: boolean): string {
  return live
    ? `Run doctor where "/proc/cmdline" can be read (with /proc mounted): the kernel gives its command line there`
    : `Copy the host's /proc/cmdline to "${host.source}/cmdline", or run 'passthrough snapshot' on that host itself, which records it`;
}

function checkAcsOverride(host: HostTopology, live: boolean): DoctorFinding {
  const word = cmdlineHas(host.kernelCmdline, /^pcie_acs_override=/);
  if (word !== null) {
    return {
      check: "acs-override",
      status: "warn",
      summary: `ACS override is on ("${word}"): IOMMU groups no longer mean isolation`,
      hint:
        "Devices split into separate groups by the override can still reach each other by peer-to-peer DMA; remove it unless you accept that risk",
    };
  }
  if (host.kernelCmdline === null) {
    return {
      check: "acs-override",
      status: "warn",
      summary: "Kernel command line unknown, so an ACS override cannot be ruled out",
      hint: unknownCmdlineHint(host, live),
    };
  }
  return { check: "acs-override", status: "ok", summary: "No ACS override", hint: null };
}

/** A connection libvirt opened: its URI and the daemon's libvirt version (`9.0.0`). */
export interface LibvirtConnected {
  /** The URI libvirt says it connected to. */
  uri: string;
  /** The version of libvirt the daemon runs (`virConnectGetLibVersion`). */
  version: string;
}

/**
 * How far libvirt let this user in: the connection when it opened read-write; the read-only one
 * and the refusal of read-write when only that opened (a socket or polkit that shuts this user
 * out of managing it); the error when it did not open at all.
 */
export type LibvirtReach = LibvirtConnected | Error | {
  readOnly: LibvirtConnected;
  refused: Error;
};

/** The probe's answer, a throw taken as the error it is. */
function reachOf(probe: () => LibvirtReach): LibvirtReach {
  try {
    return probe();
  } catch (error) {
    return error instanceof Error ? error : new Error(String(error));
  }
}

/** `qemu:///system (libvirt 9.0.0)`. */
function describeConnection(connected: LibvirtConnected): string {
  return `${connected.uri} (libvirt ${connected.version})`;
}

/**
 * The libvirt version of this host's daemon, when the probe reached one here: a URI naming
 * another host (`qemu+ssh://far/system`) says nothing of the hooks this host runs.
 */
function localLibvirtVersion(reach: LibvirtReach | undefined): string | null {
  if (reach === undefined || reach instanceof Error) return null;
  const connected = "readOnly" in reach ? reach.readOnly : reach;
  return isRemoteUri(connected.uri) ? null : connected.version;
}

function checkLibvirt(reach: LibvirtReach): DoctorFinding {
  if (reach instanceof Error) {
    const result = reach;
    return {
      check: "libvirt",
      status: "fail",
      summary: `Cannot reach libvirt: ${result.message}`,
      hint: libvirtAccessAdvice(result) ??
        "Start libvirtd (or virtqemud), check LIBVIRT_DEFAULT_URI or --connect, and that you may use its socket",
    };
  }
  if ("readOnly" in reach) {
    const result = reach;
    // The host may be ready; this user is not let in to change it.
    return {
      check: "libvirt",
      status: "warn",
      summary: `libvirt answers read-only only: ${
        describeConnection(result.readOnly)
      }; plan, apply and rollback, which open it read-write, are refused: ${result.refused.message}`,
      // Told apart only when refused here; a far host's refusal (over ssh) comes in its words.
      hint: libvirtAccessAdvice(result.refused) ??
        `connect as a user libvirt lets manage it: root, or (on Debian) a member of the "libvirt" group; over ssh, the user the URI logs in as on that host`,
    };
  }
  const result = describeConnection(reach);
  const session = sessionDriver(reach.uri);
  if (session !== null) {
    // libvirt's default for a user other than root: their own libvirt, without the host's VMs.
    return {
      check: "libvirt",
      status: "warn",
      summary:
        `libvirt reachable: ${result}, this user's own libvirt, not the host's: the host's VMs are in ${session}:///system`,
      hint:
        `pass --connect ${session}:///system (or set LIBVIRT_DEFAULT_URI), as root or a member of the "libvirt" group`,
    };
  }
  return { check: "libvirt", status: "ok", summary: `libvirt reachable: ${result}`, hint: null };
}

/** Which GPUs are the boot VGA, and whether a firmware framebuffer holds one. */
function checkBootVga(host: HostTopology, facts: HostFacts): DoctorFinding | null {
  const boot = host.devices.filter((d) => d.bootVga === true);
  if (boot.length === 0) return null;
  const fbs = facts.firmwareFramebuffers();
  const held = boot.filter((d) => (fbs?.get(d.address) ?? []).length > 0);
  const names = boot.map((d) => d.address).join(", ");
  if (held.length === 0) {
    return {
      check: "boot-vga",
      status: "ok",
      summary: `Boot VGA: ${names}${
        fbs === null ? " (/proc/iomem unreadable)" : "; no firmware framebuffer holds it"
      }`,
      hint: null,
    };
  }
  return {
    check: "boot-vga",
    status: "warn",
    summary: `Boot VGA ${
      held.map((d) => `${d.address} is held by ${fbs!.get(d.address)!.join(", ")}`).join("; ")
    }: vfio-pci cannot reserve its BAR if it is passed to a guest`,
    hint:
      "To pass it, boot with initcall_blacklist=sysfb_init (video=efifb:off before 5.15); else pass a secondary GPU",
  };
}

/**
 * What `vfio-pci.ids` entries take at boot: every device of the listed IDs, so an entry meant for
 * a guest's card also takes a device the host uses (fail) or another card of the model (warn).
 */
function checkBootBindings(options: DoctorOptions): DoctorFinding | null {
  const { host } = options;
  const cmdline = cmdlineVfioIds(host.kernelCmdline);
  const modprobe = options.live ? modprobeVfioIds(options.reader, options.modprobeDirs) : [];
  // A built-in vfio-pci reads its ids from the kernel command line only, and not past a bare `--`
  // (the kernel gives the rest to init).
  const builtIn = moduleBuiltIn(options, "vfio_pci");
  const toInit = builtIn ? cmdline.filter((a) => a.toInit).flatMap((a) => a.entries) : [];
  const unseen = (e: VfioIdsEntry) =>
    builtIn && (e.source !== CMDLINE_SOURCE || toInit.includes(e));
  // modprobe gives the module modprobe.d's options, then the command line's.
  const { kept, overwritten, lost } = keptVfioIds(
    builtIn ? cmdline.filter((a) => !a.toInit) : [...modprobe, ...cmdline],
  );
  // Each entry once: the kept ones, those lost to a later ids=, and those a built-in ignores; of
  // an entry repeated in one ids=, the first (the repeat takes nothing more).
  const entries = [...cmdline, ...modprobe].flatMap((a) =>
    a.entries.filter((e, i) => a.entries.findIndex((o) => vfioIdsKey(o) === vfioIdsKey(e)) === i)
  ).filter((e) => kept?.entries.includes(e) || lost.includes(e) || unseen(e));
  if (entries.length === 0 && overwritten.length === 0) return null;
  // What else binds at boot lives in /etc, which a captured tree does not hold: the finding
  // covers the command line only, and says so.
  const unread = options.live
    ? ""
    : "; /etc/modprobe.d and /etc/driverctl.d not read (a captured tree holds no /etc)";
  const uses = new Map((host.hostUse ?? []).map((u) => [u.address, u.detail]));
  const found = entries.map((entry) => {
    // vfio-pci binds endpoints only (a bridge's header type is refused).
    const taken = host.devices.filter((d) => !d.isBridge && vfioIdsMatch(entry, d));
    // Cards as plan tells them: on a root bus, a slot's functions are devices of their own.
    const cards = new Set(taken.map(cardOf));
    const said = `vfio-pci.ids=${entry.text} (${entry.source})`;
    return { entry, taken, cards, said, needed: taken.filter((d) => uses.has(d.address)) };
  });
  // Only what vfio-pci is given takes devices: an entry of an overwritten ids=, or one a built-in
  // vfio-pci never reads, takes nothing at boot, whatever it would take were it given.
  const given = found.filter((f) => !unseen(f.entry) && !lost.includes(f.entry));
  const needed = given.filter((f) => f.needed.length > 0);
  const shared = given.filter((f) => f.cards.size > 1);
  const ignored = found.filter((f) => unseen(f.entry));
  // Those that would take the wrong devices there: no remedy carries them to where they count.
  const unsafe = found.filter((f) =>
    !given.includes(f) && (f.needed.length > 0 || f.cards.size > 1)
  );
  // Where an entry takes the wrong devices, loading vfio-pci first would make that worse; an
  // entry of an overwritten ids= takes nothing, whatever loads first.
  const late = lateBindings(
    found.filter((f) =>
      !needed.includes(f) && !shared.includes(f) && !ignored.includes(f) &&
      kept !== null && kept.entries.includes(f.entry)
    ),
    uses,
  );
  if (
    needed.length === 0 && shared.length === 0 && late.length === 0 && ignored.length === 0 &&
    overwritten.length === 0
  ) {
    return {
      check: "boot-binding",
      status: "ok",
      summary: `At boot ${
        found.map((f) =>
          `${f.said} takes ${
            f.taken.length === 0 ? "nothing here" : f.taken.map((d) => d.address).join(", ")
          }`
        ).join("; ")
      }${unread}`,
      hint: null,
    };
  }
  const sorted = { needed, shared, ignored, unsafe, late, kept, overwritten, uses, toInit };
  return {
    check: "boot-binding",
    status: needed.length > 0 ? "fail" : "warn",
    summary: `${bootBindingProblems(sorted, builtIn).join("; ")}${unread}`,
    hint: bootBindingHints(sorted, options, builtIn).join("; and "),
  };
}

/** One `vfio-pci.ids` entry, as {@link checkBootBindings} finds it, and what it takes. */
interface BootEntry {
  entry: VfioIdsEntry;
  /** The devices of the host it matches (endpoints only). */
  taken: PciDevice[];
  /** The cards of those devices ({@link cardOf}). */
  cards: Set<string>;
  /** How messages name it: the entry and where it is written. */
  said: string;
  /** The devices it takes that the host uses. */
  needed: PciDevice[];
}

/** The boot entries sorted by what is wrong with them, as {@link checkBootBindings} sorts them. */
interface BootEntries {
  needed: BootEntry[];
  shared: BootEntry[];
  ignored: BootEntry[];
  unsafe: BootEntry[];
  late: ReturnType<typeof lateBindings>;
  kept: VfioIdsAssignment | null;
  overwritten: VfioIdsAssignment[];
  uses: Map<string, string>;
  toInit: VfioIdsEntry[];
}

/** What is wrong with the boot entries, one text each. */
function bootBindingProblems(sorted: BootEntries, builtIn: boolean): string[] {
  const { needed, shared, ignored, late, kept, overwritten, uses, toInit } = sorted;
  return [
    ...needed.map((f) =>
      `${f.said} would take ${
        f.needed.map((d) => `${d.address}, which the host uses (${uses.get(d.address)})`).join(
          "; ",
        )
      }, at a boot where vfio-pci probes it before its driver does`
    ),
    ...shared.filter((f) => !needed.includes(f)).map((f) =>
      `${f.said} takes every card of that model: ${
        f.taken.map((d) => d.address).join(", ")
      }; the host can use none of them`
    ),
    ...ignored.map((f) =>
      toInit.includes(f.entry)
        ? `${f.said} is ignored: it comes after "--", which gives the rest of the line to init, and vfio-pci is built into this kernel`
        : `${f.said} is ignored: vfio-pci is built into this kernel, and modprobe.d options reach modules only`
    ),
    ...overwritten.map((a) =>
      `vfio-pci.ids=${a.value} (${a.source}) takes nothing at boot: vfio-pci.ids=${kept!.value} (${
        kept!.source
      }) comes after it, and vfio-pci keeps only the last ids= it is given`
    ),
    ...late.map(({ said, device, driver, cmdline }) =>
      `${said} did not take ${device.address}${
        cmdline ? " at this boot" : " (if it was there at this boot)"
      }: "${driver}" holds it, ${
        builtIn
          ? "though vfio-pci is built into this kernel"
          : "probably because it loaded before vfio-pci"
      }`
    ),
  ];
}

/** How to fix what {@link bootBindingProblems} finds, one text each. */
function bootBindingHints(sorted: BootEntries, options: DoctorOptions, builtIn: boolean): string[] {
  const { needed, shared, ignored, unsafe, late, kept, overwritten, uses, toInit } = sorted;
  const { host } = options;
  const wrong = [...needed, ...shared];
  return [
    ...(wrong.length === 0 ? [] : [
      `${remedies(wrong, uses, host.devices)}; then ${
        regenerate(wrong.map((f) => f.entry.source))
      }`,
    ]),
    ...ignoredRemedy(
      ignored.filter((f) => !unsafe.includes(f)),
      toInit.length > 0,
      kept?.entries.filter((e) => !wrong.some((f) => f.entry === e)) ?? null,
    ),
    ...overwrittenRemedy(
      kept,
      overwritten,
      new Set([...wrong, ...unsafe].map((f) => f.entry.text)),
    ),
    ...unsafe.map((f) =>
      `${
        ignored.includes(f)
          ? `do not put ${f.entry.text} on the kernel command line`
          : `leave ${f.entry.text} out of it`
      }: it would take ${
        f.needed.length > 0
          ? f.needed.map((d) => `${d.address}, which the host uses (${uses.get(d.address)})`)
            .join("; ")
          : `every card of that model: ${f.taken.map((d) => d.address).join(", ")}`
      }`
    ),
    ...lateRemedies(late, options.facts, builtIn),
  ];
}

/**
 * One `ids=` with the entries of the overwritten ones and the kept one, where the kept one is
 * written, but for entries that take the wrong devices (their own remedy says what to write).
 */
function overwrittenRemedy(
  kept: VfioIdsAssignment | null,
  overwritten: readonly VfioIdsAssignment[],
  wrong: ReadonlySet<string>,
): string[] {
  if (kept === null || overwritten.length === 0) return [];
  const given = [...overwritten, kept];
  const ids = [...new Set(given.flatMap((a) => a.entries.map((e) => e.text)))]
    .filter((text) => !wrong.has(text)).join(",");
  const one = kept.source === CMDLINE_SOURCE
    ? `vfio-pci.ids=${ids} on the kernel command line`
    : `"options vfio-pci ids=${ids}" in ${kept.source}`;
  const others = [
    ...new Set(
      overwritten.map((a) =>
        a.source === CMDLINE_SOURCE
          ? "the other vfio-pci.ids= from the kernel command line"
          : `the ids= from ${a.source}`
      ),
    ),
  ];
  return [
    `give vfio-pci one ids= with every entry: ${one}, and remove ${others.join(" and ")}; then ${
      regenerate(given.map((a) => a.source))
    }`,
  ];
}

/**
 * Where the ignored entries belong: on the kernel command line, in the `vfio-pci.ids=` the kernel
 * keeps there (its entries `kept`, but for the wrong ones) if there is one. Not one that takes a
 * device the host uses or every card of a model: there it would take them.
 */
function ignoredRemedy(
  ignored: readonly { entry: VfioIdsEntry }[],
  toInit: boolean,
  kept: readonly VfioIdsEntry[] | null,
): string[] {
  if (ignored.length === 0) return [];
  const texts = [...new Set(ignored.map((f) => f.entry.text))];
  const where = `the kernel command line${toInit ? ' before "--"' : ""}`;
  // A second vfio-pci.ids= would overwrite the one the kernel keeps now: extend that one.
  const put = kept === null
    ? `put ${texts.join(",")} on ${where} as vfio-pci.ids= instead`
    : `add ${
      texts.join(",")
    } to the vfio-pci.ids= on ${where}, not as a second one (vfio-pci keeps only the last): vfio-pci.ids=${
      [...new Set([...kept.map((e) => e.text), ...texts])].join(",")
    }`;
  return [`${put}; then ${regenerate([CMDLINE_SOURCE])}`];
}

/**
 * The devices an entry takes that another driver holds now, but for the host's own (a failure of
 * their own) and those bound to pci-stub or a vfio driver on purpose. vfio-pci binds by IDs only a
 * device no driver has taken yet, so a driver that loads first (from the initramfs, or built in)
 * keeps the device.
 */
function lateBindings(
  found: readonly { said: string; entry: VfioIdsEntry; taken: readonly PciDevice[] }[],
  uses: ReadonlyMap<string, string>,
): { said: string; device: PciDevice; driver: string; cmdline: boolean }[] {
  return found.flatMap(({ said, entry, taken }) =>
    taken.flatMap((device) => {
      const driver = device.driver;
      if (driver === null || driver === "pci-stub" || /vfio/.test(driver)) return [];
      if (uses.has(device.address)) return [];
      return [{ said, device, driver, cmdline: entry.source === CMDLINE_SOURCE }];
    })
  );
}

/**
 * How vfio-pci comes to take the late-bound devices: loaded before their drivers' modules
 * (softdep, keyed by module name), or, for a driver built into the kernel (its module not in
 * `/proc/modules`), which binds before any module can load, an override after boot. With
 * vfio-pci built in (`vfioBuiltIn`), which takes its ids before any module loads, a module that
 * holds such a device was bound to it after boot: no load order helps, the override does.
 * Unknown modules (no facts): the common case, a module named as its driver.
 */
function lateRemedies(
  late: readonly { device: PciDevice; driver: string }[],
  facts: HostFacts | undefined,
  vfioBuiltIn: boolean,
): string[] {
  const loaded = facts?.modules() ?? null;
  const moduleOf = (driver: string) => facts?.moduleOfDriver(driver) ?? driver;
  const builtIn = (driver: string) => loaded !== null && !loaded.has(moduleOf(driver));
  const modules = vfioBuiltIn ? [] : [
    ...new Set(late.filter((l) => !builtIn(l.driver)).map((l) => moduleOf(l.driver))),
  ];
  const override = (address: string) =>
    `leave it to libvirt's managed detach at start, or stop its users and run ${
      driverctlOverride(address)
    }`;
  return [
    ...(modules.length === 0 ? [] : [
      `to load vfio-pci first, add ${
        modules.map((m) => `"${softdepLine(m)}"`).join(", ")
      } to a file in /etc/modprobe.d, then ${REBUILD_INITRAMFS} and reboot`,
    ]),
    ...late.filter((l) => builtIn(l.driver) || vfioBuiltIn).map(({ device, driver }) =>
      builtIn(driver)
        ? `"${driver}" is built into the kernel and binds ${device.address} before vfio-pci can: ${
          override(device.address)
        }`
        : `"${driver}" was bound to ${device.address} after boot (vfio-pci, built into this kernel, takes its ids before any module loads, so no softdep helps): ${
          override(device.address)
        }`
    ),
  ];
}

/** Each problem entry's remedy, in one text: the removals together, then the replacements. */
function remedies(
  found: readonly { entry: VfioIdsEntry; taken: readonly PciDevice[] }[],
  uses: ReadonlyMap<string, string>,
  devices: readonly PciDevice[],
): string {
  const each = found.map((f) => ({ text: f.entry.text, remedy: entryRemedy(f, uses, devices) }));
  const removed = [...new Set(each.filter((e) => e.remedy === null).map((e) => e.text))];
  return [
    ...(removed.length === 0 ? [] : [
      `remove ${
        removed.join(", ")
      } (libvirt detaches a managed hostdev from its host driver at start)`,
    ]),
    ...new Set(each.flatMap((e) => e.remedy === null ? [] : [e.remedy])),
  ].join("; ");
}

/**
 * What to write instead of one entry that takes a device the host uses or several cards: the
 * entries that take only boards the host does not use, one each (as {@link vfioIdsBinding} names
 * them), when each such board has one that takes no other; `null` when it should go.
 */
function entryRemedy(
  found: { entry: VfioIdsEntry; taken: readonly PciDevice[] },
  uses: ReadonlyMap<string, string>,
  devices: readonly PciDevice[],
): string | null {
  const { entry, taken } = found;
  const kept = taken.filter((d) => uses.has(d.address));
  const passed = taken.filter((d) => !uses.has(d.address));
  if (kept.length > 0 && passed.length === 0) return null;
  // With none kept, each board is named apart: the user picks the one to take.
  const boards = kept.length === 0 ? taken : passed;
  const others = kept.length === 0 ? new Set<string>() : new Set(passed.map((p) => p.address));
  const bindings = boards.map((d) => ({ d, binding: vfioIdsBinding(d, devices, others) }));
  if (bindings.some((b) => b.binding.kind === "twins")) return null;
  if (kept.length === 0) {
    return `to take one board only, name its subsystem IDs instead of ${entry.text}: ${
      bindings.map((b) => `${b.binding.ids} (${b.d.address})`).join(", ")
    }`;
  }
  return `to leave the host its ${kept.map((d) => d.address).join(", ")}, write ${
    [...new Set(bindings.map((b) => b.binding.ids))].join(",")
  } instead of ${entry.text}`;
}

/**
 * What driverctl's kept overrides bind at boot. They name an address, not a card: after a card
 * moves, or where the host's device sits at an address that was a guest's, the override takes the
 * host's device at the next boot (fail), and one whose address holds nothing takes the card put
 * there later (warn). Live hosts only: a captured tree holds no `/etc`.
 */
function checkDriverctl(options: DoctorOptions): DoctorFinding | null {
  if (!options.live) return null;
  const overrides = driverctlOverrides(options.reader, options.driverctlDir);
  if (overrides.length === 0) return null;
  const uses = new Map((options.host.hostUse ?? []).map((u) => [u.address, u.detail]));
  const device = (address: string) => options.host.devices.find((d) => d.address === address);
  const said = (o: { address: string; driver: string; source: string }) =>
    `driverctl gives ${o.address} to ${o.driver} at every boot (${o.source})`;
  const needed = overrides.filter((o) =>
    uses.has(o.address) && device(o.address)?.driver !== o.driver
  );
  const absent = overrides.filter((o) => device(o.address) === undefined);
  // Without --noprobe, unset-override unbinds the device to probe it again: the host's disk too.
  const unset = (o: { address: string }) => `driverctl --noprobe unset-override ${o.address}`;
  if (needed.length > 0 || absent.length > 0) {
    return {
      check: "driverctl",
      status: needed.length > 0 ? "fail" : "warn",
      summary: [
        ...needed.map((o) =>
          `${said(o)}, but the host uses it (${uses.get(o.address)}): it loses it at the next boot`
        ),
        ...absent.map((o) =>
          `${
            said(o)
          }, which holds no device here: a card put there later, the host's too, goes to ${o.driver} at boot`
        ),
      ].join("; "),
      hint: `${
        [...needed, ...absent].map(unset).join(", ")
      } (--noprobe leaves the device with the driver it has now); a guest's card needs no override: libvirt detaches a managed hostdev from its host driver at start`,
    };
  }
  return {
    check: "driverctl",
    status: "ok",
    summary: overrides.map((o) => {
      const d = device(o.address)!;
      const named = `${o.address} (${d.className ?? `class ${d.classCode}`}) to ${o.driver}`;
      // Another driver holds it now: the override was set with --nobind, or the device was bound
      // again since boot; it takes effect at the next boot.
      return d.driver === o.driver
        ? `driverctl gives ${named} at every boot`
        : `driverctl gives ${named} from the next boot; ${
          d.driver === null ? "no driver" : `"${d.driver}"`
        } holds it at this boot`;
    }).join("; "),
    hint: null,
  };
}

/** What makes a changed entry count at the next boot, by where entries are written. */
function regenerate(sources: readonly string[]): string {
  const steps = [];
  if (sources.includes(CMDLINE_SOURCE)) {
    steps.push(
      "update the boot loader's kernel command line (/etc/default/grub, then update-grub)",
    );
  }
  if (sources.some((s) => s !== CMDLINE_SOURCE)) {
    steps.push(REBUILD_INITRAMFS);
  }
  return steps.join(" and ");
}

/**
 * GPUs whose host driver has users: libvirt's detach of them would hang. A GPU the host uses (its
 * console) is left out and named so: its users are the host's own, and the hint to bind it to
 * vfio-pci at boot would take the host's console away; `plan` refuses passing it as the host's.
 */
function checkDriverBusy(host: HostTopology, facts: HostFacts): DoctorFinding | null {
  const gpus = host.devices.filter((d) =>
    d.classCode.startsWith("03") && d.driver !== null && d.driver !== "vfio-pci"
  );
  if (gpus.length === 0) return null;
  const users = new Map(gpus.map((d) => [d, driverUsers(d, facts)]));
  const used = gpus.filter((d) => users.get(d)!.length > 0);
  const useOf = (d: PciDevice) => host.hostUse?.find((u) => u.address === d.address);
  const busy = used.filter((d) => useOf(d) === undefined);
  const own = used.filter((d) => useOf(d) !== undefined).map((d) => {
    const use = useOf(d)!;
    return `${d.address} left out: the host uses it (${use.reason}: ${use.detail}), its driver's users are the host's own`;
  });
  if (busy.length === 0) {
    const quiet = gpus.filter((d) => !used.includes(d));
    const none = quiet.length === 0
      ? []
      : [`No user seen on the host drivers of ${quiet.map((d) => d.address).join(", ")}`];
    return {
      check: "host-driver-busy",
      status: "ok",
      summary: [...none, ...own].join("; "),
      hint: null,
    };
  }
  return {
    check: "host-driver-busy",
    status: "warn",
    summary: `GPU host drivers in use: ${
      [...busy.map((d) => `${d.address} (${d.driver}: ${users.get(d)!.join("; ")})`), ...own]
        .join("; ")
    }`,
    hint:
      "Passing such a GPU hangs libvirt's detach: stop its users first, or bind it to vfio-pci at boot (`plan` names a vfio-pci.ids= entry when one takes no device the host keeps)",
  };
}

/**
 * The devices a secondary-bus reset of `device` would also reset that are not certainly passed
 * with it: on its bus, and not another function of its card in its IOMMU group (the functions
 * VFIO makes go to one VM together). Empty: the bus reset touches nothing else.
 */
function busResetBystanders(device: PciDevice, host: HostTopology): PciDevice[] {
  const bus = busOf(device.address);
  const slot = slotOf(device.address);
  return host.devices.filter((d) =>
    d.address !== device.address && d.address.startsWith(`${bus}:`) &&
    !(d.address.startsWith(`${slot}.`) && device.iommuGroup !== null &&
      d.iommuGroup === device.iommuGroup)
  );
}

/** Devices without a usable reset, from `reset_method`. */
function checkReset(host: HostTopology, facts: HostFacts): DoctorFinding | null {
  let known = 0;
  const lacking: string[] = [];
  for (const d of host.devices) {
    if (d.isBridge) continue;
    const methods = facts.resetMethods(d.address);
    if (methods === null) continue;
    known++;
    const verdict = resetVerdict(d, methods);
    if (verdict.kind === "vendor-reset") {
      lacking.push(`${d.address} (${verdict.family}: vendor-reset)`);
    } else if (verdict.kind === "bus-only") {
      // A bus reset that touches only the card's own functions, which go to the guest with it,
      // is as good as a reset of its own.
      const others = busResetBystanders(d, host);
      if (others.length > 0) {
        lacking.push(
          `${d.address} (bus-only, which also resets ${someOf(others.map((o) => o.address), 2)})`,
        );
      }
    }
  }
  if (known === 0) return null;
  if (lacking.length === 0) {
    return {
      check: "reset",
      status: "ok",
      summary: `Every device can be reset (${known} read)`,
      hint: null,
    };
  }
  return {
    check: "reset",
    status: "warn",
    summary: `${lacking.length} device${
      lacking.length === 1 ? " lacks a reset of its own" : "s lack a reset of their own"
    }: ${someOf(lacking)}`,
    hint:
      "A guest may find them as it left them: a bus-only reset also resets the other devices on the bus, so VFIO skips it unless they go to the same guest; AMD GPUs need vendor-reset with reset_method device_specific",
  };
}

/**
 * The controllers the host's input devices hang under: a VM given one takes them from the host
 * while it runs. Said, not warned: a controller with the guest's own keyboard is common.
 */
function checkHostInput(host: HostTopology, facts: HostFacts): DoctorFinding | null {
  const carrying = host.devices.flatMap((d) => {
    const names = facts.inputDevices(d.address);
    return names.length === 0 ? [] : [`${d.address} (${names.map((n) => `"${n}"`).join(", ")})`];
  });
  if (carrying.length === 0) return null;
  return {
    check: "host-input",
    status: "ok",
    summary: `The host's input devices hang under ${carrying.join("; ")}: a VM given ${
      carrying.length === 1 ? "it" : "one of them"
    } takes them from the host while it runs (plan warns, host-input)`,
    hint: null,
  };
}

/** The host-wide view of the pre-flight findings `plan` gives per VM. */
function preflightFindings(host: HostTopology, facts: HostFacts): DoctorFinding[] {
  return [
    checkBootVga(host, facts),
    checkDriverBusy(host, facts),
    checkReset(host, facts),
    checkHostInput(host, facts),
  ].filter((f) => f !== null);
}

const SEVERITY: Record<DoctorStatus, number> = { ok: 0, warn: 1, fail: 2 };

/** Whether each running daemon has seen the hook: started after it, or reloaded since. */
function daemonNotes(facts: HookDoctorFacts): HookNote[] {
  const written = facts.inspection.modified ?? Infinity;
  if (facts.daemons.length === 0) {
    return [{
      status: "ok",
      note: "no libvirtd or virtqemud runs now: it runs the hook from its start",
    }];
  }
  return facts.daemons.map((d) => {
    if (d.started !== null && d.started >= written) {
      return { status: "ok", note: `${d.name} (pid ${d.pid}) started after the hook was written` };
    }
    const reload = facts.reloads.find((r) => r.name === d.name && r.pid === d.pid);
    if (reload !== undefined && Date.parse(reload.time) / 1000 >= written - 1) {
      return { status: "ok", note: `${d.name} (pid ${d.pid}) was reloaded at ${reload.time}` };
    }
    return {
      status: "warn",
      note: `${d.name} (pid ${d.pid}) ran before the hook was written and no reload is recorded`,
      // A reload by hand leaves no trace this check can read (only `hook install` records its
      // own): a restart shows in the daemon's start time, and leaves the running guests running.
      hint: `restart it so it runs the hook: systemctl restart ${d.name} (its running guests ` +
        `keep running); a reload (systemctl reload ${d.name}, or kill -HUP ${d.pid}) does too, ` +
        `but this check cannot see one and keeps this warning`,
    };
  });
}

/** One observation of the `hook` finding, with its severity and what fixes it. */
interface HookNote {
  status: DoctorStatus;
  note: string;
  hint?: string;
}

function checkHook(facts: HookDoctorFacts | Error, libvirtVersion: string | null): DoctorFinding {
  if (facts instanceof Error) {
    // Unknown, not absent: the other checks stand, and root sees the hook.
    return {
      check: "hook",
      status: "warn",
      summary: `Cannot tell whether a start guard is installed: ${facts.message}`,
      hint: "run doctor as root",
    };
  }
  const { inspection } = facts;
  const install = installCommand(inspection);
  if (inspection.leftovers.length > 0) {
    return {
      check: "hook",
      status: "fail",
      summary: `${
        inspection.leftovers.join(", ")
      } left from an interrupted install: libvirt runs it at every start, stop and daemon restart if it is executable, and fails (a failure at reconnect stops running guests)`,
      hint: `${install} (it removes them)`,
    };
  }
  // Never removed by passthrough (it did not write them there): each by hand.
  const others: HookNote[] = inspection.others.map((path) => ({
    status: "fail",
    note: otherHookProblem(path),
    hint: `rm ${shellWord(path)}`,
  }));
  // Alone only where the hook has no settings to judge (absent, another's, unreadable): beside a
  // hook, with what else is wrong with it, which a copy's rm would otherwise hide.
  if (others.length > 0 && inspection.settings === null) {
    return {
      check: "hook",
      status: "fail",
      summary: others.map((n) => n.note).join("; "),
      hint: others.map((n) => n.hint).join("; "),
    };
  }
  if (!inspection.present) {
    return {
      check: "hook",
      status: "warn",
      summary:
        `No start guard at ${inspection.path}: a VM starts even when a hostdev's address now holds another device`,
      hint: install,
    };
  }
  if (inspection.settings === null && inspection.ours) {
    return {
      check: "hook",
      status: "fail",
      summary: `Start guard ${inspection.path}: ${unreadableHookReason(inspection.format)}`,
      hint: install,
    };
  }
  if (inspection.settings === null) {
    return {
      check: "hook",
      status: "warn",
      summary: `${inspection.path} is not a passthrough hook`,
      // Never a bare install: it refuses to replace the file, which may be the user's own hook.
      hint: `${foreignHookAdvice(inspection.path)}, then ${install}`,
    };
  }
  const notes = [
    ...hookFileNotes(facts, install),
    ...loaderNotes(facts, libvirtVersion),
    ...others,
  ];
  const status = notes.reduce<DoctorStatus>(
    (worst, n) => SEVERITY[n.status] > SEVERITY[worst] ? n.status : worst,
    "ok",
  );
  const hints = [...new Set(notes.flatMap((n) => n.hint === undefined ? [] : [n.hint]))];
  // Said of a working guard, whose "ok" would otherwise read as every way a VM takes a device.
  const said = status === "ok"
    ? [...notes.map((n) => n.note), `guards ${GUARD_SCOPE}`]
    : notes.map((n) => n.note);
  return {
    check: "hook",
    status,
    summary: `Start guard ${inspection.path}: ${said.join("; ")}`,
    hint: hints.length === 0 ? null : hints.join("; "),
  };
}

/**
 * What is wrong with the hook file itself (runnable, as written, safe, its programs there, its
 * bundle current).
 */
function hookFileNotes(facts: HookDoctorFacts, install: string): HookNote[] {
  const { inspection, version } = facts;
  const problems = hookFileProblems(inspection, version, install, {
    staleBundle: facts.staleBundle ?? null,
  });
  const notes: HookNote[] = problems.map((p) => ({
    status: p.severity,
    note: p.text,
    hint: p.fix,
  }));
  return notes.length > 0
    ? notes
    : [{ status: "ok", note: `installed by this version (${version})` }];
}

/** The first libvirt that runs the executables of `qemu.d` (before it, only `hooks/qemu`). */
const HOOK_DIR_LIBVIRT = [6, 5, 0];

/** Whether `version` (`6.0.0`) is older than {@link HOOK_DIR_LIBVIRT}. */
function readsNoHookDir(version: string): boolean {
  const parts = version.split(".").map(Number);
  for (const [i, least] of HOOK_DIR_LIBVIRT.entries()) {
    const part = parts[i] ?? 0;
    if (part !== least) return part < least;
  }
  return false;
}

/**
 * Whether libvirt runs the hook: its directory, the running daemons (and the libvirt version of
 * this host's, when the libvirt check reached it), SELinux's label.
 */
function loaderNotes(facts: HookDoctorFacts, libvirtVersion: string | null): HookNote[] {
  const { inspection } = facts;
  const tooOld = facts.readByLibvirt && libvirtVersion !== null && readsNoHookDir(libvirtVersion);
  const notes: HookNote[] = tooOld
    ? [{
      status: "warn",
      note: `libvirt ${libvirtVersion} runs no hooks from ${dirname(inspection.path)} (${
        HOOK_DIR_LIBVIRT.join(".")
      } and later do), so it guards no start`,
      hint: `upgrade libvirt to ${HOOK_DIR_LIBVIRT.join(".")} or later`,
    }]
    : facts.readByLibvirt
    ? daemonNotes(facts)
    : [{
      status: "warn",
      note: `libvirt's system daemon does not run hooks from ${
        dirname(inspection.path)
      }, so it guards no start there`,
      hint: `${
        installCommand(inspection, { hooksDir: false })
      } (its default --hooks-dir is the one libvirt reads)`,
    }];
  if (facts.selinux !== null) {
    const type = facts.selinux.label?.split(":")[2] ?? null;
    notes.push(
      type === "virt_hook_t" ? { status: "ok", note: "SELinux label virt_hook_t" } : {
        status: facts.selinux.enforcing ? "warn" : "ok",
        note: `SELinux label ${type ?? "unknown"}, not virt_hook_t`,
        hint:
          `restorecon -v ${inspection.path}; if starts fail with denials: ausearch -m avc -ts recent`,
      },
    );
  }
  return notes;
}

/**
 * Runs every check. The libvirt check runs only when a probe is given, the hook check only with
 * hook facts; on a captured tree, checks it cannot answer (IOMMU units, kernel modules) are
 * left out rather than reported as unknown, and `boot-binding` says it read no `/etc`. Hints
 * name the CPU maker's IOMMU (from `/proc/cpuinfo`).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { denoFsReader } from "./sysfs.ts";
 * const host = { source: "t", iommu: "absent" as const, devices: [], groups: [],
 *   groupInconsistencies: [], kernelCmdline: "quiet pcie_acs_override=downstream", hostUse: [] };
 * const findings = runDoctor({ host, reader: denoFsReader(), live: false });
 * assertEquals(findings.map((f) => [f.check, f.status]), [
 *   ["iommu", "fail"], ["interrupt-remapping", "fail"], ["acs-override", "warn"],
 * ]);
 * ```
 */
export function runDoctor(options: DoctorOptions): DoctorFinding[] {
  const vendor = cpuVendor(options);
  const findings = [
    checkIommu(options.host, vendor),
    checkInterruptRemapping(options, vendor),
    checkVfioPci(options),
    checkAcsOverride(options.host, options.live),
    checkBootBindings(options),
    checkDriverctl(options),
  ].filter((f) => f !== null);
  if (options.facts !== undefined) findings.push(...preflightFindings(options.host, options.facts));
  const reach = options.libvirtProbe === undefined ? undefined : reachOf(options.libvirtProbe);
  if (reach !== undefined) findings.push(checkLibvirt(reach));
  if (options.hook !== undefined) {
    findings.push(checkHook(options.hook, localLibvirtVersion(reach)));
  }
  if (options.bundle !== undefined && options.bundle !== null) {
    findings.push(checkBundle(options.bundle));
  }
  return findings;
}

/** The `bundle` finding: the commands run older code than the checkout holds. */
function checkBundle(stale: StaleBundle): DoctorFinding {
  return {
    check: "bundle",
    status: "warn",
    summary: `bin/passthrough runs the bundle in ${stale.bundle}, which was built from other ` +
      `sources than those beside it, though none is newer (an update that kept the files' ` +
      `times, as tar, rsync -a or cp -p do): every command runs the code from before the update`,
    hint: `build it again: ${stale.setup}`,
  };
}
