/**
 * The one line a thrown value becomes in messages.
 *
 * @module
 */

/**
 * An error's message, or the thrown value as text (the stack stays out of what users read).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(errorText(new Error("no such domain")), "no such domain");
 * assertEquals(errorText("plain"), "plain");
 * ```
 */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
