/**
 * Rollback: redefine a VM from one of its backups (the newest by default), after confirmation and
 * after backing up the definition it replaces, so a rollback can itself be rolled back. A backup
 * that gives the VM a device another domain holds now is not restored (checked before asking and
 * again just before the define): that would put the device in two definitions; nor, with this
 * host's facts, one giving it a device whose IOMMU group or SR-IOV PF/VF another domain holds
 * (`plan`'s `group-shared-with-other-vm` and `sriov-split`), or a VF a hostdev network's pool
 * hands out or that pool's PF (`hostdev-network`), or whose hostdevs the start guard
 * would refuse now (a recorded device replaced, one the host needs: an address holding nothing
 * is only warned of); nor into a transient domain, as `apply` refuses one: defining it would make
 * it persistent; nor under a name whose uuid another domain carries now (renamed).
 *
 * Equality (before asking, and after the define) is line by line, each line normalised as
 * `lib/render/diff.ts` does (indentation, attribute quote style, spacing inside tags, `<a></a>` vs
 * `<a/>`; blank lines ignored; inside text spanning lines, every space and blank line counts), the
 * `<controller>`s of `<devices>` taken in one order: libvirt writes its own XML back in a stable
 * form, except that it orders controllers itself as it stores a definition (one it added when the
 * backup was first defined is placed among the others the second time), so a backup taken from
 * libvirt comes back line for line but for that order, and only formatting may differ when a
 * backup was edited by hand. Every other device's order counts (the first interface boots from
 * the network).
 *
 * @module
 */

import type { DomainSummary, LibvirtPort } from "../plan/libvirt_port.ts";
import type { PciAddress, PciDevice } from "../host/types.ts";
import {
  backupDir,
  type BackupEntry,
  findBackup,
  libvirtHost,
  listBackups,
  readBackupXml,
  writeBackup,
} from "../state/backups.ts";
import { controllersInOneOrder, heldAddresses, parseDomainXml } from "../domain/domain_xml.ts";
import { acquireConnectionLock, type LockHolder, lockUri, type StateLock } from "../state/lock.ts";
import { openStateDir, type StateDir } from "../state/state_dir.ts";
import { defineOrExplain, describeXmlChange, hasSavedState, savedStateNote } from "./apply.ts";
import { hasSignificantChanges } from "../render/diff.ts";
import { readWorld, type World } from "../plan/world.ts";
import {
  groupMatesHostNeeds,
  heldElsewhere,
  type HeldElsewhereOptions,
  type HostRead,
} from "./recheck.ts";
import { type DeviceResolvers, withNetworks } from "../plan/used_devices.ts";
import { errorText } from "../render/error_text.ts";
import { followUpCommand, type RunFlags, shellWord } from "../render/shell.ts";

/** What the user is asked to confirm. */
export interface RollbackPreview {
  /** The VM to restore. */
  vm: string;
  /** The backup that would be restored. */
  backup: BackupEntry;
  /** The definition now (with secrets), or `null` when the VM is not defined any more. */
  currentXml: string | null;
  /** The definition the backup holds. */
  backupXml: string;
  /** Whether the VM is running now. */
  active: boolean;
  /**
   * What the restore does not refuse but the user should know before saying yes: hostdevs of the
   * backup that the start guard would not start now (no device at their address), one sentence
   * each (from {@link RollbackOptions.startWarnings}).
   */
  warnings: string[];
}

/** What the held-elsewhere checks read of a host device: its IOMMU group and SR-IOV links. */
export type HostDeviceNow = Pick<PciDevice, "iommuGroup" | "physfn" | "virtfns">;

/** One of {@link RollbackOptions.startRefusals}: why, and the group member it concerns. */
export interface StartRefusal {
  /** The sentence. */
  reason: string;
  /** The other function of a hostdev's IOMMU group it refuses (one a running VM was given). */
  groupMember?: PciAddress;
}

/**
 * One of {@link RollbackOptions.startRefusals} that refuses nothing: a function of a hostdev's
 * IOMMU group that the host needs and that the start guard lets the VM take along
 * (`allow_host_critical: true` on the rule of the record apply left), so the `host` check lets
 * it too, as `plan` did.
 */
export interface StartAllowance {
  /** The group's other function. */
  allowedMember: PciAddress;
}

/** Options for {@link rollbackVm}. */
export interface RollbackOptions {
  /** The libvirt connection to read and define through. */
  libvirt: LibvirtPort;
  /** The state directory path (checked and created). */
  stateDir: string;
  /** A backup id, file name or path as `backups` lists it; default: the newest. */
  backup?: string;
  /**
   * Asked once, after every check passed and before anything is written. An answer that is no
   * boolean throws a `TypeError`, and nothing is written.
   */
  confirm: (preview: RollbackPreview) => Promise<boolean>;
  /**
   * The lock of this connection ({@link acquireConnectionLock}), when the caller already holds it
   * (the CLI takes it before planning, so a second run fails before doing any work). Default:
   * take it here and release it at the end.
   */
  lock?: StateLock;
  /**
   * Which PCI controllers are under a host device (`HostFacts` of this host, when libvirt runs
   * here): the controllers under other domains' block disks, USB devices, network interfaces
   * (their networks' too) and character devices then count as theirs when checking what the
   * backup gives back. Default: they are not resolved.
   */
  devices?: DeviceResolvers;
  /**
   * Why the backup's hostdevs may not be started on this host now, as the start guard sees them
   * (a recorded device replaced by another, or one the host needs that no `allow_host_critical`
   * lets it start): such a backup is not restored. Asked before the question and again after it.
   * A refusal of another function of a hostdev's IOMMU group names it
   * ({@link StartRefusal.groupMember}): the `host` check then says nothing more of it, nor of
   * one the guard lets the VM take ({@link StartAllowance}).
   * Default: not asked (libvirt on another host).
   */
  startRefusals?: (xml: string) => (string | StartRefusal | StartAllowance)[];
  /**
   * What the start guard would refuse of the backup's hostdevs on this host now that does not
   * hold the restore back (an address that holds no device: nothing can be taken from the host,
   * but the VM will not start), one sentence each: shown before the question and in the report.
   * Default: not asked.
   */
  startWarnings?: (xml: string) => string[];
  /**
   * A host PCI device now (this host's sysfs, when libvirt runs here), or `null` when there is
   * none; read afresh by each check, once per device. With it, a device another domain holds in
   * the IOMMU group of one the backup gives back counts as held, as `plan` refuses a group shared
   * with another VM (a group's devices can only be handed to one guest); and so does one holding
   * its PF (when it is a VF) or one of its VFs (when it is a PF), as `plan` refuses `sriov-split`
   * (passing a PF to a guest unbinds its host driver, which destroys every VF). Default: exact
   * addresses only.
   */
  readDevice?: (address: PciAddress) => HostDeviceNow | null;
  /**
   * This host's devices, IOMMU groups and use now (when libvirt runs here): a backup passing a
   * device whose group also holds a function the host needs (in use, or a platform device) is
   * not restored (`start-refused`), as VFIO would hand it to the guest with the group. Checked
   * before the question and again after it. Default: not checked.
   */
  host?: HostRead;
  /**
   * The flags of this run (`--connect`, `--state-dir`) that the commands a message advises
   * repeat, so they open the same libvirt and state directory. Default: none.
   */
  run?: RunFlags;
}

/**
 * What happened: the backup was `restored`; the definition already equals the backup
 * (`unchanged`, nothing defined); the user `declined`; it `failed` (the definition changed after
 * it was shown, or the define or its check failed); or `unknown`: the define's outcome could not
 * be learnt (the connection was lost), so the VM may hold either definition.
 */
export type RollbackStatus = "restored" | "unchanged" | "declined" | "failed" | "unknown";

/**
 * Why, as a stable code a script can test (the message is for humans): `restored`, `no-changes`
 * (`unchanged`), `declined`; refusals, with nothing written: `transient` (a transient domain),
 * `renamed` (the VM is gone, and its uuid is another domain's now: `virsh domrename`),
 * `held-elsewhere` (a device, or one of its IOMMU group, another domain holds now, or one a
 * hostdev network's pool hands out),
 * `start-refused` (the start guard would refuse its hostdevs on this host now), `drift` (the
 * definition changed after it was shown); failures: `read-failed` (libvirt, or the host's devices,
 * could not be read), `backup-failed` (the definition it replaces could not be backed up: nothing
 * defined), `define-failed` (libvirt rejected the backup), `define-unknown` (status `unknown`) and
 * `verify-failed` (libvirt holds another definition after the define, or it cannot be read back).
 */
export type RollbackCode =
  | "restored"
  | "no-changes"
  | "declined"
  | "transient"
  | "renamed"
  | "held-elsewhere"
  | "start-refused"
  | "drift"
  | "read-failed"
  | "backup-failed"
  | "define-failed"
  | "define-unknown"
  | "verify-failed";

/** A rollback that stopped: why (stable) and in words. */
interface Stop {
  code: RollbackCode;
  message: string;
}

/** The outcome of a rollback. Plain data. */
export interface RollbackReport {
  /** The VM. */
  vm: string;
  /** What happened. */
  status: RollbackStatus;
  /** Why, as a stable code (see {@link RollbackCode}). */
  code: RollbackCode;
  /** One sentence for humans. */
  message: string;
  /** The backup restored (or that would have been). */
  backup: BackupEntry;
  /**
   * The backup of the definition it replaced (or, when it failed, would have replaced), when one
   * was written.
   */
  safetyBackup: BackupEntry | null;
  /** Whether the VM was running (then the restored definition applies at its next power-off). */
  active: boolean;
  /** What the user was told before the question ({@link RollbackPreview.warnings}); may be empty. */
  warnings: string[];
  /** The dead holder of a stale lock that was broken, if any. */
  brokeStaleLock: LockHolder | null;
}

/** The backup belongs to another domain than the VM it would be restored into. */
export class BackupMismatchError extends Error {
  /** The error's name. */
  override name = "BackupMismatchError";
  /** The VM asked for. */
  readonly vm: string;
  /** The uuid of the VM now. */
  readonly vmUuid: string;
  /** The name and uuid the backup holds. */
  readonly backupName: string;
  /** The uuid the backup holds. */
  readonly backupUuid: string;
  /** The backup file. */
  readonly path: string;

  /**
   * Builds the error; the message names whichever of name and uuid differs, then `advice` (what
   * to do instead) when given.
   */
  constructor(
    vm: string,
    fields: {
      vmUuid: string;
      backupName: string;
      backupUuid: string;
      path: string;
      advice?: string;
    },
  ) {
    super(
      (fields.backupName !== vm
        ? `Refusing to restore "${fields.path}" into VM "${vm}": the backup is of domain "${fields.backupName}"`
        : `Refusing to restore "${fields.path}" into VM "${vm}": the backup is of uuid "${fields.backupUuid}", the VM has uuid "${fields.vmUuid}"`) +
        (fields.advice === undefined ? "" : `: ${fields.advice}`),
    );
    this.vm = vm;
    this.vmUuid = fields.vmUuid;
    this.backupName = fields.backupName;
    this.backupUuid = fields.backupUuid;
    this.path = fields.path;
  }
}

/**
 * The equality a rollback verifies: the same lines once each is normalised by
 * {@link hasSignificantChanges} (indentation, quote style, spacing inside tags, `<a></a>` vs
 * `<a/>`, blank lines; not the spaces of text) and the controllers put in one order
 * ({@link controllersInOneOrder}). Values, attributes and the order of everything else must match.
 */
function sameDefinition(a: string, b: string): boolean {
  return a === b || !hasSignificantChanges(controllersInOneOrder(a), controllersInOneOrder(b));
}

/**
 * Refuses a backup whose sidecar or XML names another domain than `vm` (name or uuid). A whole
 * backup of `vm` under an older uuid means `vm` was undefined and defined again, or renamed
 * (`renamed`: the domain that holds the backup's uuid now, if any) and another defined under its
 * name: the refusal then names the newest backup of the uuid it has now (`others`: `vm`'s
 * backups), or says none is.
 */
function checkBackupIsOf(
  vm: string,
  backup: BackupEntry,
  parsed: { name: string; uuid: string | null },
  { summary, renamed, others, run }: {
    summary: DomainSummary | null;
    renamed: DomainSummary | null;
    others: () => BackupEntry[];
    run: RunFlags | undefined;
  },
): void {
  const backupUuid = parsed.uuid ?? backup.uuid;
  if (
    parsed.name !== vm ||
    (summary !== null && (summary.uuid !== backup.uuid || backupUuid !== summary.uuid))
  ) {
    const redefined = parsed.name === vm && backupUuid === backup.uuid;
    throw new BackupMismatchError(vm, {
      vmUuid: summary?.uuid ?? "",
      backupName: parsed.name,
      backupUuid: backupUuid !== summary?.uuid ? backupUuid : backup.uuid,
      path: backup.path,
      ...(redefined && summary !== null
        ? {
          advice: redefinedAdvice(vm, summary.uuid, {
            others: others(),
            renamed: renamed?.name ?? null,
            run,
          }),
        }
        : {}),
    });
  }
}

/**
 * What to restore into `vm`, defined again since its backups with the uuid `uuid`; `renamed`:
 * the name the backup's domain has now, when it was renamed rather than undefined.
 */
function redefinedAdvice(
  vm: string,
  uuid: string,
  { others, renamed, run }: {
    others: BackupEntry[];
    renamed: string | null;
    run: RunFlags | undefined;
  },
): string {
  const list = `"${followUpCommand(run, "passthrough backups", { value: vm })}" lists them`;
  const since = renamed === null
    ? "it was defined again since"
    : `it is another VM, defined under that name since the backup's VM was renamed "${renamed}"`;
  // Newest first, as listed.
  const own = others.find((b) => b.uuid === uuid);
  return own === undefined
    ? `${since}, and no backup of "${vm}" is of its uuid; ${list}`
    : `${since}: "${
      followUpCommand(run, "passthrough rollback", { value: vm, options: [["--to", own.id]] })
    }" restores the newest backup of its uuid; ${list}`;
}

/**
 * Why `backup` is not restored into `vm` when it is a transient domain: it has no persistent
 * definition (its XML reads as the running guest's), and defining one would make it permanent,
 * as `apply` refuses to.
 */
function transientRefusal(vm: string, backup: BackupEntry, run: RunFlags | undefined): string {
  return `Not restored: "${vm}" is a transient domain, and defining backup "${backup.id}" would make it persistent; once it is shut off and gone, "${
    followUpCommand(run, "passthrough rollback", { value: vm, options: [["--to", backup.id]] })
  }" defines it from the backup`;
}

/**
 * Why backup `backup` of `vm`, which is not defined, is not restored while `holder` carries its
 * uuid: libvirt takes no second domain with it. A persistent holder is `vm` renamed (`virsh
 * domrename` takes it back while it is shut off); a transient one cannot be renamed, and is gone
 * once shut off.
 */
function renamedRefusal(
  vm: string,
  backup: BackupEntry,
  holder: DomainSummary,
  run: RunFlags | undefined,
): string {
  const again = followUpCommand(run, "passthrough rollback", {
    value: vm,
    options: [["--to", backup.id]],
  });
  const head = `Not restored: "${vm}" is not defined, and its uuid ${backup.uuid} is`;
  return holder.persistent
    ? `${head} "${holder.name}" now (renamed): libvirt takes no second domain with that uuid; to restore backup "${backup.id}", rename it back with "virsh domrename ${
      shellWord(holder.name)
    } ${shellWord(vm)}" (while it is shut off), then run "${again}"`
    : `${head} the transient domain "${holder.name}" now: libvirt takes no second domain with that uuid; once "${holder.name}" is shut off and gone, run "${again}"`;
}

/**
 * Why the definition of `vm` is no longer `shown` (the one the user confirmed against), or
 * `null`: the question may stay open for minutes, and a change made meanwhile (virsh edit,
 * another tool) would be overwritten with no backup of it. A VM undefined meanwhile while it
 * runs is still listed, as a transient domain: that is no definition to restore over.
 */
function changedSinceShown(
  libvirt: LibvirtPort,
  { vm, backup, shown, run }: {
    vm: string;
    backup: BackupEntry;
    shown: string | null;
    run: RunFlags | undefined;
  },
): Stop | null {
  let now: string | null;
  try {
    const summary = libvirt.listDomains().find((d) => d.name === vm);
    if (summary !== undefined && !summary.persistent) {
      return { code: "transient", message: transientRefusal(vm, backup, run) };
    }
    now = summary === undefined ? null : libvirt.getPersistentXml(vm, { secure: true });
  } catch (error) {
    return {
      code: "read-failed",
      message: `Cannot read "${vm}" before the rollback: ${errorText(error)}`,
    };
  }
  if (now === shown) return null;
  return {
    code: "drift",
    message: `Not restored: the definition of "${vm}" changed since the rollback was shown: ${
      now === null
        ? "it was undefined"
        : shown === null
        ? "it was defined"
        : describeXmlChange(shown, now)
    }; run the rollback again`,
  };
}

/**
 * Why restoring `backupXml` over `currentXml` would put a device in two definitions (a device the
 * backup gives `vm` is held by another domain now, say after it moved there), or `null`.
 */
function heldElsewhereNow(
  libvirt: LibvirtPort,
  { vm, backup, backupXml, currentXml, devices, readDevice }: {
    devices: DeviceResolvers | undefined;
    readDevice: ((address: PciAddress) => HostDeviceNow | null) | undefined;
    vm: string;
    backup: BackupEntry;
    backupXml: string;
    currentXml: string | null;
  },
): Stop | null {
  const held = (xml: string) => heldAddresses(parseDomainXml(xml));
  let current: Set<string>;
  try {
    current = new Set(currentXml === null ? [] : held(currentXml));
  } catch {
    current = new Set(); // Unreadable now: check every device the backup holds.
  }
  const adding = new Set(held(backupXml).filter((a) => !current.has(a)));
  if (adding.size === 0) return null;
  let world: World;
  try {
    world = readWorld(libvirt, { networks: devices !== undefined });
  } catch (error) {
    return {
      code: "read-failed",
      message:
        `Not restored: cannot read the other domains to check that no device backup "${backup.id}" gives "${vm}" is held elsewhere: ${
          errorText(error)
        }`,
    };
  }
  const options = {
    ...(devices === undefined ? {} : { resolvers: withNetworks(devices, world.networks) }),
    // The way back must not hang on another domain's disk, character device or network this
    // host cannot read: as in `plan` (which warns about each), such a device counts nothing.
    warned: () => true,
  };
  const problems = heldElsewhere(vm, (a) => adding.has(a), world, options);
  if (problems.length > 0) {
    return {
      code: "held-elsewhere",
      message: `Not restored: backup "${backup.id}" gives "${vm}" devices held elsewhere now: ${
        problems.join("; ")
      }; restoring it would put a device in two definitions: release them there first`,
    };
  }
  // Asked again for each device every other domain holds: read each one once. Not kept for the
  // check after the question, which may stay open for minutes.
  const seen = new Map<PciAddress, HostDeviceNow | null>();
  const now = (address: PciAddress) => {
    if (!seen.has(address)) seen.set(address, readDevice?.(address) ?? null);
    return seen.get(address)!;
  };
  const pooled = inPoolNow(vm, backup, { adding, world, devices, now });
  if (pooled !== null || readDevice === undefined) return pooled;
  // The PF of a VF given back, or a VF of a PF given back (usually in other IOMMU groups).
  const sriovPeersOf = (address: PciAddress) => {
    const device = now(address);
    return device === null ? [] : device.physfn !== null ? [device.physfn] : device.virtfns;
  };
  const peers = new Set(
    [...adding].flatMap(sriovPeersOf).filter((a) => !adding.has(a)),
  );
  const split = peers.size === 0 ? [] : heldElsewhere(vm, (a) => peers.has(a), world, options);
  if (split.length > 0) {
    return {
      code: "held-elsewhere",
      message:
        `Not restored: backup "${backup.id}" gives "${vm}" an SR-IOV function whose PF or VF another domain holds now: ${
          split.join("; ")
        }; a PF and its VFs stay with one VM (plan refuses it: sriov-split): release them there first`,
    };
  }
  return groupSharedNow(vm, backup, {
    adding,
    iommuGroupOf: (address) => now(address)?.iommuGroup ?? null,
    world,
    options,
  });
}

/**
 * Why a device `adding` gives `vm` back is in a hostdev network's pool now, a VF libvirt hands to
 * whichever guest on that network starts first, or is the PF of one, whose VFs passing it destroys;
 * or `null`. `plan` refuses both (`hostdev-network`); the pool is counted as `networkPools` counts
 * it: the VFs its XML lists and those of its `<pf dev>` (`devices` names its function), and the PFs
 * of those VFs (`now` reads their links).
 */
function inPoolNow(
  vm: string,
  backup: BackupEntry,
  { adding, world, devices, now }: {
    adding: ReadonlySet<PciAddress>;
    world: World;
    devices: DeviceResolvers | undefined;
    now: (address: PciAddress) => HostDeviceNow | null;
  },
): Stop | null {
  if (world.networks?.kind !== "read") return null;
  const found: string[] = [];
  for (const network of world.networks.hostdev) {
    const pfs = new Set(network.pfs.flatMap((dev) => devices?.netDeviceControllers?.(dev) ?? []));
    const vfs = new Set(network.addresses);
    for (const pf of pfs) for (const vf of now(pf)?.virtfns ?? []) vfs.add(vf);
    for (const vf of network.addresses) {
      const physfn = now(vf)?.physfn;
      if (physfn) pfs.add(physfn);
    }
    const name = JSON.stringify(network.name);
    for (const address of [...adding].sort()) {
      if (vfs.has(address)) {
        found.push(`"${address}", a VF hostdev network ${name} hands to guests at their start`);
      } else if (pfs.has(address)) {
        found.push(
          `"${address}", the PF of hostdev network ${name}, whose VFs passing it destroys`,
        );
      }
    }
  }
  if (found.length === 0) return null;
  return {
    code: "held-elsewhere",
    message: `Not restored: backup "${backup.id}" gives "${vm}" ${
      found.join("; ")
    }; a device goes to one guest only (plan refuses it: hostdev-network): take it out of the pool (virsh net-edit), or restore another backup`,
  };
}

/**
 * Why another domain holding a function of the IOMMU group of a device `adding` gives `vm` back
 * holds the restore back, or `null`: libvirt would define both, and the second guest to start
 * fails (or takes the group from the first), as `plan` refuses it.
 */
function groupSharedNow(
  vm: string,
  backup: BackupEntry,
  { adding, iommuGroupOf, world, options }: {
    adding: ReadonlySet<PciAddress>;
    iommuGroupOf: (address: PciAddress) => number | null;
    world: World;
    options: HeldElsewhereOptions;
  },
): Stop | null {
  const groupOf = new Map([...adding].map((a) => [a, iommuGroupOf(a)] as const));
  const groups = new Set([...groupOf.values()].filter((g): g is number => g !== null));
  if (groups.size === 0) return null;
  // The groups another domain holds a device of: the message names the devices given in those.
  const shared = new Set<number>();
  const mates = heldElsewhere(
    vm,
    (a) => {
      const group = adding.has(a) ? null : iommuGroupOf(a);
      if (group === null || !groups.has(group)) return false;
      shared.add(group);
      return true;
    },
    world,
    options,
  );
  if (mates.length === 0) return null;
  const given = [...groupOf].filter(([, g]) => g !== null && shared.has(g)).map(([a, g]) =>
    `"${a}" (IOMMU group ${g})`
  );
  return {
    code: "held-elsewhere",
    message: `Not restored: backup "${backup.id}" gives "${vm}" ${
      given.join(", ")
    }, and another domain holds a device of that group now: ${
      mates.join("; ")
    }; a group's devices can go to one VM only (plan refuses it: group-shared-with-other-vm): release them there first`,
  };
}

/**
 * Defines `backupXml` over `currentXml` and checks libvirt holds it; a failure (with `unknown`
 * when the define's outcome could not be learnt), or `null`.
 */
function defineBackup(
  libvirt: LibvirtPort,
  { vm, backup, backupXml, currentXml, safety, run }: {
    vm: string;
    backup: BackupEntry;
    backupXml: string;
    currentXml: string | null;
    safety: BackupEntry | null;
    run: RunFlags | undefined;
  },
): (Stop & { status: "failed" | "unknown" }) | null {
  const failure = defineOrExplain(libvirt, { name: vm, xml: backupXml, before: currentXml });
  const replaced = safety === null ? "" : `; the replaced definition is in backup "${safety.id}"`;
  if (failure?.kind === "rejected") {
    return {
      status: "failed",
      code: "define-failed",
      message:
        `libvirt rejected backup "${backup.id}" of "${vm}", which is unchanged: ${failure.error}`,
    };
  }
  if (failure?.kind === "unknown") {
    return {
      status: "unknown",
      code: "define-unknown",
      message:
        `The rollback of "${vm}" to backup "${backup.id}" may or may not have taken effect: ${failure.error}; ${failure.why}${replaced}: check with "${
          followUpCommand(run, "passthrough rollback", {
            value: vm,
            options: [["--to", backup.id]],
          })
        }" (it says when "${vm}" already has that definition)`,
    };
  }
  const failed = (message: string) => ({
    status: "failed" as const,
    code: "verify-failed" as const,
    message,
  });
  let after: string;
  try {
    after = libvirt.getPersistentXml(vm, { secure: true });
  } catch (error) {
    return failed(`Cannot read "${vm}" back after the rollback: ${errorText(error)}${replaced}`);
  }
  if (sameDefinition(after, backupXml)) return null;
  return failed(
    `After the rollback the definition of "${vm}" differs from backup "${backup.id}": ${
      describeXmlChange(backupXml, after)
    }${replaced}`,
  );
}

/**
 * Why the backup of `vm` (its domain `uuid`) cannot be defined as it stands (`summary`: `vm` as
 * libvirt lists it now, `null` when no domain has the name): another name holds the uuid, or the
 * domain is transient. `null` when neither.
 */
function definitionRefusal(
  libvirt: LibvirtPort,
  options: {
    vm: string;
    backup: BackupEntry;
    uuid: string;
    summary: DomainSummary | null;
    run: RunFlags | undefined;
  },
): Stop | null {
  const { vm, backup, summary, run } = options;
  // Renamed since (virsh domrename): libvirt would refuse the uuid only after the question, in
  // words that name neither the rename nor the way back.
  const renamed = summary === null
    ? libvirt.listDomains().find((d) => d.uuid === options.uuid)
    : undefined;
  if (renamed !== undefined) {
    return { code: "renamed", message: renamedRefusal(vm, backup, renamed, run) };
  }
  if (summary !== null && !summary.persistent) {
    return { code: "transient", message: transientRefusal(vm, backup, run) };
  }
  return null;
}

/**
 * The definition `vm` holds now with its secrets (`null`: not defined), or why the backup is not
 * restored over it: {@link definitionRefusal}'s reason, or `read-failed` when libvirt cannot be
 * read (the connection lost): what is not read cannot be compared, backed up or checked.
 */
function currentDefinition(
  libvirt: LibvirtPort,
  options: Parameters<typeof definitionRefusal>[1],
): { currentXml: string | null } | Stop {
  const { vm, backup, summary } = options;
  try {
    const unfit = definitionRefusal(libvirt, options);
    if (unfit !== null) return unfit;
    return { currentXml: summary === null ? null : libvirt.getPersistentXml(vm, { secure: true }) };
  } catch (error) {
    return unreadable(vm, backup, error);
  }
}

/** The stop when libvirt cannot be read for `vm` before the checks (the connection lost). */
function unreadable(vm: string, backup: BackupEntry, error: unknown): Stop {
  return {
    code: "read-failed",
    message: `Not restored: cannot read "${vm}" to compare it with backup "${backup.id}": ${
      errorText(error)
    }; nothing was defined`,
  };
}

/** Fails closed: a truthy answer of a script's own (applyPlan's "no", a prompt's "n") is no yes. */
function assertAnswer(vm: string, answer: unknown): asserts answer is boolean {
  if (typeof answer !== "boolean") {
    throw new TypeError(
      `Invalid answer of confirm for the rollback of "${vm}": ${
        typeof answer === "string" ? `"${answer}"` : String(answer)
      } (expected true or false)`,
    );
  }
}

/** The refusal of a backup whose hostdevs the start guard would refuse on this host now. */
function startRefused(
  vm: string,
  backup: BackupEntry,
  refusals: readonly string[],
  run: RunFlags | undefined,
): Stop {
  return {
    code: "start-refused",
    message: `Refusing to restore backup "${backup.id}" into "${vm}": ${refusals.join("; ")}; "${
      followUpCommand(run, "passthrough plan", { options: [["--vm", vm]] })
    }" shows what the config gives it on this host now`,
  };
}

/**
 * `check`'s stop, or `read-failed` when it throws: the host's devices, groups or use could not be
 * read (a sysfs read refused, a captured tree's `host_use.json` broken), and not read is not safe.
 */
function hostReadOr(vm: string, backup: BackupEntry, check: () => Stop | null): Stop | null {
  try {
    return check();
  } catch (error) {
    return {
      code: "read-failed",
      message:
        `Not restored: cannot read the host's devices to check what backup "${backup.id}" gives "${vm}" (${
          errorText(error)
        }): nothing was defined`,
    };
  }
}

/**
 * The stop when the definition a rollback replaces cannot be backed up. A full disk says only
 * "No space left on device": say whose backup, where, and that nothing changed.
 */
function safetyBackupFailed(
  state: StateDir,
  vm: string,
  backup: BackupEntry,
  error: unknown,
): Stop {
  return {
    code: "backup-failed",
    message:
      `Not restored: cannot back up the definition of "${vm}" that backup "${backup.id}" would replace, in "${
        backupDir(state, vm)
      }", so nothing was defined: ${errorText(error)}`,
  };
}

/**
 * The lock of `libvirt`'s connection to take here (released by the caller), or `null` when the
 * caller holds it (`held`): a lock of another connection is a `TypeError`.
 */
function lockToTake(
  libvirt: LibvirtPort,
  state: StateDir,
  held: StateLock | undefined,
): StateLock | null {
  if (held === undefined) {
    return acquireConnectionLock(libvirt.uri, { stateDir: state.path, command: "rollback" });
  }
  if (held.uri !== lockUri(libvirt.uri)) {
    throw new TypeError(`The lock "${held.path}" is not the lock of "${libvirt.uri}"`);
  }
  return null;
}

/**
 * Why the backup `restoring` gives back may not be restored now, by the checks that read the
 * host (its devices, groups and use): a device another domain holds, the guard's refusals of the
 * backup's own devices, and what their groups would take along. One it cannot make is no pass.
 */
function hostRefusal(
  libvirt: LibvirtPort,
  restoring: Parameters<typeof heldElsewhereNow>[1],
  { parsed, options }: {
    parsed: ReturnType<typeof parseDomainXml>;
    options: Pick<RollbackOptions, "startRefusals" | "host" | "run">;
  },
): Stop | null {
  const { vm, backup, backupXml } = restoring;
  return hostReadOr(vm, backup, () => {
    const conflict = heldElsewhereNow(libvirt, restoring);
    if (conflict !== null) return conflict;
    const start = options.startRefusals?.(backupXml) ?? [];
    // One sentence per member: the guard's names the running VM that has it. One the guard
    // starts by its rule's allow_host_critical is no refusal of the host check either.
    const judged = new Set(
      start.flatMap((r) =>
        typeof r === "string" ? [] : "allowedMember" in r ? r.allowedMember : r.groupMember ?? []
      ),
    );
    const refusals = [
      ...start.flatMap((r) => typeof r === "string" ? r : "reason" in r ? r.reason : []),
      ...(options.host === undefined
        ? []
        : groupMatesHostNeeds(heldAddresses(parsed), options.host, { refused: judged })),
    ];
    return refusals.length > 0 ? startRefused(vm, backup, refusals, options.run) : null;
  });
}

/**
 * Restores `vm` from a backup. Throws before anything is written when the state directory is
 * unusable, the lock is held, no such backup exists, it is damaged (`BackupIntegrityError`), it
 * belongs to another domain ({@link BackupMismatchError}), or `confirm` answers no boolean
 * (`TypeError`). A define or check failure is reported as `failed`, a define whose outcome could
 * not be learnt (connection lost) as `unknown`.
 */
export async function rollbackVm(vm: string, options: RollbackOptions): Promise<RollbackReport> {
  const { libvirt, run } = options;
  // Looked up read-only first: opening the state directory creates it (and the lock), and a
  // missing backup (a mistyped state directory) must leave nothing behind.
  findBackup(options.stateDir, vm, options.backup, { run, uri: libvirt.uri });
  const state = openStateDir(options.stateDir);
  using owned = lockToTake(libvirt, state, options.lock);
  const lock = options.lock ?? owned!;
  const { backup, backupXml, parsed, summary, unread } = backupOf(state, vm, options);
  const active = summary?.active ?? false;
  // Set once the backup passed every check, before the question.
  let warnings: string[] = [];
  const report = (
    status: RollbackStatus,
    { code, message }: Stop,
    safety: BackupEntry | null,
  ): RollbackReport => ({
    vm,
    status,
    code,
    message,
    backup,
    safetyBackup: safety,
    active,
    warnings,
    brokeStaleLock: lock.brokeStale,
  });
  if (unread !== null) return report("failed", unread, null);
  const current = currentDefinition(libvirt, {
    vm,
    backup,
    uuid: parsed.uuid ?? backup.uuid,
    summary,
    run,
  });
  if ("code" in current) return report("failed", current, null);
  const { currentXml } = current;

  if (currentXml !== null && sameDefinition(currentXml, backupXml)) {
    return report("unchanged", {
      code: "no-changes",
      message: `VM "${vm}" already has the definition of backup "${backup.id}"`,
    }, null);
  }
  const restoring = {
    vm,
    backup,
    backupXml,
    currentXml,
    devices: options.devices,
    readDevice: options.readDevice,
  };
  const checkedNow = () => hostRefusal(libvirt, restoring, { parsed, options });
  const refused = checkedNow();
  if (refused !== null) return report("failed", refused, null);
  warnings = options.startWarnings?.(backupXml) ?? [];
  const answer: unknown = await options.confirm({
    vm,
    backup,
    currentXml,
    backupXml,
    active,
    warnings,
  });
  assertAnswer(vm, answer);
  if (!answer) {
    return report("declined", { code: "declined", message: `Rollback of "${vm}" declined` }, null);
  }
  // The question may stay open for minutes: look again.
  const changed = changedSinceShown(libvirt, { vm, backup, shown: currentXml, run }) ??
    checkedNow();
  if (changed !== null) return report("failed", changed, null);
  const done = restoreConfirmed(libvirt, state, { ...restoring, summary, run });
  return report(done.status, done, done.safety);
}

/**
 * Reads backup `options.backup` of `vm` under the lock (found again: another run may have pruned
 * it since) and the domain it replaces (`unread` when libvirt cannot list it); throws when they
 * are not of one domain.
 */
function backupOf(
  state: StateDir,
  vm: string,
  options: RollbackOptions,
): {
  backup: BackupEntry;
  backupXml: string;
  parsed: ReturnType<typeof parseDomainXml>;
  summary: DomainSummary | null;
  unread: Stop | null;
} {
  const uri = libvirtHost(options.libvirt.uri);
  // Of this connection only: another host's VM of this name and uuid has its own backups here.
  const backup = findBackup(state, vm, options.backup, { run: options.run, uri });
  const backupXml = readBackupXml(backup);
  const parsed = parseDomainXml(backupXml);
  let domains: DomainSummary[];
  try {
    domains = options.libvirt.listDomains();
  } catch (error) {
    return { backup, backupXml, parsed, summary: null, unread: unreadable(vm, backup, error) };
  }
  const summary = domains.find((d) => d.name === vm) ?? null;
  // The sidecar and the XML must both name this VM and its uuid: never redefine another domain.
  checkBackupIsOf(vm, backup, parsed, {
    summary,
    renamed: domains.find((d) => d.name !== vm && d.uuid === backup.uuid) ?? null,
    others: () => listBackups(state, vm).filter((b) => libvirtHost(b.uri) === uri),
    run: options.run,
  });
  return { backup, backupXml, parsed, summary, unread: null };
}

/**
 * The confirmed rollback's writes: a safety backup of the definition replaced, one more look for
 * an edit, the define and its check. The status, why, and the safety backup once written.
 */
function restoreConfirmed(
  libvirt: LibvirtPort,
  state: StateDir,
  { vm, backup, backupXml, currentXml, summary, run }: {
    vm: string;
    backup: BackupEntry;
    backupXml: string;
    currentXml: string | null;
    summary: DomainSummary | null;
    run: RunFlags | undefined;
  },
): Stop & { status: RollbackStatus; safety: BackupEntry | null } {
  // Without a backup of what is replaced, the rollback itself could not be undone.
  let safety: BackupEntry | null = null;
  try {
    safety = currentXml === null ? null : writeBackup(state, {
      vm,
      uuid: summary?.uuid ?? backup.uuid,
      xml: currentXml,
      reason: "rollback",
      uri: libvirt.uri,
    });
  } catch (error) {
    return { status: "failed", ...safetyBackupFailed(state, vm, backup, error), safety: null };
  }
  // The re-check and the synced safety backup take tens of milliseconds, in which a `virsh edit`
  // would be overwritten by the define, and be in no backup: look once more, just before it.
  const late = changedSinceShown(libvirt, { vm, backup, shown: currentXml, run });
  // The safety backup is written by now: name it, as `apply` names its backup on a late `drift`.
  if (late !== null) return { status: "failed", ...late, safety };
  const failed = defineBackup(libvirt, { vm, backup, backupXml, currentXml, safety, run });
  if (failed !== null) return { ...failed, safety };
  const when = (summary?.active ?? false)
    ? "; it is running, so this takes effect at its next full power-off"
    : hasSavedState(libvirt, vm)
    ? savedStateNote(vm)
    : "";
  return {
    status: "restored",
    code: "restored",
    message: `Restored "${vm}" from backup "${backup.id}"${when}`,
    safety,
  };
}
