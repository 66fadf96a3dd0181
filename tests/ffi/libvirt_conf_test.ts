/**
 * Where the program-URI check reads libvirt.conf, for a user libvirt finds no home for: run as a
 * uid with no passwd entry and no `HOME`, it names `/.config/libvirt/libvirt.conf`, the file
 * GLib's fallback home (`/`) has libvirt read. Checked at the function: the real file would be
 * written at the host's root.
 */

import { assertEquals } from "../helpers/assert.ts";

const MODULE = new URL("../../ffi/libvirt_conf.ts", import.meta.url).href;
/** A uid with no passwd entry here (checked). */
const UID = 54321;

Deno.test({
  name: "a user with no passwd entry and no HOME: libvirt.conf is GLib's /.config one",
  ignore: Deno.uid() !== 0 ||
    new Deno.Command("getent", { args: ["passwd", `${UID}`], stdout: "null" }).outputSync()
      .success,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.chmod(dir, 0o777);
      const out = await new Deno.Command("setpriv", {
        args: [
          `--reuid=${UID}`,
          `--regid=${UID}`,
          "--clear-groups",
          Deno.execPath(),
          "eval",
          "--quiet",
          `import { libvirtConfPath } from "${MODULE}"; console.log(libvirtConfPath());`,
        ],
        clearEnv: true,
        env: { DENO_DIR: `${dir}/deno`, PATH: Deno.env.get("PATH") ?? "" },
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const decode = (b: Uint8Array) => new TextDecoder().decode(b);
      assertEquals(
        [out.code, decode(out.stdout)],
        [0, "/.config/libvirt/libvirt.conf\n"],
        decode(out.stderr),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
