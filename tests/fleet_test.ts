import { assertEquals, assertMatch, assertOk } from "./helpers/assert.ts";
import { parseConfig } from "../lib/config/config.ts";
import {
  configForHost,
  fleetFailed,
  hostError,
  runBounded,
  selectHosts,
  UnknownHostError,
} from "../lib/plan/fleet.ts";
import type { Plan } from "../lib/plan/types.ts";
import type { ApplyReport } from "../lib/apply/apply.ts";
import { buildHostTree, loadHostDescription } from "../lib/testing/host_tree.ts";
import { nodeDeviceWorldXml } from "../lib/testing/nodedev_world.ts";
import { main } from "../main.ts";
import type { CliIo } from "../cli/context.ts";
import { libvirtdUnavailable, startLibvirtd, undefineUnlessIsolated } from "./helpers/libvirtd.ts";
import { openLibvirtPort } from "../ffi/port.ts";
import { parseDomainXml } from "../lib/domain/domain_xml.ts";

const HOSTS = new URL("./fixtures/hosts/", import.meta.url);
const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Two real hosts: hv1 is the X570 board, hv2 the TRX40 one. */
const HV1 = "x570-aorus-pro-wifi";
const HV2 = "trx40-creator";

/** The same two VMs on both hosts: "gpu" is each host's own card, "nvme" whatever NVMe it has. */
function fleetYaml(hosts: Record<string, string>): string {
  const entries = Object.entries(hosts).map(([name, body]) => `  ${name}: ${body}`).join("\n");
  return `version: 1
hosts:
${entries}
vms:
  render:
    devices:
      - name: gpu
        host: hv1
        match: { vendor_device_id: "10de:1b06" }
      - name: gpu
        host: hv2
        match: { vendor_device_id: "10de:1b80" }
  store:
    devices:
      - name: nvme
        match: { class: nvme }
`;
}

/** In-process CLI io that records output and never reads a terminal. */
function captureIo(): CliIo & { stdout: () => string; stderr: () => string } {
  let out = "";
  let err = "";
  return {
    out: (text) => void (out += text),
    err: (text) => void (err += text),
    color: false,
    interactive: false,
    readLine: () => Promise.resolve(null),
    env: () => undefined,
    stdout: () => out,
    stderr: () => err,
  };
}

function testDomain(name: string): string {
  return `<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>${name}</name>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <test:runstate>5</test:runstate>
  </domain>`;
}

/** Writes a node-device world per host (with the two domains) and a config naming them. */
async function testDriverFleet(dir: string): Promise<string> {
  const hosts: Record<string, string> = {};
  for (const [name, file] of [["hv1", HV1], ["hv2", HV2]] as const) {
    const xml = nodeDeviceWorldXml(loadHostDescription(new URL(`${file}.json`, HOSTS)), {
      domains: [testDomain("render"), testDomain("store")],
    });
    await Deno.writeTextFile(`${dir}/${name}.xml`, xml);
    hosts[name] = `{ connect: "test://${dir}/${name}.xml", discovery: libvirt }`;
  }
  const config = `${dir}/fleet.yaml`;
  await Deno.writeTextFile(config, fleetYaml(hosts));
  return config;
}

interface FleetJsonHost {
  name: string;
  uri: string;
  plan: {
    vms: { name: string; changed: boolean; add: { address: string }[]; errors: unknown[] }[];
  } | null;
  report?: { vms: { vm: string; status: string; added: string[] }[]; ok: boolean } | null;
  error: { stage: string; name: string; message: string; code: number | null } | null;
}

const EXPECTED_ADDS = {
  hv1: { render: ["0000:0b:00.0", "0000:0b:00.1"], store: ["0000:01:00.0"] },
  hv2: { render: ["0000:21:00.0", "0000:21:00.1"], store: ["0000:4a:00.0"] },
};

Deno.test("configForHost() keeps the VMs and rules of one host", () => {
  const config = parseConfig(
    fleetYaml({ hv1: '{ connect: "test:///a" }', hv2: '{ connect: "test:///b" }' }),
    { file: "fleet.yaml" },
  );
  const hv1 = configForHost(config, "hv1");
  assertEquals(hv1.hosts, undefined);
  assertEquals(
    hv1.vms.map((vm) => [vm.name, vm.rules.map((r) => `${r.name}:${r.match.deviceId ?? "-"}`)]),
    [["render", ["gpu:1b06"]], ["store", ["nvme:-"]]],
  );
  assertEquals(configForHost(config, "hv2").vms[0]?.rules[0]?.match.deviceId, "1b80");
  assertEquals(selectHosts(config, ["hv2"]).map((h) => h.name), ["hv2"]);
  try {
    selectHosts(config, ["hv3"]);
    throw new Error("no error");
  } catch (error) {
    assertOk(error instanceof UnknownHostError);
    assertEquals([error.host, error.known], ["hv3", ["hv1", "hv2"]]);
  }
});

Deno.test("configForHost() drops VMs limited to other hosts", () => {
  const config = parseConfig(
    `version: 1
hosts: { a: { connect: "test:///a" }, b: { connect: "test:///b" } }
vms:
  only-a: { host: a, devices: [{ match: { class: vga } }] }
  both: { devices: [{ match: { class: usb }, hosts: [b] }] }
`,
    { file: "c.yaml" },
  );
  assertEquals(configForHost(config, "a").vms.map((vm) => [vm.name, vm.rules.length]), [
    ["only-a", 1],
    ["both", 0],
  ]);
  assertEquals(configForHost(config, "b").vms.map((vm) => [vm.name, vm.rules.length]), [
    ["both", 1],
  ]);
});

Deno.test("runBounded() never runs more than the limit and keeps item order", async () => {
  let running = 0;
  let peak = 0;
  const out = await runBounded(Array.from({ length: 9 }, (_, i) => i), {
    limit: 3,
    run: async (i) => {
      peak = Math.max(peak, ++running);
      await new Promise((r) => setTimeout(r, (9 - i) * 2));
      running--;
      return i * i;
    },
  });
  assertEquals(out, [0, 1, 4, 9, 16, 25, 36, 49, 64]);
  assertEquals(peak, 3);
});

// --parallel 1 runs in one worker while a timeout applies; with --host-timeout 0, in this thread.
for (
  const flags of [
    ["--parallel", "1", "--host-timeout", "0"],
    ["--parallel", "1"],
    ["--parallel", "4"],
  ]
) {
  Deno.test(
    `plan and apply over two test-driver worlds resolve each host's own cards (${flags.join(" ")})`,
    async () => {
      const dir = await Deno.makeTempDir({ prefix: "passthrough-fleet-" });
      try {
        const config = await testDriverFleet(dir);
        const planIo = captureIo();
        const planCode = await main(
          ["plan", "--json", "-f", config, ...flags],
          planIo,
        );
        assertEquals(planCode, 0, planIo.stderr());
        const planned = JSON.parse(planIo.stdout()) as { hosts: FleetJsonHost[] };
        assertEquals(planned.hosts.map((h) => [h.name, h.error]), [["hv1", null], ["hv2", null]]);
        for (const host of planned.hosts) {
          const expected = EXPECTED_ADDS[host.name as "hv1" | "hv2"];
          assertEquals(
            Object.fromEntries(host.plan!.vms.map((vm) => [vm.name, vm.add.map((a) => a.address)])),
            expected,
          );
        }

        const applyIo = captureIo();
        const code = await main(
          [
            "apply",
            "--yes",
            "--json",
            "-f",
            config,
            "--state-dir",
            `${dir}/state`,
            ...flags,
          ],
          applyIo,
        );
        assertEquals(code, 0, applyIo.stdout() + applyIo.stderr());
        const applied = JSON.parse(applyIo.stdout()) as { hosts: FleetJsonHost[] };
        for (const host of applied.hosts) {
          assertEquals(host.error, null);
          assertEquals(host.report!.ok, true);
          assertEquals(
            Object.fromEntries(host.report!.vms.map((vm) => [vm.vm, [vm.status, vm.added]])),
            Object.fromEntries(
              Object.entries(EXPECTED_ADDS[host.name as "hv1" | "hv2"]).map((
                [vm, added],
              ) => [vm, ["changed", added]]),
            ),
          );
        }
        // Backups are kept apart per host: the same VM name on two hosts never mixes.
        for (const host of ["hv1", "hv2"]) {
          const vms = [...Deno.readDirSync(`${dir}/state/hosts/${host}/backups`)].map((e) => e.name)
            .sort();
          assertEquals(vms, ["render", "store"]);
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}

Deno.test("plan --host limits the fleet and a host that cannot be reached is reported beside the others", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-fleet-" });
  try {
    const config = await testDriverFleet(dir);
    const text = await Deno.readTextFile(config);
    await Deno.writeTextFile(
      config,
      text.replace(
        "hosts:\n",
        `hosts:\n  gone: { connect: "test://${dir}/missing.xml", discovery: libvirt }\n`,
      ),
    );
    const io = captureIo();
    assertEquals(await main(["plan", "--json", "-f", config], io), 1);
    const result = JSON.parse(io.stdout()) as { hosts: FleetJsonHost[] };
    assertEquals(result.hosts.map((h) => h.name), ["gone", "hv1", "hv2"]);
    const gone = result.hosts[0]!;
    assertEquals([gone.plan, gone.error?.stage, gone.error?.name], [
      null,
      "discover",
      "LibvirtError",
    ]);
    assertMatch(gone.error!.message, /missing\.xml/);
    assertOk(result.hosts.slice(1).every((h) => h.error === null && h.plan !== null));

    const text2 = captureIo();
    assertEquals(await main(["plan", "-f", config, "--parallel", "2"], text2), 1);
    assertMatch(
      text2.stdout(),
      /=== host gone \(test:\/\/.*missing\.xml\) ===\n\s+FAILED to discover: /,
    );
    assertMatch(text2.stdout(), /=== host hv2 [^\n]*\n[\s\S]*VM render/);
    assertMatch(text2.stdout(), /3 hosts: 2 with changes, 0 with refusals, 1 failed/);

    const limited = captureIo();
    assertEquals(await main(["plan", "--json", "-f", config, "--host", "hv2"], limited), 0);
    assertEquals(
      (JSON.parse(limited.stdout()) as { hosts: FleetJsonHost[] }).hosts.map((h) => h.name),
      ["hv2"],
    );

    const wrong = captureIo();
    assertEquals(await main(["plan", "-f", config, "--host", "hv3"], wrong), 2);
    assertMatch(
      wrong.stderr(),
      /Host "hv3" is not declared: the config names "gone", "hv1", "hv2"/,
    );
    const connect = captureIo();
    assertEquals(await main(["plan", "-f", config, "--connect", "test:///default"], connect), 2);
    assertMatch(connect.stderr(), /--connect does not apply to a config with "hosts:"/);
    const parallel = captureIo();
    assertEquals(await main(["plan", "-f", config, "--parallel", "0"], parallel), 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a single-host config keeps the plain plan JSON", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-fleet-" });
  try {
    const xml = nodeDeviceWorldXml(loadHostDescription(new URL(`${HV1}.json`, HOSTS)), {
      domains: [testDomain("store")],
    });
    await Deno.writeTextFile(`${dir}/w.xml`, xml);
    buildHostTree(loadHostDescription(new URL(`${HV1}.json`, HOSTS)), `${dir}/sysfs`);
    await Deno.writeTextFile(
      `${dir}/c.yaml`,
      "version: 1\nvms:\n  store:\n    devices:\n      - match: { class: nvme }\n",
    );
    const io = captureIo();
    const code = await main(
      [
        "plan",
        "--json",
        "-f",
        `${dir}/c.yaml`,
        "--sysfs",
        `${dir}/sysfs`,
        "-c",
        `test://${dir}/w.xml`,
      ],
      io,
    );
    assertEquals(code, 0, io.stderr());
    const plan = JSON.parse(io.stdout()) as { hosts?: unknown; vms: { name: string }[] };
    assertEquals([plan.hosts, plan.vms.map((vm) => vm.name)], [undefined, ["store"]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The permission flags of `bin/passthrough` (what README documents), so workers prove enough. */
function documentedPermissions(): string[] {
  const wrapper = Deno.readTextFileSync(new URL("../bin/passthrough", import.meta.url));
  return [...wrapper.matchAll(/(--allow-[a-z-]+(?:=[^\s\\]+)?)/g)].map((m) => m[1]!);
}

/** Runs the real CLI in a child process with the documented permissions. */
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...documentedPermissions(), MAIN, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

function qemuDomain(name: string): string {
  return `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
</domain>`;
}

Deno.test({
  name: "apply over two real libvirtd daemons converges, and a stopped daemon fails only its host",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-fleet-" });
    await using hv1 = await startLibvirtd();
    await using hv2 = await startLibvirtd();
    const suffix = crypto.randomUUID().slice(0, 8);
    const render = `render-${suffix}`;
    const store = `store-${suffix}`;
    try {
      const hosts: Record<string, string> = {};
      for (const [name, daemon, file] of [["hv1", hv1, HV1], ["hv2", hv2, HV2]] as const) {
        buildHostTree(loadHostDescription(new URL(`${file}.json`, HOSTS)), `${dir}/${name}`);
        using port = openLibvirtPort(daemon.uri);
        port.define(qemuDomain(render));
        port.define(qemuDomain(store));
        // A relative sysfs path is read from the config file's folder.
        hosts[name] = `{ connect: "${daemon.uri}", discovery: sysfs, sysfs: ${name} }`;
      }
      const config = `${dir}/fleet.yaml`;
      await Deno.writeTextFile(
        config,
        fleetYaml(hosts).replaceAll("render:", `${render}:`).replaceAll("store:", `${store}:`),
      );
      const state = ["--state-dir", `${dir}/state`];

      const first = await cli(["apply", "--yes", "-f", config, ...state]);
      assertEquals(first.code, 0, first.stdout + first.stderr);
      assertMatch(first.stdout, /=== host hv1 [\s\S]*=== host hv2 /);
      assertMatch(first.stdout, /Hosts:\n\s+changed hv1\n\s+changed hv2/);
      for (const [name, daemon] of [["hv1", hv1], ["hv2", hv2]] as const) {
        using port = openLibvirtPort(daemon.uri);
        for (const [vm, want] of Object.entries(EXPECTED_ADDS[name])) {
          const got = parseDomainXml(port.getPersistentXml(`${vm}-${suffix}`)).hostdevs
            .map((h) => h.address).sort();
          assertEquals(got, want, `${name} ${vm}`);
        }
      }

      const again = await cli(["plan", "--json", "--detailed-exitcode", "-f", config]);
      assertEquals(again.code, 0, again.stdout + again.stderr);
      const replanned = JSON.parse(again.stdout) as { hosts: FleetJsonHost[] };
      assertEquals(
        replanned.hosts.map((h) => [h.name, h.error, h.plan!.vms.map((vm) => vm.changed)]),
        [["hv1", null, [false, false]], ["hv2", null, [false, false]]],
      );

      // hv2's daemon goes away, and the config now also gives the render VM the X570's audio
      // card: hv1 still applies, hv2 is reported as failed, the exit code says so.
      await hv2.stop();
      await Deno.writeTextFile(
        config,
        (await Deno.readTextFile(config)).replace(
          `    devices:\n      - name: gpu\n        host: hv1\n`,
          `    devices:\n      - name: audio\n        host: hv1\n        match: { vendor_device_id: "1022:1487" }\n      - name: gpu\n        host: hv1\n`,
        ),
      );
      const partial = await cli(["apply", "--yes", "--json", "-f", config, ...state]);
      assertEquals(partial.code, 1, partial.stdout + partial.stderr);
      const applied = JSON.parse(partial.stdout) as { hosts: FleetJsonHost[] };
      const [one, two] = applied.hosts;
      assertEquals(one?.error, null);
      assertEquals(
        one?.report?.vms.map((vm) => [vm.vm, vm.status, vm.added]),
        [[render, "changed", ["0000:0e:00.4"]], [store, "unchanged", []]],
      );
      assertEquals([two?.name, two?.report ?? null, two?.error?.stage], ["hv2", null, "connect"]);
      assertMatch(two!.error!.message, /libvirt-sock/);
    } finally {
      await undefineUnlessIsolated(hv1, [render, store]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("apply on a terminal asks per host, then per VM, through the host workers", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-fleet-" });
  try {
    const config = await testDriverFleet(dir);
    const answers = ["y", "y", "n", "q"];
    const asked: string[] = [];
    const io = { ...captureIo(), interactive: true };
    const out = io.out;
    io.out = (text: string) => {
      if (/\? \[y\/n\/a\/q\] $/.test(text)) asked.push(text.trim());
      out(text);
    };
    io.readLine = () => Promise.resolve(answers.shift() ?? null);
    const code = await main(["apply", "-f", config, "--state-dir", `${dir}/state`], io);
    assertEquals(code, 0, io.stdout() + io.stderr());
    assertEquals(asked, [
      'Apply to host "hv1"? [y/n/a/q]',
      'Apply the changes to "render"? [y/n/a/q]',
      'Apply the changes to "store"? [y/n/a/q]',
      'Apply to host "hv2"? [y/n/a/q]',
    ]);
    const text = io.stdout();
    // Each host's plan is shown before its question.
    assertOk(text.indexOf("=== host hv2") > text.indexOf("changed render"));
    assertMatch(text, /changed render \(\+2 -0 hostdevs\)/);
    assertMatch(text, /skipped store/);
    assertMatch(text, /Hosts:\n\s+changed hv1\n\s+skipped hv2\n/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a refusal on one host fails the run but the other host still applies", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-fleet-" });
  try {
    const config = await testDriverFleet(dir);
    // hv2 has no such card: its render VM is refused, hv1 is untouched by that.
    await Deno.writeTextFile(
      config,
      (await Deno.readTextFile(config)).replace('"10de:1b80"', '"dead:beef"'),
    );
    const io = captureIo();
    const code = await main(
      ["apply", "--yes", "--json", "-f", config, "--state-dir", `${dir}/state`],
      io,
    );
    assertEquals(code, 1, io.stderr());
    const { hosts } = JSON.parse(io.stdout()) as { hosts: FleetJsonHost[] };
    assertEquals(
      hosts.map((h) => [h.name, h.error, h.report?.vms.map((vm) => `${vm.vm}:${vm.status}`)]),
      [
        ["hv1", null, ["render:changed", "store:changed"]],
        ["hv2", null, ["render:skipped", "store:changed"]],
      ],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hostError() keeps the causes and libvirt's code; fleetFailed() sees every kind of failure", () => {
  const cause = Object.assign(new Error("Cannot recv data"), { code: 38 });
  const error = hostError(
    "connect",
    new Error('Cannot connect to "qemu+ssh://x/system"', { cause }),
  );
  assertEquals(error, {
    stage: "connect",
    name: "Error",
    message: 'Cannot connect to "qemu+ssh://x/system": Cannot recv data',
    code: 38,
  });
  const plan = (errors: unknown[]) =>
    ({ config: "", host: "", uri: "", vms: [], errors, warnings: [] }) as unknown as Plan;
  const ok = { name: "a", uri: "test:///a", plan: plan([]), error: null };
  assertEquals(fleetFailed([ok]), false);
  assertEquals(fleetFailed([ok, { ...ok, plan: null, error }]), true);
  assertEquals(fleetFailed([ok, { ...ok, plan: plan([{ code: "no-iommu" }]) }]), true);
  assertEquals(
    fleetFailed([{ ...ok, report: { ok: false } as unknown as ApplyReport }]),
    true,
  );
});

/** libvirt's remote protocol: the procedure number of `virDomainDefineXMLFlags`. */
const REMOTE_PROC_DOMAIN_DEFINE_XML_FLAGS = 350;

/**
 * A UNIX socket a libvirt client can connect to that never answers: with `upstream: null` it
 * accepts and reads every request and replies to none (a daemon hung from the start); with
 * `upstream`, it forwards libvirt's RPC packets to that daemon socket until the client calls
 * procedure `stallAt`, then holds that call and everything after it (a daemon that hangs in
 * the middle of the work). `procedures` lists the calls seen, for failure messages.
 */
function hungDaemon(
  path: string,
  options: { upstream: string | null; stallAt?: number },
): AsyncDisposable & { procedures: number[]; stalled: () => boolean } {
  const listener = Deno.listen({ transport: "unix", path });
  const conns: Deno.Conn[] = [];
  const tasks: Promise<unknown>[] = [];
  const procedures: number[] = [];
  let stalled = false;
  const swallow = async (conn: Deno.Conn) => {
    const buffer = new Uint8Array(65536);
    while ((await conn.read(buffer)) !== null) { /* never answered */ }
  };
  const copy = async (from: Deno.Conn, to: Deno.Conn) => {
    const buffer = new Uint8Array(65536);
    for (let n; (n = await from.read(buffer)) !== null;) await to.write(buffer.subarray(0, n));
  };
  // Client to daemon, one whole packet at a time (4-byte length, itself included; the
  // procedure is the fourth word), so a call is either forwarded whole or held.
  const forward = async (from: Deno.Conn, to: Deno.Conn) => {
    const buffer = new Uint8Array(65536);
    let pending = new Uint8Array(0);
    for (let n; (n = await from.read(buffer)) !== null;) {
      const joined = new Uint8Array(pending.length + n);
      joined.set(pending);
      joined.set(buffer.subarray(0, n), pending.length);
      pending = joined;
      while (!stalled && pending.length >= 16) {
        const view = new DataView(pending.buffer);
        const length = view.getUint32(0);
        if (pending.length < length) break;
        const procedure = view.getUint32(12);
        procedures.push(procedure);
        if (procedure === options.stallAt) {
          stalled = true;
          break;
        }
        await to.write(pending.subarray(0, length));
        pending = pending.slice(length);
      }
    }
  };
  const serve = async () => {
    for await (const client of listener) {
      conns.push(client);
      if (options.upstream === null) {
        tasks.push(swallow(client));
        continue;
      }
      const daemon = await Deno.connect({ transport: "unix", path: options.upstream });
      conns.push(daemon);
      tasks.push(copy(daemon, client), forward(client, daemon));
    }
  };
  tasks.push(serve());
  return {
    procedures,
    stalled: () => stalled,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of conns) conn.close();
      await Promise.allSettled(tasks);
    },
  };
}

/** {@link cli}, killed if it has not exited after `deadline` ms; with its wall time. */
async function timedCli(args: string[], deadline: number) {
  const started = performance.now();
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...documentedPermissions(), MAIN, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(deadline),
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return {
    code: output.code,
    signal: output.signal,
    stdout: decode(output.stdout),
    stderr: decode(output.stderr),
    seconds: (performance.now() - started) / 1000,
  };
}

Deno.test("a host whose daemon never answers times out, the other host applies, and the process exits", async () => {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-fleet-" });
  try {
    const config = await testDriverFleet(dir);
    const hung = `qemu:///system?socket=${dir}/hung.sock`;
    await Deno.writeTextFile(
      config,
      (await Deno.readTextFile(config)).replace(
        `"test://${dir}/hv2.xml"`,
        `"${hung}"`,
      ),
    );
    await using _daemon = hungDaemon(`${dir}/hung.sock`, { upstream: null });
    const state = ["--state-dir", `${dir}/state`];

    // Workers: hv2's worker is left blocked in virConnectOpen; the CLI still ends.
    const applied = await timedCli(
      ["apply", "--yes", "--json", "-f", config, ...state, "--host-timeout", "1"],
      30_000,
    );
    assertEquals([applied.code, applied.signal], [1, null], applied.stdout + applied.stderr);
    const { hosts } = JSON.parse(applied.stdout) as { hosts: FleetJsonHost[] };
    const [hv1, hv2] = hosts;
    assertEquals(hv1?.error, null);
    assertEquals(
      hv1?.report?.vms.map((vm) => [vm.vm, vm.status, vm.added]),
      Object.entries(EXPECTED_ADDS.hv1).map(([vm, added]) => [vm, "changed", added]),
    );
    assertEquals(
      [hv2?.name, hv2?.report ?? null, hv2?.error?.stage, hv2?.error?.name],
      ["hv2", null, "discover", "HostTimeoutError"],
    );
    assertEquals(
      hv2?.error?.message,
      `Host "hv2" at "${hung}" timed out after 1 s (--host-timeout) while discovering: ` +
        "nothing was changed there",
    );
    // Start-up, hv1's work and hv2's second: far below the deadline that would mean a hang.
    assertOk(applied.seconds < 20, `took ${applied.seconds} s`);

    // --parallel 1 runs the hosts in one worker, in turn: hv2 times out, hv1 is planned after.
    await Deno.writeTextFile(
      config,
      (await Deno.readTextFile(config)).replace(/^( {2}hv1: .*\n)( {2}hv2: .*\n)/m, "$2$1"),
    );
    const planned = await timedCli(
      ["plan", "-f", config, "--parallel", "1", "--host-timeout", "1"],
      30_000,
    );
    assertEquals([planned.code, planned.signal], [1, null], planned.stdout + planned.stderr);
    assertMatch(
      planned.stdout,
      /=== host hv2 [^\n]*\n {2}FAILED to discover: Host "hv2" at "[^"]*hung\.sock" timed out after 1 s \(--host-timeout\) while discovering: nothing was changed there\n/,
    );
    // The test driver keeps no state across processes: hv1 is planned with its changes again.
    assertMatch(
      planned.stdout,
      /=== host hv1 [\s\S]*VM render[\s\S]*2 hosts: 1 with changes, 0 with refusals, 1 failed/,
    );
    assertOk(planned.seconds < 20, `took ${planned.seconds} s`);

    const bad = await timedCli(["plan", "-f", config, "--host-timeout", "1m"], 30_000);
    assertEquals(bad.code, 2);
    assertMatch(bad.stderr, /Invalid --host-timeout "1m": expected seconds from 0 \(no limit\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a host that hangs while applying is reported as state unknown, never as applied",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-fleet-" });
    await using daemon = await startLibvirtd();
    const suffix = crypto.randomUUID().slice(0, 8);
    const render = `render-${suffix}`;
    const store = `store-${suffix}`;
    try {
      const config = await testDriverFleet(dir);
      buildHostTree(loadHostDescription(new URL(`${HV2}.json`, HOSTS)), `${dir}/hv2`);
      {
        using port = openLibvirtPort(daemon.uri);
        // One domain: each define costs seconds (the QEMU driver probes QEMU).
        port.define(qemuDomain(render));
      }
      const proxied = `qemu:///system?socket=${dir}/stall.sock`;
      await Deno.writeTextFile(
        config,
        (await Deno.readTextFile(config))
          .replace(
            `{ connect: "test://${dir}/hv2.xml", discovery: libvirt }`,
            `{ connect: "${proxied}", discovery: sysfs, sysfs: hv2 }`,
          ).replaceAll("render:", `${render}:`)
          .replace("  store:\n", `  ${store}:\n    host: hv1\n`),
      );
      // hv1 is a test-driver world whose domains keep the plain names.
      await Deno.writeTextFile(
        `${dir}/hv1.xml`,
        (await Deno.readTextFile(`${dir}/hv1.xml`))
          .replace("<name>render</name>", `<name>${render}</name>`)
          .replace("<name>store</name>", `<name>${store}</name>`),
      );
      await using stall = hungDaemon(`${dir}/stall.sock`, {
        upstream: `${daemon.dir}/libvirt-sock`,
        stallAt: REMOTE_PROC_DOMAIN_DEFINE_XML_FLAGS,
      });

      const run = await timedCli(
        ["apply", "--yes", "-f", config, "--state-dir", `${dir}/state`, "--host-timeout", "2"],
        60_000,
      );
      assertEquals([run.code, run.signal], [1, null], run.stdout + run.stderr);
      assertOk(stall.stalled(), `the define was never sent: ${stall.procedures}`);
      assertMatch(
        run.stdout,
        new RegExp(
          `=== host hv2 [\\s\\S]*FAILED to apply: Host "hv2" at "[^"]*stall\\.sock" timed out ` +
            `after 2 s \\(--host-timeout\\) while applying: some VMs may be changed, others not: ` +
            `state unknown: check with plan\\n`,
        ),
      );
      assertMatch(run.stdout, /Hosts:\n\s+changed hv1\n\s+FAILED hv2\n/);
      assertOk(!/changed hv2|unchanged hv2/.test(run.stdout), run.stdout);
      assertOk(run.seconds < 40, `took ${run.seconds} s`);
    } finally {
      await undefineUnlessIsolated(daemon, [render, store]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
