// doctor over real files: sysfs-, proc- and modules-shaped directories built per case, and the
// real libvirt test driver for the libvirt probe.
import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";
import { runCli } from "../helpers/cli.ts";
import { livePciMissing } from "../helpers/hosts.ts";
import { type DoctorFinding, type DoctorOptions, runDoctor } from "../../lib/host/doctor.ts";
import { denoFsReader } from "../../lib/host/sysfs.ts";
import type { HostTopology } from "../../lib/host/types.ts";
import { libvirtProbe, renderFindings } from "../../cli/doctor.ts";

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

Deno.test("runDoctor() fails without IOMMU and names the AMD parameter on AMD hosts", async () => {
  await withRoot({}, (options) => {
    const amd = host({ iommu: "absent", groups: [] });
    amd.devices = amd.devices.map((d) => ({ ...d, vendorId: "1022", iommuGroup: null }));
    const finding = find(runDoctor({ ...options, host: amd }), "iommu");
    assertEquals(finding.status, "fail");
    assertMatch(finding.hint ?? "", /amd_iommu=on/);
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
    const run = await runCli(["doctor", "--json", "--no-libvirt"]);
    assertOk(run.code === 0 || run.code === 1, run.stderr);
    const findings = JSON.parse(run.stdout) as DoctorFinding[];
    assertEquals(findings.map((f) => f.check), [
      "iommu",
      "interrupt-remapping",
      "vfio-pci",
      "acs-override",
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
