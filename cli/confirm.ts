/**
 * Terminal confirmation for `apply` and `rollback`: `y`/`n`/`a` (all)/`q` (quit), read through
 * {@link CliIo.readLine} so tests can script the answers. Enter alone means no (`[y/N]`), as in
 * most tools: a change is made only when asked for.
 *
 * @module
 */

import type { CliIo } from "./context.ts";
import type { ConfirmAnswer } from "../lib/apply/apply.ts";
import type { VmPlan } from "../lib/plan/types.ts";

const ANSWERS: Record<string, ConfirmAnswer> = {
  y: "yes",
  yes: "yes",
  n: "no",
  no: "no",
  a: "all",
  all: "all",
  q: "quit",
  quit: "quit",
};

/**
 * Asks whether to apply `vm`'s changes until the answer is one of y/n/a/q (or the words); an
 * empty line is `no`. End of input counts as `quit`, so a closed stdin never applies anything.
 */
export async function confirmVm(io: CliIo, vm: VmPlan): Promise<ConfirmAnswer> {
  const say = io.prompt ?? io.out;
  for (;;) {
    say(`Apply the changes to "${vm.name}"? [y/N/a/q] `);
    const line = await io.readLine();
    if (line === null) {
      say("\n");
      return "quit";
    }
    const word = line.trim().toLowerCase();
    // Own keys only: `constructor` or `__proto__` is no answer (an object's, not one of ours).
    const answer = word === "" ? "no" : Object.hasOwn(ANSWERS, word) ? ANSWERS[word] : undefined;
    if (answer !== undefined) return answer;
    say("Please answer y, n, a or q (yes, no, all remaining, quit)\n");
  }
}

/**
 * The `confirm` callback for `applyPlan`: with `yes`, answers `all` without reading anything;
 * otherwise prints what `show` returns for the VM (its diff, so the question sits right under
 * it) and asks on the terminal.
 */
export function makeConfirm(
  io: CliIo,
  options: { yes: boolean; show?: (vm: VmPlan) => string },
): (vm: VmPlan) => Promise<ConfirmAnswer> {
  if (options.yes) return () => Promise.resolve("all");
  return (vm) => {
    const shown = options.show?.(vm) ?? "";
    // Where the question goes: with standard output in a file, the diff there was never seen.
    if (shown !== "") (io.prompt ?? io.out)(shown);
    return confirmVm(io, vm);
  };
}

/** A yes/no question (rollback), asked until answered; Enter alone or end of input is no. */
export async function confirmYesNo(io: CliIo, question: string): Promise<boolean> {
  const say = io.prompt ?? io.out;
  for (;;) {
    say(`${question} [y/N] `);
    const line = await io.readLine();
    if (line === null) {
      say("\n");
      return false;
    }
    const answer = line.trim().toLowerCase();
    if (answer === "y" || answer === "yes") return true;
    if (answer === "" || answer === "n" || answer === "no") return false;
    say("Please answer y or n\n");
  }
}
