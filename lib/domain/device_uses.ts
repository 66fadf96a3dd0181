/**
 * The host devices a domain definition uses without passing a PCI function through, as both
 * domain readers find them (`domain_xml.ts` strictly, `lenient.ts` in whatever text it gets).
 * Each hangs under a PCI controller; `lib/plan/used_devices.ts` says which.
 *
 * @module
 */

import type { UsbSource } from "./usb_source.ts";

/** A host interface that a running guest's interface got from the libvirt network it is on. */
export interface NetworkDevice {
  /** The network's name. */
  network: string;
  /** The host interface: a macvtap's link (`eth1`) or a bridge (`br0`). */
  device: string;
}

/** The host devices one definition uses. Lists of names are sorted and unique unless said. */
export interface UsedDevices {
  /**
   * The host block devices its disks name (every `<source dev>` in a `<disk>`: a `type='block'`
   * disk's, a block backing store's, mirror's or data store's; `/dev/...` as written): the guest
   * holds them open while it runs. In document order from the strict reader.
   */
  blockDisks: string[];
  /**
   * The host USB devices its `<hostdev mode='subsystem' type='usb'>` elements name, in document
   * order (one whose source cannot be read names none: libvirt refuses it).
   */
  usbDevices: UsbSource[];
  /** The host SCSI adapters (`scsi_host2`) of its SCSI hostdevs (iSCSI ones name none). */
  scsiHosts: string[];
  /** The UUIDs (lower case) of its mediated devices (`<hostdev type='mdev'>`: a vGPU). */
  mdevs: string[];
  /**
   * The host network interfaces its `<interface type='direct'>` (`<source dev>`) and
   * `<interface type='bridge'>` (`<source bridge>`) elements use, but those on a network (in
   * document order from the strict reader).
   */
  netDevices: string[];
  /**
   * The host character devices (`/dev/...` as written) its evdev inputs and its serial ports,
   * parallel ports, consoles and channels of `type='dev'` use.
   */
  charDevices: string[];
  /**
   * The libvirt networks its interfaces other than hostdev ones are on (`<source network>`): a
   * hostdev network hands one of its VFs to the guest at start, a bridged one puts it on one of
   * its host interfaces.
   */
  networks: string[];
  /**
   * The host interfaces a running guest's interfaces got from their networks: its live XML's
   * interface type and `<source dev>` or `bridge`, or its status XML's `<actual>` element.
   */
  networkDevices: NetworkDevice[];
}

/** No host device at all. */
export function noDevices(): UsedDevices {
  return {
    blockDisks: [],
    usbDevices: [],
    scsiHosts: [],
    mdevs: [],
    netDevices: [],
    charDevices: [],
    networks: [],
    networkDevices: [],
  };
}
