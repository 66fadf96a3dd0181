/**
 * XML's own entities (the five predefined ones and character references), shared by the strict
 * reader (`xml.ts`, which also loads fast-xml-parser) and the lenient one (`lenient.ts`, which the
 * start hook loads alone, so it must not import `xml.ts`).
 *
 * @module
 */

/** A predefined entity (group 1) or a decimal (2) or hexadecimal (3) character reference. */
export const ENTITY: RegExp = /&(?:(amp|lt|gt|apos|quot)|#([0-9]+)|#x([0-9a-fA-F]+));/g;
/** What each predefined entity stands for. */
export const PREDEFINED: Readonly<Record<string, string>> = {
  amp: "&",
  lt: "<",
  gt: ">",
  apos: "'",
  quot: '"',
};
/** An `&` that does not start a predefined entity or a character reference. */
export const BAD_AMPERSAND: RegExp = /&(?!(?:amp|lt|gt|apos|quot|#[0-9]+|#x[0-9a-fA-F]+);)/;

/** XML 1.0's `Char` production: what a character reference may name. */
export function isXmlChar(code: number): boolean {
  return code === 0x9 || code === 0xa || code === 0xd || (code >= 0x20 && code <= 0xd7ff) ||
    (code >= 0xe000 && code <= 0xfffd) || (code >= 0x10000 && code <= 0x10ffff);
}

/**
 * Decodes the predefined entities and character references of XML text as the strict reader's
 * `decodeXmlText` (`xml.ts`) does; `null` where that throws (another entity, a reference to a
 * non-XML character).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(decodeEntities("a&amp;b&#10;&apos;"), "a&b\n'");
 * assertEquals(decodeEntities("&nbsp;"), null);
 * ```
 */
export function decodeEntities(text: string): string | null {
  if (!text.includes("&")) return text;
  if (BAD_AMPERSAND.test(text)) return null;
  let bad = false;
  const decoded = text.replace(ENTITY, (m, name?: string, dec?: string, hex?: string) => {
    if (name !== undefined) return PREDEFINED[name] ?? "";
    const code = dec !== undefined ? parseInt(dec, 10) : parseInt(hex ?? "", 16);
    if (isXmlChar(code)) return String.fromCodePoint(code);
    bad = true;
    return m;
  });
  return bad ? null : decoded;
}
