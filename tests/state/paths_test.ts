import fc from "fast-check";
import posix from "node:path/posix";
import { assertEquals } from "../helpers/assert.ts";
import { dirname, isAbsolute, join, resolve } from "../../lib/state/paths.ts";

// node:path is the reference: the helpers replace it and must give its results.

const EDGE_CASES = [
  "",
  "/",
  "//",
  "///",
  ".",
  "..",
  "./",
  "../",
  "/..",
  "/../..",
  "a",
  "a/",
  "a//",
  "/a",
  "/a/",
  "//a",
  "a//b",
  "a/./b",
  "a/../b",
  "a/b/..",
  "a/b/../",
  "../a",
  "../../a/..",
  "a/../..",
  "ab/..",
  "abc/../..",
  "../a/..",
  "...",
  "a/...",
  ".a/..b/",
  "/var/lib/passthrough/",
  "conf/../trees/x",
];

Deno.test("join() gives node:path's result on edge cases", () => {
  for (const a of EDGE_CASES) {
    assertEquals(join(a), posix.join(a), `join(${JSON.stringify(a)})`);
    for (const b of EDGE_CASES) {
      assertEquals(
        join(a, b),
        posix.join(a, b),
        `join(${JSON.stringify(a)}, ${JSON.stringify(b)})`,
      );
    }
  }
  assertEquals(join(), ".");
  assertEquals(join("a", "", "b"), "a/b");
  assertEquals(join("/", ".."), "/");
  assertEquals(join("a", "../.."), "..");
  assertEquals(join("a/", "b/"), "a/b/");
  assertEquals(join("a", "."), "a");
  assertEquals(join("a", "./"), "a/");
  assertEquals(join(".", "/"), "./");
});

Deno.test("dirname() gives node:path's result on edge cases", () => {
  for (const path of EDGE_CASES) {
    assertEquals(dirname(path), posix.dirname(path), `dirname(${JSON.stringify(path)})`);
  }
  assertEquals(dirname("/a/b/"), "/a");
  assertEquals(dirname("a//b"), "a/");
  assertEquals(dirname("//a"), "//");
  assertEquals(dirname("/"), "/");
  assertEquals(dirname(".."), ".");
});

Deno.test("resolve() gives node:path's result on edge cases, from the current directory", () => {
  for (const a of EDGE_CASES) {
    assertEquals(resolve(a), posix.resolve(a), `resolve(${JSON.stringify(a)})`);
    for (const b of EDGE_CASES) {
      assertEquals(
        resolve(a, b),
        posix.resolve(a, b),
        `resolve(${JSON.stringify(a)}, ${JSON.stringify(b)})`,
      );
    }
  }
  assertEquals(resolve("state"), `${Deno.cwd()}/state`);
  assertEquals(resolve("/srv/pt/", ".."), "/srv");
  assertEquals(resolve("/", "../.."), "/");
  assertEquals(resolve(), Deno.cwd());
});

Deno.test("isAbsolute() is true for a leading slash only", () => {
  for (const path of EDGE_CASES) {
    assertEquals(isAbsolute(path), posix.isAbsolute(path), `isAbsolute(${JSON.stringify(path)})`);
  }
});

/** Paths made of the characters that matter to normalisation. */
const path = fc.array(fc.constantFrom("/", ".", "a", "b", ".."), { maxLength: 10 })
  .map((parts) => parts.join(""));

Deno.test("join(), dirname() and resolve() give node:path's results on random paths", () => {
  fc.assert(
    fc.property(fc.array(path, { maxLength: 4 }), (segments) => {
      assertEquals(join(...segments), posix.join(...segments), JSON.stringify(segments));
      assertEquals(resolve(...segments), posix.resolve(...segments), JSON.stringify(segments));
      for (const segment of segments) {
        assertEquals(dirname(segment), posix.dirname(segment), JSON.stringify(segment));
      }
    }),
    { numRuns: 5000 },
  );
});
