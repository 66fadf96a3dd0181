import { createHash } from "node:crypto";
import { assertEquals } from "../helpers/assert.ts";
import { sha256Hex } from "../../lib/state/sha256.ts";

function reference(input: string | Uint8Array): string {
  return createHash("sha256").update(input).digest("hex");
}

Deno.test("sha256Hex() gives the FIPS 180-4 digests of the standard messages", () => {
  assertEquals(sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  assertEquals(
    sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
  assertEquals(
    sha256Hex("a".repeat(1_000_000)),
    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
  );
});

Deno.test("sha256Hex() agrees with node:crypto on every length around the block boundaries", () => {
  // Lengths 0..300 cover the one- and two-block paddings (55, 56, 63, 64, 119, 120, ...).
  for (let length = 0; length <= 300; length++) {
    const bytes = crypto.getRandomValues(new Uint8Array(length));
    assertEquals(sha256Hex(bytes), reference(bytes), `${length} bytes`);
  }
});

Deno.test("sha256Hex() hashes a string as its UTF-8 bytes, as node:crypto does", () => {
  for (
    const text of ["vm-é", "日本語のVM", "\u{1F600} emoji", "<domain>\0</domain>", "x".repeat(70)]
  ) {
    assertEquals(sha256Hex(text), reference(text), text);
  }
  for (let i = 0; i < 200; i++) {
    const length = Math.floor(Math.random() * 20_000);
    const bytes = crypto.getRandomValues(new Uint8Array(length));
    assertEquals(sha256Hex(bytes), reference(bytes), `${length} random bytes`);
  }
});
