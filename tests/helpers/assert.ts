/**
 * Assertions for tests and doc examples: Node's strict assert (JSR's @std/assert is unreachable
 * from CI), re-exported under the names Deno users know.
 *
 * `assertThrows` and `assertRejects` keep Deno's meaning of a third argument after an error
 * class: text the error's message must include (Node's would take it as the failure's message
 * and check nothing more than the class).
 *
 * @module
 */
import assert from "node:assert/strict";
import process from "node:process";

export const assertEquals: <T>(
  actual: unknown,
  expected: T,
  message?: string,
) => asserts actual is T = assert.deepStrictEqual;
export const assertMatch: (value: string, pattern: RegExp, message?: string) => void = assert.match;
export const assertOk: (value: unknown, message?: string) => asserts value = assert.ok;
export { assert };

/** What Node's `throws` and `rejects` take as the expected error. */
type Expected = Parameters<typeof assert.throws>[1];
// deno-lint-ignore no-explicit-any
type ErrorClass = new (...args: any[]) => Error;

/** `expected`, and with an error class and `includes`, that its message includes that text. */
function expecting(expected: ErrorClass, includes: string): (error: unknown) => boolean {
  return (error) => {
    if (!(error instanceof expected)) {
      throw new assert.AssertionError({
        message: `Expected a ${expected.name}, got ${String(error)}`,
        actual: error,
        expected,
      });
    }
    if (!error.message.includes(includes)) {
      throw new assert.AssertionError({
        message: `Expected the message to include "${includes}", got "${error.message}"`,
      });
    }
    return true;
  };
}

/** Whether `expected` is an error class (a constructor of an `Error`). */
function isErrorClass(expected: unknown): expected is ErrorClass {
  return typeof expected === "function" &&
    (expected === Error || expected.prototype instanceof Error);
}

/** Node's `assert.throws`; with an error class and a string, the message must include it. */
export function assertThrows(fn: () => unknown, expected?: Expected, includes?: string): void {
  if (isErrorClass(expected) && includes !== undefined) {
    assert.throws(fn, expecting(expected, includes));
  } else if (expected === undefined) {
    assert.throws(fn);
  } else {
    assert.throws(fn, expected, includes);
  }
}

/** Node's `assert.rejects`; with an error class and a string, the message must include it. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  expected?: Expected,
  includes?: string,
): Promise<void> {
  if (isErrorClass(expected) && includes !== undefined) {
    await assert.rejects(fn, expecting(expected, includes));
  } else if (expected === undefined) {
    await assert.rejects(fn);
  } else {
    await assert.rejects(fn, expected, includes);
  }
}

/**
 * Runs `fn` and fails, with `label`, when it took more than `ms` milliseconds of this process's
 * CPU: a bound that tells quadratic work from linear even on a loaded machine, where the wall
 * clock also counts the time other processes had the CPU. Returns what `fn` returned.
 */
export function assertCpuWithin<T>(ms: number, fn: () => T, label: string): T {
  const before = process.cpuUsage();
  const result = fn();
  const { user, system } = process.cpuUsage(before);
  const took = (user + system) / 1000;
  assert.ok(took <= ms, `${label}: ${Math.round(took)} ms of CPU, more than ${ms}`);
  return result;
}
