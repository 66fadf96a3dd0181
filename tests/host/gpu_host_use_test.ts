/**
 * The processes holding a GPU's device nodes open (`gpuHolders`, `gpuInUse`), the start guard
 * refusing to take such a GPU (`gpu-in-use`), and `plan`'s warning (`host-driver-busy`). Built
 * sysfs trees with each GPU's `drm/` laid out as the kernel lays it out (card and render nodes,
 * a connector under its card), and a `/proc` of their own: processes' `fd` links as the kernel
 * shows them, and NVIDIA's `driver/nvidia/gpus/ADDRESS/information`.
 */

import { ROUTE_HEADER } from "../helpers/hosts.ts";
import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { guardStartOnTree } from "../helpers/guard_run.ts";
import { buildHostTree } from "../../lib/testing/host_tree.ts";
import { gpuHolders, gpuInUse, readHostUse } from "../../lib/host/sysfs_device.ts";
import { denoFsReader, type SysfsReader } from "../../lib/host/sysfs.ts";
import { libcSysfsReader } from "../../ffi/libc_fs.ts";
import { readHostFacts, unknownOnError } from "../../lib/host/preflight.ts";
import type { PciDevice } from "../../lib/host/types.ts";
import { hostNeedsAllowed } from "../../lib/guard/policy.ts";
import { recordPolicies } from "../../lib/guard/state.ts";

/** The host's own GPU (an AMD card), the GPU meant for a guest (NVIDIA), and its audio function. */
const HOST_GPU = "0000:0b:00.0";
const GUEST_GPU = "0000:0c:00.0";
const GUEST_AUDIO = "0000:0c:00.1";

/** The DRM nodes' device numbers, `[address, node, number]`. */
const NUMBERS: [string, string, string][] = [
  [HOST_GPU, "card0", "226:0"],
  [HOST_GPU, "renderD128", "226:128"],
  [GUEST_GPU, "card1", "226:1"],
  [GUEST_GPU, "renderD129", "226:129"],
];

/** Processes: PID, command and the paths their descriptors show. */
type Processes = [number, string, string[]][];

/**
 * A tree with the three functions: `card0`/`renderD128` on the host GPU, `card1`/`renderD129` on
 * the guest GPU (a connector `card1-HDMI-A-1` under its card), NVIDIA's minor 0 on the guest GPU when
 * `nvidia`, and `processes` in its `/proc`. `run` gets the tree's directory.
 */
async function withTree<T>(
  processes: Processes,
  nvidia: boolean,
  run: (dir: string) => T | Promise<T>,
): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-gpu-use-" });
  try {
    const fn = (bdf: string, cls: string, vendor: string, device: string, group: number) => ({
      bdf,
      group,
      class: cls,
      vendor,
      device,
      subsystem_vendor: null,
      subsystem_device: null,
      driver: vendor === "0x10de" ? "nvidia" : "amdgpu",
      revision: "0xa1",
    });
    buildHostTree({
      devices: [
        fn(HOST_GPU, "0x030000", "0x1002", "0x73bf", 1),
        fn(GUEST_GPU, "0x030000", "0x10de", "0x2684", 2),
        { ...fn(GUEST_AUDIO, "0x040300", "0x10de", "0x22ba", 2), driver: "snd_hda_intel" },
      ],
    }, dir);
    const drm = (address: string, node: string) =>
      Deno.mkdirSync(`${dir}/bus/pci/devices/${address}/drm/${node}`, { recursive: true });
    drm(HOST_GPU, "card0");
    drm(HOST_GPU, "renderD128");
    drm(GUEST_GPU, "card1");
    drm(GUEST_GPU, "card1/card1-HDMI-A-1");
    drm(GUEST_GPU, "renderD129");
    // The device numbers as the kernel gives them (`226:N`); no node of this machine has them.
    for (const [address, node, number] of NUMBERS) {
      Deno.writeTextFileSync(`${dir}/bus/pci/devices/${address}/drm/${node}/dev`, `${number}\n`);
    }
    // The control node kernels before 4.x made: no driver of today opens it.
    drm(GUEST_GPU, "controlD65");
    if (nvidia) {
      const info = `${dir}/proc/driver/nvidia/gpus/${GUEST_GPU}`;
      Deno.mkdirSync(info, { recursive: true });
      Deno.writeTextFileSync(
        `${info}/information`,
        `Model: \t\t NVIDIA GeForce RTX 4090\nBus Location: \t ${GUEST_GPU}\nDevice Minor: \t 0\nGPU Excluded:\t No\n`,
      );
    }
    Deno.mkdirSync(`${dir}/proc/self`, { recursive: true });
    Deno.writeTextFileSync(`${dir}/proc/self/mountinfo`, "");
    Deno.mkdirSync(`${dir}/proc/net`);
    Deno.writeTextFileSync(`${dir}/proc/net/route`, ROUTE_HEADER);
    for (const [pid, command, paths] of processes) {
      Deno.mkdirSync(`${dir}/proc/${pid}/fd`, { recursive: true });
      Deno.writeTextFileSync(`${dir}/proc/${pid}/comm`, `${command}\n`);
      paths.forEach((path, fd) => Deno.symlinkSync(path, `${dir}/proc/${pid}/fd/${fd}`));
    }
    return await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** `gpuInUse` of the tree for `devices`, as `[address, reason, detail]`. */
function gpuUse(processes: Processes, nvidia = false, devices = [HOST_GPU, GUEST_GPU]) {
  return withTree(
    processes,
    nvidia,
    (dir) =>
      gpuInUse(denoFsReader(), { sysRoot: dir, procRoot: `${dir}/proc` }, devices)
        .map((u) => [u.address, u.reason, u.detail]),
  );
}

const COMPOSITOR: Processes[number] = [
  812,
  "kwin_wayland",
  ["/dev/null", "/dev/dri/card0", "/dev/dri/renderD128", "socket:[4711]"],
];

Deno.test("gpuInUse(): a GPU whose DRM card or render node a process holds is gpu-in-use", async () => {
  assertEquals(await gpuUse([COMPOSITOR]), [
    [
      HOST_GPU,
      "gpu-in-use",
      "/dev/dri/card0, /dev/dri/renderD128 open in kwin_wayland (pid 812)",
    ],
  ]);
  // A Vulkan program opens every render node, the guest GPU's too; the lowest process ID is named.
  const game: Processes[number] = [4301, "steam", ["/dev/dri/renderD129", "/dev/dri/renderD128"]];
  const browser: Processes[number] = [5120, "firefox", ["/dev/dri/renderD129"]];
  assertEquals(await gpuUse([COMPOSITOR, browser, game]), [
    [
      HOST_GPU,
      "gpu-in-use",
      "/dev/dri/card0, /dev/dri/renderD128 open in kwin_wayland (pid 812) and 1 more process",
    ],
    [GUEST_GPU, "gpu-in-use", "/dev/dri/renderD129 open in steam (pid 4301) and 1 more process"],
  ]);
  // Only the devices asked about: the guard asks about those a VM takes.
  assertEquals(await gpuUse([COMPOSITOR, browser], false, [GUEST_GPU, GUEST_AUDIO]), [
    [GUEST_GPU, "gpu-in-use", "/dev/dri/renderD129 open in firefox (pid 5120)"],
  ]);
});

Deno.test("gpuInUse(): NVIDIA's /dev/nvidiaN counts by the minor its driver reports", async () => {
  const persistenced: Processes[number] = [977, "nvidia-persiste", [
    "/dev/nvidiactl",
    "/dev/nvidia0",
  ]];
  assertEquals(await gpuUse([persistenced], true), [
    [GUEST_GPU, "gpu-in-use", "/dev/nvidia0 open in nvidia-persiste (pid 977)"],
  ]);
  // The control and UVM nodes serve every NVIDIA GPU: holding only them holds none.
  const smi: Processes[number] = [990, "nvidia-smi", ["/dev/nvidiactl", "/dev/nvidia-uvm"]];
  assertEquals(await gpuUse([smi], true), []);
  // Without the driver's information (no NVIDIA driver), /dev/nvidia0 names no GPU.
  assertEquals(await gpuUse([persistenced], false), []);
  // Nor for a GPU not asked about.
  assertEquals(await gpuUse([persistenced], true, [HOST_GPU]), []);
});

Deno.test("gpuInUse(): GPUs nobody holds, connectors and other files are no use", async () => {
  const other: Processes[number] = [300, "sshd", [
    "/dev/null",
    "/dev/dri/card1-HDMI-A-1",
    "/dev/dri/card10",
    "/dev/dri/controlD65",
    "pipe:[88]",
  ]];
  assertEquals(await gpuUse([other]), []);
  // A process gone between the listing and the read (no fd directory) holds nothing.
  assertEquals(
    await withTree([COMPOSITOR], false, (dir) => {
      Deno.removeSync(`${dir}/proc/812/fd`, { recursive: true });
      return gpuInUse(denoFsReader(), { sysRoot: dir, procRoot: `${dir}/proc` }, [HOST_GPU]);
    }),
    [],
  );
  // A process whose descriptors this one may not read (an LSM, ptrace rules) is not seen; the
  // others still are.
  const hidden: Processes[number] = [2, "kthreadd", ["/dev/dri/card0"]];
  assertEquals(
    await withTree([hidden, COMPOSITOR], false, (dir) => {
      const base = denoFsReader();
      const reader = {
        ...base,
        listDir: (path: string) => {
          if (path === `${dir}/proc/2/fd`) throw new Deno.errors.PermissionDenied("EACCES");
          return base.listDir(path);
        },
      };
      return gpuInUse(reader, { sysRoot: dir, procRoot: `${dir}/proc` }, [HOST_GPU])
        .map((u) => u.detail);
    }),
    ["/dev/dri/card0, /dev/dri/renderD128 open in kwin_wayland (pid 812)"],
  );
  // A name with a newline stays on one line.
  const forged: Processes[number] = [666, "x\nrefused [gpu", ["/dev/dri/card0"]];
  assertEquals(await gpuUse([forged], false, [HOST_GPU]), [
    [HOST_GPU, "gpu-in-use", "/dev/dri/card0 open in x?refused [gpu (pid 666)"],
  ]);
  // Host use as `plan` reads it has none of it: `plan` warns instead (host-driver-busy).
  assertEquals(
    await withTree([COMPOSITOR], false, (dir) =>
      readHostUse(denoFsReader(), {
        root: dir,
        live: true,
        devices: [{ address: HOST_GPU } as PciDevice],
        procRoot: `${dir}/proc`,
      })),
    [],
  );
});

Deno.test("guard: taking a GPU a process holds open refuses the start (gpu-in-use)", async () => {
  const browser: Processes[number] = [5120, "firefox", ["/dev/dri/renderD129"]];
  const start = (processes: Processes) =>
    withTree(processes, false, (dir) => {
      Deno.mkdirSync(`${dir}/state`);
      const hostdevs = [GUEST_GPU, GUEST_AUDIO].map((a) => {
        const [, bus, slotFn] = a.split(":");
        const [slot, fn] = slotFn!.split(".");
        return `<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x${bus}' slot='0x${slot}' function='0x${fn}'/></source></hostdev>`;
      });
      const xml = `<domain type='kvm'><name>win11</name><devices>${
        hostdevs.join("")
      }</devices></domain>`;
      return guardStartOnTree({ vm: "win11", xml, dir, live: true });
    });
  const refused = await start([COMPOSITOR, browser]);
  assertEquals([refused.code, refused.refusals], [1, [["busy", GUEST_GPU]]]);
  assertMatch(
    refused.line,
    /; in use \(gpu-in-use: \/dev\/dri\/renderD129 open in firefox \(pid 5120\)\): detaching it now would hang the start or crash them; fix: close the programs holding it \(a desktop's: stop the display manager, systemctl stop display-manager\), then start again$/,
  );
  // A passing state, which a rule's allow_host_critical (meant for what the host always needs)
  // does not lift; a one-shot `guard allow` does, as for every refusal.
  const policy = { guard: "enforce" as const, rules: {}, allowHostCritical: ["gpu"] };
  assertEquals(hostNeedsAllowed(policy, "busy", "gpu"), false);
  // The host's own GPU in use stops nothing: this VM does not take it.
  const passes = await start([COMPOSITOR]);
  assertEquals([passes.code, passes.refusals], [0, []]);
});

Deno.test("guard: the console GPU a process holds open is refused as held open, whatever allow_host_critical says", async () => {
  // Single-GPU passthrough: the boot GPU drives the console (which allow_host_critical lets a
  // guest take) while Xorg holds it open (which nothing but closing Xorg lets it take).
  const start = async (allowHostCritical: string[]) => {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-gpu-console-" });
    try {
      buildHostTree({
        devices: [{
          bdf: GUEST_GPU,
          group: 2,
          class: "0x030000",
          vendor: "0x10de",
          device: "0x2684",
          subsystem_vendor: null,
          subsystem_device: null,
          driver: "nvidia",
          revision: "0xa1",
          boot_vga: true,
          console: true,
          drm: { card: 1, clients: [{ command: "Xorg", pid: 812 }] },
        }],
      }, dir);
      Deno.mkdirSync(`${dir}/proc/self`, { recursive: true });
      Deno.writeTextFileSync(`${dir}/proc/self/mountinfo`, "");
      Deno.mkdirSync(`${dir}/proc/net`, { recursive: true });
      Deno.writeTextFileSync(`${dir}/proc/net/route`, ROUTE_HEADER);
      Deno.mkdirSync(`${dir}/state`);
      recordPolicies(`${dir}/state`, {
        version: 1,
        config: "c.yaml",
        vms: { win11: { guard: "enforce", rules: {}, allowHostCritical } },
      });
      const xml = `<domain type='kvm'><name>win11</name><metadata>
  <pt:hostdevs xmlns:pt="urn:passthrough:hostdevs:1">
    <pt:device address="${GUEST_GPU}" vendor="10de" device="2684" class="030000" rule="gpu"/>
  </pt:hostdevs></metadata><devices><hostdev mode='subsystem' type='pci' managed='yes'><source>
  <address domain='0x0000' bus='0x0c' slot='0x00' function='0x0'/></source></hostdev>
</devices></domain>`;
      return await guardStartOnTree({ vm: "win11", xml, dir, live: true });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  };
  for (const allowed of [[], ["gpu"]]) {
    const refused = await start(allowed);
    assertEquals([refused.code, refused.refusals], [1, [["busy", GUEST_GPU]]], String(allowed));
    assertMatch(
      refused.line,
      /in use \(gpu-in-use: \/dev\/dri\/card1 open in Xorg \(pid 812\)\).*fix: close the programs holding it/,
    );
  }
});

/** This machine's `/dev/full` (1:7), which no process here keeps open, stands for a GPU's node. */
const FULL = "1:7";

/** The tree's guest render node given `/dev/full`'s number, as if it were that device. */
function renumber(dir: string): void {
  Deno.writeTextFileSync(`${dir}/bus/pci/devices/${GUEST_GPU}/drm/renderD129/dev`, `${FULL}\n`);
}

for (const [name, reader] of [["Deno", denoFsReader()], ["libc", libcSysfsReader()]] as const) {
  Deno.test(`gpuHolders() (${name} reader): a node under another name counts by its device number`, async () => {
    // Here `/dev/full` stands for the node as a container shows it under another name;
    // `/dev/null` (1:3) is another device, and no path outside `/dev/` (nor a terminal) is
    // stat'ed.
    const container: Processes[number] = [700, "ollama", ["/dev/null", "/dev/full"]];
    const elsewhere: Processes[number] = [701, "cat", [
      "/tmp/full",
      "/proc/self/fd/0",
      "/home/alice/dev/notes.txt",
      "/srv/root/dev/full",
      "/dev/pts/0",
    ]];
    const holders = (reader: SysfsReader) =>
      withTree([container, elsewhere], false, (dir) => {
        renumber(dir);
        const asked: string[] = [];
        const counting: SysfsReader = {
          ...reader,
          deviceNumber: (path) => (asked.push(path.slice(dir.length)), reader.deviceNumber!(path)),
        };
        const found = gpuHolders(counting, { sysRoot: dir, procRoot: `${dir}/proc` }, [
          HOST_GPU,
          GUEST_GPU,
        ]);
        return { found: [...found], asked };
      });
    assertEquals(await holders(reader), {
      found: [[GUEST_GPU, [{ pid: 700, command: "ollama", nodes: ["/dev/dri/renderD129"] }]]],
      // Only links under `/dev/` are stat'ed: never a file elsewhere, which could sit on a
      // network or FUSE mount whose server hangs.
      asked: ["/proc/700/fd/0", "/proc/700/fd/1"],
    });
    // A reader without device numbers knows nodes by their path alone.
    const { deviceNumber: _, ...pathsOnly } = reader;
    assertEquals((await holders(pathsOnly)).found, []);
  });
}

Deno.test("deviceNumber(): a character device's major:minor, links followed; null for the rest", () => {
  const dir = Deno.makeTempDirSync({ prefix: "passthrough-devnum-" });
  try {
    Deno.symlinkSync("/dev/full", `${dir}/gpu`);
    Deno.writeTextFileSync(`${dir}/file`, "");
    for (const reader of [denoFsReader(), libcSysfsReader()]) {
      assertEquals(
        ["/dev/null", `${dir}/gpu`, `${dir}/file`, dir, `${dir}/missing`].map((p) =>
          reader.deviceNumber!(p)
        ),
        ["1:3", FULL, null, null, null],
      );
    }
    // The pre-flight's reader (plan's host-driver-busy, doctor, snapshot) keeps it, and turns a
    // refusal into an unknown.
    assertEquals(unknownOnError(libcSysfsReader()).deviceNumber?.("/dev/full"), FULL);
    const refusing = unknownOnError({
      ...denoFsReader(),
      deviceNumber: () => {
        throw new Deno.errors.PermissionDenied("EACCES");
      },
    });
    assertEquals(refusing.deviceNumber?.("/dev/full"), null);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({
  name: "gpuHolders() on the live /proc: a container's node under another name, then deleted",
  ignore: Deno.uid() !== 0,
  async fn() {
    await withTree([], false, async (dir) => {
      renumber(dir);
      // A container: its own /dev (a tmpfs in a private mount namespace, unseen by this one),
      // where the device has another name, and also the host GPU's render node's path (as
      // --device /dev/dri/renderD129:/dev/dri/renderD128 gives it); the shell holds both open.
      const script = "mount -t tmpfs tmpfs /dev && mkdir /dev/dri && mknod /dev/gpu0 c 1 7 && " +
        "mknod /dev/dri/renderD128 c 1 7 && exec 3</dev/gpu0 4</dev/dri/renderD128 && " +
        "echo held && read step && rm /dev/gpu0 && echo deleted && { read step || true; }";
      const child = new Deno.Command("unshare", {
        args: ["-m", "--propagation", "private", "sh", "-c", script],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const input = child.stdin.getWriter();
      try {
        assertEquals((await lines.read()).value, "held\n");
        const link = () => Deno.readLinkSync(`/proc/${child.pid}/fd/3`);
        assertEquals(link(), "/dev/gpu0");
        // Only the GPU whose device it is: not the host GPU whose render node's path it shows.
        const holder = (reader: SysfsReader) => {
          const found = gpuHolders(reader, { sysRoot: dir, procRoot: "/proc" }, [
            HOST_GPU,
            GUEST_GPU,
          ]);
          assertEquals(found.get(HOST_GPU)?.find((h) => h.pid === child.pid), undefined);
          return found.get(GUEST_GPU)?.find((h) => h.pid === child.pid);
        };
        const expected = { pid: child.pid, command: "sh", nodes: ["/dev/dri/renderD129"] };
        assertEquals(holder(libcSysfsReader()), expected);
        assertEquals(holder(denoFsReader()), expected);
        // Deleted: the kernel shows "PATH (deleted)", and the open file is the same device.
        await input.write(new TextEncoder().encode("next\n"));
        assertEquals((await lines.read()).value, "deleted\n");
        assertEquals(link(), "/dev/gpu0 (deleted)");
        assertEquals(holder(libcSysfsReader()), expected);
        assertEquals(holder(denoFsReader()), expected);
      } finally {
        await input.close().catch(() => {});
        await lines.cancel().catch(() => {});
        const status = await child.status;
        const stderr = await new Response(child.stderr).text();
        assertEquals(status.code, 0, stderr);
      }
    });
  },
});

Deno.test("gpuHolders(): NVIDIA's node under another name counts by its number (195:minor)", async () => {
  // No NVIDIA driver here opens a 195:N node: a stand-in reader says what a stat of the
  // descriptor would (a container's /dev/nvidia-ctr0 as the GPU's minor 0).
  const processes: Processes = [[1200, "python3", ["/dev/nvidia-ctr0", "/dev/nvidia-ctr1"]]];
  const found = await withTree(processes, true, (dir) => {
    const numbers: Record<string, string> = {
      [`${dir}/proc/1200/fd/0`]: "195:0",
      [`${dir}/proc/1200/fd/1`]: "195:1",
    };
    const reader = { ...denoFsReader(), deviceNumber: (path: string) => numbers[path] ?? null };
    return [...gpuHolders(reader, { sysRoot: dir, procRoot: `${dir}/proc` }, [GUEST_GPU])];
  });
  assertEquals(found, [[GUEST_GPU, [{ pid: 1200, command: "python3", nodes: ["/dev/nvidia0"] }]]]);
});

Deno.test("gpuHolders(): NVIDIA's information is read for the GPUs its driver lists, not for every function", async () => {
  const persistenced: Processes[number] = [977, "nvidia-persiste", ["/dev/nvidia0"]];
  for (const nvidia of [false, true]) {
    const { found, reads } = await withTree([persistenced], nvidia, (dir) => {
      const reads: string[] = [];
      const inner = denoFsReader();
      const reader: SysfsReader = {
        ...inner,
        readText: (path) => {
          if (path.includes("/driver/nvidia/")) reads.push(path.slice(dir.length));
          return inner.readText(path);
        },
      };
      const roots = { sysRoot: dir, procRoot: `${dir}/proc` };
      const found = [...gpuHolders(reader, roots, [HOST_GPU, GUEST_GPU, GUEST_AUDIO])];
      return { found, reads };
    });
    const info = `/proc/driver/nvidia/gpus/${GUEST_GPU}/information`;
    assertEquals(reads, nvidia ? [info] : []);
    const held = [[GUEST_GPU, [{ pid: 977, command: "nvidia-persiste", nodes: ["/dev/nvidia0"] }]]];
    assertEquals(found, nvidia ? held : []);
  }
});

Deno.test("readHostFacts(): a /proc with no process lists no function's DRM nodes, and one with a process does", async () => {
  for (const processes of [[], [COMPOSITOR]] as Processes[]) {
    const { held, listed } = await withTree(processes, false, (dir) => {
      const listed: string[] = [];
      const inner = denoFsReader();
      const reader: SysfsReader = {
        ...inner,
        listDir: (path) => {
          if (path.endsWith("/drm")) listed.push(path.slice(dir.length));
          return inner.listDir(path);
        },
      };
      const facts = readHostFacts({ reader, sysRoot: dir, procRoot: `${dir}/proc` });
      const held = [HOST_GPU, GUEST_GPU].map((a) => facts.gpuHolders(a).map((h) => h.command));
      return { held, listed };
    });
    const drm = [HOST_GPU, GUEST_GPU, GUEST_AUDIO].map((a) => `/bus/pci/devices/${a}/drm`);
    assertEquals(listed.sort(), processes.length === 0 ? [] : drm);
    assertEquals(held, processes.length === 0 ? [[], []] : [["kwin_wayland"], []]);
  }
});
