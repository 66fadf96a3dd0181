/**
 * Random planning scenarios for property tests: a host (random IOMMU groups mixing GPUs, audio,
 * USB, NICs, NVMe, ISA and bridges with repeated IDs, or a generated host with SR-IOV NICs), a
 * config of rules over its devices, and a libvirt test-driver world (hand-added hostdevs, VMs
 * outside the config, configured VMs missing). Each host is kept as its description too, so a
 * test can build its sysfs tree and read it as the start guard does.
 *
 * @module
 */

import fc from "fast-check";
import { topologyFromDescription } from "../../lib/testing/host_description.ts";
import type { HostDescription, HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import { generateHost } from "../../lib/testing/host_generator.ts";
import { pciAddressToLibvirt } from "../../lib/pci/address.ts";
import type { HostTopology, PciAddress } from "../../lib/host/types.ts";

/** Device kinds and the IDs they may carry (few, so identical cards and ambiguity happen). */
const KINDS = {
  bridge: { class: "0x060400", ids: [["0x8086", "0x1901"], ["0x1022", "0x1483"]] },
  gpu: { class: "0x030000", ids: [["0x10de", "0x2684"], ["0x1002", "0x67df"]] },
  audio: { class: "0x040300", ids: [["0x10de", "0x22ba"], ["0x1002", "0xaaf0"]] },
  usb: { class: "0x0c0330", ids: [["0x1022", "0x149c"], ["0x1b21", "0x2142"]] },
  nic: { class: "0x020000", ids: [["0x8086", "0x1533"]] },
  nvme: { class: "0x010802", ids: [["0x144d", "0xa808"]] },
  isa: { class: "0x060100", ids: [["0x8086", "0xa305"]] },
} as const;
type Kind = keyof typeof KINDS;

const deviceArb = fc.record({
  kind: fc.constantFrom<Kind>("bridge", "gpu", "audio", "usb", "nic", "nvme", "gpu", "usb", "isa"),
  id: fc.nat(1),
  driver: fc.constantFrom(null, "vfio-pci", "nouveau", "xhci_hcd", "igb"),
  flr: fc.option(fc.boolean(), { nil: null }),
});

/** A random host's description and where it came from (`random`, `generated-N`). */
const hostArb: fc.Arbitrary<{ description: HostDescription; source: string }> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      groups: fc.array(fc.array(deviceArb, { minLength: 1, maxLength: 4 }), {
        minLength: 1,
        maxLength: 7,
      }),
      noIommu: fc.integer({ min: 0, max: 15 }),
    }).map(({ groups, noIommu }) => {
      const devices: HostDeviceDescription[] = [];
      groups.forEach((members, g) => {
        members.forEach((m, f) => {
          const ids = KINDS[m.kind].ids;
          const [vendor, device] = ids[m.id % ids.length]!;
          devices.push({
            bdf: `0000:${(g + 1).toString(16).padStart(2, "0")}:00.${f}`,
            // One host in sixteen has no IOMMU at all.
            group: noIommu === 0 ? null : g + 10,
            class: KINDS[m.kind].class,
            vendor,
            device,
            subsystem_vendor: null,
            subsystem_device: null,
            driver: m.kind === "bridge" ? "pcieport" : m.driver,
            revision: null,
            flr: m.flr,
          });
        });
      });
      return { description: { devices }, source: "random" };
    }),
  },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 8, max: 60 }).map((n) => ({
      description: generateHost(n, { vfsPerNic: 2 }),
      source: `generated-${n}`,
    })),
  },
);

/** One random planning scenario. */
export interface Scenario {
  /** The host as its description (for a sysfs tree). */
  description: HostDescription;
  /** The same host as a topology. */
  host: HostTopology;
  /** The config, as parsed YAML or JSON would give it. */
  config: unknown;
  /** Hand-added hostdevs per domain (unique across domains). */
  worldHostdevs: Record<string, PciAddress[]>;
  /** Domains in the world (configured ones may be missing; an outsider may exist). */
  domains: string[];
}

/** Random scenarios: a host, rules over its devices for one to three VMs, and a world. */
export const scenarioArb: fc.Arbitrary<Scenario> = hostArb.chain(({ description, source }) => {
  const host = topologyFromDescription(description, { source });
  const devices = host.devices;
  const ruleArb = fc.record({
    device: fc.nat(devices.length - 1),
    byAddress: fc.nat(2).map((n) => n > 0),
    // Mostly IDs; sometimes a class alone (wide, often ambiguous).
    byClassOnly: fc.nat(5).map((n) => n === 0),
    count: fc.constantFrom(undefined, 1, 2, "all"),
    iommuGroup: fc.constantFrom(undefined, true, false),
    allowHostCritical: fc.boolean(),
    allowNoFlr: fc.boolean(),
    vf: fc.nat(2).map((n) => n === 0),
  }).map((r) => {
    // On a host with SR-IOV NICs, one rule in three takes any VF of one, as an interface.
    const pfs = devices.filter((d) => d.virtfns.length > 0);
    if (r.vf && pfs.length > 0) {
      const pf = pfs[r.device % pfs.length]!;
      return { match: { address: pf.address }, vf: "any", interface: { vlan: 10 } };
    }
    const d = devices[r.device]!;
    const match: Record<string, string> = r.byClassOnly
      ? { class: d.classCode.slice(0, 4) }
      : { vendor_device_id: `${d.vendorId}:${d.deviceId}` };
    if (r.byAddress) match.address = d.address;
    const rule: Record<string, unknown> = { match };
    if (r.count === "all") rule.all = true;
    else if (r.count !== undefined) rule.count = r.count;
    if (r.iommuGroup !== undefined) rule.iommu_group = r.iommuGroup;
    if (r.allowHostCritical) rule.allow_host_critical = true;
    if (r.allowNoFlr) rule.allow_no_flr = true;
    return rule;
  });
  return fc.record({
    vms: fc.array(fc.array(ruleArb, { maxLength: 2 }), { minLength: 1, maxLength: 3 }),
    missing: fc.nat(4),
    outsider: fc.boolean(),
    hand: fc.uniqueArray(
      fc.record({ device: fc.nat(devices.length - 1), owner: fc.nat(3) }),
      { maxLength: 3, selector: (h) => h.device },
    ),
  }).map(({ vms, missing, outsider, hand }) => {
    const names = vms.map((_, i) => `vm${i}`);
    const config = {
      version: 1,
      vms: Object.fromEntries(vms.map((rules, i) => [names[i], { devices: rules }])),
    };
    // One configured VM in five is not defined in libvirt (unknown-vm).
    const domains = names.filter((_, i) => !(missing === 0 && i === 0));
    if (outsider) domains.push("outsider");
    const worldHostdevs: Record<string, PciAddress[]> = {};
    for (const h of hand) {
      const owner = domains[h.owner % domains.length];
      if (owner === undefined) continue;
      (worldHostdevs[owner] ??= []).push(devices[h.device]!.address);
    }
    return { description, host, config, worldHostdevs, domains };
  });
});

/** The scenario's libvirt world: a `<node>` of shut-off test domains with their hostdevs. */
export function worldXml(s: Scenario): string {
  const domain = (name: string, i: number) => {
    const hostdevs = (s.worldHostdevs[name] ?? []).map((address) => {
      const a = pciAddressToLibvirt(address);
      return `<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='${a.domain}' bus='${a.bus}' slot='${a.slot}' function='${a.function}'/></source></hostdev>`;
    });
    return `<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>${name}</name>
    <uuid>4dea22b3-1d52-d8f3-2516-${String(i).padStart(12, "0")}</uuid>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <test:runstate>5</test:runstate>
    <devices>
      ${hostdevs.join("\n      ")}
    </devices>
  </domain>`;
  };
  return `<node>\n  ${s.domains.map(domain).join("\n  ")}\n</node>\n`;
}
