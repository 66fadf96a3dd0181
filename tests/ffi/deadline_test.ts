/** The libvirt deadline itself (`ffi/deadline.ts`), through `Connection.open`'s option. */

import { assertEquals, assertMatch } from "../helpers/assert.ts";

const CONNECTION = new URL("../../ffi/connection.ts", import.meta.url).href;

/** Opens `test:///default` with a deadline of `seconds` in a fresh process (it may end it). */
async function openWithDeadline(
  seconds: number,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const code = `
    import { Connection } from ${JSON.stringify(CONNECTION)};
    const conn = Connection.open("test:///default", { deadline: { seconds: ${seconds} } });
    conn.close();
    console.log("answered");
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", code],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

Deno.test("a call answered just after the deadline ends the run with the message, not silently", async () => {
  // 1 ns: the timer fires while the open runs, which answers right after. Exiting at that answer
  // raced `sh` printing the message, and often won.
  for (let i = 0; i < 5; i++) {
    const run = await openWithDeadline(1e-9);
    assertEquals([run.code, run.stdout], [1, ""], run.stderr);
    assertMatch(run.stderr, /libvirt at "test:\/\/\/default" did not answer in 1e-9 s/);
  }
});

Deno.test("a deadline shorter than the timer's nanosecond still says why the process ends", async () => {
  // Rounded to no time at all, the timer was never armed, and its "nothing left" after the call
  // read as fired: the process ended with status 1 after the first call, saying nothing.
  const run = await openWithDeadline(1e-10);
  assertEquals([run.code, run.stdout], [1, ""], run.stderr);
  assertMatch(run.stderr, /libvirt at "test:\/\/\/default" did not answer in 1e-10 s/);
});
