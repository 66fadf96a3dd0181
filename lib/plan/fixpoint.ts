/**
 * Planning every selected VM until refusals settle. A refused VM keeps its definition, owned
 * hostdevs included, so those count as held by it for the other VMs' conflicts: plan again with
 * them until no new VM is refused (refusals only grow, so this ends). Pure.
 *
 * @module
 */

import { didYouMean } from "../render/suggest.ts";
import type { Config } from "../config/config.ts";
import { sessionDriver } from "../config/uri.ts";
import { handPassedAddresses, heldAddresses } from "../domain/domain_xml.ts";
import type { HostTopology, PciAddress } from "../host/types.ts";
import type { HostFacts } from "../host/preflight.ts";
import { driftWarning, heldNote } from "./issues.ts";
import { droppedVmGuard, type GuardPolicyFile } from "../guard/policy.ts";
import { followUpCommand, type RunFlags, shellQuote } from "../render/shell.ts";
import { resolveEach, type VmResolution, withConflicts } from "./resolve.ts";
import type { Survey } from "./survey.ts";
import type { NetworkPool } from "./networks.ts";
import type { PlanIssue, VmPlan } from "./types.ts";
import { emptyVmPlan, planVm, type VmContext } from "./vm_edit.ts";

/** What {@link planUntilSettled} plans from. */
export interface SettleInput {
  /** The config as written (for locations and messages). */
  config: Config;
  /** The config with orphans added, planned with no rules. */
  effective: Config;
  /** The VMs to plan, in order. */
  selected: readonly string[];
  host: HostTopology;
  survey: Survey;
  /** The libvirt URI, for messages. */
  uri: string;
  /** Plan-wide refusals: each refuses every VM too. */
  globalErrors: readonly PlanIssue[];
  /** The pools of the connection's hostdev networks. */
  pools: readonly NetworkPool[];
  /** Host facts for the pre-flight findings; absent: none are judged. */
  facts?: HostFacts;
  /** The flags of this run that the `passthrough plan` a message advises repeats. */
  run?: RunFlags | undefined;
  /** Whether the start guard is installed on the host planned; absent: unknown. */
  guardHook?: boolean | undefined;
  /** The start guard's recorded policies, which judge a VM dropped from the config. */
  guardPolicies?: GuardPolicyFile | undefined;
}

/** The VMs' plans once settled, and the resolution they were planned from. */
export interface Settled {
  vms: VmPlan[];
  resolved: Map<string, VmResolution>;
}

/**
 * What each domain holds whatever this round plans: everything of a domain not planned, the
 * hand-added hostdevs of planned ones, and a refused VM's owned hostdevs its own rules do not
 * claim again (`previous`: last round's resolution). Parsed definitions first, then the others.
 */
function heldDevices(
  survey: Survey,
  planned: ReadonlySet<string>,
  refused: ReadonlySet<string>,
  previous: ReadonlyMap<string, VmResolution>,
): Map<string, PciAddress[]> {
  const held = new Map<string, PciAddress[]>();
  for (const [name, { hostdevs, fixed, ownedInterfaces }] of survey.holdings) {
    if (hostdevs === null) continue;
    const claimed = new Set(previous.get(name)?.closure.devices.map((c) => c.device.address));
    const all = [...hostdevs, ...ownedInterfaces.map((address) => ({ address, owned: true }))];
    const kept = all.filter((h) =>
      !planned.has(name) || !h.owned || (refused.has(name) && !claimed.has(h.address))
    );
    held.set(name, [...kept.map((h) => h.address), ...fixed]);
  }
  for (const [name, { hostdevs, fixed }] of survey.holdings) {
    if (hostdevs === null) held.set(name, [...fixed]);
  }
  return held;
}

/** A VM refused before its rules are looked at, keeping `xml` as it is. */
function refusedVm(name: string, xml: string, issue: PlanIssue, config: Config): VmPlan {
  const plan = emptyVmPlan(name, xml);
  const location = config.vms.find((v) => v.name === name)?.location;
  const { devices, ...rest } = issue;
  plan.errors.push({
    ...rest,
    ...(location === undefined ? {} : { location }),
    ...(devices === undefined ? {} : { devices }),
  });
  return plan;
}

/** The plan of one selected VM, or its refusal when it cannot be planned at all. */
function planSelected(
  name: string,
  input: SettleInput,
  resolved: ReadonlyMap<string, VmResolution>,
  context: Omit<VmContext, "active">,
): VmPlan {
  const { config, survey } = input;
  const broken = survey.unreadable.get(name);
  if (broken !== undefined) {
    return refusedVm(name, broken.xml, {
      code: "unreadable-definition",
      message: `Cannot read the definition of VM "${name}": ${broken.error}: ${
        heldNote(name, broken.scan)
      }`,
      vm: name,
      ...(broken.scan.addresses.length > 0 ? { devices: broken.scan.addresses } : {}),
    }, config);
  }
  const unread = survey.unread.get(name);
  if (unread !== undefined) {
    return refusedVm(name, "", {
      code: "unreadable-definition",
      message:
        `Cannot read the definition of VM "${name}": ${unread}: the devices it holds are unknown`,
      vm: name,
    }, config);
  }
  if (survey.transient.has(name)) {
    // Defining a planned definition would make it persistent (apply refuses that too).
    return refusedVm(name, survey.editable.get(name)?.xml ?? "", {
      code: "transient-vm",
      message:
        `VM "${name}" is a transient domain (no persistent definition), which apply does not make persistent: define it first (virsh dumpxml ${
          shellQuote(name)
        } > vm.xml; virsh define vm.xml), or fix the name in the config`,
      vm: name,
    }, config);
  }
  const entry = survey.editable.get(name);
  const kept = survey.keptOrphans.get(name);
  if (kept !== undefined) return refusedVm(name, entry?.xml ?? "", kept, config);
  const resolution = resolved.get(name);
  if (resolution === undefined || entry === undefined) {
    return refusedVm(name, entry?.xml ?? "", {
      code: "unknown-vm",
      message: resolution === undefined
        ? `VM "${name}" is not in config "${config.file}"`
        : `VM "${name}" is not defined in libvirt ("${input.uri}"): define it first or fix the name in the config${
          didYouMean(name, [...survey.holdings.keys()])
        }${sessionNote(input.uri)}`,
      vm: name,
    }, config);
  }
  const dropped = survey.orphans.includes(name);
  // A dropped VM's policy is no longer in the config, but the guard keeps what it recorded.
  const guard = dropped
    ? droppedVmGuard(input.guardPolicies ?? null, { vm: name, uuid: entry.domain.uuid })
    : input.effective.vms.find((v) => v.name === name)?.guard;
  const plan = planVm(entry.xml, entry.domain, resolution, {
    ...context,
    active: survey.active.get(name) ?? null,
    dropped,
    ...(guard === undefined ? {} : { guard }),
    ...(config.section === undefined ? {} : { section: config.section.host }),
  });
  if (dropped) plan.reasoning.unshift(droppedReason(name, config));
  return plan;
}

/**
 * Why VM `name`, defined but not in `config` (for this host), is planned: the hostdevs passthrough
 * added are removed, whether it left the config or is planned on other hosts only.
 */
function droppedReason(name: string, config: SettleInput["config"]): string {
  const hosts = config.section !== undefined && Object.hasOwn(config.section.elsewhere, name)
    ? config.section.elsewhere[name]!
    : null;
  return hosts === null
    ? `VM "${name}" is no longer in config "${config.file}"${
      config.section === undefined ? "" : ` for host "${config.section.host}"`
    }: the hostdevs passthrough added are removed (hand-added ones stay)`
    : `VM "${name}" is planned only on ${
      hosts.map((h) => `"${h}"`).join(", ")
    } in config "${config.file}", not on "${
      config.section!.host
    }": the hostdevs passthrough added here are removed (hand-added ones stay)`;
}

/**
 * Plans every selected VM, again and again while new VMs are refused, each refused VM's
 * definition then counting as held. Returns the last round.
 */
export function planUntilSettled(input: SettleInput): Settled {
  const { host, survey } = input;
  const planned = new Set(input.selected);
  const editable = [...survey.editable];
  const records = new Map(editable.map(([n, e]) => [n, e.domain.records]));
  const current = new Map(editable.map(([n, e]) => [n, new Set(heldAddresses(e.domain))]));
  const handPassed = new Map(editable.map(([n, e]) => [n, new Set(handPassedAddresses(e.domain))]));
  const vfRecords = new Map(editable.map(([n, e]) => [n, e.domain.vfRecords]));
  const holdings = [...survey.holdings];
  const occupied = new Map(holdings.map(([n, h]) => [
    n,
    new Set([...(h.hostdevs ?? []).map((d) => d.address), ...h.fixed, ...h.ownedInterfaces]),
  ]));
  const macs = new Map(holdings.map(([n, h]) => [n, h.macs]));
  const deviceControllers = new Map(holdings.map(([n, h]) => [n, h.deviceControllers]));
  const runningOnly = new Map(holdings.map(([n, h]) => [n, new Set(h.runningOnly)]));
  const context = {
    host,
    byAddress: new Map(host.devices.map((d) => [d.address, d])),
    globalErrors: input.globalErrors,
    ...(input.facts === undefined ? {} : { facts: input.facts }),
    pools: input.pools,
    deviceControllers,
    ...(input.guardHook === undefined ? {} : { guardHook: input.guardHook }),
  };
  const refused = new Set<string>();
  let previous = new Map<string, VmResolution>();
  // A round changes a VM's resolution only by the conflicts found with what refused VMs hold
  // (`held` reaches nothing else): each VM's rules are resolved once, and a VM whose errors are
  // those of the last round plans as it did then: only the VMs a new refusal reaches are planned
  // again. A chain of refusals
  // (each VM wanting the device a refused one keeps) takes a round per VM.
  const last = new Map<string, { errors: string; plan: VmPlan }>();
  const plan = (name: string, resolved: ReadonlyMap<string, VmResolution>) => {
    const errors = JSON.stringify(resolved.get(name)?.errors ?? null);
    const known = last.get(name);
    if (known?.errors === errors) return known.plan;
    const fresh = planSelected(name, input, resolved, context);
    last.set(name, { errors, plan: fresh });
    return fresh;
  };
  const options = {
    records,
    current,
    handPassed,
    occupied,
    macs,
    vfRecords,
    deviceControllers,
    runningOnly,
    pools: input.pools,
    run: input.run,
  };
  const each = resolveEach(input.effective, host, options);
  for (;;) {
    const held = heldDevices(survey, planned, refused, previous);
    const resolved = withConflicts(each, host, { ...options, held });
    const vms = input.selected.map((name) => plan(name, resolved));
    previous = resolved;
    const now = vms.filter((vm) => vm.errors.length > 0).map((vm) => vm.name);
    if (now.every((name) => refused.has(name))) return { vms, resolved };
    for (const name of now) refused.add(name);
  }
}

/**
 * VMs left out by the selection are not changed, but a recorded card that is no longer where it
 * was (moved too), or a hostdev on a device the host needs now, is news about the host: their
 * `drift` and `host-needed` issues, to report plan-wide as warnings.
 */
export function driftOfOthers(input: SettleInput, settled: Settled): PlanIssue[] {
  const planned = new Set(input.selected);
  const context = {
    host: input.host,
    byAddress: new Map(input.host.devices.map((d) => [d.address, d])),
    globalErrors: input.globalErrors,
    pools: input.pools,
  };
  return input.effective.vms.flatMap(({ name }) => {
    const entry = input.survey.editable.get(name);
    const resolution = settled.resolved.get(name);
    if (planned.has(name) || entry === undefined || resolution === undefined) return [];
    const other = planVm(entry.xml, entry.domain, resolution, {
      ...context,
      active: input.survey.active.get(name) ?? null,
    });
    // A refused VM lists its stale and host-needed hostdevs as refusals; plan-wide they are
    // warnings, and what they say the plan does waits for a plan of that VM. What it leaves to
    // the user (a hand-added hostdev, an interface, a hostdev network's pool entry) no plan does.
    const command = followUpCommand(input.run, "passthrough plan", { options: [["--vm", name]] });
    const repaired = new Set([
      ...other.repair?.remove ?? [],
      ...(other.repair?.move ?? []).map((m) => m.from),
    ]);
    const planDoes = (w: PlanIssue) =>
      w.code === "drift" || (w.devices ?? []).some((d) => repaired.has(d));
    const drifted = [...other.errors, ...other.warnings]
      .filter((w) => w.code === "drift" || w.code === "host-needed")
      .map((w) => ({
        ...w,
        message: w.message +
          (planDoes(w)
            ? `; "${name}" is left out of this plan: its own plan (${command}) does that`
            : `; "${name}" is left out of this plan (${command} plans it)`),
      }));
    // An unrefused VM's moved card is an edit, not a warning, of its own plan: left out, its
    // definition still names the old address, which may hold another device now.
    const moved = other.move.flatMap((m) => {
      const record = entry.domain.records.find((r) => r.address === m.from);
      if (record === undefined) return [];
      const outcome = `its card is now at ${m.to} (${m.evidence}); "${name}" is left out of ` +
        `this plan: its own plan (${command}) follows it there`;
      const issue = driftWarning(name, record, context.byAddress.get(m.from), outcome);
      return [{ ...issue, devices: [m.from, m.to] }];
    });
    return [...drifted, ...moved];
  });
}

/**
 * For a session URI (`qemu:///session`: libvirt's default for a user other than root), that the
 * system's VMs are elsewhere: such a user who left out `-c` is told a VM of the host "is not
 * defined", and defining it there is not the fix.
 */
function sessionNote(uri: string): string {
  const driver = sessionDriver(uri);
  if (driver === null) return "";
  const system = `${driver}:///system`;
  return `; "${uri}" is this user's own libvirt, not the host's: for the host's VMs connect to "${system}" (--connect, or connect: in the config) as root or a member of the "libvirt" group`;
}
