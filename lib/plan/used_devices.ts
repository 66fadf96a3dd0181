/**
 * The host devices a domain uses without passing a PCI function through: block disks by their
 * `/dev` path (`<disk type='block'>`, block backing stores, mirrors, data stores), USB devices
 * (`<hostdev type='usb'>`), SCSI devices (`<hostdev type='scsi'>`, on their host adapter),
 * mediated devices (`<hostdev type='mdev'>`, a vGPU on its parent GPU), network interfaces
 * (`<interface type='direct'>` on a NIC, `<interface type='bridge'>` on a bridge whose ports are
 * NICs, `<interface type='network'>` on a network bridged to host interfaces) and character
 * devices (an `<input type='evdev'>` keyboard, a `<serial type='dev'>` adapter). Each
 * hangs under a PCI controller, and a rule that passes that controller to a guest takes the
 * device from under the domain: from another VM, or from the VM itself (its start would detach
 * the controller, and the device with it). Pure: the host is read through {@link DeviceResolvers}.
 *
 * @module
 */

import { scanPassedDevicesLeniently } from "../domain/lenient.ts";
import { noDevices, type UsedDevices } from "../domain/device_uses.ts";

export type { UsedDevices };
import { describeUsbSource, sameUsbDevice, type UsbSource } from "../domain/usb_source.ts";
import type { PciAddress } from "../host/types.ts";
import type { DefinitionRead, NetworksRead } from "./world.ts";

/**
 * Which PCI controllers are under a host device, as the live host says
 * (`HostFacts` is one); `null` when the host cannot say (a captured tree).
 */
export interface DeviceResolvers {
  /** The controllers under the block device at `path`; throws when the path cannot be read. */
  blockDeviceControllers(path: string): PciAddress[] | null;
  /** The controllers under the USB devices a USB hostdev's source names. */
  usbDeviceControllers(source: UsbSource): PciAddress[] | null;
  /** The controller of a SCSI host adapter (`scsi_host2`); absent: not resolved. */
  scsiHostControllers?(adapter: string): PciAddress[] | null;
  /** The parent PCI function of a mediated device, by UUID; absent: not resolved. */
  mdevControllers?(uuid: string): PciAddress[] | null;
  /** The NICs under a host network interface (a bridge's or bond's ports); absent: not resolved. */
  netDeviceControllers?(name: string): PciAddress[] | null;
  /**
   * The controllers under the character device at `path`; throws when the path cannot be read;
   * absent: not resolved.
   */
  charDeviceControllers?(path: string): PciAddress[] | null;
  /**
   * The host interfaces the libvirt network `name` puts guests on (its host bridge, its macvtap
   * pool; `[]` for a NAT, routed or hostdev network, or none of that name); throws when the
   * network could not be read; absent: not resolved.
   */
  networkInterfaces?(name: string): readonly string[];
}

/**
 * Marks what a running guest uses beyond its persistent definition (`disk /dev/sdc (attached to
 * the running guest only)`): `virsh edit` cannot take that out of it.
 */
export const RUNNING_ONLY = " (attached to the running guest only)";

/**
 * The host devices a definition uses, read strictly or, when the strict reader refuses it,
 * leniently; none when it could not be read.
 */
export function usedDevicesIn(read: DefinitionRead): UsedDevices {
  if (read.kind === "parsed") return read.domain;
  if (read.kind === "unreadable") return scanPassedDevicesLeniently(read.xml);
  return noDevices();
}

/**
 * What a running guest uses (`live`) beyond its persistent definition (`defined`): libvirt fills
 * in the bus and device number of a USB source given by IDs, and that is still the same device;
 * the device a network the definition names gave the guest is that network's (see
 * {@link onDefinedNetworks}).
 */
export function runningOnly(defined: UsedDevices, live: UsedDevices): UsedDevices {
  return {
    blockDisks: live.blockDisks.filter((path) => !defined.blockDisks.includes(path)),
    usbDevices: live.usbDevices.filter((source) =>
      !defined.usbDevices.some((d) => sameUsbDevice(d, source))
    ),
    scsiHosts: live.scsiHosts.filter((adapter) => !defined.scsiHosts.includes(adapter)),
    mdevs: live.mdevs.filter((uuid) => !defined.mdevs.includes(uuid)),
    netDevices: live.netDevices.filter((name) => !defined.netDevices.includes(name)),
    charDevices: live.charDevices.filter((path) => !defined.charDevices.includes(path)),
    networks: live.networks.filter((name) => !defined.networks.includes(name)),
    networkDevices: live.networkDevices.filter((d) => !defined.networks.includes(d.network)),
  };
}

/**
 * The devices a running guest (`live`) got from the networks its persistent definition
 * (`defined`) names: the definition's own, though only the live XML says which they are.
 */
export function onDefinedNetworks(defined: UsedDevices, live: UsedDevices): UsedDevices {
  return {
    ...noDevices(),
    networkDevices: live.networkDevices.filter((d) => defined.networks.includes(d.network)),
  };
}

/**
 * The PCI controllers under the host devices in `used`, each with what it holds (`disk
 * /dev/sdb`, `USB device 046d:c52b`, `SCSI adapter scsi_host2`, `network interface br0`,
 * `network lan (interface br0)`, `character device /dev/ttyUSB0`, followed by `mark`). A block
 * disk, character device or network that cannot be read counts no controller and is passed to
 * `unreadable`, with what it is (`disk`, `character device`, `network`).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const used = {
 *   blockDisks: ["/dev/sdb"],
 *   usbDevices: [{ vendorId: "046d", productId: "c52b", bus: null, device: null }],
 *   scsiHosts: [],
 *   mdevs: [],
 *   netDevices: [],
 *   charDevices: [],
 *   networks: [],
 *   networkDevices: [],
 * };
 * const resolvers = {
 *   blockDeviceControllers: () => ["0000:00:17.0"],
 *   usbDeviceControllers: () => ["0000:00:14.0"],
 * };
 * assertEquals(controllersUnder([used], resolvers, () => {}), new Map([
 *   ["0000:00:17.0", ["disk /dev/sdb"]],
 *   ["0000:00:14.0", ["USB device 046d:c52b"]],
 * ]));
 * ```
 */
export function controllersUnder(
  used: readonly UsedDevices[],
  resolvers: DeviceResolvers | undefined,
  unreadable: (path: string, error: unknown, kind: UnresolvedKind) => void,
  mark = "",
): Map<PciAddress, string[]> {
  const controllers = new Map<PciAddress, string[]>();
  if (resolvers === undefined) return controllers;
  const add = (addresses: readonly PciAddress[] | null, what: string) => {
    for (const address of new Set(addresses ?? [])) {
      const held = controllers.get(address) ?? [];
      if (!held.includes(what + mark)) controllers.set(address, [...held, what + mark]);
    }
  };
  const resolve = (kind: UnresolvedKind, path: string, controllersOf: Resolver) => {
    try {
      add(controllersOf(path), `${kind} ${path}`);
    } catch (error) {
      unreadable(path, error, kind);
    }
  };
  for (const path of new Set(used.flatMap((u) => u.blockDisks))) {
    resolve("disk", path, (p) => resolvers.blockDeviceControllers(p));
  }
  for (const source of used.flatMap((u) => u.usbDevices)) {
    add(resolvers.usbDeviceControllers(source), describeUsbSource(source));
  }
  for (const adapter of new Set(used.flatMap((u) => u.scsiHosts))) {
    add(resolvers.scsiHostControllers?.(adapter) ?? null, `SCSI adapter ${adapter}`);
  }
  for (const uuid of new Set(used.flatMap((u) => u.mdevs))) {
    add(resolvers.mdevControllers?.(uuid) ?? null, `mediated device ${uuid}`);
  }
  for (const name of new Set(used.flatMap((u) => u.netDevices))) {
    add(resolvers.netDeviceControllers?.(name) ?? null, `network interface ${name}`);
  }
  const onNetwork = (network: string, name: string) =>
    add(resolvers.netDeviceControllers?.(name) ?? null, `network ${network} (interface ${name})`);
  for (const network of new Set(used.flatMap((u) => u.networks))) {
    let names: readonly string[] = [];
    try {
      names = resolvers.networkInterfaces?.(network) ?? [];
    } catch (error) {
      unreadable(network, error, "network");
    }
    for (const name of names) onNetwork(network, name);
  }
  for (const { network, device } of used.flatMap((u) => u.networkDevices)) {
    onNetwork(network, device);
  }
  for (const path of new Set(used.flatMap((u) => u.charDevices))) {
    resolve("character device", path, (p) => resolvers.charDeviceControllers?.(p) ?? null);
  }
  return controllers;
}

/** What a domain names that cannot be resolved is: a block disk, a character device, a network. */
export type UnresolvedKind = "disk" | "character device" | "network";

type Resolver = (path: string) => PciAddress[] | null;

/**
 * `resolvers` that also say which host interfaces each libvirt network of `networks` puts its
 * guests on (see {@link DeviceResolvers.networkInterfaces}): a network that could not be read,
 * or any network when they could not be listed, throws.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "../../tests/helpers/assert.ts";
 * const networks = {
 *   kind: "read" as const,
 *   hostdev: [],
 *   bridged: [{ name: "lan", interfaces: ["br0"] }],
 *   unreadable: [{ name: "locked", error: "permission denied" }],
 * };
 * const resolvers = withNetworks({
 *   blockDeviceControllers: () => [],
 *   usbDeviceControllers: () => [],
 * }, networks);
 * assertEquals(["lan", "default"].map((name) => resolvers.networkInterfaces?.(name)), [
 *   ["br0"],
 *   [],
 * ]);
 * assertThrows(() => resolvers.networkInterfaces?.("locked"), Error, "permission denied");
 * ```
 */
export function withNetworks(
  resolvers: DeviceResolvers,
  networks: NetworksRead | null | undefined,
): DeviceResolvers {
  if (networks === null || networks === undefined) return resolvers;
  const bridged = new Map(
    networks.kind === "read" ? networks.bridged.map((n) => [n.name, n.interfaces]) : [],
  );
  const unreadable = new Map(
    networks.kind === "read" ? networks.unreadable.map((n) => [n.name, n.error]) : [],
  );
  return {
    ...resolvers,
    networkInterfaces: (name) => {
      if (networks.kind === "read-failed") {
        throw new Error(`the networks cannot be listed: ${networks.error}`);
      }
      const error = unreadable.get(name);
      if (error !== undefined) throw new Error(error);
      return bridged.get(name) ?? [];
    },
  };
}
