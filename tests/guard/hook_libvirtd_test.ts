/**
 * The start guard end to end: `passthrough hook install` into a temporary directory that a real,
 * private `libvirtd` (QEMU driver, with virtlogd) sees as `/etc/libvirt/hooks`, then `virsh
 * start` of `type='qemu'` domains whose hostdevs point at this machine's live PCI functions.
 * Every domain uses `managed='no'`, so even a guard that let a wrong start through would not
 * detach a device of this machine.
 */

import { assert, assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { libvirtdUnavailable, processAlive, startLibvirtd } from "../helpers/libvirtd.ts";
import { applyYes, canUnshareMounts, runCli, runHook } from "../helpers/cli.ts";
import { livePciMissing, loadFixtureHost, tempHostTree } from "../helpers/hosts.ts";
import { libcSysfsReader } from "../../ffi/libc_fs.ts";
import { readDeviceAt, readHostUse } from "../../lib/host/sysfs_device.ts";
import type { PciDevice } from "../../lib/host/types.ts";
import {
  allowNextStart,
  readPolicyFile,
  readRefusalRecords,
  recordPolicies,
} from "../../lib/guard/state.ts";
import { HOOK_FILE_NAME } from "../../lib/guard/hook_file.ts";
import { findHookDaemons, reloadDaemons } from "../../lib/guard/daemon.ts";
import { signalProcess } from "../../ffi/libc_fs.ts";
import { buildHostTree, type HostDescription } from "../../lib/testing/host_tree.ts";

const VIRSH = "/usr/bin/virsh";

/** Why no daemon here can run a hooks directory and virtlogd (bound in a private namespace). */
function daemonUnavailable(): string | null {
  return libvirtdUnavailable() ??
    (canUnshareMounts() ? null : "needs a private mount namespace (unshare -m)");
}

function unavailable(): string | null {
  const reason = daemonUnavailable() ?? livePciMissing();
  if (reason !== null) return reason;
  try {
    Deno.statSync(VIRSH);
  } catch {
    return `needs ${VIRSH} (Debian package libvirt-clients)`;
  }
  return null;
}

const skip = unavailable();

/** This machine's PCI functions, and which of them the host uses. */
function liveHost(): { devices: PciDevice[]; defaultRoute: string | null } {
  const reader = libcSysfsReader();
  const devices = (reader.listDir("/sys/bus/pci/devices") ?? []).sort()
    .flatMap((a) => readDeviceAt(reader, "/sys", a) ?? []);
  const uses = readHostUse(reader, { root: "/sys", live: true, devices });
  const defaultRoute = uses?.find((u) => u.reason === "default-route")?.address ?? null;
  return { devices, defaultRoute };
}

function libvirtAddress(address: string): string {
  const [domain, bus, slotFn] = address.split(":");
  const [slot, fn] = slotFn!.split(".");
  return `domain='0x${domain}' bus='0x${bus}' slot='0x${slot}' function='0x${fn}'`;
}

/** A `type='qemu'` domain with unmanaged hostdevs at `addresses` and these records. */
function domainXml(name: string, addresses: string[], records: string[]): string {
  const hostdevs = addresses.map((a) =>
    `<hostdev mode='subsystem' type='pci' managed='no'>
      <source><address ${libvirtAddress(a)}/></source>
    </hostdev>`
  ).join("\n    ");
  return `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <metadata>
    <passthrough:hostdevs xmlns:passthrough="urn:passthrough:hostdevs:1">
      ${records.join("\n      ")}
    </passthrough:hostdevs>
  </metadata>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    ${hostdevs}
  </devices>
</domain>`;
}

/** One `<passthrough:device>` record for `address` with the given identity. */
function record(address: string, id: Partial<PciDevice>, rule: string): string {
  const sub = id.subsystemVendorId
    ? ` subsystem-vendor="${id.subsystemVendorId}" subsystem-device="${id.subsystemDeviceId}"`
    : "";
  return `<passthrough:device address="${address}" vendor="${id.vendorId}" device="${id.deviceId}"${sub} class="${id.classCode}" rule="${rule}"/>`;
}

/** `passthrough hook install` into `hooksDir` with `stateDir` and `more` options, succeeding. */
async function installHook(hooksDir: string, stateDir: string, ...more: string[]): Promise<void> {
  const install = await runCli(
    ["hook", "install", "--hooks-dir", hooksDir, "--state-dir", stateDir, ...more],
  );
  assertEquals(install.code, 0, install.stderr);
}

/** `virsh start` of `vm`, shown, then `vm` undefined. */
async function startOnce(uri: string, vm: string): Promise<{ code: number; out: string }> {
  const start = await virsh(uri, "start", vm);
  console.log(`$ virsh start ${vm}\n${start.out.trim()}`);
  await virsh(uri, "undefine", vm);
  return start;
}

async function virsh(uri: string, ...args: string[]): Promise<{ code: number; out: string }> {
  const output = await new Deno.Command(VIRSH, {
    args: ["-c", uri, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: output.code, out: decode(output.stdout) + decode(output.stderr) };
}

Deno.test({
  name: "the installed hook stops virsh start on a real libvirtd when a hostdev's address holds " +
    "another device or one the host needs" + (skip === null ? "" : ` (skipped: ${skip})`),
  ignore: skip !== null,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-e2e-" });
    const hooksDir = `${dir}/hooks`;
    const stateDir = `${dir}/state`;
    const hook = `${hooksDir}/qemu.d/${HOOK_FILE_NAME}`;
    try {
      await installHook(`${hooksDir}/qemu.d`, stateDir);
      const { devices, defaultRoute } = liveHost();
      // A function no rule of the host-use or platform kind protects: the balloon or the RNG.
      const spare = devices.find((d) => d.vendorId === "1af4" && d.classCode.startsWith("ff")) ??
        devices.find((d) => !d.classCode.startsWith("06") && !d.classCode.startsWith("02"));
      assertOk(spare !== undefined, "no spare PCI function on this machine");
      const gpu = { vendorId: "10de", deviceId: "1b06", classCode: "030000" };
      const id = crypto.randomUUID().slice(0, 8);
      const moved = `guard-moved-${id}`;
      const matches = `guard-matches-${id}`;
      const nic = `guard-nic-${id}`;
      const domains: [string, string][] = [
        [moved, domainXml(moved, [spare.address], [record(spare.address, gpu, "gpu")])],
        [matches, domainXml(matches, [spare.address], [record(spare.address, spare, "spare")])],
      ];
      if (defaultRoute !== null) domains.push([nic, domainXml(nic, [defaultRoute], [])]);

      await using daemon = await startLibvirtd({ hooksDir, virtlogd: true });
      for (const [name, xml] of domains) {
        await Deno.writeTextFile(`${dir}/${name}.xml`, xml);
        const defined = await virsh(daemon.uri, "define", `${dir}/${name}.xml`);
        assertEquals(defined.code, 0, defined.out);
      }

      await t.step("(a) a recorded GPU whose address holds another device: refused", async () => {
        const start = await virsh(daemon.uri, "start", moved);
        console.log(`$ virsh start ${moved}\n${start.out.trim()}`);
        assertEquals(start.code, 1, start.out);
        assertMatch(start.out, /Hook script execution failed/);
        assertMatch(
          start.out,
          new RegExp(
            `passthrough guard: refusing to start "${moved}": hostdev ${spare.address} holds ` +
              `${spare.vendorId}:${spare.deviceId} .* not the recorded 10de:1b06 \\(class 030000\\) ` +
              `of rule "gpu"; fix: passthrough plan --vm ${moved}`,
          ),
        );
        const records = readRefusalRecords(stateDir);
        assertEquals(records.map((r) => [r.vm, r.allowed, r.refusals.map((x) => x.kind)]), [
          [moved, false, ["replaced"]],
        ]);
      });

      await t.step(
        "(a, allowed) an allowance lets the refused start past the hook, and a start libvirt " +
          "then fails uses it up",
        async () => {
          const uuid = (await virsh(daemon.uri, "domuuid", moved)).out.trim();
          allowNextStart(stateDir, moved, { uuid });
          const allowed = await virsh(daemon.uri, "start", moved);
          console.log(`$ virsh start ${moved} (allowed)\n${allowed.out.trim()}`);
          // The start fails later, in libvirt, for lack of VFIO: not in the hook.
          assertEquals(allowed.code, 1, allowed.out);
          assert.doesNotMatch(allowed.out, /Hook script execution failed|passthrough guard/);
          // The hook cannot tell that the start failed after it: the next one is refused again.
          const again = await virsh(daemon.uri, "start", moved);
          assertMatch(again.out, /Hook script execution failed.*refusing to start/);
        },
      );

      await t.step(
        "(b) a recorded identity that matches a spare device: the hook passes",
        async () => {
          const start = await virsh(daemon.uri, "start", matches);
          console.log(`$ virsh start ${matches}\n${start.out.trim()}`);
          // The start fails later, in libvirt, for lack of VFIO: not in the hook.
          assertEquals(start.code, 1, start.out);
          assert.doesNotMatch(start.out, /Hook script execution failed|passthrough guard/);
        },
      );

      await t.step({
        name: "(c) a hand-added hostdev on the default route's NIC: refused",
        ignore: defaultRoute === null,
        async fn() {
          const start = await virsh(daemon.uri, "start", nic);
          console.log(`$ virsh start ${nic}\n${start.out.trim()}`);
          assertEquals(start.code, 1, start.out);
          assertMatch(
            start.out,
            new RegExp(
              `refusing to start "${nic}": hostdev ${defaultRoute} holds .*\\(hand-added: nothing ` +
                `recorded\\); the host needs it: in use by the host \\(default-route: default route via`,
            ),
          );
        },
      });

      await t.step(
        "(a, warn) the same start under guard: warn passes the hook, recorded",
        async () => {
          const policies = { version: 1 as const, config: "c.yaml", vms: {} };
          recordPolicies(stateDir, { ...policies, vms: { [moved]: { guard: "warn", rules: {} } } });
          try {
            const start = await virsh(daemon.uri, "start", moved);
            console.log(`$ virsh start ${moved} (guard: warn)\n${start.out.trim()}`);
            // The start fails later, in libvirt, for lack of VFIO: not in the hook.
            assertEquals(start.code, 1, start.out);
            assert.doesNotMatch(start.out, /Hook script execution failed|passthrough guard/);
            const [warned] = readRefusalRecords(stateDir).filter((r) => r.vm === moved);
            assertEquals(warned?.refusals.map((x) => [x.kind, x.policy]), [["replaced", "warn"]]);
          } finally {
            recordPolicies(stateDir, policies);
          }
        },
      );

      await t.step("(d) release, reconnect, migrate: exit 0, nothing on stdout", async () => {
        const xml = domainXml(moved, [spare.address], [record(spare.address, gpu, "gpu")]);
        for (const args of [["release", "end"], ["reconnect", "begin"], ["migrate", "begin"]]) {
          const run = await runHook(hook, [moved, ...args, "-"], xml);
          assertEquals([run.code, run.stdout, run.stderr], [0, "", ""], args.join(" "));
        }
        // And prepare begin, run by hand, refuses with nothing on stdout either.
        const run = await runHook(hook, [moved, "prepare", "begin", "-"], xml);
        assertEquals([run.code, run.stdout], [1, ""]);
      });

      await t.step(
        "(e) a check that hangs is cut by the deadline and the start refused",
        async () => {
          const slow = `${dir}/slow`;
          await installHook(slow, stateDir, "--deadline", "1");
          // Standard input that never ends: the check waits for the XML until the deadline.
          const child = new Deno.Command(`${slow}/${HOOK_FILE_NAME}`, {
            args: [moved, "prepare", "begin", "-"],
            clearEnv: true,
            env: { LC_ALL: "C", PATH: "/usr/bin:/bin" },
            stdin: "piped",
            stdout: "piped",
            stderr: "piped",
          }).spawn();
          const started = performance.now();
          const out = await child.output();
          const ms = performance.now() - started;
          await child.stdin.close().catch(() => {});
          const stderr = new TextDecoder().decode(out.stderr);
          console.log(`deadline 1 s: exit ${out.code} after ${ms.toFixed(0)} ms: ${stderr.trim()}`);
          assertEquals(out.code, 1);
          assertEquals(new TextDecoder().decode(out.stdout), "");
          assertMatch(
            stderr,
            new RegExp(
              `^passthrough guard: refusing to start "${moved}": the check did not finish within 1 s`,
            ),
          );
          assertOk(ms >= 900 && ms < 5000, `${ms} ms`);
        },
      );

      await t.step("(f) a daemon started before the hook runs it after the reload", async () => {
        const later = `${dir}/later`;
        await Deno.mkdir(later);
        await using second = await startLibvirtd({ hooksDir: later, virtlogd: true });
        assertEquals((await virsh(second.uri, "define", `${dir}/${moved}.xml`)).code, 0);
        await installHook(`${later}/qemu.d`, stateDir);
        const before = await virsh(second.uri, "start", moved);
        assertEquals(before.code, 1, before.out);
        assert.doesNotMatch(
          before.out,
          /passthrough guard/,
          "the daemon has not seen the hook yet",
        );
        const daemons = findHookDaemons(libcSysfsReader(), { runDir: second.dir });
        assertEquals(daemons.map((d) => [d.name, d.pid]), [["libvirtd", second.pid]]);
        const [outcome] = reloadDaemons(daemons, (pid) => signalProcess(pid, 1));
        assertEquals(outcome?.reloaded, true, outcome?.message);
        let after = await virsh(second.uri, "start", moved);
        for (let i = 0; i < 50 && !/passthrough guard/.test(after.out); i++) {
          await new Promise((resolve) => setTimeout(resolve, 100));
          after = await virsh(second.uri, "start", moved);
        }
        console.log(`${outcome?.message}\n$ virsh start ${moved}\n${after.out.trim()}`);
        assertMatch(
          after.out,
          /Hook script execution failed: .*passthrough guard: refusing to start/,
        );
        await virsh(second.uri, "undefine", moved);
      });

      await t.step({
        name: "(g) a hostdev network whose pool lists the default route's NIC: refused",
        ignore: defaultRoute === null,
        async fn() {
          // libvirt defines a hostdev pool of VFs only, and this machine has none: the running
          // network's status file (the hook's only source: it must not call libvirt) is written
          // by hand, as libvirt writes it, into the daemon's private /run/libvirt/network, as it
          // stands after the buses moved under a running pool.
          const network = `pool-${id}`;
          const statusDir = `${daemon.dir}/state-0/network`;
          await Deno.mkdir(statusDir, { recursive: true });
          await Deno.writeTextFile(
            `${statusDir}/${network}.xml`,
            `<networkstatus><network><name>${network}</name>
  <forward mode='hostdev' managed='yes'><address type='pci' ${
              libvirtAddress(defaultRoute!)
            }/></forward>
</network></networkstatus>\n`,
          );
          const vm = `guard-pool-${id}`;
          await Deno.writeTextFile(
            `${dir}/${vm}.xml`,
            domainXml(vm, [], []).replace(
              "<devices>",
              `<devices><interface type='network'><source network='${network}'/></interface>`,
            ),
          );
          assertEquals((await virsh(daemon.uri, "define", `${dir}/${vm}.xml`)).code, 0);
          const start = await startOnce(daemon.uri, vm);
          assertEquals(start.code, 1, start.out);
          assertMatch(
            start.out,
            new RegExp(
              `refusing to start "${vm}": hostdev network "${network}" lists ${defaultRoute}, ` +
                "which holds .* now, not an SR-IOV virtual function; the host needs it: in use " +
                "by the host \\(default-route: ",
            ),
          );
        },
      });

      for (const [name] of domains) await virsh(daemon.uri, "undefine", name);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** The VFIO-Tools hooks helper's dispatcher: runs `qemu.d/VM/OPERATION/SUB-OPERATION/*`. */
const VFIO_TOOLS_DISPATCHER = `#!/bin/bash
HOOKPATH="$(dirname $0)/qemu.d/$1/$2/$3"
set -e
if [ -f "$HOOKPATH" ]; then
  eval \\""$HOOKPATH"\\" "$@"
elif [ -d "$HOOKPATH" ]; then
  while read file; do
    eval \\""$file"\\" "$@"
  done <<< "$(find -L "$HOOKPATH" -maxdepth 1 -type f -executable -print;)"
fi
`;

/** Every path under `dir` with its content (a directory's: `null`), sorted. */
function treeOf(dir: string, under = dir): [string, string | null][] {
  return [...Deno.readDirSync(under)].flatMap((e): [string, string | null][] => {
    const path = `${under}/${e.name}`;
    return e.isDirectory
      ? [[path.slice(dir.length), null], ...treeOf(dir, path)]
      : [[path.slice(dir.length), Deno.readTextFileSync(path)]];
  }).sort(([a], [b]) => a < b ? -1 : 1);
}

Deno.test({
  name:
    "beside the VFIO-Tools hooks helper on a real libvirtd, the guard sees what its single-GPU " +
    "script freed at prepare begin, and install and remove leave its folders alone" +
    (daemonUnavailable() === null ? "" : ` (skipped: ${daemonUnavailable()})`),
  ignore: daemonUnavailable() !== null,
  async fn() {
    const host = loadFixtureHost("x570-aorus-pro-wifi");
    const gpu = "0000:0c:00.0";
    host.host_use = [{ address: gpu, reason: "console-vga", detail: "boot_vga=1 with fbcon" }];
    await using tree = await tempHostTree(host);
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-vfio-tools-" });
    try {
      const hooksDir = `${dir}/hooks`;
      const begin = `${hooksDir}/qemu.d/single-gpu/prepare/begin`;
      Deno.mkdirSync(begin, { recursive: true });
      Deno.mkdirSync(`${hooksDir}/qemu.d/single-gpu/release/end`, { recursive: true });
      Deno.writeTextFileSync(`${hooksDir}/qemu`, VFIO_TOOLS_DISPATCHER, { mode: 0o755 });
      // Stands for stopping the display manager and unbinding the console: the captured tree's
      // host use is what the guard reads. Not executable yet, so the dispatcher skips it.
      const teardown = `${begin}/10-vfio-startup.sh`;
      Deno.writeTextFileSync(teardown, `#!/bin/sh\necho '[]' > ${tree.dir}/host_use.json\n`, {
        mode: 0o644,
      });
      Deno.writeTextFileSync(`${hooksDir}/qemu.d/single-gpu/release/end/teardown.sh`, "", {
        mode: 0o755,
      });
      const before = treeOf(hooksDir);
      const hooks = ["--hooks-dir", `${hooksDir}/qemu.d`];
      await installHook(`${hooksDir}/qemu.d`, `${dir}/state`, "--sysfs", tree.dir);
      const status = await runCli(["hook", "status", ...hooks]);
      assertEquals(status.code, 0, status.stdout);

      const bus = (address: string) => `0x${address.slice(5, 7)}`;
      const id = (f: string) => Deno.readTextFileSync(`${tree.dir}/bus/pci/devices/${gpu}/${f}`);
      const [vendor, device, klass] = ["vendor", "device", "class"].map((f) =>
        id(f).trim().slice(2)
      );
      const xml = domainXml("single-gpu", [], [
        `<passthrough:device address="${gpu}" vendor="${vendor}" device="${device}" class="${klass}" rule="gpu"/>`,
      ]).replace(
        "<devices>",
        `<devices><hostdev mode='subsystem' type='pci' managed='no'><source><address ` +
          `domain='0x0000' bus='${bus(gpu)}' slot='0x00' function='0x0'/></source></hostdev>`,
      );
      await Deno.writeTextFile(`${dir}/single-gpu.xml`, xml);
      await using daemon = await startLibvirtd({ hooksDir, virtlogd: true });
      assertEquals((await virsh(daemon.uri, "define", `${dir}/single-gpu.xml`)).code, 0);
      try {
        const bound = await virsh(daemon.uri, "start", "single-gpu");
        assertMatch(
          bound.out,
          /refusing to start "single-gpu": hostdev 0000:0c:00\.0 .*console-vga.*; only "allow_host_critical: true" on rule "gpu" \(then passthrough apply\) lets it start/,
        );
        Deno.chmodSync(teardown, 0o755);
        const freed = await virsh(daemon.uri, "start", "single-gpu");
        console.log(`$ virsh start single-gpu\n${freed.out.trim()}`);
        // The start fails later, in libvirt, for lack of the device: not in the hook.
        assertEquals(freed.code, 1, freed.out);
        assert.doesNotMatch(freed.out, /Hook script execution failed|passthrough guard/);
      } finally {
        await virsh(daemon.uri, "undefine", "single-gpu");
      }
      Deno.chmodSync(teardown, 0o644);
      const remove = await runCli(["hook", "remove", ...hooks]);
      assertEquals(remove.code, 0, remove.stderr);
      assertEquals(treeOf(hooksDir), before);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "after apply on a real libvirtd, the hook lets virsh start past while the captured host " +
    "is as applied, and refuses it, naming the VM, the device and the fix, once the card is " +
    "replaced or gone or its IOMMU group holds a device the host needs" +
    (daemonUnavailable() === null ? "" : ` (skipped: ${daemonUnavailable()})`),
  ignore: daemonUnavailable() !== null,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-applied-" });
    const [hooksDir, state, tree] = [`${dir}/hooks`, `${dir}/state`, `${dir}/tree`];
    const applied = loadFixtureHost("x570-aorus-pro-wifi");
    // The host as it stands now, in the tree the hook reads: rebuilt whole, as a reboot would.
    const hostNow = (change: (host: HostDescription) => void = () => {}) => {
      const host = structuredClone(applied);
      change(host);
      Deno.removeSync(tree, { recursive: true });
      Deno.mkdirSync(tree);
      buildHostTree(host, tree);
    };
    const device = (host: HostDescription, bdf: string) => host.devices.find((d) => d.bdf === bdf)!;
    const vm = `guard-applied-${crypto.randomUUID().slice(0, 8)}`;
    try {
      Deno.mkdirSync(tree, { recursive: true });
      hostNow();
      await installHook(`${hooksDir}/qemu.d`, state, "--sysfs", tree);
      await using daemon = await startLibvirtd({ hooksDir, virtlogd: true });
      await Deno.writeTextFile(`${dir}/${vm}.xml`, domainXml(vm, [], []));
      assertEquals((await virsh(daemon.uri, "define", `${dir}/${vm}.xml`)).code, 0);
      try {
        await Deno.writeTextFile(
          `${dir}/config.yaml`,
          `version: 1\nvms:\n  ${vm}:\n    devices:\n` +
            `      - { name: gpu, match: { vendor_device_id: "10de:1b06" } }\n`,
        );
        const apply = await applyYes(`${dir}/config.yaml`, tree, daemon.uri, state);
        assertEquals(apply.code, 0, apply.stderr);
        const start = async () => {
          const run = await virsh(daemon.uri, "start", vm);
          console.log(`$ virsh start ${vm}\n${run.out.trim()}`);
          assertEquals(run.code, 1, run.out);
          return run.out;
        };
        // The start fails later, in libvirt, for lack of VFIO: not in the hook.
        const passes = async () =>
          assert.doesNotMatch(await start(), /Hook script execution failed|passthrough guard/);
        const refused = async (reason: string) =>
          assertMatch(
            await start(),
            new RegExp(
              `Hook script execution failed: .*passthrough guard: refusing to start "${vm}": ` +
                `${reason}.*; fix: .*passthrough plan --vm ${vm}`,
            ),
          );
        await t.step("as applied: passes", passes);
        await t.step("another card at the GPU's address: refused", async () => {
          hostNow((host) => device(host, "0000:0b:00.0").device = "0x2684");
          await refused(
            "hostdev 0000:0b:00.0 holds 10de:2684 \\(class 030000\\) now, not the recorded " +
              '10de:1b06 \\(class 030000\\) of rule "gpu"',
          );
        });
        await t.step("the card gone: refused", async () => {
          hostNow((host) =>
            host.devices = host.devices.filter((d) => !d.bdf.startsWith("0000:0b"))
          );
          await refused("hostdev 0000:0b:00.0 holds no device now, not the recorded 10de:1b06");
        });
        await t.step("its group merged with the root disk's controller: refused", async () => {
          hostNow((host) => {
            device(host, "0000:01:00.0").group = 30;
            host.host_use = [
              { address: "0000:01:00.0", reason: "mounted-filesystem", detail: "/ on nvme0n1p2" },
            ];
          });
          await refused(
            "hostdev 0000:0b:00.0's IOMMU group 30 also holds 0000:01:00.0, .*; the host needs " +
              "it: in use by the host \\(mounted-filesystem: / on nvme0n1p2\\)",
          );
        });
        await t.step("as applied again: passes", async () => {
          hostNow();
          await passes();
        });
      } finally {
        await virsh(daemon.uri, "undefine", vm);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "beside failing hooks of your own on a real libvirtd, virsh start shows the last failure, " +
    "the guard's over the qemu hook's and a later qemu.d script's over the guard's, whose " +
    "refusal is recorded all the same" +
    (daemonUnavailable() === null ? "" : ` (skipped: ${daemonUnavailable()})`),
  ignore: daemonUnavailable() !== null,
  async fn() {
    const host = loadFixtureHost("x570-aorus-pro-wifi");
    const gpu = "0000:0c:00.0";
    host.host_use = [{ address: gpu, reason: "console-vga", detail: "boot_vga=1 with fbcon" }];
    await using tree = await tempHostTree(host);
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-order-" });
    try {
      const hooksDir = `${dir}/hooks`;
      const state = `${dir}/state`;
      await installHook(`${hooksDir}/qemu.d`, state, "--sysfs", tree.dir);
      // Hooks of the user's that fail at prepare begin: libvirt runs qemu first, then qemu.d's
      // executables in name order, every one even after another failed.
      const failing = (path: string) =>
        Deno.writeTextFileSync(
          path,
          `#!/bin/sh\n[ "$2" = prepare ] || exit 0\necho "${
            path.slice(hooksDir.length)
          } failed" >&2\nexit 1\n`,
          { mode: 0o755 },
        );
      failing(`${hooksDir}/qemu`);
      const vm = `guard-order-${crypto.randomUUID().slice(0, 8)}`;
      const xml = domainXml(vm, [gpu], []);
      await Deno.writeTextFile(`${dir}/${vm}.xml`, xml);
      {
        await using daemon = await startLibvirtd({ hooksDir, virtlogd: true });
        assertEquals((await virsh(daemon.uri, "define", `${dir}/${vm}.xml`)).code, 0);
        const start = await startOnce(daemon.uri, vm);
        assertEquals(start.code, 1, start.out);
        assertMatch(start.out, new RegExp(`passthrough guard: refusing to start "${vm}"`));
        assert.doesNotMatch(start.out, /\/qemu failed/);
      }
      failing(`${hooksDir}/qemu.d/90-after`);
      {
        // Seen by a daemon started after it.
        await using daemon = await startLibvirtd({ hooksDir, virtlogd: true });
        assertEquals((await virsh(daemon.uri, "define", `${dir}/${vm}.xml`)).code, 0);
        const start = await startOnce(daemon.uri, vm);
        assertEquals(start.code, 1, start.out);
        assertMatch(start.out, /Hook script execution failed: .*\/qemu\.d\/90-after failed/);
        assert.doesNotMatch(start.out, /passthrough guard/);
        // Not shown, but recorded: the next plan shows it as guard-refused.
        const [record] = readRefusalRecords(state).filter((r) => r.vm === vm);
        assertEquals(record?.refusals.map((r) => [r.address, r.kind]), [[gpu, "host-needs"]]);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "the installed hook refuses a device the host needs on each way libvirt starts a VM, " +
    "and libvirt runs no hook for a hot-plug" + (skip === null ? "" : ` (skipped: ${skip})`),
  ignore: skip !== null,
  async fn(t) {
    const nic = liveHost().defaultRoute;
    if (nic === null) return console.log("skipped: no NIC carries a default route here");
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-paths-" });
    const hooksDir = `${dir}/hooks`;
    const stateDir = `${dir}/state`;
    const calls = `${dir}/calls`;
    try {
      await installHook(`${hooksDir}/qemu.d`, stateDir);
      // Sorts before the guard and records each call libvirt makes.
      Deno.writeTextFileSync(
        `${hooksDir}/qemu.d/10-record`,
        `#!/bin/sh\ncat >/dev/null\necho "$1 $2 $3" >> ${calls}\n`,
        { mode: 0o755 },
      );
      const takeCalls = () => {
        const text = (() => {
          try {
            return Deno.readTextFileSync(calls);
          } catch {
            return "";
          }
        })();
        Deno.writeTextFileSync(calls, "");
        return text.trim().split("\n").filter((l) => l !== "");
      };
      const id = crypto.randomUUID().slice(0, 8);
      // No <metadata>: a hostdev passthrough did not write, which the host-needs check still judges.
      const bare = (name: string, addresses: string[]) =>
        domainXml(name, addresses, []).replace(/<metadata>[^]*<\/metadata>/, "");
      const refusedByGuard = (vm: string, out: string) =>
        assertMatch(
          out,
          new RegExp(
            `Hook script execution failed: .*refusing to start "${vm}": hostdev ${nic} .*` +
              "the host needs it: in use by the host \\(default-route: ",
          ),
        );
      const withNic = `guard-nic-${id}`;
      const plain = `guard-plain-${id}`;
      await using daemon = await startLibvirtd({ hooksDir, virtlogd: true });
      for (const [name, addresses] of [[withNic, [nic]], [plain, []]] as const) {
        await Deno.writeTextFile(`${dir}/${name}.xml`, bare(name, [...addresses]));
        assertEquals((await virsh(daemon.uri, "define", `${dir}/${name}.xml`)).code, 0);
      }

      await t.step("virsh start --paused: refused", async () => {
        const start = await virsh(daemon.uri, "start", "--paused", withNic);
        refusedByGuard(withNic, start.out);
      });

      await t.step("virsh create of a transient domain without metadata: refused", async () => {
        const name = `guard-transient-${id}`;
        await Deno.writeTextFile(`${dir}/${name}.xml`, bare(name, [nic]));
        const create = await virsh(daemon.uri, "create", `${dir}/${name}.xml`);
        refusedByGuard(name, create.out);
      });

      await t.step({
        name: "a snapshot revert that starts a definition holding the NIC: refused",
        // libvirt's QEMU driver reverts through qemu-img (Debian package qemu-utils).
        ignore: (() => {
          try {
            return !Deno.statSync("/usr/bin/qemu-img").isFile;
          } catch {
            return true;
          }
        })(),
        async fn() {
          const uuid = (await virsh(daemon.uri, "domuuid", plain)).out.trim();
          const snapshot = bare(plain, [nic]).replace("</name>", `</name><uuid>${uuid}</uuid>`);
          await Deno.writeTextFile(
            `${dir}/snapshot.xml`,
            `<domainsnapshot><name>before</name><state>shutoff</state>` +
              `<creationTime>1</creationTime>${snapshot}</domainsnapshot>`,
          );
          const redefine = await virsh(
            daemon.uri,
            "snapshot-create",
            plain,
            `${dir}/snapshot.xml`,
            "--redefine",
          );
          assertEquals(redefine.code, 0, redefine.out);
          const revert = await virsh(daemon.uri, "snapshot-revert", plain, "before", "--running");
          refusedByGuard(plain, revert.out);
          await virsh(daemon.uri, "snapshot-delete", plain, "before", "--metadata");
          // The revert made the snapshot's definition the VM's: back to none.
          await Deno.writeTextFile(
            `${dir}/${plain}.xml`,
            bare(plain, []).replace("</name>", `</name><uuid>${uuid}</uuid>`),
          );
          assertEquals((await virsh(daemon.uri, "define", `${dir}/${plain}.xml`)).code, 0);
        },
      });

      await t.step("a restore and a managed save's start run prepare begin", async () => {
        assertEquals((await virsh(daemon.uri, "start", plain)).code, 0);
        assertEquals((await virsh(daemon.uri, "save", plain, `${dir}/saved`)).code, 0);
        takeCalls();
        const restore = await virsh(daemon.uri, "restore", `${dir}/saved`);
        assertEquals(restore.code, 0, restore.out);
        assertEquals(takeCalls().slice(0, 2), [`${plain} restore begin`, `${plain} prepare begin`]);
        assertEquals((await virsh(daemon.uri, "managedsave", plain)).code, 0);
        takeCalls();
        assertEquals((await virsh(daemon.uri, "start", plain)).code, 0);
        assertEquals(takeCalls().slice(0, 2), [`${plain} restore begin`, `${plain} prepare begin`]);
      });

      await t.step("a hot-plug into the running guest runs no hook", async () => {
        const [domain, bus, slot, fn] = nic.split(/[:.]/);
        await Deno.writeTextFile(
          `${dir}/hostdev.xml`,
          `<hostdev mode='subsystem' type='pci' managed='no'><source><address domain='0x${domain}' ` +
            `bus='0x${bus}' slot='0x${slot}' function='0x${fn}'/></source></hostdev>`,
        );
        takeCalls();
        const attach = await virsh(
          daemon.uri,
          "attach-device",
          plain,
          `${dir}/hostdev.xml`,
          "--live",
        );
        console.log(`$ virsh attach-device ${plain} hostdev.xml --live\n${attach.out.trim()}`);
        // Fails in libvirt for lack of VFIO here; with it, the NIC would leave the host.
        assertEquals(attach.code, 1, attach.out);
        assert.doesNotMatch(attach.out, /Hook script execution failed|passthrough guard/);
        assertEquals(takeCalls(), []);
        assertEquals((await virsh(daemon.uri, "destroy", plain)).code, 0);
      });

      await t.step({
        name: "autostart as the daemon starts: refused, and the refusal recorded",
        async fn() {
          assertEquals((await virsh(daemon.uri, "autostart", withNic)).code, 0);
          Deno.kill(daemon.pid, "SIGTERM");
          while (processAlive(daemon.pid)) await new Promise((r) => setTimeout(r, 50));
          // libvirt autostarts once per boot, marked in its private /run/libvirt/qemu.
          await Deno.remove(`${daemon.dir}/state-0/qemu/autostarted`);
          takeCalls();
          await daemon.restart();
          for (let i = 0; i < 100 && !takeCalls().includes(`${withNic} release end`); i++) {
            await new Promise((r) => setTimeout(r, 100));
          }
          const state = await virsh(daemon.uri, "domstate", withNic);
          assertEquals(state.out.trim(), "shut off");
          const records = readRefusalRecords(stateDir).filter((r) => r.vm === withNic);
          assertEquals(records.map((r) => r.refusals.map((x) => x.kind)), [["host-needs"]]);
        },
      });
      await virsh(daemon.uri, "undefine", withNic);
      await virsh(daemon.uri, "undefine", plain, "--managed-save");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a record whose rule name was edited in the domain XML does not borrow that rule's " +
    "allow_host_critical for a device the host needs" +
    (libvirtdUnavailable() === null ? "" : ` (skipped: ${libvirtdUnavailable()})`),
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    // The host's root is on the NVMe 01:00.0; rule "sata" holds the ASMedia controller 04:00.0
    // with allow_host_critical. Someone with virsh edit rights adds the NVMe under rule "sata".
    const host = loadFixtureHost("x570-aorus-pro-wifi");
    host.host_use = [
      { address: "0000:01:00.0", reason: "mounted-filesystem", detail: "/ on nvme0n1p2" },
    ];
    await using tree = await tempHostTree(host);
    const dir = await Deno.makeTempDir({ prefix: "passthrough-hook-forged-" });
    const hooksDir = `${dir}/hooks`;
    const stateDir = `${dir}/state`;
    const vm = `guard-forged-${crypto.randomUUID().slice(0, 8)}`;
    try {
      await installHook(`${hooksDir}/qemu.d`, stateDir, "--sysfs", tree.dir);
      await using daemon = await startLibvirtd({ hooksDir, virtlogd: true });
      await Deno.writeTextFile(`${dir}/${vm}.xml`, domainXml(vm, [], []));
      assertEquals((await virsh(daemon.uri, "define", `${dir}/${vm}.xml`)).code, 0);
      await Deno.writeTextFile(
        `${dir}/config.yaml`,
        `version: 1\nvms:\n  ${vm}:\n    devices:\n      - name: sata\n` +
          `        match: { vendor_device_id: "1b21:0612" }\n        allow_host_critical: true\n`,
      );
      const applied = await applyYes(`${dir}/config.yaml`, tree.dir, daemon.uri, stateDir);
      assertEquals(applied.code, 0, applied.stderr + applied.stdout);
      // The hook obeys only policies recorded over qemu:///system, which this private daemon
      // stands for: the file names it, as an apply over the system daemon writes it.
      const policies = readPolicyFile(stateDir).file!;
      recordPolicies(stateDir, { ...policies, uri: "qemu:///system" });
      const nvme = { vendorId: "1cc1", deviceId: "5350", classCode: "010800" };
      const dumped = await virsh(daemon.uri, "dumpxml", "--inactive", vm);
      assertEquals(dumped.code, 0, dumped.out);
      const forged = dumped.out
        .replace(
          "</passthrough:hostdevs>",
          `${record("0000:01:00.0", nvme, "sata")}</passthrough:hostdevs>`,
        )
        .replace(
          "</devices>",
          `<hostdev mode='subsystem' type='pci' managed='no'><source><address ${
            libvirtAddress("0000:01:00.0")
          }/></source></hostdev></devices>`,
        );
      assertMatch(forged, /rule="sata"[^]*rule="sata"/);
      await Deno.writeTextFile(`${dir}/forged.xml`, forged);
      const defined = await virsh(daemon.uri, "define", `${dir}/forged.xml`);
      assertEquals(defined.code, 0, defined.out);
      const start = await startOnce(daemon.uri, vm);
      assertEquals(start.code, 1, start.out);
      assertMatch(
        start.out,
        new RegExp(
          `Hook script execution failed: .*refusing to start "${vm}": hostdev 0000:01:00\\.0 ` +
            "holds 1cc1:5350 .*the host needs it: in use by the host \\(mounted-filesystem: " +
            `/ on nvme0n1p2\\); rule "sata"'s allow_host_critical does not count here: ` +
            "passthrough apply recorded no such device under it at 0000:01:00\\.0 for this VM",
        ),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
