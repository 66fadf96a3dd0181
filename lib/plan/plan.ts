/**
 * The planner: config + host topology + libvirt's definitions in, a {@link Plan} out. Planning
 * never changes anything; the plan is plain data the CLI renders and `apply` executes.
 *
 * {@link planHostdevs} reads libvirt once ({@link readWorld}) and hands the snapshot to
 * {@link planWorld}, which does no I/O, in named steps:
 *
 * 1. `survey.ts`: what each domain holds (parsed, leniently scanned, live-only), which
 *    definitions are edited, orphans (domains dropped from the config that still hold our
 *    hostdevs), and the plan-wide issues of reading them.
 * 2. `resolve.ts`: every VM's rules resolved and closed over IOMMU groups; `conflicts.ts`: shared
 *    groups, devices assigned twice, SR-IOV splits, against each other and what domains hold.
 * 3. `fixpoint.ts`: every selected VM planned until no new VM is refused (a refused VM keeps its
 *    definition, so what it holds counts as held).
 * 4. `vm_edit.ts`: one VM's edit (add, keep, rewrite, move, remove); `guest_slots.ts`: the guest
 *    slots of multifunction cards.
 *
 * @module
 */

import type { Config } from "../config/config.ts";
import type { GuardPolicyFile } from "../guard/policy.ts";
import type { HostTopology, PciAddress } from "../host/types.ts";
import type { HostFacts } from "../host/preflight.ts";
import { driftOfOthers, planUntilSettled, type SettleInput } from "./fixpoint.ts";
import type { LibvirtPort } from "./libvirt_port.ts";
import { heldByRunningWarning } from "./issues.ts";
import { followUpCommand, type RunFlags } from "../render/shell.ts";
import { hostIssues } from "./resolve.ts";
import { type Survey, surveyWorld } from "./survey.ts";
import { networkPools, networkWarnings } from "./networks.ts";
import { withNetworks } from "./used_devices.ts";
import type { Plan, VmPlan } from "./types.ts";
import { readWorld, type World } from "./world.ts";

/** Options of {@link planHostdevs}. */
export interface PlanOptions {
  /**
   * The parsed config, of one host: a config with `hosts:` is cut down to this host's section
   * first (`pickHostSection` or `configForHost`), or planning throws a `TypeError`.
   */
  config: Config;
  /** The discovered host. */
  host: HostTopology;
  /** The libvirt connection the world is read through. */
  libvirt: LibvirtPort;
  /** Plan only these VMs (each must be in the config); default every VM of the config. */
  vms?: string[];
  /**
   * The host's pre-flight facts (`readHostFacts`), read lazily for the planned devices only;
   * absent: no pre-flight finding (`boot-vga`, `reset`, `rom-unreadable`, ...) is judged.
   */
  facts?: HostFacts;
  /**
   * The flags of this run (`--config`, `--host`, `--sysfs`, `--connect`) that the
   * `passthrough plan --vm ...` a message advises repeats, so it reads the same config, tree and
   * libvirt. Default: none.
   */
  run?: RunFlags;
  /**
   * Whether the start guard's hook is installed on the host planned (`false`: libvirt runs none),
   * for what stops the start of a VM whose hand-added hostdev's device is gone; absent: unknown
   * (a tree captured on another host).
   */
  guardHook?: boolean;
  /**
   * The start guard's policies as `apply` recorded them (`guard/policy.json` of the hook's state
   * directory), which judge a VM dropped from the config, whose devices stay, where the config
   * says nothing of it; absent: none recorded (such a VM enforces).
   */
  guardPolicies?: GuardPolicyFile;
}

/** Options of {@link planWorld}: those of {@link planHostdevs}, with the world read already. */
export interface PlanWorldOptions extends Omit<PlanOptions, "libvirt"> {
  /** Every domain's state and definitions, as {@link readWorld} reads them. */
  world: World;
}

/**
 * Refuses a config with `hosts:`: its VMs and rules belong to several hosts, and planning all of
 * them on this one would give one host's VM another host's device choices.
 */
function checkOneHost(config: Config): void {
  if (config.hosts === undefined) return;
  throw new TypeError(
    `${config.file} declares hosts: (a config shared by several hosts): plan one host's section, ` +
      "cut down with pickHostSection(config, { hostname }) or configForHost(config, NAME)",
  );
}

/** The IOMMU group of every function the VMs' plans add, remove or move (see `Plan.groupOf`). */
function groupsOfChanges(vms: readonly VmPlan[], host: HostTopology): Record<PciAddress, number> {
  const groupOf = new Map(host.devices.map((d) => [d.address, d.iommuGroup]));
  const out: Record<PciAddress, number> = {};
  for (const vm of vms) {
    const touched = [
      ...vm.add.map((a) => a.address),
      ...vm.remove,
      ...vm.move.flatMap((m) => [m.from, m.to]),
      ...(vm.repair?.remove ?? []),
      ...(vm.repair?.move ?? []).flatMap((m) => [m.from, m.to]),
    ];
    for (const address of touched) {
      const group = groupOf.get(address);
      if (group !== null && group !== undefined) out[address] = group;
    }
  }
  return out;
}

/** `config` with each orphan added as a VM with no rules: exactly our hostdevs are removed. */
function withOrphans(config: Config, orphans: readonly string[]): Config {
  if (orphans.length === 0) return config;
  return {
    ...config,
    vms: [...config.vms, ...orphans.map((name) => ({ name, location: config.file, rules: [] }))],
  };
}

/**
 * Computes the plan. Reads every domain's definitions once (each configured VM's, and every
 * other domain's for conflicts), then plans from that snapshot; changes nothing.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { openLibvirtPort } from "../../ffi/port.ts";
 * import { parseConfig } from "../config/config.ts";
 * import { topologyFromDescription } from "../testing/host_description.ts";
 * const host = topologyFromDescription({ devices: [{
 *   bdf: "0000:0b:00.0", group: 30, class: "0x030000", vendor: "0x10de", device: "0x1b06",
 *   subsystem_vendor: null, subsystem_device: null, driver: "nvidia", revision: null,
 * }] }, { source: "example" });
 * // libvirt's built-in test world has one running domain, "test".
 * using libvirt = openLibvirtPort("test:///default");
 * const config = parseConfig(
 *   "version: 1\nvms:\n  test:\n    devices:\n      - match: { vendor_device_id: 10de:1b06 }\n",
 *   { file: "example.yaml" },
 * );
 * const [vm] = planHostdevs({ config, host, libvirt }).vms;
 * assertEquals(vm?.add.map((a) => a.address), ["0000:0b:00.0"]);
 * assertEquals(vm?.warnings.map((w) => w.code), ["host-driver-in-use", "vm-running"]);
 * ```
 */
export function planHostdevs(options: PlanOptions): Plan {
  const { libvirt, ...rest } = options;
  return planWorld({ ...rest, world: readWorld(libvirt) });
}

/**
 * Adds a `held-by-running-vm` warning to each changed VM whose plan adds a device another
 * running guest holds now (its own plan releases it, or this one would be refused), and to each
 * unrefused VM whose definition keeps one (released by an earlier apply while the guest ran):
 * one per holder, which must be powered off (or the device unplugged) before this VM can start.
 */
function warnHeldByRunning(vms: readonly VmPlan[], survey: Survey): void {
  for (const vm of vms) {
    const adding = new Set(vm.changed ? vm.add.map((a) => a.address) : []);
    const keeping = vm.errors.length === 0 ? vm.hostdevs.filter((a) => !adding.has(a)) : [];
    for (const [holder, devices] of survey.running) {
      if (holder === vm.name) continue;
      const held = [...adding].filter((a) => devices.has(a));
      if (held.length > 0) vm.warnings.push(heldByRunningWarning(vm.name, holder, held));
      const kept = keeping.filter((a) => devices.has(a));
      if (kept.length > 0) {
        vm.warnings.push(heldByRunningWarning(vm.name, holder, kept, { kept: true }));
      }
    }
  }
}

/** The refusals a VM left out by `--vm` may lift by giving its device up in its own plan. */
const CROSS_VM_CODES: ReadonlySet<string> = new Set([
  "device-assigned-twice",
  "group-shared-with-other-vm",
]);

/**
 * With `--vm`, a VM refused for a device a configured VM left out of the plan holds may be half
 * of a swap (two identical cards exchanged, each VM following its own): the other VM's own plan
 * gives the device up, so planned together neither is refused. Say so, with the command, on each
 * such refusal: alone, the repair would strip the card from the VM, and the guard's
 * `plan --vm VM` would lead there.
 */
function hintPlanTogether(input: SettleInput, vms: readonly VmPlan[]): void {
  const selected = new Set(input.selected);
  const configured = new Set(input.config.vms.map((v) => v.name));
  for (const vm of vms) {
    const partners = [
      ...new Set(
        vm.errors.filter((e) => CROSS_VM_CODES.has(e.code))
          .flatMap((e) => e.vms ?? [])
          .filter((name) => !selected.has(name) && configured.has(name)),
      ),
    ].sort();
    if (partners.length === 0) continue;
    const together = [vm.name, ...partners];
    const joint = planUntilSettled({ ...input, selected: together }).vms;
    if (joint.some((p) => together.includes(p.name) && p.errors.length > 0)) continue;
    const command = followUpCommand(input.run, "passthrough plan", {
      options: together.map((name) => ["--vm", name] as const),
    });
    const names = partners.map((name) => `"${name}"`).join(", ");
    for (const error of vm.errors) {
      if (!CROSS_VM_CODES.has(error.code)) continue;
      if (!(error.vms ?? []).some((name) => partners.includes(name))) continue;
      error.message += `; ${names} ${partners.length === 1 ? "gives" : "give"} it up in ${
        partners.length === 1 ? "its" : "their"
      } own plan: planned together, nothing is refused (${command})`;
    }
  }
}

/**
 * Computes the plan from data alone: the config, the host and a world as {@link readWorld} reads
 * it (or built by hand). No I/O but the lazy reads of `options.facts`: {@link planHostdevs} is this after reading the world.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { parseConfig } from "../config/config.ts";
 * import { topologyFromDescription } from "../testing/host_description.ts";
 * import { readDefinition } from "./world.ts";
 * const host = topologyFromDescription({ devices: [{
 *   bdf: "0000:0b:00.0", group: 30, class: "0x030000", vendor: "0x10de", device: "0x1b06",
 *   subsystem_vendor: null, subsystem_device: null, driver: "vfio-pci", revision: null,
 * }] }, { source: "example" });
 * const config = parseConfig(
 *   "version: 1\nvms:\n  vm:\n    devices:\n      - match: { vendor_device_id: 10de:1b06 }\n",
 *   { file: "example.yaml" },
 * );
 * const world = {
 *   uri: "test:///example",
 *   domains: [{
 *     name: "vm",
 *     active: false,
 *     persistent: readDefinition("<domain><name>vm</name><devices/></domain>"),
 *     live: null,
 *   }],
 * };
 * const [vm] = planWorld({ config, host, world }).vms;
 * assertEquals([vm?.add.map((a) => a.address), vm?.changed], [["0000:0b:00.0"], true]);
 * ```
 */
export function planWorld(options: PlanWorldOptions): Plan {
  const { config, host, world } = options;
  checkOneHost(config);
  const survey = surveyWorld(
    world,
    config,
    options.vms !== undefined,
    options.facts === undefined ? undefined : withNetworks(options.facts, world.networks),
  );
  const global = hostIssues(host);
  const errors = [...global.errors, ...survey.errors];
  const warnings = [
    ...global.warnings,
    ...survey.warnings,
    ...networkWarnings(world.networks, world.uri),
  ];
  const effective = withOrphans(config, survey.orphans);
  const hostdevNetworks = world.networks?.kind === "read" ? world.networks.hostdev : [];
  const pools = networkPools(
    hostdevNetworks,
    host,
    options.facts === undefined ? undefined : (name) => options.facts!.netDeviceControllers(name),
  );
  const input = {
    config,
    effective,
    // Each VM once, however often it was asked for (`--vm a --vm a`): twice, it was planned twice,
    // and `apply` defined it, then refused its second plan as a definition changed since.
    selected: options.vms ? [...new Set(options.vms)] : effective.vms.map((v) => v.name),
    host,
    survey,
    uri: world.uri,
    globalErrors: errors,
    pools,
    ...(options.facts === undefined ? {} : { facts: options.facts }),
    run: options.run,
    guardHook: options.guardHook,
    guardPolicies: options.guardPolicies,
  };
  const settled = planUntilSettled(input);
  warnHeldByRunning(settled.vms, survey);
  if (options.vms !== undefined) {
    hintPlanTogether(input, settled.vms);
    warnings.push(...driftOfOthers(input, settled));
  }
  const selected = new Set(input.selected);
  const unplanned = config.vms.map((v) => v.name).filter((name) => !selected.has(name));
  return {
    config: config.file,
    ...(config.example ? { example: true as const } : {}),
    ...(unplanned.length > 0 ? { unplanned } : {}),
    host: host.source,
    ...(config.section === undefined ? {} : { section: config.section.host }),
    uri: world.uri,
    vms: settled.vms,
    errors,
    warnings,
    groupOf: groupsOfChanges(settled.vms, host),
  };
}
