// doctor over real files: sysfs-, proc- and modules-shaped directories built per case, and the
// real libvirt test driver for the libvirt probe.
import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { runCli } from "../helpers/cli.ts";
import { livePciMissing } from "../helpers/hosts.ts";
import { type DoctorFinding, type DoctorOptions, runDoctor } from "../../lib/host/doctor.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import type { HostTopology } from "../../lib/host/types.ts";
import { libvirtProbe, renderFindings } from "../../cli/doctor.ts";
import type { HookDoctorFacts } from "../../lib/host/doctor.ts";
import {
  HOOK_FORMAT,
  inspectHook,
  installHook,
  renderHookScript,
} from "../../lib/guard/hook_file.ts";

const RELEASE = "6.1.0-test-amd64";

function host(overrides: Partial<HostTopology> = {}): HostTopology {
  const device = {
    address: "0000:00:00.0",
    vendorId: "8086",
    deviceId: "3e30",
    subsystemVendorId: null,
    subsystemDeviceId: null,
    classCode: "060000",
    revision: null,
    vendorName: null,
    deviceName: null,
    className: null,
    driver: null,
    modules: [],
    iommuGroup: 0,
    numaNode: null,
    physicalSlot: null,
    isBridge: false,
    physfn: null,
    virtfns: [],
    bootVga: null,
    flr: null,
    serial: null,
  };
  return {
    source: "/sys",
    iommu: "enabled",
    devices: [device],
    groups: [{ group: 0, devices: [device] }],
    groupInconsistencies: [],
    kernelCmdline: "BOOT_IMAGE=/vmlinuz intel_iommu=on",
    hostUse: [],
    ...overrides,
  };
}

/** Builds a fake root with sys/, proc/ and lib/modules/ holding the given files. */
async function withRoot(
  files: Record<string, string>,
  fn: (options: Omit<DoctorOptions, "host">) => void,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-doctor-" });
  try {
    Deno.mkdirSync(`${dir}/sys`, { recursive: true });
    Deno.mkdirSync(`${dir}/proc/sys/kernel`, { recursive: true });
    Deno.writeTextFileSync(`${dir}/proc/sys/kernel/osrelease`, `${RELEASE}\n`);
    for (const [path, text] of Object.entries(files)) {
      const full = `${dir}/${path}`;
      Deno.mkdirSync(full.slice(0, full.lastIndexOf("/")), { recursive: true });
      if (path.endsWith("/")) continue;
      Deno.writeTextFileSync(full, text);
    }
    fn({
      reader: denoFsReader(),
      live: true,
      sysRoot: `${dir}/sys`,
      procRoot: `${dir}/proc`,
      modulesRoot: `${dir}/lib/modules`,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function find(findings: DoctorFinding[], check: string): DoctorFinding {
  const finding = findings.find((f) => f.check === check);
  if (finding === undefined) throw new Error(`no ${check} finding`);
  return finding;
}

Deno.test("runDoctor() passes a host with VT-d interrupt remapping and vfio-pci loaded", async () => {
  await withRoot({
    "sys/class/iommu/dmar0/intel-iommu/ecap": "f020df\n",
    "sys/class/iommu/dmar1/intel-iommu/ecap": "f020df\n",
    "sys/bus/pci/drivers/vfio-pci/": "",
  }, (options) => {
    const findings = runDoctor({ ...options, host: host() });
    assertEquals(findings.map((f) => [f.check, f.status]), [
      ["iommu", "ok"],
      ["interrupt-remapping", "ok"],
      ["vfio-pci", "ok"],
      ["acs-override", "ok"],
    ]);
    assertEquals(findings.every((f) => f.hint === null), true);
  });
});

Deno.test("runDoctor() warns about a VT-d unit without the interrupt remapping bit", async () => {
  await withRoot({
    "sys/class/iommu/dmar0/intel-iommu/ecap": "f020d7\n",
    "sys/class/iommu/dmar1/intel-iommu/ecap": "f020df\n",
  }, (options) => {
    const finding = find(runDoctor({ ...options, host: host() }), "interrupt-remapping");
    assertEquals(finding.status, "warn");
    assertMatch(finding.summary, /dmar0$/);
  });
});

Deno.test("runDoctor() fails when the command line turns interrupt remapping off", async () => {
  await withRoot({ "sys/class/iommu/dmar0/intel-iommu/ecap": "f020df\n" }, (options) => {
    const findings = runDoctor({
      ...options,
      host: host({ kernelCmdline: "intel_iommu=on intremap=off" }),
    });
    const finding = find(findings, "interrupt-remapping");
    assertEquals(finding.status, "fail");
    assertMatch(finding.hint ?? "", /Remove "intremap=off"/);
  });
});

Deno.test("runDoctor() reads intremap= as the kernel's comma list: the last on or off in it counts", async () => {
  await withRoot({ "sys/class/iommu/dmar0/intel-iommu/ecap": "f020df\n" }, (options) => {
    const status = (kernelCmdline: string) =>
      find(runDoctor({ ...options, host: host({ kernelCmdline }) }), "interrupt-remapping");
    const off = status("intel_iommu=on intremap=nosid,off");
    assertEquals(off.status, "fail");
    assertMatch(off.hint ?? "", /Remove "intremap=nosid,off"/);
    assertEquals(status("intel_iommu=on intremap=off intremap=on").status, "ok");
    assertEquals(status("intel_iommu=on intremap=nosid").status, "ok");
    // The kernel gives the words after a bare -- to init.
    assertEquals(status("intel_iommu=on -- intremap=off").status, "ok");
  });
});

Deno.test("runDoctor() warns when unsafe interrupts are allowed", async () => {
  await withRoot({
    "sys/class/iommu/ivhd0/amd-iommu/cap": "0\n",
    "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts": "Y\n",
  }, (options) => {
    assertEquals(
      find(runDoctor({ ...options, host: host() }), "interrupt-remapping").status,
      "warn",
    );
  });
});

Deno.test("runDoctor() warns of unsafe interrupts given in modprobe.d or on the command line as the kernel reads them, before the module loads", async () => {
  await withRoot({
    "sys/class/iommu/ivhd0/amd-iommu/cap": "0\n",
    "etc/modprobe.d/iommu_unsafe_interrupts.conf":
      "options vfio_iommu_type1 allow_unsafe_interrupts=1\n",
  }, (options) => {
    const modprobeDirs = [`${options.sysRoot}/../etc/modprobe.d`];
    const status = (kernelCmdline: string) =>
      find(
        runDoctor({ ...options, modprobeDirs, host: host({ kernelCmdline }) }),
        "interrupt-remapping",
      );
    const fromFile = status("quiet");
    assertEquals(fromFile.status, "warn");
    assertMatch(
      fromFile.summary,
      /\(allow_unsafe_interrupts=1 in .*iommu_unsafe_interrupts\.conf\)$/,
    );
    // The command line comes after modprobe.d: its value counts.
    assertEquals(status("vfio_iommu_type1.allow_unsafe_interrupts=0").status, "ok");
    assertEquals(
      find(
        runDoctor({
          ...options,
          modprobeDirs: [],
          host: host({ kernelCmdline: "vfio-iommu-type1.allow_unsafe_interrupts=on" }),
        }),
        "interrupt-remapping",
      ).status,
      "warn",
    );
  });
});

Deno.test("runDoctor() warns of unsafe interrupts given in modprobe.d with a dashed parameter name, which the kernel reads as the underscored one", async () => {
  await withRoot({
    "sys/class/iommu/ivhd0/amd-iommu/cap": "0\n",
    "etc/modprobe.d/unsafe.conf": "options vfio-iommu-type1 allow-unsafe-interrupts=1\n",
  }, (options) => {
    const modprobeDirs = [`${options.sysRoot}/../etc/modprobe.d`];
    const finding = find(
      runDoctor({ ...options, modprobeDirs, host: host({ kernelCmdline: "quiet" }) }),
      "interrupt-remapping",
    );
    assertEquals(finding.status, "warn");
  });
});

Deno.test("runDoctor() skips hidden modprobe.d files, as kmod does", async () => {
  await withRoot({
    "sys/class/iommu/ivhd0/amd-iommu/cap": "0\n",
    "etc/modprobe.d/.unsafe.conf": "options vfio_iommu_type1 allow_unsafe_interrupts=1\n",
  }, (options) => {
    const modprobeDirs = [`${options.sysRoot}/../etc/modprobe.d`];
    const finding = find(
      runDoctor({ ...options, modprobeDirs, host: host({ kernelCmdline: "quiet" }) }),
      "interrupt-remapping",
    );
    assertEquals(finding.status, "ok");
  });
});

Deno.test("runDoctor() with vfio_iommu_type1 built in counts neither modprobe.d options nor words after --", async () => {
  await withRoot({
    "sys/class/iommu/ivhd0/amd-iommu/cap": "0\n",
    "etc/modprobe.d/unsafe.conf": "options vfio_iommu_type1 allow_unsafe_interrupts=1\n",
    [`lib/modules/${RELEASE}/modules.builtin`]: "kernel/drivers/vfio/vfio_iommu_type1.ko\n",
  }, (options) => {
    const modprobeDirs = [`${options.sysRoot}/../etc/modprobe.d`];
    const status = (kernelCmdline: string) =>
      find(
        runDoctor({ ...options, modprobeDirs, host: host({ kernelCmdline }) }),
        "interrupt-remapping",
      ).status;
    assertEquals(status("quiet"), "ok");
    assertEquals(status("quiet -- vfio_iommu_type1.allow_unsafe_interrupts=1"), "ok");
    assertEquals(status("vfio_iommu_type1.allow_unsafe_interrupts=1 -- quiet"), "warn");
  });
});

Deno.test("runDoctor() accepts AMD-Vi units as interrupt remapping", async () => {
  await withRoot({ "sys/class/iommu/ivhd0/amd-iommu/cap": "0\n" }, (options) => {
    assertEquals(find(runDoctor({ ...options, host: host() }), "interrupt-remapping").status, "ok");
  });
});

Deno.test("runDoctor() finds vfio-pci as an installed module or built in, and fails without", async () => {
  await withRoot({
    [`lib/modules/${RELEASE}/kernel/drivers/vfio/pci/vfio-pci.ko.xz`]: "",
  }, (options) => {
    const finding = find(runDoctor({ ...options, host: host() }), "vfio-pci");
    assertEquals(finding.status, "ok");
    assertMatch(finding.summary, /vfio-pci\.ko\.xz/);
  });
  await withRoot({
    [`lib/modules/${RELEASE}/modules.builtin`]:
      "kernel/drivers/vfio/vfio.ko\nkernel/drivers/vfio/pci/vfio-pci.ko\n",
  }, (options) => {
    assertMatch(find(runDoctor({ ...options, host: host() }), "vfio-pci").summary, /built into/);
  });
  await withRoot({}, (options) => {
    const finding = find(runDoctor({ ...options, host: host() }), "vfio-pci");
    assertEquals(finding.status, "fail");
    assertMatch(finding.summary, new RegExp(RELEASE));
  });
});

Deno.test("runDoctor() warns that an ACS override makes groups meaningless", async () => {
  await withRoot({}, (options) => {
    const override = find(
      runDoctor({
        ...options,
        host: host({ kernelCmdline: "pcie_acs_override=downstream,multifunction" }),
      }),
      "acs-override",
    );
    assertEquals(override.status, "warn");
    assertMatch(override.summary, /no longer mean isolation/);
    assertEquals(
      find(runDoctor({ ...options, host: host({ kernelCmdline: null }) }), "acs-override").status,
      "warn",
    );
  });
});

Deno.test("runDoctor() says where to find an unknown kernel command line, live or captured", async () => {
  // It sent both to 'passthrough snapshot', whose capture of a tree without a `cmdline` file has
  // none either, and which on a host without a readable /proc/cmdline records none.
  await withRoot({}, (options) => {
    const unknown = { kernelCmdline: null };
    const live = find(runDoctor({ ...options, host: host(unknown) }), "acs-override");
    assertEquals(live.status, "warn");
    assertMatch(live.hint ?? "", /"\/proc\/cmdline"/);
    assertEquals(live.hint?.includes("snapshot"), false, live.hint ?? "");
    const captured = find(
      runDoctor({ ...options, live: false, host: host({ ...unknown, source: "/tmp/tree" }) }),
      "acs-override",
    );
    assertEquals(captured.status, "warn");
    assertMatch(captured.hint ?? "", /"\/tmp\/tree\/cmdline"/);
    assertMatch(captured.hint ?? "", /'passthrough snapshot' on that host itself/);
  });
});

Deno.test("runDoctor() fails without IOMMU and names the AMD parameter on AMD hosts", async () => {
  await withRoot({}, (options) => {
    const amd = host({ iommu: "absent", groups: [] });
    amd.devices = amd.devices.map((d) => ({ ...d, vendorId: "1022", iommuGroup: null }));
    const finding = find(runDoctor({ ...options, host: amd }), "iommu");
    assertEquals(finding.status, "fail");
    assertMatch(finding.hint ?? "", /no amd_iommu=off or iommu=off/);
    // amd_iommu=on is no kernel option: it is never advised.
    assertMatch(finding.hint ?? "", /amd_iommu=on is no option of it/);
  });
});

Deno.test("runDoctor() gives AMD hints on an AMD CPU and Intel hints on an Intel one, from cpuinfo", async () => {
  // The host bridge says Intel; /proc/cpuinfo, read on a live host, wins.
  const off = host({ iommu: "absent", groups: [] });
  await withRoot({ "proc/cpuinfo": "processor\t: 0\nvendor_id\t: AuthenticAMD\n" }, (options) => {
    const hint = find(runDoctor({ ...options, host: off }), "iommu").hint ?? "";
    assertMatch(hint, /AMD-Vi/);
    assertMatch(hint, /amd_iommu/);
    assertEquals(/intel_iommu|VT-d/.test(hint), false, hint);
    const remap = find(runDoctor({ ...options, host: host() }), "interrupt-remapping");
    assertMatch(remap.hint ?? "", /dmesg \| grep -i AMD-Vi/);
  });
  await withRoot({ "proc/cpuinfo": "processor\t: 0\nvendor_id\t: GenuineIntel\n" }, (options) => {
    const hint = find(runDoctor({ ...options, host: off }), "iommu").hint ?? "";
    assertMatch(hint, /VT-d.*intel_iommu=on/);
    assertEquals(/amd_iommu|AMD-Vi/.test(hint), false, hint);
  });
});

Deno.test("runDoctor() on a captured tree leaves out what a tree cannot tell", async () => {
  await withRoot({}, (options) => {
    const findings = runDoctor({ ...options, live: false, host: host() });
    assertEquals(findings.map((f) => f.check), ["iommu", "acs-override"]);
  });
});

Deno.test("doctor warns of a session reached by ssh, tcp or socket= as the user's own libvirt", async () => {
  await withRoot({}, (options) => {
    for (
      const uri of [
        "qemu:///session",
        "qemu+ssh:///session",
        "qemu+tcp:///session",
        "qemu+unix:///session?socket=/run/user/1000/libvirt/virtqemud-sock",
      ]
    ) {
      const probe = () => ({ uri, version: "10.0.0" });
      const found = find(runDoctor({ ...options, host: host(), libvirtProbe: probe }), "libvirt");
      assertEquals(found.status, "warn", uri);
      assertMatch(
        found.summary,
        /this user's own libvirt, not the host's: the host's VMs are in qemu:\/\/\/system$/,
      );
      assertMatch(found.hint ?? "", /^pass --connect qemu:\/\/\/system /);
    }
    const far = () => ({ uri: "qemu+ssh://hv1/session", version: "10.0.0" });
    assertEquals(
      find(runDoctor({ ...options, host: host(), libvirtProbe: far }), "libvirt").status,
      "ok",
    );
  });
});

Deno.test("libvirtProbe() reaches the real libvirt test driver and reports a bad URI", async () => {
  await withRoot({}, (options) => {
    const ok = find(
      runDoctor({ ...options, host: host(), libvirtProbe: libvirtProbe("test:///default") }),
      "libvirt",
    );
    assertEquals(ok.status, "ok");
    assertMatch(ok.summary, /test:\/\/\/default \(libvirt \d+\.\d+\.\d+\)/);
    const bad = find(
      runDoctor({
        ...options,
        host: host(),
        libvirtProbe: libvirtProbe("test:///nonexistent/world.xml"),
      }),
      "libvirt",
    );
    assertEquals(bad.status, "fail");
    assertMatch(bad.summary, /^Cannot reach libvirt: /);
  });
});

Deno.test({
  name: "doctor on this machine's /sys runs with the documented permissions and checks the host",
  ignore: livePciMissing() !== null,
  async fn() {
    const hooks = await Deno.makeTempDir({ prefix: "passthrough-doctor-hooks-" });
    const run = await runCli(["doctor", "--json", "--no-libvirt", "--hooks-dir", hooks]);
    await Deno.remove(hooks, { recursive: true });
    assertOk(run.code === 0 || run.code === 1, run.stderr);
    const findings = JSON.parse(run.stdout) as DoctorFinding[];
    assertEquals(findings.map((f) => f.check), [
      "iommu",
      "interrupt-remapping",
      "vfio-pci",
      "acs-override",
      "hook",
    ]);
    assertEquals(run.code, findings.some((f) => f.status === "fail") ? 1 : 0);
  },
});

Deno.test("renderFindings() prints a hint under each finding that needs action", () => {
  const text = renderFindings([
    { check: "iommu", status: "ok", summary: "IOMMU on", hint: null },
    { check: "acs-override", status: "warn", summary: "ACS override is on", hint: "Remove it" },
  ], false);
  assertEquals(
    text,
    "ok    iommu         IOMMU on\nwarn  acs-override  ACS override is on\n                    -> Remove it\n",
  );
});

/** `hook install` for {@link hookFinding}'s hook: its temporary directory and state directory. */
const INSTALL_HERE = /^passthrough hook install --hooks-dir (\/\S+) --state-dir \1\/state$/;

/** The hook finding for a hook installed in a temporary directory, with the given facts. */
async function hookFinding(
  facts: Partial<Omit<HookDoctorFacts, "inspection">>,
  options: {
    version?: string;
    /** The program the hook runs, given the hook's directory. */
    program?: (dir: string) => string;
    change?: (dir: string) => void;
    /** What the daemon says of itself (virConnectGetLibVersion). */
    libvirtProbe?: () => { uri: string; version: string };
  } = {},
): Promise<DoctorFinding> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-doctor-hook-" });
  try {
    installHook(
      dir,
      renderHookScript({
        version: options.version ?? "0.1.0",
        deadline: 10,
        timeout: "/bin/sh",
        command: [options.program?.(dir) ?? "/bin/sh", "run"],
        env: {},
        stateDir: `${dir}/state`,
        sysfs: "/sys",
      }),
    );
    options.change?.(dir);
    const findings = runDoctor({
      host: host(),
      reader: denoFsReader(),
      live: false,
      hook: {
        inspection: inspectHook(dir),
        readByLibvirt: true,
        version: "0.1.0",
        daemons: [],
        reloads: [],
        selinux: null,
        ...facts,
      },
      ...(options.libvirtProbe === undefined ? {} : { libvirtProbe: options.libvirtProbe }),
    });
    return findings.find((f) => f.check === "hook")!;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("doctor's hook finding: installed and seen by a daemon started after it", async () => {
  const now = Date.now() / 1000;
  const finding = await hookFinding({
    daemons: [{ name: "virtqemud", pid: 321, started: now + 60 }],
  });
  assertEquals([finding.status, finding.hint], ["ok", null]);
  assertMatch(
    finding.summary,
    /installed by this version \(0\.1\.0\); virtqemud \(pid 321\) started after/,
  );
  assertMatch(
    finding.summary,
    /; guards starts only; a hot-plug \(virsh attach-device --live\) and virsh nodedev-detach run no hook$/,
  );
});

Deno.test("doctor's hook finding: a hook in a directory libvirt does not read guards nothing", async () => {
  const finding = await hookFinding({
    readByLibvirt: false,
    daemons: [{ name: "virtqemud", pid: 321, started: 0 }],
  });
  assertEquals(finding.status, "warn");
  assertMatch(
    finding.summary,
    /installed by this version \(0\.1\.0\); libvirt's system daemon does not run hooks from \S+, so it guards no start there$/,
  );
  // The command keeps the hook's own state directory, and leaves its directory out.
  assertMatch(
    finding.hint!,
    /^passthrough hook install --state-dir \/\S+\/state \(its default --hooks-dir is the one libvirt reads\)$/,
  );
});

Deno.test("doctor's hook finding: a libvirt older than 6.5, which reads no qemu.d, runs no guard", async () => {
  // What the daemon says of itself (virConnectGetLibVersion): Ubuntu 20.04's, or RHEL 8.2's.
  const finding = (uri: string, version: string) =>
    hookFinding({}, { libvirtProbe: () => ({ uri, version }) });
  const old = await finding("qemu:///system", "6.0.0");
  assertEquals(old.status, "warn");
  assertMatch(
    old.summary,
    /; libvirt 6\.0\.0 runs no hooks from \S+ \(6\.5\.0 and later do\), so it guards no start$/,
  );
  assertEquals(old.hint, "upgrade libvirt to 6.5.0 or later");
  assertEquals((await finding("qemu:///system", "6.5.0")).status, "ok");
  // Another host's libvirt says nothing of this one's.
  assertEquals((await finding("qemu+ssh://far/system", "6.0.0")).status, "ok");
  // A user and no host is this host (libvirt's ssh goes to localhost): it said nothing of it.
  assertEquals((await finding("qemu+ssh://root@/system", "6.0.0")).status, "warn");
});

Deno.test("doctor's hook finding: a hook changed by hand, one another user can change, an interrupted install", async () => {
  const edited = await hookFinding({}, {
    change: (dir) => {
      const path = `${dir}/50-passthrough-guard`;
      Deno.writeTextFileSync(path, `${Deno.readTextFileSync(path)}exit 0\n`);
    },
  });
  assertEquals(edited.status, "fail");
  // Written by an older passthrough (no format line), whose text cannot be checked: it says so,
  // and fails as a hook changed by hand does.
  const older = await hookFinding({}, {
    change: (dir) => {
      const path = `${dir}/50-passthrough-guard`;
      Deno.writeTextFileSync(
        path,
        Deno.readTextFileSync(path).replace(/^# passthrough-hook-format: \d+\n/m, ""),
      );
    },
  });
  assertEquals(older.status, "fail");
  assertMatch(
    older.summary,
    new RegExp(
      `: written by an older passthrough \\(hook format 1, this one writes ${HOOK_FORMAT}\\) or changed by hand since: it may not check`,
    ),
  );
  // The command that writes this hook again: its directory and its state directory, not the
  // defaults (a bare "hook install" would write another hook, reading another state).
  assertMatch(edited.hint!, INSTALL_HERE);
  assertMatch(edited.summary, /changed since it was written: it may not check what it should/);
  const theirs = await hookFinding({}, { change: (dir) => Deno.chownSync(dir, 65534, 65534) });
  assertEquals(theirs.status, "fail");
  assertMatch(
    theirs.summary,
    /another user could change what it runs as root: .* belongs to uid 65534/,
  );
  // A mode's fix is its chmod (installing again alone is refused), then the install.
  const open = await hookFinding({}, { change: (dir) => Deno.chmodSync(dir, 0o777) });
  assertEquals(open.status, "fail");
  assertMatch(
    open.hint!,
    /^chmod o-w (\/\S+), then passthrough hook install --hooks-dir \1 --state-dir \1\/state$/,
  );
  assertMatch(
    theirs.hint!,
    /^install passthrough where only root can write \(\/opt\/passthrough\), then /,
  );
  const leftover = await hookFinding({}, {
    change: (dir) =>
      Deno.writeTextFileSync(`${dir}/.50-passthrough-guard.x.tmp`, "", { mode: 0o755 }),
  });
  assertEquals(leftover.status, "fail");
  assertMatch(
    leftover.hint!,
    /^passthrough hook install --hooks-dir (\S+) --state-dir \1\/state \(it removes them\)$/,
  );
  assertMatch(leftover.summary, /\.50-passthrough-guard\.x\.tmp left from an interrupted install/);
  // A copy kept beside it, which libvirt runs too: removed by hand, never by passthrough.
  const copy = await hookFinding({}, {
    change: (dir) => {
      const path = `${dir}/50-passthrough-guard`;
      Deno.writeTextFileSync(`${path}.bak`, Deno.readTextFileSync(path), { mode: 0o755 });
    },
  });
  assertEquals(copy.status, "fail");
  assertMatch(
    copy.summary,
    /\/50-passthrough-guard\.bak is another passthrough hook or a link to one, which libvirt also runs at every start: /,
  );
  assertMatch(copy.hint!, /^rm \/\S+\/50-passthrough-guard\.bak$/);
  // Said with what else is wrong with the hook itself, not in its place: a copy's rm must not
  // hide that another user could change what the hook runs as root.
  const both = await hookFinding({}, {
    change: (dir) => {
      const path = `${dir}/50-passthrough-guard`;
      Deno.writeTextFileSync(`${path}.bak`, Deno.readTextFileSync(path), { mode: 0o755 });
      Deno.chmodSync(dir, 0o777);
    },
  });
  assertEquals(both.status, "fail");
  assertMatch(both.summary, /another user could change what it runs as root: .* \(mode 0777\)/);
  assertMatch(both.summary, /50-passthrough-guard\.bak is another passthrough hook/);
  assertMatch(
    both.hint!,
    /^chmod o-w (\/\S+), then passthrough hook install .*; rm \1\/50-passthrough-guard\.bak$/,
  );
  // A user's own hook under our name: the hint keeps it (hook install refuses to replace it).
  const foreign = await hookFinding({}, {
    change: (dir) => Deno.writeTextFileSync(`${dir}/50-passthrough-guard`, "#!/bin/sh\nexit 0\n"),
  });
  assertEquals(foreign.status, "warn");
  assertMatch(foreign.summary, /\/50-passthrough-guard is not a passthrough hook$/);
  assertMatch(
    foreign.hint!,
    /^rename it \(libvirt runs every executable in (\/\S+): mv \1\/50-passthrough-guard \1\/50-own-hook\) or move it out of \1, then passthrough hook install --hooks-dir \1$/,
  );
  // Ours, written by a passthrough whose settings have another shape: install replaces it.
  const other = await hookFinding({}, {
    change: (dir) => {
      const path = `${dir}/50-passthrough-guard`;
      Deno.writeTextFileSync(path, Deno.readTextFileSync(path).replace(/"timeout":"[^"]*",/, ""));
    },
  });
  assertEquals(other.status, "fail");
  assertMatch(
    other.summary,
    /: written by another passthrough \(hook format \d+, this one writes \d+\), whose settings this one cannot read: it may not check what it should$/,
  );
  // With the hook's own state directory: the default would read another state.
  assertMatch(other.hint!, /^passthrough hook install --hooks-dir (\/\S+) --state-dir \1\/state$/);
});

Deno.test("doctor's hook finding: a daemon older than the hook needs a reload unless one is recorded", async () => {
  const old = { name: "libvirtd", pid: 77, started: Date.now() / 1000 - 3600 };
  const stale = await hookFinding({ daemons: [old] });
  assertEquals(stale.status, "warn");
  assertEquals(
    stale.hint,
    "restart it so it runs the hook: systemctl restart libvirtd (its running guests keep " +
      "running); a reload (systemctl reload libvirtd, or kill -HUP 77) does too, but this check " +
      "cannot see one and keeps this warning",
  );
  // Followed: the restarted daemon started after the hook was written.
  const restarted = await hookFinding({
    daemons: [{ ...old, pid: 78, started: Date.now() / 1000 + 1 }],
  });
  assertEquals(restarted.status, "ok");
  assertMatch(restarted.summary, /libvirtd \(pid 78\) started after the hook was written/);
  const reloaded = await hookFinding({
    daemons: [old],
    reloads: [{ name: "libvirtd", pid: 77, time: new Date(Date.now() + 1000).toISOString() }],
  });
  assertEquals(reloaded.status, "ok");
  assertMatch(reloaded.summary, /libvirtd \(pid 77\) was reloaded at /);
  // A reload of an earlier daemon with another pid proves nothing about this one.
  const other = await hookFinding({
    daemons: [old],
    reloads: [{ name: "libvirtd", pid: 76, time: new Date(Date.now() + 1000).toISOString() }],
  });
  assertEquals(other.status, "warn");
});

Deno.test("doctor's hook finding: another version warns, a missing program fails", async () => {
  const older = await hookFinding({}, { version: "0.0.9" });
  assertEquals(older.status, "warn");
  assertMatch(older.hint!, INSTALL_HERE);
  assertMatch(older.summary, /written by passthrough 0\.0\.9, this is 0\.1\.0/);
  // Under the test's own directory: a fixed path such as /nonexistent may exist on a machine.
  const moved = await hookFinding({}, { program: (dir) => `${dir}/gone/deno` });
  assertEquals(moved.status, "fail");
  assertMatch(
    moved.summary,
    /it runs \/\S+\/gone\/deno, which is missing: every VM start would be refused/,
  );
});

Deno.test("doctor's hook finding: a bundle older than its sources warns, and setup.sh is the fix", async () => {
  const stale = await hookFinding({
    staleBundle: { bundle: "/opt/pt/dist/bin", setup: "/opt/pt/scripts/setup.sh", why: "older" },
  });
  assertEquals([stale.status, stale.hint], ["warn", "/opt/pt/scripts/setup.sh"]);
  assertMatch(
    stale.summary,
    /: it runs the bundle in \/opt\/pt\/dist\/bin, which is older than the sources beside it \(bin\/passthrough runs the sources meanwhile\): build it again with \/opt\/pt\/scripts\/setup\.sh; /,
  );
  assertEquals((await hookFinding({ staleBundle: null })).status, "ok");
});

Deno.test("doctor's hook finding: a state directory that became a symbolic link fails", async () => {
  const linked = await hookFinding({}, {
    change: (dir) => {
      Deno.mkdirSync(`${dir}/real`);
      Deno.symlinkSync(`${dir}/real`, `${dir}/state`);
    },
  });
  assertEquals(linked.status, "fail");
  assertMatch(
    linked.summary,
    /: its state directory (\S+)\/state is a symbolic link to \1\/real, which the check refuses: it reads no allowance and records no refusal; /,
  );
  assertMatch(linked.hint!, /^rm (\S+)\/state && mv \1\/real \1\/state$/);
  // One that leads nowhere: install makes the directory again.
  const dangling = await hookFinding({}, {
    change: (dir) => Deno.symlinkSync(`${dir}/gone`, `${dir}/state`),
  });
  assertMatch(dangling.summary, /\/state is a symbolic link that leads nowhere, /);
  assertMatch(
    dangling.hint!,
    /^rm (\S+)\/state, then passthrough hook install --hooks-dir \1 --state-dir \1\/state$/,
  );
});

Deno.test("doctor's hook finding: the SELinux label where SELinux is on", async () => {
  const wrong = await hookFinding({
    selinux: { enforcing: true, label: "system_u:object_r:etc_t:s0" },
  });
  assertEquals(wrong.status, "warn");
  assertMatch(wrong.summary, /SELinux label etc_t, not virt_hook_t$/);
  assertMatch(wrong.hint ?? "", /^restorecon -v .*50-passthrough-guard; /);
  const right = await hookFinding({
    selinux: { enforcing: true, label: "system_u:object_r:virt_hook_t:s0" },
  });
  assertEquals(right.status, "ok");
  assertMatch(right.summary, /; SELinux label virt_hook_t; guards starts only;/);
  const permissive = await hookFinding({ selinux: { enforcing: false, label: null } });
  assertEquals(permissive.status, "ok");
});
