/**
 * The start guard's cost at a VM start, measured as libvirt pays it: the installed hook run as a
 * process (minimal environment, the domain XML on stdin) for a VM with 4 recorded hostdevs, next
 * to `deno run` of an empty script, alternating in one invocation so all see the same machine
 * load (each round in another order, `bench/rounds.ts`): installed from the checkout
 * (`cli/hook_check.ts`), from `deno task bundle`'s output (`dist/hook/`) and from
 * `scripts/bundle_bin.sh`'s (`dist/bin/hook/`, what `bin/passthrough hook install` installs). Also
 * the check from the bin bundle run alone (the hook's command line without `sh` and `timeout`:
 * the wrapper's cost is the difference), the fast path (`release end`: every operation but
 * `prepare begin`), a refused start (which loads the state code and records the refusal), and the
 * hook from the bin bundle given a desktop VM's whole live definition (about 8 KB) instead of the
 * minimal one.
 * Target: the hook at most 1.2x the empty script.
 *
 * The hook checks a sysfs tree built from a captured host (4 GPU functions whose identities are
 * recorded), installed with `--sysfs`, so the run is the same on every machine; it reads the tree
 * as it reads `/sys`.
 *
 * Usage: deno run -A bench/hook_process.ts [--runs 21] [--baseline DIR] [--live]
 *
 * `--baseline DIR` adds the hook as another checkout installs it from its `bin/passthrough`'s
 * bundle (`DIR/dist/bin/main.js`, built by its `scripts/bundle_bin.sh`), given the minimal and
 * the desktop domain: before and after, in the same rounds.
 *
 * `--live` adds the bin hook (and the baseline's) installed for this machine's own `/sys`, as
 * `hook install` installs it on a host: a VM with hand-added hostdevs on up to three functions
 * the host does not use, a block disk on `/dev/vda` and a USB device, so the host-use reads
 * (mounts, swap, holders, ZFS, routes) and the VM-device reads run as at a real start.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { buildHostTree, loadHostDescription } from "../lib/testing/host_tree.ts";
import { HOOK_FILE_NAME, parseHookSettings } from "../lib/guard/hook_file.ts";
import { childrenCpuMs } from "../ffi/rusage.ts";
import { bundleAsTask, documentedFlags } from "../tests/helpers/cli.ts";
import { median, roundOrders } from "./rounds.ts";
import { denoFsReader } from "../lib/host/sysfs.ts";
import { readHostUse } from "../lib/host/sysfs_device.ts";
import type { PciDevice } from "../lib/host/types.ts";
import { canonicalPciAddress, pciAddressToLibvirt } from "../lib/pci/address.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "21" },
    baseline: { type: "string" },
    live: { type: "boolean", default: false },
  },
});
const RUNS = Number(values.runs);
const deno = Deno.execPath();
const work = await Deno.makeTempDir({ prefix: "passthrough-hook-bench-" });

async function must(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

async function install(main: string, name: string, live = false): Promise<string> {
  await must(deno, [
    "run",
    "--quiet",
    ...documentedFlags(),
    main,
    "hook",
    "install",
    "--hooks-dir",
    `${work}/${name}`,
    "--state-dir",
    `${work}/state-${name}`,
    ...(live ? [] : ["--sysfs", `${work}/tree`]),
  ]);
  return `${work}/${name}/${HOOK_FILE_NAME}`;
}

const GPUS = [
  ["0000:0b:00.0", "10de", "1b06", "030000"],
  ["0000:0b:00.1", "10de", "10ef", "040300"],
  ["0000:0c:00.0", "10de", "128b", "030000"],
  ["0000:0c:00.1", "10de", "0e0f", "040300"],
] as const;

function domainXml(): string {
  const records = GPUS.map(([a, v, d, c]) =>
    `<pt:device address="${a}" vendor="${v}" device="${d}" class="${c}" rule="gpu"/>`
  );
  const hostdevs = GPUS.map(([a]) => {
    const [, bus, slotFn] = a.split(":");
    const [slot, fn] = slotFn!.split(".");
    // Behind root ports 7 to 10, where libvirt places them on q35.
    const guest = (7 + GPUS.findIndex(([address]) => address === a)).toString(16).padStart(2, "0");
    return `<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x${bus}' slot='0x${slot}' function='0x${fn}'/></source><address type='pci' domain='0x0000' bus='0x${guest}' slot='0x00' function='0x0'/></hostdev>`;
  });
  return `<domain type='kvm'><name>bench</name><uuid>0c7a4ee2-4b5e-4d3c-9a43-5d0e8f0b1c2d</uuid>
<memory unit='KiB'>8388608</memory><vcpu>4</vcpu>
<metadata><pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">${
    records.join("")
  }</pt:hostdevs></metadata>
<os><type arch='x86_64' machine='q35'>hvm</type></os>
<devices>${hostdevs.join("\n")}</devices></domain>`;
}

/**
 * `xml` with what a desktop VM's live definition holds besides its hostdevs, as libvirt hands it
 * to the hook at `prepare begin` (UEFI, Hyper-V features, 14 PCIe root ports, disks, a network
 * interface, SPICE, TPM, audio, a security label: about 8 KB, which libvirt's schema and its test
 * driver accept): the check reads and validates the whole document, so its size is part of the
 * cost at every start.
 */
function fullDomainXml(xml: string): string {
  // Functions 0 to 7 of slots 2 and 3 of bus 0, as virt-install lays them out.
  const ports = Array.from({ length: 14 }, (_, i) => {
    const [slot, fn] = [2 + Math.floor(i / 8), i % 8];
    const multi = fn === 0 ? " multifunction='on'" : "";
    return `<controller type='pci' index='${
      i + 1
    }' model='pcie-root-port'><model name='pcie-root-port'/><target chassis='${i + 1}' port='0x${
      (0x10 + i).toString(16)
    }'/><alias name='pci.${
      i + 1
    }'/><address type='pci' domain='0x0000' bus='0x00' slot='0x0${slot}' function='0x${fn}'${multi}/></controller>`;
  });
  const devices = [
    "<emulator>/usr/bin/qemu-system-x86_64</emulator>",
    ...ports,
    "<disk type='file' device='disk'><driver name='qemu' type='qcow2' discard='unmap'/><source file='/var/lib/libvirt/images/win11.qcow2' index='2'/><backingStore/><target dev='sda' bus='sata'/><alias name='sata0-0-0'/><address type='drive' controller='0' bus='0' target='0' unit='0'/></disk>",
    "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/var/lib/libvirt/images/virtio-win.iso' index='1'/><target dev='sdb' bus='sata'/><readonly/><alias name='sata0-0-1'/><address type='drive' controller='0' bus='0' target='0' unit='1'/></disk>",
    "<controller type='usb' index='0' model='qemu-xhci' ports='15'><alias name='usb'/><address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/></controller>",
    "<controller type='sata' index='0'><alias name='ide'/><address type='pci' domain='0x0000' bus='0x00' slot='0x1f' function='0x2'/></controller>",
    "<interface type='network'><mac address='52:54:00:12:34:56'/><source network='default' portid='4c1c6c44-8b3a-4b2a-9d8e-1f2a3b4c5d6e' bridge='virbr0'/><target dev='vnet0'/><model type='virtio'/><alias name='net0'/><address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></interface>",
    "<serial type='pty'><source path='/dev/pts/3'/><target type='isa-serial' port='0'><model name='isa-serial'/></target><alias name='serial0'/></serial>",
    "<console type='pty' tty='/dev/pts/3'><source path='/dev/pts/3'/><target type='serial' port='0'/><alias name='serial0'/></console>",
    "<channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/><alias name='channel0'/><address type='virtio-serial' controller='0' bus='0' port='1'/></channel>",
    "<input type='tablet' bus='usb'><alias name='input0'/><address type='usb' bus='0' port='1'/></input><input type='mouse' bus='ps2'><alias name='input1'/></input><input type='keyboard' bus='ps2'><alias name='input2'/></input>",
    "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/><alias name='tpm0'/></tpm>",
    "<graphics type='spice' port='5900' autoport='yes' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/><image compression='off'/></graphics>",
    "<sound model='ich9'><alias name='sound0'/><address type='pci' domain='0x0000' bus='0x00' slot='0x1b' function='0x0'/></sound><audio id='1' type='spice'/>",
    "<video><model type='qxl' ram='65536' vram='65536' vgamem='16384' heads='1' primary='yes'/><alias name='video0'/><address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/></video>",
    "<redirdev bus='usb' type='spicevmc'><alias name='redir0'/><address type='usb' bus='0' port='2'/></redirdev>",
    "<memballoon model='virtio'><alias name='balloon0'/><address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></memballoon>",
  ];
  const os =
    "<os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type><loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader><nvram template='/usr/share/OVMF/OVMF_VARS_4M.ms.fd'>/var/lib/libvirt/qemu/nvram/bench_VARS.fd</nvram><boot dev='hd'/></os><features><acpi/><apic/><hyperv mode='custom'><relaxed state='on'/><vapic state='on'/><spinlocks state='on' retries='8191'/></hyperv><vmport state='off'/><smm state='on'/></features><cpu mode='host-passthrough' check='none' migratable='on'><topology sockets='1' dies='1' cores='4' threads='2'/></cpu><clock offset='localtime'><timer name='rtc' tickpolicy='catchup'/><timer name='pit' tickpolicy='delay'/><timer name='hpet' present='no'/><timer name='hypervclock' present='yes'/></clock><on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash><pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='no'/></pm>";
  const label = "libvirt-0c7a4ee2-4b5e-4d3c-9a43-5d0e8f0b1c2d";
  return xml
    .replace("<os><type arch='x86_64' machine='q35'>hvm</type></os>", os)
    .replace("<devices>", `<devices>${devices.join("\n")}\n`)
    .replace(
      "</domain>",
      `<seclabel type='dynamic' model='apparmor' relabel='yes'><label>${label}</label><imagelabel>${label}</imagelabel></seclabel></domain>`,
    );
}

/**
 * A VM for this machine's own `/sys`: hand-added hostdevs on up to three PCI functions that are
 * neither bridges nor used by the host (read as the hook reads it), a block disk on `/dev/vda`,
 * a USB hostdev.
 */
function liveDomainXml(): string {
  const reader = denoFsReader();
  const all = (reader.listDir("/sys/bus/pci/devices") ?? []).sort();
  const endpoints = all.filter((a) =>
    !(reader.readText(`/sys/bus/pci/devices/${a}/class`) ?? "0x06").startsWith("0x06")
  );
  const devices = endpoints.map((address) => ({ address }) as PciDevice);
  const used = new Set(
    (readHostUse(reader, { root: "/sys", live: true, devices }) ?? []).map((u) => u.address),
  );
  const spare = endpoints.filter((a) => !used.has(a)).slice(0, 3);
  if (spare.length === 0) throw new Error("--live: no PCI function here the host does not use");
  const hostdevs = spare.map((a) => {
    const { domain, bus, slot, function: fn } = pciAddressToLibvirt(canonicalPciAddress(a)!);
    return `<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='${domain}' bus='${bus}' slot='${slot}' function='${fn}'/></source></hostdev>`;
  });
  return `<domain type='kvm'><name>bench</name><devices>
<disk type='block' device='disk'><source dev='/dev/vda'/><target dev='vdb'/></disk>
<hostdev mode='subsystem' type='usb'><source><vendor id='0x046d'/><product id='0xc52b'/></source></hostdev>
${hostdevs.join("\n")}</devices></domain>`;
}

interface Case {
  name: string;
  cmd: string;
  args: string[];
  stdin?: Uint8Array;
  /** Variables added to the minimal environment libvirt gives a hook. */
  env?: Record<string, string>;
  /** The exit code every run must have. */
  code: number;
}

/** One run's wall time and CPU time (its processes', user and system), in ms. */
interface Run {
  ms: number;
  cpuMs: number;
}

async function once(c: Case): Promise<Run> {
  const cpuBefore = childrenCpuMs();
  const started = performance.now();
  const child = new Deno.Command(c.cmd, {
    args: c.args,
    clearEnv: true,
    env: { LC_ALL: "C", PATH: "/usr/bin:/bin", HOME: Deno.env.get("HOME") ?? "/root", ...c.env },
    stdin: c.stdin === undefined ? "null" : "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  if (c.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(c.stdin).catch(() => {});
    await writer.close().catch(() => {});
  }
  const out = await child.output();
  const ms = performance.now() - started;
  const cpuMs = childrenCpuMs() - cpuBefore;
  if (out.code !== c.code) {
    throw new Error(`${c.name}: exit ${out.code}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return { ms, cpuMs };
}

try {
  buildHostTree(
    loadHostDescription(
      new URL("../tests/fixtures/hosts/x570-aorus-pro-wifi.json", import.meta.url),
    ),
    `${work}/tree`,
  );
  await Deno.writeTextFile(`${work}/empty.ts`, "");
  await must(deno, ["cache", "--quiet", `${work}/empty.ts`]);
  const xml = new TextEncoder().encode(domainXml());
  const hook = await install(`${ROOT}main.ts`, "main");
  const cases: Case[] = [
    { name: "deno run empty.ts", cmd: deno, args: ["run", "--quiet", `${work}/empty.ts`], code: 0 },
    {
      name: "hook prepare begin (main.ts)",
      cmd: hook,
      args: ["bench", "prepare", "begin", "-"],
      stdin: xml,
      code: 0,
    },
  ];
  // As `deno task bundle` writes them: the CLI, and the check in chunks beside it.
  await bundleAsTask(`${work}/dist`);
  const bundled = await install(`${work}/dist/passthrough.js`, "bundle");
  cases.push({
    name: "hook prepare begin (bundle)",
    cmd: bundled,
    args: ["bench", "prepare", "begin", "-"],
    stdin: xml,
    code: 0,
  });
  // As bin/passthrough runs the CLI while its bundle is fresh: main.js, the check in hook/.
  await must(`${ROOT}scripts/bundle_bin.sh`, [`${work}/bin`]);
  const binHook = await install(`${work}/bin/main.js`, "bin");
  cases.push({
    name: "hook prepare begin (bin)",
    cmd: binHook,
    args: ["bench", "prepare", "begin", "-"],
    stdin: xml,
    code: 0,
  });
  // The same check without the hook around it (`sh`, its fork, `timeout`): what the wrapper
  // costs is the difference.
  const settings = parseHookSettings(await Deno.readTextFile(binHook));
  if (settings === null) throw new Error(`${binHook}: no settings line`);
  cases.push({
    name: "check alone (bin), no wrapper",
    cmd: settings.command[0]!,
    args: [...settings.command.slice(1), "--", "bench", "prepare", "begin", "-"],
    env: { ...settings.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    stdin: xml,
    code: 0,
  });
  const fullXml = new TextEncoder().encode(fullDomainXml(new TextDecoder().decode(xml)));
  cases.push({
    name: `hook (bin), ${(fullXml.length / 1024).toFixed(1)} KB domain`,
    cmd: binHook,
    args: ["bench", "prepare", "begin", "-"],
    stdin: fullXml,
    code: 0,
  });
  if (values.live) {
    const stdin = new TextEncoder().encode(liveDomainXml());
    cases.push({
      name: "hook (bin), live /sys",
      cmd: await install(`${work}/bin/main.js`, "bin-live", true),
      args: ["bench", "prepare", "begin", "-"],
      stdin,
      code: 0,
    });
    if (values.baseline !== undefined) {
      cases.push({
        name: "hook (baseline bin), live /sys",
        cmd: await install(`${values.baseline}/dist/bin/main.js`, "baseline-live", true),
        args: ["bench", "prepare", "begin", "-"],
        stdin,
        code: 0,
      });
    }
  }
  if (values.baseline !== undefined) {
    const baselineHook = await install(`${values.baseline}/dist/bin/main.js`, "baseline");
    cases.push({
      name: "hook prepare begin (baseline bin)",
      cmd: baselineHook,
      args: ["bench", "prepare", "begin", "-"],
      stdin: xml,
      code: 0,
    });
    cases.push({
      name: `hook (baseline bin), ${(fullXml.length / 1024).toFixed(1)} KB domain`,
      cmd: baselineHook,
      args: ["bench", "prepare", "begin", "-"],
      stdin: fullXml,
      code: 0,
    });
  }
  cases.push({
    name: "hook release end (fast path)",
    cmd: hook,
    args: ["bench", "release", "end", "-"],
    stdin: xml,
    code: 0,
  });
  // A refused start, to show the check's cost when it has something to say. Its own hook and
  // state directory: the refusal it records would otherwise send the next clean start of the
  // other hooks down the path that loads the state code (to clear it).
  const refused = new TextDecoder().decode(xml).replace('device="1b06"', 'device="2684"');
  cases.push({
    name: "hook prepare begin, refused",
    cmd: await install(`${ROOT}main.ts`, "refused"),
    args: ["bench", "prepare", "begin", "-"],
    stdin: new TextEncoder().encode(refused),
    code: 1,
  });
  for (const c of cases) for (let i = 0; i < 3; i++) await once(c);
  const runs = new Map(cases.map((c) => [c, [] as Run[]]));
  // Each round in another order (bench/rounds.ts); the warm-up above ran them in the listed one.
  for (const order of roundOrders(cases, RUNS + 1).slice(1)) {
    for (const c of order) runs.get(c)!.push(await once(c));
  }
  const wall = (i: number) => runs.get(cases[i]!)!.map((run) => run.ms);
  const cpu = (i: number) => runs.get(cases[i]!)!.map((run) => run.cpuMs);
  const [base, cpuBase] = [median(wall(0)), median(cpu(0))];
  console.log(
    `hook_process: ${RUNS} alternating runs each; ${navigator.hardwareConcurrency} CPUs; load ${
      Deno.loadavg().map((l) => l.toFixed(2)).join(" ")
    }; deno ${Deno.version.deno}`,
  );
  // CPU time (user + system of the run's processes) moves less than wall time with other load.
  console.log(
    `${"case".padEnd(32)} ${"median".padStart(9)} ${"min".padStart(9)} ${"vs empty".padStart(9)} ${
      "CPU".padStart(9)
    } ${"vs empty".padStart(9)}`,
  );
  for (const [i, c] of cases.entries()) {
    const [m, cpuM] = [median(wall(i)), median(cpu(i))];
    console.log(
      `${c.name.padEnd(32)} ${m.toFixed(1).padStart(6)} ms ${
        Math.min(...wall(i)).toFixed(1).padStart(6)
      } ms ${(m / base).toFixed(2).padStart(8)}x ${cpuM.toFixed(1).padStart(6)} ms ${
        (cpuM / cpuBase).toFixed(2).padStart(8)
      }x`,
    );
  }
} finally {
  await Deno.remove(work, { recursive: true });
}
