// The benchmarks' own set-up runs in the suite: each bench file builds its hosts and checks that
// what it is about to time is the real thing (a clean plan, every VM parsed) at load time, and a
// change to the planner once made that check throw while nothing ran the benches. Loading every
// bench file with a filter that selects none runs exactly that set-up, and no timing; with
// BENCH_SMOKE=1 each file sets up only its smallest size.
import { assertEquals } from "../helpers/assert.ts";

Deno.test("every bench file loads and passes its own sanity checks", async () => {
  const root = new URL("../../", import.meta.url).pathname;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["bench", "--allow-all", "--filter", "^no bench has this name$", "bench/"],
    cwd: root,
    env: { NO_COLOR: "1", BENCH_SMOKE: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  assertEquals(output.code, 0, text);
});
