/**
 * Whole-process speed and memory, as users feel them: `bin/passthrough` started as a process
 * (start, discover, read libvirt, plan, print), next to the least a Deno program doing the same
 * must pay and to the seed's Python design, with every command of one host run in turn, round
 * after round, so all of them see the same machine load. Prints medians and the ratios the
 * targets are stated in (issue 15):
 *
 * - `plan --json` / floor (`bench/floor.ts`: dlopen libvirt, open the connection, read every
 *   domain's inactive XML while one lspci runs): at most 1.3x;
 * - seed-style Python / `plan --json`: at least 1.1 (only when `../shared/bench/` is beside the
 *   checkout; skipped otherwise);
 * - `groups --json` / (`deno run` of an empty script + one `lspci -nnkD`): at most 1.3x;
 * - peak RSS of `plan`: at most 60 MiB on TRX40, 80 MiB at 1,024 functions; and of `apply --yes`
 *   for 8 VMs on a real `libvirtd` (skipped, said why, when none can run here);
 * - the start hook, by `bench/hook_process.ts`, when `bin/passthrough hook --help` succeeds.
 *
 * And `plan --json` as the Ansible playbook runs it on each host (`ansible/passthrough.yml`:
 * `deno task bundle`'s one-file bundle, with the playbook's own V8 and permission flags), next to
 * `bin/passthrough`'s.
 *
 * Hosts: the TRX40 tree (`tests/fixtures/hosts/trx40-creator.json`, 89 functions, 10 VMs of which
 * 6 are configured) and a generated host of 1,024 functions with 100 VMs (60 configured, some of
 * the others holding virtual functions the config does not name). The domains are libvirt
 * test-driver domains; the node file is written by `lib/testing/nodedev_world.ts`.
 *
 * Targets are reported, never enforced: timings move with the machine. `--smoke` runs TRX40 and
 * the apply once, to prove every command still runs and does what it should; `.ci/run` runs it.
 *
 * Usage: deno run -A bench/whole_process.ts [--runs 15] [--smoke] [--host trx40|1024]
 *   [--baseline DIR] (another checkout's bin/passthrough, in the same rounds: before / after)
 *   (bench/setup.sh installs the seed's Python packages and GNU time)
 *
 * @module
 */

import { generateHost } from "../lib/testing/host_generator.ts";
import {
  buildHostTree,
  type HostDescription,
  loadHostDescription,
} from "../lib/testing/host_tree.ts";
import { nodeDeviceWorldXml } from "../lib/testing/nodedev_world.ts";
import { canonicalPciAddress, pciAddressToLibvirt } from "../lib/pci/address.ts";
import { parse as parseYaml } from "yaml";
import { bundleAsTask } from "../tests/helpers/cli.ts";
import { median, roundOrders } from "./rounds.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const SHARED_BENCH = `${ROOT}../shared/bench`;
const PASSTHROUGH = `${ROOT}bin/passthrough`;
const GNU_TIME = "/usr/bin/time";
const PYTHON = "/usr/bin/python3";
const MIB = 1024;

/** One VM's rules: a vendor:device pair, with an address when the pair is not unique. */
interface Assignment {
  vm: string;
  vendorDevice: string;
  address?: string;
}

/** A host the benchmark plans, with everything written to disk. */
export interface Scene {
  label: string;
  tree: string;
  uri: string;
  config: string;
  seedConfig: string;
  /** Caps the plan must satisfy, so a broken plan is never timed. */
  vms: number;
  configured: number;
  /** Targets of this host. */
  rssTargetMiB: number;
}

interface Options {
  runs: number;
  smoke: boolean;
  hosts: string[];
  /** Another checkout whose `bin/passthrough` runs `plan` and `groups` in the same rounds. */
  baseline: string | null;
}

function parseOptions(args: string[]): Options {
  const options: Options = { runs: 15, smoke: false, hosts: ["trx40", "1024"], baseline: null };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--smoke") options.smoke = true;
    else if (arg === "--runs") options.runs = Number(args[++i]);
    else if (arg === "--host") options.hosts = [args[++i] ?? ""];
    else if (arg === "--baseline") options.baseline = args[++i] ?? "";
    else {
      throw new Error(
        `Unknown argument "${arg}" (usage: [--runs N] [--smoke] [--host H] [--baseline DIR])`,
      );
    }
  }
  if (!Number.isInteger(options.runs) || options.runs < 1) {
    throw new Error(`--runs needs a positive integer`);
  }
  if (options.smoke) Object.assign(options, { runs: 1, hosts: ["trx40"] });
  for (const host of options.hosts) {
    if (host !== "trx40" && host !== "1024") throw new Error(`Unknown host "${host}"`);
  }
  return options;
}

// ---------------------------------------------------------------- the hosts

/** The TRX40 assignment of the seed comparison: GPUs, NICs and USB controllers for 6 VMs. */
const TRX40: Assignment[] = [
  { vm: "vm000", vendorDevice: "10de:1b80" },
  { vm: "vm001", vendorDevice: "1002:67df" },
  { vm: "vm002", vendorDevice: "1d6a:07b1" },
  { vm: "vm003", vendorDevice: "1022:148c", address: "0000:23:00.3" },
  { vm: "vm004", vendorDevice: "1b21:3242" },
  { vm: "vm005", vendorDevice: "10ec:8168" },
];

function idOf(text: string): string {
  return text.replace(/^0x/, "").toLowerCase().padStart(4, "0");
}

/** One GPU or NVMe drive per VM, by ID and address, from the generated host's cards. */
function generatedAssignment(host: HostDescription, vms: number): Assignment[] {
  const cards = host.devices.filter((d) => /^0x(03|0108)/.test(d.class));
  if (cards.length < vms) throw new Error(`Only ${cards.length} cards for ${vms} VMs`);
  return cards.slice(0, vms).map((d, i) => ({
    vm: vmName(i),
    vendorDevice: `${idOf(d.vendor)}:${idOf(d.device)}`,
    address: canonicalPciAddress(d.bdf)!,
  }));
}

function vmName(i: number): string {
  return `vm${String(i).padStart(3, "0")}`;
}

function configYaml(assignments: Assignment[]): string {
  const lines = ["version: 1", "vms:"];
  for (const a of assignments) {
    const address = a.address === undefined ? "" : `, address: "${a.address}"`;
    lines.push(`  ${a.vm}:`, "    devices:");
    lines.push(`      - match: { vendor_device_id: "${a.vendorDevice}"${address} }`);
  }
  return `${lines.join("\n")}\n`;
}

function seedYaml(assignments: Assignment[]): string {
  const lines = ["vms:"];
  for (const a of assignments) {
    lines.push(`  ${a.vm}:`, `    - vendor_device_id: "${a.vendorDevice}"`);
    if (a.address !== undefined) lines.push(`      bdf: "${a.address}"`);
  }
  return `${lines.join("\n")}\n`;
}

function hostdevXml(address: string, slot: number): string {
  const a = pciAddressToLibvirt(canonicalPciAddress(address)!);
  return `    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='${a.domain}' bus='${a.bus}' slot='${a.slot}' function='${a.function}'/>
      </source>
      <address type='pci' domain='0x0000' bus='0x${
    (6 + slot).toString(16).padStart(2, "0")
  }' slot='0x00' function='0x0'/>
    </hostdev>`;
}

/** A shut-off q35 guest as `virsh dumpxml` shows one, holding `hostdevs` already. */
function domainXml(type: "test" | "qemu", i: number, hostdevs: string[]): string {
  const name = vmName(i);
  const ports = Array.from(
    { length: 8 },
    (_, p) =>
      `    <controller type='pci' index='${p + 1}' model='pcie-root-port'>
      <target chassis='${p + 1}' port='0x${(0x10 + p).toString(16)}'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x${p}'${
        p === 0 ? " multifunction='on'" : ""
      }/>
    </controller>`,
  ).join("\n");
  const ns = type === "test" ? " xmlns:test='http://libvirt.org/schemas/domain/test/1.0'" : "";
  return `<domain type='${type}'${ns}>
  <name>${name}</name>
  <uuid>00000000-0000-4000-8000-${i.toString(16).padStart(12, "0")}</uuid>
  <title>bench guest ${i}</title>
  <memory unit='KiB'>${type === "test" ? 8388608 : 65536}</memory>
  <vcpu placement='static'>${type === "test" ? 4 : 1}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features><acpi/><apic/></features>
  <clock offset='utc'/>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/${name}.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='qemu-xhci'>
      <address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>
    </controller>
    <controller type='pci' index='0' model='pcie-root'/>
${ports}
    <interface type='network'>
      <mac address='52:54:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${
    (i & 0xff).toString(16).padStart(2, "0")
  }'/>
      <source network='default'/>
      <model type='virtio'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <graphics type='vnc' port='-1' autoport='yes'/>
    <video>
      <model type='virtio' heads='1' primary='yes'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/>
    </video>
${hostdevs.map(hostdevXml).join("\n")}
    <memballoon model='virtio'>
      <address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/>
    </memballoon>
  </devices>${type === "test" ? "\n  <test:runstate>5</test:runstate>" : ""}
</domain>`;
}

/**
 * The domains of a host: `vm000` already holds the group of its first rule's device (the
 * "already configured" case); every third VM the config does not name holds one virtual function
 * the config leaves alone, so the plan checks VMs outside the config too.
 */
function domainsFor(host: HostDescription, vms: number, assignments: Assignment[]): string[] {
  const first = host.devices.find((d) =>
    `${idOf(d.vendor)}:${idOf(d.device)}` === assignments[0]!.vendorDevice
  )!;
  const firstGroup = host.devices.filter((d) => d.group === first.group && d.class !== "0x060400")
    .map((d) => d.bdf);
  const vfs = host.devices.filter((d) => d.physfn != null).map((d) => d.bdf).reverse();
  const configured = new Set(assignments.map((a) => a.vm));
  return Array.from({ length: vms }, (_, i) => {
    const held = i === 0 ? firstGroup : [];
    if (!configured.has(vmName(i)) && i % 3 === 1 && vfs.length > 0) held.push(vfs.shift()!);
    return domainXml("test", i, held);
  });
}

/** Writes the tree, node file and both configs of host `which` ("trx40" or "1024") under `work`. */
export async function buildScene(work: string, which: string): Promise<Scene> {
  const dir = `${work}/${which}`;
  await Deno.mkdir(dir, { recursive: true });
  const host = which === "trx40"
    ? loadHostDescription(`${ROOT}tests/fixtures/hosts/trx40-creator.json`)
    : generateHost(1024);
  const vms = which === "trx40" ? 10 : 100;
  const assignments = which === "trx40" ? TRX40 : generatedAssignment(host, 60);
  buildHostTree(host, `${dir}/tree`);
  await Deno.writeTextFile(
    `${dir}/node.xml`,
    nodeDeviceWorldXml(host, { domains: domainsFor(host, vms, assignments) }),
  );
  await Deno.writeTextFile(`${dir}/config.yaml`, configYaml(assignments));
  await Deno.writeTextFile(`${dir}/seed.yaml`, seedYaml(assignments));
  return {
    label: which === "trx40"
      ? `TRX40, ${host.devices.length} functions, ${vms} VMs (${assignments.length} configured)`
      : `generated, ${host.devices.length} functions, ${vms} VMs (${assignments.length} configured)`,
    tree: `${dir}/tree`,
    uri: `test://${dir}/node.xml`,
    config: `${dir}/config.yaml`,
    seedConfig: `${dir}/seed.yaml`,
    vms,
    configured: assignments.length,
    rssTargetMiB: which === "trx40" ? 60 : 80,
  };
}

// ---------------------------------------------------------------- running

/** One command of a round, and how to tell its output is the real thing. */
interface Case {
  name: string;
  cmd: string[];
  check(stdout: string): void;
}

interface Sample {
  ms: number;
  /** Peak RSS in KiB (GNU time), or `null` without it. */
  rssKiB: number | null;
  /** User + system CPU time in ms (GNU time, 10 ms resolution), or `null` without it. */
  cpuMs: number | null;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

const hasGnuTime = exists(GNU_TIME);
/**
 * As root, every timed command runs at a higher priority than the machine's other work, so the
 * load of other processes moves the figures less; all commands get the same.
 */
const PRIORITY = Deno.uid() === 0 ? ["nice", "-n", "-10"] : [];

async function runOnce(c: Case, work: string): Promise<Sample> {
  const rssFile = `${work}/rss`;
  const command = [...PRIORITY, ...c.cmd];
  const [cmd, ...args] = hasGnuTime
    ? [GNU_TIME, "-f", "%M %U %S", "-o", rssFile, ...command]
    : command;
  const started = performance.now();
  const out = await new Deno.Command(cmd!, {
    args,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const ms = performance.now() - started;
  const stdout = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `${c.name}: exit code ${out.code}: ${new TextDecoder().decode(out.stderr)}${stdout}`,
    );
  }
  c.check(stdout);
  if (!hasGnuTime) return { ms, rssKiB: null, cpuMs: null };
  // The last line: a command killed by a signal gets a line before it.
  const [rss, user, system] = Deno.readTextFileSync(rssFile).trim().split("\n").at(-1)!.split(" ");
  return {
    ms,
    rssKiB: parseInt(rss!, 10),
    cpuMs: Math.round((Number(user) + Number(system)) * 1000),
  };
}

/**
 * Runs every case once per round, `runs` rounds (plus one warm-up round unless smoking), each
 * round in another order: a command's time depends on the one run before it (the same `groups`
 * measured 79 and 67 ms in one fixed-order run, by its place), so no case keeps one place.
 */
async function alternate(
  cases: Case[],
  options: Options,
  work: string,
): Promise<Map<string, Sample[]>> {
  const samples = new Map(cases.map((c) => [c.name, [] as Sample[]]));
  const rounds = options.smoke ? 1 : options.runs + 1;
  const orders = roundOrders(cases, rounds);
  for (let round = 0; round < rounds; round++) {
    for (const c of orders[round]!) {
      const sample = await runOnce(c, work);
      if (options.smoke || round > 0) samples.get(c.name)!.push(sample);
    }
  }
  return samples;
}

/** Newest modification time under `path` (a file or a directory tree), in ms. */
function newest(path: string): number {
  const info = Deno.statSync(path);
  if (!info.isDirectory) return info.mtime?.getTime() ?? 0;
  let latest = 0;
  for (const entry of Deno.readDirSync(path)) {
    latest = Math.max(latest, newest(`${path}/${entry.name}`));
  }
  return latest;
}

/** What `bin/passthrough` runs: its bundle while no source is newer, else the sources. */
function entryInUse(): string {
  const bundle = `${ROOT}dist/bin/main.js`;
  if (!exists(bundle)) return "main.ts (sources: no dist/bin, see scripts/setup.sh)";
  const sources = ["main.ts", "cli", "lib", "ffi", "deno.json", "deno.lock"]
    .map((p) => newest(`${ROOT}${p}`));
  return Math.max(...sources) > newest(bundle)
    ? "main.ts (sources: dist/bin is older, run scripts/setup.sh)"
    : "dist/bin/main.js (the bundle)";
}

function denoBinary(): string {
  const pinned = `${ROOT}tools/deno/node_modules/.bin/deno`;
  return exists(pinned) ? pinned : Deno.execPath();
}

const ANSIBLE_PLAN = "plan --json (Ansible's)";

/**
 * The command line the Ansible playbook runs on each host, up to the command: its
 * `passthrough_run` (`deno run --quiet --no-prompt --no-config`, its default V8 flags and
 * permissions; tests/cli/permissions_test.ts holds that template to this shape) of `deno task
 * bundle`'s one-file bundle, built by {@link main} into `WORK/ansible/`. Without the playbook's
 * `timeout` in front, which adds its own exec and no work.
 */
function playbookRun(work: string): string[] {
  const [play] = parseYaml(Deno.readTextFileSync(`${ROOT}ansible/passthrough.yml`)) as {
    vars: { passthrough_default_v8_flags: string[]; passthrough_default_permissions: string[] };
  }[];
  const { passthrough_default_v8_flags: v8, passthrough_default_permissions: permissions } = play!
    .vars;
  return [
    denoBinary(),
    "run",
    "--quiet",
    "--no-prompt",
    "--no-config",
    ...v8,
    ...permissions,
    `${work}/ansible/passthrough.js`,
  ];
}

// ---------------------------------------------------------------- the checks

interface PlanJson {
  vms: { name: string; changed: boolean; errors: unknown[] }[];
  errors: unknown[];
}

function checkPlan(scene: Scene): (stdout: string) => void {
  return (stdout) => {
    const plan = JSON.parse(stdout) as PlanJson;
    const refused = plan.vms.filter((vm) => vm.errors.length > 0);
    if (plan.errors.length > 0 || refused.length > 0) {
      throw new Error(`plan is not clean: ${JSON.stringify(plan.errors ?? refused[0]!.errors)}`);
    }
    if (plan.vms.length !== scene.configured) {
      throw new Error(`plan has ${plan.vms.length} VMs, ${scene.configured} configured`);
    }
    if (!plan.vms.some((vm) => vm.changed)) throw new Error("plan changes no VM");
  };
}

function expectMatch(pattern: RegExp, what: string): (stdout: string) => void {
  return (stdout) => {
    if (!pattern.test(stdout)) {
      throw new Error(`${what}: unexpected output: ${stdout.slice(0, 300)}`);
    }
  };
}

// ---------------------------------------------------------------- one host

function cases(scene: Scene, work: string, seed: boolean): Case[] {
  const deno = denoBinary();
  const empty = `${work}/empty.ts`;
  const plan = ["plan", "--json", "--config", scene.config, "--sysfs", scene.tree];
  const list: Case[] = [
    {
      name: "plan --json",
      cmd: [PASSTHROUGH, ...plan, "--connect", scene.uri],
      check: checkPlan(scene),
    },
    {
      name: ANSIBLE_PLAN,
      cmd: [...playbookRun(work), ...plan, "--connect", scene.uri],
      check: checkPlan(scene),
    },
    {
      name: "floor (bench/floor.ts)",
      cmd: [
        deno,
        "run",
        "--quiet",
        "--no-prompt",
        "--allow-ffi",
        "--allow-run=lspci",
        "--allow-read",
        `${ROOT}bench/floor.ts`,
        scene.tree,
        scene.uri,
      ],
      check: expectMatch(new RegExp(`^${scene.vms} domains, \\d+ bytes of XML`), "floor"),
    },
    {
      name: "groups --json",
      cmd: [PASSTHROUGH, "groups", "--json", "--sysfs", scene.tree],
      check: (stdout) => {
        if (!Array.isArray(JSON.parse(stdout))) throw new Error("groups --json is not a list");
      },
    },
    {
      name: "deno run empty.ts",
      cmd: [deno, "run", "--quiet", "--no-prompt", empty],
      check: () => {},
    },
    {
      name: "lspci -nnkD",
      cmd: ["lspci", "-O", `sysfs.path=${scene.tree}/bus/pci`, "-nnkD"],
      check: expectMatch(/^[0-9a-f]{4}:[0-9a-f]{2}:/, "lspci"),
    },
  ];
  if (seed) {
    list.push({
      name: "seed-style Python",
      cmd: [
        PYTHON,
        `${SHARED_BENCH}/seed_baseline.py`,
        "--config",
        scene.seedConfig,
        "--sysfs",
        scene.tree,
        "--connect",
        scene.uri,
      ],
      check: expectMatch(/would change|nothing to do/, "seed"),
    });
  }
  return list;
}

/**
 * `plan --json` and `groups --json` of another checkout (`--baseline DIR`, e.g. an older commit
 * with its own `dist/bin`), so a change is measured before and after in the same rounds.
 */
function baselineCases(scene: Scene, baseline: string | null): Case[] {
  if (baseline === null) return [];
  const bin = `${baseline}/bin/passthrough`;
  return cases(scene, "", false).filter((c) => c.cmd[0] === PASSTHROUGH).map((c) => ({
    ...c,
    name: `${c.name} (baseline)`,
    cmd: [bin, ...c.cmd.slice(1)],
  }));
}

/** Why the seed comparison cannot run here, or `null`. */
function seedUnavailable(): string | null {
  if (!exists(`${SHARED_BENCH}/seed_baseline.py`)) {
    return "../shared/bench is not beside the checkout";
  }
  const probe = new Deno.Command(PYTHON, {
    args: ["-c", "import libvirt, lxml, yaml"],
    stdout: "null",
    stderr: "null",
  }).outputSync();
  return probe.success
    ? null
    : "python3-libvirt, python3-lxml or python3-yaml missing (bench/setup.sh)";
}

function verdict(ok: boolean): string {
  return ok ? "met" : "NOT met";
}

async function benchHost(scene: Scene, options: Options, work: string): Promise<void> {
  const seedReason = seedUnavailable();
  const samples = await alternate(
    [...cases(scene, work, seedReason === null), ...baselineCases(scene, options.baseline)],
    options,
    work,
  );
  const ms = (name: string) => median(samples.get(name)!.map((s) => s.ms));
  const rss = (name: string) => {
    const values = samples.get(name)!.map((s) => s.rssKiB);
    return values.some((v) => v === null) ? null : median(values as number[]) / MIB;
  };
  console.log(`\n${scene.label}: ${options.runs} alternating round(s), medians`);
  const cpu = (name: string) => {
    const values = samples.get(name)!.map((s) => s.cpuMs);
    return values.some((v) => v === null) ? null : median(values as number[]);
  };
  console.log(
    `  ${"command".padEnd(30)} ${"ms".padStart(8)} ${"CPU ms".padStart(7)} ${
      "peak RSS MiB".padStart(13)
    }`,
  );
  for (const name of samples.keys()) {
    const [r, c] = [rss(name), cpu(name)];
    console.log(
      `  ${name.padEnd(30)} ${ms(name).toFixed(1).padStart(8)} ${
        (c === null ? "-" : c.toFixed(0)).padStart(7)
      } ${(r === null ? "-" : r.toFixed(1)).padStart(13)}`,
    );
  }
  const plan = ms("plan --json");
  const floorRatio = plan / ms("floor (bench/floor.ts)");
  const groupsBase = median(
    samples.get("deno run empty.ts")!.map((s, i) => s.ms + samples.get("lspci -nnkD")![i]!.ms),
  );
  const groupsRatio = ms("groups --json") / groupsBase;
  console.log(
    `  plan / floor:                 ${floorRatio.toFixed(2)}x  (≤ 1.3x: ${
      verdict(floorRatio <= 1.3)
    })`,
  );
  console.log(
    `  Ansible's plan / plan:        ${(ms(ANSIBLE_PLAN) / plan).toFixed(2)}x  (the playbook's ` +
      "command on each host against bin/passthrough's)",
  );
  if (seedReason === null) {
    const seedRatio = ms("seed-style Python") / plan;
    console.log(
      `  seed-style Python / plan:     ${seedRatio.toFixed(2)}   (≥ 1.1: ${
        verdict(seedRatio >= 1.1)
      })`,
    );
  } else {
    console.log(`  seed-style Python / plan:     skipped: ${seedReason}`);
  }
  console.log(
    `  groups / (empty + lspci):     ${groupsRatio.toFixed(2)}x  (≤ 1.3x: ${
      verdict(groupsRatio <= 1.3)
    })`,
  );
  const planRss = rss("plan --json");
  console.log(
    planRss === null
      ? `  plan peak RSS:                skipped: no ${GNU_TIME} (bench/setup.sh)`
      : `  plan peak RSS:                ${planRss.toFixed(1)} MiB (≤ ${scene.rssTargetMiB}: ${
        verdict(planRss <= scene.rssTargetMiB)
      })`,
  );
}

// ---------------------------------------------------------------- apply on a real daemon

/**
 * Time and peak RSS of `apply --yes` defining 8 VMs on a private `libvirtd`, each round from the
 * same definitions, on the 1,024-function host (128 functions when this run did not build it).
 */
async function benchApply(options: Options, work: string): Promise<void> {
  const { libvirtdUnavailable, startLibvirtd } = await import("../tests/helpers/libvirtd.ts");
  const reason = libvirtdUnavailable();
  if (reason !== null) {
    console.log(`\napply --yes, 8 VMs on a real libvirtd: skipped: ${reason}`);
    return;
  }
  const { Connection } = await import("../ffi/connection.ts");
  const dir = `${work}/apply`;
  await Deno.mkdir(dir, { recursive: true });
  // The 1,024-function tree when this run built it; else a small one (writing a tree is slow).
  const functions = options.hosts.includes("1024") ? 1024 : 128;
  const host = generateHost(functions);
  const tree = functions === 1024 ? `${work}/1024/tree` : `${dir}/tree`;
  if (functions !== 1024) buildHostTree(host, tree);
  const assignments = generatedAssignment(host, 8);
  await Deno.writeTextFile(`${dir}/config.yaml`, configYaml(assignments));
  const domains = assignments.map((_, i) => domainXml("qemu", i, []));
  await using daemon = await startLibvirtd();
  const c: Case = {
    name: "apply --yes",
    cmd: [
      PASSTHROUGH,
      "apply",
      "--yes",
      "--config",
      `${dir}/config.yaml`,
      "--sysfs",
      tree,
      "--connect",
      daemon.uri,
      "--state-dir",
      `${dir}/state`,
    ],
    check: () => {},
  };
  const samples: Sample[] = [];
  const rounds = options.smoke ? 1 : Math.min(options.runs, 5);
  for (let round = 0; round < rounds; round++) {
    {
      using conn = Connection.open(daemon.uri);
      for (const xml of domains) conn.defineDomain(xml).free();
    }
    samples.push(await runOnce(c, work));
    using conn = Connection.open(daemon.uri, { readOnly: true });
    for (const a of assignments) {
      using dom = conn.lookupDomainByName(a.vm);
      if (!dom.xml({ inactive: true }).includes("<hostdev")) {
        throw new Error(`apply --yes left ${a.vm} without its hostdev`);
      }
    }
  }
  const medianMs = median(samples.map((s) => s.ms));
  const rssKiB = samples.map((s) => s.rssKiB);
  console.log(
    `\napply --yes, 8 VMs on a real libvirtd (${functions}-function tree), ${rounds} round(s): ` +
      `${medianMs.toFixed(0)} ms, peak RSS ${
        rssKiB.includes(null)
          ? "- (no GNU time)"
          : `${(median(rssKiB as number[]) / MIB).toFixed(1)} MiB`
      }`,
  );
}

// ---------------------------------------------------------------- the start hook

/** Runs `bench/hook_process.ts` when this checkout has a hook command and its benchmark. */
async function benchHook(options: Options): Promise<void> {
  const help = await new Deno.Command(PASSTHROUGH, {
    args: ["hook", "--help"],
    stdout: "null",
    stderr: "null",
  }).output();
  if (!help.success || !exists(`${ROOT}bench/hook_process.ts`)) {
    console.log("\nstart hook / deno run empty: skipped: this checkout has no hook command");
    return;
  }
  console.log("\nstart hook (bench/hook_process.ts):");
  const out = await new Deno.Command(denoBinary(), {
    args: ["run", "-A", `${ROOT}bench/hook_process.ts`, "--runs", String(options.runs)],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`bench/hook_process.ts failed with exit code ${out.code}`);
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const options = parseOptions(Deno.args);
  const work = await Deno.makeTempDir({ prefix: "passthrough-whole-process-" });
  try {
    await Deno.writeTextFile(`${work}/empty.ts`, "");
    // What the playbook copies to each host, as `deno task bundle` writes it.
    await bundleAsTask(`${work}/ansible`);
    console.log(
      `whole-process benchmark: ${navigator.hardwareConcurrency} CPUs, load ${
        Deno.loadavg().map((l) => l.toFixed(2)).join(" ")
      }, ${new Date().toISOString().slice(0, 10)}${
        PRIORITY.length > 0 ? ", commands at nice -10" : ""
      }${options.smoke ? " (smoke: one run)" : ""}`,
    );
    console.log(`bin/passthrough runs ${entryInUse()}`);
    for (const which of options.hosts) {
      await benchHost(await buildScene(work, which), options, work);
    }
    await benchApply(options, work);
    await benchHook(options);
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

if (import.meta.main) await main();
