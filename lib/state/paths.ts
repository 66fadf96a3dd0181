/**
 * POSIX path helpers with the results of `node:path`'s `join`, `dirname`, `isAbsolute` and
 * `resolve` (what the config and the state directory use). Any `node:` import loads Deno's Node
 * compatibility layer at start (docs/BENCHMARKS.md), which `plan` and `apply` would pay for these
 * few string operations. `tests/state/paths_test.ts` compares them with `node:path` on random
 * paths.
 *
 * @module
 */

/**
 * Whether `path` starts at the root (`/`).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(isAbsolute("/etc"), true);
 * assertEquals(isAbsolute("etc/.."), false);
 * assertEquals(isAbsolute(""), false);
 * ```
 */
export function isAbsolute(path: string): boolean {
  return path.charCodeAt(0) === 47 /* / */;
}

/**
 * Whether `name` is one entry of a directory: not empty, no `/`, not `.` or `..`. A name that
 * comes from outside (a domain's XML, a link's target) must be one before it is joined to a
 * directory, or it could lead out of it.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals([".uplink", "eth0", "..", ".", "", "a/b"].map(isFileName), [
 *   true, true, false, false, false, false,
 * ]);
 * ```
 */
export function isFileName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !name.includes("/");
}

/**
 * The segments joined with `/` and normalised: empty segments skipped, `.` dropped, `..` taking
 * the segment before it away (above the root it stays `/`; a relative path keeps leading `..`),
 * repeated slashes made one, a trailing slash kept; `.` when nothing is left.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(join("/var/lib", "passthrough", "backups"), "/var/lib/passthrough/backups");
 * assertEquals(join("conf", "../trees/x/"), "trees/x/");
 * assertEquals(join("/", "..", "a"), "/a");
 * assertEquals(join("a", ".."), ".");
 * ```
 */
export function join(...segments: string[]): string {
  const joined = segments.filter((s) => s !== "").join("/");
  return joined === "" ? "." : normalize(joined);
}

/**
 * The directory part of `path`: everything before its last segment, trailing slashes ignored;
 * `/` for a segment under the root and `.` for a relative path of one segment.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(dirname("/etc/passthrough/config.yaml"), "/etc/passthrough");
 * assertEquals(dirname("/etc/"), "/");
 * assertEquals(dirname("config.yaml"), ".");
 * ```
 */
export function dirname(path: string): string {
  if (path === "") return ".";
  const hasRoot = isAbsolute(path);
  // The slash before the last segment: trailing slashes are skipped first. As node:path does,
  // only that one slash is cut ("a//b" gives "a/"), and the first character is never looked at.
  let end = -1;
  let inTrailingSlashes = true;
  for (let i = path.length - 1; i >= 1; i--) {
    if (path.charCodeAt(i) === 47) {
      if (!inTrailingSlashes) {
        end = i;
        break;
      }
    } else {
      inTrailingSlashes = false;
    }
  }
  if (end === -1) return hasRoot ? "/" : ".";
  if (hasRoot && end === 1) return "//";
  return path.slice(0, end);
}

/**
 * The absolute, normalised path of `segments` taken in turn from the current directory, as a
 * shell's `cd` would: an absolute segment starts again from the root. No trailing slash.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(resolve("/srv", "pt/", "../state"), "/srv/state");
 * assertEquals(resolve("/srv", "/var/lib/"), "/var/lib");
 * assertEquals(resolve("state"), `${Deno.cwd()}/state`);
 * ```
 */
export function resolve(...segments: string[]): string {
  let path = "";
  for (let i = segments.length - 1; i >= -1 && !isAbsolute(path); i--) {
    const segment = i >= 0 ? segments[i]! : Deno.cwd();
    if (segment !== "") path = path === "" ? segment : `${segment}/${path}`;
  }
  const normal = normalSegments(path, !isAbsolute(path)).join("/");
  if (isAbsolute(path)) return `/${normal}`;
  return normal === "" ? "." : normal;
}

/** `path` normalised as {@link join} describes. */
function normalize(path: string): string {
  const absolute = isAbsolute(path);
  const trailingSlash = path.charCodeAt(path.length - 1) === 47;
  let normal = normalSegments(path, !absolute).join("/");
  if (normal === "") {
    if (absolute) return "/";
    return trailingSlash ? "./" : ".";
  }
  if (trailingSlash) normal += "/";
  return absolute ? `/${normal}` : normal;
}

/**
 * The segments of `path` with empty ones and `.` dropped and each `..` taking the one before it
 * away; a `..` with nothing before it is kept when `aboveRoot` (a relative path), else dropped.
 */
function normalSegments(path: string, aboveRoot: boolean): string[] {
  const out: string[] = [];
  for (const segment of path.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment !== "..") out.push(segment);
    else if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
    else if (aboveRoot) out.push("..");
  }
  return out;
}

/**
 * Whether anything is at `path` (a link is not followed). A denied look throws: it is not an
 * answer.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * assertEquals([pathExists(dir), pathExists(`${dir}/none`)], [true, false]);
 * Deno.removeSync(dir);
 * ```
 */
export function pathExists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/**
 * `path` with its deepest existing ancestor's links resolved and the rest as written: where a
 * directory not made yet (a state directory `hook install` is about to create) would land, or
 * what a failed mkdir or open names. `null` when not even `/` can be resolved.
 */
export function realPathOfExisting(path: string): string | null {
  const missing: string[] = [];
  for (let at = path;;) {
    try {
      return join(Deno.realPathSync(at), ...missing);
    } catch {
      const up = dirname(at);
      if (up === at) return null;
      const trimmed = at.replace(/\/+$/, "");
      missing.unshift(trimmed.slice(trimmed.lastIndexOf("/") + 1));
      at = up;
    }
  }
}
