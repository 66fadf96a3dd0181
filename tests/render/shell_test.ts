// Words printed for users to paste, and written into the hook script: `sh` (the real dash) must
// read each back as the one word it was, whatever it holds, and run nothing from it.

import { assertEquals } from "../helpers/assert.ts";
import { followUpCommand, shellQuote, shellWord } from "../../lib/render/shell.ts";
import { pathExists } from "../../lib/state/paths.ts";
import { runFlags } from "../../cli/flags.ts";

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

Deno.test("followUpCommand() repeats the flags of this run that the command takes, as sh reads them", () => {
  const run = {
    config: "/etc/pt/my config.yaml",
    host: "hv2",
    sysfs: "/srv/trees/hv2",
    connect: "qemu+ssh://root@hv2/system",
    stateDir: "-odd state",
  };
  // Nothing typed: the command as before.
  assertEquals(
    followUpCommand({}, "passthrough plan", { options: [["--vm", "win 11"]] }),
    "passthrough plan --vm 'win 11'",
  );
  assertEquals(
    followUpCommand(undefined, "passthrough backups", { value: "win10" }),
    "passthrough backups win10",
  );
  const plan = followUpCommand(run, "passthrough plan", { options: [["--vm", "win 11"]] });
  assertEquals(
    plan,
    "passthrough plan --vm 'win 11' --config '/etc/pt/my config.yaml' --host hv2 --sysfs /srv/trees/hv2 -c qemu+ssh://root@hv2/system",
  );
  assertEquals(throughSh(plan.slice("passthrough ".length)), [
    "plan",
    "--vm",
    "win 11",
    "--config",
    "/etc/pt/my config.yaml",
    "--host",
    "hv2",
    "--sysfs",
    "/srv/trees/hv2",
    "-c",
    "qemu+ssh://root@hv2/system",
  ]);
  // Only what the command takes: backups reads no libvirt, devices only the tree.
  assertEquals(
    followUpCommand(run, "passthrough backups", { value: "-lab" }),
    "passthrough backups --state-dir='-odd state' -- -lab",
  );
  assertEquals(
    followUpCommand(run, "passthrough devices"),
    "passthrough devices --sysfs /srv/trees/hv2",
  );
  assertEquals(
    followUpCommand({ connect: "-weird", allowUriPrograms: true }, "passthrough rollback", {
      value: "vm",
    }),
    "passthrough rollback vm --allow-uri-programs --connect=-weird",
  );
});

Deno.test("followUpCommand() repeats --allow-uri-programs for a URI the config names, not -c", () => {
  const run = { config: "/etc/pt.yaml", allowUriPrograms: true };
  assertEquals(
    followUpCommand(run, "passthrough plan"),
    "passthrough plan --config /etc/pt.yaml --allow-uri-programs",
  );
  // backups opens no libvirt.
  assertEquals(followUpCommand(run, "passthrough backups"), "passthrough backups");
});

Deno.test("followUpCommand() never prints a URI's password to re-run with: it asks for the user's own -c", () => {
  const text = followUpCommand(
    { connect: "qemu+tcp://admin:s3cret@hv9/system", stateDir: "/srv/pt" },
    "passthrough rollback",
    { value: "win10", options: [["--to", "1"]] },
  );
  assertEquals(
    text,
    "passthrough rollback win10 --to 1 -c URI --state-dir /srv/pt (your URI: this run's holds a password, not repeated here)",
  );
  assertEquals(text.includes("s3cret") || text.includes("admin"), false);
});

Deno.test("followUpCommand() repeats --libvirt-timeout for the commands that open libvirt", () => {
  // A daemon that needed 300 s for this run needs them for the plan it advises too.
  const run = runFlags({ connect: "qemu:///system", "libvirt-timeout": "300", "state-dir": "/s" });
  assertEquals(
    followUpCommand(run, "passthrough plan"),
    "passthrough plan -c qemu:///system --libvirt-timeout 300",
  );
  assertEquals(
    followUpCommand(run, "passthrough rollback", { value: "win10" }),
    "passthrough rollback win10 -c qemu:///system --libvirt-timeout 300 --state-dir /s",
  );
  assertEquals(
    followUpCommand(run, "passthrough doctor"),
    "passthrough doctor -c qemu:///system --libvirt-timeout 300",
  );
  // backups opens no libvirt.
  assertEquals(followUpCommand(run, "passthrough backups"), "passthrough backups --state-dir /s");
});
