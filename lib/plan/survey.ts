/**
 * The first planning step: what each domain of the world holds, which definitions the plan edits,
 * and the plan-wide issues reading them raised. Pure: the world is data already.
 *
 * - A parsed definition holds its PCI hostdevs (the plan may remove the owned ones of a planned
 *   VM) and its `<interface type='hostdev'>` devices (never edited, but taken).
 * - A definition the strict reader refuses holds what the lenient scan finds in it; a hostdev in
 *   it with no readable host address refuses the whole plan (what it holds is unknown).
 * - A definition libvirt did not return refuses the whole plan, for the same reason.
 * - A running guest also holds what was hot-plugged into it beyond its persistent definition.
 * - A domain outside the config that still holds hostdevs this tool added (records in its
 *   metadata) was dropped from the config: it is planned with no rules (an orphan), unless the
 *   plan is limited to some VMs. Its devices are not released, the orphan refused instead, while
 *   the config names a VM libvirt does not have (a misspelt name would strip the real VM) or
 *   names no VM at all (releasing every VM's devices is said with `devices: []` per VM).
 *
 * @module
 */

import type { Config } from "../config/config.ts";
import { type DomainHostdev, heldAddresses, type ParsedDomain } from "../domain/domain_xml.ts";
import type { LenientHostdevScan } from "../domain/lenient.ts";
import {
  controllersUnder,
  type DeviceResolvers,
  onDefinedNetworks,
  RUNNING_ONLY,
  runningOnly,
  type UnresolvedKind,
  usedDevicesIn,
} from "./used_devices.ts";
import type { PciAddress } from "../host/types.ts";
import {
  liveOnlyWarning,
  orphanKeptError,
  readFailedError,
  unreadableLiveWarning,
  unreadableOutsiderWarning,
  unreadLiveWarning,
  unresolvedDeviceWarning,
  unresolvedError,
} from "./issues.ts";
import type { PlanIssue } from "./types.ts";
import type { DefinitionRead, DomainSnapshot, World } from "./world.ts";
import { errorText } from "../render/error_text.ts";

/** A definition the plan edits, as read. */
export interface EditableDefinition {
  xml: string;
  domain: ParsedDomain;
}

/** What one domain holds, apart from what the plan decides. */
export interface Holding {
  /** PCI hostdevs of its parsed persistent definition; `null` when it could not be parsed. */
  hostdevs: DomainHostdev[] | null;
  /**
   * Devices it holds whatever the plan does: hand-written `<interface type='hostdev'>` devices,
   * or the lenient scan's addresses of a definition the strict reader refuses; then live-only
   * devices.
   */
  fixed: PciAddress[];
  /** Its owned `<interface type='hostdev'>` VFs: released or kept like owned hostdevs. */
  ownedInterfaces: PciAddress[];
  /** The MACs of its interfaces (persistent and live). */
  macs: string[];
  /**
   * The PCI controllers under the host devices it uses (block disks, USB devices, interfaces'
   * NICs; persistent and live), each with what it holds there: in `fixed` too, and its own rules must not take them.
   */
  deviceControllers: Map<PciAddress, string[]>;
  /** What only its running guest holds, beyond its persistent definition: in `fixed` too. */
  runningOnly: PciAddress[];
}

/** What {@link surveyWorld} finds. Plain data. */
export interface Survey {
  /** Every domain's holding, by name, in world order. */
  holdings: Map<string, Holding>;
  /** Definitions of configured VMs and orphans, parsed. */
  editable: Map<string, EditableDefinition>;
  /** Configured VMs whose definition the strict reader refuses. */
  unreadable: Map<string, { xml: string; error: string; scan: LenientHostdevScan }>;
  /** Configured VMs whose definition libvirt did not return, with its error. */
  unread: Map<string, string>;
  /** Domains outside the config that hold hostdevs this tool added, in world order. */
  orphans: string[];
  /** Orphans whose devices are not released, with the refusal that says why. */
  keptOrphans: Map<string, PlanIssue>;
  /** Whether each domain was running. */
  active: Map<string, boolean>;
  /** Transient domains (no persistent definition), which `apply` does not make persistent. */
  transient: Set<string>;
  /**
   * What each running guest holds now, by domain name: the PCI devices of its live definition
   * (of its persistent one when the live one was not read). A device the plan moves out of its
   * persistent definition stays there until the guest is powered off.
   */
  running: Map<string, ReadonlySet<PciAddress>>;
  /** Plan-wide refusals and warnings from reading the world. */
  errors: PlanIssue[];
  warnings: PlanIssue[];
}

interface LiveHolding {
  extra: PciAddress[];
  errors: PlanIssue[];
  warnings: PlanIssue[];
}

/**
 * What a running guest holds beyond its persistent definition (`defined`): the PCI devices of
 * its live definition, read strictly or, when refused, leniently.
 */
function liveHolding(
  name: string,
  live: DefinitionRead,
  defined: ReadonlySet<PciAddress>,
): LiveHolding {
  if (live.kind === "read-failed") {
    return { extra: [], errors: [], warnings: [unreadLiveWarning(name, live.error)] };
  }
  const out: LiveHolding = { extra: [], errors: [], warnings: [] };
  let held: PciAddress[];
  if (live.kind === "parsed") {
    held = heldAddresses(live.domain);
  } else {
    held = live.scan.addresses;
    const beyond = held.filter((a) => !defined.has(a));
    out.warnings.push(unreadableLiveWarning(name, live.error, live.scan, beyond));
    if (live.scan.unresolved > 0) out.errors.push(unresolvedError(name, live.scan, "running"));
  }
  out.extra = [...new Set(held)].filter((address) => !defined.has(address)).sort();
  return out;
}

/**
 * The controllers under the host devices a domain uses (see `controllersUnder`), what only its
 * running guest uses marked {@link RUNNING_ONLY}. A disk or character device whose path cannot be
 * read is one warning, added to `warnings` (a network that cannot be read has its own, once).
 */
function deviceControllersOf(
  { name, persistent, live }: DomainSnapshot,
  resolvers: DeviceResolvers | undefined,
  warnings: PlanIssue[],
): Map<PciAddress, string[]> {
  const warned = new Set<string>();
  const unreadable = (path: string, error: unknown, kind: UnresolvedKind) => {
    if (kind !== "network" && !warned.has(path)) {
      warnings.push(unresolvedDeviceWarning(name, path, errorText(error), kind));
    }
    warned.add(path);
  };
  const defined = usedDevicesIn(persistent);
  const running = live === null ? null : usedDevicesIn(live);
  const own = running === null ? [defined] : [defined, onDefinedNetworks(defined, running)];
  const controllers = controllersUnder(own, resolvers, unreadable);
  if (running === null) return controllers;
  const extra = runningOnly(defined, running);
  for (const [address, uses] of controllersUnder([extra], resolvers, unreadable, RUNNING_ONLY)) {
    controllers.set(address, [...(controllers.get(address) ?? []), ...uses]);
  }
  return controllers;
}

/** Adds one domain to `survey`; live-only warnings go to `liveWarnings`, reported last. */
function surveyDomain(
  survey: Survey,
  snapshot: DomainSnapshot,
  context: {
    configured: ReadonlySet<string>;
    limited: boolean;
    liveWarnings: PlanIssue[];
    resolvers: DeviceResolvers | undefined;
  },
): void {
  const { name, persistent, live } = snapshot;
  const holding: Holding = {
    hostdevs: null,
    fixed: [],
    ownedInterfaces: [],
    macs: [],
    deviceControllers: new Map(),
    runningOnly: [],
  };
  let defined: PciAddress[] = [];
  if (persistent.kind === "read-failed") {
    // What it holds is unknown: planning as if it held nothing could give its devices away.
    if (context.configured.has(name)) survey.unread.set(name, persistent.error);
    survey.errors.push(readFailedError(name, persistent.error));
  } else if (persistent.kind === "unreadable") {
    // A configured VM is refused on its own; another tool's domain is not planned. Either way
    // what the lenient scan finds in it counts as held.
    const { xml, error, scan } = persistent;
    holding.fixed.push(...scan.addresses);
    defined = scan.addresses;
    if (context.configured.has(name)) survey.unreadable.set(name, { xml, error, scan });
    else survey.warnings.push(unreadableOutsiderWarning(name, error, scan));
    if (scan.unresolved > 0) survey.errors.push(unresolvedError(name, scan, "persistent"));
  } else {
    const { xml, domain } = persistent;
    holding.hostdevs = domain.hostdevs;
    const owned = new Set(domain.interfaces.filter((i) => i.owned).map((i) => i.address));
    holding.fixed.push(...domain.interfaceHostdevs.filter((a) => !owned.has(a)));
    holding.fixed.push(...domain.nvmeDisks);
    holding.ownedInterfaces.push(...owned);
    holding.macs.push(...domain.macs);
    defined = heldAddresses(domain);
    if (context.configured.has(name)) survey.editable.set(name, { xml, domain });
    else if (!context.limited && domain.records.length + domain.vfRecords.length > 0) {
      survey.editable.set(name, { xml, domain });
      survey.orphans.push(name);
    }
  }
  if (live?.kind === "parsed") holding.macs.push(...live.domain.macs);
  holding.deviceControllers = deviceControllersOf(snapshot, context.resolvers, survey.warnings);
  holding.fixed.push(...holding.deviceControllers.keys());
  if (live !== null) {
    const extra = liveHolding(name, live, new Set(defined));
    survey.errors.push(...extra.errors);
    survey.warnings.push(...extra.warnings);
    holding.fixed.push(...extra.extra);
    holding.runningOnly.push(...extra.extra);
    if (extra.extra.length > 0) context.liveWarnings.push(liveOnlyWarning(name, extra.extra));
  }
  survey.holdings.set(name, holding);
  survey.active.set(name, snapshot.active);
  if (snapshot.transient === true) survey.transient.add(name);
  if (snapshot.active) survey.running.set(name, runningDevices(live, defined));
}

/** The PCI devices a running guest holds now (see {@link Survey.running}). */
function runningDevices(live: DefinitionRead | null, defined: PciAddress[]): Set<PciAddress> {
  if (live?.kind === "parsed") return new Set(heldAddresses(live.domain));
  if (live?.kind === "unreadable") return new Set([...defined, ...live.scan.addresses]);
  return new Set(defined);
}

/**
 * Surveys `world` for `config`: what every domain holds, which definitions the plan edits, and
 * the plan-wide issues of reading them. `limited`: the plan covers only some VMs (no orphans
 * are planned then).
 */
export function surveyWorld(
  world: World,
  config: Config,
  limited: boolean,
  resolvers?: DeviceResolvers,
): Survey {
  const survey: Survey = {
    holdings: new Map(),
    editable: new Map(),
    unreadable: new Map(),
    unread: new Map(),
    orphans: [],
    keptOrphans: new Map(),
    active: new Map(),
    transient: new Set(),
    running: new Map(),
    errors: [],
    warnings: [],
  };
  const context = {
    configured: new Set(config.vms.map((v) => v.name)),
    limited,
    liveWarnings: [] as PlanIssue[],
    resolvers,
  };
  for (const snapshot of world.domains) surveyDomain(survey, snapshot, context);
  survey.warnings.push(...context.liveWarnings);
  const unknown = config.vms.map((v) => v.name).filter((name) => !survey.holdings.has(name));
  if (unknown.length > 0 || config.vms.length === 0) {
    for (const name of survey.orphans) {
      survey.keptOrphans.set(name, orphanKeptError(name, config.file, unknown, config.section));
    }
  }
  return survey;
}
