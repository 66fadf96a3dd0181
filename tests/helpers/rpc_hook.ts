/**
 * A race with another libvirt client made to happen every time: a proxy on its own Unix socket,
 * in its own process (the client's FFI call blocks the test's thread), that passes every message
 * both ways, and when the daemon's first reply to one procedure comes by, runs a command (another
 * client, such as `virsh undefine`) to its end before passing that reply on. The client then goes
 * on from an answer the world no longer matches, as when the other client's call lands between
 * two of its own. With `cut`, the reply is dropped and the client's connection closed instead: a
 * command that kills the daemon then makes a daemon that committed a call and died before its
 * answer reached the client.
 *
 * libvirt's RPC messages are a 4-byte big-endian length (itself included) followed by a header
 * of 4-byte fields: program, version, procedure, type (1 = reply), serial, status.
 *
 * @module
 */

/** `REMOTE_PROC_CONNECT_LIST_ALL_DOMAINS` in libvirt's `remote_protocol.x`. */
export const PROC_CONNECT_LIST_ALL_DOMAINS = 273;
/** `REMOTE_PROC_DOMAIN_DEFINE_XML_FLAGS`: `virDomainDefineXMLFlags`. */
export const PROC_DOMAIN_DEFINE_XML_FLAGS = 350;
/** `REMOTE_PROC_DOMAIN_GET_XML_DESC`: `virDomainGetXMLDesc`. */
export const PROC_DOMAIN_GET_XML_DESC = 14;
const TYPE_REPLY = 1;

/** A running proxy; `stop()` (or `await using`) ends it. */
export interface RpcHook extends AsyncDisposable {
  /** The URI to connect through: the daemon's, with the proxy's socket. */
  uri: string;
  /** Resolves with the command's exit code and output once it ran. */
  ran: Promise<string>;
  stop(): Promise<void>;
}

/**
 * Starts a proxy in front of the daemon listening on `socket` that runs `command` when the first
 * reply to procedure `proc` arrives (the first after a reply to `after`, when given: a define's
 * read-back, not the reads before it), before passing the reply on.
 */
export async function startRpcHook(
  options: {
    socket: string;
    dir: string;
    proc: number;
    after?: number;
    command: string[];
    cut?: boolean;
  },
): Promise<RpcHook> {
  const listen = `${options.dir}/hook-${crypto.randomUUID().slice(0, 8)}.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      listen,
      options.socket,
      String(options.proc),
      JSON.stringify(options.command),
      options.cut === true ? "cut" : "pass",
      String(options.after ?? -1),
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
    return seen;
  };
  await waitFor("ready\n");
  const ran = waitFor("ran ").then((text) => text.slice(text.indexOf("ran ")));
  ran.catch(() => {});
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
    ran,
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

/**
 * The proxy's state across connections: the command runs once, once a reply to `after` (a
 * procedure number; -1: none) passed.
 */
const once = { fired: false, armed: false };

/**
 * Passes the daemon's messages to the client, running the command before the first `proc` reply;
 * with `cut`, that reply is dropped and the client's connection closed.
 */
async function relay(
  client: Deno.UnixConn,
  proc: number,
  command: string[],
  cut: boolean,
  after: number,
): Promise<void> {
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
      const reply = view.getUint32(16) === TYPE_REPLY;
      if (after === -1 || (reply && view.getUint32(12) === after)) once.armed = true;
      if (!once.fired && once.armed && view.getUint32(12) === proc && reply) {
        once.fired = true;
        const out = new Deno.Command(command[0]!, {
          args: command.slice(1),
          stdout: "piped",
          stderr: "piped",
        }).outputSync();
        const text = new TextDecoder().decode(out.stderr).trim();
        console.log(`ran ${out.code} ${JSON.stringify(text)}`);
        if (cut) {
          client.close();
          return;
        }
      }
      await writer.write(buffer.slice(0, length));
      buffer = buffer.slice(length);
    }
  }
  await writer.close().catch(() => {});
}

if (import.meta.main) {
  const [listen, , proc, command, mode, after] = Deno.args;
  const listener = Deno.listen({ transport: "unix", path: listen! });
  console.log("ready");
  for await (const client of listener) {
    relay(client, Number(proc), JSON.parse(command!), mode === "cut", Number(after)).catch(() => {
      // A client killed mid-call (SIGKILL) has its connection closed already.
      try {
        client.close();
      } catch {
        // Closed: nothing left to end.
      }
    });
  }
}
