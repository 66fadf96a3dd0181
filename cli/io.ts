/**
 * The real terminal behind {@link CliIo}. The only module that decides whether colour is used.
 *
 * @module
 */

import type { CliIo } from "./context.ts";

const encoder = new TextEncoder();

/** Reads stdin line by line, lazily, so commands that never prompt never touch stdin. */
function lineReader(): () => Promise<string | null> {
  let buffered = "";
  let reader: ReadableStreamDefaultReader<string> | null = null;
  return async () => {
    reader ??= Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
    while (!buffered.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) {
        if (buffered === "") return null;
        const line = buffered;
        buffered = "";
        return line;
      }
      buffered += value;
    }
    const index = buffered.indexOf("\n");
    const line = buffered.slice(0, index).replace(/\r$/, "");
    buffered = buffered.slice(index + 1);
    return line;
  };
}

/** The process's own stdout/stderr/stdin and environment. */
export function defaultIo(): CliIo {
  const noColor = (Deno.env.get("NO_COLOR") ?? "") !== "";
  return {
    out: (text) => void Deno.stdout.writeSync(encoder.encode(text)),
    err: (text) => void Deno.stderr.writeSync(encoder.encode(text)),
    color: !noColor && Deno.stdout.isTerminal(),
    interactive: Deno.stdin.isTerminal(),
    readLine: lineReader(),
    env: (name) => Deno.env.get(name),
  };
}
