/**
 * What an editor's JSON Schema check says of a document: the problems of `value` against `schema`
 * (draft 2020-12), for the keywords `passthrough_config.schema.json` uses. A keyword it does not
 * know throws, so a schema that gains one is not checked as if the keyword were not there.
 *
 * @module
 */

type Node = Record<string, unknown>;

/** Keywords that constrain a value, each checked below; the others only describe. */
const CHECKED = new Set([
  "type",
  "const",
  "enum",
  "pattern",
  "minLength",
  "minimum",
  "maximum",
  "not",
  "anyOf",
  "items",
  "required",
  "minProperties",
  "properties",
  "propertyNames",
  "additionalProperties",
]);
const DESCRIBING = new Set(["$schema", "$id", "title", "description"]);

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function hasType(value: unknown, type: string): boolean {
  switch (type) {
    case "object":
      return isObject(value);
    case "array":
      return Array.isArray(value);
    case "integer":
      return Number.isInteger(value);
    case "number":
      return typeof value === "number";
    case "null":
      return value === null;
    case "string":
      return typeof value === "string";
    case "boolean":
      return typeof value === "boolean";
    default:
      throw new Error(`Unknown JSON Schema type "${type}"`);
  }
}

/**
 * The problems of `value` against `schema`, each as `PATH: what`; none when it validates.
 *
 * @example
 * ```ts
 * import { assertEquals } from "./assert.ts";
 * assertEquals(schemaProblems({ type: "integer", minimum: 1 }, 0), ["#: 0 is below 1"]);
 * ```
 */
export function schemaProblems(schema: Node, value: unknown, at = "#"): string[] {
  for (const key of Object.keys(schema)) {
    if (!CHECKED.has(key) && !DESCRIBING.has(key)) {
      throw new Error(`${at}: the schema uses "${key}", which this checker does not know`);
    }
  }
  if (typeof schema.type === "string" && !hasType(value, schema.type)) {
    return [`${at}: ${JSON.stringify(value)} is not of type ${schema.type}`];
  }
  const problems: string[] = [];
  const say = (problem: string) => problems.push(`${at}: ${problem}`);
  if ("const" in schema && value !== schema.const) say(`${JSON.stringify(value)} is not the const`);
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) {
    say(`${JSON.stringify(value)} is none of the enum`);
  }
  if (typeof value === "string") {
    if (typeof schema.pattern === "string" && !new RegExp(schema.pattern, "u").test(value)) {
      say(`${JSON.stringify(value)} does not match ${schema.pattern}`);
    }
    if (typeof schema.minLength === "number" && [...value].length < schema.minLength) {
      say(`${JSON.stringify(value)} is shorter than ${schema.minLength}`);
    }
  }
  if (typeof value === "number") {
    if (typeof schema.minimum === "number" && value < schema.minimum) {
      say(`${value} is below ${schema.minimum}`);
    }
    if (typeof schema.maximum === "number" && value > schema.maximum) {
      say(`${value} is above ${schema.maximum}`);
    }
  }
  if (isObject(schema.not) && schemaProblems(schema.not, value, at).length === 0) {
    say(`${JSON.stringify(value)} matches what "not" excludes`);
  }
  if (Array.isArray(schema.anyOf)) {
    const each = schema.anyOf.map((option: Node) => schemaProblems(option, value, at));
    if (each.every((p) => p.length > 0)) say(`no option of anyOf fits: ${each.flat().join("; ")}`);
  }
  if (Array.isArray(value) && isObject(schema.items)) {
    value.forEach((item, i) =>
      problems.push(...schemaProblems(schema.items as Node, item, `${at}/${i}`))
    );
  }
  if (isObject(value)) problems.push(...objectProblems(schema, value, at));
  return problems;
}

function objectProblems(schema: Node, value: Record<string, unknown>, at: string): string[] {
  const problems: string[] = [];
  for (const key of (schema.required as string[] | undefined) ?? []) {
    if (!Object.hasOwn(value, key)) problems.push(`${at}: "${key}" is missing`);
  }
  const min = schema.minProperties;
  if (typeof min === "number" && Object.keys(value).length < min) {
    problems.push(`${at}: fewer than ${min} properties`);
  }
  const properties = (schema.properties ?? {}) as Record<string, Node>;
  for (const [key, item] of Object.entries(value)) {
    if (isObject(schema.propertyNames)) {
      problems.push(...schemaProblems(schema.propertyNames, key, `${at}/${key} (name)`));
    }
    if (Object.hasOwn(properties, key)) {
      problems.push(...schemaProblems(properties[key]!, item, `${at}/${key}`));
    } else if (schema.additionalProperties === false) {
      problems.push(`${at}: "${key}" is not allowed`);
    } else if (isObject(schema.additionalProperties)) {
      problems.push(...schemaProblems(schema.additionalProperties, item, `${at}/${key}`));
    }
  }
  return problems;
}
