/**
 * The start guard's policy per VM and rule (`guard: enforce | warn | off` in the config), as the
 * hook finds it: `apply` writes the config's policies to `guard/policy.json` in the state
 * directory, and the hook reads that one file at `prepare begin`.
 *
 * Why the state directory and not the domain's `<metadata>` (which the hook receives anyway):
 * the hook runs without the user's environment and must not parse the YAML config; a policy is
 * a setting of the guard, not an edit of the domain, so changing it must not redefine domains or
 * show up as a change in `plan`; the records in `<metadata>` exist only for managed hostdevs,
 * while a VM's policy also covers hand-added ones; and the allowances and refusal records the
 * hook already keeps live there (private to root, so no user can weaken the guard). A missing
 * file, a VM it does not name, or a file that cannot be read all mean `enforce`: an install from
 * before policies, or a damaged file, never weakens the guard.
 *
 * This module loads no `node:` module and reads with `Deno` only: the hook loads it at every
 * start. Writing is in `state.ts`.
 *
 * @module
 */

import type { Config, GuardPolicy } from "../config/config.ts";
import type { PciAddress } from "../host/types.ts";
import type { DeviceIdentity } from "../plan/types.ts";
import { canonicalPciAddress } from "../pci/address.ts";
import { flagWord, followUpCommand, shellWord } from "../render/shell.ts";

/** A policy under which the hook still checks: what a refusal was judged by. */
export type ActivePolicy = Exclude<GuardPolicy, "off">;

/** The largest policy file read: a config holds a few dozen VMs. */
export const MAX_POLICY_BYTES = 1024 * 1024;

/** The policies of one VM that differ from the default. */
export interface VmGuardPolicy {
  /** The VM's own policy: its rules' default, and that of hand-added hostdevs. */
  guard: GuardPolicy;
  /** Rules whose policy differs from the VM's, by rule name (as recorded in `<metadata>`). */
  rules: Record<string, GuardPolicy>;
  /**
   * Rules with `allow_host_critical: true`, whose recorded devices the guard starts although the
   * host needs them, as `plan` keeps them (absent: none; files from before it have none).
   */
  allowHostCritical?: string[];
  /**
   * The records `apply` left in the VM's definition for the rules of `rules` and
   * `allowHostCritical`, by the host address each element passes (a VF's: its PF's record). A
   * rule's policy judges only a device whose record in the domain XML is the one here: anyone
   * who may `virsh edit` the VM can write any rule name into its `<metadata>`, and this file is
   * root's (absent: none, as in files from before it; such rules then judge nothing laxer than
   * the VM until it is applied).
   */
  devices?: Record<PciAddress, DeviceIdentity>;
  /**
   * The `<uuid>` of the VM's definition the policies were recorded for (`null`: none of that name
   * was defined then; absent: a file from before it). The file names VMs by name, and libvirt
   * lets a VM be undefined and another defined under its name: that one is judged as `enforce`
   * until an apply records the policies for it.
   */
  uuid?: string | null;
}

/** What `guard/policy.json` holds. */
export interface GuardPolicyFile {
  /** The format's version: 1. */
  version: 1;
  /** The config the policies were read from (for messages). */
  config: string;
  /**
   * The libvirt connection of the apply that recorded them, as `lockUri` names it
   * (`qemu:///system` for this host's system daemon, whose VMs the hook guards). The hook takes
   * only a file recorded over that one: a test world copied from the host has the host's VM
   * names and UUIDs, and its `guard: off` must never let the host's VM start unchecked. Absent in
   * files from before it: taken as recorded (see {@link policiesForConnection}).
   */
  uri?: string;
  /** The VMs with any policy other than `enforce`, by libvirt domain name. */
  vms: Record<string, VmGuardPolicy>;
}

/** What the hook applies for a VM that nothing names: check and refuse. */
export const ENFORCE: VmGuardPolicy = { guard: "enforce", rules: {} };

/**
 * The config's policies, only those that are not `enforce`, and the rules with
 * `allow_host_critical: true` (an all-default config gives no VM, and `apply` then writes no
 * file).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { parseConfig } from "../config/config.ts";
 * const config = parseConfig(
 *   "version: 1\nvms:\n  win11:\n    guard: warn\n    devices:\n" +
 *     "      - { name: gpu, match: { class: vga }, guard: enforce }\n" +
 *     "      - { name: usb, match: { class: usb } }\n" +
 *     "  nas:\n    devices: [{ match: { class: sata } }]\n" +
 *     "  db:\n    devices: [{ name: hba, match: { class: sata }, allow_host_critical: true }]\n",
 *   { file: "c.yaml" },
 * );
 * assertEquals(guardPolicies(config).vms, {
 *   win11: { guard: "warn", rules: { gpu: "enforce" } },
 *   db: { guard: "enforce", rules: {}, allowHostCritical: ["hba"] },
 * });
 * ```
 */
export function guardPolicies(config: Config): GuardPolicyFile {
  // Built with fromEntries: a VM or rule named "__proto__" stays a key of its own.
  const vms = config.vms.flatMap((vm) => {
    const guard = vm.guard ?? "enforce";
    const rules = Object.fromEntries(
      vm.rules.flatMap((rule) => rule.guard === guard ? [] : [[rule.name, rule.guard]]),
    );
    const critical = vm.rules.filter((rule) => rule.allowHostCritical).map((rule) => rule.name);
    const policy: VmGuardPolicy = critical.length === 0
      ? { guard, rules }
      : { guard, rules, allowHostCritical: critical };
    return guard === "enforce" && Object.keys(rules).length === 0 && critical.length === 0
      ? []
      : [[vm.name, policy] as const];
  });
  return { version: 1, config: config.file, vms: Object.fromEntries(vms) };
}

/**
 * `file` (the config's policies) with the rule policies `previous` (the file recorded before)
 * gave rule names the config no longer has, for each VM not in `settled` (the VMs whose
 * definitions now hold the config's rule names, as an apply left them), where stricter than the
 * VM's new policy. A renamed rule's records keep its old name until its VM is applied (declined,
 * refused, or left out by `--vm`), and the guard judges a recorded device by the rule it names:
 * without this, a rule's `enforce` in a `warn` or `off` VM would lapse for them until then.
 * `recorded`: the rule names each VM's definition records now, as the apply left it; for a VM
 * in it, only these names are kept, each with the policy the previous file gave it (a name it
 * did not list had its VM's, `enforce` without a file), so a rule `enforce` only by its VM's
 * default keeps it too, and names no record holds (renamed twice before its VM was applied) do
 * not pile up. A recorded name the config still has (perhaps given to a new rule) keeps the
 * stricter of its previous and new policies, and `allow_host_critical` only where both gave it.
 * Never laxer than `file`; an entry no record may still name is dropped once its VM is settled.
 * A VM the config no longer names whose devices stay (`kept`: refused `vm-not-in-config`, its
 * release declined or undone, or left out by `--vm`) keeps its previous policies, as its
 * definition stays, but not what lets a start take a device the host needs (see {@link droppedVmPolicy}):
 * they go once its devices are released.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * import { parseConfig } from "../config/config.ts";
 * const config = parseConfig(
 *   "version: 1\nvms:\n  win11:\n    guard: warn\n    devices:\n" +
 *     "      - { name: graphics, match: { class: vga }, guard: enforce }\n",
 *   { file: "c.yaml" },
 * );
 * const previous = { version: 1 as const, config: "c.yaml",
 *   vms: { win11: { guard: "warn" as const, rules: { gpu: "enforce" as const } } } };
 * const next = guardPolicies(config);
 * assertEquals(keepStricterRulePolicies(next, { config, previous, settled: new Set() }).vms, {
 *   win11: { guard: "warn", rules: { graphics: "enforce", gpu: "enforce" } },
 * });
 * assertEquals(keepStricterRulePolicies(next, { config, previous, settled: new Set(["win11"]) }), next);
 * // Dropped from a config that names no VM, its devices kept: its policies stay.
 * const empty = parseConfig("version: 1\nvms: {}\n", { file: "c.yaml" });
 * const kept = new Set(["win11"]);
 * assertEquals(
 *   keepStricterRulePolicies(guardPolicies(empty), { config: empty, previous, settled: new Set(), kept }).vms,
 *   previous.vms,
 * );
 * ```
 */
export function keepStricterRulePolicies(
  file: GuardPolicyFile,
  { config, previous, settled, kept = new Set(), recorded = new Map() }: {
    config: Config;
    previous: GuardPolicyFile | null;
    settled: ReadonlySet<string>;
    kept?: ReadonlySet<string>;
    recorded?: ReadonlyMap<string, readonly string[]>;
  },
): GuardPolicyFile {
  const vms = { ...file.vms };
  const named = new Set(config.vms.map((vm) => vm.name));
  const had = (vm: string) =>
    previous !== null && Object.hasOwn(previous.vms, vm) ? previous.vms[vm]! : ENFORCE;
  for (const vm of kept) {
    if (!named.has(vm) && previous !== null && Object.hasOwn(previous.vms, vm)) {
      vms[vm] = droppedVmPolicy(previous.vms[vm]!);
    }
  }
  for (const vm of config.vms) {
    if (settled.has(vm.name)) continue;
    const before = had(vm.name);
    const names = recorded.get(vm.name);
    // Without the names its definition records, those the previous file listed (none without
    // one); a name it did not list had the VM's policy, `enforce` without a file.
    const old: [string, GuardPolicy][] = names === undefined
      ? (previous === null ? [] : Object.entries(before.rules))
      : names.map((rule) => [rule, policyFor(before, rule)]);
    const now = Object.hasOwn(vms, vm.name) ? vms[vm.name]! : ENFORCE;
    // A recorded name the config still has may now be another rule's (renamed, its old name
    // given to a new rule): until the VM is applied it keeps the stricter of both policies, and
    // allow_host_critical only where the previous file granted it too.
    const stricter = old.filter(([rule, policy]) =>
      POLICIES.indexOf(policy) < POLICIES.indexOf(policyFor(now, rule))
    );
    const granted = now.allowHostCritical?.filter((rule) =>
      (names !== undefined && !names.includes(rule)) ||
      (before.allowHostCritical ?? []).includes(rule)
    );
    if (stricter.length === 0 && granted?.length === now.allowHostCritical?.length) continue;
    const rules = { ...now.rules, ...Object.fromEntries(stricter) };
    if (granted !== undefined && granted.length > 0) {
      vms[vm.name] = { guard: now.guard, rules, allowHostCritical: granted };
    } else if (now.guard !== "enforce" || Object.keys(rules).length > 0) {
      vms[vm.name] = { guard: now.guard, rules };
    } else delete vms[vm.name]; // All default once the grant waits: as a VM the file omits.
  }
  return { ...file, vms };
}

/**
 * `file` with each VM's {@link VmGuardPolicy.devices}, the records its rules' policies judge: for
 * a VM in `applied` (its definition as this apply left it: written from the config, or found
 * to hold what the config gives it), the records that definition holds; for any other (left out
 * by `--vm`, declined, refused), those `previous` bound, as its definition still holds them
 * unless someone edited it since. A record no apply wrote (its rule name edited by hand, copied
 * from another VM's XML) therefore never borrows a rule's `off` or `allow_host_critical`. Only the
 * records of rules the VM's entry names are kept.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const hba = { address: "0000:04:00.0", vendorId: "1b21", deviceId: "0612",
 *   subsystemVendorId: null, subsystemDeviceId: null, classCode: "010601", serial: null,
 *   driver: "ahci", rule: "hba" };
 * const file = { version: 1 as const, config: "c.yaml",
 *   vms: { db: { guard: "enforce" as const, rules: {}, allowHostCritical: ["hba"] } } };
 * const nic = { ...hba, address: "0000:05:00.0", rule: "nic" };
 * const applied = new Map([["db", { "0000:04:00.0": hba, "0000:05:00.0": nic }]]);
 * assertEquals(bindRecords(file, { previous: null, applied }).vms.db!.devices, {
 *   "0000:04:00.0": hba,
 * });
 * assertEquals(bindRecords(file, { previous: null, applied: new Map() }), file);
 * ```
 */
export function bindRecords(
  file: GuardPolicyFile,
  { previous, applied }: {
    previous: GuardPolicyFile | null;
    applied: ReadonlyMap<string, Readonly<Record<PciAddress, DeviceIdentity>>>;
  },
): GuardPolicyFile {
  const vms = Object.entries(file.vms).map(([vm, policy]) => {
    const { devices: _, ...unbound } = policy;
    const before = previous !== null && Object.hasOwn(previous.vms, vm)
      ? previous.vms[vm]!.devices ?? {}
      : {};
    const named = new Set([...Object.keys(policy.rules), ...(policy.allowHostCritical ?? [])]);
    const devices = Object.entries(applied.get(vm) ?? before)
      .filter(([, record]) => named.has(record.rule));
    return [
      vm,
      devices.length === 0 ? unbound : { ...unbound, devices: Object.fromEntries(devices) },
    ];
  });
  return { ...file, vms: Object.fromEntries(vms) };
}

/**
 * `file` with each VM's {@link VmGuardPolicy.uuid}: for a VM in `applied` (its definition as this
 * apply left it), that definition's; for any other (left out by `--vm`, declined, refused, or
 * dropped from the config with its devices kept), the one `previous` bound, as the policies stay
 * those of the VM they were recorded for (`null` stays `null`: judged as `enforce` until an apply
 * of that VM binds it); for one `previous` did not list, or listed in a file from before UUIDs were
 * recorded, the VM `defined` names now (`null` when none is defined).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const file = { version: 1 as const, config: "c.yaml",
 *   vms: { a: { guard: "off" as const, rules: {} }, b: { guard: "warn" as const, rules: {} } } };
 * const previous = { ...file, vms: { a: { ...file.vms.a, uuid: "u1" } } };
 * const bound = bindDomains(file, {
 *   previous,
 *   applied: new Map(),
 *   defined: new Map([["a", "u2"], ["b", "u3"]]),
 * });
 * assertEquals([bound.vms.a!.uuid, bound.vms.b!.uuid], ["u1", "u3"]);
 * ```
 */
export function bindDomains(
  file: GuardPolicyFile,
  { previous, applied, defined }: {
    previous: GuardPolicyFile | null;
    applied: ReadonlyMap<string, string | null>;
    defined: ReadonlyMap<string, string>;
  },
): GuardPolicyFile {
  const vms = Object.entries(file.vms).map(([vm, policy]) => {
    const before = previous !== null && Object.hasOwn(previous.vms, vm)
      ? previous.vms[vm]!.uuid
      : undefined;
    const uuid = applied.has(vm)
      ? applied.get(vm)!
      : before !== undefined
      ? before
      : defined.get(vm) ?? null;
    return [vm, { ...policy, uuid }];
  });
  return { ...file, vms: Object.fromEntries(vms) };
}

/**
 * What the start guard judges each VM by while `apply` runs: `file` (the policies the apply
 * records once it ends, for `settled` the VMs whose definitions it has settled so far) for the
 * VMs of `settled`, and for every other VM the stricter of its entry in `file` and the one
 * `previous` (the file from before the apply) recorded ({@link stricterVmPolicy}). Recorded before
 * each define, so a start between a VM's define and the end of the apply (while later VMs are
 * asked about, or after the apply was killed) is never judged laxer than either config says,
 * whichever definition it runs; a VM's new policy alone holds once its define has settled.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const previous = { version: 1 as const, config: "c.yaml",
 *   vms: { a: { guard: "off" as const, rules: {} } } };
 * const file = { version: 1 as const, config: "c.yaml",
 *   vms: { b: { guard: "warn" as const, rules: {} } } };
 * // a goes from off to enforce, b from enforce to warn: both enforce until settled.
 * assertEquals(stricterWhileApplying(file, { previous, settled: new Set() }).vms, {});
 * assertEquals(stricterWhileApplying(file, { previous, settled: new Set(["a", "b"]) }), file);
 * ```
 */
export function stricterWhileApplying(
  file: GuardPolicyFile,
  { previous, settled }: { previous: GuardPolicyFile | null; settled: ReadonlySet<string> },
): GuardPolicyFile {
  const entry = (f: GuardPolicyFile | null, vm: string) =>
    f !== null && Object.hasOwn(f.vms, vm) ? f.vms[vm]! : ENFORCE;
  const names = new Set([...Object.keys(file.vms), ...Object.keys(previous?.vms ?? {})]);
  const vms = [...names].flatMap((vm) => {
    const policy = settled.has(vm)
      ? (Object.hasOwn(file.vms, vm) ? file.vms[vm]! : null)
      : stricterVmPolicy(entry(previous, vm), entry(file, vm));
    return policy === null ? [] : [[vm, policy] as const];
  });
  return { ...file, vms: Object.fromEntries(vms) };
}

/**
 * The policies that are never laxer than `a` nor `b` (two entries for one VM), `null` when that
 * is every default (`enforce`): the stricter guard and rule policies, `allow_host_critical` only
 * where both grant it, a rule's policy only for the records neither judges more strictly than by
 * it, and no domain unless both are for the same one (or one names none, from before UUIDs were
 * recorded).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   stricterVmPolicy(
 *     { guard: "off", rules: { gpu: "enforce" }, allowHostCritical: ["hba"] },
 *     { guard: "warn", rules: { nic: "off" }, allowHostCritical: ["hba"] },
 *   ),
 *   { guard: "warn", rules: { gpu: "enforce", nic: "off" }, allowHostCritical: ["hba"] },
 * );
 * assertEquals(stricterVmPolicy({ guard: "off", rules: {} }, ENFORCE), null);
 * ```
 */
export function stricterVmPolicy(a: VmGuardPolicy, b: VmGuardPolicy): VmGuardPolicy | null {
  const stricter = (x: GuardPolicy, y: GuardPolicy) =>
    POLICIES.indexOf(x) <= POLICIES.indexOf(y) ? x : y;
  const guard = stricter(a.guard, b.guard);
  const rules = Object.fromEntries(
    [...new Set([...Object.keys(a.rules), ...Object.keys(b.rules)])].flatMap((rule) => {
      const policy = stricter(policyFor(a, rule), policyFor(b, rule));
      return policy === guard ? [] : [[rule, policy] as const];
    }),
  );
  const critical = (a.allowHostCritical ?? []).filter((rule) =>
    (b.allowHostCritical ?? []).includes(rule)
  );
  if (guard === "enforce" && Object.keys(rules).length === 0 && critical.length === 0) return null;
  // A record is bound where each entry judges it by its rule's policy: bound there too, or its
  // rule no laxer than that VM's, which then judges it the same bound or not. A rule's
  // allow_host_critical counts only for a record both bound.
  const judgedByRule = (p: VmGuardPolicy, address: PciAddress, record: DeviceIdentity) =>
    appliedRecord(p, address, record) ||
    (!critical.includes(record.rule) &&
      policyFor(p, record.rule) === policyFor(p, record.rule, { hostNeeds: true }));
  const devices = [...Object.entries(a.devices ?? {}), ...Object.entries(b.devices ?? {})]
    .filter(([address, record]) =>
      (Object.hasOwn(rules, record.rule) || critical.includes(record.rule)) &&
      judgedByRule(a, address, record) && judgedByRule(b, address, record)
    );
  const uuid = a.uuid === undefined
    ? b.uuid
    : b.uuid === undefined || b.uuid === a.uuid
    ? a.uuid
    : null;
  return {
    guard,
    rules,
    ...(critical.length > 0 ? { allowHostCritical: critical } : {}),
    ...(devices.length > 0 ? { devices: Object.fromEntries(devices) } : {}),
    ...(uuid !== undefined ? { uuid } : {}),
  };
}

/**
 * The policies of `policy` (those recorded for VM `vm`) for the domain whose `<uuid>` is `uuid`
 * (`null`: it cannot be read): as recorded when they were recorded for that domain, or for no
 * particular one (a file from before {@link VmGuardPolicy.uuid}); else {@link ENFORCE}, with why.
 * A VM undefined and another defined under its name never inherits its `off`, `warn` or
 * `allow_host_critical`.
 *
 * @example
 * ```ts
 * import { assertEquals, assertMatch } from "../../tests/helpers/assert.ts";
 * const policy = { guard: "off" as const, rules: {}, uuid: "u1" };
 * assertEquals(policyForDomain(policy, { vm: "a", uuid: "u1" }), { policy, problem: null });
 * const other = policyForDomain(policy, { vm: "a", uuid: "u2" });
 * assertEquals(other.policy, ENFORCE);
 * assertMatch(other.problem!, /for the VM of UUID u1, not this one \(u2\)/);
 * ```
 */
export function policyForDomain(
  policy: VmGuardPolicy,
  { vm, uuid }: { vm: string; uuid: string | null },
): VmPolicyReading {
  if (policy.uuid === undefined || (uuid !== null && policy.uuid === uuid)) {
    return { policy, problem: null };
  }
  const name = JSON.stringify(vm);
  const recordedFor = policy.uuid === null
    ? `recorded while no VM ${name} was defined`
    : `for the VM of UUID ${policy.uuid}`;
  const self = uuid === null ? "whose UUID cannot be read" : `(${uuid})`;
  return {
    policy: ENFORCE,
    problem: `the guard policies recorded for ${name} are ${recordedFor}, not this one ${self}: ` +
      `they do not count, every device is checked as "enforce"; "passthrough apply ${
        flagWord("--vm", vm)
      }" records them for it`,
  };
}

/**
 * Whether `recorded`, the record the domain XML holds for the device it passes at `address`, is
 * the one `apply` left there ({@link VmGuardPolicy.devices}): only then does the policy of the
 * rule it names judge that device.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const hba = { address: "0000:04:00.0", vendorId: "1b21", deviceId: "0612",
 *   subsystemVendorId: null, subsystemDeviceId: null, classCode: "010601", serial: null,
 *   driver: "ahci", rule: "hba" };
 * const policy = { guard: "enforce" as const, rules: {}, devices: { "0000:04:00.0": hba } };
 * assertEquals(appliedRecord(policy, "0000:04:00.0", hba), true);
 * assertEquals(appliedRecord(policy, "0000:01:00.0", { ...hba, address: "0000:01:00.0" }), false);
 * assertEquals(appliedRecord(policy, "0000:04:00.0", { ...hba, deviceId: "0611" }), false);
 * ```
 */
export function appliedRecord(
  policy: VmGuardPolicy,
  address: PciAddress | null,
  recorded: DeviceIdentity,
): boolean {
  const devices = policy.devices ?? {};
  if (address === null || !Object.hasOwn(devices, address)) return false;
  const applied = devices[address]!;
  return RECORD_FIELDS.every((field) => (applied[field] ?? null) === (recorded[field] ?? null));
}

/** Every field of a record, each compared by {@link appliedRecord}. */
const RECORD_FIELDS = [
  "address",
  "vendorId",
  "deviceId",
  "subsystemVendorId",
  "subsystemDeviceId",
  "classCode",
  "serial",
  "slot",
  "driver",
  "rule",
] as const satisfies readonly (keyof DeviceIdentity)[];

/**
 * The policy a VM dropped from the config keeps while the plan keeps its devices: its own, but
 * neither its `off` (now `warn`) nor any rule's `allow_host_critical`. Only these two let a start
 * take a device the host needs (its disk controller, its default-route NIC), and the config no
 * longer says either: the user removed the VM, perhaps by a typo, and the host's disk or network
 * is never given away on a line no longer written. What they relaxed otherwise stays (a changed
 * device warns and starts).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   droppedVmPolicy({ guard: "off", rules: { gpu: "enforce" }, allowHostCritical: ["hba"] }),
 *   { guard: "warn", rules: { gpu: "enforce" } },
 * );
 * ```
 */
export function droppedVmPolicy(policy: VmGuardPolicy): VmGuardPolicy {
  return { guard: policy.guard === "off" ? "warn" : policy.guard, rules: policy.rules };
}

/**
 * The `guard:` the start guard judges VM `vm` (its definition's `<uuid>`: `uuid`), which the
 * config no longer names, by once an apply has recorded it ({@link droppedVmPolicy} of what
 * `file` recorded for that definition; `enforce` where nothing is recorded for it): what `plan`
 * says stops a start of such a VM, where the config has no `guard:` of it to say.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const file = { version: 1 as const, config: "c.yaml",
 *   vms: { old: { guard: "off" as const, rules: {}, uuid: "u1" } } };
 * assertEquals(droppedVmGuard(file, { vm: "old", uuid: "u1" }), "warn");
 * assertEquals(droppedVmGuard(file, { vm: "old", uuid: "u2" }), "enforce");
 * assertEquals(droppedVmGuard(null, { vm: "old", uuid: "u1" }), "enforce");
 * ```
 */
export function droppedVmGuard(
  file: GuardPolicyFile | null,
  { vm, uuid }: { vm: string; uuid: string | null },
): GuardPolicy {
  if (file === null || !Object.hasOwn(file.vms, vm)) return "enforce";
  return droppedVmPolicy(policyForDomain(file.vms[vm]!, { vm, uuid }).policy).guard;
}

/**
 * Each VM of `file` in words: `"win11" warn, rule "gpu" enforce, rule "hba" allow_host_critical`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   describePolicies({ version: 1, config: "c.yaml",
 *     vms: { win11: { guard: "warn", rules: { gpu: "enforce" } } } }),
 *   ['"win11" warn, rule "gpu" enforce'],
 * );
 * ```
 */
export function describePolicies(file: GuardPolicyFile): string[] {
  return Object.entries(file.vms).map(([vm, p]) =>
    `${JSON.stringify(vm)} ${p.guard}${
      Object.entries(p.rules).map(([rule, r]) => `, rule ${JSON.stringify(rule)} ${r}`).join("")
    }${
      (p.allowHostCritical ?? []).map((rule) =>
        `, rule ${JSON.stringify(rule)} allow_host_critical`
      )
        .join("")
    }`
  );
}

/**
 * Whether a refusal of `kind` for a device recorded under `rule` is one the rule's
 * `allow_host_critical: true` lifts: only that the host needs the device, as `plan` keeps such a
 * device, never a device replaced or gone, and never a hand-added one (`rule` `null`).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const policy = { guard: "enforce" as const, rules: {}, allowHostCritical: ["hba"] };
 * assertEquals(hostNeedsAllowed(policy, "host-needs", "hba"), true);
 * assertEquals(hostNeedsAllowed(policy, "replaced", "hba"), false);
 * assertEquals(hostNeedsAllowed(policy, "host-needs", null), false);
 * ```
 */
export function hostNeedsAllowed(
  policy: VmGuardPolicy,
  kind: string,
  rule: string | null,
): boolean {
  return kind === "host-needs" && rule !== null &&
    (policy.allowHostCritical ?? []).includes(rule);
}

/**
 * What lets a start take a device the host needs that a refusal names (an allowance does not):
 * `allow_host_critical: true` on the rule that recorded it, for a `host-needs` refusal only (for
 * a group mate bound for a VM, giving the group to one VM, or the rule's override if no VM
 * passes it); for anything else (a hand-added hostdev, a replaced device, a GPU in use) nothing does but its fix.
 *
 * @example
 * ```ts
 * import { assertMatch } from "../../tests/helpers/assert.ts";
 * assertMatch(hostNeedsRemedy({ kind: "host-needs", recorded: { rule: "gpu" } }, "win"), /"gpu"/);
 * assertMatch(hostNeedsRemedy({ kind: "host-needs", recorded: null }, "win"), /virsh edit win/);
 * ```
 */
export function hostNeedsRemedy(
  refusal: {
    kind: string;
    recorded: { rule: string | null } | null;
    group?: { forVm?: boolean };
  },
  vm: string,
): string {
  const rule = refusal.recorded?.rule ?? null;
  // A group split between two VMs is refused by plan whatever the rule says: the rule's override
  // only helps where no other VM passes the member.
  if (refusal.kind === "host-needs" && rule !== null && refusal.group?.forVm === true) {
    return vmMemberRemedy(
      vm,
      `"allow_host_critical: true" on rule ${JSON.stringify(rule)}, then passthrough apply, does`,
    );
  }
  if (refusal.kind === "host-needs" && rule !== null) {
    return `only "allow_host_critical: true" on rule ${
      JSON.stringify(rule)
    }, then passthrough apply, does`;
  }
  // A state that passes (a program holding the device, another VM's VF): only its own fix.
  if (refusal.kind === "busy") return "nothing does: follow the refusal's fix";
  return refusal.recorded === null
    ? `nothing does: remove the hostdev from the definition (virsh edit ${shellWord(vm)})`
    : `nothing does: follow the refusal's fix (${
      followUpCommand(undefined, "passthrough plan", { options: [["--vm", vm]] })
    })`;
}

/**
 * What lets a start take a group mate bound to VFIO for a VM, worded as its refusal is: giving
 * the group to one VM if another passes the member (`plan` refuses the split whatever a rule
 * says, so an apply alone would not help), else `unpassed`.
 *
 * @example
 * ```ts
 * import { assertMatch } from "../../tests/helpers/assert.ts";
 * assertMatch(vmMemberRemedy("win", "X does"), /^if another VM passes the member, .*; if none does, X does$/);
 * ```
 */
export function vmMemberRemedy(vm: string, unpassed: string): string {
  return `if another VM passes the member, only giving the group's devices to one of the two does (${
    followUpCommand(undefined, "passthrough plan", { options: [["--vm", vm]] })
  } names that VM); if none does, ${unpassed}`;
}

// The schema's list (GUARD_POLICIES) is not imported: the hook would load the config schema.
/** The policies, the strictest first. */
const POLICIES: readonly string[] = ["enforce", "warn", "off"];

/**
 * The policy of one refusal: its rule's when passthrough recorded the device, else the VM's
 * (a hand-added hostdev, or XML that cannot be read). With `hostNeeds` (the device now at the
 * address is one the host needs), the stricter of the rule's and the VM's: a rule's `warn` or
 * `off` speaks for checking the device it chose, not for taking the host's own, whether that is
 * the chosen device the host has since begun to use or whatever the buses put at its address
 * (the host's disk controller after a new drive renumbered them). Only the VM's own `off`, or
 * `allow_host_critical` on the rule (see {@link hostNeedsAllowed}), lets such a start go on.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const policy = { guard: "enforce" as const, rules: { gpu: "off" as const } };
 * assertEquals(policyFor(policy, "gpu"), "off");
 * assertEquals(policyFor(policy, "gpu", { hostNeeds: true }), "enforce");
 * ```
 */
export function policyFor(
  policy: VmGuardPolicy,
  rule: string | null,
  options: { hostNeeds?: boolean } = {},
): GuardPolicy {
  const own = rule === null
    ? policy.guard
    : Object.hasOwn(policy.rules, rule)
    ? policy.rules[rule]!
    : policy.guard;
  if (!options.hostNeeds) return own;
  return POLICIES.indexOf(own) <= POLICIES.indexOf(policy.guard) ? own : policy.guard;
}

/** Whether the guard checks nothing at all for the VM (its policy and every rule's are `off`). */
export function checksNothing(policy: VmGuardPolicy): boolean {
  return policy.guard === "off" && Object.values(policy.rules).every((p) => p === "off");
}

function isPolicy(value: unknown): value is GuardPolicy {
  return typeof value === "string" && POLICIES.includes(value);
}

/** Whether `value` is absent or a {@link VmGuardPolicy.devices}: records by a canonical address. */
function isDeviceMap(value: unknown): boolean {
  if (value === undefined) return true;
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  return Object.entries(value).every(([address, record]) => {
    if (typeof record !== "object" || record === null) return false;
    const fields = record as Record<string, unknown>;
    // Canonical as apply writes it, a VMD domain's five hex digits (`10000:e1:00.0`) too.
    return canonicalPciAddress(address) === address &&
      RECORD_FIELDS.every((field) =>
        typeof fields[field] === "string" ||
        ((fields[field] ?? null) === null && !REQUIRED_FIELDS.includes(field))
      );
  });
}

/** The fields every record holds (the others may be `null` or absent). */
const REQUIRED_FIELDS: readonly string[] = ["address", "vendorId", "deviceId", "classCode", "rule"];

/** `data` as a policy file, or `null` when it is not one (a damaged file enforces). */
export function parsePolicyFile(data: unknown): GuardPolicyFile | null {
  if (typeof data !== "object" || data === null) return null;
  const { version, config, vms, uri } = data as Partial<GuardPolicyFile>;
  if (version !== 1 || typeof config !== "string" || typeof vms !== "object" || vms === null) {
    return null;
  }
  if (uri !== undefined && typeof uri !== "string") return null;
  for (const entry of Object.values(vms) as unknown[]) {
    const { guard, rules, allowHostCritical } = (entry ?? {}) as Partial<VmGuardPolicy>;
    if (!isPolicy(guard) || typeof rules !== "object" || rules === null) return null;
    if (!Object.values(rules).every(isPolicy)) return null;
    if (
      allowHostCritical !== undefined &&
      !(Array.isArray(allowHostCritical) && allowHostCritical.every((r) => typeof r === "string"))
    ) {
      return null;
    }
    if (!isDeviceMap((entry as Partial<VmGuardPolicy>).devices)) return null;
    const uuid = (entry as Partial<VmGuardPolicy>).uuid;
    if (!(uuid === undefined || uuid === null || typeof uuid === "string")) return null;
  }
  return uri === undefined ? { version, config, vms } : { version, config, uri, vms };
}

/**
 * `file` (the policies in `path`) as the start guard of the VMs of `connection` (as `lockUri`
 * names it; the hook's: `qemu:///system`) takes it: as recorded when an apply over that
 * connection recorded it, or when it does not say (a file from before {@link GuardPolicyFile.uri}:
 * an upgrade keeps the policies users recorded, and `hook status` says to apply again); else
 * none, with why (every VM enforces). A rehearsal over the test driver or a session that wrote
 * its policies in the directory a hook reads later never relaxes that hook.
 *
 * @example
 * ```ts
 * import { assertEquals, assertMatch } from "../../tests/helpers/assert.ts";
 * const file = { version: 1 as const, config: "c.yaml", uri: "test:///w.xml",
 *   vms: { a: { guard: "off" as const, rules: {} } } };
 * const taken = policiesForConnection(file, { path: "p.json", connection: "qemu:///system" });
 * assertEquals(taken.file, null);
 * assertMatch(taken.problem!, /recorded by an apply over test:\/\/\/w\.xml, not qemu:\/\/\/system/);
 * const own = { ...file, uri: "qemu:///system" };
 * assertEquals(policiesForConnection(own, { path: "p.json", connection: "qemu:///system" }),
 *   { file: own, problem: null });
 * ```
 */
export function policiesForConnection(
  file: GuardPolicyFile,
  { path, connection }: { path: string; connection: string },
): PolicyFileReading {
  if (file.uri === undefined || file.uri === connection) return { file, problem: null };
  return {
    file: null,
    problem:
      `the guard policies in ${path} were recorded by an apply over ${
        JSON.stringify(file.uri).slice(1, -1)
      }, not ${connection}, whose VMs this guard checks: they do not count, every device is ` +
      `checked as "enforce"; "passthrough apply -c ${connection}" records the config's for them`,
  };
}

/** What `readPolicyFile` (in `state.ts`, which reads the state directory) found. */
export interface PolicyFileReading {
  /** The file's policies; `null` when there is none or it cannot be read. */
  file: GuardPolicyFile | null;
  /** Why the file could not be read (every VM then enforces), or `null`. */
  problem: string | null;
}

/** What `readVmPolicy` (in `state.ts`) found. */
export interface VmPolicyReading {
  /** The VM's policy; `enforce` when nothing names it or the file cannot be read. */
  policy: VmGuardPolicy;
  /** Why the file could not be read (the policy is then `enforce`), or `null`. */
  problem: string | null;
}
