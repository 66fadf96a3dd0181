/**
 * A nightly drift check built on the passthrough library: plans the config against the host and
 * libvirt, prints one line per VM, and exits 0 when every VM matches, 3 when changes are pending,
 * 1 when something is refused (a card moved, a group became unsafe, a rule became ambiguous) or
 * cannot be checked (a missing config, libvirt unreachable: one line on stderr), 2 when its
 * command line is wrong. Suitable for cron or a monitoring check; it changes nothing.
 *
 *   deno run --no-prompt --allow-ffi --allow-run=lspci --allow-read --allow-write \
 *     --allow-sys=hostname --allow-env=LOG_TOKENS,LOG_STREAM \
 *     examples/drift_check.ts CONFIG [--sysfs DIR] [-c, --connect URI]
 *
 * `--sysfs` and `--connect` are `passthrough plan`'s, parsed as it parses them: a tree captured
 * with `passthrough snapshot` instead of `/sys`, and the libvirt URI (default: libvirt's).
 * With no arguments it checks the bundled demo (demo/, built in a temporary directory: hence
 * --allow-write), which has pending changes. A config shared by several hosts (`hosts:`) is
 * checked for this machine's section, found by its host name (hence --allow-sys=hostname), as
 * `passthrough plan` does, reading the tree and libvirt that section's `sysfs:` and `connect:`
 * name; either flag is refused where the section names its own, as `plan` refuses it.
 *
 * @module
 */

import {
  confinedReader,
  discoverHost,
  loadConfig,
  pickHostSection,
  planHostdevs,
  redactSecrets,
  terminalSafe,
} from "../lib/mod.ts";
import { buildHostTree, loadHostDescription } from "../lib/testing/mod.ts";
import { libcSysfsReader, openLibvirtPort } from "../ffi/mod.ts";
import { CONNECT_FLAG, HOST_FLAGS, parseCommand } from "../cli/flags.ts";
import { UsageError } from "../cli/context.ts";

const SPEC = {
  name: "drift_check",
  summary: "check the config against the host and libvirt",
  flags: {
    ...HOST_FLAGS,
    connect: CONNECT_FLAG.connect,
    help: { type: "boolean", short: "h", help: "show this help" },
  },
  positionals: [{ name: "CONFIG" }],
  about: "Plans CONFIG against the host and libvirt and prints one line per VM.",
} as const;

/** Printed for `--help`, and after a usage error. */
const USAGE = "Usage: drift_check.ts [CONFIG] [--sysfs DIR] [-c, --connect URI]\n" +
  "Without CONFIG, checks the bundled demo. Exit 0: every VM matches, 3: changes pending,\n" +
  "1: refused or cannot be checked, 2: wrong command line.";

const demo = new URL("../demo/", import.meta.url).pathname;

/**
 * Prints a line as the CLI prints every line (`main.ts`), control characters escaped: names come
 * from the tree (a driver, a slot, an entry), libvirt (a domain) and lspci, and a terminal runs
 * the controls they may hold (retitle the window, clear the screen, reverse the line).
 */
function say(line: string, stream: "out" | "err" = "out"): void {
  (stream === "out" ? console.log : console.error)(terminalSafe(line, false));
}
let tmp: string | undefined;

try {
  let { positionals: [configPath], values: { sysfs, connect: uri, help } } = parseCommand(
    SPEC,
    Deno.args,
  );
  if (help) {
    say(USAGE);
    Deno.exit(0);
  }
  if (configPath === undefined) {
    configPath = `${demo}passthrough_config.yaml`;
    uri ??= `test://${demo}world.xml`;
    if (sysfs === undefined) {
      tmp = Deno.makeTempDirSync({ prefix: "drift-check-" });
      sysfs = `${tmp}/sysfs`;
      buildHostTree(loadHostDescription(`${demo}host.json`), sysfs);
    }
  }
  const loaded = await loadConfig(configPath);
  const picked = pickHostSection(loaded, { hostname: () => Deno.hostname() });
  // The section's `sysfs:` and `connect:` stand in for --sysfs and --connect, as for
  // `passthrough plan`, which refuses both given: which one it read would be a guess.
  for (
    const [flag, given, value] of [
      ["sysfs", sysfs, picked?.host.sysfs],
      ["connect", uri, picked?.host.uri],
    ] as const
  ) {
    if (given !== undefined && value != null) {
      throw new UsageError(
        `--${flag} and hosts.${picked?.host.name}.${flag} in ${loaded.file} both say where to look: keep one`,
      );
    }
  }
  const config = picked?.config ?? loaded;
  // Read through libc: Deno refuses the live /sys (however spelled: `/sys/`) without
  // --allow-all. discoverHost tells the live /sys from a captured tree, which, as `plan` reads
  // one, is read only inside itself: a tree shared with a bug report may link anywhere.
  const root = picked?.host.sysfs ?? sysfs ?? "/sys";
  const live = root.replace(/(.)\/+$/, "$1") === "/sys";
  const reader = live ? libcSysfsReader() : confinedReader(libcSysfsReader(), root);
  const host = await discoverHost({ root, reader });
  using libvirt = openLibvirtPort(picked?.host.uri ?? uri ?? null, { readOnly: true });
  const plan = planHostdevs({ config, host, libvirt });

  // A refusal outranks pending changes, whichever VM comes first.
  let refused = plan.errors.length > 0;
  let pending = false;
  for (const issue of plan.errors) say(`host: refused [${issue.code}] ${issue.message}`);
  for (const vm of plan.vms) {
    if (vm.errors.length > 0) {
      refused = true;
      say(`${vm.name}: refused: ${vm.errors.map((e) => e.code).join(", ")}`);
    } else if (vm.changed) {
      pending = true;
      const moved = vm.move.map((m) => `${m.from}->${m.to}`);
      say(
        `${vm.name}: pending: +${vm.add.length} -${vm.remove.length}${
          moved.length ? ` moved ${moved.join(" ")}` : ""
        }`,
      );
    } else {
      say(`${vm.name}: ok (${vm.hostdevs.join(", ") || "no hostdevs"})`);
    }
  }
  Deno.exitCode = refused ? 1 : pending ? 3 : 0;
} catch (error) {
  // A missing config, an unreadable tree, libvirt down: one line, as a cron mail should say it,
  // without the password a URI given on the command line may hold.
  const usage = error instanceof UsageError;
  say(
    `drift_check: ${redactSecrets(error instanceof Error ? error.message : String(error))}${
      usage ? `\n${USAGE}` : ""
    }`,
    "err",
  );
  Deno.exitCode = usage ? 2 : 1;
} finally {
  if (tmp !== undefined) Deno.removeSync(tmp, { recursive: true });
}
