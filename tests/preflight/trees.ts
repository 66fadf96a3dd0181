/**
 * Pre-flight test worlds: a captured real host (`tests/fixtures/hosts/`) with the facts a test
 * adds (`boot_vga`, `reset_method`, captured `/proc` files...), built into a sysfs tree, discovered
 * and planned from the tree with its facts read the way the CLI reads them.
 *
 * @module
 */

import { discoverHost } from "../../lib/host/discover.ts";
import { type HostFacts, readHostFacts } from "../../lib/host/preflight.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import { readXattr } from "../../ffi/libc_fs.ts";
import type { HostTopology } from "../../lib/host/types.ts";
import type { HostDescription, HostDeviceDescription } from "../../lib/testing/host_tree.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { planWorld } from "../../lib/plan/plan.ts";
import type { Plan, VmPlan } from "../../lib/plan/types.ts";
import { loadFixtureHost, tempHostTree } from "../helpers/hosts.ts";
import { dataWorld } from "../helpers/world.ts";

/** What a test adds to a captured host: per-device fields by address, and host-wide ones. */
export interface Additions {
  devices?: Record<string, Partial<HostDeviceDescription>>;
  host?: Omit<Partial<HostDescription>, "devices">;
}

/** `name`'s description with `additions` applied. */
export function described(name: string, additions: Additions = {}): HostDescription {
  const base = loadFixtureHost(name);
  for (const bdf of Object.keys(additions.devices ?? {})) {
    if (!base.devices.some((d) => d.bdf === bdf)) throw new Error(`${name} has no ${bdf}`);
  }
  return {
    ...base,
    ...additions.host,
    devices: base.devices.map((d) => ({ ...d, ...additions.devices?.[d.bdf] })),
  };
}

/** The host discovered from the tree of `description`, and its facts. */
export interface BuiltHost {
  host: HostTopology;
  facts: HostFacts;
  dir: string;
}

/** The `/etc/passwd` line of Debian's QEMU user, for the readability checks. */
export const QEMU_PASSWD =
  "libvirt-qemu:x:64055:108:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\n";

/** Builds the tree, discovers it (no lspci) and reads its facts; `fn` runs while it exists. */
export async function withHost<T>(
  description: HostDescription,
  fn: (built: BuiltHost) => T | Promise<T>,
): Promise<T> {
  await using tree = await tempHostTree(description, { prefix: "passthrough-preflight-" });
  return await fn(await discoverTree(tree.dir));
}

/** The host of the built tree at `dir` (no lspci), and its facts read as the CLI reads them. */
export async function discoverTree(dir: string): Promise<BuiltHost> {
  const host = await discoverHost({ root: dir, lspci: null, vendorNames: () => null });
  const facts = readHostFacts({
    reader: denoFsReader(),
    sysRoot: dir,
    procRoot: `${dir}/proc`,
    passwd: () => QEMU_PASSWD,
    // The CLI's reader of SELinux labels.
    readLabel: (path) => readXattr(path, "security.selinux"),
  });
  return { host, facts, dir };
}

/** A KVM domain named `vm` with `extra` XML (pinning) before `<devices>`. */
export function domain(vm: string, extra = ""): string {
  return `<domain type='kvm'><name>${vm}</name><uuid>6b1e9e4e-3c0f-4f0e-9d55-8a9f2c1d0e7a</uuid>` +
    `<memory unit='KiB'>4194304</memory>${extra}<os><type arch='x86_64' machine='q35'>hvm</type></os>` +
    `<devices/></domain>`;
}

/** Plans `yaml` (VMs and rules) on `built` with a world holding `domains` (name to XML). */
export function planOn(
  built: BuiltHost,
  yaml: string,
  domains: Record<string, string>,
  options: { facts?: boolean } = {},
): Plan {
  const config = parseConfig(`version: 1\n${yaml}`, { file: "preflight.yaml" });
  return planWorld({
    config,
    host: built.host,
    world: dataWorld(domains),
    ...(options.facts === false ? {} : { facts: built.facts }),
  });
}

/** The plan of VM `name`. */
export function vm(plan: Plan, name: string): VmPlan {
  const found = plan.vms.find((v) => v.name === name);
  if (found === undefined) throw new Error(`No plan for ${name}`);
  return found;
}

/** The codes of a VM's warnings. */
export function warningCodes(plan: VmPlan): string[] {
  return plan.warnings.map((w) => w.code);
}
