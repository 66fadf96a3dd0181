/**
 * SHA-256, synchronous: the backups' checksums and the connection lock's file name need a hash on
 * paths that are synchronous. npm `@noble/hashes` (audited, no dependencies) rather than
 * `node:crypto`, the only synchronous one Deno has, which loads its whole Node compatibility layer
 * into `apply` at start; `crypto.subtle` is asynchronous. `tests/state/sha256_test.ts` compares it
 * with `node:crypto`.
 *
 * @module
 */

import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";

/**
 * The SHA-256 digest of `input` (a string is hashed as its UTF-8 bytes), as lower-case hex.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(
 *   sha256Hex("abc"),
 *   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
 * );
 * ```
 */
export function sha256Hex(input: string | Uint8Array): string {
  return bytesToHex(sha256(typeof input === "string" ? new TextEncoder().encode(input) : input));
}
