/**
 * libvirt connection URIs, apart from the config code (and its YAML parser), for the commands
 * that only need to know where a URI points.
 *
 * @module
 */

/**
 * Whether a libvirt URI names another machine (`qemu+ssh://hv1/system`) rather than this one
 * (`qemu:///system`, `test:///default`): a URI with a host part is remote.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(isRemoteUri("qemu+ssh://root@hv1/system"), true);
 * assertEquals(isRemoteUri("qemu:///system?socket=/tmp/s"), false);
 * ```
 */
export function isRemoteUri(uri: string): boolean {
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(uri);
  if (m === null) return false;
  const authority = (m[1] ?? "").replace(/^[^@]*@/, "").replace(/:\d*$/, "");
  return authority !== "";
}
