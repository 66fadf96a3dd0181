/**
 * A libvirt daemon that commits a call and dies before its reply reaches the client: a proxy on
 * its own Unix socket, in its own process (the client's FFI call blocks the test's thread), that
 * passes every message both ways until the daemon's reply to one procedure comes by. Then it
 * kills the daemon (SIGKILL) and closes the client's connection instead of passing the reply on.
 *
 * libvirt's RPC messages are a 4-byte big-endian length (itself included) followed by a header
 * of 4-byte fields: program, version, procedure, type (1 = reply), serial, status.
 *
 * @module
 */

/** `REMOTE_PROC_DOMAIN_DEFINE_XML_FLAGS` in libvirt's `remote_protocol.x`. */
export const PROC_DOMAIN_DEFINE_XML_FLAGS = 350;
const TYPE_REPLY = 1;

/** A running proxy; `stop()` (or `await using`) ends it. */
export interface RpcCut extends AsyncDisposable {
  /** The URI to connect through: the daemon's, with the proxy's socket. */
  uri: string;
  /** Resolves once a reply was cut (and the daemon killed). */
  cut: Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts a proxy in front of the daemon listening on `socket` (pid `pid`) that cuts the first
 * reply to procedure `proc`.
 */
export async function startRpcCut(
  options: { socket: string; pid: number; dir: string; proc: number },
): Promise<RpcCut> {
  const listen = `${options.dir}/cut-${crypto.randomUUID().slice(0, 8)}.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      listen,
      options.socket,
      String(options.pid),
      String(options.proc),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const waitFor = async (word: string) => {
    while (!seen.includes(word)) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`The proxy exited before "${word}": ${seen}`);
      seen += value;
    }
  };
  await waitFor("ready");
  const cut = waitFor("cut");
  cut.catch(() => {});
  const stop = async () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await child.status;
    await lines.cancel().catch(() => {});
  };
  return {
    uri: `qemu:///system?socket=${listen}`,
    cut,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Passes the daemon's messages to the client, cutting the first reply to `proc`. */
async function relay(client: Deno.UnixConn, pid: number, proc: number): Promise<void> {
  const daemon = await Deno.connect({ transport: "unix", path: Deno.args[1]! });
  client.readable.pipeTo(daemon.writable).catch(() => {});
  const writer = client.writable.getWriter();
  let buffer: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  for await (const chunk of daemon.readable) {
    buffer = concat(buffer, chunk);
    for (;;) {
      if (buffer.length < 20) break;
      const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
      const length = view.getUint32(0);
      if (buffer.length < length) break;
      if (view.getUint32(12) === proc && view.getUint32(16) === TYPE_REPLY) {
        // The daemon has committed the call and answered: it dies, the answer is lost.
        Deno.kill(pid, "SIGKILL");
        console.log("cut");
        client.close();
        return;
      }
      await writer.write(buffer.slice(0, length));
      buffer = buffer.slice(length);
    }
  }
}

if (import.meta.main) {
  const [listen, , pid, proc] = Deno.args;
  const listener = Deno.listen({ transport: "unix", path: listen! });
  console.log("ready");
  for await (const client of listener) {
    relay(client, Number(pid), Number(proc)).catch(() => client.close());
  }
}
