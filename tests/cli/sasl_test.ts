/**
 * A libvirtd that asks for a SASL login, as a `qemu+tcp://` daemon with `auth_tcp = "sasl"` does:
 * here a private one asking it on its socket (`auth_unix_rw = "sasl"`, SCRAM only). passthrough opens libvirt
 * with no credential callback, so it cannot log in, whoever runs it and whatever libvirt's
 * `auth.conf` holds; it must say that, not advise root or the `libvirt` group.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { runCli } from "../helpers/cli.ts";
import { libvirtdUnavailable, startLibvirtd } from "../helpers/libvirtd.ts";

Deno.test({
  name: "a daemon that wants a SASL login is named as such, and root or a group is not advised",
  ignore: libvirtdUnavailable() !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-sasl-" });
    // A login the daemon's SASL wants (Cyrus SASL reads its config there): with every mechanism
    // installed, it would take ANONYMOUS on a socket.
    await Deno.writeTextFile(`${dir}/libvirt.conf`, "mech_list: scram-sha-256\n");
    Deno.env.set("SASL_CONF_PATH", dir);
    const started = startLibvirtd({ config: [`auth_unix_rw = "sasl"`] });
    // Deleted once the daemon runs: it is spawned after the helper's first awaits.
    await started.finally(() => Deno.env.delete("SASL_CONF_PATH"));
    await using daemon = await started;
    // The login libvirt would take from its auth.conf, for a program that asks for one.
    const auth = `${dir}/auth.conf`;
    await Deno.writeTextFile(
      auth,
      "[credentials-lab]\nauthname=admin\npassword=s3cret\n\n[auth-libvirt-default]\ncredentials=lab\n",
      { mode: 0o600 },
    );
    const env = { LIBVIRT_AUTH_FILE: auth };
    const sources = await runCli(["sources", "--connect", daemon.uri], { env });
    assertEquals(sources.code, 1, sources.stderr);
    assertMatch(
      sources.stderr,
      /^passthrough sources: Cannot connect to libvirt at ".*" \(--connect\): authentication failed: .*SASL.* \(libvirt asks for a SASL login \(a username and password\), which passthrough cannot give: .*qemu\+ssh:\/\/USER@HOST\/system\)\)$/m,
    );
    assert(!sources.stderr.includes("run as root"), sources.stderr);
    const doctor = await runCli(["doctor", "--json", "--connect", daemon.uri], { env });
    const findings: { check: string; status: string; hint: string | null }[] = JSON.parse(
      doctor.stdout,
    );
    const libvirt = findings.find((f) => f.check === "libvirt");
    assertEquals(libvirt?.status, "fail", doctor.stdout);
    assertMatch(libvirt?.hint ?? "", /^libvirt asks for a SASL login/);
    await Deno.remove(dir, { recursive: true });
  },
});
