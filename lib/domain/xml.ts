/**
 * XML primitives for lossless editing: a span scanner that checks a document is well-formed
 * while it locates every element in the original text (with the line and column of the first
 * problem), a reader for the values of small fragments (fast-xml-parser), and escaping. This is
 * the only module that imports `fast-xml-parser`; everything else works on {@link XmlSpan}s and
 * {@link XmlElement}s.
 *
 * Security: documents with a DOCTYPE are refused (no DTD is ever read, so no entity expansion and
 * no external entities), and only the five predefined entities and character references are
 * decoded; any other entity reference is a syntax error, as it is for libvirt's parser without a
 * DTD.
 *
 * @module
 */

import { XMLParser } from "fast-xml-parser";
import { BAD_AMPERSAND, ENTITY, isXmlChar, PREDEFINED } from "./entities.ts";

/** Malformed or refused XML, with the 1-based position of the problem. */
export class XmlSyntaxError extends SyntaxError {
  /** 1-based line of the problem. */
  line: number;
  /** 1-based column of the problem. */
  column: number;
  /** Builds the error; `message` should not repeat the position. */
  constructor(message: string, position: { line: number; column: number }) {
    super(`${message}: at line ${position.line}, column ${position.column}`);
    this.name = "XmlSyntaxError";
    this.line = position.line;
    this.column = position.column;
  }
}

/** One element located in a document's original text. Offsets are UTF-16 indices. */
export interface XmlSpan {
  /** Qualified name as written, e.g. `hostdev` or `passthrough:device`. */
  name: string;
  /** Attributes as written (values still escaped), in document order. */
  rawAttributes: [string, string][];
  /** Index of the `<` that starts the element. */
  start: number;
  /** Index just after the start tag's `>`. */
  startTagEnd: number;
  /** Index of the `<` of the end tag; equals `end` for a self-closing element. */
  endTagStart: number;
  /** Index just after the element (after `/>` or the end tag's `>`). */
  end: number;
  /** `true` for `<a/>`. */
  selfClosing: boolean;
  /** Child elements in document order. */
  children: XmlSpan[];
}

/** A small element read by fast-xml-parser, with decoded attribute values and text. */
export interface XmlElement {
  name: string;
  attributes: Record<string, string>;
  children: XmlElement[];
  /** The element's own text (CDATA included), decoded, children's text excluded. */
  text: string;
}

/**
 * Returns the 1-based line and column of `index` in `text`. Linear; call it only when reporting.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(lineColumnAt("a\nbc", 3), { line: 2, column: 2 });
 * ```
 */
export function lineColumnAt(text: string, index: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf("\n"); i !== -1 && i < index; i = text.indexOf("\n", i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return { line, column: index - lineStart + 1 };
}

/**
 * Decodes the predefined entities and character references of XML text. Throws `SyntaxError`
 * for any other entity reference: without a DTD there is nothing it could mean.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(decodeXmlText("a&amp;b&#10;&apos;"), "a&b\n'");
 * ```
 */
export function decodeXmlText(text: string): string {
  if (!text.includes("&")) return text;
  const bad = BAD_AMPERSAND.exec(text);
  if (bad) {
    throw new SyntaxError(
      `Unknown entity reference: "${text.slice(bad.index, bad.index + 12).split(";")[0]};"`,
    );
  }
  return text.replace(ENTITY, (_m, name?: string, dec?: string, hex?: string) => {
    if (name !== undefined) return PREDEFINED[name] ?? "";
    const code = dec !== undefined ? parseInt(dec, 10) : parseInt(hex ?? "", 16);
    if (!isXmlChar(code)) {
      throw new SyntaxError(`Character reference to a non-XML character: "${_m}"`);
    }
    return String.fromCodePoint(code);
  });
}

/**
 * Escapes a value for an attribute delimited by either quote. Newlines, tabs and carriage returns
 * become character references, since a parser would otherwise normalise them to spaces.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(escapeXmlAttribute(`a&b<'"\n`), "a&amp;b&lt;&apos;&quot;&#10;");
 * ```
 */
export function escapeXmlAttribute(value: string): string {
  return value.replace(/[&<>'"\n\r\t]/g, (c) => ATTRIBUTE_ESCAPES[c] ?? c);
}

const ATTRIBUTE_ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  "'": "&apos;",
  '"': "&quot;",
  "\n": "&#10;",
  "\r": "&#13;",
  "\t": "&#9;",
};

/**
 * Checks that `text` is one well-formed XML document without a DOCTYPE, throwing
 * {@link XmlSyntaxError} with the position of the first problem: {@link scanXml}, without
 * keeping what it located.
 */
export function checkWellFormed(text: string): void {
  scanXml(text);
}

function refuseDoctype(text: string): void {
  // A DOCTYPE may only appear in the prolog, so walk it (whitespace, comments, processing
  // instructions) up to the first other markup: the words "<!DOCTYPE" later on are text.
  let i = 0;
  for (;;) {
    const lt = text.indexOf("<", i);
    if (lt === -1) return;
    if (text.startsWith("<!--", lt)) {
      const close = text.indexOf("-->", lt + 4);
      if (close === -1) return;
      i = close + 3;
    } else if (text.startsWith("<?", lt)) {
      const close = text.indexOf("?>", lt + 2);
      if (close === -1) return;
      i = close + 2;
    } else if (/^<!DOCTYPE/i.test(text.slice(lt, lt + 9))) {
      throw new XmlSyntaxError(
        "Refusing a document with a DOCTYPE: its entity declarations could expand without bound " +
          "or read external files, and libvirt never writes one",
        lineColumnAt(text, lt),
      );
    } else {
      return;
    }
  }
}

/** What JavaScript's `\s` matches beyond ASCII, for the rare non-ASCII character. */
const SPACE = /\s/;

/** Whether the character code `c` is whitespace as `\s` has it (ASCII decided without a regex). */
function isSpace(c: number): boolean {
  if (c < 128) return c === 32 || (c >= 9 && c <= 13);
  return SPACE.test(String.fromCharCode(c));
}

/** Whether `c` may be part of a name as the scanner reads one: not space, `/>=<"'`. */
function isNameChar(c: number): boolean {
  if (c >= 128) return !isSpace(c);
  // `/` 47, `<` 60, `=` 61, `>` 62, `"` 34, `'` 39.
  return c !== 47 && c !== 60 && c !== 61 && c !== 62 && c !== 34 && c !== 39 && !isSpace(c);
}

/** The index of the first non-space character at or after `from`. */
function skipSpace(text: string, from: number): number {
  let j = from;
  while (j < text.length && isSpace(text.charCodeAt(j))) j++;
  return j;
}

/** The index just after the name that starts at `from` (`from` itself when there is none). */
function skipName(text: string, from: number): number {
  let j = from;
  while (j < text.length && isNameChar(text.charCodeAt(j))) j++;
  return j;
}

/** What may start an element or attribute name: XML's NameStartChar, non-ASCII taken as is. */
const NAME_START = /^[A-Za-z_:\u0080-\uffff]/;

/** What {@link readStartTag} needs from the scan of a whole document. */
interface ScanContext {
  text: string;
  fail(message: string, index: number): never;
  /** Refuses an unknown entity reference or bare `&` in `text[from, to)`. */
  checkEntities(from: number, to: number): void;
}

/** The start tag at `lt` (name and raw attributes), as a span that ends with the tag. */
function readStartTag({ text, fail, checkEntities }: ScanContext, lt: number): XmlSpan {
  let j = skipName(text, lt + 1);
  const name = text.slice(lt + 1, j);
  if (!NAME_START.test(name)) fail("Malformed start tag", lt);
  const rawAttributes: [string, string][] = [];
  for (;;) {
    const afterName = j;
    j = skipSpace(text, j);
    const c = text.charCodeAt(j);
    // `>` 62, `/` 47.
    if (c === 62 || (c === 47 && text.charCodeAt(j + 1) === 62)) {
      const end = c === 62 ? j + 1 : j + 2;
      return {
        name,
        rawAttributes,
        start: lt,
        startTagEnd: end,
        endTagStart: end,
        end,
        selfClosing: c === 47,
        children: [],
      };
    }
    if (j === afterName || j >= text.length) fail(`Malformed start tag "<${name}"`, lt);
    const attrStart = j;
    j = skipName(text, j);
    const attrName = text.slice(attrStart, j);
    j = skipSpace(text, j);
    if (!NAME_START.test(attrName) || text.charCodeAt(j) !== 61 /* = */) {
      fail(`Malformed attribute in "<${name}"`, attrStart);
    }
    for (const [seen] of rawAttributes) {
      if (seen === attrName) fail(`Attribute "${attrName}" repeated in "<${name}"`, attrStart);
    }
    j = skipSpace(text, j + 1);
    const quote = text[j];
    if (quote !== "'" && quote !== '"') fail(`Unquoted attribute "${attrName}"`, attrStart);
    const close = text.indexOf(quote as string, j + 1);
    if (close === -1) fail(`Unterminated attribute "${attrName}"`, attrStart);
    const lessThan = text.indexOf("<", j + 1);
    if (lessThan !== -1 && lessThan < close) fail(`Attribute "${attrName}" contains "<"`, j + 1);
    checkEntities(j + 1, close);
    rawAttributes.push([attrName, text.slice(j + 1, close)]);
    j = close + 1;
  }
}

/**
 * Locates every element of a well-formed document in one linear pass, skipping comments, CDATA
 * sections, processing instructions and the XML declaration, and honouring quoted attribute
 * values (which may hold `>`). Returns the root element. Throws {@link XmlSyntaxError} on
 * mismatched tags, a DOCTYPE, unknown entity references or anything else it cannot place.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const root = scanXml("<a><!-- <b> --><c x='>'/></a>");
 * assertEquals(root.children.map((c) => c.name), ["c"]);
 * ```
 */
export function scanXml(text: string): XmlSpan {
  refuseDoctype(text);
  const fail = (message: string, index: number): never => {
    throw new XmlSyntaxError(`Malformed XML: ${message}`, lineColumnAt(text, index));
  };
  // The scan calls this with `from` moving forward: the first `&` at or after the last search's
  // start is kept, so a document with few `&` is searched once, not once per text or attribute.
  let searchedFrom = Infinity;
  let amp = -1;
  const checkEntities = (from: number, to: number) => {
    if (from < searchedFrom || (amp !== -1 && amp < from)) {
      searchedFrom = from;
      amp = text.indexOf("&", from);
    }
    if (amp === -1 || amp >= to) return;
    const segment = text.slice(from, to);
    const bad = BAD_AMPERSAND.exec(segment);
    if (bad) fail('Unknown entity reference or bare "&"', from + bad.index);
  };
  const stack: XmlSpan[] = [];
  let root: XmlSpan | null = null;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const lt = text.indexOf("<", i);
    const textEnd = lt === -1 ? n : lt;
    if (stack.length > 0) checkEntities(i, textEnd);
    else if (text.slice(i, textEnd).trim() !== "") fail("Text outside the root element", i);
    if (lt === -1) break;
    if (text.startsWith("<!--", lt)) {
      const close = text.indexOf("-->", lt + 4);
      if (close === -1) fail("Unterminated comment", lt);
      i = close + 3;
    } else if (text.startsWith("<![CDATA[", lt)) {
      if (stack.length === 0) fail("CDATA outside the root element", lt);
      const close = text.indexOf("]]>", lt + 9);
      if (close === -1) fail("Unterminated CDATA section", lt);
      i = close + 3;
    } else if (text.startsWith("<?", lt)) {
      const close = text.indexOf("?>", lt + 2);
      if (close === -1) fail("Unterminated processing instruction", lt);
      if (lt > (text.startsWith("\uFEFF") ? 1 : 0) && /^<\?xml[\s?]/.test(text.slice(lt, lt + 6))) {
        fail("XML declaration allowed only at the start of the document", lt);
      }
      i = close + 2;
    } else if (text.startsWith("<!", lt)) {
      fail("Unexpected markup declaration", lt);
    } else if (text[lt + 1] === "/") {
      let j = skipName(text, lt + 2);
      const name = text.slice(lt + 2, j);
      j = skipSpace(text, j);
      if (text.charCodeAt(j) !== 62 /* > */) fail(`Malformed end tag "</${name}"`, lt);
      const open = stack.pop();
      if (open === undefined || open.name !== name) {
        fail(`Unexpected end tag "</${name}>"`, lt);
      } else {
        open.endTagStart = lt;
        open.end = j + 1;
      }
      i = j + 1;
    } else {
      const span = readStartTag({ text, fail, checkEntities }, lt);
      const parent = stack.at(-1);
      if (parent) parent.children.push(span);
      else if (root === null) root = span;
      else fail(`Second root element "<${span.name}>"`, lt);
      if (!span.selfClosing) stack.push(span);
      i = span.startTagEnd;
    }
  }
  const unclosed = stack.at(-1);
  if (unclosed) fail(`Unclosed element "<${unclosed.name}>"`, unclosed.start);
  if (root === null) return fail("No root element", 0);
  return root;
}

/** The decoded value of attribute `name` of a span, or `undefined`. */
export function spanAttribute(span: XmlSpan, name: string): string | undefined {
  const raw = span.rawAttributes.find(([key]) => key === name);
  return raw === undefined ? undefined : decodeXmlText(raw[1]);
}

/** Every attribute of a span, decoded, in an object without a prototype. */
export function spanAttributes(span: XmlSpan): Record<string, string> {
  const attributes: Record<string, string> = Object.create(null);
  for (const [name, raw] of span.rawAttributes) attributes[name] = decodeXmlText(raw);
  return attributes;
}

/**
 * The decoded text of a span that holds text alone, or `null` when it holds any markup (a child
 * element, comment, CDATA section or processing instruction: read those with
 * {@link readXmlElement}). Elements read for their text (`<name>`, `<uuid>`) hold text alone,
 * and each fragment fast-xml-parser reads costs a parser of its own.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const xml = "<domain><name>a&amp;b</name><uuid><!-- x -->u</uuid></domain>";
 * const [name, uuid] = scanXml(xml).children;
 * assertEquals([spanText(xml, name!), spanText(xml, uuid!)], ["a&b", null]);
 * ```
 */
export function spanText(xml: string, span: XmlSpan): string | null {
  const content = xml.slice(span.startTagEnd, span.endTagStart);
  return content.includes("<") ? null : decodeXmlText(content);
}

const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: "",
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  // Entities are decoded by decodeXmlText, which refuses unknown names instead of keeping them.
  processEntities: false,
  htmlEntities: false,
  commentPropName: "#comment",
  cdataPropName: "#cdata",
  allowBooleanAttributes: false,
});

type OrderedNode = Record<string, unknown> & { ":@"?: Record<string, string> };

function toElement(node: OrderedNode): XmlElement | null {
  const name = Object.keys(node).find((key) => key !== ":@");
  if (name === undefined || name === "#text" || name === "#comment" || name === "?xml") return null;
  if (name === "#cdata") return null;
  const attributes: Record<string, string> = {};
  for (const [key, value] of Object.entries(node[":@"] ?? {})) {
    attributes[key] = decodeXmlText(String(value));
  }
  const children: XmlElement[] = [];
  let text = "";
  for (const child of (node[name] as OrderedNode[] | undefined) ?? []) {
    if ("#text" in child) text += decodeXmlText(String(child["#text"]));
    else if ("#cdata" in child) {
      for (const part of child["#cdata"] as OrderedNode[]) text += String(part["#text"] ?? "");
    } else {
      const element = toElement(child);
      if (element) children.push(element);
    }
  }
  return { name, attributes, children, text };
}

/**
 * Reads one element's text (e.g. a `<hostdev>` span of the original document) into names,
 * decoded attribute values, child elements and text, with fast-xml-parser.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const e = readXmlElement("<a x='1&amp;2'><b/>t</a>");
 * assertEquals([e.attributes.x, e.children[0]?.name, e.text], ["1&2", "b", "t"]);
 * ```
 */
export function readXmlElement(text: string): XmlElement {
  const nodes = parser.parse(text) as OrderedNode[];
  for (const node of nodes) {
    const element = toElement(node);
    if (element) return element;
  }
  throw new SyntaxError(`No element in XML fragment: "${text.slice(0, 40)}"`);
}
