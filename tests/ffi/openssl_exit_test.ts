/**
 * libvirt initialises OpenSSL (through curl and libssh2), and OpenSSL would then register
 * `OPENSSL_cleanup()` with `atexit`. Run on a thread other than the main one (as `deno test` and
 * `deno bench` run each module), that cleanup races the thread's own exit and can free the same
 * list twice: `malloc_consolidate(): unaligned fastbin chunk detected`, exit 134, seen a few times
 * in the suite (openssl/openssl#6214). Loading libvirt must leave no OpenSSL cleanup to run at exit.
 *
 * The probe: a process opens a connection, then hands OpenSSL a handler of its own (libc's
 * `abort`) that only `OPENSSL_cleanup()` runs. The process exits 0 when no cleanup runs at exit,
 * 134 when one does.
 */

import { assert } from "../helpers/assert.ts";

const FFI_MODULE = new URL("../../ffi/mod.ts", import.meta.url).href;

const PROBE = `
import { Connection } from ${JSON.stringify(FFI_MODULE)};
using conn = Connection.open("test:///default", { readOnly: true });
const libc = Deno.dlopen("libc.so.6", { dlsym: { parameters: ["pointer", "buffer"], result: "pointer" } });
const abort = libc.symbols.dlsym(null, new TextEncoder().encode("abort\\0"));
const crypto = Deno.dlopen("libcrypto.so.3", { OPENSSL_atexit: { parameters: ["pointer"], result: "i32" } });
if (crypto.symbols.OPENSSL_atexit(abort) !== 1) throw new Error("OPENSSL_atexit failed");
console.log("registered");
`;

Deno.test("loading libvirt leaves OpenSSL no cleanup to run at exit", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/probe.ts`;
    await Deno.writeTextFile(script, PROBE);
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        "--no-config",
        "--no-check",
        "--allow-ffi",
        "--allow-read",
        "--allow-env",
        script,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(stdout);
    const err = new TextDecoder().decode(stderr);
    assert.equal(out, "registered\n", err);
    assert.equal(code, 0, `OPENSSL_cleanup() ran at exit (exit ${code}): ${err}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
