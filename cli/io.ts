/**
 * The real terminal behind {@link CliIo}. The only module that decides whether colour is used.
 *
 * @module
 */

import type { CliIo } from "./context.ts";

const encoder = new TextEncoder();

/**
 * Writes all of `text` to `file` (standard output or error), however many writes it takes: one
 * `writeSync` may take only part of it, and a JSON plan cut short is worse than none.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * const taken: number[] = [];
 * // A sink that takes at most 3 bytes per write.
 * writeAllSync({ writeSync: (p) => (taken.push(...p.subarray(0, 3)), Math.min(3, p.length)) }, "abcdefg");
 * assertEquals(new TextDecoder().decode(new Uint8Array(taken)), "abcdefg");
 * ```
 */
export function writeAllSync(file: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = encoder.encode(text);
  for (let written = 0; written < bytes.length;) {
    written += file.writeSync(bytes.subarray(written));
  }
}

/**
 * Reads stdin line by line, lazily, so commands that never prompt never touch stdin. Each read
 * is asked for only when a line is wanted: a stream piped through a decoder would keep a read
 * pending after the last answer, and the process would wait for one more line (or end of input)
 * before it could exit.
 */
function lineReader(stdinTerminal: boolean): () => Promise<string | null> {
  const decoder = new TextDecoder();
  const chunk = new Uint8Array(4096);
  let buffered = "";
  let ended = false;
  return async () => {
    while (!ended && !buffered.includes("\n")) {
      const n = await readStdin(chunk, stdinTerminal);
      if (n === null) {
        ended = true;
        buffered += decoder.decode();
      } else {
        buffered += decoder.decode(chunk.subarray(0, n), { stream: true });
      }
    }
    const index = buffered.indexOf("\n");
    if (index < 0) {
      if (buffered === "") return null;
      const line = buffered;
      buffered = "";
      return line;
    }
    const line = buffered.slice(0, index).replace(/\r$/, "");
    buffered = buffered.slice(index + 1);
    return line;
  };
}

/**
 * Whether `error`, from reading or writing a stream that was a terminal, says the terminal hung
 * up (EIO: the terminal window or SSH session was closed; it is then no terminal any more, so it
 * is asked at the start: `wasTerminal`). Of a file, EIO is a disk's error and stays one.
 */
function hungUp(error: unknown, wasTerminal: boolean): boolean {
  return wasTerminal && error instanceof Error &&
    (error as { code?: unknown }).code === "EIO";
}

/**
 * One read of stdin; `null` at its end, and also once it was closed under a pending read (a
 * signal stopping `apply` at a question, cli/signals.ts) or its terminal hung up: no answer
 * comes any more.
 */
async function readStdin(chunk: Uint8Array, stdinTerminal: boolean): Promise<number | null> {
  try {
    return await Deno.stdin.read(chunk);
  } catch (error) {
    if (
      error instanceof Deno.errors.Interrupted || error instanceof Deno.errors.BadResource ||
      hungUp(error, stdinTerminal)
    ) {
      return null;
    }
    throw error;
  }
}

/** The terminal's width, or `undefined` when the system does not say. */
function terminalColumns(): number | undefined {
  try {
    return Deno.consoleSize().columns || undefined;
  } catch {
    return undefined;
  }
}

/**
 * A writer to `stream` that stops, quietly, once nobody reads it: a terminal that hung up (the SSH
 * session closed mid-apply), and with `brokenPipe`, a reader that closed its pipe
 * (`passthrough groups --json | head`). What is left to do (the report, the guard's policies, the
 * lock) runs to its end: ending the process there instead (status 0) cut `apply --yes | head`
 * short after its defines, the policies unrecorded, the lock left, a failure reported as success.
 * `closed` says whether that happened. Another error is thrown, as `Cannot write to NAME` when
 * `name` is given: "No space left on device" alone reads as the state directory's disk.
 */
function quietWriter(
  stream: typeof Deno.stdout | typeof Deno.stderr,
  options: { terminal: boolean; brokenPipe: boolean; name?: string },
): { write: (text: string) => void; closed: () => boolean } {
  let closed = false;
  const write = (text: string) => {
    if (closed) return;
    try {
      writeAllSync(stream, text);
    } catch (error) {
      const gone = options.brokenPipe && error instanceof Deno.errors.BrokenPipe;
      if (gone || hungUp(error, options.terminal)) {
        closed = true;
        return;
      }
      if (options.name === undefined) throw error;
      throw new Error(`Cannot write to ${options.name}`, { cause: error });
    }
  };
  return { write, closed: () => closed };
}

/** The process's own stdout/stderr/stdin and environment. */
export function defaultIo(): CliIo {
  const noColor = (Deno.env.get("NO_COLOR") ?? "") !== "";
  const columns = Deno.stdout.isTerminal() ? terminalColumns() : undefined;
  const stdout = quietWriter(Deno.stdout, {
    terminal: Deno.stdout.isTerminal(),
    brokenPipe: true,
    name: "standard output",
  });
  const readLine = lineReader(Deno.stdin.isTerminal());
  const err = quietWriter(Deno.stderr, { terminal: Deno.stderr.isTerminal(), brokenPipe: false })
    .write;
  // Standard output in a file or a pipe, the terminal on standard error: a question written to
  // standard output was never seen, and the run waited for an answer to it.
  const promptOnStderr = !Deno.stdout.isTerminal() && Deno.stderr.isTerminal();
  return {
    ...(columns === undefined ? {} : { columns }),
    out: stdout.write,
    err,
    // Absent when questions go to standard output with the rest (CliIo.prompt).
    ...(promptOnStderr ? { prompt: err } : {}),
    color: !noColor && Deno.stdout.isTerminal(),
    interactive: Deno.stdin.isTerminal(),
    // A question written to a closed standard output was never seen: it gets no answer (end of
    // input: apply quits, rollback declines), never one typed blind.
    readLine: () => !promptOnStderr && stdout.closed() ? Promise.resolve(null) : readLine(),
    env: (name) => Deno.env.get(name),
  };
}
