/**
 * The command table. Each command lives in its own module under `cli/`; add one line here.
 *
 * @module
 */

import type { Command } from "./context.ts";
import { devicesCommand } from "./devices.ts";
import { groupsCommand } from "./groups.ts";
import { snapshotCommand } from "./snapshot.ts";
import { doctorCommand } from "./doctor.ts";
import { sourcesCommand } from "./sources.ts";
import { planCommand } from "./plan.ts";
import { demoCommand } from "./demo.ts";
import { applyCommand } from "./apply.ts";
import { rollbackCommand } from "./rollback.ts";
import { backupsCommand } from "./backups.ts";

/** Every subcommand, in the order `passthrough --help` lists them. */
export const COMMANDS: Command[] = [
  devicesCommand,
  groupsCommand,
  snapshotCommand,
  doctorCommand,
  sourcesCommand,
  planCommand,
  applyCommand,
  rollbackCommand,
  backupsCommand,
  demoCommand,
];
