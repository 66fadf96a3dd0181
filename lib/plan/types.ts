/**
 * The plan as plain data: what each VM's persistent definition will hold, what changes, and why.
 * `plan --json` prints a {@link Plan} as is; field names and issue codes are a contract.
 *
 * @module
 */

import type { PciAddress } from "../host/types.ts";

/** Machine-readable codes for refusals (errors) and warnings. */
export type IssueCode =
  | "no-match"
  | "ambiguous"
  | "too-many-matches"
  | "group-shared-with-other-vm"
  | "device-assigned-twice"
  | "sriov-split"
  | "group-contains-host-critical"
  | "group-inconsistent"
  | "no-iommu"
  | "host-use-unknown"
  | "acs-override"
  | "no-flr"
  | "host-driver-in-use"
  | "drift"
  | "moved"
  | "unknown-vm"
  | "unreadable-definition"
  | "vm-running"
  | "live-only-hostdev"
  | "boot-order-conflict";

/** A device that could have matched a rule, listed so the user can narrow the rule down. */
export interface Candidate {
  address: PciAddress;
  vendorId: string;
  deviceId: string;
  subsystemVendorId: string | null;
  subsystemDeviceId: string | null;
  classCode: string;
  physicalSlot: string | null;
  serial: string | null;
  iommuGroup: number | null;
  driver: string | null;
}

/** A refusal or a warning. Refusals stop the VM's plan; warnings are shown and kept. */
export interface PlanIssue {
  code: IssueCode;
  /** One sentence a user can act on, with the rule, device, VM and the override if any. */
  message: string;
  vm?: string;
  rule?: string;
  /** Config location `file:line:col` of the rule, when known. */
  location?: string;
  group?: number;
  devices?: PciAddress[];
  /** For `ambiguous`, `too-many-matches` and `no-match` (closest devices). */
  candidates?: Candidate[];
  /** For `group-shared-with-other-vm`: every VM involved. */
  vms?: string[];
  /** The config key that would allow this, e.g. `allow_host_critical: true`. */
  override?: string;
}

/**
 * The identity a managed hostdev was resolved from, recorded in the domain's `<metadata>` so the
 * next run recognises the same card even when its driver is now `vfio-pci` or its address moved.
 */
export interface DeviceIdentity {
  address: PciAddress;
  vendorId: string;
  deviceId: string;
  subsystemVendorId: string | null;
  subsystemDeviceId: string | null;
  classCode: string;
  serial: string | null;
  /** The host driver bound when the device was first resolved (before libvirt moved it to vfio). */
  driver: string | null;
  /** The config rule that owns this device. */
  rule: string;
}

/** How one hostdev is written into the domain. */
export interface HostdevSpec {
  address: PciAddress;
  /** `managed='yes'`: libvirt detaches from the host driver at start. */
  managed: boolean;
  rom?: { bar?: "on" | "off"; file?: string };
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
}

/** Why a device is in a VM's desired set. */
export type InclusionReason = "matched" | "iommu-group";

/** One device a VM will hold after the change. */
export interface PlannedHostdev {
  address: PciAddress;
  rule: string;
  reason: InclusionReason;
  group: number | null;
  spec: HostdevSpec;
  identity: DeviceIdentity;
  /** Short description for humans (`10de:2684 VGA compatible controller`). */
  description: string;
}

/** A managed hostdev whose card now sits at another address. */
export interface MovedHostdev {
  from: PciAddress;
  to: PciAddress;
  rule: string;
  /** What proved it is the same card (`same IDs and serial`). */
  evidence: string;
}

/** The plan for one VM. */
export interface VmPlan {
  name: string;
  /** Host addresses of every PCI hostdev the VM will have (managed and hand-added). */
  hostdevs: PciAddress[];
  add: PlannedHostdev[];
  remove: PciAddress[];
  keep: PciAddress[];
  move: MovedHostdev[];
  /** Group reasoning for humans: which members were added and which bridges left out. */
  reasoning: string[];
  warnings: PlanIssue[];
  errors: PlanIssue[];
  /** Whether the domain is running now (changes then take effect at the next power-off). */
  active: boolean | null;
  /**
   * The persistent XML the plan was computed from, read with `VIR_DOMAIN_XML_SECURE`: it holds
   * the VM's passwords. Print it only through `renderDomainDiff` or `redactedJson`.
   */
  currentXml: string;
  /** The XML `apply` will define, passwords included (print as {@link VmPlan.currentXml}). */
  desiredXml: string;
  /** `true` when `desiredXml` differs from `currentXml`. */
  changed: boolean;
}

/** The whole plan. */
export interface Plan {
  /** Config file path, host source and libvirt URI it was computed from. */
  config: string;
  host: string;
  uri: string;
  vms: VmPlan[];
  /** Issues not tied to one VM (e.g. `no-iommu`). */
  errors: PlanIssue[];
  warnings: PlanIssue[];
  /**
   * The IOMMU group of every host function the plan adds, removes or moves (by address), so
   * apply can hold back a VM taking any function of a group another VM still holds part of.
   * Absent from plans built by hand: apply then compares addresses only.
   */
  groupOf?: Record<PciAddress, number>;
}
