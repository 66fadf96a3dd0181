/**
 * The planner's test world: a small host (bridges, a NIC, an NVMe drive, a GPU with its audio
 * function in one IOMMU group) and libvirt test-driver domains (win10 shut off, linux running with
 * a hand-added NIC), written to a temporary world per test.
 *
 * @module
 */

import { assertOk } from "./assert.ts";
import { COMPUTER_DEVICE, writeTempWorld } from "./world.ts";
import { openLibvirtPort } from "../../ffi/port.ts";
import { type Config, parseConfig } from "../../lib/config/config.ts";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import type { HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import type { Plan, VmPlan } from "../../lib/plan/types.ts";
import type { HostTopology, HostUse } from "../../lib/host/types.ts";
import type { LibvirtPort } from "../../lib/plan/libvirt_port.ts";

/** A device description with defaults for everything but its address, group and class. */
export type Dev = Partial<HostDeviceDescription> & {
  bdf: string;
  group: number | null;
  class: string;
};

/** A full device description from {@link Dev}. */
export function dev(d: Dev): HostDeviceDescription {
  return {
    vendor: "0x8086",
    device: "0x0001",
    subsystem_vendor: null,
    subsystem_device: null,
    driver: null,
    revision: null,
    ...d,
  };
}

/** An NVIDIA GPU (serial known) in IOMMU group 1, on its host driver. */
export const GPU: HostDeviceDescription = dev({
  bdf: "0000:01:00.0",
  group: 1,
  class: "0x030000",
  vendor: "0x10de",
  device: "0x2684",
  subsystem_vendor: "0x1043",
  subsystem_device: "0x88e2",
  driver: "nvidia",
  serial: "00-11-22-ff-ff-33-44-55",
  class_name: "VGA compatible controller",
});
/** The GPU's audio function, in the GPU's group. */
export const GPU_AUDIO: HostDeviceDescription = dev({
  bdf: "0000:01:00.1",
  group: 1,
  class: "0x040300",
  vendor: "0x10de",
  device: "0x22ba",
  driver: "snd_hda_intel",
  class_name: "Audio device",
});

/** Host bridge, PCI bridge, ISA bridge and SMBus, a NIC (igb) and an NVMe drive. */
export function baseDevices(): HostDeviceDescription[] {
  return [
    dev({ bdf: "0000:00:00.0", group: 0, class: "0x060000", class_name: "Host bridge" }),
    dev({ bdf: "0000:00:01.0", group: 1, class: "0x060400", class_name: "PCI bridge" }),
    dev({ bdf: "0000:00:1f.0", group: 4, class: "0x060100", class_name: "ISA bridge" }),
    dev({
      bdf: "0000:00:1f.4",
      group: 4,
      class: "0x0c0500",
      device: "0x7aa3",
      class_name: "SMBus",
    }),
    dev({
      bdf: "0000:02:00.0",
      group: 2,
      class: "0x020000",
      device: "0x1533",
      driver: "igb",
      class_name: "Ethernet controller",
    }),
    dev({
      bdf: "0000:03:00.0",
      group: 3,
      class: "0x010802",
      vendor: "0x144d",
      device: "0xa808",
      driver: "nvme",
      class_name: "Non-Volatile memory controller",
    }),
  ];
}

/** A host topology of `devices`, with a kernel command line if given. */
export function host(
  devices: HostDeviceDescription[],
  extra: { cmdline?: string } = {},
): HostTopology {
  return topologyFromDescription({ devices, ...extra }, { source: "test-host" });
}

/** The base devices plus the GPU and its audio function. */
export const HOST = host([...baseDevices(), GPU, GPU_AUDIO]);

/** A test-driver domain with one disk and `extra` devices; shut off unless `running`. */
export function domainXml(name: string, uuid: string, extra = "", running = false): string {
  return `  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>${name}</name>
    <uuid>${uuid}</uuid>
    <memory unit='KiB'>1048576</memory>
    <os>
      <type arch='x86_64'>hvm</type>
    </os>
    <devices>
      <disk type='file' device='disk'>
        <source file='/var/lib/libvirt/images/${name}.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>${extra}
    </devices>${running ? "" : "\n    <test:runstate>5</test:runstate>"}
  </domain>`;
}

/** A hostdev of the NIC written by hand (no record). */
export const HAND_ADDED_NIC = `
      <hostdev mode='subsystem' type='pci' managed='no'>
        <source>
          <address domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>
        </source>
        <!-- added by hand -->
      </hostdev>`;

/** A `<hostdev>` (managed, no record) of the PCI device at `address` (`0000:0b:00.1`). */
export function hostdevXml(address: string): string {
  const [domain, bus, slot, fn] = address.split(/[:.]/);
  return `
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source>
          <address domain='0x${domain}' bus='0x${bus}' slot='0x${slot}' function='0x${fn}'/>
        </source>
      </hostdev>`;
}

/** A port of an Intel I350 NIC (8086:1521, igb); `serial`: its device serial number. */
export function i350Port(
  bdf: string,
  group: number,
  serial: string | null = null,
): HostDeviceDescription {
  return dev({ bdf, group, class: "0x020000", device: "0x1521", driver: "igb", serial });
}

/** A test-driver `<node>` world holding `domains`. */
export function world(domains: string[]): string {
  return `<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads><active>2</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>4194304</memory>
${domains.join("\n")}
  ${COMPUTER_DEVICE}
</node>
`;
}

/** win10: shut off, no hostdev. */
export const WIN10 = domainXml("win10", "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e01");
/** linux: running, with the hand-added NIC. */
export const LINUX = domainXml(
  "linux",
  "6f1c5a3e-1d2b-4c3d-8e4f-5a6b7c8d9e02",
  HAND_ADDED_NIC,
  true,
);

/** A config from the YAML of its `vms:` entries. */
export function config(yaml: string): Config {
  return parseConfig(`version: 1\nvms:\n${yaml}`, { file: "passthrough_config.yaml" });
}

/** win10 takes the GPU by IDs and driver (and the audio function with it). */
export const GPU_CONFIG = config(`  win10:
    devices:
      - name: gpu
        match: { vendor_device_id: "10de:2684", driver: nvidia }
`);

/** The plan of VM `name`, asserting it is there. */
export function vmOf(plan: Plan, name: string): VmPlan {
  const vm = plan.vms.find((v) => v.name === name);
  assertOk(vm, `plan has VM "${name}"`);
  return vm;
}

/** Runs `fn` with a port on a temporary world of `domains`. */
export async function withPort<T>(
  domains: string[],
  fn: (port: ReturnType<typeof openLibvirtPort>) => T | Promise<T>,
): Promise<T> {
  await using w = await writeTempWorld(world(domains));
  using port = openLibvirtPort(w.uri);
  return await fn(port);
}

/** The real port with a fault injected before or after each define. */
export function withFault(
  port: LibvirtPort,
  before: (xml: string) => void,
  after: (xml: string) => void = () => {},
): LibvirtPort {
  return {
    get uri() {
      return port.uri;
    },
    listDomains: () => port.listDomains(),
    getPersistentXml: (name, options) => port.getPersistentXml(name, options),
    isActive: (name) => port.isActive(name),
    define: (xml) => {
      before(xml);
      port.define(xml);
      after(xml);
    },
    attachDevice: (name, xml, options) => port.attachDevice(name, xml, options),
    detachDevice: (name, xml, options) => port.detachDevice(name, xml, options),
  };
}

const BLANK = { subsystem_vendor: null, subsystem_device: null, revision: null };

/** An SR-IOV NIC whose PF and two VFs each sit in their own IOMMU group (ACS present). */
export function sriovHost(hostUse: HostUse[] = []): HostTopology {
  const devices: HostDeviceDescription[] = [
    {
      bdf: "0000:01:00.0",
      group: 1,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x1528",
      driver: "ixgbe",
      ...BLANK,
    },
    {
      bdf: "0000:01:10.0",
      group: 2,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x1515",
      driver: "vfio-pci",
      physfn: "0000:01:00.0",
      ...BLANK,
    },
    {
      bdf: "0000:01:10.2",
      group: 3,
      class: "0x020000",
      vendor: "0x8086",
      device: "0x1515",
      driver: "ixgbevf",
      physfn: "0000:01:00.0",
      ...BLANK,
    },
  ];
  return topologyFromDescription({ devices, host_use: hostUse }, { source: "sriov" });
}
