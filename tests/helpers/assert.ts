/**
 * Assertions for tests and doc examples: Node's strict assert (JSR's @std/assert is unreachable
 * from CI), re-exported under the names Deno users know.
 *
 * @module
 */
import assert from "node:assert/strict";

export const assertEquals: <T>(
  actual: unknown,
  expected: T,
  message?: string,
) => asserts actual is T = assert.deepStrictEqual;
export const assertMatch: (value: string, pattern: RegExp, message?: string) => void = assert.match;
export const assertThrows = assert.throws;
export const assertRejects = assert.rejects;
export const assertOk: (value: unknown, message?: string) => asserts value = assert.ok;
export { assert };
