/**
 * The command table: each subcommand's spec (`cli/specs.ts`) and how to load the module that runs
 * it. A command's module is imported only once its command line has parsed, so `--help`, a usage
 * error or a light command such as `groups` or `backups` never pays for the YAML parser, the XML
 * parser or the diff library that `plan` and `apply` need. `deno bundle` inlines these dynamic
 * imports into its one output file (checked by `tests/cli/bundle_test.ts`).
 *
 * To add a command: declare its spec in `cli/specs.ts` (reusing the flag groups of
 * `cli/flags.ts`), add a line here, and write `cli/NAME.ts` exporting
 * `run(parsed: Parsed<typeof SPEC>, io)`. `tests/cli/flags_test.ts` then checks its help, its usage
 * errors and what its module loads.
 *
 * @module
 */

import type { Command } from "./context.ts";
import { defineCommand } from "./flags.ts";
import {
  APPLY,
  BACKUPS,
  DEMO,
  DEVICES,
  DOCTOR,
  GROUPS,
  GUARD,
  HOOK,
  PLAN,
  ROLLBACK,
  SNAPSHOT,
  SOURCES,
} from "./specs.ts";

/** Every subcommand, in the order `passthrough --help` lists them. */
export const COMMANDS: readonly Command[] = [
  defineCommand(DEVICES, async () => (await import("./devices.ts")).run),
  defineCommand(GROUPS, async () => (await import("./groups.ts")).run),
  defineCommand(SNAPSHOT, async () => (await import("./snapshot.ts")).run),
  defineCommand(DOCTOR, async () => (await import("./doctor.ts")).run),
  defineCommand(SOURCES, async () => (await import("./sources.ts")).run),
  defineCommand(PLAN, async () => (await import("./plan.ts")).run),
  defineCommand(APPLY, async () => (await import("./apply.ts")).run),
  defineCommand(ROLLBACK, async () => (await import("./rollback.ts")).run),
  defineCommand(BACKUPS, async () => (await import("./backups.ts")).run),
  defineCommand(HOOK, async () => (await import("./hook.ts")).run),
  defineCommand(GUARD, async () => (await import("./guard.ts")).run),
  defineCommand(DEMO, async () => (await import("./demo.ts")).run),
];
