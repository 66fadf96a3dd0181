/**
 * The plan as plain data: what each VM's persistent definition will hold, what changes, and why.
 * `plan --json` prints a {@link Plan} as is; field names and issue codes are a contract.
 *
 * @module
 */

import type { PciAddress } from "../host/types.ts";

/**
 * Machine-readable codes for refusals (errors) and warnings. `no-flr` is deprecated: it is
 * given only where a device's `reset_method` is unknown; elsewhere `reset` judges every reset.
 */
export type IssueCode =
  | "no-match"
  | "ambiguous"
  | "group-shared-with-other-vm"
  | "device-assigned-twice"
  | "own-device"
  | "hostdev-network"
  | "sriov-split"
  | "group-contains-host-critical"
  | "group-not-viable"
  | "group-inconsistent"
  | "no-iommu"
  | "host-use-unknown"
  | "acs-override"
  | "no-flr"
  | "reset"
  | "boot-vga"
  | "host-driver-busy"
  | "rom-unreadable"
  | "numa-mismatch"
  | "host-input"
  | "host-driver-in-use"
  | "drift"
  | "moved"
  | "unknown-vm"
  | "transient-vm"
  | "vm-not-in-config"
  | "unreadable-definition"
  | "vm-running"
  | "live-only-hostdev"
  | "held-by-running-vm"
  | "boot-order-conflict"
  | "guard-refused"
  | "host-needed"
  | "vf-unavailable"
  | "mac-conflict"
  | "hand-added-missing";

/** A device that could have matched a rule, listed so the user can narrow the rule down. */
export interface Candidate {
  /** Canonical host address, `DDDD:BB:SS.F` in lower-case hex (`0000:01:00.0`). */
  address: PciAddress;
  /** Vendor ID, 4 lower-case hex digits without `0x` (`10de`). */
  vendorId: string;
  /** Device ID, 4 lower-case hex digits without `0x` (`2684`). */
  deviceId: string;
  /** Subsystem vendor ID (4 lower-case hex digits), or `null` when the host reports none. */
  subsystemVendorId: string | null;
  /** Subsystem device ID (4 lower-case hex digits), or `null` when the host reports none. */
  subsystemDeviceId: string | null;
  /** Class code with prog-if, 6 lower-case hex digits (`030000`). */
  classCode: string;
  /** Physical slot name (`3`, `CPU1 SLOT2`), or `null` when the host reports none. */
  physicalSlot: string | null;
  /** PCIe Device Serial Number as lspci prints it (`00-11-22-ff-ff-33-44-55`), or `null`. */
  serial: string | null;
  /** IOMMU group number, or `null` when the host has no IOMMU groups. */
  iommuGroup: number | null;
  /** The kernel driver bound now (`nvidia`, `vfio-pci`), or `null` when unbound. */
  driver: string | null;
}

/** A refusal or a warning. Refusals stop the VM's plan; warnings are shown and kept. */
export interface PlanIssue {
  /** What kind of refusal or warning this is; stable, for scripts to branch on. */
  code: IssueCode;
  /** One sentence a user can act on, with the rule, device, VM and the override if any. */
  message: string;
  /** The VM it concerns; absent for issues about the host or the whole run (e.g. `no-iommu`). */
  vm?: string;
  /** The name of the config rule it concerns; absent when no single rule is involved. */
  rule?: string;
  /** Config location `file:line:col` of the rule, when known. */
  location?: string;
  /** The IOMMU group number it concerns; absent when none, or when it spans several groups. */
  group?: number;
  /** Canonical host addresses (`0000:01:00.0`) of the devices it concerns; absent when none. */
  devices?: PciAddress[];
  /** For `ambiguous` and `no-match` (closest devices). */
  candidates?: Candidate[];
  /** For `group-shared-with-other-vm`: every VM involved. */
  vms?: string[];
  /** The config key that would allow this, e.g. `allow_host_critical: true`. */
  override?: string;
  /**
   * `true` for a warning that describes the normal flow rather than a risk (a managed hostdev's
   * host driver, which libvirt detaches at start): shown as a note, not counted as a warning.
   */
  info?: true;
}

/**
 * The identity a managed hostdev was resolved from, recorded in the domain's `<metadata>` so the
 * next run recognises the same card even when its driver is now `vfio-pci` or its address moved.
 */
export interface DeviceIdentity {
  /** Canonical host address the device had when recorded (`0000:01:00.0`). */
  address: PciAddress;
  /** Vendor ID, 4 lower-case hex digits without `0x` (`10de`). */
  vendorId: string;
  /** Device ID, 4 lower-case hex digits without `0x` (`2684`). */
  deviceId: string;
  /** Subsystem vendor ID (4 lower-case hex digits), or `null` when the host reported none. */
  subsystemVendorId: string | null;
  /** Subsystem device ID (4 lower-case hex digits), or `null` when the host reported none. */
  subsystemDeviceId: string | null;
  /** Class code with prog-if, 6 lower-case hex digits (`030000`). */
  classCode: string;
  /**
   * PCIe Device Serial Number as lspci prints it, or `null`. Without one, a card that moved is
   * only recognised when it is the only device with its IDs on the host.
   */
  serial: string | null;
  /**
   * The physical slot name the device sat in (`PCIE2`, from `bus/pci/slots`), recorded when it
   * had one: of two identical cards without serial numbers, it says which one this is after new
   * hardware renumbered the buses. Absent from records written before it was recorded, and for
   * devices in no named slot.
   */
  slot?: string;
  /** The host driver bound when the device was first resolved (before libvirt moved it to vfio). */
  driver: string | null;
  /** The config rule that owns this device. */
  rule: string;
}

/**
 * An SR-IOV virtual function passed as `<interface type='hostdev'>`, recorded in the domain's
 * `<metadata>` (a `<passthrough:interface>` element beside the `<passthrough:device>` ones): a
 * VF's address follows its PF's, so what identifies it is its PF's identity and its index.
 */
export interface VfIdentity {
  /** The VF's canonical address when recorded: the interface's `<source><address>`. */
  address: PciAddress;
  /** The index of the VF on its PF (the PF's `virtfnN` link). */
  index: number;
  /** The MAC the interface was written with (lower case, colons). */
  mac: string;
  /** The PF's identity (its address, IDs, serial and driver) and the rule that owns the VF. */
  pf: DeviceIdentity;
}

/** The guest NIC settings of a hostdev written as `<interface type='hostdev'>`. */
export interface InterfaceSpec {
  /** `<mac address>`: lower case, colons. */
  mac: string;
  /** `<vlan>`: its tags and whether it is a trunk; absent: no `<vlan>`. */
  vlan?: { tags: number[]; trunk: boolean };
}

/** How one hostdev is written into the domain. */
export interface HostdevSpec {
  /** Canonical host address of the device, written as the hostdev's `<source><address>`. */
  address: PciAddress;
  /** `managed='yes'`: libvirt detaches from the host driver at start. */
  managed: boolean;
  /**
   * The `<rom>` element, from the rule's `rom` (only on the devices the rule matched, not on group
   * members it brought along): `bar` shows or hides the ROM BAR, `file` is a ROM image path the
   * guest sees instead. Absent: no `<rom>` element.
   */
  rom?: { bar?: "on" | "off"; file?: string };
  /**
   * `<boot order='N'/>`, from the rule's `boot_order`, on the rule's first matched device only
   * (boot orders are unique in a domain). Absent: not a boot device.
   */
  bootOrder?: number;
  /**
   * Guest-side address for keeping a card's functions together in one guest slot
   * (`multifunction`). Absent: libvirt chooses.
   */
  guestAddress?: {
    domain: number;
    bus: number;
    slot: number;
    function: number;
    multifunction?: boolean;
  };
  /**
   * Written as `<interface type='hostdev'>` with this MAC and VLAN instead of a `<hostdev>` (an
   * SR-IOV VF of a `vf:` rule). Absent: a `<hostdev>`.
   */
  interface?: InterfaceSpec;
}

/** Why a device is in a VM's desired set. */
export type InclusionReason = "matched" | "iommu-group";

/** One device a VM will hold after the change. */
export interface PlannedHostdev {
  /** Canonical host address (`0000:01:00.0`). */
  address: PciAddress;
  /** The config rule that matched it, or whose matched device's IOMMU group brought it. */
  rule: string;
  /** `matched` by the rule, or an `iommu-group` member taken along with a matched device. */
  reason: InclusionReason;
  /** Its IOMMU group number, or `null` when the host has no IOMMU groups. */
  group: number | null;
  /** The `<hostdev>` element written for it, guest address included when one is assigned. */
  spec: HostdevSpec;
  /** What is recorded in the domain's `<metadata>` to recognise the card on the next run. */
  identity: DeviceIdentity;
  /** For a VF of a `vf:` rule (an interface): its PF, index and MAC, recorded instead. */
  vf?: VfIdentity;
  /** Short description for humans (`10de:2684 VGA compatible controller`). */
  description: string;
}

/** A managed hostdev whose card now sits at another address. */
export interface MovedHostdev {
  /** The canonical address the domain's hostdev names now, where the card no longer is. */
  from: PciAddress;
  /** The canonical address the card is at now, which the hostdev will name. */
  to: PciAddress;
  /** The config rule that owns the card. */
  rule: string;
  /** What proved it is the same card (`same IDs and serial`). */
  evidence: string;
}

/**
 * The one edit a refused VM still gets, for its owned hostdevs that must not stay: stale ones (the
 * address now holds another device or nothing; kept, the next start would hand that device to the
 * guest) and those on a device the host needs now (`host-needed`). A stale hostdev whose card is
 * proven at another address follows it when an unrefused VM's move could (see `move`); any other
 * is removed. A repair adds no other device.
 */
export interface VmRepair {
  /** Canonical addresses of the owned hostdevs removed (stale or host-needed), sorted. */
  remove: PciAddress[];
  /**
   * Stale hostdevs rewritten in place to where their card is now, records updated; `[]` when
   * none. The planner always sets it; a plan built by hand may leave it out (no moves).
   */
  move?: MovedHostdev[];
  /**
   * The persistent XML `apply` defines for the refused VM: `currentXml` with only those hostdevs
   * and their records removed or moved (passwords included: print it as
   * {@link VmPlan.currentXml}).
   */
  desiredXml: string;
}

/** The plan for one VM. */
export interface VmPlan {
  /**
   * The libvirt domain name: a key of the config's `vms:`, or a domain dropped from the config
   * that still holds hostdevs this tool added (planned with no rules, so they are removed).
   */
  name: string;
  /**
   * Host addresses of every PCI device the VM will have as a `<hostdev>` or an
   * `<interface type='hostdev'>`, ours and hand-written, sorted.
   */
  hostdevs: PciAddress[];
  /**
   * Hostdevs written: new ones first, then rewritten ones (whose settings changed; their address
   * is also in `remove`). Moved cards are in `move`, not here. Empty when nothing is written.
   */
  add: PlannedHostdev[];
  /**
   * Canonical addresses of hostdevs deleted from the definition (no longer wanted, or rewritten),
   * sorted; never a hand-added one, nor the old address of a moved card.
   */
  remove: PciAddress[];
  /**
   * Canonical addresses of the `<hostdev>`s and `<interface type='hostdev'>`s (ours and
   * hand-written) the definition keeps as they are, sorted.
   */
  keep: PciAddress[];
  /** Owned hostdevs whose card now sits at another host address. */
  move: MovedHostdev[];
  /** Group reasoning for humans: which members were added and which bridges left out. */
  reasoning: string[];
  /** Issues shown but not blocking: the VM is still changed. */
  warnings: PlanIssue[];
  /** Refusals: when any is present, the VM's definition is left as it is (`changed` is `false`). */
  errors: PlanIssue[];
  /**
   * Whether the domain is running now (changes then take effect at the next power-off); `null`
   * when unknown (e.g. the domain is not defined).
   */
  active: boolean | null;
  /**
   * The persistent XML the plan was computed from, read with `VIR_DOMAIN_XML_SECURE`: it holds
   * the VM's passwords, so print it only through `renderDomainDiff` or `redactedJson`. Empty when
   * the domain is not defined or libvirt did not return its definition.
   */
  currentXml: string;
  /**
   * The persistent XML `apply` will define, passwords included (print it as
   * {@link VmPlan.currentXml}); equal to `currentXml` when nothing changes.
   */
  desiredXml: string;
  /** `true` when `desiredXml` differs from `currentXml`. */
  changed: boolean;
  /**
   * For a refused VM holding stale or host-needed owned hostdevs: the removals and moves `apply`
   * makes even so. Absent when the VM is not refused or holds none.
   */
  repair?: VmRepair;
}

/** The whole plan. */
export interface Plan {
  /** Path of the config file it was computed from, as given. */
  config: string;
  /** `true` when that config is the shipped example (`example: true`), which `apply` refuses. */
  example?: true;
  /** Configured VMs left out of the plan by a selection (`--vm`), in config order; absent: none. */
  unplanned?: string[];
  /** Where the host data came from: `/sys`, a captured tree's path, or a libvirt URI. */
  host: string;
  /**
   * The section of a shared config's `hosts:` planned (`--host` or the host name); absent for a
   * config without `hosts:`.
   */
  section?: string;
  /** The libvirt connection URI (`qemu:///system`, `test:///default`). */
  uri: string;
  /**
   * One plan per planned VM: the selected VMs in the order given, else every configured VM in
   * config order followed by the domains dropped from the config.
   */
  vms: VmPlan[];
  /** Refusals not tied to one VM (e.g. `no-iommu`): each also refuses every VM. */
  errors: PlanIssue[];
  /** Warnings not tied to one VM, e.g. `drift` of a VM left out of the selection. */
  warnings: PlanIssue[];
  /**
   * The IOMMU group of every host function the plan adds, removes or moves (by address), so
   * apply can hold back a VM taking any function of a group another VM still holds part of.
   * Absent from plans built by hand: apply then compares addresses only.
   */
  groupOf?: Record<PciAddress, number>;
}
