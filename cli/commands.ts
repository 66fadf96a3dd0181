/**
 * The command table: each subcommand's name and one-line summary, and how to load its module.
 * Modules are imported only for the command that runs (or whose `--help` is asked for), so
 * `groups` does not pay for the YAML parser, the XML parser and the diff library that `plan` and
 * `apply` need (start-up went from ~240 ms to ~140 ms). Add one line here per command; the test
 * in `tests/cli/bundle_test.ts` checks that each summary matches its module.
 *
 * `deno bundle` inlines these dynamic imports into its one output file (checked by the same test).
 *
 * @module
 */

import type { Command } from "./context.ts";

/** One row of the command table. */
export interface CommandEntry {
  /** The subcommand name, as typed. */
  name: string;
  /** One line for `passthrough --help` (the same text as the module's `Command.summary`). */
  summary: string;
  /** Imports the command's module and returns its {@link Command}. */
  load(): Promise<Command>;
}

/** Every subcommand, in the order `passthrough --help` lists them. */
export const COMMANDS: readonly CommandEntry[] = [
  {
    name: "devices",
    summary: "list the host's PCI devices",
    load: async () => (await import("./devices.ts")).devicesCommand,
  },
  {
    name: "groups",
    summary: "list the host's IOMMU groups",
    load: async () => (await import("./groups.ts")).groupsCommand,
  },
  {
    name: "snapshot",
    summary: "capture the host's PCI/IOMMU topology into a portable tree",
    load: async () => (await import("./snapshot.ts")).snapshotCommand,
  },
  {
    name: "doctor",
    summary: "check that this host is ready for PCI passthrough",
    load: async () => (await import("./doctor.ts")).doctorCommand,
  },
  {
    name: "sources",
    summary: "compare sysfs/lspci discovery with libvirt's node-device API",
    load: async () => (await import("./sources.ts")).sourcesCommand,
  },
  {
    name: "plan",
    summary: "show the hostdev changes the config asks for, as diffs",
    load: async () => (await import("./plan.ts")).planCommand,
  },
  {
    name: "apply",
    summary: "apply the plan: confirm, back up, define, verify",
    load: async () => (await import("./apply.ts")).applyCommand,
  },
  {
    name: "rollback",
    summary: "restore a VM's definition from a backup",
    load: async () => (await import("./rollback.ts")).rollbackCommand,
  },
  {
    name: "backups",
    summary: "list the backups taken before each define",
    load: async () => (await import("./backups.ts")).backupsCommand,
  },
  {
    name: "demo",
    summary: "plan and apply on the bundled demo host and VMs (no IOMMU needed)",
    load: async () => (await import("./demo.ts")).demoCommand,
  },
];
