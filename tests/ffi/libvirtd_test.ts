/**
 * The binding against a real `libvirtd` (QEMU driver) started privately for this file: define a
 * domain with PCI hostdevs, read it from a second process, hot-plug with CONFIG, undefine.
 * Skipped (with the reason in the test name) when not root or libvirtd is missing.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import {
  libvirtdUnavailable,
  processAlive,
  startLibvirtd,
  undefineUnlessIsolated,
} from "../helpers/libvirtd.ts";
import { PROC_CONNECT_LIST_ALL_DOMAINS, startRpcHook } from "../helpers/rpc_hook.ts";
import { demoTree, gpuConfig, qemuDomainXml } from "../helpers/reliability.ts";
import { canUnshareMounts, runCli } from "../helpers/cli.ts";
import {
  Connection,
  LibvirtError,
  openLibvirtPort,
  VIR_ERR_NO_DOMAIN,
  VIR_ERR_OPERATION_INVALID,
} from "../../ffi/mod.ts";
import { connectionPort } from "../../ffi/port.ts";
import { readNetworks } from "../../lib/plan/world.ts";
import { networkWarnings } from "../../lib/plan/networks.ts";

const unavailable = libvirtdUnavailable();

function domainXml(name: string, functions: number[]): string {
  const hostdevs = functions.map((fn) => hostdevXml(0x41, fn)).join("\n    ");
  return `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='KiB'>65536</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    ${hostdevs}
  </devices>
</domain>`;
}

function hostdevXml(bus: number, fn: number): string {
  const hex = (n: number, width: number) => `0x${n.toString(16).padStart(width, "0")}`;
  return `<hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='${hex(bus, 2)}' slot='0x00' function='${hex(fn, 1)}'/>
      </source>
    </hostdev>`;
}

/** Host-side source addresses of the PCI hostdevs in `xml` (guest addresses ignored). */
function sourceAddresses(xml: string): string[] {
  const found: string[] = [];
  for (const match of xml.matchAll(/<hostdev[^>]*type='pci'[^>]*>([\s\S]*?)<\/hostdev>/g)) {
    const source = /<source>\s*<address ([^>]*)\/>/.exec(match[1] ?? "");
    if (source?.[1]) found.push(source[1].replace(/\s+/g, " ").trim());
  }
  return found;
}

function catchLibvirt(fn: () => unknown): LibvirtError {
  try {
    fn();
  } catch (error) {
    if (error instanceof LibvirtError) return error;
    throw error;
  }
  throw new Error("Expected a LibvirtError, nothing was thrown");
}

function undefineIfPresent(conn: Connection, name: string): void {
  try {
    using dom = conn.lookupDomainByName(name);
    dom.undefine();
  } catch (error) {
    if (!(error instanceof LibvirtError && error.code === VIR_ERR_NO_DOMAIN)) throw error;
  }
}

async function readInSecondProcess(uri: string, name: string): Promise<string> {
  const port = new URL("../../ffi/port.ts", import.meta.url).href;
  const script = `
    import { openLibvirtPort } from ${JSON.stringify(port)};
    using port = openLibvirtPort(Deno.args[0], { readOnly: true });
    const names = port.listDomains().map((d) => d.name);
    console.log(JSON.stringify({ names, xml: port.getPersistentXml(Deno.args[1]) }));
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script, uri, name],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assertEquals(output.code, 0, `second process failed: ${stderr}`);
  const result = JSON.parse(new TextDecoder().decode(output.stdout)) as {
    names: string[];
    xml: string;
  };
  assert.ok(result.names.includes(name), `second process lists ${result.names.join(", ")}`);
  return result.xml;
}

Deno.test({
  name: "the binding defines, reads, hot-plugs and undefines on a real libvirtd" +
    (unavailable === null ? "" : ` (skipped: ${unavailable})`),
  ignore: unavailable !== null,
  async fn(t) {
    await using daemon = await startLibvirtd();
    const name = `passthrough-ffi-${crypto.randomUUID().slice(0, 8)}`;
    using conn = Connection.open(daemon.uri);
    try {
      await t.step("defineDomain() stores a qemu domain with PCI hostdevs", () => {
        using dom = conn.defineDomain(domainXml(name, [0, 1]));
        assertEquals(dom.name, name);
        assertEquals(dom.state(), "shutoff");
        assertEquals(dom.isPersistent(), true);
        const xml = dom.xml({ inactive: true });
        assertEquals(sourceAddresses(xml), [
          "domain='0x0000' bus='0x41' slot='0x00' function='0x0'",
          "domain='0x0000' bus='0x41' slot='0x00' function='0x1'",
        ]);
        // The QEMU driver adds a guest-side address to each hostdev.
        assert.ok((xml.match(/<address type='pci'/g)?.length ?? 0) >= 2, xml);
      });

      await t.step("a second process reads the same persistent definition", async () => {
        const xml = await readInSecondProcess(daemon.uri, name);
        using dom = conn.lookupDomainByName(name);
        assertEquals(xml, dom.xml({ inactive: true }));
      });

      await t.step("attachDevice() and detachDevice() with config edit the definition", () => {
        using dom = conn.lookupDomainByName(name);
        const extra = hostdevXml(0x42, 0);
        dom.attachDevice(extra, { live: false, config: true });
        assertEquals(sourceAddresses(dom.xml({ inactive: true })).length, 3);
        assertMatch(dom.xml({ inactive: true }), /bus='0x42'/);
        dom.detachDevice(extra, { live: false, config: true });
        assertEquals(sourceAddresses(dom.xml({ inactive: true })).length, 2);
        const live = catchLibvirt(() => dom.attachDevice(extra, { live: true, config: false }));
        assertEquals(live.code, VIR_ERR_OPERATION_INVALID);
      });

      await t.step("openLibvirtPort() redefines through VALIDATE and reads back", () => {
        using port = openLibvirtPort(daemon.uri);
        assertEquals(port.isActive(name), false);
        const xml = port.getPersistentXml(name, { secure: true });
        port.define(xml.replace(/\s*<hostdev[\s\S]*?<\/hostdev>/, ""));
        assertEquals(sourceAddresses(port.getPersistentXml(name)), [
          "domain='0x0000' bus='0x41' slot='0x00' function='0x1'",
        ]);
      });

      await t.step("node devices of the real host list and describe themselves", () => {
        const devices = conn.listNodeDevices({ cap: "pci" });
        try {
          assert.ok(devices.length > 0, "the host has PCI devices");
          for (const dev of devices) {
            assertMatch(dev.name, /^pci_[0-9a-f]{4}_[0-9a-f]{2}_[0-9a-f]{2}_[0-7]$/);
            assertMatch(dev.xml(), /<capability type='pci'>/);
          }
        } finally {
          for (const dev of devices) dev.free();
        }
      });

      await t.step("undefine() leaves nothing behind", async () => {
        {
          using dom = conn.lookupDomainByName(name);
          dom.undefine();
        }
        assertEquals(catchLibvirt(() => conn.lookupDomainByName(name)).code, VIR_ERR_NO_DOMAIN);
        const names = conn.listDomains().map((dom) => {
          using owned = dom;
          return owned.name;
        });
        assertEquals(names.includes(name), false);
        const configDir = daemon.isolated ? `${daemon.dir}/state-1` : "/etc/libvirt/qemu";
        const left = [];
        for await (const entry of Deno.readDir(configDir)) left.push(entry.name);
        assertEquals(left.filter((file) => file.startsWith(name)), []);
      });
    } finally {
      // A failed step must not leave a definition behind (in /etc/libvirt/qemu when not isolated).
      undefineIfPresent(conn, name);
    }
  },
});

Deno.test({
  name: "Connection.open() fails with code 38 once the daemon is stopped" +
    (unavailable === null ? "" : ` (skipped: ${unavailable})`),
  ignore: unavailable !== null,
  async fn() {
    const daemon = await startLibvirtd();
    using conn = Connection.open(daemon.uri, { readOnly: true });
    assertMatch(conn.libVersion, /^\d+\.\d+\.\d+$/);
    await daemon.stop();
    // The client learns of the hang-up on its next call; a lookup then fails for want of the
    // daemon, and must not say the domain is not there.
    catchLibvirt(() => conn.listDomains());
    const lookup = catchLibvirt(() => conn.lookupDomainByName("vm"));
    assertMatch(lookup.message, /^Cannot look up domain "vm": /);
    const error = catchLibvirt(() => Connection.open(daemon.uri));
    assertEquals(error.code, 38);
    assertMatch(error.message, /^Cannot connect to libvirt at "qemu:\/\/\/system\?socket=/);
  },
});

Deno.test({
  name:
    "openLibvirtPort().listDomains() and plan leave out a domain undefined between listing and reading" +
    (unavailable === null ? "" : ` (skipped: ${unavailable})`),
  ignore: unavailable !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    await using tree = await demoTree();
    const kept = `pt-race-kept-${crypto.randomUUID().slice(0, 8)}`;
    const gone = `pt-race-gone-${crypto.randomUUID().slice(0, 8)}`;
    {
      using conn = Connection.open(daemon.uri);
      for (const name of [kept, gone]) {
        using _dom = conn.defineDomain(qemuDomainXml(name));
      }
    }
    try {
      // Another client undefines `gone` once libvirt has listed it, before its state is read.
      const race = async () =>
        await startRpcHook({
          socket: `${daemon.dir}/libvirt-sock`,
          dir: daemon.dir,
          proc: PROC_CONNECT_LIST_ALL_DOMAINS,
          command: ["virsh", "-c", daemon.uri, "undefine", gone],
        });
      {
        await using hook = await race();
        using port = openLibvirtPort(hook.uri);
        assertEquals(port.listDomains().map((d) => d.name), [kept]);
        assertMatch(await hook.ran, /^ran 0 /);
      }
      // The same race under `plan`, whose config names only the other VM.
      {
        using conn = Connection.open(daemon.uri);
        using _dom = conn.defineDomain(qemuDomainXml(gone));
      }
      await using hook = await race();
      const config = `${tree.dir}/c.yaml`;
      await Deno.writeTextFile(config, gpuConfig(kept));
      const out = await runCli(["plan", "-f", config, "--sysfs", tree.sysfs, "-c", hook.uri]);
      assertMatch(await hook.ran, /^ran 0 /);
      assertEquals([out.code, out.stderr], [0, ""]);
      assertMatch(out.stdout, /1 VM to change, 2 hostdevs to add/);
    } finally {
      await undefineUnlessIsolated(daemon, [kept, gone]);
    }
  },
});

Deno.test({
  name: "openLibvirtPort().listDomains() frees every listed domain when reading one fails" +
    (unavailable === null ? "" : ` (skipped: ${unavailable})`),
  ignore: unavailable !== null,
  async fn() {
    await using daemon = await startLibvirtd();
    const tag = crypto.randomUUID().slice(0, 8);
    const names = [`pt-free-a-${tag}`, `pt-free-b-${tag}`];
    {
      using conn = Connection.open(daemon.uri);
      for (const name of names) {
        using _dom = conn.defineDomain(qemuDomainXml(name));
      }
    }
    // Each domain handle holds a reference on its connection, so the connection outlives its
    // close() while the port left one unfreed (virConnectClose returns 0 once it is freed).
    const raw = Deno.dlopen("libvirt.so.0", {
      virConnectRef: { parameters: ["pointer"], result: "i32" },
      virConnectClose: { parameters: ["pointer"], result: "i32" },
    });
    try {
      // The daemon dies once it has listed the domains: reading the first one's state fails.
      await using hook = await startRpcHook({
        socket: `${daemon.dir}/libvirt-sock`,
        dir: daemon.dir,
        proc: PROC_CONNECT_LIST_ALL_DOMAINS,
        command: ["kill", "-9", String(daemon.pid)],
      });
      using conn = Connection.open(hook.uri);
      const error = catchLibvirt(() => connectionPort(conn).listDomains());
      assert.notEqual(error.code, VIR_ERR_NO_DOMAIN, error.message);
      assertMatch(await hook.ran, /^ran 0 /);
      // With the connection closed, only this test's own reference is left, unless handles are.
      const handle = conn.unsafeHandle;
      raw.symbols.virConnectRef(handle);
      conn.close();
      assertEquals(raw.symbols.virConnectClose(handle), 0, "domain handles were left unfreed");
    } finally {
      raw.close();
      await daemon.restart();
      await undefineUnlessIsolated(daemon, names);
    }
  },
});

Deno.test({
  name: "plan's warning that the networks cannot be listed says what failed once" +
    (unavailable === null ? "" : ` (skipped: ${unavailable})`),
  ignore: unavailable !== null,
  async fn() {
    const daemon = await startLibvirtd();
    using conn = Connection.open(daemon.uri, { readOnly: true });
    await daemon.stop();
    const warnings = networkWarnings(readNetworks(connectionPort(conn)) ?? undefined, daemon.uri);
    assertEquals(warnings.length, 1);
    const opening = `Cannot list the networks of "${daemon.uri}": `;
    assert(warnings[0]!.message.startsWith(opening), warnings[0]!.message);
    assertEquals(warnings[0]!.message.split(opening).length, 2, warnings[0]!.message);
    assertMatch(warnings[0]!.message, /: hostdev networks' pools of VFs are not checked/);
  },
});

Deno.test({
  name:
    "a daemon its test never stopped (it failed first) ends with the test file, directory and all" +
    (unavailable === null ? "" : ` (skipped: ${unavailable})`),
  ignore: unavailable !== null,
  async fn() {
    const helper = new URL("../helpers/libvirtd.ts", import.meta.url).href;
    // virtlogd runs only in a private mount namespace, which a container may not allow.
    const virtlogd = canUnshareMounts();
    const script = `import { startLibvirtd } from ${JSON.stringify(helper)};
const daemon = await startLibvirtd({ virtlogd: ${virtlogd} });
console.log(JSON.stringify({ dir: daemon.dir, pid: daemon.pid, virtlogd: ${virtlogd}
  ? Number(Deno.readTextFileSync(daemon.dir + "/virtlogd.pid")) : null }));`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    const started = JSON.parse(new TextDecoder().decode(out.stdout));
    const dir: string = started.dir;
    const daemons: number[] = [started.pid, ...(virtlogd ? [started.virtlogd] : [])];
    // SIGKILL is sent before the process exits; the kernel ends the daemons a moment later.
    for (let i = 0; i < 200 && daemons.some(processAlive); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const left = [
      daemons.some(processAlive),
      await Deno.lstat(dir).then(() => true, () => false),
    ];
    for (const target of daemons) {
      if (processAlive(target)) Deno.kill(target, "SIGKILL");
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    assertEquals(left, [false, false], "a daemon or the directory left behind");
  },
});

Deno.test({
  name: "a guest its test never destroyed (it failed first) ends with its daemon" +
    (unavailable === null
      ? (canUnshareMounts() ? "" : " (skipped: needs a private mount namespace (unshare -m))")
      : ` (skipped: ${unavailable})`),
  ignore: unavailable !== null || !canUnshareMounts(),
  async fn() {
    const daemon = await startLibvirtd({ virtlogd: true });
    let qemu = 0;
    try {
      const name = `left-${crypto.randomUUID().slice(0, 8)}`;
      await Deno.writeTextFile(
        `${daemon.dir}/${name}.xml`,
        `<domain type='qemu'><name>${name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>` +
          `<os><type arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>`,
      );
      for (const args of [["define", `${daemon.dir}/${name}.xml`], ["start", "--paused", name]]) {
        const out = await new Deno.Command("virsh", { args: ["-c", daemon.uri, ...args] }).output();
        assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
      }
      // The daemon's private /run/libvirt (see startLibvirtd).
      qemu = parseInt(await Deno.readTextFile(`${daemon.dir}/state-0/qemu/${name}.pid`), 10);
      assert(processAlive(qemu), "the guest did not start");
    } finally {
      await daemon.stop();
    }
    for (let i = 0; i < 100 && processAlive(qemu); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const left = processAlive(qemu);
    if (left) Deno.kill(qemu, "SIGKILL");
    assertEquals(left, false, "the guest's QEMU left running");
  },
});
