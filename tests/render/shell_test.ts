// Words printed for users to paste, and written into the hook script: `sh` (the real dash) must
// read each back as the one word it was, whatever it holds, and run nothing from it.

import { assertEquals } from "../helpers/assert.ts";
import { shellQuote, shellWord } from "../../lib/render/shell.ts";
import { pathExists } from "../../lib/state/paths.ts";

/** What `sh` makes of `text` as the arguments of printf: each word ended by a NUL. */
function throughSh(text: string): string[] {
  const out = new Deno.Command("sh", {
    args: ["-c", `printf '%s\\0' ${text}`],
    clearEnv: true,
    env: { PATH: "/usr/bin:/bin", HOME: "/root" },
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).split("\0").slice(0, -1);
}

/** Where a word that ran a program would leave its mark. */
const MARK = `${Deno.makeTempDirSync({ prefix: "passthrough-shell-" })}/ran`;

const HOSTILE = [
  "win 11",
  "it's",
  `$(touch ${MARK})`,
  `\`touch ${MARK}\``,
  "$HOME",
  "a;b",
  "a|b",
  "a&b",
  "~root",
  "*",
  "a?b",
  "[ab]",
  "{a,b}",
  "a\\b",
  'say "hi"',
  "line\nbreak",
  "tab\there",
  "#comment",
  "!",
  "a>b",
  "",
  "'",
  "''",
  "-n",
];

Deno.test("shellQuote and shellWord: sh reads every word back as it was, and runs nothing", () => {
  for (const word of HOSTILE) {
    assertEquals(throughSh(shellQuote(word)), [word], JSON.stringify(word));
    assertEquals(throughSh(shellWord(word)), [word], JSON.stringify(word));
  }
  assertEquals(pathExists(MARK), false);
  Deno.removeSync(MARK.slice(0, -"/ran".length), { recursive: true });
});

Deno.test("shellWord leaves a word sh reads as itself bare, and quotes the rest", () => {
  const bare = ["/srv/vm-1", "win11", "0000:0b:00.0", "user@host", "a=b", "50%", "x+y,z", "-n"];
  for (const word of bare) assertEquals(shellWord(word), word);
  assertEquals(throughSh(bare.join(" ")), bare);
  for (const word of HOSTILE.filter((w) => w !== "-n")) {
    assertEquals(shellWord(word), shellQuote(word), JSON.stringify(word));
  }
});
