/**
 * What each subcommand takes and says: name, summary, arguments, flags and help, declared once
 * with the flag groups of `cli/flags.ts`. Plain data with no import but `cli/flags.ts`, so the
 * command table, every `--help` and every usage error load nothing a command uses, and each
 * command module types its `run` by its spec (`Parsed<typeof PLAN>`).
 *
 * @module
 */

import {
  type CommandSpec,
  CONNECT_FLAG,
  type Flags,
  HOOKS_DIR_FLAG,
  HOST_FLAGS,
  PLAN_FLAGS,
  READ_STATE_FLAGS,
  STATE_FLAGS,
  YES_FLAG,
} from "./flags.ts";

/** `--wide` of the device tables. */
const TABLE_FLAGS = {
  wide: { type: "boolean", help: "do not cut device names and notes to fit the terminal" },
} as const satisfies Flags;

/** The JSON keys of `devices` and `groups`, with the config's spelling where it has one. */
const JSON_KEYS_NOTE = `
JSON keys of a device (the config's match key in brackets): address [address], vendorId
[vendor_id], deviceId [device_id], subsystemVendorId [subsystem_vendor_id], subsystemDeviceId
[subsystem_device_id], classCode [class], revision, vendorName, deviceName, className,
driver [driver], modules, iommuGroup, numaNode [numa_node], physicalSlot [slot], isBridge,
rootBus (on a PCI root bus; absent where the tree's links do not say), physfn, virtfns,
bootVga, flr, serial [serial], for an SR-IOV physical function sriovTotalVfs, sriovNumVfs and
macAddress (its interface's MAC), hostCritical: why the host needs it (what 'plan'
refuses), or null, and takenAlong: { reason, by } when passing another card of its group
without it takes it along, which 'plan' refuses (by: each such card's first function), or
null.`
  .trim();

/** `passthrough devices`. */
export const DEVICES = {
  name: "devices",
  summary: "list the host's PCI devices",
  positionals: [{ name: "ADDRESS", variadic: true }],
  flags: {
    class: {
      type: "string",
      value: "CLASS",
      help:
        "only this class: a class code prefix (02, 0108) or a config class name (nvme, network)",
    },
    ...TABLE_FLAGS,
    json: { type: "boolean", help: "print the device objects as JSON (keys below)" },
    ...HOST_FLAGS,
  },
  about: `
Lists every PCI function (or those at ADDRESS: 0000:44:00.0, 44:00.0, or 44:00 for every
function of a card) with its IOMMU group, IDs, subsystem IDs, class, physical slot, NUMA node,
driver and name. Notes mark bridges, SR-IOV, devices with the same IDs as another (a rule
matching by IDs cannot tell them apart; their serial numbers, where known, can) and what the
host needs (as 'plan' judges it).`.trim(),
  notes: JSON_KEYS_NOTE,
} as const satisfies CommandSpec;

/** `passthrough groups`. */
export const GROUPS = {
  name: "groups",
  summary: "list the host's IOMMU groups",
  positionals: [{ name: "GROUP", variadic: true }],
  flags: {
    ...TABLE_FLAGS,
    json: {
      type: "boolean",
      help:
        `print [{ "group": N, "hostCritical": BOOL, "devices": [...] }] as JSON (keys below; a group is hostCritical when a device is, or when every card takes another's along)`,
    },
    ...HOST_FLAGS,
  },
  about: `
Lists IOMMU groups (or the groups numbered GROUP): a group passes to a guest as a whole (bridges
excepted). Groups holding devices the host needs (platform functions, its disks, its network)
are marked host-critical on each of their rows, as 'plan' judges them, and so are groups of
several cards each of which would take another's storage, network, display or USB controller
along; notes name the cards whose passing 'plan' refuses without such a controller.`.trim(),
  notes: JSON_KEYS_NOTE,
} as const satisfies CommandSpec;

/** `passthrough snapshot OUT`. */
export const SNAPSHOT = {
  name: "snapshot",
  summary: "capture the host's PCI/IOMMU topology into a portable tree",
  positionals: [{ name: "OUT", missing: "Missing the output directory" }],
  flags: { ...HOST_FLAGS },
  about: `
Captures the PCI devices, IOMMU groups, kernel command line and host-use facts of this host
(or of a captured tree) into OUT, a sysfs-shaped tree: 'passthrough groups --sysfs OUT' then
shows the same host anywhere, e.g. to plan on another machine or to attach to a bug report.
It identifies the machine: serial numbers, MACs, the kernel command line (URI passwords as ***),
mount points. Read it before you share it (README, "Security notes").`
    .trim(),
} as const satisfies CommandSpec;

/** `passthrough doctor`. */
export const DOCTOR = {
  name: "doctor",
  summary: "check that this host is ready for PCI passthrough",
  flags: {
    json: { type: "boolean", help: "print the findings as JSON" },
    ...HOST_FLAGS,
    ...CONNECT_FLAG,
    "no-libvirt": { type: "boolean", help: "skip the libvirt check" },
    ...HOOKS_DIR_FLAG,
  },
  about: `
Checks that this host can pass PCI devices through, each finding named by its check: iommu
(on), interrupt-remapping, vfio-pci (available), acs-override (none on the kernel command line),
boot-binding (what vfio-pci.ids takes at boot), driverctl (its overrides), boot-vga,
host-driver-busy (a GPU's driver in use), reset (devices without one), host-input (the
controllers the host's keyboard and mouse hang under), libvirt (reachable read-write), hook (the
start guard installed, runnable and seen by the daemon) and bundle (what bin/passthrough runs is
as new as the sources). Exit 1 when a check fails. With --sysfs, the checks only this host can
answer become warnings, and the hook is not checked.`.trim(),
} as const satisfies CommandSpec;

/** `passthrough sources`. */
export const SOURCES = {
  name: "sources",
  summary: "compare sysfs/lspci discovery with libvirt's node-device API",
  flags: {
    ...HOST_FLAGS,
    ...CONNECT_FLAG,
    json: { type: "boolean", help: `print { "sysfs", "libvirt", "differences": [...] }` },
  },
  about: `
Discovers PCI devices and IOMMU groups through sysfs + lspci and through libvirt's node-device
API (on the same host: a local URI), and lists every difference: devices missing on one side,
IOMMU groups, IDs, class, bridge flag, driver, SR-IOV links, and IOMMU group data a side
disagrees with itself on (libvirt naming a group member it does not list). libvirt does not
report subsystem IDs, slots, serials or FLR, so those are not compared; libvirt's test driver
drops drivers.`.trim(),
  notes: `
JSON differences, "a" meaning sysfs and "b" libvirt: { "kind": "iommu", "a", "b" },
{ "kind": "inconsistent", "source", "groups", "devices", "detail" }, { "kind": "missing",
"address", "missingFrom" }, { "kind": "field", "address", "field", "a", "b" }.
Exit codes: 0 the sources agree, 1 they differ or one failed, 2 usage error.`.trim(),
} as const satisfies CommandSpec;

/** `passthrough plan`. */
export const PLAN = {
  name: "plan",
  summary: "show the hostdev changes the config asks for, as diffs",
  flags: {
    ...PLAN_FLAGS,
    "detailed-exitcode": {
      type: "boolean",
      help: "exit 0 with no changes, 2 with changes pending, 1 on errors",
    },
  },
  about: `
Shows, per VM, the diff of its persistent definition that 'apply' would make, why each device
is included, and any warnings or refusals. Changes nothing.`.trim(),
  notes: `
One process plans one host. With a hosts: section in the config, that is the section of --host
NAME or of this machine's host name (named on stderr); a config with no such section is an
error. Several hosts: run passthrough on each (ansible/passthrough.yml, docs/FLEET.md).

Exit codes: 0 ok, 1 refused or failed, 2 usage error. With --detailed-exitcode: 0 no changes,
2 changes pending, 1 on any error (usage errors included, so 2 always means changes).`.trim(),
} as const satisfies CommandSpec;

/** `passthrough apply`. */
export const APPLY = {
  name: "apply",
  summary: "apply the plan: confirm, back up, define, verify",
  flags: {
    ...PLAN_FLAGS,
    ...YES_FLAG,
    live: { type: "boolean", help: "also hot-plug/unplug the hostdevs of running VMs" },
    ...STATE_FLAGS,
    "keep-backups": {
      type: "string",
      value: "N",
      help:
        "after a VM's change held, remove its backups beyond the newest N (default: 10; 0: keep all)",
    },
  },
  about: `
Shows the plan, then for each VM that would change asks whether to apply it
(y yes, n no, a yes to all remaining, q quit). For each confirmed VM: re-reads its
definition and stops if it changed since the plan, backs it up to the state directory,
defines the new one, and checks the hostdevs libvirt now holds (restoring the backup if
they are not the planned ones). A running VM's change takes effect at its next full
power-off unless --live hot-plugs it.`.trim(),
  notes: `
One process applies one host: with a hosts: section in the config, the section of --host NAME
or of this machine's host name, as for plan. Several hosts: run passthrough on each
(ansible/passthrough.yml, docs/FLEET.md).

Exit codes: 0 ok, 1 a VM failed or was refused, a hot-plug (--live) failed, or a runtime error,
2 usage error, 128 + N when a signal N stopped it (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP): the VM
being defined is finished and checked, the rest skipped.`.trim(),
} as const satisfies CommandSpec;

/** `passthrough rollback VM`. */
export const ROLLBACK = {
  name: "rollback",
  summary: "restore a VM's definition from a backup",
  positionals: [{ name: "VM", missing: "Missing the VM to roll back" }],
  flags: {
    to: {
      type: "string",
      value: "BACKUP",
      help: "the backup to restore: its id, a unique start of it, or its # in 'backups'",
    },
    ...YES_FLAG,
    ...CONNECT_FLAG,
    ...STATE_FLAGS,
    json: { type: "boolean", help: "print the result as JSON" },
    "show-secrets": {
      type: "boolean",
      help: "show passwords (e.g. VNC passwd) in the diff instead of ***",
    },
  },
  about: `
Restores VM's persistent definition from a backup taken by 'apply' or 'rollback'
(the newest unless --to names one; see 'passthrough backups VM'), of those taken
through the libvirt it connects to (-c): never another host's. Shows the diff and
asks first, backs up the definition it replaces, refuses a backup of another domain
(uuid), and checks the definition libvirt holds afterwards.`.trim(),
  notes: `
Exit codes: 0 restored, already equal or declined, 1 failed, 2 usage error, 128 + N when a
signal N stopped it (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP): a define under way is finished and
checked first.`.trim(),
} as const satisfies CommandSpec;

/** `passthrough backups [VM]`. */
export const BACKUPS = {
  name: "backups",
  summary: "list the backups taken before each define",
  positionals: [{ name: "VM" }],
  flags: {
    ...READ_STATE_FLAGS,
    json: { type: "boolean", help: "print the backup entries as JSON" },
  },
  about: `
Lists the backups 'apply' and 'rollback' took before each define, newest first,
numbered per VM from its newest: 'passthrough rollback VM' restores number 1, and
'--to N' the one numbered N (--to also takes an id, or a unique start of one). Once a
VM's change held, 'apply' keeps its newest 10 (--keep-backups). Files that are not
usable backups (a damaged sidecar, a backup a killed run left incomplete) are listed
after them; exit 1 when one is damaged. Writes nothing.`.trim(),
} as const satisfies CommandSpec;

/** Where the start guard's hook reads allowances and records refusals, fixed at install. */
const GUARD_STATE_FLAG = {
  "state-dir": {
    type: "string",
    value: "DIR",
    // `hook run` reads no environment (the check's rule): the hook's line names the directory.
    help: "the guard's state: allowances, refusals (install's default: $PASSTHROUGH_STATE_DIR " +
      "or /var/lib/passthrough; run needs it)",
  },
} as const satisfies Flags;

/** `passthrough hook install|status|remove|run`. */
export const HOOK = {
  name: "hook",
  summary: "install, check or remove the libvirt hook that guards VM starts",
  flags: {},
  subcommands: [
    {
      name: "install",
      summary: "write the hook (mode 0755) running this passthrough, and reload libvirt's daemon",
      flags: {
        ...HOOKS_DIR_FLAG,
        ...GUARD_STATE_FLAG,
        deadline: {
          type: "string",
          value: "SECONDS",
          help: "refuse the start when the check takes longer (default: 10)",
        },
        ...HOST_FLAGS,
        json: { type: "boolean", help: "print the result as JSON" },
      },
    },
    {
      name: "status",
      summary: "show whether the hook is installed, runnable and up to date (exit 1 when not)",
      flags: { ...HOOKS_DIR_FLAG, json: { type: "boolean", help: "print the result as JSON" } },
    },
    {
      name: "remove",
      summary: "delete the hook",
      flags: { ...HOOKS_DIR_FLAG },
      otherNames: ["uninstall", "delete", "rm"],
    },
    {
      name: "run",
      summary: "the check the hook runs, with the domain XML on standard input (internal)",
      positionals: [
        { name: "VM", missing: "Missing the hook's arguments: VM OPERATION SUB-OPERATION" },
        { name: "OPERATION", missing: "Missing the hook's arguments: VM OPERATION SUB-OPERATION" },
        {
          name: "SUB-OPERATION",
          missing: "Missing the hook's arguments: VM OPERATION SUB-OPERATION",
        },
        { name: "EXTRA" },
      ],
      flags: { ...GUARD_STATE_FLAG, ...HOST_FLAGS, ...HOOKS_DIR_FLAG },
      // Only a hook writes this line: one written by another passthrough (one whose check ran
      // its own deadline passed --deadline) refuses every start here until it is written again.
      // The same words as cli/hook_check.ts says for its own line.
      usageHint: 'install the hook again, as "passthrough hook status" says (a hook written by ' +
        "another passthrough passes arguments this check does not take)",
    },
  ],
  about: `
The start guard: a libvirt hook that refuses to start a VM when one of its PCI hostdevs'
addresses now holds another device than the one passthrough recorded, nothing, or a device the
host needs (a mounted filesystem's controller, the default route's NIC, the console's VGA).
'passthrough guard allow VM' lets the next start go on once anyway. 'install' reloads libvirtd
or virtqemud only for libvirt's own directory; the hook runs the check only at 'prepare begin'.`
    .trim(),
  notes: `
The hook runs 'hook run --state-dir DIR --sysfs DIR -- VM OPERATION SUB-OPERATION EXTRA' (or
the leaner check beside main: hook/hook_check.js beside a bundle, cli/hook_check.ts in a
checkout) with libvirt's arguments after '--'.

Exit codes: 0 ok, 1 failed (status: not installed or out of date; run: start refused), 2 usage
error.`.trim(),
} as const satisfies CommandSpec;

/** `passthrough guard allow VM`. */
export const GUARD = {
  name: "guard",
  summary: "let the next start of a VM go on once despite the start guard",
  flags: {},
  subcommands: [
    {
      name: "allow",
      summary: "let the next start of VM (within 60 minutes) go on once",
      positionals: [{ name: "VM", missing: "Missing the VM name" }],
      flags: {
        "state-dir": {
          type: "string",
          value: "DIR",
          help: "where the allowance goes (default: the installed hook's state directory, " +
            "else $PASSTHROUGH_STATE_DIR or /var/lib/passthrough)",
        },
        ...HOOKS_DIR_FLAG,
        ...CONNECT_FLAG,
      },
    },
  ],
  about: `
Lets the next start of VM go on once even if the start guard ('passthrough hook install')
refuses it: 'virsh start' cannot pass a flag to a hook, so the allowance waits in the state
directory the installed hook reads. The allowance is for the VM libvirt defines under that name
now (its UUID): another defined under the name later does not take it. The start still prints
what the guard found.`.trim(),
} as const satisfies CommandSpec;

/** `passthrough demo`. */
export const DEMO = {
  name: "demo",
  summary: "plan and apply on the bundled demo host and VMs (no IOMMU needed)",
  flags: {
    keep: {
      type: "boolean",
      help: "keep the temporary directory (sysfs tree, state directory) and print its path",
    },
  },
  about: `
Runs plan and apply --yes on the bundled demo: a real host's topology (demo/host.json) and a
libvirt test-driver world of two VMs (demo/world.xml), with demo/passthrough_config.yaml; plans
again (nothing left to do); then plans demo/refused_config.yaml to show what is refused.
Needs no IOMMU, no KVM and no libvirtd. Writes only to a temporary directory.`.trim(),
} as const satisfies CommandSpec;
