/**
 * `passthrough plan`: what would change, as diffs with the group reasoning, or as JSON.
 *
 * @module
 */

import type { Command } from "./context.ts";
import {
  computePlan,
  parseFlags,
  PLAN_FLAGS,
  PLAN_FLAGS_HELP,
  planHasErrors,
  planJson,
} from "./plan_options.ts";
import { renderPlan } from "./render_plan.ts";

const HELP = `Usage: passthrough plan [options]

Shows, per VM, the diff of its persistent definition that 'apply' would make, why each device
is included, and any warnings or refusals. Changes nothing.

Options:
${PLAN_FLAGS_HELP}
      --detailed-exitcode  exit 0 with no changes, 2 with changes pending, 1 on errors

One process plans one host. With a hosts: section in the config, that is the section of --host
NAME or of this machine's host name (named on stderr); a config with no such section is an
error. Several hosts: run passthrough on each (ansible/passthrough.yml, docs/FLEET.md).

Exit codes: 0 ok, 1 refused or failed, 2 usage error (or changes pending with
--detailed-exitcode).
`;

/** The `plan` command. */
export const planCommand: Command = {
  name: "plan",
  summary: "show the hostdev changes the config asks for, as diffs",
  help: HELP,
  async run(args, io) {
    const { values } = parseFlags(args, {
      ...PLAN_FLAGS,
      "detailed-exitcode": { type: "boolean", default: false },
    });
    using computed = await computePlan(values, io);
    const { plan } = computed;
    io.out(values.json ? planJson(plan) : renderPlan(plan, { color: io.color }));
    if (planHasErrors(plan)) return 1;
    const pending = plan.vms.some((vm) => vm.changed);
    return values["detailed-exitcode"] && pending ? 2 : 0;
  },
};
