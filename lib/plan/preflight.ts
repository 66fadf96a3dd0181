/**
 * Pre-flight findings: what will make a VM's start hang, fail or run slow, judged at plan time
 * from host facts (`lib/host/preflight.ts`) for the devices the VM's rules take.
 *
 * - `boot-vga`: the GPU is the boot VGA and a firmware framebuffer holds its memory.
 * - `host-driver-busy`: a GPU's host driver has users (module references, processes holding
 *   its nodes open, the console): libvirt's detach at start hangs.
 * - `reset`: the device has no usable reset (replaces `no-flr` where `reset_method` is known).
 * - `rom-unreadable` (refusal): QEMU cannot use the rule's `rom.file`.
 * - `numa-mismatch`: the device's NUMA node is not where the VM is pinned.
 * - `host-input`: the host's keyboard or mouse hangs under the device (a USB controller): the host
 *   loses them while the VM runs. Not refused: a USB card with the guest's keyboard is common.
 *
 * Pure apart from the lazily read facts.
 *
 * @module
 */

import type { ParsedDomain } from "../domain/domain_xml.ts";
import type { ClosedDevice } from "../resolve/closure.ts";
import { VFIO_DRIVERS } from "../resolve/match.ts";
import {
  driverUsers,
  type HostFacts,
  parseCpuList,
  permits,
  resetVerdict,
} from "../host/preflight.ts";
import {
  cmdlineVfioIds,
  driverctlOverride,
  keptVfioIds,
  REBUILD_INITRAMFS,
  softdepLine,
  vfioIdsBinding,
  vfioIdsMatch,
} from "../host/boot_binding.ts";
import type { HostTopology, PciAddress, PciDevice } from "../host/types.ts";
import type { VmResolution } from "./resolve.ts";
import type { PlanIssue } from "./types.ts";
import { busOf } from "../pci/address.ts";

/** What {@link preflightIssues} found for one VM. */
export interface PreflightIssues {
  /** `rom-unreadable` refusals. */
  errors: PlanIssue[];
  /** The other findings. */
  warnings: PlanIssue[];
  /** Devices whose reset was judged from `reset_method`: their `no-flr` warnings are dropped. */
  resetJudged: Set<PciAddress>;
}

/** Where a device sits for messages: `GPU 0000:0b:00.0 (rule "gpu")`. */
function named(c: ClosedDevice): string {
  const what = c.device.classCode.startsWith("03") ? "GPU" : "Device";
  return `${what} ${c.device.address} (rule "${c.rule.name}")`;
}

function issue(
  code: PlanIssue["code"],
  vm: string,
  closed: readonly ClosedDevice[],
  message: string,
): PlanIssue {
  const rule = closed[0]!.rule;
  return {
    code,
    message,
    vm,
    rule: rule.name,
    location: rule.location,
    devices: closed.map((c) => c.device.address),
  };
}

/** `host-input`: a device the host's input devices (its keyboard, its mouse) hang under. */
function hostInput(vm: string, closed: readonly ClosedDevice[], facts: HostFacts): PlanIssue[] {
  return closed.flatMap((c) => {
    const names = facts.inputDevices(c.device.address);
    if (names.length === 0) return [];
    return [issue(
      "host-input",
      vm,
      [c],
      `${named(c)} carries the host's input device${names.length === 1 ? "" : "s"} ${
        names.map((n) => JSON.stringify(n)).join(", ")
      } (/sys/class/input): the host loses ${
        names.length === 1 ? "it" : "them"
      } while "${vm}" runs; plug what the host needs into another controller`,
    )];
  });
}

/** `boot-vga`: the boot GPU whose BAR a firmware framebuffer holds. */
function bootVga(vm: string, closed: readonly ClosedDevice[], facts: HostFacts): PlanIssue[] {
  return closed.flatMap((c) => {
    if (c.device.bootVga !== true) return [];
    const fbs = facts.firmwareFramebuffers()?.get(c.device.address) ?? [];
    if (fbs.length === 0) return [];
    return [issue(
      "boot-vga",
      vm,
      [c],
      `${named(c)} is the boot VGA and the firmware framebuffer ${
        fbs.join(", ")
      } holds its memory (/proc/iomem): vfio-pci cannot reserve its BAR ("BAR 0: can't reserve") and the guest driver fails when "${vm}" starts: boot with initcall_blacklist=sysfb_init (kernels 5.15 and later; video=efifb:off before), or give the guest a secondary GPU and leave this one to the host`,
    )];
  });
}

/** `host-driver-busy`: a GPU whose host driver has users. */
function driverBusy(
  vm: string,
  closed: readonly ClosedDevice[],
  context: { host: HostTopology; facts: HostFacts },
): PlanIssue[] {
  const taken = new Set(closed.map((c) => c.device.address));
  return closed.flatMap((c) => {
    const { driver } = c.device;
    if (driver === null || VFIO_DRIVERS.has(driver)) return [];
    const users = driverUsers(c.device, context.facts);
    if (users.length === 0) return [];
    const also = context.host.devices.filter((d) => d.driver === driver && !taken.has(d.address));
    const shared = also.length > 0 && users[0]!.startsWith("module ")
      ? ` (the module also drives ${
        also.map((d) => d.address).join(", ")
      }: its references may be theirs)`
      : "";
    return [issue(
      "host-driver-busy",
      vm,
      [c],
      `${named(c)} is bound to host driver "${driver}", which is in use: ${
        users.join("; ")
      }${shared}: libvirt's detach when "${vm}" starts hangs (or oopses the host) until they let go: ${
        busyRemedies(c.device, users.length, taken, context)
      }`,
    )];
  });
}

/** What lets a busy GPU's host driver go: stopping its users, the console, a binding at boot. */
function busyRemedies(
  device: PciDevice,
  users: number,
  taken: ReadonlySet<PciAddress>,
  context: { host: HostTopology; facts: HostFacts },
): string {
  const vtcon = context.facts.consoleFramebuffers(device.address).length > 0
    ? context.facts.frameBufferConsole()
    : null;
  // Never empty: a user other than the console, or the console.
  const remedies = users > (vtcon === null ? 0 : 1)
    ? ["stop them (display manager, nvidia-persistenced)"]
    : [];
  if (vtcon !== null) {
    remedies.push(`unbind the console (echo 0 > /sys/class/vtconsole/${vtcon}/bind)`);
  }
  const binding = vfioIdsBinding(device, context.host.devices, taken);
  const module = context.facts.moduleOfDriver(device.driver!);
  if (binding.kind === "ids" && context.facts.modules()?.has(module) === false) {
    // Built in (not in /proc/modules, as doctor judges it): it binds the GPU before vfio-pci
    // can take its ids, and no softdep orders what no module loads.
    return `${
      remedies.join(", or ")
    }; "${device.driver}" is built into the kernel and binds ${device.address} before vfio-pci can: once the GPU is free, ${
      driverctlOverride(device.address)
    }`;
  }
  if (binding.kind === "ids") {
    // vfio-pci.ids= binds only a device no driver has taken yet: the GPU's driver, often in the
    // initramfs, must load after vfio-pci.
    return `${remedies.join(", ")}, or bind the GPU to vfio-pci at boot: ${
      cmdlineEntry(device, binding.ids, context.host.kernelCmdline)
    } "${
      softdepLine(module)
    }" in /etc/modprobe.d so that vfio-pci loads first; then ${REBUILD_INITRAMFS}`;
  }
  return `${remedies.join(", or ")}; not vfio-pci.ids=${binding.ids} at boot: it would bind ${
    binding.twins.join(", ")
  } too (the same IDs)`;
}

/**
 * The `vfio-pci.ids=` that binds `device` at boot, as an addition to the one the kernel command
 * line gives vfio-pci already: a second `ids=` would overwrite it (vfio-pci keeps the last), and
 * the devices it binds for other guests would stay with their drivers.
 */
function cmdlineEntry(device: PciDevice, ids: string, cmdline: string | null): string {
  const { kept } = keptVfioIds(cmdlineVfioIds(cmdline).filter((a) => !a.toInit));
  if (kept === null) return `vfio-pci.ids=${ids}, and`;
  if (kept.entries.some((e) => vfioIdsMatch(e, device))) {
    return `the kernel command line's vfio-pci.ids=${kept.value} names it already: put`;
  }
  return `add ${ids} to the vfio-pci.ids= on the kernel command line, not as a second one (vfio-pci keeps only the last): vfio-pci.ids=${
    [...kept.entries.map((e) => e.text), ids].join(",")
  }, and`;
}

/** Why the device will not reset between guest boots, or `null` when it will. */
function resetProblem(
  c: ClosedDevice,
  methods: readonly string[],
  context: { host: HostTopology; facts: HostFacts; taken: ReadonlySet<PciAddress> },
): string | null {
  const { address } = c.device;
  const verdict = resetVerdict(c.device, methods);
  const silence = `(set "allow_no_flr: true" on the rule to silence this)`;
  if (verdict.kind === "ok") return null;
  if (verdict.kind === "vendor-reset") {
    const loaded = context.facts.modules()?.has("vendor_reset") ?? false;
    return `${
      named(c)
    } is an AMD ${verdict.family} GPU, which does not reset reliably without vendor-reset (gnif/vendor-reset), and its reset_method is "${
      methods.join(" ")
    }": ${
      loaded ? "vendor-reset is loaded: " : "install and load vendor-reset, then "
    }echo device_specific > /sys/bus/pci/devices/${address}/reset_method (a udev rule keeps it), or the guest finds a hung GPU after its first reboot`;
  }
  const bus = busOf(address);
  // The device itself is among `taken`.
  const others = context.host.devices.filter((d) =>
    d.address.startsWith(`${bus}:`) && !context.taken.has(d.address)
  );
  if (others.length === 0) return null;
  // A device the host uses cannot go to the guest along with it: only the card can move.
  const hostUses = (context.host.hostUse ?? []).filter((u) =>
    others.some((d) => d.address === u.address)
  );
  const remedy = hostUses.length === 0
    ? `give them to "${c.rule.vm}" too, or move the card to a slot of its own`
    : `move the card to a slot of its own (not all of them can go to "${c.rule.vm}": ${
      hostUses.map((u) => `${u.address} is the host's, ${u.reason}: ${u.detail}`).join("; ")
    })`;
  return `${named(c)} can only be reset by a secondary-bus reset, which would also reset ${
    others.map((d) => d.address).join(", ")
  } on the same bus: VFIO does not reset it while they are held elsewhere, so the guest may find it in the state it left it: ${remedy} ${silence}`;
}

/** `reset` warnings, and the devices judged from their `reset_method`. */
function resets(
  vm: string,
  closed: readonly ClosedDevice[],
  context: { host: HostTopology; facts: HostFacts },
): { warnings: PlanIssue[]; judged: Set<PciAddress> } {
  const judged = new Set<PciAddress>();
  const taken = new Set(closed.map((c) => c.device.address));
  const warnings = closed.flatMap((c) => {
    const methods = context.facts.resetMethods(c.device.address);
    if (methods === null) return [];
    judged.add(c.device.address);
    if (c.rule.allowNoFlr) return [];
    const problem = resetProblem(c, methods, { ...context, taken });
    return problem === null
      ? []
      : [{ ...issue("reset", vm, [c], problem), override: "allow_no_flr: true" }];
  });
  return { warnings, judged };
}

/**
 * Where libvirt's AppArmor abstraction for QEMU (`src/security/apparmor/libvirt-qemu.in`, its
 * "access to firmware's etc" block) lets every VM read: `/usr/share/{AAVMF, bochs, edk2-ovmf,
 * kvm, openbios, openhackware, OVMF, ovmf, proll, qemu-efi, qemu-kvm, qemu, seabios, sgabios,
 * slof, vgabios}/**` and `/usr/share/misc/sgabios.bin`.
 *
 * Why a ROM elsewhere is denied: the VM's own profile adds only what `virt-aa-helper`'s
 * `get_files()` (`src/security/virt-aa-helper.c`) lists, which for a PCI `<hostdev>` is the
 * device's sysfs and VFIO files (`virPCIDeviceFileIterate`), never its `<rom file=...>`; and no
 * security driver labels a ROM (`virSecurity*SetAllLabel` covers disks, the kernel, initrd,
 * dtb, shim, ACPI tables and nvram, not device ROMs). AppArmor judges a path with its links
 * resolved, so the check reads {@link RomFileFacts.realPath}.
 */
const APPARMOR_READABLE =
  /^\/usr\/share\/((AAVMF|bochs|edk2-ovmf|kvm|openbios|openhackware|OVMF|ovmf|proll|qemu-efi|qemu-kvm|qemu|seabios|sgabios|slof|vgabios)\/|misc\/sgabios\.bin$)/;

/**
 * Whether libvirt's AppArmor abstraction lets QEMU read the file at `realPath` (links resolved).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(apparmorLetsQemuRead("/usr/share/vgabios/gpu.rom"), true);
 * assertEquals(apparmorLetsQemuRead("/var/lib/libvirt/vbios/gpu.rom"), false);
 * ```
 */
export function apparmorLetsQemuRead(realPath: string): boolean {
  return APPARMOR_READABLE.test(realPath) && !realPath.split("/").includes("..");
}

/**
 * SELinux types QEMU's `svirt_t` domain may not read. libvirt relabels no ROM file (see
 * {@link APPARMOR_READABLE}), so a ROM keeps the type of where it was put, and home and
 * temporary directories' types are not ones the policy lets `svirt_t` read, unlike `usr_t`
 * (`/usr/share`, where QEMU's own ROMs are) or `virt_content_t` (what libvirt gives a kernel or
 * initrd). A deny list, since a wrong refusal stops a VM that would start: other types pass.
 */
const SELINUX_DENIED = new Set([
  "user_home_t",
  "admin_home_t",
  "user_tmp_t",
  "tmp_t",
  "default_t",
  "unlabeled_t",
]);

/** What is wrong with the ROM file at `path` for QEMU; empty when nothing is. */
function romProblems(path: string, facts: HostFacts): string[] {
  const rom = facts.romFile(path);
  if (rom.kind === "missing") return ["does not exist"];
  if (rom.kind === "loop") return ["is a symbolic link loop"];
  if (rom.kind === "special") return [`is ${rom.detail}, not a ROM image file`];
  if (rom.kind === "unchecked") return [];
  const problems: string[] = [];
  const head = rom.head ?? new Uint8Array(0);
  if (head.length < 2 || head[0] !== 0x55 || head[1] !== 0xaa) {
    problems.push(
      "does not start with the option ROM signature 0x55AA (not a ROM image; a dump with a vendor header must have it cut off)",
    );
  }
  const user = facts.qemuUser();
  if (user !== null && !permits(rom.mode ?? 0, rom.uid ?? 0, rom.gid ?? 0, user, 0o4)) {
    problems.push(
      `is not readable by QEMU's user "${user.name}" (mode ${
        (rom.mode ?? 0).toString(8).slice(-3)
      }, owner uid ${rom.uid})`,
    );
  }
  if (user !== null && (rom.closedDirs ?? []).length > 0) {
    problems.push(`lies in ${rom.closedDirs!.join(", ")}, which "${user.name}" cannot enter`);
  }
  const { apparmor, selinux } = facts.confinement();
  const real = rom.realPath ?? path;
  if (apparmor && !apparmorLetsQemuRead(real)) {
    problems.push(
      `lies outside the paths AppArmor lets QEMU read${
        real === path ? "" : ` (it resolves to ${real})`
      }: libvirt adds a hostdev's device files to the VM's profile, not its ROM file, so QEMU may read only libvirt-qemu's firmware directories (/usr/share/vgabios/, /usr/share/qemu/, /usr/share/seabios/...) unless a rule in /etc/apparmor.d/abstractions/libvirt-qemu.d/ allows it`,
    );
  }
  if (selinux && rom.selinuxType != null && SELINUX_DENIED.has(rom.selinuxType)) {
    problems.push(
      `has SELinux type ${rom.selinuxType}, which QEMU (svirt_t) may not read, and libvirt does not relabel ROM files (chcon -t virt_content_t on it, or keep it under /usr/share/vgabios/)`,
    );
  }
  return problems;
}

/** `rom-unreadable` refusals: one per rule whose `rom.file` QEMU cannot use. */
function romRefusals(vm: string, resolution: VmResolution, facts: HostFacts): PlanIssue[] {
  return resolution.rules.flatMap((r) => {
    const path = r.rule.rom?.file;
    if (path === undefined || r.devices.length === 0) return [];
    const problems = romProblems(path, facts);
    if (problems.length === 0) return [];
    return [{
      code: "rom-unreadable" as const,
      message: `ROM file "${path}" of rule "${r.rule.name}" ${
        problems.join("; ")
      }: QEMU would fail to start "${vm}" ("failed to find romfile"): put a valid image in /usr/share/vgabios/, readable by all (chmod 644), and point rom.file there`,
      vm,
      rule: r.rule.name,
      location: r.rule.location,
      devices: r.devices.map((d) => d.address),
    }];
  });
}

/** The nodes of the CPUs in `cpusets`; `null` when unknown or unreadable. */
function nodesOfCpus(cpusets: readonly string[], facts: HostFacts): Set<number> | null {
  const map = cpusets.length === 0 ? null : facts.cpuNodes();
  if (map === null) return null;
  const nodes = new Set<number>();
  for (const cpuset of cpusets) {
    const cpus = parseCpuList(cpuset);
    if (cpus === null) return null;
    for (const cpu of cpus) {
      const node = map.get(cpu);
      if (node !== undefined) nodes.add(node);
    }
  }
  return nodes.size === 0 ? null : nodes;
}

/** `numa-mismatch`: one warning per NUMA node whose devices sit away from the VM's pinning. */
function numaMismatch(
  vm: string,
  domain: ParsedDomain,
  closed: readonly ClosedDevice[],
  facts: HostFacts,
): PlanIssue[] {
  const { cpusets, nodesets } = domain.pinning;
  if (cpusets.length === 0 && nodesets.length === 0) return [];
  const byNode = new Map<number, ClosedDevice[]>();
  for (const c of closed) {
    if (c.device.numaNode !== null) {
      byNode.set(c.device.numaNode, [...(byNode.get(c.device.numaNode) ?? []), c]);
    }
  }
  if (byNode.size === 0) return [];
  const cpuNodes = nodesOfCpus(cpusets, facts);
  const memory = nodesets.map(parseCpuList);
  const memNodes = memory.length === 0 || memory.includes(null)
    ? null
    : new Set(memory.flatMap((m) => m ?? []));
  const list = (nodes: Set<number>) => [...nodes].sort((a, b) => a - b).join(", ");
  return [...byNode].flatMap(([node, devices]) => {
    const away: string[] = [];
    if (cpuNodes !== null && !cpuNodes.has(node)) {
      away.push(`its vCPUs pinned to CPUs ${cpusets.join(" ")} (node ${list(cpuNodes)})`);
    }
    if (memNodes !== null && !memNodes.has(node)) {
      away.push(`its memory pinned to node ${list(memNodes)}`);
    }
    if (away.length === 0) return [];
    const cpus = facts.nodeCpuList(node);
    return [issue(
      "numa-mismatch",
      vm,
      devices,
      `${devices.map(named).join(", ")} ${
        devices.length === 1 ? "sits" : "sit"
      } on NUMA node ${node} but VM "${vm}" has ${
        away.join(" and ")
      }: DMA and interrupts cross between nodes and the guest runs slower: pin it to node ${node}${
        cpus === null ? "" : ` (CPUs ${cpus})`
      } with <vcpu cpuset>/<vcpupin> and <numatune><memory nodeset='${node}'/>`,
    )];
  });
}

/**
 * The pre-flight findings for one VM: its rules' devices (`resolution`), its definition's pinning
 * (`domain`), judged from `facts`.
 */
export function preflightIssues(
  vm: string,
  domain: ParsedDomain,
  resolution: VmResolution,
  context: { host: HostTopology; facts: HostFacts },
): PreflightIssues {
  const closed = resolution.closure.devices;
  const reset = resets(vm, closed, context);
  return {
    errors: romRefusals(vm, resolution, context.facts),
    warnings: [
      ...bootVga(vm, closed, context.facts),
      ...driverBusy(vm, closed, context),
      ...reset.warnings,
      ...numaMismatch(vm, domain, closed, context.facts),
      ...hostInput(vm, closed, context.facts),
    ],
    resetJudged: reset.judged,
  };
}
