/**
 * The output boundary for secrets. Plans and apply reports hold definitions read with
 * `VIR_DOMAIN_XML_SECURE` (so what is defined keeps its passwords); everything printed goes
 * through the domain module's one redaction, {@link redactSecrets}.
 *
 * @module
 */

import { redactSecrets } from "../domain/secrets.ts";

/**
 * `value` as indented JSON with every string's secret values shown as `***`: what `--json`
 * prints.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   redactedJson({ xml: "<graphics passwd='pw'/>" }),
 *   `{\n  "xml": "<graphics passwd='***'/>"\n}\n`,
 * );
 * ```
 */
export function redactedJson(value: unknown): string {
  const replacer = (_key: string, v: unknown) => typeof v === "string" ? redactSecrets(v) : v;
  return `${JSON.stringify(value, replacer, 2)}\n`;
}
