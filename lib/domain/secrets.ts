/**
 * Secrets in a domain definition: which values libvirt shows only with `VIR_DOMAIN_XML_SECURE`,
 * and the one redaction every output applies to them. Dependency-free, so the CLI's error path
 * can load it without the XML modules.
 *
 * @module
 */

/**
 * Attributes libvirt shows only with `VIR_DOMAIN_XML_SECURE`: graphics passwords (VNC, SPICE,
 * RDP). Other credentials in a definition are references (secret UUIDs), not values.
 */
const SECRET_ATTRIBUTE = /(\spasswd\s*=\s*)(?:"([^"]*)"|'([^']*)')/g;

/**
 * `text` with every secret attribute value replaced by `***`: the one redaction for anything
 * printed from a definition read with `VIR_DOMAIN_XML_SECURE` (diffs, `--json`, messages).
 * Given `before`, the secret values of the line this one replaces (see {@link secretValues}), a
 * value that differs from the one at the same position is marked `(changed)`, so a change that
 * touches only a password stays visible.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   redactSecrets(`<graphics type='vnc' passwd='s3cret'/>`),
 *   `<graphics type='vnc' passwd='***'/>`,
 * );
 * assertEquals(
 *   redactSecrets(`<graphics type='vnc' passwd='new'/>`, ["old"]),
 *   `<graphics type='vnc' passwd='***' (changed)/>`,
 * );
 * ```
 */
export function redactSecrets(text: string, before?: readonly string[]): string {
  let index = 0;
  return text.replace(SECRET_ATTRIBUTE, (_match, head: string, dq?: string, sq?: string) => {
    const changed = before !== undefined && before[index] !== (dq ?? sq ?? "");
    index++;
    return `${head}'***'${changed ? " (changed)" : ""}`;
  });
}

/**
 * The secret attribute values of `text`, in order (for {@link redactSecrets}'s `before`).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(secretValues(`<graphics passwd="a'b"/><graphics passwd=''/>`), ["a'b", ""]);
 * ```
 */
export function secretValues(text: string): string[] {
  return [...text.matchAll(SECRET_ATTRIBUTE)].map((m) => m[2] ?? m[3] ?? "");
}
